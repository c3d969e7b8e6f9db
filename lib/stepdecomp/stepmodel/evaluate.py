"""Held-out evaluation of step-time predictors: whole workloads or whole models left out,
never a random split of steps (steps of one run are autocorrelated and share their batches:
a random split scores interpolation inside a run, not prediction of a new one).

Schemes (:data:`SCHEMES`): ``workload`` leaves out one workload at a time (all models),
``model`` one model at a time (all workloads). Each fold trains on the other groups and
predicts every step of the left-out one; the per-step predictions of all folds are then
scored together and per left-out group (:func:`error_table`).

Predictors (:data:`PREDICTORS`), all on the same steps:

* ``fitted``: BLIS's basis with β fitted on the training folds (stepmodel.fit_beta), priced
  as BLIS prices it (blis_basis.step_time_us: truncated integer µs, at least 1);
* ``blis_shipped``: the same basis with BLIS's shipped β (no fit; the same in every fold);
* ``physical``: the physical mode's roofline total phys_total_us, uncalibrated (no fit);
* ``hgb``: scikit-learn's HistGradientBoostingRegressor on the same 11 basis columns,
  fitted to log(target) (relative errors, like the fitted vector), as the ceiling a
  flexible model reaches on these features. At most :data:`HGB_MAX_TRAIN_STEPS` training
  steps per fold (a seeded subsample) and :data:`HGB_MAX_ITER` trees (at a learning rate of
  :data:`HGB_LEARNING_RATE`, twice scikit-learn's default for half its default trees) keep
  1 M steps within the bench budget: predicting is the cost, linear in trees × steps.

Errors per step are relative, e = (prediction − y) / y: MAPE = mean |e|, median APE,
bias = mean e (all in %), Pearson r of prediction and y.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core import tables
from ..model import blis_basis
from . import fit as stepmodel
from .fit import StepData

SCHEMES = ("workload", "model")
PREDICTORS = ("fitted", "blis_shipped", "physical", "hgb")
#: Their labels (core.tables: the report names the predictors by them too).
PREDICTOR_LABELS = tables.PREDICTOR_LABELS
#: Training steps per fold of the gradient-boosting ceiling, and its settings (scikit-learn's
#: defaults otherwise); the seed makes the subsample and the model deterministic.
HGB_MAX_TRAIN_STEPS = 20_000
HGB_MAX_ITER = 50
HGB_LEARNING_RATE = 0.2
HGB_SEED = 0
#: OpenMP threads of the gradient boosting: one, so results do not depend on the thread count
#: and a busy 2-core machine does not lose its time to spinning threads (measured: 7× slower
#: with the default threads while other work runs).
HGB_THREADS = 1
#: The row of error_table pooling every fold (core.tables: the report reads those rows).
ALL_GROUPS = tables.ALL_GROUPS


def folds(data: StepData, scheme: str) -> list[tuple[str, np.ndarray]]:
    """(left-out group, boolean mask of its steps) per fold; the other steps train."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown held-out scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    labels = data.workload if scheme == "workload" else data.model
    groups = sorted(set(labels))
    if len(groups) < 2:
        raise ValueError(f"leave-one-{scheme}-out needs at least 2 {scheme}s, got {groups}")
    return [(g, labels == g) for g in groups]


def _hgb_predict(train: StepData, test: StepData) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from threadpoolctl import threadpool_limits

    rows = np.arange(len(train))
    if len(rows) > HGB_MAX_TRAIN_STEPS:
        rows = np.sort(np.random.default_rng(HGB_SEED).choice(rows, HGB_MAX_TRAIN_STEPS,
                                                              replace=False))
    model = HistGradientBoostingRegressor(max_iter=HGB_MAX_ITER, learning_rate=HGB_LEARNING_RATE,
                                          random_state=HGB_SEED, early_stopping=False)
    with threadpool_limits(limits=HGB_THREADS, user_api="openmp"):
        model.fit(train.basis[rows], np.log(train.target_us[rows]))
        return np.exp(model.predict(test.basis))


@dataclass(frozen=True)
class HeldOut:
    """Per-step held-out predictions of one scheme: the steps' groups, target and one
    column per predictor, plus the β fitted in each fold."""

    scheme: str
    predictions: pd.DataFrame
    fold_betas: pd.DataFrame


def held_out(data: StepData, scheme: str, shipped: blis_basis.TrainedPhysicsCoefficients,
             predictors: tuple[str, ...] = PREDICTORS) -> HeldOut:
    """Every step predicted by each predictor trained without the step's group."""
    unknown = set(predictors) - set(PREDICTORS)
    if unknown:
        raise ValueError(f"unknown predictor(s) {sorted(unknown)}; known: {PREDICTORS}")
    n = len(data)
    pred = {p: np.full(n, np.nan) for p in predictors}
    fold_of = np.full(n, "", dtype=object)
    betas = []
    for group, mask in folds(data, scheme):
        fold_of[mask] = group
        if not {"fitted", "hgb"} & set(pred):
            continue
        train, test = data.subset(~mask), data.subset(mask)
        if "fitted" in pred:
            beta = stepmodel.fit_beta(train)
            betas.append(pd.DataFrame({"scheme": scheme, "held_out": group,
                                       "beta": list(blis_basis.BETA_NAMES), "value": beta}))
            pred["fitted"][mask] = blis_basis.step_time_us(test.basis, beta)
        if "hgb" in pred:
            pred["hgb"][mask] = _hgb_predict(train, test)
    if "blis_shipped" in pred:
        pred["blis_shipped"] = blis_basis.step_time_us(data.basis, shipped.beta_array)
    if "physical" in pred:
        pred["physical"] = data.physical_us
    frame = pd.DataFrame({"scheme": scheme, "held_out": fold_of, "experiment_id": data.experiment,
                          "model": data.model, "workload": data.workload,
                          "target_us": data.target_us, **{f"pred_{p}_us": v for p, v in pred.items()}})
    return HeldOut(scheme, frame, pd.concat(betas, ignore_index=True) if betas else
                   pd.DataFrame(columns=["scheme", "held_out", "beta", "value"]))


def error_metrics(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """n_steps, MAPE, median APE, bias (mean signed relative error), all in %, and Pearson r,
    over the steps where both are finite."""
    ok = np.isfinite(prediction) & np.isfinite(target) & (target > 0)
    p, y = prediction[ok], target[ok]
    if len(y) == 0:
        return {"n_steps": 0, "mape_pct": np.nan, "median_ape_pct": np.nan,
                "bias_pct": np.nan, "pearson_r": np.nan}
    e = (p - y) / y
    r = np.corrcoef(p, y)[0, 1] if len(y) > 1 and p.std() > 0 and y.std() > 0 else np.nan
    return {"n_steps": int(len(y)), "mape_pct": float(np.mean(np.abs(e)) * 100),
            "median_ape_pct": float(np.median(np.abs(e)) * 100),
            "bias_pct": float(np.mean(e) * 100), "pearson_r": float(r)}


def error_table(results: list[HeldOut]) -> pd.DataFrame:
    """One row per (scheme, predictor, left-out group), then the pooled ``all`` row of each
    (scheme, predictor): the :func:`error_metrics` columns."""
    rows = []
    for res in results:
        f = res.predictions
        preds = [c.removeprefix("pred_").removesuffix("_us") for c in f if c.startswith("pred_")]
        groups = f.groupby("held_out", sort=True).indices
        y = f["target_us"].to_numpy()
        for p in preds:
            v = f[f"pred_{p}_us"].to_numpy()
            for group, idx in [*groups.items(), (ALL_GROUPS, slice(None))]:
                rows.append({"scheme": res.scheme, "predictor": p, "held_out": group,
                             **error_metrics(v[idx], y[idx])})
    return pd.DataFrame(rows)


def winner(table: pd.DataFrame, scheme: str, metric: str = "median_ape_pct") -> tuple[str, float, str, float]:
    """(best predictor, its pooled ``metric``, runner-up, its ``metric``) of ``scheme``."""
    pooled = table[(table["scheme"] == scheme) & (table["held_out"] == ALL_GROUPS)]
    ranked = pooled.sort_values(metric, kind="stable")
    if len(ranked) < 2:
        raise ValueError(f"scheme {scheme!r} has fewer than 2 predictors in the table")
    a, b = ranked.iloc[0], ranked.iloc[1]
    return str(a["predictor"]), float(a[metric]), str(b["predictor"]), float(b[metric])
