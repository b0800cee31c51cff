"""The cluster's decisions without I/O: the controller's `plan` over a mirror of
ZooKeeper, and a leader's `Replication` (high watermark, ISR shrink and expand)
driven by follower fetches and a fake clock."""

from __future__ import annotations

import uuid

from kwire.cluster import zk_layout as layout
from kwire.cluster.controller import plan, preferred_leader_changes
from kwire.cluster.metadata_image import BrokerRegistration
from kwire.cluster.replication import Replication, Role
from kwire.cluster.zk_metadata import ZkMirror, ZkPartitionState


def mirror(live: set[int], replicas: tuple[int, ...], state: tuple[int, int, tuple[int, ...]] | None) -> ZkMirror:
    m = ZkMirror()
    m.brokers = {b: BrokerRegistration(b, {}) for b in live}
    m.topics = {"t": layout.TopicAssignment(uuid.uuid4(), {0: replicas})}
    if state is not None:
        leader, epoch, isr = state
        m.states[("t", 0)] = ZkPartitionState(leader, epoch, isr, 1, 7)
    return m


def only_change(m: ZkMirror, **kw: object):  # type: ignore[no-untyped-def]
    changes = plan(m, controller_epoch=1, **kw)  # type: ignore[arg-type]
    assert len(changes) <= 1
    return changes[0] if changes else None


def test_a_new_partition_gets_its_first_live_replica_as_leader_and_every_live_one_in_sync() -> None:
    change = only_change(mirror({2, 3}, (1, 2, 3), None))
    assert (change.leader, change.leader_epoch, change.isr, change.zk_version) == (2, 0, (2, 3), -1)
    assert only_change(mirror(set(), (1, 2, 3), None)) is None  # stays new until a replica is up


def test_an_offline_leader_is_replaced_from_the_isr_in_replica_order() -> None:
    change = only_change(mirror({2, 3}, (1, 2, 3), (1, 4, (1, 3, 2))))
    assert (change.leader, change.leader_epoch, change.isr, change.zk_version) == (2, 5, (3, 2), 7)


def test_no_live_isr_member_leaves_the_partition_offline_keeping_the_last_isr() -> None:
    change = only_change(mirror({3}, (1, 2, 3), (1, 4, (1,))))
    assert (change.leader, change.isr) == (-1, (1,))
    # Once offline, nothing more until an ISR member returns...
    offline = mirror({3}, (1, 2, 3), (-1, 5, (1,)))
    assert only_change(offline) is None
    # ...or unclean election is allowed: the out-of-sync replica leads alone.
    unclean = only_change(offline, unclean=lambda topic: True)
    assert (unclean.leader, unclean.isr, unclean.reason) == (3, (3,), "unclean leader election")
    back = only_change(mirror({1, 3}, (1, 2, 3), (-1, 5, (1,))))
    assert (back.leader, back.isr) == (1, (1,))


def test_an_offline_follower_leaves_the_isr_and_the_leader_stays() -> None:
    change = only_change(mirror({1, 2}, (1, 2, 3), (1, 4, (1, 2, 3))))
    assert (change.leader, change.leader_epoch, change.isr) == (1, 5, (1, 2))
    assert only_change(mirror({1, 2, 3}, (1, 2, 3), (1, 4, (1, 2, 3)))) is None


def test_a_shutting_down_leader_hands_over_and_leaves_the_isr() -> None:
    m = mirror({1, 2, 3}, (1, 2, 3), (1, 4, (1, 2, 3)))
    change = only_change(m, shutting_down=frozenset({1}))
    assert (change.leader, change.isr) == (2, (2, 3))
    # Alone in the ISR it keeps leading until it stops.
    assert only_change(mirror({1, 2, 3}, (1, 2, 3), (1, 4, (1,))), shutting_down=frozenset({1})) is None


def test_preferred_leader_election_only_when_the_preferred_replica_is_live_and_in_sync() -> None:
    m = mirror({1, 2, 3}, (1, 2, 3), (2, 4, (2, 3, 1)))
    [change] = preferred_leader_changes(m, [("t", 0)])
    assert (change.leader, change.leader_epoch) == (1, 5)
    assert preferred_leader_changes(mirror({1, 2, 3}, (1, 2, 3), (2, 4, (2, 3))), [("t", 0)]) == []


def leader(isr: tuple[int, ...] = (1, 2, 3), now: int = 0, log_end: int = 10) -> Replication:
    r = Replication(1, Role.LEADER, 1, 3, isr, (1, 2, 3), 0)
    r.become_leader(now, log_end)
    return r


def test_the_high_watermark_is_the_lowest_log_end_in_the_isr() -> None:
    r = leader()
    assert r.high_watermark(10) == -1  # followers not heard from yet hold it back
    r.follower_fetched(2, 10, 10, 100)
    r.follower_fetched(3, 7, 10, 100)
    assert r.high_watermark(10) == 7
    r.isr = (1, 2)
    assert r.high_watermark(10) == 10


def test_a_follower_lagging_past_the_lag_time_leaves_the_isr_and_returns_when_caught_up() -> None:
    r = leader(now=0)
    r.follower_fetched(2, 10, 10, 1_000)
    r.follower_fetched(3, 5, 10, 1_000)  # behind since it became a follower at 0
    assert r.isr_to_shrink(25_000, 30_000, 10) is None
    assert r.isr_to_shrink(30_001, 30_000, 10) == (1, 2)
    r.isr = (1, 2)
    assert r.isr_to_expand(10, frozenset({1, 2, 3})) is None  # 3 is at 5, the high watermark 10
    r.follower_fetched(3, 10, 10, 31_000)
    assert r.isr_to_expand(10, frozenset({1, 2, 3})) == (1, 2, 3)
    # Not while it is not a live (registered) broker.
    assert r.isr_to_expand(10, frozenset({1, 2})) is None


def test_a_follower_must_reach_the_current_epochs_start_to_join() -> None:
    r = leader(isr=(1,), log_end=50)  # the epoch began at 50
    r.follower_fetched(2, 40, 50, 10)
    assert r.isr_to_expand(40, frozenset({1, 2})) is None
    r.follower_fetched(2, 50, 50, 20)
    assert r.isr_to_expand(40, frozenset({1, 2})) == (1, 2)


def test_unknown_followers_are_refused() -> None:
    r = leader()
    assert r.follower_fetched(9, 10, 10, 0) is False
