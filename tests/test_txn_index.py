"""The aborted-transaction index (kwire.log.txn_index, Kafka's .txnindex): the file and
its queries; the partition keeping it on every append path (leader, follower), through
truncation, DeleteRecords, retention and a replay of the log; and a real broker whose
read_committed consumers skip aborted records before and after restarts (SIGTERM,
SIGKILL) and DeleteRecords."""

from __future__ import annotations

import datetime
import logging
import random
import time
from pathlib import Path

import pytest
import trio
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
from raw_client import RawClient
from test_transactions import create_topic, txn_producer

from kwire.broker import Broker, Partition
from kwire.config import BrokerConfig
from kwire.coordinator.producer_state import CompletedTxn, ProducerStateManager
from kwire.log.checkpoint import write_atomically
from kwire.log.txn_index import (
    ABORTED_TXN_INDEX_FILE,
    AbortedTxn,
    AbortedTxnIndex,
    marker_type,
)
from kwire.protocol.records import (
    CONTROL_ABORT,
    CONTROL_COMMIT,
    BatchHeader,
    build_batch,
    build_control_batch,
    iter_records,
    validate_batches,
)

TIMEOUT = 20
TRANSACTIONAL = 0x10
CONTROL = 0x20


# ---- the index and its file --------------------------------------------------------------


def _index(tmp_path: Path, entries: list[AbortedTxn]) -> AbortedTxnIndex:
    index = AbortedTxnIndex.open(tmp_path, 0, 1 << 40)
    for entry in entries:
        index.append(entry)
    return index


def test_append_writes_one_line_each_and_open_loads_them(tmp_path: Path) -> None:
    entries = [AbortedTxn(7, 0, 4, 5), AbortedTxn(8, 2, 9, 10), AbortedTxn(7, 11, 12, 13)]
    index = _index(tmp_path, entries)
    assert (tmp_path / ABORTED_TXN_INDEX_FILE).read_text() == "7 0 4 5\n8 2 9 10\n7 11 12 13\n"
    assert (len(index), index.last_offset) == (3, 12)
    assert AbortedTxnIndex.open(tmp_path, 0, 13).entries == entries


def test_no_file_is_an_empty_index_and_nothing_is_written_for_it(tmp_path: Path) -> None:
    index = AbortedTxnIndex.open(tmp_path, 0, 100)
    assert (len(index), index.last_offset, index.overlapping(0, 100)) == (0, -1, [])
    index.truncate_to(0)
    index.trim_before(50)
    assert not (tmp_path / ABORTED_TXN_INDEX_FILE).exists()


def test_append_must_follow_the_last_entry(tmp_path: Path) -> None:
    index = _index(tmp_path, [AbortedTxn(1, 0, 5, 6)])
    with pytest.raises(ValueError):
        index.append(AbortedTxn(2, 1, 5, 6))
    with pytest.raises(ValueError):
        index.append(AbortedTxn(2, 1, 3, 6))
    assert len(index) == 1


def test_open_keeps_only_entries_within_the_log(tmp_path: Path) -> None:
    _index(tmp_path, [AbortedTxn(1, 0, 3, 4), AbortedTxn(2, 2, 8, 9), AbortedTxn(3, 10, 12, 13), AbortedTxn(4, 13, 20, 21)])
    # Log start 5 (the entry ending at 3 is gone, the one straddling 5 stays), log end
    # 12 (the log lost its tail at and past the marker at 12).
    index = AbortedTxnIndex.open(tmp_path, 5, 12)
    assert index.entries == [AbortedTxn(2, 2, 8, 9)]
    assert (tmp_path / ABORTED_TXN_INDEX_FILE).read_text() == "2 2 8 9\n"


def test_truncate_to_drops_markers_at_and_past_the_offset(tmp_path: Path) -> None:
    index = _index(tmp_path, [AbortedTxn(1, 0, 3, 4), AbortedTxn(2, 2, 8, 9), AbortedTxn(3, 10, 12, 13)])
    index.truncate_to(13)
    assert len(index) == 3  # nothing at or past 13
    index.truncate_to(8)
    assert index.entries == [AbortedTxn(1, 0, 3, 4)]
    assert AbortedTxnIndex.open(tmp_path, 0, 100).entries == [AbortedTxn(1, 0, 3, 4)]
    index.append(AbortedTxn(5, 4, 6, 7))  # appends go on after the rewrite
    assert (tmp_path / ABORTED_TXN_INDEX_FILE).read_text() == "1 0 3 4\n5 4 6 7\n"
    index.truncate_to(0)
    assert len(index) == 0 and not (tmp_path / ABORTED_TXN_INDEX_FILE).exists()


def test_trim_before_drops_entries_wholly_below_the_log_start(tmp_path: Path) -> None:
    index = _index(tmp_path, [AbortedTxn(1, 0, 3, 4), AbortedTxn(2, 2, 8, 9), AbortedTxn(3, 10, 12, 13)])
    index.trim_before(3)
    assert len(index) == 3  # the marker at 3 is still in the log
    index.trim_before(5)
    # The transaction from 2 to 8 straddles the log start: a fetch from 5 needs it.
    assert index.entries == [AbortedTxn(2, 2, 8, 9), AbortedTxn(3, 10, 12, 13)]
    assert AbortedTxnIndex.open(tmp_path, 0, 100).entries == index.entries
    index.trim_before(13)
    assert len(index) == 0 and not (tmp_path / ABORTED_TXN_INDEX_FILE).exists()


def test_overlapping(tmp_path: Path) -> None:
    # Producer 1 aborts 0..5 while producer 2's transaction from 3 goes on (the last
    # stable offset stays at 3), then producer 2 aborts at 7, producer 3 10..12.
    index = _index(tmp_path, [AbortedTxn(1, 0, 5, 3), AbortedTxn(2, 3, 7, 8), AbortedTxn(3, 10, 12, 13)])
    assert index.overlapping(0, 3) == [(1, 0)]
    assert index.overlapping(0, 4) == [(1, 0), (2, 3)]
    assert index.overlapping(5, 6) == [(1, 0), (2, 3)]
    assert index.overlapping(6, 8) == [(2, 3)]
    assert index.overlapping(8, 10) == []
    assert index.overlapping(8, 11) == [(3, 10)]
    assert index.overlapping(13, 20) == []
    assert index.overlapping(0, 100) == [(1, 0), (2, 3), (3, 10)]


def _header(offset: int, producer_id: int, *, control: bool = False, count: int = 1) -> BatchHeader:
    attributes = TRANSACTIONAL | (CONTROL if control else 0)
    return BatchHeader(offset, 0, 0, 2, 0, attributes, count - 1, 0, 0, producer_id, 0, -1, count)


def _random_history(seed: int) -> tuple[list[AbortedTxn], int]:
    """Interleaved transactions of 4 producers, ended at random by commits and aborts,
    with the index entries ProducerStateManager gives them; and the log end offset."""
    rng = random.Random(seed)
    producers = ProducerStateManager()
    ongoing: set[int] = set()
    entries = []
    offset = 0
    for _ in range(300):
        pid = rng.randrange(4)
        if pid in ongoing and rng.random() < 0.3:
            aborted = rng.random() < 0.5
            completed = producers.update(_header(offset, pid, control=True), CONTROL_ABORT if aborted else CONTROL_COMMIT)
            assert completed is not None and completed.is_aborted == aborted
            if aborted:
                entries.append(AbortedTxn(pid, completed.first_offset, offset, producers.last_stable_offset(completed)))
            ongoing.discard(pid)
            offset += 1
        else:
            count = rng.randint(1, 3)
            assert producers.update(_header(offset, pid, count=count)) is None
            ongoing.add(pid)
            offset += count
    return entries, offset


@pytest.mark.parametrize("seed", range(5))
def test_overlapping_agrees_with_a_scan_of_every_entry(tmp_path: Path, seed: int) -> None:
    """The bisection and the early stop at the last stable offset miss nothing."""
    entries, end = _random_history(seed)
    assert len(entries) > 20
    index = _index(tmp_path, entries)
    for start in range(0, end + 1, 3):
        for stop in range(start + 1, end + 2, 7):
            expected = [(e.producer_id, e.first_offset) for e in entries if e.last_offset >= start and e.first_offset < stop]
            assert index.overlapping(start, stop) == expected, (start, stop)


def test_overlapping_at_the_tail_of_a_long_index_reads_only_the_tail(tmp_path: Path) -> None:
    """A fetch at the tail bisects to its entries, whatever the index's length."""
    index = _index(tmp_path, [AbortedTxn(1, 10 * i, 10 * i + 5, 10 * i + 6) for i in range(50_000)])
    started = time.perf_counter()
    for _ in range(1000):
        assert index.overlapping(499_990, 500_100) == [(1, 499_990)]
    assert time.perf_counter() - started < 1.0


def test_entries_of_the_three_number_format_still_load(tmp_path: Path) -> None:
    """Lines written before the last stable offset was kept: loaded, and never the
    reason a scan stops early."""
    (tmp_path / ABORTED_TXN_INDEX_FILE).write_text("1 0 5\n2 3 7\n")
    index = AbortedTxnIndex.open(tmp_path, 0, 100)
    assert index.entries == [AbortedTxn(1, 0, 5, -1), AbortedTxn(2, 3, 7, -1)]
    assert index.overlapping(5, 6) == [(1, 0), (2, 3)]
    index.append(AbortedTxn(3, 8, 9, 10))
    assert (tmp_path / ABORTED_TXN_INDEX_FILE).read_text() == "1 0 5\n2 3 7\n3 8 9 10\n"


def test_a_torn_last_line_is_ignored_with_a_warning_and_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / ABORTED_TXN_INDEX_FILE
    # The crash cut "3 10 12 13\n" short: a valid-looking three-number prefix, no newline.
    path.write_text("1 0 3 4\n2 2 8 9\n3 10 12")
    with caplog.at_level(logging.WARNING, logger="kwire.log.txn_index"):
        index = AbortedTxnIndex.open(tmp_path, 0, 100)
    assert index.entries == [AbortedTxn(1, 0, 3, 4), AbortedTxn(2, 2, 8, 9)]
    assert any("torn last line" in r.getMessage() for r in caplog.records)
    # Cut from the file, so the next append starts a line of its own.
    index.append(AbortedTxn(3, 10, 12, 13))
    assert path.read_text() == "1 0 3 4\n2 2 8 9\n3 10 12 13\n"


def test_corrupt_lines_are_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / ABORTED_TXN_INDEX_FILE
    path.write_bytes(b"1 0 3 4\n\x00\x00\x00\nx y z\n2 2 8 9\n1 0 5 6\n3 1\n4 9 10 11\n")
    with caplog.at_level(logging.WARNING, logger="kwire.log.txn_index"):
        index = AbortedTxnIndex.open(tmp_path, 0, 100)
    # The zeros, the words, a marker going back (5 after 8) and two numbers: dropped.
    assert index.entries == [AbortedTxn(1, 0, 3, 4), AbortedTxn(2, 2, 8, 9), AbortedTxn(4, 9, 10, 11)]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 4
    assert path.read_text() == "1 0 3 4\n2 2 8 9\n4 9 10 11\n"


def test_marker_type() -> None:
    for commit, expected in ((True, CONTROL_COMMIT), (False, CONTROL_ABORT)):
        batch = build_control_batch(5, 0, commit, 0, 0, 1000)
        [header] = validate_batches(batch)
        assert marker_type(batch, header) == expected


# ---- producer state: what a marker completes -------------------------------------------------


def test_a_marker_completes_the_ongoing_transaction() -> None:
    producers = ProducerStateManager()
    assert producers.update(_header(0, 7, count=3)) is None
    assert producers.update(_header(3, 8)) is None
    completed = producers.update(_header(4, 7, control=True), CONTROL_ABORT)
    assert completed == CompletedTxn(7, 0, 4, True)
    # Producer 8's transaction from 3 holds the last stable offset.
    assert producers.last_stable_offset(completed) == 3
    commit = producers.update(_header(5, 8, control=True), CONTROL_COMMIT)
    assert commit == CompletedTxn(8, 3, 5, False)
    assert producers.last_stable_offset(commit) == 6
    # A marker with no transaction of its producer here completes nothing.
    assert producers.update(_header(6, 7, control=True), CONTROL_ABORT) is None


def test_a_marker_with_a_bumped_epoch_completes_the_transaction() -> None:
    """The coordinator aborts a timed-out or fenced producer's transaction with its
    epoch bumped: the marker must still end (and index) that transaction."""
    producers = ProducerStateManager()
    producers.update(_header(0, 7, count=2))
    marker = _header(2, 7, control=True)
    marker.producer_epoch = 1
    assert producers.update(marker, CONTROL_ABORT) == CompletedTxn(7, 0, 2, True)
    assert producers.first_unstable_offset() is None


# ---- the partition keeps its index on every path ---------------------------------------------


def _broker(path: Path, **overrides: str) -> Broker:
    broker = Broker(BrokerConfig({"log.dirs": str(path), **overrides}))
    broker.open()
    return broker


def _append_txn(partition: Partition, pid: int, values: list[bytes], commit: bool | None, sequence: int) -> int:
    """Append a transactional batch as leader and, unless `commit` is None, its marker."""
    batch = bytearray(build_batch([(None, v) for v in values], producer_id=pid, producer_epoch=0,
                                  base_sequence=sequence, transactional=True, timestamp_ms=1000))
    base_offset, _ = partition.append(batch, validate_batches(batch), 1000)
    if commit is not None:
        marker = bytearray(build_control_batch(pid, 0, commit, 0, 0, 1000))
        partition.append(marker, validate_batches(marker), 1000)
    return base_offset


def _leader_history(partition: Partition) -> None:
    """Offsets 0-2 aborted by producer 1 (marker 5) while producer 2's transaction from
    3 is open (committed at 8); producer 1 aborts again 9-10 (marker 11)."""
    _append_txn(partition, 1, [b"a0", b"a1", b"a2"], None, 0)
    _append_txn(partition, 2, [b"c0", b"c1"], None, 0)
    marker = bytearray(build_control_batch(1, 0, False, 0, 0, 1000))
    partition.append(marker, validate_batches(marker), 1000)
    _append_txn(partition, 2, [b"c2", b"c3"], True, 2)
    _append_txn(partition, 1, [b"a3", b"a4"], False, 3)


LEADER_ENTRIES = [AbortedTxn(1, 0, 5, 3), AbortedTxn(1, 9, 11, 12)]


def test_leader_append_indexes_aborts_whoever_writes_the_marker(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    try:
        partition = broker.create_topic("t", 1).partitions[0]
        _leader_history(partition)
        assert partition.log_end_offset == 12
        assert partition.txn_index.entries == LEADER_ENTRIES
        assert partition.aborted_transactions(0, 12) == [(1, 0), (1, 9)]
        assert partition.aborted_transactions(6, 9) == []
    finally:
        broker.close()
    # A clean restart loads the index from its file.
    broker = _broker(tmp_path)
    try:
        assert broker.partition("t", 0).txn_index.entries == LEADER_ENTRIES
    finally:
        broker.close()


def _replicate(leader: Partition, follower: Partition, from_offset: int) -> None:
    """What the replica fetcher does: the leader's batches, appended with their offsets."""
    data = bytearray(leader.log.read(from_offset, 1 << 20).tobytes())
    follower.append_as_follower(data, validate_batches(data), 1000)


def test_follower_append_truncation_and_retention(tmp_path: Path) -> None:
    leader_broker = _broker(tmp_path / "leader")
    follower_broker = _broker(tmp_path / "follower")
    try:
        leader = leader_broker.create_topic("t", 1).partitions[0]
        follower = follower_broker.create_topic("t", 1).partitions[0]
        _leader_history(leader)
        woken = trio.Event()
        follower.waiters.add(woken)
        _replicate(leader, follower, 0)
        assert woken.is_set()
        assert follower.log_end_offset == 12
        assert follower.txn_index.entries == LEADER_ENTRIES
        assert follower.producers.first_unstable_offset() is None

        # Truncation below the second abort marker: its entry goes, and producer 1's
        # transaction from 9 is open again in the rebuilt producer state.
        follower.truncate_to(11)
        assert follower.log_end_offset == 11
        assert follower.txn_index.entries == LEADER_ENTRIES[:1]
        assert follower.producers.first_unstable_offset() == 9
        assert AbortedTxnIndex.open(follower.log.directory, 0, 100).entries == LEADER_ENTRIES[:1]
        _replicate(leader, follower, 11)
        assert follower.txn_index.entries == LEADER_ENTRIES
        # Below the first marker: both go.
        follower.truncate_to(4)
        assert follower.txn_index.entries == []
        assert follower.producers.first_unstable_offset() == 0
        _replicate(leader, follower, 3)
        assert follower.txn_index.entries == LEADER_ENTRIES

        # DeleteRecords past the first marker: its entry is trimmed, the second stays
        # even with the log start inside its transaction.
        follower.log.high_watermark = follower.log_end_offset
        assert follower.delete_records_before(10) == 10
        assert follower.txn_index.entries == LEADER_ENTRIES[1:]
        assert follower.aborted_transactions(10, 12) == [(1, 9)]
    finally:
        leader_broker.close()
        follower_broker.close()


def test_retention_trims_the_index(tmp_path: Path) -> None:
    broker = _broker(tmp_path, **{"log.retention.ms": "1"})
    try:
        partition = broker.create_topic("t", 1).partitions[0]
        _leader_history(partition)
        partition.log.roll()
        assert partition.txn_index.entries == LEADER_ENTRIES
        assert partition.apply_retention(now_ms=10**12) > 0
        assert partition.log_start_offset == 12
        assert partition.txn_index.entries == []
    finally:
        broker.close()


def test_replay_reindexes_aborts_a_crash_kept_out_of_the_index(tmp_path: Path) -> None:
    """After an unclean stop the log is replayed: abort markers past the index's last
    entry are read back and indexed, with the same last stable offsets."""
    broker = _broker(tmp_path)
    try:
        partition = broker.create_topic("t", 1).partitions[0]
        _leader_history(partition)
        for kept in (1, 0):
            partition.txn_index.truncate_to(LEADER_ENTRIES[kept].last_offset)  # as if never written
            partition.rebuild_producer_state()
            assert partition.txn_index.entries == LEADER_ENTRIES
            assert AbortedTxnIndex.open(partition.log.directory, 0, 100).entries == LEADER_ENTRIES
        assert partition.producers.first_unstable_offset() is None
    finally:
        broker.close()


# ---- a real broker: read_committed across restarts and DeleteRecords -----------------------


def _consume(bootstrap: str, topic: str, expected: int, wait: float = TIMEOUT) -> list[str]:
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "txn-index-reader", "enable.auto.commit": False,
        "isolation.level": "read_committed", "fetch.wait.max.ms": 100, "auto.offset.reset": "earliest",
    })
    consumer.assign([TopicPartition(topic, 0, -2)])  # from the log start offset
    got: list[str] = []
    deadline = time.monotonic() + wait
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(100, timeout=0.1):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(msg.error())
                got.append(msg.value().decode())
    finally:
        consumer.close()
    return got


def _raw_read_committed(port: int, topic: str, offset: int) -> tuple[list[bytes | None], list[tuple[int, int]]]:
    """One read_committed fetch at `offset`: the values a client keeps and the aborted
    list. As Kafka's consumer: a listed producer's batches are dropped from the listed
    first offset up to that producer's next marker; records below `offset` are dropped."""
    with RawClient(port) as client:
        response = client.send(FetchRequest(
            max_wait=datetime.timedelta(0), min_bytes=1, max_bytes=1 << 20, isolation_level=1, session_id=0,
            session_epoch=-1, forgotten_topics_data=(),
            topics=(FetchTopic(topic=topic, partitions=(
                FetchPartition(partition=0, fetch_offset=offset, partition_max_bytes=1 << 20),)),),
        ))
    p = response.responses[0].partitions[0]
    assert p.error_code == ErrorCode.none, p.error_code
    aborted = [(a.producer_id, a.first_offset) for a in p.aborted_transactions or ()]
    blob = p.records or b""
    pending = sorted(aborted, key=lambda a: a[1])
    aborting: set[int] = set()
    values: list[bytes | None] = []
    for h in validate_batches(blob):
        while pending and pending[0][1] <= h.last_offset:
            aborting.add(pending.pop(0)[0])
        if h.is_control:
            aborting.discard(h.producer_id)
        elif h.producer_id not in aborting:
            batch = memoryview(blob)[h.position : h.position + h.size]
            values += [r.value for r in iter_records(batch) if r.offset >= offset]
    return values, aborted


COMMITTED = [f"c{i}" for i in range(5)] + [f"d{i}" for i in range(3)]


def _write_history(bootstrap: str, topic: str) -> None:
    """c0-c4 committed (offsets 0-4, marker 5), a0-a4 aborted (6-10, marker 11),
    d0-d2 committed (12-14, marker 15), on one partition."""
    create_topic(bootstrap, topic, 1)
    producer = txn_producer(bootstrap, f"{topic}-t")
    for prefix, commit in (("c", True), ("a", False), ("d", True)):
        producer.begin_transaction()
        for i in range(5 if prefix != "d" else 3):
            producer.produce(topic, value=f"{prefix}{i}".encode(), partition=0)
        producer.flush(TIMEOUT)
        if commit:
            producer.commit_transaction(TIMEOUT)
        else:
            producer.abort_transaction(TIMEOUT)


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_read_committed_before_and_after_a_restart(broker, stop: str) -> None:
    _write_history(broker.bootstrap, "rc")
    assert _consume(broker.bootstrap, "rc", 8) == COMMITTED
    values, aborted = _raw_read_committed(broker.port, "rc", 0)
    [(producer_id, first_offset)] = aborted
    assert (values, first_offset) == ([v.encode() for v in COMMITTED], 6)
    index_file = broker.data_dir / "rc-0" / ABORTED_TXN_INDEX_FILE
    assert index_file.read_text() == f"{producer_id} 6 11 12\n"
    if stop == "sigterm":
        broker.restart()
    else:
        broker.kill()
        broker.start()
    # Right after start-up, coordinators loaded or not: the index is the partition's.
    assert _raw_read_committed(broker.port, "rc", 0) == ([v.encode() for v in COMMITTED], [(producer_id, 6)])
    assert _consume(broker.bootstrap, "rc", 8) == COMMITTED
    # Nothing aborted shows up after a short extra wait either.
    assert _consume(broker.bootstrap, "rc", 9, wait=1.5) == COMMITTED
    assert index_file.read_text() == f"{producer_id} 6 11 12\n"


def test_read_committed_after_delete_records_past_an_aborted_transaction(broker) -> None:
    _write_history(broker.bootstrap, "dr")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    def delete_before(offset: int) -> int:
        [future] = admin.delete_records([TopicPartition("dr", 0, offset)], request_timeout=TIMEOUT).values()
        return future.result(timeout=TIMEOUT).low_watermark

    # Into the aborted transaction: its remaining records stay hidden.
    assert delete_before(8) == 8
    values, aborted = _raw_read_committed(broker.port, "dr", 8)
    assert values == [b"d0", b"d1", b"d2"] and [first for _, first in aborted] == [6]
    assert _consume(broker.bootstrap, "dr", 3) == ["d0", "d1", "d2"]
    assert _consume(broker.bootstrap, "dr", 4, wait=1.5) == ["d0", "d1", "d2"]
    # Past its marker, and across a restart.
    assert delete_before(13) == 13
    broker.restart()
    assert _raw_read_committed(broker.port, "dr", 13) == ([b"d1", b"d2"], [])
    assert _consume(broker.bootstrap, "dr", 2) == ["d1", "d2"]
    assert not (broker.data_dir / "dr-0" / ABORTED_TXN_INDEX_FILE).exists()


def test_aborts_whose_marker_a_cleaner_removed_leave_the_index(tmp_path: Path) -> None:
    """The log cleaner removes an abort marker (past its delete horizon): its entry
    goes with it (remove_markers, in the cleaner's install step), and after a crash
    between the swap and that rewrite, an unclean start drops any entry whose marker
    the compacted log no longer holds (a reader shown such an abort would skip the
    producer's records for ever)."""
    broker = _broker(tmp_path)
    partition = broker.create_topic("t", 1, configs={"cleanup.policy": "compact"}).partitions[0]
    _leader_history(partition)
    index = partition.txn_index
    assert index.remove_markers([]) == 0
    # As after a crash: an entry whose marker (offset 7, inside a data batch) is gone.
    stale = AbortedTxn(9, 6, 7, 8)
    write_atomically(index.path, b"".join(e.line() for e in [LEADER_ENTRIES[0], stale, LEADER_ENTRIES[1]]))
    # Not closed: the next open is unclean.
    again = _broker(tmp_path)
    try:
        reopened = again.partition("t", 0)
        assert reopened is not None
        assert reopened.txn_index.entries == LEADER_ENTRIES
        assert reopened.txn_index.remove_markers([5]) == 1
        assert reopened.txn_index.entries == [LEADER_ENTRIES[1]]
        assert AbortedTxnIndex.open(reopened.log.directory, 0, 100).entries == [LEADER_ENTRIES[1]]
    finally:
        again.close()
