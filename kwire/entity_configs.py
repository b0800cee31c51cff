"""Configs of client entities: users and client ids (SCRAM credentials, quotas).

Kafka keeps them as ZooKeeper entity configs, one znode per entity path:
`users/<user>`, `clients/<client-id>`, `users/<user>/clients/<client-id>`, with
`<default>` for the defaults (`users/<default>` ...). Names are kept here unsanitized;
the ZooKeeper store encodes them as Kafka does. On one broker they live in a file of
the log dir (LocalEntityConfigs); in a cluster in ZooKeeper
(kwire.cluster.zk_security.ZkEntityConfigs), and every broker sees every change.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Protocol

from kwire.log.checkpoint import write_atomically

log = logging.getLogger(__name__)

DEFAULT_ENTITY = "<default>"
ENTITY_CONFIGS_FILE = "kwire-entity-configs.json"


def entity_path(user: str | None = None, client_id: str | None = None) -> str:
    """The entity path of a user, a client id, or both (pass DEFAULT_ENTITY for defaults)."""
    if user is not None and client_id is not None:
        return f"users/{user}/clients/{client_id}"
    if user is not None:
        return f"users/{user}"
    if client_id is not None:
        return f"clients/{client_id}"
    raise ValueError("an entity has a user, a client id, or both")


def parse_entity_path(path: str) -> tuple[str | None, str | None]:
    """(user, client id) of an entity path; either may be None."""
    parts = path.split("/")
    if len(parts) == 2 and parts[0] == "users":
        return parts[1], None
    if len(parts) == 2 and parts[0] == "clients":
        return None, parts[1]
    if len(parts) == 4 and parts[0] == "users" and parts[2] == "clients":
        return parts[1], parts[3]
    raise ValueError(f"not an entity path: {path!r}")


class EntityConfigStore(Protocol):
    def get(self, entity: str) -> Mapping[str, str]: ...

    def items(self) -> Iterable[tuple[str, Mapping[str, str]]]: ...

    async def alter(self, changes: Mapping[str, Mapping[str, str | None]]) -> None:
        """Set (a string) or remove (None) keys of entities, all or nothing; an entity
        left with no key is removed."""
        ...

    def subscribe(self, changed: Callable[[str], None]) -> None:
        """Call `changed(entity)` after an entity's configs changed."""
        ...


class LocalEntityConfigs:
    """Entity configs in a JSON file of the log dir, rewritten atomically per change."""

    def __init__(self, log_dir: Path) -> None:
        self.path = log_dir / ENTITY_CONFIGS_FILE
        self._entities: dict[str, dict[str, str]] = {}
        self._subscribers: list[Callable[[str], None]] = []
        if self.path.exists():
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            self._entities = {str(k): {str(a): str(b) for a, b in v.items()} for k, v in raw.items()}

    def get(self, entity: str) -> Mapping[str, str]:
        return self._entities.get(entity, {})

    def items(self) -> Iterable[tuple[str, Mapping[str, str]]]:
        return list(self._entities.items())

    async def alter(self, changes: Mapping[str, Mapping[str, str | None]]) -> None:
        entities = {k: dict(v) for k, v in self._entities.items()}
        for entity, keys in changes.items():
            parse_entity_path(entity)  # refuse anything else before changing anything
            configs = entities.setdefault(entity, {})
            for key, value in keys.items():
                if value is None:
                    configs.pop(key, None)
                else:
                    configs[key] = value
            if not configs:
                del entities[entity]
        write_atomically(self.path, json.dumps(entities, indent=1, sort_keys=True).encode())
        self._entities = entities
        for entity in changes:
            for changed in self._subscribers:
                changed(entity)

    def subscribe(self, changed: Callable[[str], None]) -> None:
        self._subscribers.append(changed)
