"""report.verdicts: the within-experiment verdict beside the seed's pooled one, the report's
Conclusion and its status line, and the per-model summaries that count a model once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stepdecomp import report
from stepdecomp.report import verdicts
from report_tables import (findings_markdown, measurement_context, physical_context,
                           physical_section, physical_verdicts)
from test_report import SNAPSHOTS, _findings_input, _measurement_tables, _report_tables, _within


def _within_verdicts(within: pd.DataFrame) -> dict:
    """The within-experiment verdicts of ``within`` by prefill subset, as the report reads
    them from the table verdicts_within."""
    v = physical_verdicts(_report_tables().pure, within)
    return {p: v[("within", p)] for p in verdicts.PREFILL_SUBSETS}


def test_within_verdict_counts_the_table_s_passes():
    v = _within_verdicts(_within())["pure_prefill"]
    assert (v.passing, v.supported) == (1, False)                 # decode attention only
    assert v.table["subset"].tolist() == ["pure_prefill", "pure_prefill", "pure_decode",
                                          "pure_decode"]
    assert v.table.columns.tolist() == ["subset", "component", "median_r", "ci_low", "ci_high",
                                        "n_experiments", "passed"]
    d = _within_verdicts(_within())["prefill_dominated"]
    assert (d.passing, d.supported, d.label) == (2, True, "SUPPORTED")
    # a row marked passed without a median r does not pass (the median decides, as in
    # stats.within_experiment_verdict); a row missing from the table neither
    w = _within()
    w.loc[4, ["median_r", "passed"]] = [np.nan, True]
    w = w.drop(index=5)
    assert _within_verdicts(w)["prefill_dominated"].passing == 1
    with pytest.raises(KeyError, match=r"within_experiment_verdict lacks column\(s\) \['ci_low'\]"):
        verdicts.within_verdict_context(_within().drop(columns="ci_low"), _report_tables().pure,
                                        2, _within_verdicts(_within()))


def test_headline_subset():
    assert verdicts.headline_subset(_within_verdicts(_within())["pure_prefill"]) \
        == "prefill_dominated"                                       # no pure-prefill r
    w = _within()
    w.loc[0, ["median_r", "n_experiments"]] = [0.7, 3]
    assert verdicts.headline_subset(_within_verdicts(w)["pure_prefill"]) == "pure_prefill"


def test_a_verdict_table_without_one_prefill_subset_is_refused():
    v = physical_verdicts(_report_tables().pure, _within())
    keyed = {(k, "step_forward_us", p): x for (k, p), x in v.items()}
    assert set(verdicts.verdicts_of(keyed, "within", "step_forward_us")) == {
        "pure_prefill", "prefill_dominated"}
    assert verdicts.verdicts_of(keyed, "within", "step_period_us") is None
    del keyed[("within", "step_forward_us", "prefill_dominated")]
    with pytest.raises(KeyError, match=r"the within verdict on step_forward_us lacks prefill "
                       r"subset\(s\) \['prefill_dominated'\]"):
        verdicts.verdicts_of(keyed, "within", "step_forward_us")


def test_pooled_and_within_part_on_a_component_constant_inside_experiments():
    """Decode GEMM: pooled r 0.85 passes, but it has an r in only 1 of 4 experiments and its
    median r 0.4 fails: the two verdicts part, and the text says where and why."""
    t = _report_tables()
    t.pure.loc[4, "pearson_r"] = 0.85
    criteria = {(r.subset, r.component) for v in _within_verdicts(t.within).values()
                for r in v.table.itertuples(index=False)}
    contrast = verdicts.pooled_vs_within(t.pure, t.within, 4, criteria)
    gemm = [c for c in contrast if c["component"] == "phys_decode_gemm_us"][0]
    assert (gemm["pooled_pass"], gemm["within_pass"], gemm["disagree"]) == (True, False, True)
    assert (gemm["n_with_r"], gemm["constant_somewhere"]) == (1, True)
    # the pure-prefill rows have no pooled r: nothing to compare
    assert {c["subset"] for c in contrast} == {"prefill_dominated", "pure_decode"}
    md = physical_section(t)
    assert ("Here decode GEMM on pure_decode has an r in only 1 of 2 experiments (pooled r = "
            "0.850): the others hold it constant or have fewer than 10 of its steps. "
            "The two verdicts part on decode GEMM on pure_decode (pooled r = 0.850, "
            "within-experiment median r = 0.400). The report's conclusion follows the "
            "within-experiment verdict.") in md


def _with_conclusion(data_root: str = "tests/fixtures/ground_truth") -> report.FindingsInput:
    t = _report_tables()
    fi = _findings_input()
    fi.data_root = data_root
    fi.within, fi.physical_pure, fi.physical_target = t.within, t.pure, "step_forward_us"
    return fi


def test_conclusion_follows_the_within_experiment_verdict():
    fi = _with_conclusion()
    text = findings_markdown(fi)
    # the seed's verdict stays as the seed wrote it; the conclusion comes after it
    assert SNAPSHOTS["verdict"] in text
    assert text.index("## Verdict") < text.index("## Conclusion")
    assert ("**Within experiments, on `step_forward_us`, the hypothesis is supported:** 2 of 4 "
            "components reach a median per-experiment r above 0.8 on their subset (at least 2 "
            "needed) — prefill GEMM on prefill_dominated r = 0.850 over 2 experiments (passes), "
            "prefill attention on prefill_dominated r = 0.500 over 2 experiments, decode GEMM on "
            "pure_decode r = 0.400 over 1 experiment, decode attention on pure_decode r = 0.900 "
            "over 2 experiments (passes). The prefill criteria are taken on "
            "prefill-dominated steps, because no experiment has enough pure-prefill steps for "
            "an r. This is the report's conclusion. The seed's pooled criterion (the Verdict "
            "above, as the seed ran it on `step.duration_us`) says not supported;") in text
    assert ("**What the physical mode concludes:** within experiments, on `step_forward_us`, 2 "
            "of 4 components reach a median per-experiment r above 0.8 on their subset (at "
            "least 2 needed): SUPPORTED (prefill criteria on prefill-dominated steps). This is "
            "the report's conclusion (see Conclusion); the seed's pooled criterion is kept "
            "exactly as the seed ran it.") in text
    assert "generated traces" not in text                   # the fixture is not the bundled set
    assert "Neither prefill criterion can be judged" not in text
    # the status lines follow the Answer (the first screen answers; they qualify)
    assert text.startswith("# Analytical Component Decomposition of vLLM Step Time — FINDINGS\n\n"
                           "## Answer\n")
    assert (
        "\n\n**Status (seed mode):** Not Supported (formal criteria; 1 of 4 criteria N/A)  \n"
        "**Status (physical mode, within experiments, `step_forward_us`):** Supported "
        "(the conclusion)  \n"
        "**Generated by:** `make report` from `tests/fixtures/ground_truth`\n") in text


def test_conclusion_says_when_no_prefill_criterion_can_be_judged():
    fi = _with_conclusion()
    fi.within.loc[fi.within["subset"] == "prefill_dominated", ["median_r", "n_experiments"]] = \
        [np.nan, 2]
    text = findings_markdown(fi)
    assert ("Neither prefill criterion can be judged within experiments here (a median needs an "
            "r in at least 3 experiments), so the verdict rests on the two decode criteria, both "
            "of which would have to pass.") in text
    assert "prefill GEMM on prefill_dominated N/A, prefill attention on prefill_dominated N/A" \
        in text


def test_conclusion_on_generated_data_says_so():
    text = findings_markdown(_with_conclusion("data/raw"))
    assert ("On the bundled data this is a statement about generated traces: their step times "
            "come from a replay whose forward pass is priced from measured kernel tables of the "
            "same batches the physical model prices") in text
    assert "This is the report's conclusion (see Conclusion), on generated data;" in text


def test_no_conclusion_without_the_within_table():
    text = findings_markdown(_findings_input())
    assert "## Conclusion" not in text and "Status (physical mode" not in text


def test_per_model_summary_counts_an_hf_model_once():
    """llama-2-70b and llama-2-70b-hf load one config: the per-model Δr is one median over
    their three experiments, not two."""
    t = _report_tables()
    per = pd.DataFrame({"experiment_id": ["a", "b", "c", "d"],
                        "model": ["llama-2-70b", "llama-2-70b-hf", "llama-2-70b-hf", "small-7b"],
                        "workload": ["general", "codegen", "reasoning", "general"],
                        "seed_pearson_r": [0.9, 0.8, 0.9, 0.4],
                        "phys_pearson_r": [0.88, 0.7, 0.95, 0.9],
                        "phys_ci_low": 0.0, "phys_ci_high": 1.0, "phys_spearman_r": 0.5,
                        "phys_loglog_r": 0.5, "phys_n_steps": 100})
    per["delta_r"] = per["phys_pearson_r"] - per["seed_pearson_r"]
    t.per_experiment = per
    by_hf_id = {"meta-llama/Llama-2-70b-hf": ["llama-2-70b", "llama-2-70b-hf"],
                "org/small-7b": ["small-7b"]}
    names = report.model_names(by_hf_id)
    assert names["llama-2-70b-hf"] == names["llama-2-70b"] == "llama-2-70b / llama-2-70b-hf"
    ctx = physical_context(t, models_by_hf_id=by_hf_id)
    deltas = dict(ctx["differences"]["per_experiment"]["by_model"]["deltas"])
    # median of (−0.02, −0.10, +0.05) = −0.02; small-7b +0.5
    assert deltas == pytest.approx({"small-7b": 0.5, "llama-2-70b / llama-2-70b-hf": -0.02})
    md = physical_section(t, models_by_hf_id=by_hf_id)
    assert "(median Δr): small-7b +0.500, llama-2-70b / llama-2-70b-hf -0.020." in md


def test_spearman_beside_pearson_in_every_count():
    """Physical better than seed: 2 of 3 by Pearson, 1 of 3 by Spearman; above the threshold
    by either r; paired Δr intervals above and below zero."""
    t = _report_tables()
    per = pd.DataFrame({"experiment_id": ["a", "b", "c"], "model": ["m1", "m2", "m3"],
                        "workload": "general", "seed_pearson_r": [0.5, 0.85, 0.9],
                        "phys_pearson_r": [0.9, 0.95, 0.7], "seed_spearman_r": [0.6, 0.9, 0.85],
                        "phys_spearman_r": [0.7, 0.8, 0.5], "phys_ci_low": 0.0,
                        "phys_ci_high": 1.0, "phys_loglog_r": 0.5, "phys_n_steps": 100,
                        "delta_ci_low": [0.3, -0.05, -0.3], "delta_ci_high": [0.5, 0.2, -0.1]})
    per["delta_r"] = per["phys_pearson_r"] - per["seed_pearson_r"]
    t.per_experiment = per
    md = physical_section(t)
    assert ("the physical total correlates better than the seed total in 2 by Pearson r and in "
            "1 of 3 by Spearman r. The paired 95% interval of Δr lies above zero in 1 and below "
            "zero in 1; in the others it includes zero.") in md
    assert ("Experiments above r = 0.8: 2 in seed mode, 2 in physical mode by Pearson r; 2 and "
            "0 by Spearman r.") in md
    assert "wholly above the seed's r" not in md


def test_measurement_verdict_table_shows_the_within_experiment_verdict():
    fi = _findings_input()
    fi.measurement = _measurement_tables()
    targets = ["step.duration_us", "step_forward_us", "step_period_us"]
    fi.measurement["within_experiment_verdict"] = pd.concat(
        [_within().assign(target=t) for t in targets])
    v = measurement_context(fi)["verdicts"]
    assert v.columns.tolist() == ["target", "prefill_subset", "passing", "required", "supported",
                                  "within_passing", "within_supported"]
    assert v["within_passing"].tolist() == [1, 2] * 3
    assert v["within_supported"].tolist() == [False, True] * 3
    text = findings_markdown(fi)
    assert "| step_forward_us | prefill_dominated | 4 | 2 | True | 2 | True |" in text
    assert "`within_passing` those whose median per-experiment r passes" in text
