"""Request and response headers (Kafka's RequestHeader v1/v2, ResponseHeader v0/v1).

Hand-written: every request pays for it, and it is four fields plus tagged fields.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_FIXED = struct.Struct(">hhih")
_CORRELATION = struct.Struct(">i")


class CloseConnection(Exception):
    """The connection must close after this request (no answer is sent)."""


class MalformedRequest(CloseConnection):
    """The request cannot be parsed; Kafka closes the connection."""


def read_uvarint(buf: bytes | memoryview, offset: int) -> tuple[int, int]:
    """Unsigned 32-bit varint (protobuf style) at `offset`; returns (value, next
    offset). At most five bytes, as Kafka's ByteUtils.readUnsignedVarint."""
    result = 0
    shift = 0
    while True:
        if offset >= len(buf):
            raise MalformedRequest("truncated varint")
        byte = buf[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result > 0xFFFFFFFF:
                raise MalformedRequest("varint exceeds 32 bits")
            return result, offset
        shift += 7
        if shift >= 35:
            raise MalformedRequest("varint longer than five bytes")


def encode_uvarint(value: int) -> bytes:
    """Unsigned varint, as compact lengths and tagged fields use."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def skip_tagged_fields(buf: bytes | memoryview, offset: int) -> int:
    count, offset = read_uvarint(buf, offset)
    if count * 2 > len(buf) - offset:
        # A tag and a size take a byte each at least.
        raise MalformedRequest(f"{count} tagged fields in {len(buf) - offset} bytes")
    for _ in range(count):
        _tag, offset = read_uvarint(buf, offset)
        size, offset = read_uvarint(buf, offset)
        offset += size
    if offset > len(buf):
        raise MalformedRequest("tagged fields run past the request")
    return offset


@dataclass(slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    # Where the request body starts in the frame.
    body_offset: int


def peek_api(frame: bytes) -> tuple[int, int, int]:
    """(api_key, api_version, correlation_id), readable before the version is known."""
    if len(frame) < 8:
        raise MalformedRequest(f"request of {len(frame)} bytes is shorter than a header")
    return struct.unpack_from(">hhi", frame, 0)


def parse_request_header(frame: bytes, flexible: bool) -> RequestHeader:
    """Header v1 (client_id as a legacy nullable string) or v2 (plus tagged fields).

    client_id stays a legacy string even in v2, as in Kafka's RequestHeader.json.
    """
    if len(frame) < 10:
        raise MalformedRequest(f"request of {len(frame)} bytes is shorter than a header")
    api_key, api_version, correlation_id, client_id_length = _FIXED.unpack_from(frame, 0)
    offset = 10
    client_id = None
    if client_id_length < -1:
        raise MalformedRequest(f"client_id length {client_id_length}")
    if client_id_length >= 0:
        end = offset + client_id_length
        if end > len(frame):
            raise MalformedRequest("client_id runs past the request")
        client_id = frame[offset:end].decode("utf-8", "replace")
        offset = end
    if flexible:
        offset = skip_tagged_fields(frame, offset)
    return RequestHeader(api_key, api_version, correlation_id, client_id, offset)


def response_header(correlation_id: int, flexible: bool) -> bytes:
    """ResponseHeader v0, or v1 with an empty tagged-field section."""
    if flexible:
        return _CORRELATION.pack(correlation_id) + b"\x00"
    return _CORRELATION.pack(correlation_id)
