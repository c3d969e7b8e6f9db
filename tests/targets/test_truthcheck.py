"""truthcheck: the targets against the generator's truth, on hand-made truth tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stepdecomp.targets import truthcheck as tc


def _truth(n: int) -> pd.DataFrame:
    # step k (1-based) starts at 1000 · k(k−1)/2 µs: periods 1000, 2000, 3000, … µs
    k = np.arange(1, n + 1)
    return pd.DataFrame({"step_id": k, "start_ns": (1000 * k * (k - 1) // 2) * 1000,
                         "host_us": 10.0, "forward_us": 100.0 * k})


def test_truth_targets_per_engine_loop() -> None:
    t = _truth(5).sample(frac=1.0, random_state=1)             # any row order
    a = tc.truth_targets(t, "async")
    assert a["step.id"].tolist() == [1, 2, 3, 4, 5]
    assert a["step_forward_us"].tolist() == [100.0, 200.0, 300.0, 400.0, 500.0]
    # async: start(n+2) − start(n+1); starts 0, 1000, 3000, 6000, 10000 µs
    assert a["step_period_us"].tolist()[:3] == [2000.0, 3000.0, 4000.0]
    assert a["step_period_us"].iloc[3:].isna().all()
    s = tc.truth_targets(t, "sync")
    assert s["step_forward_us"].tolist() == [110.0, 210.0, 310.0, 410.0, 510.0]
    assert s["step_period_us"].tolist()[:4] == [1000.0, 2000.0, 3000.0, 4000.0]
    assert np.isnan(s["step_period_us"].iloc[4])
    with pytest.raises(ValueError, match="engine loop must be"):
        tc.truth_targets(t, "batch-queue")


def test_truth_check_statistics() -> None:
    truth = _truth(14)
    true = tc.truth_targets(truth, "async").set_index("step.id")
    steps = np.arange(1, 15)
    comp = pd.DataFrame({"experiment_id": "e", "step.id": steps,
                         # the forward time 10 % high on every step; two steps without one
                         "step_forward_us": true.loc[steps, "step_forward_us"].to_numpy() * 1.1,
                         # the period exact where the truth has one
                         "step_period_us": true.loc[steps, "step_period_us"].to_numpy()})
    comp.loc[[0, 1], "step_forward_us"] = np.nan
    table = tc.truth_check(comp, {"e": truth})
    assert list(table.columns) == tc.CHECK_COLUMNS
    out = table.set_index("target")
    f = out.loc["step_forward_us"]
    assert (f["sampled_steps"], f["steps_checked"]) == (14, 12)
    assert f["coverage"] == pytest.approx(12 / 14)
    assert f["median_abs_rel_error"] == pytest.approx(0.1)
    assert f["median_rel_error"] == pytest.approx(0.1)
    assert f["pearson_r"] == pytest.approx(1.0)
    p = out.loc["step_period_us"]
    assert (p["steps_checked"], p["coverage"]) == (12, pytest.approx(12 / 14))
    assert p["median_abs_rel_error"] == 0.0 and p["engine_loop"] == "async"
    # under sync the truth of the forward time holds the host time: 10 µs more
    sync = tc.truth_check(comp, {"e": truth}, {"e": "sync"}).set_index("target")
    assert sync.loc["step_forward_us", "median_rel_error"] < 0.1


def test_too_few_steps_are_na_with_the_reason() -> None:
    truth = _truth(5)
    comp = pd.DataFrame({"experiment_id": "e", "step.id": [1, 2, 3],
                         "step_forward_us": [100.0, 200.0, 300.0], "step_period_us": np.nan})
    out = tc.truth_check(comp, {"e": truth}).set_index("target")
    assert np.isnan(out.loc["step_forward_us", "pearson_r"])
    assert out.loc["step_forward_us", "na_reason"] == "3 step(s) with target and truth, 10 needed"
    assert out.loc["step_period_us", "coverage"] == 0.0


def test_truth_files_are_read_only_where_present(tmp_path) -> None:
    comp = pd.DataFrame({"experiment_id": ["a", "b"], "step.id": [1, 1],
                         "step_forward_us": [1.0, 1.0], "step_period_us": [1.0, 1.0]})
    assert tc.truth_check_table(tmp_path, comp) is None                  # real traces
    (tmp_path / "b").mkdir()
    _truth(3).to_parquet(tmp_path / "b" / tc.TRUTH_FILE)
    cov = pd.DataFrame({"experiment_id": ["a", "b"], "engine_loop": ["async", "sync"]})
    out = tc.truth_check_table(tmp_path, comp, cov)
    assert out["experiment_id"].tolist() == ["b", "b"]
    assert out["engine_loop"].tolist() == ["sync", "sync"]


def test_truth_summary_medians_per_target():
    from stepdecomp.targets.truthcheck import SUMMARY_COLUMNS, truth_summary

    check = pd.DataFrame({
        "experiment_id": ["a", "b", "c", "a"],
        "target": ["step_forward_us", "step_forward_us", "step_forward_us", "step_period_us"],
        "coverage": [0.9, 0.8, 0.7, 0.1],
        "median_abs_rel_error": [0.01, 0.03, float("nan"), 0.5],
        "median_rel_error": [-0.01, 0.02, 0.04, 0.0],
        "pearson_r": [0.99, 0.97, 0.95, 0.5]})
    t = truth_summary(check)
    assert list(t.columns) == SUMMARY_COLUMNS
    assert t["target"].tolist() == ["step_forward_us", "step_period_us"]
    assert t["experiments"].tolist() == [3, 1]
    assert t["coverage"].tolist() == pytest.approx([0.8, 0.1])
    assert t["median_abs_rel_error"].tolist() == pytest.approx([0.02, 0.5])   # N/A left out
    assert t["median_rel_error"].tolist() == pytest.approx([0.02, 0.0])
    assert t["pearson_r"].tolist() == pytest.approx([0.97, 0.5])
