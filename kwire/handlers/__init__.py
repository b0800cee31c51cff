"""Request handlers, one module per Kafka API (franz-go kfake style).

`dispatch` turns one request frame into one response frame: header, version
check, kio decode, the API's handler, kio encode. Each handler module registers
itself in the API table with the versions it really serves.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kwire.log.segment import FileRegion
from kwire.protocol.apis import API_TABLE
from kwire.protocol.fetch_response import EncodedBody
from kwire.protocol.headers import MalformedRequest, parse_request_header, peek_api, response_header
from kwire.protocol.messages import decode_request, encode, is_flexible

if TYPE_CHECKING:
    from kwire.broker import Broker

log = logging.getLogger(__name__)

API_VERSIONS_KEY = 18
_SIZE = struct.Struct(">i")


@dataclass(slots=True)
class RequestContext:
    broker: Broker
    peer: str
    listener_name: str
    api_key: int = -1
    api_version: int = -1
    correlation_id: int = -1
    client_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def dispatch(context: RequestContext, frame: bytearray) -> bytes | list[bytes | FileRegion] | None:
    """Serve one request frame: the response frame, as bytes or as bytes and file
    regions to send in order; None when the request expects no answer (acks=0)."""
    api_key, api_version, correlation_id = peek_api(frame)
    api = API_TABLE.get(api_key)
    if api is None or not api.serves(api_version):
        if api_key == API_VERSIONS_KEY:
            # Kafka answers an ApiVersions it cannot parse in v0, with the ranges,
            # so the client can pick a version both sides know (KIP-511).
            from kwire.handlers.api_versions import unsupported_version_response

            return _frame(correlation_id, False, encode(unsupported_version_response()))
        raise MalformedRequest(
            f"unsupported API key {api_key} version {api_version}"
            if api
            else f"unknown API key {api_key}"
        )
    flexible = is_flexible(api_key, api_version)
    header = parse_request_header(frame, flexible)
    try:
        if api.decode is not None:
            request = api.decode(frame, header.body_offset, api_version)
        else:
            # kio reads only read-only buffers; a view costs no copy.
            request = decode_request(api_key, api_version, memoryview(frame).toreadonly(), header.body_offset)
    except MalformedRequest:
        raise
    except Exception as e:
        raise MalformedRequest(f"cannot parse API {api_key} v{api_version}: {e!r}") from None
    context.api_key = api_key
    context.api_version = api_version
    context.correlation_id = correlation_id
    context.client_id = header.client_id
    response = await api.handle(context, request)
    if response is None:
        return None
    if isinstance(response, EncodedBody):
        header = response_header(correlation_id, flexible)
        head = _SIZE.pack(len(header) + response.size) + header
        parts = response.parts
        if len(parts) == 1 and isinstance(parts[0], bytes):
            return head + parts[0]  # one send, not two
        return [head, *parts]
    # ApiVersions responses keep header v0 in every version, so that a client
    # can read it before it knows which versions the broker speaks.
    return _frame(correlation_id, flexible and api_key != API_VERSIONS_KEY, encode(response))


def _frame(correlation_id: int, flexible: bool, body: bytes) -> bytes:
    header = response_header(correlation_id, flexible)
    return _SIZE.pack(len(header) + len(body)) + header + body



def _register_all() -> None:
    # Importing a handler module registers it in API_TABLE.
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_register_all()
