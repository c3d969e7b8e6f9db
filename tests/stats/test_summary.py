"""stats.summary: the medians and totals FINDINGS quotes of notebook 02's tables, on small
tables whose values are computed by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from stepdecomp.core import tables as names
from stepdecomp.stats import summary

TARGETS = ("step.duration_us", "step_forward_us", "step_period_us")


def test_target_summary_medians_over_experiments():
    medians = pd.DataFrame({"experiment_id": ["a", "b", "c"],
                            "step.duration_us": [50.0, 70.0, 90.0],
                            "step_forward_us": [1000.0, 3000.0, math.nan]})
    lb = pd.DataFrame({"target": ["step.duration_us"] * 3 + ["step_forward_us"] * 3,
                       "fraction_below": [1.0, 0.5, 0.9, 0.0, 0.2, math.nan]})
    t = summary.target_summary(medians, lb, TARGETS)
    assert list(t.columns) == summary.TARGET_SUMMARY_COLUMNS
    assert t["target"].tolist() == ["step.duration_us", "step_forward_us"]  # no period column
    assert t["experiments"].tolist() == [3, 2]
    assert t["median_us"].tolist() == [70.0, 2000.0]            # (1000 + 3000) / 2, N/A left out
    assert t["median_fraction_below"].tolist() == [0.9, pytest.approx(0.1)]


def test_target_summary_without_a_lower_bound_row_is_nan():
    t = summary.target_summary(pd.DataFrame({"step_period_us": [4.0, 6.0]}),
                               pd.DataFrame({"target": [], "fraction_below": []}), TARGETS)
    assert t["median_us"].tolist() == [5.0] and math.isnan(t["median_fraction_below"].iloc[0])


def _coverage() -> pd.DataFrame:
    return pd.DataFrame({"experiment_id": ["a", "b", "c", "d"],
                         "engine_loop": ["async", "sync", "async", None],
                         "engine_loop_source": ["detected", "assumed", "assumed", None],
                         "sampled_steps": [100, 10, 30, 0],
                         "share_gpu_waited": [0.015, 0.5, 0.0, 0.0],
                         "share_gpu_wait_unknown": [0.5, 0.0, 1.0, 0.0]})


def test_engine_loop_summary_per_loop_and_source_with_totals():
    t = summary.engine_loop_summary(_coverage())
    assert list(t.columns) == summary.ENGINE_LOOP_COLUMNS
    assert t[["engine_loop", "engine_loop_source", "experiments", "loop_experiments"]] \
        .values.tolist() == [["async", "assumed", 1, 2],
                             ["async", "detected", 1, 2], [names.NO_LOOP, names.NO_LOOP, 1, 1],
                             ["sync", "assumed", 1, 1],
                             [names.ALL_EXPERIMENTS, names.ALL_EXPERIMENTS, 4, 4]]
    # waited: 100 × 0.015 = 1.5 -> 2 (rounded), 10 × 0.5 = 5; total 1.5 + 5 = 6.5 -> 6 (half to even)
    assert t["waited_steps"].tolist() == [0, 2, 0, 5, 6]
    assert t["wait_unknown_steps"].tolist() == [30, 50, 0, 0, 80]
    assert t["sampled_steps"].tolist() == [30, 100, 0, 10, 140]


def test_engine_loop_summary_without_a_loop_column_is_empty():
    t = summary.engine_loop_summary(_coverage().drop(columns="engine_loop"))
    assert t.empty and list(t.columns) == summary.ENGINE_LOOP_COLUMNS


def test_seed_r_summary_median_and_means_per_workload():
    per = pd.DataFrame({
        "component": ["total_analytical_us"] * 5 + ["prefill_gemm_us"],
        "workload": ["chat", "chat", "code", "code", "rare", "chat"],
        "pearson_r": [0.1, 0.3, 0.5, 0.9, math.nan, 0.99]})
    t = summary.seed_r_summary(per)
    assert list(t.columns) == summary.SEED_R_COLUMNS
    assert t["workload"].tolist() == [names.ALL_EXPERIMENTS, "code", "chat"]   # rare: no r
    assert t["experiments"].tolist() == [4, 2, 2]
    assert t["median_pearson_r"].iloc[0] == pytest.approx(0.4)                  # (0.3 + 0.5) / 2
    assert t["mean_pearson_r"].tolist() == pytest.approx([0.45, 0.7, 0.2])
    assert t["median_pearson_r"].iloc[1:].isna().all()


def test_physical_per_experiment_summary_over_experiments_with_both_r():
    per = pd.DataFrame({
        "target": ["t1"] * 4 + ["t2"],
        "seed_pearson_r": [0.1, 0.2, 0.4, math.nan, math.nan],
        "phys_pearson_r": [0.3, 0.1, 0.8, 0.9, 0.5],
        "delta_r": [0.2, -0.1, 0.4, math.nan, math.nan],
        "phys_spearman_r": [0.5, 0.1, 0.6, 0.9, 0.5]})
    t = summary.physical_per_experiment_summary(per)
    assert list(t.columns) == summary.PHYSICAL_SUMMARY_COLUMNS
    assert t["target"].tolist() == ["t1", "t2"] and t["experiments"].tolist() == [3, 0]
    first = t.iloc[0]
    assert first["median_seed_pearson_r"] == pytest.approx(0.2)
    assert first["median_phys_pearson_r"] == pytest.approx(0.3)
    assert first["median_delta_r"] == pytest.approx(0.2)
    assert first["median_rank_gap"] == pytest.approx(0.0)       # gaps 0.2, 0.0, -0.2
    assert t.iloc[1][["median_seed_pearson_r", "median_delta_r"]].isna().all()


def test_decompose_summaries_names_every_table_notebook_02_writes():
    tables = {names.TARGET_MEDIANS: pd.DataFrame({"step.duration_us": [1.0]}),
              names.LOWER_BOUND: pd.DataFrame({"target": ["step.duration_us"],
                                               "fraction_below": [0.5], "n_steps": [4],
                                               "n_below": [2], "flagged": [True]}),
              names.RECONSTRUCTION: pd.DataFrame({"has_journeys": [True], "agreement": [1.0]}),
              names.TARGET_COVERAGE: _coverage(),
              names.PER_EXPERIMENT: pd.DataFrame({"component": ["total_analytical_us"],
                                                  "workload": ["w"], "pearson_r": [0.5]}),
              names.PHYSICAL_PER_EXPERIMENT: pd.DataFrame(
                  {"target": ["t"], "seed_pearson_r": [0.1], "phys_pearson_r": [0.2],
                   "delta_r": [0.1], "phys_spearman_r": [0.3]})}
    out = summary.decompose_summaries(tables, TARGETS)
    assert sorted(out) == sorted([names.TARGET_SUMMARY, names.ENGINE_LOOP_SUMMARY,
                                  names.SEED_R_SUMMARY, names.PHYSICAL_PER_EXPERIMENT_SUMMARY,
                                  names.LOWER_BOUND_SUMMARY, names.RECONSTRUCTION_SUMMARY])
    assert all(names.WRITTEN_BY[n] == "02_decompose" for n in out)


def test_lower_bound_summary_by_hand():
    lb = pd.DataFrame({"target": ["t2", "t2", "t2", "t1", "t1"],
                       "n_steps": [100, 200, 50, 10, 20], "n_below": [0, 30, 50, 0, 0],
                       "fraction_below": [0.0, 0.15, 1.0, 0.0, 0.0],
                       "flagged": ["False", "True", "True", "False", "False"]})  # as read back
    s = summary.lower_bound_summary(lb)
    assert list(s.columns) == summary.LOWER_BOUND_SUMMARY_COLUMNS
    assert s.iloc[:, :5].values.tolist() == [["t2", 3, 350, 80, 2], ["t1", 2, 30, 0, 0]]
    assert s["max_fraction_below_flagged"].iloc[0] == 1.0
    assert math.isnan(s["max_fraction_below_flagged"].iloc[1])        # none flagged
    # without a flagged column an experiment with a step below the bound is flagged
    s = summary.lower_bound_summary(lb.drop(columns="flagged").assign(n_below=[0, 0, 5, 1, 0]))
    assert s["flagged_experiments"].tolist() == [1, 1]
    assert s["max_fraction_below_flagged"].tolist() == [1.0, 0.0]


def test_reconstruction_summary_by_hand():
    rec = pd.DataFrame({"has_journeys": [True, True, False, True],
                        "agreement": [0.9, math.nan, 0.1, 0.95]})
    s = summary.reconstruction_summary(rec)
    assert list(s.columns) == summary.RECONSTRUCTION_SUMMARY_COLUMNS
    assert s.iloc[0, :3].tolist() == [4, 3, 2]                 # the no-journey 0.1 left out
    assert s["median_agreement"].iloc[0] == pytest.approx(0.925)
    none = summary.reconstruction_summary(rec.assign(has_journeys=False))
    assert none.iloc[0, :3].tolist() == [4, 0, 0] and math.isnan(none["median_agreement"].iloc[0])
    bare = summary.reconstruction_summary(pd.DataFrame({"experiment_id": ["a"]}))
    assert bare.iloc[0, :3].tolist() == [1, 0, 0]


def test_engine_loop_summary_keeps_its_labels_through_csv(tmp_path):
    """The label of an experiment without a loop is no value a CSV reader takes for N/A."""
    path = tmp_path / "engine_loop_summary.csv"
    summary.engine_loop_summary(_coverage()).to_csv(path, index=False)
    assert pd.read_csv(path)["engine_loop"].tolist() == \
        ["async", "async", names.NO_LOOP, "sync", names.ALL_EXPERIMENTS]
