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


def build_segments(journeys: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per segment (vectorised), and per-experiment event counts.

    Segment columns: experiment_id, request_id, segment (1-based within the request), kind,
    start_step (S), admit_ts, cached_tokens, k0, prompt_tokens, compute_tokens (T),
    max_tokens, end_event (PREEMPTED / FINISHED / <NA> if open), finish_status,
    last_step (X), k1, first_token_step (F, if in the segment), complete_step (E),
    e_mismatch. Steps are float64 with NaN where unknown.
    """
    n = len(journeys)
    exp_codes, exp_names = pd.factorize(journeys["experiment_id"].astype("string"), sort=True)
    req_codes, _ = pd.factorize(journeys["request_id"].astype("string"))
    ev = pd.Categorical(journeys["event"].astype("string"), categories=_EVENTS).codes.astype(np.int64)
    step = _num(journeys, "scheduler.step")
    pos = np.arange(n)
    # per request: by step, ties in file order (a SCHEDULED precedes what happens in its step)
    order = np.lexsort((pos, np.where(np.isnan(step), np.inf, step), req_codes, exp_codes))
    exp_c, req_c, ev, step = exp_codes[order], req_codes[order], ev[order], step[order]
    col = {c: _num(journeys, c)[order] for c in ("ts.monotonic", "prefill.total_tokens",
                                                 "prefill.done_tokens", "decode.done_tokens",
                                                 "decode.max_tokens")}
    status_s = (journeys["finish.status"].astype("string").str.lower() if "finish.status" in journeys
                else pd.Series(pd.NA, index=journeys.index, dtype="string"))
    absent = status_s.str.startswith(ABSENT_FINISH_STATUSES).fillna(False).to_numpy(dtype=bool)[order]

    new_req = np.ones(n, dtype=bool)
    new_req[1:] = (exp_c[1:] != exp_c[:-1]) | (req_c[1:] != req_c[:-1])
    req_idx = np.cumsum(new_req) - 1
    req_start = np.flatnonzero(new_req)
    is_sched = (ev == _SCHEDULED) & ~np.isnan(step)
    cs = np.cumsum(is_sched)
    seg_no = cs - (cs[req_start] - is_sched[req_start])[req_idx]
    seg_id = np.where(seg_no > 0, cs - 1, -1)

    # request-level fallbacks for attributes an event may lack
    def req_max(x: np.ndarray) -> np.ndarray:
        return np.fmax.reduceat(np.where(np.isnan(x), -np.inf, x), req_start)[req_idx]

    prompt_req = req_max(col["prefill.total_tokens"])
    max_tok_req = req_max(col["decode.max_tokens"])

    sched_rows = np.flatnonzero(is_sched)
    nseg = len(sched_rows)
    is_end = ((ev == _PREEMPTED) | (ev == _FINISHED)) & ~np.isnan(step)
    end_ids, end_rows = _first_per_group(seg_id, is_end & (seg_id >= 0))
    ft_ids, ft_rows = _first_per_group(seg_id, (ev == _FIRST) & (seg_id >= 0) & ~np.isnan(step))

    prompt = np.where(np.isnan(col["prefill.total_tokens"]), prompt_req,
                      col["prefill.total_tokens"])[sched_rows]
    prompt = np.where(np.isinf(prompt), np.nan, prompt)     # no event of the request says
    cached = np.nan_to_num(col["prefill.done_tokens"][sched_rows], nan=0.0)
    k0 = np.nan_to_num(col["decode.done_tokens"][sched_rows], nan=0.0)
    S = step[sched_rows]
    X = np.full(nseg, np.nan)
    k1 = np.full(nseg, np.nan)
    end_event = np.full(nseg, None, dtype=object)
    fin_status = np.full(nseg, None, dtype=object)
    X[end_ids] = step[end_rows] - ((ev[end_rows] == _PREEMPTED) | absent[end_rows])
    k1[end_ids] = col["decode.done_tokens"][end_rows]
    end_event[end_ids] = np.asarray(_EVENTS, dtype=object)[ev[end_rows]]
    fin_status[end_ids] = np.where(ev[end_rows] == _FINISHED,
                                   status_s.iloc[order[end_rows]].to_numpy(dtype=object, na_value=None),
                                   None)
    F = np.full(nseg, np.nan)
    F[ft_ids] = step[ft_rows]
    F[F > X] = np.nan   # a FIRST_TOKEN after the segment's end belongs to no run of it

    by_formula = np.where(k1 > k0, X - (k1 - k0 - 1), np.nan)
    E = np.where(np.isnan(F), by_formula, F)
    segs = pd.DataFrame({
        "experiment_id": pd.Series(np.asarray(exp_names, dtype=object)[exp_c[sched_rows]],
                                   dtype="string"),
        "request_id": journeys["request_id"].iloc[order[sched_rows]].astype("string").to_numpy(),
        "segment": seg_no[sched_rows],
        "kind": (journeys["schedule.kind"].iloc[order[sched_rows]].astype("string").to_numpy()
                 if "schedule.kind" in journeys else pd.array([pd.NA] * nseg, dtype="string")),
        "start_step": S,
        "admit_ts": col["ts.monotonic"][sched_rows],
        "cached_tokens": cached,
        "k0": k0,
        "prompt_tokens": prompt,
        "compute_tokens": np.nan_to_num(np.maximum(prompt + k0 - cached, 0.0), nan=0.0),
        "max_tokens": np.where(np.isinf(max_tok_req), np.nan, max_tok_req)[sched_rows],
        "end_event": pd.Series(end_event, dtype="string"),
        "finish_status": pd.Series(fin_status, dtype="string"),
        "last_step": X,
        "k1": k1,
        "first_token_step": F,
        "complete_step": E,
        "e_mismatch": ~np.isnan(F) & ~np.isnan(by_formula) & (F != by_formula),
        "_exp": exp_c[sched_rows],
        "_pos": order[sched_rows],
    })
    valid = ~np.isnan(step)
    unmatched = (seg_no == 0) & valid & ((ev == _FIRST) | (ev == _PREEMPTED)
                                         | ((ev == _FINISHED) & ~absent))
    events = pd.DataFrame({
        "_exp": np.arange(len(exp_names)),
        "experiment_id": pd.Series(np.asarray(exp_names, dtype=object), dtype="string"),
        "journey_events": np.bincount(exp_c, minlength=len(exp_names)),
        "requests": np.bincount(exp_c[req_start], minlength=len(exp_names)),
        "unmatched_events": np.bincount(exp_c[unmatched], minlength=len(exp_names)),
        "events_without_step": np.bincount(exp_c[~valid], minlength=len(exp_names)),
        "first_step": _group_reduce(np.fmin, exp_c, step, len(exp_names), np.inf),
        "last_step": _group_reduce(np.fmax, exp_c, step, len(exp_names), -np.inf),
    })
    return segs, events


def _group_reduce(fn: np.ufunc, group: np.ndarray, x: np.ndarray, ngroups: int,
                  init: float) -> np.ndarray:
    out = np.full(ngroups, init)
    fn.at(out, group, np.where(np.isnan(x), init, x))
    return out


# --------------------------------------------------------------------------- per step

def _budgets(names: pd.Series, budget_tokens: int | Mapping[str, int | None]) -> np.ndarray:
    if isinstance(budget_tokens, Mapping):
        vals = [budget_tokens.get(str(x)) for x in names]
        return np.array([DEFAULT_BUDGET_TOKENS if v is None or pd.isna(v) else int(v) for v in vals],
                        dtype=np.int64)
    return np.full(len(names), int(budget_tokens), dtype=np.int64)


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


def reconstruct(journeys: pd.DataFrame,
                budget_tokens: int | Mapping[str, int | None] = DEFAULT_BUDGET_TOKENS) -> Reconstruction:
    """Segments, per-step reconstruction and diagnostics for every experiment with journeys.

    ``budget_tokens`` is max_num_batched_tokens: one int for all experiments or a mapping
    experiment_id -> B (missing / None -> 2048).
    """
    segs, events = build_segments(journeys)
    names = events["experiment_id"]
    lo = np.nan_to_num(events["first_step"].to_numpy(), posinf=0, neginf=0).astype(np.int64)
    hi = np.nan_to_num(events["last_step"].to_numpy(), posinf=-1, neginf=-1).astype(np.int64)
    hi = np.maximum(hi, lo - 1)
    width = hi - lo + 2                     # +1 slack slot per experiment for range ends
    base = np.concatenate([[0], np.cumsum(width)[:-1]]).astype(np.int64)
    n_glob = int(width.sum())
    exp_of_g = np.repeat(np.arange(len(names)), width)
    step_of_g = np.arange(n_glob) - base[exp_of_g] + lo[exp_of_g]

    e = segs["_exp"].to_numpy()
    S, X, E = (segs[c].to_numpy() for c in ("start_step", "last_step", "complete_step"))
    k0, prompt, max_tok = (segs[c].to_numpy() for c in ("k0", "prompt_tokens", "max_tokens"))
    open_seg = np.isnan(X)
    extra = np.where(np.isnan(max_tok), np.inf, max_tok - k0 - 1)   # decode steps left after E

    def g(step_vals: np.ndarray, sel: np.ndarray) -> np.ndarray:
        """Global index of in-range steps (clipped to the experiment's range + slack)."""
        s = np.clip(step_vals[sel], lo[e[sel]], hi[e[sel]] + 1)
        return (s - lo[e[sel]] + base[e[sel]]).astype(np.int64)

    def decodes(E: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode count and Σctx per global step, and the decode-range mask, for completion
        steps E: closed segments decode E+1..X, open ones E+1..min(range end, E + extra)."""
        dec_last = np.where(open_seg, np.fmin(hi[e], E + extra), X)
        has = ~np.isnan(E) & (dec_last >= E + 1) & ~np.isnan(prompt)
        a, b = g(E + 1, has), g(dec_last + 1, has)
        c0 = (prompt + k0 - E)[has]          # ctx(s) = c0 + s
        n_diff = np.bincount(a, minlength=n_glob + 1) - np.bincount(b, minlength=n_glob + 1)
        c_diff = (np.bincount(a, weights=c0, minlength=n_glob + 1)
                  - np.bincount(b, weights=c0, minlength=n_glob + 1))
        n = np.cumsum(n_diff)[:n_glob].astype(np.int64)
        return n, np.rint(np.cumsum(c_diff)[:n_glob] + n * step_of_g).astype(np.int64), has

    dec_known, _, _ = decodes(E)

    # prefill: S..E when the completion is known (forced there), else S..X (or range end)
    pre_last = np.where(~np.isnan(E), E, np.where(open_seg, hi[e], X))
    valid = ~np.isnan(S)
    g_start = np.zeros(len(segs), dtype=np.int64)
    g_last = np.full(len(segs), -1, dtype=np.int64)
    g_start[valid] = g(S, valid)
    g_last[valid] = np.where(pre_last[valid] < S[valid], -1, g(pre_last, valid))
    budgets = _budgets(names, budget_tokens)
    open_no_e = open_seg & np.isnan(E)
    open_decodes = np.where(open_no_e, np.minimum(extra, n_glob), -1).astype(np.int64)
    g_end = hi[e] - lo[e] + base[e]
    c_seg, c_step, c_tok, c_k, chunk_mismatch, done_at = _greedy_chunks(
        segs, g_start, g_last, ~np.isnan(E), budgets[e], dec_known.copy(), open_decodes, g_end)
    # open segments the greedy rule completed: completion step, then decodes as above
    E = np.where(open_no_e & (done_at >= 0), step_of_g[np.maximum(done_at, 0)], E)
    dec_reqs, dec_ctx, _ = decodes(E)
    tok = c_tok.astype(np.float64)
    kk = c_k.astype(np.float64)

    def per_step(weights: np.ndarray | None = None) -> np.ndarray:
        return np.rint(np.bincount(c_step, weights=weights, minlength=n_glob)[:n_glob]).astype(np.int64)

    completes = ~np.isnan(E) & (E >= S) & (E <= hi[e])
    sampled = dec_reqs + np.bincount(g(E, completes), minlength=n_glob + 1)[:n_glob]
    keep = step_of_g <= hi[exp_of_g]
    steps = pd.DataFrame({
        "experiment_id": pd.Series(np.asarray(names, dtype=object)[exp_of_g[keep]], dtype="string"),
        "step.id": step_of_g[keep].astype(np.int64),
        "rec_decode_reqs": dec_reqs[keep],
        "rec_decode_ctx_tokens": dec_ctx[keep],
        "rec_prefill_reqs": per_step()[keep],
        "rec_prefill_tokens": per_step(tok)[keep],
        "rec_prefill_attn_pairs": per_step(tok * kk + tok * (tok + 1) / 2)[keep],
        "rec_prefill_kv_read_tokens": per_step(kk + tok)[keep],
        "rec_sampled_tokens": sampled[keep].astype(np.int64),
    })
    segs = segs.assign(complete_step=E, chunk_mismatch=chunk_mismatch)
    nexp = len(names)
    diag = events.assign(
        budget_tokens=budgets,
        segments=np.bincount(e, minlength=nexp),
        resumed_segments=np.bincount(e[segs["segment"].to_numpy() > 1], minlength=nexp),
        open_segments=np.bincount(e[open_seg], minlength=nexp),
        segments_without_prompt=np.bincount(e[np.isnan(prompt)], minlength=nexp),
        e_mismatches=np.bincount(e[segs["e_mismatch"].to_numpy()], minlength=nexp),
        chunk_mismatches=np.bincount(e[chunk_mismatch], minlength=nexp),
        steps_reconstructed=np.maximum(hi - lo + 1, 0),
    )
    return Reconstruction(steps=steps.reset_index(drop=True),
                          segments=segs.drop(columns=["_exp", "_pos"]),
                          diagnostics=diag.drop(columns=["_exp"]))


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
