"""The physical step model (mode "physical"): FLOPs, bytes and roofline time per GPU.

Conventions, everywhere in this module:

* FLOPs count 2 per multiply-add (never MACs).
* Every quantity is per GPU under tensor parallelism tp: weights, heads and FLOPs are
  sharded evenly over the tp GPUs.
* Functions are vectorised: token counts are numpy arrays (one entry per step), ``spec`` is
  a :class:`~stepdecomp.hw.specs.ModelSpec` (scalars) or a :class:`ModelArrays` (one entry per
  step, built by merging the per-model table :func:`model_param_table` onto the steps), and
  ``tp`` a scalar or array. Names carry units: ``_flops``, ``_bytes``, ``_us``, ``tflops``.
* Time comes from ONE roofline, :func:`roofline_us`: max(FLOPs / peak, bytes / HBM
  bandwidth). Two terms are not a plain roofline: the tensor-parallel all-reduce (per-call
  latency + bytes / NVLink bandwidth, :func:`allreduce_us`) and a MoE model's fused-expert
  kernel (:func:`fused_moe_us`: aiconfigurator-core's measured kernel tables where they
  cover the shape, else the roofline divided by an efficiency curve fitted to those tables).

Notation: d = hidden_size, L = layers, H / H_kv = query / KV heads, d_head = head_dim,
E / k = num_local_experts / num_experts_per_tok (1 / 1 dense), b = bytes per parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping, Union

import numpy as np
import pandas as pd

from ..hw import kernels
from ..hw.specs import WEIGHT_BYTES_PER_PARAM, GpuSpec, ModelSpec, model_table

ArrayLike = Union[np.ndarray, float, int]

PHYS_COLUMNS = [
    "phys_prefill_gemm_flops", "phys_decode_gemm_flops", "phys_prefill_attn_flops",
    "phys_decode_attn_flops", "phys_lm_head_flops", "phys_total_flops",
    "phys_weight_bytes", "phys_kv_read_bytes", "phys_kv_write_bytes", "phys_total_bytes",
    "phys_prefill_gemm_us", "phys_prefill_attn_us", "phys_decode_gemm_us", "phys_decode_attn_us",
    "phys_allreduce_us", "phys_lm_head_us", "phys_total_us", "phys_lower_bound_us",
    "phys_arith_intensity_flops_per_byte", "phys_achieved_tflops", "phys_attn_from_journeys",
    "phys_gemm_us", "phys_moe_us", "phys_moe_source",
    *("phys_batch_reqs", "phys_decode_prior_ctx_tokens", "phys_prefill_chunk_input_tokens",
      "phys_prefill_chunk_sq_tokens"),
]
#: The batch aggregates physical_components passes on for other step-time bases
#: (blis_basis): requests in the batch, Σ decode context before the step's token, and the
#: chunk sums Σ c·s, Σ c² (reconstruct.REC_CHUNK_COLUMNS). Counts, not times.
BATCH_AGGREGATE_COLUMNS = PHYS_COLUMNS[-4:]

#: All-reduces per forward pass under tensor parallelism, counted as the reference replay
#: counts them (its step cost: ``comm = (2 * L + 1) * ...``): two per
#: layer (after attention's O projection and after the MLP / MoE, both row-parallel) plus
#: one per step after the vocabulary-parallel input embedding.
ALLREDUCES_PER_LAYER = 2
ALLREDUCES_PER_STEP = 1

#: Which fused-MoE time a step's GEMM term got (column ``phys_moe_source``).
MOE_SOURCE_DENSE = "dense"                 # not a MoE model: no fused-MoE term
MOE_SOURCE_TABLE = "measured_table"        # aiconfigurator-core's measured MoE table
MOE_SOURCE_CURVE = "efficiency_curve"      # roofline / MOE_EFFICIENCY (no table for the shape)

#: The efficiency curve (:func:`moe_efficiency`): η = roofline / measured fused-MoE latency at
#: knots log2(tokens per expert) = -4 … 12, per weight precision. Each value is the median η of
#: every measured MoE row of aiconfigurator-core's h100_sxm table (all shapes, balanced
#: routing, moe_tp ≤ 8) whose tokens per expert rounds to that knot in log2, capped at 1,
#: rounded to 3 digits: :func:`stepdecomp.stats.moecheck.fit_moe_efficiency` recomputes it with its
#: quartiles (between shapes η spreads: bf16 quartiles 0.79–0.89 at 4 tokens per expert,
#: 0.34–0.52 at 256). FP8 values are low because the roofline uses the BF16 peak and the
#: measured FP8 fused-MoE kernels are slow. The curve prices any GPU without tables, relative
#: to that GPU's own roofline.
MOE_EFFICIENCY_LOG2_KNOTS = tuple(range(-4, 13))
MOE_EFFICIENCY: dict[str, tuple[float, ...]] = {
    "bf16": (0.558, 0.725, 0.781, 0.848, 0.876, 0.875, 0.858, 0.841, 0.819, 0.789, 0.713, 0.601,
             0.44, 0.422, 0.44, 0.581, 0.584),
    "fp8": (0.118, 0.132, 0.141, 0.158, 0.168, 0.176, 0.176, 0.179, 0.18, 0.177, 0.196, 0.198,
            0.151, 0.2, 0.215, 0.282, 0.273),
}


@dataclass(frozen=True)
class ModelArrays:
    """The ``PARAM_FIELDS`` of a ModelSpec as float64 arrays, one entry per step row."""

    num_layers: np.ndarray
    hidden_size: np.ndarray
    num_heads: np.ndarray
    num_kv_heads: np.ndarray
    head_dim: np.ndarray
    q_dim: np.ndarray
    vocab_size: np.ndarray
    num_experts: np.ndarray
    experts_per_token: np.ndarray
    bytes_per_param: np.ndarray
    attn_params_per_layer: np.ndarray
    expert_params: np.ndarray
    router_params_per_layer: np.ndarray
    lm_head_params: np.ndarray
    non_embedding_params: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "ModelArrays":
        return cls(**{f.name: frame[f.name].to_numpy(dtype=np.float64) for f in fields(cls)})


Arch = Union[ModelSpec, ModelArrays]

#: The per-model parameters every formula reads: ModelArrays' fields, columns of specs.model_table.
PARAM_FIELDS = tuple(f.name for f in fields(ModelArrays))


def model_param_table(specs: Mapping[str, ModelSpec]) -> pd.DataFrame:
    """The hf_id and ``PARAM_FIELDS`` columns of :func:`specs.model_table` (merged onto the
    steps by hf_id)."""
    return model_table(specs)[["hf_id", *PARAM_FIELDS]]


def _f(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _non_expert_params(spec: Arch) -> np.ndarray:
    """Per-layer weights every token uses whatever its routing: attention QKV + O and the
    router (d·E, 0 for dense)."""
    return _f(spec.attn_params_per_layer) + _f(spec.router_params_per_layer)


# --------------------------------------------------------------------------- FLOPs

def gemm_flops(tokens: ArrayLike, spec: Arch, tp: ArrayLike) -> np.ndarray:
    """Linear-layer FLOPs of ``tokens`` tokens through all layers.

    Each token multiplies a d-vector by every weight matrix it uses once: 2 FLOPs per
    weight. Per layer it uses the attention projections (QKV + O,
    ``attn_params_per_layer``), the router (d·E, MoE only) and k expert MLPs of 3·d·d_ff
    each (``expert_params``; HF's intermediate_size is per expert, so the MoE factor is
    k = num_experts_per_tok — not k/E as in the seed). Hence
    2·tokens·(attn + k·3·d·d_ff + d·E)·L / tp.
    """
    per_token = _non_expert_params(spec) + _f(spec.experts_per_token) * spec.expert_params
    return 2.0 * _f(tokens) * per_token * spec.num_layers / _f(tp)


def lm_head_flops(sampled_tokens: ArrayLike, spec: Arch, tp: ArrayLike) -> np.ndarray:
    """LM head (d × vocab) on each position that samples a token: 2·sampled·d·vocab / tp
    (vocab-parallel head)."""
    return 2.0 * _f(sampled_tokens) * spec.lm_head_params / _f(tp)


def prefill_attn_flops(attn_pairs: ArrayLike, spec: Arch, tp: ArrayLike) -> np.ndarray:
    """Causal prefill attention: 4·H·d_head·pairs·L / tp.

    For every (query, key) pair and head, QKᵀ is a d_head dot product (2·d_head FLOPs) and
    the AV product adds 2·d_head more. ``attn_pairs`` = Σ over chunks of c·k + c(c+1)/2 for
    a chunk of c new tokens after k computed ones (see reconstruct.py).
    """
    return 4.0 * spec.q_dim * _f(attn_pairs) * spec.num_layers / _f(tp)


def decode_attn_flops(ctx_tokens_sum: ArrayLike, spec: Arch, tp: ArrayLike) -> np.ndarray:
    """Decode attention: one query per request against its whole context, so
    4·H·d_head·Σctx·L / tp with Σctx the step's summed context lengths."""
    return 4.0 * spec.q_dim * _f(ctx_tokens_sum) * spec.num_layers / _f(tp)


# --------------------------------------------------------------------------- bytes

def expected_distinct_experts(tokens: ArrayLike, spec: Arch) -> np.ndarray:
    """Expected experts touched per layer by ``tokens`` tokens: E·(1 − (1 − k/E)^tokens).

    Each token picks k of E experts; under uniform routing a given expert is missed by one
    token with probability 1 − k/E, by all of them with (1 − k/E)^tokens. 1 for a dense model
    with tokens > 0 (E = k = 1), 0 for tokens = 0.
    """
    e = _f(spec.num_experts)
    return e * (1.0 - np.power(1.0 - _f(spec.experts_per_token) / e, _f(tokens)))


def layer_weight_bytes(tokens: ArrayLike, spec: Arch, tp: ArrayLike) -> np.ndarray:
    """Transformer-layer weights read from HBM once per step that runs ``tokens`` > 0 tokens:
    L·(attn + router + expected_distinct_experts·3·d·d_ff)·b / tp (0 when tokens = 0)."""
    t = _f(tokens)
    per_layer = _non_expert_params(spec) + expected_distinct_experts(t, spec) * spec.expert_params
    return np.where(t > 0, per_layer * spec.num_layers * spec.bytes_per_param / _f(tp), 0.0)


def lm_head_weight_bytes(sampled_tokens: ArrayLike, spec: Arch, tp: ArrayLike) -> np.ndarray:
    """The LM head's d·vocab weights, read once when at least one token is sampled."""
    return np.where(_f(sampled_tokens) > 0, spec.lm_head_params * spec.bytes_per_param / _f(tp), 0.0)


def weight_bytes(tokens: ArrayLike, spec: Arch, tp: ArrayLike,
                 sampled_tokens: ArrayLike | None = None) -> np.ndarray:
    """All weights a step reads per GPU: layer weights (MoE: expected distinct experts) plus
    the LM head when anything is sampled (``sampled_tokens``, default ``tokens``). The input
    embedding is a gather of tokens·d values and is omitted."""
    sampled = tokens if sampled_tokens is None else sampled_tokens
    return layer_weight_bytes(tokens, spec, tp) + lm_head_weight_bytes(sampled, spec, tp)


def kv_heads_per_gpu(spec: Arch, tp: ArrayLike) -> np.ndarray:
    """KV heads one GPU holds: H_kv / tp, at least 1 (with fewer KV heads than GPUs each GPU
    holds a replica of one)."""
    return np.maximum(_f(spec.num_kv_heads) / _f(tp), 1.0)


def kv_read_bytes(kv_tokens: ArrayLike, spec: Arch, tp: ArrayLike) -> np.ndarray:
    """KV cache read: K and V of H_kv·d_head values per token and layer,
    2·L·H_kv·d_head·b·kv_tokens / tp (H_kv / tp floored at one replicated head)."""
    return 2.0 * spec.num_layers * kv_heads_per_gpu(spec, tp) * spec.head_dim \
        * spec.bytes_per_param * _f(kv_tokens)


def kv_bytes_per_token(spec: Arch, tp: ArrayLike) -> np.ndarray:
    """KV cache bytes one token occupies on one GPU, 2·L·H_kv·d_head·b / tp (floored at one
    KV head per GPU): the unit of KV capacity (the replay's block count) and of KV traffic."""
    return kv_read_bytes(1.0, spec, tp)


def resident_weight_bytes(spec: ModelSpec, tp: int, bytes_per_param: float | None = None) -> float:
    """Weights held in HBM per GPU: every layer, the input embedding and the LM head,
    total_params·b / tp. ``bytes_per_param`` overrides the config's dtype (e.g. 1 for FP8
    weights, whose KV cache stays in the config's dtype)."""
    b = spec.bytes_per_param if bytes_per_param is None else bytes_per_param
    return spec.total_params * b / tp


def kv_write_bytes(new_tokens: ArrayLike, spec: Arch, tp: ArrayLike) -> np.ndarray:
    """KV cache write of the step's new tokens: same per-token size as :func:`kv_read_bytes`."""
    return kv_read_bytes(new_tokens, spec, tp)


# --------------------------------------------------------------------------- time

def roofline_us(flops: ArrayLike, bytes_: ArrayLike, gpu: GpuSpec) -> np.ndarray:
    """THE roofline: max(flops / peak FLOP/s, bytes / HBM B/s) in µs. NaN in, NaN out."""
    return np.maximum(_f(flops) / gpu.peak_flops_per_s, _f(bytes_) / gpu.hbm_bytes_per_s) * 1e6


def allreduce_calls(spec: Arch) -> np.ndarray:
    """All-reduces per forward pass: ALLREDUCES_PER_LAYER·L + ALLREDUCES_PER_STEP = 2L + 1."""
    return ALLREDUCES_PER_LAYER * _f(spec.num_layers) + ALLREDUCES_PER_STEP


def allreduce_us(tokens: ArrayLike, spec: Arch, tp: ArrayLike, gpu: GpuSpec) -> np.ndarray:
    """Tensor-parallel all-reduces of a step that runs ``tokens`` tokens (µs).

    (2L + 1) calls (:func:`allreduce_calls`), each of a tokens·d·b message: a fixed per-call
    latency (gpu.allreduce_latency_us, the measured smallest-message latency, see
    data/hardware/*.json) plus the ring's traffic, 2(tp−1)/tp of the message over each GPU's
    NVLink: (2L + 1)·(latency + 2(tp−1)/tp·tokens·d·b / NVLink B/s). 0 for tp = 1 or a step
    without tokens. E.g. Llama-2-70B at TP 4, 40 tokens on H100: 161·(4.6 + 1.5·655,360 B /
    450 GB/s) = 161·(4.6 + 2.18) µs ≈ 1.09 ms. The latency is the CUDA-graph one: calls of
    batches vLLM runs eagerly (above its graph capture sizes) cost more (~21 µs in the same
    table) and are not modelled.
    """
    t, n = _f(tp), _f(tokens)
    if gpu.allreduce_latency_us is None and np.any(t > 1):
        raise ValueError(f"{gpu.name}: no allreduce_latency_us, needed for tp > 1 (set it, "
                         f"with its source, in the GPU's data/hardware/*.json)")
    msg = n * spec.hidden_size * spec.bytes_per_param
    ring_us = 2.0 * (t - 1.0) / t * msg / gpu.nvlink_bytes_per_s * 1e6
    per_call = (gpu.allreduce_latency_us or 0.0) + ring_us
    return np.where((t > 1) & (n > 0), allreduce_calls(spec) * per_call, 0.0)


def hbm_lower_bound_us(spec: Arch, tp: ArrayLike, gpu: GpuSpec) -> np.ndarray:
    """Least time any step with tokens can take: the weights it must stream once per GPU.

    L·(attention + router + k·expert)·b / tp / bw. Dense models (E = k = 1): every layer
    weight. MoE: a step touches at least the k experts its tokens route to (all tokens may
    pick the same k), so only k experts are certain to be read — a strict bound even for a
    single decode token, unlike a full sweep of all E experts. The LM head is left out because
    a step that samples nothing does not read it. A duration below this bound cannot be GPU
    execution time of the step.
    """
    per_layer = _non_expert_params(spec) + _f(spec.experts_per_token) * _f(spec.expert_params)
    return (_f(spec.num_layers) * per_layer * spec.bytes_per_param / _f(tp)
            / gpu.hbm_bytes_per_s * 1e6)


# --------------------------------------------------------------------------- fused MoE

def tokens_per_expert(tokens: ArrayLike, spec: Arch) -> np.ndarray:
    """Tokens each expert of a layer runs under balanced routing: tokens·k/E (the k·tokens
    (token, expert) assignments spread evenly over the E experts; tokens for a dense model)."""
    return _f(tokens) * _f(spec.experts_per_token) / _f(spec.num_experts)


def fused_moe_flops(tokens: ArrayLike, spec: Arch, tp: ArrayLike) -> np.ndarray:
    """The expert MLPs' share of :func:`gemm_flops`: 2·tokens·k·3·d·d_ff·L / tp."""
    return 2.0 * _f(tokens) * spec.experts_per_token * spec.expert_params * spec.num_layers / _f(tp)


def fused_moe_bytes(tokens: ArrayLike, spec: Arch, tp: ArrayLike) -> np.ndarray:
    """Expert weights the fused-MoE kernel streams under balanced routing:
    L·E·min(1, tokens·k/E)·3·d·d_ff·b / tp (an expert with a token is read once; balanced
    routing touches min(E, k·tokens) experts, the routing the measured tables use, where
    :func:`expected_distinct_experts` assumes independent uniform picks)."""
    touched = _f(spec.num_experts) * np.minimum(1.0, tokens_per_expert(tokens, spec))
    return spec.num_layers * touched * spec.expert_params * spec.bytes_per_param / _f(tp)


def weight_precision(spec: Arch) -> str:
    """The WEIGHT_BYTES_PER_PARAM name of the model's bytes per parameter (2 → bf16)."""
    names = {b: name for name, b in WEIGHT_BYTES_PER_PARAM.items()}
    b = int(np.asarray(spec.bytes_per_param).flat[0])
    if b not in names:
        raise ValueError(f"no MoE kernel data for {b}-byte weights; known: {sorted(names)} bytes")
    return names[b]


def moe_efficiency(tokens_per_expert_: ArrayLike, precision: str) -> np.ndarray:
    """η(tokens per expert) of MOE_EFFICIENCY[precision], linear in log2(tokens per expert)
    between the knots, held constant beyond them (0 tokens: the first knot's value)."""
    if precision not in MOE_EFFICIENCY:
        raise ValueError(f"no MoE efficiency curve for {precision!r}; "
                         f"known: {sorted(MOE_EFFICIENCY)}")
    x = np.log2(np.maximum(_f(tokens_per_expert_), 2.0 ** MOE_EFFICIENCY_LOG2_KNOTS[0]))
    return np.interp(x, MOE_EFFICIENCY_LOG2_KNOTS, MOE_EFFICIENCY[precision])


def moe_tables(spec: ModelSpec, tp: int, gpu: GpuSpec) -> kernels.KernelTables | None:
    """The GPU's measured kernel tables if they hold the model's fused-MoE shape (d, d_ff,
    top-k, E, moe_tp = tp) at its weight precision; None if the GPU has no kernel_system, the
    precision is not among its weight_precisions, or the shape was not measured."""
    precision = weight_precision(spec)
    if gpu.kernel_system is None or precision not in gpu.weight_precisions:
        return None
    t = kernels.load_tables(gpu.kernel_system, precision)
    m = t.moe
    hit = ((m["hidden_size"] == spec.hidden_size) & (m["inter_size"] == spec.intermediate_size)
           & (m["topk"] == spec.experts_per_token) & (m["num_experts"] == spec.num_experts)
           & (m["moe_tp_size"] == tp))
    return t if hit.any() else None


def fused_moe_us(tokens: ArrayLike, spec: ModelSpec, tp: int,
                 gpu: GpuSpec) -> tuple[np.ndarray, str]:
    """All layers' fused-MoE time (µs) for ``tokens`` tokens, and which source priced it.

    * MOE_SOURCE_TABLE where :func:`moe_tables` finds the shape: L·moe_latency_us(tokens)
      (hw/kernels.py: vLLM's fused Triton MoE, balanced routing, so every expert runs
      tokens·k/E tokens; log-log in tokens, proportional beyond 16,384). These are the same
      measurements the reference replay prices its MoE with. Measured rows are used as they
      are: for Mixtral-8x7B they stay above the k experts' weights at HBM speed (the strict
      bound; tested at every token count, TP 1–8, H100 and H200), but two rows of another
      shape (d 2048, d_ff 5120, top-22 of 512, one token, moe_tp 1–2) measure below it.
    * MOE_SOURCE_CURVE otherwise (a GPU without tables, an unmeasured shape or TP): the
      roofline of :func:`fused_moe_flops` / :func:`fused_moe_bytes` divided by
      :func:`moe_efficiency` at tokens·k/E. η ≤ 1, so the result never undercuts the
      roofline, hence never the HBM bound.

    A dense model has no fused-MoE term: zeros and MOE_SOURCE_DENSE.
    """
    n = _f(tokens)
    if not spec.is_moe:
        return np.zeros_like(n), MOE_SOURCE_DENSE
    tables = moe_tables(spec, tp, gpu)
    if tables is not None:
        per_layer = kernels.moe_latency_us(n, spec.hidden_size, spec.intermediate_size,
                                           spec.experts_per_token, spec.num_experts, tp, tables)
        return spec.num_layers * per_layer, MOE_SOURCE_TABLE
    ideal = roofline_us(fused_moe_flops(n, spec, tp), fused_moe_bytes(n, spec, tp), gpu)
    eta = moe_efficiency(tokens_per_expert(n, spec), weight_precision(spec))
    return np.where(n > 0, ideal / eta, 0.0), MOE_SOURCE_CURVE


def step_gemm_us(tokens: ArrayLike, spec: ModelSpec, tp: int,
                 gpu: GpuSpec) -> tuple[np.ndarray, np.ndarray, str]:
    """A step's linear-layer time (µs), its fused-MoE part and the MoE source.

    Dense: roofline(gemm_flops, layer_weight_bytes) — one weight read shared by all tokens.
    MoE: the non-expert linears (attention projections, router) on that roofline, plus
    :func:`fused_moe_us`. The old MoE estimate, one roofline over the expected distinct
    experts, saturates at E experts read by ~16 tokens and then stays flat while the measured
    kernel keeps growing (stepdecomp.stats.moecheck.moe_gemm_check).
    """
    n = _f(tokens)
    moe_us, source = fused_moe_us(n, spec, tp, gpu)
    if not spec.is_moe:
        gemm_us = roofline_us(gemm_flops(n, spec, tp), layer_weight_bytes(n, spec, tp), gpu)
        return gemm_us, moe_us, source
    non_expert = _non_expert_params(spec) * spec.num_layers / _f(tp)
    non_expert_bytes = np.where(n > 0, non_expert * spec.bytes_per_param, 0.0)
    return roofline_us(2.0 * n * non_expert, non_expert_bytes, gpu) + moe_us, moe_us, source


# --------------------------------------------------------------------------- per step

def _col(steps: pd.DataFrame, name: str) -> np.ndarray:
    if name not in steps:
        return np.full(len(steps), np.nan)
    return pd.to_numeric(steps[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def physical_components(steps: pd.DataFrame, specs: Mapping[str, ModelSpec],
                        gpu: GpuSpec) -> pd.DataFrame:
    """The ``PHYS_COLUMNS`` for every step (same index as ``steps``), vectorised over rows.

    Reads hf_id, tp, batch.prefill_tokens (P), batch.decode_tokens (D),
    batch.num_prefill_reqs, batch.num_decode_reqs, step.duration_us and, when present, the
    ``rec_*`` columns of reconstruct.attach_reconstruction.

    * GEMM: prefill and decode tokens share one weight read, so the step's GEMM time
      phys_gemm_us is :func:`step_gemm_us` of P + D tokens (MoE: its fused-MoE part is
      phys_moe_us, priced as phys_moe_source says), split between phys_prefill_gemm_us and
      phys_decode_gemm_us in proportion to the tokens (P / (P + D), D / (P + D)). The FLOP
      columns are gemm_flops(P) and gemm_flops(D).
    * Prefill attention: roofline(prefill_attn_flops(rec_prefill_attn_pairs), KV read of
      rec_prefill_kv_read_tokens + KV write of P).
    * Decode attention: roofline(decode_attn_flops(rec_decode_ctx_tokens), KV read of
      rec_decode_ctx_tokens + KV write of D).
    * LM head: roofline of lm_head_flops / lm_head_weight_bytes of rec_sampled_tokens.
    * All-reduce: allreduce_us(P + D). phys_total_us = the sum of the six times.
    * phys_lower_bound_us = hbm_lower_bound_us (0 for a step without tokens).
    * Batch aggregates (``BATCH_AGGREGATE_COLUMNS``, for blis_basis): phys_batch_reqs =
      batch.num_prefill_reqs + batch.num_decode_reqs; phys_decode_prior_ctx_tokens =
      rec_decode_ctx_tokens − rec_decode_reqs (each decoder's KV tokens before this step's
      token); phys_prefill_chunk_input_tokens / _sq_tokens = rec_prefill_chunk_input_tokens
      / rec_prefill_chunk_sq_tokens. Without journeys they are NaN where D > 0 (context) or
      P > 0 (chunks), 0 otherwise: no fallback.

    Fallback where the rec_* columns are NaN (no journeys for the experiment, or a step
    outside the journey range; ``phys_attn_from_journeys`` is False there): prefill
    attention treats the P prefill tokens as one chunk without prior context (P(P+1)/2
    pairs, P KV tokens read); decode attention, its KV read and everything summing it
    (phys_kv_read_bytes, phys_total_*) are NaN where D > 0 (0 where D = 0); the sampled
    count is batch.num_decode_reqs + batch.num_prefill_reqs (an upper bound: partial prefill
    chunks sample nothing).
    """
    missing = set(steps["hf_id"].unique()) - set(specs)
    if missing:
        raise KeyError(f"no ModelSpec for {sorted(missing)}")
    params = steps[["hf_id"]].merge(model_param_table(specs), on="hf_id", how="left")
    m = ModelArrays.from_frame(params)
    tp = _col(steps, "tp")
    p, dec = _col(steps, "batch.prefill_tokens"), _col(steps, "batch.decode_tokens")
    n = p + dec
    has_rec = ~np.isnan(_col(steps, "rec_prefill_tokens")) & ~np.isnan(_col(steps, "rec_decode_reqs"))
    pairs = np.where(has_rec, _col(steps, "rec_prefill_attn_pairs"), p * (p + 1) / 2)
    pre_kv = np.where(has_rec, _col(steps, "rec_prefill_kv_read_tokens"), p)
    ctx = np.where(dec == 0, 0.0, np.where(has_rec, _col(steps, "rec_decode_ctx_tokens"), np.nan))
    sampled = np.where(has_rec, _col(steps, "rec_sampled_tokens"),
                       _col(steps, "batch.num_decode_reqs") + _col(steps, "batch.num_prefill_reqs"))

    gemm_us, moe_us, moe_source = _gemm_by_model(steps["hf_id"].to_numpy(), tp, n, specs, gpu)
    share_p = np.divide(p, n, out=np.zeros_like(n), where=n > 0)
    pre_attn_f = prefill_attn_flops(pairs, m, tp)
    dec_attn_f = decode_attn_flops(ctx, m, tp)
    lm_f = lm_head_flops(sampled, m, tp)
    lm_b = lm_head_weight_bytes(sampled, m, tp)
    out = pd.DataFrame(index=steps.index)
    out["phys_prefill_gemm_flops"] = gemm_flops(p, m, tp)
    out["phys_decode_gemm_flops"] = gemm_flops(dec, m, tp)
    out["phys_prefill_attn_flops"] = pre_attn_f
    out["phys_decode_attn_flops"] = dec_attn_f
    out["phys_lm_head_flops"] = lm_f
    out["phys_total_flops"] = gemm_flops(n, m, tp) + pre_attn_f + dec_attn_f + lm_f
    out["phys_weight_bytes"] = layer_weight_bytes(n, m, tp) + lm_b
    out["phys_kv_read_bytes"] = kv_read_bytes(pre_kv + ctx, m, tp)
    out["phys_kv_write_bytes"] = kv_write_bytes(n, m, tp)
    out["phys_total_bytes"] = out["phys_weight_bytes"] + out["phys_kv_read_bytes"] \
        + out["phys_kv_write_bytes"]
    out["phys_prefill_gemm_us"] = gemm_us * share_p
    out["phys_prefill_attn_us"] = roofline_us(
        pre_attn_f, kv_read_bytes(pre_kv, m, tp) + kv_write_bytes(p, m, tp), gpu)
    out["phys_decode_gemm_us"] = gemm_us * (1.0 - share_p) * (n > 0)
    out["phys_decode_attn_us"] = roofline_us(
        dec_attn_f, kv_read_bytes(ctx, m, tp) + kv_write_bytes(dec, m, tp), gpu)
    out["phys_allreduce_us"] = allreduce_us(n, m, tp, gpu)
    out["phys_lm_head_us"] = roofline_us(lm_f, lm_b, gpu)
    out["phys_total_us"] = out[["phys_prefill_gemm_us", "phys_prefill_attn_us",
                                "phys_decode_gemm_us", "phys_decode_attn_us",
                                "phys_allreduce_us", "phys_lm_head_us"]].sum(axis=1, skipna=False)
    out["phys_lower_bound_us"] = np.where(n > 0, hbm_lower_bound_us(m, tp, gpu), 0.0)
    out["phys_arith_intensity_flops_per_byte"] = out["phys_total_flops"] / out["phys_total_bytes"]
    dur = _col(steps, "step.duration_us")
    out["phys_achieved_tflops"] = np.where(dur > 0, out["phys_total_flops"] / (dur * 1e-6) / 1e12,
                                           np.nan)
    out["phys_attn_from_journeys"] = has_rec
    out["phys_gemm_us"] = out["phys_prefill_gemm_us"] + out["phys_decode_gemm_us"]
    out["phys_moe_us"] = moe_us
    out["phys_moe_source"] = moe_source
    out["phys_batch_reqs"] = _col(steps, "batch.num_prefill_reqs") + _col(steps, "batch.num_decode_reqs")
    out["phys_decode_prior_ctx_tokens"] = np.where(
        dec == 0, 0.0, np.where(has_rec, ctx - _col(steps, "rec_decode_reqs"), np.nan))
    for name in ("input", "sq"):
        rec = _col(steps, f"rec_prefill_chunk_{name}_tokens")
        out[f"phys_prefill_chunk_{name}_tokens"] = np.where(
            p == 0, 0.0, np.where(has_rec, rec, np.nan))
    return out[PHYS_COLUMNS]


def _gemm_by_model(hf_id: np.ndarray, tp: np.ndarray, tokens: np.ndarray,
                   specs: Mapping[str, ModelSpec],
                   gpu: GpuSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`step_gemm_us` per (hf_id, tp) group of rows (the MoE tables are per shape and
    TP): GEMM µs, fused-MoE µs and the MoE source of every row (NaN / "" where tp is NaN)."""
    gemm, moe = np.full(len(tokens), np.nan), np.full(len(tokens), np.nan)
    source = np.full(len(tokens), "", dtype=object)
    keys = pd.DataFrame({"hf_id": hf_id, "tp": tp})
    for (h, t), idx in keys.groupby(["hf_id", "tp"]).indices.items():
        gemm[idx], moe[idx], source[idx] = step_gemm_us(tokens[idx], specs[h], int(t), gpu)
    return gemm, moe, source
