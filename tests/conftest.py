"""Shared fixtures: a real kwire broker process on loopback, on real disk.

`broker` starts `python -m kwire serve` on a free port with a fresh log dir and
stops it after the test; `broker_factory` makes brokers with extra overrides
and can restart or kill them (the data dir is kept across restarts).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_api_versions(port: int, timeout: float) -> None:
    """Poll until the broker answers an ApiVersions v0 request."""
    deadline = time.monotonic() + timeout
    request = struct.pack(">hhih", 18, 0, 1, 4) + b"test"
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(struct.pack(">i", len(request)) + request)
                size = struct.unpack(">i", _recv_exactly(s, 4))[0]
                _recv_exactly(s, size)
                return
        except OSError as e:
            last_error = e
            time.sleep(0.05)
    raise TimeoutError(f"broker on port {port} did not answer within {timeout}s: {last_error}")


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


class BrokerProcess:
    """A kwire broker subprocess with its own data dir and port."""

    def __init__(self, data_dir: Path, overrides: dict[str, str] | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.overrides = {
            "group.initial.rebalance.delay.ms": "0",
            **(overrides or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-broker.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> BrokerProcess:
        args = [sys.executable, "-m", "kwire", "serve"]
        overrides = {
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "log.dirs": str(self.data_dir),
            **self.overrides,
        }
        for key, value in overrides.items():
            args += ["--override", f"{key}={value}"]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            wait_for_api_versions(self.port, START_TIMEOUT)
        except TimeoutError:
            self.kill()
            raise RuntimeError(f"broker did not start; log:\n{self.log_text()}") from None
        return self

    def stop(self) -> int:
        """SIGTERM and wait: a clean shutdown."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
            raise RuntimeError("broker did not stop within the timeout after SIGTERM") from None
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or closed."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
            self.process = None

    def restart(self) -> BrokerProcess:
        self.stop()
        return self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[callable]:
    brokers: list[BrokerProcess] = []

    def make(overrides: dict[str, str] | None = None, name: str = "broker") -> BrokerProcess:
        b = BrokerProcess(tmp_path / name, overrides)
        brokers.append(b)
        return b.start()

    yield make
    for b in brokers:
        if b.process is not None:
            try:
                b.stop()
            except RuntimeError:
                b.kill()


@pytest.fixture
def broker(broker_factory) -> BrokerProcess:
    return broker_factory()


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Clients must only ever talk to loopback.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
