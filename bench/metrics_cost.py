"""The broker CPU that Prometheus metrics cost on the produce path.

    python -m bench.metrics_cost --before-src DIR [--reps 5] [--messages 200000] [--quick]

`DIR` is a checkout of kwire before the metrics hooks (e.g. `git worktree add
/tmp/kwire-before <commit>`, or `git archive <commit> | tar -x -C DIR` with a REVISION
file naming the commit and the built kwire/protocol/_recordcheck*.so copied in: without
it kwire validates records in Python). Both trees run
the bench's produce phase (`python -m bench.worker produce`: 100-byte messages, no
compression, one partition, acks=1; once with linger.ms=5 as the main bench, once with
linger.ms=0, many small requests: the worst case for per-request counting) against a fresh
broker with an HTTP listener; the current tree is also scraped (GET /metrics) every second
during the run. Runs are interleaved (before, now, before, now ...). The figure is the
broker's CPU (utime+stime from /proc, read by the worker at the edges of its timed window)
per million messages; the table shows the medians and now/before - 1. Then, to see the
per-request cost without client batching (linger.ms=0 runs switch between a fast and a
slow batching regime) or the machine's noise, each tree serves the same Produce requests
through `kwire.handlers.dispatch` in a process of its own, interleaved.

The section is written between markers into bench/RESULTS.md (quick: RESULTS-quick.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import site
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import report
from .restart import REPO, Kwire, git_describe

BENCH = Path(__file__).resolve().parent
SECTION_BEGIN = "<!-- metrics: written by python -m bench.metrics_cost -->"
SECTION_END = "<!-- /metrics -->"
READY_HTTP = re.compile(r"^kwire broker -?\d+ listening on .*\bhttp://127\.0\.0\.1:(\d+)", re.M)
START_TIMEOUT = 60.0
WORKLOADS = {"linger.ms=5": 5, "linger.ms=0": 0}
NOTE = (
    "How to read it: the end-to-end rows are the whole broker (network, client batching, the "
    "scrapes); their runs vary by a few hundredths of a CPU second per million messages on a "
    "small machine shared with other work, so a few percent either way is noise, and with "
    "linger.ms=0 librdkafka batches in one of two regimes from run to run (about 4,000 or "
    "6,700 Produce requests per million messages, seen in the scrapes), which moves the broker's "
    "CPU by a fifth: that row compares batching, not metrics. The share table is the measure "
    "of the metrics' cost: below 1 % of the broker's CPU, and below 3.3 % even when all of the "
    "in-process difference is charged to them. The "
    "in-process row isolates what the hooks add to each Produce request: the request counted "
    "with its API, error and latency bucket, and per partition the records and bytes in. A "
    "scrape is about 1 ms of broker CPU for a few partitions; for 10,000 partitions about "
    "20 ms on the event loop (the snapshot) and 300 ms in a worker thread (the text)."
)


class KwireWithHttp(Kwire):
    """restart.Kwire with an HTTP listener on a port it picks (read from the ready line)."""

    def start(self) -> float:
        cmd = [sys.executable, "-m", "kwire", "serve",
               "--override", f"listeners=PLAINTEXT://127.0.0.1:{self.port}",
               "--override", "http.listeners=http://127.0.0.1:0",
               "--override", f"log.dirs={self.data_dir}"]
        env = dict(os.environ, PYTHONPATH=str(self.source), PYTHONUNBUFFERED="1")
        if self.source != REPO:
            # As restart.Kwire: without site processing the venv's editable install of
            # this checkout does not shadow the other tree.
            cmd.insert(1, "-S")
            env["PYTHONPATH"] = os.pathsep.join([str(self.source), *site.getsitepackages()])
        t0 = time.monotonic()
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.source, env=env, start_new_session=True)
        return t0


# In a child process on one tree: CPU microseconds per Produce request (one batch of 100
# records of 100 bytes, acks=1) through kwire.handlers.dispatch on an in-process broker:
# the same requests on both trees, without client batching or scheduling noise.
DISPATCH_SCRIPT = """
import datetime, io, shutil, struct, sys, tempfile, time
import trio
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.serial import entity_writer
from kio.static.primitive import Records
from kwire.broker import Broker
from kwire.config import BrokerConfig
from kwire.handlers import RequestContext, dispatch
from kwire.protocol.records import build_batch

requests = int(sys.argv[1])
log_dir = tempfile.mkdtemp(prefix="kwire-metrics-cost-")
broker = Broker(BrokerConfig({"log.dirs": log_dir}))
broker.open()
broker.create_topic("t", 1)
batch = bytes(build_batch([(None, b"x" * 100) for _ in range(100)]))
request = ProduceRequest(transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=30), topic_data=(
    TopicProduceData(name="t", partition_data=(PartitionProduceData(index=0, records=Records(batch)),)),))
body = io.BytesIO()
entity_writer(ProduceRequest)(body, request)
payload = struct.pack(">hhih", 0, 9, 1, 4) + b"test" + b"\\x00" + body.getvalue()

async def main():
    for _ in range(2000):  # warm-up: handler import, first segment
        await dispatch(RequestContext(broker, "127.0.0.1:1", "PLAINTEXT"), bytearray(payload))
    t0 = time.process_time()
    for _ in range(requests):
        await dispatch(RequestContext(broker, "127.0.0.1:1", "PLAINTEXT"), bytearray(payload))
    print((time.process_time() - t0) / requests * 1e6)

trio.run(main)
broker.close()
shutil.rmtree(log_dir)
"""


def dispatch_cost(source: Path, requests: int) -> float:
    """CPU microseconds per Produce request through `dispatch` on the kwire of `source`."""
    cmd = [sys.executable, "-c", DISPATCH_SCRIPT, str(requests)]
    env = dict(os.environ, PYTHONPATH=str(source))
    if Path("/dev/shm").is_dir():
        env["TMPDIR"] = "/dev/shm"  # the log on tmpfs: no disk writeback in the figure
    if source != REPO:
        cmd.insert(1, "-S")
        env["PYTHONPATH"] = os.pathsep.join([str(source), *site.getsitepackages()])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=source)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-1000:])
    return float(out.stdout.split()[-1])


# In a child process on the now tree: CPU nanoseconds of the hooks themselves, each
# timed alone: what dispatch adds per request (two clock reads, the answer counted by
# API, error and latency bucket) and what produce adds per partition appended (the
# records and bytes in, the answer's first error).
HOOK_SCRIPT = """
import time, timeit
from kwire.handlers import RequestContext, _answered
from kwire.handlers.produce import first_error
from kwire.protocol.produce_response import PartitionProduceResult
from kwire.stats import BrokerStats

class Broker:
    stats = BrokerStats()

ctx = RequestContext(Broker(), "127.0.0.1:1", "PLAINTEXT")
ctx.api_key, ctx.error = 0, 0
clock = time.perf_counter
messages_in, bytes_in = Broker.stats.messages_in, Broker.stats.bytes_in

def per_request():
    _answered(ctx, clock())

topics = [("t", [PartitionProduceResult(0, 0, 0)])]

def per_partition():
    messages_in["t"] += 100
    bytes_in["t"] += 10_000
    ctx.error = first_error(topics)

def empty():
    pass

n = 500_000
base = min(timeit.repeat(empty, number=n, repeat=7, timer=time.process_time))
for hook in (per_request, per_partition):
    print((min(timeit.repeat(hook, number=n, repeat=7, timer=time.process_time)) - base) / n * 1e9)
"""


def hook_cost(source: Path) -> tuple[float, float]:
    """CPU ns of the hooks of `source`: per request, per partition appended."""
    env = dict(os.environ, PYTHONPATH=str(source))
    out = subprocess.run([sys.executable, "-c", HOOK_SCRIPT], capture_output=True, text=True,
                         timeout=300, env=env, cwd=source)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-1000:])
    per_request, per_partition = (float(x) for x in out.stdout.split())
    return per_request, per_partition


def request_counts(url: str) -> tuple[int, int]:
    """Requests answered in all, and Produce requests, from one scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    total = produce = 0
    for family in text_string_to_metric_families(text):
        if family.name != "kwire_requests":
            continue
        for sample in family.samples:
            if sample.name == "kwire_requests_total":
                total += int(sample.value)
                if sample.labels["api"] == "Produce":
                    produce += int(sample.value)
    return total, produce


def log(message: str) -> None:
    print(f"[metrics_cost] {message}", flush=True)


@dataclass
class Run:
    label: str
    workload: str
    cpu_s_per_m: float = 0.0
    msgs_per_s: float = 0.0
    scrapes: int = 0
    # From a scrape after the run (now only): requests answered, of them Produce.
    requests: int = 0
    produce_requests: int = 0
    error: str = ""


@dataclass
class Scraper:
    """GET /metrics every second until stopped; counts the answers."""

    url: str
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    response.read()
                self.answered += 1
            except OSError as e:
                self.failures.append(repr(e))

    def stop(self) -> None:
        self._stop.set()


def http_port(broker: Kwire, deadline: float) -> int:
    while time.monotonic() < deadline:
        if not broker.alive():
            raise RuntimeError("broker exited at start-up:\n" + broker.log_text()[-2000:])
        found = READY_HTTP.search(broker.log_text())
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise RuntimeError("no ready line with the HTTP listener")


def run_one(label: str, source: Path, workload: str, messages: int, rep: int, workdir: Path, scrape: bool) -> Run:
    result = Run(label, workload)
    base = workdir / f"{label}-{rep}-{WORKLOADS[workload]}"
    base.mkdir(parents=True, exist_ok=True)
    broker = KwireWithHttp(source, base / "data", base / "broker.log")
    broker.start()
    scraper: Scraper | None = None
    try:
        port = http_port(broker, time.monotonic() + START_TIMEOUT)
        assert broker.proc is not None
        if scrape:
            scraper = Scraper(f"http://127.0.0.1:{port}/metrics")
            threading.Thread(target=scraper.run, daemon=True).start()
        args = {
            "bootstrap": f"127.0.0.1:{broker.port}", "topic": "metrics-cost", "messages": messages,
            "size": 100, "partitions": 1, "acks": "1", "linger_ms": WORKLOADS[workload],
            "timeout": 300, "broker_pid": broker.proc.pid,
        }
        out = subprocess.run([sys.executable, "-m", "bench.worker", "produce", json.dumps(args)],
                             capture_output=True, text=True, timeout=360, cwd=REPO)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        figures = json.loads(line[7:]) if line else {"ok": False, "error": out.stderr[-500:]}
        if not figures.get("ok"):
            result.error = figures.get("error", "?")
        else:
            result.cpu_s_per_m = figures["cpu_s_per_m"]
            result.msgs_per_s = figures["msgs_per_s"]
        if scrape:
            result.requests, result.produce_requests = request_counts(f"http://127.0.0.1:{port}/metrics")
    finally:
        if scraper is not None:
            scraper.stop()
            result.scrapes = scraper.answered
            if scraper.failures:
                result.error = (result.error + "; " if result.error else "") + f"scrape failed: {scraper.failures[0]}"
        broker.stop()
        # A run's log is up to a GB: only the broker's own log is kept.
        shutil.rmtree(base / "data", ignore_errors=True)
    return result


def section(
    runs: list[Run],
    dispatch: dict[str, list[float]],
    hooks: tuple[float, float] | None,
    messages: int,
    command: str,
    elapsed: float,
    loads: tuple[str, str],
    sources: dict[str, str],
) -> str:
    lines = [
        SECTION_BEGIN,
        "## Metrics: CPU cost on the produce path",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC in {elapsed:.0f} s.",
        "",
        "- the bench's produce phase (100-byte messages, 1 partition, acks=1, no compression) against one "
        "fresh kwire with an HTTP listener; `now` is also scraped (GET /metrics) every second",
        "- figure: broker CPU seconds per million messages (median of the repetitions; lower is better)",
        f"- before: {sources['before']}; now: {sources['now']}",
        f"- load average (1/5/15 min) before / after: {loads[0]} / {loads[1]}",
        "",
        "| workload | before, CPU s / M msgs | now + scraping, CPU s / M msgs | cost | before msgs/s | now msgs/s |"
        " scrapes |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload in WORKLOADS:
        before = [r for r in runs if r.workload == workload and r.label == "before" and not r.error]
        now = [r for r in runs if r.workload == workload and r.label == "now" and not r.error]
        if not before or not now:
            lines.append(f"| {workload} | – | – | – | – | – | – |")
            continue
        b = statistics.median(r.cpu_s_per_m for r in before)
        n = statistics.median(r.cpu_s_per_m for r in now)
        lines.append(
            f"| {workload} | {b:.2f} | {n:.2f} | {(n / b - 1) * 100:+.1f} % "
            f"| {statistics.median(r.msgs_per_s for r in before):,.0f} "
            f"| {statistics.median(r.msgs_per_s for r in now):,.0f} | {sum(r.scrapes for r in now)} |"
        )
    if dispatch.get("before") and dispatch.get("now"):
        b, n = statistics.median(dispatch["before"]), statistics.median(dispatch["now"])
        lines += [
            "",
            "In-process, without network, client or scraping: CPU per Produce request (one batch of 100 "
            f"records of 100 bytes, acks=1, the log on tmpfs) through `kwire.handlers.dispatch`, "
            f"{len(dispatch['now'])} interleaved runs per tree (median; the fastest run in brackets):",
            "",
            "| before, µs / request | now, µs / request | cost |",
            "|---|---|---|",
            f"| {b:.1f} ({min(dispatch['before']):.1f}) | {n:.1f} ({min(dispatch['now']):.1f}) "
            f"| {(n / b - 1) * 100:+.1f} % ({(min(dispatch['now']) / min(dispatch['before']) - 1) * 100:+.1f} %) |",
        ]
    if hooks is not None:
        per_request, per_partition = hooks
        lines += [
            "",
            f"The hooks timed alone on the now tree: {per_request:.0f} ns per request answered, "
            f"{per_partition:.0f} ns per partition appended by a Produce request. Times the "
            "requests of each run (counted by its last scrape: one partition per Produce "
            "request here), against that run's broker CPU. The last column is an upper bound: "
            "all of the in-process difference per Produce request (which also holds what else "
            "changed between the trees) charged to the metrics:",
            "",
            "| workload | requests / M msgs | Produce requests / M msgs | hooks, CPU ms / M msgs "
            "| broker, CPU ms / M msgs | share | bound: the in-process difference × Produce requests |",
            "|---|---|---|---|---|---|---|",
        ]
        extra_us = (
            statistics.median(dispatch["now"]) - statistics.median(dispatch["before"])
            if dispatch.get("before") and dispatch.get("now")
            else None
        )
        for workload in WORKLOADS:
            now = [r for r in runs if r.workload == workload and r.label == "now" and not r.error and r.requests]
            if not now:
                continue
            requests = statistics.median(r.requests / messages * 1e6 for r in now)
            produce = statistics.median(r.produce_requests / messages * 1e6 for r in now)
            hooks_ms = (requests * per_request + produce * per_partition) / 1e6
            broker_ms = statistics.median(r.cpu_s_per_m for r in now) * 1000
            bound = "–" if extra_us is None else f"{produce * extra_us / 1000 / broker_ms * 100:.2f} %"
            lines.append(
                f"| {workload} | {requests:,.0f} | {produce:,.0f} | {hooks_ms:.2f} | {broker_ms:.0f} "
                f"| {hooks_ms / broker_ms * 100:.2f} % | {bound} |"
            )
    lines += ["", NOTE]
    errors = [f"- {r.label} / {r.workload}: {r.error}" for r in runs if r.error]
    lines += ["", "### Metrics cost errors", "", *(errors or ["- none"]), "", SECTION_END, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.metrics_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before-src", required=True, help="a checkout of kwire before the metrics hooks")
    ap.add_argument("--now-src", help="the checkout to measure as now (default: this one)")
    ap.add_argument("--reps", type=int, help="repetitions per tree and workload (default 5; quick 2)")
    ap.add_argument("--messages", type=int, help="messages per run (default 1,000,000; quick 200,000)")
    ap.add_argument("--quick", action="store_true", help="CI-sized run")
    ap.add_argument("--output", help="results file (default bench/RESULTS.md; quick: bench/RESULTS-quick.md)")
    ap.add_argument("--workdir", default=str(BENCH / ".work"), help="broker data and logs (default bench/.work)")
    args = ap.parse_args(argv)
    reps = args.reps or (2 if args.quick else 5)
    messages = args.messages or (200_000 if args.quick else 1_000_000)
    workdir = Path(args.workdir) / time.strftime("%Y%m%d-%H%M%S-metrics")
    workdir.mkdir(parents=True, exist_ok=True)
    output = Path(args.output) if args.output else BENCH / ("RESULTS-quick.md" if args.quick else "RESULTS.md")
    command = "python -m bench.metrics_cost" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    before_src = Path(args.before_src).resolve()
    now_src = Path(args.now_src).resolve() if args.now_src else REPO
    started = time.monotonic()
    load_before = report.loadavg()
    runs: list[Run] = []
    for rep in range(reps):
        for workload in WORKLOADS:
            for label, source in (("before", before_src), ("now", now_src)):
                run = run_one(label, source, workload, messages, rep, workdir, scrape=label == "now")
                log(f"{label} {workload} #{rep}: {run.cpu_s_per_m:.2f} CPU s/M msgs, {run.msgs_per_s:,.0f} msgs/s, "
                    f"{run.scrapes} scrapes {run.error}")
                runs.append(run)
    dispatch: dict[str, list[float]] = {"before": [], "now": []}
    for rep in range(reps * 2):
        for label, source in (("before", before_src), ("now", now_src)):
            dispatch[label].append(dispatch_cost(source, 5000 if args.quick else 10_000))
        log(f"dispatch #{rep}: before {dispatch['before'][-1]:.1f} µs, now {dispatch['now'][-1]:.1f} µs")
    elapsed = time.monotonic() - started
    (workdir / "results.json").write_text(
        json.dumps({"runs": [r.__dict__ for r in runs], "dispatch_us": dispatch}, indent=1)
    )
    sources = {"before": git_describe(before_src), "now": git_describe(now_src)}
    hooks = hook_cost(now_src)
    log(f"hooks: {hooks[0]:.0f} ns per request, {hooks[1]:.0f} ns per partition appended")
    text = section(runs, dispatch, hooks, messages, command, elapsed, (load_before, report.loadavg()), sources)
    print(text)
    report.splice_section(output, text, SECTION_BEGIN, SECTION_END)
    log(f"done in {elapsed:.0f} s; wrote the Metrics section of {output}")
    return 1 if any(r.error for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
