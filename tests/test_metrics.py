"""Prometheus metrics (kwire.metrics): consumer group lag in-process, then a real broker's
GET /metrics after confluent-kafka traffic, and a cluster's replication metrics."""

from __future__ import annotations

import time
from pathlib import Path

import trio
from kio.schema.errors import ErrorCode

from kwire.broker import Broker
from kwire.config import BrokerConfig
from kwire.coordinator.group_coordinator import group_coordinator
from kwire.metrics import GroupLag, consumer_group_lags
from kwire.protocol.records import build_batch, validate_batches

TIMEOUT = 20


def _append(broker: Broker, topic: str, index: int, count: int) -> None:
    partition = broker.partition(topic, index)
    assert partition is not None
    batch = bytearray(build_batch([(None, b"v%d" % i) for i in range(count)]))
    partition.append(batch, validate_batches(batch), int(time.time() * 1000))


def test_consumer_group_lags_from_committed_offsets_and_high_watermarks(tmp_path: Path) -> None:
    broker = Broker(BrokerConfig({"log.dirs": str(tmp_path), "offsets.topic.num.partitions": "2"}))
    broker.open()
    broker.attach_coordinators()
    groups = group_coordinator(broker)
    assert groups is not None
    assert consumer_group_lags(broker) == []  # not running yet: no coordinator state
    broker.create_topic("t", 2)
    _append(broker, "t", 0, 10)
    _append(broker, "t", 1, 4)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(groups.run)
            with trio.fail_after(TIMEOUT):
                while len(groups.owned) < groups.num_partitions:
                    await trio.sleep(0.01)
                for group_id, offsets in (
                    ("g1", {("t", 0): 3, ("t", 1): 4}),
                    ("g0", {("t", 0): 10}),
                ):
                    answer = await groups.commit_offsets(
                        group_id=group_id,
                        member_id="",
                        group_instance_id=None,
                        generation_id=-1,
                        offsets={tp: (offset, -1, None) for tp, offset in offsets.items()},
                    )
                    assert set(answer.values()) == {ErrorCode.none}
                # A partition this broker has no replica of is left out.
                answer = await groups.commit_offsets(
                    group_id="g1",
                    member_id="",
                    group_instance_id=None,
                    generation_id=-1,
                    offsets={("gone", 0): (5, -1, None)},
                )
                assert set(answer.values()) == {ErrorCode.none}
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert consumer_group_lags(broker) == [
        GroupLag("g0", "t", 0, committed_offset=10, high_watermark=10, lag=0),
        GroupLag("g1", "t", 0, committed_offset=3, high_watermark=10, lag=7),
        GroupLag("g1", "t", 1, committed_offset=4, high_watermark=4, lag=0),
    ]
    # More records raise the lag at once: it is read at call time.
    _append(broker, "t", 1, 5)
    assert [g.lag for g in consumer_group_lags(broker) if g.partition == 1] == [5]
    broker.close()
