"""`kwire topic create|list|describe|alter|delete|add-partitions`: topics, as
kafka-topics.sh (and kafka-configs.sh --entity-type topics) manage them, through
confluent-kafka's AdminClient."""

from __future__ import annotations

import argparse
from typing import Any

from kwire.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_connection_args,
    admin_client,
    admin_request,
    kafka_error,
    parse_config_pairs,
    print_table,
    report,
    result,
)

# Kafka's Topic.INTERNAL_TOPICS: what --exclude-internal leaves out.
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
PARTITION_COLUMNS = ("TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR")


def register(commands: Any) -> None:
    topic = commands.add_parser("topic", help="create, list, describe, alter, delete topics")
    actions = topic.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="create a topic")
    create.add_argument("name", metavar="NAME")
    create.add_argument(
        "--partitions", type=int, default=-1, help="partition count (broker's num.partitions)"
    )
    create.add_argument(
        "--replication-factor",
        type=int,
        default=-1,
        help="replicas per partition (broker's default.replication.factor)",
    )
    create.add_argument(
        "--config", action="append", metavar="KEY=VALUE", help="a topic config (repeatable)"
    )
    create.add_argument(
        "--if-not-exists", action="store_true", help="succeed if the topic exists already"
    )
    create.set_defaults(run=run_create)

    list_ = actions.add_parser("list", help="topic names, one per line")
    list_.add_argument(
        "--exclude-internal", action="store_true", help="leave out Kafka's internal topics"
    )
    list_.set_defaults(run=run_list)

    describe = actions.add_parser("describe", help="partitions, replicas, ISR and configs")
    describe.add_argument("names", nargs="*", metavar="NAME", help="topics (all if none)")
    describe.add_argument(
        "--exclude-internal", action="store_true", help="leave out Kafka's internal topics"
    )
    describe.set_defaults(run=run_describe)

    alter = actions.add_parser("alter", help="set or delete topic configs")
    alter.add_argument("name", metavar="NAME")
    alter.add_argument(
        "--config", action="append", metavar="KEY=VALUE", help="set a config (repeatable)"
    )
    alter.add_argument(
        "--delete-config", action="append", metavar="KEY", help="back to the default (repeatable)"
    )
    alter.set_defaults(run=run_alter)

    delete = actions.add_parser("delete", help="delete topics")
    delete.add_argument("names", nargs="+", metavar="NAME")
    delete.add_argument("--if-exists", action="store_true", help="succeed if a topic is absent")
    delete.set_defaults(run=run_delete)

    add = actions.add_parser("add-partitions", help="raise a topic's partition count")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--partitions", type=int, required=True, help="the new total partition count")
    add.set_defaults(run=run_add_partitions)

    for parser in (create, list_, describe, alter, delete, add):
        add_connection_args(parser)


def run_create(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import NewTopic

    admin = admin_client(args)
    config = parse_config_pairs(args.config)
    new = NewTopic(
        args.name,
        num_partitions=args.partitions,
        replication_factor=args.replication_factor,
        config=config,
    )
    future = admin_request(
        f"topic {args.name}",
        admin.create_topics,
        [new],
        operation_timeout=args.timeout,
        request_timeout=args.timeout,
    )[args.name]
    try:
        result(future, f"topic {args.name}", args.timeout)
    except CliError:
        if args.if_not_exists and _error_code(future) == KafkaError.TOPIC_ALREADY_EXISTS:
            return EXIT_OK
        raise
    print(f"Created topic {args.name}.")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    admin = admin_client(args)
    for name in _topic_names(admin, args):
        print(name)
    return EXIT_OK


def run_describe(args: argparse.Namespace) -> int:
    from confluent_kafka import TopicCollection

    admin = admin_client(args)
    names = list(dict.fromkeys(args.names)) or _topic_names(admin, args)
    if not names:
        return EXIT_OK
    futures = admin_request(
        "describe topics",
        admin.describe_topics,
        TopicCollection(names),
        request_timeout=args.timeout,
    )
    configs = topic_configs(admin, names, args.timeout)
    first = True
    for name in names:
        description = result(futures[name], f"topic {name}", args.timeout)
        partitions = sorted(description.partitions, key=lambda p: p.id)
        replication = len(partitions[0].replicas) if partitions else 0
        fields = [f"Topic: {name}"]
        if description.topic_id is not None:
            fields.append(f"TopicId: {kafka_uuid(description.topic_id)}")
        fields += [
            f"PartitionCount: {len(partitions)}",
            f"ReplicationFactor: {replication}",
            "Configs: " + ",".join(f"{k}={v}" for k, v in sorted(configs[name].items())),
        ]
        if not first:
            print()
        first = False
        print("\t".join(fields), flush=True)
        print_table(
            PARTITION_COLUMNS,
            (
                (
                    name,
                    p.id,
                    p.leader.id if p.leader is not None else "none",
                    ",".join(str(r.id) for r in p.replicas),
                    ",".join(str(r.id) for r in p.isr),
                )
                for p in partitions
            ),
        )
    return EXIT_OK


def kafka_uuid(uuid: Any) -> str:
    """A topic id as Kafka prints it (Uuid.toString: URL-safe base64, no padding);
    confluent-kafka's own str() uses the standard alphabet."""
    import base64

    raw = (uuid.get_most_significant_bits() & (2**64 - 1)).to_bytes(8, "big") + (
        uuid.get_least_significant_bits() & (2**64 - 1)
    ).to_bytes(8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def topic_configs(admin: Any, names: list[str], timeout: float) -> dict[str, dict[str, str]]:
    """Each topic's configs set on the topic itself (DescribeConfigs source
    DYNAMIC_TOPIC_CONFIG), as kafka-topics.sh --describe shows them."""
    from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType

    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    futures = admin_request(
        "describe configs", admin.describe_configs, resources, request_timeout=timeout
    )
    configs: dict[str, dict[str, str]] = {}
    for resource in resources:
        entries = result(futures[resource], f"topic {resource.name}", timeout)
        configs[resource.name] = {
            entry.name: "(sensitive)" if entry.is_sensitive else str(entry.value)
            for entry in entries.values()
            if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        }
    return configs


def run_alter(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    changes = parse_config_pairs(args.config)
    if not changes and not args.delete_config:
        raise CliError("topic alter needs --config or --delete-config", EXIT_USAGE)
    entries = [
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
        for key, value in changes.items()
    ]
    entries += [
        ConfigEntry(key, None, incremental_operation=AlterConfigOpType.DELETE)
        for key in args.delete_config or ()
    ]
    admin = admin_client(args)
    resource = ConfigResource(ResourceType.TOPIC, args.name, incremental_configs=entries)
    futures = admin_request(
        f"topic {args.name}",
        admin.incremental_alter_configs,
        [resource],
        request_timeout=args.timeout,
    )
    result(futures[resource], f"topic {args.name}", args.timeout)
    print(f"Completed updating config for topic {args.name}.")
    return EXIT_OK


def run_delete(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaError

    admin = admin_client(args)
    names = list(dict.fromkeys(args.names))
    futures = admin_request(
        "delete topics",
        admin.delete_topics,
        names,
        operation_timeout=args.timeout,
        request_timeout=args.timeout,
    )
    # Every topic is tried; the exit code says whether any failed.
    code = EXIT_OK
    for name in names:
        try:
            result(futures[name], f"topic {name}", args.timeout)
        except CliError as e:
            if args.if_exists and _error_code(futures[name]) == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue
            code = report(e)
        else:
            print(f"Deleted topic {name}.")
    return code


def run_add_partitions(args: argparse.Namespace) -> int:
    from confluent_kafka.admin import NewPartitions

    admin = admin_client(args)
    futures = admin_request(
        f"topic {args.name}",
        admin.create_partitions,
        [NewPartitions(args.name, args.partitions)],
        operation_timeout=args.timeout,
        request_timeout=args.timeout,
    )
    result(futures[args.name], f"topic {args.name}", args.timeout)
    print(f"Topic {args.name} has {args.partitions} partitions.")
    return EXIT_OK


def _topic_names(admin: Any, args: argparse.Namespace) -> list[str]:
    from confluent_kafka import KafkaException

    try:
        metadata = admin.list_topics(timeout=args.timeout)
    except KafkaException as e:
        raise kafka_error(e, "list topics") from None
    names = sorted(metadata.topics)
    if args.exclude_internal:
        names = [n for n in names if n not in INTERNAL_TOPICS]
    return names


def _error_code(future: Any) -> int | None:
    """The KafkaError code a finished admin future failed with (None: no Kafka error)."""
    from confluent_kafka import KafkaError

    error = future.exception(timeout=0)
    if error is not None and error.args and isinstance(error.args[0], KafkaError):
        return error.args[0].code()
    return None
