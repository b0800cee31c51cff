"""Controlled shutdown (Kafka's ControlledShutdown, ZooKeeper mode): leadership moves
off a broker before it stops, so that its clients see only retriable errors.

Two sides, as in Kafka:

- the controller's (`shut_down_broker`, Kafka's KafkaController.doControlledShutdown):
  the broker joins the controller's `shutting_down` set, so the controller's
  reconciliation (`controller.plan`) elects another ISR member for each partition it
  leads and drops it from every ISR; this waits, bounded, until that is done and
  answers the partitions it still leads (no other ISR member could take them);
- the stopping broker's (`request_controlled_shutdown`, Kafka's
  KafkaServer.controlledShutdown): ControlledShutdown to the controller, retried
  `controlled.shutdown.max.retries` times `controlled.shutdown.retry.backoff.ms` apart
  while partitions remain or the controller moves; then a wait until the replica
  manager has seen the new leaders (ZooKeeper's watches bring them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import trio
from kio.schema.errors import ErrorCode

from kwire.cluster import zk_layout as layout
from kwire.cluster.broker_client import BrokerConnectionError
from kwire.cluster.zk import ZkTimeout, ZookeeperError
from kwire.cluster.zk_metadata import ZkMirror
from kwire.errors import KafkaError
from kwire.protocol import controlled_shutdown as codec
from kwire.protocol.headers import MalformedRequest

if TYPE_CHECKING:
    from kwire.cluster.controller import Controller
    from kwire.cluster.node import ClusterNode

log = logging.getLogger(__name__)

# How long the controller waits for leadership to move before it answers with what is
# left (Kafka answers once its synchronous elections are written; here they are
# written by the reconciliation task, and this bounds the wait for them).
CONTROLLER_WAIT_SECONDS = 5.0
# How often the waits look again, besides being woken by a reconciliation.
_POLL_SECONDS = 0.05

Partitions = list[tuple[str, int]]


# ---- the controller's side --------------------------------------------------------------


def _blocking(mirror: ZkMirror, broker_id: int, eligible: frozenset[int]) -> Partitions:
    """Partitions the controller can still act on for `broker_id`'s shutdown: led by it
    while another eligible (live, not shutting down) ISR member could lead, or led by an
    eligible broker with it still in the ISR. Mirrors what `controller.plan` changes."""
    out: Partitions = []
    for topic, assignment in mirror.topics.items():
        if topic in mirror.deleting:
            continue
        for index, replicas in assignment.partitions.items():
            state = mirror.states.get((topic, index))
            if state is None:
                continue
            if state.leader == broker_id:
                if any(r != broker_id and r in eligible and r in state.isr for r in replicas):
                    out.append((topic, index))
            elif state.leader in eligible and broker_id in state.isr:
                out.append((topic, index))
    return out


def _writes_in_flight(controller: Controller) -> bool:
    # The controller's partition state writes started and not yet landed.
    return bool(controller._writing)


def led_partitions(mirror: ZkMirror, broker_id: int) -> Partitions:
    """Kafka's replicatedPartitionsBrokerLeads: partitions `broker_id` leads that have
    more than one replica (one without another replica cannot move, and is not
    reported)."""
    return sorted(
        (topic, index)
        for topic, assignment in mirror.topics.items()
        if topic not in mirror.deleting
        for index, replicas in assignment.partitions.items()
        if len(replicas) > 1
        and (state := mirror.states.get((topic, index))) is not None
        and state.leader == broker_id
    )


async def shut_down_broker(
    node: ClusterNode, broker_id: int, broker_epoch: int = codec.UNKNOWN_BROKER_EPOCH,
    *, wait_seconds: float = CONTROLLER_WAIT_SECONDS,
) -> Partitions:
    """On the active controller: move leadership off `broker_id` and out of its ISRs;
    the partitions it still leads after at most `wait_seconds`.

    KafkaError NOT_CONTROLLER if this broker is not (or stops being) the controller,
    BROKER_NOT_AVAILABLE if `broker_id` is not registered, STALE_BROKER_EPOCH if
    `broker_epoch` is older than its registration's (the czxid of /brokers/ids/<id>).
    """
    controller, mirror = node.controller, node.mirror
    if not controller.active:
        raise KafkaError(ErrorCode.not_controller, f"broker {node.broker_id} is not the controller")
    if broker_epoch != codec.UNKNOWN_BROKER_EPOCH:
        _, stat = await node.session.get_or_none(layout.broker_path(broker_id))
        if stat is not None and broker_epoch < stat.czxid:
            raise KafkaError(
                ErrorCode.stale_broker_epoch,
                f"broker {broker_id} epoch {broker_epoch} is older than its registration's, {stat.czxid}",
            )
    if broker_id not in mirror.brokers:
        raise KafkaError(ErrorCode.broker_not_available, f"broker {broker_id} is not registered")
    if broker_id not in controller.shutting_down:
        log.info("controller: broker %d asks for a controlled shutdown", broker_id)
    controller.shutting_down.add(broker_id)
    controller.poke()
    with trio.move_on_after(wait_seconds):
        # A pass that plans with this broker shutting down (a pass runs without
        # yielding, so the next one to end began after the poke).
        await controller.reconciled.wait()
        while True:
            if not controller.active:
                raise KafkaError(ErrorCode.not_controller, f"broker {node.broker_id} lost the controller seat")
            if broker_id not in controller.shutting_down:
                break  # it left (or registered again) meanwhile: nothing more to move
            # Writes in flight may have been planned before this broker (or another)
            # joined `shutting_down`: they can still give it leadership, so the answer
            # waits for them (Kafka's controller serialises this on its event thread).
            eligible = mirror.live_brokers() - controller.shutting_down
            if not _writes_in_flight(controller) and not _blocking(mirror, broker_id, eligible):
                break
            # Each state written pokes another pass, which ends with `reconciled`. The
            # poll guards against a pass with nothing to say.
            with trio.move_on_after(_POLL_SECONDS):
                await controller.reconciled.wait()
    if not controller.active:
        raise KafkaError(ErrorCode.not_controller, f"broker {node.broker_id} lost the controller seat")
    remaining = led_partitions(mirror, broker_id)
    log.info("controller: broker %d may shut down; it still leads %d partition(s)%s", broker_id, len(remaining),
             f": {_show(remaining)}" if remaining else "")
    return remaining


def _show(partitions: Iterable[tuple[str, int]]) -> str:
    names = [f"{t}-{i}" for t, i in partitions]
    return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


# ---- the stopping broker's side ---------------------------------------------------------


async def _broker_epoch(node: ClusterNode) -> int:
    """This broker's epoch, as Kafka's: the czxid of its /brokers/ids/<id> znode."""
    try:
        _, stat = await node.session.get_or_none(layout.broker_path(node.broker_id))
    except (ZkTimeout, ZookeeperError) as e:
        log.debug("cannot read this broker's registration: %r", e)
        return codec.UNKNOWN_BROKER_EPOCH
    return codec.UNKNOWN_BROKER_EPOCH if stat is None else stat.czxid


async def _ask_controller(node: ClusterNode, controller_id: int, broker_epoch: int, timeout: float) -> Partitions:
    """One ControlledShutdown to the controller: the partitions it says remain, or a
    KafkaError with its error code."""
    conn = await node.pool.connection(controller_id, timeout=timeout)
    # The newest version both speak; a controller that does not serve it at all
    # raises UnsupportedVersionError (a KafkaError).
    version = conn.version_for(codec.API_KEY, codec.MAX_VERSION, codec.MIN_VERSION)
    body = codec.encode_controlled_shutdown_request(
        codec.ControlledShutdownRequest(node.broker_id, broker_epoch), version
    )
    response = await conn.request_raw(
        codec.API_KEY, version, body,
        lambda frame, offset: codec.read_controlled_shutdown_response(frame, offset, version),
        flexible=codec.is_flexible(version), timeout=timeout,
    )
    if response.error_code != ErrorCode.none:
        try:
            error = ErrorCode(response.error_code)
        except ValueError:
            error = ErrorCode.unknown_server_error
        raise KafkaError(error, f"controller {controller_id} answered {error.name}")
    return sorted((p.topic_name, p.partition_index) for p in response.remaining_partitions)


async def _wait_for_controller_change(node: ClusterNode, controller_id: int, deadline: float) -> None:
    while node.mirror.controller_id == controller_id and trio.current_time() < deadline:
        await trio.sleep(_POLL_SECONDS)


def _still_movable(node: ClusterNode, remaining: Iterable[tuple[str, int]]) -> Partitions:
    """Partitions led here, not among `remaining`, with another live ISR member: the
    controller moved them (or is moving them), and this broker has not seen it yet."""
    mirror, me = node.mirror, node.broker_id
    kept = set(remaining)
    out: Partitions = []
    for partition in node.broker.local_replicas():
        replication = partition.replication
        key = (partition.topic.name, partition.index)
        if replication is None or not replication.is_leader or key in kept:
            continue
        if any(r != me and r in mirror.brokers for r in replication.isr):
            out.append(key)
    return out


async def _wait_before_retry(node: ClusterNode, controller_id: int, remaining: Partitions, until: float) -> None:
    """The retry backoff, cut short when asking again can give another answer (a
    follower of a remaining partition joined its ISR, the controller moved) or cannot
    help (every other replica of the remaining partitions has stopped)."""
    mirror, me = node.mirror, node.broker_id
    isrs = {key: mirror.states[key].isr for key in remaining if key in mirror.states}
    while trio.current_time() < until:
        await trio.sleep(min(_POLL_SECONDS, max(until - trio.current_time(), 0)))
        if mirror.controller_id != controller_id or not _could_move(node, remaining):
            return
        for key, isr in isrs.items():
            state = mirror.states.get(key)
            if state is not None and any(r != me and r not in isr and r in mirror.brokers for r in state.isr):
                return


def _could_move(node: ClusterNode, remaining: Iterable[tuple[str, int]]) -> bool:
    """Whether any of `remaining` has another replica on a live broker: one that may
    catch up and join the ISR, so that asking again can help."""
    mirror, me = node.mirror, node.broker_id
    return any(r != me and r in mirror.brokers for topic, index in remaining for r in mirror.replicas(topic, index))


async def request_controlled_shutdown(node: ClusterNode, timeout: float) -> Partitions:
    """Kafka's KafkaServer.controlledShutdown, within `timeout` seconds: ask the
    controller (directly when it is this broker) to move leadership away, retrying as
    configured, then wait until this broker's replicas have followed. Returns the
    partitions still led here (sorted): those will fail over when this broker stops.
    Never raises for a failed attempt: a broker stops whatever its controller says."""
    deadline = trio.current_time() + timeout
    config = node.broker.config
    if not config["controlled.shutdown.enable"]:
        return sorted(node.leaders_here())
    retries: int = config["controlled.shutdown.max.retries"]
    backoff = config["controlled.shutdown.retry.backoff.ms"] / 1000
    broker_epoch = await _broker_epoch(node)
    remaining: Partitions | None = None
    # As Kafka: max.retries is the number of attempts.
    for attempt in range(1, retries + 1):
        controller_id = node.mirror.controller_id
        left = deadline - trio.current_time()
        if left <= 0:
            break
        try:
            if controller_id < 0:
                raise KafkaError(ErrorCode.not_controller, "no controller is known")
            if controller_id == node.broker_id:
                remaining = await shut_down_broker(
                    node, node.broker_id, broker_epoch, wait_seconds=min(CONTROLLER_WAIT_SECONDS, left)
                )
            else:
                remaining = await _ask_controller(node, controller_id, broker_epoch, left)
        except (KafkaError, BrokerConnectionError, MalformedRequest, ZkTimeout, ZookeeperError) as e:
            log.warning("controlled shutdown attempt %d of %d failed: %s", attempt, retries, e)
            if isinstance(e, KafkaError) and e.error_code in (ErrorCode.stale_broker_epoch, ErrorCode.unsupported_version):
                break  # asking again gives the same answer
            if attempt < retries:
                # The controller moved, or is unknown or unreachable: ask again once a
                # new one is known, or after the backoff.
                await _wait_for_controller_change(node, controller_id, min(trio.current_time() + backoff, deadline))
            continue
        if not remaining or not _could_move(node, remaining):
            break
        log.info("controlled shutdown attempt %d of %d: %d partition(s) could not move yet: %s",
                 attempt, retries, len(remaining), _show(remaining))
        if attempt < retries:
            await _wait_before_retry(node, controller_id, remaining, min(trio.current_time() + backoff, deadline))
            if not _could_move(node, remaining):
                break
    # The controller's writes reach this broker through its watches, in milliseconds.
    if remaining is not None:
        with trio.move_on_at(deadline):
            while _still_movable(node, remaining):
                await trio.sleep(_POLL_SECONDS)
    led = sorted(node.leaders_here())
    if led:
        log.info("controlled shutdown: still leading %d partition(s): %s", len(led), _show(led))
    else:
        log.info("controlled shutdown: no partition is led here any more")
    return led
