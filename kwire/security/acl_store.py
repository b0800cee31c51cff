"""ACLs of a single broker: a JSON file in the log dir, rewritten atomically per change.

The cluster keeps them in ZooKeeper instead (kwire.cluster.zk_security); both are
AclStores, which the authorizer indexes and CreateAcls/DeleteAcls change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from kwire.log.checkpoint import write_atomically
from kwire.security.acl import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
)

ACLS_FILE = "kwire-acls.json"
_VERSION = 1


def binding_to_json(binding: AclBinding) -> dict[str, str]:
    """Kafka's names, not codes, so the file reads as kafka-acls.sh prints."""
    return {
        "resourceType": binding.resource_type.name,
        "name": binding.resource_name,
        "patternType": binding.pattern_type.name,
        "principal": binding.principal,
        "host": binding.host,
        "operation": binding.operation.name,
        "permissionType": binding.permission_type.name,
    }


def binding_from_json(entry: dict[str, str]) -> AclBinding:
    return AclBinding(
        resource_type=ResourceType[entry["resourceType"]],
        resource_name=entry["name"],
        pattern_type=PatternType[entry["patternType"]],
        principal=entry["principal"],
        host=entry["host"],
        operation=AclOperation[entry["operation"]],
        permission_type=AclPermissionType[entry["permissionType"]],
    )


class LocalAclStore:
    """The AclStore of a broker without ZooKeeper."""

    def __init__(self, log_dir: Path) -> None:
        self.path = log_dir / ACLS_FILE
        self._bindings: frozenset[AclBinding] = frozenset()
        self._subscribers: list[Callable[[], None]] = []
        if self.path.exists():
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            self._bindings = frozenset(binding_from_json(e) for e in raw["acls"])

    def bindings(self) -> Iterable[AclBinding]:
        return self._bindings

    async def add(self, bindings: Iterable[AclBinding]) -> None:
        self._replace(self._bindings | set(bindings))

    async def remove(self, bindings: Iterable[AclBinding]) -> None:
        self._replace(self._bindings - set(bindings))

    def subscribe(self, changed: Callable[[], None]) -> None:
        self._subscribers.append(changed)

    def _replace(self, bindings: frozenset[AclBinding]) -> None:
        if bindings == self._bindings:
            return
        entries = sorted((binding_to_json(b) for b in bindings), key=lambda e: tuple(e.values()))
        # Written before it is used: an ACL answered as created survives a crash.
        write_atomically(self.path, json.dumps({"version": _VERSION, "acls": entries}, indent=1).encode())
        self._bindings = bindings
        for changed in self._subscribers:
            changed()
