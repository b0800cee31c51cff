"""DeleteTopics (key 20): by name, or from v6 by topic id, as Kafka's controller answers.

A topic named twice in one request is refused (INVALID_REQUEST) and not deleted;
unknown names get UNKNOWN_TOPIC_OR_PARTITION, unknown ids UNKNOWN_TOPIC_ID.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.broker import KafkaError
from kwire.cluster.metadata_image import TopicImage
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.handlers.controller_mutations import THROTTLING_QUOTA_EXCEEDED_MESSAGE, mutation_refused
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize

# Kafka's default messages of these errors (ApiError without a message of its own).
UNKNOWN_TOPIC_MESSAGE = "This server does not host this topic-partition."
UNKNOWN_TOPIC_ID_MESSAGE = "This server does not host this topic ID."


def _requested(request: Any) -> list[tuple[str | None, uuid.UUID | None]]:
    """(name, id) pairs asked for; the zero id reads as None."""
    if hasattr(request, "topics"):
        return [
            (
                topic.name,
                None if topic.topic_id is None or topic.topic_id.int == 0 else topic.topic_id,
            )
            for topic in request.topics
        ]
    return [(name, None) for name in request.topic_names]


@api(20)
async def handle(ctx: RequestContext, request: Any) -> Any:
    broker = ctx.broker
    module = response_module(20, ctx.api_version)
    requested = _requested(request)
    results: list[Any] = []

    def answer(
        name: str | None, topic_id: uuid.UUID | None, error: ErrorCode, message: str | None = None
    ) -> None:
        results.append(
            make(
                module.DeletableTopicResult,
                name=name,
                topic_id=topic_id,
                error_code=error,
                error_message=message,
            )
        )

    if not broker.config["delete.topic.enable"]:
        disabled = (
            (ErrorCode.invalid_request, "Topic deletion is disabled.")
            if ctx.api_version < 3
            else (ErrorCode.topic_deletion_disabled, "Topic deletion is disabled.")
        )
        for name, topic_id in requested:
            answer(name, topic_id, *disabled)
        return make(
            module.DeleteTopicsResponse, throttle_time=NO_THROTTLE, responses=tuple(results)
        )

    names = Counter(name for name, topic_id in requested if topic_id is None)
    ids = Counter(topic_id for name, topic_id in requested if name is None)
    duplicates_answered: set[str | uuid.UUID] = set()
    found: list[TopicImage] = []
    for name, topic_id in requested:
        if name is None and topic_id is None:
            answer(
                None, None, ErrorCode.invalid_request, "Neither topic name nor id were specified."
            )
            continue
        if name is not None and topic_id is not None:
            answer(
                name,
                topic_id,
                ErrorCode.invalid_request,
                "You may not specify both topic name and topic id.",
            )
            continue
        key: str | uuid.UUID = name if name is not None else topic_id  # type: ignore[assignment]
        if (names[name] if name is not None else ids[topic_id]) > 1:
            if key not in duplicates_answered:
                duplicates_answered.add(key)
                what = "name" if name is not None else "id"
                answer(name, topic_id, ErrorCode.invalid_request, f"Duplicate topic {what}.")
            continue
        if name is not None and not authorize(ctx, AclOperation.DELETE, ResourceType.TOPIC, name):
            answer(name, None, ErrorCode.topic_authorization_failed)
            continue
        # The cluster's topics, not only those with a replica here.
        image = broker.metadata_image
        topic = image.topic(name) if name is not None else image.topic_by_id(topic_id)  # type: ignore[arg-type]
        if topic is None:
            if name is not None:
                answer(name, None, ErrorCode.unknown_topic_or_partition, UNKNOWN_TOPIC_MESSAGE)
            else:
                answer(None, topic_id, ErrorCode.unknown_topic_id, UNKNOWN_TOPIC_ID_MESSAGE)
            continue
        if name is None:
            # By id: without DESCRIBE the name stays unsaid (the id is not secret).
            if not authorize(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, topic.name):
                answer(None, topic_id, ErrorCode.topic_authorization_failed)
                continue
            if not authorize(ctx, AclOperation.DELETE, ResourceType.TOPIC, topic.name):
                answer(topic.name, topic_id, ErrorCode.topic_authorization_failed)
                continue
        found.append(topic)
    # Every topic is looked up before any is deleted: one named both by name and
    # by id is deleted once, and both get the answer.
    outcome: dict[str, tuple[ErrorCode, str | None]] = {}
    for topic in found:
        if topic.name not in outcome and mutation_refused(ctx, len(topic.partitions)):
            outcome[topic.name] = (ErrorCode.throttling_quota_exceeded, THROTTLING_QUOTA_EXCEEDED_MESSAGE)
        if topic.name not in outcome:
            try:
                if broker.cluster is not None:
                    if topic.is_internal:
                        raise KafkaError(ErrorCode.invalid_request, f"Internal topic {topic.name} cannot be deleted")
                    await broker.cluster.delete_topic(topic.name, wait_seconds=request.timeout.total_seconds())
                else:
                    # Folders renamed away in a worker thread, removed after the answer.
                    await broker.delete_topic_async(topic.name)
                outcome[topic.name] = (ErrorCode.none, None)
            except KafkaError as e:
                outcome[topic.name] = (e.error_code, e.message)
        answer(topic.name, topic.topic_id, *outcome[topic.name])
    return make(module.DeleteTopicsResponse, throttle_time=NO_THROTTLE, responses=tuple(results))
