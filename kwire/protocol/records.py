"""Record batches, magic v2: the header the broker reads on every produced batch.

Layout (big-endian), 61 bytes before the records:
baseOffset int64, batchLength int32, partitionLeaderEpoch int32, magic int8,
crc uint32 (CRC-32C of everything after it), attributes int16, lastOffsetDelta int32,
baseTimestamp int64, maxTimestamp int64, producerId int64, producerEpoch int16,
baseSequence int32, records count int32.

The broker touches a batch only through this header: offsets are assigned by
rewriting baseOffset (outside the CRC), so a batch is stored exactly as received.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from crc32c import crc32c
from kio.schema.errors import ErrorCode

from kwire import codecs

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


class InvalidBatchError(Exception):
    """A produced batch the broker refuses; `error_code` is Kafka's answer."""

    def __init__(self, error_code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


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


def validate_batches(buf: bytes | bytearray | memoryview) -> list[BatchHeader]:
    """Split a produced `records` blob into batches and check each one.

    Checks what Kafka checks before it assigns offsets, without decoding records:
    whole batches only, magic 2, CRC-32C, and a record count that matches the
    offset deltas. Raises InvalidBatchError with Kafka's error code.
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
        if header.records_count <= 0 or header.records_count != header.last_offset_delta + 1:
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
    _I64.pack_into(buf, header.position + MAX_TIMESTAMP_OFFSET, timestamp_ms)
    header.attributes = attributes
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
        raise InvalidBatchError(ErrorCode.corrupt_message, f"varint longer than {max_bytes} bytes")
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
