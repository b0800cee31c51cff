"""IncrementalAlterConfigs (key 44): SET, DELETE, APPEND, SUBTRACT on topic configs
and on dynamic broker configs.

Each operation changes one override and leaves the others; APPEND and SUBTRACT
work on list configs only (cleanup.policy), starting from the effective value
when the topic has no override. The result is validated as a whole, then
applied to the partition logs and persisted, unless validate_only. On a BROKER
resource (this broker's id, or "" for the cluster-wide defaults) the operations
change its stored dynamic configs, as Kafka's prepareIncrementalConfigs
(kwire.dynamic_config), validated and applied as AlterConfigs does.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.broker import Broker, KafkaError
from kwire.config import TOPIC_CONFIGS, format_config_value
from kwire.dynamic_config import InvalidConfigError, incremental, stored_configs_to_apply
from kwire.entity_configs import DEFAULT_ENTITY
from kwire.handlers import RequestContext
from kwire.handlers.alter_configs import (
    alter_resources,
    broker_entity,
    refuse_null_values,
    set_broker_configs,
    set_topic_overrides,
    unknown_resource_type,
)
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.handlers.describe_configs import BROKER, BROKER_LOGGER, LIST, TOPIC, TOPIC_CONFIG_TYPES
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3
OPERATION_NAMES = {SET: "SET", DELETE: "DELETE", APPEND: "APPEND", SUBTRACT: "SUBTRACT"}


def _parts(value: str | None) -> list[str]:
    return [] if value is None else [part for part in value.split(",") if part]


def apply_operations(broker: Broker, topic_name: str, configs: Any) -> dict[str, str]:
    """The topic's overrides (as strings) after these operations."""
    current = broker.topic_overrides(topic_name)
    overrides = {} if current is None else {k: format_config_value(v) for k, v in current.items()}
    for config in configs:
        name, op, value = config.name, config.config_operation, config.value
        if op == SET:
            overrides[name] = value
        elif op == DELETE:
            overrides.pop(name, None)
        else:
            if TOPIC_CONFIG_TYPES.get(name) != LIST:
                raise KafkaError(
                    ErrorCode.invalid_config,
                    f"Can't {OPERATION_NAMES[op]} to key {name} because its type is not LIST.",
                )
            value_now = overrides.get(name)
            if value_now is None and current is not None and name in TOPIC_CONFIGS:
                value_now = format_config_value(broker.config.topic_default(name))
            items = _parts(value_now)
            for item in value.split(","):
                if op == APPEND and item not in items:
                    items.append(item)
                elif op == SUBTRACT and item in items:
                    items.remove(item)
            overrides[name] = ",".join(items)
    return overrides


def _alter(broker: Broker, resource: Any, validate_only: bool) -> Awaitable[None] | None:
    for config in resource.configs:
        if config.config_operation not in OPERATION_NAMES:
            raise KafkaError(
                ErrorCode.invalid_request, f"Unknown operations type {config.config_operation}"
            )
    refuse_null_values(
        [c.name for c in resource.configs if c.value is None and c.config_operation != DELETE]
    )
    if resource.resource_type == TOPIC:
        overrides = apply_operations(broker, resource.resource_name, resource.configs)
        return set_topic_overrides(broker, resource.resource_name, overrides, validate_only)
    elif resource.resource_type == BROKER:
        entity = broker_entity(broker, resource.resource_name)
        # From the stored configs Kafka would apply (fromPersistentProps).
        current = stored_configs_to_apply(
            broker.broker_configs.get(entity), per_broker=entity != DEFAULT_ENTITY
        )
        operations = [(c.name, c.config_operation, c.value) for c in resource.configs]
        try:
            configs = incremental(current, operations)
        except InvalidConfigError as e:
            raise KafkaError(ErrorCode.invalid_config, str(e)) from None
        return set_broker_configs(broker, resource.resource_name, configs, validate_only)
    elif resource.resource_type == BROKER_LOGGER:
        raise KafkaError(
            ErrorCode.invalid_request, "BROKER_LOGGER resources are not supported by this broker"
        )
    else:
        raise unknown_resource_type(resource.resource_type)
    return None


@api(44)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(44, ctx.api_version)
    responses = await alter_resources(ctx, request, _alter)
    return make(module.IncrementalAlterConfigsResponse, throttle_time=NO_THROTTLE, responses=responses)
