"""A secured cluster: brokers replicate to each other over SASL_SSL, clients log in with
SCRAM-SHA-512 on another SASL_SSL listener, and ACLs decide what they may do.

Three real brokers and a real ZooKeeper. acks=all completes only when the followers
have fetched the batch, over the inter-broker listener (TLS, PLAIN as the broker user
`admin`); a SCRAM user created through one broker logs in on every broker; its ACLs hold
on every partition leader.
"""

from __future__ import annotations

import time

from cluster_harness import wait_until
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from conftest import free_port
from security_harness import PLAIN_USERS, Certificates, plain_jaas

TIMEOUT = 30


def test_secured_cluster_replicates_over_sasl_ssl_and_enforces_scram_and_acls(kwire_cluster_factory, tmp_path) -> None:
    certs = Certificates(tmp_path / "certs")
    cluster = kwire_cluster_factory(0, overrides={
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,INTERNAL:SASL_SSL,EXTERNAL:SASL_SSL",
        "inter.broker.listener.name": "INTERNAL",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.internal.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.internal.plain.sasl.jaas.config": plain_jaas(PLAIN_USERS, login="admin"),
        "listener.name.external.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certs.server_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certs.ca_file),
        "authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
        # The brokers' own user, and PLAINTEXT (the harness's readiness checks, the setup).
        "super.users": "User:admin;User:ANONYMOUS",
        "default.replication.factor": "3",
        "offsets.topic.replication.factor": "3",
        "min.insync.replicas": "2",
    })
    external: dict[int, int] = {}
    for _ in range(3):
        broker = cluster.add_broker(start=False)
        external_port = free_port()
        broker.overrides["listeners"] = (
            f"PLAINTEXT://127.0.0.1:{broker.port},INTERNAL://127.0.0.1:{free_port()},"
            f"EXTERNAL://127.0.0.1:{external_port}"
        )
        external[int(broker.overrides["broker.id"])] = external_port
    cluster.start()

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    upsert = UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"carol-pw")
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(TIMEOUT)
    for future in admin.create_topics([NewTopic("orders", 3)], operation_timeout=TIMEOUT).values():
        future.result(TIMEOUT)
    acls = [
        AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:carol", "*",
                   AclOperation.WRITE, AclPermissionType.ALLOW),
        AclBinding(ResourceType.TOPIC, "ord", ResourcePatternType.PREFIXED, "User:carol", "*",
                   AclOperation.READ, AclPermissionType.ALLOW),
        AclBinding(ResourceType.GROUP, "carol-", ResourcePatternType.PREFIXED, "User:carol", "*",
                   AclOperation.READ, AclPermissionType.ALLOW),
    ]
    for future in admin.create_acls(acls).values():
        future.result(TIMEOUT)

    def carol(port: int | None = None, **extra: object) -> dict[str, object]:
        ports = [port] if port is not None else list(external.values())
        return {
            "bootstrap.servers": ",".join(f"127.0.0.1:{p}" for p in ports),
            "security.protocol": "SASL_SSL", "ssl.ca.location": str(certs.ca_file),
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "carol", "sasl.password": "carol-pw",
            **extra,
        }

    # The credential reached every broker: each one's EXTERNAL listener lets carol in.
    for broker_id, port in external.items():
        def answers(port: int = port) -> bool:
            errors: list[KafkaError] = []
            probe = AdminClient(carol(port, error_cb=errors.append))
            probe.list_topics(timeout=5)
            return not errors
        wait_until(answers, TIMEOUT, message=f"carol logs in on broker {broker_id}")

    # acks=all: answered once the ISR (3 brokers, fetching over SASL_SSL) has each batch.
    delivered: list[object] = []
    producer = Producer(carol(acks="all", **{"message.timeout.ms": TIMEOUT * 1000}))
    for i in range(300):
        producer.produce("orders", f"order-{i}".encode(), key=str(i).encode(),
                         on_delivery=lambda err, msg: delivered.append(err or msg.partition()))
    assert producer.flush(TIMEOUT) == 0
    assert len(delivered) == 300 and all(isinstance(d, int) for d in delivered), delivered[:3]
    assert set(delivered) == {0, 1, 2}  # every broker leads one partition and took writes

    # Only what the ACLs allow: no WRITE on another topic (auto-creation refused too).
    refused: list[object] = []
    other = Producer(carol(**{"message.timeout.ms": 10_000, "retries": 0}))
    other.produce("payments", b"x", on_delivery=lambda err, msg: refused.append(err))
    other.flush(TIMEOUT)
    assert refused and refused[0] is not None
    assert refused[0].code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError._MSG_TIMED_OUT), refused

    # Consumed back in a group (READ on the prefixed topic and group patterns).
    consumer = Consumer(carol(**{"group.id": "carol-readers", "auto.offset.reset": "earliest"}))
    consumer.subscribe(["orders"])
    got: set[bytes] = set()
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(got) < 300 and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.add(message.value())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert len(got) == 300
