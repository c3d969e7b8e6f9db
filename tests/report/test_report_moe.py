"""report.moe: the MoE GEMM before and now, per MoE model, and what it did to the physical r."""

from __future__ import annotations

import pandas as pd
import pytest

from stepdecomp.stats import moecheck
from stepdecomp.report import moe
from report_tables import moe_summary, physical_section
from test_report import _moe_check, _moe_delta, _report_tables


def _per() -> pd.DataFrame:
    """Seed vs physical of two experiments of the MoE model and one dense one."""
    e1 = _report_tables().per_experiment.iloc[[0, 0, 0]].reset_index(drop=True)
    return e1.assign(experiment_id=["m1", "m2", "d1"], model=["beta-moe", "beta-moe", "alpha-7b"],
                     workload=["roleplay", "codegen", "general"],
                     seed_pearson_r=[0.726, 0.601, 0.7], phys_pearson_r=[0.9, 0.7, 0.95],
                     delta_r=[0.174, 0.099, 0.25], delta_ci_low=[0.15, -0.01, 0.2],
                     delta_ci_high=[0.2, 0.2, 0.3])


def _delta() -> pd.DataFrame:
    return pd.DataFrame({"experiment_id": ["m1", "m2"], "hf_id": "org/beta-moe", "n_steps": 100,
                         "r_old": [0.36, 0.49], "r_new": [0.9, 0.7],
                         "delta_r": [0.54, 0.21]})


def test_moe_context_numbers():
    by_hf_id = {"org/beta-moe": ["beta-moe", "beta-moe-hf"]}
    (m,) = moe.moe_check_context(_moe_check(), moe_summary(_moe_check(), _delta()), _delta(),
                                 _per(), by_hf_id)["models"]
    assert (m["model"], m["tp"], m["flat_from"], m["tokens_max"], m["flat"]) == \
        ("beta-moe / beta-moe-hf", 2, 16, 1024, True)
    # 1417.8 / 1390 and 2600 / 600, both from 16 tokens
    assert m["growth_old"] == pytest.approx(1.02) and m["growth_new"] == pytest.approx(13 / 3)
    assert [(e["workload"], e["r_old"], e["r_new"], e["seed_delta"]) for e in m["experiments"]] \
        == [("roleplay", 0.36, 0.9, 0.174), ("codegen", 0.49, 0.7, 0.099)]
    assert m["median_delta"] == pytest.approx(0.375) and m["change"] == "up"
    assert m["table"].columns.tolist() == ["tokens", "gemm_old_us", "gemm_new_us", "lower_bound_us"]


def test_moe_section_text():
    t = _report_tables()
    t.per_experiment, t.moe_delta = _per(), _delta()
    md = physical_section(t, target="step_forward_us")
    assert ("| tokens (org/beta-moe, TP 2) | GEMM before (µs) | GEMM now (µs) | HBM lower bound "
            "(µs) |\n|---|---|---|---|\n| 1 | 400 | 350 | 300 |") in md
    assert ("**org/beta-moe:** from 16 to 1,024 tokens the estimate before was flat (×1.02); over "
            "the same tokens the one now grows ×4.33. The physical total's r against "
            "`step_forward_us` with the GEMM before → now, and its Δr against the seed now: "
            "beta-moe, roleplay (r 0.360 → 0.900, Δr vs seed +0.174 [0.150, 0.200]); beta-moe, "
            "codegen (r 0.490 → 0.700, Δr vs seed +0.099 [-0.010, 0.200]). *Inference:* a GEMM "
            "estimate that stays flat while batches grow cannot follow a step time that grows "
            "with them;") in md


def test_moe_without_change_says_so():
    delta = _delta().assign(r_new=[0.37, 0.5], delta_r=[0.01, 0.01])
    t = _report_tables()
    t.per_experiment, t.moe_delta = _per(), delta
    md = physical_section(t)
    section = md[md.index("### The MoE GEMM"):md.index("### What Differs")]
    assert "The per-expert cost leaves the physical r about where it was" in section
    assert "*Inference:*" not in section


def test_moe_tables_need_their_columns():
    with pytest.raises(KeyError, match=r"moe_gemm_check lacks column\(s\) \['gemm_new_us'\]"):
        moe.moe_check_context(_moe_check().drop(columns="gemm_new_us"), None)
    summary = moe_summary(_moe_check(), _moe_delta())
    with pytest.raises(KeyError, match=r"moe_delta_r lacks column\(s\) \['r_old'\]"):
        moe.moe_check_context(_moe_check(), summary, _moe_delta().drop(columns="r_old"))
    with pytest.raises(KeyError, match=r"moe_check_summary lacks column\(s\) \['growth_new'\]"):
        moe.moe_check_context(_moe_check(), summary.drop(columns="growth_new"))
    with pytest.raises(KeyError, match="moe_gemm_check is there but not moe_check_summary "
                       r"\(notebook 04_correlation writes both\)"):
        moe.moe_check_context(_moe_check(), None)
    with pytest.raises(KeyError, match="moe_check_summary has no row of org/beta-moe at TP 2"):
        moe.moe_check_context(_moe_check(), summary.assign(tp=4))


def test_moe_tables_from_the_physical_model():
    """moe_check_tables runs moefit on the run's MoE models only: Mixtral at TP 2 (one row per
    check token count), the dense model skipped; moe_delta_r on the one target asked for."""
    import numpy as np

    from stepdecomp.stats.moecheck import MOE_CHECK_TOKENS
    from stepdecomp.hw.specs import load_gpu_spec, load_model_specs

    mixtral, llama = "mistralai/Mixtral-8x7B-v0.1", "meta-llama/Llama-2-7b-hf"
    specs = load_model_specs(pd.Series([mixtral, llama]))
    steps = pd.DataFrame({"experiment_id": ["m", "d"], "hf_id": [mixtral, llama], "tp": [2, 1]})
    n = 40
    tokens = np.arange(1, n + 1, dtype=float)
    comp = pd.DataFrame({"experiment_id": ["m"] * n + ["d"] * n, "tp": [2] * n + [1] * n,
                         "batch.prefill_tokens": 0.0, "batch.decode_tokens": np.r_[tokens, tokens]})
    comp["phys_gemm_us"] = 100.0 + comp["batch.decode_tokens"]
    comp["phys_total_us"] = comp["phys_gemm_us"] + 50.0
    comp["step_forward_us"] = 2.0 * comp["phys_total_us"]
    comp["step_period_us"] = comp["step_forward_us"]
    check, delta = moecheck.moe_check_tables(steps, comp, specs, load_gpu_spec("h100-sxm"), "step_forward_us")
    assert check["hf_id"].unique().tolist() == [mixtral] and check["tp"].unique().tolist() == [2]
    assert check["tokens"].tolist() == list(MOE_CHECK_TOKENS)
    assert delta[["experiment_id", "target", "n_steps"]].values.tolist() == [
        ["m", "step_forward_us", n]]
    assert delta["r_new"].iloc[0] == pytest.approx(1.0)        # the target is 2 × the new total
    assert moecheck.moe_check_tables(steps[steps.hf_id == llama], comp, specs, load_gpu_spec("h100-sxm"),
                          "step_forward_us") == (None, None)
