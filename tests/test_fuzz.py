"""Property tests against a real broker process: every served API and version.

Requests come from kio's hypothesis strategies, written by kio, then mutated
(truncated, a length or count lied about, bytes flipped or inserted, a body of
another version, random bytes) and sent with a real request header. After each
example the broker must be alive, the connection must have been answered or
closed within the deadline (never a hang), and a fresh connection's ApiVersions
must still answer. KWIRE_FUZZ_EXAMPLES raises the budget (default 300 examples per test, a few
seconds each); tests/fuzz/run_long.py is the long run.
"""

from __future__ import annotations

import os
import random

from fuzz.frames import MUTATIONS, SERVED, request_body, request_frame_payload, strategy_for, tame
from fuzz.frames import mutate as mutate_body
from fuzz.wire import ANSWERED, CLOSED, api_versions_answers, probe
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("KWIRE_FUZZ_EXAMPLES", "300"))
DEADLINE = 5.0  # seconds a frame may take to be answered or closed

FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _assert_survived(broker, outcome: str, what: str) -> None:
    assert broker.process.poll() is None, f"broker died on {what}:\n{broker.log_text()}"
    assert outcome in (ANSWERED, CLOSED), f"{what}: no answer and no close within {DEADLINE}s"
    assert api_versions_answers(broker.port), f"a fresh ApiVersions got no answer after {what}"


@FUZZ_SETTINGS
@given(data=st.data(), api=st.sampled_from(SERVED), how=st.sampled_from(MUTATIONS), seed=st.integers(0, 2**32 - 1))
def test_mutated_requests_never_kill_or_hang_the_broker(broker, data: st.DataObject, api: tuple[int, int], how: str, seed: int) -> None:
    api_key, version = api
    body = request_body(tame(data.draw(strategy_for(api_key, version), label="request")))
    assume(body is not None)
    other = b""
    if how == "other_version":
        other_version = data.draw(st.sampled_from([v for k, v in SERVED if k == api_key]), label="other version")
        other = request_body(tame(data.draw(strategy_for(api_key, other_version)))) or b""
    mutated = mutate_body(body, how, random.Random(seed), other)
    outcome, _ = probe(broker.port, request_frame_payload(api_key, version, 1, mutated), DEADLINE)
    _assert_survived(broker, outcome, f"API {api_key} v{version} {how}: {mutated.hex()}")
    if how == "none":
        # A request kio wrote, with nothing changed, is answered.
        assert outcome == ANSWERED, f"API {api_key} v{version}: a valid request was not answered: {body.hex()}"


@FUZZ_SETTINGS
@given(api=st.sampled_from(SERVED), body=st.binary(max_size=80))
def test_random_bodies_never_kill_or_hang_the_broker(broker, api: tuple[int, int], body: bytes) -> None:
    api_key, version = api
    outcome, _ = probe(broker.port, request_frame_payload(api_key, version, 1, body), DEADLINE)
    _assert_survived(broker, outcome, f"API {api_key} v{version}: {body.hex()}")
