"""A few raw Kafka requests over a plain socket.

The start-up and Metadata figures must not include a client library's own start-up
(librdkafka spends tens of milliseconds creating threads and negotiating), so these
are sent by hand: Metadata v1 (non-flexible, understood by every broker since 0.10)
and ApiVersions v0.
"""

from __future__ import annotations

import socket
import struct
import time

CLIENT_ID = b"kwire-bench"


def _request(api_key: int, api_version: int, correlation_id: int, body: bytes) -> bytes:
    header = struct.pack(">hhih", api_key, api_version, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def metadata_v1_request(correlation_id: int, topics: list[str] | None = None) -> bytes:
    """Metadata v1; topics=None asks for all topics (a null array in v1)."""
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        parts = [struct.pack(">i", len(topics))]
        for t in topics:
            b = t.encode()
            parts.append(struct.pack(">h", len(b)) + b)
        body = b"".join(parts)
    return _request(3, 1, correlation_id, body)


def api_versions_v0_request(correlation_id: int) -> bytes:
    return _request(18, 0, correlation_id, b"")


def metadata_v4_autocreate_request(correlation_id: int, topics: list[str]) -> bytes:
    """Metadata v4 naming `topics` with allow_auto_topic_creation=true."""
    parts = [struct.pack(">i", len(topics))]
    for t in topics:
        b = t.encode()
        parts.append(struct.pack(">h", len(b)) + b)
    parts.append(b"\x01")
    return _request(3, 4, correlation_id, b"".join(parts))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def roundtrip(sock: socket.socket, request: bytes, correlation_id: int) -> bytes:
    """Send one request, return the response body (after the correlation id)."""
    sock.sendall(request)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    data = _recv_exact(sock, size)
    (cid,) = struct.unpack_from(">i", data, 0)
    if cid != correlation_id:
        raise ValueError(f"correlation id {cid} != {correlation_id}")
    return data[4:]


def connect(host: str, port: int, timeout: float) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def wait_first_metadata(host: str, port: int, deadline: float, alive=lambda: True,
                        poll_interval: float = 0.003) -> float:
    """Poll connect every few ms; return time.monotonic() at the first Metadata answer.

    `alive` is called between attempts; when it returns False (the broker process
    exited) this raises at once instead of waiting out the deadline.
    """
    last_err: Exception | None = None
    cid = 1
    while True:
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"no Metadata answer before deadline (last error: {last_err!r})")
        if not alive():
            raise RuntimeError(f"broker process exited before answering (last error: {last_err!r})")
        try:
            with connect(host, port, timeout=min(2.0, max(0.05, deadline - now))) as s:
                body = roundtrip(s, metadata_v1_request(cid), cid)
                parse_metadata_v1(body)
                return time.monotonic()
        except (OSError, ValueError, struct.error, ConnectionError) as e:
            last_err = e
            cid += 1
            time.sleep(poll_interval)


def parse_metadata_v1(body: bytes) -> dict:
    """Parse a Metadata v1 response body into {brokers, controller, topics:{name:(err,[(p,err,leader)])}}."""
    off = 0

    def i16():
        nonlocal off
        (v,) = struct.unpack_from(">h", body, off)
        off += 2
        return v

    def i32():
        nonlocal off
        (v,) = struct.unpack_from(">i", body, off)
        off += 4
        return v

    def string():
        nonlocal off
        n = i16()
        if n < 0:
            return None
        s = body[off:off + n].decode("utf-8", "replace")
        off += n
        return s

    brokers = []
    for _ in range(i32()):
        node = i32()
        host = string()
        port = i32()
        string()  # rack
        brokers.append((node, host, port))
    controller = i32()
    topics = {}
    for _ in range(i32()):
        err = i16()
        name = string()
        off += 1  # is_internal
        parts = []
        for _ in range(i32()):
            perr = i16()
            idx = i32()
            leader = i32()
            n = i32()
            off += 4 * max(n, 0)
            n = i32()
            off += 4 * max(n, 0)
            parts.append((idx, perr, leader))
        topics[name] = (err, parts)
    return {"brokers": brokers, "controller": controller, "topics": topics}


def metadata_all(host: str, port: int, timeout: float = 30.0) -> tuple[float, dict]:
    """One Metadata v1 request for all topics on a fresh connection; returns (seconds, parsed).

    The time covers the request/response only (connection set up first)."""
    with connect(host, port, timeout=timeout) as s:
        # Warm the connection with an ApiVersions round trip, so connect/accept is not timed.
        roundtrip(s, api_versions_v0_request(1), 1)
        t0 = time.perf_counter()
        body = roundtrip(s, metadata_v1_request(2), 2)
        dt = time.perf_counter() - t0
    return dt, parse_metadata_v1(body)


def api_versions(host: str, port: int, timeout: float = 10.0) -> dict[int, tuple[int, int]]:
    """ApiVersions v0: {api_key: (min_version, max_version)}."""
    with connect(host, port, timeout=timeout) as s:
        body = roundtrip(s, api_versions_v0_request(1), 1)
    (err,) = struct.unpack_from(">h", body, 0)
    (n,) = struct.unpack_from(">i", body, 2)
    out = {}
    for i in range(n):
        k, lo, hi = struct.unpack_from(">hhh", body, 6 + 6 * i)
        out[k] = (lo, hi)
    if err and not out:
        raise ValueError(f"ApiVersions error {err}")
    return out


def auto_create(host: str, port: int, topics: list[str], timeout: float = 60.0) -> None:
    """Ask the broker to auto-create `topics` (Metadata v4, allow_auto_topic_creation)."""
    with connect(host, port, timeout=timeout) as s:
        roundtrip(s, metadata_v4_autocreate_request(1, topics), 1)
