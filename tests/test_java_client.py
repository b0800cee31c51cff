"""The Java client (kafka-clients 3.9) against a real broker: produce, fetch,
idempotence, offsets, groups. It runs the compat matrix's Java driver
(compat/java/Compat.java), which the harness installs and compiles."""

from __future__ import annotations

import json
import subprocess

import pytest

from compat.clients import _java, install_java

SCENARIOS = [
    "metadata",
    "produce_keyed",
    "consume_earliest",
    "compression_lz4",
    "list_offsets",
    "idempotent",
    "commit_resume",
    "group_split",
]


@pytest.fixture(scope="module")
def java_ready() -> None:
    error = install_java()
    if error is not None:
        pytest.fail(f"cannot install the Java client: {error}")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_java_client(java_ready: None, broker, scenario: str) -> None:
    result = subprocess.run(
        _java(scenario, broker.bootstrap, f"java-{scenario}"),
        capture_output=True, text=True, timeout=180,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from the Java driver:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    outcome = json.loads(lines[-1])
    assert outcome["status"] == "pass", outcome["detail"]
