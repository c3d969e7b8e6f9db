"""What explains ``step.duration_us``: scheduler work or the batch's FLOPs?

``step.duration_us`` is the CPU time of ``schedule()`` (docs/measurement.md §1). If that is so,
it should follow the scheduler's work — the queues it walks, the requests it admits, the
tokens it budgets, the KV blocks it manages — more than the GPU components of the batch;
the model-step targets of targets/timestamps.py (``step_period_us``) should follow the FLOP /
byte components instead. :func:`explain_r2` puts the two side by side: per experiment and
target, the R² of an ordinary least-squares fit on each regressor set.

Side by side the two R²'s separate nothing when the sets are collinear (on the bundled data
they agree to the second digit on every target: the scheduler's tokens and KV blocks *are* the
batch the FLOPs are computed from), and a few extreme steps (injected GC pauses: 0.1 % of the
steps, most of step.duration_us's variance) decide them. So each fit leaves out the steps of
the top ``1 − TRIM_QUANTILE`` of the target (per experiment) and the table adds, per
experiment and target, the *incremental* R² of each set beyond the other (R² of both − R² of
the other set: what one set explains that the other cannot). :func:`increment_summary` gives
each increment's median over experiments with a cluster-bootstrap interval (experiments
resampled whole) and says which set, if either, the data can credit.

Numerics are deterministic: the regressors are centred and scaled by their standard
deviation (sums computed with ``np.sum``), the coefficients come from ``np.linalg.lstsq``
(minimum-norm, so collinear columns are harmless), the fitted values and R² are formed with
elementwise products and ``np.sum`` reductions (no BLAS dot, whose summation order depends
on the build), and R² is rounded to ``R2_SIGNIFICANT_DIGITS`` significant digits.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..core import columns, tables
from ..core.columns import EXP
from ..core.thresholds import INCREMENT_MIN, TRIM_QUANTILE
from . import resample

KV_BLOCKS_USED = "kv.blocks_used"

#: Scheduler-work regressors: what schedule() walks, admits, budgets and allocates.
SCHEDULER_WORK_COLUMNS = ("queue.running_depth", "queue.waiting_depth",
                          "batch.num_prefill_reqs", "batch.scheduled_tokens", KV_BLOCKS_USED)
#: The physical GPU components (physical.physical_components), used when present.
FLOP_COLUMNS = tuple(columns.PHYS_COMPONENTS)
DEFAULT_TARGETS = (columns.DURATION, columns.PERIOD)
#: Fewer complete rows than this (per experiment and target) give R² = NaN.
MIN_ROWS = 10
#: R² is rounded to this many significant digits (last-bit differences of lstsq vanish).
R2_SIGNIFICANT_DIGITS = 12
#: A column whose standard deviation is at most this fraction of its largest magnitude is
#: constant for the fit (dropped as a regressor; as the target it makes R² NaN).
CONSTANT_REL_TOL = 1e-12

SET_SCHEDULER = "scheduler_work"
SET_FLOPS = "flops"
SET_BOTH = "scheduler_work+flops"
#: The incremental R² of one set beyond the other (R² of both − R² of the other).
SET_SCHEDULER_BEYOND = tables.SET_SCHEDULER_BEYOND
SET_FLOPS_BEYOND = tables.SET_FLOPS_BEYOND
#: TRIM_QUANTILE (steps above it are left out of every fit) and INCREMENT_MIN (an increment
#: whose interval lies above it is credited) are in core.thresholds: FINDINGS states them.
#: The tables notebook 04 writes from :func:`increment_summary` and :func:`credit_table`.
INCREMENT_TABLE = tables.INCREMENT
CREDIT_TABLE = tables.CREDIT
INCREMENT_COLUMNS = ["target", "regressors", "median_increment", "ci_low", "ci_high",
                     "experiments", "credited"]
R2_COLUMNS = [EXP, "target", "regressors", "r2", "n_steps", "n_regressors", "na_reason"]


#: The steps-table columns the scheduler-work regressors are built from.
STEP_WORK_COLUMNS = ["experiment_id", "step.id", "queue.running_depth", "queue.waiting_depth",
                     "batch.num_prefill_reqs", "batch.scheduled_tokens", "kv.blocks_total_gpu",
                     "kv.blocks_free_gpu"]


def with_scheduler_work(components: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """``components`` with the scheduler-work regressors of the same steps (joined on
    experiment_id and step.id) and ``kv.blocks_used``."""
    from ..targets.timestamps import attach

    return with_kv_blocks_used(attach(components, steps[STEP_WORK_COLUMNS]))


def with_kv_blocks_used(steps: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``steps`` with ``kv.blocks_used`` = kv.blocks_total_gpu − kv.blocks_free_gpu."""
    for c in ("kv.blocks_total_gpu", "kv.blocks_free_gpu"):
        if c not in steps:
            raise KeyError(f"steps table lacks column {c!r} (needed for {KV_BLOCKS_USED})")
    out = steps.copy()
    out[KV_BLOCKS_USED] = (pd.to_numeric(steps["kv.blocks_total_gpu"])
                           - pd.to_numeric(steps["kv.blocks_free_gpu"]))
    return out


def round_significant(x: float, digits: int = R2_SIGNIFICANT_DIGITS) -> float:
    """``x`` rounded to ``digits`` significant digits (NaN and 0 unchanged)."""
    if not np.isfinite(x) or x == 0.0:
        return float(x)
    return float(f"{x:.{digits - 1}e}")


def _is_constant(col: np.ndarray, centred: np.ndarray) -> bool:
    scale = np.max(np.abs(col))
    sd = np.sqrt(np.sum(centred * centred) / len(col))
    return bool(sd <= CONSTANT_REL_TOL * scale) if scale > 0 else True


def ols_r2(y: np.ndarray, x: np.ndarray) -> tuple[float, int]:
    """R² of y ~ 1 + x (x: n × k) and the number of regressors kept.

    R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)². Constant regressor columns are dropped (the intercept
    already holds them); with none left the fit is the mean and R² = 0. NaN when
    n < ``MIN_ROWS`` or y is constant.
    """
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if n < MIN_ROWS:
        return float("nan"), 0
    x = np.asarray(x, dtype=np.float64).reshape(n, -1)
    yc = y - np.sum(y) / n
    if _is_constant(y, yc):
        return float("nan"), 0
    xc = x - np.sum(x, axis=0) / n
    keep = [j for j in range(x.shape[1]) if not _is_constant(x[:, j], xc[:, j])]
    xs = xc[:, keep] / np.sqrt(np.sum(xc[:, keep] ** 2, axis=0) / n)
    if keep:
        beta = np.linalg.lstsq(xs, yc, rcond=None)[0]
        resid = yc - np.sum(xs * beta, axis=1)
    else:
        resid = yc
    r2 = 1.0 - np.sum(resid * resid) / np.sum(yc * yc)
    return round_significant(float(r2)), len(keep)


def r2_na_reason(y: np.ndarray) -> str:
    """Why :func:`ols_r2` of ``y`` is N/A ("" when it is not): fewer than MIN_ROWS rows,
    or a constant target."""
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    if n < MIN_ROWS:
        return resample.too_few(n, MIN_ROWS, "R²")
    if _is_constant(y, y - np.sum(y) / n):
        return "R²: step time constant on the usable steps"
    return ""


def regressor_sets(frame: pd.DataFrame,
                   flop_columns: Sequence[str] | None = None) -> dict[str, list[str]]:
    """The regressor sets compared: scheduler work, FLOP components, and both together.

    ``flop_columns`` None: the ``FLOP_COLUMNS`` present in ``frame`` (the FLOP sets are left
    out when none is). Named columns that are missing are an error, as are missing
    scheduler-work columns.
    """
    missing = [c for c in SCHEDULER_WORK_COLUMNS if c not in frame]
    if missing:
        raise KeyError(f"frame lacks scheduler-work column(s) {missing} "
                       f"(kv.blocks_used: call with_kv_blocks_used first)")
    if flop_columns is None:
        flops = [c for c in FLOP_COLUMNS if c in frame]
    else:
        flops = list(flop_columns)
        absent = [c for c in flops if c not in frame]
        if absent:
            raise KeyError(f"frame lacks FLOP column(s) {absent}")
    sets = {SET_SCHEDULER: list(SCHEDULER_WORK_COLUMNS)}
    if flops:
        sets[SET_FLOPS] = flops
        sets[SET_BOTH] = list(SCHEDULER_WORK_COLUMNS) + flops
    return sets


def below_quantile(y: np.ndarray, quantile: float | None) -> np.ndarray:
    """Rows of finite ``y`` at or below its ``quantile`` (all finite rows when None): the
    top of the distribution (rare pauses) left out."""
    ok = ~np.isnan(y)
    if quantile is None or not ok.any():
        return ok
    return ok & (y <= np.quantile(y[ok], quantile))


def explain_r2(frame: pd.DataFrame, targets: Sequence[str] = DEFAULT_TARGETS,
               flop_columns: Sequence[str] | None = None,
               sets: Mapping[str, Sequence[str]] | None = None,
               trim_quantile: float | None = TRIM_QUANTILE) -> pd.DataFrame:
    """Per experiment × target × regressor set: OLS R² and the rows it rests on.

    ``frame``: one row per sampled step with ``experiment_id``, the targets (e.g. the steps
    table merged with ``targets.step_targets`` and the ``phys_*`` columns) and the
    regressors (``kv.blocks_used`` from :func:`with_kv_blocks_used`). Rows with a NaN in the
    target or any regressor of the set are left out of that fit (``n_steps`` counts the
    rest), as are the steps above the target's ``trim_quantile`` in the experiment. With
    the three sets of :func:`regressor_sets`, two rows more per experiment and target: the
    incremental R² of each set beyond the other (``SET_SCHEDULER_BEYOND``,
    ``SET_FLOPS_BEYOND``; n_steps those of the joint fit). Returns ``R2_COLUMNS``, sorted by
    experiment, target and set order.
    """
    absent = [t for t in targets if t not in frame]
    if absent:
        raise KeyError(f"frame lacks target column(s) {absent}")
    chosen = dict(sets) if sets is not None else regressor_sets(frame, flop_columns)
    rows = []
    for exp, part in frame.groupby(EXP, sort=True):
        for target in targets:
            y = pd.to_numeric(part[target], errors="coerce").to_numpy(np.float64, na_value=np.nan)
            kept = below_quantile(y, trim_quantile)
            fits = {}
            for name, cols in chosen.items():
                x = np.column_stack([pd.to_numeric(part[c], errors="coerce").to_numpy(
                    np.float64, na_value=np.nan) for c in cols])
                ok = kept & ~np.isnan(x).any(axis=1)
                r2, k = ols_r2(y[ok], x[ok])
                fits[name] = {EXP: exp, "target": target, "regressors": name, "r2": r2,
                              "n_steps": int(ok.sum()), "n_regressors": k,
                              "na_reason": r2_na_reason(y[ok])}
            rows += fits.values()
            if {SET_SCHEDULER, SET_FLOPS, SET_BOTH} <= fits.keys():
                both = fits[SET_BOTH]
                for name, other in ((SET_SCHEDULER_BEYOND, SET_FLOPS),
                                    (SET_FLOPS_BEYOND, SET_SCHEDULER)):
                    gain = round_significant(both["r2"] - fits[other]["r2"])
                    rows.append({**both, "regressors": name, "r2": gain,
                                 "n_regressors": both["n_regressors"] - fits[other]["n_regressors"]})
    return pd.DataFrame(rows, columns=R2_COLUMNS)


def increment_summary(table: pd.DataFrame, minimum: float = INCREMENT_MIN) -> pd.DataFrame:
    """Per target and increment (``SET_SCHEDULER_BEYOND``, ``SET_FLOPS_BEYOND``) of an
    :func:`explain_r2` table: the median over experiments, its cluster-bootstrap percentile
    interval (resample.cluster_bootstrap_median: experiments resampled whole; NaN with too
    few) and ``credited``: the interval lies above ``minimum`` (the set explains what the
    other cannot). Returns ``INCREMENT_COLUMNS``."""
    inc = table[table["regressors"].isin([SET_SCHEDULER_BEYOND, SET_FLOPS_BEYOND])]
    rows = []
    for (target, name), part in inc.groupby(["target", "regressors"], sort=True):
        v = part["r2"].to_numpy(np.float64)
        v = v[np.isfinite(v)]
        lo, hi = resample.cluster_bootstrap_median(v)
        rows.append({"target": target, "regressors": name,
                     "median_increment": round_significant(float(np.median(v))) if len(v) else np.nan,
                     "ci_low": round_significant(lo), "ci_high": round_significant(hi),
                     "experiments": len(v), "credited": bool(np.isfinite(lo) and lo > minimum)})
    return pd.DataFrame(rows, columns=INCREMENT_COLUMNS)


def credited_set(summary: pd.DataFrame, target: str) -> str:
    """Which regressor set the data credits with ``target`` (increment_summary): "scheduler
    work", "flops", "both" or "neither" (the sets cannot be separated on this data)."""
    part = summary[summary["target"] == target].set_index("regressors")["credited"]
    sched = bool(part.get(SET_SCHEDULER_BEYOND, False))
    flops = bool(part.get(SET_FLOPS_BEYOND, False))
    return "both" if sched and flops else "scheduler work" if sched else "flops" if flops else "neither"


def credit_table(summary: pd.DataFrame) -> pd.DataFrame:
    """target, credited: :func:`credited_set` of each target of an :func:`increment_summary`
    table, in its order (the table ``what_explains_credit``)."""
    targets = list(dict.fromkeys(summary["target"]))
    return pd.DataFrame({"target": targets,
                         "credited": [credited_set(summary, t) for t in targets]},
                        columns=["target", "credited"])
