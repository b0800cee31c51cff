"""ProduceRequest v3-v11, hand-read for the hot path.

kio hands record batches over as new bytes objects; this reader leaves each
partition's records as a writable memoryview into the received frame, so the
broker can stamp offsets in place and write the batches to the log without a
copy. Field order follows Kafka's ProduceRequest.json (flexible from v9).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kwire.protocol.headers import MalformedRequest, read_uvarint, skip_tagged_fields

FLEXIBLE_VERSION = 9
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_ACKS_TIMEOUT = struct.Struct(">hi")


@dataclass(slots=True)
class PartitionProduceData:
    index: int
    records: memoryview | None


@dataclass(slots=True)
class TopicProduceData:
    name: str
    partition_data: list[PartitionProduceData]


@dataclass(slots=True)
class ProduceRequest:
    transactional_id: str | None
    acks: int
    timeout_ms: int
    topic_data: list[TopicProduceData]


class _Reader:
    __slots__ = ("view", "pos", "flexible")

    def __init__(self, view: memoryview, pos: int, flexible: bool) -> None:
        self.view = view
        self.pos = pos
        self.flexible = flexible

    def need(self, n: int) -> int:
        start = self.pos
        end = start + n
        if n < 0 or end > len(self.view):
            raise MalformedRequest("produce request runs past its frame")
        self.pos = end
        return start

    def int32(self) -> int:
        return _I32.unpack_from(self.view, self.need(4))[0]

    def compact_length(self) -> int:
        """A flexible version's array, string or bytes length; -1 for null."""
        value, self.pos = read_uvarint(self.view, self.pos)
        return value - 1

    def array_length(self, element_size: int) -> int:
        """A non-nullable array's count, trusted no further than the bytes left
        allow (each element takes `element_size` bytes at least), as Kafka."""
        n = self.compact_length() if self.flexible else self.int32()
        if n < 0:
            raise MalformedRequest(f"produce request array length {n}")
        if n * element_size > len(self.view) - self.pos:
            raise MalformedRequest(f"produce request array of {n} in {len(self.view) - self.pos} bytes")
        return n

    def string(self) -> str | None:
        if self.flexible:
            n = self.compact_length()
        else:
            n = _I16.unpack_from(self.view, self.need(2))[0]
        if n < 0:
            if n < -1:
                raise MalformedRequest(f"produce request string length {n}")
            return None
        start = self.need(n)
        return bytes(self.view[start : start + n]).decode("utf-8")

    def records(self) -> memoryview | None:
        n = self.compact_length() if self.flexible else self.int32()
        if n < 0:
            if n < -1:
                raise MalformedRequest(f"produce request records length {n}")
            return None
        start = self.need(n)
        return self.view[start : start + n]

    def tagged_fields(self) -> None:
        if self.flexible:
            self.pos = skip_tagged_fields(self.view, self.pos)


def read_produce_request(frame: bytearray, offset: int, version: int) -> ProduceRequest:
    """Read the body at `offset` of a received frame (a bytearray the caller owns)."""
    flexible = version >= FLEXIBLE_VERSION
    r = _Reader(memoryview(frame), offset, flexible)
    # The fewest bytes a topic (name, partition array) and a partition (index,
    # records) take, tagged-field counts included.
    topic_size, partition_size = (3, 6) if flexible else (6, 8)
    try:
        transactional_id = r.string()
        acks, timeout_ms = _ACKS_TIMEOUT.unpack_from(r.view, r.need(6))
        topics = []
        for _ in range(r.array_length(topic_size)):
            name = r.string()
            if name is None:
                raise MalformedRequest("null topic name")
            partitions = []
            for _ in range(r.array_length(partition_size)):
                index = r.int32()
                partitions.append(PartitionProduceData(index, r.records()))
                r.tagged_fields()
            topics.append(TopicProduceData(name, partitions))
            r.tagged_fields()
        r.tagged_fields()
    except (struct.error, UnicodeDecodeError) as e:
        raise MalformedRequest(f"cannot parse produce request: {e}") from None
    return ProduceRequest(transactional_id, acks, timeout_ms, topics)
