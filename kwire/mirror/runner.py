"""Run every enabled flow of an MM2 configuration in one thread until asked to stop.

The flows take turns: each `step()` polls its source for at most POLL_TIMEOUT, so an idle
flow delays a busy one by that much at most. librdkafka's own threads do the network I/O.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

from kwire.mirror.clients import MirrorError
from kwire.mirror.config import MirrorConfig, validate_flow
from kwire.mirror.flow import FlowRunner
from kwire.mirror.metrics import MirrorMetrics

log = logging.getLogger("kwire.mirror")

READY_PREFIX = "kwire mirror running: "


def run_mirror(
    config: MirrorConfig,
    should_stop: Callable[[], bool],
    targets: set[str] | None = None,
    ready_stream: TextIO = sys.stdout,
) -> None:
    """Mirror until should_stop() is true; then store the progress and close. Raises
    MirrorError when a flow cannot go on."""
    flows = [flow for flow in config.flows if targets is None or flow.target in targets]
    if not flows:
        raise MirrorError(f"no enabled flow targets {', '.join(sorted(targets or ()))}")
    for flow in flows:
        validate_flow(flow)
    for key in config.unknown_keys:
        log.warning("ignoring %s: not a setting kwire mirror knows", key)
    metrics = MirrorMetrics()
    server: Any = None
    url = ""
    if config.http_listener:
        try:
            server, url = metrics.serve(config.http_listener)
        except (ValueError, OSError) as e:
            raise MirrorError(f"http.listeners: {e}") from None
    runners = [FlowRunner(flow, metrics, should_stop) for flow in flows]
    started: list[FlowRunner] = []
    try:
        for runner in runners:
            started.append(runner)
            runner.start()
        if should_stop():
            return
        line = READY_PREFIX + ", ".join(runner.flow.name for runner in runners)
        if url:
            line += f"; metrics on {url}/metrics"
        print(line, file=ready_stream, flush=True)
        log.info("%s", line)
        # A polled batch keeps up to BATCH_SIZE records (confluent-kafka's Messages and their
        # header lists, all tracked by the collector) alive at once: at the default threshold
        # (700) every batch ran collections that walk them all, about 0.5 CPU s per million
        # records copied. At 100,000 a batch comes and goes without one (bench/mirror.py);
        # cycles are still collected.
        gc.set_threshold(100_000, *gc.get_threshold()[1:])
        while not should_stop():
            for runner in runners:
                runner.step()
    finally:
        errors = []
        for runner in started:
            try:
                runner.close()
            except Exception as e:  # close the others all the same
                errors.append(e)
                log.exception("%s: closing", runner.flow.name)
        if server is not None:
            server.shutdown()
        log.info("kwire mirror stopped")
