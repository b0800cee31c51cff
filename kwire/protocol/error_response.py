"""An error answer to any request, built from the kio response class.

Kafka answers a request whose handler failed with
`AbstractRequest.getErrorResponse(error)`: the error in the response's
top-level error code where it has one, otherwise in every topic, partition,
group or resource the request named, mirrored from the request. Kafka writes
that by hand per API; here one walk does it from kio's classes: at each level,
an entity with an error code gets the error and stays otherwise empty; one
without mirrors the request's list into its list of entities that carry an
error code, copying the identifying fields (name, partition index, ...).
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections.abc import Sequence
from functools import cache
from typing import Any

from kio.schema.errors import ErrorCode
from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveField,
    PrimitiveTupleField,
    classify_field,
    get_field_tag,
    is_optional,
)
from kio.static.primitive import Records

_ZERO: dict[str, Any] = {
    "bool": False,
    "error_code": ErrorCode.none,
    "uuid": uuid.UUID(int=0),
    "timedelta_i32": datetime.timedelta(0),
    "timedelta_i64": datetime.timedelta(0),
    "datetime_i64": datetime.datetime.fromtimestamp(0, datetime.UTC),
    "string": "",
    "bytes": b"",
    "records": Records(b""),
    "float64": 0.0,
}

# The same identifier under another name in the request.
_ALIASES: dict[str, tuple[str, ...]] = {
    "partition_index": ("partition", "index"),
    "index": ("partition_index", "partition"),
    "partition": ("partition_index", "index"),
    "name": ("topic", "topic_name", "group_id", "key"),
    "topic": ("name", "topic_name"),
    "group_id": ("name",),
    "key": ("name",),
}


def _kafka_type(field: dataclasses.Field[Any]) -> str | None:
    return field.metadata.get("kafka_type")


def _is_error_field(field: dataclasses.Field[Any]) -> bool:
    return _kafka_type(field) == "error_code" and get_field_tag(field) is None


@cache
def _carries_error(cls: type) -> bool:
    """Whether this entity, or any entity below it, has an error code."""
    for field in dataclasses.fields(cls):
        if _is_error_field(field):
            return True
        shape = classify_field(field)
        if isinstance(shape, EntityField | EntityTupleField) and _carries_error(shape.type_):
            return True
    return False


def _has_default(field: dataclasses.Field[Any]) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def _empty(field: dataclasses.Field[Any]) -> Any:
    """The value of a field the error response leaves out."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    shape = classify_field(field)
    if shape.is_array:
        return ()
    if is_optional(field):
        return None
    if isinstance(shape, EntityField):
        return _build(shape.type_, None, ErrorCode.none, False)
    kafka_type = _kafka_type(field) or ""
    return _ZERO.get(kafka_type, 0)


def _sequences(source: Any) -> list[tuple[str, Sequence[Any]]]:
    if source is None or not dataclasses.is_dataclass(source):
        return []
    out = []
    for field in dataclasses.fields(source):
        value = getattr(source, field.name)
        if isinstance(value, tuple | list):
            out.append((field.name, value))
    return out


def _mirror_source(field: dataclasses.Field[Any], source: Any, taken: set[str]) -> Sequence[Any]:
    """The request's list this response list answers: same name, else the
    first list of the request not mirrored yet (topics before forgotten topics)."""
    candidates = [(name, value) for name, value in _sequences(source) if name not in taken]
    for name, value in candidates:
        if name == field.name:
            taken.add(name)
            return value
    if candidates:
        name, value = candidates[0]
        taken.add(name)
        return value
    return ()


def _identifier(field: dataclasses.Field[Any], source: Any, used: set[str]) -> tuple[bool, Any]:
    """(found, value) of a response field copied from the request element."""
    shape = classify_field(field)
    if not isinstance(shape, PrimitiveField):
        return False, None
    kafka_type = _kafka_type(field)
    if dataclasses.is_dataclass(source):
        names = {f.name for f in dataclasses.fields(source)}
        for name in (field.name, *_ALIASES.get(field.name, ())):
            if name in names:
                value = getattr(source, name)
                if value is None and not is_optional(field):
                    return False, None
                if isinstance(value, str | int | uuid.UUID | None) and not isinstance(value, bool):
                    return True, value
        return False, None
    # A request list of plain names or partition indexes: the first field of
    # that kind in the response element takes it.
    wanted = "string" if isinstance(source, str) else "int32" if isinstance(source, int) else None
    if wanted == kafka_type and not used:
        used.add(field.name)
        return True, source
    return False, None


def _build(cls: type, source: Any, error: ErrorCode, top: bool) -> Any:
    values: dict[str, Any] = {}
    fields = dataclasses.fields(cls)
    has_error = any(_is_error_field(f) for f in fields)
    taken: set[str] = set()
    used: set[str] = set()
    for field in fields:
        if get_field_tag(field) is not None:
            continue  # tagged fields keep their defaults
        if _is_error_field(field):
            values[field.name] = error
            continue
        shape = classify_field(field)
        if not has_error and isinstance(shape, EntityTupleField) and _carries_error(shape.type_):
            items = _mirror_source(field, source, taken)
            values[field.name] = tuple(_build(shape.type_, item, error, False) for item in items)
            continue
        if not top and not isinstance(shape, PrimitiveTupleField):
            found, value = _identifier(field, source, used)
            if found:
                values[field.name] = value
                continue
        if not _has_default(field):
            values[field.name] = _empty(field)
    return cls(**values)


def error_response(response_class: type, request: Any, error: ErrorCode = ErrorCode.unknown_server_error) -> Any:
    """The response to `request` that reports `error`, as Kafka's
    getErrorResponse does: top-level error code where the response has one,
    otherwise the error in each topic, partition, group or resource the
    request named."""
    return _build(response_class, request, error, True)
