"""PartitionLog: appends, reads, indexes, timestamps, retention, truncation, reopen."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kwire.log import FlushJob, LogConfig, LogRead, OffsetOutOfRangeError, PartitionLog
from kwire.log.checkpoint import LEADER_EPOCH_FILE, STATE_FILE
from kwire.log.log import parse_partition_dir
from kwire.log.segment import LogSegment
from kwire.protocol.records import (
    BatchHeader,
    build_batch,
    iter_records,
    parse_batch_header,
    validate_batches,
)

# More examples: KWIRE_LOG_EXAMPLES=1000 pytest tests/test_log*.py
EXAMPLES = int(os.environ.get("KWIRE_LOG_EXAMPLES", "60"))

# ---- helpers ---------------------------------------------------------------------


def batch(n: int = 1, *, ts: int | list[int] = 1_000, size: int = 10, **kw: object) -> bytearray:
    """One batch of `n` records with `size`-byte values; `ts` per record or for all."""
    stamps = ts if isinstance(ts, list) else [ts] * n
    records = [(f"k{i}".encode(), bytes([65 + i % 26]) * size, (), stamps[i]) for i in range(n)]
    return bytearray(build_batch(records, **kw))  # type: ignore[arg-type]


def append(log: PartitionLog, *batches: bytearray, now_ms: int = 0) -> int:
    buf = bytearray(b"".join(batches))
    return log.append(buf, validate_batches(buf), now_ms=now_ms)


def headers_of(data: bytes) -> list[BatchHeader]:
    out = []
    position = 0
    while position < len(data):
        header = parse_batch_header(data, position)
        out.append(header)
        position += header.size
    assert position == len(data), "a read must hold whole batches"
    return out


def read_all(log: PartitionLog, start: int | None = None, max_bytes: int = 1 << 20) -> list[bytes]:
    """Consume the log as a client would: fetch, take batches, continue after them."""
    offset = log.log_start_offset if start is None else start
    batches = []
    while offset < log.high_watermark:
        data = log.read(offset, max_bytes, max_offset=log.high_watermark).tobytes()
        assert data, f"no progress at {offset}"
        for header in headers_of(data):
            batches.append(data[header.position : header.position + header.size])
            offset = header.next_offset
    return batches


def open_log(path: Path, **config: object) -> PartitionLog:
    return PartitionLog.open(path / "topic-0", LogConfig(**config))  # type: ignore[arg-type]


def committed(log: PartitionLog) -> PartitionLog:
    log.high_watermark = log.log_end_offset
    return log


# ---- names and basics --------------------------------------------------------------


def test_partition_dir_names() -> None:
    assert parse_partition_dir("my-topic.v2-12") == ("my-topic.v2", 12)
    assert parse_partition_dir("a-0") == ("a", 0)
    for bad in ("topic", "-1", "topic-", "topic-x", "x.deleted"):
        with pytest.raises(ValueError):
            parse_partition_dir(bad)


def test_open_creates_empty_log(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "orders-eu.v1-7", LogConfig())
    assert (log.topic, log.partition) == ("orders-eu.v1", 7)
    assert log.log_start_offset == log.log_end_offset == log.high_watermark == 0
    assert (tmp_path / "orders-eu.v1-7" / "00000000000000000000.log").exists()
    assert log.read(0, 100).size == 0
    assert log.max_timestamp() == (-1, -1)
    assert log.offset_for_timestamp(0) is None
    with pytest.raises(OffsetOutOfRangeError):
        log.read(1, 100)


def test_append_assigns_offsets_and_stamps_epoch(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.leader_epoch = 3
    assert append(log, batch(2), batch(3)) == 0
    assert append(log, batch(1)) == 5
    assert log.log_end_offset == 6
    committed(log)
    got = [parse_batch_header(b) for b in read_all(log)]
    assert [(h.base_offset, h.last_offset) for h in got] == [(0, 1), (2, 4), (5, 5)]
    assert all(h.partition_leader_epoch == 3 for h in got)
    # The data is stored as sent: records decode with their assigned offsets.
    assert [r.offset for b in read_all(log) for r in iter_records(b)] == list(range(6))
    assert log.leader_epoch_entries == [(3, 0)]


def test_append_rejects_gaps_in_buffer(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    buf = batch(1) + batch(1)
    headers = validate_batches(buf)
    with pytest.raises(ValueError):
        log.append(buf, headers[1:] + headers[:1], now_ms=0)


# ---- segments and rolling --------------------------------------------------------------


def test_round_trip_across_segments(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=1_000, index_interval_bytes=150)
    rng = random.Random(1)
    sent = []
    for i in range(200):
        b = batch(rng.randint(1, 5), size=rng.randint(1, 120), ts=i)
        append(log, b)
        sent.append(bytes(b))
    committed(log)
    assert len(log.segments) > 10
    for segment in log.segments[:-1]:
        assert segment.size <= 1_000
    assert [s.log_path.name for s in log.segments][:1] == ["00000000000000000000.log"]
    got = read_all(log)
    # Same bytes apart from the base offset and epoch we assigned (outside the CRC).
    assert [g[8:12] + g[16:] for g in got] == [s[8:12] + s[16:] for s in sent]
    # Small fetches too: every batch boundary and segment boundary is crossed.
    assert read_all(log, max_bytes=1) == got
    assert read_all(log, max_bytes=300) == got


def test_roll_by_size_keeps_single_large_batch(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=500)
    append(log, batch(1, size=2_000))  # bigger than a segment: it still goes in
    append(log, batch(1, size=10))
    assert [s.base_offset for s in log.segments] == [0, 1]
    assert log.segments[0].size > 500


def test_roll_by_record_time(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_ms=1_000)
    append(log, batch(1, ts=10_000))
    append(log, batch(1, ts=10_900))
    assert len(log.segments) == 1
    append(log, batch(1, ts=11_001))  # more than segment.ms after the first batch
    assert [s.base_offset for s in log.segments] == [0, 2]


def test_roll_by_broker_time_without_timestamps(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(segment_ms=1_000), now_ms=5_000)
    no_ts = bytearray(build_batch([(b"k", b"v")], timestamp_ms=-1))
    append(log, no_ts, now_ms=5_500)
    append(log, bytearray(no_ts), now_ms=5_900)
    assert len(log.segments) == 1
    append(log, bytearray(no_ts), now_ms=6_100)
    assert len(log.segments) == 2


def test_roll_when_index_full(tmp_path: Path) -> None:
    # 3 offset index entries of 8 bytes; the time index (12 bytes) has 2 slots, one kept
    # back for the entry written at roll.
    log = open_log(tmp_path, segment_index_bytes=24, index_interval_bytes=0)
    for i in range(12):
        append(log, batch(1, ts=i))
    assert len(log.segments) > 3
    committed(log)
    assert len(read_all(log)) == 12
    for segment in log.segments[:-1]:
        assert segment.time_index.last_entry[0] == segment.max_timestamp


def test_explicit_roll(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.roll()
    assert len(log.segments) == 1  # nothing to roll
    append(log, batch(2))
    log.roll()
    assert [s.base_offset for s in log.segments] == [0, 2]
    append(log, batch(1))
    assert log.segments[-1].next_offset == 3


# ---- reads -------------------------------------------------------------------------


@pytest.fixture
def ten_batches(tmp_path: Path) -> PartitionLog:
    """Offsets 0..29: ten batches of three records, ~100 bytes each, two segments."""
    log = open_log(tmp_path, segment_bytes=700, index_interval_bytes=50)
    for i in range(10):
        append(log, batch(3, ts=1_000 + i))
    return committed(log)


def test_read_from_inside_a_batch_returns_the_whole_batch(ten_batches: PartitionLog) -> None:
    log = ten_batches
    for offset in range(30):
        r = log.read(offset, 1)
        headers = headers_of(r.tobytes())
        assert len(headers) == 1
        assert headers[0].base_offset == offset - offset % 3
        assert r.first_offset == headers[0].base_offset


def test_read_max_bytes_whole_batches(ten_batches: PartitionLog) -> None:
    log = ten_batches
    size = len(log.read(0, 1).tobytes())
    r = log.read(0, size * 3 + size // 2)
    assert [h.base_offset for h in headers_of(r.tobytes())] == [0, 3, 6]
    assert r.size == size * 3
    r = log.read(0, size * 3)
    assert r.size == size * 3
    # Without min_one_batch a too-small max_bytes gives nothing.
    assert log.read(4, size - 1, min_one_batch=False).size == 0
    assert log.read(4, size, min_one_batch=False).size == size


def test_read_max_offset_bound(ten_batches: PartitionLog) -> None:
    log = ten_batches
    # A batch is returned only if all of it is below the bound.
    assert [h.last_offset for h in headers_of(log.read(0, 10_000, max_offset=8).tobytes())] == [
        2,
        5,
    ]
    assert [h.last_offset for h in headers_of(log.read(0, 10_000, max_offset=9).tobytes())] == [
        2,
        5,
        8,
    ]
    assert log.read(6, 10_000, max_offset=8).size == 0
    assert log.read(9, 10_000, max_offset=9).size == 0
    # Bound inside the second segment.
    second = log.segments[1].base_offset
    bound = second + 4
    got = headers_of(log.read(0, 10_000, max_offset=bound).tobytes())
    assert got[-1].last_offset == second + 2
    assert (
        log.read(0, 10_000, max_offset=bound).tobytes()
        == log.read(0, 10_000, max_offset=bound).tobytes()
    )


def test_read_spans_segments_and_offsets_out_of_range(ten_batches: PartitionLog) -> None:
    log = ten_batches
    assert len(log.segments) >= 2
    r = log.read(0, 1 << 20)
    assert len(r.regions) == len(log.segments)
    assert [h.base_offset for h in headers_of(r.tobytes())] == list(range(0, 30, 3))
    assert r.log_end_offset == 30 and r.high_watermark == 30
    assert log.read(30, 100).size == 0
    with pytest.raises(OffsetOutOfRangeError) as info:
        log.read(31, 100)
    assert info.value.log_end_offset == 30
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100)


def test_read_regions_are_sendfile_ready(ten_batches: PartitionLog) -> None:
    r = ten_batches.read(0, 1 << 20)
    region = r.regions[0]
    fd = region.file.fileno()
    assert os.pread(fd, region.size, region.position) == region.tobytes()


def test_batch_headers(ten_batches: PartitionLog) -> None:
    log = ten_batches
    assert [h.base_offset for h in log.batch_headers()] == list(range(0, 30, 3))
    assert [h.base_offset for h in log.batch_headers(13)] == list(range(12, 30, 3))
    assert list(log.batch_headers(30)) == []


# ---- timestamps --------------------------------------------------------------------


def brute_offset_for_timestamp(log: PartitionLog, target: int) -> tuple[int, int] | None:
    for b in read_all(log):
        for r in iter_records(b):
            if r.timestamp >= target and r.offset >= log.log_start_offset:
                return r.offset, r.timestamp
    return None


def brute_max_timestamp(log: PartitionLog) -> tuple[int, int]:
    best = (-1, -1)
    for b in read_all(log):
        for r in iter_records(b):
            if r.timestamp > best[0]:
                best = (r.timestamp, r.offset)
    return best


@settings(
    max_examples=EXAMPLES * 2 // 3, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    stamps=st.lists(st.lists(st.integers(0, 500), min_size=1, max_size=4), min_size=1, max_size=40),
    segment_bytes=st.integers(200, 2_000),
    interval=st.integers(0, 400),
    targets=st.lists(st.integers(-1, 520), min_size=1, max_size=10),
    reopen=st.booleans(),
)
def test_timestamp_lookups_match_brute_force(
    stamps: list[list[int]], segment_bytes: int, interval: int, targets: list[int], reopen: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = open_log(Path(tmp), segment_bytes=segment_bytes, index_interval_bytes=interval)
        for ts in stamps:
            append(log, batch(len(ts), ts=ts))
        if reopen:
            log.close()
            log = open_log(Path(tmp), segment_bytes=segment_bytes, index_interval_bytes=interval)
        committed(log)
        for target in targets:
            assert log.offset_for_timestamp(target) == brute_offset_for_timestamp(log, target)
        assert log.max_timestamp() == brute_max_timestamp(log)
        log.close()


def test_log_append_time_batches(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    append(log, batch(3, ts=[5, 1, 3], timestamp_type_log_append=True))
    committed(log)
    # The header says maxTimestamp for all records of a LogAppendTime batch.
    assert log.max_timestamp() == (5, 0)
    assert log.offset_for_timestamp(2) == (0, 5)


def test_offset_for_timestamp_respects_log_start_offset(ten_batches: PartitionLog) -> None:
    log = ten_batches
    log.delete_records_before(7)
    assert log.offset_for_timestamp(0) == (7, 1_002)


# ---- leader epochs and followers ----------------------------------------------------


def test_leader_epochs(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.leader_epoch = 0
    append(log, batch(5))
    log.leader_epoch = 2
    append(log, batch(5))
    log.leader_epoch = 4
    assert log.leader_epoch_entries == [(0, 0), (2, 5), (4, 10)]
    assert log.end_offset_for_epoch(0) == (0, 5)
    assert log.end_offset_for_epoch(1) == (0, 5)
    assert log.end_offset_for_epoch(2) == (2, 10)
    assert log.end_offset_for_epoch(4) == (4, 10)
    assert log.end_offset_for_epoch(5) == (-1, -1)
    log.close()
    log = open_log(tmp_path)
    assert log.leader_epoch == 4
    assert log.leader_epoch_entries == [(0, 0), (2, 5), (4, 10)]
    assert (log.directory / LEADER_EPOCH_FILE).read_text().splitlines()[:2] == ["0", "3"]


def test_append_as_follower_keeps_offsets(tmp_path: Path) -> None:
    leader = open_log(tmp_path / "leader")
    leader.leader_epoch = 7
    append(leader, batch(2), batch(3))
    committed(leader)
    follower = open_log(tmp_path / "follower")
    data = bytearray(leader.read(0, 1 << 20).tobytes())
    assert follower.append_as_follower(data, validate_batches(data), now_ms=0) == 0
    assert follower.log_end_offset == 5
    assert follower.leader_epoch_entries == [(7, 0)]
    with pytest.raises(ValueError):
        follower.append_as_follower(data, validate_batches(data), now_ms=0)
    committed(follower)
    assert read_all(follower) == read_all(leader)


# ---- truncation ---------------------------------------------------------------------


def test_truncate_to_within_and_across_segments(ten_batches: PartitionLog) -> None:
    log = ten_batches
    log.leader_epoch = 1
    append(log, batch(3))  # offsets 30..32 in epoch 1
    committed(log)
    n_segments = len(log.segments)
    log.truncate_to(31)  # inside the last batch: the whole batch goes
    assert log.log_end_offset == 30
    assert log.high_watermark == 30
    assert log.leader_epoch_entries == [(0, 0)]  # epoch 1 began at 30: gone
    log.truncate_to(9)
    assert log.log_end_offset == 9
    assert log.high_watermark == 9
    assert len(log.segments) <= n_segments
    assert log.segments[-1].active
    assert [h.base_offset for h in log.batch_headers()] == [0, 3, 6]
    assert append(log, batch(2)) == 9
    committed(log)
    assert [parse_batch_header(b).base_offset for b in read_all(log)] == [0, 3, 6, 9]
    log.close()
    log = open_log(tmp_path_of(log))
    assert log.log_end_offset == 11
    assert [h.base_offset for h in log.batch_headers()] == [0, 3, 6, 9]


def tmp_path_of(log: PartitionLog) -> Path:
    return log.directory.parent


def test_truncate_to_segment_boundary_and_below_start(ten_batches: PartitionLog) -> None:
    log = ten_batches
    second = log.segments[1].base_offset
    log.truncate_to(second)
    assert log.log_end_offset == second
    assert log.segments[-1].base_offset == second
    assert log.segments[-1].size == 0
    log.delete_records_before(3)
    log.truncate_to(1)  # below the log start offset: start over there
    assert log.log_start_offset == log.log_end_offset == 1
    assert [s.base_offset for s in log.segments] == [1]
    assert append(log, batch(1)) == 1


# ---- retention and DeleteRecords -----------------------------------------------------


def segments_with_times(tmp_path: Path, **config: object) -> PartitionLog:
    """Five segments of two batches each; batch i has timestamp 1000 * i."""
    size = len(batch(1, size=50))
    log = open_log(tmp_path, segment_bytes=2 * size, file_delete_delay_ms=0, **config)
    for i in range(10):
        append(log, batch(1, size=50, ts=1_000 * i))
    assert [s.base_offset for s in log.segments] == [0, 2, 4, 6, 8]
    return committed(log)


def test_retention_by_time(tmp_path: Path) -> None:
    log = segments_with_times(tmp_path, retention_ms=5_000)
    # Segment [0,2) has max timestamp 1000: expired at now > 6000.
    assert log.apply_retention(now_ms=6_000) == 0
    assert log.apply_retention(now_ms=6_001) == 1
    assert log.log_start_offset == 2
    assert log.apply_retention(now_ms=10_001) == 2
    assert log.log_start_offset == 6
    assert not (log.directory / "00000000000000000000.log").exists()
    with pytest.raises(OffsetOutOfRangeError):
        log.read(0, 100)
    assert parse_batch_header(read_all(log)[0]).base_offset == 6


def test_retention_rolls_and_deletes_expired_active_segment(tmp_path: Path) -> None:
    log = segments_with_times(tmp_path, retention_ms=1_000)
    assert log.apply_retention(now_ms=100_000) == 5
    assert log.log_start_offset == log.log_end_offset == 10
    assert [s.base_offset for s in log.segments] == [10]
    assert append(log, batch(1, ts=100_000)) == 10


def test_retention_waits_for_high_watermark(tmp_path: Path) -> None:
    log = segments_with_times(tmp_path, retention_ms=1_000)
    log.high_watermark = 5  # segments [4,6) and later not fully committed
    assert log.apply_retention(now_ms=100_000) == 2
    assert log.log_start_offset == 4


def test_retention_by_size(tmp_path: Path) -> None:
    log = segments_with_times(tmp_path, retention_ms=-1)
    segment_size = log.segments[0].size
    # As Kafka: a segment goes only if what remains is still at least retention.bytes.
    log.config.retention_bytes = log.size_bytes - segment_size + 1
    assert log.apply_retention(now_ms=0) == 0
    log.config.retention_bytes = log.size_bytes - segment_size
    assert log.apply_retention(now_ms=0) == 1
    log.config.retention_bytes = 2 * segment_size
    assert log.apply_retention(now_ms=0) == 2
    assert log.size_bytes == 2 * segment_size
    assert log.log_start_offset == 6
    assert log.apply_retention(now_ms=0) == 0


def test_retention_disabled_for_compact_policy(tmp_path: Path) -> None:
    log = segments_with_times(tmp_path, retention_ms=1, cleanup_policy="compact")
    assert log.apply_retention(now_ms=10**9) == 0


def test_delayed_delete_keeps_regions_readable(tmp_path: Path) -> None:
    log = segments_with_times(tmp_path, retention_ms=1_000)
    log.config.file_delete_delay_ms = 60_000
    fetched = log.read(0, 1 << 20)
    expected = fetched.tobytes()
    assert log.apply_retention(now_ms=100_000) == 5
    names = sorted(p.name for p in log.directory.iterdir())
    assert "00000000000000000000.log.deleted" in names
    assert fetched.tobytes() == expected  # still readable from the renamed files
    log.apply_retention(now_ms=100_000 + 60_000)
    assert not [n for n in os.listdir(log.directory) if n.endswith(".deleted")]


def test_delete_records_before(ten_batches: PartitionLog) -> None:
    log = ten_batches
    first_segment_end = log.segments[1].base_offset
    assert log.delete_records_before(4) == 4
    assert log.log_start_offset == 4
    assert log.delete_records_before(2) == 4  # never backwards
    with pytest.raises(OffsetOutOfRangeError):
        log.read(3, 100)
    # Reading from the start offset returns the batch holding it.
    assert parse_batch_header(log.read(4, 1).tobytes()).base_offset == 3
    log.delete_records_before(first_segment_end + 1)
    assert log.segments[0].base_offset == first_segment_end
    log.high_watermark = 20
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_records_before(21)
    directory = log.directory
    log.close()
    log = PartitionLog.open(directory, LogConfig())
    assert log.log_start_offset == first_segment_end + 1


# ---- flushing, closing, reopening ------------------------------------------------------


def test_close_and_reopen_keeps_everything(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=600, index_interval_bytes=100)
    log.leader_epoch = 2
    for i in range(30):
        append(log, batch(2, ts=i))
    committed(log)
    before = read_all(log)
    segment_bases = [s.base_offset for s in log.segments]
    offset_entries = [s.offset_index.entries for s in log.segments]
    log.close()
    for segment, entries in zip(segment_bases, offset_entries, strict=True):
        # Each file holds exactly its entries (the time index also the seal entry).
        index = tmp_path / "topic-0" / f"{segment:020d}.index"
        assert entries > 0 and index.stat().st_size == 8 * entries
        time_index = index.with_suffix(".timeindex")
        assert time_index.stat().st_size % 12 == 0 and time_index.stat().st_size > 0
    recovered: list[int] = []
    original = LogSegment.recover

    def spy(self: LogSegment) -> int:
        recovered.append(self.base_offset)
        return original(self)

    LogSegment.recover = spy  # type: ignore[method-assign]
    try:
        log = open_log(tmp_path, segment_bytes=600, index_interval_bytes=100)
    finally:
        LogSegment.recover = original  # type: ignore[method-assign]
    assert recovered == []  # a clean shutdown needs no scan
    assert [s.base_offset for s in log.segments] == segment_bases
    assert log.log_end_offset == 60
    assert log.high_watermark == 60
    assert log.recovery_point == 60
    assert log.leader_epoch == 2
    assert read_all(log) == before
    assert append(log, batch(1, ts=99)) == 60
    assert log.max_timestamp() == (99, 60)
    assert "clean_shutdown 0" in (log.directory / STATE_FILE).read_text()


def test_index_files_are_written_at_flush_roll_and_close(tmp_path: Path) -> None:
    log = open_log(tmp_path, index_interval_bytes=100)
    active = log.segments[0]
    for i in range(10):
        append(log, batch(2, ts=i))
    entries = active.offset_index.entries
    assert entries > 0
    # Entries are in memory only until the segment is flushed.
    assert not active.index_path.exists() and not active.time_index_path.exists()
    log.flush()
    assert active.index_path.stat().st_size == 8 * entries
    assert active.time_index_path.stat().st_size == 12 * active.time_index.entries
    for i in range(10):
        append(log, batch(2, ts=100 + i))
    assert active.index_path.stat().st_size == 8 * entries  # not yet
    more = active.offset_index.entries
    assert more > entries
    log.roll()  # the rolled segment's files are complete (the seal entry included)
    assert active._offset_index is None  # and read again when needed
    assert active.index_path.stat().st_size == 8 * more
    assert active.time_index.last_entry[0] == 109
    assert active.time_index_path.stat().st_size == 12 * active.time_index.entries
    # Truncation cuts the file too, so a reload cannot see dropped entries.
    log.truncate_to(6)
    assert active.index_path.stat().st_size == 8 * active.offset_index.entries < 8 * entries
    log.close()


def test_torn_index_entry_is_dropped_at_load(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=600, index_interval_bytes=100)
    for i in range(30):
        append(log, batch(2, ts=i))
    committed(log)
    before = {o: log.read(o, 1).tobytes() for o in range(log.log_end_offset)}
    first = log.segments[0]
    entries = first.offset_index.entries
    log.close()
    with open(first.index_path, "ab") as f:
        f.write(b"\x00\x00\x7f")  # a partial entry, as a write cut short would leave
    with open(first.time_index_path, "ab") as f:
        f.write(b"\x01" * 11)
    log = open_log(tmp_path, segment_bytes=600, index_interval_bytes=100)
    assert log.segments[0].offset_index.entries == entries
    assert {o: log.read(o, 1).tobytes() for o in range(log.log_end_offset)} == before
    assert log.offset_for_timestamp(20) == (40, 20)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _mappings() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_many_partitions_hold_one_fd_each(tmp_path: Path) -> None:
    """10,000 partitions must fit a 20,000 fd limit: an empty or barely used partition
    holds its active `.log` only (indexes hold no fd and no mmap)."""
    n = 3_000
    fds, maps = _open_fds(), _mappings()
    logs = [PartitionLog.open(tmp_path / f"t-{i}", LogConfig()) for i in range(n)]
    for log in logs:
        assert list(log.batch_headers()) == []
        assert log.read(0, 1 << 20).size == 0
        assert log.offset_for_timestamp(0) is None
    assert _open_fds() - fds <= n + 5
    # A new partition creates its empty .log and nothing else.
    assert sorted(p.name for p in (tmp_path / "t-0").iterdir()) == ["00000000000000000000.log"]
    for i, log in enumerate(logs):
        append(log, batch(1, ts=i))
        committed(log)
        assert len(log.read(0, 1 << 20).tobytes()) > 0
    assert _open_fds() - fds <= n + 5
    assert _mappings() - maps < 100  # no mapping per partition
    for log in logs:
        log.delete()  # closes without the fsyncs of a clean close
    assert _open_fds() <= fds + 5


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("clean", [True, False])
def test_inactive_segments_open_their_log_on_first_read(tmp_path: Path, clean: bool) -> None:
    log = open_log(tmp_path, segment_bytes=600, index_interval_bytes=100)
    for i in range(60):
        append(log, batch(2, ts=i))
    committed(log)
    before = read_all(log)
    n_segments = len(log.segments)
    assert n_segments > 5
    if clean:
        log.close()
    else:
        log.flush(log.segments[2].base_offset, checkpoint=True)
        for segment in log.segments:  # as a killed process: nothing more written
            segment._drop_indexes()
            segment.file.close()
    fds = _open_fds()
    log = open_log(tmp_path, segment_bytes=600, index_interval_bytes=100)
    assert _open_fds() == fds + 1  # the active segment's .log only, recovery or not
    assert log.max_timestamp() == (59, 118)  # from the time indexes' last entries
    assert log.offset_for_timestamp(100) is None
    assert _open_fds() == fds + 1
    assert read_all(committed(log)) == before
    assert _open_fds() == fds + n_segments
    log.close()
    assert _open_fds() == fds


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the path of every file fsynced from here on."""
    calls: list[str] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_idle_new_partition_closes_without_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs = _count_fsyncs(monkeypatch)
    log = open_log(tmp_path)
    log.flush()
    log.close()
    assert fsyncs == []
    # Nothing but the empty .log: reopening it recovers an empty segment.
    assert [p.name for p in (tmp_path / "topic-0").iterdir()] == ["00000000000000000000.log"]
    log = open_log(tmp_path)
    assert log.log_end_offset == 0
    assert append(log, batch(1)) == 0
    fsyncs.clear()
    log.close()
    # Each file synced once: the log, the time index (its final entry), the state file.
    assert sorted(Path(name).name for name in fsyncs) == [
        "00000000000000000000.log",
        "00000000000000000000.timeindex",
        "kwire-log-state.tmp",
        "topic-0",
    ]
    assert "clean_shutdown 1" in (log.directory / STATE_FILE).read_text()
    log = open_log(tmp_path)
    assert log.recovery_point == 1  # trusted: closed cleanly
    log.truncate_to(0)
    log.close()  # empty again, but its state file must record the clean stop
    assert "clean_shutdown 1" in (log.directory / STATE_FILE).read_text()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_segments_found_on_disk_are_synced_by_the_first_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crashed process's writes may still be only in the page cache: a flush after
    recovery must fsync them before the recovery point moves past them."""
    log = open_log(tmp_path, segment_bytes=300)
    for i in range(10):
        append(log, batch(2, ts=i))
    n_segments = len(log.segments)
    for segment in log.segments:  # a crash: nothing flushed, no state written
        segment._drop_indexes()
        segment.file.close()
    log = open_log(tmp_path, segment_bytes=300)
    assert log.recovery_point == 0
    synced = _count_fsyncs(monkeypatch)
    log.flush()
    assert log.recovery_point == log.log_end_offset
    assert sum(name.endswith(".log") for name in synced) == n_segments


def test_flush_messages_moves_recovery_point(tmp_path: Path) -> None:
    log = open_log(tmp_path, flush_messages=3)
    append(log, batch(2))
    assert log.recovery_point == 0
    append(log, batch(1))
    assert log.recovery_point == 3


def test_flush_ms_and_rolled_segments(tmp_path: Path) -> None:
    log = PartitionLog.open(
        tmp_path / "t-0", LogConfig(flush_ms=1_000, segment_bytes=150), now_ms=0
    )
    append(log, batch(1, size=100), now_ms=500)
    assert log.recovery_point == 0
    append(log, batch(1, size=100), now_ms=1_000)
    assert log.recovery_point == 2
    log.config.flush_ms = 10**12
    append(log, batch(1, size=100), now_ms=1_100)
    append(log, batch(1, size=100), now_ms=1_200)
    assert log.recovery_point == 2
    log.maybe_flush(1_300)  # flushes the rolled segments, not the active one
    assert log.recovery_point == log.segments[-1].base_offset == 3


def test_delete_removes_folder(ten_batches: PartitionLog) -> None:
    directory = ten_batches.directory
    ten_batches.delete()
    assert not directory.exists()


def test_config_from_topic_configs() -> None:
    config = LogConfig.from_topic_configs(
        {
            "segment.bytes": "1024",
            "retention.ms": -1,
            "cleanup.policy": ["compact", "delete"],
            "x": 1,
        }
    )
    assert config.segment_bytes == 1024
    assert config.retention_ms == -1
    assert config.cleanup_policy == "compact,delete"
    assert config.deletes


# ---- a model check of appends, reads, truncation and retention --------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 4), st.integers(0, 200)),
        st.tuples(st.just("read"), st.integers(0, 10**6), st.integers(1, 2_000)),
        st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
        st.tuples(st.just("delete_records"), st.integers(0, 10**6), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0), st.just(0)),
        st.tuples(st.just("crash"), st.just(0), st.just(0)),
        st.tuples(st.just("flush_rolled"), st.just(0), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, segment_bytes=st.integers(150, 1_500), interval=st.integers(0, 500))
def test_log_matches_model(
    ops: list[tuple[str, int, int]], segment_bytes: int, interval: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = {"segment_bytes": segment_bytes, "index_interval_bytes": interval}
        # Roll flushes wait for a "flush_rolled" step, as a worker thread would.
        jobs: list[FlushJob] = []
        log = open_log(Path(tmp), **config)
        log.roll_flusher = jobs.append
        model: list[tuple[int, int, bytes]] = []  # (base offset, next offset, batch bytes[16:])
        start = end = 0
        for op, a, b in ops:
            if op == "append":
                data = batch(a, size=b)
                assert append(log, data) == end
                model.append((end, end + a, bytes(data[16:])))
                end += a
            elif op == "read":
                committed(log)
                offset = start + a % (end - start + 1)
                got = log.read(offset, b)
                expected = [m for m in model if m[1] > offset]
                headers = headers_of(got.tobytes())
                assert [h.base_offset for h in headers] == [m[0] for m in expected[: len(headers)]]
                if expected:
                    assert headers, "at least one batch"
                    assert got.size <= b or len(headers) == 1
                    if len(headers) < len(expected):
                        assert (
                            got.size
                            + headers_of(log.read(headers[-1].next_offset, 1).tobytes())[0].size
                            > b
                        )
            elif op == "truncate" and model:
                cut = model[a % len(model)][0]
                log.truncate_to(cut)
                if cut < start:
                    model, start = [], cut
                else:
                    model = [m for m in model if m[0] < cut]
                end = cut
            elif op == "delete_records":
                committed(log)
                target = start + a % (end - start + 1)
                assert log.delete_records_before(target) == max(start, target)
                start = max(start, target)
                model = [m for m in model if m[1] > start]
            elif op == "reopen":
                log.close()
                for job in jobs:  # finishing after the close: nothing moves
                    job.run()
                    job.complete()
                jobs.clear()
                log = open_log(Path(tmp), **config)
                log.roll_flusher = jobs.append
            elif op == "crash":
                for segment in log.segments:
                    segment._drop_indexes()
                    if segment._file is not None:
                        segment._file.close()
                for job in jobs:
                    job.release()
                jobs.clear()
                log = open_log(Path(tmp), **config)
                log.roll_flusher = jobs.append
            elif op == "flush_rolled":
                for job in jobs:
                    job.run()
                    job.complete()
                jobs.clear()
                assert log.recovery_point <= log.log_end_offset
            assert (log.log_start_offset, log.log_end_offset) == (start, end)
        committed(log)
        got = read_all(log)
        assert [g[16:] for g in got] == [m[2] for m in model]
        log.close()


def test_read_result_type(ten_batches: PartitionLog) -> None:
    assert isinstance(ten_batches.read(0, 10), LogRead)
