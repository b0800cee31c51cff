"""This broker as a member of a ZooKeeper-coordinated cluster.

`ClusterNode` owns the ZooKeeper session and everything that depends on it: the
broker's registration (/brokers/ids/<id>), the mirror of the cluster's state and
the metadata images built from it, the controller (active on one broker), the
replica manager and the connections to other brokers. One task reads the
session's events (watches, session state) and acts on them; kazoo's threads only
post those events.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING

import trio
from kio.schema.errors import ErrorCode

from kwire.clock import now_ms
from kwire.cluster import zk_layout as layout
from kwire.cluster.broker_client import BrokerClientPool
from kwire.cluster.controller import Controller
from kwire.cluster.metadata_image import BrokerRegistration
from kwire.cluster.replica_manager import ReplicaManager
from kwire.cluster.zk import (
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    SessionEvent,
    WatchEvent,
    ZkSession,
    ZkTimeout,
    ZookeeperError,
)
from kwire.cluster.zk_broker_configs import ZkBrokerConfigs
from kwire.cluster.zk_metadata import ZkMirror, ZkMirrorReader
from kwire.cluster.zk_security import ZkAclStore, ZkEntityConfigs
from kwire.errors import KafkaError, StartupError
from kwire.security.client import inter_broker_security

if TYPE_CHECKING:
    from kwire.broker import Broker

log = logging.getLogger(__name__)

WRITE_TXN_MARKERS_KEY = 27


class ClusterNode:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.broker_id = broker.broker_id
        config = broker.config
        session_timeout = config["zookeeper.session.timeout.ms"]
        connection_timeout = config["zookeeper.connection.timeout.ms"] or session_timeout
        self.session = ZkSession(
            config["zookeeper.connect"], session_timeout_ms=session_timeout, connection_timeout_ms=connection_timeout
        )
        self.mirror = ZkMirror()
        self.reader = ZkMirrorReader(self.session, self.mirror, self._mirror_changed)
        # The cluster's users, client ids and ACLs: every broker serves the same ones.
        # Set before any request is served; filled by their first read in run().
        self.entity_configs = ZkEntityConfigs(self.session)
        self.acl_store = ZkAclStore(self.session)
        broker.entity_configs = self.entity_configs
        broker.acl_store = self.acl_store
        # Dynamic broker configs: /config/brokers/<id> and /config/brokers/<default>.
        self.broker_configs = ZkBrokerConfigs(self.session, self.broker_id)
        broker.broker_configs = self.broker_configs
        self.broker_configs.subscribe(broker.dynamic_configs_changed)
        self.controller = Controller(
            self.session, self.mirror, self.broker_id, unclean=self._unclean_election_enabled
        )
        # Two sets of connections, as Kafka keeps its replica fetchers' apart: a
        # request that waits on replication (WriteTxnMarkers) must never sit in front
        # of the fetches that would let it complete, answers being in request order.
        # On the inter-broker listener, with its TLS and SASL (as the broker's own user).
        security = inter_broker_security(broker.config)
        self.pool = BrokerClientPool(self._resolve, client_id=f"broker-{self.broker_id}", security=security)
        self.fetch_pool = BrokerClientPool(
            self._resolve, client_id=f"broker-{self.broker_id}-fetcher", security=security
        )
        self.replicas = ReplicaManager(broker, self.session, self.mirror, self.fetch_pool)
        self._apply_pending = trio.Event()
        self._session_lost = False
        self._suspended = False
        self._producer_ids: tuple[int, int] = (0, 0)  # [next, end) of this broker's block
        self._next_block: tuple[int, int] | None = None
        self._creating: set[str] = set()
        self._new_cluster = False
        self._producer_id_refill: bool = False
        self._nursery: trio.Nursery | None = None

    # ---- running -------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        session = self.session
        try:
            await session.start()
        except ZkTimeout as e:
            raise StartupError(str(e)) from None
        try:
            async with self.pool, self.fetch_pool, trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._create_persistent_paths()
                await self._check_cluster_id()
                # Applied before any replica opens its log with the broker's defaults.
                await nursery.start(self.broker_configs.run)
                await nursery.start(self.replicas.run)
                config = self.broker.config
                await nursery.start(
                    partial(
                        self.controller.run,
                        rebalance_interval_s=config["leader.imbalance.check.interval.seconds"]
                        if config["auto.leader.rebalance.enable"]
                        else None,
                        imbalance_percent=config["leader.imbalance.per.broker.percentage"],
                    )
                )
                await nursery.start(self.reader.run)
                # Their first full read is part of the sync that precedes serving: no
                # request is authorized, or authenticated, against an empty view.
                await nursery.start(self.entity_configs.run)
                await nursery.start(self.acl_store.run)
                nursery.start_soon(self._apply_changes)
                await self._register()
                nursery.start_soon(self._read_events)
                nursery.start_soon(self._delete_stray_replicas)
                await self._refill_producer_ids()
                # Serve once the mirror is whole and the replicas follow it (bounded: a
                # huge cluster's state keeps arriving while requests are answered).
                with trio.move_on_after(self.session.call_timeout):
                    await self.reader.synced.wait()
                self.broker.metadata_image = self.mirror.image()
                self.replicas.apply()
                task_status.started()
                await self._elect_if_vacant()
        finally:
            with trio.CancelScope(shield=True):
                await session.close()

    async def _create_persistent_paths(self) -> None:
        for path in layout.PERSISTENT_PATHS:
            await self.session.ensure_path(path)

    async def _check_cluster_id(self) -> None:
        """The cluster id lives in /cluster/id; a log dir of another cluster is refused
        (Kafka's InconsistentClusterIdException)."""
        data, _ = await self.session.get_or_none(layout.CLUSTER_ID_PATH)
        # A new cluster (or a wiped ZooKeeper): what is on disk is not judged by it.
        self._new_cluster = data is None
        if data is None:
            try:
                await self.session.create(
                    layout.CLUSTER_ID_PATH, layout.encode_cluster_id(self.broker.cluster_id), makepath=True
                )
            except NodeExistsError:
                pass
            data, _ = await self.session.get(layout.CLUSTER_ID_PATH)
        cluster_id = layout.decode_cluster_id(data)
        if self.broker.has_data_of_cluster and self.broker.cluster_id != cluster_id:
            raise StartupError(
                f"The cluster id {cluster_id} in ZooKeeper does not match the cluster id "
                f"{self.broker.cluster_id} stored in {self.broker.log_dir}"
            )
        self.broker.set_cluster_id(cluster_id)
        self.mirror.cluster_id = cluster_id

    def registration(self) -> BrokerRegistration:
        from kwire.cluster.metadata_image import local_broker_registration

        broker = self.broker
        registration = local_broker_registration(broker.config, self.broker_id, broker.bound_ports)
        rack = broker.config["broker.rack"] or None
        return BrokerRegistration(registration.broker_id, registration.endpoints, rack)

    async def _register(self) -> None:
        """The ephemeral /brokers/ids/<id>. After a crash the previous session's node
        may still be there until that session expires: wait for it, as the broker id
        is taken until then."""
        data = layout.encode_broker_registration(self.registration(), timestamp_ms=now_ms())
        path = layout.broker_path(self.broker_id)
        deadline = trio.current_time() + self.session.session_timeout_ms / 1000 * 2 + 5
        warned = False
        while True:
            try:
                await self.session.create(path, data, ephemeral=True)
                break
            except NodeExistsError:
                _, stat = await self.session.get_or_none(path)
                if stat is not None and stat.ephemeralOwner == self.session.client.client_id[0]:  # type: ignore[union-attr]
                    break  # ours already (a retried create)
                if trio.current_time() > deadline:
                    raise StartupError(f"broker id {self.broker_id} is registered by another live broker") from None
                if not warned:
                    log.warning("broker id %d still registered by an earlier session; waiting for it to expire", self.broker_id)
                    warned = True
                await trio.sleep(0.25)
        log.info("registered as broker %d in ZooKeeper at %s%s", self.broker_id, self.session.hosts, self.session.chroot)

    async def _read_events(self) -> None:
        async for event in self.session.events:
            if isinstance(event, WatchEvent):
                if not (
                    self.entity_configs.on_watch(event)
                    or self.acl_store.on_watch(event)
                    or self.broker_configs.on_watch(event)
                ):
                    self.reader.on_watch(event)
            elif isinstance(event, SessionEvent):
                await self._session_state(event.state)

    async def _session_state(self, state: str) -> None:
        if state == "LOST":
            # Expired: our ephemeral nodes are gone and another broker may lead our
            # partitions. Until we are back, ZooKeeper writes fail, and so do ISR changes.
            log.warning("ZooKeeper session expired")
            self._session_lost = True
            self._suspended = True
            self.controller.resign()
        elif state == "SUSPENDED":
            log.warning("ZooKeeper connection lost; the session may still live")
            self._suspended = True
        elif state == "CONNECTED" and self._suspended:
            # kazoo drops its watchers with the connection: read everything again,
            # and after an expired session register again too.
            lost, self._session_lost, self._suspended = self._session_lost, False, False
            log.info("ZooKeeper connection back (%s): reading the cluster's state again",
                     "a new session" if lost else "the same session")
            if self._nursery is not None:
                try:
                    self._nursery.start_soon(self._rejoin, lost)
                except RuntimeError:
                    pass  # stopping

    async def _rejoin(self, register: bool) -> None:
        try:
            if register:
                await self._register()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.entity_configs.resync)
                nursery.start_soon(self.acl_store.resync)
                nursery.start_soon(self.broker_configs.resync)
                await self.reader.resync()
            await self._elect_if_vacant()
        except (ZkTimeout, ZookeeperError) as e:
            log.warning("rejoining the cluster failed: %r", e)

    async def _delete_stray_replicas(self) -> None:
        """Once the mirror is whole: replicas left on disk of topics deleted (or moved
        away) while this broker was down are deleted, as KRaft brokers do with strays."""
        await self.reader.synced.wait()
        await trio.sleep(0)
        self.replicas.apply()
        mirror = self.mirror
        if self._new_cluster:
            return  # ZooKeeper knows nothing yet: never delete data on its word

        def is_stray(topic: str, index: int) -> bool:
            if topic not in mirror.topic_names:
                return True  # deleted
            assignment = mirror.topics.get(topic)
            # Moved away; a topic whose assignment could not be read is kept.
            return assignment is not None and self.broker_id not in assignment.partitions.get(index, ())

        self.broker.delete_stray_logs(is_stray)

    # ---- the mirror changed ------------------------------------------------------------------

    def _mirror_changed(self) -> None:
        self._apply_pending.set()

    async def _apply_changes(self) -> None:
        """Coalesced: a burst of watch events gives one pass."""
        while True:
            await self._apply_pending.wait()
            self._apply_pending = trio.Event()
            try:
                self.broker.metadata_image = self.mirror.image()
                self.replicas.apply()
            except Exception:
                log.exception("applying the cluster's state failed")
            self.controller.poke()
            if self.mirror.controller_id < 0 and not self.controller.active:
                await self._elect_if_vacant()
            elif self.mirror.controller_id != self.broker_id and self.controller.active:
                self.controller.resign()
            await trio.sleep(0)

    async def _elect_if_vacant(self) -> None:
        if self.mirror.controller_id < 0 and not self._session_lost:
            await self.controller.try_elect()

    def _resolve(self, broker_id: int) -> tuple[str, int] | None:
        registration = self.mirror.brokers.get(broker_id)
        if registration is None:
            return None
        endpoint = registration.endpoint(self.broker.config.inter_broker_listener)
        return endpoint.host or "127.0.0.1", endpoint.port

    def _unclean_election_enabled(self, topic: str) -> bool:
        configs = self.mirror.topic_configs.get(topic, {})
        value = configs.get("unclean.leader.election.enable")
        if value is not None:
            return value.lower() == "true"
        return bool(self.broker.config["unclean.leader.election.enable"])

    # ---- admin: writes to ZooKeeper, as Kafka's AdminZkClient ------------------------------

    async def create_topic(
        self,
        name: str,
        assignment: Mapping[int, tuple[int, ...]],
        configs: Mapping[str, str],
        *,
        wait_seconds: float,
    ) -> None:
        """Write the topic's config, then its assignment (the controller elects its
        leaders); wait until every partition has one, up to `wait_seconds`."""
        topic_id = layout.random_kafka_uuid()
        try:
            await self.session.create(layout.topic_config_path(name), layout.encode_entity_config(dict(configs)), makepath=True)
        except NodeExistsError:
            await self.session.set(layout.topic_config_path(name), layout.encode_entity_config(dict(configs)))
        try:
            await self.session.create(
                layout.topic_path(name),
                layout.encode_topic_assignment(layout.TopicAssignment(topic_id, dict(assignment))),
                makepath=True,
            )
        except NodeExistsError:
            raise KafkaError(ErrorCode.topic_already_exists, f"Topic '{name}' already exists.") from None
        log.info("created topic %s with %d partitions in ZooKeeper", name, len(assignment))
        await self.wait_for_leaders(name, len(assignment), wait_seconds)

    def auto_create_topic(self, name: str) -> ErrorCode:
        """Metadata for an unknown topic with auto.create.topics.enable: the topic is
        created in ZooKeeper in the background, and the answer is LEADER_NOT_AVAILABLE
        until its leaders are elected, as Kafka answers."""
        from kwire.broker import RESERVED_TOPICS, topic_name_error

        config = self.broker.config
        if not config["auto.create.topics.enable"] or name in RESERVED_TOPICS:
            return ErrorCode.unknown_topic_or_partition
        if topic_name_error(name) is not None:
            return ErrorCode.invalid_topic_exception
        self.create_topic_soon(name, config["num.partitions"], config["default.replication.factor"], {})
        return ErrorCode.leader_not_available

    def create_topic_soon(
        self, name: str, num_partitions: int, replication_factor: int, configs: Mapping[str, str]
    ) -> None:
        """Create a topic in the background: an auto-created one, or a coordinator's on
        first use (Kafka creates those on FindCoordinator), asked for from synchronous paths."""
        if name in self._creating or self._nursery is None:
            return
        self._creating.add(name)
        self._nursery.start_soon(self._create_topic_soon, name, num_partitions, replication_factor, dict(configs))

    async def _create_topic_soon(
        self, name: str, num_partitions: int, replication_factor: int, configs: dict[str, str]
    ) -> None:
        try:
            live = len(self.mirror.brokers)
            if replication_factor > live:
                # Kafka refuses until enough brokers are up (COORDINATOR_NOT_AVAILABLE).
                log.info("cannot create %s with replication factor %d: %d broker(s) are up",
                            name, replication_factor, live)
                return
            await self.create_topic(name, self.assign(num_partitions, replication_factor), configs, wait_seconds=0)
        except KafkaError as e:
            if e.error_code is not ErrorCode.topic_already_exists:
                log.warning("cannot create %s: %s", name, e)
        except (ZkTimeout, ZookeeperError) as e:
            log.warning("cannot create %s: %r", name, e)
        finally:
            self._creating.discard(name)

    async def wait_for_leaders(self, name: str, partitions: int, wait_seconds: float) -> bool:
        with trio.move_on_after(wait_seconds):
            while True:
                topic = self.broker.metadata_image.topic(name)
                if topic is not None and len(topic.partitions) >= partitions and all(
                    p.leader_id >= 0 for p in topic.partitions
                ):
                    return True
                await trio.sleep(0.02)
        return False

    async def delete_topic(self, name: str, *, wait_seconds: float) -> None:
        try:
            await self.session.create(layout.delete_topic_path(name), b"", makepath=True)
        except NodeExistsError:
            pass
        with trio.move_on_after(wait_seconds):
            while self.broker.metadata_image.topic(name) is not None:
                await trio.sleep(0.02)

    async def add_partitions(self, name: str, new_assignment: Mapping[int, tuple[int, ...]], *, wait_seconds: float) -> None:
        path = layout.topic_path(name)
        data, stat = await self.session.get(path)
        current = layout.decode_topic_assignment(data, name)
        partitions = dict(current.partitions)
        partitions.update(new_assignment)
        updated = layout.TopicAssignment(current.topic_id, partitions, current.adding_replicas, current.removing_replicas)
        try:
            await self.session.set(path, layout.encode_topic_assignment(updated), stat.version)
        except BadVersionError:
            raise KafkaError(ErrorCode.reassignment_in_progress, f"topic {name} changed meanwhile; retry") from None
        await self.wait_for_leaders(name, len(partitions), wait_seconds)

    async def set_topic_configs(self, name: str, configs: Mapping[str, str]) -> None:
        await self.session.set(layout.topic_config_path(name), layout.encode_entity_config(dict(configs)))
        await self.session.create(
            layout.config_change_path(), layout.encode_config_change_notification(f"topics/{name}"),
            sequence=True, makepath=True,
        )

    def assign(self, partitions: int, replication_factor: int, start_partition: int = 0) -> dict[int, tuple[int, ...]]:
        """Replicas for new partitions over the live brokers (rack-aware when every
        broker has a rack)."""
        racks = {b: r.rack for b, r in sorted(self.mirror.brokers.items())}
        try:
            assignment = layout.assign_replicas(
                racks, partitions, replication_factor, start_partition_id=start_partition
            )
        except layout.InvalidReplicationFactor as e:
            raise KafkaError(ErrorCode.invalid_replication_factor, str(e)) from None
        except ValueError as e:
            raise KafkaError(ErrorCode.invalid_replica_assignment, str(e)) from None
        return assignment

    # ---- transaction markers to other brokers -----------------------------------------------

    async def send_txn_marker(
        self,
        tp: tuple[str, int],
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
        timeout_ms: int = 30_000,
    ) -> ErrorCode:
        """WriteTxnMarkers to the partition's leader (Kafka's TransactionMarkerChannelManager);
        the coordinator retries what comes back retriable."""
        from kio.schema.write_txn_markers.v1 import request as markers
        from kio.static.primitive import i16, i32

        from kwire.cluster.broker_client import BrokerConnectionError

        topic = self.broker.metadata_image.topic(tp[0])
        if topic is None or topic.partition(tp[1]) is None:
            return ErrorCode.unknown_topic_or_partition
        leader = topic.partition(tp[1]).leader_id  # type: ignore[union-attr]
        if leader < 0:
            return ErrorCode.leader_not_available
        request = markers.WriteTxnMarkersRequest(
            markers=(
                markers.WritableTxnMarker(
                    producer_id=producer_id,  # type: ignore[arg-type]
                    producer_epoch=i16(producer_epoch),
                    transaction_result=commit,
                    topics=(markers.WritableTxnMarkerTopic(name=tp[0], partition_indexes=(i32(tp[1]),)),),  # type: ignore[arg-type]
                    coordinator_epoch=i32(coordinator_epoch),
                ),
            )
        )
        try:
            response = await self.pool.request(leader, WRITE_TXN_MARKERS_KEY, 1, request, timeout=timeout_ms / 1000)
        except BrokerConnectionError as e:
            log.debug("WriteTxnMarkers to broker %d failed: %s", leader, e)
            return ErrorCode.not_leader_or_follower  # retriable: the coordinator tries again
        for marker in response.markers:
            for topic_result in marker.topics:
                for partition in topic_result.partitions:
                    if topic_result.name == tp[0] and partition.partition_index == tp[1]:
                        return partition.error_code
        return ErrorCode.unknown_server_error

    # ---- producer ids: blocks from /latest_producer_id_block ---------------------------------

    def next_producer_id(self) -> int:
        start, end = self._producer_ids
        if start >= end and self._next_block is not None:
            (start, end), self._next_block = self._next_block, None
        if start >= end:
            self._schedule_refill()
            raise KafkaError(ErrorCode.coordinator_load_in_progress, "fetching a producer id block")
        self._producer_ids = (start + 1, end)
        if end - start < layout.PRODUCER_ID_BLOCK_SIZE // 10 and self._next_block is None:
            self._schedule_refill()
        return start

    def _schedule_refill(self) -> None:
        if not self._producer_id_refill and self._nursery is not None:
            self._producer_id_refill = True
            self._nursery.start_soon(self._refill_producer_ids)

    async def _refill_producer_ids(self) -> None:
        """Kafka's ZkProducerIdManager: claim the next block with a conditional write."""
        try:
            while True:
                data, stat = await self.session.get_or_none(layout.PRODUCER_ID_BLOCK_PATH)
                if data is None or not data:
                    start = 0
                else:
                    start = layout.decode_producer_id_block(data).next_block_first_id
                block = layout.ProducerIdsBlock(self.broker_id, start, layout.PRODUCER_ID_BLOCK_SIZE)
                try:
                    if stat is None:
                        await self.session.create(layout.PRODUCER_ID_BLOCK_PATH, layout.encode_producer_id_block(block))
                    else:
                        await self.session.set(layout.PRODUCER_ID_BLOCK_PATH, layout.encode_producer_id_block(block), stat.version)
                except (BadVersionError, NodeExistsError, NoNodeError):
                    continue  # another broker claimed it; take the next
                ids = (block.first_producer_id, block.next_block_first_id)
                if self._producer_ids[0] >= self._producer_ids[1]:
                    self._producer_ids = ids
                else:
                    self._next_block = ids
                return
        except (ZkTimeout, ZookeeperError) as e:
            log.warning("cannot claim a producer id block: %r", e)
        finally:
            self._producer_id_refill = False

    # ---- controlled shutdown ---------------------------------------------------------------

    async def controlled_shutdown(self, timeout: float) -> None:
        """Kafka's controlled shutdown: ask the controller to move leadership away,
        wait until none is left here (or the timeout), then leave."""
        from kwire.cluster.controlled_shutdown import request_controlled_shutdown

        with trio.move_on_after(timeout):
            await request_controlled_shutdown(self, timeout)
        self.replicas.stop_following()

    def leaders_here(self) -> Iterable[tuple[str, int]]:
        for partition in self.broker.local_replicas():
            replication = partition.replication
            if replication is not None and replication.is_leader:
                yield partition.topic.name, partition.index

