"""The transaction coordinator service: transactional ids, their transactions and
the markers that end them (Kafka's TransactionCoordinator, on one broker).

- storage: every transition of a transactional id is appended as a record, keyed as
  Kafka keys it, to partition `abs(hash(transactional id)) % transaction.state.log.num.partitions`
  of the compacted internal topic `__transaction_state`; at start-up the partitions
  are read back (the last record of each id wins, tombstones delete), and a
  transaction left in PrepareCommit/PrepareAbort gets its markers and completes;
- markers: EndTxn has a control batch (commit or abort) appended to each partition
  of the transaction, through the coordinators' `PartitionWriter`, before it answers.
  An abort also records (producer id, first offset, marker offset) in the partition's
  aborted-transaction index (Kafka's .txnindex), which read_committed fetches answer
  with;
- offsets: TxnOffsetCommit offsets stay pending (held here) until the transaction
  commits, when they are written to `__consumer_offsets` as ordinary commits;
- time: one trio task sleeps until the earliest transaction timeout (the transaction
  is aborted and its producer fenced) or transactional-id expiration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from kio.schema.errors import ErrorCode

from kwire.clock import now_ms
from kwire.config import BrokerConfig
from kwire.coordinator import transactions as tx
from kwire.coordinator.group import GroupState, OffsetAndMetadata
from kwire.coordinator.group_coordinator import (
    OFFSETS_TOPIC,
    GroupCoordinator,
    HasServices,
    millis,
    partition_for,
    read_batches,
)
from kwire.coordinator.partition_writer import PartitionWriter
from kwire.coordinator.transactions import TopicPartition, TxnError, TxnMetadata, TxnState
from kwire.errors import KafkaError
from kwire.protocol.records import build_batch, iter_records, validate_batches

log = logging.getLogger(__name__)

TRANSACTION_STATE_TOPIC = "__transaction_state"
COORDINATOR_EPOCH = 0
# Kafka's transaction.abort.timed.out.transaction.cleanup.interval.ms checks every 10 s;
# here a timer wakes at the earliest deadline, no later than this.
MAX_TIMER_SLEEP_S = 60.0


def transaction_coordinator(broker: HasServices) -> TransactionCoordinator | None:
    service = broker.services.get("transactions")
    return service if isinstance(service, TransactionCoordinator) else None


class TransactionCoordinator:
    def __init__(
        self,
        writer: PartitionWriter,
        config: BrokerConfig,
        groups: GroupCoordinator,
        generate_producer_id: Callable[[], int],
    ) -> None:
        """`groups` takes committed TxnOffsetCommit offsets; `generate_producer_id` is
        Kafka's ProducerIdManager (ids unique across restarts)."""
        self.writer = writer
        self.groups = groups
        self.generate_producer_id = generate_producer_id
        self.num_partitions: int = config["transaction.state.log.num.partitions"]
        self.max_timeout_ms: int = config["transaction.max.timeout.ms"]
        self.expiration_ms: int = config["transactional.id.expiration.ms"]
        count = writer.partition_count(TRANSACTION_STATE_TOPIC)
        if count is not None:
            self.num_partitions = count
        self.txns: dict[str, TxnMetadata] = {}
        # Producer id -> transactional id, for the produce path's check.
        self.by_producer: dict[int, str] = {}
        # Pending TxnOffsetCommit offsets: producer id -> group -> partition -> offset.
        self.pending_offsets: dict[int, dict[str, dict[TopicPartition, OffsetAndMetadata]]] = {}
        self.active = False
        self.loading = False
        self._wake = trio.Event()

    # ---- the service ------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        count = self.writer.partition_count(TRANSACTION_STATE_TOPIC)
        self.loading = count is not None
        self.active = True
        task_status.started()
        if count is not None:
            try:
                await self._load(count)
            finally:
                self.loading = False
        while True:
            self._wake = trio.Event()
            deadline = self._next_deadline()
            timeout = MAX_TIMER_SLEEP_S if deadline is None else max(0.0, (deadline - now_ms()) / 1000)
            with trio.move_on_after(min(timeout, MAX_TIMER_SLEEP_S)):
                await self._wake.wait()
            try:
                self.tick(now_ms())
            except Exception:
                log.exception("transaction timers failed")

    def _changed(self) -> None:
        self._wake.set()

    def _next_deadline(self) -> int | None:
        deadlines = []
        for meta in self.txns.values():
            d = meta.deadline()
            if d is not None:
                deadlines.append(d)
            elif meta.state.is_complete:
                deadlines.append(meta.last_update_ms + self.expiration_ms)
        return min(deadlines, default=None)

    def tick(self, now: int) -> None:
        for meta in list(self.txns.values()):
            deadline = meta.deadline()
            if deadline is not None and deadline <= now:
                log.info("transactional id %s: transaction timed out after %d ms, aborting", meta.transactional_id, meta.timeout_ms)
                plan = tx.timeout_abort(meta, now)
                if plan is not None:
                    self._persist(meta)
                    self._finish(meta, plan)
            elif tx.expired(meta, now, self.expiration_ms):
                log.info("transactional id %s expired", meta.transactional_id)
                del self.txns[meta.transactional_id]
                self.by_producer.pop(meta.producer_id, None)
                self._append(meta.transactional_id, None)

    # ---- the log ------------------------------------------------------------------------

    def partition_for(self, transactional_id: str) -> int:
        return partition_for(transactional_id, self.num_partitions)

    def ensure_topic(self) -> None:
        if self.writer.partition_count(TRANSACTION_STATE_TOPIC) is None:
            self.writer.create_internal_topic(
                TRANSACTION_STATE_TOPIC,
                self.num_partitions,
                1,
                {"cleanup.policy": "compact", "segment.bytes": str(100 * 1024 * 1024), "compression.type": "uncompressed"},
            )
            log.info("created %s with %d partitions", TRANSACTION_STATE_TOPIC, self.num_partitions)

    def _append(self, transactional_id: str, value: bytes | None) -> None:
        self.ensure_topic()
        tp = (TRANSACTION_STATE_TOPIC, self.partition_for(transactional_id))
        timestamp = now_ms()
        batch = bytearray(build_batch([(tx.encode_key(transactional_id), value)], timestamp_ms=timestamp))
        self.writer.append(tp, batch, validate_batches(batch), timestamp)

    def _persist(self, meta: TxnMetadata) -> None:
        self._append(meta.transactional_id, tx.encode_value(meta))

    async def _load(self, num_partitions: int) -> None:
        started = now_ms()
        for index in range(num_partitions):
            try:
                self._load_partition(index)
            except Exception:
                log.exception("cannot load %s-%d", TRANSACTION_STATE_TOPIC, index)
            await trio.sleep(0)
        self.by_producer = {meta.producer_id: tid for tid, meta in self.txns.items()}
        await self._take_open_offsets()
        # Transactions caught between prepare and complete get their markers now.
        for meta in list(self.txns.values()):
            plan = tx.recovery_plan(meta)
            if plan is not None:
                log.info("transactional id %s: completing %s after restart", meta.transactional_id, meta.state.display)
                self._finish(meta, plan)
        self._changed()
        log.info("loaded %d transactional ids from %s in %d ms", len(self.txns), TRANSACTION_STATE_TOPIC, now_ms() - started)

    async def _take_open_offsets(self) -> None:
        """TxnOffsetCommit offsets the group coordinator read back without a marker
        become pending again for their open transaction (its EndTxn decides them)."""
        groups = self.groups
        while groups.loading:  # __consumer_offsets is being read back (started before us)
            await trio.sleep(0.01)
        for producer_id, by_group in groups.open_transactional_offsets.items():
            meta = self.txns.get(self.by_producer.get(producer_id, ""))
            if meta is None or meta.producer_id != producer_id or meta.state.is_complete:
                continue
            pending = self.pending_offsets.setdefault(producer_id, {})
            for group_id, offsets in by_group.items():
                pending.setdefault(group_id, {}).update(offsets)
        groups.open_transactional_offsets.clear()

    def _load_partition(self, index: int) -> None:
        for header, batch in read_batches(self.writer, (TRANSACTION_STATE_TOPIC, index)):
            if header.is_control:
                continue
            for record in iter_records(batch):
                if record.key is None:
                    continue
                try:
                    transactional_id = tx.decode_key(record.key)
                    if record.value is None:
                        self.txns.pop(transactional_id, None)
                    else:
                        self.txns[transactional_id] = tx.decode_value(transactional_id, record.value)
                except tx.CodecError as e:
                    log.warning("%s-%d offset %d: skipping record: %s", TRANSACTION_STATE_TOPIC, index, record.offset, e)

    # ---- requests ------------------------------------------------------------------------

    def check(self, transactional_id: str | None) -> ErrorCode | None:
        if not transactional_id:
            return ErrorCode.invalid_request
        if not self.active:
            return ErrorCode.coordinator_not_available
        if self.loading:
            return ErrorCode.coordinator_load_in_progress
        return None

    async def init_producer_id(self, ctx: Any, request: Any, module: Any) -> Any:
        from kwire.handlers.api_versions import NO_THROTTLE
        from kwire.protocol.messages import make

        def answer(error: ErrorCode, producer_id: int = -1, epoch: int = -1) -> Any:
            if error is ErrorCode.producer_fenced and ctx.api_version < 4:
                error = ErrorCode.invalid_producer_epoch
            return make(module.InitProducerIdResponse, throttle_time=NO_THROTTLE, error_code=error,
                        producer_id=producer_id, producer_epoch=epoch)

        transactional_id = request.transactional_id
        error = self.check(transactional_id)
        if error is not None:
            return answer(error)
        try:
            tx.validate_timeout(millis(request.transaction_timeout), self.max_timeout_ms)
            meta, plan = tx.init_producer_id(
                self.txns.get(transactional_id),
                transactional_id,
                millis(request.transaction_timeout),
                getattr(request, "producer_id", -1),
                getattr(request, "producer_epoch", -1),
                now_ms(),
                self.generate_producer_id,
            )
        except TxnError as e:
            return answer(e.error_code)
        self.txns[transactional_id] = meta
        self.by_producer[meta.producer_id] = transactional_id
        try:
            if plan is not None:
                self._write_markers(plan)
            self._persist(meta)
        except Exception:
            log.exception("transactional id %s: cannot persist", transactional_id)
            return answer(ErrorCode.coordinator_not_available)
        self._changed()
        return answer(ErrorCode.none, meta.producer_id, meta.producer_epoch)

    def add_partitions(
        self, transactional_id: str, producer_id: int, producer_epoch: int, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, ErrorCode]:
        error = self.check(transactional_id)
        if error is None:
            unknown = [tp for tp in partitions if not self._partition_exists(tp)]
            if unknown:
                return {
                    tp: ErrorCode.unknown_topic_or_partition if tp in unknown else ErrorCode.operation_not_attempted
                    for tp in partitions
                }
            try:
                if tx.add_partitions(self.txns.get(transactional_id), producer_id, producer_epoch, partitions, now_ms()):
                    self._persist(self.txns[transactional_id])
                    self._changed()
                error = ErrorCode.none
            except TxnError as e:
                error = e.error_code
            except KafkaError:
                log.exception("transactional id %s: cannot persist", transactional_id)
                error = ErrorCode.coordinator_not_available
        return {tp: error for tp in partitions}

    def add_offsets(self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str) -> ErrorCode:
        groups = self.groups
        groups.ensure_offsets_topic()
        tp = (OFFSETS_TOPIC, groups.partition_for(group_id))
        return self.add_partitions(transactional_id, producer_id, producer_epoch, [tp])[tp]

    def txn_offset_commit(
        self,
        transactional_id: str,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        offsets: dict[TopicPartition, tuple[int, int, str | None]],
        member_id: str = "",
        generation_id: int = -1,
    ) -> ErrorCode:
        """One error for all the partitions (as Kafka's validation gives). A member id or
        generation (v3+, KIP-447) is checked against the group, as Kafka's doTxnCommitOffsets."""
        groups = self.groups
        error = groups.check(group_id)
        if error is not None:
            return error
        meta = self.txns.get(transactional_id)
        if meta is None or meta.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping
        if meta.producer_epoch != producer_epoch:
            return ErrorCode.producer_fenced
        if meta.state is not TxnState.ONGOING or (OFFSETS_TOPIC, groups.partition_for(group_id)) not in meta.partitions:
            return ErrorCode.invalid_txn_state
        group = groups.groups.get(group_id)
        if group is not None:
            if group.state is GroupState.DEAD:
                return ErrorCode.coordinator_not_available
            if member_id and member_id not in group.members:
                return ErrorCode.unknown_member_id
            if generation_id >= 0 and generation_id != group.generation_id:
                return ErrorCode.illegal_generation
        timestamp = now_ms()
        committed = {
            tp: OffsetAndMetadata(offset, metadata or "", timestamp, leader_epoch, None)
            for tp, (offset, leader_epoch, metadata) in offsets.items()
        }
        # In the log first (Kafka's transactional offset commit), so a crash before
        # EndTxn keeps them for the transaction's outcome.
        error = groups.store_transactional_offsets(group_id, producer_id, producer_epoch, committed)
        if error is not ErrorCode.none:
            return error
        self.pending_offsets.setdefault(producer_id, {}).setdefault(group_id, {}).update(committed)
        return ErrorCode.none

    def end_txn(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool) -> ErrorCode:
        error = self.check(transactional_id)
        if error is not None:
            return error
        meta = self.txns.get(transactional_id)
        try:
            plan = tx.prepare_end(meta, producer_id, producer_epoch, commit, now_ms())
        except TxnError as e:
            return e.error_code
        if plan is None:
            return ErrorCode.none
        assert meta is not None
        try:
            self._persist(meta)
            self._finish(meta, plan)
        except Exception:
            log.exception("transactional id %s: cannot end the transaction", transactional_id)
            return ErrorCode.coordinator_not_available
        return ErrorCode.none

    def _finish(self, meta: TxnMetadata, plan: tx.EndPlan) -> None:
        """Markers written, then the completed state persisted."""
        self._write_markers(plan)
        tx.complete_end(meta, now_ms())
        self._persist(meta)
        self._changed()

    # ---- markers -------------------------------------------------------------------------

    def _write_markers(self, plan: tx.EndPlan) -> None:
        offsets = self.pending_offsets.pop(plan.producer_id, {})
        if plan.commit and offsets:
            for group_id, committed in offsets.items():
                self.groups.commit_transactional_offsets(group_id, committed)
        timestamp = now_ms()
        for tp in plan.partitions:
            # A partition deleted since it joined the transaction is skipped.
            self.writer.write_txn_marker(tp, plan.producer_id, plan.producer_epoch, plan.commit, COORDINATOR_EPOCH, timestamp)

    def _partition_exists(self, tp: TopicPartition) -> bool:
        count = self.writer.partition_count(tp[0])
        return count is not None and 0 <= tp[1] < count

    # ---- read_committed fetches --------------------------------------------------------

    def aborted_transactions(self, tp: TopicPartition, start: int, end: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of the aborted transactions overlapping [start, end)."""
        return self.writer.aborted_transactions(tp, start, end)

    # ---- hooks for produce and offset fetch ----------------------------------------------

    def verify_produce(self, producer_id: int, producer_epoch: int, topic: str, index: int) -> ErrorCode | None:
        """A transactional batch must belong to its producer's ongoing transaction with
        this partition added (Kafka 3.9's transaction verification)."""
        if self.loading:
            return None  # the transaction is not known yet: not refused for that
        meta = self.txns.get(self.by_producer.get(producer_id, ""))
        if meta is None or meta.producer_id != producer_id:
            return ErrorCode.invalid_txn_state
        if producer_epoch < meta.producer_epoch:
            return ErrorCode.invalid_producer_epoch
        if meta.state is TxnState.ONGOING and (topic, index) in meta.partitions:
            return None
        return ErrorCode.invalid_txn_state

    def pending_offset_partitions(self, group_id: str) -> set[TopicPartition]:
        """Partitions of `group_id` with a transactional commit not yet completed."""
        found: set[TopicPartition] = set()
        for by_group in self.pending_offsets.values():
            found.update(by_group.get(group_id, {}))
        return found

    # ---- admin ---------------------------------------------------------------------------

    def describe(self, transactional_id: str) -> tuple[ErrorCode, TxnMetadata | None]:
        error = self.check(transactional_id)
        if error is not None:
            return error, None
        meta = self.txns.get(transactional_id)
        if meta is None or meta.state is TxnState.DEAD:
            return ErrorCode.transactional_id_not_found, None
        return ErrorCode.none, meta
