"""DeleteRecords (key 21): move partitions' log start offsets forward.

Offset -1 means the high watermark; an offset above it is OFFSET_OUT_OF_RANGE.
Segments wholly below the new log start offset are deleted; the answer's low
watermark is the new log start offset (one replica: nothing to wait for).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.broker import Broker
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.log.log import OffsetOutOfRangeError
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorized_names

HIGH_WATERMARK = -1


def delete_records(
    broker: Broker, topic_name: str, index: int, offset: int
) -> tuple[ErrorCode, int]:
    """(error, low watermark) for one partition."""
    topic = broker.topics.get(topic_name)
    partition = broker.partition(topic_name, index)
    if topic is None or partition is None:
        return ErrorCode.unknown_topic_or_partition, -1
    if topic.is_internal:
        return ErrorCode.invalid_topic_exception, -1
    if "delete" not in str(topic.config("cleanup.policy")).split(","):
        # Kafka: "Records of partition ... can not be deleted due to the configured policy".
        return ErrorCode.policy_violation, -1
    if offset == HIGH_WATERMARK:
        offset = partition.high_watermark
    if offset < 0:
        return ErrorCode.offset_out_of_range, -1
    try:
        return ErrorCode.none, partition.delete_records_before(offset)
    except OffsetOutOfRangeError:
        return ErrorCode.offset_out_of_range, -1


@api(21)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(21, ctx.api_version)
    topics = []
    deletable = authorized_names(ctx, AclOperation.DELETE, ResourceType.TOPIC, (t.name for t in request.topics))
    for topic in request.topics:
        partitions = []
        for wanted in topic.partitions:
            if topic.name not in deletable:
                error, low_watermark = ErrorCode.topic_authorization_failed, -1
            else:
                error, low_watermark = delete_records(ctx.broker, topic.name, wanted.partition_index, wanted.offset)
            partitions.append(
                make(
                    module.DeleteRecordsPartitionResult,
                    partition_index=wanted.partition_index,
                    low_watermark=low_watermark,
                    error_code=error,
                )
            )
        topics.append(
            make(module.DeleteRecordsTopicResult, name=topic.name, partitions=tuple(partitions))
        )
    return make(module.DeleteRecordsResponse, throttle_time=NO_THROTTLE, topics=tuple(topics))
