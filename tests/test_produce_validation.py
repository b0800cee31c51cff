"""Produce refuses the batches Kafka's LogValidator refuses, and stores none of them.

Each bad batch is sent raw to a real broker between good ones; after each refusal
the log end offset has not moved, and at the end a confluent-kafka consumer reads
exactly the good records, without stalling.
"""

from __future__ import annotations

import datetime
import os
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from kio.schema.errors import ErrorCode
from kio.static.primitive import Records
from raw_client import RawClient
from test_clients import create_topic
from test_fetch import fetch, partitions_of
from test_records import resign

from kwire import codecs
from kwire.protocol.records import (
    ATTRIBUTES_OFFSET,
    BATCH_HEADER_SIZE,
    CONTROL_FLAG,
    LOG_OVERHEAD,
    MAX_TIMESTAMP_OFFSET,
    Record,
    build_batch,
    parse_batch_header,
    validate_batches,
)

TIMEOUT = 30
HOUR_MS = 3_600_000


def produce(port: int, topic: str, records: bytes, version: int = 9, partition: int = 0):
    """One ProduceRequest of `version` (acks=1); returns the partition's answer."""
    module = __import__(f"kio.schema.produce.v{version}.request", fromlist=["ProduceRequest"])
    request = module.ProduceRequest(
        transactional_id=None,
        acks=1,
        timeout=datetime.timedelta(seconds=10),
        topic_data=(
            module.TopicProduceData(
                name=topic,
                partition_data=(module.PartitionProduceData(index=partition, records=Records(records)),),
            ),
        ),
    )
    with RawClient(port) as client:
        response = client.send(request)
    (topic_response,) = response.responses
    (answer,) = topic_response.partition_responses
    return answer


def log_end_offset(bootstrap: str, topic: str, partition: int = 0) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT)[1]
    finally:
        consumer.close()


def consume_values(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    """Read partition 0 from offset 0 until `expected` records arrived (or TIMEOUT)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False, "fetch.wait.max.ms": 100}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            values.append(message.value())
    finally:
        consumer.close()
    return values


def good(tag: str, count: int = 3, compression: int = codecs.NONE) -> bytes:
    return build_batch([(b"k", f"{tag}-{i}".encode()) for i in range(count)], compression=compression)


def with_section(section: bytes, count: int = 1, codec: int = codecs.NONE, last_offset_delta: int | None = None) -> bytes:
    """A batch around any records section, CRC correct."""
    batch = bytearray(good("frame", 1)[:BATCH_HEADER_SIZE] + section)
    struct.pack_into(">i", batch, 8, len(batch) - LOG_OVERHEAD)
    struct.pack_into(">h", batch, ATTRIBUTES_OFFSET, codec)
    struct.pack_into(">i", batch, 23, count - 1 if last_offset_delta is None else last_offset_delta)
    struct.pack_into(">i", batch, 57, count)
    resign(batch)
    return bytes(batch)


def section_of(batch: bytes) -> bytes:
    return batch[BATCH_HEADER_SIZE:]


def compressed_section(codec: int) -> bytes:
    return codecs.compress(codec, section_of(good("c", 3)))


def edited(batch: bytes, edit: Callable[[bytearray], None]) -> bytes:
    out = bytearray(batch)
    edit(out)
    resign(out)
    return bytes(out)


def set_attributes(flags: int) -> Callable[[bytearray], None]:
    return lambda b: struct.pack_into(">h", b, ATTRIBUTES_OFFSET, struct.unpack_from(">h", b, ATTRIBUTES_OFFSET)[0] | flags)


def lying_record_length(batch: bytes) -> bytes:
    # First record's length varint (at the section's start) one more than its size.
    section = bytearray(section_of(batch))
    length = section[0] >> 1  # zigzag, one byte for these small records
    section[0] = (length + 1) << 1
    return with_section(bytes(section), 3)


def swapped_offsets() -> bytes:
    # Offset deltas 1, 0: count and last offset delta agree, the deltas do not.
    return build_batch([Record(1, 1, b"k", b"a", []), Record(0, 1, b"k", b"b", [])])


def idempotent_without_sequence() -> bytes:
    return build_batch([(b"k", b"v")], producer_id=7, producer_epoch=0, base_sequence=-1)


CORRUPT = ErrorCode.corrupt_message
INVALID = ErrorCode.invalid_record

BAD_BATCHES: dict[str, tuple[Callable[[], bytes], ErrorCode]] = {
    "gzip random": (lambda: with_section(os.urandom(64), 3, codecs.GZIP), CORRUPT),
    "gzip truncated": (lambda: with_section(compressed_section(codecs.GZIP)[:-9], 3, codecs.GZIP), CORRUPT),
    "snappy random": (lambda: with_section(b"\xff\xff\xff\x7f" + os.urandom(60), 3, codecs.SNAPPY), CORRUPT),
    "snappy truncated": (lambda: with_section(compressed_section(codecs.SNAPPY)[:-5], 3, codecs.SNAPPY), CORRUPT),
    "lz4 random": (lambda: with_section(os.urandom(64), 3, codecs.LZ4), CORRUPT),
    "lz4 truncated": (lambda: with_section(compressed_section(codecs.LZ4)[:-6], 3, codecs.LZ4), CORRUPT),
    "zstd random": (lambda: with_section(os.urandom(64), 3, codecs.ZSTD), CORRUPT),
    "zstd truncated": (lambda: with_section(compressed_section(codecs.ZSTD)[:-3], 3, codecs.ZSTD), CORRUPT),
    "codec 5": (lambda: with_section(section_of(good("c")), 3, 5), CORRUPT),
    "codec 6": (lambda: with_section(section_of(good("c")), 3, 6), CORRUPT),
    "codec 7": (lambda: with_section(section_of(good("c")), 3, 7), CORRUPT),
    "garbage records": (lambda: with_section(os.urandom(80), 3), INVALID),
    "empty records": (lambda: with_section(b"", 3), INVALID),
    "record length lies": (lambda: lying_record_length(good("l")), INVALID),
    "count lies with last offset delta": (lambda: with_section(section_of(good("n")), 2**31 - 1), INVALID),
    "bytes after the last record": (lambda: with_section(section_of(good("x")) + b"\x00", 3), INVALID),
    "offset deltas out of order": (swapped_offsets, INVALID),
    "gzip records garbage": (lambda: with_section(codecs.compress(codecs.GZIP, os.urandom(50)), 3, codecs.GZIP), INVALID),
    "control batch": (lambda: edited(good("ctl"), set_attributes(CONTROL_FLAG)), INVALID),
    "producer id without sequence": (idempotent_without_sequence, INVALID),
}


def test_every_bad_batch_is_refused_and_nothing_is_stored(broker) -> None:
    create_topic(broker.bootstrap, "bad", 1)
    expected: list[bytes] = []
    for i, (name, (make, code)) in enumerate(BAD_BATCHES.items()):
        before = good(f"before{i}", compression=i % 5)
        assert produce(broker.port, "bad", before).error_code == ErrorCode.none, name
        expected += [f"before{i}-{j}".encode() for j in range(3)]
        end = log_end_offset(broker.bootstrap, "bad")
        answer = produce(broker.port, "bad", make())
        assert (answer.error_code, answer.base_offset) == (code, -1), (name, answer)
        assert answer.error_message, name
        assert log_end_offset(broker.bootstrap, "bad") == end, name
    assert produce(broker.port, "bad", good("after")).error_code == ErrorCode.none
    expected += [f"after-{j}".encode() for j in range(3)]
    assert consume_values(broker.bootstrap, "bad", len(expected)) == expected


@pytest.mark.parametrize("version", [3, 8, 9, 11])
def test_one_bad_batch_among_several_stores_none(broker, version: int) -> None:
    create_topic(broker.bootstrap, "several", 1)
    first, bad, last = good("a"), with_section(os.urandom(40), 3), good("b")
    answer = produce(broker.port, "several", first + bad + last, version=version)
    assert answer.error_code == INVALID
    assert log_end_offset(broker.bootstrap, "several") == 0
    assert produce(broker.port, "several", first + last, version=version).error_code == ErrorCode.none
    assert consume_values(broker.bootstrap, "several", 6) == [b"a-0", b"a-1", b"a-2", b"b-0", b"b-1", b"b-2"]


def timestamped(timestamps: list[int], keys: list[bytes | None] | None = None) -> bytes:
    keys = keys or [b"k"] * len(timestamps)
    return build_batch([(key, f"t{i}".encode(), [], ts) for i, (key, ts) in enumerate(zip(keys, timestamps, strict=True))])


@pytest.mark.parametrize(
    ("configs", "offsets"),
    [
        ({"message.timestamp.before.max.ms": str(HOUR_MS)}, {1: -2 * HOUR_MS, 3: -3 * HOUR_MS}),
        ({"message.timestamp.after.max.ms": str(HOUR_MS)}, {0: 2 * HOUR_MS}),
        # KIP-937: the deprecated bound still applies both ways when before/after are unset.
        ({"message.timestamp.difference.max.ms": str(HOUR_MS)}, {2: -2 * HOUR_MS, 3: 2 * HOUR_MS}),
    ],
)
@pytest.mark.parametrize("version", [3, 8, 9])
def test_timestamps_out_of_bounds_are_refused_per_record(broker, configs: dict[str, str], offsets: dict[int, int], version: int) -> None:
    create_topic(broker.bootstrap, "ts", 1, configs)
    now = int(time.time() * 1000)
    timestamps = [now + offsets.get(i, 0) for i in range(4)]
    answer = produce(broker.port, "ts", timestamped(timestamps), version=version)
    assert answer.error_code == ErrorCode.invalid_timestamp
    if version >= 8:
        assert [e.batch_index for e in answer.record_errors] == sorted(offsets)
        assert all("is out of range" in e.batch_index_error_message for e in answer.record_errors)
        assert answer.error_message == "One or more records have been rejected due to invalid timestamp"
    assert log_end_offset(broker.bootstrap, "ts") == 0
    # Within bounds (and records without a timestamp, -1) pass.
    assert produce(broker.port, "ts", timestamped([now, -1, now - 1000]), version=version).error_code == ErrorCode.none
    assert consume_values(broker.bootstrap, "ts", 3) == [b"t0", b"t1", b"t2"]


def test_broker_timestamp_default_applies(broker_factory) -> None:
    broker = broker_factory({"log.message.timestamp.after.max.ms": str(HOUR_MS)})
    create_topic(broker.bootstrap, "future", 1)
    now = int(time.time() * 1000)
    answer = produce(broker.port, "future", timestamped([now, now + 2 * HOUR_MS]))
    assert answer.error_code == ErrorCode.invalid_timestamp
    assert [e.batch_index for e in answer.record_errors] == [1]


def test_log_append_time_set_by_the_client_is_refused(broker) -> None:
    create_topic(broker.bootstrap, "lat", 1, {"message.timestamp.type": "LogAppendTime"})
    batch = build_batch([(b"k", b"a"), (b"k", b"b")], timestamp_type_log_append=True)
    answer = produce(broker.port, "lat", batch)
    assert answer.error_code == ErrorCode.invalid_timestamp
    assert [e.batch_index for e in answer.record_errors] == [0, 1]
    assert produce(broker.port, "lat", good("ok")).error_code == ErrorCode.none
    assert consume_values(broker.bootstrap, "lat", 3) == [b"ok-0", b"ok-1", b"ok-2"]


@pytest.mark.parametrize("version", [7, 9])
def test_compacted_topic_refuses_records_without_key(broker, version: int) -> None:
    create_topic(broker.bootstrap, "compact", 1, {"cleanup.policy": "compact"})
    answer = produce(broker.port, "compact", timestamped([-1, -1, -1], [b"a", None, None]), version=version)
    assert answer.error_code == INVALID
    if version >= 8:
        assert [e.batch_index for e in answer.record_errors] == [1, 2]
        assert "Compacted topic cannot accept message without key" in answer.record_errors[0].batch_index_error_message
        assert "2 record errors in total" in answer.error_message
    assert log_end_offset(broker.bootstrap, "compact") == 0


def test_a_lying_max_timestamp_is_set_to_the_records_largest(broker) -> None:
    create_topic(broker.bootstrap, "maxts", 1)
    now = int(time.time() * 1000)
    batch = edited(timestamped([now - 50, now - 10, now - 30]), lambda b: struct.pack_into(">q", b, MAX_TIMESTAMP_OFFSET, now + 10**9))
    assert produce(broker.port, "maxts", batch).error_code == ErrorCode.none
    with RawClient(broker.port) as client:
        stored = partitions_of(fetch(client, {("maxts", 0): 0}))[("maxts", 0)].records
    (header,) = validate_batches(stored)
    assert header.max_timestamp == now - 10


def test_zstd_needs_produce_v7(broker) -> None:
    create_topic(broker.bootstrap, "zstd", 1)
    batch = good("z", compression=codecs.ZSTD)
    assert produce(broker.port, "zstd", batch, version=6).error_code == ErrorCode.unsupported_compression_type
    assert produce(broker.port, "zstd", batch, version=7).error_code == ErrorCode.none


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_decompression_bomb_is_refused_within_its_bound(broker) -> None:
    # 512 MiB of zeros in a 0.5 MiB gzip stream: refused once past the 64 MiB bound,
    # and the broker's peak memory grows by about the bound, not the bomb.
    create_topic(broker.bootstrap, "bomb", 1)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip wrapper
    chunk = bytes(1 << 20)
    bomb = b"".join(compressor.compress(chunk) for _ in range(512)) + compressor.flush()
    assert len(bomb) < 1 << 20
    peak_before = _peak_rss_kib(broker.process.pid)
    answer = produce(broker.port, "bomb", with_section(bomb, 1, codecs.GZIP))
    assert answer.error_code == CORRUPT
    assert "decompress to more than" in answer.error_message
    assert _peak_rss_kib(broker.process.pid) - peak_before < 160 * 1024
    # A legitimate record of 8 MiB of zeros, compressed, is stored.
    big = build_batch([(b"k", bytes(8 << 20))], compression=codecs.ZSTD)
    assert produce(broker.port, "bomb", big).error_code == ErrorCode.none
    assert log_end_offset(broker.bootstrap, "bomb") == 1


def test_header_fields_are_as_sent_after_append(broker) -> None:
    # What is stored is the batch as sent, but baseOffset and the leader epoch.
    create_topic(broker.bootstrap, "asis", 1)
    batch = good("s", compression=codecs.LZ4)
    assert produce(broker.port, "asis", batch).error_code == ErrorCode.none
    with RawClient(broker.port) as client:
        stored = partitions_of(fetch(client, {("asis", 0): 0}))[("asis", 0)].records
    assert parse_batch_header(stored).records_count == 3
    assert stored[16:] == batch[16:]
