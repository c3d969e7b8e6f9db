import gzip
import json
import os
import warnings

import numpy as np
import pandas as pd
import pytest

from stepdecomp.traces import load
from stepdecomp.traces.experiments import read_experiment

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


def test_all_empty_loads_with_a_warning(tmp_path):
    """A valid root whose experiments hold no step: a warning, an empty steps table, and the
    experiment still listed (the report then runs with every statistic N/A)."""
    d = tmp_path / "root" / "20260101-000000-llama-2-7b-tp1-general"
    d.mkdir(parents=True)
    (d / "traces.json").write_text("\n")
    with pytest.warns(load.TraceWarning, match="no step.BATCH_SUMMARY events in any .*every statistic will be N/A"):
        ds = load.load_dataset(tmp_path / "root", cache_root=tmp_path / "cache")
    assert ds.steps.empty and [e.experiment_id for e in ds.experiments] == [d.name]


def test_unknown_model_in_exp_config_names_model_and_place(fixture_copy, tmp_path):
    (fixture_copy / GENERAL / "exp-config.yaml").write_text("model: acme/Mystery-3b\ntensor_parallelism: 1\n")
    from stepdecomp.hw.specs import UnknownModelError
    with pytest.raises(UnknownModelError, match=r"general: unknown model 'acme/Mystery-3b'.*data/models/acme/Mystery-3b/config.json"):
        load.load_dataset(fixture_copy, cache_root=tmp_path)


# ------------------------------------------------------------------ exact timestamps

BIG_NS = 1771286400123456789          # ~1.7e18: float64 would round it to ...456768


def _step_attrs(step_id: int, **over) -> dict:
    attrs = {"step.id": step_id, "step.ts_start_ns": BIG_NS + step_id * 1000,
             "step.ts_end_ns": BIG_NS + step_id * 1000 + 1, "step.duration_us": 0,
             "batch.prefill_tokens": 0, "batch.decode_tokens": 1}
    attrs.update(over)
    return {k: v for k, v in attrs.items() if v is not None}


def _write_trace(root, step_attrs: list[dict], journey_attrs: list[dict] = ()):
    from stepdecomp.traces import otlp
    d = root / "20260101-000000-llama-2-7b-tp1-general"
    d.mkdir(parents=True)
    steps = [otlp.span(otlp.STEP_SPAN, "t", "s", 0, 1, [otlp.event(otlp.BATCH_SUMMARY, 1, a)])
             for a in step_attrs]
    journeys = [otlp.span(otlp.JOURNEY_SPAN, "t", "j", 0, 1,
                          [otlp.event("journey.QUEUED", 1, a)], {otlp.REQUEST_ID_KEY: f"r{i}"})
                for i, a in enumerate(journey_attrs)]
    (d / "traces.json").write_bytes(otlp.export_line({otlp.STEP_SCOPE: steps,
                                                      otlp.JOURNEY_SCOPE: journeys}))
    return d


def test_step_timestamps_stay_exact_int64(tmp_path):
    assert float(BIG_NS) != BIG_NS                       # the value float64 cannot hold
    d = _write_trace(tmp_path / "root", [_step_attrs(1), _step_attrs(2)])
    steps, _, _ = load.load_experiment(read_experiment(d), tmp_path / "cache")
    for col in ("step.ts_start_ns", "step.ts_end_ns"):
        assert steps[col].dtype == np.int64
    assert steps["step.ts_start_ns"].tolist() == [BIG_NS + 1000, BIG_NS + 2000]
    assert steps["step.ts_end_ns"].tolist() == [BIG_NS + 1001, BIG_NS + 2001]
    cached, _, st = load.load_experiment(read_experiment(d), tmp_path / "cache")
    assert st.from_cache and cached["step.ts_end_ns"].tolist() == [BIG_NS + 1001, BIG_NS + 2001]


def test_step_timestamps_exact_when_some_are_missing(tmp_path):
    d = _write_trace(tmp_path / "root", [_step_attrs(1, **{"step.ts_end_ns": None}), _step_attrs(2)])
    steps, _, _ = load.load_experiment(read_experiment(d), tmp_path / "cache")
    end = steps["step.ts_end_ns"]
    assert end.dtype == "Int64" and end.isna().tolist() == [True, False]
    assert int(end.iloc[1]) == BIG_NS + 2001
    assert steps["step.ts_start_ns"].dtype == np.int64


def test_journey_monotonic_ns_kept_exact_and_nullable(tmp_path):
    base = {"scheduler.step": 1, "ts.monotonic": 1771286400.1234567, "phase": "WAITING"}
    d = _write_trace(tmp_path / "root", [_step_attrs(1)],
                     [{**base, "ts.monotonic_ns": BIG_NS}, base])
    _, j, _ = load.load_experiment(read_experiment(d), tmp_path / "cache")
    ns = j["ts.monotonic_ns"]
    assert ns.dtype == "Int64" and ns.isna().tolist() == [False, True]
    assert int(ns.iloc[0]) == BIG_NS
    assert j["ts.monotonic"].tolist() == [1771286400.1234567] * 2   # not used to fill it
    assert list(j.columns[:4]) == ["experiment_id", "request_id", "event", "time_ns"]


def test_journeys_of_old_traces_have_an_all_missing_monotonic_ns(fixture_root, tmp_path):
    _, j, _ = load.load_experiment(read_experiment(fixture_root / TP4), tmp_path)
    assert j["ts.monotonic_ns"].dtype == "Int64" and j["ts.monotonic_ns"].isna().all()


# ------------------------------------------------------------------ accounting and cache key

def test_every_line_and_event_of_the_fixture_is_accounted_for(fixture_root, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", load.TraceWarning)
        ds = load.load_dataset(fixture_root, cache_root=tmp_path)
    assert list(ds.parse_report.columns) == load.REPORT_COLUMNS
    rep = ds.parse_report.set_index("experiment_id")
    assert rep["events"].tolist() == [223, 176, 233] and rep["rejected_events"].sum() == 0
    assert rep.loc[GENERAL, ["parsed_lines", "blank_lines", "malformed_lines"]].tolist() == [19, 1, 1]
    assert ds.skipped_records[["experiment_id", "kind", "count", "first_line"]].values.tolist() == [
        [GENERAL, "line", 1, 21]]
    for exp in (GENERAL, MOE, TP4):
        _, _, st = load.load_experiment(read_experiment(fixture_root / exp), tmp_path)
        assert st.from_cache and st.balanced()


def test_cache_key_covers_file_identity_and_resolved_experiment(fixture_root, tmp_path):
    exp = read_experiment(fixture_root / MOE)
    load.load_experiment(exp, tmp_path)
    meta = json.loads(next((tmp_path / "traces").glob("*/meta.json")).read_text())
    assert set(meta["key"]) == {"source", "size", "mtime_ns", "ctime_ns", "inode", "device",
                                "experiment_id", "model", "hf_id", "tp", "workload",
                                "parser_version"}
    assert (meta["key"]["hf_id"], meta["key"]["tp"]) == ("mistralai/Mixtral-8x7B-v0.1", 2)
    assert meta["key"]["parser_version"] == load.PARSER_VERSION


def test_cache_of_another_parser_version_is_parsed_again(fixture_root, tmp_path):
    exp = read_experiment(fixture_root / TP4)
    load.load_experiment(exp, tmp_path)
    meta_path = next((tmp_path / "traces").glob("*/meta.json"))
    meta = json.loads(meta_path.read_text())
    meta["key"]["parser_version"] = load.PARSER_VERSION - 1      # written by the dict loader
    meta_path.write_text(json.dumps(meta))
    steps, _, st = load.load_experiment(exp, tmp_path)
    assert not st.from_cache and len(steps) == 129
    assert json.loads(meta_path.read_text())["key"]["parser_version"] == load.PARSER_VERSION


def test_save_dataset_writes_what_the_report_reads(fixture_root, tmp_path):
    """Notebook 01's tables: the data root and its kind, the experiments with their counts,
    the directories skipped, the parse report (without how this run read each file) and the
    records skipped."""
    from stepdecomp.core import artefacts

    with pytest.warns(load.TraceWarning):
        ds = load.load_dataset(fixture_root, cache_root=tmp_path / "cache")
    ds.skipped = [("junk", "no traces.json")]
    dirs = artefacts.RunDirs(data_root=fixture_root, out=tmp_path / "out",
                             figures=tmp_path / "fig").make()
    load.save_dataset(dirs, ds)
    read = {name: pd.read_csv(dirs.tables / f"{name}.csv", keep_default_na=False)
            for name in ("dataset", "experiments", "skipped_directories", "parse_report",
                         "skipped_records")}
    assert read["dataset"].values.tolist() == [["tests/fixtures/ground_truth", "fixture"]]
    exps = read["experiments"].set_index("experiment_id")
    assert exps.loc[GENERAL, ["steps", "journey_events"]].tolist() == [127, 96]
    assert exps.loc[MOE, ["hf_id", "tp"]].tolist() == ["mistralai/Mixtral-8x7B-v0.1", 2]
    assert read["skipped_directories"].values.tolist() == [["junk", "no traces.json"]]
    assert "from_cache" not in read["parse_report"] and len(read["parse_report"]) == 3
    skipped = read["skipped_records"]
    assert skipped[["experiment_id", "kind", "count", "first_line"]].values.tolist() == \
        [[GENERAL, "line", 1, 21]]
    assert artefacts.read_parse_report(dirs)["steps"].sum() == 312
    assert load.dataset_table(tmp_path).values.tolist() == [[tmp_path.as_posix(), "own"]]


def test_parse_totals_sums_the_parse_report_by_hand():
    report = pd.DataFrame({"file": ["a", "b", "c"], "steps": [10, 0, 5],
                           "malformed_lines": [1, 2, 0], "blank_lines": [0, 0, 3],
                           "ignored_lines": [4, 0, 0], "rejected_events": [0, 7, 1]})
    t = load.parse_totals(report)
    assert t.columns.tolist() == load.PARSE_TOTAL_COLUMNS
    assert t.values.tolist() == [[3, 15, 3, 3, 4, 8]]
    # a report without the optional counts (an older table) counts them 0
    old = load.parse_totals(report.drop(columns=["ignored_lines", "rejected_events"]))
    assert old.values.tolist() == [[3, 15, 3, 3, 0, 0]]
    assert load.parse_totals(report.iloc[:0]).values.tolist() == [[0, 0, 0, 0, 0, 0]]
