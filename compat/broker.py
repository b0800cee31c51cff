"""Start and stop a fresh kwire broker for one client's run."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from compat.security import SaslSsl, SecurityError

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_OVERRIDES = [
    "group.initial.rebalance.delay.ms=0",
    "num.partitions=3",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class BrokerError(Exception):
    pass


class KwireBroker:
    """`python -m kwire serve` on a free loopback port with a temporary log.dirs."""

    def __init__(self, log_path: Path, overrides: list[str] | None = None,
                 start_timeout: float = 30.0, sasl_ssl: SaslSsl | None = None):
        self.log_path = log_path
        self.overrides = DEFAULT_OVERRIDES + list(overrides or [])
        self.start_timeout = start_timeout
        # With sasl_ssl: a SASL_SSL listener besides PLAINTEXT, and its SCRAM user made
        # after every start (a fresh log.dirs holds no credentials).
        self.sasl_ssl = sasl_ssl
        self.proc: subprocess.Popen | None = None
        self.dir: str | None = None
        self.port = 0
        self.sasl_ssl_port = 0
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_bootstrap(self) -> str:
        """What the drivers are given: the SASL_SSL listener in a security run."""
        return f"127.0.0.1:{self.sasl_ssl_port}" if self.sasl_ssl else self.bootstrap

    def start(self) -> None:
        # The free port is only free when asked: another process may take it before the
        # broker binds it, so a start that fails on "Address already in use" is retried.
        for attempt in range(5):
            try:
                self._start_once()
                return
            except BrokerError:
                if attempt == 4 or not self._lost_port():
                    raise
                self.stop()

    def _lost_port(self) -> bool:
        try:
            tail = self.log_path.read_bytes()[-6000:].decode(errors="replace")
        except OSError:
            return False
        return "Address already in use" in tail.rsplit("=== start", 1)[-1]

    def _start_once(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="kwire-compat-")
        self.port = free_port()
        listeners = f"PLAINTEXT://127.0.0.1:{self.port}"
        overrides = list(self.overrides)
        if self.sasl_ssl:
            self.sasl_ssl_port = free_port()
            while self.sasl_ssl_port == self.port:
                self.sasl_ssl_port = free_port()
            listeners += f",SASL_SSL://127.0.0.1:{self.sasl_ssl_port}"
            overrides = self.sasl_ssl.broker_overrides() + overrides
        cmd = [sys.executable, "-m", "kwire", "serve",
               "--override", f"listeners={listeners}",
               "--override", f"log.dirs={self.dir}"]
        for o in overrides:
            cmd += ["--override", o]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        log.write(f"\n=== start {' '.join(cmd)}\n".encode())
        log.flush()
        self.starts += 1
        # From the repository root, so that `-m kwire` is this checkout's broker.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        ready = threading.Event()
        lines: list[str] = []

        def pump():
            assert self.proc and self.proc.stdout
            for raw in self.proc.stdout:
                line = raw.decode(errors="replace")
                lines.append(line)
                log.write(raw)
                log.flush()
                ready.set()
            log.close()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"kwire exited with {self.proc.returncode} at start "
                                  f"(see {self.log_path})")
            if ready.is_set() and port_open("127.0.0.1", self.port) and \
                    (not self.sasl_ssl or port_open("127.0.0.1", self.sasl_ssl_port)):
                if self.sasl_ssl:
                    try:
                        self.sasl_ssl.create_user(self.bootstrap)
                    except SecurityError as e:
                        self.stop()
                        raise BrokerError(f"SCRAM user not created: {e} (see {self.log_path})") \
                            from None
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"kwire not ready in {self.start_timeout:g}s (see {self.log_path})")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stopped_from_outside(self) -> bool:
        """Was the broker stopped by someone else (it is exiting or gone, not crashed)?

        The harness only signals a broker in stop(), so death by SIGTERM/SIGINT, or a
        "received SIGTERM" in the log of the current start with a clean exit (or none
        yet), means another process did it. Any other signal (SIGABRT, SIGSEGV, SIGKILL)
        or a non-zero exit is the broker's own death, never "from outside"."""
        rc = self.exit_status()
        if rc is not None and rc < 0:
            return -rc in (signal.SIGTERM, signal.SIGINT)
        if rc not in (None, 0):
            return False
        try:
            tail = self.log_path.read_bytes()[-8000:].decode(errors="replace")
        except OSError:
            return False
        last = tail.rsplit("=== start", 1)[-1]
        return "received SIGTERM" in last or "received SIGINT" in last

    def wait_exit(self, timeout: float) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass

    def exit_status(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def death(self) -> str:
        return f"broker died (exit {self.exit_status()})"

    def stop(self, timeout: float = 10.0) -> str:
        """SIGTERM, wait; SIGKILL if it does not stop. Returns a note if not clean."""
        note = ""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                    if self.proc.returncode != 0:
                        note = f"broker exited {self.proc.returncode} on SIGTERM, not 0"
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
                    note = f"broker did not stop {timeout:g}s after SIGTERM (killed)"
            self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        return note


class ExternalBroker:
    """A broker someone else runs (--bootstrap), e.g. Tansu while developing."""

    def __init__(self, bootstrap: str):
        self._bootstrap = bootstrap
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return self._bootstrap

    def start(self) -> None:
        host, port = self._bootstrap.rsplit(":", 1)
        if not port_open(host, int(port), 2):
            raise BrokerError(f"nothing listens on {self._bootstrap}")

    def alive(self) -> bool:
        return True

    def stopped_from_outside(self) -> bool:
        return False

    def wait_exit(self, timeout: float) -> None:
        pass

    def exit_status(self) -> int | None:
        return None

    def death(self) -> str:
        return "broker died"

    def stop(self, timeout: float = 10.0) -> str:
        return ""
