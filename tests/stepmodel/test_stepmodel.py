"""The step-time model: the non-negative fit of BLIS's coefficients (stepmodel), its held-out
evaluation (stepmodel_eval) and the BLIS export (blis_export), on synthetic steps whose times
come from a known coefficient vector."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import nnls

from stepdecomp.model import blis_basis
from stepdecomp.stepmodel import export as blis_export, fit as stepmodel, evaluate
from stepdecomp.hw.specs import load_gpu_spec, load_model_specs
from stepmodel_synthetic import MODELS, TRUE_BETA, WORKLOADS, synthetic_components

N_STEPS, NOISE = 32_000, 0.005


def _data(frame: pd.DataFrame, target: str = "step_forward_us") -> stepmodel.StepData:
    return stepmodel.step_data(frame, load_model_specs(frame["hf_id"].unique()),
                               load_gpu_spec("h100-sxm"), target)


@pytest.fixture(scope="module")
def synthetic() -> stepmodel.StepData:
    return _data(synthetic_components(N_STEPS, noise=NOISE, seed=0))


@pytest.fixture(scope="module")
def hardware_fit(synthetic) -> stepmodel.CoefficientFit:
    return stepmodel.fit_hardware(synthetic, n_resamples=200)


# --------------------------------------------------------------------------- recovery

def test_synthetic_recovery_of_every_identified_coefficient(hardware_fit) -> None:
    fit = hardware_fit
    assert fit.n_steps == N_STEPS and fit.n_experiments == 16
    assert fit.unidentified == ["b8", "b_ep"]
    assert [fit.reason[7], fit.reason[10]] == [stepmodel.ZERO_COLUMN, stepmodel.ZERO_COLUMN]
    ok = fit.identified
    assert ok.sum() == 9
    rel = np.abs(fit.beta[ok] / TRUE_BETA[ok] - 1)
    assert (rel < 0.05).all(), dict(zip(np.array(blis_basis.BETA_NAMES)[ok], rel))
    # the bootstrap interval brackets the estimate of every identified coefficient
    assert (fit.ci_low[ok] <= fit.beta[ok]).all() and (fit.beta[ok] <= fit.ci_high[ok]).all()
    assert fit.beta[[7, 10]].tolist() == [0.0, 0.0]


def test_per_model_fit_names_constant_and_zero_columns(synthetic) -> None:
    fits = {f.scope: f for f in stepmodel.fit_per_model(synthetic, n_resamples=0)}
    assert sorted(fits) == sorted(h for h, _ in MODELS.values())
    llama = fits["meta-llama/Llama-2-7b-hf"]
    # inside one model L and the weight time are constant (β7 takes them); TP 1: no all-reduce
    assert llama.reason[2] == llama.reason[4] == stepmodel.CONSTANT_COLUMN
    assert llama.reason[3] == stepmodel.ZERO_COLUMN
    assert llama.beta[[2, 3, 4]].tolist() == [0.0, 0.0, 0.0]
    assert np.isnan(llama.ci_low).all()          # no bootstrap asked for
    assert llama.n_experiments == len(WORKLOADS)


def test_collinear_and_at_bound_verdicts() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    x = np.zeros((n, 11))
    x[:, 0] = rng.uniform(10, 1000, n)
    x[:, 8] = 2.0 * x[:, 0] * (1 + 1e-4 * rng.standard_normal(n))   # nearly proportional
    x[:, 1] = rng.uniform(10, 1000, n)
    x[:, 6] = 1.0
    # x1 enters negatively: the non-negative fit holds it at 0
    y = 1.0 * x[:, 0] + 0.5 * x[:, 8] - 0.3 * x[:, 1] + 500.0
    labels = np.repeat(np.array(["e1", "e2", "e3", "e4"]), n // 4)
    data = stepmodel.StepData(x, y, labels, labels, labels, np.full(n, np.nan))
    fit = stepmodel.fit(data, "hand", n_resamples=0)
    assert fit.reason[0] == fit.reason[8] == stepmodel.COLLINEAR
    assert fit.condition_index[0] > stepmodel.CONDITION_INDEX_LIMIT
    assert fit.reason[1] == stepmodel.AT_BOUND and fit.beta[1] == 0.0
    assert fit.reason[6] == stepmodel.IDENTIFIED
    assert set(fit.unidentified) == {"b1a", "b2a", "b3", "b4", "b5", "b6", "b8", "b1b", "b2b",
                                     "b_ep"}


def test_moment_nnls_equals_nnls_on_the_rows(synthetic) -> None:
    # the relative-error objective on the rows: rows scaled by 1/y against a target of ones
    sub = synthetic.subset(np.arange(3000))
    active, _ = stepmodel.active_columns(sub.basis)
    z = sub.basis[:, active] / sub.target_us[:, None]
    scale = np.linalg.norm(z, axis=0)
    direct, _ = nnls(z / scale, np.ones(len(z)))
    np.testing.assert_allclose(stepmodel.fit_beta(sub)[active], direct / scale, rtol=1e-6)


def test_coefficient_table(hardware_fit) -> None:
    t = hardware_fit.table()
    assert t["beta"].tolist() == list(blis_basis.BETA_NAMES)
    assert t["basis"].tolist() == list(blis_basis.BASIS_COLUMNS)
    assert t["identified"].sum() == 9 and (t["n_experiments"] == 16).all()


# --------------------------------------------------------------------------- data

def test_step_data_counts_what_it_drops() -> None:
    frame = synthetic_components(1600, seed=2)
    frame.loc[:9, "step_forward_us"] = np.nan
    frame.loc[10:14, "step_forward_us"] = 0.0
    frame.loc[20:26, "phys_decode_prior_ctx_tokens"] = np.nan   # no journey reconstruction
    frame["phys_lower_bound_us"] = 1.0
    frame.loc[30:32, "phys_lower_bound_us"] = 1e12                # no batch is that short
    frame.loc[33, "phys_lower_bound_us"] = np.nan                 # no bound: kept
    d = _data(frame)
    assert d.dropped == {stepmodel.DROP_TARGET: 15, stepmodel.DROP_BELOW_BOUND: 3,
                         stepmodel.DROP_BASIS: 7}
    assert len(d) == 1600 - 25


def test_step_data_error_paths() -> None:
    frame = synthetic_components(160, seed=3)
    with pytest.raises(KeyError, match=r"lacks column\(s\) \['step_period_us'\]"):
        _data(frame, target="step_period_us")
    with pytest.raises(KeyError, match="phys_batch_reqs"):
        _data(frame.drop(columns="phys_batch_reqs"))
    empty = _data(frame).subset(np.zeros(len(frame), dtype=bool))
    with pytest.raises(ValueError, match="no usable steps"):
        stepmodel.fit(empty, "none")


def test_with_hf_id() -> None:
    comp = pd.DataFrame({"experiment_id": ["a", "a", "b"], "x": [1, 2, 3]})
    steps = pd.DataFrame({"experiment_id": ["a", "b", "b"], "hf_id": ["m1", "m2", "m2"]})
    assert stepmodel.with_hf_id(comp, steps)["hf_id"].tolist() == ["m1", "m1", "m2"]
    with pytest.raises(KeyError, match=r"no hf_id for experiment\(s\) \['b'\]"):
        stepmodel.with_hf_id(comp, steps.iloc[:1])


# --------------------------------------------------------------------------- held out

@pytest.mark.parametrize("scheme, groups", [("workload", len(WORKLOADS)), ("model", len(MODELS))])
def test_held_out_folds_never_share_an_experiment(synthetic, scheme, groups) -> None:
    folds = evaluate.folds(synthetic, scheme)
    assert len(folds) == groups
    assert sum(mask.sum() for _, mask in folds) == len(synthetic)     # each step held out once
    for _, mask in folds:
        assert not set(synthetic.experiment[mask]) & set(synthetic.experiment[~mask])


def test_held_out_evaluation(synthetic) -> None:
    shipped = blis_basis.load_coefficients()
    res = evaluate.held_out(synthetic, "model", shipped,
                                  predictors=("fitted", "blis_shipped", "physical"))
    table = evaluate.error_table([res])
    pooled = table[table["held_out"] == evaluate.ALL_GROUPS].set_index("predictor")
    assert (pooled["n_steps"] == len(synthetic)).all()
    # the fitted vector predicts a model it never saw from the generating β: error ≈ the noise
    assert pooled.loc["fitted", "median_ape_pct"] < 1.0
    assert evaluate.winner(table, "model")[0] == "fitted"
    assert len(res.fold_betas) == len(MODELS) * 11
    with pytest.raises(ValueError, match="unknown held-out scheme 'random'"):
        evaluate.folds(synthetic, "random")
    with pytest.raises(ValueError, match="unknown predictor"):
        evaluate.held_out(synthetic, "model", shipped, predictors=("xgboost",))


def test_gradient_boosting_ceiling_runs_held_out(synthetic) -> None:
    sub = synthetic.subset(np.arange(len(synthetic)) % 8 == 0)
    res = evaluate.held_out(sub, "workload", blis_basis.load_coefficients(),
                                  predictors=("hgb",))
    pred = res.predictions["pred_hgb_us"].to_numpy()
    assert np.isfinite(pred).all() and (pred > 0).all()


def test_error_metrics_by_hand() -> None:
    m = evaluate.error_metrics(np.array([110.0, 180.0, 400.0, np.nan]),
                                     np.array([100.0, 200.0, 400.0, 50.0]))
    assert m["n_steps"] == 3
    assert m["mape_pct"] == pytest.approx(20 / 3)          # (10 + 10 + 0) / 3 %
    assert m["median_ape_pct"] == pytest.approx(10.0)
    assert m["bias_pct"] == pytest.approx(0.0, abs=1e-12)  # (+10 − 10 + 0) / 3
    assert m["pearson_r"] == pytest.approx(np.corrcoef([110, 180, 400], [100, 200, 400])[0, 1])
    assert math.isnan(evaluate.error_metrics(np.array([]), np.array([]))["mape_pct"])


# --------------------------------------------------------------------------- export

def _coeffs(hardware_fit) -> blis_basis.TrainedPhysicsCoefficients:
    return blis_basis.TrainedPhysicsCoefficients(alpha=blis_basis.load_coefficients().alpha,
                                                 beta=tuple(hardware_fit.beta))


def test_export_has_only_blis_keys_and_round_trips(tmp_path, hardware_fit) -> None:
    models = pd.DataFrame({"hf_id": ["meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-70b-hf",
                                     "meta-llama/Llama-2-70b-hf", "meta-llama/Llama-2-70b-hf"],
                           "tp": [1, 4, 4, 8]})
    entries = blis_export.model_entries(models, "h100-sxm")
    assert entries == {
        "meta-llama/llama-2-7b-hf": {"GPU": "H100", "tensor_parallelism": 1,
                                     "hf_repo": "meta-llama/Llama-2-7b-hf"},
        "meta-llama/llama-2-70b-hf": {"GPU": "H100", "tensor_parallelism": 4,
                                      "hf_repo": "meta-llama/Llama-2-70b-hf"}}
    doc = blis_export.defaults_document(_coeffs(hardware_fit), entries)
    path = blis_export.write_defaults(tmp_path / "defaults.yaml", doc, "a header\nline two")
    text = path.read_text()
    assert text.startswith("# a header\n# line two\n")
    back, coeffs = blis_export.read_defaults(path)
    assert set(back) <= set(blis_export.ACCEPTED_KEYS)
    assert list(back) == ["defaults", "version", "trained_physics_coefficients"]
    assert len(coeffs.beta) == 11 and len(coeffs.alpha) == 3
    assert all(math.isfinite(b) and b >= 0 for b in coeffs.beta)
    assert coeffs.beta == tuple(hardware_fit.beta) and back["defaults"] == entries
    assert blis_basis.load_coefficients(path) == coeffs


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(extra=1), r"top-level key\(s\) \['extra'\] are not accepted by BLIS"),
    (lambda d: d["trained_physics_coefficients"]["beta_coeffs"].__setitem__(3, -1.0),
     r"bad at index \[3\]"),
    (lambda d: d["trained_physics_coefficients"]["beta_coeffs"].pop(), "expected 11 values"),
    (lambda d: d["defaults"]["m"].pop("GPU"), "defaults entry 'm' must have GPU"),
    (lambda d: d["trained_physics_coefficients"].update(gamma=[1]), "exactly alpha_coeffs"),
])
def test_export_refuses_what_blis_refuses(edit, message) -> None:
    doc = {"defaults": {"m": {"GPU": "H100", "tensor_parallelism": 1}},
           "trained_physics_coefficients": {"alpha_coeffs": [1.0, 2.0, 3.0],
                                            "beta_coeffs": [1.0] * 11}}
    blis_export.check_document(doc, "doc")
    edit(doc)
    with pytest.raises(ValueError, match=message):
        blis_export.check_document(doc, "doc")


def test_export_needs_a_blis_gpu() -> None:
    with pytest.raises(ValueError, match="BLIS has no hardware entry for 'h200-sxm'"):
        blis_export.model_entries(pd.DataFrame({"hf_id": ["m"], "tp": [1]}), "h200-sxm")


def test_price_one_batch_with_a_fitted_vector(hardware_fit) -> None:
    # one Llama-2-7B decoder with 1000 context tokens, priced by the fitted vector: the
    # truncated dot product of its basis (blis_basis's per-batch route)
    from stepdecomp.hw.specs import load_model_spec

    spec, gpu = load_model_spec("meta-llama/Llama-2-7b-hf"), load_gpu_spec("h100-sxm")
    coeffs = _coeffs(hardware_fit)
    got = blis_basis.price_batch_us(spec, 1, gpu, coeffs, [], [1000])
    x = blis_basis.basis(blis_basis.BatchAggregates.from_requests([], [1000]),
                         blis_basis.BlisModel.from_spec(spec), 1,
                         blis_basis.BlisHardware.from_gpu(gpu))[0]
    assert got == math.trunc(float((x * coeffs.beta_array).sum()))
    assert 4000 < got < 10_000      # a 7B decode step streams ~13 GB of weights: ms, not µs


def test_no_blis_export_for_hardware_blis_does_not_know(tmp_path) -> None:
    from stepdecomp.core import artefacts
    from stepdecomp.run import stepmodel_tables

    dirs = artefacts.RunDirs(tmp_path, tmp_path / "out", tmp_path / "figures").make()
    stale = dirs.out / stepmodel_tables.BLIS_DIR / blis_export.DEFAULTS_FILE
    stale.parent.mkdir(parents=True)
    stale.write_text("from an earlier run")
    results = stepmodel_tables.StepModelResults(None, [], [], {}, pd.DataFrame(), "h200-sxm")
    with pytest.warns(UserWarning, match="no BLIS export for h200-sxm"):
        assert stepmodel_tables.export_blis(dirs, results) == []
    assert not stale.exists()


def test_a_term_one_experiment_carries_has_an_interval_reaching_zero() -> None:
    # column 1 is non-zero in experiment e1 only: resamples without e1 cannot use it
    rng = np.random.default_rng(4)
    n = 4000
    x = np.zeros((n, 11))
    x[:, 0] = rng.uniform(10, 1000, n)
    x[:, 6] = 1.0
    labels = np.repeat(np.array(["e1", "e2", "e3", "e4"]), n // 4)
    x[labels == "e1", 1] = rng.uniform(10, 1000, n // 4)
    y = 2.0 * x[:, 0] + 1.0 * x[:, 1] + 300.0
    data = stepmodel.StepData(x, y, labels, labels, labels, np.full(n, np.nan))
    fit = stepmodel.fit(data, "hand", n_resamples=200)
    assert fit.beta[1] == pytest.approx(1.0) and fit.ci_low[1] == 0.0
    assert fit.reason[1] == stepmodel.WEAK
    assert fit.reason[0] == fit.reason[6] == stepmodel.IDENTIFIED
