"""The inter-broker client (kwire.cluster.broker_client) against a real kwire broker
in this process (run_broker on a tmp dir, real sockets, real disk), against a broker
subprocess for the throughput figure, and against scripted loopback servers for the
failures a real broker does not produce on demand (silence, a torn frame, a huge
size prefix, answers out of order)."""

from __future__ import annotations

import datetime
import struct
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import free_port
from kio.schema.create_topics.v7.request import CreatableTopic, CreateTopicsRequest
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12.request import FetchPartition as FetchPartitionV12
from kio.schema.fetch.v12.request import FetchRequest as FetchRequestV12
from kio.schema.fetch.v12.request import FetchTopic as FetchTopicV12
from kio.schema.fetch.v15.request import FetchPartition as FetchPartitionV15
from kio.schema.fetch.v15.request import FetchRequest as FetchRequestV15
from kio.schema.fetch.v15.request import FetchTopic as FetchTopicV15
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData

from kwire.cluster.broker_client import (
    BrokerClientPool,
    BrokerConnection,
    BrokerConnectionError,
    UnsupportedVersionError,
)
from kwire.config import BrokerConfig
from kwire.protocol.headers import response_header
from kwire.protocol.messages import encode
from kwire.protocol.records import build_batch, iter_records, validate_batches
from kwire.server import run_broker

TIMEOUT = 10.0
CLIENT_ID = "broker-7"


class InProcessBroker:
    """run_broker in this trio run, on a tmp dir; stop() cancels it (a clean close),
    start() again reopens the same data."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = data_dir
        self.port = port
        self._scope: trio.CancelScope | None = None
        self._stopped: trio.Event | None = None

    async def start(self, nursery: trio.Nursery) -> InProcessBroker:
        config = BrokerConfig({
            "log.dirs": str(self.data_dir),
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "group.initial.rebalance.delay.ms": "0",
        })
        config.validate()
        bound: list[tuple[str, str, int]] = []
        scope = self._scope = trio.CancelScope()
        stopped = self._stopped = trio.Event()

        async def run(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await run_broker(config, ready=lambda _b, b: bound.extend(b), task_status=task_status)
            finally:
                stopped.set()

        with trio.fail_after(TIMEOUT):
            await nursery.start(run)
        self.port = bound[0][2]
        return self

    async def stop(self) -> None:
        assert self._scope is not None and self._stopped is not None
        self._scope.cancel()
        with trio.fail_after(TIMEOUT):
            await self._stopped.wait()


@pytest.fixture
async def kwire_broker(nursery: trio.Nursery, tmp_path: Path) -> InProcessBroker:
    broker = await InProcessBroker(tmp_path / "data").start(nursery)
    yield broker
    await broker.stop()


def metadata_request(*topics: str) -> MetadataRequest:
    return MetadataRequest(
        topics=tuple(MetadataRequestTopic(topic_id=None, name=t) for t in topics) if topics else None,
        allow_auto_topic_creation=False,
        include_topic_authorized_operations=False,
    )


def fetched_values(records: bytes | None) -> list[tuple[int, bytes | None, bytes | None]]:
    assert records is not None
    view = memoryview(records)
    return [
        (r.offset, r.key, r.value)
        for h in validate_batches(records)
        for r in iter_records(view[h.position : h.position + h.size])
    ]


# ---- against a real broker ------------------------------------------------------------


async def test_negotiate_metadata_create_produce_fetch(kwire_broker: InProcessBroker) -> None:
    async with BrokerConnection.open("127.0.0.1", kwire_broker.port, client_id=CLIENT_ID, timeout=TIMEOUT) as conn:
        ranges = await conn.negotiate()
        assert ranges[18][0] == 0 and ranges[3][1] >= 12
        assert conn.version_for(3, 12) == 12
        assert conn.version_for(1, 15) == 15
        assert conn.version_for(1, 99) == ranges[1][1]
        with pytest.raises(UnsupportedVersionError):
            conn.version_for(1, 3)  # kwire serves Fetch from v4
        with pytest.raises(UnsupportedVersionError):
            conn.version_for(-5, 3)  # an API it does not serve at all

        created = await conn.request(19, 7, CreateTopicsRequest(
            topics=(CreatableTopic(name="replicated", num_partitions=2, replication_factor=1, assignments=(), configs=()),),
            timeout=datetime.timedelta(seconds=5),
            validate_only=False,
        ))
        assert [(t.name, t.error_code) for t in created.topics] == [("replicated", ErrorCode.none)]

        metadata = await conn.request(3, 12, metadata_request("replicated"))
        assert [(b.node_id, b.host, b.port) for b in metadata.brokers] == [(0, "127.0.0.1", kwire_broker.port)]
        (topic,) = metadata.topics
        assert topic.name == "replicated" and topic.error_code == ErrorCode.none
        assert sorted(p.partition_index for p in topic.partitions) == [0, 1]
        topic_id: uuid.UUID = topic.topic_id
        assert topic_id == created.topics[0].topic_id

        values = [(b"k%d" % i, b"value-%d" % i) for i in range(5)]
        produced = await conn.request(0, 9, ProduceRequest(
            transactional_id=None, acks=-1, timeout=datetime.timedelta(seconds=5),
            topic_data=(TopicProduceData(name="replicated", partition_data=(
                PartitionProduceData(index=1, records=build_batch(values)),
            )),),
        ))
        (partition,) = produced.responses[0].partition_responses
        assert (partition.index, partition.error_code, partition.base_offset) == (1, ErrorCode.none, 0)

        expected = [(i, k, v) for i, (k, v) in enumerate(values)]
        v12 = await conn.request(1, 12, FetchRequestV12(
            replica_id=-1, max_wait=datetime.timedelta(milliseconds=0), min_bytes=1, max_bytes=1 << 20,
            isolation_level=0, session_id=0, session_epoch=-1, forgotten_topics_data=(), rack_id="",
            topics=(FetchTopicV12(topic="replicated", partitions=(
                FetchPartitionV12(partition=1, fetch_offset=0, partition_max_bytes=1 << 20),
            )),),
        ))
        (data,) = v12.responses[0].partitions
        assert (data.error_code, data.high_watermark) == (ErrorCode.none, 5)
        assert fetched_values(data.records) == expected

        v15 = await conn.request(1, 15, FetchRequestV15(
            max_wait=datetime.timedelta(milliseconds=0), min_bytes=1, max_bytes=1 << 20,
            isolation_level=0, session_id=0, session_epoch=-1, forgotten_topics_data=(), rack_id="",
            topics=(FetchTopicV15(topic_id=topic_id, partitions=(
                FetchPartitionV15(partition=1, fetch_offset=2, partition_max_bytes=1 << 20),
            )),),
        ))
        (topic_data,) = v15.responses
        assert topic_data.topic_id == topic_id
        (data,) = topic_data.partitions
        assert data.error_code == ErrorCode.none and data.high_watermark == 5
        # The whole batch comes back; the follower skips what is below its offset.
        assert [r for r in fetched_values(data.records) if r[0] >= 2] == expected[2:]

        # Produce with acks=0 has no answer; the connection goes on.
        assert await conn.request(0, 9, ProduceRequest(
            transactional_id=None, acks=0, timeout=datetime.timedelta(seconds=5),
            topic_data=(TopicProduceData(name="replicated", partition_data=(
                PartitionProduceData(index=0, records=build_batch([(None, b"fire-and-forget")])),
            )),),
        )) is None
        after = await conn.request(3, 12, metadata_request("replicated"))
        assert after.topics[0].name == "replicated"
    assert conn.closed
    with pytest.raises(BrokerConnectionError):
        await conn.request(3, 12, metadata_request())


async def test_fifty_pipelined_requests_get_their_own_answers(kwire_broker: InProcessBroker) -> None:
    async with BrokerConnection.open("127.0.0.1", kwire_broker.port, client_id=CLIENT_ID, timeout=TIMEOUT) as conn:
        answers: dict[int, Any] = {}

        async def ask(i: int) -> None:
            answers[i] = await conn.request(3, 12, metadata_request(f"topic-{i}"))

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(ask, i)
        assert sorted(answers) == list(range(50))
        for i, answer in answers.items():
            (topic,) = answer.topics
            assert (topic.name, topic.error_code) == (f"topic-{i}", ErrorCode.unknown_topic_or_partition)
        assert not conn.closed and conn.in_flight == 0


async def test_caller_cancellation_keeps_the_connection(kwire_broker: InProcessBroker) -> None:
    """A caller that gives up (its own cancel scope, not the request timeout) leaves the
    connection usable: the late answer is read and dropped."""
    async with BrokerConnection.open("127.0.0.1", kwire_broker.port, client_id=CLIENT_ID, timeout=TIMEOUT) as conn:
        # A long-poll fetch of an empty partition that waits 500 ms on the broker.
        await conn.request(19, 7, CreateTopicsRequest(
            topics=(CreatableTopic(name="idle", num_partitions=1, replication_factor=1, assignments=(), configs=()),),
            timeout=datetime.timedelta(seconds=5), validate_only=False,
        ))
        long_poll = FetchRequestV12(
            replica_id=-1, max_wait=datetime.timedelta(milliseconds=500), min_bytes=1, max_bytes=1 << 20,
            isolation_level=0, session_id=0, session_epoch=-1, forgotten_topics_data=(), rack_id="",
            topics=(FetchTopicV12(topic="idle", partitions=(
                FetchPartitionV12(partition=0, fetch_offset=0, partition_max_bytes=1 << 20),
            )),),
        )
        with trio.move_on_after(0.05) as scope:
            await conn.request(1, 12, long_poll)
        assert scope.cancelled_caught and not conn.closed
        # A caller already cancelled when it asks writes nothing.
        with trio.CancelScope() as scope:
            scope.cancel()
            await conn.request(3, 12, metadata_request("idle"))
        assert scope.cancelled_caught and not conn.closed
        answer = await conn.request(3, 12, metadata_request("idle"))
        assert answer.topics[0].name == "idle" and not conn.closed
        assert conn.in_flight == 0  # the abandoned answer was read and dropped


# ---- failures, against scripted servers -----------------------------------------------

Script = Callable[[trio.SocketStream], Awaitable[None]]


async def serve_script(nursery: trio.Nursery, script: Script) -> int:
    """A loopback listener that runs `script` on each accepted connection."""
    listeners = await nursery.start(partial(trio.serve_tcp, script, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def read_frame(stream: trio.SocketStream, buffer: bytearray) -> bytes:
    while True:
        if len(buffer) >= 4:
            (size,) = struct.unpack_from(">i", buffer)
            if len(buffer) >= 4 + size:
                frame = bytes(buffer[4 : 4 + size])
                del buffer[: 4 + size]
                return frame
        data = await stream.receive_some()
        if not data:
            raise EOFError
        buffer += data


async def test_silent_server_times_out_every_pending_request(nursery: trio.Nursery) -> None:
    received = []

    async def silent(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        try:
            while True:
                received.append(await read_frame(stream, buffer))
        except (EOFError, trio.BrokenResourceError):
            pass

    port = await serve_script(nursery, silent)
    async with BrokerConnection.open("127.0.0.1", port, client_id=CLIENT_ID, timeout=TIMEOUT) as conn:
        errors: list[tuple[str, BaseException, float]] = []
        started = trio.current_time()

        async def ask(name: str, timeout: float) -> None:
            try:
                await conn.request(3, 12, metadata_request(name), timeout=timeout)
            except BaseException as e:
                errors.append((name, e, trio.current_time() - started))

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as requests:
                requests.start_soon(ask, "short", 0.3)
                requests.start_soon(ask, "long", 5.0)
        assert sorted(name for name, _e, _t in errors) == ["long", "short"]
        assert all(isinstance(e, BrokerConnectionError) for _n, e, _t in errors)
        # Both fail when the shorter timeout expires: the connection is closed then.
        assert all(0.3 <= t < 1.5 for _n, _e, t in errors), errors
        assert "timed out" in str(dict((n, e) for n, e, _t in errors)["short"])
        assert conn.closed and len(received) == 2
        with pytest.raises(BrokerConnectionError):
            await conn.request(3, 12, metadata_request())


async def test_server_closing_mid_frame_fails_the_request(nursery: trio.Nursery) -> None:
    async def torn(stream: trio.SocketStream) -> None:
        frame = await read_frame(stream, bytearray())
        (correlation_id,) = struct.unpack_from(">i", frame, 4)
        # A 100-byte answer of which only the header and 6 bytes arrive.
        await stream.send_all(struct.pack(">i", 100) + response_header(correlation_id, True) + b"\x00" * 6)
        await stream.aclose()

    port = await serve_script(nursery, torn)
    async with BrokerConnection.open("127.0.0.1", port, client_id=CLIENT_ID, timeout=TIMEOUT) as conn:
        with trio.fail_after(TIMEOUT), pytest.raises(BrokerConnectionError, match="closed by the broker"):
            await conn.request(3, 12, metadata_request())
        assert conn.closed


async def test_oversized_response_is_refused_without_allocating(nursery: trio.Nursery) -> None:
    async def huge(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        try:
            while True:
                frame = await read_frame(stream, buffer)
                (correlation_id,) = struct.unpack_from(">i", frame, 4)
                # Announces 1.5 GiB, sends 64 KiB of it and stays open.
                await stream.send_all(struct.pack(">i", 1536 << 20) + response_header(correlation_id, True) + bytes(65536))
        except (EOFError, trio.BrokenResourceError):
            pass

    port = await serve_script(nursery, huge)
    async with BrokerConnection.open(
        "127.0.0.1", port, client_id=CLIENT_ID, timeout=TIMEOUT, max_response_bytes=1 << 20,
    ) as conn:
        with trio.fail_after(TIMEOUT), pytest.raises(BrokerConnectionError, match="max_response_bytes"):
            await conn.request(3, 12, metadata_request())
        assert conn.closed

    # Under a bound large enough to accept the prefix, the buffer still grows only with
    # the bytes that came: the request times out holding about 128 KiB, not 1.5 GiB.
    tracemalloc.start()
    try:
        async with BrokerConnection.open(
            "127.0.0.1", port, client_id=CLIENT_ID, timeout=TIMEOUT, max_response_bytes=2 << 30,
        ) as conn:
            with trio.fail_after(TIMEOUT), pytest.raises(BrokerConnectionError, match="timed out"):
                await conn.request(3, 12, metadata_request(), timeout=0.5)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak


async def test_answers_are_matched_by_correlation_id(nursery: trio.Nursery) -> None:
    """A server that reads 20 requests before it answers any, then answers them in
    reverse: every request was on the wire at once, and each gets its own answer."""
    from kio.schema.metadata.v12.response import MetadataResponse, MetadataResponseTopic

    async def reverse(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        frames = [await read_frame(stream, buffer) for _ in range(20)]
        out = []
        for frame in reversed(frames):
            api_key, version, correlation_id, client_length = struct.unpack_from(">hhih", frame)
            assert (api_key, version) == (3, 12)
            assert frame[10 : 10 + client_length] == CLIENT_ID.encode()
            # The topic name asked for, from the body (header v2: one tagged-field byte).
            body = 10 + client_length + 1
            name_length = frame[body + 1 + 16] - 1  # compact array count, uuid, compact string
            name = frame[body + 1 + 16 + 1 : body + 1 + 16 + 1 + name_length].decode()
            answer = MetadataResponse(
                throttle_time=datetime.timedelta(0), brokers=(), cluster_id=None, controller_id=-1,
                topics=(MetadataResponseTopic(
                    error_code=ErrorCode.none, name=name, topic_id=uuid.UUID(int=0), is_internal=False,
                    partitions=(), topic_authorized_operations=-2147483648,
                ),),
            )
            payload = response_header(correlation_id, True) + encode(answer)
            out.append(struct.pack(">i", len(payload)) + payload)
        await stream.send_all(b"".join(out))
        await trio.sleep_forever()

    port = await serve_script(nursery, reverse)
    async with BrokerConnection.open("127.0.0.1", port, client_id=CLIENT_ID, timeout=TIMEOUT) as conn:
        answers: dict[int, str] = {}

        async def ask(i: int) -> None:
            answers[i] = (await conn.request(3, 12, metadata_request(f"t{i}"))).topics[0].name

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as requests:
                for i in range(20):
                    requests.start_soon(ask, i)
        assert answers == {i: f"t{i}" for i in range(20)}


async def test_negotiate_falls_back_when_api_versions_v3_is_unknown(nursery: trio.Nursery) -> None:
    """A broker that knows ApiVersions only up to v2 answers the v3 request in v0 with
    UNSUPPORTED_VERSION and its range, as Kafka's brokers do; the client asks again in v2."""
    from kio.schema.api_versions.v0.response import ApiVersion as ApiVersionV0
    from kio.schema.api_versions.v0.response import ApiVersionsResponse as ApiVersionsResponseV0
    from kio.schema.api_versions.v2.response import ApiVersion as ApiVersionV2
    from kio.schema.api_versions.v2.response import ApiVersionsResponse as ApiVersionsResponseV2

    asked: list[int] = []

    async def old_broker(stream: trio.SocketStream) -> None:
        buffer = bytearray()
        try:
            while True:
                frame = await read_frame(stream, buffer)
                api_key, version, correlation_id = struct.unpack_from(">hhi", frame)
                assert api_key == 18
                asked.append(version)
                if version > 2:
                    body = encode(ApiVersionsResponseV0(
                        error_code=ErrorCode.unsupported_version,
                        api_keys=(ApiVersionV0(api_key=18, min_version=0, max_version=2),),
                    ))
                else:
                    body = encode(ApiVersionsResponseV2(
                        error_code=ErrorCode.none, throttle_time=datetime.timedelta(0),
                        api_keys=(
                            ApiVersionV2(api_key=18, min_version=0, max_version=2),
                            ApiVersionV2(api_key=1, min_version=4, max_version=13),
                        ),
                    ))
                payload = response_header(correlation_id, False) + body  # ApiVersions: header v0
                await stream.send_all(struct.pack(">i", len(payload)) + payload)
        except (EOFError, trio.BrokenResourceError):
            pass

    port = await serve_script(nursery, old_broker)
    async with BrokerConnection.open("127.0.0.1", port, client_id=CLIENT_ID, timeout=TIMEOUT) as conn:
        with pytest.raises(UnsupportedVersionError, match="not negotiated"):
            conn.version_for(1, 15)
        with trio.fail_after(TIMEOUT):
            assert await conn.negotiate() == {18: (0, 2), 1: (4, 13)}
        assert asked == [3, 2]
        assert conn.version_for(1, 15) == 13
        with pytest.raises(UnsupportedVersionError):
            conn.version_for(3, 12)


async def test_unreachable_broker_is_a_connection_error() -> None:
    port = free_port()  # nothing listens there
    with trio.fail_after(TIMEOUT), pytest.raises(BrokerConnectionError, match="cannot connect"):
        async with BrokerConnection.open("127.0.0.1", port, client_id=CLIENT_ID, timeout=2):
            pass


# ---- the pool -------------------------------------------------------------------------


async def test_pool_reconnects_after_the_broker_restarts(nursery: trio.Nursery, tmp_path: Path) -> None:
    broker = await InProcessBroker(tmp_path / "data", port=free_port()).start(nursery)
    addresses = {0: ("127.0.0.1", broker.port)}
    async with BrokerClientPool(addresses.get, client_id=CLIENT_ID, timeout=TIMEOUT) as pool:
        first = await pool.request(0, 3, 12, metadata_request())
        assert [b.port for b in first.brokers] == [broker.port]
        conn = pool.connected(0)
        assert conn is not None and conn.version_for(3, 12) == 12  # negotiated on connect

        await broker.stop()
        with trio.fail_after(TIMEOUT):
            while not conn.closed:  # the reader sees the broker close the connection
                await trio.sleep(0.01)
        with pytest.raises(BrokerConnectionError):
            await pool.request(0, 3, 12, metadata_request(), timeout=1)

        await broker.start(nursery)
        with trio.fail_after(TIMEOUT):
            while True:
                try:
                    again = await pool.request(0, 3, 12, metadata_request(), timeout=1)
                    break
                except BrokerConnectionError:
                    await trio.sleep(0.05)
        assert [b.port for b in again.brokers] == [broker.port]
        assert pool.connected(0) is not conn

        # The broker moves to another port: the old connection is closed, the next
        # request goes to the new address.
        current = pool.connected(0)
        assert current is not None
        await broker.stop()
        broker.port = free_port()
        await broker.start(nursery)
        addresses[0] = ("127.0.0.1", broker.port)
        pool.invalidate(0)
        assert current.closed
        moved = await pool.request(0, 3, 12, metadata_request())
        assert [b.port for b in moved.brokers] == [broker.port]
        assert pool.connected(0).address == ("127.0.0.1", broker.port)

        # An address change seen through the resolver alone also reconnects.
        before = pool.connected(0)
        addresses[0] = ("localhost", broker.port)
        try:
            await pool.request(0, 3, 12, metadata_request(), timeout=5)
        except BrokerConnectionError:
            pass  # localhost may not resolve to 127.0.0.1 here; the old one must close anyway
        assert before.closed
    await broker.stop()


async def test_pool_backs_off_between_failed_attempts(nursery: trio.Nursery) -> None:
    port = free_port()  # nothing listens: every attempt is refused at once
    async with BrokerClientPool(lambda _id: ("127.0.0.1", port), client_id=CLIENT_ID, timeout=TIMEOUT) as pool:
        attempts: list[float] = []
        with trio.fail_after(TIMEOUT):
            while len(attempts) < 6:
                with pytest.raises(BrokerConnectionError):
                    await pool.request(0, 3, 12, metadata_request())
                attempts.append(trio.current_time())  # refused at once: when it was tried
        gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
        # 50 ms doubling (20 % jitter), capped at 1 s: 0.05, 0.1, 0.2, 0.4, 0.8.
        for gap, expected in zip(gaps, (0.05, 0.1, 0.2, 0.4, 0.8), strict=True):
            assert expected * 0.8 - 0.01 <= gap <= expected * 1.2 + 0.2, gaps
        assert pool.backoff(10) <= 1.2
        # A request whose timeout ends before the next attempt may start fails at once.
        with pytest.raises(BrokerConnectionError, match="backoff"):
            await pool.request(0, 3, 12, metadata_request(), timeout=0.01)
    # An unknown broker is an error, not a hang.
    async with BrokerClientPool(lambda _id: None, client_id=CLIENT_ID, timeout=TIMEOUT) as pool:
        with pytest.raises(BrokerConnectionError, match="not known"):
            await pool.request(3, 3, 12, metadata_request())


# ---- throughput -----------------------------------------------------------------------


async def test_pipelined_metadata_throughput(broker: Any) -> None:
    """Metadata v12 in a loop against a broker subprocess (the broker on its own core):
    1 request in flight (round trips), then 32 in flight (pipelined)."""
    port = broker.port
    figures = {}
    async with BrokerConnection.open("127.0.0.1", port, client_id=CLIENT_ID, timeout=TIMEOUT) as conn:
        await conn.negotiate()
        request = metadata_request()
        for _ in range(200):  # warm up: kio modules, the broker's handler
            await conn.request(3, 12, request)
        for in_flight in (1, 32):
            count = 0
            duration = 2.0
            cpu = time.process_time()

            async def loop(deadline: float) -> None:
                nonlocal count
                while trio.current_time() < deadline:
                    response = await conn.request(3, 12, request)
                    assert response.brokers[0].port == port
                    count += 1

            start = trio.current_time()
            async with trio.open_nursery() as tasks:
                for _ in range(in_flight):
                    tasks.start_soon(loop, start + duration)
            elapsed = trio.current_time() - start
            cpu = time.process_time() - cpu
            figures[in_flight] = (count / elapsed, cpu / count * 1e6)
    for in_flight, (rate, cpu_us) in figures.items():
        print(f"Metadata v12, {in_flight} in flight: {rate:,.0f} requests/s, client CPU {cpu_us:.0f} us/request")
    assert figures[32][0] > figures[1][0]
    assert figures[32][0] > 1000
