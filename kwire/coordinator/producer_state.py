"""Idempotent producer state per partition (Kafka's ProducerStateManager), sans-IO.

For each producer id the partition remembers its epoch and the metadata of its
last 5 batches, enough to answer a retried duplicate with its original offset
and to refuse a sequence gap, and the first offset of its ongoing transaction. The
state is rebuilt from batch headers at start-up. A transaction marker completes the
producer's ongoing transaction; `update` reports it (Kafka's CompletedTxn), and the
partition indexes an aborted one (kwire.log.txn_index).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kio.schema.errors import ErrorCode

from kwire.errors import KafkaError
from kwire.protocol.records import CONTROL_ABORT, NO_SEQUENCE, BatchHeader

# Kafka keeps the metadata of this many recent batches per producer; clients
# never have more in flight (max.in.flight.requests.per.connection <= 5).
NUM_BATCHES_TO_RETAIN = 5
SEQUENCE_WRAP = 0x80000000


@dataclass(slots=True)
class BatchMetadata:
    first_sequence: int
    last_sequence: int
    first_offset: int
    last_offset: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class CompletedTxn:
    """A transaction that a marker ended (Kafka's CompletedTxn)."""

    producer_id: int
    first_offset: int
    # The marker's offset.
    last_offset: int
    is_aborted: bool


@dataclass(slots=True)
class ProducerEntry:
    producer_epoch: int
    batches: deque[BatchMetadata] = field(default_factory=lambda: deque(maxlen=NUM_BATCHES_TO_RETAIN))
    # First offset of the open transaction, for the last stable offset (transactions).
    current_txn_first_offset: int = -1
    last_timestamp: int = -1

    @property
    def last_sequence(self) -> int:
        return self.batches[-1].last_sequence if self.batches else NO_SEQUENCE


class ProducerStateManager:
    """Sequence and epoch checks for the batches of one partition."""

    def __init__(self) -> None:
        self.producers: dict[int, ProducerEntry] = {}

    def check(self, header: BatchHeader) -> int | None:
        """Validate a batch before it is appended.

        Returns the original base offset when the batch duplicates one of the
        producer's recent batches (the caller must not append it again), None
        when the batch is new. Raises KafkaError for a fenced epoch or a
        sequence gap, with Kafka's error code.
        """
        if header.producer_id < 0 or header.is_control:
            return None
        entry = self.producers.get(header.producer_id)
        if entry is None:
            # Unknown producer (new, or its state expired): any sequence starts it.
            return None
        if header.producer_epoch < entry.producer_epoch:
            raise KafkaError(
                ErrorCode.invalid_producer_epoch,
                f"producer epoch {header.producer_epoch} is older than {entry.producer_epoch}",
            )
        if header.producer_epoch > entry.producer_epoch:
            if header.base_sequence != 0:
                raise KafkaError(
                    ErrorCode.out_of_order_sequence_number,
                    f"new epoch {header.producer_epoch} must start at sequence 0, "
                    f"got {header.base_sequence}",
                )
            return None
        for batch in entry.batches:
            if (
                batch.first_sequence == header.base_sequence
                and batch.last_sequence == header.last_sequence
            ):
                return batch.first_offset
        last = entry.last_sequence
        if last != NO_SEQUENCE and header.base_sequence != (last + 1) % SEQUENCE_WRAP:
            raise KafkaError(
                ErrorCode.out_of_order_sequence_number,
                f"expected sequence {(last + 1) % SEQUENCE_WRAP}, got {header.base_sequence}",
            )
        return None

    def update(self, header: BatchHeader, control_type: int | None = None) -> CompletedTxn | None:
        """Record an appended batch (its offsets assigned).

        A control batch ends the producer's ongoing transaction, if it has one, and
        that transaction is returned; `control_type` is the marker's type
        (records.CONTROL_ABORT or CONTROL_COMMIT; None when the caller does not need
        to know, and the transaction is reported as not aborted).
        """
        if header.producer_id < 0:
            return None
        entry = self.producers.get(header.producer_id)
        if entry is None:
            entry = ProducerEntry(header.producer_epoch)
            self.producers[header.producer_id] = entry
        elif header.producer_epoch > entry.producer_epoch:
            # A new epoch forgets the batches but not the ongoing transaction, as in
            # Kafka: the coordinator aborts a timed-out or fenced producer's
            # transaction with a bumped epoch, and that marker must complete it.
            entry = ProducerEntry(header.producer_epoch, current_txn_first_offset=entry.current_txn_first_offset)
            self.producers[header.producer_id] = entry
        elif header.producer_epoch < entry.producer_epoch:
            # Only reachable through replayed history; the newer epoch stands.
            return None
        entry.last_timestamp = header.max_timestamp
        if header.is_control:
            first_offset = entry.current_txn_first_offset
            entry.current_txn_first_offset = -1
            if first_offset < 0:
                return None  # no transaction of this producer here: nothing completed
            return CompletedTxn(header.producer_id, first_offset, header.base_offset, control_type == CONTROL_ABORT)
        if header.is_transactional and entry.current_txn_first_offset < 0:
            entry.current_txn_first_offset = header.base_offset
        if header.base_sequence != NO_SEQUENCE:
            entry.batches.append(
                BatchMetadata(
                    header.base_sequence,
                    header.last_sequence,
                    header.base_offset,
                    header.last_offset,
                    header.max_timestamp,
                )
            )
        return None

    def next_sequence(self, producer_id: int, producer_epoch: int) -> int:
        """The sequence a new batch of this producer and epoch must start at, for a
        batch the broker writes on the producer's behalf (a TxnOffsetCommit's offsets)."""
        entry = self.producers.get(producer_id)
        if entry is None or entry.producer_epoch != producer_epoch or entry.last_sequence == NO_SEQUENCE:
            return 0
        return (entry.last_sequence + 1) % SEQUENCE_WRAP

    def rebuild(self, headers: Iterable[BatchHeader]) -> None:
        """Replay the log's batch headers, oldest first."""
        self.producers.clear()
        for header in headers:
            self.update(header)

    def to_snapshot(self, log_end_offset: int) -> bytes:
        """The state as of `log_end_offset`, for a fast clean restart (Kafka's .snapshot)."""
        producers = {
            str(pid): {
                "epoch": e.producer_epoch,
                "txn_first_offset": e.current_txn_first_offset,
                "last_timestamp": e.last_timestamp,
                "batches": [
                    [b.first_sequence, b.last_sequence, b.first_offset, b.last_offset, b.timestamp]
                    for b in e.batches
                ],
            }
            for pid, e in self.producers.items()
        }
        return json.dumps({"log_end_offset": log_end_offset, "producers": producers}).encode()

    def load_snapshot(self, path: Path, log_end_offset: int) -> bool:
        """Load a snapshot taken at exactly `log_end_offset`; False if none fits."""
        try:
            data = json.loads(path.read_bytes())
            if data["log_end_offset"] != log_end_offset:
                return False
            producers = {}
            for pid, e in data["producers"].items():
                entry = ProducerEntry(e["epoch"], current_txn_first_offset=e["txn_first_offset"], last_timestamp=e["last_timestamp"])
                entry.batches.extend(BatchMetadata(*b) for b in e["batches"])
                producers[int(pid)] = entry
        except (OSError, ValueError, KeyError, TypeError):
            return False
        self.producers = producers
        return True

    def last_data_offsets(self) -> dict[int, int]:
        """Producer id -> last offset of its last data batch, for the producers with
        batches here: the log cleaner keeps those batches (if only as empty batches),
        so that the producer state rebuilt from the log still knows their sequence."""
        return {pid: entry.batches[-1].last_offset for pid, entry in self.producers.items() if entry.batches}

    def truncate(self) -> None:
        """Forget everything; used when the log is truncated and replayed."""
        self.producers.clear()

    def last_stable_offset(self, completed: CompletedTxn) -> int:
        """The last stable offset just after `completed` ended (Kafka's
        ProducerStateManager.lastStableOffset): the first offset of the oldest
        transaction still ongoing, else the offset after the marker."""
        first_unstable = self.first_unstable_offset()
        return completed.last_offset + 1 if first_unstable is None else first_unstable

    def first_unstable_offset(self) -> int | None:
        """First offset of the oldest open transaction, if any."""
        offsets = [e.current_txn_first_offset for e in self.producers.values() if e.current_txn_first_offset >= 0]
        return min(offsets) if offsets else None
