"""A partition replica's role in the cluster: leader or follower, its leader epoch
and ISR, and, as leader, its followers' progress and the high watermark (the
state Kafka's `Partition` keeps for its ReplicaManager).

Sans-IO: the replica manager feeds it follower fetches and clock readings and acts
on what it returns (an ISR to write to ZooKeeper, a high watermark that moved).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Role(Enum):
    LEADER = "leader"
    FOLLOWER = "follower"


@dataclass(slots=True)
class FollowerState:
    """What the leader knows of one follower (Kafka's Replica)."""

    # The follower's log end offset, from its last fetch; -1 until it fetches.
    log_end_offset: int = -1
    # Last time the follower had fetched up to the leader's log end offset as it was
    # then: replica.lag.time.max.ms is measured from here.
    last_caught_up_ms: int = 0
    # The leader's log end offset at the follower's previous fetch, and that fetch's time.
    last_fetch_leader_end_offset: int = -1
    last_fetch_ms: int = 0


@dataclass(slots=True)
class Replication:
    broker_id: int
    role: Role
    leader_id: int
    leader_epoch: int
    isr: tuple[int, ...]
    replicas: tuple[int, ...]
    # The version of the partition state znode this ISR was read or written at.
    zk_version: int
    # The offset at which the current leader epoch began here: a follower joins the
    # ISR only once past it (Kafka's leaderEpochStartOffset).
    epoch_start_offset: int = 0
    followers: dict[int, FollowerState] = field(default_factory=dict)
    # The leader epoch at which this broker last became leader: kept across epoch bumps
    # while it stays leader, so an acks=all wait knows its leadership never lapsed.
    leader_since: int = -1
    # An ISR change is being written: no other until it lands.
    isr_write_pending: bool = False

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    def become_leader(self, now_ms: int, log_end_offset: int) -> None:
        """Followers start with an unknown log end offset; those in the ISR count as
        caught up now, so they are not dropped before their first fetch."""
        self.role = Role.LEADER
        self.epoch_start_offset = log_end_offset
        self.followers = {
            r: FollowerState(last_caught_up_ms=now_ms if r in self.isr else 0)
            for r in self.replicas
            if r != self.broker_id
        }

    def follower_fetched(self, follower_id: int, fetch_offset: int, leader_end_offset: int, now_ms: int) -> bool:
        """A follower fetched from `fetch_offset` (its log end offset). False if it is
        not a replica of this partition (Kafka answers NOT_LEADER_OR_FOLLOWER... here
        the caller answers)."""
        state = self.followers.get(follower_id)
        if state is None:
            return False
        # Kafka's Replica.updateFetchStateOrThrow.
        if fetch_offset >= leader_end_offset:
            state.last_caught_up_ms = max(state.last_caught_up_ms, now_ms)
        elif fetch_offset >= state.last_fetch_leader_end_offset:
            state.last_caught_up_ms = max(state.last_caught_up_ms, state.last_fetch_ms)
        state.log_end_offset = fetch_offset
        state.last_fetch_leader_end_offset = leader_end_offset
        state.last_fetch_ms = now_ms
        return True

    def high_watermark(self, leader_end_offset: int) -> int:
        """The lowest log end offset in the ISR; -1 (unknown) followers hold it back."""
        hw = leader_end_offset
        for r in self.isr:
            if r == self.broker_id:
                continue
            state = self.followers.get(r)
            leo = state.log_end_offset if state is not None else -1
            if leo < hw:
                hw = leo
        return hw

    def isr_to_expand(self, high_watermark: int, live: frozenset[int]) -> tuple[int, ...] | None:
        """A new ISR with the live followers that caught up (to the high watermark and
        the current epoch's start), or None."""
        joining = [
            r
            for r, state in self.followers.items()
            if r not in self.isr
            and r in live
            and state.log_end_offset >= high_watermark
            and state.log_end_offset >= self.epoch_start_offset
        ]
        if not joining:
            return None
        return self.isr + tuple(sorted(joining))

    def isr_to_shrink(self, now_ms: int, lag_time_ms: int, leader_end_offset: int) -> tuple[int, ...] | None:
        """A new ISR without the followers that have not caught up for
        replica.lag.time.max.ms, or None. The leader always stays."""
        leaving = []
        for r in self.isr:
            if r == self.broker_id:
                continue
            state = self.followers.get(r)
            if state is None:
                leaving.append(r)
                continue
            if state.log_end_offset < leader_end_offset and now_ms - state.last_caught_up_ms > lag_time_ms:
                leaving.append(r)
        if not leaving:
            return None
        return tuple(r for r in self.isr if r not in leaving)
