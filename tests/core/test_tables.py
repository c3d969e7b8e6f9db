"""core.tables, core.thresholds and core.paths.data_kind: the names, writers and values the
statistics and the report share."""

from __future__ import annotations

import pandas as pd
import pytest

from stepdecomp.core import tables as T
from stepdecomp.core.paths import FIXTURE_ROOT, PROJECT_ROOT, RAW_DIR, data_kind
from stepdecomp.core.thresholds import SHARE_TOLERANCE, valid_share
from stepdecomp.core.params import ALL_NOTEBOOKS


def test_every_named_table_has_one_writer():
    names = {v for k, v in vars(T).items() if k.isupper() and isinstance(v, str)
             and k not in ("PRIMARY_TARGET", "SOURCE_PUBLISHED", "SOURCE_TRACES",
                           "SET_SCHEDULER_BEYOND", "SET_FLOPS_BEYOND", "ALL_GROUPS",
                           "ALL_MODELS", "ALL_EXPERIMENTS", "NO_LOOP", "CLIENT_CHECK_FITTED",
                           "CLIENT_CHECK_SHIPPED",
                           "REASON_ABSORBED", "STEPMODEL_FIGURE")}
    assert names == set(T.WRITTEN_BY)
    assert set(T.WRITTEN_BY.values()) - set(ALL_NOTEBOOKS) == {"make sensitivity",
                                                               "make stepmodel-check"}


def test_writer_and_missing_message():
    assert T.writer(T.VERDICTS_POOLED) == "notebook 04_correlation"
    assert T.writer(T.DATASET) == "notebook 01_load"
    assert T.writer(T.SENSITIVITY) == "make sensitivity"
    assert T.missing_message("out/tables/headlines.csv", T.HEADLINES) == (
        "out/tables/headlines.csv is missing: table headlines is written by notebook "
        "04_correlation; run notebook 04_correlation first (or `make report`), with the same "
        "out_dir")
    assert T.missing_message("x.csv", T.STEPMODEL_CLIENT_SUMMARY) == (
        "x.csv is missing: table stepmodel_client_summary is written by make stepmodel-check; "
        "run `make stepmodel-check`, with the same out_dir")
    with pytest.raises(KeyError, match="no notebook or command writes a table named 'nope'"):
        T.writer("nope")


def test_for_target_and_short_name():
    stacked = pd.DataFrame({"target": ["a", "b", "a"], "v": [1, 2, 3]})
    assert T.for_target(stacked, "a").to_dict("list") == {"v": [1, 3]}
    plain = pd.DataFrame({"v": [1]})
    assert T.for_target(plain, "a") is plain
    assert T.short_name("20260217-203421-llama-2-70b-hf-tp4-codegen") == "llama-2-70b-hf-tp4-codegen"
    assert T.short_name("7-mixtral-tp2-general") == "mixtral-tp2-general"
    assert T.short_name("llama-tp1-general") == "llama-tp1-general"


def test_group_columns():
    assert T.group_pairs() == [("per_token", "per_kv_byte"), ("per_token", "per_weight_byte"),
                               ("per_kv_byte", "per_weight_byte")]
    assert (T.coef_column("per_token"), T.pair_r_column("a", "b"),
            T.pair_separable_column("a", "b")) == ("coef_us_per_token", "r_a__b", "separable_a__b")


def test_valid_share():
    assert valid_share(0.0) and valid_share(1.0) and valid_share(-SHARE_TOLERANCE)
    assert not valid_share(-2 * SHARE_TOLERANCE) and not valid_share(1 + 2 * SHARE_TOLERANCE)
    assert not valid_share(float("nan")) and not valid_share(None) and not valid_share("x")


def test_data_kind(tmp_path):
    assert data_kind(RAW_DIR) == data_kind("data/raw") == "bundled"
    assert data_kind(FIXTURE_ROOT) == data_kind("tests/fixtures/ground_truth") == "fixture"
    assert data_kind(tmp_path) == data_kind("data/other") == "own"
    assert data_kind(PROJECT_ROOT / "data" / "raw" / ".." / "raw") == "bundled"
