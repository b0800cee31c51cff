"""Client side of the cluster benchmark's phases, one process per phase:

    python -m bench.cluster_worker PHASE 'JSON-ARGS'

It prints `RESULT {json}` at the end (and, for `steady`, `READY` once acks flow).
Broker and ZooKeeper CPU is read from /proc/<pid>/stat here, at the edges of the timed
window, as bench/worker.py does for one broker.
"""

from __future__ import annotations

import json
import sys
import threading
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

from . import procstat
from .checks import count_error, partition_error
from .worker import PhaseError, _errors_sink

SEQ_BYTES = 8


def create_topic(bootstrap: str, topic: str, partitions: int, replication_factor: int, timeout: float) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor)],
                              request_timeout=timeout, operation_timeout=timeout)[topic]
    try:
        fut.result(timeout)
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise PhaseError(f"CreateTopics {topic}: {e.args[0]}") from None


def wait_replicated(client, topic: str, partitions: int, rf: int, timeout: float) -> int:
    """Until Metadata shows every partition with a leader and all `rf` replicas in the ISR."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            tm = client.list_topics(topic, timeout=5).topics.get(topic)
            if tm is not None and tm.error is None and len(tm.partitions) >= partitions:
                bad = [p.id for p in tm.partitions.values() if p.leader < 0 or len(p.isrs) < rf]
                if not bad:
                    return len(tm.partitions)
                last = f"partitions without a leader or a full ISR: {bad}"
            elif tm is not None:
                last = str(tm.error)
        except KafkaException as e:
            last = str(e)
        time.sleep(0.05)
    raise PhaseError(f"topic {topic}: not {partitions} partitions with {rf} in-sync replicas "
                     f"after {timeout:.0f} s (last: {last})")


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    return {name: procstat.cpu_seconds(pid) for name, pid in pids.items()}


def read_back(bootstrap: str, topic: str, partitions: int, n: int, timeout: float,
              first_seq: int = 0) -> tuple[bytearray, int, int]:
    """Read the whole topic; every payload starts with its 8-byte sequence number.
    Returns (seen[i] = 1 for each sequence number i in [first_seq, first_seq + n) read,
    duplicates, messages with other sequence numbers)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-readback-{time.time_ns()}",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "fetch.queue.backoff.ms": 10})
    seen = bytearray(n)
    distinct = dups = others = 0
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        eof: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(eof) < partitions:
            if time.monotonic() > deadline:
                raise PhaseError(f"read-back of {topic}: only {distinct} of {n} messages before the deadline")
            for m in c.consume(100_000, 0.1):
                e = m.error()
                if e is not None:
                    if e.code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                        continue
                    raise PhaseError(f"read-back of {topic}: {e}")
                eof.discard(m.partition())
                i = int.from_bytes(m.value()[:SEQ_BYTES], "big") - first_seq
                if 0 <= i < n:
                    if seen[i]:
                        dups += 1
                    else:
                        seen[i] = 1
                        distinct += 1
                else:
                    others += 1
    finally:
        c.close()
    return seen, dups, others


# --------------------------------------------------------------------------- produce

def phase_produce(a: dict) -> dict:
    """N messages of `size` B (each with its sequence number) to a fresh topic of P
    partitions and replication factor RF, acks=all; then every message is read back once."""
    bs, topic, n, size, parts, rf = (a["bootstrap"], a["topic"], a["messages"], a["size"],
                                     a["partitions"], a["replication_factor"])
    create_topic(bs, topic, parts, rf, a["timeout"] / 4)
    errors: list[str] = []
    failed = [0]

    def on_delivery(err, msg):
        if err is not None:
            failed[0] += 1
            if len(errors) < 5:
                errors.append(str(err))

    p = Producer({
        "bootstrap.servers": bs, "acks": a["acks"], "linger.ms": 5, "batch.size": 1_000_000,
        "compression.type": "none", "message.timeout.ms": int(a["timeout"] * 1000),
        "delivery.report.only.error": True, "on_delivery": on_delivery, "error_cb": _errors_sink(errors),
    })
    got = wait_replicated(p, topic, parts, rf, a["timeout"] / 4)
    wrong = partition_error(topic, parts, got)
    if wrong:
        raise PhaseError(wrong)
    pad = b"v" * (size - SEQ_BYTES)
    produce, poll = p.produce, p.poll
    deadline = time.monotonic() + a["timeout"] * 0.6
    pids = {f"broker {k}": v for k, v in a["broker_pids"].items()}
    if a.get("zk_pid"):
        pids["zookeeper"] = a["zk_pid"]
    cpu0 = cpu_of(pids)
    t0 = time.perf_counter()
    for i in range(n):
        value = i.to_bytes(SEQ_BYTES, "big") + pad
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
                    elif now - since > 20 or now > deadline:
                        raise PhaseError(f"no progress for {now - since:.0f} s after {i} messages "
                                         f"(producer queue full); {errors[:3]}") from None
    left = p.flush(max(1.0, deadline - time.monotonic()))
    t1 = time.perf_counter()
    cpu1 = cpu_of(pids)
    if left:
        raise PhaseError(f"{left} messages still unacknowledged at the deadline; {errors[:3]}")
    if failed[0]:
        raise PhaseError(f"{failed[0]} messages failed: {errors[:3]}")
    # Still fully replicated after the load (no follower dropped out of the ISR)?
    isr_note = None
    try:
        wait_replicated(p, topic, parts, rf, 10)
    except PhaseError as e:
        isr_note = str(e)
    seen, dups, others = read_back(bs, topic, parts, n, a["timeout"] * 0.3)
    distinct = sum(seen)
    data_errors = []
    lost = count_error(f"topic {topic}: read back", n, distinct)
    if lost:
        data_errors.append(lost)
    if dups or others:
        data_errors.append(f"topic {topic}: read back {dups} duplicates and {others} unknown messages")
    if isr_note:
        data_errors.append(f"after produce: {isr_note}")
    dt = t1 - t0
    cpu = {k: cpu1[k] - cpu0[k] for k in pids}
    brokers = sum(v for k, v in cpu.items() if k.startswith("broker"))
    return {
        "data_errors": data_errors, "messages": n, "seconds": dt, "msgs_per_s": n / dt,
        "mb_per_s": n * size / dt / 1e6,
        "cpu_s_per_m": brokers / n * 1e6,
        "cpu_s_per_m_each": {k: v / n * 1e6 for k, v in cpu.items() if k.startswith("broker")},
        "zk_cpu_s_per_m": cpu["zookeeper"] / n * 1e6 if "zookeeper" in cpu else None,
        "read_back": distinct, "partitions": got,
    }


# --------------------------------------------------------------------------- steady

def phase_steady(a: dict) -> dict:
    """One acks=all idempotent message every `interval_ms` to partition 0 until the harness
    writes a line to stdin; prints READY once acks flow. Records each message's produce
    and ack times (time.monotonic, one clock for the whole host), then reads the
    partition back: every acknowledged message must be there exactly once."""
    bs, topic, size = a["bootstrap"], a["topic"], a["size"]
    create_topic(bs, topic, 1, a["replication_factor"], 30)
    errors: list[str] = []
    sent: list[float] = []
    acked: list[float | None] = []
    failed: list[int] = []
    now = time.monotonic

    def on_delivery(err, msg):
        i = int.from_bytes(msg.value()[:SEQ_BYTES], "big")
        if err is None:
            acked[i] = now()
        else:
            failed.append(i)
            if len(errors) < 5:
                errors.append(str(err))

    p = Producer({
        "bootstrap.servers": bs, "acks": "all", "enable.idempotence": True, "linger.ms": 0,
        "message.timeout.ms": 300_000, "on_delivery": on_delivery, "error_cb": _errors_sink(errors),
        **a.get("producer_config", {}),
    })
    wait_replicated(p, topic, 1, a["replication_factor"], 30)
    stop = threading.Event()

    def wait_stdin():
        sys.stdin.readline()
        stop.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    pad = b"s" * (size - SEQ_BYTES)
    interval = a["interval_ms"] / 1000
    produce, poll = p.produce, p.poll
    deadline = now() + a["timeout"] * 0.7
    ready = False
    t0 = now()
    i = 0
    while not stop.is_set() and now() < deadline:
        due = t0 + i * interval
        while now() < due:
            poll(0)
            time.sleep(0.0002)
        sent.append(now())
        acked.append(None)
        produce(topic, i.to_bytes(SEQ_BYTES, "big") + pad, partition=0)
        i += 1
        poll(0)
        if not ready and any(x is not None for x in acked[-50:]) and now() - t0 > a["warmup_s"]:
            ready = True
            sys.stdout.write("READY\n")
            sys.stdout.flush()
    left = p.flush(a["flush_s"])
    n = len(sent)
    acked_seqs = [k for k in range(n) if acked[k] is not None]
    seen, dups, others = read_back(bs, topic, 1, n, 60)
    distinct = sum(seen)
    lost = [k for k in acked_seqs if not seen[k]]
    data_errors = []
    if left:
        data_errors.append(f"{left} messages unacknowledged {a['flush_s']:.0f} s after the producer stopped")
    if failed:
        data_errors.append(f"{len(failed)} messages failed: {errors[:3]}")
    # Every acknowledged message is in the log, once (messages that failed may or may not be).
    if lost:
        data_errors.append(f"{len(lost)} of {len(acked_seqs)} acknowledged messages not read back "
                           f"(sequence numbers {lost[:5]}...)")
    if dups:
        data_errors.append(f"read back {dups} duplicates (idempotent producer)")
    if others:
        data_errors.append(f"read back {others} messages with unknown sequence numbers")
    if not ready:
        raise PhaseError(f"no acknowledgement within the warm-up; errors: {errors[:3]}")
    return {"data_errors": data_errors, "sent": sent, "acked": acked, "messages": n,
            "read_back": distinct, "errors_seen": errors[:5]}


PHASES = {"produce": phase_produce, "steady": phase_steady}


def main() -> None:
    phase, args = sys.argv[1], json.loads(sys.argv[2])
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
