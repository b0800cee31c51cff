"""Bounds check of a request body before kio's native reader sees it.

kio's reader trusts declared counts: an array that claims 2^32-2 entries makes
it allocate 32 GiB, and the process aborts. Kafka's own readers refuse any
count larger than the bytes left. Here a checker per (api key, version) walks
the body without building anything: every string, bytes, array and tagged-field
length is checked against the bytes left (an array of N elements needs at least
N x its element's minimum size), null is refused where the field is not
nullable, and varints longer than five bytes are refused, as Kafka's
`ByteUtils.readUnsignedVarint` does. A failure is `MalformedRequest`.

The checker is Python source generated from kio's entity classes (their
dataclass fields carry Kafka's types, nullability, the flexible flag and tags)
and compiled once per entity class. It follows kio's reading rules where they
are stricter than Kafka's (a tagged field is never null; an unknown tag is
refused), so a body it accepts is one kio reads in full.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from functools import cache
from typing import Any

from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveField,
    classify_field,
    get_field_tag,
    get_schema_field_type,
    is_optional,
)

from kwire.protocol.headers import MalformedRequest

# (buffer, position, end) -> position after the entity.
Checker = Callable[[Any, int, int], int]

FIXED_SIZES: dict[str, int] = {
    "bool": 1,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "error_code": 2,
    "int32": 4,
    "uint32": 4,
    "timedelta_i32": 4,
    "int64": 8,
    "uint64": 8,
    "float64": 8,
    "timedelta_i64": 8,
    "datetime_i64": 8,
    "uuid": 16,
}
_VARIABLE = ("string", "bytes", "records")
_MAX_UVARINT = 0xFFFFFFFF  # lengths and counts are unsigned 32-bit varints

_I16 = struct.Struct(">h").unpack_from
_I32 = struct.Struct(">i").unpack_from


def read_uvarint(buf: Any, pos: int, end: int, path: str) -> tuple[int, int]:
    """An unsigned 32-bit varint within [pos, end): at most five bytes."""
    value = 0
    shift = 0
    while True:
        if pos >= end:
            raise MalformedRequest(f"{path}: varint runs past the request")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value > _MAX_UVARINT:
                raise MalformedRequest(f"{path}: varint {value} exceeds 32 bits")
            return value, pos
        shift += 7
        if shift >= 35:
            raise MalformedRequest(f"{path}: varint longer than five bytes")


def _short(path: str, need: int, left: int) -> MalformedRequest:
    return MalformedRequest(f"{path}: needs {need} bytes, {left} left")


def _null(path: str) -> MalformedRequest:
    return MalformedRequest(f"{path}: null where the field is not nullable")


def _negative(path: str, n: int) -> MalformedRequest:
    return MalformedRequest(f"{path}: invalid length {n}")


def _too_many(path: str, n: int, size: int, left: int) -> MalformedRequest:
    return MalformedRequest(f"{path}: {n} entries of at least {size} bytes, {left} bytes left")


_GLOBALS: dict[str, Any] = {
    "_I16": _I16,
    "_I32": _I32,
    "_uvarint": read_uvarint,
    "_short": _short,
    "_null": _null,
    "_negative": _negative,
    "_too_many": _too_many,
}


class _Source:
    """Lines of one generated function, with fixed-size runs folded into one check."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.pending = 0  # fixed bytes skipped but not yet checked
        self.pending_path = ""
        self.counter = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def emit(self, indent: int, line: str) -> None:
        self.flush(indent)
        self.lines.append("    " * indent + line)

    def skip(self, n: int, path: str) -> None:
        if not self.pending:
            self.pending_path = path
        self.pending += n

    def flush(self, indent: int) -> None:
        if self.pending:
            n, self.pending = self.pending, 0
            path = self.pending_path
            pad = "    " * indent
            self.lines.append(f"{pad}pos += {n}")
            self.lines.append(f"{pad}if pos > end: raise _short({path!r}, {n}, end - pos + {n})")


def _length(src: _Source, indent: int, var: str, flexible: bool, legacy_width: int, path: str) -> None:
    """Read a length or count into `var`: -1 for null, checked below -1."""
    if flexible:
        src.emit(indent, f"if pos >= end: raise _short({path!r}, 1, 0)")
        src.emit(indent, f"{var} = buf[pos]")
        src.emit(indent, f"if {var} < 128: pos += 1")
        src.emit(indent, f"else: {var}, pos = _uvarint(buf, pos, end, {path!r})")
        src.emit(indent, f"{var} -= 1")
    else:
        reader = "_I16" if legacy_width == 2 else "_I32"
        src.emit(indent, f"if pos + {legacy_width} > end: raise _short({path!r}, {legacy_width}, end - pos)")
        src.emit(indent, f"{var} = {reader}(buf, pos)[0]")
        src.emit(indent, f"pos += {legacy_width}")
        src.emit(indent, f"if {var} < -1: raise _negative({path!r}, {var})")


def _variable(src: _Source, indent: int, kafka_type: str, flexible: bool, nullable: bool, path: str) -> None:
    """A string, bytes or records field."""
    n = src.name("n")
    _length(src, indent, n, flexible, 2 if kafka_type == "string" else 4, path)
    src.emit(indent, f"if {n} < 0:")
    if nullable:
        src.emit(indent + 1, "pass")
    else:
        src.emit(indent + 1, f"raise _null({path!r})")
    src.emit(indent, "else:")
    src.emit(indent + 1, f"pos += {n}")
    src.emit(indent + 1, f"if pos > end: raise _short({path!r}, {n}, end - pos + {n})")


def _min_length_size(flexible: bool, legacy_width: int) -> int:
    return 1 if flexible else legacy_width


def _field_min_size(field: dataclasses.Field[Any], flexible: bool) -> int:
    if get_field_tag(field) is not None:
        return 0
    shape = classify_field(field)
    if isinstance(shape, PrimitiveField):
        kafka_type = get_schema_field_type(field)
        if kafka_type in FIXED_SIZES:
            return FIXED_SIZES[kafka_type]
        return _min_length_size(flexible, 2 if kafka_type == "string" else 4)
    if isinstance(shape, EntityField):
        return (1 if is_optional(field) else 0) + min_size(shape.type_)
    return _min_length_size(flexible, 4)  # arrays


@cache
def min_size(cls: type) -> int:
    """The fewest bytes an entity of this class takes on the wire."""
    size = sum(_field_min_size(f, cls.__flexible__) for f in dataclasses.fields(cls))
    return size + (1 if cls.__flexible__ else 0)  # the tagged-field count


def _element_min_size(field: dataclasses.Field[Any], flexible: bool) -> int:
    shape = classify_field(field)
    if isinstance(shape, EntityTupleField):
        size = min_size(shape.type_)
    else:
        kafka_type = get_schema_field_type(field)
        size = FIXED_SIZES.get(kafka_type) or _min_length_size(flexible, 2 if kafka_type == "string" else 4)
    # As Kafka: a count is never trusted beyond the bytes left, whatever the element.
    return max(size, 1)


def _field(src: _Source, indent: int, field: dataclasses.Field[Any], flexible: bool, path: str, tagged: bool) -> None:
    """Statements that move `pos` past one field, or raise."""
    shape = classify_field(field)
    # kio reads a tagged field as never null (its default is written by leaving it out).
    nullable = False if tagged else is_optional(field)
    if isinstance(shape, PrimitiveField):
        kafka_type = get_schema_field_type(field)
        if kafka_type in FIXED_SIZES:
            src.skip(FIXED_SIZES[kafka_type], path)
        elif kafka_type in _VARIABLE:
            _variable(src, indent, kafka_type, flexible, nullable, path)
        else:
            raise NotImplementedError(f"{path}: Kafka type {kafka_type}")
        return
    if isinstance(shape, EntityField):
        if nullable:
            # KIP-893: a nullable struct is preceded by an int8, -1 for null.
            src.emit(indent, f"if pos >= end: raise _short({path!r}, 1, 0)")
            src.emit(indent, "if buf[pos] == 255: pos += 1")
            src.emit(indent, "else:")
            src.emit(indent + 1, f"pos = {entity_checker_name(shape.type_)}(buf, pos + 1, end)")
        else:
            src.emit(indent, f"pos = {entity_checker_name(shape.type_)}(buf, pos, end)")
        return
    # An array: entities or primitives.
    count = src.name("count")
    _length(src, indent, count, flexible, 4, path)
    src.emit(indent, f"if {count} < 0:")
    src.emit(indent + 1, "pass" if nullable else f"raise _null({path!r})")
    element = _element_min_size(field, flexible)
    src.emit(indent, f"elif {count} * {element} > end - pos:")
    src.emit(indent + 1, f"raise _too_many({path!r}, {count}, {element}, end - pos)")
    if isinstance(shape, EntityTupleField):
        src.emit(indent, "else:")
        src.emit(indent + 1, f"for _ in range({count}):")
        src.emit(indent + 2, f"pos = {entity_checker_name(shape.type_)}(buf, pos, end)")
        return
    kafka_type = get_schema_field_type(field)
    if kafka_type in FIXED_SIZES:
        # The count check above already covers the whole array.
        src.emit(indent, "else:")
        src.emit(indent + 1, f"pos += {count} * {FIXED_SIZES[kafka_type]}")
        return
    src.emit(indent, "else:")
    src.emit(indent + 1, f"for _ in range({count}):")
    _variable(src, indent + 2, kafka_type, flexible, False, path + "[]")


def entity_checker_name(cls: type) -> str:
    name = f"_check_{cls.__module__.replace('.', '_')}_{cls.__qualname__}"
    if name not in _GLOBALS:
        _GLOBALS[name] = None  # placeholder: recursion ends here
        _GLOBALS[name] = _compile_entity(cls, name)
    return name


def _compile_entity(cls: type, name: str) -> Checker:
    flexible = bool(cls.__flexible__)
    src = _Source()
    tagged: list[tuple[int, dataclasses.Field[Any]]] = []
    for field in dataclasses.fields(cls):
        tag = get_field_tag(field)
        if tag is not None:
            tagged.append((int(tag), field))
            continue
        _field(src, 1, field, flexible, f"{cls.__name__}.{field.name}", tagged=False)
    if flexible:
        path = f"{cls.__name__} tagged fields"
        src.emit(1, f"if pos >= end: raise _short({path!r}, 1, 0)")
        src.emit(1, "tags = buf[pos]")
        src.emit(1, "if tags < 128: pos += 1")
        src.emit(1, f"else: tags, pos = _uvarint(buf, pos, end, {path!r})")
        src.emit(1, "if tags:")
        # A tag and a size take at least one byte each.
        src.emit(2, f"if tags * 2 > end - pos: raise _too_many({path!r}, tags, 2, end - pos)")
        src.emit(2, "for _ in range(tags):")
        src.emit(3, f"tag, pos = _uvarint(buf, pos, end, {path!r})")
        src.emit(3, f"size, pos = _uvarint(buf, pos, end, {path!r})")
        src.emit(3, "stop = pos + size")
        src.emit(3, f"if stop > end: raise _short({path!r}, size, end - pos)")
        keyword = "if"
        for tag, field in sorted(tagged, key=lambda t: t[0]):
            src.emit(3, f"{keyword} tag == {tag}:")
            keyword = "elif"
            # The field is read within its declared size, and must fill it:
            # kio reads on from where the field ends, not from the size.
            src.emit(4, "outer_end, end = end, stop")
            _field(src, 4, field, flexible, f"{cls.__name__}.{field.name} (tag {tag})", tagged=True)
            src.flush(4)
            src.emit(4, "end = outer_end")
            src.emit(4, f"if pos != stop: raise _negative({path + ' size'!r}, size)")
        src.emit(3, f"{'else' if tagged else 'if True'}:")
        # kio refuses tags it does not know; so does this check.
        src.emit(4, f"raise MalformedRequest(f'{cls.__name__}: unknown tagged field {{tag}}')")
    src.flush(1)
    body = "\n".join(src.lines) or "    pass"
    code = f"def {name}(buf, pos, end):\n{body}\n    return pos\n"
    namespace: dict[str, Any] = {}
    exec(compile(code, f"<bounds {cls.__module__}.{cls.__qualname__}>", "exec"), _GLOBALS, namespace)
    fn = namespace[name]
    fn.__source__ = code  # for reading a failure back
    return fn


_GLOBALS["MalformedRequest"] = MalformedRequest


@cache
def checker_for(cls: type) -> Checker:
    """The compiled bounds check of one kio entity class."""
    return _GLOBALS[entity_checker_name(cls)]


@cache
def request_checker(api_key: int, version: int) -> Checker:
    """The bounds check of one API version's request body, compiled once."""
    from kwire.protocol.messages import request_class

    return checker_for(request_class(api_key, version))


def check_request(api_key: int, version: int, buf: Any, offset: int) -> int:
    """Walk the request body at `offset` to the end of `buf`; raise
    MalformedRequest unless kio can read it within those bytes. Returns where
    the body ends (bytes after it are ignored, as kio and Kafka do)."""
    return request_checker(api_key, version)(buf, offset, len(buf))
