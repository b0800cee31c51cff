"""The SASL mechanisms without I/O: PLAIN and SCRAM servers against kwire's clients and
against scramp (an independent implementation) on the other side, wrong and unknown
credentials, malformed tokens, JAAS parsing, and SCRAM credentials."""

from __future__ import annotations

import base64

import pytest
import scramp
from hypothesis import given, settings
from hypothesis import strategies as st

from kwire.config import BrokerConfig
from kwire.security.principal import KafkaPrincipal
from kwire.security.sasl import (
    AUTHZID_MISMATCH,
    PLAIN_INVALID,
    SaslAuthenticationError,
    SaslProtocolError,
    invalid_credentials,
    jaas_credentials,
    new_sasl_client,
    new_sasl_server,
    parse_jaas_config,
    plain_users,
)
from kwire.security.scram import (
    ScramCredential,
    UnacceptableCredential,
    check_iterations,
    salted_password,
)

LISTENER = "SASL_PLAINTEXT"
JAAS = (
    "org.apache.kafka.common.security.plain.PlainLoginModule required "
    'username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice \\"quoted\\" secret";'
)
SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")


def config() -> BrokerConfig:
    return BrokerConfig({
        "listeners": f"{LISTENER}://127.0.0.1:9093",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        f"listener.name.{LISTENER.lower()}.plain.sasl.jaas.config": JAAS,
    })


CREDENTIALS = {
    (user, mechanism): ScramCredential.from_password(mechanism, password, 4096)
    for user, password in [("alice", "alice-pw"), ("a,b=c", "odd-pw")]
    for mechanism in SCRAM
}


def lookup(user: str, mechanism: str) -> ScramCredential | None:
    return CREDENTIALS.get((user, mechanism))


def server(mechanism: str):
    return new_sasl_server(mechanism, config(), LISTENER, lookup)


def exchange(mechanism: str, user: str, password: str) -> KafkaPrincipal | None:
    """kwire's client against kwire's server; the principal once both complete."""
    s, c = server(mechanism), new_sasl_client(mechanism, user, password)
    token: bytes | None = c.initial()
    while not s.complete:
        assert token is not None
        challenge = s.evaluate(token)
        token = c.evaluate(challenge) if not c.complete else None
    if not c.complete:
        c.evaluate(challenge)
    assert c.complete
    return s.principal


# ---- PLAIN -----------------------------------------------------------------------------


def test_plain_users_from_jaas() -> None:
    assert exchange("PLAIN", "alice", 'alice "quoted" secret') == KafkaPrincipal("User", "alice")
    assert exchange("PLAIN", "admin", "admin-secret") == KafkaPrincipal("User", "admin")


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (b"\0alice\0wrong", PLAIN_INVALID),
        (b"\0mallory\0alice-secret", PLAIN_INVALID),  # unknown user: the same answer
        (b"\0admin\0alice \"quoted\" secret", PLAIN_INVALID),  # another user's password
        (b"\0\0pw", "Authentication failed: username not specified"),
        (b"\0alice\0", "Authentication failed: password not specified"),
        (b"admin\0alice\0alice \"quoted\" secret", AUTHZID_MISMATCH),
    ],
)
def test_plain_refusals(token: bytes, message: str) -> None:
    with pytest.raises(SaslAuthenticationError) as refused:
        server("PLAIN").evaluate(token)
    assert str(refused.value) == message


def test_plain_authzid_equal_to_user_and_malformed_tokens() -> None:
    s = server("PLAIN")
    assert s.evaluate(b"admin\0admin\0admin-secret") == b""
    assert s.complete and s.principal == KafkaPrincipal("User", "admin")
    with pytest.raises(SaslProtocolError):
        s.evaluate(b"\0admin\0admin-secret")  # already complete
    for token in (b"alice", b"\0alice\0pw\0extra", b"\xff\0alice\0pw"):
        with pytest.raises(SaslProtocolError) as malformed:
            server("PLAIN").evaluate(token)
        assert malformed.value.kafka_message == invalid_credentials("PLAIN")


def test_plain_client_token() -> None:
    client = new_sasl_client("PLAIN", "alice", "pw")
    assert not client.complete
    assert client.initial() == b"\0alice\0pw"
    assert client.complete and client.evaluate(b"") is None


# ---- SCRAM -----------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", SCRAM)
@pytest.mark.parametrize(("user", "password"), [("alice", "alice-pw"), ("a,b=c", "odd-pw")])
def test_scram_kwire_client_and_server(mechanism: str, user: str, password: str) -> None:
    assert exchange(mechanism, user, password) == KafkaPrincipal("User", user)


@pytest.mark.parametrize("mechanism", SCRAM)
def test_scram_server_against_scramp_client(mechanism: str) -> None:
    client = scramp.ScramClient([mechanism], "a,b=c", "odd-pw")
    s = server(mechanism)
    server_first = s.evaluate(client.get_client_first().encode())
    client.set_server_first(server_first.decode())
    server_final = s.evaluate(client.get_client_final().encode())
    assert s.complete and s.principal == KafkaPrincipal("User", "a,b=c")
    client.set_server_final(server_final.decode())  # scramp checks the server's signature


@pytest.mark.parametrize("mechanism", SCRAM)
def test_scram_client_against_scramp_server(mechanism: str) -> None:
    m = scramp.ScramMechanism(mechanism)
    credential = ScramCredential.from_password(mechanism, "pw", 4096)

    def auth(user: str) -> tuple[bytes, bytes, bytes, int]:
        assert user == "bob"
        return credential.salt, credential.stored_key, credential.server_key, credential.iterations

    s = m.make_server(auth)
    client = new_sasl_client(mechanism, "bob", "pw")
    s.set_client_first(client.initial().decode())
    final = client.evaluate(s.get_server_first().encode())
    assert final is not None and not client.complete
    s.set_client_final(final.decode())
    assert client.evaluate(s.get_server_final().encode()) is None
    assert client.complete


@pytest.mark.parametrize("mechanism", SCRAM)
def test_scram_client_refuses_a_forged_server_signature(mechanism: str) -> None:
    s = server(mechanism)
    client = new_sasl_client(mechanism, "alice", "alice-pw")
    final = client.evaluate(s.evaluate(client.initial()))
    assert final is not None
    s.evaluate(final)
    with pytest.raises(SaslAuthenticationError):
        client.evaluate(b"v=" + base64.b64encode(b"\0" * (32 if mechanism.endswith("256") else 64)))
    assert not client.complete


@pytest.mark.parametrize("mechanism", SCRAM)
@pytest.mark.parametrize(("user", "password"), [("alice", "wrong"), ("mallory", "alice-pw")])
def test_scram_wrong_password_and_unknown_user_fail_alike(mechanism: str, user: str, password: str) -> None:
    with pytest.raises(SaslAuthenticationError) as refused:
        exchange(mechanism, user, password)
    assert str(refused.value) == invalid_credentials(mechanism)


def test_scram_credential_of_another_mechanism_does_not_work() -> None:
    only_256 = {("carol", "SCRAM-SHA-256"): ScramCredential.from_password("SCRAM-SHA-256", "pw")}
    s = new_sasl_server("SCRAM-SHA-512", config(), LISTENER, lambda u, m: only_256.get((u, m)))
    with pytest.raises(SaslAuthenticationError):
        s.evaluate(new_sasl_client("SCRAM-SHA-512", "carol", "pw").initial())


def test_scram_extensions_and_authzid() -> None:
    nonce = "fyko+d2lbbFgONRv9qkxdawL"
    # Kafka's tokenauth (delegation tokens) and any other extension: refused.
    for extensions in (",tokenauth=true", ",other=1"):
        with pytest.raises(SaslAuthenticationError):
            server("SCRAM-SHA-256").evaluate(f"n,,n=alice,r={nonce}{extensions}".encode())
    with pytest.raises(SaslAuthenticationError) as refused:
        server("SCRAM-SHA-256").evaluate(f"n,a=admin,n=alice,r={nonce}".encode())
    assert str(refused.value) == AUTHZID_MISMATCH
    # An authzid naming the user itself is accepted, and bound into the exchange (c=).
    s = server("SCRAM-SHA-256")
    first_bare = f"n=alice,r={nonce}"
    server_first = s.evaluate(f"n,a=alice,{first_bare}".encode()).decode()
    fields = dict(part.split("=", 1) for part in server_first.split(","))
    salted = salted_password("SCRAM-SHA-256", "alice-pw", base64.b64decode(fields["s"]), int(fields["i"]))
    import hashlib
    import hmac

    without_proof = f"c={base64.b64encode(b'n,a=alice,').decode()},r={fields['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    signature = hmac.new(hashlib.sha256(client_key).digest(), auth_message, "sha256").digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    answer = s.evaluate(f"{without_proof},p={base64.b64encode(proof).decode()}".encode())
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    assert answer == b"v=" + base64.b64encode(hmac.new(server_key, auth_message, "sha256").digest())
    assert s.principal == KafkaPrincipal("User", "alice")


def test_scram_replayed_or_out_of_turn_messages() -> None:
    s = server("SCRAM-SHA-256")
    client = new_sasl_client("SCRAM-SHA-256", "alice", "alice-pw")
    first = client.initial()
    s.evaluate(first)
    with pytest.raises(SaslProtocolError):
        s.evaluate(first)  # a client-first where the client-final belongs
    with pytest.raises(SaslProtocolError):
        s.evaluate(b"anything")  # the failed exchange is over


@settings(max_examples=300, deadline=None)
@given(
    mechanism=st.sampled_from(["PLAIN", *SCRAM]),
    tokens=st.lists(
        st.one_of(
            st.binary(max_size=200),
            st.text(max_size=120).map(str.encode),
            st.sampled_from(["n,,n=alice,r=abc", "n,,n=mallory,r=x", "c=biws,r=abc,p=AAAA", "n,a=alice,n=alice,r=q",
                             "n,,n=alice,r=abc,tokenauth=true", "y,,n=alice,r=abc", "\0alice\0alice-pw"]).map(str.encode),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_only_sasl_errors_escape_the_servers(mechanism: str, tokens: list[bytes]) -> None:
    s = server(mechanism)
    for token in tokens:
        try:
            answer = s.evaluate(token)
        except (SaslAuthenticationError, SaslProtocolError):
            return
        assert isinstance(answer, bytes)


@settings(max_examples=200, deadline=None)
@given(mechanism=st.sampled_from(SCRAM), challenge=st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
def test_only_sasl_errors_escape_the_scram_client(mechanism: str, challenge: bytes) -> None:
    client = new_sasl_client(mechanism, "alice", "alice-pw")
    client.initial()
    try:
        client.evaluate(challenge)
    except (SaslAuthenticationError, SaslProtocolError):
        pass


# ---- JAAS ------------------------------------------------------------------------------


def test_jaas_parsing() -> None:
    module, options = parse_jaas_config(
        "  org.apache.kafka.common.security.plain.PlainLoginModule   Required\n"
        '  username="admin" password = "p\\"w\\\\d\\n" /* a comment */ user_admin=bare-word.1\n'
        "  user_bob='single \"quoted\"' // the end\n ;  "
    )
    assert module == "org.apache.kafka.common.security.plain.PlainLoginModule"
    assert options == {"username": "admin", "password": 'p"w\\d\n', "user_admin": "bare-word.1",
                       "user_bob": 'single "quoted"'}
    assert plain_users(JAAS) == {"admin": "admin-secret", "alice": 'alice "quoted" secret'}
    scram_login = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="b" password="\\u";'
    assert jaas_credentials(scram_login) == ("b", "u")
    assert jaas_credentials(JAAS) == ("admin", "admin-secret")
    assert jaas_credentials("org.apache.kafka.common.security.plain.PlainLoginModule required;") == (None, None)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"a\"",  # no ';'
        "org.apache.kafka.common.security.plain.PlainLoginModule mandatory;",
        "org.apache.kafka.common.security.plain.PlainLoginModule required username;",
        "org.apache.kafka.common.security.plain.PlainLoginModule required username=;",
        "org.apache.kafka.common.security.plain.PlainLoginModule required username=\"a;",
        "a.B required; c.D required;",
        '"quoted" required;',
    ],
)
def test_jaas_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_jaas_config(text)


def test_jaas_credentials_refuse_other_login_modules() -> None:
    with pytest.raises(ValueError, match="not supported"):
        jaas_credentials('com.sun.security.auth.module.Krb5LoginModule required principal="kafka";')


# ---- credentials -----------------------------------------------------------------------


def test_credential_string_round_trip() -> None:
    credential = ScramCredential(b"salt", b"\x00stored\xff", b"server", 4096)
    text = credential.format()
    assert text == "salt=c2FsdA==,stored_key=AHN0b3JlZP8=,server_key=c2VydmVy,iterations=4096"
    assert ScramCredential.parse(text) == credential
    generated = ScramCredential.from_password("SCRAM-SHA-512", "pw", 8192)
    assert ScramCredential.parse(str(generated)) == generated
    for bad in ("salt=c2FsdA==", "salt=!!,stored_key=a2V5,server_key=a2V5,iterations=4096",
                "salt=c2FsdA==,stored_key=a2V5,server_key=a2V5,iterations=many", "garbage"):
        with pytest.raises(ValueError):
            ScramCredential.parse(bad)


@pytest.mark.parametrize("mechanism", SCRAM)
def test_credential_from_salted_password_equals_from_password(mechanism: str) -> None:
    salt = b"fixed-salt-16byte"
    salted = salted_password(mechanism, "pencil", salt, 4096)
    assert ScramCredential.from_salted_password(mechanism, salt, salted, 4096) == ScramCredential.from_password(
        mechanism, "pencil", 4096, salt
    )
    # And scramp, independently, derives the same keys.
    s, stored, server_key, iterations = scramp.ScramMechanism(mechanism).make_auth_info(
        "pencil", iteration_count=4096, salt=salt
    )
    assert ScramCredential(s, stored, server_key, iterations) == ScramCredential.from_password(
        mechanism, "pencil", 4096, salt
    )


def test_iteration_limits() -> None:
    check_iterations(4096)
    check_iterations(16384)
    for bad, message in ((4095, "Too few iterations"), (16385, "Too many iterations")):
        with pytest.raises(UnacceptableCredential, match=message):
            check_iterations(bad)


def _client_final(mechanism: str, password: str, client_first_bare: str, server_first: str, nonce: str) -> bytes:
    """A SCRAM client-final message with the given nonce, computed as RFC 5802 says."""
    import base64
    import hashlib
    import hmac

    digest = "sha256" if mechanism.endswith("256") else "sha512"
    fields = dict(item.split("=", 1) for item in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(digest, password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    stored_key = hashlib.new(digest, client_key).digest()
    without_proof = f"c=biws,r={nonce}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, digest).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
    return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


@pytest.mark.parametrize("mechanism", SCRAM)
def test_scram_server_accepts_librdkafkas_doubled_nonce_as_kafka_3_9_does(mechanism: str) -> None:
    """librdkafka before 2.6.1 sends client nonce + server nonce in its final message
    (the server nonce already starts with the client's); Kafka 3.9 checks endsWith."""
    client_nonce = "fyko+d2lbbFgONRv9qkxdawL"
    client_first_bare = f"n=alice,r={client_nonce}"
    s = server(mechanism)
    server_first = s.evaluate(f"n,,{client_first_bare}".encode()).decode()
    nonce = server_first.split(",")[0][2:]
    assert nonce.startswith(client_nonce)
    doubled = _client_final(mechanism, "alice-pw", client_first_bare, server_first, client_nonce + nonce)
    assert s.evaluate(doubled).startswith(b"v=")
    assert s.principal == KafkaPrincipal("User", "alice")
    # Any other nonce is still refused (the replay CVE-2024-56128 is about).
    s = server(mechanism)
    server_first = s.evaluate(f"n,,{client_first_bare}".encode()).decode()
    forged = _client_final(mechanism, "alice-pw", client_first_bare, server_first, client_nonce + "x" * 32)
    with pytest.raises(SaslAuthenticationError):
        s.evaluate(forged)
