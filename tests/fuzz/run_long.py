"""The long fuzz run, outside CI: a million frames across every served API version.

    python tests/fuzz/run_long.py --frames 1000000 [--seed 1] [--connections 16]

Starts a real broker (`python -m kwire serve`) on a free loopback port with a
fresh data dir, sends mutated frames (tests/fuzz/frames.py) on up to
`--connections` connections at once, each frame on its own connection, and
counts: frames, answers, closes, frames held past `--hold` seconds (a long-poll
Fetch, acks=0 Produce or a JoinGroup may rightly wait), crashes (the broker
died; it is restarted and the frame kept), hangs (a fresh ApiVersions got no
answer within 5 s), tracebacks and ERROR records in the broker log. At the end
every record batch in every stored segment must decode fully
(kwire.protocol.records.iter_records). Figures go to stdout as JSON; crashing
frames are saved under the work dir for a regression test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz.frames import MUTATIONS, SERVED, example_pool, mutate, request_frame_payload  # noqa: E402
from fuzz.wire import api_versions_answers, frame  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        self.data = work / "data"
        self.log_path = work / "broker.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            sys.executable, "-m", "kwire", "serve",
            "--override", f"listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "--override", f"log.dirs={self.data}",
            "--override", "group.initial.rebalance.delay.ms=0",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not api_versions_answers(self.port, 1):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("broker did not start")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int:
        assert self.process is not None
        self.process.terminate()
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


def check_stored_batches(data: Path) -> dict[str, int]:
    """Decode every batch of every segment file: counts of batches, records, failures."""
    from kwire.protocol.records import iter_records, parse_batch_header

    out = {"segments": 0, "batches": 0, "records": 0, "undecodable_batches": 0}
    for path in sorted(data.rglob("*.log")):
        out["segments"] += 1
        buf = path.read_bytes()
        position = 0
        while position + 61 <= len(buf):
            try:
                header = parse_batch_header(buf, position)
                size = header.size
            except Exception:
                out["undecodable_batches"] += 1
                break
            if size <= 0 or position + size > len(buf):
                break  # a preallocated or torn tail, which recovery truncates
            try:
                out["records"] += sum(1 for _ in iter_records(memoryview(buf)[position : position + size]))
                out["batches"] += 1
            except Exception as e:
                out["undecodable_batches"] += 1
                print(f"undecodable batch at {path}:{position}: {e!r}", file=sys.stderr)
            position += size
    return out


def run(frames: int, seed: int, connections: int, hold: float, work: Path, per_version: int) -> dict[str, object]:
    rng = random.Random(seed)
    t0 = time.monotonic()
    pool = example_pool(per_version, seed)
    pool_seconds = time.monotonic() - t0
    broker = Broker(work)
    broker.start()
    counts = {"frames": 0, "answered": 0, "closed": 0, "held": 0, "crashes": 0, "hangs": 0}
    by_mutation = dict.fromkeys(MUTATIONS, 0)
    crash_dir = work / "crashes"
    selector = selectors.DefaultSelector()
    # socket -> (payload, deadline, received bytes)
    inflight: dict[socket.socket, list] = {}
    started = time.monotonic()
    sent = 0

    def finish(sock: socket.socket, outcome: str) -> None:
        selector.unregister(sock)
        sock.close()
        del inflight[sock]
        counts[outcome] += 1

    def liveness(payload: bytes) -> None:
        if api_versions_answers(broker.port, 5):
            return
        if broker.alive():
            counts["hangs"] += 1
            print(f"hang after frame {sent}", file=sys.stderr)
            broker.process.kill()
            broker.process.wait()
        else:
            counts["crashes"] += 1
            print(f"crash after frame {sent}, exit {broker.process.returncode}", file=sys.stderr)
        crash_dir.mkdir(exist_ok=True)
        (crash_dir / f"frame-{sent}.bin").write_bytes(payload)
        for sock in list(inflight):
            finish(sock, "closed")
        broker.start()

    while sent < frames or inflight:
        while sent < frames and len(inflight) < connections:
            api_key, version = SERVED[rng.randrange(len(SERVED))]
            bodies = pool[(api_key, version)] or [b""]
            how = MUTATIONS[rng.randrange(len(MUTATIONS))]
            other_key = (api_key, rng.randint(0, 17))
            other = rng.choice(pool.get(other_key) or [b""])
            body = mutate(rng.choice(bodies), how, rng, other)
            payload = request_frame_payload(api_key, version, sent & 0x7FFFFFFF, body)
            by_mutation[how] += 1
            try:
                sock = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
                sock.sendall(frame(payload))
            except OSError:
                liveness(payload)
                continue
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            inflight[sock] = [payload, time.monotonic() + hold, bytearray()]
            sent += 1
            counts["frames"] = sent
            if sent % 2000 == 0:
                liveness(payload)
            if sent % 50000 == 0:
                rate = sent / (time.monotonic() - started)
                print(f"{sent} frames, {rate:.0f}/s, {counts}", file=sys.stderr, flush=True)
        for key, _ in selector.select(timeout=0.05):
            sock = key.fileobj
            state = inflight[sock]
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if not chunk:
                finish(sock, "closed")
                continue
            state[2] += chunk
            if len(state[2]) >= 4 and len(state[2]) >= 4 + struct.unpack_from(">i", state[2])[0]:
                finish(sock, "answered")
        now = time.monotonic()
        for sock, state in list(inflight.items()):
            if now > state[1]:
                finish(sock, "held")
        if inflight and not broker.alive():
            liveness(next(iter(inflight.values()))[0])
    liveness(b"")
    seconds = time.monotonic() - started
    stop_code = broker.stop()
    log = broker.log_path.read_text(errors="replace")
    result: dict[str, object] = {
        **counts,
        "seconds": round(seconds, 1),
        "frames_per_second": round(counts["frames"] / seconds),
        "pool_seconds": round(pool_seconds, 1),
        "by_mutation": by_mutation,
        "tracebacks": log.count("Traceback"),
        "error_records": sum(1 for line in log.splitlines() if " ERROR " in line or " CRITICAL " in line),
        "malformed_closes": log.count("malformed request"),
        "stop_exit_code": stop_code,
        "stored": check_stored_batches(broker.data),
        "seed": seed,
        "connections": connections,
        "log": str(broker.log_path),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--hold", type=float, default=3.0, help="seconds a frame may wait for its answer")
    parser.add_argument("--per-version", type=int, default=8, help="kio-written requests per API version")
    parser.add_argument("--work", type=Path, default=None, help="work dir (default: a new temp dir)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="kwire-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    result = run(args.frames, args.seed, args.connections, args.hold, work, args.per_version)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
