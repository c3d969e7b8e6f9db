"""Figures of the report. Each function takes tables and returns a matplotlib Figure;
``save`` writes it as PNG. No computation beyond what a plot needs lives here."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .phases import PHASES, phase_label

DURATION = "step.duration_us"
PHASE_COLORS = {"pure_prefill": "#d95f02", "pure_decode": "#1b9e77", "mixed": "#7570b3",
                "empty": "#999999"}
WORKLOAD_ORDER = ["general", "codegen", "roleplay", "reasoning"]


def style() -> None:
    """One look for every figure."""
    sns.set_theme(context="notebook", style="whitegrid")
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "savefig.bbox": "tight"})


def save(fig: Figure, figures_dir: Path, name: str) -> Path:
    """PNG without a timestamp in its metadata, so reruns give the same bytes."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    path = figures_dir / f"{name}.png"
    fig.savefig(path, metadata={"Software": None})
    return path


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
    shares.index = [_short(e) for e in shares.index]
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
    ncols = min(4, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
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
        ax.set_title(_short(exp), fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(groups):]:
        ax.set_axis_off()
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.supxlabel(f"{analytical} (µs)")
    fig.supylabel("observed step.duration_us (µs)")
    fig.tight_layout()
    return fig


def _short(experiment_id: str) -> str:
    """Drop the timestamp prefix for axis labels."""
    parts = experiment_id.split("-", 2)
    return parts[2] if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit() else experiment_id
