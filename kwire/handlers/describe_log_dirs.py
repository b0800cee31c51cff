"""DescribeLogDirs (key 35): this broker's log directory and the replicas in it.

Every broker answers for itself, as Kafka's ReplicaManager.describeLogDirs does:
each replica's size on disk and offset lag (Kafka's high watermark minus log end,
floored at 0, so always 0 for a current log; only a future log, which kwire never
has, lags), and since v4 the volume's total and usable bytes. kwire keeps its logs
in one directory, the first of `log.dirs`: that is the one described.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.broker import Partition
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation
from kwire.security.authorizer import authorize_cluster

log = logging.getLogger(__name__)


def wanted_partitions(topics: Iterable[Any] | None) -> set[tuple[str, int]] | None:
    """The (topic, partition) pairs asked for; None means all of them."""
    if topics is None:
        return None
    return {(t.topic, int(p)) for t in topics for p in t.partitions}


def offset_lag(partition: Partition) -> int:
    # Kafka's getLogEndOffsetLag for a current (not future) log.
    return max(partition.high_watermark - partition.log_end_offset, 0)


def describe_log_dir(module: Any, log_dir: Path, partitions: Iterable[Partition]) -> Any:
    """One DescribeLogDirsResult: the replicas in `log_dir`, grouped by topic."""
    path = os.path.abspath(log_dir)
    try:
        usage = shutil.disk_usage(path)
    except OSError as e:
        # Kafka's answer for an offline log dir.
        log.warning("Unable to describe replica dirs for %s: %r", path, e)
        return make(module.DescribeLogDirsResult, error_code=ErrorCode.kafka_storage_error, log_dir=path, topics=())
    by_topic: dict[str, list[Any]] = {}
    for partition in partitions:
        by_topic.setdefault(partition.topic.name, []).append(
            make(
                module.DescribeLogDirsPartition,
                partition_index=partition.index,
                partition_size=partition.log.size_bytes,
                offset_lag=offset_lag(partition),
                is_future_key=False,
            )
        )
    topics = tuple(
        make(module.DescribeLogDirsTopic, name=name, partitions=tuple(sorted(entries, key=lambda e: e.partition_index)))
        for name, entries in sorted(by_topic.items())
    )
    return make(
        module.DescribeLogDirsResult,
        error_code=ErrorCode.none,
        log_dir=path,
        topics=topics,
        total_bytes=usage.total,
        usable_bytes=usage.free,
    )


@api(35)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(35, ctx.api_version)
    if not authorize_cluster(ctx, AclOperation.DESCRIBE):
        return make(
            module.DescribeLogDirsResponse,
            throttle_time=NO_THROTTLE,
            error_code=ErrorCode.cluster_authorization_failed,
            results=(),
        )
    wanted = wanted_partitions(request.topics)
    broker = ctx.broker
    partitions = [
        p for p in broker.all_partitions() if wanted is None or (p.topic.name, p.index) in wanted
    ]
    return make(
        module.DescribeLogDirsResponse,
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        results=(describe_log_dir(module, broker.log_dir, partitions),),
    )
