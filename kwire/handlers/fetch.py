"""Fetch (key 1): long-poll reads of whole batches, with incremental sessions.

A fetch answers at once when min_bytes are ready (or on error), else waits up to
max_wait, woken by appends to any of its partitions, not by a timer loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import trio
from kio.schema.errors import ErrorCode

from kwire.broker import Broker, Partition
from kwire.fetch_sessions import (
    FINAL_EPOCH,
    INITIAL_EPOCH,
    INVALID_SESSION_ID,
    FetchSession,
    FetchSessionCache,
    FetchSessionError,
    PartitionKey,
    SessionPartition,
)
from kwire.handlers import RequestContext
from kwire.handlers.leadership import LeaderHints
from kwire.handlers.list_offsets import READ_COMMITTED, check_leader_epoch
from kwire.log.segment import CorruptRecordError, FileRegion
from kwire.protocol.apis import api
from kwire.protocol.fetch_response import FetchedPartition, encode_fetch_response
from kwire.quotas.manager import QuotaType
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize_cluster, authorized_names

TOPIC_IDS_VERSION = 13

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PartitionResult:
    wanted: SessionPartition
    error: ErrorCode
    records: list[FileRegion]
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    aborted_transactions: list[tuple[int, int]] | None = None
    # Of the records read: their topic and bytes (kwire_bytes_out_total).
    topic_name: str = ""
    size: int = 0

    def changed(self) -> bool:
        w = self.wanted
        return bool(
            self.records
            or self.error is not ErrorCode.none
            or self.high_watermark != w.high_watermark
            or self.last_stable_offset != w.last_stable_offset
            or self.log_start_offset != w.log_start_offset
        )


def session_cache(broker: Broker) -> FetchSessionCache:
    cache = broker.services.get("fetch_sessions")
    if cache is None:
        cache = FetchSessionCache(broker.config["max.incremental.fetch.session.cache.slots"])
        broker.services["fetch_sessions"] = cache
    return cache


def requested_partitions(request: Any, by_id: bool) -> dict[PartitionKey, SessionPartition]:
    wanted: dict[PartitionKey, SessionPartition] = {}
    for topic in request.topics:
        name = None if by_id else topic.topic
        topic_id = topic.topic_id if by_id else None
        for p in topic.partitions:
            key = (topic_id if by_id else name, p.partition)
            wanted[key] = SessionPartition(
                topic=name,
                topic_id=topic_id,
                partition=p.partition,
                fetch_offset=p.fetch_offset,
                max_bytes=p.partition_max_bytes,
                current_leader_epoch=getattr(p, "current_leader_epoch", -1),
            )
    return wanted


def resolve(broker: Broker, wanted: SessionPartition) -> tuple[Partition | None, ErrorCode]:
    if wanted.topic_id is not None:
        topic = broker.topics_by_id.get(wanted.topic_id)
        if topic is None:
            return None, ErrorCode.unknown_topic_id
    else:
        topic = broker.topics.get(wanted.topic or "")
        if topic is None:
            return None, ErrorCode.unknown_topic_or_partition
    if not 0 <= wanted.partition < len(topic.partitions):
        return None, ErrorCode.unknown_topic_or_partition
    partition = topic.partitions[wanted.partition]
    if partition is None:
        return None, ErrorCode.not_leader_or_follower  # in a cluster: no replica here
    return partition, ErrorCode.none


def resolve_in_cluster(broker: Broker, wanted: SessionPartition) -> ErrorCode:
    """Why a partition with no replica here cannot be read: it is elsewhere
    (NOT_LEADER_OR_FOLLOWER, the client refreshes its metadata) or nowhere."""
    image = broker.metadata_image
    topic = image.topic_by_id(wanted.topic_id) if wanted.topic_id is not None else image.topic(wanted.topic or "")
    if topic is None:
        return ErrorCode.unknown_topic_id if wanted.topic_id is not None else ErrorCode.unknown_topic_or_partition
    if topic.partition(wanted.partition) is None:
        return ErrorCode.unknown_topic_or_partition
    return ErrorCode.not_leader_or_follower


def read_partitions(
    broker: Broker,
    partitions: list[SessionPartition],
    max_bytes: int,
    isolation_level: int,
    replica_id: int = -1,
) -> tuple[list[PartitionResult], int, list[Partition]]:
    """Read every partition within the response budget; nothing is mutated. A
    follower (replica_id >= 0) reads up to the log end, a consumer up to the high
    watermark (read_committed: the last stable offset), from the leader only."""
    results = []
    budget = max_bytes
    total = 0
    found: list[Partition] = []
    for wanted in partitions:
        partition, error = resolve(broker, wanted)
        if partition is None:
            if broker.in_cluster and error is not ErrorCode.unknown_topic_id:
                error = resolve_in_cluster(broker, wanted)
            results.append(PartitionResult(wanted, error, []))
            continue
        found.append(partition)
        error = check_leader_epoch(partition, wanted.current_leader_epoch)
        if error is ErrorCode.none and not partition.is_leader:
            error = ErrorCode.not_leader_or_follower
        if replica_id >= 0:
            upper = partition.log_end_offset
        else:
            upper = partition.last_stable_offset if isolation_level == READ_COMMITTED else partition.high_watermark
        result = PartitionResult(
            wanted, error, [], partition.high_watermark, partition.last_stable_offset, partition.log_start_offset
        )
        results.append(result)
        if error is not ErrorCode.none:
            continue
        offset = wanted.fetch_offset
        if offset < partition.log_start_offset or offset > partition.log_end_offset:
            result.error = ErrorCode.offset_out_of_range
            continue
        if offset >= upper or budget <= 0 and total > 0:
            continue
        # Kafka returns at least one whole batch, even past the limits, but only
        # for the first partition with data, so a response stays bounded.
        try:
            read = partition.log.read(
                offset, min(wanted.max_bytes, budget), max_offset=upper, min_one_batch=total == 0
            )
        except CorruptRecordError as e:
            # As Kafka's ReplicaManager: this partition's answer is CORRUPT_MESSAGE.
            log.error("fetch of %s-%d at offset %d: corrupt record batch: %s", partition.topic.name, partition.index, offset, e)
            result.error = ErrorCode.corrupt_message
            continue
        if read.size:
            result.records = read.regions
            result.topic_name = partition.topic.name
            result.size = read.size
            if isolation_level == READ_COMMITTED:
                # Aborted transactions overlapping what is returned, from the
                # partition's own index (Kafka's .txnindex).
                result.aborted_transactions = partition.aborted_transactions(offset, upper)
            total += read.size
            budget -= read.size
    return results, total, found


@api(1)
async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    version = ctx.api_version
    by_id = version >= TOPIC_IDS_VERSION
    cache = session_cache(broker)
    session_id = getattr(request, "session_id", INVALID_SESSION_ID)
    epoch = getattr(request, "session_epoch", FINAL_EPOCH)
    wanted = requested_partitions(request, by_id)

    session: FetchSession | None = None
    incremental = False
    try:
        if session_id == INVALID_SESSION_ID:
            if epoch == INITIAL_EPOCH:
                session = cache.create()
            elif epoch != FINAL_EPOCH:
                raise FetchSessionError(ErrorCode.invalid_fetch_session_epoch)
        elif epoch == FINAL_EPOCH:
            cache.remove(session_id)
        else:
            session = cache.lookup(session_id, epoch)
            incremental = True
    except FetchSessionError as e:
        return encode_fetch_response(version, 0, e.error_code, INVALID_SESSION_ID, ())

    if incremental:
        assert session is not None
        for topic in getattr(request, "forgotten_topics_data", ()):
            topic_key = topic.topic_id if by_id else topic.topic
            for index in topic.partitions:
                session.partitions.pop((topic_key, index), None)
        for key, partition in wanted.items():
            known = session.partitions.get(key)
            if known is None:
                session.partitions[key] = partition
            else:
                known.fetch_offset = partition.fetch_offset
                known.max_bytes = partition.max_bytes
                known.current_leader_epoch = partition.current_leader_epoch
        fetching = list(session.partitions.values())
    else:
        fetching = list(wanted.values())
        if session is not None:
            session.partitions = wanted

    isolation_level = getattr(request, "isolation_level", 0)
    max_bytes = request.max_bytes if request.max_bytes > 0 else broker.config["fetch.max.bytes"]
    quotas = broker.quotas
    quota_user = ctx.principal.name
    if quotas is not None and quotas.enabled(QuotaType.FETCH):
        # A consumer never gets more than its quota admits over the windows (Kafka caps
        # max_bytes the same way), so one answer cannot throttle it for long.
        window_bytes = quotas.max_value_in_quota_window(QuotaType.FETCH, quota_user, ctx.client_id)
        if window_bytes != float("inf"):
            max_bytes = max(min(max_bytes, int(window_bytes)), 1)
    else:
        quotas = None
    deadline = trio.current_time() + max(request.max_wait.total_seconds(), 0)
    replica_id = follower_id(request, version)
    denied: list[PartitionResult] = []
    if broker.authorizer is not None:
        fetching, denied = authorize_fetch(ctx, fetching, replica_id)
    if replica_id >= 0:
        if broker.cluster is None:
            # Only brokers of this cluster fetch as replicas.
            return encode_fetch_response(version, 0, ErrorCode.not_leader_or_follower, INVALID_SESSION_ID, ())
        follower_fetched(broker, fetching, replica_id)
        isolation_level = 0
    while True:
        results, total, partitions = read_partitions(broker, fetching, max_bytes, isolation_level, replica_id)
        errors = any(r.error is not ErrorCode.none for r in results)
        # Refused partitions are answered, but only the others are waited for (none: at once).
        results += denied
        answer = [r for r in results if r.changed()] if incremental else results
        if total >= request.min_bytes or errors or (denied and not fetching) or trio.current_time() >= deadline:
            break
        if incremental and any(r.records for r in answer):
            break
        woken = trio.Event()
        for partition in partitions:
            partition.waiters.add(woken)
        try:
            with trio.move_on_at(deadline):
                await woken.wait()
        finally:
            for partition in partitions:
                partition.waiters.discard(woken)

    if quotas is not None and replica_id < 0:
        now = trio.current_time()
        throttle_ms = quotas.record_fetch(quota_user, ctx.client_id, total, now)
        if throttle_ms > 0:
            # Over consumer_byte_rate: an empty answer with the throttle time, the bytes
            # not sent un-recorded, the session's view of the client left as it was
            # (KafkaApis.handleFetchRequest, FetchContext.getThrottledResponse).
            quotas.unrecord(QuotaType.FETCH, quota_user, ctx.client_id, total, now)
            ctx.throttle_time_ms = max(ctx.throttle_time_ms, throttle_ms)
            if incremental:
                assert session is not None
                session.epoch = session.epoch + 1 if session.epoch < 2**31 - 1 else 1
                return encode_fetch_response(version, throttle_ms, ErrorCode.none, session.session_id, ())
            if session is not None:
                cache.remove(session.session_id)  # a full fetch's session begins with its data
            return encode_fetch_response(version, throttle_ms, ErrorCode.none, INVALID_SESSION_ID, ())
    if replica_id < 0:
        count_fetched(ctx, results)
    for result in results:
        w = result.wanted
        w.high_watermark = result.high_watermark
        w.last_stable_offset = result.last_stable_offset
        w.log_start_offset = result.log_start_offset
    if incremental:
        assert session is not None
        # The next request carries the next epoch (a new session expects 1).
        session.epoch = session.epoch + 1 if session.epoch < 2**31 - 1 else 1
    session_id = session.session_id if session is not None else INVALID_SESSION_ID
    hints = LeaderHints(broker, ctx.listener_name) if broker.in_cluster else None
    return encode_fetch_response(
        version, 0, ErrorCode.none, session_id, _by_topic(answer, by_id, hints),
        node_endpoints=hints.node_endpoints() if hints is not None else (),
    )


def count_fetched(ctx: RequestContext, results: list[PartitionResult]) -> None:
    """A consumer's answer in the broker's stats: bytes per topic (Kafka's BytesOutPerSec,
    which leaves followers' fetches to the replication metrics) and the first error."""
    bytes_out = ctx.broker.stats.bytes_out
    error = 0
    for result in results:
        if result.size:
            bytes_out[result.topic_name] += result.size
        elif result.error and not error:
            error = result.error
    ctx.error = error


def authorize_fetch(
    ctx: RequestContext, fetching: list[SessionPartition], replica_id: int
) -> tuple[list[SessionPartition], list[PartitionResult]]:
    """(the partitions to read, those refused): a follower needs CLUSTER_ACTION on the
    cluster, a consumer READ on each topic (KafkaApis.handleFetchRequest). A topic id
    this broker does not know stays UNKNOWN_TOPIC_ID, as its name is unknown."""
    refused = ErrorCode.topic_authorization_failed
    if replica_id >= 0:
        if authorize_cluster(ctx, AclOperation.CLUSTER_ACTION):
            return fetching, []
        return [], [PartitionResult(w, refused, []) for w in fetching]
    names = [_topic_name(ctx.broker, w) for w in fetching]
    allowed = authorized_names(ctx, AclOperation.READ, ResourceType.TOPIC, names)
    kept: list[SessionPartition] = []
    denied: list[PartitionResult] = []
    for wanted, name in zip(fetching, names, strict=True):
        if name is None or name in allowed:
            kept.append(wanted)
        else:
            denied.append(PartitionResult(wanted, refused, []))
    return kept, denied


def _topic_name(broker: Broker, wanted: SessionPartition) -> str | None:
    if wanted.topic_id is None:
        return wanted.topic
    topic = broker.topics_by_id.get(wanted.topic_id)
    if topic is not None:
        return topic.name
    found = broker.metadata_image.topic_by_id(wanted.topic_id)
    return found.name if found is not None else None


def follower_id(request: Any, version: int) -> int:
    """The fetching broker's id: replica_id before v15, ReplicaState from v15 (KIP-903)."""
    if version >= 15:
        state = getattr(request, "replica_state", None)
        return state.replica_id if state is not None else -1
    return getattr(request, "replica_id", -1)


def follower_fetched(broker: Broker, fetching: list[SessionPartition], replica_id: int) -> None:
    """The leader learns each follower's log end offset from its fetch offset."""
    assert broker.cluster is not None
    replicas = broker.cluster.replicas
    for wanted in fetching:
        partition, _ = resolve(broker, wanted)
        # Only a fetch at the current leader epoch tells the leader anything: a fenced
        # follower (cut off from ZooKeeper, say) is answered FENCED_LEADER_EPOCH instead.
        if (
            partition is not None
            and partition.is_leader
            and check_leader_epoch(partition, wanted.current_leader_epoch) is ErrorCode.none
        ):
            replicas.follower_fetched(partition, replica_id, wanted.fetch_offset)


_MOVED = (ErrorCode.not_leader_or_follower, ErrorCode.fenced_leader_epoch)


def _by_topic(
    results: list[PartitionResult], by_id: bool, hints: LeaderHints | None = None
) -> list[tuple[Any, list[FetchedPartition]]]:
    grouped: dict[Any, list[FetchedPartition]] = {}
    for r in results:
        w = r.wanted
        current_leader = None
        if hints is not None and r.error in _MOVED:
            # KIP-951: where the partition's leader is now.
            name = w.topic
            if name is None and w.topic_id is not None:
                found = hints.broker.metadata_image.topic_by_id(w.topic_id)
                name = found.name if found is not None else None
            if name is not None:
                current_leader = hints.current_leader(name, w.partition)
        grouped.setdefault(w.topic_id if by_id else w.topic, []).append(
            FetchedPartition(
                partition_index=w.partition,
                error_code=r.error,
                high_watermark=r.high_watermark,
                last_stable_offset=r.last_stable_offset,
                log_start_offset=r.log_start_offset,
                records=r.records,
                aborted_transactions=r.aborted_transactions or (),
                current_leader=current_leader,
            )
        )
    return list(grouped.items())

