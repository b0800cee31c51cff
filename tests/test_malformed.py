"""Requests that once killed the broker or gave tracebacks, against a real broker.

Each one used to abort the process (kio's native reader allocating what a lying
count declared) or raise inside a handler (a non-nullable array read as None).
Now the broker survives, closes only that connection, and another connection
(opened before, and after) keeps working.
"""

from __future__ import annotations

import socket
import struct

import pytest
from fuzz.wire import (
    ANSWERED,
    CLOSED,
    api_versions_answers,
    frame,
    probe,
    read_answer,
    request_header,
)

# Whole frames (size prefix included), as reported.
METADATA_V12_HUGE_ARRAY = bytes.fromhex("000000150003000c00000001000570726f626500ffffffff0f")


def _flexible_huge_array(api_key: int, version: int) -> bytes:
    # Header v2, then the first field read as a compact array or string claiming 2^32-2.
    return frame(request_header(api_key, version, 1, True, b"probe") + bytes.fromhex("ffffffff0f"))


CASES = {
    "metadata_v12_huge_array": METADATA_V12_HUGE_ARRAY,
    "create_topics_v7_huge_array": _flexible_huge_array(19, 7),
    "delete_topics_v6_huge_array": _flexible_huge_array(20, 6),
    "join_group_v9_huge_string": _flexible_huge_array(11, 9),
    "metadata_v12_random_body": frame(request_header(3, 12, 1, True, b"probe") + bytes.fromhex("91d8cdc310")),
    "create_topics_v7_random_body": frame(request_header(19, 7, 1, True, b"probe") + bytes.fromhex("91d8cdc310")),
    "fetch_v4_ff_body": frame(request_header(1, 4, 1, False, b"probe") + b"\xff" * 32),
    "delete_topics_v1_ff_body": frame(request_header(20, 1, 1, False, b"probe") + b"\xff" * 32),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_malformed_request_closes_only_its_connection(broker, name: str) -> None:
    bystander = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
    try:
        with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
            sock.sendall(CASES[name])
            outcome, _ = read_answer(sock, deadline=_deadline(10))
        assert outcome == CLOSED, f"{name}: expected the connection closed, got {outcome}"
        assert broker.process.poll() is None, f"broker died:\n{broker.log_text()}"
        # The connection opened before still serves, and so does a new one.
        bystander.sendall(frame(request_header(18, 0, 5, False)))
        outcome, answer = read_answer(bystander, deadline=_deadline(10))
        assert outcome == ANSWERED and answer[:4] == struct.pack(">i", 5)
        assert api_versions_answers(broker.port)
    finally:
        bystander.close()
    log = broker.log_text()
    assert "malformed request" in log
    assert "Traceback" not in log


def test_truncated_header_and_bad_client_id_close(broker) -> None:
    # A client_id length below -1 cannot be read.
    outcome, _ = probe(broker.port, struct.pack(">hhih", 3, 0, 1, -7))
    assert outcome == CLOSED
    # A tagged-field section claiming more tags than bytes.
    outcome, _ = probe(broker.port, request_header(3, 12, 1, False) + b"\xff\xff\xff\xff\x0f")
    assert outcome == CLOSED
    assert broker.process.poll() is None
    assert api_versions_answers(broker.port)


def test_produce_with_lying_counts_closes(broker) -> None:
    """The hand-read Produce body: arrays claiming more than the frame, null arrays."""
    head = request_header(0, 9, 1, True)
    # transactional_id null, acks 1, timeout 1000, topics compact array claiming 2^32-2.
    outcome, _ = probe(broker.port, head + b"\x00" + struct.pack(">hi", 1, 1000) + bytes.fromhex("ffffffff0f"))
    assert outcome == CLOSED
    # Legacy v3: a null topic array.
    head = request_header(0, 3, 1, False)
    outcome, _ = probe(broker.port, head + struct.pack(">hhii", -1, 1, 1000, -1))
    assert outcome == CLOSED
    assert broker.process.poll() is None
    assert api_versions_answers(broker.port)


def _deadline(seconds: float) -> float:
    import time

    return time.monotonic() + seconds


def test_found_by_fuzzing_metadata_v11_topic_id_is_invalid_request(broker) -> None:
    """Metadata v10-11 carry topic ids but may not use them: INVALID_REQUEST per
    topic, as Kafka (the handler echoed a null name the v11 response cannot hold)."""
    import uuid

    from kio.schema.errors import ErrorCode
    from kio.schema.metadata.v11.request import MetadataRequest, MetadataRequestTopic
    from raw_client import RawClient

    with RawClient(broker.port, timeout=10) as client:
        response = client.send(MetadataRequest(
            topics=(MetadataRequestTopic(topic_id=uuid.uuid4(), name=None),),
            allow_auto_topic_creation=False, include_topic_authorized_operations=False,
        ))
        assert [t.error_code for t in response.topics] == [ErrorCode.invalid_request]


def test_found_by_fuzzing_fetch_v13_zero_topic_id_is_answered(broker) -> None:
    """kio reads the zero topic id as None; the answer is an unknown-topic error,
    not a failed handler (Kafka says UNKNOWN_TOPIC_ID; kwire's fetch says
    UNKNOWN_TOPIC_OR_PARTITION)."""
    import datetime

    from kio.schema.errors import ErrorCode
    from kio.schema.fetch.v13.request import FetchPartition, FetchRequest, FetchTopic
    from raw_client import RawClient

    with RawClient(broker.port, timeout=10) as client:
        response = client.send(FetchRequest(
            max_wait=datetime.timedelta(0), min_bytes=0, topics=(FetchTopic(topic_id=None, partitions=(
                FetchPartition(partition=0, fetch_offset=0, last_fetched_epoch=-1, partition_max_bytes=1024),)),),
            forgotten_topics_data=(), rack_id="",
        ))
        [topic] = response.responses
        assert topic.topic_id is None
        [partition] = topic.partitions
        assert partition.error_code in (ErrorCode.unknown_topic_id, ErrorCode.unknown_topic_or_partition)
