"""A bound on what inactive segments hold: open `.log` files and loaded indexes.

An inactive segment opens its `.log` on its first read and loads its indexes on
first use (see segment.py). Unbounded, a broker with thousands of partitions
and many segments each would run out of file descriptors (ulimit -n) and hold
every index read since start-up in memory. This cache keeps the inactive
segments that hold either in least-recently-used order and lets go of the
oldest beyond `max_files` segments or `max_index_bytes` of loaded indexes (the
segment's `evict()`; the next read reopens and reloads). Active segments are
not counted: each always holds its fd (appends, tail fetches).

Eviction never closes a file still in use: a FileRegion handed to a fetch (sent
later with sendfile) or a header scan in progress holds the io.FileIO, and the
segment only drops its own reference then; CPython closes the fd when the last
holder lets go. Closing it under them would cut a fetch answer short or, worse,
let sendfile read whatever file reuses the fd number.

Eviction runs on the main thread only (the event loop's, where every log is
read and changed): a segment used from a worker thread (a partition opened or
recovered off the loop) is recorded, and the next use on the main thread restores
the bounds. So no worker thread ever drops a file or index the loop is using.

The cache is process-wide (`open_segments`), as the fd limit is. Its default
size follows RLIMIT_NOFILE (`default_max_files`); `configure()` sets others.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Protocol

# Loaded indexes of inactive segments kept at most (entries cost 8 or 12 bytes).
DEFAULT_MAX_INDEX_BYTES = 128 << 20
# Files kept open by inactive segments at most, whatever the fd limit.
_MAX_FILES_CEILING = 10_000
_MIN_FILES = 16


class Evictable(Protocol):
    """What the cache asks of a segment (LogSegment)."""

    @property
    def active(self) -> bool: ...

    def evict(self) -> None: ...


def default_max_files() -> int:
    """A quarter of the soft fd limit (the rest: every partition's active segment,
    connections, state files being written, roll flushes' own fds), at most 10,000."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return _MAX_FILES_CEILING
    except (ImportError, OSError, ValueError):
        soft = 1024
    return max(_MIN_FILES, min(soft // 4, _MAX_FILES_CEILING))


class OpenSegmentCache:
    """Inactive segments holding an open `.log` and/or loaded indexes, least recently
    used first. Thread-safe bookkeeping; eviction on the main thread only."""

    def __init__(self, max_files: int | None = None, max_index_bytes: int | None = None) -> None:
        self.max_files = default_max_files() if max_files is None else max(1, max_files)
        self.max_index_bytes = DEFAULT_MAX_INDEX_BYTES if max_index_bytes is None else max_index_bytes
        # Segment -> bytes of its loaded indexes; insertion order is recency.
        self._segments: OrderedDict[Evictable, int] = OrderedDict()
        self._index_bytes = 0
        self._lock = threading.RLock()
        self._evicting_thread = threading.main_thread().ident
        self.evictions = 0

    def configure(self, *, max_files: int | None = None, max_index_bytes: int | None = None) -> None:
        """New bounds (None: the default); applied at once."""
        with self._lock:
            self.max_files = default_max_files() if max_files is None else max(1, max_files)
            self.max_index_bytes = (
                DEFAULT_MAX_INDEX_BYTES if max_index_bytes is None else max_index_bytes
            )
            if threading.get_ident() == self._evicting_thread:
                self._evict_over(None)

    def __len__(self) -> int:
        return len(self._segments)

    def __contains__(self, segment: object) -> bool:
        return segment in self._segments

    @property
    def index_bytes(self) -> int:
        return self._index_bytes

    def used(self, segment: Evictable, index_bytes: int | None = None) -> None:
        """`segment` (inactive) was just used: most recent now; `index_bytes`, if given,
        is what its loaded indexes now take. Evicts the least recent beyond the bounds."""
        with self._lock:
            old = self._segments.pop(segment, None)
            weight = (old or 0) if index_bytes is None else index_bytes
            self._segments[segment] = weight
            self._index_bytes += weight - (old or 0)
            if threading.get_ident() == self._evicting_thread:
                self._evict_over(segment)

    def forget(self, segment: Evictable) -> None:
        """`segment` holds nothing the cache bounds any more (closed, deleted, active)."""
        with self._lock:
            weight = self._segments.pop(segment, None)
            if weight:
                self._index_bytes -= weight

    def indexes_dropped(self, segment: Evictable) -> None:
        """`segment` let go of its indexes (its file, if open, stays counted)."""
        with self._lock:
            weight = self._segments.get(segment)
            if weight:
                self._segments[segment] = 0
                self._index_bytes -= weight

    def clear(self) -> None:
        """Evict everything (tests; a broker shutting down need not)."""
        with self._lock:
            while self._segments:
                self._evict_oldest()

    def _evict_over(self, keep: Evictable | None) -> None:
        segments = self._segments
        while len(segments) > self.max_files or (
            self._index_bytes > self.max_index_bytes and len(segments) > 1
        ):
            oldest = next(iter(segments))
            if oldest is keep:
                # The segment in use is the only one left to evict: keep it.
                if len(segments) == 1:
                    return
                segments.move_to_end(oldest)
                continue
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        segment, weight = self._segments.popitem(last=False)
        self._index_bytes -= weight
        if not segment.active:
            self.evictions += 1
            segment.evict()


# The process's cache: every LogSegment reports to it.
open_segments = OpenSegmentCache()


def configure(*, max_files: int | None = None, max_index_bytes: int | None = None) -> None:
    """Bounds of the process's cache (None: the default)."""
    open_segments.configure(max_files=max_files, max_index_bytes=max_index_bytes)
