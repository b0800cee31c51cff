"""SIGKILL during log cleaning, 20 times: no acknowledged record that should survive is lost.

One broker, one compacted topic whose clean section is large (100,000 keys of 100-byte
values: every pass rewrites some 12 MB from the log start, so it takes a noticeable
time). Each round produces more updates (acks=all, all acknowledged), waits until a
cleaning pass is under way (a `.cleaned` or `.swap` file in the partition directory),
then SIGKILLs the broker: in even rounds at a random moment within the duration of the
last pass the broker reported, in odd rounds as soon as a `.swap` file shows (the swap
itself: renames and directory fsyncs). The kill is counted as landing in a pass
when such files are still there after the process died. After the 20 kills the broker
starts again, the cleaner finishes, and the log must hold every key's last acknowledged
record, offsets increasing, one record per key in the cleaned section, and no `.cleaned`
or `.swap` file left.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from conftest import BrokerProcess
from test_compaction import (
    FAST_PRODUCER,
    Acked,
    checkpointed,
    create_topic,
    log_bytes,
    produce,
    read_log,
    wait_cleaned_to_active,
    wait_until,
)

KEYS = 100_000
KILLS = 20
UPDATES_PER_ROUND = 30_000
TOPIC = "crash-changelog"
CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": str(1 << 20),
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "1000",
}


def in_flight(directory: Path) -> list[str]:
    """The cleaner's files of a pass under way: new segments (`.cleaned`) or a swap."""
    try:
        return sorted(p.name for p in directory.iterdir() if p.name.endswith((".cleaned", ".swap")))
    except FileNotFoundError:
        return []


PASS_LINE = re.compile(rf"cleaned {TOPIC}-0: offsets .* ([0-9.]+) s, [0-9.]+ MB/s")


def last_pass_seconds(broker: BrokerProcess) -> float:
    """How long the broker's last pass took (its INFO line); 0.3 s before the first."""
    found = PASS_LINE.findall(broker.log_path.read_text(errors="replace"))
    return float(found[-1]) if found else 0.3


def updates(rng: random.Random, count: int, tag: int) -> list[tuple[bytes, bytes]]:
    value_tail = b"x" * 88
    return [(b"key-%06d" % rng.randrange(KEYS), b"%06d-%05d" % (tag, i) + value_tail) for i in range(count)]


def test_sigkill_during_cleaning_twenty_times_loses_nothing(broker_factory: Any) -> None:
    broker = broker_factory({"log.cleaner.backoff.ms": "100"})
    directory = create_topic(broker, TOPIC, CONFIG)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    acked = Acked()
    tail = b"y" * 88
    producer = Producer({"bootstrap.servers": broker.bootstrap, **FAST_PRODUCER})
    produce(producer, TOPIC, [(b"key-%06d" % k, b"init--%06d" % k + tail) for k in range(KEYS)], acked)

    landed: list[list[str]] = []
    started = time.monotonic()
    for round_ in range(KILLS):
        if broker.process is None:
            broker.start()
        produce(producer, TOPIC, updates(rng, UPDATES_PER_ROUND, round_), acked)
        wait_until(lambda: bool(in_flight(directory)), 30, f"a cleaning pass under way (round {round_})",
                   interval_s=0.005)
        if round_ % 2 == 0:
            # A random moment of a pass as long as the last one the broker reported.
            time.sleep(rng.uniform(0.0, 0.8 * last_pass_seconds(broker)))
        else:
            # Aim at the swap (a few ms of renames and directory fsyncs): kill as soon
            # as a `.swap` file shows, or after a while.
            deadline = time.monotonic() + 2 * last_pass_seconds(broker) + 1
            while time.monotonic() < deadline and not any(
                    n.endswith(".swap") for n in in_flight(directory)):
                pass
        broker.kill()
        left = in_flight(directory)
        if left:
            landed.append(left)
    killing_s = time.monotonic() - started

    broker.start()
    wait_cleaned_to_active(broker, TOPIC, timeout_s=90)
    records = read_log(broker.bootstrap, TOPIC)

    offsets = [r.offset for r in records]
    assert all(a < b for a, b in zip(offsets, offsets[1:], strict=False)), "offsets not increasing"
    # Every key's last acknowledged record is there, and it is the last of its key.
    last: dict[bytes, tuple[int, bytes | None]] = {}
    for r in records:
        last[r.key] = (r.offset, r.value)
    assert len(last) == KEYS
    wrong = [k for k, v in acked.latest.items() if last.get(k) != v]
    assert not wrong, f"{len(wrong)} keys lost their last acknowledged record, e.g. " + str(
        [(k, acked.latest[k], last.get(k)) for k in wrong[:3]])
    # The cleaned section holds one record per key; the rest is the active segment.
    first_dirty = checkpointed(broker.data_dir, TOPIC)
    assert first_dirty is not None
    cleaned = [r.key for r in records if r.offset < first_dirty]
    assert len(cleaned) == len(set(cleaned)), "superseded records left in the cleaned section"
    assert not in_flight(directory), in_flight(directory)
    size = log_bytes(directory)
    produced = acked.count * 110
    assert size < produced * 0.25, (size, produced)
    completed = broker.log_path.read_text(errors="replace").count("completed a cleaner swap interrupted")
    print(f"\n{KILLS} SIGKILLs (seed {seed}) in {killing_s:.1f} s, {len(landed)} of them during a "
          f"pass ({sum(1 for names in landed if any(n.endswith('.swap') for n in names))} with "
          f"a .swap file; the restarts completed {completed} interrupted segment swaps); "
          f"{acked.count:,} updates acknowledged, {len(records):,} records left, {size:,} bytes on disk")
    # Most kills land in a pass: a pass rewrites the whole clean section.
    assert len(landed) >= KILLS // 4, landed
