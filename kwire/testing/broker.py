"""`Broker`: a real kwire broker process (`python -m kwire serve`) for a test, in a temp dir.

Listeners on 127.0.0.1 port 0 (the broker picks, and prints what it got in its ready line),
the HTTP listener with the admin endpoint on, so that faults can be injected
(`inject_fault`). Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kwire.testing._processes import ProcessService

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
ADMIN_TIMEOUT = 10.0

# Printed by `kwire serve` once every listener is bound (kwire/cli/serve.py).
READY_LINE = re.compile(r"^kwire broker (?P<id>-?\d+) listening on (?P<listeners>.+)$", re.M)
LISTENER = re.compile(r"^(?P<name>[A-Za-z0-9_]+)://(?P<host>\[[^\]]*\]|[^:]*):(?P<port>\d+)$")

# Overrides every test broker gets unless the test sets them: consumer groups form at once
# rather than after Kafka's 3 s wait for more members (Kafka's own test harnesses do the same).
TEST_DEFAULTS: dict[str, str] = {"group.initial.rebalance.delay.ms": "0"}


class BrokerStartError(RuntimeError):
    """The broker exited or did not print its ready line in time; the message has its log."""


class AdminError(RuntimeError):
    """The admin endpoint refused a request: `status` is the HTTP status (400: bad input,
    404: http.admin.enable is off or no such rule), the message the broker's reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def config_value(value: object) -> str:
    """A Python value as a broker config value: True -> "true", lists joined by commas."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(config_value(v) for v in value)
    return str(value)


class Broker(ProcessService):
    """A kwire broker subprocess on 127.0.0.1, for tests.

        with Broker() as broker:
            Producer({"bootstrap.servers": broker.bootstrap})

    `config` holds broker config overrides by Kafka's names (values str, int or bool).
    `directory`: where the data (`data/`) and the log (`broker.log`) go; a temp dir, removed
    by close() (or leaving the `with` block), if not given. start() waits for the ready
    line; stop() is SIGTERM (a clean shutdown), kill() SIGKILL (a crash), restart() starts
    again on the same ports with the same data.
    """

    kind = "kwire broker"
    not_ready = "not listening"

    def __init__(
        self,
        config: Mapping[str, object] | None = None,
        *,
        directory: str | os.PathLike[str] | None = None,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
        python: str | None = None,
    ) -> None:
        self.config = {**TEST_DEFAULTS, **{k: config_value(v) for k, v in (config or {}).items()}}
        self._own_directory = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="kwire-broker-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(self.config.get("log.dirs") or self.directory / "data")
        self.log_path = self.directory / "broker.log"
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.python = python or sys.executable
        self.process: subprocess.Popen[bytes] | None = None
        self.broker_id: int | None = None
        # Listener name -> (host, port) as the last start bound them; a restart asks for the
        # same ports again.
        self.listeners: dict[str, tuple[str, int]] = {}
        # Seconds from exec to the ready line, per start.
        self.start_seconds: list[float] = []

    # ---- addresses ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The Kafka listener's port (the first listener that is not HTTP)."""
        return self._kafka_listener()[1]

    @property
    def host(self) -> str:
        return self._kafka_listener()[0]

    @property
    def bootstrap(self) -> str:
        """`host:port` for bootstrap.servers."""
        host, port = self._kafka_listener()
        return f"{host}:{port}"

    @property
    def http_url(self) -> str:
        """`http://host:port` of the HTTP listener (/health, /metrics, /admin)."""
        if "http" not in self.listeners:
            raise RuntimeError("the broker has no HTTP listener (http.listeners is empty)")
        host, port = self.listeners["http"]
        return f"http://{host}:{port}"

    def _kafka_listener(self) -> tuple[str, int]:
        for name, address in self.listeners.items():
            if name != "http":
                return address
        raise RuntimeError("the broker has not started (no listener bound yet)")

    # ---- life cycle ---------------------------------------------------------------------

    def _overrides(self) -> dict[str, str]:
        overrides = {
            "listeners": "PLAINTEXT://127.0.0.1:0",
            "http.listeners": "http://127.0.0.1:0",
            "http.admin.enable": "true",
            "log.dirs": str(self.data_dir),
            **self.config,
        }
        if self.listeners:
            # A restart: the ports of the first start, which clients (and the other brokers
            # of a cluster) know this broker by.
            overrides["listeners"] = _with_ports(overrides["listeners"], self.listeners)
            overrides["http.listeners"] = _with_ports(overrides["http.listeners"], self.listeners)
        return overrides

    def start(self) -> Broker:
        """Start the broker and wait until it listens (BrokerStartError otherwise)."""
        if self.running:
            return self
        # -P: the kwire installed in this environment, never a `kwire` directory that
        # happens to be in the current one.
        args = [self.python, "-P", "-m", "kwire", "serve"]
        for key, value in self._overrides().items():
            args += ["--override", f"{key}={value}"]
        offset, began = self._launch(args)
        match = self._wait_for_line(READY_LINE, offset, began, BrokerStartError)
        self.start_seconds.append(time.monotonic() - began)
        self.broker_id = int(match["id"])
        self.listeners = {}
        for entry in match["listeners"].split(", "):
            m = LISTENER.match(entry.strip())
            if m is not None:
                self.listeners[m["name"]] = (m["host"].strip("[]"), int(m["port"]))
        return self

    def log_text(self, tail: int | None = None) -> str:
        """The broker's output (every start, appended), or its last `tail` characters."""
        text = self._read_log()
        return text if tail is None else text[-tail:]

    # ---- fault injection (the admin endpoint: kwire.http.admin) -------------------------

    def inject_fault(
        self,
        api: str | int,
        count: int = 1,
        *,
        error: str | int | None = None,
        delay_ms: int | None = None,
        drop_connection: bool = False,
    ) -> dict[str, Any]:
        """The next `count` requests of `api` (Kafka's name, "Produce", or key, 0) answer
        `error` (a Kafka error name, "NOT_LEADER_OR_FOLLOWER", or code), wait `delay_ms`
        first, or lose their connection. The rule as the broker holds it."""
        spec: dict[str, Any] = {"api": api, "count": count}
        if error is not None:
            spec["error"] = error
        if delay_ms is not None:
            spec["delay_ms"] = delay_ms
        if drop_connection:
            spec["drop_connection"] = True
        return self._admin("POST", "/admin/faults", spec)

    def faults(self) -> list[dict[str, Any]]:
        """The active fault rules, oldest first, with their remaining counts."""
        return self._admin("GET", "/admin/faults")["faults"]

    def clear_faults(self) -> int:
        """Remove every fault rule; how many there were."""
        return self._admin("DELETE", "/admin/faults")["cleared"]

    def remove_fault(self, rule_id: int) -> dict[str, Any]:
        """Remove one rule (by the id inject_fault returned); the rule removed."""
        return self._admin("DELETE", f"/admin/faults/{int(rule_id)}")["removed"]

    def _admin(self, method: str, path: str, body: object = None) -> Any:
        # urllib, imported here: the plugin imports this module in every pytest run.
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.http_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        # No proxy: the broker is on loopback whatever http_proxy says.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=ADMIN_TIMEOUT) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace") or e.reason
            raise AdminError(e.code, str(message)) from None


def _with_ports(listeners: str, bound: Mapping[str, tuple[str, int]]) -> str:
    """`listeners` with each port 0 replaced by the port that listener got before."""
    out = []
    for entry in listeners.split(","):
        entry = entry.strip()
        m = LISTENER.match(entry)
        if m is not None and m["port"] == "0" and m["name"] in bound:
            entry = f"{m['name']}://{m['host']}:{bound[m['name']][1]}"
        out.append(entry)
    return ",".join(out)
