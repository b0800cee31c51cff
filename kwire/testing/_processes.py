"""The processes kwire.testing started and has not stopped yet, killed when the interpreter
exits: a test that forgot stop(), or dropped its Broker, Cluster or ZooKeeperServer without
closing it, must not leave servers running behind it. A strong reference to each process
(not to its owner, which may be gone by then)."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Self

_lock = threading.Lock()
_started: set[subprocess.Popen[bytes]] = set()


def track(process: subprocess.Popen[bytes]) -> None:
    with _lock:
        _started.add(process)


def untrack(process: subprocess.Popen[bytes]) -> None:
    with _lock:
        _started.discard(process)


@atexit.register
def _kill_leftovers() -> None:
    with _lock:
        leftovers = list(_started)
        _started.clear()
    for process in leftovers:
        if process.poll() is None:
            process.kill()
    for process in leftovers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)


class Service:
    """What Broker, Cluster and Mirror share: start() in a `with` block, close() on leaving
    it (stop(), then the directory removed if it was a temp dir of the object's own)."""

    directory: Path
    _own_directory: bool

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def close(self) -> None:
        """Stop, and remove the directory if it was a temp dir of this object's."""
        self.stop()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()  # no `with` body, no __exit__: the temp dir would stay
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProcessService(Service):
    """A Service that is one subprocess: stop() is SIGTERM (a clean shutdown), kill()
    SIGKILL (a crash), restart() stop() then start()."""

    process: subprocess.Popen[bytes] | None
    stop_timeout: float
    start_timeout: float
    log_path: Path
    # For start errors: "kwire broker", and what it is not yet ("listening").
    kind: str
    not_ready: str

    def _launch(self, args: list[str]) -> tuple[int, float]:
        """Start `args` with stdout and stderr appended to log_path; (where this run's
        output starts in the log, when it was started)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            began = time.monotonic()
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        track(self.process)
        return offset, began

    def _read_log(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _wait_for_line(
        self, pattern: re.Pattern[str], offset: int, began: float, error: type[Exception]
    ) -> re.Match[str]:
        """Wait until this run's output has a line matching `pattern` (its ready line);
        `error` with the log's tail if the process exits first or start_timeout passes."""
        assert self.process is not None
        deadline = began + self.start_timeout
        while True:
            text = self._read_log(offset)
            match = pattern.search(text)
            if match is not None:
                return match
            code = self.process.poll()
            if code is not None:
                untrack(self.process)
                self.process = None
                raise error(
                    f"{self.kind} exited with code {code} at start; log ({self.log_path}):\n"
                    + text[-5000:]
                )
            if time.monotonic() >= deadline:
                self.kill()
                raise error(
                    f"{self.kind} {self.not_ready} within {self.start_timeout:g}s; "
                    f"log ({self.log_path}):\n" + text[-5000:]
                )
            time.sleep(0.01)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        """SIGTERM and wait; SIGKILL if it takes longer than stop_timeout. The exit code
        (0: clean), None if it was not running."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait(self.stop_timeout)
        self.process = None
        untrack(process)
        return code

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or closed."""
        process = self.process
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait(self.stop_timeout)
            self.process = None
            untrack(process)

    def restart(self) -> Self:
        """Stop (if running) and start again, with the same directory (and ports)."""
        self.stop()
        return self.start()
