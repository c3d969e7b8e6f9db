"""FINDINGS.md: the seed study's sections, filled from the computed tables.

Every number in the text comes from a table passed in; the sentences are templates whose
branches depend on the data (e.g. whether pure-prefill steps are too few for an r).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
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
                      f"estimate: {listing}. Seed mode cannot say why: the component that grows "
                      f"with context length (decode attention) is 0 in it; the physical mode "
                      f"tests whether it is what the weaker workloads miss.")
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
    """Read the artefacts of notebooks 01–05 from a run directory into a FindingsInput.

    When the physical tables (``PHYSICAL_TABLES``; at least physical_pure_phase_correlations
    and physical_per_experiment_correlations) are in dirs.tables, their physical_section is
    appended to ``extra_sections``; without them the result is the seed-only one."""
    from . import outputs
    from .specs import load_gpu_spec, load_model_specs
    from .stats import hypothesis_verdict

    steps = outputs.read_steps(dirs)
    meta = outputs.read_dataset_meta(dirs)
    pure = outputs.read_table(dirs, "pure_phase_correlations", "04_correlation")
    verdict = hypothesis_verdict(pure)
    physical = physical_section_from_tables(dirs, seed_verdict=verdict, seed_pure=pure)
    fi = FindingsInput(
        data_root=meta["data_root"], experiments=meta["experiments"],
        skipped=[tuple(s) for s in meta["skipped"]], parse_report=outputs.read_parse_report(dirs),
        breakdown=outputs.read_table(dirs, "phase_breakdown", "03_phases"), pure=pure,
        per_experiment=outputs.read_table(dirs, "per_experiment_correlations", "04_correlation"),
        verdict=verdict, gpu=load_gpu_spec(hardware),
        specs=load_model_specs(steps["hf_id"]), models_by_hf_id=models_by_hf_id(steps),
        extra_sections=[physical] if physical is not None else [])
    if meta["data_root"] == display_path(RAW_DIR):
        fi.extra_sections.append(published_comparison_section(fi, load_published()))
    return fi


# =========================================================================== physical mode

#: The physical-mode tables collect() looks for in dirs.tables (CSV names without suffix).
#: A lower-bound violation on at least this fraction of an experiment's steps is material:
#: its durations as a whole cannot be read as GPU execution time.
LOWER_BOUND_MATERIAL = 0.01
PHYSICAL_TABLES = ["physical_pure_phase_correlations", "physical_per_experiment_correlations",
                   "nnls_fit", "lower_bound_check", "reconstruction_report"]
_PHYS_NAMES = {"phys_prefill_gemm_us": "prefill GEMM", "phys_prefill_attn_us": "prefill attention",
               "phys_decode_gemm_us": "decode GEMM", "phys_decode_attn_us": "decode attention",
               "phys_total_us": "physical total"}
_NNLS_COMPONENTS = [("prefill_gemm", "prefill GEMM"), ("prefill_attn", "prefill attention"),
                    ("decode_gemm", "decode GEMM"), ("decode_attn", "decode attention")]


def _isnan(x: object) -> bool:
    try:
        return x is None or math.isnan(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def fmt_ci(low: float, high: float) -> str:
    """A bootstrap interval as [low, high] with 3 decimals, N/A when missing."""
    return "N/A" if _isnan(low) or _isnan(high) else f"[{low:.3f}, {high:.3f}]"


def fmt_r3(r: float) -> str:
    return "N/A" if _isnan(r) else f"{r:.3f}"


def fmt_num(x: float, digits: int = 3) -> str:
    """A coefficient: ``digits`` significant digits (N/A when missing)."""
    return "N/A" if _isnan(x) else f"{x:.{digits}g}"


def fmt_us(x: float) -> str:
    return "N/A" if _isnan(x) else f"{x:,.0f}"


def fmt_frac(x: float) -> str:
    """A fraction in [0, 1] shown as a percentage (fmt_pct's digits)."""
    return "N/A" if _isnan(x) else fmt_pct(100.0 * float(x))


def fmt_share(x: float) -> str:
    """A signed share (fraction) as a percentage with 3 significant digits."""
    if _isnan(x):
        return "N/A"
    return "0%" if x == 0 else f"{100.0 * float(x):.3g}%"


def _as_bool(s: pd.Series) -> pd.Series:
    """Booleans that survived a CSV round trip (True/False or 'True'/'False')."""
    if s.dtype == bool:
        return s
    return s.astype(str).str.strip().str.lower().isin(["true", "1", "yes"])


def _comp_name(c: str) -> str:
    return _PHYS_NAMES.get(c, c)


def _exp_label(row: pd.Series) -> str:
    return f"{row['model']}, {row['workload']}"


def _listing(frame: pd.DataFrame, value: Callable[[pd.Series], str]) -> str:
    return "; ".join(f"{_exp_label(r)} ({value(r)})" for _, r in frame.iterrows())


def _journey_part(per_experiment: pd.DataFrame, reconstruction: pd.DataFrame | None) -> str:
    if reconstruction is not None and "has_journeys" in reconstruction:
        rec = reconstruction.assign(has_journeys=_as_bool(reconstruction["has_journeys"]))
        labels = per_experiment.set_index("experiment_id")[["model", "workload"]]
        rec = rec.join(labels, on="experiment_id")
        rec["model"] = rec["model"].fillna(rec["experiment_id"])
        rec["workload"] = rec["workload"].fillna("?")
        without = rec[~rec["has_journeys"]]
        with_j = rec[rec["has_journeys"]]
    elif "journey_coverage" in per_experiment and per_experiment["journey_coverage"].notna().any():
        rec = per_experiment
        without = rec[rec["journey_coverage"].fillna(0) == 0]
        with_j = rec[rec["journey_coverage"].fillna(0) > 0]
    else:
        return ("Journey coverage is unknown (no reconstruction report and no "
                "phys_attn_from_journeys column).")
    lines = [f"{len(with_j)} of {len(rec)} experiments carry request-journey events, from which "
             f"each step's decode contexts and prefill chunks are rebuilt."]
    if len(without):
        lines.append(f"**Without journeys ({len(without)}):** "
                     + "; ".join(_exp_label(r) for _, r in without.iterrows())
                     + ". There the physical decode attention is unavailable (NaN), so their "
                       "decode steps have no physical total: they drop out of the physical "
                       "correlations and the NNLS fit, and prefill attention falls back to the "
                       "batch-level estimate (all prefill tokens of a step as one chunk).")
    else:
        lines.append("No experiment lacks journeys: decode attention is computed everywhere.")
    if "agreement" in with_j and with_j["agreement"].notna().any():
        a = with_j.dropna(subset=["agreement"])
        worst = a.loc[a["agreement"].idxmin()]
        lines.append(f"The rebuilt batches match the recorded decode-request and prefill-token "
                     f"counts on a median {fmt_frac(a['agreement'].median())} of sampled steps "
                     f"per experiment (lowest: {fmt_frac(worst['agreement'])}, "
                     f"{_exp_label(worst)}).")
    return " ".join(lines)


def _lower_bound_part(lb: pd.DataFrame) -> str:
    flagged = lb[_as_bool(lb["flagged"])] if "flagged" in lb else lb[lb["n_below"] > 0]
    table = lb.sort_values(["fraction_below", "model", "workload"], ascending=[False, True, True])
    cols = ["model", "workload", "n_steps", "n_below", "fraction_below", "lower_bound_us",
            "median_ratio"]
    cols = [c for c in cols if c in table]
    heads = {"model": "Model", "workload": "Workload", "n_steps": "Steps", "n_below": "Below bound",
             "fraction_below": "Fraction below", "lower_bound_us": "HBM lower bound (µs)",
             "median_ratio": "Median observed / bound"}
    total_n, total_below = int(lb["n_steps"].sum()), int(lb["n_below"].sum())
    if len(flagged):
        worst = flagged.sort_values("fraction_below", ascending=False)
        text = (f"**{len(flagged)} of {len(lb)} experiments have steps shorter than the HBM "
                f"lower bound** ({fmt_int(total_below)} of {fmt_int(total_n)} steps overall): "
                + _listing(worst, lambda r: f"{fmt_frac(r['fraction_below'])} of "
                                            f"{fmt_int(r['n_steps'])} steps")
                + ". Reading every layer weight once takes at least the bound, so such a step "
                  "cannot be GPU execution time: for it `step.duration_us` measures something "
                  "else (for example a CPU-side scheduling interval while the GPU runs "
                  "asynchronously). ")
        top = float(flagged["fraction_below"].max())
        if top >= LOWER_BOUND_MATERIAL:
            text += (f"With up to {fmt_frac(top)} of an experiment's steps below the bound, the "
                     f"duration of the flagged experiments cannot be read as GPU time, and no "
                     f"GPU cost model can explain it there.")
        else:
            text += (f"The fractions are small (at most {fmt_frac(top)}), so the bulk of these "
                     f"experiments' durations stay plausible; the exceptions are isolated steps "
                     f"(for MoE models the bound assumes every expert is read, which a batch of "
                     f"a few tokens need not do).")
    else:
        text = (f"No step of any experiment is shorter than its HBM lower bound "
                f"({fmt_int(total_n)} steps checked): the durations are physically plausible "
                f"as GPU execution time.")
    return "\n".join([
        "### Physical Plausibility: the HBM Lower Bound", "",
        "A step with tokens must at least stream its GPU's share of the transformer-layer "
        "weights from HBM once (`phys_lower_bound_us`).", "",
        markdown_table(table[cols], {"n_steps": fmt_int, "n_below": fmt_int,
                                     "fraction_below": fmt_frac, "lower_bound_us": fmt_us,
                                     "median_ratio": lambda x: fmt_num(x, 3)},
                       [heads[c] for c in cols]), "", text])


def _subset_n(pure: pd.DataFrame, subset: str) -> int:
    n = pure.loc[pure["subset"] == subset, "n_steps"]
    return int(n.max()) if len(n) and n.notna().any() else 0


def _verdict_part(pure: pd.DataFrame, seed_verdict: Verdict | None) -> tuple[str, Verdict, Verdict]:
    from .stats import physical_verdict

    v_pure = physical_verdict(pure)
    v_dom = physical_verdict(pure, "prefill_dominated")
    table = pure.assign(component=pure["component"].map(lambda c: f"{c}"),
                        ci=[fmt_ci(a, b) for a, b in zip(pure["ci_low"], pure["ci_high"])])
    cols = ["subset", "component", "pearson_r", "ci", "spearman_r", "loglog_r", "n_steps"]
    n_pp, n_dom = _subset_n(pure, "pure_prefill"), _subset_n(pure, "prefill_dominated")

    def crit(v: Verdict) -> str:
        return ", ".join(f"{_comp_name(r.component)} on {r.subset} "
                         f"{'r = ' + fmt_r3(r.pearson_r) if not _isnan(r.pearson_r) else 'N/A'}"
                         f"{' (passes)' if r.passed else ''}"
                         for r in v.table.itertuples())

    lines = [
        f"**Physical verdict (pure-phase subsets, the seed's criterion):** {v_pure.passing} of "
        f"{len(v_pure.table)} components reach r > {R_THRESHOLD} (at least {v_pure.required} "
        f"needed): **{v_pure.label}** — {crit(v_pure)}.",
        "",
        f"**Alternative with prefill-dominated steps** (physical time ≥ 90% prefill; "
        f"{fmt_int(n_dom)} usable steps against {fmt_int(n_pp)} pure-prefill "
        f"{'one' if n_pp == 1 else 'ones'}): "
        f"{v_dom.passing} of {len(v_dom.table)} reach r > {R_THRESHOLD}: **{v_dom.label}** — "
        f"{crit(v_dom)}.",
    ]
    if seed_verdict is not None:
        change = ("the same count" if seed_verdict.passing == v_pure.passing else
                  "more" if v_pure.passing > seed_verdict.passing else "fewer")
        lines += ["", f"Seed mode passes {seed_verdict.passing} of {len(seed_verdict.table)} "
                      f"criteria ({seed_verdict.label}); physical mode passes {v_pure.passing} "
                      f"({change})."]
    body = "\n".join([
        "### Re-tested Hypothesis: Physical Components", "",
        "Pearson r with a bootstrap 95% interval (percentile bootstrap over steps; large pooled "
        "subsets use a capped, rescaled resample), Spearman rank r and the Pearson r of log "
        "durations (on steps where the component is > 0) beside it, because durations span "
        "orders of magnitude and a few long steps can carry a Pearson r alone.", "",
        markdown_table(table[cols], {"pearson_r": fmt_r, "spearman_r": fmt_r, "loglog_r": fmt_r,
                                     "n_steps": fmt_int},
                       ["Subset", "Component", "Pearson r", "95% CI", "Spearman r", "log-log r",
                        "n_steps"]), "", *lines])
    return body, v_pure, v_dom


def _per_experiment_part(per: pd.DataFrame) -> str:
    t = per.sort_values("seed_pearson_r", ascending=False, na_position="last")
    t = t.assign(ci=[fmt_ci(a, b) for a, b in zip(t["phys_ci_low"], t["phys_ci_high"])],
                 delta=t["delta_r"].map(lambda d: "N/A" if _isnan(d) else f"{d:+.3f}"))
    cols = ["model", "workload", "seed_pearson_r", "phys_pearson_r", "ci", "delta",
            "phys_spearman_r", "phys_loglog_r", "phys_n_steps"]
    table = markdown_table(t[cols], {"seed_pearson_r": fmt_r, "phys_pearson_r": fmt_r,
                                     "phys_spearman_r": fmt_r, "phys_loglog_r": fmt_r,
                                     "phys_n_steps": fmt_int},
                           ["Model", "Workload", "Seed r", "Physical r", "Physical 95% CI",
                            "Δr", "Physical Spearman", "Physical log-log r", "n_steps (physical)"])
    both = per.dropna(subset=["seed_pearson_r", "phys_pearson_r"])
    lines = []
    if len(both):
        up = both[both["delta_r"] > 0]
        sig_up = both[both["phys_ci_low"] > both["seed_pearson_r"]]
        sig_down = both[both["phys_ci_high"] < both["seed_pearson_r"]]
        lines.append(f"Where both are computable ({len(both)} of {len(per)} experiments) the "
                     f"physical total correlates better than the seed total in {len(up)}; its "
                     f"95% interval lies wholly above the seed's r in {len(sig_up)} and wholly "
                     f"below in {len(sig_down)}. Median r: seed "
                     f"{fmt_r3(both['seed_pearson_r'].median())}, physical "
                     f"{fmt_r3(both['phys_pearson_r'].median())}.")
        best, worst = both.loc[both["delta_r"].idxmax()], both.loc[both["delta_r"].idxmin()]
        if best["delta_r"] > 0:
            lines.append(f"The largest gain is {_exp_label(best)} ({fmt_r3(best['seed_pearson_r'])}"
                         f" → {fmt_r3(best['phys_pearson_r'])}).")
        if worst["delta_r"] < 0:
            lines.append(f"The largest loss is {_exp_label(worst)} "
                         f"({fmt_r3(worst['seed_pearson_r'])} → {fmt_r3(worst['phys_pearson_r'])}).")
        n_seed = int((per["seed_pearson_r"] > R_THRESHOLD).sum())
        n_phys = int((per["phys_pearson_r"] > R_THRESHOLD).sum())
        lines.append(f"Experiments above r = {R_THRESHOLD}: {n_seed} in seed mode, {n_phys} in "
                     f"physical mode.")
        gap = (both["phys_spearman_r"] - both["phys_pearson_r"]).median()
        if not _isnan(gap) and abs(gap) >= 0.1:
            lines.append(f"The physical Spearman r is a median {gap:+.3f} away from Pearson's: the "
                         f"linear r is {'held down by' if gap > 0 else 'carried by'} a few "
                         f"extreme steps, so the rank order and the Pearson value tell different "
                         f"stories here.")
    na_phys = per[per["phys_pearson_r"].isna()]
    if len(na_phys):
        lines.append(f"Physical r is N/A for {len(na_phys)} experiment(s): "
                     + _listing(na_phys, lambda r: f"{fmt_int(r['phys_n_steps'])} usable steps")
                     + ".")
    return "\n".join(["### Seed vs Physical, per Experiment", "", table, "", " ".join(lines)])


def _nnls_part(nnls: pd.DataFrame) -> str:
    comps = [(k, name) for k, name in _NNLS_COMPONENTS if f"coef_{k}" in nnls]
    t = nnls.sort_values(["model", "workload"])
    cols = ["model", "workload", "n_steps", "intercept_us",
            *[f"coef_{k}" for k, _ in comps], *[f"share_{k}" for k, _ in comps], "r2"]
    fmts: dict[str, Callable[[object], str]] = {"n_steps": fmt_int, "intercept_us": fmt_us,
                                                "r2": lambda x: fmt_num(x, 3)}
    fmts.update({f"coef_{k}": (lambda x: fmt_num(x, 3)) for k, _ in comps})
    fmts.update({f"share_{k}": fmt_share for k, _ in comps})
    heads = ["Model", "Workload", "n_steps", "Intercept (µs)",
             *[f"coef {name}" for _, name in comps], *[f"share {name}" for _, name in comps], "R²"]
    lines = []
    fitted = nnls.dropna(subset=["r2"])
    if len(fitted):
        lines.append(f"The fit reaches a median R² of {fmt_num(fitted['r2'].median(), 3)} "
                     f"(range {fmt_num(fitted['r2'].min(), 3)}–{fmt_num(fitted['r2'].max(), 3)}) "
                     f"over {len(fitted)} experiments, with a median intercept of "
                     f"{fmt_us(fitted['intercept_us'].median())} µs per step — time that none of "
                     f"the four components accounts for.")
        eff = []
        for k, name in comps:
            c = fitted[f"coef_{k}"].dropna()
            if len(c):
                zero = int((c == 0).sum())
                eff.append(f"{name} {fmt_num(c.median(), 3)}"
                           + (f" (0 in {zero} of {len(c)})" if zero else ""))
        if eff:
            lines.append("Median coefficients (observed µs per estimated µs; 1 = the roofline "
                         "estimate is the time): " + ", ".join(eff) + ".")
        shares = fitted[[f"share_{k}" for k, _ in comps]]
        lead = shares.idxmax(axis=1, skipna=True).dropna().map(lambda s: s.removeprefix("share_"))
        counts = lead.value_counts()
        if len(counts):
            names = dict(comps)
            lines.append("The component with the largest share of the explained variance: "
                         + ", ".join(f"{names.get(k, k)} in {n} experiment(s)"
                                     for k, n in counts.items()) + ".")
        coef_cols = [f"coef_{k}" for k, _ in comps]
        odd = fitted[((fitted[coef_cols] == 0) | (fitted[coef_cols] > 10)).any(axis=1)]
        if len(odd):
            lines.append(f"In {len(odd)} experiment(s) a coefficient is 0 or above 10: there the "
                         f"fit cannot separate that component from the others (they move "
                         f"together within the experiment), so the coefficient is not an "
                         f"efficiency — read the shares and R² instead.")
    not_fitted = nnls[nnls["r2"].isna()]
    if len(not_fitted):
        lines.append(f"No fit for {len(not_fitted)} experiment(s) (fewer than {MIN_ROWS} steps "
                     f"with every component known): "
                     + "; ".join(_exp_label(r) for _, r in not_fitted.iterrows()) + ".")
    return "\n".join([
        "### Non-Negative Least Squares per Experiment", "",
        "step.duration_us ≈ intercept + Σ coef · component time, with every coefficient and "
        "the intercept ≥ 0. A coefficient is an effective efficiency (observed µs per "
        "estimated µs); a component's share is coef · cov(component, fit) / var(fit), its "
        "part of the explained variance (shares sum to 100%; share × R² is its part of the "
        "variance of the duration).", "",
        markdown_table(t[cols], fmts, heads), "", " ".join(lines)])


def _differences_part(pure: pd.DataFrame, per: pd.DataFrame, lb: pd.DataFrame | None,
                      seed_pure: pd.DataFrame | None, v_pure: Verdict, v_dom: Verdict) -> str:
    def r_of(table: pd.DataFrame | None, subset: str, component: str) -> float:
        if table is None:
            return float("nan")
        row = table[(table["subset"] == subset) & (table["component"] == component)]
        return float(row["pearson_r"].iloc[0]) if len(row) else float("nan")

    points = []
    da = r_of(pure, "pure_decode", "phys_decode_attn_us")
    if _isnan(da):
        points.append("**Decode attention is still N/A** on pure-decode steps: no experiment "
                      "provides the per-request context lengths it needs (journeys).")
    else:
        points.append(f"**Decode attention now exists.** Seed mode sets it to 0 (r N/A); with "
                      f"each request's context rebuilt from the journeys it reaches r = "
                      f"{fmt_r3(da)} on pure-decode steps"
                      + (", a strong signal on its own." if da > R_THRESHOLD else
                         " — it varies with the context lengths, but on its own it does not "
                         "track the duration closely." if da >= 0 else
                         " — negative: steps with more attention work are, on average, "
                         "shorter here, so on its own it does not explain the duration."))
    dg_seed, dg_phys = r_of(seed_pure, "pure_decode", "decode_gemm_us"), r_of(
        pure, "pure_decode", "phys_decode_gemm_us")
    if not _isnan(dg_phys):
        seed_txt = f" (seed: {fmt_r3(dg_seed)})" if not _isnan(dg_seed) else ""
        if _isnan(dg_seed) or abs(dg_phys - dg_seed) < 0.02:
            change = "about as well as the seed's FLOP count"
        elif dg_phys > dg_seed:
            change = "better than the seed's FLOP count"
        else:
            change = "less well than the seed's FLOP count"
        points.append(f"**Decode is priced as memory-bound.** The physical decode GEMM time is "
                      f"the larger of its FLOP time and the time to read the weights, which "
                      f"for small decode batches is the weight read: a floor that depends on "
                      f"the model and tp, not on the number of decode tokens. On pure-decode "
                      f"steps it reaches r = {fmt_r3(dg_phys)}{seed_txt}, tracking the "
                      f"duration {change}; pooled over experiments such a floor mostly "
                      f"separates models, and within one experiment it barely varies.")
    pp_n, dom_n = _subset_n(pure, "pure_prefill"), _subset_n(pure, "prefill_dominated")
    if v_dom.passing != v_pure.passing or dom_n > pp_n:
        points.append(f"**Prefill-dominated steps widen the prefill test** from "
                      f"{fmt_int(pp_n)} pure-prefill step{'' if pp_n == 1 else 's'} to "
                      f"{fmt_int(dom_n)}; the criterion "
                      f"passes {v_pure.passing} of 4 on pure phases and {v_dom.passing} of 4 "
                      f"with the wider prefill subset.")
    both = per.dropna(subset=["seed_pearson_r", "phys_pearson_r"])
    if len(both):
        med = both["delta_r"].median()
        points.append(f"**Per experiment, the physical total changes r by a median "
                      f"{med:+.3f}.** "
                      + ("The physical model adds structure the seed lacked (attention over "
                         "real contexts, the memory-bound floor, the corrected MoE factor)."
                         if med > 0.02 else
                         "The seed total already tracked the duration about as well: within one "
                         "experiment both estimates grow with the batch's tokens, and a "
                         "correlation ignores the absolute scale the physical model corrects."
                         if med > -0.02 else
                         "The physical estimate tracks the observed duration less well than the "
                         "seed's FLOP count: the observed duration does not follow the "
                         "roofline's memory floor."))
        by_model = both.groupby("model")["delta_r"].median().sort_values(ascending=False)
        if len(by_model) > 1 and by_model.max() - by_model.min() >= 0.05:
            worse = by_model[by_model < -0.02]
            text = ("The change depends on the model (median Δr): "
                    + ", ".join(f"{m} {d:+.3f}" for m, d in by_model.items()) + ".")
            if len(worse) and lb is not None:
                fl = lb[_as_bool(lb["flagged"])] if "flagged" in lb else lb[lb["n_below"] > 0]
                also = sorted(set(worse.index) & set(fl["model"]))
                if also:
                    text += (f" {', '.join(also)}, where the physical estimate loses, "
                             f"{'is' if len(also) == 1 else 'are'} also flagged by the "
                             f"plausibility check: the physical model puts a weight-read floor "
                             f"under every step that the observed durations do not always "
                             f"respect.")
            points[-1] += " " + text
    if lb is not None:
        flagged = lb[_as_bool(lb["flagged"])] if "flagged" in lb else lb[lb["n_below"] > 0]
        material = flagged[flagged["fraction_below"] >= LOWER_BOUND_MATERIAL]
        if len(material):
            points.append(f"**{len(material)} experiment(s) fail the plausibility check** "
                          f"(at least {fmt_frac(LOWER_BOUND_MATERIAL)} of steps below the HBM "
                          f"lower bound: " + _listing(material, lambda r: fmt_frac(
                              r["fraction_below"])) + "). Their correlations, seed or physical, "
                          f"relate FLOPs to a duration that is not GPU execution time and "
                          f"should not be read as a test of the decomposition.")
        elif len(flagged):
            points.append(f"**{len(flagged)} experiment(s) have isolated steps below the HBM "
                          f"lower bound** (at most {fmt_frac(flagged['fraction_below'].max())}"
                          f" of their steps): too few to move their correlations, but each "
                          f"marks a duration that is not GPU execution time.")
    return "### What Differs and Why\n\n" + "\n".join(
        f"{i}. {p}" for i, p in enumerate(points, start=1))


def physical_section(pure: pd.DataFrame, per_experiment: pd.DataFrame,
                     nnls: pd.DataFrame | None = None, lower_bound: pd.DataFrame | None = None,
                     reconstruction: pd.DataFrame | None = None,
                     seed_verdict: Verdict | None = None,
                     seed_pure: pd.DataFrame | None = None) -> str:
    """"## Beyond the Seed: Physical Mode" as markdown, from the physical tables:

    ``pure`` (stats.physical_pure_phase_correlations), ``per_experiment``
    (stats.physical_per_experiment_correlations), ``nnls`` (stats.nnls_fit), ``lower_bound``
    (stats.lower_bound_check), ``reconstruction`` (the report of
    reconstruct.attach_reconstruction), the seed's Verdict and pure-phase table for the
    comparison. Optional tables that are None leave their subsection out. Every number comes
    from these tables; the sentences branch on the data.
    """
    verdict_body, v_pure, v_dom = _verdict_part(pure, seed_verdict)
    parts = [
        "## Beyond the Seed: Physical Mode", "",
        "The physical mode fixes the seed's known flaws: the MoE MLP counts num_experts_per_tok "
        "experts per token (the seed counted num_experts_per_tok / num_local_experts of one); "
        "prefill attention runs per chunk against the request's already computed context; "
        "decode attention reads each request's whole KV cache; every component's time is a "
        "roofline, max(FLOPs / peak, bytes / HBM bandwidth), so memory-bound decode is priced "
        "by the bytes it moves; the tensor-parallel all-reduce and the LM head are added; and "
        "an HBM lower bound checks that a duration can be GPU time at all. `phys_total_us` is "
        "the sum of all six component times.", "",
        "### Journey Coverage", "", _journey_part(per_experiment, reconstruction),
    ]
    if lower_bound is not None:
        parts += ["", _lower_bound_part(lower_bound)]
    parts += ["", verdict_body, "", _per_experiment_part(per_experiment)]
    if nnls is not None:
        parts += ["", _nnls_part(nnls)]
    parts += ["", _differences_part(pure, per_experiment, lower_bound, seed_pure, v_pure, v_dom)]
    return "\n".join(parts)


def physical_section_from_tables(dirs: "RunDirs", seed_verdict: Verdict | None = None,
                                 seed_pure: pd.DataFrame | None = None) -> str | None:
    """physical_section from the CSVs in dirs.tables, or None when the physical pure-phase
    and per-experiment tables are not there (a seed-only run). The other tables are optional."""
    paths = {name: dirs.tables / f"{name}.csv" for name in PHYSICAL_TABLES}
    if not (paths["physical_pure_phase_correlations"].is_file()
            and paths["physical_per_experiment_correlations"].is_file()):
        return None
    read = {name: pd.read_csv(p) if p.is_file() else None for name, p in paths.items()}
    return physical_section(read["physical_pure_phase_correlations"],
                            read["physical_per_experiment_correlations"], nnls=read["nnls_fit"],
                            lower_bound=read["lower_bound_check"],
                            reconstruction=read["reconstruction_report"],
                            seed_verdict=seed_verdict, seed_pure=seed_pure)


# =========================================================================== the published study

def load_published(path: Path | None = None) -> dict:
    """The seed study's published numbers (data/seed_published.json)."""
    import json

    from .paths import DATA_DIR

    return json.loads((path or DATA_DIR / "seed_published.json").read_text())


def published_comparison(fi: FindingsInput, published: dict) -> pd.DataFrame:
    """metric, published, this_data: the study's headline numbers beside the analysed data's."""
    bd = fi.breakdown.set_index("phase")
    total_pub = published["total_steps"]
    rows = [("steps", total_pub, int(bd["steps"].sum()))]
    for phase, n in published["phase_breakdown"].items():
        rows.append((f"{phase} share (%)", 100 * n / total_pub, float(bd.loc[phase, "pct"])))
    pure = fi.pure.set_index(["subset", "component"])["pearson_r"]
    for key, r in published["pure_phase_r"].items():
        subset, component = key.split("/", 1)
        rows.append((f"r, {component} on {subset}", r, float(pure.get((subset, component), math.nan))))
    total = fi.per_experiment[fi.per_experiment["component"] == "total_analytical_us"]
    ours = {f"{m}/{w}": r for m, w, r in zip(total["model"], total["workload"], total["pearson_r"])}
    common = [k for k in published["per_experiment_total_r"] if k in ours]
    if common:
        pub = [published["per_experiment_total_r"][k] for k in common]
        mine = [ours[k] for k in common]
        rows.append(("median per-experiment r of total_analytical_us", float(pd.Series(pub).median()),
                     float(pd.Series(mine).median())))
        rank = pd.Series(pub).corr(pd.Series(mine), method="spearman")
        rows.append(("rank agreement of per-experiment r (Spearman)", math.nan, float(rank)))
    rows.append(("hypothesis criteria passing", published["hypothesis_passing"], fi.verdict.passing))
    return pd.DataFrame(rows, columns=["metric", "published", "this_data"])


def published_comparison_section(fi: FindingsInput, published: dict) -> str:
    """Where the analysed (generated) data and the study's published numbers agree or differ."""
    t = published_comparison(fi, published)
    get = t.set_index("metric")["this_data"]
    pub = t.set_index("metric")["published"]
    agree, differ = [], []
    pp_ours, pp_pub = get["pure_prefill share (%)"], pub["pure_prefill share (%)"]
    if pp_ours < 1:
        agree.append(f"pure-prefill steps are almost absent ({fmt_pct(pp_ours)} here, "
                     f"{fmt_pct(pp_pub)} published): with chunked prefill, prefill chunks ride "
                     f"in batches that already decode")
    else:
        differ.append(f"pure-prefill steps are {fmt_pct(pp_ours)} of steps here against "
                      f"{fmt_pct(pp_pub)} published")
    pd_ours, pd_pub = get["pure_decode share (%)"], pub["pure_decode share (%)"]
    (agree if abs(pd_ours - pd_pub) < 10 else differ).append(
        f"pure-decode steps are {fmt_pct(pd_ours)} of steps ({fmt_pct(pd_pub)} published)")
    r_ours = get["r, decode_gemm_us on pure_decode"]
    r_pub = pub["r, decode_gemm_us on pure_decode"]
    if not math.isnan(r_ours):
        (agree if abs(r_ours - r_pub) < 0.15 else differ).append(
            f"decode GEMM reaches r = {r_ours:.3f} on pure-decode steps ({r_pub:.3f} published)")
    key = "median per-experiment r of total_analytical_us"
    if key in get.index:
        (agree if abs(get[key] - pub[key]) < 0.15 else differ).append(
            f"the median per-experiment r of the seed total is {get[key]:.3f} "
            f"({pub[key]:.3f} published), and the per-experiment ranking agrees with the "
            f"published one at Spearman {get['rank agreement of per-experiment r (Spearman)']:.2f}")
    why = ("The replay's step time is a function of the batch alone — measured kernel latencies "
           "for its shapes, a fixed CPU overhead per step and 5 % multiplicative noise — so the "
           "structure of batching (how often steps are pure prefill, pure decode or mixed) is "
           "reproduced by the scheduler, while the unexplained variance of a real server "
           "(host-side scheduling, Python overhead, synchronisation, clock and GC pauses, "
           "interference) is absent. Correlations on generated traces are therefore an upper "
           "bound on what the same formulas reach on measured traces; the physical mode's "
           "question — which components the batch physics needs — is still answered by them, "
           "the size of the residual on real hardware is not.")
    parts = ["## Generated Data vs the Published Study", "",
             "The bundled traces are generated (see Setup). Beside the study's published numbers:",
             "", markdown_table(t, {"published": _fmt_cmp, "this_data": _fmt_cmp},
                                ["Metric", "Published study", "This data"]), ""]
    if agree:
        parts.append("**Agree:** " + "; ".join(agree) + ".")
    if differ:
        parts.append("")
        parts.append("**Differ:** " + "; ".join(differ) + ".")
    parts += ["", why]
    return "\n".join(parts)


def _fmt_cmp(x: object) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    x = float(x)  # type: ignore[arg-type]
    return f"{int(x):,}" if x.is_integer() and abs(x) >= 1 else f"{x:.4g}"
