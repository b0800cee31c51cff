"""Dynamic broker configs (Kafka's KIP-226): broker configs changed at run time.

AlterConfigs and IncrementalAlterConfigs on a BROKER resource change either this
broker's own dynamic configs (resource name: its id) or the cluster-wide dynamic
defaults (resource name ""). Each broker's value of a config is, as Kafka's: its own
dynamic value, else the dynamic default, else the static one (server.properties,
`--override`), else the default (BrokerConfig.update_dynamic).

Only the keys Kafka updates at run time may be set (kwire.config.DYNAMIC_BROKER_CONFIGS,
and per broker a TLS listener's PEM stores, `listener.name.<l>.ssl.keystore.location`
...); anything else is refused with Kafka's messages. Names kwire does not know are kept, as
Kafka keeps custom configs, and read by nothing.

The first half of the module is sans-IO (validation, incremental operations, which
parts of the broker a change concerns); the second is the store of one broker
(a JSON file in its first log dir). In a cluster the store is ZooKeeper's
(kwire.cluster.zk_broker_configs): /config/brokers/<id> and /config/brokers/<default>.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol

from kwire.config import (
    BROKER_CONFIGS,
    DYNAMIC_BROKER_CONFIGS,
    TOPIC_CONFIGS,
    BrokerConfig,
    ConfigError,
)
from kwire.entity_configs import DEFAULT_ENTITY
from kwire.log.checkpoint import write_atomically

log = logging.getLogger(__name__)

DYNAMIC_CONFIGS_FILE = "kwire-dynamic-broker-configs.json"

# SslConfigs.RECONFIGURABLE_CONFIGS: dynamic per listener only (listener.name.<l>.<key>).
SSL_RECONFIGURABLE_CONFIGS = frozenset(
    {
        "ssl.keystore.type",
        "ssl.keystore.location",
        "ssl.keystore.password",
        "ssl.key.password",
        "ssl.truststore.type",
        "ssl.truststore.location",
        "ssl.truststore.password",
        "ssl.keystore.certificate.chain",
        "ssl.keystore.key",
        "ssl.truststore.certificates",
    }
)
# Of those, what a kwire listener reloads at run time: its PEM stores (the inline PEM
# keys are not read by kwire; passwords would need Kafka's password.encoder.secret).
LISTENER_TLS_STORE_CONFIGS = frozenset(
    {"ssl.keystore.type", "ssl.keystore.location", "ssl.truststore.type", "ssl.truststore.location"}
)
# Listener configs Kafka allows at the cluster level too (ClusterLevelListenerConfigs).
CLUSTER_LEVEL_LISTENER_CONFIGS = frozenset(
    {"max.connections", "max.connection.creation.rate", "num.network.threads"}
)
LISTENER_PREFIX = "listener.name."

# What a change concerns (BrokerConfig.update_dynamic's changed keys).
LOG_CONFIG_KEYS = frozenset(
    d.broker_key for d in TOPIC_CONFIGS.values() if d.broker_key is not None
)
CLEANER_KEYS = frozenset(
    {
        "log.cleaner.threads",
        "log.cleaner.backoff.ms",
        "log.cleaner.dedupe.buffer.size",
        "log.cleaner.io.buffer.load.factor",
        "log.cleaner.io.max.bytes.per.second",
    }
)
CONNECTION_KEYS = frozenset(
    {"max.connections", "max.connections.per.ip", "max.connections.per.ip.overrides"}
)
# DynamicThreadPool / SocketServer: a count changes by at most half or double at once.
THREAD_COUNT_KEYS = ("num.io.threads", "num.network.threads")

# Kafka's ConfigDef type LIST among the broker configs kwire has (APPEND, SUBTRACT).
LIST_CONFIGS = frozenset({"log.cleanup.policy"})

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


class DynamicConfigError(ValueError):
    """A dynamic change Kafka refuses, with its message. Kafka 3.9 answers these with
    INVALID_REQUEST (ConfigAdminManager: KAFKA-13609 keeps it for compatibility)."""


class InvalidConfigError(ValueError):
    """An incremental operation Kafka refuses with INVALID_CONFIG."""


def _kafka_set(names: Iterable[str]) -> str:
    # Scala's Set.toString, sorted so that a message is the same every time.
    return f"Set({', '.join(sorted(names))})"


def is_sensitive(name: str) -> bool:
    """Values DescribeConfigs never returns: passwords (Kafka's PASSWORD type), JAAS
    configs, and names whose type is unknown (Kafka: sensitive to be safe)."""
    parts = listener_config(name)
    base = parts[1] if parts is not None else name
    if base.endswith(".password") or base.endswith("sasl.jaas.config"):
        return True
    return base not in BROKER_CONFIGS


def listener_config(name: str) -> tuple[str, str] | None:
    """(LISTENER, base key) of `listener.name.<listener>.<key>`, else None."""
    if not name.startswith(LISTENER_PREFIX):
        return None
    listener, _, base = name[len(LISTENER_PREFIX) :].partition(".")
    return (listener.upper(), base) if listener and base else None


def tls_store_listener(name: str) -> str | None:
    """The listener whose TLS stores this key sets (listener.name.<l>.ssl.keystore.location
    ...), or None."""
    parts = listener_config(name)
    return parts[0] if parts is not None and parts[1] in LISTENER_TLS_STORE_CONFIGS else None


def entity_of(resource_name: str) -> str:
    """The stored entity of a BROKER resource: "<default>" for "", else the id."""
    return DEFAULT_ENTITY if resource_name == "" else str(int(resource_name))


def incremental(
    current: Mapping[str, str], operations: Iterable[tuple[str, int, str | None]]
) -> dict[str, str]:
    """Kafka's prepareIncrementalConfigs on a broker's stored dynamic configs: SET,
    DELETE, and APPEND / SUBTRACT on list configs, from the stored value or else the
    default (not the static value, as Kafka)."""
    props = dict(current)
    for name, op, value in operations:
        if op == SET:
            props[name] = value or ""
        elif op == DELETE:
            props.pop(name, None)
        else:
            if name not in BROKER_CONFIGS:
                raise InvalidConfigError(f"Unknown config name: {name}")
            verb = "append" if op == APPEND else "subtract"
            if name not in LIST_CONFIGS:
                raise InvalidConfigError(
                    f"Config value {verb} is not allowed for config key: {name}"
                )
            old = props.get(name, str(BROKER_CONFIGS[name].default or ""))
            items = [item for item in old.split(",") if item]
            given = (value or "").split(",")
            if op == APPEND:
                items += [item for item in given if item not in items]
            else:
                items = [item for item in items if item not in given]
            props[name] = ",".join(items)
    return props


def validate(config: BrokerConfig, props: Mapping[str, str], per_broker: bool) -> BrokerConfig:
    """Kafka's DynamicBrokerConfig.validate: `props`, the complete new dynamic configs
    of this broker (per_broker) or of the cluster-wide default, against the broker's
    config. Returns the config as it would be; DynamicConfigError if refused."""
    tls_listeners = {
        listener.name
        for listener in config.listeners
        if config.listener_protocol(listener.name) in ("SSL", "SASL_SSL")
    }
    non_dynamic = [
        k
        for k in props
        if k in BROKER_CONFIGS
        and k not in DYNAMIC_BROKER_CONFIGS
        and k not in SSL_RECONFIGURABLE_CONFIGS
    ]
    # Of the listener configs, kwire reloads a TLS listener's stores and nothing else.
    listener_keys = []
    for key in props:
        parts = listener_config(key)
        if (
            parts is not None
            and parts[0] in tls_listeners
            and parts[1] in SSL_RECONFIGURABLE_CONFIGS
        ):
            listener_keys.append(key)
        elif key.startswith(LISTENER_PREFIX):
            non_dynamic.append(key)
    if non_dynamic:
        raise DynamicConfigError(
            f"Cannot update these configs dynamically: {_kafka_set(non_dynamic)}"
        )
    security = [k for k in props if k in SSL_RECONFIGURABLE_CONFIGS]
    if security:
        raise DynamicConfigError(
            "These security configs can be dynamically updated only per-listener using the "
            f"listener prefix: {_kafka_set(security)}"
        )
    for key, text in props.items():
        parts = listener_config(key)
        definition = BROKER_CONFIGS.get(parts[1] if parts is not None else key)
        if definition is None:
            continue  # custom configs are kept, as Kafka does
        try:
            definition.parse(text)
        except (ValueError, TypeError) as e:
            raise DynamicConfigError(f"Invalid value {text} for configuration {key}: {e}") from None
    if not per_broker and listener_keys:
        raise DynamicConfigError(
            "Cannot update these configs at default cluster level, broker id must be "
            f"specified: {_kafka_set(listener_keys)}"
        )
    passwords = [k for k in listener_keys if k.endswith(".password")]
    if passwords:
        # Kafka stores dynamic passwords encrypted with password.encoder.secret.
        raise DynamicConfigError("Password encoder secret not configured")
    unsupported = [k for k in listener_keys if tls_store_listener(k) is None]
    if unsupported:
        raise DynamicConfigError(
            f"Cannot update these configs dynamically: {_kafka_set(unsupported)} "
            "(kwire reloads a listener's PEM stores: ssl.keystore.location, ssl.truststore.location "
            "and their types)"
        )
    if per_broker:
        new = config.with_dynamic(config.dynamic_default_configs, props)
    else:
        new = config.with_dynamic(props, config.dynamic_broker_configs)
    _validate_reconfiguration(config, new)
    for listener in sorted(
        {k[len(LISTENER_PREFIX) :].partition(".")[0].upper() for k in listener_keys}
    ):
        check_tls_stores(new, listener)
    return new


def check_tls_stores(config: BrokerConfig, listener: str) -> None:
    """Kafka's SslFactory.validateReconfiguration: the listener's new stores load (the
    files are read: a keystore that does not will never be served)."""
    from kwire.security.tls import server_ssl_context

    try:
        server_ssl_context(config, listener)
    except ConfigError as e:
        raise DynamicConfigError(
            f"Validation of dynamic config update of SSL keystore/truststore failed: {e}"
        ) from None


def _validate_reconfiguration(old: BrokerConfig, new: BrokerConfig) -> None:
    """What Kafka's reconfigurables check of the merged config."""
    for key in THREAD_COUNT_KEYS:
        _check_count(
            new[key],
            old[key],
            f"Dynamic thread count update validation failed for {key}={new[key]}",
            "value should be at least 1",
            "value should be at least half the current value",
            "value should not be greater than double the current value",
        )
    threads, current = new["log.cleaner.threads"], old["log.cleaner.threads"]
    if threads != current:
        if threads < 1:
            raise DynamicConfigError("Log cleaner threads should be at least 1")
        if threads < current // 2:
            raise DynamicConfigError(
                f"Log cleaner threads cannot be reduced to less than half the current value {current}"
            )
        if threads > current * 2:
            raise DynamicConfigError(
                f"Log cleaner threads cannot be increased to more than double the current value {current}"
            )
    if new["max.connections"] <= 0:
        raise DynamicConfigError(f"Invalid max.connections {new['max.connections']}")
    try:
        new.validate()
    except ConfigError as e:
        raise DynamicConfigError(str(e)) from None


def _check_count(new: int, old: int, what: str, low: str, half: str, double: str) -> None:
    if new == old:
        return
    if new <= 0:
        raise DynamicConfigError(f"{what}, {low}")
    if new < old // 2:
        raise DynamicConfigError(f"{what}, {half} {old}")
    if new > old * 2:
        raise DynamicConfigError(f"{what}, {double} {old}")


def stored_configs_to_apply(props: Mapping[str, str], per_broker: bool) -> dict[str, str]:
    """Kafka's fromPersistentProps: what a broker applies of stored dynamic configs;
    keys that cannot be dynamic (written by hand, or by another version) are dropped
    with an error line, as Kafka does."""
    kept = {}
    for key, value in props.items():
        if key in BROKER_CONFIGS and key not in DYNAMIC_BROKER_CONFIGS:
            log.error("Non-dynamic configs configured in ZooKeeper will be ignored: Set(%s)", key)
        elif key in SSL_RECONFIGURABLE_CONFIGS:
            log.error(
                "Security configs can be dynamically updated only using listener prefix, "
                "base configs will be ignored: Set(%s)",
                key,
            )
        elif key.startswith(LISTENER_PREFIX) and not per_broker:
            log.error(
                "Per-broker configs defined at default cluster level will be ignored: Set(%s)", key
            )
        elif key.startswith(LISTENER_PREFIX) and tls_store_listener(key) is None:
            log.error("Listener configs kwire cannot reload will be ignored: Set(%s)", key)
        else:
            kept[key] = value
    return kept


def layers_of(store: BrokerConfigStore, broker_id: int) -> tuple[dict[str, str], dict[str, str]]:
    """(cluster-wide default, this broker's) dynamic configs to apply, from a store."""
    return (
        stored_configs_to_apply(store.get(DEFAULT_ENTITY), per_broker=False),
        stored_configs_to_apply(store.get(str(broker_id)), per_broker=True),
    )


# ---- stores ---------------------------------------------------------------------------


class BrokerConfigStore(Protocol):
    """Dynamic broker configs by entity: a broker id ("0") or DEFAULT_ENTITY."""

    def get(self, entity: str) -> Mapping[str, str]: ...

    async def set(self, entity: str, configs: Mapping[str, str]) -> None:
        """Replace the entity's dynamic configs (all of them), durably."""
        ...

    def subscribe(self, changed: Callable[[str], None]) -> None:
        """Call `changed(entity)` after an entity's configs changed."""
        ...


class LocalBrokerConfigs:
    """One broker's dynamic configs: a JSON file in its first log dir, rewritten
    atomically per change ({"version": 1, "brokers": {"<default>": {...}, "0": {...}}})."""

    def __init__(self, log_dir: Path) -> None:
        self.path = Path(log_dir) / DYNAMIC_CONFIGS_FILE
        self._entities: dict[str, dict[str, str]] = {}
        self._subscribers: list[Callable[[str], None]] = []
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                self._entities = {
                    str(entity): {str(k): str(v) for k, v in configs.items()}
                    for entity, configs in raw.get("brokers", {}).items()
                }
            except (ValueError, AttributeError) as e:
                log.error("ignoring unreadable dynamic broker configs in %s: %s", self.path, e)

    def get(self, entity: str) -> Mapping[str, str]:
        return self._entities.get(entity, {})

    async def set(self, entity: str, configs: Mapping[str, str]) -> None:
        entities = {k: dict(v) for k, v in self._entities.items()}
        if configs:
            entities[entity] = dict(configs)
        else:
            entities.pop(entity, None)
        body = json.dumps({"version": 1, "brokers": entities}, indent=1, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, body.encode())
        self._entities = entities
        for changed in list(self._subscribers):
            changed(entity)

    def subscribe(self, changed: Callable[[str], None]) -> None:
        self._subscribers.append(changed)
