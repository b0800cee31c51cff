"""Kafka's ZooKeeper layout (kwire.cluster.zk_layout): paths, the JSON Kafka 3.x writes in
each znode (decoded from literal strings as Kafka writes them, and round-tripped),
garbage refused with ZkDataError only, AdminUtils' replica assignment (fixed cases
worked out by hand from Kafka's algorithm, and properties) and the leader elections."""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kwire.cluster import zk_layout as zk
from kwire.cluster.metadata_image import BrokerRegistration, Endpoint

# ---- paths ---------------------------------------------------------------------------


def test_paths_are_kafkas() -> None:
    assert zk.CLUSTER_ID_PATH == "/cluster/id"
    assert zk.broker_path(3) == "/brokers/ids/3"
    assert zk.topic_path("orders") == "/brokers/topics/orders"
    assert zk.topic_partitions_path("orders") == "/brokers/topics/orders/partitions"
    assert zk.partition_state_path("orders", 7) == "/brokers/topics/orders/partitions/7/state"
    assert zk.CONTROLLER_PATH == "/controller"
    assert zk.CONTROLLER_EPOCH_PATH == "/controller_epoch"
    assert zk.topic_config_path("orders") == "/config/topics/orders"
    assert zk.config_entity_path("brokers", "<default>") == "/config/brokers/<default>"
    assert zk.CONFIG_CHANGE_CREATE_PATH == zk.config_change_path() == "/config/changes/config_change_"
    assert zk.delete_topic_path("orders") == "/admin/delete_topics/orders"
    assert zk.REASSIGN_PARTITIONS_PATH == "/admin/reassign_partitions"
    assert zk.PREFERRED_REPLICA_ELECTION_PATH == "/admin/preferred_replica_election"
    assert zk.isr_change_notification_path() == "/isr_change_notification/isr_change_"
    assert zk.isr_change_notification_path("0000000012") == "/isr_change_notification/isr_change_0000000012"
    assert zk.PRODUCER_ID_BLOCK_PATH == "/latest_producer_id_block"
    assert zk.BROKER_SEQUENCE_ID_PATH == "/brokers/seqid"


def test_persistent_paths_are_kafkas_in_its_order() -> None:
    assert zk.PERSISTENT_PATHS == (
        "/consumers",
        "/brokers/ids",
        "/brokers/topics",
        "/config/changes",
        "/admin/delete_topics",
        "/brokers/seqid",
        "/isr_change_notification",
        "/latest_producer_id_block",
        "/log_dir_event_notification",
        "/config/topics",
        "/config/clients",
        "/config/users",
        "/config/brokers",
        "/config/ips",
    )


def test_sequence_number_of_a_sequential_node() -> None:
    assert zk.sequence_number("/isr_change_notification/isr_change_0000000042", zk.ISR_CHANGE_SEQUENCE_PREFIX) == "0000000042"
    assert zk.sequence_number("config_change_0000000001", zk.CONFIG_CHANGE_SEQUENCE_PREFIX) == "0000000001"
    with pytest.raises(ValueError):
        zk.sequence_number("/controller", zk.ISR_CHANGE_SEQUENCE_PREFIX)


# ---- Kafka's Uuid strings ------------------------------------------------------------


def test_uuid_strings_are_kafkas() -> None:
    # Uuid.ZERO_UUID and Uuid.ONE_UUID as Kafka prints them.
    assert zk.uuid_to_kafka(uuid.UUID(int=0)) == "AAAAAAAAAAAAAAAAAAAAAA"
    assert zk.uuid_to_kafka(uuid.UUID(int=1)) == "AAAAAAAAAAAAAAAAAAAAAQ"
    # URL-safe alphabet: 0xfb 0xff 0xbf -> "-_-_" in base64url ("+/+/" in standard).
    u = uuid.UUID(bytes=b"\xfb\xff\xbf" * 5 + b"\x00")
    assert zk.uuid_to_kafka(u) == "-_-_-_-_-_-_-_-_-_-_AA"
    assert zk.uuid_from_kafka("-_-_-_-_-_-_-_-_-_-_AA") == u
    assert zk.uuid_from_kafka("AAAAAAAAAAAAAAAAAAAAAQ==") == uuid.UUID(int=1)  # Java accepts padding


@settings(deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_uuid_round_trip(raw: bytes) -> None:
    u = uuid.UUID(bytes=raw)
    text = zk.uuid_to_kafka(u)
    assert len(text) == 22 and "=" not in text
    assert zk.uuid_from_kafka(text) == u


@pytest.mark.parametrize("bad", ["", "AAAA", "AAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAAA",
                                 "+/AAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAA=", "AAAAAAAAAAAAAAAAAAAAAA\n"])
def test_uuid_from_kafka_refuses_what_is_not_16_bytes_of_base64url(bad: str) -> None:
    with pytest.raises(ValueError):
        zk.uuid_from_kafka(bad)


def test_random_kafka_uuid_never_starts_with_a_dash() -> None:
    rng = random.Random(7)
    ids = [zk.random_kafka_uuid(rng) for _ in range(2000)]
    assert len(set(ids)) == 2000
    assert not [u for u in ids if zk.uuid_to_kafka(u).startswith("-") or u.int in (0, 1)]
    assert [zk.random_kafka_uuid(random.Random(3)) for _ in range(2)] == [zk.random_kafka_uuid(random.Random(3))] * 2


# ---- broker registration -------------------------------------------------------------


def _registration(broker_id: int, *endpoints: Endpoint, rack: str | None = None) -> BrokerRegistration:
    return BrokerRegistration(broker_id, MappingProxyType({e.listener_name: e for e in endpoints}), rack)


def test_broker_registration_encodes_as_kafka_3_writes_it() -> None:
    registration = _registration(0, Endpoint("PLAINTEXT", "localhost", 9092, "PLAINTEXT"))
    assert zk.encode_broker_registration(registration, timestamp_ms=1700000000000) == (
        b'{"features":{},"listener_security_protocol_map":{"PLAINTEXT":"PLAINTEXT"},'
        b'"endpoints":["PLAINTEXT://localhost:9092"],"jmx_port":-1,"port":9092,'
        b'"host":"localhost","version":5,"timestamp":"1700000000000"}'
    )


def test_broker_registration_host_and_port_are_the_first_plaintext_endpoints() -> None:
    registration = _registration(
        2,
        Endpoint("EXTERNAL", "203.0.113.5", 9093, "SSL"),
        Endpoint("INTERNAL", "kafka-2.kafka", 9092, "PLAINTEXT"),
        rack="us-east-1a",
    )
    body = json.loads(zk.encode_broker_registration(registration, timestamp_ms=5, jmx_port=9999))
    assert body == {
        "features": {},
        "listener_security_protocol_map": {"EXTERNAL": "SSL", "INTERNAL": "PLAINTEXT"},
        "endpoints": ["EXTERNAL://203.0.113.5:9093", "INTERNAL://kafka-2.kafka:9092"],
        "rack": "us-east-1a",
        "jmx_port": 9999,
        "port": 9092,
        "host": "kafka-2.kafka",
        "version": 5,
        "timestamp": "5",
    }
    # No PLAINTEXT endpoint: null and -1, so old clients know they cannot connect.
    ssl_only = _registration(2, Endpoint("EXTERNAL", "h", 9093, "SSL"))
    body = json.loads(zk.encode_broker_registration(ssl_only, timestamp_ms=5))
    assert body["host"] is None and body["port"] == -1 and "rack" not in body


def test_broker_registration_decodes_kafkas_v5() -> None:
    data = (
        b'{"features":{},"listener_security_protocol_map":{"INTERNAL":"PLAINTEXT","EXTERNAL":"SSL"},'
        b'"endpoints":["INTERNAL://kafka-0.kafka:9092","EXTERNAL://203.0.113.5:9093"],'
        b'"rack":"us-east-1a","jmx_port":-1,"port":9092,"host":"kafka-0.kafka","version":5,'
        b'"timestamp":"1700000000000"}'
    )
    registration = zk.decode_broker_registration(0, data)
    assert registration == _registration(
        0,
        Endpoint("INTERNAL", "kafka-0.kafka", 9092, "PLAINTEXT"),
        Endpoint("EXTERNAL", "203.0.113.5", 9093, "SSL"),
        rack="us-east-1a",
    )
    assert list(registration.endpoints) == ["INTERNAL", "EXTERNAL"]


def test_broker_registration_decodes_older_versions_and_features() -> None:
    # The examples in Kafka's BrokerIdZNode.decode documentation.
    v1 = b'{"version":1,"host":"localhost","port":9092,"jmx_port":9999,"timestamp":"2233345666"}'
    assert zk.decode_broker_registration(1, v1) == _registration(1, Endpoint("PLAINTEXT", "localhost", 9092, "PLAINTEXT"))
    v3 = (b'{"version":3,"host":"localhost","port":9092,"jmx_port":9999,"timestamp":"2233345666",'
          b'"endpoints":["PLAINTEXT://host1:9092", "SSL://host1:9093"],"rack":"dc1"}')
    assert zk.decode_broker_registration(1, v3) == _registration(
        1, Endpoint("PLAINTEXT", "host1", 9092, "PLAINTEXT"), Endpoint("SSL", "host1", 9093, "SSL"), rack="dc1"
    )
    v5 = (b'{"version":5,"host":"localhost","port":9092,"jmx_port":9999,"timestamp":"2233345666",'
          b'"endpoints":["CLIENT://host1:9092", "REPLICATION://host1:9093"],"rack":null,'
          b'"listener_security_protocol_map":{"CLIENT":"SASL_SSL","REPLICATION":"plaintext"},'
          b'"features": {"feature": {"min_version":1, "first_active_version":2, "max_version":3}}}')
    assert zk.decode_broker_registration(4, v5) == _registration(
        4, Endpoint("CLIENT", "host1", 9092, "SASL_SSL"), Endpoint("REPLICATION", "host1", 9093, "PLAINTEXT")
    )


def test_broker_registration_ipv6_and_wildcard_hosts() -> None:
    registration = _registration(
        1, Endpoint("PLAINTEXT", "::1", 9092, "PLAINTEXT"), Endpoint("SSL", "", 9093, "SSL")
    )
    data = zk.encode_broker_registration(registration, timestamp_ms=1)
    assert json.loads(data)["endpoints"] == ["PLAINTEXT://[::1]:9092", "SSL://:9093"]
    assert zk.decode_broker_registration(1, data) == registration


@settings(max_examples=200, deadline=None)
@given(
    broker_id=st.integers(0, 2**31 - 1),
    listeners=st.lists(
        st.tuples(
            st.from_regex(r"[A-Z][A-Z0-9_]{0,10}", fullmatch=True),
            st.one_of(st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True), st.just("::1"), st.just("")),
            st.integers(0, 65535),
            st.sampled_from(zk.SECURITY_PROTOCOLS),
        ),
        min_size=1, max_size=4, unique_by=lambda t: t[0],
    ),
    rack=st.none() | st.text(max_size=10),
    timestamp=st.integers(0, 2**62),
)
def test_broker_registration_round_trip(broker_id: int, listeners: list, rack: str | None, timestamp: int) -> None:
    registration = _registration(broker_id, *(Endpoint(*t) for t in listeners), rack=rack)
    data = zk.encode_broker_registration(registration, timestamp_ms=timestamp)
    assert zk.decode_broker_registration(broker_id, data) == registration
    assert json.loads(data)["timestamp"] == str(timestamp)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b'{"version":5,"endpoints":["PLAINTEXT://h:1"]}', "'jmx_port' is missing"),
        (b'{"version":"5","jmx_port":-1,"endpoints":["PLAINTEXT://h:1"]}', "version: expected an integer"),
        (b'{"version":0,"jmx_port":-1}', "Unsupported version"),
        (b'{"version":5,"jmx_port":-1,"endpoints":["PLAINTEXT:/h:1"]}', "unable to parse"),
        (b'{"version":5,"jmx_port":-1,"endpoints":["CLIENT://h:1"]}', "no security protocol defined for listener CLIENT"),
        (b'{"version":5,"jmx_port":-1,"endpoints":["PLAINTEXT://h:1"],"listener_security_protocol_map":{"PLAINTEXT":"TLS"}}', "unknown security protocol"),
        (b'{"version":5,"jmx_port":-1,"endpoints":["PLAINTEXT://h:1","PLAINTEXT://g:2"]}', "listed twice"),
        (b'{"version":5,"jmx_port":-1,"endpoints":["PLAINTEXT://h:70000"]}', "out of range"),
        (b'{"version":5,"jmx_port":-1,"endpoints":"PLAINTEXT://h:1"}', "expected an array"),
        (b'{"version":5,"jmx_port":-1,"endpoints":[]}', "no endpoints"),
        (b'{"version":5,"jmx_port":-1,"endpoints":["PLAINTEXT://h:1"],"rack":1}', "rack: expected a string"),
        (b'{"version":5,"jmx_port":-1,"endpoints":["PLAINTEXT://h:1"],"features":{"f":{"max_version":"3"}}}', "expected an integer"),
        (b'{"version":1,"jmx_port":-1,"host":"h"}', "'port' is missing"),
        (b'[5]', "expected a JSON object"),
        (b'{"version":5', "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_broker_registration_garbage(data: bytes, says: str) -> None:
    with pytest.raises(zk.ZkDataError, match=f"broker 3 registration.*{says}" if "Unsupported" not in says else says):
        zk.decode_broker_registration(3, data)


# ---- topic assignment ----------------------------------------------------------------

TOPIC_ID = uuid.UUID("3e9a2bf0-ce1d-4160-9748-da7740da54dc")


def test_topic_assignment_encodes_as_kafka_writes_it() -> None:
    text = zk.uuid_to_kafka(TOPIC_ID)
    assert text == "Ppor8M4dQWCXSNp3QNpU3A"
    assignment = zk.TopicAssignment(TOPIC_ID, {1: (2, 3, 1), 0: (1, 2, 3)})
    assert zk.encode_topic_assignment(assignment) == (
        b'{"removing_replicas":{},"partitions":{"0":[1,2,3],"1":[2,3,1]},'
        b'"topic_id":"Ppor8M4dQWCXSNp3QNpU3A","adding_replicas":{},"version":3}'
    )


def test_topic_assignment_decodes_kafkas_v3_during_a_reassignment() -> None:
    data = (
        b'{"removing_replicas":{"0":[3]},"partitions":{"2":[3,1,2],"1":[2,3,1],"0":[1,2,3,4]},'
        b'"topic_id":"Ppor8M4dQWCXSNp3QNpU3A","adding_replicas":{"0":[4],"9":[5]},"version":3}'
    )
    assignment = zk.decode_topic_assignment(data, "orders")
    assert assignment == zk.TopicAssignment(
        TOPIC_ID, {0: (1, 2, 3, 4), 1: (2, 3, 1), 2: (3, 1, 2)}, adding_replicas={0: (4,)}, removing_replicas={0: (3,)}
    )
    assert list(assignment.partitions) == [0, 1, 2]  # by partition, whatever the JSON order
    assert zk.decode_topic_assignment(zk.encode_topic_assignment(assignment)) == assignment


def test_topic_assignment_of_a_topic_from_before_topic_ids() -> None:
    # What Kafka 2.4 to 2.7 wrote (version 2), and before that version 1.
    v2 = b'{"version":2,"partitions":{"0":[1]},"adding_replicas":{},"removing_replicas":{}}'
    assert zk.decode_topic_assignment(v2) == zk.TopicAssignment(None, {0: (1,)})
    assert zk.decode_topic_assignment(b'{"version":1,"partitions":{"0":[1,2]}}').partitions == {0: (1, 2)}
    assert b"topic_id" not in zk.encode_topic_assignment(zk.TopicAssignment(None, {0: (1,)}))


@settings(deadline=None)
@given(
    topic_id=st.none() | st.uuids(),
    partitions=st.dictionaries(st.integers(0, 2**31 - 1), st.lists(st.integers(0, 2**31 - 1), max_size=5).map(tuple), max_size=8),
    data=st.data(),
)
def test_topic_assignment_round_trip(topic_id: uuid.UUID | None, partitions: dict, data: st.DataObject) -> None:
    some = st.sampled_from(sorted(partitions)) if partitions else st.nothing()
    replicas = st.lists(st.integers(0, 100), min_size=1, max_size=3).map(tuple)
    adding = data.draw(st.dictionaries(some, replicas)) if partitions else {}
    removing = data.draw(st.dictionaries(some, replicas)) if partitions else {}
    assignment = zk.TopicAssignment(topic_id, dict(sorted(partitions.items())), adding, removing)
    assert zk.decode_topic_assignment(zk.encode_topic_assignment(assignment)) == assignment


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b'{"version":3,"partitions":{"a":[1]}}', "partition: 'a' is not a decimal"),
        (b'{"version":3,"partitions":{"-1":[1]}}', "out of range"),
        (b'{"version":3,"partitions":{"0":[1.5]}}', "expected an integer"),
        (b'{"version":3,"partitions":{"0":1}}', "expected an array of integers"),
        (b'{"version":3,"partitions":[]}', "expected a JSON object"),
        (b'{"version":3,"partitions":{},"topic_id":"nope"}', "not a base64-encoded Kafka Uuid"),
        (b'{"version":3,"partitions":{},"topic_id":7}', "topic_id: expected a string"),
        (b'{"version":3,"partitions":{"0":[1]},"adding_replicas":{"0":[true]}}', "expected an integer"),
        (b'null', "expected a JSON object"),
    ],
)
def test_topic_assignment_garbage(data: bytes, says: str) -> None:
    with pytest.raises(zk.ZkDataError, match=f"topic orders assignment.*{says}"):
        zk.decode_topic_assignment(data, "orders")


# ---- partition state -----------------------------------------------------------------


def test_partition_state_as_kafka_writes_it() -> None:
    data = b'{"controller_epoch":1,"leader":1,"version":1,"leader_epoch":0,"isr":[1,2,3]}'
    state = zk.LeaderIsrAndControllerEpoch(leader=1, leader_epoch=0, isr=(1, 2, 3), controller_epoch=1)
    assert zk.decode_partition_state(data) == state
    assert zk.encode_partition_state(state) == data


def test_partition_state_after_an_unclean_election() -> None:
    recovering = zk.LeaderIsrAndControllerEpoch(3, 7, (3,), 2, zk.LEADER_RECOVERY_RECOVERING)
    data = zk.encode_partition_state(recovering)
    assert json.loads(data) == {"controller_epoch": 2, "leader": 3, "version": 1, "leader_epoch": 7,
                                "isr": [3], "leader_recovery_state": 1}
    assert zk.decode_partition_state(data) == recovering
    v2 = b'{"controller_epoch":2,"leader":3,"version":2,"leader_epoch":7,"isr":[3],"leader_recovery_state":0}'
    assert zk.decode_partition_state(v2) == zk.LeaderIsrAndControllerEpoch(3, 7, (3,), 2)
    no_leader = b'{"controller_epoch":5,"leader":-1,"version":1,"leader_epoch":9,"isr":[]}'
    assert zk.decode_partition_state(no_leader).leader == zk.NO_LEADER


@settings(deadline=None)
@given(
    leader=st.integers(-1, 2**31 - 1),
    leader_epoch=st.integers(0, 2**31 - 1),
    isr=st.lists(st.integers(0, 2**31 - 1), max_size=6).map(tuple),
    controller_epoch=st.integers(0, 2**31 - 1),
    recovery=st.sampled_from([0, 1]),
)
def test_partition_state_round_trip(leader: int, leader_epoch: int, isr: tuple, controller_epoch: int, recovery: int) -> None:
    state = zk.LeaderIsrAndControllerEpoch(leader, leader_epoch, isr, controller_epoch, recovery)
    assert zk.decode_partition_state(zk.encode_partition_state(state)) == state


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b'{"controller_epoch":1,"version":1,"leader_epoch":0,"isr":[1]}', "'leader' is missing"),
        (b'{"controller_epoch":1,"leader":1,"version":1,"leader_epoch":0}', "'isr' is missing"),
        (b'{"controller_epoch":1,"leader":1,"version":1,"leader_epoch":2147483648,"isr":[1]}', "out of range"),
        (b'{"controller_epoch":1,"leader":1,"leader_epoch":0,"isr":[1],"leader_recovery_state":2}', "unknown leader_recovery_state 2"),
        (b'{"controller_epoch":1,"leader":"1","leader_epoch":0,"isr":[1]}', "expected an integer"),
        (b'{"controller_epoch":NaN,"leader":1,"leader_epoch":0,"isr":[1]}', "not JSON"),
    ],
)
def test_partition_state_garbage(data: bytes, says: str) -> None:
    with pytest.raises(zk.ZkDataError, match=f"partition state.*{says}"):
        zk.decode_partition_state(data)


# ---- controller, controller epoch ----------------------------------------------------


def test_controller_as_kafka_writes_it() -> None:
    data = b'{"version":2,"brokerid":1,"timestamp":"1700000000000","kraftControllerEpoch":-1}'
    assert zk.encode_controller(1, timestamp_ms=1700000000000) == data
    assert zk.decode_controller(data) == 1
    assert zk.decode_controller(b'{"version":1,"brokerid":0,"timestamp":"1700000000000"}') == 0


@settings(deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(0, 2**62))
def test_controller_round_trip(broker_id: int, timestamp: int) -> None:
    assert zk.decode_controller(zk.encode_controller(broker_id, timestamp_ms=timestamp)) == broker_id


def test_controller_epoch() -> None:
    assert zk.encode_controller_epoch(17) == b"17"
    assert zk.decode_controller_epoch(b"17") == 17
    assert zk.decode_controller_epoch(zk.encode_controller_epoch(2**31 - 1)) == 2**31 - 1
    for bad in (b"", b" 1", b"1 ", b"1_000", b"0x10", b"2147483648", b"\xff", b"1" * 5000):
        with pytest.raises(zk.ZkDataError, match="controller epoch"):
            zk.decode_controller_epoch(bad)


@pytest.mark.parametrize("data", [b'{"version":2}', b'{"brokerid":"1"}', b'{"brokerid":1,"kraftControllerEpoch":"x"}', b'1'])
def test_controller_garbage(data: bytes) -> None:
    with pytest.raises(zk.ZkDataError, match="controller"):
        zk.decode_controller(data)


# ---- cluster id, configs, notifications, producer ids, admin requests ----------------


def test_cluster_id_as_kafka_writes_it() -> None:
    data = b'{"version":"1","id":"MkU3OEVBNTcwNTJENDM2Qk"}'
    assert zk.encode_cluster_id("MkU3OEVBNTcwNTJENDM2Qk") == data
    assert zk.decode_cluster_id(data) == "MkU3OEVBNTcwNTJENDM2Qk"
    for bad in (b'{"version":"1"}', b'{"version":"1","id":5}', b'"x"'):
        with pytest.raises(zk.ZkDataError, match="cluster id"):
            zk.decode_cluster_id(bad)


def test_topic_config_as_kafka_writes_it() -> None:
    data = b'{"version":1,"config":{"cleanup.policy":"compact","retention.ms":"1000"}}'
    config = {"cleanup.policy": "compact", "retention.ms": "1000"}
    assert zk.encode_topic_config(config) == data
    assert zk.decode_topic_config(data) == config
    assert zk.decode_topic_config(b'{"version":1,"config":{}}') == {}
    assert zk.decode_topic_config(b'{"version":1}') == {}  # Kafka reads no config as none
    with pytest.raises(zk.ZkDataError, match="entity config retention.ms: expected a string"):
        zk.decode_topic_config(b'{"version":1,"config":{"retention.ms":1000}}')


def test_config_change_notification_as_kafka_writes_it() -> None:
    data = b'{"version":2,"entity_path":"topics/orders"}'
    assert zk.encode_config_change_notification(zk.topic_config_entity_path("orders")) == data
    assert zk.decode_config_change_notification(data) == "topics/orders"
    assert zk.decode_config_change_notification(b'{"version":1,"entity_type":"topics","entity_name":"orders"}') == "topics/orders"
    for bad in (b'{"version":2,"entity_path":"orders"}', b'{"version":2,"entity_path":"tables/x"}',
                b'{"version":3,"entity_path":"topics/x"}', b'{"version":2}'):
        with pytest.raises(zk.ZkDataError, match="config change notification"):
            zk.decode_config_change_notification(bad)


def test_producer_id_block_as_kafka_writes_it() -> None:
    data = b'{"version":1,"broker":0,"block_start":"0","block_end":"999"}'
    block = zk.ProducerIdsBlock(assigned_broker_id=0, first_producer_id=0, size=zk.PRODUCER_ID_BLOCK_SIZE)
    assert zk.encode_producer_id_block(block) == data
    assert zk.decode_producer_id_block(data) == block
    assert block.last_producer_id == 999 and block.next_block_first_id == 1000
    big = zk.ProducerIdsBlock(2, 2**63 - 1000, 1000)
    assert zk.decode_producer_id_block(zk.encode_producer_id_block(big)) == big
    for bad in (b'{"version":1,"broker":0,"block_start":0,"block_end":"999"}',
                b'{"version":1,"broker":0,"block_start":"10","block_end":"9"}',
                b'{"version":1,"broker":0,"block_start":"0","block_end":"9223372036854775808"}',
                b'{"version":1,"block_start":"0","block_end":"999"}'):
        with pytest.raises(zk.ZkDataError, match="producer id block"):
            zk.decode_producer_id_block(bad)


def test_reassignment_as_kafka_writes_it() -> None:
    data = b'{"version":1,"partitions":[{"topic":"foo","partition":0,"replicas":[1,2]},{"topic":"foo","partition":1,"replicas":[2,3]}]}'
    reassignment = {("foo", 1): (2, 3), ("foo", 0): (1, 2)}
    assert zk.encode_reassignment(reassignment) == data
    assert zk.decode_reassignment(data) == reassignment
    for bad in (b'{"version":1,"partitions":[{"topic":"foo","partition":0}]}',
                b'{"version":1,"partitions":[{"partition":0,"replicas":[1]}]}',
                b'{"version":1,"partitions":{}}', b'{"version":1,"partitions":[1]}'):
        with pytest.raises(zk.ZkDataError, match="partition reassignment"):
            zk.decode_reassignment(bad)


def test_preferred_replica_election_and_isr_change_as_kafka_writes_them() -> None:
    data = b'{"version":1,"partitions":[{"topic":"bar","partition":2},{"topic":"foo","partition":0}]}'
    partitions = {("foo", 0), ("bar", 2)}
    for encode, decode in (
        (zk.encode_preferred_replica_election, zk.decode_preferred_replica_election),
        (zk.encode_isr_change_notification, zk.decode_isr_change_notification),
    ):
        assert encode(partitions) == data
        assert decode(data) == partitions
        assert decode(b'{"version":1,"partitions":[]}') == frozenset()
        with pytest.raises(zk.ZkDataError, match="partition: expected an integer"):
            decode(b'{"version":1,"partitions":[{"topic":"foo","partition":"0"}]}')
        with pytest.raises(zk.ZkDataError, match="'partitions' is missing"):
            decode(b'{"version":1}')


def test_non_ascii_is_written_as_utf8_as_jackson_does() -> None:
    assert zk.encode_cluster_id("é") == '{"version":"1","id":"é"}'.encode()
    assert zk.decode_cluster_id('{"version":"1","id":"é"}'.encode()) == "é"


# ---- garbage never raises anything but ZkDataError -----------------------------------

DECODERS = [
    lambda d: zk.decode_broker_registration(1, d),
    zk.decode_topic_assignment,
    zk.decode_partition_state,
    zk.decode_controller,
    zk.decode_controller_epoch,
    zk.decode_cluster_id,
    zk.decode_entity_config,
    zk.decode_config_change_notification,
    zk.decode_producer_id_block,
    zk.decode_reassignment,
    zk.decode_preferred_replica_election,
    zk.decode_isr_change_notification,
]

KEYS = ["version", "host", "port", "jmx_port", "timestamp", "endpoints", "rack", "features",
        "listener_security_protocol_map", "PLAINTEXT", "partitions", "topic_id", "adding_replicas",
        "removing_replicas", "0", "1", "-1", "a", "leader", "leader_epoch", "isr", "controller_epoch",
        "leader_recovery_state", "brokerid", "kraftControllerEpoch", "id", "config", "entity_path",
        "entity_type", "entity_name", "broker", "block_start", "block_end", "topic", "partition",
        "replicas", "min_version", "max_version"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.sampled_from(["0", "1", "topics/x", "PLAINTEXT://h:1", "x://[::1]:-1", "AAAAAAAAAAAAAAAAAAAAAA", "SSL"])
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), children, max_size=6),
    max_leaves=20,
)


def _only_zk_data_error(data: bytes) -> None:
    for decode in DECODERS:
        try:
            decode(data)
        except zk.ZkDataError:
            pass


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_zk_data_error(data: bytes) -> None:
    _only_zk_data_error(data)


@settings(max_examples=1000, deadline=None)
@given(JSON_VALUES)
def test_random_json_raises_only_zk_data_error(value: object) -> None:
    _only_zk_data_error(json.dumps(value).encode())


def test_deep_nesting_raises_zk_data_error() -> None:
    for decode in DECODERS:
        with pytest.raises(zk.ZkDataError):
            decode(b"[" * 100_000)
        with pytest.raises(zk.ZkDataError):
            decode("not bytes")  # type: ignore[arg-type]


# ---- replica assignment --------------------------------------------------------------


def test_rack_unaware_assignment_is_kafkas() -> None:
    # Kafka's AdminUtilsTest.testReplicaAssignment: 5 brokers, 10 partitions, RF 3,
    # start index 0: leaders round-robin, followers shifted by one more each round.
    expected = {
        0: (0, 1, 2), 1: (1, 2, 3), 2: (2, 3, 4), 3: (3, 4, 0), 4: (4, 0, 1),
        5: (0, 2, 3), 6: (1, 3, 4), 7: (2, 4, 0), 8: (3, 0, 1), 9: (4, 1, 2),
    }
    brokers = dict.fromkeys(range(5))
    assert zk.assign_replicas(brokers, 10, 3, start_index=0) == expected
    # Adding partitions continues the pattern from the existing count.
    assert zk.assign_replicas(brokers, 5, 3, start_index=0, start_partition_id=5) == {p: expected[p] for p in range(5, 10)}


def test_rack_unaware_assignment_with_another_start_index_and_broker_ids() -> None:
    # Brokers sorted by id: [10, 20, 30]; start index 1, shift 1.
    # p0: first (0+1)%3=1 -> 20; follower at 1 + (1+0)%2 = 2 -> (1+2)%3=0 -> 10
    # p1: first 2 -> 30; follower (2+2)%3=1 -> 20
    # p2: first 0 -> 10; follower (0+2)%3=2 -> 30
    # p3: 3%3 == 0, shift 2; first 1 -> 20; follower 1 + (2+0)%2 = 1 -> 2 -> 30
    assert zk.assign_replicas({30: None, 10: None, 20: None}, 4, 2, start_index=1) == {
        0: (20, 10), 1: (30, 20), 2: (10, 30), 3: (20, 30),
    }


def test_rack_alternated_broker_list_is_kafkas() -> None:
    # The examples in Kafka's AdminUtils documentation.
    assert zk.rack_alternated_broker_list(
        {0: "rack1", 1: "rack3", 2: "rack3", 3: "rack2", 4: "rack2", 5: "rack1"}
    ) == [0, 3, 1, 5, 4, 2]
    assert zk.rack_alternated_broker_list(
        {b: f"rack{b // 3 + 1}" for b in range(9)}
    ) == [0, 3, 6, 1, 4, 7, 2, 5, 8]
    assert zk.rack_alternated_broker_list({0: "a", 1: "a", 2: "a", 3: "b"}) == [0, 3, 1, 2]


def test_rack_aware_assignment_is_kafkas() -> None:
    # Kafka's documented example: alternated list 0, 3, 1, 5, 4, 2; 6 partitions RF 3
    # round-robin over it, and partition 6 starts shifting the followers.
    racks = {0: "rack1", 1: "rack3", 2: "rack3", 3: "rack2", 4: "rack2", 5: "rack1"}
    assert zk.assign_replicas(racks, 7, 3, start_index=0) == {
        0: (0, 3, 1), 1: (3, 1, 5), 2: (1, 5, 4), 3: (5, 4, 2), 4: (4, 2, 0), 5: (2, 0, 3), 6: (0, 4, 2),
    }


def test_rack_aware_assignment_skips_brokers_on_a_rack_that_has_a_replica() -> None:
    # Alternated list [0(a), 3(b), 1(a), 2(a)], RF 2, start 0:
    # p2: leader 1(a); 2(a) skipped, 0(a) skipped, then 3(b).
    # p3: leader 2(a); 0(a) skipped, then 3(b).
    # p4: 4%4 == 0, shift 1, times 2 racks = 2: leader 0(a); 2(a) skipped, then 3(b).
    racks = {0: "a", 1: "a", 2: "a", 3: "b"}
    assert zk.assign_replicas(racks, 5, 2, start_index=0) == {
        0: (0, 3), 1: (3, 1), 2: (1, 3), 3: (2, 3), 4: (0, 3),
    }
    # More replicas than racks: every rack first, then the brokers left.
    assert zk.assign_replicas({0: "a", 1: "a", 2: "b", 3: "b"}, 1, 3, start_index=0) == {0: (0, 2, 1)}


def test_assignment_errors_are_kafkas() -> None:
    with pytest.raises(zk.InvalidReplicationFactor, match=r"^Replication factor: 3 larger than available brokers: 2\.$"):
        zk.assign_replicas({0: None, 1: None}, 1, 3)
    with pytest.raises(zk.InvalidReplicationFactor, match=r"^Replication factor must be larger than 0\.$"):
        zk.assign_replicas({0: None}, 1, 0)
    with pytest.raises(zk.InvalidPartitions, match=r"^Number of partitions must be larger than 0\.$"):
        zk.assign_replicas({0: None}, 0, 1)
    with pytest.raises(zk.AdminOperationError, match=r"^Not all brokers have rack information for replica rack aware assignment\.$"):
        zk.assign_replicas({0: "a", 1: None}, 1, 1)
    assert issubclass(zk.InvalidReplicationFactor, ValueError)


def test_assignment_is_deterministic_with_a_seeded_rng_and_random_without() -> None:
    brokers = dict.fromkeys(range(7))
    seeded = [zk.assign_replicas(brokers, 14, 3, rng=random.Random(s)) for s in range(20)]
    assert seeded == [zk.assign_replicas(brokers, 14, 3, rng=random.Random(s)) for s in range(20)]
    assert len({tuple(a.items()) for a in seeded}) > 1  # the seed picks the start
    # The explicit start index wins over the rng.
    assert zk.assign_replicas(brokers, 14, 3, start_index=2, rng=random.Random(1)) == zk.assign_replicas(
        brokers, 14, 3, start_index=2, rng=random.Random(2)
    )
    unseeded = {tuple(zk.assign_replicas(brokers, 7, 3).items()) for _ in range(50)}
    assert len(unseeded) > 1


@pytest.mark.parametrize("seed", range(20))
def test_random_start_and_follower_shift_are_drawn_apart(seed: int) -> None:
    """Kafka draws the start index, then the follower shift, each in [0, n): partition 0
    is led by brokers[start], its second replica is 1 + shift % (n - 1) further on."""
    ids = [1, 2, 3, 4, 5, 6, 7]
    draws = random.Random(seed)
    start, shift = draws.randrange(7), draws.randrange(7)
    assignment = zk.assign_replicas(dict.fromkeys(ids), 1, 2, rng=random.Random(seed))
    assert assignment == {0: (ids[start], ids[(start + 1 + shift % 6) % 7])}


@settings(max_examples=300, deadline=None)
@given(
    n_brokers=st.integers(1, 12),
    n_racks=st.integers(0, 5),
    data=st.data(),
)
def test_assignment_properties(n_brokers: int, n_racks: int, data: st.DataObject) -> None:
    ids = data.draw(st.lists(st.integers(0, 1000), min_size=n_brokers, max_size=n_brokers, unique=True))
    racks = {b: (f"r{data.draw(st.integers(0, n_racks - 1))}" if n_racks else None) for b in ids}
    rf = data.draw(st.integers(1, n_brokers))
    num_partitions = data.draw(st.integers(1, 40))
    start_partition = data.draw(st.integers(-1, 20))
    seed = data.draw(st.integers(0, 2**32))
    assignment = zk.assign_replicas(racks, num_partitions, rf, start_partition_id=start_partition, rng=random.Random(seed))

    first = max(0, start_partition)
    assert list(assignment) == list(range(first, first + num_partitions))
    distinct_racks = len(set(racks.values()))
    for replicas in assignment.values():
        assert len(replicas) == rf == len(set(replicas))
        assert set(replicas) <= set(ids)
        if n_racks:
            assert len({racks[r] for r in replicas}) == min(rf, distinct_racks)
    leaders = Counter(replicas[0] for replicas in assignment.values())
    counts = [leaders.get(b, 0) for b in ids]
    assert max(counts) - min(counts) <= 1
    if num_partitions % n_brokers == 0:
        assert set(counts) == {num_partitions // n_brokers}
        if not n_racks and first % n_brokers == 0:
            # Each round of n partitions (from a multiple of n, where the shift changes)
            # puts every follower position on every broker once.
            replica_counts = Counter(b for replicas in assignment.values() for b in replicas)
            assert set(replica_counts.values()) == {num_partitions * rf // n_brokers}


@pytest.mark.parametrize(
    ("num_partitions", "rf", "start_partition"),
    [(6, 3, -1), (12, 3, -1), (12, 2, -1), (6, 2, -1), (12, 2, 12), (96, 3, -1)],
)
@pytest.mark.parametrize("seed", range(10))
def test_rack_aware_assignment_is_even_with_even_racks(num_partitions: int, rf: int, start_partition: int, seed: int) -> None:
    """Kafka's promise: as many brokers in each rack, every broker leads as many
    partitions and holds as many replicas, and a partition's replicas are on distinct
    racks."""
    racks = {0: "rack1", 1: "rack2", 2: "rack2", 3: "rack3", 4: "rack3", 5: "rack1"}
    if num_partitions == 96:
        racks = {b: f"rack{b % 3}" for b in range(12)}
    assignment = zk.assign_replicas(racks, num_partitions, rf, start_partition_id=start_partition, rng=random.Random(seed))
    for replicas in assignment.values():
        assert len({racks[b] for b in replicas}) == rf
    leaders = Counter(replicas[0] for replicas in assignment.values())
    assert sorted(leaders.values()) == [num_partitions // len(racks)] * len(racks)
    replica_counts = Counter(b for replicas in assignment.values() for b in replicas)
    assert sorted(replica_counts.values()) == [num_partitions * rf // len(racks)] * len(racks)


# ---- leader election -----------------------------------------------------------------


def test_offline_partition_leader() -> None:
    # The first replica in assignment order that is live and in the ISR.
    assert zk.offline_partition_leader([1, 2, 3], isr=[3, 2], live_brokers={2, 3}, unclean=False) == 2
    assert zk.offline_partition_leader([1, 2, 3], isr=[1, 2, 3], live_brokers={3}, unclean=False) == 3
    # No live replica in the ISR: none, unless unclean, then the first live replica.
    assert zk.offline_partition_leader([1, 2, 3], isr=[1], live_brokers={3, 2}, unclean=False) is None
    assert zk.offline_partition_leader([1, 2, 3], isr=[1], live_brokers={3, 2}, unclean=True) == 2
    assert zk.offline_partition_leader([1, 2, 3], isr=[1], live_brokers={4}, unclean=True) is None
    # A live ISR member wins even with unclean allowed.
    assert zk.offline_partition_leader([1, 2, 3], isr=[3], live_brokers={2, 3}, unclean=True) == 3


def test_reassign_partition_leader() -> None:
    assert zk.reassign_partition_leader([4, 5, 6], isr=[1, 5, 6], live_brokers={4, 5, 6}) == 5
    assert zk.reassign_partition_leader([4, 5, 6], isr=[1, 2], live_brokers={1, 2, 4, 5, 6}) is None
    assert zk.reassign_partition_leader([4, 5, 6], isr=[4, 5, 6], live_brokers={6}) == 6


def test_preferred_replica_leader() -> None:
    assert zk.preferred_replica_leader([2, 1, 3], isr=[1, 2, 3], live_brokers={1, 2, 3}) == 2
    assert zk.preferred_replica_leader([2, 1, 3], isr=[1, 3], live_brokers={1, 2, 3}) is None
    assert zk.preferred_replica_leader([2, 1, 3], isr=[1, 2, 3], live_brokers={1, 3}) is None
    assert zk.preferred_replica_leader([], isr=[1], live_brokers={1}) is None


def test_controlled_shutdown_leader() -> None:
    # Broker 1 is shutting down (still live): the next live ISR replica takes over.
    assert zk.controlled_shutdown_leader([1, 2, 3], isr=[1, 2, 3], live_brokers={1, 2, 3}, shutting_down={1}) == 2
    assert zk.controlled_shutdown_leader([1, 2, 3], isr=[1, 3], live_brokers={1, 2, 3}, shutting_down={1}) == 3
    assert zk.controlled_shutdown_leader([1, 2, 3], isr=[1], live_brokers={1, 2, 3}, shutting_down={1}) is None
    assert zk.controlled_shutdown_leader([1, 2, 3], isr=[1, 2, 3], live_brokers={1, 3}, shutting_down={1}) == 3
