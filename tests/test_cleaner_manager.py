"""The log cleaner service (kwire.log.cleaner_manager).

The choice of the log to clean is pure: views of logs (segments with sizes and
timestamps) and a fake `now` in. The checkpoint file is read and written on tmp_path.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import trio
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import BrokerProcess

from kwire.broker import Broker
from kwire.clock import now_ms
from kwire.config import BrokerConfig
from kwire.log.cleaner_manager import (
    CHECKPOINT_FILE,
    LogCleaner,
    LogView,
    choose_log,
    cleanable_offsets,
    log_to_clean,
    read_checkpoint,
    write_checkpoint,
)
from kwire.log.log import LogConfig
from kwire.protocol.records import build_batch, iter_records, validate_batches

NOW = 1_700_000_000_000
HOUR = 3_600_000


@dataclass
class FakeSegment:
    base_offset: int
    size: int
    largest_timestamp: int = NOW - 10 * HOUR
    rolling_timestamp: int = NOW - 10 * HOUR


def compacted(**overrides: object) -> LogConfig:
    config = LogConfig(cleanup_policy="compact")
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


def view(
    bases_sizes: list[tuple[int, int]],
    log_end_offset: int,
    *,
    topic: str = "t",
    partition: int = 0,
    config: LogConfig | None = None,
    last_stable_offset: int | None = None,
    high_watermark: int | None = None,
    log_start_offset: int | None = None,
    segments: list[FakeSegment] | None = None,
) -> LogView:
    segs = segments if segments is not None else [FakeSegment(b, s) for b, s in bases_sizes]
    hw = log_end_offset if high_watermark is None else high_watermark
    return LogView(
        topic=topic,
        partition=partition,
        segments=segs,
        log_start_offset=segs[0].base_offset if log_start_offset is None else log_start_offset,
        log_end_offset=log_end_offset,
        last_stable_offset=hw if last_stable_offset is None else last_stable_offset,
        high_watermark=hw,
        config=config or compacted(),
    )


# Four closed segments of 1000 bytes (100 offsets each) and an active one.
FOUR = [(0, 1000), (100, 1000), (200, 1000), (300, 1000), (400, 500)]


def test_never_cleaned_log_is_all_dirty_up_to_the_active_segment() -> None:
    v = view(FOUR, 450)
    assert cleanable_offsets(v, None, NOW) == (0, 400, False)
    ltc = log_to_clean(v, None, NOW)
    assert (ltc.clean_bytes, ltc.cleanable_bytes, ltc.cleanable_ratio) == (0, 4000, 1.0)
    assert not ltc.must_clean


def test_dirty_ratio_from_the_checkpoint() -> None:
    v = view(FOUR, 450)
    ltc = log_to_clean(v, 300, NOW)
    assert (ltc.first_dirty_offset, ltc.first_uncleanable_offset) == (300, 400)
    assert (ltc.clean_bytes, ltc.cleanable_bytes) == (3000, 1000)
    assert ltc.cleanable_ratio == pytest.approx(0.25)
    # Below min.cleanable.dirty.ratio (0.5 by default): not chosen; at 0.25: chosen.
    assert choose_log([v], {("t", 0): 300}, NOW) is None
    v.config = compacted(min_cleanable_dirty_ratio=0.25)
    chosen = choose_log([v], {("t", 0): 300}, NOW)
    assert chosen is not None and chosen.first_dirty_offset == 300


def test_nothing_dirty_is_never_chosen_even_at_ratio_zero() -> None:
    v = view(FOUR, 450, config=compacted(min_cleanable_dirty_ratio=0.0))
    assert choose_log([v], {("t", 0): 400}, NOW) is None
    # A log that is only an active segment has nothing cleanable either.
    assert choose_log([view([(0, 5000)], 80, config=v.config)], {}, NOW) is None


def test_the_dirtiest_log_is_chosen_and_excluded_ones_are_skipped() -> None:
    config = compacted(min_cleanable_dirty_ratio=0.1)
    a = view(FOUR, 450, topic="a", config=config)  # checkpoint 300: ratio 0.25
    b = view(FOUR, 450, topic="b", config=config)  # checkpoint 100: ratio 0.75
    c = view(FOUR, 450, topic="c", config=replace(config, cleanup_policy="delete"))  # not compacted
    checkpoints = {("a", 0): 300, ("b", 0): 100}
    assert choose_log([a, b, c], checkpoints, NOW).topic == "b"
    # A log being cleaned (or uncleanable) is not picked twice.
    assert choose_log([a, b, c], checkpoints, NOW, exclude=[("b", 0)]).topic == "a"
    assert choose_log([a, b, c], checkpoints, NOW, exclude=[("a", 0), ("b", 0)]) is None


def test_compact_delete_logs_are_cleaned_too() -> None:
    v = view(FOUR, 450, config=compacted(cleanup_policy="compact,delete"))
    assert choose_log([v], {}, NOW) is not None


def test_checkpoint_outside_the_log_resets_to_the_log_start() -> None:
    # Retention moved the log start past the checkpoint.
    v = view(FOUR[1:], 450)
    assert cleanable_offsets(v, 50, NOW) == (100, 400, True)
    # A truncation left the log end below it.
    v = view(FOUR, 450)
    assert cleanable_offsets(v, 600, NOW) == (0, 400, True)
    # At the log end is valid (nothing new written since).
    assert cleanable_offsets(v, 450, NOW)[0:3:2] == (450, False)


def test_last_stable_offset_and_high_watermark_bound_the_cleanable_section() -> None:
    # An open transaction from offset 250: nothing from its segment on is cleanable.
    v = view(FOUR, 450, last_stable_offset=250)
    ltc = log_to_clean(v, 0, NOW)
    assert ltc.first_uncleanable_offset == 250
    assert ltc.cleanable_bytes == 3000  # segments 0, 100 and 200 (which holds 250)
    # The high watermark (a follower behind, or acks=all pending) bounds it as well.
    v = view(FOUR, 450, high_watermark=120, last_stable_offset=120)
    assert cleanable_offsets(v, 0, NOW)[1] == 120
    # Nothing committed beyond the checkpoint: nothing to clean.
    v = view(FOUR, 450, high_watermark=100, last_stable_offset=100, config=compacted(min_cleanable_dirty_ratio=0.0))
    assert choose_log([v], {("t", 0): 100}, NOW) is None


def test_the_recovery_point_bounds_it_too() -> None:
    v = view(FOUR, 450)
    v.recovery_point = 300
    assert cleanable_offsets(v, 0, NOW)[1] == 300


def test_min_compaction_lag_keeps_recent_segments_dirty() -> None:
    segments = [
        FakeSegment(0, 1000, largest_timestamp=NOW - 5 * HOUR),
        FakeSegment(100, 1000, largest_timestamp=NOW - 3 * HOUR),
        FakeSegment(200, 1000, largest_timestamp=NOW - 30 * 60_000),
        FakeSegment(300, 1000, largest_timestamp=NOW - 10 * HOUR),  # clock skew: older again
        FakeSegment(400, 500, largest_timestamp=NOW),
    ]
    v = view([], 450, segments=segments, config=compacted(min_compaction_lag_ms=HOUR))
    # The first segment with records younger than an hour stops the cleanable section.
    assert cleanable_offsets(v, None, NOW) == (0, 200, False)
    assert log_to_clean(v, None, NOW).cleanable_bytes == 2000
    v.config = compacted(min_compaction_lag_ms=4 * HOUR)
    assert cleanable_offsets(v, None, NOW)[1] == 100
    v.config = compacted(min_compaction_lag_ms=6 * HOUR)
    assert cleanable_offsets(v, None, NOW)[1] == 0
    assert choose_log([v], {}, NOW) is None
    # Later, the same segments are old enough.
    assert cleanable_offsets(v, None, NOW + 6 * HOUR)[1] == 400


def test_max_compaction_lag_forces_a_clean_below_the_ratio() -> None:
    segments = [
        FakeSegment(0, 1000),
        FakeSegment(100, 1000),
        FakeSegment(200, 1000),
        FakeSegment(300, 100, rolling_timestamp=NOW - 2 * HOUR),
        FakeSegment(400, 500),
    ]
    config = compacted(min_cleanable_dirty_ratio=0.9, max_compaction_lag_ms=HOUR)
    dirty = view([], 450, topic="due", segments=segments, config=config)
    ltc = log_to_clean(dirty, 300, NOW)
    assert ltc.cleanable_ratio == pytest.approx(100 / 3100)
    assert ltc.must_clean and ltc.max_compaction_delay_ms == HOUR
    # A dirtier log that is not due comes after the one that must be cleaned.
    dirtier = view(FOUR, 450, topic="dirtier", config=compacted(min_cleanable_dirty_ratio=0.1))
    assert choose_log([dirtier, dirty], {("due", 0): 300}, NOW).topic == "due"
    # Before the deadline it is not due, and the ratio keeps it out.
    assert not log_to_clean(dirty, 300, NOW - HOUR - 1).must_clean
    assert choose_log([dirty], {("due", 0): 300}, NOW - HOUR - 1) is None
    # Segments without timestamps (-1) never force it.
    for s in segments:
        s.rolling_timestamp = -1
    assert not log_to_clean(dirty, 300, NOW).must_clean


def test_max_compaction_lag_never_forces_with_nothing_dirty() -> None:
    config = compacted(min_cleanable_dirty_ratio=0.9, max_compaction_lag_ms=1)
    v = view(FOUR, 450, config=config)
    assert choose_log([v], {("t", 0): 400}, NOW) is None


# ---- the checkpoint file ---------------------------------------------------------------


def test_checkpoint_round_trip_in_kafkas_format(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    offsets = {("orders", 0): 1234, ("__consumer_offsets", 17): 99, ("a-b.c", 3): 0}
    write_checkpoint(path, offsets)
    lines = path.read_text().splitlines()
    assert lines[:2] == ["0", "3"]
    assert sorted(lines[2:]) == sorted(["orders 0 1234", "__consumer_offsets 17 99", "a-b.c 3 0"])
    assert read_checkpoint(path) == offsets
    assert not (tmp_path / (CHECKPOINT_FILE + ".tmp")).exists()
    write_checkpoint(path, {})
    assert read_checkpoint(path) == {}


def test_missing_checkpoint_means_clean_from_the_start(tmp_path: Path) -> None:
    assert read_checkpoint(tmp_path / CHECKPOINT_FILE) == {}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1\n1\nt 0 5\n",  # unknown version
        "0\n2\nt 0 5\n",  # fewer entries than announced
        "0\n1\nt 0\n",  # an entry short of its offset
        "0\n1\nt x 5\n",  # not a number
        "0\nmany\n",
        "\xff\xfe garbage",
    ],
)
def test_garbled_checkpoint_is_ignored_with_a_warning(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / CHECKPOINT_FILE
    path.write_bytes(text.encode("latin-1"))
    with caplog.at_level("WARNING", logger="kwire.log.cleaner_manager"):
        assert read_checkpoint(path) == {}
    assert any("cleaning every log from its start" in r.getMessage() for r in caplog.records)


# ---- the service's bookkeeping, on a real in-process broker (no cleaning yet) ----------


def _open_broker(path: Path) -> Broker:
    broker = Broker(BrokerConfig({"log.dirs": str(path)}))
    broker.open()
    return broker


def _produce(broker: Broker, topic: str, index: int, count: int) -> None:
    partition = broker.partition(topic, index)
    assert partition is not None
    for i in range(count):
        buf = bytearray(build_batch([(f"k{i % 5}".encode(), b"v" * 200)], base_offset=0))
        partition.append(buf, validate_batches(buf), now_ms())


async def test_checkpoint_drops_deleted_partitions(tmp_path: Path) -> None:
    broker = _open_broker(tmp_path)
    try:
        broker.create_topic("kept", 2, configs={"cleanup.policy": "compact"})
        broker.create_topic("gone", 1, configs={"cleanup.policy": "compact"})
        path = tmp_path / CHECKPOINT_FILE
        write_checkpoint(path, {("kept", 0): 10, ("kept", 1): 20, ("gone", 0): 30, ("older", 0): 40})
        cleaner = LogCleaner(tmp_path, broker.all_partitions)
        assert cleaner.checkpoints[("gone", 0)] == 30
        broker.delete_topic("gone")
        await cleaner.write_checkpoint()
        assert read_checkpoint(path) == {("kept", 0): 10, ("kept", 1): 20}
    finally:
        broker.close()


async def test_grab_marks_the_log_in_progress_and_resets_a_bad_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = _open_broker(tmp_path)
    try:
        configs = {"cleanup.policy": "compact", "segment.bytes": "1024"}
        broker.create_topic("dirty", 1, configs=configs)
        broker.create_topic("plain", 1, configs={"segment.bytes": "1024"})
        _produce(broker, "dirty", 0, 40)
        _produce(broker, "plain", 0, 40)
        # A checkpoint past the log end (as after a truncation): reset, with a warning.
        write_checkpoint(tmp_path / CHECKPOINT_FILE, {("dirty", 0): 10_000})
        cleaner = LogCleaner(tmp_path, broker.all_partitions)
        log = broker.partition("dirty", 0).log
        assert len(log.segments) > 2
        log.flush()  # the rolled segments' flushes run in threads; the cleaner waits for them
        with caplog.at_level("WARNING", logger="kwire.log.cleaner_manager"):
            grabbed = cleaner.grab_filthiest_log(now_ms())
        assert grabbed is not None
        partition, chosen = grabbed
        assert partition is broker.partition("dirty", 0)
        assert chosen.first_dirty_offset == 0 and chosen.checkpoint_reset
        assert chosen.first_uncleanable_offset == min(log.segments[-1].base_offset, log.recovery_point)
        assert any("resetting the first dirty offset of dirty-0" in r.getMessage() for r in caplog.records)
        assert cleaner.checkpoints[("dirty", 0)] == 0
        # Being cleaned: not chosen again; the delete-only topic never is.
        assert ("dirty", 0) in cleaner.in_progress
        assert cleaner.grab_filthiest_log(now_ms()) is None
    finally:
        broker.close()


def test_the_cleaner_is_off_when_disabled(tmp_path: Path) -> None:
    def config(**overrides: str) -> BrokerConfig:
        return BrokerConfig({"log.dirs": str(tmp_path), **overrides})

    assert LogCleaner.from_config(config(**{"log.cleaner.enable": "false"}), tmp_path, list) is None
    assert LogCleaner.from_config(config(**{"log.cleaner.threads": "0"}), tmp_path, list) is None
    cleaner = LogCleaner.from_config(
        config(**{"log.cleaner.threads": "3", "log.cleaner.backoff.ms": "250"}), tmp_path, list
    )
    assert cleaner is not None and (cleaner.threads, cleaner.backoff_ms) == (3, 250)


# ---- the service cleaning, on a real in-process broker ----------------------------------


def _produce_values(broker: Broker, topic: str, count: int, *, keys: int, size: int = 200) -> dict[bytes, bytes]:
    """One record a batch, key i % keys; the latest value of each key."""
    partition = broker.partition(topic, 0)
    assert partition is not None
    latest: dict[bytes, bytes] = {}
    for i in range(count):
        key, value = f"k{i % keys}".encode(), f"{i:08d}".encode() + b"v" * size
        buf = bytearray(build_batch([(key, value)], base_offset=0))
        partition.append(buf, validate_batches(buf), now_ms())
        latest[key] = value
    return latest


def _records_on_disk(directory: Path) -> list[tuple[int, bytes | None, bytes | None]]:
    """(offset, key, value) of every record in the segment files, in offset order."""
    out = []
    for path in sorted(directory.glob("*.log")):
        data = path.read_bytes()
        position = 0
        while position + 12 <= len(data):
            length = int.from_bytes(data[position + 8 : position + 12], "big")
            for record in iter_records(data[position : position + 12 + length]):
                out.append((record.offset, record.key, record.value))
            position += 12 + length
    return out


async def test_clean_now_compacts_and_checkpoints(tmp_path: Path) -> None:
    broker = _open_broker(tmp_path)
    try:
        broker.create_topic("table", 1, configs={"cleanup.policy": "compact", "segment.bytes": "2048"})
        latest = _produce_values(broker, "table", 200, keys=7)
        log = broker.partition("table", 0).log
        log.flush()
        before = log.size_bytes
        cleaner = LogCleaner(tmp_path, broker.all_partitions)
        passes = await cleaner.clean_now(timeout_s=30)
        assert passes >= 1 and cleaner.totals.passes == passes
        totals = cleaner.totals
        assert totals.records_read > totals.records_kept > 0
        assert totals.bytes_read > totals.bytes_written > 0
        last = cleaner.last_pass[("table", 0)]
        assert last.installed and last.end_offset == log.segments[-1].base_offset
        assert read_checkpoint(tmp_path / CHECKPOINT_FILE) == {("table", 0): last.end_offset}
        assert log.size_bytes < before / 3
        records = _records_on_disk(log.directory)
        offsets = [offset for offset, _, _ in records]
        assert offsets == sorted(set(offsets)) and offsets[-1] == 199
        # Below the active segment, one record per key; the latest values win.
        cleaned_keys = [key for offset, key, _ in records if offset < last.end_offset]
        assert len(cleaned_keys) == len(set(cleaned_keys)) <= 7
        assert {key: value for _, key, value in records} == latest
        # Nothing dirty is left: another "compact now" has nothing to do.
        assert await cleaner.clean_now(timeout_s=30) == 0
    finally:
        broker.close()


async def test_a_log_that_fails_is_skipped_until_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = _open_broker(tmp_path)
    try:
        for topic in ("good", "bad"):
            broker.create_topic(topic, 1, configs={"cleanup.policy": "compact", "segment.bytes": "2048"})
            _produce_values(broker, topic, 60, keys=3)
            broker.partition(topic, 0).log.flush()
        # A record of a closed segment damaged on disk: its batch fails the CRC check.
        first = broker.partition("bad", 0).log.segments[0]
        path = broker.partition("bad", 0).log.directory / f"{first.base_offset:020d}.log"
        data = bytearray(path.read_bytes())
        data[100] ^= 0xFF
        path.write_bytes(bytes(data))
        cleaner = LogCleaner(tmp_path, broker.all_partitions)
        with caplog.at_level("INFO", logger="kwire.log.cleaner_manager"):
            await cleaner.clean_now(timeout_s=30)
        assert cleaner.uncleanable == {("bad", 0)}
        assert cleaner.totals.failures == 1
        assert cleaner.last_pass[("good", 0)].installed and ("bad", 0) not in cleaner.last_pass
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "bad-0" in errors[0].getMessage()
        assert read_checkpoint(tmp_path / CHECKPOINT_FILE).keys() == {("good", 0)}
        # Not tried again by this cleaner; the damaged segment is left as it was.
        _produce_values(broker, "bad", 30, keys=3)
        assert await cleaner.clean_now(timeout_s=30) == 0
        assert cleaner.totals.failures == 1
        assert path.read_bytes() == bytes(data)
    finally:
        broker.close()


async def test_shutdown_stops_a_pass_in_flight(tmp_path: Path) -> None:
    broker = _open_broker(tmp_path)
    try:
        broker.create_topic("big", 1, configs={"cleanup.policy": "compact", "segment.bytes": str(1 << 20)})
        partition = broker.partition("big", 0)
        # 24 MB in batches of 100 records.
        for i in range(2400):
            records = [(f"k{(i * 100 + j) % 5000}".encode(), b"x" * 100) for j in range(100)]
            buf = bytearray(build_batch(records, base_offset=0))
            partition.append(buf, validate_batches(buf), now_ms())
        log = partition.log
        log.flush()
        segments_before = [(s.base_offset, s.size) for s in log.segments]
        cleaner = LogCleaner(tmp_path, broker.all_partitions, backoff_ms=60_000)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(cleaner.run)
                while not cleaner.in_progress:
                    await trio.sleep(0.001)
                started = time.monotonic()
                nursery.cancel_scope.cancel()
        stopped_in = time.monotonic() - started
        assert cleaner.totals.passes == 0 and not cleaner.in_progress
        assert [(s.base_offset, s.size) for s in log.segments] == segments_before
        leftovers = [p.name for p in log.directory.iterdir() if p.suffix in (".cleaned", ".swap")]
        assert leftovers == []
        # What was left undone is done by the next cleaner; the whole pass took far
        # longer than the stop did (the pass was aborted, not waited for).
        after = LogCleaner(tmp_path, broker.all_partitions)
        assert await after.clean_now(timeout_s=120) == 1
        assert stopped_in < after.totals.seconds / 2, (stopped_in, after.totals.seconds)
    finally:
        broker.close()


# ---- end to end: a real broker process compacts ------------------------------------------


def _log_bytes(directory: Path) -> int:
    """Bytes of the live segments (`.deleted` ones wait for file.delete.delay.ms). A
    segment renamed by a swap between the listing and its stat counts nothing."""
    total = 0
    for path in directory.glob("*.log"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return total


def _wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.1)


def _read_all(bootstrap: str, topic: str) -> list[tuple[int, bytes, bytes | None]]:
    """(offset, key, value) of every record from offset 0 to the high watermark."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        out: list[tuple[int, bytes, bytes | None]] = []
        deadline = time.monotonic() + 30
        while (not out or out[-1][0] < high - 1) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            out.append((message.offset(), message.key(), message.value()))
        assert out and out[-1][0] == high - 1, f"read up to {out[-1][0] if out else None}, high watermark {high}"
        return out
    finally:
        consumer.close()


def _cleaned_lines(broker: BrokerProcess, name: str) -> int:
    return len(re.findall(rf"cleaned {re.escape(name)}: offsets", broker.log_path.read_text(errors="replace")))


def test_a_running_broker_compacts_and_resumes_from_its_checkpoint(broker_factory: Any) -> None:
    broker = broker_factory({"log.cleaner.backoff.ms": "100"})
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    configs = {"cleanup.policy": "compact", "segment.bytes": "16384", "min.cleanable.dirty.ratio": "0.01"}
    admin.create_topics([NewTopic("changelog", 1, 1, config=configs)], operation_timeout=10)["changelog"].result(10)
    # Small batches: a segment rolls only between batches.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "batch.size": 4096})
    latest: dict[bytes, bytes] = {}
    for i in range(10_000):
        key, value = f"key-{i % 50}".encode(), f"value-{i:06d}-".encode() + b"x" * 100
        producer.produce("changelog", key=key, value=value)
        latest[key] = value
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    directory = broker.data_dir / "changelog-0"
    written = 10_000 * 120
    # Only the live segments: 50 keys after cleaning, plus the active segment.
    _wait_until(lambda: _log_bytes(directory) < written // 10, 30, "the log shrank to a tenth")
    records = _read_all(broker.bootstrap, "changelog")
    offsets = [r[0] for r in records]
    assert offsets == sorted(set(offsets))
    assert len(records) < 2_000
    seen: dict[bytes, bytes] = {}
    for _, key, value in records:
        seen[key] = value
    assert seen == latest
    checkpoint = read_checkpoint(broker.data_dir / CHECKPOINT_FILE)
    assert checkpoint.get(("changelog", 0), 0) > 9_000

    # Restarted, the cleaner starts from its checkpoint: nothing is dirty, nothing cleaned.
    passes = _cleaned_lines(broker, "changelog-0")
    assert passes >= 1
    broker.restart()
    time.sleep(1.5)  # 15 backoffs
    assert _cleaned_lines(broker, "changelog-0") == passes
    assert _read_all(broker.bootstrap, "changelog") == records
    # New updates: the next pass begins at the checkpoint, not at the log start.
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(3_000):
        key, value = f"key-{i % 50}".encode(), f"again-{i:06d}-".encode() + b"y" * 100
        producer.produce("changelog", key=key, value=value)
        latest[key] = value
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    _wait_until(lambda: _cleaned_lines(broker, "changelog-0") > passes, 30, "a pass after the restart")
    first_after = re.findall(r"cleaned changelog-0: offsets (\d+) to", broker.log_path.read_text(errors="replace"))
    assert int(first_after[passes]) == checkpoint[("changelog", 0)]
    seen = {key: value for _, key, value in _read_all(broker.bootstrap, "changelog")}
    assert seen == latest


def test_consumer_offsets_stay_bounded_under_many_commits(broker_factory: Any) -> None:
    broker = broker_factory({
        "log.cleaner.backoff.ms": "100",
        "offsets.topic.num.partitions": "1",
        "offsets.topic.segment.bytes": "65536",
    })
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("events", 1, 1)], operation_timeout=10)["events"].result(10)
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "committer", "enable.auto.commit": False})
    directory = broker.data_dir / "__consumer_offsets-0"
    largest = 0
    commits = 20_000
    try:
        for i in range(1, commits + 1):
            consumer.commit(offsets=[TopicPartition("events", 0, i)], asynchronous=False)
            if i % 500 == 0:
                largest = max(largest, _log_bytes(directory))
    finally:
        consumer.close()
    # Uncleaned, 20,000 commits take some 2 MB; the cleaner keeps a few segments.
    assert _cleaned_lines(broker, "__consumer_offsets-0") >= 5
    assert largest < 1_000_000, largest
    broker.restart()
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "committer", "enable.auto.commit": False})
    try:
        committed = consumer.committed([TopicPartition("events", 0)], timeout=10)
    finally:
        consumer.close()
    assert committed[0].offset == commits
