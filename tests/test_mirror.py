"""`kwire mirror` (issue 13) copying topics between real kwire brokers: two Brokers (and a
3-broker Cluster on a real ZooKeeper), the real mirror process (kwire.testing.Mirror) and
confluent-kafka clients writing to the source and reading the target back.

- 100,000 records (keys, null keys, null and binary values, repeated and null headers,
  explicit CreateTime timestamps out of order) over topics of 1, 3 and 6 partitions, from
  producers of five compressions, before and while the mirror runs: each remote partition
  holds the source's records in order, nothing missing or duplicated;
- topic configs copied at creation and later alterations synced, MM2's excluded ones not;
- new matching topics and added partitions picked up, `topics` / `topics.exclude` obeyed;
- the identity policy keeps names, two-way mirroring with the default one does not loop;
- a 3-broker cluster as target with replication.factor = 3;
- /metrics, the progress log line, SIGTERM and a restart that copies nothing again.

Every mirror's and broker's log is checked at teardown: no Traceback, no ERROR record, and
each SIGTERM stop exited 0."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_CREATE_TIME,
    Consumer,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
)

from kwire.testing import Broker, Cluster, Mirror, mirror_properties
from kwire.testing.cluster import run_parallel

T = TypeVar("T")
TIMEOUT = 60.0
IDENTITY_POLICY = "org.apache.kafka.connect.mirror.IdentityReplicationPolicy"
# Short intervals: the mirror stores progress, looks for topics, syncs configs and logs its
# progress every second or so, so that the tests wait for seconds, not MM2's minutes.
FAST = {
    "offset.flush.interval.ms": "500",
    "emit.checkpoints.interval.seconds": "1",
    "refresh.topics.interval.seconds": "1",
    "sync.topic.configs.interval.seconds": "1",
    "progress.log.interval.seconds": "1",
}
PROGRESS_LINE = re.compile(
    r"(?P<flow>\S+): (?P<copied>\d+) records copied \(\d+/s\), "
    r"lag (?P<lag>\d+) records over (?P<partitions>\d+) partitions"
)
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) ", re.M)

Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]] | None, int, int]


# ---------------------------------------------------------------- processes


def clean_log_problems(text: str) -> list[str]:
    """ERROR/CRITICAL records and tracebacks of a kwire log."""
    problems = [
        line
        for line in text.splitlines()
        if (m := LOG_RECORD.match(line)) is not None and m["level"] in ("ERROR", "CRITICAL")
    ]
    if "Traceback" in text:
        problems.append(text[text.index("Traceback") :][:3000])
    return problems


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    """Two single kwire brokers, `a` (source) and `b` (target), started in parallel."""
    a = Broker(directory=tmp_path / "a")
    b = Broker(directory=tmp_path / "b")
    try:
        run_parallel([a.start, b.start])
        yield a, b
    finally:
        codes: list[int | None] = []
        run_parallel([lambda: codes.append(a.stop()), lambda: codes.append(b.stop())])
    assert codes == [0, 0], f"broker exit codes at SIGTERM: {codes}"
    for broker in (a, b):
        assert not clean_log_problems(broker.log_text()), broker.log_text(5000)


@pytest.fixture
def mirrors(tmp_path: Path) -> Iterator[Callable[..., Mirror]]:
    """start(properties) -> a running Mirror (FAST intervals unless the properties say);
    each is stopped after the test with SIGTERM, which must exit 0, and its log checked."""
    started: list[Mirror] = []

    def start(properties: Mapping[str, str]) -> Mirror:
        mirror = Mirror({**FAST, **properties}, directory=tmp_path / f"mirror-{len(started)}")
        started.append(mirror)
        return mirror.start()

    yield start
    for mirror in started:
        code = mirror.stop()
        assert code in (0, None), f"mirror exited {code} at SIGTERM:\n{mirror.log_text(tail=60)}"
        problems = clean_log_problems(mirror.log_text())
        assert not problems, "\n".join(problems) + "\n" + mirror.log_text(tail=60)


def wait_for(predicate: Callable[[], T], what: str, timeout: float = TIMEOUT) -> T:
    """Poll until `predicate()` is truthy (returned); AssertionError naming `what` and the
    last value or exception seen otherwise."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except Exception as e:  # e.g. a topic not created yet
            last = e
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:g}s: {what} (last: {last!r})")
        time.sleep(0.1)


# ---------------------------------------------------------------- clients


def create_topics(
    bootstrap: str, topics: Mapping[str, int], replicas: int = 1, **configs: dict[str, str]
) -> None:
    """Create each topic with its partition count (and `configs[topic]` if given)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(t, n, replicas, config=configs.get(t, {})) for t, n in topics.items()],
        request_timeout=TIMEOUT,
    )
    for future in futures.values():
        future.result(TIMEOUT)


def topic_partitions(bootstrap: str) -> dict[str, int]:
    """Every topic of the cluster and its partition count."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = admin.list_topics(timeout=TIMEOUT).topics
    return {name: len(meta.partitions) for name, meta in topics.items() if meta.error is None}


def end_offsets(bootstrap: str, topic: str) -> list[int]:
    """The high watermark of each partition of `topic` (KafkaException if it is unknown)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "kwire-test-offsets"})
    try:
        meta = consumer.list_topics(topic, timeout=TIMEOUT).topics[topic]
        if meta.error is not None or not meta.partitions:
            raise LookupError(f"{topic}: {meta.error}")
        return [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT)[1]
            for p in range(len(meta.partitions))
        ]
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, ends: list[int]) -> list[list[Record]]:
    """Each partition's records from offset 0 to its end in `ends`, as (key, value, headers,
    timestamp type, timestamp): one assigned consumer, consume() in batches."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "kwire-test-reader",
            "enable.auto.commit": False,
        }
    )
    records: list[list[Record]] = [[] for _ in ends]
    remaining = {p for p, end in enumerate(ends) if end > 0}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(remaining)])
    deadline = time.monotonic() + TIMEOUT
    try:
        while remaining:
            assert time.monotonic() < deadline, f"{topic}: partitions {remaining} not read"
            for m in consumer.consume(num_messages=10_000, timeout=0.5):
                assert m.error() is None, f"{topic}: {m.error()}"
                p = m.partition()
                if m.offset() >= ends[p]:
                    continue
                assert m.offset() == len(records[p]), f"{topic}[{p}]: offset gap at {m.offset()}"
                records[p].append((m.key(), m.value(), m.headers(), *m.timestamp()))
                if m.offset() == ends[p] - 1:
                    remaining.discard(p)
    finally:
        consumer.close()
    return records


def record(rng: random.Random, i: int) -> tuple[Any, Any, Any, int]:
    """The i-th test record: (key, value, headers, timestamp), with null keys and values,
    empty and binary values, repeated and null headers, timestamps not in order."""
    key = None if i % 10 == 0 else (b"key-%d" % i if i % 3 else rng.randbytes(8))
    if i % 13 == 0:
        value = None  # a tombstone
    elif i % 17 == 0:
        value = b""
    elif i % 25_000 == 1:
        value = rng.randbytes(200_000)  # a large one now and then
    else:
        value = rng.randbytes(rng.randrange(1, 120))  # every byte value
    if i % 4 == 0:
        headers = None
    else:
        headers = [("trace", b"%d" % i), ("dup", b"first"), ("dup", b"second"), ("nil", None)]
        if i % 8 == 1:
            headers += [("bin", rng.randbytes(16)), ("empty", b""), ("ü-key", "ü".encode())]
    timestamp = 1_700_000_000_000 + (i * 7919) % 10_000_000  # CreateTime, out of order
    return key, value, headers, timestamp


def produce(
    bootstrap: str,
    topic: str,
    partitions: int,
    indexes: range,
    compression: str,
    rng: random.Random,
    expected: dict[tuple[str, int], list[Record]],
) -> None:
    """Produce records `indexes` round robin over the partitions (explicitly, so that each
    partition's order is known) with one compression; append them to `expected`."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": compression,
            "enable.idempotence": True,
            "linger.ms": 10,
            "message.max.bytes": 1_000_000,
        }
    )
    errors: list[Any] = []

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            errors.append(error)

    for n, i in enumerate(indexes):
        key, value, headers, timestamp = record(rng, i)
        partition = i % partitions
        while True:
            try:
                producer.produce(
                    topic,
                    value,
                    key,
                    partition=partition,
                    timestamp=timestamp,
                    headers=headers,
                    on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.1)
        if n % 5000 == 0:
            producer.poll(0)
        expected.setdefault((topic, partition), []).append(
            (key, value, headers, TIMESTAMP_CREATE_TIME, timestamp)
        )
    assert producer.flush(TIMEOUT) == 0, f"{topic}: records still in flight"
    assert not errors, f"{topic}: {errors[:3]}"


def wait_for_copies(
    bootstrap: str, counts: Mapping[str, list[int]], timeout: float = TIMEOUT
) -> None:
    """Until each remote topic's end offsets reach `counts`, then exactly them (a copy too
    many would show as an end offset past the count)."""
    for topic, want in counts.items():
        got = wait_for(
            lambda topic=topic, want=want: (
                (ends := end_offsets(bootstrap, topic)) is not None
                and len(ends) == len(want)
                and all(e >= w for e, w in zip(ends, want, strict=True))
                and ends
            ),
            f"{topic} copied up to {want}",
            timeout,
        )
        assert got == want, f"{topic}: end offsets {got}, {want} copied"


def assert_same_records(
    bootstrap: str, remote: str, source: str, expected: Mapping[tuple[str, int], list[Record]]
) -> int:
    """Each partition of `remote` holds `expected`'s records of `source`, in order; their
    number back."""
    partitions = 1 + max(p for t, p in expected if t == source)
    ends = [len(expected.get((source, p), [])) for p in range(partitions)]
    got = read_topic(bootstrap, remote, ends)
    for p in range(partitions):
        want = expected.get((source, p), [])
        assert len(got[p]) == len(want), f"{remote}[{p}]: {len(got[p])} records, {len(want)} sent"
        for n, (a, b) in enumerate(zip(got[p], want, strict=True)):
            assert a == b, f"{remote}[{p}] offset {n}: {a!r:.300} != {b!r:.300}"
    return sum(ends)


def metric_samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """{labels: value} of one metric in Prometheus text."""
    samples = {}
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}\{{(?P<labels>[^}}]*)\}} (?P<value>\S+)", line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m["labels"]))
            samples[labels] = float(m["value"])
    return samples


# ---------------------------------------------------------------- tests


def test_records_copied_identically_per_partition(
    brokers: tuple[Broker, Broker], mirrors: Callable[..., Mirror]
) -> None:
    """100,000 records over 1, 3 and 6 partitions, half produced before the mirror starts
    and half while it runs, each half with another compression: the remote topics have the
    same partition counts and each partition the same records in the same order."""
    a, b = brokers
    topics = {"one": 1, "three": 3, "six": 6}
    sizes = {"one": 10_000, "three": 30_000, "six": 60_000}
    before = {"one": "gzip", "three": "snappy", "six": "lz4"}
    during = {"one": "zstd", "three": "none", "six": "gzip"}
    create_topics(a.bootstrap, topics)
    rng = random.Random(13)
    expected: dict[tuple[str, int], list[Record]] = {}
    began = time.monotonic()
    for topic, n in sizes.items():
        produce(a.bootstrap, topic, topics[topic], range(n // 2), before[topic], rng, expected)

    mirror = mirrors(mirror_properties({"a": a, "b": b}))
    for topic, n in sizes.items():
        produce(a.bootstrap, topic, topics[topic], range(n // 2, n), during[topic], rng, expected)
    produced = time.monotonic()

    counts = {
        f"a.{t}": [len(expected[(t, p)]) for p in range(partitions)]
        for t, partitions in topics.items()
    }
    wait_for_copies(b.bootstrap, counts)
    copied = time.monotonic()
    remote = topic_partitions(b.bootstrap)
    for topic, partitions in topics.items():
        assert remote.get(f"a.{topic}") == partitions, remote
    assert not {t for t in remote if t.startswith("a.a.") or t in topics}, remote

    total = sum(assert_same_records(b.bootstrap, f"a.{t}", t, expected) for t in topics)
    assert total == 100_000
    print(
        f"{total} records: produced in {produced - began:.1f}s (the mirror running for the "
        f"second half), all copied {copied - produced:.1f}s after the last was produced, "
        f"read back and compared in {time.monotonic() - copied:.1f}s"
    )
    # Nothing of the mirror's own went where the records go.
    assert set(remote) >= {"mm2-offsets.a.internal", "a.checkpoints.internal"}
    assert mirror.running


def test_topic_configs_synced(
    brokers: tuple[Broker, Broker], mirrors: Callable[..., Mirror]
) -> None:
    """Configs set on a source topic are set on its remote topic at creation, except the
    ones config.properties.exclude names (min.insync.replicas by default); configs altered
    or added on the source later reach the remote topic."""
    a, b = brokers
    configs = {
        "retention.ms": "123456789",
        "cleanup.policy": "compact",
        "max.message.bytes": "2000000",
        "min.insync.replicas": "1",
    }
    create_topics(a.bootstrap, {"configured": 2}, configured=configs)
    mirrors(mirror_properties({"a": a, "b": b}))
    admin_b = AdminClient({"bootstrap.servers": b.bootstrap})

    def remote_configs() -> dict[str, tuple[str, int]]:
        resource = ConfigResource(ConfigResource.Type.TOPIC, "a.configured")
        entries = admin_b.describe_configs([resource])[resource].result(TIMEOUT)
        return {name: (entry.value, entry.source) for name, entry in entries.items()}

    dynamic = ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    got = wait_for(
        lambda: (c := remote_configs()).get("retention.ms", (None, 0))[1] == dynamic and c,
        "a.configured with its configs",
    )
    for name in ("retention.ms", "cleanup.policy", "max.message.bytes"):
        assert got[name] == (configs[name], dynamic), (name, got[name])
    # Excluded: left to the target's default, not set on the topic.
    assert got["min.insync.replicas"][1] != dynamic, got["min.insync.replicas"]

    admin_a = AdminClient({"bootstrap.servers": a.bootstrap})
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        "configured",
        incremental_configs=[
            ConfigEntry("retention.ms", "98765432", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("segment.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("min.insync.replicas", "1", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    admin_a.incremental_alter_configs([resource])[resource].result(TIMEOUT)
    altered = time.monotonic()
    got = wait_for(
        lambda: (
            (c := remote_configs())["retention.ms"][0] == "98765432"
            and c["segment.ms"] == ("3600000", dynamic)
            and c
        ),
        "the altered configs on a.configured",
    )
    print(f"an altered config reached the target in {time.monotonic() - altered:.1f}s")
    assert got["cleanup.policy"] == ("compact", dynamic)
    assert got["min.insync.replicas"][1] != dynamic


def test_new_topics_and_partitions_picked_up(
    brokers: tuple[Broker, Broker], mirrors: Callable[..., Mirror]
) -> None:
    """With a->b.topics and topics.exclude: a matching topic created while the mirror runs
    is copied, partitions added on the source are added to the remote topic and copied, a
    topic that does not match or is excluded is not."""
    a, b = brokers
    create_topics(a.bootstrap, {"grow": 2, "other": 1})
    rng = random.Random(3)
    expected: dict[tuple[str, int], list[Record]] = {}
    produce(a.bootstrap, "grow", 2, range(1000), "lz4", rng, expected)
    produce(a.bootstrap, "other", 1, range(100), "none", rng, expected)
    mirrors(
        mirror_properties(
            {"a": a, "b": b}, **{"a->b.topics": "new-.*, grow", "topics.exclude": "new-skip.*"}
        )
    )
    wait_for_copies(b.bootstrap, {"a.grow": [500, 500]})

    # The excluded topic is created first: the refresh that finds new-1 sees it too.
    create_topics(a.bootstrap, {"new-skip-1": 1})
    create_topics(a.bootstrap, {"new-1": 3})
    produce(a.bootstrap, "new-skip-1", 1, range(100), "none", rng, expected)
    produce(a.bootstrap, "new-1", 3, range(3000), "zstd", rng, expected)
    admin_a = AdminClient({"bootstrap.servers": a.bootstrap})
    admin_a.create_partitions([NewPartitions("grow", 5)])["grow"].result(TIMEOUT)
    produce(a.bootstrap, "grow", 5, range(1000, 6000), "snappy", rng, expected)

    counts = {
        "a.new-1": [1000, 1000, 1000],
        "a.grow": [len(expected[("grow", p)]) for p in range(5)],
    }
    wait_for_copies(b.bootstrap, counts)
    assert assert_same_records(b.bootstrap, "a.new-1", "new-1", expected) == 3000
    assert assert_same_records(b.bootstrap, "a.grow", "grow", expected) == 6000
    time.sleep(2.5)  # two more refreshes
    remote = topic_partitions(b.bootstrap)
    assert remote["a.grow"] == 5
    assert not {"a.other", "a.new-skip-1"} & set(remote), remote


def test_identity_policy_keeps_names(
    brokers: tuple[Broker, Broker], mirrors: Callable[..., Mirror]
) -> None:
    a, b = brokers
    create_topics(a.bootstrap, {"same": 3})
    rng = random.Random(4)
    expected: dict[tuple[str, int], list[Record]] = {}
    produce(a.bootstrap, "same", 3, range(3000), "lz4", rng, expected)
    mirrors(mirror_properties({"a": a, "b": b}, replication_policy_class=IDENTITY_POLICY))
    wait_for_copies(b.bootstrap, {"same": [1000, 1000, 1000]})
    assert assert_same_records(b.bootstrap, "same", "same", expected) == 3000
    remote = topic_partitions(b.bootstrap)
    assert "a.same" not in remote, remote


def test_two_way_mirroring_does_not_loop(
    brokers: tuple[Broker, Broker], mirrors: Callable[..., Mirror]
) -> None:
    """a->b and b->a in one mirror with the default policy: a's topic is copied to b as
    a.east, b's to a as b.west, and the copies are not copied back (no b.a.east, a.b.west)."""
    a, b = brokers
    create_topics(a.bootstrap, {"east": 2})
    create_topics(b.bootstrap, {"west": 2})
    rng = random.Random(5)
    expected: dict[tuple[str, int], list[Record]] = {}
    produce(a.bootstrap, "east", 2, range(2000), "gzip", rng, expected)
    produce(b.bootstrap, "west", 2, range(2000), "zstd", rng, expected)
    mirrors(mirror_properties({"a": a, "b": b}, flows=("a->b", "b->a")))
    wait_for_copies(b.bootstrap, {"a.east": [1000, 1000]})
    wait_for_copies(a.bootstrap, {"b.west": [1000, 1000]})
    time.sleep(3)  # three more refreshes on each side
    on_a, on_b = topic_partitions(a.bootstrap), topic_partitions(b.bootstrap)
    assert not [t for t in on_a if t.startswith("b.a.")], on_a
    assert not [t for t in on_b if t.startswith("a.b.")], on_b
    assert "a.east" not in on_a and "b.west" not in on_b
    assert end_offsets(b.bootstrap, "a.east") == [1000, 1000]
    assert end_offsets(a.bootstrap, "b.west") == [1000, 1000]
    assert assert_same_records(b.bootstrap, "a.east", "east", expected) == 2000
    assert assert_same_records(a.bootstrap, "b.west", "west", expected) == 2000


@pytest.mark.parametrize("cluster_side", ["target", "source"])
def test_three_broker_cluster(
    tmp_path: Path, kwire_cluster: Cluster, mirrors: Callable[..., Mirror], cluster_side: str
) -> None:
    """A single broker mirrored to a 3-broker cluster with replication.factor = 3, or the
    cluster's topic of 3 replicas to a single broker: the records are all there, and the
    topics the mirror made on the cluster (the remote topic, its own) have 3 replicas."""
    single = Broker(directory=tmp_path / "single")
    with single:
        if cluster_side == "target":
            source, target = single, kwire_cluster
            settings = {
                "replication.factor": "3",
                "offset.storage.replication.factor": "3",
                "checkpoints.topic.replication.factor": "3",
            }
            on_cluster = ["a.replicated", "mm2-offsets.a.internal", "a.checkpoints.internal"]
        else:
            source, target = kwire_cluster, single
            settings = {"offset-syncs.topic.replication.factor": "3"}
            on_cluster = ["replicated", "mm2-offset-syncs.b.internal"]
        create_topics(
            source.bootstrap, {"replicated": 4}, replicas=3 if source is kwire_cluster else 1
        )
        rng = random.Random(6)
        expected: dict[tuple[str, int], list[Record]] = {}
        produce(source.bootstrap, "replicated", 4, range(8000), "lz4", rng, expected)
        mirror = mirrors({**mirror_properties({"a": source, "b": target}), **settings})
        wait_for_copies(target.bootstrap, {"a.replicated": [2000] * 4})
        assert assert_same_records(target.bootstrap, "a.replicated", "replicated", expected) == 8000
        admin = AdminClient({"bootstrap.servers": kwire_cluster.bootstrap})
        topics = admin.list_topics(timeout=TIMEOUT).topics
        for name in on_cluster:
            replicas = {p: sorted(m.replicas) for p, m in topics[name].partitions.items()}
            assert all(r == [1, 2, 3] for r in replicas.values()), (name, replicas)
        assert topic_partitions(target.bootstrap)["a.replicated"] == 4
        assert mirror.stop() == 0
    assert not clean_log_problems(single.log_text()), single.log_text(5000)


def test_metrics_sigterm_and_restart_resumes(
    brokers: tuple[Broker, Broker], mirrors: Callable[..., Mirror]
) -> None:
    """/metrics counts the records copied per topic and shows each partition's lag, the
    progress line is logged; SIGTERM exits 0 with the progress stored, so a restarted
    mirror copies nothing again, and then only what is new."""
    a, b = brokers
    create_topics(a.bootstrap, {"m1": 1, "m3": 3})
    rng = random.Random(7)
    expected: dict[tuple[str, int], list[Record]] = {}
    produce(a.bootstrap, "m1", 1, range(1500), "none", rng, expected)
    produce(a.bootstrap, "m3", 3, range(4500), "lz4", rng, expected)
    mirror = mirrors(mirror_properties({"a": a, "b": b}))
    wait_for_copies(b.bootstrap, {"a.m1": [1500], "a.m3": [1500] * 3})

    def settled() -> str | None:
        text = mirror.metrics()
        records = metric_samples(text, "kwire_mirror_records_total")
        lag = metric_samples(text, "kwire_mirror_replication_lag")
        flow = {("source", "a"), ("target", "b")}
        want = {
            frozenset({*flow, ("topic", "m1")}): 1500,
            frozenset({*flow, ("topic", "m3")}): 4500,
        }
        lags = {(dict(k)["topic"], dict(k)["partition"]): v for k, v in lag.items()}
        want_lags = {("m1", "0"): 0, **{("m3", str(p)): 0 for p in range(3)}}
        return text if records == want and lags == want_lags else None

    wait_for(settled, "records_total 1500 (m1) and 4500 (m3), every lag 0")
    last_line = {"flow": "a->b", "copied": "6000", "lag": "0", "partitions": "4"}
    wait_for(
        lambda: (
            [m.groupdict() for m in PROGRESS_LINE.finditer(mirror.log_text())][-1:] == [last_line]
        ),
        f"the progress line {last_line}",
    )

    assert mirror.stop() == 0
    assert "kwire mirror stopped" in mirror.log_text()
    ends = {t: end_offsets(b.bootstrap, t) for t in ("a.m1", "a.m3")}
    assert ends == {"a.m1": [1500], "a.m3": [1500] * 3}
    log_size = len(mirror.log_text())

    mirror.start()
    # The new run read the progress of the 4 partitions and logged a progress line.
    wait_for(
        lambda: (
            "4 partitions have stored progress" in mirror.log_text()[log_size:]
            and PROGRESS_LINE.search(mirror.log_text()[log_size:])
        ),
        "the restarted mirror's progress line",
    )
    time.sleep(1.5)  # a few more polls and a flush
    assert {t: end_offsets(b.bootstrap, t) for t in ends} == ends
    assert metric_samples(mirror.metrics(), "kwire_mirror_records_total") == {}

    # Only new records are copied now.
    produce(a.bootstrap, "m3", 3, range(4500, 4800), "zstd", rng, expected)
    wait_for_copies(b.bootstrap, {"a.m3": [1600] * 3})
    assert assert_same_records(b.bootstrap, "a.m3", "m3", expected) == 4800
    assert end_offsets(b.bootstrap, "a.m1") == [1500]
    wait_for(
        lambda: (
            metric_samples(mirror.metrics(), "kwire_mirror_records_total")
            == {frozenset({("source", "a"), ("target", "b"), ("topic", "m3")}): 300}
        ),
        "records_total 300 after the restart",
    )
