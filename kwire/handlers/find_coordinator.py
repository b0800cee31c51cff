"""FindCoordinator (key 10): which broker coordinates a group (or a transaction).

v0-3 ask for one key, v4+ for a batch. A group's coordinator is the leader of its
`__consumer_offsets` partition: this broker, which creates the topic on first use, as
Kafka does. Transactional ids (key type 1) get COORDINATOR_NOT_AVAILABLE until a
transaction coordinator attaches itself as the broker's "transactions" service. The
coordinator's endpoint comes from the broker's metadata image.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.coordinator.group_coordinator import group_coordinator, partition_for
from kwire.errors import KafkaError
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.handlers.metadata import this_broker
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize

KEY_TYPE_GROUP = 0
KEY_TYPE_TRANSACTION = 1


def coordinator_node(ctx: RequestContext) -> tuple[int, str, int]:
    """(node id, host, port) of the coordinator, as the listener the client came in on
    advertises it. One broker leads every partition of the coordinators' topics, so it
    is this broker's registration; with a cluster it will be the leader of the key's
    partition in the image."""
    registration = this_broker(ctx)
    endpoint = registration.endpoint(ctx.listener_name)
    return registration.broker_id, endpoint.host, endpoint.port


def find_in_cluster(ctx: RequestContext, key: str, key_type: int) -> tuple[ErrorCode, str | None, tuple[int, str, int]]:
    """In a cluster: the leader of the key's partition of the coordinator's topic, as
    the image says; the topic is created on first use."""
    broker = ctx.broker
    if key_type == KEY_TYPE_GROUP:
        coordinator = group_coordinator(broker)
        name = "__consumer_offsets"
    elif key_type == KEY_TYPE_TRANSACTION:
        coordinator = broker.services.get("transactions")
        name = "__transaction_state"
    else:
        return ErrorCode.invalid_request, f"Unknown key type {key_type}", NO_NODE
    if coordinator is None:
        return ErrorCode.coordinator_not_available, "The coordinator is not available.", NO_NODE
    topic = broker.metadata_image.topic(name)
    if topic is None:
        try:
            coordinator.ensure_offsets_topic() if key_type == KEY_TYPE_GROUP else coordinator.ensure_topic()
        except KafkaError:
            pass  # created in the background
        return ErrorCode.coordinator_not_available, "The coordinator is not available.", NO_NODE
    state = topic.partition(partition_for(key, len(topic.partitions)))
    registration = broker.metadata_image.broker(state.leader_id) if state is not None else None
    if registration is None:
        return ErrorCode.coordinator_not_available, "The coordinator is not available.", NO_NODE
    endpoint = registration.endpoint(ctx.listener_name)
    return ErrorCode.none, None, (registration.broker_id, endpoint.host, endpoint.port)


NO_NODE = (-1, "", -1)


def find(ctx: RequestContext, key: str, key_type: int) -> tuple[ErrorCode, str | None]:
    if key_type == KEY_TYPE_GROUP:
        coordinator = group_coordinator(ctx.broker)
        if coordinator is None or not coordinator.active:
            return ErrorCode.coordinator_not_available, None
        coordinator.ensure_offsets_topic()
        return ErrorCode.none, None
    if key_type == KEY_TYPE_TRANSACTION:
        coordinator = ctx.broker.services.get("transactions")
        if coordinator is not None and getattr(coordinator, "active", True):
            coordinator.ensure_topic()
            return ErrorCode.none, None
        return ErrorCode.coordinator_not_available, "The coordinator is not available."
    return ErrorCode.invalid_request, f"Unknown key type {key_type}"


def unauthorized(ctx: RequestContext, key: str, key_type: int) -> ErrorCode | None:
    """DESCRIBE on the group or transactional id is needed to find its coordinator."""
    if key_type == KEY_TYPE_GROUP and not authorize(ctx, AclOperation.DESCRIBE, ResourceType.GROUP, key):
        return ErrorCode.group_authorization_failed
    if key_type == KEY_TYPE_TRANSACTION and not authorize(
        ctx, AclOperation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, key
    ):
        return ErrorCode.transactional_id_authorization_failed
    return None


@api(10)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(10, ctx.api_version)
    key_type = getattr(request, "key_type", KEY_TYPE_GROUP)
    node_id, host, port = coordinator_node(ctx)
    if ctx.api_version >= 4:
        coordinators = []
        for key in request.coordinator_keys:
            refused = unauthorized(ctx, key, key_type)
            if refused is not None:
                error, message = refused, None
            elif ctx.broker.cluster is not None:
                error, message, (node_id, host, port) = find_in_cluster(ctx, key, key_type)
            else:
                error, message = find(ctx, key, key_type)
            ok = error is ErrorCode.none
            coordinators.append(
                make(
                    module.Coordinator,
                    key=key,
                    node_id=node_id if ok else -1,
                    host=host if ok else "",
                    port=port if ok else -1,
                    error_code=error,
                    error_message=None if ok else message or error.name,
                )
            )
        return make(module.FindCoordinatorResponse, throttle_time=NO_THROTTLE, coordinators=tuple(coordinators))
    refused = unauthorized(ctx, request.key, key_type)
    if refused is not None:
        error, message = refused, None
    elif ctx.broker.cluster is not None:
        error, message, (node_id, host, port) = find_in_cluster(ctx, request.key, key_type)
    else:
        error, message = find(ctx, request.key, key_type)
    ok = error is ErrorCode.none
    return make(
        module.FindCoordinatorResponse,
        throttle_time=NO_THROTTLE,
        error_code=error,
        error_message=None if ok else message or error.name,
        node_id=node_id if ok else -1,
        host=host if ok else "",
        port=port if ok else -1,
    )
