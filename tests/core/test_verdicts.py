"""core.verdicts: a verdict's label from its counts, and the verdict tables — what notebook 04
writes is what the report reads back, criteria, counts and types."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from stepdecomp.core import verdicts as V
from stepdecomp.core.artefacts import FLOAT_FORMAT


def _csv(frame: pd.DataFrame) -> pd.DataFrame:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, na_rep="", float_format=FLOAT_FORMAT)
    buf.seek(0)
    return pd.read_csv(buf)


def _seed() -> V.Verdict:
    """The seed's criteria: prefill GEMM 0.85 passes, prefill attention 0.61 fails, decode
    GEMM N/A (3 steps), decode attention 0.9 passes: 2 of 4, 1 N/A."""
    table = pd.DataFrame({"subset": ["pure_prefill", "pure_prefill", "pure_decode", "pure_decode"],
                          "component": ["prefill_gemm_us", "prefill_attn_us", "decode_gemm_us",
                                        "decode_attn_us"],
                          "pearson_r": [0.85, 0.61, np.nan, 0.9], "n_steps": [12, 12, 3, 300],
                          "na_reason": ["", "", "3 steps < 10 needed for Pearson r", ""],
                          "passed": [True, False, False, True]})
    return V.Verdict(table=table, passing=2, n_na=1)


def _within() -> V.WithinVerdict:
    table = pd.DataFrame({"subset": ["prefill_dominated"] * 2 + ["pure_decode"] * 2,
                          "component": ["phys_prefill_gemm_us", "phys_prefill_attn_us",
                                        "phys_decode_gemm_us", "phys_decode_attn_us"],
                          "median_r": [0.85, np.nan, 0.4, 0.9], "ci_low": [0.8, np.nan, 0.1, 0.85],
                          "ci_high": [0.9, np.nan, 0.7, 0.95], "n_experiments": [4, 2, 1, 4],
                          "passed": [True, False, False, True]})
    return V.WithinVerdict(table=table, passing=2, n_na=1, indeterminate=True)


def test_labels_follow_the_counts():
    assert (_seed().label, _seed().status, _seed().na_note()) == \
        ("SUPPORTED", "Supported", " (1 of 4 criteria N/A)")
    t = _seed().table
    assert V.Verdict(table=t, passing=1, n_na=1).label == "NOT SUPPORTED"           # seed rule
    assert V.Verdict(table=t, passing=1, n_na=1, indeterminate=True).label == "INDETERMINATE"
    assert V.Verdict(table=t, passing=0, n_na=1, indeterminate=True).label == "NOT SUPPORTED"
    assert V.Verdict(table=t, passing=0, n_na=4, indeterminate=True).words == \
        "not testable (every criterion N/A)"
    assert _seed().sentence() == ("2/4 components reach r > 0.8 on their pure-phase subset "
                                  "(at least 2 needed) (1 of 4 criteria N/A): SUPPORTED.")
    assert _within().sentence().startswith("2/4 components have a median within-experiment r > 0.8")


def test_rows_carry_keys_criteria_and_outcome():
    rows = V.verdict_rows(_seed(), V.SEED, "step.duration_us", "pure_prefill")
    assert rows.columns.tolist() == [*V.KEY_COLUMNS, *V.CRITERIA_COLUMNS[V.SEED],
                                     *V.OUTCOME_COLUMNS]
    assert rows[["passing", "required", "n_na", "indeterminate", "label", "supported"]] \
        .drop_duplicates().values.tolist() == [[2, 2, 1, False, "SUPPORTED", True]]
    # a physical verdict's table has no na_reason; a column the table lacks is empty
    physical = V.verdict_rows(V.Verdict(table=_seed().table.drop(columns="na_reason"), passing=2),
                              V.PHYSICAL, "step_forward_us", "prefill_dominated")
    assert "na_reason" not in physical
    lacking = V.verdict_rows(V.Verdict(table=_seed().table.drop(columns="na_reason"), passing=2),
                             V.SEED, "step.duration_us", "pure_prefill")
    assert lacking["na_reason"].isna().all()
    with pytest.raises(ValueError, match="unknown verdict kind 'pooled'; known: seed, physical, within"):
        V.verdict_rows(_seed(), "pooled", "x", "pure_prefill")


def test_a_verdict_table_reads_back_as_it_was_written():
    table = V.verdict_table([V.verdict_rows(_seed(), V.SEED, "step.duration_us", "pure_prefill"),
                             V.verdict_rows(_within(), V.WITHIN, "step_forward_us",
                                            "prefill_dominated")])
    # the first kind's criteria columns lead, then the other kind's
    assert table.columns.tolist() == [*V.KEY_COLUMNS, "subset", "component", "pearson_r",
                                      "n_steps", "na_reason", "passed", "median_r", "ci_low",
                                      "ci_high", "n_experiments", *V.OUTCOME_COLUMNS]
    read = V.read_verdicts(_csv(table))
    assert list(read) == [("seed", "step.duration_us", "pure_prefill"),
                          ("within", "step_forward_us", "prefill_dominated")]
    seed, within = read[("seed", "step.duration_us", "pure_prefill")], \
        read[("within", "step_forward_us", "prefill_dominated")]
    assert type(seed) is V.Verdict and type(within) is V.WithinVerdict
    assert (seed.passing, seed.required, seed.n_na, seed.indeterminate, seed.label) == \
        (2, 2, 1, False, "SUPPORTED")
    assert seed.table.columns.tolist() == V.CRITERIA_COLUMNS[V.SEED]
    # counts as integers where none is missing (the text prints n=3, not n=3.0), r as written
    assert seed.table["n_steps"].tolist() == [12, 12, 3, 300]
    assert seed.table["n_steps"].dtype.kind == "i" and seed.table["passed"].dtype == bool
    assert seed.table["pearson_r"].tolist()[:2] == [0.85, 0.61]
    assert within.table.columns.tolist() == V.CRITERIA_COLUMNS[V.WITHIN]
    assert within.table["n_experiments"].tolist() == [4, 2, 1, 4]
    assert (within.passing, within.indeterminate, within.label) == (2, True, "SUPPORTED")


def test_a_count_with_a_gap_stays_a_float_column():
    v = _seed()
    v.table.loc[2, "n_steps"] = np.nan
    read = V.read_verdicts(_csv(V.verdict_table([V.verdict_rows(v, V.SEED, "t", "pure_prefill")])))
    assert read[("seed", "t", "pure_prefill")].table["n_steps"].dtype.kind == "f"


def test_bad_verdict_tables_name_the_table_and_what_they_lack():
    table = V.verdict_table([V.verdict_rows(_seed(), V.SEED, "step.duration_us", "pure_prefill")])
    with pytest.raises(KeyError, match=r"verdicts_pooled lacks column\(s\) \['n_na'\]"):
        V.read_verdicts(table.drop(columns="n_na"), "verdicts_pooled")
    with pytest.raises(KeyError, match=r"verdicts_pooled lacks column\(s\) \['na_reason'\] of the "
                       r"seed verdict"):
        V.read_verdicts(table.drop(columns="na_reason"), "verdicts_pooled")
    with pytest.raises(ValueError, match="verdicts_pooled: unknown verdict kind 'other'"):
        V.read_verdicts(table.assign(verdict="other"), "verdicts_pooled")
    assert V.verdict_table([]).columns.tolist() == V.KEY_COLUMNS + V.OUTCOME_COLUMNS
