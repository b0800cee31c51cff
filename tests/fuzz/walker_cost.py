"""Cost of the bounds check per request, in microseconds (not a test; no broker).

    python tests/fuzz/walker_cost.py

Typical client requests: a Fetch v12 of 1 topic x 1 partition and of 10 x 10,
a Metadata v12 of 3 topics, an OffsetCommit v8 of 1 x 5, a Heartbeat v4.
Prints the check alone and kio's decode of the same body, for scale.
"""

from __future__ import annotations

import datetime
import sys
import timeit
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic  # noqa: E402
from kio.schema.heartbeat.v4.request import HeartbeatRequest  # noqa: E402
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic  # noqa: E402
from kio.schema.offset_commit.v8.request import (  # noqa: E402
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
)

from kwire.protocol.bounds import check_request  # noqa: E402
from kwire.protocol.messages import decode_request, encode  # noqa: E402


def fetch(topics: int, partitions: int) -> FetchRequest:
    return FetchRequest(
        max_wait=datetime.timedelta(milliseconds=500), min_bytes=1, session_id=0, session_epoch=-1,
        topics=tuple(FetchTopic(topic=f"topic-{t}", partitions=tuple(
            FetchPartition(partition=p, current_leader_epoch=-1, fetch_offset=1000, last_fetched_epoch=-1,
                           log_start_offset=-1, partition_max_bytes=1 << 20) for p in range(partitions)))
            for t in range(topics)),
        forgotten_topics_data=(), rack_id="",
    )


CASES = {
    "Fetch v12 1x1": (1, 12, fetch(1, 1)),
    "Fetch v12 10x10": (1, 12, fetch(10, 10)),
    "Metadata v12 3 topics": (3, 12, MetadataRequest(
        topics=tuple(MetadataRequestTopic(topic_id=None, name=f"topic-{i}") for i in range(3)),
        include_topic_authorized_operations=False)),
    "OffsetCommit v8 1x5": (8, 8, OffsetCommitRequest(
        group_id="group", generation_id_or_member_epoch=3, member_id="member-1", group_instance_id=None,
        topics=(OffsetCommitRequestTopic(name="topic", partitions=tuple(
            OffsetCommitRequestPartition(partition_index=p, committed_offset=100, committed_leader_epoch=-1,
                                         committed_metadata="") for p in range(5))),))),
    "Heartbeat v4": (12, 4, HeartbeatRequest(group_id="group", generation_id=3, member_id=str(uuid.uuid4()),
                                             group_instance_id=None)),
}


def main() -> None:
    for name, (api_key, version, request) in CASES.items():
        raw = memoryview(encode(request)).toreadonly()
        check_request(api_key, version, raw, 0)  # compile once
        n = 20000
        check = min(timeit.repeat(lambda a=api_key, v=version, r=raw: check_request(a, v, r, 0), number=n, repeat=5)) / n * 1e6
        decode = min(timeit.repeat(lambda a=api_key, v=version, r=raw: decode_request(a, v, r, 0), number=n, repeat=5)) / n * 1e6
        print(f"{name:24} {len(raw):5} bytes  check {check:6.2f} us  kio decode {decode:6.2f} us")


if __name__ == "__main__":
    main()
