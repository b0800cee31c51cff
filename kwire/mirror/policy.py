"""MM2's replication policies: how a mirrored ("remote") topic is named on the target, and
the names of the mirror's internal topics.

DefaultReplicationPolicy names the copy of `orders` from cluster `a` as `a.orders`, so that
a topic's origin shows in its name and two-way mirroring cannot loop (`a.orders` is not sent
back to `a`). IdentityReplicationPolicy keeps the name (one-way mirroring, migrations).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_POLICY = "org.apache.kafka.connect.mirror.DefaultReplicationPolicy"
IDENTITY_POLICY = "org.apache.kafka.connect.mirror.IdentityReplicationPolicy"
# Short names accepted too (the class names without their package).
_POLICIES = {
    DEFAULT_POLICY: "default",
    "DefaultReplicationPolicy": "default",
    IDENTITY_POLICY: "identity",
    "IdentityReplicationPolicy": "identity",
}


@dataclass(frozen=True)
class ReplicationPolicy:
    identity: bool
    separator: str = "."

    def format_remote_topic(self, source_alias: str, topic: str) -> str:
        if self.identity:
            return topic
        return f"{source_alias}{self.separator}{topic}"

    def topic_source(self, topic: str) -> str | None:
        """The cluster a remote topic came from, if its name says so."""
        if self.identity:
            return None
        alias, sep, rest = topic.partition(self.separator)
        return alias if sep and rest else None

    def upstream_topic(self, topic: str) -> str | None:
        """The name on the cluster a remote topic came from (`b.orders` for `c.b.orders`)."""
        source = self.topic_source(topic)
        return None if source is None else topic[len(source) + len(self.separator) :]

    def offset_syncs_topic(self, target_alias: str) -> str:
        """On the source cluster: where upstream/downstream offset pairs are written."""
        return f"mm2-offset-syncs{self.separator}{target_alias}{self.separator}internal"

    def checkpoints_topic(self, source_alias: str) -> str:
        """On the target cluster: the translated group offsets."""
        return f"{source_alias}{self.separator}checkpoints{self.separator}internal"

    def offsets_topic(self, source_alias: str) -> str:
        """On the target cluster: how far each source partition has been copied (Kafka
        Connect's offset store, which MM2's dedicated mode keeps there)."""
        return f"mm2-offsets{self.separator}{source_alias}{self.separator}internal"

    def is_internal_topic(self, topic: str) -> bool:
        # MM2's ReplicationPolicy.isInternalTopic: Kafka's, Connect's (`-internal`,
        # `.internal`) and the mirror's own with a custom separator (`mm2-offsets_a_internal`).
        return topic.startswith(("__", ".")) or topic.endswith(
            ("-internal", ".internal", f"{self.separator}internal")
        )


def replication_policy(class_name: str, separator: str = ".") -> ReplicationPolicy:
    kind = _POLICIES.get(class_name.strip())
    if kind is None:
        raise ValueError(
            f"{class_name!r} is not a policy kwire has ({DEFAULT_POLICY} or {IDENTITY_POLICY})"
        )
    if not separator:
        raise ValueError("replication.policy.separator must not be empty")
    return ReplicationPolicy(identity=kind == "identity", separator=separator)
