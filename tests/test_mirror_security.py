"""`kwire mirror` with per-cluster client settings in MirrorMaker 2's Java names: a source
that only a SASL_PLAINTEXT listener with PLAIN opens to the mirror (`a.security.protocol`,
`a.sasl.mechanism`, `a.sasl.jaas.config`), and ACLs that let the mirror's user read the topic.
A wrong password is waited on and logged, nothing copied; the right one copies everything.
Real kwire brokers and the real mirror process."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from security_harness import plain_jaas

from kwire.testing import Broker, Mirror, mirror_properties

TIMEOUT = 60.0
USERS = {"admin": "admin-secret", "mirror": "mirror-secret"}
AUTHORIZER = "kafka.security.authorizer.AclAuthorizer"


def sasl_settings(user: str, password: str) -> dict[str, str]:
    return {
        "a.security.protocol": "SASL_PLAINTEXT",
        "a.sasl.mechanism": "PLAIN",
        "a.sasl.jaas.config": "org.apache.kafka.common.security.plain.PlainLoginModule "
        f'required username="{user}" password="{password}";',
    }


def admin_config(bootstrap: str) -> dict[str, str]:
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "admin",
        "sasl.password": USERS["admin"],
    }


def target_records(bootstrap: str, topic: str, partitions: int, expected: int) -> list[bytes]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(values) < expected and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is None:
                    values.append(message.value())
    finally:
        consumer.close()
    return values


def test_mirror_logs_in_with_cluster_prefixed_sasl_settings(tmp_path):
    source_config = {
        "listeners": "SASL_PLAINTEXT://127.0.0.1:0",
        "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": plain_jaas(USERS),
        "authorizer.class.name": AUTHORIZER,
        "super.users": "User:admin",
    }
    with Broker(source_config) as a, Broker() as b:
        admin = AdminClient(admin_config(a.bootstrap))
        admin.create_topics([NewTopic("secret", 2, 1)])["secret"].result(TIMEOUT)
        # What MM2's source side needs: read and describe the topics and their configs,
        # write and create its offset-syncs topic, describe groups and their offsets.
        bindings = [
            AclBinding(kind, name, pattern, "User:mirror", "*", operation, AclPermissionType.ALLOW)
            for kind, name, pattern, operation in (
                (ResourceType.TOPIC, "*", ResourcePatternType.LITERAL, AclOperation.ALL),
                (ResourceType.GROUP, "*", ResourcePatternType.LITERAL, AclOperation.ALL),
                (
                    ResourceType.BROKER,
                    "kafka-cluster",
                    ResourcePatternType.LITERAL,
                    AclOperation.ALL,
                ),
            )
        ]
        for future in admin.create_acls(bindings).values():
            future.result(TIMEOUT)
        producer = Producer(admin_config(a.bootstrap))
        for i in range(2000):
            producer.produce("secret", f"v{i}".encode(), partition=i % 2)
        assert producer.flush(TIMEOUT) == 0

        # A wrong password: the mirror says it waits for the cluster, with the broker's
        # reason, copies nothing, and stops cleanly.
        wrong = Mirror(
            mirror_properties({"a": a, "b": b}, **sasl_settings("mirror", "not-it")),
            directory=tmp_path / "wrong",
        )
        wrong.start(wait=False)
        deadline = time.monotonic() + TIMEOUT
        while "waiting for cluster a" not in wrong.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = wrong.log_text()
        assert "waiting for cluster a" in log, log
        assert "SASL authentication error: Authentication failed" in log, log
        assert wrong.stop() == 0
        assert (
            "a.secret"
            not in AdminClient({"bootstrap.servers": b.bootstrap})
            .list_topics(timeout=TIMEOUT)
            .topics
        )

        # The right one: everything copied.
        right = mirror_properties(
            {"a": a, "b": b}, **sasl_settings("mirror", USERS["mirror"]), topics="secret"
        )
        with Mirror(right, directory=tmp_path / "right") as mirror:
            values = target_records(b.bootstrap, "a.secret", 2, 2000)
            assert sorted(values) == sorted(f"v{i}".encode() for i in range(2000))
            assert mirror.stop() == 0
            log = mirror.log_text()
            assert "ERROR" not in log and "Traceback" not in log, log
