"""The sans-IO group state machine and the `__consumer_offsets` codec.

Time is an int passed in: timers fire when a test calls `tick(now)`, never by sleeping.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from kio.schema.errors import ErrorCode

from kwire.coordinator import offsets_codec as codec
from kwire.coordinator.group import (
    NEW_MEMBER_JOIN_TIMEOUT_MS,
    Group,
    GroupConfig,
    GroupState,
    JoinResult,
    Member,
    OffsetAndMetadata,
    Reply,
    SyncResult,
)

SESSION = 10_000
REBALANCE = 30_000
RANGE = [("range", b"r-meta")]


def subscription(*topics: str, version: int = 1) -> bytes:
    out = struct.pack(">hi", version, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)  # user data null


class Harness:
    """A group, a fake clock and helpers that speak for its members."""

    def __init__(self, delay: int = 0, **config: int) -> None:
        self.now = 1_000_000
        self.stored: list[dict[str, bytes]] = []
        self.persist_error = ErrorCode.none
        ids = itertools.count(1)
        self.group = Group(
            "g",
            GroupConfig(initial_rebalance_delay_ms=delay, **config),
            self.now,
            self._persist,
            new_member_id=lambda prefix: f"{prefix}-{next(ids)}",
        )

    def _persist(self, group: Group, assignment: dict[str, bytes]) -> ErrorCode:
        self.stored.append(dict(assignment))
        return self.persist_error

    def advance(self, ms: int) -> None:
        self.now += ms
        self.group.tick(self.now)

    def join(
        self,
        member_id: str = "",
        *,
        client: str = "c",
        instance: str | None = None,
        protocols=RANGE,
        protocol_type: str = "consumer",
        session: int = SESSION,
        rebalance: int = REBALANCE,
        require_known: bool = True,
        skip: bool = True,
    ) -> Reply[JoinResult]:
        reply: Reply[JoinResult] = Reply()
        self.group.join(
            self.now,
            reply,
            member_id=member_id,
            group_instance_id=instance,
            client_id=client,
            client_host="/127.0.0.1",
            rebalance_timeout_ms=rebalance,
            session_timeout_ms=session,
            protocol_type=protocol_type,
            protocols=protocols,
            require_known_member_id=require_known,
            supports_skip_assignment=skip,
        )
        return reply

    def new_member(self, client: str = "c", **kw) -> Reply[JoinResult]:
        """KIP-394: a first join is refused with a member id; join again with it."""
        first = self.join(client=client, **kw)
        assert first.value.error is ErrorCode.member_id_required
        return self.join(first.value.member_id, client=client, **kw)

    def sync(self, member_id: str, generation: int | None = None, assignments=None, instance=None) -> Reply[SyncResult]:
        reply: Reply[SyncResult] = Reply()
        self.group.sync(
            self.now,
            reply,
            member_id=member_id,
            group_instance_id=instance,
            generation_id=self.group.generation_id if generation is None else generation,
            protocol_type=None,
            protocol_name=None,
            assignments=assignments or {},
        )
        return reply

    def heartbeat(self, member_id: str, generation: int | None = None, instance=None) -> ErrorCode:
        return self.group.heartbeat(
            self.now,
            member_id=member_id,
            group_instance_id=instance,
            generation_id=self.group.generation_id if generation is None else generation,
        )

    def stable_group(self, n: int, **kw) -> list[str]:
        """n members in a Stable group; the assignment of member i is b'a<i>'."""
        replies = [self.new_member(client=f"c{i}", **kw) for i in range(n)]
        # With delay 0 the first member completes generation 1 alone; the rest rebalance.
        if self.group.state is GroupState.PREPARING_REBALANCE:
            for r in replies:
                if r.done and r.value.error is ErrorCode.none:
                    self.join(r.value.member_id, **kw)
        assert self.group.state is GroupState.COMPLETING_REBALANCE, self.group
        ids = list(self.group.members)
        leader = self.group.leader_id
        assignments = {m: f"a{i}".encode() for i, m in enumerate(ids)}
        self.sync(leader, assignments=assignments)
        for m in ids:
            if m != leader:
                self.sync(m)
        assert self.group.state is GroupState.STABLE
        return ids


# ---- joining -------------------------------------------------------------------------


def test_first_join_requires_member_id_then_completes_generation_one():
    h = Harness()
    first = h.join(client="app")
    assert first.value.error is ErrorCode.member_id_required
    assert first.value.member_id == "app-1"
    assert h.group.state is GroupState.EMPTY
    assert "app-1" in h.group.pending_members

    second = h.join("app-1", client="app")
    result = second.value
    assert result.error is ErrorCode.none
    assert (result.generation_id, result.leader, result.member_id) == (1, "app-1", "app-1")
    assert result.protocol_type == "consumer" and result.protocol_name == "range"
    assert [(m.member_id, m.metadata) for m in result.members] == [("app-1", b"r-meta")]
    assert h.group.state is GroupState.COMPLETING_REBALANCE

    sync = h.sync("app-1", assignments={"app-1": b"assigned"})
    assert sync.value == SyncResult(ErrorCode.none, "consumer", "range", b"assigned")
    assert h.group.state is GroupState.STABLE
    assert h.stored == [{"app-1": b"assigned"}]


def test_old_clients_join_without_member_id_round_trip():
    h = Harness()
    reply = h.join(client="old", require_known=False)
    assert reply.value.error is ErrorCode.none
    assert reply.value.member_id == "old-1"


def test_join_with_unknown_member_id_is_refused():
    h = Harness()
    h.stable_group(1)
    assert h.join("nobody").value.error is ErrorCode.unknown_member_id


def test_initial_rebalance_delay_waits_and_extends_for_new_members():
    h = Harness(delay=3000)
    a = h.new_member(client="a")
    assert not a.done and h.group.state is GroupState.PREPARING_REBALANCE
    assert h.group.next_deadline() == h.now + 3000
    h.advance(100)
    b = h.new_member(client="b")
    h.advance(2900)  # the first delay ends, but b joined meanwhile: wait another delay
    assert not a.done and not b.done
    h.advance(2999)
    assert not a.done
    h.advance(1)
    assert a.value.error is ErrorCode.none and b.value.error is ErrorCode.none
    assert a.value.generation_id == b.value.generation_id == 1
    leader = h.group.leader_id
    joined = a.value if a.value.member_id == leader else b.value
    assert len(joined.members) == 2


def test_initial_delay_is_bounded_by_rebalance_timeout():
    h = Harness(delay=3000)
    a = h.new_member(client="a", rebalance=4000)
    h.advance(10)
    h.new_member(client="b", rebalance=4000)
    h.advance(2990)  # extended by min(3000, remaining 1000)
    assert not a.done
    h.advance(1000)
    assert a.done


def test_second_member_triggers_rebalance_and_leader_gets_all_metadata():
    h = Harness()
    (m1,) = h.stable_group(1)
    m2_join = h.new_member(client="c2")
    assert not m2_join.done
    assert h.group.state is GroupState.PREPARING_REBALANCE
    # The old member learns of the rebalance by heartbeat, and rejoins.
    assert h.heartbeat(m1) is ErrorCode.rebalance_in_progress
    m1_join = h.join(m1)
    assert m1_join.done and m2_join.done
    assert h.group.generation_id == 2
    assert m1_join.value.leader == m1
    assert {m.member_id for m in m1_join.value.members} == {m1, m2_join.value.member_id}
    assert m2_join.value.members == []

    m2 = m2_join.value.member_id
    follower_sync = h.sync(m2)
    assert not follower_sync.done  # waits for the leader's assignment
    assert h.heartbeat(m2) is ErrorCode.none
    leader_sync = h.sync(m1, assignments={m1: b"x", m2: b"y"})
    assert leader_sync.value.assignment == b"x"
    assert follower_sync.value.assignment == b"y"
    assert h.group.state is GroupState.STABLE


def test_member_missing_the_rebalance_timeout_is_removed():
    h = Harness()
    m1, m2 = h.stable_group(2)
    assert h.group.leader_id == m1
    # The leader rejoins; m2 stays silent, but its session outlives the rebalance.
    h.group.members[m2].session_timeout_ms = REBALANCE * 2
    h.group.members[m2].expect_heartbeat(h.now)
    rejoin = h.join(m1, session=REBALANCE * 2)
    assert h.group.state is GroupState.PREPARING_REBALANCE
    h.advance(REBALANCE - 1)
    assert not rejoin.done
    h.advance(1)
    assert rejoin.value.error is ErrorCode.none
    assert list(h.group.members) == [m1]
    assert rejoin.value.leader == m1 and h.group.generation_id == 3


def test_leader_missing_the_rebalance_is_replaced():
    h = Harness()
    m1, m2 = h.stable_group(2)
    h.group.members[m1].session_timeout_ms = REBALANCE * 2
    h.group.members[m1].expect_heartbeat(h.now)
    rejoin = h.join(m2, protocols=[("range", b"new-metadata")], session=REBALANCE * 2)
    h.advance(REBALANCE)
    assert rejoin.value.leader == m2 and list(h.group.members) == [m2]
    assert [m.member_id for m in rejoin.value.members] == [m2]


def test_session_expiry_removes_member_and_rebalances_without_requests():
    h = Harness()
    m1, m2 = h.stable_group(2)
    assert h.group.next_deadline() == h.now + SESSION
    h.advance(SESSION // 2)
    assert h.heartbeat(m2) is ErrorCode.none
    h.advance(SESSION // 2)  # m1's session is over; nobody sent a request
    assert m1 not in h.group.members
    assert h.group.state is GroupState.PREPARING_REBALANCE
    assert h.heartbeat(m2) is ErrorCode.rebalance_in_progress
    reply = h.join(m2)
    assert reply.value.generation_id == 3 and reply.value.leader == m2


def test_last_member_leaving_empties_group_and_stores_it():
    h = Harness()
    (m1,) = h.stable_group(1)
    error, errors = h.group.leave(h.now, [(m1, None)])
    assert (error, errors) == (ErrorCode.none, [ErrorCode.none])
    assert h.group.state is GroupState.EMPTY
    assert h.group.generation_id == 2 and h.group.protocol_name is None
    assert h.stored[-1] == {}
    assert h.group.next_deadline() is None


def test_leave_errors():
    h = Harness()
    m1, m2 = h.stable_group(2)
    _, errors = h.group.leave(h.now, [("ghost", None), (m1, None)])
    assert errors == [ErrorCode.unknown_member_id, ErrorCode.none]
    assert h.group.state is GroupState.PREPARING_REBALANCE


def test_leave_of_pending_member():
    h = Harness()
    first = h.join()
    _, errors = h.group.leave(h.now, [(first.value.member_id, None)])
    assert errors == [ErrorCode.none]
    assert not h.group.pending_members


def test_pending_member_expires_after_session_timeout():
    h = Harness()
    h.stable_group(1)
    pending = h.join(client="late").value.member_id
    assert pending in h.group.pending_members
    h.advance(SESSION)
    assert pending not in h.group.pending_members
    assert h.join(pending).value.error is ErrorCode.unknown_member_id


def test_new_member_waiting_too_long_is_dropped():
    h = Harness()
    m1, m2 = h.stable_group(2)
    # A third member joins; the others never rejoin and never heartbeat (their sessions end).
    joining = h.new_member(client="c3", session=REBALANCE * 20, rebalance=REBALANCE * 20)
    for m in (m1, m2):
        h.group.members[m].session_timeout_ms = REBALANCE * 20
        h.group.members[m].expect_heartbeat(h.now)
    h.advance(NEW_MEMBER_JOIN_TIMEOUT_MS)
    assert joining.value.error is ErrorCode.unknown_member_id


def test_sync_errors():
    h = Harness()
    (m1,) = h.stable_group(1)
    assert h.sync("ghost").value.error is ErrorCode.unknown_member_id
    assert h.sync(m1, generation=99).value.error is ErrorCode.illegal_generation
    reply: Reply[SyncResult] = Reply()
    h.group.sync(
        h.now, reply, member_id=m1, group_instance_id=None, generation_id=1,
        protocol_type="consumer", protocol_name="roundrobin", assignments={},
    )
    assert reply.value.error is ErrorCode.inconsistent_group_protocol
    # Stable: any member gets its current assignment back.
    assert h.sync(m1).value.assignment == b"a0"


def test_member_that_never_syncs_is_removed_after_rebalance_timeout():
    h = Harness()
    m1, m2 = h.stable_group(2)
    r1, r2 = h.join(m1), h.join(m2)
    assert r1.done and r2.done and h.group.state is GroupState.COMPLETING_REBALANCE
    leader = h.group.leader_id
    other = m2 if leader == m1 else m1
    h.sync(leader, assignments={leader: b"l", other: b"o"})
    assert h.group.state is GroupState.STABLE
    for _ in range(REBALANCE // 5000 - 1):
        h.advance(5000)
        assert h.heartbeat(leader) is ErrorCode.none
        assert h.heartbeat(other) is ErrorCode.none  # alive, but it never syncs
    h.advance(5000)
    assert other not in h.group.members
    assert h.group.state is GroupState.PREPARING_REBALANCE


def test_failed_store_of_assignment_fails_sync_and_rebalances():
    h = Harness()
    m1, m2 = h.stable_group(2)
    h.join(m1), h.join(m2)
    follower = m2 if h.group.leader_id == m1 else m1
    waiting = h.sync(follower)
    h.persist_error = ErrorCode.coordinator_not_available
    leader_sync = h.sync(h.group.leader_id, assignments={m1: b"1", m2: b"2"})
    assert leader_sync.value.error is ErrorCode.coordinator_not_available
    assert waiting.value.error is ErrorCode.coordinator_not_available
    assert h.group.state is GroupState.PREPARING_REBALANCE


def test_join_during_completing_rebalance_with_same_metadata_returns_current_generation():
    h = Harness()
    m1, m2 = h.stable_group(2)
    h.join(m1), h.join(m2)
    assert h.group.state is GroupState.COMPLETING_REBALANCE
    again = h.join(m2)
    assert again.value.generation_id == h.group.generation_id
    assert h.group.state is GroupState.COMPLETING_REBALANCE
    changed = h.join(m2, protocols=[("range", b"other")])
    assert not changed.done and h.group.state is GroupState.PREPARING_REBALANCE


def test_follower_rejoining_stable_group_unchanged_gets_current_generation():
    h = Harness()
    m1, m2 = h.stable_group(2)
    follower = m2 if h.group.leader_id == m1 else m1
    reply = h.join(follower)
    assert reply.value.error is ErrorCode.none and reply.value.generation_id == 2
    assert h.group.state is GroupState.STABLE
    # The leader's JoinGroup, though, starts a rebalance.
    assert not h.join(h.group.leader_id).done
    assert h.group.state is GroupState.PREPARING_REBALANCE


def test_heartbeat_errors():
    h = Harness()
    (m1,) = h.stable_group(1)
    assert h.heartbeat("ghost") is ErrorCode.unknown_member_id
    assert h.heartbeat(m1, generation=0) is ErrorCode.illegal_generation
    assert h.heartbeat(m1) is ErrorCode.none


def test_group_max_size():
    h = Harness(max_size=1)
    h.stable_group(1)
    reply = h.join(client="extra")
    assert reply.value.error is ErrorCode.group_max_size_reached


# ---- protocol selection ---------------------------------------------------------------


def test_protocol_chosen_by_vote_among_common_protocols():
    h = Harness(delay=1000)
    a = h.new_member(client="a", protocols=[("range", b""), ("roundrobin", b"")])
    b = h.new_member(client="b", protocols=[("roundrobin", b""), ("range", b"")])
    c = h.new_member(client="c", protocols=[("cooperative-sticky", b""), ("roundrobin", b""), ("range", b"")])
    h.advance(3000)
    assert a.value.protocol_name == b.value.protocol_name == c.value.protocol_name == "roundrobin"


def test_custom_protocol_and_protocol_type():
    h = Harness()
    reply = h.new_member(protocol_type="connect", protocols=[("my-assignor", b"m")])
    assert reply.value.protocol_name == "my-assignor" and reply.value.protocol_type == "connect"


def test_inconsistent_protocol_is_refused():
    h = Harness()
    h.stable_group(1)
    assert h.join(protocols=[("sticky", b"")]).value.error is ErrorCode.inconsistent_group_protocol
    assert h.join(protocol_type="connect").value.error is ErrorCode.inconsistent_group_protocol
    empty = Harness()
    assert empty.join(protocols=[]).value.error is ErrorCode.inconsistent_group_protocol
    assert empty.join(protocol_type="").value.error is ErrorCode.inconsistent_group_protocol


def test_cooperative_protocol_selected_when_everyone_supports_it():
    h = Harness(delay=1000)
    both = [("cooperative-sticky", b""), ("range", b"")]
    a = h.new_member(client="a", protocols=both)
    h.new_member(client="b", protocols=both)
    h.advance(2000)  # b joined during the initial delay: one more delay
    assert a.value.protocol_name == "cooperative-sticky"


# ---- static membership ------------------------------------------------------------------


def test_static_member_restart_keeps_assignment_without_rebalance():
    h = Harness()
    a = h.join(client="a", instance="inst-a")
    assert a.value.error is ErrorCode.none  # static members get their id at once
    b = h.join(client="b", instance="inst-b")
    assert not b.done
    a2 = h.join(a.value.member_id, client="a", instance="inst-a")
    assert a2.done and b.done and h.group.generation_id == 2
    old_a, old_b = a2.value.member_id, b.value.member_id
    leader = h.group.leader_id
    h.sync(leader, assignments={old_a: b"pa", old_b: b"pb"}, instance="inst-a" if leader == old_a else "inst-b")
    h.sync(old_b if leader == old_a else old_a, instance="inst-b" if leader == old_a else "inst-a")
    assert h.group.state is GroupState.STABLE
    stores = len(h.stored)

    # inst-b restarts: unknown member id, same instance id.
    back = h.join(client="b", instance="inst-b", skip=False)
    result = back.value
    assert result.error is ErrorCode.none and result.member_id != old_b
    assert h.group.state is GroupState.STABLE and h.group.generation_id == 2
    assert result.generation_id == 2
    assert len(h.stored) == stores + 1  # the new member id is persisted
    # The old incarnation is fenced.
    assert h.heartbeat(old_b, instance="inst-b") is ErrorCode.fenced_instance_id
    assert h.sync(result.member_id, instance="inst-b").value.assignment == b"pb"


def test_static_leader_restart_v9_skips_assignment_older_versions_see_old_leader():
    h = Harness()
    a = h.join(client="a", instance="inst-a")
    h.sync(a.value.member_id, assignments={a.value.member_id: b"x"}, instance="inst-a")
    assert h.group.state is GroupState.STABLE
    old = a.value.member_id

    v9 = h.join(client="a", instance="inst-a", skip=True).value
    assert v9.leader == v9.member_id and v9.skip_assignment and len(v9.members) == 1
    assert h.group.leader_id == v9.member_id

    old_client = h.join(client="a", instance="inst-a", skip=False).value
    assert old_client.leader == v9.member_id != old_client.member_id
    assert not old_client.skip_assignment and old_client.members == []
    assert old not in h.group.members


def test_old_incarnation_waiting_in_join_is_fenced_by_newer_one():
    h = Harness()
    a = h.join(client="a", instance="inst-a").value.member_id
    h.sync(a, assignments={a: b"x"}, instance="inst-a")
    b_join = h.join(client="b", instance="inst-b")
    old_a_join = h.join(a, client="a", instance="inst-a")
    assert old_a_join.done and b_join.done  # generation 2: a and b
    b = b_join.value.member_id
    h.sync(h.group.leader_id, assignments={a: b"x", b: b"y"})
    h.sync(b if h.group.leader_id == a else a)
    assert h.group.state is GroupState.STABLE

    c = h.new_member(client="c")  # a rebalance: a and b must rejoin
    old_a = h.join(a, client="a", instance="inst-a")
    assert not old_a.done
    newer = h.join(client="a", instance="inst-a")
    assert old_a.value.error is ErrorCode.fenced_instance_id
    assert not newer.done
    h.join(b, client="b", instance="inst-b")
    assert newer.value.error is ErrorCode.none and c.done
    assert newer.value.member_id in h.group.members and a not in h.group.members
    assert h.heartbeat(a, instance="inst-a") is ErrorCode.fenced_instance_id


def test_static_member_rejoin_during_completing_rebalance_rebalances():
    h = Harness()
    a = h.join(client="a", instance="inst-a")
    assert h.group.state is GroupState.COMPLETING_REBALANCE
    again = h.join(client="a", instance="inst-a")
    assert h.group.state is GroupState.PREPARING_REBALANCE or again.done
    assert a.value.member_id not in h.group.members


def test_static_member_changing_protocol_in_stable_group_rebalances():
    h = Harness()
    a = h.join(client="a", instance="inst-a")
    h.sync(a.value.member_id, assignments={}, instance="inst-a")
    reply = h.join(client="a", instance="inst-a", protocols=[("roundrobin", b""), ("range", b"")])
    # Alone in the group, it is the only voter: the rebalance completes at once.
    assert reply.value.protocol_name == "roundrobin"
    assert h.group.generation_id == 2


def test_static_member_not_rejoining_stays_through_rebalance():
    h = Harness()
    a = h.join(client="a", instance="inst-a")
    h.sync(a.value.member_id, assignments={}, instance="inst-a")
    b = h.join(client="b", instance="inst-b")  # starts a rebalance; a does not rejoin
    h.group.members[a.value.member_id].session_timeout_ms = 10 * REBALANCE
    h.group.members[a.value.member_id].expect_heartbeat(h.now)
    h.advance(REBALANCE)
    assert b.value.error is ErrorCode.none
    assert a.value.member_id in h.group.members  # static members are not dropped at join timeout
    assert len(b.value.members) in (0, 2)


def test_static_members_that_never_rejoin_do_not_make_timers_spin():
    h = Harness()
    a = h.join(client="a", instance="inst-a", rebalance=0).value.member_id
    h.sync(a, assignments={a: b"x"}, instance="inst-a")
    b_join = h.join(client="b", instance="inst-b", rebalance=0)
    h.join(a, client="a", instance="inst-a", rebalance=0)
    b = b_join.value.member_id
    h.sync(h.group.leader_id, assignments={a: b"x", b: b"y"})
    h.sync(b if h.group.leader_id == a else a)
    for m in (a, b):
        h.group.members[m].session_timeout_ms = 10 * SESSION
        h.group.members[m].expect_heartbeat(h.now)
    # b leaves; a (static) never rejoins, and the rebalance timeout is 0.
    h.group.leave(h.now, [(b, "inst-b")])
    assert h.group.state is GroupState.PREPARING_REBALANCE
    assert list(h.group.members) == [a]  # static members are kept
    assert h.group.next_deadline() > h.now
    h.advance(100)
    assert h.group.next_deadline() > h.now


def test_static_member_with_wrong_member_id_is_fenced():
    h = Harness()
    a = h.join(client="a", instance="inst-a")
    assert h.join("someone-else", instance="inst-a").value.error is ErrorCode.fenced_instance_id
    assert h.join(a.value.member_id, instance="inst-zzz").value.error is ErrorCode.unknown_member_id


def test_admin_removes_static_member_by_instance_id():
    h = Harness()
    a = h.join(client="a", instance="inst-a")
    h.sync(a.value.member_id, assignments={}, instance="inst-a")
    _, errors = h.group.leave(h.now, [("", "inst-a"), ("", "inst-nope")])
    assert errors == [ErrorCode.none, ErrorCode.unknown_member_id]
    assert h.group.state is GroupState.EMPTY


# ---- offsets -------------------------------------------------------------------------------


def test_offset_commit_validation():
    h = Harness()
    g = h.group
    # Simple consumer on an empty group.
    assert g.validate_offset_commit(h.now, member_id="", group_instance_id=None, generation_id=-1) is ErrorCode.none
    m1, m2 = h.stable_group(2)
    assert g.validate_offset_commit(h.now, member_id="", group_instance_id=None, generation_id=-1) is ErrorCode.unknown_member_id
    assert g.validate_offset_commit(h.now, member_id=m1, group_instance_id=None, generation_id=1) is ErrorCode.illegal_generation
    assert g.validate_offset_commit(h.now, member_id="x", group_instance_id=None, generation_id=2) is ErrorCode.unknown_member_id
    assert g.validate_offset_commit(h.now, member_id=m1, group_instance_id=None, generation_id=2) is ErrorCode.none
    h.join(m1)
    # PreparingRebalance still accepts the previous generation's commits (commit on revoke).
    assert g.validate_offset_commit(h.now, member_id=m2, group_instance_id=None, generation_id=2) is ErrorCode.none
    h.join(m2)
    assert g.state is GroupState.COMPLETING_REBALANCE
    assert g.validate_offset_commit(h.now, member_id=m2, group_instance_id=None, generation_id=3) is ErrorCode.rebalance_in_progress


def test_offsets_of_empty_group_expire_after_retention_since_it_emptied():
    h = Harness()
    (m1,) = h.stable_group(1)
    h.group.offsets[("t", 0)] = OffsetAndMetadata(5, "", commit_timestamp=h.now - 10_000_000)
    assert h.group.expired_offsets(h.now, 1000) == []  # stable, subscription unknown
    h.group.leave(h.now, [(m1, None)])
    assert h.group.expired_offsets(h.now + 999, 1000) == []
    assert h.group.expired_offsets(h.now + 1000, 1000) == [("t", 0)]


def test_offsets_of_simple_group_expire_by_commit_time():
    h = Harness()
    h.group.offsets[("t", 0)] = OffsetAndMetadata(5, "", commit_timestamp=h.now)
    h.group.offsets[("t", 1)] = OffsetAndMetadata(5, "", commit_timestamp=h.now + 500)
    assert h.group.expired_offsets(h.now + 1000, 1000) == [("t", 0)]


def test_stable_consumer_group_expires_only_unsubscribed_topics():
    h = Harness()
    h.stable_group(1, protocols=[("range", subscription("mine"))])
    assert h.group.subscribed_topics == {"mine"}
    h.group.offsets[("mine", 0)] = OffsetAndMetadata(1, "", commit_timestamp=0)
    h.group.offsets[("old", 0)] = OffsetAndMetadata(1, "", commit_timestamp=0)
    assert h.group.expired_offsets(h.now, 1000) == [("old", 0)]
    assert h.group.is_subscribed_to_topic("mine") and not h.group.is_subscribed_to_topic("old")


def test_loaded_group_is_stable_and_watches_sessions():
    members = [
        Member(m, None, "c", "/h", REBALANCE, SESSION, "consumer", [("range", subscription("t", m))], b"asg")
        for m in ("m-1", "m-2")
    ]
    g = Group.loaded(
        "g", GroupConfig(), 100, lambda group, a: ErrorCode.none,
        protocol_type="consumer", generation_id=7, protocol_name="range", leader_id="m-2",
        state_timestamp=50, members=members,
    )
    assert g.state is GroupState.STABLE and g.generation_id == 7 and g.leader_id == "m-2"
    assert g.subscribed_topics == {"t", "m-1", "m-2"}
    assert g.next_deadline() == 100 + SESSION
    assert g.heartbeat(100 + SESSION - 1, member_id="m-2", group_instance_id=None, generation_id=7) is ErrorCode.none
    g.tick(100 + SESSION)  # m-1 never came back after the restart
    assert g.state is GroupState.PREPARING_REBALANCE and list(g.members) == ["m-2"]
    g.tick(100 + SESSION + REBALANCE)
    assert g.state is GroupState.EMPTY and g.generation_id == 8


def test_mark_dead_answers_waiters():
    h = Harness()
    (m1,) = h.stable_group(1)
    h.group.leave(h.now, [(m1, None)])
    h.group.mark_dead(h.now)
    assert h.join().value.error is ErrorCode.coordinator_not_available


# ---- codec -------------------------------------------------------------------------------------


def test_offset_commit_key_and_value_round_trip_as_kafka_writes_them():
    key = codec.encode_offset_commit_key("grp", "topic", 3)
    assert key == b"\x00\x01\x00\x03grp\x00\x05topic\x00\x00\x00\x03"
    assert codec.decode_key(key) == codec.OffsetCommitKey("grp", "topic", 3)
    value = codec.OffsetCommitValue(42, "meta", 1700000000000, leader_epoch=5)
    data = codec.encode_offset_commit_value(value)
    assert data[:2] == b"\x00\x03"
    assert data == struct.pack(">hqih4sq", 3, 42, 5, 4, b"meta", 1700000000000)
    assert codec.decode_offset_commit_value(data) == value
    old = codec.OffsetCommitValue(42, "", 1, expire_timestamp=99)
    data = codec.encode_offset_commit_value(old)
    assert data == struct.pack(">hqhqq", 1, 42, 0, 1, 99)
    assert codec.decode_offset_commit_value(data) == old


def test_offset_commit_value_other_versions():
    v0 = struct.pack(">hqh1sq", 0, 7, 1, b"m", 123)
    assert codec.decode_offset_commit_value(v0) == codec.OffsetCommitValue(7, "m", 123)
    # v4, flexible: compact string (length + 1 as uvarint) and an empty tagged-field section.
    v4 = struct.pack(">hqi", 4, 7, 2) + b"\x02m" + struct.pack(">q", 123) + b"\x00"
    assert codec.decode_offset_commit_value(v4) == codec.OffsetCommitValue(7, "m", 123, leader_epoch=2)


def test_group_metadata_round_trip():
    key = codec.encode_group_metadata_key("grp")
    assert key == b"\x00\x02\x00\x03grp"
    assert codec.decode_key(key) == codec.GroupMetadataKey("grp")
    value = codec.GroupMetadataValue(
        "consumer", 4, "range", "m-1", 1700000000000,
        [codec.MemberMetadataValue("m-1", "inst", "client", "/127.0.0.1", 30000, 10000, b"sub", b"asg")],
    )
    data = codec.encode_group_metadata_value(value)
    assert data[:2] == b"\x00\x03"
    assert codec.decode_group_metadata_value(data) == value
    empty = codec.GroupMetadataValue("consumer", 5, None, None, 1, [])
    assert codec.decode_group_metadata_value(codec.encode_group_metadata_value(empty)) == empty


def test_group_metadata_value_v0():
    member = (
        struct.pack(">h3sh1sh2s", 3, b"m-1", 1, b"c", 2, b"/h")
        + struct.pack(">i", 6000)
        + struct.pack(">i1si1s", 1, b"s", 1, b"a")
    )
    data = struct.pack(">hh8si", 0, 8, b"consumer", 2) + struct.pack(">h5sh3s", 5, b"range", 3, b"m-1") + struct.pack(">i", 1) + member
    value = codec.decode_group_metadata_value(data)
    assert value.generation == 2 and value.protocol == "range" and value.current_state_timestamp == -1
    assert value.members[0].session_timeout == value.members[0].rebalance_timeout == 6000
    assert value.members[0].subscription == b"s"


def test_unknown_key_versions_are_skipped_and_garbage_refused():
    assert codec.decode_key(b"\x00\x03anything") is None
    with pytest.raises(codec.CodecError):
        codec.decode_key(b"\x00\x01\x00\x09short")
    with pytest.raises(codec.CodecError):
        codec.decode_offset_commit_value(b"\x00\x09")


def test_subscription_topics():
    assert codec.subscription_topics(subscription("a", "b", version=3)) == {"a", "b"}
    with pytest.raises(codec.CodecError):
        codec.subscription_topics(b"\x00")
