"""kwire.faults, the pure part: rules and their counts, the JSON form of a rule, and the error
answers a fault builds (tests/test_fault_injection.py drives a real broker)."""

from __future__ import annotations

import datetime
import uuid

import pytest
from kio.schema.errors import ErrorCode
from kio.serial import entity_reader

from kwire.faults import (
    Fault,
    FaultInjector,
    FaultSpecError,
    api_key_of,
    api_name,
    error_answer,
    error_of,
    parse_rule,
)
from kwire.protocol.messages import request_module, response_class

NOT_LEADER = Fault(error=ErrorCode.not_leader_or_follower)


def test_take_uses_up_the_count_then_serves_normally() -> None:
    faults = FaultInjector()
    rule = faults.add(0, 2, NOT_LEADER)
    assert faults.take(1) is None  # another API
    assert faults.take(0) == NOT_LEADER
    assert rule.remaining == 1 and faults.rules() == [rule]
    assert faults.take(0) == NOT_LEADER
    assert faults.take(0) is None
    assert faults.rules() == []


def test_rules_of_one_api_are_used_oldest_first() -> None:
    faults = FaultInjector()
    first = faults.add(3, 1, Fault(delay_ms=10))
    second = faults.add(3, 2, Fault(drop_connection=True))
    other = faults.add(1, 1, NOT_LEADER)
    assert [r.id for r in faults.rules()] == [first.id, second.id, other.id]
    assert [faults.take(3) for _ in range(4)] == [
        Fault(delay_ms=10),
        Fault(drop_connection=True),
        Fault(drop_connection=True),
        None,
    ]
    assert faults.rules() == [other]


def test_remove_and_clear() -> None:
    faults = FaultInjector()
    a = faults.add(0, 5, NOT_LEADER)
    b = faults.add(0, 5, Fault(delay_ms=1))
    assert faults.remove(a.id) is a
    assert faults.remove(a.id) is None
    assert faults.take(0) == Fault(delay_ms=1)
    faults.add(1, 1, NOT_LEADER)
    assert faults.clear() == 2
    assert faults.rules() == [] and faults.take(0) is None and faults.take(1) is None
    assert b.remaining == 4


def test_add_refuses_counts_below_one_and_apis_not_served() -> None:
    faults = FaultInjector()
    with pytest.raises(FaultSpecError, match="at least 1"):
        faults.add(0, 0, NOT_LEADER)
    with pytest.raises(FaultSpecError, match="not served"):
        faults.add(34, 1, NOT_LEADER)


def test_rule_json() -> None:
    rule = FaultInjector().add(0, 3, NOT_LEADER)
    assert rule.to_json() == {
        "id": 1,
        "api": "Produce",
        "api_key": 0,
        "count": 3,
        "remaining": 3,
        "error": "NOT_LEADER_OR_FOLLOWER",
        "error_code": 6,
        "delay_ms": 0,
        "drop_connection": False,
    }


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Produce", 0),
        ("fetch", 1),
        ("METADATA", 3),
        ("ListOffsets", 2),
        ("list_offsets", 2),
        ("LIST_OFFSETS", 2),
        ("OffsetForLeaderEpoch", 23),
        ("ListTransactions", 66),
        ("ControlledShutdown", 7),
        (18, 18),
    ],
)
def test_api_names_are_kafkas(name: str | int, key: int) -> None:
    assert api_key_of(name) == key


def test_api_name_of_every_served_key_round_trips() -> None:
    from kwire.protocol.apis import API_TABLE

    names = {api_name(key) for key in API_TABLE}
    assert len(names) == len(API_TABLE)
    assert all(api_key_of(api_name(key)) == key for key in API_TABLE)


@pytest.mark.parametrize(
    ("value", "code"),
    [("NOT_LEADER_OR_FOLLOWER", 6), ("not_leader_or_follower", 6), (29, 29), (-1, -1)],
)
def test_errors_are_kafkas(value: str | int, code: int) -> None:
    assert error_of(value).value == code


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([], "JSON object"),
        ({"count": 1, "error": 6}, "api is missing"),
        ({"api": "Produc", "error": 6}, "unknown API 'Produc'"),
        ({"api": 34, "error": 6}, "API key 34 is not served"),
        ({"api": True, "error": 6}, "api must be"),
        ({"api": "Produce", "error": "NOT_A_LEADER"}, "unknown error 'NOT_A_LEADER'"),
        ({"api": "Produce", "error": 9999}, "unknown error code 9999"),
        ({"api": "Produce", "error": 0}, "NONE"),
        ({"api": "Produce", "error": 6, "count": 0}, "count must be at least 1"),
        ({"api": "Produce", "error": 6, "count": "3"}, "count must be an integer"),
        ({"api": "Produce", "delay_ms": -1}, "delay_ms must be between"),
        ({"api": "Produce", "delay_ms": 1.5}, "delay_ms must be an integer"),
        ({"api": "Produce", "drop_connection": "yes"}, "drop_connection must be true or false"),
        ({"api": "Produce", "error": 6, "drop_connection": True}, "not both"),
        ({"api": "Produce"}, "no fault given"),
        ({"api": "Produce", "delay": 500}, "unknown fields \\['delay'\\]"),
        ({"api": "ControlledShutdown", "error": 6}, "delay_ms or drop_connection only"),
    ],
)
def test_bad_rules_say_why(spec: object, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        parse_rule(spec)


def test_rules_parse() -> None:
    assert parse_rule({"api": "Produce", "error": "NOT_LEADER_OR_FOLLOWER", "count": 3}) == (
        0,
        3,
        NOT_LEADER,
    )
    assert parse_rule({"api": 1, "delay_ms": 500}) == (1, 1, Fault(delay_ms=500))
    assert parse_rule({"api": "Metadata", "drop_connection": True, "delay_ms": 5}) == (
        3,
        1,
        Fault(delay_ms=5, drop_connection=True),
    )


def test_produce_error_answer_names_each_partition() -> None:
    from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData

    partitions = (
        PartitionProduceData(index=0, records=None),
        PartitionProduceData(index=2, records=None),
    )
    request = ProduceRequest(
        acks=-1,
        timeout=datetime.timedelta(seconds=1),
        topic_data=(TopicProduceData(name="t", partition_data=partitions),),
    )
    answer = error_answer(0, 9, request, ErrorCode.not_leader_or_follower)
    [topic] = answer.responses
    assert topic.name == "t"
    assert [(p.index, p.error_code) for p in topic.partition_responses] == [
        (0, ErrorCode.not_leader_or_follower),
        (2, ErrorCode.not_leader_or_follower),
    ]


@pytest.mark.parametrize("version", [11, 16])
def test_fetch_error_answer_is_in_each_partition_unless_a_session_error(version: int) -> None:
    """A top-level Fetch error is retried silently by clients; a partition's is seen."""
    module = request_module(1, version)
    topic_key = {"topic_id": uuid.uuid4()} if version >= 13 else {"topic": "t"}
    wanted = module.FetchPartition(partition=1, fetch_offset=0, partition_max_bytes=1 << 20)
    request = module.FetchRequest(
        max_wait=datetime.timedelta(milliseconds=500),
        min_bytes=1,
        topics=(module.FetchTopic(**topic_key, partitions=(wanted,)),),
        forgotten_topics_data=(),
    )
    answer = error_answer(1, version, request, ErrorCode.topic_authorization_failed)
    raw = b"".join(p for p in answer.parts if isinstance(p, bytes))
    response, end = entity_reader(response_class(1, version))(raw, 0)
    assert end == len(raw) and response.error_code == ErrorCode.none
    [topic] = response.responses
    assert getattr(topic, next(iter(topic_key))) == next(iter(topic_key.values()))
    assert [(p.partition_index, p.error_code) for p in topic.partitions] == [
        (1, ErrorCode.topic_authorization_failed)
    ]
    session = error_answer(1, version, request, ErrorCode.fetch_session_id_not_found)
    assert session.error_code == ErrorCode.fetch_session_id_not_found and session.responses == ()


def test_metadata_error_answer_names_each_topic() -> None:
    module = request_module(3, 12)
    request = module.MetadataRequest(
        topics=(module.MetadataRequestTopic(topic_id=None, name="t"),),
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )
    answer = error_answer(3, 12, request, ErrorCode.topic_authorization_failed)
    assert [(t.name, t.error_code) for t in answer.topics] == [
        ("t", ErrorCode.topic_authorization_failed)
    ]
