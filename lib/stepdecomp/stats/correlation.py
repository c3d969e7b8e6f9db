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

The physical mode's intervals come from resample.py (cluster bootstrap for pooled tables,
stationary block bootstrap per experiment); its component fit is attribution.py.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from . import resample
from ..core.columns import DURATION, PHYS_COMPONENTS, PHYS_LOWER_BOUND, PHYS_TOTAL, SEED_COMPONENTS
from ..core.thresholds import (HYPOTHESIS_MIN_PASSING, MIN_ROWS, PREFILL_DOMINATED_SHARE,
                               R_THRESHOLD, WITHIN_MIN_EXPERIMENTS)
from ..core.verdicts import (VERDICT_INDETERMINATE, VERDICT_NA, VERDICT_STATUS,  # noqa: F401
                             VERDICT_WORDS, Verdict, WithinVerdict)
from ..model.phases import phase_masks

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


#: Column of every statistics table saying why its N/A cells are N/A ("" when none is).
NA_REASON = "na_reason"
CONSTANT_COMPONENT = "component constant on the usable steps"
CONSTANT_TARGET = "step time constant on the usable steps"


def r_na_reason(x: np.ndarray, y: np.ndarray, what: str = "r") -> str:
    """Why an r of already-filtered arrays is N/A under the seed's rules ("" when it is
    not): fewer than MIN_ROWS rows, or zero variance on either side."""
    n = len(x)
    if n < MIN_ROWS:
        return resample.too_few(n, MIN_ROWS, what)
    if np.ptp(x) == 0:
        return f"{what}: {CONSTANT_COMPONENT}"
    if np.ptp(y) == 0:
        return f"{what}: {CONSTANT_TARGET}"
    return ""


def pearson_na_reason(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> str:
    """Why :func:`pearson_r` (x, y) is N/A ("" when it is not), on the rows it uses."""
    return r_na_reason(*_valid_pair(x, y), "Pearson r")


def join_reasons(*reasons: str) -> str:
    """The distinct non-empty reasons of a row, in order, joined by "; "."""
    return "; ".join(dict.fromkeys(r for r in reasons if r))


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
    """subset, component, pearson_r, n_steps — the seed's pure-phase table — and
    na_reason (why r is N/A; "" when it is not)."""
    masks = subsets(components)
    out = []
    for subset, component in rows:
        sub = components[masks[subset]]
        x, y = sub[_source_column(component)], sub[DURATION]
        r, n = pearson_r(x, y)
        out.append({"subset": subset, "component": component, "pearson_r": r, "n_steps": n,
                    NA_REASON: pearson_na_reason(x, y)})
    return pd.DataFrame(out, columns=["subset", "component", "pearson_r", "n_steps", NA_REASON])


def per_experiment_correlations(components: pd.DataFrame,
                                columns: Sequence[str] = SEED_COMPONENTS) -> pd.DataFrame:
    """experiment_id, model, workload, component, pearson_r, n_steps over all steps of
    each experiment (the seed's per-experiment table; it showed total_analytical_us), and
    na_reason."""
    out = []
    for (exp, model, workload), g in components.groupby(["experiment_id", "model", "workload"],
                                                        sort=True, observed=True):
        for c in columns:
            r, n = pearson_r(g[c], g[DURATION])
            out.append({"experiment_id": exp, "model": model, "workload": workload,
                        "component": c, "pearson_r": r, "n_steps": n,
                        NA_REASON: pearson_na_reason(g[c], g[DURATION])})
    return pd.DataFrame(out, columns=["experiment_id", "model", "workload", "component",
                                      "pearson_r", "n_steps", NA_REASON])


def hypothesis_verdict(pure: pd.DataFrame,
                       rows: Sequence[tuple[str, str]] = HYPOTHESIS_ROWS,
                       indeterminate: bool = False) -> Verdict:
    """Evaluate the seed's hypothesis on a pure-phase table (pure_phase_correlations);
    an N/A r does not pass (the seed's rule), and the count of N/A criteria is kept. With
    ``indeterminate`` the label is INDETERMINATE where they could tip it."""
    keys = pd.DataFrame(list(rows), columns=["subset", "component"])
    table = keys.merge(pure, on=["subset", "component"], how="left")
    table["passed"] = table["pearson_r"].gt(R_THRESHOLD)
    return Verdict(table=table, passing=int(table["passed"].sum()),
                   n_na=int(table["pearson_r"].isna().sum()), indeterminate=indeterminate)


# =========================================================================== physical mode
#
# Everything below is new for the physical mode and leaves the seed-mode functions above
# untouched. The tables use the same N/A rules as the seed: rows where the component is
# finite and the duration finite and > 0; N/A (NaN) below MIN_ROWS rows or at zero variance.

#: Short names of the four physical components (NNLS column suffixes, figure labels).
PHYS_SHORT = {"phys_prefill_gemm_us": "prefill_gemm", "phys_prefill_attn_us": "prefill_attn",
              "phys_decode_gemm_us": "decode_gemm", "phys_decode_attn_us": "decode_attn"}
PHYSICAL_SUBSETS = ["pure_prefill", "prefill_dominated", "pure_decode", "all"]

#: The seed's criterion on the physical components: at least 2 of these reach r > 0.8.
PHYSICAL_HYPOTHESIS_ROWS: list[tuple[str, str]] = [
    ("pure_prefill", "phys_prefill_gemm_us"),
    ("pure_prefill", "phys_prefill_attn_us"),
    ("pure_decode", "phys_decode_gemm_us"),
    ("pure_decode", "phys_decode_attn_us"),
]

#: The iid reference bootstrap (bootstrap_pearson_ci): 400 resamples, m-out-of-n above
#: BOOTSTRAP_MAX_ROWS rows. The tables use resample.N_RESAMPLES block or cluster resamples.
BOOTSTRAP_RESAMPLES = 400
BOOTSTRAP_MAX_ROWS = 20_000
BOOTSTRAP_SEED = 0


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
    """Percentile bootstrap interval (low, high) of pearson_r(x, y) with rows resampled
    independently (resample.iid_pearson_ci), on the rows pearson_r uses; (NaN, NaN) wherever
    pearson_r is N/A. Kept as the reference the tables' block and cluster intervals are
    compared with: steps are neither independent nor one population, so this interval is
    too narrow for them."""
    x, y = _valid_pair(x, y)
    if math.isnan(_pearson_na(x, y)) or n_resamples < 1:
        return float("nan"), float("nan")
    return resample.iid_pearson_ci(x, y, n_resamples, seed, confidence=confidence,
                                   max_rows=max_rows)


def _r_variants(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """pearson_r, spearman_r, loglog_r, n_steps (Pearson's rows), n_loglog."""
    r, n = pearson_r(x, y)
    rl, nl = loglog_r(x, y)
    return {"pearson_r": r, "spearman_r": spearman_r(x, y)[0], "loglog_r": rl, "n_steps": n,
            "n_loglog": nl}


def physical_pure_phase_correlations(components: pd.DataFrame,
                                     columns: Sequence[str] = (*PHYS_COMPONENTS, PHYS_TOTAL),
                                     n_resamples: int = resample.N_RESAMPLES,
                                     seed: int = resample.RESAMPLE_SEED) -> pd.DataFrame:
    """subset, component, pearson_r, ci_low, ci_high, ci_method, spearman_r, loglog_r,
    n_steps, n_loglog.

    Every subset of :func:`physical_subsets` (pure_prefill, prefill_dominated, pure_decode,
    all) × every column (the four physical component times and phys_total_us), pooled over
    experiments. The interval is the cluster bootstrap's (resample.cluster_bootstrap_pearson:
    experiments resampled whole, BCa; ``ci_method`` says so): a pooled r mixes differences
    between experiments with variation inside them, and its uncertainty is that of 16
    experiments, not of 10⁵ independent steps. n_steps counts the rows of Pearson r (and
    Spearman and the interval); n_loglog the rows log-log r used (component > 0 as well).
    A component that is identically 0 on a subset (decode times on pure prefill) is N/A by
    the zero-variance rule.
    """
    masks = physical_subsets(components)
    y_all = components[DURATION].to_numpy(np.float64, na_value=np.nan)
    exp_all = components["experiment_id"].to_numpy()
    out = []
    for subset in PHYSICAL_SUBSETS:
        mask = masks[subset].to_numpy(bool)
        y = y_all[mask]
        for c in columns:
            x = components[c].to_numpy(np.float64, na_value=np.nan)[mask]
            row = _r_variants(x, y)
            lo = hi = float("nan")
            keep = _valid(x, y)
            reason = pearson_na_reason(x, y)
            if not reason:
                n_clusters = len(pd.unique(exp_all[mask][keep]))
                reason = resample.cluster_na_reason(n_clusters)
                if not reason:
                    lo, hi = resample.cluster_bootstrap_pearson(
                        x[keep], y[keep], exp_all[mask][keep], n_resamples, seed)
            out.append({"subset": subset, "component": c, "ci_low": lo, "ci_high": hi,
                        "ci_method": resample.METHOD_CLUSTER, **row,
                        NA_REASON: join_reasons(reason, _loglog_reason(x, y))})
    return pd.DataFrame(out, columns=["subset", "component", "pearson_r", "ci_low", "ci_high",
                                      "ci_method", "spearman_r", "loglog_r", "n_steps",
                                      "n_loglog", NA_REASON])


def _loglog_reason(x: np.ndarray, y: np.ndarray) -> str:
    """Why loglog_r is N/A when Pearson r is not (it drops the steps where x is 0)."""
    if pearson_na_reason(x, y):
        return ""
    xv, yv = _valid_pair(x, y)
    keep = xv > 0
    return r_na_reason(xv[keep], yv[keep], "log-log r")


def physical_per_experiment_correlations(components: pd.DataFrame,
                                         n_resamples: int = resample.N_RESAMPLES,
                                         seed: int = resample.RESAMPLE_SEED) -> pd.DataFrame:
    """One row per experiment: the seed total (total_analytical_us) and the physical total
    (phys_total_us) against step.duration_us over all of the experiment's steps, side by side.

    Columns: experiment_id, model, workload, journey_coverage (fraction of the experiment's
    steps whose attention came from journeys, phys_attn_from_journeys; NaN if the column is
    absent), then for prefix ``seed_`` and ``phys_``: pearson_r, ci_low, ci_high, spearman_r,
    loglog_r, n_steps, n_loglog (log-log r's rows: both sides > 0); delta_r = phys_pearson_r − seed_pearson_r with its interval
    delta_ci_low, delta_ci_high; delta_spearman = phys_spearman_r − seed_spearman_r (a
    "better" that holds for Pearson only shows here); block_length and ci_method.

    Intervals: stationary block bootstrap of the steps in step.id order, Politis–White block
    length, BCa (resample.block_bootstrap_paired); both r and Δr on the same resamples (a
    paired interval of the difference). The physical total is NaN on decode steps of
    experiments without journeys, so its n_steps can be far below the seed's there.
    """
    keys = ["pearson_r", "ci_low", "ci_high", "spearman_r", "loglog_r", "n_steps", "n_loglog"]
    out = []
    for (exp, model, workload), g in components.groupby(["experiment_id", "model", "workload"],
                                                        sort=True, observed=True):
        g = g.sort_values("step.id", kind="stable") if "step.id" in g else g   # time axis
        y = g[DURATION].to_numpy(np.float64, na_value=np.nan)
        row: dict[str, object] = {"experiment_id": exp, "model": model, "workload": workload}
        row["journey_coverage"] = (float(g["phys_attn_from_journeys"].astype(float).mean())
                                   if "phys_attn_from_journeys" in g else float("nan"))
        xs = {p: g[col].to_numpy(np.float64, na_value=np.nan)
              for p, col in (("seed_", "total_analytical_us"), ("phys_", PHYS_TOTAL))}
        rs = {p: _r_variants(x, y) for p, x in xs.items()}
        reasons = {p: pearson_na_reason(x, y) for p, x in xs.items()}
        y_usable = np.where(_valid(np.zeros(len(y)), y), y, np.nan)
        nan2 = (float("nan"), float("nan"))
        if reasons["seed_"] and reasons["phys_"]:      # no r: no interval to compute
            paired = resample.PairedInterval(float("nan"), nan2, nan2, nan2)
        else:
            paired = resample.block_bootstrap_paired(xs["seed_"], xs["phys_"], y_usable,
                                                     n_resamples, seed)
        row[NA_REASON] = join_reasons(*(f"{p.rstrip('_')}: {r}" for p, r in reasons.items() if r),
                                      paired.na_reason)
        for p, ci in (("seed_", paired.a), ("phys_", paired.b)):
            lo, hi = ci if not math.isnan(rs[p]["pearson_r"]) else nan2
            row.update({p + k: {**rs[p], "ci_low": lo, "ci_high": hi}[k] for k in keys})
        row["delta_r"] = row["phys_pearson_r"] - row["seed_pearson_r"]
        dlo, dhi = paired.delta if not math.isnan(row["delta_r"]) else nan2
        row.update({"delta_ci_low": dlo, "delta_ci_high": dhi,
                    "delta_spearman": row["phys_spearman_r"] - row["seed_spearman_r"],
                    "block_length": paired.block_length, "ci_method": resample.METHOD_BLOCK})
        out.append(row)
    cols = ["experiment_id", "model", "workload", "journey_coverage",
            *[p + k for p in ("seed_", "phys_") for k in keys], "delta_r", "delta_ci_low",
            "delta_ci_high", "delta_spearman", "block_length", "ci_method", NA_REASON]
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
    out[NA_REASON] = np.where(out["n_steps"] > 0, "",
                              "no step with tokens and a usable step time")
    return out[["experiment_id", "model", "workload", "n_steps", "n_below", "fraction_below",
                "lower_bound_us", "median_ratio", "flagged", NA_REASON]]


def physical_verdict(table: pd.DataFrame, prefill_subset: str = "pure_prefill") -> Verdict:
    """The seed's criterion on the four physical components of a
    :func:`physical_pure_phase_correlations` table: at least 2 of {prefill GEMM and prefill
    attention on ``prefill_subset``, decode GEMM and decode attention on pure_decode} reach
    r > 0.8 (N/A does not pass). ``prefill_subset="prefill_dominated"`` gives the alternative
    for data with too few pure-prefill steps. Verdict.table: subset, component, pearson_r,
    n_steps, passed."""
    rows = [(prefill_subset if s == "pure_prefill" else s, c) for s, c in PHYSICAL_HYPOTHESIS_ROWS]
    return hypothesis_verdict(table[["subset", "component", "pearson_r", "n_steps"]], rows,
                              indeterminate=True)


# =========================================================================== within experiments
#
# The seed's criterion pools every experiment's steps. Pooled, the r of a component that is
# (nearly) constant inside each experiment — decode GEMM of a dense model on pure decode is
# its weight read — measures differences between models, not whether the component tracks
# the step time. The within-experiment verdict asks the criterion of each experiment and
# takes the median over experiments.

#: (subset, component) rows of the within-experiment table: the physical hypothesis rows,
#: the prefill ones also on prefill_dominated (pure-prefill steps are rare per experiment).
WITHIN_ROWS: list[tuple[str, str]] = [
    *[(s, c) for s, c in PHYSICAL_HYPOTHESIS_ROWS if s == "pure_prefill"],
    *[("prefill_dominated", c) for s, c in PHYSICAL_HYPOTHESIS_ROWS if s == "pure_prefill"],
    *[(s, c) for s, c in PHYSICAL_HYPOTHESIS_ROWS if s != "pure_prefill"],
]


def within_experiment_correlations(components: pd.DataFrame,
                                   rows: Sequence[tuple[str, str]] = WITHIN_ROWS) -> pd.DataFrame:
    """experiment_id, model, workload, subset, component, pearson_r, n_steps: each
    component's r on its subset inside each experiment (seed N/A rules: a component constant
    in the experiment's subset, e.g. decode GEMM of a dense model on pure decode, is N/A).
    model and workload are carried where the frame has them (a pooled, column-pruned frame
    needs only experiment_id)."""
    masks = {k: m.to_numpy(bool) for k, m in physical_subsets(components).items()}
    y_all = components[DURATION].to_numpy(np.float64, na_value=np.nan)
    keys = [k for k in ("experiment_id", "model", "workload") if k in components]
    out = []
    for key, idx in components.groupby(keys, sort=True, observed=True).indices.items():
        ident = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        for subset, c in rows:
            sel = idx[masks[subset][idx]]
            x = components[c].to_numpy(np.float64, na_value=np.nan)[sel]
            r, n = pearson_r(x, y_all[sel])
            out.append({**ident, "subset": subset, "component": c, "pearson_r": r, "n_steps": n,
                        NA_REASON: pearson_na_reason(x, y_all[sel])})
    return pd.DataFrame(out, columns=[*keys, "subset", "component", "pearson_r", "n_steps",
                                      NA_REASON])


def within_experiment_table(components: pd.DataFrame,
                            rows: Sequence[tuple[str, str]] = WITHIN_ROWS,
                            n_resamples: int = resample.N_RESAMPLES,
                            seed: int = resample.RESAMPLE_SEED) -> pd.DataFrame:
    """subset, component, median_r, ci_low, ci_high, ci_method, n_experiments, passed.

    median_r is the median over experiments of within_experiment_correlations' r (N/A
    experiments left out; n_experiments counts the rest; N/A below WITHIN_MIN_EXPERIMENTS);
    the interval resamples those experiments (resample.cluster_bootstrap_median); passed is
    median_r > R_THRESHOLD, the seed's threshold."""
    per = within_experiment_correlations(components, rows)
    out = []
    for subset, c in rows:
        r = per.loc[(per["subset"] == subset) & (per["component"] == c), "pearson_r"]
        r = r.dropna().to_numpy(np.float64)
        med, (lo, hi) = float("nan"), (float("nan"), float("nan"))
        reason = ""
        if len(r) >= WITHIN_MIN_EXPERIMENTS:
            med = float(np.median(r))
            lo, hi = resample.cluster_bootstrap_median(r, n_resamples, seed)
        else:
            reason = resample.too_few(len(r), WITHIN_MIN_EXPERIMENTS,
                                      "a median within-experiment r", "experiment(s) with an r")
        out.append({"subset": subset, "component": c, "median_r": med, "ci_low": lo,
                    "ci_high": hi, "ci_method": resample.METHOD_CLUSTER_PERCENTILE,
                    "n_experiments": len(r), "passed": bool(med > R_THRESHOLD),
                    NA_REASON: reason})
    return pd.DataFrame(out, columns=["subset", "component", "median_r", "ci_low", "ci_high",
                                      "ci_method", "n_experiments", "passed", NA_REASON])


def within_experiment_verdict(table: pd.DataFrame,
                              prefill_subset: str = "pure_prefill") -> WithinVerdict:
    """The seed's criterion (at least HYPOTHESIS_MIN_PASSING of PHYSICAL_HYPOTHESIS_ROWS pass,
    threshold R_THRESHOLD) on a within_experiment_table: prefill rows on ``prefill_subset``;
    a row the table lacks or with an N/A median does not pass. WithinVerdict.table: subset,
    component, median_r, ci_low, ci_high, n_experiments, passed."""
    keys = pd.DataFrame([(prefill_subset if s == "pure_prefill" else s, c)
                         for s, c in PHYSICAL_HYPOTHESIS_ROWS], columns=["subset", "component"])
    cols = ["subset", "component", "median_r", "ci_low", "ci_high", "n_experiments"]
    t = keys.merge(table[cols], on=["subset", "component"], how="left")
    t["n_experiments"] = t["n_experiments"].fillna(0).astype(int)
    t["passed"] = t["median_r"].gt(R_THRESHOLD)
    return WithinVerdict(table=t, passing=int(t["passed"].sum()),
                         n_na=int(t["median_r"].isna().sum()), indeterminate=True)
