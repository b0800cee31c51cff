"""The broker's state: topics, their partitions and logs, and what persists them.

Synchronous methods mutate state; the trio server calls them between awaits, so
no locks are needed. Waiting (long-poll fetch) goes through each partition's
waiters, which an append wakes.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from kio.schema.errors import ErrorCode

from kwire.clock import now_ms
from kwire.cluster.metadata_image import (
    MetadataImage,
    TopicImage,
    local_broker_registration,
    local_metadata_image,
    local_topic_image,
)
from kwire.config import TOPIC_CONFIGS, BrokerConfig, ConfigError, validate_topic_configs
from kwire.coordinator.producer_state import CompletedTxn, ProducerStateManager
from kwire.dynamic_config import (
    CLEANER_KEYS,
    LOG_CONFIG_KEYS,
    BrokerConfigStore,
    LocalBrokerConfigs,
    layers_of,
)
from kwire.entity_configs import DEFAULT_ENTITY, EntityConfigStore, LocalEntityConfigs
from kwire.errors import KafkaError
from kwire.log.background import (
    flush_in_thread,
    remove_dirs_in_thread,
    run_flush_jobs,
    unlink_files,
)
from kwire.log.checkpoint import fsync_dir, write_all_atomically, write_atomically
from kwire.log.cleaner_manager import LogCleaner
from kwire.log.log import DELETE_DIR_SUFFIX, LogConfig, PartitionLog, delete_dir_path
from kwire.log.txn_index import AbortedTxn, AbortedTxnIndex, marker_type, read_marker_type
from kwire.protocol.records import BatchHeader, set_log_append_time
from kwire.stats import BrokerStats

if TYPE_CHECKING:
    from kwire.cluster.node import ClusterNode
    from kwire.cluster.replication import Replication
    from kwire.faults import FaultInjector
    from kwire.quotas.manager import ClientQuotaManager
    from kwire.security.acl import AclStore
    from kwire.security.authorizer import AclAuthorizer

log = logging.getLogger(__name__)

METADATA_FILE = "kwire-metadata.json"
CLEAN_SHUTDOWN_FILE = ".kwire_clean_shutdown"
PRODUCER_SNAPSHOT_FILE = "producer-state.snapshot"
_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")
MAX_TOPIC_LENGTH = 249
# Kafka's Topic.INTERNAL_TOPICS, and the KRaft metadata log: names the broker
# keeps for itself, which clients may neither create nor write.
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state", "__share_group_state"})
CLUSTER_METADATA_TOPIC = "__cluster_metadata"
RESERVED_TOPICS = INTERNAL_TOPICS | {CLUSTER_METADATA_TOPIC}
# Producer ids are handed out in blocks, and the block's end persisted, so that
# ids stay unique across restarts without a write per InitProducerId.
PRODUCER_ID_BLOCK = 1000


def topic_name_error(name: str) -> str | None:
    """Kafka's Topic.validate message for an illegal topic name, or None."""
    if not name:
        return "Topic name is illegal, it can't be empty"
    if name in (".", ".."):
        return 'Topic name cannot be "." or ".."'
    if len(name) > MAX_TOPIC_LENGTH:
        return f"Topic name is illegal, it can't be longer than {MAX_TOPIC_LENGTH} characters, topic name: {name}"
    if not _LEGAL_TOPIC.match(name):
        return f"Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
    return None


def validate_topic_name(name: str) -> None:
    message = topic_name_error(name)
    if message is not None:
        raise KafkaError(ErrorCode.invalid_topic_exception, message)


# Kafka's controller refuses one request that would create more than 10,000 metadata
# records (MAX_RECORDS_PER_USER_OP); here, partitions. A request for 2^31 partitions
# would otherwise open them in one synchronous loop and fill the disk.
MAX_PARTITIONS_PER_REQUEST = 10_000


def check_partitions_per_request(total: int) -> None:
    if total > MAX_PARTITIONS_PER_REQUEST:
        raise KafkaError(ErrorCode.policy_violation, "Unable to perform excessively large batch operation.")


# Background passes and bulk topic changes give the event loop back at least this often.
_LOOP_SLICE_S = 0.02
# Logs whose flush jobs go to a worker thread at once (each job holds a few fds).
_FLUSH_JOBS_PER_THREAD_CALL = 256


def check_replication_factor(replication_factor: int) -> None:
    """One broker can hold one replica; Kafka's controller message for more."""
    if replication_factor > 1:
        raise KafkaError(
            ErrorCode.invalid_replication_factor,
            f"Unable to replicate the partition {replication_factor} time(s): The target replication factor "
            f"of {replication_factor} cannot be reached because only 1 broker(s) are registered.",
        )


@dataclass
class Partition:
    topic: Topic
    index: int
    log: PartitionLog
    producers: ProducerStateManager = field(default_factory=ProducerStateManager)
    # Events of fetches waiting for data here; an append sets and clears them.
    waiters: set[trio.Event] = field(default_factory=set)
    # The log's aborted transactions (Kafka's .txnindex), kept by every append path.
    txn_index: AbortedTxnIndex = field(init=False)
    # In a cluster: this replica's role, leader epoch and ISR (kwire.cluster.replication);
    # None on a single broker, which leads every partition alone.
    replication: Replication | None = None

    def __post_init__(self) -> None:
        self.txn_index = AbortedTxnIndex.open(self.log.directory, self.log.log_start_offset, self.log.log_end_offset)

    @property
    def high_watermark(self) -> int:
        return self.log.high_watermark

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self.log.log_end_offset

    @property
    def leader_epoch(self) -> int:
        """The partition's current leader epoch: in a cluster ZooKeeper's, which a
        follower's log only learns from the batches it fetches."""
        return self.replication.leader_epoch if self.replication is not None else self.log.leader_epoch

    @property
    def last_stable_offset(self) -> int:
        first_unstable = self.producers.first_unstable_offset()
        hw = self.high_watermark
        return hw if first_unstable is None else min(first_unstable, hw)

    def append(self, buf: bytearray | memoryview, headers: list[BatchHeader], timestamp_ms: int) -> tuple[int, int]:
        """Append validated batches as leader. Returns (base offset, log append time or -1).

        Raises KafkaError for producer-state errors; a duplicate of a recent batch
        is not appended again, and its original offset is answered.
        """
        for header in headers:
            duplicate = self.producers.check(header)
            if duplicate is not None:
                if len(headers) != 1:
                    raise KafkaError(ErrorCode.invalid_record, "duplicate batch among several")
                return duplicate, -1
        log_append_time = -1
        if self.topic.configs.get("message.timestamp.type") == "LogAppendTime" or (
            "message.timestamp.type" not in self.topic.configs and self.topic.broker_config["log.message.timestamp.type"] == "LogAppendTime"
        ):
            log_append_time = timestamp_ms
            for header in headers:
                set_log_append_time(buf, header, timestamp_ms)
        base_offset = self.log.append(buf, headers, now_ms=timestamp_ms)
        self._update_producers(buf, headers)
        if self.replication is None:
            # One broker: every appended batch is committed at once.
            self.log.high_watermark = self.log.log_end_offset
        else:
            self.advance_high_watermark()
        self.wake_waiters()
        return base_offset, log_append_time

    def append_as_follower(self, buf: bytes | bytearray, headers: list[BatchHeader], now_ms: int) -> int:
        """Append batches fetched from the leader, with their offsets (the replica
        fetcher's path). Returns the first batch's base offset; the high watermark is
        the fetcher's to move."""
        base_offset = self.log.append_as_follower(buf, headers, now_ms=now_ms)
        self._update_producers(buf, headers)
        self.wake_waiters()
        return base_offset

    def _update_producers(self, buf: bytes | bytearray | memoryview, headers: list[BatchHeader]) -> None:
        for header in headers:
            control_type = marker_type(memoryview(buf)[header.position :], header) if header.is_control else None
            completed = self.producers.update(header, control_type)
            if completed is not None and completed.is_aborted:
                self._index_abort(completed)

    def _index_abort(self, completed: CompletedTxn) -> None:
        self.txn_index.append(
            AbortedTxn(
                completed.producer_id,
                completed.first_offset,
                completed.last_offset,
                self.producers.last_stable_offset(completed),
            )
        )

    def rebuild_producer_state(self) -> None:
        """Replay the log's batch headers into the producer state (after an unclean
        stop, or a truncation). ABORT markers past the index's last entry, which a
        crash may have kept out of it, are read and indexed again."""
        self.producers.truncate()
        indexed = self.txn_index.last_offset
        for header in self.log.batch_headers(self.log.log_start_offset):
            control_type = None
            if header.is_control and header.base_offset > indexed:
                control_type = read_marker_type(self.log, header)
            completed = self.producers.update(header, control_type)
            if completed is not None and completed.is_aborted:
                self._index_abort(completed)

    def truncate_to(self, offset: int) -> None:
        """Drop the log at and past `offset` (a follower diverging from its leader),
        with the aborted transactions there; the producer state is rebuilt from what
        remains."""
        if offset >= self.log.log_end_offset:
            return
        self.log.truncate_to(offset)
        self.txn_index.truncate_to(self.log.log_end_offset)
        self.txn_index.trim_before(self.log.log_start_offset)
        self.rebuild_producer_state()
        self.wake_waiters()

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: the log start offset moves up (PartitionLog.delete_records_before),
        and aborted transactions wholly below it leave the index. Returns the log start offset."""
        log_start_offset = self.log.delete_records_before(offset)
        self.txn_index.trim_before(log_start_offset)
        return log_start_offset

    def apply_retention(self, now_ms: int) -> int:
        """Retention pass of the log (PartitionLog.apply_retention), then the index
        trimmed to the new log start offset. Returns the segments deleted."""
        deleted = self.log.apply_retention(now_ms)
        self.txn_index.trim_before(self.log.log_start_offset)
        return deleted

    def aborted_transactions(self, start: int, end: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of the aborted transactions with records in
        [start, end): what a read_committed fetch answers with."""
        return self.txn_index.overlapping(start, end)

    # ---- replication (a cluster) ---------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.replication is None or self.replication.is_leader

    def check_leader(self, acks: int = 1) -> ErrorCode:
        """Kafka's appendRecordsToLeader checks: this replica leads, and for acks=all
        the ISR is at least min.insync.replicas (else nothing is appended)."""
        replication = self.replication
        if replication is None:
            return ErrorCode.none
        if not replication.is_leader:
            return ErrorCode.not_leader_or_follower
        if acks == -1 and len(replication.isr) < self.topic.config("min.insync.replicas"):
            return ErrorCode.not_enough_replicas
        return ErrorCode.none

    def advance_high_watermark(self) -> None:
        """As leader: the high watermark moves to the lowest log end offset in the ISR."""
        replication = self.replication
        if replication is None or not replication.is_leader:
            return
        hw = replication.high_watermark(self.log.log_end_offset)
        if hw > self.log.high_watermark:
            self.log.high_watermark = hw
            self.wake_waiters()

    async def wait_for_high_watermark(self, end_offset: int, timeout_s: float) -> ErrorCode:
        """An acks=all answer: wait until the high watermark reaches `end_offset` (the
        whole ISR has the batch), as Kafka's DelayedProduce. NOT_ENOUGH_REPLICAS_AFTER_APPEND
        if the ISR shrank below min.insync.replicas meanwhile, NOT_LEADER_OR_FOLLOWER if
        leadership moved, REQUEST_TIMED_OUT after the request's timeout."""
        start = self.replication
        if start is None:
            return ErrorCode.none
        with trio.move_on_after(timeout_s):
            while True:
                replication = self.replication
                if replication is None or not replication.is_leader or replication.leader_since != start.leader_since:
                    return ErrorCode.not_leader_or_follower
                if self.log.high_watermark >= end_offset:
                    if len(replication.isr) < self.topic.config("min.insync.replicas"):
                        return ErrorCode.not_enough_replicas_after_append
                    return ErrorCode.none
                if self.log.log_end_offset < end_offset:
                    return ErrorCode.not_leader_or_follower  # truncated: it is gone
                woken = trio.Event()
                self.waiters.add(woken)
                try:
                    await woken.wait()
                finally:
                    self.waiters.discard(woken)
        return ErrorCode.request_timed_out

    def truncate_fully_and_start_at(self, offset: int) -> None:
        """A follower behind its leader's log start: empty the log, start at `offset`."""
        self.log.truncate_fully_and_start_at(offset)
        self.txn_index.truncate_to(offset)
        self.txn_index.trim_before(offset)
        self.producers.truncate()
        self.wake_waiters()

    def wake_waiters(self) -> None:
        if self.waiters:
            for event in self.waiters:
                event.set()
            self.waiters.clear()


@dataclass
class Topic:
    name: str
    topic_id: uuid.UUID
    configs: dict[str, Any]
    broker_config: BrokerConfig
    partitions: list[Partition] = field(default_factory=list)
    is_internal: bool = False

    def config(self, name: str) -> Any:
        if name in self.configs:
            return self.configs[name]
        return self.broker_config.topic_default(name)

    def log_config(self) -> LogConfig:
        return LogConfig(
            segment_bytes=self.config("segment.bytes"),
            segment_ms=self.config("segment.ms"),
            retention_ms=self.config("retention.ms"),
            retention_bytes=self.config("retention.bytes"),
            index_interval_bytes=self.config("index.interval.bytes"),
            segment_index_bytes=self.config("segment.index.bytes"),
            flush_messages=self.config("flush.messages"),
            flush_ms=self.config("flush.ms"),
            file_delete_delay_ms=self.config("file.delete.delay.ms"),
            message_timestamp_type=self.config("message.timestamp.type"),
            cleanup_policy=self.config("cleanup.policy"),
            delete_retention_ms=self.config("delete.retention.ms"),
            min_cleanable_dirty_ratio=self.config("min.cleanable.dirty.ratio"),
            min_compaction_lag_ms=self.config("min.compaction.lag.ms"),
            max_compaction_lag_ms=self.config("max.compaction.lag.ms"),
        )


class Broker:
    """One broker's topics and partitions on local disk."""

    def __init__(self, config: BrokerConfig) -> None:
        config.validate()
        self.config = config
        self.broker_id: int = config.broker_id
        self.log_dir: Path = config.log_dirs[0]
        self.topics: dict[str, Topic] = {}
        self.topics_by_id: dict[uuid.UUID, Topic] = {}
        self.cluster_id = ""
        self._next_producer_id = 0
        self._producer_id_block_end = 0
        self.started_ms = now_ms()
        # Counters for /metrics (kwire.metrics exports them at scrape time).
        self.stats = BrokerStats()
        # Group coordinator and other services attach themselves here.
        self.services: dict[str, Any] = {}
        # Listener name -> port actually bound (a configured port 0 picks one).
        self.bound_ports: dict[str, int] = {}
        # The control plane's view (kwire.cluster.metadata_image), replaced whole after
        # every change to what Metadata answers, never mutated; the logs stay here.
        self.metadata_image: MetadataImage = local_metadata_image(self)
        # Cluster mode (zookeeper.connect): the cluster node (kwire.cluster.node) decides
        # which replicas live here and their roles; without it, this broker is the cluster.
        self.in_cluster = bool(config["zookeeper.connect"])
        self.cluster: ClusterNode | None = None
        self.has_data_of_cluster = False
        self._clean_start = True
        # Security and quota state (attach_security): configs of users and client ids
        # (SCRAM credentials, quotas), ACLs, and what enforces them. In a cluster the
        # cluster node sets the stores (ZooKeeper's) before any request is served.
        self.entity_configs: EntityConfigStore = LocalEntityConfigs(self.log_dir)
        # Dynamic broker configs (kwire.dynamic_config): a file here, ZooKeeper's in a
        # cluster (the cluster node swaps it in); applied at each change, and the
        # parts that read a config once are told (reconfigure, reconfigurables).
        self.broker_configs: BrokerConfigStore = LocalBrokerConfigs(self.log_dir)
        self.broker_configs.subscribe(self.dynamic_configs_changed)
        self.reconfigurables: list[Callable[[set[str]], None]] = []
        self.acl_store: AclStore | None = None
        self.authorizer: AclAuthorizer | None = None
        self.quotas: ClientQuotaManager | None = None
        # The log cleaner (run_background starts it; None if log.cleaner.enable is off).
        self.log_cleaner: LogCleaner | None = None
        # Topics whose partitions a worker thread is creating or renaming away.
        self._in_flight: dict[str, str] = {}
        # Fault injection (kwire.faults, driven over /admin/faults): None unless
        # http.admin.enable, so request dispatch pays one attribute check.
        self.faults: FaultInjector | None = None
        if config["http.admin.enable"]:
            from kwire.faults import FaultInjector

            self.faults = FaultInjector()

    def bound_port(self, listener_name: str) -> int:
        return self.bound_ports.get(listener_name, 0)

    def listener_bound(self, listener_name: str, port: int) -> None:
        """A listener is up on this port: re-register this broker, since a listener
        configured on port 0 advertises the port it got."""
        self.bound_ports[listener_name] = port
        self.metadata_image = self.metadata_image.with_broker(
            local_broker_registration(self.config, self.broker_id, self.bound_ports)
        )

    def _publish_topic(self, topic: Topic) -> None:
        # A new image sharing every other topic's with the old one: O(topics), not O(partitions).
        self.metadata_image = self.metadata_image.with_topic(local_topic_image(topic, self.broker_id))

    # ---- start-up and shut-down ------------------------------------------------

    # Partition directories the clean-shutdown marker vouches for (see close()); None:
    # no list (no open() yet, or a marker from before lists), so each log's own
    # clean-shutdown record decides, and PartitionLog.open clears it.
    _clean_logs: set[str] | None = None

    def open(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not self.in_cluster:
            self.apply_dynamic_configs()  # before the logs open with their LogConfigs
        clean_marker = self.log_dir / CLEAN_SHUTDOWN_FILE
        self._clean_logs = _read_clean_marker(clean_marker)
        clean = self._clean_logs is not None or clean_marker.exists()
        meta = self._read_metadata()
        self.has_data_of_cluster = bool(meta.get("cluster_id"))
        self.cluster_id = meta.get("cluster_id") or self.config["cluster.id"] or _new_cluster_id()
        self._next_producer_id = self._producer_id_block_end = meta.get("producer_id_block_end", 0)
        self._clean_start = clean
        if self.in_cluster:
            from kwire.cluster.node import ClusterNode

            # Replicas open when ZooKeeper says they are ours (ClusterNode), not from the file;
            # the list read above says which of them the clean shutdown closed.
            self.cluster = ClusterNode(self)
            self.metadata_image = self.metadata_image.with_cluster_id(self.cluster_id)
            _remove_clean_marker(clean_marker)
            self._save_metadata()
            self.attach_security()
            log.info("opened %s after %s; joining the cluster at %s", self.log_dir,
                     "a clean shutdown" if clean else "an unclean shutdown" if meta else "nothing: a new log dir",
                     self.config["zookeeper.connect"])
            return
        topics = meta.get("topics", {})
        progress = _LoadProgress(self.log_dir, sum(info["partitions"] for info in topics.values()))
        for name, info in topics.items():
            topic = Topic(
                name=name,
                topic_id=uuid.UUID(info["id"]),
                configs=validate_topic_configs(info.get("configs", {})),
                broker_config=self.config,
                is_internal=info.get("internal", False),
            )
            self._register(topic)
            for index in range(info["partitions"]):
                topic.partitions.append(self._open_partition(topic, index, clean))
                progress.step()
        self.metadata_image = local_metadata_image(self)
        # From here on, a crash is an unclean stop: the marker goes (one unlink, one
        # directory fsync), and with it the trust in every log's clean-shutdown record.
        _remove_clean_marker(clean_marker)
        self._save_metadata()
        self.attach_security()
        after = "a clean shutdown" if clean else "an unclean shutdown, logs recovered" if meta else "nothing: a new log dir"
        progress.done(after)
        log.info("opened %d topics in %s after %s", len(self.topics), self.log_dir, after)

    def attach_security(self) -> None:
        """The ACL store (a file here; in a cluster the cluster node set ZooKeeper's),
        the authorizer when authorizer.class.name asks for one, and the quota manager."""
        from kwire.quotas.manager import ClientQuotaManager

        if self.acl_store is None:
            from kwire.security.acl_store import LocalAclStore

            self.acl_store = LocalAclStore(self.log_dir)
        if self.config["authorizer.class.name"]:
            from kwire.security.authorizer import AclAuthorizer

            self.authorizer = AclAuthorizer(self.config, self.acl_store)
        self.quotas = ClientQuotaManager(self.config, self.entity_configs)

    def close(self) -> None:
        """Clean shutdown: every log closed (its clean-shutdown record written), the
        producer state of those with producers saved, then the log dir's marker,
        naming the partitions closed: the next start trusts those logs as they are."""
        closed: list[str] = []
        # Every log's files synced by one filesystem sync, and its small files written
        # together (checkpoint.write_all_atomically), before the marker vouches for them.
        deferred: list[tuple[Path, bytes]] = []
        for partition in self.all_partitions():
            partition.log.close(sync=False, deferred=deferred)
            if partition.producers.producers:
                deferred.append((
                    partition.log.directory / PRODUCER_SNAPSHOT_FILE,
                    partition.producers.to_snapshot(partition.log_end_offset),
                ))
            closed.append(partition.log.directory.name)
        write_all_atomically(deferred, self.log_dir)
        self._save_metadata()
        # Last, and atomically: without it (a crash before), no log is trusted.
        body = "".join(f"{name}\n" for name in closed)
        write_atomically(self.log_dir / CLEAN_SHUTDOWN_FILE, f"{_CLEAN_MARKER_HEADER}\n{body}".encode())

    def _open_partition(self, topic: Topic, index: int, clean: bool = True) -> Partition:
        """Open (create or load) a partition's log. `clean`: the caller's view of the
        last shutdown; the log is trusted only if the clean-shutdown marker also named
        it (once: a later open of the same directory in this run is not vouched for)."""
        name = f"{topic.name}-{index}"
        directory = self.log_dir / name
        if self.in_cluster:
            _claim_partition_dir(directory, topic.topic_id)
        clean_shutdown: bool | None
        if not (clean and self._clean_start):
            clean_shutdown = False
        elif self._clean_logs is None:
            clean_shutdown = None  # no list: the log's own record decides, and is cleared
        else:
            clean_shutdown = name in self._clean_logs
            self._clean_logs.discard(name)
        partition_log = PartitionLog.open(directory, topic.log_config(), clean_shutdown=clean_shutdown)
        # Rolled segments are fsynced off the event loop, then the recovery point moves.
        partition_log.roll_flusher = flush_in_thread
        if partition_log.leader_epoch < 0:
            # A new partition's first leader is epoch 0, as in Kafka.
            partition_log.leader_epoch = 0
        partition = Partition(topic, index, partition_log)
        if not partition_log.had_clean_shutdown and partition_log.config.compacts and len(partition.txn_index):
            # A crash between a cleaner's swap (markers removed) and the rewrite of the
            # aborted-transaction index: an abort shown without its marker would hide the
            # producer's later records from read_committed readers.
            partition.txn_index.remove_missing_markers(partition_log.has_control_batch_at)
        snapshot = directory / PRODUCER_SNAPSHOT_FILE
        end = partition_log.log_end_offset
        # After a clean stop the snapshot matches the log end, and keeps producers whose
        # batches are all deleted (DeleteRecords, retention), as Kafka's does; else replay.
        trusted = partition_log.had_clean_shutdown
        loaded = trusted and partition.producers.load_snapshot(snapshot, end)
        try:
            snapshot.unlink()
            had_snapshot = True
        except FileNotFoundError:
            had_snapshot = False
        # A clean shutdown saves a snapshot for every log with producers: none saved, none
        # to find (no replay of the whole log's headers at a clean start).
        if not loaded and not (trusted and not had_snapshot) and end > partition_log.log_start_offset:
            partition.rebuild_producer_state()
        if not self.in_cluster:
            # One broker: everything in the log was committed.
            partition_log.high_watermark = end
        return partition

    def _read_metadata(self) -> dict[str, Any]:
        path = self.log_dir / METADATA_FILE
        if not path.exists():
            return {}
        return json.loads(path.read_text(encoding="utf-8"))

    def set_cluster_id(self, cluster_id: str) -> None:
        """The cluster's id, from ZooKeeper's /cluster/id; kept in the metadata file."""
        if cluster_id != self.cluster_id:
            self.cluster_id = cluster_id
            self.metadata_image = self.metadata_image.with_cluster_id(cluster_id)
        self.has_data_of_cluster = True
        self._save_metadata()

    def _save_metadata(self) -> None:
        from kwire.config import format_config_value

        meta = {
            "version": 1,
            "cluster_id": self.cluster_id,
            "broker_id": self.broker_id,
            "producer_id_block_end": self._producer_id_block_end,
            "topics": {
                t.name: {
                    "id": str(t.topic_id),
                    "partitions": len(t.partitions),
                    "configs": {k: format_config_value(v) for k, v in t.configs.items()},
                    "internal": t.is_internal,
                }
                for t in self.topics.values()
            },
        }
        write_atomically(self.log_dir / METADATA_FILE, json.dumps(meta, indent=1).encode())

    def _register(self, topic: Topic) -> None:
        self.topics[topic.name] = topic
        self.topics_by_id[topic.topic_id] = topic

    # ---- topics ----------------------------------------------------------------

    def all_partitions(self) -> Iterator[Partition]:
        """The partitions with a replica on this broker."""
        for topic in self.topics.values():
            for partition in topic.partitions:
                if partition is not None:
                    yield partition

    local_replicas = all_partitions

    def partition(self, topic: str, index: int) -> Partition | None:
        """The replica of this partition on this broker, or None (no such partition, or
        in a cluster, none here)."""
        t = self.topics.get(topic)
        if t is None or not 0 <= index < len(t.partitions):
            return None
        return t.partitions[index]

    replica = partition

    # ---- replicas in a cluster (kwire.cluster.replica_manager decides) -------------------

    def open_replica(
        self, name: str, topic_id: uuid.UUID, index: int, num_partitions: int, configs: dict[str, str]
    ) -> Partition:
        """Open (creating or recovering) this broker's replica of a partition."""
        topic = self.topics.get(name)
        if topic is None or topic.topic_id != topic_id:
            try:
                parsed = validate_topic_configs(configs)
            except ConfigError as e:
                log.warning("topic %s: ignoring invalid configs from ZooKeeper: %s", name, e)
                parsed = {}
            topic = Topic(name, topic_id, parsed, self.config, is_internal=name in INTERNAL_TOPICS)
            self._register(topic)
        while len(topic.partitions) < num_partitions:
            topic.partitions.append(None)  # type: ignore[arg-type]
        partition = self._open_partition(topic, index, self._clean_start)
        topic.partitions[index] = partition
        self._save_metadata()
        return partition

    def delete_replica(self, partition: Partition) -> None:
        """StopReplica with deletion: the log goes, waiting fetches wake."""
        topic = partition.topic
        # Renamed `-delete` now (its name free for a new replica), removed in a worker thread.
        remove_dirs_in_thread([partition.log.rename_for_delete()])
        partition.wake_waiters()
        if 0 <= partition.index < len(topic.partitions) and topic.partitions[partition.index] is partition:
            topic.partitions[partition.index] = None  # type: ignore[call-overload]
        if all(p is None for p in topic.partitions) and self.topics.get(topic.name) is topic:
            del self.topics[topic.name]
            self.topics_by_id.pop(topic.topic_id, None)
        self._save_metadata()
        log.info("deleted replica %s-%d", topic.name, partition.index)

    def delete_stray_logs(self, is_stray: Callable[[str, int], bool]) -> int:
        """Delete partition directories no open replica owns and `is_stray(topic,
        partition)` confirms (in a cluster: topics deleted, or replicas moved away,
        while this broker was down)."""
        from kwire.log.log import parse_partition_dir

        owned = {p.log.directory.name for p in self.all_partitions()}
        deleted = 0
        for path in sorted(self.log_dir.iterdir()):
            if not path.is_dir() or path.name in owned or path.name.endswith((".delete", "-delete")):
                continue
            try:
                topic, index = parse_partition_dir(path.name)
            except ValueError:
                continue
            if not is_stray(topic, index):
                continue
            import shutil

            log.info("deleting stray replica %s: not assigned to this broker", path.name)
            shutil.rmtree(path, ignore_errors=True)
            deleted += 1
        return deleted

    def dynamic_configs_changed(self, entity: str) -> None:
        if entity in (DEFAULT_ENTITY, str(self.broker_id)):
            self.apply_dynamic_configs()

    def apply_dynamic_configs(self) -> None:
        """The store's dynamic configs become the broker's, without a restart."""
        default, own = layers_of(self.broker_configs, self.broker_id)
        changed = self.config.update_dynamic(default, own)
        if not changed:
            return
        log.info("dynamic broker configs changed: %s", ", ".join(sorted(changed)))
        if changed & LOG_CONFIG_KEYS:
            # Kafka's DynamicLogConfig: every log without an override takes the new default.
            for topic in self.topics.values():
                log_config = topic.log_config()
                for partition in topic.partitions:
                    if partition is not None:
                        partition.log.config = log_config
        if changed & CLEANER_KEYS and self.log_cleaner is not None:
            self.log_cleaner.reconfigure(self.config)
        for reconfigure in list(self.reconfigurables):
            try:
                reconfigure(changed)
            except Exception:
                log.exception("applying dynamic broker configs failed")

    def apply_topic_configs(self, topic: Topic, configs: dict[str, str]) -> None:
        """A topic's overrides as ZooKeeper holds them (/config/topics/<topic>)."""
        try:
            parsed = validate_topic_configs(configs)
        except ConfigError as e:
            log.warning("topic %s: ignoring invalid configs from ZooKeeper: %s", topic.name, e)
            return
        if parsed == topic.configs:
            return
        topic.configs = parsed
        log_config = topic.log_config()
        for partition in topic.partitions:
            if partition is not None:
                partition.log.config = log_config

    def create_topic(
        self,
        name: str,
        num_partitions: int = -1,
        replication_factor: int = -1,
        configs: dict[str, str | None] | None = None,
        *,
        validate_only: bool = False,
        internal: bool = False,
    ) -> Topic | None:
        """Create a topic, Kafka's checks and error codes included; its partitions are
        opened here and now (create_topic_async opens them in a worker thread)."""
        new = self._new_topic(name, num_partitions, replication_factor, configs, validate_only=validate_only, internal=internal)
        if new is None:
            return None
        topic, count = new
        return self._install_topic(topic, [self._open_partition(topic, index) for index in range(count)])

    async def create_topic_async(
        self,
        name: str,
        num_partitions: int = -1,
        replication_factor: int = -1,
        configs: dict[str, str | None] | None = None,
        *,
        validate_only: bool = False,
        internal: bool = False,
    ) -> Topic | None:
        """create_topic, with the partitions' folders and files made in a worker thread
        (as Kafka's log manager, not its request threads, creates logs); the topic is
        registered on the event loop once they all are. Meanwhile the name is taken:
        another creation of it answers TOPIC_ALREADY_EXISTS."""
        new = self._new_topic(name, num_partitions, replication_factor, configs, validate_only=validate_only, internal=internal)
        if new is None:
            return None
        topic, count = new
        in_flight = self._topics_in_flight()
        in_flight[name] = "creating"
        try:
            partitions, image = await trio.to_thread.run_sync(self._open_new_partitions, topic, 0, count)
        finally:
            del in_flight[name]
        # No checkpoint from here on: the topic appears whole, even if cancelled meanwhile.
        return self._install_topic(topic, partitions, image)

    def _topics_in_flight(self) -> dict[str, str]:
        """Topics whose partitions a worker thread is creating or renaming away, by
        name: "creating", "growing" or "deleting"."""
        return self._in_flight

    def _check_not_in_flight(self, name: str) -> None:
        """A topic being created or deleted in a worker thread is taken, as Kafka's
        controller answers for a topic being created, or marked for deletion."""
        state = self._topics_in_flight().get(name)
        if state == "deleting":
            raise KafkaError(ErrorCode.topic_already_exists, f'Topic "{name}" is marked for deletion.')
        if state == "creating":
            raise KafkaError(ErrorCode.topic_already_exists, f"Topic '{name}' already exists.")
        if "." in name or "_" in name:
            unified = name.replace(".", "_")
            for other, state in self._topics_in_flight().items():
                if state == "creating" and other != name and other.replace(".", "_") == unified:
                    raise KafkaError(
                        ErrorCode.invalid_topic_exception, f"Topic '{name}' collides with existing topic: {other}"
                    )

    def _open_new_partitions(self, topic: Topic, start: int, stop: int) -> tuple[list[Partition], TopicImage]:
        """Open partitions [start, stop) of a topic, which no other task sees yet (in a
        worker thread: folders, files, state), and the topic's metadata image with them
        (for 10,000 partitions a fifth of a second of work, not for the event loop). If
        one fails, those opened are removed again."""
        partitions: list[Partition] = []
        try:
            for index in range(start, stop):
                partitions.append(self._open_partition(topic, index))
        except BaseException:
            for partition in partitions:
                partition.log.delete()
            raise
        grown = copy.copy(topic)
        grown.partitions = topic.partitions + partitions
        return partitions, local_topic_image(grown, self.broker_id)

    def _install_topic(self, topic: Topic, partitions: list[Partition], image: TopicImage | None = None) -> Topic:
        topic.partitions.extend(partitions)
        self._register(topic)
        if image is None:
            self._publish_topic(topic)
        else:
            self.metadata_image = self.metadata_image.with_topic(image)
        self._save_metadata()
        log.info("created topic %s with %d partitions", topic.name, len(partitions))
        return topic

    def _new_topic(
        self,
        name: str,
        num_partitions: int,
        replication_factor: int,
        configs: dict[str, str | None] | None,
        *,
        validate_only: bool,
        internal: bool,
    ) -> tuple[Topic, int] | None:
        """A new topic's checks (Kafka's errors); the Topic, not registered, and its
        partition count, or None if `validate_only`."""
        self.check_new_topic_name(name)
        self._check_not_in_flight(name)
        if name in RESERVED_TOPICS and not internal:
            # Only the broker's own coordinators make these, with their own settings.
            raise KafkaError(ErrorCode.invalid_request, f"Creation of internal topic {name} is prohibited.")
        if num_partitions == -1:
            num_partitions = self.config["num.partitions"]
        if num_partitions <= 0:
            raise KafkaError(ErrorCode.invalid_partitions, "Number of partitions must be larger than 0.")
        if replication_factor == -1:
            replication_factor = self.config["default.replication.factor"]
        if replication_factor <= 0:
            raise KafkaError(ErrorCode.invalid_replication_factor, "Replication factor must be larger than 0.")
        if not self.in_cluster:
            check_replication_factor(replication_factor)
        try:
            parsed = validate_topic_configs(configs or {})
        except ConfigError as e:
            raise KafkaError(ErrorCode.invalid_config, str(e)) from None
        if validate_only:
            return None
        return Topic(name, uuid.uuid4(), parsed, self.config, is_internal=internal), num_partitions

    def check_new_topic_name(self, name: str) -> None:
        validate_topic_name(name)
        # '.' and '_' collide in metric names, so Kafka refuses a name that differs
        # from an existing one only by them.
        # The cluster's topics (the image), not only those with a replica here.
        topics = self.metadata_image.topics.by_name
        if "." in name or "_" in name:
            unified = name.replace(".", "_")
            for existing in topics:
                if existing != name and existing.replace(".", "_") == unified:
                    raise KafkaError(
                        ErrorCode.invalid_topic_exception,
                        f"Topic '{name}' collides with existing topic: {existing}",
                    )
        if name in topics or name in self.topics:
            raise KafkaError(ErrorCode.topic_already_exists, f"Topic '{name}' already exists.")

    def delete_topic(self, name: str) -> None:
        """Delete a topic: its folders renamed `-delete` here and now, then removed in
        a worker thread (here and now outside a trio run)."""
        topic = self._unregister_for_delete(name)
        removed = [partition.log.rename_for_delete() for partition in topic.partitions if partition is not None]
        remove_dirs_in_thread(removed)
        log.info("deleted topic %s", name)

    async def delete_topic_async(self, name: str) -> None:
        """delete_topic as Kafka's async delete, off the event loop: the topic leaves the
        broker's state at once, its folders are renamed `-delete` in a worker thread
        (the name stays taken until then: TOPIC_ALREADY_EXISTS, "marked for deletion"),
        and removed in another, after the answer."""
        topic = self._unregister_for_delete(name)
        logs = [partition.log for partition in topic.partitions if partition is not None]
        in_flight = self._topics_in_flight()
        in_flight[name] = "deleting"
        removed: list[Path] = []
        try:
            removed = await trio.to_thread.run_sync(_rename_for_delete, [log.directory for log in logs])
        finally:
            with trio.CancelScope(shield=True):
                await _sliced(log.release_deleted for log in logs)
            del in_flight[name]
        remove_dirs_in_thread(removed)
        log.info("deleted topic %s", name)

    def _unregister_for_delete(self, name: str) -> Topic:
        """A topic deletion's checks and state changes: the topic gone from the broker
        and its metadata, its logs closed to every writer, waiting fetches woken."""
        topic = self.topics.get(name)
        if topic is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"Topic {name} does not exist")
        if topic.is_internal:
            raise KafkaError(ErrorCode.invalid_request, f"Internal topic {name} cannot be deleted")
        del self.topics[name]
        del self.topics_by_id[topic.topic_id]
        self.metadata_image = self.metadata_image.without_topic(name)
        for partition in topic.partitions:
            if partition is not None:
                partition.log.begin_delete()
                partition.wake_waiters()
        self._save_metadata()
        return topic

    def deleted_partition_dirs(self) -> list[Path]:
        """Partition folders renamed `-delete` whose removal a stop interrupted."""
        try:
            return [p for p in self.log_dir.iterdir() if p.name.endswith(DELETE_DIR_SUFFIX) and p.is_dir()]
        except FileNotFoundError:
            return []

    async def remove_deleted_partition_dirs(self) -> None:
        """Start-up: remove the `-delete` leftovers, in a worker thread (Kafka's log
        manager does so as it loads its logs)."""
        leftovers = await trio.to_thread.run_sync(self.deleted_partition_dirs)
        if leftovers:
            log.info("removing %d partition folder(s) left by deletions", len(leftovers))
            remove_dirs_in_thread(leftovers)

    def create_partitions(self, name: str, count: int, *, validate_only: bool = False) -> None:
        """Raise a topic's partition count; the new partitions are opened here and now
        (create_partitions_async opens them in a worker thread)."""
        topic = self._check_partitions_increase(name, count)
        if validate_only:
            return
        self._install_partitions(
            topic, [self._open_partition(topic, index) for index in range(len(topic.partitions), count)]
        )

    async def create_partitions_async(self, name: str, count: int, *, validate_only: bool = False) -> None:
        """create_partitions with the new partitions opened in a worker thread; another
        increase of the same topic meanwhile waits for it, then is checked."""
        in_flight = self._topics_in_flight()
        while in_flight.get(name) == "growing":
            await trio.sleep(0.01)
        topic = self._check_partitions_increase(name, count)
        if validate_only:
            return
        current = len(topic.partitions)
        in_flight[name] = "growing"
        try:
            partitions, image = await trio.to_thread.run_sync(self._open_new_partitions, topic, current, count)
        finally:
            del in_flight[name]
        if self.topics.get(name) is not topic:
            # Deleted meanwhile: the new partitions go too.
            remove_dirs_in_thread([partition.log.rename_for_delete() for partition in partitions])
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"Topic {name} does not exist")
        self._install_partitions(topic, partitions, image)

    def _check_partitions_increase(self, name: str, count: int) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"Topic {name} does not exist")
        if self._topics_in_flight().get(name) == "growing":
            raise KafkaError(ErrorCode.invalid_partitions, f"The partitions of topic {name} are being increased already.")
        current = len(topic.partitions)
        if count <= current:
            raise KafkaError(
                ErrorCode.invalid_partitions,
                f"The topic {name} currently has {current} partition(s); {count} would not be an increase.",
            )
        return topic

    def _install_partitions(self, topic: Topic, partitions: list[Partition], image: TopicImage | None = None) -> None:
        topic.partitions.extend(partitions)
        if image is None:
            self._publish_topic(topic)
        else:
            self.metadata_image = self.metadata_image.with_topic(image)
        self._save_metadata()

    def set_topic_configs(self, name: str, configs: dict[str, Any], *, validate_only: bool = False) -> None:
        """Replace a topic's overrides (already parsed) and apply them to its logs."""
        topic = self.topics.get(name)
        if topic is None:
            raise KafkaError(ErrorCode.unknown_topic_or_partition, f"Topic {name} does not exist")
        if validate_only:
            return
        topic.configs = dict(configs)
        log_config = topic.log_config()
        for partition in topic.partitions:
            partition.log.config = log_config
        self._save_metadata()

    def topic_overrides(self, name: str) -> dict[str, Any] | None:
        """A topic's config overrides (parsed), None if there is no such topic: in a
        cluster ZooKeeper's (/config/topics/<topic>), for topics with no replica here too."""
        if self.cluster is not None:
            if self.metadata_image.topic(name) is None:
                return None
            try:
                return validate_topic_configs(self.cluster.mirror.topic_configs.get(name, {}))
            except ConfigError:
                return {}
        topic = self.topics.get(name)
        return None if topic is None else topic.configs

    def auto_create_topic(self, name: str) -> Topic | None:
        if not self.config["auto.create.topics.enable"] or name in RESERVED_TOPICS:
            return None
        return self.create_topic(name)

    # ---- producer ids ----------------------------------------------------------

    def next_producer_id(self) -> int:
        if self.cluster is not None:
            return self.cluster.next_producer_id()
        if self._next_producer_id >= self._producer_id_block_end:
            self._producer_id_block_end = self._next_producer_id + PRODUCER_ID_BLOCK
            self._save_metadata()
        producer_id = self._next_producer_id
        self._next_producer_id += 1
        return producer_id

    # ---- background work -------------------------------------------------------

    async def retention_pass(self) -> int:
        """Kafka's log retention check: segments past retention.ms / retention.bytes or
        below the log start offset renamed `.deleted` on the event loop (the commit
        point), giving the loop back between partitions; the unlinks of those whose
        file.delete.delay.ms is over, and the due flushes, in worker threads. Returns
        the segments deleted."""
        deleted = 0
        timestamp = now_ms()
        due = []
        slice_end = time.monotonic() + _LOOP_SLICE_S
        for partition in list(self.all_partitions()):
            if self.partition(partition.topic.name, partition.index) is not partition:
                continue  # deleted since the pass began
            due += partition.log.take_due_deletes(timestamp)
            deleted += partition.apply_retention(timestamp)
            if time.monotonic() >= slice_end:
                await trio.sleep(0)
                slice_end = time.monotonic() + _LOOP_SLICE_S
        if due:
            paths = [path for segment in due for path in (segment.log_path, segment.index_path, segment.time_index_path)]
            await trio.to_thread.run_sync(unlink_files, paths)
            # Let go of their files and indexes (the unlinks find nothing now).
            await _sliced(segment.delete_files for segment in due)
        await self._flush_logs(timestamp)
        return deleted

    async def flush_pass(self) -> None:
        """Kafka's log flusher: logs due a flush (flush.ms, flush.messages, rolled
        segments not flushed yet) fsynced in a worker thread."""
        await self._flush_logs(now_ms())

    async def _flush_logs(self, timestamp: int) -> None:
        """The due flushes of every log (PartitionLog.flush_job), fsynced in a worker
        thread a batch at a time; the recovery points move on the loop as each batch ends."""
        partitions = list(self.all_partitions())
        for start in range(0, len(partitions), _FLUSH_JOBS_PER_THREAD_CALL):
            jobs = []
            for partition in partitions[start : start + _FLUSH_JOBS_PER_THREAD_CALL]:
                try:
                    job = partition.log.flush_job(timestamp)
                except OSError as e:
                    log.warning("cannot flush %s-%d: %s", partition.topic.name, partition.index, e)
                    continue
                if job is not None:
                    jobs.append(job)
            if not jobs:
                continue
            try:
                await trio.to_thread.run_sync(run_flush_jobs, jobs)
            finally:
                for job in jobs:
                    job.complete()

    def attach_coordinators(self) -> None:
        """Create the group and transaction coordinators (they load their topics when
        they run). Both at once: handlers take one being there for the other too."""
        from kwire.coordinator.group_coordinator import GroupCoordinator
        from kwire.coordinator.transaction_coordinator import TransactionCoordinator
        from kwire.local_partition_writer import LocalPartitionWriter

        # The coordinators see the partitions only through this writer (Kafka's
        # CoordinatorPartitionWriter).
        writer = LocalPartitionWriter(self)
        # In a cluster each coordinator owns the partitions of its topic led here, as
        # the replica manager elects and resigns them; alone, it owns them all.
        alone = self.cluster is None
        groups = GroupCoordinator(writer, self.config, owns_all_partitions=alone)
        transactions = TransactionCoordinator(
            writer, self.config, groups, self.next_producer_id, owns_all_partitions=alone
        )
        self.services["groups"] = groups
        self.services["transactions"] = transactions
        if self.cluster is not None:
            coordinators = {"__consumer_offsets": groups, "__transaction_state": transactions}
            replicas = self.cluster.replicas
            replicas.on_elected.append(lambda topic, index, epoch: coordinators[topic].on_elected(index, epoch))
            replicas.on_resigned.append(lambda topic, index, epoch: coordinators[topic].on_resigned(index, epoch))

    async def start_coordinators(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Attach and run the coordinators, after the listener is up: their modules are
        imported in a thread meanwhile, since the first requests (metadata, produce,
        fetch) need none of them. Until then group and transaction requests are answered
        COORDINATOR_NOT_AVAILABLE, as Kafka answers while its coordinators load."""
        if "groups" not in self.services:
            await trio.to_thread.run_sync(_import_coordinators)
            self.attach_coordinators()
        async with trio.open_nursery() as nursery:
            for name in ("groups", "transactions"):
                await nursery.start(self.services[name].run)
            task_status.started()

    async def start_services(self, nursery: trio.Nursery) -> None:
        """Start background work; the coordinators follow in their own task. In a
        cluster they run before the cluster node starts electing them."""
        await nursery.start(self.run_background)
        if self.cluster is None:
            nursery.start_soon(self.start_coordinators)
            return
        await nursery.start(self.start_coordinators)
        await nursery.start(self.cluster.run)

    async def run_background(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Retention and time-based flushes, each on its own interval, and the log
        cleaner of the compacted topics (log.cleaner.enable)."""
        async with trio.open_nursery() as nursery:
            # Folders of deletions a crash or a stop interrupted (`-delete`), as Kafka's
            # log manager removes them at start-up.
            nursery.start_soon(self.remove_deleted_partition_dirs)
            nursery.start_soon(_every, self.config["log.retention.check.interval.ms"], self.retention_pass)
            flush_interval = min(self.config["log.flush.scheduler.interval.ms"], self.config.flush_ms)
            if flush_interval < 2**62:
                nursery.start_soon(_every, max(flush_interval, 10), self.flush_pass)
            self.log_cleaner = LogCleaner.from_config(self.config, self.log_dir, self.all_partitions)
            if self.log_cleaner is not None:
                await nursery.start(self.log_cleaner.run)
            task_status.started()


async def _every(interval_ms: int, action: Any) -> None:
    """Run `action` (a function, or an async one) every `interval_ms`; a failure is logged."""
    while True:
        await trio.sleep(interval_ms / 1000)
        try:
            result = action()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("background %s failed", getattr(action, "__name__", action))


async def _sliced(steps: Iterable[Callable[[], object]]) -> None:
    """Run quick steps on the event loop, giving it back every _LOOP_SLICE_S."""
    slice_end = time.monotonic() + _LOOP_SLICE_S
    for step in steps:
        step()
        if time.monotonic() >= slice_end:
            await trio.sleep(0)
            slice_end = time.monotonic() + _LOOP_SLICE_S


def _rename_for_delete(directories: list[Path]) -> list[Path]:
    """Rename partition folders `<topic>-<p>.<id>-delete` (in a worker thread); a folder
    that cannot be renamed is removed here, so that its name is free either way.
    Returns the renamed folders, to remove."""
    renamed = []
    for directory in directories:
        target = delete_dir_path(directory)
        try:
            os.rename(directory, target)
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("cannot rename %s for deletion (%s): removing it in place", directory, e)
            shutil.rmtree(directory, ignore_errors=True)
            continue
        renamed.append(target)
    return renamed


def _import_coordinators() -> None:
    import kwire.coordinator.group_coordinator  # noqa: F401
    import kwire.coordinator.transaction_coordinator  # noqa: F401
    import kwire.local_partition_writer  # noqa: F401


PARTITION_METADATA_FILE = "partition.metadata"
# First line of the clean-shutdown marker; the partition directories closed follow,
# one a line. An empty marker (written before the list was) names none.
_CLEAN_MARKER_HEADER = "kwire-clean-shutdown 1"
# Start-up logs its progress at most this often.
_PROGRESS_INTERVAL_S = 1.0


def _read_clean_marker(path: Path) -> set[str] | None:
    """The partition directories the clean-shutdown marker names; None without a
    marker, or with one that lists none (an empty marker of an earlier version)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    lines = text.splitlines()
    if not lines or lines[0].strip() != _CLEAN_MARKER_HEADER:
        return None
    return {line for line in lines[1:] if line}


def _remove_clean_marker(path: Path) -> None:
    """One unlink and one directory fsync, whatever the number of partitions."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


class _LoadProgress:
    """Start-up's progress line (Kafka's "Recovering segments ... (x/y done)"): at
    most once a second while logs load, and once at the end."""

    def __init__(self, log_dir: Path, total: int) -> None:
        self.log_dir = log_dir
        self.total = total
        self.loaded = 0
        self.started = time.monotonic()
        self._next_report = self.started + _PROGRESS_INTERVAL_S

    def step(self) -> None:
        self.loaded += 1
        now = time.monotonic()
        if now >= self._next_report:
            self._next_report = now + _PROGRESS_INTERVAL_S
            log.info(
                "loading logs in %s: %s/%s partitions (%d%%), %.1f s",
                self.log_dir, f"{self.loaded:,}", f"{self.total:,}",
                100 * self.loaded // max(1, self.total), now - self.started,
            )

    def done(self, after: str) -> None:
        log.info(
            "loaded %s partitions in %.1f s (%s)",
            f"{self.loaded:,}", time.monotonic() - self.started, after,
        )


def _claim_partition_dir(directory: Path, topic_id: uuid.UUID) -> None:
    """Kafka's partition.metadata: the topic id a partition's directory belongs to. A
    directory left by an earlier topic of the same name (deleted while this broker was
    down) is removed before the new topic's replica opens there."""
    from kwire.cluster.zk_layout import uuid_from_kafka, uuid_to_kafka

    path = directory / PARTITION_METADATA_FILE
    if directory.exists():
        try:
            lines = dict(line.split(": ", 1) for line in path.read_text().splitlines() if ": " in line)
            stored = uuid_from_kafka(lines["topic_id"].strip())
        except (OSError, KeyError, ValueError):
            stored = topic_id  # no file (written by a single broker): adopt the directory
        if stored != topic_id:
            import shutil

            log.warning("removing %s: it belongs to an earlier topic of the same name", directory)
            shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        write_atomically(path, f"version: 0\ntopic_id: {uuid_to_kafka(topic_id)}\n".encode())


def _new_cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")




__all__ = ["Broker", "KafkaError", "Partition", "Topic", "TOPIC_CONFIGS", "now_ms"]
