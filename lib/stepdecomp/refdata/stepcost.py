"""Forward-pass time of a step from the measured kernels, and the KV cache's capacity.

GPU time of one forward pass (µs) = Σ over layers of the per-layer kernels + LM head:

* per layer, T = prefill + decode tokens: GEMMs QKV [T × d]·[d × (H+2H_kv)d_head/tp],
  O [d_q/tp → d], gate/up [d → 2·d_ff/tp], down [d_ff/tp → d] (Mixtral: router [d → E] and
  the fused MoE kernel at moe_tp = tp); two all-reduces of [T × d] when tp > 1 (plus one per
  step after the vocabulary-parallel embedding);
* attention per layer: FlashAttention context attention for every prefill chunk with its real
  prior context (n_eq = sqrt(c² + 2cp), kernels.py), plus generation attention of the D
  decoding requests at their mean KV length (the decode kernel's work is Σ KV length =
  D · mean; KV_BUCKET_TOKENS resolution);
* LM head [m × d]·[d × V/tp] for the m requests that sample this step.

The GPU time is multiplied by lognormal noise exp(N(0, FORWARD_NOISE_SIGMA²)); the host part
of execute_model comes from the CPU model (timeline.py). Elementwise kernels (norms, rotary,
activation; fused by torch.compile) are not modelled.

KV capacity: blocks per GPU = (HBM · GPU_MEMORY_UTILIZATION − resident weights −
ACTIVATION_RESERVE_GIB) / (KV_BLOCK_TOKENS · KV bytes per token); the byte formulas are the
physical model's (physical.resident_weight_bytes, physical.kv_bytes_per_token).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..model import physical
from ..hw.specs import WEIGHT_BYTES_PER_PARAM, GpuSpec, ModelSpec
from ..hw import kernels

KV_BLOCK_TOKENS = 16
GPU_MEMORY_UTILIZATION = 0.9
#: Per-GPU memory vLLM keeps outside weights and KV cache: peak activations of a
#: 2048-token profiling forward (< 1 GiB for these models), CUDA graphs (~0.5 GiB),
#: CUDA context / cuBLAS workspace / NCCL buffers (~1 GiB), rounded up.
ACTIVATION_RESERVE_GIB = 3.0
KV_BUCKET_TOKENS = 16
#: Run-to-run variation of a GPU kernel sequence (clocks, memory refresh): small.
FORWARD_NOISE_SIGMA = 0.03
#: Latency each all-reduce call adds in a running model beyond the isolated measurement
#: (synchronising the ranks' kernels between layers, launch gaps around the custom
#: all-reduce), µs per call, TP > 1 only. Calibrated on the 12 published runs (calibrate.py);
#: the default is the calibrated value (data/calibration.json).
ALLREDUCE_CALL_US = 10.0


def kv_cache_blocks(spec: ModelSpec, tp: int, gpu: GpuSpec, precision: str = "bf16") -> int:
    """GPU KV blocks: (HBM·util − weights/tp − reserve) / (16 · KV bytes per token). FP8
    weights free memory for KV; the KV cache itself stays in the model's dtype."""
    weights = physical.resident_weight_bytes(spec, tp, WEIGHT_BYTES_PER_PARAM[precision])
    budget = gpu.hbm_bytes * GPU_MEMORY_UTILIZATION - weights - ACTIVATION_RESERVE_GIB * 2**30
    per_block = KV_BLOCK_TOKENS * float(physical.kv_bytes_per_token(spec, tp))
    blocks = int(budget // per_block)
    if blocks <= 0:
        raise ValueError(f"{spec.hf_id} at tp={tp} leaves no memory for the KV cache")
    return blocks


@dataclass(frozen=True)
class KernelScale:
    """Multipliers of the measured latencies per kernel family, for the sensitivity study
    (``make sensitivity``): how much do the analysis's conclusions depend on the replay's
    costs agreeing with the analysis's assumptions? All 1 is the measured tables."""

    gemm: float = 1.0                # dense linear layers (QKV, O, gate/up, down, router)
    moe: float = 1.0                 # the fused MoE kernel
    allreduce: float = 1.0
    prefill_attention: float = 1.0
    decode_attention: float = 1.0
    lm_head: float = 1.0

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"KernelScale.{name} must be a finite factor > 0, got {value!r}")

    @classmethod
    def parse(cls, items: list[str] | tuple[str, ...]) -> "KernelScale":
        """From ``family=factor`` strings (e.g. ``gemm=1.2 moe=0.8``)."""
        known = set(cls.__dataclass_fields__)
        values: dict[str, float] = {}
        for item in items:
            name, sep, factor = item.partition("=")
            if not sep or name not in known:
                raise ValueError(f"kernel scale {item!r}: expected family=factor with a family "
                                 f"of {sorted(known)}")
            try:
                values[name] = float(factor)
            except ValueError:
                raise ValueError(f"kernel scale {item!r}: {factor!r} is not a number") from None
        return cls(**values)


@dataclass(frozen=True)
class StepCost:
    """Lookup tables (µs per forward pass, all layers) of the GPU time."""

    gemm_us: np.ndarray            # [T] linear layers (+ MoE) for T scheduled tokens
    comm_us: np.ndarray            # [T] all-reduces
    lm_head_us: np.ndarray         # [m] LM head for m sampled tokens
    prefill_attn_us: np.ndarray    # [n_eq] context attention of an equivalent whole prefill
    decode_attn_us: np.ndarray     # [b, kv_mean // KV_BUCKET_TOKENS] generation attention

    def decode_attention_us(self, num_decodes: int, ctx_sum_tokens: int) -> float:
        """All layers' decode attention of ``num_decodes`` requests attending
        ``ctx_sum_tokens`` KV tokens in all (looked up at their mean, 16-token resolution)."""
        if num_decodes == 0:
            return 0.0
        j = min(int(ctx_sum_tokens / num_decodes / KV_BUCKET_TOKENS + 0.5),
                self.decode_attn_us.shape[1] - 1)
        return float(self.decode_attn_us[num_decodes, j])

    def prefill_attention_us(self, chunk_tokens: int, prior_tokens: int) -> float:
        """All layers' attention of one prefill chunk, at n_eq = sqrt(c² + 2cp)."""
        n = min(int(math.sqrt(chunk_tokens * chunk_tokens + 2.0 * chunk_tokens * prior_tokens) + 0.5),
                len(self.prefill_attn_us) - 1)
        return float(self.prefill_attn_us[n])


def _layer_gemm_us(spec: ModelSpec, tp: int, tok: np.ndarray, t: kernels.KernelTables,
                   scale: KernelScale = KernelScale()) -> np.ndarray:
    """One layer's linear layers (and MoE) for every token count in ``tok``."""
    d = spec.hidden_size
    per_layer = (kernels.gemm_latency_us(tok, (spec.q_dim + 2 * spec.kv_dim) // tp, d, t)
                 + kernels.gemm_latency_us(tok, d, spec.q_dim // tp, t))
    if spec.is_moe:
        return (scale.gemm * (per_layer + kernels.gemm_latency_us(tok, spec.num_experts, d, t))
                + scale.moe * kernels.moe_latency_us(tok, d, spec.intermediate_size,
                                                     spec.experts_per_token, spec.num_experts, tp, t))
    return scale.gemm * (per_layer + kernels.gemm_latency_us(tok, 2 * spec.intermediate_size // tp, d, t)
                         + kernels.gemm_latency_us(tok, d, spec.intermediate_size // tp, t))


def build_step_cost(spec: ModelSpec, tp: int, budget_tokens: int, max_num_seqs: int,
                    max_model_len: int, system: str = kernels.SYSTEM,
                    precision: str = kernels.PRECISION,
                    scale: KernelScale = KernelScale(),
                    allreduce_call_us: float = ALLREDUCE_CALL_US) -> StepCost:
    """Per-model lookup arrays from the measured kernels of ``system`` at ``precision``, each
    kernel family multiplied by its ``scale`` factor (1: as measured); with TP > 1 each of
    the 2L + 1 all-reduce calls of a step costs ``allreduce_call_us`` more."""
    if not (math.isfinite(allreduce_call_us) and allreduce_call_us >= 0):
        raise ValueError(f"allreduce_call_us must be finite and ≥ 0, got {allreduce_call_us}")
    t = kernels.load_tables(system, precision)
    L, d = spec.num_layers, spec.hidden_size
    tok = np.arange(budget_tokens + 1)
    heads, kv_heads = spec.num_heads // tp, int(physical.kv_heads_per_gpu(spec, tp))
    calls = 2 * L + 1
    comm = scale.allreduce * calls * kernels.allreduce_tokens_us(tok, d, tp, t)
    if tp > 1:
        comm = comm + calls * allreduce_call_us
    m = np.arange(max_num_seqs + 1)
    lm = scale.lm_head * kernels.gemm_latency_us(m, spec.vocab_size // tp, d, t)
    n_max = int(math.sqrt(budget_tokens**2 + 2.0 * budget_tokens * max_model_len)) + 2
    pre = scale.prefill_attention * L * kernels.context_attention_us(
        np.arange(n_max + 1), heads, kv_heads, spec.head_dim, t)
    kv = np.arange(max_model_len // KV_BUCKET_TOKENS + 2) * KV_BUCKET_TOKENS
    dec = scale.decode_attention * L * kernels.generation_attention_grid_us(
        m, kv, heads, kv_heads, spec.head_dim, t)
    return StepCost(gemm_us=L * _layer_gemm_us(spec, tp, tok, t, scale), comm_us=comm, lm_head_us=lm,
                    prefill_attn_us=pre, decode_attn_us=dec)
