"""OffsetForLeaderEpoch (key 23): where a leader epoch ends in this replica's log.

A follower of a new leader asks it before fetching, and truncates what lies beyond
(KIP-101); consumers ask it to detect a truncated log after a leader change
(KIP-320). The answer is the largest epoch not above the one asked for, and the
offset where it ends: the start of the next epoch, or the log end offset.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.handlers.leadership import absent_partition_error
from kwire.handlers.list_offsets import check_leader_epoch
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize_cluster, authorized_names

# Kafka's OffsetsForLeaderEpochRequest.CONSUMER_REPLICA_ID / DEBUGGING_REPLICA_ID.
CONSUMER_REPLICA_ID = -1
DEBUGGING_REPLICA_ID = -2


@api(23)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(23, ctx.api_version)
    broker = ctx.broker
    replica_id = getattr(request, "replica_id", CONSUMER_REPLICA_ID)
    topics = []
    # Followers need CLUSTER_ACTION; consumers (KIP-320) may ask with DESCRIBE on the topic.
    described = (
        None
        if authorize_cluster(ctx, AclOperation.CLUSTER_ACTION)
        else authorized_names(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, (t.topic for t in request.topics))
    )
    for topic in request.topics:
        partitions = []
        for wanted in topic.partitions:
            epoch, end_offset = -1, -1
            authorized = described is None or topic.topic in described
            partition = broker.partition(topic.topic, wanted.partition) if authorized else None
            if not authorized:
                error = ErrorCode.topic_authorization_failed
            elif partition is None:
                error = absent_partition_error(broker, topic.topic, wanted.partition)
            else:
                error = check_leader_epoch(partition, wanted.current_leader_epoch)
                # Followers ask the leader; only the debugging id may read a follower.
                if error is ErrorCode.none and not partition.is_leader and replica_id != DEBUGGING_REPLICA_ID:
                    error = ErrorCode.not_leader_or_follower
                if error is ErrorCode.none:
                    epoch, end_offset = partition.log.end_offset_for_epoch(wanted.leader_epoch)
            partitions.append(
                make(
                    module.EpochEndOffset,
                    error_code=error,
                    partition=wanted.partition,
                    leader_epoch=epoch,
                    end_offset=end_offset,
                )
            )
        topics.append(make(module.OffsetForLeaderTopicResult, topic=topic.topic, partitions=tuple(partitions)))
    return make(module.OffsetForLeaderEpochResponse, throttle_time=NO_THROTTLE, topics=tuple(topics))
