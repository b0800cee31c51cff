"""Fuzz frames for every served API version: kio-written requests, then mutated.

Valid bodies come from kio's hypothesis strategies for its request entities;
a mutation then truncates the body, lies about a length or count, flips bytes,
inserts bytes, swaps in a body of another version, or replaces it with random
bytes. Shared by tests/test_fuzz.py (through hypothesis) and run_long.py
(through a seeded random.Random, for speed).
"""

from __future__ import annotations

import random
import struct
import warnings
from typing import Any

from hypothesis import strategies as st
from kio.static.primitive import Records

from kwire.protocol.apis import API_TABLE
from kwire.protocol.messages import HAND_WRITTEN, encode, is_flexible, request_class

# kio leaves record batches as opaque bytes; short random bytes do.
st.register_type_strategy(Records, st.binary(max_size=64).map(Records))

SERVED: list[tuple[int, int]] = [
    (a.key, v) for a in sorted(API_TABLE.values(), key=lambda a: a.key) for v in range(a.min_version, a.max_version + 1)
    if a.key not in HAND_WRITTEN  # read by hand: their own tests fuzz them
]

# Values a lying length or count takes: the edges of each width.
_LIES_16 = [b"\xff\xff", b"\x7f\xff", b"\x80\x00", b"\xff\xfe"]
_LIES_32 = [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\xff\xff\xff\xfe", b"\x00\x01\x00\x00"]
_LIES_VARINT = [b"\xff\xff\xff\xff\x0f", b"\xfe\xff\xff\xff\x0f", b"\xff\xff\xff\xff\xff\xff\x01", b"\x80\x80\x80\x80\x80", b"\x00"]
MUTATIONS = ("none", "truncate", "lie", "flip", "insert", "random", "other_version")


def request_body(request: Any) -> bytes | None:
    """kio's bytes for a request entity; None where kio's own writer refuses the
    value its strategy drew (e.g. a timedelta beyond int32 milliseconds)."""
    try:
        return encode(request)
    except (ValueError, OverflowError, struct.error):
        return None


def strategy_for(api_key: int, version: int) -> st.SearchStrategy[Any]:
    return st.from_type(request_class(api_key, version))


def mutate(body: bytes, how: str, rng: random.Random, other: bytes = b"") -> bytes:
    """One mutation of a request body, chosen by `how` (one of MUTATIONS)."""
    b = bytearray(body)
    if how == "none":
        return body
    if how == "truncate":
        return body[: rng.randrange(len(body))] if body else body
    if how == "lie" and b:
        lie = rng.choice(_LIES_16 + _LIES_32 + _LIES_VARINT)
        at = rng.randrange(len(b))
        b[at : at + len(lie)] = lie
        return bytes(b)
    if how == "flip" and b:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if how == "insert":
        at = rng.randrange(len(b) + 1)
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        return bytes(b)
    if how == "other_version":
        return other
    return bytes(rng.randrange(256) for _ in range(rng.randrange(65)))


def request_frame_payload(api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    """Header v1/v2 as the version wants, then the body (no size prefix)."""
    from fuzz.wire import request_header

    return request_header(api_key, version, correlation_id, is_flexible(api_key, version)) + body


def example_pool(per_version: int, seed: int = 0) -> dict[tuple[int, int], list[bytes]]:
    """Valid request bodies for every served version, drawn from kio's strategies."""
    pool: dict[tuple[int, int], list[bytes]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # .example() warns that it is not for tests
        for api_key, version in SERVED:
            bodies = []
            strategy = strategy_for(api_key, version)
            for _ in range(per_version * 3):
                body = request_body(strategy.example())
                if body is not None:
                    bodies.append(body)
                if len(bodies) == per_version:
                    break
            pool[(api_key, version)] = bodies
    return pool


def tame(request: Any) -> Any:
    """The same request without the waits a valid one may ask for (a long-poll
    Fetch, a rebalance), and with acks=0 made acks=1: every frame then owes an
    answer within a short deadline, so a missing one is a hang."""
    import dataclasses
    import datetime

    changes: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(request)}
    for name in ("max_wait", "rebalance_timeout", "session_timeout"):
        if name in names:
            changes[name] = datetime.timedelta(milliseconds=10)
    if "acks" in names and request.acks == 0:
        changes["acks"] = 1
    return dataclasses.replace(request, **changes) if changes else request
