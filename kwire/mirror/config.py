"""MirrorMaker 2's properties file, read the way MM2's dedicated mode reads it (no I/O here:
the caller hands in the parsed key/value pairs).

    clusters = a, b
    a.bootstrap.servers = 127.0.0.1:9092
    b.bootstrap.servers = 127.0.0.1:9093
    a->b.enabled = true
    a->b.topics = orders.*, payments

A flow setting (`topics`, `sync.group.offsets.enabled` ...) is looked up as `a->b.<name>`,
then `<name>`, then MM2's default. A cluster's client settings are the top-level client
settings (`security.protocol`, `sasl.*`, `ssl.*`), then `a.<name>`, then for one role
`a.consumer.<name>`, `a.producer.<name>` or `a.admin.<name>`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from kwire.mirror.policy import ReplicationPolicy, replication_policy


class MirrorConfigError(ValueError):
    """A setting MM2 would refuse: the message names the key and why."""


# MM2's defaults (MirrorMakerConfig, MirrorConnectorConfig and friends, Kafka 3.9).
FLOW_DEFAULTS: dict[str, str] = {
    "enabled": "false",
    "topics": ".*",
    "topics.exclude": r".*[\-\.]internal, .*\.replica, __.*",
    "groups": ".*",
    "groups.exclude": r"console-consumer-.*, connect-.*, __.*",
    "replication.factor": "2",
    "offset-syncs.topic.replication.factor": "3",
    "checkpoints.topic.replication.factor": "3",
    "offset.storage.replication.factor": "3",
    "offset.storage.partitions": "25",
    "refresh.topics.enabled": "true",
    "refresh.topics.interval.seconds": "600",
    "refresh.groups.enabled": "true",
    "refresh.groups.interval.seconds": "600",
    "sync.topic.configs.enabled": "true",
    "sync.topic.configs.interval.seconds": "600",
    "config.properties.exclude": (
        r"follower\.replication\.throttled\.replicas, "
        r"leader\.replication\.throttled\.replicas, "
        r"message\.timestamp\.difference\.max\.ms, "
        r"message\.timestamp\.type, "
        r"unclean\.leader\.election\.enable, "
        r"min\.insync\.replicas"
    ),
    "emit.checkpoints.enabled": "true",
    "emit.checkpoints.interval.seconds": "60",
    "emit.offset-syncs.enabled": "true",
    "sync.group.offsets.enabled": "false",
    "sync.group.offsets.interval.seconds": "60",
    "offset.lag.max": "100",
    "offset.flush.interval.ms": "10000",
    "replication.policy.class": "org.apache.kafka.connect.mirror.DefaultReplicationPolicy",
    "replication.policy.separator": ".",
    "exactly.once.support": "disabled",
    # kwire's own: how often the mirror logs its throughput and lag.
    "progress.log.interval.seconds": "30",
}

# Top-level keys that are client settings of every cluster (MM2 passes these on too).
_CLIENT_PREFIXES = ("security.protocol", "sasl.", "ssl.")
_ROLES = ("consumer", "producer", "admin")
# Top-level keys of the mirror process itself, not of a flow.
PROCESS_KEYS = ("clusters", "http.listeners", "tasks.max")


@dataclass(frozen=True)
class Flow:
    """One replication flow, `source->target`, with its settings resolved."""

    source: str
    target: str
    settings: Mapping[str, str]
    policy: ReplicationPolicy
    topics: re.Pattern[str]
    topics_exclude: re.Pattern[str]
    groups: re.Pattern[str]
    groups_exclude: re.Pattern[str]
    config_exclude: re.Pattern[str]
    # client settings by role ("consumer", "producer", "admin") for each side
    source_clients: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    target_clients: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.source}->{self.target}"

    def get(self, key: str) -> str:
        return self.settings[key]

    def flag(self, key: str) -> bool:
        value = self.settings[key].strip().lower()
        if value not in ("true", "false"):
            raise MirrorConfigError(
                f"{self.name}.{key}={self.settings[key]!r}: expected true or false"
            )
        return value == "true"

    def integer(self, key: str, minimum: int = 0) -> int:
        try:
            value = int(self.settings[key].strip())
        except ValueError:
            raise MirrorConfigError(
                f"{self.name}.{key}={self.settings[key]!r}: expected an integer"
            ) from None
        if value < minimum:
            raise MirrorConfigError(f"{self.name}.{key}={value}: must be at least {minimum}")
        return value

    def seconds(self, key: str) -> float:
        return float(self.integer(key, minimum=0))

    @property
    def exactly_once(self) -> bool:
        value = self.settings["exactly.once.support"].strip().lower()
        if value not in ("enabled", "disabled", "requested"):
            raise MirrorConfigError(
                f"{self.name}.exactly.once.support={value!r}: "
                "expected enabled, requested or disabled"
            )
        return value in ("enabled", "requested")

    def replicates_topic(self, topic: str) -> bool:
        """Whether `topic` on the source is mirrored: it matches `topics`, not
        `topics.exclude`, and is not itself a copy from the target (which would loop)."""
        if not self.topics.fullmatch(topic) or self.topics_exclude.fullmatch(topic):
            return False
        if self.policy.is_internal_topic(topic):
            return False
        # Every hop, as MM2's isCycle: in a ring a->b->c->a, `c.b.orders` on a came from b.
        upstream: str | None = topic
        while upstream is not None:
            if self.policy.topic_source(upstream) == self.target:
                return False
            upstream = self.policy.upstream_topic(upstream)
        return True

    def replicates_group(self, group: str) -> bool:
        return bool(self.groups.fullmatch(group)) and not self.groups_exclude.fullmatch(group)

    def remote_topic(self, topic: str) -> str:
        return self.policy.format_remote_topic(self.source, topic)

    def syncs_config(self, key: str) -> bool:
        return not self.config_exclude.fullmatch(key)


@dataclass(frozen=True)
class MirrorConfig:
    clusters: tuple[str, ...]
    flows: tuple[Flow, ...]
    http_listener: str | None
    unknown_keys: tuple[str, ...]


def regex_list(key: str, value: str) -> re.Pattern[str]:
    """MM2's list of regexes (comma separated) as one pattern; an empty list matches nothing."""
    parts = [part.strip() for part in value.split(",") if part.strip()]
    if not parts:
        return re.compile(r"(?!)")
    try:
        return re.compile("|".join(f"(?:{part})" for part in parts))
    except re.error as e:
        raise MirrorConfigError(f"{key}={value!r}: not a regular expression: {e}") from None


def _client_settings(
    properties: Mapping[str, str], cluster: str, aliases: tuple[str, ...]
) -> dict[str, dict[str, str]]:
    common: dict[str, str] = {
        key: value
        for key, value in properties.items()
        if key.startswith(_CLIENT_PREFIXES) and not _is_scoped(key, aliases)
    }
    prefix = f"{cluster}."
    for key, value in properties.items():
        if key.startswith(prefix):
            name = key[len(prefix) :]
            if not name.startswith(tuple(f"{role}." for role in _ROLES)):
                common[name] = value
    by_role: dict[str, dict[str, str]] = {}
    for role in _ROLES:
        settings = dict(common)
        role_prefix = f"{cluster}.{role}."
        for key, value in properties.items():
            if key.startswith(role_prefix):
                settings[key[len(role_prefix) :]] = value
        by_role[role] = settings
    return by_role


def _is_scoped(key: str, aliases: tuple[str, ...]) -> bool:
    head = key.split(".", 1)[0]
    return head in aliases or "->" in head


def parse_mirror_config(properties: Mapping[str, str]) -> MirrorConfig:
    """The clusters and enabled flows of an MM2 properties file, or MirrorConfigError."""
    raw_clusters = properties.get("clusters", "")
    clusters = tuple(alias.strip() for alias in raw_clusters.split(",") if alias.strip())
    # One cluster has no flow (a flow to itself is refused below).
    if len(clusters) < 2:
        raise MirrorConfigError("clusters: name at least two clusters (clusters = a, b)")
    for alias in clusters:
        if not re.fullmatch(r"[A-Za-z0-9_\-]+", alias):
            raise MirrorConfigError(f"clusters: {alias!r} is not a valid cluster alias")
        if not properties.get(f"{alias}.bootstrap.servers", "").strip():
            raise MirrorConfigError(f"{alias}.bootstrap.servers is not set")
    if len(set(clusters)) != len(clusters):
        raise MirrorConfigError(f"clusters: {raw_clusters!r} names a cluster twice")

    flow_keys = set()
    for key in properties:
        head = key.split(".", 1)[0]
        if "->" in head:
            source, _, target = head.partition("->")
            for alias in (source, target):
                if alias not in clusters:
                    raise MirrorConfigError(
                        f"{key}: {alias!r} is not one of clusters = {raw_clusters}"
                    )
            if source == target:
                raise MirrorConfigError(f"{key}: a flow from a cluster to itself")
            flow_keys.add((source, target))

    flows = []
    for source in clusters:
        for target in clusters:
            if source == target:
                continue
            flow = _flow(properties, source, target, clusters)
            if flow.flag("enabled"):
                flows.append(flow)
    if not flows:
        raise MirrorConfigError(
            f"no flow is enabled: set one, e.g. {clusters[0]}->{clusters[-1]}.enabled = true"
        )
    known = set(FLOW_DEFAULTS) | set(PROCESS_KEYS)
    unknown = tuple(
        sorted(
            key
            for key in properties
            if key not in known
            and not _is_scoped(key, clusters)
            and not key.startswith(_CLIENT_PREFIXES)
        )
    )
    http_listener = properties.get("http.listeners", "").strip() or None
    return MirrorConfig(clusters, tuple(flows), http_listener, unknown)


def _flow(
    properties: Mapping[str, str], source: str, target: str, clusters: tuple[str, ...]
) -> Flow:
    settings = dict(FLOW_DEFAULTS)
    for key in FLOW_DEFAULTS:
        if key in properties:
            settings[key] = properties[key]
    prefix = f"{source}->{target}."
    for key, value in properties.items():
        if key.startswith(prefix):
            settings[key[len(prefix) :]] = value
    name = f"{source}->{target}"
    try:
        policy = replication_policy(
            settings["replication.policy.class"], settings["replication.policy.separator"]
        )
    except ValueError as e:
        raise MirrorConfigError(f"{name}.replication.policy.class: {e}") from None
    return Flow(
        source=source,
        target=target,
        settings=settings,
        policy=policy,
        topics=regex_list(f"{name}.topics", settings["topics"]),
        topics_exclude=regex_list(f"{name}.topics.exclude", settings["topics.exclude"]),
        groups=regex_list(f"{name}.groups", settings["groups"]),
        groups_exclude=regex_list(f"{name}.groups.exclude", settings["groups.exclude"]),
        config_exclude=regex_list(
            f"{name}.config.properties.exclude", settings["config.properties.exclude"]
        ),
        source_clients=_client_settings(properties, source, clusters),
        target_clients=_client_settings(properties, target, clusters),
    )


def validate_flow(flow: Flow) -> None:
    """Read every typed setting once, so that a bad value stops the mirror at start."""
    for key in (
        "replication.factor",
        "offset-syncs.topic.replication.factor",
        "checkpoints.topic.replication.factor",
        "offset.storage.replication.factor",
    ):
        # re, not isdigit(): "--3" and "²" pass isdigit() but not int()
        text = flow.settings[key].strip()
        value = int(text) if re.fullmatch(r"-?[0-9]+", text) else None
        if value is None or not (value == -1 or value >= 1):
            raise MirrorConfigError(
                f"{flow.name}.{key}={flow.settings[key]!r}: expected a positive integer or -1"
            )
    flow.integer("offset.storage.partitions", minimum=1)
    for key in (
        "refresh.topics.interval.seconds",
        "refresh.groups.interval.seconds",
        "sync.topic.configs.interval.seconds",
        "emit.checkpoints.interval.seconds",
        "sync.group.offsets.interval.seconds",
        "progress.log.interval.seconds",
        "offset.lag.max",
        "offset.flush.interval.ms",
    ):
        flow.integer(key)
    for key in (
        "refresh.topics.enabled",
        "refresh.groups.enabled",
        "sync.topic.configs.enabled",
        "emit.checkpoints.enabled",
        "emit.offset-syncs.enabled",
        "sync.group.offsets.enabled",
    ):
        flow.flag(key)
    flow.exactly_once  # noqa: B018 - validates the value
