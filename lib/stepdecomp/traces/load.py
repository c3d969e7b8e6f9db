"""Load ground-truth traces: OTLP JSON lines -> a typed steps table and a journey-event table.

The loader streams ``traces.json`` (or ``.gz``) line by line, keeps every valid
``step.BATCH_SUMMARY`` event as one row of the steps table and every valid ``journey.*``
event as one row of the journeys table, and accounts for everything else, per file:

* lines = parsed_lines + blank_lines + malformed_lines + ignored_lines. Malformed: not JSON
  (truncated, garbage) or JSON that is not an object; ignored: a JSON object that is not an
  OTLP export request (no ``resourceSpans``).
* events (step and journey events, selected by name) = steps + journey_events +
  rejected_events, and rejected_events = rejected_missing + rejected_wrong_type +
  rejected_out_of_range + rejected_inconsistent + rejected_duplicate +
  rejected_conflicting_duplicate + rejected_no_request_id (reasons in
  ``otlp.REJECT_CATEGORIES``; the attribute and the first line of each reason are kept).
  Events of other names are counted in other_events; OTLP containers of the wrong type
  (``resourceSpans: 5``) in structure_errors.
* A truncated or corrupt ``.gz`` is read up to its last decodable byte; unread_bytes counts
  the compressed bytes that could not be decoded, stream_error says what happened.

Nothing is altered to fit: an event is kept exactly as decoded (``otlp.decode_attributes``)
or rejected with a reason. Lines are decoded by msgspec into typed Structs and straight into
columns (``otlp_columns``); a line that path does not take plainly (a value to reject or to
coerce, an odd but valid type) is read by the dict path (``otlp_rows``), which defines what
is accepted, and counted in ParseStats.fallback_lines. Both give the same tables. The rules
that look at more than one value (constants below, with reasons), in the order applied:

* *duplicate*: an event identical in name, request id and every documented attribute to one
  seen before in the same file (a line exported twice) is dropped and counted.
* *out of range*: a step id outside the far-out Tukey fences of the file's step ids, a
  clock reading more than RUN_WINDOW_NS from the median of its column, a step that ends
  before it starts, or a journey ``scheduler.step`` outside the kept steps' id range
  widened by JOURNEY_MARGIN_GAPS sampling gaps and half its span. So memory downstream
  (reconstruct.py allocates by step id) is proportional to the data, never to the largest
  id.
* *inconsistent*: a step whose step.duration_us differs from (ts_end − ts_start) // 1000 of
  its own timestamps by more than DURATION_SLACK_US.
* *out of range* again: a step.duration_us above MAX_STEP_DURATION_US (with its timestamps
  agreeing, or without both timestamps to check it against).
* *conflicting duplicate*: a step whose step.id was kept before in the same file (from an
  earlier line) with different content. The first is kept, every later one rejected and
  counted, and a TraceWarning names the file, the id and both lines. After the load no two
  rows share (experiment_id, step.id).

Optional attributes stay optional: a step without step.ts_start_ns / step.ts_end_ns, or a
journey event without ts.monotonic / ts.monotonic_ns, is kept with those columns missing
(<NA> / NaN); nothing is filled in.

Each experiment's tables are cached as Parquet under ``data/interim/traces/``, keyed by the
source file's size, mtime_ns, ctime_ns, inode and device, the experiment's resolved model,
hf_id, tp and workload, and PARSER_VERSION: a second run does not re-parse the JSON, and any
edit of the file (ctime changes even when the mtime is put back) or of exp-config.yaml /
slugs.yaml invalidates it. ``python -m stepdecomp.traces.load --prune-cache`` (``make clean``)
removes the entries whose trace file no longer exists.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pandas as pd

from ..core import artefacts, tables
from . import otlp
from .experiments import Discovery, Experiment, discover
from ..core.messages import bounded
from .otlp_columns import CHUNK_EVENTS, JOURNEY_KINDS, Columns, TypedLines
from .otlp_rows import IGNORED, REPORT_COLUMNS, FileParser, ParseStats
from ..core.paths import INTERIM_DIR, MODELS_DIR, data_kind, display_path
from .tracecache import PARSER_VERSION  # noqa: F401  (load.PARSER_VERSION: the cache's version)
from .tracecache import cache_dir, cached, from_cache, prune_cache, source_key, store
from .tracefile import iter_lines, show_progress

if TYPE_CHECKING:
    from ..core.artefacts import RunDirs

META_COLUMNS = ["experiment_id", "model", "hf_id", "tp", "workload"]
JOURNEY_BASE_COLUMNS = ["experiment_id", "request_id", "event", "time_ns"]

#: Tukey's far-out fence: a step id beyond Q3 + 3·IQR (or below Q1 - 3·IQR) of the file's
#: step ids is out of range. Sampled step ids are uniform over the run's id range, so the
#: fences lie 1.5 ranges beyond it: no real id is near them, and one corrupt id cannot move
#: them (quartiles ignore up to a quarter of the values).
ID_FENCE_IQRS = 3.0
#: Memory guard on the id range kept per file: at most this many ids per row (event) of the
#: file, centred on the median id. 4096 allows step sampling rates down to ~0.05 %; it only
#: binds when a quarter or more of the ids are corrupt, or a file has a handful of rows.
MAX_IDS_PER_ROW = 4096
#: Journey ``scheduler.step`` values lie in the steps' id range ±1, but the first and last
#: executed steps need not be sampled: the range is widened by this many mean sampling gaps
#: (at a 10 % sampling rate the chance that 20 gaps are not enough is 0.9**200 ~ 1e-9) ...
JOURNEY_MARGIN_GAPS = 20
#: ... plus this share of the steps' id span on each side, so that losing up to a third of a
#: file's steps at either end (a damaged head or tail) does not reject the journeys that
#: survived. Memory stays within twice the steps' span.
JOURNEY_MARGIN_SPAN_SHARE = 0.5
#: Below this many kept steps the journeys' own fences are used instead.
MIN_STEPS_FOR_JOURNEY_RANGE = 10
#: A clock reading (step.ts_*_ns, ts.monotonic[_ns], timeUnixNano) more than this from the
#: median of its column in the file is outside the run: runs last minutes to hours, a week
#: leaves room for the longest while catching zeros, 2**63-1 and unit mix-ups (s vs ns).
RUN_WINDOW_NS = 7 * 24 * 3600 * 10**9
#: step.duration_us is (ts_end − ts_start) // 1000 of the same event (docs/measurement.md §1):
#: a difference of more than this many µs (1: an exporter that rounds instead of
#: truncating) means one of the three values is corrupt, and the step is rejected.
DURATION_SLACK_US = 1
#: Longest step.duration_us kept: one hour. One schedule() call takes µs to ms; a server
#: stalled for an hour in it is not serving, and a larger value (2**62) is a corrupt one that
#: would bend every statistic over durations. The bound is what checks a step that lacks a
#: timestamp (its duration cannot be compared with them).
MAX_STEP_DURATION_US = 3600 * 10**6
#: Reasons named in one TraceWarning at most (the parse report lists them all).
MAX_REASONS_SHOWN = 3


class TraceWarning(UserWarning):
    """Something in a trace file was skipped; the message says what and where."""


@dataclass
class Dataset:
    """Everything loaded from one ground-truth root."""

    root: Path
    experiments: list[Experiment]
    steps: pd.DataFrame
    journeys: pd.DataFrame
    parse_report: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: one row per (file, reason): what was skipped and why (see skipped_records)
    skipped_records: pd.DataFrame = field(default_factory=pd.DataFrame)


# --------------------------------------------------------------------------- parsing

def _take_flushed(fast: TypedLines, parser: FileParser) -> None:
    """Count the lines the typed decoder turned into columns; read the others here."""
    done, st = fast.flush(), parser.stats
    st.lines += done.lines
    st.parsed_lines += done.lines
    st.events += done.events
    st.other_events += done.other_events
    for lineno, line in done.bad_lines:
        parser.fallback(lineno, line)


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a file is parsed. The parse allocates
    millions of short-lived, acyclic objects (decoded lines, value lists); CPython's
    collector, triggered by allocation counts, would traverse them again and again (about
    a third of the parse time on the bundled files). Reference counting still frees them;
    collection resumes, as it was, when the parse ends."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_trace_file(path: Path, experiment_id: str = "", typed: bool = True,
                     progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, ParseStats]:
    """Stream one traces.json(.gz): the steps table (otlp.STEP_ATTRS columns), the journeys
    table (request_id, event, time_ns, otlp.JOURNEY_ATTRS) and what was skipped.

    Never raises on content: every line and event is counted as described in the module
    docstring, duplicates and out-of-range values included. ``typed``: lines are decoded
    by msgspec into columns (otlp_columns) and only those it does not take plainly are read
    by the dict path (FileParser); False reads every line with the dict path (the
    reference the typed path is tested against). Both give the same tables and counts."""
    with _cyclic_gc_paused():
        return _parse(path, experiment_id, typed, progress)


def _parse(path: Path, experiment_id: str, typed: bool,
           progress: bool) -> tuple[pd.DataFrame, pd.DataFrame, ParseStats]:
    stats = ParseStats(experiment_id=experiment_id, file=display_path(path))
    parser = FileParser(stats)
    fast = TypedLines() if typed else None
    for lineno, line in enumerate(iter_lines(path, stats, progress), start=1):
        if fast is None or not line or line.isspace():
            parser.line(lineno, line)
            continue
        request = fast.decode(line)
        if request is None:
            parser.fallback(lineno, line)
            continue
        fast.add(lineno, line, request)
        if fast.pending_events >= CHUNK_EVENTS:
            _take_flushed(fast, parser)
    if fast is not None:
        _take_flushed(fast, parser)
    slow_steps = Columns.from_rows(parser.steps.rows, parser.steps.lines, otlp.STEP_ATTRS)
    slow_journeys = Columns.from_rows(parser.journeys.rows, parser.journeys.lines, JOURNEY_KINDS)
    steps = _frame(Columns.concat(otlp.STEP_ATTRS, [*(fast.steps if fast else []), slow_steps]),
                   stats, "step.BATCH_SUMMARY")
    journeys = _frame(Columns.concat(JOURNEY_KINDS,
                                     [*(fast.journeys if fast else []), slow_journeys]),
                      stats, "journey event")
    steps = _check_steps(steps, stats)
    journeys = _check_journeys(journeys, steps, stats)
    stats.steps, stats.journey_events = len(steps), len(journeys)
    return _finish_ints(steps.drop(columns="_line")), _finish_ints(journeys.drop(columns="_line")), stats


# --------------------------------------------------------------------------- tables

#: Int columns that stay nullable Int64 even when complete (older traces lack them).
ALWAYS_NULLABLE = frozenset({"ts.monotonic_ns"})


def _table(cols: Columns) -> pd.DataFrame:
    """Columns -> one typed column per key, in order (an absent value is <NA>): int64, or
    nullable Int64 when some are missing (or the key is ALWAYS_NULLABLE), float64, string.

    Ints come as int64 arrays, never through float64 (step.ts_*_ns values near 1.7e18 are
    above 2**53 and would lose their last digits); ``DataFrame.from_records`` would turn an
    int column with a missing value into float64."""
    data: dict[str, Any] = {}
    for key, kind in cols.kinds.items():
        values, missing = cols.values[key], cols.missing[key]
        if kind == "int":
            nullable = key in ALWAYS_NULLABLE or missing.any()
            data[key] = pd.arrays.IntegerArray(values, missing) if nullable else values
        elif kind == "float":
            data[key] = values
        else:
            data[key] = pd.array(values, dtype="string")
    return pd.DataFrame(data, index=pd.RangeIndex(len(cols)))


def _columns(rows: list[dict], kinds: dict[str, str]) -> pd.DataFrame:
    """Rows of decoded values -> the typed table of _table."""
    return _table(Columns.from_rows(rows, [0] * len(rows), kinds))


def _drop(frame: pd.DataFrame, bad: np.ndarray, stats: ParseStats, reason: str) -> pd.DataFrame:
    """Rows of ``frame`` without the ``bad`` ones, which are counted under ``reason``."""
    if bad.any():
        lines = frame["_line"].to_numpy()[bad]
        stats.reject(reason, int(lines.min()), int(bad.sum()))
        return frame[~bad].reset_index(drop=True)
    return frame


def _frame(cols: Columns, stats: ParseStats, what: str) -> pd.DataFrame:
    """Typed table of one event kind, duplicates dropped and counted; ``_line`` column kept
    for the range checks."""
    frame = _table(cols)
    same = [c for c in frame.columns if c != "time_ns"]    # name, request id, attributes
    dup = frame.duplicated(subset=same, keep="first").to_numpy() if len(frame) else np.zeros(0, bool)
    frame["_line"] = cols.line
    return _drop(frame, dup, stats, f"{otlp.DUPLICATE}: {what}")


def _finish_ints(frame: pd.DataFrame) -> pd.DataFrame:
    """Nullable Int64 columns left without a missing value (their holes were in dropped
    rows) become plain int64, as if parsed complete; ALWAYS_NULLABLE ones stay Int64."""
    for key in frame.columns:
        col = frame[key]
        if (isinstance(col.dtype, pd.Int64Dtype) and key not in ALWAYS_NULLABLE
                and not col.isna().any()):
            frame[key] = col.to_numpy(dtype=np.int64)
    return frame


# --------------------------------------------------------------------------- ranges

def id_range(ids: np.ndarray, rows: int) -> tuple[float, float]:
    """[low, high] of plausible step ids: Tukey's far-out fences (ID_FENCE_IQRS) of ``ids``,
    narrowed to MAX_IDS_PER_ROW · rows ids around the median when wider."""
    q1, med, q3 = np.quantile(ids.astype(np.float64), [0.25, 0.5, 0.75])
    spread = max(q3 - q1, 1.0)
    lo, hi = q1 - ID_FENCE_IQRS * spread, q3 + ID_FENCE_IQRS * spread
    cap = float(MAX_IDS_PER_ROW) * max(rows, 1)
    if hi - lo > cap:
        lo, hi = med - cap / 2, med + cap / 2
    return lo, hi


def _outside_ids(values: pd.Series, lo: float, hi: float) -> np.ndarray:
    v = values.to_numpy(dtype=np.float64, na_value=np.nan)
    return (v < lo) | (v > hi)


def _outside_run(values: pd.Series, window: float) -> np.ndarray:
    """Clock readings farther than ``window`` from their column's median (exact for int64)."""
    present = values.notna().to_numpy()
    if not present.any():
        return np.zeros(len(values), dtype=bool)
    if values.dtype.kind == "f":
        v = values.to_numpy(dtype=np.float64)
        return present & (np.abs(v - np.median(v[present])) > window)
    v = values.to_numpy(dtype=np.int64, na_value=0)
    ok = v[present]
    med = int(np.partition(ok, len(ok) // 2)[len(ok) // 2])
    return present & (np.abs(v - med) > window)     # v, med in [0, 2**63): no overflow


def duration_mismatch(duration_us: pd.Series, start_ns: pd.Series,
                      end_ns: pd.Series) -> np.ndarray:
    """True where both timestamps are present and step.duration_us differs from
    (end − start) // 1000 by more than DURATION_SLACK_US. Exact in int64: both readings lie
    in [0, 2**63) and end >= start (checked before), so end − start cannot overflow."""
    timed = (start_ns.notna() & end_ns.notna()).to_numpy()
    s = start_ns.to_numpy(dtype=np.int64, na_value=0)
    e = end_ns.to_numpy(dtype=np.int64, na_value=0)
    d = duration_us.to_numpy(dtype=np.int64)
    return timed & (np.abs(d - (e - s) // 1000) > DURATION_SLACK_US)


def _conflicts(steps: pd.DataFrame, stats: ParseStats) -> pd.DataFrame:
    """Steps whose id was kept before from an earlier line (different content: identical
    events were dropped as duplicates) are rejected; the first conflict's id and both lines
    are kept for the warning."""
    again = steps.duplicated(subset=["step.id"], keep="first").to_numpy()
    if again.any():
        lines = steps["_line"].to_numpy()
        i = int(np.flatnonzero(again)[np.argmin(lines[again])])
        sid = steps["step.id"].iloc[i]
        first = int(lines[(steps["step.id"] == sid).to_numpy()].min())
        stats.first_conflict = [int(sid), first, int(lines[i])]
    return _drop(steps, again, stats, f"{otlp.CONFLICTING_DUPLICATE}: step.id")


def _check_steps(steps: pd.DataFrame, stats: ParseStats) -> pd.DataFrame:
    """Drop (and count) the steps whose ids, clock readings or durations cannot belong to
    the run, then the conflicting duplicates; the rules are the constants at the top of the
    module."""
    bad = otlp.OUT_OF_RANGE
    if len(steps):
        lo, hi = id_range(steps["step.id"].to_numpy(), len(steps))
        steps = _drop(steps, _outside_ids(steps["step.id"], lo, hi), stats, f"{bad}: step.id")
    for col in ("step.ts_start_ns", "step.ts_end_ns"):
        steps = _drop(steps, _outside_run(steps[col], RUN_WINDOW_NS), stats, f"{bad}: {col}")
    start, end = steps["step.ts_start_ns"], steps["step.ts_end_ns"]
    steps = _drop(steps, (end < start).fillna(False).to_numpy(dtype=bool), stats,
                  f"{bad}: step.ts_end_ns")
    steps = _drop(steps, duration_mismatch(steps["step.duration_us"], steps["step.ts_start_ns"],
                                           steps["step.ts_end_ns"]),
                  stats, f"{otlp.INCONSISTENT}: step.duration_us")
    steps = _drop(steps, steps["step.duration_us"].to_numpy(dtype=np.int64) > MAX_STEP_DURATION_US,
                  stats, f"{bad}: step.duration_us")
    return _conflicts(steps, stats)


def _check_journeys(journeys: pd.DataFrame, steps: pd.DataFrame,
                    stats: ParseStats) -> pd.DataFrame:
    """Drop (and count as out of range) the journey events whose step or clock readings
    cannot belong to the run (steps: the file's kept steps)."""
    bad = otlp.OUT_OF_RANGE
    if not len(journeys):
        return journeys
    ids = steps["step.id"].to_numpy()
    if len(ids) >= MIN_STEPS_FOR_JOURNEY_RANGE:
        span = float(ids.max() - ids.min())
        margin = JOURNEY_MARGIN_GAPS * span / (len(ids) - 1) + JOURNEY_MARGIN_SPAN_SHARE * span + 2
        lo, hi = ids.min() - margin, ids.max() + margin
    else:
        lo, hi = id_range(journeys["scheduler.step"].to_numpy(), len(journeys))
    journeys = _drop(journeys, _outside_ids(journeys["scheduler.step"], lo, hi), stats,
                     f"{bad}: scheduler.step")
    for col, window in (("ts.monotonic", RUN_WINDOW_NS / 1e9), ("ts.monotonic_ns", RUN_WINDOW_NS),
                        ("time_ns", RUN_WINDOW_NS)):
        journeys = _drop(journeys, _outside_run(journeys[col], window), stats, f"{bad}: {col}")
    return journeys


def steps_frame(steps: pd.DataFrame | list[dict], exp: Experiment) -> pd.DataFrame:
    """The steps table of parse_trace_file (or rows of decoded BATCH_SUMMARY attributes) with
    the experiment's META_COLUMNS in front."""
    if not isinstance(steps, pd.DataFrame):
        steps = _finish_ints(_columns(steps, otlp.STEP_ATTRS))
    meta = pd.DataFrame({"experiment_id": exp.experiment_id, "model": exp.model,
                         "hf_id": exp.hf_id, "tp": exp.tp, "workload": exp.workload},
                        index=steps.index)
    return pd.concat([meta, steps], axis=1)


def journeys_frame(journeys: pd.DataFrame | list[dict], exp: Experiment) -> pd.DataFrame:
    """The journeys table of parse_trace_file (or rows of decoded journey events) with
    experiment_id in front: experiment_id, request_id, event, time_ns, otlp.JOURNEY_ATTRS
    (``ts.monotonic_ns`` nullable Int64: older traces lack it)."""
    if not isinstance(journeys, pd.DataFrame):
        journeys = _finish_ints(_columns(journeys, JOURNEY_KINDS))
    journeys = journeys.copy()
    journeys.insert(0, "experiment_id", exp.experiment_id)
    return journeys


def load_experiment(exp: Experiment, cache_root: Path = INTERIM_DIR, use_cache: bool = True,
                    progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, ParseStats]:
    """Steps, journeys and parse stats of one experiment, from the Parquet cache when its key
    (see tracecache.source_key) still matches, else parsed (and cached). ``progress``: a bar over the
    bytes of a large file (see tracefile.show_progress)."""
    src = exp.trace_path
    if src is None:
        raise FileNotFoundError(f"{display_path(exp.path)}: needs exactly one of traces.json "
                                f"and traces.json.gz")
    cdir, key = cache_dir(exp, cache_root), source_key(exp, src)
    if use_cache and (hit := from_cache(cdir, key)) is not None:
        return hit
    steps, journeys, stats = parse_trace_file(src, exp.experiment_id, progress=progress)
    steps, journeys = steps_frame(steps, exp), journeys_frame(journeys, exp)
    if use_cache and not stats.read_failed:     # a read error is not the file's content
        store(cdir, key, steps, journeys, stats)
    return steps, journeys, stats


# --------------------------------------------------------------------------- dataset

def _first(reasons: dict[str, list[int]]) -> str:
    """The reasons by first line, at most MAX_REASONS_SHOWN of them named."""
    items = sorted(reasons.items(), key=lambda kv: (kv[1][1], kv[0]))
    text = "; ".join(f"{reason} ×{n} (first at line {line})"
                     for reason, (n, line) in items[:MAX_REASONS_SHOWN])
    more = len(items) - MAX_REASONS_SHOWN
    return text + (f"; and {more} more reason(s) (see the parse report)" if more > 0 else "")


def _warn(stats: ParseStats) -> None:
    """One TraceWarning per kind of problem in a file, naming it and each reason's first line."""
    def warn(msg: str) -> None:
        warnings.warn(bounded(f"{stats.file}: {msg}"), TraceWarning, stacklevel=4)

    if stats.stream_error:
        lost = f"; {stats.unread_bytes:,} compressed byte(s) unread" if stats.unread_bytes else ""
        warn(f"{stats.stream_error}{lost}")
    if stats.malformed_lines:
        warn(f"skipped {stats.malformed_lines} malformed line(s) "
             f"(first at line {stats.first_malformed_line})")
    if stats.ignored_lines:
        warn(f"ignored {stats.ignored_lines} line(s) holding a JSON object that is not an OTLP "
             f"export request (no resourceSpans; first at line {stats.line_reasons[IGNORED][1]})")
    structure = {r.removeprefix("structure: "): v for r, v in stats.line_reasons.items()
                 if r.startswith("structure: ")}
    if structure:
        warn(f"skipped {stats.structure_errors} OTLP container(s) of the wrong type: "
             f"{_first(structure)}")
    if stats.rejected_events:
        warn(f"rejected {stats.rejected_events} of {stats.events} step/journey event(s): "
             f"{_first(stats.event_reasons)}")
    if stats.first_conflict:
        sid, kept, dropped = stats.first_conflict
        warn(f"step.id {sid} at line {dropped} has different content from the same id at line "
             f"{kept}: the first is kept ({stats.rejected_conflicting_duplicate} conflicting "
             f"duplicate(s) rejected)")
    if stats.steps == 0:
        warn("no step.BATCH_SUMMARY events; the experiment contributes no steps")


def skipped_records(stats: list[ParseStats]) -> pd.DataFrame:
    """What was skipped and why, one row per (file, reason): experiment_id, file, kind
    (line / container / event / bytes), reason, count, first_line (NaN for bytes)."""
    rows = []
    for st in stats:
        base = {"experiment_id": st.experiment_id, "file": st.file}
        for reason, (n, line) in st.line_reasons.items():
            kind = "container" if reason.startswith("structure") else "line"
            rows.append({**base, "kind": kind, "reason": reason, "count": n, "first_line": line})
        for reason, (n, line) in st.event_reasons.items():
            rows.append({**base, "kind": "event", "reason": reason, "count": n, "first_line": line})
        if st.stream_error:
            rows.append({**base, "kind": "bytes", "reason": st.stream_error,
                         "count": st.unread_bytes, "first_line": None})
    cols = ["experiment_id", "file", "kind", "reason", "count", "first_line"]
    out = pd.DataFrame(rows, columns=cols)
    out["first_line"] = out["first_line"].astype("Int64")
    return out.astype({"count": np.int64})


def _files_bar(todo: list[Experiment]) -> Any:
    """A bar over the files to parse when there are several and they are long to read."""
    try:
        size = sum(e.trace_path.stat().st_size for e in todo if e.trace_path is not None)
    except OSError:
        return None
    if len(todo) < 2 or not show_progress(size):
        return None
    from tqdm.auto import tqdm
    return tqdm(total=len(todo), unit="file", desc="parsing traces", leave=False)


def _load_all(experiments: list[Experiment], cache_root: Path, use_cache: bool,
              jobs: int | None) -> list[tuple[pd.DataFrame, pd.DataFrame, ParseStats]]:
    """Load experiments in order; files that must be parsed are spread over ``jobs``
    processes (default: the CPU count), since parsing is CPU-bound and files independent.
    Several long files show one bar over the files (none per file)."""
    todo = [e for e in experiments if not (use_cache and cached(e, cache_root))]
    parsed = {e.experiment_id for e in todo}
    jobs = min(jobs or os.cpu_count() or 1, len(todo))
    bar = _files_bar(todo)
    try:
        if jobs <= 1 or sys.platform != "linux":
            out = []
            for e in experiments:
                out.append(load_experiment(e, cache_root, use_cache, progress=bar is None))
                if bar is not None and e.experiment_id in parsed:
                    bar.update()
            return out
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {e.experiment_id: pool.submit(load_experiment, e, cache_root, use_cache,
                                                    False) for e in todo}
            for _ in as_completed(futures.values()) if bar is not None else ():
                bar.update()
            return [futures[e.experiment_id].result() if e.experiment_id in futures
                    else load_experiment(e, cache_root, use_cache) for e in experiments]
    finally:
        if bar is not None:
            bar.close()


def load_dataset(root: str | os.PathLike[str], cache_root: Path = INTERIM_DIR,
                 models_dir: Path = MODELS_DIR, use_cache: bool = True,
                 jobs: int | None = None) -> Dataset:
    """Load every experiment under a ground-truth root (see experiments.discover).

    Uncached trace files are parsed in parallel over ``jobs`` processes (default: all CPUs);
    cached ones are read from Parquet. What was skipped is in ``parse_report`` (counts per
    file), ``skipped_records`` (per reason, with the first line) and a TraceWarning per file."""
    found: Discovery = discover(Path(root), models_dir)
    steps, journeys, stats = [], [], []
    for s, j, st in _load_all(found.experiments, cache_root, use_cache, jobs):
        _warn(st)
        steps.append(s)
        journeys.append(j)
        stats.append(st)
    all_steps = pd.concat(steps, ignore_index=True)
    if all_steps.empty:
        # a valid dataset whose experiments hold no step yet: the report runs, every
        # statistic N/A with its reason (issue: the report runs on any valid dataset)
        warnings.warn(bounded(f"no step.BATCH_SUMMARY events in any traces.json under "
                              f"{display_path(root)}: every statistic will be N/A"),
                      TraceWarning, stacklevel=2)
    report = pd.DataFrame([asdict(s) for s in stats])[REPORT_COLUMNS]
    return Dataset(root=Path(root), experiments=found.experiments, steps=all_steps,
                   journeys=pd.concat(journeys, ignore_index=True), parse_report=report,
                   skipped=found.skipped, skipped_records=skipped_records(stats))


def experiment_table(ds: Dataset) -> pd.DataFrame:
    """One row per experiment: how it was resolved and what it holds."""
    rows = [{"experiment_id": e.experiment_id, "model": e.model, "hf_id": e.hf_id, "tp": e.tp,
             "workload": e.workload, "max_num_batched_tokens": e.max_num_batched_tokens}
            for e in ds.experiments]
    counts = ds.parse_report[["experiment_id", "steps", "journey_events"]]
    return pd.DataFrame(rows).merge(counts, on="experiment_id", how="left")


def dataset_table(root: Path) -> pd.DataFrame:
    """One row: the data root as shown (display_path) and what it is (paths.data_kind)."""
    return pd.DataFrame([{"data_root": display_path(root), "data_kind": data_kind(root)}])


def skipped_directories_table(ds: Dataset) -> pd.DataFrame:
    """directory, reason: each directory under the root that was not analysed."""
    return pd.DataFrame([tuple(s) for s in ds.skipped], columns=["directory", "reason"])


#: The counts of parse_report :func:`parse_totals` sums (a column a report lacks counts 0).
PARSE_TOTAL_COLUMNS = ["files", "steps", "malformed_lines", "blank_lines", "ignored_lines",
                       "rejected_events"]


def parse_totals(report: pd.DataFrame) -> pd.DataFrame:
    """One row (the table ``parse_totals``): the files of a parse report and the sum of each
    of its counts in PARSE_TOTAL_COLUMNS (0 for a column it does not have)."""
    row: dict[str, int] = {"files": len(report)}
    for c in PARSE_TOTAL_COLUMNS[1:]:
        row[c] = int(report[c].sum()) if c in report else 0
    return pd.DataFrame([row], columns=PARSE_TOTAL_COLUMNS)


def save_dataset(dirs: "RunDirs", ds: Dataset) -> None:
    """The loaded dataset as notebook 01 hands it on: the steps and journeys to the next
    notebooks (OUT/interim/), and what the report says of the dataset as tables
    (core.tables: dataset, experiments, skipped_directories, parse_report, parse_totals,
    skipped_records)."""
    ds.steps.to_parquet(dirs.interim / "steps.parquet", index=False)
    ds.journeys.to_parquet(dirs.interim / "journeys.parquet", index=False)
    artefacts.write_table(dirs, tables.DATASET, dataset_table(ds.root))
    artefacts.write_table(dirs, tables.EXPERIMENTS, experiment_table(ds))
    artefacts.write_table(dirs, tables.SKIPPED_DIRECTORIES, skipped_directories_table(ds))
    # from_cache says how this run read a file, not what the file holds: not in the table
    artefacts.write_table(dirs, tables.PARSE_REPORT, ds.parse_report.drop(columns="from_cache",
                                                                          errors="ignore"))
    artefacts.write_table(dirs, tables.PARSE_TOTALS, parse_totals(ds.parse_report))
    artefacts.write_table(dirs, tables.SKIPPED_RECORDS, ds.skipped_records)
    meta = {"data_root": display_path(ds.root), "skipped": ds.skipped,
            "experiments": [e.experiment_id for e in ds.experiments],
            "budget_tokens": {e.experiment_id: e.max_num_batched_tokens for e in ds.experiments}}
    (dirs.interim / "dataset.json").write_text(json.dumps(meta, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stepdecomp.traces.load", description=__doc__.split("\n")[0])
    ap.add_argument("--prune-cache", action="store_true",
                    help="remove cache entries whose trace file no longer exists")
    ap.add_argument("--cache-root", type=Path, default=INTERIM_DIR)
    args = ap.parse_args(argv)
    if args.prune_cache:
        removed = prune_cache(args.cache_root)
        print(f"pruned {len(removed)} trace cache entr{'y' if len(removed) == 1 else 'ies'} "
              f"under {display_path(args.cache_root / 'traces')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
