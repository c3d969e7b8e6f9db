"""FINDINGS' first screen: the Answer (the study's question, what the traces measure, the
answer on the analysed data with its numbers, the step-time model's held-out error, what the
data cannot show), the key figure, and the circularity tables (sensitivity, truth check).

The numbers come from the run's tables: the headline statistics from ``headlines`` (notebook
04: run.sensitivity.headline_table, one definition, so the Answer's values are the reference
values ``make sensitivity`` perturbs); the held-out errors from notebook 07's table; the engine
loop from ``target_coverage``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..core import columns
from ..core import tables as names
from ..core.paths import REPORTS_DIR
from ..core.tables import ALL_GROUPS, PREDICTOR_LABELS
from ..core.thresholds import MIN_STEPS_PER_EXPERIMENT, SENSITIVITY_SPREAD
from .inputs import FindingsInput, read_if_there, require_columns
from .measurement import target_median

if TYPE_CHECKING:
    from ..core.artefacts import RunDirs

#: ``make sensitivity``'s summary (one row per headline), read when present.
SENSITIVITY_TABLE = names.SENSITIVITY
#: The held-out schemes the Answer quotes (stepmodel.evaluate.SCHEMES): a workload, a model
#: never seen in fitting.
ANSWER_SCHEMES = ("workload", "model")
#: The predictors' names in the Answer (core.tables.PREDICTOR_LABELS in full elsewhere).
ANSWER_LABELS = {"fitted": "BLIS basis with fitted β", "blis_shipped": "BLIS's shipped β",
                 "physical": "uncalibrated roofline", "hgb": "gradient boosting"}
#: The Answer's headlines (run.sensitivity.HEADLINES keys) and the sentence each backs.
ANSWER_HEADLINES = ("physical_tracks_forward", "physical_runs_low")
#: The columns of the headline table the Answer reads (run.sensitivity.headline_table).
HEADLINE_COLUMNS = ["headline", "value", "threshold", "holds", "n_experiments",
                    "n_experiments_r"]


def headline_values(dirs: "RunDirs") -> dict[str, Any] | None:
    """The headlines' statistics on this run (the table ``headlines``): each headline's
    value, whether it holds and its threshold, and the number of experiments and of those the
    within-experiment r rests on; None without the table."""
    t = read_if_there(dirs, names.HEADLINES)
    if t is None:
        return None
    return headline_context(t)


def headline_context(t: pd.DataFrame) -> dict[str, Any]:
    """:func:`headline_values` of a headline table."""
    require_columns(t, HEADLINE_COLUMNS, names.HEADLINES)
    if t.empty:
        raise ValueError(f"{names.HEADLINES} has no row")
    values: dict[str, Any] = {h: float(v) for h, v in zip(t["headline"], t["value"])}
    values["n_experiments_r"] = int(t["n_experiments_r"].iloc[0])
    values["n_experiments"] = int(t["n_experiments"].iloc[0])
    values["holds"] = {h: _flag(x) for h, x in zip(t["headline"], t["holds"])}
    values["thresholds"] = {h: float(x) for h, x in zip(t["headline"], t["threshold"])}
    return values


def _flag(x: object) -> bool:
    """A boolean cell as written or read back from CSV."""
    return x if isinstance(x, bool) else str(x).strip().lower() in ("true", "1")


def engine_loop(summary: pd.DataFrame | None) -> dict[str, Any] | None:
    """The engine loop the targets were measured under (the table engine_loop_summary of
    stats.summary: per loop and source, the experiments): each loop with its experiment count
    and how many experiments each source decided (detected / assumed / parameter); None
    without the table or a loop in it (a run before the targets knew the loop)."""
    if summary is None:
        return None
    total = summary[summary["engine_loop"] == names.ALL_EXPERIMENTS]
    rows = summary[summary["engine_loop"] != names.ALL_EXPERIMENTS]
    if not len(total) or not len(rows):
        return None
    loops = []
    for loop in dict.fromkeys(rows["engine_loop"]):
        part = rows[rows["engine_loop"] == loop]
        loops.append({"loop": str(loop), "experiments": int(part["loop_experiments"].iloc[0]),
                      "sources": {str(s): int(n) for s, n in zip(part["engine_loop_source"],
                                                                  part["experiments"])}})
    return {"loops": loops, "n_experiments": int(total["experiments"].iloc[0])}


def held_out(table: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Pooled held-out median absolute % error of every predictor under each scheme of
    ANSWER_SCHEMES (``median_ape_pct``: scheme → value), in the table's order."""
    if table is None or "held_out" not in table:      # not run, or it fitted nothing
        return []
    pooled = table[table["held_out"] == ALL_GROUPS]
    out = []
    for p in dict.fromkeys(pooled["predictor"]):
        mine = pooled[pooled["predictor"] == p].set_index("scheme")["median_ape_pct"]
        out.append({"predictor": p,
                    "label": ANSWER_LABELS.get(p, PREDICTOR_LABELS.get(p, p)),
                    "median_ape_pct": {k: float(mine[k]) for k in ANSWER_SCHEMES if k in mine}})
    return out


def answer_context(fi: FindingsInput) -> dict[str, Any]:
    """The Answer's numbers and the categories its sentences branch on."""
    from .verdicts import conclusion_input

    conclusion = conclusion_input(fi)
    verdict = None if conclusion is None else conclusion["verdict"]
    medians = None if fi.measurement is None else fi.measurement[names.TARGET_SUMMARY]
    sens = fi.sensitivity
    robust = None
    if sens is not None and fi.headlines is not None:
        rows = sens.set_index("headline")
        robust = [{"headline": k, "kernels": int(rows.at[k, "holds_kernel_draws"]),
                   "kernel_draws": int(rows.at[k, "kernel_draws"]),
                   "seeds": int(rows.at[k, "holds_seed_draws"]),
                   "seed_draws": int(rows.at[k, "seed_draws"])}
                  for k in ANSWER_HEADLINES if k in rows.index]
    return {"kind": fi.data_kind, "data_root": fi.data_root,
            "min_steps": MIN_STEPS_PER_EXPERIMENT,
            "spread_pct": SENSITIVITY_SPREAD * 100,
            "n_experiments": len(fi.experiments),
            "median_duration_us": (None if medians is None
                                   else target_median(medians, columns.DURATION)),
            "headlines": fi.headlines, "loop": fi.engine_loop,
            "held_out": fi.held_out_errors, "schemes": ANSWER_SCHEMES,
            "stepmodel_na": fi.stepmodel_na,
            "verdict": verdict, "target": None if conclusion is None else conclusion["target"],
            "key_figure": fi.key_figure, "robust": robust,
}


def sensitivity_context(fi: FindingsInput) -> dict[str, Any] | None:
    """The sensitivity table (None when ``make sensitivity`` has not written it)."""
    if fi.sensitivity is None:
        return None
    t = fi.sensitivity
    keep = ["claim", "reference", *(["baseline"] if "baseline" in t else []), "seed_min",
            "seed_max", "seed_sd", "holds_seed_draws", "seed_draws", "kernels_min", "kernels_max",
            "holds_kernel_draws", "kernel_draws"]
    return {"table": t[keep], "spread_pct": SENSITIVITY_SPREAD * 100,
            "n_kernel_draws": int(t["kernel_draws"].max()),
            "n_seed_draws": int(t["seed_draws"].max()),
            "all_hold": bool((t["holds_kernel_draws"] == t["kernel_draws"]).all()
                             and (t["holds_seed_draws"] == t["seed_draws"]).all()),
            "fragile": t.loc[t["holds_kernel_draws"] < t["kernel_draws"], "claim"].tolist()}


def key_figure(dirs: "RunDirs") -> str | None:
    """The key figure (held-out predicted vs measured step time per model) relative to OUT,
    or None when notebook 07 has not drawn it."""
    path = dirs.figures / f"{names.STEPMODEL_FIGURE}.png"
    return os.path.relpath(path, dirs.out) if path.is_file() else None


def optional_table_path(dirs: "RunDirs", name: str, bundled: bool) -> Path | None:
    """A table written by a command outside ``make report`` (``make sensitivity``, ``make
    stepmodel-check``): in this run's tables, else — when the run analyses the bundled data
    (``bundled``: the data kind notebook 01 recorded), whose property such a table is — the
    committed reports/tables/ (so a report in another OUT, such as nbval's, says the same);
    None when neither has it."""
    path = dirs.tables / f"{name}.csv"
    if path.is_file():
        return path
    committed = REPORTS_DIR / "tables" / f"{name}.csv"
    if bundled and committed.is_file():
        return committed
    return None


def read_optional(dirs: "RunDirs", name: str, bundled: bool) -> pd.DataFrame | None:
    path = optional_table_path(dirs, name, bundled)
    return pd.read_csv(path) if path is not None else None
