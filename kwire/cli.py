"""The `kwire` command: `kwire serve [server.properties] [--override key=value]...`."""

from __future__ import annotations

import sys

# kio and trio import hypothesis (and through it pytest) whenever it is installed,
# to register test strategies; a broker process never uses them, and they cost
# ~300 ms of start-up. Blocked here, before anything imports kio or trio.
if "hypothesis" not in sys.modules:
    sys.modules["hypothesis"] = None  # type: ignore[assignment]

import argparse  # noqa: E402
import logging  # noqa: E402

import trio  # noqa: E402

from kwire.config import BrokerConfig, ConfigError  # noqa: E402


def _serve(args: argparse.Namespace) -> int:
    from kwire.errors import StartupError
    from kwire.server import run_broker

    try:
        config = BrokerConfig.load(args.properties, args.override or [])
        config.validate()
    except ConfigError as e:
        print(f"kwire: invalid configuration: {e}", file=sys.stderr)
        return 2

    def ready(broker: object, bound: list[tuple[str, str, int]]) -> None:
        names = ", ".join(f"{name}://{host}:{port}" for name, host, port in bound)
        print(f"kwire broker {config.broker_id} listening on {names}", flush=True)

    try:
        trio.run(lambda: run_broker(config, ready=ready))
    except ConfigError as e:
        print(f"kwire: invalid configuration: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"kwire: cannot start: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:
        # A start-up failure raised inside the server's nurseries.
        leaves = _leaves(group)
        fatal = next((e for e in leaves if isinstance(e, ConfigError | OSError | StartupError)), None)
        if fatal is None or len(leaves) != 1:
            raise
        print(f"kwire: cannot start: {fatal}", file=sys.stderr)
        return 2 if isinstance(fatal, ConfigError) else 1
    return 0


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    found: list[BaseException] = []
    for e in group.exceptions:
        found.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kwire", description="A Kafka-compatible broker.")
    parser.add_argument("--log-level", default="INFO", help="Python logging level (INFO)")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a broker (as kafka-server-start.sh)")
    serve.add_argument("properties", nargs="?", help="server.properties file")
    serve.add_argument("--override", action="append", metavar="KEY=VALUE", help="set a broker config")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kazoo logs every (re)connection at INFO; kwire logs what matters of them itself.
    logging.getLogger("kazoo.client").setLevel(max(logging.WARNING, logging.getLogger().level))
    if args.command == "serve":
        return _serve(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
