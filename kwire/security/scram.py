"""SCRAM credentials (RFC 5802) as Kafka stores them.

A user's credential for one mechanism lives in the entity config of `users/<user>`
under the mechanism's name (`SCRAM-SHA-256`, `SCRAM-SHA-512`), in Kafka's string
form (ScramCredentialUtils): `salt=<b64>,stored_key=<b64>,server_key=<b64>,iterations=<n>`.
The broker never sees the password: AlterUserScramCredentials carries the salted
password the client computed, from which the broker derives the stored and server
keys (ScramFormatter.generateCredential).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from kwire.entity_configs import EntityConfigStore, entity_path

log = logging.getLogger(__name__)

# Kafka's ScramMechanism: name -> (hash name, wire code of AlterUserScramCredentials).
SCRAM_MECHANISMS: dict[str, tuple[str, int]] = {
    "SCRAM-SHA-256": ("sha256", 1),
    "SCRAM-SHA-512": ("sha512", 2),
}
MECHANISM_BY_CODE: dict[int, str] = {code: name for name, (_h, code) in SCRAM_MECHANISMS.items()}
# ScramMechanism.minIterations (both mechanisms), and the maximum the brokers accept
# in AlterUserScramCredentials.
MIN_ITERATIONS = 4096
MAX_ITERATIONS = 16384
DEFAULT_ITERATIONS = 4096


class UnacceptableCredential(ValueError):
    """A credential Kafka refuses (UNACCEPTABLE_CREDENTIAL); the message is Kafka's."""


def hash_name(mechanism: str) -> str:
    """The hashlib name of a SCRAM mechanism; KeyError for another mechanism."""
    return SCRAM_MECHANISMS[mechanism][0]


def hmac_digest(mechanism: str, key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hash_name(mechanism)).digest()


def check_iterations(iterations: int) -> None:
    if iterations < MIN_ITERATIONS:
        raise UnacceptableCredential("Too few iterations")
    if iterations > MAX_ITERATIONS:
        raise UnacceptableCredential("Too many iterations")


@dataclass(frozen=True, slots=True)
class ScramCredential:
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int

    def __str__(self) -> str:
        return self.format()

    def format(self) -> str:
        """Kafka's ScramCredentialUtils.credentialToString."""

        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode("ascii")

        return (
            f"salt={b64(self.salt)},stored_key={b64(self.stored_key)},"
            f"server_key={b64(self.server_key)},iterations={self.iterations}"
        )

    @classmethod
    def parse(cls, text: str) -> ScramCredential:
        """Kafka's ScramCredentialUtils.credentialFromString; ValueError if malformed."""
        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")  # base64 padding holds '=': split once
            if not sep:
                raise ValueError(f"SCRAM credential: {part!r} is not key=value")
            fields[key.strip()] = value.strip()
        wanted = {"salt", "stored_key", "server_key", "iterations"}
        if set(fields) != wanted:
            raise ValueError(f"SCRAM credential needs exactly {', '.join(sorted(wanted))}, got {', '.join(sorted(fields))}")
        try:
            salt, stored_key, server_key = (
                base64.b64decode(fields[k], validate=True) for k in ("salt", "stored_key", "server_key")
            )
        except binascii.Error as e:
            raise ValueError(f"SCRAM credential: invalid base64 ({e})") from None
        try:
            iterations = int(fields["iterations"])
        except ValueError:
            raise ValueError(f"SCRAM credential: iterations={fields['iterations']!r} is not a number") from None
        return cls(salt, stored_key, server_key, iterations)

    @classmethod
    def from_salted_password(cls, mechanism: str, salt: bytes, salted_password: bytes, iterations: int) -> ScramCredential:
        """The credential of AlterUserScramCredentials' upsertion: stored_key =
        H(HMAC(salted, "Client Key")), server_key = HMAC(salted, "Server Key")."""
        client_key = hmac_digest(mechanism, salted_password, b"Client Key")
        stored_key = hashlib.new(hash_name(mechanism), client_key).digest()
        server_key = hmac_digest(mechanism, salted_password, b"Server Key")
        return cls(bytes(salt), stored_key, server_key, iterations)

    @classmethod
    def from_password(
        cls, mechanism: str, password: str, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
    ) -> ScramCredential:
        """For tests and tools. The password is taken as UTF-8 without SASLprep, as
        Kafka's ScramFormatter does."""
        if salt is None:
            salt = os.urandom(32)
        return cls.from_salted_password(mechanism, salt, salted_password(mechanism, password, salt, iterations), iterations)


def salted_password(mechanism: str, password: str, salt: bytes, iterations: int) -> bytes:
    """Hi(password, salt, i) of RFC 5802 (PBKDF2 with the mechanism's HMAC)."""
    return hashlib.pbkdf2_hmac(hash_name(mechanism), password.encode("utf-8"), salt, iterations)


def lookup(entity_configs: EntityConfigStore) -> Callable[[str, str], ScramCredential | None]:
    """`credentials(user, mechanism)` over the entity configs of users: the SASL
    servers' view of the credentials (None for a user without one, or an unreadable one)."""

    def credentials(user: str, mechanism: str) -> ScramCredential | None:
        text = entity_configs.get(entity_path(user=user)).get(mechanism)
        if text is None:
            return None
        try:
            return ScramCredential.parse(text)
        except ValueError as e:
            log.warning("ignoring the %s credential of user %s: %s", mechanism, user, e)
            return None

    return credentials
