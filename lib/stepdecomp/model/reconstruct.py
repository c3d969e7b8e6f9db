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

from .segments import ABSENT_FINISH_STATUSES, build_segments  # noqa: F401 (part of reconstruct's API)
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
#: Prefill-chunk sums a step-time basis with whole-prompt attention needs (blis_basis: BLIS
#: prices a chunk of c tokens as attending the whole prefill length s = prompt + k0 of its
#: segment, not the k + c tokens computed so far). Merged like ``REC_COLUMNS``.
REC_CHUNK_COLUMNS = [
    "rec_prefill_chunk_input_tokens",  # Σ c·s, s = the segment's prefill length prompt + k0
    "rec_prefill_chunk_sq_tokens",     # Σ c²
]
KEY = ["experiment_id", "step.id"]


@dataclass(frozen=True)
class Reconstruction:
    """Per-step table, per-segment table and per-experiment diagnostics."""

    steps: pd.DataFrame
    segments: pd.DataFrame
    diagnostics: pd.DataFrame


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
                dec_reqs: np.ndarray, dec_ctx: np.ndarray, c_seg: np.ndarray, c_step: np.ndarray,
                c_tok: np.ndarray, c_k: np.ndarray) -> pd.DataFrame:
    """The per-step table (experiment_id, step.id, ``REC_COLUMNS``, ``REC_CHUNK_COLUMNS``)
    over every step of the journey ranges (slack slots dropped): decodes, the chunk sums (c,
    c·k + c(c+1)/2, k + c, c·s and c² per chunk, s = prompt + k0 of the chunk's segment
    ``c_seg``) and sampled tokens = decoders + segments completing there."""
    tok = c_tok.astype(np.float64)
    kk = c_k.astype(np.float64)
    seg_len = (sa.prompt + sa.k0)[c_seg] if len(c_seg) else np.zeros(0)
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
        "rec_prefill_chunk_input_tokens": per_step(tok * seg_len)[keep],
        "rec_prefill_chunk_sq_tokens": per_step(tok * tok)[keep],
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
    steps = _step_table(grid, names, sa, E, dec_reqs, dec_ctx, c_seg, c_step, c_tok, c_k)
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
        {c: pd.Series(dtype="float64") for c in (*REC_COLUMNS, *REC_CHUNK_COLUMNS)}
        | {"experiment_id": pd.Series(dtype="string"), "step.id": pd.Series(dtype="int64")})
    left = steps.drop(columns=[c for c in (*REC_COLUMNS, *REC_CHUNK_COLUMNS) if c in steps])
    key_left = left[KEY].astype({"experiment_id": "string", "step.id": "int64"})
    merged_cols = key_left.merge(rec_steps, on=KEY, how="left")
    merged = left.copy()
    for c in (*REC_COLUMNS, *REC_CHUNK_COLUMNS):
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
