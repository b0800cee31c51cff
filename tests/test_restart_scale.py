"""Issue 11: a restart of many partitions writes no per-partition file, and the
broker-wide cache of open segment files (kwire/log/open_files.py) bounds the fds and
index memory of inactive segments without ever closing a file a fetch still holds.

The restart test runs a real broker process at 2,000 partitions (the 10,000-partition
timing is bench/restart.py's); the cache tests drive a PartitionLog on real disk."""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from test_clients import create_topic

from kwire.broker import CLEAN_SHUTDOWN_FILE, Broker
from kwire.config import BrokerConfig
from kwire.log import LogConfig, PartitionLog
from kwire.log.checkpoint import STATE_FILE, LogState
from kwire.log.open_files import open_segments
from kwire.protocol.records import build_batch, validate_batches

TIMEOUT = 30


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def small_cache() -> Iterator[None]:
    """The process's cache bounded at 8 files and 4 KiB of indexes for the test."""
    old = open_segments.max_files, open_segments.max_index_bytes
    open_segments.clear()
    open_segments.configure(max_files=8, max_index_bytes=4096)
    try:
        yield
    finally:
        open_segments.clear()
        open_segments.configure(max_files=old[0], max_index_bytes=old[1])


def many_segment_log(directory: Path, segments: int) -> tuple[PartitionLog, dict[int, bytes]]:
    """A log of `segments` segments of ~4 batches each (offset -> the batch holding it)."""
    log = PartitionLog.open(directory, LogConfig(segment_bytes=1000, index_interval_bytes=100))
    batches: dict[int, bytes] = {}
    i = 0
    while len(log.segments) < segments:
        data = bytearray(build_batch([(b"k%d" % i, b"v" * 150, (), 1_000 + i) for _ in range(2)]))
        base = log.append(data, validate_batches(data), now_ms=0)
        batches[base] = batches[base + 1] = bytes(data)
        i += 1
    log.high_watermark = log.log_end_offset
    return log, batches


def test_reads_all_over_many_segments_keep_fds_and_index_memory_bounded(tmp_path: Path, small_cache: None) -> None:
    log, batches = many_segment_log(tmp_path / "t-0", 60)
    log.close()
    before = open_fds()
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(segment_bytes=1000, index_interval_bytes=100))
    log.high_watermark = log.log_end_offset
    assert open_fds() <= before + 1  # start-up opens the active segment only
    rng = random.Random(11)
    offsets = list(batches)
    peak = 0
    for _ in range(1500):
        offset = rng.choice(offsets)
        read = log.read(offset, 1)
        assert read.tobytes() == batches[offset]
        del read
        peak = max(peak, open_fds())
        assert len(open_segments) <= 8
        assert open_segments.index_bytes <= 4096
    # 8 cached inactive segments plus the active one's fd, whatever was read.
    assert peak <= before + 1 + 8, (before, peak)
    assert open_segments.evictions > 100
    # Everything still answers correctly after all that eviction: timestamps too.
    for segment in log.segments[:-1]:
        assert log.offset_for_timestamp(segment.max_timestamp) is not None
    assert [h.base_offset for h in log.batch_headers()] == sorted(set(o - o % 2 for o in offsets))
    log.close()


def test_region_taken_before_an_eviction_reads_after_it(tmp_path: Path, small_cache: None) -> None:
    log, batches = many_segment_log(tmp_path / "t-0", 30)
    first = log.segments[0]
    read = log.read(0, 1)
    [region] = read.regions
    assert region.file is first._file
    fds = open_fds()
    # Reading the other segments evicts the first: its reference goes, not the file.
    for segment in log.segments[1:-1]:
        assert log.read(segment.base_offset, 1).tobytes() == batches[segment.base_offset]
    assert first._file is None and first not in open_segments
    assert not region.file.closed
    assert region.tobytes() == batches[0]
    # The next read of the evicted segment opens its file again, and reads the same.
    assert log.read(0, 1).tobytes() == batches[0]
    assert first._file is not None and first._file is not region.file
    # The region's file closes when the region goes (CPython: at once).
    held = region.file
    del read, region
    assert held.closed is False  # still ours here
    del held
    assert open_fds() <= fds + 1
    log.close()


def test_a_header_scan_survives_eviction_of_its_segment(tmp_path: Path, small_cache: None) -> None:
    log, batches = many_segment_log(tmp_path / "t-0", 30)
    scanned = []
    for header in log.batch_headers(0):
        scanned.append(header.base_offset)
        # Meanwhile reads of every other segment evict the one being scanned.
        other = log.segments[(len(scanned) * 7) % (len(log.segments) - 1)]
        log.read(other.base_offset, 1)
    assert scanned == sorted(set(o - o % 2 for o in batches))
    log.close()


def test_worker_threads_never_evict_the_main_thread_restores_the_bound(tmp_path: Path, small_cache: None) -> None:
    log, batches = many_segment_log(tmp_path / "t-0", 20)
    inactive = log.segments[:-1]
    worker = threading.Thread(target=lambda: [segment.file for segment in inactive])
    worker.start()
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    # Recorded, not evicted: a worker (a partition opened off the loop) drops nothing
    # the event loop may be using.
    assert len(open_segments) == len(inactive) and all(s._file is not None for s in inactive)
    assert log.read(0, 1).tobytes() == batches[0]
    assert len(open_segments) <= 8
    assert sum(s._file is not None for s in inactive) <= 8
    log.close()


def test_index_files_of_a_trusted_segment_are_checked_when_first_read(tmp_path: Path) -> None:
    """Start-up reads no index of an inactive segment; a damaged one is rebuilt on use."""
    directory = tmp_path / "t-0"
    log, batches = many_segment_log(directory, 5)
    log.close()
    second = sorted(directory.glob("*.index"))[1]
    size = second.stat().st_size
    second.write_bytes(b"\xff" * size)  # garbage entries: offsets and positions out of range
    log = PartitionLog.open(directory, LogConfig(segment_bytes=1000, index_interval_bytes=100))
    assert second.read_bytes() == b"\xff" * size  # untouched by start-up
    log.high_watermark = log.log_end_offset
    for offset, batch in batches.items():
        assert log.read(offset, 1).tobytes() == batch
    assert second.stat().st_size == size and second.read_bytes() != b"\xff" * size
    log.close()


# ---- the broker's clean-shutdown marker -------------------------------------------------


def broker_config(log_dir: Path) -> BrokerConfig:
    return BrokerConfig({"log.dirs": str(log_dir), "listeners": "PLAINTEXT://127.0.0.1:0"})


def append_to(broker: Broker, topic: str, partitions: int) -> None:
    for index in range(partitions):
        partition = broker.partition(topic, index)
        assert partition is not None
        data = bytearray(build_batch([(b"k", b"v" * 20)]))
        partition.append(data, validate_batches(data), 1_000)


def test_only_logs_the_marker_names_are_trusted(tmp_path: Path) -> None:
    broker = Broker(broker_config(tmp_path))
    broker.open()
    broker.create_topic("t", 3, 1)
    append_to(broker, "t", 3)
    broker.close()
    marker = tmp_path / CLEAN_SHUTDOWN_FILE
    names = marker.read_text().splitlines()
    assert sorted(names[1:]) == ["t-0", "t-1", "t-2"]
    # t-1 was not closed by that shutdown (say, a replica not open then): its own
    # record, which says clean, is not trusted without the marker's word.
    marker.write_text("\n".join(n for n in names if n != "t-1") + "\n")
    assert LogState.read(tmp_path / "t-1").clean_shutdown  # type: ignore[union-attr]
    broker = Broker(broker_config(tmp_path))
    broker.open()
    trusted = {i: broker.partition("t", i).log.had_clean_shutdown for i in range(3)}  # type: ignore[union-attr]
    assert trusted == {0: True, 1: False, 2: True}
    assert not marker.exists()
    assert all(broker.partition("t", i).log_end_offset == 1 for i in range(3))  # type: ignore[union-attr]
    broker.close()


def test_a_crash_after_a_clean_start_trusts_nothing(tmp_path: Path) -> None:
    broker = Broker(broker_config(tmp_path))
    broker.open()
    broker.create_topic("t", 2, 1)
    append_to(broker, "t", 2)
    broker.close()
    broker = Broker(broker_config(tmp_path))
    broker.open()  # clean: the logs' own records are left saying so...
    assert LogState.read(tmp_path / "t-0").clean_shutdown  # type: ignore[union-attr]
    append_to(broker, "t", 2)
    for partition in broker.all_partitions():  # ...and the process dies (no close)
        for segment in partition.log.segments:
            segment._drop_indexes()
            if segment._file is not None:
                segment._file.close()
    broker = Broker(broker_config(tmp_path))
    broker.open()  # ...but without the marker nothing is trusted: recovered, data kept
    for index in range(2):
        partition = broker.partition("t", index)
        assert partition is not None and not partition.log.had_clean_shutdown
        assert partition.log_end_offset == 2
    broker.close()


def test_a_marker_of_an_earlier_version_trusts_each_logs_record(tmp_path: Path) -> None:
    broker = Broker(broker_config(tmp_path))
    broker.open()
    broker.create_topic("t", 1, 1)
    append_to(broker, "t", 1)
    broker.close()
    (tmp_path / CLEAN_SHUTDOWN_FILE).write_text("")  # what earlier versions wrote
    broker = Broker(broker_config(tmp_path))
    broker.open()
    assert broker.partition("t", 0).log.had_clean_shutdown  # type: ignore[union-attr]
    # ...and, with no list to vouch, the log's record is cleared at once, as before.
    assert not LogState.read(tmp_path / "t-0").clean_shutdown  # type: ignore[union-attr]
    broker.close()


# ---- a real broker at 2,000 partitions -----------------------------------------------------


PARTITIONS = 2000


def partition_files(data_dir: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime_ns, size) of every file in every partition directory."""
    out = {}
    for directory in data_dir.iterdir():
        if directory.is_dir() and re.fullmatch(r"scale-\d+", directory.name):
            for path in directory.iterdir():
                st = path.stat()
                out[f"{directory.name}/{path.name}"] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def read_partitions(bootstrap: str, partitions: list[int]) -> dict[int, list[bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "restart-scale", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition("scale", p, 0) for p in partitions])
        got: dict[int, list[bytes]] = {}
        deadline = time.monotonic() + TIMEOUT
        while sum(len(v) for v in got.values()) < 2 * len(partitions) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.setdefault(msg.partition(), []).append(msg.value())
        return got
    finally:
        consumer.close()


def test_clean_restart_of_2000_partitions_rewrites_no_partition_file(broker_factory) -> None:
    broker = broker_factory({"num.partitions": "1"})
    create_topic(broker.bootstrap, "scale", PARTITIONS)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 50, "message.timeout.ms": TIMEOUT * 1000})
    for p in range(PARTITIONS):
        producer.produce("scale", value=b"a-%d" % p, partition=p)
    assert producer.flush(TIMEOUT) == 0
    for p in range(PARTITIONS):
        producer.produce("scale", value=b"b-%d" % p, partition=p)
    assert producer.flush(TIMEOUT) == 0
    del producer
    assert broker.stop() == 0
    files = partition_files(broker.data_dir)
    assert sum(name.endswith(STATE_FILE) for name in files) == PARTITIONS
    broker.start()
    # Start-up said how far it got, and how long it took.
    assert re.search(rf"loaded {PARTITIONS:,} partitions in [\d.]+ s \(a clean shutdown\)", broker.log_text())
    # No file of any partition was written, replaced or created by the clean start.
    assert partition_files(broker.data_dir) == files
    sample = [0, 1, 999, PARTITIONS - 1]
    expected = {p: [b"a-%d" % p, b"b-%d" % p] for p in sample}
    assert read_partitions(broker.bootstrap, sample) == expected
    # A crash, then: everything is recovered, nothing is lost.
    broker.kill()
    assert not (broker.data_dir / CLEAN_SHUTDOWN_FILE).exists()
    broker.start()
    # (__consumer_offsets, made by the read above, is loaded too.)
    assert re.search(r"loaded [\d,]+ partitions in [\d.]+ s \(an unclean shutdown", broker.log_text())
    assert read_partitions(broker.bootstrap, sample) == expected



def test_folders_of_an_interrupted_deletion_are_removed_at_start_up(broker_factory) -> None:
    """A deletion renames a partition's folder `<topic>-<p>.<id>-delete` and removes it
    in the background; one a crash left behind goes at the next start-up (Kafka's log
    manager does the same), and is never taken for a partition."""
    broker = broker_factory()
    broker.kill()
    leftover = broker.data_dir / "gone-0.0123456789abcdef-delete"
    leftover.mkdir()
    (leftover / "00000000000000000000.log").write_bytes(b"x" * 1000)
    broker.start()
    deadline = time.monotonic() + 20
    while leftover.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not leftover.exists()
