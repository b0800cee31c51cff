"""`kwire perf produce|consume TOPIC`: throughput and latency, as
kafka-producer-perf-test.sh and kafka-consumer-perf-test.sh measure them, through
confluent-kafka. The final summary is Kafka's line (stdout), so scripts written for
Kafka's tools read it; progress goes to stderr (a rich progress bar on a terminal,
Kafka's periodic lines otherwise)."""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from datetime import datetime
from typing import Any

from kwire.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_connection_args,
    kafka_client,
    parse_config_pairs,
    topic_partitions,
)
from kwire.cli.produce import add_producer_args, producer_config

# Kafka's tools print a progress line every 5 s.
REPORT_INTERVAL = 5.0
MB = 1024 * 1024
CONSUMER_HEADER = (
    "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, "
    "rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec"
)


def register(commands: Any) -> None:
    perf = commands.add_parser("perf", help="producer and consumer throughput and latency")
    modes = perf.add_subparsers(dest="mode", required=True, metavar="MODE")

    produce = modes.add_parser(
        "produce",
        help="send records as fast as asked, as kafka-producer-perf-test.sh",
        description="Send --num-records records of --record-size bytes and report "
        "throughput and latency (send to acknowledgement) percentiles.",
    )
    produce.add_argument("topic", metavar="TOPIC")
    produce.add_argument("--num-records", type=int, required=True, metavar="N")
    produce.add_argument("--record-size", type=int, required=True, metavar="BYTES")
    produce.add_argument(
        "--throughput",
        type=float,
        default=-1,
        metavar="RECORDS/S",
        help="at most this many records a second (-1: no limit)",
    )
    add_producer_args(produce, property_option="--producer-property")
    add_connection_args(produce)
    produce.set_defaults(run=run_perf_produce)

    consume = modes.add_parser(
        "consume",
        help="read records as fast as possible, as kafka-consumer-perf-test.sh",
        description="Read --messages records from the beginning and report throughput. "
        "Stops, exit 1, if no record came for --timeout seconds before that.",
    )
    consume.add_argument("topic", metavar="TOPIC")
    consume.add_argument("--messages", type=int, required=True, metavar="N")
    consume.add_argument(
        "--group", metavar="GROUP", help="consumer group (perf-consumer-<random>, as Kafka's)"
    )
    consume.add_argument(
        "--consumer-property",
        action="append",
        dest="consumer_properties",
        metavar="KEY=VALUE",
        help="a consumer property, passed to librdkafka as it is (repeatable)",
    )
    add_connection_args(consume)
    consume.set_defaults(run=run_perf_consume)


class Progress:
    """Progress on stderr: a rich bar on a terminal, else a line every REPORT_INTERVAL
    (Kafka's window lines) from `window_line()`."""

    def __init__(self, total: int, what: str, window_line: Any) -> None:
        self.window_line = window_line
        self.bar: Any = None
        self.next_report = time.monotonic() + REPORT_INTERVAL
        self.next_redraw = 0.0
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn(what),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.task = self.bar.add_task(what, total=total, rate="")
            self.bar.start()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if self.bar is not None and now >= self.next_redraw:
            self.next_redraw = now + 0.1  # rich redraws 10 times a second anyway
            self.bar.update(self.task, completed=done)
        if now >= self.next_report:
            self.next_report = now + REPORT_INTERVAL
            line = self.window_line()
            if self.bar is not None:
                self.bar.update(self.task, rate=line.split(",")[1].strip())
            else:
                print(line, file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# --- produce -------------------------------------------------------------------------


class ProducerStats:
    """Latencies (ms, send to delivery callback) of every delivered record, and Kafka's
    window counters for the periodic line."""

    def __init__(self, record_size: int) -> None:
        self.record_size = record_size
        self.start = time.monotonic()
        self.latencies: list[float] = []
        self.failed = 0
        self.errors: dict[str, int] = {}
        self.window_start = self.start
        self.window_count = 0
        self.window_latency = 0.0
        self.window_max = 0.0

    def callback(self, sent_at: float) -> Any:
        def on_delivery(error: Any, message: Any) -> None:
            if error is not None:
                self.failed += 1
                name = f"{error.name()}: {error.str()}"
                self.errors[name] = self.errors.get(name, 0) + 1
                return
            latency = (time.monotonic() - sent_at) * 1000
            self.latencies.append(latency)
            self.window_count += 1
            self.window_latency += latency
            self.window_max = max(self.window_max, latency)

        return on_delivery

    def window_line(self) -> str:
        now = time.monotonic()
        elapsed = max(now - self.window_start, 1e-9)
        count = self.window_count
        line = (
            f"{count} records sent, {count / elapsed:.1f} records/sec "
            f"({count * self.record_size / elapsed / MB:.2f} MB/sec), "
            f"{self.window_latency / max(count, 1):.1f} ms avg latency, "
            f"{self.window_max:.1f} ms max latency."
        )
        self.window_start, self.window_count = now, 0
        self.window_latency = self.window_max = 0.0
        return line

    def total_line(self) -> str:
        """Kafka's ProducerPerformance summary."""
        elapsed = max(time.monotonic() - self.start, 1e-9)
        count = len(self.latencies)
        ordered = sorted(self.latencies)

        def percentile(p: float) -> int:
            return int(ordered[min(int(p * count), count - 1)]) if count else 0

        return (
            f"{count} records sent, {count / elapsed:f} records/sec "
            f"({count * self.record_size / elapsed / MB:.2f} MB/sec), "
            f"{sum(ordered) / max(count, 1):.2f} ms avg latency, "
            f"{(ordered[-1] if ordered else 0):.2f} ms max latency, "
            f"{percentile(0.5)} ms 50th, {percentile(0.95)} ms 95th, "
            f"{percentile(0.99)} ms 99th, {percentile(0.999)} ms 99.9th."
        )


def run_perf_produce(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException, Producer

    if args.num_records <= 0 or args.record_size < 0:
        raise CliError("--num-records must be positive and --record-size not negative", 2)
    if args.throughput == 0:
        raise CliError("--throughput must be positive, or -1 for no limit", EXIT_USAGE)
    producer = kafka_client(Producer, args, producer_config(args))
    topic_partitions(producer, args.topic, args.timeout)
    # As Kafka's tool: one payload of random upper-case letters, sent N times.
    payload = bytes(random.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(args.record_size))
    stats = ProducerStats(args.record_size)
    progress = Progress(args.num_records, "produce", stats.window_line)
    try:
        for sent in range(args.num_records):
            if args.throughput > 0:
                # Kafka's ThroughputThrottler: ahead of the target rate, wait (serving
                # delivery callbacks meanwhile).
                due = stats.start + sent / args.throughput
                while (ahead := due - time.monotonic()) > 0:
                    producer.poll(ahead)  # returns early when it served a callback
            while True:
                try:
                    producer.produce(
                        args.topic, payload, on_delivery=stats.callback(time.monotonic())
                    )
                    break
                except BufferError:
                    producer.poll(0.01)
                except KafkaException as e:
                    raise CliError(f"topic {args.topic}: {e.args[0].str()}") from None
            producer.poll(0)
            if sent % 64 == 0 or args.throughput > 0:
                progress.update(len(stats.latencies))
        left = producer.flush(args.timeout + 5)
    finally:
        progress.stop()
    print(stats.total_line(), flush=True)
    failed = stats.failed + left
    if failed:
        for reason, count in stats.errors.items():
            print(f"kwire: {count} records failed: {reason}", file=sys.stderr)
        if left:
            print(f"kwire: {left} records were not acknowledged in time", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# --- consume -------------------------------------------------------------------------


def _kafka_time(timestamp: float) -> str:
    """Kafka's perf-test date format, yyyy-MM-dd HH:mm:ss:SSS."""
    moment = datetime.fromtimestamp(timestamp)
    return moment.strftime("%Y-%m-%d %H:%M:%S:") + f"{moment.microsecond // 1000:03d}"


def run_perf_consume(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer

    if args.messages <= 0:
        raise CliError("--messages must be positive", EXIT_USAGE)
    group = args.group or f"perf-consumer-{uuid.uuid4().int % 100000}"
    config = {
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    }
    config.update(parse_config_pairs(args.consumer_properties, "consumer property"))
    consumer = kafka_client(Consumer, args, config)
    assigned_at: list[float] = []
    count = 0
    size = 0
    window = [time.monotonic(), 0, 0]  # start, records, bytes

    def window_line() -> str:
        now = time.monotonic()
        elapsed = max(now - window[0], 1e-9)
        line = (
            f"{window[1]} records consumed, {window[1] / elapsed:.1f} records/sec "
            f"({window[2] / elapsed / MB:.4f} MB/sec)"
        )
        window[:] = [now, 0, 0]
        return line

    try:
        topic_partitions(consumer, args.topic, args.timeout)
        start_wall, start = time.time(), time.monotonic()
        consumer.subscribe(
            [args.topic], on_assign=lambda c, ps: assigned_at.append(time.monotonic())
        )
        progress = Progress(args.messages, "consume", window_line)
        last_record = time.monotonic()
        try:
            while count < args.messages:
                messages = consumer.consume(min(500, args.messages - count), 0.5)
                now = time.monotonic()
                if not messages and now - last_record > args.timeout:
                    break
                for message in messages:
                    if message.error() is not None:
                        error = message.error()
                        if error.fatal() or error.name() in ("UNKNOWN_TOPIC_OR_PART",):
                            raise CliError(f"topic {args.topic}: {error.name()}: {error.str()}")
                        continue
                    count += 1
                    record_bytes = len(message.value() or b"") + len(message.key() or b"")
                    size += record_bytes
                    window[1] += 1
                    window[2] += record_bytes
                    last_record = now
                progress.update(count)
        finally:
            progress.stop()
        end_wall, end = time.time(), time.monotonic()
    finally:
        consumer.close()
    elapsed = max(end - start, 1e-9)
    rebalance = (assigned_at[0] - start) if assigned_at else 0.0
    fetch = max(elapsed - rebalance, 1e-9)
    megabytes = size / MB
    print(CONSUMER_HEADER)
    print(
        f"{_kafka_time(start_wall)}, {_kafka_time(end_wall)}, {megabytes:.4f}, "
        f"{megabytes / elapsed:.4f}, {count}, {count / elapsed:.4f}, {int(rebalance * 1000)}, "
        f"{int(fetch * 1000)}, {megabytes / fetch:.4f}, {count / fetch:.4f}",
        flush=True,
    )
    if count < args.messages:
        print(
            f"kwire: exiting before consuming the expected number of messages: no record for "
            f"{args.timeout:g} s ({count} of {args.messages}); --timeout sets how long",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK
