"""Log compaction end to end: a real broker process compacts what real clients produced.

Each test produces a changelog (acks=all, every delivery report checked), lets the
broker's log cleaner work (log.cleaner.backoff.ms=100, a small min.cleanable.dirty.ratio,
segment.ms and delete.retention.ms of half a second), then reads the partition from
offset 0 with a consumer. The expected table comes from the delivery reports: for each
key, the record acknowledged at the highest offset. After compaction the log must hold
exactly one record per live key, that very record (same offset, same value), no deleted
key, offsets strictly increasing, in a small fraction of the bytes produced.

What a user sees is all the tests use to wait: the `cleaner-offset-checkpoint` in the
log dir reaching the active segment's base offset, the segment files' sizes, and
reading the topic; every wait is bounded.
"""

from __future__ import annotations

import logging
import random
import struct
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import BrokerProcess

BROKER_CONFIG = {"log.cleaner.backoff.ms": "100"}
ROLL_MS = 500  # segment.ms and delete.retention.ms of the compacted topics
COMPACTED = {
    "cleanup.policy": "compact",
    "segment.bytes": str(1 << 20),
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": str(ROLL_MS),
    "segment.ms": str(ROLL_MS),
}
# The last records of every compaction round: their append rolls the active segment
# (segment.ms has passed), so everything before them is in closed, cleanable segments,
# and they are enough dirty bytes (incompressible values) for min.cleanable.dirty.ratio
# next to the compacted rest: the pass after them removes the tombstones whose delete
# horizon the previous pass set.
NUDGES = 200
CHECKPOINT_FILE = "cleaner-offset-checkpoint"
FAST_PRODUCER = {
    "acks": "all",
    "linger.ms": 50,
    "batch.size": 1_000_000,
    "queue.buffering.max.messages": 500_000,
    "message.timeout.ms": 120_000,
}


@dataclass(frozen=True)
class Record:
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Acked:
    """What the broker acknowledged: per key, the record at the highest offset."""

    latest: dict[bytes, tuple[int, bytes | None]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    count: int = 0
    payload_bytes: int = 0

    def on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            if len(self.failures) < 10:
                self.failures.append(f"{msg.key()!r}: {err}")
            return
        self.count += 1
        key, value, offset = msg.key(), msg.value(), msg.offset()
        self.payload_bytes += len(key) + len(value or b"")
        old = self.latest.get(key)
        if old is None or old[0] < offset:
            self.latest[key] = (offset, value)

    def merge(self, other: Acked) -> None:
        """Take another's acknowledged records (a committed transaction's)."""
        self.count += other.count
        self.payload_bytes += other.payload_bytes
        self.failures += other.failures
        for key, (offset, value) in other.latest.items():
            old = self.latest.get(key)
            if old is None or old[0] < offset:
                self.latest[key] = (offset, value)

    def live(self) -> dict[bytes, bytes]:
        return {k: v for k, (_, v) in self.latest.items() if v is not None}

    def deleted(self) -> set[bytes]:
        return {k for k, (_, v) in self.latest.items() if v is None}


def changelog(n: int, keys: int = 10_000, seed: int = 11) -> Iterator[tuple[bytes, bytes | None]]:
    """n updates over `keys` keys with tombstones for 10% of them: half are deleted at
    spread points of the first 90% and then set again by later updates, half are
    deleted at spread points of the whole stream and stay deleted."""
    rng = random.Random(seed)
    names = [b"k%05d" % i for i in range(keys)]
    deleted = rng.sample(range(keys), keys // 10)
    reset, stay = deleted[: len(deleted) // 2], deleted[len(deleted) // 2 :]
    tombstones: dict[int, int] = {}
    for j, k in enumerate(reset):
        tombstones[int(n * 0.9 * j / len(reset))] = k
    for j, k in enumerate(stay):
        tombstones.setdefault(int(n * (0.05 + 0.9 * j / len(stay))), k)
    dead: set[int] = set()
    for i in range(n):
        k = tombstones.get(i)
        if k is not None:
            if k in stay:
                dead.add(k)
            yield names[k], None
            continue
        k = rng.randrange(keys)
        while k in dead:
            k = rng.randrange(keys)
        yield names[k], b"v%07d" % i


def create_topic(broker: BrokerProcess, topic: str, config: dict[str, str] | None = None) -> Path:
    """A one-partition topic; its directory in the broker's log dir."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    future = admin.create_topics([NewTopic(topic, 1, 1, config=config or {})], operation_timeout=10)[topic]
    future.result(15)
    return broker.data_dir / f"{topic}-0"


def produce(producer: Producer, topic: str, records: Iterable[tuple[bytes | None, bytes | None]],
            acked: Acked, *, timeout_s: float = 120.0) -> None:
    """Produce and flush; every record must be acknowledged."""
    deadline = time.monotonic() + timeout_s
    send, poll, cb = producer.produce, producer.poll, acked.on_delivery
    for key, value in records:
        while True:
            try:
                send(topic, key=key, value=value, on_delivery=cb)
                break
            except BufferError:  # the producer's queue is full: let deliveries drain it
                poll(0.05)
                assert time.monotonic() < deadline, "the producer's queue did not drain"
    left = producer.flush(max(1.0, deadline - time.monotonic()))
    assert left == 0, f"{left} records unacknowledged; {acked.failures[:3]}"
    assert not acked.failures, acked.failures


def log_bytes(directory: Path) -> int:
    """Bytes of the partition's segments (a file swapped away between the listing and
    its stat counts nothing)."""
    total = 0
    for path in directory.glob("*.log"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return total


def active_base_offset(directory: Path) -> int:
    return max(int(p.name.split(".")[0]) for p in directory.glob("*.log"))


def checkpointed(data_dir: Path, topic: str, partition: int = 0) -> int | None:
    """The partition's first dirty offset in cleaner-offset-checkpoint (Kafka's format:
    version, count, `topic partition offset` lines); None before the first pass."""
    try:
        lines = (data_dir / CHECKPOINT_FILE).read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines[2:]:
        parts = line.split()
        if len(parts) == 3 and parts[0] == topic and int(parts[1]) == partition:
            return int(parts[2])
    return None


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(interval_s)


def wait_cleaned_to_active(broker: BrokerProcess, topic: str, timeout_s: float = 60.0) -> None:
    """Until the cleaner's checkpoint reaches the active segment: every closed segment
    has been through a pass."""
    directory = broker.data_dir / f"{topic}-0"

    def done() -> bool:
        offset = checkpointed(broker.data_dir, topic)
        try:
            return offset is not None and offset >= active_base_offset(directory)
        except ValueError:  # no .log listed for an instant of a swap
            return False

    wait_until(done, timeout_s, f"the cleaner's checkpoint of {topic}-0 at its active segment")


def read_log(bootstrap: str, topic: str, *, isolation: str = "read_uncommitted",
             timeout_s: float = 60.0) -> list[Record]:
    """Every record from offset 0 to the high watermark (whose last record is a nudge:
    a data record, so the end is seen in either isolation level)."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"reader-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "isolation.level": isolation,
        "auto.offset.reset": "earliest",
    })
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while (not out or out[-1].offset < high - 1) and time.monotonic() < deadline:
            for message in consumer.consume(10_000, 0.5):
                assert message.error() is None, message.error()
                out.append(Record(message.offset(), message.key(), message.value()))
        assert out and out[-1].offset == high - 1, (
            f"read up to {out[-1].offset if out else None}, high watermark {high}")
        return out
    finally:
        consumer.close()


def compaction_problems(records: list[Record], acked: Acked) -> list[str]:
    """Why `records` is not exactly the compacted table of what was acknowledged."""
    problems = []
    offsets = [r.offset for r in records]
    if any(a >= b for a, b in zip(offsets, offsets[1:], strict=False)):
        problems.append("offsets not strictly increasing")
    keys = [r.key for r in records]
    if len(set(keys)) != len(keys):
        problems.append(f"{len(keys) - len(set(keys))} superseded records left")
    deleted = {r.key for r in records} & acked.deleted()
    if deleted:
        problems.append(f"{len(deleted)} deleted keys still there, e.g. {sorted(deleted)[:3]}")
    live = acked.live()
    seen = {r.key: r.value for r in records if r.value is not None}
    missing = live.keys() - seen.keys()
    if missing:
        problems.append(f"{len(missing)} live keys missing, e.g. {sorted(missing)[:3]}")
    wrong = [r for r in records if r.key in live and acked.latest[r.key] != (r.offset, r.value)]
    if wrong:
        problems.append(f"{len(wrong)} records not the last acknowledged one, e.g. {wrong[:2]} "
                        f"(acknowledged {[acked.latest[r.key] for r in wrong[:2]]})")
    return problems


def nudges() -> list[tuple[bytes, bytes]]:
    """Keys never written before: a key of the active segment would not supersede its
    older records (the cleaner's offset map stops at the first uncleanable offset)."""
    tag = uuid.uuid4().hex[:12].encode()
    return [(b"~nudge-%s-%03d" % (tag, i), random.randbytes(32)) for i in range(NUDGES)]


def is_nudge(key: bytes) -> bool:
    return key.startswith(b"~nudge-")


def compact_fully(broker: BrokerProcess, topic: str, nudger: Producer, acked: Acked, *,
                  isolation: str = "read_uncommitted", max_rounds: int = 6) -> tuple[list[Record], int]:
    """Rounds of: wait segment.ms and delete.retention.ms, append the nudges (they roll
    the active segment), wait for the cleaner to reach it, read the log. A tombstone goes in
    the pass after the one that set its delete horizon, so at least two rounds; stops at
    the first exact read. Returns the last read and the rounds taken."""
    records: list[Record] = []
    for round_ in range(1, max_rounds + 1):
        time.sleep(ROLL_MS / 1000 + 0.1)
        produce(nudger, topic, nudges(), acked)
        wait_cleaned_to_active(broker, topic)
        records = read_log(broker.bootstrap, topic, isolation=isolation)
        if round_ >= 2 and not compaction_problems(records, acked):
            break
    return records, round_


def assert_small(size: int, acked: Acked) -> None:
    """The compacted log is within a few times the bytes of its live keys and values
    (record and batch headers; the active segment holds only the last nudges)."""
    live_bytes = sum(len(k) + len(v) for k, v in acked.live().items())
    assert size < 3 * live_bytes + 65536, (size, live_bytes)


def live_keys(acked: Acked) -> int:
    return sum(1 for k in acked.live() if not is_nudge(k))


def assert_compacted(records: list[Record], acked: Acked) -> None:
    problems = compaction_problems(records, acked)
    assert not problems, "; ".join(problems)
    # Exactly the live keys (and the nudges), each once.
    assert len(records) == len(acked.live())


# Kafka's record batch header: base offset 8, length 4, leader epoch 4, magic 1, crc 4,
# attributes 2, ..., record count (4 bytes) at 57; 61 bytes in all.
BATCH_HEADER = 61


def batch_codecs(directory: Path) -> set[int]:
    """The compression codecs (attributes & 7) of the batches holding records."""
    codecs = set()
    for path in directory.glob("*.log"):
        data = path.read_bytes()
        position = 0
        while position + BATCH_HEADER <= len(data):
            (length,) = struct.unpack_from(">i", data, position + 8)
            (attributes,) = struct.unpack_from(">h", data, position + 21)
            (count,) = struct.unpack_from(">i", data, position + 57)
            if count > 0 and not attributes & 0x20:  # not a control batch
                codecs.add(attributes & 7)
            position += 12 + length
    return codecs


CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def run_changelog(broker: BrokerProcess, topic: str, n: int, compression: str = "none") -> tuple[Acked, list[Record]]:
    directory = create_topic(broker, topic, COMPACTED)
    acked = Acked()
    producer = Producer({"bootstrap.servers": broker.bootstrap, **FAST_PRODUCER,
                         "compression.type": compression})
    started = time.monotonic()
    produce(producer, topic, changelog(n), acked)
    produced_s = time.monotonic() - started
    assert acked.count == n
    records, rounds = compact_fully(broker, topic, producer, acked)
    assert_compacted(records, acked)
    size = log_bytes(directory)
    assert_small(size, acked)
    if n >= 1_000_000:
        # 100 updates per key: a small fraction of the keys and values produced.
        assert size < acked.payload_bytes * 0.05, (size, acked.payload_bytes)
    print(f"\n{topic}: {n:,} updates ({compression}) produced in {produced_s:.1f} s; compacted "
          f"in {time.monotonic() - started:.1f} s ({rounds} rounds) to {len(records):,} records, "
          f"{size:,} bytes on disk for {acked.payload_bytes:,} bytes of keys and values; "
          f"{len(acked.deleted())} keys deleted, {live_keys(acked)} live")
    return acked, records


def test_changelog_of_a_million_updates_compacts_to_the_last_value_of_each_key(broker_factory: Any) -> None:
    broker = broker_factory(BROKER_CONFIG)
    acked, records = run_changelog(broker, "changelog", 1_000_000)
    # 500 keys were deleted for good; of the 500 deleted and set again, nearly all are back.
    assert len(acked.deleted()) == 500
    assert live_keys(acked) == 9_500


@pytest.mark.parametrize(("compression", "n"), [
    ("gzip", 100_000), ("snappy", 100_000), ("lz4", 1_000_000), ("zstd", 100_000)])
def test_compressed_changelog_compacts_and_keeps_its_codec(broker_factory: Any, compression: str, n: int) -> None:
    broker = broker_factory(BROKER_CONFIG)
    run_changelog(broker, f"changelog-{compression}", n, compression)
    # Rebuilt batches keep the producer's compression.
    assert batch_codecs(broker.data_dir / f"changelog-{compression}-0") == {CODEC_IDS[compression]}


def test_transactional_changelog_compacts_without_aborted_records(broker_factory: Any) -> None:
    broker = broker_factory(BROKER_CONFIG)
    topic = "txn-changelog"
    create_topic(broker, topic, COMPACTED)
    producer = Producer({"bootstrap.servers": broker.bootstrap, **FAST_PRODUCER,
                         "message.timeout.ms": 60_000, "transactional.id": "changelog-writer"})
    producer.init_transactions(15)
    committed, aborted_values = Acked(), set()
    updates = list(changelog(300_000))
    size = 2_000
    for number, start in enumerate(range(0, len(updates), size)):
        chunk = updates[start : start + size]
        pending = Acked()
        producer.begin_transaction()
        produce(producer, topic, chunk, pending)
        if number % 4 == 3:  # every fourth transaction is aborted
            producer.abort_transaction(30)
            aborted_values |= {v for _, v in chunk if v is not None}
        else:
            producer.commit_transaction(30)
            committed.merge(pending)
    # The nudges are not transactional, so the log ends with a data record.
    nudger = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    records, _ = compact_fully(broker, topic, nudger, committed, isolation="read_committed")
    for isolation in ("read_committed", "read_uncommitted"):
        records = read_log(broker.bootstrap, topic, isolation=isolation)
        assert_compacted(records, committed)
        assert not {r.value for r in records} & aborted_values, isolation
    assert_small(log_bytes(broker.data_dir / f"{topic}-0"), committed)


class ProducerLog(logging.Handler):
    """librdkafka's log lines of a producer (its `logger`)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


SEQUENCE_TROUBLE = ("OUT_OF_ORDER_SEQUENCE", "Out of order sequence", "UNKNOWN_PRODUCER_ID",
                    "Unknown producer", "epoch bump", "Bumping", "bump")


def test_idempotent_producer_keeps_producing_after_compaction_and_restarts(broker_factory: Any) -> None:
    """The cleaner removes every record of the idempotent producer's last batches, which
    later writes supersede, while its earlier batches stay: the broker must still know
    the producer's last sequence after a SIGKILL and after a clean restart, or its
    next batch would be refused as out of order."""
    broker = broker_factory(BROKER_CONFIG)
    topic = "idempotent-changelog"
    create_topic(broker, topic, COMPACTED)
    handler = ProducerLog()
    rdkafka_log = logging.getLogger(f"rdkafka-{uuid.uuid4()}")
    rdkafka_log.addHandler(handler)
    rdkafka_log.setLevel(logging.DEBUG)
    errors: list[KafkaError] = []
    idempotent = Producer({"bootstrap.servers": broker.bootstrap, **FAST_PRODUCER,
                           "enable.idempotence": True, "debug": "eos",
                           "logger": rdkafka_log, "error_cb": errors.append})
    other = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    acked = Acked()
    updates = changelog(140_000)
    last_keys = [b"k%05d" % i for i in range(100)]

    def write_then_supersede_the_last_batch(count: int, tag: bytes) -> None:
        produce(idempotent, topic, (next(updates) for _ in range(count)), acked)
        # The producer's last batch: 100 keys that the other producer then overwrites.
        produce(idempotent, topic, [(k, b"last-" + tag) for k in last_keys], acked)
        produce(other, topic, [(k, b"other-" + tag) for k in last_keys], acked)

    write_then_supersede_the_last_batch(100_000, b"1")
    records, _ = compact_fully(broker, topic, other, acked)
    assert_compacted(records, acked)
    assert not any(r.value and r.value.startswith(b"last-") for r in records)

    broker.kill()
    broker.start()
    write_then_supersede_the_last_batch(20_000, b"2")
    records, _ = compact_fully(broker, topic, other, acked)
    assert_compacted(records, acked)

    broker.restart()
    write_then_supersede_the_last_batch(20_000, b"3")
    records, _ = compact_fully(broker, topic, other, acked)
    assert_compacted(records, acked)
    idempotent.poll(0)  # serve the logger and error callbacks still queued

    fatal = [e for e in errors if e.fatal() or e.code() in (
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError.UNKNOWN_PRODUCER_ID, KafkaError._FATAL)]
    assert not fatal, fatal
    trouble = [line for line in handler.lines if any(t in line for t in SEQUENCE_TROUBLE)]
    assert not trouble, trouble[:5]
    # One producer id and epoch all along: the broker never made it start over.
    acquired = [line for line in handler.lines if "Acquired PID" in line]
    assert len(acquired) == 1, acquired


def test_keyless_records_are_refused_on_a_compacted_topic(broker_factory: Any) -> None:
    broker = broker_factory(BROKER_CONFIG)
    create_topic(broker, "keyed-only", COMPACTED)
    results: list[KafkaError | None] = []
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "retries": 0})
    # One batch each: a batch with a keyless record is refused whole, as Kafka does.
    producer.produce("keyed-only", value=b"no key", on_delivery=lambda err, _: results.append(err))
    assert producer.flush(15) == 0
    producer.produce("keyed-only", key=b"k", value=b"keyed", on_delivery=lambda err, _: results.append(err))
    assert producer.flush(15) == 0
    assert [e and e.code() for e in results] == [KafkaError.INVALID_RECORD, None], results
    # The keyed record is written, the keyless one is not.
    assert [(r.key, r.value) for r in read_log(broker.bootstrap, "keyed-only")] == [(b"k", b"keyed")]


def test_consumer_offsets_stay_bounded_under_a_million_commits(broker_factory: Any) -> None:
    """One group committing 100 partitions per request, 10,000 times: __consumer_offsets
    keeps a few segments, and a restart gives the last committed offsets."""
    broker = broker_factory({
        **BROKER_CONFIG,
        "offsets.topic.num.partitions": "1",
        "offsets.topic.segment.bytes": str(1 << 20),
    })
    partitions = 100
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("events", partitions, 1)], operation_timeout=10)["events"].result(15)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "committer",
                         "enable.auto.commit": False})
    directory = broker.data_dir / "__consumer_offsets-0"
    largest = 0
    commits = 10_000
    started = time.monotonic()
    try:
        for i in range(1, commits + 1):
            consumer.commit(offsets=[TopicPartition("events", p, i + p) for p in range(partitions)],
                            asynchronous=False)
            if i % 200 == 0:
                largest = max(largest, log_bytes(directory))
    finally:
        consumer.close()
    committing_s = time.monotonic() - started
    # Uncleaned, the million offset commits would take some 80 MB.
    assert largest < 5_000_000, largest
    final = log_bytes(directory)

    broker.stop()
    started = time.monotonic()
    broker.start()
    start_s = time.monotonic() - started
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "committer",
                         "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition("events", p) for p in range(partitions)], timeout=30)
    finally:
        consumer.close()
    loaded_s = time.monotonic() - started
    assert [tp.offset for tp in committed] == [commits + p for p in range(partitions)]
    print(f"\n__consumer_offsets: {commits * partitions:,} offset commits in {committing_s:.1f} s; "
          f"largest {largest:,} bytes, {final:,} at the end; restart: broker up in {start_s:.2f} s, "
          f"the group's offsets read back {loaded_s:.2f} s after the start")
