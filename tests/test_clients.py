"""Issue 2 end to end: real clients produce to and fetch from a real broker process."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from kwire.protocol.records import validate_batches

TIMEOUT = 60


def create_topic(bootstrap: str, name: str, partitions: int, configs: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1, config=configs or {})], operation_timeout=10)
    futures[name].result(timeout=TIMEOUT)


def produce_keyed(bootstrap: str, topic: str, count: int, compression: str = "none", **extra: object) -> dict[int, list[tuple[bytes, bytes]]]:
    """Produce `count` keyed messages; returns what each partition got, in order."""
    delivered: dict[int, list[tuple[bytes, bytes]]] = {}
    errors: list[str] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            delivered.setdefault(msg.partition(), []).append((msg.key(), msg.value()))  # type: ignore[attr-defined]

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": compression,
            "linger.ms": 5,
            "message.timeout.ms": TIMEOUT * 1000,
            **extra,
        }
    )
    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=f"key-{i % 1000}".encode(), value=f"value-{i}".encode(), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(TIMEOUT) == 0
    assert not errors, errors[:5]
    return delivered


def consume_assigned(bootstrap: str, topic: str, partitions: int, expected: int, **extra: object) -> dict[int, list[tuple[bytes, bytes]]]:
    """Read every partition from the beginning by assignment (no group)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused",
            "enable.auto.commit": False,
            "fetch.queue.backoff.ms": 10,
            **extra,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: dict[int, list[tuple[bytes, bytes]]] = {}
    seen = 0
    deadline = time.monotonic() + TIMEOUT
    try:
        while seen < expected and time.monotonic() < deadline:
            for msg in consumer.consume(10000, timeout=0.2):
                if msg.error():
                    raise KafkaException(msg.error())
                got.setdefault(msg.partition(), []).append((msg.key(), msg.value()))
                seen += 1
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_confluent_100k_keyed_messages_each_compression(broker, compression: str) -> None:
    topic = f"keyed-{compression}"
    create_topic(broker.bootstrap, topic, 3)
    produced = produce_keyed(broker.bootstrap, topic, 100_000, compression)
    assert sum(len(v) for v in produced.values()) == 100_000
    consumed = consume_assigned(broker.bootstrap, topic, 3, 100_000)
    # Same messages, same order per partition.
    assert consumed == produced
    # Keys sit on stable partitions: each key in exactly one partition.
    owner: dict[bytes, int] = {}
    for partition, messages in consumed.items():
        for key, _ in messages:
            assert owner.setdefault(key, partition) == partition


def test_offsets_continue_after_clean_restart(broker) -> None:
    create_topic(broker.bootstrap, "restart", 1)
    produce_keyed(broker.bootstrap, "restart", 1000)
    broker.restart()
    produce_keyed(broker.bootstrap, "restart", 1000)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x", "enable.auto.commit": False})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition("restart", 0), timeout=10)
    finally:
        consumer.close()
    assert (low, high) == (0, 2000)
    consumed = consume_assigned(broker.bootstrap, "restart", 1, 2000)
    assert [v for _, v in consumed[0]] == [f"value-{i}".encode() for i in range(1000)] * 2


def test_sigkill_during_produce_keeps_every_acknowledged_message(broker) -> None:
    create_topic(broker.bootstrap, "crash", 2)
    script = f"""
import sys
from confluent_kafka import Producer
p = Producer({{"bootstrap.servers": "{broker.bootstrap}", "acks": "1", "linger.ms": 2,
              "message.timeout.ms": 3000, "enable.idempotence": False}})
def report(err, msg):
    if err is None:
        print(msg.partition(), msg.offset(), msg.value().decode(), flush=True)
i = 0
while True:
    try:
        p.produce("crash", key=str(i % 7).encode(), value=f"v{{i}}".encode(), on_delivery=report)
        i += 1
    except BufferError:
        pass
    p.poll(0)
"""
    producer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    time.sleep(3)
    broker.kill()
    time.sleep(0.5)
    producer.kill()
    out, _ = producer.communicate(timeout=TIMEOUT)
    acknowledged: dict[int, dict[int, str]] = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) != 3:
            continue  # the last line, cut by the kill
        partition, offset, value = fields
        acknowledged.setdefault(int(partition), {})[int(offset)] = value
    assert sum(len(v) for v in acknowledged.values()) > 1000

    # Every batch left on disk is whole and valid after recovery.
    broker.start()
    broker.stop()
    for partition in range(2):
        folder = broker.data_dir / f"crash-{partition}"
        for segment in sorted(folder.glob("*.log")):
            data = segment.read_bytes()
            if data:
                validate_batches(data)
    broker.start()
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x", "enable.auto.commit": False})
    for partition, messages in acknowledged.items():
        last = max(messages)
        consumer.assign([TopicPartition("crash", partition, 0)])
        found: dict[int, str] = {}
        deadline = time.monotonic() + TIMEOUT
        while len(found) < last + 1 and time.monotonic() < deadline:
            for msg in consumer.consume(10000, timeout=0.2):
                if not msg.error():
                    found[msg.offset()] = msg.value().decode()
            if found and max(found) >= last:
                break
        for offset, value in messages.items():
            assert found.get(offset) == value, (partition, offset)
    consumer.close()


def test_list_offsets_by_timestamp(broker) -> None:
    create_topic(broker.bootstrap, "times", 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    base = 1_700_000_000_000
    for i in range(100):
        producer.produce("times", value=f"{i}".encode(), timestamp=base + i * 1000)
        producer.flush(10)  # one batch per message: lookups inside and across batches
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x"})
    try:
        found = consumer.offsets_for_times([TopicPartition("times", 0, base + 41_500)], timeout=10)
        assert found[0].offset == 42
        found = consumer.offsets_for_times([TopicPartition("times", 0, base)], timeout=10)
        assert found[0].offset == 0
        found = consumer.offsets_for_times([TopicPartition("times", 0, base + 10**9)], timeout=10)
        assert found[0].offset == -1  # past the end: OFFSET_END
        assert consumer.get_watermark_offsets(TopicPartition("times", 0), timeout=10) == (0, 100)
    finally:
        consumer.close()


def test_list_offsets_by_timestamp_inside_a_batch(broker) -> None:
    create_topic(broker.bootstrap, "times-batched", 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 100, "compression.type": "lz4"})
    base = 1_700_000_000_000
    for i in range(100):
        producer.produce("times-batched", value=f"{i}".encode(), timestamp=base + i * 1000)
    producer.flush(10)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "x"})
    try:
        found = consumer.offsets_for_times([TopicPartition("times-batched", 0, base + 41_500)], timeout=10)
        assert found[0].offset == 42
    finally:
        consumer.close()


def test_kafka_python_produces_and_fetches(broker) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTopicPartition

    create_topic(broker.bootstrap, "kp", 2)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)  # idempotent by default in 3.x
    futures = [producer.send("kp", key=f"k{i % 5}".encode(), value=f"v{i}".encode()) for i in range(500)]
    producer.flush(timeout=TIMEOUT)
    offsets = [f.get(timeout=TIMEOUT) for f in futures]
    producer.close()
    assert len(offsets) == 500
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, consumer_timeout_ms=5000)
    consumer.assign([KTopicPartition("kp", 0), KTopicPartition("kp", 1)])
    consumer.seek_to_beginning()
    values = sorted(int(m.value[1:]) for m in consumer)
    consumer.close()
    assert values == list(range(500))


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (scripts/test-all installs it)")
def test_kcat_produces_and_consumes(broker) -> None:
    lines = "".join(f"k{i}:line {i}\n" for i in range(200))
    subprocess.run(
        ["kcat", "-b", broker.bootstrap, "-t", "kcat-topic", "-K:", "-P"],
        input=lines.encode(), check=True, timeout=TIMEOUT,
    )
    out = subprocess.run(
        ["kcat", "-b", broker.bootstrap, "-t", "kcat-topic", "-C", "-o", "beginning", "-e", "-f", "%k:%s\\n"],
        capture_output=True, check=True, timeout=TIMEOUT,
    ).stdout.decode()
    assert out == lines
