import gzip
import json
import os
import warnings

import numpy as np
import pandas as pd
import pytest

from stepdecomp import load
from stepdecomp.experiments import read_experiment

GENERAL = "20260101-000000-llama-2-7b-tp1-general"
MOE = "20260101-010000-mixtral-8x7b-v0-1-tp2-codegen"
TP4 = "20260101-020000-llama-2-70b-hf-tp4-reasoning"


def _independent_steps(path):
    """The BATCH_SUMMARY events of a file, parsed with the standard json module."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt") as fh:
        for line in fh:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            for rs in obj["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    for sp in ss["spans"]:
                        for ev in sp.get("events", []):
                            if ev["name"] == "step.BATCH_SUMMARY":
                                rows.append({a["key"]: next(iter(a["value"].values())) for a in ev["attributes"]})
    return rows


def test_fixture_counts_per_file(fixture_root, tmp_path):
    with pytest.warns(load.TraceWarning, match=r"general/traces.json: skipped 1 malformed line\(s\) \(first at line 21\)"):
        ds = load.load_dataset(fixture_root, cache_root=tmp_path)
    rep = ds.parse_report.set_index("experiment_id")
    assert rep.loc[GENERAL, ["lines", "blank_lines", "malformed_lines", "steps", "journey_events"]].tolist() == [21, 1, 1, 127, 96]
    assert rep.loc[MOE, ["lines", "blank_lines", "malformed_lines", "steps", "journey_events"]].tolist() == [10, 0, 0, 56, 120]
    assert rep.loc[TP4, ["lines", "blank_lines", "malformed_lines", "steps", "journey_events"]].tolist() == [20, 0, 0, 129, 104]
    assert len(ds.steps) == 312
    for exp in (GENERAL, MOE, TP4):
        path = next((fixture_root / exp).glob("traces.json*"))
        assert len(_independent_steps(path)) == rep.loc[exp, "steps"]


def test_values_typed_and_equal_to_an_independent_parse(fixture_root, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", load.TraceWarning)
        ds = load.load_dataset(fixture_root, cache_root=tmp_path)
    s = ds.steps[ds.steps["experiment_id"] == MOE]
    ref = pd.DataFrame(_independent_steps(fixture_root / MOE / "traces.json.gz"))
    assert s["step.id"].dtype == np.int64 and s["kv.usage_gpu_ratio"].dtype == np.float64
    assert s["step.duration_us"].tolist() == ref["step.duration_us"].astype(int).tolist()
    assert s["batch.prefill_tokens"].tolist() == ref["batch.prefill_tokens"].astype(int).tolist()
    # sampling every other step: ids are even
    assert (s["step.id"] % 2 == 0).all()
    assert s[["model", "hf_id", "tp", "workload"]].drop_duplicates().values.tolist() == [
        ["mixtral-8x7b-v0-1", "mistralai/Mixtral-8x7B-v0.1", 2, "codegen"]]


def test_journeys_parsed_with_request_ids(fixture_root, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", load.TraceWarning)
        ds = load.load_dataset(fixture_root, cache_root=tmp_path)
    j = ds.journeys[ds.journeys["experiment_id"] == GENERAL]
    assert j["event"].value_counts().to_dict() == {"QUEUED": 24, "SCHEDULED": 24, "FIRST_TOKEN": 24, "FINISHED": 24}
    first = j[j["request_id"] == "req-1-000"]
    assert first["event"].tolist() == ["QUEUED", "SCHEDULED", "FIRST_TOKEN", "FINISHED"]
    assert first["scheduler.step"].tolist() == [0, 0, 1, 6]
    assert first["decode.done_tokens"].tolist() == [0, 0, 1, 6]


def test_cache_hit_and_invalidation(fixture_root, tmp_path):
    exp = read_experiment(fixture_root / TP4)
    s1, j1, st1 = load.load_experiment(exp, tmp_path)
    s2, j2, st2 = load.load_experiment(exp, tmp_path)
    assert not st1.from_cache and st2.from_cache
    pd.testing.assert_frame_equal(s1, s2)
    pd.testing.assert_frame_equal(j1, j2)
    # touching the source (new mtime) invalidates the cache
    src = exp.trace_path
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))
    try:
        assert not load.load_experiment(exp, tmp_path)[2].from_cache
    finally:
        os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns - 10**9))


def test_garbage_and_truncated_lines_are_counted_not_fatal(fixture_copy, tmp_path):
    path = fixture_copy / TP4 / "traces.json"
    good = path.read_bytes()
    path.write_bytes(b"not json at all\n[1, 2]\n\n" + good + b'{"resourceSpans": [{"scopeSp')
    exp = read_experiment(fixture_copy / TP4)
    steps, _, stats = load.load_experiment(exp, tmp_path)
    assert (stats.malformed_lines, stats.blank_lines, stats.steps) == (3, 1, 129)
    assert stats.first_malformed_line == 1
    assert len(steps) == 129


def test_empty_trace_file_warns_and_contributes_nothing(fixture_copy, tmp_path):
    (fixture_copy / TP4 / "traces.json").write_bytes(b"")
    with pytest.warns(load.TraceWarning, match="reasoning/traces.json: no step.BATCH_SUMMARY events"):
        ds = load.load_dataset(fixture_copy, cache_root=tmp_path)
    assert TP4 not in set(ds.steps["experiment_id"])
    assert ds.parse_report.set_index("experiment_id").loc[TP4, "steps"] == 0


def test_all_empty_is_an_error(tmp_path):
    d = tmp_path / "root" / "20260101-000000-llama-2-7b-tp1-general"
    d.mkdir(parents=True)
    (d / "traces.json").write_text("\n")
    with pytest.warns(load.TraceWarning), pytest.raises(ValueError, match="no step.BATCH_SUMMARY events in any"):
        load.load_dataset(tmp_path / "root", cache_root=tmp_path / "cache")


def test_unknown_model_in_exp_config_names_model_and_place(fixture_copy, tmp_path):
    (fixture_copy / GENERAL / "exp-config.yaml").write_text("model: acme/Mystery-3b\ntensor_parallelism: 1\n")
    from stepdecomp.specs import UnknownModelError
    with pytest.raises(UnknownModelError, match=r"general: unknown model 'acme/Mystery-3b'.*data/models/acme/Mystery-3b/config.json"):
        load.load_dataset(fixture_copy, cache_root=tmp_path)
