"""FINDINGS' "A Step-Time Model for Simulators": reads the tables notebook 07_model wrote
(run.stepmodel_tables.TABLES, named in core.tables) and ``make stepmodel-check``'s summary,
and computes nothing beyond what the sentences need."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..core import tables as names
from ..core.tables import ALL_GROUPS, ALL_MODELS, PREDICTOR_LABELS
from .inputs import read_table, require_columns
from .render import render_section

if TYPE_CHECKING:
    from ..core.artefacts import RunDirs

#: BLIS's own step-model research on the same runs (inference-sim/inference-sim, branch
#: stepml-experiments, hypotheses/h-stepml/LEADERBOARD_ALL_ROUNDS.md, as cited in issue 18):
#: best per-step MAPE (XGBoost), the analytical decomposition's and the old blackbox's, all
#: fitted to step.duration_us with a random split of requests.
LEADERBOARD_MAPE_PCT = {"XGBoost (best)": 34.0, "analytical decomposition": 78.7,
                        "blackbox": 70.4}
#: The same research at client level: its best mean E2E error and the ITL error it came with.
LEADERBOARD_CLIENT_PCT = {"e2e": 5.7, "itl": 107.8}
#: A BLIS / physical ratio within this factor of 1 (either way) is agreement.
AGREE_FACTOR = 1.05
#: The tables of notebook 07 the section reads.
TABLES = (names.STEPMODEL_COEFFICIENTS, names.STEPMODEL_HELD_OUT, names.STEPMODEL_BASIS_VS_PHYSICAL,
          names.STEPMODEL_DATA, names.STEPMODEL_METHOD, names.STEPMODEL_WINNERS,
          names.STEPMODEL_BASIS_AGREEMENT, names.STEPMODEL_IDENTIFIED)
#: The one row of stepmodel_method the text states (run.stepmodel_tables.method_table).
METHOD_COLUMNS = ["weighting", "condition_index_limit", "variance_proportion_limit",
                  "confidence", "alpha_statement"]
CLIENT_SUMMARY_COLUMNS = ["predictor", "median_abs_tpot_error", "median_abs_e2e_error", "runs",
                          "within_bar", "error_max"]


def _read(dirs: "RunDirs") -> dict[str, pd.DataFrame] | None:
    """The TABLES of notebook 07, or None when it has not run (no coefficient table); once it
    has, a missing one is an error naming it."""
    if not (dirs.tables / f"{names.STEPMODEL_COEFFICIENTS}.csv").is_file():
        return None
    return {t: read_table(dirs, t) for t in TABLES}


def stepmodel_context(tables: dict[str, pd.DataFrame], figure: str | None,
                      generated: bool = False) -> dict[str, Any]:
    """The section's numbers: the per-hardware coefficients, the pooled held-out errors, the
    winner of each scheme, the basis-vs-physical ratios and the largest disagreement."""
    coef = tables[names.STEPMODEL_COEFFICIENTS]
    hw = coef[coef["scope"] == ALL_MODELS]
    errors = tables[names.STEPMODEL_HELD_OUT]
    pooled = errors[errors["held_out"] == ALL_GROUPS].copy()
    pooled["predictor"] = pooled["predictor"].map(PREDICTOR_LABELS)
    method = tables[names.STEPMODEL_METHOD]
    require_columns(method, METHOD_COLUMNS, names.STEPMODEL_METHOD)
    m = method.iloc[0]
    schemes = []
    for w in tables[names.STEPMODEL_WINNERS].itertuples(index=False):
        fitted = pooled[(pooled["scheme"] == w.scheme)]
        schemes.append({"scheme": w.scheme, "best": PREDICTOR_LABELS[w.best],
                        "best_value": float(w.best_median_ape_pct),
                        "second": PREDICTOR_LABELS[w.second],
                        "second_value": float(w.second_median_ape_pct),
                        "fitted_label": PREDICTOR_LABELS["fitted"],
                        "ratio": None if pd.isna(w.ratio) else float(w.ratio),
                        "fitted_median_ape": float(fitted.loc[
                            fitted["predictor"] == PREDICTOR_LABELS["fitted"],
                            "median_ape_pct"].iloc[0])})
    comp = tables[names.STEPMODEL_BASIS_VS_PHYSICAL].dropna(subset=["ratio_median"])
    dev = tables[names.STEPMODEL_BASIS_AGREEMENT]       # run.stepmodel_tables.basis_agreement
    worst = dev[dev["model"] == ALL_MODELS]
    per_row = dev[dev["model"] != ALL_MODELS]
    disagree = (per_row[per_row["deviation"] > AGREE_FACTOR]
                .sort_values("deviation", ascending=False))
    identified = tables[names.STEPMODEL_IDENTIFIED]     # run.stepmodel_tables.identified_per_model
    data = tables[names.STEPMODEL_DATA].set_index("item")["value"]
    return {
        "target": str(hw["target"].iloc[0]), "hardware": str(hw["hardware"].iloc[0]),
        "n_steps": int(data["steps used"]), "n_experiments": int(data["experiments"]),
        "n_models": int(data["models"]),
        "dropped": {k.removeprefix("steps dropped: "): int(v) for k, v in data.items()
                    if k.startswith("steps dropped")},
        "coefficients": hw[["beta", "basis", "value", "ci_low", "ci_high", "reason",
                            "condition_index"]],
        "unidentified": hw.loc[~hw["identified"].astype(bool), ["beta", "reason"]].to_dict("records"),
        "per_model_identified": {str(r.scope): int(r.identified)
                                 for r in identified.itertuples(index=False)},
        "pooled": pooled[["scheme", "predictor", "n_steps", "mape_pct", "median_ape_pct",
                          "bias_pct", "pearson_r"]],
        "schemes": schemes, "figure": figure, "generated": generated,
        "comparison": comp[["model", "component", "unit", "n_steps", "ratio_median",
                            "ratio_of_sums"]],
        "agree_components": [str(r.component) for r in worst.itertuples(index=False)
                             if r.deviation <= AGREE_FACTOR],
        "disagree": disagree[["model", "component", "ratio_of_sums"]].to_dict("records"),
        "agree_factor": AGREE_FACTOR, "leaderboard": LEADERBOARD_MAPE_PCT,
        "client": None,                 # stepmodel_section adds make stepmodel-check's numbers
        "alpha_statement": str(m["alpha_statement"]), "weighting": str(m["weighting"]),
        "condition_limit": float(m["condition_index_limit"]),
        "confidence_pct": float(m["confidence"]) * 100,
        "variance_limit": float(m["variance_proportion_limit"]),
    }


def stepmodel_na_reason(tables: dict[str, pd.DataFrame] | None) -> str:
    """Why notebook 07 fitted nothing (its data summary's na_reason), "" when it fitted or
    did not run."""
    if tables is None or not tables[names.STEPMODEL_COEFFICIENTS].empty:
        return ""
    summary = tables[names.STEPMODEL_DATA].set_index("item")["value"]
    return str(summary.get("na_reason", "no fit"))


def stepmodel_section(dirs: "RunDirs", generated: bool = False,
                      show_figure: bool = True) -> str | None:
    """The rendered section, or None when notebook 07 has not written its tables;
    ``generated``: the run analyses the bundled generated dataset (and reads ``make
    stepmodel-check``'s summary from the committed reports/ when this run has none, see
    answer.optional_table_path); ``show_figure`` False: the figure is shown elsewhere
    (FINDINGS' Answer, as its key figure)."""
    tables = _read(dirs)
    if tables is None:
        return None
    if (reason := stepmodel_na_reason(tables)):            # notebook 07 fitted nothing
        return render_section("stepmodel_na", {"na_reason": reason})
    fig_path = dirs.figures / f"{names.STEPMODEL_FIGURE}.png"
    figure = (os.path.relpath(fig_path, dirs.out) if fig_path.is_file() and show_figure
              else None)
    ctx = stepmodel_context(tables, figure, generated)
    ctx["client"] = client_check_context(dirs, generated)
    return render_section("stepmodel", ctx)


def client_check_context(dirs: "RunDirs", bundled: bool = False) -> dict[str, Any] | None:
    """``make stepmodel-check``'s summary (the table stepmodel_client_summary: per predictor,
    run.stepmodel_client.summary), or None when it has not been run for this report
    directory (nor, on the bundled data, for the committed one)."""
    from .answer import read_optional

    t = read_optional(dirs, names.STEPMODEL_CLIENT_SUMMARY, bundled)
    if t is None:
        return None
    require_columns(t, CLIENT_SUMMARY_COLUMNS, names.STEPMODEL_CLIENT_SUMMARY)
    rows = {r.predictor: r for r in t.itertuples(index=False)}
    fitted, shipped = rows.get(names.CLIENT_CHECK_FITTED), rows.get(names.CLIENT_CHECK_SHIPPED)
    if fitted is None:
        return None
    return {"runs": int(fitted.runs), "bar_pct": float(fitted.error_max) * 100,
            "fitted_tpot": float(fitted.median_abs_tpot_error),
            "fitted_e2e": float(fitted.median_abs_e2e_error), "within": _flag(fitted.within_bar),
            "shipped_tpot": float(shipped.median_abs_tpot_error) if shipped else None,
            "shipped_e2e": float(shipped.median_abs_e2e_error) if shipped else None,
            "leaderboard": LEADERBOARD_CLIENT_PCT}


def _flag(x: object) -> bool:
    """A boolean cell as written or read back from CSV."""
    return x if isinstance(x, bool) else str(x).strip().lower() in ("true", "1")
