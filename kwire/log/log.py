"""The partition log: Kafka's UnifiedLog over LogSegments, sans-IO (plain file I/O).

One folder per partition, `<log.dir>/<topic>-<partition>/`, holding segments named
by base offset (`00000000000000000000.log`, `.index`, `.timeindex`) and two small
checkpoint files (`kwire-log-state`, `leader-epoch-checkpoint`, see checkpoint.py).
The broker's trio code calls these synchronous methods between awaits.

Public API::

    LogConfig(segment_bytes, segment_ms, retention_ms, retention_bytes,
              index_interval_bytes, segment_index_bytes, flush_messages, flush_ms,
              file_delete_delay_ms, message_timestamp_type, cleanup_policy,
              delete_retention_ms, min_cleanable_dirty_ratio, min/max_compaction_lag_ms)
    LogConfig.from_topic_configs(configs: Mapping[str, object]) -> LogConfig

    PartitionLog.open(directory, config, *, now_ms=None, clean_shutdown=None) -> PartitionLog
        topic, partition, directory, config (assignable), segments
        log_start_offset, log_end_offset, recovery_point, size_bytes
        high_watermark (settable, kept in [log start, LEO]),
        leader_epoch (settable, persisted; 0 for a new partition, as in Kafka)
        append(buf, headers, *, now_ms) -> first offset     # as leader: assigns offsets
        append_as_follower(buf, headers, *, now_ms) -> first offset   # keeps offsets
        read(fetch_offset, max_bytes, *, max_offset=None, min_one_batch=True) -> LogRead
        offset_for_timestamp(timestamp_ms) -> (offset, timestamp) | None
        max_timestamp() -> (timestamp, offset)            # (-1, -1) if empty
        batch_headers(from_offset=0) -> Iterator[BatchHeader]
        end_offset_for_epoch(epoch) -> (epoch, end offset)  # OffsetForLeaderEpoch
        truncate_to(offset, *, now_ms=None)
        delete_records_before(offset, *, now_ms=None) -> new log start offset
        apply_retention(now_ms) -> segments deleted
        roll(now_ms=None), flush(up_to=None), maybe_flush(now_ms), close(), delete()
        flush_job(now_ms) -> PeriodicFlushJob | None      # maybe_flush's fsyncs, for a thread
        take_due_deletes(now_ms) -> segments to unlink     # retention's unlinks, for a thread
        rename_for_delete() / begin_delete() / release_deleted()   # topic deletion
        plan_cleaning(first_dirty, first_uncleanable, ...) -> CleaningPlan | None
        install_cleaned(result) -> bool                   # compaction (kwire.log.cleaner)
        had_clean_shutdown                                  # opened exactly as closed

        roll_flusher: Callable[[FlushJob], None] | None   # flushes rolled segments
    LogRead: regions (list[FileRegion(file, position, size)]), size, first_offset,
             log_start_offset, log_end_offset, high_watermark; tobytes()
    OffsetOutOfRangeError, CorruptRecordError (read(): a batch on disk fails its checks)
    FlushJob: run() in any thread, then complete() on the log's thread

Damage: recovery rescans only segments from the recovery point on (each roll
flushes the rolled segment and moves the recovery point, see FlushJob), cuts the
first bad batch and everything after it, and logs a WARN saying what it dropped.
After a clean shutdown the active segment's tail is still checked (cheaply) and
recovered if it is not exactly what the shutdown left. Older data is checked
when read: headers on every read (what the index walk reads anyway), CRC-32C
once per batch not written or checked by this process; a bad batch makes read()
stop before it, or raise CorruptRecordError if it is the first.

Hot path: append() rewrites each batch's baseOffset and partitionLeaderEpoch in
place (both outside the CRC), then writes all batches with one write(); read()
finds positions through the sparse offset index and 61-byte header reads, and
hands back file regions, never the data itself.

Resources: a partition holds one file descriptor (its active segment's `.log`);
inactive segments read since start-up hold theirs, and their indexes in memory
(no fd, no mmap; see index.py), within the broker-wide LRU of open_files.py,
which bounds both. A brand-new partition creates only its empty
`.log` file: index files appear when there are entries to write.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from kwire.log.checkpoint import STATE_FILE, TMP_SUFFIX, LeaderEpochCache, LogState, fsync_dir
from kwire.log.cleaner import (
    CLEANED_SUFFIX,
    SWAP_SUFFIX,
    CleaningPlan,
    CleaningResult,
    SegmentSource,
)
from kwire.log.index import OffsetIndex
from kwire.log.segment import (
    DELETED_SUFFIX,
    INDEX_SUFFIX,
    INT32_MAX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    CorruptRecordError,
    FileRegion,
    LogSegment,
    Truncation,
    segment_file_name,
)
from kwire.protocol.records import (
    BATCH_HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    iter_records,
    parse_batch_header,
    set_base_offset,
    set_partition_leader_epoch,
)

# Leftovers of interrupted operations. A cleaner's `.cleaned` and `.swap` files are
# settled first (PartitionLog._complete_interrupted_swaps).
_STRAY_SUFFIXES = (DELETED_SUFFIX, TMP_SUFFIX)
# How often a flush also rewrites the state file with the new recovery point
# (Kafka: log.flush.offset.checkpoint.interval.ms). A stale one only means more
# to rescan after a crash.
_CHECKPOINT_INTERVAL_MS = 60_000
_LONG_MAX = (1 << 63) - 1

logger = logging.getLogger(__name__)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class FlushJob:
    """A rolled segment's flush, run off the event loop (Kafka flushes a rolled
    segment from its scheduler, not in the request path).

    `run()` fsyncs (any thread; own fds, so closes and deletes meanwhile are
    harmless); then `complete()`, on the log's thread, moves the recovery point and
    writes it to the state file. The recovery point so never passes data that is
    not yet on disk, and a crash after a roll rescans the active segment only."""

    def __init__(
        self,
        log: PartitionLog,
        up_to: int,
        generation: int,
        segments: list[LogSegment],
        fds: list[int],
    ) -> None:
        self.log = log
        self.up_to = up_to
        self.generation = generation
        self.segments = segments
        self._fds = fds
        self.synced = False
        # Whether complete() writes the state file at once (a roll: a crash must not
        # rescan what is synced) or at most once a minute (PeriodicFlushJob).
        self.checkpoint = True

    def run(self) -> None:
        try:
            for fd in self._fds:
                os.fsync(fd)
            self.synced = True
        finally:
            self.release()

    def release(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def complete(self) -> None:
        self.release()  # if run() never ran (cancelled first)
        self.log._complete_flush(self)


class PeriodicFlushJob(FlushJob):
    """A flush of the broker's flush pass (flush.ms, flush.messages, segments rolled
    and not yet flushed), off the event loop as Kafka's log flusher runs on its
    scheduler (PartitionLog.flush_job). As a FlushJob, except that the active
    segment's files are synced but it is not marked synced (appends go on
    meanwhile), and the state file follows at most once a minute, as with flush(),
    unless `checkpoint` (the flush covers rolled segments)."""

    def __init__(
        self,
        log: PartitionLog,
        up_to: int,
        generation: int,
        segments: list[LogSegment],
        fds: list[int],
        *,
        checkpoint: bool,
    ) -> None:
        super().__init__(log, up_to, generation, segments, fds)
        self.checkpoint = checkpoint


class OffsetOutOfRangeError(Exception):
    """Kafka's OFFSET_OUT_OF_RANGE: an offset outside [log start offset, log end offset]."""

    def __init__(self, message: str, *, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(message)
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


@dataclass
class LogConfig:
    """Per-topic log settings, under their Kafka topic config names."""

    segment_bytes: int = 1 << 30  # segment.bytes
    segment_ms: int = 7 * 24 * 3600 * 1000  # segment.ms
    retention_ms: int = 7 * 24 * 3600 * 1000  # retention.ms; -1 = forever
    retention_bytes: int = -1  # retention.bytes, per partition; -1 = no limit
    index_interval_bytes: int = 4096  # index.interval.bytes
    segment_index_bytes: int = 10 * 1024 * 1024  # segment.index.bytes; a full index rolls
    flush_messages: int = _LONG_MAX  # flush.messages
    flush_ms: int = _LONG_MAX  # flush.ms
    file_delete_delay_ms: int = 60_000  # file.delete.delay.ms
    message_timestamp_type: str = "CreateTime"  # message.timestamp.type (the handler stamps)
    cleanup_policy: str = "delete"  # cleanup.policy
    # Compaction (kwire.log.cleaner): Kafka's topic configs and defaults.
    delete_retention_ms: int = 86_400_000  # delete.retention.ms
    min_cleanable_dirty_ratio: float = 0.5  # min.cleanable.dirty.ratio
    min_compaction_lag_ms: int = 0  # min.compaction.lag.ms
    max_compaction_lag_ms: int = _LONG_MAX  # max.compaction.lag.ms

    _NAMES = {
        "segment.bytes": "segment_bytes",
        "segment.ms": "segment_ms",
        "retention.ms": "retention_ms",
        "retention.bytes": "retention_bytes",
        "index.interval.bytes": "index_interval_bytes",
        "segment.index.bytes": "segment_index_bytes",
        "flush.messages": "flush_messages",
        "flush.ms": "flush_ms",
        "file.delete.delay.ms": "file_delete_delay_ms",
        "message.timestamp.type": "message_timestamp_type",
        "cleanup.policy": "cleanup_policy",
        "delete.retention.ms": "delete_retention_ms",
        "min.cleanable.dirty.ratio": "min_cleanable_dirty_ratio",
        "min.compaction.lag.ms": "min_compaction_lag_ms",
        "max.compaction.lag.ms": "max_compaction_lag_ms",
    }

    @classmethod
    def from_topic_configs(cls, configs: Mapping[str, object]) -> LogConfig:
        """From Kafka config names (values parsed or strings); others are ignored."""
        config = cls()
        for name, attr in cls._NAMES.items():
            value = configs.get(name)
            if value is None:
                continue
            if isinstance(getattr(config, attr), float):
                value = float(value)  # type: ignore[arg-type]
            elif isinstance(getattr(config, attr), int):
                value = int(value)  # type: ignore[call-overload]
            elif isinstance(value, list | tuple):
                value = ",".join(str(v) for v in value)
            setattr(config, attr, value)
        return config

    @property
    def deletes(self) -> bool:
        return "delete" in str(self.cleanup_policy)

    @property
    def compacts(self) -> bool:
        return "compact" in str(self.cleanup_policy)


@dataclass(slots=True)
class LogRead:
    """What a fetch gets: whole batches as file regions, plus the log's offsets then."""

    regions: list[FileRegion] = field(default_factory=list)
    size: int = 0
    # Base offset of the first batch returned (may be below the fetch offset), -1 if none.
    first_offset: int = -1
    log_start_offset: int = 0
    log_end_offset: int = 0
    high_watermark: int = 0

    def tobytes(self) -> bytes:
        if len(self.regions) == 1:
            return self.regions[0].tobytes()
        return b"".join(region.tobytes() for region in self.regions)


def parse_partition_dir(name: str) -> tuple[str, int]:
    """`<topic>-<partition>`: topics may contain '-' and '.', so split on the last '-'."""
    topic, sep, partition = name.rpartition("-")
    if not sep or not topic or not partition.isdigit():
        raise ValueError(f"not a partition directory name: {name!r}")
    return topic, int(partition)


class PartitionLog:
    """A partition's segments, offsets and checkpoints. Create with `open()`."""

    def __init__(
        self, directory: Path, config: LogConfig, segments: list[LogSegment], now_ms: int
    ) -> None:
        self.directory = directory
        self.topic, self.partition = parse_partition_dir(directory.name)
        self.config = config
        self._segments = segments
        self._bases = [s.base_offset for s in segments]
        self._log_start_offset = segments[0].base_offset
        self._log_end_offset = segments[-1].base_offset
        self._high_watermark = 0
        self._recovery_point = 0
        self._leader_epoch = 0
        self._epochs = LeaderEpochCache(directory)
        self._pending_deletes: list[tuple[int, LogSegment]] = []
        self._last_flush_ms = now_ms
        self._last_checkpoint_ms = now_ms
        # Position of the batch at the read bound (high watermark / LSO) last asked for:
        # (bound, segment, position). Fetches at the same bound skip the header scan.
        self._bound_cache: tuple[int, LogSegment, int] | None = None
        self._closed = False
        # Whether the state file exists (a brand-new partition has none until needed).
        self._state_stored = False
        self._stored_high_watermark = -1
        # The state file's content as last read or written: a clean close that would
        # write the same again writes nothing (10,000 idle partitions stop without
        # 10,000 fsynced rewrites).
        self._stored_state: LogState | None = None
        # Runs a roll's FlushJob off the event loop (the broker's, see background.py);
        # without one, rolled segments are flushed by the next maybe_flush().
        self.roll_flusher: Callable[[FlushJob], None] | None = None
        # The highest offset a FlushJob in flight will move the recovery point to.
        self._flushing_to = -1
        # Bumped by truncation: a FlushJob prepared before one no longer applies.
        self._generation = 0
        # Whether open() found the log exactly as a clean shutdown left it (nothing
        # recovered): what the shutdown saved alongside it (producer state) still fits.
        self.had_clean_shutdown = False

    # ---- opening and recovery ------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        config: LogConfig,
        *,
        now_ms: int | None = None,
        clean_shutdown: bool | None = None,
    ) -> PartitionLog:
        """Create the partition folder, or load it.

        The log is trusted as is (indexes and all) only after a clean shutdown: the
        partition's own state says so (close() records it), and the caller did not
        pass clean_shutdown=False (the broker does when its own marker is missing).
        Otherwise every segment from the recovery point on is validated batch by
        batch, cut at the first torn or corrupt batch, and its indexes rebuilt.

        Who clears the clean-shutdown record, so that a crash from now on is not
        taken for a clean stop: with clean_shutdown=None (a log on its own), this
        open rewrites the state file. With True or False the caller's log-dir marker
        decides (True: it names this log), and the caller removes it once its logs
        are open, as Kafka does with `.kafka_cleanshutdown`: the record is left as
        is (without the marker it is not trusted), so a start of many partitions
        costs no write per partition unless recovery changed something.
        """
        now = _now_ms() if now_ms is None else now_ms
        directory = Path(directory)
        parse_partition_dir(directory.name)
        directory.mkdir(parents=True, exist_ok=True)
        stored = LogState.read(directory)
        clean = clean_shutdown is not False and stored is not None and stored.clean_shutdown
        state = stored if stored is not None else LogState()

        bases: list[int] = []
        logs: set[int] = set()
        index_files: list[tuple[int, Path]] = []
        # A cleaning interrupted by a crash: the old segments, or the new ones.
        cls._complete_interrupted_swaps(directory)
        for path in directory.iterdir():
            name = path.name
            if name.endswith(_STRAY_SUFFIXES):
                path.unlink(missing_ok=True)
                continue
            stem, dot, suffix = name.partition(".")
            if not (len(stem) == 20 and stem.isdigit()):
                continue
            if dot + suffix == LOG_SUFFIX:
                logs.add(int(stem))
            elif dot + suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX):
                index_files.append((int(stem), path))
        for base, path in index_files:
            if base not in logs:
                path.unlink(missing_ok=True)  # an index without its log
        bases = sorted(logs)

        def new_segment(base: int, active: bool) -> LogSegment:
            return LogSegment(
                directory,
                base,
                index_interval_bytes=config.index_interval_bytes,
                max_index_bytes=config.segment_index_bytes,
                now_ms=now,
                active=active,
            )

        intact = clean
        if not bases:
            segments = [new_segment(state.log_start_offset, True)]
            segments[0].next_offset = None
            segments[0]._max_timestamp = -1
            segments[0]._rolling_timestamp = -1
        else:
            segments = [new_segment(b, i == len(bases) - 1) for i, b in enumerate(bases)]
            intact = cls._recover_segments(segments, state.recovery_point, clean, directory.name)

        log = cls(directory, config, segments, now)
        active = segments[-1]
        log._log_end_offset = (
            active.next_offset if active.next_offset is not None else active.base_offset
        )
        log._log_start_offset = max(state.log_start_offset, segments[0].base_offset)
        log._leader_epoch = state.leader_epoch
        log._state_stored = stored is not None
        log._stored_state = stored
        if log._log_start_offset > log._log_end_offset:
            # Data up to the log start offset is gone (lost in a crash): start over there.
            log._truncate_fully_and_start_at(log._log_start_offset, now)
        log._recovery_point = (
            log._log_end_offset if clean else min(state.recovery_point, log._log_end_offset)
        )
        log._high_watermark = min(
            max(state.high_watermark, log._log_start_offset), log._log_end_offset
        )
        log._epochs.truncate_from_end(log._log_end_offset)
        log._epochs.truncate_from_start(log._log_start_offset)
        if log._epochs.entries:
            # The current epoch may have started at the end, which truncate_from_end drops.
            log._epochs.assign(log._leader_epoch, log._log_end_offset)
        log.had_clean_shutdown = intact and log._log_end_offset == state.recovery_point
        # From here on a crash is an unclean stop for this partition: clear the flag,
        # unless the caller's marker decides (see above). A brand-new partition needs
        # no file yet (no file = recover everything).
        expected = stored or LogState()
        if clean_shutdown is not None and stored is not None:
            expected = replace(stored, clean_shutdown=False)
        if log._state() != expected:
            log._write_state()
        return log

    @staticmethod
    def _recover_segments(
        segments: list[LogSegment], recovery_point: int, clean: bool, name: str
    ) -> bool:
        """Trust what is flushed, validate the rest; the segments list is cut in place
        if a segment other than the last had to be truncated. Returns whether the log
        is exactly as a clean shutdown left it (False after any recovery).

        After a clean shutdown the recovery point is the log end offset then, and
        the active segment's tail is still checked against it (a file cut or
        damaged while the broker was down): nothing is ever appended after bytes
        that are not a whole, valid batch. A trusted segment's indexes are checked
        when first loaded (LogSegment._check_indexes), not here: start-up touches
        no file of an inactive segment but its `.log`'s size."""
        if clean:
            first_unflushed = len(segments)
        else:
            # The segment holding the recovery point and all after it may be torn.
            first_unflushed = max(
                0, bisect_right([s.base_offset for s in segments], recovery_point) - 1
            )
        for segment in segments[:first_unflushed]:
            # Below the recovery point, or all of a clean shutdown's log: on disk already,
            # so a close or flush of an idle partition syncs nothing again.
            segment.mark_synced()
            segment.check_indexes_on_load()
        for i in range(first_unflushed, len(segments)):
            segment = segments[i]
            cut = segment.recover()
            # Nothing is read from the log yet: an inactive segment's fd waits for a read.
            segment.release_file()
            if cut:
                # Everything after a torn batch is unreliable: drop later segments.
                later = segments[i + 1 :]
                _warn_dropped(name, segment, cut, later, "an unclean shutdown")
                for dropped in later:
                    dropped.delete_files()
                del segments[i + 1 :]
                break
        active = segments[-1]
        if not active.active:
            active.make_active()
            active.load_tail_state()
        elif clean:
            active.load_tail_state()  # trusted: its indexes summarise all but the tail
        if not clean:
            return False
        problem = active.tail_problem(recovery_point)
        if problem is None:
            return True
        logger.warning(
            "%s: segment %s does not end as the clean shutdown left it: %s; recovering it",
            name,
            active.log_path.name,
            problem,
        )
        cut = active.recover()
        if cut:
            # The shutdown recorded where the log ended: that is the last offset lost.
            last = max(cut.last_offset, recovery_point - 1)
            _warn_dropped(name, active, replace(cut, last_offset=last), [], "a clean shutdown")
        end = active.next_offset if active.next_offset is not None else active.base_offset
        if not cut and end < recovery_point:
            logger.warning(
                "%s: the log end offset is %d, below the %d recorded at the clean "
                "shutdown: offsets %d to %d are lost",
                name,
                end,
                recovery_point,
                end,
                recovery_point - 1,
            )
        return False

    # ---- offsets and state -----------------------------------------------------------

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        """The next offset to assign."""
        return self._log_end_offset

    @property
    def high_watermark(self) -> int:
        return self._high_watermark

    @high_watermark.setter
    def high_watermark(self, offset: int) -> None:
        self._high_watermark = min(max(offset, self._log_start_offset), self._log_end_offset)

    @property
    def leader_epoch(self) -> int:
        return self._leader_epoch

    @leader_epoch.setter
    def leader_epoch(self, epoch: int) -> None:
        if epoch == self._leader_epoch:
            return
        self._leader_epoch = epoch
        # As Kafka on becoming leader: the new epoch starts at the log end offset.
        self._epochs.assign(epoch, self._log_end_offset)
        self._write_state()

    @property
    def recovery_point(self) -> int:
        return self._recovery_point

    @property
    def segments(self) -> list[LogSegment]:
        return list(self._segments)

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def leader_epoch_entries(self) -> list[tuple[int, int]]:
        return list(self._epochs.entries)

    @property
    def latest_epoch(self) -> int:
        """The latest leader epoch with batches in this log (the epoch cache's), -1 if none."""
        return self._epochs.latest_epoch

    def checkpoint_high_watermark(self) -> None:
        """Persist the high watermark if it moved since it was last written (Kafka's
        replication-offset-checkpoint, every few seconds): a restarted replica starts
        from it rather than from zero."""
        if self._high_watermark != self._stored_high_watermark:
            self._write_state()

    def truncate_fully_and_start_at(self, offset: int, *, now_ms: int | None = None) -> None:
        """Empty the log and start it at `offset` (a follower behind its leader's log
        start offset)."""
        self._truncate_fully_and_start_at(offset, _now_ms() if now_ms is None else now_ms)
        self._write_state()

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: (largest epoch <= `epoch`, its end offset), (-1, -1) if unknown."""
        return self._epochs.end_offset_for(epoch, self._log_end_offset)

    def _state(self, *, clean_shutdown: bool = False) -> LogState:
        return LogState(
            log_start_offset=self._log_start_offset,
            recovery_point=self._recovery_point,
            high_watermark=self._high_watermark,
            leader_epoch=self._leader_epoch,
            clean_shutdown=clean_shutdown,
        )

    def _write_state(self, *, clean_shutdown: bool = False) -> None:
        state = self._state(clean_shutdown=clean_shutdown)
        state.write(self.directory)
        self._stored_state = state
        self._state_stored = True
        self._stored_high_watermark = self._high_watermark

    def _segment_index(self, offset: int) -> int:
        """Index of the segment whose range holds `offset` (0 if below all)."""
        return max(0, bisect_right(self._bases, offset) - 1)

    # ---- append ---------------------------------------------------------------------

    def append(self, buf: bytearray, headers: list[BatchHeader], *, now_ms: int) -> int:
        """Append validated batches as leader; returns the first offset assigned.

        `buf` holds the batches listed in `headers`, contiguous, at their positions.
        Each gets consecutive offsets from the log end offset and this leader epoch,
        written into `buf` in place; then one write to the active segment.
        """
        if not headers:
            raise ValueError("append of no batches")
        first_offset = offset = self._log_end_offset
        epoch = self._leader_epoch
        start = end = headers[0].position
        max_timestamp = -1
        for header in headers:
            if header.position != end:
                raise ValueError("batches to append must be contiguous in the buffer")
            set_base_offset(buf, header, offset)
            set_partition_leader_epoch(buf, header, epoch)
            offset = header.next_offset
            end += header.size
            if header.max_timestamp > max_timestamp:
                max_timestamp = header.max_timestamp
        segment = self._maybe_roll(end - start, max_timestamp, offset - 1, now_ms)
        segment.append(memoryview(buf)[start:end], headers)
        self._log_end_offset = offset
        if epoch > self._epochs.latest_epoch:
            self._epochs.assign(epoch, first_offset)
        self._flush_if_due(now_ms)
        return first_offset

    def append_as_follower(
        self, buf: bytes | bytearray, headers: list[BatchHeader], *, now_ms: int
    ) -> int:
        """Append batches fetched from the leader, keeping their offsets and epochs.

        Offsets must start at or after the log end offset and rise. Returns the
        first batch's base offset.
        """
        if not headers:
            raise ValueError("append of no batches")
        first_offset = headers[0].base_offset
        if first_offset < self._log_end_offset:
            raise ValueError(
                f"follower append at offset {first_offset} below log end offset {self._log_end_offset}"
            )
        start = end = headers[0].position
        next_offset = first_offset
        max_timestamp = -1
        for header in headers:
            if header.position != end:
                raise ValueError("batches to append must be contiguous in the buffer")
            if header.base_offset < next_offset:
                raise ValueError(f"batch offsets go back at {header.base_offset}")
            next_offset = header.next_offset
            end += header.size
            if header.max_timestamp > max_timestamp:
                max_timestamp = header.max_timestamp
        segment = self._maybe_roll(end - start, max_timestamp, next_offset - 1, now_ms)
        segment.append(memoryview(buf)[start:end], headers)
        self._log_end_offset = next_offset
        for header in headers:
            if header.partition_leader_epoch > self._epochs.latest_epoch:
                self._epochs.assign(header.partition_leader_epoch, header.base_offset)
        self._flush_if_due(now_ms)
        return first_offset

    # ---- rolling ----------------------------------------------------------------------

    def _maybe_roll(
        self, size: int, max_timestamp: int, last_offset: int, now_ms: int
    ) -> LogSegment:
        segment = self._segments[-1]
        if segment.size == 0:
            return segment  # an empty segment takes anything (never two at one base offset)
        config = self.config
        if (
            segment.size > config.segment_bytes - size
            or segment.size + size > INT32_MAX  # positions are int32 in the index
            or last_offset - segment.base_offset > INT32_MAX  # so are relative offsets
            or segment.indexes_full
            or self._time_waited_for_roll(segment, max_timestamp, now_ms) > config.segment_ms
        ):
            return self._roll(now_ms)
        return segment

    @staticmethod
    def _time_waited_for_roll(segment: LogSegment, max_timestamp: int, now_ms: int) -> int:
        # As Kafka: measured in record time from the first batch's max timestamp,
        # or in broker time since the segment was created if there is none.
        first = segment.rolling_timestamp
        if first >= 0:
            return max_timestamp - first
        return now_ms - segment.created_ms

    def roll(self, now_ms: int | None = None) -> None:
        """Start a new active segment at the log end offset (no-op if the active one is empty)."""
        self._roll(_now_ms() if now_ms is None else now_ms)

    def _roll(self, now_ms: int) -> LogSegment:
        old = self._segments[-1]
        if old.size == 0:
            return old
        base = self._log_end_offset
        new = LogSegment(
            self.directory,
            base,
            index_interval_bytes=self.config.index_interval_bytes,
            max_index_bytes=self.config.segment_index_bytes,
            now_ms=now_ms,
            active=True,
        )
        if new.size:
            new.file.close()
            raise RuntimeError(f"segment {new.log_path} already exists and is not empty")
        # A fresh segment: stale index files (if any) must not be counted.
        new.clear_indexes()
        new._max_timestamp = -1
        new._rolling_timestamp = -1
        old.make_inactive()
        self._segments.append(new)
        self._bases.append(base)
        if self.roll_flusher is not None:
            self._flush_rolled(base)
        return new

    def _open_for_sync(self, up_to: int) -> tuple[list[LogSegment], list[int]]:
        """The segments from the recovery point to below `up_to`, and fds to fsync
        them off the event loop, the directory's last (new segments' entries)."""
        segments = [
            s
            for s in self._segments[self._segment_index(self._recovery_point) :]
            if s.base_offset < up_to
        ]
        fds: list[int] = []
        try:
            for segment in segments:
                fds += segment.open_for_sync()
            fds.append(os.open(self.directory, os.O_RDONLY))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return segments, fds

    def _flush_rolled(self, up_to: int) -> None:
        """Hand the segments below `up_to` (just rolled) to the roll flusher."""
        segments, fds = self._open_for_sync(up_to)
        job = FlushJob(self, up_to, self._generation, segments, fds)
        self._flushing_to = max(self._flushing_to, up_to)
        assert self.roll_flusher is not None
        try:
            self.roll_flusher(job)
        except BaseException:
            job.release()
            self._flushing_to = -1
            raise

    def _complete_flush(self, job: FlushJob) -> None:
        """A FlushJob's fsyncs are done (or failed): move the recovery point, and
        persist it at once if `job.checkpoint`, else within the minute as flush()."""
        if self._flushing_to <= job.up_to:
            self._flushing_to = -1
        if not job.synced or self._closed or job.generation != self._generation:
            return
        for segment in job.segments:
            if not segment.deleted:
                segment.mark_synced()
        target = min(job.up_to, self._log_end_offset)
        now = _now_ms()
        if target > self._recovery_point:
            self._recovery_point = target
            self._last_flush_ms = now
        # A roll's is written now, not within the minute: a crash must not rescan what
        # is synced (a damaged byte in a rescanned segment would cut everything after it).
        if job.checkpoint or now - self._last_checkpoint_ms >= _CHECKPOINT_INTERVAL_MS:
            self._write_state()
            self._last_checkpoint_ms = now

    # ---- flushing -------------------------------------------------------------------------

    def _flush_if_due(self, now_ms: int) -> None:
        config = self.config
        unflushed = self._log_end_offset - self._recovery_point
        if unflushed and (
            unflushed >= config.flush_messages or now_ms - self._last_flush_ms >= config.flush_ms
        ):
            self.flush(now_ms=now_ms)

    def maybe_flush(self, now_ms: int) -> None:
        """Periodic check: flush.messages / flush.ms, and segments rolled since the last flush
        (as Kafka flushes a segment once it is rolled, so recovery need not rescan it)."""
        self._flush_if_due(now_ms)
        active_base = self._segments[-1].base_offset
        if self._recovery_point < active_base and self._flushing_to < active_base:
            self.flush(active_base, now_ms=now_ms)

    def flush(
        self, up_to: int | None = None, *, now_ms: int | None = None, checkpoint: bool = False
    ) -> None:
        """fsync the segments holding offsets [recovery point, up_to) and move the
        recovery point there. The state file follows at most once a minute unless
        `checkpoint`."""
        now = _now_ms() if now_ms is None else now_ms
        target = self._log_end_offset if up_to is None else min(up_to, self._log_end_offset)
        if target > self._recovery_point:
            segments = self._segments
            first = self._segment_index(self._recovery_point)
            for i in range(first, len(segments)):
                if segments[i].base_offset >= target:
                    break
                segments[i].flush()
            self._recovery_point = target
            self._last_flush_ms = now
        if checkpoint or now - self._last_checkpoint_ms >= _CHECKPOINT_INTERVAL_MS:
            self._write_state()
            self._last_checkpoint_ms = now

    def flush_job(self, now_ms: int) -> PeriodicFlushJob | None:
        """The flush maybe_flush() would do now, as a job whose fsyncs run in a worker
        thread (the broker's flush pass), or None if nothing is due or a job in flight
        covers it: flush.messages / flush.ms due (up to the log end offset), or
        segments rolled and not flushed (up to the active segment). The segments'
        index entries are written and their fds opened here."""
        if self._closed:
            return None
        config = self.config
        unflushed = self._log_end_offset - self._recovery_point
        active_base = self._segments[-1].base_offset
        if unflushed and (
            unflushed >= config.flush_messages or now_ms - self._last_flush_ms >= config.flush_ms
        ):
            up_to = self._log_end_offset
        elif self._recovery_point < active_base:
            up_to = active_base
        else:
            return None
        if self._flushing_to >= up_to:
            return None
        segments, fds = self._open_for_sync(up_to)
        job = PeriodicFlushJob(
            self,
            up_to,
            self._generation,
            [s for s in segments if not s.active],
            fds,
            checkpoint=up_to <= active_base,
        )
        self._flushing_to = max(self._flushing_to, up_to)
        return job

    # ---- reads ------------------------------------------------------------------------

    def read(
        self,
        fetch_offset: int,
        max_bytes: int,
        *,
        max_offset: int | None = None,
        min_one_batch: bool = True,
    ) -> LogRead:
        """Whole batches from the one holding `fetch_offset`, up to `max_bytes`.

        Only batches entirely below `max_offset` (high watermark or last stable
        offset; default the log end offset) are returned. With `min_one_batch`, the
        first batch is returned even if larger than `max_bytes`. May continue into
        the following segments while room remains. Raises OffsetOutOfRangeError
        unless log start offset <= fetch_offset <= log end offset.
        """
        leo = self._log_end_offset
        lso = self._log_start_offset
        if fetch_offset < lso or fetch_offset > leo:
            raise OffsetOutOfRangeError(
                f"offset {fetch_offset} out of range [{lso}, {leo}] for {self.topic}-{self.partition}",
                log_start_offset=lso,
                log_end_offset=leo,
            )
        result = LogRead(
            log_start_offset=lso, log_end_offset=leo, high_watermark=self._high_watermark
        )
        bound = leo if max_offset is None else min(max_offset, leo)
        if fetch_offset >= bound:
            return result
        segments = self._segments
        i = self._segment_index(fetch_offset)
        offset = fetch_offset
        regions = result.regions
        total = 0
        while i < len(segments):
            segment = segments[i]
            try:
                header = segment.find_batch(offset, strict=True)
                if header is None:
                    i += 1
                    if i < len(segments):
                        offset = segments[i].base_offset
                    continue
                if header.last_offset >= bound:
                    break
                end = self._bound_position(i, bound)
                available = end - header.position
                room = max_bytes - total
                if available <= room:
                    take = available
                else:
                    take = 0
                    if room > 0:
                        take = (
                            segment.last_boundary_within(header.position, header.position + room)
                            - header.position
                        )
                    if take == 0:
                        if not (min_one_batch and not regions):
                            break
                        take = header.size
                # Header checks above; CRCs here, once per batch this process did not
                # write or check before. A corrupt batch ends the read before it.
                sound = segment.verified_length(header.position, take)
                if sound == 0:
                    raise CorruptRecordError(
                        f"record batch at offsets {header.base_offset} to {header.last_offset} "
                        f"fails its checks (CRC-32C or header)",
                        path=segment.log_path,
                        position=header.position,
                    )
            except CorruptRecordError:
                if regions:
                    break  # what comes before it is served; the next read reports it
                raise
            if result.first_offset < 0:
                result.first_offset = header.base_offset
            regions.append(segment.region(header.position, sound))
            total += sound
            if sound < available or end < segment.size:
                break  # max_bytes, the bound, or a corrupt batch reached
            i += 1
            if i < len(segments):
                offset = segments[i].base_offset
        result.size = total
        if not regions:
            result.first_offset = -1
        return result

    def _bound_position(self, i: int, bound: int) -> int:
        """Position in segment i where batches reaching `bound` start (its size if none)."""
        segments = self._segments
        segment = segments[i]
        segment_end = segments[i + 1].base_offset if i + 1 < len(segments) else self._log_end_offset
        if bound >= segment_end:
            return segment.size
        cached = self._bound_cache
        if cached is not None and cached[0] == bound and cached[1] is segment:
            return cached[2]
        header = segment.find_batch(bound)
        position = header.position if header is not None else segment.size
        self._bound_cache = (bound, segment, position)
        return position

    def batch_headers(self, from_offset: int = 0) -> Iterator[BatchHeader]:
        """Headers of the batches holding offsets >= `from_offset`, in order.

        Positions are relative to each batch's segment file. For rebuilding producer
        state at start-up; reads headers only.
        """
        segments = list(self._segments)
        first = self._segment_index(from_offset)
        for i in range(first, len(segments)):
            segment = segments[i]
            position = segment.offset_index.lookup(from_offset)[1] if i == first else 0
            for header in segment.iter_headers(position):
                if header.last_offset >= from_offset:
                    yield header

    def has_control_batch_at(self, offset: int) -> bool:
        """Whether a control batch (a transaction marker) starts at `offset`."""
        if not self._log_start_offset <= offset < self._log_end_offset:
            return False
        header = next(self.batch_headers(offset), None)
        return header is not None and header.base_offset == offset and header.is_control

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after the log start offset with
        timestamp >= `timestamp_ms`; None if there is none (ListOffsets by time)."""
        start_offset = self._log_start_offset
        segments = list(self._segments)
        for segment in segments[self._segment_index(start_offset) :]:
            if segment.max_timestamp < timestamp_ms:
                continue
            _, time_offset = segment.time_index.lookup(timestamp_ms)
            _, position = segment.offset_index.lookup(max(time_offset, start_offset))
            for header in segment.iter_headers(position):
                if header.max_timestamp < timestamp_ms or header.last_offset < start_offset:
                    continue
                found = _first_record(
                    segment, header, lambda r: r[1] >= timestamp_ms and r[0] >= start_offset
                )
                if found is not None:
                    return found
        return None

    def max_timestamp(self) -> tuple[int, int]:
        """(timestamp, offset) of the first record with the largest timestamp; (-1, -1)
        if there is none (ListOffsets MAX_TIMESTAMP, KIP-734)."""
        best: LogSegment | None = None
        best_timestamp = -1
        for segment in self._segments:
            if segment.max_timestamp > best_timestamp:
                best, best_timestamp = segment, segment.max_timestamp
        if best is None:
            return -1, -1
        header = best.find_batch(best.offset_of_max_timestamp)
        if header is None:
            return best_timestamp, best.offset_of_max_timestamp
        found = _first_record(best, header, lambda r: r[1] >= header.max_timestamp)
        if found is None:
            return header.max_timestamp, header.last_offset
        return found[1], found[0]

    # ---- truncation and deletion --------------------------------------------------------

    def truncate_to(self, offset: int, *, now_ms: int | None = None) -> None:
        """Drop everything at and above `offset` (replication): whole batches, so the
        log end offset becomes `offset`, or the base of the batch holding it if
        `offset` falls inside a batch."""
        if offset >= self._log_end_offset:
            return
        now = _now_ms() if now_ms is None else now_ms
        if offset < self._log_start_offset:
            self._truncate_fully_and_start_at(offset, now)
        else:
            i = self._segment_index(offset)
            for segment in self._segments[i + 1 :]:
                self._schedule_delete(segment, now)
            del self._segments[i + 1 :]
            del self._bases[i + 1 :]
            segment = self._segments[i]
            segment.truncate_to(offset)
            self._log_end_offset = (
                segment.next_offset if segment.next_offset is not None else segment.base_offset
            )
        self._bound_cache = None
        self._generation += 1
        self._high_watermark = min(self._high_watermark, self._log_end_offset)
        self._recovery_point = min(self._recovery_point, self._log_end_offset)
        self._epochs.truncate_from_end(self._log_end_offset)
        self._write_state()

    def _truncate_fully_and_start_at(self, offset: int, now_ms: int) -> None:
        for segment in self._segments:
            self._schedule_delete(segment, now_ms)
        segment = LogSegment(
            self.directory,
            offset,
            index_interval_bytes=self.config.index_interval_bytes,
            max_index_bytes=self.config.segment_index_bytes,
            now_ms=now_ms,
            active=True,
        )
        segment._max_timestamp = -1
        segment._rolling_timestamp = -1
        self._segments = [segment]
        self._bases = [offset]
        self._log_start_offset = self._log_end_offset = offset
        self._high_watermark = self._recovery_point = offset
        self._bound_cache = None
        self._generation += 1
        self._epochs.clear()

    def delete_records_before(self, offset: int, *, now_ms: int | None = None) -> int:
        """DeleteRecords: move the log start offset up to `offset` (at most the high
        watermark), deleting segments wholly below it. Returns the log start offset."""
        if offset > self._high_watermark:
            raise OffsetOutOfRangeError(
                f"cannot delete records before {offset}: above the high watermark {self._high_watermark}",
                log_start_offset=self._log_start_offset,
                log_end_offset=self._log_end_offset,
            )
        if offset > self._log_start_offset:
            self._log_start_offset = offset
            self._epochs.truncate_from_start(offset)
            self._delete_old_segments(
                lambda segment, after: (
                    after is not None and after.base_offset <= self._log_start_offset
                ),
                _now_ms() if now_ms is None else now_ms,
            )
            self._write_state()
        return self._log_start_offset

    def apply_retention(self, now_ms: int) -> int:
        """Retention pass: delete the oldest segments past retention.ms or beyond
        retention.bytes, and those below the log start offset; finish delayed
        deletions; flush rolled segments. Returns the number of segments deleted.

        As Kafka, a segment goes only once all of it is below the high watermark;
        the active segment too (after a roll) if it is expired and non-empty.
        """
        self._finish_pending_deletes(now_ms)
        config = self.config
        deleted = 0
        if config.deletes:
            if config.retention_ms >= 0:
                retention_ms = config.retention_ms
                deleted += self._delete_old_segments(
                    lambda segment, after: now_ms - segment.largest_timestamp > retention_ms, now_ms
                )
            if config.retention_bytes >= 0:
                excess = self.size_bytes - config.retention_bytes

                def over_size(segment: LogSegment, after: LogSegment | None) -> bool:
                    nonlocal excess
                    if excess - segment.size >= 0:
                        excess -= segment.size
                        return True
                    return False

                if excess > 0:
                    deleted += self._delete_old_segments(over_size, now_ms)
        deleted += self._delete_old_segments(
            lambda segment, after: (
                after is not None and after.base_offset <= self._log_start_offset
            ),
            now_ms,
        )
        if self.roll_flusher is None:
            # In the broker rolled segments are flushed by the roll flusher, and due
            # flushes by its passes (flush_job), off the event loop.
            self.maybe_flush(now_ms)
        return deleted

    def _delete_old_segments(
        self, predicate: Callable[[LogSegment, LogSegment | None], bool], now_ms: int
    ) -> int:
        segments = self._segments
        deletable: list[LogSegment] = []
        for i, segment in enumerate(segments):
            after = segments[i + 1] if i + 1 < len(segments) else None
            upper = after.base_offset if after is not None else self._log_end_offset
            if self._high_watermark < upper:
                break  # not all of it is committed yet
            if after is None and segment.size == 0:
                break
            if not predicate(segment, after):
                break
            deletable.append(segment)
        if not deletable:
            return 0
        if len(deletable) == len(segments):
            self._roll(now_ms)  # there is always an active segment
        for segment in deletable:
            self._schedule_delete(segment, now_ms)
        del self._segments[: len(deletable)]
        del self._bases[: len(deletable)]
        self._bound_cache = None
        first_base = self._segments[0].base_offset
        if first_base > self._log_start_offset:
            self._log_start_offset = first_base
            self._epochs.truncate_from_start(first_base)
            self._write_state()
        return len(deletable)

    def _schedule_delete(self, segment: LogSegment, now_ms: int) -> None:
        """Kafka's async delete: rename to `.deleted` now, unlink after file.delete.delay.ms,
        so file regions handed to fetches stay readable meanwhile."""
        segment.rename_to_deleted()
        if self.config.file_delete_delay_ms <= 0:
            segment.delete_files()
        else:
            self._pending_deletes.append((now_ms + self.config.file_delete_delay_ms, segment))

    def _finish_pending_deletes(self, now_ms: int) -> None:
        for segment in self.take_due_deletes(now_ms):
            segment.delete_files()

    def take_due_deletes(self, now_ms: int) -> list[LogSegment]:
        """The segments renamed `.deleted` whose file.delete.delay.ms is over, no longer
        pending here: the caller unlinks their files (in a worker thread, the broker's
        retention pass), then calls their delete_files() to let go of what they hold
        (its unlinks then find nothing)."""
        if not self._pending_deletes:
            return []
        due: list[LogSegment] = []
        keep: list[tuple[int, LogSegment]] = []
        for deadline, segment in self._pending_deletes:
            if deadline <= now_ms:
                due.append(segment)
            else:
                keep.append((deadline, segment))
        self._pending_deletes = keep
        return due

    # ---- compaction (kwire.log.cleaner) -------------------------------------------------

    def plan_cleaning(
        self,
        first_dirty_offset: int,
        first_uncleanable_offset: int,
        *,
        aborted_txns: Sequence[object] = (),
        active_producers: Mapping[int, int] | None = None,
    ) -> CleaningPlan | None:
        """What a cleaning pass reads (kwire.log.cleaner.clean): the closed segments
        below the first uncleanable offset, each with its own fd. None if there is none.

        The first uncleanable offset is clamped to the active segment's base offset,
        the high watermark and the recovery point: only committed data that is on
        disk is cleaned, so the segments a swap replaces are never rescanned by
        recovery. (The caller clamps it to the last stable offset.) `aborted_txns`
        are AbortedTxn-like (producer_id, first_offset, last_offset);
        `active_producers` maps a producer id to its last data batch's last offset."""
        segments = self._segments
        uncleanable = min(
            first_uncleanable_offset,
            segments[-1].base_offset,
            self._high_watermark,
            self._recovery_point,
        )
        count = 0
        while count < len(segments) - 1 and segments[count].base_offset < uncleanable:
            count += 1
        if count == 0:
            return None
        first_dirty = min(max(first_dirty_offset, self._log_start_offset), uncleanable)
        sources: list[SegmentSource] = []
        try:
            for i in range(count):
                segment = segments[i]
                fd = os.open(segment.log_path, os.O_RDONLY)
                sources.append(
                    SegmentSource(segment.base_offset, segments[i + 1].base_offset, segment.size, fd)
                )
        except OSError:
            for source in sources:
                os.close(source.fd)
            raise
        config = self.config
        return CleaningPlan(
            topic=self.topic,
            partition=self.partition,
            directory=self.directory,
            first_dirty_offset=first_dirty,
            first_uncleanable_offset=uncleanable,
            sources=sources,
            segments=list(segments[:count]),
            generation=self._generation,
            segment_bytes=config.segment_bytes,
            index_interval_bytes=config.index_interval_bytes,
            segment_index_bytes=config.segment_index_bytes,
            delete_retention_ms=config.delete_retention_ms,
            aborted_txns=sorted(_aborted_triple(txn) for txn in aborted_txns),
            active_producers=dict(active_producers or {}),
        )

    def install_cleaned(self, result: CleaningResult, *, now_ms: int | None = None) -> bool:
        """Swap a pass's cleaned segments in (Kafka's replaceSegments), crash-safe:

        1. each group's `.cleaned` files are renamed `.swap`, the directory fsynced:
           the commit point (recovery completes a swap from here on);
        2. the segments replaced are renamed `.deleted`, unlinked after
           file.delete.delay.ms (file regions already handed to fetches stay readable);
        3. the `.swap` files take their final names, the directory is fsynced;
        4. the new segments take the old ones' place in the segment list.

        Log start and end offsets, the high watermark and the recovery point do not
        change. False (and the result discarded) if a segment to replace is no
        longer exactly in the log: truncated, deleted by retention or DeleteRecords."""
        plan = result.plan
        if not self._cleaned_installable(result):
            result.discard()
            return False
        now = _now_ms() if now_ms is None else now_ms
        directory = self.directory
        suffixes = (INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX)  # the log last: it commits
        swapped: list[Path] = []
        try:
            for group in result.groups:
                for suffix, cleaned in zip(suffixes, (group.index_path, group.time_index_path, group.log_path), strict=True):
                    swap = directory / (segment_file_name(group.base_offset, suffix) + SWAP_SUFFIX)
                    os.replace(cleaned, swap)
                    swapped.append(swap)
            fsync_dir(directory)
        except OSError:
            for path in swapped:
                path.unlink(missing_ok=True)
            result.discard()
            raise
        old = plan.segments
        for group in result.groups:
            for i in group.replaced:
                self._schedule_delete(old[i], now)
        for group in result.groups:
            for suffix in suffixes:
                name = segment_file_name(group.base_offset, suffix)
                os.replace(directory / (name + SWAP_SUFFIX), directory / name)
        fsync_dir(directory)
        first_replaced = {id(old[group.replaced[0]]): group for group in result.groups}
        replaced = {id(old[i]) for group in result.groups for i in group.replaced}
        segments: list[LogSegment] = []
        for segment in self._segments:
            group = first_replaced.get(id(segment))
            if group is not None:
                new = LogSegment(
                    directory,
                    group.base_offset,
                    index_interval_bytes=self.config.index_interval_bytes,
                    max_index_bytes=self.config.segment_index_bytes,
                    now_ms=now,
                    active=False,
                )
                new.mark_synced()  # clean() fsynced its files
                segments.append(new)
            elif id(segment) not in replaced:
                segments.append(segment)
        self._segments = segments
        self._bases = [s.base_offset for s in segments]
        self._bound_cache = None
        plan.close()
        logger.info(
            "%s-%d: cleaned %d segment(s) into %d, offsets %d to %d (%d bytes read, %d written)",
            self.topic,
            self.partition,
            len(replaced),
            len(result.groups),
            plan.sources[0].base_offset if plan.sources else -1,
            result.end_offset,
            result.stats.bytes_read,
            result.stats.bytes_written,
        )
        return True

    def _cleaned_installable(self, result: CleaningResult) -> bool:
        """Whether every segment a cleaned group replaces is still in the log as
        planned: same object, same size, closed, consecutive, no truncation since."""
        plan = result.plan
        if self._closed or plan.generation != self._generation or plan.directory != self.directory:
            return False
        positions = {id(segment): i for i, segment in enumerate(self._segments)}
        for group in result.groups:
            at = positions.get(id(plan.segments[group.replaced[0]]))
            if at is None:
                return False
            for k, i in enumerate(group.replaced):
                segment = plan.segments[i]
                if at + k + 1 >= len(self._segments) or self._segments[at + k] is not segment:
                    return False
                source = plan.sources[i]
                if segment.deleted or segment.active or segment.size != source.size:
                    return False
            if self._segments[at + len(group.replaced)].base_offset != plan.sources[group.replaced[-1]].end_offset:
                return False
        return True

    @staticmethod
    def _complete_interrupted_swaps(directory: Path) -> None:
        """At open, before the segments are listed: a `.cleaned` file is an
        uncommitted swap (deleted: the old segments are all there); a `.log.swap` is
        a committed one (the old segments' files in [its base offset, its next
        offset) are deleted, the swap files renamed to their final names; missing
        indexes are rebuilt by the load). Other `.swap` files (indexes whose log's
        swap never committed) are deleted."""
        names = os.listdir(directory)
        for name in names:
            if name.endswith(CLEANED_SUFFIX):
                (directory / name).unlink(missing_ok=True)
        log_swap = LOG_SUFFIX + SWAP_SUFFIX
        swaps = sorted(n for n in names if n.endswith(log_swap) and _is_segment_stem(n[:20]))
        for swap in swaps:
            base = int(swap[:20])
            end = _swap_next_offset(directory, base)
            if end is None:
                # The cleaner's swaps hold at least one batch (fsynced before the rename).
                logger.warning("%s: %s holds no batch: not a cleaner swap, deleted", directory.name, swap)
                continue
            for name in names:
                stem, dot, suffix = name.partition(".")
                if (
                    _is_segment_stem(stem)
                    and dot + suffix in (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX)
                    and base <= int(stem) < end
                ):
                    (directory / name).unlink(missing_ok=True)
            for suffix in (INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX):
                final = directory / segment_file_name(base, suffix)
                try:
                    os.replace(final.with_name(final.name + SWAP_SUFFIX), final)
                except FileNotFoundError:
                    pass
            logger.warning(
                "%s: completed a cleaner swap interrupted by a crash: segment %d replaces "
                "offsets %d to %d",
                directory.name,
                base,
                base,
                end - 1,
            )
        for name in os.listdir(directory) if swaps else names:
            if name.endswith(SWAP_SUFFIX):
                (directory / name).unlink(missing_ok=True)
        if swaps:
            fsync_dir(directory)

    # ---- shutting down ----------------------------------------------------------------

    def close(self, *, sync: bool = True, deferred: list[tuple[Path, bytes]] | None = None) -> None:
        """Clean close: seal and write indexes, flush, record the clean shutdown.

        A broker closing thousands of logs passes sync=False and a `deferred` list:
        nothing is fsynced here and the state file is added to the list, which the
        caller writes with checkpoint.write_all_atomically (one filesystem sync before
        its renames covers every log's files: a shutdown of 10,000 partitions is not
        40,000 fsyncs)."""
        if self._closed:
            return
        for _, segment in self._pending_deletes:
            segment.delete_files()
        self._pending_deletes = []
        # The segments from the recovery point on are synced as they close (the active
        # one after its final time entry), so each file is synced once.
        first = self._segment_index(self._recovery_point)
        for i, segment in enumerate(self._segments):
            segment.close(sync=sync and i >= first)
        self._recovery_point = self._log_end_offset
        # A log that never held data and never needed a state file needs none now:
        # reopened, its recovery is that of an empty segment (no reads). So closing an
        # idle new partition costs no fsync.
        if (self._state_stored or self.size_bytes or self._state() != LogState()) and (
            self._state(clean_shutdown=True) != self._stored_state
        ):
            if deferred is None:
                self._write_state(clean_shutdown=True)
            else:
                state = self._state(clean_shutdown=True)
                deferred.append((self.directory / STATE_FILE, state.encode()))
                self._stored_state = state
                self._state_stored = True
        self._closed = True

    def delete(self) -> None:
        """Topic deletion here and now: the folder renamed away, then removed."""
        shutil.rmtree(self.rename_for_delete(), ignore_errors=True)

    def rename_for_delete(self) -> Path:
        """Kafka's async delete of a partition: the folder renamed to
        `<topic>-<partition>.<id>-delete` (delete_dir_path; its name is free at once
        for a new topic of the same name), the log closed and its files let go. The
        caller removes the returned folder, best in a worker thread; a leftover is
        removed at start-up."""
        self.begin_delete()
        target = delete_dir_path(self.directory)
        try:
            os.rename(self.directory, target)
        except FileNotFoundError:
            pass  # never created, or removed already
        self.release_deleted()
        return target

    def begin_delete(self) -> None:
        """The log is being deleted (its folder renamed, maybe in a worker thread):
        flushes and cleanings in flight no longer apply, close() does nothing."""
        self._closed = True

    def release_deleted(self) -> None:
        """Once the folder is renamed away: the segments let go of their files and
        indexes. Their unlinks find nothing (the files are under the new name), so
        this costs no disk work."""
        for _, segment in self._pending_deletes:
            segment.delete_files()
        self._pending_deletes = []
        for segment in self._segments:
            segment.delete_files()
        self._closed = True

    def __repr__(self) -> str:
        return (
            f"PartitionLog({self.topic}-{self.partition}, start={self._log_start_offset}, "
            f"end={self._log_end_offset}, hw={self._high_watermark}, segments={len(self._segments)})"
        )


# Kafka's suffix of a partition folder being deleted (LocalLog.DeleteDirSuffix).
DELETE_DIR_SUFFIX = "-delete"


def delete_dir_path(directory: Path) -> Path:
    """Kafka's LocalLog.logDeleteDirName: `<topic>-<partition>.<random id>-delete`
    beside `directory`, the topic cut so that the name fits in 255 bytes."""
    topic, partition = parse_partition_dir(directory.name)
    suffix = f"-{partition}.{os.urandom(16).hex()}{DELETE_DIR_SUFFIX}"
    return directory.with_name(topic[: 255 - len(suffix)] + suffix)


def _aborted_triple(txn: object) -> tuple[int, int, int]:
    """(producer id, first offset, last offset) of an AbortedTxn or a tuple."""
    if isinstance(txn, tuple):
        return int(txn[0]), int(txn[1]), int(txn[2])
    return txn.producer_id, txn.first_offset, txn.last_offset  # type: ignore[attr-defined]


def _is_segment_stem(stem: str) -> bool:
    return len(stem) == 20 and stem.isdigit()


def _swap_next_offset(directory: Path, base: int) -> int | None:
    """The offset after the last whole batch of `<base>.log.swap`: a header scan
    from its offset index's last entry (the whole file if there is none). None if
    it holds no whole batch (not a file the cleaner wrote)."""
    path = directory / (segment_file_name(base, LOG_SUFFIX) + SWAP_SUFFIX)
    index_swap = directory / (segment_file_name(base, INDEX_SUFFIX) + SWAP_SUFFIX)
    tail = OffsetIndex.read_tail(index_swap, 1)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        position = tail[-1][1] if tail and 0 < tail[-1][1] < size else 0
        next_offset: int | None = None
        while position + BATCH_HEADER_SIZE <= size:
            header = parse_batch_header(os.pread(fd, BATCH_HEADER_SIZE, position))
            if (
                header.magic != 2
                or header.batch_length < BATCH_HEADER_SIZE - LOG_OVERHEAD
                or position + header.size > size
                or header.base_offset < base
            ):
                break
            next_offset = header.next_offset
            position += header.size
        return next_offset
    finally:
        os.close(fd)


def _first_record(
    segment: LogSegment, header: BatchHeader, match: Callable[[tuple[int, int]], bool]
) -> tuple[int, int] | None:
    """(offset, timestamp) of the first record of the batch that matches: the only
    place the log decodes records (timestamp lookups)."""
    data = segment.region(header.position, header.size).tobytes()
    for record in iter_records(data):
        pair = (record.offset, record.timestamp)
        if match(pair):
            return pair
    return None


def _warn_dropped(
    name: str, segment: LogSegment, cut: Truncation, later: list[LogSegment], after: str
) -> None:
    """Recovery dropped data: say exactly what (bytes, batches, offsets), as a WARN."""
    last_offset = cut.last_offset
    also = ""
    if later:
        later_bytes = sum(s.size for s in later)
        final = later[-1]
        _, start = final.offset_index.last_entry
        for header in final.iter_headers(start if start < final.size else 0):
            last_offset = max(last_offset, header.last_offset)
        also = (
            f", and the {len(later)} later segment(s) from offset {later[0].base_offset} "
            f"({later_bytes} bytes)"
        )
    offsets = (
        f"offsets {cut.first_offset} to {last_offset}"
        if last_offset >= cut.first_offset
        else f"offsets from {cut.first_offset}"
    )
    logger.warning(
        "%s: recovery after %s dropped %d bytes of segment %s from position %d "
        "(%d batch(es), from the first that fails its checks on)%s: %s lost; "
        "the log end offset is now %d",
        name,
        after,
        cut.bytes,
        segment.log_path.name,
        cut.position,
        cut.batches,
        also,
        offsets,
        cut.first_offset,
    )
