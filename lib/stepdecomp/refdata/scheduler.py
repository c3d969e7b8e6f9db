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

Timeline of step n (timeline.py): schedule(n) starts at ``now`` (``ts_start``); its CPU time
depends on the work just decided, its SCHEDULED / PREEMPTED events are stamped inside it and
``ts_end`` = now + its duration; the forward pass follows; FIRST_TOKEN / FINISHED are stamped
inside update(n), which ends at ``out_ns`` — when step n's tokens leave for the clients and
step n+1 may start. Requests that arrived meanwhile are queued before schedule(n+1). A client
that gives up (``CLIENT_TIMEOUT_S`` after sending) is aborted between steps.
"""

from __future__ import annotations

from collections import deque

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


class Simulator:
    """The sequential step loop. Running requests live in numpy rows (running order);
    per-request scalars in Python lists; outputs in a :class:`Recorder`."""

    def __init__(self, reqs: Requests, cost: StepCost, total_blocks: int, budget: int,
                 max_seqs: int, timeout_ns: int, tp: int, cpu: CpuModel, rec: Recorder,
                 rng_noise: np.random.Generator, rng_cpu: np.random.Generator) -> None:
        self.reqs, self.cost, self.rec, self.cpu, self.tp = reqs, cost, rec, cpu, tp
        self.B, self.max_seqs, self.timeout_ns = budget, max_seqs, timeout_ns
        self.cpu_noise = CpuNoise(cpu, rng_cpu)
        self.rng_noise = rng_noise
        n = len(reqs)
        self.prompt = reqs.prompt_tokens.tolist()
        self.out = reqs.output_tokens.tolist()
        self.arrival = reqs.arrival_ns.tolist()
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
        self.rec.pending_preempted += 1
        return self._event(rid, PREEMPTED, self.now, 0, min(comp, self.prompt[rid]), k)

    def _abort(self, rid: int, ts_ns: int) -> None:
        """The client gave up at ``ts_ns`` (between steps): the request leaves."""
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
        self.rec.end_ns[rid] = ts_ns
        self.rec.pending_finished += 1

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
                self.status[ai] = WAITING
                self.waiting.append(ai)
                self.nwait += 1
                self._event(ai, QUEUED, arrival[ai], 0, 0, 0, step=self.step_id - 1)
                ai += 1
            while bi < N and arrival[bi] + timeout <= now:
                if status[bi] == RUNNING:
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
        t_fwd = self._schedule_and_forward(now, work, [])
        self._update(t_fwd, work, [], finished=0)
        self.pending = p + 1
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
        while budget > 0 and self.nrun < self.max_seqs and self.nwait > 0:
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
            if self.nwait > 0 and not preempted:
                raise RuntimeError("scheduler made no progress with an idle GPU")
            self._stamp(ev, now, us_to_ns(self.cpu_noise.apply(
                self.cpu.schedule_us(running_before, 0, len(ev), 0, 0))))
            return                      # everything was preempted: schedule again
        ids, comp, tgt = self.r_id[:n], self.r_comp[:n], self.r_tgt[:n]
        work = self.rec.batch_work(self.step_id, ids, comp, tgt, tok, dec, chunk_rows, self.cost)
        work = work._replace(running=running_before, admitted=admitted, new_blocks=new_blocks,
                             looked_up=looked_up, events=len(ev))
        t_fwd = self._schedule_and_forward(now, work, ev)
        self._after_forward(t_fwd, work, ids, comp, tgt, tok, dec)

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

    def _schedule_and_forward(self, now: int, work: StepWork, events: list[int]) -> int:
        """Price schedule() and the forward pass, stamp the schedule-phase events, record the
        step; returns the forward pass's end (ns)."""
        cpu = self.cpu
        sched_us = self.cpu_noise.apply(cpu.schedule_us(work.running, work.admitted, work.events,
                                                        work.new_blocks, work.looked_up))
        sched_ns = us_to_ns(sched_us)
        self._stamp(events, now, sched_ns)
        gpu_us = self.cost_gpu_us(work) * self._forward_noise()
        host_us = self.cpu_noise.apply(cpu.host_us(work.prefill_reqs + work.decode_tokens, self.tp))
        fwd_ns = us_to_ns(gpu_us + host_us)
        self.rec.step(self.step_id, now, sched_ns, fwd_ns, work, self.nrun, self.nwait,
                      self.cache.used)
        return now + sched_ns + fwd_ns

    def cost_gpu_us(self, w: StepWork) -> float:
        """GPU time of the step's forward pass from the cost tables (stepcost.py)."""
        c, T = self.cost, w.prefill_tokens + w.decode_tokens
        return (float(c.gemm_us[T]) + float(c.comm_us[T]) + w.prefill_attn_us
                + c.decode_attention_us(w.decode_tokens, w.ctx_sum) + float(c.lm_head_us[w.sampled]))

    def _update(self, t_fwd: int, work: StepWork, events: list[int], finished: int) -> int:
        """update_from_output(): its duration, the update-phase stamps, the step's end."""
        upd_ns = us_to_ns(self.cpu_noise.apply(self.cpu.update_us(
            work.prefill_reqs + work.decode_tokens, len(events), finished)))
        self._stamp(events, t_fwd, upd_ns)
        out_ns = t_fwd + upd_ns
        self.rec.close_step(upd_ns)
        self.step_id += 1
        self.now = out_ns
        return out_ns

    def _after_forward(self, t_fwd: int, work: StepWork, ids: np.ndarray, comp: np.ndarray,
                       tgt: np.ndarray, tok: np.ndarray, dec: np.ndarray) -> None:
        """Step 3: KV grows, tokens are sampled, prefills complete, requests finish."""
        n, sid = len(ids), self.step_id
        new_comp = comp + tok
        sampled_rows = (new_comp >= tgt) & (tok > 0)
        self.r_comp[:n] = new_comp
        self.r_k[:n] += sampled_rows
        events: list[int] = []
        firsts: list[int] = []
        for j in np.flatnonzero(sampled_rows & ~dec).tolist():      # prefill completed
            rid = int(ids[j])
            self.seg_start[rid] = sid
            self._cache_prompt(rid)
            if int(self.r_k[j]) == 1 and self.rec.first_token_ns[rid] < 0:
                firsts.append(rid)
                events.append(self._event(rid, FIRST, t_fwd, 2, self.prompt[rid], 1))
        fin = self.r_k[:n] >= self.r_out[:n]
        done: list[int] = []
        for j in np.flatnonzero(fin).tolist():
            rid = int(ids[j])
            k1 = int(self.r_k[j])
            self.k[rid] = k1
            self.rec.segment(rid, self.seg_start[rid], sid)
            events.append(self._event(rid, FINISHED, t_fwd, 2, self.prompt[rid], k1, status=1))
            self._release(rid, int(self.r_comp[j]))
            self.status[rid] = DONE
            done.append(rid)
            self.rec.pending_finished += 1
        if done:
            self._keep_rows(~fin)
        out_ns = self._update(t_fwd, work, events, finished=len(done))
        for rid in firsts:
            self.rec.first_token_ns[rid] = out_ns
        for rid in done:
            self.rec.end_ns[rid] = out_ns
