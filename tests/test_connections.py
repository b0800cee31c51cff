"""Connection limits and hardening against a real `kwire serve` process on loopback:
memory of frames being read, idle and half-sent connections, connection limits,
quiet resets, reserved topic names, and refused security settings."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import free_port
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from raw_client import RawClient

TIMEOUT = 30
MAX_REQUEST = 104857600  # Kafka's socket.request.max.bytes default


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def api_versions_frame(correlation_id: int) -> bytes:
    body = struct.pack(">hhih", 18, 0, correlation_id, 1) + b"t"
    return struct.pack(">i", len(body)) + body


def answers_api_versions(sock: socket.socket, correlation_id: int = 7) -> bool:
    sock.sendall(api_versions_frame(correlation_id))
    header = recv_exactly(sock, 8)
    (size, got) = struct.unpack(">ii", header)
    recv_exactly(sock, size - 4)
    return got == correlation_id


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the broker")
        data += chunk
    return data


def closed_by_broker(sock: socket.socket, timeout: float) -> bool:
    """True once the broker closes `sock` (EOF or reset) within `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def produce_ok(bootstrap: str, topic: str, value: bytes = b"v", **config: object) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 20_000, **config})
    errors: list[object] = []
    producer.produce(topic, value, on_delivery=lambda err, msg: errors.append(err))
    assert producer.flush(TIMEOUT) == 0
    assert errors == [None]


# ---- finding 5: a size prefix reserves nothing; queued.max.request.bytes ----------------


@pytest.mark.parametrize("connections", [5, 50])
def test_size_prefix_alone_keeps_rss_near_idle(broker_factory, connections: int) -> None:
    broker = broker_factory()
    produce_ok(broker.bootstrap, "warm-up")  # a broker that has served: its idle size
    idle = rss_mb(broker.process.pid)
    socks = [socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT) for _ in range(connections)]
    try:
        for sock in socks:
            sock.sendall(struct.pack(">i", MAX_REQUEST))  # announces 100 MiB, sends nothing more
        # The broker keeps serving a real client meanwhile.
        produce_ok(broker.bootstrap, "meanwhile")
        time.sleep(0.5)
        held = rss_mb(broker.process.pid)
        print(f"RSS idle {idle:.0f} MB, with {connections} prefix-only connections {held:.0f} MB")
        # Before: the whole frame was allocated at once, 100 MiB each (5: +500 MB).
        assert held < idle + 20
    finally:
        for sock in socks:
            sock.close()


def test_frames_beyond_the_pool_wait_until_it_has_room(broker_factory) -> None:
    """A large frame half sent holds the pool; another large frame waits, then completes."""
    two_mib = 2 * 1024 * 1024
    broker = broker_factory({
        "socket.request.max.bytes": str(two_mib),
        "queued.max.request.bytes": str(two_mib),
        "message.max.bytes": "4000000",
    })
    produce_ok(broker.bootstrap, "big")
    holder = socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT)
    holder.sendall(struct.pack(">i", two_mib) + b"\0" * (1536 * 1024))
    time.sleep(0.5)  # the broker has read it: its buffer now holds the whole pool
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.max.bytes": 4_000_000, "linger.ms": 0})
    delivered: list[object] = []
    producer.produce("big", b"x" * 1_500_000, on_delivery=lambda err, msg: delivered.append(err))
    # Small requests still go through (metadata, answered from each connection's own buffer).
    with socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT) as bystander:
        assert answers_api_versions(bystander)
    assert producer.flush(3) == 1, "a large frame was read while the pool was full"
    holder.close()  # releases the pool: reading resumes
    assert producer.flush(TIMEOUT) == 0
    assert delivered == [None]


# ---- finding 7: a reset with answers owed is not a traceback ----------------------------


def test_reset_with_answers_owed_is_quiet(broker) -> None:
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT)
        # Megabytes of answers owed and none read: the broker is blocked sending them.
        body = struct.pack(">hhih", 18, 2, 1, 1) + b"t"
        sock.sendall((struct.pack(">i", len(body)) + body) * 30000)
        time.sleep(0.7)
        # Reset (RST, not FIN) while the answers are being written.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    with socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT) as sock:
        assert answers_api_versions(sock)
    time.sleep(0.5)
    log = broker.log_text()
    assert "Traceback" not in log and " ERROR " not in log, log


# ---- finding 8: idle connections, connection limits, reserved names, RSS ----------------


def test_idle_and_half_sent_connections_are_closed(broker_factory) -> None:
    broker = broker_factory({"connections.max.idle.ms": "1000"})
    idle = socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT)
    half_sent = socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT)
    busy = socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT)
    half_sent.sendall(struct.pack(">i", 1000))
    started = time.monotonic()
    # `busy` asks every 200 ms for 3 s and is served throughout; `half_sent` keeps
    # dripping bytes of one frame, which is no excuse.
    half_sent_closed = False
    while time.monotonic() - started < 3:
        assert answers_api_versions(busy)
        try:
            half_sent.sendall(b"\0")
        except OSError:
            half_sent_closed = True
        time.sleep(0.2)
    assert closed_by_broker(idle, 0.1)
    assert half_sent_closed or closed_by_broker(half_sent, 0.1)
    assert answers_api_versions(busy)
    for sock in (idle, half_sent, busy):
        sock.close()


def test_clients_unaffected_by_short_idle_limit(broker_factory) -> None:
    broker = broker_factory({"connections.max.idle.ms": "2000"})
    produce_ok(broker.bootstrap, "t")
    consumer = Consumer({
        "bootstrap.servers": broker.bootstrap, "group.id": "g", "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
    })
    try:
        consumer.subscribe(["t"])
        deadline = time.monotonic() + TIMEOUT
        message = None
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(1)
        assert message is not None and message.error() is None and message.value() == b"v"
    finally:
        consumer.close()


def _limited(sock_count: int, port: int) -> tuple[list[socket.socket], socket.socket]:
    socks = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(sock_count)]
    for sock in socks:
        assert answers_api_versions(sock)
    return socks, socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


@pytest.mark.parametrize(
    "overrides",
    [
        {"max.connections.per.ip": "3"},
        {"max.connections.per.ip": "100", "max.connections.per.ip.overrides": "127.0.0.1:3"},
        {"max.connections.per.ip": "0", "max.connections.per.ip.overrides": "localhost:3"},
    ],
)
def test_connection_over_the_limit_is_closed_at_once(broker_factory, overrides: dict[str, str]) -> None:
    broker = broker_factory(overrides)
    # The fixture's start-up probe may still be counted for a moment.
    time.sleep(0.3)
    socks, extra = _limited(3, broker.port)
    assert closed_by_broker(extra, 5)
    extra.close()
    socks.pop().close()
    # Once one is closed, a new one is served (its close is noticed asynchronously).
    deadline = time.monotonic() + 5
    while True:
        fresh = socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT)
        try:
            assert answers_api_versions(fresh)
            break
        except (ConnectionError, OSError):
            fresh.close()
            assert time.monotonic() < deadline, "no connection accepted after one closed"
            time.sleep(0.1)
    fresh.close()
    for sock in socks:
        sock.close()
    assert "Rejected connection from 127.0.0.1" in broker.log_text()


def test_at_max_connections_new_connections_wait_until_one_closes(broker_factory) -> None:
    """Kafka's acceptor stops accepting at max.connections: a new connection waits in the
    backlog, unanswered and not closed, and is served once another one closes."""
    broker = broker_factory({"max.connections": "3"})
    time.sleep(0.3)  # the fixture's start-up probe may still be counted for a moment
    socks, waiting = _limited(3, broker.port)
    waiting.settimeout(1.0)
    waiting.sendall(api_versions_frame(9))
    with pytest.raises(TimeoutError):
        waiting.recv(4)  # neither answered nor closed while three are open
    socks.pop().close()
    waiting.settimeout(TIMEOUT)
    size, correlation_id = struct.unpack(">ii", recv_exactly(waiting, 8))
    assert correlation_id == 9  # its request is answered once a slot frees
    recv_exactly(waiting, size - 4)
    waiting.close()
    for sock in socks:
        sock.close()


@pytest.mark.parametrize("name", ["__cluster_metadata", "__share_group_state", "__transaction_state"])
def test_reserved_topic_names_cannot_be_created(broker, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    error = admin.create_topics([NewTopic(name, 1, 1)], request_timeout=TIMEOUT)[name].exception(TIMEOUT)
    assert error is not None and error.args[0].code() == KafkaError.INVALID_REQUEST, error
    assert f"Creation of internal topic {name} is prohibited." in error.args[0].str()
    with RawClient(broker.port) as client:
        response = client.send(MetadataRequest(
            topics=(MetadataRequestTopic(name=name, topic_id=None),),
            allow_auto_topic_creation=True, include_topic_authorized_operations=False,
        ))
    assert [t.error_code.value for t in response.topics] == [3]  # UNKNOWN_TOPIC_OR_PARTITION
    assert name not in admin.list_topics(timeout=TIMEOUT).topics


def test_internal_topic_cannot_be_written(broker) -> None:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g", "enable.auto.commit": False})
    try:
        consumer.subscribe(["x"])
        consumer.poll(3)  # the group coordinator creates __consumer_offsets
    finally:
        consumer.close()
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 10_000, "retries": 0})
    errors: list[KafkaError] = []
    producer.produce("__consumer_offsets", b"forged", partition=0, on_delivery=lambda err, msg: errors.append(err))
    producer.flush(TIMEOUT)
    assert len(errors) == 1 and errors[0] is not None
    assert errors[0].code() == KafkaError.TOPIC_EXCEPTION, errors[0]


def test_rss_comes_back_down_after_2000_connections_close(broker_factory) -> None:
    broker = broker_factory()
    time.sleep(0.5)
    idle = rss_mb(broker.process.pid)
    socks = []
    for _ in range(2000):
        sock = socket.create_connection(("127.0.0.1", broker.port), timeout=TIMEOUT)
        sock.sendall(api_versions_frame(1))
        socks.append(sock)
    for sock in socks:
        recv_exactly(sock, 4)
    peak = rss_mb(broker.process.pid)
    for sock in socks:
        sock.close()
    deadline = time.monotonic() + 10
    after = rss_mb(broker.process.pid)
    while after > idle + 35 and time.monotonic() < deadline:
        time.sleep(0.5)
        after = rss_mb(broker.process.pid)
    print(f"RSS idle {idle:.0f} MB, 2000 connections open {peak:.0f} MB, closed {after:.0f} MB")
    # Before: 191 MB, and it stayed there (64 KiB per connection, never returned).
    assert peak < idle + 80
    assert after < idle + 35


# ---- finding 6: security settings kwire cannot honour stop start-up -----------------------------------------


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kwire", "serve", *args], capture_output=True, text=True, timeout=TIMEOUT,
    )


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["listeners=SASL_SSL://127.0.0.1:0", "sasl.enabled.mechanisms=SCRAM-SHA-512"], "ssl.keystore.location"),
        (["listeners=SSL://127.0.0.1:0", "ssl.keystore.location=/etc/kafka/keystore.jks"], "ssl.keystore.type=JKS"),
        (["listeners=SSL://127.0.0.1:0", "ssl.keystore.type=PKCS12", "ssl.keystore.location=/x.p12"], "PKCS12"),
        (["listeners=SASL_PLAINTEXT://127.0.0.1:0"], "GSSAPI"),
        (["listeners=SASL_PLAINTEXT://127.0.0.1:0", "sasl.enabled.mechanisms=OAUTHBEARER"], "OAUTHBEARER"),
        (["listeners=SASL_PLAINTEXT://127.0.0.1:0", "sasl.enabled.mechanisms=PLAIN"], "plain.sasl.jaas.config"),
        (["authorizer.class.name=com.example.MyAuthorizer"], "authorizer.class.name"),
        (["security.inter.broker.protocol=SSL"], "inter-broker listener SSL"),
        (["super.users=admin"], "super.users"),
        (["listeners=SSL://127.0.0.1:0", "ssl.keystore.type=PEM", "ssl.keystore.location=/no/such.pem"], "/no/such.pem"),
        (["listeners=INTERNAL://127.0.0.1:0"], "no security protocol defined for listener INTERNAL"),
        (["listener.security.protocol.map=PLAINTEXT:TLS"], "listener.security.protocol.map"),
        (["queued.max.request.bytes=1000"], "queued.max.request.bytes"),
        (["max.connections.per.ip=0"], "max.connections.per.ip.overrides"),
    ],
)
def test_settings_kwire_cannot_honour_stop_start_up(tmp_path, overrides: list[str], named: str) -> None:
    args = ["--override", f"log.dirs={tmp_path}"]
    for item in overrides:
        args += ["--override", item]
    result = serve(*args)
    assert result.returncode == 2, result
    assert named in result.stderr
    assert "listening" not in result.stdout
    assert "Traceback" not in result.stderr


def test_listener_name_maps_through_security_protocol_map(tmp_path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kwire", "serve",
         "--override", f"log.dirs={tmp_path}",
         "--override", f"listeners=INTERNAL://127.0.0.1:{port}",
         "--override", "listener.security.protocol.map=INTERNAL:PLAINTEXT,EXTERNAL:SSL",
         "--override", "no.such.key=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout.readline().strip() == f"kwire broker 0 listening on INTERNAL://127.0.0.1:{port}"
        produce_ok(f"127.0.0.1:{port}", "mapped")
    finally:
        process.terminate()
        process.wait(TIMEOUT)
    assert process.returncode == 0
    assert "unknown config 'no.such.key'" in process.stderr.read()
