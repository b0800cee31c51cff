"""Fault injection over the admin HTTP endpoint (/admin/faults), seen by confluent-kafka against
a real broker: injected errors retried or reported with their code, a delayed Fetch seen as
latency, a dropped connection as a reconnect; off unless http.admin.enable; bad input 400."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from conftest import BrokerProcess, free_port
from kio.schema.errors import ErrorCode
from prometheus_client.parser import text_string_to_metric_families

TIMEOUT = 30


class AdminBroker:
    """A broker with http.listeners and http.admin.enable, and its admin endpoint."""

    def __init__(self, broker: BrokerProcess, url: str) -> None:
        self.broker = broker
        self.bootstrap = broker.bootstrap
        self.url = url

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
                return answer.status, json.load(answer)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    def inject(self, **rule: Any) -> dict[str, Any]:
        status, answer = self.call("POST", "/admin/faults", rule)
        assert status == 200, answer
        return answer

    def faults(self) -> list[dict[str, Any]]:
        status, answer = self.call("GET", "/admin/faults")
        assert status == 200, answer
        return answer["faults"]


def _start(broker_factory: Any, admin: bool) -> AdminBroker:
    url = f"http://127.0.0.1:{free_port()}"
    overrides = {"http.listeners": url}
    if admin:
        overrides["http.admin.enable"] = "true"
    broker = broker_factory(overrides)
    # The HTTP listener starts just after the Kafka one.
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=TIMEOUT).close()
            return AdminBroker(broker, url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def admin_broker(broker_factory: Any) -> AdminBroker:
    return _start(broker_factory, admin=True)


def _create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(TIMEOUT)


def _produce(producer: Producer, value: bytes, topic: str = "t") -> KafkaError | None:
    """Produce one message; its delivery error (None: delivered)."""
    reports: list[KafkaError | None] = []
    producer.produce(topic, value, on_delivery=lambda err, msg: reports.append(err))
    assert producer.flush(TIMEOUT) == 0, "not delivered in time"
    [report] = reports
    return report


def _values(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                values.append(message.value())
        extra = consumer.poll(0.5)  # nothing more than expected
        if extra is not None and not extra.error():
            values.append(extra.value())
    finally:
        consumer.close()
    return values


@pytest.mark.parametrize("retries", [None, 0])
def test_not_leader_on_two_produces_is_retried_and_delivered_once(
    admin_broker: AdminBroker, retries: int | None
) -> None:
    """librdkafka refreshes metadata and retries NOT_LEADER_OR_FOLLOWER without counting it
    against `retries` (nothing was written), so even retries=0 delivers."""
    _create_topic(admin_broker.bootstrap, "t")
    config: dict[str, Any] = {"bootstrap.servers": admin_broker.bootstrap, "linger.ms": 0}
    if retries is not None:
        config["retries"] = retries
    producer = Producer(config)
    assert _produce(producer, b"before") is None
    rule = admin_broker.inject(api="Produce", count=2, error="NOT_LEADER_OR_FOLLOWER")
    assert (rule["api_key"], rule["error_code"], rule["remaining"]) == (0, 6, 2)
    assert _produce(producer, b"retried") is None
    assert admin_broker.faults() == []  # both injected errors were answered
    assert _values(admin_broker.bootstrap, "t", 2) == [b"before", b"retried"]
    # The injected answers are counted in /metrics as the error they carried.
    with urllib.request.urlopen(admin_broker.url + "/metrics", timeout=TIMEOUT) as answer:
        families = {f.name: f for f in text_string_to_metric_families(answer.read().decode())}
    counted = {
        (s.labels["api"], s.labels["error"]): s.value
        for s in families["kwire_requests"].samples
        if s.name == "kwire_requests_total"
    }
    assert counted[("Produce", "NOT_LEADER_OR_FOLLOWER")] == 2
    assert counted[("Produce", "NONE")] == 2


def test_retries_disabled_delivery_error_is_the_injected_code(admin_broker: AdminBroker) -> None:
    """With retries=0 each failed request is a delivery error with exactly the injected code,
    and GET shows the remaining count going down."""
    _create_topic(admin_broker.bootstrap, "t")
    producer = Producer({"bootstrap.servers": admin_broker.bootstrap, "linger.ms": 0, "retries": 0})
    assert _produce(producer, b"before") is None
    admin_broker.inject(api="produce", count=3, error=19)  # NOT_ENOUGH_REPLICAS, by number
    remaining = []
    for i in range(3):
        error = _produce(producer, b"failed-%d" % i)
        assert error is not None and error.code() == KafkaError.NOT_ENOUGH_REPLICAS, error
        remaining.append([r["remaining"] for r in admin_broker.faults()])
    assert remaining == [[2], [1], []]
    assert _produce(producer, b"after") is None
    assert _values(admin_broker.bootstrap, "t", 2) == [b"before", b"after"]


def _consumer_errors(
    admin_broker: AdminBroker, until_message: bool
) -> tuple[list[KafkaError], list[bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": admin_broker.bootstrap,
            "group.id": "g",
            "auto.offset.reset": "earliest",
        }
    )
    errors: list[KafkaError] = []
    values: list[bytes] = []
    consumer.subscribe(["t"])
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline and not (values if until_message else errors):
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                errors.append(message.error())
            else:
                values.append(message.value())
    finally:
        consumer.close()
    return errors, values


def test_topic_authorization_failed_on_fetch_reaches_the_consumer_then_it_reads(
    admin_broker: AdminBroker,
) -> None:
    _create_topic(admin_broker.bootstrap, "t")
    assert _produce(Producer({"bootstrap.servers": admin_broker.bootstrap}), b"m") is None
    admin_broker.inject(api="Fetch", error="TOPIC_AUTHORIZATION_FAILED")
    errors, values = _consumer_errors(admin_broker, until_message=True)
    assert [e.code() for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert values == [b"m"]
    assert admin_broker.faults() == []


def test_topic_authorization_failed_on_metadata_reaches_the_consumer(
    admin_broker: AdminBroker,
) -> None:
    _create_topic(admin_broker.bootstrap, "t")
    # Several: the client's first Metadata requests may name no topic (brokers only).
    admin_broker.inject(api="Metadata", count=5, error="topic_authorization_failed")
    errors, _ = _consumer_errors(admin_broker, until_message=False)
    assert errors and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, errors
    admin_broker.call("DELETE", "/admin/faults")


def test_a_delayed_fetch_is_seen_as_latency(admin_broker: AdminBroker) -> None:
    _create_topic(admin_broker.bootstrap, "t")
    consumer = Consumer(
        {"bootstrap.servers": admin_broker.bootstrap, "group.id": "g", "fetch.wait.max.ms": 100}
    )
    consumer.assign([TopicPartition("t", 0, 0)])
    producer = Producer({"bootstrap.servers": admin_broker.bootstrap, "linger.ms": 0})

    def latency(delay_ms: int) -> float:
        consumer.poll(0.3)
        started = time.monotonic()
        if delay_ms:
            admin_broker.inject(api="Fetch", delay_ms=delay_ms)
            # Taken: the consumer's one Fetch in flight is the delayed one.
            while admin_broker.faults():
                assert time.monotonic() - started < TIMEOUT
                time.sleep(0.01)
        assert _produce(producer, b"x") is None
        while time.monotonic() - started < TIMEOUT:
            message = consumer.poll(0.02)
            if message is not None and not message.error():
                return time.monotonic() - started
        raise AssertionError("not consumed in time")

    try:
        before, delayed, after = latency(0), latency(1000), latency(0)
    finally:
        consumer.close()
    assert before < 0.5 and after < 0.5, (before, after)
    assert 1.0 <= delayed < 5, delayed


def test_a_dropped_connection_is_a_reconnect_then_success(admin_broker: AdminBroker) -> None:
    _create_topic(admin_broker.bootstrap, "t")
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    client_log = logging.getLogger("test_fault_injection.librdkafka")
    client_log.addHandler(Collect())
    client_log.setLevel(logging.INFO)  # librdkafka logs the disconnect at level 6, INFO
    producer = Producer(
        {"bootstrap.servers": admin_broker.bootstrap, "linger.ms": 0, "logger": client_log}
    )
    assert _produce(producer, b"before") is None
    rule = admin_broker.inject(api="Produce", drop_connection=True)
    assert (rule["drop_connection"], rule["error"], rule["count"]) == (True, None, 1)
    assert _produce(producer, b"after a reconnect") is None
    producer.poll(0.2)  # the client's log lines are delivered by poll
    assert any("Disconnected" in r for r in records), records
    # No answer and nothing written: the retry wrote it once.
    assert _values(admin_broker.bootstrap, "t", 2) == [b"before", b"after a reconnect"]


def test_admin_endpoint_is_off_by_default(broker_factory: Any) -> None:
    plain = _start(broker_factory, admin=False)
    for method, body in (
        ("POST", {"api": "Produce", "drop_connection": True}),
        ("GET", None),
        ("DELETE", None),
    ):
        status, answer = plain.call(method, "/admin/faults", body)
        assert status == 404 and "http.admin.enable" in answer["error"], (method, answer)
    _create_topic(plain.bootstrap, "t")
    assert _produce(Producer({"bootstrap.servers": plain.bootstrap}), b"served") is None


def test_bad_input_is_400_with_the_reason(admin_broker: AdminBroker) -> None:
    for body, reason in (
        (b"{not json", "not JSON"),
        ({"api": "Produx", "error": 6}, "unknown API 'Produx'"),
        ({"api": "Produce", "error": "NOT_A_LEADER"}, "unknown error 'NOT_A_LEADER'"),
        ({"api": "Produce", "error": 6, "count": 0}, "count must be at least 1"),
        ({"api": "Produce", "error": 6, "drop_connection": True}, "not both"),
        ({"api": "Produce"}, "no fault given"),
        ({"api": "Produce", "delay": 5}, "unknown fields"),
    ):
        status, answer = admin_broker.call("POST", "/admin/faults", body)
        assert status == 400 and reason in answer["error"], (body, answer)
    assert admin_broker.faults() == []
    assert admin_broker.call("PUT", "/admin/faults", {})[0] == 405
    first = admin_broker.inject(api=3, count=4, delay_ms=1)
    second = admin_broker.inject(api="ApiVersions", count=2, delay_ms=1)
    assert admin_broker.call("DELETE", "/admin/faults/999")[0] == 404
    assert admin_broker.call("DELETE", "/admin/faults/x")[0] == 400
    status, answer = admin_broker.call("DELETE", f"/admin/faults/{first['id']}")
    assert status == 200 and answer["removed"]["api"] == "Metadata"
    assert [r["id"] for r in admin_broker.faults()] == [second["id"]]
    assert admin_broker.call("DELETE", "/admin/faults") == (200, {"cleared": 1})
    assert admin_broker.faults() == []


def test_raw_produce_errors_and_acks0_closes_the_connection(admin_broker: AdminBroker) -> None:
    """Over the wire: acks=1 gets the error in each partition it named, nothing written;
    acks=0 is owed no answer, so its connection is closed, as Kafka does on a failure."""
    from raw_client import RawClient
    from test_acks0 import produce_request
    from test_idempotence import create

    from kwire.protocol.records import build_batch

    with RawClient(admin_broker.broker.port) as client:
        create(client, "raw")
        admin_broker.inject(api="Produce", count=2, error="NOT_LEADER_OR_FOLLOWER")
        answer = client.send(produce_request("raw", build_batch([(None, b"refused")]), acks=1))
        [topic] = answer.responses
        [partition] = topic.partition_responses
        assert (topic.name, partition.index, partition.error_code) == (
            "raw",
            0,
            ErrorCode.not_leader_or_follower,
        )
        client.send(
            produce_request("raw", build_batch([(None, b"lost")]), acks=0), expect_response=False
        )
        assert client.sock.recv(1) == b""  # closed by the broker, within the client's timeout
    with RawClient(admin_broker.broker.port) as client:
        answer = client.send(produce_request("raw", build_batch([(None, b"kept")]), acks=1))
        [partition] = answer.responses[0].partition_responses
        assert (partition.error_code, partition.base_offset) == (ErrorCode.none, 0)
