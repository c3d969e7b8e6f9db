"""The tables notebook 04 writes for FINDINGS from the statistics: the verdicts
(per_target.pooled_verdict_table, within_verdict_table), the attribution's summaries
(attribution.attribution_summary, attribution_term_summary, share_sums, by_model_experiments,
group_summary, group_pair_summary) and the credit of the regressor sets (explain.credit_table), each on
hand-made tables with the values worked out by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stepdecomp.core import tables as names
from stepdecomp.stats import attribution as A
from stepdecomp.stats import explain, per_target

GEMM, PATTN, DATTN = "phys_gemm_us", "phys_prefill_attn_us", "phys_decode_attn_us"
nan = np.nan


# --------------------------------------------------------------------------- verdicts

def _seed_pure() -> pd.DataFrame:
    """Prefill GEMM 0.85 passes, prefill attention 0.61 and decode GEMM 0.4367 do not, decode
    attention N/A: 1 of 4, 1 N/A (the seed's rule: NOT SUPPORTED)."""
    return pd.DataFrame([("pure_prefill", "prefill_gemm_us", 0.85, 12, ""),
                         ("pure_prefill", "prefill_attn_us", 0.61, 12, ""),
                         ("pure_decode", "decode_gemm_us", 0.4367, 300, ""),
                         ("pure_decode", "decode_attn_us", nan, 300, "constant")],
                        columns=["subset", "component", "pearson_r", "n_steps", "na_reason"])


def _physical(r: dict[tuple[str, str], float], target: str) -> pd.DataFrame:
    rows = [(target, s, c, r.get((s, c), 0.5), 100)
            for s in ("pure_prefill", "prefill_dominated", "pure_decode")
            for c in (("phys_prefill_gemm_us", PATTN) if s != "pure_decode"
                      else ("phys_decode_gemm_us", DATTN))]
    return pd.DataFrame(rows, columns=["target", "subset", "component", "pearson_r", "n_steps"])


def test_pooled_verdict_table():
    forward = _physical({("pure_prefill", "phys_prefill_gemm_us"): nan,
                         ("pure_prefill", PATTN): nan,
                         ("prefill_dominated", "phys_prefill_gemm_us"): 0.91,
                         ("pure_decode", DATTN): 0.88}, "step_forward_us")
    period = _physical({k: 0.9 for k in [("pure_prefill", "phys_prefill_gemm_us"),
                                          ("pure_prefill", PATTN),
                                          ("prefill_dominated", "phys_prefill_gemm_us"),
                                          ("prefill_dominated", PATTN),
                                          ("pure_decode", "phys_decode_gemm_us"),
                                          ("pure_decode", DATTN)]}, "step_period_us")
    t = per_target.pooled_verdict_table(_seed_pure(), pd.concat([forward, period]))
    # the seed's 4 criteria, then 2 targets x 2 prefill subsets x 4 criteria, in table order
    assert len(t) == 4 + 2 * 2 * 4
    outcome = t.drop_duplicates(["verdict", "target", "prefill_subset"])
    assert outcome[["verdict", "target", "prefill_subset", "passing", "n_na", "label"]] \
        .values.tolist() == [
        ["seed", "step.duration_us", "pure_prefill", 1, 1, "NOT SUPPORTED"],
        # 1 passes (decode attention), 2 N/A could tip it
        ["physical", "step_forward_us", "pure_prefill", 1, 2, "INDETERMINATE"],
        ["physical", "step_forward_us", "prefill_dominated", 2, 0, "SUPPORTED"],
        ["physical", "step_period_us", "pure_prefill", 4, 0, "SUPPORTED"],
        ["physical", "step_period_us", "prefill_dominated", 4, 0, "SUPPORTED"]]
    seed = t[t["verdict"] == "seed"]
    assert seed["passed"].tolist() == [True, False, False, False]
    assert seed["na_reason"].tolist() == ["", "", "", "constant"]
    dominated = t[(t["target"] == "step_forward_us") & (t["prefill_subset"] == "prefill_dominated")]
    assert dominated["subset"].tolist() == ["prefill_dominated"] * 2 + ["pure_decode"] * 2
    assert dominated["pearson_r"].tolist() == [0.91, 0.5, 0.5, 0.88]


def test_within_verdict_table():
    rows = [("pure_prefill", "phys_prefill_gemm_us", nan, 0), ("pure_prefill", PATTN, nan, 0),
            ("prefill_dominated", "phys_prefill_gemm_us", 0.85, 4),
            ("prefill_dominated", PATTN, 0.5, 4), ("pure_decode", "phys_decode_gemm_us", 0.4, 1),
            ("pure_decode", DATTN, 0.9, 4)]
    within = pd.DataFrame([(t, s, c, r, r - 0.1, r + 0.1, n) for t in ("a", "b")
                           for s, c, r, n in rows],
                          columns=["target", "subset", "component", "median_r", "ci_low",
                                   "ci_high", "n_experiments"])
    t = per_target.within_verdict_table(within)
    assert len(t) == 2 * 2 * 4 and set(t["verdict"]) == {"within"}
    outcome = t.drop_duplicates(["target", "prefill_subset"])
    assert outcome[["target", "prefill_subset", "passing", "n_na", "label"]].values.tolist() == [
        ["a", "pure_prefill", 1, 2, "INDETERMINATE"], ["a", "prefill_dominated", 2, 0, "SUPPORTED"],
        ["b", "pure_prefill", 1, 2, "INDETERMINATE"], ["b", "prefill_dominated", 2, 0, "SUPPORTED"]]
    assert t["n_experiments"].tolist()[:4] == [0, 0, 1, 4]


# --------------------------------------------------------------------------- attribution

def _component_attribution() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Five experiments, two terms (GEMM and decode attention): e1 led by GEMM (0.5 > 0.3),
    e2 and e3 by decode attention, e4 by GEMM whose coefficient is collinear (no lead), e5
    without a fit. GEMM is identified in e1 and e2 (1.2, 0.9), decode attention in e1–e4
    (1.4, 1.8, 1.0, 1.1)."""
    rows = []
    spec = {"e1": ((0.5, 1.2, True, ""), (0.3, 1.4, True, "")),
            "e2": ((0.1, 0.9, True, ""), (0.45, 1.8, True, "")),
            "e3": ((0.2, 2.0, False, "at_bound"), (0.6, 1.0, True, "")),
            "e4": ((0.7, 5.0, False, "collinear"), (0.2, 1.1, True, "")),
            "e5": ((nan, nan, False, "too_few_rows"), (nan, nan, False, "too_few_rows"))}
    for e, terms in spec.items():
        for term, (share, coef, ident, reason) in zip((GEMM, DATTN), terms):
            rows.append({"experiment_id": e, "model": "m", "workload": e, "term": term,
                         "coef": coef, "identified": ident, "lmg_share_r2": share,
                         "unidentified_reason": reason})
    fit = pd.DataFrame({"experiment_id": list(spec), "model": "m", "workload": list(spec),
                        "r2": [0.8, 0.5, 0.8, 0.8, nan], "intercept_us": 10.0,
                        "intercept_identified": [True, False, True, True, False]})
    return pd.DataFrame(rows), fit


def test_attribution_summary_by_hand():
    attr, fit = _component_attribution()
    s = A.attribution_summary(attr, fit)
    assert s.columns.tolist() == A.ATTRIBUTION_SUMMARY_COLUMNS[1:]       # no target column
    # e1–e4 have a fit: R² 0.8, 0.5, 0.8, 0.8; the intercept is identified in e1, e3, e4;
    # GEMM is not identified in e3 and e4
    assert s.iloc[0].tolist() == [4, 0.8, 0.5, 0.8, 3, 2, 2]


def test_attribution_term_summary_by_hand():
    attr, fit = _component_attribution()
    t = A.attribution_term_summary(attr, fit).set_index("term")
    assert t.index.tolist() == [GEMM, DATTN]                             # ATTRIBUTION_TERMS order
    # separable leads: GEMM in e1, decode attention in e2 and e3 (rank 1: the most); e4's
    # lead, GEMM, is collinear
    assert t.loc[GEMM, ["n_leads", "lead_rank", "n_leads_inseparable", "inseparable_rank"]] \
        .tolist() == [1, 2, 1, 1]
    assert t.loc[DATTN, ["n_leads", "lead_rank", "n_leads_inseparable"]].tolist() == [2, 1, 0]
    assert pd.isna(t.loc[DATTN, "inseparable_rank"])
    # median shares over e1–e4: GEMM (0.1, 0.2, 0.5, 0.7) -> 0.35; attention (0.2, 0.3, 0.45,
    # 0.6) -> 0.375; coefficients over those that identify them: (0.9, 1.2) -> 1.05,
    # (1.0, 1.1, 1.4, 1.8) -> 1.25
    assert t["median_share"].tolist() == pytest.approx([0.35, 0.375])
    assert t["n_identified"].tolist() == [2, 4]
    assert t["median_coef"].tolist() == pytest.approx([1.05, 1.25])


def test_a_share_outside_zero_to_one_is_left_out_of_the_summary():
    attr, fit = _component_attribution()
    attr.loc[(attr["experiment_id"] == "e2") & (attr["term"] == GEMM), "lmg_share_r2"] = -0.2
    t = A.attribution_term_summary(attr, fit).set_index("term")
    assert t.loc[GEMM, "median_share"] == pytest.approx(0.5)            # (0.2, 0.5, 0.7)


def test_summaries_per_target_and_without_a_fit():
    attr, fit = _component_attribution()
    stacked = pd.concat([attr.assign(target="x"), attr.assign(target="y")])
    fits = pd.concat([fit.assign(target="x"), fit.assign(target="y", r2=nan)])
    s = A.attribution_summary(stacked, fits)
    assert s["target"].tolist() == ["x", "y"] and s["n_experiments"].tolist() == [4, 0]
    assert s["r2_median"].isna().tolist() == [False, True]
    t = A.attribution_term_summary(stacked, fits)
    assert t[t["target"] == "y"][["n_leads", "n_identified"]].values.tolist() == [[0, 0], [0, 0]]
    no_column = A.attribution_summary(attr, fit.drop(columns="intercept_identified"))
    assert pd.isna(no_column["intercepts_identified"].iloc[0])


def _groups() -> pd.DataFrame:
    """group_attribution of three experiments: e1 and e2 fitted, e3 not; weight bytes
    absorbed in both; tokens and KV bytes inseparable in e2 only (r 0.97)."""
    t = pd.DataFrame({
        "experiment_id": ["e1", "e2", "e3"], "model": "m", "workload": ["a", "b", "c"],
        "n_steps": [100, 100, 3], "r2": [0.9, 0.7, nan], "intercept_us": [50.0, 70.0, nan],
        "share_r2_per_token": [0.6, 0.4, nan], "coef_us_per_token": [2.0, 3.0, nan],
        "identified_per_token": [True, True, False], "reason_per_token": ["", "", "too_few_rows"],
        "share_r2_per_kv_byte": [0.2, 0.1, nan], "coef_us_per_kv_byte": [1e-4, nan, nan],
        "identified_per_kv_byte": [True, False, False],
        "reason_per_kv_byte": ["", "at_bound", "too_few_rows"],
        "share_r2_per_weight_byte": [0.0, 0.0, nan], "coef_us_per_weight_byte": nan,
        "identified_per_weight_byte": False,
        "reason_per_weight_byte": [names.REASON_ABSORBED] * 2 + ["too_few_rows"],
        "r_per_token__per_kv_byte": [0.3, 0.97, nan],
        "separable_per_token__per_kv_byte": [True, False, False],
        "r_per_token__per_weight_byte": nan, "separable_per_token__per_weight_byte": False,
        "r_per_kv_byte__per_weight_byte": nan, "separable_per_kv_byte__per_weight_byte": False})
    return t


def test_group_summary_by_hand():
    s = A.group_summary(_groups())
    assert s.columns.tolist() == A.GROUP_SUMMARY_COLUMNS[1:]
    s = s.set_index("group")
    assert s.loc["per_token"].tolist() == pytest.approx([2, 2, 0, 0.5, 2, 2.5, 60.0])
    assert s.loc["per_kv_byte"].tolist() == pytest.approx([2, 2, 0, 0.15, 1, 1e-4, 60.0])
    w = s.loc["per_weight_byte"]
    assert (w["n_varying"], w["n_absorbed"], w["n_identified"]) == (0, 2, 0)
    assert np.isnan(w["median_share"]) and np.isnan(w["median_coef"])


def test_group_pair_summary_by_hand():
    p = A.group_pair_summary(pd.concat([_groups().assign(target="t")]))
    assert p.values.tolist() == [["t", "per_token", "per_kv_byte", 2, 1],
                                 ["t", "per_token", "per_weight_byte", 0, 0],
                                 ["t", "per_kv_byte", "per_weight_byte", 0, 0]]


def test_summary_tables_are_named_as_the_report_reads_them():
    attr, fit = _component_attribution()
    out = A.summary_tables(A.Attribution(attr, fit), _groups())
    assert list(out) == [names.ATTRIBUTION_SUMMARY, names.ATTRIBUTION_SHARE_SUMS,
                         names.ATTRIBUTION_TERM_SUMMARY, names.GROUP_SUMMARY,
                         names.GROUP_PAIR_SUMMARY]
    pd.testing.assert_frame_equal(out[names.GROUP_SUMMARY], A.group_summary(_groups()))


def test_share_sums_by_hand():
    """Per target and experiment with a fit: the valid shares summed (a share outside [0, 1]
    left out, rounding noise below 0 counted as 0) against R², within 1e-3."""
    attr = pd.DataFrame({
        "target": ["t"] * 7 + ["u"] * 2,
        "experiment_id": ["e2", "e2", "e1", "e1", "e1", "e3", "e3", "e1", "e1"],
        "model": "m", "workload": "w",
        "lmg_share_r2": [0.3, 0.2, 0.4, 1.5, -1e-9, 0.1, 0.1, 0.25, 0.25]})
    fit = pd.DataFrame({"target": ["t", "t", "t", "u"], "experiment_id": ["e1", "e2", "e3", "e1"],
                        "model": ["m1", "m2", "m3", "m1"], "workload": ["w1", "w2", "w3", "w1"],
                        "r2": [0.4005, 0.6, np.nan, 0.5]})
    s = A.share_sums(attr, fit)
    assert s.columns.tolist() == A.SHARE_SUM_COLUMNS
    # e1: 0.4 + 0 (1.5 invalid) = 0.4 vs 0.4005 (within 1e-3); e2: 0.5 vs 0.6; e3: no fit
    assert s[["target", "experiment_id", "model", "workload", "sums_to_r2"]].values.tolist() == [
        ["t", "e1", "m1", "w1", True], ["t", "e2", "m2", "w2", False],
        ["u", "e1", "m1", "w1", True]]
    assert s["share_sum"].tolist() == pytest.approx([0.4, 0.5, 0.5])
    assert s["r2"].tolist() == pytest.approx([0.4005, 0.6, 0.5])
    one = A.share_sums(attr[attr["target"] == "u"].drop(columns="target"),
                       fit[fit["target"] == "u"].drop(columns="target"))
    assert one.columns.tolist() == [c for c in A.SHARE_SUM_COLUMNS if c != "target"]
    assert one["sums_to_r2"].tolist() == [True]


def test_by_model_experiments_by_hand():
    by_model = pd.DataFrame({"target": ["t", "t", "t", "u"],
                             "model_key": ["org/b", "org/b", "org/a", "org/b"],
                             "term": ["x", "y", "x", "x"], "n_experiments": [3, 4, 2, 1]})
    m = A.by_model_experiments(by_model)
    assert m.columns.tolist() == A.MODEL_EXPERIMENTS_COLUMNS
    assert m.values.tolist() == [["t", "org/b", 4], ["t", "org/a", 2], ["u", "org/b", 1]]
    one = A.by_model_experiments(by_model.drop(columns="target").iloc[:3])
    assert one.values.tolist() == [["org/b", 4], ["org/a", 2]]


# --------------------------------------------------------------------------- what explains

def test_credit_table_per_target_in_table_order():
    inc = pd.DataFrame({"target": ["t2", "t2", "t1", "t1", "t3", "t3"],
                        "regressors": [explain.SET_SCHEDULER_BEYOND, explain.SET_FLOPS_BEYOND] * 3,
                        "credited": [False, False, True, False, True, True]})
    assert explain.credit_table(inc).values.tolist() == [
        ["t2", "neither"], ["t1", "scheduler work"], ["t3", "both"]]
    assert explain.credit_table(inc.iloc[:0]).columns.tolist() == ["target", "credited"]
