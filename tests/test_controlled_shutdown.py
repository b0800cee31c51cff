"""Controlled shutdown (ControlledShutdown, key 7): the hand-written codec against Kafka's
JSON definition (every version, tagged fields, truncated and lying frames), the broker
client's raw requests against a real broker, and a 3-broker cluster on a real ZooKeeper:
the controller moves leadership off a broker that asks, other brokers answer
NOT_CONTROLLER, and a broker SIGTERMed under acks=all load hands its leadership over
before it stops."""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from cluster_harness import KwireCluster, wait_until, zk_client
from confluent_kafka.admin import AdminClient
from hypothesis import given
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from kio.schema.metadata.v12.response import MetadataResponse
from kio.serial import entity_reader
from test_broker_client import InProcessBroker, metadata_request
from test_cluster import (
    LoadProducer,
    agreed_view,
    check_acked_in_log,
    create_topic,
    read_log,
    start_cluster,
    wait_for_full_isr,
)

from kwire.cluster.broker_client import BrokerClientPool, BrokerConnection, BrokerConnectionError
from kwire.protocol import controlled_shutdown as cs
from kwire.protocol.apis import API_TABLE
from kwire.protocol.headers import MalformedRequest, encode_uvarint, skip_tagged_fields

# Kafka 3.9's definitions of ControlledShutdown (kio has none), copied from Kafka's
# clients/src/main/resources/common/message (Apache License 2.0, their header kept).
MESSAGE_DIR = Path(__file__).resolve().parent / "data" / "kafka-message"
VERSIONS = range(cs.MIN_VERSION, cs.MAX_VERSION + 1)
TIMEOUT = 10.0

# The API is advertised only once its row is in the API table (with messages.py told
# that kio has no classes for it); until then a broker refuses key 7.
served = pytest.mark.skipif(cs.API_KEY not in API_TABLE, reason="ControlledShutdown is not in the API table yet")


# ------------------------------------------------------------------ Kafka's JSON definition


def definition(name: str) -> dict[str, Any]:
    """A message definition; Kafka's JSON has // comments."""
    text = (MESSAGE_DIR / f"{name}.json").read_text()
    return json.loads("\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//")))


def in_versions(spec: str, version: int) -> bool:
    if spec == "none":
        return False
    if spec.endswith("+"):
        return version >= int(spec[:-1])
    low, _, high = spec.partition("-")
    return int(low) <= version <= int(high or low)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def reference_write(fields: list[dict[str, Any]], values: dict[str, Any], version: int, flexible: bool) -> bytes:
    """Kafka's wire format of `values`, field by field as the definition lists them: the
    independent writer the hand-written codec is checked against."""
    out = bytearray()
    for f in fields:
        if not in_versions(f["versions"], version) or f.get("taggedVersions"):
            continue
        value = values[snake(f["name"])]
        kind = f["type"]
        if kind in ("int16", "int32", "int64"):
            out += struct.pack({"int16": ">h", "int32": ">i", "int64": ">q"}[kind], value)
        elif kind == "string":
            raw = value.encode()
            out += encode_uvarint(len(raw) + 1) if flexible else struct.pack(">h", len(raw))
            out += raw
        elif kind.startswith("[]"):
            out += encode_uvarint(len(value) + 1) if flexible else struct.pack(">i", len(value))
            for element in value:
                out += reference_write(f["fields"], element, version, flexible)
        else:
            raise AssertionError(f"type {kind} not in this message")
    if flexible:
        out.append(0)  # no tagged fields
    return bytes(out)


REQUEST = definition("ControlledShutdownRequest")
RESPONSE = definition("ControlledShutdownResponse")


def test_definition_versions_match_the_codec() -> None:
    for message in (REQUEST, RESPONSE):
        assert message["apiKey"] == cs.API_KEY
        assert message["validVersions"] == "0-3"
        assert message["flexibleVersions"] == f"{cs.FLEXIBLE_VERSION}+"
    assert [f["name"] for f in REQUEST["fields"]] == ["BrokerId", "BrokerEpoch"]
    assert REQUEST["fields"][1]["versions"] == f"{cs.BROKER_EPOCH_VERSION}+"
    assert REQUEST["fields"][1]["default"] == str(cs.UNKNOWN_BROKER_EPOCH)
    for v in VERSIONS:
        assert cs.is_flexible(v) == in_versions(REQUEST["flexibleVersions"], v)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("broker_id", "broker_epoch"), [(0, -1), (3, 0x1_0000_0002), (-1, 2**63 - 1), (2**31 - 1, -(2**63))])
def test_request_round_trip_against_the_definition(version: int, broker_id: int, broker_epoch: int) -> None:
    request = cs.ControlledShutdownRequest(broker_id, broker_epoch)
    wire = reference_write(REQUEST["fields"], {"broker_id": broker_id, "broker_epoch": broker_epoch}, version, cs.is_flexible(version))
    assert cs.encode_controlled_shutdown_request(request, version) == wire
    # v1 has no BrokerEpoch: it reads as its default, -1.
    expected = request if version >= cs.BROKER_EPOCH_VERSION else cs.ControlledShutdownRequest(broker_id)
    framed = b"\x00" * 13 + wire  # a body is read at its offset in the frame
    assert cs.read_controlled_shutdown_request(bytearray(framed), 13, version) == expected


RESPONSES = [
    cs.ControlledShutdownResponse(0),
    cs.ControlledShutdownResponse(41),
    cs.ControlledShutdownResponse(-1, (cs.RemainingPartition("t", 0),)),
    cs.ControlledShutdownResponse(0, (
        cs.RemainingPartition("orders", 2**31 - 1),
        cs.RemainingPartition("zählung-ü", 0),
        cs.RemainingPartition("x" * 249, 7),
        cs.RemainingPartition("", 3),
    )),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("response", RESPONSES)
def test_response_round_trip_against_the_definition(version: int, response: cs.ControlledShutdownResponse) -> None:
    values = {
        "error_code": response.error_code,
        "remaining_partitions": [{"topic_name": p.topic_name, "partition_index": p.partition_index}
                                 for p in response.remaining_partitions],
    }
    wire = reference_write(RESPONSE["fields"], values, version, cs.is_flexible(version))
    assert cs.encode_controlled_shutdown_response(response, version) == wire
    assert cs.read_controlled_shutdown_response(memoryview(b"\x01\x02" + wire), 2, version) == response


def tagged(*fields: tuple[int, bytes]) -> bytes:
    return encode_uvarint(len(fields)) + b"".join(encode_uvarint(t) + encode_uvarint(len(d)) + d for t, d in fields)


def test_v3_unknown_tagged_fields_are_skipped() -> None:
    # As Kafka's generated readers: unknown tags are kept aside, never an error.
    body = struct.pack(">iq", 4, 99) + tagged((0, b"abc"), (70000, b""), (5, b"\xff" * 200))
    assert cs.read_controlled_shutdown_request(body, 0, 3) == cs.ControlledShutdownRequest(4, 99)
    body = (struct.pack(">h", 0) + encode_uvarint(3)
            + encode_uvarint(3) + b"t1" + struct.pack(">i", 1) + tagged((1, b"x"))
            + encode_uvarint(3) + b"t2" + struct.pack(">i", 2) + tagged()
            + tagged((9, b"12345")))
    assert cs.read_controlled_shutdown_response(body, 0, 3) == cs.ControlledShutdownResponse(
        0, (cs.RemainingPartition("t1", 1), cs.RemainingPartition("t2", 2)))


@pytest.mark.parametrize("version", VERSIONS)
def test_every_truncation_is_refused(version: int) -> None:
    request = cs.encode_controlled_shutdown_request(cs.ControlledShutdownRequest(1, 2), version)
    response = cs.encode_controlled_shutdown_response(RESPONSES[3], version)
    for body, read in ((request, cs.read_controlled_shutdown_request), (response, cs.read_controlled_shutdown_response)):
        read(body, 0, version)
        for cut in range(len(body)):
            with pytest.raises(MalformedRequest):
                read(bytearray(body[:cut]), 0, version)


def test_lying_lengths_are_refused_before_anything_is_built() -> None:
    lies = [
        (1, struct.pack(">hi", 0, 2**31 - 1) + b"\x00" * 12),  # 2^31-1 partitions in 12 bytes
        (1, struct.pack(">hi", 0, -1)),  # a null array where none is allowed
        (2, struct.pack(">hi", 0, 1) + struct.pack(">h", -1) + struct.pack(">i", 0)),  # a null topic name
        (2, struct.pack(">hi", 0, 1) + struct.pack(">h", 30) + b"abc" + struct.pack(">i", 0)),  # name past the end
        (1, struct.pack(">hi", 0, 1) + struct.pack(">h", 2) + b"\xff\xfe" + struct.pack(">i", 0)),  # not UTF-8
        (3, struct.pack(">h", 0) + b"\xff\xff\xff\xff\x0f"),  # 2^32-2 entries
        (3, struct.pack(">h", 0) + b"\x80\x80\x80\x80\x80\x01"),  # a varint of six bytes
        (3, struct.pack(">h", 0) + b"\x00"),  # a null compact array
        (3, struct.pack(">h", 0) + b"\x01" + b"\x05"),  # tagged fields: 5 in 0 bytes
        (3, struct.pack(">h", 0) + b"\x01" + b"\x01\x00\x09ab"),  # a tagged field of 9 bytes in 2
    ]
    for version, body in lies:
        with pytest.raises(MalformedRequest):
            cs.read_controlled_shutdown_response(body, 0, version)
    with pytest.raises(MalformedRequest):
        cs.read_controlled_shutdown_request(struct.pack(">iq", 1, 2) + b"\x03\x00\x00", 0, 3)


@pytest.mark.parametrize("version", [0, 4, -1])
def test_unserved_versions_are_not_written_or_read(version: int) -> None:
    with pytest.raises(ValueError):
        cs.encode_controlled_shutdown_request(cs.ControlledShutdownRequest(1), version)
    with pytest.raises(ValueError):
        cs.read_controlled_shutdown_response(b"\x00" * 16, 0, version)


@given(body=st.binary(max_size=64), version=st.sampled_from(list(VERSIONS)), offset=st.integers(0, 4))
def test_any_bytes_read_or_refused_never_anything_else(body: bytes, version: int, offset: int) -> None:
    for read in (cs.read_controlled_shutdown_request, cs.read_controlled_shutdown_response):
        try:
            read(bytearray(body), min(offset, len(body)), version)
        except MalformedRequest:
            pass


# ------------------------------------------------------------------ the broker client


@pytest.fixture
async def kwire_broker(nursery: trio.Nursery, tmp_path: Path) -> InProcessBroker:
    broker = await InProcessBroker(tmp_path / "data").start(nursery)
    yield broker
    await broker.stop()


def _api_versions_v0(frame: memoryview, offset: int) -> tuple[int, dict[int, tuple[int, int]]]:
    (error_code, count) = struct.unpack_from(">hi", frame, offset)
    ranges = {}
    for i in range(count):
        key, low, high = struct.unpack_from(">hhh", frame, offset + 6 + 6 * i)
        ranges[key] = (low, high)
    return error_code, ranges


async def test_request_raw_sends_hand_encoded_bodies_in_both_header_versions(kwire_broker: InProcessBroker) -> None:
    async with BrokerConnection.open("127.0.0.1", kwire_broker.port, client_id="broker-9", timeout=TIMEOUT) as conn:
        ranges = await conn.negotiate()
        # ApiVersions v0: header v1, an empty body.
        error_code, raw_ranges = await conn.request_raw(18, 0, b"", _api_versions_v0, flexible=False)
        assert error_code == 0 and raw_ranges == ranges
        # Metadata v12: header v2 and a response header v1 with tagged fields; read by kio.
        body = b"\x00" + b"\x00\x00" + b"\x00"  # all topics (null), two false flags, no tags
        read = entity_reader(MetadataResponse)
        raw = await conn.request_raw(3, 12, body, lambda frame, offset: read(frame, offset)[0], flexible=True)
        kio = await conn.request(3, 12, metadata_request())
        assert raw == kio and raw.cluster_id
        # Pipelined with kio's requests on the same connection, each gets its own answer.
        async with trio.open_nursery() as nursery:
            answers: dict[int, Any] = {}

            async def ask(i: int) -> None:
                if i % 2:
                    answers[i] = (await conn.request_raw(18, 0, b"", _api_versions_v0, flexible=False))[1]
                else:
                    answers[i] = (await conn.request(3, 12, metadata_request())).cluster_id

            for i in range(20):
                nursery.start_soon(ask, i)
        assert all(answers[i] == (ranges if i % 2 else kio.cluster_id) for i in range(20))


async def test_request_raw_decode_failure_fails_the_connection(kwire_broker: InProcessBroker) -> None:
    def refuse(frame: memoryview, offset: int) -> None:
        raise MalformedRequest("no")

    async with BrokerClientPool(lambda _id: ("127.0.0.1", kwire_broker.port), client_id="broker-9") as pool:
        with pytest.raises(BrokerConnectionError, match="malformed response"):
            await pool.request_raw(0, 18, 0, b"", refuse, flexible=False, timeout=TIMEOUT)
        # The next request reconnects (after the backoff) and is answered.
        error_code, _ = await pool.request_raw(0, 18, 0, b"", _api_versions_v0, flexible=False, timeout=TIMEOUT)
        assert error_code == 0


# ------------------------------------------------------------------ against a cluster


def send_controlled_shutdown(port: int, broker_id: int, broker_epoch: int = -1, version: int = 3,
                             timeout: float = TIMEOUT) -> cs.ControlledShutdownResponse:
    """A ControlledShutdown from a test client: hand-encoded, over a plain socket."""
    client_id = b"test-client"
    header = struct.pack(">hhih", cs.API_KEY, version, 77, len(client_id)) + client_id
    if cs.is_flexible(version):
        header += b"\x00"
    frame = header + cs.encode_controlled_shutdown_request(cs.ControlledShutdownRequest(broker_id, broker_epoch), version)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        (size,) = struct.unpack(">i", _recv_exactly(s, 4))
        answer = _recv_exactly(s, size)
    assert struct.unpack_from(">i", answer)[0] == 77
    offset = skip_tagged_fields(answer, 4) if cs.is_flexible(version) else 4
    return cs.read_controlled_shutdown_response(answer, offset, version)


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def leaders(admin: AdminClient, topic: str) -> dict[int, tuple[int, tuple[int, ...]]]:
    """partition -> (leader, isr) as a broker's Metadata answers it (confluent-kafka)."""
    metadata = admin.list_topics(topic, timeout=TIMEOUT)
    return {p.id: (p.leader, tuple(sorted(p.isrs))) for p in metadata.topics[topic].partitions.values()}


def controller_and_epochs(cluster: KwireCluster) -> tuple[int, dict[int, int]]:
    """The controller's id and each broker's epoch (the czxid of /brokers/ids/<id>)."""
    with zk_client(cluster.connect_string) as zk:
        controller = json.loads(zk.get("/controller")[0])["brokerid"]
        return controller, {i: zk.exists(f"/brokers/ids/{i}").czxid for i in cluster.ids}


@served
def test_controller_moves_leadership_off_a_broker_others_answer_not_controller(kwire_cluster_factory: Any) -> None:
    cluster = start_cluster(kwire_cluster_factory)
    partitions = 6
    create_topic(cluster, "moving", partitions=partitions, rf=3)
    wait_for_full_isr(cluster, {"moving": partitions})
    controller, epochs = controller_and_epochs(cluster)
    others = [i for i in cluster.ids if i != controller]
    # The broker to shut down: not the controller, and it leads something.
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    before = leaders(admin, "moving")
    leaving = max(others, key=lambda i: sum(leader == i for leader, _ in before.values()))
    assert any(leader == leaving for leader, _ in before.values()), before

    # Not the controller: NOT_CONTROLLER, in every version, and nothing moves.
    for version in VERSIONS:
        for i in others:
            answer = send_controlled_shutdown(cluster.broker(i).port, leaving, epochs[leaving], version)
            assert answer == cs.ControlledShutdownResponse(ErrorCode.not_controller.value), (i, version)
    port = cluster.broker(controller).port
    # Kafka's refusals: an unknown broker, an epoch older than the registration's.
    assert send_controlled_shutdown(port, 99).error_code == ErrorCode.broker_not_available.value
    assert send_controlled_shutdown(port, leaving, epochs[leaving] - 1).error_code == ErrorCode.stale_broker_epoch.value
    assert leaders(admin, "moving") == before

    began = time.monotonic()
    answer = send_controlled_shutdown(port, leaving, epochs[leaving], 3)
    answered = time.monotonic() - began
    assert answer == cs.ControlledShutdownResponse(0, ()), answer
    print(f"controller answered in {answered * 1000:.0f} ms")

    # Metadata shows the leadership gone from it within a second, on every broker.
    def moved() -> bool:
        now = leaders(admin, "moving")
        if len(now) != partitions or any(leader in (leaving, -1) for leader, _ in now.values()):
            return False
        view = agreed_view(cluster, "moving")
        return view is not None and all(leader not in (leaving, -1) for leader, _, _ in view.partitions.values())

    wait_until(moved, 1.0, interval=0.02, message=f"no partition led by broker {leaving}")
    after = leaders(admin, "moving")
    # Leadership went to ISR members that were not leaving.
    for p, (leader, _) in after.items():
        assert leader in before[p][1] and leader != leaving, (p, before[p], after[p])
    # Asked again (Kafka's retry): nothing left to move. v1 and v2 are served too.
    for version in VERSIONS:
        assert send_controlled_shutdown(port, leaving, epochs[leaving], version) == cs.ControlledShutdownResponse(0)

    # Once it has stopped and registered again it is no longer shutting down: it
    # rejoins every ISR and stays there (the controller would drop it at once otherwise).
    cluster.restart(leaving)
    wait_for_full_isr(cluster, {"moving": partitions})
    time.sleep(1.0)
    assert all(len(isr) == 3 for _, isr in leaders(admin, "moving").values()), leaders(admin, "moving")


@served
def test_single_broker_answers_not_controller(broker: Any) -> None:
    for version in VERSIONS:
        assert send_controlled_shutdown(broker.port, 0, -1, version).error_code == ErrorCode.not_controller.value


@served
def test_version_0_and_garbage_close_only_their_connection(kwire_cluster_factory: Any) -> None:
    cluster = start_cluster(kwire_cluster_factory, n=1)
    port = cluster.broker(1).port
    # v0's header has no client id: not served, the connection closes.
    for frame in (
        struct.pack(">hhi", 7, 0, 1) + struct.pack(">i", 1),
        struct.pack(">hhih", 7, 3, 1, -1) + b"\x00" + b"\x00\x00",  # truncated body
        struct.pack(">hhih", 7, 1, 1, -1) + struct.pack(">i", 1)[:3],
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            s.sendall(struct.pack(">i", len(frame)) + frame)
            try:
                assert s.recv(4) == b""
            except ConnectionResetError:
                pass
    # The broker still serves it, and once it is the controller, answers as one.
    wait_until(lambda: send_controlled_shutdown(port, 99).error_code == ErrorCode.broker_not_available.value,
               TIMEOUT, message="the controller refuses an unknown broker")


def test_sigterm_under_acks_all_load_moves_leadership_first_and_loses_nothing(kwire_cluster_factory: Any) -> None:
    cluster = start_cluster(kwire_cluster_factory)
    partitions = 6
    create_topic(cluster, "rolling", partitions=partitions, rf=3)
    wait_for_full_isr(cluster, {"rolling": partitions})
    controller, _ = controller_and_epochs(cluster)
    admin = AdminClient({"bootstrap.servers": cluster.broker(controller).bootstrap})
    before = leaders(admin, "rolling")
    # A broker that leads partitions and is not the controller (its own failover is
    # another matter), SIGTERMed while acks=all messages are in flight.
    leaving = max((i for i in cluster.ids if i != controller),
                  key=lambda i: sum(leader == i for leader, _ in before.values()))
    load = LoadProducer(cluster, "rolling", partitions, rate=300).start()
    wait_until(lambda: load.acked_count() >= 300, 30, message="load under way")
    assert cluster.stop(leaving) == 0
    # Leadership moved before it stopped: its log says so, before it stopped cleanly.
    text = cluster.broker(leaving).log_path.read_text(errors="replace")
    moved_at = text.find("controlled shutdown: no partition is led here any more")
    assert moved_at >= 0, text[-3000:]
    assert moved_at < text.find("stopped cleanly")
    wait_until(lambda: all(leader not in (leaving, -1) for leader, _ in leaders(admin, "rolling").values()), 5,
               message="leaders elsewhere")
    acked_before = load.acked_count()
    wait_until(lambda: load.acked_count() >= acked_before + 300, 30, message="load goes on without the broker")
    cluster.broker(leaving).start()
    acked = load.stop()
    # Only retriable errors: with idempotence and retries nothing fails delivery.
    assert not acked.errors, acked.errors[:5]
    print(check_acked_in_log(acked, read_log(cluster, "rolling", partitions), partitions))
