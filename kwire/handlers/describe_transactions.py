"""DescribeTransactions (key 65, v0) and ListTransactions (key 66, v0-1): the
transaction coordinator's transactional ids, for admin clients."""

from __future__ import annotations

import datetime
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.broker import now_ms
from kwire.coordinator.transaction_coordinator import transaction_coordinator
from kwire.coordinator.transactions import STATE_BY_NAME, TxnState
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


@api(65)
async def describe(ctx: RequestContext, request: Any) -> Any:
    module = response_module(65, ctx.api_version)
    coordinator = transaction_coordinator(ctx.broker)
    states = []
    for transactional_id in request.transactional_ids:
        if not authorize(ctx, AclOperation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, transactional_id):
            error, meta = ErrorCode.transactional_id_authorization_failed, None
        elif coordinator is None:
            error, meta = ErrorCode.coordinator_not_available, None
        else:
            error, meta = coordinator.describe(transactional_id)
        by_topic: dict[str, list[int]] = {}
        for topic, index in sorted(meta.partitions if meta else ()):
            by_topic.setdefault(topic, []).append(index)
        states.append(
            make(
                module.TransactionState,
                error_code=error,
                transactional_id=transactional_id,
                transaction_state=meta.state.display if meta else "",
                transaction_timeout=datetime.timedelta(milliseconds=meta.timeout_ms if meta else 0),
                transaction_start_time=EPOCH + datetime.timedelta(milliseconds=meta.start_ms if meta else -1),
                producer_id=meta.producer_id if meta else -1,
                producer_epoch=meta.producer_epoch if meta else -1,
                topics=tuple(make(module.TopicData, topic=t, partitions=tuple(ps)) for t, ps in by_topic.items()),
            )
        )
    return make(module.DescribeTransactionsResponse, throttle_time=NO_THROTTLE, transaction_states=tuple(states))


@api(66)
async def list_transactions(ctx: RequestContext, request: Any) -> Any:
    module = response_module(66, ctx.api_version)
    coordinator = transaction_coordinator(ctx.broker)
    if coordinator is None or not coordinator.active:
        return make(module.ListTransactionsResponse, throttle_time=NO_THROTTLE, error_code=ErrorCode.coordinator_not_available,
                    unknown_state_filters=(), transaction_states=())
    wanted_states: set[TxnState] = set()
    unknown = []
    for name in request.state_filters:
        state = STATE_BY_NAME.get(name.lower())
        if state is None:
            unknown.append(name)
        else:
            wanted_states.add(state)
    producer_ids = set(request.producer_id_filters)
    duration = getattr(request, "duration_filter", -1)
    now = now_ms()
    listed = [
        make(module.TransactionState, transactional_id=m.transactional_id, producer_id=m.producer_id,
             transaction_state=m.state.display)
        for m in coordinator.txns.values()
        if (not request.state_filters or m.state in wanted_states)
        and (not producer_ids or m.producer_id in producer_ids)
        and (duration < 0 or (m.state is TxnState.ONGOING and now - m.start_ms >= duration))
        # Only the transactional ids one may describe.
        and authorize(ctx, AclOperation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, m.transactional_id)
    ]
    return make(
        module.ListTransactionsResponse,
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.coordinator_load_in_progress if coordinator.loading else ErrorCode.none,
        unknown_state_filters=tuple(unknown),
        transaction_states=tuple(listed),
    )
