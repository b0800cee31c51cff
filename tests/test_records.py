"""Record batches v2: varints, build/iter round trips, validation against corruption,
and decoding of a batch laid out by hand from the documented format."""

from __future__ import annotations

import gzip
import struct
import zlib

import pytest
from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from kwire import codecs
from kwire.protocol import records as records_module
from kwire.protocol.records import (
    ATTRIBUTES_OFFSET,
    BATCH_HEADER_SIZE,
    CONTROL_ABORT,
    CONTROL_COMMIT,
    CRC_OFFSET,
    LOG_OVERHEAD,
    MAGIC_OFFSET,
    RECORD_BYTES_LEFT,
    RECORD_COUNT_TOO_HIGH,
    RECORD_INVALID_HEADER_COUNT,
    RECORD_INVALID_HEADER_KEY_LENGTH,
    RECORD_INVALID_KEY_LENGTH,
    RECORD_NEGATIVE_LENGTH,
    RECORD_OFFSET_DELTA,
    RECORD_OK,
    RECORD_SIZE_MISMATCH,
    RECORD_TRUNCATED,
    RECORD_VARINT_TOO_LONG,
    InvalidBatchError,
    Record,
    RecordPolicy,
    batch_crc,
    build_batch,
    build_control_batch,
    control_record_coordinator_epoch,
    control_record_type,
    decode_varint,
    decode_varlong,
    decompress_records,
    encode_varint,
    encode_varlong,
    iter_records,
    parse_batch_header,
    set_base_offset,
    set_log_append_time,
    set_partition_leader_epoch,
    validate_batches,
    validate_produced,
)

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
COMPRESSIONS = [codecs.NONE, codecs.GZIP, codecs.SNAPPY, codecs.LZ4, codecs.ZSTD]


def resign(batch: bytearray, position: int = 0) -> None:
    """Recompute the CRC after a deliberate edit, so decoding sees the edit."""
    header = parse_batch_header(batch, position)
    struct.pack_into(">I", batch, position + CRC_OFFSET, batch_crc(batch, header))


def error_code(exc: pytest.ExceptionInfo[InvalidBatchError]) -> ErrorCode:
    return exc.value.error_code


# --- varints ---------------------------------------------------------------------

# Zigzag varints as Kafka's ByteUtils (and protobuf sint32/sint64) write them.
VARINT_VECTORS = [
    (0, "00"),
    (-1, "01"),
    (1, "02"),
    (-2, "03"),
    (63, "7e"),
    (-64, "7f"),
    (64, "8001"),
    (300, "d804"),
    (2**31 - 1, "feffffff0f"),
    (-(2**31), "ffffffff0f"),
]


@pytest.mark.parametrize(("value", "hex_"), VARINT_VECTORS)
def test_varint_vectors(value: int, hex_: str) -> None:
    assert encode_varint(value).hex() == hex_
    assert encode_varlong(value).hex() == hex_
    assert decode_varint(bytes.fromhex(hex_)) == (value, len(hex_) // 2)
    assert decode_varlong(bytes.fromhex(hex_)) == (value, len(hex_) // 2)


def test_varlong_extremes() -> None:
    assert encode_varlong(2**63 - 1).hex() == "feffffffffffffffff01"
    assert encode_varlong(-(2**63)).hex() == "ffffffffffffffffff01"


@given(INT32, st.binary(max_size=4))
def test_varint_round_trip(value: int, tail: bytes) -> None:
    encoded = encode_varint(value)
    assert len(encoded) <= 5
    assert decode_varint(b"\x07" + encoded + tail, 1) == (value, 1 + len(encoded))


@given(INT64)
def test_varlong_round_trip(value: int) -> None:
    encoded = encode_varlong(value)
    assert len(encoded) <= 10
    assert decode_varlong(encoded) == (value, len(encoded))


def test_varint_range() -> None:
    with pytest.raises(ValueError):
        encode_varint(2**31)
    with pytest.raises(ValueError):
        encode_varlong(-(2**63) - 1)


@pytest.mark.parametrize("bad", [b"", b"\x80", b"\xff\xff", b"\x80" * 5 + b"\x00", b"\xff" * 6])
def test_varint_truncated_or_too_long(bad: bytes) -> None:
    with pytest.raises(InvalidBatchError) as info:
        decode_varint(bad)
    assert error_code(info) == ErrorCode.corrupt_message


def test_varlong_too_long() -> None:
    with pytest.raises(InvalidBatchError):
        decode_varlong(b"\x80" * 10 + b"\x00")


# --- a batch laid out by hand ------------------------------------------------------
# Two records, as a Java producer writes them (no idempotence, no compression):
#   baseOffset 0, batchLength 75, partitionLeaderEpoch -1, magic 2, crc, attributes 0,
#   lastOffsetDelta 1, baseTimestamp 1700000000000 (0x18bcfe56800), maxTimestamp +5,
#   producerId -1, producerEpoch -1, baseSequence -1, 2 records.
# Record 0 (15 bytes, length varint 0x1e): attributes 0, timestampDelta 0, offsetDelta 0,
#   key "k" (len 1 -> 02), value "abc" (len 3 -> 06), 1 header (02): "h1" (04) = "x" (02).
# Record 1 (9 bytes, 0x12): attributes 0, timestampDelta 5 (0a), offsetDelta 1 (02),
#   key null (-1 -> 01), value "" (00), 1 header: "n" (02) = null (01).
# The CRC-32C over attributes..end is 0x1190b395.
HAND_RECORDS = bytes.fromhex(
    "1e" "00" "00" "00" "02" "6b" "06" "616263" "02" "04" "6831" "02" "78"
    "12" "00" "0a" "02" "01" "00" "02" "02" "6e" "01"
)  # fmt: skip
HAND_AFTER_CRC = (
    bytes.fromhex(
        "0000"  # attributes
        "00000001"  # lastOffsetDelta
        "0000018bcfe56800"  # baseTimestamp
        "0000018bcfe56805"  # maxTimestamp
        "ffffffffffffffff"  # producerId
        "ffff"  # producerEpoch
        "ffffffff"  # baseSequence
        "00000002"  # records count
    )
    + HAND_RECORDS
)
HAND_BATCH = (
    bytes.fromhex(
        "0000000000000000"  # baseOffset
        "0000004b"  # batchLength: 75 = 4 + 1 + 4 + 66
        "ffffffff"  # partitionLeaderEpoch
        "02"  # magic
        "1190b395"  # crc
    )
    + HAND_AFTER_CRC
)
HAND_DECODED = [
    Record(0, 1700000000000, b"k", b"abc", [("h1", b"x")]),
    Record(1, 1700000000005, None, b"", [("n", None)]),
]


def test_hand_built_batch_layout() -> None:
    assert len(HAND_BATCH) == BATCH_HEADER_SIZE + 26
    assert crc32c(HAND_AFTER_CRC) == 0x1190B395
    (header,) = validate_batches(HAND_BATCH)
    assert (header.base_offset, header.batch_length, header.partition_leader_epoch) == (0, 75, -1)
    assert (header.magic, header.crc, header.attributes) == (2, 0x1190B395, 0)
    assert (header.last_offset_delta, header.records_count) == (1, 2)
    assert (header.base_timestamp, header.max_timestamp) == (1700000000000, 1700000000005)
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (-1, -1, -1)


def test_hand_built_batch_decodes() -> None:
    assert list(iter_records(HAND_BATCH)) == HAND_DECODED


def test_build_batch_writes_the_hand_built_bytes() -> None:
    built = build_batch(
        [(b"k", b"abc", [("h1", b"x")], 1700000000000), (None, b"", [("n", None)], 1700000000005)]
    )
    assert built == HAND_BATCH


def _compressed_hand_batch(codec: int, section: bytes) -> bytes:
    batch = bytearray(HAND_BATCH[:BATCH_HEADER_SIZE] + section)
    struct.pack_into(">i", batch, 8, len(batch) - LOG_OVERHEAD)
    struct.pack_into(">h", batch, ATTRIBUTES_OFFSET, codec)
    resign(batch)
    return bytes(batch)


def _gzip_stored(data: bytes) -> bytes:
    # gzip header (no mtime, OS unknown), one final stored deflate block, CRC-32, ISIZE.
    block = b"\x01" + struct.pack("<HH", len(data), len(data) ^ 0xFFFF) + data
    return (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
        + block
        + struct.pack("<II", zlib.crc32(data), len(data))
    )


# The records section compressed by hand in the simplest form of each codec's wire format.
HAND_COMPRESSED = {
    # gzip stored block; checked against the stdlib too.
    codecs.GZIP: _gzip_stored(HAND_RECORDS),
    # snappy-java framing around a literal-only raw block: varint length 26 (0x1a),
    # literal tag (26 - 1) << 2 = 0x64.
    codecs.SNAPPY: b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01"
    + struct.pack(">i", 28)
    + b"\x1a\x64"
    + HAND_RECORDS,
    # raw snappy block alone, as some non-Java clients send it.
    -codecs.SNAPPY: b"\x1a\x64" + HAND_RECORDS,
    # lz4 frame as Kafka writes: FLG 0x60, BD 0x40, HC 0x82, one stored block, end mark.
    codecs.LZ4: bytes.fromhex("04224d18604082")
    + struct.pack("<I", 0x80000000 | 26)
    + HAND_RECORDS
    + b"\0\0\0\0",
    # zstd: FHD 0x20 (single segment, 1-byte size) = 26, one last raw block of 26 (0xd1 0 0).
    codecs.ZSTD: bytes.fromhex("28b52ffd201ad10000") + HAND_RECORDS,
}


@pytest.mark.parametrize("codec", list(HAND_COMPRESSED))
def test_hand_compressed_batches_decode(codec: int) -> None:
    section = HAND_COMPRESSED[codec]
    batch = _compressed_hand_batch(abs(codec), section)
    (header,) = validate_batches(batch)
    assert header.compression == abs(codec)
    assert list(iter_records(batch)) == HAND_DECODED


def test_hand_gzip_is_valid_gzip() -> None:
    assert gzip.decompress(HAND_COMPRESSED[codecs.GZIP]) == HAND_RECORDS


# --- build / iter round trips ------------------------------------------------------

HEADERS = st.lists(st.tuples(st.text(max_size=10), st.none() | st.binary(max_size=20)), max_size=4)
RECORDS = st.lists(
    st.tuples(
        st.none() | st.binary(max_size=50),
        st.none() | st.binary(max_size=200),
        HEADERS,
        st.integers(0, 2**62),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(
    records=RECORDS,
    compression=st.sampled_from(COMPRESSIONS),
    base_offset=st.integers(0, 2**62),
    producer_id=st.integers(-1, 2**62),
    producer_epoch=st.integers(-1, 2**15 - 1),
    base_sequence=st.integers(-1, 2**31 - 1),
    transactional=st.booleans(),
    leader_epoch=INT32,
)
def test_round_trip(
    records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int]],
    compression: int,
    base_offset: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    transactional: bool,
    leader_epoch: int,
) -> None:
    batch = build_batch(
        records,
        base_offset=base_offset,
        compression=compression,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        transactional=transactional,
        partition_leader_epoch=leader_epoch,
    )
    (header,) = validate_batches(batch)
    assert header.size == len(batch)
    assert header.compression == compression
    assert header.is_transactional == transactional
    assert not header.is_control and not header.is_log_append_time
    assert header.base_offset == base_offset
    assert header.last_offset_delta == len(records) - 1
    assert header.records_count == len(records)
    assert header.base_timestamp == records[0][3]
    assert header.max_timestamp == max(r[3] for r in records)
    assert (header.producer_id, header.producer_epoch) == (producer_id, producer_epoch)
    assert header.base_sequence == base_sequence
    assert header.partition_leader_epoch == leader_epoch
    decoded = list(iter_records(batch))
    assert decoded == [
        Record(base_offset + i, ts, key, value, list(headers))
        for i, (key, value, headers, ts) in enumerate(records)
    ]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip_large_values(compression: int) -> None:
    # Several codec blocks (lz4 64 KiB, snappy 32 KiB) in one batch.
    records = [(b"key-%d" % i, bytes([i]) * 40_000, [], 1000 + i) for i in range(10)]
    batch = build_batch(records, compression=compression)
    validate_batches(batch)
    assert [(r.key, r.value, r.timestamp) for r in iter_records(batch)] == [
        (k, v, t) for k, v, _, t in records
    ]


def test_short_record_tuples_and_default_timestamp() -> None:
    batch = build_batch([(b"a", b"1"), (b"b", b"2", [("h", b"")])], timestamp_ms=42)
    records = list(iter_records(batch))
    assert [(r.key, r.value, r.headers, r.timestamp) for r in records] == [
        (b"a", b"1", [], 42),
        (b"b", b"2", [("h", b"")], 42),
    ]
    # No timestamp given at all: the wall clock, not 0 (which retention would delete).
    (header,) = validate_batches(build_batch([(None, b"x")]))
    assert header.base_timestamp > 1_600_000_000_000


def test_timestamps_may_go_backwards() -> None:
    batch = build_batch([(None, b"a", [], 5000), (None, b"b", [], 1000), (None, b"c", [], 9000)])
    (header,) = validate_batches(batch)
    assert (header.base_timestamp, header.max_timestamp) == (5000, 9000)
    assert [r.timestamp for r in iter_records(batch)] == [5000, 1000, 9000]


def test_non_utf8_header_key_survives_a_rebuild() -> None:
    batch = bytearray(build_batch([(None, b"v", [("ab", b"1")], 7)]))
    index = batch.index(b"ab")
    batch[index] = 0xFF  # not UTF-8: Java would read U+FFFD; we keep the byte
    resign(batch)
    (record,) = iter_records(batch)
    assert build_batch([record]) == bytes(batch)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_log_append_time_batches(compression: int) -> None:
    batch = build_batch(
        [(None, b"a", [], 10), (None, b"b", [], 20)],
        compression=compression,
        timestamp_type_log_append=True,
    )
    (header,) = validate_batches(batch)
    assert header.is_log_append_time
    assert [r.timestamp for r in iter_records(batch)] == [20, 20]


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_set_log_append_time_keeps_crc_valid(compression: int) -> None:
    batch = bytearray(
        build_batch([(b"k", b"a", [], 10), (b"k", b"b", [], 20)], compression=compression)
    )
    (header,) = validate_batches(batch)
    set_log_append_time(batch, header, 1_234_567)
    (again,) = validate_batches(batch)
    assert again.is_log_append_time and again.max_timestamp == 1_234_567
    assert again.compression == compression
    assert [r.timestamp for r in iter_records(batch)] == [1_234_567, 1_234_567]


def test_set_base_offset_and_epoch_move_records() -> None:
    batch = bytearray(build_batch([(None, b"a", [], 1), (None, b"b", [], 1)]))
    (header,) = validate_batches(batch)
    set_base_offset(batch, header, 1000)
    set_partition_leader_epoch(batch, header, 9)
    (again,) = validate_batches(batch)
    assert (again.base_offset, again.partition_leader_epoch) == (1000, 9)
    assert [r.offset for r in iter_records(batch)] == [1000, 1001]


def test_rebuild_keeps_offsets_and_last_offset_delta() -> None:
    # Compaction: keep records 1 and 3 of a 5-record batch at offsets 100..104.
    original = build_batch([(b"k%d" % i, b"v", [], 50 + i) for i in range(5)], base_offset=100)
    kept = [r for r in iter_records(original) if r.offset in (101, 103)]
    rebuilt = build_batch(kept, base_offset=100, last_offset_delta=4)
    header = parse_batch_header(rebuilt)
    assert (header.records_count, header.last_offset_delta, header.next_offset) == (2, 4, 105)
    assert list(iter_records(rebuilt)) == kept
    # validate_batches is the produce check: count must match the deltas there.
    with pytest.raises(InvalidBatchError) as info:
        validate_batches(rebuilt)
    assert error_code(info) == ErrorCode.invalid_record


def test_empty_batch() -> None:
    with pytest.raises(ValueError):
        build_batch([])
    batch = build_batch([], base_offset=10, last_offset_delta=3, timestamp_ms=77)
    header = parse_batch_header(batch)
    assert (header.records_count, header.next_offset, header.max_timestamp) == (0, 14, 77)
    assert list(iter_records(batch)) == []
    with pytest.raises(ValueError):
        build_batch([(None, b"x")], last_offset_delta=-1)


# --- control batches ---------------------------------------------------------------


@pytest.mark.parametrize("commit", [True, False])
def test_control_batch(commit: bool) -> None:
    batch = build_control_batch(4000, 3, commit, 17, 500, 1_700_000_000_000)
    (header,) = validate_batches(batch)
    assert header.is_control and header.is_transactional
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (4000, 3, -1)
    assert (header.base_offset, header.records_count, header.last_offset_delta) == (500, 1, 0)
    assert header.base_timestamp == header.max_timestamp == 1_700_000_000_000
    (record,) = iter_records(batch)
    assert record.offset == 500
    assert record.key == struct.pack(">hh", 0, 1 if commit else 0)
    assert record.value == struct.pack(">hi", 0, 17)
    assert control_record_type(record.key) == (CONTROL_COMMIT if commit else CONTROL_ABORT)
    assert control_record_coordinator_epoch(record.value) == 17
    assert record.headers == []


def test_control_record_parse_errors() -> None:
    for bad in (None, b"\x00\x00\x00"):
        with pytest.raises(InvalidBatchError):
            control_record_type(bad)
        with pytest.raises(InvalidBatchError):
            control_record_coordinator_epoch(bad)


# --- validate_batches against corruption -------------------------------------------

SAMPLE = build_batch(
    [(b"key", b"value", [("h", b"v")], 1000), (None, b"x" * 30, [], 1001), (b"k", None, [], 999)],
    base_offset=0,
    producer_id=7,
    producer_epoch=0,
    base_sequence=0,
)


@settings(max_examples=500)
@given(st.data())
def test_any_flipped_byte_after_crc_is_corrupt(data: st.DataObject) -> None:
    batch = bytearray(SAMPLE)
    index = data.draw(st.integers(ATTRIBUTES_OFFSET, len(batch) - 1))
    batch[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(InvalidBatchError) as info:
        validate_batches(batch)
    assert error_code(info) == ErrorCode.corrupt_message


@pytest.mark.parametrize("index", range(CRC_OFFSET, ATTRIBUTES_OFFSET))
def test_flipped_crc_byte_is_corrupt(index: int) -> None:
    batch = bytearray(SAMPLE)
    batch[index] ^= 0x01
    with pytest.raises(InvalidBatchError) as info:
        validate_batches(batch)
    assert error_code(info) == ErrorCode.corrupt_message


@pytest.mark.parametrize("length", range(1, len(SAMPLE)))
def test_truncated_anywhere_is_corrupt(length: int) -> None:
    with pytest.raises(InvalidBatchError) as info:
        validate_batches(SAMPLE[:length])
    assert error_code(info) == ErrorCode.corrupt_message


def test_truncated_second_batch_is_corrupt() -> None:
    for cut in (1, 20, BATCH_HEADER_SIZE, len(SAMPLE) - 1):
        with pytest.raises(InvalidBatchError) as info:
            validate_batches(SAMPLE + SAMPLE[:cut])
        assert error_code(info) == ErrorCode.corrupt_message


def test_empty_records_is_invalid() -> None:
    with pytest.raises(InvalidBatchError) as info:
        validate_batches(b"")
    assert error_code(info) == ErrorCode.invalid_record


@pytest.mark.parametrize(
    ("magic", "code"),
    [
        (0, ErrorCode.unsupported_for_message_format),
        (1, ErrorCode.unsupported_for_message_format),
        (3, ErrorCode.corrupt_message),
        (0x7F, ErrorCode.corrupt_message),
        (-1, ErrorCode.corrupt_message),
    ],
)
def test_wrong_magic(magic: int, code: ErrorCode) -> None:
    batch = bytearray(SAMPLE)
    struct.pack_into(">b", batch, MAGIC_OFFSET, magic)
    with pytest.raises(InvalidBatchError) as info:
        validate_batches(batch)
    assert error_code(info) == code


def test_old_magic_short_buffer_is_unsupported() -> None:
    # A v0/v1 message set can be shorter than a v2 header.
    batch = bytearray(SAMPLE[:30])
    batch[MAGIC_OFFSET] = 1
    with pytest.raises(InvalidBatchError) as info:
        validate_batches(batch)
    assert error_code(info) == ErrorCode.unsupported_for_message_format


@pytest.mark.parametrize("count", [0, 1, 2, 4, 1000, -1])
def test_records_count_mismatch_is_invalid_record(count: int) -> None:
    batch = bytearray(SAMPLE)
    struct.pack_into(">i", batch, 57, count)
    resign(batch)
    with pytest.raises(InvalidBatchError) as info:
        validate_batches(batch)
    assert error_code(info) == ErrorCode.invalid_record


def test_batch_length_too_small_is_corrupt() -> None:
    batch = bytearray(SAMPLE)
    struct.pack_into(">i", batch, 8, 10)
    with pytest.raises(InvalidBatchError) as info:
        validate_batches(batch)
    assert error_code(info) == ErrorCode.corrupt_message


def test_concatenated_batches_validate_separately() -> None:
    second = build_batch([(None, b"z", [], 5)], compression=codecs.LZ4)
    headers = validate_batches(SAMPLE + second + SAMPLE)
    assert [h.position for h in headers] == [0, len(SAMPLE), len(SAMPLE) + len(second)]
    assert [h.records_count for h in headers] == [3, 1, 3]
    assert [h.compression for h in headers] == [0, codecs.LZ4, 0]
    assert list(iter_records(memoryview(SAMPLE + second)[len(SAMPLE) :]))[0].value == b"z"


@settings(max_examples=200)
@given(base_offset=INT64, leader_epoch=INT32)
def test_base_offset_and_leader_epoch_are_outside_the_crc(
    base_offset: int, leader_epoch: int
) -> None:
    batch = bytearray(SAMPLE)
    struct.pack_into(">q", batch, 0, base_offset)
    struct.pack_into(">i", batch, 12, leader_epoch)
    (header,) = validate_batches(batch)
    assert (header.base_offset, header.partition_leader_epoch) == (base_offset, leader_epoch)


# --- iter_records against malformed record data ------------------------------------


def _assert_corrupt(batch: bytes | bytearray) -> None:
    with pytest.raises(InvalidBatchError) as info:
        list(iter_records(batch))
    assert error_code(info) == ErrorCode.corrupt_message


@settings(max_examples=500)
@given(compression=st.sampled_from(COMPRESSIONS), data=st.data())
def test_damaged_records_decode_or_fail_cleanly(compression: int, data: st.DataObject) -> None:
    # CRC recomputed, so the damage reaches the decoder: it yields records or raises
    # InvalidBatchError(CORRUPT_MESSAGE), never IndexError or the like.
    batch = bytearray(
        build_batch(
            [(b"key", b"value", [("h", b"v")], 1), (None, b"x" * 30, [], 2)],
            compression=compression,
        )
    )
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(BATCH_HEADER_SIZE, len(batch) - 1))
        batch[index] ^= data.draw(st.integers(1, 255))
    resign(batch)
    try:
        list(iter_records(batch))
    except InvalidBatchError as exc:
        assert exc.error_code == ErrorCode.corrupt_message
    # What produce validation accepts, a consumer reads whole.
    if accepted(batch):
        assert_readable(batch)


@settings(max_examples=300)
@given(st.binary(max_size=64), st.integers(0, 5))
def test_random_record_section_fails_cleanly(section: bytes, count: int) -> None:
    batch = bytearray(SAMPLE[:BATCH_HEADER_SIZE] + section)
    struct.pack_into(">i", batch, 8, len(batch) - LOG_OVERHEAD)
    struct.pack_into(">i", batch, 57, count)
    try:
        list(iter_records(batch))
    except InvalidBatchError as exc:
        assert exc.error_code == ErrorCode.corrupt_message


def _with_section(section: bytes, count: int = 1, codec: int = 0) -> bytearray:
    batch = bytearray(SAMPLE[:BATCH_HEADER_SIZE] + section)
    struct.pack_into(">i", batch, 8, len(batch) - LOG_OVERHEAD)
    struct.pack_into(">h", batch, ATTRIBUTES_OFFSET, codec)
    struct.pack_into(">i", batch, 57, count)
    return batch


# One valid record: length 6, attrs 0, ts 0, offset 0, key null, value "", 0 headers.
GOOD_RECORD = bytes.fromhex("0c" "00" "00" "00" "01" "00" "00")  # fmt: skip


@pytest.mark.parametrize(
    ("section", "count"),
    [
        (GOOD_RECORD, 2),  # fewer records than the count
        (GOOD_RECORD * 2, 1),  # bytes left after the last record
        (bytes.fromhex("10000000010000"), 1),  # length past the end
        (bytes.fromhex("01"), 1),  # negative record length
        (bytes.fromhex("00"), 1),  # empty record
        (bytes.fromhex("0c000000030000"), 1),  # key length -2
        (bytes.fromhex("0c0000007e0000"), 1),  # key past the record
        (bytes.fromhex("0c000000010001"), 1),  # negative header count
        (bytes.fromhex("0c000000010002"), 1),  # header missing
        (bytes.fromhex("100000000100020100"), 1),  # null header key
        (bytes.fromhex("0e00000001000000"), 1),  # record longer than read
        (bytes.fromhex("1800ffffffffffffffffffff01"), 1),  # varlong too long
        (b"", 1),  # no records at all
    ],
)
def test_malformed_records_are_corrupt(section: bytes, count: int) -> None:
    _assert_corrupt(_with_section(section, count))


def test_good_record_section_decodes() -> None:
    (record,) = iter_records(_with_section(GOOD_RECORD))
    assert (record.key, record.value, record.headers) == (None, b"", [])


def test_negative_record_count_is_corrupt() -> None:
    _assert_corrupt(_with_section(GOOD_RECORD, -1))


@pytest.mark.parametrize("codec", [codecs.GZIP, codecs.SNAPPY, codecs.LZ4, codecs.ZSTD, 5, 6, 7])
def test_undecompressible_records_are_corrupt(codec: int) -> None:
    _assert_corrupt(_with_section(b"\xde\xad\xbe\xef" * 4, 1, codec))


@pytest.mark.parametrize(
    "batch",
    [
        SAMPLE[: BATCH_HEADER_SIZE - 1],  # short header
        SAMPLE[:-1],  # batch longer than the buffer
        SAMPLE[:MAGIC_OFFSET] + b"\x01" + SAMPLE[MAGIC_OFFSET + 1 :],  # magic 1
    ],
)
def test_iter_records_rejects_bad_framing(batch: bytes) -> None:
    _assert_corrupt(batch)


def test_iter_records_ignores_bytes_after_the_batch() -> None:
    assert len(list(iter_records(SAMPLE + b"\x00" * 7))) == 3


def test_iter_records_accepts_any_buffer() -> None:
    expected = list(iter_records(SAMPLE))
    assert list(iter_records(bytearray(SAMPLE))) == expected
    assert list(iter_records(memoryview(b"xx" + SAMPLE)[2:])) == expected


# --- produce validation: the record walk, C against the Python reference -------------

NATIVE = records_module._check_records_native
PYTHON = records_module._check_records_python
NOW = 1_700_000_000_000
LOOSE = RecordPolicy()


def test_the_native_walk_is_built() -> None:
    # pip install -e . builds it; without it produce validation is several times slower.
    assert NATIVE is not None
    assert records_module.check_records is NATIVE


def both_walks(section: bytes, count: int, base: int = 0, low: int = -(2**63), high: int = 2**63 - 1) -> tuple:
    expected = PYTHON(section, count, base, low, high)
    assert NATIVE(section, count, base, low, high) == expected
    assert NATIVE(memoryview(bytearray(section)), count, base, low, high) == expected
    return expected


def section(batch: bytes) -> bytes:
    return batch[BATCH_HEADER_SIZE:]


@settings(max_examples=500)
@given(st.binary(max_size=80), st.integers(0, 6), INT64, INT64, INT64)
def test_walks_agree_on_random_sections(data: bytes, count: int, base: int, low: int, high: int) -> None:
    both_walks(data, count, base, low, high)


@settings(max_examples=500, deadline=None)
@given(records=RECORDS, data=st.data())
def test_walks_agree_on_mutated_sections(records: list, data: st.DataObject) -> None:
    good = bytearray(section(build_batch(records)))
    count = len(records)
    assert both_walks(bytes(good), count)[0:2] == (RECORD_OK, count)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        index = data.draw(st.integers(0, max(0, len(good) - 1)))
        if action == "flip" and good:
            good[index] ^= data.draw(st.integers(1, 255))
        elif action == "insert":
            good[index:index] = data.draw(st.binary(min_size=1, max_size=4))
        elif good:
            del good[index]
    base = data.draw(INT64)
    low, high = sorted((data.draw(INT64), data.draw(INT64)))
    both_walks(bytes(good), data.draw(st.integers(0, count + 2)), base, low, high)


@pytest.mark.parametrize("records", [[(b"key", b"value", [("h", b"v")], 5)] * 3, [(None, b"x" * 300, [], 7), (b"k", None, [("a", None)] * 70, 9)]])
def test_walks_agree_on_every_truncation(records: list) -> None:
    good = section(build_batch(records))
    for cut in range(len(good)):
        error, index, *_ = both_walks(good[:cut], len(records))
        assert error in (RECORD_TRUNCATED, RECORD_COUNT_TOO_HIGH, RECORD_SIZE_MISMATCH), cut
    assert both_walks(good, len(records))[0] == RECORD_OK


def test_walk_reports_timestamps_and_keys() -> None:
    good = section(build_batch([(b"a", b"1", [], 100), (None, b"2", [], 300), (b"c", b"3", [], -1), (None, b"4", [], 50)]))
    # -1 is "no timestamp": never out of bounds. Timestamps are base + delta.
    assert both_walks(good, 4, 100, 60, 200) == (RECORD_OK, 4, 300, 1, 1)
    assert both_walks(good, 4, 100, 0, 1000) == (RECORD_OK, 4, 300, -1, 1)
    # Java long arithmetic: base + delta wraps.
    deltas_0_1 = section(build_batch([(b"a", b"1", [], 0), (b"b", b"2", [], 1)]))
    assert both_walks(deltas_0_1, 2, 2**63 - 1, 0, 2**63 - 1) == (RECORD_OK, 2, 2**63 - 1, 1, -1)


GOOD_RECORD_2 = bytes.fromhex("0c" "00" "00" "02" "01" "00" "00")  # fmt: skip  # offset delta 1


@pytest.mark.parametrize(
    ("data", "count", "expected"),
    [
        (GOOD_RECORD, 1, (RECORD_OK, 1)),
        (GOOD_RECORD + GOOD_RECORD_2, 2, (RECORD_OK, 2)),
        (GOOD_RECORD, 2, (RECORD_COUNT_TOO_HIGH, 1)),
        (GOOD_RECORD * 2, 2, (RECORD_OFFSET_DELTA, 1)),
        (GOOD_RECORD + b"\x00", 1, (RECORD_BYTES_LEFT, 1)),
        (bytes.fromhex("10000000010000"), 1, (RECORD_TRUNCATED, 0)),
        (bytes.fromhex("01"), 1, (RECORD_NEGATIVE_LENGTH, 0)),
        (bytes.fromhex("00"), 1, (RECORD_TRUNCATED, 0)),
        (bytes.fromhex("0c000000030000"), 1, (RECORD_INVALID_KEY_LENGTH, 0)),
        (bytes.fromhex("0c0000007e0000"), 1, (RECORD_TRUNCATED, 0)),
        (bytes.fromhex("0c000000010001"), 1, (RECORD_INVALID_HEADER_COUNT, 0)),
        (bytes.fromhex("100000000100020100"), 1, (RECORD_INVALID_HEADER_KEY_LENGTH, 0)),
        (bytes.fromhex("0e00000001000000"), 1, (RECORD_SIZE_MISMATCH, 0)),
        (bytes.fromhex("1800ffffffffffffffffffff01"), 1, (RECORD_VARINT_TOO_LONG, 0)),
        (bytes.fromhex("ffffffffff"), 1, (RECORD_VARINT_TOO_LONG, 0)),
        (bytes.fromhex("ffff"), 1, (RECORD_TRUNCATED, 0)),
        (b"", 1, (RECORD_COUNT_TOO_HIGH, 0)),
    ],
)
def test_walk_errors(data: bytes, count: int, expected: tuple[int, int]) -> None:
    assert both_walks(data, count)[:2] == expected


# --- validate_produced -----------------------------------------------------------


def accepted(batch: bytes | bytearray, policy: RecordPolicy = LOOSE) -> bool:
    try:
        validate_produced(bytearray(batch), validate_batches(batch), policy, NOW, "t-0")
    except InvalidBatchError:
        return False
    return True


def assert_readable(batch: bytes | bytearray) -> None:
    (header,) = validate_batches(batch)
    decoded = list(iter_records(batch))
    assert [r.offset - header.base_offset for r in decoded] == list(range(header.records_count))


def refusal(batch: bytes | bytearray, policy: RecordPolicy = LOOSE, now: int = NOW) -> InvalidBatchError:
    with pytest.raises(InvalidBatchError) as info:
        validate_produced(bytearray(batch), validate_batches(batch), policy, now, "t-0")
    return info.value


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_every_byte_flip_and_truncation_fails_or_decodes_the_original(compression: int) -> None:
    # Unsigned damage (no resign): whatever is accepted decodes to exactly what was
    # built. baseOffset and partitionLeaderEpoch are the broker's to set, not checked.
    original = build_batch(
        [(b"key", b"value", [("h", b"v")], NOW), (None, b"x" * 30, [], NOW + 1)], compression=compression
    )
    expected = list(iter_records(original))
    for index in [*range(8, 12), *range(16, len(original))]:
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(original)
            damaged[index] ^= flip
            if accepted(damaged):
                assert list(iter_records(damaged)) == expected, (index, flip)
    for cut in range(len(original)):
        with pytest.raises(InvalidBatchError):
            validate_batches(original[:cut])


@settings(max_examples=300, deadline=None)
@given(records=RECORDS, compression=st.sampled_from(COMPRESSIONS), data=st.data())
def test_what_validation_accepts_decodes_whole(records: list, compression: int, data: st.DataObject) -> None:
    batch = bytearray(build_batch(records, compression=compression))
    assert accepted(batch)
    for _ in range(data.draw(st.integers(1, 3))):
        batch[data.draw(st.integers(BATCH_HEADER_SIZE, len(batch) - 1))] ^= data.draw(st.integers(1, 255))
    resign(batch)
    if accepted(batch):
        assert_readable(batch)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_valid_batches_pass(compression: int) -> None:
    batch = build_batch([(b"k", b"v" * 100, [("h", b"1")], NOW)] * 50, compression=compression)
    buf = bytearray(batch)
    validate_produced(buf, validate_batches(buf), RecordPolicy(timestamp_before_max_ms=1, timestamp_after_max_ms=1), NOW, "t-0")
    assert buf == batch  # stored as sent


def test_control_batch_and_missing_sequence_are_invalid_record() -> None:
    marker = build_control_batch(7, 0, True, 0)
    error = refusal(marker)
    assert error.error_code == ErrorCode.invalid_record
    assert str(error) == "Clients are not allowed to write control records in topic partition t-0"
    error = refusal(build_batch([(b"k", b"v")], producer_id=7, producer_epoch=0, base_sequence=-1))
    assert error.error_code == ErrorCode.invalid_record
    assert "Invalid sequence number -1" in str(error)


@pytest.mark.parametrize("codec", [5, 6, 7])
def test_unknown_codec_is_corrupt(codec: int) -> None:
    error = refusal(resigned_section(GOOD_RECORD, 1, codec))
    assert error.error_code == ErrorCode.corrupt_message
    assert f"unknown compression codec id {codec}" in str(error)


def resigned_section(data: bytes, count: int = 1, codec: int = 0) -> bytearray:
    batch = _with_section(data, count, codec)
    struct.pack_into(">i", batch, 23, count - 1)
    resign(batch)
    return batch


def test_record_structure_is_invalid_record() -> None:
    error = refusal(resigned_section(GOOD_RECORD * 2, 2))
    assert error.error_code == ErrorCode.invalid_record
    assert "record 1: offset delta is not the record's position" in str(error)
    assert error.record_errors == []


def test_timestamps_out_of_bounds_name_every_record() -> None:
    batch = build_batch([(b"k", b"v", [], t) for t in (NOW, NOW - 5000, NOW + 5000, NOW - 10)])
    policy = RecordPolicy(timestamp_before_max_ms=1000, timestamp_after_max_ms=1000)
    error = refusal(batch, policy)
    assert error.error_code == ErrorCode.invalid_timestamp
    assert [e.batch_index for e in error.record_errors] == [1, 2]
    assert error.record_errors[0].message == (
        f"Timestamp {NOW - 5000} of message with offset 1 is out of range. "
        f"The timestamp should be within [{NOW - 1000}, {NOW + 1000}]"
    )
    # LogAppendTime topics take any CreateTime.
    assert accepted(batch, RecordPolicy(log_append_time=True, timestamp_before_max_ms=0, timestamp_after_max_ms=0))


def test_keys_required_on_compacted_topics() -> None:
    batch = build_batch([(b"k", b"v"), (None, b"v"), (b"k", None)])
    error = refusal(batch, RecordPolicy(keys_required=True))
    assert error.error_code == ErrorCode.invalid_record
    assert [e.batch_index for e in error.record_errors] == [1]
    assert accepted(batch)


def test_a_lying_max_timestamp_is_rewritten_and_resigned() -> None:
    batch = bytearray(build_batch([(b"k", b"v", [], NOW), (b"k", b"v", [], NOW + 7)]))
    struct.pack_into(">q", batch, 35, NOW + 10**6)
    resign(batch)
    (header,) = validate_batches(batch)
    validate_produced(batch, [header], LOOSE, NOW, "t-0")
    (stored,) = validate_batches(batch)  # CRC still right
    assert stored.max_timestamp == header.max_timestamp == NOW + 7


def test_decompression_is_bounded() -> None:
    data = bytes(3 << 20)
    for codec in (codecs.GZIP, codecs.SNAPPY, codecs.LZ4, codecs.ZSTD):
        packed = codecs.compress(codec, data)
        assert bytes(decompress_records(codec, packed, len(data))) == data
        with pytest.raises(InvalidBatchError) as info:
            decompress_records(codec, packed, len(data) - 1)
        assert info.value.error_code == ErrorCode.corrupt_message
        assert "more than" in str(info.value)


def test_wrapped_timestamps_are_named_as_the_walk_computed_them() -> None:
    # baseTimestamp + delta past int64 wraps (Java long): far in the past, out of bounds.
    batch = bytearray(build_batch([(b"k", b"v", [], 0), (b"k", b"v", [], 1)]))
    struct.pack_into(">q", batch, 27, 2**63 - 1)  # baseTimestamp
    resign(batch)
    error = refusal(batch, RecordPolicy(timestamp_before_max_ms=1000))
    assert error.error_code == ErrorCode.invalid_timestamp
    assert [e.batch_index for e in error.record_errors] == [1]
    assert f"Timestamp {-(2**63)} of message" in error.record_errors[0].message


def test_replicated_batches_may_be_thinned_by_compaction() -> None:
    """A follower fetches its leader's log as the cleaner left it: a batch keeps its
    offsets with fewer records (or none); a produced batch may not."""
    thinned = build_batch(
        [Record(offset=0, timestamp=1000, key=b"a", value=b"1", headers=[]),
         Record(offset=4, timestamp=1000, key=b"b", value=b"2", headers=[])],
        base_offset=0, last_offset_delta=4, timestamp_ms=1000,
    )
    empty = build_batch([], base_offset=5, last_offset_delta=2, timestamp_ms=1000)
    for batch in (thinned, empty):
        with pytest.raises(InvalidBatchError):
            validate_batches(batch)
        (header,) = validate_batches(batch, replicated=True)
        assert header.records_count < header.last_offset_delta + 1
    # More records than offsets is damage, replicated or not.
    too_many = bytearray(build_batch([(b"a", b"1"), (b"b", b"2")], timestamp_ms=1000))
    struct.pack_into(">i", too_many, 23, 0)  # lastOffsetDelta 0 for 2 records
    struct.pack_into(">I", too_many, CRC_OFFSET, crc32c(memoryview(too_many)[ATTRIBUTES_OFFSET:]))
    with pytest.raises(InvalidBatchError):
        validate_batches(bytes(too_many), replicated=True)
