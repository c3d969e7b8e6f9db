"""FINDINGS' "A Step-Time Model for Simulators": reads the tables notebook 07_model wrote
(stepmodel_tables.TABLES) and computes nothing beyond what the sentences need."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..stepmodel import export, fit as stepmodel, evaluate
from ..run import stepmodel_tables
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


def _read(dirs: "RunDirs") -> dict[str, pd.DataFrame] | None:
    from ..core import artefacts

    if not all((dirs.tables / f"{t}.csv").is_file() for t in stepmodel_tables.TABLES):
        return None
    return {t: artefacts.read_table(dirs, t, "07_model") for t in stepmodel_tables.TABLES}


def stepmodel_context(tables: dict[str, pd.DataFrame], figure: str | None,
                      generated: bool = False) -> dict[str, Any]:
    """The section's numbers: the per-hardware coefficients, the pooled held-out errors, the
    winner of each scheme, the basis-vs-physical ratios and the largest disagreement."""
    coef = tables[stepmodel_tables.COEFFICIENTS]
    hw = coef[coef["scope"] == stepmodel.ALL_MODELS]
    per_model = coef[coef["scope"] != stepmodel.ALL_MODELS]
    errors = tables[stepmodel_tables.HELD_OUT]
    pooled = errors[errors["held_out"] == evaluate.ALL_GROUPS].copy()
    pooled["predictor"] = pooled["predictor"].map(evaluate.PREDICTOR_LABELS)
    schemes = []
    for scheme in pooled["scheme"].unique():
        best, best_v, second, second_v = evaluate.winner(errors, scheme)
        fitted = pooled[(pooled["scheme"] == scheme)]
        schemes.append({"scheme": scheme, "best": evaluate.PREDICTOR_LABELS[best],
                        "best_value": best_v,
                        "second": evaluate.PREDICTOR_LABELS[second],
                        "second_value": second_v,
                        "fitted_label": evaluate.PREDICTOR_LABELS["fitted"], "ratio": second_v / best_v if best_v else None,
                        "fitted_median_ape": float(fitted.loc[
                            fitted["predictor"] == evaluate.PREDICTOR_LABELS["fitted"],
                            "median_ape_pct"].iloc[0])})
    comp = tables[stepmodel_tables.BASIS_VS_PHYSICAL].dropna(subset=["ratio_median"])
    off = comp.assign(dev=(comp["ratio_of_sums"].apply(lambda r: max(r, 1 / r))))
    agree = off.groupby("component", sort=False)["dev"].max()
    disagree = off[off["dev"] > AGREE_FACTOR].sort_values("dev", ascending=False)
    data = tables[stepmodel_tables.DATA_SUMMARY].set_index("item")["value"]
    return {
        "target": str(hw["target"].iloc[0]), "hardware": str(hw["hardware"].iloc[0]),
        "n_steps": int(data["steps used"]), "n_experiments": int(data["experiments"]),
        "n_models": int(data["models"]),
        "dropped": {k.removeprefix("steps dropped: "): int(v) for k, v in data.items()
                    if k.startswith("steps dropped")},
        "coefficients": hw[["beta", "basis", "value", "ci_low", "ci_high", "reason",
                            "condition_index"]],
        "unidentified": hw.loc[~hw["identified"].astype(bool), ["beta", "reason"]].to_dict("records"),
        "per_model_identified": per_model.groupby("scope")["identified"].sum().astype(int).to_dict(),
        "pooled": pooled[["scheme", "predictor", "n_steps", "mape_pct", "median_ape_pct",
                          "bias_pct", "pearson_r"]],
        "schemes": schemes, "figure": figure, "generated": generated,
        "comparison": comp[["model", "component", "unit", "n_steps", "ratio_median",
                            "ratio_of_sums"]],
        "agree_components": [c for c, dev in agree.items() if dev <= AGREE_FACTOR],
        "disagree": disagree[["model", "component", "ratio_of_sums"]].to_dict("records"),
        "agree_factor": AGREE_FACTOR, "leaderboard": LEADERBOARD_MAPE_PCT,
        "client": None,                 # stepmodel_section adds make stepmodel-check's numbers
        "alpha_statement": export.ALPHA_STATEMENT, "weighting": stepmodel.WEIGHTING,
        "condition_limit": stepmodel.CONDITION_INDEX_LIMIT,
        "confidence_pct": stepmodel.CONFIDENCE * 100,
        "variance_limit": stepmodel.VARIANCE_PROPORTION_LIMIT,
    }


def stepmodel_na_reason(tables: dict[str, pd.DataFrame] | None) -> str:
    """Why notebook 07 fitted nothing (its data summary's na_reason), "" when it fitted or
    did not run."""
    if tables is None or not tables[stepmodel_tables.COEFFICIENTS].empty:
        return ""
    summary = tables[stepmodel_tables.DATA_SUMMARY].set_index("item")["value"]
    return str(summary.get("na_reason", "no fit"))


def stepmodel_section(dirs: "RunDirs", generated: bool = False,
                      show_figure: bool = True) -> str | None:
    """The rendered section, or None when notebook 07 has not written its tables;
    ``generated``: the run analyses the bundled generated dataset; ``show_figure`` False: the
    figure is shown elsewhere (FINDINGS' Answer, as its key figure)."""
    tables = _read(dirs)
    if tables is None:
        return None
    if (reason := stepmodel_na_reason(tables)):            # notebook 07 fitted nothing
        return render_section("stepmodel_na", {"na_reason": reason})
    fig_path = dirs.figures / f"{stepmodel_tables.FIGURE}.png"
    figure = (os.path.relpath(fig_path, dirs.out) if fig_path.is_file() and show_figure
              else None)
    ctx = stepmodel_context(tables, figure, generated)
    ctx["client"] = client_check_context(dirs)
    return render_section("stepmodel", ctx)


def client_check_context(dirs: "RunDirs") -> dict[str, Any] | None:
    """``make stepmodel-check``'s table (stepmodel_client.TABLE), summarised per predictor,
    or None when it has not been run for this report directory."""
    from ..run import stepmodel_client
    from .answer import read_optional

    t = read_optional(dirs, stepmodel_client.TABLE)
    if t is None:
        return None
    rows = {r.predictor: r for r in stepmodel_client.summary(t).itertuples(index=False)}
    fitted, shipped = rows.get(stepmodel_client.FITTED), rows.get(stepmodel_client.SHIPPED)
    if fitted is None:
        return None
    return {"runs": int(fitted.runs), "bar_pct": stepmodel_client.CLIENT_ERROR_MAX * 100,
            "fitted_tpot": float(fitted.median_abs_tpot_error),
            "fitted_e2e": float(fitted.median_abs_e2e_error), "within": bool(fitted.within_bar),
            "shipped_tpot": float(shipped.median_abs_tpot_error) if shipped else None,
            "shipped_e2e": float(shipped.median_abs_e2e_error) if shipped else None,
            "leaderboard": LEADERBOARD_CLIENT_PCT}
