"""`kwire serve [server.properties] [--override key=value]...`: run a broker, as
kafka-server-start.sh does."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import trio

from kwire.config import BrokerConfig, ConfigError


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run a broker (as kafka-server-start.sh)")
    serve.add_argument("properties", nargs="?", help="server.properties file")
    serve.add_argument(
        "--override", action="append", metavar="KEY=VALUE", help="set a broker config"
    )
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
        fatal = next(
            (e for e in leaves if isinstance(e, ConfigError | OSError | StartupError)), None
        )
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
