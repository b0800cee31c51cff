"""A minimal blocking Kafka client for tests that need exact requests.

Requests and responses are kio entities; only the framing and headers are here.
Real clients cover everything else; this is for cases they cannot express
(a retried duplicate batch, a sequence gap, a fenced epoch).
"""

from __future__ import annotations

import io
import socket
import struct
from typing import Any

from kio.index import load_response_schema
from kio.serial import entity_reader, entity_writer


class RawClient:
    def __init__(self, port: int, timeout: float = 30) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.correlation_id = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, request: Any, *, expect_response: bool = True) -> Any:
        self.correlation_id += 1
        flexible = request.__flexible__
        header = struct.pack(">hhi", request.__api_key__, request.__version__, self.correlation_id)
        header += struct.pack(">h", 4) + b"test"
        if flexible:
            header += b"\x00"
        body = io.BytesIO()
        entity_writer(type(request))(body, request)
        payload = header + body.getvalue()
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        if not expect_response:
            return None
        (size,) = struct.unpack(">i", self._exactly(4))
        frame = self._exactly(size)
        (correlation_id,) = struct.unpack_from(">i", frame)
        assert correlation_id == self.correlation_id
        offset = 4
        # ApiVersions answers keep header v0 in every version.
        if flexible and request.__api_key__ != 18:
            assert frame[4] == 0  # no tagged fields in our responses' headers
            offset = 5
        response_class = load_response_schema(request.__api_key__, request.__version__)
        response, end = entity_reader(response_class)(frame, offset)
        assert offset + end == len(frame)  # kio returns the bytes it read
        return response

    def _exactly(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return bytes(data)
