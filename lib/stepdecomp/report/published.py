"""FINDINGS' "Generated Data vs the Published Study": the study's headline numbers beside
the analysed data's (the table ``published_comparison``), and the replay's client metrics
beside the published ones (``client_comparison``). Notebook 04 writes both when it analyses
the bundled replay (run.validate.published_tables); the section is there when they are."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..core import tables as names
from ..core.tables import short_name
from .inputs import read_if_there, read_table, require_columns
from .render import (ABSENT_PREFILL_PCT, R_AGREE, SHARE_AGREE_FACTOR, SHARE_AGREE_POINTS,
                     render_section)

if TYPE_CHECKING:
    from ..core.artefacts import RunDirs

#: The columns of the comparison with the published study (run.validate.seed_comparison).
COMPARISON_COLUMNS = ["metric", "published", "this_data"]
#: The columns of client_comparison_summary (run.validate.client_comparison_summary).
CLIENT_SUMMARY_COLUMNS = ["runs_fitted", "runs_held_out", "median_abs_tpot_error",
                          "median_abs_ttft_error"]
#: The columns of the client comparison the section reads (run.validate.client_comparison).
CLIENT_COLUMNS = ["run", "held_out", "published_tpot_ms", "replay_tpot_ms", "tpot_error",
                  "published_ttft_ms", "replay_ttft_ms", "ttft_error", "published_failures",
                  "replay_failures"]


def shares_agree(ours: float, published: float) -> bool:
    """Two phase shares (%) agree: closer than SHARE_AGREE_POINTS points and within
    SHARE_AGREE_FACTOR of each other (both 0 agree; one 0 does not)."""
    if ours == published:
        return True
    if min(ours, published) <= 0:
        return False
    return (abs(ours - published) < SHARE_AGREE_POINTS
            and max(ours, published) / min(ours, published) <= SHARE_AGREE_FACTOR)


def published_comparison_context(table: pd.DataFrame) -> dict[str, Any]:
    """The comparison table (metric, published, this_data) and its claims, in order, each
    with ``agree`` (within the tolerance) and the two values: kind pure_prefill, pure_decode,
    mixed, decode_gemm_r, median_r."""
    require_columns(table, COMPARISON_COLUMNS, names.PUBLISHED_COMPARISON)
    t = table[COMPARISON_COLUMNS]
    get = t.set_index("metric")["this_data"]
    pub = t.set_index("metric")["published"]
    pp = "pure_prefill share (%)"
    claims = [{"kind": "pure_prefill", "agree": bool(get[pp] < ABSENT_PREFILL_PCT),
               "ours": get[pp], "published": pub[pp]}]
    for phase in ("pure_decode", "mixed"):
        key = f"{phase} share (%)"
        if key in get.index:
            claims.append({"kind": phase, "ours": get[key], "published": pub[key],
                           "agree": shares_agree(float(get[key]), float(pub[key]))})
    r = "r, decode_gemm_us on pure_decode"
    if r in get.index and not math.isnan(get[r]):
        claims.append({"kind": "decode_gemm_r", "ours": get[r], "published": pub[r],
                       "agree": bool(abs(get[r] - pub[r]) < R_AGREE)})
    med = "median per-experiment r of total_analytical_us"
    if med in get.index:
        claims.append({"kind": "median_r", "ours": get[med], "published": pub[med],
                       "agree": bool(abs(get[med] - pub[med]) < R_AGREE),
                       "spearman": get["rank agreement of per-experiment r (Spearman)"]})
    return {"table": t, "claims": claims, "client": None}


def client_comparison_context(comparison: pd.DataFrame, summary: pd.DataFrame) -> dict[str, Any]:
    """The replay-vs-published client table (run.validate.client_comparison) and its summary
    (run.validate.client_comparison_summary: the runs fitted and held out, the median errors)."""
    require_columns(comparison, CLIENT_COLUMNS, names.CLIENT_COMPARISON)
    require_columns(summary, CLIENT_SUMMARY_COLUMNS, names.CLIENT_COMPARISON_SUMMARY)
    s = summary.iloc[0]
    t = comparison.copy()
    t["run"] = t["run"].map(short_name)
    table = t[["run", "published_tpot_ms", "replay_tpot_ms", "tpot_error", "published_ttft_ms",
               "replay_ttft_ms", "ttft_error", "published_failures", "replay_failures"]]
    return {"table": table, "held_out": int(s["runs_held_out"]),
            "n_published": int(s["runs_fitted"]),
            "median_tpot_error": float(s["median_abs_tpot_error"]),
            "median_ttft_error": float(s["median_abs_ttft_error"])}


def published_comparison_section(table: pd.DataFrame, client: pd.DataFrame | None = None,
                                 client_summary: pd.DataFrame | None = None) -> str:
    """Where the analysed (generated) data and the study's published numbers agree or differ
    (``table``: published_comparison); with ``client`` (client_comparison) and its summary
    (client_comparison_summary) also the client metrics."""
    ctx = published_comparison_context(table)
    if client is not None and len(client):
        if client_summary is None:
            raise KeyError(f"{names.CLIENT_COMPARISON} is there but not "
                           f"{names.CLIENT_COMPARISON_SUMMARY} "
                           f"({names.writer(names.CLIENT_COMPARISON_SUMMARY)} writes both)")
        ctx["client"] = client_comparison_context(client, client_summary)
    return render_section("published_comparison", ctx)


def published_section_from_tables(dirs: "RunDirs") -> str | None:
    """The section from the run's tables, or None when notebook 04 did not write the
    comparison (the run does not analyse the bundled replay)."""
    table = read_if_there(dirs, names.PUBLISHED_COMPARISON)
    if table is None:
        return None
    client = read_if_there(dirs, names.CLIENT_COMPARISON)
    summary = (read_table(dirs, names.CLIENT_COMPARISON_SUMMARY)
               if client is not None and len(client) else None)
    return published_comparison_section(table, client, summary)
