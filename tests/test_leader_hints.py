"""KIP-951 leader hints in the hand-written Produce and Fetch answers, read back by kio."""

from __future__ import annotations

import pytest
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader

from kwire.protocol.fetch_response import FetchedPartition, encode_fetch_response
from kwire.protocol.leader_hints import NodeEndpoint
from kwire.protocol.messages import response_class
from kwire.protocol.produce_response import PartitionProduceResult, encode_produce_response

ENDPOINTS = [NodeEndpoint(2, "127.0.0.1", 9093, None), NodeEndpoint(3, "127.0.0.1", 9094, "rack-b")]


@pytest.mark.parametrize("version", range(9, 12))
def test_produce_answer_names_the_current_leader(version: int) -> None:
    body = encode_produce_response(
        version,
        [("t", [PartitionProduceResult(0, ErrorCode.not_leader_or_follower, -1, current_leader=(3, 7)),
                PartitionProduceResult(1, ErrorCode.none, 5)])],
        node_endpoints=ENDPOINTS,
    )
    raw = body.parts[0]
    response, end = entity_reader(response_class(0, version))(raw, 0)
    assert end == len(raw)
    moved, fine = response.responses[0].partition_responses
    assert moved.error_code == ErrorCode.not_leader_or_follower and fine.base_offset == 5
    if version >= 10:
        assert (moved.current_leader.leader_id, moved.current_leader.leader_epoch) == (3, 7)
        assert fine.current_leader.leader_id == -1  # the default: no hint
        assert [(e.node_id, e.host, e.port, e.rack) for e in response.node_endpoints] == [
            (2, "127.0.0.1", 9093, None), (3, "127.0.0.1", 9094, "rack-b"),
        ]


@pytest.mark.parametrize("version", range(11, 17))
def test_fetch_answer_names_the_current_leader(version: int) -> None:
    import uuid

    topic = uuid.uuid4() if version >= 13 else "t"
    partitions = [
        FetchedPartition(0, ErrorCode.not_leader_or_follower, -1, -1, -1, current_leader=(2, 4)),
        FetchedPartition(1, ErrorCode.none, 10, 10, 0),
    ]
    body = encode_fetch_response(version, 0, 0, 0, [(topic, partitions)], node_endpoints=ENDPOINTS)
    raw = b"".join(p for p in body.parts if isinstance(p, bytes))
    response, end = entity_reader(response_class(1, version))(raw, 0)
    assert end == len(raw)
    moved, fine = response.responses[0].partitions
    assert moved.error_code == ErrorCode.not_leader_or_follower and fine.high_watermark == 10
    if version >= 12:
        assert (moved.current_leader.leader_id, moved.current_leader.leader_epoch) == (2, 4)
        assert fine.current_leader.leader_id == -1
    if version >= 16:
        assert [e.node_id for e in response.node_endpoints] == [2, 3]
