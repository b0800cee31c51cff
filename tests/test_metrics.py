"""Prometheus metrics (kwire.metrics): consumer group lag in-process, then a real broker's
GET /metrics after confluent-kafka traffic, and a cluster's replication metrics."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import trio
from cluster_harness import KwireCluster, wait_until
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import BrokerProcess, free_port
from kio.schema.errors import ErrorCode
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from kwire.broker import Broker
from kwire.config import BrokerConfig
from kwire.coordinator.group_coordinator import group_coordinator
from kwire.metrics import GroupLag, consumer_group_lags
from kwire.protocol.records import build_batch, validate_batches

TIMEOUT = 20


def _append(broker: Broker, topic: str, index: int, count: int) -> None:
    partition = broker.partition(topic, index)
    assert partition is not None
    batch = bytearray(build_batch([(None, b"v%d" % i) for i in range(count)]))
    partition.append(batch, validate_batches(batch), int(time.time() * 1000))


def test_consumer_group_lags_from_committed_offsets_and_high_watermarks(tmp_path: Path) -> None:
    broker = Broker(BrokerConfig({"log.dirs": str(tmp_path), "offsets.topic.num.partitions": "2"}))
    broker.open()
    broker.attach_coordinators()
    groups = group_coordinator(broker)
    assert groups is not None
    assert consumer_group_lags(broker) == []  # not running yet: no coordinator state
    broker.create_topic("t", 2)
    _append(broker, "t", 0, 10)
    _append(broker, "t", 1, 4)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(groups.run)
            with trio.fail_after(TIMEOUT):
                while len(groups.owned) < groups.num_partitions:
                    await trio.sleep(0.01)
                for group_id, offsets in (
                    ("g1", {("t", 0): 3, ("t", 1): 4}),
                    ("g0", {("t", 0): 10}),
                ):
                    answer = await groups.commit_offsets(
                        group_id=group_id,
                        member_id="",
                        group_instance_id=None,
                        generation_id=-1,
                        offsets={tp: (offset, -1, None) for tp, offset in offsets.items()},
                    )
                    assert set(answer.values()) == {ErrorCode.none}
                # A partition this broker has no replica of is left out.
                answer = await groups.commit_offsets(
                    group_id="g1",
                    member_id="",
                    group_instance_id=None,
                    generation_id=-1,
                    offsets={("gone", 0): (5, -1, None)},
                )
                assert set(answer.values()) == {ErrorCode.none}
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert consumer_group_lags(broker) == [
        GroupLag("g0", "t", 0, committed_offset=10, high_watermark=10, lag=0),
        GroupLag("g1", "t", 0, committed_offset=3, high_watermark=10, lag=7),
        GroupLag("g1", "t", 1, committed_offset=4, high_watermark=4, lag=0),
    ]
    # More records raise the lag at once: it is read at call time.
    _append(broker, "t", 1, 5)
    assert [g.lag for g in consumer_group_lags(broker) if g.partition == 1] == [5]
    broker.close()


# ---- a real broker: GET /metrics after confluent-kafka traffic --------------------------------

DOCUMENTED = {
    # name as the parser gives it (counters without _total) -> type, labels
    "kwire_messages_in": ("counter", {"topic"}),
    "kwire_bytes_in": ("counter", {"topic"}),
    "kwire_bytes_out": ("counter", {"topic"}),
    "kwire_requests": ("counter", {"api", "error"}),
    "kwire_request_latency_seconds": ("histogram", {"api"}),
    "kwire_partition_log_end_offset": ("gauge", {"topic", "partition"}),
    "kwire_partition_high_watermark": ("gauge", {"topic", "partition"}),
    "kwire_partition_log_start_offset": ("gauge", {"topic", "partition"}),
    "kwire_partition_size_bytes": ("gauge", {"topic", "partition"}),
    "kwire_under_replicated_partitions": ("gauge", set()),
    "kwire_isr_shrinks": ("counter", set()),
    "kwire_isr_expands": ("counter", set()),
    "kwire_consumer_group_lag": ("gauge", {"group", "topic", "partition"}),
    "kwire_group_rebalances": ("counter", set()),
    "kwire_connections": ("gauge", {"listener"}),
}


def scrape(url: str) -> dict[str, Metric]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=TIMEOUT) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def values(
    family: Metric, sample_name: str | None = None
) -> dict[tuple[tuple[str, str], ...], float]:
    """Sample values by their sorted labels (of one sample name: a histogram has several)."""
    name = sample_name or family.name + ("_total" if family.type == "counter" else "")
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == name}


def one(family: Metric, **labels: str) -> float:
    return values(family)[tuple(sorted(labels.items()))]


def health(url: str) -> int:
    """GET /health's status, once the HTTP listener is up (it starts after the Kafka ones)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=TIMEOUT) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def log_bytes(data_dir: Path, topic: str) -> int:
    """The record batch bytes of a topic's segments on disk: what produce appended."""
    return sum(f.stat().st_size for f in data_dir.glob(f"{topic}-*/*.log"))


def test_metrics_after_produce_and_consume(broker_factory: Callable[..., BrokerProcess]) -> None:
    http_port = free_port()
    broker = broker_factory({"http.listeners": f"http://127.0.0.1:{http_port}"})
    url = f"http://127.0.0.1:{http_port}"
    assert health(url) == 200
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic("m1", 1, 1), NewTopic("m2", 2, 1)]).values():
        future.result(timeout=TIMEOUT)
    # m1: 30 records of 100 bytes; m2: 12 to partition 0 and 8 to partition 1, of 1000.
    counts = {("m1", 0): 30, ("m2", 0): 12, ("m2", 1): 8}
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "acks": "all"})
    for (topic, partition), count in counts.items():
        for i in range(count):
            size = 100 if topic == "m1" else 1000
            producer.produce(topic, value=bytes([i % 256]) * size, partition=partition)
    assert producer.flush(TIMEOUT) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "mg",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
        }
    )
    consumer.subscribe(["m1", "m2"])
    got = 0
    deadline = time.monotonic() + TIMEOUT
    while got < sum(counts.values()) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            got += 1
    assert got == sum(counts.values())
    committed = {("m1", 0): 10, ("m2", 0): 12}  # m2-1 left uncommitted
    consumer.commit(
        offsets=[TopicPartition(t, p, o) for (t, p), o in committed.items()], asynchronous=False
    )
    try:
        metrics = scrape(url)
        for name, (kind, labels) in DOCUMENTED.items():
            assert name in metrics, name
            assert metrics[name].type == kind, name
            for sample in metrics[name].samples:
                assert set(sample.labels) - {"le"} == labels, (name, sample)
        assert "process_cpu_seconds" in metrics and "process_resident_memory_bytes" in metrics

        for topic in ("m1", "m2"):
            records = sum(n for (t, _), n in counts.items() if t == topic)
            assert one(metrics["kwire_messages_in"], topic=topic) == records
            assert (
                one(metrics["kwire_bytes_in"], topic=topic)
                == log_bytes(broker.data_dir, topic)
                > records * 100
            )
            # Every batch was read at least once.
            assert one(metrics["kwire_bytes_out"], topic=topic) >= log_bytes(broker.data_dir, topic)
        for (topic, partition), count in counts.items():
            key = {"topic": topic, "partition": str(partition)}
            assert one(metrics["kwire_partition_log_end_offset"], **key) == count
            assert one(metrics["kwire_partition_high_watermark"], **key) == count
            assert one(metrics["kwire_partition_log_start_offset"], **key) == 0
        lags = values(metrics["kwire_consumer_group_lag"])
        assert {k: v for k, v in lags.items() if ("group", "mg") in k} == {
            (("group", "mg"), ("partition", str(p)), ("topic", t)): counts[t, p] - o
            for (t, p), o in committed.items()
        }
        assert one(metrics["kwire_group_rebalances"]) >= 1
        assert one(metrics["kwire_connections"], listener="PLAINTEXT") >= 2  # producer, consumer

        requests = values(metrics["kwire_requests"])
        for api in ("Produce", "Fetch", "Metadata", "OffsetCommit", "JoinGroup"):
            assert requests.get((("api", api), ("error", "NONE")), 0) >= 1, api
        latency = metrics["kwire_request_latency_seconds"]
        for api in ("Produce", "Fetch"):
            answered = sum(v for k, v in requests.items() if ("api", api) in k)
            assert (
                values(latency, "kwire_request_latency_seconds_count")[(("api", api),)] == answered
            )
            buckets = {
                k: v
                for k, v in values(latency, "kwire_request_latency_seconds_bucket").items()
                if ("api", api) in k
            }
            assert buckets[(("api", api), ("le", "+Inf"))] == answered
            assert values(latency, "kwire_request_latency_seconds_sum")[(("api", api),)] > 0
        assert one(metrics["kwire_under_replicated_partitions"]) == 0
        assert one(metrics["kwire_isr_shrinks"]) == 0
    finally:
        consumer.close()


# ---- a 3-broker cluster: under-replicated partitions and ISR shrinks --------------------------

READY_HTTP = re.compile(r"^kwire broker -?\d+ listening on .*\bhttp://127\.0\.0\.1:(\d+)", re.M)


def http_url(broker: BrokerProcess) -> str:
    """The HTTP listener of a broker started with http.listeners on port 0 (its ready line)."""
    found = wait_until(
        lambda: READY_HTTP.search(broker.log_path.read_text(errors="replace")),
        TIMEOUT,
        message="the ready line with the HTTP listener",
    )
    return f"http://127.0.0.1:{found.group(1)}"


def test_under_replicated_and_isr_shrinks_when_a_follower_dies(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    # The leader drops a follower silent for replica.lag.time.max.ms, long before the dead
    # broker's ZooKeeper session expires (the controller's way of removing it).
    cluster = kwire_cluster_factory(
        3, {"http.listeners": "http://127.0.0.1:0", "replica.lag.time.max.ms": "1000"}
    )
    urls = {broker_id: http_url(cluster.broker(broker_id)) for broker_id in cluster.ids}
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic("ur", 1, 3)])["ur"].result(timeout=TIMEOUT)

    def partition() -> object:
        metadata = admin.list_topics("ur", timeout=TIMEOUT).topics["ur"].partitions[0]
        return metadata if metadata.leader > 0 and len(metadata.isrs) == 3 else None

    state = wait_until(partition, TIMEOUT, message="ur-0 with a leader and all replicas in sync")
    leader = state.leader
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for i in range(5):
        producer.produce("ur", value=b"x%d" % i)
    assert producer.flush(TIMEOUT) == 0
    before = scrape(urls[leader])
    assert one(before["kwire_under_replicated_partitions"]) == 0
    assert one(before["kwire_partition_high_watermark"], topic="ur", partition="0") == 5
    shrinks = one(before["kwire_isr_shrinks"])

    follower = next(b for b in cluster.ids if b != leader)
    cluster.kill(follower)
    # As Kafka, a follower as far as the leader's log end is in sync however long it is
    # silent: records written after its death leave it behind.
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "1"})
    for i in range(3):
        producer.produce("ur", value=b"y%d" % i)
    assert producer.flush(TIMEOUT) == 0

    def under_replicated() -> dict[str, Metric] | None:
        metrics = scrape(urls[leader])
        return metrics if one(metrics["kwire_under_replicated_partitions"]) > 0 else None

    after = wait_until(
        under_replicated, TIMEOUT, message="the leader counting ur-0 under-replicated"
    )
    assert one(after["kwire_isr_shrinks"]) >= shrinks + 1
    assert one(after["kwire_messages_in"], topic="ur") == 8
    # Followers count none of it: only partitions led there are under-replicated, and
    # replicated batches are not produce requests.
    other = next(b for b in cluster.ids if b not in (leader, follower))

    def follower_caught_up() -> dict[str, Metric] | None:
        metrics = scrape(urls[other])
        return (
            metrics
            if one(metrics["kwire_partition_log_end_offset"], topic="ur", partition="0") == 8
            else None
        )

    on_follower = wait_until(
        follower_caught_up, TIMEOUT, message="the live follower at the leader's log end"
    )
    assert one(on_follower["kwire_under_replicated_partitions"]) == 0
    assert "ur" not in {k[0][1] for k in values(on_follower["kwire_messages_in"])}


def test_health_503_while_the_zookeeper_connection_is_cut(
    kwire_cluster_factory: Callable[..., KwireCluster],
) -> None:
    cluster = kwire_cluster_factory(
        1,
        {"http.listeners": "http://127.0.0.1:0", "zookeeper.session.timeout.ms": "6000"},
        proxied=True,
    )
    url = http_url(cluster.broker(1))
    assert health(url) == 200
    cluster.proxy(1).cut()
    wait_until(lambda: health(url) == 503, TIMEOUT, message="/health 503 without ZooKeeper")
    with urllib.request.urlopen(f"{url}/metrics", timeout=TIMEOUT) as response:
        assert response.status == 200  # metrics still answer: they are how one sees why
    cluster.proxy(1).restore()
    wait_until(lambda: health(url) == 200, TIMEOUT, message="/health 200 with ZooKeeper back")
