"""The spec-directory overrides of core/paths.py: STEPDECOMP_MODELS_DIR and
STEPDECOMP_HARDWARE_DIR, read when the library is imported (a fresh interpreter here)."""

from __future__ import annotations

import os
import subprocess
import sys

from stepdecomp.core import paths

PRINT = "from stepdecomp.core import paths; print(paths.MODELS_DIR); print(paths.HARDWARE_DIR)"


def _dirs(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in (paths.ENV_MODELS_DIR, paths.ENV_HARDWARE_DIR)}
    run = subprocess.run([sys.executable, "-c", PRINT], env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return run.stdout.splitlines()


def test_unset_the_committed_directories_are_used():
    assert paths.ENV_MODELS_DIR not in os.environ and paths.ENV_HARDWARE_DIR not in os.environ
    assert (paths.MODELS_DIR, paths.HARDWARE_DIR) == (paths.DATA_DIR / "models",
                                                      paths.DATA_DIR / "hardware")
    assert _dirs() == [str(paths.DATA_DIR / "models"), str(paths.DATA_DIR / "hardware")]
    # an empty value is unset
    assert _dirs(STEPDECOMP_MODELS_DIR="") == [str(paths.DATA_DIR / "models"),
                                               str(paths.DATA_DIR / "hardware")]


def test_each_override_replaces_its_directory_only(tmp_path):
    assert _dirs(STEPDECOMP_MODELS_DIR=str(tmp_path / "m")) == [
        str((tmp_path / "m").resolve()), str(paths.DATA_DIR / "hardware")]
    assert _dirs(STEPDECOMP_HARDWARE_DIR=str(tmp_path / "h")) == [
        str(paths.DATA_DIR / "models"), str((tmp_path / "h").resolve())]
