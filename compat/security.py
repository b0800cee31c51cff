"""`--security`: a SASL_SSL listener with SCRAM-SHA-512 next to each broker's PLAINTEXT one.

A test CA (trustme) issues the broker's certificate for 127.0.0.1; its PEM files live in
the run's work directory: the broker's private key and chain in one file, as
`ssl.keystore.type=PEM` takes it, and the CA's certificate, which every driver trusts.
After each broker start the harness creates the SCRAM-SHA-512 user with
AlterUserScramCredentials (key 51) over the PLAINTEXT listener, through confluent-kafka's
AdminClient as an operator would, then hands the drivers the SASL_SSL bootstrap and the
settings below in their environment (`KWIRE_COMPAT_*`, read by every driver).

bench/ uses the same certificates and user creation for its SASL_SSL phases.
"""

from __future__ import annotations

import secrets
import shutil
import time
from pathlib import Path

PROTOCOL = "SASL_SSL"
MECHANISM = "SCRAM-SHA-512"
USER = "compat"
# Kafka's default for kafka-configs --add-config 'SCRAM-SHA-512=[password=...]'.
ITERATIONS = 4096

# The drivers' channel: environment variables, all set together or none.
ENV_PROTOCOL = "KWIRE_COMPAT_SECURITY_PROTOCOL"
ENV_CA = "KWIRE_COMPAT_SSL_CA_LOCATION"
ENV_MECHANISM = "KWIRE_COMPAT_SASL_MECHANISM"
ENV_USER = "KWIRE_COMPAT_SASL_USERNAME"
ENV_PASSWORD = "KWIRE_COMPAT_SASL_PASSWORD"


class SecurityError(Exception):
    pass


class SaslSsl:
    """The certificates, the broker settings and the client settings of a SASL_SSL run."""

    def __init__(self, directory: Path, user: str = USER, password: str | None = None) -> None:
        import trustme  # a test dependency of kwire (pyproject), only needed here

        self.directory = directory
        self.user = user
        self.password = password or f"compat-{secrets.token_hex(8)}"
        directory.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        server = ca.issue_cert("127.0.0.1", "localhost", common_name="kwire-compat-broker")
        self.keystore = directory / "broker.pem"
        # One PEM file: the private key, then the certificate chain.
        self.keystore.write_bytes(
            server.private_key_pem.bytes() + b"".join(b.bytes() for b in server.cert_chain_pems))
        self.keystore.chmod(0o600)

    def broker_overrides(self) -> list[str]:
        """kwire settings besides `listeners` (which names the SASL_SSL port)."""
        return ["ssl.keystore.type=PEM",
                f"ssl.keystore.location={self.keystore}",
                f"sasl.enabled.mechanisms={MECHANISM}"]

    def driver_env(self) -> dict[str, str]:
        return {ENV_PROTOCOL: PROTOCOL, ENV_CA: str(self.ca_file), ENV_MECHANISM: MECHANISM,
                ENV_USER: self.user, ENV_PASSWORD: self.password}

    def librdkafka(self) -> dict[str, str]:
        """The same settings in librdkafka's names (confluent-kafka, kcat)."""
        return {"security.protocol": PROTOCOL, "ssl.ca.location": str(self.ca_file),
                "sasl.mechanism": MECHANISM, "sasl.username": self.user,
                "sasl.password": self.password}

    def create_user(self, plaintext_bootstrap: str, timeout: float = 20.0) -> None:
        """AlterUserScramCredentials over PLAINTEXT: the user's SCRAM-SHA-512 credential.

        Raises SecurityError naming the broker's answer if it is refused."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import (
            AdminClient,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        # log_level 3: librdkafka's info lines (a purged queue at exit) are not news here.
        admin = AdminClient({"bootstrap.servers": plaintext_bootstrap, "log_level": 3,
                             "broker.address.family": "v4", "socket.timeout.ms": 10000})
        upsert = UserScramCredentialUpsertion(
            self.user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, ITERATIONS),
            self.password.encode())
        t0 = time.monotonic()
        try:
            futures = admin.alter_user_scram_credentials([upsert], request_timeout=timeout)
            futures[self.user].result(timeout=timeout)
        except KafkaException as e:
            err = e.args[0]
            raise SecurityError(f"AlterUserScramCredentials for {self.user!r} refused: "
                                f"{err.name()}: {err.str()}") from None
        except Exception as e:  # a timeout, a transport failure
            raise SecurityError(f"AlterUserScramCredentials for {self.user!r} failed after "
                                f"{time.monotonic() - t0:.1f}s: {type(e).__name__}: {e}") from None

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
