"""`kwire dump-log FILE...`: the batches of a log segment, or the entries of its
indexes, read from the files alone (no broker), in kafka-dump-log.sh's format.

A .log segment: one line per batch with its header fields, whether its CRC-32C holds
(isvalid), and with --deep-iteration or --print-data-log one `|` line per record
(decompressed with kwire's codecs). A damaged batch is shown and the walk goes on to
the next one (its length is still read); bytes after the last whole batch are
reported. .index and .timeindex files print their entries and are checked against
the segment next to them. Exit 1 if anything is damaged."""

from __future__ import annotations

import argparse
import mmap
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kwire.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
_BASE_AND_LENGTH = struct.Struct(">qi")


def register(commands: Any) -> None:
    dump = commands.add_parser(
        "dump-log",
        help="print a log segment's batches or an index's entries (offline)",
        description="Print the batches of log segments (.log) or the entries of their "
        "indexes (.index, .timeindex), as kafka-dump-log.sh; reads the files only.",
    )
    dump.add_argument("files", nargs="+", metavar="FILE")
    dump.add_argument(
        "--deep-iteration",
        action="store_true",
        help="also one line per record, compressed batches decompressed",
    )
    dump.add_argument(
        "--print-data-log",
        action="store_true",
        help="records with their key and payload (implies --deep-iteration)",
    )
    dump.set_defaults(run=run_dump_log)


def run_dump_log(args: argparse.Namespace) -> int:
    code = EXIT_OK
    for name in args.files:
        path = Path(name)
        print(f"Dumping {path}")
        try:
            if path.suffix == LOG_SUFFIX:
                ok = dump_segment(
                    path, args.deep_iteration or args.print_data_log, args.print_data_log
                )
            elif path.suffix == INDEX_SUFFIX:
                ok = dump_offset_index(path)
            elif path.suffix == TIME_INDEX_SUFFIX:
                ok = dump_time_index(path)
            else:
                print(f"Ignoring unknown file {path}", file=sys.stderr)
                continue
        except OSError as e:
            print(f"kwire: cannot read {path}: {e.strerror}", file=sys.stderr)
            code = EXIT_USAGE
            continue
        except ValueError as e:  # a file name that is no base offset
            print(f"kwire: {path}: {e}", file=sys.stderr)
            code = EXIT_USAGE
            continue
        if not ok and code == EXIT_OK:
            code = EXIT_FAILED
    sys.stdout.flush()
    return code


@contextmanager
def _mapped(path: Path) -> Iterator[memoryview]:
    """The file's bytes, mapped read-only (a segment may be a gigabyte)."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            yield memoryview(b"")
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                yield view
            finally:
                view.release()


def _base_offset(path: Path) -> int:
    """The base offset a segment's files are named after (00000000000000000042.log)."""
    try:
        return int(path.name.split(".")[0])
    except ValueError:
        raise ValueError(
            "the file name is not a base offset (as 00000000000000000000.log)"
        ) from None


# --- .log ----------------------------------------------------------------------------


def dump_segment(path: Path, deep: bool, print_data: bool) -> bool:
    """Print the segment's batches (and records); whether every batch is valid."""
    from kwire.protocol.records import (
        BATCH_HEADER_SIZE,
        LOG_OVERHEAD,
        batch_crc,
        parse_batch_header,
    )

    try:
        print(f"Log starting offset: {_base_offset(path)}")
    except ValueError:
        pass  # a copy under another name: dumped all the same
    valid = True
    out: list[str] = []
    last_offset: list[int] = []  # the previous record's offset, for the non-consecutive check
    gaps: list[tuple[int, int]] = []
    with _mapped(path) as data:
        total = len(data)
        position = 0
        while position < total:
            if total - position < LOG_OVERHEAD:
                break
            base_offset, batch_length = _BASE_AND_LENGTH.unpack_from(data, position)
            size = batch_length + LOG_OVERHEAD
            if batch_length < BATCH_HEADER_SIZE - LOG_OVERHEAD:
                print(
                    f"Invalid batch at position {position}: baseOffset: {base_offset} "
                    f"batch length {batch_length} is below the minimum "
                    f"{BATCH_HEADER_SIZE - LOG_OVERHEAD}; nothing after it can be read"
                )
                valid = False
                break
            if position + size > total:
                break  # a batch cut short: the trailing bytes below
            header = parse_batch_header(data, position)
            if header.magic != 2:
                print(
                    f"baseOffset: {base_offset} position: {position} size: {size} "
                    f"magic: {header.magic} (only magic v2 batches are read) isvalid: false"
                )
                valid = False
                position += size
                continue
            crc_ok = batch_crc(data, header) == header.crc
            valid &= crc_ok
            print(_batch_line(header, position, crc_ok))
            if deep:
                batch = data[position : position + size]
                valid &= _print_records(batch, header, print_data, out, last_offset, gaps)
                # No view into the mapping may outlive it.
                batch.release()
                sys.stdout.write("".join(out))
                out.clear()
            position += size
        trailing = total - position
    if trailing > 0:
        print(f"Found {trailing} invalid bytes at the end of {path.name}")
        valid = False
    if gaps:
        print(f"Non-consecutive offsets in {path}", file=sys.stderr)
        for first, second in gaps:
            print(f"  {first} is followed by {second}", file=sys.stderr)
    return valid


def _batch_line(header: Any, position: int, crc_ok: bool) -> str:
    from kwire import codecs
    from kwire.protocol.records import DELETE_HORIZON_FLAG

    delete_horizon = (
        f"OptionalLong[{header.base_timestamp}]"
        if header.attributes & DELETE_HORIZON_FLAG
        else "OptionalLong.empty"
    )
    codec = codecs.CODEC_NAMES.get(header.compression, f"unknown({header.compression})")
    timestamp_type = "LogAppendTime" if header.is_log_append_time else "CreateTime"
    return (
        f"baseOffset: {header.base_offset} lastOffset: {header.last_offset} "
        f"count: {header.records_count} baseSequence: {header.base_sequence} "
        f"lastSequence: {header.last_sequence} producerId: {header.producer_id} "
        f"producerEpoch: {header.producer_epoch} "
        f"partitionLeaderEpoch: {header.partition_leader_epoch} "
        f"isTransactional: {_bool(header.is_transactional)} "
        f"isControl: {_bool(header.is_control)} deleteHorizonMs: {delete_horizon} "
        f"position: {position} {timestamp_type}: {header.max_timestamp} size: {header.size} "
        f"magic: {header.magic} compresscodec: {codec} crc: {header.crc} "
        f"isvalid: {_bool(crc_ok)}"
    )


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _text(data: bytes) -> str:
    # As Kafka's StringDecoder: UTF-8, malformed bytes replaced.
    return data.decode("utf-8", "replace")


def _print_records(
    batch: memoryview,
    header: Any,
    print_data: bool,
    out: list[str],
    last_offset: list[int],
    gaps: list[tuple[int, int]],
) -> bool:
    """Append the batch's record lines to `out`; whether its records decode."""
    from kwire.protocol.records import (
        CONTROL_ABORT,
        CONTROL_COMMIT,
        InvalidBatchError,
        control_record_coordinator_epoch,
        control_record_type,
        iter_records,
    )

    timestamp_type = "LogAppendTime" if header.is_log_append_time else "CreateTime"
    try:
        for record in iter_records(batch):
            if last_offset and record.offset != last_offset[0] + 1:
                gaps.append((last_offset[0], record.offset))
            last_offset[:] = [record.offset]
            delta = record.offset - header.base_offset
            sequence = (
                -1 if header.base_sequence < 0 else (header.base_sequence + delta) % 0x80000000
            )
            key_size = -1 if record.key is None else len(record.key)
            value_size = -1 if record.value is None else len(record.value)
            line = (
                f"| offset: {record.offset} {timestamp_type}: {record.timestamp} "
                f"keySize: {key_size} valueSize: {value_size} sequence: {sequence} "
                f"headerKeys: [{','.join(key for key, _ in record.headers)}]"
            )
            if header.is_control:
                kind = control_record_type(record.key)
                if kind in (CONTROL_ABORT, CONTROL_COMMIT):
                    epoch = control_record_coordinator_epoch(record.value)
                    name = "COMMIT" if kind == CONTROL_COMMIT else "ABORT"
                    line += f" endTxnMarker: {name} coordinatorEpoch: {epoch}"
                else:
                    line += f" controlType: UNKNOWN({kind})"
            elif print_data:
                if record.key is not None:
                    line += f" key: {_text(record.key)}"
                if record.value is not None:
                    line += f" payload: {_text(record.value)}"
            out.append(line + "\n")
    except InvalidBatchError as e:
        out.append(f"| records of batch at offset {header.base_offset} cannot be read: {e}\n")
        return False
    return True


# --- .index and .timeindex -----------------------------------------------------------


def _segment_batch_offsets(index_path: Path) -> dict[int, tuple[int, int]] | None:
    """(base offset, last offset) of the batch at each position of the segment next to
    an index, or None if there is no such segment."""
    from kwire.protocol.records import BATCH_HEADER_SIZE, LOG_OVERHEAD, parse_batch_header

    log_path = index_path.with_name(index_path.name.split(".")[0] + LOG_SUFFIX)
    if not log_path.exists():
        return None
    batches: dict[int, tuple[int, int]] = {}
    with _mapped(log_path) as data:
        position = 0
        while len(data) - position >= BATCH_HEADER_SIZE:
            header = parse_batch_header(data, position)
            batches[position] = (header.base_offset, header.last_offset)
            if header.batch_length <= 0:
                break
            position += header.batch_length + LOG_OVERHEAD
    return batches


def dump_offset_index(path: Path) -> bool:
    """Print the entries of an offset index; whether each points at the start of the
    batch holding its offset (as its base offset, kwire's, or its last, Kafka's)."""
    from kwire.log.index import OffsetIndex

    base = _base_offset(path)
    path.stat()  # a missing file is an error, not an empty index
    entries = OffsetIndex.read_tail(path, sys.maxsize) or []
    if not entries:
        print(f"{path} is empty.")
        return True
    batches = _segment_batch_offsets(path)
    mismatches: list[tuple[int, int | None]] = []
    for i, (relative, position) in enumerate(entries):
        if relative == 0 and i > 0:
            break  # zero-filled space after the last entry, as Kafka stops there
        offset = base + relative
        print(f"offset: {offset} position: {position}")
        # kwire indexes a batch by its base offset, Kafka by its last: either holds.
        found = batches.get(position) if batches is not None else None
        if batches is not None and (found is None or offset not in found):
            mismatches.append((offset, found[0] if found else None))
    if mismatches:
        print(f"Mismatches in :{path}", file=sys.stderr)
        for offset, found in mismatches:
            logged = "no batch starts there" if found is None else found
            print(f"  Index offset: {offset}, log offset: {logged}", file=sys.stderr)
    return not mismatches


def dump_time_index(path: Path) -> bool:
    """Print the entries of a time index; whether their timestamps rise."""
    from kwire.log.index import TimeIndex

    base = _base_offset(path)
    path.stat()
    entries = TimeIndex.read_tail(path, sys.maxsize) or []
    if not entries:
        print(f"{path} is empty.")
        return True
    out_of_order: list[tuple[int, int]] = []
    previous = -1
    for i, (timestamp, relative) in enumerate(entries):
        if relative == 0 and i > 0:
            break
        print(f"timestamp: {timestamp} offset: {base + relative}")
        if timestamp <= previous:
            out_of_order.append((timestamp, previous))
        previous = timestamp
    if out_of_order:
        print(f"Found out of order timestamp in :{path}", file=sys.stderr)
        for timestamp, earlier in out_of_order:
            print(
                f"  Index timestamp: {timestamp}, Previously indexed timestamp: {earlier}",
                file=sys.stderr,
            )
    return not out_of_order
