"""The coordinators serve only the partitions of their internal topic this broker leads
(Kafka's onElection / onResignation), and a partition leader writes the markers a
coordinator sends it (WriteTxnMarkers).

In-process: a broker on a temp log dir, coordinators built not owning any partition,
driven with on_elected / on_resigned. Over the wire: WriteTxnMarkers to a real broker
process, then a read_committed confluent-kafka consumer.
"""

from __future__ import annotations

import datetime
import struct
import time
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from kio.schema.errors import ErrorCode
from kio.schema.init_producer_id.v4.request import InitProducerIdRequest
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.schema.write_txn_markers.v1.request import (
    WritableTxnMarker,
    WritableTxnMarkerTopic,
    WriteTxnMarkersRequest,
)
from kio.static.primitive import Records
from raw_client import RawClient
from test_crash_transactions import RawTxn, group_offsets
from test_transactions import consume, create_topic

from kwire.broker import Broker
from kwire.config import BrokerConfig
from kwire.coordinator import transactions as tx
from kwire.coordinator.group import GroupState
from kwire.coordinator.group_coordinator import (
    OFFSETS_TOPIC,
    GroupCoordinator,
    partition_for,
    read_batches,
)
from kwire.coordinator.transaction_coordinator import (
    TRANSACTION_STATE_TOPIC,
    TransactionCoordinator,
)
from kwire.coordinator.transactions import TxnMetadata, TxnState
from kwire.local_partition_writer import LocalPartitionWriter
from kwire.protocol.messages import response_module
from kwire.protocol.records import (
    CONTROL_COMMIT,
    build_batch,
    control_record_type,
    iter_records,
    validate_batches,
)

TIMEOUT = 20
SESSION_MS = 10_000


def _subscription(*topics: str) -> bytes:
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


def _open(path: Path) -> tuple[Broker, LocalPartitionWriter, GroupCoordinator, TransactionCoordinator]:
    broker = Broker(BrokerConfig({
        "log.dirs": str(path),
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "100",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.num.partitions": "4",
    }))
    broker.open()
    writer = LocalPartitionWriter(broker)
    groups = GroupCoordinator(writer, broker.config, owns_all_partitions=False)
    transactions = TransactionCoordinator(writer, broker.config, groups, broker.next_producer_id, owns_all_partitions=False)
    return broker, writer, groups, transactions


async def _until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(TIMEOUT):
        while not condition():
            await trio.sleep(0.01)


def _run(*services: Any, body: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for service in services:
                await nursery.start(service.run)
            with trio.fail_after(TIMEOUT):
                await body()
            nursery.cancel_scope.cancel()

    trio.run(main)


JOIN = dict(
    group_instance_id=None, client_id="c", client_host="/127.0.0.1", rebalance_timeout_ms=10_000,
    session_timeout_ms=SESSION_MS, protocol_type="consumer", protocols=[("range", _subscription("t"))],
    require_known_member_id=True, supports_skip_assignment=True,
)


async def _new_member_id(groups: GroupCoordinator, group_id: str) -> str:
    first = await groups.join_group(group_id=group_id, member_id="", **JOIN)
    assert first.error == ErrorCode.member_id_required
    return first.member_id


def test_group_coordinator_serves_only_the_partitions_it_was_elected_for(tmp_path: Path) -> None:
    broker, _, groups, _ = _open(tmp_path)
    broker.create_topic("t", 2)
    groups.ensure_offsets_topic()
    p = groups.partition_for("g")
    elsewhere = next(g for g in (f"o{i}" for i in range(100)) if groups.partition_for(g) != p)

    async def body() -> None:
        # Not elected: every group API answers NOT_COORDINATOR.
        assert groups.heartbeat(group_id="g", member_id="m", group_instance_id=None, generation_id=1) == ErrorCode.not_coordinator
        assert groups.fetch_offsets("g", [("t", 0)]) == (ErrorCode.not_coordinator, {})
        joined = await groups.join_group(group_id="g", member_id="", **JOIN)
        assert joined.error == ErrorCode.not_coordinator
        commit = await groups.commit_offsets(group_id="g", member_id="", group_instance_id=None, generation_id=-1,
                                             offsets={("t", 0): (1, -1, None)})
        assert commit == {("t", 0): ErrorCode.not_coordinator}

        groups.on_elected(p, 1)
        # Loading is a task: until it has run, the partition's groups wait.
        assert groups.fetch_offsets("g", [("t", 0)]) == (ErrorCode.coordinator_load_in_progress, {})
        assert groups.describe_group("g") == (ErrorCode.coordinator_load_in_progress, None)
        await _until(lambda: p in groups.owned)
        assert groups.owned[p] == 1 and not groups.loading
        # Another partition is still not this coordinator's.
        assert groups.fetch_offsets(elsewhere, None) == (ErrorCode.not_coordinator, {})

        member = await _new_member_id(groups, "g")
        joined = await groups.join_group(group_id="g", member_id=member, **JOIN)
        assert joined.error == ErrorCode.none and joined.generation_id == 1
        synced = await groups.sync_group(group_id="g", generation_id=1, member_id=member, group_instance_id=None,
                                         protocol_type="consumer", protocol_name="range", assignments={member: b"a-1"})
        assert synced.error == ErrorCode.none and synced.assignment == b"a-1"
        commit = await groups.commit_offsets(group_id="g", member_id=member, group_instance_id=None, generation_id=1,
                                             offsets={("t", 0): (5, 0, "m"), ("t", 1): (7, 0, None)})
        assert commit == {("t", 0): ErrorCode.none, ("t", 1): ErrorCode.none}

        groups.on_resigned(p, 1)
        assert "g" not in groups.groups and p not in groups.owned
        assert groups.fetch_offsets("g", [("t", 0)]) == (ErrorCode.not_coordinator, {})
        assert groups.heartbeat(group_id="g", member_id=member, group_instance_id=None, generation_id=1) == ErrorCode.not_coordinator

        # Elected again: the group and its offsets come back from the log.
        groups.on_elected(p, 2)
        await _until(lambda: p in groups.owned)
        group = groups.groups["g"]
        assert (group.state, group.generation_id, group.leader_id) == (GroupState.STABLE, 1, member)
        assert group.members[member].assignment == b"a-1"
        error, offsets = groups.fetch_offsets("g", [("t", 0), ("t", 1)])
        assert error == ErrorCode.none
        assert {tp: (o.offset, o.metadata) for tp, o in offsets.items() if o} == {("t", 0): (5, "m"), ("t", 1): (7, "")}

        # A JoinGroup waiting for the rebalance is answered NOT_COORDINATOR at resignation.
        second = await _new_member_id(groups, "g")
        answers: list[Any] = []

        async def join_second() -> None:
            answers.append(await groups.join_group(group_id="g", member_id=second, **JOIN))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(join_second)
            await _until(lambda: group.state is GroupState.PREPARING_REBALANCE)
            assert answers == []
            # A resignation older than the election is stale: ignored.
            groups.on_resigned(p, 1)
            assert p in groups.owned and groups.groups.get("g") is group
            await trio.sleep(0.05)
            assert answers == []
            groups.on_resigned(p, 2)
        [answer] = answers
        assert answer.error == ErrorCode.not_coordinator
        assert "g" not in groups.groups and group.state is GroupState.DEAD

        # A stale election does not load either.
        groups.on_elected(p, 1)
        assert p not in groups.loading and p not in groups.owned
        assert groups.check("g") == ErrorCode.not_coordinator

    _run(groups, body=body)
    broker.close()


def _append_txn_state(writer: LocalPartitionWriter, transactions: TransactionCoordinator, meta: TxnMetadata) -> None:
    """Write a transactional id's record as a coordinator that stopped there left it."""
    tp = (TRANSACTION_STATE_TOPIC, transactions.partition_for(meta.transactional_id))
    batch = bytearray(build_batch([(tx.encode_key(meta.transactional_id), tx.encode_value(meta))]))
    writer.append(tp, batch, validate_batches(batch), int(time.time() * 1000))


def _markers(writer: LocalPartitionWriter, tp: tuple[str, int]) -> list[tuple[int, bool, int]]:
    """(producer id, commit, coordinator epoch) of each control batch on `tp`."""
    found = []
    for header, batch in read_batches(writer, tp):
        if header.is_control:
            [record] = iter_records(batch)
            _, coordinator_epoch = struct.unpack(">hi", bytes(record.value)[:6])
            found.append((header.producer_id, control_record_type(record.key) == CONTROL_COMMIT, coordinator_epoch))
    return found


def test_transaction_coordinator_serves_only_elected_partitions_and_completes_on_load(tmp_path: Path) -> None:
    broker, writer, groups, transactions = _open(tmp_path)
    broker.create_topic("t", 2)
    transactions.ensure_topic()
    tid = "txn-a"
    p = transactions.partition_for(tid)
    module = response_module(22, 4)
    ctx = types.SimpleNamespace(api_version=4)

    def init_request(**extra: Any) -> InitProducerIdRequest:
        return InitProducerIdRequest(transactional_id=tid, transaction_timeout=datetime.timedelta(seconds=60),
                                     producer_id=extra.get("producer_id", -1), producer_epoch=extra.get("producer_epoch", -1))

    async def body() -> None:
        assert (await transactions.init_producer_id(ctx, init_request(), module)).error_code == ErrorCode.not_coordinator
        assert transactions.describe(tid) == (ErrorCode.not_coordinator, None)

        transactions.on_elected(p, 3)
        assert (await transactions.init_producer_id(ctx, init_request(), module)).error_code == ErrorCode.coordinator_load_in_progress
        await _until(lambda: p in transactions.owned)
        answer = await transactions.init_producer_id(ctx, init_request(), module)
        assert answer.error_code == ErrorCode.none
        producer_id, epoch = answer.producer_id, answer.producer_epoch
        added = await transactions.add_partitions(tid, producer_id, epoch, [("t", 0), ("t", 1)])
        assert added == {("t", 0): ErrorCode.none, ("t", 1): ErrorCode.none}
        assert await transactions.end_txn(tid, producer_id, epoch, True) == ErrorCode.none
        # The markers carry the partition's leader epoch as coordinator epoch.
        assert _markers(writer, ("t", 0)) == _markers(writer, ("t", 1)) == [(producer_id, True, 3)]
        assert transactions.describe(tid)[1].state is TxnState.COMPLETE_COMMIT

        # A transaction left between prepare and complete (as a coordinator that stopped
        # there leaves it), and one ongoing past its timeout.
        meta = transactions.txns[tid]
        prepared = TxnMetadata(tid, producer_id, epoch, 60_000, TxnState.PREPARE_ABORT, {("t", 0), ("t", 1)},
                               start_ms=meta.last_update_ms, last_update_ms=meta.last_update_ms)
        _append_txn_state(writer, transactions, prepared)
        late_tid = next(f"late-{i}" for i in range(1000) if transactions.partition_for(f"late-{i}") == p)
        late_pid = broker.next_producer_id()
        old = int(time.time() * 1000) - 120_000
        _append_txn_state(writer, transactions, TxnMetadata(late_tid, late_pid, 0, 1000, TxnState.ONGOING, {("t", 1)},
                                                            start_ms=old, last_update_ms=old))
        transactions.on_resigned(p, 3)
        assert tid not in transactions.txns and transactions.describe(tid) == (ErrorCode.not_coordinator, None)
        assert await transactions.end_txn(tid, producer_id, epoch, True) == ErrorCode.not_coordinator

        transactions.on_elected(p, 4)
        await _until(lambda: p in transactions.owned)
        # Loaded in PrepareAbort: its markers are written again (coordinator epoch 4) and it completes.
        await _until(lambda: transactions.txns[tid].state is TxnState.COMPLETE_ABORT)
        assert _markers(writer, ("t", 0)) == [(producer_id, True, 3), (producer_id, False, 4)]
        # The ongoing one past its timeout is aborted by the timer, its producer fenced.
        await _until(lambda: transactions.txns[late_tid].state is TxnState.COMPLETE_ABORT)
        assert transactions.txns[late_tid].producer_epoch == 1
        assert (late_pid, False, 4) in _markers(writer, ("t", 1))

        # Stale calls are ignored.
        transactions.on_resigned(p, 3)
        assert p in transactions.owned and tid in transactions.txns
        transactions.on_elected(p, 2)
        assert p in transactions.owned and p not in transactions.loading

    _run(groups, transactions, body=body)
    broker.close()


def _write_txn_markers(port: int, producer_id: int, producer_epoch: int, commit: bool,
                       partitions: dict[str, tuple[int, ...]]) -> dict[tuple[str, int], ErrorCode]:
    with RawClient(port) as client:
        response = client.send(WriteTxnMarkersRequest(markers=(WritableTxnMarker(
            producer_id=producer_id, producer_epoch=producer_epoch, transaction_result=commit,
            topics=tuple(WritableTxnMarkerTopic(name=t, partition_indexes=ps) for t, ps in partitions.items()),
            coordinator_epoch=0,
        ),)))
    [marker] = response.markers
    assert marker.producer_id == producer_id
    return {(t.name, p.partition_index): p.error_code for t in marker.topics for p in t.partitions}


def test_write_txn_markers_commits_or_aborts_what_read_committed_consumers_see(broker_factory) -> None:
    broker = broker_factory({"offsets.topic.num.partitions": "4"})
    create_topic(broker.bootstrap, "wtm", 2)
    with RawClient(broker.port) as client:
        txn = RawTxn(client, "wtm-t")
        txn.init()
        txn.add_partitions("wtm", (0, 1))
        txn.produce("wtm", 0, [b"c0", b"c1"])
        txn.produce("wtm", 1, [b"a0", b"a1", b"a2"])
        txn.add_offsets("wtm-g")
        txn.commit_offsets("wtm-g", {("wtm", 0): 2})
    offsets_partition = partition_for("wtm-g", 4)
    # Partition 0 and the group's offsets partition committed, partition 1 aborted, by
    # markers as a transaction coordinator on another broker would send them.
    assert _write_txn_markers(broker.port, txn.producer_id, txn.producer_epoch, True,
                              {"wtm": (0,), OFFSETS_TOPIC: (offsets_partition,)}) == {
        ("wtm", 0): ErrorCode.none, (OFFSETS_TOPIC, offsets_partition): ErrorCode.none}
    assert _write_txn_markers(broker.port, txn.producer_id, txn.producer_epoch, False, {"wtm": (1, 9)}) == {
        ("wtm", 1): ErrorCode.none, ("wtm", 9): ErrorCode.unknown_topic_or_partition}
    with RawClient(broker.port) as client:
        plain = build_batch([(None, b"after")])
        response = client.send(ProduceRequest(
            transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=10),
            topic_data=(TopicProduceData(name="wtm", partition_data=(PartitionProduceData(index=1, records=Records(plain)),)),),
        ))
        assert response.responses[0].partition_responses[0].error_code == ErrorCode.none
    # read_committed: the committed records, and of partition 1 only the plain record
    # after the aborted transaction (without its marker, the consumer would see nothing).
    assert sorted(consume(broker.bootstrap, "wtm", "read_committed", 3)) == ["after", "c0", "c1"]
    # The marker on the offsets partition completed the TxnOffsetCommit.
    assert group_offsets(broker.port, "wtm-g", "wtm", 2) == {0: 2, 1: -1}
