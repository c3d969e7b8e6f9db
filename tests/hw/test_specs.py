import dataclasses
import json

import pytest

from stepdecomp.core.paths import HARDWARE_DIR
from stepdecomp.hw.specs import (GpuSpec, ModelSpec, UnknownModelError, load_gpu_spec,
                                 load_model_spec)

LLAMA7 = "meta-llama/Llama-2-7b-hf"
MIXTRAL = "mistralai/Mixtral-8x7B-v0.1"


def test_llama2_7b_shape_and_published_parameter_count():
    s = load_model_spec(LLAMA7)
    assert (s.hidden_size, s.num_layers, s.num_heads, s.num_kv_heads, s.head_dim) == (4096, 32, 32, 32, 128)
    # per layer: QKV+O 4·4096² + MLP 3·4096·11008
    assert s.layer_params == 4 * 4096**2 + 3 * 4096 * 11008 == 202_375_168
    assert s.non_embedding_params == 32 * 202_375_168 == 6_476_005_376
    # + embedding and LM head (32000 × 4096 each): the published 6.74 B
    assert s.total_params == 6_738_149_376


def test_mixtral_moe_fields_and_seed_factor():
    s = load_model_spec(MIXTRAL)
    assert s.is_moe and (s.num_experts, s.experts_per_token) == (8, 2)
    assert s.kv_dim == 8 * 128 == 1024
    assert s.seed_moe_factor == 0.25
    # published total ≈ 46.7 B
    assert round(s.total_params / 1e9, 1) == 46.7


def test_model_invariants_are_checked():
    s = load_model_spec(LLAMA7)
    with pytest.raises(ValueError, match="not a multiple"):
        dataclasses.replace(s, num_kv_heads=5)
    with pytest.raises(ValueError, match="experts_per_token"):
        dataclasses.replace(s, num_experts=2, experts_per_token=3)
    with pytest.raises(ValueError, match="positive"):
        dataclasses.replace(s, hidden_size=0)


def test_unknown_model_names_model_and_path():
    with pytest.raises(UnknownModelError, match=r"acme/Nope-1b.*data/models/acme/Nope-1b/config.json"):
        load_model_spec("acme/Nope-1b")


def test_h100_constants_come_from_the_data_file():
    g = load_gpu_spec("h100-sxm")
    assert g.peak_flops_per_s == 989.5e12
    assert g.hbm_bytes_per_s == 3.35e12
    assert g.hbm_bytes == 80 * 2**30
    assert g.ridge_flops_per_byte == pytest.approx(295.37, abs=0.01)
    with pytest.raises(FileNotFoundError, match="no hardware spec 'b300'"):
        load_gpu_spec("b300")
    with pytest.raises(ValueError):
        GpuSpec("x", 0, 1, 1, 1)


def test_allreduce_latency_is_a_sourced_hardware_constant():
    g = load_gpu_spec("h100-sxm")
    assert g.allreduce_latency_us == 4.6
    assert "custom_allreduce_perf" in g.allreduce_latency_source
    assert load_gpu_spec("h200-sxm").allreduce_latency_us == 4.4
    with pytest.raises(ValueError, match="allreduce_latency_us must be positive"):
        dataclasses.replace(g, allreduce_latency_us=0.0)
    with pytest.raises(ValueError, match="needs an allreduce_latency_source"):
        dataclasses.replace(g, allreduce_latency_source="")
    # a spec built in code may leave it out (physical_mode.allreduce_us refuses it for tp > 1)
    assert GpuSpec("x", 1, 1, 1, 1).allreduce_latency_us is None


def _write_gpu(tmp_path, **overrides):
    raw = json.loads((HARDWARE_DIR / "h100-sxm.json").read_text())
    raw.update(overrides)
    raw = {k: v for k, v in raw.items() if v is not None}
    (tmp_path / "test-gpu.json").write_text(json.dumps(raw))
    return tmp_path


def test_hardware_file_missing_field_names_file_and_field(tmp_path):
    d = _write_gpu(tmp_path, allreduce_latency_us=None)
    with pytest.raises(ValueError, match=r"test-gpu\.json: missing required field\(s\) "
                                         r"\['allreduce_latency_us'\]"):
        load_gpu_spec("test-gpu", d)
    d = _write_gpu(tmp_path, allreduce_latency_source=None, hbm_tb_per_s=None)
    with pytest.raises(ValueError, match=r"test-gpu\.json: missing required field\(s\) "
                                         r"\['hbm_tb_per_s', 'allreduce_latency_source'\]"):
        load_gpu_spec("test-gpu", d)


def test_hardware_file_invalid_value_names_file(tmp_path):
    d = _write_gpu(tmp_path, allreduce_latency_us=-1.0)
    with pytest.raises(ValueError, match=r"test-gpu\.json: H100 SXM 80GB: allreduce_latency_us "
                                         r"must be positive"):
        load_gpu_spec("test-gpu", d)
    d = _write_gpu(tmp_path, hbm_gib=0)
    with pytest.raises(ValueError, match=r"test-gpu\.json: .*hbm_gib must be positive"):
        load_gpu_spec("test-gpu", d)


def test_model_table_is_one_row_per_model_with_fields_and_derived_columns():
    from stepdecomp.hw.specs import MODEL_COLUMNS, load_model_specs, model_table, specs_table

    specs = load_model_specs([MIXTRAL, LLAMA7, "mistralai/Mistral-Nemo-Base-2407"])
    t = model_table(specs)
    assert list(t.columns) == list(MODEL_COLUMNS)
    assert t["hf_id"].tolist() == sorted([MIXTRAL, LLAMA7, "mistralai/Mistral-Nemo-Base-2407"])
    rows = t.set_index("hf_id")
    # Llama-2-7B: d/H = 4096/32 = 128 = head_dim; 6_738_149_376 parameters, exact in int64
    assert rows.loc[LLAMA7, ["head_dim", "seed_d_head", "q_dim"]].tolist() == [128, 128.0, 4096]
    assert rows.loc[LLAMA7, "total_params"] == 6_738_149_376
    # Mistral-Nemo: head_dim 128, seed d/H = 5120/32 = 160, d_kv 8·128 vs the seed's 8·160
    nemo = rows.loc["mistralai/Mistral-Nemo-Base-2407"]
    assert (nemo["head_dim"], nemo["seed_d_head"], nemo["kv_dim"], nemo["seed_d_kv"]) == (128, 160.0, 1024, 1280.0)
    # Mixtral: E = 8, k = 2, router 4096·8, the seed factor 2/8
    assert rows.loc[MIXTRAL, ["num_experts", "experts_per_token", "router_params_per_layer",
                              "seed_moe_factor"]].tolist() == [8, 2, 32_768, 0.25]
    assert rows.loc[MIXTRAL, "model_type"] == "mixtral"
    # the display table formats the same rows
    shown = specs_table(specs).set_index("hf_id")
    assert shown.loc["mistralai/Mistral-Nemo-Base-2407", ["d_head", "seed_d_head"]].tolist() == [128, 160.0]
    assert shown.loc[LLAMA7, "total_params_b"] == 6.738
