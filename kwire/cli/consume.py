"""`kwire consume TOPIC`: records to stdout, as kafka-console-consumer.sh (and kcat -C)
print them, through confluent-kafka's Consumer. Each record is written with --format
(kcat's tokens) as raw bytes. Without --group no group is joined and every partition
(or --partition) is read; with --group the consumer is a group member and commits
the offsets of what it has written. Ctrl-C, SIGTERM or a closed pipe stop it cleanly."""

from __future__ import annotations

import argparse
import os
import select
import signal
import stat
import sys
import time
from collections.abc import Callable
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

DEFAULT_FORMAT = "%s\\n"
# A poll this long at most, so that a stop signal is seen promptly.
POLL_SECONDS = 0.2
BATCH_SIZE = 500


def register(commands: Any) -> None:
    consume = commands.add_parser(
        "consume",
        help="print records of a topic",
        description="Print the records of TOPIC on stdout, one --format each.",
    )
    consume.add_argument("topic", metavar="TOPIC")
    consume.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the earliest offset (of partitions the group has no offset for)",
    )
    consume.add_argument(
        "--group", metavar="GROUP", help="consume as a member of GROUP and commit its offsets"
    )
    consume.add_argument("--partition", type=int, metavar="N", help="read only this partition")
    consume.add_argument(
        "--offset",
        metavar="N|beginning|end",
        help="start offset of every partition read (not with --group alone)",
    )
    consume.add_argument(
        "--max-messages", type=int, metavar="N", help="exit after N records (default: no limit)"
    )
    consume.add_argument(
        "--timeout-ms",
        type=int,
        metavar="MS",
        help="exit when no record came for this long (default: wait for ever)",
    )
    consume.add_argument(
        "--isolation-level",
        choices=("read_committed", "read_uncommitted"),
        default="read_uncommitted",
        help="read_committed leaves out aborted transactions and waits for open ones "
        "(read_uncommitted, as Kafka's consumer)",
    )
    consume.add_argument(
        "--format",
        default=DEFAULT_FORMAT,
        metavar="FMT",
        help="kcat's tokens: %%t topic, %%p partition, %%o offset, %%k key, %%s value, "
        "%%T timestamp (ms), %%h headers (k=v,..), %%K/%%S key/value length, \\n \\t "
        "(default: %%s\\n)",
    )
    consume.add_argument(
        "--property",
        action="append",
        dest="consumer_properties",
        metavar="KEY=VALUE",
        help="a consumer property, passed to librdkafka as it is (repeatable)",
    )
    add_connection_args(consume)
    consume.set_defaults(run=run_consume)


# --- --format ---------------------------------------------------------------------

_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "\\": b"\\", "0": b"\0"}
_TOKENS = "tpokKsSTh%"

Formatter = Callable[[Any], bytes]


def _null_length(data: bytes | None) -> bytes:
    return b"-1" if data is None else str(len(data)).encode()


def _headers(message: Any) -> bytes:
    return b",".join(
        key.encode() if value is None else key.encode() + b"=" + value
        for key, value in message.headers() or ()
    )


_FIELDS: dict[str, Formatter] = {
    "t": lambda m: m.topic().encode(),
    "p": lambda m: str(m.partition()).encode(),
    "o": lambda m: str(m.offset()).encode(),
    "k": lambda m: m.key() or b"",
    "s": lambda m: m.value() or b"",
    "K": lambda m: _null_length(m.key()),
    "S": lambda m: _null_length(m.value()),
    "T": lambda m: str(m.timestamp()[1]).encode(),
    "h": _headers,
}


def compile_format(text: str) -> Formatter:
    """A --format string as a function of a message: kcat's %-tokens and \\-escapes;
    anything else is written as it is. An unknown token is a usage error."""
    parts: list[bytes | Formatter] = []
    literal = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char in "%\\" and i + 1 < len(text):
            following = text[i + 1]
            i += 2
            if char == "\\":
                literal += _ESCAPES.get(following, ("\\" + following).encode())
            elif following == "%":
                literal += b"%"
            elif following in _FIELDS:
                if literal:
                    parts.append(bytes(literal))
                    literal.clear()
                parts.append(_FIELDS[following])
            else:
                raise CliError(f"--format: unknown token %{following} (known: %{_TOKENS})", 2)
            continue
        literal += char.encode()
        i += 1
    if literal:
        parts.append(bytes(literal))

    def render(message: Any) -> bytes:
        return b"".join(part if isinstance(part, bytes) else part(message) for part in parts)

    return render


# --- Consuming ----------------------------------------------------------------------


def _start_offset(args: argparse.Namespace) -> int | None:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

    if args.offset is None:
        if args.from_beginning:
            return OFFSET_BEGINNING
        # A group member starts at its group's committed offsets.
        return None if args.group else OFFSET_END
    named = {"beginning": OFFSET_BEGINNING, "earliest": OFFSET_BEGINNING}
    named |= {"end": OFFSET_END, "latest": OFFSET_END}
    if args.offset in named:
        return named[args.offset]
    try:
        offset = int(args.offset)
    except ValueError:
        offset = -1
    if offset < 0:
        raise CliError(f"--offset expects N (>= 0), beginning or end, got {args.offset!r}", 2)
    return offset


def _check_args(args: argparse.Namespace) -> None:
    if args.offset is not None and args.from_beginning:
        raise CliError("--offset and --from-beginning cannot be used together", EXIT_USAGE)
    if args.offset is not None and args.group and args.partition is None:
        raise CliError(
            "--offset with --group needs --partition (a group member starts at its group's "
            "committed offsets)",
            EXIT_USAGE,
        )
    for option, value in (("--max-messages", args.max_messages), ("--timeout-ms", args.timeout_ms)):
        if value is not None and value <= 0:
            raise CliError(f"{option} must be positive, got {value}", EXIT_USAGE)


class StopSignals:
    """SIGINT and SIGTERM set a flag the poll loop reads (rather than raising inside
    librdkafka's poll), so that the consumer closes, and commits, cleanly."""

    def __init__(self) -> None:
        self.stopped = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._stop)
        return self

    def _stop(self, number: int, frame: Any) -> None:
        self.stopped = True

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


# Errors after which reading on cannot succeed.
_FATAL_CODES = (
    "UNKNOWN_TOPIC_OR_PART",
    "_UNKNOWN_TOPIC",
    "_UNKNOWN_PARTITION",
    "TOPIC_AUTHORIZATION_FAILED",
    "GROUP_AUTHORIZATION_FAILED",
    "SASL_AUTHENTICATION_FAILED",
    "INVALID_GROUP_ID",
)


def run_consume(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer, TopicPartition

    _check_args(args)
    render = compile_format(args.format)
    start = _start_offset(args)
    config: dict[str, Any] = {
        "isolation.level": args.isolation_level,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
    }
    if args.group:
        # Offsets are stored only once their records are written out, and committed
        # by the auto-commit and on close.
        config |= {
            "group.id": args.group,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,
        }
    else:
        config |= {"group.id": "kwire-consume", "enable.auto.commit": False}
    config.update(parse_config_pairs(args.consumer_properties, "consumer property"))
    consumer = kafka_client(Consumer, args, config)
    try:
        partitions = topic_partitions(consumer, args.topic, args.timeout)
        if args.partition is not None and args.partition not in partitions:
            raise CliError(
                f"topic {args.topic} has no partition {args.partition} "
                f"(partitions 0-{max(partitions)})"
            )
        if args.group and args.partition is None:
            consumer.subscribe([args.topic])
        else:
            chosen = partitions if args.partition is None else [args.partition]
            assignment = [TopicPartition(args.topic, p) for p in chosen]
            if start is not None:
                for tp in assignment:
                    tp.offset = start
            consumer.assign(assignment)
        with StopSignals() as signals:
            count, code = _consume(consumer, args, render, signals)
    finally:
        _close(consumer, bool(args.group))
    print(f"Processed a total of {count} messages", file=sys.stderr)
    return code


def _consume(
    consumer: Any, args: argparse.Namespace, render: Formatter, signals: StopSignals
) -> tuple[int, int]:
    """Write records until --max-messages, --timeout-ms, a signal or a closed pipe:
    (records written, exit code)."""
    out = sys.stdout.buffer
    count = 0
    limit = args.max_messages
    idle_limit = args.timeout_ms / 1000 if args.timeout_ms else None
    last_record = time.monotonic()
    warned: set[str] = set()
    while not signals.stopped and (limit is None or count < limit):
        want = BATCH_SIZE if limit is None else min(BATCH_SIZE, limit - count)
        messages = consumer.consume(want, POLL_SECONDS)
        if not messages:
            if idle_limit is not None and time.monotonic() - last_record >= idle_limit:
                break
            if _reader_gone(out):
                return count, EXIT_OK
            continue
        last_record = time.monotonic()
        written = []
        for message in messages:
            error = message.error()
            if error is not None:
                text = f"{error.name()}: {error.str()}"
                if error.fatal() or error.name() in _FATAL_CODES:
                    print(f"kwire: topic {args.topic}: {text}", file=sys.stderr)
                    return count, EXIT_FAILED
                if text not in warned:  # transient (a broker reconnecting ...): once
                    warned.add(text)
                    print(f"kwire: {text}", file=sys.stderr)
                continue
            written.append(message)
        try:
            for message in written:
                out.write(render(message))
            out.flush()
        except BrokenPipeError:
            # `kwire consume | head`: the reader left. Python's own flush at exit must
            # not fail on the pipe again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return count, EXIT_OK
        count += len(written)
        if args.group:
            for message in written:
                consumer.store_offsets(message)
    return count, EXIT_OK


def _reader_gone(out: Any) -> bool:
    """Whether stdout is a pipe whose reader has closed it (`| head` done): a quiet
    topic would otherwise keep the consumer waiting for a write to fail."""
    try:
        fd = out.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        poller = select.poll()
        poller.register(fd, 0)  # POLLERR and POLLHUP are always reported
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return False


def _close(consumer: Any, committing: bool) -> None:
    from confluent_kafka import KafkaError, KafkaException

    try:
        if committing:
            try:
                consumer.commit(asynchronous=False)
            except KafkaException as e:
                if e.args[0].code() != KafkaError._NO_OFFSET:
                    print(f"kwire: commit failed: {e.args[0].str()}", file=sys.stderr)
        consumer.close()
    except RuntimeError:
        pass  # closed already
