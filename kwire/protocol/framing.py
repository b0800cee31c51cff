"""Size-prefixed framing, sans-IO: the caller receives into `writable()`, reports
`advance(n)`, and takes whole request frames (size prefix stripped) from `next_frame()`.

Small frames are read through one shared buffer per connection and copied out.
It starts small (an idle connection costs little) and doubles, up to
`buffer_size`, whenever a read fills it. A frame larger than that gets its own
bytearray, which the socket fills directly: a produce request of a megabyte is
received once and never copied again (its batches get their offsets written in
place and go to the log from there).

That own buffer grows as the frame's bytes arrive, doubling in place, never
ahead of them by more than its current size: a size prefix alone reserves
almost nothing, whatever size it announces. When the caller shares a memory
budget between connections (Kafka's queued.max.request.bytes), `wants` says how
many bytes the next allocation (the first, or a growth) needs; the caller obtains
them and calls `grow()`. Without a budget, allocation is automatic.
"""

from __future__ import annotations

import struct

_SIZE = struct.Struct(">i")
# Frames up to this size (prefix included) go through the shared buffer.
BUFFER_SIZE = 64 * 1024
# The shared buffer's first size: most requests (metadata, heartbeats, small
# produce batches) fit, and thousands of idle connections stay cheap.
INITIAL_BUFFER_SIZE = 8 * 1024
# A large frame's own buffer starts at this size (or the frame's, if smaller).
LARGE_INITIAL_SIZE = 64 * 1024


class FrameError(Exception):
    """The byte stream cannot be framed; the connection must close."""


class FrameBuffer:
    """Accumulates received bytes and yields each complete frame.

    A frame larger than `max_size` (Kafka's socket.request.max.bytes) or with a
    negative size is an error: Kafka closes that connection without reading it.
    """

    __slots__ = (
        "_buffer", "_start", "_end", "_buffer_max",
        "_large", "_large_size", "_large_filled", "_overflow",
        "max_size", "wants", "held", "budgeted",
    )

    def __init__(
        self,
        max_size: int,
        buffer_size: int = BUFFER_SIZE,
        *,
        initial_size: int = INITIAL_BUFFER_SIZE,
        budgeted: bool = False,
    ) -> None:
        self._buffer = bytearray(min(initial_size, buffer_size))
        self._buffer_max = buffer_size
        self._start = 0
        self._end = 0
        # The frame being received into its own buffer: its size and how much is in.
        self._large: bytearray | None = None
        self._large_size = 0
        self._large_filled = 0
        # Bytes fed past the end of a large frame, taken in once it is handed out.
        self._overflow = b""
        self.max_size = max_size
        # Bytes the large frame's buffer must get before more can be read (0:
        # none), and the size of that buffer now (0 once the frame is taken).
        self.wants = 0
        self.held = 0
        # True: the caller grants each growth (`wants`, then `grow`); False: automatic.
        self.budgeted = budgeted

    def writable(self) -> memoryview:
        """Where the next received bytes go. Call next_frame() until it returns None
        first: the space is empty only while a finished frame waits to be taken,
        or, with a budget, while `wants` awaits `grow()`."""
        if self._large is not None:
            if self.wants and not self.budgeted:
                self.grow()
            return memoryview(self._large)[self._large_filled :]
        if self._end == len(self._buffer):
            # Move the unread tail to the front; it is less than one frame.
            tail = self._end - self._start
            self._buffer[:tail] = self._buffer[self._start : self._end]
            self._start, self._end = 0, tail
        return memoryview(self._buffer)[self._end :]

    def advance(self, received: int) -> None:
        if self._large is not None:
            self._large_filled += received
            if self._large_filled == len(self._large) < self._large_size:
                self.wants = min(self._large_size, 2 * len(self._large)) - len(self._large)
            return
        self._end += received
        if self._end == len(self._buffer) < self._buffer_max:
            # A read filled the buffer: more is coming; read it in fewer calls.
            self._resize_shared(min(self._buffer_max, 2 * len(self._buffer)))

    def _resize_shared(self, size: int) -> None:
        bigger = bytearray(size)
        tail = self._end - self._start
        bigger[:tail] = memoryview(self._buffer)[self._start : self._end]
        self._buffer, self._start, self._end = bigger, 0, tail

    def grow(self) -> None:
        """Allocate or grow the large frame's buffer by `wants` bytes (the caller has them)."""
        assert self.wants
        if self._large is None:
            self._begin_large(self.wants)
            return
        extra, self.wants = self.wants, 0
        try:
            # In place: realloc moves big blocks by remapping pages, not copying.
            self._large += bytes(extra)
        except BufferError:
            # Someone still holds a view of it: copy instead.
            bigger = bytearray(len(self._large) + extra)
            bigger[: self._large_filled] = memoryview(self._large)[: self._large_filled]
            self._large = bigger
        self.held += extra

    def feed(self, data: bytes) -> None:
        """Copy bytes in (for callers that already hold them, and tests)."""
        self._overflow += data
        self._pump()

    def _pump(self) -> None:
        while self._overflow:
            if self._large is None:
                self._maybe_begin_large()
            if self.wants and self.budgeted:
                return  # the caller grants the memory first
            with self.writable() as target:
                if not target:
                    return  # a full buffer: frames must be taken out first
                n = min(len(target), len(self._overflow))
                target[:n] = self._overflow[:n]
            self.advance(n)
            self._overflow = self._overflow[n:]

    def _maybe_begin_large(self) -> bool:
        """Give the frame at the front its own buffer if the shared one is too small."""
        if self._end - self._start < 4:
            return False
        (size,) = _SIZE.unpack_from(self._buffer, self._start)
        if size < 0 or size > self.max_size:
            raise FrameError(f"frame of {size} bytes exceeds socket.request.max.bytes={self.max_size}")
        if 4 + size <= self._buffer_max:
            if 4 + size > len(self._buffer):
                self._resize_shared(self._buffer_max)
            return False
        # Sized by what has arrived, not by what the prefix announces.
        capacity = min(size, max(LARGE_INITIAL_SIZE, 2 * (self._end - self._start - 4)))
        if self.budgeted:
            self.wants = capacity  # the body waits in the shared buffer until granted
            return False
        self._begin_large(capacity)
        return True

    def _begin_large(self, capacity: int) -> None:
        (size,) = _SIZE.unpack_from(self._buffer, self._start)
        body = memoryview(self._buffer)[self._start + 4 : self._end]
        self._large = bytearray(capacity)
        self._large[: len(body)] = body
        body.release()
        self._large_size = size
        self._large_filled = self._end - self._start - 4
        self.held = capacity
        self.wants = 0
        if self._large_filled == capacity < size:
            self.wants = min(size, 2 * capacity) - capacity
        self._start = self._end = 0

    def next_frame(self) -> bytearray | None:
        self._pump()
        if self.wants:
            return None  # a large frame waits for memory
        if self._large is None and self._maybe_begin_large():
            self._pump()
        if self._large is not None:
            if self._large_filled < self._large_size:
                return None
            frame, self._large = self._large, None
            self.held = 0
            return frame
        available = self._end - self._start
        if available < 4:
            return None
        (size,) = _SIZE.unpack_from(self._buffer, self._start)
        if available < 4 + size:
            return None
        begin = self._start + 4
        self._start = begin + size
        if self._start == self._end:
            self._start = self._end = 0
        # A bytearray of its own: handlers may write into it (produce stamps offsets).
        return self._buffer[begin : begin + size]

    @property
    def pending_bytes(self) -> int:
        if self._large is not None:
            return self._large_filled
        return self._end - self._start


def frame(payload: bytes | bytearray) -> bytes:
    return _SIZE.pack(len(payload)) + payload
