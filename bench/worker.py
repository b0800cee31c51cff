"""Client side of each phase, run by the harness as its own process:

    python -m bench.worker PHASE 'JSON-ARGS'

It prints one line `RESULT {json}` at the end. The broker's CPU is read from
/proc/<broker pid> here, at the exact edges of the timed window, so that client
start-up (imports, bootstrap, metadata) is not charged to the broker.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import queue
import statistics
import struct
import sys
import time
import traceback

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from . import procstat, wire
from .checks import count_error, latency_figures, partition_error


class PhaseError(Exception):
    pass


# Settings every client of the phase gets besides its own (`client_config` in the phase's
# arguments): the SASL_SSL phases' security.protocol, CA, mechanism and user.
CLIENT_CONFIG: dict = {}


def client_conf(conf: dict) -> dict:
    return {**conf, **CLIENT_CONFIG}


def _errors_sink(bucket: list):
    def cb(err):
        if len(bucket) < 20:
            bucket.append(str(err))
    return cb


def create_topics(bootstrap: str, topics: list[tuple[str, int]], timeout: float) -> dict:
    """CreateTopics via AdminClient. Returns {'created': n, 'errors': [...]}."""
    admin = AdminClient(client_conf({"bootstrap.servers": bootstrap}))
    futs = admin.create_topics([NewTopic(t, num_partitions=p, replication_factor=1) for t, p in topics],
                               request_timeout=timeout, operation_timeout=timeout)
    created, errors = 0, []
    for t, f in futs.items():
        try:
            f.result(timeout)
            created += 1
        except KafkaException as e:
            err = e.args[0]
            if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                created += 1
            else:
                errors.append(f"{t}: {err}")
        except Exception as e:  # noqa: BLE001
            errors.append(f"{t}: {e!r}")
    return {"created": created, "errors": errors}


def wait_partitions(client, topic: str, want: int, timeout: float) -> int:
    """Wait until metadata shows `topic` with leaders for its partitions; return the count."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            md = client.list_topics(topic, timeout=min(5.0, max(0.1, deadline - time.monotonic())))
            tm = md.topics.get(topic)
            if tm is not None and tm.error is None and tm.partitions:
                n = len(tm.partitions)
                if n >= want and all(p.leader >= 0 for p in tm.partitions.values()):
                    return n
                last = f"{n} partitions"
            elif tm is not None:
                last = str(tm.error)
        except KafkaException as e:
            last = str(e)
        time.sleep(0.05)
    raise PhaseError(f"topic {topic} not ready with {want} partitions after {timeout:.0f}s (last: {last})")


def topic_size(bootstrap: str, topic: str, partitions: int) -> int:
    """Messages in the topic: the sum of high - low watermarks over its partitions."""
    c = Consumer(client_conf({"bootstrap.servers": bootstrap, "group.id": f"bench-size-{time.time_ns()}"}))
    try:
        total = 0
        for part in range(partitions):
            low, high = c.get_watermark_offsets(TopicPartition(topic, part), timeout=10)
            total += high - low
        return total
    finally:
        c.close()


# --------------------------------------------------------------------------- produce

def phase_produce(a: dict) -> dict:
    bs, topic, n, size, parts = a["bootstrap"], a["topic"], a["messages"], a["size"], a["partitions"]
    notes = []
    cr = {"errors": ["not served by the broker"]}
    if a.get("create", True):
        cr = create_topics(bs, [(topic, parts)], a["timeout"] / 4)
        if cr["errors"]:
            notes.append("CreateTopics failed (" + "; ".join(cr["errors"])[:200] + "); relying on auto-create")
    in_topic = n
    errors: list[str] = []
    failed = [0]

    def on_delivery(err, msg):
        if err is not None:
            failed[0] += 1
            if len(errors) < 5:
                errors.append(str(err))

    p = Producer(client_conf({
        "bootstrap.servers": bs,
        "acks": a["acks"],
        "linger.ms": a.get("linger_ms", 5),
        "batch.size": 1_000_000,
        "compression.type": "none",
        "message.timeout.ms": int(a["timeout"] * 1000),
        "delivery.report.only.error": True,
        "on_delivery": on_delivery,
        "error_cb": _errors_sink(errors),
    }))
    if cr["errors"]:
        # Auto-create: a first message makes the broker create the topic.
        p.produce(topic, b"x" * size)
        if p.flush(a["timeout"] / 4) != 0:
            raise PhaseError("auto-create: first message not acknowledged; " + "; ".join(errors[:3]))
        n -= 1
    got = wait_partitions(p, topic, parts, a["timeout"] / 4)
    wrong = partition_error(topic, parts, got)
    if wrong:
        raise PhaseError(wrong)

    value = b"v" * size
    produce, poll = p.produce, p.poll
    deadline = time.monotonic() + a["timeout"] * 0.8
    cpu0 = procstat.cpu_seconds(a["broker_pid"])
    t0 = time.perf_counter()
    stall = min(20.0, a["timeout"] / 3)  # no acknowledgement for this long: the broker is stuck
    for i in range(n):
        try:
            produce(topic, value)
        except BufferError:
            queued, since = len(p), time.monotonic()
            while True:
                poll(0.0005)
                try:
                    produce(topic, value)
                    break
                except BufferError:
                    now = time.monotonic()
                    if len(p) < queued:
                        queued, since = len(p), now
                    elif now - since > stall or now > deadline:
                        raise PhaseError(f"no progress for {now - since:.0f} s after {i} messages "
                                         f"(producer queue full); {errors[:3]}") from None
    left = p.flush(max(1.0, deadline - time.monotonic()))
    t1 = time.perf_counter()
    cpu1 = procstat.cpu_seconds(a["broker_pid"])
    if left:
        raise PhaseError(f"{left} messages still unacknowledged at the deadline; {errors[:3]}")
    if failed[0]:
        raise PhaseError(f"{failed[0]} messages failed: {errors[:3]}")
    # Acknowledged is not stored: the topic must hold exactly what was produced.
    stored = topic_size(bs, topic, got)
    lost = count_error(f"topic {topic} after produce (sum of high - low watermarks)", in_topic, stored)
    dt = t1 - t0
    # A loss is an error of the run (checks.run_errors), but the figures stay: a peer
    # that loses acknowledged messages is still compared, with the loss beside it.
    return {
        "data_errors": [lost] if lost else [],
        "messages": n, "in_topic": in_topic, "seconds": dt,
        "msgs_per_s": n / dt, "mb_per_s": n * size / dt / 1e6,
        "broker_cpu_s": cpu1 - cpu0,
        "cpu_s_per_m": (cpu1 - cpu0) / n * 1e6,
        "partitions": got, "notes": notes,
    }


# --------------------------------------------------------------------------- consume

def diagnose_fetch(bootstrap: str, topic: str, seconds: float = 3.0) -> str:
    """After a consume failure: what does librdkafka's fetch debug log say? (a few distinct lines)"""
    import logging
    lines: list[str] = []

    class H(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if any(k in msg for k in ("FETCHERR", "Fetch failed", "error", "Error", "FAIL")):
                # drop the "%7|ts|FAC|rdkafka#consumer-1| [thrd:...]: " prefix
                short = msg.split("]: ", 1)[-1][:220]
                if short not in lines and len(lines) < 4:
                    lines.append(short)

    logger = logging.getLogger("bench.diag")
    logger.propagate = False
    logger.addHandler(H())
    logger.setLevel(logging.DEBUG)
    c = Consumer(client_conf({"bootstrap.servers": bootstrap, "group.id": f"bench-diag-{time.time_ns()}",
                  "debug": "fetch,protocol", "logger": logger, "enable.auto.commit": False}))
    try:
        md = c.list_topics(topic, timeout=5)
        parts = sorted(md.topics[topic].partitions) if topic in md.topics else [0]
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts[:1]])
        end = time.monotonic() + seconds
        got = 0
        while time.monotonic() < end and not got:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                got += 1
    except Exception as e:  # noqa: BLE001
        lines.append(f"diagnosis failed: {e!r}")
    finally:
        c.close()
    if not lines:
        return f"fetch debug log shows no error ({'a message arrived' if got else 'no message'})"
    return "librdkafka fetch log: " + " | ".join(lines)


def phase_consume(a: dict) -> dict:
    bs, topic, n, size = a["bootstrap"], a["topic"], a["messages"], a["size"]
    mode = a["mode"]  # "group" or "assign"
    errors: list[str] = []
    conf = {
        "bootstrap.servers": bs,
        "group.id": a["group"],
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        # librdkafka >= 2.4 backs off 1000 ms (default) when its fetch queue is full.
        "fetch.queue.backoff.ms": 10,
        "session.timeout.ms": a["session_timeout_ms"],
        "error_cb": _errors_sink(errors),
    }
    c = Consumer(client_conf(conf))
    try:
        if mode == "assign":
            md = c.list_topics(topic, timeout=10)
            tm = md.topics.get(topic)
            if tm is None or not tm.partitions:
                raise PhaseError(f"topic {topic} not in metadata")
            parts = sorted(tm.partitions)
        cpu_sub = procstat.cpu_seconds(a["broker_pid"])
        t_sub = time.perf_counter()
        assigned: list = []  # (perf_counter, broker cpu) when partitions were assigned

        def on_assign(consumer, partitions):
            if not assigned:
                assigned.append((time.perf_counter(), procstat.cpu_seconds(a["broker_pid"])))

        if mode == "group":
            c.subscribe([topic], on_assign=on_assign)
        else:
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            on_assign(c, None)
        count = 0
        bad = 0
        t_first = cpu_first = None
        join_deadline = time.monotonic() + a["join_timeout"]
        deadline = time.monotonic() + a["timeout"] * 0.8
        consume, poll = c.consume, c.poll
        while count < n:
            msgs = consume(100_000, 0)  # whatever is queued, no waiting for a full batch
            if not msgs:
                now = time.monotonic()
                if t_first is None and now > join_deadline:
                    c.close()
                    c = None
                    raise PhaseError(f"no message within {a['join_timeout']:.0f}s of {mode} "
                                     f"(errors: {errors[:3]}); {diagnose_fetch(bs, topic)}")
                if now > deadline:
                    raise PhaseError(f"only {count} of {n} messages before the deadline (errors: {errors[:3]})")
                m = poll(0.1)  # block for the next one
                if m is None:
                    continue
                msgs = [m]
            for m in msgs:
                e = m.error()
                if e is None:
                    count += 1
                else:
                    bad += 1
                    if len(errors) < 20:
                        errors.append(str(e))
            if t_first is None and count:
                t_first = time.perf_counter()
                cpu_first = procstat.cpu_seconds(a["broker_pid"])
        t_end = time.perf_counter()
        cpu_end = procstat.cpu_seconds(a["broker_pid"])
    finally:
        t_close = time.monotonic()
        if c is not None:
            c.close()
        close_s = time.monotonic() - t_close
    # The throughput window runs from the assignment (group joined, or assign() called) to the
    # last message: it includes the offset look-ups and the first fetch, not the group join.
    # The loop stops at n or more: more than the topic holds means duplicates.
    extra = count_error(f"consume ({mode})", n, count)
    if extra:
        raise PhaseError(extra)
    t_from, cpu_from = assigned[0] if assigned else (t_first, cpu_first)
    dt = t_end - t_from
    return {
        "messages": count, "seconds": dt,
        "msgs_per_s": count / dt, "mb_per_s": count * size / dt / 1e6,
        "broker_cpu_s": cpu_end - cpu_from,
        "cpu_s_per_m": (cpu_end - cpu_from) / count * 1e6,
        "first_msg_s": t_first - t_sub,
        "assign_to_first_msg_s": t_first - t_from,
        "join_cpu_s": cpu_from - cpu_sub,
        "close_s": close_s,
        "errors_seen": errors[:5],
    }


# --------------------------------------------------------------------------- latency

WARM, STEADY, END = 0, 1, 2
_HDR = struct.Struct("<qqb")


def _latency_consumer(a: dict, ready, results) -> None:
    try:
        c = Consumer(client_conf({
            "bootstrap.servers": a["bootstrap"],
            "group.id": a["group"],
            "enable.partition.eof": False,
            "enable.auto.commit": False,
            "fetch.queue.backoff.ms": 10,
            # fetch.wait.max.ms stays at its default (500): an append must wake the fetch.
        }))
        c.assign([TopicPartition(a["topic"], 0, OFFSET_BEGINNING)])
        lat_ns = []
        cpu_at_first = None
        now_ns = time.monotonic_ns
        unpack = _HDR.unpack_from
        deadline = time.monotonic() + a["timeout"] * 0.9
        done = False
        expected = None
        while not done and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            t = now_ns()
            if m.error():
                continue
            ts, seq, kind = unpack(m.value())
            if kind == STEADY:
                if cpu_at_first is None:
                    cpu_at_first = (time.process_time(), time.monotonic())
                lat_ns.append(t - ts)
            elif kind == WARM:
                if not ready.is_set():
                    ready.set()
            else:
                expected = seq
                done = True
        cpu_pct = None
        if cpu_at_first is not None:
            dt = time.monotonic() - cpu_at_first[1]
            cpu_pct = (time.process_time() - cpu_at_first[0]) / dt * 100 if dt > 0 else None
        c.close()
        results.put({"ok": True, "lat_ns": lat_ns, "done": done, "expected": expected, "cpu_pct": cpu_pct})
    except Exception as e:  # noqa: BLE001
        results.put({"ok": False, "error": f"consumer: {e!r}"})


def phase_latency(a: dict) -> dict:
    bs, topic, size = a["bootstrap"], a["topic"], a["size"]
    notes = []
    if a.get("create", True):
        cr = create_topics(bs, [(topic, 1)], 15)
        if cr["errors"]:
            notes.append("CreateTopics failed; relying on auto-create")
    else:
        wire_host, wire_port = bs.rsplit(":", 1)
        wire.auto_create(wire_host, int(wire_port), [topic])
    ctx = mp.get_context("fork")  # fork before any librdkafka instance exists in this process
    ready, results = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_latency_consumer, args=(a, ready, results), daemon=True)
    proc.start()
    errors: list[str] = []
    p = Producer(client_conf({
        "bootstrap.servers": bs,
        "linger.ms": 0,
        "acks": "all",
        "error_cb": _errors_sink(errors),
    }))
    pad = b"p" * (size - _HDR.size)
    produce, poll, now_ns = p.produce, p.poll, time.monotonic_ns
    try:
        # Warm-up: until the consumer has a message in hand, then a little more.
        warm = min(30.0, a["timeout"] / 3)
        deadline = time.monotonic() + warm
        seq = 0
        while not ready.is_set():
            if time.monotonic() > deadline or not proc.is_alive():
                raise PhaseError(f"consumer received no warm-up message within {warm:.0f} s "
                                 f"(errors: {errors[:3]}); {diagnose_fetch(bs, topic)}")
            produce(topic, _HDR.pack(now_ns(), seq, WARM) + pad, partition=0)
            poll(0.02)
            seq += 1
        t_end_warm = time.monotonic() + 0.5
        while time.monotonic() < t_end_warm:
            produce(topic, _HDR.pack(now_ns(), seq, WARM) + pad, partition=0)
            poll(0.01)
            seq += 1
        p.flush(10)

        rate, duration = a["rate"], a["duration"]
        n = int(rate * duration)
        interval = 1.0 / rate
        cpu0 = procstat.cpu_seconds(a["broker_pid"])
        own0 = time.process_time()
        t0 = time.perf_counter()
        sent = 0
        while sent < n:
            due = min(n, int((time.perf_counter() - t0) / interval) + 1)
            while sent < due:
                produce(topic, _HDR.pack(now_ns(), sent, STEADY) + pad, partition=0)
                sent += 1
            poll(0)
            sleep_for = t0 + sent * interval - time.perf_counter()
            if sleep_for > 0:
                time.sleep(sleep_for)
        t1 = time.perf_counter()
        cpu1 = procstat.cpu_seconds(a["broker_pid"])
        own1 = time.process_time()
        produce(topic, _HDR.pack(now_ns(), n, END) + pad, partition=0)
        left = p.flush(10)
        try:
            r = results.get(timeout=max(5.0, a["timeout"] * 0.9 - (time.perf_counter() - t0)))
        except queue.Empty:
            raise PhaseError("consumer gave no result (no END marker seen?)") from None
    finally:
        if proc.is_alive():
            proc.join(5)
        if proc.is_alive():
            proc.kill()
    if not r["ok"]:
        raise PhaseError(r["error"])
    # Lost or unacknowledged messages fail the phase: no percentiles over the survivors.
    figures, problems = latency_figures(r["lat_ns"], n, left, r["done"])
    if problems:
        raise PhaseError("; ".join(problems) + (f" (errors: {errors[:3]})" if errors else ""))
    wall = t1 - t0
    return {
        "sent": n, "received": len(r["lat_ns"]),
        "achieved_rate": n / wall,
        **figures,
        "broker_cpu_s": cpu1 - cpu0, "broker_cpu_pct": (cpu1 - cpu0) / wall * 100,
        "producer_cpu_pct": (own1 - own0) / wall * 100, "consumer_cpu_pct": r.get("cpu_pct"),
        "notes": notes,
    }


# --------------------------------------------------------------------------- scale

def phase_scale(a: dict) -> dict:
    bs = a["bootstrap"]
    host, port = bs.rsplit(":", 1)
    port = int(port)
    topics = [(f"scale-{i:04d}", a["partitions_per_topic"]) for i in range(a["topics"])]
    total = sum(p for _, p in topics)
    t0 = time.perf_counter()
    if a.get("create", True):
        cr = create_topics(bs, topics, a["timeout"] * 0.6)
        if cr["errors"]:
            raise PhaseError(f"CreateTopics: {cr['created']} of {len(topics)} created; first error: "
                             + cr["errors"][0])
    else:
        # The broker was started with num.partitions = partitions_per_topic.
        wire.auto_create(host, port, [t for t, _ in topics], timeout=a["timeout"] * 0.6)
    t_create_answer = time.perf_counter() - t0
    # Created means: Metadata for all topics shows every partition with a leader.
    deadline = time.monotonic() + a["timeout"] * 0.3
    seen = 0
    while True:
        _, md = wire.metadata_all(host, port, timeout=30)
        seen = sum(
            sum(1 for (_, perr, leader) in parts if perr == 0 and leader >= 0)
            for name, (err, parts) in md["topics"].items() if name.startswith("scale-")
        )
        if seen >= total:
            break
        if time.monotonic() > deadline:
            raise PhaseError(f"only {seen} of {total} partitions with a leader in Metadata")
        time.sleep(0.05)
    t_created = time.perf_counter() - t0
    times = []
    for _ in range(3):
        dt, md = wire.metadata_all(host, port, timeout=30)
        times.append(dt)
    return {
        "notes": [] if a.get("create", True) else ["topics auto-created by Metadata v4 (no CreateTopics)"],
        "partitions": total, "topics": len(topics),
        "create_s": t_created, "create_answer_s": t_create_answer,
        "metadata_s": statistics.median(times), "metadata_times": times,
    }


PHASES = {"produce": phase_produce, "consume": phase_consume, "latency": phase_latency, "scale": phase_scale}


def main() -> None:
    phase, args = sys.argv[1], json.loads(sys.argv[2])
    CLIENT_CONFIG.update(args.get("client_config") or {})
    try:
        res = PHASES[phase](args)
        res["ok"] = True
    except PhaseError as e:
        res = {"ok": False, "error": str(e)}
    except Exception as e:  # noqa: BLE001
        res = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
    sys.stdout.write("RESULT " + json.dumps(res) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
