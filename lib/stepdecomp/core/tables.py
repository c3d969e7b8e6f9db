"""The contract tables FINDINGS is made from: their names, who writes each, and the values of
their columns the report selects rows by.

Every number in FINDINGS comes from a table under ``OUT/tables/`` that a notebook (or a
``make`` command outside ``make report``) wrote; the report reads them and nothing else
(docs/design.md names every table). A reader that misses one says which table and who writes
it (:func:`missing_message`).
"""

from __future__ import annotations

import re

import pandas as pd

from . import columns

# --------------------------------------------------------------------------- 01_load
#: One row: the data root as shown (paths.display_path) and its kind (paths.data_kind).
DATASET = "dataset"
#: One row per experiment analysed: how it was resolved (slug, HF id, TP, workload) and what
#: it holds (steps, journey events).
EXPERIMENTS = "experiments"
#: The directories under the data root that were not analysed, with why.
SKIPPED_DIRECTORIES = "skipped_directories"
#: Per trace file: the line and event counts of load.ParseStats.
PARSE_REPORT = "parse_report"
#: One row: parse_report's counts over every file (traces.load.parse_totals).
PARSE_TOTALS = "parse_totals"
#: What the loader skipped and why, per file and reason.
SKIPPED_RECORDS = "skipped_records"

# --------------------------------------------------------------------------- 02_decompose
PER_EXPERIMENT = "per_experiment_correlations"
RECONSTRUCTION = "reconstruction_report"
TARGET_COVERAGE = "target_coverage"
TARGET_MEDIANS = "target_medians"
LOWER_BOUND = "lower_bound_check"
WHAT_EXPLAINS = "what_explains_targets"
PHYSICAL_PER_EXPERIMENT = "physical_per_experiment_correlations"
COMPONENT_ATTRIBUTION = "component_attribution"
FIT_SUMMARY = "fit_summary"
GROUP_ATTRIBUTION = "group_attribution"
#: What FINDINGS quotes of the tables above, over experiments (stats.summary): per target the
#: median of the medians and of the fraction below the bound; the engine loops with their
#: experiments and steps; the seed total's median r and mean r per workload; per target the
#: medians of the seed's and the physical r, of Δr and of the rank gap.
TARGET_SUMMARY = "target_summary"
ENGINE_LOOP_SUMMARY = "engine_loop_summary"
SEED_R_SUMMARY = "seed_r_summary"
PHYSICAL_PER_EXPERIMENT_SUMMARY = "physical_per_experiment_summary"
#: Per target, lower_bound_check over experiments: the experiments, their steps and steps
#: below the bound, the flagged experiments and their largest fraction below.
LOWER_BOUND_SUMMARY = "lower_bound_summary"
#: reconstruction_report over experiments: with journeys, with an agreement, its median.
RECONSTRUCTION_SUMMARY = "reconstruction_summary"

# --------------------------------------------------------------------------- 03_phases
PHASE_BREAKDOWN = "phase_breakdown"

# --------------------------------------------------------------------------- 04_correlation
PURE_PHASE = "pure_phase_correlations"
PHYSICAL_PURE = "physical_pure_phase_correlations"
ATTRIBUTION_BY_MODEL = "attribution_by_model"
WITHIN_EXPERIMENT = "within_experiment_verdict"
#: The verdicts (core.verdicts): the seed's and the physical ones pooled over experiments,
#: and the within-experiment ones, each of every target and prefill subset.
VERDICTS_POOLED = "verdicts_pooled"
VERDICTS_WITHIN = "verdicts_within"
#: The component attribution over experiments, per target (stats.attribution
#: .attribution_summary) and per target and term (.attribution_term_summary).
ATTRIBUTION_SUMMARY = "attribution_summary"
ATTRIBUTION_TERM_SUMMARY = "attribution_term_summary"
#: Per target and experiment with a fit: the sum of its valid LMG shares, its R² and whether
#: they agree (stats.attribution.share_sums).
ATTRIBUTION_SHARE_SUMS = "attribution_share_sums"
#: Per target and model of attribution_by_model: its experiments
#: (stats.attribution.by_model_experiments).
ATTRIBUTION_MODEL_EXPERIMENTS = "attribution_by_model_experiments"
#: The grouped attribution over experiments, per target and group
#: (stats.attribution.group_summary) and per target and pair of groups (.group_pair_summary).
GROUP_SUMMARY = "group_attribution_summary"
GROUP_PAIR_SUMMARY = "group_attribution_pairs"
INCREMENT = "what_explains_increment"
#: Which regressor set the data credits, per target (stats.explain.credit_table).
CREDIT = "what_explains_credit"
TRUTH_CHECK = "target_truth_check"
#: The truth check per target over experiments (targets.truthcheck.truth_summary).
TRUTH_SUMMARY = "target_truth_summary"
MOE_CHECK = "moe_gemm_check"
MOE_DELTA = "moe_delta_r"
#: Per MoE model and target: from which token count the GEMM estimate before was flat, how
#: much each estimate grows from there, the median Δr over its experiments
#: (stats.moecheck.moe_summary).
MOE_SUMMARY = "moe_check_summary"
CLIENT_SUMMARY = "client_summary"
CLIENT_PLAUSIBILITY = "client_plausibility"
#: Published runs below the weight-streaming floor of each hardware candidate
#: (targets.clientmetrics.floor_candidates).
CLIENT_FLOORS = "client_floor_candidates"
PERIOD_VS_CLIENT = "period_vs_client"
#: The Answer's headline statistics on this run (run.sensitivity.headline_table).
HEADLINES = "headlines"
#: Only on the bundled replay: the seed study's published numbers beside this data's
#: (run.validate.seed_comparison) and the replay's client metrics beside the published ones
#: (run.validate.client_comparison).
PUBLISHED_COMPARISON = "published_comparison"
CLIENT_COMPARISON = "client_comparison"
#: One row: the runs the replay was fitted on and held out, and the median |error| of its
#: TPOT and TTFT on the fitted ones (run.validate.client_comparison_summary).
CLIENT_COMPARISON_SUMMARY = "client_comparison_summary"

# --------------------------------------------------------------------------- 07_model
STEPMODEL_COEFFICIENTS = "stepmodel_coefficients"
STEPMODEL_HELD_OUT = "stepmodel_held_out_errors"
STEPMODEL_FOLD_BETAS = "stepmodel_fold_betas"
STEPMODEL_BASIS_VS_PHYSICAL = "stepmodel_basis_vs_physical"
STEPMODEL_DATA = "stepmodel_data"
#: One row: how the coefficients were fitted (weighting, the collinearity limits, the
#: interval's confidence) and what the export does with BLIS's α's.
STEPMODEL_METHOD = "stepmodel_method"
#: Per held-out scheme: the predictor with the lowest pooled median APE and the runner-up.
STEPMODEL_WINNERS = "stepmodel_winners"
#: Per model and component of stepmodel_basis_vs_physical with a ratio, how far Σ BLIS /
#: Σ physical is from 1 either way (max(r, 1/r)); then per component the largest over the
#: models, under the model ALL_MODELS (run.stepmodel_tables.basis_agreement).
STEPMODEL_BASIS_AGREEMENT = "stepmodel_basis_agreement"
#: Per model of stepmodel_coefficients: its β's and how many are identified
#: (run.stepmodel_tables.identified_per_model).
STEPMODEL_IDENTIFIED = "stepmodel_identified_per_model"
#: The figure of notebook 07 (FIGURES/<name>.png): held-out predicted vs measured per model.
STEPMODEL_FIGURE = "stepmodel_predicted_vs_measured"

# --------------------------------------------------------------------------- outside make report
SENSITIVITY = "sensitivity"
STEPMODEL_CLIENT_CHECK = "stepmodel_client_check"
#: Per predictor: the median client-level errors of make stepmodel-check and whether both
#: meet its bar (run.stepmodel_client.summary).
STEPMODEL_CLIENT_SUMMARY = "stepmodel_client_summary"

#: Who writes each table: a notebook (its stem) or a make command.
WRITTEN_BY: dict[str, str] = {
    **dict.fromkeys([DATASET, EXPERIMENTS, SKIPPED_DIRECTORIES, PARSE_REPORT, PARSE_TOTALS,
                     SKIPPED_RECORDS], "01_load"),
    **dict.fromkeys([PER_EXPERIMENT, RECONSTRUCTION, TARGET_COVERAGE, TARGET_MEDIANS,
                     LOWER_BOUND, WHAT_EXPLAINS, PHYSICAL_PER_EXPERIMENT, COMPONENT_ATTRIBUTION,
                     FIT_SUMMARY, GROUP_ATTRIBUTION, TARGET_SUMMARY, ENGINE_LOOP_SUMMARY,
                     SEED_R_SUMMARY, PHYSICAL_PER_EXPERIMENT_SUMMARY, LOWER_BOUND_SUMMARY,
                     RECONSTRUCTION_SUMMARY], "02_decompose"),
    PHASE_BREAKDOWN: "03_phases",
    **dict.fromkeys([PURE_PHASE, PHYSICAL_PURE, ATTRIBUTION_BY_MODEL, WITHIN_EXPERIMENT,
                     VERDICTS_POOLED, VERDICTS_WITHIN, ATTRIBUTION_SUMMARY,
                     ATTRIBUTION_TERM_SUMMARY, ATTRIBUTION_SHARE_SUMS,
                     ATTRIBUTION_MODEL_EXPERIMENTS, GROUP_SUMMARY, GROUP_PAIR_SUMMARY, INCREMENT,
                     CREDIT, TRUTH_CHECK, TRUTH_SUMMARY, MOE_CHECK, MOE_DELTA, MOE_SUMMARY,
                     CLIENT_SUMMARY, CLIENT_PLAUSIBILITY, CLIENT_FLOORS, PERIOD_VS_CLIENT,
                     HEADLINES, PUBLISHED_COMPARISON, CLIENT_COMPARISON, CLIENT_COMPARISON_SUMMARY],
                    "04_correlation"),
    **dict.fromkeys([STEPMODEL_COEFFICIENTS, STEPMODEL_HELD_OUT, STEPMODEL_FOLD_BETAS,
                     STEPMODEL_BASIS_VS_PHYSICAL, STEPMODEL_DATA, STEPMODEL_METHOD,
                     STEPMODEL_WINNERS, STEPMODEL_BASIS_AGREEMENT, STEPMODEL_IDENTIFIED],
                    "07_model"),
    SENSITIVITY: "make sensitivity",
    **dict.fromkeys([STEPMODEL_CLIENT_CHECK, STEPMODEL_CLIENT_SUMMARY], "make stepmodel-check"),
}


def writer(name: str) -> str:
    """Who writes table ``name``: "notebook 04_correlation", "make sensitivity"; a KeyError for
    a table no one writes."""
    if name not in WRITTEN_BY:
        raise KeyError(f"no notebook or command writes a table named {name!r}")
    who = WRITTEN_BY[name]
    return who if who.startswith("make ") else f"notebook {who}"


def missing_message(shown_path: str, name: str) -> str:
    """Why table ``name`` (at ``shown_path``) is missing and what writes it."""
    who = writer(name)
    how = f"run `{who}`" if who.startswith("make ") else f"run {who} first (or `make report`)"
    return f"{shown_path} is missing: table {name} is written by {who}; {how}, with the same out_dir"


# --------------------------------------------------------------------------- column values

#: The step-time target the physical section of FINDINGS (its verdict, fits and differences)
#: reads: the forward pass, what the batch physics predicts.
PRIMARY_TARGET = columns.FORWARD
#: client_summary / client_plausibility ``source``: the study's published summaries, or the
#: analysed root's own.
SOURCE_PUBLISHED = "published"
SOURCE_TRACES = "traces"
#: what_explains ``regressors``: the incremental R² of one set beyond the other.
SET_SCHEDULER_BEYOND = "scheduler_work beyond flops"
SET_FLOPS_BEYOND = "flops beyond scheduler_work"
#: stepmodel_held_out_errors ``held_out`` of the rows pooled over every fold.
ALL_GROUPS = "all"
#: seed_r_summary ``workload`` and engine_loop_summary ``engine_loop`` / ``engine_loop_source``
#: of the row over every experiment.
ALL_EXPERIMENTS = "all"
#: engine_loop_summary ``engine_loop`` / ``engine_loop_source`` of experiments without a loop
#: (no steps); not "N/A", which a CSV reader takes for a missing value.
NO_LOOP = "no loop"
#: stepmodel_coefficients ``scope`` of the one vector for every model on the hardware.
ALL_MODELS = "all models"
#: The predictors of stepmodel_held_out_errors and their labels.
PREDICTOR_LABELS = {"fitted": "(a) BLIS basis, fitted β", "blis_shipped": "(b) BLIS basis, shipped β",
                    "physical": "(c) physical mode roofline (uncalibrated)",
                    "hgb": "(d) gradient boosting on the basis"}
#: stepmodel_client_check ``predictor``: the vector fitted without the run's model, BLIS's own.
CLIENT_CHECK_FITTED = "fitted (model held out)"
CLIENT_CHECK_SHIPPED = "BLIS shipped"

#: The grouped regressors of group_attribution, named by what step time scales with (name ->
#: unit of one unit of the regressor): per token (scheduled tokens), per KV byte, per weight
#: byte; the per-step constant is the intercept (stats.attribution.group_regressors).
GROUPS = {"per_token": "token", "per_kv_byte": "kv_byte", "per_weight_byte": "weight_byte"}
#: group_attribution ``reason_<group>`` of a regressor that does not vary over the experiment.
REASON_ABSORBED = "constant: not separable from the per-step constant"


def group_pairs() -> list[tuple[str, str]]:
    """The pairs of GROUPS in their order: (per_token, per_kv_byte), ..."""
    g = list(GROUPS)
    return [(a, b) for i, a in enumerate(g) for b in g[i + 1:]]


def pair_r_column(a: str, b: str) -> str:
    return f"r_{a}__{b}"


def pair_separable_column(a: str, b: str) -> str:
    return f"separable_{a}__{b}"


def coef_column(group: str) -> str:
    """coef_us_per_token, coef_us_per_kv_byte, ...: µs per unit of the group's regressor."""
    return f"coef_us_{group}"


# --------------------------------------------------------------------------- reading

def for_target(table: pd.DataFrame, target: str = PRIMARY_TARGET) -> pd.DataFrame:
    """The rows of one target, without the ``target`` column (the shape the physical
    section's functions read). Tables without the column are returned unchanged."""
    if "target" not in table:
        return table
    return table[table["target"] == target].drop(columns="target").reset_index(drop=True)


#: An experiment directory's ``<YYYYMMDD>-<HHMMSS>-`` or ``<id>-`` prefix. Digits are ASCII
#: only ([0-9]: \d would take other scripts' digits too).
EXPERIMENT_PREFIX = re.compile(r"^(?:[0-9]{8}-[0-9]{6}-|[0-9]+-)")


def short_name(experiment_id: str) -> str:
    """The directory name without its ``<YYYYMMDD>-<HHMMSS>-`` or ``<id>-`` prefix, for
    labels: ``20260217-203421-llama-2-70b-hf-tp4-codegen`` -> ``llama-2-70b-hf-tp4-codegen``."""
    return EXPERIMENT_PREFIX.sub("", str(experiment_id), count=1)
