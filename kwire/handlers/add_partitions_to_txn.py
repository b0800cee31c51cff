"""AddPartitionsToTxn (key 24), v0-3: a producer adds partitions to its transaction.

v4+ is the broker-to-broker batched form (transaction verification), not served:
on one broker, Produce checks its transaction directly. PRODUCER_FENCED is
INVALID_PRODUCER_EPOCH for v0-1, which predate it (KIP-588).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.coordinator.transaction_coordinator import transaction_coordinator
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize, authorized_names


def fenced_for(error: ErrorCode, version: int, first_version: int) -> ErrorCode:
    """PRODUCER_FENCED as clients older than `first_version` know it."""
    if error is ErrorCode.producer_fenced and version < first_version:
        return ErrorCode.invalid_producer_epoch
    return error


@api(24)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(24, ctx.api_version)
    partitions = [(t.name, int(p)) for t in request.v3_and_below_topics for p in t.partitions]
    coordinator = transaction_coordinator(ctx.broker)
    writable = authorized_names(ctx, AclOperation.WRITE, ResourceType.TOPIC, (t for t, _ in partitions))
    if not authorize(ctx, AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, request.v3_and_below_transactional_id):
        results = {tp: ErrorCode.transactional_id_authorization_failed for tp in partitions}
    elif any(t not in writable for t, _ in partitions):
        # Nothing is added when a topic may not be written (the others: not attempted).
        results = {
            (t, i): ErrorCode.operation_not_attempted if t in writable else ErrorCode.topic_authorization_failed
            for t, i in partitions
        }
    elif coordinator is None:
        results = {tp: ErrorCode.coordinator_not_available for tp in partitions}
    else:
        results = await coordinator.add_partitions(
            request.v3_and_below_transactional_id,
            request.v3_and_below_producer_id,
            request.v3_and_below_producer_epoch,
            partitions,
        )
    by_topic: dict[str, list[Any]] = {}
    for (topic, index), error in results.items():
        by_topic.setdefault(topic, []).append(
            make(
                module.AddPartitionsToTxnPartitionResult,
                partition_index=index,
                partition_error_code=fenced_for(error, ctx.api_version, 2),
            )
        )
    return make(
        module.AddPartitionsToTxnResponse,
        throttle_time=NO_THROTTLE,
        results_by_topic_v3_and_below=tuple(
            make(module.AddPartitionsToTxnTopicResult, name=name, results_by_partition=tuple(parts))
            for name, parts in by_topic.items()
        ),
    )
