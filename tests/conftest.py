from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stepdecomp.paths import FIXTURE_ROOT


@pytest.fixture
def fixture_root() -> Path:
    return FIXTURE_ROOT


@pytest.fixture
def fixture_copy(tmp_path: Path) -> Path:
    """A writable copy of the fixture ground truth (for error-path tests)."""
    dst = tmp_path / "ground_truth"
    shutil.copytree(FIXTURE_ROOT, dst)
    return dst
