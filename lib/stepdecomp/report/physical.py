"""FINDINGS' "Beyond the Seed: Physical Mode": journeys, the HBM lower bound, the physical
verdict, seed vs physical per experiment, the component fit and what differs from the seed,
each a ``<name>_context`` of the physical tables (stats.py, notebook 04) rendered by
``templates/_physical*.md.j2``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..stats import R_THRESHOLD, Verdict
from .format import fmt_ci, isnan
from .inputs import as_bool, exp, rows
from .render import (DELTA_R_NEGLIGIBLE, DURATION_TARGET, LOWER_BOUND_MATERIAL, MODEL_SPREAD,
                     NNLS_ODD_COEF, RANK_GAP, render_section)

if TYPE_CHECKING:
    from ..outputs import RunDirs


#: The physical-mode tables collect() looks for in dirs.tables (CSV names without suffix).
PHYSICAL_TABLES = ["physical_pure_phase_correlations", "physical_per_experiment_correlations",
                   "nnls_fit", "lower_bound_check", "reconstruction_report"]
#: The NNLS fit's components (coef_<key>, share_<key> columns), in table order.
NNLS_COMPONENTS = ["prefill_gemm", "prefill_attn", "decode_gemm", "decode_attn"]


def _flagged(lb: pd.DataFrame) -> pd.DataFrame:
    return lb[as_bool(lb["flagged"])] if "flagged" in lb else lb[lb["n_below"] > 0]


def journeys_context(per_experiment: pd.DataFrame,
                     reconstruction: pd.DataFrame | None) -> dict[str, Any]:
    """mode: report (from the reconstruction report), coverage (from journey_coverage) or
    unknown; the experiments with and without journeys; the batches' agreement."""
    if reconstruction is not None and "has_journeys" in reconstruction:
        rec = reconstruction.assign(has_journeys=as_bool(reconstruction["has_journeys"]))
        labels = per_experiment.set_index("experiment_id")[["model", "workload"]]
        rec = rec.join(labels, on="experiment_id")
        rec["model"] = rec["model"].fillna(rec["experiment_id"])
        rec["workload"] = rec["workload"].fillna("?")
        without, with_j, mode = rec[~rec["has_journeys"]], rec[rec["has_journeys"]], "report"
    elif "journey_coverage" in per_experiment and per_experiment["journey_coverage"].notna().any():
        rec = per_experiment
        without = rec[rec["journey_coverage"].fillna(0) == 0]
        with_j, mode = rec[rec["journey_coverage"].fillna(0) > 0], "coverage"
    else:
        return {"mode": "unknown"}
    agreement = None
    if "agreement" in with_j and with_j["agreement"].notna().any():
        a = with_j.dropna(subset=["agreement"])
        worst = a.loc[a["agreement"].idxmin()]
        agreement = {"median": a["agreement"].median(),
                     "worst": exp(worst, agreement=worst["agreement"])}
    return {"mode": mode, "n_with": len(with_j), "n_total": len(rec),
            "without": rows(without), "agreement": agreement}


def lower_bound_context(lb: pd.DataFrame) -> dict[str, Any]:
    """The lower-bound table (worst first), the flagged experiments and whether the worst
    fraction is material (at least LOWER_BOUND_MATERIAL)."""
    flagged = _flagged(lb)
    table = lb.sort_values(["fraction_below", "model", "workload"], ascending=[False, True, True])
    cols = [c for c in ["model", "workload", "n_steps", "n_below", "fraction_below",
                        "lower_bound_us", "median_ratio"] if c in table]
    top = float(flagged["fraction_below"].max()) if len(flagged) else math.nan
    return {"table": table[cols], "n_experiments": len(lb), "n_steps": int(lb["n_steps"].sum()),
            "n_below": int(lb["n_below"].sum()),
            "flagged": rows(flagged.sort_values("fraction_below", ascending=False),
                             "fraction_below", "n_steps"),
            "top": top, "material": bool(top >= LOWER_BOUND_MATERIAL)}


def _subset_n(pure: pd.DataFrame, subset: str) -> int:
    n = pure.loc[pure["subset"] == subset, "n_steps"]
    return int(n.max()) if len(n) and n.notna().any() else 0


def _verdict_dict(v: Verdict) -> dict[str, Any]:
    return {"passing": v.passing, "n_criteria": len(v.table), "required": v.required,
            "label": v.label, "criteria": [r._asdict() for r in v.table.itertuples()]}


def physical_verdict_context(pure: pd.DataFrame, v_pure: Verdict, v_dom: Verdict,
                             seed_verdict: Verdict | None) -> dict[str, Any]:
    """The physical r table with its intervals, the verdict on pure phases and with
    prefill-dominated steps, and the comparison with the seed's verdict (``change``)."""
    table = pure.assign(component=pure["component"].map(str),
                        ci=[fmt_ci(a, b) for a, b in zip(pure["ci_low"], pure["ci_high"])])
    seed = None
    if seed_verdict is not None:
        change = ("same" if seed_verdict.passing == v_pure.passing else
                  "more" if v_pure.passing > seed_verdict.passing else "fewer")
        seed = {**_verdict_dict(seed_verdict), "change": change}
    return {"table": table[["subset", "component", "pearson_r", "ci", "spearman_r", "loglog_r",
                            "n_steps"]],
            "pure": _verdict_dict(v_pure), "dominated": _verdict_dict(v_dom),
            "n_pure_prefill": _subset_n(pure, "pure_prefill"),
            "n_dominated": _subset_n(pure, "prefill_dominated"), "seed": seed}


def physical_per_experiment_context(per: pd.DataFrame) -> dict[str, Any]:
    """Seed vs physical r per experiment: the table and, where both are computable, the
    counts of gains and of intervals clear of the seed's r, the extremes and the rank gap."""
    t = per.sort_values("seed_pearson_r", ascending=False, na_position="last")
    t = t.assign(ci=[fmt_ci(a, b) for a, b in zip(t["phys_ci_low"], t["phys_ci_high"])])
    both = per.dropna(subset=["seed_pearson_r", "phys_pearson_r"])
    ctx: dict[str, Any] = {
        "table": t[["model", "workload", "seed_pearson_r", "phys_pearson_r", "ci", "delta_r",
                    "phys_spearman_r", "phys_loglog_r", "phys_n_steps"]],
        "n_experiments": len(per), "both": None,
        "na_physical": rows(per[per["phys_pearson_r"].isna()], "phys_n_steps")}
    if len(both):
        best, worst = both.loc[both["delta_r"].idxmax()], both.loc[both["delta_r"].idxmin()]
        gap = (both["phys_spearman_r"] - both["phys_pearson_r"]).median()
        ctx["both"] = {
            "n": len(both), "n_up": int((both["delta_r"] > 0).sum()),
            "n_sig_up": int((both["phys_ci_low"] > both["seed_pearson_r"]).sum()),
            "n_sig_down": int((both["phys_ci_high"] < both["seed_pearson_r"]).sum()),
            "median_seed": both["seed_pearson_r"].median(),
            "median_phys": both["phys_pearson_r"].median(),
            "gain": exp(best, seed=best["seed_pearson_r"], phys=best["phys_pearson_r"])
            if best["delta_r"] > 0 else None,
            "loss": exp(worst, seed=worst["seed_pearson_r"], phys=worst["phys_pearson_r"])
            if worst["delta_r"] < 0 else None,
            "n_seed_above": int((per["seed_pearson_r"] > R_THRESHOLD).sum()),
            "n_phys_above": int((per["phys_pearson_r"] > R_THRESHOLD).sum()),
            "rank_gap": gap if not isnan(gap) and abs(gap) >= RANK_GAP else None}
    return ctx


def nnls_context(nnls: pd.DataFrame) -> dict[str, Any]:
    """The NNLS table with the components it has (``components``), and over the fitted
    experiments: R², intercept, median coefficients, the leading share and the odd fits."""
    comps = [k for k in NNLS_COMPONENTS if f"coef_{k}" in nnls]
    t = nnls.sort_values(["model", "workload"])
    cols = ["model", "workload", "n_steps", "intercept_us", *[f"coef_{k}" for k in comps],
            *[f"share_{k}" for k in comps], "r2"]
    fitted = nnls.dropna(subset=["r2"])
    ctx: dict[str, Any] = {"components": comps, "table": t[cols], "fitted": None,
                           "not_fitted": rows(nnls[nnls["r2"].isna()])}
    if len(fitted):
        coefs = [(k, fitted[f"coef_{k}"].dropna()) for k in comps]
        shares = fitted[[f"share_{k}" for k in comps]]
        lead = shares.idxmax(axis=1, skipna=True).dropna().map(lambda s: s.removeprefix("share_"))
        coef_cols = [f"coef_{k}" for k in comps]
        odd = fitted[((fitted[coef_cols] == 0) | (fitted[coef_cols] > NNLS_ODD_COEF)).any(axis=1)]
        ctx["fitted"] = {
            "n": len(fitted), "r2_median": fitted["r2"].median(), "r2_min": fitted["r2"].min(),
            "r2_max": fitted["r2"].max(), "intercept_median": fitted["intercept_us"].median(),
            "coefs": [{"component": k, "median": c.median(), "zero": int((c == 0).sum()),
                       "n": len(c)} for k, c in coefs if len(c)],
            "leads": list(lead.value_counts().items()), "n_odd": len(odd)}
    return ctx


def _r_of(table: pd.DataFrame | None, subset: str, component: str) -> float:
    if table is None:
        return float("nan")
    row = table[(table["subset"] == subset) & (table["component"] == component)]
    return float(row["pearson_r"].iloc[0]) if len(row) else float("nan")


def _change(new: float, old: float) -> str:
    """same (within DELTA_R_NEGLIGIBLE, or nothing to compare with), better or worse."""
    if isnan(old) or abs(new - old) < DELTA_R_NEGLIGIBLE:
        return "same"
    return "better" if new > old else "worse"


def _per_model_change(both: pd.DataFrame, lb: pd.DataFrame | None) -> dict[str, Any] | None:
    """Median Δr per model when it spreads by at least MODEL_SPREAD, and the models that lose
    and are also flagged by the lower-bound check."""
    by_model = both.groupby("model")["delta_r"].median().sort_values(ascending=False)
    if not (len(by_model) > 1 and by_model.max() - by_model.min() >= MODEL_SPREAD):
        return None
    worse = by_model[by_model < -DELTA_R_NEGLIGIBLE]
    also: list[str] = []
    if len(worse) and lb is not None:
        also = sorted(set(worse.index) & set(_flagged(lb)["model"]))
    return {"deltas": list(by_model.items()), "flagged_losers": also}


def differences_context(pure: pd.DataFrame, per: pd.DataFrame, lb: pd.DataFrame | None,
                        seed_pure: pd.DataFrame | None, v_pure: Verdict,
                        v_dom: Verdict) -> dict[str, Any]:
    """What the physical mode changes: decode attention, the decode GEMM floor, the wider
    prefill subset, the per-experiment Δr (and per model) and the plausibility check."""
    da = _r_of(pure, "pure_decode", "phys_decode_attn_us")
    dg_seed = _r_of(seed_pure, "pure_decode", "decode_gemm_us")
    dg_phys = _r_of(pure, "pure_decode", "phys_decode_gemm_us")
    pp_n, dom_n = _subset_n(pure, "pure_prefill"), _subset_n(pure, "prefill_dominated")
    both = per.dropna(subset=["seed_pearson_r", "phys_pearson_r"])
    ctx: dict[str, Any] = {
        "decode_attn": {"r": da, "strength": None if isnan(da) else
                        "strong" if da > R_THRESHOLD else "weak" if da >= 0 else "negative"},
        "decode_gemm": None if isnan(dg_phys) else
        {"phys": dg_phys, "seed": dg_seed, "change": _change(dg_phys, dg_seed)},
        "widen": None, "per_experiment": None, "lower_bound": None}
    if v_dom.passing != v_pure.passing or dom_n > pp_n:
        ctx["widen"] = {"n_pure": pp_n, "n_dominated": dom_n, "pure": _verdict_dict(v_pure),
                        "dominated": _verdict_dict(v_dom)}
    if len(both):
        med = both["delta_r"].median()
        change = ("better" if med > DELTA_R_NEGLIGIBLE else
                  "same" if med > -DELTA_R_NEGLIGIBLE else "worse")
        ctx["per_experiment"] = {"median": med, "by_model": _per_model_change(both, lb),
                                 "change": change}
    if lb is not None:
        flagged = _flagged(lb)
        material = flagged[flagged["fraction_below"] >= LOWER_BOUND_MATERIAL]
        ctx["lower_bound"] = {"material": rows(material, "fraction_below"),
                              "n_flagged": len(flagged),
                              "max_fraction": flagged["fraction_below"].max()}
    return ctx


def physical_context(pure: pd.DataFrame, per_experiment: pd.DataFrame,
                     nnls: pd.DataFrame | None = None, lower_bound: pd.DataFrame | None = None,
                     reconstruction: pd.DataFrame | None = None,
                     seed_verdict: Verdict | None = None,
                     seed_pure: pd.DataFrame | None = None,
                     target: str = DURATION_TARGET) -> dict[str, Any]:
    """The physical section's subsections' contexts (None: the table is missing), all on
    the step-time ``target`` the tables were computed on."""
    from ..stats import physical_verdict

    v_pure, v_dom = physical_verdict(pure), physical_verdict(pure, "prefill_dominated")
    return {
        "target": target,
        "journeys": journeys_context(per_experiment, reconstruction),
        "lower_bound": None if lower_bound is None else {**lower_bound_context(lower_bound),
                                                         "target": target},
        "verdict": physical_verdict_context(pure, v_pure, v_dom, seed_verdict),
        "per_experiment": physical_per_experiment_context(per_experiment),
        "nnls": None if nnls is None else {**nnls_context(nnls), "target": target},
        "differences": differences_context(pure, per_experiment, lower_bound, seed_pure,
                                           v_pure, v_dom)}


def physical_section(pure: pd.DataFrame, per_experiment: pd.DataFrame,
                     nnls: pd.DataFrame | None = None, lower_bound: pd.DataFrame | None = None,
                     reconstruction: pd.DataFrame | None = None,
                     seed_verdict: Verdict | None = None,
                     seed_pure: pd.DataFrame | None = None,
                     target: str = "step.duration_us") -> str:
    """"## Beyond the Seed: Physical Mode" as markdown, from the physical tables:

    ``pure`` (stats.physical_pure_phase_correlations), ``per_experiment``
    (stats.physical_per_experiment_correlations), ``nnls`` (stats.nnls_fit), ``lower_bound``
    (stats.lower_bound_check), ``reconstruction`` (the report of
    reconstruct.attach_reconstruction), the seed's Verdict and pure-phase table for the
    comparison. Optional tables that are None leave their subsection out. Every number comes
    from these tables; the sentences branch on the data.
    """
    return render_section("physical", physical_context(
        pure, per_experiment, nnls, lower_bound, reconstruction, seed_verdict, seed_pure, target))


def physical_section_from_tables(dirs: "RunDirs", seed_verdict: Verdict | None = None,
                                 seed_pure: pd.DataFrame | None = None) -> str | None:
    """physical_section from the CSVs in dirs.tables, or None when the physical pure-phase
    and per-experiment tables are not there (a seed-only run). The other tables are optional."""
    paths = {name: dirs.tables / f"{name}.csv" for name in PHYSICAL_TABLES}
    if not (paths["physical_pure_phase_correlations"].is_file()
            and paths["physical_per_experiment_correlations"].is_file()):
        return None
    from ..measure import PRIMARY_TARGET, for_target

    raw = {name: pd.read_csv(p) if p.is_file() else None for name, p in paths.items()}
    has_target = "target" in raw["physical_pure_phase_correlations"]
    read = {name: None if t is None else for_target(t, PRIMARY_TARGET) for name, t in raw.items()}
    return physical_section(read["physical_pure_phase_correlations"],
                            read["physical_per_experiment_correlations"], nnls=read["nnls_fit"],
                            lower_bound=read["lower_bound_check"],
                            reconstruction=read["reconstruction_report"],
                            seed_verdict=seed_verdict, seed_pure=seed_pure,
                            target=PRIMARY_TARGET if has_target else DURATION_TARGET)
