"""The group coordinator service: the broker's consumer groups, their timers, and
their committed offsets in `__consumer_offsets`.

It owns every `Group` (the sans-IO state machine in `group.py`) and gives it the
three things a state machine lacks:

- time: one trio task sleeps until the earliest group deadline (session timeouts,
  rebalance timeouts, the initial rebalance delay, pending SyncGroups) and ticks the
  groups then, so an idle broker still expires a dead member on time; another expires
  offsets every `offsets.retention.check.interval.ms`;
- waiting: JoinGroup and SyncGroup answers that wait for the rebalance are trio
  Events set when the group resolves the reply;
- storage: offset commits and group metadata are appended as records, keyed as
  Kafka keys them, to partition `abs(hash(group id)) % offsets.topic.num.partitions`
  of the compacted internal topic `__consumer_offsets`, through the coordinators'
  `PartitionWriter` (so fetches and the high watermark see them like any append);
- ownership (Kafka's onElection/onResignation): the coordinator serves the groups of
  the `__consumer_offsets` partitions this broker leads. `on_elected` reads a partition
  back (its groups answer COORDINATOR_LOAD_IN_PROGRESS meanwhile), `on_resigned` drops
  its groups (their waiting JoinGroup/SyncGroup answered NOT_COORDINATOR); any other
  group answers NOT_COORDINATOR. Alone (the default), it elects itself for every
  partition when it starts.

A commit, a TxnOffsetCommit and a group's assignment are answered only once their
record is committed (replicated: Kafka's coordinators append with acks=-1).
"""

from __future__ import annotations

import datetime
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio
from kio.schema.errors import ErrorCode

from kwire.clock import now_ms
from kwire.config import BrokerConfig
from kwire.coordinator import offsets_codec as codec
from kwire.coordinator.group import (
    Group,
    GroupConfig,
    GroupState,
    JoinResult,
    Member,
    OffsetAndMetadata,
    Reply,
    SyncResult,
)
from kwire.coordinator.partition_writer import PartitionWriter, TopicPartition
from kwire.errors import KafkaError
from kwire.protocol.records import (
    BATCH_HEADER_SIZE,
    CONTROL_COMMIT,
    build_batch,
    control_record_type,
    iter_records,
    parse_batch_header,
    validate_batches,
)

log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
# Kafka's offset.metadata.max.bytes default.
OFFSET_METADATA_MAX_BYTES = 4096
LOAD_READ_BYTES = 1 << 20
GROUP_TYPE_CLASSIC = "classic"
# Kafka's offsets.commit.timeout.ms default: how long a commit waits for replication.
OFFSETS_COMMIT_TIMEOUT_MS = 5000


def setting(config: BrokerConfig, key: str, default: Any) -> Any:
    """A broker setting kwire's config may not define yet: Kafka's default then."""
    try:
        return config[key]
    except KeyError:
        return default


def java_string_hashcode(s: str) -> int:
    """Java's String.hashCode: s[0]*31^(n-1) + ... over UTF-16 code units, as int32."""
    h = 0
    data = s.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_for(group_id: str, num_partitions: int) -> int:
    """Kafka's Utils.abs(groupId.hashCode) % partitions (abs maps MIN_VALUE to 0)."""
    h = java_string_hashcode(group_id)
    return (0 if h == -(1 << 31) else abs(h)) % num_partitions


def millis(value: datetime.timedelta | int) -> int:
    """A kio i32/i64 Timedelta field as Kafka's milliseconds."""
    if isinstance(value, datetime.timedelta):
        return value // datetime.timedelta(milliseconds=1)
    return int(value)


def client_host(peer: str) -> str:
    """The client address as Kafka shows it (InetAddress.toString: "/127.0.0.1")."""
    host = peer.rsplit(":", 1)[0] if ":" in peer else peer
    return "/" + host.strip("[]")


class HasServices(Protocol):
    """What handlers hold (the broker): its services, which the coordinators join."""

    @property
    def services(self) -> dict[str, Any]: ...


def group_coordinator(broker: HasServices) -> GroupCoordinator | None:
    """The broker's group coordinator, if one is attached."""
    service = broker.services.get("groups")
    return service if isinstance(service, GroupCoordinator) else None


@dataclass(slots=True)
class ListedGroup:
    group_id: str
    protocol_type: str
    state: str
    group_type: str = GROUP_TYPE_CLASSIC


class GroupCoordinator:
    """The consumer groups of the `__consumer_offsets` partitions this broker leads."""

    def __init__(self, writer: PartitionWriter, config: BrokerConfig, *, owns_all_partitions: bool = True) -> None:
        """With `owns_all_partitions` (one broker) `run` elects itself for every
        partition; else the cluster calls `on_elected` / `on_resigned`."""
        self.writer = writer
        self.owns_all_partitions = owns_all_partitions
        self.commit_timeout_ms: int = setting(config, "offsets.commit.timeout.ms", OFFSETS_COMMIT_TIMEOUT_MS)
        self.broker_config = config
        self.config = GroupConfig(
            min_session_timeout_ms=config["group.min.session.timeout.ms"],
            max_session_timeout_ms=config["group.max.session.timeout.ms"],
            initial_rebalance_delay_ms=config["group.initial.rebalance.delay.ms"],
            max_size=config["group.max.size"],
        )
        self.num_partitions: int = config["offsets.topic.num.partitions"]
        self.retention_ms: int = config["offsets.retention.minutes"] * 60_000
        self.retention_check_interval_ms: int = config["offsets.retention.check.interval.ms"]
        self.groups: dict[str, Group] = {}
        # Rebalances begun in the groups coordinated here (kwire_group_rebalances_total).
        self.rebalances = 0
        # TxnOffsetCommit offsets (stored, replicated) whose transaction has no marker
        # yet: producer id -> group -> partition -> offset. The marker on the group's
        # partition commits or drops them (complete_transactional_offsets).
        self.pending_txn_offsets: dict[int, dict[str, dict[tuple[str, int], OffsetAndMetadata]]] = {}
        # Until `run` starts, nothing is served (COORDINATOR_NOT_AVAILABLE); partitions
        # being read back answer COORDINATOR_LOAD_IN_PROGRESS, partitions neither loaded
        # nor loading NOT_COORDINATOR.
        self.active = False
        self.loading: set[int] = set()
        # Partition -> the leader epoch it was loaded under (Kafka's coordinator epoch).
        self.owned: dict[int, int] = {}
        # The highest epoch seen per partition: older elections and resignations are
        # stale (Kafka's epochForPartitionId).
        self._epochs: dict[int, int] = {}
        self._load_scopes: dict[int, trio.CancelScope] = {}
        self._loads_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        # on_elected / on_resigned called before `run`: (elected, partition, epoch).
        self._queued: list[tuple[bool, int, int]] = []
        # A leader's SyncGroup whose assignment was stored before the group saw it:
        # group id -> (generation, store error), consumed by `_persist_group`.
        self._stored_assignment: dict[str, tuple[int, ErrorCode]] = {}
        # Group metadata appended from inside the state machine (a static member's
        # return): group id -> (partition, offset) that JoinGroup answers wait for.
        self._unreplicated: dict[str, tuple[TopicPartition, int]] = {}
        self._wake = trio.Event()
        count = writer.partition_count(OFFSETS_TOPIC)
        if count is not None:
            self.num_partitions = count

    # ---- the service ---------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.owns_all_partitions:
                count = self.writer.partition_count(OFFSETS_TOPIC)
                for index in range(self.num_partitions if count is None else count):
                    self.on_elected(index, 0)
            queued, self._queued = self._queued, []
            for elected, index, epoch in queued:
                (self.on_elected if elected else self.on_resigned)(index, epoch)
            self.active = True
            task_status.started()
            nursery.start_soon(self._run_timers)
            nursery.start_soon(self._run_offset_expiry)

    # ---- ownership (Kafka's GroupCoordinator.onElection / onResignation) ------------------

    def _update_epoch(self, partition_index: int, leader_epoch: int) -> bool:
        """False when `leader_epoch` is older than one already seen (a stale call)."""
        current = self._epochs.get(partition_index)
        if current is not None and leader_epoch < current:
            return False
        self._epochs[partition_index] = leader_epoch
        return True

    def on_elected(self, partition_index: int, leader_epoch: int) -> None:
        """This broker now leads `__consumer_offsets` partition `partition_index`: read
        its groups and offsets back, in a task; its groups answer
        COORDINATOR_LOAD_IN_PROGRESS until then."""
        if self._nursery is None:
            self._queued.append((True, partition_index, leader_epoch))
            return
        if not self._update_epoch(partition_index, leader_epoch):
            log.info("%s-%d: not loading for stale epoch %d", OFFSETS_TOPIC, partition_index, leader_epoch)
            return
        if partition_index in self.owned:
            self.owned[partition_index] = leader_epoch
            return
        if partition_index in self.loading:
            return  # already being read back
        self.loading.add(partition_index)
        scope = trio.CancelScope()
        self._load_scopes[partition_index] = scope
        self._nursery.start_soon(self._load_task, partition_index, leader_epoch, scope)

    def on_resigned(self, partition_index: int, leader_epoch: int) -> None:
        """This broker no longer leads the partition: its groups are dropped, their
        waiting JoinGroup/SyncGroup answered NOT_COORDINATOR (Kafka's onGroupUnloaded),
        a load in progress cancelled."""
        if self._nursery is None:
            self._queued.append((False, partition_index, leader_epoch))
            return
        if not self._update_epoch(partition_index, leader_epoch):
            log.info("%s-%d: not unloading for stale epoch %d", OFFSETS_TOPIC, partition_index, leader_epoch)
            return
        scope = self._load_scopes.pop(partition_index, None)
        if scope is not None:
            scope.cancel()
        self.loading.discard(partition_index)
        self.owned.pop(partition_index, None)
        self._loads_done()
        unloaded = [g for g in self.groups.values() if self.partition_for(g.group_id) == partition_index]
        now = now_ms()
        for group in unloaded:
            for member in group.members.values():
                join_reply, member.join_reply = member.join_reply, None
                if join_reply is not None:
                    join_reply.resolve(JoinResult(ErrorCode.not_coordinator, member.member_id))
                sync_reply, member.sync_reply = member.sync_reply, None
                if sync_reply is not None:
                    sync_reply.resolve(SyncResult(ErrorCode.not_coordinator))
            group.mark_dead(now)
            del self.groups[group.group_id]
            self._unreplicated.pop(group.group_id, None)
        for producer_id, by_group in list(self.pending_txn_offsets.items()):
            for group_id in [g for g in by_group if self.partition_for(g) == partition_index]:
                del by_group[group_id]
            if not by_group:
                del self.pending_txn_offsets[producer_id]
        self._changed()
        log.info("%s-%d: resigned (epoch %d), %d groups unloaded", OFFSETS_TOPIC, partition_index, leader_epoch, len(unloaded))

    def _loads_done(self) -> None:
        self._loads_changed.set()
        self._loads_changed = trio.Event()

    async def wait_loaded(self, partition_index: int) -> None:
        """Until the partition is no longer being read back: a transaction marker for it
        must land where the load sees it, or after the load."""
        while partition_index in self.loading:
            await self._loads_changed.wait()

    def owns(self, group_id: str) -> bool:
        return self.partition_for(group_id) in self.owned

    async def _run_timers(self) -> None:
        while True:
            self._wake = trio.Event()
            deadline = self._next_deadline()
            timeout = math.inf if deadline is None else max(0.0, (deadline - now_ms()) / 1000)
            with trio.move_on_after(timeout):
                await self._wake.wait()
            self.tick(now_ms())

    def _next_deadline(self) -> int | None:
        deadlines = [d for g in self.groups.values() if (d := g.next_deadline()) is not None]
        return min(deadlines, default=None)

    def tick(self, now: int) -> None:
        for group in list(self.groups.values()):
            deadline = group.next_deadline()
            if deadline is not None and deadline <= now:
                try:
                    group.tick(now)
                except Exception:
                    log.exception("group %s: timer failed", group.group_id)

    def _changed(self) -> None:
        """A group's deadlines may have moved: let the timer task look again."""
        self._wake.set()

    async def _run_offset_expiry(self) -> None:
        while True:
            await trio.sleep(self.retention_check_interval_ms / 1000)
            try:
                self.expire_offsets(now_ms())
            except Exception:
                log.exception("offset expiration failed")

    # ---- the offsets topic ------------------------------------------------------------

    def partition_for(self, group_id: str) -> int:
        return partition_for(group_id, self.num_partitions)

    def ensure_offsets_topic(self) -> None:
        if self.writer.partition_count(OFFSETS_TOPIC) is None:
            config = self.broker_config
            self.writer.create_internal_topic(
                OFFSETS_TOPIC,
                self.num_partitions,
                config["offsets.topic.replication.factor"],
                {
                    "cleanup.policy": "compact",
                    "segment.bytes": str(max(config["offsets.topic.segment.bytes"], 14)),
                    "compression.type": "producer",
                },
            )
            log.info("created %s with %d partitions", OFFSETS_TOPIC, self.num_partitions)

    def _offsets_partition(self, group_id: str) -> TopicPartition:
        self.ensure_offsets_topic()
        return OFFSETS_TOPIC, self.partition_for(group_id)

    def _append(
        self, group_id: str, records: Sequence[tuple[bytes, bytes | None]], producer_id: int = -1, producer_epoch: int = -1
    ) -> tuple[ErrorCode, TopicPartition | None, int]:
        """Append records for `group_id` to its partition, as leader: (error, partition,
        offset of the last record). With a producer id, a transactional batch of that
        producer (a TxnOffsetCommit's offsets, as Kafka stores them)."""
        if not records:
            return ErrorCode.none, None, -1
        timestamp = now_ms()
        try:
            tp = self._offsets_partition(group_id)
            if producer_id >= 0:
                batch = build_batch(
                    list(records), timestamp_ms=timestamp, producer_id=producer_id, producer_epoch=producer_epoch,
                    base_sequence=self.writer.next_sequence(tp, producer_id, producer_epoch), transactional=True,
                )
            else:
                batch = build_batch(list(records), timestamp_ms=timestamp)
            headers = validate_batches(batch)
            base_offset = self.writer.append(tp, bytearray(batch), headers, timestamp)
        except KafkaError as e:
            log.warning("group %s: cannot append to %s: %s", group_id, OFFSETS_TOPIC, e)
            return store_error(e.error_code), None, -1
        except Exception:
            log.exception("group %s: cannot append to %s", group_id, OFFSETS_TOPIC)
            return ErrorCode.unknown_server_error, None, -1
        return ErrorCode.none, tp, base_offset + len(records) - 1

    async def _replicated(self, tp: TopicPartition, offset: int, epoch: int | None) -> ErrorCode:
        """Wait for the write at `offset` to be committed; NOT_COORDINATOR if the
        partition was resigned (or re-elected) meanwhile."""
        error = await self.writer.wait_replicated(tp, offset, self.commit_timeout_ms)
        if error is not ErrorCode.none:
            log.warning("%s-%d: offset %d not replicated: %s", tp[0], tp[1], offset, error.name)
            return store_error(error)
        if epoch is None or self.owned.get(tp[1]) != epoch:
            return ErrorCode.not_coordinator
        return ErrorCode.none

    async def _store(
        self, group_id: str, records: Sequence[tuple[bytes, bytes | None]], producer_id: int = -1, producer_epoch: int = -1
    ) -> ErrorCode:
        """Append and wait until committed: the write every commit and assignment waits for."""
        error, _ = await self._store_at(group_id, records, producer_id, producer_epoch)
        return error

    async def _store_at(
        self, group_id: str, records: Sequence[tuple[bytes, bytes | None]], producer_id: int = -1, producer_epoch: int = -1
    ) -> tuple[ErrorCode, int]:
        """`_store`, with the offset of the records' batch in the log (-1 if not stored)."""
        epoch = self.owned.get(self.partition_for(group_id))
        error, tp, offset = self._append(group_id, records, producer_id, producer_epoch)
        if error is not ErrorCode.none or tp is None:
            return error, -1
        return await self._replicated(tp, offset, epoch), offset

    def _group_metadata_record(self, group: Group, assignment: dict[str, bytes]) -> tuple[bytes, bytes]:
        """Kafka's group metadata record: the group with this assignment."""
        protocol = group.protocol_name
        members = [
            codec.MemberMetadataValue(
                m.member_id,
                m.group_instance_id,
                m.client_id,
                m.client_host,
                m.rebalance_timeout_ms,
                m.session_timeout_ms,
                _metadata_or_empty(m, protocol),
                assignment.get(m.member_id, b""),
            )
            for m in group.members.values()
        ]
        value = codec.GroupMetadataValue(
            group.protocol_type or "",
            group.generation_id,
            protocol,
            group.leader_id,
            group.state_timestamp,
            members,
        )
        return codec.encode_group_metadata_key(group.group_id), codec.encode_group_metadata_value(value)

    def _persist_group(self, group: Group, assignment: dict[str, bytes]) -> ErrorCode:
        """Kafka's storeGroup, called by the group's state machine. A leader's assignment
        was stored (and replicated) by `sync_group` before the group sees it: its result
        is answered. Otherwise (a static member's return, a group left empty) the record
        is appended now, and the JoinGroup answers it releases wait for its replication."""
        stored = self._stored_assignment.pop(group.group_id, None)
        if stored is not None and stored[0] == group.generation_id:
            return stored[1]
        error, tp, offset = self._append(group.group_id, [self._group_metadata_record(group, assignment)])
        if error is ErrorCode.none and tp is not None:
            self._unreplicated[group.group_id] = (tp, offset)
        return error

    # ---- loading -------------------------------------------------------------------------

    async def _load_task(self, index: int, epoch: int, scope: trio.CancelScope) -> None:
        started = now_ms()
        loaded = 0
        with scope:
            try:
                if self.writer.partition_count(OFFSETS_TOPIC) is None:
                    pass  # not created yet: nothing to read back
                else:
                    loaded = await self._load_partition(index, lambda: self._load_scopes.get(index) is scope)
            except Exception:
                log.exception("cannot load %s-%d", OFFSETS_TOPIC, index)
            if self._load_scopes.get(index) is scope:
                del self._load_scopes[index]
                self.loading.discard(index)
                self.owned[index] = epoch
                self._loads_done()
                self._changed()
                log.debug("loaded %d groups from %s-%d in %d ms", loaded, OFFSETS_TOPIC, index, now_ms() - started)
                if not self.loading:
                    log.info("loaded %d groups from %s", len(self.groups), OFFSETS_TOPIC)

    async def _load_partition(self, index: int, current: Callable[[], bool]) -> int:
        """Read the partition back, its records decoded in a worker thread (load_batches:
        a large partition stalls no other client, and resignation cancels the load at
        once), then install its groups at once, on the event loop, unless `current()`
        turned false. Returns how many groups were loaded."""
        offsets: dict[str, dict[tuple[str, int], OffsetAndMetadata]] = {}
        metadata: dict[str, codec.GroupMetadataValue | None] = {}
        # Transactional offsets wait for their producer's marker: commit applies them.
        pending: dict[int, dict[str, dict[tuple[str, int], OffsetAndMetadata]]] = {}

        def decode(header: Any, batch: bytes) -> None:
            # In the worker thread: touches only this load's own dicts.
            if header.is_control:
                by_group = pending.pop(header.producer_id, None)
                if by_group and any(control_record_type(r.key) == CONTROL_COMMIT for r in iter_records(batch)):
                    for group_id, committed in by_group.items():
                        offsets.setdefault(group_id, {}).update(committed)
                return
            for record in iter_records(batch):
                if record.key is None:
                    continue
                try:
                    key = codec.decode_key(record.key)
                    if isinstance(key, codec.OffsetCommitKey):
                        group_offsets = (
                            pending.setdefault(header.producer_id, {}).setdefault(key.group, {})
                            if header.is_transactional
                            else offsets.setdefault(key.group, {})
                        )
                        if record.value is None:
                            group_offsets.pop((key.topic, key.partition), None)
                        else:
                            v = codec.decode_offset_commit_value(record.value)
                            group_offsets[(key.topic, key.partition)] = OffsetAndMetadata(
                                v.offset, v.metadata, v.commit_timestamp, v.leader_epoch, v.expire_timestamp
                            )
                    elif isinstance(key, codec.GroupMetadataKey):
                        metadata[key.group] = (
                            None if record.value is None else codec.decode_group_metadata_value(record.value)
                        )
                except codec.CodecError as e:
                    log.warning("%s-%d offset %d: skipping record: %s", OFFSETS_TOPIC, index, record.offset, e)

        await load_batches(self.writer, (OFFSETS_TOPIC, index), decode)
        await trio.sleep(0)
        if not current():
            return 0
        # No checkpoint from here on: the partition's groups appear at once.
        for producer_id, by_group in pending.items():
            for group_id, committed in by_group.items():
                self.pending_txn_offsets.setdefault(producer_id, {}).setdefault(group_id, {}).update(committed)
        now = now_ms()
        loaded = 0
        for group_id in set(offsets) | set(metadata):
            value = metadata.get(group_id)
            group_offsets = offsets.get(group_id, {})
            if value is None and not group_offsets:
                continue  # deleted
            if value is None:
                group = self._new_group(group_id, now)
            else:
                members = [
                    Member(
                        m.member_id,
                        m.group_instance_id,
                        m.client_id,
                        m.client_host,
                        m.rebalance_timeout,
                        m.session_timeout,
                        value.protocol_type,
                        [(value.protocol or "", m.subscription)],
                        m.assignment,
                    )
                    for m in value.members
                ]
                group = Group.loaded(
                    group_id,
                    self.config,
                    now,
                    self._persist_group,
                    protocol_type=value.protocol_type,
                    generation_id=value.generation,
                    protocol_name=value.protocol,
                    leader_id=value.leader,
                    state_timestamp=value.current_state_timestamp,
                    members=members,
                )
            group.offsets.update(group_offsets)
            self.groups[group_id] = group
            loaded += 1
        return loaded

    def _new_group(self, group_id: str, now: int) -> Group:
        return Group(group_id, self.config, now, self._persist_group, on_rebalance=self._rebalance_begun)

    def _rebalance_begun(self) -> None:
        self.rebalances += 1

    # ---- request checks ------------------------------------------------------------------

    def check(self, group_id: str | None, *, allow_empty_id: bool = False) -> ErrorCode | None:
        """Kafka's validateGroupStatus: the group id, and whether its coordinator serves."""
        if group_id is None or (not group_id and not allow_empty_id):
            return ErrorCode.invalid_group_id
        if not self.active:
            return ErrorCode.coordinator_not_available
        partition = self.partition_for(group_id)
        if partition in self.loading:
            return ErrorCode.coordinator_load_in_progress
        if partition not in self.owned:
            return ErrorCode.not_coordinator
        return None

    # ---- membership ---------------------------------------------------------------------

    async def join_group(
        self,
        *,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        client_id: str,
        client_host: str,
        rebalance_timeout_ms: int,
        session_timeout_ms: int,
        protocol_type: str,
        protocols: Sequence[tuple[str, bytes]],
        require_known_member_id: bool,
        supports_skip_assignment: bool,
    ) -> JoinResult:
        error = self.check(group_id)
        if error is None and not (
            self.config.min_session_timeout_ms <= session_timeout_ms <= self.config.max_session_timeout_ms
        ):
            error = ErrorCode.invalid_session_timeout
        if error is not None:
            return JoinResult(error, member_id)
        group = self.groups.get(group_id)
        if group is None:
            # Only a new member creates a group; a known member id with no group is stale.
            if member_id:
                return JoinResult(ErrorCode.unknown_member_id, member_id)
            self.ensure_offsets_topic()
            group = self.groups[group_id] = self._new_group(group_id, now_ms())
        event = trio.Event()
        reply: Reply[JoinResult] = Reply(event.set)
        group.join(
            now_ms(),
            reply,
            member_id=member_id,
            group_instance_id=group_instance_id,
            client_id=client_id,
            client_host=client_host,
            rebalance_timeout_ms=rebalance_timeout_ms,
            session_timeout_ms=session_timeout_ms,
            protocol_type=protocol_type,
            protocols=protocols,
            require_known_member_id=require_known_member_id,
            supports_skip_assignment=supports_skip_assignment,
        )
        self._changed()
        if not reply.done:
            await event.wait()
        result = reply.value
        assert result is not None
        unreplicated = self._unreplicated.get(group_id)
        if unreplicated is not None and result.error is ErrorCode.none:
            # The answer follows a write of the group (a static member's return): it
            # waits for that write to be committed, as Kafka's storeGroup callback does.
            tp, offset = unreplicated
            error = await self._replicated(tp, offset, self.owned.get(tp[1]))
            if self._unreplicated.get(group_id) == unreplicated:
                del self._unreplicated[group_id]
            if error is not ErrorCode.none:
                return JoinResult(error, result.member_id)
        return result

    def _is_leader_assignment(
        self, group: Group, member_id: str, group_instance_id: str | None, generation_id: int,
        protocol_type: str | None, protocol_name: str | None,
    ) -> bool:
        """Whether this SyncGroup is the leader's, which Group.sync would store."""
        return (
            group.state is GroupState.COMPLETING_REBALANCE
            and group.is_leader(member_id)
            and generation_id == group.generation_id
            and (group_instance_id is None or group.static_members.get(group_instance_id) == member_id)
            and (protocol_type is None or protocol_type == group.protocol_type)
            and (protocol_name is None or protocol_name == group.protocol_name)
        )

    async def sync_group(
        self,
        *,
        group_id: str,
        generation_id: int,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: dict[str, bytes],
    ) -> SyncResult:
        error = self.check(group_id)
        if error is ErrorCode.coordinator_load_in_progress:
            # The rebalance state is lost with the restart: rejoin (older clients do not
            # know COORDINATOR_LOAD_IN_PROGRESS here).
            error = ErrorCode.rebalance_in_progress
        if error is not None:
            return SyncResult(error)
        group = self.groups.get(group_id)
        if group is None:
            return SyncResult(ErrorCode.unknown_member_id)
        if self._is_leader_assignment(group, member_id, group_instance_id, generation_id, protocol_type, protocol_name):
            # Kafka stores the leader's assignment and completes the SyncGroups in the
            # write's callback: here it is stored (and replicated) first, then handed to
            # the group, which answers every member with it (or with the error).
            epoch = self.owned.get(self.partition_for(group_id))
            full = {m: assignments.get(m, b"") for m in group.members}
            stored = await self._store(group_id, [self._group_metadata_record(group, full)])
            if self.groups.get(group_id) is not group or self.owned.get(self.partition_for(group_id)) != epoch:
                return SyncResult(ErrorCode.not_coordinator)  # unloaded meanwhile
            self._stored_assignment[group_id] = (generation_id, stored)
        event = trio.Event()
        reply: Reply[SyncResult] = Reply(event.set)
        group.sync(
            now_ms(),
            reply,
            member_id=member_id,
            group_instance_id=group_instance_id,
            generation_id=generation_id,
            protocol_type=protocol_type,
            protocol_name=protocol_name,
            assignments=assignments,
        )
        self._stored_assignment.pop(group_id, None)
        self._changed()
        if not reply.done:
            await event.wait()
        assert reply.value is not None
        return reply.value

    def heartbeat(self, *, group_id: str, member_id: str, group_instance_id: str | None, generation_id: int) -> ErrorCode:
        error = self.check(group_id)
        if error is ErrorCode.coordinator_load_in_progress:
            return ErrorCode.none  # answered blindly while loading, as Kafka does
        if error is not None:
            return error
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.unknown_member_id
        error = group.heartbeat(now_ms(), member_id=member_id, group_instance_id=group_instance_id, generation_id=generation_id)
        self._changed()
        return error

    def leave_group(self, group_id: str, members: Sequence[tuple[str, str | None]]) -> tuple[ErrorCode, list[ErrorCode]]:
        error = self.check(group_id)
        if error is not None:
            return error, []
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.none, [ErrorCode.unknown_member_id for _ in members]
        result = group.leave(now_ms(), members)
        self._changed()
        return result

    # ---- offsets ------------------------------------------------------------------------

    async def commit_offsets(
        self,
        *,
        group_id: str,
        member_id: str,
        group_instance_id: str | None,
        generation_id: int,
        offsets: dict[tuple[str, int], tuple[int, int, str | None]],
        retention_ms: int = -1,
        api_version: int = 9,
    ) -> dict[tuple[str, int], ErrorCode]:
        """Commit (offset, leader epoch, metadata) per partition; errors per partition.
        Answered once the commit's record is committed; only then is it visible."""
        if not offsets:
            return {}
        error = self.check(group_id, allow_empty_id=True)
        if error is not None:
            return {tp: error for tp in offsets}
        group = self.groups.get(group_id)
        new_group = group is None
        if group is None:
            if generation_id >= 0:
                error = ErrorCode.group_id_not_found if api_version >= 9 else ErrorCode.illegal_generation
                return {tp: error for tp in offsets}
            # A simple consumer (or an admin) commits for a group with no members.
            self.ensure_offsets_topic()
            group = self._new_group(group_id, now_ms())
        error = group.validate_offset_commit(
            now_ms(), member_id=member_id, group_instance_id=group_instance_id, generation_id=generation_id
        )
        self._changed()
        if error is not ErrorCode.none:
            return {tp: error for tp in offsets}
        timestamp = now_ms()
        expire = None if retention_ms < 0 else timestamp + retention_ms
        results: dict[tuple[str, int], ErrorCode] = {}
        accepted: dict[tuple[str, int], OffsetAndMetadata] = {}
        records = []
        for (topic, index), (offset, leader_epoch, metadata) in offsets.items():
            metadata = metadata or ""
            if len(metadata.encode()) > OFFSET_METADATA_MAX_BYTES:
                results[(topic, index)] = ErrorCode.offset_metadata_too_large
                continue
            om = OffsetAndMetadata(offset, metadata, timestamp, leader_epoch, expire)
            accepted[(topic, index)] = om
            records.append(
                (
                    codec.encode_offset_commit_key(group_id, topic, index),
                    codec.encode_offset_commit_value(
                        codec.OffsetCommitValue(offset, metadata, timestamp, leader_epoch, expire)
                    ),
                )
            )
        stored, record_offset = await self._store_at(group_id, records)
        for tp in accepted:
            results[tp] = stored
        if accepted and stored is ErrorCode.none:
            if new_group:
                # Another commit may have created the group while this one was replicated.
                group = self.groups.setdefault(group_id, group)
            # Commits pipelined on one connection complete in any order: each applies
            # only over an older record, so the last one written is what stays.
            for tp, om in accepted.items():
                current = group.offsets.get(tp)
                if current is None or current.record_offset < record_offset:
                    om.record_offset = record_offset
                    group.offsets[tp] = om
        return results

    async def txn_offset_commit(
        self,
        *,
        group_id: str,
        producer_id: int,
        producer_epoch: int,
        offsets: dict[tuple[str, int], tuple[int, int, str | None]],
        member_id: str = "",
        group_instance_id: str | None = None,
        generation_id: int = -1,
    ) -> ErrorCode:
        """Kafka's handleTxnCommitOffsets: the offsets are written as the producer's
        transactional batch and, once committed, held pending until the transaction's
        marker on the group's partition (`complete_transactional_offsets`). One error for
        every partition; a member id or generation (v3+, KIP-447) is checked against the
        group."""
        error = self.check(group_id)
        if error is not None:
            return error
        group = self.groups.get(group_id)
        if group is not None:
            if group.state is GroupState.DEAD:
                return ErrorCode.coordinator_not_available
            if group_instance_id is not None and group.static_members.get(group_instance_id, member_id) != member_id:
                return ErrorCode.fenced_instance_id
            if member_id and member_id not in group.members:
                return ErrorCode.unknown_member_id
            if generation_id >= 0 and generation_id != group.generation_id:
                return ErrorCode.illegal_generation
        timestamp = now_ms()
        committed = {
            tp: OffsetAndMetadata(offset, metadata or "", timestamp, leader_epoch, None)
            for tp, (offset, leader_epoch, metadata) in offsets.items()
        }
        records = [
            (
                codec.encode_offset_commit_key(group_id, topic, index),
                codec.encode_offset_commit_value(
                    codec.OffsetCommitValue(om.offset, om.metadata, om.commit_timestamp, om.leader_epoch, om.expire_timestamp)
                ),
            )
            for (topic, index), om in committed.items()
        ]
        self.ensure_offsets_topic()
        error = await self._store(group_id, records, producer_id, producer_epoch)
        if error is ErrorCode.none:
            self.pending_txn_offsets.setdefault(producer_id, {}).setdefault(group_id, {}).update(committed)
        return error

    def complete_transactional_offsets(self, producer_id: int, partition_indexes: Iterable[int], commit: bool) -> None:
        """A transaction marker of `producer_id` was written to these `__consumer_offsets`
        partitions: its pending TxnOffsetCommit offsets of their groups become the
        groups' committed offsets (commit) or are dropped (abort). Kafka's
        handleTxnCompletion; nothing is written, the marker commits the batch in the log."""
        by_group = self.pending_txn_offsets.get(producer_id)
        if not by_group:
            return
        partitions = set(partition_indexes)
        for group_id in [g for g in by_group if self.partition_for(g) in partitions]:
            offsets = by_group.pop(group_id)
            if commit and self.partition_for(group_id) in self.owned:
                group = self.groups.get(group_id)
                if group is None:
                    group = self.groups[group_id] = self._new_group(group_id, now_ms())
                group.offsets.update(offsets)
        if not by_group:
            del self.pending_txn_offsets[producer_id]

    def pending_offset_partitions(self, group_id: str) -> set[tuple[str, int]]:
        """Partitions of `group_id` with a transactional commit not yet completed (what
        OffsetFetch with require_stable answers UNSTABLE_OFFSET_COMMIT for)."""
        found: set[tuple[str, int]] = set()
        for by_group in self.pending_txn_offsets.values():
            found.update(by_group.get(group_id, {}))
        return found

    def fetch_offsets(
        self, group_id: str, partitions: Sequence[tuple[str, int]] | None, require_stable: bool = False
    ) -> tuple[ErrorCode, dict[tuple[str, int], OffsetAndMetadata | None]]:
        """(group error, committed offset per partition, None where none); all the
        group's offsets when `partitions` is None. Commits are appended before they are
        answered, so none is ever pending: require_stable needs no wait."""
        error = self.check(group_id, allow_empty_id=True)
        if error is not None:
            return error, {}
        group = self.groups.get(group_id)
        committed = group.offsets if group is not None else {}
        if partitions is None:
            return ErrorCode.none, dict(sorted(committed.items()))
        return ErrorCode.none, {tp: committed.get(tp) for tp in partitions}

    def delete_offsets(
        self, group_id: str, partitions: Sequence[tuple[str, int]]
    ) -> tuple[ErrorCode, dict[tuple[str, int], ErrorCode]]:
        error = self.check(group_id)
        if error is not None:
            return error, {}
        group = self.groups.get(group_id)
        if group is None or group.state is GroupState.DEAD:
            return ErrorCode.group_id_not_found, {}
        results: dict[tuple[str, int], ErrorCode] = {}
        if group.state is GroupState.EMPTY:
            eligible = list(partitions)
        elif group.is_consumer_group:
            eligible = []
            for tp in partitions:
                if group.is_subscribed_to_topic(tp[0]):
                    results[tp] = ErrorCode.group_subscribed_to_topic
                else:
                    eligible.append(tp)
        else:
            return ErrorCode.non_empty_group, {}
        removed = self._remove_offsets(group, eligible)
        for tp in eligible:
            results[tp] = removed
        return ErrorCode.none, results

    def _remove_offsets(self, group: Group, partitions: Iterable[tuple[str, int]], *, dead: bool = False) -> ErrorCode:
        """Drop offsets, writing their tombstones (and the group's, once it is dead)."""
        removed = [tp for tp in partitions if group.offsets.pop(tp, None) is not None]
        records: list[tuple[bytes, bytes | None]] = [
            (codec.encode_offset_commit_key(group.group_id, topic, index), None) for topic, index in removed
        ]
        if dead and group.generation_id > 0:
            records.append((codec.encode_group_metadata_key(group.group_id), None))
        # Tombstones are not waited for (Kafka's cleanupGroupMetadata appends them so).
        return self._append(group.group_id, records)[0]

    def expire_offsets(self, now: int) -> int:
        """Kafka's offset expiration pass; empty groups left without offsets die."""
        total = 0
        for group in list(self.groups.values()):
            if self.partition_for(group.group_id) not in self.owned:
                continue
            expired = group.expired_offsets(now, self.retention_ms)
            dead = group.state is GroupState.EMPTY and len(expired) == len(group.offsets)
            if dead:
                group.mark_dead(now)
                del self.groups[group.group_id]
            if expired or dead:
                self._remove_offsets(group, expired, dead=dead)
                total += len(expired)
                log.info("group %s: expired %d offsets%s", group.group_id, len(expired), ", group removed" if dead else "")
        return total

    # ---- admin -------------------------------------------------------------------------------

    def describe_group(self, group_id: str) -> tuple[ErrorCode, Group | None]:
        error = self.check(group_id, allow_empty_id=True)
        if error is not None:
            return error, None
        return ErrorCode.none, self.groups.get(group_id)

    def list_groups(self, states: Iterable[str] = (), types: Iterable[str] = ()) -> tuple[ErrorCode, list[ListedGroup]]:
        if not self.active:
            return ErrorCode.coordinator_not_available, []
        error = ErrorCode.coordinator_load_in_progress if self.loading else ErrorCode.none
        wanted_states = {s.lower() for s in states}
        wanted_types = {t.lower() for t in types}
        if wanted_types and GROUP_TYPE_CLASSIC not in wanted_types:
            return error, []
        return error, [
            ListedGroup(g.group_id, g.protocol_type or "", g.state.value)
            for g in self.groups.values()
            if not wanted_states or g.state.value.lower() in wanted_states
        ]

    def delete_groups(self, group_ids: Iterable[str]) -> dict[str, ErrorCode]:
        results: dict[str, ErrorCode] = {}
        now = now_ms()
        for group_id in dict.fromkeys(group_ids):
            error = self.check(group_id, allow_empty_id=True)
            if error is not None:
                results[group_id] = error
                continue
            group = self.groups.get(group_id)
            if group is None or group.state is GroupState.DEAD:
                results[group_id] = ErrorCode.group_id_not_found
            elif group.state is not GroupState.EMPTY:
                results[group_id] = ErrorCode.non_empty_group
            else:
                group.mark_dead(now)
                del self.groups[group_id]
                results[group_id] = self._remove_offsets(group, list(group.offsets), dead=True)
                log.info("group %s deleted", group_id)
        self._changed()
        return results


def _metadata_or_empty(member: Member, protocol: str | None) -> bytes:
    if protocol is None:
        return b""
    try:
        return member.metadata(protocol)
    except KeyError:
        return b""


def store_error(error: ErrorCode) -> ErrorCode:
    """Kafka's mapping of a failed (or unreplicated) append to what a coordinator answers
    (GroupMetadataManager.storeGroup / storeOffsets, TransactionStateManager)."""
    if error in (
        ErrorCode.unknown_topic_or_partition,
        ErrorCode.not_enough_replicas,
        ErrorCode.not_enough_replicas_after_append,
        ErrorCode.request_timed_out,
    ):
        return ErrorCode.coordinator_not_available
    if error in (ErrorCode.not_leader_or_follower, ErrorCode.kafka_storage_error, ErrorCode.not_coordinator):
        return ErrorCode.not_coordinator
    return ErrorCode.unknown_server_error



def read_batches(writer: PartitionWriter, tp: TopicPartition) -> Iterator[tuple[Any, bytes]]:
    """Every batch of a coordinator partition, from its log start to its end: (header, bytes)."""
    offset = writer.log_start_offset(tp)
    end = writer.log_end_offset(tp)
    while offset < end:
        data = writer.read(tp, offset, LOAD_READ_BYTES)
        progressed = False
        for header, batch in _chunk_batches(data, offset):
            yield header, batch
            offset = header.next_offset
            progressed = True
        if not progressed:
            break


async def load_batches(writer: PartitionWriter, tp: TopicPartition, decode: Callable[[Any, bytes], None]) -> None:
    """Every batch of a coordinator partition, from its log start to its end, handed to
    `decode(header, bytes)` in a worker thread: each chunk (LOAD_READ_BYTES) is read on
    the event loop (one pread), its batches parsed and decoded off it, so loading a
    large partition does not stall other clients. Cancellable at any time: a chunk
    being decoded is abandoned to its thread, so `decode` must touch only the load's
    own state."""
    offset = writer.log_start_offset(tp)
    end = writer.log_end_offset(tp)
    while offset < end:
        data = writer.read(tp, offset, LOAD_READ_BYTES)
        next_offset = await trio.to_thread.run_sync(_decode_chunk, data, offset, decode, abandon_on_cancel=True)
        if next_offset <= offset:
            break
        offset = next_offset


def _decode_chunk(data: bytes, offset: int, decode: Callable[[Any, bytes], None]) -> int:
    """decode() each batch of a chunk ending past `offset`; the offset after them."""
    for header, batch in _chunk_batches(data, offset):
        decode(header, batch)
        offset = header.next_offset
    return offset


def _chunk_batches(data: bytes, offset: int) -> Iterator[tuple[Any, bytes]]:
    """The whole batches of a chunk read from the log that end past `offset` (a read
    starts at the batch holding it): (header, bytes)."""
    position = 0
    while len(data) - position >= BATCH_HEADER_SIZE:
        header = parse_batch_header(data, position)
        if position + header.size > len(data):
            break
        if header.next_offset > offset:
            yield header, data[position : position + header.size]
            offset = header.next_offset
        position += header.size
