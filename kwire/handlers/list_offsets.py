"""ListOffsets (key 2): earliest, latest, max timestamp, or the offset for a time.

"Latest" is the high watermark (or the last stable offset for read_committed),
counted in records, not batches.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.broker import Partition
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.handlers.leadership import absent_partition_error
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorized_names

LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL_TIMESTAMP = -4
READ_COMMITTED = 1


def check_leader_epoch(partition: Partition, current_leader_epoch: int) -> ErrorCode:
    """Kafka's fencing of requests that carry a leader epoch (KIP-320); -1 skips it."""
    if current_leader_epoch < 0 or current_leader_epoch == partition.leader_epoch:
        return ErrorCode.none
    if current_leader_epoch > partition.leader_epoch:
        return ErrorCode.unknown_leader_epoch
    return ErrorCode.fenced_leader_epoch


def lookup(partition: Partition, timestamp: int, isolation_level: int) -> tuple[int, int]:
    """(timestamp, offset) answered for one partition."""
    upper = partition.last_stable_offset if isolation_level == READ_COMMITTED else partition.high_watermark
    if timestamp == LATEST_TIMESTAMP:
        return -1, upper
    if timestamp in (EARLIEST_TIMESTAMP, EARLIEST_LOCAL_TIMESTAMP):
        return -1, partition.log_start_offset
    if timestamp == MAX_TIMESTAMP:
        found_timestamp, offset = partition.log.max_timestamp()
        return (found_timestamp, offset) if offset >= 0 else (-1, -1)
    found = partition.log.offset_for_timestamp(timestamp)
    if found is None or found[0] >= upper:
        return -1, -1
    offset, found_timestamp = found
    return found_timestamp, offset


@api(2)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(2, ctx.api_version)
    isolation_level = getattr(request, "isolation_level", 0)
    topics = []
    described = authorized_names(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, (t.name for t in request.topics))
    for topic in request.topics:
        partitions = []
        for wanted in topic.partitions:
            authorized = topic.name in described
            partition = ctx.broker.partition(topic.name, wanted.partition_index) if authorized else None
            timestamp, offset, error = -1, -1, ErrorCode.none
            if not authorized:
                error = ErrorCode.topic_authorization_failed
            elif partition is None:
                error = absent_partition_error(ctx.broker, topic.name, wanted.partition_index)
            else:
                error = check_leader_epoch(partition, getattr(wanted, "current_leader_epoch", -1))
                if error is ErrorCode.none and not partition.is_leader:
                    error = ErrorCode.not_leader_or_follower
                if error is ErrorCode.none:
                    timestamp, offset = lookup(partition, wanted.timestamp, isolation_level)
            partitions.append(
                make(
                    module.ListOffsetsPartitionResponse,
                    partition_index=wanted.partition_index,
                    error_code=error,
                    timestamp=timestamp,
                    offset=offset,
                    leader_epoch=partition.leader_epoch if partition is not None else -1,
                )
            )
        topics.append(make(module.ListOffsetsTopicResponse, name=topic.name, partitions=tuple(partitions)))
    return make(module.ListOffsetsResponse, throttle_time=NO_THROTTLE, topics=tuple(topics))
