"""Reference-data generator: replay the study's experiments through a vLLM-v1-style scheduler.

``python -m stepdecomp.replay --out data/raw`` writes, for every experiment directory of
``data/workloads/``, ``exp-config.yaml`` and ``profile.yaml`` (copied verbatim), ``traces.json``
(OTLP JSON lines in the format of trace-format.md / ``otlp.py``) and
``results/summary_lifecycle_metrics.json``. The traces are GENERATED: the scheduler and
the workload follow the published configuration, the step durations come from measured
H100 SXM kernel latencies (``kernels.py``); nothing here is a measured step trace.

Workload (profile.yaml, inference-perf ``shared_prefix`` with ``enable_multi_turn_chat``)
-----------------------------------------------------------------------------------------
* Arrivals: each load stage (rate r req/s for d s, d scaled by ``--time-scale``) sends
  int(r·d) requests with exponential gaps normalised to span the stage exactly — what
  inference-perf's ``constant`` load timer does. Seeded; open loop (a request is sent at
  its time whatever the server does).
* Users: U = num_unique_system_prompts × num_users_per_system_prompt; request j belongs to
  user perm[j mod U] (a seeded permutation, as inference-perf shuffles its user sessions);
  a user's group (system prompt) is user // num_users_per_system_prompt.
* Prompt of a request: S + h·(Q + O) + Q tokens — the system prompt (S =
  system_prompt_len), the h exchanges (question Q = question_len, answer O = output_len)
  of the user's conversation that had *completed* when the request was sent, then the new
  question. Prompts are kept ≤ max_model_len − O: when h would exceed
  h_max = (max_model_len − O − S − Q) // (Q + O) the user starts a new conversation
  (h = 0). With these profiles h_max = 4 (general, codegen), 3 (roleplay) and 0
  (reasoning: Q + O = 2382, always single-turn). inference-perf itself never truncates
  (an over-long prompt is rejected by vLLM) and serialises a user's turns (a turn waits
  for the previous answer); the replay is open loop instead, as the issue specifies, so the
  server sees the offered load (and the reasoning profiles overload it), and a turn carries
  the history that exists when it is sent.
* Output length = output_len exactly (ignore_eos) -> finish.status ``length``.
* Clients give up CLIENT_TIMEOUT_S = 240 s after sending: the request is aborted and leaves
  the waiting queue or the running batch (journey ``FINISHED`` with status ``aborted``).

Scheduler (vLLM v1, chunked prefill + prefix caching, FCFS)
-----------------------------------------------------------
Per step, with token budget B = max_num_batched_tokens:
1. Running requests in running order: a decoding request takes 1 token; a partially
   prefilled request continues its prompt with min(remaining, budget left). Each needs KV
   slots; when the free blocks do not suffice the most recently admitted running request
   is preempted (recompute: its blocks are freed, it goes to the front of the waiting
   queue, ``journey.PREEMPTED``), until the request fits or is itself preempted.
2. If nothing was preempted, waiting requests are admitted FCFS while budget > 0,
   running < max_num_seqs and their first chunk's blocks fit (else admission stops).
   Prefix-cache hits are full 16-token blocks of cached prefixes, capped at prompt − 1
   tokens; ``prefill.done_tokens`` of ``SCHEDULED`` is the hit.
3. After the step every request whose prefill completed and every decoder samples one token;
   a request with O tokens finishes (``FINISHED`` length) and frees its blocks.
These rules make the chunking exactly otlp.py's greedy rule (decodes first, then prefills
in admission order, each min(remaining, B − used)): at most one prefill is ever left
partial and it is always the last in running order.

KV cache: KV_BLOCK_TOKENS = 16-token blocks; blocks = (hbm · GPU_MEMORY_UTILIZATION −
weights/TP − ACTIVATION_RESERVE_GIB) / (16 · 2·L·H_kv·d_head·2 bytes / TP) per GPU.
Prefix cache, at the granularity of cached *segments* (runs of full blocks): a group's
system prompt (S // 16 blocks, created when its first request completes its prefill) and,
per user conversation, the turn history (created when a turn finishes: the full blocks of
its prompt + answer beyond the segments it hit, (P + O − 1) // 16 in all, chained to them).
A segment referenced by a running request is in use; unreferenced segments stay cached
and count as free (vLLM's usage metric) until evicted, least recently released first
(deepest segment first on ties, as vLLM frees a sequence's blocks tail first), when the
never-cached free blocks run out. A hit needs the whole chain (system prompt first)
resident. Simplifications, documented: a preempted or aborted request's own blocks are
dropped from the cache (vLLM keeps them as evictable); eviction takes uncached free blocks
before cached ones (vLLM's free queue interleaves them by release time).

Step time (µs) = (Σ_layers kernels + LM head + overhead) · noise, from ``kernels.py``:
* per layer, T = prefill + decode tokens: GEMMs QKV [T × d]·[d × (H+2H_kv)d_head/tp],
  O [d_q/tp → d], gate/up [d → 2·d_ff/tp], down [d_ff/tp → d] (Mixtral: router [d → E] plus
  the fused MoE kernel at moe_tp = tp); two all-reduces of [T × d] when tp > 1 (plus one
  per step after the vocabulary-parallel embedding);
* per layer attention: FlashAttention context attention for every prefill chunk with its
  real prior context (n_eq = sqrt(c² + 2cp), see kernels.py), plus generation attention of
  the D decoding requests at their mean KV length (the decode kernel's work is Σ KV length
  = D · mean, which the measured grid is indexed by; KV_BUCKET_TOKENS = 16 resolution);
* LM head [m × d]·[d × V/tp] for the m requests that sample this step;
* overhead STEP_OVERHEAD_US = 1000 µs per step (scheduler, input preparation, sampler,
  output processing on the CPU; an assumption, not a measurement) + PER_REQUEST_OVERHEAD_US
  = 5 µs per scheduled request + TP_OVERHEAD_US = 200 µs when tp > 1 (broadcast of the
  scheduler output to the worker processes);
* noise: multiplicative lognormal exp(N(0, NOISE_SIGMA = 0.05²)), seeded per experiment.
Elementwise kernels (norms, rotary, activation; fused by torch.compile) are not modelled.

Output
------
* ``step.BATCH_SUMMARY`` for a seeded SAMPLE_FRACTION = 10 % of the steps (one
  ``scheduler_steps`` span each, scope ``vllm.scheduler.step``), all otlp.STEP_ATTRS;
  counts are taken when the step is scheduled (running/waiting depth, KV blocks after
  allocation), ``batch.num_finished`` / ``batch.num_preempted`` count the FINISHED /
  PREEMPTED journey events carrying that step id.
* Journey events for every request on one ``llm_core`` span (scope ``vllm.scheduler``,
  attribute ``gen_ai.request.id``), with the semantics of otlp.py's docstring. ``phase`` is
  the phase after the event (QUEUED/PREEMPTED: WAITING, SCHEDULED: PREFILL, FIRST_TOKEN:
  DECODE; FINISHED: the phase it ended in). ``ts.monotonic`` is seconds on the replay
  clock + MONOTONIC_ORIGIN_S; requests admitted in one step get SCHEDULED times 1 µs apart
  in admission order.
* Spans ordered by end time, EXPORT_BATCH_SPANS = 512 per line (OpenTelemetry's batch
  span processor default). Timestamps: the experiment directory's date-time (UTC) + the
  replay clock. Identifiers: BLAKE2 hashes of (experiment, index). No wall-clock and no
  hash randomness: the same seed gives byte-identical files.
* ``results/summary_lifecycle_metrics.json``: inference-perf's summary schema, client side
  = server timestamps (no network latency modelled, schedule_delay 0).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing as mp
import shutil
import sys
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import orjson
import pandas as pd

from . import kernels, otlp
from .experiments import Experiment, read_experiment
from .paths import WORKLOADS_DIR, display_path
from .specs import GpuSpec, ModelSpec, load_gpu_spec, load_model_spec

# --------------------------------------------------------------------------- constants

KV_BLOCK_TOKENS = 16
GPU_MEMORY_UTILIZATION = 0.9
#: Per-GPU memory vLLM keeps outside weights and KV cache: peak activations of a
#: 2048-token profiling forward (< 1 GiB for these models), CUDA graphs (~0.5 GiB),
#: CUDA context / cuBLAS workspace / NCCL buffers (~1 GiB), rounded up.
ACTIVATION_RESERVE_GIB = 3.0
CLIENT_TIMEOUT_S = 240.0
SAMPLE_FRACTION = 0.10
STEP_OVERHEAD_US = 1000.0
PER_REQUEST_OVERHEAD_US = 5.0
TP_OVERHEAD_US = 200.0
NOISE_SIGMA = 0.05
KV_BUCKET_TOKENS = 16
EXPORT_BATCH_SPANS = 512
MONOTONIC_ORIGIN_S = 1000.0
DEFAULT_EPOCH_NS = 1_771_286_400 * 10**9          # 2026-02-17T00:00:00Z, for undated names
DEFAULTS = {"max_num_batched_tokens": 2048, "max_num_seqs": 128, "max_model_len": 4096}

# request status
_PENDING, _WAITING, _RUNNING, _DONE, _ABORTED = range(5)
# journey event codes (index into otlp.JOURNEY_EVENTS)
_QUEUED, _SCHEDULED, _FIRST, _FINISHED, _PREEMPTED = range(5)
_PHASES = ("WAITING", "PREFILL", "DECODE")
_KINDS = (None, "FIRST", "RESUME")
_STATUSES = (None, "length", "aborted")


# --------------------------------------------------------------------------- workload

@dataclass(frozen=True)
class Workload:
    """The fields of an inference-perf shared_prefix profile the replay uses."""

    num_groups: int
    users_per_group: int
    system_prompt_tokens: int
    question_tokens: int
    output_tokens: int
    multi_turn: bool
    stages: tuple[tuple[float, float], ...]      # (rate req/s, duration s)

    @classmethod
    def from_profile(cls, profile: dict) -> "Workload":
        try:
            sp = profile["data"]["shared_prefix"]
            stages = tuple((float(s["rate"]), float(s["duration"]))
                           for s in profile["load"]["stages"])
            return cls(num_groups=int(sp["num_unique_system_prompts"]),
                       users_per_group=int(sp["num_users_per_system_prompt"]),
                       system_prompt_tokens=int(sp["system_prompt_len"]),
                       question_tokens=int(sp["question_len"]),
                       output_tokens=int(sp["output_len"]),
                       multi_turn=bool(sp.get("enable_multi_turn_chat", False)),
                       stages=stages)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"profile is not an inference-perf shared_prefix profile with "
                             f"load stages: missing {exc}") from None

    @property
    def num_users(self) -> int:
        return self.num_groups * self.users_per_group

    def prompt_tokens(self, history_turns: int) -> int:
        """S + h·(Q + O) + Q: system prompt, h completed exchanges, the new question."""
        return (self.system_prompt_tokens + history_turns * (self.question_tokens + self.output_tokens)
                + self.question_tokens)

    def max_history_turns(self, max_model_len: int) -> int:
        """The most completed exchanges a prompt may carry: S + h(Q+O) + Q ≤ max_model_len − O."""
        if not self.multi_turn:
            return 0
        s, q, o = self.system_prompt_tokens, self.question_tokens, self.output_tokens
        return max(0, (max_model_len - o - s - q) // (q + o))


@dataclass(frozen=True)
class Requests:
    """All requests of one experiment, in arrival order (index = request number). Prompt
    lengths are not here: they depend on the user's conversation when the request is sent
    (``_Simulator._arrive``)."""

    arrival_ns: np.ndarray
    output_tokens: np.ndarray
    group: np.ndarray
    user: np.ndarray
    stage: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival_ns)


def generate_requests(wl: Workload, rng: np.random.Generator, time_scale: float = 1.0) -> Requests:
    """Arrival times and prompt shapes (module docstring, "Workload")."""
    times, stages = [], []
    t0 = 0.0
    for k, (rate, duration) in enumerate(wl.stages):
        d = duration * time_scale
        n = int(rate * d)
        if n > 0:
            gaps = rng.exponential(1.0 / rate, n)
            times.append(t0 + np.cumsum(gaps) * (d / gaps.sum()))
            stages.append(np.full(n, k))
        t0 += d
    arrival_s = np.concatenate(times) if times else np.zeros(0)
    stage = np.concatenate(stages) if stages else np.zeros(0, dtype=np.int64)
    n = len(arrival_s)
    perm = rng.permutation(wl.num_users)
    user = perm[np.arange(n) % wl.num_users]       # round-robin over shuffled user slots
    return Requests(arrival_ns=np.round(arrival_s * 1e9).astype(np.int64),
                    output_tokens=np.full(n, wl.output_tokens, dtype=np.int64),
                    group=(user // wl.users_per_group).astype(np.int64),
                    user=user.astype(np.int64), stage=stage.astype(np.int64))


# --------------------------------------------------------------------------- KV capacity

def kv_bytes_per_token(spec: ModelSpec, tp: int) -> float:
    """K and V of every layer for one token on one GPU: 2·L·H_kv·d_head·bytes / tp."""
    return 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * spec.bytes_per_param / tp


def kv_cache_blocks(spec: ModelSpec, tp: int, gpu: GpuSpec) -> int:
    """GPU KV blocks: (HBM·util − weights/tp − reserve) / (16 · KV bytes per token)."""
    budget = (gpu.hbm_bytes * GPU_MEMORY_UTILIZATION
              - spec.total_params * spec.bytes_per_param / tp
              - ACTIVATION_RESERVE_GIB * 2**30)
    blocks = int(budget // (KV_BLOCK_TOKENS * kv_bytes_per_token(spec, tp)))
    if blocks <= 0:
        raise ValueError(f"{spec.hf_id} at tp={tp} leaves no memory for the KV cache")
    return blocks


# --------------------------------------------------------------------------- step cost

@dataclass(frozen=True)
class StepCost:
    """Lookup tables (µs per step, all layers) for the step-time model."""

    gemm_us: np.ndarray            # [T] linear layers (+ MoE) for T scheduled tokens
    comm_us: np.ndarray            # [T] all-reduces
    lm_head_us: np.ndarray         # [m] LM head for m sampled tokens
    prefill_attn_us: np.ndarray    # [n_eq] context attention of an equivalent whole prefill
    decode_attn_us: np.ndarray     # [b, kv_mean // KV_BUCKET_TOKENS] generation attention
    overhead_us: float             # fixed per step
    per_request_us: float

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


def build_step_cost(spec: ModelSpec, tp: int, budget_tokens: int, max_num_seqs: int,
                    max_model_len: int) -> StepCost:
    """Per-model lookup arrays from the measured kernels (module docstring, "Step time")."""
    t = kernels.load_tables()
    L, d = spec.num_layers, spec.hidden_size
    tok = np.arange(budget_tokens + 1)
    heads, kv_heads = spec.num_heads // tp, max(spec.num_kv_heads // tp, 1)
    per_layer = (kernels.gemm_latency_us(tok, (spec.q_dim + 2 * spec.kv_dim) // tp, d, t)
                 + kernels.gemm_latency_us(tok, d, spec.q_dim // tp, t))
    if spec.is_moe:
        per_layer = (per_layer + kernels.gemm_latency_us(tok, spec.num_experts, d, t)
                     + kernels.moe_latency_us(tok, d, spec.intermediate_size, spec.experts_per_token,
                                              spec.num_experts, tp, t))
    else:
        per_layer = (per_layer + kernels.gemm_latency_us(tok, 2 * spec.intermediate_size // tp, d, t)
                     + kernels.gemm_latency_us(tok, d, spec.intermediate_size // tp, t))
    comm = (2 * L + 1) * kernels.allreduce_tokens_us(tok, d, tp, t)
    m = np.arange(max_num_seqs + 1)
    lm = kernels.gemm_latency_us(m, spec.vocab_size // tp, d, t)
    n_max = int(math.sqrt(budget_tokens**2 + 2.0 * budget_tokens * max_model_len)) + 2
    pre = L * kernels.context_attention_us(np.arange(n_max + 1), heads, kv_heads, spec.head_dim, t)
    kv = np.arange(max_model_len // KV_BUCKET_TOKENS + 2) * KV_BUCKET_TOKENS
    dec = L * kernels.generation_attention_grid_us(m, kv, heads, kv_heads, spec.head_dim, t)
    return StepCost(gemm_us=L * per_layer, comm_us=comm, lm_head_us=lm, prefill_attn_us=pre,
                    decode_attn_us=dec,
                    overhead_us=STEP_OVERHEAD_US + (TP_OVERHEAD_US if tp > 1 else 0.0),
                    per_request_us=PER_REQUEST_OVERHEAD_US)


# --------------------------------------------------------------------------- prefix cache

class _PrefixCache:
    """Cached segments (runs of full KV blocks) with reference counts and LRU eviction.

    ``used`` counts blocks held by running requests (their own blocks and the segments they
    reference); unreferenced resident segments are cached-free (``evictable``) and are
    evicted, least recently released first, when the uncached free blocks run out.
    """

    def __init__(self, total_blocks: int) -> None:
        self.total = total_blocks
        self.used = 0
        self.evictable = 0
        self.blocks: list[int] = []
        self.ref: list[int] = []
        self.parent: list[int] = []
        self.resident: list[bool] = []
        self.children: list[list[int]] = []
        self.turns: list[int] = []          # completed exchanges a segment's chain covers
        self.lru: dict[int, None] = {}

    @property
    def free(self) -> int:
        return self.total - self.used

    def new_segment(self, blocks: int, parent: int, ref: int, turns: int = 0) -> int:
        s = len(self.blocks)
        self.blocks.append(blocks)
        self.turns.append(turns)
        self.ref.append(ref)
        self.parent.append(parent)
        self.resident.append(True)
        self.children.append([])
        if parent >= 0:
            self.children[parent].append(s)
        if ref == 0:
            self.used -= blocks
            self.evictable += blocks
            self.lru[s] = None
        return s

    def chain_to(self, tip: int, root: int, max_turns: int) -> list[int]:
        """Resident segments from ``root`` down towards ``tip``, stopping at the first
        evicted one or one covering more than ``max_turns`` exchanges."""
        path = []
        s = tip
        while s >= 0 and s != root:
            path.append(s)
            s = self.parent[s]
        if s != root:
            return [root] if root >= 0 else []
        out = [root] if root >= 0 else []
        for s in reversed(path):
            if not self.resident[s] or self.turns[s] > max_turns:
                break
            out.append(s)
        return out

    def acquire(self, chain: list[int]) -> None:
        for s in chain:
            if self.ref[s] == 0:
                del self.lru[s]
                self.evictable -= self.blocks[s]
                self.used += self.blocks[s]
            self.ref[s] += 1

    def release(self, chain: list[int]) -> None:
        for s in reversed(chain):                  # deepest first: evicted first on ties
            self.ref[s] -= 1
            if self.ref[s] == 0:
                self.used -= self.blocks[s]
                self.evictable += self.blocks[s]
                self.lru[s] = None

    def evictable_blocks(self, chain: list[int]) -> int:
        return sum(self.blocks[s] for s in chain if self.ref[s] == 0)

    def make_room(self) -> list[int]:
        """Evict LRU segments until the uncached free blocks are ≥ 0; returns evicted ids."""
        gone: list[int] = []
        while self.total - self.used - self.evictable < 0:
            s = next(iter(self.lru))
            self._evict(s, gone)
        return gone

    def _evict(self, s: int, gone: list[int]) -> None:
        if not self.resident[s]:
            return
        assert self.ref[s] == 0, "evicting a referenced segment"
        for c in self.children[s]:
            self._evict(c, gone)
        self.resident[s] = False
        del self.lru[s]
        self.evictable -= self.blocks[s]
        gone.append(s)


# --------------------------------------------------------------------------- result

@dataclass
class SimResult:
    """Everything one replay produced.

    ``steps``: one row per executed step (all steps, ``sampled`` marks the 10 % written as
    BATCH_SUMMARY) with the ground truth: tokens, request counts, queue depths, KV blocks,
    Σ decode context (``decode_ctx_tokens``, incl. the token being fed), prefill attention
    pairs Σ c·p + c(c+1)/2 and KV reads Σ (p + c), sampled tokens, and the noise-free
    duration components. ``chunks``: one row per (step, prefilling request) with
    ``chunk_tokens`` c and ``prior_tokens`` p (KV already present, cache hits included).
    ``decodes`` (only with ``record_decodes``): one row per (step, decoding request) with
    its context length. ``requests``: per-request shape and outcome. ``events``: the
    journey events exactly as written.
    """

    experiment: Experiment
    seed: int
    time_scale: float
    kv_blocks_total: int
    epoch_ns: int
    steps: pd.DataFrame
    chunks: pd.DataFrame
    requests: pd.DataFrame
    events: pd.DataFrame
    decodes: pd.DataFrame | None = None
    segments: pd.DataFrame = field(default_factory=pd.DataFrame)   # token-producing runs

    @property
    def num_sampled(self) -> int:
        return int(self.steps["sampled"].sum())

    def journeys(self) -> pd.DataFrame:
        """The journey events as written, shaped like the loader's journeys table
        (experiment_id, request_id, event, time_ns, then otlp.JOURNEY_ATTRS)."""
        ev = self.events
        ids = self.requests["request_id"].to_numpy()[ev["request"].to_numpy()]
        ts = ev["ts_ns"].to_numpy()
        out = pd.DataFrame({"experiment_id": self.experiment.experiment_id,
                            "request_id": pd.Series(ids, dtype="string"),
                            "event": ev["event"].astype("string").to_numpy(),
                            "time_ns": self.epoch_ns + ts,
                            "scheduler.step": ev["scheduler.step"].to_numpy(),
                            "ts.monotonic": MONOTONIC_ORIGIN_S + ts / 1e9,
                            "phase": ev["phase"].astype("string").to_numpy()})
        for col in otlp.JOURNEY_ATTRS:
            if col not in out:
                out[col] = ev[col].to_numpy()
        return out[["experiment_id", "request_id", "event", "time_ns", *otlp.JOURNEY_ATTRS]]

    def reconstruction_truth(self) -> pd.DataFrame:
        """Per-step truth under reconstruct.py's column names (step.id + rec_* columns)."""
        return pd.DataFrame({"step.id": self.steps["step_id"],
                             **{rec: self.steps[col] for rec, col in _TRUTH_AS_REC.items()}})


def experiment_seed(seed: int, experiment_id: str) -> np.random.SeedSequence:
    """Seed sequence of one experiment: independent of which other experiments run or in
    which order (zlib.crc32 is stable across processes, unlike hash())."""
    return np.random.SeedSequence([seed, zlib.crc32(experiment_id.encode())])


def experiment_epoch_ns(experiment_id: str) -> int:
    """Unix ns of the directory's ``YYYYMMDD-HHMMSS`` prefix (UTC); a fixed date otherwise."""
    try:
        dt = datetime.strptime(experiment_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return DEFAULT_EPOCH_NS
    return int(dt.timestamp()) * 10**9


class _Grow:
    """Column arrays grown by doubling (cheap scalar appends in the step loop)."""

    def __init__(self, columns: dict[str, Any], capacity: int = 1 << 16) -> None:
        self.cols = {k: np.zeros(capacity, dtype=v) for k, v in columns.items()}
        self.n = 0

    def reserve(self) -> int:
        if self.n == len(next(iter(self.cols.values()))):
            for k, v in self.cols.items():
                self.cols[k] = np.concatenate([v, np.zeros_like(v)])
        self.n += 1
        return self.n - 1

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({k: v[: self.n] for k, v in self.cols.items()})


#: reconstruct.py's per-step columns and the truth column each one must equal.
_TRUTH_AS_REC = {
    "rec_decode_reqs": "num_decode_reqs", "rec_decode_ctx_tokens": "decode_ctx_tokens",
    "rec_prefill_reqs": "num_prefill_reqs", "rec_prefill_tokens": "prefill_tokens",
    "rec_prefill_attn_pairs": "prefill_attn_pairs",
    "rec_prefill_kv_read_tokens": "prefill_kv_read_tokens", "rec_sampled_tokens": "sampled_tokens",
}

_STEP_COLUMNS = {
    "step_id": np.int64, "ts_start_ns": np.int64, "ts_end_ns": np.int64, "duration_us": np.int64,
    "prefill_tokens": np.int64, "decode_tokens": np.int64, "num_prefill_reqs": np.int64,
    "num_decode_reqs": np.int64, "num_finished": np.int64, "num_preempted": np.int64,
    "running": np.int64, "waiting": np.int64, "kv_blocks_used": np.int64,
    "decode_ctx_tokens": np.int64, "prefill_attn_pairs": np.int64,
    "prefill_kv_read_tokens": np.int64, "sampled_tokens": np.int64, "sampled": np.bool_,
    "gemm_us": np.float64, "comm_us": np.float64, "prefill_attn_us": np.float64,
    "decode_attn_us": np.float64, "lm_head_us": np.float64, "overhead_us": np.float64,
    "noise": np.float64,
}


# --------------------------------------------------------------------------- simulation

def _config(exp: Experiment, key: str) -> int:
    value = getattr(exp, key)
    return int(value) if value is not None else DEFAULTS[key]


def simulate(experiment: Experiment | str | Path, seed: int = 0, time_scale: float = 1.0,
             client_timeout_s: float = CLIENT_TIMEOUT_S, record_decodes: bool = False,
             sample_fraction: float = SAMPLE_FRACTION) -> SimResult:
    """Replay one experiment; returns the per-step ground truth and the journey events."""
    exp = experiment if isinstance(experiment, Experiment) else read_experiment(Path(experiment))
    spec = load_model_spec(exp.hf_id)
    gpu = load_gpu_spec()
    B = _config(exp, "max_num_batched_tokens")
    max_seqs = _config(exp, "max_num_seqs")
    max_len = _config(exp, "max_model_len")
    wl = Workload.from_profile(exp.profile)
    rng_work, rng_noise, rng_sample = (np.random.default_rng(s)
                                       for s in experiment_seed(seed, exp.experiment_id).spawn(3))
    reqs = generate_requests(wl, rng_work, time_scale)
    cost = build_step_cost(spec, exp.tp, B, max_seqs, max_len)
    total_blocks = kv_cache_blocks(spec, exp.tp, gpu)
    sim = _Simulator(reqs, wl, cost, total_blocks, B, max_seqs, max_len,
                     int(round(client_timeout_s * 1e9)),
                     rng_noise, rng_sample, sample_fraction, record_decodes)
    sim.run()
    return sim.result(exp, seed, time_scale, experiment_epoch_ns(exp.experiment_id))


class _Simulator:
    """The sequential scheduler loop. Running requests live in numpy rows (running order);
    per-request scalars in Python lists; journey events in column lists."""

    def __init__(self, reqs: Requests, wl: Workload, cost: StepCost, total_blocks: int,
                 budget: int, max_seqs: int, max_model_len: int, timeout_ns: int,
                 rng_noise: np.random.Generator,
                 rng_sample: np.random.Generator, sample_fraction: float,
                 record_decodes: bool) -> None:
        self.reqs, self.wl, self.cost = reqs, wl, cost
        self.B, self.max_seqs, self.timeout_ns = budget, max_seqs, timeout_ns
        self.rng_noise, self.rng_sample, self.sample_fraction = rng_noise, rng_sample, sample_fraction
        self.record_decodes = record_decodes
        n = len(reqs)
        self.prompt = [0] * n
        self.conv = [0] * n                # the user's conversation the request belongs to
        self.hist = [0] * n                # completed exchanges its prompt carries
        self.user = reqs.user.tolist()
        self.group = reqs.group.tolist()
        self.user_conv = [0] * wl.num_users
        self.user_hist = [0] * wl.num_users
        self.max_hist = wl.max_history_turns(max_model_len)
        self.out = reqs.output_tokens.tolist()
        self.arrival = reqs.arrival_ns.tolist()
        self.status = [_PENDING] * n
        self.k = [0] * n                   # output tokens generated
        self.npre = [0] * n
        self.chain: list[list[int]] = [[] for _ in range(n)]
        self.chain_blocks = [0] * n
        self.first_hit = [-1] * n
        self.first_token_ns = [-1] * n
        self.end_ns = [-1] * n
        self.seg_start = [-1] * n          # step of the current segment's first token
        self.cache = _PrefixCache(total_blocks)
        self.sys_blocks = wl.system_prompt_tokens // KV_BLOCK_TOKENS
        self.sys_seg = [-1] * wl.num_groups
        self.tip_seg = [-1] * wl.num_users
        self.tip_conv = [-1] * wl.num_users
        self.tip_turn = [-1] * wl.num_users
        cap = max_seqs
        self.r_id = np.zeros(cap, np.int64)
        self.r_comp = np.zeros(cap, np.int64)     # tokens in KV
        self.r_tgt = np.zeros(cap, np.int64)      # prefill target of the segment, P + k0
        self.r_k = np.zeros(cap, np.int64)
        self.r_out = np.zeros(cap, np.int64)
        self.nrun = 0
        self.waiting: deque[int] = deque()
        self.nwait = 0
        # outputs
        self.steps = _Grow(_STEP_COLUMNS)
        self.ch_step: list[int] = []
        self.ch_req: list[int] = []
        self.ch_tok: list[int] = []
        self.ch_prior: list[int] = []
        self.dec_step: list[np.ndarray] = []
        self.dec_req: list[np.ndarray] = []
        self.dec_ctx: list[np.ndarray] = []
        self.ev: list[tuple[int, ...]] = []
        self.segs: list[tuple[int, int, int]] = []       # (request, first token step, last step)
        self.pending_finished = 0
        self.pending_preempted = 0
        self.step_id = 1
        self.now = 0
        self.pending = 0                   # fast-path decode steps not yet applied to the rows
        self._preallocated = False
        self.all_decode = False
        self.base_ctx = 0
        self.phase_hist: list[int] = [0] * KV_BLOCK_TOKENS
        self.min_left = 0
        self._noise = np.zeros(0)
        self._draws = np.zeros(0)
        self._di = 0

    # ------------------------------------------------------------------ events

    def _event(self, rid: int, code: int, ts_ns: int, phase: int, pdone: int, ddone: int,
               kind: int = 0, status: int = 0) -> None:
        self.ev.append((rid, code, self.step_id, ts_ns, phase, pdone, ddone, kind, status,
                        self.npre[rid]))

    def _phase_of(self, comp: int, tgt: int) -> int:
        return 2 if comp >= tgt else 1

    # ------------------------------------------------------------------ KV bookkeeping

    def _release(self, rid: int, comp: int, extend: bool) -> None:
        """Free a leaving request's blocks; on a normal finish cache its conversation."""
        cache = self.cache
        own = -(-comp // KV_BLOCK_TOKENS) - self.chain_blocks[rid]
        chain = self.chain[rid]
        u, conv, turns = self.user[rid], self.conv[rid], self.hist[rid] + 1
        if extend and self.wl.multi_turn and conv == self.user_conv[u]:
            self.user_hist[u] += 1         # the exchange joins the user's conversation
        if extend and self.wl.multi_turn and (chain or self.sys_blocks == 0):
            new_blocks = comp // KV_BLOCK_TOKENS - self.chain_blocks[rid]
            newer = conv > self.tip_conv[u] or (conv == self.tip_conv[u] and turns > self.tip_turn[u])
            if new_blocks > 0 and newer:
                own -= new_blocks
                s = cache.new_segment(new_blocks, chain[-1] if chain else -1, ref=0, turns=turns)
                self.tip_seg[u], self.tip_conv[u], self.tip_turn[u] = s, conv, turns
        cache.used -= own
        cache.release(chain)
        self.chain[rid] = []
        self.chain_blocks[rid] = 0

    def _lookup(self, rid: int) -> list[int]:
        """Resident cached segments that prefix this request's prompt, system prompt first."""
        root = self.sys_seg[self.group[rid]]
        if self.sys_blocks > 0 and root < 0:
            return []
        if not self.wl.multi_turn:
            return [root] if root >= 0 else []
        u = self.user[rid]
        if self.tip_conv[u] != self.conv[rid] or self.tip_seg[u] < 0:
            return [root] if root >= 0 else []
        return self.cache.chain_to(self.tip_seg[u], root, self.hist[rid])

    def _on_evicted(self, gone: list[int]) -> None:
        if not gone:
            return
        gone_set = set(gone)
        for g, s in enumerate(self.sys_seg):
            if s in gone_set:
                self.sys_seg[g] = -1

    # ------------------------------------------------------------------ running rows

    def _keep_rows(self, keep: np.ndarray) -> None:
        n = self.nrun
        m = int(keep.sum())
        for arr in (self.r_id, self.r_comp, self.r_tgt, self.r_k, self.r_out):
            arr[:m] = arr[:n][keep]
        self.nrun = m

    def _preempt_last(self) -> None:
        j = self.nrun - 1
        rid, comp, tgt, k = (int(self.r_id[j]), int(self.r_comp[j]), int(self.r_tgt[j]),
                             int(self.r_k[j]))
        if k > 0 and self.seg_start[rid] >= 0 and comp >= tgt:
            self.segs.append((rid, self.seg_start[rid], self.step_id - 1))
        self.seg_start[rid] = -1
        self._release(rid, comp, extend=False)
        self.k[rid] = k
        self.npre[rid] += 1
        self.status[rid] = _WAITING
        self.waiting.appendleft(rid)
        self.nwait += 1
        self.nrun = j
        self.pending_preempted += 1
        self._event(rid, _PREEMPTED, self.now, 0, min(comp, self.prompt[rid]), k)

    def _abort(self, rid: int, ts_ns: int) -> None:
        st = self.status[rid]
        if st == _WAITING:
            self.status[rid] = _ABORTED
            self.nwait -= 1
            self._event(rid, _FINISHED, ts_ns, 0, 0, self.k[rid], status=2)
        elif st == _RUNNING:
            n = self.nrun
            j = int(np.flatnonzero(self.r_id[:n] == rid)[0])
            comp, tgt, k = int(self.r_comp[j]), int(self.r_tgt[j]), int(self.r_k[j])
            if self.seg_start[rid] >= 0 and comp >= tgt:
                self.segs.append((rid, self.seg_start[rid], self.step_id - 1))
            self._release(rid, comp, extend=False)
            keep = np.ones(n, dtype=bool)
            keep[j] = False
            self._keep_rows(keep)
            self.k[rid] = k
            self.status[rid] = _ABORTED
            self._event(rid, _FINISHED, ts_ns, self._phase_of(comp, tgt),
                        min(comp, self.prompt[rid]), k, status=2)
        else:
            return
        self.end_ns[rid] = ts_ns
        self.pending_finished += 1

    # ------------------------------------------------------------------ random draws

    def _next_draws(self) -> tuple[float, bool]:
        if self._di == len(self._noise):
            self._noise = np.exp(self.rng_noise.normal(0.0, NOISE_SIGMA, 1 << 15))
            self._draws = self.rng_sample.random(1 << 15) < self.sample_fraction
            self._di = 0
        i = self._di
        self._di += 1
        return float(self._noise[i]), bool(self._draws[i])

    # ------------------------------------------------------------------ main loop

    def run(self) -> None:
        """Arrivals, aborts, then one step: the O(1) pure-decode fast path when it applies,
        else the general path. Both follow the same rules; the fast path only avoids
        touching the running rows (their decode progress is applied lazily, ``_sync``)."""
        N = len(self.reqs)
        arrival, status, timeout = self.arrival, self.status, self.timeout_ns
        ai = bi = 0
        while True:
            now = self.now
            while ai < N and arrival[ai] <= now:
                self._arrive(ai)
                ai += 1
            while bi < N and arrival[bi] + timeout <= now:
                if status[bi] == _RUNNING:
                    self._sync()
                    self._abort(bi, arrival[bi] + timeout)
                    self._refresh_fast()
                else:
                    self._abort(bi, arrival[bi] + timeout)
                bi += 1
            if self.nrun == 0 and self.nwait == 0:
                if ai >= N:
                    break
                self.now = max(now, arrival[ai])
                continue
            if self._fast_step(now):
                continue
            self._sync()
            self._general_step(now)
            self._refresh_fast()
        assert self.nrun == 0 and self.nwait == 0

    def _arrive(self, rid: int) -> None:
        """The request is sent: its prompt carries the user's completed exchanges of the
        current conversation; one that would not fit starts a new conversation."""
        u = self.user[rid]
        if self.user_hist[u] > self.max_hist:
            self.user_conv[u] += 1
            self.user_hist[u] = 0
        self.conv[rid], self.hist[rid] = self.user_conv[u], self.user_hist[u]
        self.prompt[rid] = self.wl.prompt_tokens(self.user_hist[u])
        self.status[rid] = _WAITING
        self.waiting.append(rid)
        self.nwait += 1
        self._event(rid, _QUEUED, self.arrival[rid], 0, 0, 0)

    # ------------------------------------------------------------------ fast path

    def _sync(self) -> None:
        """Apply the decode steps taken on the fast path to the running rows."""
        p = self.pending
        if p:
            n = self.nrun
            self.r_comp[:n] += p
            self.r_k[:n] += p
            self.pending = 0

    def _refresh_fast(self) -> None:
        """Summaries of the running rows the fast path works from."""
        n = self.nrun
        comp = self.r_comp[:n]
        self.pending = 0
        self.all_decode = bool(np.all(comp >= self.r_tgt[:n]))
        self.base_ctx = int(comp.sum())
        self.phase_hist = np.bincount(comp % KV_BLOCK_TOKENS, minlength=KV_BLOCK_TOKENS).tolist()
        self.min_left = int((self.r_out[:n] - self.r_k[:n]).min()) if n else 0

    def _head_admissible(self, budget: int, free: int) -> bool:
        """Would the head of the waiting queue be admitted with ``free`` blocks?"""
        if budget <= 0 or self.nrun >= self.max_seqs:
            return False
        while self.nwait > 0:
            rid = self.waiting[0]
            if self.status[rid] == _WAITING:
                chain = self._lookup(rid)
                hit_blocks = sum(self.cache.blocks[s] for s in chain)
                hit = hit_blocks * KV_BLOCK_TOKENS
                c = min(self.prompt[rid] + self.k[rid] - hit, budget)
                nb = -(-(hit + c) // KV_BLOCK_TOKENS) - hit_blocks
                return nb + self.cache.evictable_blocks(chain) <= free
            self.waiting.popleft()
        return False

    def _fast_step(self, now: int) -> bool:
        """One step in which every running request decodes, none finishes, the decode
        blocks fit (no preemption) and nobody is admitted. Returns False when any of that
        does not hold; if the running requests' blocks were already allocated by then,
        ``_preallocated`` tells the general path not to allocate them again."""
        if not self.all_decode or self.record_decodes:
            return False
        n, p, cache = self.nrun, self.pending, self.cache
        if p + 1 >= self.min_left:
            return False
        need = self.phase_hist[(-p) % KV_BLOCK_TOKENS]
        if need > cache.free:
            return False
        cache.used += need
        self._on_evicted(cache.make_room())
        if self.nwait and self._head_admissible(self.B - n, cache.free):
            self._preallocated = True
            return False
        ctx_sum = self.base_ctx + n * (p + 1)
        cost = self.cost
        g_us, c_us = float(cost.gemm_us[n]), float(cost.comm_us[n])
        a_dec = cost.decode_attention_us(n, ctx_sum)
        lm_us = float(cost.lm_head_us[n])
        ov = cost.overhead_us + cost.per_request_us * n
        self._record(now, n, 0, 0, n, ctx_sum, 0, 0, n, g_us, c_us, 0.0, a_dec, lm_us, ov)
        self.pending = p + 1
        return True

    # ------------------------------------------------------------------ general path

    def _general_step(self, now: int) -> None:
        status, cache, cost = self.status, self.cache, self.cost
        B, BT = self.B, KV_BLOCK_TOKENS
        # ---- 1. running requests, in running order
        n = self.nrun
        comp = self.r_comp[:n]
        rem = self.r_tgt[:n] - comp
        dec = rem <= 0
        D = int(np.count_nonzero(dec))
        budget = B - D
        tok = dec.astype(np.int64)
        chunk_rows: list[int] = []
        if D < n:
            for j in np.flatnonzero(~dec).tolist():
                c = min(int(rem[j]), budget)
                tok[j] = c
                budget -= c
                if c > 0:
                    chunk_rows.append(j)
        newb = (comp + tok + BT - 1) // BT - (comp + BT - 1) // BT
        need = int(newb.sum())
        preempted = False
        if self._preallocated:          # the fast path allocated them (all decodes, they fit)
            self._preallocated = False
        elif need > cache.free:
            preempted = True
            i = 0
            while i < self.nrun:
                nb = int(newb[i])
                while nb > cache.free and self.nrun > i:
                    self._preempt_last()
                if i >= self.nrun:
                    break
                cache.used += nb
                i += 1
            n = self.nrun
            tok, dec = tok[:n], dec[:n]
            D = int(np.count_nonzero(dec))
            chunk_rows = [j for j in chunk_rows if j < n]
        else:
            cache.used += need
        self._on_evicted(cache.make_room())

        # ---- 2. admissions (only when nothing was preempted)
        admitted = 0
        if not preempted:
            while budget > 0 and self.nrun < self.max_seqs and self.nwait > 0:
                rid = self.waiting[0]
                if status[rid] != _WAITING:
                    self.waiting.popleft()
                    continue
                chain = self._lookup(rid)
                hit_blocks = sum(cache.blocks[s] for s in chain)
                k0 = self.k[rid]
                tgt = self.prompt[rid] + k0
                hit = hit_blocks * BT
                assert hit <= tgt - 1, "prefix hit beyond prompt - 1"
                c = min(tgt - hit, budget)
                nb = -(-(hit + c) // BT) - hit_blocks
                if nb + cache.evictable_blocks(chain) > cache.free:
                    break
                self.waiting.popleft()
                self.nwait -= 1
                status[rid] = _RUNNING
                cache.acquire(chain)
                cache.used += nb
                self._on_evicted(cache.make_room())
                self.chain[rid] = chain
                self.chain_blocks[rid] = hit_blocks
                if self.first_hit[rid] < 0:
                    self.first_hit[rid] = hit
                j = self.nrun
                self.r_id[j], self.r_comp[j], self.r_tgt[j] = rid, hit, tgt
                self.r_k[j], self.r_out[j] = k0, self.out[rid]
                self.nrun += 1
                tok = np.append(tok, c)
                dec = np.append(dec, False)
                chunk_rows.append(j)
                budget -= c
                self._event(rid, _SCHEDULED, now + admitted * 1000, 1, hit, k0,
                            kind=2 if (k0 > 0 or self.npre[rid] > 0) else 1)
                admitted += 1

        n = self.nrun
        if n == 0:
            if self.nwait > 0 and not preempted:
                raise RuntimeError("scheduler made no progress with an idle GPU")
            return                      # everything was preempted: schedule again

        # ---- 3. the step's batch and its duration
        ids, comp, tgt = self.r_id[:n], self.r_comp[:n], self.r_tgt[:n]
        ctx = comp[dec] + 1
        ctx_sum = int(ctx.sum())
        P_tok = pairs = kv_read = 0
        attn_pre = 0.0
        sid = self.step_id
        for j in chunk_rows:
            c, p = int(tok[j]), int(comp[j])
            P_tok += c
            pairs += c * p + c * (c + 1) // 2
            kv_read += p + c
            attn_pre += cost.prefill_attention_us(c, p)
            self.ch_step.append(sid)
            self.ch_req.append(int(ids[j]))
            self.ch_tok.append(c)
            self.ch_prior.append(p)
        if self.record_decodes and D:
            self.dec_step.append(np.full(D, sid))
            self.dec_req.append(ids[dec].copy())
            self.dec_ctx.append(ctx.copy())
        T = P_tok + D
        new_comp = comp + tok
        sampled_rows = (new_comp >= tgt) & (tok > 0)
        n_sampled = int(np.count_nonzero(sampled_rows))
        g_us, c_us = float(cost.gemm_us[T]), float(cost.comm_us[T])
        a_dec = cost.decode_attention_us(D, ctx_sum)
        lm_us = float(cost.lm_head_us[n_sampled])
        ov = cost.overhead_us + cost.per_request_us * (D + len(chunk_rows))
        r, t_end = self._record(now, n, P_tok, len(chunk_rows), D, ctx_sum, pairs, kv_read,
                                n_sampled, g_us, c_us, attn_pre, a_dec, lm_us, ov, defer_counts=True)

        # ---- 4. after the step: KV grows, tokens are sampled, requests finish
        self.r_comp[:n] = new_comp
        self.r_k[:n] += sampled_rows
        completing = sampled_rows & ~dec          # prefill completed in this step
        if completing.any():
            for j in np.flatnonzero(completing).tolist():
                rid = int(ids[j])
                self.seg_start[rid] = sid
                g = self.group[rid]
                if self.sys_blocks > 0 and not self.chain[rid] and self.sys_seg[g] < 0:
                    # the group's system prompt becomes a cached segment (ref'd by rid)
                    self.sys_seg[g] = s = cache.new_segment(self.sys_blocks, -1, ref=1)
                    self.chain[rid] = [s]
                    self.chain_blocks[rid] = self.sys_blocks
                if int(self.r_k[j]) == 1 and self.first_token_ns[rid] < 0:
                    self.first_token_ns[rid] = t_end
                    self._event(rid, _FIRST, t_end, 2, self.prompt[rid], 1)
        fin = self.r_k[:n] >= self.r_out[:n]
        if fin.any():
            for j in np.flatnonzero(fin).tolist():
                rid = int(ids[j])
                k1 = int(self.r_k[j])
                self.k[rid] = k1
                self.segs.append((rid, self.seg_start[rid], sid))
                self._event(rid, _FINISHED, t_end, 2, self.prompt[rid], k1, status=1)
                self._release(rid, int(self.r_comp[j]), extend=True)
                status[rid] = _DONE
                self.end_ns[rid] = t_end
                self.pending_finished += 1
            self._keep_rows(~fin)
        cols = self.steps.cols
        cols["num_finished"][r] = self.pending_finished
        cols["num_preempted"][r] = self.pending_preempted
        self.pending_finished = self.pending_preempted = 0
        self.step_id += 1
        self.now = t_end

    def _record(self, now: int, running: int, prefill: int, n_prefill: int, decode: int,
                ctx_sum: int, pairs: int, kv_read: int, n_sampled: int, g_us: float,
                c_us: float, attn_pre: float, a_dec: float, lm_us: float, ov: float,
                defer_counts: bool = False) -> tuple[int, int]:
        """Price the step, append its row; returns (row, end time). Without
        ``defer_counts`` the step is complete: counters are written and the clock advances."""
        noise, sampled = self._next_draws()
        dur_ns = max(1000, int(round((g_us + c_us + attn_pre + a_dec + lm_us + ov) * noise * 1000.0)))
        t_end = now + dur_ns
        st = self.steps
        r = st.reserve()
        cols = st.cols
        cols["step_id"][r] = self.step_id
        cols["ts_start_ns"][r] = now
        cols["ts_end_ns"][r] = t_end
        cols["duration_us"][r] = (dur_ns + 500) // 1000
        cols["prefill_tokens"][r] = prefill
        cols["decode_tokens"][r] = decode
        cols["num_prefill_reqs"][r] = n_prefill
        cols["num_decode_reqs"][r] = decode
        cols["running"][r] = running
        cols["waiting"][r] = self.nwait
        cols["kv_blocks_used"][r] = self.cache.used
        cols["decode_ctx_tokens"][r] = ctx_sum
        cols["prefill_attn_pairs"][r] = pairs
        cols["prefill_kv_read_tokens"][r] = kv_read
        cols["sampled_tokens"][r] = n_sampled
        cols["sampled"][r] = sampled
        cols["gemm_us"][r] = g_us
        cols["comm_us"][r] = c_us
        cols["prefill_attn_us"][r] = attn_pre
        cols["decode_attn_us"][r] = a_dec
        cols["lm_head_us"][r] = lm_us
        cols["overhead_us"][r] = ov
        cols["noise"][r] = noise
        if not defer_counts:
            cols["num_finished"][r] = self.pending_finished
            cols["num_preempted"][r] = self.pending_preempted
            self.pending_finished = self.pending_preempted = 0
            self.step_id += 1
            self.now = t_end
        return r, t_end

    # ------------------------------------------------------------------ result frames

    def result(self, exp: Experiment, seed: int, time_scale: float, epoch_ns: int) -> SimResult:
        reqs = self.reqs
        n = len(reqs)
        steps = self.steps.frame()
        steps.insert(steps.columns.get_loc("kv_blocks_used") + 1, "kv_blocks_total",
                     self.cache.total)
        chunks = pd.DataFrame({"step_id": np.asarray(self.ch_step, np.int64),
                               "request": np.asarray(self.ch_req, np.int64),
                               "chunk_tokens": np.asarray(self.ch_tok, np.int64),
                               "prior_tokens": np.asarray(self.ch_prior, np.int64)})
        decodes = None
        if self.record_decodes:
            cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64))
            decodes = pd.DataFrame({"step_id": cat(self.dec_step), "request": cat(self.dec_req),
                                    "ctx_tokens": cat(self.dec_ctx)})
        status = np.asarray(self.status)
        prompt = np.asarray(self.prompt, np.int64)
        req_ids = [request_id(exp.experiment_id, i) for i in range(n)]
        requests = pd.DataFrame({
            "request": np.arange(n), "request_id": pd.Series(req_ids, dtype="string"),
            "arrival_ns": reqs.arrival_ns, "stage": reqs.stage,
            "prompt_tokens": prompt, "output_tokens": reqs.output_tokens,
            "group": reqs.group, "user": reqs.user,
            "conversation": np.asarray(self.conv, np.int64),
            "history_turns": np.asarray(self.hist, np.int64),
            "cached_tokens": np.asarray(self.first_hit, np.int64),
            "status": pd.Series(np.where(status == _DONE, "length", "aborted"), dtype="string"),
            "first_token_ns": np.asarray(self.first_token_ns, np.int64),
            "end_ns": np.asarray(self.end_ns, np.int64),
            "num_preemptions": np.asarray(self.npre, np.int64),
            "output_done": np.asarray(self.k, np.int64)})
        ev = np.asarray(self.ev, dtype=np.int64).reshape(-1, 10)
        rid = ev[:, 0]
        events = pd.DataFrame({
            "request": rid, "event": pd.Categorical.from_codes(ev[:, 1], otlp.JOURNEY_EVENTS),
            "scheduler.step": ev[:, 2], "ts_ns": ev[:, 3],
            "phase": pd.Categorical.from_codes(ev[:, 4], _PHASES),
            "prefill.total_tokens": prompt[rid], "prefill.done_tokens": ev[:, 5],
            "decode.max_tokens": reqs.output_tokens[rid], "decode.done_tokens": ev[:, 6],
            "schedule.kind": pd.Series(np.asarray(_KINDS, dtype=object)[ev[:, 7]], dtype="string"),
            "finish.status": pd.Series(np.asarray(_STATUSES, dtype=object)[ev[:, 8]], dtype="string"),
            "num_preemptions": ev[:, 9]})
        segs = pd.DataFrame(np.asarray(self.segs, dtype=np.int64).reshape(-1, 3),
                            columns=["request", "first_step", "last_step"])
        return SimResult(experiment=exp, seed=seed, time_scale=time_scale,
                         kv_blocks_total=self.cache.total, epoch_ns=epoch_ns, steps=steps,
                         chunks=chunks, requests=requests, events=events, decodes=decodes,
                         segments=segs)


# --------------------------------------------------------------------------- identifiers

def _hex(key: str, nbytes: int) -> str:
    return hashlib.blake2b(key.encode(), digest_size=nbytes).hexdigest()


def request_id(experiment_id: str, index: int) -> str:
    """vLLM-style completion request id, stable for (experiment, request index)."""
    return f"cmpl-{_hex(f'{experiment_id}/req/{index}', 16)}-0"


# --------------------------------------------------------------------------- writing

def _step_spans(res: SimResult) -> tuple[list[dict], np.ndarray]:
    s = res.steps[res.steps["sampled"]]
    total = res.kv_blocks_total
    epoch = res.epoch_ns
    exp_id = res.experiment.experiment_id
    spans, ends = [], []
    cols = {c: s[c].to_numpy().tolist() for c in s.columns}
    for i in range(len(s)):
        start, end = epoch + cols["ts_start_ns"][i], epoch + cols["ts_end_ns"][i]
        used = cols["kv_blocks_used"][i]
        prefill, decode = cols["prefill_tokens"][i], cols["decode_tokens"][i]
        attrs = {
            "step.id": cols["step_id"][i], "step.ts_start_ns": start, "step.ts_end_ns": end,
            "step.duration_us": (end - start + 500) // 1000,
            "batch.prefill_tokens": prefill, "batch.decode_tokens": decode,
            "batch.num_prefill_reqs": cols["num_prefill_reqs"][i],
            "batch.num_decode_reqs": cols["num_decode_reqs"][i],
            "batch.scheduled_tokens": prefill + decode,
            "batch.num_finished": cols["num_finished"][i],
            "batch.num_preempted": cols["num_preempted"][i],
            "queue.running_depth": cols["running"][i], "queue.waiting_depth": cols["waiting"][i],
            "kv.usage_gpu_ratio": used / total, "kv.blocks_total_gpu": total,
            "kv.blocks_free_gpu": total - used,
        }
        key = f"{exp_id}/step/{cols['step_id'][i]}"
        spans.append(otlp.span(otlp.STEP_SPAN, _hex(key, 16), _hex(key, 8), start, end,
                               [otlp.event(otlp.BATCH_SUMMARY, end, attrs)]))
        ends.append(end)
    return spans, np.asarray(ends, dtype=np.int64)


def _journey_spans(res: SimResult) -> tuple[list[dict], np.ndarray]:
    """One ``llm_core`` span per request holding its journey events, in event order."""
    j = res.journeys()
    j = j.iloc[np.argsort(res.events["request"].to_numpy(), kind="stable")]
    rid = res.events["request"].to_numpy()[j.index.to_numpy()]
    names = [otlp.JOURNEY_PREFIX + e for e in j["event"].tolist()]
    times = j["time_ns"].tolist()
    keys = list(otlp.JOURNEY_ATTRS)
    cols = [j[k].astype(object).where(j[k].notna(), None).tolist() if j[k].dtype == "string"
            else j[k].tolist() for k in keys]
    bounds = np.flatnonzero(np.diff(rid)) + 1
    starts = np.concatenate([[0], bounds]).astype(int).tolist()
    stops = np.concatenate([bounds, [len(rid)]]).astype(int).tolist()
    arrival = (res.epoch_ns + res.requests["arrival_ns"].to_numpy()).tolist()
    ids = res.requests["request_id"].tolist()
    exp_id = res.experiment.experiment_id
    spans, ends = [], []
    for a, b in zip(starts, stops):
        r = int(rid[a])
        events = [otlp.event(names[i], times[i], dict(zip(keys, (c[i] for c in cols))))
                  for i in range(a, b)]
        key = f"{exp_id}/req/{r}"
        spans.append(otlp.span(otlp.JOURNEY_SPAN, _hex(key, 16), _hex(key, 8), arrival[r],
                               times[b - 1], events, {otlp.REQUEST_ID_KEY: ids[r]}))
        ends.append(times[b - 1])
    return spans, np.asarray(ends, dtype=np.int64)


def write_traces(res: SimResult, path: Path) -> int:
    """traces.json: step and journey spans by end time, EXPORT_BATCH_SPANS per line.
    Returns the number of lines."""
    step_spans, step_end = _step_spans(res)
    j_spans, j_end = _journey_spans(res)
    spans = step_spans + j_spans
    is_step = np.concatenate([np.ones(len(step_spans), bool), np.zeros(len(j_spans), bool)])
    ends = np.concatenate([step_end, j_end])
    order = np.lexsort((np.arange(len(spans)), ends))
    lines = 0
    with open(path, "wb") as fh:
        for a in range(0, len(order), EXPORT_BATCH_SPANS):
            batch = order[a:a + EXPORT_BATCH_SPANS].tolist()
            fh.write(otlp.export_line({
                otlp.STEP_SCOPE: [spans[i] for i in batch if is_step[i]],
                otlp.JOURNEY_SCOPE: [spans[i] for i in batch if not is_step[i]]}))
            lines += 1
    return lines


_PCTS = (("p0.1", 0.1), ("p1", 1), ("p5", 5), ("p10", 10), ("p25", 25), ("median", 50),
         ("p75", 75), ("p90", 90), ("p95", 95), ("p99", 99), ("p99.9", 99.9))


def distribution(x: np.ndarray) -> dict[str, float] | None:
    """inference-perf's DIST: mean, min, percentiles, max (None for no data)."""
    x = np.asarray(x, dtype=np.float64)
    if not len(x):
        return None
    q = np.percentile(x, [p for _, p in _PCTS])
    out = {"mean": float(x.mean()), "min": float(x.min())}
    out.update({k: float(v) for (k, _), v in zip(_PCTS, q)})
    out["max"] = float(x.max())
    return out


def _token_times_ns(res: SimResult, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(request, token time) of every output token of the successful requests, in order:
    a segment emits one token per step from its first-token step to its last step."""
    seg = res.segments
    seg = seg[ok[seg["request"].to_numpy()]]
    seg = seg.sort_values(["request", "first_step"], kind="stable")
    first = seg["first_step"].to_numpy()
    length = seg["last_step"].to_numpy() - first + 1
    step_rows = np.repeat(first - 1, length) + (np.arange(length.sum())
                                                - np.repeat(np.cumsum(length) - length, length))
    t_end = res.steps["ts_end_ns"].to_numpy()
    return np.repeat(seg["request"].to_numpy(), length), t_end[step_rows]


def summary_metrics(res: SimResult) -> dict[str, Any]:
    """results/summary_lifecycle_metrics.json (inference-perf schema, seconds)."""
    r = res.requests
    ok = (r["status"] == "length").to_numpy()
    arr = r["arrival_ns"].to_numpy()
    end = r["end_ns"].to_numpy()
    prompt = r["prompt_tokens"].to_numpy()
    out = r["output_tokens"].to_numpy()
    e2e = (end - arr)[ok] / 1e9
    ttft = (r["first_token_ns"].to_numpy() - arr)[ok] / 1e9
    tpot = (e2e - ttft) / np.maximum(out[ok] - 1, 1)
    req, times = _token_times_ns(res, ok)
    gaps = np.diff(times)[np.diff(req) == 0] / 1e9
    span_s = ((end.max() - arr.min()) / 1e9) if len(arr) else 0.0
    per_s = (lambda v: float(v / span_s) if span_s > 0 else 0.0)
    n_ok = int(ok.sum())
    return {
        "load_summary": {"count": int(len(r)), "schedule_delay": distribution(np.zeros(len(r)))},
        "successes": {
            "count": n_ok,
            "latency": {"request_latency": distribution(e2e), "time_to_first_token": distribution(ttft),
                        "time_per_output_token": distribution(tpot),
                        "inter_token_latency": distribution(gaps),
                        "normalized_time_per_output_token": distribution(e2e / out[ok])},
            "throughput": {"input_tokens_per_sec": per_s(prompt[ok].sum()),
                           "output_tokens_per_sec": per_s(out[ok].sum()),
                           "total_tokens_per_sec": per_s(prompt[ok].sum() + out[ok].sum()),
                           "requests_per_sec": per_s(n_ok)},
            "prompt_len": distribution(prompt[ok]), "output_len": distribution(out[ok])},
        "failures": {"count": int((~ok).sum()),
                     "request_latency": distribution((end - arr)[~ok] / 1e9),
                     "prompt_len": distribution(prompt[~ok])},
    }


def write_experiment(res: SimResult, out_root: Path) -> Path:
    """<out_root>/<experiment>/{exp-config.yaml, profile.yaml, traces.json, results/…}."""
    exp = res.experiment
    d = Path(out_root) / exp.experiment_id
    (d / "results").mkdir(parents=True, exist_ok=True)
    for name in ("exp-config.yaml", "profile.yaml"):
        shutil.copyfile(exp.path / name, d / name)
    write_traces(res, d / "traces.json")
    (d / "results" / "summary_lifecycle_metrics.json").write_bytes(
        orjson.dumps(summary_metrics(res), option=orjson.OPT_INDENT_2) + b"\n")
    return d


# --------------------------------------------------------------------------- CLI

def workload_dirs(root: Path = WORKLOADS_DIR, names: Sequence[str] | None = None) -> list[Path]:
    """Experiment directories under ``root`` (all, or those named), sorted by name."""
    dirs = sorted(p for p in Path(root).iterdir() if (p / "profile.yaml").is_file())
    if names:
        known = {p.name: p for p in dirs}
        missing = [n for n in names if n not in known]
        if missing:
            raise SystemExit(f"unknown experiment(s) {missing}; known: {sorted(known)}")
        dirs = [known[n] for n in names]
    if not dirs:
        raise SystemExit(f"no experiment directories with profile.yaml under {display_path(root)}")
    return dirs


def _run_one(job: tuple[str, str, int, float]) -> str:
    path, out, seed, time_scale = job
    t0 = time.perf_counter()
    res = simulate(Path(path), seed=seed, time_scale=time_scale)
    write_experiment(res, Path(out))
    r = res.requests
    return (f"{res.experiment.experiment_id}: {len(res.steps)} steps simulated, "
            f"{res.num_sampled} sampled, {len(r)} requests "
            f"({int((r['status'] == 'aborted').sum())} aborted, "
            f"{int(r['num_preemptions'].sum())} preemptions), {time.perf_counter() - t0:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stepdecomp.replay", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output root (e.g. data/raw)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="multiply every load stage's duration (e.g. 0.05 for a quick run)")
    ap.add_argument("--experiments", nargs="*", default=None, metavar="NAME",
                    help="experiment directory names under data/workloads (default: all)")
    ap.add_argument("--workloads", type=Path, default=WORKLOADS_DIR, help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=2, help="parallel processes (default 2)")
    args = ap.parse_args(argv)
    if args.time_scale <= 0:
        ap.error("--time-scale must be positive")
    dirs = workload_dirs(args.workloads, args.experiments)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(str(p), str(args.out), args.seed, args.time_scale) for p in dirs]
    t0 = time.perf_counter()
    print(f"replaying {len(jobs)} experiment(s) into {display_path(args.out)} "
          f"(seed {args.seed}, time scale {args.time_scale}, {args.jobs} job(s))", flush=True)
    if args.jobs > 1 and len(jobs) > 1:
        with mp.get_context().Pool(min(args.jobs, len(jobs))) as pool:
            for line in pool.imap_unordered(_run_one, jobs):
                print(line, flush=True)
    else:
        for job in jobs:
            print(_run_one(job), flush=True)
    print(f"done in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
