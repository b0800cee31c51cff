"""The API table: which Kafka APIs and versions this broker serves, and by whom.

Each handler module registers itself with `@api(key, min_version, max_version)`.
ApiVersions advertises exactly this table, so nothing is claimed that is not served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[[Any, Any], Awaitable[Any]]
# Reads a request body from (frame, body offset, version); for hot paths only,
# every other API is read by kio.
Decoder = Callable[[bytearray, int, int], Any]


@dataclass(frozen=True, slots=True)
class Api:
    key: int
    min_version: int
    max_version: int
    handle: Handler
    decode: Decoder | None = None
    # The handler never waits: the connection serves it without a task of its own.
    inline: bool = False

    def serves(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version


API_TABLE: dict[int, Api] = {}


def api(
    key: int, min_version: int, max_version: int, *, decode: Decoder | None = None, inline: bool = False
) -> Callable[[Handler], Handler]:
    def register(handle: Handler) -> Handler:
        if key in API_TABLE:
            raise RuntimeError(f"API key {key} registered twice")
        API_TABLE[key] = Api(key, min_version, max_version, handle, decode, inline)
        return handle

    return register


def serves_inline(frame: bytes | bytearray) -> bool:
    """Whether this request's API never waits (read from its first two bytes)."""
    if len(frame) < 2:
        return True  # malformed: answered (by closing) at once
    api = API_TABLE.get(int.from_bytes(frame[:2], "big", signed=True))
    return api is None or api.inline
