"""Size-prefixed framing, sans-IO: bytes in, whole request frames out."""

from __future__ import annotations

import struct

_SIZE = struct.Struct(">i")


class FrameError(Exception):
    """The byte stream cannot be framed; the connection must close."""


class FrameBuffer:
    """Accumulates received bytes and yields each complete frame (size prefix stripped).

    A frame larger than `max_size` (Kafka's socket.request.max.bytes) or with a
    negative size is an error: Kafka closes that connection without reading it.
    """

    __slots__ = ("_buffer", "_start", "max_size")

    def __init__(self, max_size: int) -> None:
        self._buffer = bytearray()
        self._start = 0
        self.max_size = max_size

    def feed(self, data: bytes) -> None:
        if self._start:
            # Drop consumed bytes only when we append, so a burst of small frames
            # costs one compaction, not one per frame.
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    def next_frame(self) -> bytes | None:
        available = len(self._buffer) - self._start
        if available < 4:
            return None
        (size,) = _SIZE.unpack_from(self._buffer, self._start)
        if size < 0 or size > self.max_size:
            raise FrameError(f"frame of {size} bytes exceeds socket.request.max.bytes={self.max_size}")
        if available < 4 + size:
            return None
        begin = self._start + 4
        self._start = begin + size
        return bytes(self._buffer[begin : self._start])

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer) - self._start


def frame(payload: bytes | bytearray) -> bytes:
    return _SIZE.pack(len(payload)) + payload
