"""Prometheus metrics of one broker (GET /metrics on the HTTP listener).

Kafka's broker metrics under the `kwire_` namespace. Most are read from the broker's own
state at scrape time (custom collectors); the few that must be counted as things happen
are plain ints in `broker.stats` (kwire.stats), so the produce and fetch paths pay a dict
increment and nothing of prometheus-client. Each broker has its own registry: tests run
several brokers in one process.

A scrape reads the broker's state on the event loop (a snapshot of plain values, a few
milliseconds for thousands of partitions) and formats the text in a worker thread, so
that a large scrape does not hold up requests.

Consumer group lag is not a Kafka broker metric (Kafka leaves it to clients and tools);
here it covers the groups whose `__consumer_offsets` partition this broker leads, and of
their committed partitions those this broker leads (where the high watermark is known).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

import trio
from kio.schema.errors import ErrorCode
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from kwire.coordinator.group import GroupState
from kwire.coordinator.group_coordinator import group_coordinator
from kwire.protocol.apis import API_TABLE
from kwire.stats import LATENCY_BUCKETS

if TYPE_CHECKING:
    from kwire.broker import Broker

# broker.services keys of the broker's own CollectorRegistry and of its collector.
REGISTRY = "metrics_registry"
COLLECTOR = "metrics_collector"


@dataclass(frozen=True, slots=True)
class GroupLag:
    """A group's committed offset of one partition against the partition's high watermark."""

    group: str
    topic: str
    partition: int
    committed_offset: int
    high_watermark: int
    lag: int


def consumer_group_lags(broker: Broker) -> list[GroupLag]:
    """The lag of every committed partition of the groups this broker coordinates, for the
    partitions it leads, sorted by (group, topic, partition). The lag is what
    kafka-consumer-groups shows: high watermark minus committed offset, never negative (a
    commit past the high watermark, e.g. before a truncation, counts as no lag)."""
    coordinator = group_coordinator(broker)
    if coordinator is None or not coordinator.active:
        return []
    lags: list[GroupLag] = []
    for group_id, group in list(coordinator.groups.items()):
        if (
            group.state is GroupState.DEAD
            or coordinator.partition_for(group_id) not in coordinator.owned
        ):
            continue
        for (topic, index), committed in list(group.offsets.items()):
            partition = broker.partition(topic, index)
            if partition is None or not partition.is_leader:
                continue
            hw = partition.high_watermark
            lags.append(
                GroupLag(
                    group_id, topic, index, committed.offset, hw, max(0, hw - committed.offset)
                )
            )
    lags.sort(key=lambda g: (g.group, g.topic, g.partition))
    return lags


def exposition(broker: Broker) -> tuple[bytes, str]:
    """The broker's metrics in Prometheus' text format, and its content type (on the
    event loop's thread: the snapshot reads the broker's state)."""
    return render(broker, Snapshot.of(broker))


async def exposition_in_thread(broker: Broker) -> tuple[bytes, str]:
    """GET /metrics: `exposition`, with the text formatted in a worker thread."""
    snapshot = Snapshot.of(broker)
    return await trio.to_thread.run_sync(render, broker, snapshot)


def render(broker: Broker, snapshot: Snapshot) -> tuple[bytes, str]:
    """The text of `snapshot` and of the process collector (any thread)."""
    found = registry(broker)
    collector: BrokerCollector = broker.services[COLLECTOR]
    with collector.lock:
        collector.snapshot = snapshot
        try:
            return generate_latest(found), CONTENT_TYPE_LATEST
        finally:
            collector.snapshot = None


def registry(broker: Broker) -> CollectorRegistry:
    """The broker's registry, made on first use: its collector and the process's."""
    found = broker.services.get(REGISTRY)
    if found is None:
        found = broker.services[REGISTRY] = CollectorRegistry(auto_describe=False)
        collector = broker.services[COLLECTOR] = BrokerCollector()
        found.register(collector)
        ProcessCollector(registry=found)
    return found


@cache
def api_name(api_key: int) -> str:
    """Kafka's name of a request type (Produce, OffsetCommit, ...), as its metrics use."""
    api = API_TABLE.get(api_key)
    if api is None:
        return f"Unknown{api_key}"
    return "".join(part.capitalize() for part in api.module.split("_"))


@cache
def error_name(code: int) -> str:
    """Kafka's name of an error code (NONE, NOT_LEADER_OR_FOLLOWER, ...)."""
    try:
        return ErrorCode(code).name.upper()
    except ValueError:
        return f"UNKNOWN_ERROR_{code}"


@dataclass(slots=True)
class Snapshot:
    """What a scrape shows of the broker, as plain values (taken on the event loop)."""

    messages_in: dict[str, int]
    bytes_in: dict[str, int]
    bytes_out: dict[str, int]
    requests: dict[tuple[int, int], int]
    # API key -> (count per bucket, the last +Inf; sum)
    latency: dict[int, tuple[list[int], float]]
    # (topic, partition, log end offset, high watermark, log start offset, size)
    partitions: list[tuple[str, int, int, int, int, int]]
    under_replicated: int
    isr_shrinks: int
    isr_expands: int
    lags: list[GroupLag]
    rebalances: int
    connections: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, broker: Broker) -> Snapshot:
        stats = broker.stats
        partitions = []
        under_replicated = 0
        for partition in broker.all_partitions():
            log = partition.log
            partitions.append(
                (
                    partition.topic.name,
                    partition.index,
                    log.log_end_offset,
                    log.high_watermark,
                    log.log_start_offset,
                    log.size_bytes,
                )
            )
            replication = partition.replication
            if (
                replication is not None
                and replication.is_leader
                and len(replication.isr) < len(replication.replicas)
            ):
                under_replicated += 1
        connections = {listener.name: 0 for listener in broker.config.listeners}
        server = broker.services.get("kafka_server")
        for connection in server.connections if server is not None else ():
            connections[connection.listener_name] = connections.get(connection.listener_name, 0) + 1
        coordinator = group_coordinator(broker)
        return cls(
            messages_in=dict(stats.messages_in),
            bytes_in=dict(stats.bytes_in),
            bytes_out=dict(stats.bytes_out),
            requests=dict(stats.requests),
            latency={k: (list(v.counts), v.total) for k, v in stats.latency.items()},
            partitions=partitions,
            under_replicated=under_replicated,
            isr_shrinks=stats.isr_shrinks,
            isr_expands=stats.isr_expands,
            lags=consumer_group_lags(broker),
            rebalances=coordinator.rebalances if coordinator is not None else 0,
            connections=connections,
        )


class BrokerCollector:
    """The metric families of the snapshot being rendered (prometheus-client's custom
    collector protocol: `collect` yields them)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        # One scrape at a time renders through the broker's registry.
        self.lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        if snap is None:
            return
        yield from _topic_counters(snap)
        yield from _requests(snap)
        yield from _partitions(snap)
        yield GaugeMetricFamily(
            "kwire_under_replicated_partitions",
            "Partitions led here whose ISR is smaller than their replica set.",
            value=snap.under_replicated,
        )
        yield CounterMetricFamily(
            "kwire_isr_shrinks",
            "ISR shrinks of partitions led here (IsrShrinksPerSec).",
            value=snap.isr_shrinks,
        )
        yield CounterMetricFamily(
            "kwire_isr_expands",
            "ISR expansions of partitions led here (IsrExpandsPerSec).",
            value=snap.isr_expands,
        )
        lag = GaugeMetricFamily(
            "kwire_consumer_group_lag",
            "High watermark minus committed offset, for the groups coordinated here and the "
            "partitions led here.",
            labels=["group", "topic", "partition"],
        )
        for entry in snap.lags:
            lag.add_metric([entry.group, entry.topic, str(entry.partition)], entry.lag)
        yield lag
        yield CounterMetricFamily(
            "kwire_group_rebalances",
            "Rebalances begun in the groups coordinated here (a group entering PreparingRebalance).",
            value=snap.rebalances,
        )
        connections = GaugeMetricFamily(
            "kwire_connections", "Open client connections, by listener.", labels=["listener"]
        )
        for listener, value in sorted(snap.connections.items()):
            connections.add_metric([listener], value)
        yield connections


def _topic_counters(snap: Snapshot) -> Iterator[Metric]:
    for name, doc, counts in (
        (
            "kwire_messages_in",
            "Records appended by produce requests (MessagesInPerSec).",
            snap.messages_in,
        ),
        (
            "kwire_bytes_in",
            "Record batch bytes appended by produce requests (BytesInPerSec).",
            snap.bytes_in,
        ),
        (
            "kwire_bytes_out",
            "Record bytes answered to consumer fetches (BytesOutPerSec).",
            snap.bytes_out,
        ),
    ):
        family = CounterMetricFamily(name, doc, labels=["topic"])
        for topic, value in sorted(counts.items()):
            family.add_metric([topic], value)
        yield family


def _requests(snap: Snapshot) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "kwire_requests",
        "Requests answered, by API and the error of the answer (its top-level error, else its "
        "first partition's).",
        labels=["api", "error"],
    )
    for (api_key, error), value in sorted(snap.requests.items()):
        requests.add_metric([api_name(api_key), error_name(error)], value)
    yield requests
    latency = HistogramMetricFamily(
        "kwire_request_latency_seconds",
        "From the request read to its answer queued for writing, waits included (TotalTimeMs).",
        labels=["api"],
    )
    for api_key, (counts, total) in sorted(snap.latency.items()):
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        latency.add_metric([api_name(api_key)], buckets, total)
    yield latency


def _partitions(snap: Snapshot) -> Iterator[Metric]:
    labels = ["topic", "partition"]
    end = GaugeMetricFamily(
        "kwire_partition_log_end_offset", "The replica's log end offset.", labels=labels
    )
    hw = GaugeMetricFamily(
        "kwire_partition_high_watermark", "The replica's high watermark.", labels=labels
    )
    start = GaugeMetricFamily(
        "kwire_partition_log_start_offset", "The replica's log start offset.", labels=labels
    )
    size = GaugeMetricFamily(
        "kwire_partition_size_bytes", "Bytes of the replica's log segments.", labels=labels
    )
    for topic, index, log_end, high_watermark, log_start, size_bytes in snap.partitions:
        key = [topic, str(index)]
        end.add_metric(key, log_end)
        hw.add_metric(key, high_watermark)
        start.add_metric(key, log_start)
        size.add_metric(key, size_bytes)
    yield from (end, hw, start, size)
