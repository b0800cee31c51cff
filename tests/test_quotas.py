"""Client quotas enforced end to end (KIP-13, KIP-219): a producer or consumer over its
byte rate gets throttle_time_ms in its answers and its connection muted, so it settles
at its quota; an unthrottled client beside it runs at full speed.

Real clients (confluent-kafka), a real broker process; quotas set with
AlterClientQuotas as any admin tool would.
"""

from __future__ import annotations

import datetime
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from kio.schema.alter_client_quotas.v1.request import (
    AlterClientQuotasRequest,
    EntityData,
    EntryData,
    OpData,
)
from kio.static.primitive import f64, i32Timedelta
from raw_client import RawClient

TIMEOUT = 60
QUOTA = 200_000  # bytes per second
VALUE = b"q" * 1000


def set_quota(port: int, entity_type: str, name: str | None, key: str, value: float) -> None:
    request = AlterClientQuotasRequest(
        entries=(EntryData(entity=(EntityData(entity_type=entity_type, entity_name=name),),
                           ops=(OpData(key=key, value=f64(float(value)), remove=False),)),),
        validate_only=False,
    )
    with RawClient(port) as client:
        response = client.send(request)
    assert all(entry.error_code.value == 0 for entry in response.entries), response


class ProduceMeter:
    """A producer sending as fast as the broker lets it; counts acknowledged bytes."""

    def __init__(self, bootstrap: str, client_id: str, topic: str) -> None:
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "client.id": client_id, "linger.ms": 5,
            # The Java client's batch size: requests small next to what 20 s of quota allows.
            "batch.size": 16384,
            "queue.buffering.max.kbytes": 2048, "message.timeout.ms": TIMEOUT * 1000,
        })
        self.topic = topic
        self.acked = 0
        self.marks: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def _delivered(self, err: object, msg: object) -> None:
        if err is None:
            self.acked += len(VALUE)

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.producer.produce(self.topic, VALUE, on_delivery=self._delivered)
            except BufferError:
                self.producer.poll(0.01)
                continue
            self.producer.poll(0)
            self.marks.append((time.monotonic(), self.acked))
        self.producer.flush(TIMEOUT)

    def rate_between(self, start: float, end: float) -> float:
        first = next(a for t, a in self.marks if t >= start)
        last = next(a for t, a in reversed(self.marks) if t <= end)
        return (last - first) / (end - start)


def test_producer_quota_holds_while_an_unthrottled_producer_runs_at_full_speed(broker_factory) -> None:
    broker = broker_factory({"num.partitions": "1"})
    set_quota(broker.port, "client-id", "slow", "producer_byte_rate", QUOTA)
    slow = ProduceMeter(broker.bootstrap, "slow", "quota-slow")
    fast = ProduceMeter(broker.bootstrap, "fast", "quota-fast")
    began = time.monotonic()
    threads = [threading.Thread(target=m.run, args=(32,)) for m in (slow, fast)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
    # The first windows admit a burst (the rate is measured over quota.window.num
    # windows); from 12 s on the producer is in its steady state: 20 s measured.
    rate = slow.rate_between(began + 12, began + 32)
    fast_rate = fast.rate_between(began + 12, began + 32)
    print(f"throttled {rate / 1000:.1f} kB/s, unthrottled {fast_rate / 1000:.0f} kB/s")
    assert abs(rate - QUOTA) <= 0.10 * QUOTA, rate
    assert fast_rate > 10 * QUOTA, fast_rate


def test_consumer_quota_holds(broker_factory) -> None:
    broker = broker_factory({"num.partitions": "1"})
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    for _ in range(12_000):  # 12 MB: more than 32 s of the quota
        producer.produce("quota-read", VALUE)
        producer.poll(0)
    assert producer.flush(TIMEOUT) == 0
    set_quota(broker.port, "client-id", "slow-reader", "consumer_byte_rate", QUOTA)

    def reader(client_id: str, seconds: float) -> list[tuple[float, int]]:
        consumer = Consumer({
            "bootstrap.servers": broker.bootstrap, "client.id": client_id, "group.id": client_id,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
        })
        consumer.assign([TopicPartition("quota-read", 0, 0)])
        marks, got = [], 0
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline and got < 12_000 * len(VALUE):
                message = consumer.poll(0.1)
                if message is not None and message.error() is None:
                    got += len(message.value())
                marks.append((time.monotonic(), got))
        finally:
            consumer.close()
        return marks

    began = time.monotonic()
    fast = reader("fast-reader", 30)
    fast_done = next(t for t, got in fast if got >= 12_000 * len(VALUE)) - began
    began = time.monotonic()
    slow = reader("slow-reader", 32)
    first = next(g for t, g in slow if t >= began + 12)
    last = next(g for t, g in reversed(slow) if t <= began + 32)
    rate = (last - first) / 20
    print(f"throttled consumer {rate / 1000:.1f} kB/s; unthrottled read 12 MB in {fast_done:.1f} s")
    assert abs(rate - QUOTA) <= 0.10 * QUOTA, rate
    assert fast_done < 10


@pytest.mark.parametrize("entity", [("user", None), ("client-id", None)])
def test_default_quota_applies_to_every_client(broker_factory, entity) -> None:
    """A default entity (name null) throttles a client with no quota of its own."""
    broker = broker_factory({"num.partitions": "1"})
    set_quota(broker.port, entity[0], entity[1], "producer_byte_rate", QUOTA)
    meter = ProduceMeter(broker.bootstrap, "anyone", "quota-default")
    began = time.monotonic()
    meter.run(18)
    rate = meter.rate_between(began + 12, began + 18)
    assert rate < 1.5 * QUOTA, rate


def test_controller_mutation_quota(broker_factory) -> None:
    """controller_mutation_rate (KIP-599): partitions created per second. A burst of
    quota.window.num windows is admitted; then CreateTopics v6+ is refused
    THROTTLING_QUOTA_EXCEEDED with the time to wait, and older versions are throttled."""
    from kio.schema.create_topics.v5 import request as v5
    from kio.schema.create_topics.v7 import request as v7
    from kio.static.primitive import i16, i32

    broker = broker_factory({})
    set_quota(broker.port, "client-id", "test", "controller_mutation_rate", 2.0)  # RawClient's id

    def create(module, name: str, partitions: int):
        topic = module.CreatableTopic(name=name, num_partitions=i32(partitions), replication_factor=i16(1),
                                      assignments=(), configs=())
        with RawClient(broker.port) as client:
            response = client.send(module.CreateTopicsRequest(topics=(topic,), timeout=i32Timedelta.parse(datetime.timedelta(seconds=30)),
                                                              validate_only=False))
        (result,) = response.topics
        return result.error_code.value, response.throttle_time.total_seconds() * 1000

    # Burst: 11 windows x 2 partitions/s = 22 partitions.
    assert create(v7, "m1", 20) == (0, 0)
    error, throttle = create(v7, "m2", 20)  # admitted into debt: 18 partitions owed
    assert error == 0 and 8500 <= throttle <= 9000, throttle
    error, throttle = create(v7, "m3", 1)
    assert error == 89 and 8000 <= throttle <= 9000, (error, throttle)  # THROTTLING_QUOTA_EXCEEDED
    error, throttle = create(v5, "m4", 4)  # an old version: created, only throttled
    assert error == 0 and throttle > 9000, throttle
    names = set(AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).topics)
    assert {"m1", "m2", "m4"} <= names and "m3" not in names
