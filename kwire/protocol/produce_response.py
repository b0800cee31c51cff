"""ProduceResponse v3-v11, hand-written for the hot path.

kio's writer validates every field through its phantom types, which cost more
than the append itself on a busy connection. Field order follows Kafka's
ProduceResponse.json (flexible from v9); tagged fields are left at defaults.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from kwire.protocol.fetch_response import EncodedBody
from kwire.protocol.headers import encode_uvarint
from kwire.protocol.leader_hints import (
    NodeEndpoint,
    current_leader_field,
    node_endpoints_field,
    tagged_fields,
)
from kwire.protocol.records import RecordError

FLEXIBLE_VERSION = 9
LEADER_HINT_VERSION = 10
_PARTITION = struct.Struct(">ihqq")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


@dataclass(slots=True)
class PartitionProduceResult:
    index: int
    error_code: int
    base_offset: int
    log_append_time_ms: int = -1
    log_start_offset: int = -1
    error_message: str | None = None
    # KIP-467 (v8+): the records that made the batch fail.
    record_errors: list[RecordError] = field(default_factory=list)
    # KIP-951 (v10+): (leader id, leader epoch) with NOT_LEADER_OR_FOLLOWER.
    current_leader: tuple[int, int] | None = None


def encode_produce_response(
    version: int,
    topics: Sequence[tuple[str, Sequence[PartitionProduceResult]]],
    throttle_time_ms: int = 0,
    node_endpoints: Sequence[NodeEndpoint] = (),
) -> EncodedBody:
    flexible = version >= FLEXIBLE_VERSION
    out = bytearray()

    def length(n: int) -> None:
        out.extend(encode_uvarint(n + 1) if flexible else _I32.pack(n))

    def string(text: str | None) -> None:
        if text is None:
            out.extend(b"\x00" if flexible else _I16.pack(-1))
            return
        raw = text.encode()
        out.extend(encode_uvarint(len(raw) + 1) if flexible else _I16.pack(len(raw)))
        out.extend(raw)

    length(len(topics))
    for name, partitions in topics:
        string(name)
        length(len(partitions))
        for p in partitions:
            out.extend(_PARTITION.pack(p.index, p.error_code, p.base_offset, p.log_append_time_ms))
            if version >= 5:
                out.extend(_I64.pack(p.log_start_offset))
            if version >= 8:
                length(len(p.record_errors))
                for record_error in p.record_errors:
                    out.extend(_I32.pack(record_error.batch_index))
                    string(record_error.message)
                    if flexible:
                        out.append(0)
                string(p.error_message)
            if version >= LEADER_HINT_VERSION and p.current_leader is not None:
                out.extend(tagged_fields([current_leader_field(0, *p.current_leader)]))
            elif flexible:
                out.append(0)
        if flexible:
            out.append(0)
    out.extend(_I32.pack(throttle_time_ms))
    if version >= LEADER_HINT_VERSION and node_endpoints:
        out.extend(tagged_fields([node_endpoints_field(0, node_endpoints)]))
    elif flexible:
        out.append(0)
    return EncodedBody([bytes(out)], len(out))
