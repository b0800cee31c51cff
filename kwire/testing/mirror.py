"""`Mirror`: a real `kwire mirror` process (MirrorMaker 2) for a test, with its properties
file and log in a temp dir. Standard library only.

    with Broker() as a, Broker() as b, Mirror(mirror_properties({"a": a, "b": b})) as mirror:
        ...  # a's topics appear on b as a.<topic>
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kwire.testing._processes import ProcessService, untrack

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

# Printed by kwire.mirror.runner once every flow has started.
READY_LINE = re.compile(
    r"^kwire mirror running: (?P<flows>[^;\n]+)(?:; metrics on (?P<url>\S+))?$", re.M
)


class MirrorStartError(RuntimeError):
    """The mirror exited or did not print its ready line in time; the message has its log."""


def mirror_properties(
    clusters: Mapping[str, Any],
    flows: Iterable[str] = ("a->b",),
    **settings: object,
) -> dict[str, str]:
    """MM2 properties for test clusters: `clusters` maps an alias to a bootstrap string or
    anything with `.bootstrap` (a Broker, a Cluster); each flow ("a->b") is enabled; the
    replication factors are 1 (test clusters may have one broker), metrics are served on a
    port picked at start. `settings` are more properties, with `_` for `.` in their keyword
    (or pass a dict with ** for names that keywords cannot spell)."""
    properties = {"clusters": ", ".join(clusters)}
    for alias, cluster in clusters.items():
        bootstrap = cluster if isinstance(cluster, str) else cluster.bootstrap
        properties[f"{alias}.bootstrap.servers"] = bootstrap
    for flow in flows:
        properties[f"{flow}.enabled"] = "true"
    properties.update(
        {
            "replication.factor": "1",
            "offset-syncs.topic.replication.factor": "1",
            "checkpoints.topic.replication.factor": "1",
            "offset.storage.replication.factor": "1",
            "http.listeners": "http://127.0.0.1:0",
        }
    )
    for key, value in settings.items():
        name = key if "." in key or "->" in key else key.replace("_", ".")
        if isinstance(value, bool):
            value = "true" if value else "false"
        properties[name] = str(value)
    return properties


class Mirror(ProcessService):
    """A `kwire mirror` subprocess. start() waits for its ready line; stop() is SIGTERM (the
    progress is stored), kill() SIGKILL (a crash), restart() starts it again with the same
    properties (and the same log file, appended)."""

    kind = "kwire mirror"
    not_ready = "not running"

    def __init__(
        self,
        properties: Mapping[str, object],
        *,
        directory: str | os.PathLike[str] | None = None,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
        args: Iterable[str] = (),
        python: str = sys.executable,
    ) -> None:
        self.properties = {key: str(value) for key, value in properties.items()}
        self._own_directory = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="kwire-mirror-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path = self.directory / "mm2.properties"
        self.log_path = self.directory / "mirror.log"
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.args = list(args)
        self.python = python
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_url: str | None = None
        self.start_seconds: list[float] = []

    def write_properties(self) -> None:
        self.config_path.write_text(
            "".join(f"{key} = {value}\n" for key, value in self.properties.items())
        )

    def start(self, wait: bool = True) -> Mirror:
        """Start the mirror; with `wait`, until its ready line (MirrorStartError otherwise)."""
        if self.running:
            return self
        self.write_properties()
        args = [self.python, "-P", "-m", "kwire", "mirror", str(self.config_path), *self.args]
        offset, began = self._launch(args)
        if wait:
            match = self._wait_for_line(READY_LINE, offset, began, MirrorStartError)
            self.start_seconds.append(time.monotonic() - began)
            self.metrics_url = match["url"]
        return self

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; its exit code."""
        assert self.process is not None
        code = self.process.wait(timeout)
        untrack(self.process)
        self.process = None
        return code

    def log_text(self, tail: int | None = None, offset: int = 0) -> str:
        """The mirror's output from `offset` (every start, appended), or its last `tail`
        lines."""
        text = self._read_log(offset)
        if tail is not None:
            return "\n".join(text.splitlines()[-tail:])
        return text

    def metrics(self) -> str:
        """The text of /metrics (needs http.listeners, which mirror_properties sets)."""
        from urllib.request import urlopen

        assert self.metrics_url, "no http.listeners"
        with urlopen(self.metrics_url, timeout=10) as response:
            return response.read().decode()
