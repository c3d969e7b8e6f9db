"""FINDINGS' component attribution: which physical component explains how much of a step time.

Attribution reads two tables of the statistics (notebook 04): ``component_attribution`` (long:
one row per experiment and term, with the fit's coefficient, its interval, whether the fit
identifies it, and the term's LMG/Shapley share of R² with its interval) and ``fit_summary``
(one row per experiment: n_steps, R², the intercept, each with its interval, and the block
length of the bootstrap). An LMG share is the term's R² gain averaged over every order in
which the terms can enter the fit: shares are ≥ 0 and sum to R². A coefficient the fit does
not identify (collinear terms, or a coefficient at its bound) is shown as "not identified"
and left out of every median and count of the summary.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from ..stats import attribution
from ..core import columns
from .format import fmt_num, fmt_r3, fmt_share_pct, fmt_us, isnan
from .inputs import as_bool, exp, interval_method

#: The terms of the component fit, in the order the tables show them (others follow).
ATTRIBUTION_TERMS = columns.ATTRIBUTION_TERMS
ATTRIBUTION_COLUMNS = ["experiment_id", "model", "workload", "term", "coef", "coef_ci_low",
                       "coef_ci_high", "identified", "lmg_share_r2", "lmg_ci_low",
                       "lmg_ci_high"]
FIT_COLUMNS = ["experiment_id", "model", "workload", "n_steps", "r2", "r2_ci_low", "r2_ci_high",
               "intercept_us", "intercept_ci_low", "intercept_ci_high"]
#: Slack for rounding when checking that a share lies in [0, 1] and that shares sum to R²
#: (outputs.write_table keeps FLOAT_SIG_DIGITS significant digits).
SHARE_TOLERANCE = 1e-6
SUM_TOLERANCE = 1e-3
NOT_IDENTIFIED = "not identified"


def _require(frame: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise KeyError(f"{name} lacks column(s) {missing}")


def _ci(value: str, low: float, high: float, fmt: Any) -> str:
    """``value [low, high]`` (just ``value`` when the interval is missing)."""
    return value if isnan(low) or isnan(high) else f"{value} [{fmt(low)}, {fmt(high)}]"


def _valid_share(x: float) -> bool:
    return not isnan(x) and -SHARE_TOLERANCE <= float(x) <= 1 + SHARE_TOLERANCE


def _share(x: float) -> float:
    """A valid share with rounding noise below 0 shown as 0 (SHARE_TOLERANCE)."""
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


def _terms(attr: pd.DataFrame) -> list[str]:
    """The terms of the table in ATTRIBUTION_TERMS order (others after them); the N/A rows of
    an experiment without steps have none."""
    present = [t for t in dict.fromkeys(attr["term"]) if isinstance(t, str) and t]
    return [t for t in ATTRIBUTION_TERMS if t in present] + \
        [t for t in present if t not in ATTRIBUTION_TERMS]


def _wide(attr: pd.DataFrame, cell: Any, terms: list[str]) -> pd.DataFrame:
    cells = attr.assign(cell=[cell(r) for _, r in attr.iterrows()])
    wide = cells.pivot(index="experiment_id", columns="term", values="cell")
    return wide.reindex(columns=terms).astype(object).fillna("N/A")


#: attribution's unidentified_reason of a coefficient collinear with others (Belsley).
COLLINEAR_REASON = "collinear"


def attribution_context(attr: pd.DataFrame, fit: pd.DataFrame) -> dict[str, Any]:
    """The attribution of one target: ``shares`` (per experiment: n_steps, R², intercept and
    each term's LMG share, with intervals), ``coefs`` (each term's coefficient with its
    interval, or "not identified"), and the summary over experiments with a fit (``fitted``):
    R² median and range, median intercept, the term with the largest share (counts) where
    it is separable, and where it is collinear with others (``leads_inseparable``), each
    term's median share, each term's median coefficient over the experiments that identify it.
    Shares outside [0, 1] are not shown and are listed in ``invalid``; experiments whose
    shares do not sum to R² are listed in ``sum_mismatch``."""
    _require(attr, ATTRIBUTION_COLUMNS, "component_attribution")
    _require(fit, FIT_COLUMNS, "fit_summary")
    attr = attr.assign(identified=as_bool(attr["identified"]))
    valid = attr["lmg_share_r2"].map(_valid_share)
    invalid = attr[~valid & attr["lmg_share_r2"].notna()]
    shown = attr[valid]
    terms = _terms(attr)
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
        "sum_mismatch": _sum_mismatch(shown, fitted)}
    if len(fitted):
        ok = shown[shown["experiment_id"].isin(fitted["experiment_id"])]
        lead = ok.loc[ok.groupby("experiment_id")["lmg_share_r2"].idxmax()]
        # a ranking is a claim only where the leading term is separable from the others: a
        # term collinear with another (Belsley) shares variance the data cannot split
        reason = lead.get("unidentified_reason", pd.Series("", index=lead.index))
        collinear = reason.astype(str) == COLLINEAR_REASON
        inseparable = lead[collinear]
        lead = lead[~collinear]
        ident = attr[attr["identified"] & attr["coef"].notna()
                     & attr["experiment_id"].isin(fitted["experiment_id"])]
        n_unident = attr[~attr["identified"] & attr["experiment_id"].isin(fitted["experiment_id"])]
        ctx["fitted"] = {
            "n": len(fitted), "r2_median": fitted["r2"].median(), "r2_min": fitted["r2"].min(),
            "r2_max": fitted["r2"].max(),
            "intercepts_identified": None if "intercept_identified" not in fitted else
            int(as_bool(fitted["intercept_identified"]).sum()),
            "leads": [(t, int(n)) for t, n in lead["term"].value_counts().items()],
            "leads_inseparable": [(t, int(n)) for t, n in
                                  inseparable["term"].value_counts().items()],
            "median_shares": [(t, float(ok.loc[ok["term"] == t, "lmg_share_r2"].median()))
                              for t in terms if (ok["term"] == t).any()],
            "coefs": [{"term": t, "median": float(ident.loc[ident["term"] == t, "coef"].median()),
                       "n_identified": int((ident["term"] == t).sum()), "n": len(fitted)}
                      for t in terms if (ident["term"] == t).any()],
            "never_identified": [t for t in terms if not (ident["term"] == t).any()],
            "n_unidentified": len(n_unident),
            "experiments_unidentified": int(n_unident["experiment_id"].nunique())}
    return ctx


def _sum_mismatch(shown: pd.DataFrame, fitted: pd.DataFrame) -> list[dict[str, Any]]:
    """Experiments whose shown shares do not sum to their R² (beyond SUM_TOLERANCE)."""
    sums = shown.groupby("experiment_id")["lmg_share_r2"].apply(
        lambda s: math.fsum(_share(x) for x in s))
    f = fitted.set_index("experiment_id")
    out = []
    for e, total in sums.items():
        if e in f.index and abs(total - float(f.loc[e, "r2"])) > SUM_TOLERANCE:
            out.append(exp(f.loc[e], total=total, r2=float(f.loc[e, "r2"])))
    return out


# --------------------------------------------------------------------------- per model

BY_MODEL_COLUMNS = ["model_key", "term", "n_experiments", "n_identified", "median_coef",
                    "median_lmg_share_r2"]


def by_model_context(by_model: pd.DataFrame,
                     models_by_hf_id: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """The per-model summary (attribution.attribution_by_model: HF-identical models are one
    key) as two tables: each term's median share over the model's experiments (``shares``),
    and its median coefficient over the experiments that identify it with their count, or
    "not identified" where none does (``coefs``). A model is named by its slugs."""
    _require(by_model, BY_MODEL_COLUMNS, "attribution_by_model")
    names = models_by_hf_id or {}
    t = by_model.assign(model=by_model["model_key"].map(lambda k: " / ".join(names.get(k, [])) or k))
    terms = _terms(t)
    n = t.groupby("model", sort=True)["n_experiments"].max().rename("n_experiments")

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

#: The groups of attribution.group_attribution, in table order, and the unidentified reason
#: of a regressor absorbed by the per-step constant.
GROUPS = list(attribution.GROUPS)
ABSORBED = attribution.REASON_ABSORBED
INSEPARABLE_ABS_R = attribution.INSEPARABLE_ABS_R
GROUP_TABLE_COLUMNS = ["experiment_id", "model", "workload", "n_steps", "r2", "intercept_us",
                       *[c for g in GROUPS for c in (f"share_r2_{g}", attribution.coef_column(g),
                                                     f"identified_{g}", f"reason_{g}")],
                       *[c for a, b in attribution.group_pairs()
                         for c in (attribution.pair_r_column(a, b),
                                   attribution.pair_separable_column(a, b))]]


def _group_cell(row: pd.Series, g: str) -> str:
    """A group's share and coefficient: ``44.3%, 8.7`` (the coefficient "not identified
    (reason)" where the fit does not identify it; "absorbed" for a constant regressor)."""
    reason = "" if isnan(row[f"reason_{g}"]) else str(row[f"reason_{g}"])
    if reason == ABSORBED:
        return "absorbed"
    coef = fmt_num(row[attribution.coef_column(g)]) if as_bool(
        pd.Series([row[f"identified_{g}"]]))[0] else f"{NOT_IDENTIFIED} ({reason})"
    return f"{fmt_share_pct(_share(row[f'share_r2_{g}']))}, {coef}"


def group_context(table: pd.DataFrame) -> dict[str, Any]:
    """attribution.group_attribution of one target as FINDINGS reads it: ``table`` (per
    experiment: n_steps, R², intercept µs, each group's share and coefficient, each pair's
    r), and over the experiments with a fit (``n``): per group (``groups``) the median share
    and its count over the experiments where the regressor varies, the experiments where it is
    absorbed by the per-step constant, the median coefficient over those that identify it;
    the median intercept; per pair (``pairs``) the experiments where the two cannot be
    separated (|r| ≥ INSEPARABLE_ABS_R, both varying)."""
    _require(table, GROUP_TABLE_COLUMNS, "group_attribution")
    t = table.sort_values(["model", "workload"]).reset_index(drop=True)
    fitted = t.dropna(subset=["r2"])
    shown = t[["model", "workload", "n_steps"]].assign(
        r2=t["r2"].map(fmt_num), intercept=t["intercept_us"].map(fmt_us))
    for g in GROUPS:
        shown[g] = [_group_cell(r, g) if not isnan(r["r2"]) else "N/A" for _, r in t.iterrows()]
    for a, b in attribution.group_pairs():
        r = t[attribution.pair_r_column(a, b)]
        shown[f"{a}__{b}"] = [fmt_r3(x) + ("" if isnan(x) or abs(x) < INSEPARABLE_ABS_R else " *")
                              for x in r]
    groups = []
    for g in GROUPS:
        reason = fitted[f"reason_{g}"].fillna("").astype(str)
        varying = fitted[reason != ABSORBED]
        ident = fitted[as_bool(fitted[f"identified_{g}"])]
        groups.append({"group": g, "n_varying": len(varying),
                       "n_absorbed": int((reason == ABSORBED).sum()),
                       "median_share": float(varying[f"share_r2_{g}"].median())
                       if len(varying) else math.nan,
                       "n_identified": len(ident),
                       "median_coef": float(ident[attribution.coef_column(g)].median())
                       if len(ident) else math.nan})
    pairs = []
    for a, b in attribution.group_pairs():
        r = fitted[attribution.pair_r_column(a, b)]
        both = r.notna()
        inseparable = fitted[both & (r.abs() >= INSEPARABLE_ABS_R)]
        pairs.append({"a": a, "b": b, "n_both_vary": int(both.sum()),
                      "inseparable": [exp(x, r=x[attribution.pair_r_column(a, b)])
                                      for _, x in inseparable.iterrows()]})
    return {"table": shown, "n": len(fitted), "groups": groups, "pairs": pairs,
            "intercept_median": float(fitted["intercept_us"].median()) if len(fitted)
            else math.nan,
            "not_fitted": [exp(r) for _, r in t[t["r2"].isna()].iterrows()],
            "threshold": INSEPARABLE_ABS_R}
