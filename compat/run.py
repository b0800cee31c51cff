"""Run every scenario through every client against a fresh kwire broker; write RESULTS.md.

    python -m compat                      # install what is missing, run all, write RESULTS.md
    python -m compat --clients java,kcat --scenarios transactions
    python -m compat --bootstrap 127.0.0.1:9092 --output /tmp/r.md   # an already running broker
    python -m compat --cluster 3          # a 3-broker cluster per client; RESULTS-cluster.md
    python -m compat --security           # every client over SASL_SSL + SCRAM-SHA-512; RESULTS-security.md

Exits 1 when a cell fails (a check, a timeout, a client that could not be installed,
an n.a. that scenarios.NOT_APPLICABLE does not list), when a broker (with --cluster: any
broker, or ZooKeeper) died or did not stop cleanly on SIGTERM, or (--check) when the cell
statuses differ from the committed RESULTS.md (RESULTS-cluster.md, RESULTS-security.md);
0 when all is as it should be.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # `python compat/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "compat"

from compat import scenarios as S  # noqa: E402
from compat.broker import BrokerError, ExternalBroker, KwireBroker  # noqa: E402
from compat.clients import BY_ID, CLIENTS, ROOT, WORK, Client, log  # noqa: E402
from compat.cluster import KwireCluster, ZooKeeper, cluster_overrides  # noqa: E402
from compat.security import MECHANISM, SaslSsl  # noqa: E402

HERE = Path(__file__).resolve().parent


class Cell:
    def __init__(self, status: str, detail: str = "", seconds: float = 0.0):
        self.status = status  # pass | fail | na
        self.detail = detail
        self.seconds = seconds

    def text(self, limit: int = 150) -> str:
        if self.status == "pass":
            return "pass"
        word = "fail" if self.status == "fail" else "n.a."
        d = " ".join(self.detail.split())
        if len(d) > limit:
            d = d[: limit - 1] + "…"
        d = d.replace("|", "\\|")
        return f"{word}: {d}" if d else word

    def as_dict(self) -> dict:
        return {"status": self.status, "detail": self.detail, "seconds": round(self.seconds, 2)}


def run_scenario(client: Client, scenario: str, bootstrap: str, prefix: str,
                 timeout: float, logdir: Path, extra_env: dict[str, str] | None = None) -> Cell:
    cmd = client.command(scenario, bootstrap, prefix)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONUNBUFFERED="1", **client.env, **(extra_env or {}))
    logdir.mkdir(parents=True, exist_ok=True)
    errpath = logdir / f"{scenario}.log"
    t0 = time.monotonic()
    with open(errpath, "wb") as err:
        err.write((" ".join(cmd) + "\n").encode())
        err.flush()
        try:
            p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        except OSError as e:
            return Cell("fail", f"cannot start driver: {e}")
        last_step = "start"
        result = None
        lines: list[str] = []

        def reader():
            nonlocal last_step, result
            assert p.stdout
            for raw in p.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                lines.append(line)
                if line.startswith("##step "):
                    last_step = line[7:]
                elif line.startswith("{"):
                    try:
                        obj = json.loads(line)
                        if "status" in obj:
                            result = obj
                    except ValueError:
                        pass
        th = threading.Thread(target=reader, daemon=True)
        th.start()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
            th.join(2)
            if result is None:
                return Cell("fail", f"timeout in {last_step} (scenario limit {timeout:g}s)",
                            time.monotonic() - t0)
        th.join(5)
        err.write(("\n--- stdout\n" + "\n".join(lines) + "\n").encode())
    secs = time.monotonic() - t0
    if result is None:
        tail = [ln for ln in errpath.read_text(errors="replace").splitlines()
                if ln.strip() and not ln.startswith("---")]
        why = tail[-1] if len(tail) > 1 else ""
        return Cell("fail", f"driver crashed (exit {p.returncode}) in {last_step}: {why}", secs)
    return Cell(result["status"], result.get("detail", ""), secs)


def run_client(client: Client, args, runid: str) -> dict:
    """Install, start a fresh broker, run the scenarios one by one, stop the broker."""
    t0 = time.monotonic()
    out: dict = {"client": client.id, "title": client.title, "cells": {}, "notes": [],
                 "broker_problems": []}
    try:
        reason = None if args.no_install else client.install()
    except Exception as e:  # an installer bug must not stop the matrix
        reason = f"installer error: {type(e).__name__}: {e}"
    try:
        out["version"] = client.version() if reason is None else "-"
    except Exception:
        out["version"] = "?"
    if reason is not None:
        # A failed install is the harness's or the machine's failure, not a feature the
        # client lacks: every cell of the column fails (n.a. is only for missing APIs).
        log(f"{client.id}: not available: {reason}")
        out["unavailable"] = reason
        for s in args.scenarios:
            out["cells"][s] = Cell("fail", f"client not installed: {reason}")
        return out
    logdir = args.logs / client.id
    # Set by main() with --security; callers that build their own args may leave it out.
    sasl_ssl: SaslSsl | None = getattr(args, "sasl_ssl", None)
    broker: ExternalBroker | KwireBroker | KwireCluster
    if args.bootstrap:
        broker = ExternalBroker(args.bootstrap)
    elif args.cluster:
        broker = KwireCluster(args.zookeeper, args.cluster, logdir,
                              f"/compat/{runid}-{client.id}", args.override)
    else:
        broker = KwireBroker(logdir / "broker.log", args.override, sasl_ssl=sasl_ssl)
    prefix = f"c{runid}-{client.id}"
    log(f"{client.id} {out['version']}: running {len(args.scenarios)} scenarios")
    budget_end = min(t0 + args.client_timeout, args.deadline_at)
    started = False
    prev: str | None = None

    def died_after(scenario: str) -> None:
        """The broker was found gone after `scenario` had passed its checks."""
        if broker.stopped_from_outside():
            out["notes"].append(f"broker stopped from outside (signal) after {scenario} had finished")
            return
        why = f"{broker.death()} after this scenario had finished"
        out["broker_problems"].append(f"{broker.death()} after {scenario}")
        old_cell = out["cells"][scenario]
        out["cells"][scenario] = Cell("fail", f"{why}; client saw: {old_cell.detail or old_cell.status}",
                                      old_cell.seconds)

    def start_broker() -> str | None:
        """Start a fresh broker; retried when something else stops it while starting."""
        last = ""
        for _ in range(3):
            try:
                broker.start()
                return None
            except BrokerError as e:
                last = str(e)
                outside = broker.stopped_from_outside()
                broker.stop()
                if not outside:
                    break
                out["notes"].append("broker stopped from outside while starting; started again")
        return last

    for s in args.scenarios:
        if time.monotonic() >= budget_end:
            out["cells"][s] = Cell("fail", "timeout: the client's time budget "
                                           f"({args.client_timeout:g}s, whole run {args.deadline:g}s) "
                                           "was used up before this scenario")
            continue
        for attempt in (1, 2):
            if started and not broker.alive() and prev is not None:
                # Died between scenarios (after the previous one's check): a crash fails
                # the previous cell, whose checks held but whose broker did not survive.
                died_after(prev)
                out["notes"].append(f"broker stopped after {prev} had finished; restarted")
                started = False
            if not started or not broker.alive():
                broker.stop()
                err = start_broker()
                started = err is None
                if err is not None:
                    cell = Cell("fail", f"broker did not start: {err}")
                    break
            limit = min(args.scenario_timeout, max(5.0, budget_end - time.monotonic()))
            if sasl_ssl is not None:
                # The SASL_SSL listener, and the security settings in the environment.
                cell = run_scenario(client, s, broker.client_bootstrap, prefix, limit, logdir,
                                    sasl_ssl.driver_env())
            else:
                cell = run_scenario(client, s, broker.bootstrap, prefix, limit, logdir)
            if broker.stopped_from_outside():
                # Not kwire's doing (another process sent SIGTERM/SIGINT): run the scenario
                # again on a fresh broker rather than record a failure. A crash (any other
                # signal, a non-zero exit) is not this case.
                broker.wait_exit(15)
                if attempt == 1:
                    out["notes"].append(f"broker was stopped from outside (signal) during {s}; "
                                        "scenario run again on a fresh broker")
                    started = False
                    continue
                cell = Cell("fail", "broker stopped from outside (signal) twice; "
                                    f"client saw: {cell.detail or cell.status}", cell.seconds)
                break
            if broker.alive():
                break
            cell = Cell("fail", f"{broker.death()}; "
                                f"client saw: {cell.detail or cell.status}", cell.seconds)
            out["broker_problems"].append(f"{broker.death()} during {s}")
            started = False  # recorded here: not again as a death after this scenario
            break
        if cell.status == "na" and (client.id, s) not in S.not_applicable(sasl_ssl is not None):
            # n.a. means the client lacks the API; anywhere else it would hide a failure.
            cell = Cell("fail", f"n.a. where the client has the API: {cell.detail}", cell.seconds)
        out["cells"][s] = cell
        prev = s
        mark = "ok  " if cell.status == "pass" else cell.status
        log(f"  {client.id:16} {s:20} {mark:4} {cell.seconds:5.1f}s "
            f"{cell.text(120) if cell.status != 'pass' else ''}")
    if started and not broker.alive() and prev is not None:
        died_after(prev)
    elif started:
        note = broker.stop()
        if note:
            # Not exiting 0 on SIGTERM (or not at all) is a broker bug.
            out["broker_problems"].append(note)
    broker.stop()
    out["seconds"] = time.monotonic() - t0
    return out


def write_results(path: Path, results: list[dict], scenarios: list[str], args, started: str,
                  wall: float, run_problems: list[str] | None = None) -> None:
    cols = results
    head = "| scenario | " + " | ".join(c["title"] for c in cols) + " |"
    sep = "|---|" + "---|" * len(cols)
    rows = []
    for sid in scenarios:
        cells = [c["cells"][sid].text() if sid in c["cells"] else "" for c in cols]
        rows.append(f"| {S.BY_ID[sid].title} | " + " | ".join(cells) + " |")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        commit = "?"
    overrides = ", ".join(f"`{o}`" for o in (["group.initial.rebalance.delay.ms=0",
                                              "num.partitions=3"] + args.override))
    if args.bootstrap:
        target = f"an external broker at {args.bootstrap}"
    elif args.cluster:
        target = (f"a fresh {args.cluster}-broker kwire cluster per client (a real ZooKeeper, "
                  f"`python -m kwire serve` with broker.id 1..{args.cluster} and "
                  "`zookeeper.connect`, temporary log.dirs, every client given all brokers "
                  "as bootstrap), overrides " + overrides + ", "
                  + ", ".join(f"`{o}`" for o in cluster_overrides(args.cluster)))
    elif getattr(args, "security", False):
        target = ("a fresh kwire broker per client (`python -m kwire serve`, temporary "
                  "log.dirs) with a PLAINTEXT and a SASL_SSL listener (a test CA's "
                  "certificate, `ssl.keystore.type=PEM`, "
                  f"`sasl.enabled.mechanisms={MECHANISM}`), overrides " + overrides
                  + f"; a {MECHANISM} user created over PLAINTEXT with "
                  "AlterUserScramCredentials after each start, every client connected to "
                  f"the SASL_SSL listener only, as that user over TLS trusting the test CA")
    else:
        target = ("a fresh kwire broker per client (`python -m kwire serve`, temporary "
                  "log.dirs), overrides " + overrides)
    security = getattr(args, "security", False)
    title = " (cluster)" if args.cluster else f" (SASL_SSL, {MECHANISM})" if security else ""
    flags = f" --cluster {args.cluster}" if args.cluster else " --security" if security else ""
    lines = [
        f"# kwire client compatibility matrix{title}",
        "",
        f"Generated by `python -m compat{flags}` on {started} against {target}, kwire commit `{commit}`, "
        f"in {wall:.0f}s. What each row checks: [README.md](README.md#scenarios).",
        "",
        head,
        sep,
        *rows,
        "",
        "## Clients",
        "",
        "| client | version | time |",
        "|---|---|---|",
    ]
    for c in cols:
        t = f"{c['seconds']:.0f}s" if "seconds" in c else "-"
        v = c.get("version", "?")
        if c.get("unavailable"):
            v = f"not available: {c['unavailable']}"
        lines.append(f"| {c['title']} | {v} | {t} |")
    fails = [(c, sid) for c in cols for sid in scenarios
             if sid in c["cells"] and c["cells"][sid].status == "fail"]
    notes = [(c, n) for c in cols for n in c.get("notes", [])]
    if fails:
        lines += ["", "## Failures in full", ""]
        for c, sid in fails:
            d = " ".join(c["cells"][sid].detail.split())
            if len(d) > 400:
                d = d[:399] + "…"
            lines.append(f"- **{c['title']}**, {S.BY_ID[sid].title}: `{d.replace('`', chr(39))}`")
    problems = [(c, n) for c in cols for n in c.get("broker_problems", [])]
    if problems or run_problems:
        lines += ["", "## Broker problems", ""]
        for c, n in problems:
            lines.append(f"- **{c['title']}**: {n}")
        lines += [f"- {n}" for n in run_problems or []]
    if notes:
        lines += ["", "## Notes on this run", ""]
        for c, n in notes:
            lines.append(f"- **{c['title']}**: {n}")
    lines += ["", "pass = the scenario's checks held; fail: the first check or step that "
              "did not (\"timeout in <step>\" when a step ran out of time, \"broker died\" "
              "when the broker did, \"client not installed\" when its install failed); "
              "n.a. = the client itself lacks the feature.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


STATUS_OF_WORD = {"pass": "pass", "fail": "fail", "n.a.": "na"}


def parse_matrix(text: str) -> dict[tuple[str, str], tuple[str, str]]:
    """The table of a RESULTS.md: (scenario title, client title) -> (status, cell text),
    status one of pass, fail, na ("?" for anything else, "" for an empty cell)."""
    lines = text.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.startswith("| scenario |"))
    except StopIteration:
        return {}

    def split(line: str) -> list[str]:
        # Cells escape "|" as "\|"; split on the others only.
        return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]

    cols = split(lines[start])[1:]
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for line in lines[start + 1:]:
        if not line.startswith("|"):
            break
        cells = split(line)
        if not cells or set(cells[0]) <= {"-"}:
            continue
        for col, text_ in zip(cols, cells[1:], strict=False):
            word = text_.split(":", 1)[0].strip()
            out[(cells[0], col)] = (STATUS_OF_WORD.get(word, "?" if text_ else ""), text_)
    return out


def compare_matrices(committed: dict[tuple[str, str], tuple[str, str]],
                     produced: dict[tuple[str, str], tuple[str, str]],
                     partial: bool = False) -> list[str]:
    """Cells whose status differs (timings and wording aside), one line each. With
    partial (a run of some rows or columns) committed cells outside the run are skipped."""
    if partial:
        rows = {r for r, _ in produced}
        cols = {c for _, c in produced}
        committed = {k: v for k, v in committed.items() if k[0] in rows and k[1] in cols}
    diffs = []
    for key in list(committed) + [k for k in produced if k not in committed]:
        was = committed.get(key, ("absent", ""))
        now = produced.get(key, ("absent", ""))
        if was[0] != now[0]:
            diffs.append(f"{key[0]} / {key[1]}: committed {was[0]!r}, this run {now[0]!r}"
                         + (f" ({now[1]})" if now[0] not in ("pass", "absent") else ""))
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m compat", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default=",".join(c.id for c in CLIENTS),
                    help="comma-separated: " + ", ".join(c.id for c in CLIENTS))
    ap.add_argument("--scenarios", default=",".join(S.SCENARIO_IDS),
                    help="comma-separated: " + ", ".join(S.SCENARIO_IDS))
    ap.add_argument("--bootstrap", help="use this running broker instead of starting kwire")
    ap.add_argument("--cluster", type=int, default=0, metavar="N",
                    help="run against a fresh N-broker kwire cluster per client (a real "
                         "ZooKeeper for the run; replication factor min(3,N)); the table is "
                         "compat/RESULTS-cluster.md")
    ap.add_argument("--security", action="store_true",
                    help="every client over a SASL_SSL listener (a test CA, SCRAM-SHA-512, a "
                         "user created by the harness); the table is compat/RESULTS-security.md")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="extra kwire broker config (repeatable)")
    ap.add_argument("--jobs", type=int, default=2, help="clients run in parallel (2)")
    ap.add_argument("--scenario-timeout", type=float, default=60.0,
                    help="hard limit per scenario, seconds (60)")
    ap.add_argument("--client-timeout", type=float, default=240.0,
                    help="limit for all of one client's scenarios, seconds (240)")
    ap.add_argument("--deadline", type=float, default=1000.0,
                    help="limit for the whole run including installs, seconds (1000): "
                         "scenarios not started by then are recorded as timeouts")
    ap.add_argument("--check", nargs="?", const="", metavar="FILE",
                    help="also fail unless every cell's status matches FILE (default: "
                         "compat/RESULTS.md as it was before this run, i.e. the committed one "
                         "in a clean checkout); the differences are printed")
    ap.add_argument("--no-install", action="store_true", help="do not install missing clients")
    ap.add_argument("--install-only", action="store_true", help="install the clients and stop")
    ap.add_argument("--output", help="where to write the table (compat/RESULTS.md for a full run "
                                     "against kwire; compat/.work/RESULTS.partial.md for a "
                                     "subset or an external broker)")
    args = ap.parse_args(argv)
    try:
        clients = [BY_ID[c] for c in args.clients.split(",") if c]
        args.scenarios = [s for s in args.scenarios.split(",") if s]
        bad = [s for s in args.scenarios if s not in S.BY_ID]
        if bad:
            raise KeyError(bad[0])
    except KeyError as e:
        ap.error(f"unknown client or scenario {e}")

    if args.cluster < 0 or (args.cluster and args.bootstrap):
        ap.error("--cluster takes a number of brokers (1 or more) and no --bootstrap")
    if args.security and (args.cluster or args.bootstrap):
        ap.error("--security starts its own single brokers: no --cluster, no --bootstrap")
    # The cluster and security runs keep their tables, logs and results apart.
    tag = "-cluster" if args.cluster else "-security" if args.security else ""
    args.logs = WORK / f"logs{tag}"
    if args.output is None:
        full = len(clients) == len(CLIENTS) and args.scenarios == S.SCENARIO_IDS
        args.output = str(HERE / f"RESULTS{tag}.md") \
            if full and not args.bootstrap else str(WORK / f"RESULTS{tag}.partial.md")
    partial = not (len(clients) == len(CLIENTS) and args.scenarios == S.SCENARIO_IDS)
    committed_text: str | None = None
    if args.check is not None:
        ref = Path(args.check) if args.check else HERE / f"RESULTS{tag}.md"
        try:
            committed_text = ref.read_text()  # read now: the run may overwrite it
        except OSError as e:
            committed_text = ""
            log(f"--check: cannot read {ref}: {e}")
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.monotonic()
    args.deadline_at = t0 + args.deadline
    WORK.mkdir(parents=True, exist_ok=True)
    if args.install_only:
        failed = 0
        for c in clients:
            r = c.install()
            log(f"{c.id}: {'ready' if r is None else r}")
            failed += r is not None
        return 1 if failed else 0
    # Installs share apt/npm: do them one client at a time, before the runs.
    if not args.no_install:
        pre: dict[str, str | None] = {}
        for c in clients:
            t = time.monotonic()
            try:
                pre[c.id] = c.install()
            except Exception as e:
                pre[c.id] = f"installer error: {type(e).__name__}: {e}"
            log(f"{c.id}: {'ready' if pre[c.id] is None else pre[c.id]} "
                f"({time.monotonic() - t:.1f}s)")
        for c in clients:
            c.install = (lambda r: (lambda: r))(pre[c.id])
    runid = secrets.token_hex(3)
    # The test CA and the broker's key for this run; removed at the end.
    args.sasl_ssl = SaslSsl(WORK / f"security-{runid}") if args.security else None
    zk_problem = ""
    args.zookeeper = None
    if args.cluster:
        # One ZooKeeper for the run; each client's cluster has a chroot of its own.
        args.zookeeper = ZooKeeper(args.logs / "zookeeper")
        try:
            args.zookeeper.start()
            log(f"ZooKeeper serving on {args.zookeeper.connect} "
                f"(logs in {args.logs / 'zookeeper'})")
        except BrokerError as e:
            # Every cell then fails with "broker did not start: ..." naming it.
            zk_problem = f"ZooKeeper did not start: {e}"
            log(zk_problem)
    try:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as ex:
            results = list(ex.map(lambda c: run_client(c, args, runid), clients))
    finally:
        if args.sasl_ssl is not None:
            args.sasl_ssl.remove()
        if args.zookeeper is not None:
            if not zk_problem and not args.zookeeper.alive():
                zk_problem = f"ZooKeeper died during the run (exit {args.zookeeper.exit_status()})"
            args.zookeeper.stop()
    wall = time.monotonic() - t0
    out = Path(args.output)
    write_results(out, results, args.scenarios, args, started, wall,
                  [zk_problem] if zk_problem else [])
    (WORK / f"results{tag}.json").write_text(json.dumps(
        [{**r, "cells": {k: v.as_dict() for k, v in r["cells"].items()}} for r in results],
        indent=1))
    counts = {"pass": 0, "fail": 0, "na": 0}
    for r in results:
        for cell in r["cells"].values():
            counts[cell.status] = counts.get(cell.status, 0) + 1
    log(f"wrote {out} in {wall:.0f}s")
    problems = [f"{r['client']}: {n}" for r in results for n in r.get("broker_problems", [])]
    if zk_problem:
        problems.append(zk_problem)
    for pr in problems:
        log(f"broker problem: {pr}")
    diffs: list[str] = []
    if committed_text is not None:
        committed = parse_matrix(committed_text)
        if not committed:
            diffs = ["the committed RESULTS.md has no matrix to compare with"]
        else:
            diffs = compare_matrices(committed, parse_matrix(out.read_text()), partial)
        if diffs:
            log(f"{len(diffs)} cell(s) differ from the committed matrix:")
            for d in diffs:
                print(f"  {d}", flush=True)
        else:
            log("every cell's status matches the committed matrix")
    print(f"compat: {counts['pass']} passed, {counts['fail']} failed, {counts['na']} n.a., "
          f"{len(problems)} broker problem(s)"
          + (f", {len(diffs)} cell(s) differ from the committed matrix" if diffs else ""),
          flush=True)
    return 1 if counts["fail"] or problems or diffs else 0


if __name__ == "__main__":
    sys.exit(main())
