"""How this broker's own client secures its connections to other brokers.

Kafka's brokers connect to each other on the inter-broker listener with that
listener's security protocol (listener.security.protocol.map), and with the same
settings as the listener's server side (ChannelBuilders.clientChannelBuilder over the
listener's prefixed configs): TLS trusts the listener's `ssl.truststore.location` and
presents the broker's own keystore when the other side asks for a client certificate;
SASL uses `sasl.mechanism.inter.broker.protocol` and logs in with the username and
password of the listener's JAAS config for that mechanism
(`listener.name.<listener>.<mechanism>.sasl.jaas.config`), as a broker's LoginManager
does. `inter_broker_security` derives all this once, at start-up, so that a missing
setting stops the broker with a ConfigError instead of failing every replica fetch.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field

from kwire.config import SASL_MECHANISMS, BrokerConfig, ConfigError

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True, slots=True)
class ClientSecurity:
    """The security of one client connection: the protocol, the TLS context (SSL,
    SASL_SSL) and whether the server's certificate must name the host it was reached
    by, the SASL mechanism and credentials (SASL_PLAINTEXT, SASL_SSL)."""

    protocol: str = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None
    # ssl.endpoint.identification.algorithm=https: the certificate must match the host.
    check_hostname: bool = True
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(f"unknown security protocol {self.protocol} (expected one of {', '.join(SECURITY_PROTOCOLS)})")
        if self.tls and self.ssl_context is None:
            raise ConfigError(f"security protocol {self.protocol} needs a TLS context")
        if self.ssl_context is not None and self.ssl_context.check_hostname != self.check_hostname:
            # ssl refuses a context that checks host names without one to check against.
            raise ConfigError("check_hostname differs from the TLS context's check_hostname")
        if self.sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    f"SASL mechanism {self.sasl_mechanism} is not supported (kwire has {', '.join(SASL_MECHANISMS)})"
                )
            if not self.username or self.password is None:
                raise ConfigError(f"SASL mechanism {self.sasl_mechanism} needs a username and a password")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")


PLAINTEXT = ClientSecurity()


def inter_broker_security(config: BrokerConfig) -> ClientSecurity:
    """The security of this broker's connections to the others, from its own config
    (Kafka's rules, see the module doc). Raises ConfigError naming what is missing."""
    listener = config.inter_broker_listener
    try:
        protocol = config.listener_protocol(listener)
    except KeyError:
        raise ConfigError(
            f"inter-broker listener {listener} has no security protocol in "
            f"listener.security.protocol.map={config['listener.security.protocol.map']}"
        ) from None
    if protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(f"inter-broker listener {listener}: unknown security protocol {protocol}")
    context: ssl.SSLContext | None = None
    check_hostname = True
    if protocol in ("SSL", "SASL_SSL"):
        context, check_hostname = _tls(config, listener)
    mechanism = username = password = None
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        mechanism, username, password = _sasl(config, listener)
    return ClientSecurity(
        protocol=protocol, ssl_context=context, check_hostname=check_hostname,
        sasl_mechanism=mechanism, username=username, password=password,
    )


def _tls(config: BrokerConfig, listener: str) -> tuple[ssl.SSLContext, bool]:
    """The listener's client context: its truststore (the system's CAs without one),
    its keystore presented when the other side asks for a client certificate (as
    Kafka's SslFactory in client mode loads it), the host name checked when
    ssl.endpoint.identification.algorithm is https. ConfigError names a bad setting."""
    from kwire.security.tls import client_ssl_context

    context = client_ssl_context(config, listener)
    return context, context.check_hostname


def _sasl(config: BrokerConfig, listener: str) -> tuple[str, str, str]:
    mechanism = str(config["sasl.mechanism.inter.broker.protocol"]).strip().upper()
    enabled = config.sasl_mechanisms(listener)
    if mechanism not in SASL_MECHANISMS:
        raise ConfigError(
            f"sasl.mechanism.inter.broker.protocol={mechanism} is not supported (kwire has "
            f"{', '.join(SASL_MECHANISMS)}); set it for the inter-broker listener {listener}"
        )
    if mechanism not in enabled:
        # KafkaConfig: the inter-broker mechanism must be one the listener enables.
        raise ConfigError(
            f"sasl.mechanism.inter.broker.protocol={mechanism} must be included in sasl.enabled.mechanisms "
            f"of the inter-broker listener {listener} ({', '.join(enabled) or 'none'})"
        )
    key = f"{mechanism.lower()}.sasl.jaas.config"
    text = config.listener_text(listener, key)
    if text is None:
        raise ConfigError(
            f"inter-broker SASL ({mechanism}) needs the broker's credentials: listener.name.{listener.lower()}.{key} "
            'with username="..." password="..."'
        )
    from kwire.security.sasl import jaas_credentials

    try:
        username, password = jaas_credentials(text)
    except ValueError as e:
        raise ConfigError(f"listener.name.{listener.lower()}.{key}: {e}") from e
    if not username:
        raise ConfigError(
            f"listener.name.{listener.lower()}.{key} has no username option: the broker logs in to other "
            "brokers with its username and password"
        )
    if password is None:
        raise ConfigError(f"listener.name.{listener.lower()}.{key} has no password option for {username}")
    return mechanism, username, password
