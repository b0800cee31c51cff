"""Plumbing shared by the Python drivers: steps with a watchdog, the JSON result line.

A driver module defines ``SCENARIOS = {"metadata": fn, ...}`` (fn takes a Ctx) and ends
with ``common.main(SCENARIOS)``.  Each ``ctx.step(name, timeout)`` arms a watchdog: if
the step is still running when it fires, the process prints
``{"status": "fail", "detail": "timeout in <step> (Ns)"}`` and exits at once, whatever
the client library is blocked in.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import sys
import threading
import time
import traceback

from compat import scenarios as S


def security() -> dict[str, str] | None:
    """The security settings the harness passes in the environment (`--security`, see
    compat/security.py): protocol, ca (a PEM file), mechanism, username, password; None
    for a PLAINTEXT run."""
    protocol = os.environ.get("KWIRE_COMPAT_SECURITY_PROTOCOL")
    if not protocol:
        return None
    return {"protocol": protocol,
            "ca": os.environ["KWIRE_COMPAT_SSL_CA_LOCATION"],
            "mechanism": os.environ["KWIRE_COMPAT_SASL_MECHANISM"],
            "username": os.environ["KWIRE_COMPAT_SASL_USERNAME"],
            "password": os.environ["KWIRE_COMPAT_SASL_PASSWORD"]}


class Fail(Exception):
    """A check did not hold."""


class NotApplicable(Exception):
    """The client itself lacks the feature."""


_out_lock = threading.Lock()
_done = False


def _emit(status: str, detail: str = "") -> None:
    global _done
    with _out_lock:
        if _done:
            return
        _done = True
        sys.stdout.write(json.dumps({"status": status, "detail": detail}) + "\n")
        sys.stdout.flush()


class Ctx:
    def __init__(self, scenario: str, bootstrap: str, prefix: str):
        self.scenario = scenario
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.topic = f"{prefix}-{scenario}"
        self.group = f"{prefix}-{scenario}-g"
        self.current = "start"
        self._timer: threading.Timer | None = None
        self.t0 = time.monotonic()

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{self.scenario}-{suffix}"

    def step(self, name: str, timeout: float = 20.0) -> None:
        self.current = name
        if self._timer is not None:
            self._timer.cancel()
        print(f"##step {name}", flush=True)
        t = threading.Timer(timeout, self._expired, args=(name, timeout))
        t.daemon = True
        t.start()
        self._timer = t

    def _expired(self, name: str, timeout: float) -> None:
        _emit("fail", f"timeout in {name} ({timeout:g}s){client_error_hint()}")
        dump_client_log()
        sys.stderr.flush()
        os._exit(0)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


_last_client_error: list[str] = []


def note_client_error(msg: str) -> None:
    """Remember an error the client library reported on the side (logs, callbacks)."""
    msg = " ".join(str(msg).split())
    if msg and (not _last_client_error or _last_client_error[-1] != msg):
        _last_client_error.append(msg)
        del _last_client_error[:-3]


def client_error_hint() -> str:
    return f" (client reported: {_last_client_error[-1]})" if _last_client_error else ""


_ERR = re.compile(r"(\w+Response)(?:_v\d+)?\(.*?error_code=(-?[1-9]\d*)"
                  r"(?:, error_message='([^']*)')?")


class LogDiag(logging.Handler):
    """For the pure-Python clients' loggers (set to DEBUG): remember warnings, and
    responses that carry a non-zero error code, which they often retry silently."""

    def __init__(self, ignore: tuple[str, ...] = ()):
        super().__init__(logging.DEBUG)
        self.ignore = ignore

    recent: collections.deque = collections.deque(maxlen=4000)

    def emit(self, record):
        try:
            msg = record.getMessage()
        except Exception:
            return
        LogDiag.recent.append(f"{record.relativeCreated:9.0f} {record.threadName} "
                              f"{record.name}: {msg[:500]}")
        if any(i in msg for i in self.ignore):
            return
        if record.levelno >= logging.WARNING:
            note_client_error(msg[:300])
            return
        if "error_code=" in msg:
            m = _ERR.search(msg)
            if m:
                note_client_error(f"{m.group(1)} error_code={m.group(2)}"
                                  + (f" ({m.group(3)})" if m.group(3) else ""))

    @classmethod
    def install(cls, logger_name: str, debug: tuple[str, ...] = (),
                ignore: tuple[str, ...] = ()) -> None:
        """Warnings from the whole client; DEBUG only from the loggers in `debug` (the
        ones that print each response), as full debug logging costs a lot of CPU."""
        lg = logging.getLogger(logger_name)
        lg.addHandler(cls(ignore))
        lg.setLevel(logging.WARNING)
        lg.propagate = False
        for name in debug:
            logging.getLogger(name).setLevel(logging.DEBUG)


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise Fail(msg)


def wait_until(fn, timeout: float, what: str, interval: float = 0.2):
    """Call fn until it returns a truthy value; Fail with the last error otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # keep trying until the deadline
            last = e
        if time.monotonic() >= deadline:
            if last is not None:
                raise Fail(f"{what}: {short_exc(last)}")
            raise Fail(f"{what}: not reached in {timeout:g}s")
        time.sleep(interval)


def short_exc(e: BaseException) -> str:
    err = e.args[0] if e.args else None
    if hasattr(err, "name") and hasattr(err, "str") and callable(err.str):
        # confluent-kafka's KafkaException(KafkaError): "KafkaException _TIMED_OUT: text"
        return f"{type(e).__name__} {err.name()}: {err.str()}"
    if isinstance(e, TimeoutError) and not str(e).strip():
        return "TimeoutError: no answer in time"
    s = str(e).strip() or repr(e)
    name = type(e).__name__
    if name not in ("Fail", "NotApplicable") and not s.startswith(name):
        s = f"{name}: {s}"
    return " ".join(s.split())


def check_in_order(records, expect_total: int) -> None:
    """records: [(partition, offset, value_str)], values 'm<i>' / 'v<i>' with an index.

    Each partition's records must have increasing offsets and increasing indexes, and
    there must be expect_total distinct values."""
    vals = [r[2] for r in records]
    check(len(set(vals)) == len(vals), f"duplicates among {len(vals)} records")
    check(len(vals) == expect_total, f"got {len(vals)} records, expected {expect_total}")
    by_p: dict[int, list] = {}
    for p, o, v in records:
        by_p.setdefault(p, []).append((o, index_of(v)))
    for p, lst in by_p.items():
        offs = [o for o, _ in lst]
        idx = [i for _, i in lst]
        check(offs == sorted(offs) and len(set(offs)) == len(offs),
              f"partition {p}: offsets out of order {offs[:8]}")
        check(idx == sorted(idx), f"partition {p}: records out of produce order {idx[:8]}")


def disjoint_split(assigned) -> list[set[int]] | None:
    """Two members' partitions, once they are disjoint and cover partitions 0-2."""
    a = [set(x) for x in assigned]
    return a if (a[0] and a[1] and not (a[0] & a[1]) and a[0] | a[1] == {0, 1, 2}) else None


def check_split_reads(assign: list[set[int]], reads: list[list[tuple[int, int, str]]]) -> None:
    """Each member read only its own partitions, and together everything, in order."""
    for i, records in enumerate(reads):
        ps = {p for p, _, _ in records}
        check(ps <= assign[i], f"member {i} read partitions {ps}, assigned {assign[i]}")
    check_in_order([r for records in reads for r in records], S.N_SPREAD)


def run_split_members(ctx, loop, assigned, got, stop: threading.Event, errs: list,
                      produce_spread, join_timeout: float = 10) -> None:
    """Run two member threads (`loop(i)`), wait for disjoint assignments, produce the
    spread records, and check each member read only its own partitions."""
    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    assign = wait_until(lambda: disjoint_split(assigned), 40,
                        "disjoint assignments covering partitions 0-2")
    ctx.step("produce")
    produce_spread()
    ctx.step("both members read", 30)
    wait_until(lambda: len(got[0]) + len(got[1]) >= S.N_SPREAD, 25,
               "30 records read by the two members")
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(join_timeout)
    check(not errs, f"consumer error: {errs and short_exc(errs[0])}")
    check_split_reads(assign, got)


def index_of(v: str) -> int:
    digits = "".join(ch for ch in v.split("-")[0] if ch.isdigit())
    return int(digits) if digits else -1


def payload(kind: str, i: int) -> str:
    """Values for the compression rows: compressible, index first."""
    return f"z{i}-" + kind * 40


def dump_client_log() -> None:
    """On failure: the client library's recent log lines go to the scenario's log file."""
    if LogDiag.recent:
        sys.stderr.write("--- client log (last lines)\n" + "\n".join(LogDiag.recent) + "\n")


def main(table: dict) -> None:
    if len(sys.argv) != 4:
        print("usage: DRIVER SCENARIO BOOTSTRAP PREFIX", file=sys.stderr)
        sys.exit(2)
    scenario, bootstrap, prefix = sys.argv[1:4]
    ctx = Ctx(scenario, bootstrap, prefix)
    fn = table.get(scenario)
    if scenario not in S.SCENARIO_IDS:
        _emit("fail", f"unknown scenario {scenario}")
    elif fn is None:
        _emit("na", "not implemented by this client")
    else:
        try:
            fn(ctx)
            ctx.disarm()
            _emit("pass")
        except NotApplicable as e:
            ctx.disarm()
            _emit("na", str(e))
        except Fail as e:
            ctx.disarm()
            traceback.print_exc(file=sys.stderr)
            dump_client_log()
            _emit("fail", f"{ctx.current}: {short_exc(e)}{client_error_hint()}")
        except Exception as e:
            ctx.disarm()
            traceback.print_exc(file=sys.stderr)
            dump_client_log()
            msg = short_exc(e)
            hint = client_error_hint()
            _emit("fail", f"{ctx.current}: {msg}{hint if hint[19:-1] not in msg else ''}")
    sys.stdout.flush()
    sys.stderr.flush()
    # Don't let a client library's background threads hold the process open.
    os._exit(0)
