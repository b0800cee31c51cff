"""The broker's own Kafka client, for inter-broker requests.

Replica fetchers send Fetch and OffsetForLeaderEpoch to leaders, transaction
coordinators send WriteTxnMarkers to partition leaders: Kafka's protocol between
brokers, as Kafka's NetworkClient speaks it.

`BrokerConnection` is one TCP connection with pipelined requests: each request is
encoded with kio behind a request header (v1, or v2 for flexible versions) and a
fresh correlation id; one reader task per connection matches each response to its
waiter by correlation id and decodes it (response header v0, or v1 for flexible
versions; ApiVersions answers always use v0). No task, channel or event per request:
a waiting request parks its own task and the reader reschedules it with the answer.
Requests sent while another is being written join its write, so a burst of
pipelined requests leaves in few sends.

Failure is all-or-nothing, as in Kafka's NetworkClient: a timeout, a broken or closed
socket, an unparsable response or one over `max_response_bytes` fails every pending
request of the connection with `BrokerConnectionError` and closes it; the caller
reconnects. Only a caller's own cancellation (not a timeout) leaves the connection
open: the answer to its request is read and dropped when it comes.

Security (`ClientSecurity`, kwire.security.client): on SSL and SASL_SSL the connection
runs through trio.SSLStream, its handshake within the connect timeout, and the reader
receives decrypted bytes from the stream (plaintext keeps `recv_into` on the socket).
On SASL_PLAINTEXT and SASL_SSL, `connect` sends ApiVersions, SaslHandshake v1 and
SaslAuthenticate (the highest version both sides have) until the mechanism completes,
as Kafka's SaslClientAuthenticator; a refusal is a BrokerConnectionError carrying the
broker's message. When the broker gives the session a lifetime
(connections.max.reauth.ms, KIP-368), the connection re-authenticates in place at 85-95 %
of it, as Kafka's clients do: replica fetchers keep their long polls and fetch
sessions instead of losing them to a reconnect. Requests go on meanwhile (the broker
serves a re-authenticating session's requests); a failed re-authentication fails the
connection.

`BrokerClientPool` keeps one connection per broker id, from a callable resolving a
broker id to its address (the metadata image), reconnecting with Kafka's
reconnect.backoff.ms / reconnect.backoff.max.ms (50 ms doubling to 1 s, 20 % jitter).
"""

from __future__ import annotations

import logging
import random
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import cache
from typing import Any, TypeVar

import outcome
import trio
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader

from kwire.errors import KafkaError
from kwire.protocol.bounds import checker_for
from kwire.protocol.framing import FrameBuffer, FrameError
from kwire.protocol.headers import MalformedRequest, skip_tagged_fields
from kwire.protocol.messages import encode, is_flexible, request_class, response_class
from kwire.security.client import ClientSecurity

log = logging.getLogger(__name__)

T = TypeVar("T")

API_VERSIONS_KEY = 18
PRODUCE_KEY = 0
SASL_HANDSHAKE_KEY = 17
SASL_AUTHENTICATE_KEY = 36
# SaslHandshake v1: the tokens travel in SaslAuthenticate requests (v0's raw tokens
# are for brokers older than Kafka 1.0). SaslAuthenticate v1+ gives the session lifetime.
SASL_HANDSHAKE_VERSION = 1
SASL_AUTHENTICATE_MAX_VERSION = 2
# KIP-368: clients re-authenticate at 85 % of the session lifetime plus up to 10 %
# jitter, so that connections opened together do not re-authenticate together.
REAUTH_AT = 0.85
REAUTH_JITTER = 0.10
# Decrypted bytes asked of the TLS stream at a time (a TLS record holds at most 16 KiB).
TLS_READ_SIZE = 64 * 1024
# The ApiVersions version sent first; a broker that does not know it answers in v0
# with UNSUPPORTED_VERSION and its own range, as Kafka's brokers do.
API_VERSIONS_VERSION = 3
# The largest response frame accepted (socket.request.max.bytes's default): the size
# prefix is checked against it before anything is allocated, and a frame's buffer
# grows only as its bytes arrive.
DEFAULT_MAX_RESPONSE_BYTES = 100 * 1024 * 1024
# Kafka's reconnect.backoff.ms, reconnect.backoff.max.ms and their jitter.
RECONNECT_BACKOFF_MS = 50
RECONNECT_BACKOFF_MAX_MS = 1000
RECONNECT_JITTER = 0.2
CLIENT_SOFTWARE_NAME = "kwire"

_REQUEST_HEAD = struct.Struct(">ihhi")  # size, api_key, api_version, correlation_id
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i").unpack_from
_NETWORK_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


class BrokerConnectionError(Exception):
    """The connection failed (timeout, broken socket, bad response) or is closed; every
    request pending on it failed with this. Reconnect to go on."""


class UnsupportedVersionError(KafkaError):
    """No version of an API is served by both sides (Kafka's UnsupportedVersionException)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.unsupported_version, message)


@cache
def _response_decoder(api_key: int, version: int) -> tuple[Any, Any]:
    """(bounds checker, kio reader) of a response: kio trusts declared counts, so the
    body is walked against its own length first (an array claiming 2^31 entries
    would otherwise be allocated)."""
    cls = response_class(api_key, version)
    return checker_for(cls), entity_reader(cls)


@cache
def _header_flags(api_key: int, version: int) -> tuple[bool, bool]:
    """(request header v2, response header v1): both follow the version's flexibility,
    except that ApiVersions responses keep header v0 so any client can read them."""
    flexible = is_flexible(api_key, version)
    return flexible, flexible and api_key != API_VERSIONS_KEY


@cache
def _software_version() -> str:
    try:
        from importlib.metadata import version

        return version("kwire")
    except Exception:  # not installed as a distribution (a source tree on sys.path)
        return "0"


class _Waiter:
    """One pending request: its answer, and the task parked waiting for it."""

    __slots__ = ("api_key", "version", "response_flexible", "decode", "result", "task", "abandoned")

    def __init__(
        self, api_key: int, version: int, response_flexible: bool, decode: Callable[[memoryview, int], Any] | None
    ) -> None:
        self.api_key = api_key
        self.version = version
        self.response_flexible = response_flexible
        # A hand-written decoder (request_raw); None: kio's, by api key and version.
        self.decode = decode
        self.result: outcome.Outcome[Any] | None = None
        self.task: trio.lowlevel.Task | None = None
        # The requester was cancelled: its answer is read and dropped.
        self.abandoned = False

    def deliver(self, result: outcome.Outcome[Any]) -> None:
        if self.abandoned or self.result is not None:
            return
        self.result = result
        task, self.task = self.task, None
        if task is not None:
            trio.lowlevel.reschedule(task, result)

    def abort(self, _raise_cancel: Any) -> trio.lowlevel.Abort:
        self.task = None
        self.abandoned = True
        return trio.lowlevel.Abort.SUCCEEDED


class BrokerConnection:
    """One connection to one broker, with pipelined requests (see the module doc)."""

    def __init__(
        self,
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
        address: tuple[str, int],
        *,
        client_id: str,
        timeout: float,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._stream = stream
        # The socket under the stream (TLS or not): closed synchronously by _fail.
        self._socket = stream.transport_stream.socket if isinstance(stream, trio.SSLStream) else stream.socket
        # Decrypted bytes received beyond what the frame buffer could take (TLS only).
        self._tls_pending = memoryview(b"")
        encoded = client_id.encode()
        self._client_id = _I16.pack(len(encoded)) + encoded
        self._correlation_id = 0
        self._waiters: dict[int, _Waiter] = {}
        # Frames queued behind the write in progress, and whether one is in progress.
        self._outbox: list[bytes] = []
        self._sending = False
        self._error: BrokerConnectionError | None = None
        self._reader_scope = trio.CancelScope()
        # When the connection failed or closed (trio.current_time()), for reconnect backoff.
        self.closed_at: float | None = None
        # The broker's versions per API key, after negotiate().
        self.api_versions: dict[int, tuple[int, int]] = {}
        # How the connection is secured; SASL: the re-authentication task's scope
        # (cancelled on close), the last session lifetime the broker gave (ms, 0: no
        # expiry) and how many re-authentications succeeded.
        self.security: ClientSecurity | None = None
        self._reauth_scope = trio.CancelScope()
        self.session_lifetime_ms = 0
        self.reauthentications = 0

    # ---- opening and closing -------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        client_id: str,
        timeout: float,
        nursery: trio.Nursery,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        security: ClientSecurity | None = None,
    ) -> BrokerConnection:
        """Connect, complete the TLS handshake and authenticate (as `security` says;
        None: PLAINTEXT) within `timeout`; the reader task, and the re-authentication
        task of a session with a lifetime, run in `nursery`. `timeout` is also the
        default bound of each request. On SASL the broker's versions are negotiated."""
        deadline = trio.current_time() + timeout
        socket_stream: trio.SocketStream | None = None
        try:
            with trio.move_on_at(deadline):
                socket_stream = await trio.open_tcp_stream(host, port)
        except OSError as e:
            raise BrokerConnectionError(f"cannot connect to {host}:{port}: {e}") from e
        if socket_stream is None:
            raise BrokerConnectionError(f"cannot connect to {host}:{port} within {timeout} s")
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = socket_stream
        if security is not None and security.tls:
            stream = await _tls_handshake(socket_stream, host, port, security, deadline, timeout)
        conn = cls(stream, (host, port), client_id=client_id, timeout=timeout, max_response_bytes=max_response_bytes)
        conn.security = security
        nursery.start_soon(conn._read)
        if security is not None and security.sasl:
            try:
                await conn.negotiate(timeout=max(deadline - trio.current_time(), 0.0))
                lifetime_ms = await conn._authenticate(security, deadline)
            except BaseException:
                conn.close()
                raise
            if lifetime_ms > 0:
                nursery.start_soon(conn._reauthenticate, security, lifetime_ms)
        return conn

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        host: str,
        port: int,
        *,
        client_id: str,
        timeout: float,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        security: ClientSecurity | None = None,
    ) -> AsyncIterator[BrokerConnection]:
        """A connection whose reader lives in a nursery of its own, closed on exit."""
        try:
            async with trio.open_nursery() as nursery:
                conn = await cls.connect(
                    host, port, client_id=client_id, timeout=timeout,
                    nursery=nursery, max_response_bytes=max_response_bytes, security=security,
                )
                try:
                    yield conn
                finally:
                    conn.close()
        except BaseExceptionGroup as group:
            # The reader never raises: a lone exception is the body's (or connect's),
            # and callers catch BrokerConnectionError, not a group holding it.
            if len(group.exceptions) == 1:
                exc = group.exceptions[0]
                raise exc from exc.__cause__  # its own cause, not the group
            raise

    @property
    def closed(self) -> bool:
        return self._error is not None

    @property
    def in_flight(self) -> int:
        """Requests sent or queued whose answers have not come yet."""
        return len(self._waiters)

    def close(self) -> None:
        """Close now: pending requests fail with BrokerConnectionError, the reader ends."""
        self._fail(BrokerConnectionError(f"connection to {self._peer} closed"))

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    @property
    def _peer(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def _fail(self, error: BrokerConnectionError) -> None:
        """Fail every pending request and close the socket (once; later failures are moot)."""
        if self._error is not None:
            return
        self._error = error
        self.closed_at = trio.current_time()
        waiters, self._waiters = self._waiters, {}
        self._outbox.clear()
        for waiter in waiters.values():
            # An exception object per waiter: each is raised in its own task.
            failure = BrokerConnectionError(str(error))
            failure.__cause__ = error
            waiter.deliver(outcome.Error(failure))
        self._reader_scope.cancel()
        self._reauth_scope.cancel()
        # Synchronous: trio wakes a task blocked on this socket with ClosedResourceError.
        # (A TLS stream sends no close_notify then: the connection failed or is done.)
        self._socket.close()

    # ---- requests ------------------------------------------------------------------

    async def request(self, api_key: int, api_version: int, request: Any, *, timeout: float | None = None) -> Any:
        """Send `request` (a kio entity of this API version) and return the decoded
        response entity; None for a Produce with acks=0, which has no answer.

        Raises BrokerConnectionError on a timeout (default: the connection's) or a
        failed connection; either closes the connection."""
        if self._error is not None:
            raise BrokerConnectionError(str(self._error)) from self._error
        # A caller cancelled already stops here, before anything is written: a write
        # cancelled part-way would cost the connection.
        await trio.lowlevel.checkpoint_if_cancelled()
        request_flexible, response_flexible = _header_flags(api_key, api_version)
        correlation_id, frame = self._frame(api_key, api_version, encode(request), request_flexible)
        if api_key == PRODUCE_KEY and request.acks == 0:
            with trio.move_on_after(self.timeout if timeout is None else timeout) as scope:
                await self._send(frame)
                await trio.lowlevel.checkpoint()
            if scope.cancelled_caught:
                self._timed_out(api_key, api_version, timeout)
            return None
        waiter = _Waiter(api_key, api_version, response_flexible, None)
        return await self._exchange(correlation_id, frame, waiter, timeout)

    async def request_raw(
        self,
        api_key: int,
        api_version: int,
        body: bytes,
        decode: Callable[[memoryview, int], T],
        *,
        flexible: bool,
        timeout: float | None = None,
    ) -> T:
        """Send a request body encoded by hand (an API kio has no classes for, such as
        ControlledShutdown) behind a request header v2 if `flexible`, else v1, and
        return `decode(response frame, offset of the body)`; the response header is v1
        if `flexible`, else v0. `decode` reads within the frame (a read-only view of
        the response after its size prefix) and raises on a malformed body, which
        fails the connection as a malformed kio response does. Timeouts and failures
        as `request`."""
        if self._error is not None:
            raise BrokerConnectionError(str(self._error)) from self._error
        await trio.lowlevel.checkpoint_if_cancelled()
        correlation_id, frame = self._frame(api_key, api_version, body, flexible)
        waiter = _Waiter(api_key, api_version, flexible and api_key != API_VERSIONS_KEY, decode)
        return await self._exchange(correlation_id, frame, waiter, timeout)

    def _frame(self, api_key: int, api_version: int, body: bytes, request_flexible: bool) -> tuple[int, bytes]:
        """(correlation id, the request frame): size, header v1 or v2, body."""
        self._correlation_id = correlation_id = (self._correlation_id + 1) & 0x7FFFFFFF
        tail = b"\x00" if request_flexible else b""  # header v2: no tagged fields
        head = _REQUEST_HEAD.pack(8 + len(self._client_id) + len(tail) + len(body), api_key, api_version, correlation_id)
        return correlation_id, b"".join((head, self._client_id, tail, body))

    async def _exchange(self, correlation_id: int, frame: bytes, waiter: _Waiter, timeout: float | None) -> Any:
        """Send `frame` and park until the reader delivers its answer, or the timeout."""
        self._waiters[correlation_id] = waiter
        with trio.move_on_after(self.timeout if timeout is None else timeout):
            await self._send(frame)
            if waiter.result is None:
                waiter.task = trio.lowlevel.current_task()
                return await trio.lowlevel.wait_task_rescheduled(waiter.abort)
            return waiter.result.unwrap()
        self._timed_out(waiter.api_key, waiter.version, timeout)

    def _timed_out(self, api_key: int, api_version: int, timeout: float | None) -> None:
        error = BrokerConnectionError(
            f"request (api key {api_key} v{api_version}) to {self._peer} timed out after "
            f"{self.timeout if timeout is None else timeout} s"
        )
        self._fail(error)
        raise error

    async def _send(self, frame: bytes) -> None:
        """Write `frame`, or queue it behind the write in progress, which takes it along."""
        self._outbox.append(frame)
        if self._sending:
            return  # the caller parks for its answer next: that is its checkpoint
        self._sending = True
        try:
            while self._outbox:
                data = self._outbox[0] if len(self._outbox) == 1 else b"".join(self._outbox)
                self._outbox.clear()
                await self._stream.send_all(data)
        except _NETWORK_ERRORS as e:
            error = self._error or BrokerConnectionError(f"connection to {self._peer} broke while sending: {e!r}")
            self._fail(error)
            raise BrokerConnectionError(str(error)) from e
        except BaseException:
            # Cancelled mid-write: the stream may hold part of a frame; nothing more can follow it.
            self._fail(BrokerConnectionError(f"connection to {self._peer} closed: a request write was cancelled"))
            raise
        finally:
            self._sending = False

    # ---- the reader ----------------------------------------------------------------

    async def _read(self) -> None:
        frames = FrameBuffer(self.max_response_bytes)
        # Plaintext: the socket fills the frame buffer directly, as before TLS existed.
        recv_into = self._tls_recv_into if isinstance(self._stream, trio.SSLStream) else self._socket.recv_into
        error: BrokerConnectionError | None = None
        try:
            with self._reader_scope:
                while True:
                    received = await recv_into(frames.writable())
                    if not received:
                        raise BrokerConnectionError(f"connection to {self._peer} closed by the broker")
                    frames.advance(received)
                    while (frame := frames.next_frame()) is not None:
                        self._dispatch(frame)
        except BrokerConnectionError as e:
            error = e
        except FrameError as e:
            error = BrokerConnectionError(f"response from {self._peer} refused (max_response_bytes={self.max_response_bytes}): {e}")
        except _NETWORK_ERRORS as e:
            error = BrokerConnectionError(f"connection to {self._peer} broke: {e!r}")
        except Exception as e:  # a reader must never take its owner's nursery down
            log.exception("reader of the connection to %s failed", self._peer)
            error = BrokerConnectionError(f"reader of the connection to {self._peer} failed: {e!r}")
        finally:
            self._fail(error or BrokerConnectionError(f"connection to {self._peer} closed"))

    async def _tls_recv_into(self, buffer: memoryview) -> int:
        """recv_into over TLS: decrypted bytes into `buffer`; 0 at the end of the stream."""
        data = self._tls_pending
        if not data:
            received = await self._stream.receive_some(TLS_READ_SIZE)
            if not received:
                return 0
            data = memoryview(received)
        size = min(len(data), len(buffer))
        buffer[:size] = data[:size]
        self._tls_pending = data[size:]
        return size

    def _dispatch(self, frame: bytearray) -> None:
        if len(frame) < 4:
            raise BrokerConnectionError(f"response of {len(frame)} bytes from {self._peer}")
        (correlation_id,) = _I32(frame, 0)
        waiter = self._waiters.pop(correlation_id, None)
        if waiter is None:
            # Kafka's NetworkClient: a correlation id that matches no request is fatal.
            raise BrokerConnectionError(f"response from {self._peer} with unknown correlation id {correlation_id}")
        if waiter.abandoned:
            return
        try:
            offset = skip_tagged_fields(frame, 4) if waiter.response_flexible else 4
            if waiter.decode is not None:
                response = waiter.decode(memoryview(frame).toreadonly(), offset)
            else:
                response = self._decode(waiter.api_key, waiter.version, frame, offset)
            waiter.deliver(outcome.Value(response))
        except Exception as e:  # MalformedRequest, kio's SerialError, a bad enum value ...
            error = BrokerConnectionError(
                f"malformed response (api key {waiter.api_key} v{waiter.version}) from {self._peer}: {e}"
            )
            waiter.deliver(outcome.Error(error))
            raise error from e

    @staticmethod
    def _decode(api_key: int, version: int, frame: bytearray, offset: int) -> Any:
        check, read = _response_decoder(api_key, version)
        view = memoryview(frame).toreadonly()  # kio's native reader takes read-only buffers
        try:
            check(view, offset, len(view))
        except MalformedRequest:
            if api_key != API_VERSIONS_KEY or version == 0:
                raise
            # A broker that does not know this ApiVersions version answers in v0
            # (Kafka's ApiVersionsResponse.parse falls back the same way).
            check, read = _response_decoder(api_key, 0)
            check(view, offset, len(view))
        response, _size = read(view, offset)
        return response

    # ---- SASL ----------------------------------------------------------------------

    async def _authenticate(self, security: ClientSecurity, deadline: float) -> int:
        """SaslHandshake v1, then SaslAuthenticate until the mechanism completes, each
        request bounded by `deadline`; the session lifetime the broker gives (ms, 0: it
        never expires). Raises BrokerConnectionError on a refusal, with the broker's
        message, or when the broker serves no SaslHandshake v1."""
        from kwire.security.sasl import new_sasl_client

        def remaining() -> float:
            return max(deadline - trio.current_time(), 0.0)

        mechanism = security.sasl_mechanism
        try:
            handshake_version = self.version_for(SASL_HANDSHAKE_KEY, SASL_HANDSHAKE_VERSION, SASL_HANDSHAKE_VERSION)
            version = self.version_for(SASL_AUTHENTICATE_KEY, SASL_AUTHENTICATE_MAX_VERSION)
        except UnsupportedVersionError as e:
            raise BrokerConnectionError(f"SASL with {self._peer} impossible: {e}") from e
        handshake = request_class(SASL_HANDSHAKE_KEY, handshake_version)(mechanism=mechanism)
        response = await self.request(SASL_HANDSHAKE_KEY, handshake_version, handshake, timeout=remaining())
        if response.error_code != ErrorCode.none:
            raise BrokerConnectionError(
                f"SASL handshake with {self._peer} failed ({ErrorCode(response.error_code).name.upper()}): mechanism "
                f"{mechanism} refused, the broker enables {', '.join(response.mechanisms) or 'none'}"
            )
        authenticate = request_class(SASL_AUTHENTICATE_KEY, version)
        try:
            client = new_sasl_client(mechanism, security.username, security.password)
            token = client.initial()
            while True:
                response = await self.request(
                    SASL_AUTHENTICATE_KEY, version, authenticate(auth_bytes=token), timeout=remaining()
                )
                if response.error_code != ErrorCode.none:
                    raise BrokerConnectionError(
                        f"SASL authentication of {security.username} ({mechanism}) to {self._peer} failed "
                        f"({ErrorCode(response.error_code).name.upper()}): {response.error_message}"
                    )
                if client.complete:
                    break  # PLAIN: the initial response was all
                # SCRAM: the server's challenge, then its final message (verified here).
                token = client.evaluate(bytes(response.auth_bytes)) or b""
                if client.complete and not token:
                    break
        except BrokerConnectionError:
            raise
        except Exception as e:  # the mechanism refused the server's answer (a bad SCRAM signature ...)
            raise BrokerConnectionError(
                f"SASL authentication of {security.username} ({mechanism}) to {self._peer} failed: {e}"
            ) from e
        if version >= 1:
            self.session_lifetime_ms = int(response.session_lifetime.total_seconds() * 1000)
        return self.session_lifetime_ms

    async def _reauthenticate(self, security: ClientSecurity, lifetime_ms: int) -> None:
        """KIP-368: authenticate again on this connection before each session ends.
        Never raises (it runs in its owner's nursery): a failure fails the connection."""
        with self._reauth_scope:
            while lifetime_ms > 0:
                await trio.sleep(lifetime_ms / 1000 * (REAUTH_AT + REAUTH_JITTER * random.random()))
                try:
                    lifetime_ms = await self._authenticate(security, trio.current_time() + self.timeout)
                except (BrokerConnectionError, KafkaError) as e:
                    self._fail(BrokerConnectionError(f"re-authentication to {self._peer} failed: {e}"))
                    return
                except Exception as e:
                    log.exception("re-authentication to %s failed", self._peer)
                    self._fail(BrokerConnectionError(f"re-authentication to {self._peer} failed: {e!r}"))
                    return
                self.reauthentications += 1
                log.debug("re-authenticated to %s, session lifetime %d ms", self._peer, lifetime_ms)

    # ---- versions ------------------------------------------------------------------

    async def negotiate(self, *, timeout: float | None = None) -> dict[int, tuple[int, int]]:
        """Send ApiVersions and keep the broker's (min, max) version per API key."""
        version = API_VERSIONS_VERSION
        for _attempt in range(2):
            request = request_class(API_VERSIONS_KEY, version)
            fields = {}
            if version >= 3:
                fields = {"client_software_name": CLIENT_SOFTWARE_NAME, "client_software_version": _software_version()}
            response = await self.request(API_VERSIONS_KEY, version, request(**fields), timeout=timeout)
            ranges = {a.api_key: (a.min_version, a.max_version) for a in response.api_keys}
            if response.error_code == ErrorCode.unsupported_version and API_VERSIONS_KEY in ranges:
                low, high = ranges[API_VERSIONS_KEY]
                if low <= min(high, version) < version:
                    version = min(high, version)
                    continue  # retry with the newest version the broker has
            if response.error_code != ErrorCode.none:
                raise KafkaError(ErrorCode(response.error_code), f"ApiVersions to {self._peer} failed")
            self.api_versions = ranges
            return ranges
        raise UnsupportedVersionError(f"{self._peer} accepts no ApiVersions version this client sends")

    def version_for(self, api_key: int, wanted_max: int, wanted_min: int = 0) -> int:
        """The highest version of `api_key` in both [wanted_min, wanted_max] and the
        broker's range (after negotiate())."""
        if not self.api_versions:
            raise UnsupportedVersionError(f"versions of {self._peer} not negotiated yet")
        served = self.api_versions.get(api_key)
        if served is not None:
            version = min(wanted_max, served[1])
            if version >= max(wanted_min, served[0]):
                return version
        raise UnsupportedVersionError(
            f"{self._peer} serves api key {api_key} at versions {served}, not in [{wanted_min}, {wanted_max}]"
        )


async def _tls_handshake(
    stream: trio.SocketStream, host: str, port: int, security: ClientSecurity, deadline: float, timeout: float
) -> trio.SSLStream[trio.SocketStream]:
    """The TLS stream over `stream` once its handshake is done by `deadline`; the
    server's certificate is checked against the context's trust (and `host`, if
    check_hostname). On failure the socket is closed and BrokerConnectionError raised."""
    assert security.ssl_context is not None
    tls = trio.SSLStream(stream, security.ssl_context, server_hostname=host)
    try:
        with trio.move_on_at(deadline):
            await tls.do_handshake()
            return tls
    except (trio.BrokenResourceError, ssl.SSLError, OSError) as e:
        stream.socket.close()
        cause = e.__cause__ or e  # trio wraps the ssl error in BrokenResourceError
        raise BrokerConnectionError(f"TLS handshake with {host}:{port} failed: {cause}") from e
    except BaseException:
        stream.socket.close()
        raise
    stream.socket.close()
    raise BrokerConnectionError(f"TLS handshake with {host}:{port} not finished within {timeout} s")


# ---- the pool ----------------------------------------------------------------------

Resolver = Callable[[int], "tuple[str, int] | None"]


def _address(resolved: tuple[str, int] | None) -> tuple[str, int] | None:
    # Compared with the connection's (host, port): whatever sequence the resolver gives.
    return None if resolved is None else (resolved[0], resolved[1])


class _Peer:
    __slots__ = ("connection", "address", "failures", "next_attempt", "lock")

    def __init__(self) -> None:
        self.connection: BrokerConnection | None = None
        self.address: tuple[str, int] | None = None
        # Failed connection attempts in a row, and when the next may start (trio time).
        self.failures = 0
        self.next_attempt = 0.0
        # One connection attempt per broker at a time.
        self.lock = trio.Lock()


class BrokerClientPool:
    """Connections to other brokers by id, each reader in the pool's nursery:

        async with BrokerClientPool(resolve, client_id="broker-1") as pool:
            response = await pool.request(2, 1, 15, fetch_request, timeout=30)

    `resolve(broker_id)` gives the broker's (host, port), or None when it is unknown;
    it is asked again before each request, and a connection to an address that is no
    longer the broker's is closed. Requests are not retried here (a Produce retried
    blindly could be written twice): a failed one raises BrokerConnectionError and the
    next request reconnects, after the backoff.
    """

    def __init__(
        self,
        resolve: Resolver,
        *,
        client_id: str,
        timeout: float = 30.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        reconnect_backoff_ms: int = RECONNECT_BACKOFF_MS,
        reconnect_backoff_max_ms: int = RECONNECT_BACKOFF_MAX_MS,
        negotiate: bool = True,
        security: ClientSecurity | None = None,
    ) -> None:
        self.resolve = resolve
        # How every connection is secured (kwire.security.client.inter_broker_security).
        self.security = security
        self.client_id = client_id
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.reconnect_backoff = reconnect_backoff_ms / 1000
        self.reconnect_backoff_max = reconnect_backoff_max_ms / 1000
        self.negotiate = negotiate
        self._peers: dict[int, _Peer] = {}
        self._nursery: trio.Nursery | None = None
        self._nursery_manager: Any = None

    async def __aenter__(self) -> BrokerClientPool:
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        self._close_all()
        self._nursery = None
        try:
            return await self._nursery_manager.__aexit__(*exc_info)
        except BaseExceptionGroup as group:
            # Readers never raise: a lone exception is the body's; let it through unwrapped.
            if len(group.exceptions) == 1 and group.exceptions[0] is exc_info[1]:
                return False
            raise

    def _close_all(self) -> None:
        for peer in self._peers.values():
            if peer.connection is not None:
                peer.connection.close()
                peer.connection = None

    def invalidate(self, broker_id: int) -> None:
        """Close the connection to `broker_id` (its address changed, or it left): the
        next request connects to its address afresh, without backoff."""
        peer = self._peers.get(broker_id)
        if peer is None:
            return
        if peer.connection is not None:
            peer.connection.close()
        peer.connection = None
        peer.address = None
        peer.failures = 0
        peer.next_attempt = 0.0

    def backoff(self, failures: int) -> float:
        """Seconds to wait after `failures` failed attempts in a row, as Kafka's
        ExponentialBackoff: reconnect.backoff.ms doubling up to reconnect.backoff.max.ms,
        with 20 % jitter so that brokers do not reconnect in step."""
        if self.reconnect_backoff_max <= self.reconnect_backoff:
            term = self.reconnect_backoff_max
        else:
            term = min(self.reconnect_backoff * 2 ** max(failures - 1, 0), self.reconnect_backoff_max)
        return term * random.uniform(1 - RECONNECT_JITTER, 1 + RECONNECT_JITTER)

    def connected(self, broker_id: int) -> BrokerConnection | None:
        """The open connection to `broker_id`, if there is one."""
        peer = self._peers.get(broker_id)
        if peer is None or peer.connection is None or peer.connection.closed:
            return None
        return peer.connection

    async def connection(self, broker_id: int, *, timeout: float | None = None) -> BrokerConnection:
        """An open (and negotiated) connection to `broker_id`, connecting if needed once
        the reconnect backoff has passed; BrokerConnectionError if that cannot happen
        within `timeout`."""
        peer = self._peers.get(broker_id)
        if peer is None:
            peer = self._peers[broker_id] = _Peer()
        conn = peer.connection
        if conn is not None and not conn.closed:
            if _address(self.resolve(broker_id)) == peer.address:
                return conn
            self.invalidate(broker_id)
        deadline = trio.current_time() + (self.timeout if timeout is None else timeout)
        with trio.move_on_at(deadline):
            async with peer.lock:
                return await self._connect(broker_id, peer, deadline)
        raise BrokerConnectionError(f"no connection to broker {broker_id} within {self.timeout if timeout is None else timeout} s")

    async def _connect(self, broker_id: int, peer: _Peer, deadline: float) -> BrokerConnection:
        conn = peer.connection
        if conn is not None:
            if not conn.closed and _address(self.resolve(broker_id)) == peer.address:
                return conn  # another task connected while this one waited for the lock
            # A connection that dropped: wait at least the base backoff from its end.
            if conn.closed_at is not None and peer.failures == 0:
                peer.next_attempt = max(peer.next_attempt, conn.closed_at + self.backoff(1))
            peer.connection = None
        if self._nursery is None:
            raise BrokerConnectionError("the broker client pool is closed")
        if peer.next_attempt > deadline:
            raise BrokerConnectionError(f"broker {broker_id}: reconnect backoff outlasts the request's timeout")
        await trio.sleep_until(peer.next_attempt)
        address = _address(self.resolve(broker_id))
        if address is None:
            raise BrokerConnectionError(f"broker {broker_id} is not known")
        host, port = address
        try:
            conn = await BrokerConnection.connect(
                host, port, client_id=self.client_id, timeout=max(deadline - trio.current_time(), 0.0),
                nursery=self._nursery, max_response_bytes=self.max_response_bytes, security=self.security,
            )
            if self.negotiate and not conn.api_versions:  # SASL negotiated while connecting
                try:
                    await conn.negotiate(timeout=max(deadline - trio.current_time(), 0.0))
                except BaseException:
                    conn.close()
                    raise
        except (BrokerConnectionError, KafkaError, trio.Cancelled):
            # (Cancelled: the request's deadline passed while connecting.)
            peer.failures += 1
            peer.next_attempt = trio.current_time() + self.backoff(peer.failures)
            raise
        peer.connection, peer.address = conn, address
        peer.failures = 0
        return conn

    async def request(self, broker_id: int, api_key: int, api_version: int, request: Any, timeout: float | None = None) -> Any:
        """Send `request` to `broker_id` (connecting if needed); the answer, or
        BrokerConnectionError if the connection and the answer do not come within `timeout`."""
        conn = self.connected(broker_id)
        if conn is not None and _address(self.resolve(broker_id)) == conn.address:
            return await conn.request(api_key, api_version, request, timeout=timeout)
        deadline = trio.current_time() + (self.timeout if timeout is None else timeout)
        conn = await self.connection(broker_id, timeout=timeout)
        return await conn.request(api_key, api_version, request, timeout=max(deadline - trio.current_time(), 0.0))

    async def request_raw(
        self,
        broker_id: int,
        api_key: int,
        api_version: int,
        body: bytes,
        decode: Callable[[memoryview, int], T],
        *,
        flexible: bool,
        timeout: float | None = None,
    ) -> T:
        """`BrokerConnection.request_raw` to `broker_id`, connecting as `request` does."""
        conn = self.connected(broker_id)
        if conn is not None and _address(self.resolve(broker_id)) == conn.address:
            return await conn.request_raw(api_key, api_version, body, decode, flexible=flexible, timeout=timeout)
        deadline = trio.current_time() + (self.timeout if timeout is None else timeout)
        conn = await self.connection(broker_id, timeout=timeout)
        return await conn.request_raw(
            api_key, api_version, body, decode, flexible=flexible, timeout=max(deadline - trio.current_time(), 0.0)
        )

    async def aclose(self) -> None:
        self._close_all()
        await trio.lowlevel.checkpoint()
