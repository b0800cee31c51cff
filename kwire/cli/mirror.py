"""`kwire mirror mm2.properties`: MirrorMaker 2 with its own properties file
(connect-mirror-maker.sh's), against any Kafka-compatible clusters.

SIGTERM or Ctrl-C stops it cleanly: the progress of what the target acknowledged is stored
and the next start resumes there."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

from kwire.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError, read_properties


def register(commands: Any) -> None:
    mirror = commands.add_parser(
        "mirror",
        help="mirror topics and consumer groups between clusters (MirrorMaker 2)",
        description=(
            "Copy topics, their configs and consumer-group offsets from cluster to cluster, "
            "as MirrorMaker 2 does with the same properties file."
        ),
    )
    mirror.add_argument("config", metavar="MM2_PROPERTIES", help="MirrorMaker 2 properties file")
    mirror.add_argument(
        "--clusters",
        metavar="ALIAS[,ALIAS]",
        help="run only the flows that target these clusters (as connect-mirror-maker.sh)",
    )
    mirror.set_defaults(run=run_mirror_command)


def run_mirror_command(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from kwire.mirror.clients import MirrorError
    from kwire.mirror.config import MirrorConfigError, parse_mirror_config
    from kwire.mirror.runner import run_mirror

    try:
        config = parse_mirror_config(read_properties(args.config))
    except MirrorConfigError as e:
        raise CliError(f"{args.config}: {e}", EXIT_USAGE) from None
    targets = None
    if args.clusters:
        targets = {alias.strip() for alias in args.clusters.split(",") if alias.strip()}
        unknown = targets - set(config.clusters)
        if unknown:
            raise CliError(f"--clusters: {', '.join(sorted(unknown))} not in clusters", EXIT_USAGE)

    stop = threading.Event()

    def request_stop(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        run_mirror(config, stop.is_set, targets)
    except MirrorConfigError as e:
        raise CliError(f"{args.config}: {e}", EXIT_USAGE) from None
    except MirrorError as e:
        raise CliError(str(e), EXIT_FAILED) from None
    except KafkaException as e:
        # A client error no flow step handles (a fatal producer error): stop, say which.
        raise CliError(
            f"mirror stopped: {e.args[0].name()}: {e.args[0].str()}", EXIT_FAILED
        ) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK
