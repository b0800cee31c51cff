"""LeaveGroup (key 13): members leave (v3+: several at once, by member id or, for an
admin, by group.instance.id alone); the group rebalances without them."""

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


@api(13)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(13, ctx.api_version)
    if ctx.api_version >= 3:
        leaving = [(m.member_id, m.group_instance_id) for m in request.members]
    else:
        leaving = [(request.member_id, None)]
    coordinator = group_coordinator(ctx.broker)
    if not authorize(ctx, AclOperation.READ, ResourceType.GROUP, request.group_id):
        error, member_errors = ErrorCode.group_authorization_failed, []
    elif coordinator is None:
        error, member_errors = ErrorCode.coordinator_not_available, []
    else:
        error, member_errors = coordinator.leave_group(request.group_id, leaving)
    if ctx.api_version < 3:
        # One member: its error is the answer's (Kafka's LeaveGroupResponse for v0-2).
        if error is ErrorCode.none:
            error = next((e for e in member_errors if e is not ErrorCode.none), ErrorCode.none)
        return make(module.LeaveGroupResponse, throttle_time=NO_THROTTLE, error_code=error)
    members = tuple(
        make(module.MemberResponse, member_id=member_id, group_instance_id=instance_id, error_code=member_error)
        for (member_id, instance_id), member_error in zip(leaving, member_errors, strict=False)
    )
    return make(module.LeaveGroupResponse, throttle_time=NO_THROTTLE, error_code=error, members=members)
