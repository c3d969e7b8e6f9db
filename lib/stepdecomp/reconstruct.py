"""Per-step batch contents reconstructed from journey events (context lengths, prefill chunks).

The semantics are those of ``otlp``'s module docstring, applied to the letter:

* A request's life splits into *segments*, each opened by a ``SCHEDULED`` event at step S
  (``schedule.kind`` FIRST, then RESUME after a preemption), with ``prefill.done_tokens`` =
  cached prompt tokens and ``decode.done_tokens`` = k0. The segment computes
  T = prefill.total_tokens + k0 - cached tokens of prefill.
* It ends at the first ``PREEMPTED`` / ``FINISHED`` event after S: last-run step X = that
  event's step, minus 1 for ``PREEMPTED`` and for ``FINISHED`` with status aborted (the
  request is no longer in that step); k1 = that event's ``decode.done_tokens``.
* If k1 > k0 the prefill completed at E (= the ``FIRST_TOKEN`` step when the segment holds
  it, else X - (k1 - k0 - 1)), sampling a token there, and the request decoded one token
  per step in E+1..X with context length prefill.total_tokens + k0 + (s - E) at step s.
  If k1 == k0 the segment was all prefill (steps S..X, possibly left incomplete).
* Prefill chunks are greedy under the budget B = max_num_batched_tokens: in each step the
  decodes take one token each, then prefilling segments in admission order (step S, then
  the ``SCHEDULED`` event's ``ts.monotonic``) take min(remaining, B - used). A chunk of c
  new tokens after k already-computed tokens attends c·k + c(c+1)/2 causal (query, key)
  pairs and reads k + c KV tokens.

The per-step table covers every step id from the first to the last journey event of an
experiment (a trailing id stamped on an arrival or abort that no executed step carries is
an empty row). Decode counts and context sums use difference arrays and one cumulative sum over all
steps of all experiments; the greedy chunking is one Python pass over the segments (each
has a few steps) against a per-step ``used`` array.

Robustness, reported per experiment rather than silently absorbed:

* *open* segments (the trace ends before the segment does): the completion step E is
  the ``FIRST_TOKEN`` step if the segment holds it, else where the greedy rule completes
  the prefill (if it does within the journey range); the segment then decodes from E+1 to
  the end of the range, at most until its ``decode.max_tokens`` budget. (Its greedy-derived
  decodes take budget only from segments admitted after it — an approximation confined to
  the last steps of a truncated trace.)
* *unmatched* events (``FIRST_TOKEN`` / ``PREEMPTED`` / a normal ``FINISHED`` before any
  ``SCHEDULED`` of the request, e.g. a trace that starts mid-run) are counted and ignored.
* segments whose request carries no ``prefill.total_tokens`` are counted and skipped.
* *E mismatches* (``FIRST_TOKEN`` step != X - (k1 - k0 - 1)) and *chunk mismatches* (the
  greedy rule finishes a prompt before E, or has tokens left at E; the rest is then put at
  E) are counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd

#: Default max_num_batched_tokens when an experiment's config does not say.
DEFAULT_BUDGET_TOKENS = 2048
#: Output columns of :func:`reconstruct_steps` besides the (experiment_id, step.id) key.
REC_COLUMNS = [
    "rec_decode_reqs",             # requests decoding one token in the step
    "rec_decode_ctx_tokens",       # Σ context (KV) length they attend, incl. the new token
    "rec_prefill_reqs",            # requests computing a prefill chunk (c > 0) in the step
    "rec_prefill_tokens",          # Σ chunk tokens c
    "rec_prefill_attn_pairs",      # Σ c·k + c(c+1)/2 causal (query, key) pairs
    "rec_prefill_kv_read_tokens",  # Σ (k + c) KV tokens the chunk attention reads
    "rec_sampled_tokens",          # decoders + prefills completing in the step
]
KEY = ["experiment_id", "step.id"]
#: ``finish.status`` values (lower case, prefix match) meaning "not in the event's step".
ABSENT_FINISH_STATUSES = ("abort", "ignored")

_EVENTS = ("QUEUED", "SCHEDULED", "FIRST_TOKEN", "FINISHED", "PREEMPTED")
_QUEUED, _SCHEDULED, _FIRST, _FINISHED, _PREEMPTED = range(5)


@dataclass(frozen=True)
class Reconstruction:
    """Per-step table, per-segment table and per-experiment diagnostics."""

    steps: pd.DataFrame
    segments: pd.DataFrame
    diagnostics: pd.DataFrame


# --------------------------------------------------------------------------- segments

def _num(frame: pd.DataFrame, col: str) -> np.ndarray:
    """A nullable numeric column as float64 with NaN for missing (absent column: all NaN)."""
    if col not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _first_per_group(group: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group ids, row index of each group's first masked row); rows are sorted by group."""
    rows = np.flatnonzero(mask)
    ids, first = np.unique(group[rows], return_index=True)
    return ids, rows[first]


def _group_reduce(fn: np.ufunc, group: np.ndarray, x: np.ndarray, ngroups: int,
                  init: float) -> np.ndarray:
    """``fn`` (np.fmin / np.fmax) of ``x`` per group id in 0..ngroups-1, NaN ignored;
    ``init`` where a group has no value."""
    out = np.full(ngroups, init)
    fn.at(out, group, np.where(np.isnan(x), init, x))
    return out


#: Numeric journey attributes a segment reads (NaN where an event lacks them).
_SEGMENT_ATTRS = ("ts.monotonic", "prefill.total_tokens", "prefill.done_tokens",
                  "decode.done_tokens", "decode.max_tokens")


@dataclass(frozen=True)
class _Events:
    """Journey events as arrays in request order — per (experiment, request), by step, ties
    in file order (a ``SCHEDULED`` precedes what happens in its step), NaN steps last — and
    their request and segment numbers (a segment opens at each ``SCHEDULED`` with a step)."""

    order: np.ndarray           # journeys row of each sorted event
    exp: np.ndarray             # experiment code (index into exp_names)
    exp_names: pd.Index         # experiment ids, sorted
    ev: np.ndarray              # index into _EVENTS (-1: another event)
    step: np.ndarray            # scheduler.step, float64, NaN if missing
    attr: dict[str, np.ndarray]  # the _SEGMENT_ATTRS columns
    status: pd.Series           # finish.status in lower case, in journeys' row order
    absent: np.ndarray          # FINISHED status says "not in the event's step"
    req_idx: np.ndarray         # request number of each event
    req_start: np.ndarray       # first event of each request
    is_sched: np.ndarray        # event opens a segment
    seg_no: np.ndarray          # 1-based segment within the request (0: before the first)
    seg_id: np.ndarray          # global segment number (-1: before the first)


def _sort_events(journeys: pd.DataFrame) -> _Events:
    """The journey events sorted into request order and numbered, with the columns
    segments read."""
    exp_codes, exp_names = pd.factorize(journeys["experiment_id"].astype("string"), sort=True)
    req_codes, _ = pd.factorize(journeys["request_id"].astype("string"))
    ev = pd.Categorical(journeys["event"].astype("string"), categories=_EVENTS).codes.astype(np.int64)
    step = _num(journeys, "scheduler.step")
    pos = np.arange(len(journeys))
    order = np.lexsort((pos, np.where(np.isnan(step), np.inf, step), req_codes, exp_codes))
    status = (journeys["finish.status"].astype("string").str.lower() if "finish.status" in journeys
              else pd.Series(pd.NA, index=journeys.index, dtype="string"))
    absent = status.str.startswith(ABSENT_FINISH_STATUSES).fillna(False).to_numpy(dtype=bool)[order]
    exp, req, ev, step = exp_codes[order], req_codes[order], ev[order], step[order]
    # request and segment numbers: cumulative sums of the request / segment starts
    new_req = np.ones(len(ev), dtype=bool)
    new_req[1:] = (exp[1:] != exp[:-1]) | (req[1:] != req[:-1])
    req_idx = np.cumsum(new_req) - 1
    req_start = np.flatnonzero(new_req)
    is_sched = (ev == _SCHEDULED) & ~np.isnan(step)
    cs = np.cumsum(is_sched)
    seg_no = cs - (cs[req_start] - is_sched[req_start])[req_idx]
    return _Events(order=order, exp=exp, exp_names=exp_names, ev=ev, step=step,
                   attr={c: _num(journeys, c)[order] for c in _SEGMENT_ATTRS},
                   status=status, absent=absent, req_idx=req_idx, req_start=req_start,
                   is_sched=is_sched, seg_no=seg_no, seg_id=np.where(seg_no > 0, cs - 1, -1))


def _request_max(x: np.ndarray, evs: _Events) -> np.ndarray:
    """Per event, the max of ``x`` over its request (-inf if no event of it has a value):
    the request-level fallback for attributes an event may lack."""
    return np.fmax.reduceat(np.where(np.isnan(x), -np.inf, x), evs.req_start)[evs.req_idx]


def _segment_starts(evs: _Events) -> dict[str, np.ndarray]:
    """What each segment's ``SCHEDULED`` event says: start_step (S), admit_ts,
    cached_tokens, k0, prompt_tokens (request fallback), compute_tokens
    T = max(prompt + k0 - cached, 0) (0 without a prompt) and max_tokens."""
    sched_rows = np.flatnonzero(evs.is_sched)
    prompt_req = _request_max(evs.attr["prefill.total_tokens"], evs)
    max_tok_req = _request_max(evs.attr["decode.max_tokens"], evs)
    prompt = np.where(np.isnan(evs.attr["prefill.total_tokens"]), prompt_req,
                      evs.attr["prefill.total_tokens"])[sched_rows]
    prompt = np.where(np.isinf(prompt), np.nan, prompt)     # no event of the request says
    cached = np.nan_to_num(evs.attr["prefill.done_tokens"][sched_rows], nan=0.0)
    k0 = np.nan_to_num(evs.attr["decode.done_tokens"][sched_rows], nan=0.0)
    return {"start_step": evs.step[sched_rows],
            "admit_ts": evs.attr["ts.monotonic"][sched_rows],
            "cached_tokens": cached,
            "k0": k0,
            "prompt_tokens": prompt,
            "compute_tokens": np.nan_to_num(np.maximum(prompt + k0 - cached, 0.0), nan=0.0),
            "max_tokens": np.where(np.isinf(max_tok_req), np.nan, max_tok_req)[sched_rows]}


def _segment_ends(evs: _Events) -> dict[str, np.ndarray]:
    """How each segment ends: end_event, finish_status (FINISHED only), last_step X (the
    end event's step, minus 1 if the request is not in it), k1, and first_token_step F (its
    first ``FIRST_TOKEN`` step if not after X). An open segment has no end: NaN / None
    except F."""
    nseg = int(evs.is_sched.sum())
    ev, step = evs.ev, evs.step
    is_end = ((ev == _PREEMPTED) | (ev == _FINISHED)) & ~np.isnan(step)
    end_ids, end_rows = _first_per_group(evs.seg_id, is_end & (evs.seg_id >= 0))
    ft_ids, ft_rows = _first_per_group(evs.seg_id,
                                       (ev == _FIRST) & (evs.seg_id >= 0) & ~np.isnan(step))
    X = np.full(nseg, np.nan)
    k1 = np.full(nseg, np.nan)
    end_event = np.full(nseg, None, dtype=object)
    fin_status = np.full(nseg, None, dtype=object)
    X[end_ids] = step[end_rows] - ((ev[end_rows] == _PREEMPTED) | evs.absent[end_rows])
    k1[end_ids] = evs.attr["decode.done_tokens"][end_rows]
    end_event[end_ids] = np.asarray(_EVENTS, dtype=object)[ev[end_rows]]
    fin_status[end_ids] = np.where(
        ev[end_rows] == _FINISHED,
        evs.status.iloc[evs.order[end_rows]].to_numpy(dtype=object, na_value=None), None)
    F = np.full(nseg, np.nan)
    F[ft_ids] = step[ft_rows]
    F[F > X] = np.nan   # a FIRST_TOKEN after the segment's end belongs to no run of it
    return {"end_event": end_event, "finish_status": fin_status, "last_step": X, "k1": k1,
            "first_token_step": F}


def _segment_frame(journeys: pd.DataFrame, evs: _Events) -> pd.DataFrame:
    """The segment table of :func:`build_segments`: starts, ends, the completion step
    E = F if known, else X - (k1 - k0 - 1) when k1 > k0, and the E-mismatch flag; plus the
    internal ``_exp`` (experiment code) and ``_pos`` (journeys row) columns."""
    sched_rows = np.flatnonzero(evs.is_sched)
    start = _segment_starts(evs)
    end = _segment_ends(evs)
    k0, X, k1, F = start["k0"], end["last_step"], end["k1"], end["first_token_step"]
    by_formula = np.where(k1 > k0, X - (k1 - k0 - 1), np.nan)
    E = np.where(np.isnan(F), by_formula, F)
    rows = evs.order[sched_rows]
    return pd.DataFrame({
        "experiment_id": pd.Series(np.asarray(evs.exp_names, dtype=object)[evs.exp[sched_rows]],
                                   dtype="string"),
        "request_id": journeys["request_id"].iloc[rows].astype("string").to_numpy(),
        "segment": evs.seg_no[sched_rows],
        "kind": (journeys["schedule.kind"].iloc[rows].astype("string").to_numpy()
                 if "schedule.kind" in journeys
                 else pd.array([pd.NA] * len(sched_rows), dtype="string")),
        **start,
        "end_event": pd.Series(end["end_event"], dtype="string"),
        "finish_status": pd.Series(end["finish_status"], dtype="string"),
        "last_step": X,
        "k1": k1,
        "first_token_step": F,
        "complete_step": E,
        "e_mismatch": ~np.isnan(F) & ~np.isnan(by_formula) & (F != by_formula),
        "_exp": evs.exp[sched_rows],
        "_pos": rows,
    })


def _event_counts(evs: _Events) -> pd.DataFrame:
    """Per experiment (``_exp`` code, experiment_id): journey_events, requests,
    unmatched_events (FIRST_TOKEN / PREEMPTED / a normal FINISHED before any SCHEDULED),
    events_without_step, and the first_step / last_step of its journey range (±inf if none)."""
    nexp = len(evs.exp_names)
    valid = ~np.isnan(evs.step)
    ev = evs.ev
    unmatched = (evs.seg_no == 0) & valid & ((ev == _FIRST) | (ev == _PREEMPTED)
                                             | ((ev == _FINISHED) & ~evs.absent))
    return pd.DataFrame({
        "_exp": np.arange(nexp),
        "experiment_id": pd.Series(np.asarray(evs.exp_names, dtype=object), dtype="string"),
        "journey_events": np.bincount(evs.exp, minlength=nexp),
        "requests": np.bincount(evs.exp[evs.req_start], minlength=nexp),
        "unmatched_events": np.bincount(evs.exp[unmatched], minlength=nexp),
        "events_without_step": np.bincount(evs.exp[~valid], minlength=nexp),
        "first_step": _group_reduce(np.fmin, evs.exp, evs.step, nexp, np.inf),
        "last_step": _group_reduce(np.fmax, evs.exp, evs.step, nexp, -np.inf),
    })


def build_segments(journeys: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per segment (vectorised), and per-experiment event counts.

    Segment columns: experiment_id, request_id, segment (1-based within the request), kind,
    start_step (S), admit_ts, cached_tokens, k0, prompt_tokens, compute_tokens (T),
    max_tokens, end_event (PREEMPTED / FINISHED / <NA> if open), finish_status,
    last_step (X), k1, first_token_step (F, if in the segment), complete_step (E),
    e_mismatch. Steps are float64 with NaN where unknown.
    """
    evs = _sort_events(journeys)
    return _segment_frame(journeys, evs), _event_counts(evs)


# --------------------------------------------------------------------------- per step

def _budgets(names: pd.Series, budget_tokens: int | Mapping[str, int | None]) -> np.ndarray:
    """Per experiment, its max_num_batched_tokens B (missing / None -> the default)."""
    if isinstance(budget_tokens, Mapping):
        vals = [budget_tokens.get(str(x)) for x in names]
        return np.array([DEFAULT_BUDGET_TOKENS if v is None or pd.isna(v) else int(v) for v in vals],
                        dtype=np.int64)
    return np.full(len(names), int(budget_tokens), dtype=np.int64)


@dataclass(frozen=True)
class _StepGrid:
    """Every experiment's journey step range laid end to end on one global step axis.

    Experiment x holds steps lo[x]..hi[x] at global indices base[x] + (step - lo[x]), then
    one slack slot (so that a range end + 1 has an index for difference arrays).
    """

    lo: np.ndarray
    hi: np.ndarray
    base: np.ndarray
    n_glob: int
    exp_of_g: np.ndarray        # experiment of each global index
    step_of_g: np.ndarray       # step id of each global index

    def index(self, step_vals: np.ndarray, exp: np.ndarray, sel: np.ndarray) -> np.ndarray:
        """Global index of the selected steps (experiments ``exp``), clipped to the
        experiment's range + slack."""
        s = np.clip(step_vals[sel], self.lo[exp[sel]], self.hi[exp[sel]] + 1)
        return (s - self.lo[exp[sel]] + self.base[exp[sel]]).astype(np.int64)


def _step_grid(events: pd.DataFrame) -> _StepGrid:
    """The global step axis of the experiments' first_step..last_step ranges (an
    experiment without steps gets an empty range and its slack slot)."""
    lo = np.nan_to_num(events["first_step"].to_numpy(), posinf=0, neginf=0).astype(np.int64)
    hi = np.nan_to_num(events["last_step"].to_numpy(), posinf=-1, neginf=-1).astype(np.int64)
    hi = np.maximum(hi, lo - 1)
    width = hi - lo + 2                     # +1 slack slot per experiment for range ends
    base = np.concatenate([[0], np.cumsum(width)[:-1]]).astype(np.int64)
    n_glob = int(width.sum())
    exp_of_g = np.repeat(np.arange(len(events)), width)
    return _StepGrid(lo=lo, hi=hi, base=base, n_glob=n_glob, exp_of_g=exp_of_g,
                     step_of_g=np.arange(n_glob) - base[exp_of_g] + lo[exp_of_g])


@dataclass(frozen=True)
class _SegmentArrays:
    """The segment columns the per-step pass reads, as arrays."""

    exp: np.ndarray             # experiment code
    S: np.ndarray               # start_step
    X: np.ndarray               # last_step (NaN: open)
    k0: np.ndarray
    prompt: np.ndarray          # prompt_tokens (NaN: unknown)
    open_seg: np.ndarray        # the trace ends before the segment does
    extra: np.ndarray           # decode steps left after E (max_tokens - k0 - 1; inf if unknown)


def _segment_arrays(segs: pd.DataFrame) -> _SegmentArrays:
    """:class:`_SegmentArrays` of a :func:`build_segments` table."""
    k0, max_tok = segs["k0"].to_numpy(), segs["max_tokens"].to_numpy()
    X = segs["last_step"].to_numpy()
    return _SegmentArrays(exp=segs["_exp"].to_numpy(), S=segs["start_step"].to_numpy(), X=X,
                          k0=k0, prompt=segs["prompt_tokens"].to_numpy(), open_seg=np.isnan(X),
                          extra=np.where(np.isnan(max_tok), np.inf, max_tok - k0 - 1))


def _decodes(grid: _StepGrid, sa: _SegmentArrays, E: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode count and Σctx per global step, and the decode-range mask, for completion
    steps E: closed segments decode E+1..X, open ones E+1..min(range end, E + extra), with
    ctx(s) = prompt + k0 + (s - E); difference arrays and one cumulative sum."""
    n_glob, e = grid.n_glob, sa.exp
    dec_last = np.where(sa.open_seg, np.fmin(grid.hi[e], E + sa.extra), sa.X)
    has = ~np.isnan(E) & (dec_last >= E + 1) & ~np.isnan(sa.prompt)
    a, b = grid.index(E + 1, e, has), grid.index(dec_last + 1, e, has)
    c0 = (sa.prompt + sa.k0 - E)[has]          # ctx(s) = c0 + s
    n_diff = np.bincount(a, minlength=n_glob + 1) - np.bincount(b, minlength=n_glob + 1)
    c_diff = (np.bincount(a, weights=c0, minlength=n_glob + 1)
              - np.bincount(b, weights=c0, minlength=n_glob + 1))
    n = np.cumsum(n_diff)[:n_glob].astype(np.int64)
    return n, np.rint(np.cumsum(c_diff)[:n_glob] + n * grid.step_of_g).astype(np.int64), has


def _prefill_windows(grid: _StepGrid, sa: _SegmentArrays, E: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Global (first, last) step a segment may prefill in: S..E when the completion is
    known (forced there), else S..X (or the range end if open); last = -1 if empty."""
    e = sa.exp
    pre_last = np.where(~np.isnan(E), E, np.where(sa.open_seg, grid.hi[e], sa.X))
    valid = ~np.isnan(sa.S)
    g_start = np.zeros(len(e), dtype=np.int64)
    g_last = np.full(len(e), -1, dtype=np.int64)
    g_start[valid] = grid.index(sa.S, e, valid)
    g_last[valid] = np.where(pre_last[valid] < sa.S[valid], -1, grid.index(pre_last, e, valid))
    return g_start, g_last


def _greedy_chunks(segs: pd.DataFrame, g_start: np.ndarray, g_last: np.ndarray,
                   force_at_last: np.ndarray, budget: np.ndarray, used: np.ndarray,
                   open_decodes: np.ndarray, g_end: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Greedy prefill chunks: segments in admission order take min(remaining, B - used).

    g_* are global step indices; ``used`` (decode tokens per step) is updated in place. An
    open segment without a known completion (``open_decodes`` >= 0) that completes at step g
    then decodes in g+1 .. min(g + open_decodes, g_end), which is added to ``used`` for the
    segments admitted after it. Returns per chunk (segment row, global step, c, k), the
    per-segment chunk-mismatch flag and the global completion step (-1 if none).
    """
    order = np.lexsort((segs["_pos"].to_numpy(), np.nan_to_num(segs["admit_ts"].to_numpy(), nan=np.inf),
                        segs["start_step"].to_numpy(), segs["_exp"].to_numpy()))
    order = order[(g_last[order] >= g_start[order]) & (segs["compute_tokens"].to_numpy()[order] > 0)]
    u = used.tolist()
    T = segs["compute_tokens"].to_numpy().astype(np.int64).tolist()
    kc = segs["cached_tokens"].to_numpy().astype(np.int64).tolist()
    gs, gl, fz, bud = g_start.tolist(), g_last.tolist(), force_at_last.tolist(), budget.tolist()
    od, ge = open_decodes.tolist(), g_end.tolist()
    c_seg: list[int] = []
    c_step: list[int] = []
    c_tok: list[int] = []
    c_k: list[int] = []
    mismatch = np.zeros(len(segs), dtype=bool)
    done_at = np.full(len(segs), -1, dtype=np.int64)
    for i in order.tolist():
        rem, k, s, last, force, b = T[i], kc[i], gs[i], gl[i], fz[i], bud[i]
        while s <= last and rem > 0:
            free = b - u[s]
            if force and s == last:
                c = rem
                if c > free:
                    mismatch[i] = True
            else:
                c = rem if rem < free else max(free, 0)
            if c > 0:
                c_seg.append(i)
                c_step.append(s)
                c_tok.append(c)
                c_k.append(k)
                u[s] += c
                rem -= c
                k += c
            s += 1
        if rem == 0:
            done_at[i] = s - 1
            if force and s <= last:   # greedy finished the prompt before the journey's E
                mismatch[i] = True
            if od[i] >= 0:            # open segment: decodes after its greedy completion
                for t in range(s, min(s - 1 + od[i], ge[i]) + 1):
                    u[t] += 1
    used[:] = u
    return (np.asarray(c_seg, dtype=np.int64), np.asarray(c_step, dtype=np.int64),
            np.asarray(c_tok, dtype=np.int64), np.asarray(c_k, dtype=np.int64), mismatch, done_at)


def _step_table(grid: _StepGrid, names: pd.Series, sa: _SegmentArrays, E: np.ndarray,
                dec_reqs: np.ndarray, dec_ctx: np.ndarray, c_step: np.ndarray,
                c_tok: np.ndarray, c_k: np.ndarray) -> pd.DataFrame:
    """The per-step table (experiment_id, step.id, ``REC_COLUMNS``) over every step of the
    journey ranges (slack slots dropped): decodes, the chunk sums (c, c·k + c(c+1)/2,
    k + c per chunk) and sampled tokens = decoders + segments completing there."""
    tok = c_tok.astype(np.float64)
    kk = c_k.astype(np.float64)
    n_glob, hi, e = grid.n_glob, grid.hi, sa.exp

    def per_step(weights: np.ndarray | None = None) -> np.ndarray:
        """Σ weights (count if None) of the chunks per global step, rounded to int64."""
        return np.rint(np.bincount(c_step, weights=weights, minlength=n_glob)[:n_glob]).astype(np.int64)

    completes = ~np.isnan(E) & (E >= sa.S) & (E <= hi[e])
    sampled = dec_reqs + np.bincount(grid.index(E, e, completes), minlength=n_glob + 1)[:n_glob]
    keep = grid.step_of_g <= hi[grid.exp_of_g]
    steps = pd.DataFrame({
        "experiment_id": pd.Series(np.asarray(names, dtype=object)[grid.exp_of_g[keep]],
                                   dtype="string"),
        "step.id": grid.step_of_g[keep].astype(np.int64),
        "rec_decode_reqs": dec_reqs[keep],
        "rec_decode_ctx_tokens": dec_ctx[keep],
        "rec_prefill_reqs": per_step()[keep],
        "rec_prefill_tokens": per_step(tok)[keep],
        "rec_prefill_attn_pairs": per_step(tok * kk + tok * (tok + 1) / 2)[keep],
        "rec_prefill_kv_read_tokens": per_step(kk + tok)[keep],
        "rec_sampled_tokens": sampled[keep].astype(np.int64),
    })
    return steps.reset_index(drop=True)


def _diagnostics(events: pd.DataFrame, grid: _StepGrid, budgets: np.ndarray,
                 segs: pd.DataFrame, sa: _SegmentArrays, chunk_mismatch: np.ndarray
                 ) -> pd.DataFrame:
    """The per-experiment event counts plus budget_tokens, segments, resumed_segments,
    open_segments, segments_without_prompt, e_mismatches, chunk_mismatches and
    steps_reconstructed (the journey range's length)."""
    nexp, e = len(events), sa.exp
    diag = events.assign(
        budget_tokens=budgets,
        segments=np.bincount(e, minlength=nexp),
        resumed_segments=np.bincount(e[segs["segment"].to_numpy() > 1], minlength=nexp),
        open_segments=np.bincount(e[sa.open_seg], minlength=nexp),
        segments_without_prompt=np.bincount(e[np.isnan(sa.prompt)], minlength=nexp),
        e_mismatches=np.bincount(e[segs["e_mismatch"].to_numpy()], minlength=nexp),
        chunk_mismatches=np.bincount(e[chunk_mismatch], minlength=nexp),
        steps_reconstructed=np.maximum(grid.hi - grid.lo + 1, 0),
    )
    return diag.drop(columns=["_exp"])


def reconstruct(journeys: pd.DataFrame,
                budget_tokens: int | Mapping[str, int | None] = DEFAULT_BUDGET_TOKENS) -> Reconstruction:
    """Segments, per-step reconstruction and diagnostics for every experiment with journeys.

    ``budget_tokens`` is max_num_batched_tokens: one int for all experiments or a mapping
    experiment_id -> B (missing / None -> 2048). Data flow: segments -> global step axis ->
    decodes of segments with a known completion E -> greedy prefill chunks against those
    decodes (completing open segments without E) -> decodes with every E -> tables.
    """
    segs, events = build_segments(journeys)
    names = events["experiment_id"]
    grid = _step_grid(events)
    sa = _segment_arrays(segs)
    E = segs["complete_step"].to_numpy()
    dec_known, _, _ = _decodes(grid, sa, E)
    g_start, g_last = _prefill_windows(grid, sa, E)
    budgets = _budgets(names, budget_tokens)
    e = sa.exp
    open_no_e = sa.open_seg & np.isnan(E)
    open_decodes = np.where(open_no_e, np.minimum(sa.extra, grid.n_glob), -1).astype(np.int64)
    g_end = grid.hi[e] - grid.lo[e] + grid.base[e]
    c_seg, c_step, c_tok, c_k, chunk_mismatch, done_at = _greedy_chunks(
        segs, g_start, g_last, ~np.isnan(E), budgets[e], dec_known.copy(), open_decodes, g_end)
    # open segments the greedy rule completed: completion step, then decodes as above
    E = np.where(open_no_e & (done_at >= 0), grid.step_of_g[np.maximum(done_at, 0)], E)
    dec_reqs, dec_ctx, _ = _decodes(grid, sa, E)
    steps = _step_table(grid, names, sa, E, dec_reqs, dec_ctx, c_step, c_tok, c_k)
    segs = segs.assign(complete_step=E, chunk_mismatch=chunk_mismatch)
    return Reconstruction(steps=steps,
                          segments=segs.drop(columns=["_exp", "_pos"]),
                          diagnostics=_diagnostics(events, grid, budgets, segs, sa, chunk_mismatch))


def reconstruct_steps(journeys: pd.DataFrame,
                      budget_tokens: int | Mapping[str, int | None] = DEFAULT_BUDGET_TOKENS
                      ) -> pd.DataFrame:
    """experiment_id, step.id and the ``REC_COLUMNS`` for every step of every experiment's
    journey range (first to last journey event step), including unsampled steps."""
    return reconstruct(journeys, budget_tokens).steps


# --------------------------------------------------------------------------- merge + agreement

def attach_reconstruction(steps: pd.DataFrame, journeys: pd.DataFrame,
                          budget_tokens: int | Mapping[str, int | None] = DEFAULT_BUDGET_TOKENS,
                          reconstruction: Reconstruction | None = None
                          ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The steps table with the ``REC_COLUMNS`` merged on (experiment_id, step.id), and a
    per-experiment report.

    Steps of experiments without journeys (or outside their journey range) get NaN; callers
    fall back to batch-level estimates there. Report columns: experiment_id, has_journeys,
    sampled_steps, covered_steps (sampled steps inside the journey range),
    decode_reqs_agreement, prefill_tokens_agreement, prefill_reqs_agreement,
    agreement (fraction of sampled steps where rec_decode_reqs == batch.num_decode_reqs AND
    rec_prefill_tokens == batch.prefill_tokens; NaN without journeys), the reconstruction
    diagnostics (requests, segments, open_segments, unmatched_events, e_mismatches,
    chunk_mismatches, budget_tokens, ...) and a note. Pass ``reconstruction`` to reuse an
    earlier :func:`reconstruct` of the same journeys.
    """
    rec = reconstruction if reconstruction is not None else (
        reconstruct(journeys, budget_tokens) if len(journeys) else None)
    rec_steps = rec.steps if rec is not None else pd.DataFrame(
        {c: pd.Series(dtype="float64") for c in REC_COLUMNS}
        | {"experiment_id": pd.Series(dtype="string"), "step.id": pd.Series(dtype="int64")})
    left = steps.drop(columns=[c for c in REC_COLUMNS if c in steps])
    key_left = left[KEY].astype({"experiment_id": "string", "step.id": "int64"})
    merged_cols = key_left.merge(rec_steps, on=KEY, how="left")
    merged = left.copy()
    for c in REC_COLUMNS:
        merged[c] = merged_cols[c].to_numpy(dtype=np.float64, na_value=np.nan)

    covered = merged["rec_decode_reqs"].notna()
    dec_ok = merged["rec_decode_reqs"] == merged["batch.num_decode_reqs"]
    pre_ok = merged["rec_prefill_tokens"] == merged["batch.prefill_tokens"]
    preq_ok = merged["rec_prefill_reqs"] == merged["batch.num_prefill_reqs"]
    flags = pd.DataFrame({"experiment_id": merged["experiment_id"].astype("string"),
                          "covered": covered, "dec": dec_ok, "pre": pre_ok, "preq": preq_ok,
                          "both": dec_ok & pre_ok})
    g = flags.groupby("experiment_id", sort=True)
    report = pd.DataFrame({"sampled_steps": g.size(), "covered_steps": g["covered"].sum(),
                           "decode_reqs_agreement": g["dec"].mean(),
                           "prefill_tokens_agreement": g["pre"].mean(),
                           "prefill_reqs_agreement": g["preq"].mean(),
                           "agreement": g["both"].mean()}).reset_index()
    with_j = set(rec.diagnostics["experiment_id"]) if rec is not None else set()
    report.insert(1, "has_journeys", report["experiment_id"].isin(with_j))
    agree_cols = ["decode_reqs_agreement", "prefill_tokens_agreement", "prefill_reqs_agreement",
                  "agreement"]
    report.loc[~report["has_journeys"], agree_cols] = np.nan
    if rec is not None:
        report = report.merge(rec.diagnostics.drop(columns=["first_step", "last_step"]),
                              on="experiment_id", how="left")
    report["note"] = np.where(
        report["has_journeys"],
        np.where(report["covered_steps"] < report["sampled_steps"],
                 "journeys present; some sampled steps lie outside the journey range (NaN there)",
                 "journeys present"),
        "no journey events: rec_* are NaN; decode attention unavailable, prefill attention "
        "falls back to the batch-level estimate")
    return merged, report
