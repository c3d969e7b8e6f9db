"""Where the physical model's MoE numbers come from, and what they change.

* :func:`fit_moe_efficiency` refits physical.MOE_EFFICIENCY (the efficiency curve that prices
  a fused-MoE shape without measured tables) from aiconfigurator-core's MoE table.
* :func:`moe_gemm_check` sets the step GEMM estimate of each MoE model before this model of
  the fused-MoE kernel (one roofline over the expected distinct experts, flat once all E
  experts are read) beside the current one (physical.step_gemm_us), with the HBM lower bound.
* :func:`moe_delta_r` measures what that change does to each MoE experiment's Pearson r of
  phys_total_us against the step-time targets.
* :func:`moe_summary` states both per MoE model and target (the table ``moe_check_summary``):
  from which token count the GEMM estimate before was flat (:func:`flat_from`), how much each
  estimate grows from there, and the median Δr over the model's experiments.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from . import correlation
from ..core import columns, tables
from ..hw import kernels
from ..model.physical import (MOE_EFFICIENCY_LOG2_KNOTS, fused_moe_bytes, fused_moe_flops,
                              gemm_flops, hbm_lower_bound_us, layer_weight_bytes, roofline_us,
                              step_gemm_us, tokens_per_expert)
from ..hw.specs import WEIGHT_BYTES_PER_PARAM, GpuSpec, ModelSpec

#: The kernel system and the largest moe_tp whose rows the curve is fitted to (TP within one
#: 8-GPU node; the tables' moe_tp 16 and 32 split experts into slivers no run here uses).
MOE_EFFICIENCY_FIT_SYSTEM = "h100_sxm"
MOE_EFFICIENCY_FIT_MAX_TP = 8
#: The most a kernel can reach of its roofline: η is capped here.
MOE_MAX_EFFICIENCY = 1.0
#: Token counts at which :func:`moe_gemm_check` compares the GEMM estimates.
MOE_CHECK_TOKENS = (1, 16, 64, 256, 1024)
#: The step-time targets :func:`moe_delta_r` correlates with: every registered target.
DELTA_R_TARGETS = columns.TARGETS
#: An estimate is flat from the smallest token count at which it is within this factor of
#: its value at the largest count.
MOE_FLAT_GROWTH = 1.1
#: The table :func:`moe_summary` makes (core.tables.MOE_SUMMARY) and its columns.
SUMMARY_TABLE = tables.MOE_SUMMARY
SUMMARY_COLUMNS = ["hf_id", "tp", "target", "flat_from_tokens", "tokens_max", "growth_old",
                   "growth_new", "experiments", "median_delta_r"]


def fit_moe_efficiency(gpu: GpuSpec, precision: str, system: str = MOE_EFFICIENCY_FIT_SYSTEM,
                       max_tp: int = MOE_EFFICIENCY_FIT_MAX_TP) -> pd.DataFrame:
    """The efficiency curve behind physical.MOE_EFFICIENCY, refitted from ``system``'s table.

    Per measured row (one layer, ``precision``'s kernel, balanced routing; duplicates
    averaged): η = roofline_us(fused_moe_flops, fused_moe_bytes) on ``gpu`` / measured
    latency. Rows are binned by round(log2(tokens·k/E)) clipped to the knots; per knot:
    n_rows, the median (capped at MOE_MAX_EFFICIENCY) and the quartiles.
    """
    m = kernels.load_tables(system, precision).moe
    m = m[m["moe_tp_size"] <= max_tp].groupby(
        ["hidden_size", "inter_size", "topk", "num_experts", "moe_tp_size", "num_tokens"],
        as_index=False)["latency"].mean()
    shape = SimpleNamespace(num_experts=m["num_experts"].to_numpy(np.float64),
                            experts_per_token=m["topk"].to_numpy(np.float64), num_layers=1.0,
                            expert_params=3.0 * m["hidden_size"].to_numpy(np.float64)
                            * m["inter_size"].to_numpy(np.float64),
                            bytes_per_param=float(WEIGHT_BYTES_PER_PARAM[precision]))
    n, tp = m["num_tokens"].to_numpy(np.float64), m["moe_tp_size"].to_numpy(np.float64)
    eta = roofline_us(fused_moe_flops(n, shape, tp), fused_moe_bytes(n, shape, tp), gpu) \
        / (m["latency"].to_numpy(np.float64) * 1e3)
    lo, hi = MOE_EFFICIENCY_LOG2_KNOTS[0], MOE_EFFICIENCY_LOG2_KNOTS[-1]
    knot = np.clip(np.round(np.log2(tokens_per_expert(n, shape))), lo, hi).astype(int)
    g = pd.DataFrame({"log2_tokens_per_expert": knot, "eta": eta}).groupby(
        "log2_tokens_per_expert")["eta"]
    out = pd.DataFrame({"n_rows": g.size(), "eta_q25": g.quantile(0.25),
                        "eta_median": np.minimum(g.median(), MOE_MAX_EFFICIENCY),
                        "eta_q75": g.quantile(0.75)})
    return out.reindex(list(MOE_EFFICIENCY_LOG2_KNOTS)).rename_axis(
        "log2_tokens_per_expert").reset_index()


def moe_gemm_check(specs: Mapping[str, ModelSpec], pairs: Iterable[tuple[str, int]],
                   gpu: GpuSpec, tokens: Iterable[int] = MOE_CHECK_TOKENS) -> pd.DataFrame:
    """Per MoE model and TP of ``pairs`` (e.g. ``steps[["hf_id", "tp"]].drop_duplicates()
    .itertuples(index=False)``; dense models are skipped) and per token count: the step GEMM
    estimate before (gemm_old_us: roofline(gemm_flops, layer_weight_bytes), the expected
    distinct experts saturating at E) and now (gemm_new_us, physical.step_gemm_us), its
    fused-MoE part (moe_us) and source, and the HBM lower bound (≤ gemm_new_us)."""
    n = np.asarray(list(tokens), dtype=np.float64)
    rows = []
    for hf_id, tp in sorted({(h, int(t)) for h, t in pairs}):
        spec = specs[hf_id]
        if not spec.is_moe:
            continue
        new, moe, source = step_gemm_us(n, spec, tp, gpu)
        old = roofline_us(gemm_flops(n, spec, tp), layer_weight_bytes(n, spec, tp), gpu)
        bound = float(hbm_lower_bound_us(spec, tp, gpu))
        rows += [{"hf_id": hf_id, "tp": tp, "tokens": int(t),
                  "tokens_per_expert": float(tokens_per_expert(t, spec)), "gemm_old_us": o,
                  "gemm_new_us": w, "moe_us": e, "moe_source": source, "lower_bound_us": bound}
                 for t, o, w, e in zip(n, old, new, moe)]
    return pd.DataFrame(rows, columns=["hf_id", "tp", "tokens", "tokens_per_expert", "gemm_old_us",
                                       "gemm_new_us", "moe_us", "moe_source", "lower_bound_us"])


def moe_delta_r(frame: pd.DataFrame, specs: Mapping[str, ModelSpec], gpu: GpuSpec,
                targets: Iterable[str] = DELTA_R_TARGETS) -> pd.DataFrame:
    """Per MoE experiment and target: Pearson r (correlation.pearson_r) of phys_total_us before and
    after the fused-MoE model, and delta_r = r_new − r_old.

    ``frame``: the step_components rows with hf_id (e.g. merged from the steps on
    experiment_id and step.id), tp, batch.prefill_tokens, batch.decode_tokens, phys_total_us,
    phys_gemm_us and the target columns. The old total is phys_total_us − phys_gemm_us + the
    old GEMM roofline of P + D tokens. The old all-reduce (no per-call latency) differed from
    today's by a constant per step with tokens, which leaves r unchanged, so delta_r is the
    MoE change alone.
    """
    moe_ids = [h for h in frame["hf_id"].unique() if specs[h].is_moe]
    rows = []
    for (exp, hf_id, tp), g in frame[frame["hf_id"].isin(moe_ids)].groupby(
            ["experiment_id", "hf_id", "tp"], sort=True):
        spec, t = specs[hf_id], int(tp)
        n = (g["batch.prefill_tokens"] + g["batch.decode_tokens"]).to_numpy(np.float64)
        old_gemm = roofline_us(gemm_flops(n, spec, t), layer_weight_bytes(n, spec, t), gpu)
        new_total = g["phys_total_us"].to_numpy(np.float64)
        old_total = new_total - g["phys_gemm_us"].to_numpy(np.float64) + old_gemm
        for target in targets:
            y = g[target].to_numpy(np.float64)
            (r_old, n_steps), (r_new, _) = (correlation.pearson_r(old_total, y),
                                            correlation.pearson_r(new_total, y))
            rows.append({"experiment_id": exp, "hf_id": hf_id, "target": target, "n_steps": n_steps,
                         "r_old": r_old, "r_new": r_new, "delta_r": r_new - r_old})
    return pd.DataFrame(rows, columns=["experiment_id", "hf_id", "target", "n_steps", "r_old",
                                       "r_new", "delta_r"])


def moe_check_tables(steps: pd.DataFrame, components: pd.DataFrame, specs: Mapping[str, ModelSpec],
               gpu: GpuSpec, targets: str | Iterable[str] = DELTA_R_TARGETS
               ) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """The MoE check of a run (notebook 04 writes both; FINDINGS' MoE subsection reads them):
    :func:`moe_gemm_check` on each (HF model, TP) of ``steps`` (dense models are skipped) and
    :func:`moe_delta_r` of ``components`` (step_components, hf_id joined from ``steps`` on
    experiment_id) on ``targets``. (None, None) when no experiment runs an MoE model."""
    from .attribution import with_gemm

    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    pairs = steps[["hf_id", "tp"]].drop_duplicates().itertuples(index=False)
    check = moe_gemm_check(specs, pairs, gpu)
    if check.empty:
        return None, None
    keys = steps[["experiment_id", "hf_id"]].drop_duplicates()
    frame = with_gemm(components).merge(keys, on="experiment_id", how="inner")
    return check, moe_delta_r(frame, specs, gpu, targets=targets)


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


def moe_summary(check: pd.DataFrame, delta: pd.DataFrame,
                targets: str | Iterable[str] = DELTA_R_TARGETS) -> pd.DataFrame:
    """Per (hf_id, tp) of :func:`moe_gemm_check`'s table (sorted) and target of ``targets``:
    the token count from which the GEMM estimate before is flat (:func:`flat_from`), the
    largest count, how much the estimate before and the one now grow from the first to the
    second (gemm at the largest count / gemm at flat_from), and over the model's experiments
    in ``delta`` (:func:`moe_delta_r`, same hf_id and target) their number and the median of
    delta_r (NaN when none)."""
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    rows = []
    for (hf_id, tp), g in check.groupby(["hf_id", "tp"], sort=True):
        g = g.sort_values("tokens").reset_index(drop=True)
        start = flat_from(g["tokens"], g["gemm_old_us"])
        top = g.iloc[-1]
        at = g[g["tokens"] == start].iloc[0]
        for target in targets:
            mine = delta.loc[(delta["hf_id"] == hf_id) & (delta["target"] == target), "delta_r"]
            rows.append({"hf_id": hf_id, "tp": int(tp), "target": target,
                         "flat_from_tokens": start, "tokens_max": int(top["tokens"]),
                         "growth_old": float(top["gemm_old_us"] / at["gemm_old_us"]),
                         "growth_new": float(top["gemm_new_us"] / at["gemm_new_us"]),
                         "experiments": len(mine),
                         "median_delta_r": float(mine.astype(float).median())})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
