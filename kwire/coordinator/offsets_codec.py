"""The records of `__consumer_offsets`, byte for byte as Kafka writes them.

Keys (int16 version first):
- versions 0 and 1: OffsetCommitKey (group string, topic string, partition int32);
- version 2: GroupMetadataKey (group string).

Values (int16 version first, null = tombstone):
- OffsetCommitValue v0-v4: offset int64, leaderEpoch int32 (v3+), metadata string,
  commitTimestamp int64, expireTimestamp int64 (v1 only); v4 is flexible.
- GroupMetadataValue v0-v4: protocolType string, generation int32, protocol and leader
  nullable strings, currentStateTimestamp int64 (v2+), members [MemberMetadata]:
  memberId, groupInstanceId (v3+, nullable), clientId, clientHost, rebalanceTimeout
  int32 (v1+), sessionTimeout int32, subscription bytes, assignment bytes; v4 is flexible.

Kafka 3.x writes key version 1, OffsetCommitValue v3 (v1 when the commit carries an
expire timestamp) and GroupMetadataValue v3; all versions are read back.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

OFFSET_COMMIT_KEY_VERSION = 1
GROUP_METADATA_KEY_VERSION = 2
OFFSET_COMMIT_VALUE_VERSION = 3
OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRE = 1
GROUP_METADATA_VALUE_VERSION = 3

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


class CodecError(ValueError):
    """A `__consumer_offsets` record this codec cannot read."""


@dataclass(frozen=True, slots=True)
class OffsetCommitKey:
    group: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupMetadataKey:
    group: str


@dataclass(frozen=True, slots=True)
class OffsetCommitValue:
    offset: int
    metadata: str
    commit_timestamp: int
    leader_epoch: int = -1
    expire_timestamp: int | None = None


@dataclass(frozen=True, slots=True)
class MemberMetadataValue:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout: int
    session_timeout: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupMetadataValue:
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp: int = -1
    members: list[MemberMetadataValue] = field(default_factory=list)


# ---- writing -------------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def i16(self, v: int) -> _Writer:
        self.out += _I16.pack(v)
        return self

    def i32(self, v: int) -> _Writer:
        self.out += _I32.pack(v)
        return self

    def i64(self, v: int) -> _Writer:
        self.out += _I64.pack(v)
        return self

    def string(self, v: str | None) -> _Writer:
        if v is None:
            return self.i16(-1)
        data = v.encode()
        if len(data) > 0x7FFF:
            raise CodecError(f"string of {len(data)} bytes is too long")
        self.i16(len(data))
        self.out += data
        return self

    def bytes_(self, v: bytes | None) -> _Writer:
        if v is None:
            return self.i32(-1)
        self.i32(len(v))
        self.out += v
        return self


def encode_offset_commit_key(group: str, topic: str, partition: int) -> bytes:
    return bytes(_Writer().i16(OFFSET_COMMIT_KEY_VERSION).string(group).string(topic).i32(partition).out)


def encode_group_metadata_key(group: str) -> bytes:
    return bytes(_Writer().i16(GROUP_METADATA_KEY_VERSION).string(group).out)


def encode_offset_commit_value(value: OffsetCommitValue) -> bytes:
    w = _Writer()
    if value.expire_timestamp is not None:
        w.i16(OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRE).i64(value.offset).string(value.metadata)
        w.i64(value.commit_timestamp).i64(value.expire_timestamp)
    else:
        w.i16(OFFSET_COMMIT_VALUE_VERSION).i64(value.offset).i32(value.leader_epoch)
        w.string(value.metadata).i64(value.commit_timestamp)
    return bytes(w.out)


def encode_group_metadata_value(value: GroupMetadataValue) -> bytes:
    w = _Writer().i16(GROUP_METADATA_VALUE_VERSION)
    w.string(value.protocol_type).i32(value.generation).string(value.protocol).string(value.leader)
    w.i64(value.current_state_timestamp)
    w.i32(len(value.members))
    for m in value.members:
        w.string(m.member_id).string(m.group_instance_id).string(m.client_id).string(m.client_host)
        w.i32(m.rebalance_timeout).i32(m.session_timeout).bytes_(m.subscription).bytes_(m.assignment)
    return bytes(w.out)


# ---- reading -------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, flexible: bool = False) -> None:
        self.data = data
        self.pos = 0
        self.flexible = flexible

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CodecError("record runs past its end")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def i16(self) -> int:
        return _I16.unpack(self._take(2))[0]

    def i32(self) -> int:
        return _I32.unpack(self._take(4))[0]

    def i64(self) -> int:
        return _I64.unpack(self._take(8))[0]

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            byte = self._take(1)[0]
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
            if shift > 35:
                raise CodecError("unsigned varint too long")

    def _length(self, wide: bool) -> int:
        if self.flexible:
            return self.uvarint() - 1
        return self.i32() if wide else self.i16()

    def nullable_string(self) -> str | None:
        n = self._length(False)
        if n < 0:
            return None
        try:
            return self._take(n).decode()
        except UnicodeDecodeError as e:
            raise CodecError(f"string is not UTF-8: {e}") from None

    def string(self) -> str:
        s = self.nullable_string()
        if s is None:
            raise CodecError("null where a string is required")
        return s

    def bytes_(self) -> bytes:
        n = self._length(True)
        return b"" if n < 0 else self._take(n)

    def array_length(self) -> int:
        n = self._length(True)
        return max(n, 0)

    def tagged_fields(self) -> None:
        if self.flexible:
            for _ in range(self.uvarint()):
                self.uvarint()  # tag
                self._take(self.uvarint())


def decode_key(data: bytes) -> OffsetCommitKey | GroupMetadataKey | None:
    """The key of a record; None for key versions this coordinator does not own
    (Kafka's new consumer protocol records, versions 3 and up)."""
    r = _Reader(data)
    version = r.i16()
    if version in (0, 1):
        return OffsetCommitKey(r.string(), r.string(), r.i32())
    if version == 2:
        return GroupMetadataKey(r.string())
    if version < 0:
        raise CodecError(f"key version {version}")
    return None


def decode_offset_commit_value(data: bytes) -> OffsetCommitValue:
    version = _Reader(data).i16()
    if not 0 <= version <= 4:
        raise CodecError(f"unknown offset commit value version {version}")
    r = _Reader(data, flexible=version >= 4)
    r.pos = 2
    offset = r.i64()
    leader_epoch = r.i32() if version >= 3 else -1
    metadata = r.string()
    commit_timestamp = r.i64()
    expire_timestamp = r.i64() if version == 1 else None
    r.tagged_fields()
    if expire_timestamp == -1:
        expire_timestamp = None
    return OffsetCommitValue(offset, metadata, commit_timestamp, leader_epoch, expire_timestamp)


def decode_group_metadata_value(data: bytes) -> GroupMetadataValue:
    version = _Reader(data).i16()
    if not 0 <= version <= 4:
        raise CodecError(f"unknown group metadata value version {version}")
    r = _Reader(data, flexible=version >= 4)
    r.pos = 2
    protocol_type = r.string()
    generation = r.i32()
    protocol = r.nullable_string()
    leader = r.nullable_string()
    current_state_timestamp = r.i64() if version >= 2 else -1
    members = []
    for _ in range(r.array_length()):
        member_id = r.string()
        instance_id = r.nullable_string() if version >= 3 else None
        client_id = r.string()
        client_host = r.string()
        session_timeout = rebalance_timeout = 0
        if version >= 1:
            rebalance_timeout = r.i32()
        session_timeout = r.i32()
        if version == 0:
            rebalance_timeout = session_timeout
        subscription = r.bytes_()
        assignment = r.bytes_()
        r.tagged_fields()
        members.append(
            MemberMetadataValue(
                member_id, instance_id, client_id, client_host, rebalance_timeout, session_timeout, subscription, assignment
            )
        )
    r.tagged_fields()
    return GroupMetadataValue(protocol_type, generation, protocol, leader, current_state_timestamp, members)


# ---- the consumer protocol's subscription (to know a group's topics) -------------


def subscription_topics(metadata: bytes) -> set[str]:
    """Topics of a ConsumerProtocolSubscription (any version: v0 is the prefix of all).

    Raises CodecError when the bytes are not a consumer subscription."""
    r = _Reader(metadata)
    if r.i16() < 0:
        raise CodecError("negative subscription version")
    count = r.i32()
    if count < 0:
        raise CodecError("null topic list")
    return {r.string() for _ in range(count)}
