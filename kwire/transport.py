"""Transports under a Kafka connection: plaintext sockets and TLS.

The connection reads frames with `recv_into` and writes answers with `send_all` and
`send_region` (a log file region of a fetch answer). Plaintext keeps the zero-copy
paths: the socket fills the frame buffer directly, and file regions go out with
sendfile(2), never entering Python. TLS (trio.SSLStream) must encrypt every byte
in user space, so its file regions are read and sent through the stream.
"""

from __future__ import annotations

import os
import ssl
from typing import Protocol

import trio

from kwire.log.segment import FileRegion

# A TLS record carries at most 16 KiB; reading a few at a time keeps the copies
# into the frame buffer few without holding much per connection.
TLS_READ_SIZE = 64 * 1024
# File regions over TLS are read and encrypted in pieces of this size.
TLS_REGION_CHUNK = 256 * 1024


class Transport(Protocol):
    stream: trio.abc.Stream

    async def recv_into(self, buffer: memoryview) -> int: ...

    async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...

    async def send_region(self, region: FileRegion) -> None: ...

    async def aclose(self) -> None: ...


class PlainTransport:
    __slots__ = ("stream", "_socket")

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._socket = stream.socket

    async def recv_into(self, buffer: memoryview) -> int:
        return await self._socket.recv_into(buffer)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def send_region(self, region: FileRegion) -> None:
        await send_file_region(self._socket, region)

    async def aclose(self) -> None:
        await self.stream.aclose()


class TlsTransport:
    """TLS over a socket stream, server side. `handshake()` must succeed first."""

    __slots__ = ("stream", "_pending")

    def __init__(self, stream: trio.SocketStream, context: ssl.SSLContext) -> None:
        self.stream = trio.SSLStream(stream, context, server_side=True)
        # Decrypted bytes received beyond what the last buffer could take.
        self._pending = b""

    async def handshake(self) -> None:
        await self.stream.do_handshake()

    def peer_certificate(self) -> dict | None:
        """The client's certificate as ssl.getpeercert() gives it, or None."""
        return self.stream.getpeercert() or None

    async def recv_into(self, buffer: memoryview) -> int:
        data = self._pending
        if not data:
            data = await self.stream.receive_some(TLS_READ_SIZE)
        size = min(len(data), len(buffer))
        buffer[:size] = data[:size]
        self._pending = data[size:]
        return size

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def send_region(self, region: FileRegion) -> None:
        fd = region.file.fileno()
        position, remaining = region.position, region.size
        while remaining:
            chunk = os.pread(fd, min(remaining, TLS_REGION_CHUNK), position)
            if not chunk:
                raise ConnectionError(f"log file region ended {remaining} bytes early")
            await self.stream.send_all(chunk)
            position += len(chunk)
            remaining -= len(chunk)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def send_file_region(sock: trio.socket.SocketType, region: FileRegion) -> None:
    """Send a log file region with sendfile(2): the bytes never enter Python."""
    offset, remaining = region.position, region.size
    file_fd, sock_fd = region.file.fileno(), sock.fileno()
    while remaining:
        try:
            sent = os.sendfile(sock_fd, file_fd, offset, remaining)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        if sent == 0:
            # The file shrank under us; the promised size can no longer be kept.
            raise ConnectionError(f"log file region ended {remaining} bytes early")
        offset += sent
        remaining -= sent
    await trio.lowlevel.checkpoint()
