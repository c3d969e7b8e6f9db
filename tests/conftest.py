from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stepdecomp.core.paths import FIXTURE_ROOT


@pytest.fixture
def fixture_root() -> Path:
    return FIXTURE_ROOT


@pytest.fixture
def fixture_copy(tmp_path: Path) -> Path:
    """A writable copy of the fixture ground truth (for error-path tests)."""
    dst = tmp_path / "ground_truth"
    shutil.copytree(FIXTURE_ROOT, dst)
    return dst


#: The test tiers (pyproject.toml registers them; --strict-markers refuses any other name).
TIERS = ("unit", "integration", "slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test without a tier is a unit test; a test with two tiers is an error naming it."""
    for item in items:
        tiers = sorted({m.name for m in item.iter_markers() if m.name in TIERS})
        if len(tiers) > 1:
            raise pytest.UsageError(f"{item.nodeid}: more than one tier marker {tiers}")
        if not tiers:
            item.add_marker(pytest.mark.unit)
