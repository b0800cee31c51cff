"""TLS contexts from Kafka's ssl.* settings, and principals from client certificates.

Stores are PEM files (ssl.keystore.type=PEM): the keystore holds the private key and
the certificate chain in one file, the truststore the CA certificates. Every setting
is read as a listener sees it (listener.name.<listener>.ssl.* first). A store that is
missing, unreadable or not what its key says stops the start with a ConfigError
naming the key and the file.

A client certificate names the connection's principal as Kafka's
DefaultKafkaPrincipalBuilder does: `User:` + the subject's distinguished name in
RFC 2253 form (as Java's X500Principal.getName() prints it), rewritten by
ssl.principal.mapping.rules (Kafka's SslPrincipalMapper).
"""

from __future__ import annotations

import functools
import logging
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kwire.config import BrokerConfig, ConfigError
from kwire.security.principal import ANONYMOUS, USER_TYPE, KafkaPrincipal

log = logging.getLogger(__name__)

# ssl.enabled.protocols names -> versions, oldest first.
TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
# IANA names of TLS 1.3 suites: OpenSSL enables them all; Python's ssl cannot choose.
TLS13_SUITES = frozenset(
    {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
    }
)


# ---- contexts ----------------------------------------------------------------------------


def server_ssl_context(config: BrokerConfig, listener: str) -> ssl.SSLContext:
    """The server context of an SSL or SASL_SSL listener. Raises ConfigError."""

    def value(key: str) -> Any:
        return config.listener_value(listener, key)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _protocols(context, value("ssl.enabled.protocols"), listener)
    _cipher_suites(context, value("ssl.cipher.suites"), listener, value("ssl.enabled.protocols"))
    keystore = value("ssl.keystore.location")
    if not keystore:
        raise ConfigError(f"listener {listener}: ssl.keystore.location is not set (a PEM file with the key and certificate)")
    _load_keystore(context, keystore, value("ssl.key.password") or value("ssl.keystore.password"), listener)
    truststore = value("ssl.truststore.location")
    if truststore:
        _load_truststore(context, truststore, listener)
    client_auth = str(value("ssl.client.auth")).lower()
    if client_auth not in CLIENT_AUTH:
        raise ConfigError(f"listener {listener}: ssl.client.auth={client_auth} (expected none, requested or required)")
    if client_auth != "none" and not truststore:
        raise ConfigError(f"listener {listener}: ssl.client.auth={client_auth} needs ssl.truststore.location")
    context.verify_mode = CLIENT_AUTH[client_auth]
    # Checked now so that a bad rule stops the start rather than every connection.
    try:
        parse_principal_mapping_rules(str(value("ssl.principal.mapping.rules")))
    except ValueError as e:
        raise ConfigError(f"listener {listener}: ssl.principal.mapping.rules: {e}") from None
    return context


def client_ssl_context(
    config: BrokerConfig, listener: str, *, check_hostname: bool | None = None
) -> ssl.SSLContext:
    """The context of this broker's client connections to `listener` of other brokers
    (and tests): trusts the listener's truststore (the system's CAs without one),
    presents the keystore if one is set, and checks the host name when
    ssl.endpoint.identification.algorithm is https (or as `check_hostname` says)."""

    def value(key: str) -> Any:
        return config.listener_value(listener, key)

    if check_hostname is None:
        algorithm = str(value("ssl.endpoint.identification.algorithm")).strip().lower()
        if algorithm not in ("", "https"):
            raise ConfigError(
                f"listener {listener}: ssl.endpoint.identification.algorithm={algorithm} is not supported "
                "(https checks the host name, an empty value does not)"
            )
        check_hostname = algorithm == "https"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    _protocols(context, value("ssl.enabled.protocols"), listener)
    _cipher_suites(context, value("ssl.cipher.suites"), listener, value("ssl.enabled.protocols"))
    truststore = value("ssl.truststore.location")
    if truststore:
        _load_truststore(context, truststore, listener)
    else:
        context.load_default_certs()
    keystore = value("ssl.keystore.location")
    if keystore:
        _load_keystore(context, keystore, value("ssl.key.password") or value("ssl.keystore.password"), listener)
    return context


def _read_pem(key: str, location: str, listener: str) -> str:
    try:
        return Path(location).read_text(encoding="ascii", errors="replace")
    except OSError as e:
        raise ConfigError(f"listener {listener}: {key}={location} cannot be read: {e.strerror or e}") from None


def _load_keystore(context: ssl.SSLContext, location: str, password: str, listener: str) -> None:
    key = "ssl.keystore.location"
    text = _read_pem(key, location, listener)
    if "-----BEGIN CERTIFICATE-----" not in text or not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", text):
        raise ConfigError(
            f"listener {listener}: {key}={location} is not a PEM keystore: it must hold the private key "
            "and the certificate chain (-----BEGIN ... PRIVATE KEY----- and -----BEGIN CERTIFICATE-----)"
        )
    encrypted = "ENCRYPTED" in text
    if encrypted and not password:
        raise ConfigError(
            f"listener {listener}: the private key in {key}={location} is encrypted: set ssl.key.password"
        )

    # A callable, never None: without a password OpenSSL would prompt on the terminal.
    def secret() -> bytes:
        return password.encode()

    try:
        context.load_cert_chain(location, password=secret)
    except ssl.SSLError as e:
        reason = "wrong ssl.key.password, or " if encrypted else ""
        raise ConfigError(
            f"listener {listener}: {key}={location} cannot be loaded ({reason}a key that does not match the "
            f"certificate, or invalid PEM): {e.reason or e}"
        ) from None


def _load_truststore(context: ssl.SSLContext, location: str, listener: str) -> None:
    key = "ssl.truststore.location"
    text = _read_pem(key, location, listener)
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"listener {listener}: {key}={location} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    try:
        context.load_verify_locations(cafile=location)
    except ssl.SSLError as e:
        raise ConfigError(f"listener {listener}: {key}={location} is not valid PEM: {e.reason or e}") from None


def _split(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()]


def _protocols(context: ssl.SSLContext, enabled: str, listener: str) -> None:
    names = _split(enabled)
    unknown = [n for n in names if n not in TLS_VERSIONS]
    if unknown or not names:
        raise ConfigError(
            f"listener {listener}: ssl.enabled.protocols={enabled}: "
            + (f"unknown {', '.join(unknown)}" if unknown else "empty")
            + f" (kwire has {', '.join(TLS_VERSIONS)})"
        )
    order = list(TLS_VERSIONS)
    indices = sorted({order.index(n) for n in names})
    if indices != list(range(indices[0], indices[-1] + 1)):
        # Python's ssl sets a range of versions: a gap cannot be expressed.
        raise ConfigError(f"listener {listener}: ssl.enabled.protocols={enabled} must be a range of versions without gaps")
    context.minimum_version = TLS_VERSIONS[order[indices[0]]]
    context.maximum_version = TLS_VERSIONS[order[indices[-1]]]
    if indices[0] < order.index("TLSv1.2"):
        log.warning(
            "listener %s: ssl.enabled.protocols=%s enables TLS versions older than 1.2; the system's OpenSSL "
            "may still refuse them",
            listener,
            enabled,
        )


@functools.cache
def _openssl_cipher_names() -> frozenset[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("ALL:@SECLEVEL=0")
    return frozenset(c["name"] for c in context.get_ciphers())


_KEY_EXCHANGES = {
    "ECDHE_RSA": "ECDHE-RSA",
    "ECDHE_ECDSA": "ECDHE-ECDSA",
    "DHE_RSA": "DHE-RSA",
    "DHE_DSS": "DHE-DSS",
    "RSA": "",
}
_BULK = re.compile(
    r"(?P<algo>AES|CAMELLIA|ARIA)_(?P<bits>128|256)_(?P<mode>GCM|CBC|CCM)(?P<ccm8>_8)?(?:_(?P<mac>SHA|SHA256|SHA384))?"
    r"|(?P<chacha>CHACHA20_POLY1305_SHA256)"
)


def openssl_cipher_name(name: str) -> str | None:
    """OpenSSL's name of a TLS 1.2 suite given by its IANA (Java) name, e.g.
    TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 -> ECDHE-RSA-AES256-GCM-SHA384; a name
    already in OpenSSL's form is returned as is; None if unknown."""
    if name in _openssl_cipher_names():
        return name
    m = re.fullmatch(r"(?:TLS|SSL)_(?P<kx>[A-Z0-9_]+?)_WITH_(?P<bulk>[A-Z0-9_]+)", name)
    if m is None or m.group("kx") not in _KEY_EXCHANGES:
        return None
    bulk = _BULK.fullmatch(m.group("bulk"))
    if bulk is None:
        return None
    if bulk.group("chacha"):
        cipher = "CHACHA20-POLY1305"
    else:
        algo, bits, mode, mac = bulk.group("algo"), bulk.group("bits"), bulk.group("mode"), bulk.group("mac")
        if mode == "GCM":
            cipher = f"{algo}{bits}-GCM-{mac}"
        elif mode == "CCM":
            cipher = f"{algo}{bits}-CCM" + ("8" if bulk.group("ccm8") else "")
        else:
            cipher = f"{algo}{bits}-{mac}"
    kx = _KEY_EXCHANGES[m.group("kx")]
    openssl = f"{kx}-{cipher}" if kx else cipher
    return openssl if openssl in _openssl_cipher_names() else None


def _cipher_suites(context: ssl.SSLContext, suites: str, listener: str, protocols: str) -> None:
    names = _split(suites)
    if not names:
        return
    tls13 = [n for n in names if n in TLS13_SUITES]
    others = [n for n in names if n not in TLS13_SUITES]
    if tls13 or "TLSv1.3" in _split(protocols):
        log.info(
            "listener %s: ssl.cipher.suites cannot restrict TLS 1.3 suites (Python's ssl enables all of "
            "OpenSSL's); it applies to TLS 1.2 and older only",
            listener,
        )
    if not others:
        return
    translated = {n: openssl_cipher_name(n) for n in others}
    unknown = [n for n, t in translated.items() if t is None]
    if unknown:
        raise ConfigError(f"listener {listener}: ssl.cipher.suites: unknown or unsupported cipher suite {', '.join(unknown)}")
    try:
        context.set_ciphers(":".join(t for t in translated.values() if t))
    except ssl.SSLError as e:
        raise ConfigError(f"listener {listener}: ssl.cipher.suites={suites}: OpenSSL refuses them ({e.reason or e})") from None


# ---- principals --------------------------------------------------------------------------

# Python's attribute names (OpenSSL's long names) -> the keywords X500Principal prints.
_RFC2253_KEYWORDS = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
# Other attributes print as OID=#<hex of the DER value>; (OID, DER string tag).
_OIDS = {
    "emailAddress": ("1.2.840.113549.1.9.1", 0x16),  # IA5String
    "serialNumber": ("2.5.4.5", 0x13),  # PrintableString
    "surname": ("2.5.4.4", 0x0C),
    "givenName": ("2.5.4.42", 0x0C),
    "title": ("2.5.4.12", 0x0C),
    "initials": ("2.5.4.43", 0x0C),
    "generationQualifier": ("2.5.4.44", 0x0C),
    "dnQualifier": ("2.5.4.46", 0x13),
    "pseudonym": ("2.5.4.65", 0x0C),
    "businessCategory": ("2.5.4.15", 0x0C),
    "postalCode": ("2.5.4.17", 0x0C),
}
_ESCAPED = set(',=+<>#;"\\')


def _der_hex(tag: int, value: str) -> str:
    data = value.encode("utf-8")
    n = len(data)
    length = bytes([n]) if n < 128 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    return "#" + (bytes([tag]) + length + data).hex()


def _escape(value: str) -> str:
    """Java's AVA.toRFC2253String: special characters anywhere, and every leading and
    trailing space, get a backslash; NUL is \\00."""
    chars = ["\\00" if c == "\0" else ("\\" + c if c in _ESCAPED else c) for c in value]
    lead = 0
    while lead < len(chars) and chars[lead] in (" ", "\r"):
        lead += 1
    trail = len(chars) - 1
    while trail >= lead and chars[trail] in (" ", "\r"):
        trail -= 1
    return "".join("\\" + c if i < lead or i > trail else c for i, c in enumerate(chars))


def _ava(name: str, value: str) -> str:
    keyword = _RFC2253_KEYWORDS.get(name)
    if keyword is not None:
        return f"{keyword}={_escape(value)}"
    oid, tag = _OIDS.get(name, (name, 0x0C))
    return f"{oid}={_der_hex(tag, value)}"


def distinguished_name(subject: Iterable[Iterable[tuple[str, str]]]) -> str:
    """RFC 2253 form of ssl.getpeercert()'s `subject` (RDNs in certificate order, so
    the most specific, printed first, is the last)."""
    return ",".join("+".join(_ava(name, value) for name, value in rdn) for rdn in reversed(list(subject)))


class NoMatchingRule(ValueError):
    """No ssl.principal.mapping.rules rule applies to a distinguished name."""


@dataclass(frozen=True, slots=True)
class MappingRule:
    """One SslPrincipalMapper rule: DEFAULT, or RULE:pattern/replacement/[LU]."""

    pattern: re.Pattern[str] | None = None  # None: DEFAULT
    replacement: str = ""
    case: str = ""  # "L", "U" or ""

    def apply(self, name: str) -> str | None:
        if self.pattern is None:
            return name
        if self.pattern.fullmatch(name) is None:
            return None
        result = self.pattern.sub(lambda m: _java_replacement(self.replacement, m), name)
        if self.case == "L":
            return result.lower()
        if self.case == "U":
            return result.upper()
        return result


def _java_replacement(replacement: str, match: re.Match[str]) -> str:
    """Java's Matcher.replaceAll syntax: $n and ${name} are groups, \\c is c."""
    out: list[str] = []
    i = 0
    while i < len(replacement):
        c = replacement[i]
        if c == "\\" and i + 1 < len(replacement):
            out.append(replacement[i + 1])
            i += 2
        elif c == "$" and (m := re.match(r"\{(\w+)\}|(\d)", replacement[i + 1 :])) is not None:
            group = m.group(1) or int(m.group(2))
            out.append(match.group(group) or "")
            i += 1 + m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


_RULE_SPLITTER = re.compile(
    r"\s*((DEFAULT)|RULE:((?:\\.|[^\\/])*)/((?:\\.|[^\\/])*)/([LU]?).*?|(.*?))\s*(?:,\s*|$)"
)


@functools.cache
def parse_principal_mapping_rules(rules: str) -> tuple[MappingRule, ...]:
    """ssl.principal.mapping.rules as SslPrincipalMapper parses them; ValueError for
    an invalid rule."""
    parsed: list[MappingRule] = []
    position = 0
    text = rules.strip()
    while position < len(text):
        m = _RULE_SPLITTER.match(text, position)
        if m is None or m.end() == position:
            raise ValueError(f"Invalid rule: {text[position:]}")
        position = m.end()
        if m.group(2):
            parsed.append(MappingRule())
        elif m.group(3) is not None:
            try:
                # Java's named groups (?<name>...) are Python's (?P<name>...).
                pattern = re.compile(re.sub(r"\(\?<([A-Za-z])", r"(?P<\1", m.group(3)))
            except re.error as e:
                raise ValueError(f"Invalid rule: {m.group(1)} ({e})") from None
            parsed.append(MappingRule(pattern, m.group(4), m.group(5)))
        elif m.group(6):
            raise ValueError(f"Invalid rule: {m.group(6)}")
    if not parsed:
        parsed.append(MappingRule())
    return tuple(parsed)


def map_principal_name(distinguished: str, rules: str = "DEFAULT") -> str:
    """SslPrincipalMapper.getName: the first rule that applies; NoMatchingRule if none."""
    for rule in parse_principal_mapping_rules(rules):
        name = rule.apply(distinguished)
        if name is not None:
            return name
    raise NoMatchingRule(f"No rules apply to {distinguished}, rules {rules}")


def principal_from_certificate(cert: Mapping[str, Any] | None, rules: str = "DEFAULT") -> KafkaPrincipal:
    """The principal of an SSL connection: ANONYMOUS without a client certificate,
    else User:<mapped subject DN>. Raises NoMatchingRule when no rule applies (Kafka
    then fails the connection's authentication)."""
    if not cert or not cert.get("subject"):
        return ANONYMOUS
    return KafkaPrincipal(USER_TYPE, map_principal_name(distinguished_name(cert["subject"]), rules))
