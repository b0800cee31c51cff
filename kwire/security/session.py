"""A connection's security session: who it is, and where its SASL exchange stands.

Kafka's SaslServerAuthenticator as a state machine without I/O. On a SASL listener
a connection may send only ApiVersions and SaslHandshake, then SaslAuthenticate
(handshake v1) or raw SASL tokens (handshake v0), until the mechanism completes;
anything else closes it, as Kafka does. With connections.max.reauth.ms (KIP-368) the
session expires: the client re-authenticates on the same connection (the principal
may not change), or the connection closes at its next request after expiry.

Quotas also keep their per-connection state here: until when the connection is
muted after a throttled answer (KIP-219).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from kwire.protocol.headers import CloseConnection
from kwire.security.principal import ANONYMOUS, KafkaPrincipal

API_VERSIONS_KEY = 18
SASL_HANDSHAKE_KEY = 17
SASL_AUTHENTICATE_KEY = 36


class SaslState(enum.Enum):
    HANDSHAKE = "handshake"  # ApiVersions or SaslHandshake expected
    AUTHENTICATE = "authenticate"  # SaslAuthenticate requests (handshake v1)
    RAW_AUTHENTICATE = "raw"  # raw SASL tokens, no Kafka header (handshake v0)
    AUTHENTICATED = "authenticated"


class IllegalSaslState(Exception):
    """A SASL request out of turn (Kafka's ILLEGAL_SASL_STATE)."""


class ConnectionSession:
    def __init__(
        self,
        *,
        listener: str,
        security_protocol: str,
        principal: KafkaPrincipal = ANONYMOUS,
        mechanisms: list[str] | None = None,
        new_sasl_server: Callable[[str], Any] | None = None,
        reauth_ms: int = 0,
    ) -> None:
        self.listener = listener
        self.security_protocol = security_protocol
        self.principal = principal
        self.mechanisms = mechanisms or []
        self._new_sasl_server = new_sasl_server
        self.reauth_ms = reauth_ms
        self.sasl = security_protocol.startswith("SASL_")
        self.state = SaslState.HANDSHAKE if self.sasl else SaslState.AUTHENTICATED
        self.mechanism: str | None = None
        self._server: Any = None
        self._reauthenticating = False
        # When the authenticated session ends (monotonic seconds), or None.
        self.expires_at: float | None = None
        # Why the connection must close once the answer being written is out (a failed
        # handshake or authentication: the client reads the error, then the close).
        self.close_after_answer: str | None = None
        # Quotas (KIP-219): reading stops until then after a throttled answer.
        self.muted_until = 0.0

    @property
    def authenticated(self) -> bool:
        return self.state is SaslState.AUTHENTICATED or self._reauthenticating

    @property
    def raw_tokens(self) -> bool:
        """The next frame is a raw SASL token, not a Kafka request (handshake v0)."""
        return self.state is SaslState.RAW_AUTHENTICATE

    def admit(self, api_key: int, now: float) -> None:
        """Raise CloseConnection unless a request of `api_key` may be served now."""
        if self.state is SaslState.AUTHENTICATED:
            if self.expires_at is not None and now >= self.expires_at and api_key not in (
                SASL_HANDSHAKE_KEY,
                SASL_AUTHENTICATE_KEY,
            ):
                raise CloseConnection(f"SASL session of {self.principal} expired (connections.max.reauth.ms)")
            return
        if api_key == API_VERSIONS_KEY and self.state is SaslState.HANDSHAKE:
            return
        if api_key == SASL_HANDSHAKE_KEY and self.state is SaslState.HANDSHAKE:
            return
        if api_key == SASL_AUTHENTICATE_KEY and self.state is SaslState.AUTHENTICATE:
            return
        if self._reauthenticating:
            return  # requests of the session being renewed go on meanwhile
        raise CloseConnection(f"unexpected Kafka request of API key {api_key} during SASL {self.state.value}")

    def handshake(self, mechanism: str, version: int) -> bool:
        """SaslHandshake: True if the mechanism is enabled and authentication may begin;
        False (the answer is UNSUPPORTED_SASL_MECHANISM, then the connection closes)."""
        if self.state is SaslState.AUTHENTICATED and self.sasl:
            if version < 1:
                raise IllegalSaslState("re-authentication needs SaslHandshake v1")
            if mechanism != self.mechanism:
                self.close_after_answer = f"re-authentication changed the SASL mechanism to {mechanism}"
                return False
            self._reauthenticating = True
        elif self.state is not SaslState.HANDSHAKE:
            raise IllegalSaslState(f"SaslHandshake during SASL {self.state.value}")
        if mechanism not in self.mechanisms or self._new_sasl_server is None:
            self.close_after_answer = f"SASL mechanism {mechanism} is not enabled"
            return False
        self.mechanism = mechanism
        self._server = self._new_sasl_server(mechanism)
        self.state = SaslState.AUTHENTICATE if version >= 1 else SaslState.RAW_AUTHENTICATE
        return True

    def authenticate(self, token: bytes, now: float) -> bytes:
        """One SASL token in, the challenge or final answer out. Raises the SASL
        server's errors (the caller answers them, then closes the connection)."""
        if self.state not in (SaslState.AUTHENTICATE, SaslState.RAW_AUTHENTICATE) or self._server is None:
            raise IllegalSaslState(f"SaslAuthenticate during SASL {self.state.value}")
        answer = self._server.evaluate(token)
        if self._server.complete:
            principal = self._server.principal
            if self._reauthenticating and principal != self.principal:
                self.close_after_answer = "re-authentication changed the principal"
                raise IllegalSaslState(f"cannot change principals during re-authentication: {self.principal} to {principal}")
            self.principal = principal
            self.state = SaslState.AUTHENTICATED
            self._reauthenticating = False
            self._server = None
            self.expires_at = now + self.reauth_ms / 1000 if self.reauth_ms > 0 else None
        return answer

    def session_lifetime_ms(self, now: float) -> int:
        """SaslAuthenticate v1's session_lifetime_ms: 0 when the session never expires."""
        if self.expires_at is None:
            return 0
        return max(int((self.expires_at - now) * 1000), 1)

    def fail(self, reason: str) -> None:
        self.close_after_answer = reason
