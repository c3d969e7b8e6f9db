"""Resampling estimators for the physical-mode statistics: intervals that respect how the
steps were drawn.

Scheduler steps are neither independent nor one population:

* **Pooled over experiments** the steps come in 16 clusters (experiments), and a component
  that is nearly constant inside each experiment (decode GEMM of a dense model on pure
  decode) correlates with the duration only through differences between experiments. The
  *cluster bootstrap* resamples whole experiments with replacement and recomputes the pooled
  statistic (:func:`cluster_bootstrap`).
* **Inside one experiment** consecutive steps share most of their batch, so the durations are
  autocorrelated. The *stationary block bootstrap* (Politis & Romano 1994) resamples blocks
  of consecutive steps with geometric lengths of mean L, wrapping around the end; L is chosen
  per series by Politis & White (2004, corrected by Patton, Politis & White 2009) through
  ``arch.bootstrap.optimal_block_length`` (:func:`block_length`).

Both are computed on **moment sums**: every statistic here (Pearson r, a least-squares fit)
is a function of sums of per-row features (1, x, y, x², xy, …). A resample's sums are the sum
of its blocks' sums, and a block's sum is a difference of two prefix sums, so a resample costs
one gather per block, not per row, and every resample is drawn at once
(:func:`stationary_sums`, :func:`cluster_sums`).

Intervals are BCa (bias-corrected and accelerated, Efron 1987): the bias correction from the
share of replicates below the estimate, the acceleration from a jackknife that deletes what
the bootstrap resamples — one non-overlapping block of ceil(L) steps, or one experiment
(:func:`bca_interval`). BCa is transformation-respecting, so it equals the BCa interval of
Fisher's z mapped back.

Reproducibility: every draw comes from ``np.random.default_rng(seed)``; prefix sums are
numpy's sequential ``cumsum`` and sums over blocks numpy's fixed-order reductions (never a
BLAS dot), and outputs.write_table rounds floats to outputs.FLOAT_SIG_DIGITS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

#: Resamples of every block and cluster bootstrap: the 2.5 % and 97.5 % BCa quantiles then
#: rest on ~50 replicates each.
N_RESAMPLES = 2_000
RESAMPLE_SEED = 0
CONFIDENCE = 0.95
#: Politis–White can return block lengths below one step (no autocorrelation); a block is
#: at least one step.
MIN_BLOCK_LENGTH = 1.0
#: Resampled feature values held in memory per chunk of resamples (blocks × features).
_CHUNK_ELEMENTS = 4_000_000
#: Variances below this (of standardised features) count as zero in a resample.
_ZERO_VARIANCE = 1e-12

# --------------------------------------------------------------------------- minimum sizes
#
# Below its minimum an estimator is N/A (NaN), never an exception, and ``*_na_reason`` says
# why in words the tables and FINDINGS carry (column ``na_reason``).

#: Politis–White through arch: its autocorrelation search runs over lags
#: 0 … ceil(sqrt(n)) + 5 (at least 5 lags past the first window), which must fit in the
#: series: ceil(sqrt(n)) + 5 <= n holds from n = 8 (arch raises a matmul shape error at 2–7).
MIN_N_BLOCK_LENGTH = 8
#: The stationary block bootstrap needs a block length: the same minimum (rows where every
#: series is finite).
MIN_N_BLOCK_BOOTSTRAP = MIN_N_BLOCK_LENGTH
#: A cluster bootstrap draws clusters with replacement: one cluster has no spread.
MIN_CLUSTERS = 2
#: A BCa or percentile interval needs two finite replicates for its two quantiles.
MIN_REPLICATES = 2
#: The cluster-bootstrap median of per-cluster values: two values.
MIN_N_MEDIAN = MIN_CLUSTERS


def too_few(n: int, minimum: int, what: str, unit: str = "steps") -> str:
    """The N/A reason of an estimator below its minimum: "3 steps < 8 needed for <what>"
    ("1 step" for one)."""
    if n == 1 and unit == "steps":
        unit = "step"
    return f"{n} {unit} < {minimum} needed for {what}"


def block_length_na_reason(n: int) -> str:
    """Why :func:`block_length` is N/A for n values ("" when it is not)."""
    return (too_few(n, MIN_N_BLOCK_LENGTH, "the Politis–White block length")
            if n < MIN_N_BLOCK_LENGTH else "")


def cluster_na_reason(n_clusters: int) -> str:
    """Why a cluster bootstrap over ``n_clusters`` clusters is N/A ("" when it is not)."""
    return (too_few(n_clusters, MIN_CLUSTERS, "a cluster bootstrap", "experiment(s)")
            if n_clusters < MIN_CLUSTERS else "")


METHOD_BLOCK = "stationary_block_bca"
METHOD_CLUSTER = "cluster_bca"
METHOD_CLUSTER_PERCENTILE = "cluster_percentile"


class ResampleError(ValueError):
    """Input an estimator cannot use (its message says which and why)."""


# --------------------------------------------------------------------------- block length

def block_length(*series: np.ndarray) -> float:
    """Mean block length of the stationary bootstrap for series observed together: the
    largest Politis–White estimate (``arch.bootstrap.optimal_block_length``, column
    ``stationary``) over the series, at least MIN_BLOCK_LENGTH and at most n.

    The joint statistic (a correlation, a regression) inherits the longest memory of its
    inputs, hence the maximum. Constant series (no autocorrelation to estimate) and
    non-finite estimates (arch on a short series whose lagged parts are flat) are skipped;
    with none left the length is MIN_BLOCK_LENGTH.

    N/A (NaN) below MIN_N_BLOCK_LENGTH values (:func:`block_length_na_reason`). Raises
    ResampleError for no series, series of different lengths or non-finite values (a
    caller's error, not a small sample).
    """
    from arch.bootstrap import optimal_block_length

    if not series:
        raise ResampleError("block_length needs at least one series")
    arrays = [np.asarray(s, dtype=np.float64).ravel() for s in series]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ResampleError(f"block_length: series of different lengths {[len(a) for a in arrays]}")
    if not all(np.isfinite(a).all() for a in arrays):
        raise ResampleError("block_length: series contain NaN or infinite values")
    if n < MIN_N_BLOCK_LENGTH:
        return float("nan")
    varying = [a for a in arrays if np.ptp(a) > 0]
    if not varying:
        return MIN_BLOCK_LENGTH
    with np.errstate(divide="ignore", invalid="ignore"):     # lags of a short series may be flat
        est = optimal_block_length(np.column_stack(varying))["stationary"].to_numpy(np.float64)
    est = est[np.isfinite(est)]
    if not len(est):
        return MIN_BLOCK_LENGTH
    return float(min(max(MIN_BLOCK_LENGTH, float(np.max(est))), n))


# --------------------------------------------------------------------------- resampled sums

def _chunks(n_resamples: int, per_resample: int) -> list[tuple[int, int]]:
    size = max(1, _CHUNK_ELEMENTS // max(1, per_resample))
    return [(s, min(size, n_resamples - s)) for s in range(0, n_resamples, size)]


def stationary_sums(features: np.ndarray, mean_block: float, n_resamples: int = N_RESAMPLES,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """(n_resamples, P) column sums of ``features`` (n, P) over stationary-bootstrap resamples.

    A resample is n rows: blocks starting at uniform rows, of geometric lengths with mean
    ``mean_block`` (P(length = l) = p(1 − p)^(l−1), p = 1/mean_block), wrapping from the last
    row to the first, the last block cut so the total is n — Politis & Romano's stationary
    bootstrap, identical in distribution to drawing row by row with restart probability p.
    A block's sum is a difference of prefix sums (one wrap at most, since a block is ≤ n).
    """
    F = np.asarray(features, dtype=np.float64)
    if F.ndim != 2 or len(F) == 0:
        raise ResampleError(f"stationary_sums needs an (n, P) array with n > 0, got {F.shape}")
    if not mean_block >= MIN_BLOCK_LENGTH:
        raise ResampleError(f"mean block length must be >= {MIN_BLOCK_LENGTH}, got {mean_block}")
    rng = np.random.default_rng(RESAMPLE_SEED) if rng is None else rng
    n, P = F.shape
    prefix = np.vstack([np.zeros((1, P)), np.cumsum(F, axis=0)])      # prefix[i] = rows < i
    p = min(1.0, 1.0 / mean_block)
    # blocks per resample: enough for all but a vanishing share, topped up below if short
    m = int(math.ceil(n * p + 6.0 * math.sqrt(n * p) + 10))
    out = np.empty((n_resamples, P))
    for start, b in _chunks(n_resamples, m * P):
        lengths = rng.geometric(p, size=(b, m)).astype(np.int64)
        starts = rng.integers(0, n, size=(b, m), dtype=np.int64)
        ends = np.cumsum(lengths, axis=1)
        while (short := ends[:, -1] < n).any():                        # rare: draw more blocks
            extra_l = rng.geometric(p, size=(b, m)).astype(np.int64)
            extra_s = rng.integers(0, n, size=(b, m), dtype=np.int64)
            lengths = np.hstack([lengths, np.where(short[:, None], extra_l, 0)])
            starts = np.hstack([starts, extra_s])
            ends = np.cumsum(lengths, axis=1)
        begins = ends - lengths
        lengths = np.clip(np.minimum(lengths, n - begins), 0, None)     # cut at n rows
        stop = starts + lengths
        wrapped = stop > n
        # rows starts..stop-1; a wrapped block adds rows 0..stop-n-1
        sums = (prefix[np.minimum(stop, n)] - prefix[starts]
                + np.where(wrapped[..., None], prefix[np.where(wrapped, stop - n, 0)], 0.0))
        sums = np.where((lengths > 0)[..., None], sums, 0.0)
        out[start:start + b] = sums.sum(axis=1)
    return out


def block_jackknife_sums(features: np.ndarray, mean_block: float) -> np.ndarray:
    """(g, P) column sums of ``features`` with one block deleted, for the g = n // ceil(L)
    non-overlapping blocks of ceil(mean_block) rows (the last block takes the remainder).
    The delete-a-block jackknife of Künsch (1989), used for the BCa acceleration."""
    F = np.asarray(features, dtype=np.float64)
    n = len(F)
    size = int(math.ceil(mean_block))
    g = max(1, n // size)
    edges = np.minimum(np.arange(g + 1) * size, n)
    edges[-1] = n
    prefix = np.vstack([np.zeros((1, F.shape[1])), np.cumsum(F, axis=0)])
    blocks = prefix[edges[1:]] - prefix[edges[:-1]]
    return prefix[n] - blocks


def cluster_sums(per_cluster: np.ndarray, n_resamples: int = N_RESAMPLES,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cluster bootstrap of summed features: ``per_cluster`` (G, P) holds each cluster's
    column sums; returns (the (n_resamples, P) sums of G clusters drawn with replacement,
    the (G, P) delete-one-cluster jackknife sums). Raises ResampleError for G < 2."""
    S = np.asarray(per_cluster, dtype=np.float64)
    if S.ndim != 2 or len(S) < MIN_CLUSTERS:
        raise ResampleError(f"cluster bootstrap needs at least 2 clusters, got {S.shape}")
    rng = np.random.default_rng(RESAMPLE_SEED) if rng is None else rng
    G = len(S)
    counts = rng.multinomial(G, np.full(G, 1.0 / G), size=n_resamples).astype(np.float64)
    boot = (counts[:, :, None] * S[None, :, :]).sum(axis=1)
    jack = S.sum(axis=0)[None, :] - S
    return boot, jack


# --------------------------------------------------------------------------- Pearson from sums

#: Features of one (x, y) pair: the row's weight w (1 if the pair is usable), then w·x, w·y,
#: w·x², w·y², w·x·y, with x and y standardised on the usable rows.
PAIR_FEATURES = 6


def pair_features(x: np.ndarray, y: np.ndarray, usable: np.ndarray | None = None) -> np.ndarray:
    """(n, 6) features of :data:`PAIR_FEATURES` for :func:`pearson_from_sums`. Rows outside
    ``usable`` (default: both finite) have all features 0, so they take part in the
    resampling (keeping the time structure) but in no sum."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = (np.isfinite(x) & np.isfinite(y)) if usable is None else np.asarray(usable, bool)
    if not w.any():
        return np.zeros((len(x), PAIR_FEATURES))
    xs = _standardise(x, w)
    ys = _standardise(y, w)
    wf = w.astype(np.float64)
    return np.column_stack([wf, xs, ys, xs * xs, ys * ys, xs * ys])


def _standardise(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(v − mean)/sd over the rows in w (sd 1 if constant), 0 outside w: moment sums of
    standardised values do not cancel catastrophically."""
    vals = v[w]
    sd = float(vals.std()) or 1.0
    out = np.zeros(len(v))
    out[w] = (vals - float(vals.mean())) / sd
    return out


def pearson_from_sums(sums: np.ndarray) -> np.ndarray:
    """Pearson r from (…, 6) sums of :func:`pair_features`; NaN where either variance is
    (numerically) zero or fewer than 2 rows."""
    S = np.asarray(sums, dtype=np.float64)
    n = S[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = S[..., 1] / n, S[..., 2] / n
        vx = S[..., 3] / n - mx * mx
        vy = S[..., 4] / n - my * my
        cxy = S[..., 5] / n - mx * my
        ok = (n >= 2) & (vx > _ZERO_VARIANCE) & (vy > _ZERO_VARIANCE)
        r = np.where(ok, cxy / np.sqrt(np.where(ok, vx * vy, 1.0)), np.nan)
    return np.clip(r, -1.0, 1.0)


# --------------------------------------------------------------------------- intervals

def bca_interval(estimate: float, replicates: np.ndarray, jackknife: np.ndarray,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """BCa interval from bootstrap ``replicates`` and ``jackknife`` values of a statistic.

    z0 = Φ⁻¹(share of replicates below the estimate, ties counted half), the share kept in
    [1/(B+1), B/(B+1)] so z0 stays finite; a = Σd³ / (6 (Σd²)^{3/2}) with d = mean(jack) −
    jack (0 when the jackknife does not vary). The interval is the replicates' quantiles at
    Φ(z0 + (z0 + z_α)/(1 − a(z0 + z_α))) for α = (1 ∓ confidence)/2. Non-finite replicates
    and jackknife values are dropped; (NaN, NaN) when the estimate is not finite or fewer
    than 2 replicates remain.
    """
    from scipy.stats import norm

    if not 0 < confidence < 1:
        raise ResampleError(f"confidence must be in (0, 1), got {confidence}")
    reps = np.asarray(replicates, dtype=np.float64)
    reps = np.sort(reps[np.isfinite(reps)])
    if not math.isfinite(estimate) or len(reps) < MIN_REPLICATES:
        return float("nan"), float("nan")
    B = len(reps)
    below = (np.searchsorted(reps, estimate, "left") + np.searchsorted(reps, estimate, "right")) / 2
    share = min(max(below / B, 1.0 / (B + 1)), B / (B + 1.0))
    z0 = float(norm.ppf(share))
    jack = np.asarray(jackknife, dtype=np.float64)
    jack = jack[np.isfinite(jack)]
    d = jack.mean() - jack if len(jack) else np.zeros(1)
    den = math.fsum((d * d).tolist())
    a = math.fsum((d ** 3).tolist()) / (6.0 * den ** 1.5) if den > 0 else 0.0
    alpha = (1.0 - confidence) / 2.0
    probs = []
    for z_a in (norm.ppf(alpha), norm.ppf(1.0 - alpha)):
        t = z0 + z_a
        probs.append(float(norm.cdf(z0 + t / (1.0 - a * t))))
    lo, hi = np.quantile(reps, probs)
    return float(lo), float(hi)


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE
                        ) -> tuple[float, float]:
    """Percentile interval of the finite replicates; (NaN, NaN) with fewer than 2."""
    if not 0 < confidence < 1:
        raise ResampleError(f"confidence must be in (0, 1), got {confidence}")
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if len(reps) < MIN_REPLICATES:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


# --------------------------------------------------------------------------- Pearson r intervals

@dataclass(frozen=True)
class PairedInterval:
    """Block-bootstrap intervals of r(a, y), r(b, y) and Δr = r(b, y) − r(a, y), all on the
    same resamples."""

    block_length: float
    a: tuple[float, float]
    b: tuple[float, float]
    delta: tuple[float, float]
    #: why the intervals are N/A ("" when they were computed)
    na_reason: str = ""


def block_bootstrap_paired(xa: np.ndarray, xb: np.ndarray, y: np.ndarray,
                           n_resamples: int = N_RESAMPLES, seed: int = RESAMPLE_SEED,
                           confidence: float = CONFIDENCE,
                           mean_block: float | None = None) -> PairedInterval:
    """Stationary block bootstrap of Pearson r(xa, y), r(xb, y) and Δr = r(xb, y) − r(xa, y)
    over one series in time order (rows where y is not finite are dropped first; within the
    rest a row counts for a pair where its x is finite). Both correlations are recomputed on
    the same resamples, so the Δr interval is paired. The block length is
    :func:`block_length` of (xa, xb, y) on the rows where all three are finite unless given.
    BCa intervals with a delete-a-block jackknife; an r that is N/A on the full series gives
    (NaN, NaN). Every interval is N/A, with ``na_reason``, below MIN_N_BLOCK_BOOTSTRAP rows
    where all three are finite."""
    xa, xb, y = (np.asarray(v, dtype=np.float64) for v in (xa, xb, y))
    if not len(xa) == len(xb) == len(y):
        raise ResampleError(f"series of different lengths {len(xa)}, {len(xb)}, {len(y)}")
    keep = np.isfinite(y)
    xa, xb, y = xa[keep], xb[keep], y[keep]
    nan2 = (float("nan"), float("nan"))
    both = np.isfinite(xa) & np.isfinite(xb)
    n_both = int(both.sum())
    if n_both < MIN_N_BLOCK_BOOTSTRAP:
        return PairedInterval(float("nan"), nan2, nan2, nan2,
                              too_few(n_both, MIN_N_BLOCK_BOOTSTRAP, "a block bootstrap"))
    L = block_length(xa[both], xb[both], y[both]) if mean_block is None else mean_block
    F = np.hstack([pair_features(xa, y), pair_features(xb, y)])
    boot = stationary_sums(F, L, n_resamples, np.random.default_rng(seed))
    jack = block_jackknife_sums(F, L)
    full = F.sum(axis=0)
    est, reps, jk = [], [], []
    for part in (slice(0, PAIR_FEATURES), slice(PAIR_FEATURES, 2 * PAIR_FEATURES)):
        est.append(float(pearson_from_sums(full[part])))
        reps.append(pearson_from_sums(boot[:, part]))
        jk.append(pearson_from_sums(jack[:, part]))
    ci = [bca_interval(e, r, j, confidence) for e, r, j in zip(est, reps, jk)]
    delta = bca_interval(est[1] - est[0], reps[1] - reps[0], jk[1] - jk[0], confidence)
    return PairedInterval(L, ci[0], ci[1], delta)


def cluster_bootstrap(per_cluster: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray],
                      n_resamples: int = N_RESAMPLES, seed: int = RESAMPLE_SEED,
                      confidence: float = CONFIDENCE) -> tuple[float, float]:
    """BCa interval of a pooled statistic under the cluster bootstrap: ``per_cluster`` (G, P)
    holds each cluster's feature sums and ``statistic`` maps (…, P) sums to values (NaN
    where undefined, e.g. :func:`pearson_from_sums`). Clusters are drawn with replacement and
    the statistic recomputed on the pooled sums; the acceleration comes from deleting one
    cluster at a time. (NaN, NaN) when the statistic is N/A on all clusters pooled."""
    S = np.asarray(per_cluster, dtype=np.float64)
    boot, jack = cluster_sums(S, n_resamples, np.random.default_rng(seed))
    est = float(statistic(S.sum(axis=0)))
    return bca_interval(est, statistic(boot), statistic(jack), confidence)


def cluster_bootstrap_pearson(x: np.ndarray, y: np.ndarray, clusters: Sequence[object],
                              n_resamples: int = N_RESAMPLES, seed: int = RESAMPLE_SEED,
                              confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Cluster-bootstrap BCa interval of the pooled Pearson r of the rows where x and y are
    finite, clusters (e.g. experiment ids) resampled whole. (NaN, NaN) with fewer than
    MIN_CLUSTERS clusters holding usable rows (:func:`cluster_na_reason`)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    labels = np.asarray(clusters)
    if not len(x) == len(y) == len(labels):
        raise ResampleError(f"x, y and clusters differ in length: {len(x)}, {len(y)}, {len(labels)}")
    usable = np.isfinite(x) & np.isfinite(y)
    F = pair_features(x, y, usable)
    _, inverse = np.unique(labels, return_inverse=True)
    per = np.zeros((int(inverse.max()) + 1 if len(inverse) else 0, PAIR_FEATURES))
    np.add.at(per, inverse, F)
    per = per[per[:, 0] > 0]
    if len(per) < MIN_CLUSTERS:
        return float("nan"), float("nan")
    return cluster_bootstrap(per, pearson_from_sums, n_resamples, seed, confidence)


def cluster_bootstrap_median(values: np.ndarray, n_resamples: int = N_RESAMPLES,
                             seed: int = RESAMPLE_SEED, confidence: float = CONFIDENCE
                             ) -> tuple[float, float]:
    """Percentile interval of the median of per-cluster values (one per experiment) under
    the cluster bootstrap (BCa's jackknife acceleration is unreliable for a median). NaN
    values are dropped first; (NaN, NaN) with fewer than MIN_N_MEDIAN left."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) < MIN_N_MEDIAN:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(v), size=(n_resamples, len(v)))
    return percentile_interval(np.median(v[idx], axis=1), confidence)


# --------------------------------------------------------------------------- iid reference

def iid_pearson_ci(x: np.ndarray, y: np.ndarray, n_resamples: int, seed: int, *,
                   confidence: float = CONFIDENCE,
                   max_rows: int | None = None) -> tuple[float, float]:
    """Percentile interval of Pearson r with rows drawn independently (the interval the
    physical tables used before the block and cluster bootstraps; stats.bootstrap_pearson_ci
    filters the rows and applies the N/A rules first). ``x`` and ``y`` are finite arrays.

    ``n_resamples`` × m row indices come from ``np.random.default_rng(seed)`` in chunks and
    the five moment sums of every resample are gathered at once. With n rows and n <=
    ``max_rows`` (or ``max_rows`` None) each resample draws n rows with replacement. Above the
    cap each draws m = ``max_rows`` rows (m-out-of-n bootstrap) and the interval is mapped
    back to n in Fisher-z space, where sampling spread scales as 1/sqrt(size):
    tanh(z + sqrt(m/n)·(q − z)) for z = atanh(r) and q the z-quantiles of the resamples.
    Resamples with zero variance are ignored.
    """
    n = len(x)
    m = n if max_rows is None else min(n, int(max_rows))
    xs = (x - x.mean()) / x.std()
    ys = (y - y.mean()) / y.std()
    feats = (xs, ys, xs * xs, ys * ys, xs * ys)
    rng = np.random.default_rng(seed)
    rs = np.empty(n_resamples)
    for start, b in _chunks(n_resamples, m):
        idx = rng.integers(0, n, size=(b, m), dtype=np.int64 if n > 2**31 - 1 else np.int32)
        sx, sy, sxx, syy, sxy = (f[idx].sum(axis=1) / m for f in feats)
        with np.errstate(invalid="ignore", divide="ignore"):
            vx, vy = sxx - sx * sx, syy - sy * sy
            ok = (vx > _ZERO_VARIANCE) & (vy > _ZERO_VARIANCE)
            rs[start:start + b] = np.where(ok, (sxy - sx * sy) / np.sqrt(np.where(ok, vx * vy, 1.0)),
                                           np.nan)
    rs = rs[np.isfinite(rs)]
    if len(rs) == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - confidence) / 2.0
    probs = [alpha, 1.0 - alpha]
    if m == n:
        lo, hi = np.quantile(np.clip(rs, -1.0, 1.0), probs)
        return float(lo), float(hi)
    eps = 1e-12
    r = float(np.mean(xs * ys))
    z_hat = np.arctanh(np.clip(r, -1 + eps, 1 - eps))
    q = np.quantile(np.arctanh(np.clip(rs, -1 + eps, 1 - eps)), probs)
    lo, hi = np.tanh(z_hat + math.sqrt(m / n) * (q - z_hat))
    return float(lo), float(hi)
