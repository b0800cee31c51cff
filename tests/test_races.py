"""DeleteRecords and DeleteTopics against live producers and consumers of a real broker
process: an idempotent producer goes on after its batches are deleted (and after
restarts), clients of a deleted topic get errors and the topic can be made again, an
answer being sent when its topic is deleted arrives whole, and a consumer whose
offset is deleted under it resets as auto.offset.reset says. The teardown check
(tests/conftest.py) fails any of these whose broker logged a traceback."""

from __future__ import annotations

import datetime
import io
import json
import socket
import struct
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.delete_records.v2.request import (
    DeleteRecordsPartition,
    DeleteRecordsRequest,
    DeleteRecordsTopic,
)
from kio.schema.delete_topics.v6.request import DeleteTopicsRequest, DeleteTopicState
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.fetch.v12.response import FetchResponse
from kio.serial import entity_reader, entity_writer
from raw_client import RawClient
from test_fetch import fetch, partitions_of, records_in
from test_idempotence import batch, create, init_producer_id, produce

from kwire.protocol.records import build_batch

TIMEOUT = 20


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1, config=config or {})], operation_timeout=10)[name].result(TIMEOUT)


def delete_records(client: RawClient, topic: str, offset: int, partition: int = 0) -> tuple[ErrorCode, int]:
    response = client.send(DeleteRecordsRequest(
        topics=(DeleteRecordsTopic(name=topic, partitions=(DeleteRecordsPartition(partition_index=partition, offset=offset),)),),
        timeout=datetime.timedelta(seconds=10),
    ))
    [answer] = response.topics[0].partitions
    return answer.error_code, answer.low_watermark


def watermarks(bootstrap: str, topic: str, partition: int = 0) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm", "enable.auto.commit": False})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT)
    finally:
        consumer.close()


# ---- the idempotent producer after DeleteRecords ----------------------------------------


def test_raw_idempotent_producer_after_delete_records_and_restarts(broker) -> None:
    with RawClient(broker.port) as client:
        produce_topic = "idem-del"
        create(client, produce_topic)
        pid, epoch = init_producer_id(client)
        for sequence in (0, 3, 6):
            assert produce(client, produce_topic, batch(pid, epoch, sequence)) == (ErrorCode.none, sequence)
        # Every batch of the producer is deleted.
        assert delete_records(client, produce_topic, -1) == (ErrorCode.none, 9)
        # Its next batch is in sequence and accepted (Kafka keeps the producer's state).
        assert produce(client, produce_topic, batch(pid, epoch, 9)) == (ErrorCode.none, 9)
        # A retry of it is still a duplicate, answered with its offset.
        assert produce(client, produce_topic, batch(pid, epoch, 9)) == (ErrorCode.none, 9)
        assert delete_records(client, produce_topic, 12) == (ErrorCode.none, 12)

    broker.restart()  # clean: the log holds none of the producer's batches
    with RawClient(broker.port) as client:
        assert produce(client, produce_topic, batch(pid, epoch, 12)) == (ErrorCode.none, 12)
        assert produce(client, produce_topic, batch(pid, epoch, 12)) == (ErrorCode.none, 12)
        assert delete_records(client, produce_topic, -1) == (ErrorCode.none, 15)

    broker.kill()  # unclean: nothing of the producer is left to replay
    broker.start()
    with RawClient(broker.port) as client:
        assert produce(client, produce_topic, batch(pid, epoch, 15)) == (ErrorCode.none, 15)
        assert produce(client, produce_topic, batch(pid, epoch, 18)) == (ErrorCode.none, 18)
        response = fetch(client, {(produce_topic, 0): 15})
        partition = partitions_of(response)[(produce_topic, 0)]
        assert (partition.log_start_offset, partition.high_watermark) == (15, 21)
        assert [r.value for r in records_in(partition.records)] == [f"m{i}".encode() for i in range(15, 21)]


def test_raw_idempotent_retry_of_a_deleted_batch_after_a_clean_restart_is_a_duplicate(broker) -> None:
    """Kafka keeps producer state in its snapshot even when the log has none of the
    producer's batches left, so a retried last batch is not written twice."""
    with RawClient(broker.port) as client:
        create(client, "idem-snap")
        pid, epoch = init_producer_id(client)
        assert produce(client, "idem-snap", batch(pid, epoch, 0)) == (ErrorCode.none, 0)
        assert delete_records(client, "idem-snap", -1) == (ErrorCode.none, 3)
    broker.restart()
    with RawClient(broker.port) as client:
        assert produce(client, "idem-snap", batch(pid, epoch, 0)) == (ErrorCode.none, 0)
        assert partitions_of(fetch(client, {("idem-snap", 0): 3}))[("idem-snap", 0)].high_watermark == 3


def test_confluent_idempotent_producer_after_delete_records_and_restarts(broker) -> None:
    create_topic(broker.bootstrap, "idem-cf")
    errors: list[KafkaError] = []
    producer = Producer({
        "bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 5,
        "message.timeout.ms": TIMEOUT * 1000, "error_cb": errors.append,
    })
    offsets: list[int] = []
    failed: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: object) -> None:
        if err is not None:
            failed.append(err)
        else:
            offsets.append(msg.offset())  # type: ignore[attr-defined]

    def produce_some(start: int, count: int) -> None:
        for i in range(start, start + count):
            producer.produce("idem-cf", value=f"v{i}".encode(), on_delivery=on_delivery)
        assert producer.flush(TIMEOUT) == 0

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    def delete_all() -> int:
        [result] = admin.delete_records([TopicPartition("idem-cf", 0, -1)], operation_timeout=10).values()
        return result.result(TIMEOUT).low_watermark

    produce_some(0, 100)
    assert delete_all() == 100
    produce_some(100, 100)
    assert delete_all() == 200
    broker.restart()
    produce_some(200, 100)
    assert delete_all() == 300
    broker.kill()
    broker.start()
    produce_some(300, 100)
    assert not failed, failed[:3]
    # No fatal error (OutOfOrderSequence, UnknownProducerId) was raised by the client.
    assert not [e for e in errors if e.fatal()], errors
    assert offsets == list(range(400))
    assert watermarks(broker.bootstrap, "idem-cf") == (300, 400)


# ---- DeleteTopics racing clients -----------------------------------------------------------


def test_delete_topic_while_producing_and_consuming(broker_factory) -> None:
    broker = broker_factory({"auto.create.topics.enable": "false"})
    create_topic(broker.bootstrap, "doomed", 2)
    stop = threading.Event()
    delivered: list[tuple[int, int]] = []
    producer_errors: list[KafkaError] = []
    consumed: list[tuple[int, int]] = []
    consumer_errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: object) -> None:
        if err is not None:
            producer_errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 2, "message.timeout.ms": 3000,
                         "enable.idempotence": False, "retries": 2})

    def produce_loop() -> None:
        i = 0
        while not stop.is_set():
            try:
                producer.produce("doomed", value=f"v{i}".encode(), partition=i % 2, on_delivery=on_delivery)
                i += 1
            except (BufferError, Exception):
                pass  # the topic vanished from the client's metadata: it refuses locally
            producer.poll(0.005)

    def consume_loop() -> None:
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "doomed-reader",
                             "enable.auto.commit": False, "fetch.wait.max.ms": 50,
                             "topic.metadata.refresh.interval.ms": 500})
        consumer.assign([TopicPartition("doomed", p, 0) for p in (0, 1)])
        try:
            while not stop.is_set():
                for m in consumer.consume(100, timeout=0.1):
                    if m.error():
                        consumer_errors.append(m.error())
                    else:
                        consumed.append((m.partition(), m.offset()))
        finally:
            consumer.close()

    threads = [threading.Thread(target=produce_loop, daemon=True), threading.Thread(target=consume_loop, daemon=True)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + TIMEOUT
    while (len(delivered) < 200 or len(consumed) < 100) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(delivered) >= 200 and len(consumed) >= 100, (len(delivered), len(consumed))
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.delete_topics(["doomed"], operation_timeout=10)["doomed"].result(TIMEOUT)
    time.sleep(2)  # both clients run against the deleted topic
    stop.set()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    producer.flush(5)  # what is still queued fails within message.timeout.ms
    # The producer's messages for the deleted topic fail (unknown topic, then timed out).
    assert producer_errors
    assert {e.code() for e in producer_errors} <= {
        KafkaError._MSG_TIMED_OUT, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION
    }, producer_errors[:3]
    # The broker lives on; the consumer read only what was written, in order per partition.
    assert broker.process is not None and broker.process.poll() is None
    for p in (0, 1):
        read = [o for q, o in consumed if q == p]
        assert read == list(range(len(read))), p
    # The topic is gone, then made again and used from offset 0.
    assert "doomed" not in admin.list_topics(timeout=TIMEOUT).topics
    create_topic(broker.bootstrap, "doomed", 2)
    fresh = Producer({"bootstrap.servers": broker.bootstrap})
    fresh.produce("doomed", value=b"reborn", partition=1)
    assert fresh.flush(TIMEOUT) == 0
    reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x", "enable.auto.commit": False})
    reader.assign([TopicPartition("doomed", 1, 0)])
    try:
        message = None
        deadline = time.monotonic() + TIMEOUT
        while message is None and time.monotonic() < deadline:
            m = reader.poll(0.2)
            if m is not None and not m.error():
                message = m
    finally:
        reader.close()
    assert message is not None and (message.offset(), message.value()) == (0, b"reborn")


def test_fetch_answer_in_flight_when_its_topic_is_deleted(broker) -> None:
    """A large fetch answer is still being sent (the client reads slowly) when the
    topic is deleted: it arrives whole and valid, as Kafka's does (its files are
    deleted later, after file.delete.delay.ms), and the connection stays usable."""
    create_topic(broker.bootstrap, "in-flight-delete")
    chunk = b"x" * 900_000
    with RawClient(broker.port) as client:
        for _ in range(8):
            assert produce(client, "in-flight-delete", _plain_batch(chunk))[0] == ErrorCode.none
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)  # the answer cannot all be buffered
    reader.settimeout(TIMEOUT)
    reader.connect(("127.0.0.1", broker.port))
    try:
        request = FetchRequest(
            max_wait=datetime.timedelta(0), min_bytes=1, max_bytes=50_000_000, session_id=0, session_epoch=-1,
            topics=(FetchTopic(topic="in-flight-delete", partitions=(
                FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=50_000_000),)),),
            forgotten_topics_data=(),
        )
        _send_raw(reader, request, correlation_id=1)
        time.sleep(0.5)  # the broker is now blocked sending the answer
        with RawClient(broker.port) as admin_client:
            response = admin_client.send(DeleteTopicsRequest(
                topics=(DeleteTopicState(name="in-flight-delete", topic_id=None),), timeout=datetime.timedelta(seconds=10)))
            assert response.responses[0].error_code == ErrorCode.none
        frame = _read_frame(reader)
        (correlation_id,) = struct.unpack_from(">i", frame)
        assert correlation_id == 1
        answer, _ = entity_reader(FetchResponse)(frame, 5)
        [partition] = answer.responses[0].partitions
        assert partition.error_code == ErrorCode.none
        assert [len(r.value) for r in records_in(partition.records)] == [len(chunk)] * 8
        # The connection still serves requests.
        _send_raw(reader, request, correlation_id=2)
        answer, _ = entity_reader(FetchResponse)(_read_frame(reader), 5)
        assert answer.responses[0].partitions[0].error_code == ErrorCode.unknown_topic_or_partition
    finally:
        reader.close()
    assert broker.process is not None and broker.process.poll() is None


def _plain_batch(value: bytes) -> bytes:
    return build_batch([(None, value)])


def _send_raw(sock: socket.socket, request: FetchRequest, correlation_id: int) -> None:
    header = struct.pack(">hhih", 1, 12, correlation_id, 4) + b"test\x00"
    body = io.BytesIO()
    entity_writer(FetchRequest)(body, request)
    payload = header + body.getvalue()
    sock.sendall(struct.pack(">i", len(payload)) + payload)


def _read_frame(sock: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = sock.recv(min(n - len(data), 1 << 16))
            if not chunk:
                raise ConnectionError(f"broker closed the connection after {len(data)} of {n} bytes")
            data += chunk
        return bytes(data)

    (size,) = struct.unpack(">i", exactly(4))
    return exactly(size)


# ---- DeleteRecords under a consumer ----------------------------------------------------------


def test_raw_fetch_below_the_new_log_start_is_out_of_range(broker) -> None:
    with RawClient(broker.port) as client:
        create(client, "dr-raw")
        for i in range(10):
            assert produce(client, "dr-raw", _plain_batch(f"r{i}".encode())) == (ErrorCode.none, i)
        # A long poll at the end is not disturbed by DeleteRecords up to the end.
        assert delete_records(client, "dr-raw", 6) == (ErrorCode.none, 6)
        below = partitions_of(fetch(client, {("dr-raw", 0): 5}))[("dr-raw", 0)]
        assert (below.error_code, below.log_start_offset, below.high_watermark) == (ErrorCode.offset_out_of_range, 6, 10)
        at = partitions_of(fetch(client, {("dr-raw", 0): 6}))[("dr-raw", 0)]
        assert [r.value for r in records_in(at.records)] == [f"r{i}".encode() for i in range(6, 10)]
        # Past the high watermark is refused, the high watermark itself empties the log.
        assert delete_records(client, "dr-raw", 11)[0] == ErrorCode.offset_out_of_range
        assert delete_records(client, "dr-raw", 10) == (ErrorCode.none, 10)


@pytest.mark.parametrize("reset", ["earliest", "latest"])
def test_delete_records_while_a_consumer_fetches(broker, reset: str) -> None:
    topic = f"dr-{reset}"
    create_topic(broker.bootstrap, topic)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(100):
        producer.produce(topic, value=f"{i}".encode())
        if i % 10 == 9:
            producer.flush(TIMEOUT)  # batches of 10
    assert producer.flush(TIMEOUT) == 0
    fetch_position: dict[str, int] = {}

    def on_stats(stats: str) -> None:
        partition = json.loads(stats)["topics"].get(topic, {}).get("partitions", {}).get("0")
        if partition is not None:
            fetch_position["next"] = partition["next_offset"]

    consumer = Consumer({
        "bootstrap.servers": broker.bootstrap, "group.id": f"dr-{reset}", "enable.auto.commit": False,
        "statistics.interval.ms": 100, "stats_cb": on_stats,
        "auto.offset.reset": reset, "fetch.wait.max.ms": 50,
        # Small fetches, little prefetch: the consumer's fetch position stays near what it read.
        "fetch.max.bytes": 1024, "message.max.bytes": 1000, "max.partition.fetch.bytes": 1024,
        "queued.max.messages.kbytes": 1,
        "queued.min.messages": 1,
    })
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[int] = []
    errors: list[KafkaError] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(got) < 5 and time.monotonic() < deadline:
            m = consumer.poll(0.2)
            if m is not None and not m.error():
                got.append(m.offset())
        assert got[:5] == [0, 1, 2, 3, 4]
        # The consumer is in the first batches; everything below 80 is deleted.
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        [future] = admin.delete_records([TopicPartition(topic, 0, 80)], operation_timeout=10).values()
        assert future.result(TIMEOUT).low_watermark == 80
        if reset == "latest":
            # Reset to the end: only what is written after the reset is read. Consume
            # (what was fetched before the deletion) until the consumer's fetch position
            # (librdkafka's statistics: next_offset) has moved to the end.
            deadline = time.monotonic() + TIMEOUT
            while fetch_position.get("next") != 100:
                assert time.monotonic() < deadline, (got, fetch_position)
                for m in consumer.consume(100, timeout=0.1):
                    if m.error():
                        errors.append(m.error())
                    else:
                        got.append(m.offset())
            for i in range(100, 105):
                producer.produce(topic, value=f"{i}".encode())
            assert producer.flush(TIMEOUT) == 0
        expected_tail = list(range(80, 100)) if reset == "earliest" else list(range(100, 105))
        deadline = time.monotonic() + TIMEOUT
        while (not got or got[-1] != expected_tail[-1]) and time.monotonic() < deadline:
            for m in consumer.consume(100, timeout=0.2):
                if m.error():
                    errors.append(m.error())
                else:
                    got.append(m.offset())
            if reset == "latest" and got and got[-1] < 100 and got[-1] >= 80:
                break  # read deleted data it should not have: fail below
    finally:
        consumer.close()
    # What was read before the deletion is a prefix from 0; then the consumer jumped.
    jump = next(i for i, o in enumerate(got) if o >= 80)
    assert got[:jump] == list(range(jump)), got
    assert got[jump:] == expected_tail, got
    assert not [e for e in errors if e.code() != KafkaError._PARTITION_EOF], errors
