"""A real ZooKeeper server for tests: Debian's `zookeeper` package (zookeeper.jar under
/usr/share/java) run standalone by `java` on a free loopback port, with its own data dir.

Used by kwire.testing.Cluster and by kwire's own cluster harness (tests/cluster_harness.py).
Standard library only: loaded by the pytest plugin in every test run.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from kwire.testing._processes import track, untrack

ZOOKEEPER_START_TIMEOUT = 30.0
ZOOKEEPER_STOP_TIMEOUT = 10.0

JAVA_DIR = Path("/usr/share/java")
# zookeeper.jar's manifest names its own dependencies (netty, jute, slf4j-api, ...). The
# only thing added is one SLF4J binding, log4j 1.2 (both dependencies of Debian's
# libzookeeper-java): with all of /usr/share/java/* on the class path SLF4J would pick
# among five bindings at random, and with none it logs nothing.
ZOOKEEPER_JARS = ("zookeeper.jar", "slf4j-log4j12.jar", "log4j-1.2.jar")
ZOOKEEPER_CLASSPATH = ":".join(str(JAVA_DIR / jar) for jar in ZOOKEEPER_JARS)
# A fast start on a small machine: a small heap, the serial collector, C1 only.
ZOOKEEPER_JVM_FLAGS = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto"]
ZOOKEEPER_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File=${zookeeper.log.dir}/zookeeper.log
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] %m%n
"""


class ZooKeeperUnavailable(RuntimeError):
    """java or Debian's ZooKeeper jars are not installed (the message says what to install)."""


def zookeeper_missing() -> str | None:
    """Why a ZooKeeperServer cannot start here (None: it can)."""
    if shutil.which("java") is None:
        return "java is not installed (apt-get install zookeeper brings a JRE)"
    missing = [jar for jar in ZOOKEEPER_JARS if not (JAVA_DIR / jar).exists()]
    if missing:
        return f"ZooKeeper is not installed ({', '.join(missing)} missing from {JAVA_DIR}: apt-get install zookeeper)"
    return None


def free_port() -> int:
    """A loopback port free right now (for servers that cannot bind port 0 and say which)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def four_letter_word(port: int, command: str, timeout: float = 2.0) -> str:
    """Send a ZooKeeper four-letter command (ruok, srvr, stat, cons) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(command.encode())
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


class ZooKeeperServer:
    """A standalone ZooKeeper process on a free loopback port with its own data dir."""

    def __init__(self, base_dir: Path, port: int | None = None, tick_time_ms: int = 500) -> None:
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / "data"
        self.port = port or free_port()
        self.config_path = self.base_dir / "zoo.cfg"
        self.log_path = self.base_dir / "zookeeper.log"
        # The JVM's own stdout/stderr (start-up failures land here, not in log4j's file).
        self.out_path = self.base_dir / "zookeeper.out"
        self.process: subprocess.Popen[bytes] | None = None
        # Seconds from exec to `ruok` -> `imok`, per start.
        self.start_seconds: list[float] = []
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        # minSessionTimeout defaults to 2 * tickTime: 500 ms ticks allow 1 s sessions.
        self.config_path.write_text(
            f"tickTime={tick_time_ms}\n"
            f"dataDir={self.data_dir}\n"
            f"clientPort={self.port}\n"
            "clientPortAddress=127.0.0.1\n"
            "maxSessionTimeout=60000\n"
            "admin.enableServer=false\n"
            "4lw.commands.whitelist=ruok,srvr,stat,cons\n"
        )
        (self.base_dir / "log4j.properties").write_text(LOG4J_PROPERTIES)

    @property
    def connect_string(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> ZooKeeperServer:
        """Start and wait (at most 30 s) until it answers `ruok` with `imok` and serves.
        ZooKeeperUnavailable if java or the jars are missing."""
        missing = zookeeper_missing()
        if missing is not None:
            raise ZooKeeperUnavailable(missing)
        args = [
            "java",
            *ZOOKEEPER_JVM_FLAGS,
            f"-Dzookeeper.log.dir={self.base_dir}",
            f"-Dlog4j.configuration=file:{self.base_dir / 'log4j.properties'}",
            "-cp",
            ZOOKEEPER_CLASSPATH,
            ZOOKEEPER_MAIN,
            str(self.config_path),
        ]
        began = time.monotonic()
        with open(self.out_path, "ab") as out:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        track(self.process)
        deadline = began + ZOOKEEPER_START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                untrack(self.process)
                self.process = None
                raise RuntimeError(
                    f"ZooKeeper exited with code {code} at start; log:\n{self.log_text()}"
                )
            with contextlib.suppress(OSError):
                # `ruok` answers as soon as the port is open; `srvr` says whether it serves.
                if four_letter_word(self.port, "ruok") == "imok" and "Mode:" in four_letter_word(
                    self.port, "srvr"
                ):
                    break
            if time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(
                    f"ZooKeeper did not answer ruok within {ZOOKEEPER_START_TIMEOUT}s; "
                    f"log:\n{self.log_text()}"
                )
            time.sleep(0.05)
        self.start_seconds.append(time.monotonic() - began)
        return self

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 10 s. The exit code (None if it was not running)."""
        if self.process is None:
            return None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(ZOOKEEPER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(ZOOKEEPER_STOP_TIMEOUT)
        untrack(self.process)
        self.process = None
        return code

    def kill(self) -> None:
        """SIGKILL: a crash of the ZooKeeper server."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(ZOOKEEPER_STOP_TIMEOUT)
            untrack(self.process)
            self.process = None

    def restart(self) -> ZooKeeperServer:
        """Stop and start again on the same port with the same data dir (znodes and
        unexpired sessions survive, as in a real ZooKeeper restart)."""
        self.stop()
        return self.start()

    def log_text(self, tail: int = 5000) -> str:
        text = ""
        for path in (self.out_path, self.log_path):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return text[-tail:]

    def __enter__(self) -> ZooKeeperServer:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
