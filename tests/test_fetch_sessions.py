"""Incremental fetch sessions (KIP-227) and request-level fetch limits, against a real
broker process: eviction from a full session cache, sessions across a consumer-group
rebalance, topics growing or deleted under a session, max_bytes and min_bytes."""

from __future__ import annotations

import datetime
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v13.request import FetchPartition as FetchPartitionV13
from kio.schema.fetch.v13.request import FetchRequest as FetchRequestV13
from kio.schema.fetch.v13.request import FetchTopic as FetchTopicV13
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.static.primitive import Records
from raw_client import RawClient
from test_fetch import fetch, partitions_of, produce_values, records_in
from test_idempotence import produce

from kwire.protocol.records import build_batch

TIMEOUT = 30


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10)[name].result(timeout=TIMEOUT)


def topic_id(client: RawClient, name: str) -> uuid.UUID:
    response = client.send(MetadataRequest(
        topics=(MetadataRequestTopic(name=name, topic_id=None),), allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    ))
    [topic] = response.topics
    assert topic.error_code == ErrorCode.none
    return topic.topic_id


def fetch_by_id(client: RawClient, partitions: dict[tuple[uuid.UUID, int], int], *, session_id: int, epoch: int,
                max_wait_ms: int = 0):
    """A v13 fetch (topics named by id)."""
    topics: dict[uuid.UUID, list[FetchPartitionV13]] = {}
    for (tid, index), offset in partitions.items():
        topics.setdefault(tid, []).append(FetchPartitionV13(partition=index, fetch_offset=offset, partition_max_bytes=1 << 20))
    return client.send(FetchRequestV13(
        max_wait=datetime.timedelta(milliseconds=max_wait_ms), min_bytes=1, max_bytes=1 << 24,
        session_id=session_id, session_epoch=epoch,
        topics=tuple(FetchTopicV13(topic_id=t, partitions=tuple(p)) for t, p in topics.items()),
        forgotten_topics_data=(),
    ))


def produce_to(port: int, topic: str, index: int, value: bytes) -> int:
    """One record to one partition (acks=1); its base offset."""
    with RawClient(port) as client:
        response = client.send(ProduceRequest(
            transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=10),
            topic_data=(TopicProduceData(name=topic, partition_data=(
                PartitionProduceData(index=index, records=Records(build_batch([(None, value)]))),)),),
        ))
    [answer] = response.responses[0].partition_responses
    assert answer.error_code == ErrorCode.none
    return answer.base_offset


def errors_by_id(response) -> dict[tuple[uuid.UUID, int], ErrorCode]:
    return {(t.topic_id, p.partition_index): p.error_code for t in response.responses for p in t.partitions}


# ---- eviction ------------------------------------------------------------------------


def test_full_session_cache_evicts_the_least_recently_used_session(broker_factory) -> None:
    broker = broker_factory({"max.incremental.fetch.session.cache.slots": "2"})
    create_topic(broker.bootstrap, "evict")
    produce_values(broker.bootstrap, "evict", [b"e0", b"e1"])
    with RawClient(broker.port) as a, RawClient(broker.port) as b, RawClient(broker.port) as c:
        first = fetch(a, {("evict", 0): 0}, epoch=0)
        second = fetch(b, {("evict", 0): 0}, epoch=0)
        assert first.session_id > 0 and second.session_id > 0 and first.session_id != second.session_id
        # a's session is used again (epoch 1): b's is now the least recently used.
        assert fetch(a, {}, session_id=first.session_id, epoch=1).error_code == ErrorCode.none
        third = fetch(c, {("evict", 0): 0}, epoch=0)
        assert third.session_id not in (0, first.session_id, second.session_id)
        # b's session is gone: its next incremental fetch is refused, with no partitions.
        evicted = fetch(b, {}, session_id=second.session_id, epoch=1)
        assert evicted.error_code == ErrorCode.fetch_session_id_not_found
        assert evicted.session_id == 0 and partitions_of(evicted) == {}
        # a's and c's sessions live on.
        assert fetch(a, {}, session_id=first.session_id, epoch=2).error_code == ErrorCode.none
        assert fetch(c, {}, session_id=third.session_id, epoch=1).error_code == ErrorCode.none
        # A full fetch recovers: a new session, and the records from where b was.
        recovered = fetch(b, {("evict", 0): 1}, epoch=0)
        assert recovered.error_code == ErrorCode.none and recovered.session_id > 0
        assert [(r.offset, r.value) for r in records_in(partitions_of(recovered)[("evict", 0)].records)] == [(1, b"e1")]
        follow_up = fetch(b, {("evict", 0): 2}, session_id=recovered.session_id, epoch=1, max_wait_ms=50)
        assert follow_up.error_code == ErrorCode.none and partitions_of(follow_up) == {}


def test_zero_session_slots_answers_sessionless(broker_factory) -> None:
    broker = broker_factory({"max.incremental.fetch.session.cache.slots": "0"})
    create_topic(broker.bootstrap, "nosess")
    with RawClient(broker.port) as client:
        response = fetch(client, {("nosess", 0): 0}, epoch=0)
        assert response.error_code == ErrorCode.none and response.session_id == 0
        assert set(partitions_of(response)) == {("nosess", 0)}


def consume_all(make: Callable[[], object], poll: Callable[[object], list[tuple[int, int, bytes]]],
                close: Callable[[object], None], got: list, stop: threading.Event) -> None:
    consumer = make()
    try:
        while not stop.is_set():
            got.extend(poll(consumer))
    finally:
        close(consumer)


def test_kafka_python_consumers_recover_from_evicted_sessions(broker_factory) -> None:
    """One slot, two consumers: each full fetch evicts the other's session, and both
    still read every record once, in order."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTopicPartition

    broker = broker_factory({"max.incremental.fetch.session.cache.slots": "1"})
    for name in ("thrash-a", "thrash-b"):
        create_topic(broker.bootstrap, name)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    expected = 300
    stop = threading.Event()
    results: dict[str, list] = {"thrash-a": [], "thrash-b": []}

    def reader(name: str) -> None:
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
        consumer.assign([KTopicPartition(name, 0)])
        consumer.seek(KTopicPartition(name, 0), 0)
        try:
            while not stop.is_set() and len(results[name]) < expected:
                for records in consumer.poll(timeout_ms=100).values():
                    results[name].extend((r.offset, r.value) for r in records)
        finally:
            consumer.close()

    threads = [threading.Thread(target=reader, args=(name,), daemon=True) for name in results]
    for thread in threads:
        thread.start()
    for i in range(expected):
        for name in results:
            producer.produce(name, value=f"{name}-{i}".encode())
        if i % 10 == 0:
            producer.flush(TIMEOUT)  # many small fetches, so the sessions keep turning over
    assert producer.flush(TIMEOUT) == 0
    for thread in threads:
        thread.join(TIMEOUT)
    stop.set()
    for name, got in results.items():
        assert got == [(i, f"{name}-{i}".encode()) for i in range(expected)], name


# ---- a consumer-group rebalance --------------------------------------------------------


def kafka_python_group_member(bootstrap: str, topic: str, group: str) -> tuple[Callable, Callable, Callable]:
    from kafka import KafkaConsumer

    def make() -> object:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
            enable_auto_commit=True, auto_commit_interval_ms=60_000,  # commits on rebalance, not by time
            heartbeat_interval_ms=200, session_timeout_ms=6000, fetch_max_wait_ms=100,
        )
        # The topic's metadata first: with group.initial.rebalance.delay.ms=0 the join
        # can complete before kafka-python has it, and its leader then assigns nothing
        # ("No partition metadata") and may not rejoin (seen under load; a client race).
        deadline = time.monotonic() + TIMEOUT
        while not consumer.partitions_for_topic(topic):  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, f"kafka-python has no metadata for {topic}"
            time.sleep(0.05)
        consumer.subscribe([topic])
        return consumer

    def poll(consumer: object) -> list[tuple[int, int, bytes]]:
        batches = consumer.poll(timeout_ms=100)  # type: ignore[attr-defined]
        return [(r.partition, r.offset, r.value) for records in batches.values() for r in records]

    def close(consumer: object) -> None:
        consumer.close()  # type: ignore[attr-defined]

    return make, poll, close


def confluent_group_member(bootstrap: str, topic: str, group: str) -> tuple[Callable, Callable, Callable]:
    def make() -> object:
        consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "heartbeat.interval.ms": 200, "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 100,
        })

        def on_revoke(c: Consumer, partitions: list) -> None:
            # What was consumed is committed before the partitions move.
            try:
                c.commit(asynchronous=False)
            except KafkaException:
                pass  # nothing consumed since the last commit

        consumer.subscribe([topic], on_revoke=on_revoke)
        return consumer

    def poll(consumer: object) -> list[tuple[int, int, bytes]]:
        messages = consumer.consume(100, timeout=0.1)  # type: ignore[attr-defined]
        for m in messages:
            if m.error():
                raise KafkaException(m.error())
        return [(m.partition(), m.offset(), m.value()) for m in messages]

    def close(consumer: object) -> None:
        consumer.close()  # type: ignore[attr-defined]

    return make, poll, close


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_group_rebalance_keeps_consuming_without_gap_or_duplicate(broker, client: str) -> None:
    topic = f"rebalance-{client}"
    create_topic(broker.bootstrap, topic, 4)
    member = kafka_python_group_member if client == "kafka-python" else confluent_group_member
    make, poll, close = member(broker.bootstrap, topic, f"g-{client}")
    first: list = []
    second: list = []
    stop = threading.Event()
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    produced = 0

    def produce_more(count: int) -> None:
        nonlocal produced
        for i in range(produced, produced + count):
            producer.produce(topic, key=str(i).encode(), value=str(i).encode())
        assert producer.flush(TIMEOUT) == 0
        produced += count

    def wait_until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.02)

    produce_more(200)
    one = threading.Thread(target=consume_all, args=(make, poll, close, first, stop), daemon=True)
    one.start()
    wait_until(lambda: len(first) >= 100, "the first member did not start consuming")
    # The second member joins while records keep coming.
    two = threading.Thread(target=consume_all, args=(make, poll, close, second, stop), daemon=True)
    two.start()
    deadline = time.monotonic() + TIMEOUT
    while not second and time.monotonic() < deadline:
        produce_more(10)
        time.sleep(0.05)
    first_before = len(first)
    # Both keep consuming after the rebalance.
    for _ in range(20):
        produce_more(10)
        time.sleep(0.02)
    wait_until(lambda: len(first) + len(second) >= produced, "records missing")
    time.sleep(0.5)  # a duplicate delivered late would show up here
    stop.set()
    one.join(TIMEOUT)
    two.join(TIMEOUT)
    assert second, "the second member got no records"
    assert len(first) > first_before, "the first member stopped consuming after the rebalance"
    everything = first + second
    values = sorted(int(v) for _, _, v in everything)
    assert values == list(range(produced)), (len(values), len(set(values)), produced)
    # Per partition, offsets run 0..n-1 exactly once across both members.
    by_partition: dict[int, list[int]] = {}
    for partition, offset, _ in everything:
        by_partition.setdefault(partition, []).append(offset)
    for partition, offsets in by_partition.items():
        assert sorted(offsets) == list(range(len(offsets))), partition


# ---- the topic changes under a session ---------------------------------------------------


def test_session_follows_create_partitions(broker) -> None:
    create_topic(broker.bootstrap, "grow", 1)
    with RawClient(broker.port) as client:
        full = fetch(client, {("grow", 0): 0}, epoch=0)
        session = full.session_id
        assert session > 0
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_partitions([NewPartitions("grow", 3)])["grow"].result(TIMEOUT)
        # New partitions join the session in an incremental request.
        added = fetch(client, {("grow", 1): 0, ("grow", 2): 0}, session_id=session, epoch=1)
        assert added.error_code == ErrorCode.none
        assert {k: p.error_code for k, p in partitions_of(added).items()} == {
            ("grow", 1): ErrorCode.none, ("grow", 2): ErrorCode.none,
        }
        # Records on a new partition wake the session's long poll.
        threading.Timer(0.3, produce_to, (broker.port, "grow", 2, b"p2")).start()
        started = time.monotonic()
        changed = fetch(client, {}, session_id=session, epoch=2, max_wait_ms=5000)
        assert time.monotonic() - started < 4
        assert list(partitions_of(changed)) == [("grow", 2)]
        assert [r.value for r in records_in(partitions_of(changed)[("grow", 2)].records)] == [b"p2"]


def test_topic_deleted_under_a_session(broker) -> None:
    create_topic(broker.bootstrap, "stay")
    create_topic(broker.bootstrap, "doomed")
    produce_values(broker.bootstrap, "doomed", [b"d0"])
    with RawClient(broker.port) as client, RawClient(broker.port) as by_id:
        full = fetch(client, {("stay", 0): 0, ("doomed", 0): 1}, epoch=0)
        session = full.session_id
        doomed_id = topic_id(by_id, "doomed")
        stay_id = topic_id(by_id, "stay")
        full_v13 = fetch_by_id(by_id, {(stay_id, 0): 0, (doomed_id, 0): 1}, session_id=0, epoch=0)
        assert errors_by_id(full_v13) == {(stay_id, 0): ErrorCode.none, (doomed_id, 0): ErrorCode.none}
        # A long poll is waiting on the session when the topic is deleted: it answers
        # at once with the partition's error, not at the end of max_wait.
        answers: list = []
        waiting = threading.Thread(target=lambda: answers.append(
            fetch(client, {}, session_id=session, epoch=1, max_wait_ms=10_000)), daemon=True)
        started = time.monotonic()
        waiting.start()
        time.sleep(0.3)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.delete_topics(["doomed"])["doomed"].result(TIMEOUT)
        waiting.join(TIMEOUT)
        assert answers, "the long poll did not answer"
        assert time.monotonic() - started < 5
        [answer] = answers
        assert answer.error_code == ErrorCode.none
        assert {k: p.error_code for k, p in partitions_of(answer).items()} == {
            ("doomed", 0): ErrorCode.unknown_topic_or_partition
        }
        # By id (v13), the deleted topic's id is unknown.
        after_v13 = fetch_by_id(by_id, {}, session_id=full_v13.session_id, epoch=1, max_wait_ms=5000)
        assert after_v13.error_code == ErrorCode.none
        assert errors_by_id(after_v13) == {(doomed_id, 0): ErrorCode.unknown_topic_id}
        # The session goes on: forget the partition, and the other topic still answers.
        forgot = fetch(client, {}, session_id=session, epoch=2, forgotten={"doomed": [0]}, max_wait_ms=100)
        assert forgot.error_code == ErrorCode.none and partitions_of(forgot) == {}
        produce_values(broker.bootstrap, "stay", [b"s0"])
        later = fetch(client, {}, session_id=session, epoch=3, max_wait_ms=5000)
        assert [r.value for r in records_in(partitions_of(later)[("stay", 0)].records)] == [b"s0"]
        # Recreated under the same name, the topic is usable (a new id: v13 sessions
        # name it afresh).
        create_topic(broker.bootstrap, "doomed")
        produce_values(broker.bootstrap, "doomed", [b"again"])
        again = fetch(client, {("doomed", 0): 0}, session_id=session, epoch=4)
        assert [r.value for r in records_in(partitions_of(again)[("doomed", 0)].records)] == [b"again"]
        assert topic_id(by_id, "doomed") != doomed_id


# ---- request-level limits -------------------------------------------------------------


def test_request_max_bytes_stops_at_the_limit_but_answers_one_batch(broker) -> None:
    create_topic(broker.bootstrap, "limit", 3)
    with RawClient(broker.port) as client:
        for index in range(3):
            for n in range(2):
                assert produce_to(broker.port, "limit", index, f"p{index}-{n}".encode() + b"x" * 1000) == n
        batch_size = len(build_batch([(None, b"p0-0" + b"x" * 1000)]))
        every = {("limit", i): 0 for i in range(3)}

        def offsets(response) -> dict[int, list[int]]:
            return {k[1]: [r.offset for r in records_in(p.records)] if p.records else [] for k, p in partitions_of(response).items()}

        # Room for three batches: partition 0's two and one of partition 1's.
        assert offsets(fetch(client, every, max_bytes=3 * batch_size)) == {0: [0, 1], 1: [0], 2: []}
        # Just under one batch: still the first batch (progress), and no more.
        assert offsets(fetch(client, every, max_bytes=batch_size - 1)) == {0: [0], 1: [], 2: []}
        assert offsets(fetch(client, every, max_bytes=1)) == {0: [0], 1: [], 2: []}
        # Enough for all.
        assert offsets(fetch(client, every, max_bytes=6 * batch_size)) == {0: [0, 1], 1: [0, 1], 2: [0, 1]}


def test_min_bytes_waits_for_enough_data_or_max_wait(broker) -> None:
    create_topic(broker.bootstrap, "minb")
    with RawClient(broker.port) as client:
        batch = build_batch([(None, b"y" * 1000)])
        assert produce(client, "minb", batch)[0] == ErrorCode.none
        # One batch ready (about 1 KB) is less than min_bytes: the answer waits max_wait.
        started = time.monotonic()
        response = fetch(client, {("minb", 0): 0}, min_bytes=5000, max_wait_ms=1500)
        waited = time.monotonic() - started
        assert 1.4 < waited < 6, waited
        assert [r.offset for r in records_in(partitions_of(response)[("minb", 0)].records)] == [0]
        # Appends that bring it over min_bytes end the wait early.

        def top_up() -> None:
            with RawClient(broker.port) as writer:
                for _ in range(4):
                    time.sleep(0.1)
                    assert produce(writer, "minb", batch)[0] == ErrorCode.none

        filler = threading.Timer(0.4, top_up)
        filler.start()
        started = time.monotonic()
        response = fetch(client, {("minb", 0): 0}, min_bytes=5000, max_wait_ms=20_000)
        waited = time.monotonic() - started
        filler.join(TIMEOUT)
        assert 0.5 < waited < 10, waited
        got = [r.offset for r in records_in(partitions_of(response)[("minb", 0)].records)]
        # Answered when the fifth batch arrived, not before (4 batches < 5000 bytes).
        assert len(got) * len(batch) >= 5000 and got == list(range(len(got))), got
        assert len(got) == 5, got
