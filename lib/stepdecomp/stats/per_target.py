"""What the traces measure: the physical mode run on every step-time target, and the
client-side evidence, as tables for notebook 04 and the report.

The seed study correlated its components with ``step.duration_us``, which the instrumented
server records as the CPU time of ``schedule()`` (docs/measurement.md; the public
instrumenting code, ``inference-sim/vllm``, ``vllm/v1/core/sched/scheduler.py``). The traces
bound the model step through their timestamps instead (targets/timestamps.py). Each physical-mode
statistic is therefore computed per target (:data:`TARGETS`) with a ``target`` column; the
seed's own tables stay on ``step.duration_us`` exactly as the seed computed them.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from . import attribution, correlation
from ..core import columns, verdicts
from ..core.tables import PRIMARY_TARGET, for_target  # noqa: F401 (defined in core: the report reads them)
from ..targets.timestamps import TARGETS

#: The prefill subsets a verdict is taken on: the seed's pure-prefill steps, and the
#: prefill-dominated ones (correlation.prefill_dominated).
PREFILL_SUBSETS = ("pure_prefill", "prefill_dominated")


def on_targets(fn: Callable[..., pd.DataFrame], components: pd.DataFrame,
               targets: tuple[str, ...] = TARGETS, **kwargs: object) -> pd.DataFrame:
    """``fn(components)`` once per target present, the target standing in for the duration
    column the statistics read (correlation.DURATION); rows stacked with a leading ``target``."""
    frames = []
    for target in targets:
        if target not in components:
            continue
        view = components.assign(**{correlation.DURATION: components[target]})
        frames.append(fn(view, **kwargs).assign(target=target))
    if not frames:
        raise KeyError(f"components carry none of the targets {list(targets)}")
    out = pd.concat(frames, ignore_index=True)
    return out[["target", *[c for c in out.columns if c != "target"]]]


def verdicts_by_target(pure: pd.DataFrame, subsets: tuple[str, ...] = PREFILL_SUBSETS
                       ) -> pd.DataFrame:
    """The physical hypothesis verdict per target and prefill subset: components passing,
    components required, supported."""
    return _verdicts(correlation.physical_verdict, pure, subsets)


def _verdicts(verdict: Callable[[pd.DataFrame, str], "correlation.Verdict"], stacked: pd.DataFrame,
              subsets: tuple[str, ...]) -> pd.DataFrame:
    """``verdict`` of each target's rows of a stacked table, per prefill subset."""
    rows = []
    for target, table in stacked.groupby("target", sort=False):
        for subset in subsets:
            v = verdict(table.drop(columns="target"), subset)
            rows.append({"target": target, "prefill_subset": subset, "passing": v.passing,
                         "required": v.required, "supported": v.supported})
    return pd.DataFrame(rows)


def below_bound_by_target(lower_bound: pd.DataFrame) -> pd.DataFrame:
    """Experiment × target share of steps below the HBM lower bound (wide)."""
    wide = lower_bound.pivot_table(index="experiment_id", columns="target",
                                   values="fraction_below", sort=True)
    return wide[[t for t in TARGETS if t in wide.columns]].reset_index()


def period_vs_client(components: pd.DataFrame, client: pd.DataFrame) -> pd.DataFrame:
    """Per experiment with a client summary: the traces' median step period and median
    forward, against the client's time per output token ((E2E − TTFT)/(O − 1)) and its
    mean TPOT, in ms; ratio = period / per-token time."""
    med = components.groupby("experiment_id")[["step_period_us", "step_forward_us"]].median()
    c = client.set_index("run")[["per_token_ms", "mean_tpot_ms"]]
    out = med.join(c, how="inner")
    out = pd.DataFrame({"experiment_id": out.index,
                        "median_step_period_ms": out["step_period_us"].to_numpy() / 1e3,
                        "median_step_forward_ms": out["step_forward_us"].to_numpy() / 1e3,
                        "client_per_token_ms": out["per_token_ms"].to_numpy(),
                        "client_mean_tpot_ms": out["mean_tpot_ms"].to_numpy()})
    out["period_over_per_token"] = out["median_step_period_ms"] / out["client_per_token_ms"]
    return out.reset_index(drop=True).round(12)


def target_medians(components: pd.DataFrame) -> pd.DataFrame:
    """Per experiment: model, workload and the median of each target present (µs), and
    na_reason naming the targets no step of the experiment has."""
    cols = [t for t in TARGETS if t in components]
    g = components.groupby("experiment_id", sort=True)
    out = g[["model", "workload"]].first().join(g[cols].median()).reset_index().round(12)
    missing = out[cols].isna()
    out["na_reason"] = ["; ".join(f"{c}: no step has it" for c, m in zip(cols, row) if m)
                        for row in missing.itertuples(index=False)]
    return out


def median_r2(explain: pd.DataFrame) -> pd.DataFrame:
    """Median over experiments of the R² of each (target, regressor set)."""
    g = explain.dropna(subset=["r2"]).groupby(["target", "regressors"], sort=False)["r2"]
    return g.agg(median_r2="median", experiments="size").reset_index().round(12)


def attribution_on_targets(components: pd.DataFrame, targets: tuple[str, ...] = TARGETS,
                           **kwargs: object) -> attribution.Attribution:
    """attribution.attribute once per target present (one fit serves both tables), each
    table stacked with a leading ``target`` column as on_targets does."""
    parts = [(t, attribution.attribute(components, t, **kwargs)) for t in targets
             if t in components]
    if not parts:
        raise KeyError(f"components carry none of the targets {list(targets)}")

    def stack(frames: list[tuple[str, pd.DataFrame]]) -> pd.DataFrame:
        out = pd.concat([f.assign(target=t) for t, f in frames], ignore_index=True)
        return out[["target", *[c for c in out.columns if c != "target"]]]

    return attribution.Attribution(
        stack([(t, a.component_attribution) for t, a in parts]),
        stack([(t, a.fit_summary) for t, a in parts]))


def within_verdicts_by_target(within: pd.DataFrame,
                              subsets: tuple[str, ...] = PREFILL_SUBSETS) -> pd.DataFrame:
    """The within-experiment verdict (correlation.within_experiment_verdict) per target and prefill
    subset of a stacked within_experiment_verdict table: passing, required, supported."""
    return _verdicts(correlation.within_experiment_verdict, within, subsets)


def pooled_verdict_table(pure: pd.DataFrame, physical_pure: pd.DataFrame,
                         subsets: tuple[str, ...] = PREFILL_SUBSETS) -> pd.DataFrame:
    """The verdicts pooled over experiments, as the report reads them (table
    ``verdicts_pooled``, core.verdicts): the seed's (correlation.hypothesis_verdict of its
    pure-phase table, on step.duration_us, kind ``seed``), then the physical one of each
    target and prefill subset of a stacked physical pure-phase table (correlation
    .physical_verdict, kind ``physical``), in the table's target order."""
    rows = [verdicts.verdict_rows(correlation.hypothesis_verdict(pure), verdicts.SEED,
                                  columns.DURATION, "pure_prefill")]
    for target, table in physical_pure.groupby("target", sort=False):
        for subset in subsets:
            v = correlation.physical_verdict(table.drop(columns="target"), subset)
            rows.append(verdicts.verdict_rows(v, verdicts.PHYSICAL, str(target), subset))
    return verdicts.verdict_table(rows)


def within_verdict_table(within: pd.DataFrame,
                         subsets: tuple[str, ...] = PREFILL_SUBSETS) -> pd.DataFrame:
    """The within-experiment verdict (correlation.within_experiment_verdict) of each target
    and prefill subset of a stacked within_experiment_verdict table, as the report reads it
    (table ``verdicts_within``, kind ``within``)."""
    rows = []
    for target, table in within.groupby("target", sort=False):
        for subset in subsets:
            v = correlation.within_experiment_verdict(table.drop(columns="target"), subset)
            rows.append(verdicts.verdict_rows(v, verdicts.WITHIN, str(target), subset))
    return verdicts.verdict_table(rows)


__all__ = ["PRIMARY_TARGET", "PREFILL_SUBSETS", "TARGETS", "on_targets", "for_target",
           "verdicts_by_target", "below_bound_by_target", "period_vs_client", "target_medians",
           "median_r2", "attribution_on_targets", "within_verdicts_by_target",
           "pooled_verdict_table", "within_verdict_table"]
