"""Consumer-group offsets translated by `kwire mirror` (MM2's offset syncs, checkpoints and
sync.group.offsets), with two real kwire brokers and the real mirror process.

A group that committed on the source resumes on the target exactly after its last committed
record: nothing committed is read again, nothing is skipped, although the two clusters'
offsets differ (source transactions, committed and aborted, whose markers and aborted
records take offsets upstream and are not copied; records already on the target topic
before the mirror started; the target's own markers with exactly-once). The checkpoints and
offset syncs are checked in MM2's wire format. A group active on the target, or one that
committed further there, is left alone; `groups` / `groups.exclude` choose the groups;
without sync.group.offsets.enabled only checkpoints are written.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from kwire.mirror.offsets import Checkpoint, OffsetSync
from kwire.testing import Broker, Mirror, mirror_properties

TIMEOUT = 30.0
TOPIC = "orders"
REMOTE = f"a.{TOPIC}"
CHECKPOINTS = "a.checkpoints.internal"
OFFSET_SYNCS = "mm2-offset-syncs.b.internal"
PARTITIONS = 3
ROUNDS = 10
# Each round puts on every partition PLAIN records from a non-transactional producer, then a
# committed transaction of TXN records, and in odd rounds an aborted one of ABORTED records:
# 1,000 committed records per partition (3,000 in all), and 50 offsets per partition that
# the mirror does not copy (10 commit markers, 5 aborted transactions of 7 and their markers).
PLAIN = 50
TXN = 50
ABORTED = 7
PER_PARTITION = ROUNDS * (PLAIN + TXN)
# Records already in the remote topic on the target before the mirror starts.
PRE_EXISTING = {0: 15, 1: 40, 2: 0}
# Records the group has consumed when it commits, per partition: the 300th ends a committed
# transaction (the committed offset is its marker's), the 555th is a plain record, the 801st
# the first record after an aborted transaction.
COMMITTED = {0: 300, 1: 555, 2: 801}
# Another group commits the position a Java consumer has after these records: past the
# commit marker that follows record 299 of partition 0, past the marker and the aborted
# transaction (and its marker) that follow record 399 of partition 1 (the committed offset is
# the next record's, so the consumed offset C - 1 is one the mirror did not copy).
POSITIONS = {0: 300, 1: 400, 2: 555}
# Consumed after the commit, never committed: the target must give them again.
UNCOMMITTED = 100
# What the mirror is asked to do every second or so.
FAST = {
    "emit_checkpoints_interval_seconds": 1,
    "sync_group_offsets_interval_seconds": 1,
    "sync_group_offsets_enabled": True,
    "offset_flush_interval_ms": 500,
    "refresh_topics_interval_seconds": 1,
    "refresh_groups_interval_seconds": 1,
}

T = TypeVar("T")


# ------------------------------------------------------------------ helpers


def admin(broker: Broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create_topic(broker: Broker, name: str, partitions: int) -> None:
    client = admin(broker)  # kept alive until the answer: its destruction cancels it
    client.create_topics([NewTopic(name, partitions, 1)])[name].result(TIMEOUT)


def wait_for(
    what: str,
    check: Callable[[], T | None],
    mirror: Mirror,
    timeout: float = TIMEOUT,
    detail: Callable[[], object] | None = None,
) -> T:
    """Poll `check` until it returns something other than None (or False); the failure
    says what `detail` returns then, and the mirror's log."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last is not None and last is not False:
            return last
        time.sleep(0.2)
    found = f" (found {detail()})" if detail is not None else ""
    pytest.fail(f"{what}: not within {timeout:g}s{found}; mirror log:\n{mirror.log_text(tail=40)}")


Record = tuple[int, bytes | None, bytes | None, list[tuple[str, bytes]] | None]


def read_all(
    broker: Broker, topic: str, partitions: int, isolation: str = "read_committed"
) -> dict[int, list[Record]]:
    """Every record of `topic` up to its current end: partition -> [(offset, key, value,
    headers)]."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
            "fetch.wait.max.ms": 10,
        }
    )
    records: dict[int, list[Record]] = {p: [] for p in range(partitions)}
    remaining = set(range(partitions))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    deadline = time.monotonic() + TIMEOUT
    try:
        while remaining:
            assert time.monotonic() < deadline, (
                f"{topic}: partitions {remaining} not read to the end"
            )
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error.str()
                    remaining.discard(message.partition())
                    continue
                records[message.partition()].append(
                    (message.offset(), message.key(), message.value(), message.headers())
                )
    finally:
        consumer.close()
    return records


def high_watermarks(broker: Broker, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "watermarks"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def group_offsets(broker: Broker, group: str) -> dict[tuple[str, int], tuple[int, str]]:
    """The committed offsets of `group` (those at 0 or above) and their metadata."""
    client = admin(broker)
    answer = client.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[
        group
    ].result(TIMEOUT)
    return {
        (tp.topic, tp.partition): (tp.offset, tp.metadata or "")
        for tp in answer.topic_partitions
        if tp.error is None and tp.offset >= 0
    }


def commit_offsets(broker: Broker, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit through an (assigned, memberless) consumer of `group`, as a client would."""
    consumer = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())],
            asynchronous=False,
        )
    finally:
        consumer.close()


def checkpoints(broker: Broker) -> dict[tuple[str, str, int], Checkpoint]:
    """The latest checkpoint per (group, remote topic, partition) on the target."""
    latest = {}
    for _offset, key, value, _headers in read_all(broker, CHECKPOINTS, 1)[0]:
        checkpoint = Checkpoint.decode(key, value)
        latest[(checkpoint.group, checkpoint.topic, checkpoint.partition)] = checkpoint
    return latest


def offset_syncs(broker: Broker) -> list[OffsetSync]:
    return [
        OffsetSync.decode(key, value) for _o, key, value, _h in read_all(broker, OFFSET_SYNCS, 1)[0]
    ]


def assert_clean_log(mirror: Mirror) -> None:
    text = mirror.log_text()
    assert "Traceback" not in text, text[-5000:]
    bad = [line for line in text.splitlines() if " ERROR " in line or " CRITICAL " in line]
    assert not bad, "\n".join(bad)


@contextmanager
def running_mirror(a: Broker, b: Broker, **settings: object) -> Iterator[Mirror]:
    """The mirror a->b; stopped with SIGTERM at the end, which must exit 0 with a log
    without errors."""
    mirror = Mirror(mirror_properties({"a": a, "b": b}, **{**FAST, **settings}))
    try:
        mirror.start()
        yield mirror
        assert mirror.stop() == 0, mirror.log_text(tail=40)
        assert_clean_log(mirror)
    finally:
        mirror.close()


def key_of(partition: int, index: int) -> bytes:
    return f"k-{partition}-{index:04d}".encode()


def produce_source(broker: Broker) -> None:
    """ROUNDS rounds of plain records, a committed transaction, and (odd rounds) an aborted
    one, on every partition; record i of partition p has key k-p-i among committed ones."""
    plain = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    txn = Producer(
        {"bootstrap.servers": broker.bootstrap, "transactional.id": f"source-{uuid.uuid4().hex}"}
    )
    txn.init_transactions(TIMEOUT)

    def send(producer: Producer, partition: int, key: bytes, value: bytes) -> None:
        producer.produce(TOPIC, value, key, partition=partition, headers=[("h", key + b"-header")])

    for round_ in range(ROUNDS):
        for p in range(PARTITIONS):
            for j in range(PLAIN):
                i = round_ * (PLAIN + TXN) + j
                send(plain, p, key_of(p, i), f"plain {p} {i}".encode())
        assert plain.flush(TIMEOUT) == 0
        txn.begin_transaction()
        for p in range(PARTITIONS):
            for j in range(TXN):
                i = round_ * (PLAIN + TXN) + PLAIN + j
                send(txn, p, key_of(p, i), f"txn {p} {i}".encode())
        txn.commit_transaction(TIMEOUT)
        if round_ % 2:
            txn.begin_transaction()
            for p in range(PARTITIONS):
                for j in range(ABORTED):
                    send(txn, p, f"aborted-{p}-{round_}-{j}".encode(), b"never copied")
            assert txn.flush(TIMEOUT) == 0
            txn.abort_transaction(TIMEOUT)


def pre_fill_target(broker: Broker) -> None:
    """The remote topic exists on the target with records of its own before the mirror."""
    create_topic(broker, REMOTE, PARTITIONS)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for p, count in PRE_EXISTING.items():
        for i in range(count):
            producer.produce(REMOTE, b"local", f"local-{p}-{i}".encode(), partition=p)
    assert producer.flush(TIMEOUT) == 0


def consume_and_commit(broker: Broker, group: str) -> dict[int, list[Record]]:
    """The group subscribes on the source, reads COMMITTED[p] + UNCOMMITTED records of each
    partition, commits after COMMITTED[p] of them (with metadata) and closes without
    committing the rest. The records it read, per partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    read: dict[int, list[Record]] = {p: [] for p in range(PARTITIONS)}
    consumer.subscribe([TOPIC])
    deadline = time.monotonic() + TIMEOUT
    try:
        while any(len(read[p]) < COMMITTED[p] + UNCOMMITTED for p in read):
            assert time.monotonic() < deadline, {p: len(r) for p, r in read.items()}
            for message in consumer.consume(500, 0.5):
                assert message.error() is None, message.error().str()
                read[message.partition()].append(
                    (message.offset(), message.key(), message.value(), message.headers())
                )
        consumer.commit(
            offsets=[
                TopicPartition(TOPIC, p, read[p][COMMITTED[p] - 1][0] + 1, metadata=f"{group} {p}")
                for p in range(PARTITIONS)
            ],
            asynchronous=False,
        )
    finally:
        consumer.close()
    return read


def resume(broker: Broker, group: str) -> dict[int, list[Record]]:
    return resume_topic(broker, group, REMOTE, PARTITIONS)


def resume_topic(
    broker: Broker, group: str, topic: str, partitions: int
) -> dict[int, list[Record]]:
    """What a consumer of `group` subscribed to `topic` reads, from the group's committed
    offsets (auto.offset.reset=error: it may not start anywhere else), to the end."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "error",
            "enable.partition.eof": True,
        }
    )
    resumed: dict[int, list[Record]] = {p: [] for p in range(partitions)}
    consumer.subscribe([topic])
    at_end: set[int] = set()
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(at_end) < partitions:
            assert time.monotonic() < deadline, {p: len(r) for p, r in resumed.items()}
            for message in consumer.consume(500, 0.5):
                error = message.error()
                if error is not None:
                    assert error.code() == KafkaError._PARTITION_EOF, error.str()
                    at_end.add(message.partition())
                    continue
                resumed[message.partition()].append(
                    (message.offset(), message.key(), message.value(), message.headers())
                )
    finally:
        consumer.close()
    return resumed


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_group_resumes_on_the_target_exactly_after_its_committed_records(
    exactly_once: bool,
) -> None:
    with Broker() as a, Broker() as b:
        create_topic(a, TOPIC, PARTITIONS)
        pre_fill_target(b)
        settings = {"exactly.once.support": "enabled"} if exactly_once else {}
        with running_mirror(a, b, **settings) as mirror:
            produce_source(a)
            read = consume_and_commit(a, "billing")
            source = read_all(a, TOPIC, PARTITIONS)
            assert all(len(source[p]) == PER_PARTITION for p in source)
            # What the group read is the topic's committed records, in order.
            for p in range(PARTITIONS):
                assert read[p] == source[p][: len(read[p])]
                assert [r[1] for r in source[p]] == [key_of(p, i) for i in range(PER_PARTITION)]
            positions = {p: source[p][POSITIONS[p]][0] for p in range(PARTITIONS)}
            assert positions[0] - source[0][POSITIONS[0] - 1][0] == 2  # the marker
            assert positions[1] - source[1][POSITIONS[1] - 1][0] == 2 + ABORTED + 1
            commit_offsets(a, "billing-positions", {(TOPIC, p): positions[p] for p in positions})
            # A third group has read everything: its position is the end of the source, past
            # the last commit marker, the aborted transaction and its marker.
            ends = high_watermarks(a, TOPIC, PARTITIONS)
            assert all(ends[p] == source[p][-1][0] + 2 + ABORTED + 1 for p in ends)
            commit_offsets(a, "billing-caught-up", {(TOPIC, p): ends[p] for p in ends})
            upstream = {p: source[p][COMMITTED[p] - 1][0] + 1 for p in range(PARTITIONS)}
            assert group_offsets(a, "billing") == {
                (TOPIC, p): (upstream[p], f"billing {p}") for p in range(PARTITIONS)
            }
            # group -> (records consumed per partition, committed offsets, their metadata)
            groups = {
                "billing": (COMMITTED, upstream, "billing {p}"),
                "billing-positions": (POSITIONS, positions, ""),
                "billing-caught-up": ({p: PER_PARTITION for p in ends}, ends, ""),
            }

            def copied() -> dict[int, list[Record]] | None:
                target = read_all(b, REMOTE, PARTITIONS)
                done = all(len(target[p]) >= PRE_EXISTING[p] + PER_PARTITION for p in target)
                return target if done else None

            target = wait_for("3,000 records copied", copied, mirror)
            # The copies: after the target's own records, every committed source record once,
            # with key, value and headers; no aborted record.
            copy_offset: dict[int, dict[bytes | None, int]] = {}
            for p in range(PARTITIONS):
                own, copies = target[p][: PRE_EXISTING[p]], target[p][PRE_EXISTING[p] :]
                assert [r[1] for r in own] == [
                    f"local-{p}-{i}".encode() for i in range(PRE_EXISTING[p])
                ]
                assert [r[1:] for r in copies] == [r[1:] for r in source[p]]
                copy_offset[p] = {r[1]: r[0] for r in copies}

            high = high_watermarks(b, REMOTE, PARTITIONS)
            for p in range(PARTITIONS):
                if exactly_once:  # the mirror's commit markers take offsets on the target
                    assert high[p] > PRE_EXISTING[p] + PER_PARTITION
                else:
                    assert high[p] == PRE_EXISTING[p] + PER_PARTITION

            # The translation of a committed offset: after the copy of the last record the
            # group consumed, and at the latest at the copy of the next one, or the end (the
            # same offset unless the target holds a marker of the mirror's in between, with
            # exactly-once). The clusters' offsets differ: an untranslated offset is wrong.
            def expected(consumed: dict[int, int], p: int) -> range:
                after = copy_offset[p][source[p][consumed[p] - 1][1]] + 1
                if consumed[p] == PER_PARTITION:
                    return range(after, high[p] + 1)
                return range(after, copy_offset[p][source[p][consumed[p]][1]] + 1)

            for consumed, committed, _ in groups.values():
                for p in range(PARTITIONS):
                    assert committed[p] not in expected(consumed, p), (committed, p)
                    assert exactly_once or len(expected(consumed, p)) == 1

            def translated() -> dict[str, dict[int, int]] | None:
                found = {}
                for group, (consumed, _, metadata) in groups.items():
                    offsets = group_offsets(b, group)
                    if set(offsets) != {(REMOTE, p) for p in range(PARTITIONS)}:
                        return None
                    for p in range(PARTITIONS):
                        offset, found_metadata = offsets[(REMOTE, p)]
                        if offset not in expected(consumed, p):
                            return None
                        assert found_metadata == metadata.format(p=p)
                    found[group] = {p: offsets[(REMOTE, p)][0] for p in range(PARTITIONS)}
                return found

            wanted = {
                group: {p: expected(consumed, p) for p in range(PARTITIONS)}
                for group, (consumed, _, _) in groups.items()
            }
            wait_for(
                f"translated offsets {wanted} on b",
                translated,
                mirror,
                detail=lambda: {group: group_offsets(b, group) for group in groups},
            )
            # Two more checkpoint and sync rounds: nothing moves any more.
            time.sleep(2.5)
            downstream = translated()
            assert downstream is not None, {group: group_offsets(b, group) for group in groups}

            # MM2's checkpoints on the target: group, remote topic, partition, upstream and
            # downstream offsets, metadata.
            latest = checkpoints(b)
            for group, (_, committed, metadata) in groups.items():
                for p in range(PARTITIONS):
                    assert latest[(group, REMOTE, p)] == Checkpoint(
                        group, REMOTE, p, committed[p], downstream[group][p], metadata.format(p=p)
                    )
            assert {key[0] for key in latest} == set(groups)

            # MM2's offset syncs on the source: each pairs a source record with its copy, and
            # every stretch where offsets do not advance together starts with one.
            syncs = offset_syncs(a)
            assert syncs
            source_key = {p: {r[0]: r[1] for r in source[p]} for p in range(PARTITIONS)}
            target_key = {p: {r[0]: r[1] for r in target[p]} for p in range(PARTITIONS)}
            for sync in syncs:
                assert sync.topic == TOPIC and 0 <= sync.partition < PARTITIONS, sync
                p = sync.partition
                assert (
                    source_key[p][sync.upstream_offset] == target_key[p][sync.downstream_offset]
                ), sync
            for p in range(PARTITIONS):
                synced = {s.upstream_offset for s in syncs if s.partition == p}
                offsets = [r[0] for r in source[p]]
                copies = [copy_offset[p][r[1]] for r in source[p]]
                for i in range(1, len(offsets)):
                    if offsets[i] - offsets[i - 1] != 1 or copies[i] - copies[i - 1] != 1:
                        assert offsets[i] in synced, (p, offsets[i])
                assert offsets[0] in synced

            # The groups on the target: no reset allowed, they must find their offsets; each
            # reads first the copy of the first record it had not committed on the source,
            # then the rest.
            for group, (consumed, _, _) in groups.items():
                resumed = resume(b, group)
                for p in range(PARTITIONS):
                    if consumed[p] < PER_PARTITION:
                        first = source[p][consumed[p]]
                        assert resumed[p][0][1:] == first[1:], (group, p, resumed[p][0], first)
                        assert resumed[p][0][1] == key_of(p, consumed[p])
                    assert [r[1:] for r in resumed[p]] == [r[1:] for r in source[p][consumed[p] :]]


def test_groups_active_or_ahead_on_the_target_are_left_alone() -> None:
    topic, remote, count = "events", "a.events", 200
    with Broker() as a, Broker() as b:
        create_topic(a, topic, 2)
        producer = Producer({"bootstrap.servers": a.bootstrap})
        for p in range(2):
            for i in range(count):
                producer.produce(topic, f"{p}-{i}".encode(), partition=p)
        assert producer.flush(TIMEOUT) == 0
        with running_mirror(a, b) as mirror:
            wait_for(
                "events copied",
                lambda: high_watermarks(b, remote, 2) == {0: count, 1: count},
                mirror,
            )
            # "ahead" has moved on by itself on the target, "live" has a member there.
            commit_offsets(b, "ahead", {(remote, 0): 150, (remote, 1): 150})
            live = Consumer(
                {
                    "bootstrap.servers": b.bootstrap,
                    "group.id": "live",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "latest",
                }
            )
            try:
                live.subscribe([remote])
                deadline = time.monotonic() + TIMEOUT
                while not live.assignment():
                    assert time.monotonic() < deadline, "live consumer never assigned"
                    live.poll(0.2)
                client = admin(b)
                state = client.describe_consumer_groups(["live"])["live"].result(TIMEOUT).state
                assert state.name == "STABLE", state

                for group in ("live", "ahead", "control"):
                    commit_offsets(a, group, {(topic, 0): 50, (topic, 1): 60})
                # The control group shows the mirror syncs groups at all.
                wait_for(
                    "control synced",
                    lambda: (
                        group_offsets(b, "control")
                        == {(remote, 0): (50, ""), (remote, 1): (60, "")}
                    ),
                    mirror,
                )
                # Checkpoints of the other two are there: the mirror did consider them.
                for group in ("live", "ahead"):
                    wait_for(
                        f"checkpoints of {group}",
                        lambda group=group: all(
                            (group, remote, p) in checkpoints(b) for p in range(2)
                        ),
                        mirror,
                    )
                # A few more sync rounds (1 s each): still untouched.
                until = time.monotonic() + 3.5
                while time.monotonic() < until:
                    live.poll(0.2)
                    assert group_offsets(b, "live") == {}
                    assert group_offsets(b, "ahead") == {
                        (remote, 0): (150, ""),
                        (remote, 1): (150, ""),
                    }
                # Not even tried (the broker would refuse a commit from outside the live
                # group's generation, and the mirror would log that it could not).
                tried = [line for line in mirror.log_text().splitlines() if " live" in line]
                assert not tried, tried
            finally:
                live.close()
            # Once its member has left, the group is synced; "ahead" moves when the source
            # gets ahead of it, on the partition where it does.
            wait_for(
                "live synced after its member left",
                lambda: group_offsets(b, "live") == {(remote, 0): (50, ""), (remote, 1): (60, "")},
                mirror,
            )
            commit_offsets(a, "ahead", {(topic, 0): 180, (topic, 1): 100})
            wait_for(
                "ahead moved on partition 0 only",
                lambda: (
                    group_offsets(b, "ahead") == {(remote, 0): (180, ""), (remote, 1): (150, "")}
                ),
                mirror,
            )


def test_groups_and_groups_exclude_choose_the_groups() -> None:
    topic, remote = "events", "a.events"
    with Broker() as a, Broker() as b:
        create_topic(a, topic, 1)
        producer = Producer({"bootstrap.servers": a.bootstrap})
        for i in range(100):
            producer.produce(topic, str(i).encode(), partition=0)
        assert producer.flush(TIMEOUT) == 0
        names = {"a->b.groups": "billing.*, audit", "a->b.groups.exclude": "billing-secret.*"}
        included = {"billing": 10, "billing-eu": 20, "audit": 30}
        excluded = {"billing-secret": 40, "billing-secret-2": 50, "other": 60, "audit-2": 70}
        for group, offset in {**included, **excluded}.items():
            commit_offsets(a, group, {(topic, 0): offset})
        with running_mirror(a, b, **names) as mirror:
            for group, offset in included.items():
                wait_for(
                    f"{group} synced",
                    lambda group=group, offset=offset: (
                        group_offsets(b, group) == {(remote, 0): (offset, "")}
                    ),
                    mirror,
                )
            # Two more checkpoint rounds: nothing for the excluded groups.
            time.sleep(2.5)
            latest = checkpoints(b)
            assert {key[0] for key in latest} == set(included)
            for group, offset in included.items():
                assert latest[(group, remote, 0)] == Checkpoint(group, remote, 0, offset, offset)
            for group in excluded:
                assert group_offsets(b, group) == {}


def test_without_sync_group_offsets_only_checkpoints_are_written() -> None:
    topic, remote = "events", "a.events"
    with Broker() as a, Broker() as b:
        create_topic(a, topic, 1)
        producer = Producer({"bootstrap.servers": a.bootstrap})
        for i in range(100):
            producer.produce(topic, str(i).encode(), partition=0)
        assert producer.flush(TIMEOUT) == 0
        commit_offsets(a, "billing", {(topic, 0): 40})
        with running_mirror(a, b, sync_group_offsets_enabled=False) as mirror:
            wait_for(
                "billing's checkpoint",
                lambda: (
                    checkpoints(b).get(("billing", remote, 0))
                    == Checkpoint("billing", remote, 0, 40, 40)
                ),
                mirror,
            )
            # Two more sync intervals (1 s) had it been enabled: the target's group has none.
            time.sleep(2.5)
            assert group_offsets(b, "billing") == {}


def test_groups_resume_exactly_after_the_mirror_was_killed_twice() -> None:
    """SIGKILLed twice mid-copy, the mirror copies again what came after its stored progress
    (at least once: the target holds those records twice). Groups that committed anywhere,
    before, inside or after the stretches copied twice, or at the end, resume at the copy of
    their first uncommitted record (translated through the latest run's offset syncs), read
    nothing they had committed, and miss nothing."""
    topic, remote, partitions, at_least = "payments", "a.payments", 2, 12_000
    # records each group consumed per partition (and one that consumed everything)
    consumed = (1, 500, 2_000, 3_500, 5_000, 6_500, 8_000, 9_500, 11_000)
    with Broker() as a, Broker() as b:
        create_topic(a, topic, partitions)
        # progress stored every second: a kill loses up to a second of it, copied again
        with running_mirror(a, b, offset_flush_interval_ms=1000) as mirror:
            done, stop = threading.Event(), threading.Event()
            failure: list[BaseException] = []

            def produce() -> None:  # 150 records a partition every 50 ms or so, until told
                try:
                    producer = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 5})
                    start = 0
                    while start < at_least or not stop.is_set():
                        for p in range(partitions):
                            for i in range(start, start + 150):
                                producer.produce(topic, b"x" * 20, f"{p}-{i:05d}", partition=p)
                        assert producer.flush(TIMEOUT) == 0
                        start += 150
                        time.sleep(0.05)
                except BaseException as e:
                    failure.append(e)
                finally:
                    done.set()

            thread = threading.Thread(target=produce)
            thread.start()
            try:
                for _ in range(2):
                    before = sum(high_watermarks(b, remote, partitions).values())
                    wait_for(
                        "more records copied",
                        lambda before=before: (
                            sum(high_watermarks(b, remote, partitions).values()) > before + 2_000
                        ),
                        mirror,
                    )
                    time.sleep(1.2)  # some progress stored by this run, some not yet
                    mirror.kill()
                    mirror.start()
            finally:
                stop.set()
                thread.join(TIMEOUT)
            assert done.is_set() and not failure, failure
            source = read_all(a, topic, partitions)
            per_partition = len(source[0])
            assert per_partition >= at_least
            assert all(len(source[p]) == per_partition for p in source)

            def everything_copied() -> dict[int, list[Record]] | None:
                copies = read_all(b, remote, partitions)
                for p in range(partitions):
                    if {r[1] for r in copies[p]} != {r[1] for r in source[p]}:
                        return None
                return copies

            target = wait_for("everything copied", everything_copied, mirror)
            duplicates = sum(len(target[p]) - per_partition for p in target)
            assert duplicates > 0, "no record copied twice: the kills did not test anything"

            groups = {f"g{n}": n for n in (*consumed, per_partition)}
            for group, n in groups.items():
                commit_offsets(a, group, {(topic, p): source[p][n - 1][0] + 1 for p in source})

            def settled() -> dict[str, dict[tuple[str, int], tuple[int, str]]] | None:
                # every group at its latest checkpoint on the target, twice in a row 1.5 s apart
                def snapshot() -> dict[str, dict[tuple[str, int], tuple[int, str]]] | None:
                    latest = checkpoints(b)
                    found = {group: group_offsets(b, group) for group in groups}
                    for group in groups:
                        for p in range(partitions):
                            checkpoint = latest.get((group, remote, p))
                            if checkpoint is None or found[group].get((remote, p)) != (
                                checkpoint.downstream_offset,
                                "",
                            ):
                                return None
                    return found

                first = snapshot()
                if first is None:
                    return None
                time.sleep(1.5)
                return first if snapshot() == first else None

            wait_for("groups translated", settled, mirror, timeout=60)
            for group, n in groups.items():
                resumed = resume_topic(b, group, remote, partitions)
                for p in range(partitions):
                    keys = [r[1] for r in resumed[p]]
                    wanted = [r[1] for r in source[p][n:]]
                    # the first record not committed first, then everything after it in
                    # order (some twice), nothing committed before
                    assert keys[:1] == wanted[:1], (group, p, keys[:3], wanted[:3])
                    assert set(keys) == set(wanted), (group, p)
                    assert list(dict.fromkeys(keys)) == wanted, (group, p)
