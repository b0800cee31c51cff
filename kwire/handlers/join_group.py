"""JoinGroup (key 11): join a group, wait for the rebalance, learn the generation.

The answer waits (the handler awaits) until the group's rebalance completes. v4+
first joins get MEMBER_ID_REQUIRED with a member id to join again with (KIP-394);
v5+ carry group.instance.id (static membership, KIP-345); v9 may tell a returning
static leader to skip the assignment (KIP-814).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.coordinator.group_coordinator import client_host, group_coordinator, millis
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize


@api(11)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(11, ctx.api_version)
    coordinator = group_coordinator(ctx.broker)
    session_timeout_ms = millis(request.session_timeout)
    # v0 has no rebalance timeout: the session timeout stands in for it.
    rebalance = getattr(request, "rebalance_timeout", None)
    rebalance_timeout_ms = session_timeout_ms if rebalance is None else millis(rebalance)
    if coordinator is None or not authorize(ctx, AclOperation.READ, ResourceType.GROUP, request.group_id):
        error, member_id, generation, ptype, pname, leader, skip, members = (
            ErrorCode.coordinator_not_available if coordinator is None else ErrorCode.group_authorization_failed,
            request.member_id, -1, None, None, "", False, [],
        )
    else:
        result = await coordinator.join_group(
            group_id=request.group_id,
            member_id=request.member_id,
            group_instance_id=getattr(request, "group_instance_id", None),
            client_id=ctx.client_id or "",
            client_host=client_host(ctx.peer),
            rebalance_timeout_ms=rebalance_timeout_ms,
            session_timeout_ms=session_timeout_ms,
            protocol_type=request.protocol_type,
            protocols=[(p.name, p.metadata) for p in request.protocols],
            require_known_member_id=ctx.api_version >= 4,
            supports_skip_assignment=ctx.api_version >= 9,
        )
        error, member_id, generation = result.error, result.member_id, result.generation_id
        ptype, pname, leader, skip = result.protocol_type, result.protocol_name, result.leader, result.skip_assignment
        members = [
            make(module.JoinGroupResponseMember, member_id=m.member_id, group_instance_id=m.group_instance_id, metadata=m.metadata)
            for m in result.members
        ]
    # Before v7 the protocol name is not nullable; from v7 an empty one is sent as null.
    if ctx.api_version < 7:
        pname = pname or ""
    elif pname == "":
        pname = None
    return make(
        module.JoinGroupResponse,
        throttle_time=NO_THROTTLE,
        error_code=error,
        generation_id=generation,
        protocol_type=ptype,
        protocol_name=pname,
        leader=leader,
        skip_assignment=skip,
        member_id=member_id,
        members=tuple(members),
    )
