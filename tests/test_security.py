"""TLS and SASL listeners end to end: real clients, a real broker process, real sockets.

Each failure (a wrong password, an unknown user, a disabled mechanism, an untrusted
or expired certificate, plaintext bytes on a TLS port, a client that stops half-way
through a handshake) ends that connection with a clean error, and the broker keeps
serving everyone else.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from conftest import _recv_exactly
from security_harness import PLAIN_USERS, Certificates, SecureListeners

TIMEOUT = 30


@pytest.fixture
def certs(tmp_path) -> Certificates:
    return Certificates(tmp_path / "certs")


@pytest.fixture
def secure(broker_factory, certs):
    """(broker, listeners): a broker with PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL."""

    def make(**options: object):
        broker = broker_factory({})
        # Restarted with the secure listeners beside its PLAINTEXT one (the factory
        # picks that port and waits on it). Their ports are picked only now: picked
        # before the first start, one was once taken meanwhile (EADDRINUSE in CI).
        broker.stop()
        listeners = SecureListeners(certs, **options)
        broker.overrides.update(listeners.overrides(broker.port))
        broker.start()
        return broker, listeners

    return make


def produce(conf: dict[str, str], topic: str, values: list[bytes]) -> None:
    errors: list[KafkaError] = []
    producer = Producer({**conf, "error_cb": errors.append, "message.timeout.ms": str(TIMEOUT * 1000)})
    delivered: list[object] = []
    for value in values:
        producer.produce(topic, value, on_delivery=lambda err, msg: delivered.append(err or msg))
    assert producer.flush(TIMEOUT) == 0, errors
    assert all(not isinstance(d, KafkaError) for d in delivered), delivered


def consume(conf: dict[str, str], topic: str, expected: int, group: str = "g") -> list[bytes]:
    consumer = Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(got) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append(message.value())
    finally:
        consumer.close()
    return got


def auth_failure(conf: dict[str, str], wait: float = 15.0) -> KafkaError:
    """The first error a producer reports: the failed authentication."""
    errors: list[KafkaError] = []
    producer = Producer({**conf, "error_cb": errors.append})
    deadline = time.monotonic() + wait
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    assert errors, "no error reported"
    return errors[0]


def scram_user(bootstrap: str, user: str, password: str, mechanism: ScramMechanism) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(mechanism, 8192), password.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(TIMEOUT)


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [("SSL", None), ("SASL_PLAINTEXT", "PLAIN"), ("SASL_SSL", "PLAIN"), ("SASL_SSL", "SCRAM-SHA-256"),
     ("SASL_SSL", "SCRAM-SHA-512"), ("SASL_PLAINTEXT", "SCRAM-SHA-512")],
)
def test_produce_and_consume_over_each_protocol(secure, protocol: str, mechanism: str | None) -> None:
    broker, listeners = secure()
    if mechanism and mechanism.startswith("SCRAM"):
        kind = ScramMechanism.SCRAM_SHA_512 if mechanism.endswith("512") else ScramMechanism.SCRAM_SHA_256
        scram_user(broker.bootstrap, "carol", "carol-secret", kind)
        conf = listeners.confluent(protocol, mechanism, "carol", "carol-secret")
    else:
        conf = listeners.confluent(protocol, mechanism or "PLAIN")
    values = [f"m{i}".encode() * 50 for i in range(500)]
    produce(conf, "secure", values)
    assert consume(conf, "secure", len(values)) == values


def test_scram_credentials_survive_a_restart(secure) -> None:
    broker, listeners = secure()
    scram_user(broker.bootstrap, "dave", "dave-secret", ScramMechanism.SCRAM_SHA_512)
    broker.restart()
    produce(listeners.confluent("SASL_SSL", "SCRAM-SHA-512", "dave", "dave-secret"), "after-restart", [b"x"])


@pytest.mark.parametrize(
    ("mechanism", "user", "password"),
    [("PLAIN", "alice", "wrong"), ("PLAIN", "mallory", "x"), ("SCRAM-SHA-512", "erin", "wrong"),
     ("SCRAM-SHA-512", "nobody", "x"), ("SCRAM-SHA-256", "erin", "erin-secret")],
)
def test_failed_authentication_is_a_clean_error(secure, mechanism: str, user: str, password: str) -> None:
    broker, listeners = secure()
    # erin has a SCRAM-SHA-512 credential only: SHA-256 fails for her as a wrong password does.
    scram_user(broker.bootstrap, "erin", "erin-secret", ScramMechanism.SCRAM_SHA_512)
    broker.expect_log("closing connection from")
    error = auth_failure(listeners.confluent("SASL_SSL", mechanism, user, password))
    assert error.code() == KafkaError._AUTHENTICATION, error
    assert "Authentication failed" in error.str() or "authentication" in error.str().lower(), error
    # Everyone else is still served.
    produce(listeners.confluent("SASL_SSL", "PLAIN", "bob"), "still", [b"ok"])


def test_mechanism_not_enabled(secure) -> None:
    broker, listeners = secure(mechanisms="SCRAM-SHA-512")
    error = auth_failure(listeners.confluent("SASL_PLAINTEXT", "PLAIN", "alice"))
    assert error.code() == KafkaError._AUTHENTICATION, error
    assert "SCRAM-SHA-512" in error.str(), error  # the broker says what it enables


def test_untrusted_server_certificate(secure, tmp_path) -> None:
    broker, listeners = secure()
    other = Certificates(tmp_path / "other-ca")
    error = auth_failure(listeners.confluent("SSL", **{"ssl.ca.location": str(other.ca_file)}))
    assert error.code() in (KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN), error
    produce(listeners.confluent("SSL"), "still", [b"ok"])


def test_client_certificates_required(secure, certs) -> None:
    broker, listeners = secure(client_auth="required")
    cert, key = certs.client("alice")
    good = listeners.confluent("SSL", **{"ssl.certificate.location": str(cert), "ssl.key.location": str(key)})
    produce(good, "mtls", [b"with a certificate"])
    broker.expect_log("TLS handshake failed")
    # No certificate, and an expired one: refused at the handshake.
    error = auth_failure(listeners.confluent("SSL"))
    assert error.code() in (KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN), error
    expired_cert, expired_key = certs.client("old", expired=True)
    expired = listeners.confluent(
        "SSL", **{"ssl.certificate.location": str(expired_cert), "ssl.key.location": str(expired_key)}
    )
    error = auth_failure(expired)
    assert error.code() in (KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN), error
    produce(good, "mtls", [b"still served"])


def test_certificate_principal_is_the_subject(broker_factory, certs) -> None:
    """ssl.client.auth=required: the principal is User:<subject DN>, as Kafka prints it."""
    listeners = SecureListeners(certs, client_auth="required")
    broker = broker_factory({})
    broker.stop()
    broker.overrides.update(listeners.overrides(broker.port))
    broker.overrides.update({
        "authorizer.class.name": "kafka.security.authorizer.AclAuthorizer",
        # The PLAINTEXT listener (setup, readiness) is User:ANONYMOUS.
        "super.users": "User:CN=alice,OU=eng,O=acme;User:ANONYMOUS",
    })
    broker.start()
    alice_cert, alice_key = certs.client("alice")
    bob_cert, bob_key = certs.client("bob")
    alice = listeners.confluent("SSL", **{"ssl.certificate.location": str(alice_cert), "ssl.key.location": str(alice_key)})
    bob = listeners.confluent("SSL", **{"ssl.certificate.location": str(bob_cert), "ssl.key.location": str(bob_key)})
    produce(alice, "by-alice", [b"a"])
    errors: list[object] = []
    producer = Producer({**bob, "message.timeout.ms": "5000"})
    producer.produce("by-alice", b"b", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(TIMEOUT)
    assert errors and errors[0] is not None
    assert errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, errors


def _api_versions_frame() -> bytes:
    body = struct.pack(">hhih", 18, 0, 1, 4) + b"test"
    return struct.pack(">i", len(body)) + body


def test_plaintext_bytes_on_a_tls_port(secure) -> None:
    broker, listeners = secure()
    broker.expect_log("TLS handshake failed")
    with socket.create_connection(("127.0.0.1", listeners.ports["SSL"]), timeout=TIMEOUT) as s:
        s.sendall(_api_versions_frame())
        # Read to the close (a TLS alert may come first): the broker hangs up, it does
        # not wait; a hang fails here with the socket's timeout.
        while s.recv(1024):
            pass
    produce(listeners.confluent("SSL"), "still", [b"ok"])


def test_client_stopping_mid_handshake_blocks_nobody(secure) -> None:
    broker, listeners = secure()
    stalled = []
    for protocol in ("SSL", "SASL_SSL"):
        s = socket.create_connection(("127.0.0.1", listeners.ports[protocol]), timeout=TIMEOUT)
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
        stalled.append(s)
    # SASL: a client that sends its handshake and never the authentication.
    s = socket.create_connection(("127.0.0.1", listeners.ports["SASL_PLAINTEXT"]), timeout=TIMEOUT)
    body = struct.pack(">hhih", 17, 1, 7, 4) + b"test" + struct.pack(">h", 5) + b"PLAIN"
    s.sendall(struct.pack(">i", len(body)) + body)
    stalled.append(s)
    try:
        for protocol, mechanism in (("SSL", None), ("SASL_PLAINTEXT", "PLAIN"), ("SASL_SSL", "PLAIN")):
            produce(listeners.confluent(protocol, mechanism or "PLAIN"), "meanwhile", [b"ok"])
    finally:
        for s in stalled:
            s.close()


def test_unauthenticated_requests_close_the_connection(secure) -> None:
    """On a SASL listener anything but ApiVersions and SaslHandshake before
    authentication closes the connection (Kafka's IllegalSaslStateException)."""
    broker, listeners = secure()
    broker.expect_log("during SASL handshake")
    with socket.create_connection(("127.0.0.1", listeners.ports["SASL_PLAINTEXT"]), timeout=TIMEOUT) as s:
        s.sendall(_api_versions_frame())
        size = struct.unpack(">i", s.recv(4))[0]
        assert size > 0
        while size > 0:
            size -= len(s.recv(size))
        metadata = struct.pack(">hhih", 3, 1, 2, 4) + b"test" + struct.pack(">i", -1)
        s.sendall(struct.pack(">i", len(metadata)) + metadata)
        assert s.recv(1024) == b""  # closed, nothing answered


def test_reauthentication_keeps_a_session_alive(secure) -> None:
    """connections.max.reauth.ms (KIP-368): librdkafka re-authenticates on the same
    connection before the session ends, and producing goes on without an error."""
    broker, listeners = secure()
    broker.stop()
    broker.overrides["connections.max.reauth.ms"] = "2000"
    broker.start()
    errors: list[KafkaError] = []
    producer = Producer({**listeners.confluent("SASL_SSL", "PLAIN", "alice"), "error_cb": errors.append})
    delivered = []
    deadline = time.monotonic() + 7
    while time.monotonic() < deadline:
        producer.produce("reauth", b"v", on_delivery=lambda err, msg: delivered.append(err))
        producer.poll(0.1)
    assert producer.flush(TIMEOUT) == 0
    assert delivered and all(e is None for e in delivered), [e for e in delivered if e][:3]
    assert not errors, errors


def test_expired_session_without_reauthentication_is_closed(secure) -> None:
    """A client that does not re-authenticate is disconnected at its first request
    after the session ends (Kafka closes expired channels)."""
    broker, listeners = secure()
    broker.stop()
    broker.overrides["connections.max.reauth.ms"] = "1000"
    broker.start()
    broker.expect_log("expired")
    from kwire.security.sasl import new_sasl_client

    with socket.create_connection(("127.0.0.1", listeners.ports["SASL_PLAINTEXT"]), timeout=TIMEOUT) as s:
        def exchange(api_key: int, version: int, payload: bytes) -> bytes:
            body = struct.pack(">hhih", api_key, version, 1, 4) + b"test" + payload
            s.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", _recv_exactly(s, 4))[0]
            return _recv_exactly(s, size)

        answer = exchange(17, 1, struct.pack(">h", 5) + b"PLAIN")
        assert answer[4:6] == b"\x00\x00"  # correlation id, then error code 0
        client = new_sasl_client("PLAIN", "alice", "alice-secret")
        token = client.initial()
        answer = exchange(36, 1, struct.pack(">i", len(token)) + token)
        assert answer[4:6] == b"\x00\x00"
        metadata = struct.pack(">i", -1)
        assert exchange(3, 1, metadata)  # served within the session
        time.sleep(1.3)
        body = struct.pack(">hhih", 3, 1, 3, 4) + b"test" + metadata
        s.sendall(struct.pack(">i", len(body)) + body)
        assert s.recv(1024) == b""


def test_many_tls_clients_at_once(secure) -> None:
    """Handshakes run per connection: 20 TLS clients in parallel all get served."""
    broker, listeners = secure()
    failures: list[BaseException] = []

    def client(i: int) -> None:
        try:
            produce(listeners.confluent("SASL_SSL", "PLAIN", "alice"), "parallel", [f"{i}".encode()])
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
    assert not failures, failures
    assert len(consume(listeners.confluent("SASL_SSL", "PLAIN", "alice"), "parallel", 20)) == 20


def test_tls_context_is_checked_at_start_up(tmp_path, certs) -> None:
    """A keystore that is not a PEM key and chain stops start-up with a clear message."""
    import subprocess
    import sys

    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    result = subprocess.run(
        [sys.executable, "-m", "kwire", "serve", "--override", f"log.dirs={tmp_path / 'd'}",
         "--override", "listeners=SSL://127.0.0.1:0", "--override", "ssl.keystore.type=PEM",
         "--override", f"ssl.keystore.location={bad}"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert result.returncode == 2, result
    assert "ssl.keystore.location" in result.stderr
    assert "Traceback" not in result.stderr


def test_kcat_scram_over_sasl_ssl(secure, tmp_path) -> None:
    """Debian's kcat (librdkafka 2.0.2) sends its SCRAM client nonce twice in the final
    message (fixed in librdkafka 2.6.1); Kafka 3.9 accepts it, and so does kwire."""
    import shutil
    import subprocess

    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        pytest.skip("kcat is not installed (scripts/test-all installs it)")
    broker, listeners = secure()
    scram_user(broker.bootstrap, "kcatuser", "kcat-secret", ScramMechanism.SCRAM_SHA_512)
    conf = listeners.confluent("SASL_SSL", "SCRAM-SHA-512", "kcatuser", "kcat-secret")
    args = [kcat, *[a for k, v in conf.items() for a in ("-X", f"{k}={v}") if k != "bootstrap.servers"],
            "-b", conf["bootstrap.servers"]]
    subprocess.run([*args, "-t", "kcat-topic", "-P", "-K:"], input=b"k1:v1\nk2:v2\n", check=True, timeout=TIMEOUT)
    out = subprocess.run([*args, "-t", "kcat-topic", "-C", "-o", "beginning", "-e", "-q", "-f", "%k=%s\n"],
                         capture_output=True, check=True, timeout=TIMEOUT)
    assert sorted(out.stdout.decode().split()) == ["k1=v1", "k2=v2"]
    broker.expect_log("closing connection from")
    wrong = subprocess.run([*args, "-X", "sasl.password=wrong", "-L", "-m", "5"], capture_output=True, timeout=TIMEOUT)
    assert wrong.returncode != 0
    assert b"invalid credentials with SASL mechanism SCRAM-SHA-512" in wrong.stderr


def test_sasl_handshake_v0_raw_tokens(secure) -> None:
    """SaslHandshake v0: the SASL tokens follow as raw size-prefixed frames, no Kafka
    header (clients before KIP-152); then requests are served as usual."""
    broker, listeners = secure()
    with socket.create_connection(("127.0.0.1", listeners.ports["SASL_PLAINTEXT"]), timeout=TIMEOUT) as s:
        body = struct.pack(">hhih", 17, 0, 1, 4) + b"test" + struct.pack(">h", 5) + b"PLAIN"
        s.sendall(struct.pack(">i", len(body)) + body)
        answer = _recv_exactly(s, struct.unpack(">i", _recv_exactly(s, 4))[0])
        assert answer[4:6] == b"\x00\x00"  # correlation id, then error code 0
        token = b"\0alice\0" + PLAIN_USERS["alice"].encode()
        s.sendall(struct.pack(">i", len(token)) + token)
        assert struct.unpack(">i", _recv_exactly(s, 4))[0] == 0  # PLAIN's empty final token
        metadata = struct.pack(">hhih", 3, 1, 2, 4) + b"test" + struct.pack(">i", -1)
        s.sendall(struct.pack(">i", len(metadata)) + metadata)
        answer = _recv_exactly(s, struct.unpack(">i", _recv_exactly(s, 4))[0])
        assert struct.unpack(">i", answer[:4])[0] == 2
    broker.expect_log("SASL authentication failed")
    with socket.create_connection(("127.0.0.1", listeners.ports["SASL_PLAINTEXT"]), timeout=TIMEOUT) as s:
        body = struct.pack(">hhih", 17, 0, 1, 4) + b"test" + struct.pack(">h", 5) + b"PLAIN"
        s.sendall(struct.pack(">i", len(body)) + body)
        _recv_exactly(s, struct.unpack(">i", _recv_exactly(s, 4))[0])
        token = b"\0alice\0wrong"
        s.sendall(struct.pack(">i", len(token)) + token)
        assert s.recv(16) == b""  # v0 has no error answer: the connection closes
