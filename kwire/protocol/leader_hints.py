"""KIP-951 leader hints: with NOT_LEADER_OR_FOLLOWER (or FENCED_LEADER_EPOCH), a
Produce (v10+) or Fetch (v12+; endpoints v16+) answer names the partition's current
leader and epoch, and the endpoints of such leaders, so the client moves at once
instead of refreshing its metadata first.

Both are tagged fields: written only when there is a hint.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from kwire.protocol.headers import encode_uvarint

_LEADER = struct.Struct(">ii")
_I32 = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class NodeEndpoint:
    node_id: int
    host: str
    port: int
    rack: str | None = None


def tagged_field(tag: int, data: bytes) -> bytes:
    return encode_uvarint(tag) + encode_uvarint(len(data)) + data


def current_leader_field(tag: int, leader_id: int, leader_epoch: int) -> bytes:
    """A LeaderIdAndEpoch tagged field (its own tagged fields empty)."""
    return tagged_field(tag, _LEADER.pack(leader_id, leader_epoch) + b"\x00")


def node_endpoints_field(tag: int, endpoints: Sequence[NodeEndpoint]) -> bytes:
    out = bytearray(encode_uvarint(len(endpoints) + 1))
    for e in endpoints:
        host = e.host.encode()
        out += _I32.pack(e.node_id) + encode_uvarint(len(host) + 1) + host + _I32.pack(e.port)
        if e.rack is None:
            out += b"\x00"
        else:
            rack = e.rack.encode()
            out += encode_uvarint(len(rack) + 1) + rack
        out += b"\x00"
    return tagged_field(tag, bytes(out))


def tagged_fields(fields: Sequence[bytes]) -> bytes:
    """A tagged field section: the count, then the fields in tag order."""
    return encode_uvarint(len(fields)) + b"".join(fields)
