"""The web console's lag history alone: the ring buffer with explicit times, and the
sampler task on trio's MockClock (virtual time: no test sleeps)."""

from __future__ import annotations

from dataclasses import dataclass

import trio
import trio.testing

from kwire.http.lag_history import HOUR_MS, LagHistory, LagSample, run_lag_sampler


@dataclass(frozen=True)
class Lag:
    group: str
    topic: str
    partition: int
    lag: int


def test_a_sample_per_group_with_its_total_and_partitions_sorted() -> None:
    history = LagHistory(interval_ms=15_000)
    history.record(1_000, [Lag("g1", "t", 1, 5), Lag("g2", "t", 0, 0), Lag("g1", "a", 0, 2)])
    assert history.groups() == ["g1", "g2"]
    assert history.samples("g1", 1_000) == [LagSample(1_000, "g1", 7, (("a", 0, 2), ("t", 1, 5)))]
    assert history.samples("g1", 1_000)[0].to_json() == {
        "time_ms": 1_000,
        "total_lag": 7,
        "partitions": [
            {"topic": "a", "partition": 0, "lag": 2},
            {"topic": "t", "partition": 1, "lag": 5},
        ],
    }
    assert history.samples("nobody", 1_000) == []


def test_samples_older_than_the_window_are_forgotten_and_gone_groups_disappear() -> None:
    history = LagHistory(interval_ms=15_000)
    for i in range(300):  # 75 minutes of samples of g1; g2 only in the first minute
        lags = [Lag("g1", "t", 0, i)] + ([Lag("g2", "t", 0, 1)] if i < 4 else [])
        history.record(i * 15_000, lags)
    now = 299 * 15_000
    samples = history.samples("g1", now)
    assert samples[0].time_ms == now - HOUR_MS and samples[-1].time_ms == now
    assert [s.total_lag for s in samples] == list(range(299 - 240, 300))
    assert history.groups() == ["g1"]
    # Read later than the last sample: the window ends at the reader's time.
    assert [s.total_lag for s in history.samples("g1", now + 30_000)][:2] == [61, 62]


def test_memory_is_bounded_even_when_samples_come_faster_than_the_interval() -> None:
    history = LagHistory(interval_ms=60_000)
    for i in range(1_000):
        history.record(5_000, [Lag("g", "t", 0, i)])
    samples = history.samples("g", 5_000)
    assert len(samples) == HOUR_MS // 60_000 + 2
    assert samples[-1].total_lag == 999


def test_the_sampler_samples_at_once_then_every_interval_on_a_fake_clock() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    calls: list[float] = []

    def lags() -> list[Lag]:
        calls.append(trio.current_time())
        if len(calls) == 3:
            raise RuntimeError("a failing sample is logged and skipped")
        return [Lag("g", "t", 0, len(calls))]

    async def main() -> None:
        history = LagHistory(interval_ms=15_000)
        with trio.move_on_after(50):
            await run_lag_sampler(history, lags, clock=lambda: int(trio.current_time() * 1000))
        start = calls[0]
        assert [c - start for c in calls] == [0, 15, 30, 45]
        samples = history.samples("g", int(calls[-1] * 1000))
        assert [s.time_ms - int(start * 1000) for s in samples] == [0, 15_000, 45_000]
        assert [s.total_lag for s in samples] == [1, 2, 4]

    trio.run(main, clock=clock)
