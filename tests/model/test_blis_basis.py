"""BLIS's trained-physics basis (lib/stepdecomp/blis_basis.py) against BLIS's own golden values
(data/blis/basis_golden.csv, computed by BLIS f90a1e3a's Go code) and hand arithmetic.

Llama-2-7B: d = 4096, L = 32, H = H_kv = 32, d_h = 128, d_ff = 11008, 2-byte weights.
H100 SXM in BLIS: 989.5 TFLOP/s = 989.5e6 FLOP/µs, 3.35 TB/s = 3.35e6 bytes/µs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from stepdecomp.model import blis_basis as bb
from stepdecomp.model import physical as physical_mode
from stepdecomp.core.paths import DATA_DIR
from stepdecomp.hw.specs import ModelSpec, UnsupportedModelError, load_gpu_spec, load_model_spec

LLAMA7 = "meta-llama/Llama-2-7b-hf"
NEMO = "mistralai/Mistral-Nemo-Base-2407"
GOLDEN_CSV = DATA_DIR / "blis" / "basis_golden.csv"
GOLDEN_CASES = DATA_DIR / "blis" / "basis_golden_cases.json"
REL_TOL, ABS_TOL_US = 1e-8, 1e-6
F, W = 989.5e6, 3.35e6


def _golden() -> tuple[list[dict], pd.DataFrame]:
    cases = json.loads(GOLDEN_CASES.read_text())["cases"]
    table = pd.read_csv(GOLDEN_CSV).pivot(index="case", columns="quantity", values="value")
    return cases, table


CASES, GOLDEN = _golden()


@pytest.fixture(scope="module")
def hw() -> bb.BlisHardware:
    return bb.BlisHardware.from_gpu(load_gpu_spec("h100-sxm"))


@pytest.fixture(scope="module")
def llama() -> bb.BlisModel:
    return bb.BlisModel.from_spec(load_model_spec(LLAMA7))


def _aggregates(case: dict) -> bb.BatchAggregates:
    """prefill rows [num_new_tokens, input_len, progress_index], decode rows [input_len,
    progress_index, n_output_tokens]: BLIS's decode context is progress_index."""
    return bb.BatchAggregates.from_requests([(p[0], p[1]) for p in case["prefill"]],
                                            [d[1] for d in case["decode"]])


def test_hardware_is_blis_h100(hw) -> None:
    assert hw.peak_flops_per_us == 989.5e6
    assert hw.hbm_bytes_per_us == 3.35e6


def test_golden_file_covers_every_case_and_quantity() -> None:
    assert len(CASES) == 102 and len(GOLDEN) == 102
    assert set(GOLDEN.columns) == {*bb.GOLDEN_NAMES, "step_time_us_shipped"}
    assert {c["hf_id"] for c in CASES} == {
        LLAMA7, "meta-llama/Llama-2-70b-hf", "codellama/CodeLlama-34b-Instruct-hf",
        "mistralai/Mixtral-8x7B-v0.1", "meta-llama/Llama-3.1-8B", NEMO}


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_golden_basis(case, hw) -> None:
    m = bb.BlisModel.from_spec(load_model_spec(case["hf_id"]))
    got = bb.basis(_aggregates(case), m, case["tp"], hw)[0]
    want = GOLDEN.loc[case["id"], list(bb.GOLDEN_NAMES)].to_numpy(dtype=float)
    err = np.abs(got - want)
    ok = (err <= REL_TOL * np.abs(want)) | (err <= ABS_TOL_US)
    assert ok.all(), {n: (g, w) for n, g, w, o in zip(bb.GOLDEN_NAMES, got, want, ok) if not o}
    # BLIS's StepTime with its shipped coefficients, exactly (integer µs)
    shipped = bb.load_coefficients()
    assert bb.step_time_us(got[None], shipped.beta_array)[0] == \
        GOLDEN.loc[case["id"], "step_time_us_shipped"]
    assert bb.price_batch_us(load_model_spec(case["hf_id"]), case["tp"], hw, shipped,
                             [(p[0], p[1]) for p in case["prefill"]],
                             [d[1] for d in case["decode"]]) == \
        GOLDEN.loc[case["id"], "step_time_us_shipped"]


def test_one_decode_by_hand(llama, hw) -> None:
    # one decoder with 1000 context tokens on Llama-2-7B TP1:
    # projections 32·2·4096·(2·4096 + 2·4096) = 4_294_967_296; attention 32·4·32·1000·128 =
    # 524_288_000; FFN 32·6·4096·11008 = 8_657_043_456 -> 13_476_298_752 FLOPs / 989.5e6
    x = bb.basis(bb.BatchAggregates.from_requests([], [1000]), llama, 1, hw)[0]
    assert x[0] == 0.0
    assert x[1] == pytest.approx(13_476_298_752 / F, rel=1e-12)
    # weights 32·4096·16384·2 + 32·3·4096·11008·2 = 12_952_010_752 bytes
    assert x[2] == pytest.approx(12_952_010_752 / W, rel=1e-12)
    assert x[3] == 0.0                                # TP 1: no all-reduce
    assert x[4:8].tolist() == [32.0, 1.0, 1.0, 0.0]   # L, N, one, interleaved MoE
    # KV: 32·2·4096·2 = 524_288 bytes per token, (1000 read + 1 written)
    assert x[9] == pytest.approx(1001 * 524_288 / W, rel=1e-12)
    assert x[8] == 0.0 and x[10] == 0.0


def test_prefill_attention_uses_the_whole_input(llama, hw) -> None:
    # a 100-token chunk of a 3000-token prompt attends 3000 + 50 tokens per query in BLIS:
    # 32·4·32·100·3050·128 = 159_907_840_000 FLOPs beside 100 tokens of projections and FFN
    x = bb.basis(bb.BatchAggregates.from_requests([(100, 3000)], []), llama, 1, hw)[0]
    dense = 100 * (4_294_967_296 + 8_657_043_456)
    assert x[0] == pytest.approx((dense + 159_907_840_000) / F, rel=1e-12)
    assert x[8] == pytest.approx(100 * 524_288 / W, rel=1e-12)


def test_head_dim_is_hidden_over_heads() -> None:
    nemo = load_model_spec(NEMO)
    assert nemo.head_dim == 128                      # the config's, used by the physical mode
    assert bb.BlisModel.from_spec(nemo).head_dim == 160.0   # BLIS: 5120 / 32


def test_truncation_and_floor() -> None:
    beta = np.zeros(11)
    beta[6] = 1.0                                     # the per-step constant only
    x = np.zeros((4, 11))
    x[:, 6] = [0.2, 1.9, 12.7, np.nan]
    assert bb.step_time_us(x, beta)[:3].tolist() == [1.0, 1.0, 12.0]
    assert np.isnan(bb.step_time_us(x, beta)[3])
    assert bb.step_time_unrounded_us(x, beta)[:3].tolist() == [0.2, 1.9, 12.7]
    with pytest.raises(ValueError, match="expected 11 betas"):
        bb.step_time_us(x, beta[:10])


def test_shipped_coefficients() -> None:
    c = bb.load_coefficients()
    assert c.alpha == (15563.199579, 777.3455, 45.907545)
    assert c.beta == (0.152128, 0.0, 1.36252915, 0.752037, 32.09546717, 4.41684444, 126.024825,
                      481.8613888, 0.0, 1.94710771, 0.752037)


@pytest.mark.parametrize("alpha, beta, message", [
    ((1.0, 2.0), (0.0,) * 11, "alpha_coeffs: expected 3 values"),
    ((1.0, 2.0, 3.0), (0.0,) * 10, "beta_coeffs: expected 11 values"),
    ((1.0, 2.0, 3.0), (0.0,) * 10 + (-0.5,), r"bad at index \[10\]: \[-0.5\]"),
    ((1.0, math.nan, 3.0), (0.0,) * 11, r"alpha_coeffs: .* bad at index \[1\]"),
    ((1.0, 2.0, 3.0), (math.inf,) + (0.0,) * 10, r"beta_coeffs: .* bad at index \[0\]"),
])
def test_bad_coefficients_are_refused(alpha, beta, message) -> None:
    with pytest.raises(ValueError, match=message):
        bb.TrainedPhysicsCoefficients(alpha=alpha, beta=beta)


def test_coefficient_file_errors_name_the_file(tmp_path) -> None:
    bad = tmp_path / "coeffs.yaml"
    bad.write_text("alpha_coeffs: [1, 2, 3]\nbeta_coeffs: [1, 2]\n")
    with pytest.raises(ValueError, match="coeffs.yaml: beta_coeffs: expected 11"):
        bb.load_coefficients(bad)
    bad.write_text("alpha_coeffs: [1, 2, 3]\n")
    with pytest.raises(ValueError, match="coeffs.yaml: needs alpha_coeffs and beta_coeffs"):
        bb.load_coefficients(bad)
    bad.write_text("alpha_coeffs: [1, 2\n")
    with pytest.raises(ValueError, match="coeffs.yaml: not valid YAML"):
        bb.load_coefficients(bad)


def test_unknown_model_family_is_refused() -> None:
    spec = ModelSpec(hf_id="org/other", hidden_size=64, num_layers=2, num_heads=4,
                     num_kv_heads=4, head_dim=16, intermediate_size=128, vocab_size=100,
                     model_type="gemma")
    with pytest.raises(UnsupportedModelError, match="org/other: model_type 'gemma' has no BLIS"):
        bb.BlisModel.from_spec(spec)


def _components() -> pd.DataFrame:
    return pd.DataFrame({
        "hf_id": [LLAMA7, LLAMA7, LLAMA7],
        "tp": [1, 1, 2],
        "batch.prefill_tokens": [100, 0, 0],
        "batch.decode_tokens": [0, 1, 2],
        "phys_prefill_chunk_input_tokens": [300_000, 0, 0],
        "phys_prefill_chunk_sq_tokens": [10_000, 0, 0],
        "phys_decode_prior_ctx_tokens": [0, 1000, np.nan],
        "phys_batch_reqs": [1, 1, 2],
    })


def test_basis_table_matches_the_per_batch_basis(llama, hw) -> None:
    gpu = load_gpu_spec("h100-sxm")
    t = bb.basis_table(_components(), {LLAMA7: load_model_spec(LLAMA7)}, gpu)
    assert list(t.columns) == list(bb.BASIS_COLUMNS)
    one = bb.basis(bb.BatchAggregates.from_requests([(100, 3000)], []), llama, 1, hw)[0]
    np.testing.assert_array_equal(t.iloc[0].to_numpy(), one)
    dec = bb.basis(bb.BatchAggregates.from_requests([], [1000]), llama, 1, hw)[0]
    np.testing.assert_array_equal(t.iloc[1].to_numpy(), dec)
    # an unknown decode context (no journeys) leaves the decode terms NaN, not guessed
    assert np.isnan(t.loc[2, "blis_dc_compute_us"]) and np.isnan(t.loc[2, "blis_dc_kv_us"])
    assert t.loc[2, "blis_tp_us"] == pytest.approx(2 * 32 * 2 * 4096 * 2 * 2 * 0.5 / W)


def test_basis_table_error_paths() -> None:
    gpu = load_gpu_spec("h100-sxm")
    specs = {LLAMA7: load_model_spec(LLAMA7)}
    with pytest.raises(KeyError, match="phys_batch_reqs"):
        bb.basis_table(_components().drop(columns="phys_batch_reqs"), specs, gpu)
    with pytest.raises(KeyError, match="lacks column 'hf_id'"):
        bb.basis_table(_components().drop(columns="hf_id"), specs, gpu)
    with pytest.raises(KeyError, match="no ModelSpec"):
        bb.basis_table(_components(), {}, gpu)
    with pytest.raises(ValueError, match="negative"):
        bb.BatchAggregates.from_frame(_components().assign(phys_batch_reqs=-1))


def test_physical_mode_passes_the_aggregates() -> None:
    # one step with journeys (3 decoders with contexts incl. the new token summing to 3003;
    # a chunk of 100 of a 3000-token prompt) and one without
    steps = pd.DataFrame({
        "hf_id": [LLAMA7, LLAMA7], "tp": [1, 1],
        "batch.prefill_tokens": [100, 50], "batch.decode_tokens": [3, 2],
        "batch.num_prefill_reqs": [1, 1], "batch.num_decode_reqs": [3, 2],
        "step.duration_us": [100, 100],
        "rec_decode_reqs": [3, np.nan], "rec_decode_ctx_tokens": [3003, np.nan],
        "rec_prefill_reqs": [1, np.nan], "rec_prefill_tokens": [100, np.nan],
        "rec_prefill_attn_pairs": [100 * 200 + 5050, np.nan],
        "rec_prefill_kv_read_tokens": [300, np.nan], "rec_sampled_tokens": [3, np.nan],
        "rec_prefill_chunk_input_tokens": [300_000, np.nan],
        "rec_prefill_chunk_sq_tokens": [10_000, np.nan],
    })
    out = physical_mode.physical_components(steps, {LLAMA7: load_model_spec(LLAMA7)},
                                            load_gpu_spec("h100-sxm"))
    agg = out[list(physical_mode.BATCH_AGGREGATE_COLUMNS)]
    assert agg.iloc[0].tolist() == [4.0, 3000.0, 300_000.0, 10_000.0]
    assert agg.iloc[1, 0] == 3.0 and agg.iloc[1, 1:].isna().all()


# --------------------------------------------------------------------------- the line a replay prices with

@pytest.mark.parametrize("hf_id, tp", [("meta-llama/Llama-2-7b-hf", 1),
                                       ("mistralai/Mixtral-8x7B-v0.1", 2),
                                       ("meta-llama/Llama-2-70b-hf", 4)])
def test_linear_step_time_is_the_basis(hf_id: str, tp: int) -> None:
    """c0 + Σ slope·sum equals Σ β·basis on random batches (prefill only, decode only,
    mixed, empty), for random non-negative β."""
    from stepdecomp.hw.specs import load_gpu_spec, load_model_spec

    rng = np.random.default_rng(7)
    spec, gpu = load_model_spec(hf_id), load_gpu_spec("h100-sxm")
    m, hw = bb.BlisModel.from_spec(spec), bb.BlisHardware.from_gpu(gpu)
    beta = rng.uniform(0.0, 2.0, bb.N_BETA)
    line = bb.linear_step_time(spec, tp, gpu, beta)
    assert set(line) == {"constant", *bb.LINEAR_TERMS}
    for n_pre, n_dec in [(0, 0), (1, 0), (0, 7), (3, 90), (2, 128)]:
        pre = [(int(rng.integers(1, 600)), int(rng.integers(600, 3000))) for _ in range(n_pre)]
        dec = [int(c) for c in rng.integers(50, 3000, n_dec)]
        agg = bb.BatchAggregates.from_requests(pre, dec)
        exact = bb.step_time_unrounded_us(bb.basis(agg, m, tp, hw), beta)[0]
        line_us = line["constant"] + sum(line[t] * float(getattr(agg, t)[0]) for t in bb.LINEAR_TERMS)
        assert line_us == pytest.approx(exact, rel=1e-9, abs=1e-9)
