"""DescribeCluster (key 60): this broker, the cluster id, and the controller.

Answered from the broker's metadata image: one broker is the whole cluster and its
own controller. Only the broker endpoint type is served (v1 asks which one is wanted),
as a Kafka broker does.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kwire.cluster.metadata_image import MetadataImage
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.authorizer import AUTHORIZED_OPERATIONS_OMITTED, cluster_authorized_operations

# EndpointType ids.
BROKER_ENDPOINT = 1
CONTROLLER_ENDPOINT = 2


def _endpoint_error(version: int, endpoint_type: int) -> tuple[ErrorCode, str] | None:
    if endpoint_type == BROKER_ENDPOINT:
        return None
    if endpoint_type == CONTROLLER_ENDPOINT:
        return (
            ErrorCode.invalid_request if version == 0 else ErrorCode.mismatched_endpoint_type,
            "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER",
        )
    return (
        ErrorCode.invalid_request if version == 0 else ErrorCode.unsupported_endpoint_type,
        f"Unsupported endpoint type {endpoint_type}",
    )


def _brokers(image: MetadataImage, listener_name: str, module: Any) -> tuple[Any, ...]:
    """Every registered broker, as the listener the client came in on advertises it."""
    entries = []
    for registration in image.brokers.values():
        endpoint = registration.endpoint(listener_name)
        entries.append(
            make(
                module.DescribeClusterBroker,
                broker_id=registration.broker_id,
                host=endpoint.host,
                port=endpoint.port,
                rack=registration.rack,
            )
        )
    return tuple(entries)


@api(60)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(60, ctx.api_version)
    error = _endpoint_error(ctx.api_version, getattr(request, "endpoint_type", BROKER_ENDPOINT))
    if error is not None:
        return make(
            module.DescribeClusterResponse,
            throttle_time=NO_THROTTLE,
            error_code=error[0],
            error_message=error[1],
            endpoint_type=BROKER_ENDPOINT,
            cluster_id="",
            controller_id=-1,
            brokers=(),
            cluster_authorized_operations=AUTHORIZED_OPERATIONS_OMITTED,
        )
    image = ctx.broker.metadata_image
    return make(
        module.DescribeClusterResponse,
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        error_message=None,
        endpoint_type=BROKER_ENDPOINT,
        cluster_id=image.cluster_id,
        controller_id=image.controller_id,
        brokers=_brokers(image, ctx.listener_name, module),
        cluster_authorized_operations=cluster_authorized_operations(ctx)
        if request.include_cluster_authorized_operations
        else AUTHORIZED_OPERATIONS_OMITTED,
    )
