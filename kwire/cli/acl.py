"""`kwire acl list|create|delete`: ACLs with kafka-acls.sh's options
(--allow-principal/--deny-principal, --allow-host/--deny-host, --operation,
--topic/--group/--cluster/--transactional-id, --resource-pattern-type), through
confluent-kafka's AclBinding and AclBindingFilter."""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from kwire.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_connection_args,
    admin_client,
    admin_request,
    print_table,
    require_cluster_describe,
    result,
)

# Kafka's name of the one cluster resource.
CLUSTER_RESOURCE = "kafka-cluster"
OPERATIONS = (
    "All",
    "Read",
    "Write",
    "Create",
    "Delete",
    "Alter",
    "Describe",
    "ClusterAction",
    "DescribeConfigs",
    "AlterConfigs",
    "IdempotentWrite",
)
PATTERN_TYPES = ("literal", "prefixed", "match", "any")
ACL_COLUMNS = (
    "PRINCIPAL",
    "HOST",
    "OPERATION",
    "PERMISSION",
    "RESOURCE_TYPE",
    "NAME",
    "PATTERN_TYPE",
)


def register(commands: Any) -> None:
    acl = commands.add_parser("acl", help="list, create, delete ACLs (as kafka-acls.sh)")
    actions = acl.add_subparsers(dest="action", required=True, metavar="ACTION")
    list_ = actions.add_parser("list", help="the ACLs matching the options (all if none)")
    create = actions.add_parser("create", help="add ACLs: every principal x host x operation")
    delete = actions.add_parser("delete", help="remove the ACLs matching the options")
    for parser in (list_, create, delete):
        parser.add_argument(
            "--allow-principal",
            action="append",
            default=[],
            metavar="PRINCIPAL",
            help="e.g. User:alice (repeatable)",
        )
        parser.add_argument(
            "--deny-principal",
            action="append",
            default=[],
            metavar="PRINCIPAL",
            help="e.g. User:mallory (repeatable)",
        )
        parser.add_argument(
            "--allow-host",
            action="append",
            default=[],
            metavar="HOST",
            help="hosts of the allow principals (* by default on create)",
        )
        parser.add_argument(
            "--deny-host",
            action="append",
            default=[],
            metavar="HOST",
            help="hosts of the deny principals (* by default on create)",
        )
        parser.add_argument(
            "--host",
            action="append",
            default=[],
            metavar="HOST",
            help="sets both --allow-host and --deny-host",
        )
        parser.add_argument(
            "--operation",
            action="append",
            default=[],
            type=_operation,
            metavar="OPERATION",
            help=f"{', '.join(OPERATIONS)} (repeatable)",
        )
        parser.add_argument("--topic", action="append", default=[], metavar="NAME")
        parser.add_argument("--group", action="append", default=[], metavar="NAME")
        parser.add_argument("--transactional-id", action="append", default=[], metavar="ID")
        parser.add_argument("--cluster", action="store_true", help="the cluster resource")
        parser.add_argument(
            "--resource-pattern-type",
            choices=PATTERN_TYPES,
            type=str.lower,
            help="literal (default), prefixed; and for list/delete match, any",
        )
        add_connection_args(parser)
    list_.add_argument("--principal", action="append", default=[], help="only these principals")
    list_.set_defaults(run=run_list)
    create.set_defaults(run=run_create)
    delete.set_defaults(run=run_delete)


def _operation(text: str) -> str:
    """An operation name as kafka-acls.sh takes it (DescribeConfigs, describe-configs ...)
    to confluent-kafka's AclOperation member name."""
    wanted = text.replace("-", "").replace("_", "").lower()
    for name in OPERATIONS:
        if name.lower() == wanted:
            return "".join("_" + c if c.isupper() else c for c in name).lstrip("_").upper()
    raise argparse.ArgumentTypeError(f"unknown operation {text!r} (one of {', '.join(OPERATIONS)})")


def _resources(args: argparse.Namespace) -> list[tuple[Any, str]]:
    from confluent_kafka.admin import ResourceType

    resources = [(ResourceType.TOPIC, name) for name in args.topic]
    resources += [(ResourceType.GROUP, name) for name in args.group]
    resources += [(ResourceType.TRANSACTIONAL_ID, name) for name in args.transactional_id]
    if args.cluster:
        # confluent-kafka calls Kafka's CLUSTER resource type BROKER (the same code, 4).
        resources.append((ResourceType.BROKER, CLUSTER_RESOURCE))
    return resources


def _principals(args: argparse.Namespace, default_host: str | None) -> list[tuple[str, str, Any]]:
    """(principal, host, permission) of every principal option with its hosts."""
    from confluent_kafka.admin import AclPermissionType

    out = []
    for principals, hosts, permission in (
        (args.allow_principal, args.allow_host, AclPermissionType.ALLOW),
        (args.deny_principal, args.deny_host, AclPermissionType.DENY),
    ):
        for principal in principals:
            if ":" not in principal:
                raise CliError(f"principal {principal!r} is not TYPE:NAME (User:alice)", EXIT_USAGE)
            for host in (hosts + args.host) or [default_host]:
                out.append((principal, host, permission))
    return out


def run_create(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import AclBinding, AclOperation, ResourcePatternType

    pattern = (args.resource_pattern_type or "literal").upper()
    if pattern not in ("LITERAL", "PREFIXED"):
        raise CliError(
            f"ACLs are created with a literal or prefixed pattern, not {pattern.lower()}",
            EXIT_USAGE,
        )
    resources = _resources(args)
    principals = _principals(args, "*")
    if not resources:
        raise CliError(
            "acl create needs --topic, --group, --transactional-id or --cluster", EXIT_USAGE
        )
    if not principals:
        raise CliError("acl create needs --allow-principal or --deny-principal", EXIT_USAGE)
    operations = args.operation or ["ALL"]
    bindings = [
        AclBinding(
            resource_type,
            name,
            ResourcePatternType[pattern],
            principal,
            host,
            AclOperation[operation],
            permission,
        )
        for (resource_type, name), (principal, host, permission), operation in itertools.product(
            resources, principals, operations
        )
    ]
    # A repeated option makes one ACL (confluent-kafka refuses duplicates).
    bindings = list(dict.fromkeys(bindings))
    admin = admin_client(args)
    futures = admin_request(
        "create ACLs", admin.create_acls, bindings, request_timeout=args.timeout
    )
    for binding in bindings:
        result(futures[binding], f"acl {_describe(binding)}", args.timeout)
    print_table(ACL_COLUMNS, (_row(b) for b in bindings), title="Created ACLs")
    return EXIT_OK


def _filters(args: argparse.Namespace, principals: list[str]) -> list[Any]:
    """AclBindingFilters of the options; an option left out matches anything."""
    from confluent_kafka.admin import (
        AclBindingFilter,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    resources: list[tuple[Any, str | None]] = list(_resources(args))
    pattern = args.resource_pattern_type
    if not resources:
        resources = [(ResourceType.ANY, None)]
        pattern = pattern or "any"
    pattern_type = ResourcePatternType[(pattern or "literal").upper()]
    who: list[tuple[str | None, str | None, Any]] = list(_principals(args, None))
    who += [(p, None, AclPermissionType.ANY) for p in principals]
    if not who:
        host = (args.allow_host + args.deny_host + args.host or [None])[0]
        who = [(None, host, AclPermissionType.ANY)]
    operations = args.operation or ["ANY"]
    filters = [
        AclBindingFilter(
            resource_type, name, pattern_type, principal, host, AclOperation[operation], permission
        )
        for (resource_type, name), (principal, host, permission), operation in itertools.product(
            resources, who, operations
        )
    ]
    return list(dict.fromkeys(filters))


def run_list(args: argparse.Namespace) -> int:
    admin = admin_client(args)
    require_cluster_describe(admin, args, "describe ACLs")
    found: dict[Any, None] = {}
    for acl_filter in _filters(args, args.principal):
        future = admin_request(
            "describe ACLs", admin.describe_acls, acl_filter, request_timeout=args.timeout
        )
        found.update(dict.fromkeys(result(future, "describe ACLs", args.timeout)))
    print_table(ACL_COLUMNS, sorted(_row(b) for b in found))
    return EXIT_OK


def run_delete(args: argparse.Namespace) -> int:
    # As kafka-acls.sh --remove: a resource must be named, so that no slip deletes them all.
    if not _resources(args):
        raise CliError(
            "acl delete needs --topic, --group, --transactional-id or --cluster", EXIT_USAGE
        )
    admin = admin_client(args)
    filters = _filters(args, [])
    futures = admin_request("delete ACLs", admin.delete_acls, filters, request_timeout=args.timeout)
    deleted: dict[Any, None] = {}
    for acl_filter in filters:
        deleted.update(dict.fromkeys(result(futures[acl_filter], "delete ACLs", args.timeout)))
    print_table(ACL_COLUMNS, sorted(_row(b) for b in deleted), title="Deleted ACLs")
    return EXIT_OK


def _row(binding: Any) -> tuple[str, ...]:
    return (
        binding.principal,
        binding.host,
        binding.operation.name,
        binding.permission_type.name,
        "CLUSTER" if binding.restype.name == "BROKER" else binding.restype.name,
        binding.name,
        binding.resource_pattern_type.name,
    )


def _describe(binding: Any) -> str:
    return " ".join(_row(binding))
