"""DescribeAcls (key 29): the ACLs that match a filter, grouped by resource pattern.

Needs DESCRIBE on the cluster. The filter helpers here serve DeleteAcls too: a
resource pattern filter with Kafka's ANY and MATCH (MATCH: the literal name, the
literal `*` and the prefixes of the name, the patterns that would apply to that
resource), an entry filter where a null principal or host and ANY match everything.
"""

from __future__ import annotations

import datetime
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.handlers import RequestContext
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import (
    WILDCARD,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
)
from kwire.security.authorizer import authorize_cluster

NO_AUTHORIZER = "No Authorizer is configured on the broker"
CLUSTER_AUTHORIZATION_FAILED = "Cluster authorization failed."


def throttle(ctx: RequestContext) -> datetime.timedelta:
    """The answer's throttle_time_ms, as quota enforcement set it on the context."""
    return datetime.timedelta(milliseconds=ctx.throttle_time_ms)


def wire_enum(kind: Any, code: int) -> Any:
    """A wire code as its enum, UNKNOWN for a code this broker does not know (as Kafka)."""
    try:
        return kind(code)
    except ValueError:
        return kind.UNKNOWN


def filter_error(acl_filter: Any) -> str | None:
    """Why a filter (DescribeAcls request, DeleteAcls filter) is refused: Kafka's
    AclBindingFilter must have no UNKNOWN element."""
    if any(
        wire_enum(kind, code).name == "UNKNOWN"
        for kind, code in (
            (ResourceType, acl_filter.resource_type_filter),
            (PatternType, acl_filter.pattern_type_filter),
            (AclOperation, acl_filter.operation),
            (AclPermissionType, acl_filter.permission_type),
        )
    ):
        return "The filter contains UNKNOWN elements"
    return None


def filter_matches(acl_filter: Any, binding: AclBinding) -> bool:
    """Kafka's AclBindingFilter.matches (ResourcePatternFilter and AccessControlEntryFilter)."""
    resource_type = acl_filter.resource_type_filter
    if resource_type != ResourceType.ANY and resource_type != binding.resource_type:
        return False
    pattern_type = acl_filter.pattern_type_filter
    if pattern_type not in (PatternType.ANY, PatternType.MATCH) and pattern_type != binding.pattern_type:
        return False
    name = acl_filter.resource_name_filter
    if name is not None:
        if pattern_type == PatternType.ANY or pattern_type == binding.pattern_type:
            if name != binding.resource_name:
                return False
        elif binding.pattern_type == PatternType.LITERAL:  # MATCH
            if name != binding.resource_name and binding.resource_name != WILDCARD:
                return False
        elif not name.startswith(binding.resource_name):  # MATCH, PREFIXED
            return False
    return (
        (acl_filter.principal_filter is None or acl_filter.principal_filter == binding.principal)
        and (acl_filter.host_filter is None or acl_filter.host_filter == binding.host)
        and (acl_filter.operation == AclOperation.ANY or acl_filter.operation == binding.operation)
        and (acl_filter.permission_type == AclPermissionType.ANY or acl_filter.permission_type == binding.permission_type)
    )


def sorted_bindings(bindings: list[AclBinding]) -> list[AclBinding]:
    return sorted(
        bindings,
        key=lambda b: (b.resource_type, b.resource_name, b.pattern_type, b.principal, b.host, b.operation, b.permission_type),
    )


DESCRIBE_ACLS_KEY = 29


@api(DESCRIBE_ACLS_KEY)
async def handle(ctx: RequestContext, request: Any) -> Any:
    version = ctx.api_version
    module = response_module(DESCRIBE_ACLS_KEY, version)

    def answer(error: ErrorCode, message: str | None, resources: tuple[Any, ...] = ()) -> Any:
        return make(
            module.DescribeAclsResponse,
            throttle_time=throttle(ctx),
            error_code=error,
            error_message=message,
            resources=resources,
        )

    if not authorize_cluster(ctx, AclOperation.DESCRIBE):
        return answer(ErrorCode.cluster_authorization_failed, CLUSTER_AUTHORIZATION_FAILED)
    store = ctx.broker.acl_store
    if ctx.broker.authorizer is None or store is None:
        return answer(ErrorCode.security_disabled, NO_AUTHORIZER)
    error = filter_error(request)
    if error is not None:
        return answer(ErrorCode.invalid_request, error)
    grouped: dict[tuple[int, str, int], list[Any]] = {}
    for binding in sorted_bindings([b for b in store.bindings() if filter_matches(request, b)]):
        grouped.setdefault((binding.resource_type, binding.resource_name, binding.pattern_type), []).append(
            make(
                module.AclDescription,
                principal=binding.principal,
                host=binding.host,
                operation=binding.operation,
                permission_type=binding.permission_type,
            )
        )
    resources = tuple(
        make(
            module.DescribeAclsResource,
            resource_type=resource_type,
            resource_name=name,
            pattern_type=pattern_type,
            acls=tuple(acls),
        )
        for (resource_type, name, pattern_type), acls in grouped.items()
    )
    return answer(ErrorCode.none, None, resources)
