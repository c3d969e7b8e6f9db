"""Model families by config: the two models added through data/models/ only, every refusal of
specs.ModelSpec.from_hf_config, and the report pipeline on a fixture of the added Mistral-Nemo.

All expected numbers are computed by hand in the comments (tp = 1, BF16: b = 2 bytes).
"""

import json

import numpy as np
import pytest

from stepdecomp.model import seed as seed_mode, reconstruct, physical as physical_mode
from stepdecomp.traces import load
from stepdecomp.core import artefacts
from stepdecomp.run import notebooks as runner
from stepdecomp.core.paths import NOTEBOOKS_DIR, PROJECT_ROOT
from stepdecomp.hw.specs import ModelSpec, UnsupportedModelError, load_model_spec, load_model_specs

LLAMA31 = "meta-llama/Llama-3.1-8B"
NEMO = "mistralai/Mistral-Nemo-Base-2407"
NEMO_ROOT = PROJECT_ROOT / "tests" / "fixtures" / "nemo_ground_truth"
NEMO_EXPERIMENT = "20260102-000000-mistral-nemo-12b-tp1-general"


def _one(x) -> float:
    return float(np.asarray(x)[()])


# --------------------------------------------------------------------------- Llama-3.1-8B

def test_llama31_8b_flops_kv_and_weight_bytes():
    s = load_model_spec(LLAMA31)
    # d = 4096, L = 32, H = 32, H_kv = 8, d_head = 4096/32 = 128 (no head_dim in the config),
    # d_ff = 14336, vocab = 128256, bfloat16, untied embeddings
    assert (s.model_type, s.hidden_size, s.num_layers, s.num_heads, s.num_kv_heads,
            s.head_dim, s.intermediate_size, s.vocab_size) == (
        "llama", 4096, 32, 32, 8, 128, 14336, 128256)
    assert (s.bytes_per_param, s.tie_word_embeddings, s.is_moe) == (2, False, False)
    # attention per layer: d·(H·d_head + 2·H_kv·d_head) + H·d_head·d
    #   = 4096·(4096 + 2048) + 4096·4096 = 25_165_824 + 16_777_216 = 41_943_040
    assert s.attn_params_per_layer == 41_943_040
    # MLP 3·4096·14336 = 176_160_768; layer 218_103_808; 32 layers 6_979_321_856
    assert s.non_embedding_params == 32 * (41_943_040 + 176_160_768) == 6_979_321_856
    # + embedding and LM head 4096·128256 = 525_336_576 each: 8_029_995_008, the published
    # 8_030_261_248 less the 65·4096 = 266_240 norm weights the formulas omit
    assert s.total_params == 6_979_321_856 + 2 * 525_336_576 == 8_029_995_008
    # per-token GEMM FLOPs: 2·218_103_808·32 = 13_958_643_712; LM head 2·525_336_576
    assert _one(physical_mode.gemm_flops(1, s, 1)) == 13_958_643_712
    assert _one(physical_mode.lm_head_flops(1, s, 1)) == 1_050_673_152
    # per (query, key) pair of attention: 4·H·d_head·L = 4·32·128·32 = 524_288
    assert _one(physical_mode.decode_attn_flops(1, s, 1)) == 524_288
    # KV bytes per token: 2·L·H_kv·d_head·b = 2·32·8·128·2 = 131_072 (128 KiB); at tp 2: 65_536
    assert _one(physical_mode.kv_bytes_per_token(s, 1)) == 131_072
    assert _one(physical_mode.kv_bytes_per_token(s, 2)) == 65_536
    # weights held per GPU: 8_029_995_008·2 = 16_059_990_016; FP8 (1 byte): 8_029_995_008
    assert physical_mode.resident_weight_bytes(s, 1) == 16_059_990_016
    assert physical_mode.resident_weight_bytes(s, 1, bytes_per_param=1) == 8_029_995_008
    # one step's weight reads (layers + LM head, no input embedding): (6_979_321_856 +
    # 525_336_576)·2 = 15_009_316_864
    assert _one(physical_mode.weight_bytes(1, s, 1)) == 15_009_316_864


# --------------------------------------------------------------------------- Mistral-Nemo

def test_mistral_nemo_uses_config_head_dim_128_not_160():
    s = load_model_spec(NEMO)
    # d = 5120, L = 40, H = 32, H_kv = 8, head_dim = 128 from the config (5120/32 = 160),
    # d_ff = 14336, vocab = 131072, bfloat16, untied
    assert (s.model_type, s.hidden_size, s.num_layers, s.num_heads, s.num_kv_heads,
            s.head_dim, s.intermediate_size, s.vocab_size) == (
        "mistral", 5120, 40, 32, 8, 128, 14336, 131072)
    assert (s.q_dim, s.kv_dim) == (32 * 128, 8 * 128) == (4096, 1024)
    assert (s.seed_d_head, s.seed_d_kv) == (160.0, 1280.0)     # the seed's d/H, kept apart
    # attention per layer: 5120·(4096 + 2048) + 4096·5120 = 31_457_280 + 20_971_520 = 52_428_800
    assert s.attn_params_per_layer == 52_428_800
    # MLP 3·5120·14336 = 220_200_960; layer 272_629_760; 40 layers 10_905_190_400
    assert s.non_embedding_params == 40 * (52_428_800 + 220_200_960) == 10_905_190_400
    # + 2·5120·131072 = 2·671_088_640: 12_247_367_680, the published "12B"
    assert s.total_params == 10_905_190_400 + 2 * 671_088_640 == 12_247_367_680
    # per-token GEMM FLOPs 2·272_629_760·40 = 21_810_380_800; LM head 2·671_088_640
    assert _one(physical_mode.gemm_flops(1, s, 1)) == 21_810_380_800
    assert _one(physical_mode.lm_head_flops(1, s, 1)) == 1_342_177_280
    # attention per (query, key) pair: 4·H·d_head·L = 4·32·128·40 = 655_360 (with 160: 819_200)
    assert _one(physical_mode.decode_attn_flops(1, s, 1)) == 655_360
    # KV bytes per token: 2·40·8·128·2 = 163_840 (160 KiB; with d/H = 160 it would be 204_800)
    assert _one(physical_mode.kv_bytes_per_token(s, 1)) == 163_840
    # weights held: 12_247_367_680·2 = 24_494_735_360
    assert physical_mode.resident_weight_bytes(s, 1) == 24_494_735_360
    # one step's weight reads: (10_905_190_400 + 671_088_640)·2 = 23_152_558_080
    assert _one(physical_mode.weight_bytes(1, s, 1)) == 23_152_558_080


def test_seed_architecture_keeps_the_studys_d_over_h():
    arch = seed_mode.architecture_table(load_model_specs([NEMO, LLAMA31]))
    rows = arch.set_index("hf_id")
    assert rows.loc[NEMO, "arch_d_head"] == 160.0 and rows.loc[NEMO, "arch_d_kv"] == 8 * 160.0
    assert rows.loc[LLAMA31, "arch_d_head"] == 128.0 and rows.loc[LLAMA31, "arch_d_kv"] == 1024.0


# --------------------------------------------------------------------------- refusals

DENSE = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
         "num_key_value_heads": 2, "num_hidden_layers": 2, "intermediate_size": 128,
         "vocab_size": 100, "torch_dtype": "bfloat16"}
#: DeepSeek-V2-Lite's fields that matter here (MLA and routed + shared experts).
DEEPSEEK_V2_LITE = {"model_type": "deepseek_v2", "hidden_size": 2048, "num_attention_heads": 16,
                    "num_key_value_heads": 16, "num_hidden_layers": 27, "intermediate_size": 10944,
                    "vocab_size": 102400, "kv_lora_rank": 512, "q_lora_rank": None,
                    "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6,
                    "moe_intermediate_size": 1408, "torch_dtype": "bfloat16"}
QWEN2_MOE = {**DENSE, "model_type": "qwen2_moe", "num_experts": 60, "num_experts_per_tok": 4,
             "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632}


def _refusal(config: dict, exc=UnsupportedModelError) -> str:
    with pytest.raises(exc) as info:
        ModelSpec.from_hf_config("acme/m", config)
    message = str(info.value)
    assert "\n" not in message and message.startswith("acme/m: ")
    return message


def test_deepseek_v2_mla_and_routed_experts_are_refused_by_name():
    m = _refusal(DEEPSEEK_V2_LITE)
    assert "model_type 'deepseek_v2' is not supported" in m
    assert "multi-head latent attention (kv_lora_rank)" in m and "q_lora_rank" not in m  # null
    assert "routed experts (n_routed_experts)" in m and "shared experts (n_shared_experts)" in m


def test_qwen2_moe_experts_are_refused():
    m = _refusal(QWEN2_MOE)
    assert "model_type 'qwen2_moe'" in m and "num_experts" in m and "shared_expert_intermediate_size" in m


def test_missing_and_unknown_model_types():
    no_type = {k: v for k, v in DENSE.items() if k != "model_type"}
    assert "config.json has no model_type" in _refusal(no_type)
    m = _refusal({**DENSE, "model_type": "gpt2"})
    assert "model_type 'gpt2' is not a known family" in m and "no explicit head_dim" in m


def test_unknown_family_with_explicit_head_dim_is_read_like_llama():
    s = ModelSpec.from_hf_config("acme/m", {**DENSE, "model_type": "acme", "head_dim": 32})
    # q_dim = 4·32 = 128 ≠ d = 64; attention 64·(128 + 2·2·32) + 128·64 = 16_384 + 8_192
    assert (s.model_type, s.head_dim, s.q_dim, s.kv_dim) == ("acme", 32, 128, 64)
    assert s.attn_params_per_layer == 24_576


def test_experts_in_a_dense_family_and_sliding_windows_are_refused():
    assert "routed experts (num_local_experts) in a dense family" in _refusal(
        {**DENSE, "num_local_experts": 8, "num_experts_per_tok": 2})
    # Mistral-7B-v0.1 style: a 4096-token window the physical model would not honour
    assert "sliding-window attention (sliding_window 4096)" in _refusal(
        {**DENSE, "model_type": "mistral", "sliding_window": 4096})
    # qwen2 names a window but does not use it: accepted
    s = ModelSpec.from_hf_config("acme/m", {**DENSE, "model_type": "qwen2",
                                            "sliding_window": 131072, "use_sliding_window": False})
    assert (s.model_type, s.head_dim) == ("qwen2", 16)


def test_mixtral_reads_its_experts_and_qwen2_ties_embeddings():
    s = ModelSpec.from_hf_config("acme/m", {**DENSE, "model_type": "mixtral",
                                            "num_local_experts": 8, "num_experts_per_tok": 2})
    assert (s.num_experts, s.experts_per_token, s.seed_moe_factor) == (8, 2, 0.25)
    t = ModelSpec.from_hf_config("acme/m", {**DENSE, "model_type": "qwen2",
                                            "tie_word_embeddings": True})
    # tied: layers + one 64·100 matrix
    assert t.total_params == t.non_embedding_params + 6_400


def test_shape_and_field_errors_name_the_field():
    assert "hidden_size 66 is not a multiple of num_attention_heads 4" in _refusal(
        {**DENSE, "hidden_size": 66})
    m = _refusal({k: v for k, v in DENSE.items() if k != "vocab_size"}, ValueError)
    assert "lacks required field 'vocab_size'" in m
    assert "field 'num_hidden_layers' must be an integer, got '2'" in _refusal(
        {**DENSE, "num_hidden_layers": "2"}, ValueError)
    assert "dtype 'int4'" in _refusal({**DENSE, "torch_dtype": "int4"}, ValueError)
    # newer configs name the dtype "dtype"
    assert ModelSpec.from_hf_config("acme/m", {k: v for k, v in DENSE.items() if k != "torch_dtype"}
                                    | {"dtype": "float32"}).bytes_per_param == 4


def test_config_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "acme" / "broken" / "config.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{\n  "model_type": "llama",\n  "hidden_size": ,\n}\n')
    with pytest.raises(ValueError, match=r"acme/broken/config.json line 3: not valid JSON"):
        load_model_spec("acme/broken", tmp_path)
    listed = tmp_path / "acme" / "list" / "config.json"
    listed.parent.mkdir(parents=True)
    listed.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"acme/list/config.json: expected a JSON object, got a list"):
        load_model_spec("acme/list", tmp_path)
    odd = tmp_path / "acme" / "mla" / "config.json"
    odd.parent.mkdir(parents=True)
    odd.write_text(json.dumps(DEEPSEEK_V2_LITE))
    with pytest.raises(UnsupportedModelError, match=r"acme/mla/config.json: model_type 'deepseek_v2'"):
        load_model_spec("acme/mla", tmp_path)


# --------------------------------------------------------------------------- the Nemo fixture

@pytest.fixture(scope="module")
def nemo_components(tmp_path_factory):
    """Notebooks 01-02's library calls on the Mistral-Nemo fixture, as the notebooks make them."""
    from stepdecomp.hw.specs import load_gpu_spec

    tmp = tmp_path_factory.mktemp("nemo")
    dirs = artefacts.run_dirs(str(NEMO_ROOT), str(tmp / "out"), "")
    ds = load.load_dataset(dirs.data_root, cache_root=tmp / "cache", jobs=1)
    load.save_dataset(dirs, ds)
    steps = artefacts.read_steps(dirs)
    specs, gpu = load_model_specs(steps["hf_id"]), load_gpu_spec("h100-sxm")
    seed = seed_mode.seed_components(steps, specs, gpu)
    merged, _ = reconstruct.attach_reconstruction(steps, artefacts.read_journeys(dirs),
                                                  artefacts.read_budgets(dirs))
    physical = physical_mode.physical_components(merged, specs, gpu)
    return seed_mode.with_physical(seed, physical).set_index("step.id")


def test_nemo_fixture_resolves_through_the_slug(nemo_components):
    c = nemo_components
    assert set(c["experiment_id"]) == {NEMO_EXPERIMENT}
    assert set(c["model"]) == {"mistral-nemo-12b"}
    # steps 0-4 (tests/fixtures/make_fixture.py NEMO_FIRST_REQUESTS): A = 2500 prompt tokens
    # chunked 2048 + 452, B = 100 prompt tokens at step 2
    assert c.loc[[0, 1, 2, 3, 4], "batch.prefill_tokens"].tolist() == [2048, 452, 100, 0, 0]
    assert c.loc[[0, 1, 2, 3, 4], "batch.decode_tokens"].tolist() == [0, 0, 1, 2, 1]
    assert c.loc[[0, 1, 2, 3, 4], "phys_attn_from_journeys"].all()


def test_nemo_physical_columns_by_hand(nemo_components):
    c = nemo_components
    # step 3: A decodes at context 2500 + 2 = 2502, B at 100 + 1 = 101: Σctx = 2603.
    # decode attention 4·H·d_head·Σctx·L = 4·32·128·2603·40 = 1_705_902_080 (160 would give 1.25×)
    assert c.loc[3, "phys_decode_attn_flops"] == 1_705_902_080
    # KV read: 2·L·H_kv·d_head·b·Σctx = 163_840·2603 = 426_475_520; write 163_840·2 = 327_680
    assert c.loc[3, "phys_kv_read_bytes"] == 426_475_520
    assert c.loc[3, "phys_kv_write_bytes"] == 327_680
    # weights: all 40 layers + the LM head (two tokens sampled), (10_905_190_400 +
    # 671_088_640)·2 = 23_152_558_080
    assert c.loc[3, "phys_weight_bytes"] == 23_152_558_080
    # step 0: A's first 2048-token chunk samples nothing: layer weights only, 21_810_380_800
    assert c.loc[0, "phys_weight_bytes"] == 21_810_380_800
    # step 1: A's 452-token chunk after 2048 cached: pairs 452·2048 + 452·453/2 = 1_028_074;
    # 4·32·128·40·1_028_074 = 673_758_576_640 FLOPs; KV read 163_840·2500 = 409_600_000
    assert c.loc[1, "phys_prefill_attn_flops"] == 673_758_576_640
    assert c.loc[1, "phys_kv_read_bytes"] == 409_600_000
    # the seed keeps d/H = 160: step 0's prefill attention 2·(2·H·P·(P/2)·160)·L
    # = 2·2·32·2048·1024·160·40 = 1_717_986_918_400 FLOPs at 989.5 TFLOP/s
    assert c.loc[0, "prefill_attn_us"] == pytest.approx(1_717_986_918_400 / 989.5e12 * 1e6,
                                                        rel=1e-12)


@pytest.mark.slow
def test_make_report_on_the_nemo_fixture(tmp_path):
    """`make report DATA=tests/fixtures/nemo_ground_truth OUT=<tmp>` (the runner it calls),
    then the physical columns of the written step table."""
    notebooks = [str(NOTEBOOKS_DIR / f"{n}.ipynb") for n in
                 ("01_load", "02_decompose", "03_phases", "04_correlation", "05_plots", "06_report")]
    out = tmp_path / "out"
    assert runner.main([*notebooks, "--data", str(NEMO_ROOT), "--out", str(out)]) == 0
    assert (out / "FINDINGS.md").is_file()
    import pandas as pd

    c = pd.read_parquet(out / "tables" / "step_components.parquet").set_index("step.id")
    assert c.loc[3, "phys_decode_attn_flops"] == 1_705_902_080
    assert c.loc[3, "phys_kv_read_bytes"] == 426_475_520
    assert c.loc[3, "phys_weight_bytes"] == 23_152_558_080
