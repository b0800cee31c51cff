"""The log cleaner's core: Kafka's Cleaner (LogCleaner.scala), one pass over one log.

`PartitionLog.plan_cleaning` (on the event loop) names the closed segments to
read and opens its own file descriptors on them; `clean()` (in a worker thread)
reads only those fds and writes new `.cleaned` files; `PartitionLog.install_cleaned`
(on the event loop again) swaps them in, crash-safe.

A pass, as Kafka's:

1. The offset map: key -> offset of its last record, over the dirty section
   [first dirty offset, first uncleanable offset). Control batches and aborted
   transactions stay out of it. A full map stops at a batch boundary: `end_offset`
   is then below the first uncleanable offset, and the rest waits for the next
   pass (a large log is cleaned in passes).
2. Every closed segment from the log start up to the one holding `end_offset` is
   rewritten, in groups of consecutive segments that fit one segment
   (segment.bytes, int32 relative offsets), each group into one new segment at
   the group's first base offset. A record is kept if its batch reaches
   `end_offset`, or no later record of its key is in the map; a record without
   a key is dropped. Tombstones and transaction markers live until their
   batch's delete horizon (KIP-534) has passed.

Offsets never change. A batch whose records are all kept is copied byte for byte;
otherwise it is rebuilt with the same header fields (base offset, last offset
delta, producer id/epoch, base sequence, leader epoch, flags, compression),
the kept records' bytes copied as they are (only their timestamp delta is
rewritten when the batch's base timestamp becomes its delete horizon).

One addition to Kafka: each cleaned group ends with a batch reaching the group's
last offset (the original last batch, emptied and without producer identity, if
none of its records is left). Recovery of an interrupted swap reads the swap
file's last batch to know which old segments it replaces; without it, a group
whose last segment lost every record would leave that old segment behind.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kwire import codecs
from kwire.log.index import OffsetIndex, TimeIndex, fsync_path
from kwire.log.segment import (
    INDEX_SUFFIX,
    INT32_MAX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    LogSegment,
    segment_file_name,
)
from kwire.protocol.records import (
    ATTRIBUTES_OFFSET,
    BATCH_HEADER_SIZE,
    COMPRESSION_MASK,
    CONTROL_FLAG,
    DELETE_HORIZON_FLAG,
    LOG_OVERHEAD,
    NO_PRODUCER_ID,
    NO_SEQUENCE,
    TIMESTAMP_TYPE_LOG_APPEND,
    TRANSACTIONAL_FLAG,
    BatchHeader,
    InvalidBatchError,
    crc32c,
    decode_varint,
    decode_varlong,
    parse_batch_header,
    write_varint,
    write_varlong,
)

CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
# What one offset map entry costs here: Kafka's SkimpyOffsetMap packs 24 bytes (a
# 16-byte hash, an 8-byte offset); a Python dict of 16-byte keys and int offsets
# measures about 123 bytes an entry (tracemalloc, 1M entries). Counting 128 keeps
# log.cleaner.dedupe.buffer.size a bound on memory, as in Kafka: the default 128 MiB
# holds about 0.94M keys a pass, and a log with more is cleaned in several passes.
OFFSET_MAP_ENTRY_BYTES = 128
# Keys up to this long are their own map key; longer ones are hashed to 16 bytes.
MAX_RAW_KEY_BYTES = 16

_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC = struct.Struct(">I")
# Segments are read this much at a time (a whole batch if larger).
_READ_BLOCK = 1 << 20
# Output is written in chunks of about this size.
_WRITE_BLOCK = 1 << 20
_MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD


def dedupe_capacity(buffer_bytes: int, threads: int, load_factor: float) -> int:
    """Entries of one cleaner thread's OffsetMap, Kafka's way: log.cleaner.dedupe.buffer.size
    shared by the threads, OFFSET_MAP_ENTRY_BYTES an entry, filled up to
    log.cleaner.io.buffer.load.factor."""
    per_thread = min(buffer_bytes // max(1, threads), INT32_MAX)
    return max(1, int(per_thread // OFFSET_MAP_ENTRY_BYTES * load_factor))


def map_key(key: bytes) -> bytes:
    """The offset map's key for a record key: the key itself when short (no false
    merges), else its 128-bit BLAKE2b digest."""
    if len(key) <= MAX_RAW_KEY_BYTES:
        return key
    return hashlib.blake2b(key, digest_size=16).digest()


class OffsetMap:
    """Kafka's SkimpyOffsetMap: record key -> offset of its latest record, bounded
    to `capacity` keys (dedupe_capacity counts a Python dict entry's real size)."""

    __slots__ = ("capacity", "_map", "latest_offset")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"offset map capacity {capacity} must be at least 1")
        self.capacity = capacity
        self._map: dict[bytes, int] = {}
        # The last offset put (-1 if none): Kafka's latestOffset.
        self.latest_offset = -1

    def put(self, key: bytes, offset: int) -> None:
        k = map_key(key)
        entries = self._map
        if len(entries) >= self.capacity and k not in entries:
            raise OverflowError("put of a new key into a full offset map")
        entries[k] = offset
        self.latest_offset = offset

    def get(self, key: bytes) -> int:
        """The latest offset of `key`, -1 if absent."""
        return self._map.get(map_key(key), -1)

    @property
    def full(self) -> bool:
        return len(self._map) >= self.capacity

    def __len__(self) -> int:
        return len(self._map)

    def clear(self) -> None:
        self._map.clear()
        self.latest_offset = -1

    def __repr__(self) -> str:
        return f"OffsetMap({len(self._map)}/{self.capacity})"


class CleanerError(Exception):
    """A pass cannot go on: a batch on disk fails its checks, or the offset map
    cannot hold even one batch's keys. Nothing of the pass is installed."""


class CleaningAbortedError(CleanerError):
    """The plan was aborted (CleaningPlan.abort: the partition is truncated or deleted)."""


@dataclass
class CleanerStats:
    """What a pass did (Kafka's CleanerStats)."""

    bytes_read: int = 0  # of the segments rewritten
    bytes_written: int = 0
    records_read: int = 0
    records_kept: int = 0
    batches_read: int = 0
    batches_written: int = 0
    tombstones_removed: int = 0
    aborted_removed: int = 0  # records of aborted transactions
    markers_removed: int = 0  # transaction markers past their delete horizon
    keyless_removed: int = 0  # records without a key (Kafka's invalid messages)
    empty_batches_kept: int = 0  # last batches of active producers, emptied
    map_bytes_read: int = 0  # of the dirty section, building the offset map
    map_records_read: int = 0
    segments_cleaned: int = 0
    seconds: float = 0.0
    # Offsets of the transaction markers removed: their aborted transactions must leave
    # the partition's aborted-transaction index with them (Kafka's cleaned segment gets
    # a transaction index of the aborts whose markers it keeps). A reader shown an abort
    # whose marker is gone would skip the producer's records for ever after.
    removed_markers: list[int] = field(default_factory=list)

    @property
    def records_per_second(self) -> float:
        return self.records_read / self.seconds if self.seconds > 0 else 0.0

    @property
    def megabytes_per_second(self) -> float:
        return self.bytes_read / 1e6 / self.seconds if self.seconds > 0 else 0.0


@dataclass
class SegmentSource:
    """One closed segment as the plan reads it: its own fd on the `.log` file, the
    size it had when planned, and the offset where the next segment starts."""

    base_offset: int
    end_offset: int  # the next segment's base offset
    size: int
    fd: int


@dataclass
class CleaningPlan:
    """What one pass reads: made by PartitionLog.plan_cleaning on the event loop,
    read by clean() in a thread (which touches only `sources`' fds and new files)."""

    topic: str
    partition: int
    directory: Path
    first_dirty_offset: int
    first_uncleanable_offset: int
    sources: list[SegmentSource]
    # The LogSegments the sources were opened on: for install_cleaned only.
    segments: list[LogSegment]
    generation: int
    segment_bytes: int
    index_interval_bytes: int
    segment_index_bytes: int
    delete_retention_ms: int
    # (producer id, first offset, last offset) of the aborted transactions.
    aborted_txns: list[tuple[int, int, int]] = field(default_factory=list)
    # Producer id -> offset of the last record of its last data batch.
    active_producers: dict[int, int] = field(default_factory=dict)
    # log.cleaner.io.max.bytes.per.second, this pass's share (inf: no limit). The pass
    # sleeps, off the GIL, to keep to it: the event loop shares the interpreter.
    max_bytes_per_second: float = float("inf")
    _abort: threading.Event = field(default_factory=threading.Event, repr=False)
    _throttle: _Throttler | None = field(default=None, repr=False)

    def abort(self) -> None:
        """Ask a clean() running on this plan to stop at its next batch."""
        self._abort.set()

    @property
    def aborted(self) -> bool:
        return self._abort.is_set()

    def close(self) -> None:
        """Release the fds (idempotent)."""
        for source in self.sources:
            if source.fd >= 0:
                fd, source.fd = source.fd, -1
                os.close(fd)

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.partition}"


@dataclass
class CleanedGroup:
    """One new segment: base offset, the plan's sources it replaces (indexes into
    plan.sources), the offset after its last batch, and its `.cleaned` files."""

    base_offset: int
    replaced: list[int]
    end_offset: int
    size: int
    log_path: Path
    index_path: Path
    time_index_path: Path

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        return self.log_path, self.index_path, self.time_index_path


@dataclass
class CleaningResult:
    """A pass's output, waiting for install_cleaned."""

    plan: CleaningPlan
    end_offset: int  # the next first dirty offset (the cleaner checkpoint)
    stats: CleanerStats
    groups: list[CleanedGroup] = field(default_factory=list)

    def discard(self) -> None:
        """A swap that cannot happen: delete the `.cleaned` files, close the fds."""
        self.discard_files()
        self.plan.close()

    def discard_files(self) -> None:
        for group in self.groups:
            for path in group.paths:
                path.unlink(missing_ok=True)
        self.groups = []


def cleaned_path(directory: Path, base_offset: int, suffix: str) -> Path:
    return directory / (segment_file_name(base_offset, suffix) + CLEANED_SUFFIX)


# ---- reading -----------------------------------------------------------------------


class _Throttler:
    """Kafka's Throttler: keeps the bytes read to a rate, by sleeping (in the cleaner's
    thread) once the bytes of a short period run ahead of it."""

    _PERIOD_S = 0.3

    def __init__(self, bytes_per_second: float) -> None:
        self.rate = bytes_per_second
        self._start = time.monotonic()
        self._bytes = 0

    def maybe_throttle(self, nbytes: int) -> None:
        self._bytes += nbytes
        now = time.monotonic()
        elapsed = now - self._start
        if elapsed < self._PERIOD_S and self._bytes < self.rate * self._PERIOD_S:
            return
        wait = self._bytes / self.rate - elapsed
        if wait > 0:
            time.sleep(wait)
        self._start, self._bytes = time.monotonic(), 0


def _iter_batches(source: SegmentSource, plan: CleaningPlan) -> Iterator[tuple[BatchHeader, bytes]]:
    """(header, buffer) per batch of a segment; header.position is within buffer."""
    fd, size = source.fd, source.size
    throttle = plan._throttle
    if throttle is None and plan.max_bytes_per_second < float("inf"):
        throttle = plan._throttle = _Throttler(plan.max_bytes_per_second)
    position = 0
    buf = b""
    buf_start = 0
    while position < size:
        if plan._abort.is_set():
            raise CleaningAbortedError(f"{plan.name}: cleaning aborted")
        rel = position - buf_start
        if rel + BATCH_HEADER_SIZE > len(buf):
            buf = os.pread(fd, min(_READ_BLOCK, size - position), position)
            buf_start, rel = position, 0
            if len(buf) < BATCH_HEADER_SIZE:
                raise CleanerError(
                    f"{plan.name}: segment {source.base_offset} ends inside a batch header at {position}"
                )
        header = parse_batch_header(buf, rel)
        batch_size = header.batch_length + LOG_OVERHEAD
        if header.magic != 2 or header.batch_length < _MIN_BATCH_LENGTH or position + batch_size > size:
            raise CleanerError(
                f"{plan.name}: segment {source.base_offset} holds no valid batch at position {position}"
            )
        if rel + batch_size > len(buf):
            buf = os.pread(fd, min(max(_READ_BLOCK, batch_size), size - position), position)
            buf_start, rel = position, 0
            if len(buf) < batch_size:
                raise CleanerError(f"{plan.name}: segment {source.base_offset} is shorter than planned")
        header.position = rel
        if throttle is not None:
            throttle.maybe_throttle(batch_size)
        yield header, buf
        position += batch_size


def _records_section(header: BatchHeader, buf: bytes) -> tuple[bytes, int, int]:
    """(data, start, end) of the batch's records, decompressed if need be."""
    start = header.position + BATCH_HEADER_SIZE
    end = header.position + header.batch_length + LOG_OVERHEAD
    codec = header.attributes & COMPRESSION_MASK
    if codec == codecs.NONE:
        return buf, start, end
    try:
        data = codecs.decompress(codec, memoryview(buf)[start:end])
    except codecs.CompressionError as exc:
        raise CleanerError(f"batch at offset {header.base_offset} does not decompress: {exc}") from exc
    return data, 0, len(data)


# A record as the walk sees it: (start, end, timestamp delta, offset delta, key, null value).
_Walked = tuple[int, int, int, int, "bytes | None", bool]


def _walk(data: bytes, position: int, end: int, count: int) -> list[_Walked]:
    """The records of a records section, lightly: lengths, timestamp and offset
    deltas, the key and whether the value is null; headers are not decoded.
    Varints of one byte (most lengths and deltas) are read inline."""
    out: list[_Walked] = []
    append = out.append
    try:
        for _ in range(count):
            start = position
            b = data[position]
            if b < 0x80:
                length = (b >> 1) ^ -(b & 1)
                position += 1
            elif data[position + 1] < 0x80:  # two bytes: records of 64 bytes and more
                n = (b & 0x7F) | (data[position + 1] << 7)
                length = (n >> 1) ^ -(n & 1)
                position += 2
            else:
                length, position = decode_varint(data, position)
            record_end = position + length
            if length <= 0 or record_end > end:
                raise CleanerError(f"record of {length} bytes does not fit its batch")
            position += 1  # attributes
            b = data[position]
            if b < 0x80:
                timestamp_delta = (b >> 1) ^ -(b & 1)
                position += 1
            elif data[position + 1] < 0x80:
                n = (b & 0x7F) | (data[position + 1] << 7)
                timestamp_delta = (n >> 1) ^ -(n & 1)
                position += 2
            else:
                timestamp_delta, position = decode_varlong(data, position)
            b = data[position]
            if b < 0x80:
                offset_delta = (b >> 1) ^ -(b & 1)
                position += 1
            elif data[position + 1] < 0x80:  # two bytes: deltas 64 to 8191
                n = (b & 0x7F) | (data[position + 1] << 7)
                offset_delta = (n >> 1) ^ -(n & 1)
                position += 2
            else:
                offset_delta, position = decode_varint(data, position)
            b = data[position]
            if b < 0x80:
                key_length = (b >> 1) ^ -(b & 1)
                position += 1
            else:
                key_length, position = decode_varint(data, position)
            if key_length >= 0:
                key: bytes | None = data[position : position + key_length]
                position += key_length
            else:
                key = None
            b = data[position]
            null_value = b == 1  # zigzag(-1); any other length is 1 byte or >= 0x80
            if position >= record_end:
                raise CleanerError("record fields run past the record")
            append((start, record_end, timestamp_delta, offset_delta, key, null_value))
            position = record_end
    except (IndexError, InvalidBatchError) as exc:
        raise CleanerError(f"malformed record: {exc}") from exc
    if position != end:
        raise CleanerError(f"{end - position} bytes after the batch's {count} records")
    return out


class _Transactions:
    """Kafka's CleanedTransactionMetadata: which data batches belong to aborted
    transactions, and whether a marker's transaction still has a batch in the log."""

    def __init__(self, aborted: Sequence[tuple[int, int, int]]) -> None:
        self._aborted = sorted(aborted, key=lambda t: t[1])
        self._next = 0
        # Producer id -> (first offset, marker offset) of its aborted transaction under way.
        self._ongoing_aborted: dict[int, tuple[int, int]] = {}
        # Producers whose open transaction has a batch kept in this pass.
        self._kept: set[int] = set()

    def advance(self, last_offset: int) -> None:
        aborted, i = self._aborted, self._next
        while i < len(aborted) and aborted[i][1] <= last_offset:
            producer_id, first_offset, marker_offset = aborted[i]
            # Sorted by first offset, and a producer has one transaction at a time: a
            # later one supersedes an earlier (whose marker may be gone, or below the
            # dirty section and not seen).
            self._ongoing_aborted[producer_id] = (first_offset, marker_offset)
            i += 1
        self._next = i

    def is_aborted(self, header: BatchHeader) -> bool:
        """A transactional data batch of an aborted transaction (after advance())."""
        if not header.attributes & TRANSACTIONAL_FLAG:
            return False
        txn = self._ongoing_aborted.get(header.producer_id)
        return txn is not None and txn[0] <= header.base_offset and header.last_offset < txn[1]

    def batch_kept(self, header: BatchHeader) -> None:
        if header.attributes & TRANSACTIONAL_FLAG:
            self._kept.add(header.producer_id)

    def on_marker(self, header: BatchHeader) -> bool:
        """A marker ends its producer's transaction; True if a batch of it was kept."""
        txn = self._ongoing_aborted.get(header.producer_id)
        if txn is not None and txn[1] <= header.base_offset:
            del self._ongoing_aborted[header.producer_id]
        if header.producer_id in self._kept:
            self._kept.discard(header.producer_id)
            return True
        return False


# ---- writing -----------------------------------------------------------------------


def _assemble(
    body: bytes | bytearray,
    header: BatchHeader,
    *,
    attributes: int,
    base_timestamp: int,
    max_timestamp: int,
    records_count: int,
    producer_id: int | None = None,
) -> bytes:
    """A batch with `header`'s offsets, leader epoch and producer fields around `body`."""
    pid = header.producer_id if producer_id is None else producer_id
    identified = producer_id is None or producer_id != NO_PRODUCER_ID
    batch = bytearray(BATCH_HEADER_SIZE)
    batch += body
    _HEADER.pack_into(
        batch,
        0,
        header.base_offset,
        len(batch) - LOG_OVERHEAD,
        header.partition_leader_epoch,
        2,
        0,
        attributes,
        header.last_offset_delta,
        base_timestamp,
        max_timestamp,
        pid,
        header.producer_epoch if identified else -1,
        header.base_sequence if identified else NO_SEQUENCE,
        records_count,
    )
    _CRC.pack_into(batch, 17, crc32c(memoryview(batch)[ATTRIBUTES_OFFSET:]))
    return bytes(batch)


def _rebased_record(data: bytes, start: int, end: int, delta_shift: int) -> bytes:
    """A record with its timestamp delta moved by `delta_shift` (new base timestamp)."""
    length, body = decode_varint(data, start)
    timestamp_delta, after = decode_varlong(data, body + 1)
    out = bytearray()
    out.append(data[body])
    write_varlong(out, timestamp_delta + delta_shift)
    out += data[after:end]
    prefixed = bytearray()
    write_varint(prefixed, len(out))
    return bytes(prefixed + out)


class _SegmentWriter:
    """Writes one cleaned group's `.log.cleaned` and builds its indexes, as
    LogSegment.append does (an entry every index.interval.bytes)."""

    def __init__(self, plan: CleaningPlan, base_offset: int) -> None:
        directory = plan.directory
        self.base_offset = base_offset
        self.log_path = cleaned_path(directory, base_offset, LOG_SUFFIX)
        self.index_path = cleaned_path(directory, base_offset, INDEX_SUFFIX)
        self.time_index_path = cleaned_path(directory, base_offset, TIME_INDEX_SUFFIX)
        self.interval = plan.index_interval_bytes
        self.offset_index = OffsetIndex(self.index_path, base_offset, plan.segment_index_bytes, fresh=True)
        self.time_index = TimeIndex(self.time_index_path, base_offset, plan.segment_index_bytes, fresh=True)
        self.fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.buffer = bytearray()
        self.size = 0
        self.since_index = 0
        self.max_timestamp = -1
        self.offset_of_max = base_offset
        self.next_offset = base_offset
        self.batches = 0

    def add(self, batch: bytes | memoryview, base_offset: int, max_timestamp: int, next_offset: int) -> None:
        if max_timestamp > self.max_timestamp:
            self.max_timestamp, self.offset_of_max = max_timestamp, base_offset
        if self.since_index > self.interval and not self.offset_index.is_full:
            self.offset_index.append(base_offset, self.size)
            if not self.time_index.is_full:  # its last slot is kept for the final entry
                self.time_index.maybe_append(self.max_timestamp, self.offset_of_max)
            self.since_index = 0
        self.since_index += len(batch)
        self.size += len(batch)
        self.buffer += batch
        self.next_offset = next_offset
        self.batches += 1
        if len(self.buffer) >= _WRITE_BLOCK:
            self._write()

    def _write(self) -> None:
        view = memoryview(self.buffer)
        done = 0
        while done < len(view):
            done += os.write(self.fd, view[done:])
        view.release()
        self.buffer.clear()

    def finish(self) -> None:
        """Write and fsync the log and both indexes (the time index ends with the
        segment's max timestamp); the files exist even without entries."""
        self._write()
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        if self.max_timestamp >= 0:
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max)
        for index in (self.offset_index, self.time_index):
            index.write()
            if not index.path.exists():
                index.path.touch()
            fsync_path(index.path)

    def abandon(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        for path in (self.log_path, self.index_path, self.time_index_path):
            path.unlink(missing_ok=True)


# ---- the pass ------------------------------------------------------------------------


def clean(plan: CleaningPlan, offset_map: OffsetMap, *, now_ms: int) -> CleaningResult:
    """One cleaning pass over the plan's segments (see the module docstring).

    Runs in a worker thread: file I/O on the plan's own fds and on new `.cleaned`
    files only. The offset map is cleared first. On failure, the `.cleaned` files
    written so far are removed and the error raised; the plan stays open."""
    started = time.perf_counter()
    stats = CleanerStats()
    offset_map.clear()
    end_offset = _build_offset_map(plan, offset_map, stats)
    result = CleaningResult(plan, end_offset, stats)
    # One tracker for the whole pass: a transaction may span groups.
    transactions = _Transactions(plan.aborted_txns)
    try:
        for group in _group_sources(plan, end_offset):
            result.groups.append(
                _clean_group(plan, group, transactions, offset_map, end_offset, now_ms, stats)
            )
    except BaseException:
        result.discard_files()
        raise
    stats.seconds = time.perf_counter() - started
    return result


def _build_offset_map(plan: CleaningPlan, offset_map: OffsetMap, stats: CleanerStats) -> int:
    """Fill the map over the dirty section; returns where it stopped (the end offset)."""
    first_dirty = plan.first_dirty_offset
    uncleanable = plan.first_uncleanable_offset
    entries = offset_map._map
    capacity = offset_map.capacity
    transactions = _Transactions(plan.aborted_txns)
    for source in plan.sources:
        if source.end_offset <= first_dirty:
            continue
        if source.base_offset >= uncleanable:
            break
        for header, buf in _iter_batches(source, plan):
            last_offset = header.last_offset
            transactions.advance(last_offset)
            if last_offset < first_dirty:
                continue
            if last_offset >= uncleanable:
                return max(first_dirty, header.base_offset)
            attributes = header.attributes
            if attributes & CONTROL_FLAG:
                transactions.on_marker(header)
                continue
            if transactions.is_aborted(header) or header.records_count == 0:
                continue
            data, start, end = _records_section(header, buf)
            records = _walk(data, start, end, header.records_count)
            base = header.base_offset
            keyed = [
                (key if len(key) <= MAX_RAW_KEY_BYTES else map_key(key), base + offset_delta)
                for _, _, _, offset_delta, key, _ in records
                if key is not None and base + offset_delta >= first_dirty
            ]
            if len(entries) + len(keyed) > capacity:
                new_keys = len({k for k, _ in keyed if k not in entries})
                if len(entries) + new_keys > capacity:
                    if not entries:
                        raise CleanerError(
                            f"{plan.name}: the offset map ({capacity} entries) cannot hold the "
                            f"{new_keys} keys of the batch at offset {base}: raise "
                            "log.cleaner.dedupe.buffer.size"
                        )
                    return max(first_dirty, base)  # full: the rest waits for the next pass
            for k, offset in keyed:
                entries[k] = offset
            if keyed:
                offset_map.latest_offset = keyed[-1][1]
            stats.map_bytes_read += header.batch_length + LOG_OVERHEAD
            stats.map_records_read += len(records)
    return max(first_dirty, uncleanable)


def _group_sources(plan: CleaningPlan, end_offset: int) -> list[list[int]]:
    """Kafka's groupSegmentsBySize over the segments below end_offset: runs of
    consecutive segments whose sizes sum to at most segment.bytes and whose
    offsets fit an int32 from the group's base."""
    groups: list[list[int]] = []
    current: list[int] = []
    size = 0
    sources = plan.sources
    for i, source in enumerate(sources):
        if source.base_offset >= end_offset:
            break
        if current and (
            size + source.size > plan.segment_bytes
            or source.end_offset - 1 - sources[current[0]].base_offset > INT32_MAX
        ):
            groups.append(current)
            current, size = [], 0
        current.append(i)
        size += source.size
    if current:
        groups.append(current)
    return groups


def _clean_group(
    plan: CleaningPlan,
    group: list[int],
    transactions: _Transactions,
    offset_map: OffsetMap,
    end_offset: int,
    now_ms: int,
    stats: CleanerStats,
) -> CleanedGroup:
    sources = plan.sources
    writer = _SegmentWriter(plan, sources[group[0]].base_offset)
    try:
        last_header: BatchHeader | None = None
        for i in group:
            for header, buf in _iter_batches(sources[i], plan):
                _clean_batch(plan, header, buf, writer, transactions, offset_map, end_offset, now_ms, stats)
                last_header = header
            stats.segments_cleaned += 1
        group_end = sources[group[-1]].end_offset
        if writer.next_offset < group_end or writer.batches == 0:
            _write_placeholder(writer, last_header, group_end)
        writer.finish()
    except BaseException:
        writer.abandon()
        raise
    return CleanedGroup(
        base_offset=writer.base_offset,
        replaced=list(group),
        end_offset=writer.next_offset,
        size=writer.size,
        log_path=writer.log_path,
        index_path=writer.index_path,
        time_index_path=writer.time_index_path,
    )


def _write_placeholder(writer: _SegmentWriter, last: BatchHeader | None, group_end: int) -> None:
    """An empty batch reaching the group's last offset (see the module docstring):
    the original last batch's offsets, leader epoch and max timestamp, no producer."""
    if last is not None and last.next_offset == group_end and last.base_offset >= writer.next_offset:
        template = BatchHeader(
            last.base_offset, 0, last.partition_leader_epoch, 2, 0, 0, last.last_offset_delta,
            last.max_timestamp, last.max_timestamp, NO_PRODUCER_ID, -1, NO_SEQUENCE, 0,
        )
    else:
        base = max(writer.next_offset, group_end - 1)
        epoch = last.partition_leader_epoch if last is not None else -1
        template = BatchHeader(base, 0, epoch, 2, 0, 0, group_end - 1 - base, -1, -1, NO_PRODUCER_ID, -1, NO_SEQUENCE, 0)
    batch = _assemble(
        b"",
        template,
        attributes=0,
        base_timestamp=template.base_timestamp,
        max_timestamp=template.max_timestamp,
        records_count=0,
        producer_id=NO_PRODUCER_ID,
    )
    writer.add(batch, template.base_offset, template.max_timestamp, group_end)


def _clean_batch(
    plan: CleaningPlan,
    header: BatchHeader,
    buf: bytes,
    writer: _SegmentWriter,
    transactions: _Transactions,
    offset_map: OffsetMap,
    end_offset: int,
    now_ms: int,
    stats: CleanerStats,
) -> None:
    position = header.position
    size = header.batch_length + LOG_OVERHEAD
    stats.batches_read += 1
    stats.bytes_read += size
    stats.records_read += header.records_count
    if crc32c(memoryview(buf)[position + ATTRIBUTES_OFFSET : position + size]) != header.crc:
        raise CleanerError(
            f"{plan.name}: batch at offsets {header.base_offset} to {header.last_offset} "
            "fails its CRC-32C"
        )
    attributes = header.attributes
    transactions.advance(header.last_offset)
    horizon = header.base_timestamp if attributes & DELETE_HORIZON_FLAG else None

    def copy() -> None:
        writer.add(memoryview(buf)[position : position + size], header.base_offset, header.max_timestamp, header.next_offset)
        stats.batches_written += 1
        stats.bytes_written += size
        stats.records_kept += header.records_count

    if attributes & CONTROL_FLAG:
        has_data = transactions.on_marker(header)
        if header.last_offset >= end_offset or has_data:
            copy()
        elif horizon is None:
            # Its transaction has no batch left: the marker lives delete.retention.ms more.
            _rebuild(plan, header, buf, None, writer, stats, now_ms + plan.delete_retention_ms)
        elif now_ms >= horizon:
            stats.markers_removed += 1
            stats.removed_markers.append(header.base_offset)
        else:
            copy()
        return
    aborted = transactions.is_aborted(header)
    if header.last_offset >= end_offset:
        transactions.batch_kept(header)
        copy()  # not yet mapped: kept as is
        return
    if aborted or header.records_count == 0:
        kept: list[_Walked] = []
        if aborted:
            stats.aborted_removed += header.records_count
        data = b""
    else:
        data, start, end = _records_section(header, buf)
        records = _walk(data, start, end, header.records_count)
        kept = []
        get = offset_map._map.get
        base = header.base_offset
        expired = horizon is not None and now_ms >= horizon
        for record in records:
            key = record[4]
            if key is None:
                stats.keyless_removed += 1
                continue
            if get(key if len(key) <= MAX_RAW_KEY_BYTES else map_key(key), -1) > base + record[3]:
                continue  # a later record of the key is in the map
            if record[5] and expired:
                stats.tombstones_removed += 1
                continue
            kept.append(record)
        if len(kept) == len(records) and (horizon is not None or not any(r[5] for r in kept)):
            transactions.batch_kept(header)
            copy()
            return
    if kept:
        transactions.batch_kept(header)
        need_horizon = horizon is None and any(r[5] for r in kept)
        _rebuild(plan, header, data, kept, writer, stats, now_ms + plan.delete_retention_ms if need_horizon else None)
    elif header.producer_id >= 0 and plan.active_producers.get(header.producer_id) == header.last_offset:
        # Kafka's RETAIN_EMPTY: the producer's last sequence must survive a restart.
        transactions.batch_kept(header)
        batch = _assemble(
            b"",
            header,
            attributes=attributes & (TIMESTAMP_TYPE_LOG_APPEND | TRANSACTIONAL_FLAG | CONTROL_FLAG),
            base_timestamp=header.max_timestamp,
            max_timestamp=header.max_timestamp,
            records_count=0,
        )
        writer.add(batch, header.base_offset, header.max_timestamp, header.next_offset)
        stats.batches_written += 1
        stats.bytes_written += len(batch)
        stats.empty_batches_kept += 1


def _rebuild(
    plan: CleaningPlan,
    header: BatchHeader,
    data: bytes,
    kept: list[_Walked] | None,
    writer: _SegmentWriter,
    stats: CleanerStats,
    new_horizon: int | None,
) -> None:
    """A new batch of the kept records (all of a control batch's if `kept` is None),
    same header fields; with `new_horizon`, that delete horizon as its base timestamp."""
    if kept is None:
        data, start, end = _records_section(header, data)
        kept = _walk(data, start, end, header.records_count)
    attributes = header.attributes
    base_timestamp = header.base_timestamp
    if header.attributes & TIMESTAMP_TYPE_LOG_APPEND or not kept:
        max_timestamp = header.max_timestamp  # (an emptied control batch keeps its own)
    else:
        max_timestamp = base_timestamp + max(r[2] for r in kept)
    if new_horizon is not None:
        shift = base_timestamp - new_horizon
        body = b"".join(_rebased_record(data, r[0], r[1], shift) for r in kept)
        base_timestamp = new_horizon
        attributes |= DELETE_HORIZON_FLAG
    else:
        body = b"".join(data[r[0] : r[1]] for r in kept)
    codec = attributes & COMPRESSION_MASK
    if codec != codecs.NONE:
        body = codecs.compress(codec, body)
    batch = _assemble(
        body,
        header,
        attributes=attributes,
        base_timestamp=base_timestamp,
        max_timestamp=max_timestamp,
        records_count=len(kept),
    )
    writer.add(batch, header.base_offset, max_timestamp, header.next_offset)
    stats.batches_written += 1
    stats.bytes_written += len(batch)
    stats.records_kept += len(kept)
