"""Size-prefixed framing, sans-IO: the caller receives into `writable()`, reports
`advance(n)`, and takes whole request frames (size prefix stripped) from `next_frame()`.

Small frames are read through one reusable buffer and copied out. A frame larger
than that buffer gets its own bytearray, which the socket fills directly: a
produce request of a megabyte is received once and never copied again (its
batches get their offsets written in place and go to the log from there).
"""

from __future__ import annotations

import struct

_SIZE = struct.Struct(">i")
BUFFER_SIZE = 64 * 1024


class FrameError(Exception):
    """The byte stream cannot be framed; the connection must close."""


class FrameBuffer:
    """Accumulates received bytes and yields each complete frame.

    A frame larger than `max_size` (Kafka's socket.request.max.bytes) or with a
    negative size is an error: Kafka closes that connection without reading it.
    """

    __slots__ = ("_buffer", "_start", "_end", "_large", "_large_filled", "_overflow", "max_size")

    def __init__(self, max_size: int, buffer_size: int = BUFFER_SIZE) -> None:
        self._buffer = bytearray(buffer_size)
        self._start = 0
        self._end = 0
        # The frame being received into its own buffer, and how much of it is in.
        self._large: bytearray | None = None
        self._large_filled = 0
        # Bytes fed past the end of a large frame, taken in once it is handed out.
        self._overflow = b""
        self.max_size = max_size

    def writable(self) -> memoryview:
        """Where the next received bytes go. Call next_frame() until it returns None
        first: the space is empty only while a finished frame waits to be taken."""
        if self._large is not None:
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
        else:
            self._end += received

    def feed(self, data: bytes) -> None:
        """Copy bytes in (for callers that already hold them, and tests)."""
        self._overflow += data
        self._pump()

    def _pump(self) -> None:
        while self._overflow:
            if self._large is None:
                self._maybe_begin_large()
            target = self.writable()
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
        if 4 + size <= len(self._buffer):
            return False
        body = self._buffer[self._start + 4 : self._end]
        self._large = bytearray(size)
        self._large[: len(body)] = body
        self._large_filled = len(body)
        self._start = self._end = 0
        return True

    def next_frame(self) -> bytearray | None:
        self._pump()
        if self._large is None and self._maybe_begin_large():
            self._pump()
        if self._large is not None:
            if self._large_filled < len(self._large):
                return None
            frame, self._large = self._large, None
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
