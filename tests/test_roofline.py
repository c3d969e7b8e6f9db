"""The physical formulas (lib/stepdecomp/roofline.py), checked against hand arithmetic.

Llama-2-7B: d = 4096, L = 32, H = H_kv = 32, d_head = 128, d_ff = 11008, vocab 32000, fp16.
Mixtral-8x7B: d = 4096, L = 32, H = 32, H_kv = 8, d_head = 128, d_ff = 14336 per expert,
E = 8, k = 2, vocab 32000, bf16. H100 SXM: 989.5e12 FLOP/s, 3.35e12 B/s HBM, 450e9 B/s NVLink.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stepdecomp import roofline as rf
from stepdecomp.specs import load_gpu_spec, load_model_spec

LLAMA7 = "meta-llama/Llama-2-7b-hf"
MIXTRAL = "mistralai/Mixtral-8x7B-v0.1"
PEAK, HBM, NVLINK = 989.5e12, 3.35e12, 450e9

# Llama-2-7B per layer: QKV 4096·(3·4096) = 50_331_648, O 4096² = 16_777_216,
# MLP 3·4096·11008 = 135_266_304 -> 202_375_168; × 32 layers = 6_476_005_376 params
LLAMA7_PARAMS = 32 * (4096 * (3 * 4096) + 4096**2 + 3 * 4096 * 11008)
LLAMA7_FLOPS_PER_TOKEN = 2 * LLAMA7_PARAMS                       # 12_952_010_752
LLAMA7_LM_HEAD = 4096 * 32000                                     # 131_072_000 params
# Mixtral per layer: QKV 4096·(4096 + 2·1024) = 25_165_824, O 16_777_216, router 4096·8 =
# 32_768, one expert 3·4096·14336 = 176_160_768 -> per token 41_975_808 + 2·176_160_768
MIXTRAL_PER_TOKEN_LAYER = 4096 * 6144 + 4096**2 + 4096 * 8 + 2 * 3 * 4096 * 14336   # 394_297_344


@pytest.fixture(scope="module")
def llama():
    return load_model_spec(LLAMA7)


@pytest.fixture(scope="module")
def mixtral():
    return load_model_spec(MIXTRAL)


@pytest.fixture(scope="module")
def gpu():
    return load_gpu_spec("h100-sxm")


def test_constants(llama, gpu) -> None:
    assert LLAMA7_PARAMS == 6_476_005_376 == llama.non_embedding_params
    assert (gpu.peak_flops_per_s, gpu.hbm_bytes_per_s, gpu.nvlink_bytes_per_s) == (PEAK, HBM, NVLINK)


def test_llama_gemm_flops(llama) -> None:
    got = rf.gemm_flops(np.array([1, 100, 0]), llama, 1)
    assert got[0] == 12_952_010_752 == LLAMA7_FLOPS_PER_TOKEN      # exact integer
    assert got[0] == pytest.approx(1.3e10, rel=0.01)               # ≈ 2 × 6.48e9
    assert got[1] == 100 * 12_952_010_752 and got[2] == 0
    assert rf.gemm_flops(np.array([100]), llama, 2)[0] == 50 * 12_952_010_752   # sharded


def test_mixtral_gemm_uses_top_k_not_k_over_e(mixtral) -> None:
    got = rf.gemm_flops(np.array([1.0]), mixtral, 1)[0]
    assert got == 2 * 32 * MIXTRAL_PER_TOKEN_LAYER == 25_235_030_016
    # the seed's factor k/E = 2/8 would count a quarter of ONE expert: MLP 0.25·176_160_768
    seed_mlp = 0.25 * 3 * 4096 * 14336
    ours_mlp = got / (2 * 32) - (4096 * 6144 + 4096**2 + 4096 * 8)
    assert ours_mlp == 2 * 176_160_768 == 8 * seed_mlp


def test_attention_and_lm_head_flops(llama) -> None:
    # decode: Σctx = 1000 -> 4·32·128·1000·32 = 524_288_000
    assert rf.decode_attn_flops(np.array([1000]), llama, 1)[0] == 524_288_000
    # prefill: one chunk of 2048 from scratch, pairs 2048·2049/2 = 2_098_176;
    # 4·4096·32 = 524_288 FLOPs per pair -> 1_100_048_498_688
    assert rf.prefill_attn_flops(np.array([2_098_176]), llama, 1)[0] == 1_100_048_498_688
    assert rf.prefill_attn_flops(np.array([2_098_176]), llama, 2)[0] == 1_100_048_498_688 / 2
    # LM head: 2·10·4096·32000 = 2_621_440_000
    assert rf.lm_head_flops(np.array([10]), llama, 1)[0] == 2_621_440_000


def test_expected_distinct_experts(mixtral, llama) -> None:
    got = rf.expected_distinct_experts(np.array([0, 1, 2, 1000]), mixtral)
    # 8·(1 - 0.75^t): 0, 8·0.25 = 2, 8·(1 - 0.5625) = 3.5, → 8
    assert got[:3].tolist() == [0.0, 2.0, 3.5]
    assert got[3] == pytest.approx(8.0, abs=1e-9)
    assert rf.expected_distinct_experts(np.array([0, 1, 50]), llama).tolist() == [0.0, 1.0, 1.0]


def test_weight_bytes(llama, mixtral) -> None:
    # dense, 1 token, tp 1: every layer weight + the LM head, 2 bytes each
    got = rf.weight_bytes(np.array([1, 0]), llama, 1)
    assert got[0] == 2 * (6_476_005_376 + 131_072_000) == 13_214_154_752
    assert got[1] == 0
    # Mixtral, 1 token, tp 2: (attn + router + 2 experts)·32·2 B / 2 + LM head 131_072_000·2/2
    one = rf.weight_bytes(np.array([1]), mixtral, 2)[0]
    assert one == 32 * MIXTRAL_PER_TOKEN_LAYER + 131_072_000 == 12_748_587_008
    many = rf.layer_weight_bytes(np.array([10_000]), mixtral, 2)[0]
    assert many == pytest.approx(32 * (4096 * 6144 + 4096**2 + 4096 * 8 + 8 * 176_160_768))


def test_kv_bytes(llama, mixtral) -> None:
    # Llama-2-7B: 2 (K,V)·32 layers·32 heads·128·2 B = 524_288 B per token
    assert rf.kv_read_bytes(np.array([1]), llama, 1)[0] == 524_288
    assert rf.kv_write_bytes(np.array([3]), llama, 1)[0] == 3 * 524_288
    # Mixtral tp 2: 8 KV heads -> 4 per GPU: 2·32·4·128·2 = 65_536
    assert rf.kv_read_bytes(np.array([1]), mixtral, 2)[0] == 65_536
    # Mixtral tp 16 (hypothetical): fewer KV heads than GPUs -> one replicated head per GPU
    assert rf.kv_read_bytes(np.array([1]), mixtral, 16)[0] == 2 * 32 * 1 * 128 * 2


def test_roofline_picks_the_max(gpu) -> None:
    # 1 ms of compute vs 2 ms of memory -> 2000 µs; and the reverse -> 3000 µs
    got = rf.roofline_us(np.array([PEAK * 1e-3, PEAK * 3e-3]), np.array([HBM * 2e-3, HBM * 1e-3]), gpu)
    np.testing.assert_allclose(got, [2000.0, 3000.0])
    assert np.isnan(rf.roofline_us(np.array([np.nan]), np.array([1.0]), gpu)[0])


def test_allreduce(llama, gpu) -> None:
    assert rf.allreduce_us(np.array([100, 5000]), llama, 1, gpu).tolist() == [0.0, 0.0]
    # tp 2, 100 tokens: message 100·4096·2 = 819_200 B, ring 2·(1/2) of it per all-reduce,
    # 2 per layer × 32 layers -> 64·819_200 / 450e9 s = 116.508 µs
    got = rf.allreduce_us(np.array([100]), llama, 2, gpu)[0]
    assert got == pytest.approx(64 * 819_200 / 450e9 * 1e6) and got == pytest.approx(116.508, abs=1e-3)
    # tp 4: factor 2·3/4 = 1.5 instead of 1
    assert rf.allreduce_us(np.array([100]), llama, 4, gpu)[0] == pytest.approx(1.5 * got)


def test_hbm_lower_bound(llama, gpu) -> None:
    # 6_476_005_376 params · 2 B = 12_952_010_752 B ≈ 13.0e9 B / 3.35e12 B/s ≈ 3.87 ms
    got = float(rf.hbm_lower_bound_us(llama, 1, gpu))
    assert got == pytest.approx(12_952_010_752 / 3.35e12 * 1e6)
    assert got == pytest.approx(3900, rel=0.01)
    assert float(rf.hbm_lower_bound_us(llama, 2, gpu)) == pytest.approx(got / 2)


def _steps() -> pd.DataFrame:
    nan = np.nan
    return pd.DataFrame({
        "hf_id": [LLAMA7, LLAMA7, LLAMA7, LLAMA7, MIXTRAL],
        "tp": [1, 1, 1, 1, 2],
        "batch.prefill_tokens": [0, 1000, 512, 512, 0],
        "batch.decode_tokens": [4, 24, 0, 8, 1],
        "batch.num_prefill_reqs": [0, 1, 1, 1, 0],
        "batch.num_decode_reqs": [4, 24, 0, 8, 1],
        "step.duration_us": [10_000, 20_000, 5_000, 6_000, 8_000],
        "rec_decode_reqs": [4, 24, nan, nan, 1],
        "rec_decode_ctx_tokens": [1000, 24_000, nan, nan, 300],
        "rec_prefill_reqs": [0, 1, nan, nan, 0],
        "rec_prefill_tokens": [0, 1000, nan, nan, 0],
        "rec_prefill_attn_pairs": [0, 1000 * 3000 + 1000 * 1001 // 2, nan, nan, 0],
        "rec_prefill_kv_read_tokens": [0, 4000, nan, nan, 0],
        "rec_sampled_tokens": [4, 25, nan, nan, 1],
    })


def test_physical_components_pure_decode_row(llama, mixtral, gpu) -> None:
    out = rf.physical_components(_steps(), {LLAMA7: llama, MIXTRAL: mixtral}, gpu)
    assert list(out.columns) == rf.PHYS_COLUMNS
    r = out.iloc[0]
    # GEMM: 4·12_952_010_752 FLOPs (52 µs) vs 12_952_010_752 B (3866 µs): memory-bound
    assert r["phys_decode_gemm_flops"] == 4 * 12_952_010_752
    assert r["phys_decode_gemm_us"] == pytest.approx(12_952_010_752 / HBM * 1e6)
    assert r["phys_prefill_gemm_us"] == 0
    # decode attention: 524_288_000 FLOPs vs (1000 read + 4 written)·524_288 B
    assert r["phys_decode_attn_flops"] == 524_288_000
    assert r["phys_decode_attn_us"] == pytest.approx(1004 * 524_288 / HBM * 1e6)
    # LM head: 2·4·131_072_000 FLOPs vs 262_144_000 B
    assert r["phys_lm_head_us"] == pytest.approx(262_144_000 / HBM * 1e6)
    assert r["phys_allreduce_us"] == 0
    total = (12_952_010_752 + 1004 * 524_288 + 262_144_000) / HBM * 1e6   # ≈ 4101.6 µs
    assert r["phys_total_us"] == pytest.approx(total) and total == pytest.approx(4101.6, abs=0.1)
    assert r["phys_lower_bound_us"] == pytest.approx(3866.27, abs=0.01)
    flops = 4 * 12_952_010_752 + 524_288_000 + 2 * 4 * 131_072_000
    nbytes = 12_952_010_752 + 262_144_000 + 1000 * 524_288 + 4 * 524_288
    assert r["phys_total_flops"] == flops
    assert r["phys_arith_intensity_flops_per_byte"] == pytest.approx(flops / nbytes)
    assert r["phys_achieved_tflops"] == pytest.approx(flops / 10_000e-6 / 1e12)
    assert bool(r["phys_attn_from_journeys"])


def test_physical_components_mixed_split_and_fallbacks(llama, mixtral, gpu) -> None:
    out = rf.physical_components(_steps(), {LLAMA7: llama, MIXTRAL: mixtral}, gpu)
    mixed = out.iloc[1]
    # 1024 tokens: 1024·12_952_010_752 FLOPs / PEAK = 13_404 µs > 3866 µs memory -> compute;
    # split 1000 : 24 between prefill and decode
    gemm_us = 1024 * 12_952_010_752 / PEAK * 1e6
    assert mixed["phys_prefill_gemm_us"] == pytest.approx(gemm_us * 1000 / 1024)
    assert mixed["phys_decode_gemm_us"] == pytest.approx(gemm_us * 24 / 1024)
    # prefill attention from the reconstructed pairs: 3_500_500·524_288 FLOPs
    assert mixed["phys_prefill_attn_flops"] == 3_500_500 * 524_288
    # no journeys, pure prefill: one chunk of 512 -> 512·513/2 = 131_328 pairs; decode 0
    fb = out.iloc[2]
    assert fb["phys_prefill_attn_flops"] == 131_328 * 524_288
    assert fb["phys_decode_attn_us"] == 0 and np.isfinite(fb["phys_total_us"])
    assert not bool(fb["phys_attn_from_journeys"])
    # sampled falls back to num_decode_reqs + num_prefill_reqs = 1 -> LM head read once
    assert fb["phys_lm_head_flops"] == 2 * 131_072_000
    # no journeys with decodes: decode attention unknown -> NaN, and so is the total
    fd = out.iloc[3]
    assert np.isnan(fd["phys_decode_attn_us"]) and np.isnan(fd["phys_total_us"])
    assert np.isfinite(fd["phys_prefill_attn_us"]) and np.isfinite(fd["phys_decode_gemm_us"])
    # Mixtral tp 2, one decode token: 2 of 8 experts read; all-reduce 64·2·4096·(2·1/2)/NVLink
    mx = out.iloc[4]
    assert mx["phys_decode_gemm_flops"] == 25_235_030_016 / 2
    assert mx["phys_weight_bytes"] == 12_748_587_008
    assert mx["phys_allreduce_us"] == pytest.approx(64 * 4096 * 2 / NVLINK * 1e6)
    assert mx["phys_decode_attn_flops"] == 4 * 4096 * 300 * 32 / 2


def test_physical_components_unknown_model(llama, gpu) -> None:
    with pytest.raises(KeyError, match="Mixtral"):
        rf.physical_components(_steps(), {LLAMA7: llama}, gpu)


def test_hbm_lower_bound_moe_counts_only_the_certain_experts(gpu) -> None:
    from stepdecomp.specs import load_model_spec
    mix = load_model_spec("mistralai/Mixtral-8x7B-v0.1")
    # per layer: attention 4096·(4096 + 2·1024) + 4096·4096 = 41,943,040; router 4096·8;
    # two experts 2·3·4096·14336 = 352,321,536; × 32 layers × 2 B / TP 2 / 3.35e12 B/s
    per_layer = 4096 * (4096 + 2 * 1024) + 4096 * 4096 + 4096 * 8 + 2 * 3 * 4096 * 14336
    expected_us = 32 * per_layer * 2 / 2 / 3.35e12 * 1e6
    assert float(rf.hbm_lower_bound_us(mix, 2, gpu)) == pytest.approx(expected_us, rel=1e-12)
    assert expected_us == pytest.approx(3766.42, abs=0.01)
