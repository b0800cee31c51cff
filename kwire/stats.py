"""The counters the broker bumps as things happen, as plain ints (kwire.metrics exports
them at scrape time): what the produce and fetch paths pay is a dict increment, and
nothing here imports prometheus-client.

Everything else /metrics shows (log offsets, ISR, lag, connections) is read from the
broker's own state when scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

# kwire_request_latency_seconds' upper bounds (Kafka's TotalTimeMs spans sub-millisecond
# answers to long polls of fetch.max.wait.ms and beyond).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class RequestLatency:
    """One API's latency histogram: a count per bucket (not cumulative; the last is +Inf)
    and the sum of the observations."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0


class BrokerStats:
    """Kafka's BrokerTopicStats, request and replica manager meters, as counters."""

    def __init__(self) -> None:
        # topic -> records / record batch bytes appended by produce requests
        # (Kafka's MessagesInPerSec, BytesInPerSec).
        self.messages_in: defaultdict[str, int] = defaultdict(int)
        self.bytes_in: defaultdict[str, int] = defaultdict(int)
        # topic -> record bytes answered to consumers' fetches (BytesOutPerSec: followers'
        # fetches are replication, not counted).
        self.bytes_out: defaultdict[str, int] = defaultdict(int)
        # (API key, error code of the answer) -> requests answered.
        self.requests: defaultdict[tuple[int, int], int] = defaultdict(int)
        # API key -> latency from the request read to its answer queued for writing.
        self.latency: dict[int, RequestLatency] = {}
        # The replica manager's IsrShrinksPerSec / IsrExpandsPerSec, of partitions led here.
        self.isr_shrinks = 0
        self.isr_expands = 0

    def request_done(self, api_key: int, error: int, seconds: float) -> None:
        self.requests[api_key, error] += 1
        latency = self.latency.get(api_key)
        if latency is None:
            latency = self.latency[api_key] = RequestLatency()
        latency.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        latency.total += seconds
