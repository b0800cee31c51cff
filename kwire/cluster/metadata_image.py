"""The metadata image: the control plane's view of the cluster, as Kafka's MetadataImage.

An image is immutable and replaced whole on each change, so a request handler that
takes `broker.metadata_image` once answers from one consistent view, whatever changes
meanwhile. The data plane (logs, their partitions, producer state) stays in the
broker; the image only says who leads what, at which epoch, and where brokers listen.

Images come from a source. Today the only one is local: the broker's own topics (read
from its metadata file at start-up) and listeners, published by `Broker` after every
change. A ZooKeeper source is to come, and will build the same images.

Sans-IO: nothing here touches a file, a socket or trio.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kwire.broker import Broker, Topic
    from kwire.config import BrokerConfig


def _frozen_mapping(items: Mapping | None = None) -> Mapping:
    # A read-only view of a dict no one else holds: the image cannot be changed through it.
    return MappingProxyType(dict(items or {}))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One listener of a broker, as advertised to clients."""

    listener_name: str
    host: str
    port: int
    security_protocol: str


@dataclass(frozen=True, slots=True)
class BrokerRegistration:
    """A broker as the cluster knows it (Kafka's BrokerRegistration)."""

    broker_id: int
    # Listener name -> endpoint, in advertised.listeners order.
    endpoints: Mapping[str, Endpoint]
    rack: str | None = None

    def endpoint(self, listener_name: str) -> Endpoint:
        """The endpoint of the listener a client came in on; a listener this broker does
        not advertise gets its first one, as kwire has always answered."""
        found = self.endpoints.get(listener_name)
        return found if found is not None else next(iter(self.endpoints.values()))


@dataclass(frozen=True, slots=True)
class PartitionState:
    """One partition's leadership and replicas (Kafka's PartitionRegistration)."""

    partition_index: int
    leader_id: int
    leader_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    offline_replicas: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TopicImage:
    name: str
    topic_id: uuid.UUID
    # Indexed by partition index: partitions[i].partition_index == i.
    partitions: tuple[PartitionState, ...]
    is_internal: bool = False

    def partition(self, index: int) -> PartitionState | None:
        return self.partitions[index] if 0 <= index < len(self.partitions) else None


@dataclass(frozen=True, slots=True)
class ClusterImage:
    """The registered brokers (Kafka's ClusterImage)."""

    brokers: Mapping[int, BrokerRegistration]

    def broker(self, broker_id: int) -> BrokerRegistration | None:
        return self.brokers.get(broker_id)


@dataclass(frozen=True, slots=True)
class TopicsImage:
    """Every topic, by name and by id (Kafka's TopicsImage)."""

    # In creation order, which is the order Metadata lists all topics in.
    by_name: Mapping[str, TopicImage]
    by_id: Mapping[uuid.UUID, TopicImage]

    @staticmethod
    def of(topics: Iterable[TopicImage]) -> TopicsImage:
        by_name = {t.name: t for t in topics}
        return TopicsImage(_frozen_mapping(by_name), _frozen_mapping({t.topic_id: t for t in by_name.values()}))

    def with_topic(self, topic: TopicImage) -> TopicsImage:
        """A new TopicsImage with this topic added or replaced; the others are shared."""
        by_name = dict(self.by_name)
        by_id = dict(self.by_id)
        old = by_name.get(topic.name)
        if old is not None and old.topic_id != topic.topic_id:
            del by_id[old.topic_id]
        by_name[topic.name] = topic
        by_id[topic.topic_id] = topic
        return TopicsImage(MappingProxyType(by_name), MappingProxyType(by_id))

    def without_topic(self, name: str) -> TopicsImage:
        by_name = dict(self.by_name)
        topic = by_name.pop(name, None)
        if topic is None:
            return self
        by_id = dict(self.by_id)
        del by_id[topic.topic_id]
        return TopicsImage(MappingProxyType(by_name), MappingProxyType(by_id))


@dataclass(frozen=True, slots=True)
class MetadataImage:
    cluster_id: str
    controller_id: int
    cluster: ClusterImage
    topics: TopicsImage

    # Cheap lookups: one dict access each.

    @property
    def brokers(self) -> Mapping[int, BrokerRegistration]:
        return self.cluster.brokers

    def broker(self, broker_id: int) -> BrokerRegistration | None:
        return self.cluster.brokers.get(broker_id)

    def topic(self, name: str) -> TopicImage | None:
        return self.topics.by_name.get(name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicImage | None:
        return self.topics.by_id.get(topic_id)

    # New images, sharing what did not change.

    def with_topic(self, topic: TopicImage) -> MetadataImage:
        return replace(self, topics=self.topics.with_topic(topic))

    def without_topic(self, name: str) -> MetadataImage:
        return replace(self, topics=self.topics.without_topic(name))

    def with_broker(self, registration: BrokerRegistration) -> MetadataImage:
        brokers = dict(self.cluster.brokers)
        brokers[registration.broker_id] = registration
        return replace(self, cluster=ClusterImage(MappingProxyType(brokers)))

    def with_cluster_id(self, cluster_id: str) -> MetadataImage:
        return replace(self, cluster_id=cluster_id)


EMPTY_TOPICS = TopicsImage(_frozen_mapping(), _frozen_mapping())


# ---- the local source: the image of one broker's own state ---------------------------


def local_broker_registration(config: BrokerConfig, broker_id: int, bound_ports: Mapping[str, int]) -> BrokerRegistration:
    """This broker as its advertised listeners describe it; a listener configured on port
    0 advertises the port it was bound to (0 until then)."""
    protocols = config.security_protocol_map
    endpoints = {}
    for listener in config.advertised_listeners:
        if listener.name in endpoints:
            continue
        endpoints[listener.name] = Endpoint(
            listener_name=listener.name,
            host=listener.host,
            port=listener.port or bound_ports.get(listener.name, 0),
            security_protocol=protocols.get(listener.name.upper(), listener.name),
        )
    # broker.rack is not served yet: every broker answers rack null.
    return BrokerRegistration(broker_id=broker_id, endpoints=MappingProxyType(endpoints), rack=None)


def local_topic_image(topic: Topic, broker_id: int) -> TopicImage:
    """One broker leads every partition and is its only replica, in sync; the leader
    epoch is the log's."""
    replicas = (broker_id,)
    return TopicImage(
        name=topic.name,
        topic_id=topic.topic_id,
        partitions=tuple(
            PartitionState(
                partition_index=p.index,
                leader_id=broker_id,
                leader_epoch=p.log.leader_epoch,
                replicas=replicas,
                isr=replicas,
                offline_replicas=(),
            )
            for p in topic.partitions
        ),
        is_internal=topic.is_internal,
    )


def local_metadata_image(broker: Broker) -> MetadataImage:
    """The whole image of a single broker: it is the cluster and its own controller."""
    registration = local_broker_registration(broker.config, broker.broker_id, broker.bound_ports)
    return MetadataImage(
        cluster_id=broker.cluster_id,
        controller_id=broker.broker_id,
        cluster=ClusterImage(MappingProxyType({broker.broker_id: registration})),
        topics=TopicsImage.of(local_topic_image(t, broker.broker_id) for t in broker.topics.values()),
    )


__all__ = [
    "BrokerRegistration",
    "ClusterImage",
    "EMPTY_TOPICS",
    "Endpoint",
    "MetadataImage",
    "PartitionState",
    "TopicImage",
    "TopicsImage",
    "local_broker_registration",
    "local_metadata_image",
    "local_topic_image",
]
