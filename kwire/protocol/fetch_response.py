"""FetchResponse v4-v16, hand-written for the hot path.

kio would copy every record batch through Python bytes three times; this encoder
writes the small fields itself and leaves each partition's records as file
regions, which the connection sends with os.sendfile. Field order and versions
follow Kafka's FetchResponse.json; tagged fields at their defaults are omitted.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from kwire.log.segment import FileRegion
from kwire.protocol.headers import encode_uvarint
from kwire.protocol.leader_hints import (
    NodeEndpoint,
    current_leader_field,
    node_endpoints_field,
    tagged_fields,
)

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_PARTITION_HEAD = struct.Struct(">ihq")
_I64 = struct.Struct(">q")
_ABORTED = struct.Struct(">qq")

FLEXIBLE_VERSION = 12
TOPIC_ID_VERSION = 13
NODE_ENDPOINTS_VERSION = 16
# Regions smaller than this are read into the response instead: one pread is
# cheaper than one more sendfile call for a few small batches.
SENDFILE_MIN_BYTES = 16 * 1024


@dataclass(slots=True)
class FetchedPartition:
    partition_index: int
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    records: Sequence[FileRegion] = ()
    aborted_transactions: Sequence[tuple[int, int]] | None = ()
    preferred_read_replica: int = -1
    # KIP-951: (leader id, leader epoch) with NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH.
    current_leader: tuple[int, int] | None = None

    @property
    def records_size(self) -> int:
        return sum(region.size for region in self.records)


@dataclass(slots=True)
class EncodedBody:
    """A response body as bytes and file regions, in order."""

    parts: list[bytes | FileRegion] = field(default_factory=list)
    size: int = 0


class _Writer:
    __slots__ = ("buffer", "body")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.body = EncodedBody()

    def region(self, region: FileRegion) -> None:
        if region.size < SENDFILE_MIN_BYTES:
            self.buffer += region.tobytes()
            return
        if self.buffer:
            self.body.parts.append(bytes(self.buffer))
            self.body.size += len(self.buffer)
            self.buffer = bytearray()
        self.body.parts.append(region)
        self.body.size += region.size

    def finish(self) -> EncodedBody:
        if self.buffer:
            self.body.parts.append(bytes(self.buffer))
            self.body.size += len(self.buffer)
        return self.body


def encode_fetch_response(
    version: int,
    throttle_time_ms: int,
    error_code: int,
    session_id: int,
    topics: Sequence[tuple[str | uuid.UUID, Sequence[FetchedPartition]]],
    node_endpoints: Sequence[NodeEndpoint] = (),
) -> EncodedBody:
    """The body (after the response header) of a FetchResponse in `version`."""
    flexible = version >= FLEXIBLE_VERSION
    w = _Writer()

    def array_length(n: int) -> None:
        w.buffer += encode_uvarint(n + 1) if flexible else _I32.pack(n)

    w.buffer += _I32.pack(throttle_time_ms)
    if version >= 7:
        w.buffer += _I16.pack(error_code) + _I32.pack(session_id)
    array_length(len(topics))
    for topic, partitions in topics:
        if version >= TOPIC_ID_VERSION:
            # kio reads the zero topic id (an unknown topic) as None; it goes back as zeros.
            assert topic is None or isinstance(topic, uuid.UUID)
            w.buffer += topic.bytes if topic is not None else bytes(16)
        else:
            name = str(topic).encode()
            w.buffer += encode_uvarint(len(name) + 1) + name if flexible else _I16.pack(len(name)) + name
        array_length(len(partitions))
        for p in partitions:
            w.buffer += _PARTITION_HEAD.pack(p.partition_index, p.error_code, p.high_watermark)
            w.buffer += _I64.pack(p.last_stable_offset)
            if version >= 5:
                w.buffer += _I64.pack(p.log_start_offset)
            aborted = p.aborted_transactions
            if aborted is None:
                w.buffer += b"\x00" if flexible else _I32.pack(-1)
            else:
                array_length(len(aborted))
                for producer_id, first_offset in aborted:
                    w.buffer += _ABORTED.pack(producer_id, first_offset)
                    if flexible:
                        w.buffer += b"\x00"
            if version >= 11:
                w.buffer += _I32.pack(p.preferred_read_replica)
            size = p.records_size
            w.buffer += encode_uvarint(size + 1) if flexible else _I32.pack(size)
            for region in p.records:
                w.region(region)
            if flexible:
                # Partition tagged fields: only CurrentLeader (tag 1) is ever set here.
                if p.current_leader is not None:
                    w.buffer += tagged_fields([current_leader_field(1, *p.current_leader)])
                else:
                    w.buffer += b"\x00"
        if flexible:
            w.buffer += b"\x00"  # topic tagged fields
    if version >= NODE_ENDPOINTS_VERSION and node_endpoints:
        w.buffer += tagged_fields([node_endpoints_field(0, node_endpoints)])
    elif flexible:
        w.buffer += b"\x00"  # response tagged fields
    return w.finish()
