"""The clients of one flow's two clusters (confluent-kafka, configured from the MM2 file's
client settings) and every wait on them: waits are cut in slices of WAIT_SLICE that look for
the stop, so that SIGTERM ends the mirror within seconds even while a cluster is down, not
after each blocked call's whole timeout. While stopping, a flush still gets
STOP_FLUSH_TIMEOUT, enough for clusters that answer to acknowledge what is in flight."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from kwire.mirror.config import Flow

log = logging.getLogger("kwire.mirror")

# How long an admin request or a flush may take before the flow retries later.
REQUEST_TIMEOUT = 15.0
RETRY_BACKOFF = 5.0
# One probe of a cluster the mirror waits for at start (SIGTERM is seen between probes).
WAIT_PROBE_TIMEOUT = 1.0
# Slices of the waits on a cluster, and how long a flush may take once stopping (seconds).
WAIT_SLICE = 0.5
STOP_FLUSH_TIMEOUT = 2.0
# The same error (of a client, of a partition's reads) is logged at most this often (s).
ERROR_LOG_INTERVAL = 60.0


class MirrorError(Exception):
    """The flow cannot go on (a fenced transactional producer, a refused configuration)."""


class FlowClients:
    """Makes the clients of `flow` ("source" or "target" side; "consumer", "producer" or
    "admin" role) and waits on them, stop-aware."""

    def __init__(
        self,
        flow: Flow,
        should_stop: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.flow = flow
        self.should_stop = should_stop
        self.clock = clock
        self._error_logged: dict[tuple[Any, ...], float] = {}

    def should_log(self, what: tuple[Any, ...]) -> bool:
        """True at most once per ERROR_LOG_INTERVAL for the same `what`: errors a client
        keeps repeating while they last (a refused login, a partition's read error)."""
        now = self.clock()
        if now < self._error_logged.get(what, 0.0):
            return False
        self._error_logged[what] = now + ERROR_LOG_INTERVAL
        return True

    def config(self, side: str, role: str, **fixed: Any) -> dict[str, Any]:
        from kwire.cli.common import librdkafka_config

        clients = self.flow.source_clients if side == "source" else self.flow.target_clients
        config: dict[str, Any] = {"client.id": f"kwire-mirror-{self.flow.name}-{role}"}
        config.update(librdkafka_config(clients[role]))
        # librdkafka's own log lines repeat what error_cb reports (and the mirror logs).
        config.setdefault("log_level", 0)
        if role == "consumer":
            # librdkafka (>= 2.4) stops fetching for fetch.queue.backoff.ms (1 s by default)
            # whenever its queue is over queued.min.messages: the copy loop drains slower than
            # a fetch fills, so the default turns copying into a series of pauses (a mirror
            # copied 100k records/s with it, 200k+ with 10 ms: bench/mirror.py).
            config.setdefault("fetch.queue.backoff.ms", 10)
        config["error_cb"] = partial(self._client_error, side)
        config.update(fixed)
        return config

    def _client_error(self, side: str, error: Any) -> None:
        from confluent_kafka import KafkaError

        if error.fatal():
            log.error("%s: %s cluster: fatal: %s", self.flow.name, side, error.str())
        elif error.code() not in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN):
            # Once a minute per error: librdkafka reports a refused login at every retry.
            if self.should_log(("client", side, error.code())):
                log.warning("%s: %s cluster: %s", self.flow.name, side, error.str())

    def make(self, factory: Any, side: str, role: str, **fixed: Any) -> Any:
        from confluent_kafka import KafkaException

        try:
            return factory(self.config(side, role, **fixed))
        except (KafkaException, ValueError, TypeError) as e:
            reason = e.args[0].str() if e.args and hasattr(e.args[0], "str") else str(e)
            cluster = self.flow.source if side == "source" else self.flow.target
            raise MirrorError(f"{self.flow.name}: {cluster} {role} settings: {reason}") from None

    def wait_for(self, admin: Any, alias: str) -> None:
        """Block until the cluster answers a Metadata request (or the mirror is stopped)."""
        from confluent_kafka import KafkaException

        waited = False
        next_log = 0.0
        while not self.should_stop():
            # Probes of a second, not REQUEST_TIMEOUT: against a cluster that is down, a
            # probe waits its whole timeout, which kept SIGTERM waiting 15 s and the
            # "waiting" line unsaid as long. librdkafka goes on connecting between probes.
            began = time.monotonic()
            try:
                admin.list_topics(timeout=WAIT_PROBE_TIMEOUT)
                if waited:
                    log.info("%s: cluster %s is reachable", self.flow.name, alias)
                return
            except KafkaException as e:
                # An AdminClient hands its errors (a refused login ...) to error_cb only
                # when polled: the reason, logged before the line saying what waits.
                admin.poll(0)
                now = time.monotonic()
                if now >= next_log:
                    log.warning(
                        "%s: waiting for cluster %s: %s", self.flow.name, alias, e.args[0].str()
                    )
                    next_log = now + RETRY_BACKOFF
                waited = True
                self.sleep(began + WAIT_PROBE_TIMEOUT - now)

    # Waits on a cluster are cut in slices of WAIT_SLICE, so that a stop is seen while a
    # cluster is down: SIGTERM must end the mirror within seconds, not after each blocked
    # call's whole timeout. While stopping, a flush still gets STOP_FLUSH_TIMEOUT, enough
    # for clusters that answer to acknowledge what is in flight.

    def flush(self, producer: Any, timeout: float = REQUEST_TIMEOUT) -> int:
        """producer.flush, stop-aware; the number of messages still in flight."""
        began = time.monotonic()
        while True:
            remaining = producer.flush(WAIT_SLICE)
            if remaining == 0:
                return 0
            limit = min(timeout, STOP_FLUSH_TIMEOUT) if self.should_stop() else timeout
            if time.monotonic() - began >= limit:
                return remaining

    def result(self, future: Any, timeout: float = REQUEST_TIMEOUT + 5) -> Any:
        """An admin future's result, stop-aware: TimeoutError when it takes too long or
        the mirror is stopping."""
        import concurrent.futures

        deadline = time.monotonic() + timeout
        while True:
            try:
                return future.result(timeout=WAIT_SLICE)
            except concurrent.futures.TimeoutError:
                if self.should_stop():
                    raise TimeoutError("no answer before the mirror stopped") from None
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no answer within {timeout:g} s") from None

    def metadata(self, client: Any, topic: str | None = None) -> Any:
        """A Metadata answer (list_topics), stop-aware; KafkaException when none came."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + REQUEST_TIMEOUT
        while True:
            try:
                return client.list_topics(topic, timeout=WAIT_SLICE)
            except KafkaException:
                if self.should_stop() or time.monotonic() >= deadline:
                    raise

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.should_stop() and time.monotonic() < deadline:
            time.sleep(min(0.2, deadline - time.monotonic()))

    def retrying(self, what: str, call: Callable[[], Any]) -> Any:
        from confluent_kafka import KafkaException

        while True:
            try:
                return call()
            except KafkaException as e:
                error = e.args[0]
                if error.fatal() or not error.retriable():
                    raise MirrorError(f"{self.flow.name}: cannot {what}: {error.str()}") from None
                if self.should_stop():
                    raise MirrorError(f"{self.flow.name}: stopped before it could {what}") from None
                log.warning("%s: cannot %s yet: %s", self.flow.name, what, error.str())
                self.sleep(RETRY_BACKOFF)

    def create_topics(self, admin: Any, alias: str, topics: list[Any], required: bool) -> list[str]:
        """Create what does not exist yet; back the names that exist now. A refusal of an
        internal topic (required) stops the mirror with Kafka's reason."""
        from confluent_kafka import KafkaError, KafkaException

        if not topics:
            return []
        exist = []
        futures = admin.create_topics(topics, request_timeout=REQUEST_TIMEOUT)
        for name, future in futures.items():
            try:
                self.result(future)
                exist.append(name)
                log.info("%s: created %s on %s", self.flow.name, name, alias)
            except KafkaException as e:
                error = e.args[0]
                if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    exist.append(name)
                    continue
                message = f"{self.flow.name}: cannot create {name} on {alias}: {error.name()}: {error.str()}"
                if required:
                    raise MirrorError(message) from None
                log.error("%s", message)
            except Exception as e:  # a timeout: retried at the next refresh
                log.warning("%s: cannot create %s on %s yet: %s", self.flow.name, name, alias, e)
        return exist

    def read_to_end(self, consumer: Any, partitions: list[Any]) -> Iterable[Any]:
        """Every record of `partitions` up to their current end (librdkafka's
        partition-EOF events, which also come after a trailing transaction marker)."""
        from confluent_kafka import KafkaError

        remaining = {(tp.topic, tp.partition) for tp in partitions}
        consumer.assign(partitions)
        deadline = time.monotonic() + 4 * REQUEST_TIMEOUT
        while remaining:
            if time.monotonic() > deadline:
                raise MirrorError(
                    f"{self.flow.name}: could not read {sorted(remaining)} to the end "
                    f"within {4 * REQUEST_TIMEOUT:g} s"
                )
            if self.should_stop():
                raise MirrorError(f"{self.flow.name}: stopped while reading its stored offsets")
            for message in consumer.consume(1000, 0.5):
                error = message.error()
                if error is None:
                    yield message
                elif error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard((message.topic(), message.partition()))
                else:
                    log.warning("%s: reading stored offsets: %s", self.flow.name, error.str())

    def produce(
        self,
        producer: Any,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        callback: Any,
        **record: Any,
    ) -> None:
        """producer.produce (`record`: partition, timestamp, headers), waiting while its
        queue is full for the cluster to acknowledge some."""
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=callback, **record)
                return
            except BufferError:
                producer.poll(0.1)
