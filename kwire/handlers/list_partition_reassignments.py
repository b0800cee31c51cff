"""ListPartitionReassignments (key 46, KIP-455): the reassignments in progress.

Answered by the controller from the assignment znodes it mirrors, as Kafka's
KafkaController.processListPartitionReassignments: for each partition being moved,
its full replica set (old and new), the replicas being added and those being
removed. Partitions asked for that are not being moved are left out. Another
broker answers NOT_CONTROLLER; one broker never moves anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.cluster.zk_metadata import ZkMirror
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation
from kwire.security.authorizer import authorize_cluster

NOT_CONTROLLER_MESSAGE = "This is not the correct controller for this cluster."


def ongoing(mirror: ZkMirror, wanted: set[tuple[str, int]] | None) -> dict[str, list[tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...]]]]:
    """Topic -> (partition, replicas, adding, removing) of each partition being reassigned."""
    out: dict[str, list[tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...]]]] = {}
    for topic, assignment in sorted(mirror.topics.items()):
        moving = set(assignment.adding_replicas) | set(assignment.removing_replicas)
        for index in sorted(moving):
            if wanted is not None and (topic, index) not in wanted:
                continue
            out.setdefault(topic, []).append((
                index,
                tuple(assignment.partitions.get(index, ())),
                tuple(assignment.adding_replicas.get(index, ())),
                tuple(assignment.removing_replicas.get(index, ())),
            ))
    return out


def wanted_partitions(topics: Iterable[Any] | None) -> set[tuple[str, int]] | None:
    if topics is None:
        return None
    return {(t.name, int(p)) for t in topics for p in t.partition_indexes}


@api(46)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(46, ctx.api_version)
    cluster = ctx.broker.cluster
    if not authorize_cluster(ctx, AclOperation.DESCRIBE):
        return make(
            module.ListPartitionReassignmentsResponse,
            throttle_time=NO_THROTTLE,
            error_code=ErrorCode.cluster_authorization_failed,
            error_message="Cluster authorization failed.",
            topics=(),
        )
    if cluster is not None and not cluster.controller.active:
        return make(
            module.ListPartitionReassignmentsResponse,
            throttle_time=NO_THROTTLE,
            error_code=ErrorCode.not_controller,
            error_message=NOT_CONTROLLER_MESSAGE,
            topics=(),
        )
    found = {} if cluster is None else ongoing(cluster.mirror, wanted_partitions(request.topics))
    topics = tuple(
        make(
            module.OngoingTopicReassignment,
            name=topic,
            partitions=tuple(
                make(
                    module.OngoingPartitionReassignment,
                    partition_index=index,
                    replicas=replicas,
                    adding_replicas=adding,
                    removing_replicas=removing,
                )
                for index, replicas, adding, removing in partitions
            ),
        )
        for topic, partitions in found.items()
    )
    return make(
        module.ListPartitionReassignmentsResponse,
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        error_message=None,
        topics=topics,
    )
