"""Prometheus metrics of one broker (GET /metrics on the HTTP listener).

Kafka's broker metrics under the `kwire_` namespace. Most are read from the broker's own
state at scrape time (custom collectors); the few that must be counted as things happen
are plain ints in `broker.stats` (kwire.stats), so the produce and fetch paths pay a dict
increment and nothing of prometheus-client. Each broker has its own registry: tests run
several brokers in one process.

Consumer group lag is not a Kafka broker metric (Kafka leaves it to clients and tools);
here it covers the groups whose `__consumer_offsets` partition this broker leads, and of
their committed partitions those this broker leads (where the high watermark is known).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kwire.coordinator.group import GroupState
from kwire.coordinator.group_coordinator import group_coordinator

if TYPE_CHECKING:
    from kwire.broker import Broker


@dataclass(frozen=True, slots=True)
class GroupLag:
    """A group's committed offset of one partition against the partition's high watermark."""

    group: str
    topic: str
    partition: int
    committed_offset: int
    high_watermark: int
    lag: int


def consumer_group_lags(broker: Broker) -> list[GroupLag]:
    """The lag of every committed partition of the groups this broker coordinates, for the
    partitions it leads, sorted by (group, topic, partition). The lag is what
    kafka-consumer-groups shows: high watermark minus committed offset, never negative (a
    commit past the high watermark, e.g. before a truncation, counts as no lag)."""
    coordinator = group_coordinator(broker)
    if coordinator is None or not coordinator.active:
        return []
    lags: list[GroupLag] = []
    for group_id, group in list(coordinator.groups.items()):
        if (
            group.state is GroupState.DEAD
            or coordinator.partition_for(group_id) not in coordinator.owned
        ):
            continue
        for (topic, index), committed in list(group.offsets.items()):
            partition = broker.partition(topic, index)
            if partition is None or not partition.is_leader:
                continue
            hw = partition.high_watermark
            lags.append(
                GroupLag(
                    group_id, topic, index, committed.offset, hw, max(0, hw - committed.offset)
                )
            )
    lags.sort(key=lambda g: (g.group, g.topic, g.partition))
    return lags
