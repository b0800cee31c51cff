"""`kwire produce` and `kwire consume` against a real broker, run as subprocesses:
records from stdin with keys, headers, each compression, a chosen partition, read back
with kcat's --format tokens byte for byte; a group's committed offsets checked through
confluent-kafka; the stops (--max-messages, --timeout-ms, SIGTERM, a closed pipe) and
the error paths (unknown topic, refused record, bad bootstrap, bad arguments)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from cli_helpers import closed_bootstrap, failed, ok, run_cli
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT = 30
FORMAT = "%k|%s|%p|%o|%h\\n"


def create_topic(broker: Any, name: str, partitions: int = 1, **config: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    future = admin.create_topics([NewTopic(name, partitions, 1, config=config)])[name]
    future.result(TIMEOUT)


def produce(broker: Any, topic: str, lines: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("produce", topic, *args, "--bootstrap-server", broker.bootstrap, input=lines)


def consume(broker: Any, topic: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "consume", topic, "--timeout-ms", "5000", *args, "--bootstrap-server", broker.bootstrap
    )


def committed(broker: Any, group: str, topic: str, partitions: int = 1) -> list[int]:
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return [tp.offset for tp in consumer.committed(tps, timeout=TIMEOUT)]
    finally:
        consumer.close()


def segment_codecs(broker: Any, topic: str) -> set[str]:
    """The compresscodec of every batch of the topic's segment (read by kwire dump-log)."""
    [segment] = (broker.data_dir / f"{topic}-0").glob("*.log")
    out = ok(run_cli("dump-log", str(segment)))
    return {
        line.split(" compresscodec: ")[1].split()[0] for line in out.splitlines() if "crc:" in line
    }


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_keys_headers_and_compression_read_back_exactly(broker: Any, compression: str) -> None:
    topic = f"lines-{compression}"
    create_topic(broker, topic)
    # Long repetitive values: librdkafka sends a batch uncompressed when that is smaller.
    values = [f"value {i} " + "abc" * 40 for i in range(20)]
    lines = "".join(f"key{i}:{value}\n" for i, value in enumerate(values))
    lines += "k:v:with:colons\r\n" + ":no key\n"
    result = produce(
        broker,
        topic,
        lines,
        "--key-separator",
        ":",
        "--header",
        "source=cli",
        "--header",
        "trace=a=b",
        "--compression",
        compression,
    )
    ok(result)
    assert result.stderr.strip().endswith(f"Sent 22 records to {topic}.")

    out = ok(consume(broker, topic, "--from-beginning", "--max-messages", "22", "--format", FORMAT))
    expected = [f"key{i}|{value}|0|{i}|source=cli,trace=a=b" for i, value in enumerate(values)]
    expected += ["k|v:with:colons|0|20|source=cli,trace=a=b", "|no key|0|21|source=cli,trace=a=b"]
    assert out.splitlines() == expected
    assert segment_codecs(broker, topic) == {compression}


def test_partition_acks_and_the_other_tokens(broker: Any) -> None:
    create_topic(broker, "parts", partitions=3)
    ok(produce(broker, "parts", "a\nb\n", "--partition", "2", "--acks", "1"))
    ok(produce(broker, "parts", "c\n", "--partition", "2", "--acks", "0"))
    ok(produce(broker, "parts", "x\n", "--partition", "0"))
    before = int(time.time() * 1000)
    ok(produce(broker, "parts", "\n", "--partition", "1"))  # an empty line: an empty value

    out = ok(
        consume(
            broker,
            "parts",
            "--partition",
            "2",
            "--offset",
            "beginning",
            "--max-messages",
            "3",
            "--format",
            "%t:%p:%o:%s:%K:%S\\t%%\\n",
        )
    )
    assert out == "parts:2:0:a:-1:1\t%\nparts:2:1:b:-1:1\t%\nparts:2:2:c:-1:1\t%\n"
    # --offset N on a partition; %T is the record's timestamp in ms.
    out = ok(
        consume(
            broker,
            "parts",
            "--partition",
            "2",
            "--offset",
            "1",
            "--max-messages",
            "2",
            "--format",
            "%s\\n",
        )
    )
    assert out == "b\nc\n"
    out = ok(
        consume(
            broker,
            "parts",
            "--partition",
            "1",
            "--offset",
            "0",
            "--max-messages",
            "1",
            "--format",
            "[%s]%S %T",
        )
    )
    value, timestamp = out.split(" ")
    assert value == "[]0" and before - 1000 <= int(timestamp) <= time.time() * 1000
    # Without --group or --partition: every partition.
    out = ok(
        consume(broker, "parts", "--from-beginning", "--max-messages", "5", "--format", "%p%s ")
    )
    assert sorted(out.split()) == ["0x", "1", "2a", "2b", "2c"]


def test_default_format_and_timeout_ms(broker: Any) -> None:
    create_topic(broker, "plain")
    ok(produce(broker, "plain", "one\ntwo\nthree\n"))
    started = time.monotonic()
    result = consume(broker, "plain", "--from-beginning", "--timeout-ms", "1500")
    assert ok(result) == "one\ntwo\nthree\n"
    assert "Processed a total of 3 messages" in result.stderr
    assert time.monotonic() - started < 20
    # From the end (no --from-beginning): nothing is old enough to print.
    assert ok(consume(broker, "plain", "--timeout-ms", "1500")) == ""


def test_group_commits_what_it_printed(broker: Any) -> None:
    create_topic(broker, "grouped", partitions=2)
    ok(produce(broker, "grouped", "".join(f"{i}\n" for i in range(5)), "--partition", "0"))
    ok(produce(broker, "grouped", "".join(f"{i}\n" for i in range(5, 10)), "--partition", "1"))

    first = ok(
        consume(
            broker,
            "grouped",
            "--group",
            "g1",
            "--from-beginning",
            "--max-messages",
            "4",
            "--format",
            "%p:%o\\n",
        )
    )
    assert len(first.splitlines()) == 4
    positions: dict[int, int] = {0: 0, 1: 0}
    for line in first.splitlines():
        partition, offset = map(int, line.split(":"))
        positions[partition] = max(positions[partition], offset + 1)
    assert committed(broker, "g1", "grouped", 2) == [positions[0] or -1001, positions[1] or -1001]

    # The same group goes on where it stopped: the other 6, each once (--from-beginning
    # only for a partition the group has no offset for yet).
    rest = ok(
        consume(broker, "grouped", "--group", "g1", "--from-beginning", "--format", "%p:%o\\n")
    )
    seen = sorted(first.splitlines() + rest.splitlines())
    assert seen == sorted(f"{p}:{o}" for p in (0, 1) for o in range(5))
    assert committed(broker, "g1", "grouped", 2) == [5, 5]

    # --group with --partition and --offset: assigned, not subscribed, and committed.
    ok(
        consume(
            broker,
            "grouped",
            "--group",
            "g2",
            "--partition",
            "1",
            "--offset",
            "2",
            "--max-messages",
            "2",
        )
    )
    assert committed(broker, "g2", "grouped", 2) == [-1001, 4]


def _start_consumer(broker: Any, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "kwire", "consume", *args, "--bootstrap-server", broker.bootstrap],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_sigterm_stops_and_commits(broker: Any) -> None:
    create_topic(broker, "long")
    ok(produce(broker, "long", "".join(f"{i}\n" for i in range(7))))
    process = _start_consumer(broker, "long", "--group", "g", "--from-beginning")
    try:
        lines = [process.stdout.readline() for _ in range(7)]
        assert lines == [f"{i}\n".encode() for i in range(7)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(TIMEOUT) == 0
    finally:
        process.kill()
        process.wait(TIMEOUT)
    assert b"Processed a total of 7 messages" in process.stderr.read()
    assert committed(broker, "g", "long") == [7]


def test_a_closed_pipe_ends_the_consumer(broker: Any) -> None:
    create_topic(broker, "piped")
    ok(produce(broker, "piped", "".join(f"{i}\n" for i in range(3))))
    process = _start_consumer(broker, "piped", "--from-beginning")
    try:
        assert process.stdout.readline() == b"0\n"
        process.stdout.close()  # `| head -1`: the reader is gone, the topic is quiet
        assert process.wait(TIMEOUT) == 0
    finally:
        process.kill()
        process.wait(TIMEOUT)
    assert b"Traceback" not in process.stderr.read()


def test_unknown_topic_is_an_error_not_a_wait(broker: Any) -> None:
    failed(consume(broker, "missing"), 1, "topic missing", "UNKNOWN_TOPIC_OR_PART")
    create_topic(broker, "one")
    failed(consume(broker, "one", "--partition", "3"), 1, "topic one has no partition 3")
    failed(produce(broker, "one", "a\n", "--partition", "3"), 1, "topic one has no partition 3")


def test_produce_to_an_unknown_topic_without_auto_creation(broker_factory: Any) -> None:
    broker = broker_factory({"auto.create.topics.enable": "false"})
    failed(produce(broker, "missing", "a\n"), 1, "topic missing", "UNKNOWN_TOPIC_OR_PART")


def test_refused_records_are_reported_with_kafkas_error(broker: Any) -> None:
    create_topic(broker, "small", **{"max.message.bytes": "1000"})
    # One record a batch (--property passed to librdkafka): the broker refuses a whole batch.
    lines = "fits\n" + "x" * 5000 + "\nfits too\n"
    result = produce(broker, "small", lines, "--property", "batch.num.messages=1")
    failed(result, 1, "MSG_SIZE_TOO_LARGE", "1 records failed", "sent 2 records to small")
    # A line without the separator is refused, the others sent.
    result = produce(broker, "small", "k:v\nnone\n", "--key-separator", ":")
    failed(result, 1, "line 2: no key separator ':'", "sent 1 records to small")
    out = ok(consume(broker, "small", "--from-beginning", "--format", "%k=%s\\n"))
    assert out == "=fits\n=fits too\nk=v\n"


def test_bad_bootstrap_and_bad_arguments(broker: Any) -> None:
    for sub in ("produce", "consume"):
        result = run_cli(
            sub, "t", "--bootstrap-server", closed_bootstrap(), "--timeout", "3", input="a\n"
        )
        failed(result, 3, "cannot reach")
    failed(produce(broker, "t", "a\n", "--compression", "brotli"), 2, "invalid choice")
    failed(produce(broker, "t", "a\n", "--acks", "2"), 2, "invalid choice")
    failed(produce(broker, "t", "a\n", "--header", "novalue"), 2, "--header expects key=value")
    failed(
        produce(broker, "t", "a\n", "--property", "linger.ms=soon"),
        2,
        "invalid client configuration",
    )
    failed(consume(broker, "t", "--format", "%x"), 2, "unknown token %x")
    failed(consume(broker, "t", "--offset", "later"), 2, "--offset expects")
    failed(consume(broker, "t", "--offset", "1", "--from-beginning"), 2, "cannot be used together")
    failed(consume(broker, "t", "--group", "g", "--offset", "1"), 2, "needs --partition")


def test_ctrl_c_while_producing_reports_what_was_sent(broker: Any) -> None:
    create_topic(broker, "typed")
    process = subprocess.Popen(
        [sys.executable, "-m", "kwire", "produce", "typed", "--bootstrap-server", broker.bootstrap],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        process.stdin.write(b"first\nsecond\n")
        process.stdin.flush()  # stdin stays open: a user still typing
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "probe"})
        deadline = time.monotonic() + TIMEOUT
        while consumer.get_watermark_offsets(TopicPartition("typed", 0), timeout=TIMEOUT)[1] < 2:
            assert time.monotonic() < deadline, "the two records never arrived"
            time.sleep(0.1)
        consumer.close()
        process.send_signal(signal.SIGINT)
        assert process.wait(TIMEOUT) == 130
    finally:
        process.kill()
        process.wait(TIMEOUT)
    stderr = process.stderr.read().decode()
    assert "Sent 2 records to typed." in stderr and "Traceback" not in stderr


def test_help_texts() -> None:
    for sub in (["produce"], ["consume"], ["perf", "produce"], ["perf", "consume"], ["dump-log"]):
        assert "usage: kwire" in ok(run_cli(*sub, "--help"))
    # kcat's %-tokens survive argparse's own %-formatting of help texts.
    assert "%k key, %s value" in " ".join(ok(run_cli("consume", "--help")).split())


def test_isolation_level(broker: Any) -> None:
    from confluent_kafka import Producer

    create_topic(broker, "txns")
    for value, commit in ((b"committed", True), (b"aborted", False)):
        producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "t1"})
        producer.init_transactions(TIMEOUT)
        producer.begin_transaction()
        producer.produce("txns", value)
        assert producer.flush(TIMEOUT) == 0  # sent before an abort, which drops unsent ones
        (producer.commit_transaction if commit else producer.abort_transaction)(TIMEOUT)
    out = ok(
        consume(broker, "txns", "--from-beginning", "--max-messages", "2", "--format", "%o:%s\\n")
    )
    assert out == "0:committed\n2:aborted\n"  # markers at 1 and 3 are never records
    committed_only = ok(
        consume(broker, "txns", "--from-beginning", "--isolation-level", "read_committed")
    )
    assert committed_only == "committed\n"
