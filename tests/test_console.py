"""The web console (kwire.http.console) of a real broker: its JSON API, exact against
what confluent-kafka produced and committed, and the page in Debian's headless Chromium
(the DOM after the scripts ran, and a screenshot kept as a CI artifact in
$KWIRE_ARTIFACTS_DIR, default <repo>/.ci/artifacts)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import BrokerProcess, free_port

TIMEOUT = 30
CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent
SAMPLE_INTERVAL_MS = 200
BASE_TIMESTAMP = 1_700_000_000_000
# orders: 10 messages in each of 3 partitions; the group commits in three steps, its
# lag sampled after each, and stays at 4, 10 and 0 of them.
STEPS = [{0: 0, 1: 0, 2: 0}, {0: 2, 1: 5, 2: 0}, {0: 4, 1: 10, 2: 0}]
COMMITTED = STEPS[-1]
TOTAL_LAG = 6 + 0 + 10
STEP_LAGS = [30, 23, TOTAL_LAG]


@dataclass
class Console:
    broker: BrokerProcess
    url: str
    consumer: Consumer


def get(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_for(what: str, check: object, timeout: float = TIMEOUT) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()  # type: ignore[operator]
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def order(i: int) -> tuple[int, int]:
    """(partition, timestamp) of orders message i: round robin, 1 ms apart."""
    return i % 3, BASE_TIMESTAMP + i


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    http_port = free_port()
    broker = BrokerProcess(
        tmp_path_factory.mktemp("console") / "broker",
        {
            "http.listeners": f"http://127.0.0.1:{http_port}",
            "http.console.lag.sample.interval.ms": str(SAMPLE_INTERVAL_MS),
        },
    )
    broker.start()
    url = f"http://127.0.0.1:{http_port}"
    consumer = None
    try:
        wait_for("/health", lambda: _answers(f"{url}/health"))
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        created = admin.create_topics([NewTopic("orders", 3, 1), NewTopic("audit", 1, 1)])
        for future in created.values():
            future.result(TIMEOUT)
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
        for i in range(30):
            partition, timestamp = order(i)
            producer.produce(
                "orders",
                key=f"k{i}",
                value=f"order-{i}",
                partition=partition,
                timestamp=timestamp,
                headers=[("source", b"test"), ("n", str(i).encode())],
            )
            producer.flush(TIMEOUT)  # one batch per message: reads cross batches
        producer.produce(
            "audit", key=None, value=b"\xff\xfe\x00", partition=0, timestamp=BASE_TIMESTAMP
        )
        assert producer.flush(TIMEOUT) == 0
        consumer = Consumer(
            {
                "bootstrap.servers": broker.bootstrap,
                "group.id": "g1",
                "client.id": "console-test",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        consumer.subscribe(["orders"])
        wait_for("the assignment", lambda: consumer.poll(0.2) is not None or consumer.assignment())
        for step, lag in zip(STEPS, STEP_LAGS, strict=True):
            consumer.commit(
                offsets=[TopicPartition("orders", p, o) for p, o in step.items()],
                asynchronous=False,
            )
            wait_for(f"a sample of lag {lag}", lambda lag=lag: lag in sampled_lags(url)[-2:])
        yield Console(broker, url, consumer)
    finally:
        if consumer is not None:
            consumer.close()
        problems = broker.teardown_problems()
        assert not problems, problems


def sampled_lags(url: str) -> list[int]:
    """g1's total lag in each sample, oldest first."""
    status, answer = get(f"{url}/api/groups/g1/lag-history")
    return [s["total_lag"] for s in answer["samples"]] if status == 200 else []  # type: ignore[index]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def partition_size(broker: BrokerProcess, topic: str, partition: int) -> int:
    return sum(f.stat().st_size for f in (broker.data_dir / f"{topic}-{partition}").glob("*.log"))


# ---- the JSON API ----------------------------------------------------------------------------


def test_cluster(console: Console) -> None:
    status, cluster = get(f"{console.url}/api/cluster")
    assert status == 200
    assert cluster == {
        "broker_id": 0,
        "cluster_id": cluster["cluster_id"],
        "controller_id": 0,
        "brokers": [
            {
                "id": 0,
                "rack": None,
                "endpoints": [
                    {
                        "listener": "PLAINTEXT",
                        "host": "127.0.0.1",
                        "port": console.broker.port,
                        "security_protocol": "PLAINTEXT",
                    },
                ],
            }
        ],
    }
    assert isinstance(cluster["cluster_id"], str) and len(cluster["cluster_id"]) == 22


def test_topics(console: Console) -> None:
    status, answer = get(f"{console.url}/api/topics")
    assert status == 200
    topics = {t["name"]: t for t in answer["topics"]}
    assert [t["name"] for t in answer["topics"]] == sorted(topics)
    assert topics["__consumer_offsets"]["internal"] is True

    def partition(topic: str, index: int, end: int) -> dict:
        return {
            "partition": index,
            "leader": 0,
            "leader_epoch": 0,
            "replicas": [0],
            "isr": [0],
            "offline_replicas": [],
            "log_start_offset": 0,
            "log_end_offset": end,
            "high_watermark": end,
            "size_bytes": partition_size(console.broker, topic, index),
        }

    orders = [partition("orders", i, 10) for i in range(3)]
    assert topics["orders"] == {
        "name": "orders",
        "topic_id": topics["orders"]["topic_id"],
        "internal": False,
        "partitions": orders,
        "size_bytes": sum(p["size_bytes"] for p in orders),
        "messages": 30,
    }
    assert all(p["size_bytes"] > 0 for p in orders)
    audit = [partition("audit", 0, 1)]
    assert topics["audit"]["partitions"] == audit and topics["audit"]["messages"] == 1


def test_groups_show_members_assignment_committed_offsets_and_lag(console: Console) -> None:
    status, answer = get(f"{console.url}/api/groups")
    assert status == 200
    (group,) = [g for g in answer["groups"] if g["group_id"] == "g1"]
    (member,) = group["members"]
    assert member["member_id"].startswith("console-test-")
    assert group == {
        "group_id": "g1",
        "state": "Stable",
        "protocol_type": "consumer",
        "protocol": "range",
        "generation_id": group["generation_id"],
        "members": [
            {
                "member_id": member["member_id"],
                "group_instance_id": None,
                "client_id": "console-test",
                "client_host": "/127.0.0.1",
                "assignment": [{"topic": "orders", "partitions": [0, 1, 2]}],
            }
        ],
        "offsets": [
            {
                "topic": "orders",
                "partition": p,
                "committed_offset": o,
                "high_watermark": 10,
                "lag": 10 - o,
            }
            for p, o in COMMITTED.items()
        ],
        "total_lag": TOTAL_LAG,
    }


def test_lag_history_samples_the_group_after_each_commit(console: Console) -> None:
    wait_for(
        "three samples of the final lag", lambda: sampled_lags(console.url)[-3:] == [TOTAL_LAG] * 3
    )
    status, answer = get(f"{console.url}/api/groups/g1/lag-history")
    assert status == 200
    assert (answer["group_id"], answer["interval_ms"], answer["window_ms"]) == (
        "g1",
        SAMPLE_INTERVAL_MS,
        3_600_000,
    )
    samples = answer["samples"]
    # Each step's lag, in order (a step may have been sampled more than once).
    lags = [s["total_lag"] for s in samples]
    assert [lag for i, lag in enumerate(lags) if i == 0 or lags[i - 1] != lag] == STEP_LAGS
    assert samples[-1]["partitions"] == [
        {"topic": "orders", "partition": p, "lag": 10 - o} for p, o in COMMITTED.items()
    ]
    times = [s["time_ms"] for s in samples]
    assert times == sorted(times) and abs(time.time() * 1000 - times[-1]) < 60_000
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= SAMPLE_INTERVAL_MS - 50


def test_messages_of_one_partition_are_the_most_recent_first(console: Console) -> None:
    status, answer = get(f"{console.url}/api/topics/orders/messages?partition=1&limit=3")
    assert status == 200
    expected = [i for i in range(30) if order(i)[0] == 1][-3:][::-1]
    assert answer == {
        "topic": "orders",
        "partition": 1,
        "isolation_level": "read_uncommitted",
        "messages": [
            {
                "partition": 1,
                "offset": i // 3,
                "timestamp": order(i)[1],
                "key": f"k{i}",
                "key_encoding": "utf-8",
                "value": f"order-{i}",
                "value_encoding": "utf-8",
                "headers": [
                    {"key": "source", "value": "test", "value_encoding": "utf-8"},
                    {"key": "n", "value": str(i), "value_encoding": "utf-8"},
                ],
            }
            for i in expected
        ],
    }


def test_messages_of_all_partitions_and_binary_values(console: Console) -> None:
    status, answer = get(f"{console.url}/api/topics/orders/messages")
    assert status == 200 and answer["partition"] is None
    assert [m["key"] for m in answer["messages"]] == [f"k{i}" for i in range(29, 9, -1)]
    assert [(m["partition"], m["offset"]) for m in answer["messages"][:3]] == [
        (2, 9),
        (1, 9),
        (0, 9),
    ]
    _, answer = get(f"{console.url}/api/topics/audit/messages?partition=0")
    (message,) = answer["messages"]
    assert (message["key"], message["key_encoding"]) == (None, None)
    assert (message["value"], message["value_encoding"]) == ("//4A", "base64")


def test_messages_read_uncommitted_leave_transaction_markers_out(console: Console) -> None:
    admin = AdminClient({"bootstrap.servers": console.broker.bootstrap})
    admin.create_topics([NewTopic("txn", 1, 1)])["txn"].result(TIMEOUT)

    def txn_high_watermark() -> int:
        _, topics = get(f"{console.url}/api/topics")
        (txn,) = [t for t in topics["topics"] if t["name"] == "txn"]  # type: ignore[index]
        return txn["partitions"][0]["high_watermark"]

    producer = Producer(
        {"bootstrap.servers": console.broker.bootstrap, "transactional.id": "console"}
    )
    producer.init_transactions(TIMEOUT)
    producer.begin_transaction()
    for i in range(3):
        producer.produce("txn", key=f"a{i}", value=f"committed-{i}")
    producer.commit_transaction(TIMEOUT)
    producer.begin_transaction()
    producer.produce("txn", key="b0", value="aborted-0")
    assert producer.flush(TIMEOUT) == 0  # abort_transaction drops what was not sent yet
    producer.abort_transaction(TIMEOUT)
    wait_for("the abort marker", lambda: txn_high_watermark() == 6)
    # offsets 0-2 committed, 3 the commit marker, 4 aborted, 5 the abort marker: the last
    # three messages skip the markers (the window below the high watermark widens).
    status, answer = get(f"{console.url}/api/topics/txn/messages?partition=0&limit=3")
    assert status == 200
    assert [(m["offset"], m["key"], m["value"]) for m in answer["messages"]] == [
        (4, "b0", "aborted-0"),
        (2, "a2", "committed-2"),
        (1, "a1", "committed-1"),
    ]


def test_consumer_assignment_decoding() -> None:
    from kwire.http.console import consumer_assignment

    v0 = struct.pack(">hih", 0, 2, 1) + b"b" + struct.pack(">iii", 2, 3, 1)
    v0 += struct.pack(">h", 1) + b"a" + struct.pack(">ii", 1, 0) + struct.pack(">i", -1)
    assert consumer_assignment(v0) == [
        {"topic": "a", "partitions": [0]},
        {"topic": "b", "partitions": [1, 3]},
    ]
    assert consumer_assignment(b"") == []
    assert consumer_assignment(v0[:9]) == []
    assert consumer_assignment(struct.pack(">hi", 0, 5)) == []


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/api/topics/nope/messages", 404, "no topic 'nope'"),
        ("/api/topics/orders/messages?partition=x", 400, "partition is a number, got 'x'"),
        (
            "/api/topics/orders/messages?partition=3",
            404,
            "topic 'orders' has no partition 3 (it has 3)",
        ),
        ("/api/topics/orders/messages?limit=0", 400, "limit is a number from 1 to 500, got '0'"),
        ("/api/topics/orders/messages?limit=-1", 400, "limit is a number from 1 to 500, got '-1'"),
        (
            "/api/topics/orders/messages?limit=501",
            400,
            "limit is a number from 1 to 500, got '501'",
        ),
        ("/api/groups/nobody/lag-history", 404, "no group 'nobody'"),
        ("/api/nothing", 404, "no such API: /api/nothing"),
    ],
)
def test_bad_requests_get_json_errors(console: Console, path: str, status: int, error: str) -> None:
    assert get(f"{console.url}{path}") == (status, {"error": error})


def test_only_get_is_answered(console: Console) -> None:
    request = urllib.request.Request(f"{console.url}/api/topics", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=TIMEOUT)
    assert refused.value.code == 405


def test_the_page_and_its_assets_are_served(console: Console) -> None:
    for path, content_type in [
        ("/", "text/html"),
        ("/console.js", "text/javascript"),
        ("/console.css", "text/css"),
    ]:
        with urllib.request.urlopen(f"{console.url}{path}", timeout=TIMEOUT) as answer:
            assert answer.headers["content-type"].startswith(content_type)
            body = answer.read().decode()
        # Nothing is fetched from elsewhere: no CDN, works offline.
        assert "https://" not in body and "//cdn" not in body


# ---- the page in headless Chromium -------------------------------------------------------------


class Elements(HTMLParser):
    """Every element's tag and attributes, with the text inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self._open: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        text: list[str] = []
        self.elements.append((tag, {k: v or "" for k, v in attrs}, text))
        if tag not in ("circle", "line", "polyline", "meta", "link", "br", "input"):
            self._open.append(text)

    def handle_endtag(self, tag: str) -> None:
        if self._open and tag not in ("circle", "line", "polyline"):
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for text in self._open:
            text.append(data)

    def find(self, tag: str, **attrs: str) -> list[tuple[dict[str, str], str]]:
        return [
            (a, "".join(text))
            for t, a, text in self.elements
            if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


def chromium(url: str, user_data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={user_data_dir}",
            "--virtual-time-budget=8000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


def artifacts_dir() -> Path:
    path = Path(os.environ.get("KWIRE_ARTIFACTS_DIR") or REPO / ".ci" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium package is not installed"
)
def test_the_page_in_headless_chromium(console: Console, tmp_path: Path) -> None:
    # The chart shows every step: wait until the last one was sampled a few times.
    wait_for(
        "three samples of the final lag", lambda: sampled_lags(console.url)[-3:] == [TOTAL_LAG] * 3
    )
    page = f"{console.url}/#topic=orders"
    # The screenshot first: a CI artifact to look at even when a check below fails.
    screenshot = artifacts_dir() / "console.png"
    screenshot.unlink(missing_ok=True)
    result = chromium(
        page,
        tmp_path / "profile2",
        f"--screenshot={screenshot}",
        "--window-size=1280,900",
        "--hide-scrollbars",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    )
    result = chromium(page, tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr[-3000:]
    dom = Elements()
    dom.feed(result.stdout)
    (body,) = dom.find("body")
    assert int(body[0].get("data-refreshes", "0")) >= 1, result.stdout[:3000]

    (orders,) = dom.find("tr", data_topic="orders")
    assert "orders" in orders[1]
    topic_cells = _cells(dom, "tr", "data-topic", "orders")
    assert topic_cells["partitions"] == "3" and topic_cells["messages"] == "30"
    assert topic_cells["leaders"] == "0" and topic_cells["isr"] == "3/3 in sync"
    assert dom.find("tr", data_topic="audit")

    (group,) = dom.find("tr", data_group="g1")
    assert group[0]["data-state"] == "Stable" and group[0]["data-lag"] == str(TOTAL_LAG)
    group_cells = _cells(dom, "tr", "data-group", "g1")
    assert group_cells["members"] == "1" and group_cells["lag"] == str(TOTAL_LAG)
    assert group_cells["clients"] == "console-test /127.0.0.1: orders [0,1,2]"
    (chart,) = dom.find("svg", data_lag_chart="g1")
    points = int(chart[0]["data-points"])
    assert points >= 3
    circles = [a for t, a, _ in dom.elements if t == "circle"]
    assert len(circles) == points and {c["data-lag"] for c in circles} >= {
        str(lag) for lag in STEP_LAGS
    }
    assert dom.find("polyline")

    # The hash opened the topic's recent messages.
    assert dom.find("section", id="messages-section", data_messages_topic="orders")
    rows = [a for t, a, _ in dom.elements if t == "tr" and "data-offset" in a]
    assert [(r["data-partition"], r["data-offset"]) for r in rows[:3]] == [
        ("2", "9"),
        ("1", "9"),
        ("0", "9"),
    ]
    values = [text for a, text in dom.find("td", data_field="value")]
    assert values[:2] == ["order-29", "order-28"]


def _cells(dom: Elements, tag: str, key: str, value: str) -> dict[str, str]:
    """The data-field cells of the row with key=value (the cells that follow it)."""
    cells: dict[str, str] = {}
    inside = False
    for t, a, text in dom.elements:
        if t == tag:
            if inside:
                break
            inside = a.get(key) == value
        elif inside and t == "td" and "data-field" in a:
            cells[a["data-field"]] = "".join(text)
    return cells


def test_chromium_is_listed_for_ci() -> None:
    """scripts/test-all installs what this file needs."""
    assert (
        "chromium"
        in (REPO / "scripts" / "test-all").read_text().split("apt_packages=(")[1].split(")")[0]
    )
