"""AlterPartitionReassignments (key 45, KIP-455): move partitions to other replicas,
or (replicas null) cancel a move in progress.

The controller starts each reassignment and completes it later, once the target
replicas are in sync (kwire.cluster.controller.Controller.reassign); the answer
says only whether it was accepted, as Kafka's does. Another broker answers
NOT_CONTROLLER. One broker can only be reassigned onto itself: a no-op that
completes at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.broker import Broker
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation
from kwire.security.authorizer import authorize_cluster

Target = tuple[int, ...] | None
Result = tuple[ErrorCode, str | None]

# Kafka's ApiError(error) messages: the error's own description.
_DEFAULT_MESSAGES = {
    ErrorCode.no_reassignment_in_progress: "No partition reassignment is in progress.",
    ErrorCode.unknown_topic_or_partition: "The partition does not exist.",
    ErrorCode.not_controller: "This is not the correct controller for this cluster.",
}


def requested_targets(topics: Iterable[Any]) -> dict[tuple[str, int], Target]:
    """Target replicas per partition; a partition named twice keeps its last target
    (Kafka builds a map)."""
    return {
        (topic.name, int(p.partition_index)): None if p.replicas is None else tuple(int(r) for r in p.replicas)
        for topic in topics
        for p in topic.partitions
    }


def invalid_replicas(replicas: tuple[int, ...]) -> str | None:
    """Kafka's KafkaController.validateReplicas checks that need no cluster state."""
    if not replicas:
        return "Empty replica list specified in partition reassignment."
    if len(set(replicas)) != len(replicas):
        return f"Duplicate replica ids in partition reassignment replica list: {list(replicas)}"
    if any(r < 0 for r in replicas):
        return f"Invalid broker id in replica list: {list(replicas)}"
    return None


def parse_result(result: str | None) -> Result:
    """The controller's answer, None or "ERROR_NAME[: message]", as error and message."""
    if result is None:
        return ErrorCode.none, None
    name, _, message = result.partition(":")
    try:
        error = ErrorCode[name.strip().lower()]
    except KeyError:
        return ErrorCode.unknown_server_error, result
    return error, message.strip() or _DEFAULT_MESSAGES.get(error)


def single_broker_result(broker: Broker, key: tuple[str, int], target: Target) -> Result:
    """One broker holds the one replica of each partition: the only valid target is
    [this broker], and there is never a reassignment to cancel."""
    topic = broker.metadata_image.topic(key[0])
    if target is None:
        return ErrorCode.no_reassignment_in_progress, _DEFAULT_MESSAGES[ErrorCode.no_reassignment_in_progress]
    not_alive = [r for r in target if r != broker.broker_id]
    if not_alive:
        return (
            ErrorCode.invalid_replica_assignment,
            f"Replica assignment has brokers that are not alive. Replica list: {not_alive}, "
            f"live broker list: [{broker.broker_id}]",
        )
    if topic is None or topic.partition(key[1]) is None:
        return ErrorCode.unknown_topic_or_partition, _DEFAULT_MESSAGES[ErrorCode.unknown_topic_or_partition]
    return ErrorCode.none, None


async def reassign(broker: Broker, targets: dict[tuple[str, int], Target]) -> dict[tuple[str, int], Result]:
    results: dict[tuple[str, int], Result] = {}
    valid: dict[tuple[str, int], Target] = {}
    for key, target in targets.items():
        message = invalid_replicas(target) if target is not None else None
        if message is not None:
            results[key] = (ErrorCode.invalid_replica_assignment, message)
        else:
            valid[key] = target
    if broker.cluster is None:
        results.update({key: single_broker_result(broker, key, target) for key, target in valid.items()})
    elif valid:
        answers = await broker.cluster.controller.reassign(valid)
        results.update({key: parse_result(answers.get(key)) for key in valid})
    # In request order.
    return {key: results[key] for key in targets}


@api(45)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(45, ctx.api_version)
    cluster = ctx.broker.cluster
    if not authorize_cluster(ctx, AclOperation.ALTER):
        refused = ErrorCode.cluster_authorization_failed
        by_topic_refused: dict[str, list[Any]] = {}
        for topic, index in requested_targets(request.topics):
            by_topic_refused.setdefault(topic, []).append(
                make(module.ReassignablePartitionResponse, partition_index=index, error_code=refused, error_message=None)
            )
        return make(
            module.AlterPartitionReassignmentsResponse,
            throttle_time=NO_THROTTLE,
            error_code=refused,
            error_message=_DEFAULT_MESSAGES.get(refused, "Cluster authorization failed."),
            responses=tuple(
                make(module.ReassignableTopicResponse, name=topic, partitions=tuple(partitions))
                for topic, partitions in by_topic_refused.items()
            ),
        )
    if cluster is not None and not cluster.controller.active:
        # Kafka: the whole request fails, so the client finds the controller and retries.
        return make(
            module.AlterPartitionReassignmentsResponse,
            throttle_time=NO_THROTTLE,
            error_code=ErrorCode.not_controller,
            error_message=_DEFAULT_MESSAGES[ErrorCode.not_controller],
            responses=(),
        )
    results = await reassign(ctx.broker, requested_targets(request.topics))
    by_topic: dict[str, list[Any]] = {}
    for (topic, index), (error, message) in results.items():
        by_topic.setdefault(topic, []).append(
            make(module.ReassignablePartitionResponse, partition_index=index, error_code=error, error_message=message)
        )
    return make(
        module.AlterPartitionReassignmentsResponse,
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        error_message=None,
        responses=tuple(
            make(module.ReassignableTopicResponse, name=topic, partitions=tuple(partitions))
            for topic, partitions in by_topic.items()
        ),
    )
