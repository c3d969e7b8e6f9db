"""The per-experiment pipeline: in process and on a Dask LocalCluster (2 worker processes),
the same bytes in every table and Parquet file; per-experiment application of the statistics
equals the statistics on the whole frame; the in-process path never imports Dask."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from stepdecomp.core import artefacts
from stepdecomp.run import pipeline
from stepdecomp.stats import summary
from stepdecomp.traces.load import TraceWarning

pytestmark = pytest.mark.integration

FIXTURE_EXPERIMENTS = ["20260101-000000-llama-2-7b-tp1-general",
                       "20260101-010000-mixtral-8x7b-v0-1-tp2-codegen",
                       "20260101-020000-llama-2-70b-hf-tp4-reasoning"]
FIXTURE_STEPS = 312            # sampled steps of the three fixture experiments


@pytest.fixture(scope="module")
def cluster_address():
    """One LocalCluster for the module (start-up costs seconds)."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=pipeline.LOCAL_WORKERS, threads_per_worker=1,
                                  processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cluster_address):
    """The fixture through every stage twice: in process and on the cluster, each with its
    own trace cache (so the cluster's workers parse the files themselves)."""
    base = tmp_path_factory.mktemp("pipeline")
    out = {}
    for name, dask in (("pandas", ""), ("dask", cluster_address)):
        dirs = artefacts.run_dirs(str(pipeline_fixture_root()), str(base / name))
        with pytest.warns(TraceWarning, match=r"general/traces.json: skipped 1 line\(s\): malformed: "
                                              r"not valid JSON .* \(first at line 21\)"):
            res = pipeline.run(dirs, "h100-sxm", dask, cache_root=base / f"cache-{name}")
        out[name] = (dirs, res)
    return out


def pipeline_fixture_root() -> Path:
    from stepdecomp.core.paths import FIXTURE_ROOT
    return FIXTURE_ROOT


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_dask_and_pandas_write_identical_bytes(runs):
    (pd_dirs, pd_res), (dk_dirs, dk_res) = runs["pandas"], runs["dask"]
    tables, tables_dask = _files(pd_dirs.tables), _files(dk_dirs.tables)
    expected = {f"{n}.csv" for n in (*pipeline.EXPERIMENT_TABLES, *pipeline.POOLED_STATISTICS,
                                     *summary.DECOMPOSE_SUMMARIES)}
    assert set(tables) == expected | {"step_components.parquet"}
    assert set(tables_dask) == set(tables)
    assert [n for n in tables if tables[n] != tables_dask[n]] == []
    parts = _files(pd_dirs.interim / pipeline.COMPONENTS_DATASET)
    assert sorted(parts) == [f"experiment_id={e}/part.parquet" for e in FIXTURE_EXPERIMENTS]
    assert parts == _files(dk_dirs.interim / pipeline.COMPONENTS_DATASET)
    kept = _files(pd_dirs.interim / pipeline.TABLES_DIR)
    assert sorted(kept) == sorted(f"{n}.parquet" for n in pipeline.EXPERIMENT_TABLES)
    assert kept == _files(dk_dirs.interim / pipeline.TABLES_DIR)
    assert pd_res.steps == dk_res.steps == FIXTURE_STEPS
    assert pd_res.journey_events == dk_res.journey_events > 0


def test_components_are_the_partitions_in_experiment_order(runs):
    dirs, res = runs["pandas"]
    comps = pd.read_parquet(res.components_path)
    assert len(comps) == FIXTURE_STEPS
    assert list(pd.unique(comps["experiment_id"])) == FIXTURE_EXPERIMENTS
    pruned = pipeline.read_partitioned(dirs.interim / pipeline.COMPONENTS_DATASET, ["step.id"])
    assert list(pruned.columns) == ["step.id"]
    assert pruned["step.id"].tolist() == comps["step.id"].tolist()


@pytest.mark.parametrize("name", list(pipeline.PER_EXPERIMENT_STATISTICS))
def test_per_experiment_statistic_equals_whole_frame(runs, cluster_address, name):
    """Applied per experiment (from the frame, or from the partitions on the cluster) and
    concatenated in order, each statistic equals the statistic on all steps at once."""
    dirs, res = runs["pandas"]
    fn = pipeline.PER_EXPERIMENT_STATISTICS[name]
    comps = pd.read_parquet(res.components_path)
    whole = fn(comps)
    assert len(whole) > 0
    pd.testing.assert_frame_equal(pipeline.map_experiments(fn, comps), whole)
    from distributed import Client
    with Client(cluster_address) as client:
        on_cluster = pipeline.map_experiments(fn, dirs.interim / pipeline.COMPONENTS_DATASET, client)
    pd.testing.assert_frame_equal(on_cluster, whole)
    pd.testing.assert_frame_equal(res.tables[name], whole)


def test_pooled_statistics_on_pruned_columns_equal_full_frame(runs):
    _, res = runs["pandas"]
    comps = pd.read_parquet(res.components_path)
    for name, fn in pipeline.POOLED_STATISTICS.items():
        pd.testing.assert_frame_equal(res.tables[name], fn(comps), obj=name)


def test_concat_tables_restacks_per_target_tables_target_major():
    a = pd.DataFrame({"target": ["step.duration_us", "step_forward_us"], "experiment_id": ["a", "a"]})
    b = pd.DataFrame({"target": ["step.duration_us", "step_forward_us"], "experiment_id": ["b", "b"]})
    got = pipeline.concat_tables([a, b], target_major=True)
    assert got.to_dict("list") == {"target": ["step.duration_us", "step.duration_us",
                                              "step_forward_us", "step_forward_us"],
                                   "experiment_id": ["a", "b", "a", "b"]}
    kept = pipeline.concat_tables([a, b])
    assert kept["experiment_id"].tolist() == ["a", "a", "b", "b"]
    assert pipeline.concat_tables([]).empty


def test_backend_from_argument_else_environment(monkeypatch):
    monkeypatch.delenv(pipeline.ENV_DASK, raising=False)
    assert pipeline.backend() == ""
    monkeypatch.setenv(pipeline.ENV_DASK, " tcp://10.0.0.1:8786 ")
    assert pipeline.backend() == "tcp://10.0.0.1:8786"
    assert pipeline.backend("local") == "local"
    assert pipeline.backend("") == ""          # an explicit empty argument means in process


def test_partition_files_of_an_empty_directory_name_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no experiment_id=\*/part.parquet under .*empty"):
        pipeline.partition_files(tmp_path / "empty")


def test_data_root_without_experiments_is_refused(tmp_path):
    (tmp_path / "root" / "notes").mkdir(parents=True)
    dirs = artefacts.run_dirs(str(tmp_path / "root"), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="root holds no experiment with traces"):
        pipeline.decompose_dataset(dirs, gpu=None, dask="")


def test_in_process_path_does_not_import_dask(tmp_path):
    code = (
        "import sys\n"
        "from stepdecomp.core import artefacts\n"
        "from stepdecomp.run import pipeline\n"
        "from stepdecomp.core.paths import FIXTURE_ROOT\n"
        f"dirs = artefacts.run_dirs(str(FIXTURE_ROOT), {str(tmp_path / 'out')!r})\n"
        f"res = pipeline.run(dirs, 'h100-sxm', '', cache_root=__import__('pathlib').Path({str(tmp_path / 'cache')!r}))\n"
        "assert res.steps == %d, res.steps\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
        % FIXTURE_STEPS)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "TQDM_DISABLE": "1",
                               pipeline.ENV_DASK: ""}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_scale_copies_experiments_as_variants(fixture_copy):
    """make data SCALE=3: two byte copies <name>-1, <name>-2 of every experiment, read as
    variants of the same model and workload."""
    from stepdecomp.traces.experiments import discover
    from stepdecomp.refdata.cli import replicate

    name = FIXTURE_EXPERIMENTS[0]
    copies = replicate(fixture_copy, [name], 3)
    assert [c.name for c in copies] == [f"{name}-1", f"{name}-2"]
    src = fixture_copy / name
    for c in copies:
        assert sorted(p.relative_to(c) for p in c.rglob("*")) == sorted(p.relative_to(src) for p in src.rglob("*"))
        assert (c / "traces.json").read_bytes() == (src / "traces.json").read_bytes()
    found = {e.experiment_id: e for e in discover(fixture_copy).experiments}
    assert len(found) == len(FIXTURE_EXPERIMENTS) + 2
    assert {(found[c.name].model, found[c.name].workload, found[c.name].tp) for c in copies} == \
        {(found[name].model, found[name].workload, found[name].tp)}


def test_experiment_without_steps_has_na_rows_with_the_reason(fixture_copy, tmp_path):
    empty = fixture_copy / FIXTURE_EXPERIMENTS[0] / "traces.json"
    empty.write_bytes(b"")
    dirs = artefacts.run_dirs(str(fixture_copy), str(tmp_path / "out"))
    from stepdecomp.traces.load import TraceWarning
    with pytest.warns(TraceWarning, match="no step.BATCH_SUMMARY events; the experiment contributes no steps"):
        res = pipeline.run(dirs, "h100-sxm", "", cache_root=tmp_path / "cache")
    # every experiment has its partition; the empty one has no rows
    assert sorted(p.parent.name for p in pipeline.partition_files(
        dirs.interim / pipeline.COMPONENTS_DATASET)) == [f"experiment_id={e}" for e in FIXTURE_EXPERIMENTS]
    assert len(pd.read_parquet(pipeline.partition_path(dirs.interim / pipeline.COMPONENTS_DATASET,
                                                       FIXTURE_EXPERIMENTS[0]))) == 0
    assert len(pd.read_parquet(res.components_path)) == FIXTURE_STEPS - 127
    for name in pipeline.EXPERIMENT_TABLES:
        t = res.tables[name]
        assert sorted(set(t["experiment_id"])) == FIXTURE_EXPERIMENTS, name
        rows = t[t["experiment_id"] == FIXTURE_EXPERIMENTS[0]]
        # one N/A row per target (or one), the reason in na_reason (note in the reconstruction)
        assert len(rows) == (3 if "target" in t else 1), name
        reason = rows["note" if name == "reconstruction_report" else "na_reason"]
        assert (reason == pipeline.NO_STEPS_REASON).all(), name
        for c in [c for c in t if c.startswith("n_") or c.endswith("steps")]:
            assert (rows[c] == 0).all(), (name, c)
        written = pd.read_csv(dirs.tables / f"{name}.csv", keep_default_na=False)
        assert (written.loc[written["experiment_id"] == FIXTURE_EXPERIMENTS[0],
                            reason.name] == pipeline.NO_STEPS_REASON).all(), name
    assert res.without_steps == [FIXTURE_EXPERIMENTS[0]]


def test_export_backend_hands_the_address_to_the_notebooks(monkeypatch, cluster_address):
    monkeypatch.setenv(pipeline.ENV_DASK, "")     # recorded, so the address set below is undone
    monkeypatch.delenv(pipeline.ENV_DASK)
    assert pipeline.export_backend("") == ""
    assert pipeline.ENV_DASK not in __import__("os").environ
    assert pipeline.export_backend(cluster_address) == cluster_address
    assert __import__("os").environ[pipeline.ENV_DASK] == cluster_address
    with pipeline.dask_client() as client:          # what a notebook's pipeline call opens
        assert client.scheduler.address == cluster_address
        assert len(client.scheduler_info()["workers"]) == pipeline.LOCAL_WORKERS


def test_load_dataset_parses_on_the_cluster_and_warns_at_the_caller(tmp_path, cluster_address):
    from stepdecomp.traces import load
    from stepdecomp.core.paths import FIXTURE_ROOT

    with pytest.warns(TraceWarning, match="skipped 1 malformed line") as caught:
        on_cluster = pipeline.load_dataset_on_dask(FIXTURE_ROOT, cluster_address, cache_root=tmp_path / "c")
    assert {Path(w.filename).name for w in caught} == {Path(__file__).name}
    assert len(list((tmp_path / "c" / "traces").iterdir())) == len(FIXTURE_EXPERIMENTS)
    with pytest.warns(TraceWarning):
        local = load.load_dataset(FIXTURE_ROOT, tmp_path / "c")
    pd.testing.assert_frame_equal(on_cluster.steps, local.steps)
    pd.testing.assert_frame_equal(on_cluster.journeys, local.journeys)
    assert len(on_cluster.steps) == FIXTURE_STEPS


def test_experiment_tables_read_back_exactly(runs, tmp_path):
    dirs, res = runs["pandas"]
    for name in pipeline.EXPERIMENT_TABLES:
        pd.testing.assert_frame_equal(pipeline.read_experiment_table(dirs, name), res.tables[name])
    with pytest.raises(KeyError, match="'pure_phase_correlations' is not a per-experiment table"):
        pipeline.read_experiment_table(dirs, "pure_phase_correlations")
    empty = artefacts.run_dirs(str(pipeline_fixture_root()), str(tmp_path / "fresh"))
    with pytest.raises(FileNotFoundError, match="nnls|fit_summary.parquet is missing: run notebook 02"):
        pipeline.read_experiment_table(empty, "fit_summary")


def test_experiment_statistics_fit_the_attribution_once(runs, monkeypatch):
    from stepdecomp.stats import per_target

    _, res = runs["pandas"]
    comps = pd.read_parquet(res.components_path)
    calls = []
    real = per_target.attribution_on_targets
    monkeypatch.setattr(per_target, "attribution_on_targets", lambda c: calls.append(1) or real(c))
    tables = pipeline.experiment_statistics(comps)
    assert len(calls) == 1
    assert list(tables) == list(pipeline.PER_EXPERIMENT_STATISTICS)
    for name in ("component_attribution", "fit_summary"):
        pd.testing.assert_frame_equal(tables[name], res.tables[name])
