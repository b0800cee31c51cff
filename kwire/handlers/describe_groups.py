"""DescribeGroups (key 15): state, protocol and members of groups.

Member metadata and assignments, and the protocol name, are given for Stable groups
only; an unknown group is described as Dead with no error, as Kafka does before v6.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.coordinator.group import Group, GroupState
from kwire.coordinator.group_coordinator import group_coordinator
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import (
    AUTHORIZED_OPERATIONS_OMITTED,
    authorize,
    authorized_operations,
)


def _members(module: Any, group: Group) -> tuple[Any, ...]:
    stable = group.state is GroupState.STABLE and group.protocol_name is not None
    members = []
    for m in group.members.values():
        metadata = b""
        if stable:
            try:
                metadata = m.metadata(group.protocol_name)
            except KeyError:
                metadata = b""
        members.append(
            make(
                module.DescribedGroupMember,
                member_id=m.member_id,
                group_instance_id=m.group_instance_id,
                client_id=m.client_id,
                client_host=m.client_host,
                member_metadata=metadata,
                member_assignment=m.assignment if stable else b"",
            )
        )
    return tuple(members)


@api(15)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(15, ctx.api_version)
    coordinator = group_coordinator(ctx.broker)
    include_operations = getattr(request, "include_authorized_operations", False)
    described = []
    for group_id in request.groups:
        operations = AUTHORIZED_OPERATIONS_OMITTED
        if not authorize(ctx, AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
            error, group = ErrorCode.group_authorization_failed, None
        elif coordinator is None:
            error, group = ErrorCode.coordinator_not_available, None
        else:
            error, group = coordinator.describe_group(group_id)
            if include_operations:
                operations = authorized_operations(ctx, ResourceType.GROUP, group_id)
        if group is None:
            state = "Dead" if error is ErrorCode.none else ""
            entry = dict(group_state=state, protocol_type="", protocol_data="", members=())
        else:
            entry = dict(
                group_state=group.state.value,
                protocol_type=group.protocol_type or "",
                protocol_data=(group.protocol_name or "") if group.state is GroupState.STABLE else "",
                members=_members(module, group),
            )
        described.append(
            make(module.DescribedGroup, error_code=error, group_id=group_id, authorized_operations=operations, **entry)
        )
    return make(module.DescribeGroupsResponse, throttle_time=NO_THROTTLE, groups=tuple(described))
