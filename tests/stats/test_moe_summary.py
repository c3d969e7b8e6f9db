"""stats.moecheck.flat_from and moe_summary on hand-made MoE checks: where the GEMM estimate
before is flat, how much both estimates grow from there, the median Δr per model and target."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from stepdecomp.stats import moecheck


def test_flat_from():
    tokens = pd.Series([1, 16, 64, 256, 1024])
    assert moecheck.flat_from(tokens, pd.Series([400.0, 1390.0, 1400.0, 1400.0, 1417.8])) == 16
    assert moecheck.flat_from(tokens, pd.Series([1.0, 2.0, 4.0, 8.0, 16.0])) == 1024  # never
    assert moecheck.flat_from(tokens, pd.Series([5.0] * 5)) == 1
    # unsorted input is sorted by tokens first
    assert moecheck.flat_from(tokens[::-1], pd.Series([1417.8, 1400.0, 1400.0, 1390.0, 400.0])) == 16


def _check() -> pd.DataFrame:
    """Model b at TP 2 (listed first, sorted after a) and model a at TP 1."""
    return pd.DataFrame({
        "hf_id": ["org/b"] * 3 + ["org/a"] * 3, "tp": [2] * 3 + [1] * 3,
        "tokens": [1, 16, 64] * 2,
        "gemm_old_us": [100.0, 200.0, 210.0, 10.0, 20.0, 40.0],
        "gemm_new_us": [50.0, 100.0, 400.0, 5.0, 10.0, 30.0]})


def test_moe_summary_by_hand():
    delta = pd.DataFrame({"experiment_id": ["b1", "b2", "b3", "b1", "a1"],
                          "hf_id": ["org/b"] * 4 + ["org/a"],
                          "target": ["t1", "t1", "t1", "t2", "t2"],
                          "delta_r": [0.1, 0.5, 0.2, -0.3, 0.04]})
    s = moecheck.moe_summary(_check(), delta, ("t1", "t2"))
    assert s.columns.tolist() == moecheck.SUMMARY_COLUMNS
    assert s[["hf_id", "tp", "target", "flat_from_tokens", "tokens_max", "experiments"]
             ].values.tolist() == [["org/a", 1, "t1", 64, 64, 0], ["org/a", 1, "t2", 64, 64, 1],
                                   ["org/b", 2, "t1", 16, 64, 3], ["org/b", 2, "t2", 16, 64, 1]]
    # a never flattens (40/20 = 2 ≥ 1.1): growth 1 from 64 to 64; b: 210/200, 400/100 from 16
    assert s["growth_old"].tolist() == pytest.approx([1.0, 1.0, 1.05, 1.05])
    assert s["growth_new"].tolist() == pytest.approx([1.0, 1.0, 4.0, 4.0])
    assert math.isnan(s["median_delta_r"].iloc[0])                 # a has no experiment on t1
    assert s["median_delta_r"].iloc[1:].tolist() == pytest.approx([0.04, 0.2, -0.3])


def test_moe_summary_of_one_target_name():
    delta = pd.DataFrame({"hf_id": ["org/b"], "target": ["t1"], "delta_r": [0.3]})
    s = moecheck.moe_summary(_check(), delta, "t1")
    assert s["target"].tolist() == ["t1", "t1"]
    assert s["median_delta_r"].iloc[1] == pytest.approx(0.3)
