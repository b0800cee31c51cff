"""The log cleaner service: which compacted log to clean next, and the workers that
clean it (Kafka's LogCleanerManager and CleanerThreads).

The choice is pure (a view of each log and `now_ms` in, a LogToClean out), so it is
tested without threads, files or sockets::

    cleanable_offsets(view, checkpoint, now_ms) -> (first dirty, first uncleanable, reset)
    log_to_clean(view, checkpoint, now_ms) -> LogToClean
    choose_log(views, checkpoints, now_ms, *, exclude=()) -> LogToClean | None

`cleaner-offset-checkpoint` at the log dir root keeps each partition's first dirty
offset (Kafka's format: version line, entry count, "topic partition offset" lines),
so that a restart does not clean from the log start again::

    read_checkpoint(path) -> {(topic, partition): offset}   # missing or garbled: {}
    write_checkpoint(path, offsets)

The service, on trio: `LogCleaner(...).run()` starts `log.cleaner.threads` workers;
each picks the filthiest log, plans the clean on the event loop
(PartitionLog.plan_cleaning), runs kwire.log.cleaner.clean in a worker thread with its
own OffsetMap, installs the result on the event loop (PartitionLog.install_cleaned)
and writes the checkpoint. With nothing to clean it sleeps log.cleaner.backoff.ms
(`wake()` ends the sleep). `clean_now()` cleans until nothing is cleanable.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from kwire.log.checkpoint import write_atomically
from kwire.log.log import LogConfig

if TYPE_CHECKING:
    from kwire.log.cleaner import CleanerStats, CleaningPlan, CleaningResult, OffsetMap
    from kwire.log.log import PartitionLog

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "cleaner-offset-checkpoint"
_CHECKPOINT_VERSION = 0
_LONG_MAX = (1 << 63) - 1

TopicPartition = tuple[str, int]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---- the choice (pure) ------------------------------------------------------------------


class SegmentView(Protocol):
    """What the choice reads of a segment (LogSegment has it)."""

    base_offset: int
    size: int

    @property
    def largest_timestamp(self) -> int: ...

    @property
    def rolling_timestamp(self) -> int: ...


@dataclass
class LogView:
    """One compacted log as the choice sees it, read on the event loop."""

    topic: str
    partition: int
    # In offset order, the active segment last.
    segments: Sequence[SegmentView]
    log_start_offset: int
    log_end_offset: int
    # The partition's last stable offset: at most the high watermark, and before the
    # first open transaction.
    last_stable_offset: int
    high_watermark: int
    config: LogConfig
    # The cleaner core rewrites only flushed data: it clamps to the recovery point too.
    recovery_point: int = _LONG_MAX

    @property
    def topic_partition(self) -> TopicPartition:
        return self.topic, self.partition

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"


@dataclass(frozen=True)
class LogToClean:
    """A log's cleanable section and how dirty it is (Kafka's LogToClean)."""

    topic: str
    partition: int
    first_dirty_offset: int
    first_uncleanable_offset: int
    # Bytes of the segments before the first dirty offset (cleaned already).
    clean_bytes: int
    # Bytes of the segments in [first dirty offset, first uncleanable offset).
    cleanable_bytes: int
    # max.compaction.lag.ms: how long past its deadline the oldest dirty record is (0: not).
    max_compaction_delay_ms: int = 0
    # The checkpoint was outside [log start, log end] and reset to the log start.
    checkpoint_reset: bool = False

    @property
    def topic_partition(self) -> TopicPartition:
        return self.topic, self.partition

    @property
    def total_bytes(self) -> int:
        return self.clean_bytes + self.cleanable_bytes

    @property
    def cleanable_ratio(self) -> float:
        return self.cleanable_bytes / self.total_bytes if self.total_bytes else 0.0

    @property
    def must_clean(self) -> bool:
        """Kafka's needCompactionNow: max.compaction.lag.ms has passed for dirty data."""
        return self.max_compaction_delay_ms > 0


def _floor_index(segments: Sequence[SegmentView], offset: int) -> int:
    """Index of the segment holding `offset` (the last with base <= offset), at least 0."""
    lo, hi = 0, len(segments)
    while lo < hi:
        mid = (lo + hi) // 2
        if segments[mid].base_offset <= offset:
            lo = mid + 1
        else:
            hi = mid
    return max(lo - 1, 0)


def _bytes_between(segments: Sequence[SegmentView], start: int, end: int) -> int:
    """Bytes of the segments overlapping [start, end) (Kafka's logSegments(from, to))."""
    if end <= start or not segments:
        return 0
    total = 0
    for segment in segments[_floor_index(segments, start) :]:
        if segment.base_offset >= end:
            break
        total += segment.size
    return total


def _dirty_non_active(view: LogView, first_dirty_offset: int) -> Sequence[SegmentView]:
    segments = view.segments
    if len(segments) < 2:
        return ()
    return segments[_floor_index(segments, first_dirty_offset) : len(segments) - 1]


def cleanable_offsets(view: LogView, checkpoint: int | None, now_ms: int) -> tuple[int, int, bool]:
    """(first dirty offset, first uncleanable offset, whether the checkpoint was reset).

    The first dirty offset is the checkpoint, or the log start offset if there is none
    or it is outside [log start, log end] (retention or DeleteRecords moved the start
    past it; a truncation or a damaged tail left the end below it). The first
    uncleanable offset is the lowest of the active segment's base, the last stable
    offset (open transactions and the high watermark), the recovery point and the base
    of the first dirty segment newer than min.compaction.lag.ms.
    """
    reset = False
    if checkpoint is None:
        first_dirty = view.log_start_offset
    elif checkpoint < view.log_start_offset or checkpoint > view.log_end_offset:
        first_dirty, reset = view.log_start_offset, True
    else:
        first_dirty = checkpoint
    active_base = view.segments[-1].base_offset if view.segments else view.log_end_offset
    first_uncleanable = min(
        active_base, view.last_stable_offset, view.high_watermark, view.recovery_point
    )
    lag_ms = max(view.config.min_compaction_lag_ms, 0)
    if lag_ms > 0:
        for segment in _dirty_non_active(view, first_dirty):
            # A segment with records younger than the lag stops the cleanable section.
            if segment.largest_timestamp > now_ms - lag_ms:
                first_uncleanable = min(first_uncleanable, segment.base_offset)
                break
    return first_dirty, first_uncleanable, reset


def max_compaction_delay(view: LogView, first_dirty_offset: int, now_ms: int) -> int:
    """How long ago max.compaction.lag.ms passed for the oldest dirty segment's first
    batch (Kafka's maxCompactionDelay); 0 if it has not."""
    lag_ms = max(view.config.max_compaction_lag_ms, 0)
    if lag_ms >= now_ms:
        return 0  # the default (Long.MAX_VALUE): never forced; no header read either
    clean_until = now_ms - lag_ms
    timestamps = [
        t for t in (s.rolling_timestamp for s in _dirty_non_active(view, first_dirty_offset)) if t > 0
    ]
    earliest = min(timestamps, default=_LONG_MAX)
    return clean_until - earliest if earliest < clean_until else 0


def log_to_clean(view: LogView, checkpoint: int | None, now_ms: int) -> LogToClean:
    first_dirty, first_uncleanable, reset = cleanable_offsets(view, checkpoint, now_ms)
    segments = view.segments
    return LogToClean(
        topic=view.topic,
        partition=view.partition,
        first_dirty_offset=first_dirty,
        first_uncleanable_offset=first_uncleanable,
        clean_bytes=_bytes_between(segments, view.log_start_offset, first_dirty),
        cleanable_bytes=_bytes_between(segments, first_dirty, max(first_dirty, first_uncleanable)),
        max_compaction_delay_ms=max_compaction_delay(view, first_dirty, now_ms),
        checkpoint_reset=reset,
    )


def is_cleanable(candidate: LogToClean, config: LogConfig) -> bool:
    """Something to clean, and dirty enough (min.cleanable.dirty.ratio) or due
    (max.compaction.lag.ms)."""
    if candidate.cleanable_bytes <= 0 or candidate.first_dirty_offset >= candidate.first_uncleanable_offset:
        return False
    return candidate.must_clean or candidate.cleanable_ratio >= config.min_cleanable_dirty_ratio


def choose_log(
    views: Iterable[LogView],
    checkpoints: Mapping[TopicPartition, int],
    now_ms: int,
    *,
    exclude: Iterable[TopicPartition] = (),
) -> LogToClean | None:
    """The log to clean next (Kafka's grabFilthiestCompactedLog): among the compacted
    logs not excluded (being cleaned, or failed), those past max.compaction.lag.ms
    first, then the highest dirty ratio."""
    excluded = set(exclude)
    best: LogToClean | None = None
    best_key: tuple[bool, float] = (False, -1.0)
    for view in views:
        if not view.config.compacts or view.topic_partition in excluded:
            continue
        candidate = log_to_clean(view, checkpoints.get(view.topic_partition), now_ms)
        if not is_cleanable(candidate, view.config):
            continue
        key = (candidate.must_clean, candidate.cleanable_ratio)
        if best is None or key > best_key:
            best, best_key = candidate, key
    return best


# ---- the checkpoint ---------------------------------------------------------------------


def read_checkpoint(path: Path) -> dict[TopicPartition, int]:
    """The first dirty offsets in `cleaner-offset-checkpoint`; none if the file is
    missing, or garbled (then with a warning: those logs are cleaned from the start)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        logger.warning("cannot read %s (%s): cleaning every log from its start", path, e)
        return {}
    try:
        lines = text.splitlines()
        if len(lines) < 2 or int(lines[0]) != _CHECKPOINT_VERSION:
            raise ValueError(f"unknown version {lines[:1]}")
        count = int(lines[1])
        entries = [line.split() for line in lines[2:] if line.strip()]
        if len(entries) != count:
            raise ValueError(f"{len(entries)} entries, the header says {count}")
        offsets: dict[TopicPartition, int] = {}
        for entry in entries:
            topic, partition, offset = entry  # ValueError unless exactly three
            offsets[(topic, int(partition))] = int(offset)
        return offsets
    except ValueError as e:
        logger.warning("%s is garbled (%s): cleaning every log from its start", path, e)
        return {}


def write_checkpoint(path: Path, offsets: Mapping[TopicPartition, int]) -> None:
    """Write the checkpoint atomically (temp file, fsync, rename, directory fsync)."""
    body = "".join(f"{topic} {partition} {offset}\n" for (topic, partition), offset in sorted(offsets.items()))
    write_atomically(path, f"{_CHECKPOINT_VERSION}\n{len(offsets)}\n{body}".encode())


# ---- the service ------------------------------------------------------------------------


class CleanablePartition(Protocol):
    """What the service needs of a broker Partition."""

    index: int
    log: PartitionLog
    topic: Any  # .name
    txn_index: Any  # .entries: AbortedTxn(producer_id, first_offset, last_offset, ...)
    producers: Any  # .last_data_offsets() -> {producer id: last data offset}

    @property
    def last_stable_offset(self) -> int: ...


def partition_view(partition: CleanablePartition) -> LogView:
    log = partition.log
    return LogView(
        topic=partition.topic.name,
        partition=partition.index,
        segments=log.segments,
        log_start_offset=log.log_start_offset,
        log_end_offset=log.log_end_offset,
        last_stable_offset=partition.last_stable_offset,
        high_watermark=log.high_watermark,
        config=log.config,
        recovery_point=log.recovery_point,
    )


@dataclass
class CleanerTotals:
    """Totals since start-up (for tests and the benchmark)."""

    passes: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_kept: int = 0
    seconds: float = 0.0
    # Results not installed: the log changed meanwhile (truncation, retention).
    discarded: int = 0
    failures: int = 0


@dataclass(frozen=True)
class PassRecord:
    """One partition's last cleaning pass."""

    topic: str
    partition: int
    first_dirty_offset: int
    first_uncleanable_offset: int
    # The next first dirty offset (the checkpoint written), if installed.
    end_offset: int
    installed: bool
    stats: CleanerStats
    finished_ms: int


@dataclass
class _Worker:
    offset_map: OffsetMap
    name: str
    busy_with: TopicPartition | None = field(default=None)


class LogCleaner:
    """The cleaner threads of one log dir (Kafka's LogCleaner)."""

    def __init__(
        self,
        log_dir: Path,
        partitions: Callable[[], Iterable[CleanablePartition]],
        *,
        threads: int = 1,
        backoff_ms: int = 15_000,
        dedupe_buffer_size: int = 134_217_728,
        io_buffer_load_factor: float = 0.9,
        io_max_bytes_per_second: float = math.inf,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        if threads < 1:
            raise ValueError("the log cleaner needs at least one thread")
        self.log_dir = Path(log_dir)
        self.checkpoint_path = self.log_dir / CHECKPOINT_FILE
        self._partitions = partitions
        self.threads = threads
        self.backoff_ms = backoff_ms
        self.dedupe_buffer_size = dedupe_buffer_size
        self.io_buffer_load_factor = io_buffer_load_factor
        # log.cleaner.io.max.bytes.per.second: all threads together, as Kafka's throttler.
        self.io_max_bytes_per_second = io_max_bytes_per_second
        self._clock = clock
        self.checkpoints: dict[TopicPartition, int] = read_checkpoint(self.checkpoint_path)
        # Logs being cleaned now, and logs whose cleaning failed (skipped until restart).
        self.in_progress: set[TopicPartition] = set()
        self.uncleanable: set[TopicPartition] = set()
        # Logs whose plan was empty, with the state it was empty for: not picked again
        # until that changes (else a worker would pick them over and over).
        self._nothing_to_plan: dict[TopicPartition, tuple[int, int, int]] = {}
        self.totals = CleanerTotals()
        self.last_pass: dict[TopicPartition, PassRecord] = {}
        self._wakeup = trio.Event()
        # Set (and replaced) whenever a clean ends: clean_now waits for the busy workers.
        self._pass_done = trio.Event()
        self._capacity: int | None = None
        self._checkpoint_lock = trio.Lock()
        # The plans whose clean() runs in a thread now (aborted at shutdown).
        self._plans_in_flight: dict[int, CleaningPlan] = {}
        # The workers' nursery while running, and the workers by index (reconfigure).
        self._nursery: trio.Nursery | None = None
        self._workers: dict[int, _Worker] = {}

    @classmethod
    def from_config(
        cls, config: Any, log_dir: Path, partitions: Callable[[], Iterable[CleanablePartition]]
    ) -> LogCleaner | None:
        """From the broker's log.cleaner.* settings; None if the cleaner is off
        (log.cleaner.enable=false or log.cleaner.threads=0)."""
        if not config["log.cleaner.enable"] or config["log.cleaner.threads"] <= 0:
            return None
        return cls(
            log_dir,
            partitions,
            threads=config["log.cleaner.threads"],
            backoff_ms=config["log.cleaner.backoff.ms"],
            dedupe_buffer_size=config["log.cleaner.dedupe.buffer.size"],
            io_buffer_load_factor=config["log.cleaner.io.buffer.load.factor"],
            io_max_bytes_per_second=config["log.cleaner.io.max.bytes.per.second"],
        )

    @property
    def offset_map_capacity(self) -> int:
        if self._capacity is None:
            from kwire.log.cleaner import dedupe_capacity

            self._capacity = dedupe_capacity(self.dedupe_buffer_size, self.threads, self.io_buffer_load_factor)
        return self._capacity

    def _new_worker(self, name: str) -> _Worker:
        from kwire.log.cleaner import OffsetMap

        return _Worker(OffsetMap(self.offset_map_capacity), name)

    def reconfigure(self, config: Any) -> None:
        """Dynamic log.cleaner.* (Kafka's LogCleaner.reconfigure): the new rate, backoff
        and map size from each worker's next pass; more workers start at once, extra
        ones stop after the pass they are in."""
        self.threads = max(1, config["log.cleaner.threads"])
        self.backoff_ms = config["log.cleaner.backoff.ms"]
        self.dedupe_buffer_size = config["log.cleaner.dedupe.buffer.size"]
        self.io_buffer_load_factor = config["log.cleaner.io.buffer.load.factor"]
        self.io_max_bytes_per_second = config["log.cleaner.io.max.bytes.per.second"]
        self._capacity = None
        logger.info(
            "log cleaner reconfigured: %d thread(s), %d offsets per map, backoff %d ms",
            self.threads,
            self.offset_map_capacity,
            self.backoff_ms,
        )
        if self._nursery is not None:
            for index in range(self.threads):
                if index not in self._workers:
                    self._start_worker(index)
        self.wake()

    def _start_worker(self, index: int) -> None:
        assert self._nursery is not None
        worker = self._new_worker(f"cleaner-{index}")
        self._workers[index] = worker
        self._nursery.start_soon(self._work, worker, index, name=worker.name)

    # ---- running ----------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The workers, until cancelled."""
        logger.info(
            "starting the log cleaner: %d thread(s), %d offsets per map, backoff %d ms",
            self.threads,
            self.offset_map_capacity,
            self.backoff_ms,
        )
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for index in range(self.threads):
                self._start_worker(index)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                # Shutting down: the passes in their threads stop at their next batch
                # (a thread cannot be cancelled, and the workers wait for theirs).
                for plan in list(self._plans_in_flight.values()):
                    plan.abort()

    def wake(self) -> None:
        """End the workers' backoff now (a test, or new dirty data worth a look)."""
        self._wakeup.set()
        self._wakeup = trio.Event()

    async def _work(self, worker: _Worker, index: int) -> None:
        while True:
            if index >= self.threads:
                del self._workers[index]  # fewer threads now (reconfigure)
                return
            if worker.offset_map.capacity != self.offset_map_capacity:
                worker = self._workers[index] = self._new_worker(worker.name)
            # Taken before looking: a wake() while looking is not lost.
            wakeup = self._wakeup
            try:
                if await self.clean_one(worker):
                    await trio.lowlevel.checkpoint()
                    continue
            except Exception:
                # Choosing failed (clean_one handles a log's own failures): the cleaner
                # stays up and looks again after its backoff.
                logger.exception("the log cleaner's %s failed to choose a log", worker.name)
            with trio.move_on_after(self.backoff_ms / 1000):
                await wakeup.wait()

    async def clean_now(self, *, timeout_s: float = 60.0) -> int:
        """Clean until no log is cleanable, waiting for the workers' cleans in flight
        too (a deterministic "compact now"). Returns the passes it ran itself."""
        worker = self._new_worker("clean-now")
        passes = 0
        with trio.fail_after(timeout_s):
            while True:
                if await self.clean_one(worker):
                    passes += 1
                    continue
                if not self.in_progress:
                    return passes
                done = self._pass_done
                await done.wait()

    def _views(self) -> dict[TopicPartition, tuple[CleanablePartition, LogView]]:
        views = {}
        for partition in self._partitions():
            if partition is None or not partition.log.config.compacts:
                continue
            view = partition_view(partition)
            views[view.topic_partition] = (partition, view)
        return views

    def grab_filthiest_log(self, now_ms: int) -> tuple[CleanablePartition, LogToClean] | None:
        """Choose, and mark it in progress (on the event loop: no other worker can
        choose it meanwhile)."""
        views = self._views()
        skip = set(self.in_progress) | self.uncleanable
        for tp, state in list(self._nothing_to_plan.items()):
            entry = views.get(tp)
            if entry is not None and self._plan_state(entry[1]) == state:
                skip.add(tp)
            else:
                del self._nothing_to_plan[tp]
        chosen = choose_log((v for _, v in views.values()), self.checkpoints, now_ms, exclude=skip)
        if chosen is None:
            return None
        view = views[chosen.topic_partition][1]
        old = self.checkpoints.get(chosen.topic_partition)
        # With compact,delete, retention moving the log start past it is expected (Kafka).
        if chosen.checkpoint_reset and not (view.config.deletes and old is not None and old < view.log_start_offset):
            logger.warning(
                "resetting the first dirty offset of %s-%d to its log start offset %d: the "
                "checkpointed offset %s is outside the log",
                chosen.topic,
                chosen.partition,
                chosen.first_dirty_offset,
                old,
            )
        if chosen.checkpoint_reset:
            self.checkpoints[chosen.topic_partition] = chosen.first_dirty_offset
        self.in_progress.add(chosen.topic_partition)
        return views[chosen.topic_partition][0], chosen

    @staticmethod
    def _plan_state(view: LogView) -> tuple[int, int, int]:
        active_base = view.segments[-1].base_offset if view.segments else view.log_end_offset
        return active_base, min(view.last_stable_offset, view.high_watermark), view.recovery_point

    async def clean_one(self, worker: _Worker) -> bool:
        """One pass over the filthiest log; False if no log was cleanable."""
        from kwire.log.cleaner import CleaningAbortedError, clean

        now = self._clock()
        grabbed = self.grab_filthiest_log(now)
        if grabbed is None:
            return False
        partition, chosen = grabbed
        tp = chosen.topic_partition
        name = f"{chosen.topic}-{chosen.partition}"
        worker.busy_with = tp
        result: CleaningResult | None = None
        try:
            log = partition.log
            plan = log.plan_cleaning(
                chosen.first_dirty_offset,
                chosen.first_uncleanable_offset,
                aborted_txns=partition.txn_index.entries,
                active_producers=partition.producers.last_data_offsets(),
            )
            if plan is None:
                self._nothing_to_plan[tp] = self._plan_state(partition_view(partition))
                return True
            worker.offset_map.clear()
            plan.max_bytes_per_second = self.io_max_bytes_per_second / self.threads
            self._plans_in_flight[id(plan)] = plan
            try:
                # Not abandoned on cancel: the thread owns the plan's fds and the
                # .cleaned files until it returns; then they are discarded below.
                result = await trio.to_thread.run_sync(
                    lambda: clean(plan, worker.offset_map, now_ms=now), abandon_on_cancel=False
                )
            except CleaningAbortedError:
                # Aborted (shutdown, or the log truncated or deleted): not a failure.
                plan.close()
                await trio.lowlevel.checkpoint_if_cancelled()
                logger.info("cleaning %s aborted", name)
                self.totals.discarded += 1
                return True
            except BaseException:
                plan.close()
                raise
            finally:
                self._plans_in_flight.pop(id(plan), None)
            try:
                await trio.lowlevel.checkpoint_if_cancelled()
            except trio.Cancelled:
                result.discard()
                raise
            if not self._still_open(partition):
                result.discard()
                installed = False
            else:
                installed = log.install_cleaned(result, now_ms=self._clock())
                if installed:
                    # In the same step as the swap: no fetch sees an abort without its marker.
                    partition.txn_index.remove_markers(result.stats.removed_markers)
            self._record(chosen, result, installed)
            if installed:
                await self.write_checkpoint()
            return True
        except trio.Cancelled:
            raise
        except Exception:
            if result is not None:
                try:
                    result.discard()
                except Exception:
                    logger.exception("discarding the cleaned files of %s failed", name)
            self.uncleanable.add(tp)
            self.totals.failures += 1
            logger.exception(
                "cleaning %s from offset %d to %d failed: it is marked uncleanable until restart",
                name,
                chosen.first_dirty_offset,
                chosen.first_uncleanable_offset,
            )
            return True
        finally:
            worker.busy_with = None
            self.in_progress.discard(tp)
            self._pass_done.set()
            self._pass_done = trio.Event()

    def _still_open(self, partition: CleanablePartition) -> bool:
        """The partition is still this broker's (not deleted while its clean ran)."""
        tp = (partition.topic.name, partition.index)
        return any(p is partition for p in self._partitions() if p is not None and (p.topic.name, p.index) == tp)

    def _record(self, chosen: LogToClean, result: CleaningResult, installed: bool) -> None:
        stats = result.stats
        tp = chosen.topic_partition
        totals = self.totals
        totals.passes += 1
        totals.bytes_read += stats.bytes_read
        totals.bytes_written += stats.bytes_written
        totals.records_read += stats.records_read
        totals.records_kept += stats.records_kept
        totals.seconds += stats.seconds
        self.last_pass[tp] = PassRecord(
            topic=chosen.topic,
            partition=chosen.partition,
            first_dirty_offset=chosen.first_dirty_offset,
            first_uncleanable_offset=chosen.first_uncleanable_offset,
            end_offset=result.end_offset,
            installed=installed,
            stats=stats,
            finished_ms=self._clock(),
        )
        name = f"{chosen.topic}-{chosen.partition}"
        if not installed:
            totals.discarded += 1
            logger.info("cleaned %s discarded: the log changed while it was cleaned", name)
            return
        self.checkpoints[tp] = result.end_offset
        mb_read = stats.bytes_read / 1_048_576
        mb_written = stats.bytes_written / 1_048_576
        seconds = max(stats.seconds, 1e-9)
        logger.info(
            "cleaned %s: offsets %d to %d (next first dirty offset %d), %.1f MB read, "
            "%.1f MB written (%.1f%% smaller), %d of %d records kept, %.3f s, %.1f MB/s",
            name,
            chosen.first_dirty_offset,
            chosen.first_uncleanable_offset,
            result.end_offset,
            mb_read,
            mb_written,
            100.0 * (1 - stats.bytes_written / stats.bytes_read) if stats.bytes_read else 0.0,
            stats.records_kept,
            stats.records_read,
            stats.seconds,
            mb_read / seconds if not math.isclose(seconds, 0.0) else 0.0,
        )

    async def write_checkpoint(self) -> None:
        """Write the checkpoints of the partitions that still exist (the others go), in
        a thread (fsyncs); one write at a time (they share the temp file)."""
        live = {(p.topic.name, p.index) for p in self._partitions() if p is not None}
        for tp in [tp for tp in self.checkpoints if tp not in live]:
            del self.checkpoints[tp]
        async with self._checkpoint_lock:
            await trio.to_thread.run_sync(write_checkpoint, self.checkpoint_path, dict(self.checkpoints))
