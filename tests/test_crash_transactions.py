"""Transactions across a crash (SIGKILL) of a real broker process: a commit answered
just before the kill stays committed, an EndTxn cut off by the kill ends committed or
aborted (all or nothing, never stuck), and TxnOffsetCommit offsets survive."""

from __future__ import annotations

import datetime
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from kio.schema.add_offsets_to_txn.v3.request import AddOffsetsToTxnRequest
from kio.schema.add_partitions_to_txn.v3.request import (
    AddPartitionsToTxnRequest,
    AddPartitionsToTxnTopic,
)
from kio.schema.end_txn.v3.request import EndTxnRequest
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest
from kio.schema.init_producer_id.v4.request import InitProducerIdRequest
from kio.schema.list_transactions.v1.request import ListTransactionsRequest
from kio.schema.offset_fetch.v7.request import OffsetFetchRequest, OffsetFetchRequestTopic
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.schema.txn_offset_commit.v3.request import (
    TxnOffsetCommitRequest,
    TxnOffsetCommitRequestPartition,
    TxnOffsetCommitRequestTopic,
)
from kio.static.primitive import Records
from raw_client import RawClient
from test_transactions import committed_offsets, consume, create_topic, send, txn_producer

from kwire.protocol.records import build_batch, iter_records, validate_batches

TIMEOUT = 20


class RawTxn:
    """One transactional producer over raw requests, to place a kill between exact steps."""

    def __init__(self, client: RawClient, transactional_id: str, timeout_ms: int = 60_000) -> None:
        self.client = client
        self.transactional_id = transactional_id
        self.timeout_ms = timeout_ms
        self.sequences: dict[tuple[str, int], int] = {}
        self.producer_id = -1
        self.producer_epoch = -1

    def init(self) -> None:
        response = self.client.send(InitProducerIdRequest(
            transactional_id=self.transactional_id, transaction_timeout=datetime.timedelta(milliseconds=self.timeout_ms),
            producer_id=self.producer_id, producer_epoch=self.producer_epoch,
        ))
        assert response.error_code == ErrorCode.none, response.error_code
        self.producer_id, self.producer_epoch = response.producer_id, response.producer_epoch
        self.sequences.clear()

    def add_partitions(self, topic: str, partitions: tuple[int, ...]) -> None:
        response = self.client.send(AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=self.transactional_id, v3_and_below_producer_id=self.producer_id,
            v3_and_below_producer_epoch=self.producer_epoch,
            v3_and_below_topics=(AddPartitionsToTxnTopic(name=topic, partitions=partitions),),
        ))
        errors = {p.partition_index: p.partition_error_code for p in response.results_by_topic_v3_and_below[0].results_by_partition}
        assert errors == dict.fromkeys(partitions, ErrorCode.none), errors

    def produce(self, topic: str, partition: int, values: list[bytes]) -> int:
        sequence = self.sequences.get((topic, partition), 0)
        batch = build_batch([(None, v) for v in values], producer_id=self.producer_id, producer_epoch=self.producer_epoch,
                            base_sequence=sequence, transactional=True)
        response = self.client.send(ProduceRequest(
            transactional_id=self.transactional_id, acks=-1, timeout=datetime.timedelta(seconds=10),
            topic_data=(TopicProduceData(name=topic, partition_data=(PartitionProduceData(index=partition, records=Records(batch)),)),),
        ))
        [answer] = response.responses[0].partition_responses
        assert answer.error_code == ErrorCode.none, answer.error_code
        self.sequences[(topic, partition)] = sequence + len(values)
        return answer.base_offset

    def add_offsets(self, group_id: str) -> None:
        response = self.client.send(AddOffsetsToTxnRequest(
            transactional_id=self.transactional_id, producer_id=self.producer_id, producer_epoch=self.producer_epoch,
            group_id=group_id,
        ))
        assert response.error_code == ErrorCode.none, response.error_code

    def commit_offsets(self, group_id: str, offsets: dict[tuple[str, int], int]) -> None:
        topics: dict[str, list[TxnOffsetCommitRequestPartition]] = {}
        for (topic, index), offset in offsets.items():
            topics.setdefault(topic, []).append(TxnOffsetCommitRequestPartition(
                partition_index=index, committed_offset=offset, committed_leader_epoch=-1, committed_metadata="txn"))
        response = self.client.send(TxnOffsetCommitRequest(
            transactional_id=self.transactional_id, group_id=group_id, producer_id=self.producer_id,
            producer_epoch=self.producer_epoch, generation_id=-1, member_id="", group_instance_id=None,
            topics=tuple(TxnOffsetCommitRequestTopic(name=t, partitions=tuple(p)) for t, p in topics.items()),
        ))
        errors = {(t.name, p.partition_index): p.error_code for t in response.topics for p in t.partitions}
        assert errors == dict.fromkeys(offsets, ErrorCode.none), errors

    def end_request(self, commit: bool) -> EndTxnRequest:
        return EndTxnRequest(transactional_id=self.transactional_id, producer_id=self.producer_id,
                             producer_epoch=self.producer_epoch, committed=commit)

    def end(self, commit: bool) -> ErrorCode:
        # Retried while the coordinator loads __transaction_state, as clients retry
        # COORDINATOR_LOAD_IN_PROGRESS (FindCoordinator already names it then).
        deadline = time.monotonic() + TIMEOUT
        while True:
            error = self.client.send(self.end_request(commit)).error_code
            if error != ErrorCode.coordinator_load_in_progress or time.monotonic() > deadline:
                return error
            time.sleep(0.05)


def wait_for_coordinators(port: int, transactional_id: str, group_id: str | None = None) -> None:
    """Until the restarted broker has loaded its coordinators (bounded)."""
    keys = [(transactional_id, 1)] + ([(group_id, 0)] if group_id else [])
    deadline = time.monotonic() + TIMEOUT
    with RawClient(port) as client:
        for key, key_type in keys:
            while True:
                response = client.send(FindCoordinatorRequest(key_type=key_type, coordinator_keys=(key,)))
                if response.coordinators[0].error_code == ErrorCode.none:
                    break
                assert time.monotonic() < deadline, response.coordinators[0].error_code
                time.sleep(0.05)


def visible_values(blob: bytes | None, aborted: list[tuple[int, int]]) -> list[bytes | None]:
    """What a read_committed client keeps of a fetched blob: data records, less the
    batches of the aborted transactions the broker listed (producer id, first offset)."""
    if not blob:
        return []
    view = memoryview(blob)
    return [
        r.value for h in validate_batches(blob)
        if not h.is_control and not any(h.producer_id == pid and h.base_offset >= first for pid, first in aborted)
        for r in iter_records(view[h.position : h.position + h.size])
    ]


def read_committed(client: RawClient, topic: str, partition: int) -> tuple[int, int, list[bytes | None], list[int]]:
    """(high watermark, last stable offset, values, aborted producer ids) read_committed from 0."""
    response = client.send(FetchRequest(
        max_wait=datetime.timedelta(0), min_bytes=1, max_bytes=1 << 20, isolation_level=1, session_id=0,
        session_epoch=-1, forgotten_topics_data=(),
        topics=(FetchTopic(topic=topic, partitions=(FetchPartition(partition=partition, fetch_offset=0, partition_max_bytes=1 << 20),)),),
    ))
    p = response.responses[0].partitions[0]
    assert p.error_code == ErrorCode.none, p.error_code
    aborted = [(a.producer_id, a.first_offset) for a in p.aborted_transactions or ()]
    return p.high_watermark, p.last_stable_offset, visible_values(p.records, aborted), [pid for pid, _ in aborted]


def transaction_state(port: int, producer_id: int) -> str:
    with RawClient(port) as client:
        listed = client.send(ListTransactionsRequest(state_filters=(), producer_id_filters=(producer_id,), duration_filter=-1))
    [state] = listed.transaction_states
    return state.transaction_state


def group_offsets(port: int, group_id: str, topic: str, partitions: int) -> dict[int, int]:
    with RawClient(port) as client:
        response = client.send(OffsetFetchRequest(
            group_id=group_id, require_stable=True,
            topics=(OffsetFetchRequestTopic(name=topic, partition_indexes=tuple(range(partitions))),),
        ))
    assert response.error_code == ErrorCode.none, response.error_code
    return {p.partition_index: p.committed_offset for p in response.topics[0].partitions}


def test_sigkill_right_after_end_txn_is_answered_keeps_the_commit(broker) -> None:
    create_topic(broker.bootstrap, "after-end", 2)
    with RawClient(broker.port) as client:
        txn = RawTxn(client, "after-end-t")
        txn.init()
        txn.add_partitions("after-end", (0, 1))
        for partition in (0, 1):
            assert txn.produce("after-end", partition, [f"p{partition}-{i}".encode() for i in range(3)]) == 0
        assert txn.end(commit=True) == ErrorCode.none
        broker.kill()  # the moment the answer is in: the markers must already be on disk
    producer_id = txn.producer_id
    broker.start()
    wait_for_coordinators(broker.port, "after-end-t")
    with RawClient(broker.port) as client:
        for partition in (0, 1):
            # 3 records and the commit marker; the last stable offset is past them.
            assert read_committed(client, "after-end", partition) == (
                4, 4, [f"p{partition}-{i}".encode() for i in range(3)], [])
    assert transaction_state(broker.port, producer_id) == "CompleteCommit"
    # The transactional id goes on: a new epoch, a new transaction.
    with RawClient(broker.port) as client:
        txn.client = client
        txn.init()
        assert txn.producer_id == producer_id and txn.producer_epoch == 1
        txn.add_partitions("after-end", (0,))
        assert txn.produce("after-end", 0, [b"next"]) == 4
        assert txn.end(commit=True) == ErrorCode.none
        assert read_committed(client, "after-end", 0)[:3] == (6, 6, [b"p0-0", b"p0-1", b"p0-2", b"next"])


def test_sigkill_with_end_txn_in_flight_ends_committed_or_aborted(broker) -> None:
    create_topic(broker.bootstrap, "in-flight", 2)
    with RawClient(broker.port) as client:
        txn = RawTxn(client, "in-flight-t", timeout_ms=2000)
        txn.init()
        txn.add_partitions("in-flight", (0, 1))
        for partition in (0, 1):
            txn.produce("in-flight", partition, [f"p{partition}-{i}".encode() for i in range(3)])
        # EndTxn sent, and the broker killed without waiting for its answer.
        client.send(txn.end_request(commit=True), expect_response=False)
        broker.kill()
    broker.start()
    wait_for_coordinators(broker.port, "in-flight-t")
    # Never stuck: within the transaction timeout the outcome is decided and the last
    # stable offset reaches the high watermark on both partitions.
    deadline = time.monotonic() + TIMEOUT
    with RawClient(broker.port) as client:
        while True:
            results = [read_committed(client, "in-flight", p) for p in (0, 1)]
            if all(hw == lso and hw >= 4 for hw, lso, _, _ in results):
                break
            assert time.monotonic() < deadline, results
            time.sleep(0.1)
    state = transaction_state(broker.port, txn.producer_id)
    assert state in ("CompleteCommit", "CompleteAbort"), state
    # All or nothing, on both partitions alike.
    for partition, (_, _, values, aborted) in enumerate(results):
        if state == "CompleteCommit":
            assert (values, aborted) == ([f"p{partition}-{i}".encode() for i in range(3)], [])
        else:
            assert (values, aborted) == ([], [txn.producer_id])


def test_confluent_commit_then_sigkill(broker) -> None:
    create_topic(broker.bootstrap, "cf-crash")
    producer = txn_producer(broker.bootstrap, "cf-crash-t")
    producer.begin_transaction()
    send(producer, "cf-crash", [f"v{i}" for i in range(20)])
    producer.commit_transaction(TIMEOUT)
    broker.kill()
    del producer
    broker.start()
    assert sorted(consume(broker.bootstrap, "cf-crash", "read_committed", 20)) == sorted(f"v{i}" for i in range(20))
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "w", "isolation.level": "read_committed"})
    try:
        # 10 records and a marker per partition, all stable.
        assert [consumer.get_watermark_offsets(TopicPartition("cf-crash", p), timeout=TIMEOUT) for p in (0, 1)] == [
            (0, 11), (0, 11)]
    finally:
        consumer.close()


def test_send_offsets_to_transaction_committed_then_sigkill(broker) -> None:
    create_topic(broker.bootstrap, "ofs-src")
    create_topic(broker.bootstrap, "ofs-dst")
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    send(plain, "ofs-src", [f"m{i}" for i in range(8)])
    producer = txn_producer(broker.bootstrap, "ofs-t")
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "ofs-g", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.subscribe(["ofs-src"])
    got = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < 8 and time.monotonic() < deadline:
        got += [m for m in consumer.consume(10, timeout=0.2) if not m.error()]
    assert len(got) == 8
    producer.begin_transaction()
    send(producer, "ofs-dst", [m.value().decode().upper() for m in got])
    positions = consumer.position(consumer.assignment())
    assert sorted((tp.partition, tp.offset) for tp in positions) == [(0, 4), (1, 4)]
    producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), TIMEOUT)
    producer.commit_transaction(TIMEOUT)
    broker.kill()
    consumer.close()
    del producer
    broker.start()
    assert committed_offsets(broker.bootstrap, "ofs-g", "ofs-src") == [4, 4]
    assert sorted(consume(broker.bootstrap, "ofs-dst", "read_committed", 8)) == sorted(f"M{i}" for i in range(8))


def test_txn_offset_commit_pending_across_a_sigkill_commits_after_restart(broker) -> None:
    """TxnOffsetCommit answered, SIGKILL before EndTxn, restart, EndTxn(commit): the
    group's offsets are the transaction's, as Kafka's (its offsets are in the log)."""
    create_topic(broker.bootstrap, "pend-src", 2)
    create_topic(broker.bootstrap, "pend-dst", 1)
    with RawClient(broker.port) as client:
        txn = RawTxn(client, "pend-t")
        txn.init()
        txn.add_partitions("pend-dst", (0,))
        txn.produce("pend-dst", 0, [b"out"])
        txn.add_offsets("pend-g")
        txn.commit_offsets("pend-g", {("pend-src", 0): 5, ("pend-src", 1): 7})
        broker.kill()
    broker.start()
    wait_for_coordinators(broker.port, "pend-t", "pend-g")
    with RawClient(broker.port) as client:
        txn.client = client
        assert txn.end(commit=True) == ErrorCode.none
        assert read_committed(client, "pend-dst", 0) == (2, 2, [b"out"], [])
    assert group_offsets(broker.port, "pend-g", "pend-src", 2) == {0: 5, 1: 7}
    # And again after a clean restart.
    broker.restart()
    wait_for_coordinators(broker.port, "pend-t", "pend-g")
    assert group_offsets(broker.port, "pend-g", "pend-src", 2) == {0: 5, 1: 7}


def test_txn_offset_commit_pending_across_a_sigkill_aborted_after_restart(broker) -> None:
    create_topic(broker.bootstrap, "pa-src", 1)
    with RawClient(broker.port) as client:
        txn = RawTxn(client, "pa-t")
        txn.init()
        txn.add_offsets("pa-g")
        txn.commit_offsets("pa-g", {("pa-src", 0): 3})
        broker.kill()
    broker.start()
    wait_for_coordinators(broker.port, "pa-t", "pa-g")
    with RawClient(broker.port) as client:
        txn.client = client
        assert txn.end(commit=False) == ErrorCode.none
    assert group_offsets(broker.port, "pa-g", "pa-src", 1) == {0: -1}
    broker.kill()
    broker.start()
    wait_for_coordinators(broker.port, "pa-t", "pa-g")
    assert group_offsets(broker.port, "pa-g", "pa-src", 1) == {0: -1}
