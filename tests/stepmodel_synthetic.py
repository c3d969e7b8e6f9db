"""Synthetic step_components whose forward times come from a known BLIS coefficient vector
plus noise (tests/stepmodel/test_stepmodel.py, bench/bench_stepmodel.py).

16 experiments: the study's four models at their TP × four workloads, each workload with its
own prompt length, decode batch size and prefill frequency. Per step: D decoders with
contexts around the workload's prompt length, with probability ``p_prefill`` one or two
prefill chunks (up to 2048 tokens) of prompts of that length; the target is
basis·β_true·(1 + ε), ε ~ N(0, noise). phys_total_us is an uncalibrated sum of the time
columns (for the evaluation's roofline predictor).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stepdecomp.model import blis_basis
from stepdecomp.hw.specs import load_gpu_spec, load_model_specs

MODELS = {  # display name -> (hf_id, tp)
    "llama-2-7b": ("meta-llama/Llama-2-7b-hf", 1),
    "llama-2-70b": ("meta-llama/Llama-2-70b-hf", 4),
    "codellama-34b": ("codellama/CodeLlama-34b-Instruct-hf", 2),
    "mixtral-8x7b": ("mistralai/Mixtral-8x7B-v0.1", 2),
}
WORKLOADS = {  # name -> (prompt tokens, mean decoders, prefill probability)
    "general": (600, 48, 0.3), "codegen": (1500, 24, 0.2), "roleplay": (800, 32, 0.25),
    "reasoning": (300, 64, 0.1),
}
#: A known vector: every identifiable coefficient positive, the two zero-column terms 0.
TRUE_BETA = np.array([0.6, 0.9, 1.3, 0.8, 30.0, 5.0, 150.0, 0.0, 1.1, 1.8, 0.0])


def synthetic_components(n_steps: int, beta: np.ndarray = TRUE_BETA, noise: float = 0.01,
                         seed: int = 0, target: str = "step_forward_us") -> pd.DataFrame:
    """``n_steps`` steps split evenly over the 16 experiments (columns as step_components
    with hf_id, plus ``target``)."""
    rng = np.random.default_rng(seed)
    per = n_steps // (len(MODELS) * len(WORKLOADS))
    frames = []
    for model, (hf_id, tp) in MODELS.items():
        for workload, (prompt, dec_mean, p_prefill) in WORKLOADS.items():
            d = rng.poisson(dec_mean, per).astype(float)
            ctx = d * prompt * rng.uniform(1.0, 1.6, per)
            n_chunks = np.where(rng.random(per) < p_prefill, rng.integers(1, 3, per), 0)
            chunk = rng.integers(64, 2049, per).astype(float)
            p = n_chunks * chunk
            s = prompt * rng.uniform(0.8, 1.2, per)
            frames.append(pd.DataFrame({
                "experiment_id": f"{model}-{workload}", "model": model, "workload": workload,
                "hf_id": hf_id, "tp": tp, "step.id": np.arange(per),
                "batch.prefill_tokens": p, "batch.decode_tokens": d,
                "phys_prefill_chunk_input_tokens": p * np.maximum(s, chunk),
                "phys_prefill_chunk_sq_tokens": n_chunks * chunk**2,
                "phys_decode_prior_ctx_tokens": np.floor(ctx),
                "phys_batch_reqs": d + n_chunks,
            }))
    frame = pd.concat(frames, ignore_index=True)
    specs = load_model_specs(frame["hf_id"].unique())
    x = blis_basis.basis_table(frame, specs, load_gpu_spec("h100-sxm")).to_numpy()
    frame[target] = blis_basis.step_time_unrounded_us(x, beta) * (
        1.0 + noise * rng.standard_normal(len(frame)))
    frame["phys_total_us"] = x[:, [0, 1, 2, 3, 8, 9]].sum(axis=1)
    return frame
