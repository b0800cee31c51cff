"""SyncGroup (key 14): the leader hands out assignments; every member gets its own.

A member's answer waits (the handler awaits) until the leader's assignment is stored
in `__consumer_offsets`. v5 requests must name the protocol type and name, and they
must be the group's.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.coordinator.group import SyncResult
from kwire.coordinator.group_coordinator import group_coordinator
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize


@api(14)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(14, ctx.api_version)
    coordinator = group_coordinator(ctx.broker)
    protocol_type = getattr(request, "protocol_type", None)
    protocol_name = getattr(request, "protocol_name", None)
    if not authorize(ctx, AclOperation.READ, ResourceType.GROUP, request.group_id):
        result = SyncResult(ErrorCode.group_authorization_failed)
    elif coordinator is None:
        result = SyncResult(ErrorCode.coordinator_not_available)
    elif ctx.api_version >= 5 and (protocol_type is None or protocol_name is None):
        result = SyncResult(ErrorCode.inconsistent_group_protocol)
    else:
        result = await coordinator.sync_group(
            group_id=request.group_id,
            generation_id=request.generation_id,
            member_id=request.member_id,
            group_instance_id=getattr(request, "group_instance_id", None),
            protocol_type=protocol_type,
            protocol_name=protocol_name,
            assignments={a.member_id: a.assignment for a in request.assignments},
        )
    return make(
        module.SyncGroupResponse,
        throttle_time=NO_THROTTLE,
        error_code=result.error,
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name,
        assignment=result.assignment,
    )
