"""The HTTP listener (http.listeners): the ASGI app's routing in-process, and a real
broker serving /health on a port it picked itself."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kwire.config import parse_http_listeners
from kwire.http.server import HttpApp, HttpRequest, HttpResponse, _bound

TIMEOUT = 30


class _Broker:
    broker_id = 7


async def _call(app: HttpApp, method: str, path: str, body: bytes = b"", chunks: int = 1) -> tuple[int, dict[str, str], bytes]:
    """Drive the ASGI app as a server would: the body in `chunks` messages."""
    size = max(1, -(-len(body) // chunks))
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    incoming = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1} for i, part in enumerate(parts)
    ]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": b"a=1&a=2&b=x"}
    await app(scope, receive, send)
    start, body_message = sent
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, body_message["body"]


async def test_routes_are_asked_in_order_and_404_when_none_answers() -> None:
    seen: list[HttpRequest] = []

    async def first(broker: object, request: HttpRequest) -> HttpResponse | None:
        seen.append(request)
        return None

    async def second(broker: object, request: HttpRequest) -> HttpResponse | None:
        if request.path == "/x":
            return HttpResponse.json({"a": request.query["a"], "b": request.param("b")}, 201)
        return None

    app = HttpApp(_Broker(), [first, second])  # type: ignore[arg-type]
    status, headers, body = await _call(app, "POST", "/x", b'{"k": 1}' * 100, chunks=3)
    assert (status, body) == (201, b'{"a": ["1", "2"], "b": "x"}')
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(body))
    assert seen[0].body == b'{"k": 1}' * 100
    status, _, body = await _call(app, "GET", "/nothing")
    assert status == 404 and b"/nothing" in body


async def test_a_failing_route_answers_500_and_oversize_bodies_413(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(broker: object, request: HttpRequest) -> HttpResponse | None:
        raise RuntimeError("boom")

    app = HttpApp(_Broker(), [broken])  # type: ignore[arg-type]
    status, _, body = await _call(app, "GET", "/")
    assert status == 500 and b"boom" not in body
    assert "HTTP GET / failed" in caplog.text
    status, _, _ = await _call(app, "POST", "/", b"x" * ((1 << 20) + 1), chunks=4)
    assert status == 413


async def test_health_in_process() -> None:
    from kwire.http.server import health

    app = HttpApp(_Broker(), [health])  # type: ignore[arg-type]
    status, headers, body = await _call(app, "GET", "/health")
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body)["broker_id"] == 7
    status, _, body = await _call(app, "HEAD", "/health")
    assert (status, body) == (200, b"")
    status, _, _ = await _call(app, "POST", "/health")
    assert status == 405


@pytest.mark.parametrize(
    ("text", "bound"),
    [
        ("http://127.0.0.1:8080", [("127.0.0.1", 8080)]),
        ("http://127.0.0.1:0/, http://[::1]:9", [("127.0.0.1", 0), ("::1", 9)]),
        ("", []),
    ],
)
def test_http_listeners_parse(text: str, bound: list[tuple[str, int]]) -> None:
    assert parse_http_listeners(text) == bound


@pytest.mark.parametrize("text", ["127.0.0.1:80", "https://127.0.0.1:80", "http://127.0.0.1:99999", "http://h"])
def test_http_listeners_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_http_listeners(text)


def test_bound_addresses_from_hypercorn() -> None:
    assert _bound("http://127.0.0.1:8080") == ("http", "127.0.0.1", 8080)
    assert _bound("http://[::1]:81") == ("http", "::1", 81)


def test_bad_http_listeners_stop_start_up(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kwire", "serve", "--override", f"log.dirs={tmp_path}",
         "--override", "http.listeners=127.0.0.1:8080"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert result.returncode == 2
    assert "http.listeners" in result.stderr and "Traceback" not in result.stderr


def test_broker_serves_health_on_a_port_it_picked(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "kwire", "serve", "--override", f"log.dirs={tmp_path / 'data'}",
         "--override", "listeners=PLAINTEXT://127.0.0.1:0",
         "--override", "http.listeners=http://127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        ready = process.stdout.readline().strip()
        assert ready.startswith("kwire broker 0 listening on PLAINTEXT://127.0.0.1:")
        url = ready.rpartition(", ")[2]
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        with urllib.request.urlopen(f"{url}/health", timeout=TIMEOUT) as answer:
            assert answer.status == 200
            assert answer.read() == b'{"status": "ok", "broker_id": 0}'
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/no-such-page", timeout=TIMEOUT)
        assert refused.value.code == 404
    finally:
        process.terminate()
        code = process.wait(TIMEOUT)
    log = process.stderr.read()
    assert code == 0, log
    assert "Traceback" not in log
