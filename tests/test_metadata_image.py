"""The metadata image (kwire.cluster.metadata_image): built from a real broker on a tmp
dir, replaced whole on each change, immutable; and the Metadata, DescribeCluster and
FindCoordinator answers read it. No sockets: handlers are called in-process."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from kwire.broker import Broker
from kwire.cluster.metadata_image import (
    BrokerRegistration,
    Endpoint,
    PartitionState,
    TopicImage,
    local_metadata_image,
)
from kwire.config import BrokerConfig
from kwire.errors import KafkaError


def _open(path: Path, **overrides: str) -> Broker:
    broker = Broker(BrokerConfig({"log.dirs": str(path), **overrides}))
    broker.open()
    return broker


@pytest.fixture
def broker(tmp_path: Path) -> Any:
    b = _open(tmp_path)
    yield b
    b.close()


def test_open_builds_the_image_of_this_broker(broker: Broker) -> None:
    image = broker.metadata_image
    assert image.cluster_id == broker.cluster_id != ""
    assert image.controller_id == broker.broker_id == 0
    assert list(image.brokers) == [0]
    registration = image.broker(0)
    assert registration == BrokerRegistration(
        broker_id=0,
        endpoints={"PLAINTEXT": Endpoint("PLAINTEXT", "127.0.0.1", 9092, "PLAINTEXT")},
        rack=None,
    )
    assert image.broker(1) is None
    assert dict(image.topics.by_name) == {} and dict(image.topics.by_id) == {}


def test_create_topic_publishes_a_new_image_and_leaves_the_old_one(broker: Broker) -> None:
    before = broker.metadata_image
    topic = broker.create_topic("orders", 3)
    after = broker.metadata_image
    assert after is not before
    assert before.topic("orders") is None and dict(before.topics.by_name) == {}

    image = after.topic("orders")
    assert image is not None
    assert after.topic_by_id(topic.topic_id) is image
    assert image == TopicImage(
        name="orders",
        topic_id=topic.topic_id,
        partitions=tuple(
            PartitionState(partition_index=i, leader_id=0, leader_epoch=0, replicas=(0,), isr=(0,), offline_replicas=())
            for i in range(3)
        ),
        is_internal=False,
    )
    assert image.partition(2) == image.partitions[2] and image.partition(3) is None and image.partition(-1) is None
    assert after.topic_by_id(uuid.uuid4()) is None
    assert after.cluster is before.cluster  # brokers did not change: shared


def test_internal_topic_is_internal_in_the_image(broker: Broker) -> None:
    broker.create_topic("__consumer_offsets", 2, internal=True)
    image = broker.metadata_image.topic("__consumer_offsets")
    assert image is not None and image.is_internal and len(image.partitions) == 2


def test_refused_or_validate_only_changes_leave_the_image(broker: Broker) -> None:
    broker.create_topic("orders", 1)
    image = broker.metadata_image
    assert broker.create_topic("other", 1, validate_only=True) is None
    broker.create_partitions("orders", 4, validate_only=True)
    with pytest.raises(KafkaError):
        broker.create_topic("orders", 1)
    with pytest.raises(KafkaError):
        broker.create_partitions("orders", 1)
    with pytest.raises(KafkaError):
        broker.delete_topic("missing")
    broker.set_topic_configs("orders", {"retention.ms": 1000})  # not in Metadata's answer
    assert broker.metadata_image is image


def test_create_partitions_replaces_the_topic_and_shares_the_others(broker: Broker) -> None:
    broker.create_topic("orders", 2)
    broker.create_topic("payments", 1)
    before = broker.metadata_image
    broker.create_partitions("orders", 5)
    after = broker.metadata_image
    assert after is not before
    assert len(before.topic("orders").partitions) == 2  # type: ignore[union-attr]
    orders = after.topic("orders")
    assert orders is not None and [p.partition_index for p in orders.partitions] == [0, 1, 2, 3, 4]
    assert after.topic_by_id(orders.topic_id) is orders
    assert after.topic("payments") is before.topic("payments")
    # Metadata lists all topics in creation order: a replaced topic keeps its place.
    assert list(after.topics.by_name) == ["orders", "payments"] == list(broker.topics)


def test_delete_topic_removes_it_by_name_and_id(broker: Broker) -> None:
    topic = broker.create_topic("orders", 1)
    broker.create_topic("payments", 1)
    before = broker.metadata_image
    broker.delete_topic("orders")
    after = broker.metadata_image
    assert after is not before
    assert after.topic("orders") is None and after.topic_by_id(topic.topic_id) is None
    assert list(after.topics.by_name) == ["payments"] and len(after.topics.by_id) == 1
    assert before.topic("orders") is not None and before.topic_by_id(topic.topic_id) is not None


def test_reopen_rebuilds_the_same_image_with_the_logs_leader_epochs(tmp_path: Path) -> None:
    broker = _open(tmp_path)
    broker.create_topic("b-topic", 2)
    broker.create_topic("a-topic", 1)
    broker.partition("b-topic", 1).log.leader_epoch = 4  # type: ignore[union-attr]
    # The image is the local source's view: a rebuild sees the log's epoch.
    assert local_metadata_image(broker).topic("b-topic").partitions[1].leader_epoch == 4  # type: ignore[union-attr]
    ids = {name: t.topic_id for name, t in broker.topics.items()}
    cluster_id = broker.cluster_id
    broker.close()

    reopened = _open(tmp_path)
    try:
        image = reopened.metadata_image
        assert image.cluster_id == cluster_id
        assert list(image.topics.by_name) == ["b-topic", "a-topic"]
        assert {name: t.topic_id for name, t in image.topics.by_name.items()} == ids
        assert [p.leader_epoch for p in image.topic("b-topic").partitions] == [0, 4]  # type: ignore[union-attr]
        assert image == local_metadata_image(reopened)
    finally:
        reopened.close()


def test_the_image_is_immutable(broker: Broker) -> None:
    broker.create_topic("orders", 1)
    image = broker.metadata_image
    topic = image.topic("orders")
    assert topic is not None
    registration = image.broker(0)
    assert registration is not None
    for obj, name, value in [
        (image, "controller_id", 7),
        (image, "cluster_id", "x"),
        (topic, "name", "x"),
        (topic, "partitions", ()),
        (topic.partitions[0], "leader_id", 7),
        (registration, "rack", "r1"),
        (registration.endpoint("PLAINTEXT"), "port", 1),
    ]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, value)
        assert not hasattr(obj, "__dict__")  # slots: no attribute can be added either
    with pytest.raises(TypeError):
        image.topics.by_name["x"] = topic  # type: ignore[index]
    with pytest.raises(TypeError):
        image.topics.by_id[uuid.uuid4()] = topic  # type: ignore[index]
    with pytest.raises(TypeError):
        image.brokers[1] = registration  # type: ignore[index]
    with pytest.raises(TypeError):
        registration.endpoints["X"] = registration.endpoint("PLAINTEXT")  # type: ignore[index]
    # Changes made to the broker afterwards do not reach this image.
    broker.create_partitions("orders", 3)
    broker.delete_topic("orders")
    assert image.topic("orders") is topic and len(topic.partitions) == 1


def test_listeners_and_bound_ports(tmp_path: Path) -> None:
    broker = _open(
        tmp_path,
        listeners="PLAINTEXT://127.0.0.1:0,INTERNAL://127.0.0.1:0",
        **{"listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT"},
    )
    try:
        before = broker.metadata_image
        assert before.broker(0).endpoint("INTERNAL").port == 0  # type: ignore[union-attr]
        broker.listener_bound("PLAINTEXT", 40001)
        broker.listener_bound("INTERNAL", 40002)
        after = broker.metadata_image
        assert after is not before and after.topics is before.topics
        registration = after.broker(0)
        assert registration is not None
        assert list(registration.endpoints.values()) == [
            Endpoint("PLAINTEXT", "127.0.0.1", 40001, "PLAINTEXT"),
            Endpoint("INTERNAL", "127.0.0.1", 40002, "PLAINTEXT"),
        ]
        # A listener not advertised answers the first, as before the image.
        assert registration.endpoint("OTHER") == registration.endpoint("PLAINTEXT")
        assert before.broker(0).endpoint("PLAINTEXT").port == 0  # type: ignore[union-attr]
    finally:
        broker.close()


# ---- the handlers answer from the image ---------------------------------------------


def _call(broker: Broker, api_key: int, version: int, request: Any) -> Any:
    return trio.run(_serve, broker, api_key, version, request)


async def _serve(broker: Broker, api_key: int, version: int, request: Any) -> Any:
    from kwire.handlers import RequestContext
    from kwire.protocol.apis import handler

    ctx = RequestContext(broker, "test", "PLAINTEXT", api_key=api_key, api_version=version)
    return await handler(api_key)[0](ctx, request)


def test_metadata_answers_from_the_image(broker: Broker) -> None:
    from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic

    broker.create_topic("orders", 2)
    broker.listener_bound("PLAINTEXT", 9092)
    # Replace the image with one that differs from the broker's own state: the answer
    # must follow the image, not the logs.
    image = broker.metadata_image
    orders = image.topic("orders")
    assert orders is not None
    moved = dataclasses.replace(
        orders,
        partitions=(
            dataclasses.replace(orders.partitions[0], leader_epoch=9, replicas=(0, 3), offline_replicas=(3,)),
            orders.partitions[1],
        ),
    )
    broker.metadata_image = dataclasses.replace(image.with_topic(moved), controller_id=5)

    response = _call(broker, 3, 12, MetadataRequest(topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False))
    assert response.controller_id == 5 and response.cluster_id == broker.cluster_id
    assert [(b.node_id, b.host, b.port, b.rack) for b in response.brokers] == [(0, "127.0.0.1", 9092, None)]
    (topic,) = response.topics
    assert (topic.name, topic.topic_id, topic.is_internal) == ("orders", orders.topic_id, False)
    assert [(p.partition_index, p.leader_id, p.leader_epoch, p.replica_nodes, p.isr_nodes, p.offline_replicas) for p in topic.partitions] == [
        (0, 0, 9, (0, 3), (0,), (3,)),
        (1, 0, 0, (0,), (0,), ()),
    ]

    # Auto-creation goes through the broker, and the answer comes from its new image.
    by_name = MetadataRequest(
        topics=(MetadataRequestTopic(name="fresh", topic_id=None),),
        allow_auto_topic_creation=True,
        include_topic_authorized_operations=False,
    )
    response = _call(broker, 3, 12, by_name)
    (topic,) = response.topics
    fresh = broker.metadata_image.topic("fresh")
    assert fresh is not None and "fresh" in broker.topics
    assert topic.error_code == 0 and topic.topic_id == fresh.topic_id and len(topic.partitions) == len(fresh.partitions)

    by_id = MetadataRequest(
        topics=(MetadataRequestTopic(name=None, topic_id=fresh.topic_id),),
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )
    (topic,) = _call(broker, 3, 12, by_id).topics
    assert topic.name == "fresh"


def test_describe_cluster_and_find_coordinator_answer_from_the_image(broker: Broker) -> None:
    from kio.schema.describe_cluster.v1.request import DescribeClusterRequest
    from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest

    broker.listener_bound("PLAINTEXT", 9092)
    registration = BrokerRegistration(0, {"PLAINTEXT": Endpoint("PLAINTEXT", "kwire.example", 19092, "PLAINTEXT")}, rack="r1")
    broker.metadata_image = broker.metadata_image.with_broker(registration)

    response = _call(broker, 60, 1, DescribeClusterRequest(include_cluster_authorized_operations=False, endpoint_type=1))
    assert response.cluster_id == broker.cluster_id and response.controller_id == 0
    assert [(b.broker_id, b.host, b.port, b.rack) for b in response.brokers] == [(0, "kwire.example", 19092, "r1")]

    async def find_coordinator() -> Any:
        broker.attach_coordinators()
        async with trio.open_nursery() as nursery:
            await nursery.start(broker.services["groups"].run)
            with trio.fail_after(10):
                response = await _serve(broker, 10, 4, FindCoordinatorRequest(key_type=0, coordinator_keys=("g1",)))
            nursery.cancel_scope.cancel()
        return response

    (coordinator,) = trio.run(find_coordinator).coordinators
    assert (coordinator.error_code, coordinator.node_id, coordinator.host, coordinator.port) == (0, 0, "kwire.example", 19092)
    # The group's coordinator partition is in the image: the offsets topic was created.
    assert broker.metadata_image.topic("__consumer_offsets") is not None
