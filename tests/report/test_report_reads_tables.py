"""The report only reads tables: a directory holding the bundled run's tables (the committed
reports/tables/) and nothing else renders the same FINDINGS and APPENDIX as the run itself,
with the data root absent; a table the report needs and does not find is an error naming the
table and what writes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from stepdecomp import report
from stepdecomp.core import tables as names
from stepdecomp.core.artefacts import RunDirs
from stepdecomp.core.paths import FIGURES_DIR, RAW_DIR, REPORTS_DIR
from stepdecomp.report import answer, inputs, published, stepmodel

TABLES = REPORTS_DIR / "tables"
KEY_FIGURE = f"{names.STEPMODEL_FIGURE}.png"


def _copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunDirs:
    """The committed CSV tables (not step_components.parquet) in tmp/reports/tables, the key
    figure beside them as in the default layout, no data root, and no committed reports/ to
    fall back on."""
    out = tmp_path / "reports"
    (out / "tables").mkdir(parents=True)
    for path in TABLES.glob("*.csv"):
        shutil.copy(path, out / "tables" / path.name)
    (tmp_path / "figures").mkdir()
    shutil.copy(FIGURES_DIR / KEY_FIGURE, tmp_path / "figures" / KEY_FIGURE)
    monkeypatch.setattr(answer, "REPORTS_DIR", tmp_path / "no-committed-reports")
    return RunDirs(data_root=tmp_path / "no-data-root", out=out, figures=tmp_path / "figures")


@pytest.mark.integration
def test_a_directory_of_tables_renders_the_findings_without_the_data_root(tmp_path, monkeypatch):
    normal = report.findings_documents(RunDirs(data_root=RAW_DIR, out=REPORTS_DIR,
                                               figures=FIGURES_DIR))
    dirs = _copy(tmp_path, monkeypatch)
    assert not dirs.data_root.exists() and not dirs.interim.exists()
    assert report.findings_documents(dirs) == normal
    # what the text rests on came from the tables: the kind of data, the published comparison
    main = normal[0]
    assert "The traces analysed here are **generated**" in main
    assert "## Generated Data vs the Published Study" in main
    assert "## Sensitivity" in main and "**At client level** (`make stepmodel-check`)" in main


@pytest.mark.parametrize("name", [names.DATASET, names.EXPERIMENTS, names.SKIPPED_DIRECTORIES,
                                  names.PARSE_REPORT, names.VERDICTS_POOLED,
                                  names.ATTRIBUTION_SUMMARY, names.GROUP_PAIR_SUMMARY,
                                  names.CLIENT_FLOORS, names.CREDIT, names.STEPMODEL_METHOD,
                                  names.STEPMODEL_WINNERS])
def test_a_missing_table_is_named_with_its_writer(tmp_path, monkeypatch, name):
    dirs = _copy(tmp_path, monkeypatch)
    (dirs.tables / f"{name}.csv").unlink()
    writer = names.writer(name)
    with pytest.raises((FileNotFoundError, KeyError), match=f"{name}.*{writer}"):
        report.findings_documents(dirs)


def test_read_table_names_the_table_and_the_notebook(tmp_path):
    dirs = RunDirs(data_root=tmp_path, out=tmp_path / "out", figures=tmp_path / "fig").make()
    with pytest.raises(FileNotFoundError, match=r"out/tables/verdicts_within.csv is missing: "
                       r"table verdicts_within is written by notebook 04_correlation; run "
                       r"notebook 04_correlation first"):
        inputs.read_table(dirs, names.VERDICTS_WITHIN)
    assert inputs.read_if_there(dirs, names.VERDICTS_WITHIN) is None
    assert stepmodel._read(dirs) is None                      # notebook 07 has not run
    pd.DataFrame({"scope": []}).to_csv(dirs.tables / f"{names.STEPMODEL_COEFFICIENTS}.csv")
    with pytest.raises(FileNotFoundError, match="table stepmodel_held_out_errors is written by "
                       "notebook 07_model"):
        stepmodel._read(dirs)


def test_a_verdict_table_without_the_seed_verdict_is_refused(tmp_path, monkeypatch):
    dirs = _copy(tmp_path, monkeypatch)
    pooled = pd.read_csv(dirs.tables / f"{names.VERDICTS_POOLED}.csv")
    pooled[pooled["verdict"] != "seed"].to_csv(dirs.tables / f"{names.VERDICTS_POOLED}.csv",
                                              index=False)
    with pytest.raises(KeyError, match="verdicts_pooled has no seed verdict .notebook "
                       "04_correlation writes it."):
        report.collect(dirs)


def test_headlines_need_their_columns_and_a_row():
    t = pd.read_csv(TABLES / f"{names.HEADLINES}.csv")
    values = answer.headline_context(t)
    assert values["holds"]["physical_tracks_forward"] is True
    assert values["thresholds"]["physical_tracks_forward"] == 0.8
    assert (values["n_experiments"], values["n_experiments_r"]) == (16, 16)
    with pytest.raises(KeyError, match=r"headlines lacks column\(s\) \['threshold'\]"):
        answer.headline_context(t.drop(columns="threshold"))
    with pytest.raises(ValueError, match="headlines has no row"):
        answer.headline_context(t.iloc[:0])


def test_comparison_tables_need_their_columns():
    seed = pd.read_csv(TABLES / f"{names.PUBLISHED_COMPARISON}.csv")
    client = pd.read_csv(TABLES / f"{names.CLIENT_COMPARISON}.csv")
    client_summary = pd.read_csv(TABLES / f"{names.CLIENT_COMPARISON_SUMMARY}.csv")
    assert "## Generated Data vs the Published Study" in \
        published.published_comparison_section(seed, client, client_summary)
    with pytest.raises(KeyError, match="client_comparison is there but not "
                       "client_comparison_summary"):
        published.published_comparison_section(seed, client)
    with pytest.raises(KeyError, match=r"client_comparison_summary lacks column\(s\) "
                       r"\['runs_fitted'\]"):
        published.client_comparison_context(client, client_summary.drop(columns="runs_fitted"))
    with pytest.raises(KeyError, match=r"published_comparison lacks column\(s\) \['published'\]"):
        published.published_comparison_context(seed.drop(columns="published"))
    with pytest.raises(KeyError, match=r"client_comparison lacks column\(s\) \['ttft_error'\]"):
        published.client_comparison_context(client.drop(columns="ttft_error"), client_summary)


def test_the_client_check_summary_needs_its_bar(tmp_path):
    dirs = RunDirs(data_root=tmp_path, out=tmp_path / "out", figures=tmp_path / "fig").make()
    assert stepmodel.client_check_context(dirs) is None         # not run, not the bundled data
    summary = pd.read_csv(TABLES / f"{names.STEPMODEL_CLIENT_SUMMARY}.csv")
    summary.drop(columns="error_max").to_csv(
        dirs.tables / f"{names.STEPMODEL_CLIENT_SUMMARY}.csv", index=False)
    with pytest.raises(KeyError, match=r"stepmodel_client_summary lacks column\(s\) "
                       r"\['error_max'\]"):
        stepmodel.client_check_context(dirs)
    summary.to_csv(dirs.tables / f"{names.STEPMODEL_CLIENT_SUMMARY}.csv", index=False)
    ctx = stepmodel.client_check_context(dirs)
    assert (ctx["runs"], ctx["bar_pct"], ctx["within"]) == (12, 5.0, True)
