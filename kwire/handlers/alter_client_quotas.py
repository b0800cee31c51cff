"""AlterClientQuotas (key 49): set or remove quotas of user and client-id entities.

Kafka's validation (ClientQuotaControlManager): an entity is user, client-id or both,
a null name is the default entity, an empty name is refused; keys are the four quota
keys, a value must be > 0, the byte rates are whole numbers; an entity named twice in
one request or a key named twice for one entity is refused. The entries that pass are
written in one change of the entity config store (on one broker a file, in a cluster
ZooKeeper), unless validate_only. Values are stored as Kafka stores them in
ZooKeeper: the byte rates as integers, the others as doubles. Needs ALTER_CONFIGS on
the cluster.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.entity_configs import DEFAULT_ENTITY, entity_path
from kwire.errors import KafkaError
from kwire.handlers import RequestContext
from kwire.handlers.describe_client_quotas import (
    CLIENT_ID,
    ENTITY_TYPES,
    IP,
    IP_NOT_SUPPORTED,
    USER,
    throttle_of,
)
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.quotas import QUOTA_KEYS, QuotaType
from kwire.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from kwire.security.authorizer import authorize

log = logging.getLogger(__name__)

# Kafka's QuotaConfig types: the byte rates are LONG, the others DOUBLE.
LONG_KEYS = frozenset({QuotaType.PRODUCE.value, QuotaType.FETCH.value})
LONG_MAX = 2**63 - 1


def describe_entity(entity: Any) -> str:
    """The entity as Kafka's ClientQuotaEntity.toString shows it, for messages."""
    parts = ", ".join(f"{e.entity_type}={e.entity_name}" for e in entity)
    return f"ClientQuotaEntity(entries={{{parts}}})"


def entity_key(entity: Any) -> tuple[tuple[str, bool, str], ...]:
    """What makes two request entities the same entity (order does not matter)."""
    return tuple(sorted((e.entity_type, e.entity_name is None, e.entity_name or "") for e in entity))


def parse_entity(entity: Any) -> str:
    """The entity path of a request's entity; KafkaError(INVALID_REQUEST) if invalid."""
    if not entity:
        raise KafkaError(ErrorCode.invalid_request, "Invalid empty client quota entity")
    names: dict[str, str | None] = {}
    for part in entity:
        entity_type, name = part.entity_type, part.entity_name
        if entity_type in names:
            raise KafkaError(
                ErrorCode.invalid_request,
                f"Invalid client quota entity, duplicate entity entry {entity_type}",
            )
        if entity_type not in ENTITY_TYPES:
            raise KafkaError(
                ErrorCode.invalid_request, f"Unhandled client quota entity type: {entity_type}"
            )
        if name is not None and not name:
            raise KafkaError(ErrorCode.invalid_request, f"Empty {entity_type} not supported")
        names[entity_type] = name
    if IP in names:
        raise KafkaError(ErrorCode.invalid_request, IP_NOT_SUPPORTED)
    for entity_type, name in names.items():
        # Entity paths keep names as they are: a "/" would split the path and a
        # literal "<default>" would be the default entity.
        if name is not None and ("/" in name or name == DEFAULT_ENTITY):
            raise KafkaError(
                ErrorCode.invalid_request,
                f"{entity_type} name {name!r} is not supported: it may not contain '/' "
                f"or be {DEFAULT_ENTITY}",
            )

    def part(entity_type: str) -> str | None:
        if entity_type not in names:
            return None
        name = names[entity_type]
        return DEFAULT_ENTITY if name is None else name

    return entity_path(part(USER), part(CLIENT_ID))


def parse_ops(ops: Any, entity: Any) -> dict[str, str | None]:
    """The changes of one entity's configs: key -> new value, None to remove."""
    changes: dict[str, str | None] = {}
    for op in ops:
        key = op.key
        if key in changes:
            raise KafkaError(
                ErrorCode.invalid_request,
                f"Duplicate quota key {key} not updating quota for this entity "
                f"{describe_entity(entity)}",
            )
        # Removal too is limited to quota keys: users/<user> also holds SCRAM credentials.
        if key not in QUOTA_KEYS:
            raise KafkaError(ErrorCode.invalid_request, f"Invalid configuration key {key}")
        if op.remove:
            changes[key] = None
            continue
        value = float(op.value)
        if math.isnan(value) or value <= 0.0:
            raise KafkaError(ErrorCode.invalid_request, f"Quota {key} must be greater than 0")
        if math.isinf(value):
            raise KafkaError(ErrorCode.invalid_request, f"Quota {key} must be a finite number")
        if key in LONG_KEYS:
            if value > LONG_MAX:
                raise KafkaError(
                    ErrorCode.invalid_request, f"Proposed value for {key} is too large for a LONG."
                )
            if abs(value % 1.0) > 1e-6:
                raise KafkaError(ErrorCode.invalid_request, f"{key} cannot be a fractional value.")
            changes[key] = str(int(value))
        else:
            changes[key] = repr(value)
    return changes


@api(49)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(49, ctx.api_version)
    entries = list(request.entries)
    errors: list[tuple[ErrorCode, str | None]] = [(ErrorCode.none, None)] * len(entries)
    if not authorize(ctx, AclOperation.ALTER_CONFIGS, ResourceType.CLUSTER, CLUSTER_NAME):
        errors = [(ErrorCode.cluster_authorization_failed, "Cluster authorization failed.")] * len(
            entries
        )
    else:
        counts: dict[Any, int] = {}
        for entry in entries:
            key = entity_key(entry.entity)
            counts[key] = counts.get(key, 0) + 1
        changes: dict[str, dict[str, str | None]] = {}
        changed: list[int] = []
        for i, entry in enumerate(entries):
            try:
                if counts[entity_key(entry.entity)] > 1:
                    raise KafkaError(
                        ErrorCode.invalid_request,
                        f"Ignoring duplicate entity {describe_entity(entry.entity)}",
                    )
                path = parse_entity(entry.entity)
                ops = parse_ops(entry.ops, entry.entity)
            except KafkaError as e:
                errors[i] = (e.error_code, e.message)
                continue
            if ops:
                changes[path] = ops
                changed.append(i)
        if changes and not request.validate_only:
            try:
                await ctx.broker.entity_configs.alter(changes)
            except Exception as e:
                log.error("altering client quotas failed: %r", e)
                for i in changed:
                    errors[i] = (ErrorCode.unknown_server_error, str(e))
    return make(
        module.AlterClientQuotasResponse,
        throttle_time=throttle_of(ctx),
        entries=tuple(
            make(
                module.EntryData,
                error_code=error,
                error_message=message,
                entity=tuple(
                    make(module.EntityData, entity_type=e.entity_type, entity_name=e.entity_name)
                    for e in entry.entity
                ),
            )
            for entry, (error, message) in zip(entries, errors, strict=True)
        ),
    )
