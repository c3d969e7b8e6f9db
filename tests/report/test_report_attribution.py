"""report.attribution: the LMG attribution of the component fit,
on hand-made tables (tests/report/test_report.py holds the inputs and the section snapshots)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from stepdecomp.report import attribution
from stepdecomp.stats import attribution as stats_attribution
from report_tables import attribution_context, group_context, physical_section, through_csv
from test_report import _attribution, _fit_summary, _report_tables

#: The coefficients _attribution() marks as not identified.
UNIDENTIFIED = [0.0, 69.8, 100.0, 106.0]


def _section(attr: pd.DataFrame | None = None, fit: pd.DataFrame | None = None) -> str:
    t = _report_tables()
    if attr is not None:
        t.attribution = attr
    if fit is not None:
        t.fit_summary = fit
    md = physical_section(t)
    return md[md.index("### Component Attribution"):md.index("### The MoE GEMM")].strip()


def test_summary_over_experiments():
    ctx = attribution_context(_attribution(), _fit_summary())
    f = ctx["fitted"]
    assert ctx["terms"] == attribution.ATTRIBUTION_TERMS
    assert (f["n"], f["r2_median"], f["r2_min"], f["r2_max"]) == (2, 0.75, 0.6, 0.9)
    # largest share: GEMM in e1 (0.5), decode attention in e2 (0.4)
    assert sorted(f["leads"]) == [("phys_decode_attn_us", 1), ("phys_gemm_us", 1)]
    assert dict(f["median_shares"]) == pytest.approx({
        "phys_gemm_us": 0.3, "phys_prefill_attn_us": 0.035, "phys_decode_attn_us": 0.35,
        "phys_allreduce_us": 0.04, "phys_lm_head_us": 0.025})
    # medians over the identified coefficients only: (1.2 + 0.9) / 2, 2.0 alone, (1.44 + 1.8) / 2
    coefs = {c["term"]: (c["median"], c["n_identified"]) for c in f["coefs"]}
    assert coefs == {"phys_gemm_us": (pytest.approx(1.05), 2), "phys_prefill_attn_us": (2.0, 1),
                     "phys_decode_attn_us": (pytest.approx(1.62), 2), "phys_lm_head_us": (1.0, 1)}
    assert f["never_identified"] == ["phys_allreduce_us"]
    assert (f["n_unidentified"], f["experiments_unidentified"]) == (4, 2)
    assert ctx["invalid"] == [] and ctx["sum_mismatch"] == [] and ctx["not_fitted"] == []


def test_unidentified_coefficients_stay_out_of_the_summary():
    md = _section()
    start = md.index("Over 2 experiments the fit reaches a median R² of 0.75")
    tables, summary = md[:start], md[start:md.index("\n", start)]
    assert tables.count("| not identified") == 4                 # the four cells of the table
    numbers = {float(x) for x in re.findall(r"\d+(?:\.\d+)?", summary)}
    assert numbers.isdisjoint(UNIDENTIFIED), numbers & set(UNIDENTIFIED)
    assert ("Median coefficients over the experiments that identify them: GEMM 1.05 (identified "
            "in 2 of 2), prefill attention 2 (identified in 1 of 2), decode attention 1.62 "
            "(identified in 2 of 2), LM head 1 (identified in 1 of 2). Never identified: "
            "all-reduce. 4 coefficient(s) in 2 experiment(s) are not identified.") in summary


def _percentages(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)%", text)]


def test_no_printed_share_is_negative_or_above_one():
    attr = _attribution()
    # a share below zero, one above one, and one a rounding error below zero
    attr.loc[1, "lmg_share_r2"] = -0.05
    attr.loc[6, ["lmg_share_r2", "lmg_ci_high"]] = [1.2, 1.3]
    attr.loc[3, ["lmg_share_r2", "lmg_ci_low"]] = [-1e-9, -1e-9]
    md = _section(attr)
    shares = _percentages(md)
    assert shares and min(shares) >= 0 and max(shares) <= 100
    assert "share(s) lie outside the range" in md
    ctx = attribution_context(attr, _fit_summary())
    assert [(r["model"], r["term"], r["share"]) for r in ctx["invalid"]] == [
        ("alpha-7b", "phys_prefill_attn_us", -0.05), ("beta-moe", "phys_prefill_attn_us", 1.2)]
    assert ("2 share(s) lie outside the range a share can take and are not shown (the statistics "
            "table is wrong there): alpha-7b, general (prefill attention); beta-moe, roleplay "
            "(prefill attention).") in md
    row = ctx["shares"].set_index("model").loc["alpha-7b"]
    assert row["phys_allreduce_us"] == "0.0% [0.0%, 6.0%]"      # -1e-9: rounding, shown as 0
    assert row["phys_prefill_attn_us"] == "N/A"
    # the shares left no longer sum to R² in either experiment: both are named
    assert [r["model"] for r in ctx["sum_mismatch"]] == ["alpha-7b", "beta-moe"]


def test_share_and_coefficient_cells():
    row = pd.Series({"lmg_share_r2": 0.575, "lmg_ci_low": 0.521, "lmg_ci_high": 0.603,
                     "coef": 1.234, "coef_ci_low": 1.1, "coef_ci_high": np.nan, "identified": True})
    assert attribution.share_cell(row) == "57.5% [52.1%, 60.3%]"
    tiny = row.replace({0.521: 1e-12})                          # BCa end a rounding above 0
    assert attribution.share_cell(tiny) == "57.5% [0.0%, 60.3%]"
    assert attribution.coef_cell(row) == "1.23"                 # no interval without both ends
    assert attribution.coef_cell(row.replace({True: False})) == "not identified"


def test_experiment_without_fit_is_named():
    fit = _fit_summary()
    fit.loc[1, ["r2", "r2_ci_low", "r2_ci_high"]] = np.nan
    attr = _attribution()
    attr.loc[attr["experiment_id"] == "e2", ["lmg_share_r2", "lmg_ci_low", "lmg_ci_high"]] = np.nan
    ctx = attribution_context(attr, fit)
    assert ctx["fitted"]["n"] == 1 and ctx["fitted"]["r2_median"] == 0.9
    assert [c["term"] for c in ctx["fitted"]["coefs"]] == ["phys_gemm_us", "phys_decode_attn_us",
                                                           "phys_lm_head_us"]
    assert "No fit for 1 experiment(s): beta-moe, roleplay." in _section(attr, fit)


def _summaries() -> tuple[pd.DataFrame, pd.DataFrame]:
    """attribution_summary and attribution_term_summary of the hand-made tables, read back."""
    return (through_csv(stats_attribution.attribution_summary(_attribution(), _fit_summary())),
            through_csv(stats_attribution.attribution_term_summary(_attribution(), _fit_summary())))


def _sums() -> pd.DataFrame:
    """share_sums of the hand-made tables, read back."""
    return through_csv(stats_attribution.share_sums(_attribution(), _fit_summary()))


def test_missing_columns_name_the_table():
    summary, terms = _summaries()
    with pytest.raises(KeyError, match=r"component_attribution lacks column\(s\) \['identified'\]"):
        attribution.attribution_context(_attribution().drop(columns="identified"), _fit_summary(),
                                        summary, terms, _sums())
    with pytest.raises(KeyError, match=r"fit_summary lacks column\(s\) \['intercept_us'\]"):
        attribution.attribution_context(_attribution(), _fit_summary().drop(columns="intercept_us"),
                                        summary, terms, _sums())
    with pytest.raises(KeyError, match=r"attribution_term_summary lacks column\(s\) "
                       r"\['median_share'\]"):
        attribution.attribution_context(_attribution(), _fit_summary(), summary,
                                        terms.drop(columns="median_share"), _sums())
    with pytest.raises(KeyError, match=r"attribution_summary lacks column\(s\) \['r2_max'\]"):
        attribution.attribution_context(_attribution(), _fit_summary(),
                                        summary.drop(columns="r2_max"), terms, _sums())
    with pytest.raises(KeyError, match=r"attribution_share_sums lacks column\(s\) "
                       r"\['sums_to_r2'\]"):
        attribution.attribution_context(_attribution(), _fit_summary(), summary, terms,
                                        _sums().drop(columns="sums_to_r2"))
    with pytest.raises(KeyError, match="needs its summary attribution_share_sums "
                       r"\(notebook 04_correlation writes it\)"):
        attribution.attribution_context(_attribution(), _fit_summary(), summary, terms, None)


def test_the_summary_is_read_not_computed():
    """The medians and counts FINDINGS states are the summary tables' (notebook 04): a
    summary that says otherwise than the per-experiment tables is what the text says."""
    summary, terms = _summaries()
    summary["r2_median"] = 0.123
    terms.loc[terms["term"] == "phys_gemm_us", "median_coef"] = 7.5
    f = attribution.attribution_context(_attribution(), _fit_summary(), summary, terms,
                                        _sums())["fitted"]
    assert f["r2_median"] == 0.123
    assert {c["term"]: c["median"] for c in f["coefs"]}["phys_gemm_us"] == 7.5


def test_the_share_sum_check_is_read_not_computed():
    """The experiments whose shares do not sum to R² are those share_sums marks."""
    summary, terms = _summaries()
    sums = _sums()
    assert sums["sums_to_r2"].tolist() == [True, True]
    sums.loc[1, ["share_sum", "sums_to_r2"]] = [0.5, False]
    ctx = attribution.attribution_context(_attribution(), _fit_summary(), summary, terms, sums)
    assert ctx["sum_mismatch"] == [{"model": "beta-moe", "workload": "roleplay", "total": 0.5,
                                    "r2": 0.6}]


def test_reasons_and_an_unidentified_intercept():
    attr = _attribution().assign(unidentified_reason="")
    attr.loc[1, "unidentified_reason"] = "at_bound"                 # e1 prefill attention, 0
    attr.loc[3, "unidentified_reason"] = "collinear"                # e1 all-reduce, 69.8
    fit = _fit_summary().assign(intercept_identified=[True, False])
    ctx = attribution_context(attr, fit)
    coefs = ctx["coefs"].set_index("model")
    assert coefs.loc["alpha-7b", "phys_prefill_attn_us"] == "not identified (at_bound)"
    assert coefs.loc["alpha-7b", "phys_allreduce_us"] == "not identified (collinear)"
    assert coefs.loc["beta-moe", "phys_lm_head_us"] == "not identified"
    shares = ctx["shares"].set_index("model")
    assert shares.loc["alpha-7b", "intercept"] == "1,500 [1,200, 1,800]"
    assert shares.loc["beta-moe", "intercept"] == "not identified"
    assert ctx["fitted"]["intercepts_identified"] == 1
    t = _report_tables()
    t.attribution, t.fit_summary = attr, fit
    assert ("time at zero estimated component time; the fit identifies it in 1 of 2 "
            "experiments.") in physical_section(t)


def test_per_model_summary_counts_an_hf_model_once():
    """attribution_by_model keys llama-2-70b and llama-2-70b-hf as one HF model: one row,
    named by both slugs; a coefficient no experiment identifies shows no number."""
    by_model = pd.DataFrame({
        "model_key": "meta-llama/Llama-2-70b-hf", "term": ["phys_gemm_us", "phys_allreduce_us"],
        "n_experiments": 4, "n_identified": [3, 0], "median_coef": [1.21, np.nan],
        "median_lmg_share_r2": [0.297, 0.05]})
    ctx = attribution.by_model_context(
        by_model, through_csv(stats_attribution.by_model_experiments(by_model)),
        {"meta-llama/Llama-2-70b-hf": ["llama-2-70b", "llama-2-70b-hf"]})
    assert ctx["terms"] == ["phys_gemm_us", "phys_allreduce_us"]
    assert ctx["shares"].values.tolist() == [["llama-2-70b / llama-2-70b-hf", 4, "29.7%", "5.0%"]]
    assert ctx["coefs"].values.tolist() == [["llama-2-70b / llama-2-70b-hf", "1.21 (3 of 4)",
                                             "not identified (0 of 4)"]]
    with pytest.raises(KeyError, match=r"attribution_by_model lacks column\(s\) \['median_coef'\]"):
        attribution.by_model_context(by_model.drop(columns="median_coef"), None)
    with pytest.raises(KeyError, match="needs its summary attribution_by_model_experiments"):
        attribution.by_model_context(by_model, None)
    with pytest.raises(KeyError, match=r"attribution_by_model_experiments lacks column\(s\) "
                       r"\['n_experiments'\]"):
        attribution.by_model_context(by_model, pd.DataFrame({"model_key": ["x"]}))


def test_the_whole_section_prints_no_share_outside_zero_to_one_hundred():
    md = _section()
    shares = _percentages(md)
    # per experiment with their intervals, per model, the five medians, and three "95%"
    # (the R² and intercept headers, "95% intervals")
    assert len(shares) == 2 * 5 * 3 + 2 * 5 + 5 + 3
    assert min(shares) >= 0 and max(shares) <= 100


def test_a_collinear_leading_term_is_not_ranked():
    """e1's largest share (GEMM, 0.5) goes to a term collinear with others: e1 leads with
    nothing, and the text says the data cannot split its share."""
    attr = _attribution().assign(unidentified_reason="")
    attr.loc[(attr["experiment_id"] == "e1") & (attr["term"] == "phys_gemm_us"),
             ["identified", "unidentified_reason"]] = [False, stats_attribution.COLLINEAR_REASON]
    f = attribution_context(attr, _fit_summary())["fitted"]
    assert f["leads"] == [("phys_decode_attn_us", 1)]
    assert f["leads_inseparable"] == [("phys_gemm_us", 1)]
    md = _section(attr)
    assert ("The term with the largest share, where it is separable from the others: decode "
            "attention in 1 experiment(s). In 1 experiment(s) the largest share belongs to a "
            "term collinear with others (GEMM in 1): the data cannot tell its share from "
            "theirs, so no term leads there.") in md


# --------------------------------------------------------------------------- grouped terms

def _group_table() -> pd.DataFrame:
    """attribution.group_attribution of two experiments of 16 steps: e1 with tokens ⟂ KV
    bytes (y = 2·tokens + 1e-4·kv + 50: shares 0.8 and 0.2), e2 with KV bytes = 1000·tokens
    + 1000·w (r = 1/√1.01 ≥ 0.95: not separable); weight bytes constant in both."""
    from stepdecomp.stats import attribution as A
    n = 16
    w0 = np.where(np.arange(n) & 1, -1.0, 1.0)
    w1 = np.where(np.arange(n) >> 1 & 1, -1.0, 1.0)
    tokens = 100 + 10 * w0
    frames = []
    for e, model, kv in (("e1", "m1", 1e6 + 1e5 * w1), ("e2", "m2", 1000 * tokens + 1e3 * w1)):
        frames.append(pd.DataFrame({
            "experiment_id": e, "model": model, "workload": "general",
            "batch.prefill_tokens": tokens, "batch.decode_tokens": 0.0,
            "phys_kv_read_bytes": kv, "phys_kv_write_bytes": 0.0, "phys_weight_bytes": 5e9,
            "step.duration_us": 2 * tokens + 1e-4 * kv + 50}))
    return A.group_attribution(pd.concat(frames, ignore_index=True))


def test_group_context_medians_and_separability():
    ctx = group_context(_group_table())
    g = {x["group"]: x for x in ctx["groups"]}
    assert ctx["n"] == 2 and ctx["intercept_median"] == pytest.approx(50.0, abs=1e-6)
    assert g["per_token"]["n_varying"] == 2 and g["per_token"]["n_identified"] >= 1
    assert g["per_weight_byte"] == {"group": "per_weight_byte", "n_varying": 0,
                                    "n_absorbed": 2, "median_share": pytest.approx(np.nan,
                                                                                   nan_ok=True),
                                    "n_identified": 0,
                                    "median_coef": pytest.approx(np.nan, nan_ok=True)}
    tk = ctx["pairs"][0]
    assert (tk["a"], tk["b"], tk["n_both_vary"]) == ("per_token", "per_kv_byte", 2)
    assert [(r["model"], round(r["r"], 6)) for r in tk["inseparable"]] == \
        [("m2", round(1 / np.sqrt(1.01), 6))]
    assert [p["n_both_vary"] for p in ctx["pairs"][1:]] == [0, 0]
    row = ctx["table"].iloc[0]
    assert (row["per_token"], row["per_kv_byte"], row["per_weight_byte"]) == \
        ("80.0%, 2", "20.0%, 0.0001", "absorbed")
    assert ctx["table"].iloc[1]["per_token__per_kv_byte"] == "0.995 *"


def test_group_section_states_shares_and_inseparable_pairs():
    t = _report_tables()
    t.groups = _group_table()
    md = physical_section(t)
    text = md[md.index("#### Shares by What Step Time Scales With"):md.index("### The MoE GEMM")]
    assert "|r| ≥ 0.95" in text
    assert "Per token and per KV byte cannot be separated in 1 of the 2 experiment(s)" in text
    assert "m2, general (r 0.995)" in text
    assert "Per weight byte: constant in every experiment" in text
    table = _group_table()
    summary = through_csv(stats_attribution.group_summary(table))
    pairs = through_csv(stats_attribution.group_pair_summary(table))
    with pytest.raises(KeyError, match="group_attribution lacks"):
        attribution.group_context(table.drop(columns="r2"), summary, pairs)
    with pytest.raises(KeyError, match=r"group_attribution_summary lacks group\(s\) "
                       r"\['per_weight_byte'\]"):
        attribution.group_context(table, summary[summary["group"] != "per_weight_byte"], pairs)
    with pytest.raises(KeyError, match="group_attribution_pairs lacks the pair per_token, "
                       "per_kv_byte"):
        attribution.group_context(table, summary, pairs.iloc[1:])
