"""OffsetFetch (key 9), v1-9: committed offsets of a group (v8+: of several groups).

A null topic list (v2+) asks for every committed offset of the group. Partitions
without a commit answer offset -1 with no error. Commits are appended before they
are answered; only a transaction's TxnOffsetCommit is pending until the transaction
ends, and require_stable (v7+) answers UNSTABLE_OFFSET_COMMIT for it meanwhile.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.coordinator.group import OffsetAndMetadata
from kwire.coordinator.group_coordinator import group_coordinator
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize, authorized_names

INVALID_OFFSET = -1
NO_METADATA = ""


def fetch(
    ctx: RequestContext, group_id: str, topics: Any, require_stable: bool
) -> tuple[ErrorCode, dict[str, list[tuple[int, OffsetAndMetadata | None, ErrorCode]]]]:
    """(group error, per topic [(partition, committed or None, error)]) in request order.
    With require_stable, a partition with a transactional commit pending answers
    UNSTABLE_OFFSET_COMMIT (the client retries)."""
    wanted = None if topics is None else [(t.name, p) for t in topics for p in t.partition_indexes]
    coordinator = group_coordinator(ctx.broker)
    if not authorize(ctx, AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
        error, found = ErrorCode.group_authorization_failed, {}
    elif coordinator is None:
        error, found = ErrorCode.coordinator_not_available, {}
    else:
        error, found = coordinator.fetch_offsets(group_id, wanted, require_stable)
    unstable = coordinator.pending_offset_partitions(group_id) if require_stable and coordinator is not None else set()
    by_topic: dict[str, list[tuple[int, OffsetAndMetadata | None, ErrorCode]]] = {}
    entries = list(found.items() if wanted is None else ((tp, found.get(tp)) for tp in wanted))
    # DESCRIBE on each topic: all of the group's offsets leave the others out, named
    # partitions answer TOPIC_AUTHORIZATION_FAILED (KafkaApis.handleOffsetFetchRequest).
    described = authorized_names(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, (t for (t, _), _ in entries))
    for (topic, index), committed in entries:
        if topic not in described:
            if wanted is not None:
                by_topic.setdefault(topic, []).append((index, None, ErrorCode.topic_authorization_failed))
        elif (topic, index) in unstable:
            by_topic.setdefault(topic, []).append((index, None, ErrorCode.unstable_offset_commit))
        else:
            by_topic.setdefault(topic, []).append((index, committed, ErrorCode.none))
    return error, by_topic


def _partition(cls: type, index: int, committed: OffsetAndMetadata | None, error: ErrorCode) -> Any:
    return make(
        cls,
        partition_index=index,
        committed_offset=INVALID_OFFSET if committed is None else committed.offset,
        committed_leader_epoch=-1 if committed is None else committed.leader_epoch,
        metadata=NO_METADATA if committed is None else committed.metadata,
        error_code=error,
    )


@api(9)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(9, ctx.api_version)
    require_stable = bool(getattr(request, "require_stable", False))
    if ctx.api_version >= 8:
        groups = []
        for group in request.groups:
            error, by_topic = fetch(ctx, group.group_id, group.topics, require_stable)
            topics = tuple(
                make(
                    module.OffsetFetchResponseTopics,
                    name=name,
                    partitions=tuple(
                        _partition(module.OffsetFetchResponsePartitions, i, c, e) for i, c, e in entries
                    ),
                )
                for name, entries in by_topic.items()
            ) if error is ErrorCode.none else ()
            groups.append(make(module.OffsetFetchResponseGroup, group_id=group.group_id, topics=topics, error_code=error))
        return make(module.OffsetFetchResponse, throttle_time=NO_THROTTLE, groups=tuple(groups))
    error, by_topic = fetch(ctx, request.group_id, request.topics, require_stable)
    if error is not ErrorCode.none and ctx.api_version >= 2:
        by_topic = {}
    # v1 has no group-level error: each partition carries it.
    partition_error = error if ctx.api_version < 2 else ErrorCode.none
    topics = tuple(
        make(
            module.OffsetFetchResponseTopic,
            name=name,
            partitions=tuple(
                _partition(module.OffsetFetchResponsePartition, i, None if error is not ErrorCode.none else c, partition_error if error is not ErrorCode.none else e)
                for i, c, e in entries
            ),
        )
        for name, entries in by_topic.items()
    )
    return make(module.OffsetFetchResponse, throttle_time=NO_THROTTLE, topics=topics, error_code=error)
