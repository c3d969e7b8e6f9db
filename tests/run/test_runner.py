"""make report's failure path: a failing notebook cell stops the run and is named."""

from pathlib import Path

import pytest

from stepdecomp.core.paths import NOTEBOOKS_DIR
from stepdecomp.run import notebooks as runner

pytestmark = pytest.mark.integration


def test_failing_notebook_names_notebook_and_cell(tmp_path, capsys):
    empty_root = tmp_path / "empty"
    empty_root.mkdir()
    rc = runner.main([str(NOTEBOOKS_DIR / "01_load.ipynb"), "--data", str(empty_root),
                      "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "notebook 01_load.ipynb failed in cell" in err
    assert "FileNotFoundError" in err and "holds no experiment with traces" in err
    # the partially executed notebook is kept for inspection
    assert (tmp_path / "out" / "notebooks" / "01_load.ipynb").is_file()
