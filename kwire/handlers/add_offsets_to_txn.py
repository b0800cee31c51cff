"""AddOffsetsToTxn (key 25), v0-4: a producer adds a group's offsets partition
(`__consumer_offsets`) to its transaction, before TxnOffsetCommit."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.coordinator.transaction_coordinator import transaction_coordinator
from kwire.handlers import RequestContext
from kwire.handlers.add_partitions_to_txn import fenced_for
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize


@api(25)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(25, ctx.api_version)
    coordinator = transaction_coordinator(ctx.broker)
    if not authorize(ctx, AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, request.transactional_id):
        error = ErrorCode.transactional_id_authorization_failed
    elif not authorize(ctx, AclOperation.READ, ResourceType.GROUP, request.group_id):
        error = ErrorCode.group_authorization_failed
    elif coordinator is None:
        error = ErrorCode.coordinator_not_available
    else:
        error = await coordinator.add_offsets(request.transactional_id, request.producer_id, request.producer_epoch, request.group_id)
    return make(module.AddOffsetsToTxnResponse, throttle_time=NO_THROTTLE, error_code=fenced_for(error, ctx.api_version, 2))
