"""`kwire group` against a real broker, run as a subprocess: list, describe (offsets and
lag, members, state) with a live consumer and without, reset-offsets in each mode
(checked through the AdminClient and by a consumer resuming), delete, and the error
paths (unknown group, active group, unreachable bootstrap, bad arguments)."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import (
    closed_bootstrap,
    failed,
    kwire,
    ok,
    parse_table,
    parse_tables,
    run_cli,
    write_properties,
)
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from security_harness import Certificates, SecureListeners

TIMEOUT = 30
TOPIC = "orders"
# Records per partition of TOPIC.
COUNTS = {0: 10, 1: 20, 2: 30}
# Record i of every partition is stamped BASE_MS + i seconds (an hour ago: inside retention).
BASE_MS = (int(time.time()) // 60 - 60) * 60_000


def admin(broker: Any) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def prepare_topic(broker: Any) -> None:
    client = admin(broker)
    client.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])[TOPIC].result(
        TIMEOUT
    )
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for partition, count in COUNTS.items():
        for i in range(count):
            producer.produce(
                TOPIC,
                f"{partition}-{i}".encode(),
                partition=partition,
                timestamp=BASE_MS + i * 1000,
            )
    assert producer.flush(TIMEOUT) == 0


def committed(broker: Any, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets, read by the test's own AdminClient."""
    client = admin(broker)
    future = client.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=TIMEOUT
    )[group]
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in future.result(TIMEOUT).topic_partitions
        if tp.offset >= 0
    }


def consumer_config(broker: Any, group: str, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": broker.bootstrap,
        "group.id": group,
        "client.id": f"{group}-client",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        **extra,
    }


def commit_offsets(broker: Any, group: str, offsets: dict[int, int]) -> None:
    """Consume from TOPIC as a member of `group` until it has read every record, commit
    `offsets` (partition: offset), and leave: the group is Empty with those offsets."""
    with live_member(broker, group) as consumer:
        consumer.commit(
            offsets=[TopicPartition(TOPIC, p, o) for p, o in offsets.items()], asynchronous=False
        )


@contextmanager
def live_member(broker: Any, group: str) -> Iterator[Consumer]:
    """A consumer subscribed to TOPIC in `group`, its assignment in hand and every record
    read; it stays a member (librdkafka heartbeats in the background) until the block ends."""
    consumer = Consumer(consumer_config(broker, group))
    try:
        consumer.subscribe([TOPIC])
        read = 0
        deadline = time.monotonic() + TIMEOUT
        while read < sum(COUNTS.values()):
            assert time.monotonic() < deadline, f"read {read} records of {sum(COUNTS.values())}"
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                read += 1
        assert len(consumer.assignment()) == 3
        yield consumer
    finally:
        consumer.close()


def group_state(broker: Any, group: str) -> str:
    client = admin(broker)
    return (
        client.describe_consumer_groups([group], request_timeout=TIMEOUT)[group]
        .result(TIMEOUT)
        .state.name
    )


def describe_rows(broker: Any, *args: str) -> list[dict[str, str]]:
    return parse_table(ok(kwire(broker.bootstrap, "group", "describe", *args)))


def state_row(broker: Any, group: str) -> dict[str, str]:
    """The one row of `describe --state` (its "COORDINATOR (ID)" header and cell hold a
    space, so cells are split at runs of two spaces)."""
    lines = ok(kwire(broker.bootstrap, "group", "describe", group, "--state")).splitlines()
    assert len(lines) == 3, lines
    header, row = (re.split(r"\s{2,}", line.strip()) for line in (lines[0], lines[2]))
    return dict(zip(header, row, strict=True))


def iso_utc(ms: int) -> str:
    when = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def offsets_row(group: str, partition: int, current: str, end: int, lag: str, member: tuple[str, str, str] | None) -> dict[str, str]:  # fmt: skip
    consumer_id, host, client_id = member or ("-", "-", "-")
    return {
        "GROUP": group, "TOPIC": TOPIC, "PARTITION": str(partition), "CURRENT-OFFSET": current,
        "LOG-END-OFFSET": str(end), "LAG": lag, "CONSUMER-ID": consumer_id, "HOST": host, "CLIENT-ID": client_id,
    }  # fmt: skip


def test_describe_offsets_and_lag_of_an_empty_group(broker) -> None:
    prepare_topic(broker)
    commit_offsets(broker, "billing", {0: 4, 1: 20})
    result = kwire(broker.bootstrap, "group", "describe", "billing")
    ok(result)
    assert "Consumer group 'billing' has no active members." in result.stderr
    # Partition 2 has neither an offset nor a member: no row, as Kafka's tool.
    assert parse_table(result.stdout) == [
        offsets_row("billing", 0, "4", 10, "6", None),
        offsets_row("billing", 1, "20", 20, "0", None),
    ]
    # More records raise the log end offset and the lag, not the committed offset.
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for _ in range(5):
        producer.produce(TOPIC, b"late", partition=1)
    assert producer.flush(TIMEOUT) == 0
    assert describe_rows(broker, "billing")[1] == offsets_row("billing", 1, "20", 25, "5", None)

    # --members: none; --state: Empty, no members, the coordinator is broker 0.
    result = kwire(broker.bootstrap, "group", "describe", "billing", "--members")
    assert ok(result) == "" and "Consumer group 'billing' has no active members." in result.stderr
    assert state_row(broker, "billing") == {
        "GROUP": "billing", "COORDINATOR (ID)": f"127.0.0.1:{broker.port} (0)",
        "ASSIGNMENT-STRATEGY": "-", "STATE": "Empty", "#MEMBERS": "0",
    }  # fmt: skip


def test_describe_a_live_member(broker) -> None:
    prepare_topic(broker)
    with live_member(broker, "live") as consumer:
        consumer.commit(offsets=[TopicPartition(TOPIC, 0, 7)], asynchronous=False)
        member = (consumer.memberid(), "/127.0.0.1", "live-client")
        result = kwire(broker.bootstrap, "group", "describe", "live")
        assert parse_table(ok(result)) == [
            offsets_row("live", 0, "7", 10, "3", member),
            # Assigned but never committed: "-" for the offset and the lag.
            offsets_row("live", 1, "-", 20, "-", member),
            offsets_row("live", 2, "-", 30, "-", member),
        ]
        assert "no active members" not in result.stderr
        assert describe_rows(broker, "live", "--members") == [{
            "GROUP": "live", "CONSUMER-ID": member[0], "HOST": "/127.0.0.1", "CLIENT-ID": "live-client",
            "#PARTITIONS": "3", "ASSIGNMENT": f"{TOPIC}(0,1,2)",
        }]  # fmt: skip
        state = state_row(broker, "live")
        assert (state["STATE"], state["#MEMBERS"]) == ("Stable", "1")
        assert state["ASSIGNMENT-STRATEGY"] in ("range", "roundrobin", "cooperative-sticky")

        # list: every group and its state; --state filters.
        commit_offsets_only(broker, "idle", {0: 1})
        listed = parse_table(ok(kwire(broker.bootstrap, "group", "list")))
        assert listed == [{"GROUP": "idle", "STATE": "Empty"}, {"GROUP": "live", "STATE": "Stable"}]
        assert parse_table(ok(kwire(broker.bootstrap, "group", "list", "--state", "stable"))) == [
            {"GROUP": "live", "STATE": "Stable"}
        ]
        assert parse_table(
            ok(kwire(broker.bootstrap, "group", "list", "--state", "Empty", "Dead"))
        ) == [{"GROUP": "idle", "STATE": "Empty"}]

        # An active group's offsets are not reset, and it is not deleted.
        failed(kwire(broker.bootstrap, "group", "reset-offsets", "--group", "live", "--all-topics",
                     "--to-earliest", "--execute"),
               1, "Assignments can only be reset if the group 'live' is inactive, "
                  "but the current state is Stable.")  # fmt: skip
        failed(
            kwire(broker.bootstrap, "group", "delete", "--group", "live"),
            1,
            "group live: NON_EMPTY_GROUP",
        )
        assert committed(broker, "live") == {(TOPIC, 0): 7}
    # Once the member has left, the same reset goes through.
    assert group_state(broker, "live") == "EMPTY"
    ok(
        kwire(
            broker.bootstrap,
            "group",
            "reset-offsets",
            "--group",
            "live",
            "--all-topics",
            "--to-earliest",
            "--execute",
        )
    )
    assert committed(broker, "live") == {(TOPIC, 0): 0}


def commit_offsets_only(broker: Any, group: str, offsets: dict[int, int]) -> None:
    """Commit offsets for `group` without joining it (as a tool or a standalone consumer)."""
    consumer = Consumer(consumer_config(broker, group))
    try:
        consumer.commit(
            offsets=[TopicPartition(TOPIC, p, o) for p, o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


def reset(broker: Any, *args: str) -> Any:
    return kwire(broker.bootstrap, "group", "reset-offsets", "--group", "g", *args)


def plan(result: Any) -> dict[tuple[str, int], int]:
    """The NEW-OFFSET table of a reset-offsets run."""
    rows = parse_table(ok(result))
    assert {row["GROUP"] for row in rows} <= {"g"}
    return {(row["TOPIC"], int(row["PARTITION"])): int(row["NEW-OFFSET"]) for row in rows}


def offsets(p0: int | None, p1: int | None, p2: int | None = None) -> dict[tuple[str, int], int]:
    return {(TOPIC, p): o for p, o in enumerate((p0, p1, p2)) if o is not None}


def test_reset_offsets_each_mode(broker) -> None:
    prepare_topic(broker)
    commit_offsets(broker, "g", {0: 4, 1: 12})
    before = offsets(4, 12)
    assert committed(broker, "g") == before

    # Neither --dry-run nor --execute: a dry run with Kafka's warning; --dry-run: no warning.
    result = reset(broker, "--all-topics", "--to-earliest")
    assert plan(result) == offsets(0, 0)
    assert "No action will be performed as the --execute option is missing" in result.stderr
    result = reset(broker, "--all-topics", "--to-latest", "--dry-run")
    assert plan(result) == offsets(10, 20) and result.stderr == ""
    assert committed(broker, "g") == before

    assert plan(reset(broker, "--all-topics", "--to-earliest", "--execute")) == offsets(0, 0)
    assert committed(broker, "g") == offsets(0, 0)
    # --topic T: every partition of it, committed or not.
    assert plan(reset(broker, "--topic", TOPIC, "--to-latest", "--execute")) == offsets(10, 20, 30)
    assert committed(broker, "g") == offsets(10, 20, 30)
    # --topic T:P,P: those partitions only; past the log start: clamped, with Kafka's warning.
    result = reset(broker, "--topic", f"{TOPIC}:0,2", "--shift-by", "-13", "--execute")
    assert plan(result) == {(TOPIC, 0): 0, (TOPIC, 2): 17}
    assert (
        f"is lower than earliest offset for topic partition {TOPIC}-0. Value will be set to 0"
        in result.stderr
    )
    assert committed(broker, "g") == offsets(0, 20, 17)
    result = reset(broker, "--all-topics", "--shift-by", "5", "--execute")
    assert plan(result) == offsets(5, 20, 22)
    assert (
        f"is higher than latest offset for topic partition {TOPIC}-1. Value will be set to 20"
        in result.stderr
    )
    assert plan(reset(broker, "--all-topics", "--to-offset", "15", "--execute")) == offsets(
        10, 15, 15
    )
    assert committed(broker, "g") == offsets(10, 15, 15)

    # --to-datetime: the first record stamped at or after the time (record i: BASE_MS + i s).
    assert plan(
        reset(broker, "--all-topics", "--to-datetime", iso_utc(BASE_MS + 5500), "--execute")
    ) == offsets(6, 6, 6)
    assert committed(broker, "g") == offsets(6, 6, 6)
    # The same instant with a +hh:mm zone, and without milliseconds.
    later = datetime.datetime.fromtimestamp((BASE_MS + 12_000) / 1000, datetime.timezone(datetime.timedelta(hours=5, minutes=30)))  # fmt: skip
    assert plan(
        reset(broker, "--all-topics", "--to-datetime", later.isoformat(timespec="seconds"))
    ) == offsets(10, 12, 12)
    # Before every record: the first; after every record: the log end.
    assert plan(
        reset(broker, "--all-topics", "--to-datetime", iso_utc(BASE_MS - 3_600_000))
    ) == offsets(0, 0, 0)
    assert plan(
        reset(broker, "--all-topics", "--to-datetime", iso_utc(BASE_MS + 1_000_000))
    ) == offsets(10, 20, 30)
    assert committed(broker, "g") == offsets(6, 6, 6)

    # A consumer of the group resumes where the reset put it.
    consumer = Consumer(consumer_config(broker, "g"))
    try:
        consumer.assign([TopicPartition(TOPIC, 1)])
        message = None
        deadline = time.monotonic() + TIMEOUT
        while message is None or message.error() is not None:
            assert time.monotonic() < deadline
            message = consumer.poll(0.5)
        assert (message.offset(), message.value()) == (6, b"1-6")
    finally:
        consumer.close()


def test_reset_offsets_clamped_to_the_log_start(broker) -> None:
    prepare_topic(broker)
    client = admin(broker)
    deleted = client.delete_records([TopicPartition(TOPIC, 0, 4)], request_timeout=TIMEOUT)
    for future in deleted.values():
        future.result(TIMEOUT)
    assert plan(reset(broker, "--topic", f"{TOPIC}:0", "--to-earliest", "--execute")) == {
        (TOPIC, 0): 4
    }
    result = reset(broker, "--topic", f"{TOPIC}:0", "--to-offset", "1", "--execute")
    assert plan(result) == {(TOPIC, 0): 4}
    assert "Value will be set to 4" in result.stderr
    assert committed(broker, "g") == {(TOPIC, 0): 4}
    # A group nobody had used (Dead) gets offsets, as Kafka's tool does.
    assert group_state(broker, "g") == "EMPTY"


def test_reset_offsets_errors(broker) -> None:
    prepare_topic(broker)
    commit_offsets_only(broker, "g", {0: 3})
    failed(reset(broker, "--topic", TOPIC, "--shift-by", "1", "--execute"), 1,
           f"Cannot shift offset for partition {TOPIC}-1 since there is no current committed offset")  # fmt: skip
    failed(
        reset(broker, "--topic", "nope", "--to-earliest"), 1, "topic nope: UNKNOWN_TOPIC_OR_PART"
    )
    failed(
        reset(broker, "--topic", f"{TOPIC}:7", "--to-earliest"),
        1,
        f"topic {TOPIC} has no partition 7",
    )
    failed(reset(broker, "--topic", f"{TOPIC}:x", "--to-earliest"), 2, "partitions must be numbers")
    for bad in ("yesterday", "2026-13-01T00:00:00", "2026-01-01"):
        failed(reset(broker, "--all-topics", "--to-datetime", bad), 2, f"cannot parse '{bad}'")
    failed(reset(broker, "--all-topics"), 2, "one of the arguments --to-earliest")
    failed(reset(broker, "--to-earliest"), 2, "one of the arguments --topic --all-topics")
    failed(
        reset(broker, "--all-topics", "--to-earliest", "--dry-run", "--execute"),
        2,
        "not allowed with",
    )
    assert committed(broker, "g") == {(TOPIC, 0): 3}


def test_delete(broker) -> None:
    prepare_topic(broker)
    commit_offsets(broker, "a", {0: 1})
    commit_offsets_only(broker, "b", {1: 2})
    commit_offsets_only(broker, "c", {2: 3})
    out = ok(kwire(broker.bootstrap, "group", "delete", "--group", "a", "--group", "b"))
    assert out == "Deleted consumer group 'a'.\nDeleted consumer group 'b'.\n"
    assert parse_table(ok(kwire(broker.bootstrap, "group", "list"))) == [
        {"GROUP": "c", "STATE": "Empty"}
    ]
    assert committed(broker, "a") == {}
    failed(
        kwire(broker.bootstrap, "group", "describe", "a"), 1, "Consumer group 'a' does not exist."
    )
    # Every named group is tried; an unknown one fails the run.
    result = kwire(broker.bootstrap, "group", "delete", "--group", "a", "c")
    failed(result, 1, "group a: GROUP_ID_NOT_FOUND")
    assert result.stdout == "Deleted consumer group 'c'.\n"


def test_describe_unknown_and_all_groups(broker) -> None:
    prepare_topic(broker)
    result = kwire(broker.bootstrap, "group", "describe", "nope")
    failed(result, 1, "kwire: Consumer group 'nope' does not exist.")
    assert result.stdout == ""
    commit_offsets_only(broker, "x", {0: 2})
    commit_offsets_only(broker, "y", {1: 5})
    # One unknown group among known ones: the others are described, the exit code is 1.
    result = kwire(broker.bootstrap, "group", "describe", "x", "nope")
    failed(result, 1, "Consumer group 'nope' does not exist.")
    assert parse_table(result.stdout) == [offsets_row("x", 0, "2", 10, "8", None)]
    out = ok(kwire(broker.bootstrap, "group", "describe", "--all-groups"))
    assert parse_tables(out) == [
        [offsets_row("x", 0, "2", 10, "8", None)],
        [offsets_row("y", 1, "5", 20, "15", None)],
    ]
    failed(kwire(broker.bootstrap, "group", "describe"), 2, "GROUP names or --all-groups")
    failed(
        kwire(broker.bootstrap, "group", "list", "--state", "Sleepy"),
        2,
        "unknown group state 'Sleepy'",
    )


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["describe", "g"],
        ["reset-offsets", "--group", "g", "--all-topics", "--to-earliest"],
        ["delete", "--group", "g"],
        ["delete-offsets", "--group", "g", "--topic", "t"],
    ],
)
def test_unreachable_bootstrap_exits_3(args: list[str]) -> None:
    bootstrap = closed_bootstrap()
    result = run_cli("group", *args, "--bootstrap-server", bootstrap, "--timeout", "3", timeout=30)
    failed(result, 3, f"cannot reach {bootstrap}")
    assert result.stdout == ""


def test_delete_offsets(broker) -> None:
    prepare_topic(broker)
    commit_offsets_only(broker, "g", {0: 1, 1: 2, 2: 3})
    out = ok(
        kwire(broker.bootstrap, "group", "delete-offsets", "--group", "g", "--topic", f"{TOPIC}:0")
    )
    assert parse_table(out) == [{"TOPIC": TOPIC, "PARTITION": "0", "STATUS": "Successful"}]
    assert committed(broker, "g") == offsets(None, 2, 3)
    # --topic T: every partition of it (one without an offset succeeds too, as in Kafka).
    out = ok(kwire(broker.bootstrap, "group", "delete-offsets", "--group", "g", "--topic", TOPIC))
    assert [row["STATUS"] for row in parse_table(out)] == ["Successful"] * 3
    assert committed(broker, "g") == {}

    failed(kwire(broker.bootstrap, "group", "delete-offsets", "--group", "nope", "--topic", TOPIC),
           1, "group nope: GROUP_ID_NOT_FOUND")  # fmt: skip
    failed(kwire(broker.bootstrap, "group", "delete-offsets", "--group", "g", "--topic", "none"),
           1, "topic none: UNKNOWN_TOPIC_OR_PART")  # fmt: skip
    # A live group keeps the offsets of a topic it subscribes to.
    with live_member(broker, "live") as consumer:
        consumer.commit(offsets=[TopicPartition(TOPIC, 1, 9)], asynchronous=False)
        result = kwire(
            broker.bootstrap, "group", "delete-offsets", "--group", "live", "--topic", f"{TOPIC}:1"
        )
        assert result.returncode == 1, result
        assert parse_table(result.stdout) == [
            {"TOPIC": TOPIC, "PARTITION": "1", "STATUS": "Error: GROUP_SUBSCRIBED_TO_TOPIC"}
        ]
        assert committed(broker, "live") == {(TOPIC, 1): 9}


def test_over_sasl_ssl_with_command_config(broker_factory, tmp_path: Path) -> None:
    """Both clients behind the subcommands (confluent-kafka's, and kwire's own for
    OffsetDelete) take TLS and SASL from a Java client's --command-config file."""
    listeners = SecureListeners(Certificates(tmp_path / "certs"))
    broker = broker_factory()
    broker.stop()
    broker.overrides.update(listeners.overrides(broker.port))
    broker.start()
    prepare_topic(broker)
    commit_offsets_only(broker, "g", {0: 4, 1: 5})
    config = write_properties(
        tmp_path / "client.properties",
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "PLAIN",
            "sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule required "
            'username="alice" password="alice-secret";',
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(listeners.certs.ca_file),
        },
    )
    secure = [
        "--bootstrap-server",
        listeners.bootstrap("SASL_SSL"),
        "--command-config",
        str(config),
    ]
    out = ok(run_cli("group", "describe", "g", *secure))
    assert [row["CURRENT-OFFSET"] for row in parse_table(out)] == ["4", "5"]
    out = ok(run_cli("group", "delete-offsets", "--group", "g", "--topic", f"{TOPIC}:1", *secure))
    assert parse_table(out) == [{"TOPIC": TOPIC, "PARTITION": "1", "STATUS": "Successful"}]
    assert committed(broker, "g") == {(TOPIC, 0): 4}


def test_describe_offsets_of_a_deleted_topic(broker) -> None:
    """An offset whose topic is gone has no log end: "-", and the other rows stand."""
    prepare_topic(broker)
    client = admin(broker)
    client.create_topics([NewTopic("gone", num_partitions=1)])["gone"].result(TIMEOUT)
    consumer = Consumer(consumer_config(broker, "g"))
    try:
        consumer.commit(
            offsets=[TopicPartition("gone", 0, 0), TopicPartition(TOPIC, 0, 3)], asynchronous=False
        )
    finally:
        consumer.close()
    client.delete_topics(["gone"])["gone"].result(TIMEOUT)
    rows = describe_rows(broker, "g")
    gone = {**offsets_row("g", 0, "0", 0, "-", None), "TOPIC": "gone", "LOG-END-OFFSET": "-"}
    # kwire keeps the offset (Kafka's broker drops it with the topic): both are right here.
    assert rows in (
        [gone, offsets_row("g", 0, "3", 10, "7", None)],
        [offsets_row("g", 0, "3", 10, "7", None)],
    )
