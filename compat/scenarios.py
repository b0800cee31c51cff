"""The rows of the compatibility matrix.

Every client driver (Python modules in compat/drivers/, compat/java/Compat.java,
compat/node/compat.js) implements these scenario ids with the same data and the
same checks, so a cell means the same thing in every column.  A driver is run once
per scenario:

    <driver> SCENARIO BOOTSTRAP PREFIX

It may print progress lines ``##step <name>`` and must end with one JSON line
``{"status": "pass"|"fail"|"na", "detail": "..."}``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    id: str
    title: str
    what: str


SCENARIOS: list[Scenario] = [
    Scenario("metadata", "connect, list topics",
             "bootstrap, Metadata (and ApiVersions): the topic listing call succeeds"),
    Scenario("admin_topics", "create + delete topic (admin API)",
             "CreateTopics with 3 partitions, the topic shows in metadata with 3 partitions, "
             "DeleteTopics, the topic disappears"),
    Scenario("produce_keyed", "keyed produce with headers",
             "30 records over 5 keys with 2 headers each; every key lands on one partition "
             "(delivery reports), records read back with the same key, value, headers"),
    Scenario("consume_earliest", "consume from earliest, in order per partition",
             "30 records spread over 3 partitions; a fresh group with auto.offset.reset=earliest "
             "reads all 30, each partition in produce order with increasing offsets"),
    Scenario("commit_resume", "commit, restart, resume from committed offset",
             "20 records in partition 0; consumer 1 reads 10 and commits offset 10 and closes; "
             "consumer 2 in the same group starts at offset 10"),
    Scenario("group_split", "two consumers in a group split partitions",
             "two members of one group subscribe to a 3-partition topic; their assignments are "
             "disjoint and cover all partitions; 30 records are read once in total"),
    Scenario("compression_gzip", "compression: gzip", "20 records produced with gzip, read back"),
    Scenario("compression_snappy", "compression: snappy", "20 records produced with snappy, read back"),
    Scenario("compression_lz4", "compression: lz4", "20 records produced with lz4, read back"),
    Scenario("compression_zstd", "compression: zstd", "20 records produced with zstd, read back"),
    Scenario("list_offsets", "list offsets (earliest, latest, by timestamp)",
             "10 records with timestamps T0+i*1000 in partition 0: earliest=0, latest=10, "
             "offset for T0+5000 is 5, for T0+5500 is 6"),
    Scenario("idempotent", "idempotent producer",
             "enable.idempotence with acks=all: 50 records get offsets 0..49 and read back "
             "exactly once, in order"),
    Scenario("transactions", "transactions: commit + abort, read_committed",
             "txn 1 (5 records) committed, txn 2 (5 records) aborted, txn 3 (5 records) committed; "
             "a read_committed consumer sees exactly the 10 committed records, in order"),
    Scenario("describe_configs", "describe configs (topic, broker)",
             "topic created with retention.ms=123456789: DescribeConfigs returns it; the broker's "
             "config describes with at least one entry"),
    Scenario("groups", "list + describe groups",
             "while one member of a group is consuming: ListGroups contains the group, "
             "DescribeGroups shows it Stable with that one member"),
]

SCENARIO_IDS = [s.id for s in SCENARIOS]

# The only (client, scenario) cells that may say n.a.: the client itself has no API for
# the row (compat/README.md, "n.a. cells"). Any other n.a. is recorded as a failure.
NOT_APPLICABLE: frozenset[tuple[str, str]] = frozenset({
    ("kcat", "admin_topics"),
    ("kcat", "describe_configs"),
    ("kcat", "groups"),
    ("confluent-js", "describe_configs"),
})
# Cells that may say n.a. only in the SASL_SSL run (`--security`): the client cannot
# speak SASL_SSL with SCRAM-SHA-512 at all. Every client of the matrix can, so none.
NOT_APPLICABLE_SECURITY: frozenset[tuple[str, str]] = frozenset()


def not_applicable(security: bool = False) -> frozenset[tuple[str, str]]:
    """The cells that may say n.a. in a run (with `--security` or without)."""
    return NOT_APPLICABLE | NOT_APPLICABLE_SECURITY if security else NOT_APPLICABLE


BY_ID = {s.id: s for s in SCENARIOS}

# Data conventions shared by every driver.
N_KEYED = 30
KEYS = 5
N_SPREAD = 30
N_COMMIT = 20
COMMIT_AT = 10
N_COMPRESSED = 20
N_OFFSETS = 10
N_IDEMPOTENT = 50
TXN_BATCH = 5
RETENTION_MS = "123456789"
PARTITIONS = 3
