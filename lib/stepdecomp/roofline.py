"""The physical step model (mode "physical"): FLOPs, bytes and roofline time per GPU.

Conventions, everywhere in this module:

* FLOPs count 2 per multiply-add (never MACs).
* Every quantity is per GPU under tensor parallelism tp: weights, heads and FLOPs are
  sharded evenly over the tp GPUs.
* Functions are vectorised: token counts are numpy arrays (one entry per step), ``spec`` is
  a :class:`~stepdecomp.specs.ModelSpec` (scalars) or a :class:`ModelArrays` (one entry per
  step, built by merging the per-model table :func:`model_param_table` onto the steps), and
  ``tp`` a scalar or array. Names carry units: ``_flops``, ``_bytes``, ``_us``, ``tflops``.
* Time comes from ONE roofline, :func:`roofline_us`: max(FLOPs / peak, bytes / HBM
  bandwidth). The NVLink all-reduce is the only other time term.

Notation: d = hidden_size, L = layers, H / H_kv = query / KV heads, d_head = head_dim,
E / k = num_local_experts / num_experts_per_tok (1 / 1 dense), b = bytes per parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping, Union

import numpy as np
import pandas as pd

from .specs import GpuSpec, ModelSpec

ArrayLike = Union[np.ndarray, float, int]

#: The per-model parameters every formula reads (ModelSpec attributes of the same names).
PARAM_FIELDS = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "q_dim",
                "vocab_size", "num_experts", "experts_per_token", "bytes_per_param",
                "attn_params_per_layer", "expert_params", "router_params_per_layer",
                "lm_head_params", "non_embedding_params")

PHYS_COLUMNS = [
    "phys_prefill_gemm_flops", "phys_decode_gemm_flops", "phys_prefill_attn_flops",
    "phys_decode_attn_flops", "phys_lm_head_flops", "phys_total_flops",
    "phys_weight_bytes", "phys_kv_read_bytes", "phys_kv_write_bytes", "phys_total_bytes",
    "phys_prefill_gemm_us", "phys_prefill_attn_us", "phys_decode_gemm_us", "phys_decode_attn_us",
    "phys_allreduce_us", "phys_lm_head_us", "phys_total_us", "phys_lower_bound_us",
    "phys_arith_intensity_flops_per_byte", "phys_achieved_tflops", "phys_attn_from_journeys",
]


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


def model_param_table(specs: Mapping[str, ModelSpec]) -> pd.DataFrame:
    """One row per hf_id with the ``PARAM_FIELDS`` (merged onto the steps by hf_id)."""
    return pd.DataFrame([{"hf_id": hf_id, **{f: float(getattr(s, f)) for f in PARAM_FIELDS}}
                         for hf_id, s in specs.items()], columns=["hf_id", *PARAM_FIELDS])


def _f(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


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
    per_token = spec.attn_params_per_layer + spec.experts_per_token * spec.expert_params \
        + spec.router_params_per_layer
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
    per_layer = spec.attn_params_per_layer + spec.router_params_per_layer \
        + expected_distinct_experts(t, spec) * spec.expert_params
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


def _kv_heads_per_gpu(spec: Arch, tp: ArrayLike) -> np.ndarray:
    # KV heads are split over tp; with fewer KV heads than GPUs each GPU holds a replica of one
    return np.maximum(_f(spec.num_kv_heads) / _f(tp), 1.0)


def kv_read_bytes(kv_tokens: ArrayLike, spec: Arch, tp: ArrayLike) -> np.ndarray:
    """KV cache read: K and V of H_kv·d_head values per token and layer,
    2·L·H_kv·d_head·b·kv_tokens / tp (H_kv / tp floored at one replicated head)."""
    return 2.0 * spec.num_layers * _kv_heads_per_gpu(spec, tp) * spec.head_dim \
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


def allreduce_us(tokens: ArrayLike, spec: Arch, tp: ArrayLike, gpu: GpuSpec) -> np.ndarray:
    """Tensor-parallel all-reduces: two per layer (after attention and after the MLP) of a
    tokens·d·b message. A ring all-reduce sends 2(tp−1)/tp of the message over each GPU's
    link, so 2·L·2(tp−1)/tp·tokens·d·b / NVLink B/s · 1e6 (0 for tp = 1; bandwidth term
    only, no per-call latency)."""
    t = _f(tp)
    msg = _f(tokens) * spec.hidden_size * spec.bytes_per_param
    return 2.0 * spec.num_layers * 2.0 * (t - 1.0) / t * msg / gpu.nvlink_bytes_per_s * 1e6


def hbm_lower_bound_us(spec: Arch, tp: ArrayLike, gpu: GpuSpec) -> np.ndarray:
    """Least time any step with tokens can take: the weights it must stream once per GPU.

    L·(attention + router + k·expert)·b / tp / bw. Dense models (E = k = 1): every layer
    weight. MoE: a step touches at least the k experts its tokens route to (all tokens may
    pick the same k), so only k experts are certain to be read — a strict bound even for a
    single decode token, unlike a full sweep of all E experts. The LM head is left out because
    a step that samples nothing does not read it. A duration below this bound cannot be GPU
    execution time of the step.
    """
    per_layer = (_f(spec.attn_params_per_layer) + _f(spec.router_params_per_layer)
                 + _f(spec.experts_per_token) * _f(spec.expert_params))
    return (_f(spec.num_layers) * per_layer * spec.bytes_per_param / _f(tp)
            / gpu.hbm_bytes_per_s * 1e6)


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

    * GEMM: prefill and decode tokens share one weight read, so the step's GEMM time is
      roofline(gemm_flops(P + D), layer_weight_bytes(P + D)), attributed to prefill and
      decode in proportion to their tokens (P / (P + D) and D / (P + D)). The FLOP columns
      are gemm_flops(P) and gemm_flops(D).
    * Prefill attention: roofline(prefill_attn_flops(rec_prefill_attn_pairs), KV read of
      rec_prefill_kv_read_tokens + KV write of P).
    * Decode attention: roofline(decode_attn_flops(rec_decode_ctx_tokens), KV read of
      rec_decode_ctx_tokens + KV write of D).
    * LM head: roofline of lm_head_flops / lm_head_weight_bytes of rec_sampled_tokens.
    * All-reduce: allreduce_us(P + D). phys_total_us = the sum of the six times.
    * phys_lower_bound_us = hbm_lower_bound_us (0 for a step without tokens).

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

    gemm_us = roofline_us(gemm_flops(n, m, tp), layer_weight_bytes(n, m, tp), gpu)
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
    return out[PHYS_COLUMNS]
