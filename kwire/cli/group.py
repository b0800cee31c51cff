"""`kwire group list|describe|reset-offsets|delete`: consumer groups, as
kafka-consumer-groups.sh manages them, through confluent-kafka's AdminClient
(ListGroups, DescribeGroups, OffsetFetch, OffsetCommit, DeleteGroups, ListOffsets)."""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from kwire.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_connection_args,
    admin_client,
    client_config,
    print_table,
    report,
    result,
)

# Group states as Kafka names them (ConsumerGroupState.toString), from confluent-kafka's enum.
KAFKA_STATE_NAMES = {
    "UNKNOWN": "Unknown",
    "PREPARING_REBALANCING": "PreparingRebalance",
    "COMPLETING_REBALANCING": "CompletingRebalance",
    "STABLE": "Stable",
    "DEAD": "Dead",
    "EMPTY": "Empty",
}
OFFSETS_COLUMNS = (
    "GROUP",
    "TOPIC",
    "PARTITION",
    "CURRENT-OFFSET",
    "LOG-END-OFFSET",
    "LAG",
    "CONSUMER-ID",
    "HOST",
    "CLIENT-ID",
)
MEMBERS_COLUMNS = ("GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS", "ASSIGNMENT")
STATE_COLUMNS = ("GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS")
RESET_COLUMNS = ("GROUP", "TOPIC", "PARTITION", "NEW-OFFSET")
# Kafka resets only groups nobody consumes in: a member would overwrite the new offsets.
RESETTABLE_STATES = frozenset({"Empty", "Dead"})
OFFSET_DELETE_KEY = 47


def register(commands: Any) -> None:
    group = commands.add_parser(
        "group", help="list, describe, reset offsets of, delete consumer groups"
    )
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    list_ = actions.add_parser("list", help="groups and their states")
    list_.add_argument(
        "--state",
        action="extend",
        nargs="+",
        type=parse_state,
        metavar="STATE",
        help="only groups in these states (Stable, Empty, PreparingRebalance, ...)",
    )
    list_.set_defaults(run=run_list)

    describe = actions.add_parser(
        "describe", help="offsets and lag per partition, members, or state of groups"
    )
    describe.add_argument("groups", nargs="*", metavar="GROUP")
    describe.add_argument("--all-groups", action="store_true", help="describe every group")
    view = describe.add_mutually_exclusive_group()
    view.add_argument(
        "--members", action="store_true", help="the members and their assigned partitions"
    )
    view.add_argument(
        "--state", action="store_true", help="coordinator, assignment strategy, state, members"
    )
    describe.set_defaults(run=run_describe)

    reset = actions.add_parser("reset-offsets", help="move a group's committed offsets")
    reset.add_argument("--group", required=True, metavar="GROUP")
    scope = reset.add_mutually_exclusive_group(required=True)
    scope.add_argument(
        "--topic",
        action="append",
        metavar="TOPIC[:P,P]",
        help="a topic, or some of its partitions (repeatable)",
    )
    scope.add_argument(
        "--all-topics", action="store_true", help="every topic the group has offsets for"
    )
    spec = reset.add_mutually_exclusive_group(required=True)
    spec.add_argument("--to-earliest", action="store_true", help="to the log start offset")
    spec.add_argument("--to-latest", action="store_true", help="to the log end offset")
    spec.add_argument(
        "--to-datetime",
        type=parse_datetime,
        metavar="YYYY-MM-DDTHH:mm:SS[.sss][Z|+hh:mm]",
        help="to the first record at or after this time (local time without a zone)",
    )
    spec.add_argument(
        "--shift-by", type=int, metavar="N", help="N records from the current offset (+/-)"
    )
    spec.add_argument("--to-offset", type=int, metavar="OFFSET", help="to this offset")
    mode = reset.add_mutually_exclusive_group()
    mode.add_argument(
        "--dry-run", action="store_true", help="print the new offsets only (the default)"
    )
    mode.add_argument("--execute", action="store_true", help="commit the new offsets")
    reset.set_defaults(run=run_reset_offsets)

    delete = actions.add_parser("delete", help="delete empty groups and their offsets")
    delete.add_argument(
        "--group", action="extend", nargs="+", required=True, metavar="GROUP", dest="groups"
    )
    delete.set_defaults(run=run_delete)

    delete_offsets = actions.add_parser(
        "delete-offsets", help="delete a group's committed offsets of some topics (OffsetDelete)"
    )
    delete_offsets.add_argument("--group", required=True, metavar="GROUP")
    delete_offsets.add_argument(
        "--topic",
        action="append",
        required=True,
        metavar="TOPIC[:P,P]",
        help="a topic, or some of its partitions (repeatable)",
    )
    delete_offsets.set_defaults(run=run_delete_offsets)

    for parser in (list_, describe, reset, delete, delete_offsets):
        add_connection_args(parser)


def parse_state(text: str) -> str:
    """A state name as Kafka's tool takes it (any case): its enum name in confluent-kafka."""
    by_lower = {kafka.lower(): enum for enum, kafka in KAFKA_STATE_NAMES.items()}
    enum = by_lower.get(text.lower()) or (
        text.upper() if text.upper() in KAFKA_STATE_NAMES else None
    )
    if enum is None or enum == "UNKNOWN":
        known = ", ".join(v for v in KAFKA_STATE_NAMES.values() if v != "Unknown")
        raise argparse.ArgumentTypeError(f"unknown group state {text!r} (one of {known})")
    return enum


def parse_datetime(text: str) -> int:
    """--to-datetime as Kafka's tool takes it (ISO 8601, milliseconds optional, local time
    when no zone is given): epoch milliseconds."""
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cannot parse {text!r}: expected YYYY-MM-DDTHH:mm:SS[.sss][Z|+hh:mm]"
        ) from None
    if "T" not in text:
        raise argparse.ArgumentTypeError(f"cannot parse {text!r}: no 'T' between date and time")
    if when.tzinfo is None:
        when = when.astimezone()  # the local zone, as Kafka's tool uses the JVM's
    return int(when.timestamp() * 1000)


def state_name(state: Any) -> str:
    return KAFKA_STATE_NAMES.get(getattr(state, "name", str(state)), str(state))


def run_list(args: argparse.Namespace) -> int:
    from confluent_kafka import ConsumerGroupState

    admin = admin_client(args)
    options: dict[str, Any] = {"request_timeout": args.timeout}
    if args.state:
        options["states"] = {ConsumerGroupState[name] for name in args.state}
    listing = result(admin.list_consumer_groups(**options), "list groups", args.timeout)
    for error in listing.errors:
        report(CliError(f"list groups: {error}"))
    groups = sorted(listing.valid, key=lambda g: g.group_id)
    print_table(("GROUP", "STATE"), ((g.group_id, state_name(g.state)) for g in groups))
    return EXIT_FAILED if listing.errors else EXIT_OK


def run_describe(args: argparse.Namespace) -> int:
    if bool(args.groups) == args.all_groups:
        raise CliError("group describe needs GROUP names or --all-groups", EXIT_USAGE)
    admin = admin_client(args)
    names = list(dict.fromkeys(args.groups))
    if args.all_groups:
        listing = result(
            admin.list_consumer_groups(request_timeout=args.timeout), "list groups", args.timeout
        )
        names = sorted(g.group_id for g in listing.valid)
    futures = admin.describe_consumer_groups(names, request_timeout=args.timeout) if names else {}
    code = EXIT_OK
    first = True
    for name in names:
        try:
            description = result(futures[name], f"group {name}", args.timeout)
        except CliError as e:
            code = report(e)
            continue
        state = state_name(description.state)
        if state == "Dead":
            # Kafka's own words; DescribeGroups answers Dead (no error) for an unknown group.
            code = report(CliError(f"Consumer group '{name}' does not exist."))
            continue
        if not first:
            print()
        first = False
        if args.state:
            coordinator = description.coordinator
            print_table(
                STATE_COLUMNS,
                [
                    (
                        name,
                        f"{coordinator.host}:{coordinator.port} ({coordinator.id})",
                        description.partition_assignor or None,
                        state,
                        len(description.members),
                    )
                ],
            )
            continue
        _warn_state(name, state)
        if args.members:
            members = _member_rows(name, description)
            if members:  # an empty group: only the stderr line, as Kafka's tool
                print_table(MEMBERS_COLUMNS, members)
            continue
        committed = committed_offsets(admin, name, args.timeout)
        rows = _offset_rows(admin, name, description, committed, args.timeout)
        if rows:
            print_table(OFFSETS_COLUMNS, rows)
    return code


def describe_group(admin: Any, group: str, timeout: float) -> Any:
    """DescribeGroups of one group: its ConsumerGroupDescription (state Dead: unknown)."""
    futures = admin.describe_consumer_groups([group], request_timeout=timeout)
    return result(futures[group], f"group {group}", timeout)


def _warn_state(name: str, state: str) -> None:
    """What Kafka's tool says on stderr about a group without a stable membership."""
    if state == "Empty":
        print(f"Consumer group '{name}' has no active members.", file=sys.stderr, flush=True)
    elif state in ("PreparingRebalance", "CompletingRebalance"):
        print(f"Warning: Consumer group '{name}' is rebalancing.", file=sys.stderr, flush=True)


def _assigned(member: Any) -> list[tuple[str, int]]:
    partitions = member.assignment.topic_partitions if member.assignment else []
    return sorted((tp.topic, tp.partition) for tp in partitions)


def _member_rows(name: str, description: Any) -> list[tuple[Any, ...]]:
    rows = []
    for member in sorted(description.members, key=lambda m: m.member_id):
        assigned = _assigned(member)
        by_topic: dict[str, list[int]] = {}
        for topic, partition in assigned:
            by_topic.setdefault(topic, []).append(partition)
        # Kafka's format: topic(0,1,2),other(0)
        assignment = ",".join(
            f"{topic}({','.join(map(str, parts))})" for topic, parts in by_topic.items()
        )
        rows.append(
            (
                name,
                member.member_id,
                member.host,
                member.client_id,
                len(assigned),
                assignment or "-",
            )
        )
    return rows


def committed_offsets(admin: Any, group: str, timeout: float) -> dict[tuple[str, int], int]:
    """The group's committed offsets (OffsetFetch of every partition)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    futures = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=timeout
    )
    answer = result(futures[group], f"group {group}", timeout)
    offsets = {}
    for tp in answer.topic_partitions or ():
        if tp.error is not None:
            raise CliError(
                f"group {group}: {tp.topic}-{tp.partition}: {tp.error.name()}: {tp.error.str()}"
            )
        if tp.offset >= 0:
            offsets[(tp.topic, tp.partition)] = tp.offset
    return offsets


def log_offsets(
    admin: Any,
    partitions: Iterable[tuple[str, int]],
    spec: Any,
    timeout: float,
    *,
    lenient: bool = False,
) -> dict[tuple[str, int], int]:
    """ListOffsets for each partition with one OffsetSpec (earliest, latest, a time):
    the offset found, -1 if none (no record at or after that time). A partition whose
    lookup fails is a CliError, or (lenient) left out."""
    from confluent_kafka import TopicPartition

    wanted = {TopicPartition(topic, partition): spec for topic, partition in partitions}
    if not wanted:
        return {}
    futures = admin.list_offsets(wanted, request_timeout=timeout)
    offsets = {}
    for tp, future in futures.items():
        try:
            offsets[(tp.topic, tp.partition)] = result(
                future, f"{tp.topic}-{tp.partition}", timeout
            ).offset
        except CliError:
            if not lenient:
                raise
    return offsets


def _offset_rows(
    admin: Any,
    name: str,
    description: Any,
    committed: dict[tuple[str, int], int],
    timeout: float,
) -> list[tuple[Any, ...]]:
    """kafka-consumer-groups.sh --describe's rows: one per partition the group has an
    offset for or a member is assigned, and one per member assigned nothing."""
    from confluent_kafka.admin import OffsetSpec

    owner: dict[tuple[str, int], Any] = {}
    idle = []
    for member in description.members:
        assigned = _assigned(member)
        if not assigned:
            idle.append(member)
        for partition in assigned:
            owner[partition] = member
    partitions = sorted(set(committed) | set(owner))
    # A partition without a log end (its topic deleted since the commit) shows "-".
    ends = log_offsets(admin, partitions, OffsetSpec.latest(), timeout, lenient=True)
    rows: list[tuple[Any, ...]] = []
    for partition in partitions:
        current = committed.get(partition)
        end = ends.get(partition)
        lag = end - current if current is not None and end is not None and end >= 0 else None
        member = owner.get(partition)
        rows.append(
            (
                name,
                *partition,
                current,
                end,
                lag,
                *((member.member_id, member.host, member.client_id) if member else (None,) * 3),
            )
        )
    for member in sorted(idle, key=lambda m: m.member_id):
        rows.append(
            (name, None, None, None, None, None, member.member_id, member.host, member.client_id)
        )
    return rows


def parse_topic_partitions(specs: Sequence[str]) -> list[tuple[str, list[int] | None]]:
    """--topic T or T:0,2 (Kafka's form): each topic and its partitions (None: all)."""
    parsed = []
    for spec in specs:
        topic, sep, partitions = spec.partition(":")
        if not topic:
            raise CliError(f"--topic {spec!r}: no topic name", EXIT_USAGE)
        if not sep:
            parsed.append((topic, None))
            continue
        try:
            numbers = [int(p) for p in partitions.split(",")]
        except ValueError:
            raise CliError(
                f"--topic {spec!r}: partitions must be numbers, as in {topic}:0,1", EXIT_USAGE
            ) from None
        parsed.append((topic, numbers))
    return parsed


def _partitions_to_reset(
    admin: Any, args: argparse.Namespace, committed: dict[tuple[str, int], int]
) -> list[tuple[str, int]]:
    if args.all_topics:
        return sorted(committed)
    return topic_partitions(admin, args)


def topic_partitions(admin: Any, args: argparse.Namespace) -> list[tuple[str, int]]:
    """The partitions --topic T / T:P,P names, each checked to exist."""
    from confluent_kafka import TopicCollection

    chosen: set[tuple[str, int]] = set()
    specs = parse_topic_partitions(args.topic)
    # DescribeTopics, not a Metadata request naming the topic: that one may create it.
    topics = list(dict.fromkeys(topic for topic, _ in specs))
    futures = admin.describe_topics(TopicCollection(topics), request_timeout=args.timeout)
    existing = {
        topic: {p.id for p in result(futures[topic], f"topic {topic}", args.timeout).partitions}
        for topic in topics
    }
    for topic, numbers in specs:
        for number in numbers if numbers is not None else sorted(existing[topic]):
            if number not in existing[topic]:
                raise CliError(
                    f"topic {topic} has no partition {number} ({len(existing[topic])} partitions)"
                )
            chosen.add((topic, number))
    return sorted(chosen)


def run_reset_offsets(args: argparse.Namespace) -> int:
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    group = args.group
    admin = admin_client(args)
    description = describe_group(admin, group, args.timeout)
    state = state_name(description.state)
    if state not in RESETTABLE_STATES:
        raise CliError(
            f"Assignments can only be reset if the group '{group}' is inactive, "
            f"but the current state is {state}."
        )
    committed = committed_offsets(admin, group, args.timeout)
    partitions = _partitions_to_reset(admin, args, committed)
    starts = log_offsets(admin, partitions, OffsetSpec.earliest(), args.timeout)
    ends = log_offsets(admin, partitions, OffsetSpec.latest(), args.timeout)
    if args.to_datetime is not None:
        found = log_offsets(
            admin, partitions, OffsetSpec.for_timestamp(args.to_datetime), args.timeout
        )
        # No record at or after that time: the log end, as Kafka's tool does.
        wanted = {p: found[p] if found[p] >= 0 else ends[p] for p in partitions}
    elif args.to_earliest:
        wanted = dict(starts)
    elif args.to_latest:
        wanted = dict(ends)
    elif args.to_offset is not None:
        wanted = {p: args.to_offset for p in partitions}
    else:
        missing = [p for p in partitions if p not in committed]
        if missing:
            topic, partition = missing[0]
            raise CliError(
                f"Cannot shift offset for partition {topic}-{partition} since there is no "
                "current committed offset"
            )
        wanted = {p: committed[p] + args.shift_by for p in partitions}
    new_offsets = {p: _clamp(p, wanted[p], starts[p], ends[p]) for p in partitions}

    if args.execute:
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(t, p, offset) for (t, p), offset in new_offsets.items()]
        )
        if new_offsets:
            futures = admin.alter_consumer_group_offsets([request], request_timeout=args.timeout)
            answer = result(futures[group], f"group {group}", args.timeout)
            failures = [tp for tp in answer.topic_partitions if tp.error is not None]
            if failures:
                tp = failures[0]
                raise CliError(
                    f"group {group}: {tp.topic}-{tp.partition}: {tp.error.name()}: {tp.error.str()}"
                )
    elif not args.dry_run:
        print(
            "WARN: No action will be performed as the --execute option is missing. "
            "Add --execute to commit these offsets; --dry-run prints them without this warning.",
            file=sys.stderr,
            flush=True,
        )
    print_table(
        RESET_COLUMNS, ((group, t, p, offset) for (t, p), offset in sorted(new_offsets.items()))
    )
    return EXIT_OK


def _clamp(partition: tuple[str, int], offset: int, start: int, end: int) -> int:
    """An offset inside [log start, log end], with Kafka's warnings when it was not."""
    topic, number = partition
    if offset > end:
        print(
            f"New offset ({offset}) is higher than latest offset for topic partition "
            f"{topic}-{number}. Value will be set to {end}",
            file=sys.stderr,
        )
        return end
    if offset < start:
        print(
            f"New offset ({offset}) is lower than earliest offset for topic partition "
            f"{topic}-{number}. Value will be set to {start}",
            file=sys.stderr,
        )
        return start
    return offset


def run_delete(args: argparse.Namespace) -> int:
    admin = admin_client(args)
    names = list(dict.fromkeys(args.groups))
    futures = admin.delete_consumer_groups(names, request_timeout=args.timeout)
    # Every group is tried; the exit code says whether any failed.
    code = EXIT_OK
    for name in names:
        try:
            result(futures[name], f"group {name}", args.timeout)
        except CliError as e:
            code = report(e)
        else:
            print(f"Deleted consumer group '{name}'.")
    return code


def run_delete_offsets(args: argparse.Namespace) -> int:
    """OffsetDelete to the group's coordinator. confluent-kafka's Python AdminClient has
    no call for it, so kwire's own client (kwire.cluster.broker_client) sends it."""
    import trio

    group = args.group
    admin = admin_client(args)
    description = describe_group(admin, group, args.timeout)
    if state_name(description.state) == "Dead":
        raise CliError(
            f"group {group}: GROUP_ID_NOT_FOUND: Consumer group '{group}' does not exist."
        )
    partitions = topic_partitions(admin, args)
    coordinator = description.coordinator
    security = client_security(args)
    error, errors = trio.run(
        _offset_delete,
        coordinator.host,
        coordinator.port,
        group,
        partitions,
        security,
        args.timeout,
    )
    if error is not None:
        raise CliError(f"group {group}: {error}")
    print_table(
        ("TOPIC", "PARTITION", "STATUS"),
        (
            (topic, partition, "Successful" if errors[(topic, partition)] is None
             else f"Error: {errors[(topic, partition)]}")
            for topic, partition in partitions
        ),
    )  # fmt: skip
    return EXIT_FAILED if any(e is not None for e in errors.values()) else EXIT_OK


async def _offset_delete(
    host: str,
    port: int,
    group: str,
    partitions: list[tuple[str, int]],
    security: Any,
    timeout: float,
) -> tuple[str | None, dict[tuple[str, int], str | None]]:
    """One OffsetDelete request: the top-level error (Kafka's name), or each partition's."""
    from kio.schema.errors import ErrorCode

    from kwire.cluster.broker_client import BrokerConnection, BrokerConnectionError
    from kwire.errors import KafkaError
    from kwire.protocol.messages import make, request_module

    by_topic: dict[str, list[int]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append(partition)
    try:
        async with BrokerConnection.open(
            host, port, client_id="kwire-group", timeout=timeout, security=security
        ) as conn:
            await conn.negotiate()
            version = conn.version_for(OFFSET_DELETE_KEY, 0)
            module = request_module(OFFSET_DELETE_KEY, version)
            request = make(
                module.OffsetDeleteRequest,
                group_id=group,
                topics=tuple(
                    make(
                        module.OffsetDeleteRequestTopic,
                        name=topic,
                        partitions=tuple(
                            make(module.OffsetDeleteRequestPartition, partition_index=p)
                            for p in numbers
                        ),
                    )
                    for topic, numbers in by_topic.items()
                ),
            )
            response = await conn.request(OFFSET_DELETE_KEY, version, request)
    except (BrokerConnectionError, KafkaError) as e:
        raise CliError(f"group {group}: coordinator {host}:{port}: {e}") from None
    if response.error_code != ErrorCode.none:
        return _error_text(ErrorCode(response.error_code)), {}
    errors: dict[tuple[str, int], str | None] = {p: None for p in partitions}
    for topic in response.topics:
        for p in topic.partitions:
            if p.error_code != ErrorCode.none:
                errors[(topic.name, p.partition_index)] = _error_text(ErrorCode(p.error_code))
    return None, errors


def _error_text(code: Any) -> str:
    """An error code by Kafka's name (NON_EMPTY_GROUP ...)."""
    return code.name.upper()


def client_security(args: argparse.Namespace) -> Any:
    """kwire's ClientSecurity from the same settings confluent-kafka gets (--command-config):
    protocol, TLS trust and key stores (PEM), SASL mechanism and credentials."""
    import ssl

    from kwire.config import ConfigError
    from kwire.security.client import ClientSecurity

    config = client_config(args)
    protocol = str(config.get("security.protocol", "PLAINTEXT")).upper()
    context = None
    check_hostname = str(config.get("ssl.endpoint.identification.algorithm", "https")) != "none"
    if protocol in ("SSL", "SASL_SSL"):
        try:
            context = ssl.create_default_context(cafile=config.get("ssl.ca.location"))
            context.check_hostname = check_hostname
            if config.get("ssl.certificate.location"):
                context.load_cert_chain(
                    config["ssl.certificate.location"],
                    config.get("ssl.key.location"),
                    config.get("ssl.key.password"),
                )
        except (OSError, ssl.SSLError) as e:
            raise CliError(f"TLS settings of --command-config: {e}", EXIT_USAGE) from None
    try:
        return ClientSecurity(
            protocol=protocol,
            ssl_context=context,
            check_hostname=check_hostname,
            sasl_mechanism=config.get("sasl.mechanism") or config.get("sasl.mechanisms"),
            username=config.get("sasl.username"),
            password=config.get("sasl.password"),
        )
    except ConfigError as e:
        raise CliError(f"--command-config: {e}", EXIT_USAGE) from None
