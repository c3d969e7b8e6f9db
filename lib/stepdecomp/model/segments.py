"""Request segments from journey events: the first half of the reconstruction.

A request's life splits into segments, each opened by a ``SCHEDULED`` event and closed by the
next ``PREEMPTED`` / ``FINISHED`` event of the request; reconstruct.py's module docstring
gives the rules (S, X, k0, k1, T, E) this module applies, and reconstruct.py turns the
segments into per-step batch contents.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: ``finish.status`` values (lower case, prefix match) meaning "not in the event's step".
ABSENT_FINISH_STATUSES = ("abort", "ignored")

_EVENTS = ("QUEUED", "SCHEDULED", "FIRST_TOKEN", "FINISHED", "PREEMPTED")
_QUEUED, _SCHEDULED, _FIRST, _FINISHED, _PREEMPTED = range(5)


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
