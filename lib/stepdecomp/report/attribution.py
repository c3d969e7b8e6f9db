"""FINDINGS' component attribution: which physical component explains how much of a step time.

Attribution reads the tables of the statistics (stepdecomp.stats.attribution; notebooks 02
and 04): ``component_attribution`` (long: one row per experiment and term, with the fit's
coefficient, its interval, whether the fit identifies it, and the term's LMG/Shapley share of
R² with its interval), ``fit_summary`` (one row per experiment: n_steps, R², the intercept,
each with its interval, and the block length of the bootstrap), and their summary over
experiments (``attribution_summary``, ``attribution_term_summary``: the medians and counts the
text quotes). An LMG share is the term's R² gain averaged over every order in which the terms
can enter the fit: shares are ≥ 0 and sum to R². A coefficient the fit does not identify
(collinear terms, or a coefficient at its bound) is shown as "not identified" and left out of
every median and count of the summary. The grouped attribution (``group_attribution``) has its
summaries too (``group_attribution_summary``, ``group_attribution_pairs``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from ..core import tables as names
from ..core.columns import ATTRIBUTION_TERMS
from ..core.thresholds import INSEPARABLE_ABS_R, valid_share
from .format import fmt_num, fmt_r3, fmt_share_pct, fmt_us, isnan
from .inputs import as_bool, exp, interval_method, require_columns

ATTRIBUTION_COLUMNS = ["experiment_id", "model", "workload", "term", "coef", "coef_ci_low",
                       "coef_ci_high", "identified", "lmg_share_r2", "lmg_ci_low",
                       "lmg_ci_high"]
FIT_COLUMNS = ["experiment_id", "model", "workload", "n_steps", "r2", "r2_ci_low", "r2_ci_high",
               "intercept_us", "intercept_ci_low", "intercept_ci_high"]
#: The summaries over experiments (stats.attribution: ATTRIBUTION_SUMMARY_COLUMNS,
#: TERM_SUMMARY_COLUMNS) of one target, without the ``target`` column.
SUMMARY_COLUMNS = ["n_experiments", "r2_median", "r2_min", "r2_max", "intercepts_identified",
                   "n_unidentified", "experiments_unidentified"]
TERM_SUMMARY_COLUMNS = ["term", "n_leads", "lead_rank", "n_leads_inseparable",
                        "inseparable_rank", "median_share", "n_identified", "median_coef"]
#: The check that an experiment's shown shares sum to its R² (stats.attribution.share_sums)
#: and the experiments per model (stats.attribution.by_model_experiments), of one target.
SHARE_SUM_COLUMNS = ["experiment_id", "model", "workload", "share_sum", "r2", "sums_to_r2"]
MODEL_EXPERIMENTS_COLUMNS = ["model_key", "n_experiments"]
NOT_IDENTIFIED = "not identified"
_require = require_columns


def _present(summary: pd.DataFrame | None, name: str) -> None:
    """A KeyError naming summary table ``name`` and its writer when it is not there."""
    if summary is None:
        raise KeyError(f"the attribution needs its summary {name} ({names.writer(name)} "
                       f"writes it)")


def _ci(value: str, low: float, high: float, fmt: Any) -> str:
    """``value [low, high]`` (just ``value`` when the interval is missing)."""
    return value if isnan(low) or isnan(high) else f"{value} [{fmt(low)}, {fmt(high)}]"


_valid_share = valid_share


def _share(x: float) -> float:
    """A valid share with rounding noise below 0 shown as 0 (core.thresholds.SHARE_TOLERANCE)."""
    return max(float(x), 0.0)


def share_cell(row: pd.Series) -> str:
    """A term's LMG share of the target's variance with its interval, one decimal:
    57.5% [52.1%, 60.3%]."""
    lo, hi = row["lmg_ci_low"], row["lmg_ci_high"]
    if not (_valid_share(lo) and _valid_share(hi)):
        lo = hi = math.nan
    return _ci(fmt_share_pct(_share(row["lmg_share_r2"])), lo, hi,
               lambda v: fmt_share_pct(_share(v)))


def coef_cell(row: pd.Series) -> str:
    """A coefficient with its interval, or "not identified" with the table's reason
    (``unidentified_reason``: constant, collinear, at_bound) where it gives one."""
    if not row["identified"] or isnan(row["coef"]):
        reason = row.get("unidentified_reason")
        return NOT_IDENTIFIED if isnan(reason) or not str(reason) else \
            f"{NOT_IDENTIFIED} ({reason})"
    return _ci(fmt_num(row["coef"]), row["coef_ci_low"], row["coef_ci_high"], fmt_num)


def intercept_cell(row: pd.Series) -> str:
    """The intercept (µs) with its interval, or "not identified" (``intercept_identified``)."""
    if "intercept_identified" in row and not as_bool(pd.Series([row["intercept_identified"]]))[0]:
        return NOT_IDENTIFIED
    return _ci(fmt_us(row["intercept_us"]), row["intercept_ci_low"], row["intercept_ci_high"],
               fmt_us)


def _wide(attr: pd.DataFrame, cell: Any, terms: list[str]) -> pd.DataFrame:
    cells = attr.assign(cell=[cell(r) for _, r in attr.iterrows()])
    wide = cells.pivot(index="experiment_id", columns="term", values="cell")
    return wide.reindex(columns=terms).astype(object).fillna("N/A")


def _ranked(terms: pd.DataFrame, count: str, rank: str) -> list[tuple[str, int]]:
    """(term, count) of the terms with a count, in the summary's rank order."""
    led = terms[terms[count] > 0].sort_values(rank, kind="stable")
    return [(str(t), int(n)) for t, n in zip(led["term"], led[count])]


def fitted_context(summary: pd.DataFrame, terms: pd.DataFrame) -> dict[str, Any] | None:
    """The summary over the experiments with a fit of one target, as the text quotes it
    (stats.attribution.attribution_summary and .attribution_term_summary), or None when no
    experiment has a fit: R² median and range, in how many the intercept is identified, the
    term with the largest share where it is separable and where it is collinear with others
    (``leads``, ``leads_inseparable``: term and count, most first), each term's median share,
    each term's median coefficient over the experiments that identify it, the terms never
    identified and the coefficients not identified."""
    _require(summary, SUMMARY_COLUMNS, names.ATTRIBUTION_SUMMARY)
    _require(terms, TERM_SUMMARY_COLUMNS, names.ATTRIBUTION_TERM_SUMMARY)
    if len(summary) != 1:
        raise ValueError(f"{names.ATTRIBUTION_SUMMARY}: {len(summary)} rows for one target")
    s = summary.iloc[0]
    n = int(s["n_experiments"])
    if n == 0:
        return None
    identified = terms[terms["n_identified"] > 0]
    return {
        "n": n, "r2_median": s["r2_median"], "r2_min": s["r2_min"], "r2_max": s["r2_max"],
        "intercepts_identified": None if pd.isna(s["intercepts_identified"])
        else int(s["intercepts_identified"]),
        "leads": _ranked(terms, "n_leads", "lead_rank"),
        "leads_inseparable": _ranked(terms, "n_leads_inseparable", "inseparable_rank"),
        "median_shares": [(str(t), float(v)) for t, v in zip(terms["term"], terms["median_share"])
                          if not isnan(v)],
        "coefs": [{"term": str(t), "median": float(m), "n_identified": int(k), "n": n}
                  for t, m, k in zip(identified["term"], identified["median_coef"],
                                     identified["n_identified"])],
        "never_identified": [str(t) for t in terms.loc[terms["n_identified"] == 0, "term"]],
        "n_unidentified": int(s["n_unidentified"]),
        "experiments_unidentified": int(s["experiments_unidentified"])}


def attribution_context(attr: pd.DataFrame, fit: pd.DataFrame, summary: pd.DataFrame | None,
                        term_summary: pd.DataFrame | None,
                        share_sums: pd.DataFrame | None) -> dict[str, Any]:
    """The attribution of one target: ``shares`` (per experiment: n_steps, R², intercept and
    each term's LMG share, with intervals), ``coefs`` (each term's coefficient with its
    interval, or "not identified"), in the terms' order of ``term_summary``, and the summary
    over experiments with a fit (``fitted``, :func:`fitted_context` of ``summary`` and
    ``term_summary``). Shares outside [0, 1] are not shown and are listed in ``invalid``;
    experiments whose shares do not sum to R² (``share_sums``: stats.attribution.share_sums)
    are listed in ``sum_mismatch``."""
    _present(summary, names.ATTRIBUTION_SUMMARY)
    _present(term_summary, names.ATTRIBUTION_TERM_SUMMARY)
    _present(share_sums, names.ATTRIBUTION_SHARE_SUMS)
    _require(share_sums, SHARE_SUM_COLUMNS, names.ATTRIBUTION_SHARE_SUMS)
    _require(attr, ATTRIBUTION_COLUMNS, names.COMPONENT_ATTRIBUTION)
    _require(fit, FIT_COLUMNS, names.FIT_SUMMARY)
    _require(term_summary, TERM_SUMMARY_COLUMNS, names.ATTRIBUTION_TERM_SUMMARY)
    attr = attr.assign(identified=as_bool(attr["identified"]))
    valid = attr["lmg_share_r2"].map(_valid_share)
    invalid = attr[~valid & attr["lmg_share_r2"].notna()]
    shown = attr[valid]
    terms = [str(t) for t in term_summary["term"]]
    fit = fit.sort_values(["model", "workload"]).reset_index(drop=True)
    fitted = fit.dropna(subset=["r2"])

    base = fit[["experiment_id", "model", "workload", "n_steps",
                *(["na_reason"] if "na_reason" in fit else [])]].assign(
        r2=[_ci(fmt_num(r), lo, hi, fmt_num) for r, lo, hi in
            zip(fit["r2"], fit["r2_ci_low"], fit["r2_ci_high"])],
        intercept=[intercept_cell(r) for _, r in fit.iterrows()])
    # an experiment without a shown share (no fit) has no row in the wide table: N/A
    shares = base.join(_wide(shown, share_cell, terms), on="experiment_id")
    shares[terms] = shares[terms].astype(object).fillna("N/A")
    coefs = fit[["experiment_id", "model", "workload"]].join(
        _wide(attr, coef_cell, terms), on="experiment_id")
    coefs[terms] = coefs[terms].astype(object).fillna("N/A")

    ctx: dict[str, Any] = {
        "terms": terms, "shares": shares.drop(columns="experiment_id"),
        "method": interval_method(fit) if "ci_method" in fit else {"unit": "block", "interval": ""},
        "coefs": coefs.drop(columns="experiment_id"), "fitted": None,
        "invalid": [exp(r, term=r["term"], share=r["lmg_share_r2"]) for _, r in invalid.iterrows()],
        "not_fitted": [exp(r) for _, r in fit[fit["r2"].isna()].iterrows()],
        "sum_mismatch": _sum_mismatch(share_sums)}
    if len(fitted):
        ctx["fitted"] = fitted_context(summary, term_summary)
    return ctx


def _sum_mismatch(share_sums: pd.DataFrame) -> list[dict[str, Any]]:
    """The experiments of ``share_sums`` whose shown shares do not sum to their R²."""
    off = share_sums[~as_bool(share_sums["sums_to_r2"])]
    return [exp(r, total=float(r["share_sum"]), r2=float(r["r2"])) for _, r in off.iterrows()]


# --------------------------------------------------------------------------- per model

BY_MODEL_COLUMNS = ["model_key", "term", "n_experiments", "n_identified", "median_coef",
                    "median_lmg_share_r2"]


def _terms(frame: pd.DataFrame) -> list[str]:
    """The terms of a per-model table in ATTRIBUTION_TERMS order (others after them)."""
    present = [t for t in dict.fromkeys(frame["term"]) if isinstance(t, str) and t]
    return [t for t in ATTRIBUTION_TERMS if t in present] + \
        [t for t in present if t not in ATTRIBUTION_TERMS]


def by_model_context(by_model: pd.DataFrame, experiments: pd.DataFrame | None,
                     models_by_hf_id: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """The per-model summary (stats.attribution.attribution_by_model: HF-identical models are one
    key) as two tables: each term's median share over the model's experiments (``shares``,
    with the model's experiments from ``experiments``: stats.attribution.by_model_experiments),
    and its median coefficient over the experiments that identify it with their count, or
    "not identified" where none does (``coefs``). A model is named by its slugs."""
    _require(by_model, BY_MODEL_COLUMNS, names.ATTRIBUTION_BY_MODEL)
    _present(experiments, names.ATTRIBUTION_MODEL_EXPERIMENTS)
    _require(experiments, MODEL_EXPERIMENTS_COLUMNS, names.ATTRIBUTION_MODEL_EXPERIMENTS)
    slugs = models_by_hf_id or {}

    def label(k: str) -> str:
        return " / ".join(slugs.get(k, [])) or k

    t = by_model.assign(model=by_model["model_key"].map(label))
    terms = _terms(t)
    n = (pd.Series(experiments["n_experiments"].to_numpy(),
                   index=pd.Index(experiments["model_key"].map(label), name="model"),
                   name="n_experiments").sort_index())

    def coef(r: pd.Series) -> str:
        if r["n_identified"] == 0 or isnan(r["median_coef"]):
            return f"{NOT_IDENTIFIED} (0 of {int(r['n_experiments'])})"
        return f"{fmt_num(r['median_coef'])} ({int(r['n_identified'])} of {int(r['n_experiments'])})"

    def wide(values: pd.Series) -> pd.DataFrame:
        w = t.assign(cell=values).pivot(index="model", columns="term", values="cell")
        return w.reindex(columns=terms).astype(object).fillna("N/A")

    shares = pd.concat([n, wide(t["median_lmg_share_r2"].map(fmt_share_pct))], axis=1)
    coefs = wide(pd.Series([coef(r) for _, r in t.iterrows()], index=t.index))
    return {"terms": terms, "shares": shares.reset_index(), "coefs": coefs.reset_index()}


# --------------------------------------------------------------------------- grouped terms

#: The groups of group_attribution, in table order, and the unidentified reason of a
#: regressor absorbed by the per-step constant (core.tables).
GROUPS = list(names.GROUPS)
ABSORBED = names.REASON_ABSORBED
GROUP_TABLE_COLUMNS = ["experiment_id", "model", "workload", "n_steps", "r2", "intercept_us",
                       *[c for g in GROUPS for c in (f"share_r2_{g}", names.coef_column(g),
                                                     f"identified_{g}", f"reason_{g}")],
                       *[c for a, b in names.group_pairs()
                         for c in (names.pair_r_column(a, b),
                                   names.pair_separable_column(a, b))]]
#: The summaries of one target (stats.attribution.group_summary, .group_pair_summary),
#: without the ``target`` column.
GROUP_SUMMARY_COLUMNS = ["group", "n_experiments", "n_varying", "n_absorbed", "median_share",
                         "n_identified", "median_coef", "intercept_median_us"]
PAIR_SUMMARY_COLUMNS = ["a", "b", "n_both_vary"]


def _group_cell(row: pd.Series, g: str) -> str:
    """A group's share and coefficient: ``44.3%, 8.7`` (the coefficient "not identified
    (reason)" where the fit does not identify it; "absorbed" for a constant regressor)."""
    reason = "" if isnan(row[f"reason_{g}"]) else str(row[f"reason_{g}"])
    if reason == ABSORBED:
        return "absorbed"
    coef = fmt_num(row[names.coef_column(g)]) if as_bool(
        pd.Series([row[f"identified_{g}"]]))[0] else f"{NOT_IDENTIFIED} ({reason})"
    return f"{fmt_share_pct(_share(row[f'share_r2_{g}']))}, {coef}"


def _pair_cell(r: float, separable: bool) -> str:
    """A pair's r, marked `` *`` where the two cannot be separated (the table's
    ``separable``: |r| ≥ INSEPARABLE_ABS_R)."""
    return fmt_r3(r) + ("" if isnan(r) or separable else " *")


def group_context(table: pd.DataFrame, summary: pd.DataFrame | None,
                  pairs: pd.DataFrame | None) -> dict[str, Any]:
    """group_attribution of one target as FINDINGS reads it: ``table`` (per experiment:
    n_steps, R², intercept µs, each group's share and coefficient, each pair's r), and over
    the experiments with a fit (``n``; ``summary``: stats.attribution.group_summary): per
    group (``groups``) the median share and its count over the experiments where the
    regressor varies, the experiments where it is absorbed by the per-step constant, the
    median coefficient over those that identify it; the median intercept; per pair
    (``pairs``: stats.attribution.group_pair_summary) the experiments where both vary and
    those where the two cannot be separated (not ``separable`` in the table)."""
    _present(summary, names.GROUP_SUMMARY)
    _present(pairs, names.GROUP_PAIR_SUMMARY)
    _require(table, GROUP_TABLE_COLUMNS, names.GROUP_ATTRIBUTION)
    _require(summary, GROUP_SUMMARY_COLUMNS, names.GROUP_SUMMARY)
    _require(pairs, PAIR_SUMMARY_COLUMNS, names.GROUP_PAIR_SUMMARY)
    t = table.sort_values(["model", "workload"]).reset_index(drop=True)
    fitted = t.dropna(subset=["r2"])
    shown = t[["model", "workload", "n_steps"]].assign(
        r2=t["r2"].map(fmt_num), intercept=t["intercept_us"].map(fmt_us))
    for g in GROUPS:
        shown[g] = [_group_cell(r, g) if not isnan(r["r2"]) else "N/A" for _, r in t.iterrows()]
    for a, b in names.group_pairs():
        shown[f"{a}__{b}"] = [_pair_cell(x, sep) for x, sep in zip(
            t[names.pair_r_column(a, b)], as_bool(t[names.pair_separable_column(a, b)]))]
    by_group = summary.set_index("group")
    missing = [g for g in GROUPS if g not in by_group.index]
    if missing:
        raise KeyError(f"{names.GROUP_SUMMARY} lacks group(s) {missing}")
    groups = [{"group": g, "n_varying": int(by_group.at[g, "n_varying"]),
               "n_absorbed": int(by_group.at[g, "n_absorbed"]),
               "median_share": float(by_group.at[g, "median_share"]),
               "n_identified": int(by_group.at[g, "n_identified"]),
               "median_coef": float(by_group.at[g, "median_coef"])} for g in GROUPS]
    by_pair = pairs.set_index(["a", "b"])
    pair_rows = []
    for a, b in names.group_pairs():
        if (a, b) not in by_pair.index:
            raise KeyError(f"{names.GROUP_PAIR_SUMMARY} lacks the pair {a}, {b}")
        r = fitted[names.pair_r_column(a, b)]
        apart = as_bool(fitted[names.pair_separable_column(a, b)])
        inseparable = fitted[r.notna() & ~apart]
        pair_rows.append({"a": a, "b": b, "n_both_vary": int(by_pair.at[(a, b), "n_both_vary"]),
                          "inseparable": [exp(x, r=x[names.pair_r_column(a, b)])
                                          for _, x in inseparable.iterrows()]})
    return {"table": shown, "n": int(by_group["n_experiments"].iloc[0]), "groups": groups,
            "pairs": pair_rows, "intercept_median": float(by_group["intercept_median_us"].iloc[0]),
            "not_fitted": [exp(r) for _, r in t[t["r2"].isna()].iterrows()],
            "threshold": INSEPARABLE_ABS_R}
