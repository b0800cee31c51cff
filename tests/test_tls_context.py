"""TLS contexts from Kafka's ssl.* settings over PEM files (trustme certificates): real
handshakes over a socket pair with each ssl.client.auth, the principal of a client
certificate and ssl.principal.mapping.rules, encrypted keys, and the start-up errors."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from kwire.config import BrokerConfig, ConfigError
from kwire.security.principal import ANONYMOUS, KafkaPrincipal
from kwire.security.tls import (
    NoMatchingRule,
    client_ssl_context,
    distinguished_name,
    map_principal_name,
    openssl_cipher_name,
    principal_from_certificate,
    server_ssl_context,
)

LISTENER = "SSL"
TIMEOUT = 10


@dataclass
class Stores:
    directory: Path
    key_type: trustme.KeyType = trustme.KeyType.ECDSA

    def __post_init__(self) -> None:
        self.ca = trustme.CA(key_type=self.key_type)
        self.ca_file = self.directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server = self.ca.issue_cert("localhost", "127.0.0.1", common_name="broker", key_type=self.key_type)
        self.server_keystore = self.write("server.pem", server, None)
        self.server = server

    def write(self, name: str, cert: trustme.LeafCert, password: str | None) -> Path:
        """One PEM file: the private key (encrypted with `password`), then the chain."""
        key = cert.private_key_pem.bytes()
        if password is not None:
            loaded = serialization.load_pem_private_key(key, None)
            key = loaded.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(password.encode()),
            )
        path = self.directory / name
        path.write_bytes(key + b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        return path

    def client(self, name: str = "alice", password: str | None = None) -> Path:
        cert = self.ca.issue_cert(f"{name}.example", common_name=name, organization_name="acme",
                                  organization_unit_name="eng", key_type=self.key_type)
        return self.write(f"{name}.pem", cert, password)


@pytest.fixture
def stores(tmp_path: Path) -> Stores:
    (tmp_path / "other").mkdir()  # for a second CA
    return Stores(tmp_path)


def server_config(stores: Stores, **extra: str) -> BrokerConfig:
    values = {
        "listeners": f"{LISTENER}://127.0.0.1:9093",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(stores.server_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(stores.ca_file),
        **extra,
    }
    return BrokerConfig(values)


def client_config(stores: Stores, keystore: Path | None = None, **extra: str) -> BrokerConfig:
    values = {
        "listeners": f"{LISTENER}://127.0.0.1:9093",
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(stores.ca_file),
        **extra,
    }
    if keystore is not None:
        values |= {"ssl.keystore.type": "PEM", "ssl.keystore.location": str(keystore)}
    return BrokerConfig(values)


@dataclass
class Outcome:
    server_error: BaseException | None = None
    client_error: BaseException | None = None
    peer_certificate: dict[str, Any] | None = None
    cipher: str | None = None
    version: str | None = None

    @property
    def ok(self) -> bool:
        return self.server_error is None and self.client_error is None


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str = "localhost") -> Outcome:
    """A TLS handshake over a socket pair; the server answers one byte after it, so that
    a client certificate the server refuses (TLS 1.3: after the client's handshake)
    shows on the client's side too."""
    outcome = Outcome()
    left, right = socket.socketpair()
    left.settimeout(TIMEOUT)
    right.settimeout(TIMEOUT)

    def serve() -> None:
        try:
            with server.wrap_socket(left, server_side=True) as tls:
                outcome.peer_certificate = tls.getpeercert() or None
                tls.recv(1)
                tls.sendall(b"!")
        except (ssl.SSLError, OSError) as e:
            outcome.server_error = e
            left.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(right, server_hostname=server_hostname) as tls:
            outcome.cipher, outcome.version = tls.cipher()[0], tls.version()
            tls.sendall(b"?")
            if tls.recv(1) != b"!":
                raise ConnectionError("the server closed the connection")
    except (ssl.SSLError, OSError) as e:
        outcome.client_error = e
        right.close()
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    return outcome


# ---- handshakes and principals ------------------------------------------------------------


def test_no_client_auth(stores: Stores) -> None:
    outcome = handshake(server_ssl_context(server_config(stores), LISTENER),
                        client_ssl_context(client_config(stores, stores.client()), LISTENER))
    assert outcome.ok, outcome
    # ssl.client.auth=none: no certificate asked for, even from a client that has one.
    assert outcome.peer_certificate is None
    assert principal_from_certificate(outcome.peer_certificate) == ANONYMOUS
    assert outcome.version == "TLSv1.3"


def test_client_auth_required(stores: Stores) -> None:
    server = server_ssl_context(server_config(stores, **{"ssl.client.auth": "required"}), LISTENER)
    refused = handshake(server, client_ssl_context(client_config(stores), LISTENER))
    assert refused.server_error is not None and refused.client_error is not None
    accepted = handshake(server, client_ssl_context(client_config(stores, stores.client()), LISTENER))
    assert accepted.ok, accepted
    assert principal_from_certificate(accepted.peer_certificate) == KafkaPrincipal("User", "CN=alice,OU=eng,O=acme")


def test_client_auth_requested(stores: Stores) -> None:
    server = server_ssl_context(server_config(stores, **{"ssl.client.auth": "requested"}), LISTENER)
    anonymous = handshake(server, client_ssl_context(client_config(stores), LISTENER))
    assert anonymous.ok, anonymous
    assert principal_from_certificate(anonymous.peer_certificate) == ANONYMOUS
    named = handshake(server, client_ssl_context(client_config(stores, stores.client("bob")), LISTENER))
    assert named.ok, named
    assert principal_from_certificate(named.peer_certificate) == KafkaPrincipal("User", "CN=bob,OU=eng,O=acme")
    # A certificate of another CA is refused even when only requested.
    other = Stores(stores.directory / "other")
    foreign = handshake(server, client_ssl_context(client_config(stores, other.client("eve")), LISTENER))
    assert foreign.server_error is not None


def test_mapping_rules_on_a_real_certificate(stores: Stores) -> None:
    rules = "RULE:^CN=(.*?),OU=(.*?),O=(.*?)$/$1@$3/U,DEFAULT"
    config = server_config(stores, **{"ssl.client.auth": "required", "ssl.principal.mapping.rules": rules})
    outcome = handshake(server_ssl_context(config, LISTENER),
                        client_ssl_context(client_config(stores, stores.client()), LISTENER))
    assert outcome.ok, outcome
    assert principal_from_certificate(outcome.peer_certificate, rules) == KafkaPrincipal("User", "ALICE@ACME")


def test_hostname_check(stores: Stores) -> None:
    server = server_ssl_context(server_config(stores), LISTENER)
    checking = client_ssl_context(client_config(stores), LISTENER)  # https by default, as Kafka
    assert checking.check_hostname
    assert handshake(server, checking, "127.0.0.1").ok
    wrong = handshake(server, checking, "elsewhere.example")
    assert isinstance(wrong.client_error, ssl.SSLCertVerificationError)
    lenient = client_ssl_context(client_config(stores, **{"ssl.endpoint.identification.algorithm": ""}), LISTENER)
    assert not lenient.check_hostname
    assert handshake(server, lenient, "elsewhere.example").ok
    # The chain is always verified: a client trusting another CA refuses the server.
    other = Stores(stores.directory / "other")
    assert handshake(server, client_ssl_context(client_config(other), LISTENER)).client_error is not None


def test_protocol_versions(stores: Stores) -> None:
    tls13 = server_ssl_context(server_config(stores, **{"ssl.enabled.protocols": "TLSv1.3"}), LISTENER)
    tls12 = client_ssl_context(client_config(stores, **{"ssl.enabled.protocols": "TLSv1.2"}), LISTENER)
    assert handshake(tls13, tls12).client_error is not None
    both = server_ssl_context(server_config(stores), LISTENER)
    assert handshake(both, tls12).version == "TLSv1.2"
    for bad in ("TLSv1.4", "SSLv3", "TLSv1.1,TLSv1.3", ""):
        with pytest.raises(ConfigError, match="ssl.enabled.protocols"):
            server_ssl_context(server_config(stores, **{"ssl.enabled.protocols": bad}), LISTENER)


def test_cipher_suites(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rsa = Stores(tmp_path, trustme.KeyType.RSA)
    suite = "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    with caplog.at_level(logging.INFO, logger="kwire.security.tls"):
        server = server_ssl_context(
            server_config(rsa, **{"ssl.cipher.suites": f"{suite},TLS_AES_256_GCM_SHA384"}), LISTENER
        )
    assert "cannot restrict TLS 1.3" in caplog.text
    tls12 = client_ssl_context(client_config(rsa, **{"ssl.enabled.protocols": "TLSv1.2"}), LISTENER)
    outcome = handshake(server, tls12)
    assert outcome.ok, outcome
    assert outcome.cipher == "ECDHE-RSA-AES128-GCM-SHA256"
    # A TLS 1.2 client offering only other suites cannot connect.
    other = client_ssl_context(
        client_config(rsa, **{"ssl.enabled.protocols": "TLSv1.2",
                              "ssl.cipher.suites": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"}), LISTENER)
    assert handshake(server, other).client_error is not None
    with pytest.raises(ConfigError, match="TLS_FOO_WITH_BAR"):
        server_ssl_context(server_config(rsa, **{"ssl.cipher.suites": "TLS_FOO_WITH_BAR"}), LISTENER)


def test_openssl_cipher_names() -> None:
    assert openssl_cipher_name("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384") == "ECDHE-RSA-AES256-GCM-SHA384"
    assert openssl_cipher_name("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256") == "ECDHE-ECDSA-AES128-SHA256"
    assert openssl_cipher_name("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256") == "ECDHE-RSA-CHACHA20-POLY1305"
    assert openssl_cipher_name("TLS_RSA_WITH_AES_128_CBC_SHA") == "AES128-SHA"
    assert openssl_cipher_name("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384") == "DHE-RSA-AES256-GCM-SHA384"
    assert openssl_cipher_name("ECDHE-RSA-AES128-GCM-SHA256") == "ECDHE-RSA-AES128-GCM-SHA256"
    assert openssl_cipher_name("TLS_RSA_WITH_NULL_MD5") is None


# ---- stores and their errors --------------------------------------------------------------


@pytest.mark.parametrize("key", ["ssl.key.password", "ssl.keystore.password"])
def test_encrypted_key(stores: Stores, key: str) -> None:
    encrypted = stores.write("encrypted.pem", stores.server, "s3cret")
    assert "ENCRYPTED" in encrypted.read_text()
    server = server_ssl_context(server_config(stores, **{"ssl.keystore.location": str(encrypted), key: "s3cret"}),
                                LISTENER)
    assert handshake(server, client_ssl_context(client_config(stores), LISTENER)).ok
    with pytest.raises(ConfigError, match="wrong ssl.key.password"):
        server_ssl_context(server_config(stores, **{"ssl.keystore.location": str(encrypted), key: "nope"}), LISTENER)
    with pytest.raises(ConfigError, match="encrypted: set ssl.key.password"):
        server_ssl_context(server_config(stores, **{"ssl.keystore.location": str(encrypted)}), LISTENER)


def test_client_keystore_encrypted(stores: Stores) -> None:
    server = server_ssl_context(server_config(stores, **{"ssl.client.auth": "required"}), LISTENER)
    keystore = stores.client("carol", password="pw")
    client = client_ssl_context(client_config(stores, keystore, **{"ssl.key.password": "pw"}), LISTENER)
    outcome = handshake(server, client)
    assert outcome.ok, outcome
    assert principal_from_certificate(outcome.peer_certificate).name == "CN=carol,OU=eng,O=acme"


def test_store_errors(stores: Stores, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError, match=f"ssl.keystore.location={missing} cannot be read"):
        server_ssl_context(server_config(stores, **{"ssl.keystore.location": str(missing)}), LISTENER)
    with pytest.raises(ConfigError, match=f"ssl.truststore.location={missing} cannot be read"):
        server_ssl_context(server_config(stores, **{"ssl.truststore.location": str(missing)}), LISTENER)
    with pytest.raises(ConfigError, match=f"ssl.truststore.location={missing} cannot be read"):
        client_ssl_context(client_config(stores, **{"ssl.truststore.location": str(missing)}), LISTENER)
    # The CA certificate where the keystore belongs: no private key.
    with pytest.raises(ConfigError, match=f"ssl.keystore.location={stores.ca_file} is not a PEM keystore"):
        server_ssl_context(server_config(stores, **{"ssl.keystore.location": str(stores.ca_file)}), LISTENER)
    # A key alone where the truststore belongs.
    key_only = tmp_path / "key.pem"
    key_only.write_bytes(stores.server.private_key_pem.bytes())
    with pytest.raises(ConfigError, match=f"ssl.truststore.location={key_only} holds no PEM certificate"):
        server_ssl_context(server_config(stores, **{"ssl.truststore.location": str(key_only)}), LISTENER)
    # A key that does not match the certificate.
    other = stores.ca.issue_cert("other.example")
    mismatched = tmp_path / "mismatched.pem"
    mismatched.write_bytes(other.private_key_pem.bytes() + stores.server.cert_chain_pems[0].bytes())
    with pytest.raises(ConfigError, match="cannot be loaded"):
        server_ssl_context(server_config(stores, **{"ssl.keystore.location": str(mismatched)}), LISTENER)
    # Garbage between the markers.
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n"
                      "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        server_ssl_context(server_config(stores, **{"ssl.keystore.location": str(broken)}), LISTENER)
    with pytest.raises(ConfigError, match="ssl.principal.mapping.rules"):
        server_ssl_context(server_config(stores, **{"ssl.principal.mapping.rules": "RULE:^CN=(.*$/x/"}), LISTENER)
    with pytest.raises(ConfigError, match="ssl.principal.mapping.rules"):
        server_ssl_context(server_config(stores, **{"ssl.principal.mapping.rules": "NONSENSE"}), LISTENER)


def test_listener_prefixed_settings(stores: Stores, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    config = server_config(stores, **{"listener.name.ssl.ssl.keystore.location": str(missing)})
    with pytest.raises(ConfigError, match=f"listener SSL: ssl.keystore.location={missing}"):
        server_ssl_context(config, LISTENER)


# ---- distinguished names and mapping rules ------------------------------------------------


def test_distinguished_name_order_escapes_and_other_attributes() -> None:
    subject = (
        (("countryName", "US"),),
        (("organizationName", "acme, inc."),),
        (("organizationalUnitName", "eng"), ("organizationalUnitName", "ops")),
        (("commonName", " #alice+bob=x; "),),
        (("emailAddress", "a@b"),),
    )
    assert distinguished_name(subject) == (
        "1.2.840.113549.1.9.1=#1603614062,CN=\\ \\#alice\\+bob\\=x\\;\\ ,OU=eng+OU=ops,O=acme\\, inc.,C=US"
    )
    assert principal_from_certificate({"subject": subject[:3]}) == KafkaPrincipal("User", "OU=eng+OU=ops,O=acme\\, inc.,C=US")
    # Java escapes every leading and trailing space, and NUL as \00.
    assert distinguished_name([[("commonName", "  a b  ")], [("localityName", "x\0y")]]) == "L=x\\00y,CN=\\ \\ a b\\ \\ "
    assert principal_from_certificate(None) == ANONYMOUS
    assert principal_from_certificate({}) == ANONYMOUS


@pytest.mark.parametrize(
    ("rules", "name", "expected"),
    [
        ("DEFAULT", "CN=alice,OU=eng,O=acme", "CN=alice,OU=eng,O=acme"),
        ("RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,DEFAULT", "CN=kafka1,OU=ServiceUsers,O=Org", "kafka1"),
        ("RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,DEFAULT", "CN=alice,OU=eng,O=acme", "CN=alice,OU=eng,O=acme"),
        ("RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L",
         "CN=Duke,OU=JavaSoft,O=Sun Microsystems,L=Santa Clara,ST=CA,C=US", "duke@javasoft"),
        ("RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U", "cn=duke,ou=javasoft,dc=example,dc=com", "DUKE@JAVASOFT"),
        ("  RULE:^CN=([^,]*).*$/$1\\/x/ ,  DEFAULT  ", "CN=a,O=b", "a/x"),
        ("RULE:^CN=(?<cn>[^,]*).*$/${cn}!/", "CN=a,O=b", "a!"),
    ],
)
def test_mapping_rules(rules: str, name: str, expected: str) -> None:
    assert map_principal_name(name, rules) == expected


def test_no_rule_applies() -> None:
    with pytest.raises(NoMatchingRule, match="No rules apply to CN=x"):
        map_principal_name("CN=x", "RULE:^OU=(.*)$/$1/")
