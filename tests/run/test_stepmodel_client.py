"""stepmodel_client.py: fold vectors from notebook 07's table, the defaults file a replay
reads, the client-level summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stepdecomp.model import blis_basis
from stepdecomp.run import stepmodel_client as C


def _folds() -> pd.DataFrame:
    rows = []
    for group, scale in (("Llama-2-7b-hf", 1.0), ("Mixtral-8x7B-v0.1", 2.0)):
        for i, name in enumerate(blis_basis.BETA_NAMES):
            rows.append({"scheme": "model", "held_out": group, "beta": name, "value": scale * i})
    rows.append({"scheme": "workload", "held_out": "codegen", "beta": "b1a", "value": 9.0})
    return pd.DataFrame(rows)


def test_fold_vectors_in_blis_order() -> None:
    v = C.fold_vectors(_folds())
    assert sorted(v) == ["Llama-2-7b-hf", "Mixtral-8x7B-v0.1"]
    np.testing.assert_array_equal(v["Mixtral-8x7B-v0.1"], 2.0 * np.arange(blis_basis.N_BETA))
    with pytest.raises(ValueError, match="no fold of scheme 'model'"):
        C.fold_vectors(_folds()[lambda f: f["scheme"] == "workload"])
    with pytest.raises(ValueError, match="lacks β"):
        C.fold_vectors(_folds()[lambda f: f["beta"] != "b7"])


def test_the_written_vector_is_what_a_replay_loads(tmp_path) -> None:
    beta = np.linspace(0.0, 1.0, blis_basis.N_BETA)
    path = C.write_vector(beta, tmp_path / "v.yaml")
    loaded = blis_basis.load_coefficients(path)
    np.testing.assert_allclose(loaded.beta_array, beta)
    assert loaded.alpha == blis_basis.load_coefficients().alpha


def test_summary_medians_and_bar() -> None:
    t = pd.DataFrame({"run": ["a", "b", "c", "a", "b", "c"],
                      "predictor": [C.FITTED] * 3 + [C.SHIPPED] * 3,
                      "tpot_error": [0.01, -0.03, 0.02, 0.2, -0.1, 0.3],
                      "e2e_error": [0.04, -0.01, 0.0, 0.1, 0.1, -0.2]})
    s = C.summary(t).set_index("predictor")
    assert s.loc[C.FITTED, "median_abs_tpot_error"] == pytest.approx(0.02)
    assert s.loc[C.FITTED, "median_abs_e2e_error"] == pytest.approx(0.01)
    assert bool(s.loc[C.FITTED, "within_bar"]) and not bool(s.loc[C.SHIPPED, "within_bar"])
    assert s.loc[C.SHIPPED, "runs"] == 3


def test_client_means_read_an_inference_perf_summary() -> None:
    s = {"successes": {"latency": {"time_per_output_token": {"mean": 0.004},
                                   "time_to_first_token": {"mean": 0.03},
                                   "request_latency": {"mean": 2.5}}},
         "failures": {"count": 7}}
    assert C.client_means(s, "x") == {"x_tpot_ms": pytest.approx(4.0), "x_e2e_s": 2.5,
                                      "x_failures": 7}


def test_summary_carries_its_bar() -> None:
    """The table stepmodel_client_summary states the bar FINDINGS quotes (error_max)."""
    t = pd.DataFrame({"run": ["a"], "predictor": [C.FITTED], "tpot_error": [0.06],
                      "e2e_error": [0.01]})
    s = C.summary(t)
    assert s.columns.tolist() == ["predictor", "median_abs_tpot_error", "median_abs_e2e_error",
                                  "runs", "within_bar", "error_max"]
    assert s.iloc[0].tolist() == [C.FITTED, pytest.approx(0.06), pytest.approx(0.01), 1, False,
                                  C.CLIENT_ERROR_MAX]
    assert (C.TABLE, C.SUMMARY_TABLE) == ("stepmodel_client_check", "stepmodel_client_summary")
