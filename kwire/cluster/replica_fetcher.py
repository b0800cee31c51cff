"""A replica fetcher: one task per leader broker, fetching for every partition this
broker follows there (Kafka's ReplicaFetcherThread).

A partition joins in the truncating state: before it fetches, the fetcher asks the
leader with OffsetForLeaderEpoch where the log of the follower's latest epoch ends
on the leader, and truncates what lies beyond (KIP-101: a follower never keeps a
tail the new leader does not have). Then it fetches from its log end offset with
Fetch (replica_id = this broker), appends the batches as they are, offsets and
epochs kept, and takes the leader's high watermark up to its own log end.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12 import request as fetch_request
from kio.schema.offset_for_leader_epoch.v4 import request as epoch_request
from kio.static.primitive import i8, i32, i32Timedelta, i64

from kwire.clock import now_ms
from kwire.protocol.records import InvalidBatchError, validate_batches

if TYPE_CHECKING:
    from kwire.broker import Partition
    from kwire.cluster.replica_manager import ReplicaManager

log = logging.getLogger(__name__)

FETCH_KEY = 1
FETCH_VERSION = 12
OFFSET_FOR_LEADER_EPOCH_KEY = 23
OFFSET_FOR_LEADER_EPOCH_VERSION = 4

# Answers of a leader that has not yet learnt of its own election at our epoch.
_LEADER_CATCHING_UP = {ErrorCode.unknown_leader_epoch, ErrorCode.not_leader_or_follower}
LEADER_CATCH_UP_BACKOFF_MS = 50


@dataclass(slots=True)
class FetchState:
    partition: Partition
    leader_epoch: int
    truncating: bool = True
    # Set after an error that only new metadata clears; the partition waits until then.
    delayed_until_ms: int = 0


def _by_topic(states: list[FetchState]) -> dict[str, list[FetchState]]:
    by_topic: dict[str, list[FetchState]] = {}
    for state in states:
        by_topic.setdefault(state.partition.topic.name, []).append(state)
    return by_topic


class ReplicaFetcher:
    def __init__(self, manager: ReplicaManager, leader_id: int) -> None:
        self.manager = manager
        self.leader_id = leader_id
        self.broker_id = manager.broker_id
        config = manager.broker.config
        self.max_wait_ms: int = config["replica.fetch.wait.max.ms"]
        self.min_bytes: int = config["replica.fetch.min.bytes"]
        self.partition_max_bytes: int = config["replica.fetch.max.bytes"]
        self.response_max_bytes: int = config["replica.fetch.response.max.bytes"]
        self.backoff_ms: int = config["replica.fetch.backoff.ms"]
        self.timeout = config["replica.socket.timeout.ms"] / 1000
        self.partitions: dict[tuple[str, int], FetchState] = {}
        self._changed = trio.Event()

    def add(self, partition: Partition, leader_epoch: int) -> None:
        self.partitions[(partition.topic.name, partition.index)] = FetchState(partition, leader_epoch)
        self._changed.set()

    def remove(self, partition: Partition) -> None:
        key = (partition.topic.name, partition.index)
        state = self.partitions.get(key)
        if state is not None and state.partition is partition:
            del self.partitions[key]

    def _current(self, state: FetchState) -> bool:
        """Still this partition's fetch state (not removed or replaced meanwhile)."""
        key = (state.partition.topic.name, state.partition.index)
        return self.partitions.get(key) is state

    async def run(self) -> None:
        backoff = self.backoff_ms / 1000
        while True:
            if not self.partitions:
                self._changed = trio.Event()
                await self._changed.wait()
                continue
            try:
                truncating = [s for s in self.partitions.values() if s.truncating]
                if truncating:
                    await self._truncate(truncating)
                now = now_ms()
                ready = [s for s in self.partitions.values() if not s.truncating and s.delayed_until_ms <= now]
                if not ready:
                    waiting = [s.delayed_until_ms for s in self.partitions.values() if not s.truncating]
                    until = min(waiting, default=now + self.backoff_ms)
                    await self._sleep_until_changed(max(until - now, 1) / 1000)
                    continue
                await self._fetch(ready)
            except Exception as e:
                # The leader is unreachable or answered nonsense: back off, then retry.
                log.info("replica fetcher for leader %d: %r; retrying in %.1f s", self.leader_id, e, backoff)
                log.debug("replica fetcher for leader %d failed", self.leader_id, exc_info=True)
                await self._sleep_until_changed(backoff)

    async def _sleep_until_changed(self, seconds: float) -> None:
        self._changed = trio.Event()
        with trio.move_on_after(seconds):
            await self._changed.wait()

    # ---- truncation (KIP-101) -------------------------------------------------------------

    async def _truncate(self, states: list[FetchState]) -> None:
        by_topic = _by_topic(states)
        request = epoch_request.OffsetForLeaderEpochRequest(
            replica_id=self.broker_id,  # type: ignore[arg-type]
            topics=tuple(
                epoch_request.OffsetForLeaderTopic(
                    topic=topic,  # type: ignore[arg-type]
                    partitions=tuple(
                        epoch_request.OffsetForLeaderPartition(
                            partition=i32(s.partition.index),
                            current_leader_epoch=i32(s.leader_epoch),
                            leader_epoch=i32(s.partition.log.latest_epoch),
                        )
                        for s in group
                    ),
                )
                for topic, group in by_topic.items()
            ),
        )
        response = await self.manager.pool.request(
            self.leader_id, OFFSET_FOR_LEADER_EPOCH_KEY, OFFSET_FOR_LEADER_EPOCH_VERSION, request, timeout=self.timeout
        )
        answers = {(t.topic, p.partition): p for t in response.topics for p in t.partitions}
        for state in states:
            if not self._current(state):
                continue
            partition = state.partition
            answer = answers.get((partition.topic.name, partition.index))
            if answer is None:
                continue
            if answer.error_code is not ErrorCode.none:
                self._delay(state, answer.error_code)
                continue
            self._truncate_one(state, answer.leader_epoch, answer.end_offset)

    def _truncate_one(self, state: FetchState, leader_epoch: int, leader_end_offset: int) -> None:
        """Kafka's truncation rule: to where the two logs' epochs agree."""
        partition = state.partition
        log_end = partition.log_end_offset
        if leader_epoch < 0 or leader_end_offset < 0:
            # The leader knows none of our epochs (or we have none): keep up to the high watermark.
            target = partition.high_watermark
        else:
            # The leader's epoch may be older than ours: our own end of that epoch bounds it too.
            _, our_end = partition.log.end_offset_for_epoch(leader_epoch)
            target = min(leader_end_offset, our_end if our_end >= 0 else log_end, log_end)
        if target < log_end:
            log.info(
                "%s-%d: truncating from %d to %d (leader %d, epoch %d ends at %d)",
                partition.topic.name, partition.index, log_end, target, self.leader_id, leader_epoch, leader_end_offset,
            )
            partition.truncate_to(target)
        state.truncating = False

    def _delay(self, state: FetchState, error: ErrorCode) -> None:
        if error in _LEADER_CATCHING_UP:
            # The leader has not yet read the state that makes it leader at our epoch:
            # milliseconds away, so retry soon rather than after replica.fetch.backoff.ms.
            log.debug("%s-%d: leader %d answered %s", state.partition.topic.name, state.partition.index, self.leader_id, error.name)
            state.delayed_until_ms = now_ms() + LEADER_CATCH_UP_BACKOFF_MS
            return
        log.info("%s-%d: leader %d answered %s", state.partition.topic.name, state.partition.index, self.leader_id, error.name)
        state.delayed_until_ms = now_ms() + self.backoff_ms

    # ---- fetching --------------------------------------------------------------------------

    async def _fetch(self, states: list[FetchState]) -> None:
        by_topic = _by_topic(states)
        request = fetch_request.FetchRequest(
            cluster_id=None,
            replica_id=self.broker_id,  # type: ignore[arg-type]
            max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=self.max_wait_ms)),
            min_bytes=i32(self.min_bytes),
            max_bytes=i32(self.response_max_bytes),
            isolation_level=i8(0),
            session_id=i32(0),
            session_epoch=i32(-1),
            topics=tuple(
                fetch_request.FetchTopic(
                    topic=topic,  # type: ignore[arg-type]
                    partitions=tuple(
                        fetch_request.FetchPartition(
                            partition=i32(s.partition.index),
                            current_leader_epoch=i32(s.leader_epoch),
                            fetch_offset=i64(s.partition.log_end_offset),
                            last_fetched_epoch=i32(-1),
                            log_start_offset=i64(s.partition.log_start_offset),
                            partition_max_bytes=i32(self.partition_max_bytes),
                        )
                        for s in group
                    ),
                )
                for topic, group in by_topic.items()
            ),
            forgotten_topics_data=(),
            rack_id="",
        )
        sent = {(s.partition.topic.name, s.partition.index): (s, s.partition.log_end_offset) for s in states}
        # Cancelled when partitions change, so a new one does not wait out a long poll.
        response = await self.manager.pool.request(
            self.leader_id, FETCH_KEY, FETCH_VERSION, request, timeout=self.timeout + self.max_wait_ms / 1000
        )
        if response.error_code is not ErrorCode.none:
            raise RuntimeError(f"fetch failed: {response.error_code.name}")
        for topic in response.responses:
            for data in topic.partitions:
                entry = sent.get((topic.topic, data.partition_index))
                if entry is None:
                    continue
                state, fetch_offset = entry
                if not self._current(state) or state.partition.log_end_offset != fetch_offset:
                    continue  # removed, re-added or truncated meanwhile
                self._apply(state, data)

    def _apply(self, state: FetchState, data: Any) -> None:
        partition = state.partition
        error = data.error_code
        if error is ErrorCode.offset_out_of_range:
            self._out_of_range(state, data)
            return
        if error is not ErrorCode.none:
            self._delay(state, error)
            return
        records = data.records
        if records:
            buf = bytes(records)
            try:
                headers = validate_batches(buf, replicated=True)
            except InvalidBatchError as e:
                log.error("%s-%d: leader %d sent an invalid batch: %s", partition.topic.name, partition.index, self.leader_id, e)
                self._delay(state, ErrorCode.corrupt_message)
                return
            # A partial batch at the end (max bytes) is not in `headers`: validate_batches
            # refuses it, so a leader's answer holds whole batches only.
            if headers:
                partition.append_as_follower(bytearray(buf), headers, now_ms())
        if data.log_start_offset > partition.log_start_offset:
            partition.delete_records_before(min(data.log_start_offset, partition.log_end_offset))
        new_hw = min(data.high_watermark, partition.log_end_offset)
        if new_hw > partition.log.high_watermark:
            partition.log.high_watermark = new_hw
            partition.wake_waiters()

    def _out_of_range(self, state: FetchState, data: Any) -> None:
        """Kafka's handleOutOfRangeError: behind the leader's log start, start over there."""
        partition = state.partition
        leader_start = data.log_start_offset
        if leader_start > partition.log_end_offset:
            log.info("%s-%d: behind the leader's log start %d; starting there",
                     partition.topic.name, partition.index, leader_start)
            partition.truncate_fully_and_start_at(leader_start)
        else:
            # Ahead of the leader (should not happen after truncation): truncate again.
            state.truncating = True
