"""The log cleaner service (kwire.log.cleaner_manager).

The choice of the log to clean is pure: views of logs (segments with sizes and
timestamps) and a fake `now` in. The checkpoint file is read and written on tmp_path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest

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
from kwire.protocol.records import build_batch, validate_batches

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
