"""The log cleaner's core (kwire.log.cleaner) and the segment swap (PartitionLog.plan_cleaning,
install_cleaned, and open()'s completion of an interrupted swap). Sans-IO: a PartitionLog on
tmp_path, batches built with build_batch / build_control_batch."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from kwire import codecs
from kwire.coordinator.producer_state import ProducerStateManager
from kwire.log.cleaner import (
    CLEANED_SUFFIX,
    SWAP_SUFFIX,
    CleaningResult,
    OffsetMap,
    clean,
    dedupe_capacity,
)
from kwire.log.log import LogConfig, PartitionLog
from kwire.log.segment import (
    DELETED_SUFFIX,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
    segment_file_name,
)
from kwire.protocol.records import (
    DELETE_HORIZON_FLAG,
    BatchHeader,
    Record,
    build_batch,
    build_control_batch,
    iter_records,
    parse_batch_header,
    validate_batches,
)

NOW = 1_700_000_000_000
DAY = 86_400_000


def make_log(directory: Path, **config: object) -> PartitionLog:
    settings: dict[str, object] = dict(
        segment_bytes=4096, index_interval_bytes=256, cleanup_policy="compact", file_delete_delay_ms=0
    )
    settings.update(config)
    return PartitionLog.open(directory, LogConfig(**settings), now_ms=NOW)  # type: ignore[arg-type]


def append(log: PartitionLog, batch: bytes) -> int:
    buf = bytearray(batch)
    return log.append(buf, validate_batches(buf), now_ms=NOW)


def kv(key: str | None, value: str | None) -> tuple[bytes | None, bytes | None, tuple[()], int]:
    return (
        None if key is None else key.encode(),
        None if value is None else value.encode(),
        (),
        NOW + 1000,
    )


def read_batches(log: PartitionLog) -> list[tuple[BatchHeader, list[Record]]]:
    data = log.read(log.log_start_offset, 1 << 30).tobytes()
    out = []
    position = 0
    while position < len(data):
        header = parse_batch_header(data, position)
        out.append((header, list(iter_records(data[position : position + header.size]))))
        position += header.size
    return out


def data_records(log: PartitionLog) -> list[tuple[int, bytes | None, bytes | None]]:
    return [
        (r.offset, r.key, r.value)
        for header, records in read_batches(log)
        if not header.is_control
        for r in records
    ]


def latest_per_key(records: list[tuple[int, bytes | None, bytes | None]]) -> list[tuple[int, bytes | None, bytes | None]]:
    last: dict[bytes, tuple[int, bytes | None, bytes | None]] = {}
    for record in records:
        if record[1] is not None:
            last[record[1]] = record
    return sorted(last.values())


def seal(log: PartitionLog) -> None:
    """Everything committed and on disk, the data in closed segments."""
    log.roll(NOW)
    log.high_watermark = log.log_end_offset
    log.flush()


def clean_log(
    log: PartitionLog,
    first_dirty: int = 0,
    *,
    capacity: int = 1 << 20,
    now_ms: int = NOW,
    aborted: tuple[tuple[int, int, int], ...] = (),
    active: dict[int, int] | None = None,
) -> CleaningResult:
    plan = log.plan_cleaning(first_dirty, log.log_end_offset, aborted_txns=aborted, active_producers=active or {})
    assert plan is not None
    result = clean(plan, OffsetMap(capacity), now_ms=now_ms)
    assert log.install_cleaned(result, now_ms=now_ms)
    return result


def fill_changelog(log: PartitionLog, keys: int, updates: int, per_batch: int = 5) -> None:
    n = 0
    while n < updates:
        records = [kv(f"k{(n + i) * 7 % keys}", f"v{n + i}") for i in range(min(per_batch, updates - n))]
        append(log, build_batch(records))
        n += len(records)


# ---- the offset map -----------------------------------------------------------------


def test_dedupe_capacity_and_offset_map() -> None:
    assert dedupe_capacity(134_217_728, 1, 0.9) == int(134_217_728 // 128 * 0.9)
    assert dedupe_capacity(134_217_728, 4, 0.9) == int(134_217_728 // 4 // 128 * 0.9)
    offset_map = OffsetMap(2)
    assert offset_map.get(b"a") == -1 and offset_map.latest_offset == -1 and not offset_map.full
    offset_map.put(b"a", 3)
    offset_map.put(b"a", 5)
    long_key = b"x" * 40
    offset_map.put(long_key, 7)
    assert (offset_map.get(b"a"), offset_map.get(long_key), len(offset_map)) == (5, 7, 2)
    assert offset_map.full and offset_map.latest_offset == 7
    assert offset_map.get(b"x" * 39 + b"y") == -1  # a different long key: its own digest
    offset_map.put(b"a", 9)  # an existing key still updates
    with pytest.raises(OverflowError):
        offset_map.put(b"b", 10)
    offset_map.clear()
    assert len(offset_map) == 0 and offset_map.latest_offset == -1


# ---- compaction ----------------------------------------------------------------------


def test_latest_value_per_key_kept_segments_grouped(tmp_path: Path) -> None:
    log = make_log(tmp_path / "t-0", segment_bytes=2048)
    fill_changelog(log, keys=10, updates=400)
    seal(log)
    append(log, build_batch([kv("k1", "in the active segment")]))
    before = data_records(log)
    segments_before = len(log.segments)
    active = log.segments[-1]
    active_size = active.size
    start, end = log.log_start_offset, log.log_end_offset

    result = clean_log(log)

    after = data_records(log)
    cleaned_part = [r for r in after if r[0] < active.base_offset]
    assert cleaned_part == latest_per_key([r for r in before if r[0] < active.base_offset])
    assert [r for r in after if r[0] >= active.base_offset] == [r for r in before if r[0] >= active.base_offset]
    offsets = [r[0] for r in after]
    assert offsets == sorted(set(offsets))
    assert (log.log_start_offset, log.log_end_offset) == (start, end)
    assert log.segments[-1] is active and active.size == active_size
    # Groups are made by the segments' sizes before cleaning (as Kafka): full segments
    # shrink in place, and merge in the next pass.
    assert segments_before > 5 and len(log.segments) == segments_before
    assert result.end_offset == active.base_offset
    assert result.stats.records_read == 400 and result.stats.records_kept == 10
    again = clean_log(log, result.end_offset)
    assert len(again.groups) == 1 and len(log.segments) == 2
    assert data_records(log) == after
    # Every offset still reads: a fetch in a removed range gets the next batch.
    for offset in range(0, end, 37):
        assert log.read(offset, 100).size > 0
    assert not [p for p in log.directory.iterdir() if p.name.endswith((CLEANED_SUFFIX, SWAP_SUFFIX))]
    # Reopened (cleanly, then uncleanly) the log is the same.
    log.close()
    for clean_shutdown in (None, False):
        log = PartitionLog.open(tmp_path / "t-0", log.config, now_ms=NOW, clean_shutdown=clean_shutdown)
        assert data_records(log) == after
        assert log.log_end_offset == end
        log.close()


def test_many_segments_are_grouped_by_segment_bytes(tmp_path: Path) -> None:
    log = make_log(tmp_path / "t-0", segment_bytes=600)
    # Distinct keys: nothing is removed, so groups are bounded by the segments' sizes.
    for i in range(60):
        append(log, build_batch([kv(f"key-{i}-{j}", "x" * 20) for j in range(3)]))
    seal(log)
    before = data_records(log)
    closed = len(log.segments) - 1
    log.config.segment_bytes = 2048  # segment.bytes raised: small segments merge
    result = clean_log(log)
    assert data_records(log) == before
    assert 1 < len(result.groups) < closed
    for group in result.groups:
        assert sum(result.plan.sources[i].size for i in group.replaced) <= 2048
    assert [s.base_offset for s in log.segments[:-1]] == [g.base_offset for g in result.groups]


def test_bounded_offset_map_cleans_in_passes(tmp_path: Path) -> None:
    one = make_log(tmp_path / "one-0")
    many = make_log(tmp_path / "many-0")
    for log in (one, many):
        fill_changelog(log, keys=40, updates=600, per_batch=4)
        seal(log)
    clean_log(one)
    first_dirty, passes = 0, 0
    while first_dirty < many.segments[-1].base_offset:
        result = clean_log(many, first_dirty, capacity=12)
        assert result.end_offset > first_dirty
        first_dirty, passes = result.end_offset, passes + 1
    assert passes > 3
    assert data_records(many) == data_records(one) == latest_per_key(data_records(one))


def test_tombstones_kept_until_the_delete_horizon_and_keyless_records_dropped(tmp_path: Path) -> None:
    log = make_log(tmp_path / "t-0", delete_retention_ms=DAY)
    append(log, build_batch([kv("a", "1"), kv("b", "1"), kv(None, "no key")]))
    append(log, build_batch([kv("a", None), kv("c", "1")]))  # a is deleted
    seal(log)

    clean_log(log, now_ms=NOW)
    batches = read_batches(log)
    assert data_records(log) == [(1, b"b", b"1"), (3, b"a", None), (4, b"c", b"1")]
    tombstone_batch = next(h for h, rs in batches if any(r.value is None for r in rs))
    assert tombstone_batch.attributes & DELETE_HORIZON_FLAG
    assert tombstone_batch.base_timestamp == NOW + DAY
    # Record timestamps are unchanged (deltas relative to the horizon).
    assert {r.timestamp for _, rs in batches for r in rs} == {NOW + 1000}

    clean_log(log, now_ms=NOW + DAY - 1)  # not yet
    assert (3, b"a", None) in data_records(log)
    clean_log(log, now_ms=NOW + DAY)
    assert data_records(log) == [(1, b"b", b"1"), (4, b"c", b"1")]


@pytest.mark.parametrize("codec", [codecs.GZIP, codecs.SNAPPY, codecs.LZ4, codecs.ZSTD])
def test_compression_and_producer_fields_kept(tmp_path: Path, codec: int) -> None:
    log = make_log(tmp_path / "t-0")
    append(
        log,
        build_batch(
            [kv("a", "old"), kv("b", "keep"), kv("c", "old")],
            compression=codec,
            producer_id=42,
            producer_epoch=3,
            base_sequence=10,
            partition_leader_epoch=0,
        ),
    )
    append(log, build_batch([kv("a", "new"), kv("c", "new")], compression=codec))
    seal(log)
    clean_log(log)
    (first, first_records), (second, _) = read_batches(log)
    assert [(r.offset, r.key, r.value) for r in first_records] == [(1, b"b", b"keep")]
    assert first.compression == codec and second.compression == codec
    assert (first.base_offset, first.last_offset_delta, first.records_count) == (0, 2, 1)
    assert (first.producer_id, first.producer_epoch, first.base_sequence) == (42, 3, 10)
    assert first.last_sequence == 12
    assert data_records(log) == [(1, b"b", b"keep"), (3, b"a", b"new"), (4, b"c", b"new")]


def test_last_batch_of_an_active_producer_kept_empty_and_its_sequence_survives_a_crash(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log = make_log(directory)
    append(log, build_batch([kv("a", "1"), kv("b", "1")], producer_id=7, producer_epoch=1, base_sequence=0))
    append(log, build_batch([kv("a", "2"), kv("b", "2")], producer_id=7, producer_epoch=1, base_sequence=2))
    append(log, build_batch([kv("c", "1")], producer_id=8, producer_epoch=0, base_sequence=0))
    append(log, build_batch([kv("a", "3"), kv("b", "3"), kv("c", "2")]))  # supersedes both producers
    seal(log)
    producers = ProducerStateManager()
    producers.rebuild(log.batch_headers())
    assert producers.last_data_offsets() == {7: 3, 8: 4}

    clean_log(log, active={7: 3})  # producer 8 has expired: its batch may go
    batches = read_batches(log)
    empty = [h for h, rs in batches if not rs and h.producer_id >= 0]
    assert len(empty) == 1
    assert (empty[0].base_offset, empty[0].last_offset, empty[0].producer_id) == (2, 3, 7)
    assert (empty[0].producer_epoch, empty[0].base_sequence, empty[0].records_count) == (1, 2, 0)
    assert not [h for h, _ in batches if h.producer_id == 8]
    assert data_records(log) == [(5, b"a", b"3"), (6, b"b", b"3"), (7, b"c", b"2")]

    # An unclean stop: the state is rebuilt from the log, and the producer goes on.
    shutil.copytree(directory, tmp_path / "crash" / "t-0")
    crashed = PartitionLog.open(tmp_path / "crash" / "t-0", log.config, now_ms=NOW, clean_shutdown=False)
    rebuilt = ProducerStateManager()
    rebuilt.rebuild(crashed.batch_headers(crashed.log_start_offset))
    assert rebuilt.next_sequence(7, 1) == 4
    assert rebuilt.check(parse_batch_header(build_batch([kv("a", "4")], producer_id=7, producer_epoch=1, base_sequence=4))) is None


def test_transactions_aborted_removed_committed_kept_markers_until_safe(tmp_path: Path) -> None:
    log = make_log(tmp_path / "t-0", delete_retention_ms=DAY)
    committed, aborted = 100, 200
    append(log, build_batch([kv("x", "c1"), kv("y", "c1")], producer_id=committed, producer_epoch=0, base_sequence=0, transactional=True))
    append(log, build_batch([kv("x", "a1"), kv("z", "a1")], producer_id=aborted, producer_epoch=0, base_sequence=0, transactional=True))
    commit_at = append(log, build_control_batch(committed, 0, True, 1, timestamp_ms=NOW))
    abort_at = append(log, build_control_batch(aborted, 0, False, 1, timestamp_ms=NOW))
    seal(log)
    txns = ((aborted, 2, abort_at),)

    clean_log(log, aborted=txns)
    assert data_records(log) == [(0, b"x", b"c1"), (1, b"y", b"c1")]
    markers = {h.base_offset: h for h, _ in read_batches(log) if h.is_control}
    assert set(markers) == {commit_at, abort_at}
    assert not markers[commit_at].attributes & DELETE_HORIZON_FLAG  # its data is still there
    assert markers[abort_at].attributes & DELETE_HORIZON_FLAG  # nothing of its transaction is left
    assert markers[abort_at].base_timestamp == NOW + DAY

    # The committed data is superseded: its marker gets a horizon, then goes after it.
    append(log, build_batch([kv("x", "later"), kv("y", "later")]))
    seal(log)
    clean_log(log, aborted=txns, now_ms=NOW + 1)
    markers = {h.base_offset: h for h, _ in read_batches(log) if h.is_control}
    assert set(markers) == {commit_at, abort_at}
    assert markers[commit_at].base_timestamp == NOW + 1 + DAY
    result = clean_log(log, aborted=txns, now_ms=NOW + DAY + 1)
    markers = {h.base_offset: h for h, _ in read_batches(log) if h.is_control}
    assert set(markers) == set()
    # Reported, so that the aborted-transaction index drops the abort with its marker.
    assert sorted(result.stats.removed_markers) == [commit_at, abort_at]
    assert not log.has_control_batch_at(abort_at)
    assert data_records(log) == [(6, b"x", b"later"), (7, b"y", b"later")]


def test_a_producers_second_aborted_transaction_stays_out_of_the_map(tmp_path: Path) -> None:
    """The same producer aborts twice; the first abort is in the clean section (its
    marker not seen by the offset map's walk): the second's records must still stay
    out of the map, or they would shadow the committed values of their keys."""
    log = make_log(tmp_path / "t-0", delete_retention_ms=DAY)
    pid = 300
    append(log, build_batch([kv("x", "a1")], producer_id=pid, producer_epoch=0, base_sequence=0, transactional=True))
    first_abort = append(log, build_control_batch(pid, 0, False, 1, timestamp_ms=NOW))
    append(log, build_batch([kv("x", "v1")]))
    seal(log)
    first_dirty = log.log_end_offset
    second_first = append(log, build_batch([kv("x", "a2")], producer_id=pid, producer_epoch=0, base_sequence=1, transactional=True))
    second_abort = append(log, build_control_batch(pid, 0, False, 1, timestamp_ms=NOW))
    seal(log)
    txns = ((pid, 0, first_abort), (pid, second_first, second_abort))
    clean_log(log, first_dirty, aborted=txns)
    # v1 survives: the aborted a2 (a later offset of x) never entered the map.
    assert data_records(log) == [(2, b"x", b"v1")]


def test_nothing_to_plan_without_a_closed_segment(tmp_path: Path) -> None:
    log = make_log(tmp_path / "t-0")
    append(log, build_batch([kv("a", "1")]))
    log.high_watermark = log.log_end_offset
    assert log.plan_cleaning(0, log.log_end_offset) is None
    log.roll(NOW)
    # Rolled, but neither committed nor flushed: still nothing.
    log.high_watermark = 0
    assert log.plan_cleaning(0, log.log_end_offset) is None
    log.high_watermark = log.log_end_offset
    log.flush()
    plan = log.plan_cleaning(0, 10**9)
    assert plan is not None and plan.first_uncleanable_offset == log.segments[-1].base_offset
    plan.close()
    plan.close()


# ---- crash safety ----------------------------------------------------------------------


def _names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def _copy_and_reopen(directory: Path, target: Path, config: LogConfig) -> PartitionLog:
    shutil.copytree(directory, target / directory.name)
    return PartitionLog.open(target / directory.name, config, now_ms=NOW, clean_shutdown=False)


@pytest.mark.parametrize("crash_at", ["cleaned", "swap", "some_deleted", "all_deleted", "some_final", "final"])
def test_a_crash_at_any_step_of_the_swap_leaves_the_old_or_the_new_segments(tmp_path: Path, crash_at: str) -> None:
    directory = tmp_path / "t-0"
    log = make_log(directory, segment_bytes=1500)
    fill_changelog(log, keys=6, updates=300)
    seal(log)
    append(log, build_batch([kv("k0", "tail")]))
    old = data_records(log)
    latest = latest_per_key(old)
    plan = log.plan_cleaning(0, log.log_end_offset)
    assert plan is not None
    result = clean(plan, OffsetMap(1000), now_ms=NOW)
    assert len(result.groups) >= 2

    # The reference: the same pass installed normally, on a copy.
    shutil.copytree(directory, tmp_path / "ref" / "t-0")
    ref = PartitionLog.open(tmp_path / "ref" / "t-0", log.config, now_ms=NOW, clean_shutdown=False)
    ref.high_watermark = ref.log_end_offset
    clean_log(ref)
    new = data_records(ref)
    assert new != old and latest_per_key(new) == latest

    # install_cleaned's steps by hand, stopping at `crash_at`.
    suffixes = (INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX)
    expect = old
    if crash_at != "cleaned":
        for group in result.groups:
            for suffix in suffixes:
                name = segment_file_name(group.base_offset, suffix)
                os.replace(directory / (name + CLEANED_SUFFIX), directory / (name + SWAP_SUFFIX))
        expect = new
    replaced = [plan.sources[i].base_offset for g in result.groups for i in g.replaced]
    if crash_at in ("some_deleted", "all_deleted", "some_final", "final"):
        for base in replaced[: 2 if crash_at == "some_deleted" else None]:
            for suffix in suffixes:
                name = segment_file_name(base, suffix)
                if (directory / name).exists():  # a small segment may have no offset index
                    os.replace(directory / name, directory / (name + DELETED_SUFFIX))
    if crash_at in ("some_final", "final"):
        groups = result.groups[:1] if crash_at == "some_final" else result.groups
        for group in groups:
            # "some_final": the first group's indexes take their names, its log not yet.
            for suffix in suffixes[:2] if crash_at == "some_final" else suffixes:
                name = segment_file_name(group.base_offset, suffix)
                os.replace(directory / (name + SWAP_SUFFIX), directory / name)

    crashed = _copy_and_reopen(directory, tmp_path / "crash", log.config)
    assert data_records(crashed) == expect
    assert latest_per_key(data_records(crashed)) == latest
    left = _names(crashed.directory)
    assert not [n for n in left if n.endswith((CLEANED_SUFFIX, SWAP_SUFFIX, DELETED_SUFFIX))]
    assert crashed.log_end_offset == log.log_end_offset
    # It reopens the same again, and reads by every offset.
    crashed.close()
    again = PartitionLog.open(crashed.directory, log.config, now_ms=NOW, clean_shutdown=False)
    assert data_records(again) == expect
    again.close()
    result.discard()


def test_a_junk_swap_file_is_not_a_committed_swap(tmp_path: Path) -> None:
    directory = tmp_path / "t-0"
    log = make_log(directory)
    fill_changelog(log, keys=3, updates=100)
    seal(log)
    before = data_records(log)
    log.close()
    (directory / (segment_file_name(0, LOG_SUFFIX) + SWAP_SUFFIX)).write_bytes(b"junk")
    (directory / (segment_file_name(0, INDEX_SUFFIX) + CLEANED_SUFFIX)).write_bytes(b"junk")
    log = PartitionLog.open(directory, log.config, now_ms=NOW, clean_shutdown=False)
    assert data_records(log) == before
    assert not [n for n in _names(directory) if n.endswith((CLEANED_SUFFIX, SWAP_SUFFIX))]


# ---- install refused -------------------------------------------------------------------


@pytest.mark.parametrize("meanwhile", ["delete_records", "retention", "truncation"])
def test_install_refused_when_the_segments_changed_meanwhile(tmp_path: Path, meanwhile: str) -> None:
    log = make_log(tmp_path / "t-0", cleanup_policy="compact,delete", retention_ms=DAY)
    fill_changelog(log, keys=5, updates=200)
    seal(log)
    append(log, build_batch([kv("k1", "tail")]))
    log.high_watermark = log.log_end_offset
    before = data_records(log)
    plan = log.plan_cleaning(0, log.log_end_offset)
    assert plan is not None
    result = clean(plan, OffsetMap(1000), now_ms=NOW)
    cleaned = [p for g in result.groups for p in g.paths]
    assert all(p.exists() for p in cleaned)
    if meanwhile == "delete_records":
        log.delete_records_before(log.segments[1].base_offset, now_ms=NOW)
    elif meanwhile == "retention":
        assert log.apply_retention(NOW + 2 * DAY) > 0
    else:
        log.truncate_to(log.segments[1].base_offset + 1, now_ms=NOW)
    expected = data_records(log)
    assert log.install_cleaned(result, now_ms=NOW) is False
    assert not any(p.exists() for p in cleaned)
    assert all(source.fd == -1 for source in plan.sources)
    assert data_records(log) == expected and len(expected) < len(before)


def test_install_after_a_roll_meanwhile(tmp_path: Path) -> None:
    log = make_log(tmp_path / "t-0")
    fill_changelog(log, keys=5, updates=200)
    seal(log)
    plan = log.plan_cleaning(0, log.log_end_offset)
    assert plan is not None
    result = clean(plan, OffsetMap(1000), now_ms=NOW)
    append(log, build_batch([kv("k1", "new")]))  # appends and a roll do not matter
    seal(log)
    assert log.install_cleaned(result, now_ms=NOW)
    assert data_records(log)[-1] == (200, b"k1", b"new")


# ---- throughput --------------------------------------------------------------------------


@pytest.mark.skipif(not os.environ.get("KWIRE_CLEANER_BENCH"), reason="set KWIRE_CLEANER_BENCH=1 (about a minute)")
def test_clean_throughput(tmp_path: Path) -> None:
    """1,000,000 records of 100 bytes over 10,000 keys, 100 records a batch."""
    log = make_log(tmp_path / "t-0", segment_bytes=64 << 20, index_interval_bytes=4096)
    value = b"v" * 84  # with a 10-byte key and the record's framing: 100 bytes a record
    template = [(None, value, (), NOW)] * 100
    n = 0
    while n < 1_000_000:
        records = [(b"key-%05d" % ((n + i) * 7919 % 10_000), r[1], r[2], r[3]) for i, r in enumerate(template)]
        append(log, build_batch(records))
        n += 100
    seal(log)
    size = sum(s.size for s in log.segments)
    plan = log.plan_cleaning(0, log.log_end_offset)
    assert plan is not None
    started = time.perf_counter()
    result = clean(plan, OffsetMap(dedupe_capacity(128 << 20, 1, 0.9)), now_ms=NOW)
    seconds = time.perf_counter() - started
    assert log.install_cleaned(result, now_ms=NOW)
    assert result.stats.records_read == 1_000_000 and result.stats.records_kept == 10_000
    assert len(data_records(log)) == 10_000
    print(
        f"\nclean(): {1_000_000 / seconds:,.0f} records/s, {size / 1e6 / seconds:.1f} MB/s "
        f"({size / 1e6:.0f} MB, {seconds:.2f} s; map {result.stats.map_records_read} records)"
    )


def test_io_max_bytes_per_second_paces_a_pass(tmp_path: Path) -> None:
    """log.cleaner.io.max.bytes.per.second: a pass reads no faster than its share
    (a lower bound on time only: a slow machine cannot fail it)."""
    log = make_log(tmp_path / "t-0", segment_bytes=200_000)
    fill_changelog(log, keys=100, updates=20_000)
    seal(log)
    plan = log.plan_cleaning(0, log.log_end_offset)
    assert plan is not None
    rate = 1_000_000.0
    plan.max_bytes_per_second = rate
    result = clean(plan, OffsetMap(1 << 20), now_ms=NOW)
    read = result.stats.map_bytes_read + result.stats.bytes_read
    assert read > rate / 2
    assert result.stats.seconds >= 0.8 * read / rate - 0.3
    assert log.install_cleaned(result, now_ms=NOW)
