"""Grouped attribution (attribution.group_attribution): per step, per token, per KV byte and
per weight byte, with hand-computed coefficients, shares, correlations and N/A reasons."""

import math

import numpy as np
import pandas as pd
import pytest

from stepdecomp.stats import attribution as A
from stepdecomp.run import pipeline


def _walsh(n: int, bit: int) -> np.ndarray:
    """±1 column, (−1)^(bit of the row index): orthogonal, mean 0 over n = 2^k rows."""
    return np.where((np.arange(n) >> bit) & 1, -1.0, 1.0)


def _frame(tokens: np.ndarray, kv_bytes: np.ndarray, weight_bytes: np.ndarray,
           y: np.ndarray) -> pd.DataFrame:
    """A frame of one experiment: tokens split 4 decode + the rest prefill, KV bytes split
    into a quarter written and three quarters read."""
    return pd.DataFrame({"experiment_id": "e1", "model": "m", "workload": "w",
                         "batch.prefill_tokens": tokens - 4, "batch.decode_tokens": 4.0,
                         "phys_kv_read_bytes": 0.75 * kv_bytes,
                         "phys_kv_write_bytes": 0.25 * kv_bytes,
                         "phys_weight_bytes": weight_bytes, "step.duration_us": y})


N = 16
TOKENS = 100 + 10 * _walsh(N, 0)          # sd 10
KV = 1e6 + 1e5 * _walsh(N, 1)             # sd 1e5, orthogonal to tokens


def test_exact_linear_target_recovers_coefficients_and_shares():
    """y = 2 µs/token · tokens + 1e-4 µs/KV byte · kv + 50 µs, tokens ⟂ kv: variances
    (2·10)² = 400 and (1e-4·1e5)² = 100, so shares 400/500 = 0.8 and 0.2, summing to R² = 1;
    weight bytes constant: absorbed by the intercept (50 µs)."""
    y = 2 * TOKENS + 1e-4 * KV + 50
    row = A.group_attribution(_frame(TOKENS, KV, np.full(N, 5e9), y)).iloc[0]
    assert row["n_steps"] == N and row["na_reason"] == ""
    assert row["r2"] == pytest.approx(1.0, abs=1e-12)
    assert row["intercept_us"] == pytest.approx(50.0, abs=1e-9)
    assert row["coef_us_per_token"] == pytest.approx(2.0, rel=1e-12)
    assert row["coef_us_per_kv_byte"] == pytest.approx(1e-4, rel=1e-12)
    assert row["share_r2_per_token"] == pytest.approx(0.8, abs=1e-12)
    assert row["share_r2_per_kv_byte"] == pytest.approx(0.2, abs=1e-12)
    assert row["share_r2_per_weight_byte"] == 0.0
    assert row["share_r2_per_token"] + row["share_r2_per_kv_byte"] == pytest.approx(1.0)
    assert bool(row["identified_per_token"]) and bool(row["identified_per_kv_byte"])
    assert row["reason_per_token"] == "" and row["reason_per_kv_byte"] == ""
    assert not row["identified_per_weight_byte"]
    assert row["reason_per_weight_byte"] == A.REASON_ABSORBED
    assert math.isnan(row["coef_us_per_weight_byte"])
    assert row["r_per_token__per_kv_byte"] == pytest.approx(0.0, abs=1e-12)
    assert bool(row["separable_per_token__per_kv_byte"])
    # r with a constant regressor is undefined: not separable (it is the intercept's)
    assert math.isnan(row["r_per_token__per_weight_byte"])
    assert not row["separable_per_token__per_weight_byte"]
    assert not row["separable_per_kv_byte__per_weight_byte"]


@pytest.mark.parametrize("noise, r, separable", [
    (1e3, 1 / math.sqrt(1.01), False),     # cov 1e5, sd 10 and √(1e8 + 1e6): r = 0.995
    (1e4, 1 / math.sqrt(2.0), True),       # sd √(1e8 + 1e8): r = 0.707
])
def test_collinear_tokens_and_kv_bytes_are_flagged_not_separable(noise, r, separable):
    """kv = 1000·tokens + noise·w (w ⟂ tokens, sd 1): r = 1000·100 / (10·√(1e8 + noise²))."""
    kv = 1000 * TOKENS + noise * _walsh(N, 1)
    y = 2 * TOKENS + 1e-4 * kv + 50
    row = A.group_attribution(_frame(TOKENS, kv, np.full(N, 5e9), y)).iloc[0]
    assert row["r_per_token__per_kv_byte"] == pytest.approx(r, rel=1e-12)
    assert bool(row["separable_per_token__per_kv_byte"]) is separable
    assert A.INSEPARABLE_ABS_R == 0.95


def test_varying_weight_bytes_are_a_regressor():
    """MoE-like: weight bytes vary (⟂ tokens and kv): y = ... + 2e-6 µs/weight byte · wb,
    variance (2e-6·1e6)² = 4 → share 4/504."""
    wb = 5e9 + 1e6 * _walsh(N, 2)
    y = 2 * TOKENS + 1e-4 * KV + 2e-6 * wb
    row = A.group_attribution(_frame(TOKENS, KV, wb, y)).iloc[0]
    assert row["coef_us_per_weight_byte"] == pytest.approx(2e-6, rel=1e-9)
    assert row["share_r2_per_weight_byte"] == pytest.approx(4 / 504, abs=1e-12)
    assert row["r_per_kv_byte__per_weight_byte"] == pytest.approx(0.0, abs=1e-12)
    assert bool(row["separable_per_kv_byte__per_weight_byte"])


def test_tiny_sample_and_constant_target_are_na_with_reason():
    n = A.MIN_FIT_ROWS - 1
    small = A.group_attribution(_frame(TOKENS[:n], KV[:n], np.full(n, 5e9),
                                       2 * TOKENS[:n] + 1))
    row = small.iloc[0]
    assert row["na_reason"] == A.fit_na_reason(n, 2) != ""
    assert math.isnan(row["r2"]) and math.isnan(row["share_r2_per_token"])
    assert [row[f"reason_{g}"] for g in A.GROUPS] == [A.REASON_TOO_FEW] * 3
    assert not row["identified_per_token"] and not row["separable_per_token__per_kv_byte"]
    flat = A.group_attribution(_frame(TOKENS, KV, np.full(N, 5e9), np.full(N, 7.0))).iloc[0]
    assert flat["na_reason"] == A.fit_na_reason(N, 2, target_varies=False)


def test_rows_without_the_target_are_skipped_and_missing_columns_named():
    y = 2 * TOKENS + 1e-4 * KV + 50
    y[[0, 3]] = np.nan
    assert A.group_attribution(_frame(TOKENS, KV, np.full(N, 5e9), y)).iloc[0]["n_steps"] == N - 2
    with pytest.raises(KeyError, match="phys_weight_bytes"):
        A.group_attribution(_frame(TOKENS, KV, np.full(N, 5e9), y).drop(
            columns="phys_weight_bytes"))


def test_is_a_per_target_per_experiment_statistic():
    assert isinstance(pipeline.PER_EXPERIMENT_STATISTICS["group_attribution"],
                      pipeline.PerTarget)
