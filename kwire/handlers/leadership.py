"""What a handler answers about a partition this broker does not lead: the error
(NOT_LEADER_OR_FOLLOWER when it exists elsewhere in the cluster) and, for KIP-951,
the current leader and its endpoint, so the client need not refresh its metadata
before moving there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kio.schema.errors import ErrorCode

from kwire.protocol.leader_hints import NodeEndpoint

if TYPE_CHECKING:
    from kwire.broker import Broker


def absent_partition_error(broker: Broker, topic_name: str, index: int) -> ErrorCode:
    """No replica here: in a cluster, NOT_LEADER_OR_FOLLOWER if the partition exists
    elsewhere (the client refreshes its metadata), else UNKNOWN_TOPIC_OR_PARTITION."""
    if broker.in_cluster:
        topic = broker.metadata_image.topic(topic_name)
        if topic is not None and topic.partition(index) is not None:
            return ErrorCode.not_leader_or_follower
    return ErrorCode.unknown_topic_or_partition


class LeaderHints:
    """Collects (leader, epoch) per partition and the leaders' endpoints for one answer."""

    def __init__(self, broker: Broker, listener_name: str) -> None:
        self.broker = broker
        self.listener_name = listener_name
        self.endpoints: dict[int, NodeEndpoint] = {}

    def current_leader(self, topic_name: str, index: int) -> tuple[int, int] | None:
        if not self.broker.in_cluster:
            return None
        image = self.broker.metadata_image
        topic = image.topic(topic_name)
        state = topic.partition(index) if topic is not None else None
        if state is None or state.leader_id < 0 or state.leader_id == self.broker.broker_id:
            return None
        registration = image.broker(state.leader_id)
        if registration is None:
            return None
        if state.leader_id not in self.endpoints:
            endpoint = registration.endpoint(self.listener_name)
            self.endpoints[state.leader_id] = NodeEndpoint(state.leader_id, endpoint.host, endpoint.port, registration.rack)
        return state.leader_id, state.leader_epoch

    def node_endpoints(self) -> list[NodeEndpoint]:
        return [self.endpoints[k] for k in sorted(self.endpoints)]
