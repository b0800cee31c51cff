"""Security state in ZooKeeper (kwire.cluster.zk_security): Kafka's znodes and JSON for
entity configs and ACLs, and the stores over a real ZooKeeper, two sessions standing for
two brokers."""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
from cluster_harness import TcpProxy
from hypothesis import given, settings
from hypothesis import strategies as st

from kwire.cluster.zk import BadVersionError, SessionEvent, WatchEvent, ZkSession
from kwire.cluster.zk_security import (
    AccessControlEntry,
    ResourcePattern,
    ZkAclStore,
    ZkDataError,
    ZkEntityConfigs,
    ZkOp,
    ZnodeState,
    acl_change_path,
    acl_resource_type_path,
    acl_znode_path,
    check_storable,
    commit,
    decode_acls,
    decode_entity_configs,
    decode_extended_acl_change,
    decode_literal_acl_change,
    desanitize,
    encode_acl_change,
    encode_acls,
    entity_of_znode_path,
    entity_znode_path,
    operation_name,
    parse_operation,
    plan_acl_change,
    plan_entity_alter,
    purge_obsolete_notifications,
    read_state,
    resource_of_acl_znode_path,
    resource_type_name,
    sanitize,
    sanitized_entity_path,
)
from kwire.security.acl import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
)

ALLOW = AclPermissionType.ALLOW
DENY = AclPermissionType.DENY
READ = AclOperation.READ
TOPIC = ResourceType.TOPIC
LITERAL = PatternType.LITERAL
PREFIXED = PatternType.PREFIXED

# ---- sanitizing and entity paths -----------------------------------------------------------


def test_sanitize_as_kafka() -> None:
    # Kafka's SanitizerTest principal: every character but [A-Za-z0-9._-] escaped.
    principal = "CN=Some characters !@#$%&*()_-+=';:,/~"
    sanitized = sanitize(principal)
    assert sanitized == "CN%3DSome%20characters%20%21%40%23%24%25%26%2A%28%29_-%2B%3D%27%3B%3A%2C%2F%7E"
    assert re.fullmatch(r"[a-zA-Z0-9._\-]+", sanitized.replace("%", "_"))
    assert desanitize(sanitized) == principal
    assert sanitize("ü") == "%C3%BC"
    assert desanitize("a+b") == "a b"  # URLDecoder
    with pytest.raises(ZkDataError):
        desanitize("100%")
    with pytest.raises(ZkDataError):
        desanitize("%zz")


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1))
@settings(max_examples=300, deadline=None)
def test_sanitize_round_trip(name: str) -> None:
    sanitized = sanitize(name)
    assert re.fullmatch(r"[A-Za-z0-9._\-%]+", sanitized)
    assert desanitize(sanitized) == name


def test_entity_znode_paths() -> None:
    cases = {
        "users/alice": "/config/users/alice",
        "users/<default>": "/config/users/<default>",
        "clients/<default>": "/config/clients/<default>",
        "clients/app 1": "/config/clients/app%201",
        "users/CN=a,O=b/clients/c*": "/config/users/CN%3Da%2CO%3Db/clients/c%2A",
        "users/<default>/clients/<default>": "/config/users/<default>/clients/<default>",
    }
    for entity, path in cases.items():
        assert entity_znode_path(entity) == path
        assert entity_of_znode_path(path) == entity
    assert sanitized_entity_path("users/alice smith/clients/x") == "users/alice%20smith/clients/x"
    for bad in ("topics/t", "users/", "users/a/b", "clients/c/users/u"):
        with pytest.raises(ValueError):
            entity_znode_path(bad)
    for bad in ("/config/topics/t", "/config/users/a/clients", "/config/users/%G1"):
        with pytest.raises(ZkDataError):
            entity_of_znode_path(bad)


def test_entity_config_json() -> None:
    assert decode_entity_configs(b'{"version":1,"config":{"producer_byte_rate":"1024"}}') == {
        "producer_byte_rate": "1024"
    }
    assert decode_entity_configs(b"") == {}  # a parent made by createRecursive


# ---- ACL JSON and paths ---------------------------------------------------------------------

# Kafka's AclEntryTest.AclJson.
KAFKA_ACL_JSON = b"""{"version": 1, "acls": [{"host": "host1","permissionType": "Deny","operation": "READ", "principal": "User:alice"  },
    {  "host":  "*" ,  "permissionType": "Allow",  "operation":  "Read", "principal": "User:bob"  },
    {  "host": "host1",  "permissionType": "Deny",  "operation":   "Read" ,  "principal": "User:bob"}]}"""


def test_acl_json_as_kafka() -> None:
    expected = {
        AccessControlEntry("User:alice", "host1", READ, DENY),
        AccessControlEntry("User:bob", "*", READ, ALLOW),
        AccessControlEntry("User:bob", "host1", READ, DENY),
    }
    assert decode_acls(KAFKA_ACL_JSON) == expected
    assert decode_acls(encode_acls(expected)) == expected
    assert encode_acls([AccessControlEntry("User:alice", "*", READ, ALLOW)]) == (
        b'{"version":1,"acls":[{"principal":"User:alice","permissionType":"Allow",'
        b'"operation":"Read","host":"*"}]}'
    )
    assert decode_acls(b"") == frozenset()
    with pytest.raises(ZkDataError):
        decode_acls(b'{"version":2,"acls":[]}')
    # An operation Kafka does not know reads as UNKNOWN, as AclEntry.fromBytes does.
    unknown = decode_acls(b'{"version":1,"acls":[{"principal":"User:a","permissionType":"Allow","operation":"Fly","host":"*"}]}')
    assert {e.operation for e in unknown} == {AclOperation.UNKNOWN}


def test_kafka_names() -> None:
    assert [operation_name(o) for o in AclOperation if o > AclOperation.ANY] == [
        "All", "Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction",
        "DescribeConfigs", "AlterConfigs", "IdempotentWrite", "CreateTokens", "DescribeTokens",
    ]
    assert [resource_type_name(t) for t in ResourceType if t > ResourceType.ANY] == [
        "Topic", "Group", "Cluster", "TransactionalId", "DelegationToken", "User",
    ]
    assert parse_operation("CLUSTERACTION") is AclOperation.CLUSTER_ACTION
    assert parse_operation("ClusterAction") is AclOperation.CLUSTER_ACTION


def test_acl_paths_as_kafka() -> None:
    # Kafka's LiteralAclStoreTest and ExtendedAclStoreTest.
    literal = ResourcePattern(TOPIC, "some-topic", LITERAL)
    prefixed = ResourcePattern(TOPIC, "some-topic", PREFIXED)
    assert acl_resource_type_path(LITERAL, TOPIC) == "/kafka-acl/Topic"
    assert acl_resource_type_path(PREFIXED, TOPIC) == "/kafka-acl-extended/prefixed/Topic"
    assert acl_znode_path(literal) == "/kafka-acl/Topic/some-topic"
    assert acl_znode_path(ResourcePattern(ResourceType.TRANSACTIONAL_ID, "tx", PREFIXED)) == (
        "/kafka-acl-extended/prefixed/TransactionalId/tx"
    )
    for resource in (literal, prefixed, ResourcePattern(ResourceType.CLUSTER, "kafka-cluster", LITERAL)):
        assert resource_of_acl_znode_path(acl_znode_path(resource)) == resource
    assert resource_of_acl_znode_path("/kafka-acl/Topic") is None
    assert resource_of_acl_znode_path("/kafka-acl/Bogus/x") is None

    assert acl_change_path(LITERAL) == "/kafka-acl-changes/acl_changes_"
    assert acl_change_path(PREFIXED) == "/kafka-acl-extended-changes/acl_changes_"
    assert encode_acl_change(literal) == b"TOPIC:some-topic"
    assert decode_literal_acl_change(encode_acl_change(literal)) == literal
    two_part = ResourcePattern(ResourceType.GROUP, "PREFIXED:this, including the PREFIXED part, is a valid two part group name", LITERAL)
    assert decode_literal_acl_change(b"GROUP:" + two_part.name.encode()) == two_part
    assert json.loads(encode_acl_change(prefixed)) == {
        "version": 1, "resourceType": "TOPIC", "name": "some-topic", "patternType": "PREFIXED"
    }
    assert decode_extended_acl_change(encode_acl_change(prefixed)) == prefixed


def test_names_zookeeper_cannot_hold_are_refused() -> None:
    def binding(name: str, **kw: object) -> AclBinding:
        fields: dict[str, object] = dict(
            resource_type=ResourceType.GROUP, resource_name=name, pattern_type=LITERAL,
            principal="User:a", host="*", operation=READ, permission_type=ALLOW,
        )
        fields.update(kw)
        return AclBinding(**fields)  # type: ignore[arg-type]

    check_storable(binding("group-1"))
    for name in ("a/b", "", ".", "..", "a\x00", "a\x7f", "smile\U0001f600"):
        with pytest.raises(ValueError):
            check_storable(binding(name))
    for kw in ({"operation": AclOperation.ANY}, {"permission_type": AclPermissionType.ANY},
               {"pattern_type": PatternType.MATCH}, {"resource_type": ResourceType.ANY}, {"principal": "alice"}):
        with pytest.raises(ValueError):
            check_storable(binding("g", **kw))


# ---- plans of writes ------------------------------------------------------------------------


def test_plan_creates_parents_then_cleans_them_up() -> None:
    entity = "users/alice/clients/app"
    absent = {p: ZnodeState(False) for p in ("/config/users/alice", "/config/users/alice/clients", "/config/users/alice/clients/app")}
    plan = plan_entity_alter(absent, {entity: {"consumer_byte_rate": "10"}})
    assert [(op.kind, op.path) for op in plan.ops] == [
        ("create", "/config/users/alice"),
        ("create", "/config/users/alice/clients"),
        ("create", "/config/users/alice/clients/app"),
        ("create_sequential", "/config/changes/config_change_"),
    ]
    assert plan.ops[0].data == b""  # a parent, as Kafka's createRecursive leaves it
    assert json.loads(plan.ops[3].data) == {"version": 2, "entity_path": "users/alice/clients/app"}
    assert plan.configs == {entity: {"consumer_byte_rate": "10"}}

    # Removing the last key deletes the node, and the parents it leaves empty (Kafka's
    # tryCleanQuotaNodes), deepest first, each at the version read.
    present = {
        "/config/users/alice": ZnodeState(True, 0, b"", frozenset({"clients"})),
        "/config/users/alice/clients": ZnodeState(True, 0, b"", frozenset({"app"})),
        "/config/users/alice/clients/app": ZnodeState(True, 3, b'{"version":1,"config":{"consumer_byte_rate":"10"}}'),
    }
    plan = plan_entity_alter(present, {entity: {"consumer_byte_rate": None}})
    assert [(op.kind, op.path, op.version) for op in plan.ops[:3]] == [
        ("delete", "/config/users/alice/clients/app", 3),
        ("delete", "/config/users/alice/clients", 0),
        ("delete", "/config/users/alice", 0),
    ]
    # A user with configs of its own keeps its node; a client id beside keeps `clients`.
    with_configs = dict(present)
    with_configs["/config/users/alice"] = ZnodeState(True, 5, b'{"version":1,"config":{"a":"1"}}', frozenset({"clients"}))
    plan = plan_entity_alter(with_configs, {entity: {"consumer_byte_rate": None}})
    assert [op.path for op in plan.ops if op.kind == "delete"] == ["/config/users/alice/clients/app", "/config/users/alice/clients"]
    # Emptying a user with client ids below writes an empty config rather than delete.
    plan = plan_entity_alter({"/config/users/alice": with_configs["/config/users/alice"]}, {"users/alice": {"a": None}})
    assert [(op.kind, op.path, op.data, op.version) for op in plan.ops[:1]] == [
        ("set", "/config/users/alice", b'{"version":1,"config":{}}', 5)
    ]
    # Nothing changes: nothing is written, not even a notification.
    assert plan_entity_alter(present, {entity: {"consumer_byte_rate": "10"}}).ops == ()


def test_plan_acl_change() -> None:
    topic = ResourcePattern(TOPIC, "orders", LITERAL)
    entry = AccessControlEntry("User:alice", "*", READ, ALLOW)
    other = AccessControlEntry("User:bob", "*", READ, DENY)
    plan = plan_acl_change({topic: ZnodeState(False)}, add={topic: [entry]})
    assert plan.ops == (
        ZkOp("create", "/kafka-acl/Topic/orders", encode_acls([entry])),
        ZkOp("create_sequential", "/kafka-acl-changes/acl_changes_", b"TOPIC:orders"),
    )
    both = ZnodeState(True, 7, encode_acls([entry, other]))
    plan = plan_acl_change({topic: both}, remove={topic: [entry]})
    assert plan.ops[0] == ZkOp("set", "/kafka-acl/Topic/orders", encode_acls([other]), 7)
    plan = plan_acl_change({topic: both}, remove={topic: [entry, other]})
    assert plan.ops[0] == ZkOp("delete", "/kafka-acl/Topic/orders", version=7)
    assert plan.acls == {topic: frozenset()}
    assert plan_acl_change({topic: both}, add={topic: [entry]}).ops == ()


# ---- garbage in: only ZkDataError ----------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
acl_like = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 1, 2, "1", None]),
     "acls": st.lists(st.dictionaries(st.sampled_from(["principal", "permissionType", "operation", "host"]), json_values), max_size=3) | json_values},
)
garbage = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    acl_like.map(lambda v: json.dumps(v).encode()),
)


@given(garbage)
@settings(max_examples=400, deadline=None)
def test_garbage_is_only_zk_data_error(data: bytes) -> None:
    for decode in (decode_acls, decode_entity_configs, decode_literal_acl_change, decode_extended_acl_change):
        try:
            decode(data)
        except ZkDataError:
            pass
    text = data.decode("utf-8", "replace")
    for parse in (entity_of_znode_path, desanitize):
        for candidate in (text, f"/config/users/{text}", f"/config/users/a/clients/{text}"):
            try:
                parse(candidate)
            except ZkDataError:
                pass


# ---- the stores on a real ZooKeeper ---------------------------------------------------------

SESSION_TIMEOUT_MS = 2000
WAIT = 10.0  # every wait for another session's watch is bounded by this


class StoreNode:
    """What ClusterNode does for the stores: one session, both stores running, watch
    events routed to them, a resync after the connection came back."""

    def __init__(self, connect: str) -> None:
        self.session = ZkSession(connect, session_timeout_ms=SESSION_TIMEOUT_MS, connection_timeout_ms=5000)
        self.configs = ZkEntityConfigs(self.session)
        self.acls = ZkAclStore(self.session)
        self.states: list[str] = []
        self.resynced = 0

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.session.start()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.configs.run)
                await nursery.start(self.acls.run)
                nursery.start_soon(self._events, nursery)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self.session.close()

    async def _events(self, nursery: trio.Nursery) -> None:
        suspended = False
        async for event in self.session.events:
            if isinstance(event, WatchEvent):
                assert self.configs.on_watch(event) or self.acls.on_watch(event), event
            elif isinstance(event, SessionEvent):
                self.states.append(event.state)
                if event.state in ("SUSPENDED", "LOST"):
                    suspended = True
                elif event.state == "CONNECTED" and suspended:
                    suspended = False
                    nursery.start_soon(self._resync)

    async def _resync(self) -> None:
        await self.configs.resync()
        await self.acls.resync()
        self.resynced += 1


@asynccontextmanager
async def running(*connects: str) -> AsyncIterator[list[StoreNode]]:
    nodes = [StoreNode(c) for c in connects]
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)
        yield nodes
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def raw_session(connect: str) -> AsyncIterator[ZkSession]:
    session = ZkSession(connect, session_timeout_ms=10_000, connection_timeout_ms=5000)
    await session.start()
    try:
        yield session
    finally:
        await session.close()


async def eventually(predicate: Callable[[], object], timeout: float = WAIT) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def notifications(session: ZkSession, directory: str) -> list[bytes]:
    out = []
    for child in sorted(await session.children(directory)):
        data, _ = await session.get(f"{directory}/{child}")
        out.append(data)
    return out


def binding(resource: ResourcePattern, principal: str = "User:alice", operation: AclOperation = READ,
            permission: AclPermissionType = ALLOW, host: str = "*") -> AclBinding:
    return AclBinding(resource.resource_type, resource.name, resource.pattern_type, principal, host, operation, permission)


@pytest.fixture
def connect(zookeeper, zk_chroot: str) -> str:  # noqa: ANN001 - the harness' server
    return zookeeper.connect_string + zk_chroot


async def test_entity_configs_reach_the_other_broker(connect: str) -> None:
    async with running(connect, connect) as (a, b), raw_session(connect) as raw:
        seen: list[str] = []
        b.configs.subscribe(seen.append)
        scram = "salt=c2FsdA==,stored_key=a2V5,server_key=c2tleQ==,iterations=4096"
        await a.configs.alter({
            "users/alice": {"SCRAM-SHA-256": scram, "producer_byte_rate": "1024"},
            "users/alice/clients/app 1": {"consumer_byte_rate": "10"},
            "clients/<default>": {"request_percentage": "50"},
        })
        # The writer sees its write at once; the other broker by its watch.
        assert a.configs.get("users/alice") == {"SCRAM-SHA-256": scram, "producer_byte_rate": "1024"}
        await eventually(lambda: len(dict(b.configs.items())) == 3)
        assert dict(b.configs.items()) == dict(a.configs.items())
        assert b.configs.get("users/alice/clients/app 1") == {"consumer_byte_rate": "10"}
        assert set(seen) == {"users/alice", "users/alice/clients/app 1", "clients/<default>"}

        # Kafka's znodes, and a notification per entity.
        data, _ = await raw.get("/config/users/alice/clients/app%201")
        assert json.loads(data) == {"version": 1, "config": {"consumer_byte_rate": "10"}}
        data, _ = await raw.get("/config/clients/<default>")
        assert json.loads(data) == {"version": 1, "config": {"request_percentage": "50"}}
        changes = [json.loads(d) for d in await notifications(raw, "/config/changes")]
        assert sorted(c["entity_path"] for c in changes) == ["clients/<default>", "users/alice", "users/alice/clients/app%201"]
        assert {c["version"] for c in changes} == {2}

        # Removing the client id's only key deletes its znode and the `clients` node.
        await a.configs.alter({"users/alice/clients/app 1": {"consumer_byte_rate": None}})
        await eventually(lambda: not b.configs.get("users/alice/clients/app 1"))
        assert await raw.exists("/config/users/alice/clients") is None
        assert await raw.exists("/config/users/alice") is not None
        # A change made outside kwire (Kafka's tools) is seen too.
        await raw.set("/config/users/alice", b'{"version":1,"config":{"producer_byte_rate":"7"}}')
        await eventually(lambda: b.configs.get("users/alice") == {"producer_byte_rate": "7"})
        await eventually(lambda: a.configs.get("users/alice") == {"producer_byte_rate": "7"})
        await b.configs.alter({"users/alice": {"producer_byte_rate": None}, "clients/<default>": {"request_percentage": None}})
        await eventually(lambda: not list(a.configs.items()))
        assert await raw.children("/config/users") == []
        assert len(await raw.children("/config/changes")) == 6


async def test_acls_reach_the_other_broker(connect: str) -> None:
    async with running(connect, connect) as (a, b), raw_session(connect) as raw:
        changed = []
        b.acls.subscribe(lambda: changed.append(1))
        orders = ResourcePattern(TOPIC, "orders", LITERAL)
        group = ResourcePattern(ResourceType.GROUP, "app-", PREFIXED)
        cluster = ResourcePattern(ResourceType.CLUSTER, "kafka-cluster", LITERAL)
        bindings = {
            binding(orders),
            binding(orders, "User:bob", AclOperation.WRITE, DENY, "10.0.0.1"),
            binding(group),
            binding(cluster, operation=AclOperation.IDEMPOTENT_WRITE),
        }
        await a.acls.add(bindings)
        assert set(a.acls.bindings()) == bindings
        await eventually(lambda: set(b.acls.bindings()) == bindings)
        assert changed

        data, _ = await raw.get("/kafka-acl/Topic/orders")
        assert json.loads(data) == {"version": 1, "acls": [
            {"principal": "User:alice", "permissionType": "Allow", "operation": "Read", "host": "*"},
            {"principal": "User:bob", "permissionType": "Deny", "operation": "Write", "host": "10.0.0.1"},
        ]}
        data, _ = await raw.get("/kafka-acl-extended/prefixed/Group/app-")
        assert decode_acls(data) == {AccessControlEntry("User:alice", "*", READ, ALLOW)}
        assert sorted(await notifications(raw, "/kafka-acl-changes")) == [b"CLUSTER:kafka-cluster", b"TOPIC:orders"]
        assert [json.loads(d) for d in await notifications(raw, "/kafka-acl-extended-changes")] == [
            {"version": 1, "resourceType": "GROUP", "name": "app-", "patternType": "PREFIXED"}
        ]

        await b.acls.remove([binding(orders), binding(group), binding(ResourcePattern(TOPIC, "absent", LITERAL))])
        left = bindings - {binding(orders), binding(group)}
        assert set(b.acls.bindings()) == left
        await eventually(lambda: set(a.acls.bindings()) == left)
        assert await raw.exists("/kafka-acl-extended/prefixed/Group/app-") is None  # no ACL left: deleted
        assert await raw.exists("/kafka-acl/Topic/orders") is not None

        # ACLs written by Kafka's own tools (upper-case names, other JSON layout) are read.
        await raw.create("/kafka-acl/Topic/payments", KAFKA_ACL_JSON)
        await eventually(lambda: len(a.acls.acls(ResourcePattern(TOPIC, "payments", LITERAL))) == 3)
        # A znode nobody can read is skipped with a warning; the rest stays.
        await raw.create("/kafka-acl/Topic/broken", b"{not json")
        await b.acls.add([binding(ResourcePattern(TOPIC, "after", LITERAL))])
        await eventually(lambda: any(x.resource_name == "after" for x in a.acls.bindings()))
        assert not any(x.resource_name == "broken" for x in a.acls.bindings())


async def test_concurrent_writers_lose_nothing(connect: str) -> None:
    """Two brokers, 20 writers each, read-modify-write on the same znodes: the
    conditional writes retry, and every change survives."""
    topic = ResourcePattern(TOPIC, "shared", LITERAL)
    async with running(connect, connect) as (a, b):
        async with trio.open_nursery() as nursery:
            for i in range(20):
                for node in (a, b):
                    name = f"User:{'a' if node is a else 'b'}{i}"
                    nursery.start_soon(node.acls.add, [binding(topic, name)])
                    nursery.start_soon(node.configs.alter, {"users/shared": {name: str(i)}})
        expected = {f"User:{w}{i}" for w in "ab" for i in range(20)}
        for node in (a, b):
            await eventually(lambda node=node: {e.principal for e in node.acls.acls(topic)} == expected)
            await eventually(lambda node=node: set(node.configs.get("users/shared")) == expected)


async def test_a_stale_version_is_refused(connect: str) -> None:
    async with raw_session(connect) as raw:
        await raw.create("/config/users/carol", b'{"version":1,"config":{"a":"1"}}', makepath=True)
        state = await read_state(raw, "/config/users/carol")
        await raw.set("/config/users/carol", b'{"version":1,"config":{"a":"2"}}')  # another writer
        plan = plan_entity_alter({"/config/users/carol": state}, {"users/carol": {"a": "3"}})
        await raw.ensure_path("/config/changes")
        with pytest.raises(BadVersionError):
            await commit(raw, plan.ops)
        # All or nothing: the notification of the refused multi was not written either.
        assert await raw.children("/config/changes") == []
        data, _ = await raw.get("/config/users/carol")
        assert decode_entity_configs(data) == {"a": "2"}


@pytest.mark.parametrize("cut_seconds", [0.3, 4.0], ids=["same-session", "expired-session"])
async def test_resync_after_reconnect(zookeeper, zk_chroot: str, cut_seconds: float) -> None:  # noqa: ANN001
    """A broker cut from ZooKeeper misses watches; once back (same session or a new one
    after expiry) it reads everything again, gone entries included."""
    connect = zookeeper.connect_string + zk_chroot
    with TcpProxy(zookeeper.port) as proxy:
        async with running(proxy.address + zk_chroot, connect) as (cut, other):
            kept = ResourcePattern(TOPIC, "kept", LITERAL)
            gone = ResourcePattern(TOPIC, "gone", LITERAL)
            await other.acls.add([binding(kept), binding(gone)])
            await other.configs.alter({"users/dave": {"a": "1"}, "users/erin": {"b": "2"}})
            await eventually(lambda: len(list(cut.acls.bindings())) == 2 and len(list(cut.configs.items())) == 2)

            proxy.cut()
            await eventually(lambda: "SUSPENDED" in cut.states)
            await other.acls.remove([binding(gone)])
            await other.acls.add([binding(ResourcePattern(ResourceType.GROUP, "new", PREFIXED))])
            await other.configs.alter({"users/erin": {"b": None}, "users/frank/clients/<default>": {"c": "3"}})
            await trio.sleep(cut_seconds)
            proxy.restore()

            await eventually(lambda: cut.resynced >= 1, timeout=30)
            if cut_seconds > SESSION_TIMEOUT_MS / 1000:
                assert "LOST" in cut.states
            assert set(cut.acls.bindings()) == set(other.acls.bindings())
            assert {x.resource_name for x in cut.acls.bindings()} == {"kept", "new"}
            assert dict(cut.configs.items()) == {"users/dave": {"a": "1"}, "users/frank/clients/<default>": {"c": "3"}}
            # And its watches work again.
            await other.configs.alter({"users/dave": {"a": "9"}})
            await eventually(lambda: cut.configs.get("users/dave") == {"a": "9"})


async def test_obsolete_notifications_are_purged(connect: str) -> None:
    async with running(connect) as (a,), raw_session(connect) as raw:
        await a.configs.alter({"clients/c1": {"a": "1"}, "clients/c2": {"a": "1"}})
        await a.acls.add([binding(ResourcePattern(TOPIC, "t", LITERAL))])
        assert len(await raw.children("/config/changes")) == 2
        # Young ones are kept (15 minutes, as Kafka's listener).
        assert await purge_obsolete_notifications(raw, "/config/changes", "config_change_") == 0
        await trio.sleep(0.05)
        assert await purge_obsolete_notifications(raw, "/config/changes", "config_change_", expiration_ms=0) == 2
        assert await purge_obsolete_notifications(raw, "/kafka-acl-changes", "acl_changes_", expiration_ms=0) == 1
        assert await raw.children("/config/changes") == []
        assert math.isfinite(a.configs._last_purge)  # the writer looked for some after writing


# ---- a cluster: what one broker is told, every broker enforces -------------------------------


def test_acls_and_quotas_created_through_one_broker_hold_on_every_broker(kwire_cluster_factory) -> None:  # noqa: ANN001
    from cluster_harness import wait_until
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    from kio.schema.alter_client_quotas.v1 import request as alter_quotas
    from kio.schema.create_acls.v3 import request as create_acls
    from kio.schema.describe_acls.v3 import request as describe_acls
    from kio.schema.describe_client_quotas.v1 import request as describe_quotas
    from kio.static.primitive import f64, i8
    from raw_client import RawClient

    cluster = kwire_cluster_factory(3, overrides={
        "authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
        "allow.everyone.if.no.acl.found": "true",
    })
    # Every broker knows the controller before the admin client asks: a broker answers
    # Metadata as soon as it listens, with controller -1 until the election reaches it, and
    # librdkafka's AdminClient that saw -1 first did not ask again within 60 s (1 run in 3).
    from kwire.testing.cluster import metadata_brokers

    wait_until(
        lambda: all(metadata_brokers("127.0.0.1", cluster.broker(i).port)[1] >= 0 for i in (1, 2, 3)),
        timeout=30,
        message="every broker names the controller",
    )
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    # One partition led by each broker.
    for future in admin.create_topics([NewTopic("secret", 3, 1)], operation_timeout=30).values():
        future.result(timeout=60)  # beyond the broker's own operation timeout

    def creation(resource_type: ResourceType, name: str, pattern: PatternType, principal: str,
                 operation: AclOperation, permission: AclPermissionType) -> create_acls.AclCreation:
        return create_acls.AclCreation(
            resource_type=i8(resource_type), resource_name=name, resource_pattern_type=i8(pattern),
            principal=principal, host="*", operation=i8(operation), permission_type=i8(permission),
        )

    creations = (
        creation(TOPIC, "secret", LITERAL, "User:ANONYMOUS", AclOperation.WRITE, DENY),
        creation(TOPIC, "secret", LITERAL, "User:ANONYMOUS", AclOperation.DESCRIBE, ALLOW),
        creation(ResourceType.GROUP, "app-", PREFIXED, "User:alice", READ, ALLOW),
    )
    with RawClient(cluster.broker(1).port) as client:
        response = client.send(create_acls.CreateAclsRequest(creations=creations))
    assert [r.error_code.value for r in response.results] == [0, 0, 0], response

    any_acl = describe_acls.DescribeAclsRequest(
        resource_type_filter=i8(ResourceType.ANY), resource_name_filter=None, pattern_type_filter=i8(PatternType.ANY),
        principal_filter=None, host_filter=None, operation=i8(AclOperation.ANY), permission_type=i8(AclPermissionType.ANY),
    )

    def described(port: int) -> set[tuple[object, ...]]:
        with RawClient(port) as client:
            answer = client.send(any_acl)
        return {(r.resource_name, r.pattern_type, a.principal, a.operation, a.permission_type)
                for r in answer.resources for a in r.acls}

    expected = {(c.resource_name, c.resource_pattern_type, c.principal, c.operation, c.permission_type) for c in creations}
    for broker_id in cluster.ids:
        wait_until(lambda b=broker_id: described(cluster.broker(b).port) == expected, 10, message=f"ACLs on broker {broker_id}")

    # In force on every partition's leader: each broker refuses the write.
    errors: list[object] = []
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "message.timeout.ms": 20_000, "retries": 0})
    for partition in range(3):
        producer.produce("secret", b"x", partition=partition, on_delivery=lambda err, msg: errors.append(err))
    producer.flush(30)
    assert len(errors) == 3
    assert all(e is not None and e.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED for e in errors), errors

    # Quotas set through broker 2 are every broker's.
    request = alter_quotas.AlterClientQuotasRequest(
        entries=(
            alter_quotas.EntryData(
                entity=(alter_quotas.EntityData(entity_type="user", entity_name="alice"),),
                ops=(alter_quotas.OpData(key="producer_byte_rate", value=f64(1024.0), remove=False),),
            ),
            alter_quotas.EntryData(
                entity=(alter_quotas.EntityData(entity_type="client-id", entity_name=None),),
                ops=(alter_quotas.OpData(key="request_percentage", value=f64(50.0), remove=False),),
            ),
        ),
        validate_only=False,
    )
    with RawClient(cluster.broker(2).port) as client:
        answer = client.send(request)
    assert [e.error_code.value for e in answer.entries] == [0, 0], answer
    every_quota = describe_quotas.DescribeClientQuotasRequest(
        components=(describe_quotas.ComponentData(entity_type="user", match_type=i8(2), match=None),), strict=False
    )
    default_client = describe_quotas.DescribeClientQuotasRequest(
        components=(describe_quotas.ComponentData(entity_type="client-id", match_type=i8(1), match=None),), strict=True
    )

    def quotas(port: int) -> set[tuple[object, ...]]:
        found = set()
        with RawClient(port) as client:
            for query in (every_quota, default_client):
                for entry in client.send(query).entries:
                    for value in entry.values:
                        found.add((tuple((e.entity_type, e.entity_name) for e in entry.entity), value.key, float(value.value)))
        return found

    want = {
        ((("user", "alice"),), "producer_byte_rate", 1024.0),
        ((("client-id", None),), "request_percentage", 50.0),
    }
    for broker_id in cluster.ids:
        wait_until(lambda b=broker_id: quotas(cluster.broker(b).port) == want, 10, message=f"quotas on broker {broker_id}")
