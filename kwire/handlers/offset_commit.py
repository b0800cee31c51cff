"""OffsetCommit (key 8), v2-9: store consumed positions in `__consumer_offsets`.

Members commit with their generation and member id; a simple consumer (no group
management) commits with generation -1 and no member id while the group is empty.
Partitions of unknown topics get UNKNOWN_TOPIC_OR_PARTITION; a commit is answered
once its record is committed (replicated).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.coordinator.group_coordinator import group_coordinator, millis
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize, authorized_names


@api(8)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(8, ctx.api_version)
    broker = ctx.broker
    coordinator = group_coordinator(broker)
    results: dict[tuple[str, int], ErrorCode] = {}
    wanted: dict[tuple[str, int], tuple[int, int, str | None]] = {}
    # READ on the group, then on each topic (KafkaApis.handleOffsetCommitRequest).
    group_authorized = authorize(ctx, AclOperation.READ, ResourceType.GROUP, request.group_id)
    readable = authorized_names(ctx, AclOperation.READ, ResourceType.TOPIC, (t.name for t in request.topics))
    for topic in request.topics:
        for p in topic.partitions:
            key = (topic.name, p.partition_index)
            if not group_authorized:
                results[key] = ErrorCode.group_authorization_failed
            elif topic.name not in readable:
                results[key] = ErrorCode.topic_authorization_failed
            elif broker.partition(topic.name, p.partition_index) is None:
                results[key] = ErrorCode.unknown_topic_or_partition
            else:
                wanted[key] = (p.committed_offset, getattr(p, "committed_leader_epoch", -1), p.committed_metadata)
    if coordinator is None:
        results.update({key: ErrorCode.coordinator_not_available for key in wanted})
    elif group_authorized:
        retention = getattr(request, "retention_time", None)
        results.update(
            await coordinator.commit_offsets(
                group_id=request.group_id,
                member_id=request.member_id,
                group_instance_id=getattr(request, "group_instance_id", None),
                generation_id=request.generation_id_or_member_epoch,
                offsets=wanted,
                retention_ms=-1 if retention is None else millis(retention),
                api_version=ctx.api_version,
            )
        )
    topics = tuple(
        make(
            module.OffsetCommitResponseTopic,
            name=topic.name,
            partitions=tuple(
                make(
                    module.OffsetCommitResponsePartition,
                    partition_index=p.partition_index,
                    error_code=results[(topic.name, p.partition_index)],
                )
                for p in topic.partitions
            ),
        )
        for topic in request.topics
    )
    return make(module.OffsetCommitResponse, throttle_time=NO_THROTTLE, topics=topics)
