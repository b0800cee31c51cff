"""ControlledShutdown (key 7) request and response, versions 1-3, by hand.

kio has no classes for it: Kafka 4 removed the API with ZooKeeper mode. Fields
follow Kafka's ControlledShutdownRequest.json / ControlledShutdownResponse.json
(flexible from v3). Version 0 is not served: its request header has no client id,
unlike every other request. Every length and count is checked against the bytes
left in the frame before it is used; unknown tagged fields are skipped, as Kafka's
generated readers do.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from kwire.protocol.headers import (
    MalformedRequest,
    encode_uvarint,
    read_uvarint,
    skip_tagged_fields,
)

API_KEY = 7
MIN_VERSION = 1
MAX_VERSION = 3
FLEXIBLE_VERSION = 3
# BrokerEpoch is in the request from v2; its default (and "unknown") is -1.
BROKER_EPOCH_VERSION = 2
UNKNOWN_BROKER_EPOCH = -1

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


def is_flexible(version: int) -> bool:
    return version >= FLEXIBLE_VERSION


@dataclass(frozen=True, slots=True)
class ControlledShutdownRequest:
    broker_id: int
    broker_epoch: int = UNKNOWN_BROKER_EPOCH


@dataclass(frozen=True, slots=True)
class RemainingPartition:
    topic_name: str
    partition_index: int


@dataclass(frozen=True, slots=True)
class ControlledShutdownResponse:
    # An int, not kio's ErrorCode: an answer may carry a code kio does not know.
    error_code: int
    remaining_partitions: tuple[RemainingPartition, ...] = ()


def _check_version(version: int) -> None:
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise ValueError(f"ControlledShutdown v{version} is not served (versions {MIN_VERSION}-{MAX_VERSION})")


# ---- writing ---------------------------------------------------------------------------


def encode_controlled_shutdown_request(request: ControlledShutdownRequest, version: int) -> bytes:
    """The request body (no header)."""
    _check_version(version)
    out = bytearray(_I32.pack(request.broker_id))
    if version >= BROKER_EPOCH_VERSION:
        out += _I64.pack(request.broker_epoch)
    if is_flexible(version):
        out.append(0)  # no tagged fields
    return bytes(out)


def encode_controlled_shutdown_response(response: ControlledShutdownResponse, version: int) -> bytes:
    """The response body (no header)."""
    _check_version(version)
    flexible = is_flexible(version)
    out = bytearray(_I16.pack(response.error_code))
    partitions: Sequence[RemainingPartition] = response.remaining_partitions
    out += encode_uvarint(len(partitions) + 1) if flexible else _I32.pack(len(partitions))
    for p in partitions:
        name = p.topic_name.encode()
        out += encode_uvarint(len(name) + 1) if flexible else _I16.pack(len(name))
        out += name
        out += _I32.pack(p.partition_index)
        if flexible:
            out.append(0)
    if flexible:
        out.append(0)
    return bytes(out)


# ---- reading ---------------------------------------------------------------------------


class _Reader:
    """Reads within [pos, len(buf)): nothing declared is trusted beyond that."""

    __slots__ = ("buf", "pos", "flexible", "what")

    def __init__(self, buf: bytes | bytearray | memoryview, pos: int, flexible: bool, what: str) -> None:
        self.buf = buf
        self.pos = pos
        self.flexible = flexible
        self.what = what

    def left(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int) -> int:
        start = self.pos
        if n < 0 or n > len(self.buf) - start:
            raise MalformedRequest(f"{self.what}: needs {n} bytes, {len(self.buf) - start} left")
        self.pos = start + n
        return start

    def int16(self) -> int:
        return _I16.unpack_from(self.buf, self.take(2))[0]

    def int32(self) -> int:
        return _I32.unpack_from(self.buf, self.take(4))[0]

    def int64(self) -> int:
        return _I64.unpack_from(self.buf, self.take(8))[0]

    def _compact_length(self) -> int:
        value, self.pos = read_uvarint(self.buf, self.pos)
        return value - 1

    def array_length(self, element_size: int) -> int:
        """A non-nullable array's count; at least `element_size` bytes each must be left."""
        n = self._compact_length() if self.flexible else self.int32()
        if n < 0:
            raise MalformedRequest(f"{self.what}: array length {n} where the array is not nullable")
        if n * element_size > self.left():
            raise MalformedRequest(f"{self.what}: {n} entries of at least {element_size} bytes, {self.left()} left")
        return n

    def string(self) -> str:
        """A non-nullable string."""
        n = self._compact_length() if self.flexible else self.int16()
        if n < 0:
            raise MalformedRequest(f"{self.what}: string length {n} where the string is not nullable")
        start = self.take(n)
        try:
            return bytes(self.buf[start : start + n]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedRequest(f"{self.what}: string is not UTF-8: {e}") from None

    def tagged_fields(self) -> None:
        if self.flexible:
            self.pos = skip_tagged_fields(self.buf, self.pos)


def read_controlled_shutdown_request(
    frame: bytes | bytearray | memoryview, offset: int, version: int
) -> ControlledShutdownRequest:
    """The request body at `offset` of a received frame (the API table's decoder)."""
    _check_version(version)
    r = _Reader(frame, offset, is_flexible(version), "ControlledShutdownRequest")
    broker_id = r.int32()
    broker_epoch = r.int64() if version >= BROKER_EPOCH_VERSION else UNKNOWN_BROKER_EPOCH
    r.tagged_fields()
    return ControlledShutdownRequest(broker_id, broker_epoch)


def read_controlled_shutdown_response(
    frame: bytes | bytearray | memoryview, offset: int, version: int
) -> ControlledShutdownResponse:
    """The response body at `offset` (after the response header)."""
    _check_version(version)
    flexible = is_flexible(version)
    r = _Reader(frame, offset, flexible, "ControlledShutdownResponse")
    error_code = r.int16()
    # A remaining partition: a topic name's length, the index, (tagged-field count).
    element = 1 + 4 + 1 if flexible else 2 + 4
    partitions = []
    for _ in range(r.array_length(element)):
        topic_name = r.string()
        partition_index = r.int32()
        r.tagged_fields()
        partitions.append(RemainingPartition(topic_name, partition_index))
    r.tagged_fields()
    return ControlledShutdownResponse(error_code, tuple(partitions))
