"""The coordinators' `PartitionWriter` on this broker: appends go straight to the
local partitions, as leader (Kafka's CoordinatorPartitionWriter over its
ReplicaManager). It also keeps the aborted-transaction index, which in Kafka belongs
to the partition's log (.txnindex) and is updated when a marker is appended.

broker.py imports this module lazily, with the coordinators, so start-up does not
pay for it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kio.schema.errors import ErrorCode

from kwire.coordinator.partition_writer import PartitionWriter, TopicPartition
from kwire.errors import KafkaError
from kwire.protocol.records import BatchHeader, build_control_batch, validate_batches

if TYPE_CHECKING:
    from kwire.broker import Broker, Partition

log = logging.getLogger(__name__)

ABORTED_INDEX_FILE = "aborted.txnindex"


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    producer_id: int
    first_offset: int
    last_offset: int


class LocalPartitionWriter(PartitionWriter):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        # Aborted-transaction index per partition, read from its file on first use;
        # keyed by topic id, so a topic re-created under the same name starts empty.
        self._aborted: dict[tuple[uuid.UUID, int], list[AbortedTxn]] = {}

    def _partition(self, tp: TopicPartition) -> Partition:
        partition = self.broker.partition(*tp)
        if partition is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"{tp[0]}-{tp[1]} does not exist")
        return partition

    def partition_count(self, topic: str) -> int | None:
        t = self.broker.topics.get(topic)
        return None if t is None else len(t.partitions)

    def create_internal_topic(
        self, topic: str, num_partitions: int, replication_factor: int, configs: dict[str, str]
    ) -> int:
        created = self.broker.create_topic(topic, num_partitions, replication_factor, dict(configs), internal=True)
        assert created is not None
        return len(created.partitions)

    def append(self, tp: TopicPartition, records: bytearray, headers: list[BatchHeader], timestamp_ms: int) -> int:
        base_offset, _ = self._partition(tp).append(records, headers, timestamp_ms)
        return base_offset

    def next_sequence(self, tp: TopicPartition, producer_id: int, producer_epoch: int) -> int:
        return self._partition(tp).producers.next_sequence(producer_id, producer_epoch)

    def log_start_offset(self, tp: TopicPartition) -> int:
        return self._partition(tp).log_start_offset

    def log_end_offset(self, tp: TopicPartition) -> int:
        return self._partition(tp).log_end_offset

    def read(self, tp: TopicPartition, offset: int, max_bytes: int) -> bytes:
        return self._partition(tp).log.read(offset, max_bytes).tobytes()

    def write_txn_marker(
        self,
        tp: TopicPartition,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
        timestamp_ms: int,
    ) -> bool:
        partition = self.broker.partition(*tp)
        if partition is None:
            return False  # deleted since it joined the transaction
        entry = partition.producers.producers.get(producer_id)
        first_offset = entry.current_txn_first_offset if entry is not None else -1
        batch = bytearray(build_control_batch(producer_id, producer_epoch, commit, coordinator_epoch, 0, timestamp_ms))
        marker_offset, _ = partition.append(batch, validate_batches(batch), timestamp_ms)
        if not commit and first_offset >= 0:
            self._record_abort(partition, AbortedTxn(producer_id, first_offset, marker_offset))
        return True

    def aborted_transactions(self, tp: TopicPartition, start: int, end: int) -> list[tuple[int, int]]:
        partition = self.broker.partition(*tp)
        if partition is None:
            return []
        return [
            (e.producer_id, e.first_offset)
            for e in self._index(partition)
            if e.last_offset >= start and e.first_offset < end
        ]

    # ---- the aborted-transaction index ----------------------------------------------------

    def _index(self, partition: Partition) -> list[AbortedTxn]:
        key = (partition.topic.topic_id, partition.index)
        index = self._aborted.get(key)
        if index is None:
            index = []
            path = Path(partition.log.directory) / ABORTED_INDEX_FILE
            end = partition.log_end_offset
            try:
                for line in path.read_text().splitlines():
                    parts = line.split()
                    if len(parts) == 3:
                        entry = AbortedTxn(*(int(p) for p in parts))
                        if entry.last_offset < end:  # not beyond a truncated log
                            index.append(entry)
            except (OSError, ValueError):
                pass
            self._aborted[key] = index
        return index

    def _record_abort(self, partition: Partition, entry: AbortedTxn) -> None:
        self._index(partition).append(entry)
        path = Path(partition.log.directory) / ABORTED_INDEX_FILE
        try:
            with open(path, "a") as f:
                f.write(f"{entry.producer_id} {entry.first_offset} {entry.last_offset}\n")
        except OSError:
            log.exception("cannot write %s", path)
