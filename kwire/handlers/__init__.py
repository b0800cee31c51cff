"""Request handlers, one module per Kafka API (franz-go kfake style).

`dispatch` turns one request frame into one response frame: header, version
check, kio decode, the API's handler, kio encode. Each handler module registers
its function with `@api(key)`; the versions it serves are its row of the API table
(kwire/protocol/apis.py), and it is imported on its API's first request.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from kwire.log.segment import FileRegion
from kwire.protocol.apis import API_TABLE, handler
from kwire.protocol.bounds import check_request
from kwire.protocol.error_response import error_response
from kwire.protocol.fetch_response import EncodedBody
from kwire.protocol.headers import (
    CloseConnection,
    MalformedRequest,
    parse_request_header,
    peek_api,
    response_header,
)
from kwire.protocol.messages import decode_request, encode, is_flexible, response_class
from kwire.quotas.manager import QuotaType
from kwire.security.principal import ANONYMOUS, KafkaPrincipal

REQUEST_QUOTA = QuotaType.REQUEST

if TYPE_CHECKING:
    from kwire.broker import Broker
    from kwire.faults import Fault

log = logging.getLogger(__name__)

PRODUCE_KEY = 0
UNKNOWN_SERVER_ERROR = -1
API_VERSIONS_KEY = 18
# APIs no request quota applies to: the SASL exchange, ApiVersions, and the cluster's
# own requests (Kafka exempts cluster actions).
QUOTA_EXEMPT = frozenset({7, 17, 18, 27, 36})
_SIZE = struct.Struct(">i")


@dataclass(slots=True)
class RequestContext:
    broker: Broker
    peer: str
    listener_name: str
    api_key: int = -1
    api_version: int = -1
    correlation_id: int = -1
    client_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Who sent it (SASL or TLS client certificate; User:ANONYMOUS otherwise), from
    # which address: what ACLs and quotas are checked against.
    principal: KafkaPrincipal = ANONYMOUS
    client_host: str = ""
    # The connection's session (SASL state, quota muting); None for internal calls.
    session: Any = None
    # Set by quota enforcement: the answer's throttle_time_ms, and how long the
    # connection is muted after the answer is sent (KIP-219).
    throttle_time_ms: int = 0
    # The answer's error code for kwire_requests_total: the top-level one, or where a
    # handler answers per partition (produce, fetch), the first partition's error.
    # None until known: a handler that sets it spares dispatch the look-up.
    error: int | None = None


class PendingAnswer:
    """An answer that must wait (acks=all until the ISR has the batches: Kafka's
    DelayedProduce). A handler served inline returns it; the connection goes on
    reading, and writes the answer when `complete()` returns, in request order."""

    __slots__ = ("complete",)

    def __init__(self, complete: Callable[[], Awaitable[Any]]) -> None:
        self.complete = complete


Answer = bytes | list[bytes | FileRegion] | None


def _answered(context: RequestContext, received: float) -> None:
    """Count an answered request in the broker's stats (kwire.metrics): its API, error
    and time since it was read (Kafka's TotalTimeMs, an acks=all wait included)."""
    stats = getattr(context.broker, "stats", None)  # None: tests of dispatch alone
    if stats is not None:
        stats.request_done(context.api_key, context.error or 0, time.perf_counter() - received)


async def dispatch(context: RequestContext, frame: bytearray) -> Answer | PendingAnswer:
    """Serve one request frame: the response frame, as bytes or as bytes and file
    regions to send in order; None when the request expects no answer (acks=0)."""
    received = time.perf_counter()
    api_key, api_version, correlation_id = peek_api(frame)
    api = API_TABLE.get(api_key)
    if api is None or not api.serves(api_version):
        if api_key == API_VERSIONS_KEY:
            # Kafka answers an ApiVersions it cannot parse in v0, with the ranges,
            # so the client can pick a version both sides know (KIP-511).
            from kwire.handlers.api_versions import unsupported_version_response

            return _frame(correlation_id, False, encode(unsupported_version_response()))
        raise MalformedRequest(
            f"unsupported API key {api_key} version {api_version}"
            if api
            else f"unknown API key {api_key}"
        )
    flexible = is_flexible(api_key, api_version)
    header = parse_request_header(frame, flexible)
    handle, decode = handler(api_key)
    try:
        if decode is not None:
            request = decode(frame, header.body_offset, api_version)
        else:
            # kio reads only read-only buffers; a view costs no copy.
            view = memoryview(frame).toreadonly()
            # kio's native reader trusts declared counts and lengths (a lie
            # aborts the process): the body is walked against them first.
            check_request(api_key, api_version, view, header.body_offset)
            request = decode_request(api_key, api_version, view, header.body_offset)
    except MalformedRequest:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        # Also a panic in kio's native reader (pyo3's PanicException is a
        # BaseException): this request is unreadable, the broker goes on.
        raise MalformedRequest(f"cannot parse API {api_key} v{api_version}: {e!r}") from None
    context.api_key = api_key
    context.api_version = api_version
    context.correlation_id = correlation_id
    context.client_id = header.client_id
    broker = context.broker
    if broker is not None and broker.faults is not None:
        fault = broker.faults.take(api_key)
        if fault is not None:
            injected = await _inject(fault, api_key, api_version, request)
            if injected is not None:
                context.error = int(fault.error)
                _answered(context, received)
                return _answer(injected, api_key, api_version, request, correlation_id, flexible)
    quotas = broker.quotas if broker is not None else None  # None: tests of dispatch alone
    # request_percentage quotas measure the time handlers run; those of APIs that wait
    # (long polls, rebalances) would count their waiting, so inline APIs only.
    timed = quotas is not None and api.inline and api_key not in QUOTA_EXEMPT and quotas.enabled(REQUEST_QUOTA)
    started = time.perf_counter() if timed else 0.0
    try:
        response = await handle(context, request)
        if context.error is None:
            context.error = getattr(response, "error_code", 0)
    except CloseConnection:
        raise
    except Exception as e:
        context.error = UNKNOWN_SERVER_ERROR
        _answered(context, received)
        return _frame(correlation_id, flexible and api_key != API_VERSIONS_KEY,
                      encode(_failed(api_key, api_version, request, e)))
    if timed:
        assert quotas is not None
        throttle = quotas.record_and_throttle(
            REQUEST_QUOTA, context.principal.name, context.client_id, time.perf_counter() - started, trio.current_time()
        )
        context.throttle_time_ms = max(context.throttle_time_ms, throttle)
    if context.throttle_time_ms and response is not None and not isinstance(response, EncodedBody | PendingAnswer):
        response = _with_throttle(response, context.throttle_time_ms)
    if isinstance(response, PendingAnswer):
        pending = response

        async def complete() -> Answer:
            try:
                response = await pending.complete()
            except CloseConnection:
                raise
            except Exception as e:
                response = _failed(api_key, api_version, request, e)
            answer = _answer(response, api_key, api_version, request, correlation_id, flexible)
            _answered(context, received)
            return answer

        return PendingAnswer(complete)
    answer = _answer(response, api_key, api_version, request, correlation_id, flexible)
    _answered(context, received)
    return answer


def _with_throttle(response: Any, throttle_ms: int) -> Any:
    """The answer with throttle_time_ms set (KIP-219: the client backs off that long too)."""
    if not hasattr(response, "throttle_time"):
        return response  # a version without the field
    return dataclasses.replace(response, throttle_time=datetime.timedelta(milliseconds=throttle_ms))


def _answer(response: Any, api_key: int, api_version: int, request: Any, correlation_id: int, flexible: bool) -> Answer:
    """The response frame of what a handler returned."""
    try:
        if response is None:
            return None
        if isinstance(response, EncodedBody):
            header = response_header(correlation_id, flexible)
            head = _SIZE.pack(len(header) + response.size) + header
            parts = response.parts
            if len(parts) == 1 and isinstance(parts[0], bytes):
                return head + parts[0]  # one send, not two
            return [head, *parts]
        body = encode(response)
    except CloseConnection:
        raise
    except Exception as e:
        # The handler, or the writing of what it returned, failed.
        body = encode(_failed(api_key, api_version, request, e))
    # ApiVersions responses keep header v0 in every version, so that a client
    # can read it before it knows which versions the broker speaks.
    return _frame(correlation_id, flexible and api_key != API_VERSIONS_KEY, body)


def _failed(api_key: int, api_version: int, request: Any, error: Exception) -> Any:
    """Kafka's answer to a request whose handler failed: the API's error
    response with UNKNOWN_SERVER_ERROR (AbstractRequest.getErrorResponse), and
    the connection stays open."""
    log.error("API %d v%d failed: %r", api_key, api_version, error)
    log.debug("API %d v%d failed", api_key, api_version, exc_info=error)
    if api_key == PRODUCE_KEY and getattr(request, "acks", None) == 0:
        # No answer is owed with acks=0: Kafka closes the connection instead,
        # the only way the producer learns of the failure.
        raise CloseConnection("produce with acks=0 failed; closing the connection as Kafka does")
    return error_response(response_class(api_key, api_version), request)


async def _inject(fault: Fault, api_key: int, api_version: int, request: Any) -> Any:
    """An injected fault (kwire.faults, /admin/faults): its delay, then the connection closed
    or the API's answer with the error; None: the request is served normally."""
    log.info("fault injected into API %d v%d: %s", api_key, api_version, fault)
    if fault.delay_ms:
        await trio.sleep(fault.delay_ms / 1000)
    if fault.drop_connection:
        raise CloseConnection("fault injected: connection dropped without an answer")
    if fault.error is None:
        return None
    if api_key == PRODUCE_KEY and getattr(request, "acks", None) == 0:
        # No answer is owed with acks=0: Kafka closes the connection on a failure.
        raise CloseConnection(f"fault injected: acks=0 produce failed with {fault.error.name}")
    from kwire.faults import error_answer

    return error_answer(api_key, api_version, request, fault.error)


def _frame(correlation_id: int, flexible: bool, body: bytes) -> bytes:
    header = response_header(correlation_id, flexible)
    return _SIZE.pack(len(header) + len(body)) + header + body

