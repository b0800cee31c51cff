"""The ACL authorizer alone (no broker): Kafka's AclAuthorizer rules over a real
LocalAclStore, and hypothesis against a naive reference that scans every ACL."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from kwire.config import BrokerConfig
from kwire.handlers.describe_acls import filter_matches
from kwire.security.acl import (
    CLUSTER_NAME,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
)
from kwire.security.acl_store import ACLS_FILE, LocalAclStore
from kwire.security.authorizer import (
    AUTHORIZED_OPERATIONS_OMITTED,
    SUPPORTED_OPERATIONS,
    AclAuthorizer,
    authorize,
    authorized_names,
    authorized_operations,
    operations_field,
)
from kwire.security.principal import ANONYMOUS, KafkaPrincipal

ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY
LITERAL, PREFIXED = PatternType.LITERAL, PatternType.PREFIXED
TOPIC, GROUP, CLUSTER = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER
Op = AclOperation
ALICE = "User:alice"
HOST = "10.0.0.1"


def acl(
    name: str,
    operation: AclOperation,
    permission: AclPermissionType = ALLOW,
    *,
    resource_type: ResourceType = TOPIC,
    pattern: PatternType = LITERAL,
    principal: str = ALICE,
    host: str = "*",
) -> AclBinding:
    return AclBinding(resource_type, name, pattern, principal, host, operation, permission)


def make_authorizer(tmp_path: Path, bindings: list[AclBinding], **config: str) -> AclAuthorizer:
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = LocalAclStore(tmp_path)
    trio.run(store.add, bindings)
    return AclAuthorizer(BrokerConfig(config), store)


def test_literal_prefixed_and_wildcard_names(tmp_path: Path) -> None:
    auth = make_authorizer(
        tmp_path,
        [
            acl("orders", Op.READ),
            acl("pay-", Op.WRITE, pattern=PREFIXED),
            acl("*", Op.DESCRIBE_CONFIGS),
        ],
    )
    assert auth.authorize(ALICE, HOST, Op.READ, TOPIC, "orders")
    assert not auth.authorize(ALICE, HOST, Op.READ, TOPIC, "orders2")  # literal is exact
    assert auth.authorize(ALICE, HOST, Op.WRITE, TOPIC, "pay-in")
    assert auth.authorize(ALICE, HOST, Op.WRITE, TOPIC, "pay-")
    assert not auth.authorize(ALICE, HOST, Op.WRITE, TOPIC, "pay")  # shorter than the prefix
    assert not auth.authorize(ALICE, HOST, Op.WRITE, TOPIC, "xpay-in")
    assert auth.authorize(ALICE, HOST, Op.DESCRIBE_CONFIGS, TOPIC, "anything")
    # A pattern applies to its resource type only.
    assert not auth.authorize(ALICE, HOST, Op.READ, GROUP, "orders")
    # A PREFIXED `*` is a prefix like any other, not a wildcard.
    auth2 = make_authorizer(tmp_path / "2", [acl("*", Op.READ, pattern=PREFIXED)])
    assert not auth2.authorize(ALICE, HOST, Op.READ, TOPIC, "orders")
    assert auth2.authorize(ALICE, HOST, Op.READ, TOPIC, "*orders")


def test_deny_wins_over_allow(tmp_path: Path) -> None:
    auth = make_authorizer(
        tmp_path,
        [
            acl("pay-", Op.ALL, pattern=PREFIXED),
            acl("pay-secret", Op.READ, DENY),
            acl("*", Op.WRITE, DENY, principal="User:*", host="10.0.0.9"),
        ],
    )
    assert auth.authorize(ALICE, HOST, Op.READ, TOPIC, "pay-open")
    assert not auth.authorize(ALICE, HOST, Op.READ, TOPIC, "pay-secret")
    # The deny names READ only: WRITE and DESCRIBE (implied by the prefixed ALL) stay.
    assert auth.authorize(ALICE, HOST, Op.WRITE, TOPIC, "pay-secret")
    assert auth.authorize(ALICE, HOST, Op.DESCRIBE, TOPIC, "pay-secret")
    # Everyone from 10.0.0.9 is denied WRITE on every topic.
    assert not auth.authorize(ALICE, "10.0.0.9", Op.WRITE, TOPIC, "pay-open")
    assert auth.authorize(ALICE, "10.0.0.9", Op.READ, TOPIC, "pay-open")


def test_a_deny_of_all_denies_every_operation(tmp_path: Path) -> None:
    auth = make_authorizer(tmp_path, [acl("t", Op.ALL), acl("t", Op.ALL, DENY, host=HOST)])
    for op in SUPPORTED_OPERATIONS[TOPIC]:
        assert not auth.authorize(ALICE, HOST, op, TOPIC, "t")
        assert auth.authorize(ALICE, "10.0.0.2", op, TOPIC, "t")


def test_implied_operations(tmp_path: Path) -> None:
    for granted in (Op.READ, Op.WRITE, Op.DELETE, Op.ALTER):
        auth = make_authorizer(tmp_path / granted.name, [acl("t", granted)])
        assert auth.authorize(ALICE, HOST, Op.DESCRIBE, TOPIC, "t"), granted
        others = {Op.READ, Op.WRITE, Op.DELETE, Op.ALTER, Op.CREATE} - {granted}
        assert not any(auth.authorize(ALICE, HOST, op, TOPIC, "t") for op in others)
    auth = make_authorizer(tmp_path / "configs", [acl("t", Op.ALTER_CONFIGS)])
    assert auth.authorize(ALICE, HOST, Op.DESCRIBE_CONFIGS, TOPIC, "t")
    assert not auth.authorize(ALICE, HOST, Op.DESCRIBE, TOPIC, "t")
    # DESCRIBE implies nothing; a DENY of READ does not deny the DESCRIBE READ implied.
    auth = make_authorizer(tmp_path / "describe", [acl("t", Op.DESCRIBE)])
    assert not auth.authorize(ALICE, HOST, Op.READ, TOPIC, "t")
    auth = make_authorizer(tmp_path / "deny-describe", [acl("t", Op.READ), acl("t", Op.DESCRIBE, DENY)])
    assert auth.authorize(ALICE, HOST, Op.READ, TOPIC, "t")
    assert not auth.authorize(ALICE, HOST, Op.DESCRIBE, TOPIC, "t")


def test_principal_and_host_match_exactly_or_by_wildcard(tmp_path: Path) -> None:
    auth = make_authorizer(
        tmp_path,
        [
            acl("t", Op.READ, host=HOST),
            acl("u", Op.READ, principal="User:*"),
            acl("v", Op.READ, principal="Group:alice"),
        ],
    )
    assert auth.authorize(ALICE, HOST, Op.READ, TOPIC, "t")
    assert not auth.authorize(ALICE, "10.0.0.2", Op.READ, TOPIC, "t")
    assert not auth.authorize("User:bob", HOST, Op.READ, TOPIC, "t")
    assert auth.authorize("User:bob", "10.0.0.2", Op.READ, TOPIC, "u")
    assert auth.authorize(KafkaPrincipal("User", "carol"), HOST, Op.READ, TOPIC, "u")
    assert not auth.authorize(ALICE, HOST, Op.READ, TOPIC, "v")  # the principal type counts


def test_super_users_and_allow_everyone(tmp_path: Path) -> None:
    bindings = [acl("t", Op.READ, DENY, principal="User:*")]
    auth = make_authorizer(tmp_path, bindings, **{"super.users": "User:admin;User:ops"})
    assert auth.authorize("User:admin", HOST, Op.READ, TOPIC, "t")  # over a deny
    assert auth.authorize("User:ops", HOST, Op.ALTER, CLUSTER, CLUSTER_NAME)
    assert not auth.authorize(ALICE, HOST, Op.READ, TOPIC, "t")
    # No ACL on a resource: allow.everyone.if.no.acl.found decides (default false).
    assert not auth.authorize(ALICE, HOST, Op.READ, TOPIC, "other")
    everyone = make_authorizer(tmp_path / "e", bindings, **{"allow.everyone.if.no.acl.found": "true"})
    assert everyone.authorize(ALICE, HOST, Op.READ, TOPIC, "other")
    assert not everyone.authorize(ALICE, HOST, Op.READ, TOPIC, "t")
    # Any ACL on the resource, even for someone else, turns the default off.
    other = make_authorizer(
        tmp_path / "o", [acl("t", Op.READ, principal="User:bob")], **{"allow.everyone.if.no.acl.found": "true"}
    )
    assert not other.authorize(ALICE, HOST, Op.READ, TOPIC, "t")


def test_the_index_follows_the_store(tmp_path: Path) -> None:
    store = LocalAclStore(tmp_path)
    auth = AclAuthorizer(BrokerConfig({}), store)
    assert not auth.authorize(ALICE, HOST, Op.READ, TOPIC, "t")
    trio.run(store.add, [acl("t", Op.READ)])
    assert auth.authorize(ALICE, HOST, Op.READ, TOPIC, "t")
    trio.run(store.remove, [acl("t", Op.READ)])
    assert not auth.authorize(ALICE, HOST, Op.READ, TOPIC, "t")


def test_store_persists_in_its_file(tmp_path: Path) -> None:
    bindings = [acl("pay-", Op.WRITE, pattern=PREFIXED), acl(CLUSTER_NAME, Op.ALTER, resource_type=CLUSTER)]
    store = LocalAclStore(tmp_path)
    trio.run(store.add, bindings)
    saved = json.loads((tmp_path / ACLS_FILE).read_text())
    assert {e["name"] for e in saved["acls"]} == {"pay-", CLUSTER_NAME}
    assert set(LocalAclStore(tmp_path).bindings()) == set(bindings)
    trio.run(store.remove, bindings[:1])
    assert set(LocalAclStore(tmp_path).bindings()) == set(bindings[1:])


def test_authorize_by_resource_type(tmp_path: Path) -> None:
    """Kafka's authorizeByResourceType, as InitProducerId uses it (WRITE on any topic)."""
    def allowed(bindings: list[AclBinding], **config: str) -> bool:
        auth = make_authorizer(tmp_path / str(len(list(tmp_path.iterdir()))), bindings, **config)
        return auth.authorize_by_resource_type(ALICE, HOST, Op.WRITE, TOPIC)

    assert not allowed([])
    assert allowed([], **{"allow.everyone.if.no.acl.found": "true"})
    assert allowed([acl("t", Op.WRITE)])
    assert allowed([acl("t", Op.ALL)])
    assert not allowed([acl("t", Op.READ)])
    assert not allowed([acl("t", Op.WRITE), acl("t", Op.WRITE, DENY)])
    assert not allowed([acl("t", Op.WRITE), acl("t", Op.ALL, DENY, pattern=PREFIXED)])
    assert allowed([acl("t", Op.WRITE), acl("tx", Op.WRITE, DENY, pattern=PREFIXED)])
    assert not allowed([acl("pay-", Op.WRITE, pattern=PREFIXED), acl("pay", Op.WRITE, DENY, pattern=PREFIXED)])
    assert not allowed([acl("*", Op.WRITE), acl("*", Op.WRITE, DENY)])
    assert allowed([acl("*", Op.WRITE), acl("t", Op.WRITE, DENY)])
    assert allowed([], **{"super.users": ALICE})


def _context(auth: AclAuthorizer | None) -> SimpleNamespace:
    return SimpleNamespace(broker=SimpleNamespace(authorizer=auth), principal=KafkaPrincipal.parse(ALICE), client_host=HOST)


def test_module_functions_with_and_without_an_authorizer(tmp_path: Path) -> None:
    none = _context(None)
    assert authorize(none, Op.WRITE, TOPIC, "t")
    assert authorized_names(none, Op.READ, TOPIC, ["a", "b"]) == {"a", "b"}
    # With no authorizer every supported operation (Kafka: bits 3-8, 10, 11 of a topic).
    assert authorized_operations(none, TOPIC, "t") == sum(1 << op for op in (3, 4, 5, 6, 7, 8, 10, 11))
    assert authorized_operations(none, CLUSTER, CLUSTER_NAME) == sum(1 << op for op in (5, 7, 8, 9, 10, 11, 12))
    assert authorized_operations(none, GROUP, "g") == sum(1 << op for op in (3, 6, 8))
    assert AUTHORIZED_OPERATIONS_OMITTED == -2147483648

    ctx = _context(make_authorizer(tmp_path, [acl("a", Op.READ), acl("b", Op.ALL), acl("b", Op.DELETE, DENY)]))
    assert authorize(ctx, Op.READ, TOPIC, "a")
    assert not authorize(ctx, Op.WRITE, TOPIC, "a")
    assert authorized_names(ctx, Op.READ, TOPIC, ["a", "b", "c", "a", None]) == {"a", "b"}
    assert authorized_operations(ctx, TOPIC, "a") == operations_field([Op.READ, Op.DESCRIBE])
    assert authorized_operations(ctx, TOPIC, "b") == operations_field(set(SUPPORTED_OPERATIONS[TOPIC]) - {Op.DELETE})
    assert ANONYMOUS != ctx.principal


# Hypothesis: the index against a reference that scans every ACL with Kafka's rules.

NAMES = ["a", "ab", "abc", "b", "ba", "*", "abd"]
PRINCIPALS = [ALICE, "User:bob", "User:*"]
HOSTS = [HOST, "10.0.0.2", "*"]
OPS = [op for op in AclOperation if op not in (Op.UNKNOWN, Op.ANY)]

bindings_strategy = st.lists(
    st.builds(
        AclBinding,
        st.sampled_from([TOPIC, GROUP]),
        st.sampled_from(NAMES),
        st.sampled_from([LITERAL, PREFIXED]),
        st.sampled_from(PRINCIPALS),
        st.sampled_from(HOSTS),
        st.sampled_from(OPS),
        st.sampled_from([ALLOW, DENY]),
    ),
    max_size=12,
)


def reference(
    bindings: list[AclBinding], super_users: set[str], everyone: bool,
    principal: str, host: str, op: AclOperation, resource_type: ResourceType, name: str,
) -> bool:
    if principal in super_users:
        return True

    def applies(b: AclBinding) -> bool:
        if b.resource_type != resource_type:
            return False
        if b.pattern_type == LITERAL:
            return b.resource_name in (name, "*")
        return name.startswith(b.resource_name)

    acls = [b for b in bindings if applies(b)]
    if not acls:
        return everyone

    def matching(ops: set[AclOperation], permission: AclPermissionType) -> bool:
        return any(
            b.permission_type == permission
            and (b.operation in ops or b.operation == Op.ALL)
            and b.principal in (principal, "User:*")
            and b.host in (host, "*")
            for b in acls
        )

    implied = {
        Op.DESCRIBE: {Op.DESCRIBE, Op.READ, Op.WRITE, Op.DELETE, Op.ALTER},
        Op.DESCRIBE_CONFIGS: {Op.DESCRIBE_CONFIGS, Op.ALTER_CONFIGS},
    }.get(op, {op})
    return not matching({op}, DENY) and matching(implied, ALLOW)


@settings(max_examples=300, deadline=None)
@given(
    bindings=bindings_strategy,
    everyone=st.booleans(),
    principal=st.sampled_from([ALICE, "User:bob", "User:admin"]),
    host=st.sampled_from([HOST, "10.0.0.2"]),
    op=st.sampled_from(OPS),
    resource_type=st.sampled_from([TOPIC, GROUP]),
    name=st.sampled_from(NAMES[:5] + ["abcd", "c", ""]),
)
def test_index_agrees_with_a_scan_of_every_acl(
    tmp_path_factory: pytest.TempPathFactory,
    bindings: list[AclBinding], everyone: bool, principal: str, host: str,
    op: AclOperation, resource_type: ResourceType, name: str,
) -> None:
    store = LocalAclStore(tmp_path_factory.mktemp("acls"))
    trio.run(store.add, bindings)
    auth = AclAuthorizer(
        BrokerConfig({"super.users": "User:admin", "allow.everyone.if.no.acl.found": str(everyone).lower()}), store
    )
    expected = reference(bindings, {"User:admin"}, everyone, principal, host, op, resource_type, name)
    assert auth.authorize(principal, host, op, resource_type, name) == expected


FILTER_PATTERNS = [PatternType.ANY, PatternType.MATCH, LITERAL, PREFIXED]


@settings(max_examples=200, deadline=None)
@given(
    binding=bindings_strategy.filter(bool).map(lambda bs: bs[0]),
    name=st.sampled_from([None, *NAMES, "abcd"]),
    pattern=st.sampled_from(FILTER_PATTERNS),
)
def test_match_filters_find_the_acls_that_apply(binding: AclBinding, name: str | None, pattern: PatternType) -> None:
    """A MATCH filter on a name finds exactly the ACLs the authorizer applies to it;
    ANY and a specific pattern type find the pattern by its own name."""
    acl_filter = SimpleNamespace(
        resource_type_filter=ResourceType.ANY, resource_name_filter=name, pattern_type_filter=pattern,
        principal_filter=None, host_filter=None, operation=Op.ANY, permission_type=AclPermissionType.ANY,
    )
    matched = filter_matches(acl_filter, binding)
    if name is None:
        expected = pattern in (PatternType.ANY, PatternType.MATCH) or pattern == binding.pattern_type
    elif pattern == PatternType.MATCH:
        expected = (
            binding.resource_name in (name, "*")
            if binding.pattern_type == LITERAL
            else name.startswith(binding.resource_name)
        )
    else:
        expected = (pattern in (PatternType.ANY, binding.pattern_type)) and binding.resource_name == name
    assert matched == expected

