"""What every client subcommand shares: the connection options Kafka's tools take
(`--bootstrap-server`, `--command-config`), the client configuration built from them,
errors as messages and exit codes, and tables on stdout.

The client side is confluent-kafka (librdkafka): the most used non-Java Kafka client,
with the admin, producer and consumer APIs the tools need, and every security setting.
It is imported only by the subcommands that run, never by `kwire serve`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# Exit codes, the same for every subcommand.
EXIT_OK = 0
# The operation failed: an error from the cluster (unknown topic, invalid config ...).
EXIT_FAILED = 1
# The command line or a file it names is wrong (argparse also exits 2).
EXIT_USAGE = 2
# No broker of --bootstrap-server answered.
EXIT_UNREACHABLE = 3

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_TIMEOUT = 30.0


class CliError(Exception):
    """A failure to report as `kwire: <message>` on stderr, with an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def report(error: CliError) -> int:
    print(f"kwire: {error.message}", file=sys.stderr, flush=True)
    return error.exit_code


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    """The options every client subcommand takes, as Kafka's tools name them."""
    parser.add_argument(
        "--bootstrap-server",
        default=DEFAULT_BOOTSTRAP,
        metavar="HOST:PORT",
        help=f"broker(s) to connect to, comma-separated ({DEFAULT_BOOTSTRAP})",
    )
    parser.add_argument(
        "--command-config",
        metavar="FILE",
        help="client properties (security.protocol, sasl.*, ssl.* ...), as Kafka's tools take them",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the cluster ({DEFAULT_TIMEOUT:g})",
    )


def read_properties(path: str | Path) -> dict[str, str]:
    """A Java properties file (key=value or key: value, # and ! comments)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}", EXIT_USAGE) from None
    values: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        line = line.strip()
        while line.endswith("\\"):
            line = line[:-1] + next(lines, "").strip()
        if not line or line[0] in "#!":
            continue
        match = re.match(r"^([^=:\s]+)\s*[=:\s]\s*(.*)$", line)
        if match is None:
            raise CliError(f"{path}: cannot read line {line!r}", EXIT_USAGE)
        values[match[1]] = match[2]
    return values


# Java client properties that librdkafka spells differently or does not have.
_JAAS_OPTION = re.compile(r'(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"')


def librdkafka_config(properties: Mapping[str, str]) -> dict[str, str]:
    """Translate a Java client's properties (a --command-config file written for
    kafka-topics.sh) into librdkafka's: sasl.jaas.config becomes sasl.username and
    sasl.password, PEM trust and key stores become ssl.ca.location and
    ssl.certificate.location/ssl.key.location. librdkafka's own names pass as they are."""
    config: dict[str, str] = {}
    for key, value in properties.items():
        if key == "sasl.jaas.config":
            options = dict(_JAAS_OPTION.findall(value))
            if "username" in options:
                config["sasl.username"] = options["username"]
            if "password" in options:
                config["sasl.password"] = options["password"]
        elif key == "ssl.truststore.location":
            config["ssl.ca.location"] = value
        elif key == "ssl.keystore.location":
            # kwire's (and Kafka's PEM) key store holds the key and its certificate chain.
            config["ssl.certificate.location"] = value
            config["ssl.key.location"] = value
        elif key in ("ssl.keystore.password", "ssl.key.password"):
            if value:
                config["ssl.key.password"] = value
        elif key in ("ssl.truststore.type", "ssl.keystore.type"):
            if value.upper() != "PEM":
                raise CliError(f"{key}={value}: only PEM stores can be read here", EXIT_USAGE)
        elif key == "ssl.truststore.password":
            pass  # PEM trust stores have no password
        elif key == "ssl.endpoint.identification.algorithm":
            config[key] = value or "none"
        else:
            config[key] = value
    return config


def client_config(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """The confluent-kafka configuration of a subcommand: bootstrap servers, the
    --command-config file's settings, then what the subcommand itself sets."""
    config: dict[str, Any] = {"bootstrap.servers": args.bootstrap_server}
    if getattr(args, "command_config", None):
        config.update(librdkafka_config(read_properties(args.command_config)))
    # librdkafka's own log lines (connection refused ...) are noise for a tool that
    # reports its own errors; --log-level DEBUG shows them.
    if getattr(args, "log_level", "INFO").upper() != "DEBUG":
        config.setdefault("log_level", 0)
    config.update(extra)
    return config


def admin_client(args: argparse.Namespace) -> Any:
    """An AdminClient known to reach the cluster (one Metadata request), or CliError."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list[str] = []

    def error_cb(error: KafkaError) -> None:
        # "1/1 brokers are down" says less than the reason before it.
        if error.code() != KafkaError._ALL_BROKERS_DOWN:
            errors.append(error.str())

    try:
        admin = AdminClient(client_config(args, error_cb=error_cb))
    except KafkaException as e:
        raise CliError(f"invalid client configuration: {e.args[0].str()}", EXIT_USAGE) from None
    ensure_reachable(admin, args, errors)
    return admin


def ensure_reachable(client: Any, args: argparse.Namespace, errors: Sequence[str] = ()) -> None:
    from confluent_kafka import KafkaException

    try:
        client.list_topics(timeout=args.timeout)
    except KafkaException as e:
        from confluent_kafka.admin import AdminClient

        if not errors and isinstance(client, AdminClient):
            # librdkafka hands the reason (authentication failed ...) to error_cb only
            # when polled; an AdminClient has nothing else to serve.
            client.poll(0)
        last = errors[-1] if errors else e.args[0].str()
        raise CliError(
            f"cannot reach {args.bootstrap_server} within {args.timeout:g} s: {last}",
            EXIT_UNREACHABLE,
        ) from None


def kafka_error(e: BaseException, context: str = "") -> CliError:
    """A CliError from a confluent-kafka exception: Kafka's error name and message."""
    from confluent_kafka import KafkaError, KafkaException

    prefix = f"{context}: " if context else ""
    if isinstance(e, KafkaException) and e.args and isinstance(e.args[0], KafkaError):
        error = e.args[0]
        return CliError(f"{prefix}{error.name()}: {error.str()}")
    return CliError(f"{prefix}{e}")


def result(future: Any, context: str, timeout: float) -> Any:
    """The result of a confluent-kafka admin future, or CliError naming `context`."""
    import concurrent.futures

    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise CliError(f"{context}: no answer within {timeout:g} s") from None
    except Exception as e:
        raise kafka_error(e, context) from None


def parse_config_pairs(pairs: Iterable[str] | None, option: str = "--config") -> dict[str, str]:
    """`k=v` arguments into a dict; a malformed one is a usage error."""
    config: dict[str, str] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"{option} expects key=value, got {pair!r}", EXIT_USAGE)
        config[key.strip()] = value
    return config


def stdout_console() -> Any:
    """A rich Console for stdout. Piped output gets no colours and no wrapping, so
    that a table's rows stay one line each for grep and awk."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console()
    return Console(width=10_000, no_color=True, highlight=False, soft_wrap=True)


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None
) -> None:
    """A table as Kafka's tools print theirs: a header line of upper-case names, then
    one line per row, columns aligned (through rich)."""
    from rich import box
    from rich.table import Table

    table = Table(
        *columns, title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, highlight=False
    )
    for row in rows:
        table.add_row(*("-" if cell is None else str(cell) for cell in row))
    stdout_console().print(table)


def admin_request(context: str, method: Any, *args: Any, **kwargs: Any) -> Any:
    """Send an admin request. confluent-kafka checks it first (an empty name, a count out
    of range) with ValueError: a usage error naming `context`, not a traceback."""
    try:
        return method(*args, **kwargs)
    except ValueError as e:
        raise CliError(f"{context}: {e}", EXIT_USAGE) from None


def require_cluster_describe(admin: Any, args: argparse.Namespace, context: str) -> None:
    """Refuse, as the broker would, a request that needs DESCRIBE on the cluster when the
    principal lacks it (DescribeCluster's authorized operations, which a broker computes
    as all of them without an authorizer). The broker's own refusal is mishandled by
    librdkafka: DescribeAcls' is dropped (an empty list), DescribeUserScramCredentials'
    crashes the process (librdkafka 2.x frees a stack copy of the error message)."""
    from confluent_kafka.admin import AclOperation

    future = admin.describe_cluster(
        include_authorized_operations=True, request_timeout=args.timeout
    )
    description = result(future, context, args.timeout)
    # None: no operation at all (an empty set; the field is requested, Kafka always sends it).
    if AclOperation.DESCRIBE not in (description.authorized_operations or ()):
        raise CliError(f"{context}: CLUSTER_AUTHORIZATION_FAILED: Cluster authorization failed.")


def kafka_client(factory: Any, args: argparse.Namespace, config: Mapping[str, Any]) -> Any:
    """A confluent-kafka Producer or Consumer (`factory`) known to reach the cluster,
    else CliError: a configuration librdkafka refuses is a usage error (exit 2), no
    broker answering exit 3."""
    from confluent_kafka import KafkaError, KafkaException

    errors: list[str] = []

    def error_cb(error: KafkaError) -> None:
        if error.code() != KafkaError._ALL_BROKERS_DOWN:
            errors.append(error.str())

    try:
        client = factory(client_config(args, error_cb=error_cb, **config))
    except (KafkaException, ValueError, TypeError) as e:
        reason = e.args[0].str() if e.args and isinstance(e.args[0], KafkaError) else str(e)
        raise CliError(f"invalid client configuration: {reason}", EXIT_USAGE) from None
    ensure_reachable(client, args, errors)
    return client


def topic_partitions(client: Any, topic: str, timeout: float) -> list[int]:
    """The partition ids of `topic` (a Metadata request through a Producer or Consumer),
    or CliError with Kafka's error name: UNKNOWN_TOPIC_OR_PART when it does not exist.
    A topic being created (LEADER_NOT_AVAILABLE, no partitions yet) is waited for."""
    import time

    from confluent_kafka import KafkaError, KafkaException

    deadline = time.monotonic() + timeout
    while True:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            info = client.list_topics(topic, timeout=remaining).topics.get(topic)
        except KafkaException as e:
            raise kafka_error(e, f"topic {topic}") from None
        error = info.error if info is not None else None
        if info is not None and error is None and info.partitions:
            return sorted(info.partitions)
        if error is not None and error.code() not in (
            KafkaError.LEADER_NOT_AVAILABLE,
            KafkaError._UNKNOWN_TOPIC,
            KafkaError.UNKNOWN_TOPIC_OR_PART,
        ):
            raise CliError(f"topic {topic}: {error.name()}: {error.str()}")
        if time.monotonic() >= deadline or (
            error is not None and error.code() != KafkaError.LEADER_NOT_AVAILABLE
        ):
            name = error.name() if error is not None else "UNKNOWN_TOPIC_OR_PART"
            raise CliError(f"topic {topic}: {name}: the topic does not exist")
        time.sleep(0.1)
