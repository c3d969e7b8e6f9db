"""Measured vLLM kernel latencies (vLLM 0.24.0 tables of aiconfigurator-core), interpolated.

The reference-data replay prices every forward pass with these numbers.
The tables ship inside the installed ``aiconfigurator_core`` package under
``systems/data/<system>/<op>/vllm/<version>/*.parquet`` (system ``h100_sxm`` or
``h200_sxm``, named by ``kernel_system`` in data/hardware/*.json) and are located through
``importlib.resources``; latencies there are milliseconds per kernel call (one layer),
the functions here return microseconds.

Weight precision (``PRECISIONS``) selects the GEMM and MoE rows: ``bf16`` uses GEMM
``gemm_dtype == bfloat16`` (torch linear) and the unquantised fused Triton MoE; ``fp8``
uses per-tensor FP8 GEMMs (``gemm_dtype == fp8``, CUTLASS scaled-mm) and the FP8 fused MoE
(``moe_dtype == fp8``, FlashInfer CUTLASS experts). Activations, the KV cache, attention
(``kv_cache_dtype == bfloat16``, FA3, no sliding window) and the all-reduce (bf16) are the
same under both: FP8 *weights* halve the bytes the GEMMs stream, nothing else.

Interpolation. Between measured points latency is piecewise linear in log(size) vs
log(latency) ("log-log linear"), which is exact for a power law and keeps the flat,
launch-bound region flat. Beyond the largest measured size the last measured latency is
scaled *proportionally* to the size (latency ∝ FLOPs or bytes moved, the large-size regime
of every kernel here); below the smallest size it is held constant (launch-bound).

Shapes the tables do not contain are derived from measured ones by the work they do,
never invented:

* GEMM (m tokens, n, k) with (n, k) not measured, e.g. Llama-2-7B's gate/up projection
  n = 2·11008: take the measured (n', k') nearest in log space (|ln n/n'| + |ln k/k'|) and
  scale its latency by n·k / (n'·k'). At a fixed m both the FLOPs (2·m·n·k) and the weight
  bytes (2·n·k) scale by exactly that ratio, so the scaling is right in both the
  memory-bound (small m) and the compute-bound (large m) regime.
* Attention with a head configuration not measured (Llama-2-7B's decode attention has 32 KV
  heads; the generation table stops at 8): heads are independent, so H query heads over
  H_kv KV heads for a batch of b sequences do the same FLOPs and move the same bytes as
  H/g query heads over H_kv/g KV heads for g·b sequences. The smallest g that lands on a
  measured configuration is used (g = 4 for 32/32 -> 8/8).
* A chunked-prefill chunk of c new tokens after p cached tokens: the context table measures
  a whole causal prefill of n tokens, n²/2 (query, key) pairs. The chunk has c·p + c²/2
  pairs, i.e. the work of a whole prefill of n_eq = sqrt(c² + 2·c·p) tokens, whose latency
  is used (see :func:`chunk_attention_us`).
* All-reduce message sizes are bf16 *element* counts (tokens · hidden_size), as
  aiconfigurator's own ``CustomAllReduce(…, hidden_size, tp)`` uses them (the largest rows
  then imply ~470 GB/s bus bandwidth on 8 GPUs, NVLink's range; as bytes they would imply
  half). Batches up to CUDA_GRAPH_MAX_TOKENS use the CUDA-graph rows, larger ones the
  eager rows.
* MoE: vLLM's unquantised fused Triton MoE with ``balanced`` routing (Mixtral is trained
  with a load-balancing loss), expert parallelism off, ``moe_tp_size`` = the model's TP.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

#: The default kernel tables: H100 SXM, bf16 weights.
SYSTEM = "h100_sxm"
PRECISION = "bf16"
#: weight precision -> (gemm_dtype, moe_dtype, MoE kernel) rows of the tables
PRECISIONS: dict[str, tuple[str, str, str]] = {
    "bf16": ("bfloat16", "bfloat16", "vllm_unquantizedfusedmoe_triton_tritonexperts"),
    "fp8": ("fp8", "fp8", "vllm_modeloptfp8moe_flashinfer_cutlass_flashinferexperts"),
}
VLLM_VERSION = "0.24.0"
ATTENTION_KERNEL = "vllm_flash_attn_fa3"
MOE_DISTRIBUTION = "balanced"
#: vLLM v1 captures CUDA graphs for batches up to this many tokens by default; the
#: all-reduce inside a captured graph is the "graph" backend row, above it "eager".
CUDA_GRAPH_MAX_TOKENS = 512

_US_PER_MS = 1000.0


def tables_dir(system: str = SYSTEM) -> Path:
    """The installed package's table directory of ``system`` (no hard-coded absolute path)."""
    root = resources.files("aiconfigurator_core") / "systems" / "data" / system
    path = Path(str(root))
    if not path.is_dir():
        raise FileNotFoundError(f"aiconfigurator_core has no {system} tables at {path}; "
                                f"install aiconfigurator-core (see pyproject.toml)")
    return path


def _table(system: str, op: str, name: str) -> pd.DataFrame:
    return pd.read_parquet(tables_dir(system) / op / "vllm" / VLLM_VERSION / name)


# --------------------------------------------------------------------------- interpolation

def loglog_interp(x: np.ndarray | float, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Piecewise log-log linear interpolation of f(x) through the points (xp, fp).

    xp must be positive and strictly increasing. Below xp[0] the value is fp[0]
    (launch-bound floor); above xp[-1] it grows proportionally, fp[-1]·x/xp[-1].
    """
    x = np.asarray(x, dtype=np.float64)
    xp = np.asarray(xp, dtype=np.float64)
    fp = np.asarray(fp, dtype=np.float64)
    lx = np.log(np.clip(x, xp[0], xp[-1]))
    out = np.exp(np.interp(lx, np.log(xp), np.log(fp)))
    return np.where(x > xp[-1], fp[-1] * x / xp[-1], out)


# --------------------------------------------------------------------------- tables

@dataclass(frozen=True)
class KernelTables:
    """The filtered tables of one (system, weight precision), latency columns in ms as stored."""

    gemm: pd.DataFrame            # m, n, k, latency
    context_attention: pd.DataFrame     # batch_size, isl, num_heads, num_key_value_heads, head_dim, latency
    generation_attention: pd.DataFrame  # batch_size, kv_len, num_heads, num_key_value_heads, head_dim, latency
    allreduce: pd.DataFrame       # num_gpus, message_size, backend, latency
    moe: pd.DataFrame             # num_tokens, hidden_size, inter_size, topk, num_experts, moe_tp_size, latency


@lru_cache(maxsize=4)
def load_tables(system: str = SYSTEM, precision: str = PRECISION) -> KernelTables:
    """Read and filter the five tables of ``system`` at weight ``precision``, once per process."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown weight precision {precision!r}; known: {sorted(PRECISIONS)}")
    gemm_dtype, moe_dtype, moe_kernel = PRECISIONS[precision]
    g = _table(system, "gemm", "gemm_perf.parquet")
    g = g[g["gemm_dtype"] == gemm_dtype][["m", "n", "k", "latency"]]

    def attn(name: str) -> pd.DataFrame:
        a = _table(system, "attention", name)
        keep = ((a["kv_cache_dtype"] == "bfloat16") & (a["attn_dtype"] == "bfloat16")
                & (a["window_size"] == 0) & (a["kernel_source"] == ATTENTION_KERNEL))
        return a[keep]

    ctx = attn("context_attention_perf.parquet")
    ctx = ctx[["batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "latency"]]
    gen = attn("generation_attention_perf.parquet")
    # generation rows measure one new token per sequence after `step` cached ones (isl = 1):
    # the attended KV length is isl + step
    gen = gen.assign(kv_len=gen["isl"] + gen["step"])[
        ["batch_size", "kv_len", "num_heads", "num_key_value_heads", "head_dim", "latency"]]
    ar = _table(system, "comm", "custom_allreduce_perf.parquet")
    ar = ar[ar["allreduce_dtype"] == "bfloat16"][["num_gpus", "message_size", "backend", "latency"]]
    moe = _table(system, "moe", "moe_perf.parquet")
    moe = moe[(moe["moe_dtype"] == moe_dtype) & (moe["kernel_source"] == moe_kernel)
              & (moe["distribution"] == MOE_DISTRIBUTION) & (moe["moe_ep_size"] == 1)]
    moe = moe[["num_tokens", "hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size",
               "latency"]]
    return KernelTables(*(t.reset_index(drop=True) for t in (g, ctx, gen, ar, moe)))


def _curve(frame: pd.DataFrame, x: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (x, latency_ms) of one measured series, duplicates averaged."""
    s = frame.groupby(x, sort=True)["latency"].mean()
    return s.index.to_numpy(np.float64), s.to_numpy(np.float64)


# --------------------------------------------------------------------------- GEMM

def nearest_gemm_shape(n: int, k: int, tables: KernelTables | None = None) -> tuple[int, int]:
    """The measured (n', k') closest to (n, k) in log space; (n, k) itself when measured."""
    g = (tables or load_tables()).gemm
    shapes = g[["n", "k"]].drop_duplicates().sort_values(["n", "k"]).to_numpy()
    dist = np.abs(np.log(shapes[:, 0] / n)) + np.abs(np.log(shapes[:, 1] / k))
    n2, k2 = shapes[int(np.argmin(dist))]
    return int(n2), int(k2)


def gemm_latency_us(m_tokens: np.ndarray | int, n: int, k: int,
                    tables: KernelTables | None = None) -> np.ndarray:
    """Latency (µs) of a GEMM [m_tokens × k] · [k × n] at the tables' weight precision, per call.

    Measured (n, k): log-log interpolation over m. Otherwise the nearest measured shape,
    scaled by n·k/(n'·k') (module docstring). m = 0 costs 0.
    """
    t = tables or load_tables()
    n2, k2 = nearest_gemm_shape(n, k, t)
    sub = t.gemm[(t.gemm["n"] == n2) & (t.gemm["k"] == k2)]
    xp, fp = _curve(sub, "m")
    m = np.asarray(m_tokens, dtype=np.float64)
    lat = loglog_interp(np.maximum(m, 1.0), xp, fp) * (n * k) / (n2 * k2) * _US_PER_MS
    return np.where(m > 0, lat, 0.0)


# --------------------------------------------------------------------------- attention

def _head_config(frame: pd.DataFrame, num_heads: int, num_kv_heads: int,
                 head_dim: int) -> tuple[pd.DataFrame, int]:
    """Rows of the measured configuration equivalent to (H, H_kv) and the batch factor g:
    (H, H_kv, b) does the work of (H/g, H_kv/g, g·b); the smallest measured g is used."""
    for g in range(1, num_kv_heads + 1):
        if num_heads % g or num_kv_heads % g:
            continue
        sub = frame[(frame["num_heads"] == num_heads // g)
                    & (frame["num_key_value_heads"] == num_kv_heads // g)
                    & (frame["head_dim"] == head_dim)]
        if len(sub):
            return sub, g
    raise LookupError(f"no measured attention configuration equivalent to {num_heads} heads / "
                      f"{num_kv_heads} KV heads / head_dim {head_dim}")


def context_attention_us(isl_tokens: np.ndarray | float, num_heads: int, num_kv_heads: int,
                         head_dim: int, tables: KernelTables | None = None) -> np.ndarray:
    """Latency (µs) of one causal FlashAttention prefill of ``isl_tokens`` tokens (one
    sequence, one layer, per-GPU heads); log-log over isl. 0 tokens cost 0."""
    t = tables or load_tables()
    sub, g = _head_config(t.context_attention, num_heads, num_kv_heads, head_dim)
    sub = sub[sub["batch_size"] == g]
    if not len(sub):
        raise LookupError(f"context attention: no batch-{g} rows for the equivalent heads")
    xp, fp = _curve(sub, "isl")
    n = np.asarray(isl_tokens, dtype=np.float64)
    return np.where(n > 0, loglog_interp(np.maximum(n, 1.0), xp, fp) * _US_PER_MS, 0.0)


def equivalent_prefill_tokens(chunk_tokens: np.ndarray | float,
                              prior_tokens: np.ndarray | float) -> np.ndarray:
    """n_eq = sqrt(c² + 2·c·p): the whole-prefill length with the (query, key) pair count
    of a chunk of c tokens after p cached ones (n²/2 = c·p + c²/2)."""
    c = np.asarray(chunk_tokens, dtype=np.float64)
    p = np.asarray(prior_tokens, dtype=np.float64)
    return np.sqrt(c * c + 2.0 * c * p)


def chunk_attention_us(chunk_tokens: np.ndarray | float, prior_tokens: np.ndarray | float,
                       num_heads: int, num_kv_heads: int, head_dim: int,
                       tables: KernelTables | None = None) -> np.ndarray:
    """Latency (µs) of the attention of a prefill chunk (c new tokens after p cached)."""
    n_eq = equivalent_prefill_tokens(chunk_tokens, prior_tokens)
    return context_attention_us(n_eq, num_heads, num_kv_heads, head_dim, tables)


def generation_attention_grid_us(batch: np.ndarray, kv_len: np.ndarray, num_heads: int,
                                 num_kv_heads: int, head_dim: int,
                                 tables: KernelTables | None = None) -> np.ndarray:
    """Decode attention latency (µs, one layer) on the grid batch × kv_len (shape
    (len(batch), len(kv_len))): b sequences each attending kv_len cached tokens.

    Each measured batch row is interpolated log-log in kv_len (extrapolated proportionally
    beyond its largest measured length, where the kernel is bandwidth-bound), then rows are
    interpolated log-log in batch. batch = 0 costs 0.
    """
    t = tables or load_tables()
    sub, g = _head_config(t.generation_attention, num_heads, num_kv_heads, head_dim)
    b = np.asarray(batch, dtype=np.float64) * g
    kv = np.maximum(np.asarray(kv_len, dtype=np.float64), 1.0)
    rows_b, rows = [], []
    for bs, row in sub.groupby("batch_size", sort=True):
        xp, fp = _curve(row, "kv_len")
        if len(xp) >= 2:
            rows_b.append(float(bs))
            rows.append(np.log(loglog_interp(kv, xp, fp)))
    rb = np.log(np.asarray(rows_b))
    lr = np.vstack(rows)                                  # (n_rows, n_kv) log latency
    lb = np.log(np.clip(np.maximum(b, 1.0), rows_b[0], rows_b[-1]))
    j = np.clip(np.searchsorted(rb, lb, side="right") - 1, 0, len(rb) - 2)
    w = ((lb - rb[j]) / (rb[j + 1] - rb[j]))[:, None]
    out = np.exp(lr[j] * (1.0 - w) + lr[j + 1] * w)
    beyond = (b > rows_b[-1])[:, None]                    # proportional in batch beyond the table
    out = np.where(beyond, out * (b / rows_b[-1])[:, None], out)
    return np.where((b > 0)[:, None], out * _US_PER_MS, 0.0)


# --------------------------------------------------------------------------- communication, MoE

def allreduce_us(message_elements: np.ndarray | float, num_gpus: int, backend: str = "vllm_graph",
                 tables: KernelTables | None = None) -> np.ndarray:
    """Latency (µs) of one bf16 custom all-reduce of ``message_elements`` values over
    ``num_gpus`` GPUs, log-log over the message size; 0 for one GPU or an empty message.
    ``backend`` is the table's ``vllm_graph`` (inside a CUDA graph) or ``vllm_eager``."""
    x = np.asarray(message_elements, dtype=np.float64)
    if num_gpus <= 1:
        return np.zeros_like(x)
    t = tables or load_tables()
    sub = t.allreduce[(t.allreduce["num_gpus"] == num_gpus) & (t.allreduce["backend"] == backend)]
    if not len(sub):
        raise LookupError(f"no all-reduce rows for {num_gpus} GPUs, backend {backend}")
    xp, fp = _curve(sub, "message_size")
    return np.where(x > 0, loglog_interp(np.maximum(x, 1.0), xp, fp) * _US_PER_MS, 0.0)


def allreduce_tokens_us(tokens: np.ndarray, hidden_size: int, num_gpus: int,
                        tables: KernelTables | None = None) -> np.ndarray:
    """Latency (µs) of the all-reduce of a [tokens × hidden_size] bf16 activation: the
    CUDA-graph measurement up to CUDA_GRAPH_MAX_TOKENS tokens, the eager one above."""
    tok = np.asarray(tokens, dtype=np.float64)
    msg = tok * hidden_size
    graph = allreduce_us(msg, num_gpus, "vllm_graph", tables)
    eager = allreduce_us(msg, num_gpus, "vllm_eager", tables)
    return np.where(tok <= CUDA_GRAPH_MAX_TOKENS, graph, eager)


def moe_latency_us(num_tokens: np.ndarray | int, hidden_size: int, inter_size: int, topk: int,
                   num_experts: int, moe_tp_size: int,
                   tables: KernelTables | None = None) -> np.ndarray:
    """Latency (µs) of vLLM's fused MoE (the tables' precision, balanced routing) for
    ``num_tokens`` tokens on one GPU of a ``moe_tp_size``-way tensor-parallel expert layer;
    log-log over tokens. 0 tokens cost 0."""
    t = tables or load_tables()
    m = t.moe
    sub = m[(m["hidden_size"] == hidden_size) & (m["inter_size"] == inter_size)
            & (m["topk"] == topk) & (m["num_experts"] == num_experts)
            & (m["moe_tp_size"] == moe_tp_size)]
    if not len(sub):
        raise LookupError(f"no MoE rows for hidden {hidden_size}, inter {inter_size}, "
                          f"top-{topk} of {num_experts}, moe_tp {moe_tp_size}")
    xp, fp = _curve(sub, "num_tokens")
    n = np.asarray(num_tokens, dtype=np.float64)
    return np.where(n > 0, loglog_interp(np.maximum(n, 1.0), xp, fp) * _US_PER_MS, 0.0)


def is_measured_gemm(n: int, k: int, tables: KernelTables | None = None) -> bool:
    return nearest_gemm_shape(n, k, tables) == (n, k)


__all__ = [
    "KernelTables", "load_tables", "tables_dir", "loglog_interp", "nearest_gemm_shape",
    "gemm_latency_us", "is_measured_gemm", "context_attention_us", "equivalent_prefill_tokens",
    "chunk_attention_us", "generation_attention_grid_us", "allreduce_us", "allreduce_tokens_us",
    "moe_latency_us", "CUDA_GRAPH_MAX_TOKENS", "PRECISIONS", "SYSTEM", "PRECISION",
]
