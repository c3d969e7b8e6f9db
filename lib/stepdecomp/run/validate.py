"""Published vs replayed client metrics, and the hardware fit, as tables:
``python -m stepdecomp.run.validate`` (``make validate``) prints them and rewrites the
marked blocks of data/README.md. Notebook 04 writes two of them for FINDINGS' "Generated Data
vs the Published Study" when it analyses the bundled replay (:func:`published_tables`): the
seed study's published numbers beside the data's (:func:`seed_comparison`) and the replay's
client metrics beside the published ones (:func:`client_comparison`).

The comparison covers every replayed run under the data root. The study's published
summaries exist here for 12 runs (data/published_client_metrics.json); the four
codellama-34b runs are held back for validation and are shown as held out — their published
numbers are neither shipped nor looked up by this repository.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import math

import pandas as pd

from ..traces.experiments import short_name
from ..core import artefacts, tables
from ..core.paths import BUNDLED, DATA_DIR, RAW_DIR, data_kind, display_path
from ..refdata.calibrate import (CALIBRATION_FILE, HELD_OUT_MODEL_SLUG, PUBLISHED_FILE, WHOLE_RUN,
                                 published_means)

README = DATA_DIR / "README.md"
SUMMARY = Path("results") / "summary_lifecycle_metrics.json"
HELD_OUT = "held out"
#: The seed study's published numbers (its FINDINGS: steps, phase shares, pure-phase and
#: per-experiment r, criteria passing).
SEED_PUBLISHED_FILE = DATA_DIR / "seed_published.json"


def load_published(path: Path | None = None) -> dict:
    """The seed study's published numbers (SEED_PUBLISHED_FILE)."""
    return json.loads((path or SEED_PUBLISHED_FILE).read_text())


def seed_comparison(breakdown: pd.DataFrame, pure: pd.DataFrame, per_experiment: pd.DataFrame,
                    passing: int, published: dict | None = None) -> pd.DataFrame:
    """metric, published, this_data: the seed study's headline numbers (``published``, by
    default :func:`load_published`) beside the analysed data's — steps, phase shares, the
    pure-phase r's it published, the median per-experiment r of the seed total over the
    experiments it published and the Spearman agreement of their ranking, and the criteria
    passing (``passing``, the seed's verdict on this data)."""
    published = load_published() if published is None else published
    bd = breakdown.set_index("phase")
    total_pub = published["total_steps"]
    rows = [("steps", total_pub, int(bd["steps"].sum()))]
    for phase, n in published["phase_breakdown"].items():
        rows.append((f"{phase} share (%)", 100 * n / total_pub, float(bd.loc[phase, "pct"])))
    r_pure = pure.set_index(["subset", "component"])["pearson_r"]
    for key, r in published["pure_phase_r"].items():
        subset, component = key.split("/", 1)
        rows.append((f"r, {component} on {subset}", r,
                     float(r_pure.get((subset, component), math.nan))))
    total = per_experiment[per_experiment["component"] == "total_analytical_us"]
    ours = {f"{m}/{w}": r for m, w, r in zip(total["model"], total["workload"], total["pearson_r"])}
    common = [k for k in published["per_experiment_total_r"] if k in ours]
    if common:
        pub = [published["per_experiment_total_r"][k] for k in common]
        mine = [ours[k] for k in common]
        rows.append(("median per-experiment r of total_analytical_us",
                     float(pd.Series(pub).median()), float(pd.Series(mine).median())))
        rank = pd.Series(pub).corr(pd.Series(mine), method="spearman")
        rows.append(("rank agreement of per-experiment r (Spearman)", math.nan, float(rank)))
    rows.append(("hypothesis criteria passing", published["hypothesis_passing"], passing))
    return pd.DataFrame(rows, columns=["metric", "published", "this_data"])


def published_tables(dirs: artefacts.RunDirs) -> dict[str, pd.DataFrame]:
    """The tables of FINDINGS' comparison with the published study, by name
    (core.tables.PUBLISHED_COMPARISON, CLIENT_COMPARISON), from the run's tables of notebooks
    03 and 04 and the replay's client summaries under the data root; empty unless the run
    analyses the bundled replay (their comparison means nothing for other traces)."""
    from ..stats.correlation import hypothesis_verdict

    if data_kind(dirs.data_root) != BUNDLED:
        return {}
    pure = artefacts.read_table(dirs, tables.PURE_PHASE, tables.WRITTEN_BY[tables.PURE_PHASE])
    seed = seed_comparison(
        artefacts.read_table(dirs, tables.PHASE_BREAKDOWN, tables.WRITTEN_BY[tables.PHASE_BREAKDOWN]),
        pure, artefacts.read_table(dirs, tables.PER_EXPERIMENT, tables.WRITTEN_BY[tables.PER_EXPERIMENT]),
        hypothesis_verdict(pure).passing)
    client = client_comparison(dirs.data_root)
    return {tables.PUBLISHED_COMPARISON: seed, tables.CLIENT_COMPARISON: client,
            tables.CLIENT_COMPARISON_SUMMARY: client_comparison_summary(client)}


#: The columns of client_comparison_summary.
CLIENT_SUMMARY_COLUMNS = ["runs_fitted", "runs_held_out", "median_abs_tpot_error",
                          "median_abs_ttft_error"]


def client_comparison_summary(comparison: pd.DataFrame) -> pd.DataFrame:
    """One row over the rows of :func:`client_comparison`: how many the replay was fitted on
    and how many it held out (``held_out``), and the median |tpot_error| and |ttft_error| over
    the fitted ones (NaN without any)."""
    comparison = comparison.reindex(columns=[*comparison.columns, *(
        c for c in ("held_out", "tpot_error", "ttft_error") if c not in comparison)])
    held = comparison["held_out"].astype(bool)
    fit = comparison[~held]
    return pd.DataFrame([{"runs_fitted": len(fit), "runs_held_out": int(held.sum()),
                          "median_abs_tpot_error": float(fit["tpot_error"].abs().median()),
                          "median_abs_ttft_error": float(fit["ttft_error"].abs().median())}],
                        columns=CLIENT_SUMMARY_COLUMNS)


def _replay_summaries(d: Path) -> list[tuple[str, dict[str, Any]]]:
    """(stage, summary) of a replayed run: the whole run, then stage_<k> in stage order."""
    out = [(WHOLE_RUN, json.loads((d / SUMMARY).read_text()))]
    stages = sorted((d / "results").glob("stage_*_lifecycle_metrics.json"),
                    key=lambda p: int(p.name.split("_")[1]))
    return out + [(p.name.split("_")[1], json.loads(p.read_text())) for p in stages]


def client_comparison(raw_root: Path = RAW_DIR, published_file: Path = PUBLISHED_FILE,
                      stages: bool = False) -> pd.DataFrame:
    """One row per replayed run (and, with ``stages``, per load stage: column ``stage``,
    WHOLE_RUN for the whole run): published and replay mean TPOT / TTFT (ms), failures, and
    the relative TPOT / TTFT errors (NaN where the published summary is held out)."""
    doc = json.loads(Path(published_file).read_text())
    published, pub_stages = doc["runs"], doc.get("stages", {})
    rows: list[dict[str, Any]] = []
    for d in sorted(p for p in Path(raw_root).iterdir() if (p / SUMMARY).is_file()):
        for stage, summary in _replay_summaries(d) if stages else _replay_summaries(d)[:1]:
            rep = published_means(summary)
            if stage == WHOLE_RUN:
                source = published.get(d.name)
            else:
                k = int(stage)
                source = pub_stages.get(d.name, [])[k] if k < len(pub_stages.get(d.name, [])) else None
            pub = published_means(source) if source else None
            rows.append({"run": d.name, "stage": stage,
                         "held_out": HELD_OUT_MODEL_SLUG in d.name or pub is None,
                         **{f"replay_{k}": v for k, v in rep.items()},
                         **{f"published_{k}": (pub[k] if pub else float("nan")) for k in rep}})
    t = pd.DataFrame(rows)
    if len(t):
        t["tpot_error"] = t["replay_tpot_ms"] / t["published_tpot_ms"] - 1.0
        t["ttft_error"] = t["replay_ttft_ms"] / t["published_ttft_ms"] - 1.0
    return t


def _pct(x: float) -> str:
    return "—" if pd.isna(x) else f"{x * 100:+.0f} %"


def _num(x: float, digits: int = 2) -> str:
    return HELD_OUT if pd.isna(x) else f"{x:.{digits}f}"


def comparison_markdown(t: pd.DataFrame) -> str:
    """The published-vs-replay table (one row per run and load stage), codellama rows marked
    held out, and the medians: TPOT over every published summary, TTFT over those of runs
    that did not overload (no published failure), failures of the overloaded runs."""
    lines = ["| run | stage | published TPOT ms | replay TPOT ms | TPOT error | published TTFT ms | "
             "replay TTFT ms | TTFT error | published failures | replay failures |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in t.itertuples(index=False):
        fails = HELD_OUT if r.held_out else f"{int(r.published_failures)}"
        lines.append(f"| {short_name(r.run)} | {r.stage} | {_num(r.published_tpot_ms)} | "
                     f"{r.replay_tpot_ms:.2f} | {_pct(r.tpot_error)} | {_num(r.published_ttft_ms, 0)} | "
                     f"{r.replay_ttft_ms:.0f} | {_pct(r.ttft_error)} | {fails} | "
                     f"{int(r.replay_failures)} |")
    fit = t[~t["held_out"]]
    whole = fit[fit["stage"] == WHOLE_RUN]
    calm = fit[fit["published_failures"] == 0]
    over = whole[whole["published_failures"] > 0]
    ratio = ", ".join(f"{short_name(r.run)} {int(r.replay_failures)} of {int(r.published_failures)}"
                      for r in over.itertuples(index=False))
    lines += ["", f"Median |TPOT error| over the {len(fit)} published summaries ({len(whole)} "
                  f"runs and their load stages): {fit['tpot_error'].abs().median() * 100:.1f} %; "
                  f"over the whole runs: {whole['tpot_error'].abs().median() * 100:.1f} %. "
                  f"Median |TTFT error| over the {len(calm)} summaries of runs that did not "
                  f"overload: {calm['ttft_error'].abs().median() * 100:.1f} %. Failed requests "
                  f"of the overloaded runs (replay of published): {ratio or 'none'}."]
    return "\n".join(lines)


def fit_markdown(calibration: dict[str, Any]) -> str:
    """The candidates of the fit (hardware, precision, engine loop), best first, with the
    chosen one named."""
    lines = ["| hardware | weight precision | engine loop | host overhead µs | host µs per request | "
             "median abs TPOT error | API server µs | median abs TTFT error (calm runs), "
             "before / after the API constant |", "|---|---|---|---|---|---|---|---|"]
    for c in calibration["candidates"]:
        lines.append(f"| {c['hardware']} | {c['precision']} | {c['engine_loop']} | "
                     f"{c['host_overhead_us']:.0f} | {c['host_per_request_us']:.0f} | "
                     f"{c['median_abs_tpot_error'] * 100:.1f} % | {c['api_arrival_us']:.0f} | "
                     f"{c['median_abs_ttft_error_calm'] * 100:.1f} % / "
                     f"{c['median_abs_ttft_error_calm_with_api'] * 100:.1f} % |")
    ch = calibration["chosen"]
    lines += ["", f"Chosen (the default of `make data`): {ch['hardware']} {ch['precision']}, "
                  f"{ch['engine_loop']} engine loop, host work on the GPU's critical path "
                  f"{ch['host_overhead_us']:.0f} µs per step and {ch['host_per_request_us']:.0f} µs "
                  f"per request, API server {ch['api_arrival_us']:.0f} µs per request; stages "
                  f"shortened to {calibration['time_scale']} of their length for the fit."]
    return "\n".join(lines)


#: The loop iterations and GPU times each target must recover (truth columns, µs), per loop.
TRUTH_TIME_SCALE = 0.25


def replay_targets(run: Path, engine_loop: str, time_scale: float = TRUTH_TIME_SCALE
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Replay ``run`` under ``engine_loop``, then read its step targets from what the traces
    record (the sampled summaries' ``step.ts_*_ns``, every journey event) with the loop
    detected from the traces, as the report does; returns (targets, the replay's truth)."""
    from ..targets import timestamps
    from ..refdata.replay import MONOTONIC_ORIGIN_NS, simulate

    res = simulate(run, time_scale=time_scale, engine_loop=engine_loop)
    s = res.steps[res.steps["sampled"]]
    steps = pd.DataFrame({"experiment_id": run.name, "step.id": s["step_id"].to_numpy(),
                          "step.ts_start_ns": MONOTONIC_ORIGIN_NS + s["ts_start_ns"].to_numpy(),
                          "step.ts_end_ns": MONOTONIC_ORIGIN_NS + s["ts_end_ns"].to_numpy()})
    return timestamps.step_targets(steps, res.journeys()), res.truth()


def truth_check(engine_loops: Sequence[str] = ("async", "sync"),
                time_scale: float = TRUTH_TIME_SCALE) -> pd.DataFrame:
    """One row per (replayed loop, experiment, target): truthcheck.truth_check of the targets
    of a replay against its truth, with the loop the targets detected (``detected``)."""
    from ..targets import truthcheck
    from ..refdata.cli import workload_dirs

    frames = []
    for loop in engine_loops:
        for run in workload_dirs():
            t, truth = replay_targets(run, loop, time_scale)
            detected = t["engine_loop"].iloc[0] if len(t) else "unknown"
            check = truthcheck.truth_check(t, {run.name: truth}, {run.name: loop})
            frames.append(check.rename(columns={"experiment_id": "run"})
                          .assign(replayed_loop=loop, detected=detected))
    return pd.concat(frames, ignore_index=True)


def truth_markdown(t: pd.DataFrame) -> str:
    """Per loop and target: the medians over experiments, the worst experiment, and how many
    experiments meet the bars (median error ≤ 5 %, r ≥ 0.98, coverage ≥ 8 % / 5 %)."""
    lines = ["| engine loop | target | loop detected | coverage (median, min) | median abs error "
             "(median, max) | bias (median) | r (median, min) | experiments within 5 % / r ≥ 0.98 |",
             "|---|---|---|---|---|---|---|---|"]
    for (loop, target), g in t.groupby(["replayed_loop", "target"], sort=True):
        hits = int((g["detected"] == loop).sum())
        lines.append(
            f"| {loop} | {target} | {hits} of {len(g)} | {g['coverage'].median():.0%}, "
            f"{g['coverage'].min():.0%} | {g['median_abs_rel_error'].median():.1%}, "
            f"{g['median_abs_rel_error'].max():.1%} | {g['median_rel_error'].median():+.1%} | "
            f"{g['pearson_r'].median():.3f}, {g['pearson_r'].min():.3f} | "
            f"{int((g['median_abs_rel_error'] <= 0.05).sum())} / {int((g['pearson_r'] >= 0.98).sum())} "
            f"of {len(g)} |")
    return "\n".join(lines)


def replace_block(text: str, name: str, body: str) -> str:
    """Replace the text between ``<!-- name -->`` and ``<!-- /name -->``."""
    pattern = re.compile(rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no <!-- {name} --> … <!-- /{name} --> block to replace")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stepdecomp.run.validate",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=RAW_DIR)
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--truth-time-scale", type=float, default=TRUTH_TIME_SCALE,
                    help="stage length of the replays the targets are checked on")
    args = ap.parse_args(argv)
    comparison = comparison_markdown(client_comparison(args.data, stages=True))
    fit = fit_markdown(json.loads(CALIBRATION_FILE.read_text()))
    truth = truth_markdown(truth_check(time_scale=args.truth_time_scale))
    print(fit, "\n", comparison, "\n", truth, sep="\n")
    text = args.readme.read_text()
    text = replace_block(replace_block(text, "fit-table", fit), "client-table", comparison)
    text = replace_block(text, "truth-table", truth)
    args.readme.write_text(text)
    print(f"updated {display_path(args.readme)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
