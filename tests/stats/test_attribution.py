"""Component attribution (attribution.py): LMG/Shapley shares, the non-negative fit by
enumeration, identification, per-model summaries."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import nnls

from stepdecomp.stats import attribution as A

TERMS = A.TERMS


def _walsh(n: int, bit: int) -> np.ndarray:
    """±1 column, (−1)^(bit of the row index): columns of different bits are orthogonal and
    have mean 0 over n = 2^k rows."""
    return np.where((np.arange(n) >> bit) & 1, -1.0, 1.0)


def _frame(cols: dict, y: np.ndarray, exp: str = "e1", model: str = "m") -> pd.DataFrame:
    n = len(y)
    base = {t: np.zeros(n) for t in TERMS}
    base.update(cols)
    return pd.DataFrame({"experiment_id": exp, "model": model, "workload": "w",
                         "step.id": np.arange(n), **base, "step.duration_us": y})


# --------------------------------------------------------------------------- LMG

def test_lmg_shares_hand_computed():
    """R² of the 8 subsets of 3 terms (bit j = term j): {}=0, {1}=.4, {2}=.3, {3}=.1,
    {1,2}=.5, {1,3}=.5, {2,3}=.4, {1,2,3}=.6. Term 1: 1/3·.4 + 1/6·((.5−.3) + (.5−.1)) +
    1/3·(.6−.4) = .3; term 2: 1/3·.3 + 1/6·(.1 + .3) + 1/3·.1 = .2; term 3: 1/3·.1 +
    1/6·(.1 + .1) + 1/3·.1 = .1 — summing to .6."""
    r2 = np.array([[0.0, 0.4, 0.3, 0.5, 0.1, 0.5, 0.4, 0.6]])
    assert A.lmg_shares(r2, 3)[0] == pytest.approx([0.3, 0.2, 0.1], abs=1e-12)


def test_orthogonal_terms_recover_coefficients_and_shares():
    """Orthogonal ±1 terms: y = 100 + 2·x1 + 1·x2 + 0.5·x3 + 0.5·noise has var 5.5, and each
    term's share is its own variance part: 4/5.5, 1/5.5, 0.25/5.5 (R² 5.25/5.5)."""
    n = 64
    x1, x2, x3, e = (_walsh(n, b) for b in range(4))
    y = 100 + 2 * x1 + x2 + 0.5 * x3 + 0.5 * e
    f = _frame({TERMS[0]: 10 + x1, TERMS[1]: 10 + x2, TERMS[2]: 10 + x3}, y)
    a = A.attribute(f, n_resamples=200)
    t = a.component_attribution.set_index("term")
    assert t.loc[TERMS[:3], "lmg_share_r2"].tolist() == pytest.approx([4 / 5.5, 1 / 5.5,
                                                                       0.25 / 5.5], abs=1e-9)
    assert t.loc[TERMS[:3], "coef"].tolist() == pytest.approx([2.0, 1.0, 0.5], abs=1e-9)
    s = a.fit_summary.iloc[0]
    assert s.r2 == pytest.approx(5.25 / 5.5, abs=1e-12) and s.n_steps == n and s.n_terms == 3
    assert s.intercept_us == pytest.approx(100 - 10 * 3.5, abs=1e-9)
    assert t.lmg_share_r2.sum() == pytest.approx(s.r2, abs=1e-12)
    # all-reduce and LM head are 0 throughout: constant, not fitted, share 0
    assert t.loc[TERMS[3:], "unidentified_reason"].tolist() == ["constant", "constant"]
    assert t.loc[TERMS[3:], "coef"].isna().all() and (t.loc[TERMS[3:], "lmg_share_r2"] == 0).all()
    assert list(a.component_attribution.columns) == A.ATTRIBUTION_COLUMNS
    assert list(a.fit_summary.columns) == A.SUMMARY_COLUMNS
    for lo, v, hi in zip(t.lmg_ci_low[:3], t.lmg_share_r2[:3], t.lmg_ci_high[:3]):
        assert lo <= v + 1e-9 and v - 1e-9 <= hi


def test_enumerated_nnls_matches_scipy():
    rng = np.random.default_rng(3)
    n, k = 300, 4
    X = rng.normal(size=(n, k)) @ rng.normal(size=(k, k))            # correlated terms
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(size=n)
    D = np.column_stack([X, y])
    mu, sd = D.mean(axis=0), D.std(axis=0)
    Z = np.column_stack([np.ones(n), (D - mu) / sd])
    fits = A.fits_from_sums(A._outer_features(Z).sum(axis=0)[None, :], k, mu, sd)
    Xc, yc = X - X.mean(axis=0), y - y.mean()
    for s in range(1, 1 << k):
        T = [j for j in range(k) if s >> j & 1]
        b, _ = nnls(Xc[:, T], yc)
        r2 = 1 - ((yc - Xc[:, T] @ b) ** 2).sum() / (yc ** 2).sum()
        assert fits.r2_subsets[0, s] == pytest.approx(r2, abs=1e-10)
    b, _ = nnls(Xc, yc)
    assert fits.coef[0] == pytest.approx(b, abs=1e-9)
    assert fits.intercept[0] == pytest.approx(y.mean() - X.mean(axis=0) @ b, abs=1e-9)
    shares = A.lmg_shares(fits.r2_subsets, k)[0]
    assert (shares >= 0).all() and shares.sum() == pytest.approx(fits.r2_subsets[0, -1])


# --------------------------------------------------------------------------- identification

def test_bound_constant_and_collinear_terms_are_unidentified():
    rng = np.random.default_rng(4)
    n = 400
    g, pa = rng.uniform(100, 200, n), rng.uniform(0, 50, n)
    da = rng.uniform(0, 30, n)
    # a negative true effect of decode attention is held at the bound 0
    y = 500 + 2 * g + pa - 3 * da + rng.normal(0, 5, n)
    t = A.component_attribution(_frame({TERMS[0]: g, TERMS[1]: pa, TERMS[2]: da}, y),
                                n_resamples=100).set_index("term")
    assert t.loc[TERMS[2], "coef"] == 0 and t.loc[TERMS[2], "unidentified_reason"] == "at_bound"
    assert t.loc[TERMS[0], "identified"] and t.loc[TERMS[0], "coef"] == pytest.approx(2, rel=0.05)
    assert (t.lmg_share_r2 >= 0).all()
    # two near-copies of one time: Belsley flags both (and only them)
    pa2 = pa + rng.normal(0, 0.01, n)
    t2 = A.component_attribution(_frame({TERMS[0]: g, TERMS[1]: pa, TERMS[2]: pa2}, y),
                                 n_resamples=100).set_index("term")
    assert t2.loc[TERMS[1], "unidentified_reason"] == t2.loc[TERMS[2], "unidentified_reason"] == \
        "collinear"
    assert t2.loc[TERMS[0], "identified"]
    # a GEMM time that is nearly its weight-read floor trades off against the intercept
    floor = 14_000 + rng.uniform(0, 20, n)
    s = A.fit_summary(_frame({TERMS[0]: floor, TERMS[1]: pa}, floor + 3 * pa), n_resamples=100)
    assert not s.intercept_identified.iloc[0]
    assert not A.belsley_collinear(np.column_stack([g, pa, da])).any()


def test_too_few_rows_and_missing_columns():
    f = _frame({TERMS[0]: np.arange(1.0, 13.0)}, np.arange(1.0, 13.0) * 2)
    f.loc[3:, "step.duration_us"] = 0                           # durations <= 0 drop out
    a = A.attribute(f, n_resamples=50)
    assert a.fit_summary.n_steps.iloc[0] == 3 and np.isnan(a.fit_summary.r2.iloc[0])
    assert (a.component_attribution.unidentified_reason == "too_few_rows").all()
    with pytest.raises(KeyError, match="step_forward_us"):
        A.attribute(f, target="step_forward_us")


def test_gemm_term_is_derived_from_the_split():
    f = pd.DataFrame({"phys_prefill_gemm_us": [1.0, 2.0], "phys_decode_gemm_us": [3.0, 0.5]})
    assert A.with_gemm(f)[A.GEMM].tolist() == [4.0, 2.5]
    g = f.assign(phys_gemm_us=[9.0, 9.0])
    assert A.with_gemm(g)[A.GEMM].tolist() == [9.0, 9.0]           # the roofline's own column


# --------------------------------------------------------------------------- per model

def test_model_keys_merge_hf_identical_models(tmp_path):
    (tmp_path / "org" / "a").mkdir(parents=True)
    (tmp_path / "org" / "b").mkdir(parents=True)
    (tmp_path / "org" / "c").mkdir(parents=True)
    (tmp_path / "org" / "a" / "config.json").write_text(json.dumps({"h": 1, "l": 2}))
    (tmp_path / "org" / "b" / "config.json").write_text('{"l": 2,\n "h": 1}')   # same config
    (tmp_path / "org" / "c" / "config.json").write_text(json.dumps({"h": 3}))
    (tmp_path / "slugs.yaml").write_text("big: org/b\nbig-hf: org/a\nother: org/c\n")
    comps = pd.DataFrame({"experiment_id": ["e1", "e2", "e3", "e4"],
                          "model": ["big", "big-hf", "other", "nohf"]})
    with pytest.warns(UserWarning, match="slugs.yaml.*nohf"):
        keys = A.model_keys(comps, tmp_path)
    assert keys == {"e1": "org/a", "e2": "org/a", "e3": "org/c", "e4": "nohf"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        by_hf = A.model_keys(comps.assign(hf_id=["org/a", "org/b", "org/c", "org/c"]), tmp_path)
    assert by_hf == {"e1": "org/a", "e2": "org/a", "e3": "org/c", "e4": "org/c"}


def test_bundled_llama_70b_slugs_are_one_model():
    comps = pd.DataFrame({"experiment_id": ["x", "y"], "model": ["llama-2-70b", "llama-2-70b-hf"]})
    keys = A.model_keys(comps)
    assert keys["x"] == keys["y"] == "meta-llama/Llama-2-70b-hf"


def test_attribution_by_model_leaves_unidentified_out():
    t = pd.DataFrame({"experiment_id": ["e1", "e2", "e3"], "term": TERMS[0],
                      "coef": [1.0, 100.0, 3.0], "identified": [True, False, True],
                      "lmg_share_r2": [0.2, 0.4, 0.6]})
    out = A.attribution_by_model(t, {"e1": "m", "e2": "m", "e3": "m"}).iloc[0]
    assert out.n_experiments == 3 and out.n_identified == 2
    assert out.median_coef == 2.0 and out.median_lmg_share_r2 == 0.4
    with pytest.raises(KeyError, match="e3"):
        A.attribution_by_model(t, {"e1": "m", "e2": "m"})


def test_batched_cholesky_solve():
    A_ = np.array([[[4.0, 2.0], [2.0, 3.0]], [[1.0, 1.0], [1.0, 1.0]]])   # 2nd is singular
    b = np.array([[2.0, 5.0], [1.0, 1.0]])
    x = A._solve(A_, b)
    assert x[0] == pytest.approx(np.linalg.solve(A_[0], b[0]), abs=1e-14)   # [-0.5, 2]
    assert x[0] == pytest.approx([-0.5, 2.0], abs=1e-14)
    assert np.isnan(x[1]).all()
