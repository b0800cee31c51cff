"""Prometheus metrics of one broker (GET /metrics on the HTTP listener).

Kafka's broker metrics under the `kwire_` namespace. Most are read from the broker's own
state at scrape time (custom collectors); the few that must be counted as things happen
are plain ints in `broker.stats` (kwire.stats), so the produce and fetch paths pay a dict
increment and nothing of prometheus-client. Each broker has its own registry: tests run
several brokers in one process.

Consumer group lag is not a Kafka broker metric (Kafka leaves it to clients and tools);
here it covers the groups whose `__consumer_offsets` partition this broker leads, and of
their committed partitions those this broker leads (where the high watermark is known).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

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

# broker.services key of the broker's own CollectorRegistry.
REGISTRY = "metrics_registry"


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
    """GET /metrics: the broker's metrics in Prometheus' text format, and its content type."""
    return generate_latest(registry(broker)), CONTENT_TYPE_LATEST


def registry(broker: Broker) -> CollectorRegistry:
    """The broker's registry, made on first use: its collectors and the process's."""
    found = broker.services.get(REGISTRY)
    if found is None:
        found = broker.services[REGISTRY] = CollectorRegistry(auto_describe=False)
        found.register(BrokerCollector(broker))
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


class BrokerCollector:
    """Reads the broker's state and stats at scrape time (prometheus-client's custom
    collector protocol: `collect` yields the metric families)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        yield from self._topic_counters()
        yield from self._requests()
        yield from self._partitions()
        yield from self._replication()
        yield from self._groups()
        yield self._connections()

    def _topic_counters(self) -> Iterator[Metric]:
        stats = self.broker.stats
        for name, doc, counts in (
            (
                "kwire_messages_in",
                "Records appended by produce requests (MessagesInPerSec).",
                stats.messages_in,
            ),
            (
                "kwire_bytes_in",
                "Record batch bytes appended by produce requests (BytesInPerSec).",
                stats.bytes_in,
            ),
            (
                "kwire_bytes_out",
                "Record bytes answered to consumer fetches (BytesOutPerSec).",
                stats.bytes_out,
            ),
        ):
            family = CounterMetricFamily(name, doc, labels=["topic"])
            for topic, value in sorted(counts.items()):
                family.add_metric([topic], value)
            yield family

    def _requests(self) -> Iterator[Metric]:
        stats = self.broker.stats
        requests = CounterMetricFamily(
            "kwire_requests",
            "Requests answered, by API and the error of the answer (its top-level error, else its first partition's).",
            labels=["api", "error"],
        )
        for (api_key, error), value in sorted(stats.requests.items()):
            requests.add_metric([api_name(api_key), error_name(error)], value)
        yield requests
        latency = HistogramMetricFamily(
            "kwire_request_latency_seconds",
            "From the request read to its answer queued for writing, waits included (TotalTimeMs).",
            labels=["api"],
        )
        for api_key, histogram in sorted(stats.latency.items()):
            cumulative = 0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip(
                (*LATENCY_BUCKETS, float("inf")), histogram.counts, strict=True
            ):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([api_name(api_key)], buckets, histogram.total)
        yield latency

    def _partitions(self) -> Iterator[Metric]:
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
        for partition in list(self.broker.all_partitions()):
            key = [partition.topic.name, str(partition.index)]
            log = partition.log
            end.add_metric(key, log.log_end_offset)
            hw.add_metric(key, log.high_watermark)
            start.add_metric(key, log.log_start_offset)
            size.add_metric(key, log.size_bytes)
        yield from (end, hw, start, size)

    def _replication(self) -> Iterator[Metric]:
        broker = self.broker
        under = 0
        for partition in list(broker.all_partitions()):
            replication = partition.replication
            if (
                replication is not None
                and replication.is_leader
                and len(replication.isr) < len(replication.replicas)
            ):
                under += 1
        yield GaugeMetricFamily(
            "kwire_under_replicated_partitions",
            "Partitions led here whose ISR is smaller than their replica set.",
            value=under,
        )
        yield CounterMetricFamily(
            "kwire_isr_shrinks",
            "ISR shrinks of partitions led here (IsrShrinksPerSec).",
            value=broker.stats.isr_shrinks,
        )
        yield CounterMetricFamily(
            "kwire_isr_expands",
            "ISR expansions of partitions led here (IsrExpandsPerSec).",
            value=broker.stats.isr_expands,
        )

    def _groups(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "kwire_consumer_group_lag",
            "High watermark minus committed offset, for the groups coordinated here and the partitions led here.",
            labels=["group", "topic", "partition"],
        )
        for entry in consumer_group_lags(self.broker):
            lag.add_metric([entry.group, entry.topic, str(entry.partition)], entry.lag)
        yield lag
        coordinator = group_coordinator(self.broker)
        yield CounterMetricFamily(
            "kwire_group_rebalances",
            "Rebalances begun in the groups coordinated here (a group entering PreparingRebalance).",
            value=coordinator.rebalances if coordinator is not None else 0,
        )

    def _connections(self) -> Metric:
        broker = self.broker
        counts = {listener.name: 0 for listener in broker.config.listeners}
        server = broker.services.get("kafka_server")
        for connection in list(server.connections) if server is not None else ():
            counts[connection.listener_name] = counts.get(connection.listener_name, 0) + 1
        family = GaugeMetricFamily(
            "kwire_connections", "Open client connections, by listener.", labels=["listener"]
        )
        for listener, value in sorted(counts.items()):
            family.add_metric([listener], value)
        return family
