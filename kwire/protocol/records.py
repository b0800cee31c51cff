"""Record batches, magic v2: the header the broker reads on every produced batch.

Layout (big-endian), 61 bytes before the records:
baseOffset int64, batchLength int32, partitionLeaderEpoch int32, magic int8,
crc uint32 (CRC-32C of everything after it), attributes int16, lastOffsetDelta int32,
baseTimestamp int64, maxTimestamp int64, producerId int64, producerEpoch int16,
baseSequence int32, records count int32.

The broker stores a batch as received, but for the fields Kafka's leader also
rewrites: baseOffset and partitionLeaderEpoch (outside the CRC), maxTimestamp when it
is not the records' largest, and LogAppendTime (re-signed).

A produced batch is checked in two steps, as Kafka's LogValidator does:
`validate_batches` reads the headers (length, magic, CRC-32C, record count), and
`validate_produced` decompresses each batch (bounded) and walks its records
(structure, offset deltas, timestamps, keys of compacted topics). The walk is in C
(_recordcheck.c); `_check_records_python` here is its reference.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from kio.schema.errors import ErrorCode

from kwire import codecs

log = logging.getLogger(__name__)

BATCH_HEADER_SIZE = 61
# baseOffset + batchLength: batchLength counts the bytes after these 12.
LOG_OVERHEAD = 12
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21
MAX_TIMESTAMP_OFFSET = 35

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_LOG_APPEND = 0x08
TRANSACTIONAL_FLAG = 0x10
CONTROL_FLAG = 0x20
DELETE_HORIZON_FLAG = 0x40

NO_PRODUCER_ID = -1
NO_SEQUENCE = -1

_HEADER = struct.Struct(">qiibIhiqqqhii")
_I64 = struct.Struct(">q")
_I32 = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class RecordError:
    """Why one record of a refused batch was refused (KIP-467, ProduceResponse v8+)."""

    batch_index: int
    message: str


_native_crc32c = None


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C, by the crc32c package (in C). Imported on the first call: the package
    reads its own version from the installed metadata when imported, which start-up
    (the first Metadata answer) need not wait for."""
    global _native_crc32c
    if _native_crc32c is None:
        from crc32c import crc32c as native

        _native_crc32c = native
    return _native_crc32c(data)


class InvalidBatchError(Exception):
    """A produced batch the broker refuses; `error_code` is Kafka's answer and
    `record_errors` the records at fault, where Kafka names them."""

    def __init__(
        self, error_code: ErrorCode, message: str, record_errors: Sequence[RecordError] = ()
    ) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.record_errors = list(record_errors)


@dataclass(slots=True)
class BatchHeader:
    """The fixed header of one record batch, and where it sits in its buffer."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int
    position: int = 0

    @property
    def size(self) -> int:
        """Bytes of the whole batch, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def last_sequence(self) -> int:
        if self.base_sequence == NO_SEQUENCE:
            return NO_SEQUENCE
        # Sequences wrap at int32 max, as in Kafka's DefaultRecordBatch.
        return (self.base_sequence + self.last_offset_delta) % 0x80000000

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def is_log_append_time(self) -> bool:
        return bool(self.attributes & TIMESTAMP_TYPE_LOG_APPEND)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_FLAG)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_FLAG)

    @property
    def has_producer_id(self) -> bool:
        return self.producer_id >= 0


def parse_batch_header(buf: bytes | bytearray | memoryview, position: int = 0) -> BatchHeader:
    """Read the 61-byte header at `position`. The caller checks there are 61 bytes."""
    return BatchHeader(*_HEADER.unpack_from(buf, position), position)


def batch_crc(buf: bytes | bytearray | memoryview, header: BatchHeader) -> int:
    """CRC-32C over attributes .. end of batch, as the batch header's crc field covers."""
    start = header.position + ATTRIBUTES_OFFSET
    return crc32c(memoryview(buf)[start : header.position + header.size])


def validate_batches(buf: bytes | bytearray | memoryview, *, replicated: bool = False) -> list[BatchHeader]:
    """Split a produced `records` blob into batches and check each one.

    Checks what Kafka checks before it assigns offsets, without decoding records:
    whole batches only, magic 2, CRC-32C, and a record count that matches the
    offset deltas. Raises InvalidBatchError with Kafka's error code.

    `replicated`: batches a follower fetched from its leader's log, which compaction
    may have thinned (fewer records than offsets, or none: Kafka's cleaner keeps a
    batch's offsets), so the count need only fit the offsets.
    """
    view = memoryview(buf)
    total = len(view)
    headers: list[BatchHeader] = []
    position = 0
    if total == 0:
        raise InvalidBatchError(ErrorCode.invalid_record, "produce request holds no record batch")
    while position < total:
        if total - position < BATCH_HEADER_SIZE:
            if total - position >= MAGIC_OFFSET + 1 and view[position + MAGIC_OFFSET] < 2:
                raise InvalidBatchError(
                    ErrorCode.unsupported_for_message_format,
                    "record batches older than magic v2 are not accepted",
                )
            raise InvalidBatchError(ErrorCode.corrupt_message, "truncated record batch header")
        header = parse_batch_header(view, position)
        if header.magic != 2:
            raise InvalidBatchError(
                ErrorCode.unsupported_for_message_format
                if header.magic in (0, 1)
                else ErrorCode.corrupt_message,
                f"record batch magic {header.magic}, only magic v2 is accepted",
            )
        if header.batch_length < BATCH_HEADER_SIZE - LOG_OVERHEAD:
            raise InvalidBatchError(
                ErrorCode.corrupt_message, f"record batch length {header.batch_length} too small"
            )
        if position + header.size > total:
            raise InvalidBatchError(ErrorCode.corrupt_message, "record batch runs past the request")
        if batch_crc(view, header) != header.crc:
            raise InvalidBatchError(ErrorCode.corrupt_message, "record batch CRC-32C mismatch")
        if (
            not 0 <= header.records_count <= header.last_offset_delta + 1
            if replicated
            else header.records_count <= 0 or header.records_count != header.last_offset_delta + 1
        ):
            raise InvalidBatchError(
                ErrorCode.invalid_record,
                f"record count {header.records_count} does not match "
                f"last offset delta {header.last_offset_delta}",
            )
        headers.append(header)
        position += header.size
    return headers


def set_base_offset(buf: bytearray | memoryview, header: BatchHeader, base_offset: int) -> None:
    """Assign the batch its offsets. baseOffset lies outside the CRC."""
    _I64.pack_into(buf, header.position, base_offset)
    header.base_offset = base_offset


def set_partition_leader_epoch(buf: bytearray | memoryview, header: BatchHeader, epoch: int) -> None:
    """Stamp the leader epoch the batch was appended in. Outside the CRC, as in Kafka."""
    _I32.pack_into(buf, header.position + 12, epoch)
    header.partition_leader_epoch = epoch


def set_log_append_time(buf: bytearray | memoryview, header: BatchHeader, timestamp_ms: int) -> None:
    """Mark the batch LogAppendTime with the broker's clock, and re-sign it (the CRC
    covers attributes and maxTimestamp)."""
    attributes = header.attributes | TIMESTAMP_TYPE_LOG_APPEND
    struct.pack_into(">h", buf, header.position + ATTRIBUTES_OFFSET, attributes)
    header.attributes = attributes
    set_max_timestamp(buf, header, timestamp_ms)


def set_max_timestamp(buf: bytearray | memoryview, header: BatchHeader, timestamp_ms: int) -> None:
    """Set the batch's maxTimestamp and re-sign it (the CRC covers it): Kafka's leader
    sets it to the records' largest, or to the log append time."""
    _I64.pack_into(buf, header.position + MAX_TIMESTAMP_OFFSET, timestamp_ms)
    header.max_timestamp = timestamp_ms
    crc = batch_crc(buf, header)
    struct.pack_into(">I", buf, header.position + CRC_OFFSET, crc)
    header.crc = crc


# --- Varints ----------------------------------------------------------------
# Records use zigzag varints (int32) and varlongs (int64), as protobuf's sint32/sint64:
# 7 bits a byte, low group first, high bit set on every byte but the last.

_VARINT_MAX_BYTES = 5
_VARLONG_MAX_BYTES = 10
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_VARINT_TOO_LONG = "varint longer than"


def _write_zigzag(out: bytearray, value: int, bits: int) -> None:
    n = ((value << 1) ^ (value >> (bits - 1))) & ((1 << bits) - 1)
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def write_varint(out: bytearray, value: int) -> None:
    """Append `value` (int32) to `out` as a zigzag varint."""
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise ValueError(f"varint out of int32 range: {value}")
    _write_zigzag(out, value, 32)


def write_varlong(out: bytearray, value: int) -> None:
    """Append `value` (int64) to `out` as a zigzag varlong."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"varlong out of int64 range: {value}")
    _write_zigzag(out, value, 64)


def encode_varint(value: int) -> bytes:
    """`value` (int32) as a zigzag varint."""
    out = bytearray()
    write_varint(out, value)
    return bytes(out)


def encode_varlong(value: int) -> bytes:
    """`value` (int64) as a zigzag varlong."""
    out = bytearray()
    write_varlong(out, value)
    return bytes(out)


def _read_zigzag(
    buf: bytes | bytearray | memoryview, position: int, max_bytes: int, bits: int
) -> tuple[int, int]:
    n = 0
    shift = 0
    start = position
    end = min(len(buf), position + max_bytes)
    while position < end:
        byte = buf[position]
        position += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            # Java keeps only the low 32/64 bits of an over-long last byte.
            n &= (1 << bits) - 1
            return (n >> 1) ^ -(n & 1), position
        shift += 7
    if position - start == max_bytes:
        raise InvalidBatchError(ErrorCode.corrupt_message, f"{_VARINT_TOO_LONG} {max_bytes} bytes")
    raise InvalidBatchError(ErrorCode.corrupt_message, "varint runs past the end of the data")


def decode_varint(buf: bytes | bytearray | memoryview, position: int = 0) -> tuple[int, int]:
    """Read a zigzag varint (int32) at `position`: (value, position after it).

    Raises InvalidBatchError(CORRUPT_MESSAGE) if it is truncated or over 5 bytes."""
    if position < len(buf) and buf[position] < 0x80:  # one byte: most lengths and deltas
        byte = buf[position]
        return (byte >> 1) ^ -(byte & 1), position + 1
    return _read_zigzag(buf, position, _VARINT_MAX_BYTES, 32)


def decode_varlong(buf: bytes | bytearray | memoryview, position: int = 0) -> tuple[int, int]:
    """Read a zigzag varlong (int64) at `position`: (value, position after it).

    Raises InvalidBatchError(CORRUPT_MESSAGE) if it is truncated or over 10 bytes."""
    if position < len(buf) and buf[position] < 0x80:  # one byte: most lengths and deltas
        byte = buf[position]
        return (byte >> 1) ^ -(byte & 1), position + 1
    return _read_zigzag(buf, position, _VARLONG_MAX_BYTES, 64)


# --- Records ------------------------------------------------------------------
# Each record: length varint, attributes int8, timestampDelta varlong, offsetDelta
# varint, key (varint length, -1 = null), value (same), header count varint, then
# per header a key (varint length + UTF-8) and a value (varint length, -1 = null).

Header = tuple[str, bytes | None]

CONTROL_ABORT = 0
CONTROL_COMMIT = 1
_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")


@dataclass(slots=True)
class Record:
    """One decoded record, with absolute offset and timestamp.

    `attributes` is the record's own attributes byte (unused by Kafka so far).
    Header keys are decoded with surrogateescape, so non-UTF-8 keys survive a
    rebuild byte for byte.
    """

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[Header]
    attributes: int = 0


def _corrupt(message: str) -> InvalidBatchError:
    return InvalidBatchError(ErrorCode.corrupt_message, message)


def _records_section(view: memoryview, header: BatchHeader) -> bytes:
    """The batch's record bytes, decompressed."""
    section = view[BATCH_HEADER_SIZE : header.size]
    codec = header.compression
    if codec == codecs.NONE:
        return bytes(section)
    try:
        return codecs.decompress(codec, section)
    except codecs.CompressionError as exc:
        raise _corrupt(f"record batch does not decompress: {exc}") from exc


def iter_records(batch: bytes | bytearray | memoryview) -> Iterator[Record]:
    """Decode the records of the batch at the start of `batch`.

    Decompresses per the attributes; offsets are baseOffset + offsetDelta and
    timestamps baseTimestamp + timestampDelta, or maxTimestamp for every record of
    a LogAppendTime batch. Does not check the CRC (validate_batches does). Raises
    InvalidBatchError(CORRUPT_MESSAGE) on malformed data, lazily as it iterates.
    Bytes after the first batch are ignored.
    """
    view = memoryview(batch).cast("B")
    if len(view) < BATCH_HEADER_SIZE:
        raise _corrupt("truncated record batch header")
    header = parse_batch_header(view)
    if header.magic != 2:
        raise _corrupt(f"record batch magic {header.magic}, only magic v2 is decoded")
    if header.batch_length < BATCH_HEADER_SIZE - LOG_OVERHEAD or header.size > len(view):
        raise _corrupt(f"record batch length {header.batch_length} does not fit the data")
    if header.records_count < 0:
        raise _corrupt(f"negative record count {header.records_count}")
    data = _records_section(view, header)
    try:
        yield from _decode_records(data, header)
    except (IndexError, UnicodeDecodeError) as exc:  # defensive: bounds are checked
        raise _corrupt(f"malformed record: {exc}") from exc


def _decode_records(data: bytes, header: BatchHeader) -> Iterator[Record]:
    base_offset = header.base_offset
    base_timestamp = header.base_timestamp
    log_append_time = header.max_timestamp if header.is_log_append_time else None
    total = len(data)
    position = 0
    for _ in range(header.records_count):
        length, position = decode_varint(data, position)
        end = position + length
        if length < 0 or end > total:
            raise _corrupt(f"record of {length} bytes runs past the batch")
        if position >= end:
            raise _corrupt("empty record")
        attributes = data[position]
        timestamp_delta, position = decode_varlong(data, position + 1)
        offset_delta, position = decode_varint(data, position)
        key, position = _read_bytes(data, position, end)
        value, position = _read_bytes(data, position, end)
        count, position = decode_varint(data, position)
        if count < 0:
            raise _corrupt(f"negative record header count {count}")
        headers: list[Header] = []
        for _ in range(count):
            name, position = _read_bytes(data, position, end)
            if name is None:
                raise _corrupt("null record header key")
            header_value, position = _read_bytes(data, position, end)
            headers.append((name.decode("utf-8", "surrogateescape"), header_value))
        if position != end:
            raise _corrupt(f"record declares {length} bytes but holds {length + position - end}")
        yield Record(
            offset=base_offset + offset_delta,
            timestamp=log_append_time if log_append_time is not None else base_timestamp + timestamp_delta,
            key=key,
            value=value,
            headers=headers,
            attributes=attributes,
        )
    if position != total:
        raise _corrupt(f"{total - position} bytes left after {header.records_count} records")


def _read_bytes(data: bytes, position: int, end: int) -> tuple[bytes | None, int]:
    size, position = decode_varint(data, position)
    if size == -1:
        return None, position
    if size < -1:
        raise _corrupt(f"record field length {size}")
    if position + size > end:
        raise _corrupt(f"record field of {size} bytes runs past its record")
    return data[position : position + size], position + size


# A record to build: (key, value), (key, value, headers) or (key, value, headers,
# timestamp_ms); or a Record, which also fixes its offset (for rebuilt batches).
RecordInput = (
    tuple[bytes | None, bytes | None]
    | tuple[bytes | None, bytes | None, Sequence[Header]]
    | tuple[bytes | None, bytes | None, Sequence[Header], int | None]
    | Record
)


def _write_bytes(out: bytearray, data: bytes | bytearray | memoryview | None) -> None:
    if data is None:
        out.append(1)  # zigzag(-1)
    else:
        write_varint(out, len(data))
        out += data


def _encode_record(
    out: bytearray,
    offset_delta: int,
    timestamp_delta: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[Header],
    attributes: int = 0,
) -> None:
    body = bytearray()
    body.append(attributes & 0xFF)
    write_varlong(body, timestamp_delta)
    write_varint(body, offset_delta)
    _write_bytes(body, key)
    _write_bytes(body, value)
    write_varint(body, len(headers))
    for name, header_value in headers:
        _write_bytes(body, name.encode("utf-8", "surrogateescape"))
        _write_bytes(body, header_value)
    write_varint(out, len(body))
    out += body


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def build_batch(
    records: Sequence[RecordInput],
    *,
    base_offset: int = 0,
    compression: int = 0,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = -1,
    base_sequence: int = NO_SEQUENCE,
    transactional: bool = False,
    partition_leader_epoch: int = -1,
    timestamp_type_log_append: bool = False,
    timestamp_ms: int | None = None,
    last_offset_delta: int | None = None,
    compression_level: int | None = None,
) -> bytes:
    """A complete magic v2 batch, CRC included, as a Kafka producer writes it.

    Records without a timestamp get `timestamp_ms`, or the wall clock if that is
    None (a timestamp of 0 would make retention drop the batch at once). Records
    are at consecutive offsets unless given as `Record`s, whose offsets are kept
    (offset delta = offset - base_offset), as compaction needs. baseTimestamp is
    the first record's timestamp, maxTimestamp the largest. `last_offset_delta`
    overrides the header field (a compacted batch keeps its original one); an
    empty batch needs it.
    """
    default_timestamp = _now_ms() if timestamp_ms is None else timestamp_ms
    body = bytearray()
    base_timestamp: int | None = None
    max_timestamp = -1
    max_delta = -1
    for index, item in enumerate(records):
        if isinstance(item, Record):
            key, value, headers, timestamp = item.key, item.value, item.headers, item.timestamp
            offset_delta, attributes = item.offset - base_offset, item.attributes
        else:
            key, value = item[0], item[1]
            headers = item[2] if len(item) > 2 else ()
            given = item[3] if len(item) > 3 else None
            timestamp = default_timestamp if given is None else given
            offset_delta, attributes = index, 0
        if base_timestamp is None:
            base_timestamp = timestamp
        max_timestamp = max(max_timestamp, timestamp)
        max_delta = max(max_delta, offset_delta)
        _encode_record(body, offset_delta, timestamp - base_timestamp, key, value, headers, attributes)
    if last_offset_delta is None:
        if not records:
            raise ValueError("an empty batch needs last_offset_delta")
        last_offset_delta = max_delta
    elif last_offset_delta < max_delta:
        raise ValueError(f"last_offset_delta {last_offset_delta} below a record's delta {max_delta}")
    if base_timestamp is None:
        # Kafka's empty (compacted) batches carry one timestamp in both fields.
        base_timestamp = max_timestamp = -1 if timestamp_ms is None else timestamp_ms
    if compression != codecs.NONE:
        body = bytearray(codecs.compress(compression, body, compression_level))
    attributes = compression & COMPRESSION_MASK
    if timestamp_type_log_append:
        attributes |= TIMESTAMP_TYPE_LOG_APPEND
    if transactional:
        attributes |= TRANSACTIONAL_FLAG
    return _assemble(
        body,
        base_offset=base_offset,
        partition_leader_epoch=partition_leader_epoch,
        attributes=attributes,
        last_offset_delta=last_offset_delta,
        base_timestamp=base_timestamp,
        max_timestamp=max_timestamp,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        records_count=len(records),
    )


def _assemble(
    body: bytes | bytearray,
    *,
    base_offset: int,
    partition_leader_epoch: int,
    attributes: int,
    last_offset_delta: int,
    base_timestamp: int,
    max_timestamp: int,
    producer_id: int,
    producer_epoch: int,
    base_sequence: int,
    records_count: int,
) -> bytes:
    batch = bytearray(BATCH_HEADER_SIZE)
    batch += body
    _HEADER.pack_into(
        batch,
        0,
        base_offset,
        len(batch) - LOG_OVERHEAD,
        partition_leader_epoch,
        2,
        0,  # crc, signed below
        attributes,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        records_count,
    )
    struct.pack_into(">I", batch, CRC_OFFSET, crc32c(memoryview(batch)[ATTRIBUTES_OFFSET:]))
    return bytes(batch)


def build_control_batch(
    producer_id: int,
    producer_epoch: int,
    commit: bool,
    coordinator_epoch: int,
    base_offset: int = 0,
    timestamp_ms: int | None = None,
    *,
    partition_leader_epoch: int = -1,
) -> bytes:
    """A transaction marker batch: one control record, transactional|control.

    Key: version int16 0, type int16 (0 abort, 1 commit). Value: version int16 0,
    coordinator epoch int32. `timestamp_ms` None means the wall clock.
    """
    timestamp = _now_ms() if timestamp_ms is None else timestamp_ms
    body = bytearray()
    _encode_record(
        body,
        0,
        0,
        _CONTROL_KEY.pack(0, CONTROL_COMMIT if commit else CONTROL_ABORT),
        _CONTROL_VALUE.pack(0, coordinator_epoch),
        (),
    )
    return _assemble(
        body,
        base_offset=base_offset,
        partition_leader_epoch=partition_leader_epoch,
        attributes=TRANSACTIONAL_FLAG | CONTROL_FLAG,
        last_offset_delta=0,
        base_timestamp=timestamp,
        max_timestamp=timestamp,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=NO_SEQUENCE,
        records_count=1,
    )


def control_record_type(key: bytes | None) -> int:
    """CONTROL_ABORT or CONTROL_COMMIT from a control record's key.

    Other types (Kafka's KRaft control records: 2 and up) are returned as they are."""
    if key is None or len(key) < _CONTROL_KEY.size:
        raise _corrupt("control record key shorter than 4 bytes")
    version, kind = _CONTROL_KEY.unpack_from(key)
    if version < 0:
        raise _corrupt(f"control record key version {version}")
    return kind


def control_record_coordinator_epoch(value: bytes | None) -> int:
    """The coordinator epoch of a transaction marker's value."""
    if value is None or len(value) < _CONTROL_VALUE.size:
        raise _corrupt("transaction marker value shorter than 6 bytes")
    return _CONTROL_VALUE.unpack_from(value)[1]


# --- Produce validation: the records of a client's batches ------------------------
# What Kafka's LogValidator checks for a client (AppendOrigin.CLIENT) on magic v2:
# no control batches, a sequence with every producer id, records that parse, exactly
# `records count` of them at offset deltas 0..n-1 and nothing after them, timestamps
# within the topic's bounds (CreateTime), keys on compacted topics. Kafka answers a
# record that does not parse with InvalidRecordException (INVALID_RECORD); a payload
# that does not decompress is answered CORRUPT_MESSAGE here, like a CRC mismatch.

NO_TIMESTAMP = -1
LONG_MAX = _INT64_MAX

# Results of the record walk (_recordcheck.c uses the same numbers).
RECORD_OK = 0
RECORD_VARINT_TOO_LONG = 1
RECORD_TRUNCATED = 2
RECORD_NEGATIVE_LENGTH = 3
RECORD_INVALID_KEY_LENGTH = 4
RECORD_INVALID_VALUE_LENGTH = 5
RECORD_INVALID_HEADER_COUNT = 6
RECORD_INVALID_HEADER_KEY_LENGTH = 7
RECORD_INVALID_HEADER_VALUE_LENGTH = 8
RECORD_SIZE_MISMATCH = 9
RECORD_OFFSET_DELTA = 10
RECORD_COUNT_TOO_HIGH = 11
RECORD_BYTES_LEFT = 12

RECORD_ERROR_TEXT = {
    RECORD_VARINT_TOO_LONG: "varint longer than its type allows",
    RECORD_TRUNCATED: "record runs past the end of its data",
    RECORD_NEGATIVE_LENGTH: "negative record size",
    RECORD_INVALID_KEY_LENGTH: "key length below -1",
    RECORD_INVALID_VALUE_LENGTH: "value length below -1",
    RECORD_INVALID_HEADER_COUNT: "negative number of record headers",
    RECORD_INVALID_HEADER_KEY_LENGTH: "negative record header key length",
    RECORD_INVALID_HEADER_VALUE_LENGTH: "record header value length below -1",
    RECORD_SIZE_MISMATCH: "record size does not match the fields it holds",
    RECORD_OFFSET_DELTA: "offset delta is not the record's position in the batch",
    RECORD_COUNT_TOO_HIGH: "the batch holds fewer records than its record count",
    RECORD_BYTES_LEFT: "bytes left after the last record of the batch",
}

# (error, index, max_timestamp, first_bad_timestamp, first_null_key)
RecordCheck = tuple[int, int, int, int, int]


class _WalkError(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _walk_zigzag(data: memoryview, position: int, limit: int, max_bytes: int) -> tuple[int, int]:
    # decode_varint/decode_varlong read up to the end of their buffer: the limit is
    # the slice's end; their two failures map to the walk's two codes.
    try:
        if max_bytes == _VARINT_MAX_BYTES:
            return decode_varint(data[:limit], position)
        return decode_varlong(data[:limit], position)
    except InvalidBatchError as exc:
        too_long = str(exc).startswith(_VARINT_TOO_LONG)
        raise _WalkError(RECORD_VARINT_TOO_LONG if too_long else RECORD_TRUNCATED) from None


def _walk_field(data: memoryview, position: int, limit: int, min_length: int, invalid: int) -> tuple[bool, int]:
    size, position = _walk_zigzag(data, position, limit, _VARINT_MAX_BYTES)
    if size < min_length:
        raise _WalkError(invalid)
    if size > limit - position:
        raise _WalkError(RECORD_TRUNCATED)
    return size < 0, position + max(size, 0)


def _check_records_python(
    records: bytes | bytearray | memoryview,
    records_count: int,
    base_timestamp: int,
    timestamp_low: int,
    timestamp_high: int,
) -> RecordCheck:
    """The reference of _recordcheck.check_records: same walk, same result."""
    data = memoryview(records).cast("B")
    end = len(data)
    position = 0
    index = 0
    max_timestamp = NO_TIMESTAMP
    first_bad_timestamp = first_null_key = -1
    try:
        while index < records_count:
            if position == end:
                raise _WalkError(RECORD_COUNT_TOO_HIGH)
            length, position = _walk_zigzag(data, position, end, _VARINT_MAX_BYTES)
            if length < 0:
                raise _WalkError(RECORD_NEGATIVE_LENGTH)
            if length > end - position or length == 0:
                raise _WalkError(RECORD_TRUNCATED)
            record_end = position + length
            timestamp_delta, position = _walk_zigzag(data, position + 1, record_end, _VARLONG_MAX_BYTES)
            offset_delta, position = _walk_zigzag(data, position, record_end, _VARINT_MAX_BYTES)
            if offset_delta != index:
                raise _WalkError(RECORD_OFFSET_DELTA)
            null_key, position = _walk_field(data, position, record_end, -1, RECORD_INVALID_KEY_LENGTH)
            if null_key and first_null_key < 0:
                first_null_key = index
            _, position = _walk_field(data, position, record_end, -1, RECORD_INVALID_VALUE_LENGTH)
            header_count, position = _walk_zigzag(data, position, record_end, _VARINT_MAX_BYTES)
            if header_count < 0:
                raise _WalkError(RECORD_INVALID_HEADER_COUNT)
            for _ in range(header_count):
                _, position = _walk_field(data, position, record_end, 0, RECORD_INVALID_HEADER_KEY_LENGTH)
                _, position = _walk_field(data, position, record_end, -1, RECORD_INVALID_HEADER_VALUE_LENGTH)
            if position != record_end:
                raise _WalkError(RECORD_SIZE_MISMATCH)
            timestamp = _java_long(base_timestamp + timestamp_delta)
            max_timestamp = max(max_timestamp, timestamp)
            if first_bad_timestamp < 0 and timestamp != NO_TIMESTAMP and not timestamp_low <= timestamp <= timestamp_high:
                first_bad_timestamp = index
            index += 1
    except _WalkError as exc:
        return exc.code, index, max_timestamp, first_bad_timestamp, first_null_key
    error = RECORD_BYTES_LEFT if position != end else RECORD_OK
    return error, index, max_timestamp, first_bad_timestamp, first_null_key


def _java_long(value: int) -> int:
    """`value` wrapped to int64, as Java's long arithmetic does."""
    return ((value - _INT64_MIN) & 0xFFFFFFFFFFFFFFFF) + _INT64_MIN


try:
    from kwire.protocol._recordcheck import check_records as _check_records_native
except ImportError:  # not built: `pip install -e .` compiles it
    _check_records_native = None
    log.warning("kwire.protocol._recordcheck is not built: produce validation runs in Python, several times slower")

check_records = _check_records_native or _check_records_python
"""check_records(records, records_count, base_timestamp, timestamp_low, timestamp_high)
-> (error, index, max_timestamp, first_bad_timestamp, first_null_key): the walk of a
decompressed records section. `error` is RECORD_OK or a RECORD_* code about record
`index`; max_timestamp is -1 without timestamps; first_bad_timestamp is the first
record whose timestamp is not -1 and outside [timestamp_low, timestamp_high], and
first_null_key the first record without a key (-1: none)."""


# A bomb of a few KiB can decompress to gigabytes, so a batch's records may take at
# most this many times the topic's max.message.bytes (the bound on the compressed
# batch), and never less than MIN_DECOMPRESSED_LIMIT. No client writes more: librdkafka
# caps an uncompressed MessageSet at batch.size and message.max.bytes (1,000,000 bytes
# by default), and Java's producer closes a batch when its *estimated compressed* size
# reaches batch.size (16 KiB by default), so its records reach 64 MiB only with
# batch.size raised to 1 MiB and a ratio above 64 held over the whole batch.
DECOMPRESSED_LIMIT_FACTOR = 64
MIN_DECOMPRESSED_LIMIT = 64 << 20

# Decompression writes into this reused buffer (produce runs on the one trio thread,
# a batch at a time): no allocation per batch. It grows for a larger batch; a buffer
# beyond _SCRATCH_KEEP bytes (a huge batch, a bomb) serves one batch and is dropped.
_SCRATCH_KEEP = 8 << 20
_SCRATCH_START = 1 << 20
_scratch = bytearray()  # allocated by the first compressed batch


@dataclass(frozen=True, slots=True)
class RecordPolicy:
    """What a topic's configs ask of produced records (Kafka's LogConfig)."""

    log_append_time: bool = False  # message.timestamp.type=LogAppendTime
    timestamp_before_max_ms: int = LONG_MAX
    timestamp_after_max_ms: int = LONG_MAX
    keys_required: bool = False  # cleanup.policy includes compact
    max_decompressed_bytes: int = MIN_DECOMPRESSED_LIMIT


def decompressed_limit(max_message_bytes: int) -> int:
    """The decompressed size a batch may reach on a topic with this max.message.bytes."""
    return max(MIN_DECOMPRESSED_LIMIT, DECOMPRESSED_LIMIT_FACTOR * max_message_bytes)


def decompress_records(codec: int, section: bytes | bytearray | memoryview, limit: int) -> memoryview:
    """A compressed records section, decompressed into at most `limit` bytes.

    The result is a view of a shared buffer, valid until the next call. Raises
    InvalidBatchError(CORRUPT_MESSAGE) if it does not decompress or exceeds `limit`.
    """
    global _scratch
    if not _scratch:
        _scratch = bytearray(_SCRATCH_START)
    buffer = _scratch
    while True:
        room = min(len(buffer), limit)
        try:
            written = codecs.decompress_into(codec, section, memoryview(buffer)[:room])
            return memoryview(buffer)[:written]
        except codecs.OutputBufferFull:
            if room >= limit:
                raise _corrupt(f"records decompress to more than {limit} bytes") from None
            # Geometric growth: the retries cost less than the final pass.
            buffer = bytearray(min(limit, len(buffer) * 8))
            if len(buffer) <= _SCRATCH_KEEP:
                _scratch = buffer
        except codecs.CompressionError as exc:
            raise _corrupt(f"record batch does not decompress: {exc}") from None


def validate_produced(
    buf: bytearray | memoryview,
    headers: Sequence[BatchHeader],
    policy: RecordPolicy,
    now_ms: int,
    topic_partition: str,
) -> None:
    """Check the records of a client's batches, already through validate_batches.

    Raises InvalidBatchError with Kafka's error code, and per-record errors where
    Kafka gives them (timestamps, keys); nothing of a refused request may be stored.
    Sets a batch's maxTimestamp to its records' largest when it differs, as Kafka's
    leader does (CreateTime).
    """
    view = memoryview(buf)
    for header in headers:
        _validate_batch(view, header, policy, now_ms, topic_partition)


def _validate_batch(
    view: memoryview, header: BatchHeader, policy: RecordPolicy, now_ms: int, topic_partition: str
) -> None:
    if header.is_control:
        raise InvalidBatchError(
            ErrorCode.invalid_record,
            f"Clients are not allowed to write control records in topic partition {topic_partition}",
        )
    if header.has_producer_id and header.base_sequence < 0:
        raise InvalidBatchError(
            ErrorCode.invalid_record,
            f"Invalid sequence number {header.base_sequence} in record batch with producerId "
            f"{header.producer_id} in topic partition {topic_partition}",
        )
    section = view[header.position + BATCH_HEADER_SIZE : header.position + header.size]
    codec = header.compression
    if codec != codecs.NONE:
        if codec not in codecs.CODEC_NAMES:
            raise _corrupt(f"unknown compression codec id {codec} in topic partition {topic_partition}")
        section = decompress_records(codec, section, policy.max_decompressed_bytes)
    low, high = _INT64_MIN, _INT64_MAX
    # A record of a LogAppendTime batch has the batch's maxTimestamp: checked once here.
    check_timestamps = not policy.log_append_time and not header.is_log_append_time
    if check_timestamps:
        low = max(_INT64_MIN, now_ms - policy.timestamp_before_max_ms)
        high = min(_INT64_MAX, now_ms + policy.timestamp_after_max_ms)
    error, index, max_timestamp, first_bad_timestamp, first_null_key = check_records(
        section, header.records_count, header.base_timestamp, low, high
    )
    if error:
        raise InvalidBatchError(
            ErrorCode.invalid_record,
            f"Found invalid record structure in topic partition {topic_partition}: "
            f"record {index}: {RECORD_ERROR_TEXT[error]}",
        )
    if policy.log_append_time and header.is_log_append_time:
        message = "Invalid timestamp type in message. Producer should not set timestamp type to LogAppendTime."
        raise InvalidBatchError(
            ErrorCode.invalid_timestamp,
            "One or more records have been rejected due to invalid timestamp",
            [RecordError(i, message) for i in range(header.records_count)],
        )
    if header.is_log_append_time and not policy.log_append_time:
        low = now_ms - policy.timestamp_before_max_ms
        high = now_ms + policy.timestamp_after_max_ms
        if header.max_timestamp != NO_TIMESTAMP and not low <= header.max_timestamp <= high:
            first_bad_timestamp = 0
    if first_bad_timestamp >= 0 or (policy.keys_required and first_null_key >= 0):
        _raise_record_errors(section, header, policy, now_ms, topic_partition)
    if check_timestamps and max_timestamp != header.max_timestamp:
        set_max_timestamp(view, header, max_timestamp)


def _raise_record_errors(
    section: memoryview, header: BatchHeader, policy: RecordPolicy, now_ms: int, topic_partition: str
) -> None:
    # The refused path only: every record at fault, as Kafka lists them.
    low = now_ms - policy.timestamp_before_max_ms
    high = now_ms + policy.timestamp_after_max_ms
    errors: list[RecordError] = []
    bad_timestamp = False
    for index, record in enumerate(_decode_records(bytes(section), header)):
        timestamp = _java_long(record.timestamp)  # as the walk computed it
        if policy.keys_required and record.key is None:
            errors.append(
                RecordError(index, f"Compacted topic cannot accept message without key in topic partition {topic_partition}.")
            )
        elif not policy.log_append_time and timestamp != NO_TIMESTAMP and not low <= timestamp <= high:
            bad_timestamp = True
            errors.append(
                RecordError(
                    index,
                    f"Timestamp {timestamp} of message with offset {record.offset} is out of range. "
                    f"The timestamp should be within [{low}, {high}]",
                )
            )
    if bad_timestamp:
        raise InvalidBatchError(
            ErrorCode.invalid_timestamp, "One or more records have been rejected due to invalid timestamp", errors
        )
    shown = ", ".join(f"RecordError(batchIndex={e.batch_index}, message='{e.message}')" for e in errors[:3])
    raise InvalidBatchError(
        ErrorCode.invalid_record,
        f"One or more records have been rejected due to {len(errors)} record errors in total, "
        f"and only showing the first three errors at most: [{shown}]",
        errors,
    )
