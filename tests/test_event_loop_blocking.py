"""Work that would block the broker's event loop runs in worker threads.

Kafka never fsyncs, deletes files or loads a coordinator partition on its network
threads. Each test runs such an operation at scale against a real broker while
another connection keeps sending ApiVersions: its worst round trip must stay far
below what the operation takes (when it ran on the event loop, every other
client waited for all of it). Then the operation's result is checked.

Figures on a loaded 2-core machine, worst ApiVersions round trip (old code -> now):
CreateTopics of 10,000 partitions 5,855-11,270 ms -> 130-220 ms; DeleteTopics of
them 1,268 ms -> 35-50 ms; a flush pass over 6,000 partitions 870 ms -> 5 ms; the
load of 240,000 offsets 2,151 ms -> 220 ms. In process, the longest event-loop
step of a retention pass over 10,000 segments: renames 807 -> 55 ms, unlinks
1,590 -> 24 ms.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import KafkaError as KafkaErrorCode
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from kwire.broker import Broker, KafkaError
from kwire.config import BrokerConfig
from kwire.protocol.records import build_batch, validate_batches

TIMEOUT = 120.0
# The worst round trip allowed while an operation runs: the old code stalled every
# client for the whole operation (seconds); a scheduler hiccup on a loaded machine
# stays well below this.
MAX_STALL_S = 0.5


class Prober:
    """ApiVersions round trips on their own connection, every 10 ms, in a thread:
    how long the broker kept another client waiting."""

    REQUEST = struct.pack(">hhih", 18, 0, 1, 5) + b"probe"

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[tuple[float, float]] = []  # (sent at, round trip), monotonic
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        frame = struct.pack(">i", len(self.REQUEST)) + self.REQUEST
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as s:
                while not self._stop.is_set():
                    sent = time.monotonic()
                    s.sendall(frame)
                    (size,) = struct.unpack(">i", _exactly(s, 4))
                    _exactly(s, size)
                    self.samples.append((sent, time.monotonic() - sent))
                    time.sleep(0.01)
        except BaseException as e:  # reported by __exit__
            self._error = e

    def worst(self, start: float, end: float) -> float:
        """The worst round trip overlapping [start, end]."""
        return max((rtt for sent, rtt in self.samples if sent <= end and sent + rtt >= start), default=0.0)

    @contextmanager
    def measure(self, what: str) -> Iterator[dict[str, float]]:
        """Time the block; the worst round trip meanwhile, once a probe after it answered."""
        figures: dict[str, float] = {}
        start = time.monotonic()
        yield figures
        end = time.monotonic()
        deadline = end + TIMEOUT
        while not any(sent > end for sent, _ in self.samples) and time.monotonic() < deadline:
            time.sleep(0.01)  # the round trip in flight at the end counts too
        figures["duration"] = end - start
        figures["worst"] = self.worst(start, end)
        print(f"{what}: {figures['duration'] * 1000:.0f} ms, worst ApiVersions round trip {figures['worst'] * 1000:.0f} ms")


def _exactly(s: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return bytes(data)


def _wait_until(condition, timeout: float = TIMEOUT, what: str = "condition") -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _partition_dirs(data_dir: Path, topic: str) -> list[Path]:
    return [p for p in data_dir.iterdir() if p.name.startswith(f"{topic}-")]


def test_create_and_delete_10000_partitions_keep_other_clients_answered(broker) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    with Prober(broker.port) as prober:
        with prober.measure("CreateTopics of 10,000 partitions") as created:
            admin.create_topics([NewTopic("big", 10_000, 1)], request_timeout=TIMEOUT, operation_timeout=TIMEOUT)[
                "big"
            ].result(TIMEOUT)
        assert created["worst"] < MAX_STALL_S, created
        # Created and usable: every folder there, the last partitions take records.
        assert len(_partition_dirs(broker.data_dir, "big")) == 10_000
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        delivered: list[tuple[int, int]] = []
        for partition in (0, 5_000, 9_999):
            producer.produce(
                "big", b"v", partition=partition, on_delivery=lambda err, msg: delivered.append((msg.partition(), msg.offset()))
            )
        assert producer.flush(TIMEOUT) == 0
        assert sorted(delivered) == [(0, 0), (5_000, 0), (9_999, 0)]

        with prober.measure("DeleteTopics of 10,000 partitions") as deleted:
            admin.delete_topics(["big"], request_timeout=TIMEOUT, operation_timeout=TIMEOUT)["big"].result(TIMEOUT)
        assert deleted["worst"] < MAX_STALL_S, deleted
    # The folders were renamed away before the answer; removed soon after.
    assert _partition_dirs(broker.data_dir, "big") == [] or all(
        p.name.endswith("-delete") for p in _partition_dirs(broker.data_dir, "big")
    )
    _wait_until(lambda: not _partition_dirs(broker.data_dir, "big"), what="the deleted folders to go")
    # The name is free at once: a new topic of the same name starts empty.
    admin.create_topics([NewTopic("big", 1, 1)], request_timeout=TIMEOUT)["big"].result(TIMEOUT)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g", "enable.auto.commit": False})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition("big", 0), timeout=TIMEOUT)
    finally:
        consumer.close()
    assert (low, high) == (0, 0)


def test_flush_pass_over_many_partitions_keeps_other_clients_answered(broker_factory) -> None:
    # Time-based flushes: the broker's flush pass runs every 200 ms; flush.ms is turned on
    # once every partition holds data, so one pass flushes them all at once.
    broker = broker_factory({"log.flush.scheduler.interval.ms": "200"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    partitions = 6_000
    admin.create_topics([NewTopic("f", partitions, 1)], request_timeout=TIMEOUT)["f"].result(TIMEOUT)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50})
    for partition in range(partitions):
        producer.produce("f", b"x" * 100, partition=partition)
    assert producer.flush(TIMEOUT) == 0
    with Prober(broker.port) as prober:
        time.sleep(1)  # the probe's own baseline
        with prober.measure(f"flush pass over {partitions:,} partitions") as flushed:
            flush_ms = ConfigEntry("flush.ms", "1000", incremental_operation=AlterConfigOpType.SET)
            admin.incremental_alter_configs([ConfigResource("topic", "f", incremental_configs=[flush_ms])])[
                ConfigResource("topic", "f")
            ].result(TIMEOUT)
            # The pass flushes every partition once flush.ms passed since it was opened:
            # at once. Measured over a few passes.
            time.sleep(6)
        assert flushed["worst"] < MAX_STALL_S, flushed


def test_coordinator_load_of_a_large_offsets_partition_keeps_other_clients_answered(broker_factory) -> None:
    # One __consumer_offsets partition; commits of 4,000 partitions each: 60 groups make
    # 240,000 offset records in large batches, all decoded at the next start.
    broker = broker_factory({"offsets.topic.num.partitions": "1"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    partitions = 4_000
    groups = [f"group-{i}" for i in range(60)]
    admin.create_topics([NewTopic("t", partitions, 1)], request_timeout=TIMEOUT)["t"].result(TIMEOUT)
    for i, group in enumerate(groups):
        offsets = [TopicPartition("t", p, i + 1) for p in range(partitions)]
        admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, offsets)], request_timeout=TIMEOUT)[
            group
        ].result(TIMEOUT)
    broker.stop()
    broker.start()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    with Prober(broker.port) as prober:
        with prober.measure("__consumer_offsets load of 240,000 offsets") as loaded:
            last = groups[-1]
            deadline = time.monotonic() + TIMEOUT
            while True:
                try:
                    result = admin.list_consumer_group_offsets(
                        [ConsumerGroupTopicPartitions(last, [TopicPartition("t", p) for p in (0, partitions - 1)])],
                        request_timeout=TIMEOUT,
                    )[last].result(TIMEOUT)
                    break
                except KafkaException as e:
                    # Answered COORDINATOR_LOAD_IN_PROGRESS until loaded.
                    if e.args[0].code() != KafkaErrorCode.COORDINATOR_LOAD_IN_PROGRESS or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        assert loaded["worst"] < MAX_STALL_S, loaded
    assert [(tp.partition, tp.offset) for tp in result.topic_partitions] == [(0, 60), (partitions - 1, 60)]
    first = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(groups[0], [TopicPartition("t", 1234)])], request_timeout=TIMEOUT
    )[groups[0]].result(TIMEOUT)
    assert [(tp.partition, tp.offset) for tp in first.topic_partitions] == [(1234, 1)]


# ---- in process: what the passes leave behind ------------------------------------------


class _LongestStep(trio.abc.Instrument):
    """The longest run of a task between two checkpoints: how long the loop was held."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._started = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._started = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.longest = max(self.longest, time.perf_counter() - self._started)


def _broker(path: Path, **overrides: str) -> Broker:
    broker = Broker(BrokerConfig({"log.dirs": str(path), **overrides}))
    broker.open()
    return broker


def _append(broker: Broker, topic: str, partition: int, count: int, size: int = 100) -> None:
    p = broker.partition(topic, partition)
    assert p is not None
    for _ in range(count):
        batch = bytearray(build_batch([(None, b"x" * size)], timestamp_ms=int(time.time() * 1000)))
        p.append(batch, validate_batches(batch), int(time.time() * 1000))


def test_flush_pass_moves_the_recovery_points_from_a_worker_thread(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    broker.create_topic("f", 50)
    for index in range(50):
        _append(broker, "f", index, 3)
    logs = [p.log for p in broker.all_partitions()]
    assert all(log.recovery_point == 0 for log in logs)
    for log in logs:
        log.config.flush_ms = 0  # all due

    instrument = _LongestStep()
    trio.run(broker.flush_pass, instruments=[instrument])
    assert all(log.recovery_point == log.log_end_offset == 3 for log in logs)
    # Nothing more is due: the next pass prepares no job.
    assert all(log.flush_job(int(time.time() * 1000)) is None for log in logs)
    broker.close()


def test_retention_pass_unlinks_in_a_thread_and_gives_the_loop_back(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    topics = 100
    for t in range(topics):
        broker.create_topic(
            f"r{t}", 1, configs={"segment.bytes": "1024", "retention.ms": "1", "file.delete.delay.ms": "1"}
        )
        _append(broker, f"r{t}", 0, 100, size=900)  # 100 segments each
    partitions = list(broker.all_partitions())
    files_before = sum(len(list(p.log.directory.glob("*.log"))) for p in partitions)
    assert files_before >= topics * 99

    instrument = _LongestStep()

    async def passes() -> int:
        time.sleep(0.01)  # past retention.ms
        deleted = await broker.retention_pass()  # renamed `.deleted`
        time.sleep(0.01)  # past file.delete.delay.ms
        await broker.retention_pass()  # unlinked
        return deleted

    assert trio.run(passes, instruments=[instrument]) == topics * 100
    for p in partitions:
        names = sorted(f.name for f in p.log.directory.iterdir())
        assert not [n for n in names if n.endswith(".deleted")], names
        assert len(p.log.segments) == 1
        assert p.log.log_start_offset == p.log.log_end_offset == 100
    # The pass gives the loop back between partitions, and unlinks in a thread.
    print(f"retention of {files_before:,} segments: longest loop step {instrument.longest * 1000:.0f} ms")
    assert instrument.longest < MAX_STALL_S
    broker.close()


def test_delete_topic_async_frees_the_name_at_once_and_removes_the_folders(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    broker.create_topic("d", 20)
    _append(broker, "d", 3, 10)

    async def main() -> None:
        await broker.delete_topic_async("d")
        # Renamed away already: a new topic of the same name starts empty, in its own folders.
        topic = await broker.create_topic_async("d", 4)
        assert topic is not None and topic.partitions[3].log.log_end_offset == 0
        with pytest.raises(KafkaError, match="already exists"):
            broker.create_topic("d", 1)
        # The old folders go in a worker thread.
        with trio.fail_after(30):
            while broker.deleted_partition_dirs():
                await trio.sleep(0.01)

    trio.run(main)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("d-"))
    assert names == ["d-0", "d-1", "d-2", "d-3"]
    broker.close()


def test_a_name_being_created_is_taken(tmp_path: Path) -> None:
    broker = _broker(tmp_path)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(broker.create_topic_async, "a.b", 2_000)
            await trio.sleep(0.05)  # the worker thread is opening the partitions
            assert "a.b" not in broker.topics
            with pytest.raises(KafkaError, match="already exists"):
                await broker.create_topic_async("a.b", 1)
            with pytest.raises(KafkaError, match="already exists"):
                broker.create_topic("a.b", 1)
            with pytest.raises(KafkaError, match="collides"):
                await broker.create_topic_async("a_b", 1)
        assert len(broker.topics["a.b"].partitions) == 2_000

    trio.run(main)
    broker.close()
