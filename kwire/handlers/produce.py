"""Produce (key 0): validate each record batch, assign offsets, append.

Batches are checked by header only (length, magic, CRC-32C, record count) and
stored exactly as received, whatever their compression. acks=0 gets no answer;
on one broker acks=-1 is answered like acks=1, once the batch is in the log.
"""

from __future__ import annotations

import datetime
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.broker import KafkaError, now_ms
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.protocol.produce_request import ProduceRequest, read_produce_request
from kwire.protocol.records import InvalidBatchError, validate_batches

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _timestamp(ms: int) -> datetime.datetime | None:
    return None if ms < 0 else EPOCH + datetime.timedelta(milliseconds=ms)


def produce_to_partition(ctx: RequestContext, topic_name: str, index: int, records: memoryview | None) -> tuple[ErrorCode, int, int, int, str | None]:
    """(error, base offset, log append time, log start offset, error message)."""
    broker = ctx.broker
    topic = broker.topics.get(topic_name)
    partition = broker.partition(topic_name, index)
    if topic is None or partition is None:
        return ErrorCode.unknown_topic_or_partition, -1, -1, -1, None
    if topic.is_internal:
        return ErrorCode.invalid_topic_exception, -1, -1, -1, f"Cannot append to internal topic {topic_name}"
    if not records:
        return ErrorCode.invalid_record, -1, -1, -1, "no record batch"
    try:
        headers = validate_batches(records)
    except InvalidBatchError as e:
        return e.error_code, -1, -1, -1, str(e)
    max_message_bytes = topic.config("max.message.bytes")
    for header in headers:
        if header.size > max_message_bytes:
            return (
                ErrorCode.message_too_large,
                -1,
                -1,
                -1,
                f"batch of {header.size} bytes exceeds max.message.bytes={max_message_bytes}",
            )
    try:
        base_offset, log_append_time = partition.append(records, headers, now_ms())
    except KafkaError as e:
        return e.error_code, -1, -1, partition.log_start_offset, e.message
    return ErrorCode.none, base_offset, log_append_time, partition.log_start_offset, None


@api(0, 3, 11, decode=read_produce_request)
async def handle(ctx: RequestContext, request: ProduceRequest) -> Any:
    module = response_module(0, ctx.api_version)
    invalid_acks = request.acks not in (0, 1, -1)
    topics = []
    for topic_data in request.topic_data:
        partitions = []
        for data in topic_data.partition_data:
            if invalid_acks:
                result = (ErrorCode.invalid_required_acks, -1, -1, -1, None)
            else:
                result = produce_to_partition(ctx, topic_data.name, data.index, data.records)
            error, base_offset, append_time, log_start_offset, message = result
            partitions.append(
                make(
                    module.PartitionProduceResponse,
                    index=data.index,
                    error_code=error,
                    base_offset=base_offset,
                    log_append_time=_timestamp(append_time),
                    log_start_offset=log_start_offset,
                    record_errors=(),
                    error_message=message,
                )
            )
        topics.append(make(module.TopicProduceResponse, name=topic_data.name, partition_responses=tuple(partitions)))
    if request.acks == 0:
        return None
    return make(module.ProduceResponse, responses=tuple(topics), throttle_time=NO_THROTTLE)
