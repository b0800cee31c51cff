"""The ACL authorizer: Kafka's AclAuthorizer (ZooKeeper mode) semantics, sans-IO.

`AclAuthorizer` holds an index of its store's bindings, rebuilt whenever the store
says they changed. A check of (principal, host, operation, resource):

- a super user (`super.users`) may do everything;
- the ACLs that apply to a resource are the LITERAL ones on its name, the LITERAL
  ones on `*`, and the PREFIXED ones whose prefix begins its name;
- none at all: `allow.everyone.if.no.acl.found` decides;
- an entry matches a principal given as itself or `User:*`, a host given as itself
  or `*`; a matching DENY of the operation (or ALL) refuses;
- else a matching ALLOW of the operation (or ALL) grants, where READ, WRITE, DELETE
  and ALTER imply DESCRIBE, and ALTER_CONFIGS implies DESCRIBE_CONFIGS.

The module functions are what handlers call: with no authorizer configured
(`broker.authorizer is None`) they cost one attribute test.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kwire.security.acl import (
    CLUSTER_NAME,
    WILDCARD,
    AclBinding,
    AclOperation,
    AclPermissionType,
    AclStore,
    PatternType,
    ResourceType,
)
from kwire.security.principal import KafkaPrincipal

if TYPE_CHECKING:
    from kwire.config import BrokerConfig

log = logging.getLogger("kwire.authorizer")

WILDCARD_PRINCIPAL = "User:*"
# Kafka's authorized-operations value when a request did not ask for it.
AUTHORIZED_OPERATIONS_OMITTED = -(2**31)

# What Kafka grants implicitly: an ALLOW of any of these operations allows the key.
_IMPLIED_BY: dict[AclOperation, tuple[AclOperation, ...]] = {
    AclOperation.DESCRIBE: (
        AclOperation.DESCRIBE,
        AclOperation.READ,
        AclOperation.WRITE,
        AclOperation.DELETE,
        AclOperation.ALTER,
    ),
    AclOperation.DESCRIBE_CONFIGS: (AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS),
}

# The operations each resource type knows (Kafka's AclEntry.supportedOperations):
# the bits of an authorized-operations field.
SUPPORTED_OPERATIONS: dict[ResourceType, tuple[AclOperation, ...]] = {
    ResourceType.TOPIC: (
        AclOperation.READ,
        AclOperation.WRITE,
        AclOperation.CREATE,
        AclOperation.DESCRIBE,
        AclOperation.DELETE,
        AclOperation.ALTER,
        AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS,
    ),
    ResourceType.GROUP: (AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE),
    ResourceType.CLUSTER: (
        AclOperation.CREATE,
        AclOperation.CLUSTER_ACTION,
        AclOperation.DESCRIBE_CONFIGS,
        AclOperation.ALTER_CONFIGS,
        AclOperation.IDEMPOTENT_WRITE,
        AclOperation.ALTER,
        AclOperation.DESCRIBE,
    ),
    ResourceType.TRANSACTIONAL_ID: (AclOperation.DESCRIBE, AclOperation.WRITE),
    ResourceType.DELEGATION_TOKEN: (AclOperation.DESCRIBE,),
    ResourceType.USER: (AclOperation.CREATE_TOKENS, AclOperation.DESCRIBE_TOKENS),
}


def operations_field(operations: Iterable[AclOperation]) -> int:
    """Kafka's 32-bit field of operations: bit i for the operation of code i."""
    field = 0
    for operation in operations:
        field |= 1 << operation
    return field


class AclAuthorizer:
    """Kafka's AclAuthorizer over an AclStore's bindings."""

    def __init__(self, config: BrokerConfig, store: AclStore) -> None:
        self.super_users = config.super_users
        self.allow_everyone_if_no_acl_found: bool = config["allow.everyone.if.no.acl.found"]
        self._store = store
        # (resource type, name) -> the LITERAL bindings on it (`*` included).
        self._literal: dict[tuple[ResourceType, str], list[AclBinding]] = {}
        # resource type -> prefix -> the PREFIXED bindings; and the prefix lengths in
        # use, so a check looks up one slice of the name per length, not every prefix.
        self._prefixed: dict[ResourceType, dict[str, list[AclBinding]]] = {}
        self._prefix_lengths: dict[ResourceType, list[int]] = {}
        # resource type -> all its bindings (authorize_by_resource_type scans them).
        self._by_type: dict[ResourceType, list[AclBinding]] = {}
        self.reindex()
        # A change marks the index stale; the next check rebuilds it once. A cluster's
        # first read of /kafka-acl calls back per znode: rebuilding at each would be
        # quadratic in the number of resources with ACLs.
        self._stale = False
        store.subscribe(self._changed)

    def _changed(self) -> None:
        self._stale = True

    def reindex(self) -> None:
        """Rebuild the index from the store."""
        self._stale = False
        literal: dict[tuple[ResourceType, str], list[AclBinding]] = {}
        prefixed: dict[ResourceType, dict[str, list[AclBinding]]] = {}
        by_type: dict[ResourceType, list[AclBinding]] = {}
        for binding in self._store.bindings():
            by_type.setdefault(binding.resource_type, []).append(binding)
            if binding.pattern_type == PatternType.LITERAL:
                literal.setdefault((binding.resource_type, binding.resource_name), []).append(binding)
            elif binding.pattern_type == PatternType.PREFIXED:
                prefixed.setdefault(binding.resource_type, {}).setdefault(binding.resource_name, []).append(binding)
        # Swapped in whole: a check never sees half an update.
        self._literal = literal
        self._prefixed = prefixed
        self._prefix_lengths = {t: sorted({len(p) for p in by_prefix}) for t, by_prefix in prefixed.items()}
        self._by_type = by_type

    def matching_acls(self, resource_type: ResourceType, name: str) -> list[AclBinding]:
        """The bindings that apply to one resource: literal, `*`, and prefixes of its name."""
        if self._stale:
            self.reindex()
        found: list[AclBinding] = []
        literal = self._literal.get((resource_type, name))
        if literal:
            found.extend(literal)
        if name != WILDCARD:
            wildcard = self._literal.get((resource_type, WILDCARD))
            if wildcard:
                found.extend(wildcard)
        by_prefix = self._prefixed.get(resource_type)
        if by_prefix:
            for length in self._prefix_lengths[resource_type]:
                if length > len(name):
                    break
                acls = by_prefix.get(name[:length])
                if acls:
                    found.extend(acls)
        return found

    def is_super_user(self, principal: KafkaPrincipal | str) -> bool:
        return str(principal) in self.super_users

    def authorize(
        self,
        principal: KafkaPrincipal | str,
        host: str,
        operation: AclOperation,
        resource_type: ResourceType,
        name: str,
    ) -> bool:
        principal_text = str(principal)
        if principal_text in self.super_users:
            return True
        acls = self.matching_acls(resource_type, name)
        if not acls:
            allowed = self.allow_everyone_if_no_acl_found
        else:
            allowed = not _matches(acls, principal_text, host, (operation,), AclPermissionType.DENY) and _matches(
                acls, principal_text, host, _IMPLIED_BY.get(operation, (operation,)), AclPermissionType.ALLOW
            )
        if not allowed:
            log.debug("%s from %s denied %s on %s:%s", principal_text, host, operation.name, resource_type.name, name)
        return allowed

    def authorize_by_resource_type(
        self, principal: KafkaPrincipal | str, host: str, operation: AclOperation, resource_type: ResourceType
    ) -> bool:
        """Whether the principal may do `operation` on some resource of the type (Kafka's
        authorizeByResourceType: an ALLOW not dominated by a DENY of the same or a
        shorter prefix), e.g. an idempotent producer's WRITE on any topic."""
        principal_text = str(principal)
        if principal_text in self.super_users:
            return True
        deny_literals: set[str] = set()
        deny_prefixes: set[str] = set()
        allow_literals: set[str] = set()
        allow_prefixes: set[str] = set()
        if self._stale:
            self.reindex()
        for acl in self._by_type.get(resource_type, ()):
            if (
                acl.principal not in (principal_text, WILDCARD_PRINCIPAL)
                or acl.host not in (host, WILDCARD)
                or acl.operation not in (operation, AclOperation.ALL)
            ):
                continue
            literal = acl.pattern_type == PatternType.LITERAL
            if acl.permission_type == AclPermissionType.DENY:
                (deny_literals if literal else deny_prefixes).add(acl.resource_name)
            elif acl.permission_type == AclPermissionType.ALLOW:
                (allow_literals if literal else allow_prefixes).add(acl.resource_name)
        if WILDCARD in deny_literals:
            return False
        if self.allow_everyone_if_no_acl_found:
            return True

        def dominated(name: str) -> bool:
            return any(name.startswith(prefix) for prefix in deny_prefixes)

        return any(not dominated(p) for p in allow_prefixes) or any(
            name == WILDCARD or (name not in deny_literals and not dominated(name)) for name in allow_literals
        )

    def authorized_operations(
        self, principal: KafkaPrincipal | str, host: str, resource_type: ResourceType, name: str
    ) -> int:
        return operations_field(
            op
            for op in SUPPORTED_OPERATIONS.get(resource_type, ())
            if self.authorize(principal, host, op, resource_type, name)
        )


def _matches(
    acls: list[AclBinding],
    principal: str,
    host: str,
    operations: tuple[AclOperation, ...],
    permission: AclPermissionType,
) -> bool:
    for acl in acls:
        if (
            acl.permission_type == permission
            and (acl.operation in operations or acl.operation == AclOperation.ALL)
            and (acl.principal == principal or acl.principal == WILDCARD_PRINCIPAL)
            and (acl.host == host or acl.host == WILDCARD)
        ):
            return True
    return False


# What handlers call: `context` is a RequestContext (principal, client_host, broker).


def authorize(context: Any, operation: AclOperation, resource_type: ResourceType, name: str) -> bool:
    """Whether the request's principal may do `operation` on the resource."""
    authorizer = context.broker.authorizer
    if authorizer is None:
        return True
    return authorizer.authorize(context.principal, context.client_host, operation, resource_type, name)


def authorize_cluster(context: Any, operation: AclOperation) -> bool:
    """`operation` on the cluster resource (kafka-cluster)."""
    authorizer = context.broker.authorizer
    if authorizer is None:
        return True
    return authorizer.authorize(context.principal, context.client_host, operation, ResourceType.CLUSTER, CLUSTER_NAME)


def authorize_by_resource_type(context: Any, operation: AclOperation, resource_type: ResourceType) -> bool:
    """`operation` on at least one resource of the type (AclAuthorizer.authorizeByResourceType)."""
    authorizer = context.broker.authorizer
    if authorizer is None:
        return True
    return authorizer.authorize_by_resource_type(context.principal, context.client_host, operation, resource_type)


def authorized_names(
    context: Any, operation: AclOperation, resource_type: ResourceType, names: Iterable[str | None]
) -> set[str | None]:
    """Which of the names the principal may do `operation` on, each checked once
    (Kafka's AuthHelper.filterByAuthorized); a None name is never authorized."""
    authorizer = context.broker.authorizer
    if authorizer is None:
        return set(names)
    unique = {n for n in names if n is not None}
    return {
        n
        for n in unique
        if authorizer.authorize(context.principal, context.client_host, operation, resource_type, n)
    }


def cluster_authorized_operations(context: Any) -> int:
    """The cluster's authorized operations, as Metadata and DescribeCluster answer them:
    none (0) without DESCRIBE on the cluster."""
    if not authorize_cluster(context, AclOperation.DESCRIBE):
        return 0
    return authorized_operations(context, ResourceType.CLUSTER, CLUSTER_NAME)


def authorized_operations(context: Any, resource_type: ResourceType, name: str) -> int:
    """The bit field of the operations allowed on the resource (with no authorizer:
    every operation its type supports, as Kafka answers)."""
    authorizer = context.broker.authorizer
    if authorizer is None:
        return operations_field(SUPPORTED_OPERATIONS.get(resource_type, ()))
    return authorizer.authorized_operations(context.principal, context.client_host, resource_type, name)
