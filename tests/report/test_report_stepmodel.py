"""FINDINGS' "A Step-Time Model for Simulators" (report.stepmodel) from hand-made tables of
notebook 07, and notebook 07 end to end on the fixture (slow)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from stepdecomp import report
from stepdecomp.core.artefacts import RunDirs

from stepdecomp.model import blis_basis
from stepdecomp.stepmodel import export as blis_export
from stepdecomp.run import notebooks, stepmodel_tables
from stepdecomp.report import document
from stepdecomp.core.paths import FIXTURE_ROOT, NOTEBOOKS_DIR
from stepdecomp.report.render import render_section
from stepdecomp.report.stepmodel import stepmodel_context
from report_tables import through_csv


def _tables() -> dict[str, pd.DataFrame]:
    names = list(blis_basis.BETA_NAMES)
    coef = pd.DataFrame({"scope": "all models", "hardware": "h100-sxm", "target": "step_forward_us",
                         "beta": names, "basis": list(blis_basis.BASIS_COLUMNS),
                         "value": [1.0] * 11, "ci_low": [0.9] * 11, "ci_high": [1.1] * 11,
                         "identified": [True] * 7 + [False] + [True] * 2 + [False],
                         "reason": ["identified"] * 7 + ["zero column"] + ["identified"] * 2
                         + ["zero column"], "condition_index": [5.0] * 11,
                         "n_steps": 100, "n_experiments": 4})
    per_model = coef.assign(scope="Llama-2-7b-hf", identified=[True] * 3 + [False] * 8)
    rows = []
    for scheme in ("workload", "model"):
        for pred, ape in (("fitted", 2.0), ("blis_shipped", 16.0), ("physical", 24.0),
                          ("hgb", 4.0)):
            rows.append({"scheme": scheme, "predictor": pred, "held_out": "all", "n_steps": 100,
                         "mape_pct": ape + 1, "median_ape_pct": ape, "bias_pct": -1.0,
                         "pearson_r": 0.9, "target": "step_forward_us"})
    comparison = pd.DataFrame({"model": ["A", "A"], "component": ["weights read", "TP all-reduce"],
                               "unit": ["bytes", "µs"], "n_steps": [10, 10],
                               "ratio_p10": [1.0, 0.02], "ratio_median": [1.0, 0.03],
                               "ratio_p90": [1.0, 0.04], "ratio_of_sums": [0.99, 0.025]})
    data = pd.DataFrame({"target": "step_forward_us",
                         "item": ["steps used", "steps dropped: target missing or not positive",
                                  "experiments", "models"], "value": [100, 7, 4, 1]})
    errors = pd.DataFrame(rows)
    # what notebook 07 writes beside them: how it fitted, and the winner of each scheme
    return {stepmodel_tables.COEFFICIENTS: pd.concat([coef, per_model]),
            stepmodel_tables.HELD_OUT: errors,
            stepmodel_tables.FOLD_BETAS: pd.DataFrame(), stepmodel_tables.BASIS_VS_PHYSICAL:
            comparison, stepmodel_tables.DATA_SUMMARY: data,
            stepmodel_tables.METHOD: through_csv(stepmodel_tables.method_table()),
            stepmodel_tables.WINNERS: through_csv(stepmodel_tables.winners_table(errors)),
            stepmodel_tables.BASIS_AGREEMENT: through_csv(
                stepmodel_tables.basis_agreement(comparison)),
            stepmodel_tables.IDENTIFIED: through_csv(stepmodel_tables.identified_per_model(
                pd.concat([coef, per_model])))}


def test_context_names_the_winner_and_the_disagreement() -> None:
    s = stepmodel_context(_tables(), "figures/x.png")
    assert [w["best"] for w in s["schemes"]] == ["(a) BLIS basis, fitted β"] * 2
    assert s["schemes"][0]["second"] == "(d) gradient boosting on the basis"
    assert s["schemes"][0]["ratio"] == 2.0                     # 4 % against 2 %
    assert s["unidentified"] == [{"beta": "b8", "reason": "zero column"},
                                 {"beta": "b_ep", "reason": "zero column"}]
    assert s["per_model_identified"] == {"Llama-2-7b-hf": 3}
    assert s["agree_components"] == ["weights read"]
    assert s["disagree"] == [{"model": "A", "component": "TP all-reduce", "ratio_of_sums": 0.025}]
    assert s["dropped"] == {"target missing or not positive": 7}


def test_section_text() -> None:
    text = render_section("stepmodel", stepmodel_context(_tables(), "figures/x.png"))
    assert text.startswith("## A Step-Time Model for Simulators")
    assert ("With each workload left out, (a) BLIS basis, fitted β has the lowest median APE, "
            "2.00 %, against 4.00 % for (d) gradient boosting on the basis (2× as large).") in text
    assert "![Held-out predicted vs measured step time per model](figures/x.png)" in text
    assert "TP all-reduce for A (0.025)" in text
    assert "bundled generated data" not in text
    assert "bundled generated data" in render_section(
        "stepmodel", stepmodel_context(_tables(), None, generated=True))


@pytest.mark.slow
def test_notebook_07_on_the_fixture(tmp_path) -> None:
    """Notebooks 01, 02, 07 and 06 on the fixture: 07's tables, figure and BLIS export, and
    FINDINGS' section."""
    out = tmp_path / "out"
    names = ("01_load", "02_decompose", "03_phases", "04_correlation", "07_model", "06_report")
    assert notebooks.main([*(str(NOTEBOOKS_DIR / f"{n}.ipynb") for n in names),
                        "--data", str(FIXTURE_ROOT), "--out", str(out)]) == 0
    for table in stepmodel_tables.TABLES:
        assert (out / "tables" / f"{table}.csv").is_file()
    coef = pd.read_csv(out / "tables" / f"{stepmodel_tables.COEFFICIENTS}.csv")
    assert coef.groupby("scope").size().to_dict() == {
        "all models": 11, "Llama-2-70b-hf": 11, "Llama-2-7b-hf": 11, "Mixtral-8x7B-v0.1": 11}
    errors = pd.read_csv(out / "tables" / f"{stepmodel_tables.HELD_OUT}.csv")
    assert set(errors["predictor"]) == {"fitted", "blis_shipped", "physical", "hgb"}
    assert set(errors["scheme"]) == {"workload", "model"}
    assert (out / "figures" / f"{stepmodel_tables.FIGURE}.png").is_file()
    doc = yaml.safe_load((out / "blis" / "defaults.yaml").read_text())
    assert list(doc) == ["defaults", "version", "trained_physics_coefficients"]
    assert set(doc) <= set(blis_export.ACCEPTED_KEYS)
    tpc = doc["trained_physics_coefficients"]
    assert len(tpc["alpha_coeffs"]) == 3 and len(tpc["beta_coeffs"]) == 11
    assert all(b >= 0 for b in tpc["beta_coeffs"])
    assert doc["defaults"]["meta-llama/llama-2-7b-hf"] == {
        "GPU": "H100", "tensor_parallelism": 1, "hf_repo": "meta-llama/Llama-2-7b-hf"}
    assert "--defaults-filepath" in (out / "blis" / "README.md").read_text()
    findings = (out / "FINDINGS.md").read_text()
    # the reader's rules (report.document) on the fixture: the Answer first, ≤ 250 lines,
    # every appendix table linked
    assert document.document_problems(findings, (out / "APPENDIX.md").read_text(),
                                      generated=False) == []
    assert findings.index("## Answer") < findings.index(f"](figures/{stepmodel_tables.FIGURE}.png)") \
        < findings.index("**Status (seed mode):**")
    assert "## A Step-Time Model for Simulators" in findings
    assert f"](figures/{stepmodel_tables.FIGURE}.png)" in findings
    # the fixture's tables and figures alone, without the data root, render the same report
    copy = tmp_path / "copy"
    shutil.copytree(out / "tables", copy / "tables")
    shutil.copytree(out / "figures", copy / "figures")
    dirs = RunDirs(data_root=tmp_path / "absent", out=copy, figures=copy / "figures")
    assert report.findings_documents(dirs) == (findings, (out / "APPENDIX.md").read_text())


def test_a_run_that_fitted_nothing_is_na_with_its_reason() -> None:
    """Notebook 07 on steps without journeys (no basis sums) writes reason-only tables: the
    Answer lists no held-out error and says N/A with the reason, no KeyError."""
    from stepdecomp.stepmodel import fit
    from stepdecomp.run import stepmodel_tables
    from stepdecomp.report.answer import held_out
    from stepdecomp.report.stepmodel import stepmodel_na_reason

    empty = fit.StepData(basis=np.zeros((0, 11)), target_us=np.zeros(0),
                               experiment=np.zeros(0, dtype=object), model=np.zeros(0, dtype=object),
                               workload=np.zeros(0, dtype=object), physical_us=np.zeros(0),
                               target="step_forward_us", dropped={fit.DROP_TARGET: 3})
    tables = stepmodel_tables._empty_tables(empty, "step_forward_us")
    assert held_out(tables[stepmodel_tables.HELD_OUT]) == []
    assert stepmodel_na_reason(tables) == stepmodel_tables.NO_STEPS_REASON
    assert stepmodel_na_reason(None) == ""
