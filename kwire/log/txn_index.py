"""The aborted-transaction index of one partition's log (Kafka's .txnindex).

Every ABORT marker appended to the partition, by any path (a leader's append, a
follower's replicated append, the replay of the log after an unclean stop), adds one
entry: the producer id, the first offset of its aborted transaction, the marker's
offset (last offset) and the partition's last stable offset once the transaction
ended. A read_committed fetch answers with the entries overlapping what it returns,
and the client drops those producers' records from their first offsets on.

One text file per partition, `aborted.txnindex` in the partition's directory, one
line per entry: "producer_id first_offset last_offset last_stable_offset\\n". Lines
of three numbers (the format before the last stable offset was kept) still load,
with an unknown last stable offset. Entries are in marker-offset order, so a fetch
finds its first one by bisection; the last stable offset tells it where to stop
(no later entry's transaction starts below it), as Kafka's collectAbortedTxns does.
An append is one write of one line; truncation and trimming, which are rare,
rewrite the file atomically. A line without its newline is a torn write and is
ignored, with a warning, as is any line that does not parse.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from kwire.log.checkpoint import write_atomically
from kwire.log.log import OffsetOutOfRangeError, PartitionLog
from kwire.log.segment import CorruptRecordError
from kwire.protocol.records import BatchHeader, InvalidBatchError, control_record_type, iter_records

log = logging.getLogger(__name__)

ABORTED_TXN_INDEX_FILE = "aborted.txnindex"
# The last stable offset of an entry loaded from a three-number line.
UNKNOWN_LAST_STABLE_OFFSET = -1


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    """One aborted transaction (Kafka's AbortedTxn)."""

    producer_id: int
    first_offset: int
    # The offset of the ABORT marker.
    last_offset: int
    # The partition's last stable offset just after the marker: no transaction
    # aborted later starts below it.
    last_stable_offset: int = UNKNOWN_LAST_STABLE_OFFSET

    def line(self) -> bytes:
        return f"{self.producer_id} {self.first_offset} {self.last_offset} {self.last_stable_offset}\n".encode()


class AbortedTxnIndex:
    """The aborted transactions of one partition, in marker-offset order, and their file."""

    def __init__(self, path: Path, entries: list[AbortedTxn] | None = None) -> None:
        self.path = path
        self._entries: list[AbortedTxn] = list(entries or ())
        # The entries' last offsets, for bisection.
        self._last_offsets: list[int] = [e.last_offset for e in self._entries]

    @classmethod
    def open(cls, directory: Path, log_start_offset: int, log_end_offset: int) -> AbortedTxnIndex:
        """Load the index of the log in `directory`, keeping the entries within
        [log_start_offset, log_end_offset): below is deleted (retention, DeleteRecords),
        at or above was cut from the log (recovery of a torn tail, truncation)."""
        path = directory / ABORTED_TXN_INDEX_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls(path)
        entries, damaged = _parse(data, path)
        kept = [e for e in entries if log_start_offset <= e.last_offset < log_end_offset]
        index = cls(path, kept)
        if damaged or len(kept) != len(entries):
            if any(e.last_offset >= log_end_offset for e in entries):
                log.info("%s: dropped aborted transactions at or past the log end offset %d", path, log_end_offset)
            # Rewritten now, so that the next append does not follow a torn line.
            index._rewrite()
        return index

    # ---- reading ---------------------------------------------------------------------

    @property
    def entries(self) -> list[AbortedTxn]:
        """The entries, oldest first (a copy)."""
        return list(self._entries)

    @property
    def last_offset(self) -> int:
        """The last entry's marker offset; -1 when the index is empty."""
        return self._last_offsets[-1] if self._last_offsets else -1

    def __len__(self) -> int:
        return len(self._entries)

    def overlapping(self, start: int, end: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of the aborted transactions with records in
        [start, end): last offset >= start and first offset < end."""
        found: list[tuple[int, int]] = []
        entries = self._entries
        for i in range(bisect_left(self._last_offsets, start), len(entries)):
            entry = entries[i]
            if entry.first_offset < end:
                found.append((entry.producer_id, entry.first_offset))
            if entry.last_stable_offset >= end:
                break  # every later transaction starts at or past `end`
        return found

    # ---- changing ----------------------------------------------------------------------

    def append(self, entry: AbortedTxn) -> None:
        """Add an entry past the last one: one write of its line.

        The marker is already in the log when this is called, so a failed write is
        logged and the entry kept in memory, where fetches read it, rather than raised
        into an append that has happened."""
        if entry.last_offset <= self.last_offset:
            raise ValueError(
                f"aborted transaction at offset {entry.last_offset} is not past the index's last, {self.last_offset}"
            )
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, entry.line())
            finally:
                os.close(fd)
        except OSError:
            log.exception("cannot write %s", self.path)
        self._entries.append(entry)
        self._last_offsets.append(entry.last_offset)

    def truncate_to(self, offset: int) -> None:
        """Drop the entries whose marker is at or past `offset` (the log was truncated there)."""
        i = bisect_left(self._last_offsets, offset)
        if i < len(self._entries):
            del self._entries[i:]
            del self._last_offsets[i:]
            self._rewrite()

    def trim_before(self, log_start_offset: int) -> None:
        """Drop the entries wholly below the log start offset (retention, DeleteRecords);
        one whose records straddle it stays, for fetches from there."""
        i = bisect_left(self._last_offsets, log_start_offset)
        if i:
            del self._entries[:i]
            del self._last_offsets[:i]
            self._rewrite()

    def remove_markers(self, marker_offsets: Iterable[int]) -> int:
        """Drop the entries whose ABORT marker (last offset) is at one of these offsets:
        the log cleaner removed those markers, and their aborted records before them.
        Returns how many entries went."""
        gone = set(marker_offsets)
        if not gone:
            return 0
        kept = [e for e in self._entries if e.last_offset not in gone]
        removed = len(self._entries) - len(kept)
        if removed:
            self._entries = kept
            self._last_offsets = [e.last_offset for e in kept]
            self._rewrite()
        return removed

    def remove_missing_markers(self, has_marker: Callable[[int], bool]) -> int:
        """After an unclean stop of a compacted log: drop the entries whose marker the
        log no longer holds (a crash between a cleaner's swap, which removed markers,
        and the rewrite of this index). Returns how many entries went."""
        return self.remove_markers([e.last_offset for e in self._entries if not has_marker(e.last_offset)])

    def _rewrite(self) -> None:
        if self._entries:
            write_atomically(self.path, b"".join(e.line() for e in self._entries))
        else:
            self.path.unlink(missing_ok=True)


def marker_type(batch: bytes | bytearray | memoryview, header: BatchHeader) -> int | None:
    """The type of the transaction marker in the control batch at the start of `batch`
    (records.CONTROL_ABORT or CONTROL_COMMIT), from its record's key; `header` is that
    batch's. None, with a warning, if it holds no readable control record: its
    transaction then ends unindexed, since no abort can be shown."""
    try:
        for record in iter_records(batch):
            return control_record_type(record.key)
        problem = "no record"
    except InvalidBatchError as e:
        problem = str(e)
    log.warning("control batch at offset %d of producer %d: %s", header.base_offset, header.producer_id, problem)
    return None


def read_marker_type(partition_log: PartitionLog, header: BatchHeader) -> int | None:
    """marker_type of a control batch read back from the log (replay after a crash)."""
    try:
        batch = partition_log.read(header.base_offset, header.size).tobytes()
    except (CorruptRecordError, OffsetOutOfRangeError) as e:
        log.warning("control batch at offset %d of producer %d unreadable: %s", header.base_offset, header.producer_id, e)
        return None
    return marker_type(batch, header)


def _parse(data: bytes, path: Path) -> tuple[list[AbortedTxn], bool]:
    """The entries of an index file, and whether any of it was damaged."""
    entries: list[AbortedTxn] = []
    damaged = False
    lines = data.split(b"\n")
    if lines[-1]:
        # A write cut short by a crash: the line never got its newline.
        log.warning("%s: ignoring a torn last line %r", path, lines[-1][:80])
        damaged = True
    for number, line in enumerate(lines[:-1], 1):
        try:
            fields = [int(f) for f in line.split()]
            if len(fields) not in (3, 4):
                raise ValueError(f"{len(fields)} fields")
            entry = AbortedTxn(*fields)
            if entry.last_offset <= (entries[-1].last_offset if entries else -1) or entry.first_offset > entry.last_offset:
                raise ValueError("out of order")
        except ValueError as e:
            log.warning("%s: ignoring line %d, %r (%s)", path, number, line[:80], e)
            damaged = True
            continue
        entries.append(entry)
    return entries, damaged
