"""What makes a phase an error rather than a figure: pure functions, tested in
tests/test_gates.py. A benchmark that loses messages or runs on the wrong topic must not
report figures as if all were well, and `--fail-on-error` must see it."""

from __future__ import annotations

import statistics


def latency_figures(lat_ns: list[int], sent: int, unacknowledged: int, end_seen: bool) -> tuple[dict, list[str]]:
    """Percentiles of the steady-state latencies, and the errors of the phase.

    Every one of the `sent` messages must have been acknowledged and received once: a
    missing message has no latency, and percentiles over the ones that arrived would
    describe a run that did not happen, so with any error no figures are given."""
    errors = []
    if unacknowledged:
        errors.append(f"{unacknowledged} messages unacknowledged by the producer's flush")
    if len(lat_ns) < sent:
        errors.append(f"lost {sent - len(lat_ns)} of {sent} steady-state messages")
    elif len(lat_ns) > sent:
        errors.append(f"received {len(lat_ns)} steady-state messages, {sent} were sent (duplicates)")
    if not end_seen:
        errors.append("END marker not received before the deadline")
    if errors or not lat_ns:
        return {}, errors or ["no steady-state message received"]
    lat = sorted(lat_ns)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6

    return {"p50_ms": statistics.median(lat) / 1e6, "p99_ms": pct(0.99), "max_ms": lat[-1] / 1e6}, []


def partition_error(topic: str, want: int, got: int) -> str | None:
    """A produce phase on a topic with another partition count measures something else."""
    if got != want:
        return f"topic {topic} has {got} partitions, not {want}"
    return None


def count_error(what: str, want: int, got: int) -> str | None:
    """Exactly `want` messages, no fewer (lost) and no more (duplicated)."""
    if got < want:
        return f"{what}: {got} of {want} messages (lost {want - got})"
    if got > want:
        return f"{what}: {got} messages, {want} expected ({got - want} duplicates)"
    return None


def run_errors(results: dict[str, dict[str, list[dict]]], broker_errors: list[str]) -> list[str]:
    """Everything that fails `--fail-on-error`: every failed attempt of every phase, and
    the broker-level errors (died and had to be restarted, did not stop cleanly, could
    not be run at all)."""
    out = list(broker_errors)
    for broker, phases in results.items():
        for phase, attempts in phases.items():
            for r in attempts:
                if r.get("ok") is not True:
                    out.append(f"{broker} / {phase}: {r.get('error', 'no result')}")
                # Figures measured, but the data is wrong (messages lost or duplicated).
                out.extend(f"{broker} / {phase}: {e}" for e in r.get("data_errors", ()))
    return out
