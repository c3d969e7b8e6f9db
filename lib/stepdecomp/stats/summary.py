"""The medians, counts and totals over experiments that FINDINGS quotes of notebook 02's
per-experiment tables, each a small table of its own (core.tables names them; notebook 02
writes them beside their source tables through run.pipeline), so that the report only selects
and formats.

- :func:`target_summary` (``target_summary``): per target, the median over experiments of the
  per-experiment median (``target_medians``) and of the fraction of steps below the HBM lower
  bound (``lower_bound_check``);
- :func:`engine_loop_summary` (``engine_loop_summary``): per engine loop and how it was decided,
  the experiments and their sampled, GPU-waited and wait-unknown steps (``target_coverage``),
  with a row of totals;
- :func:`seed_r_summary` (``seed_r_summary``): the seed total's per-experiment r
  (``per_experiment_correlations``) as its median over all experiments and its mean per workload;
- :func:`physical_per_experiment_summary` (``physical_per_experiment_summary``): per target,
  over the experiments where both the seed's and the physical r are computable, the medians of
  both, of their difference Δr and of the physical Spearman − Pearson gap;
- :func:`lower_bound_summary` (``lower_bound_summary``): per target of ``lower_bound_check``, the
  experiments, their steps and steps below the HBM lower bound, the flagged experiments and
  the largest fraction below among them;
- :func:`reconstruction_summary` (``reconstruction_summary``): of ``reconstruction_report``,
  the experiments, those with journeys, those of them with a batch agreement and its median.
"""

from __future__ import annotations

import pandas as pd

from ..core import artefacts
from ..core import tables as names

#: The row over every experiment (engine_loop_summary's totals, seed_r_summary's median).
ALL = names.ALL_EXPERIMENTS
NO_LOOP = names.NO_LOOP
#: The component whose per-experiment r the seed's analysis quotes.
SEED_TOTAL = "total_analytical_us"

#: The summaries :func:`decompose_summaries` writes.
DECOMPOSE_SUMMARIES = (names.TARGET_SUMMARY, names.ENGINE_LOOP_SUMMARY, names.SEED_R_SUMMARY,
                       names.PHYSICAL_PER_EXPERIMENT_SUMMARY, names.LOWER_BOUND_SUMMARY,
                       names.RECONSTRUCTION_SUMMARY)

TARGET_SUMMARY_COLUMNS = ["target", "experiments", "median_us", "median_fraction_below"]
ENGINE_LOOP_COLUMNS = ["engine_loop", "engine_loop_source", "experiments", "loop_experiments",
                       "sampled_steps", "waited_steps", "wait_unknown_steps"]
SEED_R_COLUMNS = ["workload", "experiments", "median_pearson_r", "mean_pearson_r"]
PHYSICAL_SUMMARY_COLUMNS = ["target", "experiments", "median_seed_pearson_r",
                            "median_phys_pearson_r", "median_delta_r", "median_rank_gap"]
LOWER_BOUND_SUMMARY_COLUMNS = ["target", "experiments", "steps", "steps_below",
                               "flagged_experiments", "max_fraction_below_flagged"]
RECONSTRUCTION_SUMMARY_COLUMNS = ["experiments", "with_journeys", "with_agreement",
                                  "median_agreement"]




def flagged_rows(lower_bound: pd.DataFrame) -> pd.DataFrame:
    """The flagged experiments of a lower_bound_check table (its ``flagged`` column, or those
    with a step below the bound when it has none)."""
    if "flagged" in lower_bound:
        return lower_bound[artefacts.csv_bool(lower_bound["flagged"])]
    return lower_bound[lower_bound["n_below"] > 0]


def target_summary(medians: pd.DataFrame, lower_bound: pd.DataFrame,
                   targets: tuple[str, ...]) -> pd.DataFrame:
    """Per target of ``targets`` that ``medians`` (one column per target, one row per
    experiment) has: the experiments with a median, the median of their medians (µs) and the
    median over experiments of lower_bound_check's ``fraction_below`` on that target (NaN when
    no experiment has one). N/A medians are left out, as pandas' median does."""
    rows = []
    for target in targets:
        if target not in medians:
            continue
        below = lower_bound.loc[lower_bound["target"] == target, "fraction_below"]
        rows.append({"target": target, "experiments": int(medians[target].notna().sum()),
                     "median_us": float(medians[target].median()),
                     "median_fraction_below": float(below.median())})
    return pd.DataFrame(rows, columns=TARGET_SUMMARY_COLUMNS)


def engine_loop_summary(coverage: pd.DataFrame) -> pd.DataFrame:
    """One row per (engine_loop, engine_loop_source) of target_coverage, sorted (an
    experiment without a loop under NO_LOOP): its experiments, those of its loop whatever the
    source (``loop_experiments``), and the sampled steps, the steps before whose batch the GPU
    waited for the CPU (Σ share_gpu_waited × sampled_steps, rounded) and those where the traces
    cannot tell (share_gpu_wait_unknown); then the row ALL/ALL of the totals. Empty (with the
    columns) when the table has no engine_loop column."""
    if "engine_loop" not in coverage:
        return pd.DataFrame(columns=ENGINE_LOOP_COLUMNS)
    steps = coverage["sampled_steps"].astype(float)
    frame = pd.DataFrame({
        "engine_loop": coverage["engine_loop"].astype(object).where(coverage["engine_loop"].notna(), NO_LOOP).astype(str),
        "engine_loop_source": coverage.get("engine_loop_source", pd.Series(NO_LOOP, index=coverage.index))
        .astype(object).where(lambda s: s.notna(), NO_LOOP).astype(str),
        "sampled_steps": steps,
        "waited": coverage["share_gpu_waited"].astype(float) * steps,
        "unknown": coverage["share_gpu_wait_unknown"].astype(float) * steps})
    per_loop = frame.groupby("engine_loop").size()

    def row(loop: str, source: str, part: pd.DataFrame, loop_n: int) -> dict[str, object]:
        return {"engine_loop": loop, "engine_loop_source": source, "experiments": len(part),
                "loop_experiments": loop_n, "sampled_steps": int(part["sampled_steps"].sum()),
                "waited_steps": int(round(float(part["waited"].sum()))),
                "wait_unknown_steps": int(round(float(part["unknown"].sum())))}

    rows = [row(loop, source, part, int(per_loop[loop]))
            for (loop, source), part in frame.groupby(["engine_loop", "engine_loop_source"], sort=True)]
    rows.append(row(ALL, ALL, frame, len(frame)))
    return pd.DataFrame(rows, columns=ENGINE_LOOP_COLUMNS)


def seed_r_summary(per_experiment: pd.DataFrame) -> pd.DataFrame:
    """The seed total's per-experiment Pearson r: the row ALL (every experiment: count of
    those with an r, median) and one row per workload (count, mean), workloads in order of
    their mean r, highest first (those without any r left out)."""
    total = per_experiment[per_experiment["component"] == SEED_TOTAL]
    r = total["pearson_r"]
    rows = [{"workload": ALL, "experiments": int(r.notna().sum()),
             "median_pearson_r": float(r.median()), "mean_pearson_r": float(r.mean())}]
    by_workload = total.groupby("workload")["pearson_r"]
    means = by_workload.mean().dropna().sort_values(ascending=False)
    counts = by_workload.count()
    rows += [{"workload": w, "experiments": int(counts[w]), "median_pearson_r": float("nan"),
              "mean_pearson_r": float(m)} for w, m in means.items()]
    return pd.DataFrame(rows, columns=SEED_R_COLUMNS)


def physical_per_experiment_summary(per: pd.DataFrame) -> pd.DataFrame:
    """Per target of physical_per_experiment_correlations (in its order), over the
    experiments with both seed_pearson_r and phys_pearson_r: their number and the medians of
    the seed's r, the physical r, delta_r and the rank gap (phys_spearman_r − phys_pearson_r).
    A target without such an experiment has 0 and NaN medians."""
    rows = []
    for target in dict.fromkeys(per["target"]):
        part = per[per["target"] == target]
        both = part.dropna(subset=["seed_pearson_r", "phys_pearson_r"])
        rows.append({"target": target, "experiments": len(both),
                     "median_seed_pearson_r": float(both["seed_pearson_r"].median()),
                     "median_phys_pearson_r": float(both["phys_pearson_r"].median()),
                     "median_delta_r": float(both["delta_r"].median()),
                     "median_rank_gap": float((both["phys_spearman_r"]
                                               - both["phys_pearson_r"]).median())})
    return pd.DataFrame(rows, columns=PHYSICAL_SUMMARY_COLUMNS)


def lower_bound_summary(lower_bound: pd.DataFrame) -> pd.DataFrame:
    """Per target of lower_bound_check (in its order): the experiments, the sum of their
    n_steps and n_below, the flagged experiments (:func:`flagged_rows`) and the largest
    fraction_below among them (NaN when none is flagged)."""
    rows = []
    for target in dict.fromkeys(lower_bound["target"]):
        part = lower_bound[lower_bound["target"] == target]
        flagged = flagged_rows(part)
        rows.append({"target": target, "experiments": len(part),
                     "steps": int(part["n_steps"].sum()), "steps_below": int(part["n_below"].sum()),
                     "flagged_experiments": len(flagged),
                     "max_fraction_below_flagged": float(flagged["fraction_below"].max())
                     if len(flagged) else float("nan")})
    return pd.DataFrame(rows, columns=LOWER_BOUND_SUMMARY_COLUMNS)


def reconstruction_summary(report: pd.DataFrame) -> pd.DataFrame:
    """One row of reconstruction_report: the experiments, those with journeys
    (``has_journeys``), those of them with a batch agreement and the median agreement over
    them (NaN when none has one)."""
    with_j = report[artefacts.csv_bool(report["has_journeys"])] if "has_journeys" in report else report.iloc[:0]
    agreement = (with_j["agreement"].dropna().astype(float) if "agreement" in with_j
                 else pd.Series([], dtype=float))
    return pd.DataFrame([{"experiments": len(report), "with_journeys": len(with_j),
                          "with_agreement": len(agreement),
                          "median_agreement": float(agreement.median())
                          if len(agreement) else float("nan")}],
                        columns=RECONSTRUCTION_SUMMARY_COLUMNS)


def decompose_summaries(tables: dict[str, pd.DataFrame],
                        targets: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """The summaries of notebook 02's tables (``tables``: name -> table, as
    run.pipeline.decompose_dataset computed them), by table name."""
    return {
        names.TARGET_SUMMARY: target_summary(tables[names.TARGET_MEDIANS],
                                             tables[names.LOWER_BOUND], targets),
        names.ENGINE_LOOP_SUMMARY: engine_loop_summary(tables[names.TARGET_COVERAGE]),
        names.SEED_R_SUMMARY: seed_r_summary(tables[names.PER_EXPERIMENT]),
        names.PHYSICAL_PER_EXPERIMENT_SUMMARY:
            physical_per_experiment_summary(tables[names.PHYSICAL_PER_EXPERIMENT]),
        names.LOWER_BOUND_SUMMARY: lower_bound_summary(tables[names.LOWER_BOUND]),
        names.RECONSTRUCTION_SUMMARY: reconstruction_summary(tables[names.RECONSTRUCTION])}
