"""FINDINGS.md: the seed study's sections, filled from the computed tables.

Every number in the text comes from a table passed in; the sentences are templates whose
branches depend on the data (e.g. whether pure-prefill steps are too few for an r).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import pandas as pd

from .paths import FIXTURE_ROOT, RAW_DIR, display_path

if TYPE_CHECKING:
    from .outputs import RunDirs
from .specs import GpuSpec, ModelSpec
from .stats import MIN_ROWS, R_THRESHOLD, Verdict

PHASE_TITLES = {"pure_prefill": "Pure prefill (decode_tokens = 0)",
                "pure_decode": "Pure decode (prefill_tokens = 0)", "mixed": "Mixed batch"}


# --------------------------------------------------------------------------- formatting

def fmt_r(r: float) -> str:
    return "N/A" if r is None or (isinstance(r, float) and math.isnan(r)) else f"{r:.4f}"


def fmt_int(n: float) -> str:
    return f"{int(n):,}"


def fmt_pct(p: float) -> str:
    """Percent with enough digits to show small shares (0.005%) and 3 significant digits."""
    if p == 0:
        return "0%"
    return f"{p:.3g}%" if p >= 0.01 else f"{p:.1g}%"


def markdown_table(frame: pd.DataFrame, formats: dict[str, Callable[[object], str]] | None = None,
                   headers: Sequence[str] | None = None) -> str:
    formats = formats or {}
    headers = list(headers or frame.columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for _, row in frame.iterrows():
        cells = [formats.get(c, str)(row[c]) for c in frame.columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- inputs

@dataclass
class FindingsInput:
    data_root: str
    experiments: list[str]
    skipped: list[tuple[str, str]]
    parse_report: pd.DataFrame
    breakdown: pd.DataFrame
    pure: pd.DataFrame
    per_experiment: pd.DataFrame
    verdict: Verdict
    gpu: GpuSpec
    specs: dict[str, ModelSpec]
    models_by_hf_id: dict[str, list[str]]
    extra_sections: list[str] = field(default_factory=list)
    dataset_note: str | None = None


def dataset_note(data_root: str) -> str:
    """What the analysed traces are: the bundled generated set, the test fixture, or the user's."""
    if data_root == display_path(RAW_DIR):
        return ("The traces analysed here are the bundled reference dataset: **generated** by "
                "replaying the study's 16 experiment configurations through a vLLM-style scheduler "
                "whose step times come from measured H100 kernel latencies (see data/README.md). "
                "They are not the study's measured traces, which were never published; the numbers "
                "below describe the generated data and are compared with the study's published "
                "numbers where that is meaningful. Run `make report DATA=<your ground-truth root>` "
                "on real traces.")
    if data_root == display_path(FIXTURE_ROOT):
        return ("The traces analysed here are the repository's small test fixture (three synthetic "
                "experiments with hand-checkable values). They exercise the pipeline; they say "
                "nothing about real hardware.")
    return f"The traces analysed here are the ground-truth root `{data_root}`."


# --------------------------------------------------------------------------- sections

def _phase(breakdown: pd.DataFrame, name: str) -> pd.Series:
    return breakdown.set_index("phase").loc[name]


def _pure_row(pure: pd.DataFrame, subset: str, component: str) -> pd.Series:
    return pure[(pure["subset"] == subset) & (pure["component"] == component)].iloc[0]


def summary_section(fi: FindingsInput) -> str:
    total_steps = int(fi.parse_report["steps"].sum())
    pp = _phase(fi.breakdown, "pure_prefill")
    pd_ = _phase(fi.breakdown, "pure_decode")
    total = fi.per_experiment[fi.per_experiment["component"] == "total_analytical_us"]
    valid = total.dropna(subset=["pearson_r"])
    lines = [
        f"The seed study's four-component analytical decomposition (prefill GEMM, prefill "
        f"attention, decode GEMM, decode attention) was computed for {fmt_int(total_steps)} steps "
        f"from {len(fi.experiments)} experiments and correlated with the observed step duration.",
        f"{fi.verdict.sentence()}",
        f"Pure-prefill steps are {fmt_int(pp['steps'])} ({fmt_pct(pp['pct'])}) of all steps; pure "
        f"decode steps are {fmt_int(pd_['steps'])} ({fmt_pct(pd_['pct'])}).",
    ]
    if len(valid):
        best, worst = valid.loc[valid["pearson_r"].idxmax()], valid.loc[valid["pearson_r"].idxmin()]
        lines.append(f"Per experiment, r of the total analytical estimate ranges from "
                     f"{fmt_r(worst['pearson_r'])} ({worst['model']}, {worst['workload']}) to "
                     f"{fmt_r(best['pearson_r'])} ({best['model']}, {best['workload']}).")
    return "## Summary\n\n" + " ".join(lines)


def setup_section(fi: FindingsInput) -> str:
    rows = []
    for hf_id, spec in sorted(fi.specs.items()):
        rows.append({"model (slugs)": ", ".join(fi.models_by_hf_id.get(hf_id, [])), "HF config": hf_id,
                     "layers": spec.num_layers, "d": spec.hidden_size,
                     "heads / KV heads": f"{spec.num_heads} / {spec.num_kv_heads}",
                     "d_ff": spec.intermediate_size,
                     "experts (active)": f"{spec.num_experts} ({spec.experts_per_token})",
                     "seed MoE factor": f"{spec.seed_moe_factor:g}"})
    malformed = int(fi.parse_report["malformed_lines"].sum())
    blank = int(fi.parse_report["blank_lines"].sum())
    skipped = "; ".join(f"`{d}` ({why})" for d, why in fi.skipped) or "none"
    parts = [
        "## Experimental Setup",
        "",
        f"- **Data:** {fi.dataset_note or dataset_note(fi.data_root)}",
        f"- **Experiments:** {len(fi.experiments)} with traces; skipped directories: {skipped}.",
        f"- **Steps:** {fmt_int(fi.parse_report['steps'].sum())} step.BATCH_SUMMARY events; "
        f"{malformed} malformed and {blank} blank trace line(s) skipped "
        f"(per file in the table below).",
        "- **Method:** correlation of each analytical component with `step.duration_us` "
        "(structural validation, no fitting); r is N/A with fewer than "
        f"{MIN_ROWS} steps or zero variance.",
        "- **Components (seed mode):** prefill and decode GEMM FLOPs (QKV, O, gated MLP with the "
        "seed's MoE factor num_experts_per_tok / num_local_experts), prefill attention with the "
        "step's prefill tokens as one causal sequence (average context P/2), decode attention "
        "set to 0, all sharded over TP.",
        f"- **Hardware:** {fi.gpu.name}, peak {fi.gpu.peak_bf16_dense_tflops:g} TFLOP/s dense BF16 "
        f"(no MFU correction), {fi.gpu.hbm_tb_per_s:g} TB/s HBM.",
        "",
        markdown_table(pd.DataFrame(rows)),
        "",
        markdown_table(fi.parse_report[["experiment_id", "lines", "blank_lines", "malformed_lines",
                                        "steps", "journey_events"]],
                       {c: fmt_int for c in ["lines", "blank_lines", "malformed_lines", "steps",
                                             "journey_events"]}),
    ]
    return "\n".join(parts)


def phase_section(fi: FindingsInput) -> str:
    table = fi.breakdown.assign(phase=fi.breakdown["phase"].map(PHASE_TITLES))
    pp = _phase(fi.breakdown, "pure_prefill")
    n_pp = int(pp["steps"])
    if n_pp < MIN_ROWS:
        note = (f"Only {n_pp} step(s) carry no decode tokens: under chunked prefill a running "
                f"request's decode token rides along with nearly every prefill chunk, so the "
                f"pure-prefill subset is too small for a correlation (fewer than {MIN_ROWS}).")
    elif pp["pct"] < 5:
        note = (f"Pure-prefill steps are rare ({fmt_pct(pp['pct'])}): chunked prefill mixes "
                f"prefill chunks into batches that already decode, so the pure-phase design sees "
                f"few of them.")
    else:
        note = f"Pure-prefill steps make up {fmt_pct(pp['pct'])} of the steps."
    return "\n".join(["## Results", "", "### Phase Breakdown", "",
                      markdown_table(table, {"steps": fmt_int, "pct": fmt_pct},
                                     ["Phase", "Steps", "% of Total"]), "", note])


def pure_phase_section(fi: FindingsInput) -> str:
    return "\n".join(["### Correlation on Pure-Phase Subsets", "",
                      markdown_table(fi.pure, {"pearson_r": fmt_r, "n_steps": fmt_int},
                                     ["Subset", "Component", "Pearson r", "n_steps"]), "",
                      f"**Hypothesis verdict:** {fi.verdict.sentence()}"])


def per_experiment_section(fi: FindingsInput) -> str:
    total = fi.per_experiment[fi.per_experiment["component"] == "total_analytical_us"]
    total = total.sort_values("pearson_r", ascending=False, na_position="last")
    return "\n".join(["### Per-Experiment Correlations (total_analytical_us)", "",
                      markdown_table(total[["model", "workload", "pearson_r", "n_steps"]],
                                     {"pearson_r": fmt_r, "n_steps": fmt_int},
                                     ["Model", "Workload", "Pearson r", "n_steps"])])


def analysis_section(fi: FindingsInput) -> str:
    points = []
    pp = _phase(fi.breakdown, "pure_prefill")
    r_pp = _pure_row(fi.pure, "pure_prefill", "prefill_gemm_us")
    if math.isnan(r_pp["pearson_r"]):
        points.append(f"**Pure-prefill correlations are not computable.** The subset has "
                      f"{fmt_int(r_pp['n_steps'])} usable step(s); the design assumed pure-phase "
                      f"batches would be common, which continuous batching with chunked prefill "
                      f"does not produce.")
    else:
        points.append(f"**Pure-prefill steps exist in usable number here** "
                      f"({fmt_int(pp['steps'])}); prefill GEMM reaches r = {fmt_r(r_pp['pearson_r'])}"
                      f" on them.")
    r_da = _pure_row(fi.pure, "pure_decode", "decode_attn_us")
    r_dg = _pure_row(fi.pure, "pure_decode", "decode_gemm_us")
    r_db = _pure_row(fi.pure, "pure_decode", "batch.decode_tokens (baseline)")
    pd_ = _phase(fi.breakdown, "pure_decode")
    if math.isnan(r_da["pearson_r"]):
        points.append(f"**Decode attention is N/A.** In seed mode it is identically 0 (no "
                      f"per-request context lengths), so it has no variance — on the "
                      f"{fmt_pct(pd_['pct'])} of steps that are pure decode, the component that "
                      f"grows with every request's KV length is missing.")
    points.append(f"**Decode GEMM reaches r = {fmt_r(r_dg['pearson_r'])} on pure-decode steps**, "
                  f"against r = {fmt_r(r_db['pearson_r'])} for the raw decode-token count. Within "
                  f"one experiment decode GEMM FLOPs are a constant times the token count, so it "
                  f"can add nothing beyond the baseline except the scaling between models when "
                  f"experiments are pooled.")
    total = fi.per_experiment[fi.per_experiment["component"] == "total_analytical_us"]
    by_workload = total.groupby("workload")["pearson_r"].mean().dropna().sort_values(ascending=False)
    if len(by_workload) > 1:
        listing = ", ".join(f"{w} {r:.3f}" for w, r in by_workload.items())
        points.append(f"**Signal differs by workload.** Mean per-experiment r of the total "
                      f"estimate: {listing}. Workloads with long outputs and contexts spend more "
                      f"of each step in attention over the KV cache, which seed mode does not "
                      f"model.")
    r_all = _pure_row(fi.pure, "all", "total_analytical_us")["pearson_r"]
    med = total["pearson_r"].median()
    if not (math.isnan(r_all) or math.isnan(med)):
        points.append(f"**Pooling hides structure.** Over all steps r = {fmt_r(r_all)}, while the "
                      f"median experiment reaches {med:.3f}: the pooled fit mixes models whose "
                      f"fixed per-step costs differ.")
    return "## Analysis\n\n" + "\n".join(f"{i}. {p}" for i, p in enumerate(points, start=1))


def verdict_section(fi: FindingsInput) -> str:
    v = fi.verdict
    table = v.table.assign(passed=v.table["passed"].map({True: "yes", False: "no"}))
    reasons = []
    na = v.table[v.table["pearson_r"].isna()]
    if len(na):
        reasons.append("N/A for " + ", ".join(f"{r.component} on {r.subset} (n={r.n_steps})"
                                              for r in na.itertuples()))
    below = v.table[v.table["pearson_r"].notna() & ~v.table["passed"]]
    if len(below):
        reasons.append("below the threshold for " + ", ".join(
            f"{r.component} on {r.subset} (r={r.pearson_r:.3f})" for r in below.itertuples()))
    why = ("; ".join(reasons) + ".") if reasons else ""
    return "\n".join(["## Verdict", "",
                      f"**The formal hypothesis is {v.label.lower()}** in seed mode: "
                      f"{v.passing} of {len(v.table)} criteria reach r > {R_THRESHOLD} "
                      f"(at least {v.required} needed). {why}", "",
                      markdown_table(table, {"pearson_r": fmt_r, "n_steps": fmt_int},
                                     ["Subset", "Component", "Pearson r", "n_steps", "r > 0.8"])])


def findings_markdown(fi: FindingsInput) -> str:
    status = "Supported" if fi.verdict.supported else "Not Supported"
    head = "\n".join(["# Analytical Component Decomposition of vLLM Step Time — FINDINGS", "",
                      f"**Status (seed mode):** {status} (formal criteria)  ",
                      f"**Generated by:** `make report` from `{fi.data_root}`"])
    sections = [head, summary_section(fi), setup_section(fi), phase_section(fi),
                pure_phase_section(fi), per_experiment_section(fi), analysis_section(fi),
                *fi.extra_sections, verdict_section(fi)]
    return "\n\n".join(sections) + "\n"


def models_by_hf_id(steps: pd.DataFrame) -> dict[str, list[str]]:
    pairs = steps[["hf_id", "model"]].drop_duplicates()
    return {h: sorted(g["model"]) for h, g in pairs.groupby("hf_id")}


def collect(dirs: "RunDirs", hardware: str = "h100-sxm") -> FindingsInput:
    """Read the artefacts of notebooks 01–05 from a run directory into a FindingsInput."""
    from . import outputs
    from .specs import load_gpu_spec, load_model_specs
    from .stats import hypothesis_verdict

    steps = outputs.read_steps(dirs)
    meta = outputs.read_dataset_meta(dirs)
    pure = outputs.read_table(dirs, "pure_phase_correlations", "04_correlation")
    return FindingsInput(
        data_root=meta["data_root"], experiments=meta["experiments"],
        skipped=[tuple(s) for s in meta["skipped"]], parse_report=outputs.read_parse_report(dirs),
        breakdown=outputs.read_table(dirs, "phase_breakdown", "03_phases"), pure=pure,
        per_experiment=outputs.read_table(dirs, "per_experiment_correlations", "04_correlation"),
        verdict=hypothesis_verdict(pure), gpu=load_gpu_spec(hardware),
        specs=load_model_specs(steps["hf_id"]), models_by_hf_id=models_by_hf_id(steps))
