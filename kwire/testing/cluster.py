"""`Cluster`: N kwire brokers (broker.id 1..N) and a real ZooKeeper, for tests.

    with Cluster(size=3) as cluster:
        AdminClient({"bootstrap.servers": cluster.bootstrap})
        cluster.brokers[0].kill()      # a crash
        cluster.brokers[0].restart()   # same id, ports and data

The brokers share a ZooKeeper chroot of their own, so that clusters on one ZooKeeper
never meet. Standard library only.
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from kwire.testing._processes import Service
from kwire.testing.broker import Broker
from kwire.testing.zookeeper import ZooKeeperServer

# Until every broker's Metadata names all N brokers and a controller.
FORMATION_TIMEOUT = 30.0


def cluster_defaults(size: int) -> dict[str, str]:
    """What every broker of a test cluster gets unless the test overrides it: replicated
    internal topics (a group or a transaction survives a killed broker), few of their
    partitions (quick to elect), and a ZooKeeper session short enough that a killed broker
    is noticed, and its id free again for the restart, within seconds (Kafka: 18 s)."""
    replicas = str(min(size, 3))
    return {
        "zookeeper.session.timeout.ms": "4000",
        "default.replication.factor": replicas,
        "offsets.topic.replication.factor": replicas,
        "offsets.topic.num.partitions": "3",
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": str(min(size, 2)),
        "transaction.state.log.num.partitions": "3",
    }


class Cluster(Service):
    """`size` kwire broker processes coordinated through ZooKeeper.

    `zookeeper`: a connect string (`host:port`) of a running ZooKeeper, or a
    ZooKeeperServer; without it the cluster starts one of its own (Debian's `zookeeper`
    package and java: ZooKeeperUnavailable if missing). `config`: overrides for every
    broker, over cluster_defaults(). `brokers[i]` is a Broker (broker.id i + 1) with stop/kill/restart.
    """

    def __init__(
        self,
        size: int = 3,
        config: Mapping[str, object] | None = None,
        *,
        directory: str | os.PathLike[str] | None = None,
        zookeeper: str | ZooKeeperServer | None = None,
        chroot: str | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster has at least one broker, not {size}")
        self._own_directory = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="kwire-cluster-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self._zookeeper = zookeeper
        self._own_zookeeper: ZooKeeperServer | None = None
        self.chroot = chroot or f"/kwire-{uuid.uuid4().hex[:12]}"
        self.config = {**cluster_defaults(size), **(config or {})}
        # Brokers are made at start(), once ZooKeeper's address is known.
        self.brokers: list[Broker] = []
        self.size = size

    @property
    def zookeeper_connect(self) -> str:
        """`zookeeper.connect` of the brokers, chroot included."""
        zk = self._zookeeper if self._zookeeper is not None else self._own_zookeeper
        if zk is None:
            raise RuntimeError("the cluster has not started")
        address = zk if isinstance(zk, str) else zk.connect_string
        return address + self.chroot

    @property
    def bootstrap(self) -> str:
        """Every running broker's `host:port`, comma-separated (bootstrap.servers)."""
        return ",".join(b.bootstrap for b in self.brokers if b.listeners)

    def broker(self, broker_id: int) -> Broker:
        """The broker with this broker.id."""
        for b in self.brokers:
            if b.broker_id == broker_id or b.config.get("broker.id") == str(broker_id):
                return b
        raise KeyError(f"no broker {broker_id} in this cluster")

    def start(self) -> Cluster:
        """Start ZooKeeper (if the cluster has its own) and every broker, in parallel, and
        wait until each broker's Metadata lists them all with a controller."""
        if self._zookeeper is None and self._own_zookeeper is None:
            self._own_zookeeper = ZooKeeperServer(self.directory / "zookeeper")
        if self._own_zookeeper is not None and not self._own_zookeeper.running:
            self._own_zookeeper.start()
        if not self.brokers:
            for i in range(self.size):
                config = {
                    **self.config,
                    "broker.id": i + 1,
                    "zookeeper.connect": self.zookeeper_connect,
                }
                directory = self.directory / f"broker-{i + 1}"
                self.brokers.append(Broker(config, directory=directory))
        try:
            run_parallel([b.start for b in self.brokers if not b.running])
            self.wait_for_brokers()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_brokers(self, timeout: float = FORMATION_TIMEOUT) -> None:
        """Wait until every running broker's Metadata names all running brokers and a
        controller (TimeoutError otherwise): after a start or a restart."""
        running = [b for b in self.brokers if b.running]
        want = {b.broker_id for b in running}
        deadline = time.monotonic() + timeout
        last: object = None
        for b in running:
            while True:
                try:
                    brokers, controller = metadata_brokers(b.host, b.port)
                    last = (sorted(brokers), controller)
                    if want <= set(brokers) and controller in want:
                        break
                except OSError as e:
                    last = e
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"broker {b.broker_id} did not see brokers {sorted(want)} and a "
                        f"controller within {timeout:g}s (last: {last!r}); log:\n{b.log_text(3000)}"
                    )
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM every broker (in parallel), then ZooKeeper if it is the cluster's own."""
        run_parallel([b.stop for b in self.brokers])
        if self._own_zookeeper is not None:
            self._own_zookeeper.stop()

    def __repr__(self) -> str:
        return f"<kwire.testing.Cluster {self.bootstrap or 'not started'}>"


def metadata_brokers(host: str, port: int, timeout: float = 2.0) -> tuple[list[int], int]:
    """Ask one broker for Metadata v1 (no topics): its brokers' ids and the controller id.
    On the wire by hand, so that kwire.testing needs no Kafka client."""
    header = struct.pack(">hhih", 3, 1, 1, len(b"kwire.testing")) + b"kwire.testing"
    request = header + struct.pack(">i", 0)  # topics: an empty array (none, in v1)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exactly(s, 4))
        body = _recv_exactly(s, size)
    # correlation id, then brokers [node_id, host, port, rack], then controller_id.
    pos = 4
    (count,) = struct.unpack_from(">i", body, pos)
    pos += 4
    ids = []
    for _ in range(count):
        (node_id,) = struct.unpack_from(">i", body, pos)
        pos += 4
        (host_len,) = struct.unpack_from(">h", body, pos)
        pos += 2 + host_len + 4
        (rack_len,) = struct.unpack_from(">h", body, pos)
        pos += 2 + max(rack_len, 0)
        ids.append(node_id)
    (controller,) = struct.unpack_from(">i", body, pos)
    return ids, controller


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return bytes(data)


def run_parallel(calls: list[Callable[[], object]], timeout: float = 120.0) -> None:
    """Run the calls in threads and wait for all; the first exception is raised after.
    Each call should bound its own waits (Broker's start and stop timeouts do);
    TimeoutError if one still runs after `timeout` seconds."""
    errors: list[BaseException] = []

    def run(call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in calls]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    if any(t.is_alive() for t in threads):
        raise TimeoutError(f"calls still running after {timeout:g}s: {calls}")
