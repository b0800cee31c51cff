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
from dataclasses import dataclass

from crc32c import crc32c
from kio.schema.errors import ErrorCode

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
