"""`kwire topic` against a real broker, run as a subprocess: create, list, describe,
alter, delete, add-partitions, each checked through confluent-kafka's AdminClient
too, and the error paths (unknown topic, existing topic, invalid config value, bad
arguments, a bootstrap server nobody listens on)."""

from __future__ import annotations

import re
from typing import Any

from cli_helpers import (
    cli,
    closed_bootstrap,
    failed,
    ok,
    parse_table,
    parse_tables,
    run_cli_concurrently,
)
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, ResourceType

TIMEOUT = 30


def admin(broker: Any) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def partition_counts(broker: Any) -> dict[str, int]:
    metadata = admin(broker).list_topics(timeout=TIMEOUT)
    return {name: len(t.partitions) for name, t in metadata.topics.items()}


def dynamic_configs(broker: Any, topic: str) -> dict[str, str]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    client = admin(broker)  # alive until the answer is in
    entries = client.describe_configs([resource], request_timeout=TIMEOUT)[resource].result(TIMEOUT)
    return {
        e.name: e.value
        for e in entries.values()
        if e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    }


def describe_headers(text: str) -> dict[str, dict[str, str]]:
    """The `Topic: x<TAB>TopicId: ...<TAB>Configs: ...` line of each described topic."""
    headers = {}
    for line in text.splitlines():
        if line.startswith("Topic: "):
            fields = dict(
                field.split(": ", 1) if ": " in field else (field.rstrip(":"), "")
                for field in line.split("\t")
            )
            headers[fields["Topic"]] = fields
    return headers


def test_create_describe_alter_add_partitions_delete(broker) -> None:
    out = ok(
        cli(
            broker.bootstrap,
            "topic create orders --partitions 3 --replication-factor 1 --config retention.ms=60000 --config cleanup.policy=compact",
        )
    )
    assert out == "Created topic orders.\n"
    assert partition_counts(broker)["orders"] == 3
    assert dynamic_configs(broker, "orders") == {
        "retention.ms": "60000",
        "cleanup.policy": "compact",
    }
    # Without --partitions / --replication-factor the broker's defaults apply.
    ok(cli(broker.bootstrap, "topic create events"))
    assert partition_counts(broker)["events"] == 1

    out = ok(cli(broker.bootstrap, "topic describe orders"))
    header = describe_headers(out)["orders"]
    assert header["PartitionCount"] == "3" and header["ReplicationFactor"] == "1"
    assert header["Configs"] == "cleanup.policy=compact,retention.ms=60000"
    # The topic id as Kafka prints it: 22 characters of URL-safe base64.
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", header["TopicId"]), header
    assert parse_table(out) == [
        {"TOPIC": "orders", "PARTITION": str(p), "LEADER": "0", "REPLICAS": "0", "ISR": "0"}
        for p in range(3)
    ]

    # Every topic, in name order, a header and a table each.
    out = ok(cli(broker.bootstrap, "topic describe"))
    assert list(describe_headers(out)) == ["events", "orders"]
    assert describe_headers(out)["events"]["Configs"] == ""
    assert [len(t) for t in parse_tables(out)] == [1, 3]

    out = ok(
        cli(
            broker.bootstrap,
            "topic alter orders --config retention.ms=120000 --config max.message.bytes=2000 --delete-config cleanup.policy",
        )
    )
    assert out == "Completed updating config for topic orders.\n"
    assert dynamic_configs(broker, "orders") == {
        "retention.ms": "120000",
        "max.message.bytes": "2000",
    }

    out = ok(cli(broker.bootstrap, "topic add-partitions orders --partitions 5"))
    assert out == "Topic orders has 5 partitions.\n"
    assert partition_counts(broker)["orders"] == 5
    assert len(parse_table(ok(cli(broker.bootstrap, "topic describe orders")))) == 5

    out = ok(cli(broker.bootstrap, "topic delete orders events"))
    assert out == "Deleted topic orders.\nDeleted topic events.\n"
    assert not {"orders", "events"} & set(partition_counts(broker))
    assert ok(cli(broker.bootstrap, "topic list")) == ""


def test_list_one_name_per_line_and_exclude_internal(broker) -> None:
    for name in ("b-topic", "a-topic"):
        ok(cli(broker.bootstrap, "topic create", name))
    # A committed offset brings __consumer_offsets into being.
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    producer.produce("a-topic", b"v")
    assert producer.flush(TIMEOUT) == 0
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "g", "enable.auto.commit": False}
    )
    try:
        consumer.commit(offsets=[TopicPartition("a-topic", 0, 1)], asynchronous=False)
    finally:
        consumer.close()
    assert ok(cli(broker.bootstrap, "topic list")) == "__consumer_offsets\na-topic\nb-topic\n"
    assert ok(cli(broker.bootstrap, "topic list --exclude-internal")) == "a-topic\nb-topic\n"
    out = ok(cli(broker.bootstrap, "topic describe --exclude-internal"))
    assert list(describe_headers(out)) == ["a-topic", "b-topic"]


def test_errors_from_the_broker_exit_1(broker) -> None:
    ok(cli(broker.bootstrap, "topic create t --partitions 2"))
    failed(cli(broker.bootstrap, "topic create t"), 1, "topic t: TOPIC_ALREADY_EXISTS")
    assert ok(cli(broker.bootstrap, "topic create t --if-not-exists")) == ""
    for args in (
        ["describe", "nope"],
        ["describe", "t", "nope"],
        ["alter", "nope", "--config", "retention.ms=1"],
        ["add-partitions", "nope", "--partitions", "3"],
        ["delete", "nope"],
    ):
        failed(cli(broker.bootstrap, "topic", *args), 1, "topic nope: UNKNOWN_TOPIC_OR_PART")
    # Every named topic is tried: the existing one goes, the absent one fails the run.
    result = cli(broker.bootstrap, "topic delete nope t")
    failed(result, 1, "topic nope: UNKNOWN_TOPIC_OR_PART")
    assert result.stdout == "Deleted topic t.\n"
    assert ok(cli(broker.bootstrap, "topic delete nope --if-exists")) == ""
    ok(cli(broker.bootstrap, "topic create t --partitions 2"))

    # Bad config values: the broker's INVALID_CONFIG message, and nothing changes.
    failed(
        cli(broker.bootstrap, "topic create u --config retention.ms=soon"),
        1,
        "topic u: INVALID_CONFIG",
        "retention.ms",
    )
    assert "u" not in partition_counts(broker)
    failed(
        cli(broker.bootstrap, "topic alter t --config cleanup.policy=sometimes"),
        1,
        "topic t: INVALID_CONFIG",
        "cleanup.policy",
    )
    failed(
        cli(broker.bootstrap, "topic alter t --config no.such.config=1"),
        1,
        "topic t: INVALID_CONFIG",
    )
    assert dynamic_configs(broker, "t") == {}
    failed(
        cli(broker.bootstrap, "topic add-partitions t --partitions 1"),
        1,
        "topic t: INVALID_PARTITIONS",
    )
    failed(
        cli(broker.bootstrap, "topic create v --replication-factor 3"),
        1,
        "topic v: INVALID_REPLICATION_FACTOR",
    )
    assert partition_counts(broker)["t"] == 2


def test_bad_arguments_exit_2(broker) -> None:
    failed(cli(broker.bootstrap, "topic create t --partitions x"), 2, "invalid int value")
    failed(cli(broker.bootstrap, "topic create t --config retention.ms"), 2, "key=value")
    failed(cli(broker.bootstrap, "topic alter t"), 2, "--config or --delete-config")
    failed(cli(broker.bootstrap, "topic add-partitions t"), 2, "--partitions")
    failed(cli(broker.bootstrap, "topic frobnicate"), 2, "invalid choice")
    failed(
        cli(broker.bootstrap, "topic list --command-config /nonexistent/client.properties"),
        2,
        "cannot read /nonexistent/client.properties",
    )
    # What confluent-kafka refuses before sending: a usage error, not a traceback.
    for line, message in (
        ("topic create t --partitions -5", "num_partitions out of expected range"),
        ("topic describe ''", "Empty topic name"),
        ("topic alter '' --config retention.ms=1", "topic : Invalid ConfigResource"),
    ):
        assert "Traceback" not in failed(cli(broker.bootstrap, line), 2, message)
    assert "t" not in partition_counts(broker)
    # A topic named twice is described once.
    ok(cli(broker.bootstrap, "topic create t"))
    assert len(parse_table(ok(cli(broker.bootstrap, "topic describe t t")))) == 1


def test_unreachable_bootstrap_exits_3() -> None:
    bootstrap = closed_bootstrap()
    runs = [
        ["list"],
        ["describe", "t"],
        ["create", "t"],
        ["delete", "t"],
        ["alter", "t", "--config", "a=b"],
    ]
    for result in run_cli_concurrently(
        [["topic", *args, "--bootstrap-server", bootstrap, "--timeout", "3"] for args in runs]
    ):
        failed(result, 3, f"cannot reach {bootstrap}", "Connection refused")
        assert result.stdout == ""
