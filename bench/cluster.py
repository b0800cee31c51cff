"""The cluster benchmark of issue 9: three kwire brokers coordinated by ZooKeeper.

    python -m bench.cluster            # full run: 3 interleaved repetitions, 1,000,000 messages
    python -m bench.cluster --quick    # CI-sized (< 60 s): every phase runs once, small sizes

Per repetition: a single broker (no ZooKeeper) and a fresh cluster of N brokers
(RF=N, min.insync.replicas=2) each produce the same messages with acks=all; then, on the
cluster, a leader SIGKILL, a leader SIGTERM (controlled shutdown) and a preferred leader
election, each timed from the producer's side (unavailability) and from the brokers'
Metadata (convergence). The figures go to the "Cluster" section of bench/RESULTS.md
(quick: RESULTS-quick.md), which `python -m bench` keeps. See bench/README.md.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/cluster.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench import report, wire  # noqa: E402
from bench.brokers import (  # noqa: E402
    REPO,
    BrokerFailed,
    BrokerProcess,
    BrokerSpec,
    free_port,
    kwire_spec,
    last_error_line,
)

BENCH = Path(__file__).resolve().parent

# The command line of tests/cluster_harness.py's ZooKeeperServer (Debian's zookeeper package).
ZOOKEEPER_CLASSPATH = ":".join(f"/usr/share/java/{j}" for j in ("zookeeper.jar", "slf4j-log4j12.jar", "log4j-1.2.jar"))
ZOOKEEPER_CMD = ["java", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto"]
ZOOKEEPER_MAIN = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

SECTION_BEGIN, SECTION_END = report.CLUSTER_BEGIN, report.CLUSTER_END


@dataclass
class ClusterPlan:
    brokers: int = 3
    messages: int = 1_000_000
    size: int = 100
    partitions: int = 8
    reps: int = 3
    session_timeout_ms: int = 6000
    # Failovers of each kind (SIGKILL, SIGTERM) per repetition.
    failovers: int = 2
    steady_interval_ms: float = 1.0
    steady_warmup_s: float = 2.0
    # How long the producer keeps going after the cluster agreed on the new leader.
    steady_after_s: float = 2.0
    start_timeout: float = 30.0
    produce_timeout: float = 300.0
    rejoin_timeout: float = 90.0
    quick: bool = False
    overrides: dict = field(default_factory=dict)
    # Extra librdkafka settings for the failover phases' producer (e.g. retry.backoff.max.ms).
    steady_producer: dict = field(default_factory=dict)


def quick_plan() -> ClusterPlan:
    return ClusterPlan(messages=50_000, reps=1, failovers=1, steady_warmup_s=1.0, steady_after_s=1.0,
                       start_timeout=15.0, produce_timeout=40.0, rejoin_timeout=30.0, quick=True)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


# --------------------------------------------------------------------------- ZooKeeper

class ZooKeeper:
    """A standalone ZooKeeper on a free loopback port, tickTime 500 ms, own data dir."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        (base / "data").mkdir(parents=True, exist_ok=True)
        self.cfg = base / "zoo.cfg"
        self.cfg.write_text(f"tickTime=500\ndataDir={base / 'data'}\nclientPort={self.port}\n"
                            "clientPortAddress=127.0.0.1\nmaxSessionTimeout=60000\n"
                            "admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr\n")
        (base / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, FILE\nlog4j.appender.FILE=org.apache.log4j.FileAppender\n"
            f"log4j.appender.FILE.File={base}/zookeeper.log\n"
            "log4j.appender.FILE.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] %m%n\n")
        self.proc: subprocess.Popen | None = None

    @property
    def connect(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _ask(self, word: str) -> str:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(word.encode())
            chunks = []
            while chunk := s.recv(4096):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def start(self, timeout: float = 30.0) -> float:
        cmd = [*ZOOKEEPER_CMD, f"-Dzookeeper.log.dir={self.base}",
               f"-Dlog4j.configuration=file:{self.base / 'log4j.properties'}",
               "-cp", ZOOKEEPER_CLASSPATH, ZOOKEEPER_MAIN, str(self.cfg)]
        t0 = time.monotonic()
        with open(self.base / "zookeeper.out", "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ZooKeeper exited with code {self.proc.returncode} at start "
                                   f"(see {self.base})")
            with contextlib.suppress(OSError):
                if self._ask("ruok") == "imok" and "Mode:" in self._ask("srvr"):
                    return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise RuntimeError(f"ZooKeeper did not serve within {timeout:.0f} s (see {self.base})")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


# --------------------------------------------------------------------------- the cluster

class Cluster:
    """N kwire brokers (broker.id 1..N), each keeping its port and data dir across restarts."""

    def __init__(self, spec: BrokerSpec, workdir: Path, zk: ZooKeeper, chroot: str, n: int,
                 overrides: dict, start_timeout: float) -> None:
        from kazoo.client import KazooClient

        # kazoo warns when the chroot is not there yet at start: the brokers create it.
        warnings.filterwarnings("ignore", "No chroot path exists", UserWarning)
        self.spec, self.workdir, self.zk, self.chroot = spec, workdir, zk, chroot
        self.overrides = overrides
        self.start_timeout = start_timeout
        self.ids = list(range(1, n + 1))
        self.ports = {i: free_port() for i in self.ids}
        self.data_dirs = {i: workdir / f"{chroot.strip('/')}-b{i}-data" for i in self.ids}
        self.brokers: dict[int, BrokerProcess] = {}
        self.logs: list[Path] = []  # every broker process's log, for the error scan
        self._starts = 0
        self.kz = KazooClient(hosts=zk.connect + chroot, timeout=10)
        self._kz_started = False

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.ports[i]}" for i in self.ids)

    def pids(self) -> dict[int, int]:
        return {i: b.pid for i, b in self.brokers.items() if b.alive()}

    def start(self, broker_id: int) -> float:
        self._starts += 1
        data = self.data_dirs[broker_id]
        data.mkdir(parents=True, exist_ok=True)
        b = BrokerProcess(self.spec, self.workdir, f"{self.chroot.strip('/')}-b{broker_id}-{self._starts:02d}",
                          {**self.overrides, "broker.id": broker_id,
                           "zookeeper.connect": self.zk.connect + self.chroot}, data_dir=data)
        b.port = self.ports[broker_id]  # a restart comes back where the cluster knows it
        self.brokers[broker_id] = b
        self.logs.append(b.log_path)
        return b.start(self.start_timeout)

    def start_all(self) -> None:
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                self.start(i)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in self.ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        self.kz.start(timeout=15)
        self._kz_started = True
        self.wait(lambda: len(self.kz.get_children("/brokers/ids")) == len(self.ids), 30,
                  "every broker registered in /brokers/ids")

    @staticmethod
    def wait(pred, timeout: float, what: str, interval: float = 0.05):
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                v = pred()
                if v:
                    return v
            except Exception as e:  # noqa: BLE001
                last = e
            time.sleep(interval)
        raise TimeoutError(f"not within {timeout:.0f} s: {what}" + (f" (last error: {last!r})" if last else ""))

    def state(self, topic: str, partition: int = 0) -> tuple[dict, object]:
        data, stat = self.kz.get(f"/brokers/topics/{topic}/partitions/{partition}/state")
        return json.loads(data), stat

    def replicas(self, topic: str, partition: int = 0) -> list[int]:
        data, _ = self.kz.get(f"/brokers/topics/{topic}")
        return json.loads(data)["partitions"][str(partition)]

    def controller(self) -> int | None:
        try:
            data, _ = self.kz.get("/controller")
            return json.loads(data)["brokerid"]
        except Exception:  # noqa: BLE001
            return None

    def under_replicated(self) -> list[str]:
        """Partitions (of every topic) whose ISR is not all their replicas."""
        out = []
        for topic in self.kz.get_children("/brokers/topics"):
            assignment = json.loads(self.kz.get(f"/brokers/topics/{topic}")[0])["partitions"]
            for p, replicas in assignment.items():
                st, _ = self.state(topic, int(p))
                if sorted(st["isr"]) != sorted(replicas):
                    out.append(f"{topic}-{p} isr={st['isr']}")
        return out

    def stop_all(self, grace: float = 30.0) -> list[str]:
        """SIGTERM to every broker at once; what went wrong (an unclean exit)."""
        problems: list[str] = []

        def stop(i: int, b: BrokerProcess) -> None:
            if not b.alive():
                return
            b.stop(grace)
            if b.stop_note:
                problems.append(f"broker {i} at the end of the run: {b.stop_note}")

        threads = [threading.Thread(target=stop, args=(i, b)) for i, b in self.brokers.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self._kz_started:
            with contextlib.suppress(Exception):
                self.kz.stop()
                self.kz.close()
        return problems


# --------------------------------------------------------------------------- metadata convergence

class MetadataPoller:
    """Raw Metadata v1 requests for one topic to one broker on a kept connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.cid = 0

    def leader(self, topic: str, partition: int) -> int | None:
        try:
            if self.sock is None:
                self.sock = wire.connect("127.0.0.1", self.port, timeout=1.0)
            self.cid += 1
            md = wire.parse_metadata_v1(wire.roundtrip(self.sock, wire.metadata_v1_request(self.cid, [topic]),
                                                       self.cid))
            for idx, _err, leader in md["topics"].get(topic, (0, []))[1]:
                if idx == partition:
                    return leader
            return None
        except (OSError, ValueError, ConnectionError) as e:
            _ = e
            self.close()
            return None

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None


def converge(cluster: Cluster, topic: str, partition: int, old_leader: int, live: list[int],
             timeout: float) -> dict:
    """Poll ZooKeeper's partition state and every live broker's Metadata until the state
    names a leader other than `old_leader` and every live broker answers it. Convergence
    runs from the state znode's mtime (the controller's write, ZooKeeper's clock: this
    host's) to the last broker's first agreeing answer (time.time())."""
    pollers = {i: MetadataPoller(cluster.ports[i]) for i in live}
    agreed: dict[int, float] = {}
    zk_leader, mtime, epoch = old_leader, None, None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            st, stat = cluster.state(topic, partition)
            if st["leader"] != zk_leader or st["leader_epoch"] != epoch:
                if st["leader"] != zk_leader:
                    agreed.clear()  # a newer leader: agreement starts over
                zk_leader, epoch, mtime = st["leader"], st["leader_epoch"], stat.mtime / 1000
            if zk_leader != old_leader and zk_leader >= 0:
                for i, p in pollers.items():
                    if i not in agreed and p.leader(topic, partition) == zk_leader:
                        agreed[i] = time.time()
                if len(agreed) == len(pollers):
                    return {"ok": True, "leader": zk_leader, "leader_epoch": epoch,
                            "convergence_s": max(agreed.values()) - mtime,
                            "per_broker_s": {str(i): t - mtime for i, t in agreed.items()},
                            "written_at": mtime}
            time.sleep(0.002)
        what = (f"ZooKeeper names {zk_leader}; brokers agreeing: {sorted(agreed)} of {live}"
                if zk_leader != old_leader else f"ZooKeeper still names {old_leader} as leader")
        return {"ok": False, "error": f"no convergence within {timeout:.0f} s ({what})"}
    finally:
        for p in pollers.values():
            p.close()


# --------------------------------------------------------------------------- the runner

class Runner:
    def __init__(self, plan: ClusterPlan, spec: BrokerSpec, workdir: Path) -> None:
        self.plan = plan
        self.spec = spec
        self.workdir = workdir
        self.results: dict[str, list[dict]] = {}
        self.errors: list[str] = []
        self.notes: list[str] = []
        self.broker_logs: list[Path] = []
        self.zk_logs: list[Path] = []

    def record(self, phase: str, res: dict) -> None:
        self.results.setdefault(phase, []).append(res)
        if not res.get("ok"):
            self.error(f"{phase}: {res.get('error')}")
        for e in res.get("data_errors", ()) or ():
            self.error(f"{phase}: {e}")

    def error(self, msg: str) -> None:
        log("  ERROR " + msg.splitlines()[0][:300])
        self.errors.append(msg)

    def worker(self, phase: str, args: dict, timeout: float, logdir: Path) -> dict:
        args = {**args, "timeout": timeout}
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(logdir / f"client-{phase}.log", "ab") as errlog:
            proc = subprocess.Popen([sys.executable, "-m", "bench.cluster_worker", phase, json.dumps(args)],
                                    cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=errlog,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"ok": False, "error": f"client timed out after {timeout + 10:.0f} s (killed)"}
        lines = [ln for ln in out.decode(errors="replace").splitlines() if ln.startswith("RESULT ")]
        if not lines:
            return {"ok": False, "error": f"client exited with code {proc.returncode} and no result"}
        return json.loads(lines[-1][7:])

    # ------------------------------------------------------------ produce

    def produce_args(self, bootstrap: str, topic: str, rf: int, pids: dict, zk_pid: int | None) -> dict:
        p = self.plan
        return {"bootstrap": bootstrap, "topic": topic, "messages": p.messages, "size": p.size, "partitions": p.partitions,
                "replication_factor": rf, "acks": "all", "broker_pids": pids, "zk_pid": zk_pid}

    def run_single(self, rep: int) -> None:
        phase = "produce 1 broker"
        b = BrokerProcess(self.spec, self.workdir, f"r{rep}-single")
        self.broker_logs.append(b.log_path)
        try:
            b.start(self.plan.start_timeout)
        except BrokerFailed as e:
            self.record(phase, {"ok": False, "error": f"broker did not start: {e}"})
            return
        log(f"r{rep}: {phase}, {self.plan.partitions} partitions, acks=all ({self.plan.messages:,} x {self.plan.size} B)")
        res = self.worker("produce", self.produce_args(b.bootstrap, f"single-r{rep}", 1, {"1": b.pid}, None),
                          self.plan.produce_timeout, b.dir)
        if not res.get("ok") and not b.alive():
            res["error"] = f"{res.get('error')}; {b.describe_death()}"
        self.record(phase, res)
        if res.get("ok"):
            log(f"  {res['msgs_per_s']:,.0f} msgs/s  broker {res['cpu_s_per_m']:.2f} CPU s/M  "
                f"read back {res['read_back']:,}")
        b.stop()
        if b.stop_note:
            self.error(f"single broker r{rep}: {b.stop_note}")
        b.cleanup()

    def run_cluster(self, rep: int) -> None:
        p = self.plan
        base = self.workdir / f"r{rep}-zookeeper"
        zk = ZooKeeper(base)
        self.zk_logs.append(base / "zookeeper.log")
        try:
            zk.start()
        except RuntimeError as e:
            self.record("produce cluster", {"ok": False, "error": str(e)})
            return
        overrides = {
            "default.replication.factor": p.brokers, "min.insync.replicas": min(2, p.brokers),
            "offsets.topic.replication.factor": p.brokers,
            "zookeeper.session.timeout.ms": p.session_timeout_ms, **p.overrides,
        }
        cluster = Cluster(self.spec, self.workdir, zk, f"/kwire-bench-r{rep}", p.brokers, overrides, p.start_timeout)
        try:
            try:
                cluster.start_all()
            except (BrokerFailed, TimeoutError) as e:
                self.record("produce cluster", {"ok": False, "error": f"cluster did not start: {e}"})
                return
            log(f"r{rep}: cluster of {p.brokers} up (ZooKeeper :{zk.port}, brokers "
                f"{', '.join(f'{i}:{cluster.ports[i]}' for i in cluster.ids)}, controller {cluster.controller()})")
            self.cluster_produce(cluster, zk, rep)
            for k in range(p.failovers):
                for how in ("SIGKILL", "SIGTERM"):
                    if not self.failover(cluster, rep, k, how):
                        return
        finally:
            for problem in cluster.stop_all():
                self.error(f"r{rep}: {problem}")
            self.broker_logs.extend(cluster.logs)
            zk.stop()

    def cluster_produce(self, cluster: Cluster, zk: ZooKeeper, rep: int) -> None:
        p = self.plan
        phase = "produce cluster"
        log(f"r{rep}: {phase}, {p.partitions} partitions RF={p.brokers}, acks=all "
            f"({p.messages:,} x {p.size} B)")
        res = self.worker("produce", self.produce_args(cluster.bootstrap, f"cluster-r{rep}", p.brokers,
                                                       {str(i): pid for i, pid in cluster.pids().items()},
                                                       zk.proc.pid if zk.proc else None),
                          p.produce_timeout, cluster.workdir)
        dead = [i for i, b in cluster.brokers.items() if not b.alive()]
        if dead:
            res.setdefault("data_errors", []).append(
                "; ".join(f"broker {i} died: {cluster.brokers[i].describe_death()}" for i in dead))
        self.record(phase, res)
        if res.get("ok"):
            each = " ".join(f"{k.split()[-1]}:{v:.2f}" for k, v in res["cpu_s_per_m_each"].items())
            log(f"  {res['msgs_per_s']:,.0f} msgs/s  brokers {res['cpu_s_per_m']:.2f} CPU s/M ({each})  "
                f"ZooKeeper {res['zk_cpu_s_per_m']:.2f}  read back {res['read_back']:,}")
        for i in dead:
            cluster.start(i)

    # ------------------------------------------------------------ failover

    def failover(self, cluster: Cluster, rep: int, k: int, how: str) -> bool:
        """One leader failure under a steady acks=all producer; False if the cluster is unusable."""
        p = self.plan
        phase = f"failover {how}"
        topic = f"failover-r{rep}-{how.lower()}-{k}"
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "PYTHONUNBUFFERED": "1"}
        args = {"bootstrap": cluster.bootstrap, "topic": topic, "size": p.size, "replication_factor": p.brokers,
                "interval_ms": p.steady_interval_ms, "warmup_s": p.steady_warmup_s,
                "flush_s": 30.0, "timeout": 300.0, "producer_config": p.steady_producer}
        log(f"r{rep}: {phase} #{k + 1} (topic {topic}, one message every {p.steady_interval_ms:g} ms)")
        errlog = open(cluster.workdir / f"client-steady-{topic}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "bench.cluster_worker", "steady", json.dumps(args)],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=errlog,
                                stdin=subprocess.PIPE, start_new_session=True)
        errlog.close()
        lines: list[str] = []
        ready = threading.Event()

        def read_out() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                lines.append(line)
                if line == "READY":
                    ready.set()
            ready.set()

        reader = threading.Thread(target=read_out, daemon=True)
        reader.start()
        res: dict = {"ok": True, "topic": topic, "signal": how}
        victim = None
        try:
            if not ready.wait(60) or proc.poll() is not None and not any(ln == "READY" for ln in lines):
                res = {"ok": False, "error": "steady producer not ready: "
                       + next((ln for ln in lines if ln.startswith("RESULT ")), "no acknowledgement in 60 s")}
                return self.record(phase, res) or True
            time.sleep(1.0)
            st, _ = cluster.state(topic)
            victim = st["leader"]
            controller = cluster.controller()
            res.update(victim=victim, victim_was_controller=victim == controller, old_epoch=st["leader_epoch"])
            b = cluster.brokers[victim]
            exited: list[float] = []
            waiter = threading.Thread(target=lambda: (b.proc.wait(), exited.append(time.monotonic())),
                                      daemon=True)
            b.stop_sent = time.monotonic()  # the harness's own signal, not one from outside
            b.stopped_by_harness = True
            t_sig, t_sig_wall = time.monotonic(), time.time()
            os.kill(b.pid, signal.SIGKILL if how == "SIGKILL" else signal.SIGTERM)
            res["t_signal"] = t_sig
            waiter.start()
            live = [i for i in cluster.ids if i != victim]
            conv = converge(cluster, topic, 0, victim, live, p.session_timeout_ms / 1000 + 30)
            self.record(f"metadata convergence after {how}", {**conv, "victim": victim})
            if conv.get("ok"):
                # When the controller wrote the new leader, from the signal (both on this host's clock).
                res["leader_written_s"] = conv["written_at"] - t_sig_wall
            time.sleep(p.steady_after_s)
        finally:
            if proc.poll() is None and proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.write(b"STOP\n")
                    proc.stdin.flush()
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            reader.join(5)
        out = next((ln for ln in reversed(lines) if ln.startswith("RESULT ")), None)
        steady = json.loads(out[7:]) if out else {"ok": False, "error": f"steady producer exited with "
                                                                         f"{proc.returncode} and no result"}
        if not steady.get("ok"):
            res = {**res, "ok": False, "error": steady.get("error")}
        else:
            (cluster.workdir / f"steady-{topic}.json").write_text(json.dumps(
                {"t_signal": res["t_signal"], "sent": steady["sent"], "acked": steady["acked"]}))
            res.update(failover_figures(steady["sent"], steady["acked"], res["t_signal"]))
            if res.get("unavailable_s") is not None and res.get("leader_written_s") is not None:
                res["write_to_ack_s"] = res["unavailable_s"] - res["leader_written_s"]
            res.update(messages=steady["messages"], read_back=steady["read_back"],
                       data_errors=steady["data_errors"], errors_seen=steady["errors_seen"])
        # The stopped broker: a SIGTERM must end in exit 0 (a controlled shutdown).
        if victim is not None:
            b = cluster.brokers[victim]
            try:
                code = b.proc.wait(30)
            except subprocess.TimeoutExpired:
                code = None
                self.error(f"{phase}: broker {victim} still running 30 s after {how}; killed")
                b.proc.kill()
                b.proc.wait(10)
            if how == "SIGTERM":
                res["exit_code"] = code
                res["exit_s"] = (exited[0] - res["t_signal"]) if exited else None
                if code != 0:
                    self.error(f"{phase}: broker {victim} exited with code {code} on SIGTERM "
                               f"({b.describe_death()})")
        self.record(phase, res)
        if res.get("ok"):
            log(f"  {how} broker {victim}{' (controller)' if res.get('victim_was_controller') else ''}: "
                f"unavailable {res['unavailable_s']:.3f} s, ack gap {res['ack_gap_s']:.3f} s"
                + (f", exited after {res['exit_s']:.2f} s" if res.get("exit_s") is not None else ""))
        conv = self.results[f"metadata convergence after {how}"][-1] if victim is not None else None
        if conv and conv.get("ok"):
            log(f"  metadata converged {conv['convergence_s'] * 1000:.1f} ms after the controller wrote "
                f"leader {conv['leader']} (epoch {conv['leader_epoch']})")
        if victim is None:
            return True
        return self.rejoin_and_elect(cluster, topic, victim, how)

    def rejoin_and_elect(self, cluster: Cluster, topic: str, victim: int, how: str) -> bool:
        """Restart the stopped broker on its data, wait until every ISR is whole again, then
        elect the preferred leader of the topic's partition 0 and time the Metadata convergence."""
        p = self.plan
        t0 = time.monotonic()
        try:
            cluster.start(victim)
            cluster.wait(lambda: not cluster.under_replicated(), p.rejoin_timeout,
                         f"broker {victim} back in every ISR")
        except (BrokerFailed, TimeoutError) as e:
            try:
                detail = "; under-replicated: " + ", ".join(cluster.under_replicated()[:8])
            except Exception:  # noqa: BLE001
                detail = ""
            self.record("rejoin", {"ok": False, "error": f"after {how}: {e}{detail}"})
            return False
        self.record("rejoin", {"ok": True, "rejoin_s": time.monotonic() - t0, "after": how})
        log(f"  broker {victim} restarted and back in every ISR after {time.monotonic() - t0:.2f} s")
        st, _ = cluster.state(topic)
        preferred = cluster.replicas(topic)[0]
        if st["leader"] == preferred:
            self.notes.append(f"{topic}: leader {st['leader']} is already the preferred replica: no election")
            return True
        from confluent_kafka import ElectionType, TopicPartition
        from confluent_kafka.admin import AdminClient

        # log_level 2: not librdkafka's lines about brokers that the harness stops later.
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap, "log_level": 2})
        # Poll from before the request: ElectLeaders is answered once the controller's own
        # Metadata shows the new leader, the other brokers may agree before that.
        box: dict = {}
        poller = threading.Thread(target=lambda: box.update(converge(cluster, topic, 0, st["leader"],
                                                                     list(cluster.ids), 30)))
        poller.start()
        attempts, err, deadline = 0, None, time.monotonic() + 15
        while True:
            attempts += 1
            try:
                answer = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition(topic, 0)]).result(30)
                err = next((e for e in answer.values() if e is not None), None)
            except Exception as e:  # noqa: BLE001
                err = e
            # Right after the ISR is whole in ZooKeeper the controller may not know it yet:
            # retry as a client would, and say so.
            if err is None or "PREFERRED_LEADER_NOT_AVAILABLE" not in str(err) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if attempts > 1:
            self.notes.append(f"{topic}: ElectLeaders answered PREFERRED_LEADER_NOT_AVAILABLE {attempts - 1} "
                              f"time(s) after ZooKeeper showed the ISR whole (retried every 0.2 s)")
        poller.join()
        conv = box if err is None else {"ok": False, "error": f"ElectLeaders ({attempts} attempts): {err}"}
        self.record("metadata convergence after preferred election", {**conv, "victim": None})
        if conv.get("ok"):
            log(f"  preferred election to {preferred}: metadata converged "
                f"{conv['convergence_s'] * 1000:.1f} ms after the controller's write")
        return True

    def run(self) -> None:
        for rep in range(self.plan.reps):
            # Interleaved, alternating which goes first, so that drift hits both alike.
            order = (self.run_single, self.run_cluster) if rep % 2 == 0 else (self.run_cluster, self.run_single)
            for step in order:
                step(rep)


def failover_figures(sent: list[float], acked: list[float | None], t_signal: float) -> dict:
    """unavailable_s: from the signal to the first ack of a message produced after it;
    ack_gap_s: the longest pause between consecutive acks around the signal (from 1 s before);
    also the last ack before and the first ack after the signal."""
    after = [a for s, a in zip(sent, acked, strict=True) if s > t_signal and a is not None]
    acks = sorted(a for a in acked if a is not None)
    before = [a for a in acks if a <= t_signal]
    later = [a for a in acks if a > t_signal]
    window = [a for a in acks if a >= t_signal - 1.0]
    gaps = [b - a for a, b in zip(window, window[1:], strict=False)]
    # The last second before the signal (after the warm-up): the ack latency of a healthy
    # cluster, for comparison. And the first message's, on a topic just created.
    lat = sorted(a - s for s, a in zip(sent, acked, strict=True)
                 if a is not None and t_signal - 1.0 <= s <= t_signal - 0.1)
    return {
        "first_ack_ms": (acked[0] - sent[0]) * 1000 if sent and acked[0] is not None else None,
        "steady_p50_ms": lat[len(lat) // 2] * 1000 if lat else None,
        "steady_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else None,
        "steady_max_ms": lat[-1] * 1000 if lat else None,
        "unavailable_s": (min(after) - t_signal) if after else None,
        "ack_gap_s": max(gaps) if gaps else None,
        "last_ack_before_s": (before[-1] - t_signal) if before else None,
        "first_ack_after_s": (later[0] - t_signal) if later else None,
        "sent_after_signal": sum(1 for s in sent if s > t_signal),
    }


# --------------------------------------------------------------------------- report

LOG_PROBLEM = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b|Exception")


TRACEBACK_FRAME = re.compile(r"^[\s|+]*(Traceback|Exception Group Traceback|ExceptionGroup:)")


def scan_logs(paths: list[Path], limit: int = 12) -> tuple[int, list[str]]:
    """Lines of the broker logs that say something went wrong (count, a few excerpts). A
    traceback is quoted by the line logged before it and its last line (the exception)."""
    count, excerpts = 0, []
    for path in paths:
        with contextlib.suppress(OSError):
            lines = path.read_text(errors="replace").splitlines()
            quoted_traceback = False
            for i, line in enumerate(lines):
                if not LOG_PROBLEM.search(line):
                    continue
                count += 1
                if len(excerpts) >= limit:
                    continue
                if TRACEBACK_FRAME.match(line):
                    if not quoted_traceback:
                        quoted_traceback = True
                        before = next((x for x in reversed(lines[:i]) if not x.startswith((" ", "|", "+"))), "")
                        excerpts.append(f"{path.parent.name}: {before.strip()[:300]}")
                        excerpts.append(f"{path.parent.name}: ... {last_error_line(chr(10).join(lines[i:]))}")
                    continue
                excerpts.append(f"{path.parent.name}: {line.strip()[:300]}")
    return count, excerpts


def fig(v, scale: float = 1.0, dec: int = 2) -> str:
    if v is None:
        return "ERROR"
    v = v * scale
    return f"{v:,.0f}" if dec == 0 else f"{v:,.{dec}f}"


def render(plan: ClusterPlan, runner: Runner, elapsed: float, command: str, load_before: str,
           version: str) -> str:
    res = runner.results

    def ok(phase: str) -> list[dict]:
        return [r for r in res.get(phase, []) if r.get("ok")]

    def med(phase: str, key: str):
        vals = [r[key] for r in ok(phase) if r.get(key) is not None]
        return median(vals)

    def count(phase: str) -> str:
        return f"{len(ok(phase))}/{len(res.get(phase, []))}"

    single, clus = "produce 1 broker", "produce cluster"
    rows = []

    def row(figure: str, a, b, dec: int = 2) -> None:
        ratio = f"{b / a:.2f}" if a and b is not None else ""
        rows.append(f"| {figure} | {fig(a, dec=dec)} | {fig(b, dec=dec)} | {ratio} |")

    row("msgs/s", med(single, "msgs_per_s"), med(clus, "msgs_per_s"), 0)
    row("MB/s", med(single, "mb_per_s"), med(clus, "mb_per_s"), 1)
    row("broker CPU s / M msgs (all brokers summed)", med(single, "cpu_s_per_m"), med(clus, "cpu_s_per_m"))
    for i in range(1, plan.brokers + 1):
        vals = [r["cpu_s_per_m_each"].get(f"broker {i}") for r in ok(clus)]
        rows.append(f"| broker CPU s / M msgs, broker {i} |  | {fig(median([v for v in vals if v is not None]))} |  |")
    rows.append(f"| ZooKeeper CPU s / M msgs |  | {fig(med(clus, 'zk_cpu_s_per_m'), dec=3)} |  |")
    rows.append(f"| runs ok | {count(single)} | {count(clus)} |  |")

    session = plan.session_timeout_ms / 1000
    frows = []

    def frow(figure: str, phase: str, key: str, target: float | None, target_text: str = "") -> None:
        # "failover *": the SIGKILL and the SIGTERM runs together.
        phases = ["failover SIGKILL", "failover SIGTERM"] if phase == "failover *" else [phase]
        vals = [r[key] for ph in phases for r in ok(ph) if r.get(key) is not None]
        runs = sum(len(res.get(ph, [])) for ph in phases)
        m, mx = median(vals), (max(vals) if vals else None)
        met = "" if target is None or m is None else ("yes" if mx <= target else ("median only" if m <= target else "NO"))
        frows.append(f"| {figure} | {fig(m, dec=3)} | {fig(mx, dec=3)} | {target_text} | {met} | {len(vals)}/{runs} |")

    frow("SIGKILL of the leader: unavailable, s (kill to first ack of a later message)", "failover SIGKILL",
         "unavailable_s", session + 2, f"≤ {session + 2:g} s")
    frow("SIGKILL: longest pause between acks, s", "failover SIGKILL", "ack_gap_s", session + 2, f"≤ {session + 2:g} s")
    frow("SIGKILL: signal to the controller's write of the new leader, s", "failover SIGKILL", "leader_written_s", None)
    frow("SIGKILL: that write to the first ack, s", "failover SIGKILL", "write_to_ack_s", None)
    for key, what in (("steady_p50_ms", "p50"), ("steady_p99_ms", "p99"), ("steady_max_ms", "max")):
        frow(f"steady producer, the last second before the signal: ack latency {what}, ms", "failover *", key, None)
    frow("steady producer: ack latency of the first message to a new topic, ms", "failover *", "first_ack_ms", None)
    frow("SIGTERM of the leader: unavailable, s", "failover SIGTERM", "unavailable_s", 1.0, "< 1 s")
    frow("SIGTERM: longest pause between acks, s", "failover SIGTERM", "ack_gap_s", 1.0, "< 1 s")
    frow("SIGTERM: signal to process exit, s", "failover SIGTERM", "exit_s", None)
    frow("SIGTERM: signal to the controller's write of the new leader, s", "failover SIGTERM", "leader_written_s", None)
    frow("SIGTERM: that write to the first ack, s", "failover SIGTERM", "write_to_ack_s", None)
    frow("Metadata convergence after SIGKILL, s (controller's write to all brokers agreeing)",
         "metadata convergence after SIGKILL", "convergence_s", 1.0, "< 1 s")
    frow("Metadata convergence after SIGTERM, s", "metadata convergence after SIGTERM", "convergence_s", 1.0, "< 1 s")
    frow("Metadata convergence after a preferred leader election, s",
         "metadata convergence after preferred election", "convergence_s", 1.0, "< 1 s")
    frow("restarted broker back in every ISR, s", "rejoin", "rejoin_s", None)

    runs = []
    for phase, what in ((single, "1 broker"), (clus, f"{plan.brokers} brokers")):
        each = [f"{r['msgs_per_s']:,.0f} msgs/s at {r['cpu_s_per_m']:.2f} CPU s/M" for r in ok(phase)]
        if each:
            runs.append(f"- produce, {what}: " + "; ".join(each))
    for how in ("SIGKILL", "SIGTERM"):
        for r in res.get(f"failover {how}", []):
            if r.get("ok"):
                runs.append(f"- {how} {r['topic']}: broker {r['victim']}"
                            f"{' (the controller)' if r.get('victim_was_controller') else ''}: unavailable "
                            f"{fig(r.get('unavailable_s'), dec=3)} s, ack gap {fig(r.get('ack_gap_s'), dec=3)} s, "
                            f"last ack {fig(r.get('last_ack_before_s'), dec=3)} s / first ack "
                            f"{fig(r.get('first_ack_after_s'), dec=3)} s around the signal"
                            + (f", exit {r['exit_code']} after {fig(r.get('exit_s'))} s" if how == "SIGTERM" else "")
                            + (f"; new leader written after {fig(r.get('leader_written_s'), dec=3)} s"
                               if r.get("leader_written_s") is not None else "")
                            + f"; {r['messages']:,} sent, {r['read_back']:,} read back")
    conv_runs = []
    for what in ("SIGKILL", "SIGTERM", "preferred election"):
        vals = [f"{r['convergence_s'] * 1000:.0f}" for r in ok(f"metadata convergence after {what}")]
        if vals:
            conv_runs.append(f"- after {what}: {', '.join(vals)} ms")

    log_count, excerpts = scan_logs(runner.broker_logs)
    m = report.machine()
    load_after = report.loadavg()
    out = [
        SECTION_BEGIN,
        "## Cluster",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M:%S %Z')} in {elapsed:.0f} s "
        f"(issue 9's cluster figures; how to read them: [README.md](README.md#cluster)).",
        "",
        f"- machine: {m['nproc']} cores ({m['CPU']}), {m['RAM']}, kernel {m['kernel']}; load average before / "
        f"after: {load_before} / {load_after}",
        f"- measured: {version}; ZooKeeper: Debian's package, standalone, tickTime=500",
        f"- {'quick run' if plan.quick else 'full run'}: {plan.reps} repetition(s), single broker and cluster "
        "interleaved (alternating which goes first), each freshly started; figures are medians",
        f"- cluster: {plan.brokers} brokers, default.replication.factor={plan.brokers}, min.insync.replicas="
        f"{min(2, plan.brokers)}, offsets.topic.replication.factor={plan.brokers}, "
        f"zookeeper.session.timeout.ms={plan.session_timeout_ms}"
        + (f", {plan.overrides}" if plan.overrides else ""),
        f"- produce: {plan.messages:,} messages of {plan.size} B, {plan.partitions} partitions (RF={plan.brokers}; "
        "the single broker RF=1), acks=all, linger.ms=5, batch.size=1000000; each message carries its "
        "sequence number and every one is read back exactly once afterwards",
        f"- failover: an idempotent acks=all producer (linger.ms=0, message.timeout.ms=300000) sends one message "
        f"every {plan.steady_interval_ms:g} ms to partition 0 of a fresh 1-partition RF={plan.brokers} topic"
        + (f" (and {plan.steady_producer})" if plan.steady_producer else "") + "; "
        f"the harness signals that partition's leader ({plan.failovers} SIGKILL and {plan.failovers} SIGTERM "
        "per repetition), restarts it, waits until every ISR is whole, then elects the preferred leader",
        "",
        f"| produce, acks=all | 1 broker | {plan.brokers} brokers | ratio |",
        "|---|---|---|---|",
        *rows,
        "",
        "| failover | median | max | target | met | runs ok |",
        "|---|---|---|---|---|---|",
        *frows,
        "",
        "*unavailable* is issue 9's figure: from the signal to the first acknowledgement of a message produced "
        "after it. After a SIGTERM the old leader keeps answering until the controller has moved its partitions, "
        "so that first ack can come before the outage; *longest pause between acks* (from 1 s before the "
        "signal on) is the outage as the producer sees it, and is held to the same target. *met*: yes when the "
        "slowest run meets the target, *median only* when only the median does.",
        "",
        "Runs:",
        "",
        *(runs or ["- none"]),
        "",
        "Metadata convergence, each run:",
        "",
        *(conv_runs or ["- none"]),
        "",
        "### Cluster errors",
        "",
        *report._listed(runner.errors),
        "",
        f"### Broker logs: {log_count} line(s) with ERROR, Exception or Traceback",
        "",
    ]
    if excerpts:
        out += ["```", *excerpts, "```", ""]
    out += ["### Cluster notes", "", *report._listed(runner.notes), "", SECTION_END, ""]
    return "\n".join(out)



def snapshot(rev: str, dest: Path) -> str:
    """kwire/ as committed in `rev` (or the working tree as it is now, for `rev` "tree"),
    put in `dest`, first on every broker's PYTHONPATH (the editable install's finder comes
    after it), so that every broker of the run runs the same code. Built extensions are not
    in git: those of the working tree are copied in when their source is unchanged since `rev`."""
    dest.mkdir(parents=True, exist_ok=True)
    if rev == "tree":
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "kwire"], check=True,
                               capture_output=True, text=True).stdout.splitlines()
        shutil.copytree(REPO / "kwire", dest / "kwire", ignore=shutil.ignore_patterns("__pycache__"))
        compileall.compile_dir(str(dest / "kwire"), quiet=1)
        os.environ["PYTHONPATH"] = str(dest) + os.pathsep + os.environ.get("PYTHONPATH", "")
        return (f"kwire working tree copied at the start of the run: commit {head}"
                + (f" + uncommitted changes in {len(dirty)} file(s) under kwire/ ({', '.join(d[3:] for d in dirty)})"
                   if dirty else ""))
    full = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], check=True,
                          capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", full, "kwire"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    copied = []
    for so in (REPO / "kwire").rglob("*.so"):
        source = so.with_name(so.name.split(".", 1)[0] + ".c")
        rel = source.relative_to(REPO)
        same = subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", full, "--", str(rel)]).returncode == 0
        if source.exists() and same:
            shutil.copy2(so, dest / so.relative_to(REPO))
            copied.append(so.name)
    compileall.compile_dir(str(dest / "kwire"), quiet=1)
    os.environ["PYTHONPATH"] = str(dest) + os.pathsep + os.environ.get("PYTHONPATH", "")
    where = subprocess.run([sys.executable, "-c", "import kwire; print(kwire.__file__)"], cwd=dest.parent,
                           capture_output=True, text=True).stdout.strip()
    if not where.startswith(str(dest)):
        raise RuntimeError(f"the brokers would import kwire from {where}, not from {dest}")
    last = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %s", full, "--", "kwire"],
                          capture_output=True, text=True).stdout.strip()
    last = last if len(last) <= 90 else last[:87] + "..."
    return f"kwire at commit {full} (kwire/ last changed by {last}; git archive" + (f"; built {', '.join(copied)} from the working tree" if copied
                                                      else "") + ")"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI-sized: 50,000 messages, one repetition (< 60 s)")
    ap.add_argument("--brokers", type=int, help="brokers in the cluster (default 3)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    ap.add_argument("--failovers", type=int, help="SIGKILL and SIGTERM failovers per repetition (default 1)")
    ap.add_argument("--messages", type=int, help="messages in the produce phase (default 1,000,000)")
    ap.add_argument("--kwire-override", action="append", default=[], metavar="KEY=VALUE",
                    help="extra broker config for every broker (repeatable)")
    ap.add_argument("--steady-producer", action="append", default=[], metavar="KEY=VALUE",
                    help="extra librdkafka setting for the failover phases' producer (repeatable)")
    ap.add_argument("--commit", metavar="REV",
                    help="run the brokers on kwire/ as committed in REV (git archive into the work dir), "
                         "or on a copy of the working tree made at the start for REV 'tree'; without it the "
                         "brokers import the working tree itself, which others may be editing during the run")
    ap.add_argument("--output", help="results file whose Cluster section is replaced "
                                     "(default bench/RESULTS.md; quick: bench/RESULTS-quick.md)")
    ap.add_argument("--workdir", default=str(BENCH / ".work"), help="broker data and logs (default bench/.work)")
    ap.add_argument("--fail-on-error", action="store_true", help="exit 1 on any error (always on with --quick)")
    args = ap.parse_args(argv)

    plan = quick_plan() if args.quick else ClusterPlan()
    for name in ("brokers", "reps", "failovers", "messages"):
        if getattr(args, name):
            setattr(plan, name, getattr(args, name))
    plan.overrides = dict(kv.split("=", 1) for kv in args.kwire_override)
    plan.steady_producer = dict(kv.split("=", 1) for kv in args.steady_producer)
    spec = kwire_spec(None, [])
    if spec.unavailable:
        print(f"kwire: {spec.unavailable}", file=sys.stderr)
        return 2
    try:
        import confluent_kafka  # noqa: F401
        import kazoo  # noqa: F401
    except ImportError as e:
        print(f"{e.name} is missing: pip install -r bench/requirements.txt", file=sys.stderr)
        return 2
    if not Path("/usr/share/java/zookeeper.jar").exists():
        print("ZooKeeper is missing: apt-get install zookeeper (scripts/test-all does)", file=sys.stderr)
        return 2
    workdir = Path(args.workdir) / (time.strftime("%Y%m%d-%H%M%S") + "-cluster")
    workdir.mkdir(parents=True, exist_ok=True)
    output = Path(args.output) if args.output else BENCH / ("RESULTS-quick.md" if plan.quick else "RESULTS.md")
    log(f"plan: {json.dumps(asdict(plan))}; logs in {workdir}")
    if args.commit:
        try:
            version = snapshot(args.commit, workdir / "src")
        except (subprocess.CalledProcessError, RuntimeError) as e:
            print(f"--commit {args.commit}: {e}", file=sys.stderr)
            return 2
    else:
        compileall.compile_dir(str(REPO / "kwire"), quiet=1)
        version = spec.version() + " (the working tree as it was at each broker's start)"
    load_before = report.loadavg()
    t0 = time.monotonic()
    runner = Runner(plan, spec, workdir)
    try:
        runner.run()
    except KeyboardInterrupt:
        log("interrupted; writing what was measured")
    elapsed = time.monotonic() - t0
    (workdir / "results.json").write_text(json.dumps(
        {"plan": asdict(plan), "results": runner.results, "errors": runner.errors, "notes": runner.notes,
         "version": version}, indent=1, default=str))
    command = " ".join(["python -m bench.cluster", *(argv if argv is not None else sys.argv[1:])])
    section = render(plan, runner, elapsed, command, load_before, version)
    report.splice_section(output, section, SECTION_BEGIN, SECTION_END)
    print(section)
    log(f"done in {elapsed:.0f} s; wrote the Cluster section of {output}")
    if runner.errors:
        log(f"{len(runner.errors)} error(s)")
    if (args.fail_on_error or plan.quick) and runner.errors:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
