"""Framing, headers and every served API version, without sockets."""

from __future__ import annotations

import datetime
import struct

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode
from kio.static.primitive import Records

from kwire.handlers import RequestContext, dispatch
from kwire.protocol.apis import API_TABLE
from kwire.protocol.framing import FrameBuffer, FrameError, frame
from kwire.protocol.headers import (
    CloseConnection,
    MalformedRequest,
    parse_request_header,
    response_header,
)
from kwire.protocol.messages import (
    HAND_WRITTEN,
    decode_request,
    encode,
    is_flexible,
    request_class,
    response_class,
)

# kio leaves record batches as opaque bytes; any bytes do for a round trip.
st.register_type_strategy(Records, st.binary(max_size=64).map(Records))

SERVED = [(a.key, v) for a in sorted(API_TABLE.values(), key=lambda a: a.key) for v in range(a.min_version, a.max_version + 1)
          if a.key not in HAND_WRITTEN]


def request_header_bytes(api_key: int, version: int, correlation_id: int, client_id: str | None, flexible: bool) -> bytes:
    out = struct.pack(">hhi", api_key, version, correlation_id)
    if client_id is None:
        out += struct.pack(">h", -1)
    else:
        raw = client_id.encode()
        out += struct.pack(">h", len(raw)) + raw
    if flexible:
        # One unknown tagged field, which a reader must skip.
        out += b"\x01" + b"\x05" + b"\x02" + b"hi"
    return out


@given(chunks=st.lists(st.binary(max_size=50), max_size=20), cut=st.integers(1, 17))
def test_frames_survive_any_split(chunks: list[bytes], cut: int) -> None:
    stream = b"".join(frame(c) for c in chunks)
    buffer = FrameBuffer(max_size=1000)
    out = []
    for i in range(0, len(stream), cut):
        buffer.feed(stream[i : i + cut])
        while (f := buffer.next_frame()) is not None:
            out.append(f)
    assert out == chunks
    assert buffer.pending_bytes == 0


def test_oversize_and_negative_frames_are_refused() -> None:
    buffer = FrameBuffer(max_size=100)
    buffer.feed(struct.pack(">i", 101))
    with pytest.raises(FrameError):
        buffer.next_frame()
    buffer = FrameBuffer(max_size=100)
    buffer.feed(struct.pack(">i", -5))
    with pytest.raises(FrameError):
        buffer.next_frame()


@given(client_id=st.one_of(st.none(), st.text(max_size=30)), correlation_id=st.integers(-(2**31), 2**31 - 1), flexible=st.booleans())
def test_request_header_round_trip(client_id: str | None, correlation_id: int, flexible: bool) -> None:
    raw = request_header_bytes(3, 12, correlation_id, client_id, flexible) + b"BODY"
    header = parse_request_header(raw, flexible)
    assert (header.api_key, header.api_version, header.correlation_id) == (3, 12, correlation_id)
    assert header.client_id == client_id
    assert raw[header.body_offset :] == b"BODY"


@pytest.mark.parametrize("size", [0, 5, 9])
def test_truncated_header_is_malformed(size: int) -> None:
    with pytest.raises(MalformedRequest):
        parse_request_header(b"\x00" * size, True)


def test_response_headers() -> None:
    assert response_header(7, False) == b"\x00\x00\x00\x07"
    # v1: an empty tagged-field section, no tag spelled out.
    assert response_header(7, True) == b"\x00\x00\x00\x07\x00"


@pytest.mark.parametrize(("api_key", "version"), SERVED)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_served_version_round_trips(api_key: int, version: int, data: st.DataObject) -> None:
    """Requests written in every served version read back equal; responses too."""
    request = data.draw(st.from_type(request_class(api_key, version)))
    try:
        raw = encode(request)
    except (ValueError, OverflowError):
        # kio's strategies reach durations its own int64-millisecond writer
        # cannot hold (e.g. timedelta.max); no client can send those.
        assume(False)
    try:
        decoded = decode_request(api_key, version, raw, 0)
    except ValueError as e:
        # kio writes some int64 durations its reader cannot turn back into a
        # timedelta (near timedelta.max); no client sends those either.
        assume("timedelta" not in str(e))
        raise
    assert decoded == request
    response = data.draw(st.from_type(response_class(api_key, version)))
    assert encode(response)  # writable


def _dispatch(frame_bytes: bytes) -> bytes | None:
    import trio

    async def run() -> bytes | None:
        return await dispatch(RequestContext(None, "test", "PLAINTEXT"), frame_bytes)  # type: ignore[arg-type]

    return trio.run(run)


def test_api_versions_of_unknown_version_answers_v0_with_ranges() -> None:
    raw = request_header_bytes(18, 99, 42, "probe", False)
    answer = _dispatch(raw)
    assert answer is not None
    size, correlation_id = struct.unpack_from(">ii", answer)
    assert size == len(answer) - 4 and correlation_id == 42
    # Header v0, then the v0 body: error_code, api_keys array.
    error_code, count = struct.unpack_from(">hi", answer, 8)
    assert error_code == ErrorCode.unsupported_version
    keys = {struct.unpack_from(">hhh", answer, 14 + 6 * i)[0] for i in range(count)}
    assert keys == set(API_TABLE)


def test_every_row_of_the_api_table_is_served_by_its_module() -> None:
    """Handler modules are imported on first use; each row's module registers its key,
    and no handler module registers an API the table does not list."""
    import importlib
    import pkgutil

    import kwire.handlers
    from kwire.protocol import apis

    apis.load_all_handlers()
    assert set(apis._HANDLERS) == set(API_TABLE)
    for info in pkgutil.iter_modules(kwire.handlers.__path__):
        importlib.import_module(f"kwire.handlers.{info.name}")  # registers nothing new
    assert set(apis._HANDLERS) == set(API_TABLE)


def test_api_versions_v3_header_has_no_tagged_fields() -> None:
    """librdkafka before 2.1 cannot read a v3 ApiVersions response with header v1."""
    raw = request_header_bytes(18, 3, 9, "probe", True)
    answer = _dispatch(raw + b"\x06kwire\x040.1\x00")
    assert answer is not None
    # correlation id then straight to error_code (int16 0): no tag byte in between.
    assert answer[4:8] == struct.pack(">i", 9)
    assert answer[8:10] == b"\x00\x00"


def test_unknown_api_key_is_malformed() -> None:
    with pytest.raises(MalformedRequest):
        _dispatch(request_header_bytes(999, 0, 1, None, False))


def test_flexible_table_matches_kafka() -> None:
    assert not is_flexible(0, 8) and is_flexible(0, 9)
    assert not is_flexible(1, 11) and is_flexible(1, 12)
    assert not is_flexible(3, 8) and is_flexible(3, 9)


@given(
    sizes=st.lists(st.integers(0, 300), max_size=12),
    cut=st.integers(1, 97),
    use_writable=st.booleans(),
)
def test_large_frames_get_their_own_buffer(sizes: list[int], cut: int, use_writable: bool) -> None:
    """Frames above the shared buffer's size arrive whole, however the stream is cut."""
    chunks = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    stream = b"".join(frame(c) for c in chunks)
    buffer = FrameBuffer(max_size=1000, buffer_size=64)
    out = []
    position = 0
    while position < len(stream):
        piece = stream[position : position + cut]
        if use_writable:
            target = buffer.writable()
            piece = piece[: len(target)]
            target[: len(piece)] = piece
            buffer.advance(len(piece))
        else:
            buffer.feed(piece)
        position += len(piece)
        while (f := buffer.next_frame()) is not None:
            out.append(bytes(f))
    assert out == chunks


@pytest.mark.parametrize("version", range(3, 12))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hand_read_produce_request_matches_kio(version: int, data: st.DataObject) -> None:
    from kwire.protocol.produce_request import read_produce_request

    request = data.draw(st.from_type(request_class(0, version)))
    raw = bytearray(b"HEADER" + encode(request))
    ours = read_produce_request(raw, 6, version)
    assert ours.transactional_id == request.transactional_id
    assert ours.acks == request.acks
    assert ours.timeout_ms == request.timeout // datetime.timedelta(milliseconds=1)
    assert [(t.name, [(p.index, None if p.records is None else bytes(p.records)) for p in t.partition_data]) for t in ours.topic_data] == [
        (t.name, [(p.index, p.records) for p in t.partition_data]) for t in request.topic_data
    ]


@pytest.mark.parametrize("cut", [7, 10, 20, 30])
def test_truncated_produce_request_is_malformed(cut: int) -> None:
    import datetime

    from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData

    from kwire.protocol.produce_request import read_produce_request

    request = ProduceRequest(
        transactional_id=None, acks=1, timeout=datetime.timedelta(seconds=1),
        topic_data=(TopicProduceData(name="topic", partition_data=(PartitionProduceData(index=0, records=Records(b"x" * 40)),)),),
    )
    raw = bytearray(encode(request))[:cut]
    with pytest.raises(MalformedRequest):
        read_produce_request(raw, 0, 9)


@pytest.mark.parametrize("version", range(4, 17))
@pytest.mark.parametrize("records_size", [0, 100, 40_000])
def test_hand_written_fetch_response_reads_back_with_kio(tmp_path, version: int, records_size: int) -> None:
    """Our FetchResponse bytes, file regions inlined, are what kio reads for that version."""
    import uuid

    from kio.serial import entity_reader

    from kwire.log.segment import FileRegion
    from kwire.protocol.fetch_response import FetchedPartition, encode_fetch_response

    path = tmp_path / "segment.log"
    data = bytes(range(256)) * (records_size // 256 + 1)
    path.write_bytes(b"junk" + data[:records_size])
    with open(path, "rb", buffering=0) as file:
        regions = [FileRegion(file, 4, records_size)] if records_size else []
        topic = uuid.uuid4() if version >= 13 else "topic-a"
        partitions = [
            FetchedPartition(0, 0, 10, 9, 2, regions, aborted_transactions=[(7, 3)]),
            FetchedPartition(1, ErrorCode.offset_out_of_range, -1, -1, -1, (), aborted_transactions=None),
        ]
        body = encode_fetch_response(version, 5, 0, 77, [(topic, partitions)])
        raw = b"".join(p if isinstance(p, bytes) else p.tobytes() for p in body.parts)
    assert len(raw) == body.size
    response, end = entity_reader(response_class(1, version))(raw, 0)
    assert end == len(raw)
    assert response.throttle_time.total_seconds() == 0.005
    [topic_response] = response.responses
    assert (topic_response.topic_id if version >= 13 else topic_response.topic) == topic
    first, second = topic_response.partitions
    assert (first.partition_index, first.high_watermark, first.last_stable_offset) == (0, 10, 9)
    assert [(a.producer_id, a.first_offset) for a in first.aborted_transactions] == [(7, 3)]
    assert bytes(first.records or b"") == data[:records_size]
    assert second.error_code == ErrorCode.offset_out_of_range
    if version >= 5:
        assert first.log_start_offset == 2
    if version >= 7:
        assert response.session_id == 77


@pytest.mark.parametrize("version", range(3, 12))
def test_hand_written_produce_response_reads_back_with_kio(version: int) -> None:
    from kio.serial import entity_reader

    from kwire.protocol.produce_response import PartitionProduceResult, encode_produce_response

    body = encode_produce_response(
        version,
        [("topic-a", [PartitionProduceResult(0, 0, 42, 1_700_000_000_000, 7),
                      PartitionProduceResult(1, ErrorCode.corrupt_message, -1, error_message="bad crc")])],
    )
    raw = body.parts[0]
    response, end = entity_reader(response_class(0, version))(raw, 0)
    assert end == len(raw) == body.size
    [topic] = response.responses
    first, second = topic.partition_responses
    assert (topic.name, first.index, first.error_code, first.base_offset) == ("topic-a", 0, ErrorCode.none, 42)
    assert first.log_append_time is not None and first.log_append_time.year == 2023
    assert second.error_code == ErrorCode.corrupt_message and second.log_append_time is None
    if version >= 5:
        assert first.log_start_offset == 7
    if version >= 8:
        assert second.error_message == "bad crc"


# Bounds check (kwire/protocol/bounds.py) and error responses (error_response.py).


def _mutations(raw: bytes, rng) -> list[bytes]:
    out = [raw[:cut] for cut in range(0, len(raw), max(1, len(raw) // 8))]
    for _ in range(12):
        b = bytearray(raw)
        if b:
            at = rng.randrange(len(b))
            b[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\xff\xff\xff\xff\x0f", bytes([rng.randrange(256)])])
        out.append(bytes(b))
    return out


@pytest.mark.parametrize(("api_key", "version"), SERVED)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_bounds_check_accepts_what_kio_writes_and_guards_what_kio_reads(api_key: int, version: int, data: st.DataObject, seed: int) -> None:
    """A kio-written body passes to its last byte; a mutated body the check
    passes is one kio reads without trouble (only its own stricter refusals:
    bad UTF-8, a bool neither 0 nor 1)."""
    import random

    from kio.serial.errors import DecodeError

    from kwire.protocol.bounds import check_request

    request = data.draw(st.from_type(request_class(api_key, version)))
    try:
        raw = encode(request)
    except (ValueError, OverflowError):
        assume(False)
    assert check_request(api_key, version, raw, 0) == len(raw)
    for mutated in _mutations(raw, random.Random(seed)):
        try:
            check_request(api_key, version, mutated, 0)
        except MalformedRequest:
            continue
        try:
            decode_request(api_key, version, mutated, 0)
        except (DecodeError, ValueError):
            pass


@pytest.mark.parametrize(
    ("api_key", "version", "body"),
    [
        (3, 12, bytes.fromhex("ffffffff0f")),  # topics: 2^32-2 entries in no bytes
        (19, 7, bytes.fromhex("ffffffff0f")),
        (20, 6, bytes.fromhex("ffffffff0f")),
        (11, 9, bytes.fromhex("ffffffff0f")),  # group_id: a 2^32-2 byte string
        (3, 12, bytes.fromhex("91d8cdc310")),
        (1, 4, b"\xff" * 32),  # topics: a null array where none is allowed
        (20, 1, b"\xff" * 32),
        (3, 12, bytes.fromhex("010000ffffffffffff01")),  # a tag count varint past five bytes
    ],
)
def test_bounds_check_refuses_the_reported_bodies(api_key: int, version: int, body: bytes) -> None:
    from kwire.protocol.bounds import check_request

    with pytest.raises(MalformedRequest):
        check_request(api_key, version, body, 0)


def _error_codes(entity, out: list) -> list:
    import dataclasses

    if dataclasses.is_dataclass(entity):
        for f in dataclasses.fields(entity):
            value = getattr(entity, f.name)
            if f.metadata.get("kafka_type") == "error_code" and "tag" not in f.metadata:
                out.append(value)
            _error_codes(value, out)
    elif isinstance(entity, tuple):
        for item in entity:
            _error_codes(item, out)
    return out


@pytest.mark.parametrize(("api_key", "version"), SERVED)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(data=st.data())
def test_error_response_for_every_served_api(api_key: int, version: int, data: st.DataObject) -> None:
    """Kafka's getErrorResponse shape: every error code is the error, the response
    writes and reads back, and a response without a top-level error code holds
    one entry per topic (or group, resource) the request named."""
    import dataclasses

    from kio.serial import entity_reader

    from kwire.protocol.error_response import error_response

    request = data.draw(st.from_type(request_class(api_key, version)))
    cls = response_class(api_key, version)
    response = error_response(cls, request)
    raw = encode(response)
    assert entity_reader(cls)(raw, 0)[0] == response
    codes = _error_codes(response, [])
    assert set(codes) <= {ErrorCode.unknown_server_error}
    top = [f for f in dataclasses.fields(cls) if f.metadata.get("kafka_type") == "error_code" and "tag" not in f.metadata]
    if top:
        assert response.error_code == ErrorCode.unknown_server_error
        return
    # The first list of the request is mirrored into the response's list of results.
    requested = next(
        (getattr(request, f.name) for f in dataclasses.fields(request) if isinstance(getattr(request, f.name), tuple)),
        None,
    )
    results = [getattr(response, f.name) for f in dataclasses.fields(cls) if isinstance(getattr(response, f.name), tuple)]
    if requested is not None:
        assert len(requested) in {len(r) for r in results}


@pytest.mark.parametrize(("api_key", "version"), SERVED)
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(data=st.data())
def test_a_failing_handler_answers_with_the_error_response(api_key: int, version: int, data: st.DataObject) -> None:
    """In-process dispatch with no broker behind the context: every handler that
    needs one fails, and the request is answered (not the connection closed)
    with UNKNOWN_SERVER_ERROR where the response has an error code."""
    from kio.serial import entity_reader

    request = data.draw(st.from_type(request_class(api_key, version)))
    assume(_encodable(request))
    if api_key == 0 and request.acks == 0:
        request = dataclass_replace(request, acks=1)
    raw = request_header_bytes(api_key, version, 5, "probe", is_flexible(api_key, version)) + encode(request)
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("kwire.handlers").addHandler(handler)
    try:
        answer = _dispatch(bytearray(raw))
    finally:
        logging.getLogger("kwire.handlers").removeHandler(handler)
    assert answer is not None
    frame_bytes = answer if isinstance(answer, bytes) else b"".join(p for p in answer if isinstance(p, bytes))
    size, correlation_id = struct.unpack_from(">ii", frame_bytes)
    assert correlation_id == 5 and size == len(frame_bytes) - 4
    offset = 8 + (1 if is_flexible(api_key, version) and api_key != 18 else 0)
    response, _ = entity_reader(response_class(api_key, version))(frame_bytes, offset)
    # One ERROR line, without a traceback, when the handler failed; a handler
    # that refused the request before it needed the broker answered normally.
    assert len(records) <= 1 and all(r.exc_info is None for r in records)
    if records:
        assert f"API {api_key} v{version} failed" in records[0].getMessage()
        assert set(_error_codes(response, [])) <= {ErrorCode.unknown_server_error}


def test_a_failing_produce_with_acks_0_closes_the_connection() -> None:
    """No answer is owed, so Kafka closes the connection to report the failure."""
    from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData

    request = ProduceRequest(
        transactional_id=None, acks=0, timeout=datetime.timedelta(seconds=1),
        topic_data=(TopicProduceData(name="t", partition_data=(PartitionProduceData(index=0, records=None),)),),
    )
    raw = request_header_bytes(0, 9, 5, "probe", True) + encode(request)
    with pytest.raises(CloseConnection):
        _dispatch(bytearray(raw))


def _encodable(request) -> bool:
    try:
        encode(request)
    except (ValueError, OverflowError):
        return False
    return True


def dataclass_replace(entity, **changes):
    import dataclasses

    return dataclasses.replace(entity, **changes)


@pytest.mark.parametrize("version", range(3, 12))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_hand_read_produce_request_is_as_safe_as_the_bounds_check(version: int, data: st.DataObject, seed: int) -> None:
    """Mutated Produce bodies: the hand reader fails only as MalformedRequest, and
    reads what kio reads whenever the bounds check passes the body."""
    import random

    from kwire.protocol.bounds import check_request
    from kwire.protocol.produce_request import read_produce_request

    request = data.draw(st.from_type(request_class(0, version)))
    for mutated in _mutations(encode(request), random.Random(seed)):
        try:
            ours = read_produce_request(bytearray(mutated), 0, version)
        except MalformedRequest:
            ours = None
        try:
            check_request(0, version, mutated, 0)
            theirs = decode_request(0, version, mutated, 0)
        except MalformedRequest:
            continue
        except Exception:
            continue  # kio's stricter refusals (UTF-8)
        assert ours is not None
        assert [(t.name, [(p.index, None if p.records is None else bytes(p.records)) for p in t.partition_data]) for t in ours.topic_data] == [
            (t.name, [(p.index, p.records) for p in t.partition_data]) for t in theirs.topic_data
        ]
