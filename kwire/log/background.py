"""Disk work of the broker's logs in worker threads (trio), off the event loop.

Kafka never fsyncs, unlinks or removes folders on its network threads: its log
flusher, async deletes and log manager run on their own threads. Here:

- the roll flusher (`flush_in_thread`): a rolled segment's fsyncs, as Kafka
  flushes a segment once it is rolled, from its scheduler;
- flush passes (`run_flush_jobs`): the fsyncs of many logs' FlushJobs in one
  thread call;
- `unlink_files`: the unlinks of segments whose file.delete.delay.ms is over;
- `remove_dirs_in_thread`: partition folders renamed `-delete` (topic deletion),
  removed by one background task, in batches.

The recovery point moves (FlushJob.complete) back on the event loop, only after
the fsyncs returned; state stays on the loop, only disk calls go to the threads.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

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


def run_flush_jobs(jobs: Sequence[FlushJob]) -> None:
    """Run the jobs one after the other (in a worker thread); a failed one is
    logged and left unsynced (its complete() then moves nothing)."""
    for job in jobs:
        try:
            job.run()
        except Exception:
            logger.exception("flush of %s up to offset %d failed", job.log.directory.name, job.up_to)


def unlink_files(paths: Iterable[Path]) -> None:
    """Unlink files (in a worker thread); one that cannot go is logged, the rest go."""
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            logger.warning("cannot delete %s: %s", path, e)


# The folders waiting for removal in this trio run; None while no task removes any.
_dirs_to_remove: trio.lowlevel.RunVar[list[Path] | None] = trio.lowlevel.RunVar(
    "dirs_to_remove", default=None
)


def remove_dirs_in_thread(paths: Iterable[Path]) -> None:
    """Remove folders (renamed `-delete` already) in a worker thread, by one background
    task that takes what piles up meanwhile; outside a trio run, here and now. A
    broker stopping before they are gone leaves them to the next start-up."""
    paths = list(paths)
    if not paths:
        return
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        remove_dirs(paths)
        return
    pending = _dirs_to_remove.get()
    if pending is not None:
        pending.extend(paths)
        return
    pending = paths
    _dirs_to_remove.set(pending)
    trio.lowlevel.spawn_system_task(_remove_pending, pending, name="remove deleted partition folders")


async def _remove_pending(pending: list[Path]) -> None:
    try:
        while pending:
            batch = pending[:]
            del pending[:]
            await trio.to_thread.run_sync(remove_dirs, batch)
    finally:
        # No checkpoint since the last check: nothing was added in between.
        _dirs_to_remove.set(None)


def remove_dirs(paths: Iterable[Path]) -> None:
    """shutil.rmtree each folder; what cannot go is logged (and removed at start-up)."""
    for path in paths:
        try:
            shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            logger.warning("cannot remove %s: %s", path, e)
