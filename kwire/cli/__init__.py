"""The `kwire` command.

`kwire serve` runs a broker; every other subcommand is a client of any Kafka-compatible
cluster (kwire or not), as Kafka's own tools are: `kwire topic`, `kwire group`,
`kwire produce`, `kwire consume`, `kwire cluster`, `kwire acl`, `kwire user`,
`kwire dump-log`, `kwire perf`, `kwire mirror`. Each lives in its own module here, which registers its
parser with `register(commands)` and imports its client library only when run, so
that `kwire serve` starts fast.

Exit codes a script can rely on are in kwire.cli.common (EXIT_*).
"""

from __future__ import annotations

import sys

# kio and trio import hypothesis (and through it pytest) whenever it is installed,
# to register test strategies; a broker process never uses them, and they cost
# ~300 ms of start-up. Blocked here, before anything imports kio or trio.
if "hypothesis" not in sys.modules:
    sys.modules["hypothesis"] = None  # type: ignore[assignment]

import argparse  # noqa: E402
import importlib  # noqa: E402
import logging  # noqa: E402

# The subcommand modules, in the order `kwire --help` lists them.
SUBCOMMAND_MODULES = (
    "serve",
    "topic",
    "group",
    "produce",
    "consume",
    "cluster",
    "acl",
    "user",
    "dump_log",
    "perf",
    "mirror",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kwire", description="A Kafka-compatible broker and its tools."
    )
    parser.add_argument("--log-level", default="INFO", help="Python logging level (INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"kwire.cli.{name}")
        except ModuleNotFoundError as e:
            # A subcommand still being written (or a module removed): the others work.
            if e.name != f"kwire.cli.{name}":
                raise
            continue
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from kwire.cli.common import CliError, report

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kazoo logs every (re)connection at INFO; kwire logs what matters of them itself.
    logging.getLogger("kazoo.client").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        return args.run(args)
    except CliError as e:
        return report(e)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `kwire consume ... | head`: the reader went away; not an error of ours.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
