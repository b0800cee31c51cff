"""ApiVersions (key 18): the versions of every API this broker serves."""

from __future__ import annotations

import datetime
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.handlers import RequestContext
from kwire.protocol.apis import API_TABLE, api
from kwire.protocol.messages import make, response_module

NO_THROTTLE = datetime.timedelta(0)


def _api_keys(module: Any) -> tuple[Any, ...]:
    return tuple(
        make(module.ApiVersion, api_key=a.key, min_version=a.min_version, max_version=a.max_version)
        for a in sorted(API_TABLE.values(), key=lambda a: a.key)
    )


def unsupported_version_response() -> Any:
    """The v0 answer to an ApiVersions request of a version we do not speak."""
    module = response_module(18, 0)
    return module.ApiVersionsResponse(
        error_code=ErrorCode.unsupported_version, api_keys=_api_keys(module)
    )


@api(18)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(18, ctx.api_version)
    return make(
        module.ApiVersionsResponse,
        error_code=ErrorCode.none,
        api_keys=_api_keys(module),
        throttle_time=NO_THROTTLE,
    )
