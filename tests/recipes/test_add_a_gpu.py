"""docs/recipes/add-a-gpu.md, followed on its example: the recipe's data/hardware/example-gpu.json
(made-up numbers: 500 TFLOP/s BF16 dense, 2.5 TB/s, 96 GiB, 400 GB/s NVLink per direction,
5.0 µs per all-reduce call, no kernel tables) written to a copy of data/hardware/ (data/ is
never written), loaded, and used by the physical model's bounds and rooflines; every number is
computed by hand here. The integration tests run what the recipe's check runs: the report's
notebooks 01-02 on the fixture with --hardware example-gpu, and the replay's refusal.

Llama-2-7B: 32 layers of 4·4096² + 3·4096·11008 = 202_375_168 weights: 6_476_005_376 in the
layers, 12_952_010_752 B at 2 B per weight, and 2 FLOPs per weight per token.
"""

from __future__ import annotations

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
from stepdecomp.core.paths import ENV_HARDWARE_DIR, FIXTURE_ROOT, HARDWARE_DIR, NOTEBOOKS_DIR
from stepdecomp.hw.specs import GPU_JSON_REQUIRED, load_gpu_spec, load_model_spec
from stepdecomp.model import physical

RECIPE = read_recipe("add-a-gpu.md")
NAME = "example-gpu"
LLAMA7, LLAMA70, MIXTRAL = ("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-70b-hf",
                            "mistralai/Mixtral-8x7B-v0.1")
LLAMA7_LAYER_BYTES = 12_952_010_752


def _one(x) -> float:
    return float(np.asarray(x)[()])


def hardware_copy(root: Path) -> Path:
    """data/hardware/ copied under ``root`` with the recipe's GPU file added."""
    (block,) = RECIPE.labelled("new")
    assert block.path == f"data/hardware/{NAME}.json"
    dst = root / "hardware"
    shutil.copytree(HARDWARE_DIR, dst)
    (dst / f"{NAME}.json").write_text(block.text)
    return dst


@pytest.fixture
def gpu(tmp_path):
    return load_gpu_spec(NAME, hardware_copy(tmp_path))


def test_the_example_loads_with_its_numbers(gpu):
    assert gpu.name == "Example GPU 96GB (made-up numbers)"
    assert (gpu.peak_flops_per_s, gpu.hbm_bytes_per_s, gpu.nvlink_bytes_per_s) == (5e14, 2.5e12, 4e11)
    assert gpu.hbm_bytes == 96 * 2**30 == 103_079_215_104
    assert gpu.ridge_flops_per_byte == 200.0 and RECIPE.mentions("a ridge of 200 FLOP/B")
    assert (gpu.kernel_system, gpu.weight_precisions, gpu.allreduce_latency_us) == (None, (), 5.0)
    # the recipe's field table names every required field
    for field in GPU_JSON_REQUIRED:
        assert RECIPE.mentions(f"`{field}`"), field


def test_bounds_and_rooflines_by_hand(gpu):
    s = load_model_spec(LLAMA7)
    assert s.non_embedding_params * 2 == LLAMA7_LAYER_BYTES
    # the HBM lower bound: 12_952_010_752 B / 2.5 TB/s = 5_180.8043008 µs (H100: / 3.35 TB/s)
    assert _one(physical.hbm_lower_bound_us(s, 1, gpu)) == pytest.approx(5_180.8043008, rel=1e-12)
    h100 = _one(physical.hbm_lower_bound_us(s, 1, load_gpu_spec("h100-sxm")))
    assert h100 == pytest.approx(LLAMA7_LAYER_BYTES / 3.35e12 * 1e6, rel=1e-12)
    assert RECIPE.mentions("5,180.8 µs") and RECIPE.mentions(f"{h100:,.1f} µs on the H100")
    # one decode token: 1 FLOP/B < 200, memory-bound at the lower bound's time
    one = physical.roofline_us(physical.gemm_flops(1, s, 1), physical.layer_weight_bytes(1, s, 1), gpu)
    assert _one(one) == pytest.approx(5_180.8043008, rel=1e-12)
    # a 512-token prefill: 512 FLOP/B > 200, compute-bound: 512·12_952_010_752 / 5e14 s
    pre = physical.roofline_us(physical.gemm_flops(512, s, 1), physical.layer_weight_bytes(512, s, 1), gpu)
    assert _one(pre) == pytest.approx(13_262.859010048, rel=1e-12) and RECIPE.mentions("13,262.9 µs")
    # Llama-2-70B, TP 4, 40 tokens: 161 calls of 5.0 µs + 2·3/4 · 40·8192·2 B / 400 GB/s
    # = 5.0 + 1.5·655_360 / 4e11 s = 5.0 + 2.4576 µs; 161 · 7.4576 = 1_200.6736 µs
    ar = physical.allreduce_us(40, load_model_spec(LLAMA70), 4, gpu)
    assert _one(ar) == pytest.approx(1_200.6736, rel=1e-12) and RECIPE.mentions("1,200.7 µs")


def test_a_gpu_without_kernel_tables_prices_moe_with_the_curve(gpu):
    s = load_model_spec(MIXTRAL)
    assert physical.moe_tables(s, 2, gpu) is None
    us, source = physical.fused_moe_us(np.array([0.0, 64.0]), s, 2, gpu)
    assert source == physical.MOE_SOURCE_CURVE == "efficiency_curve" and RECIPE.mentions("`efficiency_curve`")
    # 64 tokens, top-2 of 8: 16 tokens per expert (log2 = 4, the ninth knot: η = 0.819); all 8 experts
    # read: 32·8·3·4096·14336·2 B / 2 GPUs = 45_097_156_608 B; FLOPs 2·64·2·176_160_768·32 / 2
    # = 721_554_505_728: max(1443.1 µs, 18_038.9 µs) / 0.819
    assert us[0] == 0.0
    assert us[1] == pytest.approx(45_097_156_608 / 2.5e12 * 1e6 / 0.819, rel=1e-12)


def test_a_missing_field_names_the_file_and_field(tmp_path):
    hw = hardware_copy(tmp_path)
    raw = json.loads((hw / f"{NAME}.json").read_text())
    del raw["allreduce_latency_source"]
    (hw / f"{NAME}.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"example-gpu\.json: missing required field\(s\) "
                                         r"\['allreduce_latency_source'\]"):
        load_gpu_spec(NAME, hw)


def _run(args: list[str], hw: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, ENV_HARDWARE_DIR: str(hw), "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.integration
def test_make_report_hardware_example_gpu_on_the_fixture(tmp_path):
    """`make report HARDWARE=example-gpu` (the runner it calls, notebooks 01-02) with
    STEPDECOMP_HARDWARE_DIR at the copy: every step with tokens gets its model's lower bound on
    2.5 TB/s, and the seed divides its FLOPs by 500 TFLOP/s."""
    out = tmp_path / "out"
    nbs = [str(NOTEBOOKS_DIR / f"{n}.ipynb") for n in ("01_load", "02_decompose")]
    run = _run(["stepdecomp.run.notebooks", *nbs, "--data", str(FIXTURE_ROOT), "--out", str(out),
                "--hardware", NAME], hardware_copy(tmp_path))
    assert run.returncode == 0, run.stderr[-2000:]
    c = pd.read_parquet(out / "tables" / "step_components.parquet")
    tokens = (c["batch.prefill_tokens"] + c["batch.decode_tokens"]) > 0
    bound = c[tokens].groupby("model")["phys_lower_bound_us"].agg(["min", "max"])
    # per GPU, at 2 B per weight over 2.5e12 B/s:
    #   llama-2-7b, TP 1: 12_952_010_752 B                                  -> 5_180.8043008 µs
    #   mixtral, TP 2: 32 layers of attention 41_943_040 + router 32_768 + 2 experts of
    #     176_160_768 = 394_297_344; ·32·2 / 2 = 12_617_515_008 B            -> 5_047.0060032 µs
    #   llama-2-70b-hf, TP 4: 80 layers of 150_994_944 + 704_643_072; ·80·2 / 4
    #     = 34_225_520_640 B                                                -> 13_690.208256 µs
    expected = {"llama-2-7b": 5_180.8043008, "mixtral-8x7b-v0-1": 5_047.0060032,
                "llama-2-70b-hf": 13_690.208256}
    assert sorted(bound.index) == sorted(expected)
    for model, us in expected.items():
        assert bound.loc[model, "min"] == pytest.approx(us, rel=1e-12), model
        assert bound.loc[model, "max"] == pytest.approx(us, rel=1e-12), model
    # the seed's prefill GEMM of Llama-2-7B: P · 12_952_010_752 FLOPs at 500 TFLOP/s
    l7 = c[c["model"] == "llama-2-7b"]
    np.testing.assert_allclose(l7["prefill_gemm_us"],
                               l7["batch.prefill_tokens"] * 12_952_010_752 / 5e14 * 1e6, rtol=1e-12)
    assert set(c.loc[c["model"] == "mixtral-8x7b-v0-1", "phys_moe_source"]) == {"efficiency_curve"}


@pytest.mark.integration
def test_make_data_on_a_gpu_without_kernel_tables_is_refused(tmp_path):
    run = _run(["stepdecomp.refdata", "--hardware", NAME, "--out", str(tmp_path / "raw")],
               hardware_copy(tmp_path))
    assert run.returncode == 2
    message = "example-gpu has measured kernel tables for [], not 'bf16'"
    assert message in run.stderr and RECIPE.mentions(f"`{message}`")
    assert not (tmp_path / "raw").exists()
