"""Restart of a broker holding many partitions: clean (SIGTERM) and unclean (SIGKILL).

    python -m bench.restart [--partitions 10000] [--quick] [--before-src DIR]

One kwire process on a fresh data dir gets `--partitions` partitions (topics of up to
1,000 partitions, made with CreateTopics) and two batches in every partition
(confluent-kafka, two rounds of one message per partition). Then:

1. SIGTERM, timed until the process exits (the clean shutdown: every log closed);
2. start again on the same data: the time from Popen until a Metadata v1 request for all
   topics lists every partition without error (the clean restart), and the broker's
   own "loaded N partitions in X s" figure;
3. SIGKILL, and start again: the same figures after a crash (the unclean restart:
   every log recovered from its recovery point);
4. SIGTERM at the end.

`--before-src DIR` runs the same scenario first with the kwire of another checkout
(e.g. `git worktree add /tmp/kwire-before <commit>`), so the section shows before and
after figures measured on the same machine in the same run. The section is written
between markers into bench/RESULTS.md (quick: RESULTS-quick.md); other sections stay.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import site
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import report, wire
from .brokers import free_port

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SECTION_BEGIN = "<!-- restart: written by python -m bench.restart -->"
SECTION_END = "<!-- /restart -->"
PER_TOPIC = 1000
START_TIMEOUT = 600.0
NOTE = (
    "A clean start writes no per-partition file: the log dir's `.kwire_clean_shutdown` names "
    "the partitions the shutdown closed and is removed (one unlink, one directory fsync) once "
    "all are open. Before, every log's `kwire-log-state` was rewritten at open (write, fsync, "
    "rename, directory fsync) to clear its clean-shutdown flag. An unclean start rescans each "
    "log from its recovery point; it no longer unlinks the active segment's index files "
    "(their first write replaces them). A clean shutdown writes the changed "
    "`kwire-log-state` files together: temp files, one filesystem sync (syncfs) that also "
    "covers every segment, the renames, a second sync; before, each log fsynced its "
    "segments and state file on its own (about four fsyncs a partition)."
)
STOP_TIMEOUT = 600.0


def log(message: str) -> None:
    print(f"[restart] {message}", flush=True)


@dataclass
class Figures:
    label: str
    source: str
    partitions: int = 0
    create_s: float = 0.0
    produce_s: float = 0.0
    stop_s: float = 0.0
    clean_ready_s: float = 0.0
    clean_loaded_s: float | None = None
    unclean_ready_s: float = 0.0
    unclean_loaded_s: float | None = None
    final_stop_s: float = 0.0
    errors: list[str] = field(default_factory=list)


class Kwire:
    """A kwire process from source tree `source` on `data_dir`."""

    def __init__(self, source: Path, data_dir: Path, log_path: Path) -> None:
        self.source = source
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start; return the time.monotonic() of the Popen."""
        cmd = [sys.executable, "-m", "kwire", "serve",
               "--override", f"listeners=PLAINTEXT://127.0.0.1:{self.port}",
               "--override", f"log.dirs={self.data_dir}",
               "--override", "group.initial.rebalance.delay.ms=0"]
        env = dict(os.environ, PYTHONPATH=str(self.source), PYTHONUNBUFFERED="1")
        if self.source != REPO:
            # The venv's editable install of this checkout would win over PYTHONPATH:
            # without site processing (-S) only the other tree and the dependencies count.
            cmd.insert(1, "-S")
            env["PYTHONPATH"] = os.pathsep.join([str(self.source), *site.getsitepackages()])
        logf = open(self.log_path, "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.source, env=env, start_new_session=True)
        logf.close()
        return t0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> float:
        """SIGTERM; seconds until the process exited."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"no exit within {STOP_TIMEOUT:.0f} s of SIGTERM") from None
        self.proc = None
        if code != 0:
            raise RuntimeError(f"exit code {code} after SIGTERM")
        return time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
            self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_all_partitions(broker: Kwire, expected: int, t0: float) -> float:
    """Seconds from `t0` until Metadata for all topics lists `expected` partitions of
    the bench topics, all without error."""
    deadline = t0 + START_TIMEOUT
    cid = 0
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every partition listed within {START_TIMEOUT:.0f} s")
        if not broker.alive():
            raise RuntimeError("broker exited during start-up; log tail:\n" + broker.log_text()[-2000:])
        try:
            with wire.connect("127.0.0.1", broker.port, timeout=30) as s:
                while True:
                    cid += 1
                    body = wire.roundtrip(s, wire.metadata_v1_request(cid), cid)
                    now = time.monotonic()
                    topics = wire.parse_metadata_v1(body)["topics"]
                    ready = sum(
                        1
                        for name, (err, parts) in topics.items()
                        if name.startswith("restart-") and err == 0
                        for _, perr, _ in parts
                        if perr == 0
                    )
                    if ready >= expected:
                        return now - t0
                    if now > deadline:
                        raise TimeoutError(f"{ready}/{expected} partitions listed")
                    time.sleep(0.02)
        except (OSError, ValueError, struct.error, ConnectionError):  # not up yet, or reset
            time.sleep(0.003)


def loaded_seconds(text: str, after: int) -> float | None:
    """The broker's own "loaded N partitions in X s" figure, from log position `after`."""
    found = re.findall(r"loaded [\d,]+ partitions in ([\d.]+) s", text[after:])
    return float(found[-1]) if found else None


def create_and_fill(broker: Kwire, partitions: int, figures: Figures) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{broker.port}"})
    topics = []
    left = partitions
    while left > 0:
        topics.append((f"restart-{len(topics)}", min(PER_TOPIC, left)))
        left -= topics[-1][1]
    t0 = time.monotonic()
    futures = admin.create_topics([NewTopic(name, n, 1) for name, n in topics], operation_timeout=300,
                                  request_timeout=600)
    for future in futures.values():
        future.result(timeout=600)
    figures.create_s = time.monotonic() - t0
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{broker.port}", "linger.ms": 100,
                         "message.timeout.ms": 600_000, "queue.buffering.max.messages": 1_000_000})
    t0 = time.monotonic()
    for round_ in range(2):
        for name, n in topics:
            for p in range(n):
                producer.produce(name, value=b"%d-%s-%d" % (round_, name.encode(), p) + b"x" * 100, partition=p)
        if producer.flush(600) != 0:
            raise RuntimeError("messages left unacknowledged")
    figures.produce_s = time.monotonic() - t0


def run_one(label: str, source: Path, partitions: int, workdir: Path) -> Figures:
    figures = Figures(label, str(source), partitions)
    data_dir = workdir / f"{label}-data"
    broker = Kwire(source, data_dir, workdir / f"{label}-broker.log")
    try:
        log(f"{label}: starting kwire from {source} on a fresh data dir")
        t0 = broker.start()
        wire.wait_first_metadata("127.0.0.1", broker.port, t0 + START_TIMEOUT, alive=broker.alive)
        create_and_fill(broker, partitions, figures)
        log(f"{label}: {partitions:,} partitions created in {figures.create_s:.1f} s, "
            f"filled in {figures.produce_s:.1f} s")
        figures.stop_s = broker.stop()
        log(f"{label}: clean shutdown took {figures.stop_s:.1f} s")
        mark = len(broker.log_text())
        t0 = broker.start()
        figures.clean_ready_s = wait_all_partitions(broker, partitions, t0)
        figures.clean_loaded_s = loaded_seconds(broker.log_text(), mark)
        log(f"{label}: clean restart: every partition listed after {figures.clean_ready_s:.2f} s "
            f"(logs loaded in {figures.clean_loaded_s} s)")
        broker.kill()
        mark = len(broker.log_text())
        t0 = broker.start()
        figures.unclean_ready_s = wait_all_partitions(broker, partitions, t0)
        figures.unclean_loaded_s = loaded_seconds(broker.log_text(), mark)
        log(f"{label}: unclean restart (after SIGKILL): every partition listed after "
            f"{figures.unclean_ready_s:.2f} s (logs loaded in {figures.unclean_loaded_s} s)")
        figures.final_stop_s = broker.stop()
    except Exception as e:  # noqa: BLE001 -- reported in the section, the run goes on
        figures.errors.append(f"{type(e).__name__}: {e}")
        log(f"{label}: error: {e}")
        broker.kill()
    return figures


def git_describe(source: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        if out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    # An exported tree (git archive) may say which commit it is.
    revision = source / "REVISION"
    return revision.read_text().strip() if revision.exists() else source.name


def section(runs: list[Figures], command: str, elapsed: float, loads: tuple[str, str]) -> str:
    def s(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f}"

    rows = [
        ("clean restart: Popen → Metadata lists every partition, s", "clean_ready_s"),
        ("clean restart: the broker's \"loaded N partitions in X s\"", "clean_loaded_s"),
        ("unclean restart (SIGKILL): Popen → every partition listed, s", "unclean_ready_s"),
        ("unclean restart: \"loaded N partitions in X s\"", "unclean_loaded_s"),
        ("clean shutdown (SIGTERM → exit), s", "stop_s"),
        ("CreateTopics of all partitions, s", "create_s"),
    ]
    header = "| figure | " + " | ".join(f"{r.label} ({git_describe(Path(r.source))})" for r in runs) + " |"
    lines = [
        SECTION_BEGIN,
        "## Restart",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC in "
        f"{elapsed:.0f} s. How to read it: [README.md](README.md#restart).",
        "",
        f"- {runs[0].partitions:,} partitions (topics of up to {PER_TOPIC:,}), two batches of one "
        "~110-byte message in each (confluent-kafka), one kwire process on real disk; SIGTERM, "
        "restart, SIGKILL, restart",
        f"- load average (1/5/15 min) before / after: {loads[0]} / {loads[1]}",
        "",
        header,
        "|---|" + "---|" * len(runs),
    ]
    for title, key in rows:
        lines.append(f"| {title} | " + " | ".join(s(getattr(r, key)) for r in runs) + " |")
    lines += ["", NOTE]
    errors = [f"- {r.label}: {e}" for r in runs for e in r.errors]
    lines += ["", "### Restart errors", "", *(errors or ["- none"]), "", SECTION_END, ""]
    return "\n".join(lines)



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partitions", type=int, help="partitions (default 10,000; quick 1,000)")
    ap.add_argument("--quick", action="store_true", help="CI-sized run: 1,000 partitions")
    ap.add_argument("--before-src", help="a checkout of an earlier kwire to measure first, as 'before'")
    ap.add_argument("--output", help="results file (default bench/RESULTS.md; quick: bench/RESULTS-quick.md)")
    ap.add_argument("--workdir", default=str(BENCH / ".work"), help="broker data and logs (default bench/.work)")
    args = ap.parse_args(argv)
    partitions = args.partitions or (1000 if args.quick else 10_000)
    workdir = Path(args.workdir) / time.strftime("%Y%m%d-%H%M%S-restart")
    workdir.mkdir(parents=True, exist_ok=True)
    output = Path(args.output) if args.output else BENCH / ("RESULTS-quick.md" if args.quick else "RESULTS.md")
    command = "python -m bench.restart" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    started = time.monotonic()
    load_before = report.loadavg()
    runs = []
    if args.before_src:
        runs.append(run_one("before", Path(args.before_src).resolve(), partitions, workdir))
    runs.append(run_one("now", REPO, partitions, workdir))
    elapsed = time.monotonic() - started
    (workdir / "results.json").write_text(json.dumps([asdict(r) for r in runs], indent=1))
    text = section(runs, command, elapsed, (load_before, report.loadavg()))
    print(text)
    report.splice_section(output, text, SECTION_BEGIN, SECTION_END)
    log(f"done in {elapsed:.0f} s; wrote the Restart section of {output}")
    return 1 if any(r.errors for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
