"""DescribeConfigs (key 32): topic and broker configs, with value, source and synonyms.

A topic config's value is its override if it has one (source TOPIC_CONFIG), else
the broker default that stands in for it: a dynamic broker config
(DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG), the one the operator set
(STATIC_BROKER_CONFIG), or DEFAULT_CONFIG. Synonyms list, most specific first, every
place the value could come from: the override, the broker keys that were set
dynamically or statically, and their defaults. Broker configs the same way; the ""
broker resource lists the cluster-wide dynamic defaults only. Sensitive values
(passwords) are never given. CreateTopics (v5+) answers with the same entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.broker import Broker, KafkaError, topic_name_error
from kwire.config import BROKER_CONFIGS, INT_MAX, TOPIC_CONFIGS, BrokerConfig, format_config_value
from kwire.dynamic_config import is_sensitive, listener_config
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize, authorize_cluster

# ConfigResource.Type ids.
TOPIC = 2
BROKER = 4
BROKER_LOGGER = 8
RESOURCE_TYPE_NAMES = {
    0: "UNKNOWN",
    2: "TOPIC",
    4: "BROKER",
    8: "BROKER_LOGGER",
    16: "CLIENT_METRICS",
    32: "GROUP",
}

# DescribeConfigsResponse.ConfigSource ids.
TOPIC_CONFIG = 1
DYNAMIC_BROKER_CONFIG = 2
DYNAMIC_DEFAULT_BROKER_CONFIG = 3
STATIC_BROKER_CONFIG = 4
DEFAULT_CONFIG = 5

# DescribeConfigsResponse.ConfigType ids.
UNKNOWN_TYPE = 0
BOOLEAN, STRING, INT, SHORT, LONG, DOUBLE, LIST, CLASS, PASSWORD = range(1, 10)

# Kafka's ConfigDef types of the topic configs (LogConfig).
TOPIC_CONFIG_TYPES: dict[str, int] = {
    "cleanup.policy": LIST,
    "compression.type": STRING,
    "delete.retention.ms": LONG,
    "file.delete.delay.ms": LONG,
    "flush.messages": LONG,
    "flush.ms": LONG,
    "index.interval.bytes": INT,
    "max.message.bytes": INT,
    "message.timestamp.type": STRING,
    "message.timestamp.before.max.ms": LONG,
    "message.timestamp.after.max.ms": LONG,
    "min.cleanable.dirty.ratio": DOUBLE,
    "min.compaction.lag.ms": LONG,
    "max.compaction.lag.ms": LONG,
    "min.insync.replicas": INT,
    "retention.bytes": LONG,
    "retention.ms": LONG,
    "segment.bytes": INT,
    "segment.index.bytes": INT,
    "segment.ms": LONG,
    "unclean.leader.election.enable": BOOLEAN,
    "preallocate": BOOLEAN,
    "segment.jitter.ms": LONG,
}

# Kafka's types of the broker configs whose type the default does not tell.
_BROKER_CONFIG_TYPES: dict[str, int] = {
    "log.roll.ms": LONG,
    "log.retention.ms": LONG,
    "log.retention.bytes": LONG,
    "log.retention.check.interval.ms": LONG,
    "log.segment.delete.delay.ms": LONG,
    "log.flush.interval.messages": LONG,
    "log.flush.interval.ms": LONG,
    "log.flush.scheduler.interval.ms": LONG,
    "log.cleaner.delete.retention.ms": LONG,
    "log.cleaner.min.compaction.lag.ms": LONG,
    "log.cleaner.max.compaction.lag.ms": LONG,
    "log.cleaner.backoff.ms": LONG,
    "log.cleaner.dedupe.buffer.size": LONG,
    "log.cleaner.io.buffer.load.factor": DOUBLE,
    "log.cleaner.io.max.bytes.per.second": DOUBLE,
    "log.message.timestamp.before.max.ms": LONG,
    "log.message.timestamp.after.max.ms": LONG,
    "offsets.retention.check.interval.ms": LONG,
    "log.retention.minutes": INT,
    "log.retention.hours": INT,
    "log.cleanup.policy": LIST,
    "offsets.topic.replication.factor": SHORT,
    "ssl.keystore.password": PASSWORD,
    "ssl.key.password": PASSWORD,
    "ssl.truststore.password": PASSWORD,
}

# Broker configs that stand for one another, in Kafka's order of precedence.
_BROKER_SYNONYMS: dict[str, list[str]] = {
    "log.retention.ms": ["log.retention.ms", "log.retention.minutes", "log.retention.hours"],
    "log.roll.ms": ["log.roll.ms", "log.roll.hours"],
}


@dataclass(slots=True)
class ConfigEntry:
    name: str
    value: str | None
    source: int
    config_type: int
    read_only: bool = False
    is_sensitive: bool = False
    # (name, value, source), most specific first.
    synonyms: list[tuple[str, str | None, int]] = field(default_factory=list)
    documentation: str | None = None


def _text(value: Any) -> str | None:
    return None if value is None else format_config_value(value)


def broker_config_type(name: str) -> int:
    if name in _BROKER_CONFIG_TYPES:
        return _BROKER_CONFIG_TYPES[name]
    default = BROKER_CONFIGS[name].default
    if isinstance(default, bool):
        return BOOLEAN
    if isinstance(default, float):
        return DOUBLE
    if isinstance(default, int):
        return LONG if default > INT_MAX else INT
    return STRING


def _default_text(key: str) -> str | None:
    definition = BROKER_CONFIGS.get(key)
    return None if definition is None else _text(definition.default)


def _broker_synonyms(
    config: BrokerConfig, keys: Iterable[str], *, per_broker: bool = True
) -> list[tuple[str, str | None, int]]:
    """Where the broker keys' values come from, in Kafka's order (configSynonyms): this
    broker's dynamic configs, the cluster-wide dynamic defaults, the static configs,
    then the defaults. Without `per_broker` (the "" resource) this broker's own are left
    out. Sensitive values are never given."""
    keys = list(keys)
    layers: list[tuple[Mapping[str, str], int]] = []
    if per_broker:
        layers.append((config.dynamic_broker_configs, DYNAMIC_BROKER_CONFIG))
    layers.append((config.dynamic_default_configs, DYNAMIC_DEFAULT_BROKER_CONFIG))
    layers.append((config.static_configs, STATIC_BROKER_CONFIG))
    synonyms = [
        (key, None if is_sensitive(key) else layer[key], source)
        for layer, source in layers
        for key in keys
        if key in layer
    ]
    synonyms += [
        (key, None if is_sensitive(key) else _default_text(key), DEFAULT_CONFIG)
        for key in keys
        if key in BROKER_CONFIGS and BROKER_CONFIGS[key].default is not None
    ]
    return synonyms


def topic_config_entries(config: BrokerConfig, overrides: Mapping[str, Any]) -> list[ConfigEntry]:
    """Every topic config, effective value first, for a topic with these (parsed) overrides."""
    entries = []
    for name in sorted(TOPIC_CONFIGS):
        broker_key = TOPIC_CONFIGS[name].broker_key
        keys = [] if broker_key is None else _BROKER_SYNONYMS.get(broker_key, [broker_key])
        synonyms = _broker_synonyms(config, keys)
        if name in overrides:
            value = _text(overrides[name])
            synonyms.insert(0, (name, value, TOPIC_CONFIG))
        else:
            value = _text(config.topic_default(name))
        # As Kafka: the source is the first synonym's (a dynamic broker default included).
        source = synonyms[0][2] if synonyms else DEFAULT_CONFIG
        entries.append(
            ConfigEntry(
                name, value, source, TOPIC_CONFIG_TYPES.get(name, STRING), synonyms=synonyms
            )
        )
    return entries


def broker_config_entries(config: BrokerConfig, *, per_broker: bool = True) -> list[ConfigEntry]:
    """This broker's configs (per_broker), or only the cluster-wide dynamic defaults
    (the "" resource), as Kafka's createBrokerConfigEntry. The dynamic ones are not
    read-only; custom dynamic configs (names kwire does not know) are listed too, with
    no value, as Kafka lists a config whose type it does not know."""
    if per_broker:
        names = set(BROKER_CONFIGS) | set(config.dynamic_default_configs)
        names |= set(config.dynamic_broker_configs)
    else:
        names = set(config.dynamic_default_configs)
    entries = []
    for name in sorted(names):
        definition = BROKER_CONFIGS.get(name)
        group = next((keys for keys in _BROKER_SYNONYMS.values() if name in keys), [name])
        listener = listener_config(name)
        if listener is not None and listener[1] in BROKER_CONFIGS:
            # listener.name.<l>.<key>: the base key stands behind it (Kafka's synonyms).
            definition = BROKER_CONFIGS[listener[1]]
            group = [name, listener[1]]
        synonyms = _broker_synonyms(config, group, per_broker=per_broker)
        # As Kafka: only the synonyms from this key on (log.retention.hours does not
        # list log.retention.ms), and the source is the first of them.
        while synonyms and synonyms[0][0] != name:
            synonyms.pop(0)
        if not per_broker:
            value = config.dynamic_default_configs[name]
        elif listener is not None:
            value = config.listener_text(*listener)
        else:
            value = _text(config[name]) if definition is not None else None
        sensitive = is_sensitive(name)
        entries.append(
            ConfigEntry(
                name,
                None if sensitive else value,
                synonyms[0][2] if synonyms else DEFAULT_CONFIG,
                broker_config_type(definition.name) if definition is not None else UNKNOWN_TYPE,
                # As Kafka: a listener-prefixed name is not among its dynamic configs.
                read_only=listener is not None
                or (definition.read_only if definition is not None else False),
                is_sensitive=sensitive,
                synonyms=synonyms,
                documentation=(definition.doc or None) if definition is not None else None,
            )
        )
    return entries


def check_broker_resource(broker: Broker, name: str) -> None:
    """A described broker resource names this broker, or "" for the cluster-wide defaults."""
    if name == "":
        return
    try:
        broker_id = int(name)
    except ValueError:
        raise KafkaError(
            ErrorCode.invalid_request, f"Broker id must be an integer, but it is: {name}"
        ) from None
    if broker_id != broker.broker_id:
        raise KafkaError(
            ErrorCode.invalid_request,
            f"Unexpected broker id, expected {broker.broker_id} or empty string, but received {name}",
        )


def describe_resource(broker: Broker, resource_type: int, name: str) -> list[ConfigEntry]:
    if resource_type == TOPIC:
        message = topic_name_error(name)
        if message is not None:
            raise KafkaError(ErrorCode.invalid_topic_exception, message)
        overrides = broker.topic_overrides(name)
        if overrides is None:
            # Kafka answers this one without a message.
            raise KafkaError(ErrorCode.unknown_topic_or_partition)
        return topic_config_entries(broker.config, overrides)
    if resource_type == BROKER:
        check_broker_resource(broker, name)
        # "" asks for the cluster-wide dynamic defaults only.
        return broker_config_entries(broker.config, per_broker=bool(name))
    if resource_type == BROKER_LOGGER:
        raise KafkaError(
            ErrorCode.invalid_request, "BROKER_LOGGER resources are not supported by this broker"
        )
    raise KafkaError(
        ErrorCode.invalid_request,
        f"Unsupported resource type: {RESOURCE_TYPE_NAMES.get(resource_type, resource_type)}",
    )


def config_resource_refused(ctx: RequestContext, operation: AclOperation, resource_type: int, name: str) -> KafkaError | None:
    """Why a config resource may not be described or altered: `operation` (DESCRIBE_CONFIGS,
    ALTER_CONFIGS) on the topic, or for a broker (or its loggers) on the cluster."""
    if resource_type == TOPIC and not authorize(ctx, operation, ResourceType.TOPIC, name):
        return KafkaError(ErrorCode.topic_authorization_failed, "Topic authorization failed.")
    if resource_type in (BROKER, BROKER_LOGGER) and not authorize_cluster(ctx, operation):
        return KafkaError(ErrorCode.cluster_authorization_failed, "Cluster authorization failed.")
    return None


@api(32)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(32, ctx.api_version)
    include_synonyms = getattr(request, "include_synonyms", False)
    include_documentation = getattr(request, "include_documentation", False)
    results = []
    for resource in request.resources:
        error, message = ErrorCode.none, None
        try:
            refused = config_resource_refused(
                ctx, AclOperation.DESCRIBE_CONFIGS, resource.resource_type, resource.resource_name
            )
            if refused is not None:
                raise refused
            entries = describe_resource(ctx.broker, resource.resource_type, resource.resource_name)
        except KafkaError as e:
            entries, error, message = [], e.error_code, e.message
        if resource.configuration_keys:
            wanted = set(resource.configuration_keys)
            entries = [entry for entry in entries if entry.name in wanted]
        configs = tuple(
            make(
                module.DescribeConfigsResourceResult,
                name=entry.name,
                value=entry.value,
                read_only=entry.read_only,
                config_source=entry.source,
                is_default=entry.source == DEFAULT_CONFIG,
                is_sensitive=entry.is_sensitive,
                synonyms=tuple(
                    make(module.DescribeConfigsSynonym, name=name, value=value, source=source)
                    for name, value, source in entry.synonyms
                )
                if include_synonyms
                else (),
                config_type=entry.config_type,
                documentation=entry.documentation if include_documentation else None,
            )
            for entry in entries
        )
        results.append(
            make(
                module.DescribeConfigsResult,
                error_code=error,
                error_message=message,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name,
                configs=configs,
            )
        )
    return make(module.DescribeConfigsResponse, throttle_time=NO_THROTTLE, results=tuple(results))
