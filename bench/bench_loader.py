"""Loader benchmark (`make bench`): prints speeds and ratios, asserts nothing.

On the largest traces.json of the bundled dataset (data/raw; else a file made by repeating
the fixture's lines to about 40 MB):

1. parse only, the ceiling of any loader built on each parser: ``json.loads``,
   ``orjson.loads`` and msgspec into the typed Structs of ``otlp`` (each line decoded and
   dropped, as a streaming loader does);
2. end to end: a plain ``json.loads``-per-line loop over the nested dicts doing the same job
   (BATCH_SUMMARY + journey rows -> DataFrames) vs stepdecomp's ``load_experiment`` without
   cache (goal >= 3x);
3. a cached reload (Parquet) vs the parse (goal >= 20x);
4. a cold load of every bundled file (``load_dataset`` into an empty cache, files parsed in
   parallel over the CPUs; goal <= 10 s), when data/raw holds the dataset.

Every figure is the best of REPEAT runs, with the median beside it: the machine may be
shared, and the best run is the one least disturbed.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import orjson
import pandas as pd

from stepdecomp.traces import load, otlp
from stepdecomp.traces.experiments import read_experiment
from stepdecomp.core.paths import FIXTURE_ROOT, RAW_DIR

REPEAT = 3
#: Goals of issue 12 (README, "Measured").
GOAL_VS_JSON_LOOP = 3.0
GOAL_CACHED_VS_PARSE = 20.0
GOAL_COLD_LOAD_S = 10.0


def baseline(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What a straightforward loader does: json.loads each line, walk the dicts."""
    def value(v: dict):
        if "intValue" in v:
            return int(v["intValue"])
        if "doubleValue" in v:
            return float(v["doubleValue"])
        if "stringValue" in v:
            return v["stringValue"]
        return v.get("boolValue")

    steps, journeys = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                req = json.loads(line)
            except json.JSONDecodeError:
                continue
            for rs in req.get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    for sp in ss.get("spans", []):
                        rid = {a["key"]: value(a["value"]) for a in sp.get("attributes", [])}.get("gen_ai.request.id")
                        for ev in sp.get("events", []):
                            attrs = {a["key"]: value(a["value"]) for a in ev.get("attributes", [])}
                            if ev["name"] == "step.BATCH_SUMMARY":
                                steps.append(attrs)
                            elif ev["name"].startswith("journey."):
                                journeys.append({**attrs, "request_id": rid, "event": ev["name"][8:]})
    return pd.DataFrame(steps), pd.DataFrame(journeys)


def timed(fn: Callable[[], object], repeat: int = REPEAT) -> tuple[float, float]:
    """(best, median) wall time of ``repeat`` runs of ``fn``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def input_experiment(tmp: Path) -> Path:
    raw = sorted(RAW_DIR.glob("*/traces.json"), key=lambda p: p.stat().st_size)
    if raw:
        return raw[-1].parent
    src = FIXTURE_ROOT / "20260101-020000-llama-2-70b-hf-tp4-reasoning"
    dst = tmp / src.name
    shutil.copytree(src, dst)
    lines = (src / "traces.json").read_bytes()
    (dst / "traces.json").write_bytes(lines * max(1, (40 * 2**20) // len(lines)))
    return dst


def row(label: str, t: tuple[float, float], size_mb: float, extra: str = "") -> None:
    print(f"  {label:30s} {t[0]:7.3f} s (median {t[1]:7.3f})  {size_mb / t[0]:7.1f} MB/s  {extra}")


def parse_only(path: Path, size_mb: float) -> None:
    lines = [x for x in path.read_bytes().splitlines() if x.strip()]
    decoders = {"json.loads": json.loads, "orjson.loads": orjson.loads,
                "msgspec typed (otlp Structs)": otlp.TYPED_DECODER.decode}
    print("parse only (each line decoded and dropped): the ceiling of a loader on each parser")
    for name, decode in decoders.items():
        row(name, timed(lambda: [decode(x) and None for x in lines]), size_mb)


def cold_load(tmp: Path) -> None:
    files = sorted(RAW_DIR.glob("*/traces.json*"))
    if not files:
        print("cold load: no bundled dataset in data/raw (make data)")
        return
    size_mb = sum(f.stat().st_size for f in files) / 2**20
    runs = [tmp / f"cold{i}" for i in range(REPEAT)]
    it = iter(runs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", load.TraceWarning)
        t = timed(lambda: load.load_dataset(RAW_DIR, cache_root=next(it)))
    print(f"cold load of all bundled files ({len(files)} files, {size_mb:.0f} MB, "
          f"{os.cpu_count()} CPUs):")
    row("load_dataset, empty cache", t, size_mb,
        f"(goal <= {GOAL_COLD_LOAD_S:.0f} s: {'met' if t[0] <= GOAL_COLD_LOAD_S else 'NOT met'})")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        exp = read_experiment(input_experiment(tmp))
        path = exp.trace_path
        size_mb = path.stat().st_size / 2**20
        print(f"input: {exp.experiment_id}/{path.name}, {size_mb:.1f} MB")
        parse_only(path, size_mb)
        t_base = timed(lambda: baseline(path))
        t_ours = timed(lambda: load.load_experiment(exp, tmp / "nocache", use_cache=False))
        load.load_experiment(exp, tmp / "cache")                       # fill the cache
        t_cached = timed(lambda: load.load_experiment(exp, tmp / "cache"))
        steps, journeys, stats = load.load_experiment(exp, tmp / "cache")
        print(f"end to end ({len(steps):,} steps, {len(journeys):,} journey events; "
              f"{stats.fallback_lines} line(s) read by the dict path):")
        row("json.loads loop", t_base, size_mb)
        ratio = t_base[0] / t_ours[0]
        row("stepdecomp load (no cache)", t_ours, size_mb,
            f"{ratio:5.1f}x the json loop (goal >= {GOAL_VS_JSON_LOOP:.0f}x: "
            f"{'met' if ratio >= GOAL_VS_JSON_LOOP else 'NOT met'})")
        row("stepdecomp cached reload", t_cached, size_mb,
            f"{t_ours[0] / t_cached[0]:5.0f}x the parse (goal >= {GOAL_CACHED_VS_PARSE:.0f}x)")
        cold_load(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
