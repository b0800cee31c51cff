"""Fetch: long polling woken by appends, limits, whole batches, incremental sessions,
LogAppendTime and retention, against a real broker process."""

from __future__ import annotations

import datetime
import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic, ForgottenTopic
from raw_client import RawClient
from test_idempotence import create

from kwire.protocol.records import build_batch, iter_records, validate_batches

TIMEOUT = 30


def produce_values(bootstrap: str, topic: str, values: list[bytes], **config: object) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, **config})
    for value in values:
        producer.produce(topic, value)
        producer.flush(TIMEOUT)  # one batch each


def fetch(client: RawClient, partitions: dict[tuple[str, int], int], *, session_id: int = 0, epoch: int = -1,
          max_wait_ms: int = 0, min_bytes: int = 1, max_bytes: int = 50_000_000, partition_max_bytes: int = 1_000_000,
          forgotten: dict[str, list[int]] | None = None):
    topics: dict[str, list[FetchPartition]] = {}
    for (topic, index), offset in partitions.items():
        topics.setdefault(topic, []).append(FetchPartition(partition=index, fetch_offset=offset, partition_max_bytes=partition_max_bytes))
    return client.send(FetchRequest(
        max_wait=datetime.timedelta(milliseconds=max_wait_ms), min_bytes=min_bytes, max_bytes=max_bytes,
        session_id=session_id, session_epoch=epoch,
        topics=tuple(FetchTopic(topic=t, partitions=tuple(p)) for t, p in topics.items()),
        forgotten_topics_data=tuple(ForgottenTopic(topic=t, partitions=tuple(p)) for t, p in (forgotten or {}).items()),
    ))


def records_in(blob: bytes) -> list:
    """Every record of every batch in a fetched records blob."""
    view = memoryview(blob)
    return [r for h in validate_batches(blob) for r in iter_records(view[h.position : h.position + h.size])]


def partitions_of(response) -> dict[tuple[str, int], object]:
    return {(t.topic, p.partition_index): p for t in response.responses for p in t.partitions}


def test_long_poll_is_woken_by_an_append(broker) -> None:
    with RawClient(broker.port) as client:
        create(client, "poll")
        threading.Timer(0.5, produce_values, (broker.bootstrap, "poll", [b"wake"])).start()
        start = time.monotonic()
        response = fetch(client, {("poll", 0): 0}, max_wait_ms=10_000)
        waited = time.monotonic() - start
    assert 0.4 < waited < 5, waited
    records = partitions_of(response)[("poll", 0)].records
    assert [r.value for r in records_in(records)] == [b"wake"]


def test_long_poll_times_out_empty(broker) -> None:
    with RawClient(broker.port) as client:
        create(client, "idle")
        start = time.monotonic()
        response = fetch(client, {("idle", 0): 0}, max_wait_ms=300)
        assert 0.25 < time.monotonic() - start < 3
        partition = partitions_of(response)[("idle", 0)]
        assert partition.error_code == ErrorCode.none and not partition.records


def test_offset_inside_a_batch_returns_the_whole_batch_and_limits_hold(broker) -> None:
    with RawClient(broker.port) as client:
        create(client, "batches")
        from test_idempotence import produce

        for _ in range(5):
            assert produce(client, "batches", build_batch([(None, b"v" * 1000)] * 10))[0] == ErrorCode.none
        response = fetch(client, {("batches", 0): 13})
        records = partitions_of(response)[("batches", 0)].records
        offsets = [r.offset for r in records_in(records)]
        assert offsets[0] == 10 and offsets[-1] == 49  # from the batch holding 13
        # partition max bytes: whole batches only, and at least one even if larger.
        response = fetch(client, {("batches", 0): 0}, partition_max_bytes=100)
        offsets = [r.offset for r in records_in(partitions_of(response)[("batches", 0)].records)]
        assert offsets == list(range(10))
        response = fetch(client, {("batches", 0): 0}, partition_max_bytes=25_000)
        assert len(list(records_in(partitions_of(response)[("batches", 0)].records))) == 20
        # Past the end, and before the start.
        assert partitions_of(fetch(client, {("batches", 0): 51}))[("batches", 0)].error_code == ErrorCode.offset_out_of_range
        at_end = partitions_of(fetch(client, {("batches", 0): 50}))[("batches", 0)]
        assert at_end.error_code == ErrorCode.none and at_end.high_watermark == 50


def test_incremental_fetch_session(broker) -> None:
    with RawClient(broker.port) as client:
        create(client, "sa")
        create(client, "sb")
        produce_values(broker.bootstrap, "sa", [b"a0"])
        full = fetch(client, {("sa", 0): 0, ("sb", 0): 0}, epoch=0)
        assert full.session_id > 0
        assert set(partitions_of(full)) == {("sa", 0), ("sb", 0)}
        session = full.session_id
        # Nothing changed: an incremental fetch answers no partition.
        empty = fetch(client, {("sa", 0): 1}, session_id=session, epoch=1, max_wait_ms=100)
        assert empty.error_code == ErrorCode.none and partitions_of(empty) == {}
        produce_values(broker.bootstrap, "sb", [b"b0"])
        changed = fetch(client, {}, session_id=session, epoch=2, max_wait_ms=1000)
        assert set(partitions_of(changed)) == {("sb", 0)}
        # A wrong epoch, an unknown session.
        assert fetch(client, {}, session_id=session, epoch=7).error_code == ErrorCode.invalid_fetch_session_epoch
        assert fetch(client, {}, session_id=session + 1000, epoch=1).error_code == ErrorCode.fetch_session_id_not_found
        # Forgetting a partition removes it from the session.
        produce_values(broker.bootstrap, "sa", [b"a1"])
        forgot = fetch(client, {("sb", 0): 1}, session_id=session, epoch=3, forgotten={"sa": [0]}, max_wait_ms=200)
        assert partitions_of(forgot) == {}
        # Closing the session (epoch -1) gives a sessionless full answer.
        closed = fetch(client, {("sa", 0): 0}, session_id=session, epoch=-1)
        assert closed.session_id == 0 and set(partitions_of(closed)) == {("sa", 0)}


def test_log_append_time_topic(broker) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("lat", 1, 1, config={"message.timestamp.type": "LogAppendTime"})])["lat"].result(TIMEOUT)
    before = int(time.time() * 1000)
    produce_values(broker.bootstrap, "lat", [b"x"], **{"message.timeout.ms": 10_000})
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x", "enable.auto.commit": False})
    consumer.assign([TopicPartition("lat", 0, 0)])
    try:
        message = consumer.poll(TIMEOUT)
        timestamp_type, timestamp = message.timestamp()
    finally:
        consumer.close()
    assert timestamp_type == 2  # TIMESTAMP_LOG_APPEND_TIME
    assert before - 1000 <= timestamp <= int(time.time() * 1000) + 1000


def test_retention_by_time_advances_log_start(broker_factory) -> None:
    broker = broker_factory({"log.retention.check.interval.ms": "200"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("short", 1, 1, config={"retention.ms": "1000", "segment.bytes": "1024", "file.delete.delay.ms": "0"})])["short"].result(TIMEOUT)
    produce_values(broker.bootstrap, "short", [b"v" * 600 for _ in range(6)])
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x", "enable.auto.commit": False})
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            low, high = consumer.get_watermark_offsets(TopicPartition("short", 0), timeout=TIMEOUT)
            if low >= 5:
                break
            time.sleep(0.2)
    finally:
        consumer.close()
    assert high == 6 and low >= 5  # old segments gone; the active one stays
