"""The within-experiment verdict beside the seed's pooled one, and the report's conclusion.

The seed's criterion pools every experiment's steps and asks whether a component's r on its
phase subset exceeds R_THRESHOLD for at least HYPOTHESIS_MIN_PASSING components; that stays
exactly as the seed ran it (seed.py, physical.py). Pooled over experiments, the r of a
component that is constant within each experiment (decode GEMM on the pure-decode steps of a
dense model: the weight read) measures only the differences between models. The
within-experiment verdict (stats.correlation.within_experiment_verdict, written by notebook 04
to the table ``verdicts_within``) takes, per component, the median over experiments of its
per-experiment r on its subset, with a cluster-bootstrap interval over experiments; the
report's conclusion follows from it. This module reads verdicts (core.verdicts.Verdict) and
decides nothing: which criteria pass is in the tables.
"""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd

from ..core.thresholds import R_THRESHOLD
from ..core.verdicts import PHYSICAL, WITHIN, Verdict
from .format import fmt_ci, isnan
from .inputs import FindingsInput, VerdictKey, interval_method

#: The prefill subsets a verdict can be taken on, in the order the text gives them.
PREFILL_SUBSETS = ("pure_prefill", "prefill_dominated")
#: The columns of one target's within-experiment table the report reads.
WITHIN_COLUMNS = ["subset", "component", "median_r", "ci_low", "ci_high", "n_experiments"]


def verdicts_of(verdicts: Mapping[VerdictKey, Verdict], kind: str,
                target: str) -> dict[str, Verdict] | None:
    """The verdicts of ``kind`` (core.verdicts: physical, within) on ``target``, by prefill
    subset (PREFILL_SUBSETS); None unless the tables hold both. A verdict table that has one
    but not the other is refused (a KeyError naming the missing one)."""
    found = {p: verdicts[(kind, target, p)] for p in PREFILL_SUBSETS
             if (kind, target, p) in verdicts}
    if not found:
        return None
    if len(found) < len(PREFILL_SUBSETS):
        lacking = [p for p in PREFILL_SUBSETS if p not in found]
        raise KeyError(f"the {kind} verdict on {target} lacks prefill subset(s) {lacking}")
    return found


def verdict_dict(v: Verdict) -> dict[str, Any]:
    """A Verdict for the templates: passing, n_criteria, required, label (and its words and
    status), supported, n_na and na_note (the criteria that are N/A) and the criteria rows as
    dicts."""
    return {"passing": v.passing, "n_criteria": len(v.table), "required": v.required,
            "label": v.label, "words": v.words, "status": v.status, "supported": v.supported,
            "n_na": v.n_na, "na_note": v.na_note(),
            "criteria": [r._asdict() for r in v.table.itertuples(index=False)]}


def headline_subset(within_pure: Verdict) -> str:
    """The prefill subset the conclusion rests on: pure_prefill (the seed's) when any
    experiment has a usable r of a prefill component on it (the within-experiment verdict on
    pure_prefill has a median r of a prefill criterion), else prefill_dominated."""
    prefill = within_pure.table[within_pure.table["subset"] == "pure_prefill"]
    return "pure_prefill" if prefill["median_r"].notna().any() else "prefill_dominated"


def pooled_vs_within(pooled: pd.DataFrame, within: pd.DataFrame, n_experiments: int,
                     criteria: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """Per criterion row (``criteria``: the (subset, component) of the verdicts' criteria,
    either prefill subset) present in both tables: pooled r, the within-experiment median r,
    in how many of ``n_experiments`` the component has a per-experiment r (``n_with_r``; the
    others hold it constant or lack steps), and whether the two part on it (``disagree``: one
    r above R_THRESHOLD and the other not) or the component has no usable r inside some
    experiment (``constant_somewhere``)."""
    merged = within.merge(pooled[["subset", "component", "pearson_r"]],
                          on=["subset", "component"], how="inner")
    out = []
    for _, r in merged.iterrows():
        if (r["subset"], r["component"]) not in criteria or isnan(r["pearson_r"]):
            continue
        n_with = int(r["n_experiments"]) if not isnan(r["n_experiments"]) else 0
        pooled_pass = bool(r["pearson_r"] > R_THRESHOLD)
        within_pass = bool(r["median_r"] > R_THRESHOLD)            # NaN: False
        out.append({"subset": r["subset"], "component": r["component"],
                    "pooled_r": float(r["pearson_r"]), "median_r": float(r["median_r"]),
                    "n_with_r": n_with, "n_experiments": n_experiments,
                    "constant_somewhere": n_with < n_experiments,
                    "disagree": pooled_pass != within_pass,
                    "pooled_pass": pooled_pass, "within_pass": within_pass})
    return out


def within_verdict_context(within: pd.DataFrame, pooled: pd.DataFrame, n_experiments: int,
                           verdicts: Mapping[str, Verdict]) -> dict[str, Any]:
    """The within-experiment table of one target, its verdict on pure phases and with
    prefill-dominated steps (``verdicts``: prefill subset -> the within-experiment verdict),
    the subset the conclusion rests on, and the rows where pooled and within-experiment r part
    (see :func:`pooled_vs_within`). A KeyError names the columns the table lacks."""
    missing = [c for c in WITHIN_COLUMNS if c not in within]
    if missing:
        raise KeyError(f"within_experiment_verdict lacks column(s) {missing}")
    table = within[["subset", "component", "median_r"]].assign(
        ci=[fmt_ci(a, b) for a, b in zip(within["ci_low"], within["ci_high"])],
        n_experiments=within["n_experiments"], passed=within["median_r"].gt(R_THRESHOLD),
        **({"na_reason": within["na_reason"]} if "na_reason" in within else {}))
    criteria = {(r.subset, r.component) for v in verdicts.values()
                for r in v.table.itertuples(index=False)}
    contrast = pooled_vs_within(pooled, within, n_experiments, criteria)
    return {"table": table, "pure": verdict_dict(verdicts["pure_prefill"]),
            "dominated": verdict_dict(verdicts["prefill_dominated"]),
            "headline": headline_subset(verdicts["pure_prefill"]),
            "n_experiments": n_experiments, "method": interval_method(within) if "ci_method" in within
            else {"unit": "cluster", "interval": ""},
            "constant": [c for c in contrast if c["constant_somewhere"]],
            "disagree": [c for c in contrast if c["disagree"]]}


def verdicts_by_target(verdicts: Mapping[VerdictKey, Verdict]) -> pd.DataFrame:
    """The physical verdict pooled over experiments per target and prefill subset (passing,
    required, supported), in the verdict table's order, with the within-experiment one beside
    it (within_passing, within_supported) where the tables have it."""
    pooled = pd.DataFrame([{"target": t, "prefill_subset": p, "passing": v.passing,
                            "required": v.required, "supported": v.supported}
                           for (kind, t, p), v in verdicts.items() if kind == PHYSICAL],
                          columns=["target", "prefill_subset", "passing", "required",
                                   "supported"])
    within = [{"target": t, "prefill_subset": p, "within_passing": v.passing,
               "within_supported": v.supported}
              for (kind, t, p), v in verdicts.items() if kind == WITHIN]
    if not within:
        return pooled
    return pooled.merge(pd.DataFrame(within), on=["target", "prefill_subset"], how="left")


def conclusion_context(within: pd.DataFrame | None, pooled: pd.DataFrame | None,
                       seed_verdict: Verdict, target: str, data_kind: str,
                       n_experiments: int,
                       verdicts: Mapping[str, Verdict] | None) -> dict[str, Any] | None:
    """The report's conclusion: the within-experiment verdict on ``target`` (``verdicts``:
    prefill subset -> verdict; on the prefill subset of :func:`headline_subset`), the seed's
    pooled verdict beside it, and what kind of data it rests on (``data_kind``: bundled =
    generated, fixture, own). None without the within-experiment table or its verdicts."""
    if within is None or pooled is None or within.empty or verdicts is None:
        return None
    ctx = within_verdict_context(within, pooled, n_experiments, verdicts)
    subset = ctx["headline"]
    verdict = ctx["pure"] if subset == "pure_prefill" else ctx["dominated"]
    prefill = [r for r in verdict["criteria"] if r["subset"] == subset]
    return {**ctx, "target": target, "data_kind": data_kind, "verdict": verdict,
            "prefill_unjudged": all(isnan(r["median_r"]) for r in prefill),
            "seed": verdict_dict(seed_verdict)}


def conclusion_input(fi: FindingsInput) -> dict[str, Any] | None:
    """:func:`conclusion_context` of a FindingsInput (None without its within-experiment
    table)."""
    return conclusion_context(fi.within, fi.physical_pure, fi.verdict, fi.physical_target,
                              fi.data_kind, len(fi.experiments),
                              verdicts_of(fi.verdicts, WITHIN, fi.physical_target))
