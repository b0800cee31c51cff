"""OffsetDelete (key 47): delete a group's committed offsets for some partitions.

An empty group loses any of them; a consumer group with members only those of
topics it no longer subscribes to (GROUP_SUBSCRIBED_TO_TOPIC otherwise).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.coordinator.group_coordinator import group_coordinator
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize, authorized_names


@api(47)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(47, ctx.api_version)
    broker = ctx.broker
    coordinator = group_coordinator(broker)
    if not authorize(ctx, AclOperation.DELETE, ResourceType.GROUP, request.group_id):
        return make(
            module.OffsetDeleteResponse, error_code=ErrorCode.group_authorization_failed, throttle_time=NO_THROTTLE, topics=()
        )
    readable = authorized_names(ctx, AclOperation.READ, ResourceType.TOPIC, (t.name for t in request.topics))
    results: dict[tuple[str, int], ErrorCode] = {}
    wanted = []
    for topic in request.topics:
        for p in topic.partitions:
            key = (topic.name, p.partition_index)
            if topic.name not in readable:
                results[key] = ErrorCode.topic_authorization_failed
            elif broker.partition(topic.name, p.partition_index) is None:
                results[key] = ErrorCode.unknown_topic_or_partition
            else:
                wanted.append(key)
    if coordinator is None:
        error, deleted = ErrorCode.coordinator_not_available, {}
    else:
        error, deleted = coordinator.delete_offsets(request.group_id, wanted)
    if error is not ErrorCode.none:
        return make(module.OffsetDeleteResponse, error_code=error, throttle_time=NO_THROTTLE, topics=())
    results.update(deleted)
    topics = tuple(
        make(
            module.OffsetDeleteResponseTopic,
            name=topic.name,
            partitions=tuple(
                make(
                    module.OffsetDeleteResponsePartition,
                    partition_index=p.partition_index,
                    error_code=results.get((topic.name, p.partition_index), ErrorCode.none),
                )
                for p in topic.partitions
            ),
        )
        for topic in request.topics
    )
    return make(module.OffsetDeleteResponse, error_code=ErrorCode.none, throttle_time=NO_THROTTLE, topics=topics)
