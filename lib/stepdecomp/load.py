"""Load ground-truth traces: OTLP JSON lines -> a typed steps table and a journey-event table.

The loader streams ``traces.json`` (or ``.gz``) line by line, keeps every
``step.BATCH_SUMMARY`` event as one row of the steps table and every ``journey.*`` event as
one row of the journeys table, and skips (and counts, per file) blank and malformed lines —
real files end with a truncated line when the collector was killed. Each experiment's
tables are cached as Parquet under ``data/interim/traces/``, keyed by the source file's size
and mtime, so a second run does not re-parse the JSON.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Iterator

import numpy as np
import orjson
import pandas as pd

from . import otlp
from .experiments import Discovery, Experiment, discover
from .paths import INTERIM_DIR, MODELS_DIR, display_path

#: Bump when the parsed tables change shape: old caches are then ignored.
PARSER_VERSION = 2
#: Files larger than this show a progress bar while parsing.
PROGRESS_MIN_BYTES = 4 * 2**20
META_COLUMNS = ["experiment_id", "model", "hf_id", "tp", "workload"]
JOURNEY_BASE_COLUMNS = ["experiment_id", "request_id", "event", "time_ns"]

_NEEDLES = (b"BATCH_SUMMARY", b"journey.")


class TraceWarning(UserWarning):
    """Something in a trace file was skipped; the message says what and where."""


@dataclass
class ParseStats:
    """What one trace file held, and what was skipped."""

    experiment_id: str
    file: str
    lines: int = 0
    blank_lines: int = 0
    malformed_lines: int = 0
    steps: int = 0
    journey_events: int = 0
    from_cache: bool = False
    first_malformed_line: int | None = None


@dataclass
class Dataset:
    """Everything loaded from one ground-truth root."""

    root: Path
    experiments: list[Experiment]
    steps: pd.DataFrame
    journeys: pd.DataFrame
    parse_report: pd.DataFrame
    skipped: list[tuple[str, str]] = field(default_factory=list)


# --------------------------------------------------------------------------- parsing

def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _progress(path: Path) -> object | None:
    size = path.stat().st_size
    if size < PROGRESS_MIN_BYTES or os.environ.get("TQDM_DISABLE"):
        return None
    from tqdm.auto import tqdm
    return tqdm(total=size, unit="B", unit_scale=True, desc=path.parent.name, leave=False)


def _iter_lines(path: Path) -> Iterator[bytes]:
    bar = _progress(path)
    # the bar advances by raw line bytes; for .gz it tracks decompressed bytes (approximate)
    with _open(path) as fh:
        for line in fh:
            if bar is not None:
                bar.update(len(line))  # type: ignore[attr-defined]
            yield line
    if bar is not None:
        bar.close()  # type: ignore[attr-defined]


def parse_trace_file(path: Path, experiment_id: str = "") -> tuple[list[dict], list[dict], ParseStats]:
    """Stream one traces.json(.gz); return step rows, journey rows and what was skipped.

    A line that is not valid JSON (truncated, garbage) is skipped and counted; a blank line
    is skipped and counted separately. Events are selected by name, whatever their scope.
    """
    stats = ParseStats(experiment_id=experiment_id, file=display_path(path))
    steps: list[dict] = []
    journeys: list[dict] = []
    loads, value = orjson.loads, otlp.attr_value
    for lineno, line in enumerate(_iter_lines(path), start=1):
        stats.lines += 1
        if not line.strip():
            stats.blank_lines += 1
            continue
        try:
            request = loads(line)
        except orjson.JSONDecodeError:
            stats.malformed_lines += 1
            stats.first_malformed_line = stats.first_malformed_line or lineno
            continue
        if not isinstance(request, dict):
            stats.malformed_lines += 1
            stats.first_malformed_line = stats.first_malformed_line or lineno
            continue
        if not any(n in line for n in _NEEDLES):
            continue
        for sp in otlp.iter_spans(request):
            events = sp.get("events")
            if not events:
                continue
            request_id = None
            for ev in events:
                name = ev.get("name", "")
                if name == otlp.BATCH_SUMMARY:
                    steps.append({a["key"]: value(a["value"]) for a in ev.get("attributes", ())})
                elif name.startswith(otlp.JOURNEY_PREFIX):
                    if request_id is None:
                        request_id = otlp.attrs_to_dict(sp.get("attributes")).get(otlp.REQUEST_ID_KEY, "")
                    row = {a["key"]: value(a["value"]) for a in ev.get("attributes", ())}
                    row["request_id"] = request_id
                    row["event"] = name[len(otlp.JOURNEY_PREFIX):]
                    row["time_ns"] = int(ev.get("timeUnixNano", 0))
                    journeys.append(row)
    stats.steps, stats.journey_events = len(steps), len(journeys)
    return steps, journeys, stats


def _int_array(values: list) -> pd.api.extensions.ExtensionArray | np.ndarray:
    """Python ints (None = missing) -> int64, or nullable Int64 when some are missing.

    Built from the ints themselves, never through float64: step.ts_*_ns values near 1.7e18
    are above 2**53 and would lose their last digits in a float."""
    missing = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    data = np.array([0 if v is None else v for v in values], dtype=np.int64)
    return data if not missing.any() else pd.arrays.IntegerArray(data, missing)


def _columns(rows: list[dict], kinds: dict[str, str]) -> pd.DataFrame:
    """Rows of decoded attributes -> one typed column per documented attribute, in order.

    Columns are built key by key (``DataFrame.from_records`` would turn an int column with
    a missing value into float64); an absent attribute is <NA>."""
    cols: dict[str, object] = {}
    for key, kind in kinds.items():
        values = [r.get(key) for r in rows]
        if kind == "int":
            cols[key] = _int_array(values)
        elif kind == "float":
            cols[key] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        else:
            cols[key] = pd.array(values, dtype="string")
    return pd.DataFrame(cols, index=pd.RangeIndex(len(rows)))


def steps_frame(rows: list[dict], exp: Experiment) -> pd.DataFrame:
    """Rows of BATCH_SUMMARY attributes -> typed steps table with the experiment's metadata."""
    frame = _columns(rows, otlp.STEP_ATTRS)
    meta = pd.DataFrame({"experiment_id": exp.experiment_id, "model": exp.model, "hf_id": exp.hf_id,
                         "tp": exp.tp, "workload": exp.workload}, index=frame.index)
    return pd.concat([meta, frame], axis=1)


def journeys_frame(rows: list[dict], exp: Experiment) -> pd.DataFrame:
    """Rows of journey events -> experiment_id, request_id, event, time_ns, then the typed
    otlp.JOURNEY_ATTRS (``ts.monotonic_ns`` stays nullable Int64: older traces lack it)."""
    frame = _columns(rows, otlp.JOURNEY_ATTRS)
    frame["ts.monotonic_ns"] = frame["ts.monotonic_ns"].astype("Int64")
    frame.insert(0, "experiment_id", exp.experiment_id)
    frame.insert(1, "request_id", pd.array([r["request_id"] for r in rows], dtype="string"))
    frame.insert(2, "event", pd.array([r["event"] for r in rows], dtype="string"))
    frame.insert(3, "time_ns", np.array([r["time_ns"] for r in rows], dtype=np.int64))
    return frame


# --------------------------------------------------------------------------- caching

def _cache_dir(exp: Experiment, cache_root: Path) -> Path:
    key = hashlib.sha1(str(exp.path.resolve()).encode()).hexdigest()[:12]
    return cache_root / "traces" / f"{exp.experiment_id}-{key}"


def _source_key(path: Path) -> dict:
    st = path.stat()
    return {"source": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "parser_version": PARSER_VERSION}


def load_experiment(exp: Experiment, cache_root: Path = INTERIM_DIR,
                    use_cache: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, ParseStats]:
    """Steps, journeys and parse stats of one experiment, from the Parquet cache when the
    source's size and mtime still match, else parsed (and cached)."""
    src = exp.trace_path
    if src is None:
        raise FileNotFoundError(f"{display_path(exp.path)}: no traces.json or traces.json.gz")
    cdir = _cache_dir(exp, cache_root)
    key = _source_key(src)
    meta_path = cdir / "meta.json"
    if use_cache and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("key") == key:
            stats = ParseStats(**meta["stats"])
            stats.from_cache = True
            return (pd.read_parquet(cdir / "steps.parquet"), pd.read_parquet(cdir / "journeys.parquet"),
                    stats)
    step_rows, journey_rows, stats = parse_trace_file(src, exp.experiment_id)
    steps, journeys = steps_frame(step_rows, exp), journeys_frame(journey_rows, exp)
    if use_cache:
        cdir.mkdir(parents=True, exist_ok=True)
        steps.to_parquet(cdir / "steps.parquet", index=False)
        journeys.to_parquet(cdir / "journeys.parquet", index=False)
        meta_path.write_text(json.dumps({"key": key, "stats": asdict(stats)}, indent=1))
    return steps, journeys, stats


def _warn(stats: ParseStats) -> None:
    if stats.malformed_lines:
        warnings.warn(f"{stats.file}: skipped {stats.malformed_lines} malformed line(s) "
                      f"(first at line {stats.first_malformed_line})", TraceWarning, stacklevel=3)
    if stats.steps == 0:
        warnings.warn(f"{stats.file}: no step.BATCH_SUMMARY events; the experiment contributes "
                      f"no steps", TraceWarning, stacklevel=3)


def _cached(exp: Experiment, cache_root: Path) -> bool:
    meta_path = _cache_dir(exp, cache_root) / "meta.json"
    return (exp.trace_path is not None and meta_path.is_file()
            and json.loads(meta_path.read_text()).get("key") == _source_key(exp.trace_path))


def _load_all(experiments: list[Experiment], cache_root: Path, use_cache: bool,
              jobs: int | None) -> list[tuple[pd.DataFrame, pd.DataFrame, ParseStats]]:
    """Load experiments in order; files that must be parsed are spread over ``jobs``
    processes (default: the CPU count), since parsing is CPU-bound and files independent."""
    todo = [e for e in experiments if not (use_cache and _cached(e, cache_root))]
    jobs = min(jobs or os.cpu_count() or 1, len(todo))
    if jobs <= 1 or sys.platform != "linux":
        return [load_experiment(e, cache_root, use_cache) for e in experiments]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {e.experiment_id: pool.submit(load_experiment, e, cache_root, use_cache)
                   for e in todo}
        return [futures[e.experiment_id].result() if e.experiment_id in futures
                else load_experiment(e, cache_root, use_cache) for e in experiments]


def load_dataset(root: str | os.PathLike[str], cache_root: Path = INTERIM_DIR,
                 models_dir: Path = MODELS_DIR, use_cache: bool = True,
                 jobs: int | None = None) -> Dataset:
    """Load every experiment under a ground-truth root (see experiments.discover).

    Uncached trace files are parsed in parallel over ``jobs`` processes (default: all CPUs);
    cached ones are read from Parquet."""
    found: Discovery = discover(Path(root), models_dir)
    steps, journeys, stats = [], [], []
    for s, j, st in _load_all(found.experiments, cache_root, use_cache, jobs):
        _warn(st)
        steps.append(s)
        journeys.append(j)
        stats.append(st)
    all_steps = pd.concat(steps, ignore_index=True)
    if all_steps.empty:
        raise ValueError(f"no step.BATCH_SUMMARY events in any traces.json under "
                         f"{display_path(root)}")
    report = pd.DataFrame([asdict(s) for s in stats]).drop(columns=["first_malformed_line"])
    return Dataset(root=Path(root), experiments=found.experiments, steps=all_steps,
                   journeys=pd.concat(journeys, ignore_index=True), parse_report=report,
                   skipped=found.skipped)


def experiment_table(ds: Dataset) -> pd.DataFrame:
    """One row per experiment: how it was resolved and what it holds."""
    rows = [{"experiment_id": e.experiment_id, "model": e.model, "hf_id": e.hf_id, "tp": e.tp,
             "workload": e.workload, "max_num_batched_tokens": e.max_num_batched_tokens}
            for e in ds.experiments]
    counts = ds.parse_report[["experiment_id", "steps", "journey_events"]]
    return pd.DataFrame(rows).merge(counts, on="experiment_id", how="left")
