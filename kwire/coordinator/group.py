"""One consumer group under Kafka's classic protocol, as a sans-IO state machine.

States and transitions are Kafka's (GroupMetadata / GroupCoordinator):

    Empty --join--> PreparingRebalance --all joined / rebalance timeout--> CompletingRebalance
    CompletingRebalance --leader's SyncGroup stored--> Stable
    Stable / CompletingRebalance --join, leave, member failure--> PreparingRebalance
    PreparingRebalance --everyone gone--> Empty;   Empty --deleted / offsets expired--> Dead

No clock, no I/O: every entry point takes `now` (milliseconds), `next_deadline()` says
when `tick(now)` must next run (session timeouts, rebalance timeout, initial rebalance
delay, pending SyncGroup), and persisting the group goes through the `persist`
callback, which returns Kafka's error code. JoinGroup and SyncGroup answers that must
wait for the rebalance are `Reply` slots, resolved when the group gets there.
"""

from __future__ import annotations

import enum
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from kio.schema.errors import ErrorCode

from kwire.coordinator.offsets_codec import CodecError, subscription_topics

log = logging.getLogger(__name__)

T = TypeVar("T")

CONSUMER_PROTOCOL_TYPE = "consumer"
# New members cannot heartbeat before their first JoinGroup answer, so they are given
# this long instead of the session timeout (Kafka's NewMemberJoinTimeoutMs).
NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000
INT32_MAX = 2**31 - 1
MIN_REJOIN_WAIT_MS = 100


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"

    def __str__(self) -> str:
        return self.value


_VALID_PREVIOUS: dict[GroupState, frozenset[GroupState]] = {
    GroupState.PREPARING_REBALANCE: frozenset(
        {GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY}
    ),
    GroupState.COMPLETING_REBALANCE: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.STABLE: frozenset({GroupState.COMPLETING_REBALANCE}),
    GroupState.EMPTY: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.DEAD: frozenset(GroupState),
}


@dataclass(frozen=True, slots=True)
class GroupConfig:
    min_session_timeout_ms: int = 6000
    max_session_timeout_ms: int = 1_800_000
    initial_rebalance_delay_ms: int = 3000
    max_size: int = INT32_MAX


class Reply(Generic[T]):
    """A delayed answer: resolved once; `on_done` (e.g. a trio Event's set) is called then."""

    __slots__ = ("value", "_on_done")

    def __init__(self, on_done: Callable[[], object] | None = None) -> None:
        self.value: T | None = None
        self._on_done = on_done

    @property
    def done(self) -> bool:
        return self.value is not None

    def resolve(self, value: T) -> None:
        if self.value is None:
            self.value = value
            if self._on_done is not None:
                self._on_done()


@dataclass(frozen=True, slots=True)
class JoinedMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(slots=True)
class JoinResult:
    error: ErrorCode
    member_id: str
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    skip_assignment: bool = False
    members: list[JoinedMember] = field(default_factory=list)


@dataclass(slots=True)
class SyncResult:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


@dataclass(eq=False, slots=True)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    join_reply: Reply[JoinResult] | None = None
    sync_reply: Reply[SyncResult] | None = None
    is_new: bool = False
    # When the member is removed unless it heartbeats (None: not watched just now).
    heartbeat_deadline: int | None = None

    @property
    def awaiting_join(self) -> bool:
        return self.join_reply is not None

    @property
    def awaiting_sync(self) -> bool:
        return self.sync_reply is not None

    @property
    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata(self, protocol: str) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        raise KeyError(protocol)

    def matches(self, protocols: Sequence[tuple[str, bytes]]) -> bool:
        return self.protocols == list(protocols)

    def vote(self, candidates: set[str]) -> str:
        """The first protocol of this member's preference list that everyone supports."""
        for name, _ in self.protocols:
            if name in candidates:
                return name
        raise ValueError(f"member {self.member_id} supports none of {candidates}")

    def expect_heartbeat(self, now: int, timeout_ms: int | None = None) -> None:
        self.heartbeat_deadline = now + (self.session_timeout_ms if timeout_ms is None else timeout_ms)


@dataclass(slots=True)
class OffsetAndMetadata:
    offset: int
    metadata: str
    commit_timestamp: int
    leader_epoch: int = -1
    expire_timestamp: int | None = None
    # The offset of the record in __consumer_offsets that committed it (-1: loaded, or
    # unknown): commits completing out of order apply only over older records, as Kafka's.
    record_offset: int = field(default=-1, compare=False)


# persist(group, assignment by member id) -> error; Kafka's storeGroup.
Persist = Callable[["Group", dict[str, bytes]], ErrorCode]


def _no_persist(group: Group, assignment: dict[str, bytes]) -> ErrorCode:
    return ErrorCode.none


class Group:
    """A classic consumer group: membership, generations, assignment, offsets."""

    def __init__(
        self,
        group_id: str,
        config: GroupConfig,
        now: int,
        persist: Persist = _no_persist,
        *,
        new_member_id: Callable[[str], str] | None = None,
        on_rebalance: Callable[[], object] | None = None,
    ) -> None:
        self.group_id = group_id
        # Told of each rebalance begun (the coordinator's count, kwire_group_rebalances_total).
        self.on_rebalance = on_rebalance
        self.config = config
        self.persist = persist
        self._new_member_id = new_member_id or (lambda prefix: f"{prefix}-{uuid.uuid4()}")
        self.state = GroupState.EMPTY
        self.state_timestamp = now
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.generation_id = 0
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}
        # group.instance.id -> member id
        self.static_members: dict[str, str] = {}
        # Member ids handed out with MEMBER_ID_REQUIRED -> when they expire.
        self.pending_members: dict[str, int] = {}
        self.pending_sync: set[str] = set()
        self.subscribed_topics: set[str] | None = None
        self.offsets: dict[tuple[str, int], OffsetAndMetadata] = {}
        # Rebalance timers.
        self._join_deadline: int | None = None
        self._initial_join = False
        self._initial_delay = 0
        self._initial_remaining = 0
        self._new_member_added = False
        self._sync_deadline: int | None = None

    def __repr__(self) -> str:
        return (
            f"Group({self.group_id!r}, {self.state}, generation={self.generation_id}, "
            f"members={list(self.members)}, leader={self.leader_id!r})"
        )

    # ---- views ------------------------------------------------------------------

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id is not None and self.leader_id == member_id

    @property
    def is_empty(self) -> bool:
        return self.state is GroupState.EMPTY

    @property
    def is_consumer_group(self) -> bool:
        return self.protocol_type == CONSUMER_PROTOCOL_TYPE

    @property
    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    @property
    def num_awaiting_join(self) -> int:
        return sum(1 for m in self.members.values() if m.awaiting_join)

    def has_all_members_joined(self) -> bool:
        return self.num_awaiting_join == len(self.members) and not self.pending_members

    def supported_protocol_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for member in self.members.values():
            for name in member.protocol_names:
                counts[name] = counts.get(name, 0) + 1
        return counts

    def candidate_protocols(self) -> set[str]:
        n = len(self.members)
        return {name for name, count in self.supported_protocol_counts().items() if count == n}

    def supports_protocols(self, protocol_type: str, protocols: Iterable[str]) -> bool:
        names = set(protocols)
        if self.state is GroupState.EMPTY:
            return bool(protocol_type) and bool(names)
        counts = self.supported_protocol_counts()
        n = len(self.members)
        return self.protocol_type == protocol_type and any(counts.get(p, 0) == n for p in names)

    def select_protocol(self) -> str:
        """The protocol every member supports that most members prefer (Kafka's vote).

        Ties go to the protocol the leader (or the first member) prefers."""
        if not self.members:
            raise RuntimeError("cannot select a protocol for an empty group")
        candidates = self.candidate_protocols()
        votes: dict[str, int] = {}
        for member in self.members.values():
            choice = member.vote(candidates)
            votes[choice] = votes.get(choice, 0) + 1
        first = self.members.get(self.leader_id or "") or next(iter(self.members.values()))
        order = {name: i for i, name in enumerate(first.protocol_names)}
        return max(votes, key=lambda name: (votes[name], -order.get(name, len(order))))

    def current_member_metadata(self) -> list[JoinedMember]:
        assert self.protocol_name is not None
        return [
            JoinedMember(m.member_id, m.group_instance_id, m.metadata(self.protocol_name))
            for m in self.members.values()
        ]

    def compute_subscribed_topics(self) -> set[str] | None:
        """Topics the members subscribe to, for consumer groups (None: not known)."""
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE:
            return None
        if not self.members:
            return set()
        if self.protocol_name is None:
            return None
        topics: set[str] = set()
        try:
            for member in self.members.values():
                topics |= subscription_topics(member.metadata(self.protocol_name))
        except (CodecError, KeyError):
            return None
        return topics

    def is_subscribed_to_topic(self, topic: str) -> bool:
        return self.subscribed_topics is None or topic in self.subscribed_topics

    def next_deadline(self) -> int | None:
        """When `tick` must next run, or None when no timer is pending."""
        deadlines = [m.heartbeat_deadline for m in self.members.values() if m.heartbeat_deadline is not None]
        deadlines.extend(self.pending_members.values())
        if self.state is GroupState.PREPARING_REBALANCE and self._join_deadline is not None:
            deadlines.append(self._join_deadline)
        if self._sync_deadline is not None:
            deadlines.append(self._sync_deadline)
        return min(deadlines, default=None)

    # ---- state changes ----------------------------------------------------------

    def transition_to(self, state: GroupState, now: int) -> None:
        if self.state not in _VALID_PREVIOUS[state]:
            raise RuntimeError(f"group {self.group_id} cannot go from {self.state} to {state}")
        self.state = state
        self.state_timestamp = now

    def _add(self, member: Member, reply: Reply[JoinResult] | None) -> None:
        if member.group_instance_id is not None:
            if member.group_instance_id in self.static_members:
                raise RuntimeError(f"static member {member.group_instance_id} is already in the group")
            self.static_members[member.group_instance_id] = member.member_id
        if not self.members:
            self.protocol_type = member.protocol_type
        if self.leader_id is None:
            self.leader_id = member.member_id
        self.members[member.member_id] = member
        member.join_reply = reply
        self.pending_members.pop(member.member_id, None)

    def _remove(self, member_id: str) -> None:
        member = self.members.pop(member_id, None)
        if member is not None and member.group_instance_id is not None:
            if self.static_members.get(member.group_instance_id) == member_id:
                del self.static_members[member.group_instance_id]
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        self.pending_members.pop(member_id, None)
        self.pending_sync.discard(member_id)

    def _update_member(
        self,
        member: Member,
        protocols: list[tuple[str, bytes]],
        rebalance_timeout_ms: int,
        session_timeout_ms: int,
        reply: Reply[JoinResult] | None,
    ) -> None:
        member.protocols = list(protocols)
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.session_timeout_ms = session_timeout_ms
        member.join_reply = reply

    def _replace_static_member(self, instance_id: str, old_id: str, new_id: str) -> Member:
        member = self.members.pop(old_id)
        # Fence whoever still waits under the old member id.
        self._answer_join(member, JoinResult(ErrorCode.fenced_instance_id, old_id))
        self._answer_sync(member, SyncResult(ErrorCode.fenced_instance_id))
        member.member_id = new_id
        self.members[new_id] = member
        if self.leader_id == old_id:
            self.leader_id = new_id
        if old_id in self.pending_sync:
            self.pending_sync.discard(old_id)
            self.pending_sync.add(new_id)
        self.static_members[instance_id] = new_id
        return member

    @staticmethod
    def _answer_join(member: Member, result: JoinResult) -> None:
        reply, member.join_reply = member.join_reply, None
        if reply is not None:
            reply.resolve(result)

    @staticmethod
    def _answer_sync(member: Member, result: SyncResult) -> bool:
        reply, member.sync_reply = member.sync_reply, None
        if reply is not None:
            reply.resolve(result)
            return True
        return False

    def _validate_current_member(self, member_id: str, instance_id: str | None) -> ErrorCode | None:
        if instance_id is not None:
            current = self.static_members.get(instance_id)
            if current is None:
                return ErrorCode.unknown_member_id
            if current != member_id:
                log.info(
                    "group %s: member %s of static member %s is fenced by %s",
                    self.group_id, member_id, instance_id, current,
                )
                return ErrorCode.fenced_instance_id
            return None
        if member_id not in self.members:
            return ErrorCode.unknown_member_id
        return None

    # ---- JoinGroup ----------------------------------------------------------------

    def _accept_joining_member(self, member_id: str) -> bool:
        match self.state:
            case GroupState.EMPTY | GroupState.DEAD:
                return True
            case GroupState.PREPARING_REBALANCE:
                member = self.members.get(member_id)
                return (member is not None and member.awaiting_join) or self.num_awaiting_join < self.config.max_size
            case _:
                return member_id in self.members or len(self.members) < self.config.max_size

    def join(
        self,
        now: int,
        reply: Reply[JoinResult],
        *,
        member_id: str,
        group_instance_id: str | None,
        client_id: str,
        client_host: str,
        rebalance_timeout_ms: int,
        session_timeout_ms: int,
        protocol_type: str,
        protocols: Sequence[tuple[str, bytes]],
        require_known_member_id: bool = True,
        supports_skip_assignment: bool = True,
    ) -> None:
        """A JoinGroup; `reply` is resolved now or when the rebalance completes."""
        protocols = list(protocols)
        if not self._accept_joining_member(member_id):
            self._remove(member_id)
            reply.resolve(JoinResult(ErrorCode.group_max_size_reached, ""))
        elif self.state is GroupState.DEAD:
            # The group was just deleted: let the member find its coordinator again.
            reply.resolve(JoinResult(ErrorCode.coordinator_not_available, member_id))
        elif not self.supports_protocols(protocol_type, (name for name, _ in protocols)):
            reply.resolve(JoinResult(ErrorCode.inconsistent_group_protocol, member_id))
        elif member_id == "":
            new_id = self._new_member_id(group_instance_id if group_instance_id is not None else client_id)
            if group_instance_id is not None:
                old_id = self.static_members.get(group_instance_id)
                if old_id is not None:
                    log.info(
                        "group %s: static member %s rejoins with a new member id %s, replacing %s",
                        self.group_id, group_instance_id, new_id, old_id,
                    )
                    self._update_static_member(
                        now, reply, old_id, new_id, group_instance_id, protocols,
                        rebalance_timeout_ms, session_timeout_ms, supports_skip_assignment,
                    )
                else:
                    self._add_member_and_rebalance(
                        now, reply, new_id, group_instance_id, client_id, client_host,
                        rebalance_timeout_ms, session_timeout_ms, protocol_type, protocols,
                    )
            elif require_known_member_id:
                # KIP-394: hand out the id and ask for a second JoinGroup with it.
                self.pending_members[new_id] = now + session_timeout_ms
                reply.resolve(JoinResult(ErrorCode.member_id_required, new_id))
            else:
                self._add_member_and_rebalance(
                    now, reply, new_id, None, client_id, client_host,
                    rebalance_timeout_ms, session_timeout_ms, protocol_type, protocols,
                )
        elif member_id in self.pending_members:
            if group_instance_id is not None:
                reply.resolve(JoinResult(ErrorCode.unknown_member_id, member_id))
            else:
                self._add_member_and_rebalance(
                    now, reply, member_id, None, client_id, client_host,
                    rebalance_timeout_ms, session_timeout_ms, protocol_type, protocols,
                )
        else:
            self._join_current_member(
                now, reply, member_id, group_instance_id, rebalance_timeout_ms, session_timeout_ms, protocols
            )
        if self.state is GroupState.PREPARING_REBALANCE:
            self._try_complete_join(now)

    def _join_current_member(
        self,
        now: int,
        reply: Reply[JoinResult],
        member_id: str,
        instance_id: str | None,
        rebalance_timeout_ms: int,
        session_timeout_ms: int,
        protocols: list[tuple[str, bytes]],
    ) -> None:
        error = self._validate_current_member(member_id, instance_id)
        if error is not None:
            reply.resolve(JoinResult(error, member_id))
            return
        member = self.members[member_id]
        match self.state:
            case GroupState.PREPARING_REBALANCE:
                self._update_member_and_rebalance(now, member, protocols, rebalance_timeout_ms, session_timeout_ms, reply)
            case GroupState.COMPLETING_REBALANCE:
                if member.matches(protocols):
                    # It lost the first answer: give it the current generation again.
                    reply.resolve(self._join_result(member, with_members=self.is_leader(member_id)))
                else:
                    self._update_member_and_rebalance(now, member, protocols, rebalance_timeout_ms, session_timeout_ms, reply)
            case GroupState.STABLE:
                if self.is_leader(member_id) or not member.matches(protocols):
                    # A leader's JoinGroup asks for a new assignment (e.g. topics changed).
                    self._update_member_and_rebalance(now, member, protocols, rebalance_timeout_ms, session_timeout_ms, reply)
                else:
                    reply.resolve(self._join_result(member, with_members=False))
            case _:
                reply.resolve(JoinResult(ErrorCode.unknown_member_id, member_id))

    def _join_result(self, member: Member, *, with_members: bool, leader: str | None = None, skip: bool = False) -> JoinResult:
        return JoinResult(
            ErrorCode.none,
            member.member_id,
            self.generation_id,
            self.protocol_type,
            self.protocol_name,
            (self.leader_id if leader is None else leader) or "",
            skip,
            self.current_member_metadata() if with_members else [],
        )

    def _add_member_and_rebalance(
        self,
        now: int,
        reply: Reply[JoinResult],
        member_id: str,
        instance_id: str | None,
        client_id: str,
        client_host: str,
        rebalance_timeout_ms: int,
        session_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
    ) -> None:
        member = Member(
            member_id, instance_id, client_id, client_host, rebalance_timeout_ms,
            session_timeout_ms, protocol_type, protocols, is_new=True,
        )
        if self.state is GroupState.PREPARING_REBALANCE and self.generation_id == 0:
            self._new_member_added = True
        self._add(member, reply)
        member.expect_heartbeat(now, NEW_MEMBER_JOIN_TIMEOUT_MS)
        log.info("group %s: adding member %s (instance %s)", self.group_id, member_id, instance_id)
        self._maybe_prepare_rebalance(now)

    def _update_member_and_rebalance(
        self,
        now: int,
        member: Member,
        protocols: list[tuple[str, bytes]],
        rebalance_timeout_ms: int,
        session_timeout_ms: int,
        reply: Reply[JoinResult],
    ) -> None:
        self._update_member(member, protocols, rebalance_timeout_ms, session_timeout_ms, reply)
        self._maybe_prepare_rebalance(now)

    def _update_static_member(
        self,
        now: int,
        reply: Reply[JoinResult],
        old_id: str,
        new_id: str,
        instance_id: str,
        protocols: list[tuple[str, bytes]],
        rebalance_timeout_ms: int,
        session_timeout_ms: int,
        supports_skip_assignment: bool,
    ) -> None:
        current_leader = self.leader_id
        member = self._replace_static_member(instance_id, old_id, new_id)
        member.expect_heartbeat(now)
        old = (member.protocols, member.rebalance_timeout_ms, member.session_timeout_ms)
        self._update_member(member, protocols, rebalance_timeout_ms, session_timeout_ms, reply)
        match self.state:
            case GroupState.STABLE:
                if self.protocol_name != self.select_protocol():
                    self._maybe_prepare_rebalance(now)
                    return
                # Same protocol: no rebalance; the member gets its old assignment at SyncGroup.
                error = self.persist(self, {m.member_id: m.assignment for m in self.members.values()})
                if error is not ErrorCode.none:
                    self._update_member(member, *old, None)
                    self._replace_static_member(instance_id, new_id, old_id).expect_heartbeat(now)
                    reply.resolve(
                        JoinResult(
                            error, "", self.generation_id, self.protocol_type, self.protocol_name, current_leader or ""
                        )
                    )
                elif supports_skip_assignment:
                    # KIP-814 (v9+): a returning leader learns it leads, but must not reassign.
                    leader = self.is_leader(new_id)
                    self._answer_join(member, self._join_result(member, with_members=leader, skip=leader))
                else:
                    # Older clients: name the old leader id, so no member runs an assignment
                    # that a stable group would not hand out.
                    self._answer_join(member, self._join_result(member, with_members=False, leader=current_leader or ""))
            case GroupState.COMPLETING_REBALANCE:
                # The leader may be assigning under the old member id: start over.
                self._prepare_rebalance(now)
            case _:
                pass  # PreparingRebalance: the member now waits with the others.

    # ---- the rebalance --------------------------------------------------------------

    def _maybe_prepare_rebalance(self, now: int) -> None:
        if self.state in _VALID_PREVIOUS[GroupState.PREPARING_REBALANCE]:
            self._prepare_rebalance(now)

    def _prepare_rebalance(self, now: int) -> None:
        if self.state is GroupState.COMPLETING_REBALANCE:
            self._reset_and_propagate_assignment_error(now, ErrorCode.rebalance_in_progress)
        self.pending_sync.clear()
        self._sync_deadline = None
        if self.state is GroupState.EMPTY:
            # group.initial.rebalance.delay.ms: let more of a starting group's members in.
            delay = self.config.initial_rebalance_delay_ms
            self._initial_join = True
            self._initial_delay = delay
            self._initial_remaining = max(self.rebalance_timeout_ms - delay, 0)
            self._join_deadline = now + delay
        else:
            self._initial_join = False
            self._join_deadline = now + self.rebalance_timeout_ms
        log.info(
            "group %s: preparing to rebalance in state %s with old generation %d",
            self.group_id, self.state, self.generation_id,
        )
        self.transition_to(GroupState.PREPARING_REBALANCE, now)
        if self.on_rebalance is not None:
            self.on_rebalance()
        self._try_complete_join(now)

    def _try_complete_join(self, now: int) -> None:
        if self.state is not GroupState.PREPARING_REBALANCE or self._join_deadline is None:
            return
        if self._initial_join:
            while now >= self._join_deadline:
                if self._new_member_added and self._initial_remaining != 0:
                    # Someone joined during the delay: wait a little longer, up to the rebalance timeout.
                    self._new_member_added = False
                    delay = min(self.config.initial_rebalance_delay_ms, self._initial_remaining)
                    self._initial_remaining = max(self._initial_remaining - self._initial_delay, 0)
                    self._initial_delay = delay
                    self._join_deadline += delay
                    continue
                self._initial_join = False
                self._on_complete_join(now)
                return
        elif self.has_all_members_joined() or now >= self._join_deadline:
            self._on_complete_join(now)

    def _on_complete_join(self, now: int) -> None:
        for member in list(self.members.values()):
            if not member.awaiting_join and member.group_instance_id is None:
                log.info("group %s: removing member %s, which did not rejoin", self.group_id, member.member_id)
                self._remove(member.member_id)
        if self.state is GroupState.DEAD:
            return
        if self.members and not self._maybe_elect_new_joined_leader():
            # Only static members remain and none rejoined: wait another round (a
            # rebalance timeout of 0 must not make the timers spin).
            self._initial_join = False
            self._join_deadline = now + max(self.rebalance_timeout_ms, MIN_REJOIN_WAIT_MS)
            return
        self._init_next_generation(now)
        if self.state is GroupState.EMPTY:
            log.info("group %s with generation %d is now empty", self.group_id, self.generation_id)
            error = self.persist(self, {})
            if error is not ErrorCode.none:
                log.warning("group %s: cannot store the empty group: %s", self.group_id, error.name)
            return
        log.info(
            "group %s: generation %d with %d members, protocol %s, leader %s",
            self.group_id, self.generation_id, len(self.members), self.protocol_name, self.leader_id,
        )
        for member in self.members.values():
            self._answer_join(member, self._join_result(member, with_members=self.is_leader(member.member_id)))
            member.expect_heartbeat(now)
            member.is_new = False
            self.pending_sync.add(member.member_id)
        self._sync_deadline = now + self.rebalance_timeout_ms

    def _maybe_elect_new_joined_leader(self) -> bool:
        if self.leader_id is None:
            return False
        if self.members[self.leader_id].awaiting_join:
            return True
        for member in self.members.values():
            if member.awaiting_join:
                log.info("group %s: leader %s did not rejoin, %s leads", self.group_id, self.leader_id, member.member_id)
                self.leader_id = member.member_id
                return True
        return False

    def _init_next_generation(self, now: int) -> None:
        self.generation_id += 1
        if self.members:
            self.protocol_name = self.select_protocol()
            self.subscribed_topics = self.compute_subscribed_topics()
            self.transition_to(GroupState.COMPLETING_REBALANCE, now)
        else:
            self.protocol_name = None
            self.subscribed_topics = self.compute_subscribed_topics()
            self.transition_to(GroupState.EMPTY, now)
        self.pending_sync.clear()
        self._sync_deadline = None
        self._join_deadline = None

    def _propagate_assignment(self, now: int, error: ErrorCode) -> None:
        ok = error is ErrorCode.none
        for member in self.members.values():
            result = SyncResult(
                error,
                self.protocol_type if ok else None,
                self.protocol_name if ok else None,
                member.assignment,
            )
            if self._answer_sync(member, result):
                member.expect_heartbeat(now)

    def _reset_and_propagate_assignment_error(self, now: int, error: ErrorCode) -> None:
        for member in self.members.values():
            member.assignment = b""
        self._propagate_assignment(now, error)

    # ---- SyncGroup ----------------------------------------------------------------

    def sync(
        self,
        now: int,
        reply: Reply[SyncResult],
        *,
        member_id: str,
        group_instance_id: str | None,
        generation_id: int,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: dict[str, bytes],
    ) -> None:
        """A SyncGroup; `reply` is resolved now or when the leader's assignment is stored."""
        if self.state is GroupState.DEAD:
            reply.resolve(SyncResult(ErrorCode.coordinator_not_available))
            return
        error = self._validate_current_member(member_id, group_instance_id)
        if error is None:
            if generation_id != self.generation_id:
                error = ErrorCode.illegal_generation
            elif (protocol_type is not None and protocol_type != self.protocol_type) or (
                protocol_name is not None and protocol_name != self.protocol_name
            ):
                error = ErrorCode.inconsistent_group_protocol
        if error is not None:
            reply.resolve(SyncResult(error))
            return
        member = self.members[member_id]
        match self.state:
            case GroupState.EMPTY:
                reply.resolve(SyncResult(ErrorCode.unknown_member_id))
            case GroupState.PREPARING_REBALANCE:
                reply.resolve(SyncResult(ErrorCode.rebalance_in_progress))
            case GroupState.COMPLETING_REBALANCE:
                member.sync_reply = reply
                self._sync_received(member_id)
                if self.is_leader(member_id):
                    full = {m: assignments.get(m, b"") for m in self.members}
                    missing = [m for m in self.members if m not in assignments]
                    if missing:
                        log.warning("group %s: empty assignment for members %s", self.group_id, missing)
                    error = self.persist(self, full)
                    if error is not ErrorCode.none:
                        self._reset_and_propagate_assignment_error(now, error)
                        self._maybe_prepare_rebalance(now)
                    else:
                        for m in self.members.values():
                            m.assignment = full[m.member_id]
                        self._propagate_assignment(now, ErrorCode.none)
                        self.transition_to(GroupState.STABLE, now)
            case GroupState.STABLE:
                self._sync_received(member_id)
                reply.resolve(SyncResult(ErrorCode.none, self.protocol_type, self.protocol_name, member.assignment))
                member.expect_heartbeat(now)

    def _sync_received(self, member_id: str) -> None:
        self.pending_sync.discard(member_id)
        if not self.pending_sync:
            self._sync_deadline = None

    # ---- Heartbeat, LeaveGroup ------------------------------------------------------

    def heartbeat(self, now: int, *, member_id: str, group_instance_id: str | None, generation_id: int) -> ErrorCode:
        if self.state is GroupState.DEAD:
            return ErrorCode.coordinator_not_available
        error = self._validate_current_member(member_id, group_instance_id)
        if error is not None:
            return error
        if generation_id != self.generation_id:
            return ErrorCode.illegal_generation
        if self.state is GroupState.EMPTY:
            return ErrorCode.unknown_member_id
        self.members[member_id].expect_heartbeat(now)
        if self.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    def leave(self, now: int, leaving: Sequence[tuple[str, str | None]]) -> tuple[ErrorCode, list[ErrorCode]]:
        """LeaveGroup for (member id, group instance id) pairs: (group error, member errors)."""
        if self.state is GroupState.DEAD:
            return ErrorCode.coordinator_not_available, []
        errors = []
        for member_id, instance_id in leaving:
            if member_id == "":
                # An admin removing a static member by its instance id.
                current = self.static_members.get(instance_id) if instance_id is not None else None
                if current is None:
                    errors.append(ErrorCode.unknown_member_id)
                    continue
                self._remove_member_and_update_group(now, self.members[current], "LeaveGroup")
                errors.append(ErrorCode.none)
            elif member_id in self.pending_members:
                del self.pending_members[member_id]
                self._try_complete_join(now)
                errors.append(ErrorCode.none)
            else:
                error = self._validate_current_member(member_id, instance_id)
                if error is None:
                    self._remove_member_and_update_group(now, self.members[member_id], "LeaveGroup")
                    error = ErrorCode.none
                errors.append(error)
        return ErrorCode.none, errors

    def _remove_member_and_update_group(self, now: int, member: Member, reason: str) -> None:
        log.info("group %s: removing member %s (%s)", self.group_id, member.member_id, reason)
        # A new member may still wait in JoinGroup: tell it to start over.
        self._answer_join(member, JoinResult(ErrorCode.unknown_member_id, ""))
        self._answer_sync(member, SyncResult(ErrorCode.unknown_member_id))
        self._remove(member.member_id)
        match self.state:
            case GroupState.STABLE | GroupState.COMPLETING_REBALANCE:
                self._maybe_prepare_rebalance(now)
            case GroupState.PREPARING_REBALANCE:
                self._try_complete_join(now)
            case _:
                pass

    # ---- timers ------------------------------------------------------------------------

    def tick(self, now: int) -> None:
        """Fire every timer due at `now`: session expiry, pending members, rebalance and
        sync timeouts."""
        for member in list(self.members.values()):
            deadline = member.heartbeat_deadline
            if deadline is None or now < deadline or self.members.get(member.member_id) is not member:
                continue
            if not member.is_new and (member.awaiting_join or member.awaiting_sync):
                # Waiting in a rebalance counts as alive; watched again when it is answered.
                member.heartbeat_deadline = None
                continue
            member.heartbeat_deadline = None
            self._remove_member_and_update_group(now, member, "session timeout expired")
        for pending_id, deadline in list(self.pending_members.items()):
            if now >= deadline:
                log.info("group %s: pending member %s expired", self.group_id, pending_id)
                del self.pending_members[pending_id]
                self._try_complete_join(now)
        if self.state is GroupState.PREPARING_REBALANCE:
            self._try_complete_join(now)
        if self._sync_deadline is not None and now >= self._sync_deadline:
            self._sync_deadline = None
            if self.state in (GroupState.COMPLETING_REBALANCE, GroupState.STABLE) and self.pending_sync:
                missing = sorted(self.pending_sync)
                log.info("group %s: removing members %s, which sent no SyncGroup", self.group_id, missing)
                for member_id in missing:
                    self._remove(member_id)
                self._prepare_rebalance(now)

    # ---- offsets ----------------------------------------------------------------------

    def validate_offset_commit(
        self, now: int, *, member_id: str, group_instance_id: str | None, generation_id: int
    ) -> ErrorCode:
        if self.state is GroupState.DEAD:
            return ErrorCode.coordinator_not_available
        if generation_id < 0 and self.state is GroupState.EMPTY:
            # Admin clients and consumers that assign partitions themselves.
            return ErrorCode.none
        if generation_id >= 0 or member_id or group_instance_id is not None:
            error = self._validate_current_member(member_id, group_instance_id)
            if error is not None:
                return error
            if generation_id != self.generation_id:
                return ErrorCode.illegal_generation
        elif self.state is not GroupState.EMPTY:
            # Only members commit for a group that has members.
            return ErrorCode.unknown_member_id
        if self.state is GroupState.COMPLETING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        member = self.members.get(member_id)
        if member is not None and self.state in (GroupState.STABLE, GroupState.PREPARING_REBALANCE):
            member.expect_heartbeat(now)
        return ErrorCode.none

    def expired_offsets(self, now: int, retention_ms: int) -> list[tuple[str, int]]:
        """Offsets past `offsets.retention.minutes`, by Kafka's rules: all of an empty
        group's once it has been empty that long; a stable consumer group's for topics
        it no longer subscribes to; a simple group's by commit time."""

        def expired(base: Callable[[OffsetAndMetadata], int], keep_topics: set[str] = frozenset()) -> list[tuple[str, int]]:
            out = []
            for key, om in self.offsets.items():
                if key[0] in keep_topics:
                    continue
                if om.expire_timestamp is not None:
                    if now >= om.expire_timestamp:
                        out.append(key)
                elif now - base(om) >= retention_ms:
                    out.append(key)
            return out

        if self.protocol_type is not None and self.state is GroupState.EMPTY:
            return expired(lambda om: self.state_timestamp)
        if self.is_consumer_group and self.subscribed_topics is not None and self.state is GroupState.STABLE:
            return expired(lambda om: om.commit_timestamp, self.subscribed_topics)
        if self.protocol_type is None:
            return expired(lambda om: om.commit_timestamp)
        return []

    # ---- admin ------------------------------------------------------------------------

    def mark_dead(self, now: int) -> None:
        self.transition_to(GroupState.DEAD, now)
        for member in self.members.values():
            self._answer_join(member, JoinResult(ErrorCode.coordinator_not_available, member.member_id))
            self._answer_sync(member, SyncResult(ErrorCode.coordinator_not_available))

    @classmethod
    def loaded(
        cls,
        group_id: str,
        config: GroupConfig,
        now: int,
        persist: Persist,
        *,
        protocol_type: str,
        generation_id: int,
        protocol_name: str | None,
        leader_id: str | None,
        state_timestamp: int,
        members: Iterable[Member],
    ) -> Group:
        """A group as read back from `__consumer_offsets`: Stable with its members, or Empty."""
        group = cls(group_id, config, now, persist)
        group.generation_id = generation_id
        group.protocol_type = protocol_type or None
        group.protocol_name = protocol_name
        for member in members:
            group._add(member, None)
            member.expect_heartbeat(now)
        group.leader_id = leader_id if leader_id in group.members else next(iter(group.members), None)
        if group.members:
            group.state = GroupState.STABLE
        group.state_timestamp = state_timestamp if state_timestamp >= 0 else now
        group.subscribed_topics = group.compute_subscribed_topics()
        return group
