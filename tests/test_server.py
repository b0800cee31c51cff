"""The `kwire serve` command and the server's handling of bad input."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from conftest import free_port

TIMEOUT = 30


def serve(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kwire", "serve", *args],
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("num.partitions=zero", "num.partitions"),
        ("num.partitions=0", "num.partitions"),
        ("listeners=localhost", "listeners"),
        ("auto.create.topics.enable=maybe", "auto.create.topics.enable"),
        ("log.retention.ms=-5", "log.retention.ms"),
        ("socket.request.max.bytes=-1", "socket.request.max.bytes"),
    ],
)
def test_invalid_config_stops_start_up(tmp_path, override: str, message: str) -> None:
    result = serve("--override", f"log.dirs={tmp_path}", "--override", override)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_properties_file_and_unknown_key_warning(tmp_path) -> None:
    port = free_port()
    properties = tmp_path / "server.properties"
    properties.write_text(
        "# a comment\n"
        f"listeners=PLAINTEXT://127.0.0.1:{port}\n"
        f"log.dirs={tmp_path / 'data'}\n"
        "num.partitions = 4\n"
        "no.such.config=1\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "kwire", "serve", str(properties)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready = process.stdout.readline()
        assert ready.strip() == f"kwire broker 0 listening on PLAINTEXT://127.0.0.1:{port}"
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{port}"})
        producer.produce("auto-created", b"x")
        assert producer.flush(TIMEOUT) == 0
        topics = admin.list_topics(timeout=TIMEOUT).topics
        assert len(topics["auto-created"].partitions) == 4
    finally:
        start = time.monotonic()
        process.terminate()
        process.wait(TIMEOUT)
        stopped_in = time.monotonic() - start
    assert process.returncode == 0
    assert stopped_in < 5
    assert "unknown config 'no.such.config'" in process.stderr.read()


def _api_versions_frame(correlation_id: int) -> bytes:
    body = struct.pack(">hhih", 18, 0, correlation_id, 1) + b"t"
    return struct.pack(">i", len(body)) + body


def _read_frame(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    (size,) = struct.unpack(">i", exactly(4))
    return exactly(size)


@pytest.mark.parametrize(
    "bad",
    [
        struct.pack(">i", 200 * 1024 * 1024),  # over socket.request.max.bytes
        struct.pack(">i", -7),  # negative size
        struct.pack(">i", 10) + struct.pack(">hhi", 999, 0, 1) + b"\x00\x00",  # unknown API
        struct.pack(">i", 10) + struct.pack(">hhih", 3, 77, 1, 0),  # Metadata v77
        struct.pack(">i", 14) + struct.pack(">hhih", 0, 9, 1, 0) + b"\x00\x05zz",  # truncated produce
        struct.pack(">i", 3) + b"abc",  # shorter than a header
    ],
)
def test_bad_frames_close_only_their_connection(broker, bad: bytes) -> None:
    bystander = socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT)
    offender = socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT)
    offender.sendall(bad)
    offender.settimeout(TIMEOUT)
    assert offender.recv(100) == b""  # closed by the broker, no answer
    bystander.sendall(_api_versions_frame(5))
    answer = _read_frame(bystander)
    assert struct.unpack_from(">ih", answer) == (5, 0)
    bystander.close()
    offender.close()


def test_pipelined_requests_are_answered_in_order(broker) -> None:
    sock = socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT)
    sock.sendall(b"".join(_api_versions_frame(i) for i in range(50)))
    ids = [struct.unpack_from(">i", _read_frame(sock))[0] for _ in range(50)]
    assert ids == list(range(50))
    sock.close()


def test_oversize_batch_is_message_too_large(broker) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 4_000_000})
    errors: list[str] = []
    producer.produce("big", b"x" * 2_000_000, on_delivery=lambda err, msg: errors.append(str(err.name()) if err else ""))
    producer.flush(TIMEOUT)
    assert errors == ["MSG_SIZE_TOO_LARGE"]
