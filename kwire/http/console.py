"""The web console of the HTTP listener: a page at / and the JSON API it reads.

    GET /                                    the page (kwire/http/static, no build step)
    GET /api/cluster                         broker id, cluster id, brokers, controller
    GET /api/topics                          topics, partitions, offsets, sizes on disk
    GET /api/groups                          groups, members, committed offsets, lag
    GET /api/groups/<id>/lag-history         the group's lag samples of the last hour
    GET /api/topics/<name>/messages?partition=&limit=20
                                             the most recent messages (read_uncommitted:
                                             up to the high watermark, control batches
                                             left out), of one partition or of all

Everything is this broker's view: offsets and sizes of the partitions it hosts, the
groups its coordinator owns. Bad input: 400 or 404 {"error": message}.
"""

from __future__ import annotations

import base64
import struct
from importlib import resources
from typing import TYPE_CHECKING, Any

import trio

from kwire.coordinator.group import GroupState
from kwire.coordinator.group_coordinator import group_coordinator
from kwire.http.lag_history import LagHistory, run_lag_sampler
from kwire.http.server import HttpRequest, HttpResponse
from kwire.log.log import OffsetOutOfRangeError
from kwire.log.segment import CorruptRecordError
from kwire.protocol.records import InvalidBatchError, Record, iter_records, parse_batch_header

if TYPE_CHECKING:
    from kwire.broker import Broker, Partition

# broker.services key of the LagHistory serve_http starts sampling into.
LAG_HISTORY = "lag_history"

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
}
NO_STORE = (("cache-control", "no-store"),)

DEFAULT_MESSAGES = 20
MAX_MESSAGES = 500
# What one messages request reads from a partition at most, whatever `limit` asks.
MAX_READ_BYTES = 8 << 20
_READ_CHUNK = 1 << 20


async def route(broker: Broker, request: HttpRequest) -> HttpResponse | None:
    path = request.path
    static = STATIC.get(path)
    if static is None and path != "/api" and not path.startswith("/api/"):
        return None
    if request.method not in ("GET", "HEAD"):
        return HttpResponse.error(405, "use GET")
    if static is not None:
        name, content_type = static
        body = resources.files("kwire.http").joinpath("static", name).read_bytes()
        return HttpResponse(200, body, content_type, NO_STORE)
    path = path.rstrip("/")
    if path == "/api/cluster":
        return _json(cluster_json(broker))
    if path == "/api/topics":
        return _json({"topics": topics_json(broker)})
    if path == "/api/groups":
        return _json({"groups": groups_json(broker)})
    if path.startswith("/api/groups/") and path.endswith("/lag-history"):
        # Group ids may hold slashes: the id is everything in between.
        group_id = path[len("/api/groups/") : -len("/lag-history")]
        return _lag_history(broker, group_id)
    if path.startswith("/api/topics/") and path.endswith("/messages"):
        topic = path[len("/api/topics/") : -len("/messages")]
        return _messages(broker, topic, request)
    return HttpResponse.error(404, f"no such API: {request.path}")


def _json(value: Any, status: int = 200) -> HttpResponse:
    response = HttpResponse.json(value, status)
    return HttpResponse(response.status, response.body, response.content_type, NO_STORE)


# ---- cluster and topics ------------------------------------------------------------------


def cluster_json(broker: Broker) -> dict[str, Any]:
    image = broker.metadata_image
    return {
        "broker_id": broker.broker_id,
        "cluster_id": image.cluster_id,
        "controller_id": image.controller_id,
        "brokers": [
            {
                "id": b.broker_id,
                "rack": b.rack,
                "endpoints": [
                    {
                        "listener": e.listener_name,
                        "host": e.host,
                        "port": e.port,
                        "security_protocol": e.security_protocol,
                    }
                    for e in b.endpoints.values()
                ],
            }
            for b in sorted(broker.metadata_image.brokers.values(), key=lambda b: b.broker_id)
        ],
    }


def topics_json(broker: Broker) -> list[dict[str, Any]]:
    """Every topic, sorted by name; offsets and sizes are null for partitions hosted
    elsewhere."""
    topics = []
    for topic in sorted(broker.metadata_image.topics.by_name.values(), key=lambda t: t.name):
        partitions = []
        for state in topic.partitions:
            local = broker.partition(topic.name, state.partition_index)
            partitions.append(
                {
                    "partition": state.partition_index,
                    "leader": state.leader_id,
                    "leader_epoch": state.leader_epoch,
                    "replicas": list(state.replicas),
                    "isr": list(state.isr),
                    "offline_replicas": list(state.offline_replicas),
                    "log_start_offset": None if local is None else local.log_start_offset,
                    "log_end_offset": None if local is None else local.log_end_offset,
                    "high_watermark": None if local is None else local.high_watermark,
                    "size_bytes": None if local is None else local.log.size_bytes,
                }
            )
        topics.append(
            {
                "name": topic.name,
                "topic_id": str(topic.topic_id),
                "internal": topic.is_internal,
                "partitions": partitions,
                "size_bytes": sum(p["size_bytes"] or 0 for p in partitions),
                "messages": sum(
                    p["high_watermark"] - p["log_start_offset"]
                    for p in partitions
                    if p["high_watermark"] is not None
                ),
            }
        )
    return topics


# ---- groups --------------------------------------------------------------------------------


def groups_json(broker: Broker) -> list[dict[str, Any]]:
    """The groups this broker's coordinator owns, sorted by id, with the lag of each
    committed partition (kwire.metrics' computation)."""
    from kwire.metrics import consumer_group_lags

    coordinator = group_coordinator(broker)
    if coordinator is None:
        return []
    lags: dict[str, list[Any]] = {}
    for entry in consumer_group_lags(broker):
        lags.setdefault(entry.group, []).append(entry)
    _, listed = coordinator.list_groups()
    groups = []
    for group_id in sorted(g.group_id for g in listed):
        _, group = coordinator.describe_group(group_id)
        if group is None:
            continue
        stable = group.state is GroupState.STABLE
        offsets = [
            {
                "topic": e.topic,
                "partition": e.partition,
                "committed_offset": e.committed_offset,
                "high_watermark": e.high_watermark,
                "lag": e.lag,
            }
            for e in sorted(lags.get(group_id, ()), key=lambda e: (e.topic, e.partition))
        ]
        groups.append(
            {
                "group_id": group_id,
                "state": group.state.value,
                "protocol_type": group.protocol_type or "",
                "protocol": (group.protocol_name or "") if stable else "",
                "generation_id": group.generation_id,
                "members": [
                    {
                        "member_id": m.member_id,
                        "group_instance_id": m.group_instance_id,
                        "client_id": m.client_id,
                        "client_host": m.client_host,
                        "assignment": consumer_assignment(m.assignment)
                        if stable and group.protocol_type == "consumer"
                        else [],
                    }
                    for m in sorted(group.members.values(), key=lambda m: m.member_id)
                ],
                "offsets": offsets,
                "total_lag": sum(o["lag"] for o in offsets),
            }
        )
    return groups


def consumer_assignment(assignment: bytes) -> list[dict[str, Any]]:
    """A ConsumerProtocolAssignment's partitions, [{"topic", "partitions"}] (any version:
    v0's fields are the prefix of all); [] when the bytes are not one."""
    try:
        (version,) = struct.unpack_from(">h", assignment, 0)
        (count,) = struct.unpack_from(">i", assignment, 2)
        if version < 0 or count < 0:
            return []
        position = 6
        topics = []
        for _ in range(count):
            (length,) = struct.unpack_from(">h", assignment, position)
            position += 2
            name = assignment[position : position + length].decode()
            position += length
            (n,) = struct.unpack_from(">i", assignment, position)
            partitions = list(struct.unpack_from(f">{max(n, 0)}i", assignment, position + 4))
            position += 4 + 4 * max(n, 0)
            topics.append({"topic": name, "partitions": sorted(partitions)})
        return sorted(topics, key=lambda t: t["topic"])
    except (struct.error, UnicodeDecodeError):
        return []


def _lag_history(broker: Broker, group_id: str) -> HttpResponse:
    history: LagHistory | None = broker.services.get(LAG_HISTORY)
    if history is None:
        return HttpResponse.error(404, "the lag sampler is not running")
    from kwire.clock import now_ms

    samples = history.samples(group_id, now_ms())
    coordinator = group_coordinator(broker)
    known = coordinator is not None and coordinator.describe_group(group_id)[1] is not None
    if not samples and not known:
        return HttpResponse.error(404, f"no group {group_id!r}")
    return _json(
        {
            "group_id": group_id,
            "interval_ms": history.interval_ms,
            "window_ms": history.window_ms,
            "samples": [s.to_json() for s in samples],
        }
    )


# ---- messages ------------------------------------------------------------------------------


def _messages(broker: Broker, topic_name: str, request: HttpRequest) -> HttpResponse:
    topic = broker.metadata_image.topic(topic_name)
    if topic is None:
        return HttpResponse.error(404, f"no topic {topic_name!r}")
    limit_text = request.param("limit") or str(DEFAULT_MESSAGES)
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_MESSAGES:
        return HttpResponse.error(
            400, f"limit is a number from 1 to {MAX_MESSAGES}, got {limit_text!r}"
        )
    limit = int(limit_text)
    partition_text = request.param("partition") or ""
    if partition_text == "":
        indexes = [p.partition_index for p in topic.partitions]
    elif not partition_text.isdigit():
        return HttpResponse.error(400, f"partition is a number, got {partition_text!r}")
    elif topic.partition(int(partition_text)) is None:
        return HttpResponse.error(
            404,
            f"topic {topic_name!r} has no partition {partition_text} (it has {len(topic.partitions)})",
        )
    else:
        indexes = [int(partition_text)]
    found: list[tuple[int, Record]] = []
    for index in indexes:
        partition = broker.partition(topic_name, index)
        if partition is None:
            if partition_text:
                leader = topic.partitions[index].leader_id
                return HttpResponse.error(
                    404,
                    f"{topic_name}-{index} is not hosted on this broker (its leader is broker {leader})",
                )
            continue
        found += [(index, r) for r in last_records(partition, limit)]
    # The most recent first: by timestamp across partitions, by offset within one.
    found.sort(key=lambda pr: (pr[1].timestamp, pr[1].offset, pr[0]), reverse=True)
    return _json(
        {
            "topic": topic_name,
            "partition": int(partition_text) if partition_text else None,
            "isolation_level": "read_uncommitted",
            "messages": [message_json(index, record) for index, record in found[:limit]],
        }
    )


def last_records(partition: Partition, limit: int) -> list[Record]:
    """Up to `limit` data records just below the high watermark, oldest first, read as a
    read_uncommitted consumer reads (control records are not messages). Reads a window
    below the high watermark, widened while it holds too few (compaction leaves gaps)."""
    high_watermark = partition.high_watermark
    start_floor = partition.log_start_offset
    window = limit
    while True:
        start = max(start_floor, high_watermark - window)
        records, complete = _read_records(partition, start, high_watermark)
        if len(records) >= limit or start <= start_floor or not complete:
            return records[-limit:]
        window *= 4


def _read_records(partition: Partition, start: int, end: int) -> tuple[list[Record], bool]:
    """Data records with start <= offset < end, and whether all of them were read (the
    bytes read are bounded)."""
    records: list[Record] = []
    offset = start
    read_bytes = 0
    while offset < end:
        if read_bytes >= MAX_READ_BYTES:
            return records, False
        try:
            read = partition.log.read(offset, _READ_CHUNK, max_offset=end)
        except (OffsetOutOfRangeError, CorruptRecordError):
            # The log moved under us (retention, truncation) or is damaged: stop here.
            return records, False
        data = memoryview(read.tobytes())
        if not data:
            break
        read_bytes += len(data)
        position = 0
        next_offset = offset
        while position < len(data):
            header = parse_batch_header(data, position)
            batch = data[position : position + header.size]
            position += header.size
            next_offset = header.next_offset
            if header.is_control:
                continue
            try:
                records += [r for r in iter_records(batch) if start <= r.offset < end]
            except InvalidBatchError:
                return records, False
        if next_offset <= offset:
            break
        offset = next_offset
    return records, True


def bytes_json(data: bytes | None) -> tuple[str | None, str | None]:
    """(text, encoding): UTF-8 as itself ("utf-8"), anything else in base64 ("base64");
    (None, None) for a null."""
    if data is None:
        return None, None
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def message_json(partition: int, record: Record) -> dict[str, Any]:
    key, key_encoding = bytes_json(record.key)
    value, value_encoding = bytes_json(record.value)
    headers = []
    for name, header_value in record.headers:
        # Header names were decoded with surrogateescape: their raw bytes, shown the same way.
        text, encoding = bytes_json(header_value)
        headers.append(
            {
                "key": name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                "value": text,
                "value_encoding": encoding,
            }
        )
    return {
        "partition": partition,
        "offset": record.offset,
        "timestamp": record.timestamp,
        "key": key,
        "key_encoding": key_encoding,
        "value": value,
        "value_encoding": value_encoding,
        "headers": headers,
    }


# ---- the lag sampler ---------------------------------------------------------------------


async def sample_lag_history(
    broker: Broker, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Sample consumer group lag into broker.services[LAG_HISTORY] every
    http.console.lag.sample.interval.ms, until cancelled (serve_http runs it)."""
    from kwire.metrics import consumer_group_lags

    history = LagHistory(broker.config["http.console.lag.sample.interval.ms"])
    broker.services[LAG_HISTORY] = history
    try:
        await run_lag_sampler(history, lambda: consumer_group_lags(broker), task_status=task_status)
    finally:
        broker.services.pop(LAG_HISTORY, None)
