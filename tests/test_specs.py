import dataclasses
import json

import pytest

from stepdecomp.paths import HARDWARE_DIR
from stepdecomp.specs import GpuSpec, ModelSpec, UnknownModelError, load_gpu_spec, load_model_spec

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
    # a spec built in code may leave it out (roofline.allreduce_us refuses it for tp > 1)
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
