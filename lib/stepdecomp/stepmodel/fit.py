"""Fit BLIS's trained-physics coefficients to measured step times: non-negative, with
intervals from a cluster bootstrap over experiments and an identification verdict per
coefficient.

Data flow: step_components (+ hf_id from the steps) → blis_basis.basis_table → :func:`step_data`
(usable rows, dropped rows counted by reason) → :func:`fit` (one vector; per hardware with
:func:`fit_hardware`, per model with :func:`fit_per_model`) → :class:`CoefficientFit` and its
:meth:`~CoefficientFit.table`. Evaluation lives in evaluate.py, the export in
export.py.

The fit. Coefficients β ≥ 0 (BLIS rejects negatives) minimising the squared **relative**
error Σ_i ((x_i·β − y_i) / y_i)² of the target y (default ``step_forward_us``, one batch's
forward time), so a 5 ms decode step weighs as much as a 100 ms prefill: the per-step
percentage error is what a simulator's user sees (:data:`WEIGHTING`). It is solved from the
moment sums G = Σ z_i z_iᵀ, c = Σ z_i (z_i = x_i / y_i): columns scaled to unit diagonal,
G = VΛVᵀ, then scipy's NNLS on (Λ^½Vᵀ, Λ^-½Vᵀc) — the same objective up to a constant. Sums
of experiments add, so the cluster bootstrap (resample.cluster_sums) redraws whole
experiments and refits from summed moments, never from rows.

Identification, per coefficient (:data:`REASONS`):

* ``zero column``: the basis is 0 on every step (the MoE-dispatch term needs data parallelism
  > 1, the interleaved-MoE term a model mixing MoE and dense layers; T_tp at TP 1) — left out
  of the fit, β = 0;
* ``constant column``: a column other than the per-step constant takes one value on every
  step (L and T_weight inside one model): indistinguishable from β7, left out, β = 0;
* ``collinear``: fitted, but its variance is dominated (Belsley–Kuh–Welsch variance
  proportion > :data:`VARIANCE_PROPORTION_LIMIT`) by a direction of the scaled design whose
  condition index exceeds :data:`CONDITION_INDEX_LIMIT`: the data fix a combination, not it;
* ``at the bound``: not collinear, and the non-negative fit put it at 0 (the data would
  take it negative or have no use for it);
* ``interval reaches 0``: positive, but the bootstrap over experiments puts the lower end
  of its interval at 0: which experiments are drawn decides whether the term is used;
* ``identified`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from ..model import blis_basis
from ..core import columns, tables
from ..stats import resample
from ..hw.specs import GpuSpec, ModelSpec

#: The default fit target: the forward time of one batch (docs/measurement.md).
DEFAULT_TARGET = columns.FORWARD
#: What the fit minimises (see the module docstring).
WEIGHTING = "relative squared error, Σ ((x·β − y) / y)²"
#: Belsley–Kuh–Welsch thresholds: a condition index above 30 marks a near-dependency, and a
#: coefficient with more than half its variance on such a direction is not identified.
CONDITION_INDEX_LIMIT = 30.0
VARIANCE_PROPORTION_LIMIT = 0.5
#: Eigenvalues of the unit-diagonal moment matrix below this share of the largest are a
#: null direction (an exact dependency) in the NNLS reformulation.
_EIGEN_FLOOR = 1e-13
#: Bootstrap replicates and interval of the coefficients (resample's defaults).
N_RESAMPLES = resample.N_RESAMPLES
CONFIDENCE = resample.CONFIDENCE

IDENTIFIED = "identified"
ZERO_COLUMN = "zero column"
CONSTANT_COLUMN = "constant column"
COLLINEAR = "collinear"
AT_BOUND = "at the bound"
WEAK = "interval reaches 0"
REASONS = (IDENTIFIED, ZERO_COLUMN, CONSTANT_COLUMN, COLLINEAR, AT_BOUND, WEAK)
#: The per-step constant column (β7): the one constant column a fit keeps.
CONSTANT_TERM = "blis_one"

#: Reasons a step is not used (StepData.dropped).
DROP_TARGET = "target missing or not positive"
DROP_BASIS = "basis incomplete (no journey reconstruction for the step)"
DROP_BELOW_BOUND = "target below the HBM lower bound (not a forward pass)"


# --------------------------------------------------------------------------- data

@dataclass(frozen=True)
class StepData:
    """The usable steps of a fit: the (n × 11) basis, the target (µs) and who they belong
    to (``model`` is the HF id: directory names may spell one model two ways, e.g.
    llama-2-70b and llama-2-70b-hf); ``dropped`` counts the steps left out, by reason."""

    basis: np.ndarray
    target_us: np.ndarray
    experiment: np.ndarray
    model: np.ndarray
    workload: np.ndarray
    physical_us: np.ndarray
    target: str = DEFAULT_TARGET
    dropped: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.target_us)
        if self.basis.shape != (n, blis_basis.N_BETA):
            raise ValueError(f"basis has shape {self.basis.shape}, expected ({n}, "
                             f"{blis_basis.N_BETA})")
        for name in ("experiment", "model", "workload", "physical_us"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.target_us)

    def subset(self, rows: np.ndarray) -> "StepData":
        return StepData(self.basis[rows], self.target_us[rows], self.experiment[rows],
                        self.model[rows], self.workload[rows], self.physical_us[rows],
                        self.target, dict(self.dropped))


def with_hf_id(components: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """step_components with the hf_id of each experiment (from the steps table of 01_load)."""
    if "hf_id" in components:
        return components
    pairs = steps[[columns.EXPERIMENT, columns.HF_ID]].drop_duplicates(columns.EXPERIMENT)
    out = components.merge(pairs, on=columns.EXPERIMENT, how="left", validate="many_to_one")
    lost = out.loc[out[columns.HF_ID].isna(), columns.EXPERIMENT].unique()
    if len(lost):
        raise KeyError(f"no hf_id for experiment(s) {sorted(lost)} in the steps table")
    return out


def step_data(components: pd.DataFrame, specs: Mapping[str, ModelSpec], gpu: GpuSpec,
              target: str = DEFAULT_TARGET) -> StepData:
    """The usable steps of a step_components frame (with hf_id): the BLIS basis
    (blis_basis.basis_table), the target column ``target`` and phys_total_us. A step is
    dropped, and counted, when its target is missing or ≤ 0, when its target is below the
    step's HBM lower bound (phys_lower_bound_us: no forward pass of the batch can be that
    short, so the reading is not one — and a relative-error fit would be ruled by it), or
    when its basis has a NaN."""
    required = [target, columns.PHYS_TOTAL, columns.EXPERIMENT, columns.HF_ID,
                columns.WORKLOAD]
    missing = [c for c in required if c not in components]
    if missing:
        raise KeyError(f"step table lacks column(s) {missing}")
    x = blis_basis.basis_table(components, specs, gpu).to_numpy()
    y = pd.to_numeric(components[target], errors="coerce").to_numpy(dtype=np.float64,
                                                                     na_value=np.nan)
    ok_y = np.isfinite(y) & (y > 0)
    bound = (pd.to_numeric(components[columns.PHYS_LOWER_BOUND], errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan) if columns.PHYS_LOWER_BOUND in components
        else np.full(len(y), np.nan))
    below = ok_y & (y < bound)                 # NaN bound: no check possible, kept
    ok_x = np.isfinite(x).all(axis=1)
    keep = ok_y & ~below & ok_x
    dropped = {DROP_TARGET: int((~ok_y).sum()), DROP_BELOW_BOUND: int(below.sum()),
               DROP_BASIS: int((ok_y & ~below & ~ok_x).sum())}
    col = lambda c: components[c].astype(str).to_numpy()[keep]  # noqa: E731
    return StepData(basis=x[keep], target_us=y[keep], experiment=col(columns.EXPERIMENT),
                    model=col(columns.HF_ID), workload=col(columns.WORKLOAD),
                    physical_us=components[columns.PHYS_TOTAL].to_numpy(dtype=np.float64)[keep],
                    target=target, dropped=dropped)


# --------------------------------------------------------------------------- moments and NNLS

def _moments(basis: np.ndarray, target_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """G = Σ z zᵀ and c = Σ z for z = x / y (the relative-error normal equations), with
    einsum's fixed-order loops (no BLAS)."""
    z = basis / target_us[:, None]
    return np.einsum("ni,nj->ij", z, z), z.sum(axis=0)


def _group_moments(data: StepData, groups: np.ndarray) -> np.ndarray:
    """Per group (sorted labels), G flattened then c: shape (groups, k² + k)."""
    labels, inverse = np.unique(groups, return_inverse=True)
    k = data.basis.shape[1]
    out = np.zeros((len(labels), k * k + k))
    for g in range(len(labels)):
        rows = inverse == g
        G, c = _moments(data.basis[rows], data.target_us[rows])
        out[g] = np.concatenate([G.ravel(), c])
    return out


def _nnls_from_moments(G: np.ndarray, c: np.ndarray, active: np.ndarray) -> np.ndarray:
    """min bᵀGb − 2bᵀc over b ≥ 0 on the ``active`` columns (others 0)."""
    beta = np.zeros(len(c))
    idx = np.flatnonzero(active)
    if len(idx) == 0:
        return beta
    Ga, ca = G[np.ix_(idx, idx)], c[idx]
    scale = np.sqrt(np.diag(Ga))
    scale[scale == 0] = 1.0
    Gs = Ga / np.outer(scale, scale)
    lam, V = np.linalg.eigh(Gs)
    keep = lam > _EIGEN_FLOOR * lam.max()
    A = np.sqrt(lam[keep])[:, None] * V[:, keep].T
    rhs = (V[:, keep].T @ (ca / scale)) / np.sqrt(lam[keep])
    bs, _ = nnls(A, rhs, maxiter=50 * len(idx))
    beta[idx] = bs / scale
    return beta


def _collinearity(G: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Belsley–Kuh–Welsch on the unit-diagonal moment matrix of the active columns: per
    coefficient the condition index of the direction holding most of its variance, and
    whether that variance proportion exceeds VARIANCE_PROPORTION_LIMIT on a direction whose
    index exceeds CONDITION_INDEX_LIMIT (NaN / False for inactive columns)."""
    k = len(active)
    index, flagged = np.full(k, np.nan), np.zeros(k, dtype=bool)
    idx = np.flatnonzero(active)
    if len(idx) == 0:
        return index, flagged
    Ga = G[np.ix_(idx, idx)]
    d = np.sqrt(np.diag(Ga))
    lam, V = np.linalg.eigh(Ga / np.outer(d, d))
    lam = np.maximum(lam, lam.max() * 1e-300)
    eta = np.sqrt(lam.max() / lam)
    phi = V**2 / lam[None, :]
    pi = phi / phi.sum(axis=1, keepdims=True)
    index[idx] = eta[np.argmax(pi, axis=1)]
    flagged[idx] = ((pi > VARIANCE_PROPORTION_LIMIT) & (eta[None, :] > CONDITION_INDEX_LIMIT)
                    ).any(axis=1)
    return index, flagged


# --------------------------------------------------------------------------- the fit

@dataclass(frozen=True)
class CoefficientFit:
    """One fitted β vector (BASIS_COLUMNS order) with its bootstrap interval and verdicts."""

    scope: str
    target: str
    beta: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    reason: tuple[str, ...]
    condition_index: np.ndarray
    n_steps: int
    n_experiments: int

    @property
    def identified(self) -> np.ndarray:
        return np.array([r == IDENTIFIED for r in self.reason])

    @property
    def unidentified(self) -> list[str]:
        """BLIS names of the coefficients that are not identified."""
        return [n for n, ok in zip(blis_basis.BETA_NAMES, self.identified) if not ok]

    def table(self) -> pd.DataFrame:
        """One row per coefficient: scope, target, beta (BLIS name), basis column, value, the
        interval, identified, reason, condition index, steps and experiments."""
        return pd.DataFrame({
            "scope": self.scope, "target": self.target, "beta": list(blis_basis.BETA_NAMES),
            "basis": list(blis_basis.BASIS_COLUMNS), "value": self.beta,
            "ci_low": self.ci_low, "ci_high": self.ci_high, "identified": self.identified,
            "reason": list(self.reason), "condition_index": self.condition_index,
            "n_steps": self.n_steps, "n_experiments": self.n_experiments})


def active_columns(basis: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Which columns enter the fit, and the reason of those that do not (zero column,
    constant column other than the per-step constant)."""
    lo, hi = basis.min(axis=0), basis.max(axis=0)
    reasons = []
    for j, name in enumerate(blis_basis.BASIS_COLUMNS):
        if lo[j] == 0 and hi[j] == 0:
            reasons.append(ZERO_COLUMN)
        elif lo[j] == hi[j] and name != CONSTANT_TERM:
            reasons.append(CONSTANT_COLUMN)
        else:
            reasons.append(IDENTIFIED)
    return np.array([r == IDENTIFIED for r in reasons]), reasons


def fit_beta(data: StepData) -> np.ndarray:
    """The non-negative relative-error fit of β on ``data`` (no interval, no verdict): what the
    held-out evaluation refits per fold."""
    if len(data) == 0:
        raise ValueError("no usable steps to fit")
    active, _ = active_columns(data.basis)
    G, c = _moments(data.basis, data.target_us)
    return _nnls_from_moments(G, c, active)


def fit(data: StepData, scope: str, n_resamples: int = N_RESAMPLES,
        seed: int = resample.RESAMPLE_SEED) -> CoefficientFit:
    """β on all of ``data``, its percentile interval from a cluster bootstrap over
    experiments (NaN with fewer than 2 experiments) and each coefficient's verdict."""
    if len(data) == 0:
        raise ValueError(f"{scope}: no usable steps to fit")
    k = blis_basis.N_BETA
    active, reasons = active_columns(data.basis)
    per = _group_moments(data, data.experiment)
    total = per.sum(axis=0)
    G, c = total[:k * k].reshape(k, k), total[k * k:]
    beta = _nnls_from_moments(G, c, active)
    cond, flagged = _collinearity(G, active)
    for j in range(k):
        if not active[j]:
            continue
        if flagged[j]:
            reasons[j] = COLLINEAR
        elif beta[j] == 0:
            reasons[j] = AT_BOUND
    low, high = np.full(k, np.nan), np.full(k, np.nan)
    if len(per) >= 2 and n_resamples > 0:
        boot, _ = resample.cluster_sums(per, n_resamples, np.random.default_rng(seed))
        reps = np.array([_nnls_from_moments(b[:k * k].reshape(k, k), b[k * k:], active)
                         for b in boot])
        for j in range(k):
            low[j], high[j] = resample.percentile_interval(reps[:, j], CONFIDENCE)
            if reasons[j] == IDENTIFIED and active[j] and low[j] <= 0:
                reasons[j] = WEAK
    return CoefficientFit(scope=scope, target=data.target, beta=beta, ci_low=low, ci_high=high,
                          reason=tuple(reasons), condition_index=cond, n_steps=len(data),
                          n_experiments=len(per))


#: Scope name of the per-hardware vector (the one BLIS loads; core.tables: the report reads it).
ALL_MODELS = tables.ALL_MODELS


def fit_hardware(data: StepData, **kw) -> CoefficientFit:
    """The one vector for every model on this hardware (what the export writes)."""
    return fit(data, ALL_MODELS, **kw)


def fit_per_model(data: StepData, **kw) -> list[CoefficientFit]:
    """One vector per model (HF id; for analysis: L and T_weight are constant inside a
    model)."""
    return [fit(data.subset(data.model == m), m, **kw) for m in sorted(set(data.model))]


def coefficient_table(fits: Sequence[CoefficientFit]) -> pd.DataFrame:
    """The fits' tables stacked (hardware vector first, then per model)."""
    return pd.concat([f.table() for f in fits], ignore_index=True)
