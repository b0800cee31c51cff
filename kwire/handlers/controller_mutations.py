"""controller_mutation_rate (KIP-599) for CreateTopics, CreatePartitions and DeleteTopics:
each topic's partitions count against the client's quota, before the topic is acted on."""

from __future__ import annotations

import trio

from kwire.handlers import RequestContext
from kwire.quotas.manager import QuotaType, strict_mutation

THROTTLING_QUOTA_EXCEEDED_MESSAGE = "The throttling quota has been exceeded."


def mutation_refused(ctx: RequestContext, partitions: int) -> bool:
    """Record this topic's partitions and set the answer's throttle time. True when the
    topic must be refused THROTTLING_QUOTA_EXCEEDED: a strict version (CreateTopics v6+,
    CreatePartitions v3+, DeleteTopics v5+) with the quota already exceeded; older
    versions are only throttled. One lookup when no such quota exists."""
    quotas = ctx.broker.quotas
    if quotas is None or not quotas.enabled(QuotaType.CONTROLLER_MUTATION):
        return False
    strict = strict_mutation(ctx.api_key, ctx.api_version)
    user, client_id, now = ctx.principal.name, ctx.client_id, trio.current_time()
    throttle_ms = quotas.check_mutation(user, client_id, partitions, now, strict=strict)
    refused = strict and throttle_ms > 0
    if strict and not refused:
        # Admitted, perhaps into debt: the answer still says how long until the quota
        # admits more (Kafka's StrictControllerMutationQuota.throttleTime).
        tokens = quotas.measure(QuotaType.CONTROLLER_MUTATION, user, client_id, now)
        limit = quotas.quota(QuotaType.CONTROLLER_MUTATION, user, client_id)
        if tokens < 0 and limit:
            throttle_ms = round(-tokens / limit * 1000)
    ctx.throttle_time_ms = max(ctx.throttle_time_ms, throttle_ms)
    return refused
