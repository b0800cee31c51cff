"""The coordinators' `PartitionWriter` on this broker: appends go straight to the
local partitions, as leader (Kafka's CoordinatorPartitionWriter over its
ReplicaManager). The aborted-transaction index is the partition's (Partition.txn_index,
Kafka's .txnindex), kept by the partition whenever a marker is appended, here or
through replication; this writer only reads it.

broker.py imports this module lazily, with the coordinators, so start-up does not
pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kio.schema.errors import ErrorCode

from kwire.coordinator.partition_writer import PartitionWriter, TopicPartition
from kwire.errors import KafkaError
from kwire.protocol.records import BatchHeader, build_control_batch, validate_batches

# Kafka appends markers within the broker's request.timeout.ms.
MARKER_TIMEOUT_S = 30.0

if TYPE_CHECKING:
    from kwire.broker import Broker, Partition


class LocalPartitionWriter(PartitionWriter):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def _partition(self, tp: TopicPartition) -> Partition:
        partition = self.broker.partition(*tp)
        if partition is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{tp[0]}-{tp[1]} does not exist")
        return partition

    def partition_count(self, topic: str) -> int | None:
        # The cluster's view: in a cluster not every partition has a replica here.
        t = self.broker.metadata_image.topic(topic)
        return None if t is None else len(t.partitions)

    def create_internal_topic(
        self, topic: str, num_partitions: int, replication_factor: int, configs: dict[str, str]
    ) -> int:
        cluster = self.broker.cluster
        if cluster is not None:
            # Created in ZooKeeper in the background (leaders take a moment): the
            # coordinator answers COORDINATOR_NOT_AVAILABLE meanwhile, as Kafka does.
            cluster.create_topic_soon(topic, num_partitions, replication_factor, configs)
            raise KafkaError(ErrorCode.coordinator_not_available, f"creating {topic}")
        created = self.broker.create_topic(topic, num_partitions, replication_factor, dict(configs), internal=True)
        assert created is not None
        return len(created.partitions)

    def append(self, tp: TopicPartition, records: bytearray, headers: list[BatchHeader], timestamp_ms: int) -> int:
        partition = self._partition(tp)
        if not partition.is_leader:
            # A follower's log is its leader's copy: a coordinator that lost the
            # partition a moment ago must not write into it.
            raise KafkaError(ErrorCode.not_leader_or_follower, f"{tp[0]}-{tp[1]} is led by another broker")
        base_offset, _ = partition.append(records, headers, timestamp_ms)
        return base_offset

    def next_sequence(self, tp: TopicPartition, producer_id: int, producer_epoch: int) -> int:
        return self._partition(tp).producers.next_sequence(producer_id, producer_epoch)

    def log_start_offset(self, tp: TopicPartition) -> int:
        return self._partition(tp).log_start_offset

    def log_end_offset(self, tp: TopicPartition) -> int:
        return self._partition(tp).log_end_offset

    def read(self, tp: TopicPartition, offset: int, max_bytes: int) -> bytes:
        return self._partition(tp).log.read(offset, max_bytes).tobytes()

    async def wait_replicated(self, tp: TopicPartition, offset: int, timeout_ms: int) -> ErrorCode:
        partition = self.broker.partition(*tp)
        if partition is None:
            return ErrorCode.not_leader_or_follower  # deleted: no longer led here
        return await partition.wait_for_high_watermark(offset + 1, timeout_ms / 1000)

    async def write_txn_marker(
        self,
        tp: TopicPartition,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
        timestamp_ms: int,
    ) -> ErrorCode:
        partition = self.broker.partition(*tp)
        cluster = self.broker.cluster
        if cluster is not None and (partition is None or not partition.is_leader):
            # Led by another broker: it appends the marker (WriteTxnMarkers).
            return await cluster.send_txn_marker(tp, producer_id, producer_epoch, commit, coordinator_epoch)
        if partition is None:
            return ErrorCode.unknown_topic_or_partition  # deleted since it joined the transaction
        batch = bytearray(build_control_batch(producer_id, producer_epoch, commit, coordinator_epoch, 0, timestamp_ms))
        # The partition indexes an abort itself as it appends the marker.
        partition.append(batch, validate_batches(batch), timestamp_ms)
        # Answered once the ISR has it, as Kafka appends markers with acks=-1.
        return await partition.wait_for_high_watermark(partition.log_end_offset, MARKER_TIMEOUT_S)

    def aborted_transactions(self, tp: TopicPartition, start: int, end: int) -> list[tuple[int, int]]:
        partition = self.broker.partition(*tp)
        if partition is None:
            return []
        return partition.aborted_transactions(start, end)
