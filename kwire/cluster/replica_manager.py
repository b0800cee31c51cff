"""The replica manager: this broker's replicas in the cluster, their roles, and the
high watermark (Kafka's ReplicaManager, ZooKeeper mode).

After every change of the ZooKeeper mirror, `apply` opens the replicas assigned to
this broker, deletes those no longer assigned, and makes each one leader or
follower at the epoch ZooKeeper says. Leaders track their followers through the
followers' Fetch requests, move the high watermark to the lowest log end offset in
the ISR, and shrink or expand the ISR with a conditional write of the partition
state znode; followers fetch from their leader (kwire.cluster.replica_fetcher).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio
from kio.schema.errors import ErrorCode

from kwire.clock import now_ms
from kwire.cluster import zk_layout as layout
from kwire.cluster.replica_fetcher import ReplicaFetcher
from kwire.cluster.replication import FollowerState, Replication, Role
from kwire.cluster.zk import BadVersionError, NoNodeError, ZkSession, ZkTimeout, ZookeeperError
from kwire.cluster.zk_metadata import ZkMirror, ZkPartitionState

if TYPE_CHECKING:
    from kwire.broker import Broker, Partition
    from kwire.cluster.broker_client import BrokerClientPool

log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
TRANSACTION_STATE_TOPIC = "__transaction_state"


class ReplicaManager:
    def __init__(
        self,
        broker: Broker,
        session: ZkSession,
        mirror: ZkMirror,
        pool: BrokerClientPool,
    ) -> None:
        self.broker = broker
        self.broker_id = broker.broker_id
        self.session = session
        self.mirror = mirror
        self.pool = pool
        config = broker.config
        self.lag_time_ms: int = config["replica.lag.time.max.ms"]
        self.fetchers: dict[int, ReplicaFetcher] = {}
        self._nursery: trio.Nursery | None = None
        # Coordinator hooks: called with (topic, partition index, leader epoch).
        self.on_elected: list[Callable[[str, int, int], None]] = []
        self.on_resigned: list[Callable[[str, int, int], None]] = []
        # Set by a controlled shutdown: this broker no longer follows anyone.
        self.stopping = False

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._check_isr_periodically)
            nursery.start_soon(self._checkpoint_high_watermarks)
            task_status.started()
            await trio.sleep_forever()

    # ---- following the mirror -----------------------------------------------------------

    def apply(self) -> None:
        """Bring local replicas in line with the mirror (Kafka's becomeLeaderOrFollower
        and StopReplica, driven by ZooKeeper's state instead of controller requests)."""
        mirror, broker = self.mirror, self.broker
        self._became: dict[str, list[str]] = {"leader": [], "follower": []}
        assigned: set[tuple[str, int]] = set()
        for topic, assignment in mirror.topics.items():
            if topic in mirror.deleting:
                continue
            for index, replicas in assignment.partitions.items():
                if self.broker_id not in replicas:
                    continue
                assigned.add((topic, index))
                partition = broker.replica(topic, index)
                if partition is None or partition.topic.topic_id != assignment.topic_id:
                    if partition is not None:
                        self._remove(partition)
                    partition = broker.open_replica(
                        topic, assignment.topic_id, index, len(assignment.partitions), mirror.topic_configs.get(topic, {})
                    )
                state = mirror.states.get((topic, index))
                if state is not None:
                    self._apply_state(partition, state, replicas)
        for partition in list(broker.local_replicas()):
            if (partition.topic.name, partition.index) not in assigned:
                self._remove(partition)
        for topic in list(broker.topics.values()):
            configs = mirror.topic_configs.get(topic.name)
            if configs is not None and topic.topic_id == getattr(mirror.topics.get(topic.name), "topic_id", None):
                broker.apply_topic_configs(topic, configs)
        for role, names in self._became.items():
            if names:
                shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
                log.info("became %s of %d partition(s): %s", role, len(names), shown)

    def _apply_state(self, partition: Partition, state: ZkPartitionState, replicas: tuple[int, ...]) -> None:
        current = partition.replication
        me = self.broker_id
        if current is not None and current.leader_epoch == state.leader_epoch and current.leader_id == state.leader:
            # Same epoch: an ISR change (ours landing, or the controller's) or a version bump.
            current.isr = state.isr
            current.zk_version = state.zk_version
            if current.replicas != replicas:
                current.replicas = replicas
                if current.is_leader:
                    # A reassignment added or removed followers.
                    for r in replicas:
                        if r != me and r not in current.followers:
                            current.followers[r] = FollowerState()
                    for r in list(current.followers):
                        if r not in replicas:
                            del current.followers[r]
            if current.is_leader:
                partition.advance_high_watermark()
            return
        if current is not None and state.leader_epoch < current.leader_epoch:
            return  # a stale read; the newer state is on its way
        was_leader = current is not None and current.is_leader
        if state.leader == me:
            replication = Replication(me, Role.LEADER, me, state.leader_epoch, state.isr, replicas, state.zk_version)
            replication.leader_since = current.leader_since if was_leader and current is not None else state.leader_epoch
            self._stop_fetching(partition)
            partition.log.leader_epoch = state.leader_epoch
            replication.become_leader(now_ms(), partition.log_end_offset)
            if was_leader and current is not None:
                # Still leading: what the followers reported stays true.
                replication.followers = current.followers
                replication.epoch_start_offset = current.epoch_start_offset
            partition.replication = replication
            self._became["leader"].append(f"{partition.topic.name}-{partition.index}")
            log.debug(
                "%s-%d: leader at epoch %d, isr %s, log end %d, high watermark %d",
                partition.topic.name, partition.index, state.leader_epoch, list(state.isr),
                partition.log_end_offset, partition.high_watermark,
            )
            partition.advance_high_watermark()
            if not was_leader:
                self._notify(self.on_elected, partition, state.leader_epoch)
        else:
            partition.replication = Replication(
                me, Role.FOLLOWER, state.leader, state.leader_epoch, state.isr, replicas, state.zk_version
            )
            if was_leader:
                self._notify(self.on_resigned, partition, state.leader_epoch)
            self._stop_fetching(partition)
            if state.leader >= 0 and not self.stopping:
                self._fetcher(state.leader).add(partition, state.leader_epoch)
            self._became["follower"].append(f"{partition.topic.name}-{partition.index}")
            log.debug(
                "%s-%d: follower of %d at epoch %d, log end %d",
                partition.topic.name, partition.index, state.leader, state.leader_epoch, partition.log_end_offset,
            )
        # Waiters (acks=all answers, long polls) look again: the role changed.
        partition.wake_waiters()

    def _notify(self, hooks: list[Callable[[str, int, int], None]], partition: Partition, epoch: int) -> None:
        if partition.topic.name not in (OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC):
            return
        for hook in hooks:
            try:
                hook(partition.topic.name, partition.index, epoch)
            except Exception:
                log.exception("coordinator hook failed for %s-%d", partition.topic.name, partition.index)

    def _remove(self, partition: Partition) -> None:
        """StopReplica with deletion: the replica is no longer ours (topic deleted or
        reassigned away)."""
        self._stop_fetching(partition)
        if partition.replication is not None and partition.replication.is_leader:
            self._notify(self.on_resigned, partition, partition.replication.leader_epoch + 1)
        partition.replication = None
        self.broker.delete_replica(partition)

    # ---- fetchers ------------------------------------------------------------------------

    def _fetcher(self, leader_id: int) -> ReplicaFetcher:
        fetcher = self.fetchers.get(leader_id)
        if fetcher is None:
            fetcher = ReplicaFetcher(self, leader_id)
            self.fetchers[leader_id] = fetcher
            assert self._nursery is not None
            self._nursery.start_soon(fetcher.run)
        return fetcher

    def stop_following(self) -> None:
        """After a controlled shutdown (Kafka's StopReplica without deletion): stop
        fetching, so that leaders do not take this broker back into their ISR only for
        the controller to take it out again while it stops."""
        self.stopping = True
        for fetcher in self.fetchers.values():
            fetcher.partitions.clear()

    def _stop_fetching(self, partition: Partition) -> None:
        for fetcher in self.fetchers.values():
            fetcher.remove(partition)

    # ---- the leader's side -----------------------------------------------------------------

    def follower_fetched(self, partition: Partition, follower_id: int, fetch_offset: int) -> ErrorCode:
        """A follower's Fetch reached this leader: record its progress, expand the ISR
        if it caught up, and move the high watermark."""
        replication = partition.replication
        if replication is None or not replication.is_leader:
            return ErrorCode.not_leader_or_follower
        if not replication.follower_fetched(follower_id, fetch_offset, partition.log_end_offset, now_ms()):
            return ErrorCode.not_leader_or_follower
        partition.advance_high_watermark()
        # Only a registered (live) broker joins the ISR, as Kafka takes no fenced or
        # offline broker back (KIP-841).
        if (
            follower_id not in replication.isr
            and not replication.isr_write_pending
            and follower_id in self.mirror.brokers
        ):
            new_isr = replication.isr_to_expand(partition.high_watermark, self.mirror.live_brokers())
            if new_isr is not None:
                self._write_isr(partition, new_isr, "caught up")
        return ErrorCode.none

    async def _check_isr_periodically(self) -> None:
        # Kafka checks every replica.lag.time.max.ms / 2.
        while True:
            await trio.sleep(max(self.lag_time_ms / 2000, 0.05))
            now = now_ms()
            for partition in list(self.broker.local_replicas()):
                replication = partition.replication
                if replication is None or not replication.is_leader or replication.isr_write_pending:
                    continue
                new_isr = replication.isr_to_shrink(now, self.lag_time_ms, partition.log_end_offset)
                if new_isr is not None:
                    self._write_isr(partition, new_isr, "lagging")

    def _write_isr(self, partition: Partition, new_isr: tuple[int, ...], reason: str) -> None:
        replication = partition.replication
        assert replication is not None and self._nursery is not None
        replication.isr_write_pending = True
        self._nursery.start_soon(self._write_isr_async, partition, replication, new_isr, reason)

    async def _write_isr_async(
        self, partition: Partition, replication: Replication, new_isr: tuple[int, ...], reason: str
    ) -> None:
        """The leader's conditional write of its ISR (Kafka's ZooKeeper-mode
        Partition.updateIsr): lost races are settled by the watch that follows."""
        topic, index = partition.topic.name, partition.index
        state = self.mirror.states.get((topic, index))
        controller_epoch = state.controller_epoch if state is not None else 0
        data = layout.encode_partition_state(layout.LeaderIsrAndControllerEpoch(replication.leader_id, replication.leader_epoch, new_isr, controller_epoch))
        try:
            stat = await self.session.set(layout.partition_state_path(topic, index), data, replication.zk_version)
        except (BadVersionError, NoNodeError):
            log.info("%s-%d: ISR change to %s lost a race; waiting for the new state", topic, index, list(new_isr))
        except (ZkTimeout, ZookeeperError) as e:
            log.warning("%s-%d: cannot write ISR %s: %r", topic, index, list(new_isr), e)
        else:
            old = replication.isr
            if partition.replication is replication:
                replication.isr = new_isr
                replication.zk_version = stat.version
                self.mirror.states[(topic, index)] = ZkPartitionState(
                    replication.leader_id, replication.leader_epoch, new_isr, controller_epoch, stat.version
                )
                partition.advance_high_watermark()
                partition.wake_waiters()
            log.info("%s-%d: ISR %s -> %s (%s)", topic, index, list(old), list(new_isr), reason)
            # The replica manager's IsrShrinksPerSec / IsrExpandsPerSec (kwire.metrics).
            stats = self.broker.stats
            if len(new_isr) < len(old):
                stats.isr_shrinks += 1
            elif len(new_isr) > len(old):
                stats.isr_expands += 1
        finally:
            replication.isr_write_pending = False

    async def _checkpoint_high_watermarks(self) -> None:
        # Kafka's replica.high.watermark.checkpoint.interval.ms (5 s).
        interval = self.broker.config["replica.high.watermark.checkpoint.interval.ms"] / 1000
        while True:
            await trio.sleep(interval)
            for partition in list(self.broker.local_replicas()):
                try:
                    partition.log.checkpoint_high_watermark()
                except OSError:
                    log.exception("cannot checkpoint the high watermark of %s-%d", partition.topic.name, partition.index)

