"""Client quota logic with a fake clock: Kafka's Rate over sample windows (request
quotas) and token bucket (byte rates, controller mutations), throttle times against
Kafka's own worked numbers where Kafka measures the same way (QuotaUtilsTest,
ControllerMutationQuotaManagerTest), entity resolution, shared rates,
un-record, the strict controller mutation quota, and config changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwire.config import BrokerConfig
from kwire.entity_configs import DEFAULT_ENTITY as D
from kwire.entity_configs import LocalEntityConfigs, entity_path
from kwire.quotas import ClientQuotaManager, QuotaType, strict_mutation
from kwire.quotas.manager import INACTIVE_SENSOR_EXPIRATION_SECONDS
from kwire.quotas.rates import Rate, TokenBucket

PRODUCE = QuotaType.PRODUCE
T0 = 1_000_000.0  # the fake clock's start: any value, as a monotonic clock's


def manager(tmp_path: Path, **config: str) -> tuple[ClientQuotaManager, LocalEntityConfigs]:
    store = LocalEntityConfigs(tmp_path)
    return ClientQuotaManager(BrokerConfig(config), store), store


async def set_quota(store: LocalEntityConfigs, path: str, key: QuotaType, value: float | None) -> None:
    await store.alter({path: {key.value: None if value is None else str(value)}})


# --- rates -------------------------------------------------------------------------


def test_rate_of_a_new_stat_is_over_at_least_samples_minus_one_windows() -> None:
    rate = Rate(samples=11, window=1.0)
    rate.record(100, T0)
    # No history: the window is (11 - 1) full windows, not the 0 s elapsed.
    assert rate.window_size(T0) == pytest.approx(10.0)
    assert rate.measure(T0) == pytest.approx(10.0)
    rate.record(100, T0 + 5.5)
    # 200 over the 5.5 s elapsed, raised to the minimum of 10 windows: 10.5 s (the
    # 5 full windows are 5 short of 10).
    assert rate.window_size(T0 + 5.5) == pytest.approx(10.5)
    assert rate.measure(T0 + 5.5) == pytest.approx(200 / 10.5)
    rate.record(100, T0 + 16.0)
    # The first sample's last event is 16 s old (>= 11 windows): purged, not counted.
    assert rate.measure(T0 + 16.0) == pytest.approx(200 / 10.5)


def test_rate_per_window_and_expiry() -> None:
    rate = Rate(samples=3, window=1.0)
    for i in range(3):
        rate.record(30, T0 + i)
    # 90 over 2.5 s: the samples started at T0, T0+1, T0+2; now is half into the third.
    assert rate.window_size(T0 + 2.5) == pytest.approx(2.5)
    assert rate.measure(T0 + 2.5) == pytest.approx(90 / 2.5)
    # A sample is dropped once its last event is samples * window old.
    assert rate.measure(T0 + 3.0) == pytest.approx(60 / 2.0)
    assert rate.measure(T0 + 10.0) == 0.0


def test_rate_ring_reuses_slots_and_keeps_the_overlapping_sample() -> None:
    rate = Rate(samples=2, window=1.0)
    for i in range(20):
        rate.record(10, T0 + i * 0.5)
    # Ring of samples + 1 slots: at most 3 samples, the recent ones.
    assert len(rate.stat._ring) == 3
    now = T0 + 9.5
    # Samples started at T0+8 (events 8, 8.5), T0+9 (9, 9.5); T0+7's last event (7.5)
    # is 2 s old: purged.
    assert rate.measure(now) == pytest.approx(40 / 1.5)


def test_token_bucket_starts_full_and_refills_up_to_the_burst() -> None:
    bucket = TokenBucket(samples=10, window=1.0, quota=10.0, now=T0)
    assert bucket.measure(10.0, T0) == 100.0
    bucket.record(150, 10.0, T0)
    assert bucket.measure(10.0, T0) == -50.0
    assert bucket.measure(10.0, T0 + 2) == -30.0
    assert bucket.measure(10.0, T0 + 100) == 100.0


# --- throttle time -----------------------------------------------------------------


async def test_byte_rate_throttle_is_the_token_deficit(tmp_path: Path) -> None:
    # 11 windows of 1 s, quota 500 B/s: a burst of 5500 B, refilled at 500 B/s.
    quotas, store = manager(tmp_path)
    await set_quota(store, entity_path(client_id=D), PRODUCE, 500)
    now = T0
    for _ in range(10):
        # 400 B/s is under the quota: the bucket stays near full, never throttles.
        assert quotas.record_and_throttle(PRODUCE, "ANONYMOUS", "unknown", 400, now) == 0
        now += 1.0
    # A spike beyond the burst: 500 B short, at 500 B/s that is 1000 ms.
    assert quotas.record_and_throttle(PRODUCE, "ANONYMOUS", "unknown", 6000, now) == 1000
    # Waiting the throttle out refills the deficit, and no more.
    now += 1.0
    assert quotas.record_and_throttle(PRODUCE, "ANONYMOUS", "unknown", 400, now) == 800
    # Idle long enough (0.8 s for the deficit, 11 s for the burst), the burst is back.
    now += 11.8
    assert quotas.record_and_throttle(PRODUCE, "ANONYMOUS", "unknown", 5500, now) == 0


async def test_throttle_time_formula_and_bounds(tmp_path: Path) -> None:
    quotas, store = manager(tmp_path, **{"quota.window.num": "3"})
    await set_quota(store, entity_path(user="alice"), PRODUCE, 50)
    # Burst 3 windows * 50 B/s = 150 B: 200 B leave 50 B owed, one second at 50 B/s.
    assert quotas.record_and_throttle(PRODUCE, "alice", "c", 200, T0) == 1000
    # A huge batch owes in proportion (Kafka does not bound byte-rate throttles).
    assert quotas.record_and_throttle(PRODUCE, "alice", "c", 500, T0) == 11000
    # The request quota: Kafka's formula, at most one window (ClientRequestQuotaManager).
    await set_quota(store, entity_path(user="alice"), QuotaType.REQUEST, 10)
    assert quotas.record_and_throttle(QuotaType.REQUEST, "alice", "c", 5.0, T0) == 1000


async def test_request_quota_counts_handler_seconds_as_percent(tmp_path: Path) -> None:
    quotas, store = manager(tmp_path)
    await set_quota(store, entity_path(client_id="c"), QuotaType.REQUEST, 10)
    # 0.5 s of handler time over the 10 s minimum window: 5 % of a thread.
    assert quotas.record_and_throttle(QuotaType.REQUEST, "u", "c", 0.5, T0) == 0
    assert quotas.measure(QuotaType.REQUEST, "u", "c", T0) == pytest.approx(5.0)
    # 1.5 s more: 20 %: (20 - 10) / 10 * 10 s, bounded by one window (1 s).
    assert quotas.record_and_throttle(QuotaType.REQUEST, "u", "c", 1.5, T0) == 1000


# --- entity resolution -------------------------------------------------------------


LEVELS = [
    (entity_path("alice", "app"), 1.0),
    (entity_path("alice", D), 2.0),
    (entity_path("alice"), 3.0),
    (entity_path(D, "app"), 4.0),
    (entity_path(D, D), 5.0),
    (entity_path(D), 6.0),
    (entity_path(client_id="app"), 7.0),
    (entity_path(client_id=D), 8.0),
]


async def test_resolution_precedence_every_level(tmp_path: Path) -> None:
    quotas, store = manager(tmp_path)
    for path, value in LEVELS:
        await set_quota(store, path, PRODUCE, value * 1000)
    for path, value in LEVELS:
        assert quotas.quota(PRODUCE, "alice", "app") == value * 1000, path
        await set_quota(store, path, PRODUCE, None)
    assert quotas.quota(PRODUCE, "alice", "app") is None
    assert not quotas.enabled(PRODUCE)


async def test_defaults_apply_to_unnamed_users_and_clients(tmp_path: Path) -> None:
    quotas, store = manager(tmp_path)
    await set_quota(store, entity_path(D), PRODUCE, 100)
    await set_quota(store, entity_path("alice"), PRODUCE, 200)
    await set_quota(store, entity_path(client_id=D), QuotaType.FETCH, 300)
    assert quotas.quota(PRODUCE, "bob", "x") == 100
    assert quotas.quota(PRODUCE, "ANONYMOUS", None) == 100
    assert quotas.quota(PRODUCE, "alice", "x") == 200
    # Each quota type resolves on its own keys.
    assert quotas.quota(QuotaType.FETCH, "alice", "x") == 300
    assert quotas.quota(QuotaType.REQUEST, "alice", "x") is None
    assert quotas.record_and_throttle(QuotaType.REQUEST, "alice", "x", 100.0, T0) == 0


async def test_clients_of_a_user_quota_share_one_rate(tmp_path: Path) -> None:
    quotas, store = manager(tmp_path)
    await set_quota(store, entity_path("alice"), PRODUCE, 1000)
    await set_quota(store, entity_path(D), PRODUCE, 1000)
    await set_quota(store, entity_path(client_id=D), QuotaType.FETCH, 1000)
    quotas.record_and_throttle(PRODUCE, "alice", "one", 5000, T0)
    quotas.record_and_throttle(PRODUCE, "alice", "two", 5000, T0)
    # users/alice: one bucket (11000 B) for both client ids, 1000 B left.
    assert quotas.measure(PRODUCE, "alice", "one", T0) == pytest.approx(1000)
    assert quotas.measure(PRODUCE, "alice", "two", T0) == pytest.approx(1000)
    # users/<default>: a bucket per user.
    quotas.record_and_throttle(PRODUCE, "bob", "one", 5000, T0)
    assert quotas.measure(PRODUCE, "bob", "one", T0) == pytest.approx(6000)
    assert quotas.measure(PRODUCE, "carol", "one", T0) == 0.0  # nothing measured yet
    # clients/<default>: a bucket per client id, whoever the user.
    assert quotas.record_fetch("alice", "one", 8000, T0) == 0
    assert quotas.record_fetch("bob", "two", 8000, T0) == 0
    assert quotas.measure(QuotaType.FETCH, "carol", "one", T0) == pytest.approx(3000)
    # Together over the quota: the second client of alice is throttled.
    assert quotas.record_and_throttle(PRODUCE, "alice", "two", 2000, T0) == 1000


async def test_unrecord_takes_back_a_throttled_fetch(tmp_path: Path) -> None:
    quotas, store = manager(tmp_path)
    await set_quota(store, entity_path(client_id="c"), QuotaType.FETCH, 100)
    assert quotas.max_value_in_quota_window(QuotaType.FETCH, "u", "c") == 100 * 10
    assert quotas.max_value_in_quota_window(QuotaType.FETCH, "u", "other") == float("inf")
    assert quotas.record_fetch("u", "c", 900, T0) == 0
    throttle = quotas.record_fetch("u", "c", 600, T0)
    assert throttle == 4000  # 1100 - 900 - 600 = -400 B, at 100 B/s
    quotas.unrecord(QuotaType.FETCH, "u", "c", 600, T0)
    assert quotas.measure(QuotaType.FETCH, "u", "c", T0) == pytest.approx(200)
    assert quotas.record_fetch("u", "c", 100, T0 + 0.5) == 0


async def test_config_change_resolves_again_and_keeps_rates(tmp_path: Path) -> None:
    quotas, store = manager(tmp_path)
    await set_quota(store, entity_path(client_id="c"), PRODUCE, 1000)
    assert quotas.record_and_throttle(PRODUCE, "u", "c", 8000, T0) == 0
    await set_quota(store, entity_path(client_id="c"), PRODUCE, 500)
    # The same bucket (3000 B left), the lower quota: 4000 B owe 1000 B, 2 s at 500 B/s.
    assert quotas.record_and_throttle(PRODUCE, "u", "c", 4000, T0) == 2000
    # A more specific entity: a new bucket under the user quota.
    await set_quota(store, entity_path("u"), PRODUCE, 2000)
    assert quotas.quota(PRODUCE, "u", "c") == 2000
    assert quotas.record_and_throttle(PRODUCE, "u", "c", 8000, T0) == 0
    # Other keys of the entity (SCRAM credentials) are no quota.
    await store.alter({entity_path("u"): {"SCRAM-SHA-256": "salt=..."}})
    assert quotas.quota(PRODUCE, "u", "c") == 2000
    await set_quota(store, entity_path("u"), PRODUCE, None)
    await set_quota(store, entity_path(client_id="c"), PRODUCE, None)
    assert not quotas.enabled(PRODUCE)
    assert quotas.record_and_throttle(PRODUCE, "u", "c", 1e12, T0) == 0


async def test_quotas_in_the_store_apply_at_start_and_idle_rates_expire(tmp_path: Path) -> None:
    _, store = manager(tmp_path)
    await set_quota(store, entity_path(client_id=D), PRODUCE, 100)
    quotas = ClientQuotaManager(BrokerConfig(), LocalEntityConfigs(tmp_path))
    assert quotas.quota(PRODUCE, "u", "c") == 100
    quotas.record_and_throttle(PRODUCE, "u", "c", 10, T0)
    sensors = quotas._types[PRODUCE].sensors
    assert ("", "c") in sensors
    quotas.record_and_throttle(PRODUCE, "u", "d", 10, T0 + INACTIVE_SENSOR_EXPIRATION_SECONDS)
    assert ("", "c") not in sensors and ("", "d") in sensors


# --- controller mutations ----------------------------------------------------------


async def test_strict_mutation_quota_admits_a_burst_then_refuses(tmp_path: Path) -> None:
    # ControllerMutationQuotaManagerTest.testControllerMutationQuotaViolation: quota
    # 10/s, 10 windows of 1 s (a burst of 100 tokens).
    quotas, store = manager(tmp_path, **{"controller.quota.window.num": "10"})
    await set_quota(store, entity_path("u", "c"), QuotaType.CONTROLLER_MUTATION, 10)
    now = T0
    for _ in range(10):
        assert quotas.check_mutation("u", "c", 10, now) == 0
        now += 1.0
    assert quotas.check_mutation("u", "c", 110, now) == 0  # 100 tokens: admitted
    assert quotas.check_mutation("u", "c", 110, now) == 1000  # -10 tokens: refused
    now += 1.0
    assert quotas.check_mutation("u", "c", 110, now) == 0
    # Other clients are not limited.
    assert quotas.check_mutation("u", "other", 1000, now) == 0


async def test_permissive_mutation_quota_records_and_throttles(tmp_path: Path) -> None:
    # testPermissiveControllerMutationQuota: quota 10/s, 10 windows of 1 s.
    quotas, store = manager(tmp_path, **{"controller.quota.window.num": "10"})
    await set_quota(store, entity_path("u"), QuotaType.CONTROLLER_MUTATION, 10)
    assert quotas.check_mutation("u", "c", 90, T0, strict=False) == 0
    assert quotas.check_mutation("u", "c", 90, T0, strict=False) == 8000
    assert quotas.check_mutation("u", "c", 90, T0, strict=False) == 17000
    assert quotas.record_and_throttle(QuotaType.CONTROLLER_MUTATION, "u", "c", 0, T0 + 5) == 12000
    # Strict on the same bucket: refused until it is back at 0.
    assert quotas.check_mutation("u", "c", 1, T0 + 5, strict=True) == 12000
    assert quotas.check_mutation("u", "c", 1, T0 + 17, strict=True) == 0


def test_strict_since_versions() -> None:
    assert strict_mutation(19, 6) and not strict_mutation(19, 5)
    assert strict_mutation(20, 5) and not strict_mutation(20, 4)
    assert strict_mutation(37, 3) and not strict_mutation(37, 2)
    assert not strict_mutation(0, 9)


# --- a client that honours throttle_time_ms ----------------------------------------


@pytest.mark.parametrize("quota_type", [QuotaType.PRODUCE, QuotaType.FETCH])
async def test_throttled_client_converges_to_the_quota(tmp_path: Path, quota_type: QuotaType) -> None:
    quotas, store = manager(tmp_path)
    quota = 200_000.0
    await set_quota(store, entity_path(client_id="loader"), quota_type, quota)
    batch = 16_384
    start = now = T0
    sent = 0.0
    steady = start + 20.0  # after the first burst (11 windows of the quota)
    while now - start < 120.0:
        throttle_ms = quotas.record_and_throttle(quota_type, "ANONYMOUS", "loader", batch, now)
        if now >= steady:
            sent += batch
        # The client waits out its throttle time (KIP-219) and takes 1 ms per request.
        now += throttle_ms / 1000.0 + 0.001
    observed = sent / (now - steady)
    assert abs(observed - quota) / quota < 0.02, observed
    # Unthrottled, the same client would have sent at 16 MB/s.
    assert batch / 0.001 > 50 * quota
