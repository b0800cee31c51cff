"""AlterConfigs (key 33): replace a topic's config overrides, as Kafka does.

The listed configs become the topic's overrides and every other override is
removed (set semantics). The new configs reach the partition logs and persist
with the topic metadata. On a BROKER resource (this broker's id, or "" for the
cluster-wide defaults) the listed configs become its dynamic broker configs, with
the same set semantics (kwire.dynamic_config): keys Kafka cannot change at run time
are refused with its INVALID_REQUEST "Cannot update these configs dynamically".
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.broker import Broker, KafkaError, topic_name_error
from kwire.config import ConfigError, validate_topic_configs
from kwire.dynamic_config import (
    DynamicConfigError,
    entity_of,
    is_sensitive,
    tls_store_listener,
    validate,
)
from kwire.entity_configs import DEFAULT_ENTITY
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.handlers.describe_configs import BROKER, TOPIC, config_resource_refused
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation

log = logging.getLogger(__name__)


def check_resources(resources: Iterable[Any]) -> dict[int, KafkaError]:
    """Errors for resources named more than once (by position), or whose keys repeat."""
    resources = list(resources)
    seen = Counter((r.resource_type, r.resource_name) for r in resources)
    errors: dict[int, KafkaError] = {}
    for i, resource in enumerate(resources):
        if seen[(resource.resource_type, resource.resource_name)] > 1:
            errors[i] = KafkaError(
                ErrorCode.invalid_request, "Each resource must appear at most once."
            )
        elif len({c.name for c in resource.configs}) != len(resource.configs):
            errors[i] = KafkaError(ErrorCode.invalid_request, "Error due to duplicate config keys")
    return errors


def refuse_null_values(names: list[str]) -> None:
    if names:
        raise KafkaError(
            ErrorCode.invalid_request, f"Null value not supported for : {', '.join(names)}"
        )


def broker_entity(broker: Broker, name: str) -> str:
    """The dynamic configs a BROKER resource names: this broker's ("0") or the
    cluster-wide defaults ("<default>", for ""); another broker's are refused."""
    if name:
        try:
            node_id = int(name)
        except ValueError:
            raise KafkaError(
                ErrorCode.invalid_request, f"Node id must be an integer, but it is: {name}"
            ) from None
        if node_id != broker.broker_id:
            raise KafkaError(
                ErrorCode.invalid_request,
                f"Unexpected broker id, expected {broker.broker_id}, but received {name}",
            )
    return entity_of(name)


def set_broker_configs(
    broker: Broker, name: str, configs: Mapping[str, str], validate_only: bool
) -> Awaitable[None] | None:
    """Validate a broker resource's complete new dynamic configs, as Kafka's
    DynamicBrokerConfig.validate; the returned awaitable stores them (a file, or
    ZooKeeper), and every broker they concern applies them from there."""
    entity = broker_entity(broker, name)
    try:
        validate(broker.config, configs, per_broker=entity != DEFAULT_ENTITY)
    except DynamicConfigError as e:
        raise KafkaError(ErrorCode.invalid_request, str(e)) from None
    if validate_only:
        return None
    log.info("Updating %s with new configuration: %s", f"broker {name}" if name else "brokers",
             ",".join(f"{k}={'(redacted)' if is_sensitive(k) else v}" for k, v in configs.items()))
    return _store(broker, entity, dict(configs))


async def _store(broker: Broker, entity: str, configs: dict[str, str]) -> None:
    await broker.broker_configs.set(entity, configs)
    # Kafka's reloadUpdatedFilesWithoutConfigChange: naming a listener's stores again,
    # unchanged, reloads them (a certificate renewed in place).
    reload = {key for key in configs if tls_store_listener(key) is not None}
    for reconfigure in list(broker.reconfigurables) if reload else ():
        reconfigure(reload)


def set_topic_overrides(
    broker: Broker, name: str, overrides: Mapping[str, str], validate_only: bool
) -> Awaitable[None] | None:
    """Validate a topic's complete new overrides (strings) and apply them; in a
    cluster, the returned awaitable writes them to ZooKeeper (every broker applies
    them from there)."""
    if not name:
        raise KafkaError(ErrorCode.invalid_request, "Default topic resources are not allowed.")
    message = topic_name_error(name)
    if message is not None:
        raise KafkaError(ErrorCode.invalid_topic_exception, message)
    try:
        parsed = validate_topic_configs(overrides)
    except ConfigError as e:
        raise KafkaError(ErrorCode.invalid_config, str(e)) from None
    if broker.topic_overrides(name) is None:
        raise KafkaError(
            ErrorCode.unknown_topic_or_partition, f"The topic '{name}' does not exist."
        )
    if broker.cluster is not None:
        return None if validate_only else broker.cluster.set_topic_configs(name, dict(overrides))
    broker.set_topic_configs(name, parsed, validate_only=validate_only)
    return None


def unknown_resource_type(resource_type: int) -> KafkaError:
    return KafkaError(ErrorCode.invalid_request, f"Unknown resource type {resource_type}")


def _alter(broker: Broker, resource: Any, validate_only: bool) -> Awaitable[None] | None:
    refuse_null_values([c.name for c in resource.configs if c.value is None])
    configs = {c.name: c.value for c in resource.configs}
    if resource.resource_type == TOPIC:
        return set_topic_overrides(broker, resource.resource_name, configs, validate_only)
    elif resource.resource_type == BROKER:
        return set_broker_configs(broker, resource.resource_name, configs, validate_only)
    else:
        raise unknown_resource_type(resource.resource_type)
    return None


async def alter_resources(
    ctx: RequestContext, request: Any, alter: Callable[[Broker, Any, bool], Awaitable[None] | None]
) -> tuple[Any, ...]:
    """Apply `alter` to each resource; one answer per resource, as both
    AlterConfigs and IncrementalAlterConfigs give them."""
    module = response_module(ctx.api_key, ctx.api_version)
    errors = check_resources(request.resources)
    responses = []
    for i, resource in enumerate(request.resources):
        try:
            if i in errors:
                raise errors[i]
            refused = config_resource_refused(
                ctx, AclOperation.ALTER_CONFIGS, resource.resource_type, resource.resource_name
            )
            if refused is not None:
                raise refused
            pending = alter(ctx.broker, resource, request.validate_only)
            if pending is not None:
                await pending
            error, message = ErrorCode.none, None
        except KafkaError as e:
            error, message = e.error_code, e.message
        responses.append(
            make(
                module.AlterConfigsResourceResponse,
                error_code=error,
                error_message=message,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name,
            )
        )
    return tuple(responses)


@api(33)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(33, ctx.api_version)
    responses = await alter_resources(ctx, request, _alter)
    return make(module.AlterConfigsResponse, throttle_time=NO_THROTTLE, responses=responses)
