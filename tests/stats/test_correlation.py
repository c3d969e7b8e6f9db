import json
import math
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sstats

from stepdecomp.model import seed as seed_mode, phases
from stepdecomp.traces import load
from stepdecomp.stats import correlation
from stepdecomp.hw.specs import load_gpu_spec, load_model_specs


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    from stepdecomp.core.paths import FIXTURE_ROOT
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", load.TraceWarning)
        ds = load.load_dataset(FIXTURE_ROOT, cache_root=tmp_path_factory.mktemp("cache"))
    return seed_mode.seed_components(ds.steps, load_model_specs(ds.steps["hf_id"]), load_gpu_spec())


def test_phase_counts_on_fixture(components):
    b = phases.phase_breakdown(components)
    assert b["phase"].tolist() == ["pure_prefill", "pure_decode", "mixed"]
    assert b["steps"].tolist() == [10, 249, 53]
    assert b["pct"].tolist() == pytest.approx([100 * 10 / 312, 100 * 249 / 312, 100 * 53 / 312])
    per = phases.phase_breakdown_by_experiment(components)
    assert per.values.tolist() == [[4, 103, 20], [3, 40, 13], [3, 106, 20]]


def test_phase_masks_follow_the_seed_definition():
    df = pd.DataFrame({"batch.prefill_tokens": [0, 5, 5, 0], "batch.decode_tokens": [3, 0, 2, 0]})
    m = phases.phase_masks(df)
    assert m["pure_prefill"].tolist() == [False, True, False, True]   # decode == 0
    assert m["pure_decode"].tolist() == [True, False, False, True]    # prefill == 0
    assert m["mixed"].tolist() == [False, False, True, False]
    assert phases.phase_label(df).tolist() == ["pure_decode", "pure_prefill", "mixed", "empty"]


def test_pearson_na_rules():
    x = np.arange(12, dtype=float)
    y = 2 * x + 5 + np.array([0.1, -0.2] * 6)               # all durations > 0
    r, n = correlation.pearson_r(x, y)
    assert n == 12 and r == pytest.approx(sstats.pearsonr(x, y)[0], abs=1e-12)
    r9, n9 = correlation.pearson_r(x[:9], y[:9])
    assert np.isnan(r9) and n9 == 9                          # fewer than 10 rows
    rz, nz = correlation.pearson_r(np.zeros(12), y)
    assert np.isnan(rz) and nz == 12                         # zero variance of the component
    yy, xx = y.copy(), x.copy()
    yy[[0, 3]] = [0, -1]                                     # durations <= 0 are dropped
    xx[5] = np.nan                                           # a missing component is dropped
    r2, n2 = correlation.pearson_r(xx, yy)
    assert n2 == 9 and np.isnan(r2)                          # 12 - 3 rows left: N/A
    keep = np.ones(13, bool)
    keep[[0, 3, 5]] = False
    r3, n3 = correlation.pearson_r(np.r_[xx, 20.0], np.r_[yy, 46.0])
    assert n3 == 10
    assert r3 == pytest.approx(sstats.pearsonr(np.r_[x, 20.0][keep], np.r_[y, 46.0][keep])[0], abs=1e-12)


def test_pure_phase_table_rows_and_values(components):
    t = correlation.pure_phase_correlations(components)
    assert list(zip(t["subset"], t["component"])) == correlation.PURE_PHASE_ROWS
    pd_ = components[components["batch.prefill_tokens"] == 0]
    pd_ = pd_[pd_["step.duration_us"] > 0]
    expected = np.corrcoef(pd_["decode_gemm_us"], pd_["step.duration_us"])[0, 1]
    row = t[(t.subset == "pure_decode") & (t.component == "decode_gemm_us")].iloc[0]
    assert row.pearson_r == pytest.approx(expected, abs=1e-12) and row.n_steps == 248
    base = t[(t.subset == "pure_decode") & (t.component == "batch.decode_tokens (baseline)")].iloc[0]
    assert base.pearson_r == pytest.approx(np.corrcoef(pd_["batch.decode_tokens"], pd_["step.duration_us"])[0, 1], abs=1e-12)
    assert np.isnan(t[(t.subset == "pure_decode") & (t.component == "decode_attn_us")].pearson_r.iloc[0])
    # one step of the fixture has duration 0: all = 312 steps, 311 usable
    assert t[t.subset == "all"].n_steps.iloc[0] == 311
    # the fixture's 10 pure-prefill steps are exactly enough for an r
    assert t[(t.subset == "pure_prefill") & (t.component == "prefill_gemm_us")].n_steps.iloc[0] == 10


def test_per_experiment_matches_scipy(components):
    t = correlation.per_experiment_correlations(components)
    assert len(t) == 3 * 4
    for (exp, comp), row in t.set_index(["experiment_id", "component"]).iterrows():
        g = components[(components.experiment_id == exp) & (components["step.duration_us"] > 0)]
        assert row.pearson_r == pytest.approx(sstats.pearsonr(g[comp], g["step.duration_us"])[0], abs=1e-9)


def test_verdict_counts_only_r_above_threshold():
    pure = pd.DataFrame({"subset": ["pure_prefill", "pure_prefill", "pure_decode", "pure_decode", "all"],
                         "component": ["prefill_gemm_us", "prefill_attn_us", "decode_gemm_us", "decode_attn_us", "total_analytical_us"],
                         "pearson_r": [0.81, np.nan, 0.8, 0.95, 0.99], "n_steps": [20, 6, 50, 50, 100]})
    v = correlation.hypothesis_verdict(pure)
    assert v.table["passed"].tolist() == [True, False, False, True]   # 0.8 is not > 0.8; N/A fails
    assert v.passing == 2 and v.supported and v.label == "SUPPORTED"
    v1 = correlation.hypothesis_verdict(pure.assign(pearson_r=[0.81, np.nan, 0.5, np.nan, 0.9]))
    assert v1.passing == 1 and not v1.supported


def test_seed_tables_ignore_the_physical_columns(components):
    """Adding the phys_* family must leave every seed table bit-for-bit unchanged."""
    extended = components.assign(phys_total_us=components["total_analytical_us"] * 3.0,
                                 phys_decode_attn_us=1.0)
    pd.testing.assert_frame_equal(correlation.pure_phase_correlations(components),
                                  correlation.pure_phase_correlations(extended))
    pd.testing.assert_frame_equal(correlation.per_experiment_correlations(components),
                                  correlation.per_experiment_correlations(extended))
    pd.testing.assert_frame_equal(phases.phase_breakdown(components), phases.phase_breakdown(extended))


def test_seed_table_has_the_all_rows_of_the_seed_analysis(components):
    """The seed's analysis wrote `all` rows for total, prefill GEMM and decode GEMM."""
    t = correlation.pure_phase_correlations(components)
    rows = t[t.subset == "all"]
    assert rows["component"].tolist() == ["total_analytical_us", "prefill_gemm_us", "decode_gemm_us"]
    assert rows["n_steps"].tolist() == [311, 311, 311]
    usable = components[components["step.duration_us"] > 0]
    for comp in ("prefill_gemm_us", "decode_gemm_us"):
        r = rows[rows.component == comp].pearson_r.iloc[0]
        assert r == pytest.approx(sstats.pearsonr(usable[comp], usable["step.duration_us"])[0], abs=1e-12)


def test_pearson_moments_are_exactly_rounded_sums():
    """r from correctly rounded moment sums: equal to the exact rational computation of the
    same centred products (rounded once), independent of summation order."""
    from fractions import Fraction
    x = np.linspace(0.0, 1.0, 1001) ** 2
    y = 3.0 * x + np.sin(np.arange(1001.0)) + 2.0        # durations > 0: every row is used
    r, n = correlation.pearson_r(x, y)
    assert n == 1001 and correlation.pearson_r(x[::-1], y[::-1])[0] == r
    xc, yc = x - correlation.fsum(x) / len(x), y - correlation.fsum(y) / len(y)
    exact = [float(sum(Fraction(v) for v in a * b)) for a, b in ((xc, yc), (xc, xc), (yc, yc))]
    assert r == exact[0] / math.sqrt(exact[1] * exact[2])


def test_phases_refuse_steps_without_token_counts():
    df = pd.DataFrame({"batch.prefill_tokens": pd.array([1, None], dtype="Int64"),
                       "batch.decode_tokens": [0, 1]})
    with pytest.raises(ValueError, match="1 step\\(s\\) have no 'batch.prefill_tokens'"):
        phases.phase_masks(df)


def _coretypes() -> list[str]:
    """OpenBLAS kernels this CPU can run: the oldest (SSE3) and the newest it supports."""
    try:
        flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split())
    except (OSError, StopIteration):
        return []
    newest = ("SkylakeX" if "avx512f" in flags else "Haswell" if "avx2" in flags
              else "Sandybridge" if "avx" in flags else None)
    return ["Prescott"] + ([newest] if newest else [])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or len(_coretypes()) < 2,
                    reason="OPENBLAS_CORETYPE selects x86-64 kernels")
@pytest.mark.integration
def test_tables_are_byte_identical_under_other_blas_kernels(tmp_path):
    """Stand-in for a second machine: the same tables, written under OpenBLAS kernels the CPU
    picks differently (OPENBLAS_CORETYPE is set for these subprocesses only), are the same
    bytes as here. blas_dot.txt shows what a BLAS dot of the same data does meanwhile."""
    import determinism_probe

    probe = Path(determinism_probe.__file__)
    procs = {core: subprocess.Popen([sys.executable, str(probe), str(tmp_path / core)],
                                    env={**os.environ, "OPENBLAS_CORETYPE": core},
                                    stderr=subprocess.PIPE)
             for core in _coretypes()}
    determinism_probe.write_tables(tmp_path / "here")
    for core, p in procs.items():
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    here = {f.name: f.read_bytes() for f in (tmp_path / "here").glob("*.csv")}
    assert len(here) == 9
    dots = {"here": (tmp_path / "here" / "blas_dot.txt").read_text()}
    for core in procs:
        dots[core] = (tmp_path / core / "blas_dot.txt").read_text()
        there = {f.name: f.read_bytes() for f in (tmp_path / core).glob("*.csv")}
        assert there == here, f"tables differ under OPENBLAS_CORETYPE={core} (BLAS dots: {dots})"
