"""acks=0: the broker appends and never answers, and the connection stays in step
(the next request gets its own answer with its own correlation id)."""

from __future__ import annotations

import datetime
import io
import socket
import struct
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.serial import entity_writer
from kio.static.primitive import Records
from raw_client import RawClient
from test_fetch import fetch, partitions_of, records_in
from test_idempotence import create

from kwire.protocol.records import build_batch

TIMEOUT = 30


def produce_request(topic: str, batch: bytes, acks: int, partition: int = 0) -> ProduceRequest:
    return ProduceRequest(
        transactional_id=None,
        acks=acks,
        timeout=datetime.timedelta(seconds=10),
        topic_data=(TopicProduceData(name=topic, partition_data=(PartitionProduceData(index=partition, records=Records(batch)),)),),
    )


def nothing_to_read(sock: socket.socket, wait: float) -> bool:
    """True when no byte arrives within `wait` seconds (and the peer did not close)."""
    sock.settimeout(wait)
    try:
        sock.recv(1, socket.MSG_PEEK)  # a byte, or b"" when closed: either way not silence
        return False
    except TimeoutError:
        return True
    finally:
        sock.settimeout(TIMEOUT)


def test_raw_acks0_produce_gets_no_answer_and_the_next_request_gets_its_own(broker) -> None:
    with RawClient(broker.port) as client:
        create(client, "zero")
        for i in range(3):
            client.send(produce_request("zero", build_batch([(None, f"z{i}".encode())]), acks=0), expect_response=False)
        acks0_correlation_id = client.correlation_id
        # No answer to any of the three: nothing is waiting on the socket.
        assert nothing_to_read(client.sock, 0.5)
        # The next request is answered with its own correlation id (RawClient checks
        # the id matches; here it is also read explicitly from the frame).
        client.correlation_id += 1
        request = ApiVersionsRequest(client_software_name="test", client_software_version="1")
        header = struct.pack(">hhih", 18, 3, client.correlation_id, 4) + b"test\x00"
        body = io.BytesIO()
        entity_writer(ApiVersionsRequest)(body, request)
        payload = header + body.getvalue()
        client.sock.sendall(struct.pack(">i", len(payload)) + payload)
        (size,) = struct.unpack(">i", client._exactly(4))
        frame = client._exactly(size)
        (answered_id,) = struct.unpack_from(">i", frame)
        assert answered_id == acks0_correlation_id + 1
        assert nothing_to_read(client.sock, 0.2)
        # The same connection keeps working, and the acks=0 records are in the log.
        response = fetch(client, {("zero", 0): 0})
        partition = partitions_of(response)[("zero", 0)]
        assert partition.error_code == ErrorCode.none and partition.high_watermark == 3
        assert [(r.offset, r.value) for r in records_in(partition.records)] == [(0, b"z0"), (1, b"z1"), (2, b"z2")]
        # An acks=1 produce after them is answered with the next offset.
        response = client.send(produce_request("zero", build_batch([(None, b"z3")]), acks=1))
        [answer] = response.responses[0].partition_responses
        assert (answer.error_code, answer.base_offset) == (ErrorCode.none, 3)


def test_raw_acks0_produce_to_an_unknown_partition_closes_the_connection(broker) -> None:
    with RawClient(broker.port) as client:
        create(client, "zero-bad")
        client.send(produce_request("zero-bad", build_batch([(None, b"lost")]), acks=0, partition=7), expect_response=False)
        # Kafka closes the connection after a failed acks=0 produce (the client's cue to
        # refresh metadata): no answer frame, the connection ends.
        client.sock.settimeout(TIMEOUT)
        assert client.sock.recv(4) == b""
    with RawClient(broker.port) as client:
        response = fetch(client, {("zero-bad", 0): 0})
        assert partitions_of(response)[("zero-bad", 0)].high_watermark == 0


def test_confluent_acks0_producer_data_is_readable(broker) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": 0, "linger.ms": 5, "enable.idempotence": False})
    delivered: list[int | None] = []
    errors: list[object] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append(msg.offset())  # type: ignore[attr-defined]

    for i in range(1000):
        producer.produce("zero-client", value=f"v{i}".encode(), on_delivery=on_delivery)
    assert producer.flush(TIMEOUT) == 0
    assert not errors and len(delivered) == 1000
    # acks=0 has no answer, so no offset (librdkafka's OFFSET_INVALID, None in Python).
    assert set(delivered) == {None}
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "z", "enable.auto.commit": False})
    consumer.assign([TopicPartition("zero-client", 0, 0)])
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        # acks=0 is fire and forget: the last batches may still be in flight when flush returns.
        while len(got) < 1000 and time.monotonic() < deadline:
            got += [(m.offset(), m.value()) for m in consumer.consume(1000, timeout=0.2) if not m.error()]
    finally:
        consumer.close()
    assert got == [(i, f"v{i}".encode()) for i in range(1000)]
