"""The log cleaner's throughput, and produce throughput while it runs (issue 11).

    python -m bench.cleaner            # full run: 3 repetitions, 1,000,000 records to clean
    python -m bench.cleaner --quick    # CI-sized: 1 repetition, 100,000 records

One fresh kwire per repetition (log.cleaner.threads=1, log.cleaner.backoff.ms=100). Two
compacted topics are loaded first, untimed, with records of 100 B over 10,000 keys, while
min.compaction.lag.ms=1 day keeps the cleaner off them: *dirty-a* (N records) and
*dirty-b* (2N records, the large dirty log). Then, timed:

1. produce alone: `python -m bench`'s produce phase (bench/worker.py, acks=all) to a fresh
   topic, the cleaner idle;
2. clean: min.compaction.lag.ms=0 on dirty-a (IncrementalAlterConfigs); from the request
   until the broker's `cleaner-offset-checkpoint` reaches dirty-a's active segment. The
   broker's INFO lines of those passes give the bytes and records read and the seconds
   spent in them; /proc the broker's CPU over the window;
3. produce while cleaning: min.compaction.lag.ms=0 on dirty-b, and at once the same
   produce phase as 1 to another fresh topic, while the cleaner works through dirty-b.

The figures go to the "Cleaner" section of bench/RESULTS.md (quick: RESULTS-quick.md),
which `python -m bench` keeps. See bench/README.md.
"""

from __future__ import annotations

import argparse
import compileall
import json
import random
import re
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/cleaner.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import report  # noqa: E402
from bench.brokers import BrokerFailed, BrokerProcess, kwire_spec  # noqa: E402
from bench.run import Plan as MainPlan  # noqa: E402
from bench.run import Runner, log, quick_plan  # noqa: E402

BENCH = Path(__file__).resolve().parent
SECTION_BEGIN = "<!-- cleaner: written by python -m bench.cleaner -->"
SECTION_END = "<!-- /cleaner -->"
CHECKPOINT_FILE = "cleaner-offset-checkpoint"
DAY_MS = 24 * 3600 * 1000
# The broker's line per installed pass (kwire/log/cleaner_manager.py); its MB are MiB.
PASS_LINE = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \S+: cleaned (?P<name>\S+): offsets .*?"
    r"(?P<read>[0-9.]+) MB read, (?P<written>[0-9.]+) MB written .*? (?P<kept>\d+) of "
    r"(?P<records>\d+) records kept, (?P<seconds>[0-9.]+) s,", re.M)
PHASES = ("produce alone", "clean", "produce while cleaning")


@dataclass
class CleanerPlan:
    records: int = 1_000_000
    size: int = 100
    keys: int = 10_000
    # The large dirty log being cleaned under the produce phase is this many times larger.
    dirty_factor: int = 2
    segment_bytes: int = 8 << 20
    produce_messages: int = 1_000_000
    reps: int = 3
    acks: str = "all"
    linger_ms: int = 5
    start_timeout: float = 30.0
    load_timeout: float = 300.0
    clean_timeout: float = 300.0
    produce_timeout: float = 180.0
    quick: bool = False


def quick_cleaner_plan() -> CleanerPlan:
    q = quick_plan()
    return CleanerPlan(records=100_000, segment_bytes=1 << 20, produce_messages=q.messages, reps=1,
                       start_timeout=q.start_timeout, load_timeout=60.0, clean_timeout=60.0,
                       produce_timeout=q.produce_timeout, quick=True)


def checkpointed(data_dir: Path, topic: str) -> int | None:
    """Partition 0's first dirty offset in cleaner-offset-checkpoint (Kafka's format)."""
    try:
        lines = (data_dir / CHECKPOINT_FILE).read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines[2:]:
        parts = line.split()
        if len(parts) == 3 and parts[0] == topic and parts[1] == "0":
            return int(parts[2])
    return None


def log_bytes(directory: Path) -> int:
    total = 0
    for path in directory.glob("*.log"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # swapped away between the listing and the stat
            pass
    return total


def cleaned_to_active(data_dir: Path, topic: str) -> bool:
    """Every closed segment of the topic's partition 0 went through a pass."""
    offset = checkpointed(data_dir, topic)
    bases = [int(p.name.split(".")[0]) for p in (data_dir / f"{topic}-0").glob("*.log")]
    return offset is not None and bool(bases) and offset >= max(bases)


def passes(text: str, topic: str) -> list[dict]:
    """The broker's pass lines for the topic's partition 0."""
    out = []
    for m in PASS_LINE.finditer(text):
        if m["name"] != f"{topic}-0":
            continue
        ts = datetime.strptime(m["ts"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        out.append({"ts": ts, "read_bytes": float(m["read"]) * 1_048_576,
                    "written_bytes": float(m["written"]) * 1_048_576, "records": int(m["records"]),
                    "kept": int(m["kept"]), "seconds": float(m["seconds"])})
    return out


class CleanerRunner(Runner):
    def __init__(self, plan: CleanerPlan, workdir: Path):
        super().__init__(MainPlan(start_timeout=plan.start_timeout), [kwire_spec(None, [])], workdir)
        self.cp = plan
        self.spec = self.specs[0]

    # ---------------------------------------------------------------- the clients

    def load(self, b: BrokerProcess, topic: str, count: int) -> None:
        """The compacted topic with `count` keyed records, kept dirty (untimed)."""
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient, NewTopic

        p = self.cp
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        config = {"cleanup.policy": "compact", "segment.bytes": str(p.segment_bytes),
                  "min.compaction.lag.ms": str(DAY_MS)}
        admin.create_topics([NewTopic(topic, 1, 1, config=config)], operation_timeout=30)[topic].result(60)
        failed: list[str] = []

        def on_delivery(err, _msg) -> None:
            if err is not None and len(failed) < 5:
                failed.append(str(err))

        producer = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 20,
                             "batch.size": 1_000_000, "queue.buffering.max.messages": 500_000,
                             "delivery.report.only.error": True, "on_delivery": on_delivery})
        rng = random.Random(count)
        pad = b"v" * (p.size - 12)
        deadline = time.monotonic() + p.load_timeout
        for i in range(count):
            key = b"key-%05d" % rng.randrange(p.keys)
            while True:
                try:
                    producer.produce(topic, key=key, value=b"%011d-" % i + pad)
                    break
                except BufferError:
                    producer.poll(0.01)
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"loading {topic}: the producer's queue did not drain") from None
        left = producer.flush(max(1.0, deadline - time.monotonic()))
        if left or failed:
            raise RuntimeError(f"loading {topic}: {left} unacknowledged, failures {failed}")

    def make_cleanable(self, b: BrokerProcess, topic: str) -> None:
        from confluent_kafka.admin import (
            AdminClient,
            AlterConfigOpType,
            ConfigEntry,
            ConfigResource,
        )

        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        entry = ConfigEntry("min.compaction.lag.ms", "0", incremental_operation=AlterConfigOpType.SET)
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(30)

    def produce(self, b: BrokerProcess, topic: str) -> dict:
        p = self.cp
        return self.worker(b, "produce", {
            "topic": topic, "messages": p.produce_messages, "size": p.size, "acks": p.acks,
            "partitions": 1, "linger_ms": p.linger_ms, "create": True}, p.produce_timeout)

    # ---------------------------------------------------------------- the phases

    def clean(self, b: BrokerProcess, topic: str, during: threading.Thread | None = None) -> dict:
        """Make the topic cleanable and wait for the cleaner to reach its active segment;
        `during` (a produce phase) starts right after the request."""
        directory = b.data_dir / f"{topic}-0"
        before = log_bytes(directory)
        log_pos = b.log_size()
        cpu0, t0 = b.cpu_seconds(), time.monotonic()
        wall0 = time.time()
        self.make_cleanable(b, topic)
        if during is not None:
            during.start()
        deadline = t0 + self.cp.clean_timeout
        while not cleaned_to_active(b.data_dir, topic):
            if not b.alive():
                return {"ok": False, "error": f"broker down: {b.describe_death()}"}
            if time.monotonic() > deadline:
                return {"ok": False, "error": f"the cleaner did not reach the active segment of "
                                              f"{topic} within {self.cp.clean_timeout:.0f} s"}
            time.sleep(0.01)
        t1, cpu1 = time.monotonic(), b.cpu_seconds()
        done = passes(b.log_since(log_pos), topic)
        if not done:
            return {"ok": False, "error": f"no pass line for {topic} in the broker log"}
        read = sum(x["read_bytes"] for x in done)
        records = sum(x["records"] for x in done)
        seconds = sum(x["seconds"] for x in done)
        cpu = cpu1 - cpu0
        return {
            "ok": True, "passes": len(done), "wall_s": t1 - t0, "start_wall": wall0,
            "end_wall": done[-1]["ts"], "cleaner_s": seconds, "broker_cpu_s": cpu,
            "read_mb": read / 1e6, "records": records, "kept": done[-1]["kept"],
            "before_mb": before / 1e6, "after_mb": log_bytes(directory) / 1e6,
            "mb_per_s": read / 1e6 / seconds if seconds else None,
            "records_per_s": records / seconds if seconds else None,
            "mb_per_cpu_s": read / 1e6 / cpu if cpu > 0 else None,
            "records_per_cpu_s": records / cpu if cpu > 0 else None,
            "wall_mb_per_s": read / 1e6 / (t1 - t0),
        }

    def run_rep(self, rep: int) -> None:
        from confluent_kafka import KafkaException

        p = self.cp
        name = self.spec.name
        b = BrokerProcess(self.spec, self.workdir, f"{rep:02d}-kwire-cleaner", {
            "log.cleaner.enable": "true", "log.cleaner.threads": "1", "log.cleaner.backoff.ms": "100"})
        try:
            t = b.start(p.start_timeout)
            log(f"  kwire up on :{b.port} (pid {b.pid}) in {t * 1000:.0f} ms")
            log(f"kwire r{rep}: loading dirty-a ({p.records:,} x {p.size} B over {p.keys:,} keys) "
                f"and dirty-b ({p.records * p.dirty_factor:,})")
            self.load(b, "dirty-a", p.records)
            self.load(b, "dirty-b", p.records * p.dirty_factor)
        except (BrokerFailed, RuntimeError, KafkaException) as e:
            for phase in PHASES:
                self.record(name, phase, {"ok": False, "error": f"set-up: {e}"})
            self.stop_broker(b)
            return

        log(f"kwire r{rep}: produce alone ({p.produce_messages:,} x {p.size} B, acks={p.acks})")
        res = self.produce(b, f"plain-{rep}-alone")
        self.record(name, "produce alone", res)
        if res.get("ok"):
            log(f"  {res['msgs_per_s']:,.0f} msgs/s  broker {res['cpu_s_per_m']:.2f} CPU s/M")

        log(f"kwire r{rep}: clean dirty-a")
        res = self.clean(b, "dirty-a")
        self.record(name, "clean", res)
        if res.get("ok"):
            log(f"  {res['read_mb']:.0f} MB, {res['records']:,} records in {res['passes']} pass(es): "
                f"{res['mb_per_s']:.1f} MB/s, {res['records_per_s']:,.0f} records/s in the cleaner; "
                f"{res['broker_cpu_s']:.2f} broker CPU s over {res['wall_s']:.2f} s")

        log(f"kwire r{rep}: produce while the cleaner cleans dirty-b")
        out: dict = {}
        window: dict = {}

        def produce_phase() -> None:
            window["start"] = time.time()
            out.update(self.produce(b, f"plain-{rep}-cleaning"))
            window["end"] = time.time()

        thread = threading.Thread(target=produce_phase, daemon=True)
        cleaning = self.clean(b, "dirty-b", during=thread)
        thread.join(p.produce_timeout + 30)
        if out.get("ok") and cleaning.get("ok"):
            # The produce's timed window ends at its flush, just before the worker exits.
            start = window["end"] - out["seconds"]
            overlap = max(0.0, min(cleaning["end_wall"], window["end"]) - max(cleaning["start_wall"], start))
            out["overlap"] = overlap / out["seconds"]
            out["clean_records_per_s"] = cleaning["records_per_s"]
            log(f"  {out['msgs_per_s']:,.0f} msgs/s  broker {out['cpu_s_per_m']:.2f} CPU s/M; the "
                f"cleaner ran over {out['overlap'] * 100:.0f}% of it ({cleaning['wall_s']:.1f} s "
                f"for {cleaning['records']:,} records)")
        elif out.get("ok"):
            out = {"ok": False, "error": f"cleaning dirty-b: {cleaning.get('error')}"}
        elif not out:
            out = {"ok": False, "error": "the produce phase did not finish"}
        self.record(name, "produce while cleaning", out)
        if not b.alive():
            self.error(name, f"the broker died during the repetition ({b.describe_death()})")
            self.stop_broker(b, known_dead=True)
        else:
            self.stop_broker(b)

    def run(self) -> None:
        for rep in range(self.cp.reps):
            self.run_rep(rep)


def _median(results: list[dict] | None, key: str) -> float | None:
    vals = [r[key] for r in results or () if r.get("ok") and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def section(plan: CleanerPlan, results: dict[str, list[dict]], errors: list[str], elapsed: float,
            command: str, load: tuple[str, str], version: str) -> str:
    """The "Cleaner" section of the results file, between its markers."""
    def cell(phase: str, key: str, dec: int, scale: float = 1) -> str:
        rs = results.get(phase)
        if not rs:
            return "—"
        v = _median(rs, key)
        if v is None:
            return "ERROR"
        ok = sum(1 for r in rs if r.get("ok"))
        return report.fmt(v, scale, dec) + (f" ({ok}/{len(rs)} ok)" if ok < len(rs) else "")

    alone, during = _median(results.get("produce alone"), "msgs_per_s"), _median(
        results.get("produce while cleaning"), "msgs_per_s")
    ratio = f"{during / alone:.2f}" if alone and during is not None else "—"
    rows = [
        f"| cleaner throughput (time in its passes) | MB/s read | {cell('clean', 'mb_per_s', 1)} |",
        f"| | records/s read | {cell('clean', 'records_per_s', 0)} |",
        f"| per broker CPU second (one core) | MB read / CPU s | {cell('clean', 'mb_per_cpu_s', 1)} |",
        f"| | records read / CPU s | {cell('clean', 'records_per_cpu_s', 0)} |",
        f"| cleaning, request to checkpoint | wall s | {cell('clean', 'wall_s', 2)} |",
        f"| | broker CPU s | {cell('clean', 'broker_cpu_s', 2)} |",
        f"| | passes | {cell('clean', 'passes', 0)} |",
        f"| the log (closed segments and active) | MB before | {cell('clean', 'before_mb', 1)} |",
        f"| | MB after | {cell('clean', 'after_mb', 2)} |",
        f"| | records read / kept | {cell('clean', 'records', 0)} / {cell('clean', 'kept', 0)} |",
        f"| produce alone, acks={plan.acks} | msgs/s | {cell('produce alone', 'msgs_per_s', 0)} |",
        f"| | broker CPU s / M msgs | {cell('produce alone', 'cpu_s_per_m', 2)} |",
        f"| produce while cleaning a {plan.records * plan.dirty_factor:,}-record log | msgs/s | "
        f"{cell('produce while cleaning', 'msgs_per_s', 0)} |",
        f"| | broker CPU s / M msgs | {cell('produce while cleaning', 'cpu_s_per_m', 2)} |",
        f"| | share of the produce window the cleaner ran, % | "
        f"{cell('produce while cleaning', 'overlap', 0, 100)} |",
        f"| | while cleaning / alone | {ratio} |",
    ]
    out = [
        SECTION_BEGIN,
        "## Cleaner: log compaction throughput",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC "
        f"in {elapsed:.0f} s; {version}. How to read it: [README.md](README.md#cleaner).",
        "",
        f"- {'quick' if plan.quick else 'full'} run: {plan.reps} repetition(s), one fresh kwire per "
        "repetition with `log.cleaner.threads=1`, `log.cleaner.backoff.ms=100`; figures are medians",
        f"- the logs to clean: one partition, `cleanup.policy=compact`, `segment.bytes={plan.segment_bytes}`, "
        f"{plan.records:,} records (the produce phase's: {plan.records * plan.dirty_factor:,}) of "
        f"{plan.size} B over {plan.keys:,} keys, uncompressed, loaded while `min.compaction.lag.ms` "
        "kept them dirty; cleaning starts when IncrementalAlterConfigs sets it to 0",
        f"- produce: the phase of `python -m bench` (confluent-kafka {report.versions([])['confluent-kafka']}): "
        f"{plan.produce_messages:,} messages of {plan.size} B to a fresh 1-partition topic, "
        f"acks={plan.acks}, linger.ms={plan.linger_ms}, batch.size=1000000",
        f"- load average (1/5/15 min) before / after: {load[0]} / {load[1]}",
        "",
        "| what | figure | kwire |",
        "|---|---|---|",
        *rows,
        "",
        "The cleaner's MB/s and records/s are the bytes and records its passes read (their "
        "INFO lines), over the seconds those passes took in the cleaner's thread (offset map, "
        "rewrite, fsync). Per broker CPU second divides the same by the broker process's CPU "
        "time (/proc, all threads) from the IncrementalAlterConfigs request to the checkpoint "
        "reaching the active segment, so it includes choosing the log, installing the "
        "segments and the idle broker. The active segment is never cleaned: *MB after* holds "
        "it. The produce rows are the same client and settings, on the same broker, with the "
        "cleaner idle and then working through the larger log; the share of the window tells "
        "how much of the produce phase the cleaning covered, and the broker CPU per million "
        "messages while cleaning includes the cleaner's own (one process). The cleaner's "
        "thread runs Python and shares the interpreter lock with the event loop that "
        "serves the producer.",
        "",
        "### Cleaner errors",
        "",
        *report._listed(errors),
        "",
        SECTION_END,
        "",
    ]
    return "\n".join(out)



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cleaner", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-sized run (100,000 records, 1 repetition)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    ap.add_argument("--records", type=int, help="records of the log to clean (default 1,000,000; quick 100,000)")
    ap.add_argument("--output", help="results file (default bench/RESULTS.md; quick: bench/RESULTS-quick.md)")
    ap.add_argument("--workdir", default=str(BENCH / ".work"), help="broker data and logs (default bench/.work)")
    ap.add_argument("--fail-on-error", action="store_true", help="exit 1 on any error (quick: always)")
    args = ap.parse_args(argv)
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        print("confluent_kafka is missing: pip install -r bench/requirements.txt", file=sys.stderr)
        return 2
    plan = quick_cleaner_plan() if args.quick else CleanerPlan()
    if args.reps:
        plan.reps = args.reps
    if args.records:
        plan.records = args.records
    compileall.compile_dir(str(BENCH.parent / "kwire"), quiet=1)
    workdir = Path(args.workdir) / (time.strftime("%Y%m%d-%H%M%S") + "-cleaner")
    workdir.mkdir(parents=True, exist_ok=True)
    output = Path(args.output) if args.output else BENCH / ("RESULTS-quick.md" if plan.quick else "RESULTS.md")
    log(f"plan: {json.dumps(asdict(plan))}; logs in {workdir}")
    load_before = report.loadavg()
    t0 = time.monotonic()
    runner = CleanerRunner(plan, workdir)
    try:
        runner.run()
    except KeyboardInterrupt:
        log("interrupted; writing what was measured")
    elapsed = time.monotonic() - t0
    results = runner.results["kwire"]
    (workdir / "results.json").write_text(json.dumps(
        {"plan": asdict(plan), "results": results, "events": runner.events}, indent=1, default=str))
    errors = runner.errors()
    command = " ".join(["python -m bench.cleaner", *(argv if argv is not None else sys.argv[1:])])
    text = section(plan, results, errors, elapsed, command, (load_before, report.loadavg()),
                   runner.spec.version())
    report.splice_section(output, text, SECTION_BEGIN, SECTION_END)
    print(text)
    log(f"done in {elapsed:.0f} s; wrote the Cleaner section of {output}")
    for e in errors:
        log("  ERROR " + e.splitlines()[0][:300])
    if args.fail_on_error or plan.quick:
        return 1 if errors else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
