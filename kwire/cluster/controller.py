"""The controller: one broker of the cluster, elected through the ephemeral
/controller znode, that decides partition leadership (Kafka's KafkaController in
ZooKeeper mode).

It works by reconciliation: after any change it sees in the mirror of ZooKeeper
(brokers come and go, topics appear, an admin asks for a deletion or an election),
it compares every partition's state with what it should be and writes the
difference. `plan` is that comparison, free of I/O; `Controller` runs it and writes
each change as a conditional ZooKeeper multi-op that also checks /controller_epoch,
so a controller that lost its seat without knowing it cannot write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import trio
from kio.schema.errors import ErrorCode

from kwire.clock import now_ms
from kwire.cluster import zk_layout as layout
from kwire.cluster.zk import (
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    ZkSession,
    ZkTimeout,
    ZookeeperError,
)
from kwire.cluster.zk_metadata import ZkMirror, ZkPartitionState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StateChange:
    """A partition state to write: `zk_version` -1 creates it."""

    topic: str
    partition: int
    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    zk_version: int
    reason: str


def plan(
    mirror: ZkMirror,
    *,
    controller_epoch: int,
    shutting_down: frozenset[int] = frozenset(),
    unclean: Callable[[str], bool] = lambda topic: False,
    skip: Iterable[tuple[str, int]] = (),
) -> list[StateChange]:
    """Every partition state write needed now (Kafka's PartitionStateMachine and
    ReplicaStateMachine transitions, as a pure function of the mirror)."""
    live = mirror.live_brokers()
    eligible = live - shutting_down
    skipped = set(skip)
    changes: list[StateChange] = []
    for topic, assignment in mirror.topics.items():
        if topic in mirror.deleting:
            continue
        for index, replicas in assignment.partitions.items():
            if (topic, index) in skipped:
                continue
            state = mirror.states.get((topic, index))
            change = _partition_change(topic, index, replicas, state, live, eligible, mirror, unclean(topic))
            if change is not None:
                changes.append(change)
    return changes


def _partition_change(
    topic: str,
    index: int,
    replicas: tuple[int, ...],
    state: ZkPartitionState | None,
    live: frozenset[int],
    eligible: frozenset[int],
    mirror: ZkMirror,
    unclean: bool,
) -> StateChange | None:
    if state is None:
        # NewPartition -> OnlinePartition: the first live replica leads, every live one is in sync.
        online = tuple(r for r in replicas if r in eligible) or tuple(r for r in replicas if r in live)
        if not online:
            return None  # stays new until a replica is up
        return StateChange(topic, index, online[0], 0, online, -1, "new partition")
    leader, isr = state.leader, state.isr
    if leader not in eligible:
        # Offline (or leaving) leader: elect from the live ISR in replica order.
        candidates = [r for r in replicas if r in eligible and r in isr]
        if not candidates and leader in live and leader not in eligible:
            return None  # shutting down with no one to take over: it keeps leading until it stops
        if candidates:
            new_leader = candidates[0]
            new_isr = tuple(r for r in isr if r in live and (r in eligible or r == new_leader))
            return StateChange(topic, index, new_leader, state.leader_epoch + 1, new_isr, state.zk_version,
                               f"leader {leader} offline")
        if unclean:
            fallback = [r for r in replicas if r in eligible]
            if fallback:
                return StateChange(topic, index, fallback[0], state.leader_epoch + 1, (fallback[0],),
                                   state.zk_version, "unclean leader election")
        if leader == -1:
            return None  # already offline; waits for an ISR member to come back
        # No live replica in sync: offline, keeping the last ISR member (Kafka's
        # removeReplicasFromIsr), so only it may lead again.
        new_isr = tuple(r for r in isr if r != leader) or isr
        return StateChange(topic, index, -1, state.leader_epoch + 1, new_isr, state.zk_version,
                           f"leader {leader} offline, no live replica in the ISR")
    # The leader is fine: offline or leaving followers leave the ISR at once.
    gone = [r for r in isr if r != leader and (r not in live or r not in eligible)]
    if gone:
        new_isr = tuple(r for r in isr if r not in gone)
        return StateChange(topic, index, leader, state.leader_epoch + 1, new_isr, state.zk_version,
                           f"replicas {gone} offline or shutting down")
    if (topic, index) in mirror.preferred_elections:
        return _preferred_change(topic, index, replicas, state, eligible)
    return None


def _preferred_change(
    topic: str, index: int, replicas: tuple[int, ...], state: ZkPartitionState, eligible: frozenset[int]
) -> StateChange | None:
    """The first replica leads again, if it is eligible, in the ISR and not leading."""
    preferred = replicas[0] if replicas else -1
    if preferred == state.leader or preferred not in eligible or preferred not in state.isr:
        return None
    return StateChange(topic, index, preferred, state.leader_epoch + 1, state.isr, state.zk_version,
                       "preferred replica election")


def preferred_leader_changes(mirror: ZkMirror, partitions: Iterable[tuple[str, int]]) -> list[StateChange]:
    """Preferred replica elections (ElectLeaders, auto.leader.rebalance.enable)."""
    live = mirror.live_brokers()
    changes = []
    for topic, index in partitions:
        state = mirror.states.get((topic, index))
        if state is None:
            continue
        change = _preferred_change(topic, index, mirror.replicas(topic, index), state, live)
        if change is not None:
            changes.append(change)
    return changes


class Controller:
    """Runs on every broker; acts only while it holds /controller."""

    def __init__(
        self,
        session: ZkSession,
        mirror: ZkMirror,
        broker_id: int,
        *,
        unclean: Callable[[str], bool],
    ) -> None:
        self.session = session
        self.mirror = mirror
        self.broker_id = broker_id
        self.unclean = unclean
        self.active = False
        self.epoch = -1
        self.epoch_zk_version = -1
        self.shutting_down: set[int] = set()
        # The broker epoch each shutting-down broker had when this controller first saw
        # it shutting down: one registered again since (a new epoch) may lead again.
        self._shutting_down_epochs: dict[int, int] = {}
        self._wake = trio.Event()
        self._writing: set[tuple[str, int]] = set()
        self._deleting: set[str] = set()
        self._completing = False
        # Set after each reconciliation pass (tests, controlled shutdown wait on it).
        self.reconciled = trio.Event()

    def poke(self) -> None:
        """Something changed: look again."""
        self._wake.set()

    async def try_elect(self) -> bool:
        """Kafka's registerControllerAndIncrementControllerEpoch: create /controller
        and bump /controller_epoch in one multi-op; False if another broker won."""
        session = self.session
        try:
            data, stat = await session.get_or_none(layout.CONTROLLER_EPOCH_PATH)
            if data is None:
                try:
                    await session.create(layout.CONTROLLER_EPOCH_PATH, layout.encode_controller_epoch(0))
                except NodeExistsError:
                    pass
                data, stat = await session.get(layout.CONTROLLER_EPOCH_PATH)
            assert stat is not None
            epoch = layout.decode_controller_epoch(data) + 1
            client = session._client()
            transaction = client.transaction()
            transaction.create(layout.CONTROLLER_PATH, layout.encode_controller(self.broker_id, timestamp_ms=now_ms()), ephemeral=True)
            transaction.set_data(layout.CONTROLLER_EPOCH_PATH, layout.encode_controller_epoch(epoch), stat.version)
            results = await session._await(transaction.commit_async())
        except (ZkTimeout, ZookeeperError) as e:
            log.debug("controller election failed: %r", e)
            return False
        if any(isinstance(r, Exception) for r in results):
            return False
        self.epoch = epoch
        self.epoch_zk_version = results[1].version
        self.active = True
        self.mirror.controller_id = self.broker_id
        log.info("broker %d is the controller, epoch %d", self.broker_id, epoch)
        self.poke()
        return True

    def resign(self) -> None:
        if self.active:
            log.info("broker %d is no longer the controller", self.broker_id)
        self.active = False
        self.shutting_down.clear()
        self._shutting_down_epochs.clear()

    async def run(
        self,
        *,
        rebalance_interval_s: float | None = None,
        imbalance_percent: int = 10,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            if rebalance_interval_s is not None:
                nursery.start_soon(self._rebalance_leaders, rebalance_interval_s, imbalance_percent)
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                if not self.active:
                    continue
                try:
                    await self._reconcile(nursery)
                except (ZkTimeout, ZookeeperError) as e:
                    log.warning("controller: ZooKeeper unavailable: %r", e)
                    await trio.sleep(0.5)
                    self.poke()
                reconciled, self.reconciled = self.reconciled, trio.Event()
                reconciled.set()

    async def _reconcile(self, nursery: trio.Nursery) -> None:
        mirror = self.mirror
        # A broker that shut down and left is no longer "shutting down": when it
        # registers again it may lead again.
        live = mirror.live_brokers()
        for broker_id in list(self.shutting_down):
            epoch = mirror.broker_epochs.get(broker_id, -1)
            if broker_id not in live or self._shutting_down_epochs.setdefault(broker_id, epoch) != epoch:
                self.shutting_down.discard(broker_id)
        for broker_id in set(self._shutting_down_epochs) - self.shutting_down:
            del self._shutting_down_epochs[broker_id]
        for topic in mirror.deleting:
            if topic not in self._deleting:
                self._deleting.add(topic)
                nursery.start_soon(self._delete_topic, topic)
        changes = plan(
            mirror,
            controller_epoch=self.epoch,
            shutting_down=frozenset(self.shutting_down),
            unclean=self.unclean,
            skip=self._writing,
        )
        if mirror.preferred_elections:
            nursery.start_soon(self._clear_preferred_election)
        if not self._completing and any(a.adding_replicas or a.removing_replicas for a in mirror.topics.values()):
            self._completing = True
            nursery.start_soon(self._complete_reassignments)
        for change in changes:
            self._writing.add((change.topic, change.partition))
            nursery.start_soon(self._write, change)

    # ---- preferred leaders (ElectLeaders, auto.leader.rebalance.enable) ------------------

    async def elect_preferred(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], ErrorCode]:
        """Kafka's PreferredReplicaPartitionLeaderElectionStrategy for these partitions:
        NONE once elected, ELECTION_NOT_NEEDED if it already leads,
        PREFERRED_LEADER_NOT_AVAILABLE if it is down or out of sync."""
        results: dict[tuple[str, int], ErrorCode] = {}
        wanted = []
        live = self.mirror.live_brokers()
        for topic, index in partitions:
            replicas = self.mirror.replicas(topic, index)
            state = self.mirror.states.get((topic, index))
            if not replicas or state is None:
                results[(topic, index)] = ErrorCode.unknown_topic_or_partition
            elif state.leader == replicas[0]:
                results[(topic, index)] = ErrorCode.election_not_needed
            elif replicas[0] not in live or replicas[0] not in state.isr:
                results[(topic, index)] = ErrorCode.preferred_leader_not_available
            else:
                wanted.append((topic, index))
        await self.write_changes(preferred_leader_changes(self.mirror, wanted))
        for key in wanted:
            state = self.mirror.states.get(key)
            replicas = self.mirror.replicas(*key)
            elected = state is not None and replicas and state.leader == replicas[0]
            results[key] = ErrorCode.none if elected else ErrorCode.preferred_leader_not_available
        return results

    def imbalanced_partitions(self, threshold_percent: int) -> list[tuple[str, int]]:
        """Kafka's checkAndTriggerAutoLeaderRebalance: per preferred leader, the share of
        its partitions led by another broker; above the threshold, all of them."""
        by_preferred: dict[int, list[tuple[str, int]]] = {}
        led_elsewhere: dict[int, list[tuple[str, int]]] = {}
        for topic, assignment in self.mirror.topics.items():
            if topic in self.mirror.deleting:
                continue
            for index, replicas in assignment.partitions.items():
                if not replicas or index in assignment.adding_replicas or index in assignment.removing_replicas:
                    continue
                preferred = replicas[0]
                by_preferred.setdefault(preferred, []).append((topic, index))
                state = self.mirror.states.get((topic, index))
                if state is not None and state.leader != preferred:
                    led_elsewhere.setdefault(preferred, []).append((topic, index))
        chosen: list[tuple[str, int]] = []
        for broker_id, elsewhere in led_elsewhere.items():
            if broker_id in self.mirror.brokers and broker_id not in self.shutting_down:
                if len(elsewhere) * 100 / len(by_preferred[broker_id]) > threshold_percent:
                    chosen.extend(elsewhere)
        return chosen

    async def _rebalance_leaders(self, interval_s: float, threshold_percent: int) -> None:
        while True:
            await trio.sleep(interval_s)
            if not self.active:
                continue
            partitions = self.imbalanced_partitions(threshold_percent)
            if partitions:
                log.info("controller: preferred leader election for %d imbalanced partition(s)", len(partitions))
                try:
                    await self.elect_preferred(partitions)
                except (ZkTimeout, ZookeeperError) as e:
                    log.warning("controller: leader rebalance failed: %r", e)

    # ---- reassignments (KIP-455) ---------------------------------------------------------

    async def reassign(self, targets: dict[tuple[str, int], tuple[int, ...] | None]) -> dict[tuple[str, int], str | None]:
        """Start (or, with None, cancel) partition reassignments: the topic's assignment
        znode gets the union of old and new replicas, with adding_replicas and
        removing_replicas; the new replicas catch up, and `_reconcile` completes it.
        Returns an error message per partition, None where accepted."""
        results: dict[tuple[str, int], str | None] = {}
        by_topic: dict[str, dict[int, tuple[int, ...] | None]] = {}
        for (topic, index), target in targets.items():
            by_topic.setdefault(topic, {})[index] = target
        for topic, wanted in by_topic.items():
            # A read-modify-write of the assignment znode, again if it changed meanwhile.
            for _attempt in range(5):
                data, stat = await self.session.get_or_none(layout.topic_path(topic))
                if data is None or stat is None:
                    for index, target in wanted.items():
                        results[(topic, index)] = (
                            "NO_REASSIGNMENT_IN_PROGRESS" if target is None else "UNKNOWN_TOPIC_OR_PARTITION"
                        )
                    break
                assignment = layout.decode_topic_assignment(data, topic)
                updated, outcome = self._reassigned(assignment, topic, wanted)
                results.update(outcome)
                try:
                    stat = await self.session.set(layout.topic_path(topic), layout.encode_topic_assignment(updated), stat.version)
                except BadVersionError:
                    continue
                except NoNodeError:
                    for index in wanted:
                        results[(topic, index)] = "UNKNOWN_TOPIC_OR_PARTITION"
                    break
                self.mirror.topics[topic] = updated
                self.mirror.topic_versions[topic] = stat.version
                log.info("controller: reassigning %s partitions %s", topic, sorted(wanted))
                break
        self.poke()
        return results

    def _reassigned(
        self, assignment: layout.TopicAssignment, topic: str, wanted: dict[int, tuple[int, ...] | None]
    ) -> tuple[layout.TopicAssignment, dict[tuple[str, int], str | None]]:
        """The assignment with these reassignments started or cancelled (Kafka's
        ReplicaAssignment.reassignTo), and the outcome per partition."""
        results: dict[tuple[str, int], str | None] = {}
        partitions = dict(assignment.partitions)
        adding = dict(assignment.adding_replicas)
        removing = dict(assignment.removing_replicas)
        for index, target in wanted.items():
            key = (topic, index)
            if index not in partitions:
                results[key] = "NO_REASSIGNMENT_IN_PROGRESS" if target is None else "UNKNOWN_TOPIC_OR_PARTITION"
                continue
            original = tuple(r for r in partitions[index] if r not in adding.get(index, ()))
            if target is None:
                if index not in adding and index not in removing:
                    results[key] = "NO_REASSIGNMENT_IN_PROGRESS"
                    continue
                # Cancel: back to the original replicas.
                partitions[index] = original
                adding.pop(index, None)
                removing.pop(index, None)
                results[key] = None
                continue
            # Kafka checks the replicas being added: one staying may be offline.
            unknown = [r for r in target if r not in original and r not in self.mirror.brokers]
            if not target or len(set(target)) != len(target) or unknown:
                results[key] = f"INVALID_REPLICA_ASSIGNMENT: {list(target)}"
                continue
            union = tuple(dict.fromkeys(tuple(target) + original))
            partitions[index] = union
            adding[index] = tuple(r for r in target if r not in original)
            removing[index] = tuple(r for r in union if r not in target)
            if not adding[index]:
                adding.pop(index)
            if not removing[index]:
                removing.pop(index)
            results[key] = None
        return layout.TopicAssignment(assignment.topic_id, partitions, adding, removing), results

    async def _complete_reassignments(self) -> None:
        """A reassignment completes when every target replica is in the ISR: the
        leader moves into the target set if needed, then the removed replicas leave
        the assignment (and their brokers delete them)."""
        try:
            await self._complete_reassignments_once()
        finally:
            self._completing = False

    async def _complete_reassignments_once(self) -> None:
        live = self.mirror.live_brokers()
        for topic, assignment in list(self.mirror.topics.items()):
            pending = set(assignment.adding_replicas) | set(assignment.removing_replicas)
            if not pending:
                continue
            done = []
            for index in sorted(pending):
                removing = assignment.removing_replicas.get(index, ())
                target = tuple(r for r in assignment.partitions[index] if r not in removing)
                state = self.mirror.states.get((topic, index))
                if state is None or (topic, index) in self._writing:
                    continue
                if not all(r in state.isr for r in target):
                    continue
                if state.leader not in target or any(r in state.isr for r in removing):
                    leader = state.leader if state.leader in target else next((r for r in target if r in live), -1)
                    if leader < 0:
                        continue
                    change = StateChange(topic, index, leader, state.leader_epoch + 1,
                                         tuple(r for r in state.isr if r in target), state.zk_version,
                                         "reassignment completing")
                    self._writing.add((topic, index))
                    await self._write(change)
                    continue  # the assignment follows on the next pass
                done.append((index, target))
            if not done:
                continue
            partitions = dict(assignment.partitions)
            adding = dict(assignment.adding_replicas)
            removing = dict(assignment.removing_replicas)
            for index, target in done:
                partitions[index] = target
                adding.pop(index, None)
                removing.pop(index, None)
            updated = layout.TopicAssignment(assignment.topic_id, partitions, adding, removing)
            version = self.mirror.topic_versions.get(topic, -1)
            try:
                stat = await self.session.check_and_set(
                    layout.CONTROLLER_EPOCH_PATH, self.epoch_zk_version, layout.topic_path(topic),
                    layout.encode_topic_assignment(updated), version,
                )
            except (BadVersionError, NoNodeError):
                continue
            self.mirror.topics[topic] = updated
            self.mirror.topic_versions[topic] = stat.version
            log.info("controller: reassignment of %s partitions %s complete", topic, [i for i, _ in done])

    async def write_changes(self, changes: Iterable[StateChange]) -> None:
        """Write these changes now and wait for them (ElectLeaders, controlled shutdown)."""
        async with trio.open_nursery() as nursery:
            for change in changes:
                if (change.topic, change.partition) in self._writing:
                    continue
                self._writing.add((change.topic, change.partition))
                nursery.start_soon(self._write, change)

    async def _write(self, change: StateChange) -> None:
        key = (change.topic, change.partition)
        data = layout.encode_partition_state(layout.LeaderIsrAndControllerEpoch(change.leader, change.leader_epoch, change.isr, self.epoch))
        path = layout.partition_state_path(change.topic, change.partition)
        try:
            if change.zk_version < 0:
                await self.session.ensure_path(layout.partition_path(change.topic, change.partition))
                await self.session.check_and_create(layout.CONTROLLER_EPOCH_PATH, self.epoch_zk_version, [(path, data)])
                version = 0
            else:
                stat = await self.session.check_and_set(
                    layout.CONTROLLER_EPOCH_PATH, self.epoch_zk_version, path, data, change.zk_version
                )
                version = stat.version
        except (BadVersionError, NodeExistsError, NoNodeError) as e:
            # The state moved meanwhile (a leader changed its ISR) or our epoch is stale:
            # the mirror learns which by its watches, and we look again.
            log.debug("controller: write of %s-%d lost a race: %r", change.topic, change.partition, e)
            if not await self._still_controller():
                self.resign()
        except (ZkTimeout, ZookeeperError) as e:
            log.warning("controller: cannot write %s-%d: %r", change.topic, change.partition, e)
        else:
            log.info(
                "controller: %s-%d leader %d epoch %d isr %s (%s)",
                change.topic, change.partition, change.leader, change.leader_epoch, list(change.isr), change.reason,
            )
            # What the watch will say: later passes plan from it without waiting.
            self.mirror.states[key] = ZkPartitionState(change.leader, change.leader_epoch, change.isr, self.epoch, version)
            self.mirror.version += 1
        finally:
            self._writing.discard(key)
        self.poke()

    async def _still_controller(self) -> bool:
        data, _ = await self.session.get_or_none(layout.CONTROLLER_PATH)
        return data is not None and layout.decode_controller(data) == self.broker_id

    async def _delete_topic(self, topic: str) -> None:
        """Kafka's TopicDeletionManager, shortened: the topic's znodes go, and every
        broker, seeing it gone, deletes its replicas' logs."""
        try:
            await self.session.delete_recursive(layout.topic_path(topic))
            await self.session.delete_recursive(layout.topic_config_path(topic))
            await self.session.delete_recursive(layout.delete_topic_path(topic))
            log.info("controller: deleted topic %s", topic)
        except (ZkTimeout, ZookeeperError) as e:
            log.warning("controller: cannot delete topic %s: %r", topic, e)
        finally:
            self._deleting.discard(topic)

    async def _clear_preferred_election(self) -> None:
        # Kafka deletes the admin node once its elections are done (or impossible).
        await trio.sleep(0.2)
        try:
            await self.session.delete(layout.PREFERRED_REPLICA_ELECTION_PATH)
        except NoNodeError:
            pass
        except (ZkTimeout, ZookeeperError) as e:
            log.debug("cannot clear the preferred election node: %r", e)
