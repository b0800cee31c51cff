"""A broker with every kind of listener, test certificates, and client settings for each.

`SecureListeners` gives a broker PLAINTEXT (for readiness and setup), SSL,
SASL_PLAINTEXT and SASL_SSL listeners on free loopback ports, with certificates of a
test CA (trustme) written as PEM files: the server's key and chain in one file, as
`ssl.keystore.type=PEM` takes it. PLAIN users come from the JAAS config of each SASL
listener; SCRAM users are created through AlterUserScramCredentials by the tests.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from conftest import free_port

# PLAIN users of every SASL listener; `admin` is the super user where ACLs are on.
PLAIN_USERS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}
PROTOCOLS = ("SSL", "SASL_PLAINTEXT", "SASL_SSL")


def plain_jaas(users: dict[str, str], login: str = "admin") -> str:
    entries = " ".join(f'user_{name}="{password}"' for name, password in users.items())
    return (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{login}" password="{users[login]}" {entries};'
    )


@dataclass
class Certificates:
    directory: Path
    ca: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = self.directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server = self.ca.issue_cert("127.0.0.1", "localhost", common_name="kwire-broker")
        self.server_keystore = self.directory / "server.pem"
        # One PEM file: the private key, then the certificate chain.
        self.server_keystore.write_bytes(
            server.private_key_pem.bytes() + b"".join(blob.bytes() for blob in server.cert_chain_pems)
        )

    def client(self, name: str, *, organization_unit: str = "eng", expired: bool = False) -> tuple[Path, Path]:
        """(certificate file, key file) of a client certificate for `name`."""
        kwargs = {}
        if expired:
            kwargs["not_after"] = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
            kwargs["not_before"] = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
        cert = self.ca.issue_cert(
            f"{name}.example", common_name=name, organization_name="acme",
            organization_unit_name=organization_unit, **kwargs,
        )
        cert_file = self.directory / f"{name}{'-expired' if expired else ''}.crt"
        key_file = self.directory / f"{name}{'-expired' if expired else ''}.key"
        cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        key_file.write_bytes(cert.private_key_pem.bytes())
        return cert_file, key_file


@dataclass
class SecureListeners:
    certs: Certificates
    ports: dict[str, int] = field(default_factory=lambda: {p: free_port() for p in PROTOCOLS})
    mechanisms: str = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    client_auth: str = "none"

    def overrides(self, plaintext_port: int) -> dict[str, str]:
        listeners = [f"PLAINTEXT://127.0.0.1:{plaintext_port}"]
        listeners += [f"{p}://127.0.0.1:{port}" for p, port in self.ports.items()]
        values = {
            "listeners": ",".join(listeners),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.certs.server_keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.certs.ca_file),
            "ssl.client.auth": self.client_auth,
            "sasl.enabled.mechanisms": self.mechanisms,
        }
        for listener in ("sasl_plaintext", "sasl_ssl"):
            values[f"listener.name.{listener}.plain.sasl.jaas.config"] = plain_jaas(PLAIN_USERS)
        return values

    def bootstrap(self, protocol: str) -> str:
        return f"127.0.0.1:{self.ports[protocol]}"

    def confluent(self, protocol: str, mechanism: str = "PLAIN", user: str = "alice", password: str | None = None,
                  **extra: str) -> dict[str, str]:
        """confluent-kafka (librdkafka) settings for a listener."""
        conf: dict[str, str] = {"bootstrap.servers": self.bootstrap(protocol), "security.protocol": protocol}
        if protocol in ("SSL", "SASL_SSL"):
            conf["ssl.ca.location"] = str(self.certs.ca_file)
        if protocol.startswith("SASL_"):
            conf["sasl.mechanism"] = mechanism
            conf["sasl.username"] = user
            conf["sasl.password"] = PLAIN_USERS.get(user, "") if password is None else password
        conf.update(extra)
        return conf
