"""kcat driver: the Debian kcat binary (its own, older librdkafka), one process per step.

kcat has no admin API: the topics it uses are created by the broker on first use
(auto.create.topics.enable, num.partitions=3), and the admin rows are n.a.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

from compat import scenarios as S
from compat.drivers import common as C
from compat.drivers.common import check

SECURITY = C.security()
# The SASL_SSL run's settings as librdkafka properties on every kcat command line.
SECURE: list[str] = [] if SECURITY is None else [
    arg for k, v in (("security.protocol", SECURITY["protocol"]),
                     ("ssl.ca.location", SECURITY["ca"]),
                     ("sasl.mechanism", SECURITY["mechanism"]),
                     ("sasl.username", SECURITY["username"]),
                     ("sasl.password", SECURITY["password"]))
    for arg in ("-X", f"{k}={v}")]


def kcat(ctx, args, stdin: str | None = None, timeout: float = 15.0, ok_rc=(0,)):
    cmd = ["kcat", "-b", ctx.bootstrap, "-m", "10", "-X", "broker.address.family=v4",
           *SECURE] + args
    try:
        p = subprocess.run(cmd, input=(stdin or "").encode(), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        err = (e.stderr or b"").decode(errors="replace").strip().splitlines()
        C.note_client_error(err[-1] if err else "")
        raise C.Fail(f"kcat {' '.join(args[:2])} did not finish in {timeout:g}s") from None
    err = p.stderr.decode(errors="replace")
    lines = err.splitlines()
    errors = [ln for ln in lines if "ERROR" in ln and "NO_ERROR" not in ln]
    # With -d eos: why the transaction coordinator could not be had (the final ERROR
    # line only says "timed out").
    txn = [ln.split("]: ", 1)[-1] for ln in lines
           if "TXN" in ln and "fail" in ln.lower() and "NO_ERROR" not in ln]
    for ln in errors[-1:] + txn[-1:]:
        C.note_client_error(ln.strip())
    if p.returncode not in ok_rc:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        raise C.Fail(f"kcat exited {p.returncode}: {lines[-1] if lines else ''}")
    return p.stdout.decode(errors="replace"), err


def produce_lines(ctx, topic, lines, args=(), timeout=15.0):
    kcat(ctx, ["-P", "-t", topic, *args], stdin="".join(f"{ln}\n" for ln in lines),
         timeout=timeout)


def wait_topic(ctx, topic, partitions=S.PARTITIONS):
    """Topics come from auto-creation: ask for metadata until the topic has its partitions."""
    def ready():
        out, _ = kcat(ctx, ["-L", "-J", "-t", topic])
        for t in json.loads(out).get("topics", []):
            if t.get("topic") == topic and not t.get("error") and \
                    len(t.get("partitions", [])) == partitions:
                return True
        return False
    C.wait_until(ready, 10, f"auto-created topic {topic} with {partitions} partitions")


def consume_all(ctx, topic, n, extra=(), timeout=15.0):
    """Assign-style consumer from the beginning of every partition, JSON envelopes."""
    out, _ = kcat(ctx, ["-C", "-t", topic, "-o", "beginning", "-e", "-J", "-c", str(n), *extra],
                  timeout=timeout)
    recs = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    check(len(recs) >= n, f"read {len(recs)} of {n} records")
    return recs


def group_consume(ctx, topic, group, n, timeout=30.0, extra=()):
    out, _ = kcat(ctx, ["-G", group, "-X", "auto.offset.reset=earliest", "-J", "-c", str(n),
                        *extra, topic], timeout=timeout)
    recs = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    check(len(recs) >= n, f"read {len(recs)} of {n} records")
    return recs


def s_metadata(ctx):
    ctx.step("list topics")
    md = json.loads(kcat(ctx, ["-L", "-J"])[0])
    check(len(md.get("brokers", [])) >= 1, "metadata lists no broker")


def na(reason):
    def run(ctx):
        raise C.NotApplicable(reason)
    return run


def s_produce_keyed(ctx):
    ctx.step("auto-create topic")
    produce_lines(ctx, ctx.topic, [], args=["-p", "0"])  # metadata request creates it
    wait_topic(ctx, ctx.topic)
    ctx.step("produce")
    # kcat's -H applies to every record of one invocation: one invocation per record.
    for i in range(S.N_KEYED):
        produce_lines(ctx, ctx.topic, [f"k{i % S.KEYS}:v{i}"],
                      args=["-K", ":", "-H", f"h1=x{i}", "-H", f"seq={i}"])
    ctx.step("read back")
    recs = consume_all(ctx, ctx.topic, S.N_KEYED)
    parts: dict[str, set] = {}
    for r in recs:
        i = int(r["payload"][1:])
        check(r["key"] == f"k{i % S.KEYS}", f"record {i}: key {r['key']!r}")
        check(r.get("headers") == ["h1", f"x{i}", "seq", str(i)],
              f"record {i}: headers {r.get('headers')}")
        parts.setdefault(r["key"], set()).add(r["partition"])
    check(all(len(v) == 1 for v in parts.values()), f"a key went to several partitions: {parts}")


def spread(ctx, topic, n, fmt, args=()):
    for p in range(3):
        produce_lines(ctx, topic, [fmt.format(i) for i in range(n) if i % 3 == p],
                      args=["-p", str(p), *args])


def s_consume_earliest(ctx):
    ctx.step("produce (auto-creates topic)")
    spread(ctx, ctx.topic, S.N_SPREAD, "m{}")
    ctx.step("group consume from earliest", 40)
    recs = group_consume(ctx, ctx.topic, ctx.group, S.N_SPREAD)
    C.check_in_order([(r["partition"], r["offset"], r["payload"]) for r in recs], S.N_SPREAD)


def s_commit_resume(ctx):
    ctx.step("produce (auto-creates topic)")
    produce_lines(ctx, ctx.topic, [f"c{i}" for i in range(S.N_COMMIT)], args=["-p", "0"])
    ctx.step("consumer 1 reads 10, commits on exit", 40)
    recs = group_consume(ctx, ctx.topic, ctx.group, S.COMMIT_AT)
    check([r["payload"] for r in recs] == [f"c{i}" for i in range(S.COMMIT_AT)],
          f"consumer 1 read {[r['payload'] for r in recs]}")
    ctx.step("consumer 2 resumes", 40)
    r = group_consume(ctx, ctx.topic, ctx.group, 1)[0]
    check(r["offset"] == S.COMMIT_AT and r["payload"] == f"c{S.COMMIT_AT}",
          f"resumed at offset {r['offset']} ({r['payload']!r}), expected {S.COMMIT_AT}")


class Member:
    """A `kcat -G` process in the background; parses records and its rebalance lines."""

    def __init__(self, ctx, group, topic):
        cmd = ["kcat", "-b", ctx.bootstrap, "-X", "broker.address.family=v4", *SECURE, "-G", group,
               "-X", "auto.offset.reset=earliest", "-J", "-u", topic]
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL)
        self.records: list[dict] = []
        self.assigned: set[int] = set()
        self.lines: list[str] = []
        threading.Thread(target=self._out, daemon=True).start()
        threading.Thread(target=self._err, daemon=True).start()

    def _out(self):
        for ln in self.p.stdout:
            if ln.startswith(b"{"):
                self.records.append(json.loads(ln))

    def _err(self):
        # "% Group G rebalanced (memberid ...): assigned: T [0], T [2]" / "revoked: ..."
        for raw in self.p.stderr:
            ln = raw.decode(errors="replace").strip()
            self.lines.append(ln)
            if "assigned:" in ln:
                self.assigned = {int(x.split("]")[0]) for x in ln.split("assigned:", 1)[1]
                                 .split("[")[1:]}
            elif "revoked:" in ln:
                self.assigned = set()
            elif "ERROR" in ln:
                C.note_client_error(ln)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def s_group_split(ctx):
    ctx.step("auto-create topic")
    produce_lines(ctx, ctx.topic, [], args=["-p", "0"])
    wait_topic(ctx, ctx.topic)
    ctx.step("two members join", 45)
    ms = [Member(ctx, ctx.group, ctx.topic) for _ in range(2)]
    try:
        def split():
            for m in ms:
                check(m.p.poll() is None, f"kcat member exited: {m.lines[-1:]}")
            return C.disjoint_split(m.assigned for m in ms)
        assign = C.wait_until(split, 40, "disjoint assignments covering partitions 0-2")
        ctx.step("produce")
        spread(ctx, ctx.topic, S.N_SPREAD, "m{}")
        ctx.step("both members read", 30)
        C.wait_until(lambda: sum(len(m.records) for m in ms) >= S.N_SPREAD, 25,
                     "30 records read by the two members")
        time.sleep(0.5)
    finally:
        for m in ms:
            m.stop()
    C.check_split_reads(assign, [[(r["partition"], r["offset"], r["payload"]) for r in m.records]
                                 for m in ms])


def compression(codec):
    def run(ctx):
        ctx.step(f"produce {codec} (auto-creates topic)")
        for p in range(3):
            produce_lines(ctx, ctx.topic,
                          [C.payload(codec, i) for i in range(S.N_COMPRESSED) if i % 3 == p],
                          args=["-p", str(p), "-z", codec, "-X", "linger.ms=50"])
        ctx.step("read back")
        recs = consume_all(ctx, ctx.topic, S.N_COMPRESSED)
        vals = sorted(r["payload"] for r in recs)
        check(vals == sorted(C.payload(codec, i) for i in range(S.N_COMPRESSED)),
              "values read back differ")
    return run


def query(ctx, topic, ts):
    out, _ = kcat(ctx, ["-Q", "-t", f"{topic}:0:{ts}"])
    # "<topic> [0] offset 5"
    for ln in out.splitlines():
        if "offset" in ln:
            return int(ln.rsplit("offset", 1)[1].split()[0])
    raise C.Fail(f"no offset in kcat -Q output {out.strip()!r}")


def s_list_offsets(ctx):
    # kcat cannot set a record's timestamp: one process per record gives increasing
    # CreateTime timestamps, read back to pick the lookup times.
    ctx.step("produce (auto-creates topic)")
    for i in range(S.N_OFFSETS):
        produce_lines(ctx, ctx.topic, [f"o{i}"], args=["-p", "0"])
        time.sleep(0.005)
    recs = consume_all(ctx, ctx.topic, S.N_OFFSETS, extra=["-p", "0"])
    ts = [r["ts"] for r in sorted(recs, key=lambda r: r["offset"])]
    check(all(a < b for a, b in zip(ts, ts[1:], strict=False)),
          f"record timestamps not increasing: {ts}")
    for label, q, want in [("earliest", -2, 0), ("latest", -1, S.N_OFFSETS),
                           ("timestamp of record 5", ts[5], 5),
                           ("timestamp of record 5 + 1ms", ts[5] + 1, 6)]:
        ctx.step(f"list offsets {label}")
        got = query(ctx, ctx.topic, q)
        check(got == want, f"{label}: offset {got}, expected {want}")


def s_idempotent(ctx):
    ctx.step("produce idempotent (auto-creates topic)")
    produce_lines(ctx, ctx.topic, [f"i{i}" for i in range(S.N_IDEMPOTENT)],
                  args=["-p", "0", "-X", "enable.idempotence=true", "-X", "acks=all"])
    ctx.step("read back")
    recs = consume_all(ctx, ctx.topic, S.N_IDEMPOTENT, extra=["-p", "0"])
    check([r["offset"] for r in recs] == list(range(S.N_IDEMPOTENT)),
          f"offsets {[r['offset'] for r in recs][:5]}...")
    check([r["payload"] for r in recs] == [f"i{i}" for i in range(S.N_IDEMPOTENT)],
          "records differ from those produced")


def s_transactions(ctx):
    txn = ["-p", "0", "-X", f"transactional.id={ctx.name('txn')}", "-d", "eos"]
    ctx.step("auto-create topic")
    produce_lines(ctx, ctx.topic, [], args=["-p", "0"])
    wait_topic(ctx, ctx.topic)
    ctx.step("transaction a (commit: stdin closed)")
    produce_lines(ctx, ctx.topic, [f"a{i}" for i in range(S.TXN_BATCH)], args=txn)
    # kcat cannot abort on request: interrupted, 1.7.1 exits ("Program terminated while
    # producing message") and leaves the transaction open. The next kcat with the same
    # transactional.id then makes the coordinator abort it (InitProducerId fences the
    # old epoch), which is the abort this row checks.
    ctx.step("transaction x (left open by an interrupted kcat)")
    cmd = ["kcat", "-b", ctx.bootstrap, "-m", "10", "-X", "broker.address.family=v4", *SECURE, "-P",
           "-t", ctx.topic, *txn]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert p.stdin is not None
    # kcat 1.7 reads stdin in blocks and holds back the last lines of what it has: after
    # the records, padding lines (aborted with them) push them out to the broker.
    p.stdin.write(("".join(f"x{i}\n" for i in range(S.TXN_BATCH))
                   + "".join(f"x-pad{j}-{'p' * 2000}\n" for j in range(4))).encode())
    p.stdin.flush()
    try:
        # The aborted records must be in the log first, or the check is empty.
        C.wait_until(lambda: len(kcat(ctx, ["-C", "-t", ctx.topic, "-p", "0", "-o", "beginning",
                                            "-e", "-J", "-X",
                                            "isolation.level=read_uncommitted"])[0]
                                 .splitlines()) >= 2 * S.TXN_BATCH,
                     10, "open transaction's records visible to read_uncommitted")
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
    ctx.step("read_committed stops before the open transaction")
    out, _ = kcat(ctx, ["-C", "-t", ctx.topic, "-p", "0", "-o", "beginning", "-e", "-J", "-X",
                        "isolation.level=read_committed"])
    got = [json.loads(ln)["payload"] for ln in out.splitlines() if ln.startswith("{")]
    check(got == [f"a{i}" for i in range(S.TXN_BATCH)],
          f"read_committed saw {[g[:8] for g in got]} while transaction x is open")
    ctx.step("transaction b (commit; the same transactional.id aborts x)")
    produce_lines(ctx, ctx.topic, [f"b{i}" for i in range(S.TXN_BATCH)], args=txn)
    ctx.step("read_committed consumer")
    want = [f"a{i}" for i in range(S.TXN_BATCH)] + [f"b{i}" for i in range(S.TXN_BATCH)]
    out, _ = kcat(ctx, ["-C", "-t", ctx.topic, "-p", "0", "-o", "beginning", "-e", "-J", "-X",
                        "isolation.level=read_committed"])
    got = [json.loads(ln)["payload"] for ln in out.splitlines() if ln.startswith("{")]
    check(got == want, f"read_committed saw {[g[:8] for g in got]}")


SCENARIOS = {
    "metadata": s_metadata,
    "admin_topics": na("kcat has no admin API (no CreateTopics/DeleteTopics)"),
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
    "describe_configs": na("kcat has no admin API (no DescribeConfigs)"),
    "groups": na("kcat cannot list or describe groups"),
}

if __name__ == "__main__":
    os.environ.pop("KCAT_CONFIG", None)
    C.main(SCENARIOS)
