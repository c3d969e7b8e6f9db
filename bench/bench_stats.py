"""Statistics benchmark (`make bench`): prints times and ratios, asserts nothing.

1. the component attribution of one experiment (attribution.attribute: 2^k non-negative
   subset fits on ATTRIBUTION_RESAMPLES stationary-block resamples, from bootstrapped moment
   sums) against the direct way — per resample, gather the rows and run scipy's nnls on each
   subset — timed on NAIVE_RESAMPLES resamples and scaled to the same count;
2. the physical statistics of notebook 04 on the bundled components (every target): pooled
   (cluster bootstrap), per experiment (block bootstrap), attribution, within-experiment.

Input: reports/tables/step_components.parquet (``make report`` writes it), else the test
fixture decomposed in memory.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from stepdecomp.stats import attribution, per_target, correlation  # noqa: E402
from stepdecomp.core.paths import REPORTS_DIR  # noqa: E402

NAIVE_RESAMPLES = 20


def bundled_components() -> pd.DataFrame:
    path = REPORTS_DIR / "tables" / "step_components.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "stats"))
    from test_stats_physical import _frame

    return _frame(n_per_exp=4000)


def naive_seconds_per_resample(X: np.ndarray, y: np.ndarray, mean_block: float) -> float:
    """Stationary-bootstrap row indices, then scipy nnls of y on every subset of X."""
    from scipy.optimize import nnls

    rng = np.random.default_rng(0)
    n, k = X.shape
    t0 = time.perf_counter()
    for _ in range(NAIVE_RESAMPLES):
        restart = rng.random(n) < 1.0 / mean_block
        restart[0] = True
        starts = rng.integers(0, n, n)
        block = np.maximum.accumulate(np.where(restart, np.arange(n), 0))
        idx = (starts[block] + np.arange(n) - block) % n
        Xb, yb = X[idx] - X[idx].mean(axis=0), y[idx] - y[idx].mean()
        for s in range(1, 1 << k):
            cols = [j for j in range(k) if s >> j & 1]
            nnls(Xb[:, cols], yb)
    return (time.perf_counter() - t0) / NAIVE_RESAMPLES


def main() -> None:
    c = attribution.with_gemm(bundled_components())
    sizes = c.groupby("experiment_id").size()
    exp = sizes.idxmax()
    g = c[c["experiment_id"] == exp].sort_values("step.id")
    X = g[attribution.TERMS].to_numpy(np.float64)
    X = X[:, np.ptp(X, axis=0) > 0]
    y = g[correlation.DURATION].to_numpy(np.float64)
    n_res = attribution.ATTRIBUTION_RESAMPLES
    t0 = time.perf_counter()
    fit = attribution.attribute(g, n_resamples=n_res)
    moments = time.perf_counter() - t0
    mean_block = float(fit.fit_summary["block_length"].iloc[0])
    naive = naive_seconds_per_resample(X, y, mean_block) * n_res
    print(f"attribution of {exp} ({len(g):,} steps, {X.shape[1]} varying terms, "
          f"{n_res} resamples, block length {mean_block:.1f}):")
    print(f"  moment sums {moments:.2f} s, per-resample nnls (scaled from {NAIVE_RESAMPLES}) "
          f"{naive:.1f} s, ratio {naive / moments:.0f}x")
    timings = {}
    for name, fn in [("pooled (cluster)", lambda: per_target.on_targets(
                         correlation.physical_pure_phase_correlations, c)),
                     ("per experiment (block)", lambda: per_target.on_targets(
                         correlation.physical_per_experiment_correlations, c)),
                     ("attribution", lambda: per_target.attribution_on_targets(c)),
                     ("within experiment", lambda: per_target.on_targets(
                         correlation.within_experiment_table, c))]:
        t0 = time.perf_counter()
        fn()
        timings[name] = time.perf_counter() - t0
    print(f"notebook 04 statistics on {len(c):,} steps, every target present:")
    for name, sec in timings.items():
        print(f"  {name:<24} {sec:6.2f} s")
    print(f"  {'total':<24} {sum(timings.values()):6.2f} s")


if __name__ == "__main__":
    main()
