"""Heartbeat (key 12): a member is alive; the answer says whether to rejoin
(REBALANCE_IN_PROGRESS) or that it is out of date (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,
FENCED_INSTANCE_ID)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.coordinator.group_coordinator import group_coordinator
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize


@api(12)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(12, ctx.api_version)
    coordinator = group_coordinator(ctx.broker)
    if not authorize(ctx, AclOperation.READ, ResourceType.GROUP, request.group_id):
        error = ErrorCode.group_authorization_failed
    elif coordinator is None:
        error = ErrorCode.coordinator_not_available
    else:
        error = coordinator.heartbeat(
            group_id=request.group_id,
            member_id=request.member_id,
            group_instance_id=getattr(request, "group_instance_id", None),
            generation_id=request.generation_id,
        )
    return make(module.HeartbeatResponse, throttle_time=NO_THROTTLE, error_code=error)
