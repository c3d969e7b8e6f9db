"""Client-level test of a step-time model: the replay prices its forward pass with it and the
TPOT and E2E it implies are compared with the published runs. ``python -m
stepdecomp.run.stepmodel_client`` (``make stepmodel-check``, after ``make report``).

For each of the 12 published runs, the BLIS trained-physics vector fitted **without the run's
own model** (notebook 07's leave-one-model-out fold, ``stepmodel_fold_betas.csv``) is written as
a BLIS defaults file and the run is replayed with it (refdata ``step_model``: the forward pass
is that vector's StepTime of the batch instead of the measured kernels; everything else —
scheduler, CPU model, client model — unchanged). BLIS's shipped vector is replayed the same way
for comparison. The table ``stepmodel_client_check.csv`` has, per run and predictor, the
replayed and published mean TPOT and E2E and their relative errors; ``stepmodel_client_summary.csv``
the medians per predictor FINDINGS quotes (:func:`summary`).

What this can show: how well a step model fitted to one set of models carries the client-level
behaviour of another. What it cannot: the fitted vector learnt the replay's own forward passes
(the bundled data is generated), so agreement with the published runs is bounded by how well
the replay reproduces them with its kernel tables (data/README.md) — an inference, and the
circularity FINDINGS states.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..model import blis_basis
from ..stepmodel import export
from ..core import artefacts, tables
from ..traces.experiments import read_experiment
from ..core.paths import INTERIM_DIR, WORKLOADS_DIR, display_path
from .stepmodel_tables import FOLD_BETAS, model_label

TABLE = tables.STEPMODEL_CLIENT_CHECK
SUMMARY_TABLE = tables.STEPMODEL_CLIENT_SUMMARY
#: The leave-one-model-out scheme of notebook 07.
SCHEME = "model"
FITTED, SHIPPED = tables.CLIENT_CHECK_FITTED, tables.CLIENT_CHECK_SHIPPED
WORK_DIR = INTERIM_DIR / "stepmodel_client"
#: The issue's bar: TPOT and E2E within 5 % (median over the published runs).
CLIENT_ERROR_MAX = 0.05


def fold_vectors(fold_betas: pd.DataFrame, scheme: str = SCHEME) -> dict[str, np.ndarray]:
    """β (BLIS order) per held-out group of ``scheme`` from notebook 07's fold table."""
    sub = fold_betas[fold_betas["scheme"] == scheme]
    if sub.empty:
        raise ValueError(f"{FOLD_BETAS}: no fold of scheme {scheme!r} (run notebook 07 with "
                         f"held_out including {scheme})")
    out = {}
    for group, g in sub.groupby("held_out", sort=True):
        values = g.set_index("beta")["value"].reindex(list(blis_basis.BETA_NAMES))
        if values.isna().any():
            raise ValueError(f"{FOLD_BETAS}: fold {group!r} lacks β {list(values[values.isna()].index)}")
        out[str(group)] = values.to_numpy(dtype=np.float64)
    return out


def write_vector(beta: np.ndarray, path: Path) -> Path:
    """A BLIS defaults file holding ``beta`` and BLIS's shipped α's."""
    shipped = blis_basis.load_coefficients()
    coeffs = blis_basis.TrainedPhysicsCoefficients(alpha=shipped.alpha, beta=tuple(float(b) for b in beta))
    return export.write_defaults(path, export.defaults_document(coeffs, {}))


def client_means(summary: dict[str, Any], prefix: str) -> dict[str, float]:
    """Mean TPOT (ms), mean E2E (s) and failures of an inference-perf summary, prefixed
    (the calibration's published_means, plus E2E)."""
    from ..refdata.calibrate import published_means

    means = published_means(summary)
    e2e = summary["successes"]["latency"]["request_latency"]
    return {f"{prefix}_tpot_ms": means["tpot_ms"], f"{prefix}_e2e_s": e2e["mean"] if e2e else np.nan,
            f"{prefix}_failures": means["failures"]}


def _replay(job: tuple[str, str, str, float]) -> dict[str, Any]:
    from ..refdata.replay import simulate
    from ..refdata.writer import summary_metrics

    run, predictor, yaml_path, time_scale = job
    res = simulate(WORKLOADS_DIR / run, time_scale=time_scale, step_model=Path(yaml_path))
    return {"run": run, "predictor": predictor, **client_means(summary_metrics(res), "replay")}


def check(fold_betas: pd.DataFrame, published: dict[str, dict[str, Any]], time_scale: float = 1.0,
          jobs: int = 2, work: Path = WORK_DIR) -> pd.DataFrame:
    """One row per (published run, predictor): replayed vs published TPOT and E2E."""
    vectors = fold_vectors(fold_betas)
    work.mkdir(parents=True, exist_ok=True)
    shipped_path = write_vector(blis_basis.load_coefficients().beta_array, work / "shipped.yaml")
    jobs_list = []
    for run in sorted(published):
        label = model_label(read_experiment(WORKLOADS_DIR / run).hf_id)
        if label not in vectors:
            raise ValueError(f"{run}: no leave-one-model-out fold for {label} in {FOLD_BETAS}")
        path = write_vector(vectors[label], work / f"without-{label}.yaml")
        jobs_list += [(run, FITTED, str(path), time_scale), (run, SHIPPED, str(shipped_path), time_scale)]
    if jobs > 1:
        with mp.get_context().Pool(jobs) as pool:
            rows = pool.map(_replay, jobs_list)
    else:
        rows = [_replay(j) for j in jobs_list]
    t = pd.DataFrame(rows)
    pub = pd.DataFrame([{"run": r, **client_means(s, "published")} for r, s in published.items()])
    t = t.merge(pub, on="run")
    t["tpot_error"] = t["replay_tpot_ms"] / t["published_tpot_ms"] - 1.0
    t["e2e_error"] = t["replay_e2e_s"] / t["published_e2e_s"] - 1.0
    return t


def summary(t: pd.DataFrame) -> pd.DataFrame:
    """Per predictor: median |TPOT error| and |E2E error| over the runs, and whether both meet
    CLIENT_ERROR_MAX (``error_max``, the bar itself, on every row)."""
    g = t.assign(abs_tpot=t["tpot_error"].abs(), abs_e2e=t["e2e_error"].abs()).groupby(
        "predictor", sort=True)
    out = g[["abs_tpot", "abs_e2e"]].median().rename(
        columns={"abs_tpot": "median_abs_tpot_error", "abs_e2e": "median_abs_e2e_error"})
    out["runs"] = g.size()
    out["within_bar"] = (out["median_abs_tpot_error"] <= CLIENT_ERROR_MAX) & (
        out["median_abs_e2e_error"] <= CLIENT_ERROR_MAX)
    out["error_max"] = CLIENT_ERROR_MAX
    return out.reset_index()


def main(argv: Sequence[str] | None = None) -> int:
    from ..refdata.calibrate import published_runs

    ap = argparse.ArgumentParser(prog="python -m stepdecomp.run.stepmodel_client",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="", help="report directory with notebook 07's tables (default: reports/)")
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    dirs = artefacts.run_dirs(None, args.out or None)
    path = dirs.tables / f"{FOLD_BETAS}.csv"
    if not path.is_file():
        ap.error(f"{display_path(path)} is missing: run `make report` (notebook 07) first")
    t = check(pd.read_csv(path), published_runs(), args.time_scale, args.jobs)
    written = artefacts.write_table(dirs, TABLE, t)
    s = summary(t)
    summarised = artefacts.write_table(dirs, SUMMARY_TABLE, s)
    print(s.to_string(index=False))
    print(f"-> {display_path(written)}, {display_path(summarised)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
