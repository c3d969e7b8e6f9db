"""Every estimator at n = 0 … 20: N/A (NaN) with its stated reason below its named minimum,
a number at and above it, never an exception (issue 20: arch's Politis–White estimator
raised on series of 2–7 values and stopped the report)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stepdecomp.stats import attribution as A
from stepdecomp.stats import explain as E
from stepdecomp.stats import resample as R
from stepdecomp.stats import correlation as S
from stepdecomp.core.columns import ATTRIBUTION_TERMS, DURATION, PHYS_TOTAL

NS = list(range(21))


def _steps(n: int) -> str:
    return "1 step" if n == 1 else f"{n} steps"
#: Resamples in these tests: enough for finite quantiles, cheap at 21 sizes.
B = 200


def _xy(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A varying x and a positive y that follows it (r well defined from n = 3)."""
    rng = np.random.default_rng(seed + n)
    x = np.arange(n, dtype=np.float64) + rng.normal(scale=0.3, size=n)
    return x, 100.0 + 5.0 * x + rng.normal(size=n)


def test_minimums_are_the_documented_ones():
    assert (R.MIN_N_BLOCK_LENGTH, R.MIN_N_BLOCK_BOOTSTRAP, R.MIN_CLUSTERS, R.MIN_REPLICATES,
            R.MIN_N_MEDIAN) == (8, 8, 2, 2, 2)
    assert (S.MIN_ROWS, S.WITHIN_MIN_EXPERIMENTS, A.MIN_FIT_ROWS, A.MIN_ROWS_OVER_TERMS,
            E.MIN_ROWS) == (10, 3, 10, 2, 10)
    # arch's lag window ceil(sqrt(n)) + 5 fits in the series exactly from n = 8
    assert [n for n in range(2, 20) if np.ceil(np.sqrt(n)) + 5 <= n][0] == R.MIN_N_BLOCK_LENGTH


# --------------------------------------------------------------------------- resample.py

@pytest.mark.parametrize("n", NS)
def test_block_length(n):
    x, y = _xy(n)
    L = R.block_length(x, y)
    if n < 8:
        assert np.isnan(L)
        assert R.block_length_na_reason(n) == f"{_steps(n)} < 8 needed for the Politis–White block length"
    else:
        assert 1.0 <= L <= n
        assert R.block_length_na_reason(n) == ""


@pytest.mark.parametrize("n", NS)
def test_block_bootstrap_paired(n):
    x, y = _xy(n)
    p = R.block_bootstrap_paired(x, x ** 2, y, n_resamples=B, seed=1)
    if n < 8:
        assert p.na_reason == f"{_steps(n)} < 8 needed for a block bootstrap"
        assert np.isnan([p.block_length, *p.a, *p.b, *p.delta]).all()
    else:
        assert p.na_reason == ""
        assert 1.0 <= p.block_length <= n
        assert np.isfinite([*p.a, *p.b, *p.delta]).all()
        assert -1 <= p.a[0] <= p.a[1] <= 1


@pytest.mark.parametrize("n", NS)
def test_stationary_sums_and_jackknife(n):
    F = np.column_stack([np.ones(n), np.arange(n, dtype=np.float64)])
    if n == 0:
        with pytest.raises(R.ResampleError, match="n > 0"):
            R.stationary_sums(F, 1.0, B)
        return
    sums = R.stationary_sums(F, 2.0, B, np.random.default_rng(0))
    assert sums.shape == (B, 2) and (sums[:, 0] == n).all()      # every resample has n rows
    jack = R.block_jackknife_sums(F, 2.0)
    assert len(jack) == max(1, n // 2)


@pytest.mark.parametrize("n", NS)
def test_cluster_bootstrap_pearson(n):
    """n clusters of 4 rows each."""
    x, y = _xy(4 * n)
    labels = np.repeat(np.arange(n), 4)
    lo, hi = R.cluster_bootstrap_pearson(x, y, labels, n_resamples=B)
    assert R.cluster_na_reason(n) == ("" if n >= 2 else f"{n} experiment(s) < 2 needed for a cluster bootstrap")
    if n < 2:
        assert np.isnan([lo, hi]).all()
    else:
        assert -1 <= lo <= hi <= 1


@pytest.mark.parametrize("n", NS)
def test_bca_and_percentile_intervals(n):
    reps = np.linspace(0.0, 1.0, n)
    jack = np.linspace(0.4, 0.6, n)
    bca = R.bca_interval(0.5, reps, jack)
    pct = R.percentile_interval(reps)
    if n < 2:
        assert np.isnan([*bca, *pct]).all()
    else:
        assert 0.0 <= bca[0] <= bca[1] <= 1.0 and 0.0 <= pct[0] <= pct[1] <= 1.0


@pytest.mark.parametrize("n", NS)
def test_cluster_bootstrap_median(n):
    lo, hi = R.cluster_bootstrap_median(np.linspace(0.1, 0.9, n), n_resamples=B)
    if n < 2:
        assert np.isnan([lo, hi]).all()
    else:
        assert 0.1 <= lo <= hi <= 0.9


# --------------------------------------------------------------------------- stats.py

@pytest.mark.parametrize("n", NS)
def test_correlations(n):
    x, y = _xy(n)
    r, k = S.pearson_r(x, y)
    rs, _ = S.spearman_r(x, y)
    rl, _ = S.loglog_r(x + 1.0 - min(x, default=0.0), y)
    ci = S.bootstrap_pearson_ci(x, y, n_resamples=B)
    assert k == n
    if n < 10:
        assert np.isnan([r, rs, rl, *ci]).all()
        assert S.pearson_na_reason(x, y) == f"{_steps(n)} < 10 needed for Pearson r"
    else:
        assert 0.9 < r <= 1 and 0.9 < rs <= 1 and np.isfinite(rl)
        assert ci[0] <= r <= ci[1]
        assert S.pearson_na_reason(x, y) == ""


def test_correlation_reasons_for_constant_sides():
    x, y = _xy(12)
    assert S.pearson_na_reason(np.ones(12), y) == "Pearson r: component constant on the usable steps"
    assert S.pearson_na_reason(x, np.ones(12)) == "Pearson r: step time constant on the usable steps"
    # a duration of 0 is not a usable step
    assert S.pearson_na_reason(x, np.r_[0.0, 0.0, 0.0, y[3:]]) == "9 steps < 10 needed for Pearson r"


def _components(n: int, experiments: int = 1) -> pd.DataFrame:
    x, y = _xy(n * experiments)
    return pd.DataFrame({
        "experiment_id": np.repeat([f"e{i:02d}" for i in range(experiments)], n),
        "model": "m", "workload": "general", "step.id": np.tile(np.arange(n), experiments),
        DURATION: y, "total_analytical_us": x, PHYS_TOTAL: np.abs(x) ** 1.5 + 1.0})


@pytest.mark.parametrize("n", NS)
def test_physical_per_experiment_correlations(n):
    t = S.physical_per_experiment_correlations(_components(n), n_resamples=B)
    if n == 0:
        assert len(t) == 0 and S.NA_REASON in t      # no steps: no row (the pipeline adds one)
        return
    row = t.iloc[0]
    assert row["seed_n_steps"] == row["phys_n_steps"] == n
    if n < 8:
        assert row[S.NA_REASON] == (f"seed: {_steps(n)} < 10 needed for Pearson r; "
                                    f"phys: {_steps(n)} < 10 needed for Pearson r")
        assert np.isnan(row[["seed_pearson_r", "seed_ci_low", "delta_ci_low", "block_length"]]
                        .astype(float)).all()
    elif n < 10:
        # no r, yet the interval ran (8 rows suffice for it): its numbers are not shown
        assert row[S.NA_REASON] == (f"seed: {_steps(n)} < 10 needed for Pearson r; "
                                    f"phys: {_steps(n)} < 10 needed for Pearson r")
        assert np.isnan(row[["seed_pearson_r", "seed_ci_low", "delta_r", "delta_ci_low"]]
                        .astype(float)).all()
    else:
        assert row[S.NA_REASON] == ""
        assert np.isfinite(row[["seed_pearson_r", "seed_ci_low", "seed_ci_high", "phys_pearson_r",
                                "delta_ci_low", "block_length"]].astype(float)).all()


@pytest.mark.parametrize("n", NS)
def test_within_experiment_median_over_n_experiments(n):
    rng = np.random.default_rng(n)
    rows = pd.DataFrame({"experiment_id": [f"e{i:02d}" for i in range(n)]})
    comps = []
    for e in rows["experiment_id"]:
        x = rng.uniform(1, 100, 12)
        comps.append(pd.DataFrame({
            "experiment_id": e, "batch.prefill_tokens": 0, "batch.decode_tokens": 8,
            "phys_prefill_gemm_us": 0.0, "phys_prefill_attn_us": 0.0,
            "phys_decode_gemm_us": x, "phys_decode_attn_us": 2 * x, DURATION: 3 * x + 1}))
    frame = (pd.concat(comps, ignore_index=True) if comps else
             pd.DataFrame(columns=list(_within_columns())).astype(float).astype({"experiment_id": str}))
    t = S.within_experiment_table(frame, n_resamples=B).set_index(["subset", "component"])
    row = t.loc[("pure_decode", "phys_decode_attn_us")]
    assert row["n_experiments"] == n
    if n < 3:
        assert np.isnan(row["median_r"]) and not row["passed"]
        assert row[S.NA_REASON] == (f"{n} experiment(s) with an r < 3 needed for a median "
                                    f"within-experiment r")
    else:
        assert row["median_r"] == pytest.approx(1.0) and row["passed"] and row[S.NA_REASON] == ""
    v = S.within_experiment_verdict(t.reset_index())
    # the prefill criteria are N/A (no prefill); both decode ones pass from 3 experiments on
    assert (v.passing, v.n_na) == ((2, 2) if n >= 3 else (0, 4))
    assert v.label == ("SUPPORTED" if n >= 3 else S.VERDICT_NA)


def _within_columns():
    return ["experiment_id", "batch.prefill_tokens", "batch.decode_tokens", "phys_prefill_gemm_us",
            "phys_prefill_attn_us", "phys_decode_gemm_us", "phys_decode_attn_us", DURATION]


def test_verdict_labels_state_what_cannot_be_judged():
    def verdict(rs, indeterminate=True):
        pure = pd.DataFrame({"subset": [s for s, _ in S.HYPOTHESIS_ROWS],
                             "component": [c for _, c in S.HYPOTHESIS_ROWS],
                             "pearson_r": rs, "n_steps": 50})
        return S.hypothesis_verdict(pure, indeterminate=indeterminate)

    nan = float("nan")
    assert verdict([0.9, 0.95, 0.1, 0.2]).label == "SUPPORTED"
    assert verdict([0.9, 0.85, nan, nan]).label == "SUPPORTED"       # 2 pass: N/A cannot undo it
    assert verdict([0.9, nan, nan, nan]).label == S.VERDICT_INDETERMINATE   # 1 passes, 3 could
    v = verdict([0.5, nan, 0.1, 0.2])
    assert (v.passing, v.n_na, v.label) == (0, 1, "NOT SUPPORTED")     # 0 + 1 < 2: decided
    v = verdict([0.5, nan, nan, 0.2])
    assert (v.passing, v.n_na, v.label) == (0, 2, S.VERDICT_INDETERMINATE)
    assert v.sentence() == ("0/4 components reach r > 0.8 on their pure-phase subset (at least 2 "
                            "needed) (2 of 4 criteria N/A): INDETERMINATE.")
    v = verdict([nan] * 4)
    assert (v.label, v.na_note()) == (S.VERDICT_NA, " (4 of 4 criteria N/A)")
    # the seed's own rule: an N/A criterion does not pass; only "all N/A" is not a verdict
    v = verdict([0.5, nan, nan, 0.2], indeterminate=False)
    assert (v.passing, v.n_na, v.label) == (0, 2, "NOT SUPPORTED")
    assert v.sentence().endswith("needed) (2 of 4 criteria N/A): NOT SUPPORTED.")
    assert verdict([nan] * 4, indeterminate=False).label == S.VERDICT_NA
    assert verdict([nan] * 4, indeterminate=False).status == "Not Testable (every criterion N/A)"


# --------------------------------------------------------------------------- attribution, explain

@pytest.mark.parametrize("n", NS)
def test_attribution_fit(n):
    rng = np.random.default_rng(n)
    terms = {t: rng.uniform(1, 50, n) for t in ATTRIBUTION_TERMS}
    y = 10 + sum(terms.values()) + rng.normal(size=n)
    frame = pd.DataFrame({"experiment_id": "e", "model": "m", "workload": "general",
                          "step.id": np.arange(n), DURATION: y, **terms})
    a = A.attribute(frame, n_resamples=B)
    if n == 0:
        assert len(a.fit_summary) == 0 and len(a.component_attribution) == 0
        return
    fit = a.fit_summary.iloc[0]
    k = len(ATTRIBUTION_TERMS) if n > 1 else 0                        # one row: nothing varies
    assert fit["n_steps"] == n and fit["n_terms"] == k
    if n < 10:
        reason = f"{_steps(n)} < 10 needed for the fit of {k} varying term(s)"
        assert fit[S.NA_REASON] == reason and np.isnan(fit["r2"])
        assert (a.component_attribution[S.NA_REASON] == reason).all()
        assert (a.component_attribution["unidentified_reason"] == A.REASON_TOO_FEW).all()
    else:
        assert fit[S.NA_REASON] == "" and 0.9 < fit["r2"] <= 1
        assert np.isfinite([fit["r2_ci_low"], fit["r2_ci_high"], fit["block_length"]]).all()


def test_attribution_needs_two_rows_beyond_the_terms_and_a_varying_target():
    assert A.fit_na_reason(10, 9) == "10 steps < 11 needed for the fit of 9 varying term(s)"
    assert A.fit_na_reason(11, 9) == ""
    assert A.fit_na_reason(12, 3, target_varies=False) == \
        "the fit: step time constant on the usable steps"


@pytest.mark.parametrize("n", NS)
def test_ols_r2(n):
    x, y = _xy(n)
    r2, k = E.ols_r2(y, x)
    if n < 10:
        assert np.isnan(r2) and k == 0
        assert E.r2_na_reason(y) == f"{_steps(n)} < 10 needed for R²"
    else:
        assert 0.9 < r2 <= 1 and k == 1 and E.r2_na_reason(y) == ""
    if n >= 10:
        assert E.r2_na_reason(np.full(n, 3.0)) == "R²: step time constant on the usable steps"
