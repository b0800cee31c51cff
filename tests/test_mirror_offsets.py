"""`kwire mirror`'s offsets alone (no broker): kwire.mirror.offsets' records byte for byte
against MirrorMaker 2's (Kafka 3.9 OffsetSync.java, Checkpoint.java: Kafka protocol
Structs, STRING = INT16 length + UTF-8; Connect's JSON source offsets), when a copy emits
an offset sync, and the translation of group offsets, with hypothesis simulating a mirror
that crashes and copies again."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kwire.mirror.offsets import (
    Checkpoint,
    MalformedRecord,
    OffsetSync,
    OffsetSyncStore,
    PartitionSyncState,
    decode_source_offset,
    source_offset_key,
    source_offset_value,
)

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
NAMES = st.text(max_size=100)


def kafka_string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big", signed=True) + data


# -- offset syncs and checkpoints, as MM2 writes them ------------------------------------


def test_offset_sync_bytes():
    sync = OffsetSync("orders", 3, 41, 7)
    # KEY_SCHEMA: topic STRING, partition INT32; VALUE_SCHEMA: upstreamOffset INT64,
    # offset INT64 (the downstream one).
    assert sync.key() == b"\x00\x06orders" + b"\x00\x00\x00\x03"
    assert sync.value() == (41).to_bytes(8, "big") + (7).to_bytes(8, "big")
    assert OffsetSync.decode(sync.key(), sync.value()) == sync
    big = OffsetSync("t", 2**31 - 1, 2**63 - 1, -1)
    assert big.key() == b"\x00\x01t\x7f\xff\xff\xff"
    assert big.value() == b"\x7f" + b"\xff" * 7 + b"\xff" * 8
    assert OffsetSync.decode(big.key(), big.value()) == big


def test_checkpoint_bytes():
    checkpoint = Checkpoint("grüppe", "a.orders", 2, 100, 90, "meta")
    # KEY_SCHEMA: group STRING, topic STRING, partition INT32; value: HEADER_SCHEMA
    # (version INT16 = 0), then VALUE_SCHEMA_V0: upstreamOffset INT64, offset INT64,
    # metadata STRING. The group's length is in UTF-8 bytes (7 for 6 characters).
    assert checkpoint.key() == (
        b"\x00\x07gr\xc3\xbcppe" + b"\x00\x08a.orders" + b"\x00\x00\x00\x02"
    )
    assert checkpoint.value() == (
        b"\x00\x00" + (100).to_bytes(8, "big") + (90).to_bytes(8, "big") + b"\x00\x04meta"
    )
    assert Checkpoint.decode(checkpoint.key(), checkpoint.value()) == checkpoint
    # No metadata is an empty STRING, written all the same (MM2 reads it unconditionally).
    empty = Checkpoint("g", "t", 0, 5, 6)
    assert empty.value() == b"\x00\x00" + (5).to_bytes(8, "big") + (6).to_bytes(8, "big") + (
        b"\x00\x00"
    )
    assert Checkpoint.decode(empty.key(), empty.value()) == empty


@given(topic=NAMES, partition=INT32, upstream=INT64, downstream=INT64)
@settings(max_examples=200)
def test_offset_sync_round_trip(topic, partition, upstream, downstream):
    sync = OffsetSync(topic, partition, upstream, downstream)
    key, value = sync.key(), sync.value()
    assert key == kafka_string(topic) + struct.pack(">i", partition)
    assert value == struct.pack(">qq", upstream, downstream)
    assert OffsetSync.decode(key, value) == sync


@given(group=NAMES, topic=NAMES, partition=INT32, upstream=INT64, downstream=INT64, meta=NAMES)
@settings(max_examples=200)
def test_checkpoint_round_trip(group, topic, partition, upstream, downstream, meta):
    checkpoint = Checkpoint(group, topic, partition, upstream, downstream, meta)
    key, value = checkpoint.key(), checkpoint.value()
    assert key == kafka_string(group) + kafka_string(topic) + struct.pack(">i", partition)
    assert value == struct.pack(">hqq", 0, upstream, downstream) + kafka_string(meta)
    assert Checkpoint.decode(key, value) == checkpoint


def test_truncated_records_are_malformed():
    sync = OffsetSync("orders", 1, 2, 3)
    for cut in range(len(sync.key())):
        with pytest.raises(MalformedRecord):
            OffsetSync.decode(sync.key()[:cut], sync.value())
    for cut in range(len(sync.value())):
        with pytest.raises(MalformedRecord):
            OffsetSync.decode(sync.key(), sync.value()[:cut])
    checkpoint = Checkpoint("group", "a.orders", 1, 2, 3, "metadata")
    for cut in range(len(checkpoint.key())):
        with pytest.raises(MalformedRecord):
            Checkpoint.decode(checkpoint.key()[:cut], checkpoint.value())
    value = checkpoint.value()
    for cut in [*range(18), *range(19, len(value))]:  # (18: MM2's value without metadata)
        with pytest.raises(MalformedRecord):
            Checkpoint.decode(checkpoint.key(), value[:cut])
    for key, value in ((None, sync.value()), (sync.key(), None), (None, None)):
        with pytest.raises(MalformedRecord):
            OffsetSync.decode(key, value)
        with pytest.raises(MalformedRecord):
            Checkpoint.decode(key, value)
    # A null STRING (length -1) is not a topic name.
    with pytest.raises(MalformedRecord):
        OffsetSync.decode(b"\xff\xff\x00\x00\x00\x00", sync.value())


@given(key=st.none() | st.binary(max_size=40), value=st.none() | st.binary(max_size=40))
@settings(max_examples=300)
def test_any_bytes_decode_or_are_malformed(key, value):
    for record in (OffsetSync, Checkpoint):
        try:
            record.decode(key, value)
        except MalformedRecord:
            pass
    assert decode_source_offset(key, value) is None or key is not None


# -- Connect's source offsets -------------------------------------------------------------


def test_source_offset_json():
    # MirrorUtils.wrapPartition's HashMap (keys in its iteration order: cluster, partition,
    # topic) under the connector's name, as Connect's JsonConverter writes it schemaless.
    assert source_offset_key("a", "orders", 0) == (
        b'["MirrorSourceConnector",{"cluster":"a","partition":0,"topic":"orders"}]'
    )
    assert source_offset_value(41) == b'{"offset":41}'
    assert decode_source_offset(source_offset_key("a", "orders", 7), source_offset_value(41)) == (
        ("a", "orders", 7),
        41,
    )
    # Whatever order and spacing another writer used; a tombstone has no offset.
    key = b'["MirrorSourceConnector", {"topic": "t", "partition": 2, "cluster": "b"}]'
    assert decode_source_offset(key, b'{"offset": 9}') == (("b", "t", 2), 9)
    assert decode_source_offset(key, None) == (("b", "t", 2), None)


@pytest.mark.parametrize(
    "key, value",
    [
        (None, b'{"offset":1}'),
        (b'["MirrorCheckpointConnector",{"cluster":"a","partition":0,"topic":"t"}]', b"{}"),
        (b"not json", b'{"offset":1}'),
        (b'["MirrorSourceConnector",{"cluster":"a","topic":"t"}]', b'{"offset":1}'),
        (b'["MirrorSourceConnector",{"cluster":"a","partition":0,"topic":"t"}]', b"[1]"),
        (b'["MirrorSourceConnector",{"cluster":"a","partition":0,"topic":"t"}]', b"{}"),
        (b'["MirrorSourceConnector",{"cluster":"a","partition":0,"topic":"t"}]', b"\xff"),
        (
            b'["MirrorSourceConnector",{"cluster":"a","partition":0,"topic":"t"}]',
            b'{"offset":null}',
        ),
        (b'["MirrorSourceConnector",5]', b'{"offset":1}'),
        (b'["MirrorSourceConnector"]', b'{"offset":1}'),
        (b"null", b'{"offset":1}'),
        (b'{"a":1,"b":2}', b'{"offset":1}'),
    ],
)
def test_other_records_of_the_offsets_topic_are_skipped(key, value):
    assert decode_source_offset(key, value) is None


@given(
    cluster=NAMES,
    topic=NAMES,
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(-1, 2**63 - 1),
)
@settings(max_examples=200)
def test_source_offset_round_trip(cluster, topic, partition, offset):
    key = source_offset_key(cluster, topic, partition)
    assert decode_source_offset(key, source_offset_value(offset)) == (
        (cluster, topic, partition),
        offset,
    )


# -- when a copy emits an offset sync -----------------------------------------------------


def test_sync_on_the_first_record_and_on_gaps():
    state = PartitionSyncState(max_offset_lag=100)
    assert state.update(10, 0)  # the first record of this run
    assert not state.update(11, 1)
    assert not state.update(12, 2)
    assert state.update(14, 3)  # upstream gap (a transaction marker, a compacted record)
    assert not state.update(15, 4)
    assert state.update(16, 6)  # downstream gap (the target's own marker)
    assert not state.update(17, 7)
    assert state.update(18, 7)  # downstream did not move (truncated, or a new target)
    assert state.update(17, 8)  # upstream went back (a rewind)
    # A new run (a restart) starts with a sync even where the previous run stopped.
    fresh = PartitionSyncState(max_offset_lag=100)
    assert fresh.update(18, 9)


def test_sync_every_offset_lag_max_records():
    state = PartitionSyncState(max_offset_lag=3)
    emitted = [d for d in range(12) if state.update(100 + d, d)]
    # MM2: a sync when downstream - (last sync's downstream + 1) >= offset.lag.max
    assert emitted == [0, 4, 8]
    # counted from the last sync, whatever made it
    state = PartitionSyncState(max_offset_lag=3)
    assert state.update(0, 0)
    assert not state.update(1, 1)
    assert state.update(5, 2)  # gap
    assert [d for d in range(3, 10) if state.update(d + 3, d)] == [6]
    every = PartitionSyncState(max_offset_lag=0)
    assert all(every.update(u, u) for u in range(5))


def test_flush_gives_the_last_unsynced_pair_once():
    state = PartitionSyncState(max_offset_lag=3)
    assert state.flush() is None  # nothing copied yet
    assert state.update(0, 0)
    assert state.flush() is None  # the first record was synced already
    assert not state.update(1, 1)
    assert not state.update(2, 2)
    assert state.flush() == (2, 2)
    assert state.flush() is None
    # The flushed pair counts as a sync: the next lag sync is offset.lag.max after it.
    assert [d for d in range(3, 10) if state.update(d, d)] == [6]
    assert state.flush() == (9, 9)
    assert state.update(12, 10)  # gap
    assert state.flush() is None


# -- translation ----------------------------------------------------------------------------


def store_of(*pairs: tuple[int, int], max_syncs: int = 4096) -> OffsetSyncStore:
    store = OffsetSyncStore(max_syncs)
    for upstream, downstream in pairs:
        store.add(OffsetSync("t", 0, upstream, downstream))
    return store


def test_translate_with_a_constant_delta():
    # records 100.. copied to 0.., a sync every 100 (offset.lag.max)
    store = store_of((100, 0), (200, 100), (300, 200))
    # A group that committed C consumed up to C - 1 and resumes right after its copy.
    for committed in (101, 150, 200, 201, 299, 300, 301):
        assert store.translate("t", 0, committed) == committed - 100, committed


def test_translate_after_the_delta_changes():
    # 0..49 copied to 0..49, then the target wrote 10 markers of its own, then 50.. copied
    # to 60..; 80..84 do not exist upstream (compacted), so 85.. is copied to 90..
    store = store_of((0, 0), (50, 60), (85, 90), (120, 125))
    assert store.translate("t", 0, 30) == 30
    assert store.translate("t", 0, 50) == 50  # consumed 49, copied at 49
    assert store.translate("t", 0, 51) == 61
    assert store.translate("t", 0, 80) == 90  # consumed 79, copied at 89
    # Consumed up to a non-record (80..84): the next record is 85, at 90.
    for committed in range(81, 86):
        assert store.translate("t", 0, committed) == 90, committed
    assert store.translate("t", 0, 86) == 91
    assert store.translate("t", 0, 120) == 125
    assert store.translate("t", 0, 121) == 126


def test_translate_past_a_transaction_marker():
    # A transactional source: records 0..9, the commit marker at 10, records 11..; the
    # consumer commits 11 (its position past the marker). The copy of 11 is at 10 and must
    # not be skipped.
    store = store_of((0, 0), (11, 10), (22, 20))
    assert store.translate("t", 0, 10) == 10
    assert store.translate("t", 0, 11) == 10
    assert store.translate("t", 0, 12) == 11
    assert store.translate("t", 0, 22) == 20
    assert store.translate("t", 0, 23) == 21


def test_translate_past_the_last_sync():
    store = store_of((0, 0), (10, 10))
    assert store.translate("t", 0, 10) == 10
    assert store.translate("t", 0, 11) == 11  # consumed 10: its copy is known
    # The mirror has not said where 11.. went: right after the last copy known (what the
    # group consumed since may be read again, nothing is skipped).
    for committed in (12, 50, 10**12):
        assert store.translate("t", 0, committed) == 11, committed


def test_translate_before_the_first_sync():
    store = store_of((100, 40), (200, 140))
    for committed in (-1, 0, 1, 99):
        assert store.translate("t", 0, committed) is None, committed
    # Nothing consumed that the mirror copied: start at the first copy (MM2 too).
    assert store.translate("t", 0, 100) == 40
    assert store.translate("t", 0, 101) == 41
    assert store_of((0, 7)).translate("t", 0, 0) == 7
    assert store.translate("t", 1, 150) is None
    assert store.translate("other", 0, 150) is None


def test_a_restart_invalidates_the_syncs_at_and_above_it():
    # run 1 copied 0..99 to 0..99 (its syncs every 50), stored its progress at 59, crashed;
    # run 2 copies 60.. again, to 100..
    store = store_of((0, 0), (50, 50), (99, 99))
    store.add(OffsetSync("t", 0, 60, 100))
    assert len(store) == 3
    assert store.translate("t", 0, 55) == 55
    assert store.translate("t", 0, 60) == 60  # consumed 59: run 1's copy, the only one
    assert store.translate("t", 0, 61) == 101  # consumed 60: run 2's copy
    assert store.translate("t", 0, 99) == 101  # past the last sync (60)
    store.add(OffsetSync("t", 0, 80, 120))
    assert store.translate("t", 0, 81) == 121
    # the same upstream offset again: the newer copy wins
    store.add(OffsetSync("t", 0, 80, 130))
    assert len(store) == 4
    assert store.translate("t", 0, 81) == 131
    # a restart below every sync leaves only its own
    store.add(OffsetSync("t", 0, 0, 200))
    assert len(store) == 1
    assert store.translate("t", 0, 1) == 201


def test_partitions_are_apart_and_syncs_bounded():
    store = OffsetSyncStore(max_syncs=3)
    for upstream in range(0, 50, 10):
        store.add(OffsetSync("t", 0, upstream, upstream + 1000))
    store.add(OffsetSync("t", 1, 5, 0))
    store.add(OffsetSync("u", 0, 5, 7))
    assert len(store) == 5  # 3 + 1 + 1: the two oldest of t[0] went
    assert store.translate("t", 0, 15) is None  # before what is kept
    assert store.translate("t", 0, 20) == 1020
    assert store.translate("t", 0, 25) == 1025
    assert store.translate("t", 1, 6) == 1
    assert store.translate("u", 0, 6) == 8


# -- a mirror simulated: crashes, duplicates, gaps ------------------------------------------


def _write_syncs(
    state: PartitionSyncState,
    pending: list[OffsetSync],
    syncs: list[OffsetSync],
    snapshots: list[int],
) -> None:
    """A commit's first half (FlowRunner._write_offset_syncs(progress=True))."""
    syncs.extend(pending)
    pending.clear()
    pair = state.flush()
    if pair is not None:
        syncs.append(OffsetSync("t", 0, *pair))
    snapshots.append(len(syncs))


def _simulate(data: st.DataObject):
    """One partition copied by runs of a mirror that crash at random, as kwire.mirror.flow
    does it: a run starts after the stored progress; each delivered record goes through
    PartitionSyncState; a commit writes the pending syncs and the flushed pair, then stores
    the progress; a crash loses what was not written. The last run copies to the end.
    Returns (records, target, syncs, snapshots): target[p] is the upstream offset copied
    at downstream p (None: a marker), snapshots the number of syncs written at each write."""
    size = data.draw(st.integers(1, 60), label="offsets")
    present = data.draw(st.lists(st.integers(0, 5), min_size=size, max_size=size), label="gaps")
    records = [u for u in range(size) if present[u]]  # 1 in 6 offsets is no record
    max_lag = data.draw(st.integers(0, 8), label="offset.lag.max")
    target: list[int | None] = []
    syncs: list[OffsetSync] = []
    snapshots: list[int] = []
    stored: int | None = None
    crashes = data.draw(st.integers(0, 6), label="crashes")
    while True:
        start = 0 if stored is None else stored + 1
        state = PartitionSyncState(max_lag)
        pending: list[OffsetSync] = []
        delivered = stored
        crashed = False
        for upstream in (u for u in records if u >= start):
            if data.draw(st.integers(0, 7)) == 0:  # the target's markers in between
                target.extend([None] * data.draw(st.integers(1, 3)))
            downstream = len(target)
            target.append(upstream)
            if state.update(upstream, downstream):
                pending.append(OffsetSync("t", 0, upstream, downstream))
            delivered = upstream
            action = data.draw(st.integers(0, 9))
            if action == 0:  # commit
                _write_syncs(state, pending, syncs, snapshots)
                stored = delivered
            elif action == 1 and crashes:  # crash
                crashed = True
            elif action == 2 and crashes:  # crash between the syncs and the progress
                _write_syncs(state, pending, syncs, snapshots)
                crashed = True
            if crashed:
                crashes -= 1
                break
        if not crashed:
            _write_syncs(state, pending, syncs, snapshots)
            stored = delivered
            return records, target, syncs, snapshots


@given(st.data(), st.integers(2, 64))
@settings(max_examples=400, deadline=None)
def test_translation_of_a_mirror_that_crashes(data, max_syncs):
    records, target, syncs, snapshots = _simulate(data)
    if not records:
        return
    is_record = set(records)
    size = max(records) + 1
    # latest[u]: where the last copy of u is; min_latest_from[c]: the lowest of latest[u]
    # for the records u >= c (every one of them has a copy there or later).
    latest: dict[int, int] = {}
    for position, upstream in enumerate(target):
        if upstream is not None:
            latest[upstream] = position
    assert set(latest) == is_record
    min_latest_from = [len(target) + 1] * (size + 2)
    for c in range(size - 1, -1, -1):
        min_latest_from[c] = min(min_latest_from[c + 1], latest.get(c, len(target) + 1))
    # min_upstream_from[p]: the lowest upstream offset copied at p or later.
    min_upstream_from = [size + 1] * (len(target) + 2)
    for p in range(len(target) - 1, -1, -1):
        upstream = target[p]
        min_upstream_from[p] = min(
            min_upstream_from[p + 1], size + 1 if upstream is None else upstream
        )

    def check(store: OffsetSyncStore, exact: bool) -> None:
        upstream = store._upstream.get(("t", 0), [])
        if not upstream:
            return
        first, last = upstream[0], upstream[-1]
        for committed in range(0, first):
            assert store.translate("t", 0, committed) is None
        # every committed offset up to the last synced record (the group consumed it)
        for committed in range(max(first, 1), last + 2):
            d = store.translate("t", 0, committed)
            assert d is not None, committed
            # nothing skipped: every record the group had not consumed is copied at d or
            # after (the copies made later are later in the target)
            assert min_latest_from[committed] >= d, (committed, d)
            if not exact:
                continue
            # nothing re-read: what the target holds from d on is all >= committed
            assert min_upstream_from[d] >= committed, (committed, d, target[d:])
            if committed - 1 in is_record and committed - 1 >= first:
                assert d - 1 == latest[committed - 1], (committed, d)

    # What a checkpoint said at each write of syncs: nothing skipped in the end.
    for count in snapshots:
        store = OffsetSyncStore(max_syncs)
        for sync in syncs[:count]:
            store.add(sync)
        check(store, exact=False)
    # With every sync of the last run written: exact.
    store = OffsetSyncStore(max_syncs)
    for sync in syncs:
        store.add(sync)
    check(store, exact=True)
