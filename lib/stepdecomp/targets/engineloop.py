"""Which engine loop ran, and the step times under vLLM's asynchronous loop, from the traces.

vLLM 0.15.1 runs one of two engine loops (docs/measurement.md §5):

* **sync** (``EngineCore.step``): schedule(n) → forward(n) → update(n) → schedule(n+1). The
  output events of step n (FIRST_TOKEN / FINISHED, stamped in update(n)) come *before*
  schedule(n+1) starts.
* **async** (``EngineCore.step_with_batch_queue``, the default and what the study ran):
  schedule(n+1) runs while batch n is on the GPU; update(n) follows after it. The output
  events of step n come *after* schedule(n+1) started (after its BATCH_SUMMARY).

:func:`detect_engine_loop` decides per experiment from exactly that order: over the steps n
whose output events and whose successor's schedule() time are both in the traces, the share
where the first output event of n follows the start of schedule(n+1). Fewer than
``MIN_LOOP_EVIDENCE`` such pairs decide nothing (``unknown``) and the caller's default is
used, said as such (``engine_loop_source`` = ``assumed``).

Under the async loop, in a GPU-bound engine, every reading of the loop marks the end of a
forward pass. Per step k, on the scheduler's monotonic clock:

* ``U(k)``: the earliest non-aborted FIRST_TOKEN / FINISHED of step k, stamped in update(k),
  which starts when batch k ends on the GPU: U(k) ≈ gpu_end(k).
* ``S(k)``: the start of schedule(k). Exact for sampled steps (``step.ts_start_ns``); else
  read from the latest QUEUED event with ``scheduler.step`` = k − 1 (taken in at the top of
  the iteration, right before schedule(k)) plus the experiment's median gap to S measured on
  sampled steps, or from the earliest SCHEDULED / PREEMPTED of step k (inside schedule(k))
  minus the median in-schedule offset. schedule(k+2) starts when update(k) returns:
  S(k+2) − tail ≈ gpu_end(k), with tail = the experiment's median S(k+2) − U(k) measured
  where both are exact.

``G(k)`` = U(k), else S(k+2) − tail, estimates gpu_end(k); the forward time of batch n is
G(n) − G(n−1) (source ``adjacent``). Where one of them is missing but steps a+1 … b around n
ran the same batch (no request admitted, preempted, finished or given its first token, no
prefill in progress: a pure-decode stretch whose batches differ only by one token of context
per request), G(b) − G(a) over b − a steps is the forward time of each of them (``span``).

``step_period_us`` under async is the loop iteration that waits for batch n: S(n+2) −
S(n+1) (``exact`` when both are sampled), with S(k) ← G(k−2) + tail where S(k) is not read
(``adjacent``); no span rule, so the period keeps each iteration's own variation (the forward
time's span estimate is the mean of a run of batches). Its bounds: S(k) lies between the
latest of QUEUED(k − 1) and U_last(k − 2) (update(k−2) precedes schedule(k)) and the
earliest SCHEDULED(k).

The GPU waited for the CPU before batch n when schedule(n) ended after batch n−1 did:
ts_end(n) > G(n−1). There the interval holds CPU time, so ``step_forward_us`` is left empty
(``step_forward_source`` = ``gpu_waited``), and the steps are counted. Where G(n−1) is not
known the flag is missing (<NA>), not False.

Everything is vectorised per experiment over dense per-step arrays (no Python loop per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd

from ..core import columns
from ..core.columns import EXP
from ..traces import otlp
from .stamps import journey_ts_ns_where_known

STEP_ID = columns.STEP_ID
TS_START = "step.ts_start_ns"
TS_END = "step.ts_end_ns"
JOURNEY_STEP = "scheduler.step"
FINISH_STATUS = "finish.status"
ABORTED_STATUS = "aborted"

ASYNC, SYNC, UNKNOWN = "async", "sync", "unknown"
ENGINE_LOOPS = (ASYNC, SYNC)
#: What the study ran (docs/measurement.md §5); used where the traces cannot tell.
DEFAULT_ENGINE_LOOP = ASYNC
#: Ordered (output of n, schedule of n+1) pairs needed before the traces decide the loop.
MIN_LOOP_EVIDENCE = 5
#: The synchronous loop never stamps an output of step n after schedule(n+1) started, while
#: the asynchronous one falls back to that order whenever it has nothing to schedule before it
#: blocks on the batch in flight (an idle or KV-bound engine: 77 % async order in the replayed
#: 7B reasoning run, 100 % in the others). So: async at or above ASYNC_SHARE_MIN of the pairs in
#: async order, sync at or below SYNC_ASYNC_SHARE_MAX (clock jitter), unknown between.
ASYNC_SHARE_MIN = 0.5
SYNC_ASYNC_SHARE_MAX = 0.1
#: Sampled steps needed to calibrate a reading's median offset (QUEUED gap, in-schedule
#: offset, update tail); with fewer that reading is not used.
MIN_CALIBRATION_STEPS = 5

SOURCE_ADJACENT = "adjacent"
SOURCE_SPAN = "span"
SOURCE_EXACT = "exact"
SOURCE_WAITED = "gpu_waited"
SOURCE_NONE = "none"


# --------------------------------------------------------------------------- readings



def _names(event: pd.Series, names: tuple[str, ...]) -> np.ndarray:
    full = [*names, *(otlp.JOURNEY_PREFIX + n for n in names)]
    return event.isin(full).to_numpy(dtype=bool, na_value=False)


@dataclass(frozen=True)
class Readings:
    """Per experiment, dense arrays over step ids 0 … max step + 3 (int64 ns; 0 = none)."""

    u_first: np.ndarray       # earliest non-aborted FIRST_TOKEN / FINISHED of step k
    u_last: np.ndarray        # latest of them
    sch: np.ndarray           # earliest SCHEDULED / PREEMPTED of step k
    queued: np.ndarray        # latest QUEUED with scheduler.step = k − 1 (taken in before S(k))
    start: np.ndarray         # step.ts_start_ns of sampled step k
    end: np.ndarray           # step.ts_end_ns of sampled step k
    uniform: np.ndarray       # bool: batch k is batch k−1 with one more token per request

    @property
    def size(self) -> int:
        return len(self.u_first)


def _dense_min_max(step: np.ndarray, ts: np.ndarray, size: int, how: str) -> np.ndarray:
    out = np.zeros(size, dtype=np.int64)
    if not len(step):
        return out
    s = pd.Series(ts).groupby(step).agg(how)
    idx = s.index.to_numpy(dtype=np.int64)
    ok = (idx >= 0) & (idx < size)
    out[idx[ok]] = s.to_numpy(dtype=np.int64)[ok]
    return out


def _uniform(journeys: pd.DataFrame, step: np.ndarray, size: int) -> np.ndarray:
    """Batch k has the same requests as batch k−1, all decoding: no SCHEDULED / PREEMPTED at
    step k, no FIRST_TOKEN / FINISHED (of any status) at step k−1, and no request between
    its SCHEDULED step and its next event (a prefill, or a resumed one, in progress)."""
    ev = journeys["event"]
    changed = np.zeros(size + 1, dtype=bool)
    sched = _names(ev, ("SCHEDULED", "PREEMPTED"))
    out = _names(ev, ("FIRST_TOKEN", "FINISHED"))
    changed[np.clip(step[sched], 0, size)] = True
    changed[np.clip(step[out] + 1, 0, size)] = True
    # prefill in progress: from a SCHEDULED step to that request's next event's step
    if "request_id" in journeys and sched.any():
        order = np.lexsort((step, journeys["request_id"].astype(str).to_numpy()))
        rid = journeys["request_id"].astype(str).to_numpy()[order]
        st = step[order]
        is_sch = _names(ev.iloc[order].reset_index(drop=True), ("SCHEDULED",))
        nxt_same = np.r_[rid[1:] == rid[:-1], False]
        a = st[is_sch]
        b = np.where(nxt_same[is_sch], np.r_[st[1:], 0][is_sch], size)   # no next event: to the end
        delta = np.zeros(size + 2, dtype=np.int64)
        np.add.at(delta, np.clip(a, 0, size), 1)
        np.add.at(delta, np.clip(b + 1, 0, size + 1), -1)
        changed |= np.cumsum(delta)[: size + 1] > 0
    return ~changed[:size]


def experiment_readings(steps: pd.DataFrame, journeys: pd.DataFrame) -> Readings:
    """The readings of one experiment (``steps``: its sampled BATCH_SUMMARY rows with
    ``step.id`` and, where present, ``step.ts_start_ns`` / ``step.ts_end_ns``; ``journeys``:
    its journey events)."""
    sid = pd.array(steps[STEP_ID], dtype="Int64").to_numpy(dtype=np.int64, na_value=-1) \
        if STEP_ID in steps else np.zeros(0, np.int64)
    jstep_all = pd.array(journeys[JOURNEY_STEP], dtype="Int64") \
        if len(journeys) and JOURNEY_STEP in journeys else pd.array([pd.NA] * len(journeys), dtype="Int64")
    ts, timed = journey_ts_ns_where_known(journeys) if len(journeys) else (np.zeros(0, np.int64),
                                                                np.zeros(0, bool))
    # events without a step or a time stamp cannot be placed on the loop: left out (an
    # untimed event with a step still tells that the batch changed there)
    stepped = ~np.asarray(jstep_all.isna(), dtype=bool)
    has_step = stepped & timed
    jstep = jstep_all.to_numpy(dtype=np.int64, na_value=-1)
    top = max(int(sid.max()) if len(sid) else 0, int(jstep.max()) if len(jstep) else 0)
    size = top + 4
    ev = journeys["event"] if len(journeys) and "event" in journeys else \
        pd.Series([pd.NA] * len(journeys), dtype="string")
    upd = _names(ev, ("FIRST_TOKEN", "FINISHED")) & has_step
    if upd.any() and FINISH_STATUS in journeys:
        upd &= ~(journeys[FINISH_STATUS] == ABORTED_STATUS).to_numpy(dtype=bool, na_value=False)
    sch = _names(ev, ("SCHEDULED", "PREEMPTED")) & has_step
    que = _names(ev, ("QUEUED",)) & has_step
    start = np.zeros(size, dtype=np.int64)
    end = np.zeros(size, dtype=np.int64)
    for col, arr in ((TS_START, start), (TS_END, end)):
        if col in steps:
            v = pd.array(steps[col], dtype="Int64")
            ok = ~np.asarray(v.isna(), dtype=bool) & (sid >= 0) & (sid < size)
            arr[sid[ok]] = v.to_numpy(dtype=np.int64, na_value=0)[ok]
    return Readings(
        u_first=_dense_min_max(jstep[upd], ts[upd], size, "min"),
        u_last=_dense_min_max(jstep[upd], ts[upd], size, "max"),
        sch=_dense_min_max(jstep[sch], ts[sch], size, "min"),
        queued=np.r_[0, _dense_min_max(jstep[que], ts[que], size, "max")[:-1]],
        start=start, end=end,
        uniform=_uniform(journeys.reset_index(drop=True), np.where(stepped, jstep, -1), size)
        if len(journeys) else np.zeros(size, dtype=bool))


# --------------------------------------------------------------------------- the loop

def loop_evidence(r: Readings) -> tuple[int, int]:
    """(pairs in async order, pairs in either order): steps n with an output event U(n)
    and a schedule(n+1) time (exact start, else its earliest SCHEDULED/PREEMPTED, an upper
    bound of the start); async when U(n) > that time, sync when U_last(n) < it."""
    s_next = np.where(r.start[1:] > 0, r.start[1:], r.sch[1:])
    has = (r.u_first[:-1] > 0) & (s_next > 0)
    after = has & (r.u_first[:-1] > s_next)
    before = has & (r.u_last[:-1] < s_next)
    return int(after.sum()), int((after | before).sum())


def decide_loop(async_pairs: int, pairs: int) -> str:
    """async / sync / unknown from the ordered pairs (MIN_LOOP_EVIDENCE, ASYNC_SHARE_MIN,
    SYNC_ASYNC_SHARE_MAX)."""
    if pairs < MIN_LOOP_EVIDENCE:
        return UNKNOWN
    share = async_pairs / pairs
    if share >= ASYNC_SHARE_MIN:
        return ASYNC
    if share <= SYNC_ASYNC_SHARE_MAX:
        return SYNC
    return UNKNOWN


def loop_row(readings: Readings, default: str = DEFAULT_ENGINE_LOOP) -> dict[str, object]:
    """One experiment's loop: ``detected`` (async / sync / unknown), the evidence
    (``async_pairs`` of ``ordered_pairs``), and ``engine_loop`` — the detected loop, or
    ``default`` where the traces cannot tell (``engine_loop_source`` = detected / assumed)."""
    a, n = loop_evidence(readings)
    found = decide_loop(a, n)
    return {"detected": found, "async_pairs": a, "ordered_pairs": n,
            "engine_loop": found if found != UNKNOWN else default,
            "engine_loop_source": "detected" if found != UNKNOWN else "assumed"}


def detect_engine_loop(steps: pd.DataFrame, journeys: pd.DataFrame,
                       default: str = DEFAULT_ENGINE_LOOP) -> pd.DataFrame:
    """Per experiment, :func:`loop_row` of its readings."""
    if default not in ENGINE_LOOPS:
        raise ValueError(f"engine loop must be one of {ENGINE_LOOPS}, got {default!r}")
    rows = [{EXP: exp, **loop_row(experiment_readings(st, jr), default)}
            for exp, st, jr in per_experiment(steps, journeys)]
    return pd.DataFrame(rows, columns=[EXP, "detected", "async_pairs", "ordered_pairs",
                                       "engine_loop", "engine_loop_source"])


def per_experiment(steps: pd.DataFrame, journeys: pd.DataFrame
                   ) -> Iterator[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(experiment id, its steps, its journey events) for every experiment of either table,
    in id order; one group-by pass per table, not a comparison per experiment."""
    s_groups = steps.groupby(steps[EXP].astype(str), sort=True).indices if len(steps) else {}
    j_groups = (journeys.groupby(journeys[EXP].astype(str), sort=True).indices
                if len(journeys) else {})
    for exp in sorted(set(s_groups) | set(j_groups)):
        yield (exp, steps.iloc[s_groups.get(exp, [])],
               journeys.iloc[j_groups.get(exp, [])] if len(journeys) else journeys)


# --------------------------------------------------------------------------- async targets

def _median_offset(delta: np.ndarray, ok: np.ndarray) -> float | None:
    """Median of ``delta`` over ``ok`` when at least MIN_CALIBRATION_STEPS values, else None."""
    return float(np.median(delta[ok])) if int(ok.sum()) >= MIN_CALIBRATION_STEPS else None


def schedule_starts(r: Readings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """S(k) per step (float ns, NaN where not read), whether it is exact, and the bounds
    (lo, hi) stacked: exact start; else latest QUEUED(k−1) + median gap; else earliest
    SCHEDULED(k) − median in-schedule offset."""
    exact = r.start > 0
    q_gap = _median_offset((r.start - r.queued).astype(np.float64), exact & (r.queued > 0)
                           & (r.start >= r.queued))
    s_off = _median_offset((r.sch - r.start).astype(np.float64), exact & (r.sch > 0)
                           & (r.sch >= r.start))
    s = np.where(exact, r.start.astype(np.float64), np.nan)
    if q_gap is not None:
        s = np.where(np.isnan(s) & (r.queued > 0), r.queued + q_gap, s)
    if s_off is not None:
        s = np.where(np.isnan(s) & (r.sch > 0), r.sch - s_off, s)
    lo = np.where(exact, r.start, np.maximum(r.queued, np.r_[0, 0, r.u_last[:-2]])).astype(np.float64)
    lo[lo <= 0] = np.nan
    hi = np.where(exact, r.start, r.sch).astype(np.float64)
    hi[hi <= 0] = np.nan
    return s, exact, np.vstack([lo, hi])


def gpu_ends(r: Readings, s: np.ndarray, exact: np.ndarray) -> tuple[np.ndarray, float | None]:
    """G(k) ≈ gpu_end(k): U(k), else S(k+2) − tail; and the tail (None: not calibrated)."""
    s2 = np.r_[s[2:], np.nan, np.nan]
    ex2 = np.r_[exact[2:], False, False]
    ok = ex2 & (r.u_first > 0) & (s2 >= r.u_first)
    tail = _median_offset(s2 - r.u_first, ok)
    g = np.where(r.u_first > 0, r.u_first.astype(np.float64), np.nan)
    if tail is not None:
        g = np.where(np.isnan(g), s2 - tail, g)
    return g, tail


def _span_rate(g: np.ndarray, uniform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per step n: (G(b) − G(a)) / (b − a) for the nearest readings a < n ≤ b inside one
    run of same batches (steps a+2 … b uniform), and whether that holds (float ns)."""
    n = len(g)
    have = ~np.isnan(g)
    idx = np.arange(n)
    prev_have = np.maximum.accumulate(np.where(have, idx, -1))          # nearest ≤ k
    a = np.r_[-1, prev_have[:-1]]                                        # nearest < n
    nxt = np.where(have, idx, n)
    b = np.minimum.accumulate(nxt[::-1])[::-1]                          # nearest ≥ n
    # runs of same batches: run id increments where batch k is not uniform with k−1
    run = np.cumsum(~uniform)
    ok = (a >= 0) & (b < n)
    a_c, b_c = np.clip(a, 0, n - 1), np.clip(b, 0, n - 1)
    # steps a+1 … b must hold the same batch: uniform at a+2 … b, i.e. run(a+1) == run(b)
    a1 = np.clip(a + 1, 0, n - 1)
    ok &= run[a1] == run[b_c]
    rate = np.where(ok, (g[b_c] - g[a_c]) / np.maximum(b_c - a_c, 1), np.nan)
    return rate, ok & (rate > 0)


def async_step_times(r: Readings, sid: np.ndarray) -> pd.DataFrame:
    """Forward time, period (with bounds) and GPU-wait flag of the sampled steps ``sid``
    under the async loop (module docstring)."""
    s, exact, bounds = schedule_starts(r)
    g, tail = gpu_ends(r, s, exact)
    n = len(g)
    sid = np.asarray(sid, dtype=np.int64)
    prev = np.clip(sid - 1, 0, n - 1)
    fwd_adj = g[sid] - g[prev]
    adj_ok = ~np.isnan(fwd_adj) & (fwd_adj > 0) & (sid >= 1)
    rate, span_ok = _span_rate(g, r.uniform)
    fwd = np.where(adj_ok, fwd_adj, np.where(span_ok[sid], rate[sid], np.nan))
    fsrc = np.where(adj_ok, SOURCE_ADJACENT, np.where(span_ok[sid], SOURCE_SPAN, SOURCE_NONE))
    # the GPU waited for the CPU before batch n: schedule(n) ended after batch n−1 did
    g_prev = g[prev]
    known = (r.end[sid] > 0) & ~np.isnan(g_prev) & (sid >= 1)
    waited = pd.array(np.where(known, r.end[sid] > g_prev, False), dtype="boolean")
    waited[~known] = pd.NA
    is_waited = np.asarray(waited.fillna(False), dtype=bool)
    fwd = np.where(is_waited, np.nan, fwd)
    fsrc = np.where(is_waited, SOURCE_WAITED, fsrc)
    # the period: S(n+2) − S(n+1), S(k) ← G(k−2) + tail where not read
    p = s.copy()
    if tail is not None:
        g_back = np.r_[np.nan, np.nan, g[:-2]]
        p = np.where(np.isnan(p), g_back + tail, p)
    i1, i2 = np.clip(sid + 1, 0, n - 1), np.clip(sid + 2, 0, n - 1)
    per_adj = p[i2] - p[i1]
    per_ok = ~np.isnan(per_adj) & (per_adj > 0) & (sid + 2 < n)
    period = np.where(per_ok, per_adj, np.nan)
    both_exact = exact[i1] & exact[i2] & (sid + 2 < n)
    psrc = np.where(both_exact & per_ok, SOURCE_EXACT,
                    np.where(per_ok, SOURCE_ADJACENT, SOURCE_NONE))
    lo, hi = bounds
    p_lo = lo[i2] - hi[i1]
    p_hi = hi[i2] - lo[i1]
    bad = ~(p_lo <= p_hi)
    p_lo = np.where(bad | (p_lo < 0), np.nan, p_lo)
    p_hi = np.where(bad | (p_hi < 0), np.nan, p_hi)
    return pd.DataFrame({
        "step_forward_us": fwd / 1e3, "step_forward_source": fsrc,
        "step_period_us": period / 1e3, "step_period_exact": both_exact & per_ok,
        "step_period_lo_us": p_lo / 1e3, "step_period_hi_us": p_hi / 1e3,
        "step_period_source": psrc, "gpu_waited_for_cpu": waited,
        "update_tail_us": np.full(len(sid), np.nan if tail is None else tail / 1e3)})
