"""Issue 8, damaged files lose only what is damaged: real broker processes on real
disk, files cut or flipped between runs (and during one), read back by confluent-kafka."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from test_clients import create_topic

from kwire.log.checkpoint import LogState
from kwire.protocol.records import build_batch, parse_batch_header

TIMEOUT = 30


def delivery_recorder() -> tuple[dict[int, bytes], list[str], Callable[[object, object], None]]:
    """(offset -> value of each acknowledged message, delivery errors, the callback)."""
    acked: dict[int, bytes] = {}
    errors: list[str] = []

    def report(err: object, msg: object) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            acked[msg.offset()] = msg.value()  # type: ignore[attr-defined]

    return acked, errors, report


def produce_batches(bootstrap: str, topic: str, batches: int, per_batch: int, start: int = 0, **extra: object) -> dict[int, bytes]:
    """Produce `batches` batches of `per_batch` messages (one flush each, so one
    batch each); returns offset -> value of every acknowledged message."""
    acked, errors, report = delivery_recorder()

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1000, "message.timeout.ms": TIMEOUT * 1000, **extra})
    n = start
    for _ in range(batches):
        for _ in range(per_batch):
            producer.produce(topic, key=b"k", value=f"value-{n:06d}".encode() + b"x" * 80, on_delivery=report)
            n += 1
        assert producer.flush(TIMEOUT) == 0
    assert not errors, errors[:3]
    return acked


def consumer(bootstrap: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": "durability", "enable.auto.commit": False,
                     "fetch.error.backoff.ms": 50, "fetch.queue.backoff.ms": 10})


def read_from(bootstrap: str, topic: str, offset: int, until: int) -> tuple[dict[int, bytes], list[KafkaError]]:
    """Offsets and values from `offset` until offset `until` (exclusive) is reached,
    or until a partition error is seen (returned, reading stops)."""
    c = consumer(bootstrap)
    got: dict[int, bytes] = {}
    errors: list[KafkaError] = []
    try:
        c.assign([TopicPartition(topic, 0, offset)])
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and not errors and (not got or max(got) < until - 1):
            for msg in c.consume(1000, timeout=0.2):
                if msg.error():
                    errors.append(msg.error())
                    break
                got[msg.offset()] = msg.value()
    finally:
        c.close()
    return got, errors


def watermarks(bootstrap: str, topic: str) -> tuple[int, int]:
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)
    finally:
        c.close()


def batches_in(path: Path) -> list[tuple[int, int, int, int]]:
    """(position, size, base offset, last offset) of each batch in a segment file."""
    data = path.read_bytes()
    out, position = [], 0
    while position + 61 <= len(data):
        header = parse_batch_header(data, position)
        out.append((position, header.size, header.base_offset, header.last_offset))
        position += header.size
    return out


def flip_byte(path: Path, position: int) -> None:
    with open(path, "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ 0x5A]))


def log_lines(broker, level: str) -> list[str]:
    return [line for line in broker.log_path.read_text(errors="replace").splitlines() if f" {level} " in line]


def wait_until(condition, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def test_torn_last_batch_after_clean_shutdown_is_cut_and_new_writes_are_readable(broker_factory) -> None:
    broker = broker_factory()
    create_topic(broker.bootstrap, "torn", 1)
    acked = produce_batches(broker.bootstrap, "torn", 10, 1)
    assert sorted(acked) == list(range(10))
    broker.stop()  # SIGTERM: a clean shutdown
    [segment] = sorted((broker.data_dir / "torn-0").glob("*.log"))
    position, size, base, last = batches_in(segment)[-1]
    assert (base, last) == (9, 9)
    os.truncate(segment, position + size // 2)  # the last batch cut in half

    broker.start()
    assert any("after a clean shutdown" in line for line in log_lines(broker, "INFO"))
    [warning] = [line for line in log_lines(broker, "WARNING") if "dropped" in line]
    assert f"torn-0: recovery after a clean shutdown dropped {size // 2} bytes of segment {segment.name} from position {position}" in warning
    assert "(1 batch(es)" in warning and "offsets 9 to 9 lost" in warning and "log end offset is now 9" in warning
    assert watermarks(broker.bootstrap, "torn") == (0, 9)

    new = produce_batches(broker.bootstrap, "torn", 5, 1, start=100)
    assert sorted(new) == list(range(9, 14))
    got, errors = read_from(broker.bootstrap, "torn", 0, 14)
    assert not errors
    assert got == {o: v for o, v in acked.items() if o < 9} | new
    # And the file is whole batches only, again after another clean restart.
    broker.restart()
    assert [b[2] for b in batches_in(segment)] == list(range(14))
    assert read_from(broker.bootstrap, "torn", 0, 14) == (got, [])


def test_flipped_byte_in_a_flushed_segment_loses_only_that_batch(broker_factory) -> None:
    per_batch = 100
    one_batch = len(build_batch([(b"k", b"value-000000" + b"x" * 80, (), 0)] * per_batch))
    broker = broker_factory()
    # Six batches a segment: 60 batches (6,000 messages) make 10 segments.
    create_topic(broker.bootstrap, "flip", 1, {"segment.bytes": str(int(one_batch * 6.5))})
    # Kafka's CORRUPT_MESSAGE is librdkafka's INVALID_MSG (code 2); the broker logs an ERROR.
    broker.expect_log(r"ERROR kwire.handlers.fetch: fetch of flip-0 at offset \d+: corrupt record batch")
    acked = produce_batches(broker.bootstrap, "flip", 60, per_batch, acks="all")
    assert sorted(acked) == list(range(6000))
    folder = broker.data_dir / "flip-0"
    segments = sorted(folder.glob("*.log"))
    assert len(segments) == 10
    active_base = int(segments[-1].name.split(".")[0])
    # Each roll fsyncs the rolled segment off the event loop, then records the recovery point.
    wait_until(lambda: (LogState.read(folder) or LogState()).recovery_point == active_base, "recovery point")
    broker.kill()  # SIGKILL: a crash

    victim = batches_in(segments[0])[1]
    flip_byte(segments[0], victim[0] + victim[1] - 40)  # inside a record, under the CRC
    broker.start()
    assert any("unclean shutdown" in line for line in log_lines(broker, "INFO"))
    assert not [line for line in log_lines(broker, "WARNING") if "dropped" in line]
    assert watermarks(broker.bootstrap, "flip") == (0, 6000)

    # While it runs, a byte flips in a segment that nothing has read yet.
    later = batches_in(segments[5])[3]
    flip_byte(segments[5], later[0] + 100)

    # A reader gets the batches before the damaged one, then CORRUPT_MESSAGE for it.
    got, errors = read_from(broker.bootstrap, "flip", 0, 6000)
    assert got == {o: acked[o] for o in range(victim[2])}
    assert errors and errors[0].code() == KafkaError.INVALID_MSG
    [error] = [line for line in log_lines(broker, "ERROR") if f"at offset {victim[2]}:" in line][:1]
    assert "fetch of flip-0" in error and "corrupt record batch" in error and segments[0].name in error

    # Everything after the damaged batches is there: nothing acknowledged is lost beyond them.
    got, errors = read_from(broker.bootstrap, "flip", victim[3] + 1, 6000)
    assert got == {o: acked[o] for o in range(victim[3] + 1, later[2])}
    assert errors and errors[0].code() == KafkaError.INVALID_MSG
    assert [line for line in log_lines(broker, "ERROR") if f"at offset {later[2]}:" in line]
    got, errors = read_from(broker.bootstrap, "flip", later[3] + 1, 6000)
    assert not errors
    assert got == {o: acked[o] for o in range(later[3] + 1, 6000)}
    # The broker still takes writes after them.
    assert sorted(produce_batches(broker.bootstrap, "flip", 1, 10, start=9000)) == list(range(6000, 6010))


def test_crash_with_a_flipped_byte_in_the_unflushed_segment_warns_what_it_drops(broker_factory) -> None:
    broker = broker_factory({"log.flush.interval.messages": "1000000"})
    create_topic(broker.bootstrap, "unflushed", 1)
    acked = produce_batches(broker.bootstrap, "unflushed", 8, 50)
    broker.kill()
    [segment] = sorted((broker.data_dir / "unflushed-0").glob("*.log"))
    batches = batches_in(segment)
    victim = batches[5]
    flip_byte(segment, victim[0] + victim[1] - 10)
    broker.start()
    [warning] = [line for line in log_lines(broker, "WARNING") if "dropped" in line]
    dropped = sum(b[1] for b in batches[5:])
    assert (
        f"unflushed-0: recovery after an unclean shutdown dropped {dropped} bytes of segment {segment.name} "
        f"from position {victim[0]} (3 batch(es), from the first that fails its checks on): "
        f"offsets {victim[2]} to 399 lost; the log end offset is now {victim[2]}"
    ) in warning
    assert watermarks(broker.bootstrap, "unflushed") == (0, victim[2])
    got, errors = read_from(broker.bootstrap, "unflushed", 0, victim[2])
    assert not errors and got == {o: acked[o] for o in range(victim[2])}


@pytest.mark.parametrize("removed_by", ["delete_records", "retention"])
def test_idempotent_producer_after_its_batches_are_removed(broker_factory, removed_by: str) -> None:
    broker = broker_factory({"log.retention.check.interval.ms": "200"})
    configs = {"segment.bytes": "2000", "file.delete.delay.ms": "0"}
    if removed_by == "retention":
        configs["retention.ms"] = "1000"
    create_topic(broker.bootstrap, "idem-gone", 1, configs)
    acked, errors, report = delivery_recorder()

    # One producer for the whole test: its id and sequence numbers go on across restarts.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 5,
                         "message.timeout.ms": TIMEOUT * 1000, "retry.backoff.ms": 50})

    def produce(start: int, count: int) -> None:
        for i in range(start, start + count):
            producer.produce("idem-gone", value=f"m{i}".encode() + b"y" * 50, on_delivery=report)
        assert producer.flush(TIMEOUT) == 0
        assert not errors, errors[:3]

    produce(0, 200)
    if removed_by == "delete_records":
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        [future] = admin.delete_records([TopicPartition("idem-gone", 0, 200)]).values()
        assert future.result(timeout=TIMEOUT).low_watermark == 200
    wait_until(lambda: watermarks(broker.bootstrap, "idem-gone")[0] == 200, "log start offset 200")

    broker.restart()  # clean
    produce(200, 100)
    if removed_by == "delete_records":
        [future] = admin.delete_records([TopicPartition("idem-gone", 0, 300)]).values()
        future.result(timeout=TIMEOUT)
    wait_until(lambda: watermarks(broker.bootstrap, "idem-gone")[0] == 300, "log start offset 300")
    broker.kill()  # unclean: producer state is replayed from what is left of the log
    broker.start()
    if removed_by == "retention":
        # Keep what comes next, so that it can be read back.
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        resource = ConfigResource(ResourceType.TOPIC, "idem-gone", incremental_configs=[
            ConfigEntry("retention.ms", "-1", incremental_operation=AlterConfigOpType.SET)])
        [future] = admin.incremental_alter_configs([resource]).values()
        future.result(timeout=TIMEOUT)
        wait_until(lambda: watermarks(broker.bootstrap, "idem-gone")[0] == 300, "log start offset 300")
    produce(300, 100)
    producer.poll(0)
    assert not errors
    assert sorted(acked) == list(range(400))
    low, high = watermarks(broker.bootstrap, "idem-gone")
    assert (low, high) == (300, 400)
    got, read_errors = read_from(broker.bootstrap, "idem-gone", low, 400)
    assert not read_errors and got == {o: acked[o] for o in range(low, 400)}
    assert not log_lines(broker, "ERROR")
