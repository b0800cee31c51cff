"""Kafka's record batch compressions, on cramjam.

Codec ids are those of the batch attributes' low three bits. Each codec writes
what the Java client writes, since every Kafka client reads that:

- gzip: a plain gzip stream (any number of members is read back).
- snappy: snappy-java's "xerial" stream: magic ``\\x82SNAPPY\\x00``, version and
  compatible version (int32 big-endian, both 1), then chunks of int32 length +
  raw snappy block, 32 KiB of input per chunk. librdkafka and Java also read a
  bare raw snappy block (what some non-Java clients write), so `decompress` does
  too. cramjam's own ``snappy.compress`` is the *framing format* (``sNaPpY``),
  which no Kafka client reads: it is never used here.
- lz4: an LZ4 frame the way Kafka's Lz4BlockOutputStream writes it (FLG 0x60:
  version 1, independent blocks, no checksums, no content size; BD 0x40: 64 KiB
  blocks). Java's Lz4BlockInputStream rejects block-linked frames, which is
  cramjam's default, and frames with a dictionary id, so the frame is built here
  from raw blocks. Reading accepts any standard frame (librdkafka sets checksums).
- zstd: a standard zstd frame.

Errors: `UnsupportedCompression` for an unknown codec id, `CorruptCompressedData`
for input a codec cannot read, `OutputBufferFull` when `decompress_into` runs out of
room; all are `CompressionError`s (a ValueError).

`decompress_into` writes into a caller's buffer and stops when it is full, so the
memory a batch may take while it decompresses is bounded by the caller, whatever
its compression ratio (a compressed "bomb" of a few KiB can expand to gigabytes).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import cramjam

__all__ = [
    "NONE",
    "GZIP",
    "SNAPPY",
    "LZ4",
    "ZSTD",
    "CODEC_NAMES",
    "CompressionError",
    "UnsupportedCompression",
    "CorruptCompressedData",
    "OutputBufferFull",
    "compress",
    "decompress",
    "decompress_into",
    "codec_for_name",
]

NONE = 0
GZIP = 1
SNAPPY = 2
LZ4 = 3
ZSTD = 4

CODEC_NAMES: dict[int, str] = {
    NONE: "none",
    GZIP: "gzip",
    SNAPPY: "snappy",
    LZ4: "lz4",
    ZSTD: "zstd",
}

Buffer = bytes | bytearray | memoryview


class CompressionError(ValueError):
    """Base of the codec errors."""


class UnsupportedCompression(CompressionError):
    """A codec id outside 0..4."""

    def __init__(self, codec: int) -> None:
        super().__init__(f"unsupported compression codec id {codec}")
        self.codec = codec


class CorruptCompressedData(CompressionError):
    """Input the codec cannot decompress (wraps the codec library's error)."""


class OutputBufferFull(CompressionError):
    """`decompress_into` filled its output buffer before the end of the data."""


def codec_for_name(name: str) -> int:
    """Codec id of a `compression.type` name ('none', 'gzip', 'snappy', 'lz4', 'zstd')."""
    for codec, codec_name in CODEC_NAMES.items():
        if codec_name == name.lower():
            return codec
    raise CompressionError(f"unknown compression type {name!r}")


def compress(codec: int, data: Buffer, level: int | None = None) -> bytes:
    """Compress `data` as a Kafka client would for batch attribute codec `codec`.

    `level` is the codec's own level (Kafka's compression.<codec>.level); None
    picks the library default. Snappy has no level and ignores it.
    """
    try:
        if codec == NONE:
            return bytes(data)
        if codec == GZIP:
            return bytes(cramjam.gzip.compress(data, level=level))
        if codec == SNAPPY:
            return _xerial_compress(data)
        if codec == LZ4:
            return _lz4_frame_compress(data, level)
        if codec == ZSTD:
            return bytes(cramjam.zstd.compress(data, level=level))
    except cramjam.CompressionError as exc:
        raise CompressionError(f"{CODEC_NAMES[codec]}: {exc}") from exc
    raise UnsupportedCompression(codec)


def decompress(codec: int, data: Buffer) -> bytes:
    """Decompress what a Kafka client compressed with codec `codec`."""
    if codec == NONE:
        return bytes(data)
    if codec not in CODEC_NAMES:
        raise UnsupportedCompression(codec)
    try:
        if codec == GZIP:
            return bytes(cramjam.gzip.decompress(data))
        if codec == SNAPPY:
            return _snappy_decompress(data)
        if codec == LZ4:
            return bytes(cramjam.lz4.decompress(data))
        return bytes(cramjam.zstd.decompress(data))
    except cramjam.DecompressionError as exc:
        raise CorruptCompressedData(f"{CODEC_NAMES[codec]}: {exc}") from exc


# cramjam's message when a stream decompressed into a buffer fills it (Rust's
# io::ErrorKind::WriteZero): the output stopped there, the rest was not read.
_WRITE_ZERO = "failed to write whole buffer"
_STREAM_MODULES = {GZIP: cramjam.gzip, LZ4: cramjam.lz4, ZSTD: cramjam.zstd}


def decompress_into(codec: int, data: Buffer, out: bytearray | memoryview) -> int:
    """Decompress into `out`; returns the number of bytes written at its start.

    Raises OutputBufferFull as soon as the result would not fit: no more than
    len(out) bytes are ever produced. Codec NONE is not accepted (nothing to do).
    """
    if codec not in CODEC_NAMES or codec == NONE:
        raise UnsupportedCompression(codec)
    try:
        if codec == SNAPPY:
            return _snappy_decompress_into(data, out)
        written = _STREAM_MODULES[codec].decompress_into(data, out)
    except cramjam.DecompressionError as exc:
        if _WRITE_ZERO in str(exc):
            raise OutputBufferFull(f"{CODEC_NAMES[codec]}: more than {len(out)} bytes") from None
        raise CorruptCompressedData(f"{CODEC_NAMES[codec]}: {exc}") from exc
    return written


# --- snappy, xerial stream -------------------------------------------------

XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
# snappy-java's SnappyOutputStream default block size, which Kafka keeps.
_XERIAL_BLOCK = 32 * 1024
_I32 = struct.Struct(">i")


def _xerial_compress(data: Buffer) -> bytes:
    view = memoryview(data).cast("B")
    out = bytearray(_XERIAL_HEADER)
    for start in range(0, len(view), _XERIAL_BLOCK):
        block = cramjam.snappy.compress_raw(view[start : start + _XERIAL_BLOCK])
        out += _I32.pack(len(block))
        out += block
    return bytes(out)


def _xerial_blocks(view: memoryview) -> Iterator[memoryview]:
    """The raw snappy blocks of a xerial stream (after its magic)."""
    if len(view) < len(_XERIAL_HEADER):
        raise CorruptCompressedData("snappy: truncated xerial header")
    position = len(_XERIAL_HEADER)
    total = len(view)
    while position < total:
        # snappy-java reads concatenated streams: a header may start any chunk.
        if bytes(view[position : position + 8]) == XERIAL_MAGIC:
            position += len(_XERIAL_HEADER)
            continue
        if total - position < 4:
            raise CorruptCompressedData("snappy: truncated xerial chunk length")
        (size,) = _I32.unpack_from(view, position)
        position += 4
        if size < 0 or size > total - position:
            raise CorruptCompressedData(f"snappy: xerial chunk of {size} bytes runs past the data")
        yield view[position : position + size]
        position += size


def _snappy_decompress(data: Buffer) -> bytes:
    view = memoryview(data).cast("B")
    if bytes(view[:8]) != XERIAL_MAGIC:
        return bytes(cramjam.snappy.decompress_raw(view))
    out = bytearray()
    for block in _xerial_blocks(view):
        out += cramjam.snappy.decompress_raw(block)
    return bytes(out)


def _snappy_decompress_into(data: Buffer, out: bytearray | memoryview) -> int:
    # Each raw block states its decompressed length first: checked before writing.
    view = memoryview(data).cast("B")
    target = memoryview(out).cast("B")
    if bytes(view[:8]) != XERIAL_MAGIC:
        return _snappy_block_into(view, target, 0)
    written = 0
    for block in _xerial_blocks(view):
        written = _snappy_block_into(block, target, written)
    return written


def _snappy_block_into(block: memoryview, target: memoryview, written: int) -> int:
    size = cramjam.snappy.decompress_raw_len(block)
    if size > len(target) - written:
        raise OutputBufferFull(f"snappy: more than {len(target)} bytes")
    if cramjam.snappy.decompress_raw_into(block, target[written : written + size]) != size:
        raise CorruptCompressedData("snappy: block shorter than its stated length")
    return written + size


# --- lz4 frame, as Kafka's Lz4BlockOutputStream writes it ------------------

_LZ4_MAGIC = b"\x04\x22\x4d\x18"
# FLG 0x60 (version 01, block independence), BD 0x40 (64 KiB max block), then the
# header checksum: second byte of xxhash32(FLG BD), a constant for this descriptor.
_LZ4_HEADER = _LZ4_MAGIC + b"\x60\x40\x82"
_LZ4_BLOCK = 64 * 1024
_LZ4_UNCOMPRESSED_BIT = 0x80000000
_LZ4_END_MARK = b"\x00\x00\x00\x00"
_U32LE = struct.Struct("<I")


def _lz4_frame_compress(data: Buffer, level: int | None) -> bytes:
    view = memoryview(data).cast("B")
    out = bytearray(_LZ4_HEADER)
    if level is None:
        options: dict[str, object] = {}
    else:
        options = {"mode": "high_compression", "compression": level}
    for start in range(0, len(view), _LZ4_BLOCK):
        raw = view[start : start + _LZ4_BLOCK]
        block = cramjam.lz4.compress_block(raw, store_size=False, **options)
        if len(block) >= len(raw):
            # Incompressible: stored as is, flagged by the length's high bit.
            out += _U32LE.pack(len(raw) | _LZ4_UNCOMPRESSED_BIT)
            out += raw
        else:
            out += _U32LE.pack(len(block))
            out += block
    out += _LZ4_END_MARK
    return bytes(out)
