"""The trio server: listeners, connections, request dispatch in order.

A connection reads requests while earlier ones are being served (a long-poll
fetch does not stop the next request from being read) and answers strictly in
request order, as Kafka clients require.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from kwire.broker import Broker
from kwire.config import BrokerConfig
from kwire.handlers import RequestContext, dispatch
from kwire.log.segment import FileRegion
from kwire.protocol.apis import API_TABLE, serves_inline
from kwire.protocol.framing import FrameBuffer, FrameError
from kwire.protocol.headers import MalformedRequest
from kwire.protocol.messages import warm_up

log = logging.getLogger(__name__)

# Requests read ahead per connection before reading pauses (Kafka clients keep
# at most 5 in flight by default; this bounds memory for a misbehaving one).
MAX_PIPELINED_REQUESTS = 64


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

    def __init__(self, server: KafkaServer, stream: trio.SocketStream, listener_name: str) -> None:
        self.server = server
        self.stream = stream
        self.listener_name = listener_name
        # Answers handed to the writer task and not yet written, and whether
        # something is being written now: an inline answer may go straight out
        # only when both are clear, so answers keep request order.
        self.queued = 0
        self.writing = False
        try:
            host, port = stream.socket.getpeername()[:2]
            self.peer = f"{host}:{port}"
        except OSError:
            self.peer = "?"

    async def run(self) -> None:
        send, receive = trio.open_memory_channel[_Slot](MAX_PIPELINED_REQUESTS)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_answers, receive, nursery.cancel_scope)
                await self._read_requests(nursery, send)
        finally:
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await self.stream.aclose()

    async def _read_requests(self, nursery: trio.Nursery, send: trio.MemorySendChannel[_Slot]) -> None:
        """Read frames and serve each; errors end this connection only."""
        frames = FrameBuffer(self.server.broker.config["socket.request.max.bytes"])
        sock = self.stream.socket
        scope = nursery.cancel_scope
        try:
            async with send:
                while True:
                    # Received straight into the frame buffer: no copy per read.
                    received = await sock.recv_into(frames.writable())
                    if not received:
                        return  # the client closed; answers still owed are sent
                    frames.advance(received)
                    # Inline answers to the requests of one read leave in one send.
                    ready: list[bytes] = []
                    while (frame := frames.next_frame()) is not None:
                        slot = _Slot()
                        if not serves_inline(frame):
                            if ready:
                                await self._send(b"".join(ready))
                                ready.clear()
                            self.queued += 1
                            await send.send(slot)
                            nursery.start_soon(self._serve, frame, slot, scope)
                            continue
                        await self._serve(frame, slot, scope)
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
                    if ready:
                        await self._send(b"".join(ready))
        except FrameError as e:
            log.warning("closing connection from %s: %s", self.peer, e)
            scope.cancel()
        except OSError:
            scope.cancel()

    async def _serve(self, frame: bytearray, slot: _Slot, connection_scope: trio.CancelScope) -> None:
        context = RequestContext(self.server.broker, self.peer, self.listener_name)
        try:
            slot.payload = await dispatch(context, frame)
        except MalformedRequest as e:
            log.warning("closing connection from %s: malformed request: %s", self.peer, e)
            connection_scope.cancel()
        except Exception:
            log.exception("closing connection from %s: request failed", self.peer)
            connection_scope.cancel()
        finally:
            slot.done.set()

    async def _send(self, payload: bytes | list[bytes | FileRegion]) -> None:
        self.writing = True
        try:
            if isinstance(payload, bytes):
                await self.stream.send_all(payload)
                return
            pending = b""
            for part in payload:
                if isinstance(part, FileRegion):
                    if pending:
                        await self.stream.send_all(pending)
                        pending = b""
                    await send_file_region(self.stream.socket, part)
                else:
                    pending += part  # header and small parts go out together
            if pending:
                await self.stream.send_all(pending)
        finally:
            self.writing = False

    async def _write_answers(self, receive: trio.MemoryReceiveChannel[_Slot], scope: trio.CancelScope) -> None:
        try:
            async with receive:
                async for slot in receive:
                    await slot.done.wait()
                    if slot.payload is not None:
                        await self._send(slot.payload)
                    self.queued -= 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            scope.cancel()


async def send_file_region(sock: trio.socket.SocketType, region: FileRegion) -> None:
    """Send a log file region with sendfile(2): the bytes never enter Python."""
    offset, remaining = region.position, region.size
    file_fd, sock_fd = region.file.fileno(), sock.fileno()
    while remaining:
        try:
            sent = os.sendfile(sock_fd, file_fd, offset, remaining)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        if sent == 0:
            # The file shrank under us; the promised size can no longer be kept.
            raise ConnectionError(f"log file region ended {remaining} bytes early")
        offset += sent
        remaining -= sent
    await trio.lowlevel.checkpoint()


class KafkaServer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.bound: list[tuple[str, str, int]] = []

    async def serve(self, task_status: trio.TaskStatus[list[tuple[str, str, int]]] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for listener in self.broker.config.listeners:
                listeners = await trio.open_tcp_listeners(listener.port, host=listener.host or None)
                port = listeners[0].socket.getsockname()[1]
                self.bound.append((listener.name, listener.host, port))
                self.broker.bound_ports[listener.name] = port
                handler = self._handler(listener.name)
                nursery.start_soon(trio.serve_listeners, handler, listeners)
            await self.broker.start_services(nursery)
            task_status.started(self.bound)

    def _handler(self, name: str) -> Callable[[trio.SocketStream], Awaitable[None]]:
        async def handle(stream: trio.SocketStream) -> None:
            try:
                await Connection(self, stream, name).run()
            except Exception:
                # Never let one connection's failure reach the listener's nursery.
                log.exception("connection failed")

        return handle


async def run_broker(
    config: BrokerConfig,
    *,
    ready: Callable[[Broker, list[tuple[str, str, int]]], None] | None = None,
    task_status: trio.TaskStatus[Broker] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open the broker, serve until cancelled or signalled, then close it cleanly."""
    broker = Broker(config)
    broker.open()
    try:
        async with trio.open_nursery() as nursery:
            server = KafkaServer(broker)
            bound = await nursery.start(server.serve)
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            if ready is not None:
                ready(broker, bound)
            # Clients ask for each API's newest version; have those ready. In a
            # thread, after start-up, so that neither waits for the other.
            newest = [(a.key, a.max_version) for a in API_TABLE.values()]
            nursery.start_soon(partial(trio.to_thread.run_sync, warm_up, newest, abandon_on_cancel=True))
            task_status.started(broker)
    finally:
        broker.close()
        log.info("broker %d stopped cleanly", broker.broker_id)


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                scope.cancel()
                return
    except RuntimeError:
        # Not the main thread (in-process test servers): the owner cancels instead.
        await trio.sleep_forever()
