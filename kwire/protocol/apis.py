"""The API table: which Kafka APIs and versions this broker serves, and by whom.

Each handler module registers itself with `@api(key, min_version, max_version)`.
ApiVersions advertises exactly this table, so nothing is claimed that is not served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[[Any, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Api:
    key: int
    min_version: int
    max_version: int
    handle: Handler

    def serves(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version


API_TABLE: dict[int, Api] = {}


def api(key: int, min_version: int, max_version: int) -> Callable[[Handler], Handler]:
    def register(handle: Handler) -> Handler:
        if key in API_TABLE:
            raise RuntimeError(f"API key {key} registered twice")
        API_TABLE[key] = Api(key, min_version, max_version, handle)
        return handle

    return register
