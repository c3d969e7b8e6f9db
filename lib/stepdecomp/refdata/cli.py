"""``python -m stepdecomp.refdata --out data/raw``: replay the study's experiments.

Every experiment directory of data/workloads/ (or those named) is replayed in its own
process (``--jobs``), seeded from (seed, CRC-32 of its name), so the job count and the order
do not change a byte of the output. One line per finished experiment shows progress (and a
progress bar in an interactive terminal unless $TQDM_DISABLE is set).

``--scale N`` writes a synthetic N× dataset for scale measurements: every replayed
experiment, then N − 1 byte copies of it as new experiments ``<name>-<k>`` (k = 1..N−1; the
loader reads ``-<k>`` as a variant of the same workload). Copies, not longer runs: the
scale-out unit is the experiment (users hold sweeps of hundreds), and each copy keeps the
size of a real run, so per-experiment memory stays what one run needs.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..core.paths import WORKLOADS_DIR, display_path
from ..hw.specs import load_gpu_spec
from .replay import DEFAULT_HARDWARE, DEFAULT_PRECISION, simulate
from .scheduler import DEFAULT_ENGINE_LOOP, ENGINE_LOOPS
from .stepcost import KernelScale
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


def _run_one(job: tuple[str, str, int, float, str, str, str, KernelScale, str | None]) -> str:
    path, out, seed, time_scale, hardware, precision, engine_loop, scale, step_model = job
    t0 = time.perf_counter()
    res = simulate(Path(path), seed=seed, time_scale=time_scale, hardware=hardware,
                   precision=precision, engine_loop=engine_loop, kernel_scale=scale,
                   step_model=Path(step_model) if step_model else None)
    write_experiment(res, Path(out))
    r = res.requests
    return (f"{res.experiment.experiment_id}: {len(res.steps)} steps simulated, "
            f"{res.num_sampled} sampled, {len(r)} requests "
            f"({int((r['status'] == 'aborted').sum())} failed, "
            f"{int(r['num_preemptions'].sum())} preemptions), {time.perf_counter() - t0:.1f} s")


def _progress(items: Iterable[Any], total: int, unit: str) -> Iterable[Any]:
    """``items`` with a tqdm bar on an interactive stderr, unless $TQDM_DISABLE is set."""
    if os.environ.get("TQDM_DISABLE") or not sys.stderr.isatty():
        return items
    from tqdm.auto import tqdm
    return tqdm(items, total=total, unit=unit, leave=False)


def _say(line: str) -> None:
    from tqdm.auto import tqdm
    tqdm.write(line, file=sys.stdout)


def replicate(out: Path, names: Sequence[str], scale: int) -> list[Path]:
    """Copies ``<out>/<name>-<k>`` (k = 1..scale−1) of every experiment directory named, in
    order; an existing copy is replaced. Returns the copies."""
    jobs = [(out / name, out / f"{name}-{k}") for name in names for k in range(1, scale)]
    for src, dst in _progress(jobs, len(jobs), "copy"):
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
    return [dst for _, dst in jobs]


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
    ap.add_argument("--engine-loop", default=DEFAULT_ENGINE_LOOP, choices=ENGINE_LOOPS,
                    help=f"vLLM's engine loop (default {DEFAULT_ENGINE_LOOP}, what the study ran)")
    ap.add_argument("--kernel-scale", nargs="*", default=[], metavar="FAMILY=FACTOR",
                    help="multiply a kernel family's measured latencies (sensitivity runs): "
                         f"families {sorted(KernelScale.__dataclass_fields__)}")
    ap.add_argument("--step-model", default=None, metavar="YAML",
                    help="price the forward pass with BLIS trained-physics coefficients from this "
                         "file (an exported defaults.yaml) instead of the kernel tables")
    ap.add_argument("--scale", type=int, default=1,
                    help="also write N-1 copies <name>-<k> of every experiment (a synthetic N× set)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.time_scale <= 0:
        ap.error("--time-scale must be positive")
    if args.scale < 1:
        ap.error("--scale must be a positive integer")
    gpu = load_gpu_spec(args.hardware)
    if args.precision not in gpu.weight_precisions:
        ap.error(f"{args.hardware} has measured kernel tables for {list(gpu.weight_precisions)}, "
                 f"not {args.precision!r}")
    try:
        kernel_scale = KernelScale.parse(args.kernel_scale)
    except ValueError as exc:
        ap.error(str(exc))
    if args.step_model and not Path(args.step_model).is_file():
        ap.error(f"--step-model {args.step_model}: no such file")
    dirs = workload_dirs(args.workloads, args.experiments)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = [(str(p), str(args.out), args.seed, args.time_scale, args.hardware, args.precision,
             args.engine_loop, kernel_scale, args.step_model) for p in dirs]
    t0 = time.perf_counter()
    print(f"replaying {len(jobs)} experiment(s) into {display_path(args.out)} on {args.hardware} "
          f"{args.precision}, {args.engine_loop} engine loop (seed {args.seed}, time scale "
          f"{args.time_scale}, {args.jobs} job(s))",
          flush=True)
    if args.jobs > 1 and len(jobs) > 1:
        with mp.get_context().Pool(min(args.jobs, len(jobs))) as pool:
            lines = _progress(pool.imap_unordered(_run_one, jobs), len(jobs), "exp")
            for k, line in enumerate(lines, 1):
                _say(f"[{k}/{len(jobs)}] {line}")
    else:
        for k, job in enumerate(_progress(jobs, len(jobs), "exp"), 1):
            _say(f"[{k}/{len(jobs)}] {_run_one(job)}")
    if args.scale > 1:
        copies = replicate(args.out, [p.name for p in dirs], args.scale)
        print(f"{len(copies)} copies: {len(dirs) * args.scale} experiments in "
              f"{display_path(args.out)}", flush=True)
    print(f"done in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
