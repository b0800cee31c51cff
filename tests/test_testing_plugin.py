"""kwire.testing: Broker() and Cluster() driven by real clients, fault injection seen by
confluent-kafka, and the pytest plugin used from a separate project installed with pip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import kwire
from kwire.testing import AdminError, Broker, BrokerStartError, Cluster
from kwire.testing.zookeeper import zookeeper_missing

TIMEOUT = 30.0
REPO = Path(__file__).resolve().parent.parent


def create_topic(bootstrap: str, topic: str, partitions: int = 1, replicas: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, replicas)]).values():
        future.result(TIMEOUT)


def produce(bootstrap: str, topic: str, values: list[bytes], **config: object) -> list[KafkaError | None]:
    """Produce `values` in order (acks=all) and flush; each message's delivery error."""
    errors: list[KafkaError | None] = []
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", **config})
    for value in values:
        producer.produce(topic, value, on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(TIMEOUT) == 0, "messages still in flight after the timeout"
    return errors


def consume_all(bootstrap: str, topic: str, n: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{topic}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(values) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            values.append(msg.value())
    finally:
        consumer.close()
    return values


def http_get(url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return response.status, response.read()


# ------------------------------------------------------------------------------------ Broker


def test_broker_starts_fast_and_serves_confluent_kafka() -> None:
    began = time.monotonic()
    with Broker() as broker:
        started = time.monotonic() - began
        print(f"Broker() ready in {started:.3f}s (exec to ready line {broker.start_seconds[0]:.3f}s)")
        assert started < 3.0
        assert broker.running
        host, port = broker.bootstrap.split(":")
        assert host == "127.0.0.1" and int(port) == broker.port > 0
        assert broker.http_url.startswith("http://127.0.0.1:")
        assert http_get(broker.http_url + "/health")[0] == 200
        assert broker.data_dir == broker.directory / "data"

        create_topic(broker.bootstrap, "greetings")
        values = [f"hello {i}".encode() for i in range(20)]
        assert produce(broker.bootstrap, "greetings", values) == [None] * 20
        assert consume_all(broker.bootstrap, "greetings", 20) == values
        assert (broker.data_dir / "greetings-0").is_dir()
        assert "listening on PLAINTEXT://127.0.0.1:" in broker.log_text()
        directory = broker.directory
    # Leaving the block: a clean stop, and the temp dir is gone.
    assert not broker.running
    assert not directory.exists()


def test_kill_and_restart_keep_committed_data_and_ports(tmp_path: Path) -> None:
    broker = Broker({"num.partitions": 2}, directory=tmp_path / "b")
    try:
        broker.start()
        port, http_url = broker.port, broker.http_url
        values = [f"v{i}".encode() for i in range(50)]
        assert produce(broker.bootstrap, "kept", values) == [None] * 50
        broker.kill()  # SIGKILL: nothing flushed at shutdown
        assert not broker.running
        broker.restart()
        assert (broker.port, broker.http_url) == (port, http_url)
        assert sorted(consume_all(broker.bootstrap, "kept", 50)) == sorted(values)
        assert broker.log_text().count("kwire broker 0 listening on") == 2
        assert broker.stop() == 0  # SIGTERM: clean
        assert broker.stop() is None  # not running: nothing to stop
    finally:
        broker.close()
    # A directory given by the caller is kept (the log too).
    assert (tmp_path / "b" / "broker.log").exists()


def test_a_bad_config_fails_the_start_with_the_broker_s_reason() -> None:
    broker = Broker({"num.partitions": "many"})
    try:
        with pytest.raises(BrokerStartError, match="num.partitions"):
            broker.start()
        assert not broker.running
    finally:
        broker.close()


# ------------------------------------------------------------------------- fault injection


def test_injected_produce_error_is_what_confluent_kafka_sees() -> None:
    with Broker() as broker:
        create_topic(broker.bootstrap, "orders")
        assert produce(broker.bootstrap, "orders", [b"before"]) == [None]

        rule = broker.inject_fault("Produce", 2, error="NOT_ENOUGH_REPLICAS")
        assert (rule["api"], rule["count"], rule["remaining"]) == ("Produce", 2, 2)
        assert [(r["id"], r["remaining"]) for r in broker.faults()] == [(rule["id"], 2)]
        # No retries: the delivery report carries the injected error itself.
        errors = produce(broker.bootstrap, "orders", [b"refused"], retries=0)
        assert errors[0] is not None and errors[0].code() == KafkaError.NOT_ENOUGH_REPLICAS
        assert [r["remaining"] for r in broker.faults()] == [1]
        assert broker.clear_faults() == 1
        assert broker.faults() == []

        # NOT_LEADER_OR_FOLLOWER: librdkafka refreshes its metadata and retries (without
        # counting it against `retries`, nothing was written): delivered once.
        broker.inject_fault("Produce", 2, error=6)
        assert produce(broker.bootstrap, "orders", [b"retried"], retries=0) == [None]
        assert broker.faults() == []
        assert consume_all(broker.bootstrap, "orders", 2) == [b"before", b"retried"]


def test_injected_delay_and_dropped_connection() -> None:
    with Broker() as broker:
        create_topic(broker.bootstrap, "slow")
        assert produce(broker.bootstrap, "slow", [b"warm"]) == [None]
        broker.inject_fault("Produce", 1, delay_ms=800)
        began = time.monotonic()
        assert produce(broker.bootstrap, "slow", [b"late"]) == [None]
        took = time.monotonic() - began
        print(f"a produce delayed 800 ms took {took:.2f}s")
        assert took >= 0.8

        # A dropped connection: the client reconnects and retries.
        broker.inject_fault("Produce", 1, drop_connection=True)
        assert produce(broker.bootstrap, "slow", [b"after drop"], **{"retry.backoff.ms": 10}) == [None]
        assert broker.faults() == []

        broker.inject_fault("Fetch", 5, delay_ms=1)
        broker.inject_fault("Metadata", 5, delay_ms=1)
        assert len(broker.faults()) == 2
        assert broker.clear_faults() == 2
        assert broker.faults() == []


def test_fault_api_errors_are_clear() -> None:
    with Broker() as broker:
        with pytest.raises(AdminError) as info:
            broker.inject_fault("NoSuchApi", 1, error="NOT_LEADER_OR_FOLLOWER")
        assert info.value.status == 400 and "NoSuchApi" in info.value.message
        with pytest.raises(AdminError) as info:
            broker.remove_fault(12345)
        assert info.value.status == 404
    with Broker({"http.admin.enable": False}) as broker:
        with pytest.raises(AdminError) as info:
            broker.faults()
        assert info.value.status == 404 and "http.admin.enable" in info.value.message


# ----------------------------------------------------------------------------------- Cluster


@pytest.mark.skipif(zookeeper_missing() is not None, reason=str(zookeeper_missing()))
def test_cluster_survives_a_killed_broker_and_takes_it_back() -> None:
    began = time.monotonic()
    with Cluster(size=3) as cluster:
        print(f"Cluster(size=3) formed in {time.monotonic() - began:.2f}s (ZooKeeper included)")
        assert len(cluster.bootstrap.split(",")) == 3
        assert [b.broker_id for b in cluster.brokers] == [1, 2, 3]
        create_topic(cluster.bootstrap, "replicated", partitions=3, replicas=3)
        first = [f"a{i}".encode() for i in range(30)]
        assert produce(cluster.bootstrap, "replicated", first) == [None] * 30

        victim = cluster.brokers[0]
        port = victim.port
        victim.kill()
        second = [f"b{i}".encode() for i in range(30)]
        assert produce(cluster.bootstrap, "replicated", second) == [None] * 30

        began = time.monotonic()
        victim.restart()
        cluster.wait_for_brokers()
        print(f"killed broker back in the cluster in {time.monotonic() - began:.2f}s")
        assert victim.port == port and victim.broker_id == 1
        assert sorted(consume_all(cluster.bootstrap, "replicated", 60)) == sorted(first + second)
        assert cluster.broker(1) is victim


# ----------------------------------------------------- the plugin, from a project of its own


def test_the_plugin_imports_no_broker_or_client_library() -> None:
    """It is loaded in every pytest run where kwire is installed: the standard library only."""
    code = (
        "import sys, time\n"
        "import pytest\n"
        "began = time.perf_counter()\n"
        "import kwire.testing.plugin\n"
        "took = time.perf_counter() - began\n"
        "heavy = ['trio', 'kio', 'confluent_kafka', 'kazoo', 'hypercorn', 'kwire.broker', 'urllib.request']\n"
        "print(took)\n"
        "print(*[m for m in heavy if m in sys.modules])\n"
    )
    took, loaded = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split("\n")[:2]
    print(f"import kwire.testing.plugin after pytest: {float(took) * 1000:.1f} ms")
    assert loaded == ""
    assert float(took) < 0.5


USER_PYPROJECT = """\
[project]
name = "kwire-user-example"
version = "0.0.1"

[tool.pytest.ini_options]
kwire_broker_config = ["num.partitions=2"]
"""

USER_TESTS = '''\
import kwire
import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient


def partitions(bootstrap, topic):
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, b"x")
    assert producer.flush(30) == 0
    return len(AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=30).topics[topic].partitions)


def test_kwire_is_the_installed_one():
    assert "site-packages" in kwire.__file__, kwire.__file__


def test_produce_and_consume(kwire_broker):
    producer = Producer({"bootstrap.servers": kwire_broker.bootstrap})
    producer.produce("events", b"hello")
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": kwire_broker.bootstrap, "group.id": "g",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe(["events"])
    msg = None
    for _ in range(60):
        msg = consumer.poll(0.5)
        if msg is not None:
            break
    consumer.close()
    assert msg is not None and msg.error() is None and msg.value() == b"hello"


def test_ini_config(kwire_broker):
    assert partitions(kwire_broker.bootstrap, "from-ini") == 2


@pytest.mark.kwire(config={"num.partitions": 5})
def test_marker_config(kwire_broker):
    assert partitions(kwire_broker.bootstrap, "from-marker") == 5


def test_fault(kwire_broker):
    kwire_broker.inject_fault("Produce", 1, error="NOT_ENOUGH_REPLICAS")
    errors = []
    producer = Producer({"bootstrap.servers": kwire_broker.bootstrap, "retries": 0})
    producer.produce("faulty", b"x", on_delivery=lambda err, msg: errors.append(err))
    assert producer.flush(30) == 0
    assert errors[0].code() == KafkaError.NOT_ENOUGH_REPLICAS


def test_session_broker(kwire_broker_session):
    assert partitions(kwire_broker_session.bootstrap, "shared") == 2


def test_cluster(kwire_cluster):
    assert len(kwire_cluster.brokers) == 3
    assert partitions(kwire_cluster.bootstrap, "spread") == 2
    kwire_cluster.brokers[2].kill()
    assert partitions(kwire_cluster.bootstrap, "spread") == 2
    kwire_cluster.brokers[2].restart()
    kwire_cluster.wait_for_brokers()
'''


def _site_packages() -> list[str]:
    """This environment's site-packages directories (trio, kio, confluent-kafka ...)."""
    return [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]


def test_fixtures_in_a_separate_project_installed_with_pip(tmp_path: Path) -> None:
    began = time.monotonic()
    # kwire's sources as a user gets them (no tests, no build products): the package this
    # test imports, with the repository's build files.
    source = tmp_path / "kwire-src"
    shutil.copytree(
        Path(kwire.__file__).parent,
        source / "kwire",
        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info"),
    )
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, source / name)
    project = tmp_path / "user-project"
    (project / "tests").mkdir(parents=True)
    (project / "pyproject.toml").write_text(USER_PYPROJECT)
    (project / "tests" / "test_x.py").write_text(USER_TESTS)
    (project / "failing").mkdir()
    (project / "failing" / "test_fails.py").write_text(
        "def test_fails(kwire_broker):\n    assert False, 'on purpose'\n"
    )

    # A venv seeing the system's packages; this environment's own (kwire's dependencies)
    # through a .pth: its kwire is an editable install, whose finder a .pth-added
    # directory does not run, so the venv's kwire is the pip-installed one.
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        check=True,
        timeout=60,
    )
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    Path(site, "outer-env.pth").write_text("\n".join(_site_packages()) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "PYTEST_"))}
    installed = subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
            "--no-deps", "--no-build-isolation", "--no-index", str(source), str(project),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    install_seconds = time.monotonic() - began

    run = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=4", "tests"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=project,
    )
    print(run.stdout[-3000:])
    print(f"install {install_seconds:.1f}s, user project's tests {time.monotonic() - began - install_seconds:.1f}s")
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-3000:]
    # kwire_cluster skips, with its reason, where ZooKeeper is not installed.
    assert ("7 passed" if zookeeper_missing() is None else "6 passed, 1 skipped") in run.stdout
    # A failed test's report shows the broker's log.
    failed = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "failing"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=project,
    )
    assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-3000:]
    assert "kwire broker 0 log (" in failed.stdout and "kwire broker 0 listening on" in failed.stdout

    # pip records the entry point the plugin was loaded through.
    metadata = subprocess.run(
        [str(python), "-c",
         "import json, importlib.metadata as m;"
         "print(json.dumps([e.value for e in m.entry_points(group='pytest11') if e.name == 'kwire']))"],
        capture_output=True, text=True, check=True, timeout=60, env=env, cwd=project,
    )
    assert json.loads(metadata.stdout) == ["kwire.testing.plugin"]
