"""FINDINGS' "What the Traces Measure": the step-time targets per experiment, their coverage,
the HBM lower bound and R² per target, the physical verdict per target and the client-side
evidence (tables of notebooks 02 and 04: stats.per_target, stats.explain,
targets.clientmetrics, targets.truthcheck)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..core import tables as names
from ..core.columns import DURATION, FORWARD, PERIOD, TARGETS
from ..core.tables import short_name
from ..core.thresholds import INCREMENT_MIN, TRIM_QUANTILE
from .format import fmt_ci, fmt_f3, fmt_frac, fmt_us
from .inputs import FindingsInput, read_table
from .verdicts import verdicts_by_target

if TYPE_CHECKING:
    from ..core.artefacts import RunDirs


#: The tables "What the Traces Measure" reads (CSV names in dirs.tables, without suffix).
MEASUREMENT_TABLES = [names.TARGET_COVERAGE, names.TARGET_MEDIANS, names.LOWER_BOUND,
                      names.WHAT_EXPLAINS, names.PHYSICAL_PURE, names.CLIENT_SUMMARY,
                      names.CLIENT_PLAUSIBILITY, names.CLIENT_FLOORS, names.PERIOD_VS_CLIENT,
                      names.TARGET_SUMMARY, names.ENGINE_LOOP_SUMMARY]
#: Read when present: the within-experiment table, the incremental R² of each regressor set
#: beyond the other (stats.explain.increment_summary) and the targets against the generator's
#: truth (targets.truthcheck), all written by notebook 04.
WITHIN_TABLE = names.WITHIN_EXPERIMENT
INCREMENT_TABLE = names.INCREMENT
TRUTH_TABLE = names.TRUTH_CHECK
#: Read with the truth check: its medians per target (targets.truthcheck.truth_summary).
TRUTH_SUMMARY_TABLE = names.TRUTH_SUMMARY
OPTIONAL_TABLES = (WITHIN_TABLE, INCREMENT_TABLE, TRUTH_TABLE)
#: Read with the incremental R²: the set the data credits per target (stats.explain.credit_table).
CREDIT_TABLE = names.CREDIT
#: Of MEASUREMENT_TABLES, those notebook 04 derives for this section: when the others are
#: there, a missing one is an error naming it.
DERIVED_TABLES = (names.CLIENT_FLOORS, names.TARGET_SUMMARY, names.ENGINE_LOOP_SUMMARY)
#: The hardware and weight precision the study states (its H100 peak, BF16 weights).
STATED_HARDWARE = ("h100-sxm", "bf16")
#: Where the facts about step.duration_us were read (docs/measurement.md §1).
INSTRUMENTING_CODE = {"repository": "inference-sim/vllm",
                      "file": "vllm/v1/core/sched/scheduler.py",
                      "base": "vLLM v0.15.1, step tracing added 2026-01-28",
                      "version": "vLLM v0.15.1"}


def _wide(frame: pd.DataFrame, value: str, index: str = "experiment_id") -> pd.DataFrame:
    w = frame.pivot_table(index=index, columns="target", values=value, sort=True)
    return w[[t for t in TARGETS if t in w.columns]].reset_index()


#: The counts of client_floor_candidates for a hardware candidate it has no row of.
_NO_RUNS = {"runs": 0, "below_tpot": 0, "below_per_token": 0}


def _client_context(t: dict[str, pd.DataFrame]) -> dict[str, Any]:
    summ, plaus = t[names.CLIENT_SUMMARY], t[names.CLIENT_PLAUSIBILITY]
    pub = summ[summ["source"] == names.SOURCE_PUBLISHED]
    gpu, precision = STATED_HARDWARE
    published = plaus[plaus["source"] == names.SOURCE_PUBLISHED]
    ref = published[(published["gpu"] == gpu) & (published["precision"] == precision)]
    cands = t[names.CLIENT_FLOORS]
    stated = cands[(cands["gpu"] == gpu) & (cands["precision"] == precision)]
    below = ({k: int(stated[k].iloc[0]) for k in _NO_RUNS} if len(stated) else dict(_NO_RUNS))
    table = ref[["run", "mean_tpot_ms", "per_token_ms", "floor_ms", "tpot_over_floor",
                 "per_token_over_floor", "implied_bw_per_token_tb_s"]].copy()
    table["run"] = table["run"].map(short_name)
    return {"n_published": len(pub), "two_events": int(pub["two_events_per_token"].astype(bool).sum()),
            "tpot_share": (float(pub["tpot_over_per_token"].min()), float(pub["tpot_over_per_token"].max())),
            "gpu": gpu, "precision": precision, "table": table, "candidates": cands,
            **below}


def measurement_context(fi: FindingsInput) -> dict[str, Any] | None:
    """Numbers of "What the Traces Measure" (None without the tables: seed-only run)."""
    t = fi.measurement
    if t is None:
        return None
    med = t["target_medians"].copy()
    below = _wide(t["lower_bound_check"], "fraction_below")
    r2 = t["what_explains_targets"]
    r2_wide = r2.pivot_table(index="experiment_id", columns=["target", "regressors"], values="r2",
                             sort=True)
    r2_wide.columns = [f"{a} on {b}" for a, b in r2_wide.columns]
    r2_wide = r2_wide.round(3).astype(object)
    r2_wide = r2_wide.where(r2_wide.notna(), "N/A")      # an R² without enough steps
    tc = t["target_coverage"]
    loop_cols = [c for c in ("engine_loop", "engine_loop_source", "share_forward_adjacent",
                             "share_forward_span", "share_gpu_waited") if c in tc]
    cov = tc[["experiment_id", *loop_cols[:2], "sampled_steps", "share_step_forward",
              "share_forward_event", *loop_cols[2:4], "share_step_period", "share_period_exact",
              *loop_cols[4:], *(["na_reason"] if "na_reason" in tc else [])]]
    cov = cov.copy()
    for c in ("engine_loop", "engine_loop_source"):      # an experiment without steps: no loop
        if c in cov:
            cov[c] = cov[c].astype(object).where(cov[c].notna(), "N/A")
    for frame in (med, below, cov):
        frame["experiment_id"] = frame["experiment_id"].map(short_name)
    r2_wide.index = r2_wide.index.map(short_name)
    pvc = t["period_vs_client"].assign(experiment_id=lambda f: f["experiment_id"].map(short_name))
    return {"code": INSTRUMENTING_CODE, "data_kind": fi.data_kind,
            "medians": med.drop(columns=["model", "workload"]),
            # every registered target's column: µs in the medians, a fraction below the bound
            "target_us_formats": {t: fmt_us for t in TARGETS},
            "target_frac_formats": {t: fmt_frac for t in TARGETS},
            **{f"median_{key}_us": target_median(t[names.TARGET_SUMMARY], target)
               for key, target in (("duration", DURATION), ("forward", FORWARD), ("period", PERIOD))},
            "below": below, "below_median": _below_median(t[names.TARGET_SUMMARY]),
            "coverage": cov, "r2": r2_wide.reset_index(),
            "verdicts": verdicts_by_target(fi.verdicts), "period_vs_client": pvc,
            "client": _client_context(t), "trim_pct": TRIM_QUANTILE * 100,
            "increments": _increments(t.get(INCREMENT_TABLE), t.get(CREDIT_TABLE)),
            "truth": _truth(t.get(TRUTH_TABLE), t.get(TRUTH_SUMMARY_TABLE)),
            "loop": _loop(t[names.ENGINE_LOOP_SUMMARY])}


def target_median(summary: pd.DataFrame, target: str) -> float:
    """The median over experiments of ``target``'s per-experiment median (target_summary);
    NaN when the run has no such target."""
    row = summary.loc[summary["target"] == target, "median_us"]
    return float(row.iloc[0]) if len(row) else math.nan


def _below_median(summary: pd.DataFrame) -> dict[str, float]:
    """target -> the median fraction of steps below the HBM bound (target_summary), for the
    targets that have one."""
    known = summary[summary["median_fraction_below"].notna()]
    return {str(t): float(v) for t, v in zip(known["target"], known["median_fraction_below"])}


def _loop(summary: pd.DataFrame) -> dict[str, Any] | None:
    """Which engine loop the targets assume per experiment (targets.engineloop; the table
    engine_loop_summary of stats.summary): how many experiments of each loop, detected or
    assumed, and the sampled steps before whose batch the traces show an idle GPU (waiting for
    the CPU) or cannot tell. None without a loop (a run before the targets knew it)."""
    total = summary[summary["engine_loop"] == names.ALL_EXPERIMENTS]
    loops = summary[summary["engine_loop"] != names.ALL_EXPERIMENTS]
    if not len(total) or not len(loops):
        return None
    every = total.iloc[0]
    return {"counts": [{"loop": r.engine_loop, "source": r.engine_loop_source, "n": int(r.experiments)}
                       for r in loops.itertuples(index=False)],
            "n_experiments": int(every["experiments"]),
            "sampled_steps": int(every["sampled_steps"]),
            "waited_steps": int(every["waited_steps"]),
            "wait_unknown_steps": int(every["wait_unknown_steps"])}


def _increments(inc: pd.DataFrame | None, credit: pd.DataFrame | None) -> dict[str, Any] | None:
    """The incremental R² per target (each set beyond the other: median and interval) and the
    set the data credits (``credit``: stats.explain.credit_table); ``all_neither``: no target
    separates them. A KeyError names the credit table when the increments come without it or
    it lacks a target."""
    if inc is None:
        return None
    if credit is None:
        raise KeyError(f"{INCREMENT_TABLE} is there but not {CREDIT_TABLE} "
                       f"({names.writer(CREDIT_TABLE)} writes both)")
    credited = credit.set_index("target")["credited"]
    rows = []
    for target in dict.fromkeys(inc["target"]):
        if target not in credited.index:
            raise KeyError(f"{CREDIT_TABLE} lacks the target {target!r}")
        part = inc[inc["target"] == target].set_index("regressors")
        cell = {}
        for name, key in ((names.SET_SCHEDULER_BEYOND, "scheduler"),
                          (names.SET_FLOPS_BEYOND, "flops")):
            r = part.loc[name] if name in part.index else None
            cell[key] = ("N/A" if r is None or pd.isna(r["median_increment"]) else
                         f"{fmt_f3(r['median_increment'])} {fmt_ci(r['ci_low'], r['ci_high'])}")
        rows.append({"target": target, **cell,
                     "experiments": int(part["experiments"].max()),
                     "credited": str(credited[target])})
    table = pd.DataFrame(rows, columns=["target", "scheduler", "flops", "experiments", "credited"])
    return {"table": table, "credits": table[["target", "credited"]].to_dict("records"),
            "all_neither": bool((table["credited"] == "neither").all()),
            "minimum": INCREMENT_MIN}


def _truth(truth: pd.DataFrame | None, summary: pd.DataFrame | None) -> dict[str, Any] | None:
    """The truth check per target (``summary``: medians over experiments, written beside it)
    and per experiment."""
    if truth is None:
        return None
    if summary is None:
        raise KeyError(f"{TRUTH_TABLE} is there but not {TRUTH_SUMMARY_TABLE} "
                       f"({names.writer(TRUTH_SUMMARY_TABLE)} writes both)")
    per = truth.assign(experiment_id=truth["experiment_id"].map(short_name))
    return {"summary": summary, "per_experiment": per.drop(columns=["sampled_steps"])}


def measurement_tables(dirs: "RunDirs") -> dict[str, pd.DataFrame] | None:
    """The MEASUREMENT_TABLES from dirs.tables, or None when one of them other than the
    DERIVED_TABLES is missing (a seed-only run); with the OPTIONAL_TABLES that are there, and
    the credit table with the incremental R². A missing derived or credit table is an error
    naming it and the notebook that writes it."""
    paths = {name: dirs.tables / f"{name}.csv" for name in MEASUREMENT_TABLES}
    if not all(p.is_file() for name, p in paths.items() if name not in DERIVED_TABLES):
        return None
    tables = {name: read_table(dirs, name) for name in MEASUREMENT_TABLES}
    for name in OPTIONAL_TABLES:
        path = dirs.tables / f"{name}.csv"
        if path.is_file():
            tables[name] = pd.read_csv(path)
    if INCREMENT_TABLE in tables:
        tables[CREDIT_TABLE] = read_table(dirs, CREDIT_TABLE)
    if TRUTH_TABLE in tables:
        tables[TRUTH_SUMMARY_TABLE] = read_table(dirs, TRUTH_SUMMARY_TABLE)
    return tables
