"""Step-time model benchmark (`make bench`): prints times against the goal, asserts nothing.

Fits BLIS's coefficients to 1 M synthetic steps (tests/stepmodel_synthetic.py: 16
experiments, forward times from a known β plus 1 % noise) and evaluates them as notebook 07
does: the per-hardware fit with its cluster bootstrap over experiments, the per-model fits,
and every predictor (fitted, shipped, physical, gradient boosting) under leave-one-workload-out
and leave-one-model-out. Goal: at most GOAL_S seconds on the 2-core machine. The synthetic
frame's construction is timed apart (it is not part of the fit).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from stepdecomp.model import blis_basis
from stepdecomp.stepmodel import fit as stepmodel, evaluate  # noqa: E402
from stepdecomp.hw.specs import load_gpu_spec, load_model_specs  # noqa: E402
from stepmodel_synthetic import TRUE_BETA, synthetic_components  # noqa: E402

N_STEPS = 1_000_000
GOAL_S = 30.0


def main() -> None:
    t0 = time.perf_counter()
    frame = synthetic_components(N_STEPS, noise=0.01, seed=0)
    t_gen = time.perf_counter() - t0

    timings: dict[str, float] = {}
    start = time.perf_counter()
    t = time.perf_counter()
    data = stepmodel.step_data(frame, load_model_specs(frame["hf_id"].unique()),
                               load_gpu_spec("h100-sxm"))
    timings["basis + usable steps"] = time.perf_counter() - t
    t = time.perf_counter()
    fit = stepmodel.fit_hardware(data)
    timings[f"per-hardware fit + {stepmodel.N_RESAMPLES} cluster resamples"] = time.perf_counter() - t
    t = time.perf_counter()
    stepmodel.fit_per_model(data)
    timings["per-model fits + resamples"] = time.perf_counter() - t
    shipped = blis_basis.load_coefficients()
    results = []
    for scheme in evaluate.SCHEMES:
        t = time.perf_counter()
        results.append(evaluate.held_out(data, scheme, shipped))
        timings[f"held out by {scheme} (4 predictors)"] = time.perf_counter() - t
    t = time.perf_counter()
    table = evaluate.error_table(results)
    timings["error table"] = time.perf_counter() - t
    total = time.perf_counter() - start

    print(f"step-time model on {len(data):,} synthetic steps ({t_gen:.1f} s to build them)")
    for name, secs in timings.items():
        print(f"  {name:<48} {secs:7.2f} s")
    verdict = "within" if total <= GOAL_S else "OVER"
    print(f"  {'fit + evaluation, total':<48} {total:7.2f} s  ({verdict} the {GOAL_S:.0f} s goal)")
    pooled = table[table["held_out"] == evaluate.ALL_GROUPS]
    fitted = pooled[pooled["predictor"] == "fitted"].set_index("scheme")
    ok = fit.identified
    worst = max(abs(b / t - 1) for b, t in zip(fit.beta[ok], TRUE_BETA[ok]))
    print(f"  identified coefficients {int(ok.sum())}/11, worst relative error {worst:.2%}; "
          f"held-out median APE of the fitted vector: "
          + ", ".join(f"{s} {fitted.loc[s, 'median_ape_pct']:.2f} %"
                      for s in evaluate.SCHEMES))


if __name__ == "__main__":
    main()
