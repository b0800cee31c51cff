"""Sparse per-segment indexes: offset -> file position, timestamp -> offset.

As Kafka's OffsetIndex and TimeIndex: fixed-size big-endian entries in a file
named after the segment, looked up by binary search.

* `.index`: relative offset int32 + file position int32 (8 bytes). An entry says
  "the batch whose base offset is base+rel starts at this position".
* `.timeindex`: timestamp int64 + relative offset int32 (12 bytes). An entry
  (T, rel) says "the largest timestamp up to the batch at base+rel is T, first
  reached in that batch"; timestamps strictly increase.

Unlike Kafka, an index is not memory-mapped: its entries live in a `bytearray`
(the file's format, 8 or 12 bytes an entry), read whole from the file on first
use, and new entries are written to the file (open, pwrite, close) only when
the segment is flushed, rolled or closed. So an open index holds no file
descriptor and no mapping: a broker with tens of thousands of partitions is
bounded by neither the fd limit nor vm.max_map_count.

A file holds exactly its entries (nothing is preallocated); a torn last entry
(a crash mid-write) is dropped when loading, the size being rounded down to
whole entries. `segment.index.bytes` still bounds the number of entries: a full
index makes the log roll, as in Kafka.

Entries not yet written are lost in a crash, and so may be the tail of an
unsynced file: that is safe because an index is trusted only below the
recovery point, i.e. for segments whose flush wrote and fsynced it; the segment
holding the recovery point and all after it are rebuilt from the log (see
PartitionLog.open). Invariant: the file's whole entries are the first
`written` entries in memory; dropping entries below that truncates the file.
"""

from __future__ import annotations

import os
import struct
from bisect import bisect_right
from collections.abc import Callable
from pathlib import Path

_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")


def _read_file(path: Path) -> bytes:
    try:
        with open(path, "rb", buffering=0) as f:
            return f.readall()
    except FileNotFoundError:
        return b""


class _Index:
    """Shared plumbing: fixed-size entries in memory, the file written on demand."""

    entry: struct.Struct

    def __init__(
        self, path: Path, base_offset: int, max_index_size: int, *, fresh: bool = False
    ) -> None:
        """Load the file's entries; or, if `fresh`, start empty, the file's entries
        unread and replaced by the first write() (see `_replaces_file`)."""
        self.path = path
        self.base_offset = base_offset
        size = self.entry.size
        # A fresh index's file may still hold an earlier index's entries. They are not
        # removed now (a recovery of thousands of partitions would pay an unlink for
        # each), but by the first write(), which truncates the file or, with no entry
        # to write, removes it. Until then the file is never trusted: a fresh index
        # belongs to a segment being rebuilt (written at once if inactive) or to the
        # active segment, which a crash rescans.
        self._replaces_file = fresh
        data = b"" if fresh else _read_file(path)
        # A torn last entry (crash mid-write) is dropped.
        self._data = bytearray(data[: len(data) - len(data) % size])
        self.entries = len(self._data) // size
        # Entries in the file (a prefix of ours); the rest are written by write().
        self.written = self.entries
        self.max_entries = max(1, max_index_size // size)

    @classmethod
    def read_tail(cls, path: Path, count: int) -> list[tuple[int, int]] | None:
        """The last `count` (or fewer) whole entries of an index file, without loading
        it; None if the file is missing or holds no entry."""
        size = cls.entry.size
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            length = os.fstat(fd).st_size
            length -= length % size
            start = max(0, length - count * size)
            data = os.pread(fd, length - start, start) if length else b""
        finally:
            os.close(fd)
        if len(data) < size:
            return None
        return [cls.entry.unpack_from(data, i) for i in range(0, len(data) - size + 1, size)]

    @property
    def is_full(self) -> bool:
        return self.entries >= self.max_entries

    @property
    def size_bytes(self) -> int:
        return self.entries * self.entry.size

    def _unpack(self, i: int) -> tuple[int, int]:
        return self.entry.unpack_from(self._data, i * self.entry.size)

    def _key(self, field: int) -> Callable[[int], int]:
        """Bisect key: field `field` of entry j (the hot lookup)."""
        unpack_from, data, size = self.entry.unpack_from, self._data, self.entry.size
        return lambda j: unpack_from(data, j * size)[field]

    def _put(self, a: int, b: int) -> None:
        if self.entries >= self.max_entries:
            raise OSError(f"index {self.path} is full")
        self._data += self.entry.pack(a, b)
        self.entries += 1

    def write(self) -> bool:
        """Append the entries not yet in the file (no fsync: the segment's flush syncs).
        Returns whether anything was written."""
        flags = os.O_WRONLY | os.O_CREAT
        if self._replaces_file:
            self._replaces_file = False
            if not self.entries:
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    return False
                return True
            flags |= os.O_TRUNC
        elif self.written >= self.entries:
            return False
        size = self.entry.size
        fd = os.open(self.path, flags, 0o644)
        try:
            start = self.written * size
            data = bytes(self._data[start:])
            done = 0
            while done < len(data):
                done += os.pwrite(fd, data[done:], start + done)
        finally:
            os.close(fd)
        self.written = self.entries
        return True

    def _truncate_entries(self, keep: int) -> None:
        """Drop entries from `keep` on, in memory and in the file."""
        if keep >= self.entries:
            return
        del self._data[keep * self.entry.size :]
        self.entries = keep
        if keep < self.written:
            self.written = keep
            try:
                os.truncate(self.path, keep * self.entry.size)
            except FileNotFoundError:
                pass


def fsync_path(path: Path) -> None:
    """fsync a file by name, if it exists."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class OffsetIndex(_Index):
    """Offset -> position of the batch that starts there (sparse)."""

    entry = _OFFSET_ENTRY

    @property
    def last_entry(self) -> tuple[int, int]:
        """(offset, position) of the last entry, or (base offset, 0)."""
        if self.entries == 0:
            return self.base_offset, 0
        rel, position = self._unpack(self.entries - 1)
        return self.base_offset + rel, position

    def append(self, offset: int, position: int) -> None:
        self._put(offset - self.base_offset, position)

    def lookup(self, offset: int) -> tuple[int, int]:
        """(offset, position) of the largest entry with offset <= `offset`, or (base, 0)."""
        rel = offset - self.base_offset
        i = bisect_right(range(self.entries), rel, key=self._key(0)) - 1
        if i < 0:
            return self.base_offset, 0
        found_rel, position = self._unpack(i)
        return self.base_offset + found_rel, position

    def lookup_position(self, position: int) -> tuple[int, int]:
        """(offset, position) of the largest entry with position <= `position`, or (base, 0)."""
        i = bisect_right(range(self.entries), position, key=self._key(1)) - 1
        if i < 0:
            return self.base_offset, 0
        found_rel, found_position = self._unpack(i)
        return self.base_offset + found_rel, found_position

    def truncate_to(self, offset: int) -> None:
        """Drop entries for offsets >= `offset`."""
        rel = offset - self.base_offset
        keep = bisect_right(range(self.entries), rel - 1, key=self._key(0))
        self._truncate_entries(keep)

    @staticmethod
    def entries_are_sane(entries: list[tuple[int, int]], log_size: int) -> bool:
        """Cheap check of a trusted index's last (up to) two entries, (rel, position)
        each: the last inside the log, offsets and positions rising."""
        if not entries:
            return True
        rel, position = entries[-1]
        if not 0 < position < log_size or rel <= 0:
            return False
        if len(entries) > 1:
            prev_rel, prev_position = entries[-2]
            return prev_rel < rel and prev_position < position
        return True

    def is_sane(self, log_size: int) -> bool:
        return self.entries_are_sane(
            [self._unpack(i) for i in range(max(0, self.entries - 2), self.entries)], log_size
        )


class TimeIndex(_Index):
    """Max timestamp so far -> offset of the batch where it was first reached."""

    entry = _TIME_ENTRY

    @property
    def is_full(self) -> bool:
        # One slot stays free for the final entry written when the segment is rolled.
        return self.entries + 1 >= self.max_entries

    @property
    def last_entry(self) -> tuple[int, int]:
        """(timestamp, offset) of the last entry, or (-1, base offset)."""
        if self.entries == 0:
            return -1, self.base_offset
        timestamp, rel = self._unpack(self.entries - 1)
        return timestamp, self.base_offset + rel

    def maybe_append(self, timestamp: int, offset: int) -> None:
        """Add (timestamp, offset) if the timestamp grows past the last entry's."""
        if timestamp <= self.last_entry[0] or self.entries >= self.max_entries:
            return
        self._put(timestamp, offset - self.base_offset)

    def lookup(self, timestamp: int) -> tuple[int, int]:
        """(timestamp, offset) of the largest entry with timestamp <= `timestamp`, or (-1, base)."""
        i = bisect_right(range(self.entries), timestamp, key=self._key(0)) - 1
        if i < 0:
            return -1, self.base_offset
        found, rel = self._unpack(i)
        return found, self.base_offset + rel

    def truncate_to(self, offset: int) -> None:
        """Drop entries for offsets >= `offset` (entry offsets rise with timestamps)."""
        rel = offset - self.base_offset
        keep = bisect_right(range(self.entries), rel - 1, key=self._key(1))
        self._truncate_entries(keep)
