"""Fault injection: the next N requests of an API fail with a chosen Kafka error code, are
delayed, or lose their connection, so that clients' retry logic can be tested in any language.

Sans-IO: rules and their counts, nothing else. The admin HTTP endpoint (kwire.http.admin)
adds, lists and clears rules; request dispatch (kwire.handlers.dispatch) takes one fault per
request of the API and applies it. A broker has an injector only with http.admin.enable
(Broker.faults is None otherwise).

Rules of one API are used oldest first: a rule's count runs out before the next one's starts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import cache
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.protocol.apis import API_TABLE

FETCH_KEY = 1
# Errors of the fetch session itself (KIP-227): the top-level error code.
_FETCH_SESSION_ERRORS = frozenset(
    {
        ErrorCode.fetch_session_id_not_found,
        ErrorCode.invalid_fetch_session_epoch,
        ErrorCode.fetch_session_topic_id_error,
    }
)
# A delay longer than this is a typo rather than a test (clients time out long before).
MAX_DELAY_MS = 3_600_000
# The fields of a rule's JSON form (POST /admin/faults).
SPEC_FIELDS = ("api", "count", "error", "delay_ms", "drop_connection")


class FaultSpecError(ValueError):
    """A rule that cannot be injected; the message says why (answered as HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """What happens to one request: wait `delay_ms` first, then answer `error` in the API's
    normal response, or close the connection without an answer (drop_connection). With
    neither, the request is served normally after the delay."""

    error: ErrorCode | None = None
    delay_ms: int = 0
    drop_connection: bool = False


@dataclass(slots=True)
class FaultRule:
    id: int
    api_key: int
    count: int
    remaining: int
    fault: Fault

    def to_json(self) -> dict[str, Any]:
        error = self.fault.error
        return {
            "id": self.id,
            "api": api_name(self.api_key),
            "api_key": self.api_key,
            "count": self.count,
            "remaining": self.remaining,
            "error": None if error is None else error.name.upper(),
            "error_code": None if error is None else error.value,
            "delay_ms": self.fault.delay_ms,
            "drop_connection": self.fault.drop_connection,
        }


class FaultInjector:
    """Active rules per API key. Used from the broker's trio thread only."""

    def __init__(self) -> None:
        self._rules: dict[int, deque[FaultRule]] = {}
        self._next_id = 1

    def add(self, api_key: int, count: int, fault: Fault) -> FaultRule:
        if api_key not in API_TABLE:
            raise FaultSpecError(f"API key {api_key} is not served by this broker")
        if count < 1:
            raise FaultSpecError(f"count must be at least 1, got {count}")
        rule = FaultRule(self._next_id, api_key, count, count, fault)
        self._next_id += 1
        self._rules.setdefault(api_key, deque()).append(rule)
        return rule

    def take(self, api_key: int) -> Fault | None:
        """The fault for this request of `api_key`, using up one count; None: serve it normally."""
        if not self._rules:
            return None
        rules = self._rules.get(api_key)
        if not rules:
            return None
        rule = rules[0]
        rule.remaining -= 1
        if rule.remaining <= 0:
            rules.popleft()
            if not rules:
                del self._rules[api_key]
        return rule.fault

    def rules(self) -> list[FaultRule]:
        """Active rules, oldest first."""
        return sorted((r for rules in self._rules.values() for r in rules), key=lambda r: r.id)

    def remove(self, rule_id: int) -> FaultRule | None:
        for api_key, rules in self._rules.items():
            for rule in rules:
                if rule.id == rule_id:
                    rules.remove(rule)
                    if not rules:
                        del self._rules[api_key]
                    return rule
        return None

    def clear(self) -> int:
        """Remove every rule; how many there were."""
        removed = sum(len(rules) for rules in self._rules.values())
        self._rules.clear()
        return removed


@cache
def _api_names() -> dict[int, str]:
    """Kafka's API names (Produce, ListOffsets, ...) of the APIs served here, from kio's
    request classes; ControlledShutdown is written by hand in kwire.protocol."""
    from kwire.protocol.messages import HAND_WRITTEN, request_class

    names = {7: "ControlledShutdown"}
    for key, api in API_TABLE.items():
        if key not in HAND_WRITTEN:
            names[key] = request_class(key, api.max_version).__name__.removesuffix("Request")
    return names


def _folded(name: str) -> str:
    # "ListOffsets", "list_offsets" and Kafka's enum form "LIST_OFFSETS" are one name.
    return name.replace("_", "").replace("-", "").lower()


def api_name(api_key: int) -> str:
    return _api_names().get(api_key, str(api_key))


def api_key_of(value: Any) -> int:
    """The API key a rule names: Kafka's API name (any case) or the key as a number."""
    names = _api_names()
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in names:
            raise FaultSpecError(f"API key {value} is not served by this broker")
        return value
    if isinstance(value, str):
        wanted = _folded(value)
        for key, name in names.items():
            if _folded(name) == wanted:
                return key
        raise FaultSpecError(f"unknown API {value!r}; one of: {', '.join(sorted(names.values()))}")
    raise FaultSpecError(f"api must be an API name or key, got {value!r}")


def error_of(value: Any) -> ErrorCode:
    """The error a rule names: Kafka's error name (any case) or its code."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            error = ErrorCode(value)
        except ValueError:
            raise FaultSpecError(f"unknown error code {value}") from None
    elif isinstance(value, str):
        try:
            error = ErrorCode[value.strip().lower()]
        except KeyError:
            raise FaultSpecError(
                f"unknown error {value!r}; Kafka's error names, such as NOT_LEADER_OR_FOLLOWER"
            ) from None
    else:
        raise FaultSpecError(f"error must be a Kafka error name or code, got {value!r}")
    if error is ErrorCode.none:
        raise FaultSpecError("error NONE (0) injects nothing")
    return error


def parse_rule(spec: Any) -> tuple[int, int, Fault]:
    """(api key, count, fault) of a rule's JSON form:
    {"api": "Produce" | 0, "count": 3, "error": "NOT_LEADER_OR_FOLLOWER" | 6,
    "delay_ms": 500, "drop_connection": true}; count defaults to 1."""
    if not isinstance(spec, dict):
        raise FaultSpecError(
            "the body must be a JSON object such as "
            '{"api": "Produce", "count": 1, "error": "NOT_LEADER_OR_FOLLOWER"}'
        )
    unknown = sorted(set(spec) - set(SPEC_FIELDS))
    if unknown:
        raise FaultSpecError(f"unknown fields {unknown}; the fields are {list(SPEC_FIELDS)}")
    if "api" not in spec:
        raise FaultSpecError("api is missing (an API name such as Produce, or its key)")
    api_key = api_key_of(spec["api"])
    count = spec.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool):
        raise FaultSpecError(f"count must be an integer, got {count!r}")
    if count < 1:
        raise FaultSpecError(f"count must be at least 1, got {count}")
    error = None if spec.get("error") is None else error_of(spec["error"])
    delay_ms = spec.get("delay_ms", 0)
    if not isinstance(delay_ms, int) or isinstance(delay_ms, bool):
        raise FaultSpecError(f"delay_ms must be an integer, got {delay_ms!r}")
    if not 0 <= delay_ms <= MAX_DELAY_MS:
        raise FaultSpecError(f"delay_ms must be between 0 and {MAX_DELAY_MS}, got {delay_ms}")
    drop = spec.get("drop_connection", False)
    if not isinstance(drop, bool):
        raise FaultSpecError(f"drop_connection must be true or false, got {drop!r}")
    if error is not None and drop:
        raise FaultSpecError("a fault either answers an error or drops the connection, not both")
    if error is None and not drop and not delay_ms:
        raise FaultSpecError("no fault given: error, delay_ms or drop_connection")
    if error is not None and api_key not in _error_answering():
        raise FaultSpecError(f"{api_name(api_key)} takes delay_ms or drop_connection only")
    return api_key, count, Fault(error, delay_ms, drop)


def error_answer(api_key: int, api_version: int, request: Any, error: ErrorCode) -> Any:
    """The API's answer to `request` reporting `error` where a broker reports it: Kafka's
    error response (error_response: the top-level error code where the response has one,
    else each topic, partition, group the request named), except for Fetch, whose errors
    other than the fetch session's go in each partition the request named, as a broker's
    own partition errors do: clients retry a top-level Fetch error silently (librdkafka
    backs off), so an injected TOPIC_AUTHORIZATION_FAILED would never be seen."""
    from kwire.protocol.error_response import error_response
    from kwire.protocol.messages import response_class

    if api_key == FETCH_KEY and error not in _FETCH_SESSION_ERRORS:
        return _fetch_partition_errors(api_version, request, error)
    return error_response(response_class(api_key, api_version), request, error)


def _fetch_partition_errors(api_version: int, request: Any, error: ErrorCode) -> Any:
    from kwire.fetch_sessions import INVALID_SESSION_ID
    from kwire.protocol.fetch_response import (
        TOPIC_ID_VERSION,
        FetchedPartition,
        encode_fetch_response,
    )

    by_id = api_version >= TOPIC_ID_VERSION
    topics = [
        (
            topic.topic_id if by_id else topic.topic,
            [FetchedPartition(p.partition, error, -1, -1, -1) for p in topic.partitions],
        )
        for topic in request.topics
    ]
    # No session: the client's next Fetch is a full one (Kafka's answer when it drops one).
    return encode_fetch_response(api_version, 0, ErrorCode.none, INVALID_SESSION_ID, topics)


@cache
def _error_answering() -> frozenset[int]:
    # The APIs whose error answer is built from kio's classes (error_response).
    from kwire.protocol.messages import HAND_WRITTEN

    return frozenset(API_TABLE) - frozenset(HAND_WRITTEN)
