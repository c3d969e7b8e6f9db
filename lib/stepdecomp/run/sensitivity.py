"""How much do the headline conclusions rest on the replay pricing steps the way the analysis
assumes? ``python -m stepdecomp.run.sensitivity`` (``make sensitivity``).

The physical mode and the replay share their kernel tables (data/README.md): on the bundled
data an analysis that knows the batch is partly circular. This driver measures it. It
regenerates the replay

* ``kernel_draws`` times with every kernel family (refdata.stepcost.KernelScale: GEMM, MoE,
  all-reduce, prefill and decode attention, LM head) scaled by its own factor drawn
  uniformly from [1 − spread, 1 + spread] (seeded), the analysis unchanged, and
* ``seed_draws`` times with other random seeds (arrivals, prompts, CPU and kernel noise)
  and the measured tables, the replay's own seed-to-seed spread,

plus one ``baseline`` draw (seed 0, tables as measured) at the same shortened stages, so that
every draw is compared with a replay of its own length; runs the analysis pipeline
(pipeline.run, no notebooks) on each, and evaluates every headline of :data:`HEADLINES` on the
resulting components table: its value per draw and whether the claim holds.
``reports/tables/sensitivity.csv`` has one row per headline (value on the reference data — the
full-length bundled report — and on the baseline draw, range and standard deviation over the
seed draws, range over the kernel draws, in how many draws of each kind it holds);
``sensitivity_draws.csv`` one row per draw and headline. The runs stay under data/interim/sensitivity/ (regenerated, not committed).

A headline is a claim the data can contradict: a statistic, a threshold (constants below)
and the direction in which it must lie.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..core import columns, artefacts
from ..core.columns import EXP
from ..core.paths import INTERIM_DIR, REPORTS_DIR, display_path
from ..core.tables import SENSITIVITY
from ..core.thresholds import MIN_STEPS_PER_EXPERIMENT, SENSITIVITY_SPREAD
from ..refdata.stepcost import KernelScale

FORWARD = columns.FORWARD
DURATION = "step.duration_us"
PHYS_TOTAL = "phys_total_us"
LOWER_BOUND = "phys_lower_bound_us"

#: Each factor is drawn from [1 − spread, 1 + spread] (core.thresholds: FINDINGS states it).
DEFAULT_SPREAD = SENSITIVITY_SPREAD
DEFAULT_KERNEL_DRAWS = 5
DEFAULT_SEED_DRAWS = 3
#: Shorter load stages keep `make sensitivity` within its time budget (every stage keeps
#: its rate, so the engine's regime — calm or overloaded — is that of the full run).
DEFAULT_TIME_SCALE = 0.25
DRAW_SEED = 20260218
WORK_DIR = INTERIM_DIR / "sensitivity"

#: Thresholds of the headlines.
TRACKS_R_MIN = 0.8            # within-experiment r of the physical total and the forward time
UNDER_RATIO_MIN = 1.0         # forward time / physical total: the roofline runs low
BELOW_BOUND_MIN = 0.9         # share of step.duration_us below the HBM lower bound
DURATION_R_MAX = 0.5          # within-experiment r of step.duration_us and the physical total
# MIN_STEPS_PER_EXPERIMENT (core.thresholds): the steps an experiment's r or ratio needs.


def _per_experiment(frame: pd.DataFrame, fn: Callable[[pd.DataFrame], float]) -> np.ndarray:
    vals = [fn(g) for _, g in frame.groupby(EXP, sort=True)]
    return np.asarray([v for v in vals if np.isfinite(v)], dtype=np.float64)


def _r(x: str, y: str) -> Callable[[pd.DataFrame], float]:
    def fn(g: pd.DataFrame) -> float:
        ok = g[x].notna() & g[y].notna()
        a, b = g.loc[ok, x].to_numpy(np.float64), g.loc[ok, y].to_numpy(np.float64)
        if len(a) < MIN_STEPS_PER_EXPERIMENT or a.std() == 0 or b.std() == 0:
            return float("nan")
        return float(np.corrcoef(a, b)[0, 1])
    return fn


def _median(values: np.ndarray) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def per_experiment_r(frame: pd.DataFrame, x: str, y: str) -> np.ndarray:
    """Pearson r(x, y) of every experiment with at least MIN_STEPS_PER_EXPERIMENT steps where
    both are known and vary (the values the median headlines take their median of)."""
    return _per_experiment(frame, _r(x, y))


def median_r_forward(frame: pd.DataFrame) -> float:
    """Median over experiments of Pearson r(phys_total_us, step_forward_us)."""
    return _median(_per_experiment(frame, _r(PHYS_TOTAL, FORWARD)))


def median_forward_over_physical(frame: pd.DataFrame) -> float:
    """Median over experiments of the median step_forward_us / phys_total_us."""
    def fn(g: pd.DataFrame) -> float:
        ratio = (g[FORWARD] / g[PHYS_TOTAL]).replace([np.inf, -np.inf], np.nan).dropna()
        return float(ratio.median()) if len(ratio) >= MIN_STEPS_PER_EXPERIMENT else float("nan")
    return _median(_per_experiment(frame, fn))


def share_duration_below_bound(frame: pd.DataFrame) -> float:
    """Share of all steps whose step.duration_us is below the HBM lower bound."""
    ok = frame[DURATION].notna() & frame[LOWER_BOUND].notna() & (frame[LOWER_BOUND] > 0)
    if not ok.any():
        return float("nan")
    return float((frame.loc[ok, DURATION] < frame.loc[ok, LOWER_BOUND]).mean())


def median_r_duration(frame: pd.DataFrame) -> float:
    """Median over experiments of Pearson r(phys_total_us, step.duration_us)."""
    return _median(_per_experiment(frame, _r(PHYS_TOTAL, DURATION)))


@dataclass(frozen=True)
class Headline:
    """A claim: ``statistic`` of the components table lies above ``minimum`` or below
    ``maximum`` (one of them is set)."""

    key: str
    claim: str
    statistic: Callable[[pd.DataFrame], float]
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if (self.minimum is None) == (self.maximum is None):
            raise ValueError(f"headline {self.key}: exactly one of minimum, maximum")

    def holds(self, value: float) -> bool:
        if not np.isfinite(value):
            return False
        return value >= self.minimum if self.minimum is not None else value <= self.maximum


HEADLINES: tuple[Headline, ...] = (
    Headline("physical_tracks_forward",
             f"within experiments the physical total tracks the forward time (median r ≥ {TRACKS_R_MIN})",
             median_r_forward, minimum=TRACKS_R_MIN),
    Headline("physical_runs_low",
             "the physical total runs below the forward time (median forward / physical > 1)",
             median_forward_over_physical, minimum=UNDER_RATIO_MIN),
    Headline("duration_below_bound",
             f"step.duration_us is below the HBM lower bound in ≥ {BELOW_BOUND_MIN:.0%} of steps",
             share_duration_below_bound, minimum=BELOW_BOUND_MIN),
    Headline("duration_not_physics",
             f"the physics does not explain step.duration_us (median r ≤ {DURATION_R_MAX})",
             median_r_duration, maximum=DURATION_R_MAX),
)

#: The columns the headlines read.
HEADLINE_COLUMNS = [EXP, FORWARD, DURATION, PHYS_TOTAL, LOWER_BOUND]


@dataclass(frozen=True)
class Draw:
    """One regenerated replay: its name, replay seed and kernel scaling."""

    name: str
    kind: str            # "baseline", "kernels" or "seed"
    seed: int
    scale: KernelScale


def draws(kernel_draws: int = DEFAULT_KERNEL_DRAWS, seed_draws: int = DEFAULT_SEED_DRAWS,
          spread: float = DEFAULT_SPREAD, draw_seed: int = DRAW_SEED) -> list[Draw]:
    """The baseline (seed 0, tables as measured), the kernel draws (seed 0, each family's
    factor from U[1 − spread, 1 + spread]) and the seed draws (seeds 1 … seed_draws, tables
    as measured)."""
    if not 0 <= spread < 1:
        raise ValueError(f"spread must be in [0, 1), got {spread}")
    if kernel_draws < 0 or seed_draws < 0:
        raise ValueError("draw counts must be ≥ 0")
    rng = np.random.default_rng(draw_seed)
    fields = list(KernelScale.__dataclass_fields__)
    out = [Draw("baseline", "baseline", 0, KernelScale())]
    for k in range(kernel_draws):
        factors = rng.uniform(1 - spread, 1 + spread, len(fields))
        out.append(Draw(f"kernels-{k + 1}", "kernels", 0,
                        KernelScale(**{f: round(float(x), 4) for f, x in zip(fields, factors)})))
    out += [Draw(f"seed-{s}", "seed", s, KernelScale()) for s in range(1, seed_draws + 1)]
    return out


def headline_values(frame: pd.DataFrame) -> dict[str, float]:
    """Every headline's statistic on one components table."""
    return {h.key: h.statistic(frame) for h in HEADLINES}


#: The columns of :func:`headline_table` (the table ``headlines`` notebook 04 writes).
HEADLINE_TABLE_COLUMNS = ["headline", "claim", "value", "threshold", "holds", "n_experiments",
                          "n_experiments_r"]


def headline_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The headlines on one components table, as FINDINGS' Answer reads them: per headline
    its claim, value, threshold (its minimum or maximum) and whether it holds; on every row
    the experiments of the table (``n_experiments``) and those with a within-experiment r of
    the physical total and the forward time (``n_experiments_r``: what
    physical_tracks_forward's median is over)."""
    values = headline_values(frame)
    n_r = len(per_experiment_r(frame, PHYS_TOTAL, FORWARD))
    n = int(frame[EXP].nunique())
    return pd.DataFrame([{"headline": h.key, "claim": h.claim, "value": values[h.key],
                          "threshold": h.minimum if h.minimum is not None else h.maximum,
                          "holds": h.holds(values[h.key]), "n_experiments": n,
                          "n_experiments_r": n_r} for h in HEADLINES],
                        columns=HEADLINE_TABLE_COLUMNS)


def run_draw(draw: Draw, work: Path, time_scale: float, hardware: str, jobs: int) -> pd.DataFrame:
    """Replay into ``work/<draw>/raw``, analyse into ``work/<draw>/out``; the components."""
    from . import pipeline
    from ..refdata.cli import main as replay_main

    raw, out = work / draw.name / "raw", work / draw.name / "out"
    scale = [f"{f}={getattr(draw.scale, f)}" for f in KernelScale.__dataclass_fields__]
    args = ["--out", str(raw), "--seed", str(draw.seed), "--time-scale", str(time_scale),
            "--jobs", str(jobs), "--hardware", hardware, "--kernel-scale", *scale]
    if replay_main(args) != 0:
        raise RuntimeError(f"replay of draw {draw.name} failed")
    dirs = artefacts.run_dirs(str(raw), str(out))
    pipeline.run(dirs, hardware, cache_root=work / draw.name / "cache")
    return pd.read_parquet(dirs.tables / "step_components.parquet", columns=HEADLINE_COLUMNS)


def summarize(reference: dict[str, float], per_draw: pd.DataFrame) -> pd.DataFrame:
    """One row per headline: the claim, its value on the reference data and whether it holds
    there, the seed draws' range and standard deviation, the kernel draws' range, and in how
    many draws of each kind it holds."""
    rows = []
    for h in HEADLINES:
        d = per_draw[per_draw["headline"] == h.key]
        seeds, kern = d[d["kind"] == "seed"]["value"], d[d["kind"] == "kernels"]["value"]
        base = d[d["kind"] == "baseline"]["value"]
        rows.append({
            "headline": h.key, "claim": h.claim, "reference": reference[h.key],
            "holds_on_reference": h.holds(reference[h.key]),
            "baseline": float(base.iloc[0]) if len(base) else np.nan,
            "seed_min": seeds.min(), "seed_max": seeds.max(),
            "seed_sd": seeds.std(ddof=1) if len(seeds) > 1 else np.nan,
            "holds_seed_draws": int(d[d["kind"] == "seed"]["holds"].sum()), "seed_draws": len(seeds),
            "kernels_min": kern.min(), "kernels_max": kern.max(),
            "holds_kernel_draws": int(d[d["kind"] == "kernels"]["holds"].sum()),
            "kernel_draws": len(kern)})
    return pd.DataFrame(rows)


def run(reference_components: Path, kernel_draws: int, seed_draws: int, spread: float,
        time_scale: float, hardware: str, jobs: int, work: Path = WORK_DIR
        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every draw, then the summary against the reference components table."""
    reference = headline_values(pd.read_parquet(reference_components, columns=HEADLINE_COLUMNS))
    rows = []
    for draw in draws(kernel_draws, seed_draws, spread):
        t0 = time.perf_counter()
        values = headline_values(run_draw(draw, work, time_scale, hardware, jobs))
        for h in HEADLINES:
            rows.append({"draw": draw.name, "kind": draw.kind, "seed": draw.seed,
                         **{f"scale_{f}": getattr(draw.scale, f)
                            for f in KernelScale.__dataclass_fields__},
                         "headline": h.key, "value": values[h.key], "holds": h.holds(values[h.key])})
        print(f"{draw.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    per_draw = pd.DataFrame(rows)
    return summarize(reference, per_draw), per_draw


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stepdecomp.run.sensitivity",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--reference", type=Path,
                    default=REPORTS_DIR / "tables" / "step_components.parquet",
                    help="components table of the reference report (default: reports/tables/)")
    ap.add_argument("--kernel-draws", type=int, default=DEFAULT_KERNEL_DRAWS)
    ap.add_argument("--seed-draws", type=int, default=DEFAULT_SEED_DRAWS)
    ap.add_argument("--spread", type=float, default=DEFAULT_SPREAD)
    ap.add_argument("--time-scale", type=float, default=DEFAULT_TIME_SCALE)
    ap.add_argument("--hardware", default="h100-sxm")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=WORK_DIR)
    ap.add_argument("--out", type=Path, default=REPORTS_DIR / "tables")
    args = ap.parse_args(argv)
    if not args.reference.is_file():
        ap.error(f"{display_path(args.reference)} does not exist: run `make report` first")
    summary, per_draw = run(args.reference, args.kernel_draws, args.seed_draws, args.spread,
                            args.time_scale, args.hardware, args.jobs, args.work)
    args.out.mkdir(parents=True, exist_ok=True)
    artefacts.write_csv(summary, args.out / f"{SENSITIVITY}.csv")
    artefacts.write_csv(per_draw, args.out / "sensitivity_draws.csv")
    print(summary[["headline", "reference", "holds_seed_draws", "seed_draws",
                   "holds_kernel_draws", "kernel_draws"]].to_string(index=False))
    print(f"-> {display_path(args.out / f'{SENSITIVITY}.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
