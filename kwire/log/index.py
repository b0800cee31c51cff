"""Sparse per-segment indexes: offset -> file position, timestamp -> offset.

As Kafka's OffsetIndex and TimeIndex: fixed-size big-endian entries in a file
named after the segment, memory-mapped, looked up by binary search.

* `.index`: relative offset int32 + file position int32 (8 bytes). An entry says
  "the batch whose base offset is base+rel starts at this position".
* `.timeindex`: timestamp int64 + relative offset int32 (12 bytes). An entry
  (T, rel) says "the largest timestamp up to the batch at base+rel is T, first
  reached in that batch"; timestamps strictly increase.

The active segment's index files are preallocated (sparse) to
`segment.index.bytes` and trimmed to their entries when the segment is rolled
or closed, so a trimmed file's entry count is its size. An untrimmed one (left
by a crash) is counted by finding the all-zero tail: no real offset entry is all
zeros (positions are > 0, the first batch of a segment is never indexed); only a
first time entry (0, 0) could be mistaken for fill, and would merely be dropped.
"""

from __future__ import annotations

import mmap
import os
import struct
from bisect import bisect_right
from collections.abc import Callable
from pathlib import Path

_OFFSET_ENTRY = struct.Struct(">ii")
_TIME_ENTRY = struct.Struct(">qi")


class _Index:
    """Shared plumbing: a file of fixed-size entries, mmapped, with a zero tail."""

    entry: struct.Struct

    def __init__(
        self, path: Path, base_offset: int, max_index_size: int, *, writable: bool
    ) -> None:
        self.path = path
        self.base_offset = base_offset
        self.writable = writable
        size = self.entry.size
        fd = os.open(path, os.O_RDWR | os.O_CREAT if writable else os.O_RDONLY, 0o644)
        try:
            length = os.fstat(fd).st_size
            stored = length - length % size
            # A trimmed file (clean roll or close) holds exactly its entries; a zero
            # last entry means preallocated fill, whose real end must be searched
            # (a lone entry may be a time entry (0, 0): entries after the first never are).
            trimmed = stored <= size or os.pread(fd, size, stored - size) != bytes(size)
            if writable:
                # Room for at least one entry; sparse, so the disk is not used yet.
                target = max(size, max_index_size - max_index_size % size)
                if length < target:
                    os.ftruncate(fd, target)
                    length = target
            self._mm: mmap.mmap | None = None
            if length >= size:
                prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
                self._mm = mmap.mmap(fd, length - length % size, mmap.MAP_SHARED, prot)
        finally:
            os.close(fd)
        self.max_entries = (len(self._mm) // size) if self._mm is not None else 0
        self.entries = stored // size if trimmed else self._count_entries(stored // size)

    def _count_entries(self, limit: int) -> int:
        mm = self._mm
        if mm is None:
            return 0
        size = self.entry.size
        zero = bytes(size)
        # Entries are a non-zero prefix followed by a zero fill: bisect the boundary,
        # from the second entry on (only the first could be all zeros).
        rest = bisect_right(
            range(1, limit), False, key=lambda i: mm[i * size : i * size + size] == zero
        )
        if rest:
            return 1 + rest
        return 1 if limit and mm[:size] != zero else 0

    @property
    def is_full(self) -> bool:
        return self.entries >= self.max_entries

    @property
    def size_bytes(self) -> int:
        return self.entries * self.entry.size

    def _unpack(self, i: int) -> tuple[int, int]:
        assert self._mm is not None
        return self.entry.unpack_from(self._mm, i * self.entry.size)

    def _key(self, field: int) -> Callable[[int], int]:
        """Bisect key: field `field` of entry j, straight from the map (the hot lookup)."""
        unpack_from, mm, size = self.entry.unpack_from, self._mm, self.entry.size
        return lambda j: unpack_from(mm, j * size)[field]

    def _put(self, a: int, b: int) -> None:
        if self._mm is None or not self.writable:
            raise OSError(f"index {self.path} is not writable")
        if self.entries >= self.max_entries:
            raise OSError(f"index {self.path} is full")
        self.entry.pack_into(self._mm, self.entries * self.entry.size, a, b)
        self.entries += 1

    def _truncate_entries(self, keep: int) -> None:
        """Drop entries from `keep` on, zeroing them so a reload cannot see them."""
        if keep >= self.entries:
            return
        if self._mm is not None and self.writable:
            size = self.entry.size
            self._mm[keep * size : self.entries * size] = bytes((self.entries - keep) * size)
        self.entries = keep

    def reset(self) -> None:
        self._truncate_entries(0)

    def close(self, *, trim: bool = True) -> None:
        """Unmap; a writable index is trimmed to its entries (as on a roll or clean close).

        No fsync here (a roll is on the append path): the segment's flush syncs the file.
        """
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self.writable and trim and self.path.exists():
            os.truncate(self.path, self.entries * self.entry.size)
        self.max_entries = 0


def fsync_path(path: Path) -> None:
    """fsync a file by name (its mmapped pages included), if it exists."""
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

    def is_sane(self, log_size: int) -> bool:
        """Cheap check of a trusted index: last entry inside the log, offsets rising."""
        if self.entries == 0:
            return True
        rel, position = self._unpack(self.entries - 1)
        if not 0 < position < log_size or rel <= 0:
            return False
        if self.entries > 1:
            prev_rel, prev_position = self._unpack(self.entries - 2)
            return prev_rel < rel and prev_position < position
        return True


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
