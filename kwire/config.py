"""Broker and topic configuration, with Kafka's names, defaults and validation.

Broker configs come from a server.properties file and `--override key=value`, as
`kafka-server-start.sh` takes them. Topic configs are per-topic overrides whose
defaults come from the broker (`retention.ms` <- `log.retention.ms` ...), which is
how DescribeConfigs reports their source.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LONG_MAX = 2**63 - 1
INT_MAX = 2**31 - 1


class ConfigError(ValueError):
    """A config value Kafka would refuse; the message names the key."""


def _parse_int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"{value} is outside [{lo}, {hi}]")
        return value

    return parse


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"expected true or false, got {text!r}")
    return value == "true"


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip()
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return parse


def _parse_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _parse_cleanup_policy(text: str) -> str:
    items = _parse_list(text)
    if not items or any(item not in ("delete", "compact") for item in items):
        raise ValueError(f"{text!r} is not a list of delete, compact")
    return ",".join(items)


def _parse_str(text: str) -> str:
    return text.strip()


_LISTENER = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)://(?P<host>\[[^\]]*\]|[^:]*):(?P<port>\d+)$")


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.name}://{self.host}:{self.port}"


def parse_listeners(text: str) -> list[Listener]:
    listeners = []
    for item in _parse_list(text):
        match = _LISTENER.match(item)
        if not match:
            raise ValueError(f"{item!r} is not NAME://host:port")
        port = int(match["port"])
        if port > 65535:
            raise ValueError(f"port {port} out of range")
        listeners.append(Listener(match["name"].upper(), match["host"].strip("[]"), port))
    if not listeners:
        raise ValueError("no listener given")
    return listeners


def _parse_listeners(text: str) -> str:
    parse_listeners(text)
    return text.strip()


_HTTP_LISTENER = re.compile(r"^http://(?P<host>\[[^\]]*\]|[^:/]*):(?P<port>\d+)/?$")


def parse_http_listeners(text: str) -> list[tuple[str, int]]:
    """http.listeners: http://host:port,... (host and port to bind; port 0 picks one)."""
    bound = []
    for item in _parse_list(text):
        match = _HTTP_LISTENER.match(item)
        if not match or int(match["port"]) > 65535:
            raise ValueError(f"{item!r} is not http://host:port")
        bound.append((match["host"].strip("[]"), int(match["port"])))
    return bound


def _parse_http_listeners(text: str) -> str:
    parse_http_listeners(text)
    return text.strip()


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# Kafka's default listener.security.protocol.map: each protocol names its own listener.
DEFAULT_SECURITY_PROTOCOL_MAP = ",".join(f"{p}:{p}" for p in SECURITY_PROTOCOLS)


def parse_security_protocol_map(text: str) -> dict[str, str]:
    """listener.security.protocol.map: NAME:PROTOCOL,... (names upper-cased, as Kafka does)."""
    mapping: dict[str, str] = {}
    for item in _parse_list(text):
        name, sep, protocol = item.partition(":")
        name, protocol = name.strip().upper(), protocol.strip().upper()
        if not sep or not name:
            raise ValueError(f"{item!r} is not LISTENER_NAME:SECURITY_PROTOCOL")
        if protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"{protocol!r} is not one of {', '.join(SECURITY_PROTOCOLS)}")
        if name in mapping:
            raise ValueError(f"listener name {name} is mapped twice")
        mapping[name] = protocol
    return mapping


def _parse_security_protocol_map(text: str) -> str:
    parse_security_protocol_map(text)
    return text.strip()


def parse_ip_overrides(text: str) -> dict[str, int]:
    """max.connections.per.ip.overrides: host:count,... (a host is a name or an address)."""
    overrides: dict[str, int] = {}
    for item in _parse_list(text):
        host, sep, count = item.rpartition(":")
        if not sep or not host.strip():
            raise ValueError(f"{item!r} is not host:count")
        overrides[host.strip().strip("[]")] = _parse_int(0, INT_MAX)(count)
    return overrides


def _parse_ip_overrides(text: str) -> str:
    parse_ip_overrides(text)
    return text.strip()


@dataclass(frozen=True, slots=True)
class ConfigDef:
    name: str
    parse: Callable[[str], Any]
    default: Any
    doc: str = ""
    # Kafka's "sensitive"/"read-only" flags as DescribeConfigs reports them.
    read_only: bool = True


_I = _parse_int

BROKER_CONFIGS: dict[str, ConfigDef] = {
    d.name: d
    for d in [
        ConfigDef("broker.id", _I(-1, INT_MAX), 0, "this broker's node id"),
        ConfigDef("node.id", _I(-1, INT_MAX), -1, "alias of broker.id"),
        ConfigDef("listeners", _parse_listeners, "PLAINTEXT://127.0.0.1:9092"),
        ConfigDef("advertised.listeners", _parse_str, ""),
        ConfigDef("log.dirs", _parse_str, ""),
        ConfigDef("log.dir", _parse_str, "kwire-data"),
        ConfigDef("num.partitions", _I(1, INT_MAX), 1),
        ConfigDef("default.replication.factor", _I(1, 32767), 1),
        ConfigDef("auto.create.topics.enable", _parse_bool, True),
        ConfigDef("delete.topic.enable", _parse_bool, True),
        ConfigDef("log.segment.bytes", _I(14, INT_MAX), 1 << 30),
        ConfigDef("log.roll.ms", _I(1, LONG_MAX), None),
        ConfigDef("log.roll.hours", _I(1, INT_MAX), 168),
        ConfigDef("log.retention.ms", _I(-1, LONG_MAX), None),
        ConfigDef("log.retention.minutes", _I(-1, INT_MAX), None),
        ConfigDef("log.retention.hours", _I(-1, INT_MAX), 168),
        ConfigDef("log.retention.bytes", _I(-1, LONG_MAX), -1),
        ConfigDef("log.retention.check.interval.ms", _I(1, LONG_MAX), 300_000),
        ConfigDef("log.cleanup.policy", _parse_cleanup_policy, "delete"),
        ConfigDef("log.index.interval.bytes", _I(0, INT_MAX), 4096),
        ConfigDef("log.index.size.max.bytes", _I(4, INT_MAX), 10 * 1024 * 1024),
        ConfigDef("log.segment.delete.delay.ms", _I(0, LONG_MAX), 60_000),
        ConfigDef("log.flush.interval.messages", _I(1, LONG_MAX), LONG_MAX),
        ConfigDef("log.flush.interval.ms", _I(0, LONG_MAX), None),
        ConfigDef("log.flush.scheduler.interval.ms", _I(0, LONG_MAX), LONG_MAX),
        ConfigDef("log.message.timestamp.type", _parse_choice("CreateTime", "LogAppendTime"), "CreateTime"),
        ConfigDef("compression.type", _parse_choice("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"), "producer"),
        ConfigDef("message.max.bytes", _I(0, INT_MAX), 1048588),
        ConfigDef("socket.request.max.bytes", _I(1, INT_MAX), 104857600),
        # Kafka's default is -1, unbounded; kwire's (None) is DEFAULT_QUEUED_MAX_REQUEST_BYTES.
        ConfigDef("queued.max.request.bytes", _I(-1, LONG_MAX), None),
        ConfigDef("connections.max.idle.ms", _I(-1, LONG_MAX), 600_000),
        ConfigDef("max.connections", _I(0, INT_MAX), INT_MAX),
        ConfigDef("max.connections.per.ip", _I(0, INT_MAX), INT_MAX),
        ConfigDef("max.connections.per.ip.overrides", _parse_ip_overrides, ""),
        ConfigDef("listener.security.protocol.map", _parse_security_protocol_map, DEFAULT_SECURITY_PROTOCOL_MAP),
        ConfigDef("security.inter.broker.protocol", _parse_choice(*SECURITY_PROTOCOLS), "PLAINTEXT"),
        ConfigDef("authorizer.class.name", _parse_str, ""),
        ConfigDef("min.insync.replicas", _I(1, INT_MAX), 1),
        ConfigDef("log.cleaner.delete.retention.ms", _I(0, LONG_MAX), 86_400_000),
        ConfigDef("log.cleaner.min.cleanable.ratio", float, 0.5),
        ConfigDef("log.cleaner.min.compaction.lag.ms", _I(0, LONG_MAX), 0),
        ConfigDef("log.cleaner.max.compaction.lag.ms", _I(1, LONG_MAX), LONG_MAX),
        # The log cleaner (kwire.log.cleaner_manager), with Kafka's defaults.
        ConfigDef("log.cleaner.enable", _parse_bool, True),
        ConfigDef("log.cleaner.threads", _I(0, INT_MAX), 1),
        ConfigDef("log.cleaner.backoff.ms", _I(0, LONG_MAX), 15_000),
        ConfigDef("log.cleaner.dedupe.buffer.size", _I(0, LONG_MAX), 134_217_728),
        ConfigDef("log.cleaner.io.buffer.load.factor", float, 0.9),
        # Bytes read and written by the cleaner, per second, all threads together
        # (Kafka's default: Double.MAX_VALUE, no limit).
        ConfigDef("log.cleaner.io.max.bytes.per.second", float, 1.7976931348623157e308),
        ConfigDef("log.message.timestamp.before.max.ms", _I(0, LONG_MAX), LONG_MAX),
        ConfigDef("log.message.timestamp.after.max.ms", _I(0, LONG_MAX), LONG_MAX),
        # Deprecated in Kafka 3.6 (KIP-937) but still read: before/after fall back to it.
        ConfigDef("log.message.timestamp.difference.max.ms", _I(0, LONG_MAX), LONG_MAX),
        ConfigDef("unclean.leader.election.enable", _parse_bool, False),
        ConfigDef("offsets.topic.num.partitions", _I(1, INT_MAX), 50),
        ConfigDef("offsets.topic.replication.factor", _I(1, 32767), 1),
        ConfigDef("offsets.retention.minutes", _I(1, INT_MAX), 10080),
        ConfigDef("offsets.retention.check.interval.ms", _I(1, LONG_MAX), 600_000),
        ConfigDef("offsets.topic.segment.bytes", _I(1, INT_MAX), 100 * 1024 * 1024),
        ConfigDef("group.initial.rebalance.delay.ms", _I(0, INT_MAX), 3000),
        ConfigDef("group.min.session.timeout.ms", _I(0, INT_MAX), 6000),
        ConfigDef("group.max.session.timeout.ms", _I(0, INT_MAX), 1_800_000),
        ConfigDef("group.max.size", _I(1, INT_MAX), INT_MAX),
        ConfigDef("transactional.id.expiration.ms", _I(1, INT_MAX), 604_800_000),
        ConfigDef("transaction.max.timeout.ms", _I(1, INT_MAX), 900_000),
        ConfigDef("transaction.state.log.num.partitions", _I(1, INT_MAX), 50),
        ConfigDef("transaction.state.log.segment.bytes", _I(1, INT_MAX), 100 * 1024 * 1024),
        ConfigDef("producer.id.expiration.ms", _I(1, INT_MAX), 86_400_000),
        ConfigDef("max.incremental.fetch.session.cache.slots", _I(0, INT_MAX), 1000),
        ConfigDef("fetch.max.bytes", _I(1024, INT_MAX), 57_671_680),
        ConfigDef("num.network.threads", _I(1, INT_MAX), 3),
        ConfigDef("num.io.threads", _I(1, INT_MAX), 8),
        ConfigDef("zookeeper.connect", _parse_str, ""),
        # Cluster mode (zookeeper.connect set): Kafka's names and defaults.
        ConfigDef("zookeeper.session.timeout.ms", _I(1, INT_MAX), 18_000),
        ConfigDef("zookeeper.connection.timeout.ms", _I(1, INT_MAX), None),
        ConfigDef("broker.rack", _parse_str, ""),
        ConfigDef("inter.broker.listener.name", _parse_str, ""),
        ConfigDef("replica.lag.time.max.ms", _I(0, LONG_MAX), 30_000),
        ConfigDef("replica.fetch.wait.max.ms", _I(0, INT_MAX), 500),
        ConfigDef("replica.fetch.min.bytes", _I(1, INT_MAX), 1),
        ConfigDef("replica.fetch.max.bytes", _I(0, INT_MAX), 1_048_576),
        ConfigDef("replica.fetch.response.max.bytes", _I(0, INT_MAX), 10_485_760),
        ConfigDef("replica.fetch.backoff.ms", _I(0, INT_MAX), 1000),
        ConfigDef("replica.socket.timeout.ms", _I(1, INT_MAX), 30_000),
        ConfigDef("replica.high.watermark.checkpoint.interval.ms", _I(1, LONG_MAX), 5000),
        ConfigDef("controlled.shutdown.enable", _parse_bool, True),
        ConfigDef("controlled.shutdown.max.retries", _I(0, INT_MAX), 3),
        ConfigDef("controlled.shutdown.retry.backoff.ms", _I(0, LONG_MAX), 5000),
        ConfigDef("auto.leader.rebalance.enable", _parse_bool, True),
        ConfigDef("leader.imbalance.check.interval.seconds", _I(1, LONG_MAX), 300),
        ConfigDef("leader.imbalance.per.broker.percentage", _I(0, 100), 10),
        # Kafka's defaults are 3 and 2; kwire's are those of one broker, as for
        # offsets.topic.replication.factor (a cluster's config sets them).
        ConfigDef("transaction.state.log.replication.factor", _I(1, 32767), 1),
        ConfigDef("transaction.state.log.min.isr", _I(1, INT_MAX), 1),
        ConfigDef("offsets.commit.timeout.ms", _I(1, INT_MAX), 5000),
        ConfigDef("request.timeout.ms", _I(1, INT_MAX), 30_000),
        ConfigDef("cluster.id", _parse_str, ""),
        # TLS (kwire.security.tls). Each may also be given per listener, as
        # listener.name.<listener>.<key> (BrokerConfig.listener_value). Stores are PEM only.
        ConfigDef("ssl.keystore.type", _parse_str, "JKS"),
        ConfigDef("ssl.keystore.location", _parse_str, ""),
        ConfigDef("ssl.keystore.password", _parse_str, ""),
        ConfigDef("ssl.key.password", _parse_str, ""),
        ConfigDef("ssl.truststore.type", _parse_str, "JKS"),
        ConfigDef("ssl.truststore.location", _parse_str, ""),
        ConfigDef("ssl.truststore.password", _parse_str, ""),
        ConfigDef("ssl.client.auth", _parse_choice("none", "requested", "required"), "none"),
        ConfigDef("ssl.enabled.protocols", _parse_str, "TLSv1.2,TLSv1.3"),
        ConfigDef("ssl.protocol", _parse_str, "TLSv1.3"),
        ConfigDef("ssl.cipher.suites", _parse_str, ""),
        ConfigDef("ssl.endpoint.identification.algorithm", _parse_str, "https"),
        ConfigDef("ssl.principal.mapping.rules", _parse_str, "DEFAULT"),
        # SASL (kwire.security.sasl): users of PLAIN from the listener's JAAS config,
        # SCRAM credentials from the entity configs (AlterUserScramCredentials).
        ConfigDef("sasl.enabled.mechanisms", _parse_str, "GSSAPI"),
        ConfigDef("sasl.mechanism.inter.broker.protocol", _parse_str, "GSSAPI"),
        ConfigDef("sasl.server.max.receive.size", _I(1, INT_MAX), 524_288),
        ConfigDef("connections.max.reauth.ms", _I(0, LONG_MAX), 0),
        # Authorization (kwire.security.authorizer).
        ConfigDef("super.users", _parse_str, ""),
        ConfigDef("allow.everyone.if.no.acl.found", _parse_bool, False),
        # Client quotas (kwire.quotas): rates are measured over quota.window.num windows.
        ConfigDef("quota.window.num", _I(1, INT_MAX), 11),
        ConfigDef("quota.window.size.seconds", _I(1, INT_MAX), 1),
        ConfigDef("controller.quota.window.num", _I(1, INT_MAX), 11),
        ConfigDef("controller.quota.window.size.seconds", _I(1, INT_MAX), 1),
        # The HTTP listener (kwire.http): /health, /metrics, the web console. None by default.
        ConfigDef("http.listeners", _parse_http_listeners, ""),
        # The admin endpoint (/admin/*: fault injection, kwire.http.admin) answers 404 unless
        # true: a production broker never lets its HTTP port fail requests by accident.
        ConfigDef("http.admin.enable", _parse_bool, False),
        # How often the web console samples consumer group lag (its charts keep an hour).
        ConfigDef("http.console.lag.sample.interval.ms", _I(100, INT_MAX), 15_000),
    ]
}

# The broker configs Kafka 3.9 updates at run time (DynamicBrokerConfig.AllDynamicConfigs)
# that kwire has: AlterConfigs on a BROKER resource may set them (kwire.dynamic_config),
# DescribeConfigs reports them read_only=false. Of a synonym group only the first is
# dynamic (log.retention.ms, not log.retention.hours), as in Kafka.
DYNAMIC_BROKER_CONFIGS: frozenset[str] = frozenset({
    # DynamicLogConfig: the broker defaults of topic configs.
    "log.segment.bytes", "log.roll.ms", "log.index.size.max.bytes", "log.index.interval.bytes",
    "log.flush.interval.messages", "log.flush.interval.ms", "log.retention.bytes",
    "log.retention.ms", "message.max.bytes", "log.cleaner.delete.retention.ms",
    "log.cleaner.min.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms",
    "log.segment.delete.delay.ms", "log.cleaner.min.cleanable.ratio", "log.cleanup.policy",
    "unclean.leader.election.enable", "min.insync.replicas", "compression.type",
    "log.message.timestamp.type", "log.message.timestamp.difference.max.ms",
    "log.message.timestamp.before.max.ms", "log.message.timestamp.after.max.ms",
    # LogCleaner.ReconfigurableConfigs.
    "log.cleaner.threads", "log.cleaner.dedupe.buffer.size", "log.cleaner.io.buffer.load.factor",
    "log.cleaner.io.max.bytes.per.second", "log.cleaner.backoff.ms",
    # SocketServer and the thread pools (cluster-wide, as Kafka allows).
    "max.connections", "max.connections.per.ip", "max.connections.per.ip.overrides",
    "num.io.threads", "num.network.threads",
    # DynamicProducerStateManagerConfig.
    "producer.id.expiration.ms",
})
# Kafka reports the TLS stores dynamic too, though only their listener.name.<l>. forms
# may be set (kwire.dynamic_config).
_SSL_STORE_CONFIGS = (
    "ssl.keystore.type", "ssl.keystore.location", "ssl.keystore.password", "ssl.key.password",
    "ssl.truststore.type", "ssl.truststore.location", "ssl.truststore.password",
)
for _name in (*DYNAMIC_BROKER_CONFIGS, *_SSL_STORE_CONFIGS):
    BROKER_CONFIGS[_name] = replace(BROKER_CONFIGS[_name], read_only=False)

# Names Kafka accepts that we read nowhere: no warning for them.
_KNOWN_UNUSED = {
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "num.recovery.threads.per.data.dir",
    "group.coordinator.rebalance.protocols",
    "process.roles",
    "controller.quorum.voters",
    "controller.listener.names",
}


# kwire's bound on queued.max.request.bytes when none is given (Kafka's -1 is
# unbounded): large request frames being read hold at most this much, together.
DEFAULT_QUEUED_MAX_REQUEST_BYTES = 100 * 1024 * 1024

# Per-listener settings: listener.name.<listener>.<key>, e.g.
# listener.name.sasl_ssl.ssl.keystore.location or
# listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config.
_LISTENER_PREFIX = "listener.name."

# The authorizers kwire stands in for (authorizer.class.name); any other is refused.
KNOWN_AUTHORIZERS = (
    "kafka.security.authorizer.AclAuthorizer",
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.auth.SimpleAclAuthorizer",
)
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class TopicConfigDef:
    name: str
    parse: Callable[[str], Any]
    # The broker config that supplies the default (DescribeConfigs source
    # DEFAULT_CONFIG / STATIC_BROKER_CONFIG), or None for a fixed default.
    broker_key: str | None
    default: Any = None


TOPIC_CONFIGS: dict[str, TopicConfigDef] = {
    d.name: d
    for d in [
        TopicConfigDef("cleanup.policy", _parse_cleanup_policy, "log.cleanup.policy"),
        TopicConfigDef("compression.type", BROKER_CONFIGS["compression.type"].parse, "compression.type"),
        TopicConfigDef("delete.retention.ms", _I(0, LONG_MAX), "log.cleaner.delete.retention.ms"),
        TopicConfigDef("file.delete.delay.ms", _I(0, LONG_MAX), "log.segment.delete.delay.ms"),
        TopicConfigDef("flush.messages", _I(1, LONG_MAX), "log.flush.interval.messages"),
        TopicConfigDef("flush.ms", _I(0, LONG_MAX), "log.flush.interval.ms"),
        TopicConfigDef("index.interval.bytes", _I(0, INT_MAX), "log.index.interval.bytes"),
        TopicConfigDef("max.message.bytes", _I(0, INT_MAX), "message.max.bytes"),
        TopicConfigDef("message.timestamp.type", BROKER_CONFIGS["log.message.timestamp.type"].parse, "log.message.timestamp.type"),
        TopicConfigDef("message.timestamp.before.max.ms", _I(0, LONG_MAX), "log.message.timestamp.before.max.ms"),
        TopicConfigDef("message.timestamp.after.max.ms", _I(0, LONG_MAX), "log.message.timestamp.after.max.ms"),
        TopicConfigDef("message.timestamp.difference.max.ms", _I(0, LONG_MAX), "log.message.timestamp.difference.max.ms"),
        TopicConfigDef("min.cleanable.dirty.ratio", float, "log.cleaner.min.cleanable.ratio"),
        TopicConfigDef("min.compaction.lag.ms", _I(0, LONG_MAX), "log.cleaner.min.compaction.lag.ms"),
        TopicConfigDef("max.compaction.lag.ms", _I(1, LONG_MAX), "log.cleaner.max.compaction.lag.ms"),
        TopicConfigDef("min.insync.replicas", _I(1, INT_MAX), "min.insync.replicas"),
        TopicConfigDef("retention.bytes", _I(-1, LONG_MAX), "log.retention.bytes"),
        TopicConfigDef("retention.ms", _I(-1, LONG_MAX), "log.retention.ms"),
        TopicConfigDef("segment.bytes", _I(14, INT_MAX), "log.segment.bytes"),
        TopicConfigDef("segment.index.bytes", _I(4, INT_MAX), "log.index.size.max.bytes"),
        TopicConfigDef("segment.ms", _I(1, LONG_MAX), "log.roll.ms"),
        TopicConfigDef("unclean.leader.election.enable", _parse_bool, "unclean.leader.election.enable"),
        TopicConfigDef("preallocate", _parse_bool, None, False),
        # Accepted and reported as Kafka 3.9 does; kwire has no use for them yet
        # (no tiered storage, no down-conversion, no replication throttles).
        TopicConfigDef("message.downconversion.enable", _parse_bool, None, True),
        TopicConfigDef("message.format.version", _parse_str, None, "3.0-IV1"),
        TopicConfigDef("local.retention.ms", _I(-2, LONG_MAX), None, -2),
        TopicConfigDef("local.retention.bytes", _I(-2, LONG_MAX), None, -2),
        TopicConfigDef("remote.storage.enable", _parse_bool, None, False),
        TopicConfigDef("leader.replication.throttled.replicas", _parse_str, None, ""),
        TopicConfigDef("follower.replication.throttled.replicas", _parse_str, None, ""),
        TopicConfigDef("compression.gzip.level", _I(-1, 9), None, -1),
        TopicConfigDef("compression.lz4.level", _I(1, 17), None, 9),
        TopicConfigDef("compression.zstd.level", _I(-131072, 22), None, 3),
        TopicConfigDef("segment.jitter.ms", _I(0, LONG_MAX), None, 0),
    ]
}


def _read_properties(path: Path) -> dict[str, str]:
    """Java .properties: key=value or key:value, # and ! comments, \\ continuations."""
    props: dict[str, str] = {}
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#!":
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            pending = line[:-1]
            continue
        match = re.match(r"^([^=:\s]+)\s*[=:\s]\s*(.*)$", line)
        if match:
            props[match[1]] = match[2]
        else:
            props[line] = ""
    return props


class BrokerConfig:
    """Validated broker configuration. Values are read with `config["log.dirs"]`."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._given: dict[str, str] = {}
        # listener.name.<listener>.<key> settings: (LISTENER, key) -> text.
        self._listener_values: dict[tuple[str, str], str] = {}
        self._values: dict[str, Any] = {name: d.default for name, d in BROKER_CONFIGS.items()}
        # Dynamic broker configs (kwire.dynamic_config), as text: the cluster-wide
        # defaults and this broker's own, which win over them and over the static ones.
        self._dynamic_default: dict[str, str] = {}
        self._dynamic_broker: dict[str, str] = {}
        for key, text in (values or {}).items():
            self.set(key, text)

    def set(self, key: str, text: str) -> None:
        definition = BROKER_CONFIGS.get(key)
        if definition is None and key.startswith(_LISTENER_PREFIX):
            listener, _, rest = key[len(_LISTENER_PREFIX) :].partition(".")
            if not listener or not rest:
                raise ConfigError(f"{key}: expected listener.name.<listener>.<config>")
            inner = BROKER_CONFIGS.get(rest)
            if inner is not None:
                try:
                    inner.parse(text)
                except (ValueError, TypeError) as e:
                    raise ConfigError(f"Invalid value {text!r} for configuration {key}: {e}") from None
            self._listener_values[(listener.upper(), rest)] = text
            self._given[key] = text
            return
        if definition is None:
            if key not in _KNOWN_UNUSED:
                log.warning("unknown config %r ignored", key)
            return
        try:
            self._values[key] = definition.parse(text)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"Invalid value {text!r} for configuration {key}: {e}") from None
        self._given[key] = text

    def _update_listener_value(self, key: str) -> bool:
        """listener.name.<l>.<key> from the layers (dynamic ones are the TLS stores,
        kwire.dynamic_config); True if it changed."""
        listener, _, rest = key[len(_LISTENER_PREFIX) :].partition(".")
        slot = (listener.upper(), rest)
        text = None
        for layer in (self._given, self._dynamic_default, self._dynamic_broker):
            text = layer.get(key, text)
        if self._listener_values.get(slot) == text:
            return False
        if text is None:
            self._listener_values.pop(slot, None)
        else:
            self._listener_values[slot] = text
        return True

    @classmethod
    def load(cls, path: str | Path | None, overrides: Iterable[str] = ()) -> BrokerConfig:
        values: dict[str, str] = {}
        if path is not None:
            try:
                values.update(_read_properties(Path(path)))
            except OSError as e:
                raise ConfigError(f"cannot read {path}: {e.strerror}") from None
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"--override expects key=value, got {item!r}")
            key, _, value = item.partition("=")
            values[key.strip()] = value
        return cls(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    @property
    def static_configs(self) -> Mapping[str, str]:
        """What server.properties and --override gave (STATIC_BROKER_CONFIG)."""
        return self._given

    @property
    def dynamic_default_configs(self) -> Mapping[str, str]:
        return self._dynamic_default

    @property
    def dynamic_broker_configs(self) -> Mapping[str, str]:
        return self._dynamic_broker

    def with_dynamic(self, default: Mapping[str, str], broker: Mapping[str, str]) -> BrokerConfig:
        """A copy with these dynamic layers (to validate a change before making it)."""
        other = copy.copy(self)
        other._values = dict(self._values)
        other._listener_values = dict(self._listener_values)
        other.update_dynamic(default, broker)
        return other

    def update_dynamic(self, default: Mapping[str, str], broker: Mapping[str, str]) -> set[str]:
        """Replace both dynamic layers (validated by kwire.dynamic_config; a value that
        no longer parses is skipped, as Kafka ignores invalid stored ones). Returns the
        keys whose effective value changed. Precedence, as Kafka's: this broker's dynamic
        value, the cluster-wide dynamic default, the static value, the default."""
        keys = set(self._dynamic_default) | set(self._dynamic_broker) | set(default) | set(broker)
        self._dynamic_default, self._dynamic_broker = dict(default), dict(broker)
        changed: set[str] = set()
        for key in keys:
            if key.startswith(_LISTENER_PREFIX):
                if self._update_listener_value(key):
                    changed.add(key)
                continue
            definition = BROKER_CONFIGS.get(key)
            if definition is None:
                continue  # a custom config: stored and described, read by nothing
            value = definition.default
            for layer in (self._given, self._dynamic_default, self._dynamic_broker):
                if key in layer:
                    try:
                        value = definition.parse(layer[key])
                    except (ValueError, TypeError):
                        log.error("ignoring invalid value %r of broker config %s", layer[key], key)
            if value != self._values[key]:
                self._values[key] = value
                changed.add(key)
        return changed

    def is_given(self, key: str) -> bool:
        return key in self._given

    def listener_value(self, listener: str, key: str) -> Any:
        """A setting as a listener sees it: listener.name.<listener>.<key> if given,
        else the broker-wide `key` (Kafka's listener prefix)."""
        text = self._listener_values.get((listener.upper(), key))
        if text is None:
            return self[key]
        return BROKER_CONFIGS[key].parse(text)

    def listener_text(self, listener: str, key: str) -> str | None:
        """A per-listener-only setting (a SASL mechanism's JAAS config), or None."""
        return self._listener_values.get((listener.upper(), key))

    def listener_protocol(self, listener: str) -> str:
        """The security protocol of a listener (listener.security.protocol.map)."""
        return self.security_protocol_map[listener.upper()]

    def sasl_mechanisms(self, listener: str) -> list[str]:
        """The SASL mechanisms a listener enables, upper-cased."""
        return [m.upper() for m in _parse_list(self.listener_value(listener, "sasl.enabled.mechanisms"))]

    @property
    def inter_broker_listener(self) -> str:
        """The listener brokers talk to each other on: inter.broker.listener.name, or
        the first listener whose protocol is security.inter.broker.protocol."""
        name = self["inter.broker.listener.name"]
        if name:
            return name.upper()
        protocol = self["security.inter.broker.protocol"]
        if self.is_given("security.inter.broker.protocol"):
            return protocol  # Kafka: the listener named after the protocol
        for listener in self.advertised_listeners:
            if self.security_protocol_map.get(listener.name) == protocol:
                return listener.name
        return self.listeners[0].name

    @property
    def super_users(self) -> frozenset[str]:
        """super.users: principals separated by semicolons (`User:admin;User:broker`)."""
        return frozenset(p.strip() for p in self["super.users"].split(";") if p.strip())

    # Kafka derives these from several keys; the first one given wins.
    @property
    def broker_id(self) -> int:
        node_id = self["node.id"]
        return node_id if self.is_given("node.id") and node_id >= 0 else self["broker.id"]

    @property
    def log_dirs(self) -> list[Path]:
        dirs = self["log.dirs"] or self["log.dir"]
        return [Path(d) for d in _parse_list(dirs)]

    @property
    def listeners(self) -> list[Listener]:
        return parse_listeners(self["listeners"])

    @property
    def advertised_listeners(self) -> list[Listener]:
        text = self["advertised.listeners"]
        return parse_listeners(text) if text else self.listeners

    @property
    def security_protocol_map(self) -> dict[str, str]:
        return parse_security_protocol_map(self["listener.security.protocol.map"])

    @property
    def queued_max_request_bytes(self) -> int | None:
        """The bound on large request frames being read, together; None: unbounded."""
        value = self["queued.max.request.bytes"]
        if value is None:
            return max(DEFAULT_QUEUED_MAX_REQUEST_BYTES, self["socket.request.max.bytes"])
        return value if value > 0 else None

    @property
    def max_connections_per_ip_overrides(self) -> dict[str, int]:
        return parse_ip_overrides(self["max.connections.per.ip.overrides"])

    @property
    def retention_ms(self) -> int:
        if self["log.retention.ms"] is not None:
            return self["log.retention.ms"]
        if self["log.retention.minutes"] is not None:
            minutes = self["log.retention.minutes"]
            return -1 if minutes < 0 else minutes * 60_000
        hours = self["log.retention.hours"]
        return -1 if hours < 0 else hours * 3_600_000

    @property
    def roll_ms(self) -> int:
        if self["log.roll.ms"] is not None:
            return self["log.roll.ms"]
        return self["log.roll.hours"] * 3_600_000

    @property
    def flush_ms(self) -> int:
        value = self["log.flush.interval.ms"]
        return LONG_MAX if value is None else value

    def topic_default(self, name: str) -> Any:
        """The broker-level default of a topic config, as a parsed value."""
        definition = TOPIC_CONFIGS[name]
        match definition.broker_key:
            case None:
                return definition.default
            case "log.retention.ms":
                return self.retention_ms
            case "log.roll.ms":
                return self.roll_ms
            case "log.flush.interval.ms":
                return self.flush_ms
            case key:
                return self[key]

    def topic_default_source_is_static(self, name: str) -> bool:
        """True when the broker default was set by the operator (STATIC_BROKER_CONFIG)."""
        key = TOPIC_CONFIGS[name].broker_key
        if key is None:
            return False
        if key == "log.retention.ms":
            return any(self.is_given(k) for k in ("log.retention.ms", "log.retention.minutes", "log.retention.hours"))
        if key == "log.roll.ms":
            return self.is_given("log.roll.ms") or self.is_given("log.roll.hours")
        return self.is_given(key)

    def validate(self) -> None:
        """Cross-key checks done once at start-up."""
        if not self.log_dirs:
            raise ConfigError("log.dirs is empty")
        self.listeners  # noqa: B018 - parse to validate
        if self["group.min.session.timeout.ms"] > self["group.max.session.timeout.ms"]:
            raise ConfigError("group.min.session.timeout.ms exceeds group.max.session.timeout.ms")
        queued = self["queued.max.request.bytes"]
        if queued is not None and 0 < queued < self["socket.request.max.bytes"]:
            raise ConfigError("queued.max.request.bytes must be larger or equal to socket.request.max.bytes")
        if self["max.connections.per.ip"] == 0 and not self.max_connections_per_ip_overrides:
            raise ConfigError(
                "max.connections.per.ip can be set to zero only if max.connections.per.ip.overrides property is set."
            )
        self._validate_security()

    def _validate_security(self) -> None:
        """Every listener maps to a protocol, and what its protocol needs is given and
        something kwire can honour: a setting it cannot is refused at start-up, never
        served unprotected in its place."""
        protocols = self.security_protocol_map
        for key in ("listeners", "advertised.listeners"):
            for listener in self.listeners if key == "listeners" else self.advertised_listeners:
                if listener.name not in protocols:
                    raise ConfigError(
                        f"{key}: no security protocol defined for listener {listener.name} "
                        f"in listener.security.protocol.map={self['listener.security.protocol.map']}"
                    )
        for listener in self.listeners:
            protocol = protocols[listener.name]
            if protocol in ("SSL", "SASL_SSL"):
                self._validate_tls(listener.name)
            if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
                self._validate_sasl(listener.name)
        if self.is_given("inter.broker.listener.name") and self.is_given("security.inter.broker.protocol"):
            raise ConfigError("Only one of inter.broker.listener.name and security.inter.broker.protocol should be set.")
        if self.is_given("inter.broker.listener.name") or self.is_given("security.inter.broker.protocol"):
            names = {listener.name for listener in self.advertised_listeners}
            if self.inter_broker_listener not in names:
                raise ConfigError(
                    f"inter-broker listener {self.inter_broker_listener} is not among advertised.listeners"
                )
        authorizer = self["authorizer.class.name"]
        if authorizer and authorizer not in KNOWN_AUTHORIZERS:
            raise ConfigError(
                f"authorizer.class.name={authorizer}: kwire's ACL authorizer stands in for "
                f"{', '.join(KNOWN_AUTHORIZERS)} only"
            )
        for principal in self.super_users:
            if ":" not in principal:
                raise ConfigError(f"super.users: {principal!r} is not principalType:name")

    def _validate_tls(self, listener: str) -> None:
        if not self.listener_value(listener, "ssl.keystore.location"):
            raise ConfigError(
                f"listener {listener} ({self.listener_protocol(listener)}) needs ssl.keystore.location: "
                "a PEM file with the private key and the certificate chain (and ssl.keystore.type=PEM)"
            )
        for kind in ("keystore", "truststore"):
            store_type = str(self.listener_value(listener, f"ssl.{kind}.type")).upper()
            if kind == "truststore" and not self.listener_value(listener, "ssl.truststore.location"):
                continue  # no client certificates are checked without one
            if store_type != "PEM":
                raise ConfigError(
                    f"listener {listener}: ssl.{kind}.type={store_type} is not supported: kwire "
                    f"reads PEM files only (ssl.{kind}.type=PEM); JKS and PKCS12 stores may come later"
                )
        if self.listener_value(listener, "ssl.client.auth") != "none" and not self.listener_value(
            listener, "ssl.truststore.location"
        ):
            raise ConfigError(f"listener {listener}: ssl.client.auth needs ssl.truststore.location")

    def _validate_sasl(self, listener: str) -> None:
        mechanisms = self.sasl_mechanisms(listener)
        if not mechanisms:
            raise ConfigError(f"listener {listener}: sasl.enabled.mechanisms is empty")
        for mechanism in mechanisms:
            if mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    f"listener {listener}: SASL mechanism {mechanism} is not supported "
                    f"(kwire has {', '.join(SASL_MECHANISMS)}); set sasl.enabled.mechanisms"
                )
        if "PLAIN" in mechanisms and self.listener_text(listener, "plain.sasl.jaas.config") is None:
            raise ConfigError(
                f"listener {listener} enables PLAIN but listener.name.{listener.lower()}.plain.sasl.jaas.config "
                "is not set (org.apache.kafka.common.security.plain.PlainLoginModule required user_<name>=...;)"
            )


def validate_topic_configs(configs: Mapping[str, str | None]) -> dict[str, Any]:
    """Parse topic config overrides; raises ConfigError naming the bad key."""
    parsed: dict[str, Any] = {}
    for key, text in configs.items():
        definition = TOPIC_CONFIGS.get(key)
        if definition is None:
            raise ConfigError(f"Unknown topic config name: {key}")
        if text is None:
            raise ConfigError(f"Null value not supported for topic configs: {key}")
        try:
            parsed[key] = definition.parse(text)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"Invalid value {text} for configuration {key}: {e}") from None
    return parsed


def format_config_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
