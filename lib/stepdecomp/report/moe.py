"""FINDINGS' "The MoE GEMM": what the fused-MoE cost changed, per MoE model.

Reads two tables of the physical model (stepdecomp.stats.moecheck): the GEMM estimate of each MoE
model and TP at a few token counts, before (one roofline over the expected distinct experts,
which saturates at E within a few tokens) and now (per-expert token counts priced from the
kernel tables) — ``moe_gemm_check``; and, per MoE experiment and target, the Pearson r of the
physical total with the old and the new GEMM — ``moe_delta_r``. The per-experiment table
(seed vs physical) adds the Δr against the seed with its paired interval.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from .inputs import exp, require_columns

MOE_CHECK_COLUMNS = ["hf_id", "tp", "tokens", "gemm_old_us", "gemm_new_us"]
MOE_DELTA_COLUMNS = ["experiment_id", "hf_id", "r_old", "r_new", "delta_r"]
#: An estimate is flat from the smallest token count at which it is within this factor of
#: its value at the largest count.
MOE_FLAT_GROWTH = 1.1
#: A change of the physical r (new GEMM − old GEMM) below this either way is no change.
MOE_DELTA_NEGLIGIBLE = 0.02


_require = require_columns


def flat_from(tokens: pd.Series, gemm_us: pd.Series) -> int:
    """The smallest token count from which ``gemm_us`` stays within MOE_FLAT_GROWTH of its
    value at the largest count (the largest count itself when it never does before)."""
    t = tokens.to_numpy(float)
    g = gemm_us.to_numpy(float)
    order = t.argsort()
    t, g = t[order], g[order]
    start = len(t) - 1
    while start > 0 and g[-1] / g[start - 1] < MOE_FLAT_GROWTH and \
            g[start - 1] / g[-1] < MOE_FLAT_GROWTH:
        start -= 1
    return int(t[start])


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


def moe_check_context(check: pd.DataFrame, delta: pd.DataFrame | None = None,
                      per: pd.DataFrame | None = None,
                      models_by_hf_id: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """Per MoE model and TP of ``check`` (MOE_CHECK_COLUMNS; lower_bound_us and moe_source
    shown when present): its table of old and new GEMM estimates, the token count from which
    the old one is flat (:func:`flat_from`) and how much each grows from there to the largest
    count; per experiment (``delta``: MOE_DELTA_COLUMNS of one target, ``per``: seed vs
    physical) the physical r with the old and the new GEMM and the Δr against the seed; and
    whether the new GEMM changes the physical r (``change``: up, none, down, by the median of
    r_new − r_old against MOE_DELTA_NEGLIGIBLE)."""
    _require(check, MOE_CHECK_COLUMNS, "moe_gemm_check")
    if delta is not None:
        _require(delta, MOE_DELTA_COLUMNS, "moe_delta_r")
    names = models_by_hf_id or {}
    models = []
    for (hf_id, tp), g in check.groupby(["hf_id", "tp"], sort=True):
        g = g.sort_values("tokens").reset_index(drop=True)
        start = flat_from(g["tokens"], g["gemm_old_us"])
        top = g.iloc[-1]
        at = g[g["tokens"] == start].iloc[0]
        experiments = _experiments(hf_id, delta, per)
        med = pd.Series([e["delta_r"] for e in experiments], dtype=float).median()
        cols = ["tokens", "gemm_old_us", "gemm_new_us",
                *[c for c in ("lower_bound_us", "moe_source") if c in g]]
        models.append({
            "model": " / ".join(names.get(hf_id, [])) or hf_id, "hf_id": hf_id, "tp": int(tp),
            "table": g[cols], "flat_from": start, "tokens_max": int(top["tokens"]),
            "flat": start < int(top["tokens"]),
            "growth_old": float(top["gemm_old_us"] / at["gemm_old_us"]),
            "growth_new": float(top["gemm_new_us"] / at["gemm_new_us"]),
            "experiments": experiments, "median_delta": med,
            "change": None if math.isnan(med) else "up" if med > MOE_DELTA_NEGLIGIBLE
            else "down" if med < -MOE_DELTA_NEGLIGIBLE else "none"})
    return {"models": models}
