"""The seed study's sections of FINDINGS (Summary, Setup, Phase Breakdown, Pure-Phase and
Per-Experiment Correlations, Analysis, Verdict): each ``<name>_context(fi)`` turns the tables
into a plain dict (numbers, rows, tables and the categories the sentences branch on) that
``templates/_<name>.md.j2`` renders. The seed's sections are reproduced exactly as the seed
wrote them."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..core import tables as names
from ..core.tables import ALL_EXPERIMENTS
from ..hw.specs import model_table

from .format import fmt_g
from .inputs import FindingsInput, exp, require_columns
from .measurement import measurement_context
from .verdicts import conclusion_input
from .render import MIN_ROWS, PARSE_COLUMNS, RARE_PREFILL_PCT, render_section


def dataset_note_context(kind: str, data_root: str) -> dict[str, str]:
    """``kind`` (core.paths.data_kind: the bundled generated set, the test fixture, or the
    user's own traces, as notebook 01 recorded it) and the data root as shown."""
    return {"kind": kind, "data_root": data_root}


def dataset_note(kind: str, data_root: str) -> str:
    """What the analysed traces are: the bundled generated set, the test fixture, or the user's."""
    return render_section("dataset_note", dataset_note_context(kind, data_root))



def _phase(breakdown: pd.DataFrame, name: str) -> pd.Series:
    return breakdown.set_index("phase").loc[name]


def _pure_row(pure: pd.DataFrame, subset: str, component: str) -> pd.Series:
    return pure[(pure["subset"] == subset) & (pure["component"] == component)].iloc[0]


def totals(per_experiment: pd.DataFrame) -> pd.DataFrame:
    """The per-experiment rows of the seed total (total_analytical_us)."""
    return per_experiment[per_experiment["component"] == "total_analytical_us"]



def _na_count(n_na: int, n_criteria: int) -> str:
    """"k of n criteria N/A" for a status line, "" when none is."""
    return f"{n_na} of {n_criteria} criteria N/A" if n_na else ""


def header_context(fi: FindingsInput) -> dict[str, Any]:
    """The seed's status, and the within-experiment one the conclusion rests on (None
    without the within-experiment table)."""
    conclusion = conclusion_input(fi)
    within = None if conclusion is None else {"supported": conclusion["verdict"]["supported"],
                                              "status": conclusion["verdict"]["status"],
                                              "target": conclusion["target"],
                                              "na": _na_count(conclusion["verdict"]["n_na"],
                                                              conclusion["verdict"]["n_criteria"])}
    return {"supported": fi.verdict.supported, "status": fi.verdict.status,
            "na": _na_count(fi.verdict.n_na, len(fi.verdict.table)),
            "data_root": fi.data_root, "within": within}


def summary_context(fi: FindingsInput) -> dict[str, Any]:
    pp, pd_ = _phase(fi.breakdown, "pure_prefill"), _phase(fi.breakdown, "pure_decode")
    valid = totals(fi.per_experiment).dropna(subset=["pearson_r"])
    extremes = None
    if len(valid):
        best, worst = valid.loc[valid["pearson_r"].idxmax()], valid.loc[valid["pearson_r"].idxmin()]
        extremes = {"best": exp(best, r=best["pearson_r"]), "worst": exp(worst, r=worst["pearson_r"])}
    return {"total_steps": int(_parse_totals(fi)["steps"]), "n_experiments": len(fi.experiments),
            "verdict_sentence": fi.verdict.sentence(),
            "pure_prefill": {"steps": pp["steps"], "pct": pp["pct"]},
            "pure_decode": {"steps": pd_["steps"], "pct": pd_["pct"]}, "extremes": extremes,
            "measured": measurement_context(fi), "conclusion": conclusion_input(fi)}


#: The columns of parse_totals (traces.load.parse_totals) the text quotes.
PARSE_TOTAL_COLUMNS = ["steps", "malformed_lines", "blank_lines", "ignored_lines",
                       "rejected_events"]


def _parse_totals(fi: FindingsInput) -> pd.Series:
    """The one row of parse_totals (traces.load.parse_totals: parse_report summed)."""
    if fi.parse_totals is None or len(fi.parse_totals) != 1:
        raise KeyError(f"the report needs the one row of {names.PARSE_TOTALS} "
                       f"({names.writer(names.PARSE_TOTALS)} writes it)")
    require_columns(fi.parse_totals, PARSE_TOTAL_COLUMNS, names.PARSE_TOTALS)
    return fi.parse_totals.iloc[0]


def setup_context(fi: FindingsInput) -> dict[str, Any]:
    t = model_table(dict(sorted(fi.specs.items())))      # the one model table, formatted
    models = pd.DataFrame({
        "slugs": [", ".join(fi.models_by_hf_id.get(h, [])) for h in t["hf_id"]], "hf_id": t["hf_id"],
        "layers": t["num_layers"], "d": t["hidden_size"],
        "heads": [f"{h} / {kv}" for h, kv in zip(t["num_heads"], t["num_kv_heads"])],
        "d_ff": t["intermediate_size"],
        "experts": [f"{e} ({k})" for e, k in zip(t["num_experts"], t["experts_per_token"])],
        "moe_factor": [fmt_g(x) for x in t["seed_moe_factor"]]})
    parse = fi.parse_report[[c for c in PARSE_COLUMNS if c in fi.parse_report]]
    totals_row = _parse_totals(fi)
    records = fi.skipped_records
    return {"custom_note": fi.dataset_note, "note": dataset_note_context(fi.data_kind, fi.data_root),
            "ignored": int(totals_row["ignored_lines"]),
            "rejected": int(totals_row["rejected_events"]),
            "records": None if records is None or records.empty else records,
            "n_experiments": len(fi.experiments), "skipped": list(fi.skipped),
            "steps": int(totals_row["steps"]),
            "malformed": int(totals_row["malformed_lines"]),
            "blank": int(totals_row["blank_lines"]),
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
    total = totals(fi.per_experiment).sort_values("pearson_r", ascending=False, na_position="last")
    return {"table": total[["model", "workload", "pearson_r", "n_steps",
                            *(["na_reason"] if "na_reason" in total else [])]]}


def analysis_context(fi: FindingsInput) -> dict[str, Any]:
    r_pp = _pure_row(fi.pure, "pure_prefill", "prefill_gemm_us")
    summary = fi.seed_r if fi.seed_r is not None else pd.DataFrame(
        {"workload": [], "median_pearson_r": [], "mean_pearson_r": []})
    every = summary[summary["workload"] == ALL_EXPERIMENTS]
    by_workload = summary[summary["workload"] != ALL_EXPERIMENTS]
    by_workload = by_workload[by_workload["mean_pearson_r"].notna()]
    r_all = _pure_row(fi.pure, "all", "total_analytical_us")["pearson_r"]
    med = float(every["median_pearson_r"].iloc[0]) if len(every) else math.nan
    return {
        "pure_prefill": {"r": r_pp["pearson_r"], "n": r_pp["n_steps"],
                         "steps": _phase(fi.breakdown, "pure_prefill")["steps"]},
        "decode_attn_r": _pure_row(fi.pure, "pure_decode", "decode_attn_us")["pearson_r"],
        "decode_gemm_r": _pure_row(fi.pure, "pure_decode", "decode_gemm_us")["pearson_r"],
        "decode_baseline_r": _pure_row(fi.pure, "pure_decode",
                                       "batch.decode_tokens (baseline)")["pearson_r"],
        "pure_decode_pct": _phase(fi.breakdown, "pure_decode")["pct"],
        "by_workload": (list(zip(by_workload["workload"], by_workload["mean_pearson_r"]))
                        if len(by_workload) > 1 else []),
        "pooled": None if math.isnan(r_all) or math.isnan(med) else {"r": r_all, "median": med}}


def verdict_context(fi: FindingsInput) -> dict[str, Any]:
    v = fi.verdict
    t = v.table
    na = t[t["pearson_r"].isna()]
    below = t[t["pearson_r"].notna() & ~t["passed"]]
    return {"label": v.label, "words": v.words, "na_note": v.na_note(),
            "passing": v.passing, "n_criteria": len(t), "required": v.required,
            "table": t, "na": [r._asdict() for r in na.itertuples()],
            "below": [r._asdict() for r in below.itertuples()]}


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
