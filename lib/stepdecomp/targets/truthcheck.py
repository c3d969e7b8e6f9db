"""The step-time targets checked against the generator's truth (bundled replay only).

The bundled replay writes, beside each experiment's traces, ``replay_truth.parquet``: one row
per simulated step with the times the traces only bound (the replay's truth sidecar). There
the targets of :mod:`.timestamps` can be checked against what they estimate:

* ``step_forward_us`` of step n: the GPU time of batch n, ``forward_us`` (plus the host time
  ``host_us`` outside the GPU under the sync loop, where the targets' forward interval
  includes it);
* ``step_period_us`` of step n: the loop iteration that waits for batch n,
  start(n+2) − start(n+1) under the async loop, start(n+1) − start(n) under sync
  (start: the ``start_ns`` of ``schedule()``).

:func:`truth_check` gives, per experiment and target, the coverage (share of the sampled
steps with a target value), the median absolute relative error, the median relative error
(bias, signed) and Pearson r between target and truth over the steps with both. This is a
check against the generator, and so exists only for the bundled data: real traces have no
truth (:func:`truth_check_table` returns None without ``replay_truth.parquet``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ..core import columns, tables
from ..core.columns import EXP

STEP_ID = columns.STEP_ID
FORWARD = columns.FORWARD
PERIOD = columns.PERIOD
TRUTH_FILE = "replay_truth.parquet"
TABLE = tables.TRUTH_CHECK
SUMMARY_TABLE = tables.TRUTH_SUMMARY
SUMMARY_COLUMNS = ["target", "experiments", "coverage", "median_abs_rel_error",
                   "median_rel_error", "pearson_r"]
ASYNC, SYNC = "async", "sync"
#: The engine loop of an experiment whose coverage table does not name one (the replay's
#: default and what the study ran).
DEFAULT_LOOP = ASYNC
#: Fewer steps with target and truth give N/A statistics.
MIN_STEPS = 10
TRUTH_COLUMNS = ["step_id", "start_ns", "host_us", "forward_us"]
CHECK_COLUMNS = [EXP, "target", "engine_loop", "sampled_steps", "steps_checked", "coverage",
                 "median_abs_rel_error", "median_rel_error", "pearson_r", "na_reason"]


def truth_targets(truth: pd.DataFrame, loop: str) -> pd.DataFrame:
    """Per simulated step (``step.id``): the true ``step_forward_us`` and ``step_period_us``
    under ``loop`` (module docstring). Steps are ordered by id; a period whose later start
    is beyond the last step is NaN."""
    if loop not in (ASYNC, SYNC):
        raise ValueError(f"engine loop must be {ASYNC!r} or {SYNC!r}, got {loop!r}")
    t = truth.sort_values("step_id", kind="stable")
    start = t["start_ns"].to_numpy(np.int64)
    forward = t["forward_us"].to_numpy(np.float64)
    if loop == SYNC:
        forward = forward + t["host_us"].to_numpy(np.float64)
    lag = 1 if loop == ASYNC else 0
    period = np.full(len(t), np.nan)
    n = len(t) - lag - 1
    if n > 0:
        period[:n] = (start[lag + 1:lag + 1 + n] - start[lag:lag + n]) / 1000.0
    return pd.DataFrame({STEP_ID: t["step_id"].to_numpy(np.int64), FORWARD: forward,
                         PERIOD: period})


def _stats(est: np.ndarray, true: np.ndarray) -> dict[str, float | str]:
    ok = np.isfinite(est) & np.isfinite(true) & (true > 0)
    n = int(ok.sum())
    if n < MIN_STEPS:
        return {"steps_checked": n, "median_abs_rel_error": np.nan, "median_rel_error": np.nan,
                "pearson_r": np.nan,
                "na_reason": f"{n} step(s) with target and truth, {MIN_STEPS} needed"}
    rel = (est[ok] - true[ok]) / true[ok]
    x, y = est[ok] - np.sum(est[ok]) / n, true[ok] - np.sum(true[ok]) / n
    denom = np.sqrt(np.sum(x * x) * np.sum(y * y))
    r = float(np.sum(x * y) / denom) if denom > 0 else np.nan
    return {"steps_checked": n, "median_abs_rel_error": float(np.median(np.abs(rel))),
            "median_rel_error": float(np.median(rel)), "pearson_r": r,
            "na_reason": "" if np.isfinite(r) else "Pearson r: constant target or truth"}


def truth_check(components: pd.DataFrame, truths: Mapping[str, pd.DataFrame],
                loops: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per experiment (of ``truths``) and target: coverage and the target's error against the
    truth (``CHECK_COLUMNS``). ``components``: one row per sampled step with experiment_id,
    step.id and the targets; ``loops``: each experiment's engine loop (default
    ``DEFAULT_LOOP``)."""
    loops = loops or {}
    rows = []
    for exp in sorted(truths):
        loop = loops.get(exp, DEFAULT_LOOP)
        part = components[components[EXP] == exp][[STEP_ID, FORWARD, PERIOD]]
        true = truth_targets(truths[exp], loop)
        both = part.merge(true, on=STEP_ID, how="left", suffixes=("", "_truth"))
        for target in (FORWARD, PERIOD):
            est = both[target].to_numpy(np.float64, na_value=np.nan)
            rows.append({EXP: exp, "target": target, "engine_loop": loop,
                         "sampled_steps": len(part),
                         "coverage": float(np.isfinite(est).mean()) if len(part) else np.nan,
                         **_stats(est, both[f"{target}_truth"].to_numpy(np.float64,
                                                                       na_value=np.nan))})
    return pd.DataFrame(rows, columns=CHECK_COLUMNS)


def read_truths(data_root: Path, experiments: list[str]) -> dict[str, pd.DataFrame]:
    """The truth table of every experiment that has one (``<root>/<exp>/replay_truth.parquet``)."""
    return {e: pd.read_parquet(p, columns=TRUTH_COLUMNS) for e in experiments
            if (p := data_root / e / TRUTH_FILE).is_file()}


def truth_check_table(data_root: Path, components: pd.DataFrame,
                      coverage: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """:func:`truth_check` of the run's components against the truth files under
    ``data_root``; the engine loops from ``coverage`` (target_coverage's ``engine_loop``)
    when it names them. None when no experiment has a truth file (real traces)."""
    truths = read_truths(Path(data_root), sorted(components[EXP].unique()))
    if not truths:
        return None
    loops = None
    if coverage is not None and "engine_loop" in coverage:
        loops = dict(zip(coverage[EXP], coverage["engine_loop"].astype(str)))
    return truth_check(components, truths, loops)


def truth_summary(check: pd.DataFrame) -> pd.DataFrame:
    """Per target of a :func:`truth_check` table (in its order): the experiments checked and
    the medians over them of the coverage, the median absolute and signed relative error and
    the Pearson r against the truth (N/A cells left out, as pandas' median does)."""
    out = (check.groupby("target", sort=False)
           .agg(experiments=(EXP, "size"), coverage=("coverage", "median"),
                median_abs_rel_error=("median_abs_rel_error", "median"),
                median_rel_error=("median_rel_error", "median"),
                pearson_r=("pearson_r", "median")).reset_index())
    return out[SUMMARY_COLUMNS]
