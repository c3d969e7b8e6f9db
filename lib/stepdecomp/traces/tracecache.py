"""The loader's Parquet cache of parsed trace files (data/interim/traces/<experiment>-<hash>/).

An entry holds steps.parquet, journeys.parquet and meta.json (the key it was written for and
the parse stats). It is used only while its key (:func:`source_key`: the file's identity and
stat, the resolved experiment, PARSER_VERSION) matches; the meta is written last, so an entry
is never valid without its tables.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from .experiments import Experiment
from .otlp_rows import ParseStats
from ..core.paths import INTERIM_DIR

#: Bump when the parsed tables or the rules that fill them change: old caches are ignored.
#: 4: typed (msgspec) decoding with the dict path per line as fallback.
#: 5: inconsistent durations and conflicting duplicates rejected (two new counts).
PARSER_VERSION = 5


def cache_dir(exp: Experiment, cache_root: Path) -> Path:
    key = hashlib.sha1(str(exp.path.resolve()).encode()).hexdigest()[:12]
    return cache_root / "traces" / f"{exp.experiment_id}-{key}"


def source_key(exp: Experiment, path: Path) -> dict:
    """What a cached table depends on. ctime_ns changes on every write (and cannot be set
    back like the mtime), inode/device change when the file is replaced; the resolved
    experiment covers edits of exp-config.yaml and slugs.yaml."""
    st = path.stat()
    return {"source": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "device": st.st_dev,
            "experiment_id": exp.experiment_id, "model": exp.model, "hf_id": exp.hf_id,
            "tp": exp.tp, "workload": exp.workload, "parser_version": PARSER_VERSION}


def read_meta(meta_path: Path) -> dict | None:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def from_cache(cdir: Path, key: dict) -> tuple[pd.DataFrame, pd.DataFrame, ParseStats] | None:
    """The cached tables if the entry's key matches (an unreadable entry is a miss)."""
    meta = read_meta(cdir / "meta.json")
    if meta is None or meta.get("key") != key:
        return None
    try:
        stats = ParseStats(**meta["stats"])
        steps = pd.read_parquet(cdir / "steps.parquet")
        journeys = pd.read_parquet(cdir / "journeys.parquet")
    except (OSError, ValueError, TypeError, KeyError):
        return None
    stats.from_cache = True
    return steps, journeys, stats


def store(cdir: Path, key: dict, steps: pd.DataFrame, journeys: pd.DataFrame,
           stats: ParseStats) -> None:
    """Write the tables, then the meta that validates them (never a meta without them)."""
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / "meta.json").unlink(missing_ok=True)
    steps.to_parquet(cdir / "steps.parquet", index=False)
    journeys.to_parquet(cdir / "journeys.parquet", index=False)
    tmp = cdir / "meta.json.tmp"
    tmp.write_text(json.dumps({"key": key, "stats": asdict(stats)}, indent=1))
    tmp.replace(cdir / "meta.json")


def cached(exp: Experiment, cache_root: Path) -> bool:
    src = exp.trace_path
    if src is None:
        return False
    meta = read_meta(cache_dir(exp, cache_root) / "meta.json")
    return meta is not None and meta.get("key") == source_key(exp, src)


def prune_cache(cache_root: Path = INTERIM_DIR) -> list[Path]:
    """Remove cache entries whose trace file no longer exists, or that this loader version
    cannot use (other PARSER_VERSION, unreadable meta). Returns the removed directories."""
    removed = []
    base = cache_root / "traces"
    for cdir in sorted(base.iterdir()) if base.is_dir() else ():
        meta = read_meta(cdir / "meta.json") if cdir.is_dir() else None
        key = meta.get("key") if meta else None
        if (isinstance(key, dict) and key.get("parser_version") == PARSER_VERSION
                and Path(str(key.get("source"))).is_file()):
            continue
        shutil.rmtree(cdir) if cdir.is_dir() else cdir.unlink()
        removed.append(cdir)
    return removed
