"""The HTTP listener: an ASGI app over route handlers, served by hypercorn on trio.

A route handler is `async def route(broker, request) -> HttpResponse | None`; None
means "not mine" and the next route is asked. The routes, in order: /health and
/metrics (here), the admin endpoint (kwire.http.admin), the web console
(kwire.http.console).
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import trio

from kwire.config import parse_http_listeners

if TYPE_CHECKING:
    from kwire.broker import Broker

log = logging.getLogger(__name__)

# Request bodies are small JSON documents (admin requests); more is refused with 413.
MAX_REQUEST_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self) -> Any:
        """The body as JSON; ValueError with a message if it is not."""
        try:
            return json.loads(self.body or b"null")
        except ValueError as e:
            raise ValueError(f"the request body is not JSON: {e}") from None


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, value: Any, status: int = 200) -> HttpResponse:
        return cls(status, json.dumps(value).encode(), "application/json")

    @classmethod
    def error(cls, status: int, message: str) -> HttpResponse:
        return cls.json({"error": message}, status)


Route = Callable[["Broker", HttpRequest], Awaitable[HttpResponse | None]]


async def health(broker: Broker, request: HttpRequest) -> HttpResponse | None:
    """GET /health: 200 while the broker serves (a load balancer's or an orchestrator's
    probe); 503 with the reason while it shuts down, or in a cluster while it has no
    ZooKeeper connection (its session lost or at risk: no ISR change, no registration)."""
    if request.path != "/health":
        return None
    if request.method not in ("GET", "HEAD"):
        return HttpResponse.error(405, "use GET")
    body: dict[str, Any] = {"status": "ok", "broker_id": broker.broker_id}
    reasons = []
    server = getattr(broker, "services", {}).get("kafka_server")
    if server is not None and server.draining:
        reasons.append("shutting down")
    cluster = getattr(broker, "cluster", None)
    if cluster is not None:
        connected = cluster.session.connected
        body["zookeeper"] = "connected" if connected else "disconnected"
        if not connected:
            reasons.append("no ZooKeeper connection")
    if reasons:
        body.update(status="unavailable", reasons=reasons)
        return HttpResponse.json(body, 503)
    return HttpResponse.json(body)


async def metrics(broker: Broker, request: HttpRequest) -> HttpResponse | None:
    """GET /metrics: Prometheus' text format (kwire.metrics)."""
    if request.path != "/metrics":
        return None
    if request.method not in ("GET", "HEAD"):
        return HttpResponse.error(405, "use GET")
    from kwire.metrics import exposition_in_thread

    body, content_type = await exposition_in_thread(broker)
    return HttpResponse(200, body, content_type)


def default_routes() -> list[Route]:
    routes: list[Route] = [health, metrics]
    for name in ("kwire.http.admin", "kwire.http.console"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        routes.append(module.route)
    return routes


class HttpApp:
    """The ASGI application: one request at a time through the routes."""

    def __init__(self, broker: Broker, routes: list[Route] | None = None) -> None:
        self.broker = broker
        self.routes = default_routes() if routes is None else routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        response = await self._answer(scope, receive)
        headers = [
            (b"content-type", response.content_type.encode()),
            (b"content-length", str(len(response.body)).encode()),
        ]
        headers += [(k.encode(), v.encode()) for k, v in response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: dict[str, Any], receive: Any) -> HttpResponse:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return HttpResponse.error(400, "disconnected")
            body += message.get("body", b"")
            if len(body) > MAX_REQUEST_BODY:
                return HttpResponse.error(
                    413, f"request bodies are limited to {MAX_REQUEST_BODY} bytes"
                )
            if not message.get("more_body", False):
                break
        request = HttpRequest(
            method=scope["method"],
            path=scope["path"],
            query=parse_qs(scope.get("query_string", b"").decode("latin-1")),
            body=bytes(body),
        )
        try:
            for route in self.routes:
                response = await route(self.broker, request)
                if response is not None:
                    return response
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            return HttpResponse.error(500, "internal error (see the broker log)")
        return HttpResponse.error(404, f"no such page: {request.path}")


async def serve_http(
    broker: Broker,
    app: HttpApp | None = None,
    *,
    task_status: trio.TaskStatus[list[tuple[str, str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve http.listeners until cancelled; started() with ("http", host, port) of each
    bound address (a port 0 is resolved)."""
    # Imported here: a broker without http.listeners never loads hypercorn.
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    listeners = parse_http_listeners(broker.config["http.listeners"])
    config.bind = [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in listeners]
    config.accesslog = None
    config.errorlog = logging.getLogger("kwire.http.hypercorn")
    config.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serve, app or HttpApp(broker), config)
        # The web console's lag history: sampled while the listener serves.
        from kwire.http.console import sample_lag_history

        await nursery.start(sample_lag_history, broker)
        task_status.started([_bound(b) for b in binds])


def _bound(bind: str) -> tuple[str, str, int]:
    """hypercorn's "http://127.0.0.1:8080" as ("http", "127.0.0.1", 8080)."""
    scheme, _, rest = bind.partition("://")
    host, _, port = rest.rpartition(":")
    return scheme, host.strip("[]"), int(port)
