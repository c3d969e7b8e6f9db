"""The step-time model's figure: held-out predicted vs measured step time, one panel per model
(plots.style and plots.save give it the report's look). Only what the plot needs is computed."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..stepmodel.evaluate import PREDICTOR_LABELS

#: Predictors drawn (the fitted vector and BLIS's shipped one), their colours.
DRAWN = {"fitted": "#1b9e77", "blis_shipped": "#d95f02"}
MAX_POINTS = 3000
SEED = 0


def predicted_vs_measured(predictions: pd.DataFrame, model_label, target: str,
                          max_points: int = MAX_POINTS, seed: int = SEED) -> Figure:
    """Log-log scatter of held-out predictions against the target per model (``model``
    column, labelled by ``model_label``), at most ``max_points`` random steps per panel, with
    the y = x line."""
    models = sorted(predictions["model"].unique())
    cols = min(len(models), 4)
    rows = int(np.ceil(len(models) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 4.0 * rows), squeeze=False)
    rng = np.random.default_rng(seed)
    for ax, m in zip(axes.flat, models):
        sub = predictions[predictions["model"] == m]
        if len(sub) > max_points:
            sub = sub.iloc[np.sort(rng.choice(len(sub), max_points, replace=False))]
        y = sub["target_us"].to_numpy() / 1e3
        for p, color in DRAWN.items():
            ax.scatter(y, sub[f"pred_{p}_us"].to_numpy() / 1e3, s=4, alpha=0.35, color=color,
                       label=PREDICTOR_LABELS[p], rasterized=True)
        lo, hi = np.nanmin(y) * 0.8, np.nanmax(y) * 1.25
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(model_label(m), fontsize=10)
        ax.set_xlabel(f"measured {target} (ms)")
        ax.set_ylabel("predicted (ms)")
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8, loc="upper left", markerscale=3)
    fig.suptitle(f"Held-out step time, predicted vs measured ({predictions['scheme'].iloc[0]} "
                 f"left out)", fontsize=11)
    fig.tight_layout()
    return fig
