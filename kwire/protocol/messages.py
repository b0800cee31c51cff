"""Kafka message bodies through kio: its generated entities and native reader.

Handlers build responses version-agnostically with `make`, which keeps only the
fields the chosen version has, the way Kafka's generated Java code ignores
fields a version lacks.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable
from functools import cache
from types import ModuleType
from typing import Any, TypeVar

from kio.index import load_payload_module
from kio.serial import entity_reader, entity_writer
from kio.static.constants import EntityType

T = TypeVar("T")


@cache
def request_module(api_key: int, version: int) -> ModuleType:
    return load_payload_module(api_key, version, EntityType.request)


@cache
def response_module(api_key: int, version: int) -> ModuleType:
    return load_payload_module(api_key, version, EntityType.response)


def _payload_class(module: ModuleType, entity_type: EntityType) -> type:
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and getattr(value, "__type__", None) is entity_type
            and value.__module__ == module.__name__
        ):
            return value
    raise LookupError(f"no {entity_type.name} entity in {module.__name__}")


@cache
def request_class(api_key: int, version: int) -> type:
    return _payload_class(request_module(api_key, version), EntityType.request)


@cache
def response_class(api_key: int, version: int) -> type:
    return _payload_class(response_module(api_key, version), EntityType.response)


# APIs kio has no classes for, read and written by hand in kwire.protocol: api key ->
# the first flexible version. ControlledShutdown (7): Kafka 4 removed it.
HAND_WRITTEN: dict[int, int] = {7: 3}


@cache
def is_flexible(api_key: int, version: int) -> bool:
    flexible_from = HAND_WRITTEN.get(api_key)
    if flexible_from is not None:
        return version >= flexible_from
    return bool(request_class(api_key, version).__flexible__)


@cache
def request_reader(api_key: int, version: int) -> Any:
    return entity_reader(request_class(api_key, version))


@cache
def _writer(cls: type) -> Any:
    return entity_writer(cls)


@cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def make(cls: type[T], **values: Any) -> T:
    """Build a kio entity from the fields this version has; others are dropped."""
    names = _field_names(cls)
    return cls(**{k: v for k, v in values.items() if k in names})



def warm_up(apis: Iterable[tuple[int, int]]) -> None:
    """Import kio's modules for these (api key, version) pairs ahead of the first
    request: each costs milliseconds of dataclass creation, paid once."""
    for api_key, version in apis:
        if api_key in HAND_WRITTEN:
            continue
        request_reader(api_key, version)
        _writer(response_class(api_key, version))


def decode_request(api_key: int, version: int, frame: bytes, offset: int) -> Any:
    obj, _end = request_reader(api_key, version)(frame, offset)
    return obj


def encode(entity: Any) -> bytes:
    buffer = io.BytesIO()
    _writer(type(entity))(buffer, entity)
    return buffer.getvalue()
