"""pytest plugin (entry point `pytest11`, loaded wherever kwire is installed): real kwire
brokers as fixtures.

- `kwire_broker`: a fresh broker for the test (`.bootstrap`, `.http_url`, `.inject_fault`,
  `.kill()`, `.restart()`: a kwire.testing.Broker), stopped after it;
- `kwire_broker_session`: one broker shared by the whole session (topics and groups persist
  between tests: name them per test);
- `kwire_cluster`: 3 brokers and ZooKeeper (a kwire.testing.Cluster; skipped with the reason
  when java or Debian's zookeeper package is missing). One ZooKeeper serves the session; each
  cluster has its own chroot.

A failed test's report shows the tail of each of its brokers' logs.

Broker config overrides: the `kwire_broker_config` ini option (`key=value` lines, every
broker) and `@pytest.mark.kwire(config={...})` on a test (its kwire_broker and kwire_cluster).

Cheap to load: the standard library and kwire.testing only (no trio, kio or Kafka client).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import pytest

from kwire.testing.broker import Broker
from kwire.testing.cluster import Cluster
from kwire.testing.zookeeper import ZooKeeperServer, ZooKeeperUnavailable, zookeeper_missing

INI_CONFIG = "kwire_broker_config"
S = TypeVar("S", Broker, Cluster)
CLUSTER_SIZE = 3


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        INI_CONFIG,
        type="linelist",
        default=[],
        help="kwire broker config overrides, key=value per line, for the kwire_* fixtures",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kwire(config=None): kwire broker config overrides (a dict of Kafka config names) "
        "for this test's kwire_broker and kwire_cluster",
    )


# Of each broker's log, what a failed test's report shows.
LOG_TAIL = 3000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that used a kwire fixture shows the brokers' log tails in its report."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.when == "teardown":
        return
    funcargs = getattr(item, "funcargs", {})
    brokers: list[Broker] = []
    for name in ("kwire_broker", "kwire_broker_session"):
        if isinstance(funcargs.get(name), Broker):
            brokers.append(funcargs[name])
    if isinstance(funcargs.get("kwire_cluster"), Cluster):
        brokers += funcargs["kwire_cluster"].brokers
    for broker in brokers:
        title = f"kwire broker {broker.broker_id} log ({broker.log_path})"
        report.sections.append((title, broker.log_text(LOG_TAIL)))


def _ini_config(config: pytest.Config) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in config.getini(INI_CONFIG):
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise pytest.UsageError(f"{INI_CONFIG}: expected key=value, got {line!r}")
        out[key.strip()] = value.strip()
    return out


def _test_config(request: pytest.FixtureRequest) -> dict[str, object]:
    """The ini overrides, then the markers' (the closest marker last, so it wins)."""
    config: dict[str, object] = dict(_ini_config(request.config))
    for marker in reversed(list(request.node.iter_markers("kwire"))):
        overrides = marker.kwargs.get("config", marker.args[0] if marker.args else None)
        if overrides is not None:
            if not isinstance(overrides, dict):
                raise pytest.UsageError(
                    f"@pytest.mark.kwire(config=...) takes a dict, got {overrides!r}"
                )
            config.update(overrides)
    return config


def _running(server: S) -> Iterator[S]:
    """Start, yield to the test, stop (SIGTERM) whatever the test did."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kwire_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Broker]:
    """A kwire broker started for this test (data and log under pytest's temp dir)."""
    directory = tmp_path_factory.mktemp("kwire-broker")
    yield from _running(Broker(_test_config(request), directory=directory))


@pytest.fixture(scope="session")
def kwire_broker_session(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Broker]:
    """One kwire broker for the whole session (ini overrides only: markers are per test)."""
    directory = tmp_path_factory.mktemp("kwire-broker")
    yield from _running(Broker(_ini_config(pytestconfig), directory=directory))


@pytest.fixture(scope="session")
def kwire_zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    """The ZooKeeper of this session's kwire_cluster fixtures (skips without ZooKeeper)."""
    missing = zookeeper_missing()
    if missing is not None:
        pytest.skip(f"kwire_cluster needs ZooKeeper: {missing}")
    server = ZooKeeperServer(tmp_path_factory.mktemp("kwire-zookeeper"))
    try:
        server.start()
    except ZooKeeperUnavailable as e:
        pytest.skip(f"kwire_cluster needs ZooKeeper: {e}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kwire_cluster(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    kwire_zookeeper: ZooKeeperServer,
) -> Iterator[Cluster]:
    """3 kwire brokers (broker.id 1..3) in a ZooKeeper chroot of their own, started and
    formed (each broker's Metadata lists all three and a controller)."""
    cluster = Cluster(
        CLUSTER_SIZE,
        _test_config(request),
        directory=tmp_path_factory.mktemp("kwire-cluster"),
        zookeeper=kwire_zookeeper,
    )
    yield from _running(cluster)
