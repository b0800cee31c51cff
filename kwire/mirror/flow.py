"""One replication flow, `source->target`, through confluent-kafka clients (librdkafka):
the I/O half of the mirror. What to write and when (offset syncs, translation, the record
formats) is decided in kwire.mirror.offsets, without I/O.

Copying: a Consumer assigned to every partition of the mirrored topics (no consumer group,
as MM2's source tasks) reads committed records; a Producer writes each to the same
partition of the remote topic with its key, value, headers and timestamp. Progress, the
offset of the last record copied per partition, is stored in the target's
`mm2-offsets.<source>.internal` in Kafka Connect's format:

- at-least-once (default): every offset.flush.interval.ms, after the producer has flushed,
  so what is stored has been acknowledged by the target; a crash copies again what came
  after the last store.
- exactly-once (`exactly.once.support=enabled`): each polled batch is one transaction of a
  transactional producer holding the records and their progress together, so a crash
  aborts both. A restarted mirror fences its predecessor (init_transactions) and reads the
  progress read_committed.

Offset syncs go to the source's `mm2-offset-syncs.<target>.internal` before the progress
they describe is stored, so that no translation can be missing for stored progress.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from kwire.mirror.checkpoints import GroupCheckpoints
from kwire.mirror.clients import REQUEST_TIMEOUT, FlowClients, MirrorError
from kwire.mirror.config import Flow
from kwire.mirror.metrics import MirrorMetrics
from kwire.mirror.offsets import (
    OffsetSync,
    PartitionSyncState,
    decode_source_offset,
    source_offset_key,
    source_offset_value,
)

log = logging.getLogger("kwire.mirror")

# Records taken from the consumer per poll (and per transaction with exactly-once). Each
# transaction costs a flush and a commit's round trips: 20,000 copied about a fifth more
# per second than 5,000 with exactly-once, the same without (bench/mirror.py).
BATCH_SIZE = 20_000
POLL_TIMEOUT = 0.1
# One attempt of init/commit/abort_transaction; a timed-out one is retried (librdkafka
# resumes it), so this bounds only how late a stop is seen.
TRANSACTION_CALL_TIMEOUT = 5.0


class _Deliveries:
    """on_delivery of one partition's copied records: their upstream offsets in the order
    they were produced, taken in the order librdkafka reports them, which is that order per
    partition (the producer is idempotent: no reordering). One object per partition rather
    than a functools.partial per record, which cost about 0.7 us a record (its allocation,
    and the collector walking every record in flight). An error report may come before the
    reports of records produced earlier (a queued record timing out while earlier ones are
    in flight): the partition counts as failed from that report on, whatever the reports
    after it say. A rewound partition gets a new object: reports of records produced before
    (an aborted transaction's, purged) still take their offsets from the old one, which
    drops them."""

    __slots__ = ("deliver", "offsets", "live")

    def __init__(self, deliver: Callable[[int, Any, Any], None]) -> None:
        self.deliver = deliver
        self.offsets: deque[int] = deque()
        self.live = True

    def __call__(self, error: Any, message: Any) -> None:
        upstream = self.offsets.popleft()
        if self.live:
            self.deliver(upstream, error, message)


class FlowRunner:
    """Copies one flow. `start()` once, then `step()` in a loop (it does the periodic work
    when due), then `close()`. Single-threaded: librdkafka's callbacks run inside poll and
    flush, on the calling thread."""

    def __init__(
        self,
        flow: Flow,
        metrics: MirrorMetrics,
        should_stop: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.flow = flow
        self.metrics = metrics
        self.should_stop = should_stop
        self.clock = clock
        self.exactly_once = flow.exactly_once
        policy = flow.policy
        self.offsets_topic = policy.offsets_topic(flow.source)
        self.offset_syncs_topic = policy.offset_syncs_topic(flow.target)
        self.checkpoints_topic = policy.checkpoints_topic(flow.source)
        self.emit_offset_syncs = flow.flag("emit.offset-syncs.enabled")
        self.emit_checkpoints = flow.flag("emit.checkpoints.enabled") and self.emit_offset_syncs
        self.sync_group_offsets = flow.flag("sync.group.offsets.enabled") and self.emit_checkpoints
        self.max_offset_lag = flow.integer("offset.lag.max")
        self._labels = (flow.source, flow.target)

        # source topic -> remote topic, for the topics being copied
        self.remote: dict[str, str] = {}
        self.source_of: dict[str, str] = {}
        self.partition_counts: dict[str, int] = {}
        # (source topic, partition) -> offset of the last record stored as copied
        self.stored: dict[tuple[str, int], int] = {}
        # ... acknowledged by the target (at-least-once) but maybe not stored yet
        self.delivered: dict[tuple[str, int], int] = {}
        # ... read from the source and handed to the producer
        self.read_upto: dict[tuple[str, int], int] = {}
        self.failed: set[tuple[str, int]] = set()
        self.sync_states: dict[tuple[str, int], PartitionSyncState] = {}
        self.pending_syncs: list[OffsetSync] = []
        self.copied_records = 0
        self._batch_records: dict[str, list[int]] = {}
        # (source topic, partition) -> the on_delivery of its records in flight
        self._deliveries: dict[tuple[str, int], _Deliveries] = {}
        self._newest_timestamp_ms = 0

        self.consumer: Any = None
        self.producer: Any = None
        self.aux_producer: Any = None
        self.sync_producer: Any = None
        self.sync_consumer: Any = None
        self.group_checkpoints: GroupCheckpoints | None = None
        self.clients = FlowClients(flow, should_stop, clock)
        self.source_admin: Any = None
        self.target_admin: Any = None

        now = clock()
        self._due: dict[str, float] = {
            "commit": now + flow.integer("offset.flush.interval.ms") / 1000,
            "refresh_topics": now + flow.seconds("refresh.topics.interval.seconds"),
            "sync_configs": now + flow.seconds("sync.topic.configs.interval.seconds"),
            "checkpoints": now + flow.seconds("emit.checkpoints.interval.seconds"),
            "sync_groups": now + flow.seconds("sync.group.offsets.interval.seconds"),
            "progress": now + flow.seconds("progress.log.interval.seconds"),
        }
        self._progress_mark = (now, 0)

    # ---------------------------------------------------------------- start

    def start(self) -> None:
        """Create the clients, wait for both clusters, make the internal topics, fence a
        previous instance (exactly-once), read the stored progress and assign the topics."""
        from confluent_kafka import Consumer, Producer
        from confluent_kafka.admin import AdminClient

        flow = self.flow
        self.source_admin = self.clients.make(AdminClient, "source", "admin")
        self.target_admin = self.clients.make(AdminClient, "target", "admin")
        self.clients.wait_for(self.source_admin, flow.source)
        self.clients.wait_for(self.target_admin, flow.target)
        if self.should_stop():
            return

        self._ensure_internal_topics()
        producer_settings: dict[str, Any] = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
        if self.exactly_once:
            producer_settings["transactional.id"] = f"kwire-mirror-{flow.name}"
        self.producer = self.clients.make(Producer, "target", "producer", **producer_settings)
        self.aux_producer = self.clients.make(
            Producer, "target", "producer", **{"enable.idempotence": True, "acks": "all"}
        )
        if self.emit_offset_syncs:
            self.sync_producer = self.clients.make(
                Producer, "source", "producer", **{"enable.idempotence": True, "acks": "all"}
            )
        if self.exactly_once:
            self.clients.retrying(
                "fence the previous mirror",
                lambda: self.producer.init_transactions(TRANSACTION_CALL_TIMEOUT),
            )
        self._load_stored_offsets()
        self.consumer = self.clients.make(
            Consumer,
            "source",
            "consumer",
            **{
                "group.id": f"kwire-mirror-{flow.name}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
            },
        )
        if self.emit_checkpoints:
            self.sync_consumer = self.clients.make(
                Consumer,
                "source",
                "consumer",
                **{
                    "group.id": f"kwire-mirror-{flow.name}-offset-syncs",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                },
            )
            from confluent_kafka import OFFSET_BEGINNING, TopicPartition

            self.sync_consumer.assign(
                [TopicPartition(self.offset_syncs_topic, 0, OFFSET_BEGINNING)]
            )
            self.group_checkpoints = GroupCheckpoints(
                flow,
                self.clients,
                self.metrics,
                self.remote,
                self.source_admin,
                self.target_admin,
                self.aux_producer,
                self.sync_consumer,
            )
        self.refresh_topics()
        if self.flow.flag("sync.topic.configs.enabled"):
            self.sync_topic_configs()

    def _ensure_internal_topics(self) -> None:
        """The progress topic on the target, and (when written) the offset syncs on the
        source and the checkpoints on the target: compacted, as MM2 makes them."""
        from confluent_kafka.admin import NewTopic

        flow = self.flow
        wanted = [
            (
                "target",
                self.offsets_topic,
                flow.integer("offset.storage.partitions", minimum=1),
                "offset.storage.replication.factor",
            )
        ]
        if self.emit_offset_syncs:
            wanted.append(
                ("source", self.offset_syncs_topic, 1, "offset-syncs.topic.replication.factor")
            )
        if self.emit_checkpoints:
            wanted.append(
                ("target", self.checkpoints_topic, 1, "checkpoints.topic.replication.factor")
            )
        for side, name, partitions, replication_key in wanted:
            topic = NewTopic(
                name,
                partitions,
                int(flow.get(replication_key)),
                config={"cleanup.policy": "compact"},
            )
            if side == "source":
                self.clients.create_topics(self.source_admin, flow.source, [topic], required=True)
            else:
                self.clients.create_topics(self.target_admin, flow.target, [topic], required=True)

    def _load_stored_offsets(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        metadata = self.clients.metadata(self.target_admin, self.offsets_topic)
        topic = metadata.topics.get(self.offsets_topic)
        count = len(topic.partitions) if topic is not None and topic.error is None else 0
        if count == 0:
            raise MirrorError(
                f"{self.flow.name}: {self.offsets_topic} has no partitions on {self.flow.target}"
            )
        reader = self.clients.make(
            Consumer,
            "target",
            "consumer",
            **{
                "group.id": f"kwire-mirror-{self.flow.name}-offsets",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                # an empty partition's end is known after one fetch wait: keep it short
                "fetch.wait.max.ms": 10,
            },
        )
        try:
            partitions = [
                TopicPartition(self.offsets_topic, p, OFFSET_BEGINNING) for p in range(count)
            ]
            for message in self.clients.read_to_end(reader, partitions):
                decoded = decode_source_offset(message.key(), message.value())
                if decoded is None:
                    continue
                (cluster, topic_name, partition), offset = decoded
                if cluster != self.flow.source:
                    continue
                if offset is None:
                    self.stored.pop((topic_name, partition), None)
                else:
                    self.stored[(topic_name, partition)] = offset
        finally:
            reader.close()
        log.info(
            "%s: %d partitions have stored progress in %s",
            self.flow.name,
            len(self.stored),
            self.offsets_topic,
        )

    # ---------------------------------------------------------------- topics

    def refresh_topics(self) -> None:
        """Pick up new matching topics and partitions: create or grow their remote topics,
        then assign their partitions from the stored progress (or the beginning)."""
        from confluent_kafka import KafkaException, TopicPartition
        from confluent_kafka.admin import NewPartitions, NewTopic

        flow = self.flow
        try:
            source_topics = self.clients.metadata(self.source_admin).topics
            target_topics = self.clients.metadata(self.target_admin).topics
        except KafkaException as e:
            log.warning("%s: cannot list topics: %s", flow.name, e.args[0].str())
            return
        wanted = {
            name: len(meta.partitions)
            for name, meta in source_topics.items()
            if meta.error is None and meta.partitions and flow.replicates_topic(name)
        }
        new_topics = []
        grown = []
        for name, count in sorted(wanted.items()):
            remote = flow.remote_topic(name)
            existing = target_topics.get(remote)
            if existing is None or existing.error is not None:
                configs = (
                    self._topic_configs(name) if flow.flag("sync.topic.configs.enabled") else {}
                )
                new_topics.append(
                    NewTopic(remote, count, int(flow.get("replication.factor")), config=configs)
                )
            elif len(existing.partitions) < count:
                grown.append(NewPartitions(remote, count))
        exist = self.clients.create_topics(
            self.target_admin, flow.target, new_topics, required=False
        )
        if grown:
            for name, future in self.target_admin.create_partitions(
                grown, request_timeout=REQUEST_TIMEOUT
            ).items():
                try:
                    self.clients.result(future)
                    log.info("%s: added partitions to %s on %s", flow.name, name, flow.target)
                except Exception as e:
                    log.warning("%s: cannot add partitions to %s: %s", flow.name, name, e)
        missing = {new.topic for new in new_topics} - set(exist)
        assign = []
        for name, count in sorted(wanted.items()):
            remote = flow.remote_topic(name)
            if remote in missing:  # creation failed: retried at the next refresh
                continue
            previous = self.partition_counts.get(name, 0)
            if count <= previous:
                continue
            if previous and not self._producer_knows(remote, count):
                continue  # not grown on the target (or not seen yet): the next refresh
            self.remote[name] = remote
            self.source_of[remote] = name
            self.partition_counts[name] = count
            for partition in range(previous, count):
                key = (name, partition)
                stored = self.stored.get(key)
                start = stored + 1 if stored is not None else -2  # OFFSET_BEGINNING
                assign.append(TopicPartition(name, partition, start))
                if self.emit_offset_syncs:
                    self.sync_states[key] = PartitionSyncState(self.max_offset_lag)
        if assign:
            self.consumer.incremental_assign(assign)
            log.info(
                "%s: copying %s",
                flow.name,
                ", ".join(f"{tp.topic}[{tp.partition}]" for tp in assign[:20])
                + (f" and {len(assign) - 20} more" if len(assign) > 20 else ""),
            )

    def _producer_knows(self, remote: str, count: int) -> bool:
        """Whether the producer's metadata has `count` partitions of `remote`, refreshed
        now: librdkafka caches a topic's partition count, and produce() to a partition past
        it raises _UNKNOWN_PARTITION (which would end the mirror) until its next periodic
        refresh, after partitions were added."""
        from confluent_kafka import KafkaException

        try:
            metadata = self.clients.metadata(self.producer, remote)
        except KafkaException as e:
            log.warning("%s: cannot read the metadata of %s: %s", self.flow.name, remote, e)
            return False
        topic = metadata.topics.get(remote)
        return topic is not None and topic.error is None and len(topic.partitions) >= count

    def _topic_configs(self, topic: str) -> dict[str, str]:
        """The source topic's configs set on it (not defaults), without the excluded ones."""
        from confluent_kafka.admin import ConfigResource, ConfigSource

        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        try:
            entries = self.clients.result(
                self.source_admin.describe_configs([resource], request_timeout=REQUEST_TIMEOUT)[
                    resource
                ]
            )
        except Exception as e:
            log.warning("%s: cannot describe the configs of %s: %s", self.flow.name, topic, e)
            return {}
        return {
            name: entry.value
            for name, entry in entries.items()
            if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
            and entry.value is not None
            and not entry.is_sensitive
            and self.flow.syncs_config(name)
        }

    def sync_topic_configs(self) -> None:
        """Set each remote topic's configs to its source topic's (the ones set there)."""
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

        resources = []
        for name, remote in sorted(self.remote.items()):
            configs = self._topic_configs(name)
            if not configs:
                continue
            resources.append(
                ConfigResource(
                    ConfigResource.Type.TOPIC,
                    remote,
                    incremental_configs=[
                        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                        for key, value in sorted(configs.items())
                    ],
                )
            )
        if not resources:
            return
        futures = self.target_admin.incremental_alter_configs(
            resources, request_timeout=REQUEST_TIMEOUT
        )
        for resource, future in futures.items():
            try:
                self.clients.result(future)
            except Exception as e:
                log.warning(
                    "%s: cannot sync the configs of %s: %s", self.flow.name, resource.name, e
                )

    # ---------------------------------------------------------------- copying

    def step(self) -> int:
        """Copy one polled batch (one transaction with exactly-once); then whatever
        periodic work is due. The number of records read back."""
        copied = self._copy_batch()
        self._periodic()
        return copied

    def _copy_batch(self) -> int:
        from confluent_kafka import KafkaException

        messages = self.consumer.consume(BATCH_SIZE, POLL_TIMEOUT)
        if not messages:
            if self.producer is not None:
                self.producer.poll(0)
            return 0
        if self.exactly_once:
            self.producer.begin_transaction()
        produce = self.producer.produce
        deliveries = self._deliveries
        read_upto = self.read_upto
        batch_records = self._batch_records
        first_offsets: dict[tuple[str, int], int] = {}
        count = 0
        newest = 0
        for message in messages:
            if message.error() is not None:
                self._consume_error(message)
                continue
            topic = message.topic()
            remote = self.remote.get(topic)
            if remote is None:
                continue
            partition = message.partition()
            offset = message.offset()
            key = message.key()
            value = message.value()
            headers = message.headers()
            timestamp_type, timestamp = message.timestamp()
            if timestamp_type == 0:  # TIMESTAMP_NOT_AVAILABLE: the target's clock decides
                timestamp = 0
            elif timestamp > newest:
                newest = timestamp
            where = (topic, partition)
            if where not in first_offsets:
                first_offsets[where] = offset
            report = deliveries.get(where)
            if report is None:
                report = deliveries[where] = _Deliveries(self._delivered)
            try:  # inline: the one call per record that clients.produce wraps
                produce(
                    remote,
                    value,
                    key,
                    partition=partition,
                    timestamp=timestamp,
                    headers=headers,
                    on_delivery=report,
                )
            except BufferError:
                self.clients.produce(
                    self.producer,
                    remote,
                    value,
                    key,
                    report,
                    partition=partition,
                    timestamp=timestamp,
                    headers=headers,
                )
            except KafkaException as e:
                # Refused before sending (the producer's state, the record's size): not copied.
                self._refused(where, offset, e)
                if self.exactly_once:
                    self._abort_batch(messages)
                    return 0
                continue
            # after produce() took it: its report comes from a later poll or flush
            report.offsets.append(offset)
            read_upto[where] = offset
            size = (len(key) if key else 0) + (len(value) if value else 0)
            if headers:
                for name, data in headers:
                    size += len(name) + (len(data) if data else 0)
            totals = batch_records.get(topic)
            if totals is None:
                batch_records[topic] = [1, size]
            else:
                totals[0] += 1
                totals[1] += size
            count += 1
        if newest:
            self._newest_timestamp_ms = newest
        if self.exactly_once:
            self._commit_transaction(first_offsets)
        else:
            self.producer.poll(0)
        return count

    def _refused(self, where: tuple[str, int], offset: int, e: Any) -> None:
        """A record produce() refused: its partition is read again from its progress (at
        the next commit with at-least-once, at once with exactly-once)."""
        error = e.args[0]
        if error.fatal():
            raise MirrorError(f"{self.flow.name}: producer: {error.str()}") from None
        if where not in self.failed:
            log.warning(
                "%s: %s[%d] offset %d not copied: %s",
                self.flow.name,
                where[0],
                where[1],
                offset,
                error.str(),
            )
        self.failed.add(where)

    def _abort_batch(self, messages: list[Any]) -> None:
        """Exactly-once, a record refused mid-batch: abort, and read every partition of the
        polled batch again (those not produced yet too: the consumer has moved past them)."""
        self._abort_and_rewind(
            {
                (message.topic(), message.partition())
                for message in messages
                if message.error() is None and message.topic() in self.remote
            }
        )

    def _abort_and_rewind(self, keys: Iterable[tuple[str, int]]) -> None:
        """Abort the open transaction and read `keys` again from their stored progress."""
        self._end_transaction(commit=False)
        self.metrics.transactions.labels(*self._labels, "aborted").inc()
        self._batch_records.clear()
        self._rewind(keys)

    def _consume_error(self, message: Any) -> None:
        """Log a partition's read error, once a minute per partition and error: the
        consumer keeps returning it while it lasts."""
        error = message.error()
        if not self.clients.should_log((message.topic(), message.partition(), error.code())):
            return
        log.warning(
            "%s: reading %s[%s]: %s",
            self.flow.name,
            message.topic(),
            message.partition(),
            error.str(),
        )

    def _delivered(self, upstream_offset: int, error: Any, message: Any) -> None:
        key = (self.source_of[message.topic()], message.partition())
        if error is not None:
            if key not in self.failed:
                log.warning(
                    "%s: %s[%d] offset %d not written to %s: %s",
                    self.flow.name,
                    key[0],
                    key[1],
                    upstream_offset,
                    self.flow.target,
                    error.str(),
                )
            self.failed.add(key)
            return
        if key in self.failed:
            return
        self.delivered[key] = upstream_offset
        state = self.sync_states.get(key)
        if state is not None and state.update(upstream_offset, message.offset()):
            self.pending_syncs.append(OffsetSync(key[0], key[1], upstream_offset, message.offset()))

    def _account_batch(self) -> None:
        """Count the records acknowledged since the last call in the metrics."""
        source, target = self._labels
        for topic, (records, size) in self._batch_records.items():
            self.metrics.records.labels(source, target, topic).inc(records)
            self.metrics.bytes.labels(source, target, topic).inc(size)
            self.copied_records += records
        self._batch_records.clear()
        if self._newest_timestamp_ms:
            self.metrics.latency.labels(source, target).set(
                max(0.0, time.time() - self._newest_timestamp_ms / 1000)
            )

    def _write_offset_syncs(self, progress: bool) -> bool:
        """Send the pending offset syncs (and with `progress` the last copied pair of each
        partition) to the source and wait for them and any still queued from before; False
        if they are not all written (a failed one is queued again for the next call), in
        which case no progress they describe may be stored yet."""
        if self.sync_producer is None:
            return True
        if progress:
            for (topic, partition), state in self.sync_states.items():
                pair = state.flush()
                if pair is not None:
                    self.pending_syncs.append(OffsetSync(topic, partition, *pair))
        if not self.pending_syncs and len(self.sync_producer) == 0:
            return True
        failed: list[Any] = []

        def delivered(sync: OffsetSync, error: Any, _message: Any) -> None:
            if error is not None:
                failed.append(error)
                self.pending_syncs.append(sync)
            else:
                self.metrics.offset_syncs.labels(*self._labels).inc()

        sending, self.pending_syncs = self.pending_syncs, []
        for sync in sending:
            self.clients.produce(
                self.sync_producer,
                self.offset_syncs_topic,
                sync.value(),
                sync.key(),
                partial(delivered, sync),
            )
        remaining = self.clients.flush(self.sync_producer)
        if failed or remaining:
            log.warning(
                "%s: offset syncs not written to %s yet: %s",
                self.flow.name,
                self.flow.source,
                failed[0].str() if failed else f"{remaining} still queued",
            )
            return False
        return True

    def _commit_transaction(self, first_offsets: dict[tuple[str, int], int]) -> None:
        """Exactly-once: the batch's progress joins its records in the transaction; the
        offset syncs are written before it commits. Any failure aborts the batch and
        reads it again."""
        from confluent_kafka import KafkaException

        for key in first_offsets:
            offset = self.read_upto[key]
            self.clients.produce(
                self.producer,
                self.offsets_topic,
                source_offset_value(offset),
                source_offset_key(self.flow.source, *key),
                None,
            )
        committed = False
        try:
            remaining = self.clients.flush(self.producer)
            if (
                remaining == 0
                and not (self.failed & first_offsets.keys())
                and self._write_offset_syncs(False)
            ):
                committed = self._end_transaction(commit=True)
        except KafkaException as e:
            error = e.args[0]
            if error.fatal():
                raise MirrorError(
                    f"{self.flow.name}: transactional producer: {error.str()}"
                ) from None
            log.warning("%s: transaction failed: %s", self.flow.name, error.str())
        if not committed:
            self._abort_and_rewind(first_offsets.keys())
            return
        self.metrics.transactions.labels(*self._labels, "committed").inc()
        for key in first_offsets:
            self.stored[key] = self.read_upto[key]
        self._account_batch()

    def _end_transaction(self, commit: bool) -> bool:
        """Commit (or abort) the open transaction, retrying what librdkafka says can be
        retried (the target restarting): a commit that timed out must be retried, not
        aborted, since it may have been written. False when a commit must be aborted
        instead (or the mirror is stopping: the next start fences the open transaction)."""
        from confluent_kafka import KafkaException

        what = "commit" if commit else "abort"
        while True:
            try:
                if commit:
                    self.producer.commit_transaction(TRANSACTION_CALL_TIMEOUT)
                else:
                    self.producer.abort_transaction(TRANSACTION_CALL_TIMEOUT)
                return True
            except KafkaException as e:
                error = e.args[0]
                if error.fatal():
                    raise MirrorError(
                        f"{self.flow.name}: cannot {what} a transaction: {error.str()}"
                    ) from None
                if commit and error.txn_requires_abort():
                    log.warning("%s: transaction to abort: %s", self.flow.name, error.str())
                    return False
                if not error.retriable():
                    raise MirrorError(
                        f"{self.flow.name}: cannot {what} a transaction: {error.str()}"
                    ) from None
                if self.should_stop():
                    return False
                log.warning(
                    "%s: cannot %s a transaction yet: %s", self.flow.name, what, error.str()
                )
                self.clients.sleep(1.0)

    def _rewind(self, keys: Iterable[tuple[str, int]]) -> None:
        """Read these partitions again from after their stored progress."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        self.metrics.restarts.labels(*self._labels).inc()
        for key in keys:
            stored = self.stored.get(key)
            offset = stored + 1 if stored is not None else OFFSET_BEGINNING
            self.read_upto.pop(key, None)
            self.delivered.pop(key, None)
            if stored is not None:
                self.delivered[key] = stored
            self.failed.discard(key)
            stale = self._deliveries.pop(key, None)
            if stale is not None:
                stale.live = False
            if key in self.sync_states:
                self.sync_states[key] = PartitionSyncState(self.max_offset_lag)
            try:
                self.consumer.seek(TopicPartition(key[0], key[1], offset))
            except Exception as e:
                log.warning("%s: cannot rewind %s[%d]: %s", self.flow.name, key[0], key[1], e)
        self.pending_syncs = [
            s for s in self.pending_syncs if (s.topic, s.partition) not in set(keys)
        ]

    def commit_offsets(self) -> None:
        """At-least-once: store the progress the target has acknowledged, after the offset
        syncs describing it. Partitions with a failed record are read again from there."""
        if self.exactly_once:
            self._write_offset_syncs(True)
            return
        remaining = self.clients.flush(self.producer)
        self._account_batch()
        if remaining:
            log.warning(
                "%s: %d records not yet acknowledged by %s; progress stored up to before them",
                self.flow.name,
                remaining,
                self.flow.target,
            )
        if not self._write_offset_syncs(True):
            return
        # A failed partition stores what was acknowledged before its failure.
        changed = [
            (key, offset)
            for key, offset in self.delivered.items()
            if self.stored.get(key) != offset
        ]
        errors: list[Any] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                errors.append(error)

        for key, offset in changed:
            self.clients.produce(
                self.aux_producer,
                self.offsets_topic,
                source_offset_value(offset),
                source_offset_key(self.flow.source, *key),
                delivered,
            )
        if changed:
            left = self.clients.flush(self.aux_producer)
            if errors or left:
                log.warning(
                    "%s: progress not stored in %s: %s",
                    self.flow.name,
                    self.offsets_topic,
                    errors[0].str() if errors else f"{left} records still queued",
                )
            else:
                for key, offset in changed:
                    self.stored[key] = offset
        if self.failed and not remaining:
            self._rewind(sorted(self.failed))

    # ---------------------------------------------------------------- periodic

    def _periodic(self) -> None:
        now = self.clock()
        due = self._due
        flow = self.flow
        if now >= due["commit"]:
            self.commit_offsets()
            due["commit"] = self.clock() + flow.integer("offset.flush.interval.ms") / 1000
        if now >= due["refresh_topics"] and flow.flag("refresh.topics.enabled"):
            self.refresh_topics()
            due["refresh_topics"] = self.clock() + flow.seconds("refresh.topics.interval.seconds")
        if now >= due["sync_configs"] and flow.flag("sync.topic.configs.enabled"):
            self.sync_topic_configs()
            due["sync_configs"] = self.clock() + flow.seconds("sync.topic.configs.interval.seconds")
        if now >= due["checkpoints"] and self.group_checkpoints is not None:
            self.group_checkpoints.emit()
            due["checkpoints"] = self.clock() + flow.seconds("emit.checkpoints.interval.seconds")
        if (
            now >= due["sync_groups"]
            and self.sync_group_offsets
            and self.group_checkpoints is not None
        ):
            self.group_checkpoints.sync_groups()
            due["sync_groups"] = self.clock() + flow.seconds("sync.group.offsets.interval.seconds")
        if now >= due["progress"]:
            self.log_progress()
            due["progress"] = self.clock() + flow.seconds("progress.log.interval.seconds")

    def lag(self) -> dict[tuple[str, int], int]:
        """Records not yet read per partition: the source's high watermark (as of the
        consumer's last fetch) minus the next offset to read."""
        from confluent_kafka import TopicPartition

        lags = {}
        for topic, count in self.partition_counts.items():
            for partition in range(count):
                try:
                    _low, high = self.consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), cached=True
                    )
                except Exception:
                    continue
                if high < 0:
                    continue
                read = self.read_upto.get((topic, partition), self.stored.get((topic, partition)))
                next_offset = read + 1 if read is not None else 0
                lags[(topic, partition)] = max(0, high - next_offset)
        return lags

    def log_progress(self) -> None:
        self._account_batch()
        now = self.clock()
        then, copied_then = self._progress_mark
        rate = (self.copied_records - copied_then) / max(1e-6, now - then)
        self._progress_mark = (now, self.copied_records)
        lags = self.lag()
        source, target = self._labels
        for (topic, partition), value in lags.items():
            self.metrics.lag.labels(source, target, topic, str(partition)).set(value)
        log.info(
            "%s: %d records copied (%.0f/s), lag %d records over %d partitions",
            self.flow.name,
            self.copied_records,
            rate,
            sum(lags.values()),
            len(lags),
        )

    # ---------------------------------------------------------------- stop

    def close(self) -> None:
        """Store the progress of what was acknowledged, then close every client."""
        try:
            if self.producer is not None and not self.exactly_once:
                self.commit_offsets()
            elif self.exactly_once and self.sync_producer is not None:
                self._write_offset_syncs(True)
            self._account_batch()
        finally:
            for client in (self.consumer, self.sync_consumer):
                if client is not None:
                    client.close()
            for producer in (self.producer, self.aux_producer, self.sync_producer):
                if producer is not None:
                    self.clients.flush(producer)
            self.consumer = self.sync_consumer = None
