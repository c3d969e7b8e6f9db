"""FINDINGS' "Beyond the Seed: Physical Mode": journeys, the HBM lower bound, the pooled and the
within-experiment verdict, seed vs physical per experiment, the component attribution, the MoE
GEMM check and what differs from the seed, each a ``<name>_context`` of the physical tables
(stepdecomp.stats, notebooks 02 and 04) rendered by ``templates/_physical*.md.j2``. The
verdicts are read from the verdict tables (core.verdicts), the attribution's summary over
experiments from its summary tables: nothing here decides a verdict or fits anything.

Intervals: pooled statistics carry a cluster bootstrap over experiments (``ci_method``), the
per-experiment ones a stationary block bootstrap (block length by Politis–White,
``block_length``), and seed vs physical a paired bootstrap of Δr on the same resamples
(``delta_ci_low``, ``delta_ci_high``). The text states each method from the tables' columns,
and compares seed and physical only through the paired Δr interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import pandas as pd

from ..core import tables as names
from ..core.thresholds import R_THRESHOLD
from ..core.verdicts import PHYSICAL, WITHIN, Verdict
from .attribution import attribution_context, by_model_context, group_context
from .format import fmt_ci, isnan
from .inputs import (VerdictKey, as_bool, exp, interval_method, model_names, read_table,
                     require_columns, rows)
from .moe import moe_check_context
from .render import (DELTA_R_NEGLIGIBLE, DURATION_TARGET, LOWER_BOUND_MATERIAL, MODEL_SPREAD,
                     RANK_GAP, render_section)
from .verdicts import verdict_dict, within_verdict_context

if TYPE_CHECKING:
    from ..core.artefacts import RunDirs


#: The physical-mode tables collect() looks for in dirs.tables (CSV names without suffix);
#: the first two are required, the others optional (a missing one leaves its part out).
PHYSICAL_TABLES = [names.PHYSICAL_PURE, names.PHYSICAL_PER_EXPERIMENT, names.LOWER_BOUND,
                   names.RECONSTRUCTION, names.COMPONENT_ATTRIBUTION, names.FIT_SUMMARY,
                   names.ATTRIBUTION_BY_MODEL, names.WITHIN_EXPERIMENT, names.MOE_CHECK,
                   names.MOE_DELTA, names.GROUP_ATTRIBUTION]
#: The summaries notebook 04 writes beside the attribution tables: read whenever the table
#: they summarise is there (a missing one is an error naming it).
#: The columns of lower_bound_summary (one target) and reconstruction_summary the section
#: reads (stats.summary).
LOWER_BOUND_SUMMARY_COLUMNS = ["experiments", "steps", "steps_below", "flagged_experiments",
                               "max_fraction_below_flagged"]
RECONSTRUCTION_SUMMARY_COLUMNS = ["experiments", "with_journeys", "with_agreement",
                                  "median_agreement"]
SUMMARY_TABLES = {names.COMPONENT_ATTRIBUTION: [names.ATTRIBUTION_SUMMARY,
                                                names.ATTRIBUTION_TERM_SUMMARY,
                                                names.ATTRIBUTION_SHARE_SUMS],
                  names.ATTRIBUTION_BY_MODEL: [names.ATTRIBUTION_MODEL_EXPERIMENTS],
                  names.GROUP_ATTRIBUTION: [names.GROUP_SUMMARY, names.GROUP_PAIR_SUMMARY],
                  names.PHYSICAL_PER_EXPERIMENT: [names.PHYSICAL_PER_EXPERIMENT_SUMMARY],
                  names.MOE_CHECK: [names.MOE_SUMMARY],
                  names.LOWER_BOUND: [names.LOWER_BOUND_SUMMARY],
                  names.RECONSTRUCTION: [names.RECONSTRUCTION_SUMMARY]}


@dataclass
class PhysicalTables:
    """The physical mode's tables of one step-time target (no ``target`` column).

    ``pure`` (stats.correlation.physical_pure_phase_correlations), ``per_experiment``
    (stats.correlation.physical_per_experiment_correlations), ``verdicts`` (the target's
    physical verdicts and, with ``within``, its within-experiment ones, by (kind, prefill
    subset): core.verdicts, from the verdict tables), ``lower_bound``
    (stats.correlation.lower_bound_check), ``reconstruction`` (model.reconstruct
    .attach_reconstruction's report), ``attribution`` and ``fit_summary`` (the component fit:
    component_attribution, fit_summary) with their summaries over experiments
    (``attribution_summary``, ``term_summary``: stats.attribution.attribution_summary,
    .attribution_term_summary), ``attribution_by_model`` (its per-model summary), ``within``
    (within_experiment_verdict), ``moe_check`` and ``moe_delta`` (stats.moecheck
    .moe_gemm_check and .moe_delta_r: the MoE GEMM estimate and the physical r, old vs new),
    ``groups`` (stats.attribution.group_attribution: per step, token, KV byte, weight byte)
    with its summaries (``group_summary``, ``pair_summary``). None leaves that part out."""

    pure: pd.DataFrame
    per_experiment: pd.DataFrame
    verdicts: dict[tuple[str, str], Verdict] = field(default_factory=dict)
    lower_bound: pd.DataFrame | None = None
    reconstruction: pd.DataFrame | None = None
    attribution: pd.DataFrame | None = None
    fit_summary: pd.DataFrame | None = None
    attribution_by_model: pd.DataFrame | None = None
    within: pd.DataFrame | None = None
    moe_check: pd.DataFrame | None = None
    moe_delta: pd.DataFrame | None = None
    groups: pd.DataFrame | None = None
    attribution_summary: pd.DataFrame | None = None
    term_summary: pd.DataFrame | None = None
    group_summary: pd.DataFrame | None = None
    pair_summary: pd.DataFrame | None = None
    #: per_experiment's medians over experiments (stats.summary.physical_per_experiment_summary)
    per_summary: pd.DataFrame | None = None
    #: moe_check and moe_delta per MoE model (stats.moecheck.moe_summary)
    moe_summary: pd.DataFrame | None = None
    #: attribution's shares summed per experiment against R² (stats.attribution.share_sums)
    share_sums: pd.DataFrame | None = None
    #: attribution_by_model's experiments per model (stats.attribution.by_model_experiments)
    by_model_experiments: pd.DataFrame | None = None
    #: lower_bound's totals and worst flagged fraction (stats.summary.lower_bound_summary)
    lb_summary: pd.DataFrame | None = None
    #: reconstruction's median agreement (stats.summary.reconstruction_summary)
    rec_summary: pd.DataFrame | None = None

    def verdict(self, kind: str, prefill_subset: str) -> Verdict:
        """The target's verdict of ``kind`` (physical, within) on ``prefill_subset``; a
        KeyError says which one the verdict table lacks."""
        if (kind, prefill_subset) not in self.verdicts:
            table = names.VERDICTS_POOLED if kind == PHYSICAL else names.VERDICTS_WITHIN
            raise KeyError(f"no {kind} verdict on {prefill_subset} for the physical section "
                           f"(table {table}, written by {names.writer(table)})")
        return self.verdicts[(kind, prefill_subset)]


def _named(models: pd.Series, names: Mapping[str, str] | None) -> pd.Series:
    """Model slugs as their HF model's name (HF-identical slugs are one model)."""
    return models.map(lambda m: (names or {}).get(m, m))


def _flagged(lb: pd.DataFrame) -> pd.DataFrame:
    return lb[as_bool(lb["flagged"])] if "flagged" in lb else lb[lb["n_below"] > 0]


def journeys_context(per_experiment: pd.DataFrame, reconstruction: pd.DataFrame | None,
                     summary: pd.DataFrame | None = None) -> dict[str, Any]:
    """mode: report (from the reconstruction report), coverage (from journey_coverage) or
    unknown; the experiments with and without journeys; the batches' agreement (its median
    from ``summary``: stats.summary.reconstruction_summary, written beside the report)."""
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
    if mode == "report" and "agreement" in with_j and with_j["agreement"].notna().any():
        if summary is None:
            raise KeyError(f"{names.RECONSTRUCTION} is there but not "
                           f"{names.RECONSTRUCTION_SUMMARY} "
                           f"({names.writer(names.RECONSTRUCTION_SUMMARY)} writes both)")
        require_columns(summary, RECONSTRUCTION_SUMMARY_COLUMNS, names.RECONSTRUCTION_SUMMARY)
        a = with_j.dropna(subset=["agreement"])
        worst = a.loc[a["agreement"].idxmin()]
        agreement = {"median": float(summary["median_agreement"].iloc[0]),
                     "worst": exp(worst, agreement=worst["agreement"])}
    return {"mode": mode, "n_with": len(with_j), "n_total": len(rec),
            "without": rows(without), "agreement": agreement}


def _lb_summary(summary: pd.DataFrame | None) -> pd.Series:
    """The one row of lower_bound_summary of the target (stats.summary.lower_bound_summary)."""
    if summary is None or len(summary) != 1:
        raise KeyError(f"{names.LOWER_BOUND} needs one row of {names.LOWER_BOUND_SUMMARY} for "
                       f"its target ({names.writer(names.LOWER_BOUND_SUMMARY)} writes both)")
    require_columns(summary, LOWER_BOUND_SUMMARY_COLUMNS, names.LOWER_BOUND_SUMMARY)
    return summary.iloc[0]


def lower_bound_context(lb: pd.DataFrame, summary: pd.DataFrame | None) -> dict[str, Any]:
    """The lower-bound table (worst first), the flagged experiments and whether the worst
    fraction is material (at least LOWER_BOUND_MATERIAL); the totals and the worst fraction
    from ``summary`` (lower_bound_summary of the target)."""
    flagged = _flagged(lb)
    s = _lb_summary(summary)
    table = lb.sort_values(["fraction_below", "model", "workload"], ascending=[False, True, True])
    cols = [c for c in ["model", "workload", "n_steps", "n_below", "fraction_below",
                        "lower_bound_us", "median_ratio", "na_reason"] if c in table]
    top = float(s["max_fraction_below_flagged"])
    return {"table": table[cols], "n_experiments": len(lb), "n_steps": int(s["steps"]),
            "n_below": int(s["steps_below"]),
            "flagged": rows(flagged.sort_values("fraction_below", ascending=False),
                             "fraction_below", "n_steps"),
            "top": top, "material": bool(top >= LOWER_BOUND_MATERIAL)}


def _subset_n(pure: pd.DataFrame, subset: str) -> int:
    n = pure.loc[pure["subset"] == subset, "n_steps"]
    return int(n.max()) if len(n) and n.notna().any() else 0


def physical_verdict_context(pure: pd.DataFrame, v_pure: Verdict, v_dom: Verdict,
                             seed_verdict: Verdict | None) -> dict[str, Any]:
    """The pooled physical r table with its intervals and the rows behind each column, the
    verdict on pure phases and with prefill-dominated steps, the comparison with the seed's
    verdict (``change``) and how the intervals were computed (``method``,
    inputs.interval_method)."""
    table = pure.assign(component=pure["component"].map(str),
                        ci=[fmt_ci(a, b) for a, b in zip(pure["ci_low"], pure["ci_high"])])
    seed = None
    if seed_verdict is not None:
        change = ("same" if seed_verdict.passing == v_pure.passing else
                  "more" if v_pure.passing > seed_verdict.passing else "fewer")
        seed = {**verdict_dict(seed_verdict), "change": change}
    cols = ["subset", "component", "pearson_r", "ci", "spearman_r", "n_steps", "loglog_r",
            *[c for c in ("n_loglog", "na_reason") if c in table]]
    return {"table": table[cols], "method": interval_method(pure),
            "pure": verdict_dict(v_pure), "dominated": verdict_dict(v_dom),
            "n_pure_prefill": _subset_n(pure, "pure_prefill"),
            "n_dominated": _subset_n(pure, "prefill_dominated"), "seed": seed}


def _count(mask: pd.Series) -> int:
    return int(mask.fillna(False).astype(bool).sum())


def _seed_rows_differ(per: pd.DataFrame) -> bool:
    """Whether the seed's r ran on other rows than the physical one in some experiment."""
    return "seed_n_steps" in per and bool((per["seed_n_steps"] != per["phys_n_steps"]).any())


def per_experiment_medians(summary: pd.DataFrame | None) -> pd.Series:
    """The one row of physical_per_experiment_summary of a target (its medians over the
    experiments with both r); a ValueError without it."""
    if summary is None or len(summary) != 1:
        raise ValueError(f"{names.PHYSICAL_PER_EXPERIMENT_SUMMARY} needs one row for the target "
                         f"({names.writer(names.PHYSICAL_PER_EXPERIMENT_SUMMARY)} writes it)")
    return summary.iloc[0]


def physical_per_experiment_context(per: pd.DataFrame, summary: pd.DataFrame) -> dict[str, Any]:
    """Seed vs physical r per experiment: the table (with the paired Δr interval, the block
    length and the log-log rows where the table has them) and, where both are computable,
    the counts of gains by Pearson and by Spearman, of paired Δr intervals above and below 0,
    of experiments above R_THRESHOLD by either r, the extremes and the rank gap (the medians
    from ``summary``: physical_per_experiment_summary of the target)."""
    t = per.sort_values("seed_pearson_r", ascending=False, na_position="last")
    t = t.assign(ci=[fmt_ci(a, b) for a, b in zip(t["phys_ci_low"], t["phys_ci_high"])])
    paired = {"delta_ci_low", "delta_ci_high"} <= set(per.columns)
    if paired:
        t = t.assign(delta_ci=[fmt_ci(a, b) for a, b in zip(t["delta_ci_low"], t["delta_ci_high"])])
    cols = ["model", "workload", "seed_pearson_r", "phys_pearson_r", "ci", "delta_r",
            *(["delta_ci"] if paired else []),
            *(["seed_spearman_r"] if "seed_spearman_r" in t else []),
            "phys_spearman_r", "phys_n_steps",
            *(["seed_n_steps"] if _seed_rows_differ(t) else []), "phys_loglog_r",
            *[c for c in ("phys_n_loglog", "block_length", "na_reason") if c in t]]
    both = per.dropna(subset=["seed_pearson_r", "phys_pearson_r"])
    ctx: dict[str, Any] = {
        "table": t[cols], "n_experiments": len(per), "both": None, "paired": paired,
        "seed_rows_differ": _seed_rows_differ(t),
        "method": interval_method(per),
        "na_physical": rows(per[per["phys_pearson_r"].isna()], "phys_n_steps")}
    if len(both):
        best, worst = both.loc[both["delta_r"].idxmax()], both.loc[both["delta_r"].idxmin()]
        medians = per_experiment_medians(summary)
        gap = float(medians["median_rank_gap"])
        rank = both.dropna(subset=["seed_spearman_r", "phys_spearman_r"]) \
            if "seed_spearman_r" in both else both.iloc[:0]
        ctx["both"] = {
            "n": len(both), "n_up": _count(both["delta_r"] > 0),
            "n_rank": len(rank),
            "n_up_spearman": _count(rank["phys_spearman_r"] > rank["seed_spearman_r"])
            if len(rank) else None,
            "n_ci_up": _count(both["delta_ci_low"] > 0) if paired else None,
            "n_ci_down": _count(both["delta_ci_high"] < 0) if paired else None,
            "median_seed": float(medians["median_seed_pearson_r"]),
            "median_phys": float(medians["median_phys_pearson_r"]),
            "gain": exp(best, seed=best["seed_pearson_r"], phys=best["phys_pearson_r"])
            if best["delta_r"] > 0 else None,
            "loss": exp(worst, seed=worst["seed_pearson_r"], phys=worst["phys_pearson_r"])
            if worst["delta_r"] < 0 else None,
            "n_seed_above": _count(per["seed_pearson_r"] > R_THRESHOLD),
            "n_phys_above": _count(per["phys_pearson_r"] > R_THRESHOLD),
            "n_seed_above_spearman": _count(per["seed_spearman_r"] > R_THRESHOLD)
            if "seed_spearman_r" in per else None,
            "n_phys_above_spearman": _count(per["phys_spearman_r"] > R_THRESHOLD),
            "rank_gap": gap if not isnan(gap) and abs(gap) >= RANK_GAP else None}
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


def _per_model_change(both: pd.DataFrame, lb: pd.DataFrame | None,
                      names: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """Median Δr per model (HF-identical slugs merged: a model counts once, ``names``) when it
    spreads by at least MODEL_SPREAD, and the models that lose and are also flagged by the
    lower-bound check."""
    by_model = both.groupby(_named(both["model"], names))["delta_r"].median() \
        .sort_values(ascending=False)
    if not (len(by_model) > 1 and by_model.max() - by_model.min() >= MODEL_SPREAD):
        return None
    worse = by_model[by_model < -DELTA_R_NEGLIGIBLE]
    also: list[str] = []
    if len(worse) and lb is not None:
        also = sorted(set(worse.index) & set(_named(_flagged(lb)["model"], names)))
    return {"deltas": list(by_model.items()), "flagged_losers": also}


def differences_context(pure: pd.DataFrame, per: pd.DataFrame, lb: pd.DataFrame | None,
                        seed_pure: pd.DataFrame | None, v_pure: Verdict,
                        v_dom: Verdict, names: Mapping[str, str] | None = None,
                        target: str = DURATION_TARGET,
                        per_summary: pd.DataFrame | None = None,
                        lb_summary: pd.DataFrame | None = None) -> dict[str, Any]:
    """What the physical mode changes: decode attention, the decode GEMM floor, the wider
    prefill subset, the per-experiment Δr (and per model) and the plausibility check. The
    pooled decode GEMM r is compared with the seed's only on the seed's own target
    (``change`` other_target otherwise: the seed's r is on step.duration_us)."""
    da = _r_of(pure, "pure_decode", "phys_decode_attn_us")
    dg_seed = _r_of(seed_pure, "pure_decode", "decode_gemm_us")
    dg_phys = _r_of(pure, "pure_decode", "phys_decode_gemm_us")
    pp_n, dom_n = _subset_n(pure, "pure_prefill"), _subset_n(pure, "prefill_dominated")
    both = per.dropna(subset=["seed_pearson_r", "phys_pearson_r"])
    ctx: dict[str, Any] = {
        "decode_attn": {"r": da, "strength": None if isnan(da) else
                        "strong" if da > R_THRESHOLD else "weak" if da >= 0 else "negative"},
        "decode_gemm": None if isnan(dg_phys) else
        {"phys": dg_phys, "seed": dg_seed, "seed_target": DURATION_TARGET,
         "change": _change(dg_phys, dg_seed) if target == DURATION_TARGET else "other_target"},
        "widen": None, "per_experiment": None, "lower_bound": None}
    if v_dom.passing != v_pure.passing or dom_n > pp_n:
        ctx["widen"] = {"n_pure": pp_n, "n_dominated": dom_n, "pure": verdict_dict(v_pure),
                        "dominated": verdict_dict(v_dom)}
    if len(both):
        med = float(per_experiment_medians(per_summary)["median_delta_r"])
        change = ("better" if med > DELTA_R_NEGLIGIBLE else
                  "same" if med > -DELTA_R_NEGLIGIBLE else "worse")
        ctx["per_experiment"] = {"median": med, "by_model": _per_model_change(both, lb, names),
                                 "change": change}
    if lb is not None:
        flagged = _flagged(lb)
        material = flagged[flagged["fraction_below"] >= LOWER_BOUND_MATERIAL]
        ctx["lower_bound"] = {"material": rows(material, "fraction_below"),
                              "n_flagged": len(flagged),
                              "max_fraction": float(
                                  _lb_summary(lb_summary)["max_fraction_below_flagged"])}
    return ctx


def _within_rows(within: pd.DataFrame | None, subset: str) -> dict[str, dict[str, Any]]:
    """component -> {median_r, n_experiments} of the within-experiment table on ``subset``."""
    if within is None or within.empty:
        return {}
    rows = within[within["subset"] == subset]
    return {r["component"]: {"median_r": r["median_r"], "n_experiments": int(r["n_experiments"])}
            for _, r in rows.iterrows()}


def physical_context(tables: PhysicalTables, seed_verdict: Verdict | None = None,
                     seed_pure: pd.DataFrame | None = None, target: str = DURATION_TARGET,
                     models_by_hf_id: Mapping[str, list[str]] | None = None,
                     data_kind: str = "own") -> dict[str, Any]:
    """The physical section's subsections' contexts (None: the table is missing), all on
    the step-time ``target`` the tables were computed on. ``models_by_hf_id``: the model slugs
    of each HF model; per-model summaries count the slugs of one HF model as one model.
    ``data_kind``: bundled (generated), fixture or own (seed.dataset_note_context)."""
    t = tables
    pure, per = t.pure, t.per_experiment
    v_pure, v_dom = t.verdict(PHYSICAL, "pure_prefill"), t.verdict(PHYSICAL, "prefill_dominated")
    has_within = t.within is not None and not t.within.empty
    within_verdicts = ({p: t.verdict(WITHIN, p) for p in ("pure_prefill", "prefill_dominated")}
                       if has_within else None)
    attribution = None
    if t.attribution is not None and t.fit_summary is not None:
        attribution = {**attribution_context(t.attribution, t.fit_summary, t.attribution_summary,
                                             t.term_summary, t.share_sums),
                       "target": target,
                       "by_model": None if t.attribution_by_model is None
                       or t.attribution_by_model.empty else
                       by_model_context(t.attribution_by_model, t.by_model_experiments,
                                        models_by_hf_id),
                       "groups": None if t.groups is None or t.groups.empty else
                       group_context(t.groups, t.group_summary, t.pair_summary)}
    return {
        "target": target,
        "journeys": {**journeys_context(per, t.reconstruction, t.rec_summary),
                     "data_kind": data_kind},
        "lower_bound": None if t.lower_bound is None else
        {**lower_bound_context(t.lower_bound, t.lb_summary), "target": target},
        "verdict": physical_verdict_context(pure, v_pure, v_dom, seed_verdict),
        "within": None if within_verdicts is None else
        {**within_verdict_context(t.within, pure, len(per), within_verdicts), "target": target},
        "per_experiment": physical_per_experiment_context(per, t.per_summary),
        "attribution": attribution,
        "moe": None if t.moe_check is None or t.moe_check.empty else
        {**moe_check_context(t.moe_check, t.moe_summary, t.moe_delta, per,
                                         models_by_hf_id), "target": target},
        "differences": {**differences_context(pure, per, t.lower_bound, seed_pure, v_pure,
                                              v_dom, model_names(models_by_hf_id or {}), target,
                                              t.per_summary, t.lb_summary),
                        "has_within": has_within,
                        "data_kind": data_kind,
                        "within_decode": _within_rows(t.within, "pure_decode"),
                        "n_experiments": len(per)}}


def physical_section(tables: PhysicalTables, seed_verdict: Verdict | None = None,
                     seed_pure: pd.DataFrame | None = None, target: str = DURATION_TARGET,
                     models_by_hf_id: Mapping[str, list[str]] | None = None,
                     data_kind: str = "own") -> str:
    """"## Beyond the Seed: Physical Mode" as markdown, from the physical tables of one target
    (:class:`PhysicalTables`), the seed's Verdict and pure-phase table for the comparison.
    Optional tables that are None leave their subsection out. Every number comes from these
    tables; the sentences branch on the data."""
    return render_section("physical", physical_context(tables, seed_verdict, seed_pure, target,
                                                       models_by_hf_id, data_kind))


def read_physical_tables(dirs: "RunDirs", target: str,
                         verdicts: Mapping[VerdictKey, Verdict]) -> PhysicalTables | None:
    """The PHYSICAL_TABLES of ``target`` from the CSVs in dirs.tables (tables without a
    ``target`` column are taken whole), the summaries of those that have them
    (SUMMARY_TABLES) and the target's verdicts (``verdicts``: every verdict of the run), or
    None when the physical pure-phase and per-experiment tables are not there (a seed-only
    run)."""
    paths = {name: dirs.tables / f"{name}.csv" for name in PHYSICAL_TABLES}
    if not (paths[names.PHYSICAL_PURE].is_file()
            and paths[names.PHYSICAL_PER_EXPERIMENT].is_file()):
        return None
    read = {name: names.for_target(pd.read_csv(p), target) if p.is_file() else None
            for name, p in paths.items()}
    for table, summaries in SUMMARY_TABLES.items():
        for name in summaries:
            read[name] = (names.for_target(read_table(dirs, name), target)
                          if read[table] is not None else None)
    return PhysicalTables(
        pure=read[names.PHYSICAL_PURE], per_experiment=read[names.PHYSICAL_PER_EXPERIMENT],
        verdicts={(kind, p): v for (kind, t, p), v in verdicts.items() if t == target},
        lower_bound=read[names.LOWER_BOUND], reconstruction=read[names.RECONSTRUCTION],
        attribution=read[names.COMPONENT_ATTRIBUTION], fit_summary=read[names.FIT_SUMMARY],
        attribution_by_model=read[names.ATTRIBUTION_BY_MODEL],
        within=read[names.WITHIN_EXPERIMENT], moe_check=read[names.MOE_CHECK],
        moe_delta=read[names.MOE_DELTA], groups=read[names.GROUP_ATTRIBUTION],
        attribution_summary=read[names.ATTRIBUTION_SUMMARY],
        term_summary=read[names.ATTRIBUTION_TERM_SUMMARY],
        group_summary=read[names.GROUP_SUMMARY], pair_summary=read[names.GROUP_PAIR_SUMMARY],
        per_summary=read[names.PHYSICAL_PER_EXPERIMENT_SUMMARY],
        moe_summary=read[names.MOE_SUMMARY], share_sums=read[names.ATTRIBUTION_SHARE_SUMS],
        by_model_experiments=read[names.ATTRIBUTION_MODEL_EXPERIMENTS],
        lb_summary=read[names.LOWER_BOUND_SUMMARY], rec_summary=read[names.RECONSTRUCTION_SUMMARY])


def table_target(dirs: "RunDirs") -> str:
    """The target the physical section reads: core.tables.PRIMARY_TARGET when the tables carry
    a ``target`` column, else step.duration_us (tables written before the targets existed)."""
    path = dirs.tables / f"{names.PHYSICAL_PURE}.csv"
    has_target = path.is_file() and "target" in pd.read_csv(path, nrows=1)
    return names.PRIMARY_TARGET if has_target else DURATION_TARGET


def physical_section_from_tables(dirs: "RunDirs", seed_verdict: Verdict | None = None,
                                 seed_pure: pd.DataFrame | None = None,
                                 models_by_hf_id: Mapping[str, list[str]] | None = None,
                                 data_kind: str = "own") -> str | None:
    """physical_section from the CSVs in dirs.tables on :func:`table_target`, or None for a
    seed-only run."""
    from .inputs import read_verdicts

    if not (dirs.tables / f"{names.PHYSICAL_PURE}.csv").is_file():
        return None                                         # a seed-only run: no verdicts either
    target = table_target(dirs)
    tables = read_physical_tables(dirs, target, read_verdicts(dirs))
    if tables is None:
        return None
    return physical_section(tables, seed_verdict, seed_pure, target, models_by_hf_id, data_kind)
