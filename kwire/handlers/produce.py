"""Produce (key 0): validate each record batch, assign offsets, append.

Batches are checked as Kafka's LogValidator checks a client's: headers (length,
magic, CRC-32C, record count), then every record, decompressed with a bound
(records.validate_produced). A partition's batches are stored together or not at
all, compressed as received. acks=0 gets no answer;
on one broker acks=-1 is answered like acks=1, once the batch is in the log.
Request and response are read and written by hand (kwire/protocol/produce_*.py):
this is the broker's hottest path.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio
from kio.schema.errors import ErrorCode

from kwire import codecs
from kwire.broker import KafkaError, Partition, Topic, now_ms
from kwire.config import LONG_MAX
from kwire.handlers import PendingAnswer, RequestContext
from kwire.handlers.leadership import LeaderHints, absent_partition_error
from kwire.protocol.apis import api
from kwire.protocol.fetch_response import EncodedBody
from kwire.protocol.headers import CloseConnection
from kwire.protocol.leader_hints import NodeEndpoint
from kwire.protocol.produce_request import ProduceRequest, read_produce_request
from kwire.protocol.produce_response import PartitionProduceResult, encode_produce_response
from kwire.protocol.records import (
    InvalidBatchError,
    RecordPolicy,
    decompressed_limit,
    validate_batches,
    validate_produced,
)
from kwire.quotas.manager import QuotaType
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize, authorized_names

# ProduceRequest v7 is the first a zstd batch may come in (KIP-110).
ZSTD_MIN_PRODUCE_VERSION = 7


def record_policy(topic: Topic) -> RecordPolicy:
    """The topic's configs as validate_produced reads them."""
    difference = topic.config("message.timestamp.difference.max.ms")
    before = topic.config("message.timestamp.before.max.ms")
    after = topic.config("message.timestamp.after.max.ms")
    return RecordPolicy(
        log_append_time=topic.config("message.timestamp.type") == "LogAppendTime",
        # KIP-937: the deprecated difference bound applies where before/after are unset.
        timestamp_before_max_ms=difference if before == LONG_MAX else before,
        timestamp_after_max_ms=difference if after == LONG_MAX else after,
        keys_required="compact" in topic.config("cleanup.policy").split(","),
        max_decompressed_bytes=decompressed_limit(topic.config("max.message.bytes")),
    )


def produce_to_partition(
    ctx: RequestContext,
    topic_name: str,
    index: int,
    records: memoryview | None,
    acks: int = 1,
    replication_waits: list[ReplicationWait] | None = None,
) -> PartitionProduceResult:
    broker = ctx.broker
    topic = broker.topics.get(topic_name)
    partition = broker.partition(topic_name, index)
    if topic is None or partition is None:
        return PartitionProduceResult(index, absent_partition_error(broker, topic_name, index), -1)
    leader_error = partition.check_leader(acks)
    if leader_error is not ErrorCode.none:
        return PartitionProduceResult(index, leader_error, -1)
    if topic.is_internal:
        return PartitionProduceResult(
            index, ErrorCode.invalid_topic_exception, -1, error_message=f"Cannot append to internal topic {topic_name}"
        )
    if not records:
        return PartitionProduceResult(index, ErrorCode.invalid_record, -1, error_message="no record batch")
    try:
        headers = validate_batches(records)
    except InvalidBatchError as e:
        return PartitionProduceResult(index, e.error_code, -1, error_message=str(e))
    max_message_bytes = topic.config("max.message.bytes")
    for header in headers:
        if header.size > max_message_bytes:
            return PartitionProduceResult(
                index,
                ErrorCode.message_too_large,
                -1,
                error_message=f"batch of {header.size} bytes exceeds max.message.bytes={max_message_bytes}",
            )
        if header.compression == codecs.ZSTD and ctx.api_version < ZSTD_MIN_PRODUCE_VERSION:
            return PartitionProduceResult(
                index,
                ErrorCode.unsupported_compression_type,
                -1,
                error_message=f"zstd batches need ProduceRequest v{ZSTD_MIN_PRODUCE_VERSION}+",
            )
    try:
        validate_produced(records, headers, record_policy(topic), now_ms(), f"{topic_name}-{index}")
    except InvalidBatchError as e:
        return PartitionProduceResult(
            index, e.error_code, -1, error_message=str(e), record_errors=e.record_errors
        )
    if headers[0].is_transactional:
        # The batch must belong to its producer's ongoing transaction, this partition added.
        transactions = broker.services.get("transactions")
        error = transactions.verify_produce(headers[0].producer_id, headers[0].producer_epoch, topic_name, index) if transactions else None
        if error is not None:
            return PartitionProduceResult(
                index, error, -1, log_start_offset=partition.log_start_offset,
                error_message=f"{error.name} for transactional producer {headers[0].producer_id}",
            )
    try:
        base_offset, log_append_time = partition.append(records, headers, now_ms())
    except KafkaError as e:
        return PartitionProduceResult(
            index, e.error_code, -1, log_start_offset=partition.log_start_offset, error_message=e.message
        )
    # Kafka's MessagesInPerSec / BytesInPerSec: records and batch bytes appended.
    stats = broker.stats
    stats.messages_in[topic_name] += partition.log_end_offset - base_offset
    stats.bytes_in[topic_name] += len(records)
    result = PartitionProduceResult(index, ErrorCode.none, base_offset, log_append_time, partition.log_start_offset)
    if acks == -1 and partition.replication is not None and replication_waits is not None:
        replication_waits.append(ReplicationWait(result, partition, partition.log_end_offset))
    return result


@dataclass(slots=True)
class ReplicationWait:
    """An acks=all partition answer waiting for the ISR to have its batches."""

    result: PartitionProduceResult
    partition: Partition
    end_offset: int


async def wait_for_replication(waits: list[ReplicationWait], timeout_ms: int) -> None:
    """Kafka's DelayedProduce: each partition's answer once the high watermark passes
    its batches, all within the request's timeout."""
    deadline = trio.current_time() + max(timeout_ms, 0) / 1000
    for wait in waits:
        error = await wait.partition.wait_for_high_watermark(wait.end_offset, max(deadline - trio.current_time(), 0))
        if error is not ErrorCode.none:
            wait.result.error_code = error
            wait.result.error_message = None
            if error is not ErrorCode.not_enough_replicas_after_append:
                wait.result.base_offset = -1


@api(0, decode=read_produce_request)
async def handle(ctx: RequestContext, request: ProduceRequest) -> EncodedBody | PendingAnswer | None:
    valid_acks = request.acks in (0, 1, -1)
    topics = []
    waits: list[ReplicationWait] = []
    denied: dict[str, ErrorCode] = unauthorized_topics(ctx, request) if ctx.broker.authorizer is not None else {}
    for topic_data in request.topic_data:
        refused = denied.get(topic_data.name) if valid_acks else ErrorCode.invalid_required_acks
        partitions = [
            PartitionProduceResult(data.index, refused, -1)
            if refused is not None
            else produce_to_partition(ctx, topic_data.name, data.index, data.records, request.acks, waits)
            for data in topic_data.partition_data
        ]
        topics.append((topic_data.name, partitions))
    throttle_ms = produce_throttle(ctx, request)
    if request.acks == 0:
        failed = next((r for _, results in topics for r in results if r.error_code != ErrorCode.none), None)
        if failed is not None:
            # No answer is owed with acks=0: Kafka closes the connection instead, the
            # producer's only cue to refresh its metadata (KafkaApis.handleProduceRequest).
            raise CloseConnection(f"acks=0 produce failed with {failed.error_code.name}")
        return None
    version = ctx.api_version
    if waits:

        async def replicated() -> EncodedBody:
            await wait_for_replication(waits, request.timeout_ms)
            ctx.error = first_error(topics)
            return encode_produce_response(
                version, topics, throttle_time_ms=throttle_ms, node_endpoints=leader_hints(ctx, topics)
            )

        return PendingAnswer(replicated)
    ctx.error = first_error(topics)
    return encode_produce_response(version, topics, throttle_time_ms=throttle_ms, node_endpoints=leader_hints(ctx, topics))


def first_error(topics: list[tuple[str, list[PartitionProduceResult]]]) -> int:
    """The first partition's error of an answer, for kwire_requests_total."""
    for _, results in topics:
        for result in results:
            if result.error_code:
                return result.error_code
    return 0


def produce_throttle(ctx: RequestContext, request: ProduceRequest) -> int:
    """producer_byte_rate: record the request's record bytes for this client and say how
    long to throttle it (KafkaApis.handleProduceRequest; acks=0 too: its connection is
    muted all the same). 0 at the cost of one lookup when no produce quota exists."""
    quotas = ctx.broker.quotas
    if quotas is None or not quotas.enabled(QuotaType.PRODUCE):
        return 0
    size = sum(len(d.records) for t in request.topic_data for d in t.partition_data if d.records is not None)
    throttle_ms = quotas.record_and_throttle(
        QuotaType.PRODUCE, ctx.principal.name, ctx.client_id, size, trio.current_time()
    )
    ctx.throttle_time_ms = max(ctx.throttle_time_ms, throttle_ms)
    return throttle_ms


def unauthorized_topics(ctx: RequestContext, request: ProduceRequest) -> dict[str, ErrorCode]:
    """The topics refused, with why (KafkaApis.handleProduceRequest): transactional
    batches need WRITE on their transactional id, else every partition fails; each
    topic needs WRITE (an idempotent producer needs nothing more since Kafka 3.0)."""
    if _has_transactional_records(request) and (
        request.transactional_id is None
        or not authorize(ctx, AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, request.transactional_id)
    ):
        return {t.name: ErrorCode.transactional_id_authorization_failed for t in request.topic_data}
    allowed = authorized_names(ctx, AclOperation.WRITE, ResourceType.TOPIC, (t.name for t in request.topic_data))
    return {t.name: ErrorCode.topic_authorization_failed for t in request.topic_data if t.name not in allowed}


# A v2 record batch's attributes are the int16 at byte 21; bit 4 marks it transactional.
_ATTRIBUTES_LOW_BYTE = 22
_TRANSACTIONAL_BIT = 0x10


def _has_transactional_records(request: ProduceRequest) -> bool:
    """Whether a partition's first batch is transactional (ProduceRequest.hasTransactionalRecords)."""
    return any(
        data.records is not None
        and len(data.records) > _ATTRIBUTES_LOW_BYTE
        and data.records[_ATTRIBUTES_LOW_BYTE] & _TRANSACTIONAL_BIT
        for topic in request.topic_data
        for data in topic.partition_data
    )


def leader_hints(ctx: RequestContext, topics: list[tuple[str, list[PartitionProduceResult]]]) -> list[NodeEndpoint]:
    """KIP-951: the current leader of each partition answered NOT_LEADER_OR_FOLLOWER."""
    if not ctx.broker.in_cluster:
        return []
    hints = None
    for name, results in topics:
        for result in results:
            if result.error_code == ErrorCode.not_leader_or_follower:
                hints = hints or LeaderHints(ctx.broker, ctx.listener_name)
                result.current_leader = hints.current_leader(name, result.index)
    return hints.node_endpoints() if hints is not None else []
