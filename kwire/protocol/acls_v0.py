"""Version 0 of DescribeAcls, CreateAcls and DeleteAcls, which kio does not carry.

v0 is v1 without the pattern type (KIP-290 added it; a v0 pattern is LITERAL). A v0
request is read by inserting that one byte (LITERAL) where v1 has it and reading
the v1 body with kio, after the usual bounds check; a v0 response is written here
from the v1 entity, leaving the pattern type out. Both are non-flexible versions.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from kwire.protocol.bounds import check_request
from kwire.protocol.headers import MalformedRequest
from kwire.protocol.messages import decode_request

DESCRIBE_ACLS_KEY = 29
CREATE_ACLS_KEY = 30
DELETE_ACLS_KEY = 31
LITERAL = 3  # PatternType.LITERAL

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def _skip_string(buf: memoryview, pos: int) -> int:
    """The position after a (nullable) int16-length string at pos."""
    if pos + 2 > len(buf):
        raise MalformedRequest("ACL request v0: truncated string length")
    (length,) = _I16.unpack_from(buf, pos)
    pos += 2
    if length < -1 or pos + max(length, 0) > len(buf):
        raise MalformedRequest("ACL request v0: bad string length")
    return pos + max(length, 0)


def _v0_as_v1(api_key: int, buf: memoryview, offset: int) -> bytes:
    """The v0 body at offset, with a LITERAL pattern type after each resource name."""
    # Each filter or creation starts with resource type (int8) then resource name.
    if api_key == DESCRIBE_ACLS_KEY:
        starts = [offset]
    else:
        if offset + 4 > len(buf):
            raise MalformedRequest("ACL request v0: truncated array length")
        (count,) = _I32.unpack_from(buf, offset)
        # Each entry is at least 1 + 2 + 2 + 2 + 1 + 1 bytes.
        if count < 0 or count * 9 > len(buf) - offset - 4:
            raise MalformedRequest(f"ACL request v0: bad array length {count}")
        starts = []
        pos = offset + 4
        for _ in range(count):
            starts.append(pos)
            pos = _skip_string(buf, pos + 1)
            pos = _skip_string(buf, pos)
            pos = _skip_string(buf, pos) + 2
        if pos > len(buf):
            raise MalformedRequest("ACL request v0: truncated entry")
    parts: list[bytes] = []
    last = offset
    for start in starts:
        after_name = _skip_string(buf, start + 1)
        parts += (bytes(buf[last:after_name]), bytes((LITERAL,)))
        last = after_name
    parts.append(bytes(buf[last:]))
    return b"".join(parts)


def acls_request_reader(api_key: int) -> Callable[[bytearray, int, int], Any]:
    """The request decoder of one of the three ACL APIs: v0 by hand, v1+ by kio."""

    def read(frame: bytearray, offset: int, version: int) -> Any:
        view = memoryview(frame).toreadonly()
        if version == 0:
            view = memoryview(_v0_as_v1(api_key, view, offset)).toreadonly()
            offset = 0
            version = 1
        check_request(api_key, version, view, offset)
        return decode_request(api_key, version, view, offset)

    return read


def _string(value: str | None) -> bytes:
    if value is None:
        return _I16.pack(-1)
    data = value.encode()
    return _I16.pack(len(data)) + data


def _array(items: list[bytes]) -> bytes:
    return _I32.pack(len(items)) + b"".join(items)


def _millis(throttle: Any) -> int:
    return int(throttle.total_seconds() * 1000)


def encode_describe_acls_v0(response: Any) -> bytes:
    """A DescribeAclsResponse v1 entity written as v0."""
    resources = [
        bytes((r.resource_type,))
        + _string(r.resource_name)
        + _array(
            [_string(a.principal) + _string(a.host) + bytes((a.operation, a.permission_type)) for a in r.acls]
        )
        for r in response.resources
    ]
    return (
        _I32.pack(_millis(response.throttle_time))
        + _I16.pack(response.error_code)
        + _string(response.error_message)
        + _array(resources)
    )


def encode_delete_acls_v0(response: Any) -> bytes:
    """A DeleteAclsResponse v1 entity written as v0."""
    results = [
        _I16.pack(f.error_code)
        + _string(f.error_message)
        + _array(
            [
                _I16.pack(m.error_code)
                + _string(m.error_message)
                + bytes((m.resource_type,))
                + _string(m.resource_name)
                + _string(m.principal)
                + _string(m.host)
                + bytes((m.operation, m.permission_type))
                for m in f.matching_acls
            ]
        )
        for f in response.filter_results
    ]
    return _I32.pack(_millis(response.throttle_time)) + _array(results)
