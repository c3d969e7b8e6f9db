"""``python -m stepdecomp.refdata --out data/raw``: replay the study's experiments.

Every experiment directory of data/workloads/ (or those named) is replayed in its own
process (``--jobs``), seeded from (seed, CRC-32 of its name), so the job count and the order
do not change a byte of the output. One line per finished experiment shows progress.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Sequence

from ..paths import WORKLOADS_DIR, display_path
from ..specs import load_gpu_spec
from .replay import DEFAULT_HARDWARE, DEFAULT_PRECISION, simulate
from .writer import write_experiment


def workload_dirs(root: Path = WORKLOADS_DIR, names: Sequence[str] | None = None) -> list[Path]:
    """Experiment directories under ``root`` (all, or those named), sorted by name."""
    dirs = sorted(p for p in Path(root).iterdir()
                  if (p / "profile.yaml").is_file() or (p / "results" / "config.yaml").is_file())
    if names:
        known = {p.name: p for p in dirs}
        missing = [n for n in names if n not in known]
        if missing:
            raise SystemExit(f"unknown experiment(s) {missing}; known: {sorted(known)}")
        dirs = [known[n] for n in names]
    if not dirs:
        raise SystemExit(f"no experiment directories with a workload under {display_path(root)}")
    return dirs


def _run_one(job: tuple[str, str, int, float, str, str]) -> str:
    path, out, seed, time_scale, hardware, precision = job
    t0 = time.perf_counter()
    res = simulate(Path(path), seed=seed, time_scale=time_scale, hardware=hardware,
                   precision=precision)
    write_experiment(res, Path(out))
    r = res.requests
    return (f"{res.experiment.experiment_id}: {len(res.steps)} steps simulated, "
            f"{res.num_sampled} sampled, {len(r)} requests "
            f"({int((r['status'] == 'aborted').sum())} failed, "
            f"{int(r['num_preemptions'].sum())} preemptions), {time.perf_counter() - t0:.1f} s")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m stepdecomp.refdata",
                                 description="Replay the study's experiments into GENERATED traces.")
    ap.add_argument("--out", required=True, type=Path, help="output root (e.g. data/raw)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-scale", type=float, default=1.0,
                    help="multiply every load stage's duration (e.g. 0.05 for a quick run)")
    ap.add_argument("--experiments", nargs="*", default=None, metavar="NAME",
                    help="experiment directory names under data/workloads (default: all)")
    ap.add_argument("--workloads", type=Path, default=WORKLOADS_DIR, help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=2, help="parallel processes (default 2)")
    ap.add_argument("--hardware", default=DEFAULT_HARDWARE,
                    help=f"data/hardware/<name>.json (default {DEFAULT_HARDWARE}, the best fit)")
    ap.add_argument("--precision", default=DEFAULT_PRECISION,
                    help=f"weight precision, bf16 or fp8 (default {DEFAULT_PRECISION})")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.time_scale <= 0:
        ap.error("--time-scale must be positive")
    gpu = load_gpu_spec(args.hardware)
    if args.precision not in gpu.weight_precisions:
        ap.error(f"{args.hardware} has measured kernel tables for {list(gpu.weight_precisions)}, "
                 f"not {args.precision!r}")
    dirs = workload_dirs(args.workloads, args.experiments)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(str(p), str(args.out), args.seed, args.time_scale, args.hardware, args.precision)
            for p in dirs]
    t0 = time.perf_counter()
    print(f"replaying {len(jobs)} experiment(s) into {display_path(args.out)} on {args.hardware} "
          f"{args.precision} (seed {args.seed}, time scale {args.time_scale}, {args.jobs} job(s))",
          flush=True)
    if args.jobs > 1 and len(jobs) > 1:
        with mp.get_context().Pool(min(args.jobs, len(jobs))) as pool:
            for k, line in enumerate(pool.imap_unordered(_run_one, jobs), 1):
                print(f"[{k}/{len(jobs)}] {line}", flush=True)
    else:
        for k, job in enumerate(jobs, 1):
            print(f"[{k}/{len(jobs)}] {_run_one(job)}", flush=True)
    print(f"done in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
