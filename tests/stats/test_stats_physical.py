"""Physical-mode statistics, figures and report section (stats / plots / report additions)."""

import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import stats as sstats

matplotlib.use("Agg")

from stepdecomp.stats import attribution, resample, correlation
from stepdecomp.figures import plots
from stepdecomp import report  # noqa: E402
from report_tables import physical_section  # noqa: E402
from stepdecomp.hw.specs import load_gpu_spec  # noqa: E402

PHYS = correlation.PHYS_COMPONENTS


def _frame(n_per_exp: int = 40, seed: int = 1) -> pd.DataFrame:
    """A small components table with every column the physical functions read: three
    experiments, each with pure-prefill, pure-decode and mixed steps."""
    rng = np.random.default_rng(seed)
    parts = []
    for i, (model, workload, tp, lb) in enumerate([("m-a", "general", 1, 3000.0),
                                                   ("m-b", "codegen", 2, 5000.0),
                                                   ("m-c", "reasoning", 4, 8000.0)]):
        n = n_per_exp
        kind = np.arange(n) % 4                     # 0 prefill, 1-2 decode, 3 mixed
        p = np.where(kind == 0, rng.integers(500, 2048, n),
                     np.where(kind == 3, rng.integers(100, 1000, n), 0))
        d = np.where(kind == 0, 0, rng.integers(1, 64, n))
        pg = p * 2.0
        pa = p * 0.1
        dg = np.where(d > 0, lb * (1 + d / 300), 0.0)
        da = d * rng.uniform(5, 50, n)
        ar = (p + d) * 0.3 * (tp > 1)
        lm = np.where(d > 0, 50.0, 0.0)
        total = pg + pa + dg + da + ar + lm
        dur = 1.5 * total + 800 + rng.normal(0, 100, n)
        flops = (p + d) * 1e10
        parts.append(pd.DataFrame({
            "experiment_id": f"2026010{i}-000000-{model}-tp{tp}-{workload}", "model": model,
            "workload": workload, "tp": tp, "step.id": np.arange(n),
            "batch.prefill_tokens": p, "batch.decode_tokens": d, "step.duration_us": dur,
            "total_analytical_us": (p + d) * 1.3,
            "phys_prefill_gemm_us": pg, "phys_prefill_attn_us": pa, "phys_decode_gemm_us": dg,
            "phys_decode_attn_us": da, "phys_allreduce_us": ar, "phys_lm_head_us": lm,
            "phys_total_us": total, "phys_lower_bound_us": lb,
            "phys_arith_intensity_flops_per_byte": (p + d) / 1.0,
            "phys_achieved_tflops": flops / (dur * 1e-6) / 1e12,
            "phys_attn_from_journeys": True}))
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- r variants

def test_spearman_and_loglog_values():
    x = np.arange(1, 13, dtype=float)
    y = x ** 3
    rho, n = correlation.spearman_r(x, y)
    assert n == 12 and rho == pytest.approx(1.0)
    r, _ = correlation.pearson_r(x, y)
    assert r < 0.95                                          # Pearson sees the curvature
    rl, nl = correlation.loglog_r(x, 7 * x ** 2)
    assert nl == 12 and rl == pytest.approx(1.0)             # a power law is a line in log-log
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(size=50), rng.lognormal(size=50)
    assert correlation.spearman_r(a, b)[0] == pytest.approx(sstats.spearmanr(a, b)[0], abs=1e-12)
    assert correlation.loglog_r(a, b)[0] == pytest.approx(np.corrcoef(np.log(a), np.log(b))[0, 1],
                                                    abs=1e-12)
    ties = np.r_[np.ones(6), np.full(6, 2.0)]                # average ranks for ties
    assert correlation.spearman_r(ties, y)[0] == pytest.approx(sstats.spearmanr(ties, y)[0], abs=1e-12)


def test_spearman_and_loglog_na_rules():
    x = np.arange(1, 13, dtype=float)
    y = 2 * x + 1
    assert np.isnan(correlation.spearman_r(x[:9], y[:9])[0])       # fewer than 10 rows
    assert np.isnan(correlation.spearman_r(np.ones(12), y)[0])     # constant component
    yy = y.copy()
    yy[0] = 0                                                # duration <= 0 dropped
    assert correlation.spearman_r(x, yy)[1] == 11
    # log-log: only rows with both > 0 — three zero components leave 9 rows: N/A
    xz = x.copy()
    xz[:3] = 0
    r, n = correlation.loglog_r(xz, y)
    assert n == 9 and np.isnan(r)
    r, n = correlation.loglog_r(np.r_[xz, 13.0], np.r_[y, 27.0])
    assert n == 10 and r == pytest.approx(np.corrcoef(np.log(np.r_[x[3:], 13.0]),
                                                      np.log(np.r_[y[3:], 27.0]))[0, 1])
    # durations below 1 µs have negative logs and must not be dropped as "<= 0"
    r, n = correlation.loglog_r(x, x / 100)
    assert n == 12 and r == pytest.approx(1.0)
    assert np.isnan(correlation.loglog_r(x, np.full(12, 5.0))[0])  # constant duration


# --------------------------------------------------------------------------- bootstrap

def test_bootstrap_matches_a_plain_loop_and_brackets_r():
    rng = np.random.default_rng(3)
    x = rng.normal(size=200)
    y = 0.7 * x + rng.normal(scale=0.7, size=200) + 10
    lo, hi = correlation.bootstrap_pearson_ci(x, y, n_resamples=400, seed=11)
    # the same draws, one resample at a time (one chunk covers all 400 resamples here)
    idx = np.random.default_rng(11).integers(0, 200, size=(400, 200), dtype=np.int32)
    rs = [np.corrcoef(x[i], y[i])[0, 1] for i in idx]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(rs, [0.025, 0.975])), abs=1e-10)
    r, _ = correlation.pearson_r(x, y)
    assert lo < r < hi and hi - lo < 0.3
    assert correlation.bootstrap_pearson_ci(x, y, 400, 11) == (lo, hi)          # reproducible
    assert correlation.bootstrap_pearson_ci(x, y, 400, 12) != (lo, hi)          # seed matters
    lo90, hi90 = correlation.bootstrap_pearson_ci(x, y, 400, 11, confidence=0.9)
    assert lo < lo90 < r < hi90 < hi


def test_bootstrap_cap_rescales_to_n():
    rng = np.random.default_rng(5)
    x = rng.normal(size=4000)
    y = 0.5 * x + rng.normal(size=4000) + 10
    r, _ = correlation.pearson_r(x, y)
    full = correlation.bootstrap_pearson_ci(x, y, 400, 0, max_rows=None)
    capped = correlation.bootstrap_pearson_ci(x, y, 400, 0, max_rows=500)
    assert capped[0] < r < capped[1]
    width_ratio = (capped[1] - capped[0]) / (full[1] - full[0])
    assert 0.75 < width_ratio < 1.33                         # rescaled to n, not to 500
    # without rescaling a 500-row resample would be sqrt(8) ≈ 2.8 times as wide
    assert correlation.bootstrap_pearson_ci(x, y, 400, 0, max_rows=500) == capped


def test_bootstrap_na():
    x = np.arange(9.0)
    assert all(np.isnan(v) for v in correlation.bootstrap_pearson_ci(x, x + 1))           # n < 10
    assert all(np.isnan(v) for v in correlation.bootstrap_pearson_ci(np.ones(30), np.arange(1.0, 31)))


# --------------------------------------------------------------------------- subsets, tables

def test_prefill_dominated_mask():
    f = pd.DataFrame({"phys_prefill_gemm_us": [9, 8, 0, 5, 1, 0.5],
                      "phys_prefill_attn_us": [0, 0, 0, 5, 0, 0.4],
                      "phys_decode_gemm_us": [1, 1, 0, 0, 0, 0.1],
                      "phys_decode_attn_us": [0, 1, 0, np.nan, 0, 0.0]})
    # 0.9 exactly (in), 0.8 (out), no time (out), unknown decode attention (out), pure
    # prefill (in), 0.9 from both prefill parts (in)
    assert correlation.prefill_dominated(f).tolist() == [True, False, False, False, True, True]
    assert correlation.prefill_dominated(f, share=0.95).tolist() == [False, False, False, False, True,
                                                               False]


def test_physical_pure_phase_table():
    c = _frame()
    t = correlation.physical_pure_phase_correlations(c, n_resamples=100)
    assert list(t.columns) == ["subset", "component", "pearson_r", "ci_low", "ci_high",
                               "ci_method", "spearman_r", "loglog_r", "n_steps", "n_loglog",
                               "na_reason"]
    assert (t.ci_method == resample.METHOD_CLUSTER).all()
    assert (t.na_reason[t.pearson_r.notna() & t.loglog_r.notna()] == "").all()
    assert t.na_reason[(t.subset == "pure_prefill") & (t.component == "phys_decode_gemm_us")].tolist() \
        == ["Pearson r: component constant on the usable steps"]
    assert list(zip(t.subset, t.component))[:5] == [("pure_prefill", col) for col in
                                                    [*PHYS, "phys_total_us"]]
    assert t.subset.unique().tolist() == ["pure_prefill", "prefill_dominated", "pure_decode", "all"]
    pd_ = c[(c["batch.prefill_tokens"] == 0)]
    row = t[(t.subset == "pure_decode") & (t.component == "phys_decode_attn_us")].iloc[0]
    assert row.n_steps == len(pd_) == 60
    assert row.pearson_r == pytest.approx(np.corrcoef(pd_["phys_decode_attn_us"],
                                                      pd_["step.duration_us"])[0, 1], abs=1e-12)
    assert row.spearman_r == pytest.approx(sstats.spearmanr(pd_["phys_decode_attn_us"],
                                                            pd_["step.duration_us"])[0], abs=1e-12)
    assert row.ci_low < row.pearson_r < row.ci_high
    # the interval resamples the three experiments whole: the cluster bootstrap's, seeded
    assert (row.ci_low, row.ci_high) == resample.cluster_bootstrap_pearson(
        pd_["phys_decode_attn_us"], pd_["step.duration_us"], pd_["experiment_id"], 100, 0)
    # decode times are 0 on pure prefill: zero variance, N/A; log-log has no rows
    na = t[(t.subset == "pure_prefill") & (t.component == "phys_decode_gemm_us")].iloc[0]
    assert np.isnan(na.pearson_r) and np.isnan(na.ci_low) and na.n_loglog == 0
    dom = correlation.prefill_dominated(c)
    assert t[t.subset == "prefill_dominated"].n_steps.iloc[0] == dom.sum()
    v = correlation.physical_verdict(t)
    assert list(zip(v.table.subset, v.table.component)) == correlation.PHYSICAL_HYPOTHESIS_ROWS
    assert list(v.table.columns) == ["subset", "component", "pearson_r", "n_steps", "passed"]


def test_physical_verdict_counts():
    rows = [("pure_prefill", "phys_prefill_gemm_us", 0.95), ("pure_prefill", "phys_prefill_attn_us", np.nan),
            ("prefill_dominated", "phys_prefill_gemm_us", 0.85),
            ("prefill_dominated", "phys_prefill_attn_us", 0.81),
            ("pure_decode", "phys_decode_gemm_us", 0.5), ("pure_decode", "phys_decode_attn_us", 0.80)]
    t = pd.DataFrame(rows, columns=["subset", "component", "pearson_r"]).assign(n_steps=100)
    v = correlation.physical_verdict(t)
    assert v.passing == 1 and not v.supported               # N/A fails, 0.80 is not > 0.8
    v2 = correlation.physical_verdict(t, "prefill_dominated")
    assert v2.passing == 2 and v2.supported and v2.table.subset.tolist()[:2] == ["prefill_dominated"] * 2


def test_physical_per_experiment():
    c = _frame()
    t = correlation.physical_per_experiment_correlations(c, n_resamples=100)
    assert len(t) == 3 and t.journey_coverage.tolist() == [1.0, 1.0, 1.0]
    g = c[c.model == "m-b"]
    row = t[t.model == "m-b"].iloc[0]
    assert row.seed_pearson_r == pytest.approx(np.corrcoef(g.total_analytical_us, g["step.duration_us"])[0, 1])
    assert row.phys_pearson_r == pytest.approx(np.corrcoef(g.phys_total_us, g["step.duration_us"])[0, 1])
    assert row.delta_r == pytest.approx(row.phys_pearson_r - row.seed_pearson_r)
    assert row.seed_n_steps == row.phys_n_steps == 40
    # log-log rows: both sides > 0 (the frame's components and durations are all positive here)
    assert row.seed_n_loglog == row.phys_n_loglog == int(((g.phys_total_us > 0) & (g["step.duration_us"] > 0)).sum())
    assert row.phys_ci_low < row.phys_pearson_r < row.phys_ci_high
    assert list(t.columns[-7:]) == ["delta_r", "delta_ci_low", "delta_ci_high", "delta_spearman",
                                    "block_length", "ci_method", "na_reason"]
    assert row.na_reason == ""
    # Δr's interval is paired: the same block resamples as the two r intervals
    y = np.where(g["step.duration_us"] > 0, g["step.duration_us"], np.nan)
    paired = resample.block_bootstrap_paired(g.total_analytical_us.to_numpy(),
                                             g.phys_total_us.to_numpy(), y, 100, 0)
    assert (row.delta_ci_low, row.delta_ci_high) == paired.delta
    assert (row.phys_ci_low, row.phys_ci_high) == paired.b and row.block_length == paired.block_length
    assert row.delta_spearman == pytest.approx(row.phys_spearman_r - row.seed_spearman_r)
    # no journeys: the physical total is NaN on decode steps, only the 10 prefill steps remain
    c2 = c.copy()
    nj = (c2.model == "m-a") & (c2["batch.decode_tokens"] > 0)
    c2.loc[nj, ["phys_decode_attn_us", "phys_total_us"]] = np.nan
    c2.loc[c2.model == "m-a", "phys_attn_from_journeys"] = False
    t2 = correlation.physical_per_experiment_correlations(c2, n_resamples=50)
    r2 = t2[t2.model == "m-a"].iloc[0]
    assert r2.phys_n_steps == 10 and r2.seed_n_steps == 40 and r2.journey_coverage == 0.0
    # an N/A r has no interval, and Δr none either
    c3 = c2.copy()
    c3.loc[c3.model == "m-a", "phys_total_us"] = 5.0
    r3 = correlation.physical_per_experiment_correlations(c3, n_resamples=50)
    r3 = r3[r3.model == "m-a"].iloc[0]
    assert np.isnan(r3.phys_pearson_r) and np.isnan(r3.phys_ci_low) and np.isnan(r3.delta_ci_high)
    assert not np.isnan(r3.seed_ci_low)
    assert r3.na_reason == "phys: Pearson r: component constant on the usable steps"


def test_within_experiment_correlations_and_table():
    c = _frame()
    per = correlation.within_experiment_correlations(c)
    assert len(per) == 3 * len(correlation.WITHIN_ROWS)
    g = c[(c.model == "m-b") & (c["batch.prefill_tokens"] == 0)]
    row = per[(per.model == "m-b") & (per.subset == "pure_decode")
              & (per.component == "phys_decode_attn_us")].iloc[0]
    assert row.n_steps == len(g) == 20
    assert row.pearson_r == pytest.approx(np.corrcoef(g.phys_decode_attn_us, g["step.duration_us"])[0, 1])
    t = correlation.within_experiment_table(c, n_resamples=200)
    assert list(t.columns) == ["subset", "component", "median_r", "ci_low", "ci_high",
                               "ci_method", "n_experiments", "passed", "na_reason"]
    assert list(zip(t.subset, t.component)) == correlation.WITHIN_ROWS
    da = t[(t.subset == "pure_decode") & (t.component == "phys_decode_attn_us")].iloc[0]
    rs = per[(per.subset == "pure_decode") & (per.component == "phys_decode_attn_us")].pearson_r
    assert da.n_experiments == 3 and da.median_r == pytest.approx(float(np.median(rs)))
    assert da.ci_low <= da.median_r <= da.ci_high
    assert (da.ci_low, da.ci_high) == resample.cluster_bootstrap_median(rs.to_numpy(), 200, 0)
    # 10 pure-prefill steps per experiment: r exists in all three
    pp = t[(t.subset == "pure_prefill") & (t.component == "phys_prefill_gemm_us")].iloc[0]
    assert pp.n_experiments == 3
    # fewer experiments than WITHIN_MIN_EXPERIMENTS with an r: N/A, not passed
    two = correlation.within_experiment_table(c[c.model != "m-c"], n_resamples=50)
    assert correlation.WITHIN_MIN_EXPERIMENTS == 3
    assert two.n_experiments.max() == 2 and two.median_r.isna().all() and not two.passed.any()


def test_within_experiment_verdict_counts():
    rows = [("pure_prefill", "phys_prefill_gemm_us", 0.95, 3), ("pure_prefill", "phys_prefill_attn_us", np.nan, 1),
            ("prefill_dominated", "phys_prefill_gemm_us", 0.85, 4),
            ("prefill_dominated", "phys_prefill_attn_us", 0.81, 4),
            ("pure_decode", "phys_decode_attn_us", 0.80, 16)]         # decode GEMM row absent
    t = pd.DataFrame(rows, columns=["subset", "component", "median_r", "n_experiments"]).assign(
        ci_low=0.0, ci_high=1.0)
    v = correlation.within_experiment_verdict(t)
    assert v.passing == 1 and not v.supported                 # N/A and 0.80 fail; absent fails
    assert v.table.n_experiments.tolist() == [3, 1, 0, 16]
    assert "1/4 components have a median within-experiment r > 0.8" in v.sentence()
    v2 = correlation.within_experiment_verdict(t, "prefill_dominated")
    assert v2.passing == 2 and v2.supported and v2.label == "SUPPORTED"
    assert list(v2.table.columns) == ["subset", "component", "median_r", "ci_low", "ci_high",
                                      "n_experiments", "passed"]


def test_iid_reference_interval_is_narrower_than_the_block_one():
    """On an autocorrelated series the iid interval understates the uncertainty of r."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(6)
    n = 2000
    x = lfilter([1.0], [1.0, -0.95], rng.standard_normal(n))
    y = x + lfilter([1.0], [1.0, -0.95], rng.standard_normal(n)) + 100
    lo, hi = correlation.bootstrap_pearson_ci(x, y, 400, 0)
    blk = resample.block_bootstrap_paired(x, x, y, 400, 0).a
    assert (blk[1] - blk[0]) > 2 * (hi - lo)


def test_lower_bound_check():
    f = pd.DataFrame({"experiment_id": ["x"] * 7 + ["y"] * 3, "model": ["mx"] * 7 + ["my"] * 3,
                      "workload": "w",
                      "step.duration_us": [50, 150, 99, 100, 200, 10, 0, 500, 600, 700],
                      "phys_lower_bound_us": [100, 100, 100, 100, 100, 0, 100, 400, 400, 400]})
    t = correlation.lower_bound_check(f).set_index("experiment_id")
    # x: the step without tokens (bound 0) and the one with duration 0 are not counted;
    # 50 and 99 are below, 100 is not
    assert t.loc["x", "n_steps"] == 5 and t.loc["x", "n_below"] == 2
    assert t.loc["x", "fraction_below"] == pytest.approx(0.4)
    assert t.loc["x", "lower_bound_us"] == 100 and t.loc["x", "median_ratio"] == pytest.approx(1.0)
    assert bool(t.loc["x", "flagged"]) and not bool(t.loc["y", "flagged"])
    assert t.loc["y", "fraction_below"] == 0 and t.loc["y", "median_ratio"] == pytest.approx(1.5)
    assert list(correlation.lower_bound_check(f).columns[:7]) == [
        "experiment_id", "model", "workload", "n_steps", "n_below", "fraction_below", "lower_bound_us"]


def test_seed_tables_unchanged_by_physical_columns():
    """The seed functions ignore the phys_* columns (their outputs are the seed's)."""
    c = _frame()
    seed_cols = [col for col in c.columns if not col.startswith("phys_")]
    for extra in ("prefill_gemm_us", "prefill_attn_us", "decode_gemm_us", "decode_attn_us"):
        c[extra] = c["batch.prefill_tokens"] * 0.1 if "prefill" in extra else c["batch.decode_tokens"] * 0.1
    seed_cols += ["prefill_gemm_us", "prefill_attn_us", "decode_gemm_us", "decode_attn_us"]
    pd.testing.assert_frame_equal(correlation.pure_phase_correlations(c),
                                  correlation.pure_phase_correlations(c[seed_cols]))
    pd.testing.assert_frame_equal(correlation.per_experiment_correlations(c),
                                  correlation.per_experiment_correlations(c[seed_cols]))


# --------------------------------------------------------------------------- figures

def test_physical_plots_return_figures():
    import matplotlib.pyplot as plt

    c = _frame()
    per = correlation.physical_per_experiment_correlations(c, n_resamples=50)
    per.loc[0, ["phys_pearson_r", "phys_ci_low", "phys_ci_high"]] = np.nan   # an N/A r
    figs = [plots.roofline_plot(c, load_gpu_spec(), max_points=30, seed=1),
            plots.component_shares_by_phase(c), plots.observed_vs_physical(c, max_points=30),
            plots.seed_vs_physical_r(per)]
    for fig in figs:
        assert isinstance(fig, Figure)
        plt.close(fig)


# --------------------------------------------------------------------------- fixture end to end

@pytest.fixture(scope="module")
def fixture_components(tmp_path_factory):
    from stepdecomp.model import seed as seed_mode, reconstruct, physical as physical_mode
    from stepdecomp.traces import load
    from stepdecomp.core.paths import FIXTURE_ROOT
    from stepdecomp.hw.specs import load_model_specs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", load.TraceWarning)
        ds = load.load_dataset(FIXTURE_ROOT, cache_root=tmp_path_factory.mktemp("cache"))
    specs, gpu = load_model_specs(ds.steps["hf_id"]), load_gpu_spec()
    seed = seed_mode.seed_components(ds.steps, specs, gpu)
    merged, rec = reconstruct.attach_reconstruction(ds.steps, ds.journeys)
    phys = physical_mode.physical_components(merged, specs, gpu)
    return seed_mode.with_physical(seed, phys), rec


def test_fixture_end_to_end(fixture_components):
    c, rec = fixture_components
    pure = correlation.physical_pure_phase_correlations(c, n_resamples=100)
    assert len(pure) == 4 * 5
    pp = pure[(pure.subset == "pure_prefill") & (pure.component == "phys_prefill_gemm_us")].iloc[0]
    assert pp.n_steps == 10                                   # the fixture's pure-prefill steps
    lb = correlation.lower_bound_check(c)
    direct = ((c["step.duration_us"] > 0) & (c["phys_lower_bound_us"] > 0)
              & (c["step.duration_us"] < c["phys_lower_bound_us"])).groupby(c["experiment_id"]).sum()
    assert lb.set_index("experiment_id")["n_below"].to_dict() == direct.to_dict()
    per = correlation.physical_per_experiment_correlations(c, n_resamples=100)
    fit = attribution.attribute(c, n_resamples=100)
    assert len(per) == len(fit.fit_summary) == 3
    assert (fit.fit_summary["r2"].dropna() >= 0).all()
    shares = fit.component_attribution.dropna(subset=["lmg_share_r2"])
    assert (shares["lmg_share_r2"] >= 0).all()
    total = shares.groupby("experiment_id")["lmg_share_r2"].sum()
    r2 = fit.fit_summary.set_index("experiment_id")["r2"]
    assert total.to_numpy() == pytest.approx(r2[total.index].to_numpy(), abs=1e-9)
    within = correlation.within_experiment_table(c, n_resamples=100)
    md = physical_section(report.PhysicalTables(
        pure, per, lower_bound=lb, reconstruction=rec, attribution=fit.component_attribution,
        fit_summary=fit.fit_summary, within=within))
    for name in per["model"]:
        assert name in md


def test_within_experiment_needs_only_the_experiment_id():
    c = _frame()
    full = correlation.within_experiment_table(c, n_resamples=50)
    pruned = correlation.within_experiment_table(c.drop(columns=["model", "workload"]), n_resamples=50)
    pd.testing.assert_frame_equal(full, pruned)
    assert list(correlation.within_experiment_correlations(c.drop(columns=["model", "workload"])).columns[:2]) \
        == ["experiment_id", "subset"]
