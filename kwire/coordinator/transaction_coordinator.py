"""The transaction coordinator service: transactional ids, their transactions and
the markers that end them (Kafka's TransactionCoordinator and TransactionStateManager).

- ownership: it serves the transactional ids of the `__transaction_state` partitions
  this broker leads (`abs(hash(transactional id)) % transaction.state.log.num.partitions`).
  `on_elected` reads a partition back (its ids answer COORDINATOR_LOAD_IN_PROGRESS
  meanwhile; the last record of each id wins, tombstones delete), and a transaction
  found in PrepareCommit/PrepareAbort gets its markers again and completes;
  `on_resigned` drops the partition's ids. Any other id answers NOT_COORDINATOR. Alone
  (the default), it elects itself for every partition when it starts. The partition's
  leader epoch is the coordinator epoch its markers carry;
- storage: every transition of a transactional id is appended as a record, keyed as
  Kafka keys it, and answered once committed (replicated); a transition whose write
  fails is undone. While one is being written, other requests for the id answer
  CONCURRENT_TRANSACTIONS, as Kafka's pending state does;
- markers: EndTxn has a control batch (commit or abort) written to every partition of
  the transaction at once, through the coordinators' `PartitionWriter` (to each
  partition's leader), retried with a backoff until written, then the completed state
  persisted; EndTxn answers after that (Kafka answers after the prepare; kwire's
  clients see the outcome in every partition once EndTxn returns). A marker on a
  `__consumer_offsets` partition also completes the group coordinator's pending
  TxnOffsetCommit offsets there;
- time: one trio task sleeps until the earliest transaction timeout (the transaction
  is aborted and its producer fenced) or transactional-id expiration.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import trio
from kio.schema.errors import ErrorCode

from kwire.clock import now_ms
from kwire.config import BrokerConfig
from kwire.coordinator import transactions as tx
from kwire.coordinator.group_coordinator import (
    OFFSETS_TOPIC,
    GroupCoordinator,
    HasServices,
    load_batches,
    millis,
    partition_for,
    setting,
    store_error,
)
from kwire.coordinator.partition_writer import PartitionWriter
from kwire.coordinator.transactions import TopicPartition, TxnError, TxnMetadata, TxnState
from kwire.errors import KafkaError
from kwire.protocol.records import build_batch, iter_records, validate_batches

log = logging.getLogger(__name__)

TRANSACTION_STATE_TOPIC = "__transaction_state"
# Kafka's transaction.abort.timed.out.transaction.cleanup.interval.ms checks every 10 s;
# here a timer wakes at the earliest deadline, no later than this.
MAX_TIMER_SLEEP_S = 60.0
# Kafka's transaction state appends wait up to the broker's request.timeout.ms.
REQUEST_TIMEOUT_MS = 30_000
# Between attempts at a marker or a completed state that failed with a retriable error
# (Kafka's marker channel re-sends on its next round).
RETRY_BACKOFF_S = 0.1
# Marker errors after which the marker is not sent again (Kafka's
# TransactionMarkerRequestCompletionHandler: the producer or coordinator moved on).
_ABANDON_MARKER = (ErrorCode.invalid_producer_epoch, ErrorCode.transaction_coordinator_fenced)


def transaction_coordinator(broker: HasServices) -> TransactionCoordinator | None:
    service = broker.services.get("transactions")
    return service if isinstance(service, TransactionCoordinator) else None


def _copy(meta: TxnMetadata | None) -> TxnMetadata | None:
    return None if meta is None else dataclasses.replace(meta, partitions=set(meta.partitions))


class TransactionCoordinator:
    def __init__(
        self,
        writer: PartitionWriter,
        config: BrokerConfig,
        groups: GroupCoordinator,
        generate_producer_id: Callable[[], int],
        *,
        owns_all_partitions: bool = True,
    ) -> None:
        """`groups` takes the outcome of transactions on `__consumer_offsets`;
        `generate_producer_id` is Kafka's ProducerIdManager (ids unique across restarts).
        With `owns_all_partitions` (one broker) `run` elects itself for every partition;
        else the cluster calls `on_elected` / `on_resigned`."""
        self.writer = writer
        self.groups = groups
        self.generate_producer_id = generate_producer_id
        self.owns_all_partitions = owns_all_partitions
        self.num_partitions: int = config["transaction.state.log.num.partitions"]
        self.max_timeout_ms: int = config["transaction.max.timeout.ms"]
        self.expiration_ms: int = config["transactional.id.expiration.ms"]
        self.write_timeout_ms: int = setting(config, "request.timeout.ms", REQUEST_TIMEOUT_MS)
        self.replication_factor: int = setting(config, "transaction.state.log.replication.factor", 1)
        count = writer.partition_count(TRANSACTION_STATE_TOPIC)
        if count is not None:
            self.num_partitions = count
        self.txns: dict[str, TxnMetadata] = {}
        # Producer id -> transactional id, for the produce path's check.
        self.by_producer: dict[int, str] = {}
        self.active = False
        # Partitions being read back, and those loaded: partition -> coordinator epoch.
        self.loading: set[int] = set()
        self.owned: dict[int, int] = {}
        self._epochs: dict[int, int] = {}
        self._load_scopes: dict[int, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self._queued: list[tuple[bool, int, int]] = []
        # Transactional ids with a transition being written (Kafka's pendingState).
        self._in_flight: set[str] = set()
        self._wake = trio.Event()

    # ---- the service ------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.owns_all_partitions:
                count = self.writer.partition_count(TRANSACTION_STATE_TOPIC)
                for index in range(self.num_partitions if count is None else count):
                    self.on_elected(index, 0)
            queued, self._queued = self._queued, []
            for elected, index, epoch in queued:
                (self.on_elected if elected else self.on_resigned)(index, epoch)
            self.active = True
            task_status.started()
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
            if meta.transactional_id in self._in_flight:
                continue  # its writer wakes the timer when done
            d = meta.deadline()
            if d is not None:
                deadlines.append(d)
            elif meta.state.is_complete:
                deadlines.append(meta.last_update_ms + self.expiration_ms)
        return min(deadlines, default=None)

    def tick(self, now: int) -> None:
        """Abort the transactions past their timeout and forget expired ids, each in a
        task of the service (their writes wait for replication)."""
        assert self._nursery is not None
        for meta in list(self.txns.values()):
            transactional_id = meta.transactional_id
            if transactional_id in self._in_flight:
                continue
            epoch = self.owned.get(self.partition_for(transactional_id))
            if epoch is None:
                continue
            deadline = meta.deadline()
            if deadline is not None and deadline <= now:
                log.info("transactional id %s: transaction timed out after %d ms, aborting", transactional_id, meta.timeout_ms)
                before = _copy(meta)
                plan = tx.timeout_abort(meta, now)
                if plan is not None:
                    self._in_flight.add(transactional_id)
                    self._nursery.start_soon(self._prepare_and_complete, meta, before, plan, epoch, None)
            elif tx.expired(meta, now, self.expiration_ms):
                self._in_flight.add(transactional_id)
                self._nursery.start_soon(self._expire, meta, epoch)

    async def _expire(self, meta: TxnMetadata, epoch: int) -> None:
        """transactional.id.expiration.ms: the id's tombstone, then it is forgotten."""
        transactional_id = meta.transactional_id
        try:
            error = await self._write(transactional_id, None, epoch)
            if error is ErrorCode.none and self.txns.get(transactional_id) is meta:
                log.info("transactional id %s expired", transactional_id)
                del self.txns[transactional_id]
                if self.by_producer.get(meta.producer_id) == transactional_id:
                    del self.by_producer[meta.producer_id]
        finally:
            self._in_flight.discard(transactional_id)
            self._changed()

    # ---- ownership (Kafka's TransactionStateManager load / remove) ------------------------

    def _update_epoch(self, partition_index: int, leader_epoch: int) -> bool:
        current = self._epochs.get(partition_index)
        if current is not None and leader_epoch < current:
            return False
        self._epochs[partition_index] = leader_epoch
        return True

    def on_elected(self, partition_index: int, leader_epoch: int) -> None:
        """This broker now leads `__transaction_state` partition `partition_index`: read
        its transactional ids back, in a task (COORDINATOR_LOAD_IN_PROGRESS meanwhile),
        then complete the transactions left between prepare and complete."""
        if self._nursery is None:
            self._queued.append((True, partition_index, leader_epoch))
            return
        if not self._update_epoch(partition_index, leader_epoch):
            log.info("%s-%d: not loading for stale epoch %d", TRANSACTION_STATE_TOPIC, partition_index, leader_epoch)
            return
        # As Kafka's onElection: whatever was loaded before is dropped, then read again.
        self._unload(partition_index)
        self.loading.add(partition_index)
        scope = trio.CancelScope()
        self._load_scopes[partition_index] = scope
        self._nursery.start_soon(self._load_task, partition_index, leader_epoch, scope)

    def on_resigned(self, partition_index: int, leader_epoch: int) -> None:
        """This broker no longer leads the partition: its transactional ids are dropped
        (their marker writes stop), a load in progress cancelled."""
        if self._nursery is None:
            self._queued.append((False, partition_index, leader_epoch))
            return
        if not self._update_epoch(partition_index, leader_epoch):
            log.info("%s-%d: not unloading for stale epoch %d", TRANSACTION_STATE_TOPIC, partition_index, leader_epoch)
            return
        removed = self._unload(partition_index)
        log.info("%s-%d: resigned (epoch %d), %d transactional ids unloaded",
                 TRANSACTION_STATE_TOPIC, partition_index, leader_epoch, removed)

    def _unload(self, partition_index: int) -> int:
        scope = self._load_scopes.pop(partition_index, None)
        if scope is not None:
            scope.cancel()
        self.loading.discard(partition_index)
        self.owned.pop(partition_index, None)
        removed = [tid for tid in self.txns if self.partition_for(tid) == partition_index]
        for transactional_id in removed:
            meta = self.txns.pop(transactional_id)
            if self.by_producer.get(meta.producer_id) == transactional_id:
                del self.by_producer[meta.producer_id]
        self._changed()
        return len(removed)

    async def _load_task(self, index: int, epoch: int, scope: trio.CancelScope) -> None:
        started = now_ms()
        with scope:
            loaded: dict[str, TxnMetadata] = {}
            try:
                if self.writer.partition_count(TRANSACTION_STATE_TOPIC) is not None:
                    loaded = await self._load_partition(index)
            except Exception:
                log.exception("cannot load %s-%d", TRANSACTION_STATE_TOPIC, index)
            if self._load_scopes.get(index) is not scope:
                return
            del self._load_scopes[index]
            self.txns.update(loaded)
            for transactional_id, meta in loaded.items():
                self.by_producer[meta.producer_id] = transactional_id
            self.loading.discard(index)
            self.owned[index] = epoch
            # Transactions caught between prepare and complete get their markers now.
            for meta in loaded.values():
                plan = tx.recovery_plan(meta)
                if plan is not None:
                    log.info("transactional id %s: completing %s after loading", meta.transactional_id, meta.state.display)
                    self._in_flight.add(meta.transactional_id)
                    assert self._nursery is not None
                    self._nursery.start_soon(self._complete, meta, plan, epoch)
            self._changed()
            log.debug("loaded %d transactional ids from %s-%d in %d ms", len(loaded), TRANSACTION_STATE_TOPIC, index,
                      now_ms() - started)
            if not self.loading:
                log.info("loaded %d transactional ids from %s", len(self.txns), TRANSACTION_STATE_TOPIC)

    async def _load_partition(self, index: int) -> dict[str, TxnMetadata]:
        """The partition's transactional ids (the last record of each wins, tombstones
        delete), decoded in a worker thread (load_batches); cancellable throughout."""
        txns: dict[str, TxnMetadata] = {}

        def decode(header: Any, batch: bytes) -> None:
            # In the worker thread: touches only this load's own dict.
            if header.is_control:
                return
            for record in iter_records(batch):
                if record.key is None:
                    continue
                try:
                    transactional_id = tx.decode_key(record.key)
                    if record.value is None:
                        txns.pop(transactional_id, None)
                    else:
                        txns[transactional_id] = tx.decode_value(transactional_id, record.value)
                except tx.CodecError as e:
                    log.warning("%s-%d offset %d: skipping record: %s", TRANSACTION_STATE_TOPIC, index, record.offset, e)

        await load_batches(self.writer, (TRANSACTION_STATE_TOPIC, index), decode)
        await trio.sleep(0)
        return txns

    # ---- the log ------------------------------------------------------------------------

    def partition_for(self, transactional_id: str) -> int:
        return partition_for(transactional_id, self.num_partitions)

    def ensure_topic(self) -> None:
        if self.writer.partition_count(TRANSACTION_STATE_TOPIC) is None:
            # transaction.state.log.segment.bytes (Kafka's default 100 MiB), from the
            # broker config the group coordinator holds.
            segment_bytes = setting(self.groups.broker_config, "transaction.state.log.segment.bytes", 100 << 20)
            self.writer.create_internal_topic(
                TRANSACTION_STATE_TOPIC,
                self.num_partitions,
                self.replication_factor,
                {
                    # Compacted as Kafka's: only each transactional id's last state stays.
                    "cleanup.policy": "compact",
                    "segment.bytes": str(max(int(segment_bytes), 14)),
                    "compression.type": "uncompressed",
                },
            )
            log.info("created %s with %d partitions", TRANSACTION_STATE_TOPIC, self.num_partitions)

    async def _write(self, transactional_id: str, value: bytes | None, epoch: int) -> ErrorCode:
        """Append the id's record and wait until it is committed; Kafka's
        appendTransactionToLog errors. NOT_COORDINATOR if the partition changed hands."""
        timestamp = now_ms()
        try:
            self.ensure_topic()
            tp = (TRANSACTION_STATE_TOPIC, self.partition_for(transactional_id))
            batch = bytearray(build_batch([(tx.encode_key(transactional_id), value)], timestamp_ms=timestamp))
            offset = self.writer.append(tp, batch, validate_batches(batch), timestamp)
        except KafkaError as e:
            log.warning("transactional id %s: cannot append to %s: %s", transactional_id, TRANSACTION_STATE_TOPIC, e)
            return store_error(e.error_code)
        except Exception:
            log.exception("transactional id %s: cannot append to %s", transactional_id, TRANSACTION_STATE_TOPIC)
            return ErrorCode.unknown_server_error
        error = await self.writer.wait_replicated(tp, offset, self.write_timeout_ms)
        if error is not ErrorCode.none:
            log.warning("transactional id %s: state not replicated: %s", transactional_id, error.name)
            return store_error(error)
        if self.owned.get(tp[1]) != epoch:
            return ErrorCode.not_coordinator
        return ErrorCode.none

    async def _persist(self, meta: TxnMetadata, epoch: int) -> ErrorCode:
        return await self._write(meta.transactional_id, tx.encode_value(meta), epoch)

    def _restore(self, transactional_id: str, meta: TxnMetadata, before: TxnMetadata | None) -> None:
        """Undo a transition whose write failed (Kafka drops the pending state)."""
        if self.txns.get(transactional_id) is not meta:
            return  # unloaded meanwhile
        if before is None:
            del self.txns[transactional_id]
            if self.by_producer.get(meta.producer_id) == transactional_id:
                del self.by_producer[meta.producer_id]
            return
        if meta.producer_id != before.producer_id and self.by_producer.get(meta.producer_id) == transactional_id:
            del self.by_producer[meta.producer_id]
        self.txns[transactional_id] = before
        self.by_producer[before.producer_id] = transactional_id

    # ---- requests ------------------------------------------------------------------------

    def check(self, transactional_id: str | None) -> ErrorCode | None:
        """Kafka's getTransactionState checks: whether this coordinator serves the id."""
        if not transactional_id:
            return ErrorCode.invalid_request
        if not self.active:
            return ErrorCode.coordinator_not_available
        partition = self.partition_for(transactional_id)
        if partition in self.loading:
            return ErrorCode.coordinator_load_in_progress
        if partition not in self.owned:
            return ErrorCode.not_coordinator
        return None

    def _epoch_of(self, transactional_id: str) -> int:
        return self.owned[self.partition_for(transactional_id)]

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
        if transactional_id in self._in_flight:
            return answer(ErrorCode.concurrent_transactions)
        epoch = self._epoch_of(transactional_id)
        before = _copy(self.txns.get(transactional_id))
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
        self._in_flight.add(transactional_id)
        try:
            if plan is not None:
                # The fenced producer's ongoing transaction is aborted first.
                if not await self._write_markers(transactional_id, plan, epoch):
                    self._restore(transactional_id, meta, before)
                    return answer(ErrorCode.not_coordinator)
            error = await self._persist(meta, epoch)
        finally:
            self._in_flight.discard(transactional_id)
        if error is not ErrorCode.none:
            self._restore(transactional_id, meta, before)
            return answer(error)
        self._changed()
        return answer(ErrorCode.none, meta.producer_id, meta.producer_epoch)

    async def add_partitions(
        self, transactional_id: str, producer_id: int, producer_epoch: int, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, ErrorCode]:
        error = self.check(transactional_id)
        if error is None and transactional_id in self._in_flight:
            error = ErrorCode.concurrent_transactions
        if error is None:
            unknown = [tp for tp in partitions if not self._partition_exists(tp)]
            if unknown:
                return {
                    tp: ErrorCode.unknown_topic_or_partition if tp in unknown else ErrorCode.operation_not_attempted
                    for tp in partitions
                }
            meta = self.txns.get(transactional_id)
            before = _copy(meta)
            try:
                changed = tx.add_partitions(meta, producer_id, producer_epoch, partitions, now_ms())
            except TxnError as e:
                return {tp: e.error_code for tp in partitions}
            error = ErrorCode.none
            if changed:
                assert meta is not None
                self._in_flight.add(transactional_id)
                try:
                    error = await self._persist(meta, self._epoch_of(transactional_id))
                finally:
                    self._in_flight.discard(transactional_id)
                if error is not ErrorCode.none:
                    self._restore(transactional_id, meta, before)
                self._changed()
        return {tp: error for tp in partitions}

    async def add_offsets(self, transactional_id: str, producer_id: int, producer_epoch: int, group_id: str) -> ErrorCode:
        groups = self.groups
        groups.ensure_offsets_topic()
        tp = (OFFSETS_TOPIC, groups.partition_for(group_id))
        return (await self.add_partitions(transactional_id, producer_id, producer_epoch, [tp]))[tp]

    def verify_txn_offset_commit(
        self, transactional_id: str, group_id: str, producer_id: int, producer_epoch: int
    ) -> ErrorCode | None:
        """A TxnOffsetCommit's producer and transaction, when this coordinator serves its
        transactional id (on one broker, always): the offsets partition must be in the
        ongoing transaction. None when fine, or when the id is served elsewhere (the group
        coordinator alone checks it then, as Kafka's does)."""
        if not transactional_id or self.partition_for(transactional_id) not in self.owned:
            return None
        meta = self.txns.get(transactional_id)
        if meta is None or meta.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping
        if meta.producer_epoch != producer_epoch:
            return ErrorCode.producer_fenced
        if meta.state is not TxnState.ONGOING or (OFFSETS_TOPIC, self.groups.partition_for(group_id)) not in meta.partitions:
            return ErrorCode.invalid_txn_state
        return None

    async def end_txn(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool) -> ErrorCode:
        error = self.check(transactional_id)
        if error is not None:
            return error
        if transactional_id in self._in_flight:
            return ErrorCode.concurrent_transactions
        meta = self.txns.get(transactional_id)
        before = _copy(meta)
        try:
            plan = tx.prepare_end(meta, producer_id, producer_epoch, commit, now_ms())
        except TxnError as e:
            return e.error_code
        if plan is None:
            return ErrorCode.none
        assert meta is not None and self._nursery is not None
        self._in_flight.add(transactional_id)
        done = trio.Event()
        result: list[ErrorCode] = []
        # In the service's nursery: a client that goes away does not stop the completion.
        self._nursery.start_soon(self._prepare_and_complete, meta, before, plan, self._epoch_of(transactional_id), (done, result))
        await done.wait()
        return result[0]

    async def _prepare_and_complete(
        self,
        meta: TxnMetadata,
        before: TxnMetadata | None,
        plan: tx.EndPlan,
        epoch: int,
        answer: tuple[trio.Event, list[ErrorCode]] | None,
    ) -> None:
        """PrepareCommit/PrepareAbort persisted (undone if that fails), then completed.
        `answer` gets the prepare's outcome once the transaction is complete."""
        error = ErrorCode.unknown_server_error
        try:
            error = await self._persist(meta, epoch)
            if error is ErrorCode.none:
                await self._complete(meta, plan, epoch)
            else:
                self._restore(meta.transactional_id, meta, before)
        finally:
            self._in_flight.discard(meta.transactional_id)
            self._changed()
            if answer is not None:
                done, result = answer
                result.append(error)
                done.set()

    async def _complete(self, meta: TxnMetadata, plan: tx.EndPlan, epoch: int) -> None:
        """Kafka's marker channel then completeTransitionTo: every marker written, then
        CompleteCommit/CompleteAbort persisted (retried while this coordinator serves the
        id). Stops when the partition is resigned: its next coordinator completes it."""
        transactional_id = meta.transactional_id
        try:
            if not await self._write_markers(transactional_id, plan, epoch):
                return
            if self.txns.get(transactional_id) is not meta:
                return
            tx.complete_end(meta, now_ms())
            while True:
                error = await self._persist(meta, epoch)
                if error is ErrorCode.none or error is ErrorCode.not_coordinator:
                    break
                log.warning("transactional id %s: cannot persist %s: %s, retrying", transactional_id,
                            meta.state.display, error.name)
                await trio.sleep(RETRY_BACKOFF_S)
        finally:
            self._in_flight.discard(transactional_id)
            self._changed()

    # ---- markers -------------------------------------------------------------------------

    async def _write_markers(self, transactional_id: str, plan: tx.EndPlan, epoch: int) -> bool:
        """The transaction's markers, to all its partitions at once. False if they were
        abandoned (the coordinator resigned, or was fenced)."""
        written: list[bool] = []
        async with trio.open_nursery() as nursery:
            for tp in plan.partitions:
                nursery.start_soon(self._write_marker, transactional_id, tp, plan, epoch, written)
        return all(written)

    async def _write_marker(
        self, transactional_id: str, tp: TopicPartition, plan: tx.EndPlan, epoch: int, written: list[bool]
    ) -> None:
        attempts = 0
        while True:
            attempts += 1
            if self.owned.get(self.partition_for(transactional_id)) != epoch:
                written.append(False)  # resigned: the next coordinator sends it
                return
            if tp[0] == OFFSETS_TOPIC:
                # A marker the group coordinator's load would miss: after the load.
                await self.groups.wait_loaded(tp[1])
            try:
                error = await self.writer.write_txn_marker(
                    tp, plan.producer_id, plan.producer_epoch, plan.commit, epoch, now_ms()
                )
            except KafkaError as e:
                error = e.error_code
            except Exception:
                # Retried like any failure; the traceback once, not at every attempt.
                if attempts == 1:
                    log.exception("marker for producer %d on %s-%d failed", plan.producer_id, *tp)
                error = ErrorCode.unknown_server_error
            if error is ErrorCode.none:
                if tp[0] == OFFSETS_TOPIC:
                    self.groups.complete_transactional_offsets(plan.producer_id, [tp[1]], plan.commit)
                written.append(True)
                return
            if error is ErrorCode.unknown_topic_or_partition:
                written.append(True)  # deleted since it joined the transaction
                return
            if error in _ABANDON_MARKER:
                log.info("marker for producer %d on %s-%d abandoned: %s", plan.producer_id, *tp, error.name)
                written.append(False)
                return
            log.info("marker for producer %d on %s-%d: %s, retrying", plan.producer_id, *tp, error.name)
            await trio.sleep(RETRY_BACKOFF_S)

    def _partition_exists(self, tp: TopicPartition) -> bool:
        count = self.writer.partition_count(tp[0])
        return count is not None and 0 <= tp[1] < count

    # ---- read_committed fetches --------------------------------------------------------

    def aborted_transactions(self, tp: TopicPartition, start: int, end: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of the aborted transactions overlapping [start, end)."""
        return self.writer.aborted_transactions(tp, start, end)

    # ---- hooks for produce -----------------------------------------------------------------

    def verify_produce(self, producer_id: int, producer_epoch: int, topic: str, index: int) -> ErrorCode | None:
        """A transactional batch must belong to its producer's ongoing transaction with
        this partition added (Kafka 3.9's transaction verification). A producer whose
        transactional id this broker does not serve (in a cluster) is not refused here."""
        transactional_id = self.by_producer.get(producer_id)
        if transactional_id is None:
            if self.loading or not self.owns_all_partitions:
                return None  # not known here (yet): not refused for that
            return ErrorCode.invalid_txn_state
        meta = self.txns.get(transactional_id)
        if meta is None or meta.producer_id != producer_id:
            return ErrorCode.invalid_txn_state
        if producer_epoch < meta.producer_epoch:
            return ErrorCode.invalid_producer_epoch
        if meta.state is TxnState.ONGOING and (topic, index) in meta.partitions:
            return None
        return ErrorCode.invalid_txn_state

    # ---- admin ---------------------------------------------------------------------------

    def describe(self, transactional_id: str) -> tuple[ErrorCode, TxnMetadata | None]:
        error = self.check(transactional_id)
        if error is not None:
            return error, None
        meta = self.txns.get(transactional_id)
        if meta is None or meta.state is TxnState.DEAD:
            return ErrorCode.transactional_id_not_found, None
        return ErrorCode.none, meta
