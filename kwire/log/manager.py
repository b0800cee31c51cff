"""LogManager: the partition logs under one log directory (Kafka's LogManager).

    manager = LogManager(log_dir, default_config, config_for=lambda topic: ...)
    manager.startup(now_ms=None)          # lock the dir, open every partition folder
    manager.get(topic, partition) -> PartitionLog | None
    manager.get_or_create(topic, partition, config=None) -> PartitionLog
    manager.delete_partition(topic, partition)
    manager.retention_pass(now_ms) -> segments deleted
    manager.flush_pass(now_ms)
    manager.close()                       # close every log, then write the clean marker

`.kwire_clean_shutdown` at the root is written after every log closed cleanly and
removed at start-up: without it, every log is recovered from its recovery point.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from kwire.log.checkpoint import fsync_dir
from kwire.log.log import LogConfig, PartitionLog, parse_partition_dir

CLEAN_SHUTDOWN_FILE = ".kwire_clean_shutdown"
LOCK_FILE = ".lock"
# Kafka renames a deleted partition's folder to `<topic>-<p>.<id>-delete` first.
_DELETE_DIR_SUFFIX = "-delete"


class LogDirLockedError(Exception):
    """Another process holds the log directory."""


class LogManager:
    def __init__(
        self,
        log_dirs: Path | str | Sequence[Path | str],
        default_config: LogConfig | None = None,
        *,
        config_for: Callable[[str], LogConfig] | None = None,
    ) -> None:
        dirs = [log_dirs] if isinstance(log_dirs, str | Path) else list(log_dirs)
        if not dirs:
            raise ValueError("no log directory")
        # One directory is enough for now: the first one.
        self.log_dir = Path(dirs[0])
        self.default_config = default_config or LogConfig()
        self._config_for = config_for
        self.logs: dict[tuple[str, int], PartitionLog] = {}
        self._lock_fd: int | None = None
        self.had_clean_shutdown = False

    def config_for(self, topic: str) -> LogConfig:
        return self._config_for(topic) if self._config_for is not None else self.default_config

    def startup(self, *, now_ms: int | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        marker = self.log_dir / CLEAN_SHUTDOWN_FILE
        clean = marker.exists()
        self.had_clean_shutdown = clean
        for child in sorted(self.log_dir.iterdir()):
            if not child.is_dir():
                continue
            if child.name.endswith(_DELETE_DIR_SUFFIX):
                shutil.rmtree(child, ignore_errors=True)
                continue
            try:
                topic, partition = parse_partition_dir(child.name)
            except ValueError:
                continue
            self.logs[(topic, partition)] = PartitionLog.open(
                child,
                self.config_for(topic),
                now_ms=now_ms,
                # Without the root marker nothing is trusted; with it, each log's own record.
                clean_shutdown=None if clean else False,
            )
        if clean:
            marker.unlink()
            fsync_dir(self.log_dir)

    def _lock(self) -> None:
        fd = os.open(self.log_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LogDirLockedError(f"{self.log_dir} is in use by another process") from None
        self._lock_fd = fd

    def get(self, topic: str, partition: int) -> PartitionLog | None:
        return self.logs.get((topic, partition))

    def get_or_create(
        self, topic: str, partition: int, config: LogConfig | None = None
    ) -> PartitionLog:
        log = self.logs.get((topic, partition))
        if log is None:
            log = PartitionLog.open(
                self.log_dir / f"{topic}-{partition}", config or self.config_for(topic)
            )
            self.logs[(topic, partition)] = log
        elif config is not None:
            log.config = config
        return log

    def delete_partition(self, topic: str, partition: int) -> None:
        log = self.logs.pop((topic, partition), None)
        if log is not None:
            log.delete()

    def retention_pass(self, now_ms: int) -> int:
        return sum(log.apply_retention(now_ms) for log in list(self.logs.values()))

    def flush_pass(self, now_ms: int) -> None:
        for log in list(self.logs.values()):
            log.maybe_flush(now_ms)

    def close(self) -> None:
        for log in self.logs.values():
            log.close()
        self.logs.clear()
        marker = self.log_dir / CLEAN_SHUTDOWN_FILE
        with open(marker, "wb") as f:
            os.fsync(f.fileno())
        fsync_dir(self.log_dir)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
