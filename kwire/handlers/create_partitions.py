"""CreatePartitions (key 37): raise a topic's partition count, as Kafka's controller does.

New partitions get this broker as their one replica; a manual assignment must
say so. validate_only checks everything and changes nothing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.broker import Broker, KafkaError, check_partitions_per_request
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.handlers.controller_mutations import THROTTLING_QUOTA_EXCEEDED_MESSAGE, mutation_refused
from kwire.handlers.create_topics import check_manual_assignment
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorized_names


async def create_partitions(broker: Broker, wanted: Any, validate_only: bool, timeout_s: float) -> None:
    # The cluster's view: in a cluster not every partition has a replica here.
    topic = broker.metadata_image.topic(wanted.name)
    if topic is None:
        # Kafka answers this one without a message.
        raise KafkaError(ErrorCode.unknown_topic_or_partition)
    current = len(topic.partitions)
    if wanted.count == current:
        raise KafkaError(ErrorCode.invalid_partitions, f"Topic already has {current} partition(s).")
    if wanted.count < current:
        raise KafkaError(
            ErrorCode.invalid_partitions,
            f"The topic {wanted.name} currently has {current} partition(s); {wanted.count} would not be an increase.",
        )
    additional = wanted.count - current
    if wanted.assignments is not None:
        if len(wanted.assignments) != additional:
            raise KafkaError(
                ErrorCode.invalid_replica_assignment,
                f"Attempted to add {additional} additional partition(s), "
                f"but only {len(wanted.assignments)} assignment(s) were specified.",
            )
    replication_factor = len(topic.partitions[0].replicas) if topic.partitions else 1
    if wanted.assignments is not None:
        for assignment in wanted.assignments:
            # New partitions keep the topic's replication factor.
            check_manual_assignment(broker, assignment.broker_ids, replication_factor)
    if broker.cluster is None:
        # The new partitions' folders and files are made in a worker thread.
        await broker.create_partitions_async(wanted.name, wanted.count, validate_only=validate_only)
        return
    if wanted.assignments is not None:
        new = {current + i: tuple(a.broker_ids) for i, a in enumerate(wanted.assignments)}
    else:
        new = broker.cluster.assign(additional, replication_factor, start_partition=current)
    if not validate_only:
        await broker.cluster.add_partitions(wanted.name, new, wait_seconds=timeout_s)


def _new_partitions(broker: Broker, wanted: Any) -> int:
    topic = broker.metadata_image.topic(wanted.name)
    return max(wanted.count - (len(topic.partitions) if topic else 0), 0)


@api(37)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(37, ctx.api_version)
    counts = Counter(topic.name for topic in request.topics)
    answered: set[str] = set()
    results = []
    try:
        check_partitions_per_request(sum(_new_partitions(ctx.broker, t) for t in request.topics))
    except KafkaError as e:
        refused = tuple(
            make(module.CreatePartitionsTopicResult, name=name, error_code=e.error_code, error_message=e.message)
            for name in counts
        )
        return make(module.CreatePartitionsResponse, throttle_time=NO_THROTTLE, results=refused)
    alterable = authorized_names(ctx, AclOperation.ALTER, ResourceType.TOPIC, counts)
    for wanted in request.topics:
        if wanted.name in answered:
            continue
        answered.add(wanted.name)
        error, message = ErrorCode.none, None
        if counts[wanted.name] > 1:
            error, message = ErrorCode.invalid_request, "Duplicate topic name."
        elif wanted.name not in alterable:
            error = ErrorCode.topic_authorization_failed
        elif not request.validate_only and mutation_refused(ctx, _new_partitions(ctx.broker, wanted)):
            error, message = ErrorCode.throttling_quota_exceeded, THROTTLING_QUOTA_EXCEEDED_MESSAGE
        else:
            try:
                await create_partitions(ctx.broker, wanted, request.validate_only, request.timeout.total_seconds())
            except KafkaError as e:
                error, message = e.error_code, e.message
        results.append(
            make(
                module.CreatePartitionsTopicResult,
                name=wanted.name,
                error_code=error,
                error_message=message,
            )
        )
    return make(module.CreatePartitionsResponse, throttle_time=NO_THROTTLE, results=tuple(results))
