"""DeleteGroups (key 42): delete empty groups and their committed offsets
(GROUP_ID_NOT_FOUND for unknown groups, NON_EMPTY_GROUP while members remain)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.coordinator.group_coordinator import group_coordinator
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorized_names


@api(42)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(42, ctx.api_version)
    coordinator = group_coordinator(ctx.broker)
    names = list(dict.fromkeys(request.groups_names))
    deletable = authorized_names(ctx, AclOperation.DELETE, ResourceType.GROUP, names)
    results = {name: ErrorCode.group_authorization_failed for name in names if name not in deletable}
    names_to_delete = [name for name in names if name in deletable]
    if coordinator is None:
        results.update({name: ErrorCode.coordinator_not_available for name in names_to_delete})
    elif names_to_delete:
        results.update(coordinator.delete_groups(names_to_delete))
    return make(
        module.DeleteGroupsResponse,
        throttle_time=NO_THROTTLE,
        results=tuple(make(module.DeletableGroupResult, group_id=name, error_code=results[name]) for name in names),
    )
