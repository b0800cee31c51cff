"""TxnOffsetCommit (key 28), v0-4: a transactional producer commits a group's offsets,
visible in the group only once the transaction commits (pending until then)."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.coordinator.transaction_coordinator import transaction_coordinator
from kwire.handlers import RequestContext
from kwire.handlers.add_partitions_to_txn import fenced_for
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module


@api(28)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(28, ctx.api_version)
    offsets = {
        (t.name, p.partition_index): (p.committed_offset, getattr(p, "committed_leader_epoch", -1), p.committed_metadata)
        for t in request.topics
        for p in t.partitions
    }
    coordinator = transaction_coordinator(ctx.broker)
    if coordinator is None:
        error = ErrorCode.coordinator_not_available
    else:
        error = coordinator.txn_offset_commit(
            request.transactional_id, request.group_id, request.producer_id, request.producer_epoch, offsets,
            member_id=getattr(request, "member_id", ""),
            generation_id=getattr(request, "generation_id", -1),
        )
    error = fenced_for(error, ctx.api_version, 3)
    topics: dict[str, list[Any]] = {}
    for name, index in offsets:
        topics.setdefault(name, []).append(make(module.TxnOffsetCommitResponsePartition, partition_index=index, error_code=error))
    return make(
        module.TxnOffsetCommitResponse,
        throttle_time=NO_THROTTLE,
        topics=tuple(make(module.TxnOffsetCommitResponseTopic, name=n, partitions=tuple(ps)) for n, ps in topics.items()),
    )
