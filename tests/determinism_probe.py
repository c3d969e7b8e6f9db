"""Write every correlation table of stats.py for a fixed synthetic dataset, as the report does.

Run as ``python tests/determinism_probe.py OUT_DIR`` (test_stats runs it under several
OPENBLAS_CORETYPE values, standing in for other machines) or call ``write_tables``. The data
are built from integers, so they are the same bits everywhere; ``blas_dot.txt`` records what
a BLAS dot of the same vectors gives, which does depend on the kernel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from stepdecomp.stats import attribution, correlation as stats
from stepdecomp.core import artefacts  # noqa: E402

ROWS_PER_EXPERIMENT = 12_000


def components(seed: int = 7) -> pd.DataFrame:
    """Three experiments of steps with seed and physical component columns."""
    rng = np.random.default_rng(seed)
    frames = []
    for k, (model, workload) in enumerate([("llama-2-7b", "general"), ("mixtral-8x7b-v0-1", "codegen"),
                                           ("llama-2-70b-hf", "reasoning")]):
        n = ROWS_PER_EXPERIMENT
        pre = rng.integers(0, 2049, n) * (rng.integers(0, 4, n) == 0)
        dec = rng.integers(0, 256, n) * (rng.integers(0, 20, n) > 0)
        ctx = rng.integers(100, 400_000, n)
        noise = rng.integers(-500_000, 500_000, n) * 1e-3
        f = pd.DataFrame({"experiment_id": f"exp-{k}", "model": model, "workload": workload,
                          "batch.prefill_tokens": pre, "batch.decode_tokens": dec})
        f["prefill_gemm_us"] = pre * (1.37 + k)
        f["prefill_attn_us"] = pre * pre * 3.1e-4
        f["decode_gemm_us"] = dec * (0.71 + k)
        f["decode_attn_us"] = 0.0
        f["total_analytical_us"] = f[["prefill_gemm_us", "prefill_attn_us", "decode_gemm_us"]].sum(axis=1)
        f["phys_prefill_gemm_us"] = pre * 2.9e-1 + (pre > 0) * 3.3
        f["phys_prefill_attn_us"] = pre * pre * 7.7e-5
        f["phys_decode_gemm_us"] = np.where(dec > 0, 4019.0 + dec * 0.37, 0.0)
        f["phys_decode_attn_us"] = ctx * 1.3e-3 * (dec > 0)
        f["phys_allreduce_us"] = (pre + dec) * 0.05 * k
        f["phys_lm_head_us"] = np.where(dec > 0, 17.0, 0.0)
        f["step.id"] = np.arange(n)
        f["phys_total_us"] = f[stats.PHYS_COMPONENTS].sum(axis=1)
        f["phys_lower_bound_us"] = np.where(pre + dec > 0, 4019.0, 0.0)
        f["phys_attn_from_journeys"] = True
        f["step.duration_us"] = (800 + 1.1 * f["phys_total_us"] + noise).round()
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def write_tables(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    c = components()
    boot = {"n_resamples": 60}
    fit = attribution.attribute(c, n_resamples=60)
    x, y = c["phys_total_us"].to_numpy(), c["step.duration_us"].to_numpy()
    iid = stats.bootstrap_pearson_ci(x, y, 60, 0, max_rows=5_000)   # the m-out-of-n (tanh) path
    tables = {
        "pure_phase_correlations": stats.pure_phase_correlations(c),
        "per_experiment_correlations": stats.per_experiment_correlations(c),
        "physical_pure_phase_correlations": stats.physical_pure_phase_correlations(c, **boot),
        "physical_per_experiment_correlations": stats.physical_per_experiment_correlations(c, **boot),
        "component_attribution": fit.component_attribution,
        "fit_summary": fit.fit_summary,
        "within_experiment_verdict": stats.within_experiment_table(c, **boot),
        "iid_reference": pd.DataFrame({"ci_low": [iid[0]], "ci_high": [iid[1]]}),
        "lower_bound_check": stats.lower_bound_check(c),
    }
    for name, frame in tables.items():
        artefacts.write_csv(frame, out / f"{name}.csv")
    x = c["total_analytical_us"].to_numpy() - c["total_analytical_us"].mean()
    y = c["step.duration_us"].to_numpy() - c["step.duration_us"].mean()
    (out / "blas_dot.txt").write_text(repr(float(x @ y)))


if __name__ == "__main__":
    write_tables(Path(sys.argv[1]))
