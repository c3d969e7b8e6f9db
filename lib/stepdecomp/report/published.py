"""FINDINGS' "Generated Data vs the Published Study": the study's headline numbers beside
the analysed data's, and the replay's client metrics beside the published ones."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..traces.experiments import short_name
from .inputs import FindingsInput
from .render import (ABSENT_PREFILL_PCT, R_AGREE, SHARE_AGREE_FACTOR, SHARE_AGREE_POINTS,
                     render_section)


def shares_agree(ours: float, published: float) -> bool:
    """Two phase shares (%) agree: closer than SHARE_AGREE_POINTS points and within
    SHARE_AGREE_FACTOR of each other (both 0 agree; one 0 does not)."""
    if ours == published:
        return True
    if min(ours, published) <= 0:
        return False
    return (abs(ours - published) < SHARE_AGREE_POINTS
            and max(ours, published) / min(ours, published) <= SHARE_AGREE_FACTOR)
from .seed import totals


def load_published(path: Path | None = None) -> dict:
    """The seed study's published numbers (data/seed_published.json)."""
    import json

    from ..core.paths import DATA_DIR

    return json.loads((path or DATA_DIR / "seed_published.json").read_text())


def published_comparison(fi: FindingsInput, published: dict) -> pd.DataFrame:
    """metric, published, this_data: the study's headline numbers beside the analysed data's."""
    bd = fi.breakdown.set_index("phase")
    total_pub = published["total_steps"]
    rows = [("steps", total_pub, int(bd["steps"].sum()))]
    for phase, n in published["phase_breakdown"].items():
        rows.append((f"{phase} share (%)", 100 * n / total_pub, float(bd.loc[phase, "pct"])))
    pure = fi.pure.set_index(["subset", "component"])["pearson_r"]
    for key, r in published["pure_phase_r"].items():
        subset, component = key.split("/", 1)
        rows.append((f"r, {component} on {subset}", r, float(pure.get((subset, component), math.nan))))
    total = totals(fi.per_experiment)
    ours = {f"{m}/{w}": r for m, w, r in zip(total["model"], total["workload"], total["pearson_r"])}
    common = [k for k in published["per_experiment_total_r"] if k in ours]
    if common:
        pub = [published["per_experiment_total_r"][k] for k in common]
        mine = [ours[k] for k in common]
        rows.append(("median per-experiment r of total_analytical_us", float(pd.Series(pub).median()),
                     float(pd.Series(mine).median())))
        rank = pd.Series(pub).corr(pd.Series(mine), method="spearman")
        rows.append(("rank agreement of per-experiment r (Spearman)", math.nan, float(rank)))
    rows.append(("hypothesis criteria passing", published["hypothesis_passing"], fi.verdict.passing))
    return pd.DataFrame(rows, columns=["metric", "published", "this_data"])


def published_comparison_context(fi: FindingsInput, published: dict) -> dict[str, Any]:
    """The comparison table and its claims, in order, each with ``agree`` (within the
    tolerance) and the two values: kind pure_prefill, pure_decode, mixed, decode_gemm_r,
    median_r."""
    t = published_comparison(fi, published)
    get = t.set_index("metric")["this_data"]
    pub = t.set_index("metric")["published"]
    pp = "pure_prefill share (%)"
    claims = [{"kind": "pure_prefill", "agree": bool(get[pp] < ABSENT_PREFILL_PCT),
               "ours": get[pp], "published": pub[pp]}]
    pd_ = "pure_decode share (%)"
    for phase in ("pure_decode", "mixed"):
        key = f"{phase} share (%)"
        if key in get.index:
            claims.append({"kind": phase, "ours": get[key], "published": pub[key],
                           "agree": shares_agree(float(get[key]), float(pub[key]))})
    r = "r, decode_gemm_us on pure_decode"
    if not math.isnan(get[r]):
        claims.append({"kind": "decode_gemm_r", "ours": get[r], "published": pub[r],
                       "agree": bool(abs(get[r] - pub[r]) < R_AGREE)})
    med = "median per-experiment r of total_analytical_us"
    if med in get.index:
        claims.append({"kind": "median_r", "ours": get[med], "published": pub[med],
                       "agree": bool(abs(get[med] - pub[med]) < R_AGREE),
                       "spearman": get["rank agreement of per-experiment r (Spearman)"]})
    return {"table": t, "claims": claims, "client": None}


def client_comparison_context(comparison: pd.DataFrame) -> dict[str, Any]:
    """The replay-vs-published client table (run.validate.client_comparison)."""
    t = comparison.copy()
    fit = t[~t["held_out"].astype(bool)]
    t["run"] = t["run"].map(short_name)
    table = t[["run", "published_tpot_ms", "replay_tpot_ms", "tpot_error", "published_ttft_ms",
               "replay_ttft_ms", "ttft_error", "published_failures", "replay_failures"]]
    return {"table": table, "held_out": int(t["held_out"].astype(bool).sum()),
            "n_published": len(fit),
            "median_tpot_error": float(fit["tpot_error"].abs().median()),
            "median_ttft_error": float(fit["ttft_error"].abs().median())}


def published_comparison_section(fi: FindingsInput, published: dict,
                                 client: pd.DataFrame | None = None) -> str:
    """Where the analysed (generated) data and the study's published numbers agree or differ;
    with ``client`` (run.validate.client_comparison) also the client metrics."""
    ctx = published_comparison_context(fi, published)
    if client is not None and len(client):
        ctx["client"] = client_comparison_context(client)
    return render_section("published_comparison", ctx)
