"""Shared fixtures: a real kwire broker process on loopback, on real disk.

`broker` starts `python -m kwire serve` on a free port with a fresh log dir and
stops it after the test; `broker_factory` makes brokers with extra overrides
and can restart or kill them (the data dir is kept across restarts).

At teardown every broker is stopped with SIGTERM and the test fails unless each
SIGTERM stop of the test exited 0 and the broker log (all runs) holds no
Traceback and no ERROR/CRITICAL record the test did not declare, with
`broker.expect_log(regex)` or `@pytest.mark.expect_broker_log(regex, ...)`: a
handler exception only closes a connection, clients reconnect, and the test
would pass without this. A SIGKILLed run has no exit code to check; its log is
still scanned.
"""

from __future__ import annotations

import os
import re
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

# kwire/cli/__init__.py logs "%(asctime)s %(levelname)s %(name)s: %(message)s"; a line that does
# not start like this (a traceback, stdout) belongs to the record before it.
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) ")
BAD_LEVELS = ("ERROR", "CRITICAL")


def log_records(text: str) -> list[str]:
    """The broker log split into records: a record line with its continuation lines."""
    records: list[str] = []
    for line in text.splitlines():
        if LOG_RECORD.match(line) or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    return records


def log_problems(text: str, expected: list[re.Pattern[str]]) -> list[str]:
    """Records at ERROR/CRITICAL or holding a Traceback that no expected pattern matches."""
    problems = []
    for record in log_records(text):
        m = LOG_RECORD.match(record)
        bad = (m is not None and m["level"] in BAD_LEVELS) or "Traceback" in record
        if bad and not any(p.search(record) for p in expected):
            problems.append(record)
    return problems


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
        # Exit codes of the SIGTERM stops (restarts included); SIGKILLed runs are not here.
        self.stop_codes: list[int] = []
        self.expected_log: list[re.Pattern[str]] = []

    def expect_log(self, pattern: str) -> BrokerProcess:
        """Declare that log records matching `pattern` (re.search over the record and its
        traceback) are expected in this test, so the teardown check accepts them."""
        self.expected_log.append(re.compile(pattern))
        return self

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
        """SIGTERM and wait: a clean shutdown. The exit code is kept for the teardown check
        (a broker that had already died shows its own exit code here)."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
            self.process = None
            self.stop_codes.append(-signal.SIGKILL)
            raise RuntimeError("broker did not stop within the timeout after SIGTERM") from None
        self.process = None
        self.stop_codes.append(code)
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

    def teardown_problems(self) -> list[str]:
        """Stop the broker if it runs; what the teardown check objects to (empty: clean)."""
        out: list[str] = []
        if self.process is not None:
            died = self.process.poll()
            if died is not None:
                out.append(f"broker exited by itself with code {died} before teardown")
            try:
                self.stop()
            except RuntimeError as e:
                out.append(str(e))
        for i, code in enumerate(self.stop_codes):
            if code != 0:
                out.append(f"SIGTERM stop #{i + 1} exited with code {code}, not 0")
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        for record in log_problems(text, self.expected_log):
            out.append("unexpected in the broker log:\n" + record[-3000:])
        return out


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "expect_broker_log(*patterns): broker log records matching these regexes are "
        "expected in this test (see BrokerProcess.expect_log)",
    )


@pytest.fixture
def broker_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[callable]:
    brokers: list[BrokerProcess] = []
    marked = [re.compile(p) for m in request.node.iter_markers("expect_broker_log") for p in m.args]

    def make(overrides: dict[str, str] | None = None, name: str = "broker") -> BrokerProcess:
        b = BrokerProcess(tmp_path / name, overrides)
        b.expected_log.extend(marked)
        brokers.append(b)
        return b.start()

    yield make
    problems = []
    for b in brokers:
        problems += [f"[{b.data_dir.name}] {p}" for p in b.teardown_problems()]
    if problems:
        pytest.fail("broker teardown check failed:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def broker(broker_factory) -> BrokerProcess:
    return broker_factory()


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Clients must only ever talk to loopback.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(var, raising=False)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")

# The cluster fixtures (ZooKeeper, TcpProxy, KwireCluster): see cluster_harness.py.
pytest_plugins = ["cluster_harness"]
