import numpy as np
import pandas as pd
import pytest

from stepdecomp.model import seed as seed_mode
from stepdecomp.hw.specs import load_gpu_spec, load_model_specs

LLAMA7, MIXTRAL, LLAMA70 = "meta-llama/Llama-2-7b-hf", "mistralai/Mixtral-8x7B-v0.1", "meta-llama/Llama-2-70b-hf"
PEAK = 989.5e12


def _steps(rows):
    cols = ["experiment_id", "model", "workload", "hf_id", "tp", "step.id", "batch.prefill_tokens",
            "batch.decode_tokens", "step.duration_us"]
    return pd.DataFrame(rows, columns=cols)


@pytest.fixture(scope="module")
def specs():
    return load_model_specs([LLAMA7, MIXTRAL, LLAMA70])


def test_seed_columns_by_hand(specs):
    steps = _steps([
        ["a", "llama-2-7b", "general", LLAMA7, 1, 1, 0, 1, 100],        # one decode token
        ["a", "llama-2-7b", "general", LLAMA7, 1, 2, 2048, 0, 100],     # one full prefill chunk
        ["a", "llama-2-7b", "general", LLAMA7, 1, 3, 1, 3, 100],        # P = 1: max(P/2, 1) = 1
        ["b", "mixtral-8x7b-v0-1", "codegen", MIXTRAL, 2, 1, 100, 0, 100],
        ["c", "llama-2-70b", "general", LLAMA70, 4, 1, 0, 10, 100],
    ])
    c = seed_mode.seed_components(steps, specs, load_gpu_spec())
    # Llama-2-7B, one token, one layer: QKV 2(4096² + 2·4096·4096), O 2·4096², MLP 2·3·4096·11008
    per_layer = 2 * (4096**2 + 2 * 4096 * 4096) + 2 * 4096**2 + 2 * 3 * 4096 * 11008
    assert per_layer == 404_750_336
    assert c.loc[0, "decode_gemm_us"] == pytest.approx(per_layer * 32 / PEAK * 1e6, rel=1e-12)
    assert c.loc[0, "decode_gemm_us"] == pytest.approx(13.0894, abs=1e-4)
    assert c.loc[0, ["prefill_gemm_us", "prefill_attn_us", "decode_attn_us"]].tolist() == [0, 0, 0]
    assert c.loc[1, "prefill_gemm_us"] == pytest.approx(2048 * per_layer * 32 / PEAK * 1e6, rel=1e-12)
    # attention: 2·(2·H·P·(P/2)·d_head)·L = 2·2·32·2048·1024·128·32 FLOPs
    assert c.loc[1, "prefill_attn_us"] == pytest.approx(2 * 2 * 32 * 2048 * 1024 * 128 * 32 / PEAK * 1e6, rel=1e-12)
    assert c.loc[2, "prefill_attn_us"] == pytest.approx(2 * 2 * 32 * 1 * 1 * 128 * 32 / PEAK * 1e6, rel=1e-12)
    assert c.loc[2, "decode_gemm_us"] == pytest.approx(3 * per_layer * 32 / PEAK * 1e6, rel=1e-12)
    # Mixtral, seed MoE factor 2/8, d_kv = 8·128 = 1024, TP 2
    moe_layer = 2 * (4096**2 + 2 * 4096 * 1024) + 2 * 4096**2 + 2 * 3 * 4096 * 14336 * 0.25
    assert moe_layer == 171_966_464
    assert c.loc[3, "prefill_gemm_us"] == pytest.approx(100 * moe_layer * 32 / 2 / PEAK * 1e6, rel=1e-12)
    # Llama-2-70B, GQA d_kv = 8·128, TP 4
    l70 = 2 * (8192**2 + 2 * 8192 * 1024) + 2 * 8192**2 + 2 * 3 * 8192 * 28672
    assert c.loc[4, "decode_gemm_us"] == pytest.approx(10 * l70 * 80 / 4 / PEAK * 1e6, rel=1e-12)
    total = c[["prefill_gemm_us", "prefill_attn_us", "decode_gemm_us", "decode_attn_us"]].sum(axis=1)
    np.testing.assert_allclose(c["total_analytical_us"], total)
    assert list(c.columns) == seed_mode.ID_COLUMNS + seed_mode.SEED_COLUMNS


def test_missing_spec_is_named(specs):
    steps = _steps([["a", "x", "general", "acme/X", 1, 1, 0, 1, 100]])
    with pytest.raises(KeyError, match="acme/X"):
        seed_mode.seed_components(steps, specs, load_gpu_spec())


def test_architecture_table_is_a_view_of_the_model_table(specs):
    from stepdecomp.hw.specs import model_table

    arch = seed_mode.architecture_table(specs)
    table = model_table(specs)
    assert list(arch.columns) == ["hf_id", *seed_mode.SEED_ARCH_COLUMNS]
    for arch_col, col in seed_mode.SEED_ARCH_COLUMNS.items():
        assert arch[arch_col].tolist() == table[col].tolist()
    # the seed's d_head is d/H as a float: 8192/64 = 128.0 for Llama-2-70B, d_kv = 8·128.0
    row = arch.set_index("hf_id").loc[LLAMA70]
    assert (row["arch_d_head"], row["arch_d_kv"], row["arch_d"]) == (128.0, 1024.0, 8192)
