"""Consumer groups against a real kwire broker, with real clients.

confluent-kafka consumers share a 6-partition topic and rebalance (eager and
cooperative), die without leaving, restart as static members; kafka-python and
aiokafka commit and resume; the broker restarts and crashes under a live group;
the admin client lists, describes and deletes groups and their offsets; raw
requests check the error codes clients rarely show. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader

from kwire.coordinator.group_coordinator import java_string_hashcode, partition_for
from kwire.protocol.messages import (
    encode,
    is_flexible,
    make,
    request_class,
    request_module,
    response_class,
)

TIMEOUT = 30.0
SESSION_MS = 6000
# Fewer __consumer_offsets partitions than Kafka's 50 keep start-up quick.
OVERRIDES = {"group.min.session.timeout.ms": "1000", "offsets.topic.num.partitions": "8"}


# ---- helpers ------------------------------------------------------------------------------


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(TIMEOUT)


def produce(bootstrap: str, topic: str, count: int, partitions: int, start: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(start, start + count):
        producer.produce(topic, value=b"m%d" % i, partition=i % partitions)
    assert producer.flush(TIMEOUT) == 0


def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT, step: Callable[[], Any] | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        if step is not None:
            step()
        else:
            time.sleep(0.05)


class Member:
    """A confluent-kafka group member that records what it consumes and every
    assignment change, and commits its position of each partition it gives up."""

    def __init__(self, bootstrap: str, group: str, topic: str, *, strategy: str = "range", instance: str | None = None, **extra: Any) -> None:
        config = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": SESSION_MS,
            "heartbeat.interval.ms": 300,
            "partition.assignment.strategy": strategy,
            **extra,
        }
        if instance is not None:
            config["group.instance.id"] = instance
        self.consumer = Consumer(config)
        self.assignment: set[int] = set()
        self.events: list[tuple[str, frozenset[int]]] = []
        self.consumed: list[tuple[int, int]] = []
        self.commit_errors: list[str] = []
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        got = frozenset(p.partition for p in partitions)
        self.events.append(("assign", got))
        self.assignment |= got

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = frozenset(p.partition for p in partitions)
        self.events.append(("revoke", gone))
        if partitions:
            positions = [p for p in consumer.position(partitions) if p.offset >= 0]
            if positions:
                try:
                    consumer.commit(offsets=positions, asynchronous=False)
                except Exception as e:  # recorded, asserted on by the tests
                    self.commit_errors.append(str(e))
        self.assignment -= gone

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = frozenset(p.partition for p in partitions)
        self.events.append(("lost", gone))
        self.assignment -= gone

    def poll(self, timeout: float = 0.02) -> None:
        message = self.consumer.poll(timeout)
        if message is not None and not message.error():
            self.consumed.append((message.partition(), message.offset()))

    def close(self) -> None:
        self.consumer.close()


def poll_all(members: Iterable[Member]) -> Callable[[], None]:
    members = list(members)

    def step() -> None:
        for m in members:
            m.poll()

    return step


def settle(members: list[Member], seconds: float) -> None:
    """Keep polling for a while (to see that nothing more happens)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        poll_all(members)()


def raw_request(bootstrap: str, api_key: int, version: int, **fields: Any) -> Any:
    """One kio-built request on a fresh connection; the decoded response."""
    body = encode(make(request_class(api_key, version), **fields))
    flexible = is_flexible(api_key, version)
    client_id = b"kwire-groups-test"
    header = struct.pack(">hhih", api_key, version, 11, len(client_id)) + client_id + (b"\x00" if flexible else b"")
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as s:
        s.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        size = struct.unpack(">i", _recv(s, 4))[0]
        frame = _recv(s, size)
    assert struct.unpack_from(">i", frame)[0] == 11
    response, _ = entity_reader(response_class(api_key, version))(frame, 4 + (1 if flexible else 0))
    return response


def _recv(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


# ---- rebalancing with confluent-kafka --------------------------------------------------------


def test_two_then_three_consumers_consume_every_message_exactly_once(broker_factory) -> None:
    broker = broker_factory(OVERRIDES)
    create_topic(broker.bootstrap, "shared", 6)
    produce(broker.bootstrap, "shared", 300, 6)
    a = Member(broker.bootstrap, "sharing", "shared")
    b = Member(broker.bootstrap, "sharing", "shared")
    members = [a, b]
    try:
        wait_for(lambda: len(a.assignment) == 3 and len(b.assignment) == 3, step=poll_all(members), what="two members, 3 each")
        wait_for(lambda: len(a.consumed) + len(b.consumed) >= 150, step=poll_all(members), what="half the messages")
        c = Member(broker.bootstrap, "sharing", "shared")
        members.append(c)
        produce(broker.bootstrap, "shared", 300, 6, start=300)
        wait_for(
            lambda: sum(len(m.consumed) for m in members) >= 600 and all(len(m.assignment) == 2 for m in members),
            step=poll_all(members),
            what="all 600 messages over three members",
        )
        settle(members, 1.0)
        everything = [record for m in members for record in m.consumed]
        assert len(everything) == 600
        assert len(set(everything)) == 600, "a message was consumed twice"
        assert set().union(*(m.assignment for m in members)) == set(range(6))
        assert all(not m.commit_errors for m in members), [m.commit_errors for m in members]
        assert c.consumed, "the third member got no work"
    finally:
        for m in members:
            m.close()


KILLABLE_MEMBER = r"""
import sys
from confluent_kafka import Consumer
consumer = Consumer({
    "bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "auto.offset.reset": "earliest",
    "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 300,
})
def on_assign(c, partitions):
    print("ASSIGNED", sorted(p.partition for p in partitions), flush=True)
consumer.subscribe([sys.argv[3]], on_assign=on_assign)
while True:
    consumer.poll(0.1)
"""


def test_member_killed_without_leaving_loses_its_partitions_after_session_timeout(broker_factory, tmp_path) -> None:
    broker = broker_factory(OVERRIDES)
    create_topic(broker.bootstrap, "victims", 6)
    survivor = Member(broker.bootstrap, "mortal", "victims")
    script = tmp_path / "member.py"
    script.write_text(KILLABLE_MEMBER)
    child = None
    try:
        wait_for(lambda: len(survivor.assignment) == 6, step=survivor.poll, what="first member owns everything")
        child = subprocess.Popen(
            [sys.executable, str(script), broker.bootstrap, "mortal", "victims"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in child.stdout], daemon=True).start()
        child_parts: list[str] = []

        def step() -> None:
            survivor.poll()
            while not lines.empty():
                child_parts.append(lines.get())

        wait_for(
            lambda: len(survivor.assignment) == 3 and any(line.startswith("ASSIGNED [") and line.count(",") == 2 for line in child_parts),
            step=step,
            what="the subprocess member owns 3 partitions",
        )
        settle([survivor], 1.0)
        child.send_signal(signal.SIGKILL)
        child.wait(TIMEOUT)
        killed_at = time.monotonic()
        wait_for(lambda: len(survivor.assignment) == 6, step=survivor.poll, what="the survivor takes the dead member's partitions")
        took = time.monotonic() - killed_at
        # No LeaveGroup came: the broker's own timer expired the session (6 s after
        # the last heartbeat), with no request from the dead member to drive it.
        assert 4.0 <= took <= 6.0 + 8.0, took
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})  # kept alive until the answer
        description = admin.describe_consumer_groups(["mortal"])["mortal"].result(TIMEOUT)
        assert len(description.members) == 1
    except AssertionError as e:
        raise AssertionError(f"{e}\nmember events: {survivor.events}\nbroker log:\n{broker.log_text()}") from None
    finally:
        if child is not None and child.poll() is None:
            child.kill()
        survivor.close()


def test_cooperative_sticky_moves_only_the_partitions_that_must_move(broker_factory) -> None:
    broker = broker_factory(OVERRIDES)
    create_topic(broker.bootstrap, "sticky", 6)
    a = Member(broker.bootstrap, "coop", "sticky", strategy="cooperative-sticky")
    members = [a]
    try:
        wait_for(lambda: len(a.assignment) == 6, step=poll_all(members), what="a owns all 6")
        b = Member(broker.bootstrap, "coop", "sticky", strategy="cooperative-sticky")
        members.append(b)
        wait_for(lambda: len(a.assignment) == 3 and len(b.assignment) == 3, step=poll_all(members), what="3 and 3")
        settle(members, 1.0)
        a_revoked = [parts for kind, parts in a.events if kind in ("revoke", "lost")]
        # Incremental: a gave up exactly the 3 partitions b now has, and kept the rest throughout.
        assert a_revoked == [frozenset(b.assignment)], a.events
        assert not [e for e in b.events if e[0] != "assign"]

        c = Member(broker.bootstrap, "coop", "sticky", strategy="cooperative-sticky")
        members.append(c)
        wait_for(lambda: all(len(m.assignment) == 2 for m in members), step=poll_all(members), what="2, 2 and 2")
        settle(members, 1.0)
        a_revoked = [parts for kind, parts in a.events if kind in ("revoke", "lost")]
        b_revoked = [parts for kind, parts in b.events if kind in ("revoke", "lost")]
        assert len(a_revoked) == 2 and len(a_revoked[1]) == 1, a.events
        assert len(b_revoked) == 1 and len(b_revoked[0]) == 1, b.events
        assert a_revoked[1] | b_revoked[0] == c.assignment
        assert set().union(*(m.assignment for m in members)) == set(range(6))
    finally:
        for m in members:
            m.close()


def test_static_member_restarting_within_session_timeout_gets_its_partitions_without_rebalance(broker_factory) -> None:
    broker = broker_factory(OVERRIDES)
    create_topic(broker.bootstrap, "statics", 6)
    a = Member(broker.bootstrap, "static-group", "statics", instance="instance-a")
    b = Member(broker.bootstrap, "static-group", "statics", instance="instance-b")
    members = [a, b]
    try:
        wait_for(lambda: len(a.assignment) == 3 and len(b.assignment) == 3, step=poll_all(members), what="3 and 3")
        settle(members, 1.0)
        b_partitions = set(b.assignment)
        b_member_id = b.consumer.memberid()
        a_events = len(a.events)
        b.close()  # a static member sends no LeaveGroup
        members.remove(b)
        settle(members, 0.5)
        restarted = Member(broker.bootstrap, "static-group", "statics", instance="instance-b")
        members.append(restarted)
        wait_for(lambda: restarted.assignment == b_partitions, step=poll_all(members), timeout=SESSION_MS / 1000 - 1.5, what="b's partitions back")
        settle(members, 1.5)
        assert len(a.events) == a_events, f"the other member saw a rebalance: {a.events[a_events:]}"
        assert restarted.consumer.memberid() != b_member_id
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        group = admin.describe_consumer_groups(["static-group"])["static-group"].result(TIMEOUT)
        assert group.state == ConsumerGroupState.STABLE
        assert sorted(m.group_instance_id for m in group.members) == ["instance-a", "instance-b"]
    finally:
        for m in members:
            m.close()


# ---- other clients ----------------------------------------------------------------------------


def test_kafka_python_joins_commits_and_resumes(broker_factory) -> None:
    from kafka import KafkaConsumer

    broker = broker_factory(OVERRIDES)
    create_topic(broker.bootstrap, "kp", 3)
    produce(broker.bootstrap, "kp", 30, 3)

    def consumer() -> KafkaConsumer:
        return KafkaConsumer(
            "kp",
            bootstrap_servers=broker.bootstrap,
            group_id="kp-group",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=SESSION_MS,
            heartbeat_interval_ms=500,
        )

    def take(c: KafkaConsumer, count: int) -> list[tuple[int, int]]:
        got: list[tuple[int, int]] = []
        wait_for(
            lambda: len(got) >= count,
            step=lambda: got.extend(
                (r.partition, r.offset) for rs in c.poll(200, max_records=count - len(got)).values() for r in rs
            ),
            what=f"{count} records",
        )
        return got

    first = consumer()
    seen = take(first, 12)
    first.commit()
    first.close()
    second = consumer()
    rest = take(second, 18)
    extra = second.poll(1000)
    second.commit()
    second.close()
    assert not any(extra.values())
    assert len(set(seen + rest)) == 30, "resumed from somewhere else than the committed offsets"


def test_aiokafka_joins_commits_and_resumes(broker_factory) -> None:
    from aiokafka import AIOKafkaConsumer

    broker = broker_factory(OVERRIDES)
    create_topic(broker.bootstrap, "aio", 3)
    produce(broker.bootstrap, "aio", 30, 3)

    async def take(count: int, more: bool) -> list[tuple[int, int]]:
        consumer = AIOKafkaConsumer(
            "aio",
            bootstrap_servers=broker.bootstrap,
            group_id="aio-group",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=SESSION_MS,
            heartbeat_interval_ms=500,
        )
        await consumer.start()
        got: list[tuple[int, int]] = []
        try:
            async with asyncio.timeout(TIMEOUT):
                while len(got) < count:
                    batches = await consumer.getmany(timeout_ms=200, max_records=count - len(got))
                    got.extend((r.partition, r.offset) for rs in batches.values() for r in rs)
            if more:
                extra = await consumer.getmany(timeout_ms=1000)
                assert not any(extra.values())
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    seen = asyncio.run(take(10, False))
    rest = asyncio.run(take(20, True))
    assert len(set(seen + rest)) == 30


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_balanced_consumer_commits_and_resumes(broker_factory) -> None:
    broker = broker_factory(OVERRIDES)
    create_topic(broker.bootstrap, "kc", 3)
    produce(broker.bootstrap, "kc", 30, 3)

    def run_kcat() -> list[str]:
        out = subprocess.run(
            ["kcat", "-b", broker.bootstrap, "-G", "kcat-group", "-X", "auto.offset.reset=earliest", "-e", "-q",
             "-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=300", "-f", "%p:%o\\n", "kc"],
            capture_output=True, text=True, timeout=TIMEOUT,
        )
        assert out.returncode == 0, out.stderr
        return [line for line in out.stdout.splitlines() if line]

    first = run_kcat()
    assert len(first) == 30 and len(set(first)) == 30
    produce(broker.bootstrap, "kc", 6, 3, start=30)
    second = run_kcat()
    assert sorted(second) == sorted(f"{i % 3}:{10 + i // 3}" for i in range(6))


# ---- restarts -------------------------------------------------------------------------------------


def test_broker_restart_brings_back_group_and_offsets(broker_factory) -> None:
    broker = broker_factory(OVERRIDES)
    create_topic(broker.bootstrap, "durable", 6)
    produce(broker.bootstrap, "durable", 120, 6)
    x = Member(broker.bootstrap, "keeper", "durable")
    try:
        wait_for(lambda: len(x.consumed) >= 60, step=x.poll, what="60 messages")
        positions = x.consumer.position([TopicPartition("durable", p) for p in range(6)])
        x.consumer.commit(offsets=[TopicPartition(p.topic, p.partition, p.offset, metadata=f"m{p.partition}") for p in positions if p.offset >= 0], asynchronous=False)
        assignments_before = len(x.events)
        member_id = x.consumer.memberid()

        broker.restart()
        # The group came back Stable with its member: the live consumer goes on with
        # its generation and member id, and no rebalance happens.
        wait_for(lambda: len(x.consumed) >= 120, step=x.poll, what="the rest after the restart")
        produce(broker.bootstrap, "durable", 60, 6, start=120)
        wait_for(lambda: len(x.consumed) >= 180, step=x.poll, what="messages produced after the restart")
        settle([x], 1.0)
        assert len(x.events) == assignments_before, x.events
        assert x.consumer.memberid() == member_id
        assert len(x.consumed) == len(set(x.consumed)) == 180
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        group = admin.describe_consumer_groups(["keeper"])["keeper"].result(TIMEOUT)
        assert group.state == ConsumerGroupState.STABLE and [m.member_id for m in group.members] == [member_id]
        x.consumer.commit(asynchronous=False)
    finally:
        x.close()

    # A crash: the committed offsets (and their metadata) survive it too.
    broker.kill()
    broker.start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    request = ConsumerGroupTopicPartitions("keeper", [TopicPartition("durable", p) for p in range(6)])
    committed = admin.list_consumer_group_offsets([request])["keeper"].result(TIMEOUT).topic_partitions
    assert [p.offset for p in committed] == [30] * 6
    listed = admin.list_consumer_groups().result(TIMEOUT).valid
    assert [(g.group_id, g.state) for g in listed if g.group_id == "keeper"] == [("keeper", ConsumerGroupState.EMPTY)]
    y = Member(broker.bootstrap, "keeper", "durable")
    try:
        produce(broker.bootstrap, "durable", 12, 6, start=180)
        wait_for(lambda: len(y.consumed) >= 12, step=y.poll, what="only the new messages")
        settle([y], 1.0)
        assert sorted(y.consumed) == [(p, o) for p in range(6) for o in (30, 31)]
    finally:
        y.close()


def test_committed_metadata_survives_restart(broker_factory) -> None:
    broker = broker_factory(OVERRIDES)
    create_topic(broker.bootstrap, "meta", 2)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "meta-group"})
    try:
        # A simple consumer (no subscription): generation -1, no member id.
        consumer.committed([TopicPartition("meta", 0)], timeout=TIMEOUT)  # the coordinator is known
        consumer.commit(offsets=[TopicPartition("meta", 0, 7, metadata="checkpoint-7"), TopicPartition("meta", 1, 3)], asynchronous=False)
    finally:
        consumer.close()
    broker.restart()
    # Retried while the restarted coordinator is not yet available or loading, as clients do.
    deadline = time.monotonic() + TIMEOUT
    while True:
        response = raw_request(broker.bootstrap, 9, 8, groups=(
            make(request_module(9, 8).OffsetFetchRequestGroup, group_id="meta-group", topics=None),
        ), require_stable=True)
        (group,) = response.groups
        if group.error_code not in (ErrorCode.coordinator_not_available, ErrorCode.coordinator_load_in_progress):
            break
        assert time.monotonic() < deadline, group.error_code
        time.sleep(0.05)
    assert group.error_code == ErrorCode.none
    # (librdkafka sends the metadata string with its C terminator; Kafka keeps it as sent.)
    partitions = {(p.partition_index, p.committed_offset, p.metadata.rstrip("\x00")) for t in group.topics for p in t.partitions}
    assert partitions == {(0, 7, "checkpoint-7"), (1, 3, "")}


# ---- admin ------------------------------------------------------------------------------------------


def test_admin_lists_describes_alters_and_deletes_groups(broker_factory) -> None:
    broker = broker_factory(OVERRIDES)
    create_topic(broker.bootstrap, "adm", 6)
    produce(broker.bootstrap, "adm", 60, 6)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    m = Member(broker.bootstrap, "admin-group", "adm", **{"client.id": "adm-client"})
    try:
        wait_for(lambda: len(m.consumed) >= 60, step=m.poll, what="all messages")
        m.consumer.commit(asynchronous=False)
        listed = admin.list_consumer_groups().result(TIMEOUT).valid
        assert ("admin-group", ConsumerGroupState.STABLE) in [(g.group_id, g.state) for g in listed]
        stable_only = admin.list_consumer_groups(states={ConsumerGroupState.STABLE}).result(TIMEOUT).valid
        assert "admin-group" in [g.group_id for g in stable_only]
        empty_only = admin.list_consumer_groups(states={ConsumerGroupState.EMPTY}).result(TIMEOUT).valid
        assert "admin-group" not in [g.group_id for g in empty_only]

        group = admin.describe_consumer_groups(["admin-group"])["admin-group"].result(TIMEOUT)
        assert group.state == ConsumerGroupState.STABLE and group.partition_assignor == "range"
        assert not group.is_simple_consumer_group
        (member,) = group.members
        assert member.client_id == "adm-client" and member.host.lstrip("/") == "127.0.0.1"
        assert sorted(p.partition for p in member.assignment.topic_partitions) == list(range(6))

        with pytest.raises(Exception) as refused:
            admin.delete_consumer_groups(["admin-group"])["admin-group"].result(TIMEOUT)
        assert refused.value.args[0].code() == KafkaError.NON_EMPTY_GROUP

        request = ConsumerGroupTopicPartitions("admin-group", [TopicPartition("adm", p) for p in range(6)])
        offsets = admin.list_consumer_group_offsets([request])["admin-group"].result(TIMEOUT)
        assert [p.offset for p in offsets.topic_partitions] == [10] * 6
    finally:
        m.close()

    # Empty now: offsets can be altered by the admin, then the group deleted.
    altered = ConsumerGroupTopicPartitions("admin-group", [TopicPartition("adm", 0, 4), TopicPartition("adm", 5, 9)])
    admin.alter_consumer_group_offsets([altered])["admin-group"].result(TIMEOUT)
    request = ConsumerGroupTopicPartitions("admin-group", [TopicPartition("adm", 0), TopicPartition("adm", 5)])
    offsets = admin.list_consumer_group_offsets([request])["admin-group"].result(TIMEOUT)
    assert [p.offset for p in offsets.topic_partitions] == [4, 9]
    listed = admin.list_consumer_groups(states={ConsumerGroupState.EMPTY}).result(TIMEOUT).valid
    assert "admin-group" in [g.group_id for g in listed]

    admin.delete_consumer_groups(["admin-group"])["admin-group"].result(TIMEOUT)
    assert "admin-group" not in [g.group_id for g in admin.list_consumer_groups().result(TIMEOUT).valid]
    offsets = admin.list_consumer_group_offsets([request])["admin-group"].result(TIMEOUT)
    assert [p.offset for p in offsets.topic_partitions] == [-1001, -1001]
    with pytest.raises(Exception) as missing:
        admin.delete_consumer_groups(["admin-group"])["admin-group"].result(TIMEOUT)
    assert missing.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND
    # Deleted for good: a restart does not bring it back.
    broker.restart()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert "admin-group" not in [g.group_id for g in admin.list_consumer_groups().result(TIMEOUT).valid]


# ---- protocol details, with raw requests ----------------------------------------------------------


def _join(bootstrap: str, version: int, group: str, member_id: str = "", session_ms: int = SESSION_MS, instance: str | None = None) -> Any:
    module = request_module(11, version)
    return raw_request(
        bootstrap, 11, version,
        group_id=group,
        session_timeout=_ms(session_ms),
        rebalance_timeout=_ms(10_000),
        member_id=member_id,
        group_instance_id=instance,
        protocol_type="consumer",
        protocols=(make(module.JoinGroupRequestProtocol, name="range", metadata=b"\x00\x01\x00\x00\x00\x00\xff\xff\xff\xff"),),
        reason=None,
    )


def _ms(ms: int) -> Any:
    import datetime

    return datetime.timedelta(milliseconds=ms)


def test_raw_group_protocol_errors(broker_factory) -> None:
    broker = broker_factory(OVERRIDES)
    bs = broker.bootstrap
    create_topic(bs, "raw", 2)

    # FindCoordinator: v0 one key, v4 batched; transactional ids have this broker too.
    v0 = raw_request(bs, 10, 0, key="g")
    assert v0.error_code == ErrorCode.none and v0.port == broker.port
    v4 = raw_request(bs, 10, 4, key_type=0, coordinator_keys=("g1", "g2"))
    assert [(c.key, c.error_code, c.port) for c in v4.coordinators] == [("g1", ErrorCode.none, broker.port), ("g2", ErrorCode.none, broker.port)]
    txn = raw_request(bs, 10, 4, key_type=1, coordinator_keys=("tx",))
    assert (txn.coordinators[0].error_code, txn.coordinators[0].port) == (ErrorCode.none, broker.port)

    # JoinGroup: session timeout bounds, KIP-394 member id, unknown members.
    assert _join(bs, 9, "raw-g", session_ms=500).error_code == ErrorCode.invalid_session_timeout
    first = _join(bs, 9, "raw-g")
    assert first.error_code == ErrorCode.member_id_required and first.member_id.startswith("kwire-groups-test-")
    joined = _join(bs, 9, "raw-g", first.member_id, session_ms=60_000)
    assert (joined.error_code, joined.generation_id, joined.leader, joined.protocol_name) == (ErrorCode.none, 1, first.member_id, "range")
    assert _join(bs, 3, "raw-v3").error_code == ErrorCode.none  # v3: no second round
    assert _join(bs, 9, "raw-other", "stale-id").error_code == ErrorCode.unknown_member_id
    assert _join(bs, 9, "").error_code == ErrorCode.invalid_group_id

    hb = raw_request(bs, 12, 4, group_id="raw-g", generation_id=1, member_id="nobody", group_instance_id=None)
    assert hb.error_code == ErrorCode.unknown_member_id

    # OffsetCommit: unknown group with a generation, simple commits, unknown topics.
    def commit(version: int, group: str, generation: int, topic: str = "raw") -> list[ErrorCode]:
        module = request_module(8, version)
        response = raw_request(
            bs, 8, version, group_id=group, generation_id_or_member_epoch=generation, member_id="",
            group_instance_id=None, retention_time=_ms(-1),
            topics=(make(module.OffsetCommitRequestTopic, name=topic, partitions=(
                make(module.OffsetCommitRequestPartition, partition_index=0, committed_offset=5, committed_leader_epoch=-1, committed_metadata="x"),
            )),),
        )
        return [p.error_code for t in response.topics for p in t.partitions]

    assert commit(9, "ghost", 3) == [ErrorCode.group_id_not_found]
    assert commit(8, "ghost", 3) == [ErrorCode.illegal_generation]
    assert commit(2, "simple", -1) == [ErrorCode.none]
    assert commit(9, "simple", -1, topic="no-such-topic") == [ErrorCode.unknown_topic_or_partition]
    assert commit(9, "raw-g", -1) == [ErrorCode.unknown_member_id]  # a group with members

    # OffsetFetch: several groups (v8), per-partition errors in v1, everything with null topics.
    of8 = request_module(9, 8)
    fetched = raw_request(bs, 9, 8, require_stable=True, groups=(
        make(of8.OffsetFetchRequestGroup, group_id="simple", topics=(make(of8.OffsetFetchRequestTopics, name="raw", partition_indexes=(0, 1)),)),
        make(of8.OffsetFetchRequestGroup, group_id="never-seen", topics=None),
    ))
    simple, never = fetched.groups
    assert [(p.partition_index, p.committed_offset, p.metadata) for p in simple.topics[0].partitions] == [(0, 5, "x"), (1, -1, "")]
    assert never.error_code == ErrorCode.none and never.topics == ()
    of1 = request_module(9, 1)
    v1 = raw_request(bs, 9, 1, group_id="simple", topics=(make(of1.OffsetFetchRequestTopic, name="raw", partition_indexes=(0,)),))
    assert v1.topics[0].partitions[0].committed_offset == 5

    # DescribeGroups / ListGroups / DeleteGroups / OffsetDelete.
    described = raw_request(bs, 15, 5, groups=("raw-g", "never-seen"), include_authorized_operations=True)
    raw_g, unknown = described.groups
    assert raw_g.group_state == "CompletingRebalance" and unknown.group_state == "Dead"
    listed = raw_request(bs, 16, 5, states_filter=("completingrebalance",), types_filter=())
    assert sorted(g.group_id for g in listed.groups) == ["raw-g", "raw-v3"]
    assert {g.group_type for g in listed.groups} == {"classic"}
    assert raw_request(bs, 16, 5, states_filter=(), types_filter=("consumer",)).groups == ()
    deleted = raw_request(bs, 42, 2, groups_names=("raw-g", "never-seen"))
    assert [(r.group_id, r.error_code) for r in deleted.results] == [("raw-g", ErrorCode.non_empty_group), ("never-seen", ErrorCode.group_id_not_found)]
    od = request_module(47, 0)
    offset_delete = raw_request(bs, 47, 0, group_id="simple", topics=(make(od.OffsetDeleteRequestTopic, name="raw", partitions=(make(od.OffsetDeleteRequestPartition, partition_index=0),)),))
    assert offset_delete.error_code == ErrorCode.none and offset_delete.topics[0].partitions[0].error_code == ErrorCode.none
    v1 = raw_request(bs, 9, 1, group_id="simple", topics=(make(of1.OffsetFetchRequestTopic, name="raw", partition_indexes=(0,)),))
    assert v1.topics[0].partitions[0].committed_offset == -1


def test_coordinator_partition_is_kafkas() -> None:
    # Java's String.hashCode; "polygenelubricants" hashes to Integer.MIN_VALUE, which Kafka's abs maps to 0.
    assert java_string_hashcode("") == 0
    assert java_string_hashcode("hello") == 99162322
    assert java_string_hashcode("polygenelubricants") == -(2**31)
    assert partition_for("polygenelubricants", 50) == 0
    assert partition_for("console-consumer-1", 50) == abs(java_string_hashcode("console-consumer-1")) % 50
    assert java_string_hashcode("héllo wörld") == _java_hash_reference("héllo wörld")


def _java_hash_reference(s: str) -> int:
    h = 0
    for unit in struct.unpack(f">{len(s.encode('utf-16-be')) // 2}H", s.encode("utf-16-be")):
        h = (31 * h + unit) & 0xFFFFFFFF
    return h - 2**32 if h >= 2**31 else h


# ---- the coordinator in-process: storage, loading, expiry, timers ---------------------------------


def _subscription(*topics: str) -> bytes:
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


def _open_broker(path: Any, **overrides: str) -> Any:
    from kwire.broker import Broker
    from kwire.config import BrokerConfig

    config = {
        "log.dirs": str(path),
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "100",
        "offsets.topic.num.partitions": "4",
        **overrides,
    }
    broker = Broker(BrokerConfig(config))
    broker.open()
    broker.attach_coordinators()
    return broker


async def _running(coordinator: Any, body: Callable[[], Any]) -> Any:
    """Run the coordinator service (loading, timers) around `body`, then stop it."""
    import trio

    async with trio.open_nursery() as nursery:
        await nursery.start(coordinator.run)
        with trio.fail_after(TIMEOUT):
            while coordinator.loading:
                await trio.sleep(0.01)
            result = await body()
        nursery.cancel_scope.cancel()
    return result


async def _join_and_sync(coordinator: Any, group: str, session_ms: int = SESSION_MS, instance: str | None = None) -> str:
    args = dict(
        group_id=group, group_instance_id=instance, client_id="c", client_host="/127.0.0.1",
        rebalance_timeout_ms=10_000, session_timeout_ms=session_ms, protocol_type="consumer",
        protocols=[("range", _subscription("t"))], require_known_member_id=True, supports_skip_assignment=True,
    )
    first = await coordinator.join_group(member_id="", **args)
    member_id = first.member_id
    if first.error == ErrorCode.member_id_required:
        joined = await coordinator.join_group(member_id=member_id, **args)
        assert joined.error == ErrorCode.none
    synced = await coordinator.sync_group(
        group_id=group, generation_id=coordinator.groups[group].generation_id, member_id=member_id,
        group_instance_id=instance, protocol_type="consumer", protocol_name="range",
        assignments={member_id: b"assignment-of-" + member_id.encode()},
    )
    assert synced.error == ErrorCode.none
    return member_id


def test_coordinator_stores_and_loads_groups_offsets_and_tombstones(tmp_path) -> None:
    import trio

    from kwire.coordinator.group import GroupState

    broker = _open_broker(tmp_path)
    broker.create_topic("t", 2)
    coordinator = broker.services["groups"]

    async def populate() -> str:
        member = await _join_and_sync(coordinator, "live")
        errors = await coordinator.commit_offsets(
            group_id="live", member_id=member, group_instance_id=None, generation_id=1,
            offsets={("t", 0): (5, 0, "meta"), ("t", 1): (7, 0, None)},
        )
        assert set(errors.values()) == {ErrorCode.none}
        errors = await coordinator.commit_offsets(
            group_id="simple", member_id="", group_instance_id=None, generation_id=-1,
            offsets={("t", 0): (3, -1, "s")}, retention_ms=1000,
        )
        assert errors == {("t", 0): ErrorCode.none}
        return member

    member = trio.run(_running, coordinator, populate)
    broker.close()

    broker = _open_broker(tmp_path)
    coordinator = broker.services["groups"]

    async def reloaded() -> None:
        live = coordinator.groups["live"]
        assert (live.state, live.generation_id, live.protocol_name, live.leader_id) == (GroupState.STABLE, 1, "range", member)
        assert live.members[member].assignment == b"assignment-of-" + member.encode()
        assert live.subscribed_topics == {"t"}
        assert {tp: (o.offset, o.metadata) for tp, o in live.offsets.items()} == {("t", 0): (5, "meta"), ("t", 1): (7, "")}
        simple = coordinator.groups["simple"]
        assert simple.state is GroupState.EMPTY and simple.protocol_type is None
        assert simple.offsets[("t", 0)].expire_timestamp is not None
        # Retention: the simple group's commit (retention 1 s) expires, and with it the
        # group; the live group's offsets stay (it is stable and subscribed to "t").
        from kwire.coordinator.group_coordinator import now_ms

        assert coordinator.expire_offsets(now_ms() + 2000) == 1
        assert "simple" not in coordinator.groups and len(live.offsets) == 2
        # The member leaves; the empty group is deleted with its offsets.
        assert coordinator.leave_group("live", [(member, None)]) == (ErrorCode.none, [ErrorCode.none])
        assert coordinator.delete_groups(["live", "live"]) == {"live": ErrorCode.none}

    trio.run(_running, coordinator, reloaded)
    broker.close()

    broker = _open_broker(tmp_path)
    coordinator = broker.services["groups"]

    async def gone() -> None:
        assert coordinator.groups == {}
        assert coordinator.fetch_offsets("live", [("t", 0)]) == (ErrorCode.none, {("t", 0): None})

    trio.run(_running, coordinator, gone)
    broker.close()


def test_coordinator_timers_expire_a_silent_member_without_any_request(tmp_path) -> None:
    import trio

    from kwire.coordinator.group import GroupState

    broker = _open_broker(tmp_path)
    broker.create_topic("t", 1)
    coordinator = broker.services["groups"]

    async def silent() -> None:
        await _join_and_sync(coordinator, "quiet", session_ms=300)
        group = coordinator.groups["quiet"]
        assert group.state is GroupState.STABLE
        await trio.sleep(0.2)
        assert group.state is GroupState.STABLE
        with trio.fail_after(5):
            while group.state is not GroupState.EMPTY:
                await trio.sleep(0.02)
        assert group.members == {} and group.generation_id == 2

    trio.run(_running, coordinator, silent)
    broker.close()


def test_coordinator_answers_load_in_progress_while_loading(tmp_path) -> None:
    broker = _open_broker(tmp_path)
    coordinator = broker.services["groups"]
    assert coordinator.heartbeat(group_id="g", member_id="m", group_instance_id=None, generation_id=1) == ErrorCode.coordinator_not_available
    coordinator.active = True
    coordinator.loading = {coordinator.partition_for("g")}
    assert coordinator.fetch_offsets("g", None) == (ErrorCode.coordinator_load_in_progress, {})
    assert coordinator.heartbeat(group_id="g", member_id="m", group_instance_id=None, generation_id=1) == ErrorCode.none
    assert coordinator.list_groups()[0] == ErrorCode.coordinator_load_in_progress
    broker.close()
