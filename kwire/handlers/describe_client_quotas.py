"""DescribeClientQuotas (key 48): the quotas of user and client-id entities.

Kafka's filter (ClientQuotasImage.describe): each component names an entity type and
matches an exact name (EXACT), the default entity (DEFAULT), or any entity of that
type (SPECIFIED); with `strict` an entity must have no other types than the filter's.
Only quota keys are shown: users/<user> also holds SCRAM credentials. Needs
DESCRIBE_CONFIGS on the cluster.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.entity_configs import DEFAULT_ENTITY, parse_entity_path
from kwire.errors import KafkaError
from kwire.handlers import RequestContext
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.quotas import QUOTA_KEYS
from kwire.security.acl import CLUSTER_NAME, AclOperation, ResourceType
from kwire.security.authorizer import authorize

# Kafka's ClientQuotaEntity types.
USER = "user"
CLIENT_ID = "client-id"
IP = "ip"
ENTITY_TYPES = (USER, CLIENT_ID, IP)
IP_NOT_SUPPORTED = "ip quotas are not supported"

MATCH_TYPE_EXACT = 0
MATCH_TYPE_DEFAULT = 1
MATCH_TYPE_SPECIFIED = 2


def throttle_of(ctx: RequestContext) -> datetime.timedelta:
    """The answer's throttle_time_ms, as quota enforcement set it on the context."""
    return datetime.timedelta(milliseconds=ctx.throttle_time_ms)


def entity_of_path(path: str) -> dict[str, str | None]:
    """A stored entity as Kafka's ClientQuotaEntity: type -> name, None for the default."""
    user, client_id = parse_entity_path(path)
    entity: dict[str, str | None] = {}
    if user is not None:
        entity[USER] = None if user == DEFAULT_ENTITY else user
    if client_id is not None:
        entity[CLIENT_ID] = None if client_id == DEFAULT_ENTITY else client_id
    return entity


def quota_values(configs: Mapping[str, str]) -> dict[str, float]:
    """The quota keys of an entity's configs, as numbers (other keys are not quotas)."""
    values = {}
    for key in sorted(QUOTA_KEYS.intersection(configs)):
        try:
            value = float(configs[key])
        except ValueError:
            continue
        if math.isfinite(value):
            values[key] = value
    return values


def parse_filter(components: Any) -> tuple[dict[str, str | None], set[str]]:
    """(exact matches: type -> name or None for the default, types that must be there)."""
    exact: dict[str, str | None] = {}
    specified: set[str] = set()
    for component in components:
        entity_type = component.entity_type
        if not entity_type:
            raise KafkaError(ErrorCode.invalid_request, "Invalid empty entity type.")
        if entity_type in exact or entity_type in specified:
            raise KafkaError(
                ErrorCode.invalid_request,
                f"Entity type {entity_type} cannot appear more than once in the filter.",
            )
        if entity_type not in ENTITY_TYPES:
            raise KafkaError(ErrorCode.unsupported_version, f"Unsupported entity type {entity_type}")
        if component.match_type == MATCH_TYPE_EXACT:
            if component.match is None:
                raise KafkaError(
                    ErrorCode.invalid_request,
                    "Request specified MATCH_TYPE_EXACT, but set match string to null.",
                )
            exact[entity_type] = component.match
        elif component.match_type == MATCH_TYPE_DEFAULT:
            if component.match is not None:
                raise KafkaError(
                    ErrorCode.invalid_request,
                    "Request specified MATCH_TYPE_DEFAULT, but also specified a match string.",
                )
            exact[entity_type] = None
        elif component.match_type == MATCH_TYPE_SPECIFIED:
            if component.match is not None:
                raise KafkaError(
                    ErrorCode.invalid_request,
                    "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string.",
                )
            specified.add(entity_type)
        else:
            raise KafkaError(ErrorCode.invalid_request, f"Unknown match type {component.match_type}")
    if IP in exact or IP in specified:
        raise KafkaError(ErrorCode.invalid_request, IP_NOT_SUPPORTED)
    return exact, specified


def matches(
    entity: Mapping[str, str | None], exact: Mapping[str, str | None], specified: set[str], strict: bool
) -> bool:
    if strict and len(entity) != len(exact) + len(specified):
        return False
    for entity_type, name in exact.items():
        if entity_type not in entity or entity[entity_type] != name:
            return False
    return all(entity_type in entity for entity_type in specified)


def describe(
    items: Any, exact: Mapping[str, str | None], specified: set[str], strict: bool
) -> list[tuple[dict[str, str | None], dict[str, float]]]:
    """The matching entities with their quotas, in entity path order."""
    found = []
    for path, configs in sorted(items, key=lambda item: item[0]):
        values = quota_values(configs)
        if not values:
            continue
        try:
            entity = entity_of_path(path)
        except ValueError:
            continue
        if matches(entity, exact, specified, strict):
            found.append((entity, values))
    return found


@api(48)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(48, ctx.api_version)

    def failed(error: ErrorCode, message: str) -> Any:
        return make(
            module.DescribeClientQuotasResponse,
            throttle_time=throttle_of(ctx),
            error_code=error,
            error_message=message,
            entries=None,
        )

    if not authorize(ctx, AclOperation.DESCRIBE_CONFIGS, ResourceType.CLUSTER, CLUSTER_NAME):
        return failed(
            ErrorCode.cluster_authorization_failed, "Cluster authorization failed."
        )
    try:
        exact, specified = parse_filter(request.components)
    except KafkaError as e:
        return failed(e.error_code, e.message or e.error_code.name)
    entries = tuple(
        make(
            module.EntryData,
            entity=tuple(
                make(module.EntityData, entity_type=t, entity_name=n) for t, n in entity.items()
            ),
            values=tuple(make(module.ValueData, key=k, value=v) for k, v in values.items()),
        )
        for entity, values in describe(
            ctx.broker.entity_configs.items(), exact, specified, request.strict
        )
    )
    return make(
        module.DescribeClientQuotasResponse,
        throttle_time=throttle_of(ctx),
        error_code=ErrorCode.none,
        error_message=None,
        entries=entries,
    )
