"""The within-experiment verdict beside the seed's pooled one, and the report's conclusion.

The seed's criterion pools every experiment's steps and asks whether a component's r on its
phase subset exceeds R_THRESHOLD for at least HYPOTHESIS_MIN_PASSING components; that stays
exactly as the seed ran it (seed.py, physical.py). Pooled over experiments, the r of a
component that is constant within each experiment (decode GEMM on the pure-decode steps of a
dense model: the weight read) measures only the differences between models. The
within-experiment verdict (stats: ``within_experiment_verdict``) takes, per component, the
median over experiments of its per-experiment r on its subset, with a cluster-bootstrap
interval over experiments; the report's conclusion follows from it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..stats.correlation import (PHYSICAL_HYPOTHESIS_ROWS, R_THRESHOLD, Verdict,
                                 within_experiment_verdict)
from .format import fmt_ci, isnan
from .inputs import FindingsInput, data_kind, interval_method

#: The prefill subsets a verdict can be taken on, in the order the text gives them.
PREFILL_SUBSETS = ("pure_prefill", "prefill_dominated")
#: The columns of one target's within-experiment verdict table the report reads.
WITHIN_COLUMNS = ["subset", "component", "median_r", "ci_low", "ci_high", "n_experiments"]


def within_verdict(within: pd.DataFrame, prefill_subset: str = "pure_prefill") -> Verdict:
    """stats.within_experiment_verdict of one target's table, after checking that the table
    has the columns it reads (a KeyError naming the table and the columns otherwise)."""
    missing = [c for c in WITHIN_COLUMNS if c not in within]
    if missing:
        raise KeyError(f"within_experiment_verdict lacks column(s) {missing}")
    return within_experiment_verdict(within, prefill_subset)


def verdict_dict(v: Verdict) -> dict[str, Any]:
    """A Verdict for the templates: passing, n_criteria, required, label (and its words and
    status), supported, n_na and na_note (the criteria that are N/A) and the criteria rows as
    dicts."""
    return {"passing": v.passing, "n_criteria": len(v.table), "required": v.required,
            "label": v.label, "words": v.words, "status": v.status, "supported": v.supported,
            "n_na": v.n_na, "na_note": v.na_note(),
            "criteria": [r._asdict() for r in v.table.itertuples(index=False)]}


def headline_subset(within: pd.DataFrame) -> str:
    """The prefill subset the conclusion rests on: pure_prefill (the seed's) when any
    experiment has a usable r of a prefill component on it, else prefill_dominated."""
    v = within_verdict(within, "pure_prefill")
    prefill = v.table[v.table["subset"] == "pure_prefill"]
    return "pure_prefill" if prefill["median_r"].notna().any() else "prefill_dominated"


def pooled_vs_within(pooled: pd.DataFrame, within: pd.DataFrame,
                     n_experiments: int) -> list[dict[str, Any]]:
    """Per criterion row (either prefill subset) present in both tables: pooled r, the
    within-experiment median r, in how many of ``n_experiments`` the component has a
    per-experiment r (``n_with_r``; the others hold it constant or lack steps), and whether
    the two verdicts disagree on it (``disagree``) or the component has no usable r inside
    some experiment (``constant_somewhere``)."""
    keys = {(p if s == "pure_prefill" else s, c) for s, c in PHYSICAL_HYPOTHESIS_ROWS
            for p in PREFILL_SUBSETS}
    merged = within.merge(pooled[["subset", "component", "pearson_r"]],
                          on=["subset", "component"], how="inner")
    out = []
    for _, r in merged.iterrows():
        if (r["subset"], r["component"]) not in keys or isnan(r["pearson_r"]):
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


def within_verdict_context(within: pd.DataFrame, pooled: pd.DataFrame,
                           n_experiments: int) -> dict[str, Any]:
    """The within-experiment table of one target, its verdict on pure phases and with
    prefill-dominated steps, the subset the conclusion rests on, and the rows where pooled and
    within-experiment r part (see :func:`pooled_vs_within`)."""
    table = within[["subset", "component", "median_r"]].assign(
        ci=[fmt_ci(a, b) for a, b in zip(within["ci_low"], within["ci_high"])],
        n_experiments=within["n_experiments"], passed=within["median_r"].gt(R_THRESHOLD),
        **({"na_reason": within["na_reason"]} if "na_reason" in within else {}))
    verdicts = {p: verdict_dict(within_verdict(within, p)) for p in PREFILL_SUBSETS}
    contrast = pooled_vs_within(pooled, within, n_experiments)
    return {"table": table, "pure": verdicts["pure_prefill"],
            "dominated": verdicts["prefill_dominated"], "headline": headline_subset(within),
            "n_experiments": n_experiments, "method": interval_method(within) if "ci_method" in within
            else {"unit": "cluster", "interval": ""},
            "constant": [c for c in contrast if c["constant_somewhere"]],
            "disagree": [c for c in contrast if c["disagree"]]}


def within_by_target(within: pd.DataFrame) -> pd.DataFrame:
    """measure.within_verdicts_by_target of a stacked table (``target`` column) as the
    columns the per-target verdict table adds: target, prefill_subset, within_passing,
    within_supported."""
    from ..stats.per_target import within_verdicts_by_target

    v = within_verdicts_by_target(within, PREFILL_SUBSETS)
    return v.rename(columns={"passing": "within_passing", "supported": "within_supported"}) \
        .drop(columns="required")


def conclusion_context(within: pd.DataFrame | None, pooled: pd.DataFrame | None,
                       seed_verdict: Verdict, target: str, data_kind: str,
                       n_experiments: int) -> dict[str, Any] | None:
    """The report's conclusion: the within-experiment verdict on ``target`` (on the prefill
    subset of :func:`headline_subset`), the seed's pooled verdict beside it, and what kind of
    data it rests on (``data_kind``: bundled = generated, fixture, own). None without the
    within-experiment table."""
    if within is None or pooled is None or within.empty:
        return None
    ctx = within_verdict_context(within, pooled, n_experiments)
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
                              data_kind(fi.data_root), len(fi.experiments))
