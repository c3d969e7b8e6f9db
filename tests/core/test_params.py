"""params.py: one definition of the report's parameters, and every notebook's parameters cell."""

from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest

from stepdecomp.core import params
from stepdecomp.run import notebooks as runner
from stepdecomp.core.paths import NOTEBOOKS_DIR, PROJECT_ROOT


@pytest.mark.parametrize("stem", params.ALL_NOTEBOOKS)
def test_notebook_parameters_cell_is_generated_from_params(stem):
    nb = nbformat.read(NOTEBOOKS_DIR / f"{stem}.ipynb", as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    assert cells[0].source == params.parameter_cell(stem)


def test_parameter_cell_text():
    assert params.parameter_cell("05_plots").splitlines()[4:] == [
        'hardware: str = "h100-sxm"  # GPU spec data/hardware/<name>.json of every roofline, '
        'bound and floor',
        "max_points: int = 3000  # points per panel in the per-experiment scatter plots",
        "sample_seed: int = 0  # seed of the random subsample behind those plots"]
    assert [p.name for p in params.notebook_parameters("01_load")] == [
        "data_root", "out_dir", "figures_dir"]


@pytest.mark.integration
def test_papermill_documents_every_parameter():
    out = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook",
                          str(NOTEBOOKS_DIR / "05_plots.ipynb")], capture_output=True, text=True,
                         cwd=PROJECT_ROOT, check=True).stdout
    assert "Unknown type" not in out
    for p in params.notebook_parameters("05_plots"):
        assert f"{p.name}: {p.type.__name__}" in out
        assert p.help in out.replace("\n" + " " * 34, " ")


def test_runner_passes_each_notebook_only_what_it_declares():
    given = {"data_root": "/d", "out_dir": "/o", "hardware": "h200-sxm"}
    assert runner.declared_parameters("01_load", given) == {"data_root": "/d", "out_dir": "/o"}
    assert runner.declared_parameters("02_decompose", given) == given
    assert runner.declared_parameters("my_extra", given) == given


def test_runner_rejects_unknown_hardware_before_running(capsys):
    rc = runner.main([str(NOTEBOOKS_DIR / "01_load.ipynb"), "--hardware", "tpu-v9"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no hardware spec data/hardware/tpu-v9.json" in err and "h100-sxm" in err


def test_parameter_errors():
    with pytest.raises(TypeError, match="parameter x: default '1' is not int"):
        params.Parameter("x", int, "1", "help", ("05_plots",))
    with pytest.raises(ValueError, match=r"parameter x: unknown notebooks \['99_x'\]"):
        params.Parameter("x", int, 1, "help", ("99_x",))
    with pytest.raises(ValueError, match="unknown notebook '99_x'"):
        params.notebook_parameters("99_x")


def test_one_default_hardware():
    from stepdecomp.hw import specs
    from stepdecomp.refdata import replay
    assert replay.DEFAULT_HARDWARE == params.DEFAULT_HARDWARE
    assert specs.load_gpu_spec().name == specs.load_gpu_spec(params.DEFAULT_HARDWARE).name
