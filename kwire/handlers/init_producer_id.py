"""InitProducerId (key 22): a producer id and epoch for an idempotent producer.

Without a transactional id every call gets a fresh producer id at epoch 0, as
Kafka does; producer ids are unique across restarts (see Broker.next_producer_id).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize, authorize_by_resource_type, authorize_cluster


def unauthorized(ctx: RequestContext, transactional_id: str | None) -> ErrorCode | None:
    """WRITE on the transactional id; without one, IDEMPOTENT_WRITE on the cluster or
    WRITE on some topic (Kafka 3's rule, KIP-679)."""
    if transactional_id is not None:
        if not authorize(ctx, AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id):
            return ErrorCode.transactional_id_authorization_failed
    elif not authorize_cluster(ctx, AclOperation.IDEMPOTENT_WRITE) and not authorize_by_resource_type(
        ctx, AclOperation.WRITE, ResourceType.TOPIC
    ):
        return ErrorCode.cluster_authorization_failed
    return None


@api(22)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(22, ctx.api_version)
    coordinator = ctx.broker.services.get("transactions")
    refused = unauthorized(ctx, request.transactional_id)
    if refused is not None:
        return make(
            module.InitProducerIdResponse, throttle_time=NO_THROTTLE, error_code=refused, producer_id=-1, producer_epoch=-1
        )
    if request.transactional_id is not None:
        if coordinator is None:
            return make(
                module.InitProducerIdResponse,
                throttle_time=NO_THROTTLE,
                error_code=ErrorCode.coordinator_not_available,
                producer_id=-1,
                producer_epoch=-1,
            )
        return await coordinator.init_producer_id(ctx, request, module)
    return make(
        module.InitProducerIdResponse,
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        producer_id=ctx.broker.next_producer_id(),
        producer_epoch=0,
    )
