"""The broker's roll flusher: a rolled segment's fsyncs in a worker thread (trio).

Kafka flushes a segment once it is rolled, from its scheduler, so the request
path never waits for the disk; this does the same for PartitionLog.roll_flusher.
The recovery point moves (FlushJob.complete) back on the event loop, only after
the fsyncs returned.
"""

from __future__ import annotations

import logging

import trio

from kwire.log.log import FlushJob

logger = logging.getLogger(__name__)


def flush_in_thread(job: FlushJob) -> None:
    """Start `job` in a worker thread; outside a trio run, run it here and now."""
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        _run_now(job)
        return
    trio.lowlevel.spawn_system_task(_flush, job, name=f"flush {job.log.directory.name}")


def _run_now(job: FlushJob) -> None:
    try:
        job.run()
    finally:
        job.complete()


async def _flush(job: FlushJob) -> None:
    try:
        # A job still running when the broker closes its logs is harmless: it syncs
        # its own fds, close() syncs everything itself, and complete() then does nothing.
        await trio.to_thread.run_sync(job.run)
    except Exception:
        logger.exception("flush of %s up to offset %d failed", job.log.directory.name, job.up_to)
    finally:
        job.complete()
