"""The cluster's state as ZooKeeper holds it, mirrored by watches: the ZooKeeper
source of the metadata image.

Every broker keeps this mirror (Kafka's brokers learnt the same from the
controller's UpdateMetadata requests; here ZooKeeper's watches tell them directly,
in milliseconds, and the controller writes each change once). The mirror holds the
znode versions too: the controller and partition leaders write conditionally on
them.

`apply_*` methods are sync and I/O free: the reading (with watches) is done by
`ZkMirrorReader`, which feeds them. A `MetadataImage` is built from the mirror on
demand, whole.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from types import MappingProxyType

import trio

from kwire.broker import INTERNAL_TOPICS
from kwire.cluster import zk_layout as layout
from kwire.cluster.metadata_image import (
    BrokerRegistration,
    ClusterImage,
    MetadataImage,
    PartitionState,
    TopicImage,
    TopicsImage,
)
from kwire.cluster.zk import WatchEvent, ZkSession, ZkTimeout, ZookeeperError

log = logging.getLogger(__name__)


_BROKER = re.compile(r"^/brokers/ids/(\d+)$")
_TOPIC = re.compile(r"^/brokers/topics/([^/]+)$")
_STATE = re.compile(r"^/brokers/topics/([^/]+)/partitions/(\d+)/state$")
_CONFIG = re.compile(r"^/config/topics/([^/]+)$")


@dataclass(frozen=True, slots=True)
class ZkPartitionState:
    """A partition's state znode: leader and ISR, and the znode version to write at."""

    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    controller_epoch: int
    zk_version: int


@dataclass
class ZkMirror:
    cluster_id: str = ""
    controller_id: int = -1
    brokers: dict[int, BrokerRegistration] = field(default_factory=dict)
    # Broker id -> the czxid of its /brokers/ids/<id> znode: Kafka's broker epoch, new
    # at every registration.
    broker_epochs: dict[int, int] = field(default_factory=dict)
    # Topic -> its assignment znode (topic id, replicas per partition, reassignment).
    topics: dict[str, layout.TopicAssignment] = field(default_factory=dict)
    # The children of /brokers/topics as last read (a topic's assignment follows).
    topic_names: frozenset[str] = frozenset()
    # Topic -> the version of its assignment znode (reassignments write at it).
    topic_versions: dict[str, int] = field(default_factory=dict)
    states: dict[tuple[str, int], ZkPartitionState] = field(default_factory=dict)
    topic_configs: dict[str, dict[str, str]] = field(default_factory=dict)
    # Topics an admin asked to delete (/admin/delete_topics children).
    deleting: frozenset[str] = frozenset()
    reassignments: dict[tuple[str, int], tuple[int, ...]] = field(default_factory=dict)
    preferred_elections: frozenset[tuple[str, int]] = frozenset()
    # Bumped on every change: listeners compare it to know whether to look again.
    version: int = 0

    def live_brokers(self) -> frozenset[int]:
        return frozenset(self.brokers)

    def replicas(self, topic: str, index: int) -> tuple[int, ...]:
        assignment = self.topics.get(topic)
        if assignment is None:
            return ()
        return assignment.partitions.get(index, ())

    def image(self) -> MetadataImage:
        """The metadata image of the cluster as it stands (Kafka's MetadataCache)."""
        live = self.live_brokers()
        topics = []
        for name, assignment in self.topics.items():
            partitions = []
            for index in range(len(assignment.partitions)):
                replicas = assignment.partitions.get(index, ())
                state = self.states.get((name, index))
                if state is None:
                    # Created, its leader not elected yet: clients retry on LEADER_NOT_AVAILABLE.
                    partitions.append(PartitionState(index, -1, -1, replicas, (), ()))
                    continue
                partitions.append(
                    PartitionState(
                        partition_index=index,
                        leader_id=state.leader,
                        leader_epoch=state.leader_epoch,
                        replicas=replicas,
                        isr=state.isr,
                        offline_replicas=tuple(r for r in replicas if r not in live),
                    )
                )
            topics.append(TopicImage(name, assignment.topic_id, tuple(partitions), is_internal=name in INTERNAL_TOPICS))
        return MetadataImage(
            cluster_id=self.cluster_id,
            controller_id=self.controller_id,
            cluster=ClusterImage(MappingProxyType(dict(sorted(self.brokers.items())))),
            topics=TopicsImage.of(topics),
        )


class ZkMirrorReader:
    """Keeps a ZkMirror up to date: reads every watched znode, re-reads it when its
    watch fires, and calls `changed()` after each batch of updates.

    One read per path at a time: a watch firing during a read marks the path to be
    read again after it, so an older answer never overwrites a newer one.
    """

    def __init__(self, session: ZkSession, mirror: ZkMirror, changed: Callable[[], None]) -> None:
        self.session = session
        self.mirror = mirror
        self.changed = changed
        self._nursery: trio.Nursery | None = None
        self._reading: dict[str, bool] = {}  # path -> read again when done
        self.synced = trio.Event()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self.resync()
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None  # stopping: watches still arriving are not read

    async def resync(self) -> None:
        """Read everything (start-up, or a new session after the old one expired:
        its watches are gone)."""
        data, _ = await self.session.get_or_none(layout.CLUSTER_ID_PATH)
        if data is not None:
            self.mirror.cluster_id = layout.decode_cluster_id(data)
        async with trio.open_nursery() as nursery:
            for path in (layout.BROKER_IDS_PATH, layout.TOPICS_PATH, layout.DELETE_TOPICS_PATH):
                nursery.start_soon(self._read, path, "children")
            for path in (layout.CONTROLLER_PATH, layout.REASSIGN_PARTITIONS_PATH, layout.PREFERRED_REPLICA_ELECTION_PATH):
                nursery.start_soon(self._read, path, "data")
        # What is already known is read again too: a new session has none of the old
        # one's watches, and anything may have changed while there was none.
        for broker_id in list(self.mirror.brokers):
            self.read_soon(layout.broker_path(broker_id), "data")
        for topic, assignment in list(self.mirror.topics.items()):
            self.read_soon(layout.topic_path(topic), "data")
            self.read_soon(layout.topic_config_path(topic), "data")
            for index in assignment.partitions:
                self.read_soon(layout.partition_state_path(topic, index), "data")

    def on_watch(self, event: WatchEvent) -> None:
        self.read_soon(event.path, event.kind)

    def read_soon(self, path: str, kind: str) -> None:
        key = f"{kind}:{path}"
        if key in self._reading:
            self._reading[key] = True
            return
        if self._nursery is None:
            return
        try:
            self._nursery.start_soon(self._read, path, kind)
        except RuntimeError:
            return  # the reader is stopping (its nursery takes no new task): drop it
        self._reading[key] = False

    async def _read(self, path: str, kind: str) -> None:
        key = f"{kind}:{path}"
        self._reading[key] = False
        try:
            while True:
                try:
                    if kind == "children":
                        await self._read_children(path)
                    else:
                        await self._read_data(path)
                except (ZkTimeout, ZookeeperError) as e:
                    # The session is down: the resync after reconnecting reads it again.
                    log.debug("cannot read %s: %r", path, e)
                    return
                except layout.ZkDataError as e:
                    log.warning("ignoring unreadable znode %s: %s", path, e)
                if not self._reading.get(key):
                    break
                self._reading[key] = False
        finally:
            self._reading.pop(key, None)
            if not self._reading:
                # Nothing left to read: the mirror is whole (after start-up, the first time).
                self.synced.set()
        self.changed()

    async def _read_children(self, path: str) -> None:
        children = await self.session.children(path, watch=True)
        mirror = self.mirror
        if path == layout.BROKER_IDS_PATH:
            ids = {int(c) for c in children if c.isdigit()}
            for gone in set(mirror.brokers) - ids:
                del mirror.brokers[gone]
                mirror.broker_epochs.pop(gone, None)
            for new in ids - set(mirror.brokers):
                self.read_soon(layout.broker_path(new), "data")
        elif path == layout.TOPICS_PATH:
            names = set(children)
            mirror.topic_names = frozenset(names)
            for gone in set(mirror.topics) - names:
                self._forget_topic(gone)
            for name in names - set(mirror.topics):
                self.read_soon(layout.topic_path(name), "data")
                self.read_soon(layout.topic_config_path(name), "data")
        elif path == layout.DELETE_TOPICS_PATH:
            mirror.deleting = frozenset(children)
        mirror.version += 1

    def _forget_topic(self, name: str) -> None:
        mirror = self.mirror
        assignment = mirror.topics.pop(name, None)
        mirror.topic_configs.pop(name, None)
        mirror.topic_versions.pop(name, None)
        if assignment is not None:
            for index in assignment.partitions:
                mirror.states.pop((name, index), None)

    async def _read_data(self, path: str) -> None:
        data, stat = await self.session.get_or_none(path, watch=True)
        mirror = self.mirror
        if m := _STATE.match(path):
            topic, index = m[1], int(m[2])
            if topic not in mirror.topics:
                return  # deleted meanwhile; stop watching
            if data is None or stat is None:
                mirror.states.pop((topic, index), None)
            else:
                s = layout.decode_partition_state(data)
                mirror.states[(topic, index)] = ZkPartitionState(
                    s.leader, s.leader_epoch, s.isr, s.controller_epoch, stat.version
                )
        elif m := _TOPIC.match(path):
            topic = m[1]
            if data is None:
                self._forget_topic(topic)
            else:
                assignment = layout.decode_topic_assignment(data, topic)
                old = mirror.topics.get(topic)
                mirror.topics[topic] = assignment
                assert stat is not None
                mirror.topic_versions[topic] = stat.version
                for index in assignment.partitions:
                    if old is None or index not in old.partitions:
                        self.read_soon(layout.partition_state_path(topic, index), "data")
        elif m := _CONFIG.match(path):
            topic = m[1]
            if data is None:
                mirror.topic_configs.pop(topic, None)
            else:
                mirror.topic_configs[topic] = layout.decode_entity_config(data)
        elif m := _BROKER.match(path):
            broker_id = int(m[1])
            if data is None:
                mirror.brokers.pop(broker_id, None)
                mirror.broker_epochs.pop(broker_id, None)
            else:
                mirror.brokers[broker_id] = layout.decode_broker_registration(broker_id, data)
                mirror.broker_epochs[broker_id] = stat.czxid
        elif path == layout.CONTROLLER_PATH:
            mirror.controller_id = -1 if data is None else layout.decode_controller(data)
        elif path == layout.REASSIGN_PARTITIONS_PATH:
            mirror.reassignments = {} if data is None else layout.decode_reassignment(data)
        elif path == layout.PREFERRED_REPLICA_ELECTION_PATH:
            mirror.preferred_elections = frozenset() if data is None else frozenset(layout.decode_preferred_replica_election(data))
        mirror.version += 1

