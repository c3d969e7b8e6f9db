"""Resampling estimators (resample.py): block length, stationary and cluster bootstraps on
moment sums, BCa intervals, the paired Δr interval."""

import math

import numpy as np
import pytest

from stepdecomp.stats import resample as R


def _ar1(phi: float, n: int, seed: int) -> np.ndarray:
    """x_t = φ x_{t−1} + e_t, x_0 = e_0."""
    from scipy.signal import lfilter

    return lfilter([1.0], [1.0, -phi], np.random.default_rng(seed).standard_normal(n))


# --------------------------------------------------------------------------- block length

def test_block_length_grows_with_autocorrelation():
    n = 4000
    lengths = [R.block_length(_ar1(phi, n, 7)) for phi in (0.0, 0.5, 0.8, 0.95)]
    assert lengths[0] < 2.5                                   # iid: about one step
    assert lengths == sorted(lengths) and lengths[-1] > 10 * lengths[0]
    # the joint length of several series is the longest
    x, z = _ar1(0.0, n, 1), _ar1(0.9, n, 2)
    assert R.block_length(x, z) == pytest.approx(R.block_length(z))
    assert R.block_length(np.ones(50)) == R.MIN_BLOCK_LENGTH  # constant: nothing to estimate
    assert R.block_length(np.ones(50), x[:50]) == pytest.approx(R.block_length(x[:50]))


def test_block_length_errors():
    with pytest.raises(R.ResampleError, match="at least one series"):
        R.block_length()
    with pytest.raises(R.ResampleError, match="different lengths"):
        R.block_length(np.arange(10.0), np.arange(9.0))
    assert np.isnan(R.block_length(np.arange(7.0)))       # too short: N/A, not an error
    with pytest.raises(R.ResampleError, match="NaN or infinite"):
        R.block_length(np.r_[np.arange(10.0), np.nan])


# --------------------------------------------------------------------------- resampled sums

def test_stationary_sums_rows_and_means():
    n = 500
    F = np.column_stack([np.ones(n), np.arange(n, dtype=float)])
    s = R.stationary_sums(F, 20.0, 2000, np.random.default_rng(1))
    assert s.shape == (2000, 2)
    assert (s[:, 0] == n).all()                               # every resample has n rows
    assert s[:, 1].mean() / n == pytest.approx((n - 1) / 2, rel=0.02)   # stationary: unbiased
    again = R.stationary_sums(F, 20.0, 2000, np.random.default_rng(1))
    assert (again == s).all()                                 # seeded
    # block length n/…: whole-series blocks; length 1: the iid bootstrap's spread of a mean
    x = np.random.default_rng(0).standard_normal(n)
    iid = R.stationary_sums(np.column_stack([np.ones(n), x]), 1.0, 4000, np.random.default_rng(2))
    assert iid[:, 1].std() / n == pytest.approx(x.std() / math.sqrt(n), rel=0.06)


def test_stationary_sums_see_autocorrelation():
    """The block bootstrap's spread of the mean of an AR(1) series approaches the true one,
    which iid resampling understates by sqrt((1+φ)/(1−φ))."""
    phi, n = 0.8, 4000
    x = _ar1(phi, n, 3)
    F = np.column_stack([np.ones(n), x])
    sd_iid = R.stationary_sums(F, 1.0, 1000, np.random.default_rng(4))[:, 1].std() / n
    sd_blk = R.stationary_sums(F, R.block_length(x), 1000, np.random.default_rng(4))[:, 1].std() / n
    assert sd_blk / sd_iid == pytest.approx(math.sqrt((1 + phi) / (1 - phi)), rel=0.3)


def test_stationary_sums_errors():
    with pytest.raises(R.ResampleError, match=r"\(n, P\)"):
        R.stationary_sums(np.arange(5.0), 2.0)
    with pytest.raises(R.ResampleError, match=r"\(n, P\)"):
        R.stationary_sums(np.zeros((0, 2)), 2.0)
    with pytest.raises(R.ResampleError, match="mean block length"):
        R.stationary_sums(np.ones((5, 1)), 0.5)


def test_block_jackknife_sums_by_hand():
    F = np.arange(1.0, 8.0)[:, None]                          # 1..7, total 28
    # L = 2.5 -> blocks of 3 rows: [1,2,3], [4,5,6,7] (the last takes the remainder)
    assert R.block_jackknife_sums(F, 2.5)[:, 0].tolist() == [22.0, 6.0]
    assert R.block_jackknife_sums(F, 1.0)[:, 0].tolist() == [28.0 - v for v in range(1, 8)]


def test_cluster_sums_and_errors():
    S = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    boot, jack = R.cluster_sums(S, 500, np.random.default_rng(0))
    assert jack.tolist() == [[5.0, 50.0], [4.0, 40.0], [3.0, 30.0]]
    # each resample is 3 clusters: its first column is a sum of three of 1, 2, 3
    assert set(np.unique(boot[:, 0])) <= set(range(3, 10)) and (boot[:, 1] == 10 * boot[:, 0]).all()
    with pytest.raises(R.ResampleError, match="at least 2 clusters"):
        R.cluster_sums(S[:1])


# --------------------------------------------------------------------------- Pearson, intervals

def test_pearson_from_sums_matches_corrcoef():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=200) * 50 + 1e4, rng.normal(size=200)
    y = y + 0.3 * (x - 1e4) / 50
    F = R.pair_features(x, y)
    assert float(R.pearson_from_sums(F.sum(axis=0))) == pytest.approx(np.corrcoef(x, y)[0, 1],
                                                                      abs=1e-12)
    x2 = x.copy()
    x2[:20] = np.nan                                          # unusable rows: no sums
    F2 = R.pair_features(x2, y)
    assert F2[:20].sum() == 0 and F2[:, 0].sum() == 180
    assert float(R.pearson_from_sums(F2.sum(axis=0))) == pytest.approx(
        np.corrcoef(x[20:], y[20:])[0, 1], abs=1e-12)
    assert np.isnan(R.pearson_from_sums(R.pair_features(np.ones(5), y[:5]).sum(axis=0)))
    assert R.pair_features(np.full(3, np.nan), np.ones(3)).sum() == 0


def test_bca_reduces_to_percentile_without_bias_or_skew():
    reps = np.linspace(-1, 1, 2001)                           # median 0 = the estimate
    jack = np.array([-1.0, 1.0])                              # symmetric: a = 0
    assert R.bca_interval(0.0, reps, jack) == pytest.approx(R.percentile_interval(reps), abs=1e-12)
    assert R.percentile_interval(reps) == pytest.approx((-0.95, 0.95), abs=1e-12)
    # an estimate above the replicates' median shifts both ends up (bias correction)
    lo, hi = R.bca_interval(0.2, reps, jack)
    assert lo > -0.95 and hi > 0.95
    assert all(np.isnan(v) for v in R.bca_interval(float("nan"), reps, jack))
    assert all(np.isnan(v) for v in R.bca_interval(0.0, np.array([1.0]), jack))
    assert all(np.isnan(v) for v in R.percentile_interval(np.array([np.nan, 1.0])))
    with pytest.raises(R.ResampleError, match="confidence"):
        R.bca_interval(0.0, reps, jack, confidence=1.0)
    with pytest.raises(R.ResampleError, match="confidence"):
        R.percentile_interval(reps, confidence=0.0)


def test_paired_delta_uses_the_same_resamples():
    rng = np.random.default_rng(8)
    n = 600
    x = _ar1(0.7, n, 9)
    y = x + rng.normal(size=n)
    p = R.block_bootstrap_paired(x, x, y, n_resamples=400, seed=1)
    assert p.delta == (0.0, 0.0)                              # identical series: Δr ≡ 0
    assert p.a == p.b and p.a[0] < np.corrcoef(x, y)[0, 1] < p.a[1]
    xb = x + rng.normal(scale=0.5, size=n)                    # a noisier predictor
    q = R.block_bootstrap_paired(x, xb, y, n_resamples=400, seed=1)
    d = np.corrcoef(xb, y)[0, 1] - np.corrcoef(x, y)[0, 1]
    assert q.delta[0] < d < q.delta[1] < 0
    # the paired interval is far narrower than the two r intervals' spread
    assert q.delta[1] - q.delta[0] < (q.a[1] - q.a[0]) + (q.b[1] - q.b[0])
    assert q.block_length == pytest.approx(R.block_length(x, xb, y))
    with pytest.raises(R.ResampleError, match="different lengths"):
        R.block_bootstrap_paired(x, xb[:-1], y)
    na = R.block_bootstrap_paired(np.full(5, np.nan), x[:5], y[:5])
    assert np.isnan(na.block_length) and np.isnan(na.delta[0])


def test_cluster_bootstrap_coverage_on_clustered_data():
    """x = a_g + e, y = a_g + c_g + f with unit-variance cluster effects a, c and row noise
    e, f: the pooled correlation is 1/sqrt(6). Over repeated draws of 50 clusters × 6 rows the
    cluster-bootstrap 95 % interval covers it about 95 % of the time; the iid interval, which
    treats the 300 rows as independent, far less often."""
    rho, G, m, draws = 1 / math.sqrt(6), 50, 6, 300
    rng = np.random.default_rng(2024)
    hit = hit_iid = 0
    for i in range(draws):
        a, c = rng.standard_normal(G), rng.standard_normal(G)
        lab = np.repeat(np.arange(G), m)
        x = a[lab] + rng.standard_normal(G * m)
        y = a[lab] + c[lab] + rng.standard_normal(G * m)
        lo, hi = R.cluster_bootstrap_pearson(x, y, lab, n_resamples=400, seed=i)
        hit += lo <= rho <= hi
        lo, hi = R.iid_pearson_ci(x, y, 200, i)
        hit_iid += lo <= rho <= hi
    assert 0.90 <= hit / draws <= 0.99
    assert hit_iid / draws < 0.8


def test_cluster_bootstrap_pearson_na_and_errors():
    x = np.arange(20.0)
    with pytest.raises(R.ResampleError, match="differ in length"):
        R.cluster_bootstrap_pearson(x, x, np.zeros(19))
    one = R.cluster_bootstrap_pearson(x, x + 1, np.zeros(20))             # one cluster
    assert all(np.isnan(v) for v in one)
    flat = R.cluster_bootstrap_pearson(np.ones(20), x, np.arange(20) % 4)  # constant x
    assert all(np.isnan(v) for v in flat)


def test_cluster_bootstrap_median():
    v = np.array([0.1, 0.5, 0.6, 0.7, 0.9, np.nan])
    lo, hi = R.cluster_bootstrap_median(v, 2000, 0)
    assert 0.1 <= lo <= 0.6 <= hi <= 0.9
    assert R.cluster_bootstrap_median(v, 2000, 0) == (lo, hi)
    assert all(np.isnan(x) for x in R.cluster_bootstrap_median(np.array([0.3, np.nan])))
