"""One log segment: a `.log` file of record batches plus its two sparse indexes.

As Kafka's LogSegment. The `.log` file holds magic v2 batches exactly as on the
wire. Everything here reads batch headers only (61 bytes), except recovery,
which must read whole batches to check their CRC-32C.

File descriptors: the active segment keeps its `.log` open (appends, and
sendfile for fetches); an inactive one opens it on its first read, and keeps it
until the broker-wide cache of open segment files lets go of it (open_files.py:
least recently used first, beyond a bound on fds and on index memory; file
regions handed to fetches keep their file open meanwhile). Indexes hold no fd
and no mapping (see index.py), and are loaded on first use (and checked then:
start-up reads no index of an inactive segment), so an idle partition costs one
fd, and a brand-new one creates nothing but its empty `.log`.
"""

from __future__ import annotations

import io
import os
import sys
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kwire.log.index import OffsetIndex, TimeIndex, fsync_path
from kwire.log.open_files import open_segments
from kwire.protocol import records
from kwire.protocol.records import (
    ATTRIBUTES_OFFSET,
    BATCH_HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    parse_batch_header,
)

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
DELETED_SUFFIX = ".deleted"

INT32_MAX = (1 << 31) - 1
# Header scans read this much at a time, so a run of small batches costs one pread.
_SCAN_BLOCK = 8192
# How many appended batches the tail-read hint remembers (see LogSegment._recent_batches).
_RECENT_BATCHES = 64
# Recovery reads whole batches (for the CRC) in large sequential chunks.
_RECOVERY_BLOCK = 1 << 20
_MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD


class CorruptRecordError(Exception):
    """Kafka's CorruptRecordException: a batch on disk fails its checks. A fetch of it
    is answered CORRUPT_MESSAGE."""

    def __init__(self, message: str, *, path: Path, position: int) -> None:
        super().__init__(f"{path.name} at position {position}: {message}")
        self.path = path
        self.position = position


@dataclass(frozen=True, slots=True)
class Truncation:
    """What recovery cut off a segment: from `position` (where offset `first_offset`
    would have started) to the old end. `batches` and `last_offset` come from the
    dropped bytes' headers as far as they still parse (-1: none did)."""

    position: int
    bytes: int
    batches: int
    first_offset: int
    last_offset: int

    def __bool__(self) -> bool:
        return self.bytes > 0


def header_problem(header: BatchHeader, end: int, min_offset: int, base_offset: int) -> str | None:
    """Why a batch header cannot be a batch of this segment (None if it can): magic 2,
    length at least a header and within `end`, offsets from `min_offset` on and
    within the segment's int32 range. Header fields only, no CRC."""
    if header.magic != 2:
        return f"magic {header.magic}"
    if header.batch_length < _MIN_BATCH_LENGTH:
        return f"batch length {header.batch_length} is less than a batch header"
    if header.position + header.size > end:
        return f"batch length {header.batch_length} runs past the end of the segment ({end} bytes)"
    if header.base_offset < min_offset:
        return f"base offset {header.base_offset} below the expected {min_offset}"
    if header.last_offset_delta < 0 or header.last_offset - base_offset > INT32_MAX:
        return f"last offset delta {header.last_offset_delta} out of range"
    return None


def segment_file_name(base_offset: int, suffix: str) -> str:
    """Kafka's naming: the base offset, 20 digits zero-padded."""
    return f"{base_offset:020d}{suffix}"


@dataclass(frozen=True, slots=True)
class FileRegion:
    """A byte range of a segment file, for zero-copy sends (os.sendfile(file.fileno(), ...)).

    The region holds the file open: neither the segment's deletion (delayed by
    file.delete.delay.ms) nor its eviction from the open-files cache closes it
    while a region refers to it; the fd closes when the last holder lets go.
    """

    file: io.FileIO
    position: int
    size: int

    def tobytes(self) -> bytes:
        fd = self.file.fileno()
        data = os.pread(fd, self.size, self.position)
        if len(data) < self.size:
            # Short read: either a rare partial read or the file was truncated since.
            parts = [data]
            got = len(data)
            while got < self.size:
                more = os.pread(fd, self.size - got, self.position + got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        return data


class LogSegment:
    """A segment file with lazily loaded indexes.

    Index entries are appended to the active (last) segment only; they reach the
    index files when the segment is flushed, rolled (sealed) or closed. The other
    segments' indexes are read when first needed, so start-up reads no index
    whole, and their `.log` is opened on the first read.
    """

    def __init__(
        self,
        directory: Path,
        base_offset: int,
        *,
        index_interval_bytes: int,
        max_index_bytes: int,
        now_ms: int,
        active: bool,
    ) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.index_interval_bytes = index_interval_bytes
        self.max_index_bytes = max_index_bytes
        self.created_ms = now_ms
        self.active = active
        self.log_path = directory / segment_file_name(base_offset, LOG_SUFFIX)
        self.index_path = directory / segment_file_name(base_offset, INDEX_SUFFIX)
        self.time_index_path = directory / segment_file_name(base_offset, TIME_INDEX_SUFFIX)
        # The active segment's file is open from the start; others' on first read.
        self._file: io.FileIO | None = None
        if active:
            self.size = os.fstat(self.file.fileno()).st_size
        else:
            self.size = os.stat(self.log_path).st_size
        self._offset_index: OffsetIndex | None = None
        self._time_index: TimeIndex | None = None
        # Bytes appended since the last offset index entry.
        self.bytes_since_index = 0
        # Next offset after the last batch; known for the active segment.
        self.next_offset: int | None = None
        # Largest batch max timestamp and the base offset of the batch that first had
        # it; None until loaded (from the time index's last entry, or a scan).
        self._max_timestamp: int | None = None
        self._offset_of_max_timestamp = base_offset
        # The first batch's max timestamp, which segment.ms is counted from (as Kafka).
        self._rolling_timestamp: int | None = None
        self.deleted = False
        # File positions of the batches appended last, by base offset: a consumer at
        # the tail fetches from exactly such an offset, and finds its batch without
        # scanning headers from the last index entry (up to index.interval.bytes).
        self._recent_batches: dict[int, int] = {}
        # Whether the files may hold changes not yet fsynced. A file found on disk may
        # (a crashed process's writes can still be in the page cache); an empty one
        # holds nothing to lose, so an idle new partition's flush and close cost no fsync.
        self._unsynced = self.size > 0
        # Byte spans [start, end) whose batches this process wrote or CRC-checked
        # (whole batches, sorted, disjoint): a read CRC-checks only what is outside.
        self._verified: list[tuple[int, int]] = []

    # ---- files -------------------------------------------------------------------

    # False for a segment found on disk and trusted at load, until its index files are
    # checked on their first load (see _check_indexes). A segment this process made
    # or recovered has indexes it built itself.
    _indexes_checked = True

    @property
    def file(self) -> io.FileIO:
        """The `.log` file, opened on first use; an inactive segment's stays open until
        the open-files cache evicts it (regions hold their own reference). Callers
        that keep using the fd keep a reference to this object meanwhile."""
        file = self._file
        if file is None:
            # O_APPEND: every write lands at the end, whatever reads did to the offset.
            # Only the active segment may create its file; others must exist.
            opener = None if self.active else _open_existing
            file = self._file = io.FileIO(self.log_path, "a+", opener=opener)
        if not self.active:
            open_segments.used(self)
        return file

    def release_file(self) -> None:
        """Close an inactive segment's `.log` until its next read (at load: what
        recovery opened). A region of it still in use keeps its own reference."""
        if self._file is not None and not self.active:
            _let_go(self._file)
            self._file = None
            if self._offset_index is None and self._time_index is None:
                open_segments.forget(self)

    def evict(self) -> None:
        """The open-files cache lets go of this inactive segment's `.log` and loaded
        indexes: they are reopened and reloaded on the next use. Entries not yet in
        the index files are written first (an inactive segment normally has none)."""
        if self.active:
            return
        self._write_indexes()
        self._offset_index = None
        self._time_index = None
        file, self._file = self._file, None
        if file is not None:
            _let_go(file)

    # ---- indexes ---------------------------------------------------------------

    @property
    def offset_index(self) -> OffsetIndex:
        """Loaded from its file on first use (and after an eviction)."""
        index = self._offset_index
        if index is None:
            index = self._offset_index = OffsetIndex(
                self.index_path, self.base_offset, self.max_index_bytes
            )
            if not self._indexes_checked:
                self._check_indexes()
                index = self.offset_index
            elif not self.active:
                open_segments.used(self, self._index_bytes())
        elif not self.active:
            open_segments.used(self)
        return index

    @property
    def time_index(self) -> TimeIndex:
        """Loaded from its file on first use (and after an eviction)."""
        index = self._time_index
        if index is None:
            index = self._time_index = TimeIndex(
                self.time_index_path, self.base_offset, self.max_index_bytes
            )
            if not self._indexes_checked:
                self._check_indexes()
                index = self.time_index
            elif not self.active:
                open_segments.used(self, self._index_bytes())
        elif not self.active:
            open_segments.used(self)
        return index

    def _index_bytes(self) -> int:
        return (self._offset_index.size_bytes if self._offset_index is not None else 0) + (
            self._time_index.size_bytes if self._time_index is not None else 0
        )

    def check_indexes_on_load(self) -> None:
        """For a segment found on disk and trusted as is: its index files are checked
        when first loaded (or their last entry first read), not now."""
        self._indexes_checked = False

    def _check_indexes(self) -> None:
        """First load of this segment's indexes from disk in this process: rebuilt
        from the log if missing, empty or plainly wrong (what start-up used to check
        for every segment; now each pays it when first read). A rebuilt inactive
        segment is synced at once, being below the recovery point."""
        self._indexes_checked = True
        if self.indexes_need_rebuild():
            self.rebuild_indexes()
            if not self.active:
                self.flush()

    def clear_indexes(self) -> tuple[OffsetIndex, TimeIndex]:
        """Empty indexes, the old files removed unread (a new segment, or a rebuild:
        until rewritten by a seal or flush the segment has no index, so a crash
        meanwhile rebuilds it again)."""
        offset_index = OffsetIndex(
            self.index_path, self.base_offset, self.max_index_bytes, fresh=True
        )
        time_index = TimeIndex(
            self.time_index_path, self.base_offset, self.max_index_bytes, fresh=True
        )
        self._offset_index, self._time_index = offset_index, time_index
        return offset_index, time_index

    def _write_indexes(self) -> None:
        """Write the index entries not yet in the files (no fsync)."""
        if self._offset_index is not None and self._offset_index.write():
            self._unsynced = True
        if self._time_index is not None and self._time_index.write():
            self._unsynced = True

    def _drop_indexes(self) -> None:
        """Forget the loaded indexes; entries not yet written are lost (as in a crash).

        A segment that keeps its `.log` open (one just rolled, or rebuilt) goes on
        counting in the open-files cache, which thereby learns of every segment that
        turns inactive; one whose file is closed or let go next is evicted harmlessly."""
        self._offset_index = None
        self._time_index = None
        if self._file is not None and not self._file.closed:
            open_segments.used(self, 0)
        else:
            open_segments.forget(self)

    def indexes_need_rebuild(self) -> bool:
        """A trusted segment's indexes are rebuilt if missing, empty or plainly wrong.

        Reads the offset index's last two entries only, and the time index's size."""
        if self.size == 0:
            return False
        try:
            if os.stat(self.time_index_path).st_size < TimeIndex.entry.size:
                return True
        except FileNotFoundError:
            return True
        if self._offset_index is not None:
            return not self._offset_index.is_sane(self.size)
        tail = OffsetIndex.read_tail(self.index_path, 2)
        if tail is None:
            # No offset entry: none is missing if the segment is at most
            # index.interval.bytes (its first entry would start past that).
            return self.size > self.index_interval_bytes
        return not OffsetIndex.entries_are_sane(tail, self.size)

    @property
    def indexes_full(self) -> bool:
        return self.offset_index.is_full or self.time_index.is_full

    # ---- timestamps --------------------------------------------------------------

    def _load_max_timestamp(self) -> None:
        if self._time_index is not None or self.active:
            timestamp, offset = self.time_index.last_entry
        else:
            # An idle segment's is its time index's last entry: read that one only
            # (retention asks every segment), once the files are known to be sound.
            if not self._indexes_checked:
                self._check_indexes()
            tail = TimeIndex.read_tail(self.time_index_path, 1)
            timestamp, rel = tail[-1] if tail else (-1, 0)
            offset = self.base_offset + rel
        self._max_timestamp, self._offset_of_max_timestamp = timestamp, offset

    @property
    def max_timestamp(self) -> int:
        """Largest batch max timestamp in the segment, -1 if none."""
        if self._max_timestamp is None:
            self._load_max_timestamp()
        assert self._max_timestamp is not None
        return self._max_timestamp

    @property
    def offset_of_max_timestamp(self) -> int:
        """Base offset of the batch that holds the segment's max timestamp."""
        if self._max_timestamp is None:
            self._load_max_timestamp()
        return self._offset_of_max_timestamp

    @property
    def largest_timestamp(self) -> int:
        """What retention.ms measures: the max timestamp, else the file's mtime (Kafka)."""
        if self.max_timestamp >= 0:
            return self.max_timestamp
        file = self._file
        stat = os.fstat(file.fileno()) if file is not None else os.stat(self.log_path)
        return int(stat.st_mtime * 1000)

    @property
    def rolling_timestamp(self) -> int:
        """The first batch's max timestamp, -1 if the segment is empty or has none."""
        if self._rolling_timestamp is None:
            header = self.read_header(0)
            self._rolling_timestamp = header.max_timestamp if header is not None else -1
        return self._rolling_timestamp

    # ---- append ------------------------------------------------------------------

    def append(self, data: memoryview, headers: list[BatchHeader]) -> None:
        """Write `data` (the batches in `headers`, contiguous) in one write; index them.

        Header positions are relative to `data`'s buffer, starting at headers[0].position.
        """
        start = self.size
        _write_all(self.file.fileno(), data)
        self.size = start + len(data)
        self._unsynced = True
        shift = start - headers[0].position
        offset_index = self.offset_index
        time_index = self.time_index
        interval = self.index_interval_bytes
        since = self.bytes_since_index
        max_timestamp = self.max_timestamp
        offset_of_max = self._offset_of_max_timestamp
        recent = self._recent_batches
        for header in headers:
            recent[header.base_offset] = header.position + shift
            if header.max_timestamp > max_timestamp:
                max_timestamp = header.max_timestamp
                offset_of_max = header.base_offset
            # A full index just stops growing: it is an accelerator, and the log rolls soon.
            if since > interval and not offset_index.is_full:
                offset_index.append(header.base_offset, header.position + shift)
                if not time_index.is_full:  # its last slot is kept for the seal
                    time_index.maybe_append(max_timestamp, offset_of_max)
                since = 0
            since += header.size
        self.bytes_since_index = since
        while len(recent) > _RECENT_BATCHES:
            del recent[next(iter(recent))]  # oldest first: dicts keep insertion order
        self._max_timestamp = max_timestamp
        self._offset_of_max_timestamp = offset_of_max
        if start == 0:
            self._rolling_timestamp = headers[0].max_timestamp
        self.next_offset = headers[-1].next_offset
        # Produce checked these batches' CRCs (validate_batches): no read re-checks them.
        self._mark_verified(start, self.size)

    # ---- reads -------------------------------------------------------------------

    def read_header(self, position: int) -> BatchHeader | None:
        if position + BATCH_HEADER_SIZE > self.size:
            return None
        file = self.file  # held while its fd is used (an eviction may drop the segment's)
        buf = os.pread(file.fileno(), BATCH_HEADER_SIZE, position)
        if len(buf) < BATCH_HEADER_SIZE:
            return None
        header = parse_batch_header(buf)
        header.position = position
        return header

    def iter_headers(
        self, start: int = 0, end: int | None = None, *, strict: bool = False
    ) -> Iterator[BatchHeader]:
        """Headers of the whole batches in [start, end), positions relative to this file.

        Lenient (load, index rebuilds): stops at the first header that cannot be a
        batch. `strict` (the fetch path): raises CorruptRecordError for it instead,
        unless it is a batch that merely runs past `end` (a read limit)."""
        size = self.size
        end = size if end is None else min(end, size)
        # The file object is held across yields: its fd stays valid even if the cache
        # evicts this segment while the caller reads others in between.
        file = self.file
        fd = file.fileno()
        position = start
        buf = b""
        buf_start = start
        min_offset = self.base_offset
        while position + BATCH_HEADER_SIZE <= end:
            rel = position - buf_start
            if rel + BATCH_HEADER_SIZE > len(buf):
                buf = os.pread(fd, min(_SCAN_BLOCK, end - position), position)
                buf_start, rel = position, 0
                if len(buf) < BATCH_HEADER_SIZE:
                    if strict:
                        raise CorruptRecordError(
                            f"file ends before the {size} bytes it held", path=self.log_path,
                            position=position,
                        )
                    return
            header = parse_batch_header(buf, rel)
            header.position = position
            if strict:
                problem = header_problem(header, size, min_offset, self.base_offset)
                if problem is not None:
                    raise CorruptRecordError(problem, path=self.log_path, position=position)
                if position + header.size > end:
                    return  # a read limit, not damage
                min_offset = header.next_offset
            elif header.batch_length < _MIN_BATCH_LENGTH or position + header.size > end:
                return
            yield header
            position += header.size

    def find_batch(self, offset: int, *, strict: bool = False) -> BatchHeader | None:
        """The first batch whose last offset is >= `offset`: index lookup, then a header scan."""
        position = self._recent_batches.get(offset)
        if position is None:
            _, position = self.offset_index.lookup(offset)
        for header in self.iter_headers(position, strict=strict):
            if header.last_offset >= offset:
                return header
        return None

    def last_boundary_within(self, start: int, limit: int) -> int:
        """The largest batch end <= `limit`, counting from the batch at `start` (>= start)."""
        _, position = self.offset_index.lookup_position(limit)
        boundary = max(position, start)
        for header in self.iter_headers(boundary, limit, strict=True):
            boundary = header.position + header.size
        return boundary

    # ---- read checks -----------------------------------------------------------------

    def _mark_verified(self, start: int, end: int) -> None:
        if start >= end:
            return
        spans = self._verified
        if spans and spans[-1][0] <= start <= spans[-1][1]:
            # The usual case (appends, sequential reads): the last span grows.
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            return
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if b < start or a > end:
                merged.append((a, b))
            else:
                start, end = min(a, start), max(b, end)
        merged.append((start, end))
        merged.sort()
        self._verified = merged

    def _clip_verified(self, size: int) -> None:
        self._verified = [(a, min(b, size)) for a, b in self._verified if a < size]

    def verified_length(self, position: int, size: int) -> int:
        """How much of the whole batches in [position, position + size) are sound:
        `size` if all are, else the length up to the first corrupt batch.

        A batch this process wrote or already checked costs nothing; any other is
        read and CRC-checked once, and its span remembered, so a fetch of old data
        (flushed segments that start-up did not rescan) pays one pread and CRC per
        batch the first time only, and sendfile serves it from then on."""
        end = position + size
        file = self.file  # held while its fd is used
        fd = file.fileno()
        actual = os.fstat(fd).st_size
        if actual < end:
            # Cut on disk since it was checked (one fstat a read: sendfile must not come
            # up short mid-response): what reaches past the cut is checked again.
            self._verified = [(a, b) for a, b in self._verified if b <= actual]
        spans = self._verified
        i = max(0, bisect_right(spans, (position, end)) - 1)
        cursor = position
        while cursor < end:
            # Skip the verified span holding the cursor, if any.
            while i < len(spans) and spans[i][1] <= cursor:
                i += 1
            if i < len(spans) and spans[i][0] <= cursor:
                cursor = spans[i][1]
                continue
            stop = min(end, spans[i][0]) if i < len(spans) else end
            data = os.pread(fd, stop - cursor, cursor)
            good = _sound_prefix(data, cursor, self.base_offset)
            self._mark_verified(cursor, cursor + good)
            if good < stop - cursor:
                return cursor + good - position
            cursor = stop
        return size

    def region(self, position: int, size: int) -> FileRegion:
        return FileRegion(self.file, position, size)

    # ---- recovery and index rebuilding -------------------------------------------

    def _start_rebuild(self) -> tuple[OffsetIndex, TimeIndex]:
        offset_index, time_index = self.clear_indexes()
        self.bytes_since_index = 0
        self._max_timestamp = -1
        self._offset_of_max_timestamp = self.base_offset
        self._rolling_timestamp = None
        self.next_offset = None
        return offset_index, time_index

    def _index_batch(
        self, header: BatchHeader, offset_index: OffsetIndex, time_index: TimeIndex
    ) -> None:
        assert self._max_timestamp is not None
        if header.max_timestamp > self._max_timestamp:
            self._max_timestamp = header.max_timestamp
            self._offset_of_max_timestamp = header.base_offset
        if self.bytes_since_index > self.index_interval_bytes and not offset_index.is_full:
            offset_index.append(header.base_offset, header.position)
            if not time_index.is_full:  # its last slot is kept for the seal
                time_index.maybe_append(self._max_timestamp, self._offset_of_max_timestamp)
            self.bytes_since_index = 0
        self.bytes_since_index += header.size
        if header.position == 0:
            self._rolling_timestamp = header.max_timestamp
        self.next_offset = header.next_offset

    def _finish_rebuild(self) -> None:
        if self._rolling_timestamp is None:
            self._rolling_timestamp = -1
        if not self.active:
            # An inactive segment gets its final time entry, and its index files now;
            # they are read again when needed (a start-up rebuild loads nothing).
            self._seal_indexes()
            self._drop_indexes()

    def rebuild_indexes(self) -> None:
        """Rebuild both indexes from the batch headers (the data is trusted)."""
        offset_index, time_index = self._start_rebuild()
        for header in self.iter_headers():
            self._index_batch(header, offset_index, time_index)
        self._finish_rebuild()

    def recover(self) -> Truncation:
        """Validate every batch (length, magic 2, CRC-32C, rising offsets), cut the
        file at the first bad one, rebuild the indexes. Returns what was cut."""
        offset_index, time_index = self._start_rebuild()
        fd = self.file.fileno()
        size = self.size
        buf = b""
        buf_start = 0

        def view(position: int, length: int) -> memoryview:
            nonlocal buf, buf_start
            if position < buf_start or position + length > buf_start + len(buf):
                buf = os.pread(fd, max(length, _RECOVERY_BLOCK), position)
                buf_start = position
            rel = position - buf_start
            return memoryview(buf)[rel : rel + length]

        position = 0
        next_offset = self.base_offset
        while position < size:
            if size - position < BATCH_HEADER_SIZE:
                break
            head = view(position, BATCH_HEADER_SIZE)
            if len(head) < BATCH_HEADER_SIZE:
                break
            header = parse_batch_header(head)
            header.position = position
            if header_problem(header, size, next_offset, self.base_offset) is not None:
                break
            batch = view(position, header.size)
            if len(batch) < header.size or records.crc32c(batch[ATTRIBUTES_OFFSET:]) != header.crc:
                break
            self._index_batch(header, offset_index, time_index)
            next_offset = header.next_offset
            position += header.size
        cut = Truncation(position, size - position, 0, next_offset, -1)
        if cut:
            cut = self._describe_dropped(position, next_offset)
            os.ftruncate(fd, position)
            self.size = position
            self._unsynced = True
        self._verified = [(0, position)] if position else []
        self._finish_rebuild()
        return cut

    def _describe_dropped(self, position: int, first_offset: int) -> Truncation:
        """For the recovery warning: the batches (and their offsets) in the bytes from
        `position` to the end, as far as their headers still parse; a torn or
        unreadable batch counts as one, and ends the scan."""
        size = self.size
        batches, last_offset, at = 0, -1, position
        start_offset = first_offset
        fd = self.file.fileno()
        while at < size:
            batches += 1
            head = os.pread(fd, BATCH_HEADER_SIZE, at)
            if len(head) < BATCH_HEADER_SIZE:
                break
            header = parse_batch_header(head)
            header.position = at
            # A torn batch's header still says which offsets it held.
            if header_problem(header, 1 << 62, first_offset, self.base_offset) is not None:
                break
            last_offset = header.last_offset
            first_offset = header.next_offset
            at += header.size
        return Truncation(position, size - position, batches, start_offset, last_offset)

    def tail_problem(self, expected_next_offset: int) -> str | None:
        """For a trusted active segment (clean shutdown): why its end cannot be
        appended after, or None. Cheap: a header scan from the last offset index
        entry, then the CRC of the last batch only. The batches must end exactly at
        the file's end, the last one be whole with a valid CRC, and the next offset
        be the log end offset that the clean shutdown recorded."""
        size = self.size
        if size == 0:
            if expected_next_offset > self.base_offset:
                return f"empty, but the log ended at offset {expected_next_offset}"
            return None
        _, start = self.offset_index.last_entry
        if start >= size:
            return f"the offset index points at position {start}, past the end ({size} bytes)"
        last: BatchHeader | None = None
        end = start
        for header in self.iter_headers(start):
            last, end = header, header.position + header.size
        if last is None:
            return f"no whole batch at position {start}"
        if end != size:
            return f"{size - end} bytes after the last whole batch (offsets to {last.last_offset})"
        data = os.pread(self.file.fileno(), last.size, last.position)
        problem = header_problem(last, size, self.base_offset, self.base_offset)
        if problem is None and (
            len(data) < last.size or records.crc32c(memoryview(data)[ATTRIBUTES_OFFSET:]) != last.crc
        ):
            problem = "CRC-32C mismatch"
        if problem is not None:
            return f"last batch (offsets {last.base_offset} to {last.last_offset}): {problem}"
        if last.next_offset != expected_next_offset:
            return (
                f"ends at offset {last.next_offset}, not at the log end offset "
                f"{expected_next_offset} recorded at shutdown"
            )
        self._mark_verified(last.position, size)
        return None

    def load_tail_state(self) -> None:
        """For a trusted segment becoming active: find its next offset, max timestamp
        and bytes since the last index entry by scanning headers from the last
        time index entry's batch (everything before it is summed up by that entry)."""
        offset_index = self.offset_index
        timestamp, offset_of_max = self.time_index.last_entry
        _, start = offset_index.lookup(offset_of_max)
        self._max_timestamp, self._offset_of_max_timestamp = timestamp, offset_of_max
        self.next_offset = None
        for header in self.iter_headers(start):
            if header.max_timestamp > self._max_timestamp:
                self._max_timestamp = header.max_timestamp
                self._offset_of_max_timestamp = header.base_offset
            self.next_offset = header.next_offset
        last_indexed = offset_index.last_entry[1] if offset_index.entries else 0
        self.bytes_since_index = self.size - last_indexed

    # ---- truncation ----------------------------------------------------------------

    def truncate_to(self, offset: int) -> int:
        """Drop the batch holding `offset` and everything after. Returns bytes removed."""
        header = self.find_batch(offset)
        was_active = self.active
        self.make_active()
        if header is None:
            if not was_active:
                self.load_tail_state()
            return 0
        self.offset_index.truncate_to(header.base_offset)
        self.time_index.truncate_to(header.base_offset)
        removed = self.size - header.position
        os.ftruncate(self.file.fileno(), header.position)
        self._recent_batches.clear()
        self._unsynced = True
        self.size = header.position
        self._clip_verified(self.size)
        if header.position == 0:
            self._rolling_timestamp = None
        self.load_tail_state()
        return removed

    # ---- state changes --------------------------------------------------------------

    def _seal_indexes(self) -> None:
        """Add the final time index entry (the segment's max timestamp); write the files."""
        if self._max_timestamp is not None and self._max_timestamp >= 0:
            self.time_index.maybe_append(self._max_timestamp, self._offset_of_max_timestamp)
        self._write_indexes()

    def make_inactive(self) -> None:
        """On roll: seal the indexes; they are read again when next needed (memory
        holds the indexes of the segments being read, not of every one rolled)."""
        if not self.active:
            return
        self._seal_indexes()
        self._drop_indexes()
        self.active = False

    def make_active(self) -> None:
        """For truncation: the segment takes appends again."""
        if self.active:
            return
        self.active = True

    def flush(self) -> None:
        """Write pending index entries; fsync the log and both index files (which a
        roll wrote without syncing). Nothing to do if nothing changed since the last."""
        self._write_indexes()
        if not self._unsynced:
            return
        if self._file is not None:
            os.fsync(self._file.fileno())
        else:
            fsync_path(self.log_path)  # not open (an inactive segment not read since load)
        fsync_path(self.index_path)
        fsync_path(self.time_index_path)
        self._unsynced = False

    def open_for_sync(self) -> list[int]:
        """For a flush off the event loop (an inactive segment, whose files no longer
        change): its index entries written, and fds of its files to fsync and close
        in another thread. Own fds, so a close or delete meanwhile is harmless."""
        self._write_indexes()
        if not self._unsynced:
            return []
        fds = []
        if self._file is not None and not self._file.closed:
            fds.append(os.dup(self._file.fileno()))
        for path in (self.log_path, self.index_path, self.time_index_path):
            if path is self.log_path and fds:
                continue
            try:
                fds.append(os.open(path, os.O_RDONLY))
            except FileNotFoundError:
                pass
        return fds

    def mark_synced(self) -> None:
        """A flush off the event loop of this (unchanged) segment's files completed."""
        self._unsynced = False

    def close(self, *, sync: bool = True) -> None:
        """Clean close: the final time entry (active segment) and the index files
        written, as after a roll; then fsynced, unless `sync` is False (the log knows
        the segment was flushed)."""
        file = self._file
        if file is not None and file.closed:
            return  # closed already
        if self.active:
            self._seal_indexes()
        if sync:
            self.flush()
        else:
            self._write_indexes()
        self._drop_indexes()
        if file is not None:
            file.close()

    def rename_to_deleted(self) -> None:
        """First step of deletion (Kafka's async delete): files renamed `.deleted`, the
        log file kept open for reads already handed out."""
        self._drop_indexes()
        for attr in ("log_path", "index_path", "time_index_path"):
            path: Path = getattr(self, attr)
            target = path.with_name(path.name + DELETED_SUFFIX)
            try:
                path.rename(target)
            except FileNotFoundError:
                pass
            setattr(self, attr, target)
        self.deleted = True

    def delete_files(self) -> None:
        """Final step of deletion: unlink. The `.log` file is let go, not closed: a file
        region still being sent (a fetch answer when its topic is deleted) holds it, and
        its fd closes when the last region is dropped; closing it here would cut that
        answer short, or let sendfile read whatever file reuses the fd number."""
        self._drop_indexes()
        self._file = None
        for path in (self.log_path, self.index_path, self.time_index_path):
            path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"LogSegment(base_offset={self.base_offset}, size={self.size}, active={self.active})"


def _sound_prefix(data: bytes, position: int, base_offset: int) -> int:
    """Length of the leading whole batches of `data` (read from `position`) whose
    headers are sane and whose CRC-32C matches."""
    view = memoryview(data)
    at, end = 0, len(data)
    min_offset = base_offset
    while at + BATCH_HEADER_SIZE <= end:
        header = parse_batch_header(view, at)
        header.position = at
        if header_problem(header, end, min_offset, base_offset) is not None:
            break
        if records.crc32c(view[at + ATTRIBUTES_OFFSET : at + header.size]) != header.crc:
            break
        min_offset = header.next_offset
        at += header.size
    return at


def _let_go(file: io.FileIO) -> None:
    """Drop a segment's reference to its file: closed now if nothing else holds it,
    else by CPython when the last holder (a file region, a header scan) lets go."""
    # References: the caller's, this argument, getrefcount's own.
    if sys.getrefcount(file) <= 3:
        file.close()


def _open_existing(path: str, flags: int) -> int:
    """io.FileIO opener that never creates the file."""
    return os.open(path, flags & ~os.O_CREAT)


def _write_all(fd: int, data: memoryview) -> None:
    """One write() in practice; loops only on a short write (signal, near-full disk)."""
    written = os.write(fd, data)
    while written < len(data):
        written += os.write(fd, data[written:])
