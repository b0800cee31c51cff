"""`kwire dump-log` on segments a real broker wrote (read after it stopped): every
batch of every compression with its header fields, the records of --print-data-log
(keys, payloads, headers, transaction markers), the .index and .timeindex entries
checked against the batches; then copies with a flipped byte (isvalid: false, the
walk goes on, exit 1) and a cut tail, and the error paths."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from cli_helpers import failed, ok, run_cli
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT = 30
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
TOPIC = "dumped"


def fields(line: str) -> dict[str, str]:
    """`name: value` pairs of a kafka-dump-log.sh line."""
    return dict(re.findall(r"(\w+): (\S+)", line))


def batch_lines(out: str) -> list[dict[str, str]]:
    return [fields(line) for line in out.splitlines() if line.startswith("baseOffset: ")]


def record_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("| offset: ")]


def write_segment(broker: Any) -> Path:
    """A segment with one batch per codec (3 records each, keyed, with a header),
    a committed and an aborted transaction; the broker stopped, its files closed."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    # An index entry for every batch.
    config = {"index.interval.bytes": "1"}
    admin.create_topics([NewTopic(TOPIC, 1, 1, config=config)])[TOPIC].result(TIMEOUT)
    for codec in CODECS:
        # One batch per codec: flush() sends at once, the long linger only keeps a busy
        # machine from sending the first record alone (a CI run split gzip's in two at 50 ms).
        producer = Producer(
            {"bootstrap.servers": broker.bootstrap, "compression.type": codec, "linger.ms": 5000}
        )
        for i in range(3):
            value = f"{codec} value {i} " + "z" * 100
            producer.produce(TOPIC, value.encode(), f"{codec}-{i}".encode(), headers=[("h", b"1")])
        assert producer.flush(TIMEOUT) == 0
    for commit in (True, False):
        producer = Producer(
            {"bootstrap.servers": broker.bootstrap, "transactional.id": f"txn-{commit}"}
        )
        producer.init_transactions(TIMEOUT)
        producer.begin_transaction()
        producer.produce(TOPIC, b"in a transaction", b"t")
        # Sent before the abort (which would otherwise drop it unsent, and write no marker).
        assert producer.flush(TIMEOUT) == 0
        if commit:
            producer.commit_transaction(TIMEOUT)
        else:
            producer.abort_transaction(TIMEOUT)
    broker.stop()
    [segment] = (broker.data_dir / f"{TOPIC}-0").glob("*.log")
    return segment


def test_a_real_segment_and_its_indexes(broker: Any) -> None:
    segment = write_segment(broker)
    out = ok(run_cli("dump-log", str(segment), "--print-data-log"))
    assert out.startswith(f"Dumping {segment}\nLog starting offset: 0\n")
    batches = batch_lines(out)
    data = [b for b in batches if b["isControl"] == "false"]
    assert [b["compresscodec"] for b in data[:5]] == list(CODECS)
    assert all(b["isvalid"] == "true" and b["magic"] == "2" for b in batches)
    for i, batch in enumerate(data[:5]):
        assert (batch["baseOffset"], batch["lastOffset"], batch["count"]) == (
            str(3 * i),
            str(3 * i + 2),
            "3",
        )
        assert batch["deleteHorizonMs"] == "OptionalLong.empty" and "CreateTime" in batch
    # Positions and sizes tile the file.
    end = 0
    for batch in batches:
        assert int(batch["position"]) == end
        end += int(batch["size"])
    assert end == segment.stat().st_size

    records = record_lines(out)
    for i, codec in enumerate(CODECS):
        for j in range(3):
            line = records[3 * i + j]
            assert line.startswith(f"| offset: {3 * i + j} CreateTime: ")
            assert f" keySize: {len(codec) + 2} valueSize: " in line
            assert line.endswith(
                f"headerKeys: [h] key: {codec}-{j} payload: {codec} value {j} " + "z" * 100
            )
    # The two transactions: a data batch and a marker each.
    transactional = [b for b in batches if b["isTransactional"] == "true"]
    assert [b["isControl"] for b in transactional] == ["false", "true", "false", "true"]
    assert all(int(b["producerId"]) >= 0 and b["baseSequence"] != "-1" for b in transactional[::2])
    markers = [line for line in records if "endTxnMarker" in line]
    assert [fields(m)["endTxnMarker"] for m in markers] == ["COMMIT", "ABORT"]
    assert all("payload" not in m for m in markers)

    # Deep iteration alone: the record lines without keys and payloads.
    deep = ok(run_cli("dump-log", str(segment), "--deep-iteration"))
    assert len(record_lines(deep)) == len(records) and " payload: " not in deep
    # Without either: batches only.
    assert record_lines(ok(run_cli("dump-log", str(segment)))) == []

    index = segment.with_suffix(".index")
    entries = [fields(line) for line in ok(run_cli("dump-log", str(index))).splitlines()[1:]]
    starts = {b["position"]: b["baseOffset"] for b in batches}
    assert len(entries) >= 5
    for entry in entries:
        assert starts[entry["position"]] == entry["offset"]

    time_index = segment.with_suffix(".timeindex")
    lines = ok(run_cli("dump-log", str(time_index))).splitlines()[1:]
    stamps = [int(fields(line)["timestamp"]) for line in lines]
    assert stamps == sorted(stamps) and stamps
    assert {fields(line)["offset"] for line in lines} <= {b["baseOffset"] for b in batches}


def test_damaged_copies(broker: Any, tmp_path: Path) -> None:
    segment = write_segment(broker)
    batches = batch_lines(ok(run_cli("dump-log", str(segment))))
    data = bytearray(segment.read_bytes())

    # A byte of the second batch's records flipped: its CRC fails, the others hold.
    flipped = tmp_path / "flipped" / segment.name
    flipped.parent.mkdir()
    second = int(batches[1]["position"])
    data[second + 70] ^= 0xFF
    flipped.write_bytes(data)
    result = run_cli("dump-log", str(flipped), "--print-data-log")
    assert result.returncode == 1, result.stderr
    damaged = batch_lines(result.stdout)
    assert len(damaged) == len(batches)
    assert [b["isvalid"] for b in damaged] == ["true", "false"] + ["true"] * (len(batches) - 2)
    assert damaged[1]["crc"] == batches[1]["crc"]
    assert "Traceback" not in result.stderr

    # A tail cut in the middle of the last batch: reported, exit 1.
    cut = tmp_path / "cut" / segment.name
    cut.parent.mkdir()
    shutil.copy(segment, cut)
    with open(cut, "r+b") as f:
        f.truncate(segment.stat().st_size - 10)
    result = run_cli("dump-log", str(cut))
    assert result.returncode == 1
    assert len(batch_lines(result.stdout)) == len(batches) - 1
    last_size = int(batches[-1]["size"])
    assert f"Found {last_size - 10} invalid bytes at the end of {segment.name}" in result.stdout


def test_error_paths(tmp_path: Path) -> None:
    failed(run_cli("dump-log", str(tmp_path / "00000000000000000000.log")), 2, "cannot read")
    odd = tmp_path / "notes.index"
    odd.write_bytes(b"\0" * 8)
    failed(run_cli("dump-log", str(odd)), 2, "not a base offset")
    other = tmp_path / "x.txt"
    other.write_text("hello")
    result = run_cli("dump-log", str(other))
    assert result.returncode == 0 and "Ignoring unknown file" in result.stderr
    empty = tmp_path / "00000000000000000000.log"
    empty.write_bytes(b"")
    assert batch_lines(ok(run_cli("dump-log", str(empty)))) == []
    failed(run_cli("dump-log"), 2, "required")


def test_an_index_entry_off_its_batch(broker: Any, tmp_path: Path) -> None:
    segment = write_segment(broker)
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(segment, copy / segment.name)
    index = bytearray(segment.with_suffix(".index").read_bytes())
    assert ok(run_cli("dump-log", str(segment.with_suffix(".index"))))
    # The second entry's position (bytes 12-15) one byte off: no batch starts there.
    position = int.from_bytes(index[12:16], "big")
    index[12:16] = (position + 1).to_bytes(4, "big")
    (copy / segment.with_suffix(".index").name).write_bytes(index)
    result = run_cli("dump-log", str(copy / segment.with_suffix(".index").name))
    failed(result, 1, "Mismatches in :", "no batch starts there")
    assert f"position: {position + 1}" in result.stdout
