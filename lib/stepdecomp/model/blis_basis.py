"""BLIS's trained-physics step-time basis, as BLIS computes it, vectorised over steps.

BLIS (inference-sim/inference-sim, commit f90a1e3a, ``sim/latency/trained_physics_model.go``,
``StepTime``) prices one batch as

    T = β1a·T_pf_compute + β2a·T_dc_compute + β3·T_weight + β4·T_tp + β5·L + β6·N + β7
        + β8·n_interleaved_moe + β1b·T_pf_kv + β2b·T_dc_kv + β_EP·T_moe_dispatch

truncated to integer µs and at least 1. This module ports the eleven basis quantities (in
BLIS's ``beta_coeffs`` order, :data:`BASIS_COLUMNS`), its conventions kept even where the
physical mode (model/physical.py) differs, so that a coefficient vector fitted here means in
BLIS what it meant here:

* head dimension d_h = hidden / heads (a config's explicit head_dim is not used), KV width
  d_kv = kv_heads·d_h, heads per GPU h = heads / T, KV cache at 2 bytes per element
  (:data:`KV_BYTES_PER_ELEMENT`), activations at 2 bytes (:data:`ACTIVATION_BYTES`), weights
  at the bytes of the config's dtype;
* prefill attention with each request's **whole input length** s_i, not the tokens computed
  so far; projections as d·(2d + 2d_kv) per token and layer (Q and O as d×d);
* no embedding or LM-head weights; the TP all-reduce volume over **HBM** bandwidth;
* hardware: F = peak dense BF16 TFLOP/s·1e6 FLOP/µs, W = HBM TB/s·1e6 bytes/µs
  (data/hardware/h100-sxm.json has BLIS's 989.5 and 3.35).

With data parallelism 1 (the study's runs) the MoE-dispatch term is 0, and for dense and
uniform-MoE models (Mixtral) the interleaved-MoE count is 0. The golden values BLIS's own code
computes (data/blis/basis_golden.csv) pin every quantity (tests/model/test_blis_basis.py).

Per-step inputs (:class:`BatchAggregates`), from a BLIS batch of prefilling requests (chunk
t_i, input length s_i) and decoding requests (context c_j = BLIS's progress_index, the tokens
already in the KV cache before this step's token):

    P = Σ t_i,  Σ t_i·s_i,  Σ t_i²,  D = number of decoders,  C = Σ c_j,  N = requests.

Mapping from the step_components table (physical.BATCH_AGGREGATE_COLUMNS, built from
the journey reconstruction, reconstruct.py): P = batch.prefill_tokens; Σ t_i·s_i =
phys_prefill_chunk_input_tokens with s_i = prompt + k0 of the chunk's segment (a request
resumed after preemption recomputes its prompt and its k0 generated tokens: that is its input
length then); Σ t_i² = phys_prefill_chunk_sq_tokens; D = batch.decode_tokens (one token per
decoder); C = phys_decode_prior_ctx_tokens = rec_decode_ctx_tokens − rec_decode_reqs, since
the reconstruction's context includes the token fed in the step (prompt + k0 + (s − E)) while
BLIS's progress_index counts the tokens before it (at the first decode step, progress_index =
input length); N = phys_batch_reqs = batch.num_prefill_reqs + batch.num_decode_reqs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.paths import DATA_DIR, display_path
from ..hw.specs import SUPPORTED_MODEL_TYPES, GpuSpec, ModelSpec, UnsupportedModelError

#: The BLIS commit this port follows (inference-sim/inference-sim).
BLIS_COMMIT = "f90a1e3a"
#: BLIS's KV cache element size (bytes), whatever the weights' dtype.
KV_BYTES_PER_ELEMENT = 2
#: BLIS's activation element size (bytes) in the TP all-reduce volume.
ACTIVATION_BYTES = 2
#: µs per second: TFLOP/s·1e6 = FLOP/µs and TB/s·1e6 = bytes/µs.
_PER_US = 1e6

#: The eleven basis columns, in BLIS's beta_coeffs order (β1a, β2a, β3, β4, β5, β6, β7, β8,
#: β1b, β2b, β_EP): times in µs, then counts.
BASIS_COLUMNS: tuple[str, ...] = (
    "blis_pf_compute_us", "blis_dc_compute_us", "blis_weight_us", "blis_tp_us",
    "blis_layers", "blis_batch_reqs", "blis_one", "blis_interleaved_moe_layers",
    "blis_pf_kv_us", "blis_dc_kv_us", "blis_moe_dispatch_us",
)
#: BLIS's names of the coefficients, in the same order.
BETA_NAMES: tuple[str, ...] = ("b1a", "b2a", "b3", "b4", "b5", "b6", "b7", "b8", "b1b",
                               "b2b", "b_ep")
#: The quantity names of BLIS's golden csv (data/blis/basis_golden.csv), same order.
GOLDEN_NAMES: tuple[str, ...] = ("T_pf_compute", "T_dc_compute", "T_weight", "T_tp", "L", "B",
                                 "one", "n_interleaved_moe", "T_pf_kv", "T_dc_kv",
                                 "T_moe_dispatch")
N_BETA = len(BASIS_COLUMNS)
N_ALPHA = 3
#: The α's, as BLIS names them (µs, µs, µs per output token).
ALPHA_NAMES: tuple[str, ...] = ("a0_queueing_us", "a1_post_decode_us", "a2_per_output_token_us")

#: step_components columns each aggregate is read from (physical, seed.ID_COLUMNS).
AGGREGATE_SOURCES: dict[str, str] = {
    "prefill_tokens": "batch.prefill_tokens",
    "prefill_chunk_input_tokens": "phys_prefill_chunk_input_tokens",
    "prefill_chunk_sq_tokens": "phys_prefill_chunk_sq_tokens",
    "decode_reqs": "batch.decode_tokens",
    "decode_context_tokens": "phys_decode_prior_ctx_tokens",
    "batch_reqs": "phys_batch_reqs",
}

BLIS_DATA_DIR = DATA_DIR / "blis"
#: BLIS's shipped coefficient vector (its defaults.yaml at f90a1e3a).
SHIPPED_COEFFICIENTS_PATH = BLIS_DATA_DIR / "trained_physics_shipped.yaml"


# --------------------------------------------------------------------------- specs

@dataclass(frozen=True)
class BlisModel:
    """A model as BLIS's trained-physics basis sees it (see the module docstring)."""

    hf_id: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    num_experts: int
    experts_per_token: int
    weight_bytes_per_param: int

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def head_dim(self) -> float:
        """d_h = hidden / heads (BLIS ignores an explicit head_dim)."""
        return self.hidden_size / self.num_heads

    @property
    def kv_dim(self) -> float:
        """d_kv = kv_heads·d_h."""
        return self.num_kv_heads * self.head_dim

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> "BlisModel":
        """From a repository ModelSpec; a model_type outside SUPPORTED_MODEL_TYPES is refused
        (BLIS's basis is ported for llama, mistral, mixtral and qwen2 only)."""
        if spec.model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModelError(
                f"{spec.hf_id}: model_type {spec.model_type!r} has no BLIS trained-physics "
                f"basis here (ported for {', '.join(SUPPORTED_MODEL_TYPES)})")
        return cls(hf_id=spec.hf_id, num_layers=spec.num_layers, hidden_size=spec.hidden_size,
                   num_heads=spec.num_heads, num_kv_heads=spec.num_kv_heads,
                   intermediate_size=spec.intermediate_size, num_experts=spec.num_experts,
                   experts_per_token=max(1, spec.experts_per_token),
                   weight_bytes_per_param=spec.bytes_per_param)


@dataclass(frozen=True)
class BlisHardware:
    """Peak dense FLOP/µs and HBM bytes/µs, BLIS's F and W."""

    name: str
    peak_flops_per_us: float
    hbm_bytes_per_us: float

    @classmethod
    def from_gpu(cls, gpu: GpuSpec) -> "BlisHardware":
        return cls(name=gpu.name, peak_flops_per_us=gpu.peak_bf16_dense_tflops * _PER_US,
                   hbm_bytes_per_us=gpu.hbm_tb_per_s * _PER_US)


@dataclass(frozen=True)
class BatchAggregates:
    """The per-step sums the basis reads (float64 arrays of one length; NaN propagates)."""

    prefill_tokens: np.ndarray
    prefill_chunk_input_tokens: np.ndarray
    prefill_chunk_sq_tokens: np.ndarray
    decode_reqs: np.ndarray
    decode_context_tokens: np.ndarray
    batch_reqs: np.ndarray

    def __post_init__(self) -> None:
        lengths = {name: np.shape(getattr(self, name)) for name in AGGREGATE_SOURCES}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"batch aggregates of different shapes: {lengths}")
        for name in AGGREGATE_SOURCES:
            if np.any(np.asarray(getattr(self, name)) < 0):
                raise ValueError(f"batch aggregate {name} has negative values")

    @classmethod
    def from_requests(cls, prefill: Sequence[tuple[int, int]],
                      decode_contexts: Sequence[int]) -> "BatchAggregates":
        """One batch: prefilling requests as (chunk t_i, input length s_i), decoding ones by
        their context c_j (BLIS's progress_index)."""
        t = np.array([p[0] for p in prefill], dtype=np.float64)
        s = np.array([p[1] for p in prefill], dtype=np.float64)
        c = np.asarray(decode_contexts, dtype=np.float64)
        one = lambda v: np.array([v], dtype=np.float64)  # noqa: E731
        return cls(prefill_tokens=one(t.sum()), prefill_chunk_input_tokens=one((t * s).sum()),
                   prefill_chunk_sq_tokens=one((t * t).sum()), decode_reqs=one(len(c)),
                   decode_context_tokens=one(c.sum()), batch_reqs=one(len(t) + len(c)))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "BatchAggregates":
        """From a step_components frame (columns :data:`AGGREGATE_SOURCES`); a missing column
        is a KeyError naming it."""
        missing = [c for c in AGGREGATE_SOURCES.values() if c not in frame]
        if missing:
            raise KeyError(f"step table lacks the column(s) BLIS's basis needs: {missing} "
                           f"(physical.BATCH_AGGREGATE_COLUMNS; rerun notebook 02)")
        return cls(**{name: pd.to_numeric(frame[col], errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan) for name, col in AGGREGATE_SOURCES.items()})


# --------------------------------------------------------------------------- formulas

def projection_flops_per_token(m: BlisModel, tp: float) -> float:
    """Attention projections per token, all layers: L·2·d·(2d + 2d_kv)/T (Q and O d×d, K and V
    d×d_kv, 2 FLOPs per multiply-add)."""
    d = m.hidden_size
    return m.num_layers * 2.0 * d * (2.0 * d + 2.0 * m.kv_dim) / tp


def ffn_flops(tokens: np.ndarray, m: BlisModel, tp: float) -> np.ndarray:
    """Gated MLP FLOPs of ``tokens`` tokens, all layers: dense L·x·6·d·d_ff/T; MoE
    L·(x·k/T)·6·d·d_ff (k experts per token, the expert group is T)."""
    x = np.asarray(tokens, dtype=np.float64)
    per_layer = 6.0 * m.hidden_size * m.intermediate_size
    if m.is_moe:
        return m.num_layers * (x * m.experts_per_token / tp) * per_layer
    return m.num_layers * x * per_layer / tp


def prefill_attention_flops(chunk_input_tokens: np.ndarray, chunk_sq_tokens: np.ndarray,
                            m: BlisModel, tp: float) -> np.ndarray:
    """L·Σ_i 4·h·t_i·(s_i + t_i/2)·d_h = L·4·h·d_h·(Σ t_i·s_i + Σ t_i²/2): every chunk token
    attends (BLIS's approximation) the request's whole input length plus half its chunk."""
    h = m.num_heads / tp
    return m.num_layers * 4.0 * h * m.head_dim * (
        np.asarray(chunk_input_tokens, dtype=np.float64) + np.asarray(chunk_sq_tokens) / 2.0)


def decode_attention_flops(context_tokens: np.ndarray, m: BlisModel, tp: float) -> np.ndarray:
    """L·4·h·C·d_h: one query per decoder against its C context tokens."""
    return m.num_layers * 4.0 * (m.num_heads / tp) * np.asarray(context_tokens) * m.head_dim


def kv_bytes_per_token(m: BlisModel, tp: float) -> float:
    """K and V of one token in every layer on one GPU: L·2·(d_kv/T)·2 bytes."""
    return m.num_layers * 2.0 * (m.kv_dim / tp) * KV_BYTES_PER_ELEMENT


def weight_bytes(m: BlisModel, tp: float) -> float:
    """Layer weights per GPU (no embedding, no LM head): L·d·(2d + 2d_kv)·w/T plus dense
    L·3·d·d_ff·w/T or MoE L·(E/T)·3·d·d_ff·w (every expert, no router)."""
    d, w = m.hidden_size, m.weight_bytes_per_param
    attn = m.num_layers * d * (2.0 * d + 2.0 * m.kv_dim) * w / tp
    mlp = 3.0 * d * m.intermediate_size * w
    ffn = m.num_layers * (m.num_experts / tp) * mlp if m.is_moe else m.num_layers * mlp / tp
    return attn + ffn


def tp_allreduce_bytes(tokens: np.ndarray, m: BlisModel, tp: float) -> np.ndarray:
    """2·L·x·d·a·2·(T−1)/T: two all-reduces per layer (attention, FFN) of x·d activations,
    ring traffic 2(T−1)/T; 0 at T = 1."""
    return (2.0 * m.num_layers * np.asarray(tokens, dtype=np.float64) * m.hidden_size
            * ACTIVATION_BYTES * 2.0 * (tp - 1.0) / tp)


def basis(agg: BatchAggregates, m: BlisModel, tp: int, hw: BlisHardware) -> np.ndarray:
    """The (steps × 11) basis in :data:`BASIS_COLUMNS` order for one model and TP.

    T_pf_compute = [P·proj + prefill attention + FFN(P)]/F and T_pf_kv = P·kv/W (0 when
    P = 0); T_dc_compute = [D·proj + decode attention + FFN(D)]/F and T_dc_kv = (C + D)·kv/W
    (read the context, write the new token; 0 when D = 0); T_weight = weight_bytes/W;
    T_tp = all-reduce bytes of P + D tokens / W; then L, N, 1, 0 (interleaved MoE) and 0
    (MoE dispatch, data parallelism 1). Symbols as in the formula functions above.
    """
    f, w = hw.peak_flops_per_us, hw.hbm_bytes_per_us
    p, dec = agg.prefill_tokens, agg.decode_reqs
    t = float(tp)
    proj = projection_flops_per_token(m, t)
    kv = kv_bytes_per_token(m, t)
    pf = (p * proj + prefill_attention_flops(agg.prefill_chunk_input_tokens,
                                             agg.prefill_chunk_sq_tokens, m, t)
          + ffn_flops(p, m, t)) / f
    dc = (dec * proj + decode_attention_flops(agg.decode_context_tokens, m, t)
          + ffn_flops(dec, m, t)) / f
    n = len(p)
    out = np.empty((n, N_BETA), dtype=np.float64)
    out[:, 0] = np.where(p > 0, pf, 0.0)
    out[:, 1] = np.where(dec > 0, dc, 0.0)
    out[:, 2] = weight_bytes(m, t) / w
    out[:, 3] = tp_allreduce_bytes(p + dec, m, t) / w if tp > 1 else 0.0
    out[:, 4] = m.num_layers
    out[:, 5] = agg.batch_reqs
    out[:, 6] = 1.0
    out[:, 7] = 0.0
    out[:, 8] = np.where(p > 0, p * kv / w, 0.0)
    out[:, 9] = np.where(dec > 0, (agg.decode_context_tokens + dec) * kv / w, 0.0)
    out[:, 10] = 0.0
    return out


def basis_table(frame: pd.DataFrame, specs: Mapping[str, ModelSpec], gpu: GpuSpec
                ) -> pd.DataFrame:
    """:data:`BASIS_COLUMNS` for every row of a step table with hf_id, tp and the
    :data:`AGGREGATE_SOURCES` columns (same index as ``frame``). Vectorised per (model, TP)
    group. Rows with a NaN aggregate get NaN where it enters."""
    for col in ("hf_id", "tp"):
        if col not in frame:
            raise KeyError(f"step table lacks column {col!r} (join hf_id from the steps table)")
    missing = sorted(set(frame["hf_id"].dropna().unique()) - set(specs))
    if missing:
        raise KeyError(f"no ModelSpec for {missing}")
    agg = BatchAggregates.from_frame(frame)
    hw = BlisHardware.from_gpu(gpu)
    out = np.full((len(frame), N_BETA), np.nan)
    keys = pd.DataFrame({"hf_id": frame["hf_id"].to_numpy(), "tp": frame["tp"].to_numpy()})
    for (hf_id, tp), idx in keys.groupby(["hf_id", "tp"], sort=True).indices.items():
        sub = BatchAggregates(**{k: getattr(agg, k)[idx] for k in AGGREGATE_SOURCES})
        out[idx] = basis(sub, BlisModel.from_spec(specs[hf_id]), int(tp), hw)
    return pd.DataFrame(out, columns=list(BASIS_COLUMNS), index=frame.index)


# --------------------------------------------------------------------------- coefficients

def _finite_non_negative(values: Sequence[float], what: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    bad = [i for i, v in enumerate(out) if not (math.isfinite(v) and v >= 0)]
    if bad:
        raise ValueError(f"{what}: values must be finite and >= 0 (BLIS rejects others); "
                         f"bad at index {bad}: {[out[i] for i in bad]}")
    return out


@dataclass(frozen=True)
class TrainedPhysicsCoefficients:
    """BLIS's trained_physics_coefficients: 3 α's (µs) and 11 β's in BASIS_COLUMNS order,
    all finite and non-negative."""

    alpha: tuple[float, ...]
    beta: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.alpha) != N_ALPHA:
            raise ValueError(f"alpha_coeffs: expected {N_ALPHA} values, got {len(self.alpha)}")
        if len(self.beta) != N_BETA:
            raise ValueError(f"beta_coeffs: expected {N_BETA} values (BLIS's 11-value form), "
                             f"got {len(self.beta)}")
        object.__setattr__(self, "alpha", _finite_non_negative(self.alpha, "alpha_coeffs"))
        object.__setattr__(self, "beta", _finite_non_negative(self.beta, "beta_coeffs"))

    @property
    def beta_array(self) -> np.ndarray:
        return np.asarray(self.beta, dtype=np.float64)

    def as_yaml_section(self) -> dict[str, list[float]]:
        """The ``trained_physics_coefficients`` mapping of a BLIS defaults file."""
        return {"alpha_coeffs": list(self.alpha), "beta_coeffs": list(self.beta)}


def load_coefficients(path: Path = SHIPPED_COEFFICIENTS_PATH) -> TrainedPhysicsCoefficients:
    """Read ``alpha_coeffs`` / ``beta_coeffs`` from a YAML file (a BLIS defaults.yaml or
    data/blis/trained_physics_shipped.yaml; under ``trained_physics_coefficients`` if that
    key is present). Errors name the file."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{display_path(path)}: not valid YAML: {exc}") from None
    if isinstance(raw, dict) and "trained_physics_coefficients" in raw:
        raw = raw["trained_physics_coefficients"]
    if not isinstance(raw, dict) or not {"alpha_coeffs", "beta_coeffs"} <= set(raw):
        raise ValueError(f"{display_path(path)}: needs alpha_coeffs and beta_coeffs lists")
    try:
        return TrainedPhysicsCoefficients(alpha=tuple(raw["alpha_coeffs"]),
                                          beta=tuple(raw["beta_coeffs"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{display_path(path)}: {exc}") from None


# --------------------------------------------------------------------------- prediction

def step_time_unrounded_us(basis_values: np.ndarray, beta: np.ndarray | Sequence[float]
                           ) -> np.ndarray:
    """Σ_k β_k·basis_k per step (µs), before BLIS's truncation: what a fit minimises."""
    b = np.asarray(beta, dtype=np.float64)
    if b.shape != (N_BETA,):
        raise ValueError(f"expected {N_BETA} betas, got shape {b.shape}")
    x = np.asarray(basis_values, dtype=np.float64)
    # a fixed-order sum (not a BLAS dot) so the result is the same on every machine
    return (x * b).sum(axis=1)


def step_time_us(basis_values: np.ndarray, beta: np.ndarray | Sequence[float]) -> np.ndarray:
    """BLIS's StepTime: the unrounded sum truncated toward zero to integer µs (Go's
    int64(v)), at least 1. NaN steps stay NaN (float result)."""
    t = step_time_unrounded_us(basis_values, beta)
    return np.where(np.isnan(t), np.nan, np.maximum(1.0, np.trunc(t)))


def price_batch_us(model: ModelSpec | BlisModel, tp: int, gpu: GpuSpec | BlisHardware,
                   coefficients: TrainedPhysicsCoefficients,
                   prefill: Sequence[tuple[int, int]], decode_contexts: Sequence[int]) -> int:
    """BLIS's StepTime (integer µs) of ONE batch: prefilling requests as (chunk tokens,
    input length), decoding requests by their context (KV tokens before this step's token).
    For a replay whose forward pass is priced by a fitted step model."""
    m = model if isinstance(model, BlisModel) else BlisModel.from_spec(model)
    hw = gpu if isinstance(gpu, BlisHardware) else BlisHardware.from_gpu(gpu)
    x = basis(BatchAggregates.from_requests(prefill, decode_contexts), m, tp, hw)
    return int(step_time_us(x, coefficients.beta_array)[0])


#: The per-step sums a batch's StepTime is linear in. BLIS's prefill terms vanish with P and
#: its decode terms with D ("0 when P = 0"): each is a line through 0 in its own sums, so
#: the StepTime is linear in all of them together.
LINEAR_TERMS: tuple[str, ...] = ("prefill_tokens", "prefill_chunk_input_tokens",
                                 "prefill_chunk_sq_tokens", "decode_reqs",
                                 "decode_context_tokens", "batch_reqs")


def linear_step_time(model: ModelSpec | BlisModel, tp: int, gpu: GpuSpec | BlisHardware,
                     beta: np.ndarray | Sequence[float]) -> dict[str, float]:
    """The unrounded StepTime of one model, TP and GPU as a line in the batch sums:
    ``{"constant": c0, <each of LINEAR_TERMS>: slope}`` (µs per unit). Read off the basis
    itself — at the empty batch, and around a batch with one prefill and one decode token (so
    that neither branch is switched off) plus one unit of each sum — not re-derived, so a
    replay prices a batch as c0 + Σ slope·sum without building the basis per step."""
    m = model if isinstance(model, BlisModel) else BlisModel.from_spec(model)
    hw = gpu if isinstance(gpu, BlisHardware) else BlisHardware.from_gpu(gpu)
    k = len(LINEAR_TERMS)
    base = np.array([1.0 if n in ("prefill_tokens", "decode_reqs") else 0.0 for n in LINEAR_TERMS])
    points = np.vstack([np.zeros(k), base, base + np.eye(k)])
    agg = BatchAggregates(**{name: points[:, i] for i, name in enumerate(LINEAR_TERMS)})
    t = step_time_unrounded_us(basis(agg, m, tp, hw), beta)
    return {"constant": float(t[0]), **{name: float(t[i + 2] - t[1])
                                        for i, name in enumerate(LINEAR_TERMS)}}
