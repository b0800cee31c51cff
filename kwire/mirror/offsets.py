"""Offsets of a mirror, without I/O: the records MM2 writes (offset syncs, checkpoints, the
source offsets of Kafka Connect's offset store) and the translation of a consumer group's
upstream offset into the target's.

Wire formats are MM2's own, so that Kafka's tools (RemoteClusterUtils) read them:
- offset sync (`mm2-offset-syncs.<target>.internal`, on the source): key topic STRING,
  partition INT32; value upstream INT64, downstream INT64.
- checkpoint (`<source>.checkpoints.internal`, on the target): key group STRING, topic STRING
  (the remote topic), partition INT32; value version INT16 (0), upstream INT64,
  downstream INT64, metadata STRING.
- source offset (`mm2-offsets.<source>.internal`, on the target): Connect's JSON,
  key `["MirrorSourceConnector",{"cluster":"a","partition":0,"topic":"t"}]`,
  value `{"offset":41}`, the offset of the last record copied.
STRING is an INT16 length and UTF-8 bytes, as in Kafka's protocol.
"""

from __future__ import annotations

import bisect
import json
import struct
from dataclasses import dataclass

CONNECTOR_NAME = "MirrorSourceConnector"
CHECKPOINT_VERSION = 0

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_TWO_INT64 = struct.Struct(">qq")


class MalformedRecord(ValueError):
    """A record of a mirror topic that does not decode (written by something else)."""


def _string(value: str) -> bytes:
    data = value.encode()
    return _INT16.pack(len(data)) + data


def _read_string(data: bytes, pos: int) -> tuple[str, int]:
    if pos + 2 > len(data):
        raise MalformedRecord("truncated string length")
    (length,) = _INT16.unpack_from(data, pos)
    pos += 2
    if length < 0 or pos + length > len(data):
        raise MalformedRecord("string length beyond the record")
    return data[pos : pos + length].decode(errors="replace"), pos + length


def _read_int32(data: bytes, pos: int) -> tuple[int, int]:
    if pos + 4 > len(data):
        raise MalformedRecord("truncated INT32")
    return _INT32.unpack_from(data, pos)[0], pos + 4


@dataclass(frozen=True)
class OffsetSync:
    topic: str
    partition: int
    upstream_offset: int
    downstream_offset: int

    def key(self) -> bytes:
        return _string(self.topic) + _INT32.pack(self.partition)

    def value(self) -> bytes:
        return _TWO_INT64.pack(self.upstream_offset, self.downstream_offset)

    @classmethod
    def decode(cls, key: bytes | None, value: bytes | None) -> OffsetSync:
        if key is None or value is None:
            raise MalformedRecord("an offset sync needs a key and a value")
        topic, pos = _read_string(key, 0)
        partition, _ = _read_int32(key, pos)
        if len(value) < 16:
            raise MalformedRecord("truncated offset sync value")
        upstream, downstream = _TWO_INT64.unpack_from(value, 0)
        return cls(topic, partition, upstream, downstream)


@dataclass(frozen=True)
class Checkpoint:
    group: str
    topic: str  # the remote topic (its name on the target)
    partition: int
    upstream_offset: int
    downstream_offset: int
    metadata: str = ""

    def key(self) -> bytes:
        return _string(self.group) + _string(self.topic) + _INT32.pack(self.partition)

    def value(self) -> bytes:
        return (
            _INT16.pack(CHECKPOINT_VERSION)
            + _TWO_INT64.pack(self.upstream_offset, self.downstream_offset)
            + _string(self.metadata)
        )

    @classmethod
    def decode(cls, key: bytes | None, value: bytes | None) -> Checkpoint:
        if key is None or value is None:
            raise MalformedRecord("a checkpoint needs a key and a value")
        group, pos = _read_string(key, 0)
        topic, pos = _read_string(key, pos)
        partition, _ = _read_int32(key, pos)
        if len(value) < 18:
            raise MalformedRecord("truncated checkpoint value")
        upstream, downstream = _TWO_INT64.unpack_from(value, 2)
        metadata, _ = _read_string(value, 18) if len(value) > 18 else ("", 0)
        return cls(group, topic, partition, upstream, downstream, metadata)


def source_offset_key(cluster: str, topic: str, partition: int) -> bytes:
    # Connect's JsonConverter writes compact JSON with the map's keys sorted.
    partition_map = {"cluster": cluster, "partition": partition, "topic": topic}
    return json.dumps([CONNECTOR_NAME, partition_map], separators=(",", ":")).encode()


def source_offset_value(offset: int) -> bytes:
    return json.dumps({"offset": offset}, separators=(",", ":")).encode()


def decode_source_offset(
    key: bytes | None, value: bytes | None
) -> tuple[tuple[str, str, int], int | None] | None:
    """((cluster, topic, partition), last copied offset or None for a tombstone), or None
    for a record that is not a MirrorSourceConnector offset."""
    if key is None:
        return None
    try:
        connector, partition_map = json.loads(key)
        if connector != CONNECTOR_NAME:
            return None
        source = (
            str(partition_map["cluster"]),
            str(partition_map["topic"]),
            int(partition_map["partition"]),
        )
        if value is None:
            return source, None
        return source, int(json.loads(value)["offset"])
    except (ValueError, TypeError, KeyError):
        return None


class PartitionSyncState:
    """When the copy of one partition must emit an offset sync.

    A sync (upstream u, downstream d) says that from u on, record u + k was copied to
    d + k, until the next sync. So one is written whenever that stops being true: the first
    record copied in this run of the mirror, a gap upstream (a transaction marker, a
    compacted record), a gap downstream (the target's own markers under exactly-once, a
    truncation). And one at least every `max_offset_lag` records (MM2's offset.lag.max), so
    that what a checkpoint knows of the mirror's progress stays recent; `flush()` writes
    the last record copied too, for the same reason when traffic stops."""

    __slots__ = ("max_offset_lag", "_previous", "_last_sync_downstream", "_unsynced")

    def __init__(self, max_offset_lag: int) -> None:
        self.max_offset_lag = max_offset_lag
        self._previous: tuple[int, int] | None = None
        self._last_sync_downstream = -1
        self._unsynced: tuple[int, int] | None = None

    def update(self, upstream_offset: int, downstream_offset: int) -> bool:
        """Record that upstream_offset was copied to downstream_offset; True: emit a sync."""
        previous = self._previous
        self._previous = (upstream_offset, downstream_offset)
        if (
            previous is None
            or upstream_offset - previous[0] != 1
            or downstream_offset - previous[1] != 1
            or downstream_offset - self._last_sync_downstream > self.max_offset_lag
        ):
            self._last_sync_downstream = downstream_offset
            self._unsynced = None
            return True
        self._unsynced = self._previous
        return False

    def flush(self) -> tuple[int, int] | None:
        """The last copied pair if no sync has covered it yet (then it counts as synced)."""
        pending = self._unsynced
        if pending is not None:
            self._unsynced = None
            self._last_sync_downstream = pending[1]
        return pending


class OffsetSyncStore:
    """The offset syncs read back for one flow, and the translation of a group's committed
    upstream offset to the target.

    Translation is exact where the syncs cover the offset: a group that committed C has
    consumed up to C - 1; the latest sync (u, d) with u <= C - 1 gives that record's copy
    at d + (C - 1 - u), so the group resumes at the next one, d + (C - u). Past the last
    sync (the mirror has not reported copying C - 1 yet), the answer is the offset after
    the last copy known, which at worst re-reads what the mirror copied since.

    A sync invalidates the ones at and above its upstream offset: a restarted mirror copies
    again from where it had stored its progress, and the new copies are the ones to read.
    At most `max_syncs` are kept per partition (the oldest go)."""

    def __init__(self, max_syncs: int = 4096) -> None:
        self.max_syncs = max_syncs
        self._upstream: dict[tuple[str, int], list[int]] = {}
        self._downstream: dict[tuple[str, int], list[int]] = {}

    def add(self, sync: OffsetSync) -> None:
        key = (sync.topic, sync.partition)
        upstream = self._upstream.setdefault(key, [])
        downstream = self._downstream.setdefault(key, [])
        cut = bisect.bisect_left(upstream, sync.upstream_offset)
        del upstream[cut:], downstream[cut:]
        upstream.append(sync.upstream_offset)
        downstream.append(sync.downstream_offset)
        if len(upstream) > self.max_syncs:
            del upstream[0], downstream[0]

    def __len__(self) -> int:
        return sum(len(offsets) for offsets in self._upstream.values())

    def translate(self, topic: str, partition: int, committed_offset: int) -> int | None:
        """The downstream offset for an upstream committed offset, or None when the
        committed offset is below the first sync known."""
        upstream = self._upstream.get((topic, partition))
        if not upstream or committed_offset < 0:
            return None
        downstream = self._downstream[(topic, partition)]
        consumed = committed_offset - 1
        index = bisect.bisect_right(upstream, consumed) - 1
        if index < 0:
            # Nothing consumed that the mirror copied: the group starts at the first copy
            # (as MM2). Below the first sync, records may have been copied before it.
            return downstream[0] if committed_offset == upstream[0] else None
        if index == len(upstream) - 1 and consumed > upstream[index]:
            # Beyond the last sync: the copy is known only up to it.
            return downstream[index] + 1
        translated = downstream[index] + (consumed - upstream[index]) + 1
        if index + 1 < len(upstream):
            # `consumed` may be no record (a transaction marker the consumer's position
            # went past, a compacted record): the next record may then be the next sync's,
            # copied before `translated`.
            translated = min(translated, downstream[index + 1])
        return translated
