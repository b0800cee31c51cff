"""The transaction state machine and the records of __transaction_state, sans-IO."""

from __future__ import annotations

import itertools

import pytest
from kio.schema.errors import ErrorCode

from kwire.coordinator import transactions as tx
from kwire.coordinator.transactions import TxnError, TxnMetadata, TxnState


def ids() -> itertools.count:
    return itertools.count(1000)


def init(meta: TxnMetadata | None, pid: int = -1, epoch: int = -1, counter: itertools.count | None = None):
    counter = counter or ids()
    return tx.init_producer_id(meta, "t", 60_000, pid, epoch, 1, lambda: next(counter))


def test_new_id_starts_at_epoch_0_and_each_init_bumps() -> None:
    meta, plan = init(None)
    assert (meta.producer_id, meta.producer_epoch, meta.state, plan) == (1000, 0, TxnState.EMPTY, None)
    meta, _ = init(meta)
    assert (meta.producer_id, meta.producer_epoch) == (1000, 1)


def test_kip360_bump_with_current_epoch_and_retry_of_last_answer() -> None:
    meta, _ = init(None)
    meta, _ = init(meta, 1000, 0)
    assert meta.producer_epoch == 1
    # A retry carrying the epoch before the bump gets the same answer again.
    meta, _ = init(meta, 1000, 0)
    assert meta.producer_epoch == 1
    with pytest.raises(TxnError) as e:
        init(meta, 1000, 5)
    assert e.value.error_code is ErrorCode.producer_fenced


def test_exhausted_epoch_takes_a_new_producer_id() -> None:
    counter = ids()
    meta, _ = init(None, counter=counter)
    meta.producer_epoch = tx.MAX_EPOCH - 1
    meta, _ = init(meta, counter=counter)
    assert (meta.producer_id, meta.producer_epoch) == (1001, 0)


def test_init_fences_an_ongoing_transaction_with_an_abort() -> None:
    meta, _ = init(None)
    assert tx.add_partitions(meta, 1000, 0, [("a", 0), ("b", 1)], 5)
    meta, plan = init(meta)
    assert plan == tx.EndPlan(1000, 1, False, [("a", 0), ("b", 1)])
    assert (meta.producer_epoch, meta.state, meta.partitions) == (2, TxnState.EMPTY, set())
    with pytest.raises(TxnError) as e:
        tx.add_partitions(meta, 1000, 0, [("a", 0)], 6)
    assert e.value.error_code is ErrorCode.producer_fenced


def test_add_partitions_checks_the_producer() -> None:
    meta, _ = init(None)
    with pytest.raises(TxnError) as e:
        tx.add_partitions(meta, 7, 0, [("a", 0)], 5)
    assert e.value.error_code is ErrorCode.invalid_producer_id_mapping
    with pytest.raises(TxnError) as e:
        tx.add_partitions(None, 7, 0, [("a", 0)], 5)
    assert e.value.error_code is ErrorCode.invalid_producer_id_mapping
    assert tx.add_partitions(meta, 1000, 0, [("a", 0)], 5)
    assert (meta.state, meta.start_ms) == (TxnState.ONGOING, 5)
    assert not tx.add_partitions(meta, 1000, 0, [("a", 0)], 6)  # nothing new to persist
    assert tx.add_partitions(meta, 1000, 0, [("a", 1)], 7)
    assert meta.partitions == {("a", 0), ("a", 1)} and meta.start_ms == 5


def test_end_transaction_states() -> None:
    meta, _ = init(None)
    with pytest.raises(TxnError) as e:
        tx.prepare_end(meta, 1000, 0, True, 5)
    assert e.value.error_code is ErrorCode.invalid_txn_state
    tx.add_partitions(meta, 1000, 0, [("a", 0)], 5)
    plan = tx.prepare_end(meta, 1000, 0, True, 6)
    assert plan == tx.EndPlan(1000, 0, True, [("a", 0)]) and meta.state is TxnState.PREPARE_COMMIT
    with pytest.raises(TxnError) as e:
        tx.prepare_end(meta, 1000, 0, True, 6)
    assert e.value.error_code is ErrorCode.concurrent_transactions
    with pytest.raises(TxnError) as e:
        tx.add_partitions(meta, 1000, 0, [("a", 0)], 6)
    assert e.value.error_code is ErrorCode.concurrent_transactions
    tx.complete_end(meta, 7)
    assert (meta.state, meta.partitions) == (TxnState.COMPLETE_COMMIT, set())
    assert tx.prepare_end(meta, 1000, 0, True, 8) is None  # a retried commit
    with pytest.raises(TxnError) as e:
        tx.prepare_end(meta, 1000, 0, False, 8)
    assert e.value.error_code is ErrorCode.invalid_txn_state
    # The next transaction starts from a completed one.
    assert tx.add_partitions(meta, 1000, 0, [("b", 0)], 9)
    assert tx.prepare_end(meta, 1000, 0, False, 10) is not None
    tx.complete_end(meta, 11)
    assert meta.state is TxnState.COMPLETE_ABORT


def test_timeout_aborts_with_a_bumped_epoch_and_fences() -> None:
    meta, _ = init(None)
    tx.add_partitions(meta, 1000, 0, [("a", 0)], 5)
    assert meta.deadline() == 60_005
    plan = tx.timeout_abort(meta, 60_005)
    assert plan == tx.EndPlan(1000, 1, False, [("a", 0)])
    tx.complete_end(meta, 60_006)
    assert meta.state is TxnState.COMPLETE_ABORT and meta.deadline() is None
    with pytest.raises(TxnError) as e:
        tx.prepare_end(meta, 1000, 0, True, 60_007)
    assert e.value.error_code is ErrorCode.producer_fenced
    assert tx.timeout_abort(meta, 60_008) is None


def test_expiration_and_recovery() -> None:
    meta, _ = init(None)
    assert tx.expired(meta, 1 + 100, 100) and not tx.expired(meta, 50, 100)
    tx.add_partitions(meta, 1000, 0, [("a", 0)], 5)
    assert not tx.expired(meta, 10**9, 100)  # never while a transaction is open
    assert tx.recovery_plan(meta) is None
    tx.prepare_end(meta, 1000, 0, False, 6)
    assert tx.recovery_plan(meta) == tx.EndPlan(1000, 0, False, [("a", 0)])


def test_invalid_timeout() -> None:
    tx.validate_timeout(900_000, 900_000)
    for bad in (0, 900_001):
        with pytest.raises(TxnError) as e:
            tx.validate_timeout(bad, 900_000)
        assert e.value.error_code is ErrorCode.invalid_transaction_timeout


def test_log_records_round_trip_in_kafka_layout() -> None:
    meta = TxnMetadata("my-txn", 42, 3, 60_000, TxnState.ONGOING, {("b", 1), ("a", 0), ("a", 2)}, 100, 200)
    key = tx.encode_key("my-txn")
    assert key == b"\x00\x00\x00\x06my-txn"
    value = tx.encode_value(meta)
    # version 0, producer id, epoch, timeout, status, then partitions by topic
    assert value[:17] == b"\x00\x00" + (42).to_bytes(8, "big") + b"\x00\x03" + (60_000).to_bytes(4, "big") + b"\x01"
    assert tx.decode_key(key) == "my-txn"
    back = tx.decode_value("my-txn", value)
    assert back == meta


def test_flexible_value_v1_is_read() -> None:
    # v1: compact strings/arrays (length + 1) and tagged fields.
    value = (
        b"\x00\x01" + (7).to_bytes(8, "big") + b"\x00\x02" + (1000).to_bytes(4, "big") + b"\x04"
        + b"\x02" + b"\x02t" + b"\x02" + (3).to_bytes(4, "big") + b"\x00"
        + (5).to_bytes(8, "big") + (4).to_bytes(8, "big") + b"\x00"
    )
    meta = tx.decode_value("x", value)
    assert (meta.producer_id, meta.producer_epoch, meta.state, meta.partitions) == (7, 2, TxnState.COMPLETE_COMMIT, {("t", 3)})
    assert (meta.last_update_ms, meta.start_ms) == (5, 4)
