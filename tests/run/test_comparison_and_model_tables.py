"""Tables the drivers write for FINDINGS: the comparison with the published study
(validate.seed_comparison, published_tables), the step-time model's method and winners
(stepmodel_tables.method_table, winners_table, basis_agreement, identified_per_model)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from stepdecomp.core import artefacts, tables as names
from stepdecomp.core.artefacts import RunDirs
from stepdecomp.run import stepmodel_tables as ST
from stepdecomp.run import validate
from stepdecomp.stepmodel import export, fit

PUBLISHED = {"total_steps": 1000, "phase_breakdown": {"pure_prefill": 6, "pure_decode": 800,
                                                     "mixed": 194},
             "pure_phase_r": {"pure_decode/decode_gemm_us": 0.4, "all/total_analytical_us": 0.3},
             "per_experiment_total_r": {"a/general": 0.95, "b/roleplay": 0.1, "c/general": 0.5},
             "hypothesis_passing": 0}


def _tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    breakdown = pd.DataFrame({"phase": ["pure_prefill", "pure_decode", "mixed"],
                              "steps": [12, 300, 88], "pct": [3.0, 75.0, 22.0]})
    pure = pd.DataFrame([("pure_prefill", "prefill_gemm_us", 0.85, 12),
                         ("pure_prefill", "prefill_attn_us", 0.9, 12),
                         ("pure_decode", "decode_gemm_us", 0.4367, 300),
                         ("pure_decode", "decode_attn_us", np.nan, 300),
                         ("all", "total_analytical_us", 0.335, 400)],
                        columns=["subset", "component", "pearson_r", "n_steps"])
    per = pd.DataFrame({"experiment_id": ["e1", "e2", "e1"], "model": ["a", "b", "a"],
                        "workload": ["general", "roleplay", "general"],
                        "component": ["total_analytical_us", "total_analytical_us",
                                      "prefill_gemm_us"], "pearson_r": [0.91, 0.2, 0.9]})
    return breakdown, pure, per


def test_seed_comparison_by_hand():
    t = validate.seed_comparison(*_tables(), passing=2, published=PUBLISHED)
    assert t.columns.tolist() == ["metric", "published", "this_data"]
    rows = {m: (p, d) for m, p, d in t.itertuples(index=False)}
    assert list(rows) == ["steps", "pure_prefill share (%)", "pure_decode share (%)",
                          "mixed share (%)", "r, decode_gemm_us on pure_decode",
                          "r, total_analytical_us on all",
                          "median per-experiment r of total_analytical_us",
                          "rank agreement of per-experiment r (Spearman)",
                          "hypothesis criteria passing"]
    assert rows["steps"] == (1000, 400)
    assert rows["pure_prefill share (%)"] == pytest.approx((0.6, 3.0))
    assert rows["r, decode_gemm_us on pure_decode"] == (0.4, 0.4367)
    # the experiments both have (a/general, b/roleplay): medians of (0.95, 0.1) and (0.91, 0.2);
    # the two rankings agree (Spearman 1)
    assert rows["median per-experiment r of total_analytical_us"] == pytest.approx((0.525, 0.555))
    spearman = rows["rank agreement of per-experiment r (Spearman)"]
    assert math.isnan(spearman[0]) and spearman[1] == pytest.approx(1.0)
    assert rows["hypothesis criteria passing"] == (0, 2)


def test_seed_comparison_reads_the_published_file_by_default():
    t = validate.seed_comparison(*_tables(), passing=0)
    assert t.loc[0, "published"] == validate.load_published()["total_steps"]


def _dirs(tmp_path, data_root) -> RunDirs:
    dirs = RunDirs(data_root=data_root, out=tmp_path / "out", figures=tmp_path / "fig").make()
    breakdown, pure, per = _tables()
    for name, t in ((names.PHASE_BREAKDOWN, breakdown), (names.PURE_PHASE, pure),
                    (names.PER_EXPERIMENT, per)):
        artefacts.write_table(dirs, name, t)
    return dirs


def test_published_tables_only_on_the_bundled_replay(tmp_path, monkeypatch):
    assert validate.published_tables(_dirs(tmp_path, tmp_path / "own-root")) == {}
    client = pd.DataFrame({"run": ["r1"], "held_out": [False]})
    monkeypatch.setattr(validate, "data_kind", lambda root: "bundled")
    monkeypatch.setattr(validate, "client_comparison", lambda root: client)
    out = validate.published_tables(_dirs(tmp_path, tmp_path / "raw"))
    assert list(out) == [names.PUBLISHED_COMPARISON, names.CLIENT_COMPARISON,
                         names.CLIENT_COMPARISON_SUMMARY]
    assert out[names.CLIENT_COMPARISON] is client
    # one run fitted, none held out, no error column: N/A medians
    assert out[names.CLIENT_COMPARISON_SUMMARY][["runs_fitted", "runs_held_out"]] \
        .values.tolist() == [[1, 0]]
    seed = out[names.PUBLISHED_COMPARISON].set_index("metric")["this_data"]
    # the seed's verdict on the run's pure-phase table: prefill GEMM and attention pass
    assert seed["hypothesis criteria passing"] == 2 and seed["steps"] == 400


def test_published_tables_name_the_table_they_miss(tmp_path, monkeypatch):
    dirs = _dirs(tmp_path, tmp_path / "raw")
    (dirs.tables / f"{names.PURE_PHASE}.csv").unlink()
    monkeypatch.setattr(validate, "data_kind", lambda root: "bundled")
    with pytest.raises(FileNotFoundError, match="pure_phase_correlations.csv is missing: run "
                       "notebook 04_correlation first"):
        validate.published_tables(dirs)


def test_method_table_states_how_the_fit_ran():
    t = ST.method_table()
    assert t.to_dict("records") == [{"weighting": fit.WEIGHTING,
                                     "condition_index_limit": fit.CONDITION_INDEX_LIMIT,
                                     "variance_proportion_limit": fit.VARIANCE_PROPORTION_LIMIT,
                                     "confidence": fit.CONFIDENCE,
                                     "alpha_statement": export.ALPHA_STATEMENT}]


def test_winners_table_by_hand():
    rows = [(scheme, p, "all", ape) for scheme, apes in
            (("workload", {"fitted": 2.0, "blis_shipped": 16.0, "physical": 24.0, "hgb": 4.0}),
             ("model", {"fitted": 0.0, "hgb": 1.0}))
            for p, ape in apes.items()]
    rows.append(("workload", "physical", "codegen", 0.5))       # one fold: not pooled
    errors = pd.DataFrame(rows, columns=["scheme", "predictor", "held_out", "median_ape_pct"])
    t = ST.winners_table(errors)
    assert t.columns.tolist() == ST.WINNER_COLUMNS
    assert t.iloc[0].tolist() == ["workload", "fitted", 2.0, "hgb", 4.0, 2.0]
    assert t.iloc[1, :5].tolist() == ["model", "fitted", 0.0, "hgb", 1.0]
    assert np.isnan(t.iloc[1]["ratio"])                          # no ratio to a best of 0
    with pytest.raises(ValueError, match="fewer than 2 predictors"):
        ST.winners_table(errors[errors["predictor"] == "fitted"])


def test_basis_agreement_by_hand():
    comparison = pd.DataFrame({
        "model": ["A", "A", "B", "B", "B"],
        "component": ["weights read", "TP all-reduce", "weights read", "TP all-reduce",
                      "prefill compute"],
        "ratio_median": [1.0, 0.03, 1.0, 0.5, np.nan],            # B's prefill: no ratio
        "ratio_of_sums": [0.8, 0.025, 1.04, 4.0, np.nan]})
    t = ST.basis_agreement(comparison)
    assert t.columns.tolist() == ST.BASIS_AGREEMENT_COLUMNS
    assert t["model"].tolist() == ["A", "A", "B", "B", fit.ALL_MODELS, fit.ALL_MODELS]
    assert t["component"].tolist() == ["weights read", "TP all-reduce", "weights read",
                                       "TP all-reduce", "weights read", "TP all-reduce"]
    # max(r, 1/r): 1/0.8 = 1.25, 1/0.025 = 40, 1.04, 4; per component the larger
    assert t["deviation"].tolist() == pytest.approx([1.25, 40.0, 1.04, 4.0, 1.25, 40.0])
    assert t["ratio_of_sums"].iloc[:4].tolist() == [0.8, 0.025, 1.04, 4.0]
    assert t["ratio_of_sums"].iloc[4:].isna().all()


def test_identified_per_model_by_hand():
    coef = pd.DataFrame({"scope": [fit.ALL_MODELS] * 2 + ["B"] * 3 + ["A"] * 2,
                         "identified": [True, True, True, False, True, False, False]})
    t = ST.identified_per_model(coef)
    assert t.columns.tolist() == ST.IDENTIFIED_COLUMNS
    assert t.values.tolist() == [["A", 2, 0], ["B", 3, 2]]       # sorted, ALL_MODELS left out


def test_client_comparison_summary_counts_and_medians_the_fitted_runs():
    comparison = pd.DataFrame({"held_out": [False, False, True, False],
                               "tpot_error": [0.01, -0.05, 0.9, 0.02],
                               "ttft_error": [-0.1, 0.2, 0.9, 0.3]})
    s = validate.client_comparison_summary(comparison)
    assert list(s.columns) == validate.CLIENT_SUMMARY_COLUMNS and len(s) == 1
    row = s.iloc[0]
    assert (row["runs_fitted"], row["runs_held_out"]) == (3, 1)
    assert row["median_abs_tpot_error"] == pytest.approx(0.02)    # |0.01|, |-0.05|, |0.02|
    assert row["median_abs_ttft_error"] == pytest.approx(0.2)     # |-0.1|, |0.2|, |0.3|


def test_client_comparison_summary_of_no_run():
    row = validate.client_comparison_summary(pd.DataFrame()).iloc[0]
    assert (row["runs_fitted"], row["runs_held_out"]) == (0, 0)
    assert math.isnan(row["median_abs_tpot_error"]) and math.isnan(row["median_abs_ttft_error"])
