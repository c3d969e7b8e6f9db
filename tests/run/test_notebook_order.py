"""The notebooks' order is defined once (params.ALL_NOTEBOOKS): the runner's default and
``--list`` (what the Makefile and nbval run) follow it, and no other file spells the list."""

import re

from stepdecomp.core.params import ALL_NOTEBOOKS
from stepdecomp.core.paths import NOTEBOOKS_DIR, PROJECT_ROOT
from stepdecomp.run import notebooks as runner


def test_default_notebooks_follow_the_one_list():
    paths = runner.default_notebooks()
    assert [p.stem for p in paths] == ["01_load", "02_decompose", "03_phases", "04_correlation",
                                       "05_plots", "07_model", "06_report"]
    assert all(p.is_file() for p in paths)
    assert sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb")) == sorted(p.name for p in paths)


def test_list_prints_the_paths_in_order(capsys):
    assert runner.main(["--list"]) == 0
    assert capsys.readouterr().out.split() == [f"notebooks/{s}.ipynb" for s in ALL_NOTEBOOKS]


def test_the_makefile_does_not_spell_the_list():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert "stepdecomp.run.notebooks --list" in makefile
    assert not re.search(r"01_load\s+02_decompose", makefile)
