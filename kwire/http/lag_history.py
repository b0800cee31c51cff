"""Consumer group lag over the last hour, for the web console's charts.

`LagHistory` is a sans-IO ring buffer of samples (time, group, total lag, lag per
partition) that forgets what is older than its window; `run_lag_sampler` is the trio
task that fills it every `http.console.lag.sample.interval.ms` from the lags
kwire.metrics computes (one lag computation for /metrics and the console).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from kwire.clock import now_ms

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000


class PartitionLag(Protocol):
    """What a sample needs of kwire.metrics.GroupLag."""

    @property
    def group(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def lag(self) -> int: ...


@dataclass(frozen=True, slots=True)
class LagSample:
    time_ms: int
    group: str
    total_lag: int
    # (topic, partition, lag), sorted.
    partitions: tuple[tuple[str, int, int], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "time_ms": self.time_ms,
            "total_lag": self.total_lag,
            "partitions": [
                {"topic": t, "partition": p, "lag": lag} for t, p, lag in self.partitions
            ],
        }


class LagHistory:
    """Per group, the samples of the last `window_ms`, oldest first."""

    def __init__(self, interval_ms: int, window_ms: int = HOUR_MS) -> None:
        self.interval_ms = interval_ms
        self.window_ms = window_ms
        # Bounds memory even if the clock stalls or samples come faster than planned.
        self._max_samples = max(2, window_ms // max(interval_ms, 1) + 2)
        self._by_group: dict[str, deque[LagSample]] = {}

    def record(self, time_ms: int, lags: Iterable[PartitionLag]) -> None:
        """One sample per group present in `lags`, then forget what fell out of the window
        (a group gone for an hour disappears)."""
        by_group: dict[str, list[tuple[str, int, int]]] = {}
        for entry in lags:
            by_group.setdefault(entry.group, []).append((entry.topic, entry.partition, entry.lag))
        for group, partitions in by_group.items():
            partitions.sort()
            sample = LagSample(
                time_ms, group, sum(lag for _, _, lag in partitions), tuple(partitions)
            )
            samples = self._by_group.get(group)
            if samples is None:
                samples = self._by_group[group] = deque(maxlen=self._max_samples)
            samples.append(sample)
        self._expire(time_ms)

    def _expire(self, time_ms: int) -> None:
        oldest = time_ms - self.window_ms
        for group in list(self._by_group):
            samples = self._by_group[group]
            while samples and samples[0].time_ms < oldest:
                samples.popleft()
            if not samples:
                del self._by_group[group]

    def samples(self, group: str, time_ms: int) -> list[LagSample]:
        """The group's samples within the window ending at `time_ms`, oldest first."""
        oldest = time_ms - self.window_ms
        return [s for s in self._by_group.get(group, ()) if s.time_ms >= oldest]

    def groups(self) -> list[str]:
        return sorted(self._by_group)


async def run_lag_sampler(
    history: LagHistory,
    lags: Callable[[], Iterable[PartitionLag]],
    *,
    clock: Callable[[], int] = now_ms,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Sample `lags()` into `history` at once and then every history.interval_ms, until
    cancelled. A failing sample is logged and the next one tried."""
    task_status.started()
    while True:
        try:
            history.record(clock(), lags())
        except Exception:
            log.exception("consumer group lag sample failed")
        await trio.sleep(history.interval_ms / 1000)
