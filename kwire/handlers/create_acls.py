"""CreateAcls (key 30): add ACLs to the store, one result per creation.

Needs ALTER on the cluster. Each creation is validated as Kafka's CreateAclsRequest,
AclBinding and AclAuthorizer do: known and specific resource type, pattern type
(LITERAL or PREFIXED), operation and permission; a non-empty name without `/`; the
cluster resource only as kafka-cluster; a principal `principalType:name`. A refused
creation answers INVALID_REQUEST with why; the others are stored together.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.handlers import RequestContext
from kwire.handlers.describe_acls import CLUSTER_AUTHORIZATION_FAILED, throttle, wire_enum
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import (
    CLUSTER_NAME,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
)
from kwire.security.authorizer import authorize_cluster
from kwire.security.principal import KafkaPrincipal

# Kafka's CreateAcls says this (DescribeAcls says "... on the broker").
NO_AUTHORIZER = "No Authorizer is configured."


def creation_binding(creation: Any) -> AclBinding | str:
    """The binding a creation asks for, or why it is invalid."""
    resource_type = wire_enum(ResourceType, creation.resource_type)
    pattern_type = wire_enum(PatternType, creation.resource_pattern_type)
    operation = wire_enum(AclOperation, creation.operation)
    permission = wire_enum(AclPermissionType, creation.permission_type)
    if (
        resource_type == ResourceType.UNKNOWN
        or pattern_type == PatternType.UNKNOWN
        or operation == AclOperation.UNKNOWN
        or permission == AclPermissionType.UNKNOWN
    ):
        return "CreatableAcls contain unknown elements"
    if resource_type == ResourceType.ANY:
        return "resourceType must not be ANY"
    if pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
        return f"patternType must not be {pattern_type.name}"
    if operation == AclOperation.ANY:
        return "operation must not be ANY"
    if permission == AclPermissionType.ANY:
        return "permissionType must not be ANY"
    name = creation.resource_name
    if resource_type == ResourceType.CLUSTER and name != CLUSTER_NAME:
        return f"The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
    if not name:
        return "Invalid empty resource name"
    if "/" in name:
        return f"ACL binding contains invalid resource name: {name}"
    try:
        KafkaPrincipal.parse(creation.principal)
    except ValueError:
        return f"Could not parse principal from `{creation.principal}` (no colon is present separating the principal type from the principal name)"
    return AclBinding(
        resource_type=resource_type,
        resource_name=name,
        pattern_type=pattern_type,
        principal=creation.principal,
        host=creation.host,
        operation=operation,
        permission_type=permission,
    )


CREATE_ACLS_KEY = 30


@api(CREATE_ACLS_KEY)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(CREATE_ACLS_KEY, ctx.api_version)

    def result(error: ErrorCode, message: str | None = None) -> Any:
        return make(module.AclCreationResult, error_code=error, error_message=message)

    def answer(results: list[Any]) -> Any:
        return make(module.CreateAclsResponse, throttle_time=throttle(ctx), results=tuple(results))

    if not authorize_cluster(ctx, AclOperation.ALTER):
        return answer([result(ErrorCode.cluster_authorization_failed, CLUSTER_AUTHORIZATION_FAILED)] * len(request.creations))
    store = ctx.broker.acl_store
    if ctx.broker.authorizer is None or store is None:
        return answer([result(ErrorCode.security_disabled, NO_AUTHORIZER)] * len(request.creations))
    bindings = [creation_binding(c) for c in request.creations]
    valid = [b for b in bindings if isinstance(b, AclBinding)]
    if valid:
        await store.add(valid)
    return answer(
        [
            result(ErrorCode.none) if isinstance(b, AclBinding) else result(ErrorCode.invalid_request, b)
            for b in bindings
        ]
    )
