"""`kwire perf produce|consume` against a real broker: Kafka's summary lines parsed,
counts exact (checked against the partition's offsets), --throughput holding the
rate, the periodic lines on a non-terminal stderr, a short consume reported with exit
1, and the error paths."""

from __future__ import annotations

import re
import time
from typing import Any

from cli_helpers import closed_bootstrap, failed, ok, run_cli
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT = 30
PRODUCE_SUMMARY = re.compile(
    r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th\.$"
)
CONSUME_HEADER = (
    "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, "
    "rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec"
)


def create_topic(broker: Any, name: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(TIMEOUT)


def end_offsets(broker: Any, topic: str, partitions: int) -> int:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "probe"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT)[1]
            for p in range(partitions)
        )
    finally:
        consumer.close()


def perf(broker: Any, *args: str) -> Any:
    return run_cli("perf", *args, "--bootstrap-server", broker.bootstrap, timeout=120)


def produce_summary(out: str) -> tuple[Any, ...]:
    [line] = out.splitlines()
    match = PRODUCE_SUMMARY.match(line)
    assert match, line
    count, rate, mb, avg, top, p50, p95, p99, p999 = match.groups()
    return (
        int(count),
        float(rate),
        float(mb),
        float(avg),
        float(top),
        int(p50),
        int(p95),
        int(p99),
        int(p999),
    )


def consume_summary(out: str) -> list[str]:
    header, line = out.splitlines()
    assert header == CONSUME_HEADER
    values = line.split(", ")
    assert len(values) == 10
    return values


def test_produce_then_consume(broker: Any) -> None:
    create_topic(broker, "bench", partitions=3)
    result = perf(
        broker,
        "produce",
        "bench",
        "--num-records",
        "3000",
        "--record-size",
        "100",
        "--compression",
        "lz4",
        "--acks",
        "1",
        "--producer-property",
        "linger.ms=5",
    )
    count, rate, mb, avg, top, p50, p95, p99, p999 = produce_summary(ok(result))
    assert count == 3000 and rate > 0 and mb > 0
    assert 0 <= p50 <= p95 <= p99 <= p999 <= top + 1 and avg <= top
    assert end_offsets(broker, "bench", 3) == 3000

    values = consume_summary(ok(perf(broker, "consume", "bench", "--messages", "3000")))
    assert values[4] == "3000"
    assert float(values[2]) == round(3000 * 100 / 1024 / 1024, 4)
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3}$", values[0])
    assert float(values[5]) > 0 and int(values[6]) >= 0 and int(values[7]) >= 0


def test_throughput_and_progress_lines(broker: Any) -> None:
    create_topic(broker, "paced")
    started = time.monotonic()
    # 1300 records at 200/s: 6.5 s, so one 5 s progress line (stderr is a pipe here).
    result = perf(
        broker,
        "produce",
        "paced",
        "--num-records",
        "1300",
        "--record-size",
        "10",
        "--throughput",
        "200",
    )
    elapsed = time.monotonic() - started
    count, rate, *_ = produce_summary(ok(result))
    assert count == 1300 and 150 <= rate <= 210
    assert elapsed >= 6.0
    progress = [line for line in result.stderr.splitlines() if "records sent" in line]
    assert progress and all(line.endswith("ms max latency.") for line in progress)


def test_consume_fewer_than_asked(broker: Any) -> None:
    create_topic(broker, "short")
    ok(perf(broker, "produce", "short", "--num-records", "50", "--record-size", "20"))
    result = perf(broker, "consume", "short", "--messages", "80", "--group", "pg", "--timeout", "2")
    failed(result, 1, "expected number of messages", "50 of 80")
    assert consume_summary(result.stdout)[4] == "50"


def test_error_paths(broker: Any) -> None:
    failed(perf(broker, "consume", "missing", "--messages", "5"), 1, "UNKNOWN_TOPIC_OR_PART")
    failed(
        run_cli(
            "perf", "produce", "t", "--num-records", "5", "--record-size", "5",
            "--bootstrap-server", closed_bootstrap(), "--timeout", "3",
        ),
        3,
        "cannot reach",
    )  # fmt: skip
    failed(
        perf(broker, "produce", "t", "--num-records", "5", "--record-size", "5",
             "--compression", "brotli"),
        2,
        "invalid choice",
    )  # fmt: skip
    failed(perf(broker, "produce", "t", "--record-size", "5"), 2, "--num-records")
    failed(perf(broker, "produce", "t", "--num-records", "0", "--record-size", "5"), 2, "positive")
