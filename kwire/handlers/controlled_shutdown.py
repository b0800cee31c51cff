"""ControlledShutdown (key 7): a broker about to stop asks the controller to move
its partitions' leadership away first (Kafka's KafkaApis.handleControlledShutdownRequest,
ZooKeeper mode).

Served by the active controller only (others answer NOT_CONTROLLER, and so does a
broker outside a cluster); the work is kwire.cluster.controlled_shutdown's. Read and
written by hand (kwire/protocol/controlled_shutdown.py): kio has no classes for this
API. A failure answers UNKNOWN_SERVER_ERROR here, since the dispatcher's generic error
answer is built from kio's classes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kio.schema.errors import ErrorCode

from kwire.cluster.controlled_shutdown import shut_down_broker
from kwire.cluster.zk import ZkTimeout, ZookeeperError
from kwire.errors import KafkaError
from kwire.handlers import RequestContext
from kwire.protocol.apis import api
from kwire.protocol.controlled_shutdown import (
    API_KEY,
    ControlledShutdownRequest,
    ControlledShutdownResponse,
    RemainingPartition,
    encode_controlled_shutdown_response,
    read_controlled_shutdown_request,
)
from kwire.protocol.fetch_response import EncodedBody
from kwire.security.acl import AclOperation
from kwire.security.authorizer import authorize_cluster

log = logging.getLogger(__name__)


def _answer(version: int, error_code: ErrorCode, remaining: Sequence[tuple[str, int]] = ()) -> EncodedBody:
    body = encode_controlled_shutdown_response(
        ControlledShutdownResponse(int(error_code), tuple(RemainingPartition(t, i) for t, i in remaining)), version
    )
    return EncodedBody([body], len(body))


@api(API_KEY, decode=read_controlled_shutdown_request)
async def handle(ctx: RequestContext, request: ControlledShutdownRequest) -> EncodedBody:
    version = ctx.api_version
    node = ctx.broker.cluster
    if not authorize_cluster(ctx, AclOperation.CLUSTER_ACTION):
        return _answer(version, ErrorCode.cluster_authorization_failed)
    if node is None or not node.controller.active:
        return _answer(version, ErrorCode.not_controller)
    try:
        remaining = await shut_down_broker(node, request.broker_id, request.broker_epoch)
    except KafkaError as e:
        log.info("controlled shutdown of broker %d refused: %s", request.broker_id, e)
        return _answer(version, e.error_code)
    except (ZkTimeout, ZookeeperError) as e:
        log.warning("controlled shutdown of broker %d failed: ZooKeeper unavailable: %r", request.broker_id, e)
        return _answer(version, ErrorCode.unknown_server_error)
    except Exception as e:
        log.error("API %d v%d failed: %r", API_KEY, version, e)
        log.debug("API %d v%d failed", API_KEY, version, exc_info=e)
        return _answer(version, ErrorCode.unknown_server_error)
    return _answer(version, ErrorCode.none, remaining)
