"""The cluster's security state in ZooKeeper, in Kafka's own znodes: entity configs of
users and client ids (SCRAM credentials, quotas) and ACLs.

Entity configs live in `/config/users/<user>`, `/config/clients/<client-id>` and
`/config/users/<user>/clients/<client-id>` (names sanitized as Kafka's Sanitizer), ACLs
in `/kafka-acl/<ResourceType>/<name>` (literal) and
`/kafka-acl-extended/prefixed/<ResourceType>/<name>` (prefixed), each write followed by
the change notification Kafka's brokers and tools read (`/config/changes`,
`/kafka-acl-changes`, `/kafka-acl-extended-changes`), as kafka.zk.AdminZkClient and
AclAuthorizer write them.

Every broker keeps the whole state in memory, refreshed by watches on the znodes
themselves (a change anywhere is seen everywhere within milliseconds); notifications
are written for Kafka's tools and purged after 15 minutes, as Kafka's listener does.
Writes are conditional on the versions read, one ZooKeeper multi-op per call, retried
on a conflict.

The first half of the module is sans-IO (paths, sanitizing, JSON, the plan of a write),
raising only ZkDataError for znode data it cannot read; the second half is the two
stores, driven by kwire.cluster.node.ClusterNode (`run`, `on_watch`, `resync`).
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_plus

import trio

from kwire.clock import now_ms
from kwire.cluster import zk_layout as layout
from kwire.cluster.zk import (
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    WatchEvent,
    ZkSession,
    ZkTimeout,
    ZnodeStat,
    ZookeeperError,
)
from kwire.entity_configs import DEFAULT_ENTITY, entity_path, parse_entity_path
from kwire.security.acl import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
)

log = logging.getLogger(__name__)

ZkDataError = layout.ZkDataError

# ---- paths -------------------------------------------------------------------------------

CONFIG_TYPE_USER = "users"
CONFIG_TYPE_CLIENT = "clients"
CONFIG_USERS_PATH = f"{layout.CONFIG_PATH}/{CONFIG_TYPE_USER}"
CONFIG_CLIENTS_PATH = f"{layout.CONFIG_PATH}/{CONFIG_TYPE_CLIENT}"

ACL_PATH = "/kafka-acl"  # LiteralAclStore
EXTENDED_ACL_PATH = "/kafka-acl-extended"
PREFIXED_ACL_PATH = f"{EXTENDED_ACL_PATH}/prefixed"  # ExtendedAclStore(PREFIXED)
ACL_CHANGES_PATH = "/kafka-acl-changes"  # LiteralAclChangeStore
EXTENDED_ACL_CHANGES_PATH = "/kafka-acl-extended-changes"  # ExtendedAclChangeStore
ACL_CHANGE_SEQUENCE_PREFIX = "acl_changes_"
ACL_VERSION = 1
EXTENDED_ACL_CHANGE_VERSION = 1

# ZkNodeChangeNotificationListener's changeExpirationMs: older notifications are purged.
CHANGE_EXPIRATION_MS = 15 * 60 * 1000
# How often one broker looks for notifications to purge (after its own writes).
PURGE_INTERVAL_S = 60.0

# AclEntry.RESOURCE_TYPES: the concrete types, each with its znode under both stores.
RESOURCE_TYPES: tuple[ResourceType, ...] = tuple(
    t for t in ResourceType if t not in (ResourceType.UNKNOWN, ResourceType.ANY)
)
STORED_PATTERN_TYPES = (PatternType.LITERAL, PatternType.PREFIXED)


# ---- Kafka's Sanitizer ---------------------------------------------------------------------

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def sanitize(name: str) -> str:
    """Kafka's Sanitizer.sanitize: Java's URLEncoder (letters, digits and `.-_*` kept,
    everything else %XX of its UTF-8 bytes), then `*` as %2A and a space as %20."""
    try:
        # quote() keeps `~` (an unreserved URI character); URLEncoder does not.
        return quote(name, safe="").replace("~", "%7E")
    except UnicodeEncodeError:
        raise ValueError(f"{name!r} is not valid Unicode text") from None


def desanitize(text: str) -> str:
    """Kafka's Sanitizer.desanitize (Java's URLDecoder: `+` is a space, %XX bytes are
    UTF-8). A broken escape is ZkDataError, as URLDecoder refuses it."""
    if _BAD_ESCAPE.search(text) is not None:
        raise ZkDataError(f"{text[:100]!r} is not URL-encoded: a % is not followed by two hex digits")
    return unquote_plus(text, errors="replace")


def _sanitize_entity_name(name: str) -> str:
    # ConfigCommand keeps `<default>` as it is: it names the defaults, not an entity.
    if not name:
        raise ValueError("an entity name cannot be empty")
    return name if name == DEFAULT_ENTITY else sanitize(name)


def _desanitize_entity_name(text: str) -> str:
    return text if text == DEFAULT_ENTITY else desanitize(text)


# ---- entity configs ------------------------------------------------------------------------

_USER_NODE = re.compile(r"^/config/users/([^/]+)$")
_CLIENT_NODE = re.compile(r"^/config/clients/([^/]+)$")
_USER_CLIENTS_DIR = re.compile(r"^/config/users/([^/]+)/clients$")
_USER_CLIENT_NODE = re.compile(r"^/config/users/([^/]+)/clients/([^/]+)$")


def sanitized_entity_path(entity: str) -> str:
    """`users/alice smith` -> `users/alice%20smith`: the entity path with names sanitized,
    as in a change notification. ValueError for anything but an entity path."""
    user, client_id = parse_entity_path(entity)
    return entity_path(
        None if user is None else _sanitize_entity_name(user),
        None if client_id is None else _sanitize_entity_name(client_id),
    )


def entity_znode_path(entity: str) -> str:
    """`users/alice` -> `/config/users/alice`."""
    return f"{layout.CONFIG_PATH}/{sanitized_entity_path(entity)}"


def entity_of_znode_path(path: str) -> str:
    """The (unsanitized) entity path of an entity config znode: the inverse of
    entity_znode_path. ZkDataError if the path is no entity's."""
    if m := _USER_CLIENT_NODE.match(path):
        return entity_path(_desanitize_entity_name(m[1]), _desanitize_entity_name(m[2]))
    if m := _USER_NODE.match(path):
        return entity_path(_desanitize_entity_name(m[1]))
    if m := _CLIENT_NODE.match(path):
        return entity_path(None, _desanitize_entity_name(m[1]))
    raise ZkDataError(f"{path[:200]!r} is not an entity config znode")


def encode_entity_configs(configs: Mapping[str, str]) -> bytes:
    """ConfigEntityZNode: `{"version":1,"config":{...}}`."""
    return layout.encode_entity_config(configs)


def decode_entity_configs(data: bytes) -> dict[str, str]:
    """An entity's configs; a znode with no data (a parent created by Kafka's
    createRecursive, e.g. /config/users/alice of alice's client configs) has none."""
    if not data:
        return {}
    return layout.decode_entity_config(data)


@dataclass(frozen=True, slots=True)
class ZnodeState:
    """A znode as read before a conditional write."""

    exists: bool
    version: int = -1
    data: bytes = b""
    children: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ZkOp:
    """One operation of a ZooKeeper multi."""

    kind: str  # "create", "create_sequential", "set", "delete"
    path: str
    data: bytes = b""
    version: int = -1


@dataclass(frozen=True, slots=True)
class EntityAlterPlan:
    ops: tuple[ZkOp, ...]
    # The configs of each entity the write changes, as they will be after it.
    configs: Mapping[str, Mapping[str, str]]


def entity_read_paths(entity: str) -> tuple[str, ...]:
    """The znodes an alter of `entity` reads first: its own, and for a user's client id
    also the parents that the write may create or clean up."""
    path = entity_znode_path(entity)
    user, client_id = parse_entity_path(entity)
    if user is not None and client_id is not None:
        clients_dir = path.rsplit("/", 1)[0]
        return path, clients_dir, clients_dir.rsplit("/", 1)[0]
    return (path,)


def _depth(path: str) -> int:
    return path.count("/")


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0]


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[1]


def plan_entity_alter(
    current: Mapping[str, ZnodeState], changes: Mapping[str, Mapping[str, str | None]]
) -> EntityAlterPlan:
    """The multi-op that applies `changes` (None removes a key) to the znodes as read in
    `current` (every path of entity_read_paths), as AdminZkClient.changeEntityConfig
    would: an entity left with no config and no children is deleted, and so are the
    `clients` node and the user's node it leaves empty (tryCleanQuotaNodes); a user's
    client id gets its parents created as empty nodes (createRecursive). Every write
    and delete is at the version read; a change notification follows each entity."""
    new: dict[str, dict[str, str]] = {}
    for entity, keys in changes.items():
        state = current[entity_znode_path(entity)]
        old = decode_entity_configs(state.data) if state.exists else {}
        configs = dict(old)
        for key, value in keys.items():
            if value is None:
                configs.pop(key, None)
            else:
                configs[key] = value
        if configs != old:
            new[entity] = configs
    children = {path: set(state.children) for path, state in current.items()}
    want: dict[str, bytes | None] = {}  # path -> its data after the write; None: deleted
    entity_paths = {entity_znode_path(e): e for e in new}

    def settle_entity(path: str, configs: Mapping[str, str]) -> None:
        if configs or children[path]:
            # Kafka writes an empty config rather than delete a node with children.
            want[path] = encode_entity_configs(configs)
            children.setdefault(_parent(path), set()).add(_basename(path))
        else:
            if current[path].exists:
                want[path] = None
            children.setdefault(_parent(path), set()).discard(_basename(path))

    # Deepest first: a user's client ids, then the `clients` nodes, then users and clients.
    clients_dirs = set()
    for path, entity in entity_paths.items():
        if _USER_CLIENT_NODE.match(path):
            settle_entity(path, new[entity])
            clients_dirs.add(_parent(path))
    user_parents = set()
    for clients_dir in clients_dirs:
        user_path = _parent(clients_dir)
        if children[clients_dir]:
            if not current[clients_dir].exists:
                want[clients_dir] = b""
            children[user_path].add(CONFIG_TYPE_CLIENT)
        else:
            if current[clients_dir].exists:
                want[clients_dir] = None
            children[user_path].discard(CONFIG_TYPE_CLIENT)
        user_parents.add(user_path)
    for path, entity in entity_paths.items():
        if not _USER_CLIENT_NODE.match(path):
            settle_entity(path, new[entity])
    for user_path in user_parents - set(entity_paths):
        state = current[user_path]
        if children[user_path]:
            if not state.exists:
                want[user_path] = b""
        elif state.exists and not decode_entity_configs(state.data):
            want[user_path] = None

    writes = sorted((p for p, d in want.items() if d is not None), key=_depth)
    deletes = sorted((p for p, d in want.items() if d is None), key=_depth, reverse=True)
    ops: list[ZkOp] = []
    for path in writes:
        data = want[path]
        assert data is not None
        if current.get(path, ZnodeState(False)).exists:
            ops.append(ZkOp("set", path, data, current[path].version))
        else:
            ops.append(ZkOp("create", path, data))
    for path in deletes:
        ops.append(ZkOp("delete", path, version=current[path].version))
    for entity in new:
        ops.append(
            ZkOp(
                "create_sequential",
                layout.config_change_path(),
                layout.encode_config_change_notification(sanitized_entity_path(entity)),
            )
        )
    return EntityAlterPlan(tuple(ops), new)


# ---- ACLs ----------------------------------------------------------------------------------


def _pascal_case(enum_name: str) -> str:
    # SecurityUtils.toPascalCase: CLUSTER_ACTION -> ClusterAction.
    return "".join(part.capitalize() for part in enum_name.split("_"))


def _names(enum: Any) -> dict[str, Any]:
    # SecurityUtils' lookups: the Pascal-case name, or its upper case.
    names: dict[str, Any] = {}
    for member in enum:
        pascal = _pascal_case(member.name)
        names[pascal] = member
        names[pascal.upper()] = member
    return names


_RESOURCE_TYPES_BY_NAME = _names(ResourceType)
_OPERATIONS_BY_NAME = _names(AclOperation)
_PERMISSION_TYPES_BY_NAME = _names(AclPermissionType)


def resource_type_name(resource_type: ResourceType) -> str:
    """SecurityUtils.resourceTypeName: TRANSACTIONAL_ID -> TransactionalId."""
    return _pascal_case(resource_type.name)


def operation_name(operation: AclOperation) -> str:
    return _pascal_case(operation.name)


def permission_type_name(permission_type: AclPermissionType) -> str:
    return _pascal_case(permission_type.name)


def _lookup(names: Mapping[str, Any], name: str, unknown: Any) -> Any:
    found = names.get(name)
    return found if found is not None else names.get(name.upper(), unknown)


def parse_resource_type_name(name: str) -> ResourceType:
    """SecurityUtils.resourceType: Topic or TOPIC; UNKNOWN for anything else."""
    return _lookup(_RESOURCE_TYPES_BY_NAME, name, ResourceType.UNKNOWN)


def parse_operation(name: str) -> AclOperation:
    return _lookup(_OPERATIONS_BY_NAME, name, AclOperation.UNKNOWN)


def parse_permission_type(name: str) -> AclPermissionType:
    return _lookup(_PERMISSION_TYPES_BY_NAME, name, AclPermissionType.UNKNOWN)


@dataclass(frozen=True, slots=True, order=True)
class ResourcePattern:
    resource_type: ResourceType
    name: str
    pattern_type: PatternType


@dataclass(frozen=True, slots=True, order=True)
class AccessControlEntry:
    principal: str
    host: str
    operation: AclOperation
    permission_type: AclPermissionType


def binding_of(resource: ResourcePattern, entry: AccessControlEntry) -> AclBinding:
    return AclBinding(
        resource.resource_type,
        resource.name,
        resource.pattern_type,
        entry.principal,
        entry.host,
        entry.operation,
        entry.permission_type,
    )


def split_binding(binding: AclBinding) -> tuple[ResourcePattern, AccessControlEntry]:
    return (
        ResourcePattern(binding.resource_type, binding.resource_name, binding.pattern_type),
        AccessControlEntry(binding.principal, binding.host, binding.operation, binding.permission_type),
    )


def znode_name_error(name: str) -> str | None:
    """Why ZooKeeper cannot hold `name` as one znode name (its PathUtils.validatePath,
    over Java's UTF-16: a character beyond the BMP is a surrogate pair, refused), or None."""
    if not name:
        return "an empty name"
    if name in (".", ".."):
        return f"the name {name!r}"
    for c in name:
        o = ord(c)
        if c == "/":
            return "a name with '/'"
        if o == 0 or 0x01 <= o <= 0x1F or 0x7F <= o <= 0x9F or 0xD800 <= o <= 0xF8FF or o >= 0xFFF0:
            return f"a name with the character U+{o:04X}"
    return None


def acl_store_path(pattern_type: PatternType) -> str:
    if pattern_type is PatternType.LITERAL:
        return ACL_PATH
    if pattern_type is PatternType.PREFIXED:
        return PREFIXED_ACL_PATH
    raise ValueError(f"ACLs of pattern type {pattern_type.name} are not stored")


def acl_resource_type_path(pattern_type: PatternType, resource_type: ResourceType) -> str:
    """ZkAclStore.path(resourceType): e.g. /kafka-acl/Topic."""
    if resource_type not in RESOURCE_TYPES:
        raise ValueError(f"ACLs of resource type {resource_type.name} are not stored")
    return f"{acl_store_path(pattern_type)}/{resource_type_name(resource_type)}"


def acl_znode_path(resource: ResourcePattern) -> str:
    """ZkAclStore.path(resourceType, name): the name as it is (Kafka does not sanitize
    it); ValueError for a name ZooKeeper cannot hold."""
    problem = znode_name_error(resource.name)
    if problem is not None:
        raise ValueError(f"ACLs of a resource named {resource.name[:100]!r} cannot be stored in ZooKeeper: {problem}")
    return f"{acl_resource_type_path(resource.pattern_type, resource.resource_type)}/{resource.name}"


_ACL_NODE = re.compile(r"^(/kafka-acl|/kafka-acl-extended/prefixed)/([^/]+)/([^/]+)$")
_ACL_TYPE_DIR = re.compile(r"^(/kafka-acl|/kafka-acl-extended/prefixed)/([^/]+)$")


def _pattern_type_of_store(store_path: str) -> PatternType:
    return PatternType.LITERAL if store_path == ACL_PATH else PatternType.PREFIXED


def resource_of_acl_znode_path(path: str) -> ResourcePattern | None:
    """The resource pattern whose ACLs the znode holds, or None if it is not such a znode."""
    m = _ACL_NODE.match(path)
    if m is None:
        return None
    resource_type = parse_resource_type_name(m[2])
    if resource_type not in RESOURCE_TYPES:
        return None
    return ResourcePattern(resource_type, m[3], _pattern_type_of_store(m[1]))


def _acls_json(entries: Iterable[AccessControlEntry]) -> list[dict[str, str]]:
    # AclEntry.toMap's keys (Kafka's HashMap gives no order; this one is fixed).
    return [
        {
            "principal": e.principal,
            "permissionType": permission_type_name(e.permission_type),
            "operation": operation_name(e.operation),
            "host": e.host,
        }
        for e in sorted(entries)
    ]


def encode_acls(entries: Iterable[AccessControlEntry]) -> bytes:
    """ResourceZNode.encode: `{"version":1,"acls":[{"principal":"User:alice",...}]}`."""
    return _dumps({"version": ACL_VERSION, "acls": _acls_json(entries)})


def decode_acls(data: bytes) -> frozenset[AccessControlEntry]:
    """AclEntry.fromBytes: no data is no ACLs; the version must be 1; an unknown
    operation or permission type reads as UNKNOWN (it never matches), as Kafka's."""
    if not data:
        return frozenset()
    what = "ACLs"
    info = layout._object(layout._loads(data, what), what)
    version = layout._as_int(layout._require(info, "version", what), f"{what} version")
    if version != ACL_VERSION:
        raise ZkDataError(f"{what}: unsupported version {version}")
    acls = layout._require(info, "acls", what)
    if not isinstance(acls, list):
        raise ZkDataError(f"{what}: acls is not an array")
    entries = set()
    for item in acls:
        item = layout._object(item, f"{what} entry")
        principal = layout._as_str(layout._require(item, "principal", what), f"{what} principal")
        principal_type, colon, _ = principal.partition(":")
        if not colon:
            raise ZkDataError(f"{what}: expected principalType:principalName, got {principal[:100]!r}")
        permission = layout._as_str(layout._require(item, "permissionType", what), f"{what} permissionType")
        host = layout._as_str(layout._require(item, "host", what), f"{what} host")
        operation = layout._as_str(layout._require(item, "operation", what), f"{what} operation")
        entries.add(AccessControlEntry(principal, host, parse_operation(operation), parse_permission_type(permission)))
    return frozenset(entries)


def acl_change_path(pattern_type: PatternType) -> str:
    """The prefix to create a sequential change notification of a pattern's ACLs with."""
    directory = ACL_CHANGES_PATH if pattern_type is PatternType.LITERAL else EXTENDED_ACL_CHANGES_PATH
    return f"{directory}/{ACL_CHANGE_SEQUENCE_PREFIX}"


def encode_acl_change(resource: ResourcePattern) -> bytes:
    """A literal resource: LiteralAclChangeStore's `TOPIC:orders` (ResourceType's Java
    name, a colon, the name); any other: ExtendedAclChangeStore's JSON."""
    if resource.pattern_type is PatternType.LITERAL:
        return f"{resource.resource_type.name}:{resource.name}".encode()
    return _dumps(
        {
            "version": EXTENDED_ACL_CHANGE_VERSION,
            "resourceType": resource.resource_type.name,
            "name": resource.name,
            "patternType": resource.pattern_type.name,
        }
    )


def _enum_from_string(enum: Any, text: str) -> Any:
    # ResourceType.fromString, PatternType.fromString: valueOf(upper case), else UNKNOWN.
    try:
        return enum[text.upper()]
    except KeyError:
        return enum.UNKNOWN


def decode_literal_acl_change(data: bytes) -> ResourcePattern:
    text = layout._text(data, "ACL change")
    resource_type, colon, name = text.partition(":")
    if not colon:
        raise ZkDataError(f"ACL change: expected ResourceType:ResourceName, got {text[:100]!r}")
    return ResourcePattern(_enum_from_string(ResourceType, resource_type), name, PatternType.LITERAL)


def decode_extended_acl_change(data: bytes) -> ResourcePattern:
    what = "extended ACL change"
    info = layout._object(layout._loads(data, what), what)
    version = layout._as_int(layout._require(info, "version", what), f"{what} version")
    if version > EXTENDED_ACL_CHANGE_VERSION:
        raise ZkDataError(f"{what}: unsupported version {version}")
    fields = {
        key: layout._as_str(layout._require(info, key, what), f"{what} {key}")
        for key in ("resourceType", "name", "patternType")
    }
    return ResourcePattern(
        _enum_from_string(ResourceType, fields["resourceType"]),
        fields["name"],
        _enum_from_string(PatternType, fields["patternType"]),
    )


def check_storable(binding: AclBinding) -> None:
    """ValueError unless the binding is one an ACL store holds (what CreateAcls
    validates first: no filter values, no UNKNOWN)."""
    resource, entry = split_binding(binding)
    acl_znode_path(resource)
    if entry.operation in (AclOperation.UNKNOWN, AclOperation.ANY):
        raise ValueError(f"an ACL cannot have the operation {entry.operation.name}")
    if entry.permission_type not in (AclPermissionType.ALLOW, AclPermissionType.DENY):
        raise ValueError(f"an ACL cannot have the permission type {entry.permission_type.name}")
    if ":" not in entry.principal:
        raise ValueError(f"expected principalType:principalName, got {entry.principal[:100]!r}")
    if not entry.host:
        raise ValueError("an ACL's host cannot be empty")


@dataclass(frozen=True, slots=True)
class AclChangePlan:
    ops: tuple[ZkOp, ...]
    # The entries of each resource the write changes, as they will be after it.
    acls: Mapping[ResourcePattern, frozenset[AccessControlEntry]]


def plan_acl_change(
    current: Mapping[ResourcePattern, ZnodeState],
    add: Mapping[ResourcePattern, Iterable[AccessControlEntry]] | None = None,
    remove: Mapping[ResourcePattern, Iterable[AccessControlEntry]] | None = None,
) -> AclChangePlan:
    """The multi-op of AclAuthorizer.updateResourceAcls over several resources: each
    resource's znode written at the version read, deleted when no ACL is left, and a
    change notification after each changed resource."""
    ops: list[ZkOp] = []
    notifications: list[ZkOp] = []
    result: dict[ResourcePattern, frozenset[AccessControlEntry]] = {}
    for resource in sorted(set(add or {}) | set(remove or {})):
        state = current[resource]
        old = decode_acls(state.data) if state.exists else frozenset()
        new = (old | frozenset((add or {}).get(resource, ()))) - frozenset((remove or {}).get(resource, ()))
        if new == old:
            continue
        path = acl_znode_path(resource)
        if not new:
            ops.append(ZkOp("delete", path, version=state.version))
        elif state.exists:
            ops.append(ZkOp("set", path, encode_acls(new), state.version))
        else:
            ops.append(ZkOp("create", path, encode_acls(new)))
        notifications.append(ZkOp("create_sequential", acl_change_path(resource.pattern_type), encode_acl_change(resource)))
        result[resource] = new
    return AclChangePlan(tuple(ops + notifications), result)


def _dumps(value: Any) -> bytes:
    # Jackson's compact output, as zk_layout writes.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# ---- I/O -----------------------------------------------------------------------------------

# A conditional write that lost a race: read again and retry.
_CONFLICTS = (BadVersionError, NodeExistsError, NoNodeError, NotEmptyError)


async def commit(session: ZkSession, ops: Sequence[ZkOp]) -> list[Any]:
    """Run `ops` as one ZooKeeper multi, all or none: kazoo's results (the path of each
    created node, the stat of each set). Raises the first failed operation's error."""
    def build(transaction: Any) -> None:
        for op in ops:
            if op.kind == "create":
                transaction.create(op.path, op.data)
            elif op.kind == "create_sequential":
                transaction.create(op.path, op.data, sequence=True)
            elif op.kind == "set":
                transaction.set_data(op.path, op.data, op.version)
            elif op.kind == "delete":
                transaction.delete(op.path, op.version)
            else:
                raise ValueError(f"unknown ZooKeeper operation {op.kind!r}")

    return await session.multi(build)


async def read_state(session: ZkSession, path: str) -> ZnodeState:
    """A znode's data, version and children, read for a conditional write."""
    data, stat = await session.get_or_none(path)
    if data is None or stat is None:
        return ZnodeState(False)
    children = await session.children(path)
    return ZnodeState(True, stat.version, data, frozenset(children))


async def purge_obsolete_notifications(
    session: ZkSession, directory: str, prefix: str, *, expiration_ms: int = CHANGE_EXPIRATION_MS
) -> int:
    """ZkNodeChangeNotificationListener.purgeObsoleteNotifications: delete the change
    notifications older than `expiration_ms`, oldest first (a sequence number orders
    them by creation). The number deleted."""
    now = now_ms()
    deleted = 0
    for child in sorted(c for c in await session.children(directory) if c.startswith(prefix)):
        path = f"{directory}/{child}"
        stat = await session.exists(path)
        if stat is None:
            continue
        if now - stat.ctime <= expiration_ms:
            break
        try:
            await session.delete(path)
            deleted += 1
        except NoNodeError:
            pass  # another broker purged it
    return deleted


class _WatchedZnodes:
    """Keeps an in-memory view of a znode tree by watches: each watched path is read
    with a new watch when its watch fires, one read per path at a time (a watch firing
    during a read has the path read again after it).

    A broker's own write changes its view at once (read-your-writes); a read begun
    before that may answer older data, so it is dropped and the path read again.
    """

    # (directory, sequence prefix) of the change notifications this store writes.
    _notification_dirs: tuple[tuple[str, str], ...] = ()

    def __init__(self, session: ZkSession) -> None:
        self.session = session
        self._nursery: trio.Nursery | None = None
        self._reading: dict[str, bool] = {}  # path -> read again when done
        # path -> bumped whenever the view of the path changes other than by reading it.
        self._generation: dict[str, int] = {}
        self._idle = trio.Event()
        self._idle.set()
        self._purging = False
        self._last_purge = -math.inf
        # Set after the first full read (run): the view is whole.
        self.synced = trio.Event()

    # ---- what subclasses say ------------------------------------------------------------

    def _kind(self, path: str) -> str | None:
        """ "data" or "children" for a path this store reads, else None."""
        raise NotImplementedError

    def _all_paths(self) -> Iterable[str]:
        """Every path to read on a resync: the roots and all known below them."""
        raise NotImplementedError

    def _permanent_paths(self) -> Iterable[str]:
        raise NotImplementedError

    def _apply_children(self, path: str, children: list[str]) -> None:
        raise NotImplementedError

    def _apply_data(self, path: str, data: bytes | None, stat: ZnodeStat | None) -> None:
        raise NotImplementedError

    # ---- driven by the cluster node -----------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Create the persistent paths, read everything, then keep the view up to date
        until cancelled. `started()` once the first full read is done."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for path in self._permanent_paths():
                    await self.session.ensure_path(path)
                await self.resync()
                self.synced.set()
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None  # stopping: watches still arriving are not read

    async def resync(self) -> None:
        """Read everything again and wait until it is read (start-up, or after the
        connection came back: watches of a lost session are gone, and anything may have
        changed meanwhile)."""
        for path in list(self._all_paths()):
            self.read_soon(path)
        while self._reading:
            await self._idle.wait()

    def on_watch(self, event: WatchEvent) -> bool:
        """Read the path again if it is this store's; True if it was."""
        if self._kind(event.path) is None:
            return False
        self.read_soon(event.path)
        return True

    def read_soon(self, path: str) -> None:
        if path in self._reading:
            self._reading[path] = True
            return
        if self._nursery is None:
            return
        try:
            self._nursery.start_soon(self._read, path)
        except RuntimeError:
            return  # stopping: the nursery takes no new task
        if not self._reading:
            self._idle = trio.Event()
        self._reading[path] = False

    def _bump(self, path: str) -> None:
        self._generation[path] = self._generation.get(path, 0) + 1

    async def _read(self, path: str) -> None:
        kind = self._kind(path)
        try:
            while True:
                generation = self._generation.get(path, 0)
                try:
                    if kind == "children":
                        children = await self.session.children(path, watch=True)
                    else:
                        data, stat = await self.session.get_or_none(path, watch=True)
                except (ZkTimeout, ZookeeperError) as e:
                    # The session is down: the resync after reconnecting reads it again.
                    log.debug("cannot read %s: %r", path, e)
                    return
                if self._generation.get(path, 0) != generation:
                    continue  # the view changed meanwhile: this answer may be older
                try:
                    if kind == "children":
                        self._apply_children(path, children)
                    else:
                        self._apply_data(path, data, stat)
                except ZkDataError as e:
                    log.warning("ignoring unreadable znode %s: %s", path, e)
                if not self._reading.get(path):
                    break
                self._reading[path] = False
        finally:
            self._reading.pop(path, None)
            if not self._reading:
                self._idle.set()

    # ---- writes ---------------------------------------------------------------------------

    async def _write(self, plan: Callable[[], Any]) -> Any:
        """Run `await plan()` -> (ops, result) and commit its ops; on a conflict (another
        writer got there first) plan again from fresh reads, until the call timeout."""
        deadline = trio.current_time() + self.session.call_timeout
        attempt = 0
        while True:
            ops, result = await plan()
            if not ops:
                return result
            try:
                await commit(self.session, ops)
                self._purge_soon()
                return result
            except _CONFLICTS:
                attempt += 1
                if trio.current_time() >= deadline:
                    raise
                await trio.sleep(random.uniform(0.0, 0.01 * min(attempt, 10)))

    def _purge_soon(self) -> None:
        now = trio.current_time()
        if self._purging or self._nursery is None or now - self._last_purge < PURGE_INTERVAL_S:
            return
        self._purging = True
        self._last_purge = now
        try:
            self._nursery.start_soon(self._purge)
        except RuntimeError:
            self._purging = False

    async def _purge(self) -> None:
        try:
            for directory, prefix in self._notification_dirs:
                await purge_obsolete_notifications(self.session, directory, prefix)
        except (ZkTimeout, ZookeeperError) as e:
            log.debug("cannot purge change notifications: %r", e)
        finally:
            self._purging = False


class ZkEntityConfigs(_WatchedZnodes):
    """Kafka's entity configs of users and client ids in ZooKeeper (an EntityConfigStore):
    SCRAM credentials and quotas, the same on every broker."""

    _notification_dirs = ((layout.CONFIG_CHANGES_PATH, layout.CONFIG_CHANGE_SEQUENCE_PREFIX),)

    def __init__(self, session: ZkSession) -> None:
        super().__init__(session)
        self._entities: dict[str, dict[str, str]] = {}
        self._entity_paths: dict[str, str] = {}  # znode path -> entity
        self._children: dict[str, frozenset[str]] = {}
        self._subscribers: list[Callable[[str], None]] = []

    # ---- EntityConfigStore --------------------------------------------------------------

    def get(self, entity: str) -> Mapping[str, str]:
        return self._entities.get(entity, {})

    def items(self) -> Iterable[tuple[str, Mapping[str, str]]]:
        return list(self._entities.items())

    def subscribe(self, changed: Callable[[str], None]) -> None:
        self._subscribers.append(changed)

    async def alter(self, changes: Mapping[str, Mapping[str, str | None]]) -> None:
        """Set or remove keys of entities in one conditional multi-op with their change
        notifications, all or nothing. ValueError for something not an entity path;
        ZkTimeout or ZookeeperError if ZooKeeper cannot be written."""
        changes = {entity: dict(keys) for entity, keys in changes.items()}
        paths = sorted({p for entity in changes for p in entity_read_paths(entity)})

        async def plan() -> tuple[tuple[ZkOp, ...], Mapping[str, Mapping[str, str]]]:
            current: dict[str, ZnodeState] = {}

            async def read(path: str) -> None:
                current[path] = state = await read_state(self.session, path)
                if not state.exists and _depth(path) == 3:
                    # /config/users or /config/clients exists from the start; it may
                    # have been deleted by hand since (a create under it would never succeed).
                    await self.session.ensure_path(_parent(path))

            async with trio.open_nursery() as nursery:
                for path in paths:
                    nursery.start_soon(read, path)
            written = plan_entity_alter(current, changes)
            return written.ops, written.configs

        configs = await self._write(plan)
        # Read-your-writes: what was written is the view now (reads begun before are dropped).
        for path in paths:
            self._bump(path)
            self._bump(_parent(path))
        for entity, values in configs.items():
            path = entity_znode_path(entity)
            self._bump(path)
            self._set(path, entity, values)

    # ---- the view ---------------------------------------------------------------------------

    def _kind(self, path: str) -> str | None:
        if path in (CONFIG_USERS_PATH, CONFIG_CLIENTS_PATH) or _USER_CLIENTS_DIR.match(path):
            return "children"
        if _USER_NODE.match(path) or _CLIENT_NODE.match(path) or _USER_CLIENT_NODE.match(path):
            return "data"
        return None

    def _permanent_paths(self) -> Iterable[str]:
        return CONFIG_USERS_PATH, CONFIG_CLIENTS_PATH, layout.CONFIG_CHANGES_PATH

    def _all_paths(self) -> Iterable[str]:
        yield CONFIG_USERS_PATH
        yield CONFIG_CLIENTS_PATH
        for directory, children in list(self._children.items()):
            yield directory
            for child in children:
                yield f"{directory}/{child}"
                if directory == CONFIG_USERS_PATH:
                    yield f"{directory}/{child}/{CONFIG_TYPE_CLIENT}"

    def _apply_children(self, path: str, children: list[str]) -> None:
        old = self._children.get(path, frozenset())
        new = frozenset(children)
        self._children[path] = new
        for gone in old - new:
            self._forget(f"{path}/{gone}")
        for child in new - old:
            self.read_soon(f"{path}/{child}")
            if path == CONFIG_USERS_PATH:
                self.read_soon(f"{path}/{child}/{CONFIG_TYPE_CLIENT}")

    def _apply_data(self, path: str, data: bytes | None, stat: ZnodeStat | None) -> None:
        entity = entity_of_znode_path(path)
        self._set(path, entity, {} if data is None else decode_entity_configs(data))

    def _forget(self, path: str) -> None:
        """A znode and everything below it are gone."""
        below = path + "/"
        for known in [p for p in self._entity_paths if p == path or p.startswith(below)]:
            self._bump(known)
            self._set(known, self._entity_paths[known], {})
        for known in [p for p in self._children if p.startswith(below)]:
            self._bump(known)
            del self._children[known]

    def _set(self, path: str, entity: str, configs: Mapping[str, str]) -> None:
        old = self._entities.get(entity, {})
        if configs:
            self._entities[entity] = dict(configs)
            self._entity_paths[path] = entity
        else:
            self._entities.pop(entity, None)
            self._entity_paths.pop(path, None)
        if old != configs:
            for changed in list(self._subscribers):
                try:
                    changed(entity)
                except Exception:
                    log.exception("an entity config subscriber failed")


class ZkAclStore(_WatchedZnodes):
    """Kafka's ACLs in ZooKeeper (an AclStore), the same on every broker."""

    _notification_dirs = (
        (ACL_CHANGES_PATH, ACL_CHANGE_SEQUENCE_PREFIX),
        (EXTENDED_ACL_CHANGES_PATH, ACL_CHANGE_SEQUENCE_PREFIX),
    )

    def __init__(self, session: ZkSession) -> None:
        super().__init__(session)
        self._acls: dict[ResourcePattern, frozenset[AccessControlEntry]] = {}
        self._children: dict[str, frozenset[str]] = {}
        self._bindings: tuple[AclBinding, ...] | None = None
        self._subscribers: list[Callable[[], None]] = []

    # ---- AclStore -----------------------------------------------------------------------

    def bindings(self) -> Iterable[AclBinding]:
        if self._bindings is None:
            self._bindings = tuple(
                binding_of(resource, entry)
                for resource, entries in self._acls.items()
                for entry in sorted(entries)
            )
        return self._bindings

    def acls(self, resource: ResourcePattern) -> frozenset[AccessControlEntry]:
        return self._acls.get(resource, frozenset())

    def subscribe(self, changed: Callable[[], None]) -> None:
        self._subscribers.append(changed)

    async def add(self, bindings: Iterable[AclBinding]) -> None:
        """Add ACLs, each resource's znode written conditionally, all in one multi-op.
        ValueError for a binding no store holds (checked before anything is written)."""
        await self._change(bindings, adding=True)

    async def remove(self, bindings: Iterable[AclBinding]) -> None:
        """Remove these exact ACLs (absent ones are ignored); a resource left with none
        has its znode deleted."""
        await self._change(bindings, adding=False)

    async def _change(self, bindings: Iterable[AclBinding], *, adding: bool) -> None:
        by_resource: dict[ResourcePattern, set[AccessControlEntry]] = {}
        for binding in bindings:
            if adding:
                check_storable(binding)
            resource, entry = split_binding(binding)
            if not adding and (resource.pattern_type not in STORED_PATTERN_TYPES or znode_name_error(resource.name)):
                continue  # never stored
            by_resource.setdefault(resource, set()).add(entry)
        if not by_resource:
            return

        async def plan() -> tuple[tuple[ZkOp, ...], Mapping[ResourcePattern, frozenset[AccessControlEntry]]]:
            current: dict[ResourcePattern, ZnodeState] = {}

            async def read(resource: ResourcePattern) -> None:
                path = acl_znode_path(resource)
                data, stat = await self.session.get_or_none(path)
                if data is None or stat is None:
                    current[resource] = ZnodeState(False)
                    if adding:
                        # Its resource type's node is created at start; it may have been
                        # deleted by hand since (a create under it would never succeed).
                        await self.session.ensure_path(_parent(path))
                else:
                    current[resource] = ZnodeState(True, stat.version, data)

            async with trio.open_nursery() as nursery:
                for resource in by_resource:
                    nursery.start_soon(read, resource)
            changed = plan_acl_change(current, add=by_resource if adding else None, remove=None if adding else by_resource)
            return changed.ops, changed.acls

        acls = await self._write(plan)
        for resource, entries in acls.items():
            path = acl_znode_path(resource)
            self._bump(path)
            self._bump(_parent(path))
            self._set(resource, entries)

    # ---- the view ---------------------------------------------------------------------------

    def _kind(self, path: str) -> str | None:
        if resource_of_acl_znode_path(path) is not None:
            return "data"
        m = _ACL_TYPE_DIR.match(path)
        if m is not None and parse_resource_type_name(m[2]) in RESOURCE_TYPES:
            return "children"
        return None

    def _type_dirs(self) -> list[str]:
        return [acl_resource_type_path(p, t) for p in STORED_PATTERN_TYPES for t in RESOURCE_TYPES]

    def _permanent_paths(self) -> Iterable[str]:
        # KafkaZkClient.createAclPaths: each store's root, its change path, a node per type.
        return [ACL_CHANGES_PATH, EXTENDED_ACL_CHANGES_PATH, *self._type_dirs()]

    def _all_paths(self) -> Iterable[str]:
        for directory in self._type_dirs():
            yield directory
            for child in self._children.get(directory, ()):
                yield f"{directory}/{child}"

    def _apply_children(self, path: str, children: list[str]) -> None:
        old = self._children.get(path, frozenset())
        new = frozenset(children)
        self._children[path] = new
        for gone in old - new:
            resource = resource_of_acl_znode_path(f"{path}/{gone}")
            if resource is not None:
                self._bump(f"{path}/{gone}")
                self._set(resource, frozenset())
        for child in new - old:
            self.read_soon(f"{path}/{child}")

    def _apply_data(self, path: str, data: bytes | None, stat: ZnodeStat | None) -> None:
        resource = resource_of_acl_znode_path(path)
        assert resource is not None
        self._set(resource, frozenset() if data is None else decode_acls(data))

    def _set(self, resource: ResourcePattern, entries: frozenset[AccessControlEntry]) -> None:
        old = self._acls.get(resource, frozenset())
        if entries:
            self._acls[resource] = entries
        else:
            self._acls.pop(resource, None)
        if old != entries:
            self._bindings = None
            for changed in list(self._subscribers):
                try:
                    changed()
                except Exception:
                    log.exception("an ACL subscriber failed")


__all__ = [
    "ACL_CHANGES_PATH",
    "ACL_PATH",
    "AccessControlEntry",
    "AclChangePlan",
    "CHANGE_EXPIRATION_MS",
    "EXTENDED_ACL_CHANGES_PATH",
    "EntityAlterPlan",
    "PREFIXED_ACL_PATH",
    "ResourcePattern",
    "ZkAclStore",
    "ZkDataError",
    "ZkEntityConfigs",
    "ZkOp",
    "ZnodeState",
    "acl_change_path",
    "acl_znode_path",
    "commit",
    "decode_acls",
    "decode_entity_configs",
    "decode_extended_acl_change",
    "decode_literal_acl_change",
    "desanitize",
    "encode_acl_change",
    "encode_acls",
    "encode_entity_configs",
    "entity_of_znode_path",
    "entity_znode_path",
    "plan_acl_change",
    "plan_entity_alter",
    "purge_obsolete_notifications",
    "resource_of_acl_znode_path",
    "sanitize",
    "sanitized_entity_path",
]
