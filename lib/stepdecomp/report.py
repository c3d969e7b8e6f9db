"""FINDINGS.md: the seed study's sections, filled from the computed tables.

The wording lives in Jinja templates (``templates/``: ``findings.md.j2`` lists the sections in
reading order, one ``_<name>.md.j2`` partial per section). This module only computes what they
show: each ``<name>_context`` function turns the tables into a plain dict (numbers, rows,
tables and the categories the sentences branch on), and :func:`render_section` fills a partial
with it. Thresholds the text mentions are passed to every template from the constants where
they are defined (:data:`TEMPLATE_CONSTANTS`); the templates never spell them out.

Adding a section: write ``templates/_<name>.md.j2`` (it reads its context as ``s``), write
``<name>_context(fi) -> dict`` here, register it in :data:`SECTION_CONTEXTS` and put
``{{ section("<name>", <name>) }}`` where it belongs in ``findings.md.j2``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import jinja2
import pandas as pd

from .experiments import short_name
from .paths import FIXTURE_ROOT, RAW_DIR, display_path

if TYPE_CHECKING:
    from .outputs import RunDirs
from .specs import GpuSpec, ModelSpec
from .stats import (HYPOTHESIS_MIN_PASSING, MIN_ROWS, PREFILL_DOMINATED_SHARE, R_THRESHOLD,
                    Verdict)

TEMPLATE_DIR = Path(__file__).parent / "templates"

# --------------------------------------------------------------------------- thresholds

#: The per-file accounting shown in Setup: lines = parsed + blank + malformed + ignored;
#: events = steps + journey events + rejected (load.ParseStats).
#: The seed's step time (schedule() CPU time on the instrumented server).
DURATION_TARGET = "step.duration_us"
PARSE_COLUMNS = ["experiment_id", "lines", "parsed_lines", "blank_lines", "malformed_lines",
                 "ignored_lines", "events", "steps", "journey_events", "rejected_events"]

#: A lower-bound violation on at least this fraction of an experiment's steps is material:
#: its durations as a whole cannot be read as GPU execution time.
LOWER_BOUND_MATERIAL = 0.01
#: An NNLS coefficient above this (or 0) means the fit could not separate that component.
NNLS_ODD_COEF = 10
#: Pure-prefill steps below this share (%) are "rare" in the phase breakdown.
RARE_PREFILL_PCT = 5
#: Pure-prefill steps below this share (%) count as "almost absent" beside the published study.
ABSENT_PREFILL_PCT = 1
#: Pure-decode shares closer than this (percentage points) agree with the published study.
SHARE_AGREE_POINTS = 10
#: Correlations closer than this agree with the published study.
R_AGREE = 0.15
#: A change of r smaller than this (either way) is "about the same".
DELTA_R_NEGLIGIBLE = 0.02
#: Per-model median Δr spread from which the change is said to depend on the model.
MODEL_SPREAD = 0.05
#: Median |Spearman − Pearson| from which the two are said to tell different stories.
RANK_GAP = 0.1

#: The constants every template sees by name (the text's thresholds come only from here).
TEMPLATE_CONSTANTS: dict[str, float] = {
    "R_THRESHOLD": R_THRESHOLD, "HYPOTHESIS_MIN_PASSING": HYPOTHESIS_MIN_PASSING,
    "MIN_ROWS": MIN_ROWS, "PREFILL_DOMINATED_SHARE": PREFILL_DOMINATED_SHARE,
    "LOWER_BOUND_MATERIAL": LOWER_BOUND_MATERIAL, "NNLS_ODD_COEF": NNLS_ODD_COEF}


# --------------------------------------------------------------------------- formatting

def _isnan(x: object) -> bool:
    try:
        return x is None or math.isnan(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def fmt_r(r: float) -> str:
    return "N/A" if r is None or (isinstance(r, float) and math.isnan(r)) else f"{r:.4f}"


def fmt_int(n: float) -> str:
    return f"{int(n):,}"


def fmt_pct(p: float) -> str:
    """Percent with enough digits to show small shares (0.005%) and 3 significant digits."""
    if p == 0:
        return "0%"
    return f"{p:.3g}%" if p >= 0.01 else f"{p:.1g}%"


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


def fmt_delta(d: float) -> str:
    """A signed change of r with 3 decimals (+0.250), N/A when missing."""
    return "N/A" if _isnan(d) else f"{d:+.3f}"


def fmt_f2(x: float) -> str:
    return f"{x:.2f}"


def fmt_f3(x: float) -> str:
    return f"{x:.3f}"


def fmt_g(x: float) -> str:
    return f"{x:g}"


def _fmt_cmp(x: object) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    x = float(x)  # type: ignore[arg-type]
    return f"{int(x):,}" if x.is_integer() and abs(x) >= 1 else f"{x:.4g}"


def markdown_table(frame: pd.DataFrame, formats: Mapping[str, Callable[[Any], str]] | None = None,
                   headers: Sequence[str] | Mapping[str, str] | None = None) -> str:
    """A markdown table of ``frame``; ``headers`` is a list in column order, or a mapping
    from column to header (for tables whose columns vary)."""
    formats = formats or {}
    if isinstance(headers, Mapping):
        headers = [headers[c] for c in frame.columns]
    headers = list(headers or frame.columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for _, row in frame.iterrows():
        cells = [formats.get(c, str)(row[c]) for c in frame.columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: Formatters, registered as Jinja filters and as globals (for markdown_table's formats).
FORMATTERS: dict[str, Callable[..., str]] = {
    "fmt_r": fmt_r, "fmt_int": fmt_int, "fmt_pct": fmt_pct, "fmt_ci": fmt_ci, "fmt_r3": fmt_r3,
    "fmt_num": fmt_num, "fmt_us": fmt_us, "fmt_frac": fmt_frac, "fmt_share": fmt_share,
    "fmt_delta": fmt_delta, "fmt_f2": fmt_f2, "fmt_f3": fmt_f3, "fmt_g": fmt_g,
    "fmt_cmp": _fmt_cmp}


# --------------------------------------------------------------------------- templates

def _collapse(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text).strip()


def _oneline(text: str) -> str:
    """``{{ x | oneline }}``: the lines of x joined by single spaces."""
    return _collapse(text)


def _para(text: str) -> str:
    """``{% filter para %}``: the block's lines joined into one output line (a paragraph)."""
    return _collapse(text) + "\n"


def _numbered(text: str) -> str:
    """``{% filter numbered %}``: blank-line separated items as a numbered list (empty items,
    e.g. of a false condition, are dropped)."""
    items = [p for p in (_collapse(b) for b in re.split(r"\n\s*\n", text)) if p]
    return "".join(f"{i}. {p}\n" for i, p in enumerate(items, start=1))


def _labels(mapping: Mapping[Any, str]) -> Callable[[Any], str]:
    """``{"col": names | labels}``: a markdown_table format that shows a value's label."""
    return lambda v: str(mapping.get(v, v))


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters.update(FORMATTERS, markdown_table=markdown_table, para=_para,
                       numbered=_numbered, labels=_labels,
                       oneline=_oneline)
    env.tests["na"] = _isnan
    env.globals.update(FORMATTERS, **TEMPLATE_CONSTANTS, section=render_section)
    return env


def render_section(name: str, context: Mapping[str, Any]) -> str:
    """The partial ``_<name>.md.j2`` filled with ``context`` (as ``s``), without its final
    newline: sections are joined by blank lines."""
    text = environment().get_template(f"_{name}.md.j2").render(s=context)
    return text.removesuffix("\n")


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
    skipped_records: pd.DataFrame | None = None
    #: the tables of "What the Traces Measure" (MEASUREMENT_TABLES), None for a seed-only run
    measurement: dict[str, pd.DataFrame] | None = None


def dataset_note_context(data_root: str) -> dict[str, str]:
    """kind: the bundled generated set, the test fixture, or the user's own traces."""
    kind = ("bundled" if data_root == display_path(RAW_DIR) else
            "fixture" if data_root == display_path(FIXTURE_ROOT) else "own")
    return {"kind": kind, "data_root": data_root}


def dataset_note(data_root: str) -> str:
    """What the analysed traces are: the bundled generated set, the test fixture, or the user's."""
    return render_section("dataset_note", dataset_note_context(data_root))


# --------------------------------------------------------------------------- seed sections

def _phase(breakdown: pd.DataFrame, name: str) -> pd.Series:
    return breakdown.set_index("phase").loc[name]


def _pure_row(pure: pd.DataFrame, subset: str, component: str) -> pd.Series:
    return pure[(pure["subset"] == subset) & (pure["component"] == component)].iloc[0]


def _totals(per_experiment: pd.DataFrame) -> pd.DataFrame:
    return per_experiment[per_experiment["component"] == "total_analytical_us"]


def _exp(row: pd.Series, **values: Any) -> dict[str, Any]:
    """An experiment's label fields (model, workload) plus ``values``."""
    return {"model": row["model"], "workload": row["workload"], **values}


def header_context(fi: FindingsInput) -> dict[str, Any]:
    return {"supported": fi.verdict.supported, "data_root": fi.data_root}


def summary_context(fi: FindingsInput) -> dict[str, Any]:
    pp, pd_ = _phase(fi.breakdown, "pure_prefill"), _phase(fi.breakdown, "pure_decode")
    valid = _totals(fi.per_experiment).dropna(subset=["pearson_r"])
    extremes = None
    if len(valid):
        best, worst = valid.loc[valid["pearson_r"].idxmax()], valid.loc[valid["pearson_r"].idxmin()]
        extremes = {"best": _exp(best, r=best["pearson_r"]), "worst": _exp(worst, r=worst["pearson_r"])}
    return {"total_steps": int(fi.parse_report["steps"].sum()), "n_experiments": len(fi.experiments),
            "verdict_sentence": fi.verdict.sentence(),
            "pure_prefill": {"steps": pp["steps"], "pct": pp["pct"]},
            "pure_decode": {"steps": pd_["steps"], "pct": pd_["pct"]}, "extremes": extremes,
            "measured": measurement_context(fi)}


def setup_context(fi: FindingsInput) -> dict[str, Any]:
    models = pd.DataFrame(
        [{"slugs": ", ".join(fi.models_by_hf_id.get(hf_id, [])), "hf_id": hf_id,
          "layers": spec.num_layers, "d": spec.hidden_size,
          "heads": f"{spec.num_heads} / {spec.num_kv_heads}", "d_ff": spec.intermediate_size,
          "experts": f"{spec.num_experts} ({spec.experts_per_token})",
          "moe_factor": fmt_g(spec.seed_moe_factor)} for hf_id, spec in sorted(fi.specs.items())])
    parse = fi.parse_report[[c for c in PARSE_COLUMNS if c in fi.parse_report]]
    records = fi.skipped_records
    return {"custom_note": fi.dataset_note, "note": dataset_note_context(fi.data_root),
            "ignored": int(fi.parse_report.get("ignored_lines", pd.Series(dtype=int)).sum()),
            "rejected": int(fi.parse_report.get("rejected_events", pd.Series(dtype=int)).sum()),
            "records": None if records is None or records.empty else records,
            "n_experiments": len(fi.experiments), "skipped": list(fi.skipped),
            "steps": fi.parse_report["steps"].sum(),
            "malformed": int(fi.parse_report["malformed_lines"].sum()),
            "blank": int(fi.parse_report["blank_lines"].sum()),
            "gpu": {"name": fi.gpu.name, "peak_tflops": fi.gpu.peak_bf16_dense_tflops,
                    "hbm_tb_per_s": fi.gpu.hbm_tb_per_s},
            "models": models, "parse": parse}


def phases_context(fi: FindingsInput) -> dict[str, Any]:
    """``note``: too_few (no r possible on pure prefill), rare, or share."""
    pp = _phase(fi.breakdown, "pure_prefill")
    n_pp = int(pp["steps"])
    note = ("too_few" if n_pp < MIN_ROWS else "rare" if pp["pct"] < RARE_PREFILL_PCT else "share")
    return {"table": fi.breakdown, "pure_prefill": {"steps": n_pp, "pct": pp["pct"]}, "note": note}


def pure_phase_context(fi: FindingsInput) -> dict[str, Any]:
    return {"table": fi.pure, "verdict_sentence": fi.verdict.sentence()}


def per_experiment_context(fi: FindingsInput) -> dict[str, Any]:
    total = _totals(fi.per_experiment).sort_values("pearson_r", ascending=False, na_position="last")
    return {"table": total[["model", "workload", "pearson_r", "n_steps"]]}


def analysis_context(fi: FindingsInput) -> dict[str, Any]:
    r_pp = _pure_row(fi.pure, "pure_prefill", "prefill_gemm_us")
    total = _totals(fi.per_experiment)
    by_workload = total.groupby("workload")["pearson_r"].mean().dropna().sort_values(ascending=False)
    r_all = _pure_row(fi.pure, "all", "total_analytical_us")["pearson_r"]
    med = total["pearson_r"].median()
    return {
        "pure_prefill": {"r": r_pp["pearson_r"], "n": r_pp["n_steps"],
                         "steps": _phase(fi.breakdown, "pure_prefill")["steps"]},
        "decode_attn_r": _pure_row(fi.pure, "pure_decode", "decode_attn_us")["pearson_r"],
        "decode_gemm_r": _pure_row(fi.pure, "pure_decode", "decode_gemm_us")["pearson_r"],
        "decode_baseline_r": _pure_row(fi.pure, "pure_decode",
                                       "batch.decode_tokens (baseline)")["pearson_r"],
        "pure_decode_pct": _phase(fi.breakdown, "pure_decode")["pct"],
        "by_workload": list(by_workload.items()) if len(by_workload) > 1 else [],
        "pooled": None if math.isnan(r_all) or math.isnan(med) else {"r": r_all, "median": med}}


def verdict_context(fi: FindingsInput) -> dict[str, Any]:
    v = fi.verdict
    t = v.table
    na = t[t["pearson_r"].isna()]
    below = t[t["pearson_r"].notna() & ~t["passed"]]
    return {"label": v.label, "passing": v.passing, "n_criteria": len(t), "required": v.required,
            "table": t, "na": [r._asdict() for r in na.itertuples()],
            "below": [r._asdict() for r in below.itertuples()]}


def findings_context(fi: FindingsInput) -> dict[str, Any]:
    """The context of findings.md.j2: each section's context under its name, and the
    extra (pre-rendered) sections that go before the Verdict."""
    return {**{name: fn(fi) for name, fn in SECTION_CONTEXTS.items()},
            "extra_sections": fi.extra_sections}


def findings_markdown(fi: FindingsInput) -> str:
    return environment().get_template("findings.md.j2").render(findings_context(fi))


def summary_section(fi: FindingsInput) -> str:
    return render_section("summary", summary_context(fi))


def setup_section(fi: FindingsInput) -> str:
    return render_section("setup", setup_context(fi))


def phase_section(fi: FindingsInput) -> str:
    return render_section("phases", phases_context(fi))


def pure_phase_section(fi: FindingsInput) -> str:
    return render_section("pure_phase", pure_phase_context(fi))


def per_experiment_section(fi: FindingsInput) -> str:
    return render_section("per_experiment", per_experiment_context(fi))


def analysis_section(fi: FindingsInput) -> str:
    return render_section("analysis", analysis_context(fi))


def verdict_section(fi: FindingsInput) -> str:
    return render_section("verdict", verdict_context(fi))


#: The sections of findings.md.j2 and the functions computing their contexts.
# =========================================================================== what the traces measure

#: The tables "What the Traces Measure" reads (CSV names in dirs.tables, without suffix).
MEASUREMENT_TABLES = ["target_coverage", "target_medians", "lower_bound_check",
                      "what_explains_targets", "physical_pure_phase_correlations",
                      "client_summary", "client_plausibility", "period_vs_client"]
#: The hardware and weight precision the study states (its H100 peak, BF16 weights).
STATED_HARDWARE = ("h100-sxm", "bf16")
#: Where the facts about step.duration_us were read (docs/measurement.md §1).
INSTRUMENTING_CODE = {"repository": "inference-sim/vllm",
                      "file": "vllm/v1/core/sched/scheduler.py",
                      "base": "vLLM v0.15.1, step tracing added 2026-01-28"}


def _wide(frame: pd.DataFrame, value: str, index: str = "experiment_id") -> pd.DataFrame:
    from .targets import TARGETS

    w = frame.pivot_table(index=index, columns="target", values=value, sort=True)
    return w[[t for t in TARGETS if t in w.columns]].reset_index()


def _client_context(t: dict[str, pd.DataFrame]) -> dict[str, Any]:
    from .client import SOURCE_PUBLISHED, below_floor

    summ, plaus = t["client_summary"], t["client_plausibility"]
    pub = summ[summ["source"] == SOURCE_PUBLISHED]
    gpu, precision = STATED_HARDWARE
    published = plaus[plaus["source"] == SOURCE_PUBLISHED]
    ref = published[(published["gpu"] == gpu) & (published["precision"] == precision)]
    pairs = sorted(set(zip(published["gpu"], published["precision"])))
    cands = pd.DataFrame([{"gpu": g, "precision": p, **below_floor(published, (g, p))}
                          for g, p in pairs])
    table = ref[["run", "mean_tpot_ms", "per_token_ms", "floor_ms", "tpot_over_floor",
                 "per_token_over_floor", "implied_bw_per_token_tb_s"]].copy()
    table["run"] = table["run"].map(short_name)
    return {"n_published": len(pub), "two_events": int(pub["two_events_per_token"].astype(bool).sum()),
            "tpot_share": (float(pub["tpot_over_per_token"].min()), float(pub["tpot_over_per_token"].max())),
            "gpu": gpu, "precision": precision, "table": table, "candidates": cands,
            **below_floor(published, STATED_HARDWARE)}


def measurement_context(fi: FindingsInput) -> dict[str, Any] | None:
    """Numbers of "What the Traces Measure" (None without the tables: seed-only run)."""
    from . import measure

    t = fi.measurement
    if t is None:
        return None
    med = t["target_medians"].copy()
    below = _wide(t["lower_bound_check"], "fraction_below")
    r2 = t["what_explains_targets"]
    r2_wide = r2.pivot_table(index="experiment_id", columns=["target", "regressors"], values="r2",
                             sort=True)
    r2_wide.columns = [f"{a} on {b}" for a, b in r2_wide.columns]
    r2_wide = r2_wide.round(3)
    cov = t["target_coverage"][["experiment_id", "sampled_steps", "share_step_forward",
                                "share_forward_event", "share_step_period", "share_period_exact"]]
    for frame in (med, below, cov):
        frame["experiment_id"] = frame["experiment_id"].map(short_name)
    r2_wide.index = r2_wide.index.map(short_name)
    pvc = t["period_vs_client"].assign(experiment_id=lambda f: f["experiment_id"].map(short_name))
    return {"code": INSTRUMENTING_CODE, "medians": med.drop(columns=["model", "workload"]),
            "median_duration_us": float(med["step.duration_us"].median()),
            "median_forward_us": float(med["step_forward_us"].median()),
            "median_period_us": float(med["step_period_us"].median()),
            "below": below, "below_median": below.drop(columns="experiment_id").median().to_dict(),
            "coverage": cov, "r2": r2_wide.reset_index(), "r2_median": measure.median_r2(r2),
            "verdicts": measure.verdicts_by_target(t["physical_pure_phase_correlations"]),
            "period_vs_client": pvc, "client": _client_context(t)}


SECTION_CONTEXTS: dict[str, Callable[[FindingsInput], dict[str, Any]]] = {
    "header": header_context, "summary": summary_context, "measurement": measurement_context,
    "setup": setup_context,
    "phases": phases_context, "pure_phase": pure_phase_context,
    "per_experiment": per_experiment_context, "analysis": analysis_context,
    "verdict": verdict_context}


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
        extra_sections=[physical] if physical is not None else [],
        skipped_records=outputs.read_skipped_records(dirs),
        measurement=_measurement_tables(dirs))
    if meta["data_root"] == display_path(RAW_DIR):
        from .refdata.validate import client_comparison

        fi.extra_sections.append(published_comparison_section(fi, load_published(),
                                                              client_comparison(RAW_DIR)))
    return fi


def _measurement_tables(dirs: "RunDirs") -> dict[str, pd.DataFrame] | None:
    """The MEASUREMENT_TABLES from dirs.tables, or None when any is missing."""
    paths = {name: dirs.tables / f"{name}.csv" for name in MEASUREMENT_TABLES}
    if not all(p.is_file() for p in paths.values()):
        return None
    return {name: pd.read_csv(p) for name, p in paths.items()}


# =========================================================================== physical mode

#: The physical-mode tables collect() looks for in dirs.tables (CSV names without suffix).
PHYSICAL_TABLES = ["physical_pure_phase_correlations", "physical_per_experiment_correlations",
                   "nnls_fit", "lower_bound_check", "reconstruction_report"]
#: The NNLS fit's components (coef_<key>, share_<key> columns), in table order.
NNLS_COMPONENTS = ["prefill_gemm", "prefill_attn", "decode_gemm", "decode_attn"]


def _as_bool(s: pd.Series) -> pd.Series:
    """Booleans that survived a CSV round trip (True/False or 'True'/'False')."""
    if s.dtype == bool:
        return s
    return s.astype(str).str.strip().str.lower().isin(["true", "1", "yes"])


def _flagged(lb: pd.DataFrame) -> pd.DataFrame:
    return lb[_as_bool(lb["flagged"])] if "flagged" in lb else lb[lb["n_below"] > 0]


def _rows(frame: pd.DataFrame, *columns: str) -> list[dict[str, Any]]:
    """An experiment listing: model, workload and ``columns`` of each row."""
    return [_exp(r, **{c: r[c] for c in columns}) for _, r in frame.iterrows()]


def journeys_context(per_experiment: pd.DataFrame,
                     reconstruction: pd.DataFrame | None) -> dict[str, Any]:
    """mode: report (from the reconstruction report), coverage (from journey_coverage) or
    unknown; the experiments with and without journeys; the batches' agreement."""
    if reconstruction is not None and "has_journeys" in reconstruction:
        rec = reconstruction.assign(has_journeys=_as_bool(reconstruction["has_journeys"]))
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
                     "worst": _exp(worst, agreement=worst["agreement"])}
    return {"mode": mode, "n_with": len(with_j), "n_total": len(rec),
            "without": _rows(without), "agreement": agreement}


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
            "flagged": _rows(flagged.sort_values("fraction_below", ascending=False),
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
        "na_physical": _rows(per[per["phys_pearson_r"].isna()], "phys_n_steps")}
    if len(both):
        best, worst = both.loc[both["delta_r"].idxmax()], both.loc[both["delta_r"].idxmin()]
        gap = (both["phys_spearman_r"] - both["phys_pearson_r"]).median()
        ctx["both"] = {
            "n": len(both), "n_up": int((both["delta_r"] > 0).sum()),
            "n_sig_up": int((both["phys_ci_low"] > both["seed_pearson_r"]).sum()),
            "n_sig_down": int((both["phys_ci_high"] < both["seed_pearson_r"]).sum()),
            "median_seed": both["seed_pearson_r"].median(),
            "median_phys": both["phys_pearson_r"].median(),
            "gain": _exp(best, seed=best["seed_pearson_r"], phys=best["phys_pearson_r"])
            if best["delta_r"] > 0 else None,
            "loss": _exp(worst, seed=worst["seed_pearson_r"], phys=worst["phys_pearson_r"])
            if worst["delta_r"] < 0 else None,
            "n_seed_above": int((per["seed_pearson_r"] > R_THRESHOLD).sum()),
            "n_phys_above": int((per["phys_pearson_r"] > R_THRESHOLD).sum()),
            "rank_gap": gap if not _isnan(gap) and abs(gap) >= RANK_GAP else None}
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
                           "not_fitted": _rows(nnls[nnls["r2"].isna()])}
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
    if _isnan(old) or abs(new - old) < DELTA_R_NEGLIGIBLE:
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
        "decode_attn": {"r": da, "strength": None if _isnan(da) else
                        "strong" if da > R_THRESHOLD else "weak" if da >= 0 else "negative"},
        "decode_gemm": None if _isnan(dg_phys) else
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
        ctx["lower_bound"] = {"material": _rows(material, "fraction_below"),
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
    from .stats import physical_verdict

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
    from .measure import PRIMARY_TARGET, for_target

    raw = {name: pd.read_csv(p) if p.is_file() else None for name, p in paths.items()}
    has_target = "target" in raw["physical_pure_phase_correlations"]
    read = {name: None if t is None else for_target(t, PRIMARY_TARGET) for name, t in raw.items()}
    return physical_section(read["physical_pure_phase_correlations"],
                            read["physical_per_experiment_correlations"], nnls=read["nnls_fit"],
                            lower_bound=read["lower_bound_check"],
                            reconstruction=read["reconstruction_report"],
                            seed_verdict=seed_verdict, seed_pure=seed_pure,
                            target=PRIMARY_TARGET if has_target else DURATION_TARGET)


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
    total = _totals(fi.per_experiment)
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


def published_comparison_context(fi: FindingsInput, published: dict) -> dict[str, Any]:
    """The comparison table and its claims, in order, each with ``agree`` (within the
    tolerance) and the two values: kind pure_prefill, pure_decode, decode_gemm_r, median_r."""
    t = published_comparison(fi, published)
    get = t.set_index("metric")["this_data"]
    pub = t.set_index("metric")["published"]
    pp = "pure_prefill share (%)"
    claims = [{"kind": "pure_prefill", "agree": bool(get[pp] < ABSENT_PREFILL_PCT),
               "ours": get[pp], "published": pub[pp]}]
    pd_ = "pure_decode share (%)"
    claims.append({"kind": "pure_decode", "ours": get[pd_], "published": pub[pd_],
                   "agree": bool(abs(get[pd_] - pub[pd_]) < SHARE_AGREE_POINTS)})
    r = "r, decode_gemm_us on pure_decode"
    if not math.isnan(get[r]):
        claims.append({"kind": "decode_gemm_r", "ours": get[r], "published": pub[r],
                       "agree": bool(abs(get[r] - pub[r]) < R_AGREE)})
    med = "median per-experiment r of total_analytical_us"
    if med in get.index:
        claims.append({"kind": "median_r", "ours": get[med], "published": pub[med],
                       "agree": bool(abs(get[med] - pub[med]) < R_AGREE),
                       "spearman": get["rank agreement of per-experiment r (Spearman)"]})
    return {"table": t, "claims": claims, "client": None}


def client_comparison_context(comparison: pd.DataFrame) -> dict[str, Any]:
    """The replay-vs-published client table (refdata.validate.client_comparison)."""
    t = comparison.copy()
    fit = t[~t["held_out"].astype(bool)]
    t["run"] = t["run"].map(short_name)
    table = t[["run", "published_tpot_ms", "replay_tpot_ms", "tpot_error", "published_ttft_ms",
               "replay_ttft_ms", "ttft_error", "published_failures", "replay_failures"]]
    return {"table": table, "held_out": int(t["held_out"].astype(bool).sum()),
            "n_published": len(fit),
            "median_tpot_error": float(fit["tpot_error"].abs().median()),
            "median_ttft_error": float(fit["ttft_error"].abs().median())}


def published_comparison_section(fi: FindingsInput, published: dict,
                                 client: pd.DataFrame | None = None) -> str:
    """Where the analysed (generated) data and the study's published numbers agree or differ;
    with ``client`` (refdata.validate.client_comparison) also the client metrics."""
    ctx = published_comparison_context(fi, published)
    if client is not None and len(client):
        ctx["client"] = client_comparison_context(client)
    return render_section("published_comparison", ctx)
