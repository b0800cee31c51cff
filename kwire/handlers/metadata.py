"""Metadata (key 3): brokers, the controller, topics and their partitions.

Answered from the broker's metadata image (kwire.cluster.metadata_image), as Kafka's
brokers answer from their metadata cache. Auto-creates requested topics when the
request and `auto.create.topics.enable` allow it, as Kafka does: through the broker,
then from the image it publishes.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.broker import KafkaError
from kwire.cluster.metadata_image import BrokerRegistration, MetadataImage, TopicImage
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import (
    AUTHORIZED_OPERATIONS_OMITTED,
    authorize,
    authorize_cluster,
    authorized_operations,
    cluster_authorized_operations,
)


def broker_entries(image: MetadataImage, listener_name: str, broker_class: Any) -> tuple[Any, ...]:
    """Every registered broker, as the listener the client came in on advertises it."""
    entries = []
    for registration in image.brokers.values():
        endpoint = registration.endpoint(listener_name)
        entries.append(
            make(broker_class, node_id=registration.broker_id, host=endpoint.host, port=endpoint.port, rack=registration.rack)
        )
    return tuple(entries)


def this_broker(ctx: RequestContext) -> BrokerRegistration:
    """This broker's registration in the current image."""
    registration = ctx.broker.metadata_image.broker(ctx.broker.broker_id)
    assert registration is not None  # a broker's image always holds itself
    return registration


def topic_entry(module: Any, topic: TopicImage, operations: int = AUTHORIZED_OPERATIONS_OMITTED) -> Any:
    partitions = tuple(
        make(
            module.MetadataResponsePartition,
            error_code=ErrorCode.none,
            partition_index=p.partition_index,
            leader_id=p.leader_id,
            leader_epoch=p.leader_epoch,
            replica_nodes=p.replicas,
            isr_nodes=p.isr,
            offline_replicas=p.offline_replicas,
        )
        for p in topic.partitions
    )
    return make(
        module.MetadataResponseTopic,
        error_code=ErrorCode.none,
        name=topic.name,
        topic_id=topic.topic_id,
        is_internal=topic.is_internal,
        partitions=partitions,
        topic_authorized_operations=operations,
    )


def error_entry(module: Any, name: str | None, topic_id: Any, error: ErrorCode) -> Any:
    return make(
        module.MetadataResponseTopic,
        error_code=error,
        name=name,
        topic_id=topic_id,
        is_internal=False,
        partitions=(),
        topic_authorized_operations=AUTHORIZED_OPERATIONS_OMITTED,
    )


def may_create(ctx: RequestContext, name: str) -> bool:
    """Whether an unknown topic may be auto-created by this request's principal: CREATE
    on the cluster or on the topic (only asked when auto-creation is enabled)."""
    if ctx.broker.authorizer is None or not ctx.broker.config["auto.create.topics.enable"]:
        return True
    return authorize_cluster(ctx, AclOperation.CREATE) or authorize(
        ctx, AclOperation.CREATE, ResourceType.TOPIC, name
    )


@api(3)
async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    module = response_module(3, ctx.api_version)
    include_operations = bool(getattr(request, "include_topic_authorized_operations", False))
    # v0 had no null: an empty list asked for every topic.
    all_topics = request.topics is None or (ctx.api_version == 0 and not request.topics)
    allow_auto_create = getattr(request, "allow_auto_topic_creation", True)
    entries = []
    # One image for the whole answer; replaced only when a topic is auto-created here.
    image = broker.metadata_image

    def entry(topic: TopicImage) -> Any:
        if not include_operations:
            return topic_entry(module, topic)
        return topic_entry(module, topic, authorized_operations(ctx, ResourceType.TOPIC, topic.name))

    if all_topics:
        listed = image.topics.by_name.values()
        if broker.authorizer is not None:
            # Topics one may not describe are left out.
            listed = [t for t in listed if authorize(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, t.name)]
        for topic in listed:
            entries.append(entry(topic))
    else:
        if ctx.api_version < 12 and any(t.name is None or getattr(t, "topic_id", None) is not None for t in request.topics):
            # As Kafka: v10-11 carry topic ids but may not use them, and a null
            # name there is an InvalidRequestException, answered per topic.
            from kwire.protocol.error_response import error_response

            return error_response(module.MetadataResponse, request, ErrorCode.invalid_request)
        for wanted in request.topics:
            name = wanted.name
            topic_id = getattr(wanted, "topic_id", None)
            topic: TopicImage | None
            if name is None:
                topic = image.topic_by_id(topic_id) if topic_id is not None else None
                if topic is None:
                    entries.append(error_entry(module, None, topic_id, ErrorCode.unknown_topic_id))
                    continue
                if not authorize(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, topic.name):
                    # A topic id is not secret, its name is.
                    entries.append(error_entry(module, None, topic_id, ErrorCode.topic_authorization_failed))
                    continue
            else:
                if not authorize(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, name):
                    entries.append(error_entry(module, name, None, ErrorCode.topic_authorization_failed))
                    continue
                topic = image.topic(name)
                if topic is None and allow_auto_create and not may_create(ctx, name):
                    entries.append(error_entry(module, name, None, ErrorCode.topic_authorization_failed))
                    continue
                if topic is None and broker.cluster is not None:
                    error = broker.cluster.auto_create_topic(name) if allow_auto_create else ErrorCode.unknown_topic_or_partition
                    entries.append(error_entry(module, name, None, error))
                    continue
                if topic is None:
                    try:
                        created = broker.auto_create_topic(name) if allow_auto_create else None
                    except KafkaError as e:
                        entries.append(error_entry(module, name, None, e.error_code))
                        continue
                    if created is None:
                        entries.append(error_entry(module, name, None, ErrorCode.unknown_topic_or_partition))
                        continue
                    # The broker published a new image with the topic in it.
                    image = broker.metadata_image
                    topic = image.topic(name)
                    assert topic is not None
            entries.append(entry(topic))
    return make(
        module.MetadataResponse,
        throttle_time=NO_THROTTLE,
        brokers=broker_entries(image, ctx.listener_name, module.MetadataResponseBroker),
        cluster_id=image.cluster_id,
        controller_id=image.controller_id,
        topics=tuple(entries),
        cluster_authorized_operations=cluster_authorized_operations(ctx)
        if getattr(request, "include_cluster_authorized_operations", False)
        else AUTHORIZED_OPERATIONS_OMITTED,
    )
