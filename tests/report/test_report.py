"""FINDINGS.md rendering (the report package and its templates): section snapshots, thresholds.

The SNAPSHOT_* strings were captured from the report before its prose moved into Jinja
templates; the refactor had to reproduce them byte for byte, and any later change of wording
shows up here as a diff to review."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stepdecomp.stats import explain as ex
from stepdecomp import report
from stepdecomp.stats import correlation as stats
from stepdecomp.stats import summary
from stepdecomp.core.artefacts import RunDirs
from stepdecomp.core.paths import data_kind
from stepdecomp.report.render import ABSENT_PREFILL_PCT, R_AGREE
from stepdecomp.hw.specs import GpuSpec, ModelSpec
from stepdecomp.run import validate
from stepdecomp.targets import clientmetrics
from stepdecomp.traces.load import parse_totals
from report_tables import (findings_markdown, measurement_context, physical_section,
                           through_csv, write_notebook04)

TEMPLATES = report.TEMPLATE_DIR


# --------------------------------------------------------------------------- hand-made inputs

def _report_tables() -> report.PhysicalTables:
    """Physical-mode tables of two experiments: pure-phase (pooled), per-experiment,
    lower bound, reconstruction, component attribution with its fit summary, and the
    within-experiment verdict. Unidentified coefficients are 0, 69.8, 100 and 106."""
    pure = pd.DataFrame([
        ("pure_prefill", "phys_prefill_gemm_us", np.nan, np.nan, np.nan, np.nan, np.nan, 3, 3),
        ("pure_prefill", "phys_prefill_attn_us", np.nan, np.nan, np.nan, np.nan, np.nan, 3, 3),
        ("prefill_dominated", "phys_prefill_gemm_us", 0.9123, 0.881, 0.934, 0.9001, 0.8899, 1234, 1234),
        ("prefill_dominated", "phys_prefill_attn_us", 0.4567, 0.401, 0.502, 0.4, 0.41, 1234, 1234),
        ("pure_decode", "phys_decode_gemm_us", 0.1111, 0.1, 0.12, 0.13, 0.14, 56789, 56789),
        ("pure_decode", "phys_decode_attn_us", 0.8765, 0.812, 0.901, 0.85, 0.86, 56789, 56789),
        ("all", "phys_total_us", 0.9555, 0.95, 0.96, 0.94, 0.93, 60000, 60000)],
        columns=["subset", "component", "pearson_r", "ci_low", "ci_high", "spearman_r",
                 "loglog_r", "n_steps", "n_loglog"])
    per = pd.DataFrame({
        "experiment_id": ["e1", "e2"], "model": ["alpha-7b", "beta-moe"],
        "workload": ["general", "roleplay"], "journey_coverage": [1.0, 0.0],
        "seed_pearson_r": [0.7001, 0.9302], "seed_ci_low": [0.69, 0.92], "seed_ci_high": [0.71, 0.94],
        "seed_spearman_r": [0.6, 0.9], "seed_loglog_r": [0.65, 0.91], "seed_n_steps": [5000, 4000],
        "phys_pearson_r": [0.9502, np.nan], "phys_ci_low": [0.945, np.nan],
        "phys_ci_high": [0.955, np.nan], "phys_spearman_r": [0.93, np.nan],
        "phys_loglog_r": [0.94, np.nan], "phys_n_steps": [5000, 7]})
    per["delta_r"] = per["phys_pearson_r"] - per["seed_pearson_r"]
    per = per.assign(delta_ci_low=[0.24, np.nan], delta_ci_high=[0.26, np.nan],
                     phys_n_loglog=[4990, 7], block_length=[12.5, np.nan],
                     ci_method="stationary_block_bca")
    lb = pd.DataFrame({"experiment_id": ["e1", "e2"], "model": ["alpha-7b", "beta-moe"],
                       "workload": ["general", "roleplay"], "n_steps": [5000, 4000],
                       "n_below": [0, 1000], "fraction_below": [0.0, 0.25],
                       "lower_bound_us": [3866.2, 13862.8], "median_ratio": [2.5, 1.1],
                       "flagged": [False, True]})
    rec = pd.DataFrame({"experiment_id": ["e1", "e2"], "has_journeys": [True, False],
                        "agreement": [0.987, np.nan]})
    pure["ci_method"] = "cluster_bca"
    return report.PhysicalTables(pure=pure, per_experiment=per, lower_bound=lb,
                                 reconstruction=rec, attribution=_attribution(),
                                 fit_summary=_fit_summary(), within=_within(),
                                 attribution_by_model=_by_model(),
                                 moe_check=_moe_check(), moe_delta=_moe_delta())


TERMS = ["phys_gemm_us", "phys_prefill_attn_us", "phys_decode_attn_us", "phys_allreduce_us",
         "phys_lm_head_us"]


def _attribution() -> pd.DataFrame:
    """component_attribution of e1 (R² 0.9) and e2 (R² 0.6): shares sum to R²; e1's prefill
    attention (0) and all-reduce (69.8), e2's all-reduce (100) and LM head (106) are not
    identified."""
    rows = []
    for e, m, w, terms in [
        ("e1", "alpha-7b", "general", [(1.2, True, 0.5), (0.0, False, 0.02), (1.44, True, 0.3),
                                       (69.8, False, 0.05), (1.0, True, 0.03)]),
        ("e2", "beta-moe", "roleplay", [(0.9, True, 0.1), (2.0, True, 0.05), (1.8, True, 0.4),
                                        (100.0, False, 0.03), (106.0, False, 0.02)])]:
        for term, (coef, ident, share) in zip(TERMS, terms):
            rows.append({"experiment_id": e, "model": m, "workload": w, "term": term,
                         "coef": coef, "coef_ci_low": coef * 0.9, "coef_ci_high": coef * 1.1,
                         "identified": ident, "lmg_share_r2": share,
                         "lmg_ci_low": share * 0.8, "lmg_ci_high": share * 1.2})
    return pd.DataFrame(rows)


def _by_model() -> pd.DataFrame:
    """attribution_by_model of _attribution(): one experiment per model, so the medians are
    the experiment's numbers and an unidentified coefficient has no median."""
    a = _attribution()
    keys = {"e1": "org/alpha-7b", "e2": "org/beta-moe"}
    return pd.DataFrame({"model_key": a["experiment_id"].map(keys), "term": a["term"],
                         "n_experiments": 1, "n_identified": a["identified"].astype(int),
                         "median_coef": a["coef"].where(a["identified"]),
                         "median_lmg_share_r2": a["lmg_share_r2"]})


def _fit_summary() -> pd.DataFrame:
    return pd.DataFrame({"experiment_id": ["e1", "e2"], "model": ["alpha-7b", "beta-moe"],
                         "workload": ["general", "roleplay"], "n_steps": [5000, 4000],
                         "r2": [0.9, 0.6], "r2_ci_low": [0.85, 0.5], "r2_ci_high": [0.93, 0.7],
                         "intercept_us": [1500.0, 9000.0], "intercept_ci_low": [1200.0, 7000.0],
                         "intercept_ci_high": [1800.0, 11000.0], "block_length": [12.5, 30.0],
                         "ci_method": "stationary_block_bca"})


def _moe_check() -> pd.DataFrame:
    """moe_gemm_check of org/beta-moe at TP 2: the GEMM before flat from 16 tokens (×1.02 to
    1,024), now growing ×4.33 over the same tokens."""
    return pd.DataFrame({"hf_id": "org/beta-moe", "tp": 2, "tokens": [1, 16, 64, 256, 1024],
                         "gemm_old_us": [400.0, 1390.0, 1400.0, 1400.0, 1417.8],
                         "gemm_new_us": [350.0, 600.0, 900.0, 1500.0, 2600.0],
                         "lower_bound_us": 300.0})


def _moe_delta() -> pd.DataFrame:
    """moe_delta_r of one target: e2's physical r with the GEMM before and now."""
    return pd.DataFrame({"experiment_id": ["e2"], "hf_id": ["org/beta-moe"], "n_steps": [7],
                         "r_old": [0.36], "r_new": [0.81], "delta_r": [0.45]})


def _within() -> pd.DataFrame:
    """within_experiment_verdict of one target: no experiment has a pure-prefill r; decode
    GEMM has an r in 1 of the 2 experiments (constant in the other)."""
    return pd.DataFrame([
        ("pure_prefill", "phys_prefill_gemm_us", np.nan, np.nan, np.nan, 0, False),
        ("pure_prefill", "phys_prefill_attn_us", np.nan, np.nan, np.nan, 0, False),
        ("prefill_dominated", "phys_prefill_gemm_us", 0.85, 0.8, 0.9, 2, True),
        ("prefill_dominated", "phys_prefill_attn_us", 0.5, 0.3, 0.7, 2, False),
        ("pure_decode", "phys_decode_gemm_us", 0.4, 0.1, 0.7, 1, False),
        ("pure_decode", "phys_decode_attn_us", 0.9, 0.85, 0.95, 2, True)],
        columns=["subset", "component", "median_r", "ci_low", "ci_high", "n_experiments",
                 "passed"]).assign(ci_method="cluster_percentile")


#: The per-experiment columns of the block and paired bootstraps (absent from older tables).
PAIRED_COLUMNS = ["delta_ci_low", "delta_ci_high", "phys_n_loglog", "block_length", "ci_method"]


def _minimal(t: report.PhysicalTables) -> report.PhysicalTables:
    """Only the two required tables, the per-experiment one without the paired Δr interval
    and the block length (a table of a percentile bootstrap over steps)."""
    return report.PhysicalTables(pure=t.pure.drop(columns="ci_method"),
                                 per_experiment=t.per_experiment.drop(columns=PAIRED_COLUMNS))


def _seed_pure() -> pd.DataFrame:
    """A seed pure-phase table (decode attention N/A: 1 of the 4 criteria passes)."""
    return pd.DataFrame([
        ("pure_prefill", "prefill_gemm_us", 0.85, 12), ("pure_prefill", "prefill_attn_us", 0.61, 12),
        ("pure_prefill", "total_analytical_us", 0.84, 12),
        ("pure_prefill", "batch.prefill_tokens (baseline)", 0.5, 12),
        ("pure_decode", "decode_gemm_us", 0.4367, 300), ("pure_decode", "decode_attn_us", np.nan, 300),
        ("pure_decode", "total_analytical_us", 0.4367, 300),
        ("pure_decode", "batch.decode_tokens (baseline)", 0.4202, 300),
        ("all", "total_analytical_us", 0.335, 400)],
        columns=["subset", "component", "pearson_r", "n_steps"])


def _findings_input(extra_sections: list[str] | None = None) -> report.FindingsInput:
    """Two experiments of two models, 400 steps, 12 of them pure prefill."""
    pure = _seed_pure()
    parse = pd.DataFrame({"experiment_id": ["e1", "e2"], "lines": [2101, 1500],
                          "blank_lines": [1, 0], "malformed_lines": [2, 0], "steps": [250, 150],
                          "journey_events": [1000, 0]})
    breakdown = pd.DataFrame({"phase": ["pure_prefill", "pure_decode", "mixed"],
                              "steps": [12, 300, 88], "pct": [3.0, 75.0, 22.0]})
    per = pd.DataFrame([(e, m, w, c, r, n) for e, m, w, rs, n in [
        ("e1", "alpha-7b", "general", (0.9, 0.91), 250),
        ("e2", "beta-moe", "roleplay", (0.3, 0.2), 150)]
        for c, r in zip(["prefill_gemm_us", "total_analytical_us"], rs)],
        columns=["experiment_id", "model", "workload", "component", "pearson_r", "n_steps"])
    specs = {"org/alpha-7b": ModelSpec(hf_id="org/alpha-7b", hidden_size=4096, num_layers=32,
                                       num_heads=32, num_kv_heads=32, head_dim=128,
                                       intermediate_size=11008, vocab_size=32000),
             "org/beta-moe": ModelSpec(hf_id="org/beta-moe", hidden_size=4096, num_layers=32,
                                       num_heads=32, num_kv_heads=8, head_dim=128,
                                       intermediate_size=14336, vocab_size=32000, num_experts=8,
                                       experts_per_token=2)}
    return report.FindingsInput(
        data_root="tests/fixtures/ground_truth", data_kind=data_kind("tests/fixtures/ground_truth"),
        experiments=["e1", "e2"],
        skipped=[("junk", "no traces.json")], parse_report=parse, breakdown=breakdown, pure=pure,
        per_experiment=per, verdict=stats.hypothesis_verdict(pure),
        gpu=GpuSpec(name="Test GPU", peak_bf16_dense_tflops=989.0, hbm_tb_per_s=3.35,
                    hbm_gib=80.0, nvlink_gb_per_s_per_direction=450.0),
        specs=specs, models_by_hf_id={"org/alpha-7b": ["alpha-7b"], "org/beta-moe": ["beta-moe"]},
        extra_sections=extra_sections or [],
        seed_r=through_csv(summary.seed_r_summary(per)),
        parse_totals=through_csv(parse_totals(parse)))


def _comparison(fi: report.FindingsInput, published: dict | None = None) -> pd.DataFrame:
    """The table published_comparison of ``fi``'s tables, as notebook 04 writes it on the
    bundled replay (run.validate.seed_comparison)."""
    return through_csv(validate.seed_comparison(fi.breakdown, fi.pure, fi.per_experiment,
                                                fi.verdict.passing, published or PUBLISHED))


PUBLISHED = {"total_steps": 1000, "phase_breakdown": {"pure_prefill": 6, "pure_decode": 800,
                                                     "mixed": 194},
             "pure_phase_r": {"pure_decode/decode_gemm_us": 0.4, "all/total_analytical_us": 0.3},
             "per_experiment_total_r": {"alpha-7b/general": 0.95, "beta-moe/roleplay": 0.1,
                                        "gamma/general": 0.5},
             "hypothesis_passing": 0}


# --------------------------------------------------------------------------- snapshots

#: Each section rendered from the hand-made inputs, as the pre-template report wrote it.
SNAPSHOTS = {
    "summary": """\
## Summary

The seed study's four-component analytical decomposition (prefill GEMM, prefill attention, decode GEMM, decode attention) was computed for 400 steps from 2 experiments and correlated with the observed step duration. 1/4 components reach r > 0.8 on their pure-phase subset (at least 2 needed) (1 of 4 criteria N/A): NOT SUPPORTED. Pure-prefill steps are 12 (3%) of all steps; pure decode steps are 300 (75%). Per experiment, r of the total analytical estimate ranges from 0.2000 (beta-moe, roleplay) to 0.9100 (alpha-7b, general).""",
    "setup": """\
## Experimental Setup

- **Data:** The traces analysed here are the repository's small test fixture (three synthetic experiments with hand-checkable values). They exercise the pipeline; they say nothing about real hardware.
- **Experiments:** 2 with traces; skipped directories: `junk` (no traces.json).
- **Steps:** 400 step.BATCH_SUMMARY events; 2 malformed, 1 blank and 0 non-OTLP trace line(s) skipped, 0 event(s) rejected (per file in the table below).
- **Method:** correlation of each analytical component with `step.duration_us` (structural validation, no fitting); r is N/A with fewer than 10 steps or zero variance.
- **Components (seed mode):** prefill and decode GEMM FLOPs (QKV, O, gated MLP with the seed's MoE factor num_experts_per_tok / num_local_experts), prefill attention with the step's prefill tokens as one causal sequence (average context P/2), decode attention set to 0, all sharded over TP.
- **Hardware:** Test GPU, peak 989 TFLOP/s dense BF16 (no MFU correction), 3.35 TB/s HBM.

| model (slugs) | HF config | layers | d | heads / KV heads | d_ff | experts (active) | seed MoE factor |
|---|---|---|---|---|---|---|---|
| alpha-7b | org/alpha-7b | 32 | 4096 | 32 / 32 | 11008 | 1 (1) | 1 |
| beta-moe | org/beta-moe | 32 | 4096 | 32 / 8 | 14336 | 8 (2) | 0.25 |

| experiment_id | lines | blank_lines | malformed_lines | steps | journey_events |
|---|---|---|---|---|---|
| e1 | 2,101 | 1 | 2 | 250 | 1,000 |
| e2 | 1,500 | 0 | 0 | 150 | 0 |""",
    "phase": """\
## Results

### Phase Breakdown

| Phase | Steps | % of Total |
|---|---|---|
| Pure prefill (decode_tokens = 0) | 12 | 3% |
| Pure decode (prefill_tokens = 0) | 300 | 75% |
| Mixed batch | 88 | 22% |

Pure-prefill steps are rare (3%): chunked prefill mixes prefill chunks into batches that already decode, so the pure-phase design sees few of them.""",
    "pure_phase": """\
### Correlation on Pure-Phase Subsets

| Subset | Component | Pearson r | n_steps |
|---|---|---|---|
| pure_prefill | prefill_gemm_us | 0.8500 | 12 |
| pure_prefill | prefill_attn_us | 0.6100 | 12 |
| pure_prefill | total_analytical_us | 0.8400 | 12 |
| pure_prefill | batch.prefill_tokens (baseline) | 0.5000 | 12 |
| pure_decode | decode_gemm_us | 0.4367 | 300 |
| pure_decode | decode_attn_us | N/A | 300 |
| pure_decode | total_analytical_us | 0.4367 | 300 |
| pure_decode | batch.decode_tokens (baseline) | 0.4202 | 300 |
| all | total_analytical_us | 0.3350 | 400 |

**Hypothesis verdict:** 1/4 components reach r > 0.8 on their pure-phase subset (at least 2 needed) (1 of 4 criteria N/A): NOT SUPPORTED.""",
    "per_experiment": """\
### Per-Experiment Correlations (total_analytical_us)

| Model | Workload | Pearson r | n_steps |
|---|---|---|---|
| alpha-7b | general | 0.9100 | 250 |
| beta-moe | roleplay | 0.2000 | 150 |""",
    "analysis": """\
## Analysis

1. **Pure-prefill steps exist in usable number here** (12); prefill GEMM reaches r = 0.8500 on them.
2. **Decode attention is N/A.** In seed mode it is identically 0 (no per-request context lengths), so it has no variance — on the 75% of steps that are pure decode, the component that grows with every request's KV length is missing.
3. **Decode GEMM reaches r = 0.4367 on pure-decode steps**, against r = 0.4202 for the raw decode-token count. Within one experiment decode GEMM FLOPs are a constant times the token count, so it can add nothing beyond the baseline except the scaling between models when experiments are pooled.
4. **Signal differs by workload.** Mean per-experiment r of the total estimate: general 0.910, roleplay 0.200. Seed mode cannot say why: the component that grows with context length (decode attention) is 0 in it; the physical mode tests whether it is what the weaker workloads miss.
5. **Pooling hides structure.** Over all steps r = 0.3350, while the median experiment reaches 0.555: the pooled fit mixes models whose fixed per-step costs differ.""",
    "verdict": """\
## Verdict

**The formal hypothesis is not supported** in seed mode: 1 of 4 criteria reach r > 0.8 (at least 2 needed) (1 of 4 criteria N/A). N/A for decode_attn_us on pure_decode (n=300); below the threshold for prefill_attn_us on pure_prefill (r=0.610), decode_gemm_us on pure_decode (r=0.437).

| Subset | Component | Pearson r | n_steps | r > 0.8 |
|---|---|---|---|---|
| pure_prefill | prefill_gemm_us | 0.8500 | 12 | yes |
| pure_prefill | prefill_attn_us | 0.6100 | 12 | no |
| pure_decode | decode_gemm_us | 0.4367 | 300 | no |
| pure_decode | decode_attn_us | N/A | 300 | no |""",
    "physical": """\
## Beyond the Seed: Physical Mode

The physical mode fixes the seed's known flaws: the MoE MLP counts num_experts_per_tok experts per token (the seed counted num_experts_per_tok / num_local_experts of one), and its expert GEMMs are priced from each expert's share of the tokens (see The MoE GEMM); prefill attention runs per chunk against the request's already computed context; decode attention reads each request's whole KV cache; every component's time is a roofline, max(FLOPs / peak, bytes / HBM bandwidth), so memory-bound decode is priced by the bytes it moves; the tensor-parallel all-reduce (a fixed latency per call plus the ring's bytes over NVLink) and the LM head are added; and an HBM lower bound flags durations too short to be GPU execution. `phys_total_us` is the sum of all six component times.

### Journey Coverage

1 of 2 experiments carry request-journey events, from which each step's decode contexts and prefill chunks are rebuilt. **Without journeys (1):** beta-moe, roleplay. There the physical decode attention is unavailable (NaN), so their decode steps have no physical total: they drop out of the physical correlations and the component fit, and prefill attention falls back to the batch-level estimate (all prefill tokens of a step as one chunk). The rebuilt batches match the recorded decode-request and prefill-token counts on a median 98.7% of sampled steps per experiment (lowest: 98.7%, alpha-7b, general). This is an internal consistency check — the journeys and the step summaries are records of the same run — not a validation of the rebuilt context lengths against an independent record.

### Physical Plausibility: the HBM Lower Bound

A step with tokens must at least stream its GPU's share of the transformer-layer weights from HBM once (`phys_lower_bound_us`).

| Model | Workload | Steps | Below bound | Fraction below | HBM lower bound (µs) | Median observed / bound |
|---|---|---|---|---|---|---|
| beta-moe | roleplay | 4,000 | 1,000 | 25% | 13,863 | 1.1 |
| alpha-7b | general | 5,000 | 0 | 0% | 3,866 | 2.5 |

**1 of 2 experiments have steps shorter than the HBM lower bound** (1,000 of 9,000 steps overall): beta-moe, roleplay (25% of 4,000 steps). Reading every layer weight once takes at least the bound, so such a step cannot be GPU execution time: for it `step.duration_us` measures something else (for example a CPU-side scheduling interval while the GPU runs asynchronously). With up to 25% of an experiment's steps below the bound, the duration of the flagged experiments cannot be read as GPU time, and no GPU cost model can explain it there.

### Re-tested Hypothesis: Physical Components

Pooled over experiments: Pearson r with a 95% interval, Spearman rank r and the Pearson r of log durations beside it, because durations span orders of magnitude and a few long steps can carry a Pearson r alone. Pearson r, its interval and Spearman r use the n_steps rows of the subset (the component and the step time known, the step time positive); the log-log r uses only those rows whose component is > 0 as well (n_steps (log-log)). The interval is a cluster bootstrap over experiments (whole experiments resampled, so the steps of one experiment are not counted as independent observations), BCa interval.

| Subset | Component | Pearson r | 95% CI | Spearman r | n_steps | log-log r | n_steps (log-log) |
|---|---|---|---|---|---|---|---|
| pure_prefill | phys_prefill_gemm_us | N/A | N/A | N/A | 3 | N/A | 3 |
| pure_prefill | phys_prefill_attn_us | N/A | N/A | N/A | 3 | N/A | 3 |
| prefill_dominated | phys_prefill_gemm_us | 0.9123 | [0.881, 0.934] | 0.9001 | 1,234 | 0.8899 | 1,234 |
| prefill_dominated | phys_prefill_attn_us | 0.4567 | [0.401, 0.502] | 0.4000 | 1,234 | 0.4100 | 1,234 |
| pure_decode | phys_decode_gemm_us | 0.1111 | [0.100, 0.120] | 0.1300 | 56,789 | 0.1400 | 56,789 |
| pure_decode | phys_decode_attn_us | 0.8765 | [0.812, 0.901] | 0.8500 | 56,789 | 0.8600 | 56,789 |
| all | phys_total_us | 0.9555 | [0.950, 0.960] | 0.9400 | 60,000 | 0.9300 | 60,000 |

**Physical verdict (pure-phase subsets, the seed's criterion):** 1 of 4 components reach r > 0.8 (at least 2 needed) (2 of 4 criteria N/A): **INDETERMINATE** — prefill GEMM on pure_prefill N/A, prefill attention on pure_prefill N/A, decode GEMM on pure_decode r = 0.111, decode attention on pure_decode r = 0.876 (passes).

**Alternative with prefill-dominated steps** (physical time ≥ 90% prefill; 1,234 usable steps against 3 pure-prefill ones): 2 of 4 reach r > 0.8: **SUPPORTED** — prefill GEMM on prefill_dominated r = 0.912 (passes), prefill attention on prefill_dominated r = 0.457, decode GEMM on pure_decode r = 0.111, decode attention on pure_decode r = 0.876 (passes).

Seed mode passes 1 of 4 criteria (NOT SUPPORTED); physical mode passes 1 (the same count).

### Within-Experiment Verdict

The seed's criterion pools the steps of every experiment. Here each component's r against `step.duration_us` is computed inside each experiment on the component's subset, and the median over the experiments that have one is its within-experiment r (n_experiments of 2: the experiments with at least 10 steps in the subset and a component that varies there); its 95% interval is a cluster bootstrap over experiments (whole experiments resampled, so the steps of one experiment are not counted as independent observations), percentile interval. The median is N/A when fewer than 3 experiments have an r; a row passes when its median r > 0.8, the seed's threshold.

| Subset | Component | Median r | 95% CI (cluster) | n_experiments | passes |
|---|---|---|---|---|---|
| pure_prefill | phys_prefill_gemm_us | N/A | N/A | 0 | no |
| pure_prefill | phys_prefill_attn_us | N/A | N/A | 0 | no |
| prefill_dominated | phys_prefill_gemm_us | 0.8500 | [0.800, 0.900] | 2 | yes |
| prefill_dominated | phys_prefill_attn_us | 0.5000 | [0.300, 0.700] | 2 | no |
| pure_decode | phys_decode_gemm_us | 0.4000 | [0.100, 0.700] | 1 | no |
| pure_decode | phys_decode_attn_us | 0.9000 | [0.850, 0.950] | 2 | yes |

**Within-experiment verdict (pure-phase subsets):** 1 of 4 components reach it (at least 2 needed) (2 of 4 criteria N/A): **INDETERMINATE** — prefill GEMM on pure_prefill N/A, prefill attention on pure_prefill N/A, decode GEMM on pure_decode r = 0.400 over 1 experiment, decode attention on pure_decode r = 0.900 over 2 experiments (passes).

**With prefill-dominated steps:** 2 of 4: **SUPPORTED** — prefill GEMM on prefill_dominated r = 0.850 over 2 experiments (passes), prefill attention on prefill_dominated r = 0.500 over 2 experiments, decode GEMM on pure_decode r = 0.400 over 1 experiment, decode attention on pure_decode r = 0.900 over 2 experiments (passes).

**Why the pooled and the within-experiment verdicts differ.** A pooled r mixes two things: how a component follows the step time inside an experiment, and how the experiments' levels differ (models, tensor parallelism, workloads). A component that is constant within each experiment — decode GEMM on the pure-decode steps of a dense model, whose time is the read of the weights once per step — has no r inside an experiment, so its pooled r measures only the differences between models, and a pooled verdict built on it is ill-posed. Here decode GEMM on pure_decode has an r in only 1 of 2 experiments (pooled r = 0.111): the others hold it constant or have fewer than 10 of its steps. On the criteria both can judge, the two verdicts agree here. The report's conclusion follows the within-experiment verdict.

### Seed vs Physical, per Experiment

Per experiment, the seed total (`total_analytical_us`) and the physical total (`phys_total_us`) against the step time. The physical r, its interval and its Spearman r use the n_steps (physical) steps where the physical total and the step time are known; the log-log r only those where the physical total is positive as well (n_steps (log-log)). The seed's r uses the steps where the seed total is known, n_steps (seed); it has more where the physical total is unknown on some steps (decode steps of experiments without journeys). The physical r's interval is a stationary block bootstrap over the experiment's steps (blocks of consecutive steps resampled, the mean block length chosen per experiment by the Politis–White rule, because consecutive steps are correlated), BCa interval. Δr = physical r − seed r, with a paired bootstrap interval: both r on the same resamples.

| Model | Workload | Seed r | Physical r | Physical 95% CI | Δr | Δr 95% CI (paired) | Seed Spearman | Physical Spearman | n_steps (physical) | n_steps (seed) | Physical log-log r | n_steps (log-log) | block length (steps) |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| beta-moe | roleplay | 0.9302 | N/A | N/A | N/A | N/A | 0.9000 | N/A | 7 | 4,000 | N/A | 7 | N/A |
| alpha-7b | general | 0.7001 | 0.9502 | [0.945, 0.955] | +0.250 | [0.240, 0.260] | 0.6000 | 0.9300 | 5,000 | 5,000 | 0.9400 | 4,990 | 12.5 |

Where both are computable (1 of 2 experiments) the physical total correlates better than the seed total in 1 by Pearson r and in 1 of 1 by Spearman r. The paired 95% interval of Δr lies above zero in 1 and below zero in 0; in the others it includes zero. Median r: seed 0.700, physical 0.950. The largest gain is alpha-7b, general (0.700 → 0.950). Experiments above r = 0.8: 1 in seed mode, 1 in physical mode by Pearson r; 1 and 1 by Spearman r. Physical r is N/A for 1 experiment(s): beta-moe, roleplay (7 usable steps).

### Component Attribution per Experiment

`step.duration_us` ≈ intercept + Σ coef · component time, fitted per experiment on GEMM, prefill attention, decode attention, all-reduce, LM head (the GEMM as one term: its prefill and decode parts split one roofline by token count and cannot be told apart). A term's share is its LMG (Shapley) share of R²: the R² it adds, averaged over every order in which the terms can enter the fit. Shares are non-negative and sum to R²; each is a part of the variance of `step.duration_us`. 95% intervals: a stationary block bootstrap over the experiment's steps (blocks of consecutive steps resampled, the mean block length chosen per experiment by the Politis–White rule, because consecutive steps are correlated), BCa interval.

| Model | Workload | n_steps | R² [95% CI] | Intercept (µs) [95% CI] | share GEMM | share prefill attention | share decode attention | share all-reduce | share LM head |
|---|---|---|---|---|---|---|---|---|---|
| alpha-7b | general | 5,000 | 0.9 [0.85, 0.93] | 1,500 [1,200, 1,800] | 50.0% [40.0%, 60.0%] | 2.0% [1.6%, 2.4%] | 30.0% [24.0%, 36.0%] | 5.0% [4.0%, 6.0%] | 3.0% [2.4%, 3.6%] |
| beta-moe | roleplay | 4,000 | 0.6 [0.5, 0.7] | 9,000 [7,000, 11,000] | 10.0% [8.0%, 12.0%] | 5.0% [4.0%, 6.0%] | 40.0% [32.0%, 48.0%] | 3.0% [2.4%, 3.6%] | 2.0% [1.6%, 2.4%] |

A coefficient is observed µs per estimated µs (a coefficient of one: the roofline time is the time). Where the fit cannot identify it — its term moves with the others inside the experiment, or the coefficient sits at its bound — it is shown as "not identified" and left out of every median and count below. A share needs no identified coefficient: the variance that collinear terms explain together is split between them over the orders in which they enter, so a term can hold a large share while its coefficient is not identified.

| Model | Workload | coef GEMM | coef prefill attention | coef decode attention | coef all-reduce | coef LM head |
|---|---|---|---|---|---|---|
| alpha-7b | general | 1.2 [1.08, 1.32] | not identified | 1.44 [1.3, 1.58] | not identified | 1 [0.9, 1.1] |
| beta-moe | roleplay | 0.9 [0.81, 0.99] | 2 [1.8, 2.2] | 1.8 [1.62, 1.98] | not identified | not identified |

Over 2 experiments the fit reaches a median R² of 0.75 (range 0.6–0.9). The term with the largest share: GEMM in 1 experiment(s), decode attention in 1 experiment(s). Median share of the variance: GEMM 30.0%, prefill attention 3.5%, decode attention 35.0%, all-reduce 4.0%, LM head 2.5%. The intercept (first table, with its interval) is the fitted time at zero estimated component time. Median coefficients over the experiments that identify them: GEMM 1.05 (identified in 2 of 2), prefill attention 2 (identified in 1 of 2), decode attention 1.62 (identified in 2 of 2), LM head 1 (identified in 1 of 2). Never identified: all-reduce. 4 coefficient(s) in 2 experiment(s) are not identified.

Per model — the slugs of one HF model counted as one model — the median share over its experiments, and the median coefficient over the experiments that identify it (identified in how many of them):

| Model | experiments | median share GEMM | median share prefill attention | median share decode attention | median share all-reduce | median share LM head |
|---|---|---|---|---|---|---|
| alpha-7b | 1 | 50.0% | 2.0% | 30.0% | 5.0% | 3.0% |
| beta-moe | 1 | 10.0% | 5.0% | 40.0% | 3.0% | 2.0% |

| Model | median coef GEMM | median coef prefill attention | median coef decode attention | median coef all-reduce | median coef LM head |
|---|---|---|---|---|---|
| alpha-7b | 1.2 (1 of 1) | not identified (0 of 1) | 1.44 (1 of 1) | not identified (0 of 1) | 1 (1 of 1) |
| beta-moe | 0.9 (1 of 1) | 2 (1 of 1) | 1.8 (1 of 1) | not identified (0 of 1) | not identified (0 of 1) |

### The MoE GEMM

The physical mode priced an MoE layer's expert GEMMs by one roofline over the expected number of distinct experts a batch touches. With k of E experts per token that number reaches E within a few tokens, so the estimate stopped growing with the batch. It now prices each expert's share of the tokens (tokens · k / E per expert) from measured MoE kernel tables where they cover the shape, and from an efficiency curve fitted to them elsewhere. The GEMM estimate per MoE model, before and now (µs per step):

| tokens (beta-moe, TP 2) | GEMM before (µs) | GEMM now (µs) | HBM lower bound (µs) |
|---|---|---|---|
| 1 | 400 | 350 | 300 |
| 16 | 1,390 | 600 | 300 |
| 64 | 1,400 | 900 | 300 |
| 256 | 1,400 | 1,500 | 300 |
| 1,024 | 1,418 | 2,600 | 300 |

**beta-moe:** from 16 to 1,024 tokens the estimate before was flat (×1.02); over the same tokens the one now grows ×4.33. The physical total's r against `step.duration_us` with the GEMM before → now, and its Δr against the seed now: beta-moe, roleplay (r 0.360 → 0.810, Δr vs seed N/A). *Inference:* a GEMM estimate that stays flat while batches grow cannot follow a step time that grows with them; that flat estimate is the cause of this model's lower physical r before, and the per-expert cost is what raises it now.

### What Differs and Why

1. **Decode attention now exists.** Seed mode sets it to 0 (r N/A); with each request's context rebuilt from the journeys it reaches r = 0.876 on pure-decode steps, a strong signal on its own. Within experiments its median r is 0.900 over 2 experiment(s) (Within-Experiment Verdict).
2. **Decode is priced as memory-bound.** The physical decode GEMM time is the larger of its FLOP time and the time to read the weights, which for small decode batches is the weight read: a floor that depends on the model and tp, not on the number of decode tokens. On pure-decode steps it reaches r = 0.111 (seed: 0.437), tracking the duration less well than the seed's FLOP count; pooled over experiments such a floor mostly separates models, and within one experiment it barely varies: it has a within-experiment r in 1 of 2 experiments, median 0.400 (Within-Experiment Verdict).
3. **Prefill-dominated steps widen the prefill test** from 3 pure-prefill steps to 1,234; the criterion passes 1 of 4 on pure phases and 2 of 4 with the wider prefill subset.
4. **Per experiment, the physical total changes r by a median +0.250.** *Inference:* the physical model adds structure the seed lacked (attention over real contexts, the memory-bound floor, the per-expert MoE cost).
5. **1 experiment(s) fail the plausibility check** (at least 1% of steps below the HBM lower bound: beta-moe, roleplay (25%)). Their correlations, seed or physical, relate FLOPs to a duration that is not GPU execution time and should not be read as a test of the decomposition.""",
    "physical_minimal": """\
## Beyond the Seed: Physical Mode

The physical mode fixes the seed's known flaws: the MoE MLP counts num_experts_per_tok experts per token (the seed counted num_experts_per_tok / num_local_experts of one), and its expert GEMMs are priced from each expert's share of the tokens; prefill attention runs per chunk against the request's already computed context; decode attention reads each request's whole KV cache; every component's time is a roofline, max(FLOPs / peak, bytes / HBM bandwidth), so memory-bound decode is priced by the bytes it moves; the tensor-parallel all-reduce (a fixed latency per call plus the ring's bytes over NVLink) and the LM head are added; and an HBM lower bound flags durations too short to be GPU execution. `phys_total_us` is the sum of all six component times.

### Journey Coverage

1 of 2 experiments carry request-journey events, from which each step's decode contexts and prefill chunks are rebuilt. **Without journeys (1):** beta-moe, roleplay. There the physical decode attention is unavailable (NaN), so their decode steps have no physical total: they drop out of the physical correlations and the component fit, and prefill attention falls back to the batch-level estimate (all prefill tokens of a step as one chunk).

### Re-tested Hypothesis: Physical Components

Pooled over experiments: Pearson r with a 95% interval, Spearman rank r and the Pearson r of log durations beside it, because durations span orders of magnitude and a few long steps can carry a Pearson r alone. Pearson r, its interval and Spearman r use the n_steps rows of the subset (the component and the step time known, the step time positive); the log-log r uses only those rows whose component is > 0 as well (n_steps (log-log)). The interval is a percentile bootstrap over steps (large pooled subsets use a capped, rescaled resample); it treats the steps as independent, which steps of one experiment are not, so it is too narrow.

| Subset | Component | Pearson r | 95% CI | Spearman r | n_steps | log-log r | n_steps (log-log) |
|---|---|---|---|---|---|---|---|
| pure_prefill | phys_prefill_gemm_us | N/A | N/A | N/A | 3 | N/A | 3 |
| pure_prefill | phys_prefill_attn_us | N/A | N/A | N/A | 3 | N/A | 3 |
| prefill_dominated | phys_prefill_gemm_us | 0.9123 | [0.881, 0.934] | 0.9001 | 1,234 | 0.8899 | 1,234 |
| prefill_dominated | phys_prefill_attn_us | 0.4567 | [0.401, 0.502] | 0.4000 | 1,234 | 0.4100 | 1,234 |
| pure_decode | phys_decode_gemm_us | 0.1111 | [0.100, 0.120] | 0.1300 | 56,789 | 0.1400 | 56,789 |
| pure_decode | phys_decode_attn_us | 0.8765 | [0.812, 0.901] | 0.8500 | 56,789 | 0.8600 | 56,789 |
| all | phys_total_us | 0.9555 | [0.950, 0.960] | 0.9400 | 60,000 | 0.9300 | 60,000 |

**Physical verdict (pure-phase subsets, the seed's criterion):** 1 of 4 components reach r > 0.8 (at least 2 needed) (2 of 4 criteria N/A): **INDETERMINATE** — prefill GEMM on pure_prefill N/A, prefill attention on pure_prefill N/A, decode GEMM on pure_decode r = 0.111, decode attention on pure_decode r = 0.876 (passes).

**Alternative with prefill-dominated steps** (physical time ≥ 90% prefill; 1,234 usable steps against 3 pure-prefill ones): 2 of 4 reach r > 0.8: **SUPPORTED** — prefill GEMM on prefill_dominated r = 0.912 (passes), prefill attention on prefill_dominated r = 0.457, decode GEMM on pure_decode r = 0.111, decode attention on pure_decode r = 0.876 (passes).

### Seed vs Physical, per Experiment

Per experiment, the seed total (`total_analytical_us`) and the physical total (`phys_total_us`) against the step time. The physical r, its interval and its Spearman r use the n_steps (physical) steps where the physical total and the step time are known; the log-log r only those where the physical total is positive as well. The seed's r uses the steps where the seed total is known, n_steps (seed); it has more where the physical total is unknown on some steps (decode steps of experiments without journeys). The physical r's interval is a bootstrap over single steps, which treats consecutive steps as independent, percentile interval.

| Model | Workload | Seed r | Physical r | Physical 95% CI | Δr | Seed Spearman | Physical Spearman | n_steps (physical) | n_steps (seed) | Physical log-log r |
|---|---|---|---|---|---|---|---|---|---|---|
| beta-moe | roleplay | 0.9302 | N/A | N/A | N/A | 0.9000 | N/A | 7 | 4,000 | N/A |
| alpha-7b | general | 0.7001 | 0.9502 | [0.945, 0.955] | +0.250 | 0.6000 | 0.9300 | 5,000 | 5,000 | 0.9400 |

Where both are computable (1 of 2 experiments) the physical total correlates better than the seed total in 1 by Pearson r and in 1 of 1 by Spearman r. Median r: seed 0.700, physical 0.950. The largest gain is alpha-7b, general (0.700 → 0.950). Experiments above r = 0.8: 1 in seed mode, 1 in physical mode by Pearson r; 1 and 1 by Spearman r. Physical r is N/A for 1 experiment(s): beta-moe, roleplay (7 usable steps).

### What Differs and Why

1. **Decode attention now exists.** Seed mode sets it to 0 (r N/A); with each request's context rebuilt from the journeys it reaches r = 0.876 on pure-decode steps, a strong signal on its own.
2. **Decode is priced as memory-bound.** The physical decode GEMM time is the larger of its FLOP time and the time to read the weights, which for small decode batches is the weight read: a floor that depends on the model and tp, not on the number of decode tokens. On pure-decode steps it reaches r = 0.111, tracking the duration about as well as the seed's FLOP count; pooled over experiments such a floor mostly separates models, and within one experiment it barely varies.
3. **Prefill-dominated steps widen the prefill test** from 3 pure-prefill steps to 1,234; the criterion passes 1 of 4 on pure phases and 2 of 4 with the wider prefill subset.
4. **Per experiment, the physical total changes r by a median +0.250.** *Inference:* the physical model adds structure the seed lacked (attention over real contexts, the memory-bound floor, the per-expert MoE cost).""",
    "published_comparison": """\
## Generated Data vs the Published Study

The bundled traces are generated (see Setup). Beside the study's published numbers:

| Metric | Published study | This data |
|---|---|---|
| steps | 1,000 | 400 |
| pure_prefill share (%) | 0.6 | 3 |
| pure_decode share (%) | 80 | 75 |
| mixed share (%) | 19.4 | 22 |
| r, decode_gemm_us on pure_decode | 0.4 | 0.4367 |
| r, total_analytical_us on all | 0.3 | 0.335 |
| median per-experiment r of total_analytical_us | 0.525 | 0.555 |
| rank agreement of per-experiment r (Spearman) | — | 1 |
| hypothesis criteria passing | 0 | 1 |

**Agree:** pure-decode steps are 75% of steps (80% published); mixed steps are 22% of steps (19.4% published); decode GEMM reaches r = 0.437 on pure-decode steps (0.400 published); the median per-experiment r of the seed total is 0.555 (0.525 published), and the per-experiment ranking agrees with the published one at Spearman 1.00.

**Differ:** pure-prefill steps are 3% of steps here against 0.6% published.

How the generated traces were made matters for reading this table. The replay follows the load the study's load generator actually sent (its effective configuration: single-turn prompts, shared system prompts, prefix-cache hits on re-sent prompts) through a vLLM-v1-style scheduler and records what the instrumented server records: `step.duration_us` is the replayed `schedule()` CPU time (a documented cost model with jitter and rare pauses), while the forward pass — which `step.duration_us` does not contain — is priced from measured kernel latencies of the fitted hardware. So the seed's correlations above, computed against `step.duration_us`, are correlations of FLOPs with scheduler CPU time, as they were in the study. The forward-pass statistics of the physical section are partly circular on this data: the replay prices each forward pass from measured kernel tables as a function of the batch alone, and the physical model prices the same batches with roofline formulas (its MoE GEMM from the same kernel tables), so they measure how closely two cost models of the same batches agree, without the host noise, contention and measurement error of a real server. They bound nothing about measured traces, in either direction.""",
    # the header (no section function): two trailing spaces make a markdown line break
    "findings_head": ("# Analytical Component Decomposition of vLLM Step Time — FINDINGS\n\n"
                      "**Status (seed mode):** Not Supported (formal criteria; 1 of 4 criteria N/A)  \n"
                      "**Generated by:** `make report` from `tests/fixtures/ground_truth`\n"),
}



def _sections() -> dict[str, str]:
    """Each snapshotted section, rendered by the current report from the hand-made inputs."""
    tables = _report_tables()
    seed_pure = _seed_pure()
    fi = _findings_input()
    physical = physical_section(tables, stats.hypothesis_verdict(seed_pure), seed_pure,
                                models_by_hf_id=fi.models_by_hf_id)
    return {
        "summary": report.summary_section(fi), "setup": report.setup_section(fi),
        "phase": report.phase_section(fi), "pure_phase": report.pure_phase_section(fi),
        "per_experiment": report.per_experiment_section(fi),
        "analysis": report.analysis_section(fi), "verdict": report.verdict_section(fi),
        "physical": physical, "physical_minimal": physical_section(_minimal(tables)),
        "published_comparison": report.published_comparison_section(_comparison(fi))}


@pytest.fixture(scope="module")
def sections() -> dict[str, str]:
    return _sections()


@pytest.mark.parametrize("name", [k for k in SNAPSHOTS if k != "findings_head"])
def test_section_matches_snapshot(sections, name):
    assert sections[name] == SNAPSHOTS[name]


def test_findings_markdown_is_the_sections_in_order(sections):
    fi = _findings_input([sections["physical"], sections["published_comparison"]])
    order = ["findings_head", "summary", "setup", "phase", "pure_phase", "per_experiment",
             "analysis", "physical", "published_comparison", "verdict"]
    expected = "\n\n".join(SNAPSHOTS[k].removesuffix("\n") for k in order) + "\n"
    # the Answer goes between the title and the status lines
    title, head = expected.split("\n\n", 1)
    answer = report.render_section("answer", report.answer_context(fi))
    assert answer.startswith("## Answer\n")
    assert findings_markdown(fi) == f"{title}\n\n{answer}\n\n{head}"


def test_every_registered_section_is_in_the_document():
    """report.SECTION_CONTEXTS and findings.md.j2's section() calls name the same sections,
    in the same order."""
    text = (TEMPLATES / "findings.md.j2").read_text()
    called = re.findall(r'section\("(\w+)", (\w+)\)', text)
    assert [name for name, _ in called] == list(report.SECTION_CONTEXTS)
    assert all(name == ctx for name, ctx in called)
    for name in report.SECTION_CONTEXTS:
        assert (TEMPLATES / f"_{name}.md.j2").is_file()


def test_dataset_note_per_kind():
    assert "**generated**" in report.dataset_note("bundled", "data/raw")
    assert "small test fixture" in report.dataset_note("fixture", "tests/fixtures/ground_truth")
    assert report.dataset_note("own", "/x/y") == "The traces analysed here are the ground-truth root `/x/y`."
    # the kind is what notebook 01 recorded: a path the report does not know says nothing
    assert "**generated**" in report.dataset_note("bundled", "/elsewhere/raw")
    fi = _findings_input()
    fi.dataset_note = "A note of the caller's."
    assert "- **Data:** A note of the caller's.\n" in report.setup_section(fi)


# --------------------------------------------------------------------------- thresholds

#: Digits the template prose may contain: facts about the method or the data, not thresholds
#: (each must occur in some template: test_every_allowed_number_is_used).
ALLOWED_PROSE_NUMBERS = [
    "decode_tokens = 0", "prefill_tokens = 0",          # phase titles
    "identically 0", "sets it to 0", "set to 0", "is 0 in it",   # seed decode attention
    "average context P/2", "dense BF16",                 # the seed's formulas, the precision
    "component is > 0",                                  # log-log r's rows
    "95%",                                               # the bootstrap interval's level
    "// 1000",                                           # the server's integer µs
    "2·output_len + 2", "(output_len − 1)",              # the client's event count, per token
    "(≈ 1 when", "vLLM-v1", "E2E", "TPOT + 1",          # one token per iteration, names
]
#: Spellings of the thresholds the text states; they must come from TEMPLATE_CONSTANTS.
FORBIDDEN = ["0.8", "80%", "0.9", "90%", "90 %", "≥ 2", ">= 2", "at least 2", "2 of", "of 4",
             "/4", "1%", "1 %", "0.01", "fewer than 10", "above 10", "10 steps", "fewer than 3",
             "3 experiments"]
_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_STRING = re.compile(r'"[^"]*"|\'[^\']*\'')


def _template_parts(path: Path) -> tuple[str, str]:
    """(prose, code) of a template. Prose: the text outside tags and the string literals
    inside them that are not names (a column, a template), whitespace collapsed. Code: the
    tags without their strings. Comments are dropped."""
    text = re.sub(r"\{#.*?#\}", "", path.read_text(), flags=re.S)
    tags = _TAG.findall(text)
    strings = [s for t in tags for s in _STRING.findall(t) if not re.fullmatch(r"[\"'][\w.]*[\"']", s)]
    prose = re.sub(r"\s+", " ", " ".join([_TAG.sub(" ", text), *strings]))
    return prose, "\n".join(_STRING.sub('""', t) for t in tags)


@pytest.mark.parametrize("path", sorted(TEMPLATES.glob("*.j2")), ids=lambda p: p.name)
def test_templates_do_not_hard_code_thresholds(path):
    """No threshold is written into a template: code uses no number but 0 and 1, and prose
    contains digits only in ALLOWED_PROSE_NUMBERS."""
    prose, code = _template_parts(path)
    numbers = set(re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", code))
    assert numbers <= {"0", "1"}, f"numeric literals in template code: {numbers - {'0', '1'}}"
    for phrase in ALLOWED_PROSE_NUMBERS:
        prose = prose.replace(phrase, "")
    assert not re.findall(r".{0,30}\d.{0,30}", prose), "digits in template prose"
    full = path.read_text()
    assert not [f for f in FORBIDDEN if f in full]


def test_every_allowed_number_is_used():
    """An allowed phrase no template contains any more would let a threshold slip back in."""
    prose = " ".join(_template_parts(p)[0] for p in sorted(TEMPLATES.glob("*.j2")))
    assert [a for a in ALLOWED_PROSE_NUMBERS if a not in prose] == []


@pytest.fixture
def constants(monkeypatch):
    """report.TEMPLATE_CONSTANTS, patchable: the template environment is rebuilt around it."""
    report.environment.cache_clear()
    yield lambda name, value: monkeypatch.setitem(report.TEMPLATE_CONSTANTS, name, value)
    monkeypatch.undo()
    report.environment.cache_clear()


def test_stated_thresholds_follow_the_constants(constants):
    constants("R_THRESHOLD", 0.75)
    constants("PREFILL_DOMINATED_SHARE", 0.85)
    constants("LOWER_BOUND_MATERIAL", 0.02)
    constants("MIN_ROWS", 12)
    constants("WITHIN_MIN_EXPERIMENTS", 5)
    fi = _findings_input()
    verdict = report.verdict_section(fi)
    assert "criteria reach r > 0.75" in verdict and "| r > 0.75 |" in verdict
    physical = physical_section(_report_tables())
    assert "physical time ≥ 85% prefill" in physical
    assert "components reach r > 0.75" in physical and "Experiments above r = 0.75" in physical
    assert "(at least 2% of steps below the HBM lower bound" in physical
    assert "fewer than 12 steps" in report.setup_section(fi)
    within = physical_section(_report_tables())
    assert "The median is N/A when fewer than 5 experiments have an r" in within
    assert "a row passes when its median r > 0.75" in within


# --------------------------------------------------------------------------- physical section

def test_physical_section_renders_its_numbers():
    tables = _report_tables()
    md = physical_section(tables)
    assert md.startswith("## Beyond the Seed: Physical Mode")
    for s in ["0.8765", "[0.812, 0.901]", "56,789", "0.9123", "1,234",      # pure table
              "0.7001", "0.9502", "+0.250", "[0.945, 0.955]", "[0.240, 0.260]",  # per experiment
              "1,500 [1,200, 1,800]", "50.0% [40.0%, 60.0%]", "0.9 [0.85, 0.93]",  # attribution
              "25%", "1,000", "13,863",                                       # lower bound
              "98.7%"]:                                                       # agreement
        assert s in md, s
    assert "**Without journeys (1):** beta-moe, roleplay" in md
    assert "beta-moe, roleplay (25% of 4,000 steps)" in md                   # flagged, with fraction
    # pure-phase verdict: 1 passes and 2 are N/A, which could tip it
    assert "1 of 4 components reach r > 0.8 (at least 2 needed) (2 of 4 criteria N/A): " \
        "**INDETERMINATE**" in md
    assert "2 of 4 reach r > 0.8: **SUPPORTED**" in md                       # prefill-dominated
    assert "Physical r is N/A for 1 experiment(s): beta-moe, roleplay (7 usable steps)" in md
    # optional tables may be missing
    md2 = physical_section(_minimal(tables))
    assert "Lower Bound" not in md2 and "Attribution" not in md2 and "Within-Experiment" not in md2
    assert "### The MoE GEMM" not in md2
    assert "**Without journeys (1):** beta-moe, roleplay" in md2              # from journey_coverage


def test_seed_and_physical_r_are_compared_only_on_one_target():
    """The seed's pooled decode GEMM r is on step.duration_us; on step_forward_us the physical
    r is not called better or worse than it."""
    seed_pure = _seed_pure()
    md = physical_section(_report_tables(), stats.hypothesis_verdict(seed_pure), seed_pure,
                          target="step_forward_us")
    assert ("On pure-decode steps it reaches r = 0.111 (the seed's decode GEMM: r = 0.437 on "
            "`step.duration_us`, another target, so the two are not compared); pooled over "
            "experiments such a floor mostly separates models") in md
    assert "the seed's FLOP count" not in md


def _write(dirs: RunDirs, name: str, table: pd.DataFrame, target: str | None = None) -> None:
    if target is not None:
        table = table.assign(target=target)
    table.to_csv(dirs.tables / f"{name}.csv", index=False, na_rep="")


def test_physical_section_from_tables_is_optional(tmp_path):
    dirs = RunDirs(data_root=tmp_path, out=tmp_path / "out", figures=tmp_path / "fig")
    dirs.tables.mkdir(parents=True)
    assert report.physical_section_from_tables(dirs) is None                  # seed-only run
    t = _report_tables()
    _write(dirs, "physical_pure_phase_correlations", t.pure)
    _write(dirs, "physical_per_experiment_correlations", t.per_experiment)
    with pytest.raises(FileNotFoundError, match="table verdicts_pooled is written by notebook "
                       "04_correlation"):
        report.physical_section_from_tables(dirs)
    write_notebook04(dirs, {None: _minimal(t)})
    assert "## Beyond the Seed" in report.physical_section_from_tables(dirs)
    for name, table in [("lower_bound_check", t.lower_bound),
                        ("reconstruction_report", t.reconstruction),
                        ("component_attribution", t.attribution), ("fit_summary", t.fit_summary),
                        ("attribution_by_model", t.attribution_by_model),
                        ("within_experiment_verdict", t.within)]:
        _write(dirs, name, table)
    # the attribution's summaries come with it: a run without them names the one missing
    with pytest.raises(FileNotFoundError, match="attribution_summary.csv is missing: table "
                       "attribution_summary is written by notebook 04_correlation"):
        report.physical_section_from_tables(dirs)
    write_notebook04(dirs, {None: t})
    md = report.physical_section_from_tables(dirs)
    assert md == physical_section(dataclasses.replace(t, moe_check=None, moe_delta=None))
    assert "### The MoE GEMM" not in md
    _write(dirs, "moe_gemm_check", t.moe_check)
    _write(dirs, "moe_delta_r", t.moe_delta)
    by_hf_id = {"org/beta-moe": ["beta-moe"]}
    assert report.physical_section_from_tables(dirs, models_by_hf_id=by_hf_id) \
        == physical_section(t, models_by_hf_id=by_hf_id)


def test_physical_section_from_tables_reads_the_primary_target(tmp_path):
    """Tables with a ``target`` column: the section reads step_forward_us's rows only."""
    from stepdecomp.core.tables import PRIMARY_TARGET

    dirs = RunDirs(data_root=tmp_path, out=tmp_path / "out", figures=tmp_path / "fig")
    dirs.tables.mkdir(parents=True)
    t = _report_tables()
    other = _report_tables()
    other.pure["pearson_r"] = 0.1
    for name, a, b in [("physical_pure_phase_correlations", t.pure, other.pure),
                       ("physical_per_experiment_correlations", t.per_experiment, t.per_experiment),
                       ("within_experiment_verdict", t.within, t.within),
                       ("component_attribution", t.attribution, t.attribution),
                       ("fit_summary", t.fit_summary, t.fit_summary),
                       ("moe_delta_r", t.moe_delta.assign(r_new=0.0), t.moe_delta)]:
        pd.concat([a.assign(target="step.duration_us"), b.assign(target=PRIMARY_TARGET)]) \
            .to_csv(dirs.tables / f"{name}.csv", index=False, na_rep="")
    t.moe_check.to_csv(dirs.tables / "moe_gemm_check.csv", index=False)     # no target column
    expected = report.PhysicalTables(pure=other.pure, per_experiment=t.per_experiment,
                                     attribution=t.attribution, fit_summary=t.fit_summary,
                                     within=t.within, moe_check=t.moe_check,
                                     moe_delta=t.moe_delta)
    # the verdicts and summaries of each target, as notebook 04 writes them
    write_notebook04(dirs, {"step.duration_us": dataclasses.replace(expected, pure=t.pure),
                            PRIMARY_TARGET: expected})
    md = report.physical_section_from_tables(dirs)
    assert md == physical_section(expected, target=PRIMARY_TARGET)
    assert f"`{PRIMARY_TARGET}` ≈ intercept" in md


# --------------------------------------------------------------------------- what the traces measure

def _measurement_tables() -> dict[str, pd.DataFrame]:
    exp = ["20260101-000000-a-tp1-general", "20260101-010000-b-tp2-codegen"]
    targets = ["step.duration_us", "step_forward_us", "step_period_us"]
    lb = pd.DataFrame([{"target": t, "experiment_id": e, "fraction_below": f}
                       for t, fs in zip(targets, ([1.0, 0.9], [0.0, 0.1], [0.0, 0.0]))
                       for e, f in zip(exp, fs)])
    r2 = pd.DataFrame([{"experiment_id": e, "target": t, "regressors": g, "r2": 0.5,
                        "n_steps": 100, "n_regressors": 4}
                       for e in exp for t in ("step.duration_us", "step_period_us")
                       for g in ("scheduler_work", "flops")])
    pure = pd.DataFrame([{"target": t, "subset": sub, "component": c, "pearson_r": 0.9,
                          "n_steps": 50}
                         for t in targets for sub, c in
                         (("pure_prefill", "phys_prefill_gemm_us"),
                          ("pure_prefill", "phys_prefill_attn_us"),
                          ("prefill_dominated", "phys_prefill_gemm_us"),
                          ("prefill_dominated", "phys_prefill_attn_us"),
                          ("pure_decode", "phys_decode_gemm_us"),
                          ("pure_decode", "phys_decode_attn_us"))])
    summary = pd.DataFrame({"source": ["published"], "run": [exp[0]], "two_events_per_token": [True],
                            "tpot_over_per_token": [0.5]})
    plaus = pd.DataFrame([{"source": "published", "run": exp[0], "gpu": "h100-sxm",
                           "precision": "bf16", "mean_tpot_ms": 4.0, "per_token_ms": 8.0,
                           "floor_ms": 4.5, "tpot_over_floor": 4 / 4.5, "per_token_over_floor": 8 / 4.5,
                           "implied_bw_per_token_tb_s": 1.7, "consistent_tpot": False,
                           "consistent_per_token": True}])
    return {
        "client_floor_candidates": through_csv(clientmetrics.floor_candidates(plaus)),
        "target_coverage": pd.DataFrame({"experiment_id": exp, "sampled_steps": [10, 20],
                                         "share_step_forward": [0.5, 0.4],
                                         "share_forward_event": [0.2, 0.1],
                                         "share_step_period": [0.3, 0.2],
                                         "share_period_exact": [0.1, 0.1]}),
        "target_medians": pd.DataFrame({"experiment_id": exp, "model": ["a", "b"],
                                        "workload": ["general", "codegen"],
                                        "step.duration_us": [60.0, 80.0],
                                        "step_forward_us": [8000.0, 12000.0],
                                        "step_period_us": [8100.0, 12100.0]}),
        "lower_bound_check": lb, "what_explains_targets": r2,
        "physical_pure_phase_correlations": pure, "client_summary": summary,
        "client_plausibility": plaus, "period_vs_client": pd.DataFrame(
            columns=["experiment_id", "median_step_period_ms", "median_step_forward_ms",
                     "client_per_token_ms", "client_mean_tpot_ms", "period_over_per_token"])}


def test_measurement_section_numbers():
    fi = _findings_input()
    fi.measurement = _measurement_tables()
    ctx = measurement_context(fi)
    # medians over the two experiments: (60 + 80) / 2, (8000 + 12000) / 2, (8100 + 12100) / 2
    assert (ctx["median_duration_us"], ctx["median_forward_us"], ctx["median_period_us"]) \
        == (70.0, 10000.0, 10100.0)
    assert ctx["below_median"] == {"step.duration_us": 0.95, "step_forward_us": 0.05,
                                   "step_period_us": 0.0}
    # every component at r = 0.9 > 0.8 on its subset: 4 of 4 pass on each target
    assert ctx["verdicts"]["passing"].tolist() == [4] * 6
    assert ctx["client"]["below_tpot"] == 1 and ctx["client"]["below_per_token"] == 0
    text = findings_markdown(fi)
    assert text.index("## Summary") < text.index("## What the Traces Measure") \
        < text.index("## Experimental Setup")
    assert "per-experiment median is 70 µs" in text
    assert "inference-sim/vllm" in text and "vllm/v1/core/sched/scheduler.py" in text
    assert "function of the batch by construction" not in text             # not generated data
    fi.data_root = "data/raw"
    # without the increment table (an older run) the section makes no claim about it
    assert "cannot separate" not in findings_markdown(fi)
    fi.measurement["what_explains_increment"] = pd.DataFrame({
        "target": ["step.duration_us"] * 2,
        "regressors": [ex.SET_FLOPS_BEYOND, ex.SET_SCHEDULER_BEYOND],
        "median_increment": [0.004, 0.3], "ci_low": [0.001, 0.2], "ci_high": [0.01, 0.4],
        "experiments": [2, 2], "credited": [False, True]})
    # the increments come with the set they credit, per target (explain.credit_table)
    with pytest.raises(KeyError, match="what_explains_increment is there but not "
                       "what_explains_credit .notebook 04_correlation writes both."):
        findings_markdown(fi)
    fi.measurement["what_explains_credit"] = ex.credit_table(fi.measurement["what_explains_increment"])
    text = findings_markdown(fi)
    assert ("`step.duration_us`: the scheduler's work explains what the FLOPs cannot, and not "
            "the reverse.") in text
    assert ("| step.duration_us | 0.300 [0.200, 0.400] | 0.004 [0.001, 0.010] | 2 | scheduler work |"
            in text)
    assert ("On the bundled (generated) data the forward time is a function of the batch by "
            "construction") in text


def test_seed_only_run_has_no_measurement_section():
    text = findings_markdown(_findings_input())
    assert "What the Traces Measure" not in text and "What the study measured" not in text


def _claim_numbers(claim: str) -> tuple[float, float]:
    """(this data, published) of one rendered claim: the number before "published" and the
    first number of the claim."""
    pub = re.search(r"(-?\d[\d.]*)%? published", claim)
    ours = re.search(r"-?\d[\d.]*", claim[:pub.start()])
    return float(ours.group()), float(pub.group(1))


@pytest.mark.parametrize("breakdown, agree_kinds, differ_kinds", [
    # the snapshot's data: every share close to the published one
    ([12, 300, 88], {"pure_decode", "mixed"}, {"pure_prefill"}),
    # the bundled report's shape: pure decode 89 % (80 published) agrees, mixed 10.9 % does
    # not agree with 19.4 % although 8.5 points apart (a factor 1.78)
    ([0, 891, 109], {"pure_decode", "pure_prefill"}, {"mixed"}),
])
def test_every_agree_and_differ_line_follows_its_own_numbers(breakdown, agree_kinds, differ_kinds):
    """Each claim of the Agree / Differ lines, read back from the rendered text: its two
    numbers, and the rule of its kind applied to them, put it on the line it is on."""
    from stepdecomp.report.published import shares_agree

    fi = _findings_input()
    fi.breakdown = pd.DataFrame({"phase": ["pure_prefill", "pure_decode", "mixed"],
                                 "steps": breakdown,
                                 "pct": [100 * n / sum(breakdown) for n in breakdown]})
    ctx = report.published_comparison_context(_comparison(fi))
    kinds = {c["kind"]: c["agree"] for c in ctx["claims"]}
    assert {k for k, a in kinds.items() if a} >= agree_kinds
    assert {k for k, a in kinds.items() if not a} >= differ_kinds
    text = report.published_comparison_section(_comparison(fi))
    lines = {side: next((ln for ln in text.splitlines() if ln.startswith(f"**{side}:**")), "")
             for side in ("Agree", "Differ")}
    phrases = {"pure_prefill": "pure-prefill steps", "pure_decode": "pure-decode steps",
               "mixed": "mixed steps", "decode_gemm_r": "decode GEMM reaches",
               "median_r": "median per-experiment r"}
    for c in ctx["claims"]:
        side = "Agree" if c["agree"] else "Differ"
        other = "Differ" if c["agree"] else "Agree"
        claim = next(part for part in lines[side].split("; ") if phrases[c["kind"]] in part)
        assert phrases[c["kind"]] not in lines[other]
        ours, published = _claim_numbers(claim)
        if c["kind"] in ("pure_decode", "mixed"):
            assert shares_agree(ours, published) is c["agree"], claim
        elif c["kind"] == "pure_prefill":
            assert (ours < ABSENT_PREFILL_PCT) is c["agree"], claim
        else:
            assert (abs(ours - published) < R_AGREE) is c["agree"], claim


def test_shares_agree_needs_points_and_factor() -> None:
    from stepdecomp.report.published import shares_agree

    assert shares_agree(89.0, 80.0)                # 9 points, ×1.11
    assert not shares_agree(10.9, 19.4)            # 8.5 points but ×1.78
    assert not shares_agree(50.0, 39.0)            # ×1.28 > 1.25
    assert not shares_agree(95.0, 80.0)            # 15 points
    assert shares_agree(0.0, 0.0) and not shares_agree(0.0, 0.6)
