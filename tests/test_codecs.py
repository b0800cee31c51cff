"""kwire.codecs: round trips, the exact wire forms Kafka clients read, clean errors."""

from __future__ import annotations

import gzip
import os
import struct

import cramjam
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kwire import codecs
from kwire.codecs import (
    GZIP,
    LZ4,
    NONE,
    SNAPPY,
    ZSTD,
    CompressionError,
    CorruptCompressedData,
    OutputBufferFull,
    UnsupportedCompression,
    compress,
    decompress,
    decompress_into,
)

ALL = [NONE, GZIP, SNAPPY, LZ4, ZSTD]
COMPRESSED = [GZIP, SNAPPY, LZ4, ZSTD]

SAMPLES = {
    "empty": b"",
    "one": b"x",
    "text": b"hello kafka " * 20_000,  # 240 KB: several lz4 (64 KiB) / snappy (32 KiB) blocks
    "random": os.urandom(150_000),  # incompressible: lz4 stores blocks raw
    "lz4-block": bytes(range(256)) * 256,  # exactly 64 KiB
    "lz4-block+1": bytes(range(256)) * 256 + b"!",
    "snappy-block": b"s" * 32 * 1024,
}


@pytest.mark.parametrize("codec", ALL)
@pytest.mark.parametrize("name", list(SAMPLES))
def test_round_trip(codec: int, name: str) -> None:
    data = SAMPLES[name]
    assert decompress(codec, compress(codec, data)) == data


@pytest.mark.parametrize(
    ("codec", "level"), [(GZIP, 1), (GZIP, 9), (LZ4, 1), (LZ4, 12), (ZSTD, 1), (ZSTD, 19)]
)
def test_round_trip_levels(codec: int, level: int) -> None:
    data = SAMPLES["text"]
    assert decompress(codec, compress(codec, data, level)) == data


@settings(max_examples=200)
@given(codec=st.sampled_from(ALL), data=st.binary(max_size=4096))
def test_round_trip_property(codec: int, data: bytes) -> None:
    assert decompress(codec, compress(codec, data)) == data


def test_buffer_inputs() -> None:
    data = b"abc" * 1000
    for codec in ALL:
        assert decompress(codec, memoryview(compress(codec, bytearray(data)))) == data


# --- gzip ------------------------------------------------------------------------


def test_gzip_is_a_standard_stream() -> None:
    data = SAMPLES["text"]
    assert gzip.decompress(compress(GZIP, data)) == data
    assert decompress(GZIP, gzip.compress(data)) == data


def test_gzip_reads_every_member() -> None:
    # Java's GZIPInputStream reads concatenated members; so must we.
    assert decompress(GZIP, gzip.compress(b"abc") + gzip.compress(b"def")) == b"abcdef"


# --- snappy ----------------------------------------------------------------------

XERIAL_HEADER = b"\x82SNAPPY\x00" + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x01"


def test_snappy_writes_xerial_framing() -> None:
    data = SAMPLES["text"]
    out = compress(SNAPPY, data)
    assert out.startswith(XERIAL_HEADER)
    # Chunks: int32 big-endian length + raw snappy block of at most 32 KiB of input.
    position, chunks, rebuilt = len(XERIAL_HEADER), 0, b""
    while position < len(out):
        (size,) = struct.unpack_from(">i", out, position)
        block = out[position + 4 : position + 4 + size]
        piece = bytes(cramjam.snappy.decompress_raw(block))
        assert len(piece) <= 32 * 1024
        rebuilt += piece
        position += 4 + size
        chunks += 1
    assert position == len(out)
    assert rebuilt == data
    assert chunks == -(-len(data) // (32 * 1024))


def test_snappy_empty_is_header_only() -> None:
    assert compress(SNAPPY, b"") == XERIAL_HEADER
    assert decompress(SNAPPY, XERIAL_HEADER) == b""


def test_snappy_reads_raw_blocks() -> None:
    # What librdkafka-based and other non-Java clients may send: no framing at all.
    data = SAMPLES["text"]
    assert decompress(SNAPPY, bytes(cramjam.snappy.compress_raw(data))) == data


def test_snappy_hand_built_vectors() -> None:
    # Raw snappy, literal only: varint uncompressed length 5, tag (5-1)<<2 = 0x10, bytes.
    raw = b"\x05\x10hello"
    assert decompress(SNAPPY, raw) == b"hello"
    # The same block in snappy-java's framing, as the Java producer sends it.
    xerial = XERIAL_HEADER + struct.pack(">i", len(raw)) + raw
    assert decompress(SNAPPY, xerial) == b"hello"
    # Concatenated xerial streams (snappy-java reads a header anywhere a chunk starts).
    assert decompress(SNAPPY, xerial + xerial) == b"hellohello"


def test_snappy_never_writes_the_framing_format() -> None:
    # cramjam.snappy.compress writes the "sNaPpY" framing format: no Kafka client reads it.
    assert b"sNaPpY" not in compress(SNAPPY, b"abc" * 100)


@pytest.mark.parametrize(
    "bad",
    [
        XERIAL_HEADER[:12],  # header cut short
        XERIAL_HEADER + b"\x00\x00",  # chunk length cut short
        XERIAL_HEADER + struct.pack(">i", 100) + b"\x05\x10hello",  # chunk past the end
        XERIAL_HEADER + struct.pack(">i", -1),  # negative chunk length
        XERIAL_HEADER + struct.pack(">i", 3) + b"\xff\xff\xff",  # chunk not snappy
    ],
)
def test_snappy_bad_xerial(bad: bytes) -> None:
    with pytest.raises(CorruptCompressedData):
        decompress(SNAPPY, bad)


# --- lz4 -------------------------------------------------------------------------

_P1, _P2, _P3, _P4, _P5 = 2654435761, 2246822519, 3266489917, 668265263, 374761393
_M32 = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def xxh32_short(data: bytes, seed: int = 0) -> int:
    """XXH32 for inputs under 16 bytes (enough for an LZ4 frame descriptor)."""
    assert len(data) < 16
    h = (seed + _P5 + len(data)) & _M32
    i = 0
    while i + 4 <= len(data):
        h = (h + int.from_bytes(data[i : i + 4], "little") * _P3) & _M32
        h = (_rotl(h, 17) * _P4) & _M32
        i += 4
    for byte in data[i:]:
        h = (h + byte * _P5) & _M32
        h = (_rotl(h, 11) * _P1) & _M32
    h ^= h >> 15
    h = (h * _P2) & _M32
    h ^= h >> 13
    h = (h * _P3) & _M32
    h ^= h >> 16
    return h


def test_xxh32_matches_lz4_library_descriptors() -> None:
    # Descriptor checksums the lz4 C library (via cramjam) wrote for three FLG bytes.
    for flg_bd, hc in [(b"\x54\x40", 0xAE), (b"\x70\x40", 0xAD), (b"\x74\x40", 0xBD)]:
        assert (xxh32_short(flg_bd) >> 8) & 0xFF == hc


def java_lz4_read(frame: bytes) -> bytes:
    """Read an LZ4 frame with the rules of Kafka's Lz4BlockInputStream (Java)."""
    assert frame[:4] == b"\x04\x22\x4d\x18", "magic"
    flg, bd = frame[4], frame[5]
    assert flg & 0x03 == 0, "reserved FLG bits (dictionary id) must be 0"
    assert (flg >> 5) & 1 == 1, "Dependent block stream is unsupported"
    assert flg >> 6 == 1, "version must be 1"
    assert bd & 0x8F == 0 and 4 <= (bd >> 4) & 7 <= 7, "BD"
    max_block = 1 << (2 * ((bd >> 4) & 7) + 8)
    position = 6 + (8 if flg & 0x08 else 0)
    assert frame[position] == (xxh32_short(frame[4:position]) >> 8) & 0xFF, "descriptor checksum"
    position += 1
    out = b""
    while True:
        (size,) = struct.unpack_from("<I", frame, position)
        position += 4
        if size == 0:
            position += 4 if flg & 0x04 else 0
            break
        stored = bool(size & 0x80000000)
        size &= 0x7FFFFFFF
        assert size <= max_block, "block larger than the declared maximum"
        block = frame[position : position + size]
        assert len(block) == size, "premature end of stream"
        if stored:
            out += block
        else:
            buffer = bytearray(max_block)
            out += buffer[: cramjam.lz4.decompress_block_into(block, buffer)]
        position += size + (4 if flg & 0x10 else 0)
    assert position == len(frame)
    return out


def test_lz4_frame_header_is_kafkas() -> None:
    # Magic, FLG 0x60 (v1, independent blocks, no checksums, no size), BD 0x40 (64 KiB), HC.
    assert compress(LZ4, b"abc")[:7] == bytes.fromhex("04224d18604082")
    assert (xxh32_short(b"\x60\x40") >> 8) & 0xFF == 0x82
    assert compress(LZ4, b"") == bytes.fromhex("04224d1860408200000000")


@pytest.mark.parametrize("name", list(SAMPLES))
def test_lz4_output_is_readable_by_java_rules(name: str) -> None:
    data = SAMPLES[name]
    assert java_lz4_read(compress(LZ4, data)) == data
    assert java_lz4_read(compress(LZ4, data, 9)) == data


def test_lz4_incompressible_blocks_are_stored() -> None:
    frame = compress(LZ4, SAMPLES["random"])
    (first,) = struct.unpack_from("<I", frame, 7)
    assert first == 0x80000000 | 64 * 1024


def test_lz4_reads_frames_other_clients_write() -> None:
    data = SAMPLES["text"]
    # lz4 library defaults: linked blocks, content checksum (python-lz4, librdkafka-like).
    assert decompress(LZ4, bytes(cramjam.lz4.compress(data))) == data
    c = cramjam.lz4.Compressor(block_linked=False, content_checksum=True)
    c.compress(data)
    assert decompress(LZ4, bytes(c.finish())) == data


def test_lz4_hand_built_frame() -> None:
    # One stored block (length high bit set), then the end mark.
    frame = bytes.fromhex("04224d18604082") + struct.pack("<I", 0x80000005) + b"hello" + b"\0" * 4
    assert decompress(LZ4, frame) == b"hello"
    bad_hc = frame[:6] + b"\x83" + frame[7:]
    with pytest.raises(CorruptCompressedData):
        decompress(LZ4, bad_hc)


# --- zstd ------------------------------------------------------------------------


def test_zstd_reads_streamed_frames_without_content_size() -> None:
    # The Java client's ZstdOutputStream writes no content size in the frame header.
    data = SAMPLES["text"]
    c = cramjam.zstd.Compressor()
    c.compress(data)
    frame = bytes(c.finish())
    assert decompress(ZSTD, frame) == data
    assert decompress(ZSTD, frame + frame) == data + data


def test_zstd_hand_built_frame() -> None:
    # Magic, FHD 0x20 (single segment, 1-byte content size), size 5, one last raw block
    # (header 3 bytes LE: last=1 | type raw=0 | size 5 << 3 = 0x29).
    frame = bytes.fromhex("28b52ffd") + b"\x20\x05" + b"\x29\x00\x00" + b"hello"
    assert decompress(ZSTD, frame) == b"hello"


# --- errors ----------------------------------------------------------------------


@pytest.mark.parametrize("codec", [-1, 5, 6, 7, 8, 100])
def test_unsupported_codec(codec: int) -> None:
    with pytest.raises(UnsupportedCompression) as info:
        compress(codec, b"x")
    assert info.value.codec == codec
    with pytest.raises(UnsupportedCompression):
        decompress(codec, b"x")
    assert issubclass(UnsupportedCompression, CompressionError)


@pytest.mark.parametrize("codec", COMPRESSED)
def test_empty_input_is_corrupt(codec: int) -> None:
    with pytest.raises(CorruptCompressedData):
        decompress(codec, b"")


@pytest.mark.parametrize("codec", COMPRESSED)
def test_truncated_output_is_corrupt(codec: int) -> None:
    out = compress(codec, SAMPLES["text"])
    for cut in (1, 2, 5, 17, len(out) // 2, len(out) - 1):
        with pytest.raises(CorruptCompressedData):
            decompress(codec, out[:cut])


@settings(max_examples=300)
@given(codec=st.sampled_from(COMPRESSED), garbage=st.binary(max_size=300))
def test_garbage_fails_cleanly(codec: int, garbage: bytes) -> None:
    # Random bytes may happen to decode (b"\x00" is raw snappy for b""); if not, the
    # only error allowed is ours.
    assert_both_readers_agree(codec, garbage)


def _read_whole(codec: int, data: bytes) -> bytes | type[CompressionError]:
    try:
        return decompress(codec, data)
    except CorruptCompressedData:
        return CompressionError


def _read_into(codec: int, data: bytes, room: int) -> bytes | type[CompressionError]:
    out = bytearray(room)
    try:
        return bytes(out[: decompress_into(codec, data, out)])
    except OutputBufferFull:
        return OutputBufferFull
    except CorruptCompressedData:
        return CompressionError


def assert_both_readers_agree(codec: int, data: bytes, original: bytes | None = None) -> None:
    """decompress and decompress_into (ample room) give the same bytes or both fail;
    with `original`, a gzip stream (CRC-32 of its content) gives it or fails."""
    whole = _read_whole(codec, data)
    into = _read_into(codec, data, 1 << 20)
    if whole is CompressionError:
        # A snappy block may state a length past the room: refused before reading.
        assert into in (CompressionError, OutputBufferFull)
    else:
        assert into == whole
    if original is not None and codec == GZIP:
        assert whole in (original, CompressionError)


@settings(max_examples=300)
@given(codec=st.sampled_from(COMPRESSED), data=st.data())
def test_flipped_byte_fails_cleanly(codec: int, data: st.DataObject) -> None:
    original = b"some record data " * 50
    out = bytearray(compress(codec, original))
    index = data.draw(st.integers(0, len(out) - 1))
    out[index] ^= data.draw(st.integers(1, 255))
    assert_both_readers_agree(codec, bytes(out), original)


@pytest.mark.parametrize("codec", COMPRESSED)
def test_every_truncation_and_byte_flip_fails_or_agrees(codec: int) -> None:
    original = b"some record data " * 50
    out = compress(codec, original)
    for cut in range(len(out)):
        # A xerial stream cut after its header is a whole stream, of nothing.
        expected = b"" if codec == SNAPPY and cut == len(codecs._XERIAL_HEADER) else CompressionError
        assert _read_whole(codec, out[:cut]) == expected
        assert_both_readers_agree(codec, out[:cut], original)
    for index in range(len(out)):
        for flip in (0x01, 0x80, 0xFF):
            damaged = bytearray(out)
            damaged[index] ^= flip
            assert_both_readers_agree(codec, bytes(damaged), original)


# --- decompress_into: the bound holds while decompressing ----------------------------


@pytest.mark.parametrize("codec", COMPRESSED)
@pytest.mark.parametrize("name", list(SAMPLES))
def test_decompress_into_exact_room(codec: int, name: str) -> None:
    data = SAMPLES[name]
    packed = compress(codec, data)
    assert _read_into(codec, packed, len(data)) == data
    assert _read_into(codec, packed, len(data) + 100) == data
    if data:
        assert _read_into(codec, packed, len(data) - 1) is OutputBufferFull


@pytest.mark.parametrize("codec", COMPRESSED)
def test_decompress_into_stops_a_bomb_at_its_buffer(codec: int) -> None:
    bomb = compress(codec, bytes(64 << 20))
    out = bytearray(1 << 20)
    with pytest.raises(OutputBufferFull):
        decompress_into(codec, bomb, out)


def test_decompress_into_reads_streams_other_writers_make() -> None:
    data = SAMPLES["text"]
    two_members = gzip.compress(data[:1000]) + gzip.compress(data[1000:])
    assert _read_into(GZIP, two_members, len(data)) == data
    assert _read_into(SNAPPY, bytes(cramjam.snappy.compress_raw(data)), len(data)) == data
    assert _read_into(LZ4, bytes(cramjam.lz4.compress(data)), len(data)) == data


@pytest.mark.parametrize("codec", [NONE, 5, 6, 7])
def test_decompress_into_refuses_other_codecs(codec: int) -> None:
    with pytest.raises(UnsupportedCompression):
        decompress_into(codec, b"x", bytearray(10))


def test_codec_for_name() -> None:
    assert [codecs.codec_for_name(n) for n in ("none", "gzip", "snappy", "lz4", "ZSTD")] == ALL
    with pytest.raises(CompressionError):
        codecs.codec_for_name("brotli")
