"""Which physical components explain a step's time: an identified non-negative fit and the
LMG/Shapley shares of its R², per experiment, with stationary-block-bootstrap intervals.

The fit, per experiment: target ≈ intercept_us + Σ_j coef_j · term_j with coef_j ≥ 0 (the
intercept is free), by least squares on the experiment's usable steps. The terms
(:data:`TERMS`) are the identified ones:

* one GEMM term, ``phys_gemm_us`` = prefill GEMM + decode GEMM time. The roofline splits one
  GEMM time between prefill and decode by token count, so inside an experiment the two halves
  move against each other (r = −0.73 to −0.996 on the bundled data) and their separate
  coefficients are not identified; their sum is;
* prefill attention, decode attention, all-reduce and LM head time.

**Shares (LMG, Lindeman–Merenda–Gold 1980; Shapley value of R²).** R²(S) is the R² of the
non-negative fit on a subset S of the terms. A term's share is its marginal gain
R²(S ∪ {j}) − R²(S) averaged over all orders in which the terms can enter:
share_j = Σ_{S ∌ j} |S|! (k − |S| − 1)! / k! · (R²(S ∪ {j}) − R²(S)). Adding a term can only
lower the non-negative least-squares residual (coef_j = 0 stays feasible), so every gain and
every share is ≥ 0, and the shares sum to the full model's R² (Shapley efficiency).
(The product measure coef·cov(x, fit)/var(fit) used before goes negative or above 100 %
under collinearity.)

**Identification** (:func:`identification`). A coefficient is reported as unidentified, and
must be left out of any summary, when

* ``constant``: the term does not vary over the experiment's steps (it is then not fitted:
  its coefficient is NaN and its share 0 — a constant explains no variance);
* ``collinear``: Belsley's diagnostics on the column-scaled design [1, terms] find a
  dimension with condition index above CONDITION_INDEX_MAX on which at least two columns
  (the intercept included) have a variance-decomposition proportion above
  VARIANCE_PROPORTION_MAX — e.g. a GEMM time that is nearly its weight-read floor trades off
  against the intercept;
* ``at_bound``: its non-negative coefficient is 0 (the bound, not an estimate).

The intercept is unidentified when it is one of the columns of such a collinear dimension.

**Computation.** Everything is a function of the moment matrix of [1, terms, target]: the
full-sample fit and every bootstrap resample (resample.stationary_sums of the per-row outer
products) reduce to (k+2)² sums. The non-negative fit on a subset S is solved exactly by
enumeration: its active set T ⊆ S is the subset whose unconstrained least-squares solution is
non-negative with the highest R² (KKT; every such T is feasible, and the optimum's active set
is one of them), so one batched solve per subset covers all resamples at once. The solves are
elementwise Cholesky in a fixed order (no BLAS/LAPACK), so table numbers are the same on every
CPU; only the Belsley diagnostics (a yes/no per term) use LAPACK's eigendecomposition.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..core import artefacts
from ..core import columns as col
from ..core import tables
from ..core.tables import (GROUPS, REASON_ABSORBED, coef_column, group_pairs,  # noqa: F401
                           pair_r_column, pair_separable_column)
from ..core.thresholds import INSEPARABLE_ABS_R, valid_share
from . import resample
from ..core.paths import MODELS_DIR, display_path
from .correlation import DURATION, MIN_ROWS, NA_REASON

GEMM = col.PHYS_GEMM
TERMS = col.ATTRIBUTION_TERMS
#: Belsley, Kuh & Welsch (1980): condition indices above 30 signal a strong near-dependency;
#: the columns involved are those with more than half of their variance on that dimension.
CONDITION_INDEX_MAX = 30.0
VARIANCE_PROPORTION_MAX = 0.5
ATTRIBUTION_RESAMPLES = resample.N_RESAMPLES
CI_METHOD = resample.METHOD_BLOCK
KEYS = col.EXPERIMENT_KEYS

#: The fit (NNLS, its LMG shares and their block-bootstrap intervals) needs MIN_ROWS usable
#: rows (the seed's minimum for an r) and more than one row per parameter beyond the
#: intercept and the varying terms (MIN_ROWS_OVER_TERMS): n >= max(MIN_ROWS, k + 2).
MIN_FIT_ROWS = MIN_ROWS
MIN_ROWS_OVER_TERMS = 2
REASON_TOO_FEW = "too_few_rows"

ATTRIBUTION_COLUMNS = [*KEYS, "term", "coef", "coef_ci_low", "coef_ci_high", "identified",
                       "lmg_share_r2", "lmg_ci_low", "lmg_ci_high", "unidentified_reason",
                       NA_REASON]
SUMMARY_COLUMNS = [*KEYS, "n_steps", "r2", "r2_ci_low", "r2_ci_high", "intercept_us",
                   "intercept_ci_low", "intercept_ci_high", "block_length",
                   "intercept_identified", "n_terms", "ci_method", NA_REASON]


def fit_na_reason(n_rows: int, n_terms: int, target_varies: bool = True) -> str:
    """Why the fit of one experiment is N/A ("" when it is not): fewer than
    max(MIN_FIT_ROWS, n_terms + MIN_ROWS_OVER_TERMS) usable rows, or a constant target."""
    need = max(MIN_FIT_ROWS, n_terms + MIN_ROWS_OVER_TERMS)
    if n_rows < need:
        return resample.too_few(n_rows, need, f"the fit of {n_terms} varying term(s)")
    if not target_varies:
        return "the fit: step time constant on the usable steps"
    return ""


def with_gemm(components: pd.DataFrame) -> pd.DataFrame:
    """components with ``phys_gemm_us`` (prefill + decode GEMM time) if it lacks it; the
    roofline's own column is used where present."""
    if GEMM in components:
        return components
    return components.assign(**{GEMM: components[col.PHYS_PREFILL_GEMM]
                                + components[col.PHYS_DECODE_GEMM]})


# --------------------------------------------------------------------------- moments → fits

def _outer_features(Z: np.ndarray) -> np.ndarray:
    """(n, q(q+1)/2) products Z_i·Z_j (i ≤ j) of the columns of Z (n, q)."""
    iu, ju = np.triu_indices(Z.shape[1])
    return Z[:, iu] * Z[:, ju]


def _moment_matrix(sums: np.ndarray, q: int) -> np.ndarray:
    """(B, q, q) symmetric matrices from (B, q(q+1)/2) upper-triangle sums."""
    iu, ju = np.triu_indices(q)
    M = np.zeros((len(sums), q, q))
    M[:, iu, ju] = sums
    M[:, ju, iu] = sums
    return M


#: A pivot of the Cholesky factor below this share of its diagonal entry marks the subset
#: singular in that resample (its terms are linearly dependent there).
SINGULAR_PIVOT = 1e-12


def _solve(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched solve of the symmetric positive-definite systems A x = b ((B, t, t), (B, t))
    by Cholesky with elementwise numpy operations in a fixed order (no LAPACK/BLAS, whose
    kernels round differently per CPU: these numbers reach the tables). NaN for a resample
    whose A is singular (a pivot below SINGULAR_PIVOT of its diagonal)."""
    t = A.shape[-1]
    L = np.zeros_like(A)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(t):
            d = A[:, j, j].copy()
            for m in range(j):
                d = d - L[:, j, m] * L[:, j, m]
            d = np.where(d > SINGULAR_PIVOT * A[:, j, j], d, np.nan)
            L[:, j, j] = np.sqrt(d)
            for i in range(j + 1, t):
                v = A[:, i, j].copy()
                for m in range(j):
                    v = v - L[:, i, m] * L[:, j, m]
                L[:, i, j] = v / L[:, j, j]
        z = np.zeros_like(b)
        for i in range(t):                                      # L z = b
            v = b[:, i].copy()
            for m in range(i):
                v = v - L[:, i, m] * z[:, m]
            z[:, i] = v / L[:, i, i]
        x = np.zeros_like(b)
        for i in reversed(range(t)):                            # Lᵀ x = z
            v = z[:, i].copy()
            for m in range(i + 1, t):
                v = v - L[:, m, i] * x[:, m]
            x[:, i] = v / L[:, i, i]
    return x


@dataclass(frozen=True)
class Fits:
    """Per resample (leading axis B): R² of the non-negative fit on every subset (bit j of
    the subset index = term j), and the full model's coefficients and intercept in the
    original units."""

    r2_subsets: np.ndarray     # (B, 2^k)
    coef: np.ndarray           # (B, k)
    intercept: np.ndarray      # (B,)


def fits_from_sums(sums: np.ndarray, k: int, mu: np.ndarray, sd: np.ndarray) -> Fits:
    """Every subset's non-negative fit from (B, P) sums of the outer products of
    [1, z_1..z_k, z_y] (z standardised with means ``mu`` and sds ``sd``, target last)."""
    q = k + 2
    M = _moment_matrix(np.atleast_2d(sums), q)
    n = M[:, 0, 0]
    mean = M[:, 0, 1:] / n[:, None]
    C = M[:, 1:, 1:] / n[:, None, None] - mean[:, :, None] * mean[:, None, :]
    Sxx, Sxy, Syy = C[:, :k, :k], C[:, :k, k], C[:, k, k]
    B, n_sub = len(M), 1 << k
    r2_ols = np.full((B, n_sub), -np.inf)
    r2_ols[:, 0] = 0.0
    coefs = np.zeros((B, n_sub, k))
    with np.errstate(invalid="ignore", divide="ignore"):
        for s in range(1, n_sub):
            T = [j for j in range(k) if s >> j & 1]
            b = _solve(Sxx[:, T][:, :, T], Sxy[:, T])
            feasible = (b >= 0).all(axis=1) & np.isfinite(b).all(axis=1)
            r2 = (b * Sxy[:, T]).sum(axis=1) / Syy
            r2_ols[:, s] = np.where(feasible, r2, -np.inf)
            coefs[:, s, T] = b
    # NNLS R² of S = the best feasible active set T ⊆ S (zeta transform over subsets)
    best = np.broadcast_to(np.arange(n_sub), (B, n_sub)).copy()
    r2_nn = r2_ols.copy()
    for j in range(k):
        for s in range(n_sub):
            if s >> j & 1:
                t = s ^ (1 << j)
                better = r2_nn[:, t] > r2_nn[:, s]
                r2_nn[:, s] = np.where(better, r2_nn[:, t], r2_nn[:, s])
                best[:, s] = np.where(better, best[:, t], best[:, s])
    full = best[:, n_sub - 1]
    b_std = coefs[np.arange(B), full]
    coef = b_std * sd[-1] / sd[:k]
    mean_orig = mu + sd * mean                                   # (B, k+1)
    intercept = mean_orig[:, k] - (coef * mean_orig[:, :k]).sum(axis=1)
    return Fits(np.clip(r2_nn, 0.0, None), coef, intercept)


def lmg_shares(r2_subsets: np.ndarray, k: int) -> np.ndarray:
    """(B, k) LMG/Shapley shares from (B, 2^k) subset R² (bit j of the index = term j):
    share_j = Σ_{S ∌ j} |S|!(k−|S|−1)!/k! · (R²(S∪{j}) − R²(S))."""
    R = np.atleast_2d(r2_subsets)
    out = np.zeros((len(R), k))
    for j in range(k):
        for s in range(1 << k):
            if s >> j & 1:
                continue
            size = bin(s).count("1")
            w = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
            out[:, j] += w * (R[:, s | 1 << j] - R[:, s])
    return out


# --------------------------------------------------------------------------- identification

def belsley_collinear(X: np.ndarray) -> np.ndarray:
    """Columns of [1, X] (intercept first) caught in a near-dependency: Belsley's condition
    indices of the design scaled to unit column length, and the variance-decomposition
    proportions. A column is flagged when some dimension with condition index >
    CONDITION_INDEX_MAX carries more than VARIANCE_PROPORTION_MAX of its variance and of at
    least one other column's. Returns a bool array of length 1 + X.shape[1]."""
    A = np.column_stack([np.ones(len(X)), X])
    A = A / np.sqrt((A * A).sum(axis=0))
    lam, V = np.linalg.eigh(_moment_matrix((_outer_features(A)).sum(axis=0)[None, :],
                                           A.shape[1])[0])
    lam = np.clip(lam, lam.max() * 1e-300, None)
    eta = np.sqrt(lam.max() / lam)
    phi = V ** 2 / lam[None, :]                                  # (column, dimension)
    prop = phi / phi.sum(axis=1, keepdims=True)
    high = (prop > VARIANCE_PROPORTION_MAX) & (eta > CONDITION_INDEX_MAX)[None, :]
    dims = high.sum(axis=0) >= 2
    return (high & dims[None, :]).any(axis=1)


def identification(X: np.ndarray, coef: np.ndarray) -> tuple[list[str], bool]:
    """Per term: "" (identified), "constant", "collinear" or "at_bound", and whether the
    intercept is identified, for the usable rows X (n, k) and the fitted coefficients
    (NaN for terms not fitted)."""
    varies = np.ptp(X, axis=0) > 0
    flags = belsley_collinear(X[:, varies])
    collinear = np.zeros(X.shape[1], bool)
    collinear[varies] = flags[1:]
    reasons = ["constant" if not v else "collinear" if c else "at_bound" if b == 0 else ""
               for v, c, b in zip(varies, collinear, coef)]
    return reasons, not bool(flags[0])


# --------------------------------------------------------------------------- per experiment

def _standardized(X: np.ndarray, y: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mask of the regressors that vary, those columns, means and sds of [those columns,
    y] (a zero sd taken as 1), the design [1, standardised columns, standardised y]) — the
    form the moment sums of :func:`fits_from_sums` are taken over."""
    varies = np.ptp(X, axis=0) > 0
    Xv = X[:, varies]
    D = np.column_stack([Xv, y])
    mu, sd = D.mean(axis=0), D.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return varies, Xv, mu, sd, np.column_stack([np.ones(len(y)), (D - mu) / sd])


def _fit_experiment(X: np.ndarray, y: np.ndarray, n_resamples: int, seed: int,
                    confidence: float) -> dict:
    """Point fit, identification and block-bootstrap intervals for one experiment's usable
    rows (time order)."""
    k_all = X.shape[1]
    varies, Xv, mu, sd, Z = _standardized(X, y)
    k = Xv.shape[1]
    F = _outer_features(Z)
    L = resample.block_length(y, *Xv.T)
    point = fits_from_sums(F.sum(axis=0)[None, :], k, mu, sd)
    boot = fits_from_sums(resample.stationary_sums(F, L, n_resamples,
                                                   np.random.default_rng(seed)), k, mu, sd)
    jack = fits_from_sums(resample.block_jackknife_sums(F, L), k, mu, sd)

    def ci(est: np.ndarray, reps: np.ndarray, jk: np.ndarray) -> tuple[float, float]:
        return resample.bca_interval(float(est), reps, jk, confidence)

    shares = [lmg_shares(f.r2_subsets, k) for f in (point, boot, jack)]
    r2 = [f.r2_subsets[:, -1] for f in (point, boot, jack)]
    coef = np.full(k_all, np.nan)
    coef[varies] = point.coef[0]
    reasons, intercept_ok = identification(X, coef)
    terms = []
    j = 0
    for t in range(k_all):
        if not varies[t]:
            terms.append((np.nan, (np.nan, np.nan), 0.0, (0.0, 0.0)))
            continue
        terms.append((point.coef[0, j], ci(point.coef[0, j], boot.coef[:, j], jack.coef[:, j]),
                      shares[0][0, j], ci(shares[0][0, j], shares[1][:, j], shares[2][:, j])))
        j += 1
    return {"n_steps": len(y), "r2": float(r2[0][0]), "r2_ci": ci(r2[0][0], r2[1], r2[2]),
            "intercept": float(point.intercept[0]),
            "intercept_ci": ci(point.intercept[0], boot.intercept, jack.intercept),
            "block_length": L, "intercept_identified": intercept_ok, "n_terms": k,
            "terms": terms, "reasons": reasons}


@dataclass(frozen=True)
class Attribution:
    """The two tables of :func:`attribute` (columns ATTRIBUTION_COLUMNS, SUMMARY_COLUMNS)."""

    component_attribution: pd.DataFrame
    fit_summary: pd.DataFrame


def attribute(components: pd.DataFrame, target: str = DURATION, terms: Sequence[str] = TERMS,
              n_resamples: int = ATTRIBUTION_RESAMPLES, seed: int = resample.RESAMPLE_SEED,
              confidence: float = resample.CONFIDENCE) -> Attribution:
    """Per experiment: the identified non-negative fit of ``target`` on ``terms``, its LMG
    shares of R², and stationary-block-bootstrap BCa intervals of every number.

    Rows: the experiment's steps with every term finite and a target finite and > 0, in
    ``step.id`` order (the block bootstrap's time axis; steps without the target are
    skipped, closing the gap). The fit is N/A (NaN numbers, every term unidentified with
    reason ``too_few_rows``) below MIN_ROWS rows or with no more rows than parameters.
    ``phys_gemm_us`` is derived (:func:`with_gemm`) when absent.
    """
    frame = with_gemm(components)
    missing = [c for c in (target, *terms) if c not in frame]
    if missing:
        raise KeyError(f"attribution: components lack the column(s) {missing}")
    rows, fits = [], []
    order = [c for c in ("step.id",) if c in frame]
    for key, g in frame.groupby(KEYS, sort=True, observed=True):
        g = g.sort_values(order, kind="stable") if order else g
        X = g[list(terms)].to_numpy(np.float64, na_value=np.nan)
        y = g[target].to_numpy(np.float64, na_value=np.nan)
        keep = np.isfinite(X).all(axis=1) & np.isfinite(y) & (y > 0)
        X, y = X[keep], y[keep]
        ident = dict(zip(KEYS, key))
        n_fit = int((np.ptp(X, axis=0) > 0).sum()) if len(y) else 0
        reason = fit_na_reason(len(y), n_fit, bool(len(y)) and bool(np.ptp(y) > 0))
        if reason:
            fits.append({**ident, "n_steps": len(y), "block_length": np.nan,
                         "intercept_identified": False, "n_terms": n_fit, "ci_method": CI_METHOD,
                         NA_REASON: reason})
            rows += [{**ident, "term": t, "identified": False,
                      "unidentified_reason": REASON_TOO_FEW, NA_REASON: reason} for t in terms]
            continue
        f = _fit_experiment(X, y, n_resamples, seed, confidence)
        fits.append({**ident, "n_steps": f["n_steps"], "r2": f["r2"], "r2_ci_low": f["r2_ci"][0],
                     "r2_ci_high": f["r2_ci"][1], "intercept_us": f["intercept"],
                     "intercept_ci_low": f["intercept_ci"][0],
                     "intercept_ci_high": f["intercept_ci"][1], "block_length": f["block_length"],
                     "intercept_identified": f["intercept_identified"], "n_terms": f["n_terms"],
                     "ci_method": CI_METHOD, NA_REASON: ""})
        for t, (c, cci, s, sci), why in zip(terms, f["terms"], f["reasons"]):
            rows.append({**ident, "term": t, "coef": c, "coef_ci_low": cci[0],
                         "coef_ci_high": cci[1], "identified": why == "", "lmg_share_r2": s,
                         "lmg_ci_low": sci[0], "lmg_ci_high": sci[1], "unidentified_reason": why,
                         NA_REASON: f"term {why}" if why else ""})
    return Attribution(pd.DataFrame(rows, columns=ATTRIBUTION_COLUMNS),
                       pd.DataFrame(fits, columns=SUMMARY_COLUMNS))


def component_attribution(components: pd.DataFrame, target: str = DURATION,
                          **kwargs: object) -> pd.DataFrame:
    """The long table of :func:`attribute` (one row per experiment × term)."""
    return attribute(components, target, **kwargs).component_attribution


def fit_summary(components: pd.DataFrame, target: str = DURATION,
                **kwargs: object) -> pd.DataFrame:
    """The per-experiment fit table of :func:`attribute`."""
    return attribute(components, target, **kwargs).fit_summary


# --------------------------------------------------------------------------- per model

def model_keys(components: pd.DataFrame, models_dir: Path = MODELS_DIR) -> dict[str, str]:
    """experiment_id -> canonical model key for per-model summaries: the experiment's HF id
    (the ``hf_id`` column, else data/models/slugs.yaml on ``model``), HF ids whose
    config.json files parse to the same configuration collapsing to the first in sorted
    order — so llama-2-70b and llama-2-70b-hf are one model. A model without an HF id keeps
    its own name as key, with a warning naming slugs.yaml."""
    from ..traces.experiments import load_slug_map

    first = components.groupby("experiment_id", sort=True, observed=True).first()
    if "hf_id" in first:
        hf = first["hf_id"].astype(str).to_dict()
    else:
        slugs = load_slug_map(models_dir)
        unknown = sorted(set(first["model"]) - set(slugs))
        if unknown:
            warnings.warn(f"{display_path(models_dir / 'slugs.yaml')}: no HF id for model(s) "
                          f"{unknown}; each is its own key in per-model summaries", stacklevel=2)
        hf = {e: slugs.get(m, m) for e, m in first["model"].items()}
    canon: dict[str, str] = {}
    by_config: dict[str, str] = {}
    for h in sorted(set(hf.values())):
        path = models_dir / h / "config.json"
        ident = json.dumps(json.loads(path.read_text()), sort_keys=True) if path.is_file() else h
        canon[h] = by_config.setdefault(ident, h)
    return {e: canon[h] for e, h in hf.items()}


def attribution_by_model(table: pd.DataFrame, keys: Mapping[str, str]) -> pd.DataFrame:
    """Per-model summary of a component_attribution table (a ``target`` column, if present,
    is kept as a grouping key): model_key (``keys``: experiment_id -> model_keys' key, so
    HF-identical models are one), term, n_experiments, n_identified, median_coef (over the
    experiments where the coefficient is identified only; NaN where none is) and
    median_lmg_share_r2 (over the experiments with a fit). Rows without a term (the N/A
    rows of an experiment without steps, pipeline.no_step_rows) are left out. Raises KeyError
    for an experiment without a key."""
    table = table[table["term"].fillna("").astype(str) != ""]
    missing = sorted(set(table["experiment_id"]) - set(keys))
    if missing:
        raise KeyError(f"attribution_by_model: no model key for experiment(s) {missing}")
    t = table.assign(model_key=table["experiment_id"].map(keys),
                     identified=table["identified"].astype(bool))
    t["coef_identified"] = t["coef"].where(t["identified"])
    by = [c for c in ("target",) if c in t] + ["model_key", "term"]
    g = t.groupby(by, sort=False)
    out = pd.DataFrame({"n_experiments": g.size(), "n_identified": g["identified"].sum(),
                        "median_coef": g["coef_identified"].median(),
                        "median_lmg_share_r2": g["lmg_share_r2"].median()}).reset_index()
    out["n_identified"] = out["n_identified"].astype(np.int64)
    return out


# --------------------------------------------------------------------------- grouped terms

#: The grouped regressors, named by what step time scales with (name -> unit of one unit of
#: the regressor). The component terms above are not separable: the GEMM, all-reduce and LM
#: head times are all ~linear in scheduled tokens (all-reduce at r = 1 in every TP > 1 run),
#: so their shares split token-count variance arbitrarily. The groups are:
#:
#: * per step: the intercept (µs per step; not a regressor);
#: * per token: scheduled tokens = prefill + decode tokens (GEMM FLOPs, all-reduce, LM head);
#: * per KV byte: KV-cache bytes read + written (attention traffic);
#: * per weight byte: weight bytes read (constant in a dense model's experiment, where it is
#:   absorbed by the intercept; varies with MoE expert coverage).
#:
#: GROUPS, REASON_ABSORBED (the reason of a regressor that does not vary) and the column
#: names (coef_column, pair_r_column, pair_separable_column, group_pairs) are in core.tables;
#: INSEPARABLE_ABS_R, the |r| from which two groups cannot be separated, in core.thresholds:
#: the report reads the table by them and states the threshold.


def group_regressors(components: pd.DataFrame) -> pd.DataFrame:
    """The GROUPS regressors of each step: ``per_token`` = prefill + decode tokens,
    ``per_kv_byte`` = KV bytes read + written, ``per_weight_byte`` = weight bytes.
    Raises KeyError naming the columns missing."""
    need = [col.PREFILL_TOKENS, col.DECODE_TOKENS, col.PHYS_KV_READ_BYTES,
            col.PHYS_KV_WRITE_BYTES, col.PHYS_WEIGHT_BYTES]
    missing = [c for c in need if c not in components]
    if missing:
        raise KeyError(f"group attribution: components lack the column(s) {missing}")
    return pd.DataFrame({
        "per_token": components[col.PREFILL_TOKENS].astype(np.float64)
        + components[col.DECODE_TOKENS].astype(np.float64),
        "per_kv_byte": components[col.PHYS_KV_READ_BYTES].astype(np.float64)
        + components[col.PHYS_KV_WRITE_BYTES].astype(np.float64),
        "per_weight_byte": components[col.PHYS_WEIGHT_BYTES].astype(np.float64)},
        index=components.index)


GROUP_COLUMNS = [*KEYS, "n_steps", "r2", "intercept_us", "intercept_identified",
                 *[c for g in GROUPS for c in (f"share_r2_{g}", coef_column(g),
                                               f"identified_{g}", f"reason_{g}")],
                 *[c for a, b in group_pairs() for c in (pair_r_column(a, b),
                                                         pair_separable_column(a, b))],
                 NA_REASON]


def _pearson(Z: np.ndarray) -> np.ndarray:
    """(k, k) Pearson r of the columns of Z (n, k) by elementwise sums (no BLAS); NaN for a
    constant column."""
    D = Z - Z.mean(axis=0)
    varies = np.ptp(Z, axis=0) > 0
    k = Z.shape[1]
    out = np.full((k, k), np.nan)
    for i in range(k):
        for j in range(k):
            if varies[i] and varies[j]:
                out[i, j] = math.fsum(D[:, i] * D[:, j]) / math.sqrt(
                    math.fsum(D[:, i] ** 2) * math.fsum(D[:, j] ** 2))
    return out


def _group_fit(X: np.ndarray, y: np.ndarray) -> dict:
    """Point NNLS fit, LMG shares and identification of one experiment's usable rows on the
    GROUPS regressors X (n, k); constant regressors are not fitted (share 0, coef NaN)."""
    varies, Xv, mu, sd, Z = _standardized(X, y)
    k = Xv.shape[1]
    sums = np.array([math.fsum(c) for c in _outer_features(Z).T])[None, :]
    fit = fits_from_sums(sums, k, mu, sd)
    coef = np.full(X.shape[1], np.nan)
    coef[varies] = fit.coef[0]
    share = np.zeros(X.shape[1])
    share[varies] = lmg_shares(fit.r2_subsets, k)[0]
    reasons, intercept_ok = identification(X, coef)
    return {"r2": float(fit.r2_subsets[0, -1]), "intercept": float(fit.intercept[0]),
            "intercept_identified": intercept_ok, "coef": coef, "share": share,
            "reasons": [REASON_ABSORBED if r == "constant" else r for r in reasons],
            "r": _pearson(X)}


def group_attribution(components: pd.DataFrame, target: str = DURATION) -> pd.DataFrame:
    """Per experiment (one row, GROUP_COLUMNS): the non-negative fit of ``target`` on the
    GROUPS regressors (:func:`group_regressors`) — the intercept is the per-step constant
    (µs per step) — with each group's LMG share of R², its coefficient in µs per unit
    (``coef_us_per_token``, ``coef_us_per_kv_byte``, ``coef_us_per_weight_byte``), whether
    it is identified and why not (:func:`identification`; a constant regressor is
    REASON_ABSORBED), and per pair of groups their Pearson r over the steps and
    ``separable`` = |r| < INSEPARABLE_ABS_R (False also where either does not vary: r is
    undefined and the constant one is the intercept's).

    Rows and N/A rule as in :func:`attribute`: steps with every regressor finite and a
    target finite and > 0, the fit N/A (na_reason) below max(MIN_FIT_ROWS, varying
    regressors + MIN_ROWS_OVER_TERMS) rows or with a constant target. Point estimates (no
    intervals: the shares of component_attribution carry them)."""
    if target not in components:
        raise KeyError(f"group attribution: components lack the target column {target!r}")
    regs = group_regressors(components)
    frame = pd.concat([components[KEYS], regs, components[[target]]], axis=1)
    groups = list(GROUPS)
    rows = []
    for key, g in frame.groupby(KEYS, sort=True, observed=True):
        X = g[groups].to_numpy(np.float64, na_value=np.nan)
        y = g[target].to_numpy(np.float64, na_value=np.nan)
        keep = np.isfinite(X).all(axis=1) & np.isfinite(y) & (y > 0)
        X, y = X[keep], y[keep]
        row: dict = {**dict(zip(KEYS, key)), "n_steps": len(y)}
        n_fit = int((np.ptp(X, axis=0) > 0).sum()) if len(y) else 0
        reason = fit_na_reason(len(y), n_fit, bool(len(y)) and bool(np.ptp(y) > 0))
        if reason:
            row.update({"intercept_identified": False, NA_REASON: reason,
                        **{f"identified_{g_}": False for g_ in groups},
                        **{f"reason_{g_}": REASON_TOO_FEW for g_ in groups},
                        **{pair_separable_column(a, b): False for a, b in group_pairs()}})
            rows.append(row)
            continue
        f = _group_fit(X, y)
        row.update({"r2": f["r2"], "intercept_us": f["intercept"],
                    "intercept_identified": f["intercept_identified"], NA_REASON: ""})
        for j, g_ in enumerate(groups):
            row.update({f"share_r2_{g_}": f["share"][j], coef_column(g_): f["coef"][j],
                        f"identified_{g_}": f["reasons"][j] == "",
                        f"reason_{g_}": f["reasons"][j]})
        for a, b in group_pairs():
            r = f["r"][groups.index(a), groups.index(b)]
            row[pair_r_column(a, b)] = r
            row[pair_separable_column(a, b)] = bool(np.isfinite(r) and abs(r) < INSEPARABLE_ABS_R)
        rows.append(row)
    out = pd.DataFrame(rows, columns=GROUP_COLUMNS)
    flags = ["intercept_identified", *[f"identified_{g_}" for g_ in groups],
             *[pair_separable_column(a, b) for a, b in group_pairs()]]
    return out.astype({c: bool for c in flags} | {"n_steps": np.int64})


# --------------------------------------------------------------------------- summaries
#
# What FINDINGS says about the attribution over experiments, computed here and written by
# notebook 04 (core.tables: attribution_summary, attribution_term_summary,
# group_attribution_summary, group_attribution_pairs), one target at a time of the stacked
# tables (of a table without a ``target`` column, the summary has none). Only experiments with a
# fit (r2 known) count; a share counts where it is a share (core.thresholds.valid_share), a
# coefficient where the fit identifies it.

#: unidentified_reason of a coefficient collinear with others (Belsley): its term shares
#: variance the data cannot split, so it does not lead an experiment.
COLLINEAR_REASON = "collinear"
ATTRIBUTION_SUMMARY_COLUMNS = ["target", "n_experiments", "r2_median", "r2_min", "r2_max",
                               "intercepts_identified", "n_unidentified",
                               "experiments_unidentified"]
TERM_SUMMARY_COLUMNS = ["target", "term", "n_leads", "lead_rank", "n_leads_inseparable",
                        "inseparable_rank", "median_share", "n_identified", "median_coef"]
GROUP_SUMMARY_COLUMNS = ["target", "group", "n_experiments", "n_varying", "n_absorbed",
                         "median_share", "n_identified", "median_coef", "intercept_median_us"]
PAIR_SUMMARY_COLUMNS = ["target", "a", "b", "n_both_vary", "n_inseparable"]




def _by_target(table: pd.DataFrame) -> list[tuple[str | None, pd.DataFrame]]:
    """(target, its rows without the column) per target of a stacked table; one (None, the
    table) for a table without a ``target`` column."""
    if "target" not in table:
        return [(None, table)]
    return [(str(t), g.drop(columns="target")) for t, g in table.groupby("target", sort=False)]


def _frame(rows: list[dict], columns: list[str], stacked: bool) -> pd.DataFrame:
    """The summary rows as a table, without the ``target`` column unless ``stacked``."""
    cols = columns if stacked else [c for c in columns if c != "target"]
    return pd.DataFrame([{k: v for k, v in r.items() if k in cols} for r in rows], columns=cols)


def summary_terms(attr: pd.DataFrame) -> list[str]:
    """The terms of a component_attribution table in col.ATTRIBUTION_TERMS order (others
    after them); the N/A rows of an experiment without steps have none."""
    present = [t for t in dict.fromkeys(attr["term"]) if isinstance(t, str) and t]
    return [t for t in TERMS if t in present] + [t for t in present if t not in TERMS]


def _attribution_parts(attr: pd.DataFrame, fit: pd.DataFrame) -> dict:
    """The experiments with a fit, their valid shares, each one's leading term (separable or
    collinear) and the identified and unidentified coefficients, of one target."""
    attr = attr.assign(identified=artefacts.csv_bool(attr["identified"]))
    fitted = fit.dropna(subset=["r2"])
    mine = attr["experiment_id"].isin(fitted["experiment_id"])
    ok = attr[attr["lmg_share_r2"].map(valid_share) & mine]
    lead = ok.loc[ok.groupby("experiment_id")["lmg_share_r2"].idxmax()]
    reason = lead.get("unidentified_reason", pd.Series("", index=lead.index))
    collinear = reason.astype(str) == COLLINEAR_REASON
    return {"attr": attr, "fitted": fitted, "ok": ok, "lead": lead[~collinear],
            "inseparable": lead[collinear],
            "ident": attr[attr["identified"] & attr["coef"].notna() & mine],
            "unident": attr[~attr["identified"] & mine]}


def attribution_summary(component_attribution: pd.DataFrame,
                        fit_summary: pd.DataFrame) -> pd.DataFrame:
    """Per target (ATTRIBUTION_SUMMARY_COLUMNS): the experiments with a fit, the median and
    range of their R², in how many the intercept is identified (empty without the
    ``intercept_identified`` column), the coefficients not identified and in how many
    experiments."""
    fits = dict(_by_target(fit_summary))
    rows = []
    for target, attr in _by_target(component_attribution):
        p = _attribution_parts(attr, fits.get(target, fit_summary.iloc[:0]))
        f = p["fitted"]
        rows.append({"target": target, "n_experiments": len(f),
                     "r2_median": f["r2"].median(), "r2_min": f["r2"].min(),
                     "r2_max": f["r2"].max(),
                     "intercepts_identified": int(artefacts.csv_bool(f["intercept_identified"]).sum())
                     if "intercept_identified" in f else pd.NA,
                     "n_unidentified": len(p["unident"]),
                     "experiments_unidentified": int(p["unident"]["experiment_id"].nunique())})
    out = _frame(rows, ATTRIBUTION_SUMMARY_COLUMNS, "target" in component_attribution)
    return out.astype({"intercepts_identified": "Int64"})


def attribution_term_summary(component_attribution: pd.DataFrame,
                             fit_summary: pd.DataFrame) -> pd.DataFrame:
    """Per target and term (:func:`summary_terms` order; TERM_SUMMARY_COLUMNS), over the
    experiments with a fit: in how many the term has the largest share where it is separable
    from the others (``n_leads``) and where it is collinear with them
    (``n_leads_inseparable``), each with its rank among the terms by that count (most first,
    ties in the order the experiments first show them; empty for 0), the median share, and
    the median coefficient over the experiments that identify it (``n_identified``)."""
    fits = dict(_by_target(fit_summary))
    rows = []
    for target, attr in _by_target(component_attribution):
        p = _attribution_parts(attr, fits.get(target, fit_summary.iloc[:0]))
        ranks = {}
        for key, frame in (("lead", p["lead"]), ("inseparable", p["inseparable"])):
            counts = frame["term"].value_counts()
            ranks[key] = {t: (int(n), i) for i, (t, n) in enumerate(counts.items(), start=1)}
        for term in summary_terms(attr):
            share = p["ok"].loc[p["ok"]["term"] == term, "lmg_share_r2"]
            coef = p["ident"].loc[p["ident"]["term"] == term, "coef"]
            lead = ranks["lead"].get(term, (0, pd.NA))
            insep = ranks["inseparable"].get(term, (0, pd.NA))
            rows.append({"target": target, "term": term, "n_leads": lead[0],
                         "lead_rank": lead[1], "n_leads_inseparable": insep[0],
                         "inseparable_rank": insep[1],
                         "median_share": float(share.median()) if len(share) else np.nan,
                         "n_identified": len(coef),
                         "median_coef": float(coef.median()) if len(coef) else np.nan})
    out = _frame(rows, TERM_SUMMARY_COLUMNS, "target" in component_attribution)
    return out.astype({"lead_rank": "Int64", "inseparable_rank": "Int64"})


def group_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per target and group of a group_attribution table (GROUP_SUMMARY_COLUMNS), over the
    experiments with a fit (``n_experiments``): where the group's regressor varies
    (``n_varying``, its median share there) and where it is absorbed by the per-step constant
    (``n_absorbed``), the median coefficient over the experiments that identify it, and the
    median per-step constant (the same on every row of a target)."""
    rows = []
    for target, t in _by_target(table):
        fitted = t.dropna(subset=["r2"])
        intercept = float(fitted["intercept_us"].median()) if len(fitted) else np.nan
        for g in GROUPS:
            reason = fitted[f"reason_{g}"].fillna("").astype(str)
            varying = fitted[reason != REASON_ABSORBED]
            ident = fitted[artefacts.csv_bool(fitted[f"identified_{g}"])]
            rows.append({"target": target, "group": g, "n_experiments": len(fitted),
                         "n_varying": len(varying),
                         "n_absorbed": int((reason == REASON_ABSORBED).sum()),
                         "median_share": float(varying[f"share_r2_{g}"].median())
                         if len(varying) else np.nan,
                         "n_identified": len(ident),
                         "median_coef": float(ident[coef_column(g)].median())
                         if len(ident) else np.nan,
                         "intercept_median_us": intercept})
    return _frame(rows, GROUP_SUMMARY_COLUMNS, "target" in table)


def group_pair_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per target and pair of groups (group_pairs order; PAIR_SUMMARY_COLUMNS), over the
    experiments with a fit: in how many both regressors vary (their r is known) and in how
    many of those the two cannot be separated (not ``separable``: |r| ≥ INSEPARABLE_ABS_R)."""
    rows = []
    for target, t in _by_target(table):
        fitted = t.dropna(subset=["r2"])
        for a, b in group_pairs():
            both = fitted[pair_r_column(a, b)].notna()
            apart = artefacts.csv_bool(fitted[pair_separable_column(a, b)])
            rows.append({"target": target, "a": a, "b": b, "n_both_vary": int(both.sum()),
                         "n_inseparable": int((both & ~apart).sum())})
    return _frame(rows, PAIR_SUMMARY_COLUMNS, "target" in table)


#: Slack for rounding when checking that an experiment's valid shares sum to its R² (the
#: tables keep artefacts.FLOAT_SIG_DIGITS significant digits; a share's own range:
#: core.thresholds.valid_share).
SHARE_SUM_TOLERANCE = 1e-3
SHARE_SUM_COLUMNS = ["target", "experiment_id", "model", "workload", "share_sum", "r2",
                     "sums_to_r2"]
MODEL_EXPERIMENTS_COLUMNS = ["target", "model_key", "n_experiments"]


def share_sums(component_attribution: pd.DataFrame, fit_summary: pd.DataFrame) -> pd.DataFrame:
    """Per target and experiment with a fit and at least one valid share (valid_share), by
    experiment_id (SHARE_SUM_COLUMNS): the sum of its valid shares (rounding noise below 0
    counted as 0, math.fsum), its R² and whether the two agree within SHARE_SUM_TOLERANCE —
    LMG shares sum to R², so an experiment where they do not has a wrong share."""
    fits = dict(_by_target(fit_summary))
    rows = []
    for target, attr in _by_target(component_attribution):
        fit = fits.get(target, fit_summary.iloc[:0])
        r2 = fit.dropna(subset=["r2"]).set_index("experiment_id")
        ok = attr[attr["lmg_share_r2"].map(valid_share)]
        for e, shares in ok.groupby("experiment_id")["lmg_share_r2"]:
            if e not in r2.index:
                continue
            total = math.fsum(max(float(x), 0.0) for x in shares)
            row = r2.loc[e]
            rows.append({"target": target, "experiment_id": e, "model": row["model"],
                         "workload": row["workload"], "share_sum": total,
                         "r2": float(row["r2"]),
                         "sums_to_r2": abs(total - float(row["r2"])) <= SHARE_SUM_TOLERANCE})
    return _frame(rows, SHARE_SUM_COLUMNS, "target" in component_attribution)


def by_model_experiments(by_model: pd.DataFrame) -> pd.DataFrame:
    """Per target and model_key of an :func:`attribution_by_model` table (in its order,
    MODEL_EXPERIMENTS_COLUMNS): the model's experiments, the most of any of its terms."""
    rows = [{"target": target, "model_key": key, "n_experiments": int(g["n_experiments"].max())}
            for target, t in _by_target(by_model)
            for key, g in t.groupby("model_key", sort=False)]
    return _frame(rows, MODEL_EXPERIMENTS_COLUMNS, "target" in by_model)


def summary_tables(fit: Attribution, groups: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The summaries notebook 04 writes for FINDINGS, by table name (core.tables): of the
    component fit (``fit``: component_attribution, fit_summary) and of the grouped one
    (``groups``: group_attribution), all per target."""
    return {tables.ATTRIBUTION_SUMMARY: attribution_summary(fit.component_attribution,
                                                            fit.fit_summary),
            tables.ATTRIBUTION_SHARE_SUMS: share_sums(fit.component_attribution, fit.fit_summary),
            tables.ATTRIBUTION_TERM_SUMMARY: attribution_term_summary(fit.component_attribution,
                                                                      fit.fit_summary),
            tables.GROUP_SUMMARY: group_summary(groups),
            tables.GROUP_PAIR_SUMMARY: group_pair_summary(groups)}
