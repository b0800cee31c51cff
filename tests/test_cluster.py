"""A kwire cluster (issue 9) against a real ZooKeeper, three real broker processes and
real clients (confluent-kafka, raw kio requests): Metadata agreement, replicated
produce and consume, ISR shrink and expand, NOT_ENOUGH_REPLICAS, the controller's
failover, DeleteTopics and CreatePartitions, transactions across a coordinator's death.
The destructive failover tests (leader kills, a cut ZooKeeper session, ZooKeeper and
whole-cluster restarts) are in test_cluster_failover.py; its helpers are here."""

from __future__ import annotations

import datetime
import json
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cluster_harness import KwireCluster, wait_until, zk_client
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from kio.schema.errors import ErrorCode
from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.offset_commit.v8.request import (
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
)
from kio.schema.offset_commit.v8.response import OffsetCommitResponse
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.serial import entity_reader
from kio.static.primitive import Records
from raw_client import RawClient

from kwire.protocol.records import build_batch

TIMEOUT = 30.0

# RF 3 everywhere, min.insync.replicas 2, few internal partitions (quick to elect), a
# ZooKeeper session short enough that a dead broker is noticed within seconds.
CLUSTER_OVERRIDES = {
    "default.replication.factor": "3",
    "offsets.topic.replication.factor": "3",
    "offsets.topic.num.partitions": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.num.partitions": "3",
    "transaction.state.log.min.isr": "2",
    "min.insync.replicas": "2",
    "zookeeper.session.timeout.ms": "4000",
    "group.initial.rebalance.delay.ms": "0",
    "num.partitions": "3",
}


def overrides(**extra: str) -> dict[str, str]:
    return {**CLUSTER_OVERRIDES, **{k.replace("_", "."): v for k, v in extra.items()}}


# ------------------------------------------------------------------------------- Metadata


class FrozenDict(dict):
    """A dict that is hashable (it is never changed), so views compare in sets."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))


@dataclass(frozen=True)
class BrokerView:
    """What one broker's Metadata answer says about the cluster and one topic."""

    brokers: frozenset[tuple[int, int]]  # (node id, port)
    controller_id: int
    partitions: dict[int, tuple[int, tuple[int, ...], tuple[int, ...]]]  # p -> (leader, replicas, isr)
    error_codes: tuple[int, ...]


def metadata_view(port: int, topic: str, timeout: float = 5.0) -> BrokerView:
    with RawClient(port, timeout=timeout) as client:
        response = client.send(MetadataRequest(
            topics=(MetadataRequestTopic(name=topic, topic_id=None),),
            allow_auto_topic_creation=False, include_topic_authorized_operations=False,
        ))
    (answer,) = response.topics
    partitions = FrozenDict({
        p.partition_index: (int(p.leader_id), tuple(int(r) for r in p.replica_nodes), tuple(sorted(int(r) for r in p.isr_nodes)))
        for p in answer.partitions
    })
    return BrokerView(
        frozenset((int(b.node_id), b.port) for b in response.brokers),
        int(response.controller_id),
        partitions,
        (answer.error_code.value, *(p.error_code.value for p in answer.partitions)),
    )


def all_metadata_lists(cluster: KwireCluster, ids: Iterable[int]) -> bool:
    """Every live broker's Metadata lists exactly the brokers `ids` and one controller."""
    wanted = {(i, cluster.broker(i).port) for i in ids}
    seen = {(v.brokers, v.controller_id) for v in views(cluster, "__none__").values()}
    return len(seen) == 1 and next(iter(seen))[0] == wanted and next(iter(seen))[1] in set(ids)


def start_cluster(
    factory: Callable[..., KwireCluster], n: int = 3, proxied: bool = False, zookeeper: Any = None, **extra: str
) -> KwireCluster:
    """A started cluster whose brokers all know each other and the controller (a broker
    answers ApiVersions before it has joined). `extra`: overrides, "_" for "."."""
    cluster = factory(n, overrides=overrides(**extra), proxied=proxied, zookeeper=zookeeper)
    wait_until(lambda: all_metadata_lists(cluster, cluster.ids), 20, interval=0.05,
               message="every broker's Metadata lists all brokers and the controller")
    return cluster


def live_ids(cluster: KwireCluster) -> list[int]:
    return [i for i in cluster.ids if cluster.broker(i).process is not None]


def views(cluster: KwireCluster, topic: str, ids: Iterable[int] | None = None) -> dict[int, BrokerView]:
    return {i: metadata_view(cluster.broker(i).port, topic) for i in (live_ids(cluster) if ids is None else ids)}


def agreed_view(cluster: KwireCluster, topic: str, ids: Iterable[int] | None = None) -> BrokerView | None:
    """The one view every live broker gives, or None while they differ."""
    seen = set(views(cluster, topic, ids).values())
    return seen.pop() if len(seen) == 1 else None


# ------------------------------------------------------------------------------- ZooKeeper


def partition_state(zk: Any, topic: str, partition: int) -> dict[str, Any]:
    data, _ = zk.get(f"/brokers/topics/{topic}/partitions/{partition}/state")
    return json.loads(data)


def controller_in_zk(zk: Any) -> int:
    data, _ = zk.get("/controller")
    return int(json.loads(data)["brokerid"])


def leader_of(cluster: KwireCluster, topic: str, partition: int) -> int:
    with zk_client(cluster.connect_string) as zk:
        return int(partition_state(zk, topic, partition)["leader"])


def wait_for_full_isr(cluster: KwireCluster, topics: dict[str, int], timeout: float = TIMEOUT) -> None:
    """Every partition of `topics` (name -> partition count) has a leader and all its
    replicas in the ISR, in ZooKeeper and in every live broker's Metadata."""
    def full() -> bool:
        with zk_client(cluster.connect_string) as zk:
            for topic, count in topics.items():
                for p in range(count):
                    state = partition_state(zk, topic, p)
                    if state["leader"] < 0 or len(state["isr"]) != 3:
                        return False
        for topic, count in topics.items():
            view = agreed_view(cluster, topic)
            if view is None or len(view.partitions) != count:
                return False
            if any(leader < 0 or len(isr) != 3 for leader, _, isr in view.partitions.values()):
                return False
        return True

    wait_until(full, timeout, interval=0.2, message=f"full ISR with leaders for {topics}")


# ---------------------------------------------------------------------------------- clients


def admin_client(cluster: KwireCluster) -> AdminClient:
    return AdminClient({"bootstrap.servers": cluster.bootstrap, "socket.timeout.ms": 10000})


def create_topic(cluster: KwireCluster, name: str, partitions: int = 3, rf: int = 3, config: dict[str, str] | None = None) -> None:
    # The client must outlive the future (destroying it fails the request).
    admin = admin_client(cluster)
    futures = admin.create_topics([NewTopic(name, partitions, rf, config=config or {})], operation_timeout=TIMEOUT)
    futures[name].result(TIMEOUT)


def delivery_error_name(error: KafkaError | None) -> str:
    return "none" if error is None else error.name()


@dataclass
class Acked:
    """Delivery reports of a producer: acknowledged (partition, offset, value) and errors."""

    ok: list[tuple[int, int, bytes]] = field(default_factory=list)
    errors: list[tuple[str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_delivery(self, error: KafkaError | None, message: Any) -> None:
        with self.lock:
            if error is None:
                self.ok.append((message.partition(), message.offset(), message.value()))
            else:
                self.errors.append((error.name(), message.value()))

    def by_partition(self) -> dict[int, list[tuple[int, bytes]]]:
        out: dict[int, list[tuple[int, bytes]]] = {}
        with self.lock:
            for p, offset, value in self.ok:
                out.setdefault(p, []).append((offset, value))
        return {p: sorted(v) for p, v in out.items()}


def idempotent_producer(cluster: KwireCluster, **config: Any) -> Producer:
    return Producer({
        "bootstrap.servers": cluster.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 120000,
        "retry.backoff.ms": 100,
        "topic.metadata.refresh.interval.ms": 1000,
        **config,
    })


class LoadProducer:
    """A thread producing value b"<seq>" to partition seq % partitions with an
    idempotent acks=all producer, at most `rate` messages a second, until stop()."""

    def __init__(self, cluster: KwireCluster, topic: str, partitions: int, rate: float = 400, **config: Any) -> None:
        self.topic = topic
        self.partitions = partitions
        self.rate = rate
        self.acked = Acked()
        self.produced = 0
        self.producer = idempotent_producer(cluster, **config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"load-{topic}", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> LoadProducer:
        self._thread.start()
        return self

    def _run(self) -> None:
        began = time.monotonic()
        try:
            while not self._stop.is_set():
                due = began + self.produced / self.rate
                pause = due - time.monotonic()
                if pause > 0:
                    self.producer.poll(pause)
                    continue
                seq = self.produced
                try:
                    self.producer.produce(self.topic, b"%d" % seq, partition=seq % self.partitions,
                                          on_delivery=self.acked.on_delivery)
                except BufferError:
                    self.producer.poll(0.1)
                    continue
                self.produced += 1
                self.producer.poll(0)
        except BaseException as e:
            self.error = e

    def stop(self, flush_timeout: float = 60.0) -> Acked:
        self._stop.set()
        self._thread.join(10)
        left = self.producer.flush(flush_timeout)
        assert left == 0, f"{left} of {self.produced} messages still undelivered after {flush_timeout}s"
        assert self.error is None, f"load producer failed: {self.error!r}"
        return self.acked

    def acked_count(self) -> int:
        with self.acked.lock:
            return len(self.acked.ok)


def end_offsets(cluster: KwireCluster, topic: str, partitions: int, isolation: str = "read_uncommitted") -> dict[int, int]:
    """The partitions' ends from their leaders: the high watermark, or the last stable
    offset for read_committed."""
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "ends", "isolation.level": isolation})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in range(partitions)}
    finally:
        consumer.close()


def wait_for_markers(cluster: KwireCluster, topic: str, partitions: int, timeout: float = 15) -> None:
    """Until no transaction is open on the partitions (the last stable offset is the high
    watermark): commit_transaction returns before the markers are written, as in Kafka."""
    wait_until(lambda: end_offsets(cluster, topic, partitions, "read_committed") == end_offsets(cluster, topic, partitions),
               timeout, interval=0.1, message=f"transaction markers written on {topic}")


def read_log(
    cluster: KwireCluster, topic: str, partitions: int, isolation: str = "read_uncommitted", timeout: float = TIMEOUT
) -> dict[int, list[tuple[int, bytes]]]:
    """Every record (offset, value) of the topic's partitions up to their ends (the high
    watermark, or the last stable offset for read_committed), read from their leaders."""
    deadline = time.monotonic() + timeout
    ends = wait_until(lambda: end_offsets(cluster, topic, partitions, isolation), timeout, interval=0.2,
                      message=f"end offsets of {topic}")
    consumer = Consumer({
        "bootstrap.servers": cluster.bootstrap,
        "group.id": f"reader-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": isolation,
        "topic.metadata.refresh.interval.ms": 1000,
    })
    try:
        out: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        # A partition is read when its end-of-partition event comes at or past its end
        # (markers and aborted records advance the fetch position without a message).
        read: set[int] = {p for p, end in ends.items() if end == 0}
        while len(read) < partitions:
            assert time.monotonic() < deadline, (
                f"read {({p: len(v) for p, v in out.items()})} of ends {ends} within {timeout}s")
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    if message.offset() >= ends[message.partition()]:
                        read.add(message.partition())
                    continue
                raise KafkaException(message.error())
            out[message.partition()].append((message.offset(), message.value()))
        return out
    finally:
        consumer.close()


def check_acked_in_log(acked: Acked, log: dict[int, list[tuple[int, bytes]]], partitions: int) -> str:
    """No acknowledged message lost (each at its acknowledged offset), none duplicated,
    order kept per partition; a summary for the assertion messages."""
    by_partition = acked.by_partition()
    lost = []
    for p, records in by_partition.items():
        at = dict(log.get(p, []))
        lost += [(p, offset, value) for offset, value in records if at.get(offset) != value]
    assert not lost, f"{len(lost)} acknowledged messages lost or moved, e.g. {lost[:5]}"
    for p in range(partitions):
        # The load's values are numbers; a test's own marked writes are not.
        values = [int(v) for _, v in log.get(p, []) if v.isdigit()]
        assert len(values) == len(set(values)), f"partition {p}: {len(values) - len(set(values))} duplicates"
        assert values == sorted(values), f"partition {p}: out of order near {_first_disorder(values)}"
        assert all(v % partitions == p for v in values), f"partition {p} holds another partition's values"
    total = sum(len(v) for v in log.values())
    return f"{len(acked.ok)} acknowledged, {total} in the log, {len(acked.errors)} delivery errors"


def _first_disorder(values: list[int]) -> list[int]:
    for i in range(1, len(values)):
        if values[i] < values[i - 1]:
            return values[max(0, i - 3): i + 3]
    return []


def raw_produce(port: int, topic: str, partition: int, value: bytes, acks: int, timeout_ms: int = 3000) -> ErrorCode:
    request = ProduceRequest(
        transactional_id=None,
        acks=acks,
        timeout=datetime.timedelta(milliseconds=timeout_ms),
        topic_data=(TopicProduceData(name=topic, partition_data=(
            PartitionProduceData(index=partition, records=Records(build_batch([(None, value)]))),
        )),),
    )
    with RawClient(port, timeout=timeout_ms / 1000 + 10) as client:
        response = client.send(request)
    return response.responses[0].partition_responses[0].error_code


def find_coordinator(port: int, key: str, key_type: int) -> int:
    """The node id FindCoordinator names for a group (0) or transactional id (1)."""
    with RawClient(port, timeout=10) as client:
        response = client.send(FindCoordinatorRequest(key_type=key_type, coordinator_keys=(key,)))
    (coordinator,) = response.coordinators
    assert coordinator.error_code == ErrorCode.none, coordinator
    return int(coordinator.node_id)


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    began = time.monotonic()
    return call(), time.monotonic() - began


# ==================================================================================== tests


def test_metadata_agrees_on_every_broker_within_a_second_of_a_leader_change(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    cluster = start_cluster(kwire_cluster_factory)
    create_topic(cluster, "agree", 6)
    wait_for_full_isr(cluster, {"agree": 6})
    view = agreed_view(cluster, "agree")
    assert view is not None
    ports = {(i, cluster.broker(i).port) for i in cluster.ids}
    assert view.brokers == ports, f"brokers {sorted(view.brokers)} != {sorted(ports)}"
    assert set(view.error_codes) == {0}
    with zk_client(cluster.connect_string) as zk:
        controller = controller_in_zk(zk)
        assert view.controller_id == controller, f"Metadata controller {view.controller_id}, /controller {controller}"
        for p, (leader, replicas, isr) in view.partitions.items():
            state = partition_state(zk, "agree", p)
            assert (leader, isr) == (state["leader"], tuple(sorted(state["isr"]))), f"partition {p}: {view} vs {state}"
            assert sorted(replicas) == [1, 2, 3]
    leaders = {leader for leader, _, _ in view.partitions.values()}
    assert leaders == {1, 2, 3}, f"6 partitions led by {leaders} only"

    # A leader change: SIGKILL the leader of partition 0 (not the controller, so the
    # election is the controller's, not a controller failover). Measure from the moment
    # ZooKeeper's state znode names the new leader to every live broker agreeing.
    victim = next(leader for p, (leader, _, _) in sorted(view.partitions.items()) if leader != controller)
    moved = [p for p, (leader, _, _) in view.partitions.items() if leader == victim]
    changed = threading.Event()
    changed_at: list[float] = []
    with zk_client(cluster.connect_string) as zk:
        def watch(data: bytes | None, _stat: Any) -> None:
            if data is not None and json.loads(data)["leader"] != victim and not changed_at:
                changed_at.append(time.monotonic())
                changed.set()

        zk.DataWatch(f"/brokers/topics/agree/partitions/{moved[0]}/state", watch)
        cluster.kill(victim)
        killed_at = time.monotonic()
        assert changed.wait(15), f"no new leader for partition {moved[0]} within 15s of killing broker {victim}"

        def converged() -> BrokerView | None:
            v = agreed_view(cluster, "agree")
            if v is None:
                return None
            states = {p: partition_state(zk, "agree", p) for p in range(6)}
            if any((v.partitions[p][0], v.partitions[p][2]) != (s["leader"], tuple(sorted(s["isr"])))
                   for p, s in states.items()):
                return None
            return v if all(v.partitions[p][0] != victim for p in moved) else None

        after = wait_until(converged, 5, interval=0.01, message="every broker agrees on the new leaders")
        converged_after = time.monotonic() - changed_at[0]
    print(f"leader of {moved} re-elected {changed_at[0] - killed_at:.2f}s after the kill; "
          f"all brokers agreed {converged_after * 1000:.0f} ms after the znode changed")
    assert converged_after < 1.0, f"Metadata converged {converged_after:.3f}s after the leader change (target < 1 s)"
    assert after.brokers == ports - {(victim, cluster.broker(victim).port)}
    assert all(victim not in isr for _, _, isr in after.partitions.values())

    # Back: the broker rejoins, and the brokers agree again on the full ISR.
    cluster.broker(victim).start()
    wait_for_full_isr(cluster, {"agree": 6})
    assert agreed_view(cluster, "agree").brokers == ports


def test_acks_all_idempotent_produce_and_group_consume_across_brokers(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    cluster = start_cluster(kwire_cluster_factory)
    create_topic(cluster, "across", 3)
    wait_for_full_isr(cluster, {"across": 3})
    leaders = {leader_of(cluster, "across", p) for p in range(3)}
    assert len(leaders) >= 2, f"3 partitions all led by {leaders}: nothing crosses brokers"
    # Two members of one group, each polled by its own thread (as applications do).
    seen: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(3)}
    lock = threading.Lock()
    done = threading.Event()
    assignments: list[list[int]] = []
    count = 3000
    # What each member owns now, kept by its rebalance callbacks (in its own thread).
    owned: list[set[int]] = [set(), set()]
    final_commits: list[list[Any]] = []
    failures: list[BaseException] = []

    def member(k: int) -> None:
        consumer = Consumer({
            "bootstrap.servers": cluster.bootstrap,
            "group.id": "across-group",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })
        try:
            consumer.subscribe(
                ["across"],
                on_assign=lambda _c, ps: owned[k].update(tp.partition for tp in ps),
                on_revoke=lambda _c, ps: owned[k].difference_update(tp.partition for tp in ps),
            )
            while not done.is_set():
                message = consumer.poll(0.1)
                if message is None or message.error():
                    continue
                with lock:
                    seen[message.partition()].append((message.offset(), message.value()))
                    if sum(len(v) for v in seen.values()) >= count:
                        done.set()
            try:
                final_commits.append([(tp.partition, tp.offset, tp.error) for tp in consumer.commit(asynchronous=False)])
            except KafkaException as e:  # a member that consumed nothing
                if e.args[0].code() != KafkaError._NO_OFFSET:
                    raise
                final_commits.append([str(e)])
            assignments.append(sorted(tp.partition for tp in consumer.assignment()))
        except BaseException as e:
            failures.append(e)
        finally:
            consumer.close()

    threads = [threading.Thread(target=member, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    # Both members in the group before anything is produced: no rebalance while reading.
    wait_until(lambda: all(owned) and set().union(*owned) == {0, 1, 2}, 20, interval=0.1,
               message=f"both members own partitions (now {owned})")
    acked = Acked()
    producer = idempotent_producer(cluster, **{"linger.ms": 2})
    began = time.monotonic()
    for i in range(count):
        producer.produce("across", b"%d" % i, partition=i % 3, on_delivery=acked.on_delivery)
        producer.poll(0)
    assert producer.flush(TIMEOUT) == 0
    seconds = time.monotonic() - began
    assert not acked.errors, f"delivery errors: {acked.errors[:5]}"
    assert len(acked.ok) == count
    print(f"{count} acks=all idempotent messages in {seconds:.2f}s")

    done.wait(TIMEOUT)
    done.set()
    for t in threads:
        t.join(TIMEOUT)
    assert not failures, failures
    assert sum(len(v) for v in seen.values()) == count, f"consumed {({p: len(v) for p, v in seen.items()})} of {count}"
    assert sorted(p for a in assignments for p in a) == [0, 1, 2], f"assignments {assignments}"
    for p in range(3):
        expected = [(offset, value) for offset, value in acked.by_partition()[p]]
        assert seen[p] == expected, f"partition {p}: {len(seen[p])} consumed vs {len(expected)} acknowledged"
        assert [int(v) for _, v in seen[p]] == list(range(p, count, 3))
    admin = admin_client(cluster)
    group = admin.describe_consumer_groups(["across-group"])["across-group"].result(TIMEOUT)
    check = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "across-group"})
    try:
        committed = check.committed([TopicPartition("across", p) for p in range(3)], timeout=10)
    finally:
        check.close()
    assert [tp.offset for tp in committed] == [count // 3] * 3, (
        f"committed {[tp.offset for tp in committed]}, the members' last commits {final_commits}, "
        f"assignments {assignments}, coordinator {group.coordinator.id}")


def test_pipelined_offset_commits_leave_the_last_one_committed(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    """30 OffsetCommits for one partition sent on one connection without waiting (as a
    consumer's asynchronous commits followed by a synchronous one): with replicated
    writes they complete concurrently, and the committed offset must be the last one sent
    (Kafka applies a commit only if its record is newer than the one it replaces)."""
    cluster = start_cluster(kwire_cluster_factory)
    create_topic(cluster, "commits", 1)
    group = "pipelined"
    port = cluster.broker(cluster.ids[0]).port
    # The first FindCoordinator creates __consumer_offsets; retried until it is led.
    wait_until(lambda: find_coordinator(port, group, 0) >= 0, 20, interval=0.2, message="a group coordinator")
    wait_for_full_isr(cluster, {"commits": 1, "__consumer_offsets": 3})
    coordinator = find_coordinator(port, group, 0)
    count = 30
    with RawClient(cluster.broker(coordinator).port, timeout=TIMEOUT) as client:
        for offset in range(1, count + 1):
            client.send(OffsetCommitRequest(
                group_id=group, generation_id_or_member_epoch=-1, member_id="", group_instance_id=None,
                topics=(OffsetCommitRequestTopic(name="commits", partitions=(OffsetCommitRequestPartition(
                    partition_index=0, committed_offset=offset, committed_leader_epoch=-1, committed_metadata=None,
                ),)),),
            ), expect_response=False)
        errors = [read_offset_commit_response(client).topics[0].partitions[0].error_code for _ in range(count)]
    assert errors == [ErrorCode.none] * count, errors
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group})
    try:
        (committed,) = consumer.committed([TopicPartition("commits", 0)], timeout=10)
    finally:
        consumer.close()
    assert committed.offset == count, f"committed offset {committed.offset} after commits 1..{count} in that order"


def read_offset_commit_response(client: RawClient) -> Any:
    """The next OffsetCommit v8 answer on a connection whose requests were pipelined."""
    (size,) = struct.unpack(">i", client._exactly(4))
    frame = client._exactly(size)
    # Response header v1 (flexible): correlation id, then an empty tagged-field section.
    response, _ = entity_reader(OffsetCommitResponse)(frame, 5)
    return response


def test_paused_follower_leaves_and_rejoins_the_isr_two_paused_give_not_enough_replicas(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    cluster = start_cluster(kwire_cluster_factory, replica_lag_time_max_ms="2000", zookeeper_session_timeout_ms="6000")
    create_topic(cluster, "lag", 1)
    wait_for_full_isr(cluster, {"lag": 1})
    leader = leader_of(cluster, "lag", 0)
    followers = [i for i in cluster.ids if i != leader]
    port = cluster.broker(leader).port
    assert raw_produce(port, "lag", 0, b"before", acks=-1) == ErrorCode.none

    with zk_client(cluster.connect_string) as zk:
        def isr() -> list[int]:
            return sorted(partition_state(zk, "lag", 0)["isr"])

        # A stalled follower leaves the ISR once it is behind for replica.lag.time.max.ms:
        # the leader must have something it lacks (a caught-up idle follower stays, as in
        # Kafka), so an acks=all write waits for the shrink, then succeeds with two.
        cluster.pause(followers[0])
        paused_at = time.monotonic()
        status, waited = timed(lambda: raw_produce(port, "lag", 0, b"two-0", acks=-1, timeout_ms=10000))
        assert status == ErrorCode.none, f"acks=all during the ISR shrink: {status.name} after {waited:.2f}s"
        assert isr() == sorted([leader, followers[1]]), f"ISR {isr()} after the first acks=all write"
        shrunk_after = time.monotonic() - paused_at
        print(f"ISR shrank and acks=all answered {waited:.2f}s after SIGSTOP (replica.lag.time.max.ms=2000)")
        assert 1.5 < waited < 5.0, f"acks=all answered after {waited:.2f}s"
        statuses = [raw_produce(port, "lag", 0, b"two-%d" % i, acks=-1) for i in range(1, 20)]
        assert statuses == [ErrorCode.none] * 19, statuses
        wait_until(lambda: (v := agreed_view(cluster, "lag", [leader, followers[1]])) is not None
                   and v.partitions[0][2] == tuple(sorted([leader, followers[1]])),
                   2, message="both live brokers' Metadata show the shrunk ISR")
        assert shrunk_after < 6.0

        cluster.resume(followers[0])
        resumed_at = time.monotonic()
        wait_until(lambda: isr() == [1, 2, 3], 15, interval=0.05, message=f"broker {followers[0]} back in the ISR")
        print(f"rejoined the ISR {time.monotonic() - resumed_at:.2f}s after SIGCONT")
        wait_until(lambda: (v := agreed_view(cluster, "lag")) is not None and v.partitions[0][2] == (1, 2, 3),
                   5, message="every broker's Metadata shows the full ISR")

        # Both followers stalled: the ISR is the leader alone, below min.insync.replicas.
        cluster.pause(followers[0])
        cluster.pause(followers[1])
        # The leader has a record neither follower has: after the lag time the ISR is
        # the leader alone, and the write waiting on it ends NOT_ENOUGH_REPLICAS_AFTER_APPEND
        # (Kafka) or, if it outlives its timeout, REQUEST_TIMED_OUT.
        status, waited = timed(lambda: raw_produce(port, "lag", 0, b"stalled", acks=-1, timeout_ms=10000))
        print(f"acks=all while both followers stall: {status.name} after {waited:.2f}s")
        assert status in (ErrorCode.not_enough_replicas_after_append, ErrorCode.request_timed_out), status.name
        wait_until(lambda: isr() == [leader], 10, interval=0.05, message="ISR shrunk to the leader")
        assert raw_produce(port, "lag", 0, b"refused", acks=-1) == ErrorCode.not_enough_replicas
        assert raw_produce(port, "lag", 0, b"one", acks=1) == ErrorCode.none
        # A real producer: acks=all fails (retriable, until its timeout), acks=1 succeeds.
        results: dict[str, str] = {}
        for acks, timeout_ms in (("all", 3000), ("1", 10000)):
            producer = Producer({"bootstrap.servers": cluster.broker(leader).bootstrap, "acks": acks,
                                 "message.timeout.ms": timeout_ms, "retry.backoff.ms": 200})
            producer.produce("lag", b"client-acks-" + acks.encode(), partition=0,
                             on_delivery=lambda e, _m, a=acks: results.__setitem__(a, delivery_error_name(e)))
            assert producer.flush(15) == 0
        assert results["1"] == "none", results
        assert results["all"] in ("NOT_ENOUGH_REPLICAS", "_MSG_TIMED_OUT"), results
        cluster.resume(followers[0])
        cluster.resume(followers[1])
        wait_until(lambda: isr() == [1, 2, 3], 30, interval=0.1, message="both followers back in the ISR")
    log = read_log(cluster, "lag", 1)
    values = [v for _, v in log[0]]
    assert b"refused" not in values, "an acks=all write refused with NOT_ENOUGH_REPLICAS was stored"
    assert values[0] == b"before" and values[1:21] == [b"two-%d" % i for i in range(20)], values[:25]
    assert b"one" in values and b"client-acks-1" in values, values[20:]


def test_controller_killed_another_takes_over_and_admin_works(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    cluster = start_cluster(kwire_cluster_factory)
    create_topic(cluster, "before", 3)
    wait_for_full_isr(cluster, {"before": 3})
    with zk_client(cluster.connect_string) as zk:
        old = controller_in_zk(zk)
        old_epoch = int(zk.get("/controller_epoch")[0])
        cluster.kill(old)
        killed_at = time.monotonic()
        new = wait_until(lambda: (c := controller_in_zk(zk)) != old and c, 15, interval=0.05,
                         message=f"a controller other than {old}")
        elected_after = time.monotonic() - killed_at
        epoch = int(zk.get("/controller_epoch")[0])
    assert epoch > old_epoch, f"controller epoch {old_epoch} -> {epoch}"
    wait_until(lambda: (v := agreed_view(cluster, "before")) is not None and v.controller_id == new, 2,
               message=f"Metadata names controller {new} on every live broker")
    print(f"broker {new} became controller {elected_after:.2f}s after broker {old} was killed (epoch {epoch})")
    # Partitions the dead controller led have new leaders.
    wait_until(lambda: all(leader_of(cluster, "before", p) in live_ids(cluster) for p in range(3)), 15,
               message="every partition of 'before' led by a live broker")

    # CreateTopics (RF 2: two brokers live) and DeleteTopics work under the new controller.
    create_topic(cluster, "after", 2, rf=2)
    view = wait_until(lambda: (v := agreed_view(cluster, "after")) is not None and len(v.partitions) == 2
                      and all(p[0] in live_ids(cluster) and len(p[2]) == 2 for p in v.partitions.values()) and v,
                      10, message="'after' has leaders and a full ISR of 2")
    assert all(old not in replicas for _, replicas, _ in view.partitions.values())
    producer = idempotent_producer(cluster)
    acked = Acked()
    for i in range(10):
        producer.produce("after", b"%d" % i, partition=i % 2, on_delivery=acked.on_delivery)
    assert producer.flush(TIMEOUT) == 0 and len(acked.ok) == 10, acked.errors
    admin = admin_client(cluster)
    admin.delete_topics(["after"], operation_timeout=TIMEOUT)["after"].result(TIMEOUT)
    with zk_client(cluster.connect_string) as zk:
        wait_until(lambda: zk.exists("/brokers/topics/after") is None, 10, message="/brokers/topics/after deleted")
    wait_until(lambda: "after" not in admin.list_topics(timeout=10).topics, 5, message="'after' gone from Metadata")

    cluster.broker(old).start()
    wait_for_full_isr(cluster, {"before": 3})
    assert agreed_view(cluster, "before").controller_id == new


def test_delete_topics_removes_data_on_every_broker_create_partitions_adds_replicated_partitions(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    cluster = start_cluster(kwire_cluster_factory)
    admin = admin_client(cluster)
    create_topic(cluster, "doomed", 2)
    create_topic(cluster, "growing", 2)
    wait_for_full_isr(cluster, {"doomed": 2, "growing": 2})
    producer = idempotent_producer(cluster)
    for i in range(20):
        producer.produce("doomed", b"%d" % i, partition=i % 2)
    assert producer.flush(TIMEOUT) == 0

    def dirs(topic: str) -> dict[int, list[str]]:
        return {i: sorted(d.name for d in cluster.broker(i).data_dir.iterdir() if d.name.startswith(f"{topic}-"))
                for i in cluster.ids}

    assert dirs("doomed") == {i: ["doomed-0", "doomed-1"] for i in cluster.ids}
    admin.delete_topics(["doomed"], operation_timeout=TIMEOUT)["doomed"].result(TIMEOUT)
    (_, seconds) = timed(lambda: wait_until(lambda: dirs("doomed") == {i: [] for i in cluster.ids}, 15, interval=0.1,
                                            message=f"data of 'doomed' removed everywhere (left: {dirs('doomed')})"))
    print(f"'doomed' directories gone from 3 brokers {seconds:.2f}s after DeleteTopics answered")
    with zk_client(cluster.connect_string) as zk:
        assert zk.exists("/brokers/topics/doomed") is None
        wait_until(lambda: zk.exists("/admin/delete_topics/doomed") is None, 10, message="deletion marker cleared")
    for i in cluster.ids:
        assert metadata_view(cluster.broker(i).port, "doomed").error_codes[0] == ErrorCode.unknown_topic_or_partition.value

    admin.create_partitions([NewPartitions("growing", 5)], operation_timeout=TIMEOUT)["growing"].result(TIMEOUT)
    wait_for_full_isr(cluster, {"growing": 5}, timeout=15)
    view = agreed_view(cluster, "growing")
    with zk_client(cluster.connect_string) as zk:
        assignment = json.loads(zk.get("/brokers/topics/growing")[0])["partitions"]
    assert sorted(assignment) == ["0", "1", "2", "3", "4"], assignment
    for p in range(5):
        assert sorted(assignment[str(p)]) == [1, 2, 3], f"partition {p} replicas {assignment[str(p)]}"
        assert view.partitions[p][1] == tuple(assignment[str(p)]), (p, view.partitions[p], assignment[str(p)])
    assert {view.partitions[p][0] for p in range(5)} != {view.partitions[0][0]}, "every partition on one leader"
    acked = Acked()
    for p in range(5):
        producer.produce("growing", b"%d" % p, partition=p, on_delivery=acked.on_delivery)
    assert producer.flush(TIMEOUT) == 0
    assert sorted((p, o) for p, o, _ in acked.ok) == [(p, 0) for p in range(5)], (acked.ok, acked.errors)
    assert dirs("growing") == {i: [f"growing-{p}" for p in range(5)] for i in cluster.ids}


def test_transactions_commit_and_abort_across_brokers_and_survive_the_coordinators_death(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    cluster = start_cluster(kwire_cluster_factory)
    create_topic(cluster, "txn", 3)
    wait_for_full_isr(cluster, {"txn": 3})
    transactional_id = "txn-across"
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": transactional_id,
                         "transaction.timeout.ms": 30000, "message.timeout.ms": 30000})
    producer.init_transactions(TIMEOUT)
    committed: list[bytes] = []
    aborted: list[bytes] = []

    def transaction(name: str, commit: bool) -> None:
        producer.begin_transaction()
        values = [f"{name}-{i}".encode() for i in range(9)]
        for i, value in enumerate(values):
            producer.produce("txn", value, partition=i % 3)
        if commit:
            producer.commit_transaction(TIMEOUT)
            committed.extend(values)
        else:
            # Written first: abort_transaction would purge what is still queued.
            assert producer.flush(TIMEOUT) == 0
            producer.abort_transaction(TIMEOUT)
            aborted.extend(values)

    transaction("a", True)
    transaction("b", False)
    transaction("c", True)
    wait_for_markers(cluster, "txn", 3)
    log = read_log(cluster, "txn", 3, isolation="read_committed")
    assert sorted(v for p in log.values() for _, v in p) == sorted(committed), log
    everything = read_log(cluster, "txn", 3)
    assert sorted(v for p in everything.values() for _, v in p) == sorted(committed + aborted)

    coordinator = find_coordinator(cluster.broker(cluster.ids[0]).port, transactional_id, 1)
    with zk_client(cluster.connect_string) as zk:
        states = [partition_state(zk, "__transaction_state", p)["leader"] for p in range(3)]
    assert coordinator in states, f"coordinator {coordinator} leads none of __transaction_state {states}"
    cluster.kill(coordinator)
    killed_at = time.monotonic()
    # The next transaction, right after the kill: a retriable failure is retried (the
    # call resumes), one needing an abort is aborted and the transaction redone.
    resumed = None
    for attempt in range(3):
        producer.begin_transaction()
        values = [f"d{attempt}-{i}".encode() for i in range(9)]
        for i, value in enumerate(values):
            producer.produce("txn", value, partition=i % 3)
        for _ in range(3):
            try:
                producer.commit_transaction(TIMEOUT)
                committed.extend(values)
                resumed = time.monotonic() - killed_at
                break
            except KafkaException as e:
                error = e.args[0]
                print(f"{time.monotonic() - killed_at:.1f}s after the coordinator's death: {error}")
                if error.txn_requires_abort():
                    producer.abort_transaction(TIMEOUT)
                    aborted.extend(values)
                    break
                if not error.retriable():
                    raise
        if resumed is not None:
            break
    assert resumed is not None, "no transaction committed after the coordinator died"
    print(f"a transaction committed {resumed:.2f}s after the coordinator (broker {coordinator}) was killed")
    new_coordinator = find_coordinator(cluster.broker(live_ids(cluster)[0]).port, transactional_id, 1)
    assert new_coordinator != coordinator
    transaction("e", False)
    transaction("f", True)
    cluster.broker(coordinator).start()
    wait_for_full_isr(cluster, {"txn": 3, "__transaction_state": 3})
    wait_for_markers(cluster, "txn", 3)
    log = read_log(cluster, "txn", 3, isolation="read_committed")
    seen = [v for p in log.values() for _, v in p]
    assert sorted(seen) == sorted(committed), (
        f"read_committed saw {len(seen)} records, {len(committed)} committed; "
        f"aborted seen: {sorted(set(seen) & set(aborted))[:5]}, committed missing: {sorted(set(committed) - set(seen))[:5]}"
    )
    for p, records in log.items():
        names = [v.decode() for _, v in records]
        assert names == sorted(names, key=lambda s: (committed.index(s.encode()))), f"partition {p} out of order"
