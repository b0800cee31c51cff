"""Small per-partition state files, written atomically, and the leader epoch cache.

* `leader-epoch-checkpoint`: Kafka's format (version line, entry count, then
  "epoch start_offset" lines): the first offset of each leader epoch, which
  OffsetForLeaderEpoch answers from and truncation trims.
* `kwire-log-state`: "key value" lines: log start offset, recovery point (the
  offset up to which the log is flushed; segments below it need no recovery
  scan), high watermark, current leader epoch, and a clean-shutdown flag set
  by close(). It is trusted only with the broker's word: the log dir's
  `.kwire_clean_shutdown` naming the partition (then it is left as is at open,
  and the marker's removal withdraws the trust); a log opened on its own clears
  it at open instead (PartitionLog.open).

Every write goes to a temp file, is fsynced, renamed over the old one and the
directory fsynced, so a crash leaves either the old or the new file.
"""

from __future__ import annotations

import ctypes
import os
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

TMP_SUFFIX = ".tmp"
LEADER_EPOCH_FILE = "leader-epoch-checkpoint"
STATE_FILE = "kwire-log-state"
_VERSION = 0

UNDEFINED_EPOCH = -1
UNDEFINED_EPOCH_OFFSET = -1


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def sync_filesystem(path: Path) -> None:
    """Flush every file of the filesystem holding `path` to disk (Linux syncfs; else
    sync): one call in place of an fsync per file, for a shutdown closing thousands."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc is not None and _libc.syncfs(fd) == 0:
            return
        os.sync()
    finally:
        os.close(fd)


def write_all_atomically(files: list[tuple[Path, bytes]], root: Path) -> None:
    """write_atomically for many files at once, as crash-safe and with two filesystem
    syncs in all: every temp file written, synced (and with them any other data
    written before), renamed over its file, and the renames synced."""
    for path, data in files:
        with open(path.with_name(path.name + TMP_SUFFIX), "wb") as f:
            f.write(data)
    sync_filesystem(root)
    for path, _ in files:
        os.replace(path.with_name(path.name + TMP_SUFFIX), path)
    if files:
        sync_filesystem(root)


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syncfs.argtypes = [ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


_libc = _load_libc()


@dataclass
class LogState:
    log_start_offset: int = 0
    recovery_point: int = 0
    high_watermark: int = 0
    # A new partition's first leader epoch is 0, as in Kafka.
    leader_epoch: int = 0
    clean_shutdown: bool = False

    @classmethod
    def read(cls, directory: Path) -> LogState | None:
        path = directory / STATE_FILE
        try:
            lines = path.read_text(encoding="ascii").splitlines()
        except FileNotFoundError:
            return None
        if not lines or lines[0].strip() != str(_VERSION):
            raise ValueError(f"{path}: unknown version {lines[:1]}")
        values = dict(line.split(" ", 1) for line in lines[1:] if line.strip())
        return cls(
            log_start_offset=int(values.get("log_start_offset", 0)),
            recovery_point=int(values.get("recovery_point", 0)),
            high_watermark=int(values.get("high_watermark", 0)),
            leader_epoch=int(values.get("leader_epoch", 0)),
            clean_shutdown=values.get("clean_shutdown", "0").strip() == "1",
        )

    def write(self, directory: Path) -> None:
        write_atomically(directory / STATE_FILE, self.encode())

    def encode(self) -> bytes:
        text = (
            f"{_VERSION}\n"
            f"log_start_offset {self.log_start_offset}\n"
            f"recovery_point {self.recovery_point}\n"
            f"high_watermark {self.high_watermark}\n"
            f"leader_epoch {self.leader_epoch}\n"
            f"clean_shutdown {int(self.clean_shutdown)}\n"
        )
        return text.encode("ascii")


class LeaderEpochCache:
    """(leader epoch, start offset) entries, epochs and offsets both rising (Kafka's
    LeaderEpochFileCache)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LEADER_EPOCH_FILE
        self.entries: list[tuple[int, int]] = []
        try:
            lines = self.path.read_text(encoding="ascii").splitlines()
        except FileNotFoundError:
            return
        if len(lines) < 2 or lines[0].strip() != str(_VERSION):
            raise ValueError(f"{self.path}: unknown format")
        count = int(lines[1])
        for line in lines[2 : 2 + count]:
            epoch, offset = line.split()
            self.entries.append((int(epoch), int(offset)))

    def _save(self) -> None:
        body = "".join(f"{epoch} {offset}\n" for epoch, offset in self.entries)
        write_atomically(self.path, f"{_VERSION}\n{len(self.entries)}\n{body}".encode("ascii"))

    @property
    def latest_epoch(self) -> int:
        return self.entries[-1][0] if self.entries else UNDEFINED_EPOCH

    def assign(self, epoch: int, start_offset: int) -> None:
        """Record that `epoch` starts at `start_offset`, if it is a new, higher epoch."""
        if epoch < 0:
            return
        if self.entries:
            last_epoch, last_offset = self.entries[-1]
            if epoch <= last_epoch:
                return
            if start_offset < last_offset:
                # A new epoch cannot start below the previous one: that one is stale.
                self.entries = [e for e in self.entries if e[1] < start_offset]
        self.entries.append((epoch, start_offset))
        self._save()

    def end_offset_for(self, epoch: int, log_end_offset: int) -> tuple[int, int]:
        """OffsetForLeaderEpoch: (largest epoch <= `epoch`, first offset after it)."""
        if epoch == UNDEFINED_EPOCH or not self.entries:
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        if epoch == self.latest_epoch:
            return epoch, log_end_offset
        i = bisect_right(self.entries, epoch, key=lambda e: e[0])
        if i == len(self.entries):
            return UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET
        higher_start = self.entries[i][1]
        if i == 0:
            return epoch, higher_start
        return self.entries[i - 1][0], higher_start

    def truncate_from_end(self, end_offset: int) -> None:
        """Drop epochs starting at or after `end_offset` (log truncated there)."""
        kept = [e for e in self.entries if e[1] < end_offset]
        if kept != self.entries:
            self.entries = kept
            self._save()

    def truncate_from_start(self, start_offset: int) -> None:
        """Log start moved to `start_offset`: older epochs go, the one spanning it starts there."""
        i = bisect_right(self.entries, start_offset, key=lambda e: e[1])
        if i == 0:
            return
        epoch, offset = self.entries[i - 1]
        kept = [(epoch, max(offset, start_offset))] + self.entries[i:]
        if kept != self.entries:
            self.entries = kept
            self._save()

    def clear(self) -> None:
        if self.entries:
            self.entries = []
            self._save()
