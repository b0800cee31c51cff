"""Idempotent producers: sequence checks, duplicates answered with their first
offset, and producer state that survives clean and unclean restarts."""

from __future__ import annotations

import datetime

from confluent_kafka import Consumer, Producer, TopicPartition
from kio.schema.errors import ErrorCode
from kio.schema.init_producer_id.v4.request import InitProducerIdRequest
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.static.primitive import Records
from raw_client import RawClient

from kwire.protocol.records import build_batch

TIMEOUT = 30


def init_producer_id(client: RawClient) -> tuple[int, int]:
    response = client.send(
        InitProducerIdRequest(
            transactional_id=None,
            transaction_timeout=datetime.timedelta(seconds=60),
            producer_id=-1,
            producer_epoch=-1,
        )
    )
    assert response.error_code == ErrorCode.none
    return response.producer_id, response.producer_epoch


def produce(client: RawClient, topic: str, batch: bytes) -> tuple[ErrorCode, int]:
    response = client.send(
        ProduceRequest(
            transactional_id=None,
            acks=-1,
            timeout=datetime.timedelta(seconds=10),
            topic_data=(TopicProduceData(name=topic, partition_data=(PartitionProduceData(index=0, records=Records(batch)),)),),
        )
    )
    [partition] = response.responses[0].partition_responses
    return partition.error_code, partition.base_offset


def batch(producer_id: int, epoch: int, sequence: int, count: int = 3) -> bytes:
    return build_batch(
        [(None, f"m{sequence + i}".encode()) for i in range(count)],
        producer_id=producer_id, producer_epoch=epoch, base_sequence=sequence,
    )


def create(client: RawClient, topic: str) -> None:
    client.send(MetadataRequest(topics=(MetadataRequestTopic(name=topic, topic_id=None),), allow_auto_topic_creation=True, include_topic_authorized_operations=False))


def test_duplicates_gaps_and_fencing_survive_restarts(broker) -> None:
    with RawClient(broker.port) as client:
        create(client, "idem")
        pid, epoch = init_producer_id(client)
        assert produce(client, "idem", batch(pid, epoch, 0)) == (ErrorCode.none, 0)
        # A retried duplicate gets its original offset and is not written again.
        assert produce(client, "idem", batch(pid, epoch, 0)) == (ErrorCode.none, 0)
        assert produce(client, "idem", batch(pid, epoch, 3)) == (ErrorCode.none, 3)
        # A gap in the sequence is refused.
        assert produce(client, "idem", batch(pid, epoch, 9))[0] == ErrorCode.out_of_order_sequence_number
        # A stale epoch is fenced once a newer one wrote.
        assert produce(client, "idem", batch(pid, epoch + 1, 0)) == (ErrorCode.none, 6)
        assert produce(client, "idem", batch(pid, epoch, 6))[0] == ErrorCode.invalid_producer_epoch
        # Another producer's id is new and distinct.
        assert init_producer_id(client)[0] != pid

    broker.restart()  # clean: state from the snapshot
    with RawClient(broker.port) as client:
        assert produce(client, "idem", batch(pid, epoch + 1, 0)) == (ErrorCode.none, 6)
        assert produce(client, "idem", batch(pid, epoch + 1, 3)) == (ErrorCode.none, 9)
        assert produce(client, "idem", batch(pid, epoch + 1, 7))[0] == ErrorCode.out_of_order_sequence_number

    broker.kill()  # unclean: state replayed from the log
    broker.start()
    with RawClient(broker.port) as client:
        assert produce(client, "idem", batch(pid, epoch + 1, 3)) == (ErrorCode.none, 9)
        assert produce(client, "idem", batch(pid, epoch + 1, 6)) == (ErrorCode.none, 12)
        # Producer ids stay unique across restarts.
        assert init_producer_id(client)[0] > pid + 1

    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x", "enable.auto.commit": False})
    try:
        assert consumer.get_watermark_offsets(TopicPartition("idem", 0), timeout=TIMEOUT) == (0, 15)
    finally:
        consumer.close()


def test_confluent_idempotent_producer_writes_each_message_once(broker) -> None:
    producer = Producer({
        "bootstrap.servers": broker.bootstrap,
        "enable.idempotence": True,
        "linger.ms": 2,
    })
    for i in range(20_000):
        producer.produce("idem-client", key=str(i % 10).encode(), value=str(i).encode())
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(TIMEOUT) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x", "enable.auto.commit": False})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition("idem-client", 0), timeout=TIMEOUT)
    finally:
        consumer.close()
    assert (low, high) == (0, 20_000)
