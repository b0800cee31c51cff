"""ACLs on a real broker (`authorizer.class.name=kafka.security.authorizer.AclAuthorizer`):
CreateAcls/DescribeAcls/DeleteAcls through confluent-kafka's AdminClient and raw
requests, and the allow/deny matrix of producing, consuming with a group and the
admin APIs with confluent-kafka and the Java client.

The connections are PLAINTEXT, so every client is User:ANONYMOUS: a setup phase runs
with `super.users=User:ANONYMOUS` (topics, ACLs), then the broker restarts without it
and the ACLs granted to User:ANONYMOUS (read back from kwire-acls.json) decide.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from kio.schema.errors import ErrorCode
from raw_client import RawClient
from security_harness import PLAIN_USERS, plain_jaas

from compat.clients import install_java, java_classpath
from kwire.protocol.messages import make, request_class, request_module
from kwire.security.acl_store import ACLS_FILE

AUTHORIZER = "kafka.security.authorizer.AclAuthorizer"
ANON = "User:ANONYMOUS"
TIMEOUT = 30


def acl_broker(broker_factory: Any, *, setup: bool = True, **overrides: str) -> Any:
    """A broker with the ACL authorizer; in the setup phase ANONYMOUS is a super user."""
    values = {"authorizer.class.name": AUTHORIZER, **overrides}
    if setup:
        values["super.users"] = ANON
    return broker_factory(values)


def end_setup(broker: Any) -> None:
    """Restart without the super user: from now on only the ACLs count."""
    broker.overrides.pop("super.users", None)
    broker.restart()


def admin(broker: Any, config: dict[str, Any] | None = None) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap, **(config or {})})


def binding(
    resource_type: ResourceType, name: str, operation: AclOperation,
    permission: AclPermissionType = AclPermissionType.ALLOW,
    pattern: ResourcePatternType = ResourcePatternType.LITERAL, principal: str = ANON, host: str = "*",
) -> AclBinding:
    return AclBinding(resource_type, name, pattern, principal, host, operation, permission)


def create_acls(broker: Any, bindings: list[AclBinding], config: dict[str, Any] | None = None) -> None:
    client = admin(broker, config)  # alive until the answers are in
    for future in client.create_acls(bindings, request_timeout=TIMEOUT).values():
        future.result()


def create_topics(broker: Any, names: list[str], config: dict[str, Any] | None = None) -> None:
    client = admin(broker, config)
    for future in client.create_topics([NewTopic(n, 1, 1) for n in names], operation_timeout=TIMEOUT).values():
        future.result()


ALL_ACLS = AclBindingFilter(
    ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
)


def describe(broker: Any, acl_filter: AclBindingFilter = ALL_ACLS) -> set[AclBinding]:
    client = admin(broker)
    return set(client.describe_acls(acl_filter, request_timeout=TIMEOUT).result())


def kafka_error(exc: BaseException) -> Any:
    assert isinstance(exc, KafkaException), exc
    return exc.args[0].code()


def produce(broker: Any, topic: str, count: int = 3, config: dict[str, Any] | None = None) -> list[Any]:
    """The delivery errors (None for delivered) of `count` messages."""
    producer = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": 10000, **(config or {})})
    errors: list[Any] = []
    for i in range(count):
        producer.produce(topic, f"m{i}".encode(), on_delivery=lambda err, msg: errors.append(err))
    producer.flush(TIMEOUT)
    assert len(errors) == count
    return errors


def consume(
    broker: Any, topic: str, group: str, count: int, config: dict[str, Any] | None = None
) -> tuple[list[bytes], Any]:
    """(values read, the first error) of a group consumer reading `topic` from the start."""
    consumer = Consumer({
        "bootstrap.servers": broker.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False, **(config or {}),
    })
    consumer.subscribe([topic])
    values: list[bytes] = []
    error = None
    try:
        for _ in range(200):
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                error = msg.error().code()
                break
            values.append(msg.value())
            if len(values) == count:
                consumer.commit(asynchronous=False)
                break
    finally:
        consumer.close()
    return values, error


# CreateAcls / DescribeAcls / DeleteAcls


def test_create_describe_delete(broker_factory) -> None:
    broker = acl_broker(broker_factory)
    alice_read = binding(ResourceType.TOPIC, "orders", AclOperation.READ, principal="User:alice")
    pay_write = binding(ResourceType.TOPIC, "pay-", AclOperation.WRITE, pattern=ResourcePatternType.PREFIXED,
                        principal="User:bob", host="10.0.0.7")
    all_deny = binding(ResourceType.TOPIC, "*", AclOperation.ALL, AclPermissionType.DENY, principal="User:eve")
    group_read = binding(ResourceType.GROUP, "g", AclOperation.READ, principal="User:alice")
    cluster_alter = binding(ResourceType.BROKER, "kafka-cluster", AclOperation.ALTER, principal="User:alice")
    every = {alice_read, pay_write, all_deny, group_read, cluster_alter}
    create_acls(broker, list(every))
    assert describe(broker) == every
    # Filters: a resource type; a principal; MATCH finds the literal, `*` and prefixes that apply.
    topic_filter = AclBindingFilter(ResourceType.TOPIC, None, ResourcePatternType.ANY, None, None,
                                    AclOperation.ANY, AclPermissionType.ANY)
    assert describe(broker, topic_filter) == {alice_read, pay_write, all_deny}
    bob = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:bob", None,
                           AclOperation.ANY, AclPermissionType.ANY)
    assert describe(broker, bob) == {pay_write}
    match = AclBindingFilter(ResourceType.TOPIC, "pay-in", ResourcePatternType.MATCH, None, None,
                             AclOperation.ANY, AclPermissionType.ANY)
    assert describe(broker, match) == {pay_write, all_deny}
    literal = AclBindingFilter(ResourceType.TOPIC, "pay-", ResourcePatternType.LITERAL, None, None,
                               AclOperation.ANY, AclPermissionType.ANY)
    assert describe(broker, literal) == set()
    deny = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                            AclOperation.ANY, AclPermissionType.DENY)
    assert describe(broker, deny) == {all_deny}

    # Invalid creations fail alone, with Kafka's messages; the valid one is stored.
    bad = {
        binding(ResourceType.BROKER, "other", AclOperation.ALTER):
            "The only valid name for the CLUSTER resource is kafka-cluster",
        binding(ResourceType.TOPIC, "", AclOperation.READ): "Invalid empty resource name",
        binding(ResourceType.TOPIC, "t", AclOperation.READ, principal="alice"): "Could not parse principal",
    }
    good = binding(ResourceType.TOPIC, "fine", AclOperation.DESCRIBE)
    client = admin(broker)
    results = client.create_acls([*bad, good], request_timeout=TIMEOUT)
    assert results[good].result() is None
    for b, message in bad.items():
        with pytest.raises(KafkaException) as e:
            results[b].result()
        assert e.value.args[0].code() == KafkaError.INVALID_REQUEST
        assert message in e.value.args[0].str()
    assert describe(broker) == every | {good}

    # Delete: each filter answers what it removed; the rest stays, across a restart.
    deleted = client.delete_acls([topic_filter, bob], request_timeout=TIMEOUT)
    assert set(deleted[topic_filter].result()) == {alice_read, pay_write, all_deny, good}
    assert set(deleted[bob].result()) == set()  # already the first filter's
    broker.restart()
    assert describe(broker) == {group_read, cluster_alter}
    saved = json.loads((broker.data_dir / ACLS_FILE).read_text())
    assert {(e["resourceType"], e["name"]) for e in saved["acls"]} == {("GROUP", "g"), ("CLUSTER", "kafka-cluster")}


def _raw_create(port: int, version: int, creations: list[tuple[int, str, int, str, str, int, int]]) -> list[Any]:
    module = request_module(30, version)
    request = make(
        request_class(30, version),
        creations=tuple(
            make(module.AclCreation, resource_type=rt, resource_name=name, resource_pattern_type=pt,
                 principal=principal, host=host, operation=op, permission_type=perm)
            for rt, name, pt, principal, host, op, perm in creations
        ),
    )
    with RawClient(port) as client:
        return [(r.error_code, r.error_message) for r in client.send(request).results]


@pytest.mark.parametrize("version", [1, 3])
def test_create_validation_per_creation(broker_factory, version: int) -> None:
    broker = acl_broker(broker_factory)
    topic, cluster, literal, prefixed = 2, 4, 3, 4
    read, allow = 3, 3
    results = _raw_create(broker.port, version, [
        (1, "t", literal, ANON, "*", read, allow),          # resource type ANY
        (0, "t", literal, ANON, "*", read, allow),          # UNKNOWN
        (topic, "t", 2, ANON, "*", read, allow),            # pattern MATCH
        (topic, "t", 1, ANON, "*", read, allow),            # pattern ANY
        (topic, "t", literal, ANON, "*", 1, allow),         # operation ANY
        (topic, "t", literal, ANON, "*", read, 1),          # permission ANY
        (topic, "a/b", literal, ANON, "*", read, allow),    # a ZooKeeper path separator
        (cluster, "kafka-cluster", prefixed, ANON, "*", 7, allow),
    ])
    assert [e for e, _ in results] == [ErrorCode.invalid_request] * 7 + [ErrorCode.none]
    assert all(m for _, m in results[:7])


def raw_describe_acls(port: int, version: int = 1) -> Any:
    request = make(
        request_class(29, version), resource_type_filter=1, resource_name_filter=None, pattern_type_filter=1,
        principal_filter=None, host_filter=None, operation=1, permission_type=1,
    )
    with RawClient(port) as client:
        return client.send(request)


def test_without_authorizer_security_disabled(broker) -> None:
    # librdkafka drops DescribeAcls' top-level error: the raw answer shows it.
    response = raw_describe_acls(broker.port)
    assert (response.error_code, response.error_message) == (
        ErrorCode.security_disabled, "No Authorizer is configured on the broker"
    )
    client = admin(broker)
    results = client.create_acls([binding(ResourceType.TOPIC, "t", AclOperation.READ)], request_timeout=TIMEOUT)
    for future in results.values():
        with pytest.raises(KafkaException) as e:
            future.result()
        assert kafka_error(e.value) == KafkaError.SECURITY_DISABLED
    for future in client.delete_acls([ALL_ACLS], request_timeout=TIMEOUT).values():
        with pytest.raises(KafkaException) as e:
            future.result()
        assert kafka_error(e.value) == KafkaError.SECURITY_DISABLED
    # Every other API works as before: no authorizer, no check.
    assert produce(broker, "free") == [None] * 3


def test_acl_apis_need_cluster_describe_and_alter(broker_factory) -> None:
    broker = acl_broker(broker_factory)
    create_acls(broker, [binding(ResourceType.BROKER, "kafka-cluster", AclOperation.DESCRIBE)])
    end_setup(broker)
    # DESCRIBE on the cluster: describe, but neither create nor delete.
    assert describe(broker) == {binding(ResourceType.BROKER, "kafka-cluster", AclOperation.DESCRIBE)}
    assert raw_describe_acls(broker.port, version=3).error_code == ErrorCode.none
    client = admin(broker)
    results = client.create_acls([binding(ResourceType.TOPIC, "t", AclOperation.READ)], request_timeout=TIMEOUT)
    for future in results.values():
        with pytest.raises(KafkaException) as e:
            future.result()
        assert kafka_error(e.value) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    for future in client.delete_acls([ALL_ACLS], request_timeout=TIMEOUT).values():
        with pytest.raises(KafkaException) as e:
            future.result()
        assert kafka_error(e.value) == KafkaError.CLUSTER_AUTHORIZATION_FAILED


# The allow/deny matrix.

MATRIX_ACLS = [
    # orders: produce and consume; group "readers" may consume.
    binding(ResourceType.TOPIC, "orders", AclOperation.WRITE),
    binding(ResourceType.TOPIC, "orders", AclOperation.READ),
    binding(ResourceType.GROUP, "readers", AclOperation.READ),
    # Everything under pay- (prefixed), but a deny of READ on pay-secret wins.
    binding(ResourceType.TOPIC, "pay-", AclOperation.ALL, pattern=ResourcePatternType.PREFIXED),
    binding(ResourceType.TOPIC, "pay-secret", AclOperation.READ, AclPermissionType.DENY),
    # audit: read only.
    binding(ResourceType.TOPIC, "audit", AclOperation.READ),
    # One transactional id.
    binding(ResourceType.TRANSACTIONAL_ID, "tx-ok", AclOperation.WRITE),
]


@pytest.fixture
def matrix_broker(broker_factory) -> Any:
    broker = acl_broker(broker_factory)
    create_topics(broker, ["orders", "pay-in", "pay-secret", "audit", "hidden"])
    create_acls(broker, MATRIX_ACLS)
    assert produce(broker, "audit") == [None] * 3
    assert produce(broker, "hidden") == [None] * 3
    end_setup(broker)
    return broker


def test_produce_and_consume_matrix(matrix_broker) -> None:
    broker = matrix_broker
    # WRITE granted (idempotent: InitProducerId passes by WRITE on some topic).
    assert produce(broker, "orders", config={"enable.idempotence": True}) == [None] * 3
    assert produce(broker, "pay-in") == [None] * 3
    assert produce(broker, "pay-secret") == [None] * 3  # the deny is of READ only
    # WRITE not granted: READ implies DESCRIBE only; no ACL at all on hidden.
    for topic in ("audit", "hidden"):
        errors = produce(broker, topic, count=1)
        assert errors[0] is not None and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, errors

    values, error = consume(broker, "orders", "readers", 3)
    assert (values, error) == ([b"m0", b"m1", b"m2"], None)
    values, error = consume(broker, "orders", "strangers", 3)
    assert error == KafkaError.GROUP_AUTHORIZATION_FAILED
    values, error = consume(broker, "audit", "readers", 3)
    assert (values, error) == ([b"m0", b"m1", b"m2"], None)
    values, error = consume(broker, "pay-secret", "readers", 3)
    assert error == KafkaError.TOPIC_AUTHORIZATION_FAILED
    values, error = consume(broker, "hidden", "readers", 3)
    assert error == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_transactions_need_write_on_the_transactional_id(matrix_broker) -> None:
    broker = matrix_broker
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "tx-ok"})
    producer.init_transactions(TIMEOUT)
    producer.begin_transaction()
    producer.produce("orders", b"in-txn")
    producer.commit_transaction(TIMEOUT)
    values, error = consume(broker, "orders", "readers", 1, {"isolation.level": "read_committed"})
    assert (values, error) == ([b"in-txn"], None)
    refused = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "tx-other"})
    with pytest.raises(KafkaException) as e:
        refused.init_transactions(TIMEOUT)
    assert kafka_error(e.value) == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


def test_admin_matrix(matrix_broker) -> None:
    broker = matrix_broker
    client = admin(broker)
    # Metadata of all topics lists only the describable ones.
    listed = set(client.list_topics(timeout=TIMEOUT).topics)
    assert listed == {"orders", "pay-in", "pay-secret", "audit"}
    # CreateTopics: CREATE on the topic (pay- prefixed ALL), not on others.
    results = client.create_topics([NewTopic("pay-new", 1, 1), NewTopic("other", 1, 1)], operation_timeout=TIMEOUT)
    assert results["pay-new"].result() is None
    with pytest.raises(KafkaException) as e:
        results["other"].result()
    assert kafka_error(e.value) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # DeleteTopics: DELETE.
    results = client.delete_topics(["pay-new", "orders"], operation_timeout=TIMEOUT)
    assert results["pay-new"].result() is None
    with pytest.raises(KafkaException) as e:
        results["orders"].result()
    assert kafka_error(e.value) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # The ACL APIs need the cluster.
    response = raw_describe_acls(broker.port)
    assert (response.error_code, response.resources) == (ErrorCode.cluster_authorization_failed, ())
    # DescribeConfigs: DESCRIBE_CONFIGS on the topic (pay- ALL), not on orders.
    from confluent_kafka.admin import ConfigResource

    resources = [ConfigResource("TOPIC", "pay-in"), ConfigResource("TOPIC", "orders")]
    found = client.describe_configs(resources, request_timeout=TIMEOUT)
    results_by_name = {r.name: f for r, f in found.items()}
    assert "retention.ms" in results_by_name["pay-in"].result()
    with pytest.raises(KafkaException) as e:
        results_by_name["orders"].result()
    assert kafka_error(e.value) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # ListGroups without DESCRIBE on the cluster: only describable groups.
    assert consume(broker, "audit", "readers", 3) == ([b"m0", b"m1", b"m2"], None)
    groups = client.list_consumer_groups(request_timeout=TIMEOUT).result()
    assert {g.group_id for g in groups.valid} == {"readers"}


def test_raw_metadata_and_offsets(matrix_broker) -> None:
    """Named topics one may not describe answer TOPIC_AUTHORIZATION_FAILED, whether they
    exist or not; auto-creation needs CREATE; authorized operations are the allowed ones."""
    broker = matrix_broker
    module = request_module(3, 10)
    request = make(
        request_class(3, 10),
        topics=tuple(make(module.MetadataRequestTopic, name=n, topic_id=None)
                     for n in ("orders", "hidden", "nonexistent", "pay-auto")),
        allow_auto_topic_creation=True,
        include_topic_authorized_operations=True,
        include_cluster_authorized_operations=True,
    )
    with RawClient(broker.port) as client:
        response = client.send(request)
    by_name = {t.name: t for t in response.topics}
    assert by_name["orders"].error_code == ErrorCode.none
    read, write, describe_op = 3, 4, 8
    assert by_name["orders"].topic_authorized_operations == (1 << read) | (1 << write) | (1 << describe_op)
    assert by_name["hidden"].error_code == ErrorCode.topic_authorization_failed
    assert by_name["nonexistent"].error_code == ErrorCode.topic_authorization_failed
    # pay-auto: DESCRIBE and CREATE by the prefixed ALL: created.
    assert by_name["pay-auto"].error_code in (ErrorCode.none, ErrorCode.leader_not_available)
    assert response.cluster_authorized_operations == 0  # no DESCRIBE on the cluster: none
    # OffsetCommit: READ on the group, then on each topic.
    module = request_module(8, 8)
    commit = make(
        request_class(8, 8), group_id="strangers", generation_id_or_member_epoch=-1, member_id="",
        group_instance_id=None, retention_time_ms=-1,
        topics=(make(module.OffsetCommitRequestTopic, name="orders", partitions=(
            make(module.OffsetCommitRequestPartition, partition_index=0, committed_offset=1,
                 committed_leader_epoch=-1, committed_metadata=""),)),),
    )
    with RawClient(broker.port) as client:
        response = client.send(commit)
    assert response.topics[0].partitions[0].error_code == ErrorCode.group_authorization_failed


def test_a_host_deny_overrides_a_prefixed_allow(matrix_broker) -> None:
    """A DENY of WRITE from 127.0.0.1 on the pay- prefix beats the prefixed ALL."""
    broker = matrix_broker
    assert produce(broker, "pay-in") == [None] * 3
    # ANONYMOUS may not alter ACLs now: back to the setup phase to add the deny.
    broker.overrides["super.users"] = ANON
    broker.restart()
    deny = binding(ResourceType.TOPIC, "pay-", AclOperation.WRITE, AclPermissionType.DENY,
                   pattern=ResourcePatternType.PREFIXED, host="127.0.0.1")
    create_acls(broker, [deny])
    end_setup(broker)
    errors = produce(broker, "pay-in", count=1)
    assert errors[0] is not None and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # READ is still allowed (the deny names WRITE).
    assert consume(broker, "pay-in", "readers", 3) == ([b"m0", b"m1", b"m2"], None)


JAVA_CLIENT = r"""
import java.time.Duration;
import java.util.*;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.serialization.*;

public class Acls {
    static String produce(String bootstrap, String topic) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("max.block.ms", "15000");
        p.put("delivery.timeout.ms", "15000");
        p.put("request.timeout.ms", "10000");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            producer.send(new ProducerRecord<>(topic, "k", "v")).get();
            return "ok";
        } catch (ExecutionException e) {
            return e.getCause().getClass().getSimpleName();
        } catch (Exception e) {
            return e.getClass().getSimpleName();
        }
    }

    static String consume(String bootstrap, String topic, String group) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("group.id", group);
        p.put("auto.offset.reset", "earliest");
        p.put("key.deserializer", StringDeserializer.class.getName());
        p.put("value.deserializer", StringDeserializer.class.getName());
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(p)) {
            consumer.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 20000;
            while (System.currentTimeMillis() < deadline) {
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(500));
                if (!records.isEmpty()) {
                    consumer.commitSync();
                    return "ok " + records.count();
                }
            }
            return "timeout";
        } catch (Exception e) {
            return e.getClass().getSimpleName();
        }
    }

    public static void main(String[] args) {
        String b = args[0];
        System.out.println("produce-orders " + produce(b, "orders"));
        System.out.println("produce-audit " + produce(b, "audit"));
        System.out.println("consume-orders-readers " + consume(b, "orders", "readers"));
        System.out.println("consume-orders-strangers " + consume(b, "orders", "strangers"));
        System.out.println("consume-secret-readers " + consume(b, "pay-secret", "readers"));
    }
}
"""


def test_java_client_matrix(matrix_broker, tmp_path: Path) -> None:
    error = install_java()
    if error is not None:
        pytest.fail(f"cannot install the Java client: {error}")
    source = tmp_path / "Acls.java"
    source.write_text(JAVA_CLIENT)
    result = subprocess.run(
        ["java", "-XX:+UseSerialGC", "-Xmx256m", "-cp", java_classpath(), str(source), matrix_broker.bootstrap],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line and "-" in line.split(" ")[0])
    assert lines["produce-orders"] == "ok"
    assert lines["produce-audit"] == "TopicAuthorizationException"
    assert lines["consume-orders-readers"].startswith("ok")
    assert lines["consume-orders-strangers"] == "GroupAuthorizationException"
    assert lines["consume-secret-readers"] == "TopicAuthorizationException"



# SASL PLAIN users: admin (super user), alice (granted), bob (nothing).


@pytest.fixture
def sasl_broker(broker_factory, tmp_path: Path) -> tuple[Any, Any]:
    """(broker, settings of a user): PLAINTEXT (ANONYMOUS) and SASL_PLAINTEXT with PLAIN."""
    from conftest import free_port

    broker = acl_broker(broker_factory, setup=False, **{"super.users": "User:admin"})
    broker.stop()
    sasl_port = free_port()
    broker.overrides.update({
        "listeners": f"PLAINTEXT://127.0.0.1:{broker.port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}",
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": plain_jaas(PLAIN_USERS),
    })
    broker.start()

    def user(name: str) -> dict[str, Any]:
        return {
            "bootstrap.servers": f"127.0.0.1:{sasl_port}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": name, "sasl.password": PLAIN_USERS[name],
        }

    return broker, user


def test_sasl_users(sasl_broker) -> None:
    broker, user = sasl_broker
    admin_conf = user("admin")
    create_topics(broker, ["shared"], admin_conf)
    alice = "User:alice"
    create_acls(broker, [
        binding(ResourceType.TOPIC, "shared", AclOperation.WRITE, principal=alice),
        binding(ResourceType.TOPIC, "shared", AclOperation.READ, principal=alice),
        binding(ResourceType.GROUP, "team", AclOperation.READ, principal=alice),
    ], admin_conf)
    assert produce(broker, "shared", config=user("alice")) == [None] * 3
    errors = produce(broker, "shared", count=1, config=user("bob"))
    assert errors[0] is not None and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # ANONYMOUS (PLAINTEXT) has no ACL either.
    errors = produce(broker, "shared", count=1)
    assert errors[0] is not None and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert consume(broker, "shared", "team", 3, user("alice")) == ([b"m0", b"m1", b"m2"], None)
    assert consume(broker, "shared", "team", 3, user("bob"))[1] == KafkaError.GROUP_AUTHORIZATION_FAILED
    # Only the super user may see the ACLs.
    assert raw_describe_acls(broker.port).error_code == ErrorCode.cluster_authorization_failed
    client = admin(broker, admin_conf)
    assert len(client.describe_acls(ALL_ACLS, request_timeout=TIMEOUT).result()) == 3
    # A deny from alice's host wins over her allow, at once (the index follows the store).
    create_acls(broker, [binding(ResourceType.TOPIC, "shared", AclOperation.READ, AclPermissionType.DENY,
                                 principal=alice, host="127.0.0.1")], admin_conf)
    assert produce(broker, "shared", count=1, config=user("alice")) == [None]  # WRITE stays
    assert consume(broker, "shared", "team", 1, user("alice"))[1] == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # And it all holds after a restart.
    broker.restart()
    assert len(admin(broker, admin_conf).describe_acls(ALL_ACLS, request_timeout=TIMEOUT).result()) == 4
    errors = produce(broker, "shared", count=1, config=user("bob"))
    assert errors[0] is not None and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
