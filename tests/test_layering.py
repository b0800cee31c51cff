"""The coordinators reach the log only through their PartitionWriter: none of their
modules may import kwire.broker (which imports them), so that a cluster's writer can
replace the local one (issue 9). Each is imported in a fresh interpreter with
kwire.broker made unimportable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

COORDINATOR_MODULES = sorted(
    f"kwire.coordinator.{p.stem}"
    for p in (Path(__file__).parent.parent / "kwire" / "coordinator").glob("*.py")
    if p.stem != "__init__"
)


def test_the_coordinator_modules_are_found() -> None:
    assert {"kwire.coordinator.group_coordinator", "kwire.coordinator.transaction_coordinator",
            "kwire.coordinator.partition_writer"} <= set(COORDINATOR_MODULES)


@pytest.mark.parametrize("module", COORDINATOR_MODULES)
def test_coordinator_module_imports_without_kwire_broker(module: str) -> None:
    code = (
        "import sys\n"
        "sys.modules['kwire.broker'] = None\n"  # any import of it raises ImportError
        f"import {module}\n"
        "assert 'kwire.broker' in sys.modules and sys.modules['kwire.broker'] is None\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_no_coordinator_source_names_kwire_broker() -> None:
    """Not even under TYPE_CHECKING, or in a function-level import."""
    for path in (Path(__file__).parent.parent / "kwire" / "coordinator").glob("*.py"):
        assert "kwire.broker" not in path.read_text(), path


def test_the_broker_still_imports_the_coordinators_lazily() -> None:
    """Start-up time: importing kwire.broker loads neither coordinator nor the writer."""
    code = (
        "import sys, kwire.broker\n"
        "lazy = ['kwire.coordinator.group_coordinator', 'kwire.coordinator.transaction_coordinator',\n"
        "        'kwire.local_partition_writer']\n"
        "assert not [m for m in lazy if m in sys.modules], [m for m in lazy if m in sys.modules]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
