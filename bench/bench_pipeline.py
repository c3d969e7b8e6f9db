"""Pipeline benchmark (`make bench`, after the loader's): prints times and ratios, asserts nothing.

1. decomposition of 1 M steps: seed components (seed_mode.seed_components) and physical
   components (physical_mode.physical_components) of the bundled steps with their
   reconstruction, tiled to DECOMPOSE_STEPS rows (goal < 1 s for both together);
2. reconstruction of RECONSTRUCT_REQUESTS synthetic requests (reconstruct.reconstruct on
   test_reconstruct.synthetic_journeys; README's earlier figure: 7–10 s);
3. every per-experiment stage and the pooled statistics (pipeline.run) on the bundled data,
   trace cache warm: in process vs a LocalCluster of pipeline.LOCAL_WORKERS processes
   (cluster start-up excluded), with the ratio. ``--no-dask`` skips it.

Input: the bundled dataset (data/raw) when generated, else the test fixture.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("TQDM_DISABLE", "1")

from stepdecomp.model import seed as seed_mode, reconstruct, physical as physical_mode
from stepdecomp.traces import load
from stepdecomp.core import artefacts
from stepdecomp.run import pipeline  # noqa: E402
from stepdecomp.core.paths import FIXTURE_ROOT, RAW_DIR  # noqa: E402
from stepdecomp.hw.specs import load_gpu_spec, load_model_specs  # noqa: E402

DECOMPOSE_STEPS = 1_000_000
RECONSTRUCT_REQUESTS = 1_000_000
REPEAT = 3


def best_of(fn, repeat: int = REPEAT) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def data_root() -> Path:
    return RAW_DIR if any(RAW_DIR.glob("*/traces.json")) else FIXTURE_ROOT


def tiled_steps(root: Path, rows: int) -> pd.DataFrame:
    """The dataset's steps merged with their reconstruction, repeated to ``rows`` rows."""
    ds = load.load_dataset(root)
    budgets = {e.experiment_id: e.max_num_batched_tokens for e in ds.experiments}
    merged, _ = reconstruct.attach_reconstruction(ds.steps, ds.journeys, budgets)
    reps = -(-rows // len(merged))
    return pd.concat([merged] * reps, ignore_index=True).iloc[:rows].reset_index(drop=True)


def bench_decomposition(root: Path) -> None:
    steps = tiled_steps(root, DECOMPOSE_STEPS)
    specs, gpu = load_model_specs(steps["hf_id"]), load_gpu_spec()
    t_seed = best_of(lambda: seed_mode.seed_components(steps, specs, gpu))
    t_phys = best_of(lambda: physical_mode.physical_components(steps, specs, gpu))
    total = t_seed + t_phys
    print(f"decomposition of {len(steps):,} steps: seed {t_seed:.3f} s + physical {t_phys:.3f} s "
          f"= {total:.3f} s ({'meets' if total < 1.0 else 'misses'} the < 1 s goal)")


def bench_reconstruction() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "model"))
    from test_reconstruct import synthetic_journeys

    journeys = synthetic_journeys(RECONSTRUCT_REQUESTS)
    t = best_of(lambda: reconstruct.reconstruct(journeys, 2048), repeat=1)
    print(f"reconstruction of {RECONSTRUCT_REQUESTS:,} requests ({len(journeys):,} journey "
          f"events): {t:.1f} s")


def bench_backends(root: Path) -> None:
    load.load_dataset(root)                               # warm trace cache for both runs
    with tempfile.TemporaryDirectory() as tmp:
        dirs = artefacts.run_dirs(str(root), str(Path(tmp) / "pandas"))
        t_pd = best_of(lambda: pipeline.run(dirs, "h100-sxm", ""), repeat=1)
        with pipeline.dask_client(pipeline.LOCAL) as client:
            address = client.scheduler.address
            dirs = artefacts.run_dirs(str(root), str(Path(tmp) / "dask"))
            t_dk = best_of(lambda: pipeline.run(dirs, "h100-sxm", address), repeat=1)
        same = all((Path(tmp) / "pandas" / "tables" / p.name).read_bytes() == p.read_bytes()
                   for p in (Path(tmp) / "dask" / "tables").iterdir())
    print(f"pipeline.run on {root.name} (trace cache warm): in process {t_pd:.1f} s, "
          f"LocalCluster({pipeline.LOCAL_WORKERS} processes) {t_dk:.1f} s -> "
          f"{t_pd / t_dk:.2f}x; tables byte-identical: {same}")


def main() -> int:
    root = data_root()
    print(f"pipeline bench on {root} ({os.cpu_count()} CPUs; other load on the machine "
          f"skews every figure)")
    bench_decomposition(root)
    bench_reconstruction()
    if "--no-dask" not in sys.argv:
        bench_backends(root)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
