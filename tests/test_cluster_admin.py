"""The cluster admin APIs: DescribeLogDirs (35), ElectLeaders (43),
AlterPartitionReassignments (45) and ListPartitionReassignments (46), against real
broker processes (and a real ZooKeeper for the cluster): a partition with data moved
from brokers [1, 2] to [3, 4], preferred and unclean leader elections, each broker's
log dir with sizes that grow, and what a single broker answers. Clients: confluent-kafka
where it has the call (elect_leaders), raw kio requests otherwise."""

from __future__ import annotations

import datetime
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster_harness import KwireCluster, wait_until, zk_client
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ElectionType,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import BrokerProcess
from kio.schema.alter_partition_reassignments.v0.request import (
    AlterPartitionReassignmentsRequest,
    ReassignablePartition,
    ReassignableTopic,
)
from kio.schema.errors import ErrorCode
from kio.schema.list_partition_reassignments.v0.request import (
    ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsTopics,
)
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from raw_client import RawClient

from kwire.protocol.messages import make, request_module

TIMEOUT = 30.0
# A short ZooKeeper session so a stopped broker is noticed quickly; no automatic
# rebalancing, so only ElectLeaders moves a leader back.
OVERRIDES = {
    "zookeeper.session.timeout.ms": "6000",
    "auto.leader.rebalance.enable": "false",
    "offsets.topic.replication.factor": "3",
    "offsets.topic.num.partitions": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.num.partitions": "3",
    "num.partitions": "1",
}


# ----------------------------------------------------------------------------- requests


def describe_log_dirs(port: int, topics: dict[str, list[int]] | None = None, version: int = 4) -> Any:
    module = request_module(35, version)
    wanted = None if topics is None else tuple(
        module.DescribableLogDirTopic(topic=name, partitions=tuple(parts)) for name, parts in topics.items()
    )
    with RawClient(port, timeout=10) as client:
        return client.send(module.DescribeLogDirsRequest(topics=wanted))


def replica_sizes(port: int) -> dict[tuple[str, int], int]:
    """(topic, partition) -> size of each replica in the broker's one log dir."""
    response = describe_log_dirs(port)
    (result,) = response.results
    assert result.error_code == ErrorCode.none
    return {(t.name, p.partition_index): p.partition_size for t in result.topics for p in t.partitions}


def elect_leaders(
    port: int, partitions: dict[str, list[int]] | None, election_type: int = 0, version: int = 2
) -> tuple[ErrorCode | None, dict[tuple[str, int], tuple[ErrorCode, str | None]]]:
    """(top-level error, or None in v0; per partition error and message)."""
    module = request_module(43, version)
    wanted = None if partitions is None else tuple(
        module.TopicPartitions(topic=name, partitions=tuple(parts)) for name, parts in partitions.items()
    )
    request = make(module.ElectLeadersRequest, election_type=election_type, topic_partitions=wanted,
                   timeout=datetime.timedelta(seconds=15))
    with RawClient(port, timeout=30) as client:
        response = client.send(request)
    results = {
        (r.topic, p.partition_id): (p.error_code, p.error_message)
        for r in response.replica_election_results for p in r.partition_result
    }
    return getattr(response, "error_code", None), results


def reassign(port: int, targets: dict[tuple[str, int], list[int] | None]) -> tuple[ErrorCode, dict[tuple[str, int], tuple[ErrorCode, str | None]]]:
    by_topic: dict[str, list[ReassignablePartition]] = {}
    for (topic, index), replicas in targets.items():
        by_topic.setdefault(topic, []).append(
            ReassignablePartition(partition_index=index, replicas=None if replicas is None else tuple(replicas))
        )
    request = AlterPartitionReassignmentsRequest(
        timeout=datetime.timedelta(seconds=30),
        topics=tuple(ReassignableTopic(name=t, partitions=tuple(ps)) for t, ps in by_topic.items()),
    )
    with RawClient(port, timeout=30) as client:
        response = client.send(request)
    results = {(t.name, p.partition_index): (p.error_code, p.error_message) for t in response.responses for p in t.partitions}
    return response.error_code, results


def list_reassignments(port: int, topics: dict[str, list[int]] | None = None) -> tuple[ErrorCode, dict[tuple[str, int], tuple[list[int], list[int], list[int]]]]:
    """(top-level error, (topic, partition) -> (replicas, adding, removing))."""
    wanted = None if topics is None else tuple(
        ListPartitionReassignmentsTopics(name=name, partition_indexes=tuple(parts)) for name, parts in topics.items()
    )
    request = ListPartitionReassignmentsRequest(timeout=datetime.timedelta(seconds=30), topics=wanted)
    with RawClient(port, timeout=30) as client:
        response = client.send(request)
    ongoing = {
        (t.name, p.partition_index): (list(p.replicas), list(p.adding_replicas), list(p.removing_replicas))
        for t in response.topics for p in t.partitions
    }
    return response.error_code, ongoing


# ----------------------------------------------------------------------------- helpers


def metadata(port: int, topic: str | None = None) -> tuple[set[int], int, dict[int, tuple[int, tuple[int, ...], tuple[int, ...]]]]:
    """One broker's Metadata: (broker ids, controller id, partition -> (leader, replicas, sorted isr))."""
    topics = None if topic is None else (MetadataRequestTopic(name=topic, topic_id=None),)
    with RawClient(port, timeout=10) as client:
        response = client.send(MetadataRequest(
            topics=topics, allow_auto_topic_creation=False, include_topic_authorized_operations=False,
        ))
    partitions = {
        p.partition_index: (int(p.leader_id), tuple(int(r) for r in p.replica_nodes), tuple(sorted(int(r) for r in p.isr_nodes)))
        for t in response.topics if t.name == topic for p in t.partitions
    }
    return {int(b.node_id) for b in response.brokers}, int(response.controller_id), partitions


def start_cluster(factory: Callable[..., KwireCluster], n: int) -> KwireCluster:
    """A cluster whose brokers all know each other and the controller (a broker answers
    ApiVersions before it has joined)."""
    cluster = factory(n, OVERRIDES)

    def joined() -> bool:
        for i in cluster.ids:
            brokers, controller, _ = metadata(cluster.broker(i).port)
            if brokers != set(cluster.ids) or controller not in brokers:
                return False
        return True

    wait_until(joined, 20, interval=0.05, message="every broker's Metadata lists all brokers and the controller")
    return cluster



def create_topic(bootstrap: str, name: str, assignment: list[list[int]] | None = None, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})
    topic = NewTopic(name, num_partitions=len(assignment), replica_assignment=assignment) if assignment else NewTopic(name, partitions, 1)
    admin.create_topics([topic], operation_timeout=TIMEOUT)[name].result(TIMEOUT)


def produce(bootstrap: str, topic: str, count: int, partition: int = 0, prefix: bytes = b"") -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "message.timeout.ms": 60000, "topic.metadata.refresh.interval.ms": 1000})
    errors: list[str] = []
    for i in range(count):
        while True:
            try:
                producer.produce(topic, prefix + b"%d" % i, partition=partition,
                                 on_delivery=lambda e, _m: e is not None and errors.append(e.name()))
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(TIMEOUT) == 0, "records still undelivered"
    assert not errors, errors[:5]


def consume_all(bootstrap: str, topic: str, partition: int, expected: int) -> list[bytes]:
    """The partition's records from the start, read from its current leader."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4()}",
                         "enable.auto.commit": False, "topic.metadata.refresh.interval.ms": 1000})
    values: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=TIMEOUT)
        while len(values) < expected:
            assert datetime.datetime.now() < deadline, f"read {len(values)} of {expected} records"
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(message.error())
            values.append(message.value())
    finally:
        consumer.close()
    return values


def controller_id(cluster: KwireCluster) -> int:
    with zk_client(cluster.connect_string) as zk:
        return int(json.loads(zk.get("/controller")[0])["brokerid"])


def zk_state(cluster: KwireCluster, topic: str, partition: int) -> dict[str, Any]:
    """The partition's state znode: leader, leader_epoch, isr."""
    with zk_client(cluster.connect_string) as zk:
        return json.loads(zk.get(f"/brokers/topics/{topic}/partitions/{partition}/state")[0])


def running(cluster: KwireCluster) -> list[int]:
    return [i for i in cluster.ids if cluster.broker(i).process is not None]


def agreed_partition(cluster: KwireCluster, topic: str, partition: int) -> tuple[int, tuple[int, ...], tuple[int, ...]] | None:
    """(leader, replicas, sorted isr) if every running broker's Metadata says the same."""
    seen = {metadata(cluster.broker(i).port, topic)[2].get(partition) for i in running(cluster)}
    return seen.pop() if len(seen) == 1 else None


# ----------------------------------------------------------------------------- cluster


def test_reassignment_moves_a_partition_with_data_to_two_other_brokers(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    cluster = start_cluster(kwire_cluster_factory, 4)
    create_topic(cluster.bootstrap, "moving", [[1, 2]])
    wait_until(lambda: sorted(zk_state(cluster, "moving", 0)["isr"]) == [1, 2], TIMEOUT, interval=0.1,
               message="moving-0 in sync on [1, 2]")
    produce(cluster.bootstrap, "moving", 5000)
    wait_until(lambda: all(replica_sizes(cluster.broker(i).port).get(("moving", 0), 0) > 0 for i in (1, 2)),
               TIMEOUT, message="both replicas hold the records")
    controller = controller_id(cluster)
    non_controller = next(i for i in cluster.ids if i != controller)

    # Only the controller reassigns, and lists reassignments.
    error, results = reassign(cluster.broker(non_controller).port, {("moving", 0): [3, 4]})
    assert (error, results) == (ErrorCode.not_controller, {})
    assert list_reassignments(cluster.broker(non_controller).port) == (ErrorCode.not_controller, {})
    # Invalid targets, cancelling what is not in progress, an unknown partition.
    port = cluster.broker(controller).port
    error, results = reassign(port, {
        ("moving", 0): [3, 3], ("moving", 1): [3, 4], ("nowhere", 0): [1], ("moving", 7): None,
    })
    assert error == ErrorCode.none
    assert results[("moving", 0)][0] == ErrorCode.invalid_replica_assignment, results
    assert "Duplicate replica ids" in (results[("moving", 0)][1] or "")
    assert results[("moving", 1)][0] == ErrorCode.unknown_topic_or_partition, results
    assert results[("nowhere", 0)][0] == ErrorCode.unknown_topic_or_partition, results
    error, results = reassign(port, {("moving", 0): None})
    assert results == {("moving", 0): (ErrorCode.no_reassignment_in_progress, "No partition reassignment is in progress.")}
    error, results = reassign(port, {("moving", 0): [3, 9]})
    assert results[("moving", 0)][0] == ErrorCode.invalid_replica_assignment, results
    assert list_reassignments(port) == (ErrorCode.none, {})

    # One target broker is frozen, so the move stays in progress while we look.
    frozen = 4 if controller != 4 else 3
    cluster.pause(frozen)
    try:
        error, results = reassign(port, {("moving", 0): [3, 4]})
        assert (error, results) == (ErrorCode.none, {("moving", 0): (ErrorCode.none, None)})
        error, ongoing = list_reassignments(port)
        assert error == ErrorCode.none
        replicas, adding, removing = ongoing[("moving", 0)]
        assert sorted(replicas) == [1, 2, 3, 4] and sorted(adding) == [3, 4] and sorted(removing) == [1, 2], ongoing
        assert list_reassignments(port, {"moving": [0, 1], "other": [0]})[1] == ongoing
        assert list_reassignments(port, {"other": [0]})[1] == {}
        # Every broker learns the new assignment from ZooKeeper's watch, a moment later.
        wait_until(lambda: sorted(metadata(cluster.broker(1).port, "moving")[2][0][1]) == [1, 2, 3, 4],
                   TIMEOUT, interval=0.02, message="Metadata lists the old and new replicas")
    finally:
        cluster.resume(frozen)

    wait_until(lambda: list_reassignments(cluster.broker(controller_id(cluster)).port) == (ErrorCode.none, {}),
               TIMEOUT, interval=0.2, message="the reassignment completes")
    state = zk_state(cluster, "moving", 0)
    assert sorted(state["isr"]) == [3, 4] and state["leader"] in (3, 4), state
    view = wait_until(lambda: agreed_partition(cluster, "moving", 0), TIMEOUT, interval=0.2,
                      message="every broker's Metadata agrees on moving-0")
    leader, replicas, isr = view
    assert replicas == (3, 4) and isr == (3, 4) and leader in (3, 4), view
    # The old replicas' logs are gone; the new ones hold the data.
    for old in (1, 2):
        wait_until(lambda old=old: not (cluster.broker(old).data_dir / "moving-0").exists(), TIMEOUT,
                   message=f"broker {old} deleted its replica of moving-0")
        assert ("moving", 0) not in replica_sizes(cluster.broker(old).port)
    assert all(replica_sizes(cluster.broker(i).port)[("moving", 0)] > 0 for i in (3, 4))
    values = consume_all(cluster.broker(leader).bootstrap, "moving", 0, 5000)
    assert values == [b"%d" % i for i in range(5000)]


def test_elect_leaders_moves_leadership_back_to_the_preferred_replica(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    cluster = start_cluster(kwire_cluster_factory, 3)
    create_topic(cluster.bootstrap, "pref", [[1, 2, 3]])
    wait_until(lambda: (s := zk_state(cluster, "pref", 0))["leader"] == 1 and len(s["isr"]) == 3, TIMEOUT,
               interval=0.1, message="pref-0 led by 1 with a full ISR")
    produce(cluster.bootstrap, "pref", 100)

    # The preferred leader leaves and comes back: leadership stays where it went.
    cluster.stop(1)
    wait_until(lambda: zk_state(cluster, "pref", 0)["leader"] in (2, 3), TIMEOUT, interval=0.1,
               message="a new leader for pref-0")
    cluster.broker(1).start()
    wait_until(lambda: len(zk_state(cluster, "pref", 0)["isr"]) == 3, TIMEOUT, interval=0.1,
               message="broker 1 back in the ISR")
    other_leader = zk_state(cluster, "pref", 0)["leader"]
    assert other_leader != 1

    controller = controller_id(cluster)
    non_controller = next(i for i in cluster.ids if i != controller)
    # A broker that is not the controller: NOT_CONTROLLER, top-level from v1, per partition always.
    assert elect_leaders(cluster.broker(non_controller).port, {"pref": [0]}) == (
        ErrorCode.not_controller, {("pref", 0): (ErrorCode.not_controller, None)})
    assert elect_leaders(cluster.broker(non_controller).port, {"pref": [0]}, version=0) == (
        None, {("pref", 0): (ErrorCode.not_controller, None)})

    # confluent-kafka's AdminClient finds the controller itself.
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "socket.timeout.ms": 10000})
    tp = TopicPartition("pref", 0)
    result = admin.elect_leaders(ElectionType.PREFERRED, [tp]).result(TIMEOUT)
    assert list(result.values()) == [None], result
    # Answered once the controller's broker knows; every broker follows.
    view = wait_until(lambda: agreed_partition(cluster, "pref", 0), 10, interval=0.1, message="Metadata agrees")
    assert view[0] == view[1][0] == 1, view
    assert zk_state(cluster, "pref", 0)["leader"] == 1

    # Nothing left to do.
    result = admin.elect_leaders(ElectionType.PREFERRED, [tp]).result(TIMEOUT)
    (error,) = result.values()
    assert isinstance(error, KafkaError) and error.code() == KafkaError.ELECTION_NOT_NEEDED, result
    port = cluster.broker(controller_id(cluster)).port
    assert elect_leaders(port, {"pref": [0], "nowhere": [0]}) == (ErrorCode.none, {
        ("pref", 0): (ErrorCode.election_not_needed, "Leader election not needed for topic partition."),
        ("nowhere", 0): (ErrorCode.unknown_topic_or_partition, "The partition does not exist."),
    })
    assert elect_leaders(port, {"pref": [0]}, version=0) == (
        None, {("pref", 0): (ErrorCode.election_not_needed, "Leader election not needed for topic partition.")})
    # All partitions: those that needed no election are left out.
    assert elect_leaders(port, None) == (ErrorCode.none, {})
    assert consume_all(cluster.bootstrap, "pref", 0, 100) == [b"%d" % i for i in range(100)]


def test_unclean_election_brings_an_out_of_sync_replica_to_lead(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    cluster = start_cluster(kwire_cluster_factory, 3)
    create_topic(cluster.bootstrap, "dirty", [[2, 3]])
    wait_until(lambda: (s := zk_state(cluster, "dirty", 0))["leader"] == 2 and len(s["isr"]) == 2, TIMEOUT,
               interval=0.1, message="dirty-0 led by 2 with a full ISR")
    produce(cluster.bootstrap, "dirty", 10, prefix=b"both-")
    cluster.stop(3)
    wait_until(lambda: zk_state(cluster, "dirty", 0)["isr"] == [2], TIMEOUT, interval=0.1, message="3 left the ISR")
    produce(cluster.broker(2).bootstrap, "dirty", 10, prefix=b"only-2-")
    cluster.stop(2)
    wait_until(lambda: zk_state(cluster, "dirty", 0)["leader"] == -1, TIMEOUT, interval=0.1,
               message="dirty-0 offline")
    cluster.broker(3).start()
    port = cluster.broker(controller_id(cluster)).port
    wait_until(lambda: 3 in metadata(port)[0], 20, interval=0.05, message="broker 3 registered again")
    # The live replica is not in sync: a preferred election cannot help, an unclean one can.
    error, results = elect_leaders(port, {"dirty": [0]}, election_type=0)
    assert results[("dirty", 0)][0] == ErrorCode.preferred_leader_not_available, results
    error, results = elect_leaders(port, {"dirty": [0]}, election_type=1)
    assert (error, results) == (ErrorCode.none, {("dirty", 0): (ErrorCode.none, None)})
    state = zk_state(cluster, "dirty", 0)
    assert state["leader"] == 3 and state["isr"] == [3], state
    # A live leader needs no election.
    assert elect_leaders(port, {"dirty": [0]}, election_type=1)[1] == {
        ("dirty", 0): (ErrorCode.election_not_needed, "Leader election not needed for topic partition.")}
    # What broker 3 had is what it now serves: the records only broker 2 had are lost.
    assert consume_all(cluster.broker(3).bootstrap, "dirty", 0, 10) == [b"both-%d" % i for i in range(10)]


def test_describe_log_dirs_lists_each_brokers_replicas_and_their_growth(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    cluster = start_cluster(kwire_cluster_factory, 3)
    create_topic(cluster.bootstrap, "sizes", [[1, 2], [2, 3], [3, 1]])
    assignment = {0: (1, 2), 1: (2, 3), 2: (3, 1)}
    wait_until(lambda: all(len(zk_state(cluster, "sizes", p)["isr"]) == 2 for p in range(3)), TIMEOUT,
               interval=0.1, message="sizes in sync")

    def sizes(broker_id: int) -> dict[int, int]:
        return {p: s for (t, p), s in replica_sizes(cluster.broker(broker_id).port).items() if t == "sizes"}

    for broker_id in cluster.ids:
        mine = {p for p, replicas in assignment.items() if broker_id in replicas}
        wait_until(lambda broker_id=broker_id, mine=mine: set(sizes(broker_id)) == mine, 10,
                   message=f"broker {broker_id} lists its replicas {mine}")
        response = describe_log_dirs(cluster.broker(broker_id).port)
        (result,) = response.results
        assert result.log_dir == os.path.abspath(cluster.broker(broker_id).data_dir)
        assert 0 < result.usable_bytes <= result.total_bytes
    before = {i: sizes(i) for i in cluster.ids}
    for p in range(3):
        produce(cluster.bootstrap, "sizes", 300 * (p + 1), partition=p)

    def grown() -> bool:
        return all(sizes(i)[p] > before[i][p] for i in cluster.ids for p in before[i])

    wait_until(grown, TIMEOUT, interval=0.2, message="every replica, leader and follower, grew")
    # Both replicas of a partition hold the same bytes once in sync, and more records take more.
    after = {i: sizes(i) for i in cluster.ids}
    for p, (a, b) in assignment.items():
        wait_until(lambda p=p, a=a, b=b: sizes(a)[p] == sizes(b)[p], 10, message=f"sizes-{p} replicas agree")
    assert after[1][0] < after[2][1] < after[3][2]
    # The topics filter, on the broker holding partitions 0 and 2.
    (result,) = describe_log_dirs(cluster.broker(1).port, {"sizes": [2, 1], "nowhere": [0]}).results
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in result.topics] == [("sizes", [2])]
    assert all(p.offset_lag == 0 and not p.is_future_key for t in result.topics for p in t.partitions)


# ----------------------------------------------------------------------------- one broker


def test_single_broker_answers(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "solo", partitions=2)
    produce(broker.bootstrap, "solo", 50, partition=1)
    port = broker.port
    data_dir = os.path.abspath(broker.data_dir)

    # DescribeLogDirs, every served version.
    for version in (1, 2, 3, 4):
        response = describe_log_dirs(port, version=version)
        (result,) = response.results
        assert result.error_code == ErrorCode.none and result.log_dir == data_dir
        sizes = {(t.name, p.partition_index): p.partition_size for t in result.topics for p in t.partitions}
        assert sizes[("solo", 1)] > 0 and sizes[("solo", 0)] == 0, sizes
        if version >= 3:
            assert response.error_code == ErrorCode.none
        if version >= 4:
            assert 0 < result.usable_bytes <= result.total_bytes
    before = replica_sizes(port)[("solo", 1)]
    produce(broker.bootstrap, "solo", 50, partition=1)
    assert replica_sizes(port)[("solo", 1)] > before
    (result,) = describe_log_dirs(port, {"solo": [0]}).results
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in result.topics] == [("solo", [0])]
    (result,) = describe_log_dirs(port, {"nowhere": [0]}).results
    assert result.topics == ()

    # ElectLeaders: the one broker leads everything already.
    not_needed = (ErrorCode.election_not_needed, "Leader election not needed for topic partition.")
    for version in (0, 1, 2):
        error, results = elect_leaders(port, {"solo": [0, 1], "nowhere": [3]}, version=version)
        assert error == (None if version == 0 else ErrorCode.none)
        assert results == {("solo", 0): not_needed, ("solo", 1): not_needed,
                           ("nowhere", 3): (ErrorCode.unknown_topic_or_partition, "The partition does not exist.")}
    assert elect_leaders(port, None) == (ErrorCode.none, {})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    result = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("solo", 0)]).result(TIMEOUT)
    (error,) = result.values()
    assert isinstance(error, KafkaError) and error.code() == KafkaError.ELECTION_NOT_NEEDED

    # AlterPartitionReassignments: only onto this broker, which is no move at all.
    error, results = reassign(port, {
        ("solo", 0): [0], ("solo", 1): [0, 1], ("nowhere", 0): [0], ("solo", 5): [], ("solo", 6): [-1],
    })
    assert error == ErrorCode.none
    assert results[("solo", 0)] == (ErrorCode.none, None)
    assert results[("solo", 1)][0] == ErrorCode.invalid_replica_assignment
    assert "not alive" in (results[("solo", 1)][1] or "")
    assert results[("nowhere", 0)][0] == ErrorCode.unknown_topic_or_partition
    assert results[("solo", 5)] == (ErrorCode.invalid_replica_assignment,
                                    "Empty replica list specified in partition reassignment.")
    assert results[("solo", 6)][0] == ErrorCode.invalid_replica_assignment
    assert reassign(port, {("solo", 0): None})[1] == {
        ("solo", 0): (ErrorCode.no_reassignment_in_progress, "No partition reassignment is in progress.")}
    # ListPartitionReassignments: none, ever.
    assert list_reassignments(port) == (ErrorCode.none, {})
    assert list_reassignments(port, {"solo": [0]}) == (ErrorCode.none, {})
    # Nothing moved.
    assert replica_sizes(port)[("solo", 1)] > before
    assert Path(broker.data_dir, "solo-0").is_dir()
