"""The seed study's analytical decomposition of a step (mode "seed": reproduced exactly).

Notation (per experiment): d = hidden_size, L = layers, H = attention heads, H_kv = KV heads,
d_head = d/H (the study's, even where the config gives another head_dim: specs.ModelSpec.seed_d_head),
d_kv = H_kv·d_head, d_ff = intermediate_size, tp = tensor parallelism,
moe = num_experts_per_tok / num_local_experts (1 for dense) — the seed's factor, which
under-counts MoE MLPs by num_local_experts (see specs.ModelSpec.seed_moe_factor). P and D are
the step's prefill and decode tokens. FLOPs count 2 per multiply-add. Every function takes
numpy arrays (one entry per step) and is vectorised.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from ..hw.specs import GpuSpec, ModelSpec, model_table

SEED_COLUMNS = ["prefill_gemm_us", "prefill_attn_us", "decode_gemm_us", "decode_attn_us",
                "total_analytical_us"]
ID_COLUMNS = ["experiment_id", "model", "workload", "tp", "step.id", "batch.prefill_tokens",
              "batch.decode_tokens", "step.duration_us"]


def seed_gemm_flops(tokens: np.ndarray, d: np.ndarray, d_kv: np.ndarray, d_ff: np.ndarray,
                    moe: np.ndarray, layers: np.ndarray, tp: np.ndarray) -> np.ndarray:
    """[2T(d² + 2·d·d_kv) + 2T·d² + 2T·3·d·d_ff·moe] · L / tp.

    Per token and layer: the Q projection (d×d) and the K, V projections (d×d_kv each) give
    2(d² + 2·d·d_kv); the output projection 2d²; the gated MLP's gate, up and down matrices
    (d×d_ff each) 2·3·d·d_ff, scaled by the seed's MoE factor. Sharded evenly over tp GPUs.
    """
    t = np.asarray(tokens, dtype=np.float64)
    per_token = 2 * (d**2 + 2 * d * d_kv) + 2 * d**2 + 2 * 3 * d * d_ff * moe
    return t * per_token * layers / tp


def seed_prefill_attn_flops(prefill_tokens: np.ndarray, heads: np.ndarray, d_head: np.ndarray,
                            layers: np.ndarray, tp: np.ndarray) -> np.ndarray:
    """2·(2·H·P·max(P/2, 1)·d_head) · L / tp, and 0 where P = 0.

    QKᵀ and AV each cost 2·d_head FLOPs per (query, key) pair per head; the seed treats all
    P prefill tokens of the step as one causal sequence whose average context is P/2.
    """
    p = np.asarray(prefill_tokens, dtype=np.float64)
    flops = 2 * (2 * heads * p * np.maximum(p / 2, 1) * d_head) * layers / tp
    return np.where(p > 0, flops, 0.0)


def flops_to_us(flops: np.ndarray, gpu: GpuSpec) -> np.ndarray:
    """FLOPs at the GPU's dense BF16 peak, in µs (the seed applies no MFU correction)."""
    return np.asarray(flops, dtype=np.float64) / gpu.peak_flops_per_s * 1e6


#: The seed's architecture symbols: arch_* column -> its specs.model_table column. d_head is
#: the study's d/H (seed_d_head), not the config's head_dim, so the seed stays bit-exact.
SEED_ARCH_COLUMNS = {"arch_d": "hidden_size", "arch_layers": "num_layers",
                     "arch_heads": "num_heads", "arch_d_head": "seed_d_head",
                     "arch_d_kv": "seed_d_kv", "arch_d_ff": "intermediate_size",
                     "arch_seed_moe": "seed_moe_factor"}


def architecture_table(specs: Mapping[str, ModelSpec]) -> pd.DataFrame:
    """One row per hf_id with the seed's architecture symbols (merged onto steps): a view of
    specs.model_table renamed by ``SEED_ARCH_COLUMNS``."""
    table = model_table(specs)
    return table[["hf_id", *SEED_ARCH_COLUMNS.values()]].set_axis(
        ["hf_id", *SEED_ARCH_COLUMNS], axis=1)


def seed_components(steps: pd.DataFrame, specs: Mapping[str, ModelSpec], gpu: GpuSpec) -> pd.DataFrame:
    """The step_components table in seed mode: id columns then the five seed columns.

    ``specs`` maps every hf_id in ``steps`` to its ModelSpec. Vectorised: the per-model
    symbols are merged onto the rows, then each formula runs once over all rows.
    """
    missing = set(steps["hf_id"].unique()) - set(specs)
    if missing:
        raise KeyError(f"no ModelSpec for {sorted(missing)}")
    arch = steps[["hf_id", "tp"]].merge(architecture_table(specs), on="hf_id", how="left")
    a = {c: arch[c].to_numpy(dtype=np.float64) for c in arch.columns if c.startswith("arch_")}
    tp = arch["tp"].to_numpy(dtype=np.float64)
    p = steps["batch.prefill_tokens"].to_numpy(dtype=np.float64)
    dec = steps["batch.decode_tokens"].to_numpy(dtype=np.float64)
    gemm = dict(d=a["arch_d"], d_kv=a["arch_d_kv"], d_ff=a["arch_d_ff"], moe=a["arch_seed_moe"],
                layers=a["arch_layers"], tp=tp)
    out = steps[ID_COLUMNS].copy()
    out["prefill_gemm_us"] = flops_to_us(seed_gemm_flops(p, **gemm), gpu)
    out["prefill_attn_us"] = flops_to_us(
        seed_prefill_attn_flops(p, a["arch_heads"], a["arch_d_head"], a["arch_layers"], tp), gpu)
    out["decode_gemm_us"] = flops_to_us(seed_gemm_flops(dec, **gemm), gpu)
    out["decode_attn_us"] = 0.0   # the seed had no per-request context lengths
    out["total_analytical_us"] = out[SEED_COLUMNS[:4]].sum(axis=1)
    return out.reset_index(drop=True)


def with_physical(seed: pd.DataFrame, physical: pd.DataFrame) -> pd.DataFrame:
    """The step_components table: the seed columns unchanged, then the ``phys_*`` family."""
    if len(seed) != len(physical):
        raise ValueError(f"seed has {len(seed)} rows, physical {len(physical)}")
    return pd.concat([seed.reset_index(drop=True), physical.reset_index(drop=True)], axis=1)
