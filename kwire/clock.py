"""The wall clock in Kafka's milliseconds, in a module of its own so that the broker
and the coordinators (which the broker imports) can both use it without a cycle."""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
