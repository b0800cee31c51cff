"""ListGroups (key 16): every group of this coordinator, filtered by state (v4+) and
type (v5+; all groups here are "classic")."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.coordinator.group_coordinator import group_coordinator
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize, authorize_cluster


@api(16)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(16, ctx.api_version)
    coordinator = group_coordinator(ctx.broker)
    if coordinator is None:
        error, listed = ErrorCode.coordinator_not_available, []
    else:
        error, listed = coordinator.list_groups(
            getattr(request, "states_filter", ()) or (), getattr(request, "types_filter", ()) or ()
        )
    if not authorize_cluster(ctx, AclOperation.DESCRIBE):
        # Without DESCRIBE on the cluster, only the groups one may describe.
        listed = [g for g in listed if authorize(ctx, AclOperation.DESCRIBE, ResourceType.GROUP, g.group_id)]
    groups = tuple(
        make(
            module.ListedGroup,
            group_id=g.group_id,
            protocol_type=g.protocol_type,
            group_state=g.state,
            group_type=g.group_type,
        )
        for g in listed
    )
    return make(module.ListGroupsResponse, throttle_time=NO_THROTTLE, error_code=error, groups=groups)
