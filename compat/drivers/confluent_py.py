"""confluent-kafka (Python, bundled librdkafka) driver."""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    NewTopic,
    OffsetSpec,
)

from compat import scenarios as S
from compat.drivers import common as C
from compat.drivers.common import check


class _Diag(logging.Handler):
    """librdkafka's debug log: keep errors that never reach the application."""

    def emit(self, record):
        msg = record.getMessage()
        if "_PARTITION_EOF" in msg:
            return
        for tag in ("FETCHERR", "OFFSETERR", "|ERROR|", "PROTOERR", "COMMITFAIL", "JOINGROUP",
                    "TXNCOORD", "TXNERR", "IDEMPSTATE"):
            if tag in msg and ("rror" in msg or "fail" in msg.lower()):
                C.note_client_error(msg.split("]: ", 1)[-1])
                return


_logger = logging.getLogger("rdkafka")
_logger.addHandler(_Diag())
_logger.propagate = False
_logger.setLevel(logging.DEBUG)


SECURITY = C.security()
# librdkafka's names for the SASL_SSL run's settings (none in a PLAINTEXT run).
SECURE = {} if SECURITY is None else {
    "security.protocol": SECURITY["protocol"], "ssl.ca.location": SECURITY["ca"],
    "sasl.mechanism": SECURITY["mechanism"], "sasl.username": SECURITY["username"],
    "sasl.password": SECURITY["password"]}


def base(ctx, **extra):
    conf = {"bootstrap.servers": ctx.bootstrap, "socket.timeout.ms": 10000,
            "broker.address.family": "v4", "debug": "fetch,eos",
            "logger": _logger, "error_cb": lambda err: C.note_client_error(str(err)),
            **SECURE}
    conf.update(extra)
    return conf


def admin(ctx):
    conf = base(ctx)
    conf.pop("error_cb")
    return AdminClient(conf)


def ensure_topic(ctx, topic, partitions=S.PARTITIONS, config=None):
    a = admin(ctx)
    fs = a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=-1,
                                   config=config or {})], operation_timeout=10, request_timeout=15)
    try:
        fs[topic].result(timeout=15)
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise
    def ready():
        md = a.list_topics(topic=topic, timeout=5)
        t = md.topics.get(topic)
        return t is not None and t.error is None and len(t.partitions) == partitions
    C.wait_until(ready, 10, f"topic {topic} with {partitions} partitions in metadata")


def produce(ctx, topic, records, **conf):
    """records: dicts with value, key, headers, partition, timestamp. Returns reports."""
    p = Producer(base(ctx, **{"linger.ms": 5, **conf}))
    reports = []
    errors = []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            reports.append((msg.key(), msg.partition(), msg.offset(), msg.value()))

    for r in records:
        kw = {k: v for k, v in r.items() if v is not None}
        p.produce(topic, on_delivery=cb, **kw)
        p.poll(0)
    left = p.flush(15)
    check(not errors, f"delivery failed: {errors[0]}" if errors else "")
    check(left == 0, f"{left} records not delivered after flush")
    return reports


def read_assigned(ctx, topic, n, partitions=S.PARTITIONS, timeout=15, extra_wait=0.3, **conf):
    """Read n records from the beginning of every partition, without a group."""
    c = Consumer(base(ctx, **{"group.id": ctx.name("reader"), "enable.auto.commit": False,
                              "auto.offset.reset": "earliest", **conf}))
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out = poll_n(c, n, timeout, extra_wait)
    c.close()
    return out


def poll_n(c, n, timeout, extra_wait=0.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(m.error())
        out.append(m)
    end = time.monotonic() + extra_wait
    while time.monotonic() < end:
        m = c.poll(0.2)
        if m is not None and not m.error():
            out.append(m)
    check(len(out) >= n, f"read {len(out)} of {n} records in {timeout}s")
    return out


def s_metadata(ctx):
    ctx.step("list topics")
    md = admin(ctx).list_topics(timeout=10)
    check(len(md.brokers) >= 1, "metadata lists no broker")
    _ = list(md.topics)


def s_admin_topics(ctx):
    a = admin(ctx)
    ctx.step("create topic")
    fs = a.create_topics([NewTopic(ctx.topic, num_partitions=3, replication_factor=-1)],
                         operation_timeout=10, request_timeout=15)
    fs[ctx.topic].result(timeout=15)
    ctx.step("topic in metadata")
    def listed():
        t = a.list_topics(timeout=5).topics.get(ctx.topic)
        return t is not None and t.error is None and len(t.partitions) == 3
    C.wait_until(listed, 10, "created topic listed with 3 partitions")
    ctx.step("delete topic")
    a.delete_topics([ctx.topic], operation_timeout=10, request_timeout=15)[ctx.topic].result(timeout=15)
    ctx.step("topic gone from metadata")
    C.wait_until(lambda: ctx.topic not in a.list_topics(timeout=5).topics, 10,
                 "deleted topic gone from metadata")


def s_produce_keyed(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    ctx.step("produce")
    recs = [{"key": f"k{i % S.KEYS}".encode(), "value": f"v{i}".encode(),
             "headers": [("h1", f"x{i}".encode()), ("seq", str(i).encode())]}
            for i in range(S.N_KEYED)]
    reports = produce(ctx, ctx.topic, recs)
    parts = {}
    for key, p, _, _ in reports:
        parts.setdefault(key, set()).add(p)
    check(all(len(v) == 1 for v in parts.values()), f"a key went to several partitions: {parts}")
    ctx.step("read back")
    msgs = read_assigned(ctx, ctx.topic, S.N_KEYED)
    for m in msgs:
        i = int(m.value().decode()[1:])
        check(m.key() == f"k{i % S.KEYS}".encode(), f"record {i}: key {m.key()!r}")
        hdrs = [(k, bytes(v)) for k, v in (m.headers() or [])]
        check(hdrs == [("h1", f"x{i}".encode()), ("seq", str(i).encode())],
              f"record {i}: headers {hdrs}")
        check(m.partition() in parts[m.key()], f"record {i}: partition {m.partition()}")


def s_consume_earliest(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    ctx.step("produce")
    produce(ctx, ctx.topic, [{"value": f"m{i}".encode(), "partition": i % 3}
                             for i in range(S.N_SPREAD)])
    ctx.step("group consume from earliest", 40)
    c = Consumer(base(ctx, **{"group.id": ctx.group, "auto.offset.reset": "earliest"}))
    c.subscribe([ctx.topic])
    msgs = poll_n(c, S.N_SPREAD, 30, extra_wait=0.5)
    c.close()
    C.check_in_order([(m.partition(), m.offset(), m.value().decode()) for m in msgs], S.N_SPREAD)


def s_commit_resume(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    ctx.step("produce")
    produce(ctx, ctx.topic, [{"value": f"c{i}".encode(), "partition": 0}
                             for i in range(S.N_COMMIT)])
    conf = {"group.id": ctx.group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    ctx.step("consumer 1 reads", 40)
    c = Consumer(base(ctx, **conf))
    c.subscribe([ctx.topic])
    msgs = poll_n(c, S.COMMIT_AT, 30)
    check([m.value() for m in msgs[:S.COMMIT_AT]] == [f"c{i}".encode() for i in range(S.COMMIT_AT)],
          "consumer 1 did not read c0..c9 first")
    ctx.step("commit")
    c.commit(offsets=[TopicPartition(ctx.topic, 0, S.COMMIT_AT)], asynchronous=False)
    ctx.step("close consumer 1")
    c.close()
    ctx.step("consumer 2 resumes", 40)
    c = Consumer(base(ctx, **conf))
    c.subscribe([ctx.topic])
    m = poll_n(c, 1, 30)[0]
    check(m.offset() == S.COMMIT_AT and m.value() == f"c{S.COMMIT_AT}".encode(),
          f"resumed at offset {m.offset()} ({m.value()!r}), expected {S.COMMIT_AT}")
    ctx.step("committed()")
    got = c.committed([TopicPartition(ctx.topic, 0)], timeout=10)[0].offset
    check(got == S.COMMIT_AT, f"committed() = {got}")
    c.close()


def s_group_split(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    conf = {"group.id": ctx.group, "auto.offset.reset": "earliest"}
    ctx.step("two members join", 45)
    cs = [Consumer(base(ctx, **conf)) for _ in range(2)]
    got: list[list] = [[], []]
    assigned: list[set] = [set(), set()]
    stop = threading.Event()
    errs = []

    # Assignments come from the rebalance callbacks, run inside poll() on each member's
    # own thread (Consumer.assignment() from another thread blocks while poll() runs).
    def on_assign(i):
        def cb(consumer, parts):
            assigned[i] = {tp.partition for tp in parts}
        return cb

    def on_revoke(i):
        def cb(consumer, parts):
            assigned[i] = set()
        return cb

    def loop(i):
        try:
            cs[i].subscribe([ctx.topic], on_assign=on_assign(i), on_revoke=on_revoke(i))
            while not stop.is_set():
                m = cs[i].poll(0.2)
                if m is not None and not m.error():
                    got[i].append((m.partition(), m.offset(), m.value().decode()))
        except Exception as e:
            errs.append(e)

    def produce_spread():
        produce(ctx, ctx.topic, [{"value": f"m{i}".encode(), "partition": i % 3}
                                 for i in range(S.N_SPREAD)])

    C.run_split_members(ctx, loop, assigned, got, stop, errs, produce_spread, join_timeout=5)
    for c in cs:
        c.close()


def compression(codec):
    def run(ctx):
        ctx.step("create topic")
        ensure_topic(ctx, ctx.topic)
        ctx.step(f"produce {codec}")
        produce(ctx, ctx.topic, [{"value": C.payload(codec, i).encode(), "partition": i % 3}
                                 for i in range(S.N_COMPRESSED)],
                **{"compression.type": codec, "linger.ms": 50})
        ctx.step("read back")
        msgs = read_assigned(ctx, ctx.topic, S.N_COMPRESSED)
        vals = sorted(m.value().decode() for m in msgs)
        check(vals == sorted(C.payload(codec, i) for i in range(S.N_COMPRESSED)),
              "values read back differ")
    return run


def s_list_offsets(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    t0 = (int(time.time() * 1000) // 1000) * 1000 - 60_000
    ctx.step("produce with timestamps")
    produce(ctx, ctx.topic, [{"value": f"o{i}".encode(), "partition": 0,
                              "timestamp": t0 + i * 1000} for i in range(S.N_OFFSETS)])
    a = admin(ctx)
    tp = TopicPartition(ctx.topic, 0)
    for label, spec, want in [("earliest", OffsetSpec.earliest(), 0),
                              ("latest", OffsetSpec.latest(), S.N_OFFSETS),
                              ("timestamp T0+5000", OffsetSpec.for_timestamp(t0 + 5000), 5),
                              ("timestamp T0+5500", OffsetSpec.for_timestamp(t0 + 5500), 6)]:
        ctx.step(f"list offsets {label}")
        got = a.list_offsets({tp: spec}, request_timeout=10)[tp].result(timeout=10).offset
        check(got == want, f"{label}: offset {got}, expected {want}")


def s_idempotent(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    ctx.step("produce idempotent")
    reports = produce(ctx, ctx.topic, [{"value": f"i{i}".encode(), "partition": 0}
                                       for i in range(S.N_IDEMPOTENT)],
                      **{"enable.idempotence": True, "acks": "all"})
    offs = sorted(o for _, _, o, _ in reports)
    check(offs == list(range(S.N_IDEMPOTENT)), f"offsets {offs[:5]}..{offs[-3:]}")
    ctx.step("read back")
    msgs = read_assigned(ctx, ctx.topic, S.N_IDEMPOTENT, extra_wait=1.0)
    check([m.value().decode() for m in msgs if m.partition() == 0]
          == [f"i{i}" for i in range(S.N_IDEMPOTENT)], "records differ from those produced")


def s_transactions(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    p = Producer(base(ctx, **{"transactional.id": ctx.name("txn"), "linger.ms": 5}))
    ctx.step("init_transactions")
    try:
        p.init_transactions(15)
    except KafkaException:
        p.poll(0.1)  # the client's log lines reach the logger only through poll()
        raise
    for name, commit in (("a", True), ("x", False), ("b", True)):
        ctx.step(f"transaction {name} ({'commit' if commit else 'abort'})")
        p.begin_transaction()
        for i in range(S.TXN_BATCH):
            p.produce(ctx.topic, value=f"{name}{i}".encode(), partition=0)
        p.flush(10)
        if commit:
            p.commit_transaction(15)
        else:
            p.abort_transaction(15)
    ctx.step("read_committed consumer")
    want = [f"a{i}" for i in range(S.TXN_BATCH)] + [f"b{i}" for i in range(S.TXN_BATCH)]
    c = Consumer(base(ctx, **{"group.id": ctx.group, "isolation.level": "read_committed",
                              "enable.auto.commit": False, "auto.offset.reset": "earliest",
                              "enable.partition.eof": True}))
    c.assign([TopicPartition(ctx.topic, 0, OFFSET_BEGINNING)])
    got = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                if len(got) >= len(want):
                    break
                continue
            raise KafkaException(m.error())
        got.append(m.value().decode())
    c.close()
    check(got == want, f"read_committed saw {got}")


def s_describe_configs(ctx):
    ctx.step("create topic with retention.ms")
    ensure_topic(ctx, ctx.topic, config={"retention.ms": S.RETENTION_MS})
    a = admin(ctx)
    ctx.step("describe topic config")
    res = ConfigResource("topic", ctx.topic)
    entries = a.describe_configs([res], request_timeout=10)[res].result(timeout=10)
    check("retention.ms" in entries, f"retention.ms missing from {len(entries)} entries")
    check(entries["retention.ms"].value == S.RETENTION_MS,
          f"retention.ms = {entries['retention.ms'].value}")
    ctx.step("describe broker config")
    bid = next(iter(a.list_topics(timeout=10).brokers))
    res = ConfigResource("broker", str(bid))
    entries = a.describe_configs([res], request_timeout=10)[res].result(timeout=10)
    check(len(entries) >= 1, "broker config is empty")


def s_groups(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    produce(ctx, ctx.topic, [{"value": b"g0", "partition": 0}])
    ctx.step("member joins and reads", 40)
    c = Consumer(base(ctx, **{"group.id": ctx.group, "auto.offset.reset": "earliest"}))
    c.subscribe([ctx.topic])
    poll_n(c, 1, 30)
    c.commit(asynchronous=False)
    stop = threading.Event()

    def keep_polling():
        while not stop.is_set():
            c.poll(0.1)
    t = threading.Thread(target=keep_polling, daemon=True)
    t.start()
    a = admin(ctx)
    ctx.step("list groups")
    def listed():
        res = a.list_consumer_groups(request_timeout=10).result(timeout=10)
        return ctx.group in {g.group_id for g in res.valid}
    C.wait_until(listed, 10, "group in ListGroups")
    ctx.step("describe group")
    d = a.describe_consumer_groups([ctx.group], request_timeout=10)[ctx.group].result(timeout=10)
    state = getattr(d.state, "name", str(d.state))
    check(state == "STABLE", f"state {state}")
    check(len(d.members) == 1, f"{len(d.members)} members")
    stop.set()
    t.join(5)
    c.close()


SCENARIOS = {
    "metadata": s_metadata,
    "admin_topics": s_admin_topics,
    "produce_keyed": s_produce_keyed,
    "consume_earliest": s_consume_earliest,
    "commit_resume": s_commit_resume,
    "group_split": s_group_split,
    "compression_gzip": compression("gzip"),
    "compression_snappy": compression("snappy"),
    "compression_lz4": compression("lz4"),
    "compression_zstd": compression("zstd"),
    "list_offsets": s_list_offsets,
    "idempotent": s_idempotent,
    "transactions": s_transactions,
    "describe_configs": s_describe_configs,
    "groups": s_groups,
}

if __name__ == "__main__":
    C.main(SCENARIOS)
