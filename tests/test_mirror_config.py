"""`kwire mirror`'s properties file alone (no broker): kwire.mirror.config and
kwire.mirror.policy read MirrorMaker 2's keys as Kafka 3.9's MirrorMakerConfig,
MirrorSourceConfig, DefaultTopicFilter/DefaultGroupFilter and DefaultReplicationPolicy /
IdentityReplicationPolicy do; plus the exit code of `kwire mirror` for a file it refuses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from kwire.mirror.config import (
    FLOW_DEFAULTS,
    Flow,
    MirrorConfigError,
    parse_mirror_config,
    regex_list,
    validate_flow,
)
from kwire.mirror.policy import (
    DEFAULT_POLICY,
    IDENTITY_POLICY,
    replication_policy,
)

BASE = {
    "clusters": "a, b",
    "a.bootstrap.servers": "127.0.0.1:9092",
    "b.bootstrap.servers": "127.0.0.1:9093",
}


def config(**extra: str) -> dict[str, str]:
    """BASE plus `extra`, whose keywords spell `.` as `_` and `->` as `__` (a__b_enabled is
    a->b.enabled)."""
    properties = dict(BASE)
    for key, value in extra.items():
        properties[key.replace("__", "->").replace("_", ".")] = value
    return properties


def one_flow(properties: dict[str, str]) -> Flow:
    flows = parse_mirror_config(properties).flows
    assert len(flows) == 1, [flow.name for flow in flows]
    return flows[0]


def refused(properties: dict[str, str]) -> str:
    with pytest.raises(MirrorConfigError) as error:
        for flow in parse_mirror_config(properties).flows:
            validate_flow(flow)
    return str(error.value)


# -- clusters and flows ------------------------------------------------------------------


def test_a_flow_is_enabled_only_by_its_own_enabled_key():
    properties = {**BASE, "a->b.enabled": "true"}
    mirror = parse_mirror_config(properties)
    assert mirror.clusters == ("a", "b")
    assert [flow.name for flow in mirror.flows] == ["a->b"]
    flow = mirror.flows[0]
    assert (flow.source, flow.target) == ("a", "b")
    assert mirror.http_listener is None and mirror.unknown_keys == ()

    # MM2's default for a flow is disabled; `false` (any case) and a flow only configured
    # (`b->a.topics`) do not enable one.
    properties.update({"b->a.enabled": "FALSE", "b->a.topics": "x"})
    assert [flow.name for flow in parse_mirror_config(properties).flows] == ["a->b"]

    both = parse_mirror_config({**BASE, "a->b.enabled": "true", "b->a.enabled": " True "})
    assert [flow.name for flow in both.flows] == ["a->b", "b->a"]


def test_three_clusters_give_flows_in_clusters_order():
    properties = {
        "clusters": "east,west , north",
        **{
            f"{alias}.bootstrap.servers": f"127.0.0.1:{9092 + i}"
            for i, alias in enumerate(("east", "west", "north"))
        },
        "north->east.enabled": "true",
        "east->west.enabled": "true",
        "east->north.enabled": "true",
    }
    mirror = parse_mirror_config(properties)
    assert mirror.clusters == ("east", "west", "north")
    assert [flow.name for flow in mirror.flows] == ["east->west", "east->north", "north->east"]


def test_clusters_missing_or_alone():
    for properties in ({}, {"clusters": " , "}, {"a.bootstrap.servers": "x"}):
        assert "clusters" in refused(properties)
    # One cluster cannot have a flow: said so, not "set a->a.enabled" (a refused self-flow).
    message = refused({"clusters": "a", "a.bootstrap.servers": "127.0.0.1:9092"})
    assert "at least two clusters" in message, message


def test_cluster_alias_checks():
    assert "names a cluster twice" in refused(
        {**BASE, "clusters": "a, b, a", "a->b.enabled": "true"}
    )
    message = refused({**BASE, "clusters": "a, b.c", "b.c.bootstrap.servers": "x"})
    assert "'b.c' is not a valid cluster alias" in message, message


def test_missing_bootstrap_names_the_key():
    properties = {"clusters": "a, b", "a.bootstrap.servers": "x", "a->b.enabled": "true"}
    assert refused(properties) == "b.bootstrap.servers is not set"
    assert refused({**properties, "b.bootstrap.servers": "  "}) == "b.bootstrap.servers is not set"


def test_flow_naming_an_unknown_alias():
    message = refused(config(a__b_enabled="true", **{"a->c.topics": "x"}))
    assert message == "a->c.topics: 'c' is not one of clusters = a, b"
    message = refused(config(**{"c->a.enabled": "true"}))
    assert "c->a.enabled: 'c' is not one of clusters" in message, message
    assert "a cluster to itself" in refused(config(**{"a->a.enabled": "true"}))


def test_no_enabled_flow():
    message = refused(config())
    assert message == "no flow is enabled: set one, e.g. a->b.enabled = true"
    assert "no flow is enabled" in refused(config(a__b_enabled="false"))
    # MM2 reads booleans strictly too (ConfigDef BOOLEAN): a typo is an error, not "false".
    message = refused(config(a__b_enabled="yes"))
    assert message == "a->b.enabled='yes': expected true or false"


# -- topics and groups -------------------------------------------------------------------


def test_default_topic_and_group_filters():
    flow = one_flow(config(a__b_enabled="true"))
    # MirrorSourceConfig / MirrorCheckpointConfig defaults (Kafka 3.9).
    assert flow.get("topics") == ".*"
    assert flow.get("topics.exclude") == r".*[\-\.]internal, .*\.replica, __.*"
    assert flow.get("groups") == ".*"
    assert flow.get("groups.exclude") == "console-consumer-.*, connect-.*, __.*"
    for topic in ("orders", "orders.v2", "a-b", "x_internal", "internals", "replica"):
        assert flow.replicates_topic(topic), topic
    for topic in (
        "connect-offsets-internal",
        "mm2-offsets.b.internal",
        "orders.replica",
        "__consumer_offsets",
        "__transaction_state",
        ".hidden",
        "a.checkpoints.internal",
    ):
        assert not flow.replicates_topic(topic), topic
    for group in ("app", "console-consumer", "my-console-consumer-1", "_x"):
        assert flow.replicates_group(group), group
    for group in ("console-consumer-4242", "connect-mirror", "__internal"):
        assert not flow.replicates_group(group), group


def test_flow_topics_override_top_level_topics():
    properties = config(
        a__b_enabled="true",
        b__a_enabled="true",
        topics="orders.*, payments",
        **{"b->a.topics": "audit", "b->a.groups": "billing-.*", "groups": "app"},
    )
    ab, ba = parse_mirror_config(properties).flows
    assert ab.get("topics") == "orders.*, payments" and ba.get("topics") == "audit"
    assert ab.replicates_topic("orders") and ab.replicates_topic("orders-eu")
    assert ab.replicates_topic("payments") and not ab.replicates_topic("payments2")
    assert not ab.replicates_topic("audit")
    assert ba.replicates_topic("audit") and not ba.replicates_topic("orders")
    assert ab.replicates_group("app") and not ab.replicates_group("billing-1")
    assert ba.replicates_group("billing-1") and not ba.replicates_group("app")


def test_regex_lists_are_comma_separated_full_matches():
    pattern = regex_list("topics", " orders , pay.* ,, ")
    assert pattern.fullmatch("orders") and pattern.fullmatch("payments")
    assert not pattern.fullmatch("orders2") and not pattern.fullmatch("xpayments")
    # Alternatives are grouped: `a|b` inside one entry stays one entry, anchored as a whole.
    assert regex_list("topics", "x|y, z").fullmatch("y")
    assert not regex_list("topics", "x|y, z").fullmatch("xz")
    # An empty list matches nothing (DefaultTopicFilter: no pattern, nothing is `in` it).
    empty = regex_list("topics", " , ")
    assert not empty.fullmatch("") and not empty.fullmatch("orders")

    flow = one_flow(config(a__b_enabled="true", topics="", **{"topics.exclude": ""}))
    assert not flow.replicates_topic("orders")
    flow = one_flow(config(a__b_enabled="true", **{"topics.exclude": ""}))
    assert flow.replicates_topic("orders.replica")
    assert not flow.replicates_topic("__consumer_offsets")  # internal whatever the filter

    # Python's full match on a regex with `|` (Java's matches() has the same meaning).
    flow = one_flow(config(a__b_enabled="true", topics="a|b"))
    assert flow.replicates_topic("a") and not flow.replicates_topic("ab")


def test_bad_regex_names_the_flow_key():
    message = refused(config(a__b_enabled="true", topics="orders, pay(ments"))
    assert message.startswith("a->b.topics='orders, pay(ments': not a regular expression"), message
    message = refused(config(a__b_enabled="true", **{"a->b.groups.exclude": "[z-a]"}))
    assert message.startswith("a->b.groups.exclude='[z-a]': not a regular expression"), message


def test_topic_configs_exclusions():
    flow = one_flow(config(a__b_enabled="true"))
    for name in ("retention.ms", "cleanup.policy", "max.message.bytes"):
        assert flow.syncs_config(name), name
    for name in (
        "min.insync.replicas",
        "message.timestamp.type",
        "unclean.leader.election.enable",
        "follower.replication.throttled.replicas",
    ):
        assert not flow.syncs_config(name), name
    flow = one_flow(config(a__b_enabled="true", **{"config.properties.exclude": "retention.*"}))
    assert not flow.syncs_config("retention.ms") and flow.syncs_config("min.insync.replicas")


# -- replication policies and cycles -----------------------------------------------------


def test_default_policy_names_and_cycle_prevention():
    ab, ba = parse_mirror_config(config(a__b_enabled="true", b__a_enabled="true")).flows
    assert ab.policy.format_remote_topic("a", "orders") == "a.orders"
    assert ab.remote_topic("orders") == "a.orders" and ba.remote_topic("orders") == "b.orders"
    # a->b does not send back what came from b; b->a sends a's copies of c on.
    assert not ab.replicates_topic("b.orders")
    assert ab.replicates_topic("c.orders") and ab.replicates_topic("a.orders")
    assert not ba.replicates_topic("a.orders")
    assert ab.policy.topic_source("b.orders") == "b"
    assert ab.policy.topic_source("orders") is None
    assert ab.policy.topic_source("b.") is None  # Java's split drops the empty tail
    assert ab.policy.topic_source("b.x.y") == "b"
    assert ab.policy.upstream_topic("c.b.orders") == "b.orders"
    assert ab.policy.upstream_topic("orders") is None


def test_cycles_are_found_through_every_hop():
    # MirrorSourceConnector.isCycle recurses upstream: in a ring a->b->c->a, `c.b.orders` on
    # a came from b through c; a->b must not copy it (it would go round forever).
    properties = {
        "clusters": "a, b, c",
        **{f"{alias}.bootstrap.servers": "127.0.0.1:9092" for alias in "abc"},
        "a->b.enabled": "true",
    }
    flow = one_flow(properties)
    assert not flow.replicates_topic("c.b.orders")
    assert not flow.replicates_topic("c.a.b.x")
    assert flow.replicates_topic("c.a.orders")
    assert flow.replicates_topic("c.orders")


def test_identity_policy_keeps_names_and_cannot_see_cycles():
    for name in (IDENTITY_POLICY, "IdentityReplicationPolicy", f" {IDENTITY_POLICY} "):
        flow = one_flow(config(a__b_enabled="true", **{"replication.policy.class": name}))
        assert flow.policy.identity
        assert flow.remote_topic("orders") == "orders"
        assert flow.policy.topic_source("b.orders") is None
        # (MM2's isCycle cannot tell either: with identity names a flow must be one-way.)
        assert flow.replicates_topic("b.orders")
        # internal topics are still not copied, with their default-policy names
        assert flow.policy.checkpoints_topic("a") == "a.checkpoints.internal"
        assert not flow.replicates_topic("mm2-offset-syncs.b.internal")
        assert not flow.replicates_topic("a.checkpoints.internal")


def test_default_policy_by_short_name_or_default():
    for properties in (
        config(a__b_enabled="true"),
        config(a__b_enabled="true", **{"replication.policy.class": "DefaultReplicationPolicy"}),
        config(a__b_enabled="true", **{"a->b.replication.policy.class": DEFAULT_POLICY}),
    ):
        assert not one_flow(properties).policy.identity


def test_separator():
    flow = one_flow(config(a__b_enabled="true", **{"replication.policy.separator": "_"}))
    policy = flow.policy
    assert policy.separator == "_"
    assert flow.remote_topic("orders") == "a_orders"
    assert policy.topic_source("b_orders") == "b" and policy.topic_source("b.orders") is None
    assert not flow.replicates_topic("b_orders") and flow.replicates_topic("b.orders")
    # Internal topics follow the separator (internal.topic.separator.enabled's default).
    assert policy.offset_syncs_topic("b") == "mm2-offset-syncs_b_internal"
    assert policy.checkpoints_topic("a") == "a_checkpoints_internal"
    assert policy.offsets_topic("a") == "mm2-offsets_a_internal"
    # ... and are never mirrored, whatever `topics.exclude` says (isMM2InternalTopic).
    assert not flow.replicates_topic("mm2-offset-syncs_b_internal")
    assert not flow.replicates_topic("mm2-offsets_a_internal")
    assert not flow.replicates_topic("a_checkpoints_internal")
    # a multi-character separator, split literally (Pattern.quote)
    policy = replication_policy(DEFAULT_POLICY, "::")
    assert policy.format_remote_topic("a", "x") == "a::x"
    assert policy.topic_source("b::x::y") == "b" and policy.topic_source("b:x") is None
    assert policy.upstream_topic("c::b::x") == "b::x"
    policy = replication_policy(DEFAULT_POLICY, ".*")
    assert policy.topic_source("b.*x") == "b" and policy.topic_source("bx") is None


def test_internal_topics_are_never_mirrored():
    # ReplicationPolicy.isInternalTopic: Kafka's (`__`, `.`), Connect's (`-internal`,
    # `.internal`) and MM2's; checked apart from `topics.exclude`, which may be replaced.
    flow = one_flow(config(a__b_enabled="true", **{"topics.exclude": "nothing"}))
    for topic in (
        "__consumer_offsets",
        ".x",
        "connect-configs-internal",
        "connect-status.internal",
        "mm2-offset-syncs.b.internal",
        "mm2-offsets.a.internal",
        "b.checkpoints.internal",
    ):
        assert not flow.replicates_topic(topic), topic
    assert flow.replicates_topic("orders.replica") and flow.replicates_topic("internal")


def test_bad_policy_class_and_separator():
    message = refused(config(a__b_enabled="true", **{"replication.policy.class": "com.x.My"}))
    assert message.startswith("a->b.replication.policy.class: 'com.x.My' is not a policy"), message
    assert DEFAULT_POLICY in message and IDENTITY_POLICY in message
    message = refused(config(a__b_enabled="true", **{"replication.policy.separator": ""}))
    assert "replication.policy.separator must not be empty" in message, message


# -- settings ----------------------------------------------------------------------------


def test_flow_settings_defaults_and_precedence():
    flow = one_flow(
        config(
            a__b_enabled="true",
            **{
                "emit.checkpoints.interval.seconds": "5",
                "sync.group.offsets.enabled": "true",
                "a->b.emit.checkpoints.interval.seconds": "2",
                "refresh.topics.interval.seconds": " 7 ",
            },
        )
    )
    validate_flow(flow)
    assert flow.seconds("emit.checkpoints.interval.seconds") == 2.0  # flow beats top level
    assert flow.seconds("refresh.topics.interval.seconds") == 7.0
    assert flow.flag("sync.group.offsets.enabled")
    # MM2's defaults for what was not set
    assert flow.integer("replication.factor") == 2
    assert flow.integer("offset.lag.max") == 100
    assert flow.seconds("sync.group.offsets.interval.seconds") == 60.0
    assert flow.seconds("refresh.groups.interval.seconds") == 600.0
    assert flow.integer("checkpoints.topic.replication.factor") == 3
    assert flow.integer("offset-syncs.topic.replication.factor") == 3
    assert flow.flag("sync.topic.configs.enabled") and flow.flag("emit.checkpoints.enabled")
    assert not flow.exactly_once
    for value, expected in (("enabled", True), ("Requested", True), ("disabled", False)):
        flow = one_flow(config(a__b_enabled="true", **{"exactly.once.support": value}))
        assert flow.exactly_once is expected
    assert set(flow.settings) == set(FLOW_DEFAULTS)


@pytest.mark.parametrize(
    "key",
    [
        "refresh.topics.interval.seconds",
        "emit.checkpoints.interval.seconds",
        "sync.group.offsets.interval.seconds",
        "offset.flush.interval.ms",
        "offset.lag.max",
    ],
)
@pytest.mark.parametrize("value", ["1.5", "ten", "", "-1"])
def test_non_integer_intervals(key, value):
    message = refused(config(a__b_enabled="true", **{key: value}))
    if value == "-1":
        assert message == f"a->b.{key}=-1: must be at least 0"
    else:
        assert message == f"a->b.{key}={value!r}: expected an integer"


@pytest.mark.parametrize(
    "key",
    [
        "replication.factor",
        "offset-syncs.topic.replication.factor",
        "checkpoints.topic.replication.factor",
        "offset.storage.replication.factor",
    ],
)
def test_replication_factors(key):
    for good in ("1", "3", "-1", " 2 "):  # -1: the broker's default.replication.factor
        validate_flow(one_flow(config(a__b_enabled="true", **{key: good})))
    for bad in ("0", "-2", "two", "1.0", "", "--3", "²"):
        message = refused(config(a__b_enabled="true", **{key: bad}))
        assert message == f"a->b.{key}={bad!r}: expected a positive integer or -1", message


def test_bad_flags_and_exactly_once():
    message = refused(config(a__b_enabled="true", **{"sync.group.offsets.enabled": "on"}))
    assert message == "a->b.sync.group.offsets.enabled='on': expected true or false"
    message = refused(config(a__b_enabled="true", **{"exactly.once.support": "yes"}))
    assert message == "a->b.exactly.once.support='yes': expected enabled, requested or disabled"
    assert "offset.storage.partitions=0: must be at least 1" in refused(
        config(a__b_enabled="true", **{"offset.storage.partitions": "0"})
    )


def test_unknown_keys_are_listed():
    mirror = parse_mirror_config(
        config(
            a__b_enabled="true",
            **{
                "emit.heartbeats.enabled": "false",  # MM2's, but kwire has no heartbeats
                "topics.blacklist": "x",
                "tasks.max": "4",
                "http.listeners": "http://127.0.0.1:0",
                "ssl.truststore.type": "PEM",
                "sasl.mechanism": "PLAIN",
                "security.protocol": "SASL_SSL",
                "a.client.id": "scoped to a cluster",
                "a->b.whatever": "scoped to a flow",
                "replication.factor": "1",
                "zz.last": "1",
            },
        )
    )
    assert mirror.unknown_keys == ("emit.heartbeats.enabled", "topics.blacklist", "zz.last")
    assert mirror.http_listener == "http://127.0.0.1:0"


# -- client settings ---------------------------------------------------------------------


def test_per_cluster_client_settings():
    jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="alice" password="secret";'
    )
    flow = one_flow(
        config(
            a__b_enabled="true",
            **{
                "ssl.truststore.location": "/ca.pem",  # every cluster
                "ssl.truststore.type": "PEM",
                "security.protocol": "SSL",
                "a.security.protocol": "SASL_SSL",  # a only, over the top level
                "a.sasl.mechanism": "PLAIN",
                "a.sasl.jaas.config": jaas,
                "a.consumer.fetch.max.bytes": "1048576",  # a's consumer only
                "a.consumer.security.protocol": "SASL_PLAINTEXT",
                "a.producer.linger.ms": "5",
                "b.admin.request.timeout.ms": "9000",
                "b.ssl.truststore.location": "/b-ca.pem",
                "a->b.topics": "x",  # not a client setting
                "topics": "y",
            },
        )
    )
    source, target = flow.source_clients, flow.target_clients
    assert set(source) == set(target) == {"consumer", "producer", "admin"}
    assert source["consumer"] == {
        "bootstrap.servers": "127.0.0.1:9092",
        "ssl.truststore.location": "/ca.pem",
        "ssl.truststore.type": "PEM",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.jaas.config": jaas,
        "fetch.max.bytes": "1048576",
    }
    assert source["producer"] == {
        "bootstrap.servers": "127.0.0.1:9092",
        "ssl.truststore.location": "/ca.pem",
        "ssl.truststore.type": "PEM",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.jaas.config": jaas,
        "linger.ms": "5",
    }
    assert source["admin"] == {
        key: value for key, value in source["producer"].items() if key != "linger.ms"
    }
    assert (
        target["consumer"]
        == target["producer"]
        == {
            "bootstrap.servers": "127.0.0.1:9093",
            "ssl.truststore.location": "/b-ca.pem",
            "ssl.truststore.type": "PEM",
            "security.protocol": "SSL",
        }
    )
    assert target["admin"] == {**target["consumer"], "request.timeout.ms": "9000"}


def test_the_same_cluster_has_the_same_settings_in_every_flow():
    properties = {
        "clusters": "a, b, c",
        **{
            f"{alias}.bootstrap.servers": f"127.0.0.1:{port}"
            for alias, port in (("a", 1), ("b", 2), ("c", 3))
        },
        "a->b.enabled": "true",
        "c->a.enabled": "true",
        "a.sasl.mechanism": "SCRAM-SHA-256",
    }
    ab, ca = parse_mirror_config(properties).flows
    assert ab.source_clients == ca.target_clients
    assert ab.source_clients["consumer"]["sasl.mechanism"] == "SCRAM-SHA-256"
    assert "sasl.mechanism" not in ca.source_clients["consumer"]


# -- the command line --------------------------------------------------------------------


def run_mirror_cli(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kwire", "mirror", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("clusters = a, b\na.bootstrap.servers = 127.0.0.1:1\n", "b.bootstrap.servers is not set"),
        (
            "clusters = a, b\na.bootstrap.servers = 127.0.0.1:1\nb.bootstrap.servers = "
            "127.0.0.1:2\n",
            "no flow is enabled: set one, e.g. a->b.enabled = true",
        ),
        (
            "clusters = a, b\na.bootstrap.servers = 127.0.0.1:1\nb.bootstrap.servers = "
            "127.0.0.1:2\na->c.enabled = true\n",
            "a->c.enabled: 'c' is not one of clusters = a, b",
        ),
        # Read before any connection: no broker is needed to refuse these.
        (
            "clusters = a, b\na.bootstrap.servers = 127.0.0.1:1\nb.bootstrap.servers = "
            "127.0.0.1:2\na->b.enabled = true\nemit.checkpoints.interval.seconds = 1.5\n",
            "a->b.emit.checkpoints.interval.seconds='1.5': expected an integer",
        ),
        (
            "clusters = a, b\na.bootstrap.servers = 127.0.0.1:1\nb.bootstrap.servers = "
            "127.0.0.1:2\na->b.enabled = true\na->b.replication.factor = 0\n",
            "a->b.replication.factor='0': expected a positive integer or -1",
        ),
        ("clusters = a, b\n=oops\n", "cannot read line '=oops'"),
    ],
)
def test_cli_refuses_a_bad_file_with_exit_2(tmp_path, text, expected):
    path = tmp_path / "mm2.properties"
    path.write_text(text)
    result = run_mirror_cli(path)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith(f"kwire: {path}"), result.stderr
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""


def test_cli_missing_file(tmp_path):
    result = run_mirror_cli(tmp_path / "absent.properties")
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert re.match(r"kwire: cannot read \S+absent\.properties: ", result.stderr), result.stderr
