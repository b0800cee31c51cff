"""Raw frames to a real broker, for the malformed-request tests and the fuzzers.

`probe` sends one frame on its own connection and reports what came back: an
answer, a close, or nothing before the deadline (a hang). `api_versions_answers`
is the liveness check a fresh client would do.
"""

from __future__ import annotations

import socket
import struct
import time

ANSWERED = "answered"
CLOSED = "closed"
HUNG = "hung"


def request_header(api_key: int, version: int, correlation_id: int, flexible: bool, client_id: bytes = b"fuzz") -> bytes:
    """RequestHeader v1 (v2 with an empty tagged-field section when flexible)."""
    out = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    return out + b"\x00" if flexible else out


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def read_answer(sock: socket.socket, deadline: float) -> tuple[str, bytes]:
    """(ANSWERED, frame) or (CLOSED, b"") or (HUNG, b"") once the deadline passes."""
    data = bytearray()
    want = 4
    while True:
        if len(data) >= want:
            if want == 4:
                (size,) = struct.unpack_from(">i", data)
                want = 4 + size
                continue
            return ANSWERED, bytes(data[4:want])
        left = deadline - time.monotonic()
        if left <= 0:
            return HUNG, b""
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return HUNG, b""
        except ConnectionError:
            return CLOSED, b""
        if not chunk:
            return CLOSED, b""
        data += chunk


def probe(port: int, payload: bytes, timeout: float = 5.0) -> tuple[str, bytes]:
    """Send one request frame on a new connection: answered, closed or hung."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(frame(payload))
        except ConnectionError:
            return CLOSED, b""
        return read_answer(sock, deadline)


def api_versions_answers(port: int, timeout: float = 5.0) -> bool:
    """Whether a fresh connection's ApiVersions v0 gets its answer."""
    try:
        outcome, answer = probe(port, request_header(18, 0, 7, False), timeout)
    except OSError:
        return False
    return outcome == ANSWERED and answer[:4] == struct.pack(">i", 7)
