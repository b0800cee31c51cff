"""The inter-broker client over TLS and SASL, against a real kwire broker process.

One broker (a subprocess) has a PLAINTEXT listener (readiness, SCRAM user set-up), an
SSL, a SASL_PLAINTEXT and a SASL_SSL listener, with certificates of a test CA
(trustme) in PEM files. The SASL_SSL listener gives sessions a 2 s lifetime
(connections.max.reauth.ms), so connections there must re-authenticate to live on.
`inter_broker_security` is checked on configs, and on the broker's own config against
the broker itself: the way a broker of a cluster reaches its peers.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import ssl
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme
from conftest import BrokerProcess, free_port
from kio.schema.alter_user_scram_credentials.v0.request import (
    AlterUserScramCredentialsRequest,
    ScramCredentialUpsertion,
)
from kio.schema.create_topics.v7.request import CreatableTopic, CreateTopicsRequest
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData

from kwire.cluster.broker_client import BrokerClientPool, BrokerConnection, BrokerConnectionError
from kwire.config import BrokerConfig, ConfigError
from kwire.protocol.records import build_batch, iter_records, validate_batches
from kwire.security.client import PLAINTEXT, ClientSecurity, inter_broker_security

TIMEOUT = 10.0
CLIENT_ID = "broker-7"
REAUTH_MS = 2000
USERS = {"admin": "admin-secret", "alice": "alice-secret"}
SCRAM_USER, SCRAM_PASSWORD = "scram-broker", "scram-secret"


def plain_jaas(login: str | None = "admin") -> str:
    options = " ".join(f'user_{name}="{password}"' for name, password in USERS.items())
    if login is not None:
        options = f'username="{login}" password="{USERS[login]}" {options}'
    return f"org.apache.kafka.common.security.plain.PlainLoginModule required {options};"


class Certificates:
    """A test CA, the broker's key and chain in one PEM file (ssl.keystore.type=PEM)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server = self.ca.issue_cert("127.0.0.1", "localhost", common_name="kwire-broker")
        self.keystore = directory / "server.pem"
        self.keystore.write_bytes(server.private_key_pem.bytes() + b"".join(b.bytes() for b in server.cert_chain_pems))
        # A CA the broker's certificate does not come from.
        self.other_ca_file = directory / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(self.other_ca_file))


class SecureBroker:
    def __init__(self, process: BrokerProcess, ports: dict[str, int], certs: Certificates, overrides: dict[str, str]):
        self.process = process
        self.ports = ports
        self.certs = certs
        self.overrides = overrides

    def context(self, cafile: Path | None = None, *, check_hostname: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(cafile or self.certs.ca_file))
        context.check_hostname = check_hostname
        return context


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    base = tmp_path_factory.mktemp("secure")
    certs = Certificates(base / "certs")
    process = BrokerProcess(base / "data")
    ports = {"PLAINTEXT": process.port, **{p: free_port() for p in ("SSL", "SASL_PLAINTEXT", "SASL_SSL")}}
    overrides = {
        "listeners": ",".join(f"{name}://127.0.0.1:{port}" for name, port in ports.items()),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certs.keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certs.ca_file),
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": plain_jaas(),
        "listener.name.sasl_ssl.plain.sasl.jaas.config": plain_jaas(),
        # Sessions on SASL_SSL last 2 s: its connections must re-authenticate (KIP-368).
        "listener.name.sasl_ssl.connections.max.reauth.ms": str(REAUTH_MS),
        "inter.broker.listener.name": "SASL_SSL",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
    }
    process.overrides.update(overrides)
    process.start()
    yield SecureBroker(process, ports, certs, {"log.dirs": str(process.data_dir), **overrides})
    problems = process.teardown_problems()
    if problems:
        pytest.fail("broker teardown check failed:\n" + "\n".join(problems), pytrace=False)


def metadata_request(*topics: str) -> MetadataRequest:
    return MetadataRequest(
        topics=tuple(MetadataRequestTopic(topic_id=None, name=t) for t in topics) if topics else None,
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )


def sasl(protocol: str, broker: SecureBroker, mechanism: str = "PLAIN", user: str = "alice",
         password: str | None = None) -> ClientSecurity:
    return ClientSecurity(
        protocol=protocol,
        ssl_context=broker.context() if protocol.endswith("SSL") else None,
        sasl_mechanism=mechanism,
        username=user,
        password=USERS.get(user, "") if password is None else password,
    )


async def produce_and_fetch(conn: BrokerConnection, topic: str, size: int) -> None:
    """Create `topic`, produce a batch of about `size` random bytes and fetch it back."""
    await conn.negotiate()
    created = await conn.request(19, 7, CreateTopicsRequest(
        topics=(CreatableTopic(name=topic, num_partitions=1, replication_factor=1, assignments=(), configs=()),),
        timeout=datetime.timedelta(seconds=5), validate_only=False,
    ))
    assert [(t.name, t.error_code) for t in created.topics] == [(topic, ErrorCode.none)]
    values = [(b"k%d" % i, os.urandom(size // 16)) for i in range(16)]
    produced = await conn.request(0, 9, ProduceRequest(
        transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=5),
        topic_data=(TopicProduceData(name=topic, partition_data=(
            PartitionProduceData(index=0, records=build_batch(values)),
        )),),
    ))
    (partition,) = produced.responses[0].partition_responses
    assert (partition.error_code, partition.base_offset) == (ErrorCode.none, 0)
    fetched = await conn.request(1, 12, FetchRequest(
        replica_id=-1, max_wait=datetime.timedelta(milliseconds=0), min_bytes=1, max_bytes=4 << 20,
        isolation_level=0, session_id=0, session_epoch=-1, forgotten_topics_data=(), rack_id="",
        topics=(FetchTopic(topic=topic, partitions=(
            FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=4 << 20),
        )),),
    ))
    (data,) = fetched.responses[0].partitions
    assert data.error_code == ErrorCode.none and data.records is not None
    view = memoryview(data.records)
    got = [(r.key, r.value) for h in validate_batches(data.records) for r in iter_records(view[h.position : h.position + h.size])]
    assert got == values


# ---- TLS ------------------------------------------------------------------------------


async def test_ssl_connection_carries_large_answers(secure_broker: SecureBroker) -> None:
    security = ClientSecurity(protocol="SSL", ssl_context=secure_broker.context())
    async with BrokerConnection.open(
        "127.0.0.1", secure_broker.ports["SSL"], client_id=CLIENT_ID, timeout=TIMEOUT, security=security
    ) as conn:
        # A 768 KiB fetch answer spans many TLS records and a frame buffer of its own.
        await produce_and_fetch(conn, "over-tls", 3 << 18)
        assert conn.session_lifetime_ms == 0
    assert conn.closed


async def test_untrusted_server_certificate_fails_the_handshake(secure_broker: SecureBroker) -> None:
    security = ClientSecurity(protocol="SSL", ssl_context=secure_broker.context(secure_broker.certs.other_ca_file))
    with trio.fail_after(TIMEOUT), pytest.raises(BrokerConnectionError, match="TLS handshake .* failed: .*certificate verify failed"):
        async with BrokerConnection.open(
            "127.0.0.1", secure_broker.ports["SSL"], client_id=CLIENT_ID, timeout=TIMEOUT, security=security
        ):
            pass


async def test_host_name_is_checked_against_the_certificate(secure_broker: SecureBroker) -> None:
    """ssl.endpoint.identification.algorithm=https: a certificate that does not name the
    host it was reached by fails the handshake; with the check off it is accepted (its
    chain is still verified). The server is a loopback TLS server whose certificate,
    from the same CA, names only other.example."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    secure_broker.certs.ca.issue_cert("other.example").configure_cert(server_context)
    accepted: list[bool] = []

    async def serve(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            await stream.do_handshake()
            accepted.append(True)
            await stream.receive_some(1)  # until the client closes
        except trio.BrokenResourceError:
            accepted.append(False)

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_ssl_over_tcp, serve, 0, server_context, host="127.0.0.1"))
        port = listener.transport_listener.socket.getsockname()[1]
        checked = ClientSecurity(protocol="SSL", ssl_context=secure_broker.context())
        with trio.fail_after(TIMEOUT), pytest.raises(BrokerConnectionError, match="TLS handshake .* failed: .*match"):
            await BrokerConnection.connect("127.0.0.1", port, client_id=CLIENT_ID, timeout=TIMEOUT, nursery=nursery, security=checked)
        unchecked = ClientSecurity(protocol="SSL", ssl_context=secure_broker.context(check_hostname=False), check_hostname=False)
        with trio.fail_after(TIMEOUT):
            conn = await BrokerConnection.connect(
                "127.0.0.1", port, client_id=CLIENT_ID, timeout=TIMEOUT, nursery=nursery, security=unchecked
            )
            while len(accepted) < 2:
                await trio.sleep(0.01)
        assert accepted == [False, True] and not conn.closed
        conn.close()
        nursery.cancel_scope.cancel()


# ---- SASL -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
async def test_sasl_plain_requests_work(secure_broker: SecureBroker, protocol: str) -> None:
    async with BrokerConnection.open(
        "127.0.0.1", secure_broker.ports[protocol], client_id=CLIENT_ID, timeout=TIMEOUT,
        security=sasl(protocol, secure_broker),
    ) as conn:
        assert conn.api_versions  # negotiated before the SASL handshake
        await produce_and_fetch(conn, f"plain-{protocol.lower()}", 64 << 10)
        # SASL_SSL sessions have a lifetime (connections.max.reauth.ms), SASL_PLAINTEXT's none.
        expected = REAUTH_MS if protocol == "SASL_SSL" else 0
        assert expected - 500 <= conn.session_lifetime_ms <= expected


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
async def test_wrong_password_fails_with_the_brokers_message(secure_broker: SecureBroker, protocol: str) -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(
        BrokerConnectionError, match=r"SASL authentication of alice \(PLAIN\) to .* failed \(SASL_AUTHENTICATION_FAILED\): .+"
    ) as failure:
        async with BrokerConnection.open(
            "127.0.0.1", secure_broker.ports[protocol], client_id=CLIENT_ID, timeout=TIMEOUT,
            security=sasl(protocol, secure_broker, password="not-her-password"),
        ):
            pass
    assert "None" not in str(failure.value)  # the broker said why


async def test_mechanism_not_enabled_is_refused(secure_broker: SecureBroker) -> None:
    with trio.fail_after(TIMEOUT), pytest.raises(
        BrokerConnectionError, match="UNSUPPORTED_SASL_MECHANISM.*SCRAM-SHA-256 refused, the broker enables PLAIN, SCRAM-SHA-512"
    ):
        async with BrokerConnection.open(
            "127.0.0.1", secure_broker.ports["SASL_PLAINTEXT"], client_id=CLIENT_ID, timeout=TIMEOUT,
            security=sasl("SASL_PLAINTEXT", secure_broker, mechanism="SCRAM-SHA-256"),
        ):
            pass


async def test_scram_sha_512_after_alter_user_scram_credentials(secure_broker: SecureBroker) -> None:
    salt, iterations = os.urandom(24), 4096
    upsertion = ScramCredentialUpsertion(
        name=SCRAM_USER, mechanism=2, iterations=iterations, salt=salt,  # 2: SCRAM-SHA-512
        salted_password=hashlib.pbkdf2_hmac("sha512", SCRAM_PASSWORD.encode(), salt, iterations),
    )
    async with BrokerConnection.open(
        "127.0.0.1", secure_broker.ports["PLAINTEXT"], client_id=CLIENT_ID, timeout=TIMEOUT
    ) as admin:
        altered = await admin.request(51, 0, AlterUserScramCredentialsRequest(deletions=(), upsertions=(upsertion,)))
        assert [(r.user, r.error_code) for r in altered.results] == [(SCRAM_USER, ErrorCode.none)]
    for protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        security = sasl(protocol, secure_broker, mechanism="SCRAM-SHA-512", user=SCRAM_USER, password=SCRAM_PASSWORD)
        async with BrokerConnection.open(
            "127.0.0.1", secure_broker.ports[protocol], client_id=CLIENT_ID, timeout=TIMEOUT, security=security
        ) as conn:
            metadata = await conn.request(3, 12, metadata_request())
            assert metadata.brokers
    wrong = sasl("SASL_SSL", secure_broker, mechanism="SCRAM-SHA-512", user=SCRAM_USER, password="nope")
    with trio.fail_after(TIMEOUT), pytest.raises(BrokerConnectionError, match="SASL_AUTHENTICATION_FAILED"):
        async with BrokerConnection.open(
            "127.0.0.1", secure_broker.ports["SASL_SSL"], client_id=CLIENT_ID, timeout=TIMEOUT, security=wrong
        ):
            pass


async def test_reauthentication_keeps_a_connection_working(secure_broker: SecureBroker) -> None:
    """Sessions last 2 s: 6 s of requests on one connection need two or three
    re-authentications in place; the broker closes a connection whose session ended."""
    async with BrokerConnection.open(
        "127.0.0.1", secure_broker.ports["SASL_SSL"], client_id=CLIENT_ID, timeout=TIMEOUT,
        security=sasl("SASL_SSL", secure_broker),
    ) as conn:
        answered = 0
        end = trio.current_time() + 6.0
        while trio.current_time() < end:
            metadata = await conn.request(3, 12, metadata_request())
            assert metadata.brokers
            answered += 1
            await trio.sleep(0.05)
        assert not conn.closed
        assert conn.reauthentications >= 2
        assert answered > 50


# ---- the pool, and the broker's own inter-broker security -------------------------------


async def test_pool_with_the_brokers_own_inter_broker_security(secure_broker: SecureBroker) -> None:
    """The broker's config says SASL_SSL with PLAIN as admin: what a peer broker with
    this config would use reaches the broker, through the pool."""
    security = inter_broker_security(BrokerConfig(secure_broker.overrides))
    assert (security.protocol, security.sasl_mechanism, security.username) == ("SASL_SSL", "PLAIN", "admin")
    assert security.check_hostname and security.ssl_context is not None
    port = secure_broker.ports["SASL_SSL"]
    async with BrokerClientPool(lambda _id: ("127.0.0.1", port), client_id=CLIENT_ID, security=security) as pool:
        metadata = await pool.request(0, 3, 12, metadata_request(), timeout=TIMEOUT)
        assert metadata.brokers
        conn = pool.connected(0)
        assert conn is not None and conn.session_lifetime_ms > 0 and conn.api_versions


# ---- inter_broker_security on configs ---------------------------------------------------


def sasl_config(tmp_path: Path, protocol: str = "SASL_SSL", **extra: str) -> BrokerConfig:
    certs = Certificates(tmp_path)
    values = {
        "listeners": f"{protocol}://127.0.0.1:9093",
        "inter.broker.listener.name": protocol,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(certs.keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certs.ca_file),
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
        f"listener.name.{protocol.lower()}.plain.sasl.jaas.config": plain_jaas(),
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        **extra,
    }
    return BrokerConfig({k: v for k, v in values.items() if v is not None})


def test_plaintext_by_default() -> None:
    assert inter_broker_security(BrokerConfig({})) == PLAINTEXT
    assert PLAINTEXT.protocol == "PLAINTEXT" and not PLAINTEXT.tls and not PLAINTEXT.sasl


def test_sasl_ssl_from_the_listener_and_its_jaas_config(tmp_path: Path) -> None:
    security = inter_broker_security(sasl_config(tmp_path))
    assert (security.protocol, security.sasl_mechanism, security.username, security.password) == (
        "SASL_SSL", "PLAIN", "admin", "admin-secret",
    )
    assert security.ssl_context is not None and security.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert "admin-secret" not in repr(security)


def test_scram_credentials_come_from_the_mechanisms_own_jaas_config(tmp_path: Path) -> None:
    jaas = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="b-secret";'
    security = inter_broker_security(sasl_config(
        tmp_path, "SASL_PLAINTEXT", **{
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": jaas,
        },
    ))
    assert (security.protocol, security.ssl_context, security.sasl_mechanism, security.username, security.password) == (
        "SASL_PLAINTEXT", None, "SCRAM-SHA-512", "broker", "b-secret",
    )


def test_endpoint_identification_off(tmp_path: Path) -> None:
    security = inter_broker_security(sasl_config(tmp_path, "SSL", **{"ssl.endpoint.identification.algorithm": ""}))
    assert security.protocol == "SSL" and security.sasl_mechanism is None
    assert security.check_hostname is False and security.ssl_context.check_hostname is False


@pytest.mark.parametrize(("extra", "message"), [
    ({"listener.name.sasl_ssl.plain.sasl.jaas.config": plain_jaas(login=None)}, "no username"),
    ({"sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512"}, "scram-sha-512.sasl.jaas.config"),
    ({"sasl.mechanism.inter.broker.protocol": "GSSAPI"}, "GSSAPI is not supported"),
    ({"sasl.enabled.mechanisms": "SCRAM-SHA-512"}, "must be included in sasl.enabled.mechanisms"),
])
def test_missing_settings_are_clear_config_errors(tmp_path: Path, extra: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        inter_broker_security(sasl_config(tmp_path, **extra))


def test_client_security_refuses_incomplete_settings() -> None:
    with pytest.raises(ConfigError, match="needs a TLS context"):
        ClientSecurity(protocol="SSL")
    with pytest.raises(ConfigError, match="needs a username"):
        ClientSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN")
    with pytest.raises(ConfigError, match="unknown security protocol"):
        ClientSecurity(protocol="TLS")
