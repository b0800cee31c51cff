"""The gates themselves must be able to fail: the compat matrix's exit code and its
comparison with the committed RESULTS.md, the benchmark's error accounting, and the
broker teardown check of conftest.py."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BrokerProcess, log_problems, log_records

from bench import checks
from compat import run as compat_run
from compat.broker import KwireBroker
from compat.clients import Client

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = (ROOT / "compat" / "RESULTS.md").read_text()

# --------------------------------------------------------------------------- compat: comparison


def test_committed_matrix_parses_into_every_cell() -> None:
    cells = compat_run.parse_matrix(COMMITTED)
    assert len(cells) == 15 * 7
    statuses = [status for status, _ in cells.values()]
    assert set(statuses) <= {"pass", "fail", "na"}
    assert cells[("create + delete topic (admin API)", "kcat")][0] == "na"


def test_same_statuses_with_other_timings_and_wording_compare_equal() -> None:
    other = (COMMITTED.replace("in 71s", "in 999s").replace("| 20s |", "| 55s |")
             .replace("n.a.: kcat cannot list or describe groups", "n.a.: reworded"))
    assert other != COMMITTED
    assert compat_run.compare_matrices(compat_run.parse_matrix(COMMITTED),
                                       compat_run.parse_matrix(other)) == []


def test_a_changed_cell_is_a_difference() -> None:
    row = "| idempotent producer | pass | pass | pass | pass | pass | pass | pass |"
    assert row in COMMITTED
    changed = COMMITTED.replace(
        row, "| idempotent producer | pass | pass | pass | pass | fail: a \\| b | pass | pass |")
    diffs = compat_run.compare_matrices(compat_run.parse_matrix(COMMITTED),
                                        compat_run.parse_matrix(changed))
    assert diffs == ["idempotent producer / Java kafka-clients: committed 'pass', "
                     "this run 'fail' (fail: a \\| b)"]


def test_a_missing_column_is_a_difference_unless_the_run_was_partial() -> None:
    committed = compat_run.parse_matrix(COMMITTED)
    produced = {k: v for k, v in committed.items() if k[1] != "kafkajs"}
    assert len(compat_run.compare_matrices(committed, produced)) == 15
    assert compat_run.compare_matrices(committed, produced, partial=True) == []


def test_no_matrix_parses_to_nothing() -> None:
    assert compat_run.parse_matrix("# nothing here\n") == {}


# --------------------------------------------------------------------------- compat: harness


@pytest.fixture(autouse=True)
def _compat_work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The harness runs below must not overwrite the logs and results.json of a real run.
    monkeypatch.setattr(compat_run, "WORK", tmp_path / "work")



def _sh(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_broker_killed_by_a_crash_signal_is_not_stopped_from_outside(tmp_path: Path) -> None:
    log = tmp_path / "broker.log"
    log.write_text("=== start\nINFO kwire.server: received SIGTERM, shutting down\n")
    for code, outside in [("import os, signal; os.kill(os.getpid(), signal.SIGABRT)", False),
                          ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", False),
                          ("import sys; sys.exit(1)", False),
                          ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", True),
                          ("pass", True)]:  # exit 0 after "received SIGTERM"
        b = KwireBroker(log)
        b.proc = subprocess.Popen(_sh(code))
        b.proc.wait(30)
        assert b.stopped_from_outside() is outside, code


def _args(tmp_path: Path, scenarios: list[str]) -> argparse.Namespace:
    return argparse.Namespace(no_install=False, bootstrap=None, override=[], scenarios=scenarios,
                              client_timeout=60.0, deadline_at=time.monotonic() + 120,
                              deadline=120.0, scenario_timeout=30.0, cluster=0, zookeeper=None,
                              logs=tmp_path / "work" / "logs")


def _client(cid: str, driver: str, install: str | None = None) -> Client:
    return Client(cid, cid, lambda: install, lambda s, b, p: _sh(driver), lambda: "test")


def test_install_failure_fails_every_cell(tmp_path: Path) -> None:
    out = compat_run.run_client(_client("broken", "", install="npm install failed"),
                                _args(tmp_path, ["metadata", "groups"]), "t")
    assert {c.status for c in out["cells"].values()} == {"fail"}
    assert "client not installed: npm install failed" in out["cells"]["groups"].detail


# The driver kills the broker it was given with SIGABRT, waits until it is gone (a
# client would see it go), then claims a pass.
ABORT_BROKER = """
import json, os, signal, sys, time
port = sys.argv[-1]
for pid in os.listdir('/proc'):
    try:
        cmd = open(f'/proc/{pid}/cmdline', 'rb').read()
    except OSError:
        continue
    if b'kwire' in cmd and f'listeners=PLAINTEXT://127.0.0.1:{port}'.encode() in cmd:
        os.kill(int(pid), signal.SIGABRT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if open(f'/proc/{pid}/stat').read().split(') ')[1][0] in 'ZX':
                    break
            except OSError:
                break
            time.sleep(0.01)
print(json.dumps({"status": "pass"}))
"""


def test_broker_crash_during_a_scenario_fails_the_cell_and_is_not_rerun(tmp_path: Path) -> None:
    client = Client("aborter", "aborter", lambda: None,
                    lambda s, b, p: _sh(ABORT_BROKER) + [b.rsplit(":", 1)[1]], lambda: "test")
    out = compat_run.run_client(client, _args(tmp_path, ["metadata", "groups"]), "t")
    for s in ("metadata", "groups"):
        cell = out["cells"][s]
        assert cell.status == "fail"
        assert cell.detail.startswith(f"broker died (exit {-signal.SIGABRT}); client saw: pass")
    # Each death once, where it happened (not again as "after" the scenario).
    assert out["broker_problems"] == [f"broker died (exit {-signal.SIGABRT}) during {s}"
                                      for s in ("metadata", "groups")]
    assert not any("run again" in n for n in out["notes"])


def test_na_outside_the_allowed_cells_is_a_failure(tmp_path: Path) -> None:
    na = 'import json; print(json.dumps({"status": "na", "detail": "not today"}))'
    out = compat_run.run_client(_client("kcat", na), _args(tmp_path, ["metadata", "groups"]), "t")
    assert out["cells"]["groups"].status == "na"  # kcat truly has no group listing
    assert out["cells"]["metadata"].status == "fail"
    assert "n.a. where the client has the API" in out["cells"]["metadata"].detail


def test_compat_exits_non_zero_on_a_failing_cell_and_on_a_changed_matrix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    passing = 'import json; print(json.dumps({"status": "pass"}))'
    failing = 'import json; print(json.dumps({"status": "fail", "detail": "wrong offset"}))'
    for cid, driver in [("good", passing), ("bad", failing)]:
        monkeypatch.setitem(compat_run.BY_ID, cid, _client(cid, driver))
    out = tmp_path / "r.md"
    base = ["--no-install", "--scenarios", "metadata", "--output", str(out)]
    assert compat_run.main(["--clients", "good", *base]) == 0
    assert compat_run.main(["--clients", "bad", *base]) == 1
    # The matrix of the passing column, then a run whose cell differs from it.
    assert compat_run.main(["--clients", "good", *base]) == 0
    reference = tmp_path / "ref.md"
    reference.write_text(out.read_text())
    assert compat_run.main(["--clients", "good", *base, "--check", str(reference)]) == 0
    reference.write_text(out.read_text().replace("| pass |", "| fail: before |"))
    assert compat_run.main(["--clients", "good", *base, "--check", str(reference)]) == 1


# --------------------------------------------------------------------------- bench


def test_latency_with_lost_messages_is_an_error_without_percentiles() -> None:
    figures, errors = checks.latency_figures([1_000_000] * 990, sent=1000, unacknowledged=0, end_seen=True)
    assert figures == {}
    assert errors == ["lost 10 of 1000 steady-state messages"]


def test_latency_unacknowledged_duplicates_and_no_end_marker_are_errors() -> None:
    _, errors = checks.latency_figures([1] * 1000, sent=1000, unacknowledged=3, end_seen=True)
    assert errors == ["3 messages unacknowledged by the producer's flush"]
    _, errors = checks.latency_figures([1] * 1001, sent=1000, unacknowledged=0, end_seen=True)
    assert "duplicates" in errors[0]
    _, errors = checks.latency_figures([1] * 1000, sent=1000, unacknowledged=0, end_seen=False)
    assert errors == ["END marker not received before the deadline"]
    assert checks.latency_figures([], sent=0, unacknowledged=0, end_seen=True)[1]


def test_latency_figures_when_every_message_arrived() -> None:
    lat = [i * 1_000_000 for i in range(1, 101)]  # 1..100 ms
    figures, errors = checks.latency_figures(lat, sent=100, unacknowledged=0, end_seen=True)
    assert errors == []
    assert figures == {"p50_ms": 50.5, "p99_ms": 100.0, "max_ms": 100.0}


def test_partition_count_and_message_count_errors() -> None:
    assert checks.partition_error("t", 8, 8) is None
    assert checks.partition_error("t", 8, 1) == "topic t has 1 partitions, not 8"
    assert checks.count_error("x", 50, 50) is None
    assert "lost 2" in checks.count_error("x", 50, 48)
    assert "duplicates" in checks.count_error("x", 50, 51)


def test_every_failed_attempt_and_broker_error_fails_the_run() -> None:
    results = {"kwire": {"startup": [{"ok": True, "startup_s": 0.2}],
                         "latency": [{"ok": True}],
                         "consume 1p group": [{"ok": False, "error": "no message"}, {"ok": True}]}}
    assert checks.run_errors({"kwire": {"latency": [{"ok": True}]}}, []) == []
    assert checks.run_errors(results, []) == ["kwire / consume 1p group: no message"]
    assert checks.run_errors({"kwire": {}}, ["kwire / broker: died, restarted"]) == [
        "kwire / broker: died, restarted"]
    lossy = {"tansu": {"produce 1p acks=1": [{"ok": True, "msgs_per_s": 1.0, "data_errors": ["lost 3"]}]}}
    assert checks.run_errors(lossy, []) == ["tansu / produce 1p acks=1: lost 3"]


def test_bench_fail_on_error_exits_1_when_kwire_cannot_run(tmp_path: Path) -> None:
    # A kwire command that exits at once: no phase runs, and that is an error, not a pass.
    r = subprocess.run([sys.executable, "-m", "bench", "--quick", "--brokers", "kwire",
                        "--kwire-cmd", f"{sys.executable} -c pass", "--fail-on-error",
                        "--output", str(tmp_path / "r.md"), "--workdir", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "broker did not start" in r.stdout


# --------------------------------------------------------------------------- conftest teardown

LOG = """2026-01-01 10:00:00,000 INFO kwire.server: listening
kwire broker 0 listening on PLAINTEXT://127.0.0.1:1
2026-01-01 10:00:01,000 WARNING kwire.server: closing connection from x: malformed request
2026-01-01 10:00:02,000 ERROR kwire.server: closing connection from y: request failed
Traceback (most recent call last):
  File "kwire/handlers/fetch.py", line 1, in handle
ZeroDivisionError: division by zero
2026-01-01 10:00:03,000 INFO kwire.server: received SIGTERM, shutting down
"""


def test_log_scan_finds_error_records_with_their_traceback() -> None:
    assert len(log_records(LOG)) == 4
    problems = log_problems(LOG, [])
    assert len(problems) == 1
    assert problems[0].startswith("2026-01-01 10:00:02,000 ERROR") and "ZeroDivisionError" in problems[0]
    assert log_problems(LOG, [__import__("re").compile("ZeroDivisionError")]) == []
    bare = "2026-01-01 10:00:00,000 INFO kwire: up\nTraceback (most recent call last):\nValueError\n"
    assert len(log_problems(bare, [])) == 1  # an unlogged traceback counts too


def test_teardown_check_of_a_real_broker(tmp_path: Path) -> None:
    clean = BrokerProcess(tmp_path / "clean").start()
    assert clean.teardown_problems() == []
    assert clean.stop_codes == [0]

    logged = BrokerProcess(tmp_path / "logged").start()
    with open(logged.log_path, "a") as f:
        f.write(LOG.splitlines()[3] + "\n")
    assert any("request failed" in p for p in logged.teardown_problems())
    assert BrokerProcess(tmp_path / "logged").expect_log("request failed").teardown_problems() == []

    crashed = BrokerProcess(tmp_path / "crashed").start()
    os.kill(crashed.process.pid, signal.SIGABRT)
    crashed.process.wait(10)
    problems = crashed.teardown_problems()
    assert f"broker exited by itself with code {-signal.SIGABRT} before teardown" in problems

    killed = BrokerProcess(tmp_path / "killed").start()
    killed.kill()  # a deliberate SIGKILL: no exit code to check
    assert killed.teardown_problems() == []

