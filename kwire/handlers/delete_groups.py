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


@api(42)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(42, ctx.api_version)
    coordinator = group_coordinator(ctx.broker)
    names = list(dict.fromkeys(request.groups_names))
    if coordinator is None:
        results = {name: ErrorCode.coordinator_not_available for name in names}
    else:
        results = coordinator.delete_groups(names)
    return make(
        module.DeleteGroupsResponse,
        throttle_time=NO_THROTTLE,
        results=tuple(make(module.DeletableGroupResult, group_id=name, error_code=results[name]) for name in names),
    )
