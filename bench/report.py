"""Medians, the kwire/peer table and bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import re
import statistics
import time

# (key in the phase result, label, scale factor, decimals, lower is better)
THROUGHPUT = [("msgs_per_s", "msgs/s", 1, 0, False), ("mb_per_s", "MB/s", 1, 1, False),
              ("cpu_s_per_m", "broker CPU s / M msgs", 1, 2, True)]
CONSUME_GROUP = THROUGHPUT + [("first_msg_s", "time to first message, s (group join)", 1, 2, True)]
LATENCY = [("p50_ms", "p50 ms", 1, 2, True), ("p99_ms", "p99 ms", 1, 2, True), ("max_ms", "max ms", 1, 2, True),
           ("broker_cpu_pct", "broker CPU %", 1, 1, True),
           ("producer_cpu_pct", "producer client CPU %", 1, 1, True),
           ("consumer_cpu_pct", "consumer client CPU %", 1, 1, True)]
STARTUP = [("startup_s", "process start to first Metadata answer, ms", 1000, 0, True),
           ("startup_max_s", "slowest start of the run, ms", 1000, 0, True),
           ("floor_s", "floor: python -c 'import trio', ms", 1000, 0, True),
           ("own_s", "start-up minus the floor, ms", 1000, 0, True)]
MEMORY = [("idle_mb", "RSS idle, MB", 1, 1, True), ("peak_mb", "RSS peak during the phases, MB", 1, 1, True),
          ("hwm_mb", "VmHWM (start-up included), MB", 1, 1, True)]
SCALE = [("create_s", "time to create, s", 1, 2, True), ("metadata_s", "Metadata (all topics), ms", 1000, 1, True),
         ("idle_cpu_pct", "idle CPU % afterwards", 1, 2, True), ("rss_mb", "RSS afterwards, MB", 1, 0, True)]


def phase_rows(plan) -> list[tuple[str, list]]:
    rows = []
    for parts in plan.partitions:
        for acks in plan.acks:
            rows.append((f"produce {parts}p acks={acks}", THROUGHPUT))
    for parts, acks, linger in getattr(plan, "small_request_phases", ()):
        rows.append((f"produce {parts}p acks={acks} linger.ms={linger}", THROUGHPUT))
    for parts in plan.partitions:
        rows.append((f"consume {parts}p group", CONSUME_GROUP))
        rows.append((f"consume {parts}p assign", THROUGHPUT))
    rows.append(("latency", LATENCY))
    rows.append(("startup", STARTUP))
    rows.append(("memory", MEMORY))
    rows.append(("scale", SCALE))
    return rows


def phase_title(plan, phase: str) -> str:
    if phase == "latency":
        return f"latency {plan.latency_rate}/s, {plan.latency_duration:g} s"
    if phase == "scale":
        return f"scale {plan.scale_topics * plan.scale_partitions_per_topic:,} partitions"
    if phase == "startup":
        return "start-up"
    if phase == "memory":
        return "memory"
    if phase.endswith("assign"):
        return phase + " (fallback)"
    return phase


def median_of(results: list[dict] | None, key: str):
    """(median or None, n ok, n total)."""
    if not results:
        return None, 0, 0
    if key == "startup_max_s":
        vals = [r["startup_s"] for r in results if r.get("ok")]
        return (max(vals) if vals else None), len(vals), len(results)
    vals = [r[key] for r in results if r.get("ok") and r.get(key) is not None]
    return (statistics.median(vals) if vals else None), len(vals), len(results)


def fmt(v, scale, dec) -> str:
    if v is None:
        return "—"
    v = v * scale
    if dec == 0:
        return f"{v:,.0f}"
    return f"{v:,.{dec}f}"


def cell(results, key, scale, dec) -> str:
    v, ok, n = median_of(results, key)
    if n == 0:
        return "—"
    if v is None:
        return "ERROR"
    s = fmt(v, scale, dec)
    if ok < n:
        s += f" ({ok}/{n} ok)"
    return s


TARGETS = {
    # (phase prefix, key): (description, check(kwire, peer) -> bool | None)
    "cpu_s_per_m": ("≤ ½ peer", lambda k, p: None if p is None else k <= p / 2),
    "msgs_per_s": ("≥ peer", lambda k, p: None if p is None else k >= p),
    "p99_ms": ("< 5 ms", lambda k, p: k < 5),
    "startup_s": ("< 250 ms", lambda k, p: k < 0.25),
    "idle_mb": ("< 60 MB", lambda k, p: k < 60),
    "peak_mb": ("< 150 MB", lambda k, p: k < 150),
    "create_s": ("< 30 s", lambda k, p: k < 30),
    "metadata_s": ("< 1 s", lambda k, p: k < 1),
    "idle_cpu_pct": ("< 2 %", lambda k, p: k < 2),
}


def table_rows(plan, specs, results):
    names = [s.name for s in specs]
    out = []
    for phase, metrics in phase_rows(plan):
        if not any(results.get(n, {}).get(phase) for n in names):
            continue
        for key, label, scale, dec, _lower in metrics:
            cells = [cell(results.get(n, {}).get(phase), key, scale, dec) for n in names]
            ratio = target = met = ""
            if len(names) >= 2:
                k, _, _ = median_of(results.get(names[0], {}).get(phase), key)
                p, _, _ = median_of(results.get(names[1], {}).get(phase), key)
                if k is not None and p:
                    ratio = f"{k / p:.2f}"
                if key in TARGETS and not phase.endswith("assign"):
                    target, check = TARGETS[key]
                    if k is not None:
                        r = check(k, p)
                        met = "" if r is None else ("yes" if r else "NO")
            out.append([phase_title(plan, phase), label, *cells, ratio, target, met])
    return names, out


def _md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(lines)


def console_table(plan, specs, results) -> str:
    names, rows = table_rows(plan, specs, results)
    header = ["phase", "figure", *names] + (["kwire/peer", "target", "met"] if len(names) >= 2 else ["", "", ""])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    out = []
    for r in [header, ["-" * w for w in widths], *rows]:
        out.append("  ".join(str(c).rjust(w) if i >= 2 else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))))
    return "\n".join(out)


def machine() -> dict:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {"nproc": str(len(os.sched_getaffinity(0))), "CPU": cpu, "RAM": mem,
            "kernel": platform.release()}


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def versions(specs) -> dict:
    import confluent_kafka
    v = {"python": platform.python_version(),
         "confluent-kafka": confluent_kafka.__version__,
         "librdkafka": confluent_kafka.libversion()[0]}
    for s in specs:
        v[s.name] = s.version()
    return v


def render(plan, specs, results, events, elapsed, command, load_before: str = "?",
           errors: list[str] | None = None) -> str:
    names, rows = table_rows(plan, specs, results)
    m, v = machine(), versions(specs)
    m["load average (1/5/15 min) before / after"] = f"{load_before} / {loadavg()}"
    out = [
        "# kwire benchmark results",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M:%S %Z')} in {elapsed:.0f} s. "
        "How to read it: [README.md](README.md).",
        "",
        "## Machine",
        "",
        *(f"- {k}: {val}" for k, val in m.items()),
        "",
        "## Versions",
        "",
        *(f"- {k}: {val}" for k, val in v.items()),
        "",
        "## Settings",
        "",
        f"- {'quick run' if plan.quick else 'full run'}: {plan.reps} repetition(s), brokers interleaved "
        f"({', '.join(names)}, {', '.join(names)}, ...), each freshly started; figures are medians",
        f"- produce: {plan.messages:,} messages of {plan.size} B per phase, linger.ms=5 (and the phases that name "
        "another linger.ms), batch.size=1000000, no compression",
        f"- consume: the same data (the acks=all topic), fresh group.id, auto.offset.reset=earliest, "
        f"fetch.queue.backoff.ms=10, session.timeout.ms={plan.session_timeout_ms}",
        f"- latency: {plan.latency_rate} msgs/s with linger.ms=0 for {plan.latency_duration:g} s, "
        "default fetch.wait.max.ms (500)",
        f"- scale: {plan.scale_topics} topics x {plan.scale_partitions_per_topic} partitions in one CreateTopics "
        f"request; idle CPU over {plan.idle_window:g} s",
        f"- start-up: median of {plan.startup_samples}+ fresh starts (every start in the run counts)",
        "",
        "## Results",
        "",
    ]
    header = ["phase", "figure", *names]
    if len(names) >= 2:
        header += [f"{names[0]}/{names[1]}", f"target ({names[0]})", "met"]
        out.append(_md_table(header, rows))
    else:
        out.append(_md_table(header, [r[:2 + len(names)] for r in rows]))
    out += ["", "Ratios are kwire/peer of the medians: for msgs/s and MB/s higher is better, for everything "
            "else lower is better.", ""]
    if plan.quick:
        out += ["This is a quick run: sizes are below those the targets are set for (1,000,000 messages, "
                "10,000 partitions), so the target column is indicative only.", ""]
    # Errors (any of them fails --fail-on-error) apart from notes, which do not.
    errors = list(errors if errors is not None else [e for e in events if " / " in e.split(":", 1)[0]])
    notes = [e for e in events if e not in errors]
    out += ["## Errors", "", *_listed(errors), "", "## Notes", "", *_listed(notes), ""]
    return "\n".join(out)


def _listed(items: list[str]) -> list[str]:
    if not items:
        return ["- none"]
    out = []
    counts: dict[str, int] = {}
    for e in items:
        counts[e] = counts.get(e, 0) + 1
    for e, n in counts.items():
        first, *rest = e.splitlines()
        out.append(f"- {first}" + (f" (x{n})" if n > 1 else ""))
        if rest:
            out.append("")
            out.append("  ```")
            out += [f"  {ln}" for ln in rest[-10:]]
            out.append("  ```")
    return out


# `python -m bench.cluster` writes its section between these markers; a run of
# `python -m bench` rewrites the rest of the file and keeps that section.
CLUSTER_BEGIN = "<!-- cluster: written by python -m bench.cluster -->"
CLUSTER_END = "<!-- /cluster -->"


# `python -m bench.tls` writes its section between these, kept the same way.
TLS_BEGIN = "<!-- tls: written by python -m bench.tls -->"
TLS_END = "<!-- /tls -->"


# Any standalone benchmark's section: `<!-- NAME: written by python -m bench.X -->`
# ... `<!-- /NAME -->` (cluster, tls, restart, cleaner ...).
_SECTION = re.compile(r"<!-- (?P<name>[\w-]+): written by python -m bench\.[\w.]+ -->.*?<!-- /(?P=name) -->", re.S)


def splice_section(path, section: str, begin: str, end: str) -> None:
    """Put a standalone benchmark's `section` (from `begin` to `end` marker) into the
    results file at `path` in place of an earlier one (or at its end), leaving
    everything else as it was."""
    old = path.read_text() if path.exists() else "# kwire benchmark results\n\n"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        old = head + section + rest.split(end, 1)[1].lstrip("\n")
    else:
        old = old.rstrip("\n") + "\n\n" + section
    path.write_text(old)


def keep_cluster_section(path, text: str) -> str:
    """`text` with the standalone benchmarks' sections of the file at `path` (cluster,
    TLS, restart, cleaner: each between its markers) appended, in their order there."""
    try:
        old = path.read_text()
    except OSError:
        return text
    for match in _SECTION.finditer(old):
        text = text.rstrip("\n") + "\n\n" + match.group(0) + "\n"
    return text
