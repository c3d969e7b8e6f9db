"""docs/recipes/add-a-statistic.md, followed on its example, physical_time_share: the recipe's
module (its new:lib/stepdecomp/stats/time_share.py block, loaded as that module without
writing it into lib/) registered with the recipe's entry (parsed from its pipeline.py block)
in pipeline.PER_EXPERIMENT_STATISTICS for the duration of a test (monkeypatch), then checked
by hand on a hand-made frame and, through the pipeline, on the fixture.

Hand frame (phys_total_us / step.duration_us per step):

    experiment a: 100/400, 300/500, 200/400, 50/100, 90/100, NaN/100, 100/0
                  usable 5 (NaN and a zero duration left out): 0.25, 0.6, 0.5, 0.5, 0.9
                  -> median 0.5 at n = 5 = MIN_SHARE_STEPS: a value
    experiment b: 3 usable steps -> N/A, "3 steps < 5 needed for the median share"
    experiment c: 1 usable step  -> N/A, "1 step < 5 needed for the median share"

step_forward_us is half the duration everywhere: each share doubles (a's median 1.0).
"""

from __future__ import annotations

import ast
import types

import numpy as np
import pandas as pd
import pytest

from recipe_blocks import read_recipe
from stepdecomp.core import artefacts
from stepdecomp.core.paths import FIXTURE_ROOT
from stepdecomp.hw.specs import load_gpu_spec
from stepdecomp.run import pipeline
from stepdecomp.stats import correlation, per_target
from stepdecomp.traces.experiments import Experiment

RECIPE = read_recipe("add-a-statistic.md")
NAME = "physical_time_share"


def recipe_module() -> types.ModuleType:
    """The recipe's new module, loaded as stepdecomp.stats.time_share (not put in lib/ nor in
    sys.modules)."""
    (block,) = RECIPE.labelled("new")
    assert block.path == "lib/stepdecomp/stats/time_share.py"
    module = types.ModuleType("stepdecomp.stats.time_share")
    module.__package__ = "stepdecomp.stats"
    exec(compile(block.text, block.path, "exec"), module.__dict__)
    return module


def recipe_entry(module: types.ModuleType) -> tuple[str, object]:
    """The recipe's registry entry: its key and the value evaluated as pipeline.py would
    (PerTarget from pipeline, the module as imported by the recipe's import line)."""
    block = RECIPE.block("edit", "lib/stepdecomp/run/pipeline.py")
    tree = ast.parse(block.text)
    imports, assign = tree.body
    assert isinstance(imports, ast.ImportFrom) and imports.module == "stats" and imports.level == 2
    # the recipe's import line is today's import line plus the new module
    assert "from ..stats import attribution, explain, per_target, correlation\n" \
        in open(pipeline.__file__, encoding="utf-8").read()
    assert [a.name for a in imports.names] == ["attribution", "explain", "per_target",
                                               "correlation", "time_share"]
    assert isinstance(assign, ast.AnnAssign) and assign.target.id == "PER_EXPERIMENT_STATISTICS"
    (key,), (value,) = assign.value.keys, assign.value.values
    fn = eval(compile(ast.Expression(value), "add-a-statistic.md", "eval"),
              {"PerTarget": pipeline.PerTarget, "time_share": module})
    return ast.literal_eval(key), fn


def hand_frame() -> pd.DataFrame:
    phys = [100, 300, 200, 50, 90, np.nan, 100, 10, 20, 30, 5, 10]
    dur = [400, 500, 400, 100, 100, 100, 0, 20, 40, 60, 10, -1]
    exp = ["a"] * 7 + ["b"] * 3 + ["c"] * 2
    return pd.DataFrame({"experiment_id": exp, "model": ["m"] * 12, "workload": ["general"] * 12,
                         "phys_total_us": np.array(phys, dtype=np.float64),
                         "step.duration_us": np.array(dur, dtype=np.float64),
                         "step_forward_us": np.array(dur, dtype=np.float64) / 2})


def test_the_function_by_hand():
    m = recipe_module()
    assert m.MIN_SHARE_STEPS == 5
    t = m.physical_time_share(hand_frame())
    assert list(t.columns) == ["experiment_id", "model", "workload", "n_steps", "median_share",
                               "na_reason"]
    assert t["n_steps"].tolist() == [5, 3, 1]
    assert t.loc[0, "median_share"] == 0.5 and t.loc[0, "na_reason"] == ""
    assert t["median_share"].iloc[1:].isna().all()
    assert t["na_reason"].iloc[1:].tolist() == ["3 steps < 5 needed for the median share",
                                                "1 step < 5 needed for the median share"]
    assert RECIPE.mentions("`3 steps < 5 needed for the median share`")
    # at every n around the minimum: N/A with the reason below it, a number from it on
    for n in range(0, 8):
        frame = pd.DataFrame({"experiment_id": ["x"] * n, "model": ["m"] * n,
                              "workload": ["general"] * n, "phys_total_us": np.full(n, 30.0),
                              "step.duration_us": np.full(n, 60.0)})
        t = m.physical_time_share(frame)
        if n == 0:
            assert t.empty and list(t.columns) == list(m.COLUMNS)
        elif n < 5:
            assert np.isnan(t.loc[0, "median_share"]) and t.loc[0, "na_reason"].startswith(f"{n} step")
        else:
            assert (t.loc[0, "median_share"], t.loc[0, "na_reason"]) == (0.5, "")


def test_registered_it_runs_per_target_and_per_experiment(monkeypatch):
    m = recipe_module()
    key, fn = recipe_entry(m)
    assert key == NAME and isinstance(fn, pipeline.PerTarget)
    monkeypatch.setitem(pipeline.PER_EXPERIMENT_STATISTICS, NAME, fn)
    assert pipeline.experiment_tables()[-1] == NAME
    frame = hand_frame()
    t = fn(frame)
    # the targets present, target-major: step.duration_us then step_forward_us
    assert t["target"].tolist() == ["step.duration_us"] * 3 + ["step_forward_us"] * 3
    fwd = per_target.for_target(t, "step_forward_us")
    assert fwd["median_share"].iloc[0] == 1.0 and fwd["n_steps"].tolist() == [5, 3, 1]
    # per experiment, stacked, equals the whole frame (what the pipeline and Dask rely on)
    pd.testing.assert_frame_equal(pipeline.map_experiments(fn, frame), t)
    # an experiment without steps: one N/A row per target, with the pipeline's reason
    exp = Experiment("20260101-000000-x-tp1-general", FIXTURE_ROOT, "x", "acme/x", 1, "general")
    empty = pipeline.no_step_rows(fn(frame.iloc[:0]), exp)
    assert empty["target"].tolist() == list(per_target.TARGETS)
    assert (empty["n_steps"] == 0).all() and empty["median_share"].isna().all()
    assert (empty[correlation.NA_REASON] == pipeline.NO_STEPS_REASON).all()


@pytest.mark.integration
def test_the_pipeline_writes_the_table_on_the_fixture(tmp_path, monkeypatch):
    """decompose_dataset (notebook 02's stage) with the statistic registered: the CSV and the
    Parquet hand-over are written, one row per experiment and target, equal to the function
    on the written step_components, N/A exactly below the minimum."""
    m = recipe_module()
    key, fn = recipe_entry(m)
    monkeypatch.setitem(pipeline.PER_EXPERIMENT_STATISTICS, key, fn)
    dirs = artefacts.run_dirs(str(FIXTURE_ROOT), str(tmp_path / "out"), "")
    result = pipeline.decompose_dataset(dirs, load_gpu_spec("h100-sxm"), cache_root=tmp_path / "cache")
    assert (dirs.tables / f"{NAME}.csv").is_file()
    table = pipeline.read_experiment_table(dirs, NAME)
    pd.testing.assert_frame_equal(table, result.tables[NAME])
    components = artefacts.read_components(dirs)
    pd.testing.assert_frame_equal(table, fn(components))
    assert len(table) == 3 * len(per_target.TARGETS)
    assert table["target"].tolist() == [t for t in per_target.TARGETS for _ in range(3)]
    assert ((table["n_steps"] < m.MIN_SHARE_STEPS) == table["median_share"].isna()).all()
    assert (table["median_share"].notna() == (table["na_reason"].fillna("") == "")).all()
    # the step.duration_us rows by hand from the components, experiment by experiment
    for exp, g in components.groupby("experiment_id"):
        ok = (g["phys_total_us"] > 0) & (g["step.duration_us"] > 0)
        row = table[(table["experiment_id"] == exp) & (table["target"] == "step.duration_us")]
        assert row["n_steps"].item() == ok.sum()
        assert row["median_share"].item() == pytest.approx(
            float(np.median(g.loc[ok, "phys_total_us"] / g.loc[ok, "step.duration_us"])), rel=1e-12)
    csv = pd.read_csv(dirs.tables / f"{NAME}.csv")
    assert csv["n_steps"].tolist() == table["n_steps"].tolist()
