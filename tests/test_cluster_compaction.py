"""Compaction in a cluster (issue 11): every replica of a compacted topic cleans its own
log, followers fetch across the gaps a leader's cleaning left, and after the leader is
SIGKILLed the new one serves the latest value of every key. Real ZooKeeper, real brokers,
confluent-kafka."""

from __future__ import annotations

from pathlib import Path

from cluster_harness import KwireCluster, wait_until
from confluent_kafka import Producer
from test_cluster import (
    TIMEOUT,
    create_topic,
    leader_of,
    read_log,
    start_cluster,
    wait_for_full_isr,
)

TOPIC = "cluster-changelog"
KEYS = 40


def _produce(cluster: KwireCluster, start: int, count: int, latest: dict[str, bytes]) -> None:
    """`count` updates over KEYS keys, acks=all; `latest` gets each key's last acknowledged value."""
    producer = Producer({
        "bootstrap.servers": cluster.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "batch.size": 2048,
    })
    acked: dict[int, tuple[str, bytes]] = {}
    errors: list[str] = []

    def report(error: object, message: object) -> None:
        if error is not None:
            errors.append(str(error))
        else:
            acked[message.offset()] = (message.key().decode(), message.value())  # type: ignore[attr-defined]

    for i in range(start, start + count):
        key = f"k{i % KEYS}"
        producer.produce(TOPIC, key=key, value=f"{key}={i}".encode(), on_delivery=report)
        producer.poll(0)
    assert producer.flush(TIMEOUT) == 0
    assert not errors, errors[:3]
    for offset in sorted(acked):
        key, value = acked[offset]
        latest[key] = value


def _log_bytes(cluster: KwireCluster, broker_id: int) -> int:
    directory = Path(cluster.broker(broker_id).data_dir) / f"{TOPIC}-0"
    total = 0
    for path in directory.glob("*.log"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass  # swapped by a cleaning pass meanwhile
    return total


def _check_latest(cluster: KwireCluster, latest: dict[str, bytes]) -> None:
    log = read_log(cluster, TOPIC, 1)[0]
    offsets = [offset for offset, _ in log]
    assert offsets == sorted(set(offsets))
    seen: dict[str, bytes] = {}
    for _, value in log:
        seen[value.split(b"=", 1)[0].decode()] = value
    assert seen == latest


def test_every_replica_compacts_and_a_new_leader_serves_the_latest_values(kwire_cluster_factory) -> None:
    cluster = start_cluster(kwire_cluster_factory, 3, log_cleaner_backoff_ms="200")
    create_topic(cluster, TOPIC, 1, 3, config={
        "cleanup.policy": "compact",
        "segment.bytes": "8192",
        "min.cleanable.dirty.ratio": "0.01",
        "min.insync.replicas": "2",
    })
    wait_for_full_isr(cluster, {TOPIC: 1})
    latest: dict[str, bytes] = {}
    _produce(cluster, 0, 6000, latest)
    written = max(_log_bytes(cluster, i) for i in cluster.ids)
    # Each replica cleans its own log: all three shrink far below what was written
    # (bounded by the active segment and one record per key below it).
    wait_until(lambda: all(_log_bytes(cluster, i) < 40_000 for i in cluster.ids), 60, interval=0.2,
               message=f"every replica compacted (written ~{written} bytes)")
    _check_latest(cluster, latest)

    leader = leader_of(cluster, TOPIC, 0)
    cluster.kill(leader)
    wait_until(lambda: leader_of(cluster, TOPIC, 0) not in (leader, -1), TIMEOUT, interval=0.1,
               message="a new leader")
    _produce(cluster, 6000, 2000, latest)
    _check_latest(cluster, latest)
    # The old leader comes back as a follower of a compacted log and catches up.
    cluster.restart(leader)
    wait_for_full_isr(cluster, {TOPIC: 1})
    _check_latest(cluster, latest)
