"""Kafka's ZooKeeper layout: znode paths, their JSON, replica assignment and leader election.

What Kafka 3.x in ZooKeeper mode writes (kafka.zk.ZkData, KafkaZkClient), byte for byte
where Kafka's own key order is fixed, so that a Kafka operator reading znodes with zkCli
sees what Kafka would have written, and so that kwire reads what Kafka wrote. Replica
assignment is Kafka's AdminUtils.assignReplicasToBrokers and leader election its
PartitionLeaderElectionAlgorithms.

Sans-IO: nothing here touches ZooKeeper, a clock or a socket (times are passed in).
Encoders take values and return a znode's bytes; decoders take a znode's bytes and
return values, raising only ZkDataError for anything they cannot read.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kwire.cluster.metadata_image import BrokerRegistration, Endpoint

TopicPartition = tuple[str, int]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class ZkDataError(ValueError):
    """A znode's data is not what Kafka writes there."""


class InvalidReplicationFactor(ValueError):
    """Kafka's InvalidReplicationFactorException."""


class InvalidPartitions(ValueError):
    """Kafka's InvalidPartitionsException."""


class AdminOperationError(ValueError):
    """Kafka's AdminOperationException: e.g. rack information on only some brokers."""


# ---- paths ---------------------------------------------------------------------------

ADMIN_PATH = "/admin"
BROKERS_PATH = "/brokers"
BROKER_IDS_PATH = "/brokers/ids"
TOPICS_PATH = "/brokers/topics"
BROKER_SEQUENCE_ID_PATH = "/brokers/seqid"
CLUSTER_PATH = "/cluster"
CLUSTER_ID_PATH = "/cluster/id"
CONFIG_PATH = "/config"
CONFIG_CHANGES_PATH = "/config/changes"
CONFIG_CHANGE_SEQUENCE_PREFIX = "config_change_"
# Created PERSISTENT_SEQUENTIAL: ZooKeeper appends a 10-digit sequence number.
CONFIG_CHANGE_CREATE_PATH = f"{CONFIG_CHANGES_PATH}/{CONFIG_CHANGE_SEQUENCE_PREFIX}"
CONTROLLER_PATH = "/controller"
CONTROLLER_EPOCH_PATH = "/controller_epoch"
CONSUMERS_PATH = "/consumers"  # the old consumer's; Kafka still creates it
DELETE_TOPICS_PATH = "/admin/delete_topics"
REASSIGN_PARTITIONS_PATH = "/admin/reassign_partitions"
PREFERRED_REPLICA_ELECTION_PATH = "/admin/preferred_replica_election"
ISR_CHANGE_NOTIFICATION_PATH = "/isr_change_notification"
ISR_CHANGE_SEQUENCE_PREFIX = "isr_change_"
ISR_CHANGE_CREATE_PATH = f"{ISR_CHANGE_NOTIFICATION_PATH}/{ISR_CHANGE_SEQUENCE_PREFIX}"
LOG_DIR_EVENT_NOTIFICATION_PATH = "/log_dir_event_notification"
PRODUCER_ID_BLOCK_PATH = "/latest_producer_id_block"
FEATURE_PATH = "/feature"

# ConfigType.ALL: the entity types configurable through ZooKeeper.
CONFIG_TYPE_TOPIC = "topics"
CONFIG_TYPES = ("topics", "clients", "users", "brokers", "ips")

# ZkData.PersistentZkPaths, in Kafka's order: created (with parents) at broker start-up.
PERSISTENT_PATHS: tuple[str, ...] = (
    CONSUMERS_PATH,
    BROKER_IDS_PATH,
    TOPICS_PATH,
    CONFIG_CHANGES_PATH,
    DELETE_TOPICS_PATH,
    BROKER_SEQUENCE_ID_PATH,
    ISR_CHANGE_NOTIFICATION_PATH,
    PRODUCER_ID_BLOCK_PATH,
    LOG_DIR_EVENT_NOTIFICATION_PATH,
) + tuple(f"{CONFIG_PATH}/{t}" for t in CONFIG_TYPES)

# KafkaController's starting values: the first controller writes epoch 1.
INITIAL_CONTROLLER_EPOCH = 0
# ProducerIdManager's block size.
PRODUCER_ID_BLOCK_SIZE = 1000


def broker_path(broker_id: int) -> str:
    return f"{BROKER_IDS_PATH}/{broker_id}"


def topic_path(topic: str) -> str:
    return f"{TOPICS_PATH}/{topic}"


def topic_partitions_path(topic: str) -> str:
    return f"{topic_path(topic)}/partitions"


def partition_path(topic: str, partition: int) -> str:
    return f"{topic_partitions_path(topic)}/{partition}"


def partition_state_path(topic: str, partition: int) -> str:
    return f"{partition_path(topic, partition)}/state"


def config_entity_type_path(entity_type: str) -> str:
    return f"{CONFIG_PATH}/{entity_type}"


def config_entity_path(entity_type: str, entity_name: str) -> str:
    return f"{CONFIG_PATH}/{entity_type}/{entity_name}"


def topic_config_path(topic: str) -> str:
    return config_entity_path(CONFIG_TYPE_TOPIC, topic)


def delete_topic_path(topic: str) -> str:
    """Kafka creates it with no data: its existence is the request."""
    return f"{DELETE_TOPICS_PATH}/{topic}"


def isr_change_notification_path(sequence_number: str = "") -> str:
    """The sequential node's path: with no number, the prefix to create it with."""
    return f"{ISR_CHANGE_CREATE_PATH}{sequence_number}"


def config_change_path(sequence_number: str = "") -> str:
    return f"{CONFIG_CHANGE_CREATE_PATH}{sequence_number}"


def sequence_number(path: str, prefix: str) -> str:
    """The digits ZooKeeper appended to a sequential node's name (Kafka's
    IsrChangeNotificationSequenceZNode.sequenceNumber)."""
    at = path.rfind(prefix)
    if at < 0:
        raise ValueError(f"{path!r} is not a {prefix!r} sequential node")
    return path[at + len(prefix):]


# ---- Kafka's Uuid as a string --------------------------------------------------------

_UUID_STRING = re.compile(r"[A-Za-z0-9_-]{22}(==)?")
ZERO_UUID = uuid.UUID(int=0)
ONE_UUID = uuid.UUID(int=1)  # also METADATA_TOPIC_ID


def uuid_to_kafka(u: uuid.UUID) -> str:
    """Kafka's Uuid.toString: URL-safe base64 of the 16 big-endian bytes, no padding."""
    return base64.urlsafe_b64encode(u.bytes).rstrip(b"=").decode("ascii")


def uuid_from_kafka(s: str) -> uuid.UUID:
    """Kafka's Uuid.fromString; ValueError if it is not 16 bytes of URL-safe base64."""
    if not isinstance(s, str) or _UUID_STRING.fullmatch(s) is None:
        raise ValueError(f"{s!r} is not a base64-encoded Kafka Uuid")
    try:
        raw = base64.urlsafe_b64decode(s[:22] + "==")
    except (binascii.Error, ValueError) as e:  # pragma: no cover - the regex admits only valid text
        raise ValueError(f"{s!r} is not a base64-encoded Kafka Uuid") from e
    if len(raw) != 16:  # pragma: no cover - 22 characters always give 16 bytes
        raise ValueError(f"{s!r} decoded as {len(raw)} bytes, not 16")
    return uuid.UUID(bytes=raw)


def random_kafka_uuid(rng: random.Random | None = None) -> uuid.UUID:
    """Kafka's Uuid.randomUuid: never a reserved id, never one whose string starts with
    '-' (it would read as a command-line option)."""
    while True:
        u = uuid.UUID(int=rng.getrandbits(128), version=4) if rng is not None else uuid.uuid4()
        if u not in (ZERO_UUID, ONE_UUID) and not uuid_to_kafka(u).startswith("-"):
            return u


# ---- JSON: Jackson's compact output, and checked reading -----------------------------


def _dumps(value: Any) -> bytes:
    # Jackson writes no spaces and leaves non-ASCII as UTF-8.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _text(data: bytes, what: str) -> str:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ZkDataError(f"{what}: expected bytes, got {type(data).__name__}")
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise ZkDataError(f"{what}: not UTF-8 text: {_show(data)}") from None


def _loads(data: bytes, what: str) -> Any:
    text = _text(data, what)
    try:
        # NaN and Infinity are Python's extensions, not JSON: Jackson refuses them too.
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise ZkDataError(f"{what}: not JSON ({e}): {_show(data)}") from None


def _show(data: bytes | bytearray | memoryview) -> str:
    raw = bytes(data)
    text = raw[:200].decode("utf-8", "replace")
    return repr(text + ("..." if len(raw) > 200 else ""))


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ZkDataError(f"{what}: expected a JSON object, got {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _require(obj: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in obj:
        raise ZkDataError(f"{what}: {key!r} is missing")
    return obj[key]


def _as_int(value: Any, what: str, lo: int = INT32_MIN, hi: int = INT32_MAX) -> int:
    # Jackson's isInt: a JSON integer in range, not a boolean, float or string.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ZkDataError(f"{what}: expected an integer, got {_json_type(value)}")
    if not lo <= value <= hi:
        raise ZkDataError(f"{what}: {value} is out of range [{lo}, {hi}]")
    return value


def _as_str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ZkDataError(f"{what}: expected a string, got {_json_type(value)}")
    return value


def _as_int_list(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ZkDataError(f"{what}: expected an array of integers, got {_json_type(value)}")
    return tuple(_as_int(v, what) for v in value)


_DECIMAL = re.compile(r"[+-]?[0-9]+")


def _parse_decimal(text: str, what: str, lo: int, hi: int) -> int:
    # Java's parseInt/parseLong: an optional sign and ASCII digits, nothing else
    # (Python's int() would also take spaces and underscores).
    # Longer than any long: refused before int() (which limits digits itself).
    if len(text) > 40 or _DECIMAL.fullmatch(text) is None:
        raise ZkDataError(f"{what}: {text[:50]!r} is not a decimal integer in range")
    value = int(text)
    if not lo <= value <= hi:
        raise ZkDataError(f"{what}: {value} is out of range [{lo}, {hi}]")
    return value


def _version(obj: Mapping[str, Any], what: str) -> int:
    return _as_int(_require(obj, "version", what), f"{what} version")


# ---- /brokers/ids/<id> ---------------------------------------------------------------

BROKER_REGISTRATION_VERSION = 5
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# SocketServerConfigs.DEFAULT_NAME_TO_SECURITY_PROTO: a registration without the map.
_DEFAULT_SECURITY_PROTOCOL_MAP = {p: p for p in SECURITY_PROTOCOLS}
# SocketServerConfigs.URI_PARSE_REGEXP, matched against the whole entry.
# Java's '.' stops at a line break, as Python's does without DOTALL.
_ENDPOINT = re.compile(r"(.*)://\[?([0-9a-zA-Z\-%._:]*)\]?:(-?[0-9]+)")


def endpoint_connection_string(endpoint: Endpoint) -> str:
    """Kafka's EndPoint.connectionString: LISTENER://host:port, an IPv6 host in brackets
    and an empty host (the wildcard address) as nothing."""
    host = endpoint.host
    if not host:
        return f"{endpoint.listener_name}://:{endpoint.port}"
    if ":" in host:
        return f"{endpoint.listener_name}://[{host}]:{endpoint.port}"
    return f"{endpoint.listener_name}://{host}:{endpoint.port}"


def encode_broker_registration(
    registration: BrokerRegistration,
    *,
    timestamp_ms: int,
    jmx_port: int = -1,
    features: Mapping[str, Mapping[str, int]] | None = None,
) -> bytes:
    """BrokerIdZNode.encode, version 5. The top-level host and port are the first
    PLAINTEXT endpoint's, for old clients, or null and -1 when there is none."""
    endpoints = list(registration.endpoints.values())
    plaintext = next((e for e in endpoints if e.security_protocol == "PLAINTEXT"), None)
    # The key order zkCli shows for a Kafka 3.x broker.
    body: dict[str, Any] = {
        "features": {name: dict(versions) for name, versions in (features or {}).items()},
        "listener_security_protocol_map": {e.listener_name: e.security_protocol for e in endpoints},
        "endpoints": [endpoint_connection_string(e) for e in endpoints],
    }
    if registration.rack is not None:
        body["rack"] = registration.rack
    body["jmx_port"] = jmx_port
    body["port"] = plaintext.port if plaintext is not None else -1
    body["host"] = (plaintext.host or None) if plaintext is not None else None
    body["version"] = BROKER_REGISTRATION_VERSION
    body["timestamp"] = str(timestamp_ms)
    return _dumps(body)


def decode_broker_registration(broker_id: int, data: bytes) -> BrokerRegistration:
    """BrokerIdZNode.decode, versions 1 to 5 (and later ones, read as 5)."""
    what = f"broker {broker_id} registration"
    info = _object(_loads(data, what), what)
    version = _version(info, what)
    _as_int(_require(info, "jmx_port", what), f"{what} jmx_port")
    if version < 1:
        raise ZkDataError(f"Unsupported version of broker registration: {_show(data)}")
    endpoints: dict[str, Endpoint] = {}
    if version == 1:
        host = _as_str(_require(info, "host", what), f"{what} host")
        port = _as_int(_require(info, "port", what), f"{what} port", 0, 65535)
        endpoints["PLAINTEXT"] = Endpoint("PLAINTEXT", host, port, "PLAINTEXT")
    else:
        protocols = _security_protocol_map(info, what)
        listed = _require(info, "endpoints", what)
        if not isinstance(listed, list):
            raise ZkDataError(f"{what} endpoints: expected an array, got {_json_type(listed)}")
        for entry in listed:
            endpoint = _parse_endpoint(_as_str(entry, f"{what} endpoint"), protocols, what)
            if endpoint.listener_name in endpoints:
                raise ZkDataError(f"{what}: listener {endpoint.listener_name} is listed twice")
            endpoints[endpoint.listener_name] = endpoint
        if not endpoints:
            raise ZkDataError(f"{what}: no endpoints")
    rack = info.get("rack")
    if rack is not None:
        rack = _as_str(rack, f"{what} rack")
    _check_features(info.get("features"), what)
    return BrokerRegistration(broker_id=broker_id, endpoints=MappingProxyType(endpoints), rack=rack)


def _security_protocol_map(info: Mapping[str, Any], what: str) -> dict[str, str]:
    raw = info.get("listener_security_protocol_map")
    if raw is None:
        return _DEFAULT_SECURITY_PROTOCOL_MAP
    result = {}
    for name, protocol in _object(raw, f"{what} listener_security_protocol_map").items():
        # SecurityProtocol.forName: case-insensitive, one of four.
        protocol = _as_str(protocol, f"{what} security protocol of {name}").upper()
        if protocol not in SECURITY_PROTOCOLS:
            raise ZkDataError(f"{what}: unknown security protocol {protocol!r} for listener {name}")
        result[name] = protocol
    return result


def _parse_endpoint(entry: str, protocols: Mapping[str, str], what: str) -> Endpoint:
    match = _ENDPOINT.fullmatch(entry)
    if match is None or "," in entry:
        raise ZkDataError(f"{what}: unable to parse {entry[:100]!r} to a broker endpoint")
    listener_name = match.group(1).upper()  # ListenerName.normalised
    port = _parse_decimal(match.group(3), f"{what} port of {listener_name}", 0, 65535)
    protocol = protocols.get(listener_name)
    if protocol is None:
        raise ZkDataError(f"{what}: no security protocol defined for listener {listener_name}")
    return Endpoint(listener_name=listener_name, host=match.group(2), port=port, security_protocol=protocol)


def _check_features(raw: Any, what: str) -> None:
    # {"feature": {"min_version": 1, "max_version": 3}}: read by Kafka, not kept by kwire.
    if raw is None:
        return
    for name, versions in _object(raw, f"{what} features").items():
        for label, level in _object(versions, f"{what} feature {name}").items():
            _as_int(level, f"{what} feature {name} {label}", -(2**15), 2**15 - 1)


# ---- /brokers/topics/<topic> ---------------------------------------------------------

TOPIC_ASSIGNMENT_VERSION = 3


@dataclass(frozen=True, slots=True)
class TopicAssignment:
    """A topic's id and replica assignment (Kafka's TopicIdReplicaAssignment). Topics
    created before Kafka 2.8 have no id until a controller adds one: None then."""

    topic_id: uuid.UUID | None
    # Partition -> replicas, the first being the preferred leader.
    partitions: Mapping[int, tuple[int, ...]]
    # During a reassignment: the replicas being added and removed, per partition that
    # has any.
    adding_replicas: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    removing_replicas: Mapping[int, tuple[int, ...]] = field(default_factory=dict)


def _partition_key(key: str, what: str) -> int:
    return _parse_decimal(key, f"{what} partition", 0, INT32_MAX)


def encode_topic_assignment(assignment: TopicAssignment) -> bytes:
    """TopicZNode.encode, version 3; adding and removing replicas only for the
    partitions that have any."""

    def replicas(by_partition: Mapping[int, Sequence[int]], skip_empty: bool) -> dict[str, list[int]]:
        return {str(p): list(r) for p, r in sorted(by_partition.items()) if r or not skip_empty}

    body: dict[str, Any] = {
        "removing_replicas": replicas(assignment.removing_replicas, True),
        "partitions": replicas(assignment.partitions, False),
    }
    if assignment.topic_id is not None:
        body["topic_id"] = uuid_to_kafka(assignment.topic_id)
    body["adding_replicas"] = replicas(assignment.adding_replicas, True)
    body["version"] = TOPIC_ASSIGNMENT_VERSION
    return _dumps(body)


def decode_topic_assignment(data: bytes, topic: str = "") -> TopicAssignment:
    """TopicZNode.decode: versions 1 to 3 (1 and 2 have only partitions)."""
    what = f"topic {topic} assignment" if topic else "topic assignment"
    info = _object(_loads(data, what), what)
    if "version" in info:
        _version(info, what)
    topic_id = None
    if info.get("topic_id") is not None:
        raw_id = _as_str(info["topic_id"], f"{what} topic_id")
        try:
            topic_id = uuid_from_kafka(raw_id)
        except ValueError as e:
            raise ZkDataError(f"{what}: {e}") from None

    def by_partition(key: str) -> dict[int, tuple[int, ...]]:
        raw = info.get(key)
        if raw is None:
            return {}
        return {
            _partition_key(p, what): _as_int_list(r, f"{what} {key} of partition {p}")
            for p, r in _object(raw, f"{what} {key}").items()
        }

    partitions = dict(sorted(by_partition("partitions").items()))
    # Kafka reads adding and removing replicas only for the partitions listed.
    adding = {p: r for p, r in by_partition("adding_replicas").items() if r and p in partitions}
    removing = {p: r for p, r in by_partition("removing_replicas").items() if r and p in partitions}
    return TopicAssignment(topic_id, partitions, adding, removing)


# ---- /brokers/topics/<topic>/partitions/<p>/state ------------------------------------

# LeaderRecoveryState: RECOVERING after an unclean election, until the leader has
# recovered its log.
LEADER_RECOVERY_RECOVERED = 0
LEADER_RECOVERY_RECOVERING = 1
# LeaderAndIsr.NoLeader: a partition with no live replica in its ISR.
NO_LEADER = -1


@dataclass(frozen=True, slots=True)
class LeaderIsrAndControllerEpoch:
    """A partition's leader, leader epoch and ISR, and the epoch of the controller that
    wrote them (Kafka's LeaderIsrAndControllerEpoch)."""

    leader: int
    leader_epoch: int
    isr: tuple[int, ...]
    controller_epoch: int
    leader_recovery_state: int = LEADER_RECOVERY_RECOVERED


def encode_partition_state(state: LeaderIsrAndControllerEpoch) -> bytes:
    """TopicPartitionStateZNode.encode: version 1; leader_recovery_state only when it
    is not RECOVERED."""
    body: dict[str, Any] = {
        "controller_epoch": state.controller_epoch,
        "leader": state.leader,
        "version": 1,
        "leader_epoch": state.leader_epoch,
        "isr": list(state.isr),
    }
    if state.leader_recovery_state != LEADER_RECOVERY_RECOVERED:
        body["leader_recovery_state"] = state.leader_recovery_state
    return _dumps(body)


def decode_partition_state(data: bytes) -> LeaderIsrAndControllerEpoch:
    what = "partition state"
    info = _object(_loads(data, what), what)
    if "version" in info:
        _version(info, what)
    recovery = LEADER_RECOVERY_RECOVERED
    if info.get("leader_recovery_state") is not None:
        recovery = _as_int(info["leader_recovery_state"], f"{what} leader_recovery_state")
        if recovery not in (LEADER_RECOVERY_RECOVERED, LEADER_RECOVERY_RECOVERING):
            raise ZkDataError(f"{what}: unknown leader_recovery_state {recovery}")
    return LeaderIsrAndControllerEpoch(
        leader=_as_int(_require(info, "leader", what), f"{what} leader"),
        leader_epoch=_as_int(_require(info, "leader_epoch", what), f"{what} leader_epoch"),
        isr=_as_int_list(_require(info, "isr", what), f"{what} isr"),
        controller_epoch=_as_int(_require(info, "controller_epoch", what), f"{what} controller_epoch"),
        leader_recovery_state=recovery,
    )


# ---- /controller, /controller_epoch --------------------------------------------------


def encode_controller(broker_id: int, *, timestamp_ms: int, kraft_controller_epoch: int = -1) -> bytes:
    """ControllerZNode.encode, version 2 (kraftControllerEpoch -1: a ZooKeeper controller)."""
    return _dumps({
        "version": 2,
        "brokerid": broker_id,
        "timestamp": str(timestamp_ms),
        "kraftControllerEpoch": kraft_controller_epoch,
    })


def decode_controller(data: bytes) -> int:
    """The controller's broker id (versions 1 and 2)."""
    what = "controller"
    info = _object(_loads(data, what), what)
    if "version" in info:
        _version(info, what)
    if info.get("kraftControllerEpoch") is not None:
        _as_int(info["kraftControllerEpoch"], f"{what} kraftControllerEpoch")
    return _as_int(_require(info, "brokerid", what), f"{what} brokerid")


def encode_controller_epoch(epoch: int) -> bytes:
    return str(epoch).encode("ascii")


def decode_controller_epoch(data: bytes) -> int:
    what = "controller epoch"
    return _parse_decimal(_text(data, what), what, INT32_MIN, INT32_MAX)


# ---- /cluster/id ---------------------------------------------------------------------


def encode_cluster_id(cluster_id: str) -> bytes:
    # Kafka writes this version as a string.
    return _dumps({"version": "1", "id": cluster_id})


def decode_cluster_id(data: bytes) -> str:
    what = "cluster id"
    info = _object(_loads(data, what), what)
    return _as_str(_require(info, "id", what), f"{what} id")


# ---- /config/<type>/<name>, /config/changes/config_change_ ---------------------------


def encode_entity_config(config: Mapping[str, str]) -> bytes:
    """ConfigEntityZNode.encode: the entity's overrides, all values strings."""
    return _dumps({"version": 1, "config": {k: str(v) for k, v in config.items()}})


def decode_entity_config(data: bytes) -> dict[str, str]:
    what = "entity config"
    info = _object(_loads(data, what), what)
    raw = info.get("config")
    if raw is None:
        return {}
    return {k: _as_str(v, f"{what} {k}") for k, v in _object(raw, f"{what} config").items()}


encode_topic_config = encode_entity_config
decode_topic_config = decode_entity_config


def topic_config_entity_path(topic: str) -> str:
    """The entity_path of a topic's config change notification."""
    return f"{CONFIG_TYPE_TOPIC}/{topic}"


def encode_config_change_notification(entity_path: str) -> bytes:
    """ConfigEntityChangeNotificationSequenceZNode.encode: version 2, entity_path
    "<type>/<name>", e.g. "topics/orders"."""
    return _dumps({"version": 2, "entity_path": entity_path})


def decode_config_change_notification(data: bytes) -> str:
    """The entity_path the notification names; a version 1 notification's
    entity_type and entity_name are joined into one."""
    what = "config change notification"
    info = _object(_loads(data, what), what)
    version = _version(info, what)
    if version == 1:
        entity_type = _as_str(_require(info, "entity_type", what), f"{what} entity_type")
        entity_name = _as_str(_require(info, "entity_name", what), f"{what} entity_name")
        entity_path = f"{entity_type}/{entity_name}"
    elif version == 2:
        entity_path = _as_str(_require(info, "entity_path", what), f"{what} entity_path")
    else:
        raise ZkDataError(f"{what}: unsupported version {version}")
    entity_type, slash, _ = entity_path.partition("/")
    if not slash or entity_type not in CONFIG_TYPES:
        raise ZkDataError(f"{what}: invalid entity_path {entity_path[:100]!r}")
    return entity_path


# ---- /latest_producer_id_block -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProducerIdsBlock:
    """A block of producer ids handed to one broker (Kafka's ProducerIdsBlock)."""

    assigned_broker_id: int
    first_producer_id: int
    size: int

    @property
    def last_producer_id(self) -> int:
        return self.first_producer_id + self.size - 1

    @property
    def next_block_first_id(self) -> int:
        return self.first_producer_id + self.size


def encode_producer_id_block(block: ProducerIdsBlock) -> bytes:
    # The ids are longs, written as strings.
    return _dumps({
        "version": 1,
        "broker": block.assigned_broker_id,
        "block_start": str(block.first_producer_id),
        "block_end": str(block.last_producer_id),
    })


def decode_producer_id_block(data: bytes) -> ProducerIdsBlock:
    what = "producer id block"
    info = _object(_loads(data, what), what)
    broker = _as_int(_require(info, "broker", what), f"{what} broker")
    start = _parse_decimal(_as_str(_require(info, "block_start", what), f"{what} block_start"),
                           f"{what} block_start", 0, INT64_MAX)
    end = _parse_decimal(_as_str(_require(info, "block_end", what), f"{what} block_end"),
                         f"{what} block_end", 0, INT64_MAX)
    size = end - start + 1
    if not 1 <= size <= INT32_MAX:  # Math.toIntExact in Kafka
        raise ZkDataError(f"{what}: block_start {start} and block_end {end} are no block")
    return ProducerIdsBlock(broker, start, size)


# ---- /admin/reassign_partitions, /admin/preferred_replica_election, ISR changes ------


def encode_reassignment(reassignment: Mapping[TopicPartition, Sequence[int]]) -> bytes:
    """ReassignPartitionsZNode.encode (the pre-2.4 way to request a reassignment)."""
    return _dumps({
        "version": 1,
        "partitions": [
            {"topic": t, "partition": p, "replicas": list(r)}
            for (t, p), r in sorted(reassignment.items())
        ],
    })


def decode_reassignment(data: bytes) -> dict[TopicPartition, tuple[int, ...]]:
    what = "partition reassignment"
    result = {}
    for entry, where in _partition_entries(data, what):
        replicas = _as_int_list(_require(entry, "replicas", where), f"{where} replicas")
        result[_topic_partition(entry, where)] = replicas
    return result


def _encode_partition_set(partitions: Iterable[TopicPartition]) -> bytes:
    return _dumps({
        "version": 1,
        "partitions": [{"topic": t, "partition": p} for t, p in sorted(set(partitions))],
    })


def _decode_partition_set(data: bytes, what: str) -> frozenset[TopicPartition]:
    return frozenset(_topic_partition(entry, where) for entry, where in _partition_entries(data, what))


def _partition_entries(data: bytes, what: str) -> list[tuple[dict[str, Any], str]]:
    info = _object(_loads(data, what), what)
    if "version" in info:
        _version(info, what)
    listed = _require(info, "partitions", what)
    if not isinstance(listed, list):
        raise ZkDataError(f"{what} partitions: expected an array, got {_json_type(listed)}")
    return [(_object(e, f"{what} entry {i}"), f"{what} entry {i}") for i, e in enumerate(listed)]


def _topic_partition(entry: Mapping[str, Any], where: str) -> TopicPartition:
    topic = _as_str(_require(entry, "topic", where), f"{where} topic")
    return topic, _as_int(_require(entry, "partition", where), f"{where} partition", 0, INT32_MAX)


def encode_preferred_replica_election(partitions: Iterable[TopicPartition]) -> bytes:
    return _encode_partition_set(partitions)


def decode_preferred_replica_election(data: bytes) -> frozenset[TopicPartition]:
    return _decode_partition_set(data, "preferred replica election")


def encode_isr_change_notification(partitions: Iterable[TopicPartition]) -> bytes:
    """IsrChangeNotificationSequenceZNode.encode: the partitions whose ISR a leader
    changed, for the controller to re-read."""
    return _encode_partition_set(partitions)


def decode_isr_change_notification(data: bytes) -> frozenset[TopicPartition]:
    return _decode_partition_set(data, "ISR change notification")


# ---- replica assignment: AdminUtils.assignReplicasToBrokers --------------------------


def assign_replicas(
    brokers: Mapping[int, str | None],
    num_partitions: int,
    replication_factor: int,
    *,
    start_index: int = -1,
    start_partition_id: int = -1,
    rng: random.Random | None = None,
) -> dict[int, tuple[int, ...]]:
    """Kafka's AdminUtils.assignReplicasToBrokers: broker id -> rack (None: no rack).

    The first replica of each partition goes round-robin over the brokers from
    `start_index` (random when negative), the others at an increasing shift, so that
    leaders and followers spread evenly. When every broker has a rack, brokers are
    ordered alternating racks and a partition's replicas go to distinct racks first.
    `start_partition_id` is the first partition's id, when adding partitions."""
    if num_partitions <= 0:
        raise InvalidPartitions("Number of partitions must be larger than 0.")
    if replication_factor <= 0:
        raise InvalidReplicationFactor("Replication factor must be larger than 0.")
    if replication_factor > len(brokers):
        raise InvalidReplicationFactor(
            f"Replication factor: {replication_factor} larger than available brokers: {len(brokers)}."
        )
    rand = rng if rng is not None else random.Random()
    if all(rack is None for rack in brokers.values()):
        # Kafka's AdminZkClient hands the brokers over sorted by id.
        return _assign_rack_unaware(
            num_partitions, replication_factor, sorted(brokers), start_index, start_partition_id, rand
        )
    if any(rack is None for rack in brokers.values()):
        raise AdminOperationError(
            "Not all brokers have rack information for replica rack aware assignment."
        )
    racks: dict[int, str] = {b: r for b, r in brokers.items() if r is not None}
    return _assign_rack_aware(
        num_partitions, replication_factor, racks, start_index, start_partition_id, rand
    )


def _replica_index(first_replica_index: int, second_replica_shift: int, replica_index: int, n_brokers: int) -> int:
    shift = 1 + (second_replica_shift + replica_index) % (n_brokers - 1)
    return (first_replica_index + shift) % n_brokers


def _starts(n: int, start_index: int, rand: random.Random) -> tuple[int, int]:
    # Kafka draws the start index, then the replica shift, each in [0, n).
    if start_index >= 0:
        return start_index, start_index
    start = rand.randrange(n)
    return start, rand.randrange(n)


def _assign_rack_unaware(
    num_partitions: int,
    replication_factor: int,
    broker_list: list[int],
    start_index: int,
    start_partition_id: int,
    rand: random.Random,
) -> dict[int, tuple[int, ...]]:
    n = len(broker_list)
    start, next_replica_shift = _starts(n, start_index, rand)
    current = max(0, start_partition_id)
    result: dict[int, tuple[int, ...]] = {}
    for _ in range(num_partitions):
        if current > 0 and current % n == 0:
            next_replica_shift += 1
        first = (current + start) % n
        replicas = [broker_list[first]]
        for j in range(replication_factor - 1):
            replicas.append(broker_list[_replica_index(first, next_replica_shift, j, n)])
        result[current] = tuple(replicas)
        current += 1
    return result


def rack_alternated_broker_list(broker_racks: Mapping[int, str]) -> list[int]:
    """Kafka's getRackAlternatedBrokerList: racks in name order, each rack's brokers by
    id, taken one from each rack in turn: {0:a, 1:a, 2:b, 3:c} -> [0, 2, 3, 1]."""
    by_rack: dict[str, list[int]] = {}
    for broker, rack in broker_racks.items():
        by_rack.setdefault(rack, []).append(broker)
    iterators = [iter(sorted(by_rack[r])) for r in sorted(by_rack)]
    result: list[int] = []
    rack_index = 0
    while len(result) < len(broker_racks):
        broker = next(iterators[rack_index], None)
        if broker is not None:
            result.append(broker)
        rack_index = (rack_index + 1) % len(iterators)
    return result


def _assign_rack_aware(
    num_partitions: int,
    replication_factor: int,
    broker_racks: Mapping[int, str],
    start_index: int,
    start_partition_id: int,
    rand: random.Random,
) -> dict[int, tuple[int, ...]]:
    num_racks = len(set(broker_racks.values()))
    arranged = rack_alternated_broker_list(broker_racks)
    n = len(arranged)
    start, next_replica_shift = _starts(n, start_index, rand)
    current = max(0, start_partition_id)
    result: dict[int, tuple[int, ...]] = {}
    for _ in range(num_partitions):
        if current > 0 and current % n == 0:
            next_replica_shift += 1
        first = (current + start) % n
        leader = arranged[first]
        replicas = [leader]
        racks_with_replicas = {broker_racks[leader]}
        brokers_with_replicas = {leader}
        k = 0
        for _j in range(replication_factor - 1):
            while True:
                broker = arranged[_replica_index(first, next_replica_shift * num_racks, k, n)]
                rack = broker_racks[broker]
                k += 1
                # Skip a broker on a rack that has a replica while some rack has none,
                # and a broker that has a replica while some broker has none.
                if (rack not in racks_with_replicas or len(racks_with_replicas) == num_racks) and (
                    broker not in brokers_with_replicas or len(brokers_with_replicas) == n
                ):
                    replicas.append(broker)
                    racks_with_replicas.add(rack)
                    brokers_with_replicas.add(broker)
                    break
        result[current] = tuple(replicas)
        current += 1
    return result


# ---- leader election: PartitionLeaderElectionAlgorithms ------------------------------


def offline_partition_leader(
    assignment: Sequence[int], isr: Collection[int], live_brokers: Collection[int], unclean: bool
) -> int | None:
    """A leader for a new or offline partition: the first replica, in assignment order,
    that is live and in the ISR; failing that, with unclean election allowed, the first
    live replica (which may lose committed records)."""
    leader = _first(assignment, lambda r: r in live_brokers and r in isr)
    if leader is None and unclean:
        leader = _first(assignment, lambda r: r in live_brokers)
    return leader


def reassign_partition_leader(
    reassignment: Sequence[int], isr: Collection[int], live_brokers: Collection[int]
) -> int | None:
    """A leader among a reassignment's target replicas: the first live one in the ISR."""
    return _first(reassignment, lambda r: r in live_brokers and r in isr)


def preferred_replica_leader(
    assignment: Sequence[int], isr: Collection[int], live_brokers: Collection[int]
) -> int | None:
    """The preferred (first) replica, if it is live and in the ISR; else None."""
    if not assignment:
        return None
    preferred = assignment[0]
    return preferred if preferred in live_brokers and preferred in isr else None


def controlled_shutdown_leader(
    assignment: Sequence[int],
    isr: Collection[int],
    live_brokers: Collection[int],
    shutting_down: Collection[int],
) -> int | None:
    """A leader for a partition whose leader is shutting down: the first replica that
    is live, in the ISR and not shutting down. Kafka counts shutting-down brokers as
    live here, so `live_brokers` may include them."""
    return _first(assignment, lambda r: r in live_brokers and r in isr and r not in shutting_down)


def _first(replicas: Iterable[int], accept: Callable[[int], bool]) -> int | None:
    return next((r for r in replicas if accept(r)), None)


__all__ = [
    "ADMIN_PATH",
    "AdminOperationError",
    "BROKER_IDS_PATH",
    "BROKER_REGISTRATION_VERSION",
    "BROKER_SEQUENCE_ID_PATH",
    "BROKERS_PATH",
    "CLUSTER_ID_PATH",
    "CLUSTER_PATH",
    "CONFIG_CHANGE_CREATE_PATH",
    "CONFIG_CHANGE_SEQUENCE_PREFIX",
    "CONFIG_CHANGES_PATH",
    "CONFIG_PATH",
    "CONFIG_TYPE_TOPIC",
    "CONFIG_TYPES",
    "CONSUMERS_PATH",
    "CONTROLLER_EPOCH_PATH",
    "CONTROLLER_PATH",
    "DELETE_TOPICS_PATH",
    "FEATURE_PATH",
    "INITIAL_CONTROLLER_EPOCH",
    "ISR_CHANGE_CREATE_PATH",
    "ISR_CHANGE_NOTIFICATION_PATH",
    "ISR_CHANGE_SEQUENCE_PREFIX",
    "InvalidPartitions",
    "InvalidReplicationFactor",
    "LEADER_RECOVERY_RECOVERED",
    "LEADER_RECOVERY_RECOVERING",
    "LOG_DIR_EVENT_NOTIFICATION_PATH",
    "LeaderIsrAndControllerEpoch",
    "NO_LEADER",
    "ONE_UUID",
    "PERSISTENT_PATHS",
    "PREFERRED_REPLICA_ELECTION_PATH",
    "PRODUCER_ID_BLOCK_PATH",
    "PRODUCER_ID_BLOCK_SIZE",
    "ProducerIdsBlock",
    "REASSIGN_PARTITIONS_PATH",
    "SECURITY_PROTOCOLS",
    "TOPIC_ASSIGNMENT_VERSION",
    "TOPICS_PATH",
    "TopicAssignment",
    "TopicPartition",
    "ZERO_UUID",
    "ZkDataError",
    "assign_replicas",
    "broker_path",
    "config_change_path",
    "config_entity_path",
    "config_entity_type_path",
    "controlled_shutdown_leader",
    "decode_broker_registration",
    "decode_cluster_id",
    "decode_config_change_notification",
    "decode_controller",
    "decode_controller_epoch",
    "decode_entity_config",
    "decode_isr_change_notification",
    "decode_partition_state",
    "decode_preferred_replica_election",
    "decode_producer_id_block",
    "decode_reassignment",
    "decode_topic_assignment",
    "decode_topic_config",
    "delete_topic_path",
    "encode_broker_registration",
    "encode_cluster_id",
    "encode_config_change_notification",
    "encode_controller",
    "encode_controller_epoch",
    "encode_entity_config",
    "encode_isr_change_notification",
    "encode_partition_state",
    "encode_preferred_replica_election",
    "encode_producer_id_block",
    "encode_reassignment",
    "encode_topic_assignment",
    "encode_topic_config",
    "endpoint_connection_string",
    "isr_change_notification_path",
    "offline_partition_leader",
    "partition_path",
    "partition_state_path",
    "preferred_replica_leader",
    "rack_alternated_broker_list",
    "random_kafka_uuid",
    "reassign_partition_leader",
    "sequence_number",
    "topic_config_entity_path",
    "topic_config_path",
    "topic_partitions_path",
    "topic_path",
    "uuid_from_kafka",
    "uuid_to_kafka",
]
