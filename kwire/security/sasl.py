"""SASL mechanisms without I/O: PLAIN and SCRAM-SHA-256/512, server and client sides.

The server side follows Kafka's PlainSaslServer and ScramSaslServer: tokens in,
challenges out, the authenticated principal once complete. Failures raise
SaslAuthenticationError with the message Kafka sends the client, or SaslProtocolError
for a token that is not a message of the mechanism at all. PLAIN's users come from the
listener's JAAS config (`user_<name>="<password>"` options of PlainLoginModule);
SCRAM's from the credentials the brokers store (kwire.security.scram).

The SCRAM server is written against RFC 5802 and Kafka's ScramMessages (scramp's
server refuses an authorization id, which Kafka accepts when it names the user);
the SCRAM client is scramp's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable
from typing import Protocol

import scramp

from kwire.config import BrokerConfig
from kwire.security.principal import USER_TYPE, KafkaPrincipal
from kwire.security.scram import (
    MIN_ITERATIONS,
    SCRAM_MECHANISMS,
    ScramCredential,
    hash_name,
    hmac_digest,
)

PLAIN = "PLAIN"
PLAIN_LOGIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"
SCRAM_LOGIN_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
JAAS_USER_PREFIX = "user_"

PLAIN_INVALID = "Authentication failed: Invalid username or password"
AUTHZID_MISMATCH = "Authentication failed: Client requested an authorization id that is different from username"


def invalid_credentials(mechanism: str) -> str:
    """What Kafka's SaslServerAuthenticator answers for a mechanism's SaslException."""
    return f"Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"


class SaslAuthenticationError(Exception):
    """Authentication refused (SASL_AUTHENTICATION_FAILED); str() is Kafka's message."""


class SaslProtocolError(Exception):
    """A token that is no message of the mechanism, or a message out of turn.

    Kafka answers these, like any SaslException, with `kafka_message`."""

    def __init__(self, message: str, mechanism: str) -> None:
        super().__init__(message)
        self.mechanism = mechanism
        self.kafka_message = invalid_credentials(mechanism)


# ---- JAAS -----------------------------------------------------------------------------

_CONTROL_FLAGS = ("required", "requisite", "sufficient", "optional")
# java.io.StreamTokenizer as Kafka's JaasConfig sets it up: words of letters, digits,
# '.', '-', '_', '$' (and Latin-1 letters); quoted strings with Java's escapes.
_WORD = re.compile(r"[A-Za-z0-9.\-_$\u00a0-\u00ff]+")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _jaas_tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value) tokens: ("word", w), ("quoted", s), or ("char", c)."""
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace() or ord(c) < 32:
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ValueError("unterminated /* comment in JAAS config")
            i = end + 2
        elif c in "\"'":
            value, i = _jaas_quoted(text, i)
            tokens.append(("quoted", value))
        elif (m := _WORD.match(text, i)) is not None:
            tokens.append(("word", m.group()))
            i = m.end()
        else:
            tokens.append(("char", c))
            i += 1
    return tokens


def _jaas_quoted(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == quote:
            return "".join(out), i + 1
        if c == "\n":
            break
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in "01234567":  # octal, up to three digits (\0 .. \377)
                m = re.match(r"[0-3][0-7]{0,2}|[4-7][0-7]?", text[i + 1 :])
                assert m is not None
                out.append(chr(int(m.group(), 8)))
                i += 1 + m.end()
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    raise ValueError(f"unterminated quoted value in JAAS config (opened at character {start})")


def parse_jaas_config(text: str) -> tuple[str, dict[str, str]]:
    """Kafka's sasl.jaas.config: `<LoginModule> <flag> (<name>=<value>)* ;`, exactly one
    login module; values quoted ("..." with Java escapes) or bare words. Returns
    (login module class, options); ValueError with Kafka's reason if malformed."""
    tokens = _jaas_tokens(text)
    if not tokens:
        raise ValueError("JAAS config property does not contain any login modules")
    pos = 0

    def take() -> tuple[str, str]:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("JAAS config entry not terminated by semi-colon")
        pos += 1
        return tokens[pos - 1]

    kind, module = take()
    if kind != "word":
        raise ValueError(f"Invalid JAAS config: expected a login module class, got {module!r}")
    kind, flag = take()
    if kind != "word" or flag.lower() not in _CONTROL_FLAGS:
        raise ValueError(f"Invalid login module control flag '{flag}' in JAAS config")
    options: dict[str, str] = {}
    while True:
        kind, key = take()
        if (kind, key) == ("char", ";"):
            break
        if kind != "word":
            raise ValueError(f"Invalid JAAS config: expected an option name, got {key!r}")
        if take() != ("char", "="):
            raise ValueError(f"Value not specified for key '{key}' in JAAS config")
        kind, value = take()
        if kind not in ("word", "quoted"):
            raise ValueError(f"Value not specified for key '{key}' in JAAS config")
        options[key] = value
    if pos < len(tokens):
        raise ValueError("JAAS config property contains 2 login modules, should be 1 module")
    return module, options


def jaas_credentials(text: str) -> tuple[str | None, str | None]:
    """The `username` and `password` options of a PlainLoginModule or ScramLoginModule
    config: the broker's own login to other brokers. ValueError if malformed."""
    module, options = parse_jaas_config(text)
    if module not in (PLAIN_LOGIN_MODULE, SCRAM_LOGIN_MODULE):
        raise ValueError(f"login module {module} is not supported (expected {PLAIN_LOGIN_MODULE} or {SCRAM_LOGIN_MODULE})")
    return options.get("username"), options.get("password")


# ---- servers ---------------------------------------------------------------------------


class SaslServer(Protocol):
    mechanism: str

    @property
    def complete(self) -> bool: ...

    @property
    def principal(self) -> KafkaPrincipal | None: ...

    def evaluate(self, token: bytes) -> bytes: ...


CredentialLookup = Callable[[str, str], ScramCredential | None]


def new_sasl_server(mechanism: str, config: BrokerConfig, listener: str, credentials: CredentialLookup) -> SaslServer:
    """The server side of `mechanism` for one authentication on `listener`."""
    if mechanism == PLAIN:
        text = config.listener_text(listener, "plain.sasl.jaas.config")
        return PlainServer(plain_users(text) if text is not None else {})
    if mechanism in SCRAM_MECHANISMS:
        return ScramServer(mechanism, credentials)
    raise ValueError(f"SASL mechanism {mechanism} is not supported")


def plain_users(jaas_text: str) -> dict[str, str]:
    """user -> password from the `user_<name>` options of a PlainLoginModule config
    (Kafka's PlainServerCallbackHandler)."""
    module, options = parse_jaas_config(jaas_text)
    if module != PLAIN_LOGIN_MODULE:
        return {}
    return {k[len(JAAS_USER_PREFIX) :]: v for k, v in options.items() if k.startswith(JAAS_USER_PREFIX)}


class PlainServer:
    """PlainSaslServer: one token `authzid NUL authcid NUL password` (RFC 4616)."""

    mechanism = PLAIN

    def __init__(self, users: dict[str, str]) -> None:
        self._users = users
        self._principal: KafkaPrincipal | None = None

    @property
    def complete(self) -> bool:
        return self._principal is not None

    @property
    def principal(self) -> KafkaPrincipal | None:
        return self._principal

    def evaluate(self, token: bytes) -> bytes:
        if self.complete:
            raise SaslProtocolError("PLAIN authentication is already complete", PLAIN)
        try:
            text = token.decode("utf-8")
        except UnicodeDecodeError:
            raise SaslProtocolError("Invalid SASL/PLAIN response: not UTF-8", PLAIN) from None
        tokens = text.split("\0")
        if len(tokens) != 3:
            raise SaslProtocolError(f"Invalid SASL/PLAIN response: expected 3 tokens, got {len(tokens)}", PLAIN)
        authzid, username, password = tokens
        if not username:
            raise SaslAuthenticationError("Authentication failed: username not specified")
        if not password:
            raise SaslAuthenticationError("Authentication failed: password not specified")
        expected = self._users.get(username)
        # Compared in constant time; an unknown user is compared too, against itself, so
        # that the time taken does not tell which users exist.
        matches = hmac.compare_digest(password.encode(), (expected if expected is not None else password).encode())
        if expected is None or not matches:
            raise SaslAuthenticationError(PLAIN_INVALID)
        if authzid and authzid != username:
            raise SaslAuthenticationError(AUTHZID_MISMATCH)
        self._principal = KafkaPrincipal(USER_TYPE, username)
        return b""


# ScramMessages: gs2 header `n,[a=<authzid>],` (channel binding is not supported:
# only 'n'), then `[m=...,]n=<saslname>,r=<nonce>[,<extensions>]`.
_SASLNAME = r"(?:[\x01-\x2b\x2d-\x3c\x3e-\x7f]|=2C|=3D)+"
_VALUE_CHARS = r"[\x01-\x2b\x2d-\x7f]+"
_PRINTABLE = r"[\x21-\x2b\x2d-\x7e]+"
_BASE64 = r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
_CLIENT_FIRST = re.compile(
    rf"n,(?:a=(?P<authzid>{_SASLNAME}))?,(?:m={_VALUE_CHARS},)?n=(?P<saslname>{_SASLNAME}),"
    rf"r=(?P<nonce>{_PRINTABLE})(?P<extensions>(?:,[A-Za-z]+=[\x01-\x2b\x2d-\x7f]*)*)"
)
_CLIENT_FINAL = re.compile(
    rf"c=(?P<channel>{_BASE64}),r=(?P<nonce>{_PRINTABLE})(?:,[A-Za-z]+=[\x01-\x2b\x2d-\x7f]*)*,p=(?P<proof>{_BASE64})"
)


def _sasl_name_to_user(sasl_name: str) -> str:
    """ScramFormatter.username: `=2C` is ',' and `=3D` is '='."""
    return sasl_name.replace("=2C", ",").replace("=3D", "=")


class ScramServer:
    """ScramSaslServer: client-first -> server-first, client-final -> server-final."""

    def __init__(self, mechanism: str, credentials: CredentialLookup) -> None:
        self.mechanism = mechanism
        self._credentials = credentials
        self._state = "client-first"
        self._principal: KafkaPrincipal | None = None
        self._credential: ScramCredential | None = None
        self._client_first_bare = ""
        self._server_first = ""
        self._gs2_header = b""
        self._nonce = ""
        self._username = ""

    @property
    def complete(self) -> bool:
        return self._principal is not None

    @property
    def principal(self) -> KafkaPrincipal | None:
        return self._principal

    def evaluate(self, token: bytes) -> bytes:
        state = self._state
        self._state = "failed"  # until this step succeeds: a failed exchange is over
        try:
            text = token.decode("utf-8")
        except UnicodeDecodeError:
            raise SaslProtocolError(f"invalid SCRAM {state} message: not UTF-8", self.mechanism) from None
        if state == "client-first":
            answer = self._client_first(text)
            self._state = "client-final"
            return answer
        if state == "client-final":
            answer = self._client_final(text)
            self._state = "complete"
            return answer
        raise SaslProtocolError(f"unexpected SCRAM message in state {state}", self.mechanism)

    def _fail(self) -> SaslAuthenticationError:
        self._credential = None
        return SaslAuthenticationError(invalid_credentials(self.mechanism))

    def _client_first(self, text: str) -> bytes:
        m = _CLIENT_FIRST.fullmatch(text)
        if m is None:
            raise SaslProtocolError("Invalid SCRAM client first message format", self.mechanism)
        extensions = [e.partition("=")[0] for e in m.group("extensions").split(",") if e]
        if extensions:
            # Kafka knows one extension, tokenauth (delegation tokens); kwire has none.
            raise self._fail()
        username = _sasl_name_to_user(m.group("saslname"))
        authzid = m.group("authzid")
        if authzid is not None and _sasl_name_to_user(authzid) != username:
            raise SaslAuthenticationError(AUTHZID_MISMATCH)
        credential = self._credentials(username, self.mechanism)
        # An unknown user fails as a wrong password does (same message): no enumeration.
        if credential is None or credential.iterations < MIN_ITERATIONS:
            raise self._fail()
        self._credential = credential
        self._username = username
        self._gs2_header = text[: text.index(",", 2) + 1].encode()
        self._client_first_bare = text[len(self._gs2_header) :]
        self._nonce = m.group("nonce") + base64.b64encode(os.urandom(24)).decode().rstrip("=").replace("/", "_")
        salt = base64.b64encode(credential.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={credential.iterations}"
        return self._server_first.encode()

    def _client_final(self, text: str) -> bytes:
        m = _CLIENT_FINAL.fullmatch(text)
        if m is None:
            raise SaslProtocolError("Invalid SCRAM client final message format", self.mechanism)
        credential = self._credential
        assert credential is not None
        try:
            channel = base64.b64decode(m.group("channel"), validate=True)
            proof = base64.b64decode(m.group("proof"), validate=True)
        except binascii.Error:
            raise SaslProtocolError("Invalid SCRAM client final message: bad base64", self.mechanism) from None
        # Kafka 3.9's check (ScramSaslServer, CVE-2024-56128): the nonce must end with
        # the server's. Not equality: librdkafka before 2.6.1 (Debian's kcat) sends the
        # client nonce twice, and Kafka 3.x brokers accept it.
        if channel != self._gs2_header or not m.group("nonce").endswith(self._nonce):
            raise self._fail()
        without_proof = text[: text.rindex(",p=")]
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        client_signature = hmac_digest(self.mechanism, credential.stored_key, auth_message)
        if len(proof) != len(client_signature):
            raise self._fail()
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        stored_key = hashlib.new(hash_name(self.mechanism), client_key).digest()
        if not hmac.compare_digest(stored_key, credential.stored_key):
            raise self._fail()
        server_signature = hmac_digest(self.mechanism, credential.server_key, auth_message)
        self._principal = KafkaPrincipal(USER_TYPE, self._username)
        self._credential = None
        return b"v=" + base64.b64encode(server_signature)


# ---- clients ---------------------------------------------------------------------------


class SaslClient(Protocol):
    mechanism: str

    @property
    def complete(self) -> bool: ...

    def initial(self) -> bytes: ...

    def evaluate(self, challenge: bytes) -> bytes | None: ...


def new_sasl_client(mechanism: str, username: str, password: str) -> SaslClient:
    """The client side of `mechanism` (the broker's own logins, and tests)."""
    if mechanism == PLAIN:
        return PlainClient(username, password)
    if mechanism in SCRAM_MECHANISMS:
        return ScramClient(mechanism, username, password)
    raise ValueError(f"SASL mechanism {mechanism} is not supported")


class PlainClient:
    mechanism = PLAIN

    def __init__(self, username: str, password: str) -> None:
        self._token = b"\0" + username.encode() + b"\0" + password.encode()
        self._complete = False

    @property
    def complete(self) -> bool:
        return self._complete

    def initial(self) -> bytes:
        # PLAIN is one message: the client is done once it is sent; the server's
        # refusal, if any, comes as the SaslAuthenticate error.
        self._complete = True
        return self._token

    def evaluate(self, challenge: bytes) -> bytes | None:
        if self._complete and not challenge:
            return None
        raise SaslProtocolError("PLAIN expects no challenge", PLAIN)


class ScramClient:
    """scramp's client: initial() is client-first, evaluate(server-first) gives
    client-final, evaluate(server-final) checks the server's signature."""

    def __init__(self, mechanism: str, username: str, password: str) -> None:
        self.mechanism = mechanism
        self._client = scramp.ScramClient([mechanism], username, password)
        self._step = 0
        self._complete = False

    @property
    def complete(self) -> bool:
        return self._complete

    def initial(self) -> bytes:
        if self._step != 0:
            raise SaslProtocolError("SCRAM client-first already sent", self.mechanism)
        self._step = 1
        return self._client.get_client_first().encode()

    def evaluate(self, challenge: bytes) -> bytes | None:
        step, self._step = self._step, -1
        try:
            text = challenge.decode("utf-8")
            if step == 1:
                self._client.set_server_first(text)
                self._step = 2
                return self._client.get_client_final().encode()
            if step == 2:
                self._client.set_server_final(text)
                self._complete = True
                self._step = 3
                return None
        except UnicodeDecodeError:
            raise SaslProtocolError("SCRAM server message is not UTF-8", self.mechanism) from None
        except (scramp.ScramException, ValueError, KeyError, IndexError, TypeError) as e:
            # scramp raises more than ScramException on a malformed server message.
            if step == 2:
                raise SaslAuthenticationError(f"SCRAM server final message refused: {e}") from None
            raise SaslProtocolError(f"SCRAM server first message refused: {e}", self.mechanism) from None
        raise SaslProtocolError("unexpected SCRAM challenge", self.mechanism)
