"""aiokafka driver (asyncio)."""

from __future__ import annotations

import asyncio
import functools
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from compat import scenarios as S
from compat.drivers import common as C
from compat.drivers.common import check

C.LogDiag.install("aiokafka", debug=("aiokafka.conn",))

COMMON = {"request_timeout_ms": 10000}
SECURITY = C.security()
if SECURITY is not None:
    # aiokafka takes TLS as an ssl.SSLContext; its helper builds one trusting the CA.
    COMMON.update(security_protocol=SECURITY["protocol"],
                  ssl_context=create_ssl_context(cafile=SECURITY["ca"]),
                  sasl_mechanism=SECURITY["mechanism"],
                  sasl_plain_username=SECURITY["username"],
                  sasl_plain_password=SECURITY["password"])


def sync(fn):
    @functools.wraps(fn)
    def run(ctx):
        asyncio.run(fn(ctx))
    return run


async def admin(ctx):
    a = AIOKafkaAdminClient(bootstrap_servers=ctx.bootstrap, **COMMON)
    await a.start()
    return a


async def replication_factor(a):
    """aiokafka's NewTopic refuses -1 (the broker's default.replication.factor, KIP-464), so
    ask as its users do: 3 replicas, or one per broker in a smaller cluster."""
    return min(3, len((await a.describe_cluster())["brokers"]))


async def ensure_topic(ctx, topic, partitions=S.PARTITIONS, config=None):
    a = await admin(ctx)
    try:
        rf = await replication_factor(a)
        r = await a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=rf,
                                            topic_configs=config or {})], timeout_ms=10000)
        raise_topic_errors(r, ok=(TopicAlreadyExistsError.errno,))
    except TopicAlreadyExistsError:
        pass
    finally:
        await a.close()
    await wait_partitions(ctx, topic, partitions)


def raise_topic_errors(resp, ok=()):
    for t in resp.to_object().get("topic_errors", resp.to_object().get("topics", [])):
        code = t.get("error_code", 0)
        if code and code not in ok:
            raise C.Fail(f"{t.get('topic', t.get('name'))}: error {code} "
                         f"{t.get('error_message') or ''}".strip())


async def wait_partitions(ctx, topic, partitions, timeout=10.0):
    c = AIOKafkaConsumer(bootstrap_servers=ctx.bootstrap, **COMMON)
    await c.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            await c._client.force_metadata_update()
            ps = c.partitions_for_topic(topic)
            if ps is not None and len(ps) == partitions:
                return
            if time.monotonic() > deadline:
                raise C.Fail(f"topic {topic} with {partitions} partitions in metadata: "
                             f"saw {None if ps is None else len(ps)}")
            await asyncio.sleep(0.2)
    finally:
        await c.stop()


async def produce(ctx, topic, records, **conf):
    p = AIOKafkaProducer(bootstrap_servers=ctx.bootstrap, **COMMON, **{"linger_ms": 5, **conf})
    await p.start()
    try:
        futs = [await p.send(topic, **r) for r in records]
        mds = [await asyncio.wait_for(f, 15) for f in futs]
    finally:
        await p.stop()
    return [(md.partition, md.offset) for md in mds]


def consumer(ctx, *topics, **conf):
    return AIOKafkaConsumer(*topics, bootstrap_servers=ctx.bootstrap, **COMMON,
                            **{"enable_auto_commit": False, "auto_offset_reset": "earliest",
                               **conf})


async def poll_n(c, n, timeout, extra_wait=0.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        for recs in (await c.getmany(timeout_ms=200)).values():
            out.extend(recs)
    end = time.monotonic() + extra_wait
    while time.monotonic() < end:
        for recs in (await c.getmany(timeout_ms=100)).values():
            out.extend(recs)
    check(len(out) >= n, f"read {len(out)} of {n} records in {timeout}s")
    return out


async def read_assigned(ctx, topic, n, partitions=S.PARTITIONS, timeout=15, extra_wait=0.3,
                        **conf):
    c = consumer(ctx, **conf)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        return await poll_n(c, n, timeout, extra_wait)
    finally:
        await c.stop()


@sync
async def s_metadata(ctx):
    ctx.step("list topics")
    a = await admin(ctx)
    await a.list_topics()
    check(len((await a.describe_cluster()).get("brokers", [])) >= 1, "no broker")
    await a.close()


@sync
async def s_admin_topics(ctx):
    ctx.step("create topic")
    a = await admin(ctx)
    rf = await replication_factor(a)
    r = await a.create_topics([NewTopic(ctx.topic, num_partitions=3, replication_factor=rf)],
                              timeout_ms=10000)
    raise_topic_errors(r)
    ctx.step("topic in metadata")
    await wait_partitions(ctx, ctx.topic, 3)
    ctx.step("delete topic")
    r = await a.delete_topics([ctx.topic], timeout_ms=10000)
    raise_topic_errors(r)
    ctx.step("topic gone from metadata")
    deadline = time.monotonic() + 10
    while ctx.topic in await a.list_topics():
        check(time.monotonic() < deadline, "deleted topic still listed after 10s")
        await asyncio.sleep(0.2)
    await a.close()


@sync
async def s_produce_keyed(ctx):
    ctx.step("create topic")
    await ensure_topic(ctx, ctx.topic)
    ctx.step("produce")
    recs = [{"key": f"k{i % S.KEYS}".encode(), "value": f"v{i}".encode(),
             "headers": [("h1", f"x{i}".encode()), ("seq", str(i).encode())]}
            for i in range(S.N_KEYED)]
    reports = await produce(ctx, ctx.topic, recs)
    parts = {}
    for r, (p, _) in zip(recs, reports, strict=True):
        parts.setdefault(r["key"], set()).add(p)
    check(all(len(v) == 1 for v in parts.values()), f"a key went to several partitions: {parts}")
    ctx.step("read back")
    for m in await read_assigned(ctx, ctx.topic, S.N_KEYED):
        i = int(m.value.decode()[1:])
        check(m.key == f"k{i % S.KEYS}".encode(), f"record {i}: key {m.key!r}")
        hdrs = [(k, bytes(v)) for k, v in m.headers]
        check(hdrs == [("h1", f"x{i}".encode()), ("seq", str(i).encode())],
              f"record {i}: headers {hdrs}")
        check(m.partition in parts[m.key], f"record {i}: partition {m.partition}")


@sync
async def s_consume_earliest(ctx):
    ctx.step("create topic")
    await ensure_topic(ctx, ctx.topic)
    ctx.step("produce")
    await produce(ctx, ctx.topic, [{"value": f"m{i}".encode(), "partition": i % 3}
                                   for i in range(S.N_SPREAD)])
    ctx.step("group consume from earliest", 40)
    c = consumer(ctx, ctx.topic, group_id=ctx.group)
    await c.start()
    try:
        msgs = await poll_n(c, S.N_SPREAD, 30, extra_wait=0.5)
    finally:
        await c.stop()
    C.check_in_order([(m.partition, m.offset, m.value.decode()) for m in msgs], S.N_SPREAD)


@sync
async def s_commit_resume(ctx):
    ctx.step("create topic")
    await ensure_topic(ctx, ctx.topic)
    ctx.step("produce")
    await produce(ctx, ctx.topic, [{"value": f"c{i}".encode(), "partition": 0}
                                   for i in range(S.N_COMMIT)])
    ctx.step("consumer 1 reads", 40)
    c = consumer(ctx, ctx.topic, group_id=ctx.group)
    await c.start()
    msgs = await poll_n(c, S.COMMIT_AT, 30)
    check([m.value for m in msgs[:S.COMMIT_AT]] == [f"c{i}".encode() for i in range(S.COMMIT_AT)],
          "consumer 1 did not read c0..c9 first")
    ctx.step("commit")
    tp = TopicPartition(ctx.topic, 0)
    await c.commit({tp: S.COMMIT_AT})
    ctx.step("close consumer 1")
    await c.stop()
    ctx.step("consumer 2 resumes", 40)
    c = consumer(ctx, ctx.topic, group_id=ctx.group)
    await c.start()
    try:
        m = (await poll_n(c, 1, 30))[0]
        check(m.offset == S.COMMIT_AT and m.value == f"c{S.COMMIT_AT}".encode(),
              f"resumed at offset {m.offset} ({m.value!r}), expected {S.COMMIT_AT}")
        ctx.step("committed()")
        got = await c.committed(tp)
        check(got == S.COMMIT_AT, f"committed() = {got}")
    finally:
        await c.stop()


@sync
async def s_group_split(ctx):
    ctx.step("create topic")
    await ensure_topic(ctx, ctx.topic)
    ctx.step("two members join", 45)
    cs = [consumer(ctx, ctx.topic, group_id=ctx.group) for _ in range(2)]
    got: list[list] = [[], []]
    stop = asyncio.Event()

    async def loop(i):
        while not stop.is_set():
            for recs in (await cs[i].getmany(timeout_ms=200)).values():
                got[i].extend((m.partition, m.offset, m.value.decode()) for m in recs)

    await asyncio.gather(*(c.start() for c in cs))
    tasks = [asyncio.create_task(loop(i)) for i in range(2)]
    try:
        deadline = time.monotonic() + 40
        while True:
            a = [{tp.partition for tp in c.assignment()} for c in cs]
            if a[0] and a[1] and not (a[0] & a[1]) and a[0] | a[1] == {0, 1, 2}:
                break
            for t in tasks:
                if t.done():
                    t.result()
            check(time.monotonic() < deadline,
                  f"disjoint assignments covering partitions 0-2: have {a}")
            await asyncio.sleep(0.2)
        ctx.step("produce")
        await produce(ctx, ctx.topic, [{"value": f"m{i}".encode(), "partition": i % 3}
                                       for i in range(S.N_SPREAD)])
        ctx.step("both members read", 30)
        deadline = time.monotonic() + 25
        while len(got[0]) + len(got[1]) < S.N_SPREAD:
            check(time.monotonic() < deadline,
                  f"read {len(got[0]) + len(got[1])} of {S.N_SPREAD} records")
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.stop() for c in cs), return_exceptions=True)
    for i in range(2):
        ps = {p for p, _, _ in got[i]}
        check(ps <= a[i], f"member {i} read partitions {ps}, assigned {a[i]}")
    C.check_in_order(got[0] + got[1], S.N_SPREAD)


def compression(codec):
    @sync
    async def run(ctx):
        ctx.step("create topic")
        await ensure_topic(ctx, ctx.topic)
        ctx.step(f"produce {codec}")
        await produce(ctx, ctx.topic, [{"value": C.payload(codec, i).encode(), "partition": i % 3}
                                       for i in range(S.N_COMPRESSED)],
                      compression_type=codec, linger_ms=50)
        ctx.step("read back")
        msgs = await read_assigned(ctx, ctx.topic, S.N_COMPRESSED)
        vals = sorted(m.value.decode() for m in msgs)
        check(vals == sorted(C.payload(codec, i) for i in range(S.N_COMPRESSED)),
              "values read back differ")
    return run


@sync
async def s_list_offsets(ctx):
    ctx.step("create topic")
    await ensure_topic(ctx, ctx.topic)
    t0 = (int(time.time() * 1000) // 1000) * 1000 - 60_000
    ctx.step("produce with timestamps")
    # acks=all: "latest" is the high watermark, past the records once they are
    # acknowledged by the whole ISR (acks=1 answers before followers copy them).
    await produce(ctx, ctx.topic, [{"value": f"o{i}".encode(), "partition": 0,
                                    "timestamp_ms": t0 + i * 1000} for i in range(S.N_OFFSETS)],
                  acks="all")
    c = consumer(ctx)
    await c.start()
    tp = TopicPartition(ctx.topic, 0)
    try:
        ctx.step("list offsets earliest")
        got = (await c.beginning_offsets([tp]))[tp]
        check(got == 0, f"earliest: offset {got}, expected 0")
        ctx.step("list offsets latest")
        got = (await c.end_offsets([tp]))[tp]
        check(got == S.N_OFFSETS, f"latest: offset {got}, expected {S.N_OFFSETS}")
        for ts, want in ((t0 + 5000, 5), (t0 + 5500, 6)):
            ctx.step(f"list offsets timestamp T0+{ts - t0}")
            r = (await c.offsets_for_times({tp: ts}))[tp]
            got = None if r is None else r.offset
            check(got == want, f"timestamp T0+{ts - t0}: offset {got}, expected {want}")
    finally:
        await c.stop()


@sync
async def s_idempotent(ctx):
    ctx.step("create topic")
    await ensure_topic(ctx, ctx.topic)
    ctx.step("produce idempotent")
    reports = await produce(ctx, ctx.topic, [{"value": f"i{i}".encode(), "partition": 0}
                                             for i in range(S.N_IDEMPOTENT)],
                            enable_idempotence=True, acks="all")
    offs = sorted(o for _, o in reports)
    check(offs == list(range(S.N_IDEMPOTENT)), f"offsets {offs[:5]}..{offs[-3:]}")
    ctx.step("read back")
    msgs = await read_assigned(ctx, ctx.topic, S.N_IDEMPOTENT, extra_wait=1.0)
    check([m.value.decode() for m in msgs if m.partition == 0]
          == [f"i{i}" for i in range(S.N_IDEMPOTENT)], "records differ from those produced")


@sync
async def s_transactions(ctx):
    ctx.step("create topic")
    await ensure_topic(ctx, ctx.topic)
    ctx.step("init_transactions")
    p = AIOKafkaProducer(bootstrap_servers=ctx.bootstrap, transactional_id=ctx.name("txn"),
                         linger_ms=5, **COMMON)
    await p.start()
    try:
        for name, commit in (("a", True), ("x", False), ("b", True)):
            ctx.step(f"transaction {name} ({'commit' if commit else 'abort'})")
            await p.begin_transaction()
            futs = [await p.send(ctx.topic, value=f"{name}{i}".encode(), partition=0)
                    for i in range(S.TXN_BATCH)]
            for f in futs:
                await asyncio.wait_for(f, 10)
            if commit:
                await p.commit_transaction()
            else:
                await p.abort_transaction()
    finally:
        await p.stop()
    ctx.step("read_committed consumer")
    want = [f"a{i}" for i in range(S.TXN_BATCH)] + [f"b{i}" for i in range(S.TXN_BATCH)]
    msgs = await read_assigned(ctx, ctx.topic, len(want), partitions=1, extra_wait=1.0,
                               isolation_level="read_committed")
    got = [m.value.decode() for m in msgs]
    check(got == want, f"read_committed saw {got}")


def _entries(responses, name):
    for r in responses:
        for res in r.to_object()["resources"]:
            if res["resource_name"] == name:
                if res["error_code"]:
                    raise C.Fail(f"error {res['error_code']} {res.get('error_message') or ''}")
                return {e["config_names"]: e["config_value"] for e in res["config_entries"]}
    raise C.Fail(f"no result for {name}")


@sync
async def s_describe_configs(ctx):
    ctx.step("create topic with retention.ms")
    await ensure_topic(ctx, ctx.topic, config={"retention.ms": S.RETENTION_MS})
    a = await admin(ctx)
    ctx.step("describe topic config")
    entries = _entries(await a.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, ctx.topic)]), ctx.topic)
    check("retention.ms" in entries, f"retention.ms missing from {len(entries)} entries")
    check(entries["retention.ms"] == S.RETENTION_MS, f"retention.ms = {entries['retention.ms']}")
    ctx.step("describe broker config")
    bid = str((await a.describe_cluster())["brokers"][0]["node_id"])
    entries = _entries(await a.describe_configs(
        [ConfigResource(ConfigResourceType.BROKER, bid)]), bid)
    check(len(entries) >= 1, "broker config is empty")
    await a.close()


@sync
async def s_groups(ctx):
    ctx.step("create topic")
    await ensure_topic(ctx, ctx.topic)
    await produce(ctx, ctx.topic, [{"value": b"g0", "partition": 0}])
    ctx.step("member joins and reads", 40)
    c = consumer(ctx, ctx.topic, group_id=ctx.group)
    await c.start()
    stop = asyncio.Event()
    try:
        await poll_n(c, 1, 30)
        await c.commit()

        async def keep_polling():
            while not stop.is_set():
                await c.getmany(timeout_ms=100)
        t = asyncio.create_task(keep_polling())
        a = await admin(ctx)
        ctx.step("list groups")
        deadline = time.monotonic() + 10
        while ctx.group not in {g[0] for g in await a.list_consumer_groups()}:
            check(time.monotonic() < deadline, "group not in ListGroups after 10s")
            await asyncio.sleep(0.2)
        ctx.step("describe group")
        groups = [g for r in await a.describe_consumer_groups([ctx.group])
                  for g in r.to_object()["groups"]]
        d = next(g for g in groups if g["group"] == ctx.group)
        check(not d["error_code"], f"error {d['error_code']}")
        check(d["state"] == "Stable", f"state {d['state']}")
        check(len(d["members"]) == 1, f"{len(d['members'])} members")
        await a.close()
        stop.set()
        await t
    finally:
        stop.set()
        await c.stop()


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
