"""The cluster harness itself: a real ZooKeeper starts, serves, restarts with its data;
the TCP proxy forwards and, when cut, makes a ZooKeeper session expire; a KwireCluster's
processes start, stop, pause and come back; and three
brokers register in ZooKeeper and Metadata lists them all."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest
from cluster_harness import (
    KwireCluster,
    TcpProxy,
    ZooKeeperServer,
    four_letter_word,
    wait_until,
    zk_client,
)
from confluent_kafka.admin import AdminClient
from conftest import wait_for_api_versions
from kazoo.client import KazooState
from kazoo.exceptions import NoNodeError

# --------------------------------------------------------------------------------- ZooKeeper


def test_zookeeper_serves_and_chroots_keep_tests_apart(zookeeper: ZooKeeperServer, zk_chroot: str) -> None:
    assert four_letter_word(zookeeper.port, "ruok") == "imok"
    assert "Mode: standalone" in four_letter_word(zookeeper.port, "srvr")
    assert zookeeper.connect_string == f"127.0.0.1:{zookeeper.port}"
    print(f"ZooKeeper start: {zookeeper.start_seconds[0]:.2f}s")
    assert zookeeper.start_seconds[0] < 30
    with zk_client(zookeeper.connect_string) as root:
        root.create(zk_chroot)
        other = zk_chroot + "-other"
        root.create(other)
    with zk_client(zookeeper.connect_string + zk_chroot) as mine, \
            zk_client(zookeeper.connect_string + other) as theirs:
        mine.create("/brokers/ids/1", b"{}", makepath=True)
        assert mine.get_children("/brokers/ids") == ["1"]
        assert theirs.exists("/brokers") is None
    with zk_client(zookeeper.connect_string) as root:
        assert root.get(zk_chroot + "/brokers/ids/1")[0] == b"{}"


@pytest.mark.parametrize("run", ["a", "b"])
def test_zk_chroot_is_unique_per_test(run: str, zk_chroot: str, request: pytest.FixtureRequest) -> None:
    assert zk_chroot.startswith(f"/kwire-test_zk_chroot_is_unique_per_test_{run}_-")
    seen = request.config.stash.setdefault(_CHROOTS, set())
    assert zk_chroot not in seen
    seen.add(zk_chroot)


_CHROOTS = pytest.StashKey[set]()


def test_zookeeper_restart_keeps_its_data_and_port(zookeeper_server: ZooKeeperServer) -> None:
    port = zookeeper_server.port
    with zk_client(zookeeper_server.connect_string) as zk:
        zk.create("/kept", b"before")
    # SIGTERM: the JVM exits 128 + 15.
    assert zookeeper_server.stop() == 143
    assert not zookeeper_server.running
    with pytest.raises(OSError):
        four_letter_word(port, "ruok")
    zookeeper_server.start()
    assert zookeeper_server.port == port
    with zk_client(zookeeper_server.connect_string) as zk:
        assert zk.get("/kept")[0] == b"before"
        zk.set("/kept", b"after")
    zookeeper_server.kill()
    zookeeper_server.restart()
    with zk_client(zookeeper_server.connect_string) as zk:
        assert zk.get("/kept")[0] == b"after"
    print("ZooKeeper starts: " + ", ".join(f"{s:.2f}s" for s in zookeeper_server.start_seconds))
    assert len(zookeeper_server.start_seconds) == 3


# --------------------------------------------------------------------------------- TcpProxy


def test_proxy_forwards_cut_closes_and_refuses_restore_forwards(zookeeper: ZooKeeperServer) -> None:
    with TcpProxy(zookeeper.port) as proxy:
        assert four_letter_word(proxy.port, "ruok") == "imok"
        # An open connection through the proxy (ZooKeeper waits for its 4-letter word).
        held = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        wait_until(lambda: proxy.accepted == 2, 5, message="second connection forwarded")
        proxy.cut()
        assert proxy.is_cut
        try:
            assert held.recv(1) == b""  # closed by the cut, not timed out
        except ConnectionResetError:
            pass
        finally:
            held.close()
        # New connections are accepted and closed at once: nothing reaches ZooKeeper.
        assert four_letter_word(proxy.port, "ruok") == ""
        assert proxy.accepted == 2
        proxy.restore()
        assert four_letter_word(proxy.port, "ruok") == "imok"
        assert proxy.accepted == 3
    with pytest.raises(OSError):
        four_letter_word(proxy.port, "ruok", timeout=1)


def test_cut_proxy_expires_the_session_and_its_ephemeral_node(zookeeper: ZooKeeperServer, zk_chroot: str) -> None:
    connect = zookeeper.connect_string + zk_chroot
    with zk_client(zookeeper.connect_string) as root:
        root.create(zk_chroot)
    with TcpProxy(zookeeper.port) as proxy, zk_client(connect) as observer, \
            zk_client(proxy.address + zk_chroot, timeout=2.0) as cut_off:
        states: list[str] = []
        cut_off.add_listener(states.append)
        cut_off.create("/brokers/ids/1", b"{}", ephemeral=True, makepath=True)
        assert observer.exists("/brokers/ids/1") is not None
        gone = threading.Event()

        def watch(children: list[str]) -> None:
            if "1" not in children:
                gone.set()

        observer.ChildrenWatch("/brokers/ids", watch)
        cut_at = time.monotonic()
        proxy.cut()
        wait_until(lambda: KazooState.SUSPENDED in states, 5, message="client suspended")
        # The server expires the session after its timeout (2 s) and deletes the node.
        assert gone.wait(10), "the ephemeral node outlived its session"
        expired_after = time.monotonic() - cut_at
        print(f"ephemeral node gone {expired_after:.2f}s after the cut")
        assert 1.5 < expired_after < 10
        assert observer.exists("/brokers/ids/1") is None
        # A client learns of the expiry only when it reaches the server again.
        assert KazooState.LOST not in states
        proxy.restore()
        wait_until(lambda: KazooState.LOST in states, 10, message="client saw its session lost")
        wait_until(lambda: cut_off.connected, 10, message="client reconnected with a new session")
        with pytest.raises(NoNodeError):
            cut_off.get("/brokers/ids/1")


# ------------------------------------------------------------------------------ KwireCluster


def _answers(port: int, timeout: float = 1.0) -> bool:
    try:
        wait_for_api_versions(port, timeout)
        return True
    except TimeoutError:
        return False


def test_cluster_processes_stop_kill_pause_restart_add(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    """Process control only: this holds whether or not the brokers act as a cluster."""
    cluster = kwire_cluster_factory(2, overrides={"num.partitions": "2"}, proxied=True)
    assert cluster.ids == [1, 2]
    b1, b2 = cluster.broker(1), cluster.broker(2)
    assert cluster.bootstrap == f"127.0.0.1:{b1.port},127.0.0.1:{b2.port}"
    assert b1.overrides["broker.id"] == "1" and b1.overrides["num.partitions"] == "2"
    # Each broker reaches ZooKeeper through its own proxy.
    assert b1.overrides["zookeeper.connect"] == cluster.proxy(1).address + cluster.chroot
    assert cluster.proxy(1).port != cluster.proxy(2).port

    cluster.pause(2)
    assert not _answers(b2.port, 1.0)
    cluster.resume(2)
    assert _answers(b2.port, 5.0)

    cluster.kill(1)
    assert b1.process is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", b1.port), timeout=1).close()
    cluster.restart(1)
    assert _answers(b1.port, 5.0)

    assert cluster.stop(2) == 0
    cluster.pause(1)
    # restart() resumes a paused broker before its SIGTERM.
    cluster.restart(1)
    b3 = cluster.add_broker()
    assert cluster.ids == [1, 2, 3] and b3.overrides["broker.id"] == "3"
    assert b3.overrides["zookeeper.connect"] == cluster.proxy(3).address + cluster.chroot
    cluster.restart(2)
    assert all(_answers(b.port, 5.0) for b in cluster.brokers.values())


def test_three_brokers_register_and_metadata_lists_them(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    cluster = kwire_cluster_factory(3, overrides={"zookeeper.session.timeout.ms": "6000"})
    # From the root: the brokers create their chroot themselves, as Kafka's do.
    with zk_client(cluster.zookeeper.connect_string) as zk:
        wait_until(
            lambda: sorted(zk.get_children(cluster.chroot + "/brokers/ids")) == ["1", "2", "3"],
            20,
            message="brokers 1, 2, 3 under /brokers/ids",
        )
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "socket.timeout.ms": 10000})

    def three_brokers() -> bool:
        brokers = admin.list_topics(timeout=10).brokers
        return {(b.id, b.port) for b in brokers.values()} == {
            (i, cluster.broker(i).port) for i in cluster.ids
        }

    wait_until(three_brokers, 10, interval=0.2, message="Metadata lists brokers 1, 2, 3")
