"""FINDINGS' "The MoE GEMM": what the fused-MoE cost changed, per MoE model.

Reads two tables of the physical model (stepdecomp.stats.moecheck): the GEMM estimate of each MoE
model and TP at a few token counts, before (one roofline over the expected distinct experts,
which saturates at E within a few tokens) and now (per-expert token counts priced from the
kernel tables) — ``moe_gemm_check``; and, per MoE experiment and target, the Pearson r of the
physical total with the old and the new GEMM — ``moe_delta_r``; and their summary per MoE model
(from which token count the estimate before is flat, the growth of both from there, the median
Δr) — ``moe_check_summary``. The per-experiment table (seed vs physical) adds the Δr against the
seed with its paired interval.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from ..core import tables as names
from .inputs import exp, require_columns

MOE_CHECK_COLUMNS = ["hf_id", "tp", "tokens", "gemm_old_us", "gemm_new_us"]
MOE_DELTA_COLUMNS = ["experiment_id", "hf_id", "r_old", "r_new", "delta_r"]
#: The columns of moe_check_summary the section reads (one target: no ``target`` column).
MOE_SUMMARY_COLUMNS = ["hf_id", "tp", "flat_from_tokens", "tokens_max", "growth_old",
                       "growth_new", "median_delta_r"]
#: A change of the physical r (new GEMM − old GEMM) below this either way is no change.
MOE_DELTA_NEGLIGIBLE = 0.02


_require = require_columns


def _experiments(hf_id: str, delta: pd.DataFrame | None,
                 per: pd.DataFrame | None) -> list[dict[str, Any]]:
    """The model's experiments: physical r with the old and the new GEMM (``delta``) and
    the Δr against the seed with its paired interval (``per``)."""
    if delta is None:
        return []
    mine = delta[delta["hf_id"] == hf_id]
    labels = None if per is None else per.set_index("experiment_id")
    rows = []
    for _, d in mine.sort_values("experiment_id").iterrows():
        e = d["experiment_id"]
        row = labels.loc[e] if labels is not None and e in labels.index else None
        label = exp(row) if row is not None else {"model": hf_id, "workload": e}
        rows.append({**label, "r_old": d["r_old"], "r_new": d["r_new"], "delta_r": d["delta_r"],
                     "seed_delta": math.nan if row is None else row["delta_r"],
                     "ci_low": math.nan if row is None else row.get("delta_ci_low", math.nan),
                     "ci_high": math.nan if row is None else row.get("delta_ci_high", math.nan)})
    return rows


def moe_check_context(check: pd.DataFrame, summary: pd.DataFrame | None,
                      delta: pd.DataFrame | None = None, per: pd.DataFrame | None = None,
                      models_by_hf_id: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """Per MoE model and TP of ``check`` (MOE_CHECK_COLUMNS; lower_bound_us and moe_source
    shown when present): its table of old and new GEMM estimates and, from ``summary``
    (MOE_SUMMARY_COLUMNS of one target: stats.moecheck.moe_summary), the token count from
    which the old one is flat and how much each grows from there to the largest count; per
    experiment (``delta``: MOE_DELTA_COLUMNS of one target, ``per``: seed vs physical) the
    physical r with the old and the new GEMM and the Δr against the seed; and whether the new
    GEMM changes the physical r (``change``: up, none, down, by the summary's median of
    r_new − r_old against MOE_DELTA_NEGLIGIBLE; None without ``delta``)."""
    _require(check, MOE_CHECK_COLUMNS, names.MOE_CHECK)
    if summary is None:
        raise KeyError(f"{names.MOE_CHECK} is there but not {names.MOE_SUMMARY} "
                       f"({names.writer(names.MOE_SUMMARY)} writes both)")
    _require(summary, MOE_SUMMARY_COLUMNS, names.MOE_SUMMARY)
    if delta is not None:
        _require(delta, MOE_DELTA_COLUMNS, names.MOE_DELTA)
    labels = models_by_hf_id or {}
    by_model = {(str(r.hf_id), int(r.tp)): r for r in summary.itertuples(index=False)}
    models = []
    for (hf_id, tp), g in check.groupby(["hf_id", "tp"], sort=True):
        g = g.sort_values("tokens").reset_index(drop=True)
        if (hf_id, int(tp)) not in by_model:
            raise KeyError(f"{names.MOE_SUMMARY} has no row of {hf_id} at TP {int(tp)} "
                           f"({names.writer(names.MOE_SUMMARY)} writes it with "
                           f"{names.MOE_CHECK})")
        s = by_model[(hf_id, int(tp))]
        experiments = _experiments(hf_id, delta, per)
        med = float(s.median_delta_r) if delta is not None else math.nan
        cols = ["tokens", "gemm_old_us", "gemm_new_us",
                *[c for c in ("lower_bound_us", "moe_source") if c in g]]
        models.append({
            "model": " / ".join(labels.get(hf_id, [])) or hf_id, "hf_id": hf_id, "tp": int(tp),
            "table": g[cols], "flat_from": int(s.flat_from_tokens),
            "tokens_max": int(s.tokens_max), "flat": int(s.flat_from_tokens) < int(s.tokens_max),
            "growth_old": float(s.growth_old), "growth_new": float(s.growth_new),
            "experiments": experiments, "median_delta": med,
            "change": None if math.isnan(med) else "up" if med > MOE_DELTA_NEGLIGIBLE
            else "down" if med < -MOE_DELTA_NEGLIGIBLE else "none"})
    return {"models": models}
