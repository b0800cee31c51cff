"""ElectLeaders (key 43): preferred (KIP-460 type 0) or unclean (type 1) leader
elections, done by the controller, as Kafka's KafkaController.processReplicaLeaderElection.

Only the controller elects. On another broker Kafka (ZooKeeper mode) answers every
partition NOT_CONTROLLER; kwire also sets the top-level error from v1 on, so that
clients look up the controller again and retry there. A successful election is
answered once this broker's metadata shows the new leader (Kafka's
DelayedElectLeader), or REQUEST_TIMED_OUT at the request's timeout. With no
partitions given, every partition is elected, and the ones that needed no election
are left out of the answer. One broker leads all its partitions already.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import trio
from kio.schema.errors import ErrorCode

from kwire.broker import Broker
from kwire.cluster.controller import Controller, StateChange
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation
from kwire.security.authorizer import authorize_cluster

PREFERRED = 0
UNCLEAN = 1

# Kafka's ApiError(error) messages: the error's own description.
_DEFAULT_MESSAGES = {
    ErrorCode.election_not_needed: "Leader election not needed for topic partition.",
    ErrorCode.unknown_topic_or_partition: "The partition does not exist.",
}

Result = tuple[ErrorCode, str | None]


def requested_partitions(broker: Broker, topic_partitions: Iterable[Any] | None) -> list[tuple[str, int]]:
    """The partitions asked for, once each, in request order; None means all of them."""
    if topic_partitions is None:
        return [
            (topic.name, p.partition_index)
            for topic in broker.metadata_image.topics.by_name.values()
            for p in topic.partitions
        ]
    return list(dict.fromkeys((t.topic, int(p)) for t in topic_partitions for p in t.partitions))


def _strategy_failed(key: tuple[str, int], strategy: str) -> str:
    # Kafka's StateChangeFailedException message.
    return f"Failed to elect leader for partition {key[0]}-{key[1]} under strategy {strategy}"


async def elect_preferred(controller: Controller, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], Result]:
    results = await controller.elect_preferred(partitions)
    return {
        key: (
            error,
            _strategy_failed(key, "PreferredReplicaPartitionLeaderElectionStrategy")
            if error is ErrorCode.preferred_leader_not_available
            else _DEFAULT_MESSAGES.get(error),
        )
        for key, error in results.items()
    }


async def elect_unclean(controller: Controller, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], Result]:
    """Kafka's OfflinePartitionLeaderElectionStrategy(allowUnclean = true) for the
    partitions without a live leader: the first live replica in the ISR, else the
    first live replica (whatever it missed is lost, as the admin asked)."""
    mirror = controller.mirror
    live = mirror.live_brokers() - controller.shutting_down
    results: dict[tuple[str, int], Result] = {}
    changes = []
    for key in partitions:
        replicas = mirror.replicas(*key)
        state = mirror.states.get(key)
        if not replicas or state is None or key[0] in mirror.deleting:
            results[key] = (ErrorCode.unknown_topic_or_partition, _DEFAULT_MESSAGES[ErrorCode.unknown_topic_or_partition])
            continue
        if state.leader >= 0 and state.leader in mirror.live_brokers():
            results[key] = (ErrorCode.election_not_needed, _DEFAULT_MESSAGES[ErrorCode.election_not_needed])
            continue
        in_sync = [r for r in replicas if r in live and r in state.isr]
        candidates = in_sync or [r for r in replicas if r in live]
        if not candidates:
            results[key] = (ErrorCode.eligible_leaders_not_available,
                            _strategy_failed(key, "OfflinePartitionLeaderElectionStrategy(true)"))
            continue
        leader = candidates[0]
        isr = tuple(r for r in state.isr if r in live) if in_sync else (leader,)
        changes.append(StateChange(key[0], key[1], leader, state.leader_epoch + 1, isr, state.zk_version,
                                   "unclean leader election by an admin"))
    await controller.write_changes(changes)
    for change in changes:
        key = (change.topic, change.partition)
        state = mirror.states.get(key)
        if state is not None and state.leader == change.leader:
            results[key] = (ErrorCode.none, None)
        else:
            results[key] = (ErrorCode.eligible_leaders_not_available,
                            _strategy_failed(key, "OfflinePartitionLeaderElectionStrategy(true)"))
    return results


async def wait_for_leaders(broker: Broker, expected: dict[tuple[str, int], int], timeout_s: float) -> set[tuple[str, int]]:
    """Wait until this broker's metadata names the elected leaders; those it does not
    by the timeout are returned."""
    waiting = dict(expected)
    with trio.move_on_after(timeout_s):
        while waiting:
            image = broker.metadata_image
            for key, leader in list(waiting.items()):
                topic = image.topic(key[0])
                state = topic.partition(key[1]) if topic is not None else None
                if state is not None and state.leader_id == leader:
                    del waiting[key]
            if waiting:
                await trio.sleep(0.01)
    return set(waiting)


async def elect(ctx: RequestContext, election_type: int, partitions: list[tuple[str, int]], timeout_s: float) -> tuple[ErrorCode, dict[tuple[str, int], Result]]:
    """(top-level error, result per partition)."""
    broker = ctx.broker
    cluster = broker.cluster
    if cluster is None:
        # One broker leads every partition it has.
        known = {(t.name, p.partition_index) for t in broker.metadata_image.topics.by_name.values() for p in t.partitions}
        return ErrorCode.none, {
            key: (ErrorCode.election_not_needed, _DEFAULT_MESSAGES[ErrorCode.election_not_needed])
            if key in known
            else (ErrorCode.unknown_topic_or_partition, _DEFAULT_MESSAGES[ErrorCode.unknown_topic_or_partition])
            for key in partitions
        }
    controller = cluster.controller
    if not controller.active:
        return ErrorCode.not_controller, {key: (ErrorCode.not_controller, None) for key in partitions}
    if election_type == PREFERRED:
        results = await elect_preferred(controller, partitions)
    elif election_type == UNCLEAN:
        results = await elect_unclean(controller, partitions)
    else:
        return ErrorCode.invalid_request, {
            key: (ErrorCode.invalid_request, f"Unknown election type {election_type}") for key in partitions
        }
    elected = {key: controller.mirror.states[key].leader for key, (error, _) in results.items() if error is ErrorCode.none}
    for key in await wait_for_leaders(broker, elected, timeout_s):
        results[key] = (ErrorCode.request_timed_out, None)
    return ErrorCode.none, results


@api(43)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(43, ctx.api_version)
    partitions = requested_partitions(ctx.broker, request.topic_partitions)
    election_type = getattr(request, "election_type", PREFERRED)  # v0 elects preferred leaders
    if not authorize_cluster(ctx, AclOperation.ALTER):
        refused = ErrorCode.cluster_authorization_failed
        named = partitions if request.topic_partitions is not None else []
        error, results = refused, {key: (refused, None) for key in named}
    else:
        error, results = await elect(ctx, election_type, partitions, request.timeout.total_seconds())
    by_topic: dict[str, list[Any]] = {}
    for (topic, index), (partition_error, message) in results.items():
        if request.topic_partitions is None and partition_error is ErrorCode.election_not_needed:
            continue  # Kafka leaves out what needed no election when all were asked for
        by_topic.setdefault(topic, []).append(
            make(module.PartitionResult, partition_id=index, error_code=partition_error, error_message=message)
        )
    return make(
        module.ElectLeadersResponse,
        throttle_time=NO_THROTTLE,
        error_code=error,
        replica_election_results=tuple(
            make(module.ReplicaElectionResult, topic=topic, partition_result=tuple(entries))
            for topic, entries in by_topic.items()
        ),
    )
