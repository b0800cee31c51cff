"""A rolling restart under acks=all load (issue 9): every broker in turn is stopped
with SIGTERM (a controlled shutdown), restarted, and waited for back in every ISR.

An idempotent producer (retries on) must lose nothing acknowledged, duplicate
nothing and keep order per partition. A second producer without retries shows
what a client sees meanwhile: only retriable errors.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from cluster_harness import KwireCluster, wait_until
from confluent_kafka import KafkaError, Producer
from test_cluster import (
    LoadProducer,
    check_acked_in_log,
    create_topic,
    read_log,
    start_cluster,
    wait_for_full_isr,
)

PARTITIONS = 6


class ErrorRecorder:
    """A producer without retries: each delivery error, as the client reports it."""

    def __init__(self, cluster: KwireCluster, topic: str) -> None:
        self.producer = Producer({
            "bootstrap.servers": cluster.bootstrap,
            "acks": "all",
            "retries": 0,
            "linger.ms": 5,
            "message.timeout.ms": 30000,
            "topic.metadata.refresh.interval.ms": 1000,
        })
        self.topic = topic
        self.errors: list[KafkaError] = []
        self.delivered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, error: KafkaError | None, _message: Any) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.errors.append(error)

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            self.producer.produce(self.topic, b"r%d" % seq, partition=seq % PARTITIONS, on_delivery=self._on_delivery)
            seq += 1
            self.producer.poll(0.01)

    def start(self) -> ErrorRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.producer.flush(60)


def test_rolling_restart_under_acks_all_load_loses_nothing_and_errors_are_retriable(kwire_cluster_factory: Any) -> None:
    cluster = start_cluster(kwire_cluster_factory)
    create_topic(cluster, "rolling", partitions=PARTITIONS, rf=3)
    create_topic(cluster, "rolling-raw", partitions=PARTITIONS, rf=3)
    wait_for_full_isr(cluster, {"rolling": PARTITIONS, "rolling-raw": PARTITIONS})
    load = LoadProducer(cluster, "rolling", PARTITIONS, rate=300).start()
    raw = ErrorRecorder(cluster, "rolling-raw").start()
    wait_until(lambda: load.acked_count() >= 300, 30, message="load under way")
    stop_times = []
    for broker_id in cluster.ids:
        started = time.monotonic()
        assert cluster.stop(broker_id) == 0, f"broker {broker_id} did not stop cleanly"
        stop_times.append(time.monotonic() - started)
        target = load.acked_count() + 150
        wait_until(lambda target=target: load.acked_count() >= target, 30,
                   message=f"acks=all goes on while broker {broker_id} is down")
        cluster.broker(broker_id).start()
        wait_for_full_isr(cluster, {"rolling": PARTITIONS, "rolling-raw": PARTITIONS})
    acked_before = load.acked_count()
    wait_until(lambda: load.acked_count() >= acked_before + 150, 30, message="load after the last restart")
    acked = load.stop()
    raw.stop()
    assert not acked.errors, acked.errors[:5]
    summary = check_acked_in_log(acked, read_log(cluster, "rolling", PARTITIONS), PARTITIONS)
    # A request in flight when a broker closes its connections fails with librdkafka's
    # local _TRANSPORT: the Java client's NetworkException, a RetriableException.
    fatal = [e for e in raw.errors if not (e.retriable() or e.code() == KafkaError._TRANSPORT)]
    assert not fatal, f"non-retriable errors during the rolling restart: {[e.name() for e in fatal][:10]}"
    print(f"rolling restart: {summary}; SIGTERM to exit {[round(t, 2) for t in stop_times]} s; "
          f"raw producer: {raw.delivered} delivered, {len(raw.errors)} retriable errors "
          f"({sorted({e.name() for e in raw.errors})})")
