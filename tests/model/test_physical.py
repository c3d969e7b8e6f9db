"""The physical formulas (lib/stepdecomp/physical_mode.py), checked against hand arithmetic.

Llama-2-7B: d = 4096, L = 32, H = H_kv = 32, d_head = 128, d_ff = 11008, vocab 32000, fp16.
Mixtral-8x7B: d = 4096, L = 32, H = 32, H_kv = 8, d_head = 128, d_ff = 14336 per expert,
E = 8, k = 2, vocab 32000, bf16. H100 SXM: 989.5e12 FLOP/s, 3.35e12 B/s HBM, 450e9 B/s NVLink,
4.6 µs per all-reduce call.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from stepdecomp.stats import moecheck
from stepdecomp.model import physical as rf
from stepdecomp.hw import kernels
from stepdecomp.refdata.stepcost import build_step_cost
from stepdecomp.hw.specs import GpuSpec, load_gpu_spec, load_model_spec

LLAMA7 = "meta-llama/Llama-2-7b-hf"
MIXTRAL = "mistralai/Mixtral-8x7B-v0.1"
LLAMA70 = "meta-llama/Llama-2-70b-hf"
PEAK, HBM, NVLINK, AR_LATENCY_US = 989.5e12, 3.35e12, 450e9, 4.6

# Llama-2-7B per layer: QKV 4096·(3·4096) = 50_331_648, O 4096² = 16_777_216,
# MLP 3·4096·11008 = 135_266_304 -> 202_375_168; × 32 layers = 6_476_005_376 params
LLAMA7_PARAMS = 32 * (4096 * (3 * 4096) + 4096**2 + 3 * 4096 * 11008)
LLAMA7_FLOPS_PER_TOKEN = 2 * LLAMA7_PARAMS                       # 12_952_010_752
LLAMA7_LM_HEAD = 4096 * 32000                                     # 131_072_000 params
# Mixtral per layer: QKV 4096·(4096 + 2·1024) = 25_165_824, O 16_777_216, router 4096·8 =
# 32_768, one expert 3·4096·14336 = 176_160_768 -> per token 41_975_808 + 2·176_160_768
MIXTRAL_PER_TOKEN_LAYER = 4096 * 6144 + 4096**2 + 4096 * 8 + 2 * 3 * 4096 * 14336   # 394_297_344
MIXTRAL_NON_EXPERT_LAYER = 4096 * 6144 + 4096**2 + 4096 * 8                         # 41_975_808
MIXTRAL_EXPERT = 3 * 4096 * 14336                                                  # 176_160_768
# aiconfigurator-core h100_sxm vLLM 0.24.0 moe_perf, bf16 fused Triton MoE, balanced routing,
# hidden 4096, inter 14336, top-2 of 8, moe_tp 2: ms per layer at 1, 16 and 32 tokens
MOE_MS = {1: 0.163759996494, 16: 0.49033065637, 32: 0.493450681369}


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
    assert int(rf.allreduce_calls(llama)) == 2 * 32 + 1 == 65
    # tp 2, 100 tokens: message 100·4096·2 = 819_200 B, ring 2·(1/2) of it per call
    # = 1.820444 µs at 450e9 B/s, + 4.6 µs latency; 65 calls -> 417.329 µs
    got = rf.allreduce_us(np.array([100, 0]), llama, 2, gpu)
    assert got[0] == pytest.approx(65 * (4.6 + 819_200 / 450e9 * 1e6))
    assert got[0] == pytest.approx(417.329, abs=1e-3)
    assert got[1] == 0                                  # a step without tokens: no all-reduce
    # tp 4: ring factor 2·3/4 = 1.5 on the bandwidth part only
    assert rf.allreduce_us(np.array([100]), llama, 4, gpu)[0] == pytest.approx(
        65 * (4.6 + 1.5 * 819_200 / 450e9 * 1e6))


def test_allreduce_70b_tp4_forty_decode_tokens(gpu) -> None:
    # Llama-2-70B: L = 80, d = 8192 -> 161 calls; message 40·8192·2 = 655_360 B,
    # ring 1.5·655_360 / 450e9 s = 2.184533 µs; per call 4.6 + 2.184533 = 6.784533 µs
    # -> 161 · 6.784533 = 1092.31 µs (the bandwidth-only model gave 160·2.184533 = 349.5 µs)
    spec = load_model_spec(LLAMA70)
    assert (spec.num_layers, spec.hidden_size) == (80, 8192)
    got = rf.allreduce_us(np.array([40]), spec, 4, gpu)[0]
    assert got == pytest.approx(161 * (4.6 + 1.5 * 655_360 / 450e9 * 1e6))
    assert got == pytest.approx(1092.31, abs=0.01) and 800 <= got <= 1600


def test_allreduce_calls_match_the_replay(gpu) -> None:
    # refdata/stepcost.py prices (2L + 1) all-reduces per step: its comm table divided by one
    # call's measured latency must be 65 for a 32-layer model at tp 2
    spec = load_model_spec(MIXTRAL)
    # the measured part only: the replay's calibrated per-call latency (ALLREDUCE_CALL_US) aside
    cost = build_step_cost(spec, 2, budget_tokens=16, max_num_seqs=2, max_model_len=32,
                           allreduce_call_us=0.0)
    one = kernels.allreduce_tokens_us(np.array([10]), spec.hidden_size, 2)[0]
    assert cost.comm_us[10] / one == pytest.approx(65) == float(rf.allreduce_calls(spec))
    # and the per-call latency of the hardware file is the smallest-message latency of that
    # table's CUDA-graph rows, median over 2 / 4 / 8 GPUs (4.29 / 4.59 / 4.71 µs)
    ar = kernels.load_tables("h100_sxm", "bf16").allreduce
    ar = ar[(ar["backend"] == "vllm_graph") & (ar["message_size"] == ar["message_size"].min())]
    smallest_us = ar.groupby("num_gpus")["latency"].mean() * 1e3
    assert list(smallest_us.index) == [2, 4, 8]
    assert round(float(np.median(smallest_us)), 1) == gpu.allreduce_latency_us == AR_LATENCY_US


def test_allreduce_without_a_latency_is_refused(llama, gpu) -> None:
    bare = GpuSpec("Bare GPU", 989.5, 3.35, 80, 450.0)
    assert rf.allreduce_us(np.array([100]), llama, 1, bare).tolist() == [0.0]
    with pytest.raises(ValueError, match="Bare GPU: no allreduce_latency_us, needed for tp > 1"):
        rf.allreduce_us(np.array([100]), llama, 2, bare)


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
    # Mixtral tp 2, one decode token: 2 of 8 experts read;
    # all-reduce 65·(4.6 + 4096·2·(2·1/2)/NVLink) = 65·4.618204 = 300.1833 µs
    mx = out.iloc[4]
    assert mx["phys_decode_gemm_flops"] == 25_235_030_016 / 2
    assert mx["phys_weight_bytes"] == 12_748_587_008
    assert mx["phys_allreduce_us"] == pytest.approx(65 * (AR_LATENCY_US + 4096 * 2 / NVLINK * 1e6))
    assert mx["phys_allreduce_us"] == pytest.approx(300.1833, abs=1e-4)
    assert mx["phys_decode_attn_flops"] == 4 * 4096 * 300 * 32 / 2
    # GEMM: non-expert weights 41_975_808·32·2 B / 2 = 1_343_225_856 B -> 400.963 µs, plus the
    # measured fused MoE at 1 token, 32 layers · 163.76 µs = 5240.32 µs
    non_expert_us = MIXTRAL_NON_EXPERT_LAYER * 32 * 2 / 2 / HBM * 1e6
    assert non_expert_us == pytest.approx(400.963, abs=1e-3)
    assert mx["phys_moe_us"] == pytest.approx(32 * MOE_MS[1] * 1e3, rel=1e-9)
    assert mx["phys_decode_gemm_us"] == pytest.approx(non_expert_us + 32 * MOE_MS[1] * 1e3, rel=1e-9)
    assert mx["phys_gemm_us"] == mx["phys_decode_gemm_us"] and mx["phys_prefill_gemm_us"] == 0
    assert mx["phys_moe_source"] == rf.MOE_SOURCE_TABLE
    # dense rows: no MoE term, and the combined GEMM column is the sum of the split
    assert (out["phys_moe_source"].iloc[:4] == rf.MOE_SOURCE_DENSE).all()
    assert (out["phys_moe_us"].iloc[:4] == 0).all()
    np.testing.assert_allclose(out["phys_gemm_us"],
                               out["phys_prefill_gemm_us"] + out["phys_decode_gemm_us"], rtol=1e-12)
    assert mixed["phys_gemm_us"] == pytest.approx(gemm_us)


def test_physical_components_unknown_model(llama, gpu) -> None:
    with pytest.raises(KeyError, match="Mixtral"):
        rf.physical_components(_steps(), {LLAMA7: llama}, gpu)


def test_hbm_lower_bound_moe_counts_only_the_certain_experts(gpu) -> None:
    from stepdecomp.hw.specs import load_model_spec
    mix = load_model_spec("mistralai/Mixtral-8x7B-v0.1")
    # per layer: attention 4096·(4096 + 2·1024) + 4096·4096 = 41,943,040; router 4096·8;
    # two experts 2·3·4096·14336 = 352,321,536; × 32 layers × 2 B / TP 2 / 3.35e12 B/s
    per_layer = 4096 * (4096 + 2 * 1024) + 4096 * 4096 + 4096 * 8 + 2 * 3 * 4096 * 14336
    expected_us = 32 * per_layer * 2 / 2 / 3.35e12 * 1e6
    assert float(rf.hbm_lower_bound_us(mix, 2, gpu)) == pytest.approx(expected_us, rel=1e-12)
    assert expected_us == pytest.approx(3766.42, abs=0.01)


# --------------------------------------------------------------------------- fused MoE

def test_tokens_per_expert_and_fused_moe_bytes(mixtral, llama) -> None:
    # balanced routing: tokens·2/8 per expert; min(8, 2·tokens) experts touched
    assert rf.tokens_per_expert(np.array([1, 4, 16]), mixtral).tolist() == [0.25, 1.0, 4.0]
    got = rf.fused_moe_bytes(np.array([0, 1, 3, 4, 1000]), mixtral, 2)
    per_expert = 32 * MIXTRAL_EXPERT * 2 / 2                       # 5_637_144_576 B
    assert got.tolist() == [0.0, 2 * per_expert, 6 * per_expert, 8 * per_expert, 8 * per_expert]
    assert rf.fused_moe_flops(np.array([16]), mixtral, 2)[0] == 2 * 16 * 2 * MIXTRAL_EXPERT * 32 / 2
    assert rf.tokens_per_expert(np.array([7]), llama).tolist() == [7.0]


def test_fused_moe_measured_table(mixtral, gpu) -> None:
    # a measured token count: 32 layers × the table's latency
    got, source = rf.fused_moe_us(np.array([0, 16]), mixtral, 2, gpu)
    assert source == rf.MOE_SOURCE_TABLE
    assert got[0] == 0 and got[1] == pytest.approx(32 * MOE_MS[16] * 1e3, rel=1e-9)   # 15_690.6 µs
    # between measured counts: log-log linear, 24 tokens between 16 and 32
    w = math.log(24 / 16) / math.log(32 / 16)
    want = 32e3 * math.exp((1 - w) * math.log(MOE_MS[16]) + w * math.log(MOE_MS[32]))
    assert rf.fused_moe_us(np.array([24]), mixtral, 2, gpu)[0][0] == pytest.approx(want, rel=1e-9)
    # the step's GEMM adds the non-expert linears' roofline (memory-bound: 400.963 µs)
    gemm, moe, source = rf.step_gemm_us(np.array([16]), mixtral, 2, gpu)
    assert gemm[0] == pytest.approx(400.963 + 32 * MOE_MS[16] * 1e3, abs=1e-3)
    assert gemm[0] == pytest.approx(16_091.5, abs=0.1)


def test_fused_moe_efficiency_curve_without_tables(mixtral, gpu) -> None:
    no_tables = dataclasses.replace(gpu, name="GPU without tables", kernel_system=None,
                                    weight_precisions=())
    assert rf.moe_tables(mixtral, 2, no_tables) is None
    # 16 tokens, tp 2: 4 tokens per expert (knot log2 = 2, η = 0.858); all 8 experts read:
    # 32·8·176_160_768·2 B / 2 = 45_097_156_608 B / 3.35e12 = 13_461.84 µs (FLOPs: 182.3 µs)
    got, source = rf.fused_moe_us(np.array([16, 0]), mixtral, 2, no_tables)
    assert source == rf.MOE_SOURCE_CURVE
    assert got[0] == pytest.approx(45_097_156_608 / HBM * 1e6 / 0.858, rel=1e-12)
    assert got[0] == pytest.approx(15_689.8, abs=0.1) and got[1] == 0
    # 24 tokens: 6 per expert, η linear in log2 between knots 2 (0.858) and 3 (0.841)
    eta = 0.858 + (math.log2(6) - 2) * (0.841 - 0.858)
    got = rf.fused_moe_us(np.array([24]), mixtral, 2, no_tables)[0][0]
    assert got == pytest.approx(45_097_156_608 / HBM * 1e6 / eta, rel=1e-12)
    # one token: 2 experts, 0.25 per expert (knot -2, η = 0.781)
    one = rf.fused_moe_us(np.array([1]), mixtral, 2, no_tables)[0][0]
    assert one == pytest.approx(2 * 5_637_144_576 / HBM * 1e6 / 0.781, rel=1e-12)
    # a GPU with tables but an unmeasured TP (3) or shape also takes the curve
    assert rf.moe_tables(mixtral, 3, gpu) is None
    assert rf.fused_moe_us(np.array([16]), mixtral, 3, gpu)[1] == rf.MOE_SOURCE_CURVE
    wider = dataclasses.replace(mixtral, intermediate_size=16_000)
    assert rf.fused_moe_us(np.array([16]), wider, 2, gpu)[1] == rf.MOE_SOURCE_CURVE


def test_fused_moe_errors_and_dense(mixtral, llama, gpu) -> None:
    got, source = rf.fused_moe_us(np.array([5]), llama, 1, gpu)
    assert source == rf.MOE_SOURCE_DENSE and got.tolist() == [0.0]
    with pytest.raises(ValueError, match="no MoE kernel data for 4-byte weights"):
        rf.fused_moe_us(np.array([5]), dataclasses.replace(mixtral, bytes_per_param=4), 2, gpu)
    with pytest.raises(ValueError, match="no MoE efficiency curve for 'int4'"):
        rf.moe_efficiency(np.array([1.0]), "int4")


@pytest.mark.parametrize("hardware", ["h100-sxm", "h200-sxm"])
def test_hbm_lower_bound_stays_below_the_moe_gemm(mixtral, hardware) -> None:
    # the strict bound (k experts + non-expert weights at HBM speed) never exceeds the step's
    # GEMM time, on the measured tables and on the curve, at every token count 1 … 16_384
    gpu = load_gpu_spec(hardware)
    no_tables = dataclasses.replace(gpu, kernel_system=None, weight_precisions=())
    n = np.arange(1, 16_385)
    for tp in (1, 2, 4, 8):
        bound = float(rf.hbm_lower_bound_us(mixtral, tp, gpu))
        expert_floor = 32 * 2 * MIXTRAL_EXPERT * 2 / tp / gpu.hbm_bytes_per_s * 1e6
        for g in (gpu, no_tables):
            gemm, moe, _ = rf.step_gemm_us(n, mixtral, tp, g)
            assert (gemm >= bound).all(), (hardware, tp, g.kernel_system)
            assert (moe >= expert_floor).all(), (hardware, tp, g.kernel_system)


def test_efficiency_curve_is_the_fit_of_the_tables(gpu) -> None:
    for precision in ("bf16", "fp8"):
        fit = moecheck.fit_moe_efficiency(gpu, precision)
        assert fit["log2_tokens_per_expert"].tolist() == list(rf.MOE_EFFICIENCY_LOG2_KNOTS)
        assert tuple(fit["eta_median"].round(3)) == rf.MOE_EFFICIENCY[precision]
        assert (fit["n_rows"] > 0).all() and (fit["eta_median"] <= 1).all()
        assert (fit["eta_q25"] <= fit["eta_median"]).all()
    # the bf16 curve peaks near one token per expert and is lowest at 256–1024 per expert
    bf16 = dict(zip(rf.MOE_EFFICIENCY_LOG2_KNOTS, rf.MOE_EFFICIENCY["bf16"]))
    assert bf16[0] == 0.876 and bf16[9] == 0.422


def test_moe_gemm_check_old_flat_new_rising(mixtral, llama, gpu) -> None:
    specs = {MIXTRAL: mixtral, LLAMA7: llama}
    got = moecheck.moe_gemm_check(specs, [(MIXTRAL, 2), (LLAMA7, 1), (MIXTRAL, 2.0)], gpu)
    assert got["hf_id"].unique().tolist() == [MIXTRAL]           # dense skipped, pair deduplicated
    assert got["tokens"].tolist() == list(moecheck.MOE_CHECK_TOKENS)
    old, new = got["gemm_old_us"].to_numpy(), got["gemm_new_us"].to_numpy()
    # old: all 8 experts read by 64 tokens -> 32·(41_975_808 + 8·176_160_768)·2 B / 2 / HBM
    full_us = 32 * (MIXTRAL_NON_EXPERT_LAYER + 8 * MIXTRAL_EXPERT) * 2 / 2 / HBM * 1e6
    assert old[2:] == pytest.approx([full_us] * 3) and full_us == pytest.approx(13_862.8, abs=0.1)
    assert (np.diff(new) > 0).all() and new[-1] > 1.6 * new[0]
    assert new[1] == pytest.approx(16_091.5, abs=0.1)
    assert (got["moe_source"] == rf.MOE_SOURCE_TABLE).all()
    assert (got["lower_bound_us"] <= new).all()


def test_moe_delta_r_swaps_only_the_gemm_term(mixtral, llama, gpu) -> None:
    # 12 Mixtral decode steps of 8 … 1024 tokens whose target IS the new total, and 12 dense
    # steps (skipped): r_new = 1; r_old correlates the total with the old, flat GEMM
    n = np.array([8, 16, 24, 32, 48, 64, 96, 128, 256, 512, 768, 1024], dtype=float)
    new_gemm = rf.step_gemm_us(n, mixtral, 2, gpu)[0]
    other = 1_000.0 + 3.0 * n                                  # attention etc., any shape
    frame = pd.DataFrame({
        "experiment_id": ["mx"] * 12 + ["ll"] * 12, "hf_id": [MIXTRAL] * 12 + [LLAMA7] * 12,
        "tp": [2] * 12 + [1] * 12, "batch.prefill_tokens": 0.0,
        "batch.decode_tokens": np.concatenate([n, n]),
        "phys_gemm_us": np.concatenate([new_gemm, new_gemm]),
        "phys_total_us": np.concatenate([new_gemm + other, new_gemm + other])})
    frame["step_forward_us"] = frame["phys_total_us"]
    got = moecheck.moe_delta_r(frame, {MIXTRAL: mixtral, LLAMA7: llama}, gpu,
                             targets=["step_forward_us"])
    assert got["experiment_id"].tolist() == ["mx"] and int(got["n_steps"].iloc[0]) == 12
    old_total = rf.roofline_us(rf.gemm_flops(n, mixtral, 2), rf.layer_weight_bytes(n, mixtral, 2),
                               gpu) + other
    want_old = np.corrcoef(old_total, new_gemm + other)[0, 1]
    assert got["r_new"].iloc[0] == pytest.approx(1.0, abs=1e-12)
    assert got["r_old"].iloc[0] == pytest.approx(want_old, abs=1e-12) and want_old < 0.999
    assert got["delta_r"].iloc[0] == pytest.approx(1.0 - want_old, abs=1e-12)
