"""Client quotas as Kafka's ClientQuotaManager enforces them, sans-IO (`now` in seconds).

Four quota types, each a config key of the user / client-id entities
(kwire.entity_configs): producer_byte_rate (bytes produced per second),
consumer_byte_rate (bytes fetched per second), request_percentage (handler time, as a
percentage of one thread), controller_mutation_rate (partitions created or deleted per
second). Each type resolves a client to the most specific configured entity, in Kafka's
order (DefaultQuotaCallback):

    users/<user>/clients/<client-id>      users/<user>/clients/<default>
    users/<user>                          users/<default>/clients/<client-id>
    users/<default>/clients/<default>     users/<default>
    clients/<client-id>                   clients/<default>

The rate is kept per resolved entity, as Kafka's sensor names are: every client id of
a user with a users/<user> quota shares one rate; a users/<default> quota gives each
user its own rate; a clients/<default> quota gives each client id its own.

Usage (the broker's handlers; `now` is trio.current_time() or time.monotonic()):

    quotas = ClientQuotaManager(broker.config, broker.entity_configs)
    user = context.principal.name            # User:alice -> "alice"; "ANONYMOUS"

    # Produce: after appending, throttle by the request's size.
    ms = quotas.record_and_throttle(QuotaType.PRODUCE, user, context.client_id, size, now)
    # Fetch: cap max_bytes, then record the response size; when throttled, un-record
    # it and answer an empty fetch with throttle_time_ms (KafkaApis.handleFetchRequest).
    max_bytes = min(max_bytes, quotas.max_value_in_quota_window(QuotaType.FETCH, user, cid))
    ms = quotas.record_fetch(user, cid, response_size, now)
    if ms > 0:
        quotas.unrecord(QuotaType.FETCH, user, cid, response_size, now)
    # Request quota: seconds the handler ran (REQUEST values are seconds).
    ms = max(ms, quotas.record_and_throttle(QuotaType.REQUEST, user, cid, handler_s, now))
    # CreateTopics / CreatePartitions / DeleteTopics: per topic, before acting.
    strict = strict_mutation(api_key, api_version)
    ms = quotas.check_mutation(user, cid, partitions, now, strict=strict)
    if strict and ms > 0:   # refused: THROTTLING_QUOTA_EXCEEDED, throttle_time_ms = ms
        ...

`record_and_throttle` costs one dict lookup when no quota of its type is configured.
The manager follows the entity config store (subscribe): a changed quota applies to the
next request, and the rates measured so far are kept.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Iterable, Mapping

from kwire.config import BrokerConfig
from kwire.entity_configs import DEFAULT_ENTITY, EntityConfigStore, parse_entity_path
from kwire.quotas.rates import Rate, TokenBucket

log = logging.getLogger(__name__)

D = DEFAULT_ENTITY


class QuotaType(enum.Enum):
    """Kafka's client quota types; the value is the entity config key."""

    PRODUCE = "producer_byte_rate"
    FETCH = "consumer_byte_rate"
    REQUEST = "request_percentage"
    CONTROLLER_MUTATION = "controller_mutation_rate"


QUOTA_KEYS: frozenset[str] = frozenset(t.value for t in QuotaType)

# The API versions from which a controller mutation over the quota is refused with
# THROTTLING_QUOTA_EXCEEDED (KIP-599); older versions are only throttled.
# CreateTopics (19) v6, DeleteTopics (20) v5, CreatePartitions (37) v3.
STRICT_MUTATION_SINCE: dict[int, int] = {19: 6, 20: 5, 37: 3}

# Kafka's ClientQuotaManager.InactiveSensorExpirationTimeSeconds: a rate with no
# record for an hour is dropped; the sweep runs at most once a minute.
INACTIVE_SENSOR_EXPIRATION_SECONDS = 3600.0
_SWEEP_INTERVAL_SECONDS = 60.0
# Client ids are the client's choice: past this many the resolution cache starts over.
_MAX_RESOLVED = 100_000

# Entity key: (user, client id), None where the entity has no such part.
Entity = tuple[str | None, str | None]
# Sensor key, Kafka's metric tags: (user, client id), "" for a part not in the key.
Tags = tuple[str, str]


def strict_mutation(api_key: int, api_version: int) -> bool:
    """Whether this request's controller mutations are checked strictly."""
    since = STRICT_MUTATION_SINCE.get(api_key)
    return since is not None and api_version >= since


def quota_metric_tags(quotas: Mapping[Entity, float], user: str, client_id: str) -> Tags:
    """Kafka's DefaultQuotaCallback.quotaMetricTags: the sensor a client records into."""
    if (user, client_id) in quotas or (user, D) in quotas:
        return (user, client_id)
    if (user, None) in quotas:
        return (user, "")
    if (D, client_id) in quotas or (D, D) in quotas:
        return (user, client_id)
    if (D, None) in quotas:
        return (user, "")
    return ("", client_id)


def quota_limit(quotas: Mapping[Entity, float], tags: Tags) -> float | None:
    """Kafka's DefaultQuotaCallback.quotaLimit: the quota of a sensor, None if none."""
    user, client_id = tags
    if user and client_id:
        candidates: Iterable[Entity] = ((user, client_id), (user, D), (D, client_id), (D, D))
    elif user:
        candidates = ((user, None), (D, None))
    elif client_id:
        candidates = ((None, client_id), (None, D))
    else:
        return None
    for entity in candidates:
        limit = quotas.get(entity)
        if limit is not None:
            return limit
    return None


class _TypeQuotas:
    """The configured quotas of one type and the rates measured under them."""

    __slots__ = ("quota_type", "quotas", "resolved", "sensors", "last_sweep")

    def __init__(self, quota_type: QuotaType, quotas: dict[Entity, float]) -> None:
        self.quota_type = quota_type
        self.quotas = quotas
        self.resolved: dict[tuple[str, str], tuple[Tags, float | None]] = {}
        self.sensors: dict[Tags, Rate | TokenBucket] = {}
        self.last_sweep = -math.inf

    def resolve(self, user: str, client_id: str) -> tuple[Tags, float | None]:
        key = (user, client_id)
        found = self.resolved.get(key)
        if found is None:
            tags = quota_metric_tags(self.quotas, user, client_id)
            found = (tags, quota_limit(self.quotas, tags))
            if len(self.resolved) >= _MAX_RESOLVED:
                self.resolved.clear()
            self.resolved[key] = found
        return found

    def sweep(self, now: float) -> None:
        if now - self.last_sweep < _SWEEP_INTERVAL_SECONDS:
            return
        self.last_sweep = now
        idle = [t for t, s in self.sensors.items()
                if now - s.last_event() >= INACTIVE_SENSOR_EXPIRATION_SECONDS]
        for tags in idle:
            del self.sensors[tags]


class ClientQuotaManager:
    """Kafka's client quota managers (produce, fetch, request, controller mutation) for
    one broker, fed by the entity config store."""

    def __init__(self, config: BrokerConfig, entity_configs: EntityConfigStore) -> None:
        self._samples = int(config["quota.window.num"])
        self._window = float(config["quota.window.size.seconds"])
        self._mutation_samples = int(config["controller.quota.window.num"])
        self._mutation_window = float(config["controller.quota.window.size.seconds"])
        self._store = entity_configs
        # Only the types with at least one configured quota: the fast path's lookup.
        self._types: dict[QuotaType, _TypeQuotas] = {}
        self._rebuild()
        entity_configs.subscribe(self._entity_changed)

    # --- public API -----------------------------------------------------------------

    def enabled(self, quota_type: QuotaType) -> bool:
        """Whether any quota of this type is configured (else nothing needs measuring)."""
        return quota_type in self._types

    def quota(self, quota_type: QuotaType, principal_name: str, client_id: str | None) -> float | None:
        """The quota that applies to this client, None when none does."""
        state = self._types.get(quota_type)
        if state is None:
            return None
        return state.resolve(principal_name, client_id or "")[1]

    def record_and_throttle(
        self, quota_type: QuotaType, principal_name: str, client_id: str | None,
        value: float, now: float,
    ) -> int:
        """Record `value` for this client and return how long to throttle it (ms, 0 when
        within its quota or when no quota applies).

        `value` is bytes for PRODUCE and FETCH, seconds of handler time for REQUEST,
        partitions for CONTROLLER_MUTATION (recorded permissively: see check_mutation).
        REQUEST is measured as Kafka does, a Rate over quota.window.num samples, and
        throttles (rate - quota) / quota * the rate's window, at most one window
        (ClientRequestQuotaManager). The byte rates use Kafka's TokenBucket (as its
        controller mutation quota does, KIP-599), with the same burst, quota.window.num *
        quota.window.size.seconds * quota, and throttle -tokens / quota. Why not Kafka's
        Rate for them: a backlogged client's burst fills one sample, and when that sample
        leaves the window 11 s later the rate drops to nothing and the next burst is
        admitted whole; measured, a 200 kB/s producer alternated 2 MB bursts with 11 s of
        near silence, anywhere from 100 to 300 kB/s over 20 s. The bucket admits the
        same first burst, then exactly the quota.
        """
        state = self._types.get(quota_type)
        if state is None:
            return 0
        if quota_type is QuotaType.CONTROLLER_MUTATION:
            return self.check_mutation(principal_name, client_id, value, now, strict=False)
        tags, limit = state.resolve(principal_name, client_id or "")
        if quota_type is not QuotaType.REQUEST:
            if limit is None:
                return 0
            bucket = self._bucket(state, tags, limit, now)
            bucket.record(value, limit, now)
            return round(-bucket.tokens / limit * 1000.0) if bucket.tokens < 0 else 0
        rate = self._rate(state, tags, now)
        if quota_type is QuotaType.REQUEST:
            value *= 100.0  # percent of one thread, per second of wall time
        rate.record(value, now)
        if limit is None:
            return 0
        measured = rate.measure(now)
        if measured <= limit:
            return 0
        window = rate.window_size(now)
        throttle_ms = round((measured - limit) / limit * window * 1000.0)
        bound = self._window if quota_type is QuotaType.REQUEST else self._samples * self._window
        return int(min(throttle_ms, round(bound * 1000.0)))

    def record_fetch(self, principal_name: str, client_id: str | None, value: float, now: float) -> int:
        """Record the bytes of a fetch response; the throttle time (ms). A throttled fetch
        is answered empty: the caller then un-records the bytes with `unrecord`."""
        return self.record_and_throttle(QuotaType.FETCH, principal_name, client_id, value, now)

    def unrecord(
        self, quota_type: QuotaType, principal_name: str, client_id: str | None,
        value: float, now: float,
    ) -> None:
        """Take back a recorded value that was not sent (Kafka's unrecordQuotaSensor)."""
        state = self._types.get(quota_type)
        if state is None or quota_type is QuotaType.CONTROLLER_MUTATION:
            return
        tags, _ = state.resolve(principal_name, client_id or "")
        if quota_type is QuotaType.REQUEST:
            self._rate(state, tags, now).record(-value * 100.0, now)
            return
        _, limit = state.resolve(principal_name, client_id or "")
        if limit is not None:
            self._bucket(state, tags, limit, now).record(-value, limit, now)

    def max_value_in_quota_window(
        self, quota_type: QuotaType, principal_name: str, client_id: str | None,
    ) -> float:
        """The most one request may carry within the quota: quota * (windows - 1) *
        window seconds (Kafka caps a fetch's max_bytes with it); inf without a quota."""
        limit = self.quota(quota_type, principal_name, client_id)
        if limit is None:
            return math.inf
        return limit * (self._samples - 1) * self._window

    def check_mutation(
        self, principal_name: str, client_id: str | None, partitions: float, now: float,
        *, strict: bool = True,
    ) -> int:
        """Count `partitions` created or deleted against controller_mutation_rate.

        strict (StrictControllerMutationQuota, new request versions): when the quota is
        already exceeded (the token bucket is below zero) nothing is recorded and the
        throttle time is returned (> 0): the caller refuses this topic with
        THROTTLING_QUOTA_EXCEEDED. Otherwise the mutation is admitted, however large (a
        burst may take the bucket below zero), recorded, and 0 returned.
        permissive (old versions): always recorded; the throttle time if the bucket is
        now below zero, else 0.
        """
        state = self._types.get(QuotaType.CONTROLLER_MUTATION)
        if state is None:
            return 0
        tags, limit = state.resolve(principal_name, client_id or "")
        if limit is None:
            return 0
        bucket = self._bucket(state, tags, limit, now)
        if strict:
            tokens = bucket.measure(limit, now)
            if tokens < 0:
                # At least 1 ms: 0 means admitted to the caller.
                return max(1, round(-tokens / limit * 1000.0))
            bucket.record(partitions, limit, now)
            return 0
        bucket.record(partitions, limit, now)
        tokens = bucket.measure(limit, now)
        return round(-tokens / limit * 1000.0) if tokens < 0 else 0

    def measure(
        self, quota_type: QuotaType, principal_name: str, client_id: str | None, now: float,
    ) -> float:
        """The client's current rate (per second; percent for REQUEST; for
        CONTROLLER_MUTATION the tokens left); 0 when nothing is measured."""
        state = self._types.get(quota_type)
        if state is None:
            return 0.0
        tags, limit = state.resolve(principal_name, client_id or "")
        sensor = state.sensors.get(tags)
        if sensor is None:
            return 0.0
        if isinstance(sensor, TokenBucket):
            return sensor.measure(limit or 0.0, now)
        return sensor.measure(now)

    # --- internals ------------------------------------------------------------------

    def _rate(self, state: _TypeQuotas, tags: Tags, now: float) -> Rate:
        sensor = state.sensors.get(tags)
        if sensor is None:
            state.sweep(now)
            sensor = state.sensors[tags] = Rate(self._samples, self._window)
        assert isinstance(sensor, Rate)
        return sensor

    def _bucket(self, state: _TypeQuotas, tags: Tags, limit: float, now: float) -> TokenBucket:
        sensor = state.sensors.get(tags)
        if sensor is None:
            state.sweep(now)
            if state.quota_type is QuotaType.CONTROLLER_MUTATION:
                samples, window = self._mutation_samples, self._mutation_window
            else:
                samples, window = self._samples, self._window
            sensor = state.sensors[tags] = TokenBucket(samples, window, limit, now)
        assert isinstance(sensor, TokenBucket)
        return sensor

    def _entity_changed(self, entity: str) -> None:
        self._rebuild()

    def _rebuild(self) -> None:
        """Read every quota from the store; types whose quotas changed resolve clients
        again, their measured rates are kept (Kafka updates the sensors' quota)."""
        found: dict[QuotaType, dict[Entity, float]] = {}
        for path, configs in self._store.items():
            keys = QUOTA_KEYS.intersection(configs)
            if not keys:
                continue
            try:
                entity = parse_entity_path(path)
            except ValueError:
                continue
            for key in keys:
                try:
                    value = float(configs[key])
                except ValueError:
                    log.warning("ignoring %s=%r of %s: not a number", key, configs[key], path)
                    continue
                if value > 0 and math.isfinite(value):
                    found.setdefault(QuotaType(key), {})[entity] = value
        types: dict[QuotaType, _TypeQuotas] = {}
        for quota_type, quotas in found.items():
            state = self._types.get(quota_type)
            if state is None:
                state = _TypeQuotas(quota_type, quotas)
            elif state.quotas != quotas:
                state.quotas = quotas
                state.resolved.clear()
            types[quota_type] = state
        for quota_type in self._types.keys() - types.keys():
            log.info("no %s quota left", quota_type.value)
        for quota_type in types.keys() - self._types.keys():
            log.info("%s quotas enabled", quota_type.value)
        self._types = types

