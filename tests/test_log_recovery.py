"""PartitionLog recovery: torn and corrupt segments, recovery point, lost indexes,
leftover files, and the LogManager's clean-shutdown marker."""

from __future__ import annotations

import logging
import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kwire.log import FlushJob, LogConfig, LogManager, PartitionLog
from kwire.log.checkpoint import LogState
from kwire.log.manager import CLEAN_SHUTDOWN_FILE, LogDirLockedError
from kwire.log.segment import CorruptRecordError, LogSegment, Truncation
from kwire.protocol.records import BatchHeader, build_batch, parse_batch_header, validate_batches

# More examples: KWIRE_LOG_EXAMPLES=1000 pytest tests/test_log*.py
EXAMPLES = int(os.environ.get("KWIRE_LOG_EXAMPLES", "60"))

# ---- helpers ---------------------------------------------------------------------


def batch(n: int = 1, *, ts: int = 1_000, size: int = 10) -> bytearray:
    return bytearray(build_batch([(b"k", bytes([66]) * size, (), ts + i) for i in range(n)]))


def append(log: PartitionLog, data: bytearray) -> int:
    return log.append(data, validate_batches(data), now_ms=0)


def headers_of(data: bytes) -> list[BatchHeader]:
    out, position = [], 0
    while position < len(data):
        out.append(parse_batch_header(data, position))
        position += out[-1].size
    return out


def read_all(log: PartitionLog) -> list[bytes]:
    log.high_watermark = log.log_end_offset
    offset, batches = log.log_start_offset, []
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20).tobytes()
        for header in headers_of(data):
            batches.append(data[header.position : header.position + header.size])
            offset = header.next_offset
    return batches


def crash(log: PartitionLog) -> None:
    """Drop the log as a killed process would: no flush, no index write, no state write."""
    for segment in log.segments:
        segment._drop_indexes()
        if segment._file is not None:
            segment._file.close()


@contextmanager
def recovered_segments() -> Iterator[list[int]]:
    """Base offsets of the segments recover() scans while the block runs."""
    seen: list[int] = []
    original = LogSegment.recover

    def spy(self: LogSegment) -> Truncation:
        seen.append(self.base_offset)
        return original(self)

    LogSegment.recover = spy  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        LogSegment.recover = original  # type: ignore[method-assign]


CONFIG = {"segment_bytes": 800, "index_interval_bytes": 100}


def filled_log(directory: Path, n: int, seed: int) -> tuple[PartitionLog, list[bytes]]:
    log = PartitionLog.open(directory, LogConfig(**CONFIG))  # type: ignore[arg-type]
    rng = random.Random(seed)
    for i in range(n):
        append(log, batch(rng.randint(1, 4), ts=i * 10, size=rng.randint(0, 150)))
    return log, read_all(log)


def reopen(directory: Path, **kw: object) -> PartitionLog:
    return PartitionLog.open(directory, LogConfig(**CONFIG), **kw)  # type: ignore[arg-type]


def check_appends_after(log: PartitionLog, kept: list[bytes]) -> None:
    """The recovered log holds `kept`, and takes and serves new batches after it."""
    assert read_all(log) == kept
    expected_end = parse_batch_header(kept[-1]).next_offset if kept else 0
    assert log.log_end_offset == expected_end
    assert append(log, batch(2, ts=10**6)) == expected_end
    got = read_all(log)
    assert got[:-1] == kept
    assert parse_batch_header(got[-1]).base_offset == expected_end
    assert log.max_timestamp() == (10**6 + 1, expected_end + 1)


# ---- torn and corrupt logs ----------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 30), seed=st.integers(0, 1000), cut=st.floats(0, 1))
def test_recovery_from_log_cut_at_random_point(n: int, seed: int, cut: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "t-0"
        log, sent = filled_log(directory, n, seed)
        active = log.segments[-1]
        before_active = len(read_all(log)) - len(list(active.iter_headers()))
        crash(log)
        path = active.log_path
        size = path.stat().st_size
        cut_at = int(size * cut)
        os.truncate(path, cut_at)
        log = reopen(directory)
        # Batches wholly before the cut survive, the torn one goes.
        survivors = before_active
        position = 0
        for data in sent[before_active:]:
            if position + len(data) > cut_at:
                break
            survivors += 1
            position += len(data)
        assert log.segments[-1].size == position
        check_appends_after(log, sent[:survivors])
        log.close()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 30), seed=st.integers(0, 1000), where=st.floats(0, 1), xor=st.integers(1, 255)
)
def test_recovery_from_flipped_byte_in_last_batch(
    n: int, seed: int, where: float, xor: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "t-0"
        log, sent = filled_log(directory, n, seed)
        path = log.segments[-1].log_path
        crash(log)
        last = len(sent[-1])
        # From the magic byte on, everything is checked (magic, then the CRC over the rest).
        offset_in_batch = 16 + int((last - 17) * where)
        position = path.stat().st_size - last + offset_in_batch
        with open(path, "r+b") as f:
            f.seek(position)
            byte = f.read(1)[0]
            f.seek(position)
            f.write(bytes([byte ^ xor]))
        log = reopen(directory)
        check_appends_after(log, sent[:-1])
        log.close()


def test_flip_in_base_offset_going_backwards_is_caught(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log, sent = filled_log(directory, 5, 1)
    path = log.segments[-1].log_path
    crash(log)
    # The base offset is outside the CRC; offsets that go backwards are still caught.
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size - len(sent[-1]))
        f.write((0).to_bytes(8, "big"))
    log = reopen(directory)
    check_appends_after(log, sent[:-1])


def test_unclean_stop_without_damage_keeps_everything(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log, sent = filled_log(directory, 40, 2)
    crash(log)
    log = reopen(directory)
    check_appends_after(log, sent)


def test_corrupt_middle_segment_drops_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "t-0"
    log, sent = filled_log(directory, 40, 3)
    segments = log.segments
    assert len(segments) >= 4
    victim = segments[1]
    first_in_victim = sum(1 for b in sent if parse_batch_header(b).base_offset < victim.base_offset)
    batches_in_victim = list(victim.iter_headers())
    crash(log)
    # Garbage from the second batch of segment 1 on.
    with open(victim.log_path, "r+b") as f:
        f.seek(batches_in_victim[1].position + 20)
        f.write(b"\xff" * 8)
    end = parse_batch_header(sent[-1]).last_offset
    victim_bytes = victim.size - batches_in_victim[1].position
    later_bytes = sum(s.size for s in segments[2:])
    with recovered_segments() as seen, caplog.at_level(logging.WARNING, "kwire.log"):
        log = reopen(directory)
    assert seen[:2] == [0, victim.base_offset]
    assert [s.base_offset for s in log.segments] == [0, victim.base_offset]
    assert not segments[2].log_path.exists()
    check_appends_after(log, sent[: first_in_victim + 1])
    [warning] = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    kept_end = batches_in_victim[1].base_offset
    assert warning == (
        f"t-0: recovery after an unclean shutdown dropped {victim_bytes} bytes of segment "
        f"{victim.log_path.name} from position {batches_in_victim[1].position} (1 batch(es), from "
        f"the first that fails its checks on), and the {len(segments) - 2} later segment(s) from "
        f"offset {segments[2].base_offset} ({later_bytes} bytes): offsets {kept_end} to {end} lost; "
        f"the log end offset is now {kept_end}"
    )


def test_recovery_starts_at_the_recovery_point(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log, _ = filled_log(directory, 30, 4)
    log.flush(checkpoint=True)
    flushed = log.recovery_point
    rng = random.Random(5)
    for _ in range(30):
        append(log, batch(rng.randint(1, 3), size=100))
    sent = read_all(log)
    bases = [s.base_offset for s in log.segments]
    crash(log)
    with recovered_segments() as seen:
        log = reopen(directory)
    holding_flushed = max(b for b in bases if b <= flushed)
    assert seen == [b for b in bases if b >= holding_flushed]
    assert read_all(log) == sent
    assert log.recovery_point == flushed


def test_forced_recovery_after_clean_close(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log, sent = filled_log(directory, 20, 6)
    log.close()
    with recovered_segments() as seen:
        log = reopen(directory, clean_shutdown=False)
    # Closed cleanly, so everything up to the end was flushed: only the active segment.
    assert seen == [log.segments[-1].base_offset]
    check_appends_after(log, sent)


def test_log_start_offset_beyond_lost_data(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log, _ = filled_log(directory, 3, 7)
    log.delete_records_before(4)
    crash(log)
    for segment in directory.glob("*.log"):
        os.truncate(segment, 0)
    log = reopen(directory)
    assert log.log_start_offset == log.log_end_offset == 4
    assert append(log, batch(1)) == 4


# ---- a clean shutdown's tail ----------------------------------------------------------


def dropped_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("keep", [1, 60, -1])
def test_torn_last_batch_after_clean_close_is_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, keep: int
) -> None:
    directory = tmp_path / "t-0"
    log, sent = filled_log(directory, 25, 11)
    log.close()
    path = log.segments[-1].log_path
    size = path.stat().st_size
    last = parse_batch_header(sent[-1])
    cut_at = size - len(sent[-1]) + (keep if keep > 0 else len(sent[-1]) - 1)
    os.truncate(path, cut_at)
    with recovered_segments() as seen, caplog.at_level(logging.WARNING, "kwire.log"):
        log = reopen(directory)
    assert seen == [log.segments[-1].base_offset]
    assert log.recovery_point == log.log_end_offset == last.base_offset
    check_appends_after(log, sent[:-1])
    warnings = dropped_warnings(caplog)
    assert len(warnings) == 2
    assert "does not end as the clean shutdown left it" in warnings[0]
    assert warnings[1] == (
        f"t-0: recovery after a clean shutdown dropped {cut_at - (size - len(sent[-1]))} bytes of "
        f"segment {path.name} from position {size - len(sent[-1])} (1 batch(es), from the first "
        f"that fails its checks on): offsets {last.base_offset} to {last.last_offset} lost; "
        f"the log end offset is now {last.base_offset}"
    )


def test_clean_close_cut_at_a_batch_boundary_says_what_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "t-0"
    log, sent = filled_log(directory, 25, 12)
    log.close()
    path = log.segments[-1].log_path
    os.truncate(path, path.stat().st_size - len(sent[-1]))
    with caplog.at_level(logging.WARNING, "kwire.log"):
        log = reopen(directory)
    last = parse_batch_header(sent[-1])
    assert log.log_end_offset == last.base_offset
    assert dropped_warnings(caplog)[-1] == (
        f"t-0: the log end offset is {last.base_offset}, below the {last.next_offset} recorded at "
        f"the clean shutdown: offsets {last.base_offset} to {last.last_offset} are lost"
    )
    check_appends_after(log, sent[:-1])


def test_flipped_byte_in_last_batch_after_clean_close_is_cut(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log, sent = filled_log(directory, 25, 13)
    log.close()
    path = log.segments[-1].log_path
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size - 3)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 1]))
    log = reopen(directory)
    check_appends_after(log, sent[:-1])


def test_clean_tail_check_reads_only_the_tail(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log, sent = filled_log(directory, 60, 14)
    log.close()
    with recovered_segments() as seen:
        log = reopen(directory)
    assert seen == []
    check_appends_after(log, sent)


# ---- flushing rolled segments and the recovery point ----------------------------------------


def test_roll_flush_moves_recovery_point_only_when_complete(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log = reopen(directory)
    jobs: list[FlushJob] = []
    log.roll_flusher = jobs.append
    rng = random.Random(15)
    while len(log.segments) < 3:
        append(log, batch(rng.randint(1, 4), size=100))
    assert len(jobs) == 2 and log.recovery_point == 0
    assert [j.up_to for j in jobs] == [s.base_offset for s in log.segments[1:]]
    # Done out of order: the later job covers the earlier one's segments too.
    jobs[1].run()
    assert log.recovery_point == 0  # fsynced, but not completed yet
    jobs[1].complete()
    assert log.recovery_point == log.segments[2].base_offset
    assert LogState.read(directory).recovery_point == log.segments[2].base_offset  # type: ignore[union-attr]
    jobs[0].run()
    jobs[0].complete()
    assert log.recovery_point == log.segments[2].base_offset
    sent = read_all(log)
    crash(log)
    with recovered_segments() as seen:
        log = reopen(directory)
    assert seen == [log.segments[-1].base_offset]
    assert read_all(log) == sent


def test_roll_flush_prepared_before_truncation_is_dropped(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log = reopen(directory)
    jobs: list[FlushJob] = []
    log.roll_flusher = jobs.append
    while len(log.segments) < 2:
        append(log, batch(2, size=100))
    log.truncate_to(1)
    jobs[0].run()
    jobs[0].complete()
    assert log.recovery_point == 0
    # A job that never ran (cancelled) releases its fds and moves nothing.
    while len(log.segments) < 2:
        append(log, batch(2, size=100))
    jobs[-1].complete()
    assert log.recovery_point == 0
    log.close()


def test_flipped_byte_in_flushed_segment_is_not_recovered_but_reported_on_read(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "t-0"
    log = reopen(directory)
    log.roll_flusher = lambda job: (job.run(), job.complete())  # type: ignore[func-returns-value]
    rng = random.Random(16)
    while len(log.segments) < 5:
        append(log, batch(rng.randint(1, 4), ts=len(log.segments), size=rng.randint(20, 100)))
    sent = read_all(log)
    victim = log.segments[1]
    headers = list(victim.iter_headers())
    bad = headers[1]
    crash(log)
    with open(victim.log_path, "r+b") as f:
        f.seek(bad.position + bad.size - 5)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x40]))
    with recovered_segments() as seen:
        log = reopen(directory)
    assert seen == [log.segments[-1].base_offset]
    assert log.log_end_offset == parse_batch_header(sent[-1]).next_offset
    log.high_watermark = log.log_end_offset
    # A read from before it stops before it; a read of it is an error; after it, all is there.
    got = log.read(victim.base_offset, 1 << 20).tobytes()
    assert [h.base_offset for h in headers_of(got)] == [headers[0].base_offset]
    with pytest.raises(CorruptRecordError, match=f"offsets {bad.base_offset} to {bad.last_offset}"):
        log.read(bad.base_offset, 1 << 20)
    with pytest.raises(CorruptRecordError):
        log.read(bad.last_offset, 1, min_one_batch=True)
    after = []
    offset = bad.next_offset
    while offset < log.log_end_offset:
        data = log.read(offset, 1 << 20).tobytes()
        after += [data[h.position : h.position + h.size] for h in headers_of(data)]
        offset = parse_batch_header(after[-1]).next_offset
    index = next(i for i, b in enumerate(sent) if parse_batch_header(b).base_offset == bad.base_offset)
    assert after == sent[index + 1 :]


def test_garbage_header_found_by_a_read_is_corrupt_not_the_end(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log, sent = filled_log(directory, 30, 17)
    log.close()
    log = reopen(directory)
    log.high_watermark = log.log_end_offset
    victim = next(s for s in log.segments if len(list(s.iter_headers())) >= 3)
    headers = list(victim.iter_headers())
    # Damaged after open: the batch length of the third batch becomes garbage.
    with open(victim.log_path, "r+b") as f:
        f.seek(headers[2].position + 8)
        f.write((10**8).to_bytes(4, "big"))
    data = log.read(victim.base_offset, 1 << 20).tobytes()
    assert [h.base_offset for h in headers_of(data)] == [h.base_offset for h in headers[:2]]
    with pytest.raises(CorruptRecordError, match="runs past the end of the segment"):
        log.read(headers[2].base_offset, 1 << 20)


def test_segment_cut_on_disk_after_a_read_is_corrupt_not_short(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log, sent = filled_log(directory, 30, 19)
    log.high_watermark = log.log_end_offset
    victim = next(s for s in log.segments if len(list(s.iter_headers())) >= 3)
    headers = list(victim.iter_headers())
    assert log.read(victim.base_offset, 1 << 20).regions[0].size == victim.size  # then cut
    os.truncate(victim.log_path, headers[2].position + 30)
    data = log.read(victim.base_offset, 1 << 20).tobytes()
    assert [h.base_offset for h in headers_of(data)] == [h.base_offset for h in headers[:2]]
    with pytest.raises(CorruptRecordError):
        log.read(headers[2].base_offset, 1 << 20)


def test_reads_check_each_batch_once(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log, sent = filled_log(directory, 30, 18)
    log.close()
    log = reopen(directory)
    segment = log.segments[0]
    assert segment._verified == []
    # Reads in any order, then all of it: one span covering the segment.
    headers = list(segment.iter_headers())
    for header in headers[::-2] + headers:
        segment.verified_length(header.position, header.size)
    assert segment._verified == [(0, segment.size)]
    # Appends are checked by produce, so the active segment stays one span.
    active = log.segments[-1]
    append(log, batch(2))
    assert active._verified[-1][1] == active.size


# ---- indexes ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["delete", "empty"])
def test_lost_indexes_are_rebuilt(tmp_path: Path, how: str) -> None:
    directory = tmp_path / "t-0"
    log, sent = filled_log(directory, 40, 8)
    log.high_watermark = log.log_end_offset
    offsets = [h.base_offset for h in log.batch_headers()]
    expected = {o: log.read(o, 1).tobytes() for o in range(log.log_end_offset)}
    log.close()
    sizes = {p.name: p.stat().st_size for p in directory.glob("*index")}
    for path in directory.glob("*index"):
        if how == "delete":
            path.unlink()
        else:
            os.truncate(path, 0)
    log = reopen(directory)
    assert read_all(log) == sent
    assert {o: log.read(o, 1).tobytes() for o in range(log.log_end_offset)} == expected
    assert [h.base_offset for h in log.batch_headers()] == offsets
    log.close()
    assert {p.name: p.stat().st_size for p in directory.glob("*index")} == sizes
    log = reopen(directory)
    check_appends_after(log, sent)


def test_small_segment_without_offset_entries_is_not_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "t-0"
    log = reopen(directory)
    append(log, batch(1, ts=5))
    sent = read_all(log)
    log.close()
    active = log.segments[-1]
    assert active.size <= CONFIG["index_interval_bytes"]
    assert not active.index_path.exists()  # no entry to write
    rebuilt: list[int] = []
    original = LogSegment.rebuild_indexes

    def spy(self: LogSegment) -> None:
        rebuilt.append(self.base_offset)
        original(self)

    monkeypatch.setattr(LogSegment, "rebuild_indexes", spy)
    log = reopen(directory)
    assert rebuilt == []  # nothing is missing: a segment this small has no offset entry
    log.close()
    # A present but wrong offset index is still caught.
    active.index_path.write_bytes((5).to_bytes(4, "big") + (10**6).to_bytes(4, "big"))
    log = reopen(directory)
    assert rebuilt == [0]
    check_appends_after(log, sent)


def test_crashed_active_index_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log, sent = filled_log(directory, 10, 9)
    active = log.segments[-1]
    assert active.offset_index.entries > 0
    log.flush()  # the active index's entries reach its file
    assert active.index_path.stat().st_size == active.offset_index.entries * 8
    crash(log)
    # Point the active index somewhere wrong: recovery must not care.
    with open(active.index_path, "r+b") as f:
        f.write((1).to_bytes(4, "big") + (3).to_bytes(4, "big"))
    log = reopen(directory)
    check_appends_after(log, sent)


def test_leftover_files_are_cleaned_up(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log, sent = filled_log(directory, 5, 10)
    log.close()
    for name in (
        "00000000000000000003.log.deleted",
        "00000000000000000003.index.deleted",
        "kwire-log-state.tmp",
        "00000000000000000000.log.swap",
        "00000000000000099999.index",
        "00000000000000099999.timeindex",
    ):
        (directory / name).write_bytes(b"junk")
    log = reopen(directory)
    names = sorted(p.name for p in directory.iterdir())
    assert not [n for n in names if n.endswith((".deleted", ".tmp", ".swap")) or "99999" in n]
    check_appends_after(log, sent)


# ---- LogManager ----------------------------------------------------------------------


def test_log_manager_lifecycle(tmp_path: Path) -> None:
    manager = LogManager(tmp_path, LogConfig(segment_bytes=500))
    manager.startup()
    a = manager.get_or_create("orders.eu-west", 0)
    b = manager.get_or_create("orders.eu-west", 1)
    assert manager.get_or_create("orders.eu-west", 0) is a
    for i in range(20):
        append(a, batch(2, ts=i))
        append(b, batch(1, ts=i))
    sent_a = read_all(a)
    (tmp_path / "not-a-partition").mkdir()
    (tmp_path / "x-0.abc-delete").mkdir()
    manager.close()
    assert (tmp_path / CLEAN_SHUTDOWN_FILE).exists()

    manager = LogManager(tmp_path, LogConfig(segment_bytes=500))
    with recovered_segments() as seen:
        manager.startup()
    assert seen == []
    assert manager.had_clean_shutdown
    assert not (tmp_path / CLEAN_SHUTDOWN_FILE).exists()
    assert not (tmp_path / "x-0.abc-delete").exists()
    assert sorted(manager.logs) == [("orders.eu-west", 0), ("orders.eu-west", 1)]
    a = manager.get("orders.eu-west", 0)
    assert a is not None and read_all(a) == sent_a
    with pytest.raises(LogDirLockedError):
        LogManager(tmp_path).startup()

    manager.delete_partition("orders.eu-west", 1)
    assert not (tmp_path / "orders.eu-west-1").exists()
    assert manager.get("orders.eu-west", 1) is None
    a.config.retention_ms = 1
    assert manager.retention_pass(now_ms=10**9) > 0
    manager.flush_pass(now_ms=10**9)
    # A crash: no marker, so every log is recovered from its recovery point.
    crash(a)
    manager._lock_fd and os.close(manager._lock_fd)
    manager = LogManager(tmp_path)
    with recovered_segments() as seen:
        manager.startup()
    assert seen
    assert not manager.had_clean_shutdown
