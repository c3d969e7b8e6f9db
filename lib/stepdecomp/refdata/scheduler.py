"""vLLM v1's scheduler (chunked prefill, prefix caching, FCFS, preemption by recompute),
stepped along the engine timeline of ``timeline.py``.

Per step, with token budget B = max_num_batched_tokens:

1. Running requests in running order: a decoding request takes 1 token; a partially
   prefilled request continues its prompt with min(remaining, budget left). Each needs KV
   slots; when the free blocks do not suffice the most recently admitted running request is
   preempted (recompute: its blocks are freed, it goes to the front of the waiting queue,
   ``journey.PREEMPTED``), until the request fits or is itself preempted.
2. If nothing was preempted, waiting requests are admitted FCFS while budget > 0,
   running < max_num_seqs and their first chunk's blocks fit (else admission stops).
   Prefix-cache hits are the resident cached segments of the request's prompt
   (prefixcache.py); ``prefill.done_tokens`` of ``SCHEDULED`` is the hit.
3. The forward pass runs; then every request whose prefill completed and every decoder
   samples one token; a request with O tokens finishes (``FINISHED`` length) and frees its
   blocks.

These rules make the chunking exactly otlp.py's greedy rule (decodes first, then prefills in
admission order, each min(remaining, B − used)): at most one prefill is ever left partial and
it is always the last in running order.

Timeline (timeline.py), in either of vLLM 0.15.1's engine loops (docs/measurement.md §5):
schedule(n) starts at ``now`` (``ts_start``); its CPU time depends on the work just decided,
its SCHEDULED / PREEMPTED events are stamped inside it and ``ts_end`` = now + its duration;
the host prepares and launches batch n (``host``), which runs on the GPU from
max(end of batch n−1, end of its host work). FIRST_TOKEN / FINISHED of step n are stamped
inside update_from_output(n), whose end (``out_ns``) is when step n's tokens leave for the
clients.

* ``sync`` (``EngineCore.step``): update(n) runs as soon as batch n ends, and schedule(n+1)
  starts when update(n) returns.
* ``async`` (``EngineCore.step_with_batch_queue``, the default, what the study ran): after
  submitting batch n the loop blocks on the older batch n−1 (if one is in flight), runs
  update(n−1), and schedules n+1 while batch n runs on the GPU. schedule(n+1) therefore works
  on n's output placeholders: a running request is scheduled for its next token before the
  previous one is processed (the token arithmetic is the same as in the sync loop), while a
  request that finished with batch n keeps its seat and its KV blocks until update(n)
  (``deferred_seats``), as vLLM's running list holds it until then.

Requests that arrived meanwhile are taken in at the top of the next loop iteration, right
before schedule(): their QUEUED events are stamped then, with ``scheduler.step`` = the
current step counter (the last step scheduled). A client that gives up
(``CLIENT_TIMEOUT_S`` after sending) is aborted between iterations; when the aborted request is
running, the batch in flight is retired first, so its events never follow the abort.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .prefixcache import PrefixCache
from .record import Recorder, StepWork
from .stepcost import FORWARD_NOISE_SIGMA, KV_BLOCK_TOKENS, StepCost
from .timeline import CpuModel, CpuNoise, stamps_within, us_to_ns
from .workload import Requests

# request status
PENDING, WAITING, RUNNING, DONE, ABORTED = range(5)
# journey event codes (index into otlp.JOURNEY_EVENTS)
QUEUED, SCHEDULED, FIRST, FINISHED, PREEMPTED = range(5)
#: vLLM 0.15.1's engine loops (docs/measurement.md §5); async is its default and what ran.
ENGINE_LOOPS = ("async", "sync")
DEFAULT_ENGINE_LOOP = "async"


@dataclass
class Batch:
    """A scheduled batch whose outputs update_from_output() has not processed yet."""

    row: int                        # its row in the recorder's step table
    gpu_end_ns: int                 # end of its forward pass on the GPU
    work: StepWork
    events: list[int] = field(default_factory=list)   # FIRST_TOKEN / FINISHED, stamped in update
    firsts: list[int] = field(default_factory=list)   # requests whose first token it carries
    done: list[tuple[int, int]] = field(default_factory=list)   # (request, KV tokens) finishing


class Simulator:
    """The sequential step loop. Running requests live in numpy rows (running order);
    per-request scalars in Python lists; outputs in a :class:`Recorder`."""

    def __init__(self, reqs: Requests, cost: StepCost, total_blocks: int, budget: int,
                 max_seqs: int, timeout_ns: int, tp: int, cpu: CpuModel, rec: Recorder,
                 rng_noise: np.random.Generator, rng_cpu: np.random.Generator,
                 engine_loop: str = DEFAULT_ENGINE_LOOP,
                 step_time: dict[str, float] | None = None) -> None:
        if engine_loop not in ENGINE_LOOPS:
            raise ValueError(f"engine_loop must be one of {ENGINE_LOOPS}, got {engine_loop!r}")
        self.reqs, self.cost, self.rec, self.cpu, self.tp = reqs, cost, rec, cpu, tp
        self.is_async = engine_loop == "async"
        # a step-time model pricing the forward pass instead of the kernel tables (a line in
        # the batch sums: blis_basis.linear_step_time), or None
        self.step_time = step_time
        self.inflight: Batch | None = None   # async: the batch submitted last, not yet updated
        self.gpu_free_ns = 0                 # end of the last batch submitted to the GPU
        self.deferred_seats = 0              # finished requests still held until their update
        self.B, self.max_seqs, self.timeout_ns = budget, max_seqs, timeout_ns
        self.cpu_noise = CpuNoise(cpu, rng_cpu)
        self.rng_noise = rng_noise
        n = len(reqs)
        self.prompt = reqs.prompt_tokens.tolist()
        self.out = reqs.output_tokens.tolist()
        self.sent = reqs.arrival_ns.tolist()          # the client's send time
        api_ns = int(round(cpu.api_arrival_us * 1000.0))
        self.arrival = (reqs.arrival_ns + api_ns).tolist()   # arrival at the engine core
        self.status = [PENDING] * n
        self.k = [0] * n                   # output tokens generated
        self.npre = [0] * n
        self.chain: list[list[int]] = [[] for _ in range(n)]
        self.chain_blocks = [0] * n
        self.seg_start = [-1] * n          # step of the current segment's first token
        self.cache = PrefixCache(total_blocks)
        groups = int(reqs.group.max()) + 1 if n else 0
        prompts = int(reqs.prompt.max()) + 1 if n else 0
        self.sys_blocks = [0] * groups
        for g, s in zip(reqs.group.tolist(), reqs.system_tokens.tolist()):
            self.sys_blocks[g] = s // KV_BLOCK_TOKENS
        self.sys_seg = [-1] * groups
        self.prompt_seg = [-1] * prompts
        self.r_id = np.zeros(max_seqs, np.int64)
        self.r_comp = np.zeros(max_seqs, np.int64)     # tokens in KV
        self.r_tgt = np.zeros(max_seqs, np.int64)      # prefill target of the segment, P + k0
        self.r_k = np.zeros(max_seqs, np.int64)
        self.r_out = np.zeros(max_seqs, np.int64)
        self.nrun = 0
        self.waiting: deque[int] = deque()
        self.nwait = 0
        self.step_id = 1
        self.now = 0
        self.pending = 0                   # fast-path decode steps not yet applied to the rows
        self._preallocated = False
        self.all_decode = False
        self.base_ctx = 0
        self.phase_hist: list[int] = [0] * KV_BLOCK_TOKENS
        self.min_left = 0
        self._fnoise = np.zeros(0)
        self._fi = 0

    # ------------------------------------------------------------------ events

    def _event(self, rid: int, code: int, ts_ns: int, phase: int, pdone: int, ddone: int,
               kind: int = 0, status: int = 0, step: int | None = None) -> int:
        return self.rec.event(rid, code, self.step_id if step is None else step, ts_ns, phase,
                              pdone, ddone, kind, status, self.npre[rid])

    # ------------------------------------------------------------------ KV bookkeeping

    def _release(self, rid: int, comp: int) -> None:
        """Free a leaving request's own blocks and release its cached segments."""
        own = -(-comp // KV_BLOCK_TOKENS) - self.chain_blocks[rid]
        self.cache.used -= own
        self.cache.release(self.chain[rid])
        self.chain[rid] = []
        self.chain_blocks[rid] = 0

    def _lookup(self, rid: int) -> list[int]:
        """Resident cached segments that prefix this request's prompt, system prompt first."""
        g = int(self.reqs.group[rid])
        root = self.sys_seg[g]
        if not self.cache.is_resident(root):
            return []
        tip = self.prompt_seg[int(self.reqs.prompt[rid])]
        return [root, tip] if self.cache.is_resident(tip) else [root]

    def _cache_prompt(self, rid: int) -> None:
        """The prefill just completed: its system prompt and prompt blocks become cached
        segments (referenced by this request) unless resident already."""
        g, p = int(self.reqs.group[rid]), int(self.reqs.prompt[rid])
        chain, cache = self.chain[rid], self.cache
        if not chain and self.sys_blocks[g] > 0 and not cache.is_resident(self.sys_seg[g]):
            self.sys_seg[g] = s = cache.new_segment(self.sys_blocks[g], -1, ref=1)
            chain.append(s)
            self.chain_blocks[rid] += self.sys_blocks[g]
        rest = (self.prompt[rid] - 1) // KV_BLOCK_TOKENS - self.sys_blocks[g]
        if (len(chain) == 1 and chain[0] == self.sys_seg[g] and rest > 0
                and not cache.is_resident(self.prompt_seg[p])):
            self.prompt_seg[p] = s = cache.new_segment(rest, chain[0], ref=1)
            chain.append(s)
            self.chain_blocks[rid] += rest

    def _on_evicted(self, gone: list[int]) -> None:
        if gone:
            gone_set = set(gone)
            self.sys_seg = [-1 if s in gone_set else s for s in self.sys_seg]
            self.prompt_seg = [-1 if s in gone_set else s for s in self.prompt_seg]

    # ------------------------------------------------------------------ running rows

    def _keep_rows(self, keep: np.ndarray) -> None:
        n, m = self.nrun, int(keep.sum())
        for arr in (self.r_id, self.r_comp, self.r_tgt, self.r_k, self.r_out):
            arr[:m] = arr[:n][keep]
        self.nrun = m

    def _end_segment(self, rid: int, comp: int, tgt: int, k: int) -> None:
        if k > 0 and self.seg_start[rid] >= 0 and comp >= tgt:
            self.rec.segment(rid, self.seg_start[rid], self.step_id - 1)
        self.seg_start[rid] = -1

    def _preempt_last(self) -> int:
        """Preempt the last running request (inside schedule()); returns its event index."""
        j = self.nrun - 1
        rid, comp, tgt, k = (int(self.r_id[j]), int(self.r_comp[j]), int(self.r_tgt[j]),
                             int(self.r_k[j]))
        self._end_segment(rid, comp, tgt, k)
        self._release(rid, comp)
        self.k[rid] = k
        self.npre[rid] += 1
        self.status[rid] = WAITING
        self.waiting.appendleft(rid)
        self.nwait += 1
        self.nrun = j
        return self._event(rid, PREEMPTED, self.now, 0, min(comp, self.prompt[rid]), k)

    def _abort(self, rid: int, ts_ns: int, client_ns: int) -> None:
        """The client gave up at ``client_ns``; the server processes the abort at ``ts_ns``
        (between iterations): the request leaves."""
        st = self.status[rid]
        if st == WAITING:
            self.nwait -= 1
            self._event(rid, FINISHED, ts_ns, 0, 0, self.k[rid], status=2)
        elif st == RUNNING:
            n = self.nrun
            j = int(np.flatnonzero(self.r_id[:n] == rid)[0])
            comp, tgt, k = int(self.r_comp[j]), int(self.r_tgt[j]), int(self.r_k[j])
            self._end_segment(rid, comp, tgt, k)
            self._release(rid, comp)
            keep = np.ones(n, dtype=bool)
            keep[j] = False
            self._keep_rows(keep)
            self.k[rid] = k
            self._event(rid, FINISHED, ts_ns, 2 if comp >= tgt else 1, min(comp, self.prompt[rid]),
                        k, status=2)
        else:
            return
        self.status[rid] = ABORTED
        self.rec.end_ns[rid] = client_ns

    # ------------------------------------------------------------------ main loop

    def run(self) -> None:
        """Arrivals, aborts, then one step: the O(1) pure-decode fast path when it applies,
        else the general path. Both follow the same rules; the fast path only avoids
        touching the running rows (their decode progress is applied lazily, ``_sync``)."""
        N = len(self.reqs)
        arrival, sent, status, timeout = self.arrival, self.sent, self.status, self.timeout_ns
        ai = bi = 0
        while True:
            now = self.now
            while ai < N and arrival[ai] <= now:
                self.status[ai] = WAITING
                self.waiting.append(ai)
                self.nwait += 1
                # stamped when the engine loop takes it in: at the top of the iteration,
                # right before schedule() (EngineCore._process_input_queue)
                self._event(ai, QUEUED, now, 0, 0, 0, step=self.step_id - 1)
                ai += 1
            while bi < N and sent[bi] + timeout <= now:
                if status[bi] == RUNNING:
                    self._retire_inflight()
                    self._sync()
                    self._abort(bi, max(sent[bi] + timeout, self.now), sent[bi] + timeout)
                    self._refresh_fast()
                elif status[bi] != PENDING:
                    self._abort(bi, sent[bi] + timeout, sent[bi] + timeout)
                bi += 1
            now = self.now                   # a retired batch may have moved the clock
            if self.nrun == 0 and self.nwait == 0:
                if self.inflight is not None:       # nothing to schedule: wait for the GPU
                    self._retire_inflight()
                    continue
                if ai >= N:
                    break
                self.now = max(now, arrival[ai])
                continue
            if self._fast_step(now):
                continue
            self._sync()
            self._general_step(now)
            self._refresh_fast()
        assert self.nrun == 0 and self.nwait == 0 and self.inflight is None
        assert self.deferred_seats == 0

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
        if budget <= 0 or self.nrun + self.deferred_seats >= self.max_seqs:
            return False
        while self.nwait > 0:
            rid = self.waiting[0]
            if self.status[rid] == WAITING:
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
        if not self.all_decode or self.rec.record_decodes:
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
        work = StepWork(running=n, prefill_tokens=0, prefill_reqs=0, decode_tokens=n,
                        ctx_sum=self.base_ctx + n * (p + 1), new_blocks=need, sampled=n)
        batch = self._schedule_and_forward(now, work, [])
        self.pending = p + 1
        self._submit(batch)
        return True

    # ------------------------------------------------------------------ general path

    def _schedule_running(self) -> tuple[np.ndarray, np.ndarray, list[int], int, int, bool, list[int]]:
        """Step 1: token counts of the running requests, their new blocks, preemptions.
        Returns (tok, dec, chunk rows, budget left, new blocks, preempted?, event indices)."""
        cache, BT = self.cache, KV_BLOCK_TOKENS
        n = self.nrun
        comp = self.r_comp[:n]
        rem = self.r_tgt[:n] - comp
        dec = rem <= 0
        budget = self.B - int(np.count_nonzero(dec))
        tok = dec.astype(np.int64)
        chunk_rows: list[int] = []
        for j in np.flatnonzero(~dec).tolist():
            c = min(int(rem[j]), budget)
            tok[j] = c
            budget -= c
            if c > 0:
                chunk_rows.append(j)
        newb = (comp + tok + BT - 1) // BT - (comp + BT - 1) // BT
        need, events, preempted = int(newb.sum()), [], False
        if self._preallocated:          # the fast path allocated them (all decodes, they fit)
            self._preallocated = False
        elif need > cache.free:
            preempted, i, need = True, 0, 0
            while i < self.nrun:
                while int(newb[i]) > cache.free and self.nrun > i:
                    events.append(self._preempt_last())
                if i >= self.nrun:
                    break
                cache.used += int(newb[i])
                need += int(newb[i])
                i += 1
            n = self.nrun
            tok, dec = tok[:n], dec[:n]
            chunk_rows = [j for j in chunk_rows if j < n]
        else:
            cache.used += need
        self._on_evicted(cache.make_room())
        return tok, dec, chunk_rows, budget, need, preempted, events

    def _admit(self, budget: int, tok: np.ndarray, dec: np.ndarray, chunk_rows: list[int]
               ) -> tuple[np.ndarray, np.ndarray, int, int, int, list[int]]:
        """Step 2: admit waiting requests FCFS. Returns (tok, dec, admitted, new blocks,
        looked-up blocks, event indices)."""
        cache, BT, status = self.cache, KV_BLOCK_TOKENS, self.status
        admitted = new_blocks = looked_up = 0
        events: list[int] = []
        while budget > 0 and self.nrun + self.deferred_seats < self.max_seqs and self.nwait > 0:
            rid = self.waiting[0]
            if status[rid] != WAITING:
                self.waiting.popleft()
                continue
            chain = self._lookup(rid)
            hit_blocks = sum(cache.blocks[s] for s in chain)
            looked_up += (self.prompt[rid] - 1) // BT
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
            status[rid] = RUNNING
            cache.acquire(chain)
            cache.used += nb
            new_blocks += nb
            self._on_evicted(cache.make_room())
            self.chain[rid], self.chain_blocks[rid] = chain, hit_blocks
            self.rec.note_admission(rid, hit)
            j = self.nrun
            self.r_id[j], self.r_comp[j], self.r_tgt[j] = rid, hit, tgt
            self.r_k[j], self.r_out[j] = k0, self.out[rid]
            self.nrun += 1
            tok, dec = np.append(tok, c), np.append(dec, False)
            chunk_rows.append(j)
            budget -= c
            events.append(self._event(rid, SCHEDULED, self.now, 1, hit, k0,
                                      kind=2 if (k0 > 0 or self.npre[rid] > 0) else 1))
            admitted += 1
        return tok, dec, admitted, new_blocks, looked_up, events

    def _general_step(self, now: int) -> None:
        running_before = self.nrun
        tok, dec, chunk_rows, budget, new_blocks, preempted, ev = self._schedule_running()
        admitted = looked_up = 0
        if not preempted:
            tok, dec, admitted, nb, looked_up, ev_a = self._admit(budget, tok, dec, chunk_rows)
            new_blocks += nb
            ev += ev_a
        n = self.nrun
        if n == 0:
            if self.nwait > 0 and not preempted and self.inflight is None:
                raise RuntimeError("scheduler made no progress with an idle GPU")
            sched_ns = us_to_ns(self.cpu_noise.apply(
                self.cpu.schedule_us(running_before, 0, len(ev), 0, 0)))
            self._stamp(ev, now, sched_ns)
            self.now = now + sched_ns   # an empty batch: the loop then waits for the GPU
            self._retire_inflight()
            return                      # everything was preempted (or held): schedule again
        ids, comp, tgt = self.r_id[:n], self.r_comp[:n], self.r_tgt[:n]
        work = self.rec.batch_work(self.step_id, ids, comp, tgt, tok, dec, chunk_rows, self.cost)
        work = work._replace(running=running_before, admitted=admitted, new_blocks=new_blocks,
                             looked_up=looked_up, events=len(ev))
        batch = self._schedule_and_forward(now, work, ev)
        self._after_forward(batch, ids, comp, tgt, tok, dec)
        self._submit(batch)

    # ------------------------------------------------------------------ timeline

    def _stamp(self, events: list[int], t0_ns: int, dur_ns: int) -> None:
        for i, ts in zip(events, stamps_within(t0_ns, dur_ns, len(events))):
            self.rec.restamp(i, ts)

    def _forward_noise(self) -> float:
        if self._fi == len(self._fnoise):
            self._fnoise = np.exp(self.rng_noise.normal(0.0, FORWARD_NOISE_SIGMA, 1 << 15))
            self._fi = 0
        self._fi += 1
        return float(self._fnoise[self._fi - 1])

    def _schedule_and_forward(self, now: int, work: StepWork, events: list[int]) -> Batch:
        """Price schedule() (its events stamped inside it), the host work that submits the
        batch and the forward pass, which starts at max(end of the previous batch, end of the
        host work); record the step. Returns the batch, not yet updated."""
        cpu = self.cpu
        sched_us = self.cpu_noise.apply(cpu.schedule_us(work.running, work.admitted, work.events,
                                                        work.new_blocks, work.looked_up))
        sched_ns = us_to_ns(sched_us)
        self._stamp(events, now, sched_ns)
        gpu_us = self.cost_gpu_us(work) * self._forward_noise()
        scheduled = work.prefill_reqs + work.decode_tokens
        host_us = self.cpu_noise.apply(cpu.host_us(scheduled, self.tp))
        # one jitter draw for the host work, split into its part before the GPU start and its
        # part on the GPU's critical path (counted in the batch's GPU time); host + GPU are
        # rounded as one sum, so the sync loop's step ends do not depend on the split
        base_us = cpu.host_us(scheduled, self.tp)
        prep_us = host_us * cpu.prep_us(self.tp) / base_us if base_us > 0 else 0.0
        host_ns = us_to_ns(prep_us) if prep_us > 0 else 0
        gpu_ns = max(us_to_ns(gpu_us + host_us) - host_ns, 0)
        ready_ns = now + sched_ns + host_ns
        gpu_start_ns = max(ready_ns, self.gpu_free_ns)
        self.gpu_free_ns = gpu_start_ns + gpu_ns
        row = self.rec.step(self.step_id, now, sched_ns, host_ns, gpu_start_ns, gpu_ns, work,
                            self.nrun, self.nwait, self.cache.used)
        self.now = ready_ns
        return Batch(row=row, gpu_end_ns=self.gpu_free_ns, work=work)

    def cost_gpu_us(self, w: StepWork) -> float:
        """GPU time of the step's forward pass from the cost tables (stepcost.py), or from the
        step-time model when one is given (:meth:`model_gpu_us`)."""
        if self.step_time is not None:
            return self.model_gpu_us(w)
        c, T = self.cost, w.prefill_tokens + w.decode_tokens
        return (float(c.gemm_us[T]) + float(c.comm_us[T]) + w.prefill_attn_us
                + c.decode_attention_us(w.decode_tokens, w.ctx_sum) + float(c.lm_head_us[w.sampled]))

    def model_gpu_us(self, w: StepWork) -> float:
        """BLIS's StepTime of the batch from the step-time model's line: c0 + slopes · (P,
        Σ c·s, Σ c², D, C, N) with C = the decoders' context before this step's token
        (``ctx_sum`` counts the token fed: minus one per decoder) and N the requests in the
        batch; truncated to whole µs and at least 1, as BLIS does."""
        m = self.step_time
        assert m is not None
        t = (m["constant"] + m["prefill_tokens"] * w.prefill_tokens
             + m["prefill_chunk_input_tokens"] * w.chunk_input
             + m["prefill_chunk_sq_tokens"] * w.chunk_sq + m["decode_reqs"] * w.decode_tokens
             + m["decode_context_tokens"] * (w.ctx_sum - w.decode_tokens)
             + m["batch_reqs"] * (w.prefill_reqs + w.decode_tokens))
        return float(max(1, int(t)))

    def _submit(self, batch: Batch) -> None:
        """The batch is on the GPU and the step counter moves on. sync: update it at once.
        async: if an older batch is in flight, block on it and update it; else return to
        schedule the next batch while this one runs (vLLM's batch queue of 2)."""
        self.step_id += 1
        if not self.is_async:
            self._update(batch)
            return
        older, self.inflight = self.inflight, batch
        if older is not None:
            self._update(older)

    def _retire_inflight(self) -> None:
        """async: block on the batch in flight and update it (nothing else to schedule)."""
        if self.inflight is not None:
            batch, self.inflight = self.inflight, None
            self._update(batch)

    def _update(self, batch: Batch) -> None:
        """update_from_output() of ``batch``, from max(now, its GPU end): its duration, the
        update-phase stamps, the release of its finished requests; ``now`` moves to its end."""
        work = batch.work
        start_ns = max(self.now, batch.gpu_end_ns)
        upd_ns = us_to_ns(self.cpu_noise.apply(self.cpu.update_us(
            work.prefill_reqs + work.decode_tokens, len(batch.events), len(batch.done))))
        self._stamp(batch.events, start_ns, upd_ns)
        out_ns = start_ns + upd_ns
        for rid, comp in batch.done:
            self._release(rid, comp)
            self.rec.end_ns[rid] = out_ns
        self.deferred_seats -= len(batch.done)
        for rid in batch.firsts:
            self.rec.first_token_ns[rid] = out_ns
        self.rec.close_step(batch.row, start_ns, upd_ns)
        self.now = out_ns

    def _after_forward(self, batch: Batch, ids: np.ndarray, comp: np.ndarray, tgt: np.ndarray,
                       tok: np.ndarray, dec: np.ndarray) -> None:
        """Step 3, as schedule(n+1) will see it: KV grows, tokens are sampled, prefills
        complete, requests finish and leave the running rows. Their FIRST_TOKEN / FINISHED
        events, the release of their blocks and seats wait for update(n) (``batch``)."""
        n, sid = len(ids), self.step_id
        new_comp = comp + tok
        sampled_rows = (new_comp >= tgt) & (tok > 0)
        self.r_comp[:n] = new_comp
        self.r_k[:n] += sampled_rows
        for j in np.flatnonzero(sampled_rows & ~dec).tolist():      # prefill completed
            rid = int(ids[j])
            self.seg_start[rid] = sid
            self._cache_prompt(rid)
            if int(self.r_k[j]) == 1 and self.rec.first_token_ns[rid] < 0:
                batch.firsts.append(rid)
                batch.events.append(self._event(rid, FIRST, 0, 2, self.prompt[rid], 1))
        fin = self.r_k[:n] >= self.r_out[:n]
        for j in np.flatnonzero(fin).tolist():
            rid = int(ids[j])
            k1 = int(self.r_k[j])
            self.k[rid] = k1
            self.rec.segment(rid, self.seg_start[rid], sid)
            batch.events.append(self._event(rid, FINISHED, 0, 2, self.prompt[rid], k1, status=1))
            self.status[rid] = DONE
            batch.done.append((rid, int(self.r_comp[j])))
        if batch.done:
            self._keep_rows(~fin)
            self.deferred_seats += len(batch.done)
