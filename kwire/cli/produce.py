"""`kwire produce TOPIC`: one record per line of stdin, as kafka-console-producer.sh
(and kcat -P) send them, through confluent-kafka's Producer. Every record is waited for
(flush): a record the cluster refused is reported with Kafka's error name and the exit
code is 1."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import IO, Any

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

COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")
ACKS = ("0", "1", "all", "-1")
# As a shell reports a process ended by SIGINT.
EXIT_INTERRUPTED = 130
# Failures reported one by one; past these, only counted.
MAX_REPORTED_FAILURES = 10


def register(commands: Any) -> None:
    produce = commands.add_parser(
        "produce",
        help="send lines of stdin as records",
        description="Send each line of stdin as one record to TOPIC, and wait for every one.",
    )
    produce.add_argument("topic", metavar="TOPIC")
    add_producer_args(produce, property_option="--property")
    produce.add_argument(
        "--key-separator",
        metavar="SEP",
        help="each line is KEY SEP VALUE, split at the first SEP (default: no key)",
    )
    produce.add_argument(
        "--header",
        action="append",
        metavar="KEY=VALUE",
        help="a header on every record (repeatable)",
    )
    produce.add_argument(
        "--partition", type=int, metavar="N", help="send to this partition (default: by key)"
    )
    add_connection_args(produce)
    produce.set_defaults(run=run_produce)


def add_producer_args(parser: argparse.ArgumentParser, property_option: str) -> None:
    """--compression, --acks and the producer properties passed through (also kwire perf)."""
    parser.add_argument(
        "--compression",
        choices=COMPRESSION_TYPES,
        default="none",
        help="compression.type of the batches (none)",
    )
    parser.add_argument(
        "--acks", choices=ACKS, default="all", help="acknowledgements to wait for (all)"
    )
    parser.add_argument(
        property_option,
        action="append",
        dest="producer_properties",
        metavar="KEY=VALUE",
        help="a producer property, passed to librdkafka as it is (repeatable)",
    )


def producer_config(args: argparse.Namespace) -> dict[str, Any]:
    """The producer settings of --compression, --acks, --timeout and the passed-through
    properties (which win)."""
    config: dict[str, Any] = {
        "compression.type": args.compression,
        "acks": args.acks,
        # A record not delivered within --timeout fails, rather than librdkafka's 300 s.
        "message.timeout.ms": int(args.timeout * 1000),
    }
    config.update(parse_config_pairs(args.producer_properties, "producer property"))
    return config


def parse_headers(pairs: list[str] | None) -> list[tuple[str, bytes]]:
    """--header k=v arguments, in order; a key may repeat, as Kafka's headers allow."""
    headers: list[tuple[str, bytes]] = []
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--header expects key=value, got {pair!r}", EXIT_USAGE)
        headers.append((key, value.encode()))
    return headers


def read_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The lines of `stream` without their line ends (\\n or \\r\\n), as Java's readLine."""
    for line in stream:
        if line.endswith(b"\n"):
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        yield line


class Deliveries:
    """What the delivery callbacks report: records delivered and the failures."""

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0

    def fail(self, what: str, reason: str) -> None:
        self.failed += 1
        if self.failed <= MAX_REPORTED_FAILURES:
            print(f"kwire: {what}: {reason}", file=sys.stderr, flush=True)

    def callback(self, line_number: int) -> Any:
        def on_delivery(error: Any, message: Any) -> None:
            if error is None:
                self.delivered += 1
            else:
                self.fail(f"record of line {line_number}", f"{error.name()}: {error.str()}")

        return on_delivery


def run_produce(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException, Producer

    headers = parse_headers(args.header)
    separator = args.key_separator.encode() if args.key_separator else None
    if args.key_separator == "":
        raise CliError("--key-separator must not be empty", EXIT_USAGE)
    producer = kafka_client(Producer, args, producer_config(args))
    partitions = topic_partitions(producer, args.topic, args.timeout)
    if args.partition is not None and args.partition not in partitions:
        raise CliError(
            f"topic {args.topic} has no partition {args.partition} (partitions 0-{max(partitions)})"
        )
    extra: dict[str, Any] = {}
    if args.partition is not None:
        extra["partition"] = args.partition
    if headers:
        extra["headers"] = headers

    deliveries = Deliveries()
    interrupted = False
    try:
        for line_number, line in enumerate(read_lines(sys.stdin.buffer), 1):
            key: bytes | None = None
            if separator is not None:
                key, found, value = line.partition(separator)
                if not found:
                    # kafka-console-producer.sh refuses such a line too.
                    deliveries.fail(
                        f"line {line_number}", f"no key separator {args.key_separator!r}"
                    )
                    continue
            else:
                value = line
            on_delivery = deliveries.callback(line_number)
            while True:
                try:
                    producer.produce(args.topic, value, key, on_delivery=on_delivery, **extra)
                    break
                except BufferError:
                    # librdkafka's queue is full: serve callbacks until there is room.
                    producer.poll(0.1)
                except KafkaException as e:
                    error = e.args[0]
                    deliveries.fail(
                        f"record of line {line_number}", f"{error.name()}: {error.str()}"
                    )
                    break
            producer.poll(0)
    except KeyboardInterrupt:
        # Ctrl-C while typing records: what was sent is still waited for and reported.
        interrupted = True
    # Every record is done once its delivery is reported or message.timeout.ms has passed.
    left = producer.flush(args.timeout + 5)
    if left:
        deliveries.failed += left
        print(f"kwire: {left} records were not acknowledged in time", file=sys.stderr)
    summary = f"{deliveries.delivered} records to {args.topic}"
    if deliveries.failed:
        print(f"kwire: {deliveries.failed} records failed; sent {summary}", file=sys.stderr)
        return EXIT_FAILED
    print(f"Sent {summary}.", file=sys.stderr)
    return EXIT_INTERRUPTED if interrupted else EXIT_OK
