"""DescribeUserScramCredentials (50) and AlterUserScramCredentials (51) against a real
broker: confluent-kafka's AdminClient creates and describes credentials, raw kio
requests cover Kafka's error cases, the credentials survive a restart, and a client
logs in with SCRAM on a SASL listener with a credential made through the API."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i32
from raw_client import RawClient
from security_harness import Certificates, SecureListeners

from kwire.entity_configs import ENTITY_CONFIGS_FILE
from kwire.protocol.messages import make, request_class, request_module
from kwire.security.scram import ScramCredential, salted_password

TIMEOUT = 20
SHA256, SHA512 = 1, 2


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": str(TIMEOUT * 1000)})


def stored(broker: Any) -> dict[str, dict[str, str]]:
    path = broker.data_dir / ENTITY_CONFIGS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def describe(port: int, users: list[str] | None) -> Any:
    module = request_module(50, 0)
    request = make(
        request_class(50, 0),
        users=None if users is None else tuple(make(module.UserName, name=u) for u in users),
    )
    with RawClient(port) as client:
        return client.send(request)


def describe_results(port: int, users: list[str] | None) -> list[tuple[str, ErrorCode, str | None, list]]:
    response = describe(port, users)
    assert response.error_code == ErrorCode.none, response.error_message
    return [
        (r.user, r.error_code, r.error_message, [(c.mechanism, c.iterations) for c in r.credential_infos])
        for r in response.results
    ]


def upsertion(name: str, mechanism: int, password: str = "secret", iterations: int = 4096,
              salt: bytes = b"0123456789abcdef") -> tuple:
    return ("upsert", name, mechanism, iterations, salt, password)


def alter(port: int, *changes: tuple) -> list[tuple[str, ErrorCode, str | None]]:
    """changes: ("delete", name, mechanism) or upsertion(...)."""
    module = request_module(51, 0)
    deletions, upsertions = [], []
    for change in changes:
        if change[0] == "delete":
            deletions.append(make(module.ScramCredentialDeletion, name=change[1], mechanism=i8(change[2])))
        else:
            _, name, mechanism, iterations, salt, password = change
            hash_mechanism = "SCRAM-SHA-512" if mechanism == SHA512 else "SCRAM-SHA-256"
            salted = salted_password(hash_mechanism, password, salt, max(iterations, 1))
            upsertions.append(make(module.ScramCredentialUpsertion, name=name, mechanism=i8(mechanism),
                                   iterations=i32(iterations), salt=salt, salted_password=salted))
    request = make(request_class(51, 0), deletions=tuple(deletions), upsertions=tuple(upsertions))
    with RawClient(port) as client:
        response = client.send(request)
    return [(r.user, r.error_code, r.error_message) for r in response.results]


def test_admin_client_creates_describes_and_deletes(broker) -> None:
    client = admin(broker.bootstrap)
    futures = client.alter_user_scram_credentials([
        UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), b"alice-pw"),
        UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"alice-pw"),
        UserScramCredentialUpsertion("bob", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 10000), b"bob-pw"),
    ])
    for future in futures.values():
        assert future.result(TIMEOUT) is None

    described = client.describe_user_scram_credentials(["alice", "bob"])
    infos = {
        user: sorted((i.mechanism, i.iterations) for i in f.result(TIMEOUT).scram_credential_infos)
        for user, f in described.items()
    }
    assert infos == {
        "alice": [(ScramMechanism.SCRAM_SHA_256, 8192), (ScramMechanism.SCRAM_SHA_512, 4096)],
        "bob": [(ScramMechanism.SCRAM_SHA_512, 10000)],
    }
    everyone = client.describe_user_scram_credentials().result(TIMEOUT)
    assert sorted(everyone) == ["alice", "bob"]

    # The broker derived the keys from the client's salted password: the same keys a
    # credential made from the password itself, with the stored salt, has.
    for user, mechanism, password in [("alice", "SCRAM-SHA-256", "alice-pw"), ("bob", "SCRAM-SHA-512", "bob-pw")]:
        credential = ScramCredential.parse(stored(broker)[f"users/{user}"][mechanism])
        assert credential == ScramCredential.from_password(mechanism, password, credential.iterations,
                                                           credential.salt)

    deleted = client.alter_user_scram_credentials(
        [UserScramCredentialDeletion("alice", ScramMechanism.SCRAM_SHA_256)]
    )
    assert deleted["alice"].result(TIMEOUT) is None
    assert describe_results(broker.port, ["alice"]) == [("alice", ErrorCode.none, None, [(SHA512, 4096)])]
    missing = client.describe_user_scram_credentials(["carol"])["carol"]
    with pytest.raises(KafkaException) as failure:
        missing.result(TIMEOUT)
    assert failure.value.args[0].code() == ErrorCode.resource_not_found.value


def test_describe_errors(broker) -> None:
    port = broker.port
    assert alter(port, upsertion("alice", SHA256)) == [("alice", ErrorCode.none, None)]
    assert describe_results(port, None) == [("alice", ErrorCode.none, None, [(SHA256, 4096)])]
    assert describe_results(port, []) == [("alice", ErrorCode.none, None, [(SHA256, 4096)])]
    assert describe_results(port, ["alice", "nobody", "", "twice", "twice"]) == [
        ("alice", ErrorCode.none, None, [(SHA256, 4096)]),
        ("nobody", ErrorCode.resource_not_found,
         "Attempt to describe a user credential that does not exist: nobody", []),
        ("", ErrorCode.resource_not_found, "Username must not be empty", []),
        ("twice", ErrorCode.duplicate_resource,
         "Cannot describe SCRAM credentials for the same user twice in a single request: twice", []),
    ]


def test_alter_errors(broker) -> None:
    port = broker.port
    assert alter(port, upsertion("alice", SHA256), upsertion("bob", SHA512)) == [
        ("alice", ErrorCode.none, None), ("bob", ErrorCode.none, None),
    ]
    before = stored(broker)
    assert alter(port, upsertion("", SHA256)) == [("", ErrorCode.unacceptable_credential, "Username must not be empty")]
    assert alter(port, upsertion("carol", 3)) == [("carol", ErrorCode.unsupported_sasl_mechanism, "Unknown SCRAM mechanism")]
    assert alter(port, ("delete", "alice", 0)) == [("alice", ErrorCode.unsupported_sasl_mechanism, "Unknown SCRAM mechanism")]
    assert alter(port, upsertion("carol", SHA256, iterations=4095)) == [
        ("carol", ErrorCode.unacceptable_credential, "Too few iterations")
    ]
    assert alter(port, upsertion("carol", SHA512, iterations=16385)) == [
        ("carol", ErrorCode.unacceptable_credential, "Too many iterations")
    ]
    assert alter(port, ("delete", "bob", SHA256)) == [
        ("bob", ErrorCode.resource_not_found, "Attempt to delete a user credential that does not exist")
    ]
    twice = "A user credential cannot be altered twice in the same request"
    assert alter(port, ("delete", "alice", SHA256), upsertion("alice", SHA256, password="new")) == [
        ("alice", ErrorCode.duplicate_resource, twice)
    ]
    assert alter(port, upsertion("bob", SHA512, password="x"), upsertion("bob", SHA512, password="y")) == [
        ("bob", ErrorCode.duplicate_resource, twice)
    ]
    assert stored(broker) == before  # nothing of the refused requests was written
    # Errors of some users leave the others' changes whole (Kafka answers per user).
    assert sorted(alter(port, ("delete", "alice", SHA256), upsertion("alice", SHA512, iterations=5000),
                        upsertion("bob", SHA512, iterations=1))) == [
        ("alice", ErrorCode.none, None), ("bob", ErrorCode.unacceptable_credential, "Too few iterations"),
    ]
    assert describe_results(port, ["alice", "bob"]) == [
        ("alice", ErrorCode.none, None, [(SHA512, 5000)]),
        ("bob", ErrorCode.none, None, [(SHA512, 4096)]),
    ]
    # Deleting the last credential leaves no entity behind.
    assert alter(port, ("delete", "alice", SHA512)) == [("alice", ErrorCode.none, None)]
    assert "users/alice" not in stored(broker)
    assert describe_results(port, None) == [("bob", ErrorCode.none, None, [(SHA512, 4096)])]


def test_cluster_authorization(broker_factory) -> None:
    denied = broker_factory({"authorizer.class.name": "kafka.security.authorizer.AclAuthorizer"})
    response = describe(denied.port, ["alice", "alice"])
    assert response.error_code == ErrorCode.cluster_authorization_failed
    assert [(r.user, r.error_code) for r in response.results] == [("alice", ErrorCode.cluster_authorization_failed)]
    # One result per user named (Kafka's is a set: no order).
    assert sorted(alter(denied.port, upsertion("alice", SHA256), ("delete", "bob", SHA256),
                        upsertion("bob", SHA512))) == [
        ("alice", ErrorCode.cluster_authorization_failed, "Cluster authorization failed."),
        ("bob", ErrorCode.cluster_authorization_failed, "Cluster authorization failed."),
    ]
    assert stored(denied) == {}
    allowed = broker_factory({"authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
                              "super.users": "User:ANONYMOUS"}, name="super")
    assert alter(allowed.port, upsertion("alice", SHA256)) == [("alice", ErrorCode.none, None)]
    assert describe_results(allowed.port, ["alice"]) == [("alice", ErrorCode.none, None, [(SHA256, 4096)])]


def _metadata(conf: dict[str, str]) -> None:
    producer = Producer({**conf, "message.timeout.ms": str(TIMEOUT * 1000)})
    producer.list_topics(timeout=TIMEOUT)


def test_credentials_survive_restart_and_log_in(broker_factory, tmp_path: Path) -> None:
    broker = broker_factory({})
    listeners = SecureListeners(Certificates(tmp_path / "certs"))
    broker.stop()
    broker.overrides.update(listeners.overrides(broker.port))
    broker.start()
    client = admin(broker.bootstrap)
    result = client.alter_user_scram_credentials([
        UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"carol-pw"),
    ])
    assert result["carol"].result(TIMEOUT) is None

    broker.stop()
    broker.start()
    assert describe_results(broker.port, None) == [("carol", ErrorCode.none, None, [(SHA512, 4096)])]
    for protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        _metadata(listeners.confluent(protocol, "SCRAM-SHA-512", "carol", "carol-pw"))
    # A wrong password, the wrong mechanism and an unknown user are all refused.
    for mechanism, user, password in [("SCRAM-SHA-512", "carol", "nope"), ("SCRAM-SHA-256", "carol", "carol-pw"),
                                      ("SCRAM-SHA-512", "dave", "carol-pw")]:
        errors: list[KafkaError] = []
        producer = Producer({**listeners.confluent("SASL_PLAINTEXT", mechanism, user, password),
                             "error_cb": errors.append})
        deadline = time.monotonic() + TIMEOUT
        while not errors and time.monotonic() < deadline:
            producer.poll(0.1)
        assert errors and errors[0].code() == KafkaError._AUTHENTICATION, errors
        assert "Authentication failed during authentication due to invalid credentials with SASL mechanism " \
            f"{mechanism}" in errors[0].str(), errors[0].str()
