"""Dynamic broker configs in ZooKeeper, in Kafka's own znodes (a BrokerConfigStore).

The cluster-wide defaults live in `/config/brokers/<default>`, a broker's own in
`/config/brokers/<id>`, each `{"version":1,"config":{...}}` as Kafka's
AdminZkClient.changeBrokerConfig writes them, followed by the change notification
Kafka's brokers and tools read (`/config/changes/config_change_<n>`, entity_path
`brokers/<default>` or `brokers/<id>`). Each broker watches the two znodes that
concern it (its view changes within milliseconds of a write anywhere) and applies
them (kwire.broker.Broker.apply_dynamic_configs); as for the entity configs, the
notifications are for Kafka's tools and are purged after 15 minutes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kwire.cluster import zk_layout as layout
from kwire.cluster.zk import ZkSession, ZnodeStat
from kwire.cluster.zk_security import (
    ZkOp,
    ZnodeState,
    _WatchedZnodes,
    decode_entity_configs,
    encode_entity_configs,
    read_state,
)
from kwire.entity_configs import DEFAULT_ENTITY

log = logging.getLogger(__name__)

CONFIG_TYPE_BROKER = "brokers"
BROKER_CONFIGS_PATH = layout.config_entity_type_path(CONFIG_TYPE_BROKER)


def broker_config_path(entity: str) -> str:
    """`/config/brokers/<default>` or `/config/brokers/<id>`."""
    return layout.config_entity_path(CONFIG_TYPE_BROKER, entity)


def plan_broker_config_write(
    state: ZnodeState, entity: str, configs: Mapping[str, str]
) -> tuple[ZkOp, ...]:
    """The znode set (at the version read) or created, and its change notification,
    as one multi: Kafka keeps the znode even when no config is left."""
    path = broker_config_path(entity)
    data = encode_entity_configs(configs)
    write = ZkOp("set", path, data, state.version) if state.exists else ZkOp("create", path, data)
    notification = ZkOp(
        "create_sequential",
        layout.config_change_path(),
        layout.encode_config_change_notification(f"{CONFIG_TYPE_BROKER}/{entity}"),
    )
    return write, notification


class ZkBrokerConfigs(_WatchedZnodes):
    """This broker's and the cluster-wide dynamic broker configs, from ZooKeeper."""

    _notification_dirs = ((layout.CONFIG_CHANGES_PATH, layout.CONFIG_CHANGE_SEQUENCE_PREFIX),)

    def __init__(self, session: ZkSession, broker_id: int) -> None:
        super().__init__(session)
        self._entities_by_path = {
            broker_config_path(entity): entity for entity in (DEFAULT_ENTITY, str(broker_id))
        }
        self._configs: dict[str, dict[str, str]] = {}
        self._subscribers: list[Callable[[str], None]] = []

    # ---- BrokerConfigStore --------------------------------------------------------------

    def get(self, entity: str) -> Mapping[str, str]:
        return self._configs.get(entity, {})

    def subscribe(self, changed: Callable[[str], None]) -> None:
        self._subscribers.append(changed)

    async def set(self, entity: str, configs: Mapping[str, str]) -> None:
        """Write the entity's configs and their notification in one conditional multi.
        ZkTimeout or ZookeeperError if ZooKeeper cannot be written."""
        path = broker_config_path(entity)
        if path not in self._entities_by_path:
            raise ValueError(f"not this broker's dynamic configs: {entity!r}")
        configs = dict(configs)

        async def plan() -> tuple[tuple[ZkOp, ...], Any]:
            return plan_broker_config_write(
                await read_state(self.session, path), entity, configs
            ), None

        await self._write(plan)
        # Read-your-writes: what was written is the view now (reads begun before are dropped).
        self._bump(path)
        self._set(entity, configs)

    # ---- the view ---------------------------------------------------------------------------

    def _kind(self, path: str) -> str | None:
        return "data" if path in self._entities_by_path else None

    def _permanent_paths(self) -> Iterable[str]:
        return BROKER_CONFIGS_PATH, layout.CONFIG_CHANGES_PATH

    def _all_paths(self) -> Iterable[str]:
        return list(self._entities_by_path)

    def _apply_children(self, path: str, children: list[str]) -> None:
        raise AssertionError("no children are watched")

    def _apply_data(self, path: str, data: bytes | None, stat: ZnodeStat | None) -> None:
        self._set(self._entities_by_path[path], decode_entity_configs(data) if data else {})

    def _set(self, entity: str, configs: Mapping[str, str]) -> None:
        if self._configs.get(entity, {}) == configs:
            return
        self._configs[entity] = dict(configs)
        for changed in list(self._subscribers):
            try:
                changed(entity)
            except Exception:
                log.exception("applying dynamic broker configs of %s failed", entity)
