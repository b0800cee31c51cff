"""Issue 13, the mirror survives crashes: two real kwire brokers, the real `kwire mirror`
process (kwire.testing.Mirror) and a producer writing to the source all the while.

- SIGKILLed 10 times at random moments (at-least-once): every source record is on the target
  in its partition; a duplicate can only be a re-copy of a contiguous range, first
  occurrences in the source's order;
- the same with exactly.once.support=enabled: read_committed, the target holds every source
  record exactly once, in order;
- the source broker, then the target broker, restarted under the running mirror;
- the mirror started before its source cluster exists: it waits, then copies;
- SIGTERM under load exits 0 at once and stores the progress of everything copied: the next
  run copies nothing twice.

The source's records are numbered per partition and carry headers; the target is compared
with what the source holds (keys, values, headers, timestamps). During the kills the target
answers writes late, so that the kills land inside transactions and between a write and
the progress stored for it (see slow_writes).
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import log_problems

from kwire.mirror.offsets import decode_source_offset
from kwire.testing import Broker, Mirror, mirror_properties
from kwire.testing.mirror import READY_LINE

TIMEOUT = 60.0
TOPICS = ("orders", "payments")
PARTITIONS = 3
KILLS = 10

Record = tuple[bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...], int]


def properties(a: Broker | str, b: Broker, **settings: object) -> dict[str, str]:
    """The flow a->b with short intervals: progress stored every 300 ms, topics refreshed
    every second."""
    return mirror_properties(
        {"a": a, "b": b},
        offset_flush_interval_ms=300,
        refresh_topics_interval_seconds=1,
        emit_checkpoints_interval_seconds=1,
        progress_log_interval_seconds=1,
        **settings,
    )


def create_topics(bootstrap: str, topics: tuple[str, ...] = TOPICS) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [NewTopic(topic, PARTITIONS, 1) for topic in topics], request_timeout=TIMEOUT
    ).values():
        future.result(TIMEOUT)


class SourceProducer(threading.Thread):
    """Writes to every partition of `topics` until stop(): record n of a partition has the
    value `topic/partition/n`, a key and two headers. Idempotent, with a delivery timeout
    long enough to ride through a broker restart."""

    def __init__(self, bootstrap: str, topics: tuple[str, ...] = TOPICS, pause: float = 0.004):
        super().__init__(daemon=True)
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": int(TIMEOUT * 1000),
                "reconnect.backoff.max.ms": 500,
            }
        )
        self.topics = topics
        self.pause = pause
        self.sent = 0
        self.errors: list[str] = []
        self._halt = threading.Event()

    def _delivered(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.errors.append(error.str())

    def run(self) -> None:
        n = 0
        while not self._halt.is_set():
            for topic in self.topics:
                for partition in range(PARTITIONS):
                    value = f"{topic}/{partition}/{n}".encode()
                    self.producer.produce(
                        topic,
                        value + b"." * 60,
                        f"key-{n % 17}".encode(),
                        partition=partition,
                        headers=[("seq", str(n).encode()), ("origin", b"a")],
                        on_delivery=self._delivered,
                    )
                    self.sent += 1
            n += 1
            self.producer.poll(0)
            time.sleep(self.pause)

    def stop(self) -> int:
        """Stop writing, wait until everything is acknowledged; the number of records."""
        self._halt.set()
        self.join(TIMEOUT)
        assert self.producer.flush(TIMEOUT) == 0
        assert not self.errors, self.errors[:3]
        return self.sent


def read_partitions(
    bootstrap: str, topic: str, isolation: str = "read_uncommitted"
) -> dict[int, list[Record]]:
    """Every record of the topic's partitions, up to their end (the last stable offset with
    read_committed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "mirror-crash-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
            "fetch.wait.max.ms": 10,
        }
    )
    records: dict[int, list[Record]] = {p: [] for p in range(PARTITIONS)}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        remaining = set(range(PARTITIONS))
        deadline = time.monotonic() + TIMEOUT
        while remaining:
            assert time.monotonic() < deadline, f"{topic}: no end of {sorted(remaining)}"
            for message in consumer.consume(10_000, 0.5):
                error = message.error()
                if error is None:
                    records[message.partition()].append(
                        (
                            message.key(),
                            message.value(),
                            tuple(message.headers() or ()),
                            message.timestamp()[1],
                        )
                    )
                elif error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(message.partition())
                else:
                    raise AssertionError(f"reading {topic}: {error.str()}")
    finally:
        consumer.close()
    return records


def end_offsets(bootstrap: str, topic: str) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "mirror-crash-ends"})
    try:
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT)[1]
            for p in range(PARTITIONS)
        ]
    finally:
        consumer.close()


def source_records(
    bootstrap: str, topics: tuple[str, ...] = TOPICS
) -> dict[str, dict[int, list[Record]]]:
    """The source's records, checked to be each partition's numbered records once, in order."""
    source = {topic: read_partitions(bootstrap, topic) for topic in topics}
    for topic, partitions in source.items():
        for partition, records in partitions.items():
            numbers = [int(value.split(b"/")[2].rstrip(b".")) for _k, value, _h, _t in records]  # type: ignore[union-attr]
            assert numbers == list(range(len(numbers))), f"source {topic}[{partition}]"
    return source


def missing_records(source: list[Record], target: list[Record]) -> int:
    """How many of `source` are not on `target` (a cheap test of catching up)."""
    return len({r[1] for r in source} - {r[1] for r in target})


def wait_copied(
    source: dict[str, dict[int, list[Record]]],
    target_bootstrap: str,
    isolation: str = "read_uncommitted",
    timeout: float = TIMEOUT,
) -> dict[str, dict[int, list[Record]]]:
    """The target's remote topics once they hold every source record (read again until
    then)."""
    deadline = time.monotonic() + timeout
    while True:
        target = {
            topic: read_partitions(target_bootstrap, f"a.{topic}", isolation) for topic in source
        }
        missing = sum(
            missing_records(source[topic][p], target[topic][p])
            for topic in source
            for p in source[topic]
        )
        if missing == 0:
            return target
        assert time.monotonic() < deadline, f"{missing} source records not on the target"
        time.sleep(0.5)


def check_at_least_once(
    source: list[Record], target: list[Record], where: str, max_recopies: int | None = None
) -> int:
    """Every source record on the target; the target is the source's records in order,
    where a crash may have sent the mirror back to copy a contiguous range again (a jump
    back, then one record after the other), at most `max_recopies` times. Identical keys,
    values, headers, timestamps. The number of duplicates."""
    index = {record[1]: i for i, record in enumerate(source)}
    previous = -1
    recopies = 0
    for position, record in enumerate(target):
        i = index.get(record[1])
        assert i is not None, f"{where} offset {position}: {record[1]!r} is not a source record"
        assert record == source[i], f"{where} offset {position}: {record} != {source[i]}"
        assert i == previous + 1 or i <= previous, (
            f"{where} offset {position}: source record {i} after {previous}: "
            f"{i - previous - 1} records skipped"
        )
        recopies += i <= previous
        previous = i
    if max_recopies is not None:
        assert recopies <= max_recopies, f"{where}: copied again from {recopies} places"
    copied = {index[record[1]] for record in target}
    assert len(copied) == len(source), f"{where}: {len(source) - len(copied)} records missing"
    return len(target) - len(source)


def check_all_at_least_once(
    source: dict[str, dict[int, list[Record]]],
    target: dict[str, dict[int, list[Record]]],
    max_recopies: int | None = None,
) -> int:
    return sum(
        check_at_least_once(source[topic][p], target[topic][p], f"a.{topic}[{p}]", max_recopies)
        for topic in source
        for p in source[topic]
    )


def assert_no_traceback(mirror: Mirror) -> None:
    text = mirror.log_text()
    assert "Traceback" not in text and " ERROR " not in text, text[-5000:]


@contextlib.contextmanager
def slow_writes(target: Broker, delay_ms: int = 15) -> Iterator[None]:
    """The target answers every Produce and EndTxn `delay_ms` late (librdkafka sends a
    request per partition, so a flush takes several), so that the mirror spends much of its
    time with records, a transaction or its progress in flight rather than polling the
    source, and random kills land inside those windows. Without it 10 kills hardly ever hit
    one: a mirror storing its exactly-once progress after the commit (not in the
    transaction), or its at-least-once progress before the target acknowledged, passed;
    with it both fail."""
    for api in ("Produce", "EndTxn"):
        target.inject_fault(api, 1_000_000, delay_ms=delay_ms)
    try:
        yield
    finally:
        target.clear_faults()


def kill_loop(mirror: Mirror, seed: int) -> list[float]:
    """SIGKILL the mirror KILLS times, 0.3-1.5 s after it (re)started, and start it again."""
    rng = random.Random(seed)
    gaps = []
    for _ in range(KILLS):
        gap = rng.uniform(0.3, 1.5)
        time.sleep(gap)
        gaps.append(gap)
        assert mirror.running, mirror.log_text(tail=40)
        mirror.kill()
        mirror.start()
    return gaps


@pytest.fixture
def brokers() -> Iterator[tuple[Broker, Broker]]:
    """Source and target; neither may log an error or a traceback meanwhile."""
    with Broker() as a, Broker() as b:
        yield a, b
        assert_clean_logs(a, b)


def assert_clean_logs(*brokers: Broker) -> None:
    for broker in brokers:
        problems = log_problems(broker.log_text(), [])
        assert not problems, "\n".join(problems[:5])


def stored_progress(bootstrap: str) -> dict[tuple[str, int], int]:
    """The last offset stored per source partition in mm2-offsets.a.internal."""
    topic = "mm2-offsets.a.internal"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    count = len(admin.list_topics(topic, timeout=TIMEOUT).topics[topic].partitions)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "mirror-crash-progress",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    stored: dict[tuple[str, int], int] = {}
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(count)])
        remaining = set(range(count))
        deadline = time.monotonic() + TIMEOUT
        while remaining:
            assert time.monotonic() < deadline
            for message in consumer.consume(1000, 0.5):
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        remaining.discard(message.partition())
                    continue
                decoded = decode_source_offset(message.key(), message.value())
                assert decoded is not None
                (cluster, name, partition), offset = decoded
                assert cluster == "a" and offset is not None
                stored[(name, partition)] = offset
    finally:
        consumer.close()
    return stored


# ------------------------------------------------------------------------------------ tests


def test_sigkill_at_least_once_loses_nothing(brokers: tuple[Broker, Broker]) -> None:
    a, b = brokers
    create_topics(a.bootstrap)
    producer = SourceProducer(a.bootstrap)
    producer.start()
    began = time.monotonic()
    with Mirror(properties(a, b)) as mirror:
        with slow_writes(b):
            gaps = kill_loop(mirror, seed=13)
        sent = producer.stop()
        source = source_records(a.bootstrap)
        target = wait_copied(source, b.bootstrap)
        assert mirror.stop() == 0
        assert_no_traceback(mirror)
    # Each restart goes back at most once per partition, to after its stored progress.
    duplicates = check_all_at_least_once(source, target, max_recopies=KILLS)
    print(
        f"at-least-once: {sent} records, {KILLS} kills ({sum(gaps):.1f} s between), "
        f"{duplicates} duplicates, {time.monotonic() - began:.1f} s"
    )


def test_sigkill_exactly_once_copies_each_record_once(brokers: tuple[Broker, Broker]) -> None:
    a, b = brokers
    create_topics(a.bootstrap)
    producer = SourceProducer(a.bootstrap)
    producer.start()
    began = time.monotonic()
    with Mirror(properties(a, b, exactly_once_support="enabled")) as mirror:
        with slow_writes(b):
            gaps = kill_loop(mirror, seed=31)
        sent = producer.stop()
        source = source_records(a.bootstrap)
        target = wait_copied(source, b.bootstrap, "read_committed")
        assert mirror.stop() == 0
        assert_no_traceback(mirror)
        # What the killed runs had written stays on the target, aborted; the offsets of
        # the transaction markers are past the last record (the copies were transactions).
        everything = sum(
            len(records)
            for topic in TOPICS
            for records in read_partitions(b.bootstrap, f"a.{topic}").values()
        )
        ends = sum(sum(end_offsets(b.bootstrap, f"a.{topic}")) for topic in TOPICS)
    for topic in TOPICS:
        for p in range(PARTITIONS):
            assert target[topic][p] == source[topic][p], f"a.{topic}[{p}]"
    assert ends > everything >= sent
    print(
        f"exactly-once: {sent} records, {KILLS} kills ({sum(gaps):.1f} s between), "
        f"0 duplicates read_committed ({everything - sent} aborted records on the target), "
        f"{time.monotonic() - began:.1f} s"
    )


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_source_and_target_restart_under_a_running_mirror(
    brokers: tuple[Broker, Broker], exactly_once: bool
) -> None:
    a, b = brokers
    create_topics(a.bootstrap)
    producer = SourceProducer(a.bootstrap)
    producer.start()
    began = time.monotonic()
    settings = {"exactly_once_support": "enabled"} if exactly_once else {}
    isolation = "read_committed" if exactly_once else "read_uncommitted"
    with Mirror(properties(a, b, **settings)) as mirror:
        for broker in (a, b):
            time.sleep(1.5)
            broker.restart()
            # The same mirror process copies again, what the producer wrote meanwhile.
            copied = sum(end_offsets(b.bootstrap, "a.orders"))
            wait_until_copied_beyond(b.bootstrap, copied + 100)
            assert mirror.running, mirror.log_text(tail=40)
        time.sleep(1)
        sent = producer.stop()
        source = source_records(a.bootstrap)
        target = wait_copied(source, b.bootstrap, isolation)
        assert mirror.stop() == 0
        assert_no_traceback(mirror)
    duplicates = check_all_at_least_once(source, target)
    if exactly_once:
        assert duplicates == 0
    print(
        f"broker restarts ({isolation}): {sent} records, {duplicates} duplicates, "
        f"{time.monotonic() - began:.1f} s"
    )


def wait_until_copied_beyond(bootstrap: str, offsets: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while sum(end_offsets(bootstrap, "a.orders")) < offsets:
        assert time.monotonic() < deadline, "the mirror did not go on copying"
        time.sleep(0.2)


def free_port() -> int:
    """A free port below the ephemeral range: nothing that binds port 0 or connects out
    (every other broker and client) takes it between now and the source's start."""
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(20_000, 32_000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port between 20000 and 32000")


def start_waiting(mirror: Mirror) -> int:
    """Start the mirror without waiting for its ready line; once it logs that it waits for
    cluster a, the log's offset where this run began."""
    offset = mirror.log_path.stat().st_size if mirror.log_path.exists() else 0
    began = time.monotonic()
    mirror.start(wait=False)
    while "waiting for cluster a" not in mirror.log_text(offset=offset):
        assert mirror.running, mirror.log_text()
        assert time.monotonic() < began + TIMEOUT, mirror.log_text()
        time.sleep(0.1)
    return offset


def test_mirror_waits_for_its_source_cluster() -> None:
    port = free_port()
    with Broker() as b:
        mirror = Mirror(properties(f"127.0.0.1:{port}", b))
        try:
            # SIGTERM while it waits: it stops at once.
            start_waiting(mirror)
            stopping = time.monotonic()
            assert mirror.stop() == 0
            stop_seconds = time.monotonic() - stopping
            assert stop_seconds < 5, stop_seconds
            offset = start_waiting(mirror)
            time.sleep(1)
            assert mirror.running and not READY_LINE.search(mirror.log_text(offset=offset))
            with Broker(config={"listeners": f"PLAINTEXT://127.0.0.1:{port}"}) as a:
                began = time.monotonic()
                create_topics(a.bootstrap, ("late",))
                producer = SourceProducer(a.bootstrap, ("late",))
                producer.start()
                time.sleep(1)
                sent = producer.stop()
                source = source_records(a.bootstrap, ("late",))
                target = wait_copied(source, b.bootstrap)
                waited = time.monotonic() - began
                assert READY_LINE.search(mirror.log_text(offset=offset))
                assert check_all_at_least_once(source, target) == 0
                assert mirror.stop() == 0
                assert_clean_logs(a, b)
            assert_no_traceback(mirror)
        finally:
            mirror.close()
    print(
        f"waiting mirror: stopped in {stop_seconds:.2f} s while waiting; {sent} records "
        f"copied {waited:.1f} s after the source started"
    )


def test_sigterm_under_load_stores_progress(brokers: tuple[Broker, Broker]) -> None:
    a, b = brokers
    create_topics(a.bootstrap)
    producer = SourceProducer(a.bootstrap)
    producer.start()
    with Mirror(properties(a, b)) as mirror:
        time.sleep(3)
        stopping = time.monotonic()
        assert mirror.stop() == 0
        stop_seconds = time.monotonic() - stopping
        assert stop_seconds < 5, stop_seconds
        # Everything it copied is stored as copied: the next run goes on from there.
        stored = stored_progress(b.bootstrap)
        for topic in TOPICS:
            ends = end_offsets(b.bootstrap, f"a.{topic}")
            assert [stored.get((topic, p), -1) + 1 for p in range(PARTITIONS)] == ends, topic
        copied_before = sum(stored.values()) + len(stored)
        mirror.start()
        time.sleep(1.5)
        sent = producer.stop()
        source = source_records(a.bootstrap)
        target = wait_copied(source, b.bootstrap)
        assert mirror.stop() == 0
        assert_no_traceback(mirror)
    assert check_all_at_least_once(source, target) == 0
    print(
        f"SIGTERM: stopped in {stop_seconds:.2f} s with {copied_before} records copied and "
        f"stored, {sent} in all, none copied twice"
    )


@pytest.mark.parametrize(
    ("exactly_once", "down"),
    [(False, "target"), (True, "target"), (False, "source")],
    ids=["at-least-once-target-down", "exactly-once-target-down", "at-least-once-source-down"],
)
def test_sigterm_while_a_cluster_is_down(exactly_once: bool, down: str) -> None:
    """A cluster that went away under load must not hold SIGTERM up: every wait on it is
    cut in slices that look for the stop (a Kubernetes pod has 30 s before its SIGKILL)."""
    with Broker() as a, Broker() as b:
        create_topics(a.bootstrap, ("orders",))
        producer = SourceProducer(a.bootstrap, ("orders",))
        producer.start()
        settings: dict[str, object] = {
            "sync.group.offsets.enabled": True,
            "sync.group.offsets.interval.seconds": 1,
        }
        if exactly_once:
            settings["exactly.once.support"] = "enabled"
        with Mirror(properties(a, b, **settings)) as mirror:
            time.sleep(2)
            (b if down == "target" else a).kill()
            time.sleep(3)  # the mirror's flushes, commits and admin calls now wait on it
            stopping = time.monotonic()
            assert mirror.stop() == 0
            stop_seconds = time.monotonic() - stopping
            assert_no_traceback(mirror)
        producer._halt.set()
        producer.join(TIMEOUT)
        # Its records for the dead broker: dropped, and the client closed, not left
        # reconnecting to it for the rest of the session.
        producer.producer.purge()
        producer.producer.flush(0)
        del producer
    assert stop_seconds < 15, stop_seconds
    print(f"SIGTERM with the {down} down: stopped in {stop_seconds:.1f} s")
