"""WriteTxnMarkers (key 27), v0-1: a transaction coordinator (maybe on another broker)
has this broker, the leader of the partitions named, append the control batches that
end a producer's transaction (Kafka's KafkaApis.handleWriteTxnMarkersRequest).

Per partition: UNKNOWN_TOPIC_OR_PARTITION if it does not exist here,
NOT_LEADER_OR_FOLLOWER if another broker leads it; else the marker is appended as
leader and answered once committed (acks=-1, up to request.timeout.ms). A marker
on a `__consumer_offsets` partition also completes the group coordinator's pending
TxnOffsetCommit offsets of that producer there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio
from kio.schema.errors import ErrorCode

from kwire.clock import now_ms
from kwire.coordinator.group_coordinator import OFFSETS_TOPIC, group_coordinator, setting
from kwire.coordinator.partition_writer import PartitionWriter, TopicPartition
from kwire.errors import KafkaError
from kwire.handlers import RequestContext
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation
from kwire.security.authorizer import authorize_cluster

if TYPE_CHECKING:
    from kwire.broker import Broker

# Kafka appends the markers with the broker's request.timeout.ms.
REQUEST_TIMEOUT_MS = 30_000


def local_writer(broker: Broker) -> PartitionWriter:
    """The writer to this broker's own partitions: the coordinators' when it is the
    local one (so the aborted-transaction index is theirs), else a new local one."""
    from kwire.local_partition_writer import LocalPartitionWriter

    service = broker.services.get("local_partition_writer")
    if isinstance(service, LocalPartitionWriter):
        return service
    groups = group_coordinator(broker)
    if groups is not None and isinstance(groups.writer, LocalPartitionWriter):
        return groups.writer
    return LocalPartitionWriter(broker)


def leads(broker: Broker, tp: TopicPartition) -> bool:
    """Whether this broker's replica of the partition is its leader now (the replica
    manager's view, not the image's: the writer forwards markers for partitions it
    does not lead, and must never send one back here)."""
    partition = broker.partition(*tp)
    return partition is not None and partition.is_leader


async def write_markers(
    broker: Broker,
    producer_id: int,
    producer_epoch: int,
    commit: bool,
    coordinator_epoch: int,
    partitions: list[TopicPartition],
    timeout_ms: int,
) -> dict[TopicPartition, ErrorCode]:
    """One marker on each partition this broker leads; the error code per partition."""
    writer = local_writer(broker)
    groups = group_coordinator(broker)
    results: dict[TopicPartition, ErrorCode] = {}
    appended: dict[TopicPartition, int] = {}
    for tp in partitions:
        partition = broker.partition(*tp)
        if partition is None:
            results[tp] = ErrorCode.unknown_topic_or_partition
            continue
        if not leads(broker, tp):
            results[tp] = ErrorCode.not_leader_or_follower
            continue
        if tp[0] == OFFSETS_TOPIC and groups is not None:
            # Not while the group coordinator reads the partition back: its load would miss it.
            await groups.wait_loaded(tp[1])
        try:
            error = await writer.write_txn_marker(tp, producer_id, producer_epoch, commit, coordinator_epoch, now_ms())
        except KafkaError as e:
            error = e.error_code
        results[tp] = error
        if error is ErrorCode.none:
            # The local append does not yield: the marker is the log's last batch.
            appended[tp] = partition.log_end_offset - 1

    async def replicated(tp: TopicPartition, offset: int) -> None:
        results[tp] = await writer.wait_replicated(tp, offset, timeout_ms)

    async with trio.open_nursery() as nursery:
        for tp, offset in appended.items():
            nursery.start_soon(replicated, tp, offset)
    if groups is not None:
        completed = [tp[1] for tp in appended if tp[0] == OFFSETS_TOPIC and results[tp] is ErrorCode.none]
        if completed:
            groups.complete_transactional_offsets(producer_id, completed, commit)
    return results


@api(27)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(27, ctx.api_version)
    timeout_ms = setting(ctx.broker.config, "request.timeout.ms", REQUEST_TIMEOUT_MS)
    markers = []
    # Only brokers (transaction coordinators) write markers.
    authorized = authorize_cluster(ctx, AclOperation.CLUSTER_ACTION)
    for marker in request.markers:
        partitions = [(t.name, int(i)) for t in marker.topics for i in t.partition_indexes]
        if not authorized:
            results = {tp: ErrorCode.cluster_authorization_failed for tp in partitions}
        else:
            results = await write_markers(
                ctx.broker,
                marker.producer_id,
                marker.producer_epoch,
                bool(marker.transaction_result),
                marker.coordinator_epoch,
                partitions,
                timeout_ms,
            )
        by_topic: dict[str, list[Any]] = {}
        for (name, index), error in results.items():
            by_topic.setdefault(name, []).append(
                make(module.WritableTxnMarkerPartitionResult, partition_index=index, error_code=error)
            )
        markers.append(
            make(
                module.WritableTxnMarkerResult,
                producer_id=marker.producer_id,
                topics=tuple(
                    make(module.WritableTxnMarkerTopicResult, name=name, partitions=tuple(ps))
                    for name, ps in by_topic.items()
                ),
            )
        )
    return make(module.WriteTxnMarkersResponse, markers=tuple(markers))
