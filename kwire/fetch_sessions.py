"""Incremental fetch sessions (KIP-227), sans-IO.

A session remembers the partitions a client fetches and what the broker last
told it about each, so that later fetches send and answer only what changed.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, field

from kio.schema.errors import ErrorCode

INITIAL_EPOCH = 0
FINAL_EPOCH = -1
INVALID_SESSION_ID = 0

# (topic name or topic id, partition index)
PartitionKey = tuple[str | uuid.UUID, int]


@dataclass(slots=True)
class SessionPartition:
    topic: str | None
    topic_id: uuid.UUID | None
    partition: int
    fetch_offset: int
    max_bytes: int
    current_leader_epoch: int = -1
    # What the client was last told; an incremental answer includes the
    # partition again only if one of these moved or records are ready.
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1


@dataclass
class FetchSession:
    session_id: int
    epoch: int
    partitions: dict[PartitionKey, SessionPartition] = field(default_factory=dict)
    last_used: float = field(default_factory=time.monotonic)


class FetchSessionError(Exception):
    def __init__(self, error_code: ErrorCode) -> None:
        super().__init__(error_code.name)
        self.error_code = error_code


class FetchSessionCache:
    """The broker's sessions, bounded by max.incremental.fetch.session.cache.slots.

    When full, the least recently used session is evicted, as Kafka evicts the
    least valuable; its client gets FETCH_SESSION_ID_NOT_FOUND and starts over.
    """

    def __init__(self, max_slots: int) -> None:
        self.max_slots = max_slots
        self.sessions: dict[int, FetchSession] = {}
        self._ids = itertools.count(1)

    def create(self) -> FetchSession | None:
        if self.max_slots <= 0:
            return None
        if len(self.sessions) >= self.max_slots:
            oldest = min(self.sessions.values(), key=lambda s: s.last_used)
            del self.sessions[oldest.session_id]
        session_id = next(self._ids) & 0x7FFFFFFF or next(self._ids)
        session = FetchSession(session_id, epoch=1)
        self.sessions[session_id] = session
        return session

    def lookup(self, session_id: int, epoch: int) -> FetchSession:
        session = self.sessions.get(session_id)
        if session is None:
            raise FetchSessionError(ErrorCode.fetch_session_id_not_found)
        if session.epoch != epoch:
            raise FetchSessionError(ErrorCode.invalid_fetch_session_epoch)
        session.last_used = time.monotonic()
        return session

    def remove(self, session_id: int) -> None:
        self.sessions.pop(session_id, None)
