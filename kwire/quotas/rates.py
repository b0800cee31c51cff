"""Kafka's metrics stats for quotas, sans-IO: every call takes `now` in seconds.

- `WindowedSum` is Kafka's SampledStat/WindowedSum: `samples` windows of `window`
  seconds each (quota.window.num, quota.window.size.seconds), kept in a ring with
  one extra slot for the window that overlaps the start of the measured span.
- `Rate` divides that sum by Kafka's Rate.windowSize: the time the retained samples
  cover, and at least (samples - 1) full windows, so that a new client's first bytes
  are not divided by a few milliseconds.
- `TokenBucket` is the stat of the controller mutation quota (KIP-599): tokens refill
  at the quota up to a burst of samples * window * quota.

The arithmetic follows org.apache.kafka.common.metrics.stats (Kafka counts in
milliseconds; here seconds are floats, so the results are the same numbers /1000).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Sample:
    start: float
    last_event: float
    value: float = 0.0
    event_count: int = 0

    def reset(self, now: float) -> None:
        self.start = now
        self.last_event = now
        self.value = 0.0
        self.event_count = 0


class WindowedSum:
    """The sum of the values recorded in the last `samples` windows of `window` seconds."""

    __slots__ = ("samples", "window", "_ring", "_current")

    def __init__(self, samples: int, window: float) -> None:
        if samples < 1 or window <= 0:
            raise ValueError("a sampled stat needs at least one window of positive length")
        self.samples = samples
        self.window = window
        self._ring: list[_Sample] = []
        self._current = 0

    def record(self, value: float, now: float) -> None:
        sample = self._current_sample(now)
        if now - sample.start >= self.window:
            sample = self._advance(now)
        sample.value += value
        sample.event_count += 1
        sample.last_event = now

    def measure(self, now: float) -> float:
        self.purge_obsolete(now)
        return sum(s.value for s in self._ring)

    def purge_obsolete(self, now: float) -> None:
        """Reset samples with no event in the monitored span; one that started before
        the span but had events in it is kept (Kafka's overlapping sample)."""
        expire_age = self.samples * self.window
        for sample in self._ring:
            if now - sample.last_event >= expire_age:
                sample.reset(now)

    def oldest_start(self, now: float) -> float:
        if not self._ring:
            self._ring.append(_Sample(now, now))
        return min(s.start for s in self._ring)

    def last_event(self) -> float:
        """When a value was last recorded (or the stat created): for expiring idle stats."""
        return max((s.last_event for s in self._ring), default=float("-inf"))

    def _current_sample(self, now: float) -> _Sample:
        if not self._ring:
            self._ring.append(_Sample(now, now))
        return self._ring[self._current]

    def _advance(self, now: float) -> _Sample:
        # samples + 1 slots: the extra one holds the overlapping sample.
        self._current = (self._current + 1) % (self.samples + 1)
        if self._current >= len(self._ring):
            sample = _Sample(now, now)
            self._ring.append(sample)
            return sample
        sample = self._ring[self._current]
        sample.reset(now)
        return sample


class Rate:
    """Kafka's Rate over a WindowedSum: units per second."""

    __slots__ = ("stat",)

    def __init__(self, samples: int, window: float) -> None:
        self.stat = WindowedSum(samples, window)

    def record(self, value: float, now: float) -> None:
        self.stat.record(value, now)

    def measure(self, now: float) -> float:
        total = self.stat.measure(now)
        return total / self.window_size(now)

    def window_size(self, now: float) -> float:
        """Seconds the rate is measured over (Kafka's Rate.windowSize)."""
        stat = self.stat
        stat.purge_obsolete(now)
        elapsed = now - stat.oldest_start(now)
        full_windows = int(elapsed // stat.window)
        min_full_windows = stat.samples - 1
        if full_windows < min_full_windows:
            elapsed += (min_full_windows - full_windows) * stat.window
        # At the very start of a window with no history the span is 0: Kafka takes 1 ms.
        return max(elapsed, 0.001)

    def last_event(self) -> float:
        return self.stat.last_event()


class TokenBucket:
    """Kafka's TokenBucket: starts full; `record` takes tokens, time gives them back at
    `quota` per second up to the burst. Negative tokens mean the quota is exceeded."""

    __slots__ = ("samples", "window", "tokens", "_last_update", "_last_event")

    def __init__(self, samples: int, window: float, quota: float, now: float) -> None:
        self.samples = samples
        self.window = window
        self.tokens = self.burst(quota)
        self._last_update = now
        self._last_event = now

    def burst(self, quota: float) -> float:
        return self.samples * self.window * quota

    def measure(self, quota: float, now: float) -> float:
        """The tokens left at `now` under `quota` (which may have changed since)."""
        self._refill(quota, now)
        return self.tokens

    def record(self, value: float, quota: float, now: float) -> None:
        self._refill(quota, now)
        self.tokens = min(self.burst(quota), self.tokens - value)
        self._last_event = now

    def _refill(self, quota: float, now: float) -> None:
        elapsed = max(0.0, now - self._last_update)
        self.tokens = min(self.burst(quota), self.tokens + quota * elapsed)
        self._last_update = max(self._last_update, now)

    def last_event(self) -> float:
        return self._last_event
