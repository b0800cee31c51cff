"""Cluster test harness: a real ZooKeeper, a loopback TCP proxy and N kwire brokers.

Registered as a pytest plugin by conftest.py, so every test module can use the fixtures:

- `zookeeper` (session): one real ZooKeeper server for the whole run;
- `zk_chroot`: a chroot path unique to the test (`/kwire-<test>-<n>`), so tests sharing
  the session server never see each other's znodes;
- `zookeeper_server`: a ZooKeeper of the test's own, for tests that stop or restart it;
- `kwire_cluster_factory`: `make(n=3, overrides=None, proxied=False, zookeeper=None)`
  starts a `KwireCluster` of broker processes with broker.id 1..n.

And plain helpers: `ZooKeeperServer` (kwire.testing.zookeeper's), `TcpProxy`, `KwireCluster`,
`wait_until`, `zk_client`. ZooKeeper is Debian's `zookeeper` package (scripts/test-all
installs it).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from conftest import BrokerProcess

# The ZooKeeper launcher is kwire.testing's (users' Cluster() runs the same one).
from kwire.testing.cluster import metadata_brokers, run_parallel
from kwire.testing.zookeeper import (
    ZOOKEEPER_START_TIMEOUT,
    ZooKeeperServer,
    four_letter_word,
)

if TYPE_CHECKING:
    from kazoo.client import KazooClient

T = TypeVar("T")

# How long start() waits for every running broker to name the controller (seconds).
CONTROLLER_WAIT = 15.0

def wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.05, message: str = ""
) -> T:
    """Poll `predicate` until it returns a truthy value (returned) or `timeout` seconds
    pass (AssertionError naming `message` and the last exception the predicate raised)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except Exception as e:  # a predicate may fail while the cluster settles
            last_error = e
        else:
            if value:
                return value
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error is not None else ""
            raise AssertionError(f"not within {timeout}s: {message or predicate!r}{detail}")
        time.sleep(interval)


@contextlib.contextmanager
def zk_client(connect_string: str, timeout: float = 10.0, **kwargs: Any) -> Iterator[KazooClient]:
    """A started kazoo client (`timeout` is its session timeout in seconds), stopped and
    closed on exit."""
    from kazoo.client import KazooClient

    client = KazooClient(hosts=connect_string, timeout=timeout, **kwargs)
    client.start(timeout=ZOOKEEPER_START_TIMEOUT)
    try:
        yield client
    finally:
        client.stop()
        client.close()


class TcpProxy:
    """A loopback TCP proxy on a free port forwarding to `target_port`, in threads (usable
    from sync tests). `cut()` closes every open connection and refuses new ones (accepted,
    then closed at once) until `restore()`: to the client, the server is unreachable."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        # Connections forwarded since the start (for tests of the proxy itself).
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept_loop, name=f"tcp-proxy-{self.port}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            sockets = list(self._sockets)
            self._sockets.clear()
        for s in sockets:
            _close(s)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._cut = True
            sockets = list(self._sockets)
            self._sockets.clear()
        for s in sockets:
            _close(s)
        # shutdown() wakes the thread blocked in accept(); close() alone may not.
        _close(self._listener)
        self._thread.join(5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refuse = self._cut or self._closed
            if refuse:
                _close(client)
                if self._closed:
                    return
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._cut:
                    _close(client)
                    _close(upstream)
                    continue
                self._sockets.update((client, upstream))
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        # One side ended or failed: end both, as a dropped link would.
        with self._lock:
            self._sockets.discard(src)
            self._sockets.discard(dst)
        _close(src)
        _close(dst)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        s.close()


class KwireCluster:
    """N kwire broker processes (broker.id 1..N) coordinated through one ZooKeeper chroot,
    each with its own log dir, port and log file; optionally each through its own
    TcpProxy to ZooKeeper (to cut one broker's session)."""

    def __init__(
        self,
        base_dir: Path,
        zookeeper: ZooKeeperServer,
        chroot: str,
        n: int = 3,
        overrides: dict[str, str] | None = None,
        proxied: bool = False,
        expected_log: list[re.Pattern[str]] | None = None,
    ) -> None:
        self.base_dir = base_dir
        self.zookeeper = zookeeper
        self.chroot = chroot
        self.overrides = dict(overrides or {})
        self.proxied = proxied
        self.expected_log = list(expected_log or [])
        self.brokers: dict[int, BrokerProcess] = {}
        self.proxies: dict[int, TcpProxy] = {}
        self._paused: set[int] = set()
        base_dir.mkdir(parents=True, exist_ok=True)
        for broker_id in range(1, n + 1):
            self._make_broker(broker_id)

    @property
    def connect_string(self) -> str:
        """`zookeeper.connect` as a client outside the cluster uses it (no proxy)."""
        return self.zookeeper.connect_string + self.chroot

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers.values())

    @property
    def ids(self) -> list[int]:
        return sorted(self.brokers)

    def broker(self, broker_id: int) -> BrokerProcess:
        return self.brokers[broker_id]

    def proxy(self, broker_id: int) -> TcpProxy:
        """The proxy between this broker and ZooKeeper (only with proxied=True)."""
        return self.proxies[broker_id]

    def _make_broker(self, broker_id: int, overrides: dict[str, str] | None = None) -> BrokerProcess:
        zk = self.zookeeper.connect_string
        if self.proxied:
            proxy = TcpProxy(self.zookeeper.port)
            self.proxies[broker_id] = proxy
            zk = proxy.address
        broker = BrokerProcess(
            self.base_dir / f"broker-{broker_id}",
            {
                **self.overrides,
                **(overrides or {}),
                "broker.id": str(broker_id),
                "zookeeper.connect": zk + self.chroot,
            },
        )
        broker.expected_log.extend(self.expected_log)
        self.brokers[broker_id] = broker
        return broker

    def start(self) -> KwireCluster:
        """Start every broker not yet running, in parallel, each waited for until it
        answers ApiVersions (BrokerProcess.start); then, for up to CONTROLLER_WAIT seconds,
        until every running broker names the controller. A broker answers Metadata as soon
        as it listens, with controller -1 until the election reaches it, and librdkafka's
        AdminClient that saw -1 first may not ask again within a minute (CreateTopics right
        after start hung in CI). Not an error if it does not happen: a test may start a
        cluster that cannot elect one."""
        run_parallel([b.start for b in self.brokers.values() if b.process is None])
        deadline = time.monotonic() + CONTROLLER_WAIT
        running = [b for b in self.brokers.values() if b.process is not None]
        while running and time.monotonic() < deadline:
            try:
                if all(metadata_brokers("127.0.0.1", b.port)[1] >= 0 for b in running):
                    break
            except (OSError, ValueError, struct.error):
                pass
            time.sleep(0.05)
        return self

    def add_broker(self, overrides: dict[str, str] | None = None, start: bool = True) -> BrokerProcess:
        """One more broker, with the next id (a 4th for a cluster of 3)."""
        broker = self._make_broker(max(self.brokers, default=0) + 1, overrides)
        return broker.start() if start else broker

    def kill(self, broker_id: int) -> None:
        """SIGKILL: a crash."""
        self._paused.discard(broker_id)
        self.brokers[broker_id].kill()

    def stop(self, broker_id: int) -> int:
        """SIGTERM (a controlled shutdown) and wait; the exit code."""
        self.resume(broker_id)
        return self.brokers[broker_id].stop()

    def restart(self, broker_id: int) -> BrokerProcess:
        """SIGTERM if running, then start again with the same data dir, port and id."""
        self.resume(broker_id)
        return self.brokers[broker_id].restart()

    def pause(self, broker_id: int) -> None:
        """SIGSTOP: the process freezes with its sockets open (a stalled broker)."""
        process = self.brokers[broker_id].process
        assert process is not None, f"broker {broker_id} is not running"
        os.kill(process.pid, signal.SIGSTOP)
        self._paused.add(broker_id)

    def resume(self, broker_id: int) -> None:
        """SIGCONT a paused broker (no-op otherwise)."""
        process = self.brokers[broker_id].process
        if broker_id in self._paused and process is not None:
            os.kill(process.pid, signal.SIGCONT)
        self._paused.discard(broker_id)

    def teardown_problems(self) -> list[str]:
        """Stop every broker (in parallel: SIGTERM to all) and close the proxies; what
        conftest's teardown check objects to, per broker (empty: clean)."""
        for broker_id in list(self._paused):
            self.resume(broker_id)
        results: dict[int, list[str]] = {}

        def check(broker_id: int) -> None:
            results[broker_id] = self.brokers[broker_id].teardown_problems()

        run_parallel([lambda i=i: check(i) for i in self.brokers])
        for proxy in self.proxies.values():
            proxy.close()
        return [f"[broker {i}] {p}" for i in sorted(results) for p in results[i]]


# ----------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    """One ZooKeeper for the session; tests keep apart through `zk_chroot`."""
    server = ZooKeeperServer(tmp_path_factory.mktemp("zookeeper")).start()
    yield server
    server.stop()


@pytest.fixture
def zookeeper_server(tmp_path: Path) -> Iterator[ZooKeeperServer]:
    """A ZooKeeper of this test alone, which the test may stop, kill or restart."""
    server = ZooKeeperServer(tmp_path / "zookeeper").start()
    yield server
    server.stop()


_chroot_numbers = itertools.count(1)


@pytest.fixture
def zk_chroot(request: pytest.FixtureRequest) -> str:
    """A chroot unique to this test, like `/kwire-test_name-7`. Not created here: a broker
    creates its chroot itself, as Kafka does."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    return f"/kwire-{name}-{next(_chroot_numbers)}"


@pytest.fixture
def kwire_cluster_factory(
    request: pytest.FixtureRequest, tmp_path: Path, zk_chroot: str
) -> Iterator[Callable[..., KwireCluster]]:
    """`make(n=3, overrides=None, proxied=False, zookeeper=None) -> KwireCluster`, started.
    Without `zookeeper` the session server is used. At teardown every broker is stopped
    and conftest's log and exit-code checks run (`expect_broker_log` is honoured)."""
    clusters: list[KwireCluster] = []
    marked = [re.compile(p) for m in request.node.iter_markers("expect_broker_log") for p in m.args]

    def make(
        n: int = 3,
        overrides: dict[str, str] | None = None,
        proxied: bool = False,
        zookeeper: ZooKeeperServer | None = None,
    ) -> KwireCluster:
        server = zookeeper if zookeeper is not None else request.getfixturevalue("zookeeper")
        k = len(clusters)
        cluster = KwireCluster(
            tmp_path / f"cluster-{k}",
            server,
            zk_chroot if k == 0 else f"{zk_chroot}-{k}",
            n,
            overrides,
            proxied,
            marked,
        )
        clusters.append(cluster)
        return cluster.start()

    yield make
    problems: list[str] = []
    for cluster in clusters:
        problems += cluster.teardown_problems()
    if problems:
        pytest.fail("cluster teardown check failed:\n" + "\n".join(problems), pytrace=False)


__all__ = [
    "KwireCluster",
    "TcpProxy",
    "ZooKeeperServer",
    "four_letter_word",
    "wait_until",
    "zk_client",
]
