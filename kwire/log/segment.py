"""One log segment: a `.log` file of record batches plus its two sparse indexes.

As Kafka's LogSegment. The `.log` file holds magic v2 batches exactly as on the
wire. Everything here reads batch headers only (61 bytes), except recovery,
which must read whole batches to check their CRC-32C.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from crc32c import crc32c

from kwire.log.index import OffsetIndex, TimeIndex, fsync_path
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
# Recovery reads whole batches (for the CRC) in large sequential chunks.
_RECOVERY_BLOCK = 1 << 20
_MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD


def segment_file_name(base_offset: int, suffix: str) -> str:
    """Kafka's naming: the base offset, 20 digits zero-padded."""
    return f"{base_offset:020d}{suffix}"


@dataclass(frozen=True, slots=True)
class FileRegion:
    """A byte range of a segment file, for zero-copy sends (os.sendfile(file.fileno(), ...)).

    The file stays open until the segment is finally deleted, which retention
    delays by file.delete.delay.ms, so a region outlives its segment's deletion.
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
    """A segment file with lazily opened indexes.

    The active (last) segment has writable, preallocated indexes; the others are
    opened read-only on first use, so start-up and idle partitions cost no mmaps.
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
        # O_APPEND: every write lands at the end, whatever reads did to the offset.
        self.file = io.FileIO(self.log_path, "a+")
        self.size = os.fstat(self.file.fileno()).st_size
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

    # ---- indexes ---------------------------------------------------------------

    @property
    def offset_index(self) -> OffsetIndex:
        if self._offset_index is None:
            self._offset_index = OffsetIndex(
                self.index_path, self.base_offset, self.max_index_bytes, writable=self.active
            )
        return self._offset_index

    @property
    def time_index(self) -> TimeIndex:
        if self._time_index is None:
            self._time_index = TimeIndex(
                self.time_index_path, self.base_offset, self.max_index_bytes, writable=self.active
            )
        return self._time_index

    def _close_indexes(self, *, trim: bool) -> None:
        if self._offset_index is not None:
            self._offset_index.close(trim=trim)
            self._offset_index = None
        if self._time_index is not None:
            self._time_index.close(trim=trim)
            self._time_index = None

    def indexes_need_rebuild(self) -> bool:
        """A trusted segment's indexes are rebuilt if missing, empty or plainly wrong."""
        if self.size == 0:
            return False
        for path in (self.index_path, self.time_index_path):
            if not path.exists() or path.stat().st_size == 0:
                return True
        sane = self.offset_index.is_sane(self.size)
        if not self.active:
            self._close_indexes(trim=False)  # no mmap held for idle segments
        return not sane

    @property
    def indexes_full(self) -> bool:
        return self.offset_index.is_full or self.time_index.is_full

    # ---- timestamps --------------------------------------------------------------

    def _load_max_timestamp(self) -> None:
        was_open = self._time_index is not None
        timestamp, offset = self.time_index.last_entry
        self._max_timestamp, self._offset_of_max_timestamp = timestamp, offset
        if not was_open and not self.active:
            # Cached now; an idle segment need not keep the mmap (retention asks often).
            self._time_index.close(trim=False)
            self._time_index = None

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
        return int(os.stat(self.file.fileno()).st_mtime * 1000)

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
        shift = start - headers[0].position
        offset_index = self.offset_index
        time_index = self.time_index
        interval = self.index_interval_bytes
        since = self.bytes_since_index
        max_timestamp = self.max_timestamp
        offset_of_max = self._offset_of_max_timestamp
        for header in headers:
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
        self._max_timestamp = max_timestamp
        self._offset_of_max_timestamp = offset_of_max
        if start == 0:
            self._rolling_timestamp = headers[0].max_timestamp
        self.next_offset = headers[-1].next_offset

    # ---- reads -------------------------------------------------------------------

    def read_header(self, position: int) -> BatchHeader | None:
        if position + BATCH_HEADER_SIZE > self.size:
            return None
        buf = os.pread(self.file.fileno(), BATCH_HEADER_SIZE, position)
        if len(buf) < BATCH_HEADER_SIZE:
            return None
        header = parse_batch_header(buf)
        header.position = position
        return header

    def iter_headers(self, start: int = 0, end: int | None = None) -> Iterator[BatchHeader]:
        """Headers of the whole batches in [start, end), positions relative to this file."""
        end = self.size if end is None else min(end, self.size)
        fd = self.file.fileno()
        position = start
        buf = b""
        buf_start = start
        while position + BATCH_HEADER_SIZE <= end:
            rel = position - buf_start
            if rel + BATCH_HEADER_SIZE > len(buf):
                buf = os.pread(fd, min(_SCAN_BLOCK, end - position), position)
                buf_start, rel = position, 0
                if len(buf) < BATCH_HEADER_SIZE:
                    return
            header = parse_batch_header(buf, rel)
            header.position = position
            if header.batch_length < _MIN_BATCH_LENGTH or position + header.size > end:
                return
            yield header
            position += header.size

    def find_batch(self, offset: int) -> BatchHeader | None:
        """The first batch whose last offset is >= `offset`: index lookup, then a header scan."""
        _, position = self.offset_index.lookup(offset)
        for header in self.iter_headers(position):
            if header.last_offset >= offset:
                return header
        return None

    def last_boundary_within(self, start: int, limit: int) -> int:
        """The largest batch end <= `limit`, counting from the batch at `start` (>= start)."""
        _, position = self.offset_index.lookup_position(limit)
        boundary = max(position, start)
        for header in self.iter_headers(boundary, limit):
            boundary = header.position + header.size
        return boundary

    def region(self, position: int, size: int) -> FileRegion:
        return FileRegion(self.file, position, size)

    # ---- recovery and index rebuilding -------------------------------------------

    def _start_rebuild(self) -> tuple[OffsetIndex, TimeIndex]:
        self._close_indexes(trim=False)
        offset_index = OffsetIndex(
            self.index_path, self.base_offset, self.max_index_bytes, writable=True
        )
        time_index = TimeIndex(
            self.time_index_path, self.base_offset, self.max_index_bytes, writable=True
        )
        offset_index.reset()
        time_index.reset()
        self._offset_index, self._time_index = offset_index, time_index
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
            # An inactive segment gets its final time entry and trimmed read-only indexes.
            self._seal_indexes()

    def rebuild_indexes(self) -> None:
        """Rebuild both indexes from the batch headers (the data is trusted)."""
        offset_index, time_index = self._start_rebuild()
        for header in self.iter_headers():
            self._index_batch(header, offset_index, time_index)
        self._finish_rebuild()

    def recover(self) -> int:
        """Validate every batch (length, magic 2, CRC-32C, rising offsets), cut the
        file at the first bad one, rebuild the indexes. Returns the bytes cut."""
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
            if (
                header.magic != 2
                or header.batch_length < _MIN_BATCH_LENGTH
                or position + header.size > size
                or header.base_offset < next_offset
                or header.last_offset_delta < 0
                or header.last_offset - self.base_offset > INT32_MAX
            ):
                break
            batch = view(position, header.size)
            if len(batch) < header.size or crc32c(batch[ATTRIBUTES_OFFSET:]) != header.crc:
                break
            self._index_batch(header, offset_index, time_index)
            next_offset = header.next_offset
            position += header.size
        cut = size - position
        if cut:
            os.ftruncate(fd, position)
            self.size = position
        self._finish_rebuild()
        return cut

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
        self.size = header.position
        if header.position == 0:
            self._rolling_timestamp = None
        self.load_tail_state()
        return removed

    # ---- state changes --------------------------------------------------------------

    def _seal_indexes(self) -> None:
        """Write the final time index entry (the segment's max timestamp) and trim."""
        if self._max_timestamp is not None and self._max_timestamp >= 0:
            self.time_index.maybe_append(self._max_timestamp, self._offset_of_max_timestamp)
        self._close_indexes(trim=True)

    def make_inactive(self) -> None:
        """On roll: seal the indexes; they reopen read-only when next needed."""
        if not self.active:
            return
        self._seal_indexes()
        self.active = False

    def make_active(self) -> None:
        """For truncation: reopen the indexes writable (preallocated again)."""
        if self.active:
            return
        self._close_indexes(trim=False)
        self.active = True

    def flush(self) -> None:
        """fsync the log and both index files (open or not: a roll trims without syncing)."""
        os.fsync(self.file.fileno())
        fsync_path(self.index_path)
        fsync_path(self.time_index_path)

    def close(self) -> None:
        """Clean close: the final time entry and trimmed indexes, as after a roll, synced."""
        if self.file.closed:
            return
        if self.active:
            self._seal_indexes()
            self.flush()
        else:
            self._close_indexes(trim=False)
        self.file.close()

    def rename_to_deleted(self) -> None:
        """First step of deletion (Kafka's async delete): files renamed `.deleted`, the
        log file kept open for reads already handed out."""
        self._close_indexes(trim=False)
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
        """Final step of deletion: close and unlink."""
        self._close_indexes(trim=False)
        if not self.file.closed:
            self.file.close()
        for path in (self.log_path, self.index_path, self.time_index_path):
            path.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"LogSegment(base_offset={self.base_offset}, size={self.size}, active={self.active})"


def _write_all(fd: int, data: memoryview) -> None:
    """One write() in practice; loops only on a short write (signal, near-full disk)."""
    written = os.write(fd, data)
    while written < len(data):
        written += os.write(fd, data[written:])
