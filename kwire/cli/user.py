"""`kwire user list|describe|set|delete`: SCRAM credentials, as kafka-configs.sh
--entity-type users --alter --add-config 'SCRAM-SHA-256=[iterations=8192,password=x]'
manages them (DescribeUserScramCredentials, AlterUserScramCredentials)."""

from __future__ import annotations

import argparse
from typing import Any

from kwire.cli.common import (
    EXIT_OK,
    CliError,
    add_connection_args,
    admin_client,
    admin_request,
    print_table,
    report,
    require_cluster_describe,
    result,
)

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
# Kafka's default (ScramMechanism.minIterations, and kafka-configs.sh's default).
DEFAULT_ITERATIONS = 4096
USER_COLUMNS = ("USER", "MECHANISM", "ITERATIONS")


def register(commands: Any) -> None:
    user = commands.add_parser("user", help="SCRAM credentials of users (as kafka-configs.sh)")
    actions = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    list_ = actions.add_parser("list", help="every user with a SCRAM credential")
    list_.set_defaults(run=run_describe, names=[])
    describe = actions.add_parser("describe", help="the SCRAM credentials of users")
    describe.add_argument("names", nargs="+", metavar="NAME")
    describe.set_defaults(run=run_describe)
    set_ = actions.add_parser("set", help="create or replace a user's SCRAM credential")
    set_.add_argument("name", metavar="NAME")
    set_.add_argument("--mechanism", required=True, choices=MECHANISMS, type=str.upper)
    set_.add_argument("--password", required=True)
    set_.add_argument(
        "--iterations", type=int, default=DEFAULT_ITERATIONS, help=f"({DEFAULT_ITERATIONS})"
    )
    set_.set_defaults(run=run_set)
    delete = actions.add_parser("delete", help="remove a user's SCRAM credential")
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--mechanism", required=True, choices=MECHANISMS, type=str.upper)
    delete.set_defaults(run=run_delete)
    for parser in (list_, describe, set_, delete):
        add_connection_args(parser)


def _mechanism(name: str) -> Any:
    from confluent_kafka.admin import ScramMechanism

    return ScramMechanism[name.replace("-", "_")]


def _mechanism_name(mechanism: Any) -> str:
    return mechanism.name.replace("_", "-")


def run_describe(args: argparse.Namespace) -> int:
    admin = admin_client(args)
    require_cluster_describe(admin, args, "describe users")
    names = list(dict.fromkeys(args.names))
    code = EXIT_OK
    descriptions: list[Any] = []
    if not names:
        future = admin_request(
            "describe users", admin.describe_user_scram_credentials, request_timeout=args.timeout
        )
        descriptions = list(result(future, "describe users", args.timeout).values())
    else:
        futures = admin_request(
            "describe users",
            admin.describe_user_scram_credentials,
            names,
            request_timeout=args.timeout,
        )
        for name in names:
            try:
                descriptions.append(result(futures[name], f"user {name}", args.timeout))
            except CliError as e:
                code = report(e)
    rows = [
        (d.user, _mechanism_name(info.mechanism), info.iterations)
        for d in sorted(descriptions, key=lambda d: d.user)
        for info in d.scram_credential_infos
    ]
    print_table(USER_COLUMNS, rows)
    return code


def run_set(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import ScramCredentialInfo, UserScramCredentialUpsertion

    admin = admin_client(args)
    info = ScramCredentialInfo(_mechanism(args.mechanism), args.iterations)
    upsertion = UserScramCredentialUpsertion(args.name, info, args.password.encode())
    futures = admin_request(
        f"user {args.name}",
        admin.alter_user_scram_credentials,
        [upsertion],
        request_timeout=args.timeout,
    )
    result(futures[args.name], f"user {args.name}", args.timeout)
    print(f"Completed updating config for user {args.name}.")
    return EXIT_OK


def run_delete(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import UserScramCredentialDeletion

    admin = admin_client(args)
    deletion = UserScramCredentialDeletion(args.name, _mechanism(args.mechanism))
    futures = admin_request(
        f"user {args.name}",
        admin.alter_user_scram_credentials,
        [deletion],
        request_timeout=args.timeout,
    )
    result(futures[args.name], f"user {args.name}", args.timeout)
    print(f"Completed updating config for user {args.name}.")
    return EXIT_OK
