"""`kwire mirror`'s throughput between two kwire brokers on one machine (issue 13).

    python -m bench.mirror                          # full run: 3 repetitions, 1,000,000 records
    python -m bench.mirror --quick                  # CI-sized: 1 repetition, 100,000 records
    python -m bench.mirror --before-src DIR         # also an earlier mirror, as "before"

Per repetition one fresh source kwire (kwire.testing.Broker) is loaded, untimed, with N
records over 6 partitions: a key, a 100-byte value and one header each, as a mirror of
application data sees them. Then, per mode (at-least-once, then exactly-once with
`exactly.once.support=enabled`; the order alternates between repetitions), a fresh target
kwire and a fresh `kwire mirror` process (kwire.testing.Mirror, mirror_properties with the
MM2 defaults otherwise) copy the topic. The timed window runs from the mirror's ready line
(its clients made, the internal topics created, the partitions assigned) until the target
holds all N records:

- at-least-once: every partition's high watermark on the target (ListOffsets) equals the
  source's, i.e. every record was acknowledged by the target;
- exactly-once: the committed progress in the target's `mm2-offsets.<source>.internal`
  (read read_committed, written in the same transaction as the records) names every
  partition's last offset, i.e. the last transaction committed. The high watermarks cannot
  tell: they also count the transaction markers.

CPU is utime+stime from /proc of the mirror process and of both brokers at the window's
edges. Afterwards the target topic is read back (read_committed): each record must be there
exactly once, in its partition. With `--before-src DIR` (a `git archive` of an earlier kwire)
each mode also runs the mirror of that tree (`PYTHONPATH=DIR`, the brokers stay this tree's),
interleaved with this one's, on the same source. `--py-spy PATH` records the mirror's stacks
over each timed window with py-spy (raw, for flame graphs) into the work dir.

The figures go to the "Mirror" section of bench/RESULTS.md (quick: RESULTS-quick.md), which
`python -m bench` keeps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/mirror.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import procstat, report  # noqa: E402
from bench.brokers import kwire_spec  # noqa: E402
from bench.restart import git_describe  # noqa: E402
from bench.run import log  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SECTION_BEGIN = "<!-- mirror: written by python -m bench.mirror -->"
SECTION_END = "<!-- /mirror -->"
TOPIC = "bench"
SOURCE, TARGET = "a", "b"
REMOTE = f"{SOURCE}.{TOPIC}"
OFFSETS_TOPIC = f"mm2-offsets.{SOURCE}.internal"
MODES = {"at-least-once": {}, "exactly-once": {"exactly.once.support": "enabled"}}


@dataclass
class MirrorPlan:
    records: int = 1_000_000
    partitions: int = 6
    size: int = 100
    reps: int = 3
    load_timeout: float = 300.0
    copy_timeout: float = 300.0
    poll_interval: float = 0.02
    quick: bool = False
    before_src: str | None = None
    py_spy: str | None = None
    py_spy_args: list = field(default_factory=list)
    mirror_settings: dict = field(default_factory=dict)


def quick_mirror_plan() -> MirrorPlan:
    return MirrorPlan(records=100_000, reps=1, load_timeout=60.0, copy_timeout=120.0, quick=True)


# ---------------------------------------------------------------- the clients


def load(bootstrap: str, plan: MirrorPlan) -> dict[int, int]:
    """The source topic with plan.records records, round-robin over its partitions; the
    end offset of each partition (untimed)."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(TOPIC, plan.partitions, 1)], operation_timeout=30)[TOPIC].result(
        60
    )
    failed: list[str] = []

    def on_delivery(err, _msg) -> None:
        if err is not None and len(failed) < 5:
            failed.append(str(err))

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 500_000,
            "delivery.report.only.error": True,
            "on_delivery": on_delivery,
        }
    )
    pad = b"v" * (plan.size - 12)
    headers = [("trace", b"bench-0001")]
    deadline = time.monotonic() + plan.load_timeout
    for i in range(plan.records):
        while True:
            try:
                producer.produce(
                    TOPIC,
                    value=b"%011d-" % i + pad,
                    key=b"key-%08d" % i,
                    partition=i % plan.partitions,
                    headers=headers,
                )
                break
            except BufferError:
                producer.poll(0.01)
                if time.monotonic() > deadline:
                    raise RuntimeError("loading: the producer's queue did not drain") from None
    left = producer.flush(max(1.0, deadline - time.monotonic()))
    if left or failed:
        raise RuntimeError(f"loading: {left} unacknowledged, failures {failed}")
    ends = watermarks(bootstrap, TOPIC, plan.partitions)
    if sum(ends.values()) != plan.records:
        raise RuntimeError(
            f"loading: the source holds {sum(ends.values())} records, not {plan.records}"
        )
    return ends


def watermarks(bootstrap: str, topic: str, partitions: int, consumer=None) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    own = consumer is None
    if own:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            for p in range(partitions)
        }
    finally:
        if own:
            consumer.close()


class DoneWatcher:
    """Tells when the target holds every record (see the module's docstring)."""

    def __init__(self, bootstrap: str, ends: dict[int, int], exactly_once: bool):
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self.ends = ends
        self.exactly_once = exactly_once
        self.stored: dict[int, int] = {}
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "bench-done",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )
        if exactly_once:
            count = len(
                self.consumer.list_topics(OFFSETS_TOPIC, timeout=10)
                .topics[OFFSETS_TOPIC]
                .partitions
            )
            self.consumer.assign(
                [TopicPartition(OFFSETS_TOPIC, p, OFFSET_BEGINNING) for p in range(count)]
            )

    def done(self) -> bool:
        from kwire.mirror.offsets import decode_source_offset

        if not self.exactly_once:
            marks = watermarks("", REMOTE, len(self.ends), self.consumer)
            return all(marks[p] >= end for p, end in self.ends.items())
        for message in self.consumer.consume(10_000, 0):
            if message.error() is not None:
                continue
            decoded = decode_source_offset(message.key(), message.value())
            if decoded is None or decoded[1] is None:
                continue
            (cluster, topic, partition), offset = decoded
            if cluster == SOURCE and topic == TOPIC:
                self.stored[partition] = offset
        return all(self.stored.get(p, -1) >= end - 1 for p, end in self.ends.items())

    def close(self) -> None:
        self.consumer.close()


def read_back(bootstrap: str, ends: dict[int, int], timeout: float) -> str | None:
    """None if the target topic holds every source record exactly once, in its partition
    (read_committed); else what is wrong."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    highs = watermarks(bootstrap, REMOTE, len(ends))
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-read-back",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "fetch.queue.backoff.ms": 10,
        }
    )
    consumer.assign([TopicPartition(REMOTE, p, OFFSET_BEGINNING) for p in ends])
    seen = {p: 0 for p in ends}
    keys: set[bytes] = set()
    misplaced = no_header = 0
    remaining = {p for p in ends if highs[p] > 0}
    deadline = time.monotonic() + timeout
    try:
        while remaining and time.monotonic() < deadline:
            for m in consumer.consume(10_000, 0.2):
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        remaining.discard(m.partition())
                    continue
                p = m.partition()
                seen[p] += 1
                keys.add(m.key())
                if int(m.key()[4:]) % len(ends) != p:
                    misplaced += 1
                if not m.headers():
                    no_header += 1
    finally:
        consumer.close()
    problems = []
    if remaining:
        problems.append(
            f"partitions {sorted(remaining)} not read to the end within {timeout:.0f} s"
        )
    for p, end in ends.items():
        if seen[p] != end:
            problems.append(f"partition {p}: {seen[p]} records, the source has {end}")
    total = sum(ends.values())
    if len(keys) != total:
        problems.append(f"{len(keys)} distinct keys of {total}")
    if misplaced:
        problems.append(f"{misplaced} records in another partition than their source's")
    if no_header:
        problems.append(f"{no_header} records without their header")
    return "; ".join(problems) or None


# ---------------------------------------------------------------- one copy


def copy_run(
    plan: MirrorPlan, source, ends: dict[int, int], mode: str, src: str | None, directory: Path
) -> dict:
    """A fresh target and mirror copy the source topic; the figures of the timed window."""
    from kwire.testing import Broker, Mirror, mirror_properties

    n = sum(ends.values())
    target = Broker(directory=directory / "target")
    mirror = None
    py_spy = None
    out: dict = {"ok": False}
    try:
        target.start()
        properties = mirror_properties(
            {SOURCE: source, TARGET: target}, topics=TOPIC, **MODES[mode], **plan.mirror_settings
        )
        mirror = Mirror(properties, directory=directory / "mirror")
        saved = os.environ.get("PYTHONPATH")
        if src:
            os.environ["PYTHONPATH"] = src
        try:
            mirror.start()
        finally:
            if src:
                if saved is None:
                    os.environ.pop("PYTHONPATH", None)
                else:
                    os.environ["PYTHONPATH"] = saved
        t0 = time.monotonic()
        pids = {
            "mirror": mirror.process.pid,
            "source": source.process.pid,
            "target": target.process.pid,
        }
        cpu0 = {k: procstat.cpu_seconds(pid) for k, pid in pids.items()}
        if plan.py_spy:
            py_spy = subprocess.Popen(
                [
                    plan.py_spy,
                    "record",
                    "-p",
                    str(pids["mirror"]),
                    "-r",
                    "250",
                    "-f",
                    "raw",
                    *plan.py_spy_args,
                    "-o",
                    str(directory / "py-spy.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(directory / "py-spy.log", "wb"),
            )
        watcher = DoneWatcher(target.bootstrap, ends, mode == "exactly-once")
        deadline = t0 + plan.copy_timeout
        try:
            while not watcher.done():
                if not mirror.running:
                    raise RuntimeError(f"the mirror exited: {mirror.log_text(tail=5)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the target did not hold all {n:,} records within "
                        f"{plan.copy_timeout:.0f} s"
                    )
                time.sleep(plan.poll_interval)
        finally:
            watcher.close()
        t1 = time.monotonic()
        cpu1 = {k: procstat.cpu_seconds(pid) for k, pid in pids.items()}
        if py_spy is not None:
            py_spy.send_signal(signal.SIGINT)
            py_spy.wait(30)
            py_spy = None
        # Until the mirror stops: what it spent since its start (imports, clients) too.
        mirror_total = procstat.cpu_seconds(pids["mirror"])
        hwm = procstat.hwm_mb(pids["mirror"])
        code = mirror.stop()
        if code != 0:
            raise RuntimeError(f"the mirror exited {code} on SIGTERM: {mirror.log_text(tail=5)}")
        wall = t1 - t0
        cpu = {k: cpu1[k] - cpu0[k] for k in pids}
        out = {
            "ok": True,
            "records": n,
            "wall_s": wall,
            "records_per_s": n / wall,
            "mb_per_s": n * plan.size / 1e6 / wall,
            "start_s": mirror.start_seconds[-1],
            "mirror_cpu_s_per_m": cpu["mirror"] * 1e6 / n,
            "mirror_cpu_pct": cpu["mirror"] / wall * 100,
            "mirror_total_cpu_s": mirror_total,
            "mirror_hwm_mb": hwm,
            "source_cpu_s_per_m": cpu["source"] * 1e6 / n,
            "target_cpu_s_per_m": cpu["target"] * 1e6 / n,
        }
        problem = read_back(target.bootstrap, ends, plan.copy_timeout)
        if problem:
            out = {**out, "ok": False, "error": f"read back: {problem}"}
    except Exception as e:  # noqa: BLE001 - every failure is a row of the table
        out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    finally:
        if py_spy is not None:
            py_spy.kill()
            py_spy.wait(10)
        if mirror is not None:
            mirror.stop()
        code = target.stop()
        if code not in (0, None) and out.get("ok"):
            out = {**out, "ok": False, "error": f"the target broker exited {code} on SIGTERM"}
        shutil.rmtree(target.data_dir, ignore_errors=True)
    return out


class MirrorRunner:
    def __init__(self, plan: MirrorPlan, workdir: Path):
        self.plan = plan
        self.workdir = workdir
        self.trees = ([("before", plan.before_src)] if plan.before_src else []) + [("now", None)]
        # "mode|tree" -> results
        self.results: dict[str, list[dict]] = {}
        self.errors: list[str] = []

    def record(self, mode: str, tree: str, res: dict) -> None:
        self.results.setdefault(f"{mode}|{tree}", []).append(res)
        if not res.get("ok"):
            self.errors.append(f"{mode}, {tree}: {res.get('error')}")

    def run_rep(self, rep: int) -> None:
        from kwire.testing import Broker

        p = self.plan
        modes = list(MODES) if rep % 2 == 0 else list(MODES)[::-1]
        source = Broker(directory=self.workdir / f"{rep:02d}-source")
        try:
            source.start()
            log(
                f"r{rep}: loading {p.records:,} records of {p.size} B over {p.partitions} partitions"
            )
            t = time.monotonic()
            ends = load(source.bootstrap, p)
            log(f"  loaded in {time.monotonic() - t:.1f} s")
        except Exception as e:  # noqa: BLE001
            for mode in modes:
                for tree, _ in self.trees:
                    self.record(mode, tree, {"ok": False, "error": f"set-up: {e}"})
            source.stop()
            return
        try:
            for mode in modes:
                trees = self.trees if rep % 2 == 0 else self.trees[::-1]
                for tree, src in trees:
                    log(f"r{rep}: {mode}, {tree}")
                    res = copy_run(
                        p, source, ends, mode, src, self.workdir / f"{rep:02d}-{mode}-{tree}"
                    )
                    self.record(mode, tree, res)
                    if res.get("ok"):
                        log(
                            f"  {res['records_per_s']:,.0f} records/s in {res['wall_s']:.2f} s; CPU s/M "
                            f"records: mirror {res['mirror_cpu_s_per_m']:.2f} "
                            f"({res['mirror_cpu_pct']:.0f} % of a core), source "
                            f"{res['source_cpu_s_per_m']:.2f}, target {res['target_cpu_s_per_m']:.2f}"
                        )
                    else:
                        log(f"  ERROR {res.get('error')}")
                    if not source.running:
                        raise RuntimeError(f"the source broker died: {source.log_text(tail=5)}")
        except RuntimeError as e:
            self.errors.append(str(e))
        finally:
            code = source.stop()
            if code not in (0, None):
                self.errors.append(f"r{rep}: the source broker exited {code} on SIGTERM")
            shutil.rmtree(source.data_dir, ignore_errors=True)

    def run(self) -> None:
        for rep in range(self.plan.reps):
            self.run_rep(rep)


# ---------------------------------------------------------------- the report


def _median(results: list[dict] | None, key: str) -> float | None:
    vals = [r[key] for r in results or () if r.get("ok") and r.get(key) is not None]
    return statistics.median(vals) if vals else None


ROWS = [
    ("records/s (ready line → target holds all)", "records_per_s", 0),
    ("MB/s of values", "mb_per_s", 1),
    ("wall s", "wall_s", 2),
    ("mirror CPU s / M records", "mirror_cpu_s_per_m", 2),
    ("mirror CPU, % of one core", "mirror_cpu_pct", 0),
    ("source broker CPU s / M records", "source_cpu_s_per_m", 2),
    ("target broker CPU s / M records", "target_cpu_s_per_m", 2),
    ("mirror start (Popen → ready line), s", "start_s", 2),
    ("mirror CPU s from its start to SIGTERM", "mirror_total_cpu_s", 2),
    ("mirror peak RSS (VmHWM), MB", "mirror_hwm_mb", 0),
]


def section(
    plan: MirrorPlan,
    runner: MirrorRunner,
    elapsed: float,
    command: str,
    loads: tuple[str, str],
    notes: list[str],
) -> str:
    trees = [t for t, _ in runner.trees]
    labels = {"now": f"now ({kwire_spec(None, []).version()})"}
    if plan.before_src:
        labels["before"] = f"before ({git_describe(Path(plan.before_src))})"

    def cell(mode: str, tree: str, key: str, dec: int) -> str:
        rs = runner.results.get(f"{mode}|{tree}")
        if not rs:
            return "—"
        v = _median(rs, key)
        if v is None:
            return "ERROR"
        ok = sum(1 for r in rs if r.get("ok"))
        return report.fmt(v, 1, dec) + (f" ({ok}/{len(rs)} ok)" if ok < len(rs) else "")

    header = (
        "| figure | " + " | ".join(f"{mode}, {tree}" for mode in MODES for tree in trees) + " |"
    )
    table = [header, "|---|" + "---|" * (len(MODES) * len(trees))]
    for label, key, dec in ROWS:
        table.append(
            f"| {label} | " + " | ".join(cell(m, t, key, dec) for m in MODES for t in trees) + " |"
        )
    if plan.before_src:
        table.append(
            "| records/s now / before | "
            + " | ".join(_ratio(runner, m) if t == "now" else "" for m in MODES for t in trees)
            + " |"
        )
    settings = ", ".join(f"`{k}={v}`" for k, v in plan.mirror_settings.items())
    import confluent_kafka

    out = [
        SECTION_BEGIN,
        "## Mirror: `kwire mirror` throughput",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC "
        f"in {elapsed:.0f} s. What it measures: the docstring of [mirror.py](mirror.py).",
        "",
        f"- {'quick' if plan.quick else 'full'} run: {plan.reps} repetition(s); figures are medians",
        "- trees: " + "; ".join(labels[t] for t in trees) + " (the brokers always run this tree)",
        f"- the source: one kwire, topic `{TOPIC}` of {plan.partitions} partitions holding "
        f"{plan.records:,} records (round-robin), each a 12-byte key, a {plan.size}-byte value "
        "and one header (`trace`, 10 bytes), uncompressed; loaded before the mirror starts",
        f"- per mode and tree a fresh target kwire and a fresh `kwire mirror` (one flow "
        f"`{SOURCE}->{TARGET}`, `topics={TOPIC}`, MM2's defaults otherwise"
        + (f", and {settings}" if settings else "")
        + "; exactly-once: `exactly.once.support=enabled`); "
        f"confluent-kafka {confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]}), "
        f"{os.cpu_count()} cores",
        f"- load average (1/5/15 min) before / after: {loads[0]} / {loads[1]}",
        "",
        *table,
        "",
        "The window runs from the mirror's ready line (clients made, internal topics created, "
        "partitions assigned; librdkafka may have prefetched) until the target holds every "
        "record: at-least-once, every partition's high watermark is the source's (all "
        "acknowledged); exactly-once, the progress committed in the target's "
        f"`{OFFSETS_TOPIC}` (in the same transactions as the records) names every "
        "partition's last offset. CPU is /proc utime+stime (all threads) of each process over "
        "that window, per million records copied; the mirror's own includes librdkafka's "
        "threads (its consumer and three producers). Every run's target is read back "
        "(read_committed): each record once, in its partition, with its header.",
        *([""] + notes if notes else []),
        "",
        "### Mirror errors",
        "",
        *report._listed(runner.errors),
        "",
        SECTION_END,
        "",
    ]
    return "\n".join(out)


def _ratio(runner: MirrorRunner, mode: str) -> str:
    now = _median(runner.results.get(f"{mode}|now"), "records_per_s")
    before = _median(runner.results.get(f"{mode}|before"), "records_per_s")
    return f"{now / before:.2f}" if now and before else "—"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.mirror",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--quick", action="store_true", help="CI-sized run (100,000 records, 1 repetition)"
    )
    ap.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    ap.add_argument(
        "--records", type=int, help="records to copy (default 1,000,000; quick 100,000)"
    )
    ap.add_argument(
        "--before-src", help="a kwire tree (git archive) whose mirror also runs, as 'before'"
    )
    ap.add_argument(
        "--mirror-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra MM2 property for every run (repeatable)",
    )
    ap.add_argument("--py-spy", help="py-spy binary: record the mirror over each timed window")
    ap.add_argument(
        "--py-spy-arg",
        action="append",
        default=[],
        help="an extra py-spy record argument (e.g. --idle)",
    )
    ap.add_argument(
        "--note", action="append", default=[], help="a paragraph for the section (repeatable)"
    )
    ap.add_argument(
        "--output", help="results file (default bench/RESULTS.md; quick: bench/RESULTS-quick.md)"
    )
    ap.add_argument(
        "--workdir", default=str(BENCH / ".work"), help="broker data and logs (default bench/.work)"
    )
    ap.add_argument(
        "--fail-on-error", action="store_true", help="exit 1 on any error (quick: always)"
    )
    args = ap.parse_args(argv)
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        print("confluent_kafka is missing: pip install -r bench/requirements.txt", file=sys.stderr)
        return 2
    plan = quick_mirror_plan() if args.quick else MirrorPlan()
    if args.reps:
        plan.reps = args.reps
    if args.records:
        plan.records = args.records
    if args.before_src:
        plan.before_src = str(Path(args.before_src).resolve())
    plan.py_spy = args.py_spy
    plan.py_spy_args = args.py_spy_arg
    plan.mirror_settings = dict(s.split("=", 1) for s in args.mirror_setting)
    workdir = Path(args.workdir) / (time.strftime("%Y%m%d-%H%M%S") + "-mirror")
    workdir.mkdir(parents=True, exist_ok=True)
    output = (
        Path(args.output)
        if args.output
        else BENCH / ("RESULTS-quick.md" if plan.quick else "RESULTS.md")
    )
    log(f"plan: {json.dumps(asdict(plan))}; logs in {workdir}")
    load_before = report.loadavg()
    t0 = time.monotonic()
    runner = MirrorRunner(plan, workdir)
    try:
        runner.run()
    except KeyboardInterrupt:
        log("interrupted; writing what was measured")
    elapsed = time.monotonic() - t0
    (workdir / "results.json").write_text(
        json.dumps(
            {"plan": asdict(plan), "results": runner.results, "errors": runner.errors},
            indent=1,
            default=str,
        )
    )
    command = " ".join(["python -m bench.mirror", *(argv if argv is not None else sys.argv[1:])])
    text = section(plan, runner, elapsed, command, (load_before, report.loadavg()), args.note)
    report.splice_section(output, text, SECTION_BEGIN, SECTION_END)
    print(text)
    log(f"done in {elapsed:.0f} s; wrote the Mirror section of {output}")
    for e in runner.errors:
        log("  ERROR " + e.splitlines()[0][:300])
    if args.fail_on_error or plan.quick:
        return 1 if runner.errors else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
