"""The trio server: listeners, connections, request dispatch in order.

A connection reads requests while earlier ones are being served (a long-poll
fetch does not stop the next request from being read) and answers strictly in
request order, as Kafka clients require.

Limits, with Kafka's names: socket.request.max.bytes per frame,
queued.max.request.bytes for the large frames being read on all connections
together, connections.max.idle.ms, max.connections and max.connections.per.ip.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import ipaddress
import logging
import signal
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio

from kwire.broker import Broker
from kwire.config import BrokerConfig, ConfigError
from kwire.dynamic_config import CONNECTION_KEYS, tls_store_listener
from kwire.handlers import PendingAnswer, RequestContext, dispatch
from kwire.log.segment import FileRegion
from kwire.protocol.apis import API_TABLE, load_all_handlers, serves_inline
from kwire.protocol.framing import FrameBuffer, FrameError
from kwire.protocol.headers import CloseConnection, MalformedRequest
from kwire.protocol.messages import warm_up
from kwire.security.principal import ANONYMOUS
from kwire.security.session import ConnectionSession
from kwire.transport import PlainTransport, TlsTransport, Transport

log = logging.getLogger(__name__)

# Requests read ahead per connection before reading pauses (Kafka clients keep
# at most 5 in flight by default; this bounds memory for a misbehaving one).
MAX_PIPELINED_REQUESTS = 64

# What a client hanging up looks like; never worth a traceback.
NETWORK_ERRORS = (ConnectionError, TimeoutError, trio.BrokenResourceError, trio.ClosedResourceError)

_SIZE = struct.Struct(">i")

# A TLS handshake must finish within this (or connections.max.idle.ms if shorter):
# a client that stops half-way holds its connection no longer.
TLS_HANDSHAKE_TIMEOUT = 30.0

# After this many connections closed, give freed heap memory back to the OS:
# glibc keeps it otherwise, and RSS stays at its peak after a burst of clients.
TRIM_AFTER_CLOSES = 64


def peek_api_key(frame: bytes | bytearray) -> int:
    return int.from_bytes(frame[:2], "big", signed=True) if len(frame) >= 2 else -1


def is_network_error(error: BaseException) -> bool:
    """True for a network error, or a group holding only network errors."""
    if isinstance(error, BaseExceptionGroup):  # trio's MultiError is one too
        return all(is_network_error(e) for e in error.exceptions)
    return isinstance(error, NETWORK_ERRORS)


class MemoryPool:
    """Kafka's queued.max.request.bytes: memory for the large frames being read,
    shared by all connections (small frames use each connection's own buffer).

    A reservation that does not fit waits until memory is released, with two
    exceptions that keep it from deadlocking, as Kafka's MemoryPool admits a
    frame larger than the pool: a reservation when nothing is reserved always
    goes through (the frame is admitted alone), and so does the oldest frame in
    progress (frames holding part of the pool cannot all wait on one another).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        # Holder -> bytes held, in the order their frames were admitted.
        self._holders: dict[object, int] = {}
        self._lot = trio.lowlevel.ParkingLot()

    def _fits(self, holder: object, size: int) -> bool:
        if self.used + size <= self.capacity or not self._holders:
            return True
        return next(iter(self._holders)) is holder

    async def reserve(self, holder: object, size: int) -> None:
        while not self._fits(holder, size):
            await self._lot.park()
        self.used += size
        self._holders[holder] = self._holders.get(holder, 0) + size

    def release(self, holder: object) -> None:
        """Release everything `holder` holds and wake those waiting."""
        size = self._holders.pop(holder, 0)
        if size:
            self.used -= size
            self._lot.unpark_all()


class _Slot:
    """One request's place in the connection's answer order."""

    __slots__ = ("done", "payload")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.payload: bytes | list[bytes | FileRegion] | None = None


class Connection:
    """One client connection: a reader that serves requests, a writer that answers.

    APIs whose handlers never wait (produce, metadata ...) are served inline by
    the reader, and their answer is written at once when nothing is queued ahead
    of it: no task, event or channel per request on the hot path. Requests that
    may wait (fetch, group joins) get a task, and the writer answers in order.
    """

    def __init__(
        self,
        server: KafkaServer,
        transport: Transport,
        listener_name: str,
        peer: str,
        session: ConnectionSession,
    ) -> None:
        self.server = server
        self.transport = transport
        self.listener_name = listener_name
        self.peer = peer
        self.client_host = peer.rpartition(":")[0]
        # Who the client is and where its SASL exchange stands; quota muting.
        self.session = session
        # Answers handed to the writer task and not yet written, and whether
        # something is being written now: an inline answer may go straight out
        # only when both are clear, so answers keep request order.
        self.queued = 0
        self.writing = False
        # For connections.max.idle.ms: when bytes last came in or an answer
        # queued behind others went out, and when the unfinished frame began.
        self.last_active = trio.current_time()
        self.frame_started: float | None = None
        # Bytes of the server's memory pool this connection's frame holds.
        self.pool_held = 0
        self.scope = trio.CancelScope()
        self.reading = trio.CancelScope()

    def idle_expired(self, now: float, idle: float) -> bool:
        """Idle for `idle` seconds, or a frame begun that long ago and not finished."""
        started = self.frame_started
        return now - self.last_active > idle or (started is not None and now - started > idle)

    async def run(self) -> None:
        send, receive = trio.open_memory_channel[_Slot](MAX_PIPELINED_REQUESTS)
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_answers, receive, nursery.cancel_scope)
                    # Cancelled alone when the broker stops: the answers owed are still
                    # written (the writer drains the closed channel), then it closes.
                    with self.reading:
                        await self._read_requests(nursery, send)
        finally:
            if self.pool_held:
                self.server.memory_pool.release(self)
                self.pool_held = 0
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await self.transport.aclose()

    async def _read_requests(self, nursery: trio.Nursery, send: trio.MemorySendChannel[_Slot]) -> None:
        """Read frames and serve each; errors end this connection only."""
        pool = self.server.memory_pool
        config = self.server.broker.config
        max_frame = config["socket.request.max.bytes"]
        frames = FrameBuffer(max_frame, budgeted=pool is not None)
        recv_into = self.transport.recv_into
        scope = nursery.cancel_scope
        current_time = trio.current_time
        session = self.session
        # SASL listeners check every request against the session's state; until a
        # client authenticates, its frames are bounded by sasl.server.max.receive.size
        # (Kafka's guard against unauthenticated clients announcing huge frames).
        checks_sasl = session.sasl
        unauthenticated_max = min(max_frame, config["sasl.server.max.receive.size"])
        try:
            async with send:
                while True:
                    if session.muted_until:
                        # A throttled answer went out: the channel stays muted (KIP-219).
                        await trio.sleep_until(session.muted_until)
                        session.muted_until = 0.0
                    if checks_sasl:
                        frames.max_size = max_frame if session.authenticated else unauthenticated_max
                    if frames.wants:
                        # A large frame needs memory: reading waits until the pool has it.
                        await pool.reserve(self, frames.wants)
                        self.pool_held += frames.wants
                        frames.grow()
                    # Received straight into the frame buffer: no copy per read.
                    received = await recv_into(frames.writable())
                    if not received:
                        return  # the client closed; answers still owed are sent
                    self.last_active = current_time()
                    frames.advance(received)
                    # Inline answers to the requests of one read leave in one send.
                    ready: list[bytes] = []
                    while (frame := frames.next_frame()) is not None:
                        slot = _Slot()
                        if checks_sasl:
                            if session.raw_tokens:
                                # Handshake v0: this frame is a SASL token, not a request.
                                ready.append(self._raw_token(frame))
                                continue
                            session.admit(peek_api_key(frame), self.last_active)
                        if not serves_inline(frame):
                            if ready:
                                await self._send(b"".join(ready))
                                ready.clear()
                            self.queued += 1
                            await send.send(slot)
                            nursery.start_soon(self._serve, frame, slot, scope)
                            continue
                        await self._serve(frame, slot, scope, inline=True)
                        if isinstance(slot.payload, PendingAnswer):
                            # An answer that waits (acks=all): reading goes on, and the
                            # writer sends it in its turn once complete.
                            if ready:
                                await self._send(b"".join(ready))
                                ready.clear()
                            pending, slot.payload = slot.payload, None
                            slot.done = trio.Event()
                            self.queued += 1
                            await send.send(slot)
                            nursery.start_soon(self._complete, pending, slot, scope)
                            continue
                        if self.queued or self.writing:
                            # Answers ahead are still owed; `ready` is empty here,
                            # as it is sent before anything is queued.
                            self.queued += 1
                            await send.send(slot)
                        elif isinstance(slot.payload, bytes):
                            ready.append(slot.payload)
                        elif slot.payload is not None:
                            if ready:
                                await self._send(b"".join(ready))
                                ready.clear()
                            await self._send(slot.payload)
                        if session.close_after_answer is not None:
                            break
                    if ready:
                        await self._send(b"".join(ready))
                    if session.close_after_answer is not None:
                        await self._close_after_answers(session.close_after_answer, scope)
                        return
                    if self.pool_held and not frames.held:
                        pool.release(self)  # the large frame was taken and served
                        self.pool_held = 0
                    if frames.pending_bytes:
                        if self.frame_started is None:
                            self.frame_started = self.last_active
                    elif self.frame_started is not None:
                        self.frame_started = None
        except FrameError as e:
            log.warning("closing connection from %s: %s", self.peer, e)
            scope.cancel()
        except CloseConnection as e:
            log.info("closing connection from %s: %s", self.peer, e)
            scope.cancel()
        except NETWORK_ERRORS as e:
            log.debug("connection from %s ended: %r", self.peer, e)
            scope.cancel()
        except OSError as e:
            log.info("closing connection from %s: %s", self.peer, e)
            scope.cancel()

    async def _serve(
        self, frame: bytearray, slot: _Slot, connection_scope: trio.CancelScope, inline: bool = False
    ) -> None:
        session = self.session
        context = RequestContext(
            self.server.broker,
            self.peer,
            self.listener_name,
            principal=session.principal,
            client_host=self.client_host,
            session=session,
        )

        async def answer() -> Any:
            payload = await dispatch(context, frame)
            if isinstance(payload, PendingAnswer) and not inline:
                payload = await payload.complete()  # a task of its own already
            if context.throttle_time_ms:
                # Muted once this answer is out (the reader waits before its next read).
                until = trio.current_time() + context.throttle_time_ms / 1000
                session.muted_until = max(session.muted_until, until)
            return payload

        await self._fill(slot, answer, connection_scope)

    def _raw_token(self, frame: bytearray) -> bytes:
        """A SASL token after SaslHandshake v0: the answer is a raw token too. A failure
        closes the connection (v0 has no error response)."""
        try:
            answer = self.session.authenticate(bytes(frame), trio.current_time())
        except Exception as e:  # the SASL server's errors, and a token out of turn
            raise CloseConnection(f"SASL authentication failed: {e}") from None
        return _SIZE.pack(len(answer)) + answer

    async def _close_after_answers(self, reason: str, scope: trio.CancelScope) -> None:
        """Close once the answers owed (the failed handshake's among them) are written."""
        log.info("closing connection from %s: %s", self.peer, reason)
        with trio.move_on_after(1.0):
            while self.queued or self.writing:
                await trio.sleep(0.005)
        scope.cancel()

    async def _complete(self, pending: PendingAnswer, slot: _Slot, connection_scope: trio.CancelScope) -> None:
        await self._fill(slot, pending.complete, connection_scope)

    async def _fill(
        self, slot: _Slot, answer: Callable[[], Awaitable[Any]], connection_scope: trio.CancelScope
    ) -> None:
        """The slot's answer; a request that cannot be answered closes the connection."""
        try:
            slot.payload = await answer()
        except MalformedRequest as e:
            log.warning("closing connection from %s: malformed request: %s", self.peer, e)
            connection_scope.cancel()
        except CloseConnection as e:
            log.debug("closing connection from %s: %s", self.peer, e)
            connection_scope.cancel()
        except Exception:
            log.exception("closing connection from %s: request failed", self.peer)
            connection_scope.cancel()
        finally:
            slot.done.set()

    async def _send(self, payload: bytes | list[bytes | FileRegion]) -> None:
        self.writing = True
        transport = self.transport
        try:
            if isinstance(payload, bytes):
                await transport.send_all(payload)
                return
            pending = b""
            for part in payload:
                if isinstance(part, FileRegion):
                    if pending:
                        await transport.send_all(pending)
                        pending = b""
                    await transport.send_region(part)
                else:
                    pending += part  # header and small parts go out together
            if pending:
                await transport.send_all(pending)
        finally:
            self.writing = False

    async def _write_answers(self, receive: trio.MemoryReceiveChannel[_Slot], scope: trio.CancelScope) -> None:
        try:
            async with receive:
                async for slot in receive:
                    await slot.done.wait()
                    if slot.payload is not None:
                        await self._send(slot.payload)
                        self.last_active = trio.current_time()
                    self.queued -= 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            log.debug("connection from %s ended while answering: %r", self.peer, e)
            scope.cancel()


class KafkaServer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.bound: list[tuple[str, str, int]] = []
        config = broker.config
        limit = config.queued_max_request_bytes
        self.memory_pool = MemoryPool(limit) if limit is not None else None
        self.connections: set[Connection] = set()
        broker.services["kafka_server"] = self  # /metrics counts its connections (kwire.metrics)
        # Accepted and not yet closed (max.connections), and an event set at each close.
        self.open_connections = 0
        self.connection_closed = trio.Event()
        self.connections_per_ip: dict[str, int] = {}
        self.max_connections: int = config["max.connections"]
        self.max_connections_per_ip: int = config["max.connections.per.ip"]
        self.max_connections_per_ip_overrides = _resolve_ip_overrides(config.max_connections_per_ip_overrides)
        broker.reconfigurables.append(self.reconfigure)
        idle_ms = config["connections.max.idle.ms"]
        self.connections_max_idle = idle_ms / 1000 if idle_ms >= 0 else None
        self.closed_since_trim = 0
        # One per listening socket, cancelled when the broker stops: no new connection
        # is taken (a cancel scope is entered once, hence one each).
        self.accepting: list[trio.CancelScope] = []
        self.draining = False
        # Listener name -> its TLS context (SSL and SASL_SSL listeners), built at
        # start-up so that a bad store fails the start, not the first client.
        self.tls_contexts: dict[str, ssl.SSLContext] = {}
        for listener in config.listeners:
            if config.listener_protocol(listener.name) in ("SSL", "SASL_SSL"):
                from kwire.security.tls import server_ssl_context

                self.tls_contexts[listener.name] = server_ssl_context(config, listener.name)

    async def drain(self, timeout: float) -> None:
        """Stop taking connections and requests, and give the answers owed (acks=all
        waits, long polls) up to `timeout` to be written before the broker stops."""
        self.draining = True
        for scope in self.accepting:
            scope.cancel()
        for connection in list(self.connections):
            connection.reading.cancel()
        with trio.move_on_after(timeout):
            while self.connections:
                await trio.sleep(0.01)

    async def serve(self, task_status: trio.TaskStatus[list[tuple[str, str, int]]] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            accepting = []
            for listener in self.broker.config.listeners:
                listeners = await trio.open_tcp_listeners(listener.port, host=listener.host or None)
                port = listeners[0].socket.getsockname()[1]
                self.bound.append((listener.name, listener.host, port))
                self.broker.listener_bound(listener.name, port)
                handler = self._handler(listener.name)
                accepting += [(one, handler) for one in listeners]
            if self.broker.cluster is not None:
                # In a cluster, requests are served once this broker has registered and
                # read the cluster's state (Kafka enables request processing after
                # start-up): clients wait in the listen backlog meanwhile, rather than
                # hear of a one-broker cluster.
                await self.broker.start_services(nursery)
            for one, handler in accepting:
                nursery.start_soon(self._accept, one, handler, nursery)
            if self.connections_max_idle is not None:
                nursery.start_soon(self._close_idle_connections, self.connections_max_idle)
            if _malloc_trim is not None:
                nursery.start_soon(self._trim_memory)
            if self.broker.cluster is None:
                await self.broker.start_services(nursery)
            task_status.started(self.bound)

    async def _accept(
        self,
        listener: trio.SocketListener,
        handler: Callable[[trio.SocketStream], Awaitable[None]],
        nursery: trio.Nursery,
    ) -> None:
        """Kafka's acceptor: with max.connections open it stops accepting, so new
        connections wait in the kernel's backlog until one closes (per-IP limits, in
        `handle`, close a new connection at once instead, as Kafka does)."""
        scope = trio.CancelScope()
        self.accepting.append(scope)
        if self.draining:
            scope.cancel()
        with scope:
            await self._accept_forever(listener, handler, nursery)

    async def _accept_forever(
        self,
        listener: trio.SocketListener,
        handler: Callable[[trio.SocketStream], Awaitable[None]],
        nursery: trio.Nursery,
    ) -> None:
        while True:
            while self.open_connections >= self.max_connections:
                await self.connection_closed.wait()
            try:
                stream = await listener.accept()
            except OSError as e:
                if e.errno not in _ACCEPT_RESOURCE_ERRORS:
                    raise
                # Out of fds or memory: this connection stays in the backlog; retry
                # shortly rather than spin (trio.serve_listeners does the same).
                log.error("accept failed: %s; retrying in 0.1 s", e)
                await trio.sleep(0.1)
                continue
            self.open_connections += 1
            nursery.start_soon(self._serve_connection, handler, stream)

    async def _serve_connection(
        self, handler: Callable[[trio.SocketStream], Awaitable[None]], stream: trio.SocketStream
    ) -> None:
        try:
            await handler(stream)
        finally:
            self.open_connections -= 1
            self.connection_closed.set()
            self.connection_closed = trio.Event()

    def reconfigure(self, changed: set[str]) -> None:
        """Dynamic broker configs (kwire.dynamic_config). max.connections*: new
        connections are admitted by the new limits, an acceptor waiting under the old
        max.connections looks again. A TLS listener's stores: new connections handshake
        with the new context; those open keep theirs, as in Kafka."""
        config = self.broker.config
        reloaded = {name for key in changed if (name := tls_store_listener(key)) is not None}
        for listener in sorted(reloaded):
            if listener not in self.tls_contexts:
                continue
            from kwire.security.tls import server_ssl_context

            try:
                self.tls_contexts[listener] = server_ssl_context(config, listener)
                log.info("listener %s: TLS keystore and truststore reloaded", listener)
            except ConfigError as e:
                log.error("listener %s: keeping the TLS stores in use: %s", listener, e)
        if not changed & CONNECTION_KEYS:
            return
        self.max_connections = config["max.connections"]
        self.max_connections_per_ip = config["max.connections.per.ip"]
        try:
            self.max_connections_per_ip_overrides = _resolve_ip_overrides(
                config.max_connections_per_ip_overrides
            )
        except OSError as e:
            log.error("max.connections.per.ip.overrides: cannot resolve a host (%s); kept the old", e)
        self.connection_closed.set()
        self.connection_closed = trio.Event()

    def _admit(self, ip: str) -> str | None:
        """Why a new connection from `ip` must be closed at once, or None to serve it."""
        limit = self.max_connections_per_ip_overrides.get(ip, self.max_connections_per_ip)
        if self.connections_per_ip.get(ip, 0) >= limit:
            return f"address already has the configured maximum of {limit} connections"
        return None

    def _handler(self, name: str) -> Callable[[trio.SocketStream], Awaitable[None]]:
        async def handle(stream: trio.SocketStream) -> None:
            try:
                ip, port = stream.socket.getpeername()[:2]
            except OSError:
                ip, port = "?", 0
            refusal = self._admit(ip)
            if refusal is not None:
                log.info("Rejected connection from %s, %s.", ip, refusal)
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                return
            self.connections_per_ip[ip] = self.connections_per_ip.get(ip, 0) + 1
            connection: Connection | None = None
            try:
                opened = await self._open_transport(name, stream, f"{ip}:{port}")
                if opened is None:
                    return
                connection = Connection(self, opened[0], name, f"{ip}:{port}", opened[1])
                self.connections.add(connection)
                await connection.run()
            except Exception as e:
                # Never let one connection's failure reach the listener's nursery.
                if is_network_error(e):
                    log.debug("connection from %s:%s ended: %r", ip, port, e)
                else:
                    log.exception("connection from %s:%s failed", ip, port)
            finally:
                if connection is not None:
                    self.connections.discard(connection)
                left = self.connections_per_ip[ip] - 1
                if left:
                    self.connections_per_ip[ip] = left
                else:
                    del self.connections_per_ip[ip]
                self.closed_since_trim += 1

        return handle

    async def _open_transport(
        self, listener: str, stream: trio.SocketStream, peer: str
    ) -> tuple[Transport, ConnectionSession] | None:
        """The connection's transport (after the TLS handshake on SSL listeners) and its
        security session; None when the handshake failed (the stream is closed)."""
        config = self.broker.config
        protocol = config.listener_protocol(listener)
        tls = self.tls_contexts.get(listener)
        transport: Transport
        principal = ANONYMOUS
        if tls is None:
            transport = PlainTransport(stream)
        else:
            transport = TlsTransport(stream, tls)
            timeout = min(TLS_HANDSHAKE_TIMEOUT, self.connections_max_idle or TLS_HANDSHAKE_TIMEOUT)
            failure: str | None = None
            with trio.move_on_after(timeout) as handshake:
                try:
                    await transport.handshake()
                except (trio.BrokenResourceError, ssl.SSLError, OSError) as e:
                    cause = e.__cause__ or e
                    failure = f"TLS handshake failed: {cause}"
            if handshake.cancelled_caught:
                failure = f"TLS handshake not finished after {timeout:.0f} s"
            if failure is not None:
                log.info("closing connection from %s on %s: %s", peer, listener, failure)
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await stream.aclose()
                return None
            if protocol == "SSL":
                from kwire.security.tls import NoMatchingRule, principal_from_certificate

                try:
                    principal = principal_from_certificate(
                        transport.peer_certificate(), config.listener_value(listener, "ssl.principal.mapping.rules")
                    )
                except NoMatchingRule as e:
                    # Kafka fails the connection's authentication: no principal, no service.
                    log.info("closing connection from %s on %s: %s", peer, listener, e)
                    with trio.CancelScope(shield=True), trio.move_on_after(1):
                        await transport.aclose()
                    return None
        session = ConnectionSession(
            listener=listener,
            security_protocol=protocol,
            principal=principal,
            mechanisms=config.sasl_mechanisms(listener) if protocol.startswith("SASL_") else [],
            new_sasl_server=self._sasl_servers(listener) if protocol.startswith("SASL_") else None,
            reauth_ms=config.listener_value(listener, "connections.max.reauth.ms"),
        )
        return transport, session

    def _sasl_servers(self, listener: str) -> Callable[[str], Any]:
        from kwire.security.sasl import new_sasl_server
        from kwire.security.scram import lookup

        broker = self.broker

        def new(mechanism: str) -> Any:
            return new_sasl_server(mechanism, broker.config, listener, lookup(broker.entity_configs))

        return new

    async def _close_idle_connections(self, idle: float) -> None:
        """connections.max.idle.ms: close connections idle (or stuck in a frame) that long."""
        # Checked often enough to close within about a tenth of the limit late.
        period = min(max(idle / 10, 0.01), 30.0)
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            for connection in list(self.connections):
                if connection.idle_expired(now, idle):
                    log.debug("closing connection from %s: idle beyond connections.max.idle.ms", connection.peer)
                    connection.scope.cancel()

    async def _trim_memory(self) -> None:
        while True:
            await trio.sleep(1)
            if self.closed_since_trim >= TRIM_AFTER_CLOSES:
                self.closed_since_trim = 0
                _malloc_trim(0)


def _resolve_ip_overrides(overrides: dict[str, int]) -> dict[str, int]:
    """max.connections.per.ip.overrides by address: host names are resolved once, at start-up."""
    resolved: dict[str, int] = {}
    for host, count in overrides.items():
        try:
            resolved[str(ipaddress.ip_address(host))] = count
            continue
        except ValueError:
            pass
        for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP):
            resolved[str(info[4][0])] = count
    return resolved


_ACCEPT_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


def _glibc() -> ctypes.CDLL | None:
    """glibc, or None elsewhere (musl, macOS): for malloc_trim and mallopt."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim, libc.mallopt  # noqa: B018  (both must be there)
    except (OSError, AttributeError):
        return None
    return libc


_libc = _glibc()
_malloc_trim = _libc.malloc_trim if _libc is not None else None

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _keep_request_memory() -> None:
    """Let freed request buffers be reused rather than handed back to the kernel.

    A produce request of a megabyte gets its own buffer, grown as its bytes arrive;
    by default glibc serves such sizes with fresh mmaps (or trims the heap top after
    each free), so every request page-faults its whole buffer in again: measured, that
    was most of the broker's system time in a produce run (0.10 s per million 100-byte
    messages, against 0.02 s with this). Buffers up to 32 MiB now come from the heap,
    and up to 64 MiB of free heap stays mapped; malloc_trim after bursts of closed
    connections (_trim_memory) still gives memory back."""
    if _libc is not None:
        _libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
        _libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)


async def run_broker(
    config: BrokerConfig,
    *,
    ready: Callable[[Broker, list[tuple[str, str, int]]], None] | None = None,
    task_status: trio.TaskStatus[Broker] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the broker, serve until cancelled or signalled, then close it cleanly."""
    _keep_request_memory()
    broker = Broker(config)
    broker.open()
    try:
        async with trio.open_nursery() as nursery:
            # The signal handler is in place before the first connection is served:
            # a SIGTERM right after a first answer must still stop the broker cleanly.
            servers: list[KafkaServer] = []
            await nursery.start(_stop_on_signal, nursery.cancel_scope, broker, servers)
            server = KafkaServer(broker)
            servers.append(server)
            bound = await nursery.start(server.serve)
            if config["http.listeners"]:
                # /health, /metrics, the console: beside the Kafka listeners, same nursery.
                from kwire.http.server import serve_http

                bound += await nursery.start(serve_http, broker)
            if ready is not None:
                ready(broker, bound)
            # Clients ask for each API's newest version; have those ready. In a
            # thread, after start-up, so that neither waits for the other.
            newest = [(a.key, a.max_version) for a in API_TABLE.values()]
            nursery.start_soon(partial(trio.to_thread.run_sync, _warm_up, newest, abandon_on_cancel=True))
            task_status.started(broker)
    finally:
        broker.close()
        log.info("broker %d stopped cleanly", broker.broker_id)


# How long the answers owed at a SIGTERM may take to be written before connections close.
DRAIN_TIMEOUT = 1.0


async def controlled_shutdown(broker: Broker) -> None:
    """In a cluster, leadership moves away before the broker stops (Kafka's controlled
    shutdown), while it keeps serving: clients see only retriable errors. Bounded, as
    Kafka's controlled.shutdown.max.retries x controlled.shutdown.retry.backoff.ms."""
    cluster = broker.cluster
    if cluster is None or not broker.config["controlled.shutdown.enable"]:
        return
    config = broker.config
    timeout = min(
        (config["controlled.shutdown.max.retries"] + 1) * (config["controlled.shutdown.retry.backoff.ms"] / 1000 + 5),
        # Kept short: a whole cluster stopping at once has no controller to ask.
        5.0,
    )
    started = trio.current_time()
    try:
        await cluster.controlled_shutdown(timeout)
    except Exception:
        log.exception("controlled shutdown failed; stopping anyway")
    else:
        log.info("controlled shutdown done in %.0f ms", (trio.current_time() - started) * 1000)


def _warm_up(newest: list[tuple[int, int]]) -> None:
    # Handler modules (and the coordinators some import) first, then kio's modules.
    # Only a head start: a failure here is logged, and met again (and answered for
    # that request alone) when the API is first asked for.
    try:
        load_all_handlers()
        warm_up(newest)
    except Exception:
        log.exception("warming up the handlers failed")


async def _stop_on_signal(
    scope: trio.CancelScope,
    broker: Broker,
    servers: list[KafkaServer],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            task_status.started()
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                await controlled_shutdown(broker)
                for server in servers:
                    await server.drain(DRAIN_TIMEOUT)
                scope.cancel()
                return
    except RuntimeError:
        # Not the main thread (in-process test servers): the owner cancels instead.
        task_status.started()
        await trio.sleep_forever()
