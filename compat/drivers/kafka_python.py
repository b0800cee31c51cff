"""kafka-python driver."""

from __future__ import annotations

import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from compat import scenarios as S
from compat.drivers import common as C
from compat.drivers.common import check

C.LogDiag.install("kafka", debug=("kafka.protocol.parser", "kafka.producer.transaction_manager"),
                  ignore=("disabling auto-commit",))

COMMON = {"request_timeout_ms": 10000}
SECURITY = C.security()
if SECURITY is not None:
    COMMON.update(security_protocol=SECURITY["protocol"], ssl_cafile=SECURITY["ca"],
                  sasl_mechanism=SECURITY["mechanism"],
                  sasl_plain_username=SECURITY["username"],
                  sasl_plain_password=SECURITY["password"])


def admin(ctx):
    return KafkaAdminClient(bootstrap_servers=ctx.bootstrap, **COMMON)


def ensure_topic(ctx, topic, partitions=S.PARTITIONS, config=None):
    a = admin(ctx)
    try:
        a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=-1,
                                  topic_configs=config or {})], timeout_ms=10000)
    except TopicAlreadyExistsError:
        pass
    a.close()
    c = KafkaConsumer(bootstrap_servers=ctx.bootstrap, **COMMON)
    C.wait_until(lambda: len(c.partitions_for_topic(topic) or ()) == partitions, 10,
                 f"topic {topic} with {partitions} partitions in metadata")
    c.close()


def produce(ctx, topic, records, **conf):
    p = KafkaProducer(bootstrap_servers=ctx.bootstrap, **COMMON, **{"linger_ms": 5, **conf})
    futs = [p.send(topic, **r) for r in records]
    p.flush(15)
    reports = []
    for f in futs:
        md = f.get(timeout=15)
        reports.append((md.partition, md.offset))
    p.close(5)
    return reports


def consumer(ctx, **conf):
    return KafkaConsumer(bootstrap_servers=ctx.bootstrap, **COMMON,
                         **{"enable_auto_commit": False, "auto_offset_reset": "earliest", **conf})


def poll_n(c, n, timeout, extra_wait=0.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=200).values():
            out.extend(recs)
    end = time.monotonic() + extra_wait
    while time.monotonic() < end:
        for recs in c.poll(timeout_ms=100).values():
            out.extend(recs)
    check(len(out) >= n, f"read {len(out)} of {n} records in {timeout}s")
    return out


def read_assigned(ctx, topic, n, partitions=S.PARTITIONS, timeout=15, extra_wait=0.3, **conf):
    c = consumer(ctx, group_id=None, **conf)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    out = poll_n(c, n, timeout, extra_wait)
    c.close()
    return out


def s_metadata(ctx):
    ctx.step("list topics")
    a = admin(ctx)
    a.list_topics()
    check(len(a.describe_cluster().get("brokers", [])) >= 1, "no broker in describe_cluster")


def s_admin_topics(ctx):
    ctx.step("create topic")
    a = admin(ctx)
    a.create_topics([NewTopic(ctx.topic, num_partitions=3, replication_factor=-1)],
                    timeout_ms=10000)
    ctx.step("topic in metadata")
    c = consumer(ctx)
    C.wait_until(lambda: len(c.partitions_for_topic(ctx.topic) or ()) == 3, 10,
                 "created topic listed with 3 partitions")
    ctx.step("delete topic")
    a.delete_topics([ctx.topic], timeout_ms=10000)
    ctx.step("topic gone from metadata")
    C.wait_until(lambda: ctx.topic not in a.list_topics(), 10, "deleted topic gone from metadata")
    c.close()


def s_produce_keyed(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    ctx.step("produce")
    recs = [{"key": f"k{i % S.KEYS}".encode(), "value": f"v{i}".encode(),
             "headers": [("h1", f"x{i}".encode()), ("seq", str(i).encode())]}
            for i in range(S.N_KEYED)]
    reports = produce(ctx, ctx.topic, recs)
    parts = {}
    for r, (p, _) in zip(recs, reports, strict=True):
        parts.setdefault(r["key"], set()).add(p)
    check(all(len(v) == 1 for v in parts.values()), f"a key went to several partitions: {parts}")
    ctx.step("read back")
    for m in read_assigned(ctx, ctx.topic, S.N_KEYED):
        i = int(m.value.decode()[1:])
        check(m.key == f"k{i % S.KEYS}".encode(), f"record {i}: key {m.key!r}")
        hdrs = [(k, bytes(v)) for k, v in m.headers]
        check(hdrs == [("h1", f"x{i}".encode()), ("seq", str(i).encode())],
              f"record {i}: headers {hdrs}")
        check(m.partition in parts[m.key], f"record {i}: partition {m.partition}")


def s_consume_earliest(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    ctx.step("produce")
    produce(ctx, ctx.topic, [{"value": f"m{i}".encode(), "partition": i % 3}
                             for i in range(S.N_SPREAD)])
    ctx.step("group consume from earliest", 40)
    c = consumer(ctx, group_id=ctx.group)
    c.subscribe([ctx.topic])
    msgs = poll_n(c, S.N_SPREAD, 30, extra_wait=0.5)
    c.close()
    C.check_in_order([(m.partition, m.offset, m.value.decode()) for m in msgs], S.N_SPREAD)


def s_commit_resume(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    ctx.step("produce")
    produce(ctx, ctx.topic, [{"value": f"c{i}".encode(), "partition": 0}
                             for i in range(S.N_COMMIT)])
    ctx.step("consumer 1 reads", 40)
    c = consumer(ctx, group_id=ctx.group)
    c.subscribe([ctx.topic])
    msgs = poll_n(c, S.COMMIT_AT, 30)
    check([m.value for m in msgs[:S.COMMIT_AT]] == [f"c{i}".encode() for i in range(S.COMMIT_AT)],
          "consumer 1 did not read c0..c9 first")
    ctx.step("commit")
    tp = TopicPartition(ctx.topic, 0)
    c.commit({tp: OffsetAndMetadata(S.COMMIT_AT, "", -1)})
    ctx.step("close consumer 1")
    c.close()
    ctx.step("consumer 2 resumes", 40)
    c = consumer(ctx, group_id=ctx.group)
    c.subscribe([ctx.topic])
    m = poll_n(c, 1, 30)[0]
    check(m.offset == S.COMMIT_AT and m.value == f"c{S.COMMIT_AT}".encode(),
          f"resumed at offset {m.offset} ({m.value!r}), expected {S.COMMIT_AT}")
    ctx.step("committed()")
    got = c.committed(tp)
    check(got == S.COMMIT_AT, f"committed() = {got}")
    c.close()


def s_group_split(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    ctx.step("two members join", 45)
    got: list[list] = [[], []]
    assigned: list[set] = [set(), set()]
    stop = threading.Event()
    errs = []
    cs = [consumer(ctx, group_id=ctx.group) for _ in range(2)]

    def loop(i):
        try:
            cs[i].subscribe([ctx.topic])
            while not stop.is_set():
                for recs in cs[i].poll(timeout_ms=200).values():
                    got[i].extend((m.partition, m.offset, m.value.decode()) for m in recs)
                assigned[i] = {tp.partition for tp in cs[i].assignment()}
            cs[i].close()
        except Exception as e:
            errs.append(e)

    def produce_spread():
        produce(ctx, ctx.topic, [{"value": f"m{i}".encode(), "partition": i % 3}
                                 for i in range(S.N_SPREAD)])

    C.run_split_members(ctx, loop, assigned, got, stop, errs, produce_spread, join_timeout=10)


def compression(codec):
    def run(ctx):
        ctx.step("create topic")
        ensure_topic(ctx, ctx.topic)
        ctx.step(f"produce {codec}")
        produce(ctx, ctx.topic, [{"value": C.payload(codec, i).encode(), "partition": i % 3}
                                 for i in range(S.N_COMPRESSED)],
                compression_type=codec, linger_ms=50)
        ctx.step("read back")
        vals = sorted(m.value.decode() for m in read_assigned(ctx, ctx.topic, S.N_COMPRESSED))
        check(vals == sorted(C.payload(codec, i) for i in range(S.N_COMPRESSED)),
              "values read back differ")
    return run


def s_list_offsets(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    t0 = (int(time.time() * 1000) // 1000) * 1000 - 60_000
    ctx.step("produce with timestamps")
    # acks=all: "latest" is the high watermark, past the records once they are
    # acknowledged by the whole ISR (acks=1 answers before followers copy them).
    produce(ctx, ctx.topic, [{"value": f"o{i}".encode(), "partition": 0,
                              "timestamp_ms": t0 + i * 1000} for i in range(S.N_OFFSETS)],
            acks="all")
    c = consumer(ctx, group_id=None)
    tp = TopicPartition(ctx.topic, 0)
    ctx.step("list offsets earliest")
    got = c.beginning_offsets([tp])[tp]
    check(got == 0, f"earliest: offset {got}, expected 0")
    ctx.step("list offsets latest")
    got = c.end_offsets([tp])[tp]
    check(got == S.N_OFFSETS, f"latest: offset {got}, expected {S.N_OFFSETS}")
    for ts, want in ((t0 + 5000, 5), (t0 + 5500, 6)):
        ctx.step(f"list offsets timestamp T0+{ts - t0}")
        r = c.offsets_for_times({tp: ts})[tp]
        got = None if r is None else r.offset
        check(got == want, f"timestamp T0+{ts - t0}: offset {got}, expected {want}")
    c.close()


def s_idempotent(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    ctx.step("produce idempotent")
    reports = produce(ctx, ctx.topic, [{"value": f"i{i}".encode(), "partition": 0}
                                       for i in range(S.N_IDEMPOTENT)],
                      enable_idempotence=True, acks="all")
    offs = sorted(o for _, o in reports)
    check(offs == list(range(S.N_IDEMPOTENT)), f"offsets {offs[:5]}..{offs[-3:]}")
    ctx.step("read back")
    msgs = read_assigned(ctx, ctx.topic, S.N_IDEMPOTENT, extra_wait=1.0)
    check([m.value.decode() for m in msgs if m.partition == 0]
          == [f"i{i}" for i in range(S.N_IDEMPOTENT)], "records differ from those produced")


def s_transactions(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    ctx.step("init_transactions")
    p = KafkaProducer(bootstrap_servers=ctx.bootstrap, transactional_id=ctx.name("txn"),
                      linger_ms=5, **COMMON)
    p.init_transactions()
    for name, commit in (("a", True), ("x", False), ("b", True)):
        ctx.step(f"transaction {name} ({'commit' if commit else 'abort'})")
        p.begin_transaction()
        futs = [p.send(ctx.topic, value=f"{name}{i}".encode(), partition=0)
                for i in range(S.TXN_BATCH)]
        p.flush(10)
        for f in futs:
            f.get(timeout=10)
        if commit:
            p.commit_transaction()
        else:
            p.abort_transaction()
    p.close(5)
    ctx.step("read_committed consumer")
    want = [f"a{i}" for i in range(S.TXN_BATCH)] + [f"b{i}" for i in range(S.TXN_BATCH)]
    msgs = read_assigned(ctx, ctx.topic, len(want), partitions=1, extra_wait=1.0,
                         isolation_level="read_committed")
    got = [m.value.decode() for m in msgs]
    check(got == want, f"read_committed saw {got}")


def s_describe_configs(ctx):
    ctx.step("create topic with retention.ms")
    ensure_topic(ctx, ctx.topic, config={"retention.ms": S.RETENTION_MS})
    a = admin(ctx)
    ctx.step("describe topic config")
    res = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, ctx.topic)],
                             config_filter="all")
    entries = _config_entries(res, ctx.topic)
    check("retention.ms" in entries, f"retention.ms missing from {len(entries)} entries")
    check(entries["retention.ms"] == S.RETENTION_MS, f"retention.ms = {entries['retention.ms']}")
    ctx.step("describe broker config")
    b = a.describe_cluster()["brokers"][0]
    bid = b.get("node_id", b.get("broker_id"))
    res = a.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(bid))],
                             config_filter="all")
    check(len(_config_entries(res, str(bid))) >= 1, "broker config is empty")


def _config_entries(res, name):
    """Flatten whatever shape describe_configs returns into {key: value}."""
    if isinstance(res, list):  # older kafka-python: raw responses
        out = {}
        for r in res:
            for rr in r.resources:
                for e in rr[4]:
                    out[e[0]] = e[1]
        return out
    for by_name in res.values():
        if name in by_name:
            entries = by_name[name]
            return {k: (v.get("value") if isinstance(v, dict) else v) for k, v in entries.items()}
    raise C.Fail(f"no entry for {name} in {list(res)}")


def s_groups(ctx):
    ctx.step("create topic")
    ensure_topic(ctx, ctx.topic)
    produce(ctx, ctx.topic, [{"value": b"g0", "partition": 0}])
    ctx.step("member joins and reads", 40)
    c = consumer(ctx, group_id=ctx.group)
    c.subscribe([ctx.topic])
    poll_n(c, 1, 30)
    c.commit()
    stop = threading.Event()

    def keep_polling():
        while not stop.is_set():
            c.poll(timeout_ms=100)
    t = threading.Thread(target=keep_polling, daemon=True)
    t.start()
    a = admin(ctx)
    ctx.step("list groups")
    C.wait_until(lambda: ctx.group in {_gid(g) for g in a.list_groups()}, 10, "group in ListGroups")
    ctx.step("describe group")
    d = a.describe_groups([ctx.group])
    d = d[ctx.group] if isinstance(d, dict) else d[0]
    state = d["group_state"] if isinstance(d, dict) else d.state
    members = d["members"] if isinstance(d, dict) else d.members
    check(str(state).lower() == "stable", f"state {state}")
    check(len(members) == 1, f"{len(members)} members")
    stop.set()
    t.join(5)
    c.close()


def _gid(g):
    if isinstance(g, dict):
        return g.get("group_id") or g.get("group")
    return g[0] if isinstance(g, tuple) else getattr(g, "group_id", g)


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
