"""TxnOffsetCommit (key 28), v0-4: a transactional producer commits a group's offsets,
visible in the group only once the transaction commits (pending until then).

Served by the group's coordinator, as in Kafka; when this broker is also the
transactional id's coordinator (always, on one broker) the transaction is checked too.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.coordinator.group_coordinator import group_coordinator
from kwire.coordinator.transaction_coordinator import transaction_coordinator
from kwire.handlers import RequestContext
from kwire.handlers.add_partitions_to_txn import fenced_for
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize, authorized_names


@api(28)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(28, ctx.api_version)
    offsets = {
        (t.name, p.partition_index): (p.committed_offset, getattr(p, "committed_leader_epoch", -1), p.committed_metadata)
        for t in request.topics
        for p in t.partitions
    }
    groups = group_coordinator(ctx.broker)
    transactions = transaction_coordinator(ctx.broker)
    # Per partition: refused topics; the others get the commit's error.
    requested = list(offsets)
    readable = authorized_names(ctx, AclOperation.READ, ResourceType.TOPIC, (t.name for t in request.topics))
    errors = {key: ErrorCode.topic_authorization_failed for key in requested if key[0] not in readable}
    for key in errors:
        del offsets[key]
    if not authorize(ctx, AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, request.transactional_id):
        error = ErrorCode.transactional_id_authorization_failed
        errors.clear()
    elif not authorize(ctx, AclOperation.READ, ResourceType.GROUP, request.group_id):
        error = ErrorCode.group_authorization_failed
        errors.clear()
    elif not offsets:
        error = ErrorCode.none
    elif groups is None or transactions is None:
        error = ErrorCode.coordinator_not_available
    else:
        error = groups.check(request.group_id)
        if error is None:
            error = transactions.verify_txn_offset_commit(
                request.transactional_id, request.group_id, request.producer_id, request.producer_epoch
            )
        if error is None:
            error = await groups.txn_offset_commit(
                group_id=request.group_id,
                producer_id=request.producer_id,
                producer_epoch=request.producer_epoch,
                offsets=offsets,
                member_id=getattr(request, "member_id", ""),
                group_instance_id=getattr(request, "group_instance_id", None),
                generation_id=getattr(request, "generation_id", -1),
            )
    error = fenced_for(error, ctx.api_version, 3)
    topics: dict[str, list[Any]] = {}
    for name, index in requested:
        topics.setdefault(name, []).append(
            make(module.TxnOffsetCommitResponsePartition, partition_index=index, error_code=errors.get((name, index), error))
        )
    return make(
        module.TxnOffsetCommitResponse,
        throttle_time=NO_THROTTLE,
        topics=tuple(make(module.TxnOffsetCommitResponseTopic, name=n, partitions=tuple(ps)) for n, ps in topics.items()),
    )
