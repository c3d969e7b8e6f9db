"""Phase split of steps, exactly as the seed defines it.

pure_prefill: decode_tokens == 0; pure_decode: prefill_tokens == 0; mixed: both > 0. The
three subsets are independent masks, as in the seed (a step with no tokens at all would be
in both pure subsets; none occurs in vLLM traces, and ``phase_label`` calls it ``empty``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..core.columns import DECODE_TOKENS as DECODE, PHASES, PREFILL_TOKENS as PREFILL


def _tokens(steps: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """The two token columns, which must be complete: the loader rejects a step without
    them, so a hole here means the table did not come from the loader; say which column
    and how many rows instead of failing later on a nullable mask."""
    for col in (PREFILL, DECODE):
        if col not in steps:
            raise KeyError(f"steps table has no {col!r} column (load it with load.load_dataset)")
        missing = int(steps[col].isna().sum())
        if missing:
            raise ValueError(f"{missing} step(s) have no {col!r}: the phase of a step needs both "
                             f"token counts (the loader rejects such steps)")
    return steps[PREFILL], steps[DECODE]


def phase_masks(steps: pd.DataFrame) -> dict[str, pd.Series]:
    p, d = _tokens(steps)
    return {"pure_prefill": (d == 0).astype(bool), "pure_decode": (p == 0).astype(bool),
            "mixed": ((p > 0) & (d > 0)).astype(bool)}


def phase_label(steps: pd.DataFrame) -> pd.Series:
    """One label per step: pure_prefill / pure_decode / mixed (or empty for 0 + 0 tokens)."""
    p, d = (c.to_numpy(dtype=np.int64) for c in _tokens(steps))
    label = np.select([(p > 0) & (d == 0), (p == 0) & (d > 0), (p > 0) & (d > 0)], PHASES, "empty")
    return pd.Series(pd.Categorical(label, categories=PHASES + ["empty"]), index=steps.index,
                     name="phase")


def phase_breakdown(steps: pd.DataFrame) -> pd.DataFrame:
    """phase, steps, pct (percent of all steps) — the seed's Phase Breakdown table."""
    total = len(steps)
    rows = [{"phase": name, "steps": int(mask.sum()),
             "pct": 100.0 * mask.sum() / total if total else np.nan}
            for name, mask in phase_masks(steps).items()]
    return pd.DataFrame(rows)


def phase_breakdown_by_experiment(steps: pd.DataFrame) -> pd.DataFrame:
    """Steps per phase for every experiment (rows) — where the pooled counts come from."""
    label = phase_label(steps)
    table = pd.crosstab(steps["experiment_id"], label).reindex(columns=PHASES, fill_value=0)
    table.columns.name = None
    return table
