"""Admin APIs against a real broker: CreateTopics, DeleteTopics, CreatePartitions,
DescribeConfigs, AlterConfigs, IncrementalAlterConfigs, DescribeCluster, DeleteRecords.

Through confluent-kafka's AdminClient and kafka-python's KafkaAdminClient; what
those clients cannot send (duplicate names, deletion by topic id, v7 config
listings) goes as raw kio-encoded requests on a socket.
"""

from __future__ import annotations

import datetime
import socket
import struct
import uuid
from typing import Any

import pytest
from confluent_kafka import (
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader

from kwire.protocol.messages import (
    encode,
    is_flexible,
    make,
    request_class,
    request_module,
    response_class,
)
from kwire.protocol.records import iter_records, parse_batch_header

TIMEOUT = 15.0

# DescribeConfigs sources.
TOPIC_CONFIG = 1
STATIC_BROKER_CONFIG = 4
DEFAULT_CONFIG = 5


# ---- helpers --------------------------------------------------------------------


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def outcome(future: Any) -> Any:
    """The future's result, or the KafkaError it failed with."""
    try:
        return future.result(TIMEOUT)
    except KafkaException as e:
        return e.args[0]


def outcomes(futures: dict[Any, Any]) -> dict[Any, Any]:
    return {key: outcome(f) for key, f in futures.items()}


def assert_error(result: Any, code: int, message_part: str | None = None) -> None:
    assert isinstance(result, KafkaError), f"expected error {code}, got {result!r}"
    assert result.code() == code, f"expected error {code}, got {result.code()} {result.str()}"
    if message_part is not None:
        assert message_part in result.str(), result.str()


def create(a: AdminClient, *topics: NewTopic, validate_only: bool = False) -> dict[str, Any]:
    return outcomes(
        a.create_topics(list(topics), validate_only=validate_only, request_timeout=TIMEOUT)
    )


def topic_partitions(a: AdminClient) -> dict[str, int]:
    return {name: len(t.partitions) for name, t in a.list_topics(timeout=TIMEOUT).topics.items()}


def topic_configs(a: AdminClient, topic: str) -> dict[str, ConfigEntry]:
    resource = ConfigResource("topic", topic)
    return a.describe_configs([resource], request_timeout=TIMEOUT)[resource].result(TIMEOUT)


def incremental(
    a: AdminClient,
    topic: str,
    *ops: tuple[str, str | None, AlterConfigOpType],
    validate_only: bool = False,
) -> Any:
    entries = [ConfigEntry(name, value, incremental_operation=op) for name, value, op in ops]
    resource = ConfigResource("topic", topic, incremental_configs=entries)
    futures = a.incremental_alter_configs(
        [resource], validate_only=validate_only, request_timeout=TIMEOUT
    )
    return outcome(futures[resource])


def produce(bootstrap: str, topic: str, count: int, partition: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in range(count):
        producer.produce(topic, value=b"v%d" % i, partition=partition)
        # One batch per message, so that offsets fall inside and between batches.
        producer.flush(TIMEOUT)
    assert producer.flush(TIMEOUT) == 0


def raw_request(bootstrap: str, api_key: int, version: int, **fields: Any) -> Any:
    """Send one kio-built request on a fresh socket; return the decoded response."""
    body = encode(make(request_class(api_key, version), **fields))
    flexible = is_flexible(api_key, version)
    client_id = b"kwire-test"
    header = (
        struct.pack(">hhih", api_key, version, 7, len(client_id))
        + client_id
        + (b"\x00" if flexible else b"")
    )
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as s:
        s.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        (size,) = struct.unpack(">i", _recv(s, 4))
        frame = _recv(s, size)
    (correlation_id,) = struct.unpack_from(">i", frame)
    assert correlation_id == 7
    offset = 4 + (1 if flexible else 0)  # response header v1: empty tagged fields
    response, _end = entity_reader(response_class(api_key, version))(frame, offset)
    return response


def _recv(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


# ---- CreateTopics ---------------------------------------------------------------


def test_create_topics_with_partitions_and_configs(broker) -> None:
    a = admin(broker.bootstrap)
    results = create(
        a,
        NewTopic(
            "orders",
            num_partitions=3,
            replication_factor=1,
            config={"retention.ms": "3600000", "cleanup.policy": "compact,delete"},
        ),
        NewTopic("defaults"),  # -1 / -1: the broker's num.partitions and replication factor
        NewTopic("assigned", num_partitions=2, replica_assignment=[[0], [0]]),
    )
    assert results == {"orders": None, "defaults": None, "assigned": None}
    assert {k: v for k, v in topic_partitions(a).items() if not k.startswith("__")} == {
        "orders": 3,
        "defaults": 1,
        "assigned": 2,
    }
    configs = topic_configs(a, "orders")
    assert configs["retention.ms"].value == "3600000"
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["cleanup.policy"].value == "compact,delete"


def test_create_topics_validate_only_creates_nothing(broker) -> None:
    a = admin(broker.bootstrap)
    assert create(a, NewTopic("checked", 4, 1), validate_only=True) == {"checked": None}
    assert "checked" not in topic_partitions(a)
    # A validate-only request still reports what would be wrong.
    result = create(
        a, NewTopic("checked", 4, 1, config={"retention.ms": "soon"}), validate_only=True
    )
    assert_error(result["checked"], KafkaError.INVALID_CONFIG, "retention.ms")
    assert "checked" not in topic_partitions(a)


def test_create_topics_refuses_bad_configs(broker) -> None:
    a = admin(broker.bootstrap)
    results = create(
        a,
        NewTopic("bad-value", 1, 1, config={"retention.ms": "forever"}),
        NewTopic("bad-range", 1, 1, config={"segment.bytes": "1"}),
        NewTopic("bad-name", 1, 1, config={"no.such.config": "1"}),
        NewTopic("bad-policy", 1, 1, config={"cleanup.policy": "shred"}),
    )
    assert_error(
        results["bad-value"],
        KafkaError.INVALID_CONFIG,
        "Invalid value forever for configuration retention.ms",
    )
    assert_error(results["bad-range"], KafkaError.INVALID_CONFIG, "segment.bytes")
    assert_error(
        results["bad-name"], KafkaError.INVALID_CONFIG, "Unknown topic config name: no.such.config"
    )
    assert_error(results["bad-policy"], KafkaError.INVALID_CONFIG, "cleanup.policy")
    assert not set(results) & set(topic_partitions(a))


def test_create_topics_refuses_bad_names_counts_and_existing(broker) -> None:
    a = admin(broker.bootstrap)
    assert create(a, NewTopic("taken", 1, 1), NewTopic("metric_name", 1, 1)) == {
        "taken": None,
        "metric_name": None,
    }
    results = create(
        a,
        NewTopic("bad/name", 1, 1),
        NewTopic("x" * 250, 1, 1),
        NewTopic("..", 1, 1),
        NewTopic("taken", 1, 1),
        NewTopic("metric.name", 1, 1),
        NewTopic("zero-partitions", 0, 1),
        NewTopic("three-replicas", 1, 3),
        NewTopic("other-broker", 1, replica_assignment=[[1]]),
        NewTopic("two-replicas", 1, replica_assignment=[[0, 0]]),
    )
    assert_error(
        results["bad/name"],
        KafkaError.TOPIC_EXCEPTION,
        "Topic name \"bad/name\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'",
    )
    assert_error(
        results["x" * 250], KafkaError.TOPIC_EXCEPTION, "can't be longer than 249 characters"
    )
    assert_error(results[".."], KafkaError.TOPIC_EXCEPTION, 'Topic name cannot be "." or ".."')
    assert_error(results["taken"], KafkaError.TOPIC_ALREADY_EXISTS, "Topic 'taken' already exists.")
    assert_error(
        results["metric.name"],
        KafkaError.TOPIC_EXCEPTION,
        "collides with existing topic: metric_name",
    )
    assert_error(
        results["zero-partitions"],
        KafkaError.INVALID_PARTITIONS,
        "Number of partitions was set to an invalid non-positive value.",
    )
    assert_error(
        results["three-replicas"],
        KafkaError.INVALID_REPLICATION_FACTOR,
        "Unable to replicate the partition 3 time(s): The target replication factor of 3 cannot be reached because only 1 broker(s) are registered.",
    )
    assert_error(
        results["other-broker"],
        KafkaError.INVALID_REPLICA_ASSIGNMENT,
        "includes broker 1, but no such broker is registered",
    )
    assert_error(
        results["two-replicas"],
        KafkaError.INVALID_REPLICA_ASSIGNMENT,
        "includes the broker 0 more than once",
    )
    assert set(topic_partitions(a)) & set(results) == {"taken"}


def test_create_topics_v7_answers_id_counts_configs_and_refuses_duplicates(broker) -> None:
    creatable = request_module(19, 7).CreatableTopic
    config_cls = request_module(19, 7).CreatableTopicConfig

    def topic(name: str, partitions: int = 2, configs: tuple = ()) -> Any:
        return creatable(
            name=name,
            num_partitions=partitions,
            replication_factor=-1,
            assignments=(),
            configs=configs,
        )

    response = raw_request(
        broker.bootstrap,
        19,
        7,
        topics=(
            topic("fresh", 2, (config_cls(name="retention.ms", value="60000"),)),
            topic("twice"),
            topic("twice"),
            topic("null-config", 1, (config_cls(name="retention.ms", value=None),)),
        ),
        timeout=datetime.timedelta(seconds=10),
        validate_only=False,
    )
    results = {t.name: t for t in response.topics}
    assert set(results) == {"fresh", "twice", "null-config"}
    fresh = results["fresh"]
    assert fresh.error_code == ErrorCode.none
    assert fresh.topic_id is not None and fresh.topic_id.int != 0
    assert (fresh.num_partitions, fresh.replication_factor) == (2, 1)
    configs = {c.name: c for c in fresh.configs}
    assert (
        configs["retention.ms"].value == "60000"
        and configs["retention.ms"].config_source == TOPIC_CONFIG
    )
    assert (
        configs["cleanup.policy"].value == "delete"
        and configs["cleanup.policy"].config_source == DEFAULT_CONFIG
    )
    assert not configs["retention.ms"].read_only and not configs["retention.ms"].is_sensitive
    assert results["twice"].error_code == ErrorCode.invalid_request
    assert results["twice"].error_message == "Duplicate topic name."
    assert results["null-config"].error_code == ErrorCode.invalid_config
    assert (
        results["null-config"].error_message
        == "Null value not supported for topic configs: retention.ms"
    )
    a = admin(broker.bootstrap)
    assert "twice" not in topic_partitions(a) and topic_partitions(a)["fresh"] == 2


# ---- DeleteTopics ---------------------------------------------------------------


def test_delete_topics(broker) -> None:
    a = admin(broker.bootstrap)
    assert create(a, NewTopic("doomed", 2, 1), NewTopic("kept", 1, 1)) == {
        "doomed": None,
        "kept": None,
    }
    produce(broker.bootstrap, "doomed", 3)
    assert outcomes(a.delete_topics(["doomed"], request_timeout=TIMEOUT)) == {"doomed": None}
    assert "doomed" not in topic_partitions(a)
    results = outcomes(a.delete_topics(["doomed"], request_timeout=TIMEOUT))
    assert_error(results["doomed"], KafkaError.UNKNOWN_TOPIC_OR_PART)
    # The name can be used again, for a new, empty topic.
    assert create(a, NewTopic("doomed", 1, 1)) == {"doomed": None}
    low, high = _watermarks(broker.bootstrap, "doomed", 0)
    assert (low, high) == (0, 0)
    assert "kept" in topic_partitions(a)


def test_delete_topics_by_id_v6(broker) -> None:
    a = admin(broker.bootstrap)
    assert create(a, NewTopic("by-id", 1, 1)) == {"by-id": None}
    topic_id = _topic_id(broker.bootstrap, "by-id")
    state = request_module(20, 6).DeleteTopicState
    unknown = uuid.uuid4()
    response = raw_request(
        broker.bootstrap,
        20,
        6,
        topics=(
            state(name=None, topic_id=topic_id),
            state(name=None, topic_id=unknown),
            state(name="never-was", topic_id=None),
        ),
        timeout=datetime.timedelta(seconds=10),
    )
    by_key = {(r.name, r.topic_id): r for r in response.responses}
    assert by_key[("by-id", topic_id)].error_code == ErrorCode.none
    assert by_key[(None, unknown)].error_code == ErrorCode.unknown_topic_id
    assert by_key[("never-was", None)].error_code == ErrorCode.unknown_topic_or_partition
    assert "by-id" not in topic_partitions(a)


def _topic_id(bootstrap: str, name: str) -> uuid.UUID:
    topic_cls = request_module(3, 12).MetadataRequestTopic
    response = raw_request(
        bootstrap,
        3,
        12,
        topics=(topic_cls(topic_id=None, name=name),),
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )
    (topic,) = response.topics
    assert topic.error_code == ErrorCode.none
    return topic.topic_id


# ---- CreatePartitions -----------------------------------------------------------


def test_one_request_creates_at_most_10000_partitions(broker) -> None:
    """A request for 100,000 partitions (or many topics adding up past 10,000) is refused
    whole with POLICY_VIOLATION, as Kafka's controller refuses an excessively large
    operation, instead of opening partitions in one loop until the disk is full."""
    a = admin(broker.bootstrap)
    message = "Unable to perform excessively large batch operation."
    assert_error(create(a, NewTopic("huge", 100_000, 1))["huge"], KafkaError.POLICY_VIOLATION, message)
    many = create(a, *[NewTopic(f"many-{i}", 2001, 1) for i in range(5)])
    for name in (f"many-{i}" for i in range(5)):
        assert_error(many[name], KafkaError.POLICY_VIOLATION, message)
    assert not any(t.startswith(("huge", "many-")) for t in topic_partitions(a))
    # At the limit it is served, and so is a topic grown by up to 10,000 at once.
    assert create(a, NewTopic("big", 100, 1)) == {"big": None}
    futures = a.create_partitions([NewPartitions("big", 100 + 10_001)], request_timeout=TIMEOUT)
    assert_error(outcome(futures["big"]), KafkaError.POLICY_VIOLATION, message)
    assert topic_partitions(a)["big"] == 100


def test_create_partitions(broker) -> None:
    a = admin(broker.bootstrap)
    assert create(a, NewTopic("growing", 2, 1)) == {"growing": None}

    def grow(count: int, validate_only: bool = False, topic: str = "growing") -> Any:
        futures = a.create_partitions(
            [NewPartitions(topic, count)], validate_only=validate_only, request_timeout=TIMEOUT
        )
        return outcome(futures[topic])

    assert grow(5, validate_only=True) is None
    assert topic_partitions(a)["growing"] == 2
    assert grow(5) is None
    assert topic_partitions(a)["growing"] == 5
    assert_error(grow(5), KafkaError.INVALID_PARTITIONS, "Topic already has 5 partition(s).")
    assert_error(
        grow(3),
        KafkaError.INVALID_PARTITIONS,
        "The topic growing currently has 5 partition(s); 3 would not be an increase.",
    )
    assert_error(grow(9, topic="absent"), KafkaError.UNKNOWN_TOPIC_OR_PART)
    # The new partitions take writes.
    produce(broker.bootstrap, "growing", 2, partition=4)
    assert _watermarks(broker.bootstrap, "growing", 4) == (0, 2)
    broker.restart()
    a = admin(broker.bootstrap)
    assert topic_partitions(a)["growing"] == 5


# ---- DescribeConfigs ------------------------------------------------------------


def test_describe_configs_topic_values_and_sources(broker_factory) -> None:
    b = broker_factory({"log.retention.hours": "24", "log.segment.bytes": "5000000"})
    a = admin(b.bootstrap)
    assert create(a, NewTopic("described", 1, 1, config={"max.message.bytes": "2000000"})) == {
        "described": None
    }
    configs = topic_configs(a, "described")
    # An override: the topic's own config.
    assert configs["max.message.bytes"].value == "2000000"
    assert configs["max.message.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    # Broker defaults the operator set: static broker config.
    assert configs["retention.ms"].value == str(24 * 3600 * 1000)
    assert configs["retention.ms"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert configs["segment.bytes"].value == "5000000"
    assert configs["segment.bytes"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    # Kafka's defaults.
    assert configs["cleanup.policy"].value == "delete"
    assert configs["cleanup.policy"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["min.insync.replicas"].value == "1"
    assert all(not entry.is_read_only and not entry.is_sensitive for entry in configs.values())
    # Synonyms: the override, then the broker key it falls back on.
    synonyms = configs["max.message.bytes"].synonyms
    assert synonyms["max.message.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert "message.max.bytes" in synonyms
    assert "log.retention.hours" in configs["retention.ms"].synonyms

    unknown = ConfigResource("topic", "no-such-topic")
    assert_error(
        outcome(a.describe_configs([unknown], request_timeout=TIMEOUT)[unknown]),
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    )


def test_describe_configs_broker(broker_factory) -> None:
    b = broker_factory({"num.partitions": "3"})
    a = admin(b.bootstrap)
    resource = ConfigResource("broker", "0")
    configs = a.describe_configs([resource], request_timeout=TIMEOUT)[resource].result(TIMEOUT)
    assert configs["num.partitions"].value == "3"
    assert configs["num.partitions"].source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert configs["log.retention.hours"].value == "168"
    assert configs["log.retention.hours"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["listeners"].value == f"PLAINTEXT://{b.bootstrap}"
    assert configs["broker.id"].is_read_only


def test_describe_configs_raw_filters_types_and_errors(broker) -> None:
    a = admin(broker.bootstrap)
    assert create(a, NewTopic("typed", 1, 1)) == {"typed": None}
    resource = request_module(32, 4).DescribeConfigsResource
    response = raw_request(
        broker.bootstrap,
        32,
        4,
        resources=(
            resource(
                resource_type=2,
                resource_name="typed",
                configuration_keys=("retention.ms", "cleanup.policy", "no.such"),
            ),
            resource(resource_type=4, resource_name="7", configuration_keys=None),
            resource(resource_type=4, resource_name="", configuration_keys=None),
            resource(resource_type=8, resource_name="0", configuration_keys=None),
            resource(resource_type=2, resource_name="bad name", configuration_keys=None),
        ),
        include_synonyms=True,
        include_documentation=True,
    )
    typed, other_broker, cluster_default, logger, bad = response.results
    assert typed.error_code == ErrorCode.none
    entries = {c.name: c for c in typed.configs}
    assert set(entries) == {"retention.ms", "cleanup.policy"}
    assert entries["retention.ms"].config_type == 5  # LONG
    assert entries["cleanup.policy"].config_type == 7  # LIST
    assert [s.name for s in entries["cleanup.policy"].synonyms] == ["log.cleanup.policy"]
    assert other_broker.error_code == ErrorCode.invalid_request
    assert (
        other_broker.error_message
        == "Unexpected broker id, expected 0 or empty string, but received 7"
    )
    assert cluster_default.error_code == ErrorCode.none and cluster_default.configs == ()
    assert logger.error_code == ErrorCode.invalid_request
    assert bad.error_code == ErrorCode.invalid_topic_exception


# ---- AlterConfigs / IncrementalAlterConfigs ------------------------------------


def test_alter_configs_replaces_overrides_and_survives_restart(broker) -> None:
    a = admin(broker.bootstrap)
    assert create(
        a, NewTopic("altered", 1, 1, config={"retention.ms": "1000", "segment.ms": "60000"})
    ) == {"altered": None}
    resource = ConfigResource(
        "topic", "altered", set_config={"retention.bytes": "123456", "segment.ms": "70000"}
    )
    with pytest.warns(DeprecationWarning):
        futures = a.alter_configs([resource], request_timeout=TIMEOUT)
    assert outcome(futures[resource]) is None
    expected = {"retention.bytes": "123456", "segment.ms": "70000"}

    def overrides() -> dict[str, str]:
        configs = topic_configs(a, "altered")
        return {
            n: e.value
            for n, e in configs.items()
            if e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        }

    # Set semantics: retention.ms, not listed, is back to its default.
    assert overrides() == expected
    broker.restart()
    a = admin(broker.bootstrap)
    assert overrides() == expected

    bad = ConfigResource("topic", "altered", set_config={"retention.bytes": "lots"})
    with pytest.warns(DeprecationWarning):
        assert_error(
            outcome(a.alter_configs([bad], request_timeout=TIMEOUT)[bad]),
            KafkaError.INVALID_CONFIG,
            "retention.bytes",
        )
    missing = ConfigResource("topic", "no-such-topic", set_config={"retention.bytes": "1"})
    with pytest.warns(DeprecationWarning):
        assert_error(
            outcome(a.alter_configs([missing], request_timeout=TIMEOUT)[missing]),
            KafkaError.UNKNOWN_TOPIC_OR_PART,
        )
    assert overrides() == expected
    # A broker config that cannot change at run time keeps Kafka's refusal (the
    # dynamic ones: tests/test_dynamic_configs.py).
    broker_resource = ConfigResource("broker", "0", set_config={"log.dirs": "/elsewhere"})
    with pytest.warns(DeprecationWarning):
        result = outcome(
            a.alter_configs([broker_resource], request_timeout=TIMEOUT)[broker_resource]
        )
    assert_error(
        result, KafkaError.INVALID_REQUEST, "Cannot update these configs dynamically: Set(log.dirs)"
    )


def test_incremental_alter_configs_and_restart(broker) -> None:
    a = admin(broker.bootstrap)
    assert create(a, NewTopic("tuned", 1, 1, config={"retention.ms": "1000"})) == {"tuned": None}
    SET, DELETE, APPEND, SUBTRACT = (
        AlterConfigOpType.SET,
        AlterConfigOpType.DELETE,
        AlterConfigOpType.APPEND,
        AlterConfigOpType.SUBTRACT,
    )

    assert (
        incremental(a, "tuned", ("segment.bytes", "1048576", SET), ("retention.ms", None, DELETE))
        is None
    )
    configs = topic_configs(a, "tuned")
    assert configs["segment.bytes"].value == "1048576"
    assert configs["segment.bytes"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert configs["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value
    assert configs["retention.ms"].value == str(7 * 24 * 3600 * 1000)

    # APPEND and SUBTRACT work on lists, from the effective value.
    assert incremental(a, "tuned", ("cleanup.policy", "compact", APPEND)) is None
    assert topic_configs(a, "tuned")["cleanup.policy"].value == "delete,compact"
    assert incremental(a, "tuned", ("cleanup.policy", "delete", SUBTRACT)) is None
    assert topic_configs(a, "tuned")["cleanup.policy"].value == "compact"
    assert_error(
        incremental(a, "tuned", ("retention.ms", "5", APPEND)),
        KafkaError.INVALID_CONFIG,
        "Can't APPEND to key retention.ms because its type is not LIST.",
    )
    assert_error(
        incremental(a, "tuned", ("segment.bytes", "big", SET)),
        KafkaError.INVALID_CONFIG,
        "segment.bytes",
    )
    assert_error(
        incremental(a, "tuned", ("no.such.config", "1", SET)),
        KafkaError.INVALID_CONFIG,
        "Unknown topic config name",
    )
    assert_error(
        incremental(a, "absent", ("retention.ms", "1", SET)), KafkaError.UNKNOWN_TOPIC_OR_PART
    )
    # validate_only changes nothing.
    assert incremental(a, "tuned", ("segment.bytes", "2097152", SET), validate_only=True) is None
    assert topic_configs(a, "tuned")["segment.bytes"].value == "1048576"

    broker.restart()
    a = admin(broker.bootstrap)
    configs = topic_configs(a, "tuned")
    assert configs["segment.bytes"].value == "1048576"
    assert configs["cleanup.policy"].value == "compact"
    assert configs["retention.ms"].source == ConfigSource.DEFAULT_CONFIG.value


def test_retention_change_is_a_topic_config_and_reaches_the_log(broker) -> None:
    a = admin(broker.bootstrap)
    assert create(a, NewTopic("rolled", 1, 1)) == {"rolled": None}
    assert (
        incremental(
            a,
            "rolled",
            ("retention.ms", "86400000", AlterConfigOpType.SET),
            ("segment.bytes", "200", AlterConfigOpType.SET),
        )
        is None
    )
    entry = topic_configs(a, "rolled")["retention.ms"]
    assert (entry.value, entry.source) == ("86400000", TOPIC_CONFIG)
    # segment.bytes reached the partition log: small segments roll.
    produce(broker.bootstrap, "rolled", 10)
    segments = list((broker.data_dir / "rolled-0").glob("*.log"))
    assert len(segments) > 1, segments


# ---- DescribeCluster ------------------------------------------------------------


def test_describe_cluster(broker) -> None:
    a = admin(broker.bootstrap)
    description = a.describe_cluster(request_timeout=TIMEOUT).result(TIMEOUT)
    assert description.cluster_id
    assert description.controller.id == 0
    assert [(n.id, n.host, n.port) for n in description.nodes] == [(0, "127.0.0.1", broker.port)]
    assert description.authorized_operations is None
    with_ops = a.describe_cluster(
        include_authorized_operations=True, request_timeout=TIMEOUT
    ).result(TIMEOUT)
    assert {op.name for op in with_ops.authorized_operations} >= {"DESCRIBE", "ALTER", "CREATE"}
    # The cluster id is the one Metadata gives, and survives a restart.
    assert a.list_topics(timeout=TIMEOUT).cluster_id == description.cluster_id
    broker.restart()
    a = admin(broker.bootstrap)
    assert (
        a.describe_cluster(request_timeout=TIMEOUT).result(TIMEOUT).cluster_id
        == description.cluster_id
    )


def test_describe_cluster_raw_controller_endpoint_refused(broker) -> None:
    response = raw_request(
        broker.bootstrap, 60, 1, include_cluster_authorized_operations=False, endpoint_type=2
    )
    assert response.error_code == ErrorCode.mismatched_endpoint_type
    response = raw_request(
        broker.bootstrap, 60, 1, include_cluster_authorized_operations=False, endpoint_type=1
    )
    assert response.error_code == ErrorCode.none
    assert response.cluster_authorized_operations == -(2**31)
    assert [b.broker_id for b in response.brokers] == [0]


# ---- DeleteRecords --------------------------------------------------------------


def _watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    a = admin(bootstrap)
    tp = TopicPartition(topic, partition)
    earliest = a.list_offsets({tp: OffsetSpec.earliest()}, request_timeout=TIMEOUT)[tp].result(
        TIMEOUT
    )
    latest = a.list_offsets({tp: OffsetSpec.latest()}, request_timeout=TIMEOUT)[tp].result(TIMEOUT)
    return earliest.offset, latest.offset


def test_delete_records(broker) -> None:
    a = admin(broker.bootstrap)
    assert create(a, NewTopic("trimmed", 2, 1)) == {"trimmed": None}
    produce(broker.bootstrap, "trimmed", 10, partition=0)
    produce(broker.bootstrap, "trimmed", 4, partition=1)

    def delete(*tps: TopicPartition) -> dict[TopicPartition, Any]:
        return outcomes(
            a.delete_records(list(tps), request_timeout=TIMEOUT, operation_timeout=TIMEOUT)
        )

    results = delete(TopicPartition("trimmed", 0, 4))
    (deleted,) = results.values()
    assert deleted.low_watermark == 4
    assert _watermarks(broker.bootstrap, "trimmed", 0) == (4, 10)
    # Below the log start offset: nothing moves back.
    (deleted,) = delete(TopicPartition("trimmed", 0, 2)).values()
    assert deleted.low_watermark == 4
    # Past the high watermark.
    (error,) = delete(TopicPartition("trimmed", 0, 11)).values()
    assert_error(error, KafkaError.OFFSET_OUT_OF_RANGE)
    # -1: up to the high watermark.
    (deleted,) = delete(TopicPartition("trimmed", 1, -1)).values()
    assert deleted.low_watermark == 4
    assert _watermarks(broker.bootstrap, "trimmed", 1) == (4, 4)
    # A partition that does not exist (confluent-kafka checks that itself, so raw).
    module = request_module(21, 2)
    response = raw_request(
        broker.bootstrap,
        21,
        2,
        topics=(
            module.DeleteRecordsTopic(
                name="trimmed",
                partitions=(module.DeleteRecordsPartition(partition_index=7, offset=1),),
            ),
        ),
        timeout=datetime.timedelta(seconds=5),
    )
    (partition,) = response.topics[0].partitions
    assert (partition.error_code, partition.low_watermark) == (
        ErrorCode.unknown_topic_or_partition,
        -1,
    )

    # The log start offset persists, and fetching from it works.
    broker.restart()
    assert _watermarks(broker.bootstrap, "trimmed", 0) == (4, 10)
    # A fetch below the new log start is out of range; from it, the records are there.
    assert fetch(broker.bootstrap, "trimmed", 0, 0)[0] == ErrorCode.offset_out_of_range
    error, values = fetch(broker.bootstrap, "trimmed", 0, 4)
    assert error == ErrorCode.none
    assert values == [b"v%d" % i for i in range(4, 10)]


def fetch(
    bootstrap: str, topic: str, partition: int, offset: int
) -> tuple[ErrorCode, list[bytes | None]]:
    """One raw Fetch v16 (no leader epoch): (error, record values)."""
    module = request_module(1, 16)
    wanted = module.FetchPartition(
        partition=partition,
        current_leader_epoch=-1,
        fetch_offset=offset,
        last_fetched_epoch=-1,
        log_start_offset=-1,
        partition_max_bytes=1 << 20,
    )
    response = raw_request(
        bootstrap,
        1,
        16,
        max_wait=datetime.timedelta(milliseconds=100),
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=(module.FetchTopic(topic_id=_topic_id(bootstrap, topic), partitions=(wanted,)),),
        forgotten_topics_data=(),
        rack_id="",
        replica_state=module.ReplicaState(replica_id=-1, replica_epoch=-1),
    )
    (answer,) = response.responses[0].partitions
    records = bytes(answer.records or b"")
    values = []
    position = 0
    while position < len(records):
        header = parse_batch_header(records, position)
        end = position + 12 + header.batch_length
        values += [r.value for r in iter_records(records[position:end]) if r.offset >= offset]
        position = end
    return answer.error_code, values


# ---- kafka-python ---------------------------------------------------------------


def test_kafka_python_admin_create_describe_delete(broker) -> None:
    from kafka.admin import ConfigResource as KConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient
    from kafka.admin import NewTopic as KNewTopic
    from kafka.errors import TopicAlreadyExistsError

    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=10000)
    try:
        client.create_topics(
            [
                KNewTopic(
                    "kp-topic",
                    num_partitions=2,
                    replication_factor=1,
                    topic_configs={"retention.ms": "5000"},
                )
            ]
        )
        assert "kp-topic" in client.list_topics()
        with pytest.raises(TopicAlreadyExistsError):
            client.create_topics([KNewTopic("kp-topic", num_partitions=1, replication_factor=1)])
        described = client.describe_configs(
            [KConfigResource(ConfigResourceType.TOPIC, "kp-topic")], config_filter="all"
        )
        entries = _kafka_python_entries(described, "topic", "kp-topic")
        assert entries["retention.ms"] == ("5000", "DYNAMIC_TOPIC_CONFIG")
        assert entries["cleanup.policy"] == ("delete", "DEFAULT_CONFIG")
        broker_described = client.describe_configs(
            [KConfigResource(ConfigResourceType.BROKER, "0")], config_filter="all"
        )
        assert _kafka_python_entries(broker_described, "broker", "0")["broker.id"] == (
            "0",
            "DEFAULT_CONFIG",
        )
        client.delete_topics(["kp-topic"])
        assert "kp-topic" not in client.list_topics()
    finally:
        client.close()


def _kafka_python_entries(
    described: dict[str, Any], resource_type: str, name: str
) -> dict[str, tuple[str, str]]:
    """{config: (value, source name)} from kafka-python 3's describe_configs answer."""
    return {
        config: (entry["value"], entry["config_source"])
        for config, entry in described[resource_type][name].items()
    }


def test_incremental_alter_configs_raw_request_checks(broker) -> None:
    a = admin(broker.bootstrap)
    assert create(a, NewTopic("checked-ops", 1, 1)) == {"checked-ops": None}
    module = request_module(44, 1)

    def resource(resource_type: int, name: str, *configs: tuple[str, int, str | None]) -> Any:
        return module.AlterConfigsResource(
            resource_type=resource_type,
            resource_name=name,
            configs=tuple(
                module.AlterableConfig(name=n, config_operation=op, value=v) for n, op, v in configs
            ),
        )

    response = raw_request(
        broker.bootstrap,
        44,
        1,
        resources=(
            resource(2, "checked-ops", ("retention.ms", 0, "1000"), ("retention.ms", 1, None)),
            resource(4, "7", ("log.retention.ms", 0, "1")),
            resource(4, "x", ("log.retention.ms", 0, "1")),
            resource(4, "", ("log.retention.ms", 1, None)),
            resource(8, "0", ("kwire", 0, "DEBUG")),
            resource(2, "", ("retention.ms", 0, "1")),
            resource(2, "checked-ops", ("segment.ms", 9, "1")),
        ),
        validate_only=False,
    )
    answers = [(r.resource_name, r.error_code, r.error_message) for r in response.responses]
    assert answers == [
        ("checked-ops", ErrorCode.invalid_request, "Each resource must appear at most once."),
        ("7", ErrorCode.invalid_request, "Unexpected broker id, expected 0, but received 7"),
        ("x", ErrorCode.invalid_request, "Node id must be an integer, but it is: x"),
        ("", ErrorCode.none, None),
        (
            "0",
            ErrorCode.invalid_request,
            "BROKER_LOGGER resources are not supported by this broker",
        ),
        ("", ErrorCode.invalid_request, "Default topic resources are not allowed."),
        ("checked-ops", ErrorCode.invalid_request, "Each resource must appear at most once."),
    ]
    response = raw_request(
        broker.bootstrap,
        44,
        1,
        resources=(
            resource(2, "checked-ops", ("retention.ms", 0, "1000"), ("retention.ms", 1, None)),
            resource(2, "unknown-op", ("segment.ms", 9, "1")),
            resource(2, "null-set", ("segment.ms", 0, None)),
        ),
        validate_only=False,
    )
    answers = [(r.resource_name, r.error_code, r.error_message) for r in response.responses]
    assert answers == [
        ("checked-ops", ErrorCode.invalid_request, "Error due to duplicate config keys"),
        ("unknown-op", ErrorCode.invalid_request, "Unknown operations type 9"),
        ("null-set", ErrorCode.invalid_request, "Null value not supported for : segment.ms"),
    ]
