"""What the replay records while it runs: one row per step (the generator's truth), the
journey events as emitted, prefill chunks, decode contexts and token-producing segments."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from .stepcost import StepCost


class StepWork(NamedTuple):
    """The work of one step: what schedule() did and what the forward pass computes."""

    running: int                  # running requests schedule() walked
    prefill_tokens: int
    prefill_reqs: int
    decode_tokens: int
    ctx_sum: int                  # Σ decode context (incl. the token being fed)
    new_blocks: int = 0           # KV blocks allocated
    sampled: int = 0              # requests that sample a token
    admitted: int = 0
    looked_up: int = 0            # prefix-cache blocks looked up on admission
    events: int = 0               # journey events emitted inside schedule()
    pairs: int = 0                # prefill attention (query, key) pairs
    kv_read: int = 0              # prefill KV reads Σ (p + c)
    prefill_attn_us: float = 0.0
    chunk_input: int = 0          # Σ c·s over prefill chunks, s = the request's input length
    chunk_sq: int = 0             # Σ c² over prefill chunks


#: One row per executed step (all steps; ``sampled`` marks the BATCH_SUMMARY sample). Times
#: on the replay clock: schedule() from ``ts_start_ns`` for ``sched_ns``, then the host work
#: that submits the batch (``host_ns``), the forward pass on the GPU from ``gpu_start_ns`` for
#: ``fwd_ns``, update_from_output() from ``upd_start_ns`` for ``upd_ns``.
STEP_COLUMNS: dict[str, Any] = {
    "step_id": np.int64, "ts_start_ns": np.int64, "sched_ns": np.int64, "host_ns": np.int64,
    "gpu_start_ns": np.int64, "fwd_ns": np.int64, "upd_start_ns": np.int64, "upd_ns": np.int64, "prefill_tokens": np.int64, "decode_tokens": np.int64,
    "num_prefill_reqs": np.int64, "num_decode_reqs": np.int64, "num_finished": np.int64,
    "num_preempted": np.int64, "running": np.int64, "waiting": np.int64,
    "kv_blocks_used": np.int64, "decode_ctx_tokens": np.int64, "prefill_attn_pairs": np.int64,
    "prefill_kv_read_tokens": np.int64, "sampled_tokens": np.int64, "admitted": np.int64,
    "sched_events": np.int64, "new_blocks": np.int64, "looked_up_blocks": np.int64,
    "sampled": np.bool_,
}


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


class Recorder:
    """Accumulates the replay's outputs; the simulator calls it, never the reverse."""

    def __init__(self, num_requests: int, rng_sample: np.random.Generator,
                 sample_fraction: float, record_decodes: bool) -> None:
        self.steps = _Grow(STEP_COLUMNS)
        self.rng_sample, self.sample_fraction = rng_sample, sample_fraction
        self.record_decodes = record_decodes
        self._draws = np.zeros(0, dtype=bool)
        self._di = 0
        self.ev: list[tuple[int, ...]] = []
        self.chunks: list[tuple[int, int, int, int]] = []
        self.dec_step: list[np.ndarray] = []
        self.dec_req: list[np.ndarray] = []
        self.dec_ctx: list[np.ndarray] = []
        self.segs: list[tuple[int, int, int]] = []       # (request, first token step, last step)
        self.first_hit = [-1] * num_requests
        self.first_token_ns = [-1] * num_requests
        self.end_ns = [-1] * num_requests

    # ------------------------------------------------------------------ events and requests

    def event(self, rid: int, code: int, step: int, ts_ns: int, phase: int, pdone: int,
              ddone: int, kind: int, status: int, npre: int) -> int:
        self.ev.append((rid, code, step, ts_ns, phase, pdone, ddone, kind, status, npre))
        return len(self.ev) - 1

    def restamp(self, i: int, ts_ns: int) -> None:
        e = self.ev[i]
        self.ev[i] = (*e[:3], ts_ns, *e[4:])

    def segment(self, rid: int, first_step: int, last_step: int) -> None:
        self.segs.append((rid, first_step, last_step))

    def note_admission(self, rid: int, hit_tokens: int) -> None:
        if self.first_hit[rid] < 0:
            self.first_hit[rid] = hit_tokens

    # ------------------------------------------------------------------ steps

    def batch_work(self, step_id: int, ids: np.ndarray, comp: np.ndarray, tgt: np.ndarray,
                   tok: np.ndarray, dec: np.ndarray, chunk_rows: list[int],
                   cost: StepCost) -> StepWork:
        """The batch's token counts, chunk attention and decode contexts; records chunks
        (and decode contexts with ``record_decodes``)."""
        ctx = comp[dec] + 1
        P_tok = pairs = kv_read = chunk_input = chunk_sq = 0
        attn_pre = 0.0
        for j in chunk_rows:
            c, p = int(tok[j]), int(comp[j])
            P_tok += c
            chunk_input += c * int(tgt[j])
            chunk_sq += c * c
            pairs += c * p + c * (c + 1) // 2
            kv_read += p + c
            attn_pre += cost.prefill_attention_us(c, p)
            self.chunks.append((step_id, int(ids[j]), c, p))
        D = int(np.count_nonzero(dec))
        if self.record_decodes and D:
            self.dec_step.append(np.full(D, step_id))
            self.dec_req.append(ids[dec].copy())
            self.dec_ctx.append(ctx.copy())
        sampled = int(np.count_nonzero((comp + tok >= tgt) & (tok > 0)))
        return StepWork(running=len(ids), prefill_tokens=P_tok, prefill_reqs=len(chunk_rows),
                        decode_tokens=D, ctx_sum=int(ctx.sum()), sampled=sampled, pairs=pairs,
                        kv_read=kv_read, prefill_attn_us=attn_pre, chunk_input=chunk_input,
                        chunk_sq=chunk_sq)

    def _sampled_draw(self) -> bool:
        if self._di == len(self._draws):
            self._draws = self.rng_sample.random(1 << 15) < self.sample_fraction
            self._di = 0
        self._di += 1
        return bool(self._draws[self._di - 1])

    def step(self, step_id: int, start_ns: int, sched_ns: int, host_ns: int, gpu_start_ns: int,
             fwd_ns: int, work: StepWork, running_depth: int, waiting: int, kv_used: int) -> int:
        """Record step ``step_id`` as schedule() built it; returns its row (closed by
        :meth:`close_step` when its update runs). Preemptions of this schedule() count here."""
        r = self.steps.reserve()
        c = self.steps.cols
        for key, value in (("step_id", step_id), ("ts_start_ns", start_ns), ("sched_ns", sched_ns),
                           ("host_ns", host_ns), ("gpu_start_ns", gpu_start_ns),
                           ("fwd_ns", fwd_ns), ("prefill_tokens", work.prefill_tokens),
                           ("decode_tokens", work.decode_tokens),
                           ("num_prefill_reqs", work.prefill_reqs),
                           ("num_decode_reqs", work.decode_tokens), ("running", running_depth),
                           ("waiting", waiting), ("kv_blocks_used", kv_used),
                           ("decode_ctx_tokens", work.ctx_sum), ("prefill_attn_pairs", work.pairs),
                           ("prefill_kv_read_tokens", work.kv_read),
                           ("sampled_tokens", work.sampled), ("admitted", work.admitted),
                           ("sched_events", work.events), ("new_blocks", work.new_blocks),
                           ("looked_up_blocks", work.looked_up)):
            c[key][r] = value
        c["sampled"][r] = self._sampled_draw()
        return r

    def close_step(self, row: int, upd_start_ns: int, upd_ns: int) -> None:
        """update(n) ran: its start and duration."""
        c = self.steps.cols
        c["upd_start_ns"][row] = upd_start_ns
        c["upd_ns"][row] = upd_ns
