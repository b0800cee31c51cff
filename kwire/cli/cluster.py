"""`kwire cluster [--under-replicated]`: the cluster id, the controller, the brokers
(DescribeCluster) and the partitions that need attention (Metadata): under-replicated
(ISR smaller than the replicas) and offline (no leader), as kafka-topics.sh
--describe --under-replicated-partitions / --unavailable-partitions report them."""

from __future__ import annotations

import argparse
from typing import Any

from kwire.cli.common import (
    EXIT_OK,
    add_connection_args,
    admin_client,
    kafka_error,
    print_table,
    result,
)

PARTITION_COLUMNS = ("TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR")


def register(commands: Any) -> None:
    cluster = commands.add_parser(
        "cluster", help="cluster id, controller, brokers, under-replicated and offline partitions"
    )
    cluster.add_argument(
        "--under-replicated",
        action="store_true",
        help="only the under-replicated partitions, one per line",
    )
    add_connection_args(cluster)
    cluster.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    admin = admin_client(args)
    try:
        # One Metadata request: every topic's partitions with leader, replicas and ISR as
        # broker ids (a dead broker stays in the replicas, where it has no address).
        metadata = admin.list_topics(timeout=args.timeout)
    except KafkaException as e:
        raise kafka_error(e, "metadata") from None
    partitions = [
        (name, p)
        for name, topic in sorted(metadata.topics.items())
        for p in sorted(topic.partitions.values(), key=lambda p: p.id)
    ]
    under_replicated = [(n, p) for n, p in partitions if len(p.isrs) < len(p.replicas)]
    offline = [(n, p) for n, p in partitions if p.leader < 0]
    if args.under_replicated:
        # Nothing at all when none is, as kafka-topics.sh: `| wc -l` counts them.
        if under_replicated:
            print_table(PARTITION_COLUMNS, _rows(under_replicated))
        return EXIT_OK

    description = result(
        admin.describe_cluster(request_timeout=args.timeout), "describe cluster", args.timeout
    )
    controller = description.controller
    print(f"Cluster ID: {description.cluster_id}")
    if controller is None:
        print("Controller: none")
    else:
        print(f"Controller: {controller.id} ({controller.host}:{controller.port})")
    print(flush=True)
    print_table(
        ("ID", "HOST", "PORT", "RACK"),
        ((n.id, n.host, n.port, n.rack) for n in sorted(description.nodes, key=lambda n: n.id)),
        title="Brokers",
    )
    print()
    print(f"Under-replicated partitions: {len(under_replicated)}")
    print(f"Offline partitions: {len(offline)}", flush=True)
    if under_replicated or offline:
        print()
        rows = [(*row, "under-replicated") for row in _rows(under_replicated)]
        rows += [(*row, "offline") for row in _rows(offline)]
        print_table((*PARTITION_COLUMNS, "STATUS"), rows)
    return EXIT_OK


def _rows(partitions: list[tuple[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            name,
            p.id,
            p.leader if p.leader >= 0 else "none",
            ",".join(map(str, p.replicas)),
            ",".join(map(str, p.isrs)),
        )
        for name, p in partitions
    ]
