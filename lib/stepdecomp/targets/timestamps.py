"""Step timing targets that bound the model step, read from the trace timestamps.

``step.duration_us`` is the CPU time of vLLM's ``schedule()`` (docs/measurement.md §1), not the
model step. Each engine step n runs, in the synchronous engine loop::

    schedule(n) [CPU]  ->  forward pass (GPU)  ->  update_from_output(n) [CPU]  ->  schedule(n+1)

and the traces time-stamp, on one monotonic clock (docs/measurement.md §2):

* ``step.ts_start_ns`` = S(n): first lines of schedule(n); ``step.ts_end_ns`` = inside
  schedule(n), before the forward pass. Only for sampled steps (~10 %, BATCH_SUMMARY).
* journey SCHEDULED / PREEMPTED with ``scheduler.step`` = n: inside schedule(n), so after
  S(n). journey FIRST_TOKEN / FINISHED with ``scheduler.step`` = n: inside update(n), after
  the forward pass of step n. Journey events exist for every step (not sampled).

Targets, one row per sampled step n (:func:`step_targets`):

* ``step_forward_us`` = (earliest FIRST_TOKEN/FINISHED of step n) − ts_end(n): the forward
  pass plus what the traces cannot separate from it (the tail of schedule() after the summary
  emission, input preparation, sampling, the head of update() before its first event). NaN
  when step n produced no such event. FINISHED with ``finish.status`` = aborted is excluded:
  an abort is processed when the client goes away, not after a forward pass, so its time
  stamp says nothing about the forward.
* ``step_period_us`` = S(n+1) − S(n), the iteration time. Exact where step n+1 is sampled.
  Otherwise bounded: hi = (earliest SCHEDULED/PREEMPTED of step n+1) − S(n) (those events
  happen inside schedule(n+1), after S(n+1)); lo = max(ts_end(n), latest FIRST_TOKEN/FINISHED
  of step n) − S(n) (update(n) precedes schedule(n+1) in the synchronous loop; ts_end(n) is
  always a lower bound). See :func:`step_targets` for the estimator and its bias.
* ``step_period_avg_us`` = (S(m) − S(n)) / (m − n) for consecutive sampled steps n < m: the
  mean period over the unsampled steps in between, a coarse target available for every
  sampled step but the last of each experiment.

Async scheduling (vLLM's batch queue): schedule(n+1) may run while step n is on the GPU, so
update(n) can come after S(n+1) and the update-based "lower bound" exceeds the upper one.
That is detected (lo > hi, or lo > the exact period) and flagged ``async_overlap``; the
update-based bound is then dropped and only ts_end(n) − S(n) bounds the period from below.

Everything is vectorised over rows (group-by aggregates and index look-ups, no Python loop
over steps); memory is proportional to the number of steps and journey events.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core import columns
from ..core.columns import EXP
from . import engineloop
from .stamps import NS_PER_S, TS_NS, TS_S, journey_ts_ns_where_known
from ..traces import otlp

# --------------------------------------------------------------------------- constants

STEP_ID = columns.STEP_ID
TS_START = "step.ts_start_ns"
TS_END = "step.ts_end_ns"
JOURNEY_STEP = "scheduler.step"
FINISH_STATUS = "finish.status"

#: Events emitted inside update_from_output(n), after the forward pass of step n.
UPDATE_EVENTS = ("FIRST_TOKEN", "FINISHED")
#: Events emitted inside schedule(n), after its start S(n).
SCHEDULE_EVENTS = ("SCHEDULED", "PREEMPTED")
#: finish.status of a FINISHED event that is not emitted after a forward pass.
ABORTED_STATUS = "aborted"
#: Sampled steps with a measured in-schedule offset needed before it is subtracted from the
#: upper bound; with fewer the estimate is the raw upper bound (source "upper_bound").
MIN_CALIBRATION_STEPS = 5
NS_PER_US = 1_000.0

#: ``step_period_source`` values.
SOURCE_EXACT = "exact"
SOURCE_CALIBRATED = "calibrated"
SOURCE_UPPER = "upper_bound"
SOURCE_NONE = "none"
#: step_forward_us sources: an update-phase event of the step, or the step's period minus
#: its schedule() time and the experiment's median update tail.
SOURCE_EVENT = "event"
SOURCE_FROM_PERIOD = "from_period"

#: The step-time targets the physical mode is run on: the seed's (schedule() CPU time) and
#: the two the timestamps give.
TARGETS = columns.TARGETS

#: ``no_target_reason`` values: why a step has no target at all (its every target is NaN).
#: The step lacks ``step.ts_start_ns`` or ``step.ts_end_ns`` (documented-optional).
NO_TIMESTAMPS = "no step timestamps"
#: The clock stepped back: the next sampled step (by step.id) starts before this one, or
#: this one starts before the previous sampled step (both steps of the pair lose their targets).
CLOCK_BACKWARDS = "clock stepped back"

SYNC_COLUMNS = [
    EXP, STEP_ID, "step_forward_us", "step_forward_source", "step_period_us", "step_period_exact",
    "step_period_lo_us", "step_period_hi_us", "step_period_source", "step_period_offset_us",
    "async_overlap", "timeline_inconsistent", "step_period_avg_us", "no_target_reason",
]
#: Per step: the engine loop its experiment ran (detected from the traces, or given), how
#: that was decided, and whether the GPU waited for the CPU before its batch (async only;
#: <NA> where the traces cannot tell). Per experiment (repeated on its rows): the ordered
#: pairs the detection rests on.
LOOP_COLUMNS = ["engine_loop", "engine_loop_source", "gpu_waited_for_cpu", "loop_async_pairs",
                "loop_ordered_pairs"]
TARGET_COLUMNS = [*SYNC_COLUMNS, *LOOP_COLUMNS]
#: Columns of the targets that describe the experiment, not the step: not attached to steps.
EXPERIMENT_LEVEL_COLUMNS = ["engine_loop_source", "loop_async_pairs", "loop_ordered_pairs"]
#: engine_loop_source when the report's parameter names the loop instead of the traces.
LOOP_FROM_PARAMETER = "parameter"
#: The async estimators' sources (engineloop.py).
ASYNC_FORWARD_SOURCES = (engineloop.SOURCE_ADJACENT, engineloop.SOURCE_SPAN)
#: Every target column (µs): NaN or >= 0, never negative.
TARGET_US_COLUMNS = ["step_forward_us", "step_period_us", "step_period_lo_us",
                     "step_period_hi_us", "step_period_avg_us"]


# --------------------------------------------------------------------------- journeys

def journey_ts_ns(journeys: pd.DataFrame) -> np.ndarray:
    """Monotonic time stamp of each journey event in int64 ns.

    ``ts.monotonic_ns`` where present (nullable Int64, newer traces), else
    round(``ts.monotonic`` · 1e9) (float seconds, same clock; rounded to the nearest ns, not
    truncated: 2.000000001 s is stored as 2.0000000009999998 and must give 2000000001).
    The only place this fallback lives. A row with neither is an error, not a guess (the
    targets leave such events out instead: :func:`journey_ts_ns_where_known`). The
    float cannot carry ns at large clock values (at 1.7e9 s its spacing is ~240 ns): the
    fallback is exact only to that spacing.
    """
    out, known = journey_ts_ns_where_known(journeys)
    if not known.all():
        missing = int((~known).sum())
        if TS_S not in journeys:
            raise KeyError(f"{missing} journey event(s) lack {TS_NS!r} and the table "
                           f"has no {TS_S!r} column to fall back on")
        raise ValueError(f"{missing} journey event(s) have neither {TS_NS!r} nor {TS_S!r}")
    return out


def untimed_journey_events(journeys: pd.DataFrame) -> pd.Series:
    """Per experiment_id: journey events with neither ``ts.monotonic_ns`` nor
    ``ts.monotonic`` (left out of every target)."""
    if not len(journeys) or EXP not in journeys:
        return pd.Series(dtype=np.int64, name="journey_events_without_ts")
    _, known = journey_ts_ns_where_known(journeys)
    return (pd.Series(~known, index=journeys.index).groupby(journeys[EXP].astype(str).to_numpy())
            .sum().astype(np.int64).rename("journey_events_without_ts"))


def journey_step_times(journeys: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Per (experiment_id, scheduler.step): the update-phase event times and the first
    schedule-phase event time, in ns.

    Returns ``update`` (columns ``first_ns``, ``last_ns``: earliest and latest FIRST_TOKEN /
    non-aborted FINISHED) and ``schedule`` (earliest SCHEDULED / PREEMPTED), both indexed by
    (experiment_id, step). The event name may carry the ``journey.`` prefix or not. Events
    without ``scheduler.step`` cannot be placed on a step, and events without a time stamp
    (:func:`journey_ts_ns_where_known`) cannot time it: both are left out.
    """
    if not len(journeys) or "event" not in journeys:
        empty = pd.MultiIndex.from_arrays([np.array([], dtype=object), np.array([], dtype=np.int64)],
                                          names=[EXP, "step"])
        return (pd.DataFrame({"first_ns": np.array([], np.int64), "last_ns": np.array([], np.int64)},
                             index=empty), pd.Series(np.array([], np.int64), index=empty))
    event = journeys["event"]
    is_upd = event.isin(_with_prefix(UPDATE_EVENTS)).to_numpy(dtype=bool, na_value=False)
    is_sch = event.isin(_with_prefix(SCHEDULE_EVENTS)).to_numpy(dtype=bool, na_value=False)
    finished = event.isin(_with_prefix(("FINISHED",))).to_numpy(dtype=bool, na_value=False)
    if finished.any():
        if FINISH_STATUS not in journeys:
            raise KeyError(f"FINISHED events without a {FINISH_STATUS!r} column: aborted "
                           f"requests cannot be told apart")
        aborted = (journeys[FINISH_STATUS] == ABORTED_STATUS).to_numpy(dtype=bool, na_value=False)
        is_upd = is_upd & ~aborted
    step = pd.array(journeys[JOURNEY_STEP], dtype="Int64")
    ts, timed = journey_ts_ns_where_known(journeys)
    keep = (is_upd | is_sch) & ~np.asarray(step.isna(), dtype=bool) & timed
    # group on integer experiment codes (grouping millions of strings is the slow part)
    codes, names = pd.factorize(journeys.loc[keep, EXP])
    frame = pd.DataFrame({"code": codes, "step": step[keep].to_numpy(dtype=np.int64),
                          "ts": ts[keep], "upd": is_upd[keep]})
    upd = frame[frame["upd"]].groupby(["code", "step"])["ts"].agg(first_ns="min", last_ns="max")
    sch = frame[~frame["upd"]].groupby(["code", "step"])["ts"].min()
    return _by_name(upd, names), _by_name(sch, names)


def _with_prefix(events: tuple[str, ...]) -> list[str]:
    """The event names with and without the ``journey.`` prefix."""
    return [*events, *(otlp.JOURNEY_PREFIX + e for e in events)]


def _by_name(table: pd.DataFrame | pd.Series, names: object) -> pd.DataFrame | pd.Series:
    """Replace the integer experiment code of a (code, step) index by the experiment id."""
    labels = np.asarray(names, dtype=object)[table.index.get_level_values(0).to_numpy()]
    table.index = pd.MultiIndex.from_arrays([labels, table.index.get_level_values(1)],
                                            names=[EXP, "step"])
    return table


def _lookup(table: pd.DataFrame | pd.Series, exp: np.ndarray, step: np.ndarray,
            column: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """int64 values of ``table`` at keys (exp, step) and a found-mask (no float round trip,
    so ns stamps keep their precision)."""
    idx = table.index.get_indexer(pd.MultiIndex.from_arrays([exp, step]))
    values = (table[column] if column else table).to_numpy(dtype=np.int64)
    found = idx >= 0
    return np.where(found, values[np.where(found, idx, 0)] if len(values) else 0, 0), found


def _us(delta_ns: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.where(valid, delta_ns.astype(np.float64) / NS_PER_US, np.nan)


# --------------------------------------------------------------------------- steps

def _int_column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame:
        raise KeyError(f"steps table lacks column {name!r}")
    col = pd.array(frame[name], dtype="Int64")
    if col.isna().any():
        raise ValueError(f"steps column {name!r} has {int(col.isna().sum())} missing value(s)")
    return col.to_numpy(dtype=np.int64)


def _optional_int_column(frame: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(int64 values, 0 where missing; a mask of the present ones) of a documented-optional
    column; an absent column is missing everywhere."""
    if name not in frame:
        return np.zeros(len(frame), dtype=np.int64), np.zeros(len(frame), dtype=bool)
    col = pd.array(frame[name], dtype="Int64")
    return col.to_numpy(dtype=np.int64, na_value=0), ~np.asarray(col.isna(), dtype=bool)


def _step_arrays(steps: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                np.ndarray, np.ndarray]:
    """experiment ids, their integer codes, step ids, ts_start and ts_end (int64 ns, 0 where
    missing) and a mask of the steps that carry both time stamps."""
    if EXP not in steps:
        raise KeyError(f"steps table lacks column {EXP!r}")
    exp = steps[EXP].astype(str).to_numpy()
    codes, _ = pd.factorize(exp, sort=True)
    sid = _int_column(steps, STEP_ID)
    dup = pd.MultiIndex.from_arrays([codes, sid]).duplicated()
    if dup.any():
        first = int(np.flatnonzero(dup)[0])
        raise ValueError(f"experiment {exp[first]}: {int(dup.sum())} duplicate step.id row(s) "
                         f"among {len(sid)} steps, e.g. step.id {sid[first]}")
    start, has_start = _optional_int_column(steps, TS_START)
    end, has_end = _optional_int_column(steps, TS_END)
    return exp, codes, sid, start, end, has_start & has_end


def _next_sampled(codes: np.ndarray, sid: np.ndarray, start: np.ndarray,
                  timed: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each sampled step: whether a later sampled step of the same experiment exists, and
    that step's id and ts_start (sorted by experiment, then step id), and whether a previous
    one exists that starts after it (the clock stepped back between them). Only ``timed``
    steps (default: all) take part; the others get False and zeros."""
    n = len(sid)
    timed = np.ones(n, dtype=bool) if timed is None else timed
    order = np.lexsort((sid, codes))
    order = order[timed[order]]
    has = np.zeros(n, dtype=bool)
    nxt_sid = np.zeros(n, dtype=np.int64)
    nxt_start = np.zeros(n, dtype=np.int64)
    prev_later = np.zeros(n, dtype=bool)
    if len(order) > 1:
        same = codes[order[1:]] == codes[order[:-1]]
        has[order[:-1]] = same
        nxt_sid[order[:-1]] = sid[order[1:]]
        nxt_start[order[:-1]] = start[order[1:]]
        prev_later[order[1:]] = same & (start[order[:-1]] > start[order[1:]])
    return has, nxt_sid, nxt_start, prev_later


def schedule_offset_ns(codes: np.ndarray, offset_ns: np.ndarray,
                       valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the median over its experiment's calibration steps of the in-schedule offset
    (first SCHEDULED/PREEMPTED of a sampled step m − S(m), measured where both are known),
    and how many steps that median rests on."""
    s = pd.Series(offset_ns[valid].astype(np.float64)).groupby(codes[valid]).agg(["median", "size"])
    idx = s.index.get_indexer(codes)
    found = idx >= 0
    med = np.where(found, s["median"].to_numpy()[np.where(found, idx, 0)] if len(s) else 0.0, np.nan)
    size = np.where(found, s["size"].to_numpy()[np.where(found, idx, 0)] if len(s) else 0, 0)
    return med, size


def sync_step_targets(steps: pd.DataFrame, journeys: pd.DataFrame,
                      min_calibration_steps: int = MIN_CALIBRATION_STEPS) -> pd.DataFrame:
    """The targets under vLLM's synchronous engine loop, one row per sampled step (same
    index as ``steps``): the ``TARGET_COLUMNS`` but the engine-loop ones.

    Period estimator where step n+1 is not sampled but bounded (hi known):
    ``step_period_us`` = clip(hi − o, lo, hi), o = the experiment's median in-schedule offset
    (first SCHEDULED/PREEMPTED of a sampled step m − S(m); needs ``min_calibration_steps``
    such steps in the experiment, else o = 0 and the estimate is the raw upper bound, biased high by the offset). The truth
    is hi − offset(n+1), so the error is offset(n+1) − o: zero-median when unsampled steps
    with a schedule-phase event have the offsets of sampled ones (both sets are selected by
    the same condition: the step admitted or preempted a request). The bound width hi − lo
    is kept for every bounded step. Where hi is unknown the period is NaN even when lo is
    known: after an idle engine (no request in flight) the next schedule() can come
    arbitrarily late, so a lower bound alone estimates nothing.

    With async scheduling ``step_forward_us`` also holds the wait for step n−1 still on the
    GPU when step n was scheduled (update(n) comes after both): it bounds the forward from
    above there, and is exact only in the synchronous loop.

    Forward estimator where step n emitted no update-phase event but has a period estimate
    (``step_forward_source`` = from_period): period − (ts_end(n) − S(n)) − u, u = the
    experiment's median update tail S(n+1) − first update event(n), measured on steps where
    both are known (at least ``min_calibration_steps``). It adds the period estimate's error
    and u(n) − u, both a fraction of the update phase, which is tens of µs against a forward
    pass of ms; rows the period does not bound stay NaN.

    ``timeline_inconsistent`` flags rows where the stamps contradict the loop order (a
    first update event not after ts_end(n), ts_end(n) < S(n), or S(n+1) / hi before
    ts_end(n)); the affected target is NaN there, never negative.

    Steps without ``step.ts_start_ns`` / ``step.ts_end_ns`` (documented-optional) get no
    target (``no_target_reason`` = NO_TIMESTAMPS) and the timed steps around them are paired
    with the next timed one. Where the clock steps back (a sampled step starting before the
    previous sampled step of its experiment, by step.id), both steps of the pair get no
    target (CLOCK_BACKWARDS). Journey events without a time stamp are left out.
    """
    exp, codes, sid, start, end, timed = _step_arrays(steps)
    upd, sch = journey_step_times(journeys)
    first_upd, has_upd = _lookup(upd, exp, sid, "first_ns")
    last_upd, _ = _lookup(upd, exp, sid, "last_ns")
    own_sch, has_own = _lookup(sch, exp, sid)
    next_sch, has_hi = _lookup(sch, exp, sid + 1)
    has_next, next_sid, next_start, after_later = _next_sampled(codes, sid, start, timed)
    backwards = (has_next & (next_start < start)) | after_later
    usable = timed & ~backwards            # steps that get targets at all
    has_upd &= usable
    has_own &= usable
    has_hi &= usable
    has_next &= usable

    fwd_ns = first_upd - end
    fwd_ok = has_upd & (fwd_ns > 0)
    lo_trivial = end - start
    lo_ok = usable & (lo_trivial >= 0)
    is_exact = has_next & (next_sid == sid + 1)
    exact_ns, hi_ns, lo_upd = next_start - start, next_sch - start, last_upd - start
    exact_ok = is_exact & lo_ok & (exact_ns >= lo_trivial)
    hi_ok = has_hi & lo_ok & (hi_ns >= lo_trivial)
    ref_ns = np.where(exact_ok, exact_ns, hi_ns)
    overlap = has_upd & (exact_ok | hi_ok) & (lo_upd > ref_ns)
    lo_ns = np.where(has_upd & ~overlap, np.maximum(lo_trivial, lo_upd), lo_trivial)
    inconsistent = usable & ((has_upd & ~fwd_ok) | ~lo_ok | (is_exact & ~exact_ok)
                             | (has_hi & ~hi_ok))

    offset_ns = own_sch - start
    off_med, n_cal = schedule_offset_ns(codes, offset_ns, has_own & (offset_ns >= 0))
    bounded = hi_ok & ~is_exact
    calibrated = bounded & (n_cal >= min_calibration_steps)
    sub_ns = np.where(calibrated, off_med, 0.0)
    est_ns = np.clip(hi_ns - sub_ns, lo_ns, hi_ns)
    period_ns = np.where(is_exact, exact_ns, est_ns).astype(np.float64)
    source = np.select([exact_ok, calibrated, bounded],
                       [SOURCE_EXACT, SOURCE_CALIBRATED, SOURCE_UPPER], SOURCE_NONE)

    tail_ns = next_start - first_upd
    tail_ok = exact_ok & fwd_ok & (tail_ns >= 0)
    tail_med, n_tail = schedule_offset_ns(codes, tail_ns, tail_ok)
    from_period = ~fwd_ok & ~inconsistent & (exact_ok | bounded) & (n_tail >= min_calibration_steps)
    fwd_est_ns = period_ns - lo_trivial - np.nan_to_num(tail_med)
    from_period &= fwd_est_ns > 0

    out = pd.DataFrame({EXP: exp, STEP_ID: sid}, index=steps.index)
    out["step_forward_us"] = np.where(fwd_ok, fwd_ns / NS_PER_US,
                                      np.where(from_period, fwd_est_ns / NS_PER_US, np.nan))
    out["step_forward_source"] = np.select([fwd_ok, from_period], [SOURCE_EVENT, SOURCE_FROM_PERIOD],
                                           SOURCE_NONE)
    out["step_period_us"] = np.where(exact_ok | bounded, period_ns / NS_PER_US, np.nan)
    out["step_period_exact"] = exact_ok
    out["step_period_lo_us"] = _us(lo_ns, lo_ok)
    out["step_period_hi_us"] = _us(hi_ns, hi_ok)
    out["step_period_source"] = source
    out["step_period_offset_us"] = np.where(calibrated, off_med / NS_PER_US, np.where(bounded, 0.0, np.nan))
    out["async_overlap"] = overlap
    out["timeline_inconsistent"] = inconsistent
    gap = np.where(has_next, next_sid - sid, 1)
    avg_ok = has_next & lo_ok & (next_start - start >= lo_trivial)
    out["step_period_avg_us"] = np.where(avg_ok, (next_start - start) / gap / NS_PER_US, np.nan)
    out["no_target_reason"] = np.select([~timed, backwards], [NO_TIMESTAMPS, CLOCK_BACKWARDS], "")
    return out[SYNC_COLUMNS]


def step_targets(steps: pd.DataFrame, journeys: pd.DataFrame, engine_loop: str | None = None,
                 min_calibration_steps: int = MIN_CALIBRATION_STEPS) -> pd.DataFrame:
    """One row per sampled step (same index as ``steps``): the ``TARGET_COLUMNS``, each
    target measuring the same thing under the engine loop its experiment ran
    (docs/measurement.md §5):

    * ``step_forward_us``: the forward time of batch n. sync: :func:`sync_step_targets`
      (summary emission → the step's first output event). async: engineloop.async_step_times
      (the difference of two readings of consecutive GPU ends, or the mean over a run of
      identical batches); empty where the GPU waited for the CPU before batch n.
    * ``step_period_us``: the loop iteration that waits for batch n. sync: S(n+1) − S(n);
      async: S(n+2) − S(n+1).

    The loop is detected per experiment from the traces (engineloop.detect_engine_loop;
    where they cannot tell, vLLM's default, async, is assumed and said); ``engine_loop``
    ("async" / "sync") overrides the detection for every experiment. Steps whose clock
    stepped back, and steps without their own time stamps, keep no target under either loop.
    """
    out = sync_step_targets(steps, journeys, min_calibration_steps)
    for col in LOOP_COLUMNS:
        out[col] = pd.Series(pd.NA, index=out.index, dtype="object")
    out["gpu_waited_for_cpu"] = pd.array([pd.NA] * len(out), dtype="boolean")
    if not len(out):
        for col in ("engine_loop", "engine_loop_source"):
            out[col] = out[col].astype("str")
        out[["loop_async_pairs", "loop_ordered_pairs"]] = out[
            ["loop_async_pairs", "loop_ordered_pairs"]].astype("Int64")
        return out[TARGET_COLUMNS]
    if engine_loop is not None and engine_loop not in engineloop.ENGINE_LOOPS:
        raise ValueError(f"engine_loop must be one of {engineloop.ENGINE_LOOPS} or None, "
                         f"got {engine_loop!r}")
    exp = out[EXP].astype(str).to_numpy()
    for exp_id, st, jr in engineloop.per_experiment(steps, journeys):
        rows = exp == exp_id
        if not rows.any():
            continue
        readings = engineloop.experiment_readings(st, jr)     # built once per experiment
        row = engineloop.loop_row(readings)
        loop = engine_loop or row["engine_loop"]
        source = LOOP_FROM_PARAMETER if engine_loop else row["engine_loop_source"]
        out.loc[rows, ["engine_loop", "engine_loop_source"]] = [loop, source]
        out.loc[rows, ["loop_async_pairs", "loop_ordered_pairs"]] = [int(row["async_pairs"]),
                                                                      int(row["ordered_pairs"])]
        if loop == engineloop.ASYNC:
            _async_rows(out, rows, readings)
    for col in ("loop_async_pairs", "loop_ordered_pairs"):
        out[col] = pd.array(out[col], dtype="Int64")
    for col in ("engine_loop", "engine_loop_source"):
        out[col] = out[col].astype("str")
    return out[TARGET_COLUMNS]


def _async_rows(out: pd.DataFrame, rows: np.ndarray, readings: engineloop.Readings) -> None:
    """Overwrite the loop-dependent targets of one async experiment's rows in place."""
    sid = out.loc[rows, STEP_ID].to_numpy(dtype=np.int64)
    t = engineloop.async_step_times(readings, sid)
    # a step whose clock stepped back, or without its own time stamps (the GPU wait before
    # it cannot be checked), keeps no target under either loop
    backwards = out.loc[rows, "no_target_reason"].isin([CLOCK_BACKWARDS, NO_TIMESTAMPS]).to_numpy()
    for col in ("step_forward_us", "step_period_us", "step_period_lo_us", "step_period_hi_us"):
        out.loc[rows, col] = np.where(backwards, np.nan, t[col].to_numpy(dtype=np.float64))
    out.loc[rows, "step_forward_source"] = np.where(backwards, SOURCE_NONE,
                                                    t["step_forward_source"].to_numpy())
    out.loc[rows, "step_period_source"] = np.where(backwards, SOURCE_NONE,
                                                   t["step_period_source"].to_numpy())
    out.loc[rows, "step_period_exact"] = t["step_period_exact"].to_numpy() & ~backwards
    out.loc[rows, "step_period_offset_us"] = np.nan
    out.loc[rows, "async_overlap"] = False
    waited = t["gpu_waited_for_cpu"].copy()
    waited[backwards] = pd.NA
    out.loc[rows, "gpu_waited_for_cpu"] = waited.to_numpy()


def coverage_table(targets: pd.DataFrame, journeys: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per experiment: sampled steps and the share of them each target covers.

    Columns: experiment_id, sampled_steps, share_step_forward (share_forward_event of them
    from an update event of the step), share_period_exact,
    share_period_bounded (not exact, upper bound known), share_step_period (any estimate),
    share_step_period_avg, share_async_overlap, share_inconsistent, median_bound_width_us
    (hi − lo over bounded steps), schedule_offset_us (the subtracted median offset),
    steps_without_timestamps and steps_clock_backwards (steps without any target, by
    ``no_target_reason``), journey_events_without_ts (of ``journeys``, when given: left out
    of every target) and na_reason (those counts in words; "" when all are 0); the engine
    loop: engine_loop, engine_loop_source (detected / assumed / parameter), async_pairs and
    ordered_pairs (the detection's evidence), share_forward_adjacent and share_forward_span
    (async sources of step_forward_us), share_gpu_waited (steps whose GPU waited for the CPU:
    no forward target there) and share_gpu_wait_unknown (the traces cannot tell).
    """
    t = targets
    bounded = t["step_period_source"].isin([SOURCE_CALIBRATED, SOURCE_UPPER])
    frame = pd.DataFrame({
        EXP: t[EXP].astype(str),
        "fwd": t["step_forward_us"].notna(),
        "fwd_event": t["step_forward_source"] == SOURCE_EVENT,
        "exact": t["step_period_exact"].astype(bool),
        "bounded": bounded, "period": t["step_period_us"].notna(),
        "avg": t["step_period_avg_us"].notna(), "overlap": t["async_overlap"].astype(bool),
        "bad": t["timeline_inconsistent"].astype(bool),
        "width": (t["step_period_hi_us"] - t["step_period_lo_us"]).where(bounded),
        "offset": t["step_period_offset_us"],
        "untimed": t["no_target_reason"] == NO_TIMESTAMPS,
        "backwards": t["no_target_reason"] == CLOCK_BACKWARDS,
        "adjacent": t["step_forward_source"] == engineloop.SOURCE_ADJACENT,
        "span": t["step_forward_source"] == engineloop.SOURCE_SPAN,
        "waited": t["gpu_waited_for_cpu"].fillna(False).astype(bool),
        "wait_unknown": t["gpu_waited_for_cpu"].isna() & (t["engine_loop"] == engineloop.ASYNC)})
    g = frame.groupby(EXP, sort=True)
    loop = t.assign(**{EXP: t[EXP].astype(str)}).groupby(EXP, sort=True)
    out = pd.DataFrame({
        "sampled_steps": g.size(),
        "share_step_forward": g["fwd"].mean(), "share_forward_event": g["fwd_event"].mean(),
        "share_period_exact": g["exact"].mean(),
        "share_period_bounded": g["bounded"].mean(), "share_step_period": g["period"].mean(),
        "share_step_period_avg": g["avg"].mean(), "share_async_overlap": g["overlap"].mean(),
        "share_inconsistent": g["bad"].mean(), "median_bound_width_us": g["width"].median(),
        "schedule_offset_us": g["offset"].max(),
        "steps_without_timestamps": g["untimed"].sum().astype(np.int64),
        "steps_clock_backwards": g["backwards"].sum().astype(np.int64),
        "engine_loop": loop["engine_loop"].first(),
        "engine_loop_source": loop["engine_loop_source"].first(),
        "async_pairs": loop["loop_async_pairs"].max().astype("Int64"),
        "ordered_pairs": loop["loop_ordered_pairs"].max().astype("Int64"),
        "share_forward_adjacent": g["adjacent"].mean(), "share_forward_span": g["span"].mean(),
        "share_gpu_waited": g["waited"].mean(), "share_gpu_wait_unknown": g["wait_unknown"].mean()})
    untimed = (untimed_journey_events(journeys) if journeys is not None
               else pd.Series(dtype=np.int64))
    out["journey_events_without_ts"] = untimed.reindex(out.index, fill_value=0).astype(np.int64)
    out = out.reset_index()
    out["na_reason"] = [coverage_reason(*r) for r in out[
        ["steps_without_timestamps", "steps_clock_backwards", "journey_events_without_ts"]
    ].itertuples(index=False)]
    return out


def coverage_reason(untimed_steps: int, backwards_steps: int, untimed_events: int) -> str:
    """The coverage counts in words ("" when all are 0)."""
    parts = [f"{untimed_steps} step(s) without {TS_START}/{TS_END}: no target" if untimed_steps else "",
             f"{backwards_steps} step(s) where the {CLOCK_BACKWARDS}: no target"
             if backwards_steps else "",
             f"{untimed_events} journey event(s) without {TS_S}(_ns): left out"
             if untimed_events else ""]
    return "; ".join(p for p in parts if p)


def attach(components: pd.DataFrame, step_targets: pd.DataFrame) -> pd.DataFrame:
    """``components`` with the target columns of :func:`step_targets` joined on
    (experiment_id, step.id); every component row keeps its place, a step without targets
    gets NaN. Raises if the targets hold a key twice."""
    key = [EXP, STEP_ID]
    if step_targets.duplicated(key).any():
        raise ValueError("step targets hold an (experiment_id, step.id) twice")
    extra = [c for c in step_targets.columns
             if c not in key and c not in components and c not in EXPERIMENT_LEVEL_COLUMNS]
    left = components.assign(**{EXP: components[EXP].astype(str)})
    right = step_targets[key + extra].assign(**{EXP: step_targets[EXP].astype(str)})
    out = left.merge(right, on=key, how="left", validate="one_to_one")
    out.index = components.index
    out[EXP] = components[EXP].to_numpy()
    return out
