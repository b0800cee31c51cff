"""What the coordinators need of the log: Kafka's `CoordinatorPartitionWriter`
(group-coordinator module), the seam between a coordinator and the replica manager.

The group and transaction coordinators keep their state in internal topics and end
transactions with markers in data partitions. They do it through this interface
only, so they know nothing of the broker that holds the partitions: today a local
adapter (`kwire.local_partition_writer`), later one that writes through a cluster's
partition leaders. Every write is as leader; a coordinator answers only once
`wait_replicated` says the write is committed (Kafka's coordinators append with
acks=-1). On one broker a write is committed when the call returns.
"""

from __future__ import annotations

from typing import Protocol

from kio.schema.errors import ErrorCode

from kwire.protocol.records import BatchHeader

TopicPartition = tuple[str, int]


class PartitionWriter(Protocol):
    def partition_count(self, topic: str) -> int | None:
        """The topic's number of partitions, None if it does not exist: a coordinator
        hashes its keys over its internal topic's partitions, as created."""
        ...

    def create_internal_topic(
        self, topic: str, num_partitions: int, replication_factor: int, configs: dict[str, str]
    ) -> int:
        """Create a coordinator's internal topic (a name clients may not create) with
        its own configs; returns its partition count. Raises KafkaError as CreateTopics."""
        ...

    def append(self, tp: TopicPartition, records: bytearray, headers: list[BatchHeader], timestamp_ms: int) -> int:
        """Append validated batches (`headers` from `validate_batches(records)`) as
        leader; returns the base offset. Raises KafkaError (e.g. producer state errors,
        or UNKNOWN_TOPIC_OR_PARTITION) that the caller maps to its own answer."""
        ...

    def next_sequence(self, tp: TopicPartition, producer_id: int, producer_epoch: int) -> int:
        """The sequence the producer's next batch on `tp` must carry: a TxnOffsetCommit's
        offsets are appended as that producer's transactional batch."""
        ...

    def log_start_offset(self, tp: TopicPartition) -> int:
        """Where loading a coordinator partition starts."""
        ...

    def log_end_offset(self, tp: TopicPartition) -> int:
        """Where loading a coordinator partition stops."""
        ...

    def read(self, tp: TopicPartition, offset: int, max_bytes: int) -> bytes:
        """Whole batches from the one holding `offset`, up to `max_bytes` (at least one
        batch), to load a coordinator's state back from its partition."""
        ...

    async def wait_replicated(self, tp: TopicPartition, offset: int, timeout_ms: int) -> ErrorCode:
        """Wait until the partition's high watermark is past `offset` (the write at
        `offset` is committed): NONE; NOT_ENOUGH_REPLICAS or REQUEST_TIMED_OUT when the
        in-sync replicas did not get it in time; NOT_LEADER_OR_FOLLOWER when this broker
        lost the leadership meanwhile."""
        ...

    async def write_txn_marker(
        self,
        tp: TopicPartition,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
        timestamp_ms: int,
    ) -> ErrorCode:
        """Kafka's WriteTxnMarkers to the partition's leader (maybe another broker):
        append the control batch that ends the producer's transaction on `tp`. NONE
        once written; UNKNOWN_TOPIC_OR_PARTITION if the partition no longer exists;
        otherwise a retriable code (NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS,
        REQUEST_TIMED_OUT, ...) on which the coordinator retries, as Kafka's
        TransactionMarkerChannelManager does."""
        ...

    def aborted_transactions(self, tp: TopicPartition, start: int, end: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of the aborted transactions on `tp` overlapping
        [start, end): what a read_committed fetch answers with."""
        ...
