"""`kwire cluster`, `kwire acl` and `kwire user` against real brokers, run as
subprocesses: a 3-broker cluster (real ZooKeeper) showing its controller and the
under-replicated and offline partitions after a broker is killed; ACLs on a broker with
the ACL authorizer; SCRAM credentials, and both through --command-config on a
SASL_PLAINTEXT listener, where the credential set with `kwire user` logs in and the
ACL granted with `kwire acl` decides what it sees."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cli_helpers import (
    cli,
    closed_bootstrap,
    failed,
    ok,
    parse_table,
    parse_tables,
    run_cli_concurrently,
    write_properties,
)
from cluster_harness import wait_until
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from conftest import free_port
from security_harness import PLAIN_USERS, plain_jaas
from test_cluster import start_cluster

AUTHORIZER = "kafka.security.authorizer.AclAuthorizer"
TIMEOUT = 30
ALL_ACLS = AclBindingFilter(
    ResourceType.ANY,
    None,
    ResourcePatternType.ANY,
    None,
    None,
    AclOperation.ANY,
    AclPermissionType.ANY,
)


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def summary(text: str) -> dict[str, str]:
    """The `Name: value` lines of `kwire cluster`."""
    return dict(
        line.split(": ", 1) for line in text.splitlines() if ": " in line and "  " not in line
    )


# ---- kwire cluster --------------------------------------------------------------


def test_cluster_one_broker(broker) -> None:
    out = ok(cli(broker.bootstrap, "cluster"))
    client = admin(broker.bootstrap)
    metadata = client.list_topics(timeout=TIMEOUT)
    assert summary(out) == {
        "Cluster ID": metadata.cluster_id,
        "Controller": f"0 (127.0.0.1:{broker.port})",
        "Under-replicated partitions": "0",
        "Offline partitions": "0",
    }
    assert parse_table(out) == [
        {"ID": "0", "HOST": "127.0.0.1", "PORT": str(broker.port), "RACK": "-"}
    ]
    ok(cli(broker.bootstrap, "topic create t --partitions 2"))
    assert ok(cli(broker.bootstrap, "cluster --under-replicated")) == ""
    failed(cli(broker.bootstrap, "cluster --no-such-option"), 2, "unrecognized arguments")


def partition_rows(bootstrap: str, topic: str) -> list[dict[str, str]]:
    return parse_table(ok(cli(bootstrap, "topic describe", topic)))


def test_three_brokers_controller_and_under_replicated_after_a_kill(kwire_cluster_factory) -> None:
    cluster = start_cluster(kwire_cluster_factory, broker_rack="rack-a")
    bootstrap = cluster.bootstrap
    ok(cli(bootstrap, "topic create replicated --partitions 3 --replication-factor 3"))
    ok(cli(bootstrap, "topic create single --partitions 3 --replication-factor 1"))

    def settled() -> str | None:
        out = ok(cli(bootstrap, "cluster"))
        return out if summary(out)["Under-replicated partitions"] == "0" else None

    out = wait_until(settled, 30, interval=0.2, message="every ISR full")
    metadata = admin(bootstrap).list_topics(timeout=TIMEOUT)
    controller = metadata.controller_id
    ports = {i: cluster.broker(i).port for i in cluster.ids}
    assert summary(out)["Cluster ID"] == metadata.cluster_id
    assert summary(out)["Controller"] == f"{controller} (127.0.0.1:{ports[controller]})"
    assert summary(out)["Offline partitions"] == "0"
    assert parse_table(out) == [
        {"ID": str(i), "HOST": "127.0.0.1", "PORT": str(ports[i]), "RACK": "rack-a"}
        for i in cluster.ids
    ]

    # A broker other than the controller, holding one partition of "single" (RF 1).
    singles = partition_rows(bootstrap, "single")
    victim = next(int(r["REPLICAS"]) for r in singles if int(r["REPLICAS"]) != controller)
    lost = sorted(int(r["PARTITION"]) for r in singles if r["REPLICAS"] == str(victim))
    cluster.kill(victim)
    live = ",".join(cluster.broker(i).bootstrap for i in cluster.ids if i != victim)

    def replicated_under() -> list[dict[str, str]] | None:
        out = ok(cli(live, "cluster --under-replicated --timeout 10"))
        rows = parse_table(out) if out else []
        return (
            rows
            if [r["PARTITION"] for r in rows if r["TOPIC"] == "replicated"] == ["0", "1", "2"]
            else None
        )

    # The ZooKeeper session (4 s) ends, the controller shrinks the ISRs.
    under = wait_until(replicated_under, 40, interval=0.5, message=f"ISRs without broker {victim}")
    for row in under:
        if row["TOPIC"] == "replicated":
            assert row["REPLICAS"].split(",") != row["ISR"].split(",")
            assert str(victim) in row["REPLICAS"].split(",") and str(victim) not in row[
                "ISR"
            ].split(","), row
            assert row["LEADER"] not in ("none", str(victim)), row

    out = ok(cli(live, "cluster --timeout 10"))
    assert summary(out)["Controller"] == f"{controller} (127.0.0.1:{ports[controller]})"
    brokers, partitions = parse_tables(out)
    assert [int(r["ID"]) for r in brokers] == [i for i in cluster.ids if i != victim]
    offline = sorted(int(r["PARTITION"]) for r in partitions if r["STATUS"] == "offline")
    assert offline == lost and all(
        r["TOPIC"] == "single" for r in partitions if r["STATUS"] == "offline"
    )
    assert all(r["LEADER"] == "none" for r in partitions if r["STATUS"] == "offline")
    assert summary(out)["Offline partitions"] == str(len(lost))
    assert int(summary(out)["Under-replicated partitions"]) >= 3
    # `kwire topic describe` shows the same: no leader where the dead broker was the only
    # replica, an ISR without it elsewhere.
    described = {r["PARTITION"]: r for r in partition_rows(live, "single")}
    assert sorted(int(p) for p, r in described.items() if r["LEADER"] == "none") == lost
    for row in partition_rows(live, "replicated"):
        assert str(victim) in row["REPLICAS"].split(",") and str(victim) not in row["ISR"].split(
            ","
        )


def test_unreachable_bootstrap_exits_3() -> None:
    bootstrap = closed_bootstrap()
    runs = [
        ["cluster"],
        ["cluster", "--under-replicated"],
        ["acl", "list"],
        ["acl", "create", "--allow-principal", "User:a", "--topic", "t"],
        ["user", "list"],
        ["user", "delete", "x", "--mechanism", "SCRAM-SHA-256"],
    ]
    for result in run_cli_concurrently(
        [[*args, "--bootstrap-server", bootstrap, "--timeout", "3"] for args in runs]
    ):
        failed(result, 3, f"cannot reach {bootstrap}", "Connection refused")


# ---- kwire acl ------------------------------------------------------------------


def acls(bootstrap: str, config: dict[str, str] | None = None) -> set[tuple[str, ...]]:
    client = AdminClient({"bootstrap.servers": bootstrap, **(config or {})})
    return {
        (
            b.principal,
            b.host,
            b.operation.name,
            b.permission_type.name,
            b.restype.name,
            b.name,
            b.resource_pattern_type.name,
        )
        for b in client.describe_acls(ALL_ACLS, request_timeout=TIMEOUT).result(TIMEOUT)
    }


def rows(out: str) -> set[tuple[str, ...]]:
    return {tuple(row.values()) for row in parse_table(out)}


def test_acl_create_list_delete(broker_factory) -> None:
    broker = broker_factory({"authorizer.class.name": AUTHORIZER, "super.users": "User:ANONYMOUS"})
    b = broker.bootstrap
    out = ok(
        cli(
            b,
            "acl create --allow-principal User:alice --allow-principal User:bob --topic orders --operation Read --operation describe",
        )
    )
    created = {
        (p, "*", op, "ALLOW", "TOPIC", "orders", "LITERAL")
        for p in ("User:alice", "User:bob")
        for op in ("READ", "DESCRIBE")
    }
    assert rows(out) == created
    out = ok(
        cli(
            b,
            "acl create --deny-principal User:mallory --deny-host 10.0.0.1 --topic pay --group pay --resource-pattern-type prefixed",
        )
    )
    denied = {
        ("User:mallory", "10.0.0.1", "ALL", "DENY", t, "pay", "PREFIXED")
        for t in ("TOPIC", "GROUP")
    }
    assert rows(out) == denied
    # A repeated option makes one ACL, not an error.
    ok(
        cli(
            b,
            "acl create --allow-principal User:alice --allow-principal User:alice --cluster "
            "--operation DescribeConfigs --operation describe-configs",
        )
    )
    ok(
        cli(
            b,
            "acl create --allow-principal User:alice --transactional-id tx-1 --operation Write --host 127.0.0.1",
        )
    )
    # confluent-kafka calls the cluster resource type BROKER; the table says CLUSTER.
    cluster = (
        "User:alice",
        "*",
        "DESCRIBE_CONFIGS",
        "ALLOW",
        "CLUSTER",
        "kafka-cluster",
        "LITERAL",
    )
    txn = ("User:alice", "127.0.0.1", "WRITE", "ALLOW", "TRANSACTIONAL_ID", "tx-1", "LITERAL")
    everything = created | denied | {cluster, txn}
    assert {tuple("BROKER" if c == "CLUSTER" else c for c in row) for row in everything} == acls(b)

    assert rows(ok(cli(b, "acl list"))) == everything
    assert rows(ok(cli(b, "acl list --topic orders"))) == created
    assert rows(ok(cli(b, "acl list --principal User:bob"))) == {
        r for r in created if r[0] == "User:bob"
    }
    assert rows(ok(cli(b, "acl list --operation write"))) == {txn}
    # match: the literal and prefixed ACLs that apply to one resource name.
    assert rows(ok(cli(b, "acl list --topic payments --resource-pattern-type match"))) == {
        r for r in denied if r[4] == "TOPIC"
    }
    assert parse_table(ok(cli(b, "acl list --topic nothing-here"))) == []

    out = ok(cli(b, "acl delete --topic orders --allow-principal User:bob"))
    assert rows(out) == {r for r in created if r[0] == "User:bob"}
    out = ok(cli(b, "acl delete --group pay --resource-pattern-type prefixed"))
    assert rows(out) == {r for r in denied if r[4] == "GROUP"}
    assert rows(ok(cli(b, "acl list"))) == everything - {
        r for r in created if r[0] == "User:bob"
    } - {r for r in denied if r[4] == "GROUP"}
    # Nothing matched: nothing deleted, not an error.
    assert parse_table(ok(cli(b, "acl delete --topic orders --deny-principal User:x"))) == []

    for args, message in (
        (["create", "--allow-principal", "User:alice"], "needs --topic"),
        (["create", "--topic", "t"], "needs --allow-principal or --deny-principal"),
        (["create", "--allow-principal", "alice", "--topic", "t"], "not TYPE:NAME"),
        (
            ["create", "--allow-principal", "User:a", "--topic", "t", "--operation", "fly"],
            "unknown operation 'fly'",
        ),
        (
            [
                "create",
                "--allow-principal",
                "User:a",
                "--topic",
                "t",
                "--resource-pattern-type",
                "match",
            ],
            "literal or prefixed",
        ),
        (
            [
                "create",
                "--allow-principal",
                "User:a",
                "--topic",
                "t",
                "--resource-pattern-type",
                "fuzzy",
            ],
            "invalid choice",
        ),
        (["delete"], "needs --topic"),
    ):
        failed(cli(b, "acl", *args), 2, message)
    assert len(acls(b)) == len(everything) - 3


def test_acl_and_user_refused_without_authorizer_or_bad_credential(broker) -> None:
    # Kafka's errors, named: no authorizer, and what AlterUserScramCredentials refuses.
    failed(
        cli(broker.bootstrap, "acl create --allow-principal User:a --topic t"),
        1,
        "SECURITY_DISABLED",
    )
    failed(
        cli(
            broker.bootstrap, "user set bob --mechanism SCRAM-SHA-512 --password pw --iterations 10"
        ),
        1,
        "user bob: UNACCEPTABLE_CREDENTIAL",
    )


# ---- kwire user -----------------------------------------------------------------


def scram_users(bootstrap: str) -> dict[str, list[tuple[str, int]]]:
    client = admin(bootstrap)
    described = client.describe_user_scram_credentials(request_timeout=TIMEOUT).result(TIMEOUT)
    return {
        user: sorted((i.mechanism.name, i.iterations) for i in d.scram_credential_infos)
        for user, d in described.items()
    }


def test_user_set_list_describe_delete(broker) -> None:
    b = broker.bootstrap
    assert parse_table(ok(cli(b, "user list"))) == []
    out = ok(cli(b, "user set alice --mechanism SCRAM-SHA-256 --password pw --iterations 8192"))
    assert out == "Completed updating config for user alice.\n"
    ok(cli(b, "user set alice --mechanism scram-sha-512 --password pw"))
    ok(cli(b, "user set bob --mechanism SCRAM-SHA-512 --password pw2 --iterations 5000"))
    assert scram_users(b) == {
        "alice": [("SCRAM_SHA_256", 8192), ("SCRAM_SHA_512", 4096)],
        "bob": [("SCRAM_SHA_512", 5000)],
    }
    listed = [
        (r["USER"], r["MECHANISM"], r["ITERATIONS"]) for r in parse_table(ok(cli(b, "user list")))
    ]
    assert listed == [
        ("alice", "SCRAM-SHA-256", "8192"),
        ("alice", "SCRAM-SHA-512", "4096"),
        ("bob", "SCRAM-SHA-512", "5000"),
    ]
    described = parse_table(ok(cli(b, "user describe bob")))
    assert described == [{"USER": "bob", "MECHANISM": "SCRAM-SHA-512", "ITERATIONS": "5000"}]
    # An unknown user among known ones: those are shown, the run fails naming it.
    result = cli(b, "user describe bob nobody")
    failed(result, 1, "user nobody: RESOURCE_NOT_FOUND")
    assert [r["USER"] for r in parse_table(result.stdout)] == ["bob"]

    ok(cli(b, "user delete alice --mechanism SCRAM-SHA-512"))
    assert scram_users(b) == {"alice": [("SCRAM_SHA_256", 8192)], "bob": [("SCRAM_SHA_512", 5000)]}
    failed(
        cli(b, "user delete alice --mechanism SCRAM-SHA-512"),
        1,
        "user alice: RESOURCE_NOT_FOUND",
    )
    failed(
        cli(b, "user set carol --mechanism SCRAM-SHA-1 --password x"),
        2,
        "invalid choice",
    )
    failed(cli(b, "user set carol --mechanism SCRAM-SHA-256"), 2, "--password")
    failed(cli(b, "user delete carol"), 2, "--mechanism")
    failed(cli(b, "user set carol --mechanism SCRAM-SHA-256 --password ''"), 2, "cannot be empty")
    failed(cli(b, "user describe ''"), 2, "'user' cannot be empty")
    assert set(scram_users(b)) == {"alice", "bob"}


# ---- both over SASL, with --command-config ---------------------------------------


def sasl_broker(broker_factory: Any) -> tuple[Any, str]:
    """A broker with the ACL authorizer, super user User:admin, and a SASL_PLAINTEXT
    listener with PLAIN (users of security_harness) and SCRAM-SHA-256; its bootstrap."""
    sasl_port = free_port()
    broker = broker_factory({"authorizer.class.name": AUTHORIZER, "super.users": "User:admin"})
    broker.stop()
    broker.overrides.update(
        {
            "listeners": f"PLAINTEXT://127.0.0.1:{broker.port},"
            f"SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": plain_jaas(PLAIN_USERS),
        }
    )
    broker.start()
    return broker, f"127.0.0.1:{sasl_port}"


def client_properties(path: Path, mechanism: str, user: str, password: str) -> str:
    """A --command-config file as a Java client's (kafka-topics.sh's) would be."""
    module = "plain.PlainLoginModule" if mechanism == "PLAIN" else "scram.ScramLoginModule"
    login = f'username="{user}" password="{password}"'
    write_properties(
        path,
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism,
            "sasl.jaas.config": f"org.apache.kafka.common.security.{module} required {login};",
        },
    )
    return str(path)


def test_acl_and_user_over_sasl_with_command_config(broker_factory, tmp_path: Path) -> None:
    broker, sasl = sasl_broker(broker_factory)
    as_admin = [
        "--command-config",
        client_properties(tmp_path / "admin.properties", "PLAIN", "admin", "admin-secret"),
    ]
    as_alice = [
        "--command-config",
        client_properties(tmp_path / "alice.properties", "PLAIN", "alice", "alice-secret"),
    ]
    as_carol = [
        "--command-config",
        client_properties(tmp_path / "carol.properties", "SCRAM-SHA-256", "carol", "carol-pw"),
    ]

    ok(cli(sasl, "topic create shared", *as_admin))
    ok(cli(sasl, "user set carol --mechanism SCRAM-SHA-256 --password carol-pw", *as_admin))
    rows_ = parse_table(ok(cli(sasl, "user list", *as_admin)))
    assert rows_ == [{"USER": "carol", "MECHANISM": "SCRAM-SHA-256", "ITERATIONS": "4096"}]

    # carol logs in with the credential `kwire user` made; without an ACL she sees no topic.
    assert ok(cli(sasl, "topic list", *as_carol)) == ""
    ok(
        cli(
            sasl,
            "acl create --allow-principal User:carol --topic shared --operation Describe",
            *as_admin,
        )
    )
    assert ok(cli(sasl, "topic list", *as_carol)) == "shared\n"
    assert acls(
        sasl,
        {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "admin",
            "sasl.password": "admin-secret",
        },
    ) == {("User:carol", "*", "DESCRIBE", "ALLOW", "TOPIC", "shared", "LITERAL")}

    # alice (no ACL) may not see ACLs or credentials: exit 1 naming Kafka's error
    # (librdkafka alone shows no ACLs, and crashes on DescribeUserScramCredentials' refusal).
    for line in ("acl list", "user list", "user describe carol"):
        failed(cli(sasl, line, *as_alice), 1, "CLUSTER_AUTHORIZATION_FAILED")
    # Neither alice nor carol may change ACLs, credentials or topics they have no ACL for.
    failed(
        cli(sasl, "acl create --allow-principal User:alice --topic shared", *as_alice),
        1,
        "CLUSTER_AUTHORIZATION_FAILED",
    )
    failed(
        cli(sasl, "user set alice --mechanism SCRAM-SHA-256 --password x", *as_carol),
        1,
        "user alice: CLUSTER_AUTHORIZATION_FAILED",
    )
    failed(
        cli(sasl, "topic delete shared", *as_carol),
        1,
        "topic shared: TOPIC_AUTHORIZATION_FAILED",
    )

    ok(cli(sasl, "acl delete --topic shared", *as_admin))
    assert ok(cli(sasl, "topic list", *as_carol)) == ""
    # Without her credential carol cannot log in at all: no broker answers her.
    ok(cli(sasl, "user delete carol --mechanism SCRAM-SHA-256", *as_admin))
    failed(
        cli(sasl, "topic list --timeout 5", *as_carol),
        3,
        "cannot reach",
        "Authentication failed",
    )
    assert parse_table(ok(cli(sasl, "user list", *as_admin))) == []
