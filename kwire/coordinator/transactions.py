"""Transaction metadata per transactional id (Kafka's TransactionMetadata and the
decisions of its TransactionCoordinator), sans-IO.

Each operation checks a request against the metadata and, when it is accepted,
moves the metadata to its next state. Nothing here writes: the service in
`transaction_coordinator.py` persists each transition to `__transaction_state`,
writes the markers and runs the timers. Also here: the records of
`__transaction_state`, byte for byte as Kafka writes them (TransactionLogKey v0,
TransactionLogValue v0; v1, flexible, is read too).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kio.schema.errors import ErrorCode

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
MAX_EPOCH = 32767  # Short.MAX_VALUE: an epoch that reaches it needs a new producer id

TopicPartition = tuple[str, int]


class TxnState(enum.IntEnum):
    """TransactionState, with Kafka's ids (the TransactionStatus byte of the log)."""

    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7

    @property
    def display(self) -> str:
        """The name DescribeTransactions and ListTransactions use."""
        return _NAMES[self]

    @property
    def is_complete(self) -> bool:
        return self in (TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)


_NAMES = {
    TxnState.EMPTY: "Empty",
    TxnState.ONGOING: "Ongoing",
    TxnState.PREPARE_COMMIT: "PrepareCommit",
    TxnState.PREPARE_ABORT: "PrepareAbort",
    TxnState.COMPLETE_COMMIT: "CompleteCommit",
    TxnState.COMPLETE_ABORT: "CompleteAbort",
    TxnState.DEAD: "Dead",
    TxnState.PREPARE_EPOCH_FENCE: "PrepareEpochFence",
}
STATE_BY_NAME = {v.lower(): k for k, v in _NAMES.items()}


@dataclass(slots=True)
class TxnMetadata:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState = TxnState.EMPTY
    partitions: set[TopicPartition] = field(default_factory=set)
    start_ms: int = -1
    last_update_ms: int = -1
    # The (id, epoch) answered before the last bump, for a retried InitProducerId (KIP-360).
    last_producer_id: int = NO_PRODUCER_ID
    last_producer_epoch: int = NO_PRODUCER_EPOCH

    def deadline(self) -> int | None:
        """When an ongoing transaction times out."""
        if self.state is TxnState.ONGOING and self.start_ms >= 0:
            return self.start_ms + self.timeout_ms
        return None


class TxnError(Exception):
    def __init__(self, error_code: ErrorCode, message: str = "") -> None:
        super().__init__(message or error_code.name)
        self.error_code = error_code


@dataclass(slots=True)
class EndPlan:
    """Markers to write: the transaction's partitions, with which outcome and epoch."""

    producer_id: int
    producer_epoch: int
    commit: bool
    partitions: list[TopicPartition]


# ---- InitProducerId --------------------------------------------------------------------


def validate_timeout(timeout_ms: int, max_timeout_ms: int) -> None:
    if timeout_ms <= 0 or timeout_ms > max_timeout_ms:
        raise TxnError(
            ErrorCode.invalid_transaction_timeout,
            f"The transaction timeout {timeout_ms} is larger than the maximum value allowed by the broker "
            f"(as configured by transaction.max.timeout.ms: {max_timeout_ms}).",
        )


def init_producer_id(
    meta: TxnMetadata | None,
    transactional_id: str,
    timeout_ms: int,
    expected_id: int,
    expected_epoch: int,
    now: int,
    new_producer_id: Callable[[], int],
) -> tuple[TxnMetadata, EndPlan | None]:
    """Kafka's handleInitProducerId. Returns the metadata as it now is, and the abort to
    complete first when an ongoing transaction is fenced (its markers carry the fenced
    epoch). The answer is the metadata's (producer id, epoch) afterwards."""
    if meta is None or meta.state is TxnState.DEAD:
        meta = TxnMetadata(transactional_id, new_producer_id(), NO_PRODUCER_EPOCH, timeout_ms, last_update_ms=now)
        _bump(meta, new_producer_id)
        return meta, None
    if meta.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT, TxnState.PREPARE_EPOCH_FENCE):
        raise TxnError(ErrorCode.concurrent_transactions)
    if expected_id != NO_PRODUCER_ID:
        current = (meta.producer_id, meta.producer_epoch)
        last = (meta.last_producer_id, meta.last_producer_epoch)
        if (expected_id, expected_epoch) == last and meta.state is not TxnState.ONGOING:
            # A retry of the bump we already answered: answer it again.
            return meta, None
        if (expected_id, expected_epoch) != current:
            raise TxnError(ErrorCode.producer_fenced, "The producer has been fenced by a newer epoch or id")
    plan = None
    if meta.state is TxnState.ONGOING:
        # Fence the producer of the ongoing transaction and abort it with a higher epoch.
        if meta.producer_epoch + 1 >= MAX_EPOCH:
            meta.producer_epoch = MAX_EPOCH - 1
        else:
            meta.producer_epoch += 1
        plan = EndPlan(meta.producer_id, meta.producer_epoch, False, sorted(meta.partitions))
        meta.state = TxnState.COMPLETE_ABORT
        meta.partitions = set()
    meta.timeout_ms = timeout_ms
    _bump(meta, new_producer_id)
    meta.state = TxnState.EMPTY
    meta.partitions = set()
    meta.start_ms = -1
    meta.last_update_ms = now
    return meta, plan


def _bump(meta: TxnMetadata, new_producer_id: Callable[[], int]) -> None:
    meta.last_producer_id, meta.last_producer_epoch = meta.producer_id, meta.producer_epoch
    if meta.producer_epoch + 1 >= MAX_EPOCH:
        meta.producer_id, meta.producer_epoch = new_producer_id(), 0
    else:
        meta.producer_epoch += 1


# ---- the transaction ------------------------------------------------------------------


def check_producer(meta: TxnMetadata | None, producer_id: int, producer_epoch: int) -> TxnMetadata:
    if meta is None or meta.state is TxnState.DEAD or meta.producer_id != producer_id:
        raise TxnError(
            ErrorCode.invalid_producer_id_mapping,
            "The producer attempted to use a producer id which is not currently assigned to its transactional id.",
        )
    if producer_epoch != meta.producer_epoch:
        raise TxnError(ErrorCode.producer_fenced, "There is a newer producer with the same transactionalId which fences the current one.")
    return meta


def add_partitions(
    meta: TxnMetadata | None, producer_id: int, producer_epoch: int, partitions: Iterable[TopicPartition], now: int
) -> bool:
    """Kafka's handleAddPartitionsToTransaction. True when the metadata changed (to persist)."""
    meta = check_producer(meta, producer_id, producer_epoch)
    if meta.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT, TxnState.PREPARE_EPOCH_FENCE):
        raise TxnError(ErrorCode.concurrent_transactions)
    new = set(partitions)
    if meta.state is TxnState.ONGOING and new <= meta.partitions:
        return False
    if meta.state is not TxnState.ONGOING:
        meta.start_ms = now
        meta.partitions = set()
    meta.partitions |= new
    meta.state = TxnState.ONGOING
    meta.last_update_ms = now
    return True


def prepare_end(meta: TxnMetadata | None, producer_id: int, producer_epoch: int, commit: bool, now: int) -> EndPlan | None:
    """Kafka's handleEndTransaction, first half: to PrepareCommit/PrepareAbort. Returns
    the markers to write, or None when the request repeats a completed end (answered OK)."""
    meta = check_producer(meta, producer_id, producer_epoch)
    state = meta.state
    if state is TxnState.ONGOING:
        meta.state = TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT
        meta.last_update_ms = now
        return EndPlan(meta.producer_id, meta.producer_epoch, commit, sorted(meta.partitions))
    if (state is TxnState.COMPLETE_COMMIT and commit) or (state is TxnState.COMPLETE_ABORT and not commit):
        return None
    if (state is TxnState.PREPARE_COMMIT and commit) or (state is TxnState.PREPARE_ABORT and not commit):
        raise TxnError(ErrorCode.concurrent_transactions)
    if state is TxnState.PREPARE_EPOCH_FENCE:
        raise TxnError(ErrorCode.producer_fenced)
    raise TxnError(
        ErrorCode.invalid_txn_state,
        f"TransactionalId {meta.transactional_id} is in state {state.display}, cannot "
        f"{'commit' if commit else 'abort'}",
    )


def complete_end(meta: TxnMetadata, now: int) -> None:
    """Second half, once every marker is written: to CompleteCommit/CompleteAbort."""
    meta.state = TxnState.COMPLETE_COMMIT if meta.state is TxnState.PREPARE_COMMIT else TxnState.COMPLETE_ABORT
    meta.partitions = set()
    meta.start_ms = -1
    meta.last_update_ms = now


def timeout_abort(meta: TxnMetadata, now: int) -> EndPlan | None:
    """An ongoing transaction past its timeout: the epoch is bumped (the producer fenced,
    as Kafka 3.x does) and the transaction aborted with it."""
    if meta.state is not TxnState.ONGOING:
        return None
    if meta.producer_epoch + 1 < MAX_EPOCH:
        meta.producer_epoch += 1
    meta.last_producer_id, meta.last_producer_epoch = NO_PRODUCER_ID, NO_PRODUCER_EPOCH
    meta.state = TxnState.PREPARE_ABORT
    meta.last_update_ms = now
    return EndPlan(meta.producer_id, meta.producer_epoch, False, sorted(meta.partitions))


def expired(meta: TxnMetadata, now: int, expiration_ms: int) -> bool:
    """transactional.id.expiration.ms: an idle, completed transactional id is forgotten."""
    return meta.state.is_complete and meta.last_update_ms + expiration_ms <= now


def recovery_plan(meta: TxnMetadata) -> EndPlan | None:
    """After loading: a transaction left in PrepareCommit/PrepareAbort gets its markers."""
    if meta.state in (TxnState.PREPARE_COMMIT, TxnState.PREPARE_ABORT):
        return EndPlan(meta.producer_id, meta.producer_epoch, meta.state is TxnState.PREPARE_COMMIT, sorted(meta.partitions))
    if meta.state is TxnState.PREPARE_EPOCH_FENCE:
        meta.state = TxnState.PREPARE_ABORT
        return EndPlan(meta.producer_id, meta.producer_epoch, False, sorted(meta.partitions))
    return None


# ---- the records of __transaction_state --------------------------------------------------

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


class CodecError(ValueError):
    pass


def encode_key(transactional_id: str) -> bytes:
    data = transactional_id.encode()
    return _I16.pack(0) + _I16.pack(len(data)) + data


def decode_key(data: bytes) -> str:
    try:
        (version,) = _I16.unpack_from(data, 0)
        if version != 0:
            raise CodecError(f"unknown TransactionLogKey version {version}")
        (n,) = _I16.unpack_from(data, 2)
        return data[4 : 4 + n].decode()
    except struct.error as e:
        raise CodecError(str(e)) from None


def encode_value(meta: TxnMetadata) -> bytes:
    out = bytearray(_I16.pack(0))
    out += _I64.pack(meta.producer_id) + _I16.pack(meta.producer_epoch) + _I32.pack(meta.timeout_ms)
    out += _I8.pack(int(meta.state))
    by_topic: dict[str, list[int]] = {}
    for topic, index in sorted(meta.partitions):
        by_topic.setdefault(topic, []).append(index)
    out += _I32.pack(len(by_topic))
    for topic, indexes in by_topic.items():
        name = topic.encode()
        out += _I16.pack(len(name)) + name + _I32.pack(len(indexes))
        for index in indexes:
            out += _I32.pack(index)
    out += _I64.pack(meta.last_update_ms) + _I64.pack(meta.start_ms)
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes, flexible: bool) -> None:
        self.data, self.pos, self.flexible = data, 0, flexible

    def fixed(self, s: struct.Struct) -> int:
        (v,) = s.unpack_from(self.data, self.pos)
        self.pos += s.size
        return v

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            b = self.data[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def length(self) -> int:
        """Array length (-1 for null)."""
        return self.uvarint() - 1 if self.flexible else self.fixed(_I32)

    def string(self) -> str:
        n = self.uvarint() - 1 if self.flexible else self.fixed(_I16)
        s = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return s

    def skip_tags(self) -> None:
        if self.flexible:
            for _ in range(self.uvarint()):
                self.uvarint()
                self.pos += self.uvarint()


def decode_value(transactional_id: str, data: bytes) -> TxnMetadata:
    try:
        version = _I16.unpack_from(data, 0)[0]
        if version not in (0, 1):
            raise CodecError(f"unknown TransactionLogValue version {version}")
        r = _Reader(data, version >= 1)
        r.pos = 2
        producer_id = r.fixed(_I64)
        epoch = r.fixed(_I16)
        timeout = r.fixed(_I32)
        state = TxnState(r.fixed(_I8))
        partitions: set[TopicPartition] = set()
        for _ in range(max(r.length(), 0)):
            topic = r.string()
            for _ in range(max(r.length(), 0)):
                partitions.add((topic, r.fixed(_I32)))
            r.skip_tags()
        last_update = r.fixed(_I64)
        start = r.fixed(_I64)
    except (struct.error, IndexError, ValueError) as e:
        raise CodecError(str(e)) from None
    return TxnMetadata(transactional_id, producer_id, epoch, timeout, state, partitions, start, last_update)
