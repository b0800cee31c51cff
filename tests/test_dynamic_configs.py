"""Dynamic broker configs (kwire.dynamic_config) against real brokers, through
confluent-kafka's AdminClient: changes take effect without a restart (retention,
produce's size limit, the log cleaner, connection limits), are refused as Kafka
refuses them, are described with Kafka's sources and synonyms, and persist across
restarts (a file on one broker, /config/brokers/ in ZooKeeper in a cluster).

The sans-IO half of kwire.dynamic_config (validation, incremental operations,
precedence) is tested directly at the end.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cluster_harness import KwireCluster, wait_until, zk_client
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)
from conftest import free_port
from kio.schema.errors import ErrorCode
from raw_client import RawClient
from security_harness import Certificates

from kwire import dynamic_config as dc
from kwire.config import BrokerConfig
from kwire.entity_configs import DEFAULT_ENTITY
from kwire.protocol.messages import make, request_module

TIMEOUT = 15.0

# DescribeConfigs sources (ConfigSource in Kafka's DescribeConfigsResponse).
TOPIC_CONFIG = 1
DYNAMIC_BROKER_CONFIG = 2
DYNAMIC_DEFAULT_BROKER_CONFIG = 3
STATIC_BROKER_CONFIG = 4
DEFAULT_CONFIG = 5

SET, DELETE, APPEND = AlterConfigOpType.SET, AlterConfigOpType.DELETE, AlterConfigOpType.APPEND


# ---- helpers --------------------------------------------------------------------


def outcome(future: Any) -> Any:
    try:
        return future.result(TIMEOUT)
    except KafkaException as e:
        return e.args[0]


def assert_error(result: Any, code: int, message_part: str | None = None) -> None:
    assert isinstance(result, KafkaError | RawError), f"expected error {code}, got {result!r}"
    assert result.code() == code, f"expected error {code}, got {result.code()} {result.str()}"
    if message_part is not None:
        assert message_part in result.str(), result.str()


class RawError:
    """An error answer of a raw request, read as confluent-kafka's KafkaError is."""

    def __init__(self, code: int, message: str | None) -> None:
        self._code, self._message = code, message or ""

    def code(self) -> int:
        return self._code

    def str(self) -> str:
        return self._message


def raw_port(a: AdminClient) -> int:
    return a._kwire_port  # type: ignore[attr-defined]


def admin(bootstrap: str) -> AdminClient:
    client = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})
    # confluent-kafka refuses a BROKER resource named "" (the cluster-wide default):
    # those requests go raw, to the first bootstrap broker.
    client._kwire_port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])  # type: ignore[attr-defined]
    return client


def raw_alter(
    port: int, name: str, ops: Any, validate_only: bool = False, client: RawClient | None = None
) -> RawError | None:
    """IncrementalAlterConfigs v1 on the BROKER resource `name`, sent to this port (on
    `client`'s connection if given)."""
    module = request_module(44, 1)
    configs = tuple(
        make(module.AlterableConfig, name=name, config_operation=int(op.value), value=value)
        for name, value, op in ops
    )
    resource = make(module.AlterConfigsResource, resource_type=4, resource_name=name, configs=configs)
    request = make(module.IncrementalAlterConfigsRequest, resources=(resource,), validate_only=validate_only)
    if client is not None:
        (answer,) = client.send(request).responses
    else:
        with RawClient(port, timeout=TIMEOUT) as fresh:
            (answer,) = fresh.send(request).responses
    return None if answer.error_code == ErrorCode.none else RawError(answer.error_code.value, answer.error_message)


def describe(port: int, kind: str, name: str) -> dict[str, Any]:
    """DescribeConfigs v4 with synonyms, as a broker answers it (confluent-kafka's
    ConfigEntry keys synonyms by name, which folds the dynamic and default entries of
    one name into one, and cannot name the "" resource)."""
    module = request_module(32, 4)
    resource = make(module.DescribeConfigsResource, resource_type={"topic": 2, "broker": 4}[kind],
                    resource_name=name, configuration_keys=None)
    request = make(module.DescribeConfigsRequest, resources=(resource,), include_synonyms=True,
                   include_documentation=False)
    with RawClient(port, timeout=TIMEOUT) as client:
        (result,) = client.send(request).results
    assert result.error_code == ErrorCode.none, result.error_message
    return {
        c.name: SimpleNamespace(
            value=c.value, source=int(c.config_source), is_read_only=c.read_only, is_sensitive=c.is_sensitive,
            synonyms=[(y.name, y.value, int(y.source)) for y in c.synonyms],
        )
        for c in result.configs
    }


def client_describe(a: AdminClient, kind: str, name: str) -> dict[str, ConfigEntry]:
    resource = ConfigResource(kind, name)
    return a.describe_configs([resource], request_timeout=TIMEOUT)[resource].result(TIMEOUT)


def alter(
    a: AdminClient,
    broker: str,
    *ops: tuple[str, str | None, AlterConfigOpType],
    validate_only: bool = False,
) -> Any:
    """IncrementalAlterConfigs on a BROKER resource ("" for the cluster-wide default)."""
    if broker == "":
        return raw_alter(raw_port(a), "", ops, validate_only)
    entries = [ConfigEntry(name, value, incremental_operation=op) for name, value, op in ops]
    resource = ConfigResource("broker", broker, incremental_configs=entries)
    futures = a.incremental_alter_configs([resource], validate_only=validate_only, request_timeout=TIMEOUT)
    return outcome(futures[resource])


def alter_legacy(a: AdminClient, broker: str, configs: dict[str, str]) -> Any:
    resource = ConfigResource("broker", broker, set_config=configs)
    with pytest.warns(DeprecationWarning):
        futures = a.alter_configs([resource], request_timeout=TIMEOUT)
    return outcome(futures[resource])


def produce_one(bootstrap: str, topic: str, size: int, partition: int = 0) -> KafkaError | None:
    """Produce one value of `size` bytes; the delivery error, or None."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "message.timeout.ms": 10000})
    errors: list[KafkaError | None] = []
    producer.produce(topic, value=b"x" * size, partition=partition, on_delivery=lambda e, m: errors.append(e))
    assert producer.flush(TIMEOUT) == 0
    return errors[0]


def log_start_offset(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe", "enable.auto.commit": False})
    try:
        low, _ = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)
        return low
    finally:
        consumer.close()


def log_bytes(data_dir: Path, topic: str) -> int:
    return sum(p.stat().st_size for p in (data_dir / f"{topic}-0").glob("*.log"))


# ---- one broker ---------------------------------------------------------------------


def test_retention_default_reaches_every_log_without_an_override(broker_factory) -> None:
    b = broker_factory({"log.retention.check.interval.ms": "200"})
    a = admin(b.bootstrap)
    topics = [NewTopic("aged", 1, 1, config={"segment.bytes": "200"}),
              NewTopic("kept", 1, 1, config={"segment.bytes": "200", "retention.ms": "86400000"})]
    for future in a.create_topics(topics, request_timeout=TIMEOUT).values():
        future.result(TIMEOUT)
    producer = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
    for i in range(30):
        for topic in ("aged", "kept"):
            producer.produce(topic, value=b"v%03d" % i)
        producer.flush(TIMEOUT)
    time.sleep(0.3)  # every segment but the last is older than the new retention
    assert log_start_offset(b.bootstrap, "aged") == 0

    assert alter(a, "", ("log.retention.ms", "100", SET)) is None
    # The retention check deletes old segments of "aged" with no restart; "kept" has its own.
    wait_until(lambda: log_start_offset(b.bootstrap, "aged") > 0, 10, message="retention applied")
    time.sleep(0.5)
    assert log_start_offset(b.bootstrap, "kept") == 0

    entry = describe(b.port, "topic", "aged")["retention.ms"]
    assert (entry.value, entry.source) == ("100", DYNAMIC_DEFAULT_BROKER_CONFIG)
    assert entry.synonyms == [
        ("log.retention.ms", "100", DYNAMIC_DEFAULT_BROKER_CONFIG),
        ("log.retention.hours", "168", DEFAULT_CONFIG),
    ]
    kept = describe(b.port, "topic", "kept")["retention.ms"]
    assert (kept.value, kept.source) == ("86400000", TOPIC_CONFIG)


def test_message_max_bytes_changes_what_produce_accepts(broker_factory) -> None:
    b = broker_factory()
    a = admin(b.bootstrap)
    a.create_topics([NewTopic("sized", 1, 1)], request_timeout=TIMEOUT)["sized"].result(TIMEOUT)
    assert produce_one(b.bootstrap, "sized", 5000) is None

    assert alter(a, "0", ("message.max.bytes", "1000", SET)) is None
    error = produce_one(b.bootstrap, "sized", 5000)
    assert error is not None and error.code() == KafkaError.MSG_SIZE_TOO_LARGE, error
    assert produce_one(b.bootstrap, "sized", 100) is None

    entry = describe(b.port, "broker", "0")["message.max.bytes"]
    assert (entry.value, entry.source, entry.is_read_only) == ("1000", DYNAMIC_BROKER_CONFIG, False)
    assert entry.synonyms == [
        ("message.max.bytes", "1000", DYNAMIC_BROKER_CONFIG),
        ("message.max.bytes", "1048588", DEFAULT_CONFIG),
    ]
    assert describe(b.port, "broker", "0")["broker.id"].is_read_only
    # confluent-kafka's own view of it.
    seen = client_describe(a, "broker", "0")["message.max.bytes"]
    assert (seen.value, seen.source, seen.is_read_only) == ("1000", DYNAMIC_BROKER_CONFIG, False)

    # Deleting the dynamic value restores the default.
    assert alter(a, "0", ("message.max.bytes", None, DELETE)) is None
    assert produce_one(b.bootstrap, "sized", 5000) is None
    assert describe(b.port, "broker", "0")["message.max.bytes"].source == DEFAULT_CONFIG


def test_refusals_as_kafka(broker_factory) -> None:
    b = broker_factory()
    a = admin(b.bootstrap)
    cases: list[tuple[tuple[str, str | None, AlterConfigOpType], int, str]] = [
        (("broker.id", "7", SET), KafkaError.INVALID_REQUEST,
         "Cannot update these configs dynamically: Set(broker.id)"),
        (("log.dirs", "/tmp/x", SET), KafkaError.INVALID_REQUEST,
         "Cannot update these configs dynamically: Set(log.dirs)"),
        # Of a synonym group only the first is dynamic, as in Kafka.
        (("log.retention.hours", "1", SET), KafkaError.INVALID_REQUEST,
         "Cannot update these configs dynamically: Set(log.retention.hours)"),
        (("ssl.keystore.location", "/x.pem", SET), KafkaError.INVALID_REQUEST,
         "only per-listener using the listener prefix: Set(ssl.keystore.location)"),
        # Kafka 3.9 answers a bad value of a broker config with INVALID_REQUEST too.
        (("log.retention.ms", "soon", SET), KafkaError.INVALID_REQUEST,
         "Invalid value soon for configuration log.retention.ms"),
        (("log.cleaner.threads", "5", SET), KafkaError.INVALID_REQUEST,
         "Log cleaner threads cannot be increased to more than double the current value 1"),
        (("num.io.threads", "1", SET), KafkaError.INVALID_REQUEST,
         "value should be at least half the current value 8"),
        (("message.max.bytes", "5", APPEND), KafkaError.INVALID_CONFIG,
         "Config value append is not allowed for config key: message.max.bytes"),
    ]
    for op, code, message in cases:
        assert_error(alter(a, "0", op), code, message)
    # (The client waits for a broker 7 to send it to: sent raw.)
    assert_error(raw_alter(b.port, "7", [("log.retention.ms", "1", SET)]), KafkaError.INVALID_REQUEST,
                 "Unexpected broker id, expected 0, but received 7")
    assert_error(alter_legacy(a, "0", {"broker.id": "3"}), KafkaError.INVALID_REQUEST,
                 "Cannot update these configs dynamically: Set(broker.id)")

    # validate_only changes nothing.
    assert alter(a, "", ("log.retention.ms", "1000", SET), validate_only=True) is None
    assert describe(b.port, "broker", "") == {}
    assert describe(b.port, "broker", "0")["log.retention.ms"].source == DEFAULT_CONFIG
    # A custom name is kept, as Kafka keeps it (librdkafka's admin test sets one).
    assert alter(a, "0", ("sasl.kerberos.min.time.before.relogin", "58000", SET)) is None
    custom = describe(b.port, "broker", "0")["sasl.kerberos.min.time.before.relogin"]
    assert (custom.source, custom.is_sensitive, custom.value) == (DYNAMIC_BROKER_CONFIG, True, None)


def test_sources_synonyms_precedence_and_restart(broker_factory) -> None:
    b = broker_factory({"log.retention.hours": "48", "ssl.truststore.password": "secret"})
    a = admin(b.bootstrap)
    a.create_topics([NewTopic("plain", 1, 1)], request_timeout=TIMEOUT)["plain"].result(TIMEOUT)
    assert alter(a, "", ("log.retention.ms", "3600000", SET), ("log.cleanup.policy", "compact", APPEND)) is None
    assert alter(a, "0", ("log.retention.ms", "7200000", SET)) is None

    def check() -> None:
        configs = describe(b.port, "broker", "0")
        entry = configs["log.retention.ms"]
        assert (entry.value, entry.source, entry.is_read_only) == ("7200000", DYNAMIC_BROKER_CONFIG, False)
        assert entry.synonyms == [
            ("log.retention.ms", "7200000", DYNAMIC_BROKER_CONFIG),
            ("log.retention.ms", "3600000", DYNAMIC_DEFAULT_BROKER_CONFIG),
            ("log.retention.hours", "48", STATIC_BROKER_CONFIG),
            ("log.retention.hours", "168", DEFAULT_CONFIG),
        ]
        hours = configs["log.retention.hours"]
        assert (hours.value, hours.source, hours.is_read_only) == ("48", STATIC_BROKER_CONFIG, True)
        policy = configs["log.cleanup.policy"]
        assert (policy.value, policy.source) == ("delete,compact", DYNAMIC_DEFAULT_BROKER_CONFIG)
        password = configs["ssl.truststore.password"]
        assert (password.value, password.is_sensitive) == (None, True)
        assert password.synonyms[0] == ("ssl.truststore.password", None, STATIC_BROKER_CONFIG)
        assert all(value is None for _, value, _ in password.synonyms)
        # "" lists the cluster-wide dynamic defaults only, without this broker's own.
        defaults = describe(b.port, "broker", "")
        assert set(defaults) == {"log.retention.ms", "log.cleanup.policy"}
        assert (defaults["log.retention.ms"].value, defaults["log.retention.ms"].source) == (
            "3600000", DYNAMIC_DEFAULT_BROKER_CONFIG)
        assert defaults["log.retention.ms"].synonyms[0] == (
            "log.retention.ms", "3600000", DYNAMIC_DEFAULT_BROKER_CONFIG)
        topic = describe(b.port, "topic", "plain")
        assert (topic["retention.ms"].value, topic["retention.ms"].source) == ("7200000", DYNAMIC_BROKER_CONFIG)
        assert topic["retention.ms"].synonyms[:2] == [
            ("log.retention.ms", "7200000", DYNAMIC_BROKER_CONFIG),
            ("log.retention.ms", "3600000", DYNAMIC_DEFAULT_BROKER_CONFIG),
        ]
        assert topic["cleanup.policy"].value == "delete,compact"

    check()
    stored = json.loads((b.data_dir / dc.DYNAMIC_CONFIGS_FILE).read_text())
    assert stored["brokers"] == {
        "<default>": {"log.retention.ms": "3600000", "log.cleanup.policy": "delete,compact"},
        "0": {"log.retention.ms": "7200000"},
    }
    b.restart()
    a = admin(b.bootstrap)
    check()

    # Legacy AlterConfigs replaces the broker's whole set: its log.retention.ms goes,
    # and the cluster-wide default shows through.
    assert alter_legacy(a, "0", {"message.max.bytes": "2000000"}) is None
    entry = describe(b.port, "broker", "0")["log.retention.ms"]
    assert (entry.value, entry.source) == ("3600000", DYNAMIC_DEFAULT_BROKER_CONFIG)


def test_log_cleaner_settings_reach_the_cleaner(broker_factory) -> None:
    # A backoff of an hour: after its first look at start-up the cleaner sleeps.
    b = broker_factory({"log.cleaner.backoff.ms": "3600000"})
    a = admin(b.bootstrap)
    config = {"cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01"}
    a.create_topics([NewTopic("changelog", 1, 1, config=config)], request_timeout=TIMEOUT)["changelog"].result(TIMEOUT)
    producer = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
    for i in range(600):
        producer.produce("changelog", key=b"k%d" % (i % 5), value=b"v" * 64)
        if i % 50 == 0:
            producer.flush(TIMEOUT)
    assert producer.flush(TIMEOUT) == 0
    before = log_bytes(b.data_dir, "changelog")
    time.sleep(1.0)
    assert log_bytes(b.data_dir, "changelog") == before  # still backing off

    assert alter(a, "", ("log.cleaner.backoff.ms", "100", SET), ("log.cleaner.threads", "2", SET)) is None
    wait_until(lambda: log_bytes(b.data_dir, "changelog") < before / 4, 20, message="the log compacted")
    assert "log cleaner reconfigured: 2 thread(s)" in b.log_path.read_text()


def test_max_connections_per_ip_reaches_admission(broker_factory) -> None:
    b = broker_factory()
    assert describe(b.port, "broker", "0")["max.connections.per.ip"].value == str(2**31 - 1)

    def refused() -> bool:
        """A new connection is closed by the broker at once."""
        with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
            s.settimeout(2)
            try:
                return s.recv(1) == b""
            except TimeoutError:
                return False

    assert not refused()
    # A connection open before stays (Kafka closes none that are open).
    with RawClient(b.port, timeout=TIMEOUT) as kept:
        assert raw_alter(b.port, "", [("max.connections.per.ip", "1", SET)], client=kept) is None
        assert refused()
        assert raw_alter(b.port, "", [("max.connections.per.ip", None, DELETE)], client=kept) is None
    wait_until(lambda: not refused(), 5, message="admitted again")


# ---- a cluster ----------------------------------------------------------------------------


def test_cluster_default_reaches_every_broker_and_per_broker_only_its_own(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    cluster = kwire_cluster_factory(3, {"offsets.topic.replication.factor": "1"})
    a = admin(cluster.bootstrap)

    def joined() -> bool:
        md = a.list_topics(timeout=5)
        return set(md.brokers) == set(cluster.ids) and md.controller_id in md.brokers

    # A broker answers before it has joined: wait until the cluster is whole.
    wait_until(joined, 20, message="every broker and the controller known")
    topics = [NewTopic(f"on-{i}", num_partitions=1, replica_assignment=[[i]]) for i in cluster.ids]
    for future in a.create_topics(topics, request_timeout=TIMEOUT).values():
        future.result(TIMEOUT)

    def values() -> dict[int, tuple[str, int]]:
        out = {}
        for i in cluster.ids:
            entry = describe(cluster.broker(i).port, "broker", str(i))["message.max.bytes"]
            out[i] = (entry.value, entry.source)
        return out

    # The "" resource may go to any broker; every broker applies it.
    assert alter(a, "", ("message.max.bytes", "2000", SET)) is None
    expected = {i: ("2000", DYNAMIC_DEFAULT_BROKER_CONFIG) for i in cluster.ids}
    wait_until(lambda: values() == expected, 10, message="the default on every broker")
    # A per-broker value reaches that broker only.
    assert alter(a, "2", ("message.max.bytes", "3000", SET)) is None
    expected[2] = ("3000", DYNAMIC_BROKER_CONFIG)
    wait_until(lambda: values() == expected, 10, message="broker 2's own value")
    # Broker 1 refuses to change broker 2's (each broker validates its own, as Kafka).
    assert_error(raw_alter(cluster.broker(1).port, "2", [("message.max.bytes", "1", SET)]),
                 KafkaError.INVALID_REQUEST, "Unexpected broker id, expected 1, but received 2")

    def applied() -> bool:
        # Produce checks it where the partition lives: 2500 bytes fit on broker 2 only.
        results = {i: produce_one(cluster.bootstrap, f"on-{i}", 2500) for i in cluster.ids}
        assert results[2] is None, results
        return all(results[i] is not None and results[i].code() == KafkaError.MSG_SIZE_TOO_LARGE
                   for i in (1, 3))

    assert applied()

    # Kafka's znodes and notifications, as kafka-configs.sh reads them.
    with zk_client(cluster.connect_string) as zk:
        data, _ = zk.get("/config/brokers/<default>")
        assert json.loads(data) == {"version": 1, "config": {"message.max.bytes": "2000"}}
        data, _ = zk.get("/config/brokers/2")
        assert json.loads(data) == {"version": 1, "config": {"message.max.bytes": "3000"}}
        paths = set()
        for child in zk.get_children("/config/changes"):
            paths.add(json.loads(zk.get(f"/config/changes/{child}")[0])["entity_path"])
        assert {"brokers/<default>", "brokers/2"} <= paths

    for i in cluster.ids:
        cluster.restart(i)
    a = admin(cluster.bootstrap)
    wait_until(lambda: values() == expected, 20, message="the same values after restarts")
    wait_until(applied, 20, message="applied after restarts")


# ---- sans-IO ----------------------------------------------------------------------------


def test_precedence_validation_and_incremental_operations() -> None:
    config = BrokerConfig({"log.retention.hours": "5", "message.max.bytes": "5000"})
    assert config.retention_ms == 5 * 3_600_000
    # per-broker dynamic > cluster default dynamic > static > default
    changed = config.update_dynamic({"message.max.bytes": "100", "log.retention.ms": "10"}, {})
    assert changed == {"message.max.bytes", "log.retention.ms"}
    assert (config["message.max.bytes"], config.retention_ms) == (100, 10)
    assert config.update_dynamic({"message.max.bytes": "100"}, {"message.max.bytes": "7"}) == {
        "message.max.bytes", "log.retention.ms"}
    assert (config["message.max.bytes"], config.retention_ms) == (7, 5 * 3_600_000)
    assert config.update_dynamic({}, {}) == {"message.max.bytes"}
    assert config["message.max.bytes"] == 5000
    # validate() works on a copy.
    new = dc.validate(config, {"message.max.bytes": "9"}, per_broker=False)
    assert (new["message.max.bytes"], config["message.max.bytes"]) == (9, 5000)

    refusals = {
        "broker.id": "Cannot update these configs dynamically: Set(broker.id)",
        "listener.name.ssl.ssl.keystore.location": "Cannot update these configs dynamically",
        "ssl.keystore.password": "only per-listener using the listener prefix",
    }
    for key, message in refusals.items():
        with pytest.raises(dc.DynamicConfigError, match=re.escape(message)):
            dc.validate(config, {key: "1"}, per_broker=True)
    with pytest.raises(dc.DynamicConfigError, match="Invalid max.connections 0"):
        dc.validate(config, {"max.connections": "0"}, per_broker=False)
    with pytest.raises(dc.DynamicConfigError, match="max.connections.per.ip can be set to zero only"):
        dc.validate(config, {"max.connections.per.ip": "0"}, per_broker=False)
    dc.validate(config, {"max.connections.per.ip": "0", "max.connections.per.ip.overrides": "1.2.3.4:5"},
                per_broker=False)
    with pytest.raises(dc.DynamicConfigError) as refused:
        dc.validate(config, {"log.dirs": "x", "broker.id": "1"}, per_broker=True)
    assert str(refused.value) == "Cannot update these configs dynamically: Set(broker.id, log.dirs)"

    assert dc.incremental({"a": "1"}, [("b", dc.SET, "2"), ("a", dc.DELETE, None)]) == {"b": "2"}
    assert dc.incremental({}, [("log.cleanup.policy", dc.APPEND, "compact")]) == {
        "log.cleanup.policy": "delete,compact"}
    assert dc.incremental({"log.cleanup.policy": "delete,compact"},
                          [("log.cleanup.policy", dc.SUBTRACT, "delete")]) == {"log.cleanup.policy": "compact"}
    with pytest.raises(dc.InvalidConfigError, match="Unknown config name: nope"):
        dc.incremental({}, [("nope", dc.APPEND, "x")])
    assert dc.entity_of("") == DEFAULT_ENTITY and dc.entity_of("3") == "3"
    assert dc.is_sensitive("ssl.key.password") and dc.is_sensitive("custom.thing")
    assert not dc.is_sensitive("log.retention.ms")
    # Stored keys that cannot be dynamic are dropped when applied, as Kafka does.
    assert dc.stored_configs_to_apply({"broker.id": "4", "log.retention.ms": "5"}, per_broker=True) == {
        "log.retention.ms": "5"}


# ---- a TLS listener's stores --------------------------------------------------------------


def served_common_name(port: int, ca_file: Path) -> str:
    """The CN of the certificate the listener presents to a new connection."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
        with context.wrap_socket(raw) as tls:
            subject = dict(item for rdn in tls.getpeercert()["subject"] for item in rdn)
    return subject["commonName"]


def test_listener_keystore_reloads_without_a_restart(broker_factory, tmp_path) -> None:
    certs = Certificates(tmp_path / "certs")

    def keystore(name: str, common_name: str) -> Path:
        cert = certs.ca.issue_cert("127.0.0.1", common_name=common_name)
        path = certs.directory / name
        # One PEM file: the private key, then the certificate chain (ssl.keystore.type=PEM).
        path.write_bytes(cert.private_key_pem.bytes() + b"".join(p.bytes() for p in cert.cert_chain_pems))
        return path

    b = broker_factory({})
    b.stop()  # again with an SSL listener beside the PLAINTEXT one the factory waits on
    tls_port = free_port()
    b.overrides.update({
        "listeners": f"PLAINTEXT://127.0.0.1:{b.port},SSL://127.0.0.1:{tls_port}",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certs.server_keystore),
    })
    b.start()
    a = admin(b.bootstrap)
    key = "listener.name.ssl.ssl.keystore.location"
    assert served_common_name(tls_port, certs.ca_file) == "kwire-broker"

    renewed = keystore("renewed.pem", "kwire-broker-2")
    assert alter(a, "0", (key, str(renewed), SET)) is None
    assert served_common_name(tls_port, certs.ca_file) == "kwire-broker-2"
    entry = describe(b.port, "broker", "0")[key]
    assert (entry.value, entry.source) == (str(renewed), DYNAMIC_BROKER_CONFIG)
    assert entry.synonyms == [
        (key, str(renewed), DYNAMIC_BROKER_CONFIG),
        ("ssl.keystore.location", str(certs.server_keystore), STATIC_BROKER_CONFIG),
        ("ssl.keystore.location", "", DEFAULT_CONFIG),
    ]

    # Renewed in place: naming the same file again reloads it (Kafka does too).
    keystore("renewed.pem", "kwire-broker-3")
    assert served_common_name(tls_port, certs.ca_file) == "kwire-broker-2"
    assert alter(a, "0", (key, str(renewed), SET)) is None
    assert served_common_name(tls_port, certs.ca_file) == "kwire-broker-3"

    refusals = [
        ("0", (key, str(tmp_path / "missing.pem"), SET),
         "Validation of dynamic config update of SSL keystore/truststore failed"),
        ("", (key, str(renewed), SET),
         "Cannot update these configs at default cluster level, broker id must be specified"),
        ("0", ("listener.name.ssl.ssl.key.password", "x", SET), "Password encoder secret not configured"),
        ("0", ("listener.name.plaintext.ssl.keystore.location", str(renewed), SET),
         "Cannot update these configs dynamically"),
    ]
    for broker_name, op, message in refusals:
        assert_error(alter(a, broker_name, op), KafkaError.INVALID_REQUEST, message)
    assert served_common_name(tls_port, certs.ca_file) == "kwire-broker-3"

    b.restart()
    assert served_common_name(tls_port, certs.ca_file) == "kwire-broker-3"
