"""Checkpoints of one flow (MM2's MirrorCheckpointConnector): the source's consumer groups'
committed offsets translated through the offset syncs read back from the source
(kwire.mirror.offsets.OffsetSyncStore), written to the target's
`<source>.checkpoints.internal`, and with sync.group.offsets.enabled committed to the
target's groups that have no active member there."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from kwire.mirror.clients import REQUEST_TIMEOUT, FlowClients
from kwire.mirror.config import Flow
from kwire.mirror.metrics import MirrorMetrics
from kwire.mirror.offsets import Checkpoint, MalformedRecord, OffsetSync, OffsetSyncStore

log = logging.getLogger("kwire.mirror")


class GroupCheckpoints:
    """`remote` maps each source topic being copied to its remote topic (the flow's own
    dict, which grows as topics are picked up); only their offsets are translated."""

    def __init__(
        self,
        flow: Flow,
        clients: FlowClients,
        metrics: MirrorMetrics,
        remote: Mapping[str, str],
        source_admin: Any,
        target_admin: Any,
        producer: Any,
        sync_consumer: Any,
    ) -> None:
        self.flow = flow
        self.clients = clients
        self.metrics = metrics
        self.labels = (flow.source, flow.target)
        self.remote = remote
        self.source_admin = source_admin
        self.target_admin = target_admin
        self.aux_producer = producer
        self.sync_consumer = sync_consumer
        self.checkpoints_topic = flow.policy.checkpoints_topic(flow.source)
        self.sync_store = OffsetSyncStore()
        # group -> {(remote topic, partition): checkpoint} last written
        self.checkpoints: dict[str, dict[tuple[str, int], Checkpoint]] = {}

    def read_offset_syncs(self) -> None:
        """Add the offset syncs fetched since the last call to the store (without waiting:
        the ones not fetched yet come at the next checkpoint)."""
        while True:
            messages = self.sync_consumer.consume(10_000, 0)
            for message in messages:
                if message.error() is not None:
                    continue
                try:
                    self.sync_store.add(OffsetSync.decode(message.key(), message.value()))
                except MalformedRecord as e:
                    log.warning("%s: skipping an offset sync: %s", self.flow.name, e)
            if len(messages) < 10_000:
                return

    def emit(self) -> None:
        """Translate the committed offsets of the source's groups (those `groups` names)
        for the topics this flow copies, and write the ones that changed as checkpoints."""
        self.read_offset_syncs()
        try:
            listing = self.clients.result(
                self.source_admin.list_consumer_groups(request_timeout=REQUEST_TIMEOUT)
            )
        except Exception as e:
            log.warning("%s: cannot list the groups of %s: %s", self.flow.name, self.flow.source, e)
            return
        written = 0
        for group in sorted(g.group_id for g in listing.valid):
            if not self.flow.replicates_group(group):
                continue
            offsets = self.group_offsets(self.source_admin, group)
            if offsets is None:
                continue
            latest = self.checkpoints.setdefault(group, {})
            for (topic, partition), (offset, metadata) in offsets.items():
                remote = self.remote.get(topic)
                if remote is None or offset < 0:
                    continue
                downstream = self.sync_store.translate(topic, partition, offset)
                if downstream is None:
                    continue
                checkpoint = Checkpoint(group, remote, partition, offset, downstream, metadata)
                if latest.get((remote, partition)) == checkpoint:
                    continue
                self.clients.produce(
                    self.aux_producer,
                    self.checkpoints_topic,
                    checkpoint.value(),
                    checkpoint.key(),
                    None,
                )
                latest[(remote, partition)] = checkpoint
                written += 1
        if written:
            left = self.clients.flush(self.aux_producer)
            if left:
                log.warning("%s: %d checkpoints not yet written", self.flow.name, left)
            self.metrics.checkpoints.labels(*self.labels).inc(written)

    def group_offsets(
        self, admin: Any, group: str
    ) -> dict[tuple[str, int], tuple[int, str]] | None:
        from confluent_kafka import ConsumerGroupTopicPartitions

        try:
            futures = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=REQUEST_TIMEOUT
            )
            answer = self.clients.result(futures[group])
        except Exception as e:
            log.warning("%s: cannot read the offsets of group %s: %s", self.flow.name, group, e)
            return None
        return {
            (tp.topic, tp.partition): (tp.offset, tp.metadata or "")
            for tp in answer.topic_partitions
            if tp.error is None
        }

    def sync_groups(self) -> None:
        """Commit the translated offsets to the target's groups that have no active
        member there, where they are ahead of what the group has committed on the target
        (a group that moved on by itself is not rewound)."""
        from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, TopicPartition

        groups = sorted(group for group, latest in self.checkpoints.items() if latest)
        if not groups:
            return
        try:
            descriptions = self.target_admin.describe_consumer_groups(
                groups, request_timeout=REQUEST_TIMEOUT
            )
        except Exception as e:
            log.warning("%s: cannot describe groups on %s: %s", self.flow.name, self.flow.target, e)
            return
        synced = 0
        for group in groups:
            try:
                state = self.clients.result(descriptions[group]).state
            except Exception as e:
                log.warning(
                    "%s: cannot describe group %s on %s: %s",
                    self.flow.name,
                    group,
                    self.flow.target,
                    e,
                )
                continue
            if state not in (
                ConsumerGroupState.EMPTY,
                ConsumerGroupState.DEAD,
                ConsumerGroupState.UNKNOWN,
            ):
                continue  # active on the target: its members own its offsets
            target_offsets = self.group_offsets(self.target_admin, group)
            if target_offsets is None:
                continue
            updates = []
            for (remote, partition), checkpoint in sorted(self.checkpoints[group].items()):
                current = target_offsets.get((remote, partition), (-1, ""))[0]
                if current >= checkpoint.downstream_offset:
                    continue
                updates.append(
                    TopicPartition(
                        remote,
                        partition,
                        checkpoint.downstream_offset,
                        # a str always: confluent-kafka's TopicPartition refuses None
                        # (TypeError), which would end the mirror at a group without one
                        metadata=checkpoint.metadata,
                    )
                )
            if not updates:
                continue
            try:
                self.clients.result(
                    self.target_admin.alter_consumer_group_offsets(
                        [ConsumerGroupTopicPartitions(group, updates)],
                        request_timeout=REQUEST_TIMEOUT,
                    )[group]
                )
                synced += len(updates)
                log.info(
                    "%s: group %s on %s moved to translated offsets: %s",
                    self.flow.name,
                    group,
                    self.flow.target,
                    ", ".join(f"{tp.topic}[{tp.partition}]={tp.offset}" for tp in updates[:10]),
                )
            except Exception as e:
                log.warning(
                    "%s: cannot commit translated offsets of %s: %s", self.flow.name, group, e
                )
        if synced:
            self.metrics.group_offsets_synced.labels(*self.labels).inc(synced)
