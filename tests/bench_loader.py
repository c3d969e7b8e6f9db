"""Loader benchmark (`make bench`): prints speed ratios, asserts nothing.

1. parse: stepdecomp's loader (orjson, one pass) vs a plain ``json.loads``-per-line loop over
   the nested dicts doing the same job (BATCH_SUMMARY + journey rows -> DataFrames);
2. cache: a cached reload (Parquet) vs the parse.

Input: the largest traces.json of the bundled dataset (data/raw), else a file made by
repeating the fixture's lines to about 40 MB.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pandas as pd

from stepdecomp import load
from stepdecomp.experiments import read_experiment
from stepdecomp.paths import FIXTURE_ROOT, RAW_DIR


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


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


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


def main() -> int:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        exp = read_experiment(input_experiment(tmp))
        path = exp.trace_path
        size_mb = path.stat().st_size / 2**20
        lines = path.read_bytes().splitlines()
        t_json = best_of(lambda: [json.loads(x) for x in lines if x.strip()] and None)
        t_orjson = best_of(lambda: [orjson.loads(x) for x in lines if x.strip()] and None)
        del lines
        t_base = best_of(lambda: baseline(path))
        t_ours = best_of(lambda: load.load_experiment(exp, tmp / "nocache", use_cache=False))
        load.load_experiment(exp, tmp / "cache")                       # fill the cache
        t_cached = best_of(lambda: load.load_experiment(exp, tmp / "cache"))
        steps = load.load_experiment(exp, tmp / "cache")[0]
    print(f"input: {exp.experiment_id}/traces.json, {size_mb:.1f} MB, {len(steps):,} steps")
    print(f"parse only: json.loads {t_json:.3f} s, orjson.loads {t_orjson:.3f} s -> "
          f"{t_json / t_orjson:.1f}x (the ceiling of any orjson-based loader on this file)")
    print(f"json.loads loop        {t_base:8.3f} s   {size_mb / t_base:7.1f} MB/s")
    print(f"stepdecomp parse       {t_ours:8.3f} s   {size_mb / t_ours:7.1f} MB/s   "
          f"{t_base / t_ours:5.1f}x faster than the json loop (goal >= 3x)")
    print(f"stepdecomp cached      {t_cached:8.3f} s   "
          f"{t_ours / t_cached:7.1f}x faster than the parse (goal >= 20x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
