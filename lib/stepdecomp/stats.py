"""Correlations and the hypothesis verdict, with the seed's N/A rules.

Pearson r of a component against ``step.duration_us`` uses the rows where both are present
and the duration is > 0; r is N/A (NaN, an empty CSV cell) when fewer than 10 rows remain or
either side has zero variance. ``n_steps`` is the number of rows r was computed on.

Reproducibility: every sum behind a correlation is ``math.fsum`` (correctly rounded, so the
same on any IEEE machine) or numpy's fixed-order reduction of elementwise products, never a
BLAS ``dot`` / ``@`` (OpenBLAS picks its dot kernel per CPU, and the kernels round
differently). Logs and the Fisher transform go through numpy's SIMD transcendentals, which
may differ in the last ulp between CPUs: outputs.write_table rounds every float to
outputs.FLOAT_SIG_DIGITS significant digits before writing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .phases import phase_masks

DURATION = "step.duration_us"
MIN_ROWS = 10
R_THRESHOLD = 0.8
SEED_COMPONENTS = ["prefill_gemm_us", "prefill_attn_us", "decode_gemm_us", "total_analytical_us"]
PREFILL_BASELINE = "batch.prefill_tokens (baseline)"
DECODE_BASELINE = "batch.decode_tokens (baseline)"

#: The rows of the seed's "Correlation on Pure-Phase Subsets" table, in its order.
PURE_PHASE_ROWS: list[tuple[str, str]] = [
    ("pure_prefill", "prefill_gemm_us"),
    ("pure_prefill", "prefill_attn_us"),
    ("pure_prefill", "total_analytical_us"),
    ("pure_prefill", PREFILL_BASELINE),
    ("pure_decode", "decode_gemm_us"),
    ("pure_decode", "decode_attn_us"),
    ("pure_decode", "total_analytical_us"),
    ("pure_decode", DECODE_BASELINE),
    ("all", "total_analytical_us"),
    # the seed's analysis also wrote these (its FINDINGS table showed only the row above)
    ("all", "prefill_gemm_us"),
    ("all", "decode_gemm_us"),
]

#: The hypothesis: at least 2 of these reach r > 0.8.
HYPOTHESIS_ROWS: list[tuple[str, str]] = [
    ("pure_prefill", "prefill_gemm_us"),
    ("pure_prefill", "prefill_attn_us"),
    ("pure_decode", "decode_gemm_us"),
    ("pure_decode", "decode_attn_us"),
]
HYPOTHESIS_MIN_PASSING = 2


def _source_column(component: str) -> str:
    """Baseline rows correlate a raw batch column; the name in the table carries a suffix."""
    return component.removesuffix(" (baseline)")


def fsum(values: np.ndarray) -> float:
    """Correctly rounded sum (math.fsum): identical on every machine, whatever its SIMD/BLAS."""
    return math.fsum(np.asarray(values, dtype=np.float64).ravel().tolist())


def _pearson_na(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of already-filtered arrays with the seed's N/A rules (n < 10, zero variance).

    Means and the three moment sums are math.fsum of elementwise products (not BLAS dot), so
    r is bit-for-bit the same on any machine."""
    n = len(x)
    if n < MIN_ROWS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    xc, yc = x - fsum(x) / n, y - fsum(y) / n
    return fsum(xc * yc) / math.sqrt(fsum(xc * xc) * fsum(yc * yc))


def _valid(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.isfinite(x) & np.isfinite(y) & (y > 0)


def pearson_r(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[float, int]:
    """(r, n) with the seed's N/A rules: NaN when n < 10 or zero variance on either side."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = _valid(x, y)
    x, y = x[keep], y[keep]
    return _pearson_na(x, y), int(keep.sum())


def subsets(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """The seed's subsets: its three phase masks plus ``all``."""
    return {**phase_masks(frame), "all": pd.Series(True, index=frame.index)}


def pure_phase_correlations(components: pd.DataFrame,
                            rows: Iterable[tuple[str, str]] = PURE_PHASE_ROWS) -> pd.DataFrame:
    """subset, component, pearson_r, n_steps — the seed's pure-phase table."""
    masks = subsets(components)
    out = []
    for subset, component in rows:
        sub = components[masks[subset]]
        r, n = pearson_r(sub[_source_column(component)], sub[DURATION])
        out.append({"subset": subset, "component": component, "pearson_r": r, "n_steps": n})
    return pd.DataFrame(out)


def per_experiment_correlations(components: pd.DataFrame,
                                columns: Sequence[str] = SEED_COMPONENTS) -> pd.DataFrame:
    """experiment_id, model, workload, component, pearson_r, n_steps over all steps of
    each experiment (the seed's per-experiment table; it showed total_analytical_us)."""
    out = []
    for (exp, model, workload), g in components.groupby(["experiment_id", "model", "workload"],
                                                        sort=True, observed=True):
        for c in columns:
            r, n = pearson_r(g[c], g[DURATION])
            out.append({"experiment_id": exp, "model": model, "workload": workload,
                        "component": c, "pearson_r": r, "n_steps": n})
    return pd.DataFrame(out)


@dataclass(frozen=True)
class Verdict:
    """The hypothesis check: which of the four criteria reach r > 0.8."""

    table: pd.DataFrame          # subset, component, pearson_r, n_steps, passed
    passing: int
    required: int = HYPOTHESIS_MIN_PASSING

    @property
    def supported(self) -> bool:
        return self.passing >= self.required

    @property
    def label(self) -> str:
        return "SUPPORTED" if self.supported else "NOT SUPPORTED"

    def sentence(self) -> str:
        return (f"{self.passing}/{len(self.table)} components reach r > {R_THRESHOLD} on their "
                f"pure-phase subset (at least {self.required} needed): {self.label}.")


def hypothesis_verdict(pure: pd.DataFrame,
                       rows: Sequence[tuple[str, str]] = HYPOTHESIS_ROWS) -> Verdict:
    """Evaluate the seed's hypothesis on a pure-phase table (pure_phase_correlations);
    an N/A r does not pass."""
    keys = pd.DataFrame(list(rows), columns=["subset", "component"])
    table = keys.merge(pure, on=["subset", "component"], how="left")
    table["passed"] = table["pearson_r"].gt(R_THRESHOLD)
    return Verdict(table=table, passing=int(table["passed"].sum()))


# =========================================================================== physical mode
#
# Everything below is new for the physical mode and leaves the seed-mode functions above
# untouched. The tables use the same N/A rules as the seed: rows where the component is
# finite and the duration finite and > 0; N/A (NaN) below MIN_ROWS rows or at zero variance.

PHYS_COMPONENTS = ["phys_prefill_gemm_us", "phys_prefill_attn_us", "phys_decode_gemm_us",
                   "phys_decode_attn_us"]
PHYS_TOTAL = "phys_total_us"
PHYS_LOWER_BOUND = "phys_lower_bound_us"
#: Short names of the four physical components (NNLS column suffixes, figure labels).
PHYS_SHORT = {"phys_prefill_gemm_us": "prefill_gemm", "phys_prefill_attn_us": "prefill_attn",
              "phys_decode_gemm_us": "decode_gemm", "phys_decode_attn_us": "decode_attn"}
PREFILL_DOMINATED_SHARE = 0.9
PHYSICAL_SUBSETS = ["pure_prefill", "prefill_dominated", "pure_decode", "all"]

#: The seed's criterion on the physical components: at least 2 of these reach r > 0.8.
PHYSICAL_HYPOTHESIS_ROWS: list[tuple[str, str]] = [
    ("pure_prefill", "phys_prefill_gemm_us"),
    ("pure_prefill", "phys_prefill_attn_us"),
    ("pure_decode", "phys_decode_gemm_us"),
    ("pure_decode", "phys_decode_attn_us"),
]

#: Bootstrap defaults. 400 resamples put the 2.5 % / 97.5 % percentiles on 10 resamples
#: each. Subsets of more than BOOTSTRAP_MAX_ROWS usable rows are bootstrapped with
#: m-out-of-n resampling (m = BOOTSTRAP_MAX_ROWS), the interval rescaled to n in Fisher-z
#: space (see bootstrap_pearson_ci). Per-experiment subsets of the reference dataset
#: (~7,500 steps) are below the cap and get the plain percentile bootstrap; only pooled
#: subsets are capped. Cost: ~0.4 s per (subset, component) at the cap.
BOOTSTRAP_RESAMPLES = 400
BOOTSTRAP_MAX_ROWS = 20_000
BOOTSTRAP_SEED = 0
_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000      # resampled values held in memory per chunk


def prefill_dominated(components: pd.DataFrame,
                      share: float = PREFILL_DOMINATED_SHARE) -> pd.Series:
    """Steps whose physical analytical time is at least ``share`` prefill:
    (phys_prefill_gemm_us + phys_prefill_attn_us) / (sum of the four component times) >= share.

    False where the share is undefined: the four times sum to 0 (a step without tokens) or
    one of them is NaN (decode attention of a step with decode tokens in an experiment
    without journeys — such a step cannot be shown to be prefill-dominated). Pure-prefill
    steps (decode times 0) with prefill time > 0 are always in the subset.
    """
    pre = components["phys_prefill_gemm_us"] + components["phys_prefill_attn_us"]
    total = components[PHYS_COMPONENTS].sum(axis=1, skipna=False)
    frac = pre.to_numpy(np.float64) / np.where(total.to_numpy(np.float64) > 0,
                                               total.to_numpy(np.float64), np.nan)
    with np.errstate(invalid="ignore"):
        return pd.Series(frac >= share, index=components.index, name="prefill_dominated")


def physical_subsets(components: pd.DataFrame) -> dict[str, pd.Series]:
    """pure_prefill, prefill_dominated, pure_decode, all (phase masks as in the seed)."""
    masks = phase_masks(components)
    return {"pure_prefill": masks["pure_prefill"],
            "prefill_dominated": prefill_dominated(components),
            "pure_decode": masks["pure_decode"],
            "all": pd.Series(True, index=components.index)}


def subset_sizes(components: pd.DataFrame) -> pd.DataFrame:
    """subset, steps: the size of each physical-mode subset."""
    return pd.DataFrame([{"subset": k, "steps": int(m.sum())}
                         for k, m in physical_subsets(components).items()])




def _valid_pair(x: Sequence[float] | np.ndarray,
                y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = _valid(x, y)
    return x[keep], y[keep]


def spearman_r(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[float, int]:
    """(Spearman rank r, n) on the rows pearson_r uses (finite, duration > 0): Pearson r of
    the average ranks; N/A when n < 10 or either side is constant."""
    from scipy.stats import rankdata

    x, y = _valid_pair(x, y)
    n = len(x)
    if n < MIN_ROWS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), n
    return _pearson_na(rankdata(x), rankdata(y)), n


def loglog_r(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[float, int]:
    """(Pearson r of log x vs log y, n) over the rows where both are finite and > 0 (a
    component that is 0 on a step, e.g. prefill GEMM of a decode step, drops that step);
    N/A when n < 10 or either side is constant."""
    x, y = _valid_pair(x, y)
    keep = x > 0
    x, y = x[keep], y[keep]
    return _pearson_na(np.log(x), np.log(y)), len(x)


def bootstrap_pearson_ci(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
                         n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED, *,
                         confidence: float = 0.95,
                         max_rows: int | None = BOOTSTRAP_MAX_ROWS) -> tuple[float, float]:
    """Percentile bootstrap confidence interval (low, high) of pearson_r(x, y).

    Uses the rows pearson_r uses; (NaN, NaN) wherever pearson_r is N/A. Resampling is
    vectorised: ``n_resamples`` × m row indices are drawn from ``np.random.default_rng(seed)``
    in chunks and the five moment sums of every resample are gathered at once, so a given
    (x, y, n_resamples, seed, max_rows) always gives the same interval. Resamples with zero
    variance are ignored.

    Work cap: with n usable rows and n <= ``max_rows`` (or ``max_rows`` None) each resample
    draws n rows with replacement — the plain percentile bootstrap. Above the cap each
    resample draws m = ``max_rows`` rows (m-out-of-n bootstrap), and the interval is mapped
    back to n in Fisher-z space, where sampling spread scales as 1/sqrt(size):
    tanh(z + sqrt(m/n)·(q − z)) for z = atanh(r) and q the z-quantiles of the resamples.
    Cost is then independent of n (~0.4 s for 400 × 20,000).

    Caveat: rows are resampled independently. Consecutive scheduler steps are correlated
    (a batch changes by a few requests per step), so the interval is a lower bound on the
    uncertainty of r over time, not a block-bootstrap estimate.
    """
    x, y = _valid_pair(x, y)
    n = len(x)
    r = _pearson_na(x, y)
    if math.isnan(r) or n_resamples < 1:
        return float("nan"), float("nan")
    m = n if max_rows is None else min(n, int(max_rows))
    xs = (x - x.mean()) / x.std()
    ys = (y - y.mean()) / y.std()
    feats = (xs, ys, xs * xs, ys * ys, xs * ys)
    rng = np.random.default_rng(seed)
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // m)
    rs = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(b, m), dtype=np.int64 if n > 2**31 - 1 else np.int32)
        sx, sy, sxx, syy, sxy = (f[idx].sum(axis=1) / m for f in feats)
        with np.errstate(invalid="ignore", divide="ignore"):
            vx, vy = sxx - sx * sx, syy - sy * sy
            ok = (vx > 1e-12) & (vy > 1e-12)
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
    z_hat = np.arctanh(np.clip(r, -1 + eps, 1 - eps))
    q = np.quantile(np.arctanh(np.clip(rs, -1 + eps, 1 - eps)), probs)
    lo, hi = np.tanh(z_hat + math.sqrt(m / n) * (q - z_hat))
    return float(lo), float(hi)


def correlation_summary(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
                        n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                        max_rows: int | None = BOOTSTRAP_MAX_ROWS) -> dict[str, float]:
    """pearson_r, ci_low, ci_high, spearman_r, loglog_r, n_steps (Pearson rows), n_loglog."""
    r, n = pearson_r(x, y)
    lo, hi = bootstrap_pearson_ci(x, y, n_resamples, seed, max_rows=max_rows)
    rho, _ = spearman_r(x, y)
    rl, nl = loglog_r(x, y)
    return {"pearson_r": r, "ci_low": lo, "ci_high": hi, "spearman_r": rho, "loglog_r": rl,
            "n_steps": n, "n_loglog": nl}


def physical_pure_phase_correlations(components: pd.DataFrame,
                                     columns: Sequence[str] = (*PHYS_COMPONENTS, PHYS_TOTAL),
                                     n_resamples: int = BOOTSTRAP_RESAMPLES,
                                     seed: int = BOOTSTRAP_SEED,
                                     max_rows: int | None = BOOTSTRAP_MAX_ROWS) -> pd.DataFrame:
    """subset, component, pearson_r, ci_low, ci_high, spearman_r, loglog_r, n_steps, n_loglog.

    Every subset of :func:`physical_subsets` (pure_prefill, prefill_dominated, pure_decode,
    all) × every column (the four physical component times and phys_total_us), pooled over
    experiments. n_steps counts the rows of Pearson r (and Spearman and the CI); n_loglog the
    rows log-log r used (component > 0 as well). A component that is identically 0 on a
    subset (decode times on pure prefill) is N/A by the zero-variance rule.
    """
    masks = physical_subsets(components)
    y_all = components[DURATION].to_numpy(np.float64)
    out = []
    for subset in PHYSICAL_SUBSETS:
        mask = masks[subset].to_numpy(bool)
        for c in columns:
            x = components[c].to_numpy(np.float64, na_value=np.nan)[mask]
            out.append({"subset": subset, "component": c,
                        **correlation_summary(x, y_all[mask], n_resamples, seed, max_rows)})
    return pd.DataFrame(out, columns=["subset", "component", "pearson_r", "ci_low", "ci_high",
                                      "spearman_r", "loglog_r", "n_steps", "n_loglog"])


def physical_per_experiment_correlations(components: pd.DataFrame,
                                         n_resamples: int = BOOTSTRAP_RESAMPLES,
                                         seed: int = BOOTSTRAP_SEED,
                                         max_rows: int | None = BOOTSTRAP_MAX_ROWS) -> pd.DataFrame:
    """One row per experiment: the seed total (total_analytical_us) and the physical total
    (phys_total_us) against step.duration_us over all of the experiment's steps, side by side.

    Columns: experiment_id, model, workload, journey_coverage (fraction of the experiment's
    steps whose attention came from journeys, phys_attn_from_journeys; NaN if the column is
    absent), then for prefix ``seed_`` and ``phys_``: pearson_r, ci_low, ci_high, spearman_r,
    loglog_r, n_steps; and delta_r = phys_pearson_r − seed_pearson_r. The physical total is
    NaN on decode steps of experiments without journeys, so its n_steps can be far below the
    seed's there (and its r N/A).
    """
    keys = ["pearson_r", "ci_low", "ci_high", "spearman_r", "loglog_r", "n_steps"]
    out = []
    for (exp, model, workload), g in components.groupby(["experiment_id", "model", "workload"],
                                                        sort=True, observed=True):
        y = g[DURATION].to_numpy(np.float64)
        row: dict[str, object] = {"experiment_id": exp, "model": model, "workload": workload}
        row["journey_coverage"] = (float(g["phys_attn_from_journeys"].astype(float).mean())
                                   if "phys_attn_from_journeys" in g else float("nan"))
        for prefix, col in (("seed_", "total_analytical_us"), ("phys_", PHYS_TOTAL)):
            s = correlation_summary(g[col].to_numpy(np.float64, na_value=np.nan), y,
                                    n_resamples, seed, max_rows)
            row.update({prefix + k: s[k] for k in keys})
        row["delta_r"] = row["phys_pearson_r"] - row["seed_pearson_r"]
        out.append(row)
    cols = ["experiment_id", "model", "workload", "journey_coverage",
            *[p + k for p in ("seed_", "phys_") for k in keys], "delta_r"]
    return pd.DataFrame(out, columns=cols)


def _nnls_one(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """NNLS of y on [1, X] with every column scaled to unit RMS (positive scaling keeps the
    sign constraint). Returns (coefficients of X, intercept, fitted values)."""
    from scipy.optimize import nnls

    A = np.column_stack([np.ones(len(y)), X])
    scale = np.sqrt((A * A).mean(axis=0))
    ys = np.sqrt((y * y).mean())
    beta, _ = nnls(A / scale, y / ys)
    coef = beta / scale * ys
    return coef[1:], float(coef[0]), (A * coef).sum(axis=1)     # not A @ coef (BLAS)


def nnls_fit(components: pd.DataFrame, columns: Sequence[str] = PHYS_COMPONENTS) -> pd.DataFrame:
    """Per experiment, non-negative least squares of step.duration_us on the component times
    plus a non-negative intercept: duration ≈ intercept_us + Σ coef_j · component_j.

    Rows: the experiment's steps with every component finite and a duration > 0 (so decode
    steps of an experiment without journeys, whose decode attention is NaN, drop out).
    A component with zero variance on those rows (e.g. decode attention 0 throughout) is left
    out of the fit (coef and share NaN): it is collinear with the intercept. The fit is N/A
    (all NaN) with fewer than MIN_ROWS rows or no more rows than parameters.

    Columns: experiment_id, model, workload, n_steps, intercept_us, r2, then per component
    (short name s, e.g. ``prefill_gemm``) coef_s and share_s.

    * coef_s is an effective efficiency: observed µs per estimated µs of that component (1 =
      the roofline estimate is the time; 3 = three times slower than the roofline; 0 = the
      component adds nothing the others do not).
    * r2 = 1 − SS_res / SS_tot of the fit, in sample.
    * share_s = coef_s · cov(component_s, fitted) / var(fitted), the component's share of the
      explained variance. Since var(fitted) = Σ_s coef_s · cov(component_s, fitted), the shares
      sum to 1 (a share can be negative when components are anti-correlated); share_s · r2 is
      the component's share of the variance of the duration. NaN when var(fitted) = 0.
    """
    short = [PHYS_SHORT.get(c, c) for c in columns]
    out = []
    for (exp, model, workload), g in components.groupby(["experiment_id", "model", "workload"],
                                                        sort=True, observed=True):
        X = g[list(columns)].to_numpy(np.float64, na_value=np.nan)
        y = g[DURATION].to_numpy(np.float64)
        keep = np.isfinite(X).all(axis=1) & np.isfinite(y) & (y > 0)
        X, y = X[keep], y[keep]
        row: dict[str, object] = {"experiment_id": exp, "model": model, "workload": workload,
                                  "n_steps": int(keep.sum()), "intercept_us": np.nan, "r2": np.nan}
        coef = np.full(len(columns), np.nan)
        share = np.full(len(columns), np.nan)
        varies = np.ptp(X, axis=0) > 0 if len(y) else np.zeros(len(columns), bool)
        if len(y) >= MIN_ROWS and len(y) > varies.sum() + 1:
            c, intercept, fitted = _nnls_one(X[:, varies], y)
            coef[varies] = c
            ss_tot = float(((y - y.mean()) ** 2).sum())
            row["intercept_us"] = intercept
            row["r2"] = 1.0 - float(((y - fitted) ** 2).sum()) / ss_tot if ss_tot > 0 else np.nan
            fc = fitted - fitted.mean()
            var_f = fsum(fc * fc) / len(y)
            if var_f > 0:
                Xc = X[:, varies] - X[:, varies].mean(axis=0)
                cov = np.array([fsum(Xc[:, j] * fc) for j in range(Xc.shape[1])]) / len(y)
                share[varies] = c * cov / var_f + 0.0   # + 0.0: no "-0" shares
        for s, cf, sh in zip(short, coef, share):
            row[f"coef_{s}"] = cf
            row[f"share_{s}"] = sh
        out.append(row)
    cols = ["experiment_id", "model", "workload", "n_steps", "intercept_us", "r2",
            *[f"{k}_{s}" for s in short for k in ("coef", "share")]]
    return pd.DataFrame(out, columns=cols)


def lower_bound_check(components: pd.DataFrame) -> pd.DataFrame:
    """Physical plausibility: how many steps ran faster than the HBM lower bound.

    phys_lower_bound_us is the time to stream the experiment's layer weights once per GPU;
    a step with tokens cannot execute on the GPU in less. Per experiment: experiment_id,
    model, workload, n_steps (steps with tokens — lower bound > 0 — and a finite duration
    > 0), n_below (duration < lower bound), fraction_below (n_below / n_steps; NaN for
    n_steps = 0), lower_bound_us (the bound: one value per model and tp; the median over the
    steps if it varied), median_ratio (median of duration / lower bound), flagged
    (n_below > 0: the duration metric measures something other than GPU execution there).
    """
    lb = components[PHYS_LOWER_BOUND].to_numpy(np.float64, na_value=np.nan)
    dur = components[DURATION].to_numpy(np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        usable = np.isfinite(lb) & (lb > 0) & np.isfinite(dur) & (dur > 0)
        frame = pd.DataFrame({
            "experiment_id": components["experiment_id"].to_numpy(),
            "model": components["model"].to_numpy(), "workload": components["workload"].to_numpy(),
            "usable": usable, "below": usable & (dur < lb),
            "lb": np.where(usable, lb, np.nan), "ratio": np.where(usable, dur / lb, np.nan)})
    g = frame.groupby(["experiment_id", "model", "workload"], sort=True, observed=True)
    out = pd.DataFrame({"n_steps": g["usable"].sum().astype(np.int64),
                        "n_below": g["below"].sum().astype(np.int64),
                        "lower_bound_us": g["lb"].median(),
                        "median_ratio": g["ratio"].median()}).reset_index()
    out.insert(5, "fraction_below",
               out["n_below"] / out["n_steps"].where(out["n_steps"] > 0))
    out["flagged"] = out["n_below"] > 0
    return out[["experiment_id", "model", "workload", "n_steps", "n_below", "fraction_below",
                "lower_bound_us", "median_ratio", "flagged"]]


def physical_verdict(table: pd.DataFrame, prefill_subset: str = "pure_prefill") -> Verdict:
    """The seed's criterion on the four physical components of a
    :func:`physical_pure_phase_correlations` table: at least 2 of {prefill GEMM and prefill
    attention on ``prefill_subset``, decode GEMM and decode attention on pure_decode} reach
    r > 0.8 (N/A does not pass). ``prefill_subset="prefill_dominated"`` gives the alternative
    for data with too few pure-prefill steps. Verdict.table: subset, component, pearson_r,
    n_steps, passed."""
    rows = [(prefill_subset if s == "pure_prefill" else s, c) for s, c in PHYSICAL_HYPOTHESIS_ROWS]
    v = hypothesis_verdict(table[["subset", "component", "pearson_r", "n_steps"]], rows)
    return v
