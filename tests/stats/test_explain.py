"""OLS R² of step targets on scheduler work and FLOP components (lib/stepdecomp/explain.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stepdecomp.stats import explain as ex


def test_hand_computed_simple_regression() -> None:
    # x = 1..10, y = x + e with e = +1, −1, +1, ...: Sxx = 82.5, Σxe = 1−2+3−...−10 = −5,
    # Sxy = 82.5 − 5 = 77.5, Syy = 82.5 + 2(−5) + 10 = 82.5 -> R² = 77.5² / 82.5² = 0.88246...
    x = np.arange(1.0, 11.0)
    y = x + np.where(np.arange(10) % 2 == 0, 1.0, -1.0)
    r2, k = ex.ols_r2(y, x[:, None])
    assert k == 1
    assert r2 == ex.round_significant(77.5**2 / 82.5**2) == 0.882460973370


def test_exact_linear_relation_gives_one() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1000, (200, 3))
    y = 3.0 + 2.0 * x[:, 0] - 5.0 * x[:, 1] + 0.25 * x[:, 2]
    assert ex.ols_r2(y, x) == (1.0, 3)


def test_pure_noise_regressor_is_r_squared() -> None:
    rng = np.random.default_rng(1)
    y, x = rng.normal(size=2000), rng.normal(size=2000)
    r2, _ = ex.ols_r2(y, x[:, None])
    assert r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, rel=1e-9)
    assert r2 < 0.01


def test_constant_columns_and_small_samples() -> None:
    x = np.arange(1.0, 11.0)
    y = x + np.where(np.arange(10) % 2 == 0, 1.0, -1.0)
    with_const = np.column_stack([x, np.full(10, 7.0)])
    assert ex.ols_r2(y, with_const) == ex.ols_r2(y, x[:, None])          # dropped, same R²
    assert ex.ols_r2(y, np.full((10, 1), 7.0)) == (0.0, 0)               # only the mean
    assert np.isnan(ex.ols_r2(np.full(10, 3.0), x[:, None])[0])          # constant target
    assert np.isnan(ex.ols_r2(y[:9], x[:9, None])[0])                    # < MIN_ROWS
    assert ex.ols_r2(y[:10], x[:10, None])[1] == 1


def test_round_significant() -> None:
    assert ex.round_significant(0.123456789012345) == 0.123456789012
    assert ex.round_significant(0.99999999999999) == 1.0
    assert np.isnan(ex.round_significant(float("nan"))) and ex.round_significant(0.0) == 0.0


def _frame(rng: np.random.Generator, exp: str, n: int) -> pd.DataFrame:
    f = pd.DataFrame({
        "experiment_id": exp,
        "queue.running_depth": rng.integers(1, 128, n), "queue.waiting_depth": rng.integers(0, 50, n),
        "batch.num_prefill_reqs": rng.integers(0, 4, n), "batch.scheduled_tokens": rng.integers(1, 2048, n),
        "kv.blocks_total_gpu": 5000, "kv.blocks_free_gpu": rng.integers(0, 5000, n),
        "phys_prefill_gemm_us": rng.uniform(0, 5000, n), "phys_prefill_attn_us": rng.uniform(0, 500, n),
        "phys_decode_gemm_us": rng.uniform(3000, 9000, n), "phys_decode_attn_us": rng.uniform(0, 900, n)})
    # the scheduler's CPU time is exactly linear in its queue walk; the period in the GPU work
    f["step.duration_us"] = 40.0 + 3.0 * f["queue.running_depth"] + 1.5 * f["queue.waiting_depth"]
    f["step_period_us"] = 200.0 + f[list(ex.FLOP_COLUMNS)].sum(axis=1)
    return f


def test_explain_r2_side_by_side() -> None:
    rng = np.random.default_rng(3)
    frame = pd.concat([_frame(rng, "A", 300), _frame(rng, "B", 300)], ignore_index=True)
    frame.loc[frame.index[:50], "step_period_us"] = np.nan        # unbounded periods
    frame = ex.with_kv_blocks_used(frame)
    assert (frame["kv.blocks_used"] == 5000 - frame["kv.blocks_free_gpu"]).all()
    out = ex.explain_r2(frame)
    # three sets and the two increments, per experiment and target
    assert list(out.columns) == ex.R2_COLUMNS and len(out) == 2 * 2 * 5
    r = out.set_index(["experiment_id", "target", "regressors"])
    for exp in ("A", "B"):
        assert r.loc[(exp, "step.duration_us", ex.SET_SCHEDULER), "r2"] == 1.0
        assert r.loc[(exp, "step.duration_us", ex.SET_FLOPS), "r2"] < 0.1
        assert r.loc[(exp, "step_period_us", ex.SET_FLOPS), "r2"] == 1.0
        assert r.loc[(exp, "step_period_us", ex.SET_SCHEDULER), "r2"] < 0.1
        assert r.loc[(exp, "step_period_us", ex.SET_BOTH), "r2"] == 1.0
        assert r.loc[(exp, "step.duration_us", ex.SET_BOTH), "n_regressors"] == 9
    # kv.blocks_total_gpu is constant but kv.blocks_used is not: 5 scheduler regressors
    assert r.loc[("A", "step.duration_us", ex.SET_SCHEDULER), "n_regressors"] == 5
    # the steps above the target's 99th percentile are left out: of 250 periods the 3 above
    # the quantile at position 0.99 · 249 = 246.51, of 300 the 3 above position 296.01
    assert r.loc[("A", "step_period_us", ex.SET_FLOPS), "n_steps"] == 247
    assert r.loc[("B", "step_period_us", ex.SET_FLOPS), "n_steps"] == 297
    assert ex.explain_r2(frame, trim_quantile=None).set_index(
        ["experiment_id", "target", "regressors"]).loc[("A", "step_period_us", ex.SET_FLOPS),
                                                       "n_steps"] == 250
    for exp in ("A", "B"):
        # duration is exactly the scheduler's work: the FLOPs add nothing beyond it, the
        # scheduler's work adds what the FLOPs miss (1 − R² of the FLOPs)
        d = r.loc[(exp, "step.duration_us")]["r2"]
        assert d[ex.SET_FLOPS_BEYOND] == pytest.approx(0.0, abs=1e-9)
        assert d[ex.SET_SCHEDULER_BEYOND] == pytest.approx(1.0 - d[ex.SET_FLOPS], abs=1e-9)
        p = r.loc[(exp, "step_period_us")]["r2"]
        assert p[ex.SET_SCHEDULER_BEYOND] == pytest.approx(0.0, abs=1e-9)
        assert p[ex.SET_FLOPS_BEYOND] > 0.9
    # the same rows in another order give the same R² to the last returned digit
    shuffled = ex.explain_r2(frame.sample(frac=1.0, random_state=5))
    assert shuffled["r2"].tolist() == pytest.approx(out["r2"].tolist(), rel=0, abs=0, nan_ok=True)


def test_flop_columns_parameter_and_missing_columns() -> None:
    frame = ex.with_kv_blocks_used(_frame(np.random.default_rng(4), "A", 50))
    out = ex.explain_r2(frame, targets=["step_period_us"], flop_columns=["phys_decode_gemm_us"])
    assert out.set_index("regressors").loc[ex.SET_FLOPS, "n_regressors"] == 1
    no_phys = frame.drop(columns=list(ex.FLOP_COLUMNS))
    assert ex.explain_r2(no_phys, targets=["step.duration_us"])["regressors"].tolist() == \
        [ex.SET_SCHEDULER]
    with pytest.raises(KeyError, match="phys_x_us"):
        ex.explain_r2(frame, flop_columns=["phys_x_us"])
    with pytest.raises(KeyError, match="step_period_us"):
        ex.explain_r2(frame.drop(columns="step_period_us"))
    with pytest.raises(KeyError, match="kv.blocks_used"):
        ex.explain_r2(frame.drop(columns="kv.blocks_used"))
    with pytest.raises(KeyError, match="kv.blocks_free_gpu"):
        ex.with_kv_blocks_used(frame.drop(columns="kv.blocks_free_gpu"))


def test_no_rows_give_nan_not_an_error() -> None:
    # an experiment where the target is never known (e.g. no journey events): 0 rows
    assert ex.ols_r2(np.zeros(0), np.zeros((0, 3)))[1] == 0
    assert np.isnan(ex.ols_r2(np.zeros(0), np.zeros((0, 3)))[0])


def test_increment_summary_credits_a_set_only_when_its_interval_clears_the_minimum() -> None:
    # five experiments; scheduler work adds 0.30, 0.31, …, 0.34 beyond the FLOPs on the
    # duration, the FLOPs 0.00 … 0.04 beyond it; on the period both add 0.5 … 0.54
    rows = []
    for i, e in enumerate("ABCDE"):
        for target, sched, flops in (("step.duration_us", 0.30 + i / 100, i / 100),
                                     ("step_period_us", 0.50 + i / 100, 0.50 + i / 100)):
            rows += [{"experiment_id": e, "target": target, "regressors": ex.SET_SCHEDULER_BEYOND,
                      "r2": sched},
                     {"experiment_id": e, "target": target, "regressors": ex.SET_FLOPS_BEYOND,
                      "r2": flops},
                     {"experiment_id": e, "target": target, "regressors": ex.SET_BOTH, "r2": 0.9}]
    out = ex.increment_summary(pd.DataFrame(rows))
    assert list(out.columns) == ex.INCREMENT_COLUMNS and len(out) == 4
    got = out.set_index(["target", "regressors"])
    assert got.loc[("step.duration_us", ex.SET_SCHEDULER_BEYOND), "median_increment"] == \
        pytest.approx(0.32)
    assert got.loc[("step.duration_us", ex.SET_FLOPS_BEYOND), "median_increment"] == \
        pytest.approx(0.02)
    assert got["experiments"].tolist() == [5, 5, 5, 5]
    # the percentile interval of a median of five values lies within their range
    assert 0.30 <= got.loc[("step.duration_us", ex.SET_SCHEDULER_BEYOND), "ci_low"] <= 0.32
    assert got.loc[("step.duration_us", ex.SET_FLOPS_BEYOND), "ci_low"] <= ex.INCREMENT_MIN
    assert ex.credited_set(out, "step.duration_us") == "scheduler work"
    assert ex.credited_set(out, "step_period_us") == "both"
    # nothing clears the minimum: the sets cannot be separated
    none = pd.DataFrame(rows).assign(r2=0.0)
    assert ex.credited_set(ex.increment_summary(none), "step.duration_us") == "neither"
    assert ex.credited_set(ex.increment_summary(none), "no such target") == "neither"
