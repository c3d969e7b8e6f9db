"""Figures of the report. Each function takes tables and returns a matplotlib Figure;
``save`` writes it as PNG. No computation beyond what a plot needs lives here."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from IPython.display import Image

from ..traces.experiments import short_name
from ..model.phases import PHASES, phase_label
from ..core.columns import (COMPONENT_COLORS, DURATION, PHASE_COLORS, PHYS_LOWER_BOUND,
                            PHYS_TIME_COLUMNS, PHYS_TOTAL, TARGET_LABELS, WORKLOAD_ORDER,
                            short_label)


def style() -> None:
    """One look for every figure."""
    sns.set_theme(context="notebook", style="whitegrid")
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "savefig.bbox": "tight"})


def save(fig: Figure, figures_dir: Path, name: str) -> "Image":
    """Write ``figures_dir/<name>.png`` (no timestamp in its metadata, so reruns give the same
    bytes), close the figure and return the PNG for display: a notebook cell ending in
    ``plots.save(...)`` shows the saved file instead of rendering the figure a second time."""
    from IPython.display import Image

    figures_dir.mkdir(parents=True, exist_ok=True)
    path = figures_dir / f"{name}.png"
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return Image(filename=str(path))


def phase_breakdown_bars(breakdown: pd.DataFrame, by_experiment: pd.DataFrame) -> Figure:
    """Left: pooled steps per phase (log scale, so a handful of pure-prefill steps shows).
    Right: each experiment's phase shares, stacked."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 2.4]})
    colors = [PHASE_COLORS[p] for p in breakdown["phase"]]
    ax1.bar(breakdown["phase"], breakdown["steps"].clip(lower=0.8), color=colors)
    ax1.set_yscale("log")
    ax1.set_ylabel("steps (log)")
    ax1.set_title("Steps per phase, all experiments")
    for i, (n, pct) in enumerate(zip(breakdown["steps"], breakdown["pct"])):
        ax1.annotate(f"{n:,}\n{pct:.3g}%", (i, max(n, 0.8)), ha="center", va="bottom", fontsize=9)
    ax1.margins(y=0.25)
    shares = by_experiment.div(by_experiment.sum(axis=1), axis=0) * 100
    shares.index = [short_name(e) for e in shares.index]
    left = np.zeros(len(shares))
    for p in [c for c in PHASES if c in shares]:
        ax2.barh(shares.index, shares[p], left=left, color=PHASE_COLORS[p], label=p)
        left += shares[p].to_numpy()
    ax2.invert_yaxis()
    ax2.set_xlabel("% of the experiment's steps")
    ax2.set_title("Phase shares per experiment")
    ax2.legend(loc="lower right", fontsize=8, frameon=True)
    ax2.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig


def analytical_vs_observed(components: pd.DataFrame, analytical: str = "total_analytical_us",
                           title: str = "seed analytical estimate") -> Figure:
    """Pooled observed duration vs an analytical estimate, one panel per phase, log axes
    (hexbin where there are many points, scatter otherwise)."""
    label = phase_label(components)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    for ax, phase in zip(axes, PHASES):
        sub = components[(label == phase).to_numpy()]
        x, y = sub[analytical].to_numpy(float), sub[DURATION].to_numpy(float)
        keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
        ax.set_title(f"{phase} (n={keep.sum():,})")
        if len(x) == 0:
            ax.text(0.5, 0.5, "no steps with a positive estimate", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
            continue
        if len(x) > 400:
            hb = ax.hexbin(x, y, xscale="log", yscale="log", bins="log", gridsize=45, cmap="viridis",
                           mincnt=1)
            fig.colorbar(hb, ax=ax, label="steps (log)")
        else:
            ax.scatter(x, y, s=10, alpha=0.6, color=PHASE_COLORS[phase])
            ax.set_xscale("log")
            ax.set_yscale("log")
        lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
        ax.plot([lo, hi], [lo, hi], ls="--", lw=1, color="black", label="observed = estimate")
        ax.set_xlabel(f"{analytical} (µs)")
        ax.set_ylabel("observed step.duration_us (µs)")
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"Observed step duration vs {title}")
    fig.tight_layout()
    return fig


def r_heatmap(per_experiment: pd.DataFrame, component: str = "total_analytical_us",
              title: str | None = None) -> Figure:
    """Pearson r per experiment laid out model × workload (N/A cells blank)."""
    sub = per_experiment[per_experiment["component"] == component]
    grid = sub.pivot_table(index="model", columns="workload", values="pearson_r", aggfunc="first",
                           dropna=False)
    cols = [w for w in WORKLOAD_ORDER if w in grid.columns] + \
           [w for w in grid.columns if w not in WORKLOAD_ORDER]
    grid = grid[cols]
    fig, ax = plt.subplots(figsize=(1.6 * len(cols) + 3, 0.6 * len(grid) + 1.8))
    sns.heatmap(grid, annot=True, fmt=".3f", vmin=-1, vmax=1, cmap="RdBu_r", center=0, ax=ax,
                cbar_kws={"label": "Pearson r"}, linewidths=0.5)
    ax.set_title(title or f"Pearson r of {component} vs observed duration")
    ax.set_xlabel("workload")
    ax.set_ylabel("model")
    fig.tight_layout()
    return fig


def per_experiment_scatter(components: pd.DataFrame, analytical: str = "total_analytical_us",
                           max_points: int = 3000, seed: int = 0) -> Figure:
    """Small multiples: observed vs analytical for every experiment, coloured by phase
    (at most ``max_points`` per panel, a seeded sample)."""
    groups = list(components.groupby("experiment_id", sort=True))
    fig, axes = _grid(len(groups), width=4.2, height=3.6)
    if not groups:                      # no step in any experiment: an empty, labelled panel
        axes.flat[0].set_axis_on()
        axes.flat[0].text(0.5, 0.5, "no steps", ha="center", va="center",
                          transform=axes.flat[0].transAxes)
    for ax, (exp, g) in zip(axes.flat, groups):
        if len(g) > max_points:
            g = g.sample(max_points, random_state=seed)
        label = phase_label(g)
        for phase in PHASES:
            s = g[(label == phase).to_numpy()]
            s = s[(s[analytical] > 0) & (s[DURATION] > 0)]
            if len(s):
                ax.scatter(s[analytical], s[DURATION], s=5, alpha=0.5, color=PHASE_COLORS[phase],
                           label=phase)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(short_name(exp), fontsize=9)
        ax.tick_params(labelsize=7)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.supxlabel(f"{analytical} (µs)")
    fig.supylabel("observed step.duration_us (µs)")
    fig.tight_layout()
    return fig


# =========================================================================== physical mode


def _grid(n: int, width: float = 4.4, height: float = 3.8, max_cols: int = 4
          ) -> tuple[Figure, np.ndarray]:
    ncols = max(1, min(max_cols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    return fig, axes


def _sample(frame: pd.DataFrame, max_points: int, seed: int) -> pd.DataFrame:
    return frame.sample(max_points, random_state=seed) if len(frame) > max_points else frame


def _phase_scatter(ax, frame: pd.DataFrame, x: str, y: str) -> None:
    label = phase_label(frame)
    for phase in PHASES:
        s = frame[(label == phase).to_numpy()]
        if len(s):
            ax.scatter(s[x], s[y], s=6, alpha=0.5, color=PHASE_COLORS[phase], label=phase,
                       rasterized=True)


def roofline_plot(components: pd.DataFrame, gpu, max_points: int = 3000, seed: int = 0) -> Figure:
    """Per model: each step's arithmetic intensity (physical FLOPs / bytes) against the FLOP
    rate it would have achieved (physical FLOPs / observed duration), coloured by phase,
    under the GPU's roofline min(peak, intensity · HBM bandwidth). A point above the roof
    finished faster than the hardware allows for the estimated work. At most ``max_points``
    steps per panel (a seeded sample); the title counts all steps."""
    x, y = "phys_arith_intensity_flops_per_byte", "phys_achieved_tflops"
    ok = components[(components[x] > 0) & (components[y] > 0)
                    & np.isfinite(components[x]) & np.isfinite(components[y])]
    models = sorted(components["model"].unique())
    fig, axes = _grid(len(models))
    peak = gpu.peak_flops_per_s / 1e12
    lo = max(ok[x].min() / 2, 1e-3) if len(ok) else 0.1
    hi = max(ok[x].max() * 2, gpu.ridge_flops_per_byte * 4) if len(ok) else gpu.ridge_flops_per_byte * 10
    ai = np.geomspace(lo, hi, 200)
    roof = np.minimum(peak, ai * gpu.hbm_bytes_per_s / 1e12)
    for ax, model in zip(axes.flat, models):
        g = ok[ok["model"] == model]
        above = int((g[y] > np.minimum(peak, g[x] * gpu.hbm_bytes_per_s / 1e12)).sum())
        _phase_scatter(ax, _sample(g, max_points, seed), x, y)
        ax.plot(ai, roof, color="black", lw=1.5, label=f"{gpu.name} roofline")
        ax.axvline(gpu.ridge_flops_per_byte, color="black", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{model} (n={len(g):,}; {above:,} above the roof)", fontsize=9)
        ax.tick_params(which="both", labelsize=7)
    axes.flat[0].legend(loc="lower right", fontsize=7)
    fig.supxlabel("arithmetic intensity (physical FLOPs / bytes)", fontsize=10)
    fig.supylabel("achieved TFLOP/s\n(FLOPs / observed time)", fontsize=10)
    fig.suptitle(f"Roofline: estimated work per observed step time "
                 f"(peak {gpu.peak_bf16_dense_tflops:g} TFLOP/s, {gpu.hbm_tb_per_s:g} TB/s; "
                 f"dotted: ridge point)")
    fig.tight_layout()
    return fig


def component_shares_by_phase(components: pd.DataFrame, by: str = "model") -> Figure:
    """One panel per phase: each group's (``by``, plus all steps) physical time split into
    its six components — summed over the phase's steps where every component is known
    (decode steps of experiments without journeys have no decode attention and are left
    out; n in the labels)."""
    label = phase_label(components)
    known = components[PHYS_TIME_COLUMNS].notna().all(axis=1).to_numpy()
    fig, axes = plt.subplots(1, len(PHASES), figsize=(5.2 * len(PHASES), 0.45 * (
        components[by].nunique() + 1) + 2.2), squeeze=False)
    for ax, phase in zip(axes.flat, PHASES):
        sub = components[(label == phase).to_numpy() & known]
        key = sub[by].astype(str)              # plain labels, so "all" can be appended
        sums = sub.groupby(key)[PHYS_TIME_COLUMNS].sum()
        counts = sub.groupby(key).size()
        sums.loc["all"] = sub[PHYS_TIME_COLUMNS].sum()
        counts.loc["all"] = len(sub)
        totals = sums.sum(axis=1)
        shares = sums.div(totals.where(totals > 0), axis=0) * 100
        names = [f"{g} (n={counts[g]:,})" for g in shares.index]
        left = np.zeros(len(shares))
        for c in PHYS_TIME_COLUMNS:
            vals = shares[c].fillna(0).to_numpy()
            ax.barh(names, vals, left=left, color=COMPONENT_COLORS[c], label=short_label(c))
            left += vals
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("% of the physical estimate")
        ax.set_title(phase)
        ax.tick_params(axis="y", labelsize=8)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(PHYS_TIME_COLUMNS), fontsize=8,
               bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Physical component shares of the estimated step time, per phase")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def observed_vs_physical(components: pd.DataFrame, max_points: int = 3000, seed: int = 0) -> Figure:
    """Per model, log axes: observed duration against the physical estimate
    (phys_total_us), coloured by phase, with observed = estimate (dashed) and the HBM lower
    bound of each tp (horizontal, dotted): a step below its line ran faster than reading the
    weights once allows. At most ``max_points`` steps per panel (a seeded sample)."""
    x = PHYS_TOTAL
    ok = components[(components[x] > 0) & (components[DURATION] > 0)
                    & np.isfinite(components[x]) & np.isfinite(components[DURATION])]
    models = sorted(components["model"].unique())
    fig, axes = _grid(len(models))
    for ax, model in zip(axes.flat, models):
        g = ok[ok["model"] == model]
        if len(g) == 0:
            ax.text(0.5, 0.5, "no steps with a physical estimate", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_title(model, fontsize=9)
            continue
        _phase_scatter(ax, _sample(g, max_points, seed), x, DURATION)
        lo = min(g[x].min(), g[DURATION].min())
        hi = max(g[x].max(), g[DURATION].max())
        ax.plot([lo, hi], [lo, hi], ls="--", lw=1, color="black", label="observed = estimate")
        bounds = g[g[PHYS_LOWER_BOUND] > 0].groupby("tp")[PHYS_LOWER_BOUND].median()
        for tp, lb in bounds.items():
            below = int(((g["tp"] == tp) & (g[DURATION] < g[PHYS_LOWER_BOUND])).sum())
            ax.axhline(lb, color="firebrick", lw=1, ls=":",
                       label=f"HBM lower bound, tp={tp} ({below:,} steps below)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):     # plain µs at 1-2-5 steps, no crowded minors
            axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"{model} (n={len(g):,})", fontsize=9)
        ax.set_xlabel("physical estimate phys_total_us (µs)")
        ax.set_ylabel("observed step.duration_us (µs)")
        ax.tick_params(which="both", labelsize=7)
        ax.legend(loc="upper left", fontsize=7)
    fig.suptitle("Observed step duration vs the physical estimate")
    fig.tight_layout()
    return fig


def seed_vs_physical_r(per_experiment: pd.DataFrame) -> Figure:
    """Per experiment: Pearson r of the seed total and of the physical total against the
    observed duration (a physical_per_experiment_correlations table), with bootstrap 95 %
    intervals; experiments sorted by the seed r. N/A r are marked at the left edge."""
    t = per_experiment.sort_values("seed_pearson_r", ascending=True, na_position="first")
    t = t.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8.5, 0.38 * len(t) + 1.8))
    pos = np.arange(len(t))
    names = [f"{m} / {w}" for m, w in zip(t["model"], t["workload"])]
    na_pos: list[tuple[np.ndarray, str, str]] = []
    for prefix, color, off, name in (("seed_", "#7f7f7f", -0.12, "seed total_analytical_us"),
                                     ("phys_", "#1f78b4", 0.12, "physical phys_total_us")):
        r = t[prefix + "pearson_r"].to_numpy(float)
        lo, hi = t[prefix + "ci_low"].to_numpy(float), t[prefix + "ci_high"].to_numpy(float)
        ok = np.isfinite(r)
        err = np.vstack([np.where(np.isfinite(lo), r - lo, 0), np.where(np.isfinite(hi), hi - r, 0)])
        ax.errorbar(r[ok], pos[ok] + off, xerr=err[:, ok], fmt="o", color=color, ms=5,
                    capsize=2, lw=1, label=name)
        if (~ok).any():
            na_pos.append((pos[~ok] + off, color, f"{name}: N/A"))
    both = np.isfinite(t["seed_pearson_r"]) & np.isfinite(t["phys_pearson_r"])
    for i in pos[both.to_numpy()]:
        ax.plot([t.at[i, "seed_pearson_r"], t.at[i, "phys_pearson_r"]], [i - 0.12, i + 0.12],
                color="#bbbbbb", lw=0.8, zorder=0)
    from ..stats.correlation import R_THRESHOLD
    ax.axvline(R_THRESHOLD, color="firebrick", ls=":", lw=1, label=f"r = {R_THRESHOLD}")
    ax.set_yticks(pos)
    ax.set_yticklabels(names, fontsize=8)
    lows = pd.concat([t["seed_ci_low"], t["phys_ci_low"], t["seed_pearson_r"], t["phys_pearson_r"]])
    left = max(-1.05, min(0.0, float(lows.min()) - 0.05)) if lows.notna().any() else -1.05
    ax.set_xlim(left, 1.02)
    for ys, color, name in na_pos:            # N/A r: a cross at the left edge
        ax.scatter(np.full(len(ys), left + 0.02), ys, marker="x", color=color, label=name,
                   clip_on=False)
    ax.set_xlabel("Pearson r vs observed step duration (95 % bootstrap CI)")
    ax.set_title("Seed vs physical estimate, per experiment")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


# =========================================================================== what the traces measure



def _log_axes(ax) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.tick_params(which="both", labelsize=7)


def targets_vs_physical(components: pd.DataFrame, model: str, max_points: int = 3000,
                        seed: int = 0) -> Figure:
    """For one model: each step-time target (one panel each) against the physical total
    phys_total_us, coloured by phase, with target = estimate (dashed) and the HBM lower
    bound (dotted). Log axes; at most ``max_points`` steps per panel (a seeded sample)."""
    g = components[components["model"] == model]
    x = PHYS_TOTAL
    fig, axes = plt.subplots(1, len(TARGET_LABELS), figsize=(4.6 * len(TARGET_LABELS), 4.0),
                             squeeze=False)
    for ax, (target, label) in zip(axes.flat, TARGET_LABELS.items()):
        ok = g[(g[x] > 0) & (g[target] > 0)] if target in g else g.iloc[:0]
        if len(ok) == 0:
            ax.text(0.5, 0.5, f"no steps with {target}", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_title(label, fontsize=9)
            continue
        _phase_scatter(ax, _sample(ok, max_points, seed), x, target)
        lo, hi = min(ok[x].min(), ok[target].min()), max(ok[x].max(), ok[target].max())
        ax.plot([lo, hi], [lo, hi], ls="--", lw=1, color="black", label="target = estimate")
        lb = float(ok[PHYS_LOWER_BOUND].median())
        below = int((ok[target] < ok[PHYS_LOWER_BOUND]).sum())
        ax.axhline(lb, color="firebrick", lw=1, ls=":",
                   label=f"HBM lower bound ({below:,} of {len(ok):,} steps below)")
        _log_axes(ax)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("physical estimate phys_total_us (µs)")
        ax.set_ylabel(f"{target} (µs)")
        ax.legend(loc="upper left", fontsize=7)
    fig.suptitle(f"{model or 'no steps'}: what each step-time target measures against the batch physics")
    fig.tight_layout()
    return fig


def model_with_most(components: pd.DataFrame, column: str) -> str:
    """The model with the most steps where ``column`` is known (ties: first by name)."""
    counts = components[components[column].notna()].groupby("model").size() \
        if column in components else pd.Series(dtype=int)
    if counts.empty:
        models = sorted(components["model"].dropna().unique()) if "model" in components else []
        return str(models[0]) if models else ""      # no step at all: an empty figure
    return str(counts.sort_index().idxmax())


def tpot_vs_floor(plausibility: pd.DataFrame, gpu: str, precision: str,
                  source: str = "published") -> Figure:
    """Per run of ``source``: the mean TPOT and the time per output token from E2E
    ((E2E − TTFT)/(output_len − 1)) against the weight-streaming floor of ``gpu`` at
    ``precision``. Bars below the floor cannot be that hardware's decode step."""
    t = plausibility[(plausibility["gpu"] == gpu) & (plausibility["precision"] == precision)
                     & (plausibility["source"] == source)]
    t = t.sort_values(["model", "run"]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(t) + 2), 4.2))
    pos = np.arange(len(t))
    ax.bar(pos - 0.2, t["mean_tpot_ms"], 0.4, color="#7570b3", label=f"{source} mean TPOT")
    ax.bar(pos + 0.2, t["per_token_ms"], 0.4, color="#1b9e77",
           label="time per output token from E2E")
    ax.scatter(pos, t["floor_ms"], marker="_", s=500, color="firebrick", zorder=3,
               label=f"weight-streaming floor, {gpu} {precision}")
    ax.set_xticks(pos)
    ax.set_xticklabels([short_name(r) for r in t["run"]], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("ms per output token")
    ax.legend(fontsize=8)
    ax.set_title(f"Client time per token ({source} summaries) against the weight-streaming floor")
    fig.tight_layout()
    return fig
