"""The processes kwire.testing started and has not stopped yet, killed when the interpreter
exits: a test that forgot stop(), or dropped its Broker, Cluster or ZooKeeperServer without
closing it, must not leave servers running behind it. A strong reference to each process
(not to its owner, which may be gone by then)."""

from __future__ import annotations

import atexit
import contextlib
import subprocess
import threading

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
