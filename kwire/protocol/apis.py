"""The API table: which Kafka APIs and versions this broker serves, and by whom.

One row per API: its versions, the handler module in `kwire.handlers` that serves
it, and whether it is served inline (never waits). The module registers its
function with `@api(key)`. Handler modules are imported on an API's first request,
not at start-up: a broker answers its first Metadata without importing the group
and transaction coordinators. ApiVersions advertises exactly this table, so nothing
is claimed that is not served (tests/test_protocol.py checks every row registers).
"""

from __future__ import annotations

import importlib
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
    # The module of kwire.handlers that serves it.
    module: str
    # The handler never waits: the connection serves it without a task of its own.
    inline: bool = False

    def serves(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version


API_TABLE: dict[int, Api] = {
    a.key: a
    for a in (
        Api(0, 3, 11, "produce", inline=True),
        Api(1, 4, 16, "fetch"),
        Api(2, 1, 8, "list_offsets", inline=True),
        Api(3, 0, 12, "metadata", inline=True),
        Api(7, 1, 3, "controlled_shutdown"),
        Api(8, 2, 9, "offset_commit"),
        Api(9, 1, 9, "offset_fetch"),
        Api(10, 0, 6, "find_coordinator"),
        Api(11, 0, 9, "join_group"),
        Api(12, 0, 4, "heartbeat"),
        Api(13, 0, 5, "leave_group"),
        Api(14, 0, 5, "sync_group"),
        Api(15, 0, 5, "describe_groups"),
        Api(16, 0, 5, "list_groups"),
        Api(17, 0, 1, "sasl_handshake", inline=True),
        Api(18, 0, 4, "api_versions", inline=True),
        Api(19, 2, 7, "create_topics"),
        Api(20, 1, 6, "delete_topics"),
        Api(21, 0, 2, "delete_records"),
        Api(22, 0, 5, "init_producer_id"),
        Api(23, 2, 4, "offset_for_leader_epoch"),
        Api(24, 0, 3, "add_partitions_to_txn"),
        Api(25, 0, 4, "add_offsets_to_txn"),
        Api(26, 0, 4, "end_txn"),
        Api(27, 1, 1, "write_txn_markers"),
        Api(28, 0, 4, "txn_offset_commit"),
        Api(29, 1, 3, "describe_acls"),
        Api(30, 1, 3, "create_acls"),
        Api(31, 1, 3, "delete_acls"),
        Api(32, 1, 4, "describe_configs"),
        Api(33, 0, 2, "alter_configs"),
        Api(35, 1, 4, "describe_log_dirs"),
        Api(36, 0, 2, "sasl_authenticate", inline=True),
        Api(37, 0, 3, "create_partitions"),
        Api(42, 0, 2, "delete_groups"),
        Api(43, 0, 2, "elect_leaders"),
        Api(44, 0, 1, "incremental_alter_configs"),
        Api(45, 0, 0, "alter_partition_reassignments"),
        Api(46, 0, 0, "list_partition_reassignments"),
        Api(47, 0, 0, "offset_delete"),
        Api(48, 0, 1, "describe_client_quotas"),
        Api(49, 0, 1, "alter_client_quotas"),
        Api(50, 0, 0, "describe_user_scram_credentials"),
        Api(51, 0, 0, "alter_user_scram_credentials"),
        Api(60, 0, 1, "describe_cluster"),
        Api(65, 0, 0, "describe_transactions"),
        Api(66, 0, 1, "describe_transactions"),
    )
}

# key -> (handler, decoder), filled as handler modules are imported.
_HANDLERS: dict[int, tuple[Handler, Decoder | None]] = {}


def api(key: int, *, decode: Decoder | None = None) -> Callable[[Handler], Handler]:
    """Register the function serving API `key` (its row in API_TABLE says the versions)."""

    def register(handle: Handler) -> Handler:
        if key not in API_TABLE:
            raise RuntimeError(f"API key {key} is not in the API table")
        if key in _HANDLERS:
            raise RuntimeError(f"API key {key} registered twice")
        _HANDLERS[key] = (handle, decode)
        return handle

    return register


def handler(key: int) -> tuple[Handler, Decoder | None]:
    """The handler and decoder of a served API, importing its module on first use."""
    found = _HANDLERS.get(key)
    if found is None:
        importlib.import_module(f"kwire.handlers.{API_TABLE[key].module}")
        found = _HANDLERS[key]
    return found


def load_all_handlers() -> None:
    """Import every handler module (warm-up after start-up, and tests)."""
    for key in API_TABLE:
        handler(key)


def serves_inline(frame: bytes | bytearray) -> bool:
    """Whether this request's API never waits (read from its first two bytes)."""
    if len(frame) < 2:
        return True  # malformed: answered (by closing) at once
    api = API_TABLE.get(int.from_bytes(frame[:2], "big", signed=True))
    return api is None or api.inline
