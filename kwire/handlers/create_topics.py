"""CreateTopics (key 19): names, counts, replica assignments and configs checked as
Kafka's controller checks them, with its error codes and messages.

On one broker a topic has one replica, on this broker: a replication factor above
1, or a manual assignment naming another broker, is refused. From v5 the answer
carries the topic's id, counts and every effective config (as DescribeConfigs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from kio.schema.errors import ErrorCode

from kwire.broker import Broker, KafkaError, check_partitions_per_request, check_replication_factor
from kwire.config import ConfigError, validate_topic_configs
from kwire.handlers import RequestContext
from kwire.handlers.api_versions import NO_THROTTLE
from kwire.handlers.controller_mutations import THROTTLING_QUOTA_EXCEEDED_MESSAGE, mutation_refused
from kwire.handlers.describe_configs import topic_config_entries
from kwire.protocol.apis import api
from kwire.protocol.messages import make, response_module
from kwire.security.acl import AclOperation, ResourceType
from kwire.security.authorizer import authorize_cluster, authorized_names

# A topic Kafka keeps for itself; CreateTopics may not make it.
CLUSTER_METADATA_TOPIC = "__cluster_metadata"


def check_manual_assignment(
    broker: Broker, broker_ids: Sequence[int], replication_factor: int | None
) -> None:
    """Kafka's validateManualPartitionAssignment against the registered brokers."""
    if not broker_ids:
        raise KafkaError(
            ErrorCode.invalid_replica_assignment,
            "The manual partition assignment includes an empty replica list.",
        )
    previous = None
    registered = broker.metadata_image.brokers
    for broker_id in sorted(broker_ids):
        if broker_id not in registered:
            raise KafkaError(
                ErrorCode.invalid_replica_assignment,
                f"The manual partition assignment includes broker {broker_id}, but no such broker is registered.",
            )
        if broker_id == previous:
            raise KafkaError(
                ErrorCode.invalid_replica_assignment,
                f"The manual partition assignment includes the broker {broker_id} more than once.",
            )
        previous = broker_id
    if replication_factor is not None and len(broker_ids) != replication_factor:
        raise KafkaError(
            ErrorCode.invalid_replica_assignment,
            f"The manual partition assignment includes a partition with {len(broker_ids)} replica(s), "
            f"but this is not consistent with previous partitions, which have {replication_factor} replica(s).",
        )


def _check_name(broker: Broker, name: str) -> None:
    if name == CLUSTER_METADATA_TOPIC:
        raise KafkaError(
            ErrorCode.invalid_request, f"Creation of internal topic {name} is prohibited."
        )
    broker.check_new_topic_name(name)


def _counts(broker: Broker, topic: Any) -> tuple[int, int]:
    """(partitions, replication factor) the topic would get, checked."""
    if topic.assignments:
        if topic.replication_factor != -1:
            raise KafkaError(
                ErrorCode.invalid_request,
                "A manual partition assignment was specified, but replication factor was not set to -1.",
            )
        if topic.num_partitions != -1:
            raise KafkaError(
                ErrorCode.invalid_request,
                "A manual partition assignment was specified, but numPartitions was not set to -1.",
            )
        indexes: set[int] = set()
        replication_factor: int | None = None
        for assignment in topic.assignments:
            if assignment.partition_index in indexes:
                raise KafkaError(
                    ErrorCode.invalid_replica_assignment,
                    f"Found multiple manual partition assignments for partition {assignment.partition_index}",
                )
            check_manual_assignment(broker, assignment.broker_ids, replication_factor)
            replication_factor = len(assignment.broker_ids)
            indexes.add(assignment.partition_index)
        if indexes != set(range(len(indexes))):
            raise KafkaError(
                ErrorCode.invalid_replica_assignment,
                "partitions should be a consecutive 0-based integer sequence",
            )
        return len(indexes), replication_factor or 1
    if topic.replication_factor < -1 or topic.replication_factor == 0:
        raise KafkaError(
            ErrorCode.invalid_replication_factor,
            "Replication factor must be larger than 0, or -1 to use the default value.",
        )
    if topic.num_partitions < -1 or topic.num_partitions == 0:
        raise KafkaError(
            ErrorCode.invalid_partitions,
            "Number of partitions was set to an invalid non-positive value.",
        )
    num_partitions = (
        broker.config["num.partitions"] if topic.num_partitions == -1 else topic.num_partitions
    )
    replication_factor = (
        broker.config["default.replication.factor"]
        if topic.replication_factor == -1
        else topic.replication_factor
    )
    if not broker.in_cluster:
        check_replication_factor(replication_factor)
    return num_partitions, replication_factor


async def _create(
    ctx: RequestContext, module: Any, topic: Any, validate_only: bool, timeout_ms: int, describe_configs: bool = True
) -> Any:
    broker = ctx.broker
    _check_name(broker, topic.name)
    configs = {config.name: config.value for config in topic.configs}
    null_configs = [name for name, value in configs.items() if value is None]
    if null_configs:
        raise KafkaError(
            ErrorCode.invalid_config,
            f"Null value not supported for topic configs: {','.join(null_configs)}",
        )
    try:
        parsed = validate_topic_configs(configs)
    except ConfigError as e:
        raise KafkaError(ErrorCode.invalid_config, str(e)) from None
    num_partitions, replication_factor = _counts(broker, topic)
    if broker.cluster is not None:
        # Kafka's AdminZkClient: the assignment (given, or spread over the live
        # brokers) and configs go to ZooKeeper; the controller elects the leaders.
        if topic.assignments:
            assignment = {a.partition_index: tuple(a.broker_ids) for a in topic.assignments}
        else:
            assignment = broker.cluster.assign(num_partitions, replication_factor)
        created = None
        if not validate_only:
            await broker.cluster.create_topic(
                topic.name, assignment, {k: v for k, v in configs.items() if v is not None},
                wait_seconds=max(timeout_ms, 0) / 1000,
            )
            created = broker.metadata_image.topic(topic.name)
    else:
        # The partitions' folders and files are made in a worker thread.
        created = await broker.create_topic_async(
            topic.name, num_partitions, replication_factor, configs, validate_only=validate_only
        )
    # v5+ answers with the topic's configs, to whom may describe them.
    configs_class = getattr(module, "CreatableTopicConfigs", None)
    if not describe_configs:
        return make(
            module.CreatableTopicResult,
            name=topic.name,
            topic_id=created.topic_id if created is not None else None,
            error_code=ErrorCode.none,
            error_message=None,
            topic_config_error_code=ErrorCode.topic_authorization_failed,
            num_partitions=-1,
            replication_factor=-1,
            configs=(),
        )
    config_entries = tuple(
        make(
            configs_class,
            name=entry.name,
            value=entry.value,
            read_only=entry.read_only,
            config_source=entry.source,
            is_sensitive=entry.is_sensitive,
        )
        for entry in (topic_config_entries(broker.config, parsed) if configs_class else ())
    )
    return make(
        module.CreatableTopicResult,
        name=topic.name,
        # A validate-only request creates no topic, so names no id.
        topic_id=created.topic_id if created is not None else None,
        error_code=ErrorCode.none,
        error_message=None,
        num_partitions=num_partitions,
        replication_factor=replication_factor,
        configs=config_entries,
    )


def _requested_partitions(broker: Broker, topic: Any) -> int:
    """Partitions a topic of the request asks for (before its own checks)."""
    if topic.assignments:
        return len(topic.assignments)
    return broker.config["num.partitions"] if topic.num_partitions == -1 else max(topic.num_partitions, 0)


def _error(module: Any, name: str, error: ErrorCode, message: str | None) -> Any:
    return make(
        module.CreatableTopicResult,
        name=name,
        topic_id=None,
        error_code=error,
        error_message=message,
        num_partitions=-1,
        replication_factor=-1,
        configs=(),
    )


@api(19)
async def handle(ctx: RequestContext, request: Any) -> Any:
    module = response_module(19, ctx.api_version)
    counts = Counter(topic.name for topic in request.topics)
    answered: set[str] = set()
    results = []
    try:
        check_partitions_per_request(sum(_requested_partitions(ctx.broker, t) for t in request.topics))
    except KafkaError as e:
        topics = tuple(_error(module, name, e.error_code, e.message) for name in counts)
        return make(module.CreateTopicsResponse, throttle_time=NO_THROTTLE, topics=topics)
    # CREATE on the cluster, else on each topic; DESCRIBE_CONFIGS to see their configs.
    creatable = (
        None if authorize_cluster(ctx, AclOperation.CREATE) else authorized_names(ctx, AclOperation.CREATE, ResourceType.TOPIC, counts)
    )
    describable = authorized_names(ctx, AclOperation.DESCRIBE_CONFIGS, ResourceType.TOPIC, counts)
    for topic in request.topics:
        if topic.name in answered:
            continue
        answered.add(topic.name)
        if counts[topic.name] > 1:
            results.append(
                _error(module, topic.name, ErrorCode.invalid_request, "Duplicate topic name.")
            )
            continue
        if creatable is not None and topic.name not in creatable:
            results.append(_error(module, topic.name, ErrorCode.topic_authorization_failed, "Authorization failed."))
            continue
        if not request.validate_only and mutation_refused(ctx, _requested_partitions(ctx.broker, topic)):
            results.append(_error(module, topic.name, ErrorCode.throttling_quota_exceeded, THROTTLING_QUOTA_EXCEEDED_MESSAGE))
            continue
        try:
            results.append(await _create(ctx, module, topic, request.validate_only, request.timeout.total_seconds() * 1000
                                         if hasattr(request.timeout, "total_seconds") else request.timeout,
                                         topic.name in describable))
        except KafkaError as e:
            results.append(_error(module, topic.name, e.error_code, e.message))
    return make(module.CreateTopicsResponse, throttle_time=NO_THROTTLE, topics=tuple(results))
