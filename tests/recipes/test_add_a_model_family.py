"""docs/recipes/add-a-model-family.md, followed on its two examples in a copy of data/models/
(data/ is never written): Qwen2.5-0.5B, a config of a family the formulas already read, and
OLMo-1B-hf, a family added with the recipe's SUPPORTED_MODEL_TYPES entry. The config files,
the slug line and that entry are read out of the recipe's code blocks; every number the recipe
states is computed by hand here (tp = 1, BF16: b = 2 bytes, unless said).

Qwen2.5-0.5B: d = 896, L = 24, H = 14, H_kv = 2, d_head = 896/14 = 64 (no head_dim in the
config), d_ff = 4864, vocab = 151936, tied embeddings. q_dim = 14·64 = 896, kv_dim = 2·64 = 128.
  attention per layer d·(q_dim + 2·kv_dim) + q_dim·d = 896·1152 + 896·896
                      = 1_032_192 + 802_816 = 1_835_008
  MLP per layer 3·896·4864 = 13_074_432; layer 14_909_440; 24 layers 357_826_560
  LM head (= embedding, tied) 896·151936 = 136_134_656; total 493_961_216
OLMo-1B-hf: d = 2048, L = 16, H = H_kv = 16, d_head = 128, d_ff = 8192, vocab = 50304, tied.
  attention 4·2048² = 16_777_216; MLP 3·2048·8192 = 50_331_648; layer 67_108_864 = 2²⁶;
  16 layers 2³⁰ = 1_073_741_824; LM head 2048·50304 = 103_022_592; total 1_176_764_416
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recipe_blocks import read_recipe
from stepdecomp.core.paths import ENV_MODELS_DIR, FIXTURE_ROOT, MODELS_DIR, NOTEBOOKS_DIR
from stepdecomp.hw import specs
from stepdecomp.hw.specs import UnsupportedModelError, load_gpu_spec, load_model_spec
from stepdecomp.model import physical
from stepdecomp.traces.experiments import UnknownModelError, discover

RECIPE = read_recipe("add-a-model-family.md")
QWEN = "Qwen/Qwen2.5-0.5B"
OLMO = "allenai/OLMo-1B-hf"
QWEN_DIR_NAME = "20260301-000000-qwen2-5-0-5b-tp1-general"
H100 = load_gpu_spec("h100-sxm")


def _one(x) -> float:
    return float(np.asarray(x)[()])


def models_copy(root: Path, with_slug: bool = True) -> Path:
    """data/models/ copied under ``root``, with the recipe's config.json files (its
    ``new:data/models/...`` blocks) and, if ``with_slug``, its slug line appended."""
    dst = root / "models"
    shutil.copytree(MODELS_DIR, dst)
    configs = RECIPE.labelled("new", "data/models/")
    assert [b.path for b in configs] == [f"data/models/{QWEN}/config.json",
                                         f"data/models/{OLMO}/config.json"]
    for block in configs:
        path = dst / block.path.removeprefix("data/models/")
        path.parent.mkdir(parents=True)
        path.write_text(block.text)
    if with_slug:
        slug = RECIPE.block("edit", "data/models/slugs.yaml").text
        assert slug == f"qwen2-5-0-5b: {QWEN}\n"
        with (dst / "slugs.yaml").open("a") as f:
            f.write(slug)
    return dst


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return models_copy(tmp_path)


# --------------------------------------------------------------------------- a known family

def test_qwen_config_is_read_as_is_with_the_recipes_numbers(models):
    s = load_model_spec(QWEN, models)
    assert (s.model_type, s.hidden_size, s.num_layers, s.num_heads, s.num_kv_heads, s.head_dim,
            s.intermediate_size, s.vocab_size) == ("qwen2", 896, 24, 14, 2, 64, 4864, 151936)
    assert (s.bytes_per_param, s.tie_word_embeddings, s.is_moe) == (2, True, False)
    assert (s.q_dim, s.kv_dim) == (896, 128)
    assert s.attn_params_per_layer == 1_835_008
    assert s.layer_params == 1_835_008 + 13_074_432 == 14_909_440
    assert s.non_embedding_params == 24 * 14_909_440 == 357_826_560
    assert s.total_params == 357_826_560 + 136_134_656 == 493_961_216
    for number in ("14,909,440", "357,826,560", "493,961,216", "0.36B", "0.49B"):
        assert RECIPE.mentions(number), number


def test_qwen_per_token_physics_and_lower_bound(models):
    s = load_model_spec(QWEN, models)
    # 2 FLOPs per weight of every layer: 2·14_909_440·24 = 715_653_120
    assert _one(physical.gemm_flops(1, s, 1)) == 715_653_120
    # per (query, key) pair: 4·H·d_head·L = 4·14·64·24 = 86_016
    assert _one(physical.decode_attn_flops(1, s, 1)) == 86_016
    # KV bytes per token: 2·L·H_kv·d_head·b = 2·24·2·64·2 = 12_288; TP 2: one KV head per GPU,
    # 6_144; TP 4: 2/4 heads floored at one replicated head, 6_144 again
    assert [_one(physical.kv_bytes_per_token(s, tp)) for tp in (1, 2, 4)] == [12_288, 6_144, 6_144]
    # the layer weights once per step: 715_653_120 B / 3.35e12 B/s = 213.63 µs
    assert _one(physical.hbm_lower_bound_us(s, 1, H100)) == pytest.approx(
        715_653_120 / 3.35e12 * 1e6, rel=1e-12)
    assert round(715_653_120 / 3.35e12 * 1e6, 1) == 213.6
    for number in ("715,653,120", "86,016", "12,288", "6,144", "213.6 µs"):
        assert RECIPE.mentions(number), number


def test_qwen_decode_step_by_hand(models):
    """One step of 8 decoding requests with 8000 context tokens in all (tp 1, H100)."""
    s = load_model_spec(QWEN, models)
    step = pd.DataFrame({
        "hf_id": [QWEN], "tp": [1], "batch.prefill_tokens": [0], "batch.decode_tokens": [8],
        "batch.num_prefill_reqs": [0], "batch.num_decode_reqs": [8], "step.duration_us": [400.0],
        "rec_prefill_tokens": [0], "rec_decode_reqs": [8], "rec_prefill_attn_pairs": [0],
        "rec_prefill_kv_read_tokens": [0], "rec_decode_ctx_tokens": [8000],
        "rec_sampled_tokens": [8], "rec_prefill_chunk_input_tokens": [0],
        "rec_prefill_chunk_sq_tokens": [0]})
    c = physical.physical_components(step, {QWEN: s}, H100).iloc[0]
    assert c["phys_decode_gemm_flops"] == 8 * 715_653_120 == 5_725_224_960
    assert c["phys_decode_attn_flops"] == 86_016 * 8000 == 688_128_000
    assert c["phys_lm_head_flops"] == 8 * 2 * 136_134_656 == 2_178_154_496
    # layer weights 715_653_120 B + the (tied) LM head 136_134_656·2 = 272_269_312 B
    assert c["phys_weight_bytes"] == 715_653_120 + 272_269_312 == 987_922_432
    assert c["phys_kv_read_bytes"] == 12_288 * 8000 == 98_304_000
    assert c["phys_kv_write_bytes"] == 12_288 * 8 == 98_304
    # memory-bound at 3.35 TB/s: GEMM 715_653_120 B, attention 98_304_000 + 98_304 B, LM head
    # 272_269_312 B (their FLOPs at 989.5 TFLOP/s take 5.8, 0.7 and 2.2 µs)
    bw = 3.35e12 / 1e6
    assert c["phys_decode_gemm_us"] == pytest.approx(715_653_120 / bw, rel=1e-12)
    assert c["phys_decode_attn_us"] == pytest.approx(98_402_304 / bw, rel=1e-12)
    assert c["phys_lm_head_us"] == pytest.approx(272_269_312 / bw, rel=1e-12)
    assert c["phys_total_us"] == pytest.approx((715_653_120 + 98_402_304 + 272_269_312) / bw,
                                               rel=1e-12)
    assert c["phys_lower_bound_us"] == pytest.approx(715_653_120 / bw, rel=1e-12)


def test_the_slug_line_resolves_a_directory_name(tmp_path):
    root = tmp_path / "root"
    (root / QWEN_DIR_NAME).mkdir(parents=True)
    (root / QWEN_DIR_NAME / "traces.json").write_text("")
    # without step 2, a directory named by the slug stops the load, pointing at slugs.yaml
    bare = models_copy(tmp_path / "bare", with_slug=False)
    with pytest.raises(UnknownModelError, match=r"unknown model slug 'qwen2-5-0-5b'.*slugs\.yaml"):
        discover(root, bare)
    exp = discover(root, models_copy(tmp_path / "with")).experiments[0]
    assert (exp.hf_id, exp.model, exp.tp, exp.workload) == (QWEN, "qwen2-5-0-5b", 1, "general")


def test_the_limits_the_recipe_states(models):
    config = json.loads((models / QWEN / "config.json").read_text())
    with pytest.raises(UnsupportedModelError, match=r"sliding-window attention \(sliding_window 32768\)"):
        specs.ModelSpec.from_hf_config(QWEN, {**config, "use_sliding_window": True})
    assert specs.ModelSpec.from_hf_config(QWEN, {**config, "torch_dtype": "float32"}).bytes_per_param == 4
    no_dtype = {k: v for k, v in config.items() if k != "torch_dtype"}
    assert specs.ModelSpec.from_hf_config(QWEN, no_dtype).bytes_per_param == 2   # bfloat16
    assert specs.DEFAULT_CONFIG_DTYPE == "bfloat16" and RECIPE.mentions("`bfloat16` when the config names none")


# --------------------------------------------------------------------------- a new family

def recipe_families() -> dict[str, bool]:
    """The SUPPORTED_MODEL_TYPES the recipe's specs.py block assigns."""
    block = RECIPE.block("edit", "lib/stepdecomp/hw/specs.py")
    (assign,) = ast.parse(block.text).body
    assert isinstance(assign, ast.AnnAssign) and assign.target.id == "SUPPORTED_MODEL_TYPES"
    return ast.literal_eval(assign.value)


def test_olmo_is_refused_until_its_family_is_added(models, monkeypatch):
    with pytest.raises(UnsupportedModelError) as info:
        load_model_spec(OLMO, models)
    message = str(info.value)
    where = f"{(models / OLMO / 'config.json').as_posix()}: "
    assert message.startswith(where)
    assert RECIPE.mentions(f"`{message.removeprefix(where)}`")       # quoted as the code says it
    families = recipe_families()
    # the recipe's entry is the current registry plus one family
    assert {k: v for k, v in families.items() if k != "olmo"} == specs.SUPPORTED_MODEL_TYPES
    assert families["olmo"] is False
    monkeypatch.setattr(specs, "SUPPORTED_MODEL_TYPES", families)
    s = load_model_spec(OLMO, models)
    assert (s.model_type, s.head_dim, s.num_kv_heads, s.bytes_per_param) == ("olmo", 128, 16, 2)
    assert s.layer_params == 16_777_216 + 50_331_648 == 2**26
    assert s.non_embedding_params == 2**30
    assert s.total_params == 2**30 + 103_022_592 == 1_176_764_416
    # KV bytes per token: 2·16·16·128·2 = 131_072
    assert _one(physical.kv_bytes_per_token(s, 1)) == 131_072
    # Mixtral-style experts stay refused in the family registered as dense
    with pytest.raises(UnsupportedModelError, match="routed experts .* in a dense family"):
        specs.ModelSpec.from_hf_config(OLMO, {**json.loads((models / OLMO / "config.json").read_text()),
                                              "num_local_experts": 8, "num_experts_per_tok": 2})


# --------------------------------------------------------------------------- the report

@pytest.mark.integration
def test_report_notebooks_on_an_experiment_of_the_added_model(tmp_path):
    """`make report` notebooks 01-02 with STEPDECOMP_MODELS_DIR at the copy, on the fixture's
    Llama-2-7B traces in a directory named by the recipe's slug (no exp-config.yaml): every
    step is priced as Qwen2.5-0.5B, checked per row with the per-token numbers above."""
    models = models_copy(tmp_path)
    root = tmp_path / "root"
    src = FIXTURE_ROOT / "20260101-000000-llama-2-7b-tp1-general" / "traces.json"
    (root / QWEN_DIR_NAME).mkdir(parents=True)
    shutil.copy(src, root / QWEN_DIR_NAME / "traces.json")
    out = tmp_path / "out"
    nbs = [str(NOTEBOOKS_DIR / f"{n}.ipynb") for n in ("01_load", "02_decompose")]
    env = {**os.environ, ENV_MODELS_DIR: str(models), "TQDM_DISABLE": "1"}
    run = subprocess.run([sys.executable, "-m", "stepdecomp.run.notebooks", *nbs,
                          "--data", str(root), "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    c = pd.read_parquet(out / "tables" / "step_components.parquet")
    assert len(c) > 100 and set(c["model"]) == {"qwen2-5-0-5b"}
    steps = pd.read_parquet(out / "interim" / "steps.parquet", columns=["hf_id"])
    assert set(steps["hf_id"]) == {QWEN}
    p, d = c["batch.prefill_tokens"].to_numpy(), c["batch.decode_tokens"].to_numpy()
    assert (c["phys_decode_gemm_flops"] == 715_653_120 * d).all()
    assert (c["phys_prefill_gemm_flops"] == 715_653_120 * p).all()
    assert (c["phys_kv_write_bytes"] == 12_288 * (p + d)).all()
    with_tokens = (p + d) > 0
    assert with_tokens.sum() > 100
    np.testing.assert_allclose(c.loc[with_tokens, "phys_lower_bound_us"],
                               715_653_120 / 3.35e12 * 1e6, rtol=1e-12)
    # the seed's own formula, 2·(d² + 2·d·d_kv) + 2·d² + 6·d·d_ff per token and layer
    # = 2·(802_816 + 229_376) + 1_605_632 + 26_148_864 = 29_818_880, ·24 = 715_653_120: the
    # physical count, since here d_head = d/H and the model is dense; at 989.5 TFLOP/s
    np.testing.assert_allclose(c["prefill_gemm_us"], p * 715_653_120 / 989.5e12 * 1e6, rtol=1e-12)
