"""Measured-kernel interpolation (lib/stepdecomp/refdata/kernels.py).

Every expected value is either read straight from the packaged parquet table (a measured
point must come back unchanged) or follows from it by the documented rule, worked out in
the comment next to the assertion.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stepdecomp.hw import kernels as K


@pytest.fixture(scope="module")
def tables() -> K.KernelTables:
    return K.load_tables()


def _raw(op: str, name: str) -> pd.DataFrame:
    return pd.read_parquet(K.tables_dir() / op / "vllm" / K.VLLM_VERSION / name)


def test_tables_come_from_the_installed_package() -> None:
    import aiconfigurator_core

    root = K.tables_dir()
    assert root.is_dir()
    assert Path(aiconfigurator_core.__file__).parent in root.parents
    assert (root / "gemm" / "vllm" / K.VLLM_VERSION / "gemm_perf.parquet").is_file()


def test_filters_keep_bf16_only(tables: K.KernelTables) -> None:
    raw = _raw("gemm", "gemm_perf.parquet")
    assert len(tables.gemm) == int((raw["gemm_dtype"] == "bfloat16").sum())
    assert not tables.gemm.duplicated(["m", "n", "k"]).any()
    assert set(tables.allreduce["backend"]) == {"vllm_graph", "vllm_eager"}


def test_loglog_interp_rules() -> None:
    xp, fp = np.array([1.0, 10.0, 100.0]), np.array([2.0, 2.0, 20.0])
    # at the knots: exact; between 10 and 100 the power law 2·(x/10): f(31.6…) = 2·sqrt(10)
    got = K.loglog_interp(np.array([1.0, 10.0, 100.0, math.sqrt(1000.0)]), xp, fp)
    np.testing.assert_allclose(got, [2.0, 2.0, 20.0, 2.0 * math.sqrt(10.0)])
    # below the first point: held (launch-bound); beyond the last: proportional
    np.testing.assert_allclose(K.loglog_interp(np.array([0.5, 400.0]), xp, fp), [2.0, 80.0])


def test_gemm_measured_point_is_returned_unchanged(tables: K.KernelTables) -> None:
    raw = _raw("gemm", "gemm_perf.parquet")
    row = raw[(raw["gemm_dtype"] == "bfloat16") & (raw["m"] == 2048) & (raw["n"] == 12288)
              & (raw["k"] == 4096)]
    assert len(row) == 1
    # Llama-2-7B's fused QKV projection at 2048 tokens: the table's ms -> µs
    got = K.gemm_latency_us(2048, 12288, 4096, tables)
    assert float(got) == pytest.approx(float(row["latency"].iloc[0]) * 1000.0, rel=1e-12)
    assert float(K.gemm_latency_us(0, 12288, 4096, tables)) == 0.0


def test_gemm_between_measured_m_is_geometric(tables: K.KernelTables) -> None:
    g = tables.gemm
    sub = g[(g["n"] == 12288) & (g["k"] == 4096)].set_index("m")["latency"]
    lo, hi = sub.loc[4353], sub.loc[8192]           # adjacent measured m
    m = math.sqrt(4353 * 8192)                      # log midpoint -> geometric mean latency
    got = float(K.gemm_latency_us(m, 12288, 4096, tables))
    assert got == pytest.approx(math.sqrt(lo * hi) * 1000.0, rel=1e-9)


def test_unmeasured_gemm_scales_by_nk(tables: K.KernelTables) -> None:
    # Llama-2-7B gate/up: n = 2·11008 = 22016 is not measured; nearest in log space is
    # n' = 16384 (|ln 22016/16384| = 0.30 < |ln 51200/22016| = 0.84), same k
    assert K.nearest_gemm_shape(22016, 4096, tables) == (16384, 4096)
    assert not K.is_measured_gemm(22016, 4096, tables)
    m = np.array([1, 64, 1000, 2048])
    np.testing.assert_allclose(K.gemm_latency_us(m, 22016, 4096, tables),
                               K.gemm_latency_us(m, 16384, 4096, tables) * 22016 / 16384)


def test_context_attention_measured_point(tables: K.KernelTables) -> None:
    raw = _raw("attention", "context_attention_perf.parquet")
    row = raw[(raw["kernel_source"] == K.ATTENTION_KERNEL) & (raw["kv_cache_dtype"] == "bfloat16")
              & (raw["window_size"] == 0) & (raw["batch_size"] == 1) & (raw["isl"] == 1024)
              & (raw["num_heads"] == 32) & (raw["num_key_value_heads"] == 32)
              & (raw["head_dim"] == 128)]
    assert len(row) == 1
    got = float(K.context_attention_us(1024, 32, 32, 128, tables))
    assert got == pytest.approx(float(row["latency"].iloc[0]) * 1000.0, rel=1e-12)


def test_chunk_attention_equivalent_length(tables: K.KernelTables) -> None:
    # c = 3 new tokens after p = 4 cached: 3·4 + 3²/2 = 16.5 pairs = n²/2 -> n = sqrt(33)
    assert float(K.equivalent_prefill_tokens(3, 4)) == pytest.approx(math.sqrt(33.0))
    # without prior context a chunk is a whole prefill
    assert float(K.chunk_attention_us(1024, 0, 16, 2, 128, tables)) == pytest.approx(
        float(K.context_attention_us(1024, 16, 2, 128, tables)))


def test_generation_attention_measured_and_reshaped(tables: K.KernelTables) -> None:
    raw = _raw("attention", "generation_attention_perf.parquet")
    sel = ((raw["kernel_source"] == K.ATTENTION_KERNEL) & (raw["kv_cache_dtype"] == "bfloat16")
           & (raw["window_size"] == 0) & (raw["head_dim"] == 128) & (raw["step"] == 1023))
    # measured: Llama-2-70B at TP4 has 16 query / 2 KV heads per GPU; 64 sequences,
    # KV length isl + step = 1 + 1023 = 1024
    r70 = raw[sel & (raw["num_heads"] == 16) & (raw["num_key_value_heads"] == 2)
              & (raw["batch_size"] == 64)]
    got = K.generation_attention_grid_us(np.array([64]), np.array([1024]), 16, 2, 128, tables)
    assert float(got[0, 0]) == pytest.approx(float(r70["latency"].iloc[0]) * 1000.0, rel=1e-9)
    # reshaped: Llama-2-7B's 32/32 heads (KV heads not measured above 8) for 16 sequences
    # = 8/8 heads for 4·16 = 64 sequences, a measured point
    r7 = raw[sel & (raw["num_heads"] == 8) & (raw["num_key_value_heads"] == 8)
             & (raw["batch_size"] == 64)]
    got = K.generation_attention_grid_us(np.array([0, 16]), np.array([1024]), 32, 32, 128, tables)
    assert float(got[0, 0]) == 0.0
    assert float(got[1, 0]) == pytest.approx(float(r7["latency"].iloc[0]) * 1000.0, rel=1e-9)


def test_generation_attention_grows_with_work(tables: K.KernelTables) -> None:
    grid = K.generation_attention_grid_us(np.arange(1, 129), np.array([256, 1024, 4096]),
                                          32, 4, 128, tables)
    assert np.all(np.diff(grid, axis=1) > 0)             # longer KV costs more
    assert grid[-1, -1] > 10 * grid[0, 0]


def test_allreduce(tables: K.KernelTables) -> None:
    ar = tables.allreduce
    graph = ar[(ar["num_gpus"] == 2) & (ar["backend"] == "vllm_graph") & (ar["message_size"] == 524288)]
    eager = ar[(ar["num_gpus"] == 2) & (ar["backend"] == "vllm_eager") & (ar["message_size"] == 4194304)]
    # 128 tokens × 4096 = 524288 elements: inside a CUDA graph
    assert float(K.allreduce_tokens_us(np.array([128]), 4096, 2, tables)[0]) == pytest.approx(
        float(graph["latency"].iloc[0]) * 1000.0)
    # 1024 tokens × 4096 = 4194304 elements: above CUDA_GRAPH_MAX_TOKENS, eager
    assert float(K.allreduce_tokens_us(np.array([1024]), 4096, 2, tables)[0]) == pytest.approx(
        float(eager["latency"].iloc[0]) * 1000.0)
    assert np.all(K.allreduce_tokens_us(np.array([1, 2048]), 4096, 1, tables) == 0.0)


def test_moe_measured_point(tables: K.KernelTables) -> None:
    m = tables.moe
    row = m[(m["num_tokens"] == 2048) & (m["hidden_size"] == 4096) & (m["inter_size"] == 14336)
            & (m["topk"] == 2) & (m["num_experts"] == 8) & (m["moe_tp_size"] == 2)]
    assert len(row) == 1
    got = float(K.moe_latency_us(2048, 4096, 14336, 2, 8, 2, tables))
    assert got == pytest.approx(float(row["latency"].iloc[0]) * 1000.0, rel=1e-12)
    with pytest.raises(LookupError):
        K.moe_latency_us(1, 4096, 14336, 2, 8, 3, tables)


# --------------------------------------------------------------------------- kernel scaling

def test_kernel_scale_multiplies_each_family_alone() -> None:
    """Each factor scales exactly its family's table (sensitivity runs); 1 is as measured."""
    from stepdecomp.refdata.stepcost import KernelScale, build_step_cost
    from stepdecomp.hw.specs import load_model_spec

    spec = load_model_spec("mistralai/Mixtral-8x7B-v0.1")
    base = build_step_cost(spec, 2, 256, 16, 1024, allreduce_call_us=0.0)
    moe = build_step_cost(spec, 2, 256, 16, 1024, scale=KernelScale(moe=1.2))
    dense = build_step_cost(spec, 2, 256, 16, 1024, scale=KernelScale(gemm=0.8))
    both = build_step_cost(spec, 2, 256, 16, 1024, scale=KernelScale(gemm=0.8, moe=1.2))
    np.testing.assert_allclose(both.gemm_us - base.gemm_us,
                               (moe.gemm_us - base.gemm_us) + (dense.gemm_us - base.gemm_us))
    assert (moe.gemm_us[1:] > base.gemm_us[1:]).all() and (dense.gemm_us[1:] < base.gemm_us[1:]).all()
    for field, arr in (("allreduce", "comm_us"), ("lm_head", "lm_head_us"),
                       ("prefill_attention", "prefill_attn_us"),
                       ("decode_attention", "decode_attn_us")):
        scaled = build_step_cost(spec, 2, 256, 16, 1024, scale=KernelScale(**{field: 1.15}),
                                 allreduce_call_us=0.0)
        np.testing.assert_allclose(getattr(scaled, arr), 1.15 * getattr(base, arr))
        np.testing.assert_array_equal(scaled.gemm_us, base.gemm_us)


@pytest.mark.parametrize("items, message", [(["gemm"], "expected family=factor"),
                                            (["flash=1.1"], "expected family=factor"),
                                            (["gemm=fast"], "is not a number"),
                                            (["gemm=0"], "finite factor > 0"),
                                            (["moe=nan"], "finite factor > 0")])
def test_kernel_scale_refuses_bad_factors(items: list[str], message: str) -> None:
    from stepdecomp.refdata.stepcost import KernelScale
    with pytest.raises(ValueError, match=message):
        KernelScale.parse(items)


def test_allreduce_call_latency_adds_per_call_with_tp_only() -> None:
    """ALLREDUCE_CALL_US: each of the 2L + 1 all-reduce calls of a step costs that much more
    with TP > 1 (65 calls for Mixtral's 32 layers), nothing at TP 1; a negative value is refused."""
    from stepdecomp.refdata.stepcost import build_step_cost
    from stepdecomp.hw.specs import load_model_spec

    mix = load_model_spec("mistralai/Mixtral-8x7B-v0.1")
    a = build_step_cost(mix, 2, 64, 4, 256, allreduce_call_us=0.0)
    b = build_step_cost(mix, 2, 64, 4, 256, allreduce_call_us=10.0)
    np.testing.assert_allclose(b.comm_us - a.comm_us, 65 * 10.0)
    l7 = load_model_spec("meta-llama/Llama-2-7b-hf")
    np.testing.assert_array_equal(build_step_cost(l7, 1, 64, 4, 256, allreduce_call_us=10.0).comm_us,
                                  build_step_cost(l7, 1, 64, 4, 256, allreduce_call_us=0.0).comm_us)
    with pytest.raises(ValueError, match="allreduce_call_us"):
        build_step_cost(mix, 2, 64, 4, 256, allreduce_call_us=-1.0)
