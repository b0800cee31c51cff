"""`--cluster N`: a real ZooKeeper for the run and a fresh N-broker kwire cluster per client.

ZooKeeper is Debian's `zookeeper` package, started as tests/cluster_harness.py does (that
module is a pytest plugin importing the tests' conftest, so compat does not import it): a
standalone server on a free loopback port with a temporary data dir. Each client's
cluster lives under a chroot of its own (`/compat/<run>-<client>-<start>`), so clusters
of clients running in parallel, or a cluster started again after a death, never see each
other's znodes.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from compat.broker import BrokerError, KwireBroker, free_port

JAVA_DIR = Path("/usr/share/java")
# zookeeper.jar's manifest names its own dependencies; log4j 1.2 is the one SLF4J binding
# added (with several on the class path SLF4J would pick one at random).
ZOOKEEPER_CLASSPATH = ":".join(
    str(JAVA_DIR / jar) for jar in ("zookeeper.jar", "slf4j-log4j12.jar", "log4j-1.2.jar"))
# A fast start on a small machine: a small heap, the serial collector, C1 only.
ZOOKEEPER_JVM_FLAGS = ["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
ZOOKEEPER_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File=${zookeeper.log.dir}/zookeeper.log
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] %m%n
"""


def cluster_overrides(n: int) -> list[str]:
    """The replication settings of an n-broker cluster: replication factor 3 (or n, if
    fewer brokers), and an in-sync minimum of 2, for every topic the scenarios create and
    for the internal topics."""
    rf, isr = min(3, n), min(2, n)
    return [f"default.replication.factor={rf}",
            f"offsets.topic.replication.factor={rf}",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={isr}",
            f"min.insync.replicas={isr}"]


def _four_letter_word(port: int, command: str, timeout: float = 2.0) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(command.encode())
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


class ZooKeeper:
    """A standalone ZooKeeper process on a free loopback port with a temporary data dir."""

    def __init__(self, log_dir: Path, start_timeout: float = 60.0) -> None:
        self.log_dir = log_dir
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.dir: str | None = None
        self.port = 0
        self.stopping = False

    @property
    def connect(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start and wait until it serves (`srvr` names a mode); BrokerError otherwise."""
        if shutil.which("java") is None or not (JAVA_DIR / "zookeeper.jar").exists():
            raise BrokerError("ZooKeeper is not installed (apt-get install zookeeper, and a JDK)")
        self.dir = tempfile.mkdtemp(prefix="kwire-compat-zk-")
        self.port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cfg = Path(self.dir) / "zoo.cfg"
        # minSessionTimeout defaults to 2 * tickTime: 500 ms ticks allow short sessions.
        cfg.write_text(f"tickTime=500\ndataDir={self.dir}/data\nclientPort={self.port}\n"
                       "clientPortAddress=127.0.0.1\nmaxSessionTimeout=60000\n"
                       "admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr\n")
        (Path(self.dir) / "log4j.properties").write_text(LOG4J_PROPERTIES)
        cmd = ["java", *ZOOKEEPER_JVM_FLAGS, f"-Dzookeeper.log.dir={self.log_dir}",
               f"-Dlog4j.configuration=file:{self.dir}/log4j.properties",
               "-cp", ZOOKEEPER_CLASSPATH, ZOOKEEPER_MAIN, str(cfg)]
        with open(self.log_dir / "zookeeper.out", "ab") as out:
            out.write(f"\n=== start {' '.join(cmd)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise BrokerError(f"ZooKeeper exited with {self.proc.returncode} at start "
                                  f"(see {self.log_dir}/zookeeper.out)")
            with contextlib.suppress(OSError):
                # `ruok` answers once the port is open; `srvr` says whether it serves.
                if _four_letter_word(self.port, "ruok") == "imok" and \
                        "Mode:" in _four_letter_word(self.port, "srvr"):
                    return
            if time.monotonic() >= deadline:
                self.stop()
                raise BrokerError(f"ZooKeeper not serving in {self.start_timeout:g}s "
                                  f"(see {self.log_dir}/zookeeper.log)")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_status(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def metadata_brokers(port: int, timeout: float = 2.0) -> tuple[list[int], int]:
    """Ask one broker for Metadata v1 with no topics: (broker ids, controller id).

    Hand-encoded (a dozen bytes) so the harness needs no Kafka client of its own."""
    client_id = b"compat-harness"
    body = struct.pack(">hhih", 3, 1, 1, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(body)) + body)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack_from(">i", data)[0]:
            chunk = s.recv(65536)
            if not chunk:
                raise OSError("connection closed before the Metadata answer")
            data += chunk
    pos = 8  # size, correlation id
    (count,) = struct.unpack_from(">i", data, pos)
    pos += 4
    ids = []
    for _ in range(count):
        node_id, host_len = struct.unpack_from(">ih", data, pos)
        pos += 6 + host_len + 4  # host, port
        (rack_len,) = struct.unpack_from(">h", data, pos)
        pos += 2 + max(rack_len, 0)
        ids.append(node_id)
    (controller,) = struct.unpack_from(">i", data, pos)
    return sorted(ids), controller


class KwireCluster:
    """N kwire brokers (broker.id 1..N) under one ZooKeeper chroot, each a KwireBroker with
    its own port, log dir and log file; the same interface as KwireBroker for run.py."""

    def __init__(self, zookeeper: ZooKeeper, n: int, log_dir: Path, chroot_prefix: str,
                 overrides: list[str] | None = None, start_timeout: float = 60.0) -> None:
        self.zookeeper = zookeeper
        self.n = n
        self.log_dir = log_dir
        self.chroot_prefix = chroot_prefix
        self.overrides = list(overrides or [])
        self.start_timeout = start_timeout
        self.members: dict[int, KwireBroker] = {}
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.members.values())

    def start(self) -> None:
        """Start every broker in parallel, then wait until each one's Metadata lists all N
        brokers and a controller (clients then see the whole cluster from their first
        request, and the internal topics can get their full replication factor)."""
        if not self.zookeeper.alive():
            raise BrokerError(self._zookeeper_death())
        self.starts += 1
        chroot = f"{self.chroot_prefix}-{self.starts}"
        self.members = {}
        for broker_id in range(1, self.n + 1):
            self.members[broker_id] = KwireBroker(
                self.log_dir / f"broker-{broker_id}.log",
                [f"broker.id={broker_id}",
                 f"zookeeper.connect={self.zookeeper.connect}{chroot}",
                 *cluster_overrides(self.n), *self.overrides],
                start_timeout=self.start_timeout)
        errors = _parallel([b.start for b in self.members.values()])
        if errors:
            raise BrokerError("; ".join(f"broker {i}: {e}" for i, e in errors.items()
                                        if e is not None))
        want = list(range(1, self.n + 1))
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while True:
            pending = []
            for broker_id, b in self.members.items():
                if not b.alive():
                    raise BrokerError(f"broker {broker_id} exited with {b.exit_status()} at start "
                                      f"(see {b.log_path})")
                try:
                    ids, controller = metadata_brokers(b.port)
                except (OSError, struct.error) as e:
                    pending.append(broker_id)
                    last = f"broker {broker_id}: {e}"
                    continue
                if ids != want or controller not in want:
                    pending.append(broker_id)
                    last = f"broker {broker_id} lists brokers {ids}, controller {controller}"
            if not pending:
                return
            if not self.zookeeper.alive():
                raise BrokerError(self._zookeeper_death())
            if time.monotonic() >= deadline:
                raise BrokerError(f"cluster not formed in {self.start_timeout:g}s ({last}; "
                                  f"see {self.log_dir})")
            time.sleep(0.1)

    def alive(self) -> bool:
        return bool(self.members) and self.zookeeper.alive() and \
            all(b.alive() for b in self.members.values())

    def _dead(self) -> list[tuple[int, KwireBroker]]:
        return [(i, b) for i, b in self.members.items() if not b.alive()]

    def stopped_from_outside(self) -> bool:
        """A member stopped by another process's SIGTERM/SIGINT, and no member crashed
        and ZooKeeper is up (see KwireBroker.stopped_from_outside)."""
        if not self.members or not self.zookeeper.alive():
            return False
        outside = [b.stopped_from_outside() for b in self.members.values()]
        crashed = [i for i, b in self._dead() if not b.stopped_from_outside()]
        return any(outside) and not crashed

    def wait_exit(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for b in self.members.values():
            if b.stopped_from_outside():
                b.wait_exit(max(0.1, deadline - time.monotonic()))

    def exit_status(self) -> int | None:
        dead = self._dead()
        return dead[0][1].exit_status() if dead else None

    def death(self) -> str:
        """Who died, e.g. `broker 2 died (exit -9)` or `ZooKeeper died (exit 1)`."""
        dead = self._dead()
        if dead:
            return ", ".join(f"broker {i} died (exit {b.exit_status()})" for i, b in dead)
        if not self.zookeeper.alive():
            return self._zookeeper_death()
        return "no broker died"

    def _zookeeper_death(self) -> str:
        return f"ZooKeeper died (exit {self.zookeeper.exit_status()})"

    def stop(self, timeout: float = 30.0) -> str:
        """SIGTERM every broker at once (each a controlled shutdown), wait; SIGKILL those
        that do not stop. Returns a note naming each broker that did not stop cleanly."""
        notes: dict[int, str] = {}

        def stop_one(broker_id: int, b: KwireBroker) -> None:
            note = b.stop(timeout)
            if note:
                notes[broker_id] = note

        _parallel([lambda i=i, b=b: stop_one(i, b) for i, b in self.members.items()])
        return "; ".join(f"broker {i}: {notes[i]}" for i in sorted(notes))


def _parallel(calls: list[Callable[[], object]]) -> dict[int, BaseException | None]:
    """Run the calls in threads and wait for all; the exceptions by call index (none if
    all returned)."""
    errors: dict[int, BaseException | None] = {}

    def run(k: int, call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as e:  # reported to the caller
            errors[k + 1] = e

    threads = [threading.Thread(target=run, args=(k, c)) for k, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()  # every call bounds its own waits
    return errors
