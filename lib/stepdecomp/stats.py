"""Correlations and the hypothesis verdict, with the seed's N/A rules.

Pearson r of a component against ``step.duration_us`` uses the rows where both are present
and the duration is > 0; r is N/A (NaN, an empty CSV cell) when fewer than 10 rows remain or
either side has zero variance. ``n_steps`` is the number of rows r was computed on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .phases import phase_masks

DURATION = "step.duration_us"
MIN_ROWS = 10
R_THRESHOLD = 0.8
SEED_COMPONENTS = ["prefill_gemm_us", "prefill_attn_us", "decode_gemm_us", "total_analytical_us"]
PREFILL_BASELINE = "batch.prefill_tokens (baseline)"
DECODE_BASELINE = "batch.decode_tokens (baseline)"

#: The rows of the seed's "Correlation on Pure-Phase Subsets" table, in its order.
PURE_PHASE_ROWS: list[tuple[str, str]] = [
    ("pure_prefill", "prefill_gemm_us"),
    ("pure_prefill", "prefill_attn_us"),
    ("pure_prefill", "total_analytical_us"),
    ("pure_prefill", PREFILL_BASELINE),
    ("pure_decode", "decode_gemm_us"),
    ("pure_decode", "decode_attn_us"),
    ("pure_decode", "total_analytical_us"),
    ("pure_decode", DECODE_BASELINE),
    ("all", "total_analytical_us"),
]

#: The hypothesis: at least 2 of these reach r > 0.8.
HYPOTHESIS_ROWS: list[tuple[str, str]] = [
    ("pure_prefill", "prefill_gemm_us"),
    ("pure_prefill", "prefill_attn_us"),
    ("pure_decode", "decode_gemm_us"),
    ("pure_decode", "decode_attn_us"),
]
HYPOTHESIS_MIN_PASSING = 2


def _source_column(component: str) -> str:
    """Baseline rows correlate a raw batch column; the name in the table carries a suffix."""
    return component.removesuffix(" (baseline)")


def _valid(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.isfinite(x) & np.isfinite(y) & (y > 0)


def pearson_r(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[float, int]:
    """(r, n) with the seed's N/A rules: NaN when n < 10 or zero variance on either side."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = _valid(x, y)
    x, y = x[keep], y[keep]
    n = int(keep.sum())
    if n < MIN_ROWS or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), n
    xc, yc = x - x.mean(), y - y.mean()
    return float((xc @ yc) / np.sqrt((xc @ xc) * (yc @ yc))), n


def subsets(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """The seed's subsets: its three phase masks plus ``all``."""
    return {**phase_masks(frame), "all": pd.Series(True, index=frame.index)}


def pure_phase_correlations(components: pd.DataFrame,
                            rows: Iterable[tuple[str, str]] = PURE_PHASE_ROWS) -> pd.DataFrame:
    """subset, component, pearson_r, n_steps — the seed's pure-phase table."""
    masks = subsets(components)
    out = []
    for subset, component in rows:
        sub = components[masks[subset]]
        r, n = pearson_r(sub[_source_column(component)], sub[DURATION])
        out.append({"subset": subset, "component": component, "pearson_r": r, "n_steps": n})
    return pd.DataFrame(out)


def per_experiment_correlations(components: pd.DataFrame,
                                columns: Sequence[str] = SEED_COMPONENTS) -> pd.DataFrame:
    """experiment_id, model, workload, component, pearson_r, n_steps over all steps of
    each experiment (the seed's per-experiment table; it showed total_analytical_us)."""
    out = []
    for (exp, model, workload), g in components.groupby(["experiment_id", "model", "workload"],
                                                        sort=True, observed=True):
        for c in columns:
            r, n = pearson_r(g[c], g[DURATION])
            out.append({"experiment_id": exp, "model": model, "workload": workload,
                        "component": c, "pearson_r": r, "n_steps": n})
    return pd.DataFrame(out)


@dataclass(frozen=True)
class Verdict:
    """The hypothesis check: which of the four criteria reach r > 0.8."""

    table: pd.DataFrame          # subset, component, pearson_r, n_steps, passed
    passing: int
    required: int = HYPOTHESIS_MIN_PASSING

    @property
    def supported(self) -> bool:
        return self.passing >= self.required

    @property
    def label(self) -> str:
        return "SUPPORTED" if self.supported else "NOT SUPPORTED"

    def sentence(self) -> str:
        return (f"{self.passing}/{len(self.table)} components reach r > {R_THRESHOLD} on their "
                f"pure-phase subset (at least {self.required} needed): {self.label}.")


def hypothesis_verdict(pure: pd.DataFrame,
                       rows: Sequence[tuple[str, str]] = HYPOTHESIS_ROWS) -> Verdict:
    """Evaluate the seed's hypothesis on a pure-phase table (pure_phase_correlations);
    an N/A r does not pass."""
    keys = pd.DataFrame(list(rows), columns=["subset", "component"])
    table = keys.merge(pure, on=["subset", "component"], how="left")
    table["passed"] = table["pearson_r"].gt(R_THRESHOLD)
    return Verdict(table=table, passing=int(table["passed"].sum()))
