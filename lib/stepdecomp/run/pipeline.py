"""The per-experiment stages, in process or on a Dask cluster.

Every stage up to the per-experiment statistics needs one experiment's rows only, so it is
one function of one experiment (:func:`process_experiment`)::

    load (load.load_experiment: the Parquet trace cache)          -> steps, journeys
    seed and physical components (model.seed, model.physical)      -> components
    reconstruction and targets (reconstruct, targets, explain)    -> components + targets
    per-experiment statistics (PER_EXPERIMENT_STATISTICS)         -> small tables

The components of each experiment are written to a Parquet dataset partitioned by
experiment, ``OUT/interim/components/experiment_id=<id>/part.parquet`` (each file keeps the
``experiment_id`` column: read it per file, :func:`read_partitioned`, not as a Hive
dataset). Pooled statistics (:data:`POOLED_STATISTICS`) run afterwards on the combined,
column-pruned frame (:data:`POOLED_COLUMNS`).

Backends (:func:`dask_client`): none (the default) is a plain loop over experiments in this
process, without importing Dask; ``"local"`` starts a LocalCluster of LOCAL_WORKERS worker
processes; any other value is the address of a running Dask scheduler
(``tcp://host:8786``). The backend comes from the ``dask`` argument, else from
``$STEPDECOMP_DASK`` (which ``make report DASK=...`` sets for the notebooks). Workers must
see the data root, ``data/interim`` and OUT at the same paths as the client (a shared file
system). Both backends run the same functions on the same partitions and concatenate the
results in experiment order, so every table and Parquet file is byte-identical
(tests/run/test_pipeline.py).

    python -m stepdecomp.run.pipeline [--data ROOT] [--out DIR] [--hardware NAME] [--dask ADDR]

runs all stages and writes the tables without the notebooks (timings on stdout).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from ..core.columns import EXP
from ..stats import attribution, explain, per_target, correlation
from ..stats import summary
from ..model import phases, physical, reconstruct, seed
from ..traces import load
from ..core import artefacts
from ..targets import timestamps
from ..traces.experiments import Experiment, discover
from ..core.paths import INTERIM_DIR, MODELS_DIR, display_path
from ..hw.specs import GpuSpec, ModelSpec, load_gpu_spec, load_model_specs

if TYPE_CHECKING:
    from distributed import Client

#: Environment variable naming the Dask backend ("local" or a scheduler address).
ENV_DASK = "STEPDECOMP_DASK"
#: Backend value that starts a LocalCluster.
LOCAL = "local"
#: Worker processes of the LocalCluster (the test machine has 2 cores).
LOCAL_WORKERS = 2
#: Threads per worker: the stages hold the GIL for much of their time, so parallelism is
#: in processes.
THREADS_PER_WORKER = 1
#: Directory of the partitioned components dataset under OUT/interim.
COMPONENTS_DATASET = "components"
#: Directory under OUT/interim of the per-experiment tables as Parquet (exact dtypes), for
#: later notebooks to read instead of recomputing (:func:`read_experiment_table`).
TABLES_DIR = "experiment_tables"
PARTITION_FILE = "part.parquet"


# --------------------------------------------------------------------------- per experiment

def decompose_experiment(steps: pd.DataFrame, journeys: pd.DataFrame,
                         budget_tokens: Mapping[str, int | None],
                         model_specs: Mapping[str, ModelSpec], gpu: GpuSpec,
                         engine_loop: str | None = None
                         ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(components, reconstruction report, step targets) of the steps and journeys given —
    what notebook 02 computes: seed components, the reconstruction from journeys, the
    physical components, the step-time targets and the scheduler-work regressors."""
    seed_part = seed.seed_components(steps, model_specs, gpu)
    merged, rec_report = reconstruct.attach_reconstruction(steps, journeys, dict(budget_tokens))
    physical_part = physical.physical_components(merged, model_specs, gpu)
    components = seed.with_physical(seed_part, physical_part)
    step_targets = timestamps.step_targets(steps, journeys, engine_loop)
    components = timestamps.attach(components, step_targets)
    components = explain.with_scheduler_work(components, steps)
    return components, rec_report, step_targets


class TargetMajor:
    """A table function whose rows are stacked target-major (each step-time target, then
    the experiments): per-experiment results are restacked that way (:func:`concat_tables`)."""

    def __call__(self, components: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError


@dataclass(frozen=True)
class PerTarget(TargetMajor):
    """A statistic run once per step-time target (per_target.on_targets)."""

    fn: Callable[..., pd.DataFrame]

    def __call__(self, components: pd.DataFrame) -> pd.DataFrame:
        return per_target.on_targets(self.fn, components)


@dataclass(frozen=True)
class AttributionTable(TargetMajor):
    """One table (``component_attribution`` or ``fit_summary``) of
    per_target.attribution_on_targets: the identified fit and LMG shares per experiment."""

    table: str

    def __call__(self, components: pd.DataFrame) -> pd.DataFrame:
        return getattr(per_target.attribution_on_targets(components), self.table)


#: THE registry of per-experiment statistics (docs/recipes/add-a-statistic.md): each is
#: computed per experiment (each groups by experiment_id; applied to one experiment at a time
#: and concatenated in experiment order they equal the function on the whole frame) and
#: written as OUT/tables/<name>.csv. Name -> function of a components frame; PerTarget runs
#: it once per step-time target.
PER_EXPERIMENT_STATISTICS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "target_medians": per_target.target_medians,
    "per_experiment_correlations": correlation.per_experiment_correlations,
    "physical_per_experiment_correlations": PerTarget(correlation.physical_per_experiment_correlations),
    "lower_bound_check": PerTarget(correlation.lower_bound_check),
    "component_attribution": AttributionTable("component_attribution"),
    "fit_summary": AttributionTable("fit_summary"),
    "group_attribution": PerTarget(attribution.group_attribution),
    "what_explains_targets": functools.partial(explain.explain_r2, targets=per_target.TARGETS),
}


def experiment_statistics(components: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Every ``PER_EXPERIMENT_STATISTICS`` table of the components given, the attribution
    fitted once for both of its tables."""
    fit = None
    out = {}
    for name, fn in PER_EXPERIMENT_STATISTICS.items():
        if isinstance(fn, AttributionTable):
            fit = fit if fit is not None else per_target.attribution_on_targets(components)
            out[name] = getattr(fit, fn.table)
        else:
            out[name] = fn(components)
    return out


#: Tables of one experiment besides the statistics.
STAGE_TABLES = ("reconstruction_report", "target_coverage")


def experiment_tables() -> tuple[str, ...]:
    """The per-experiment table names: the stage tables, then every statistic registered in
    ``PER_EXPERIMENT_STATISTICS`` when this is called (what :func:`decompose_dataset` writes
    and :func:`read_experiment_table` reads)."""
    return (*STAGE_TABLES, *PER_EXPERIMENT_STATISTICS)


#: The per-experiment table names of the statistics this module registers (the pipeline
#: itself calls :func:`experiment_tables`, which also sees a statistic registered later).
EXPERIMENT_TABLES = experiment_tables()


@dataclass(frozen=True)
class StageInputs:
    """What every experiment's task needs besides the experiment (picklable, small)."""

    model_specs: Mapping[str, ModelSpec]
    gpu: GpuSpec
    components_root: Path
    cache_root: Path = INTERIM_DIR
    engine_loop: str | None = None      # None: detected per experiment (timestamps.step_targets)


@dataclass
class ExperimentResult:
    """One experiment's small tables (``EXPERIMENT_TABLES``) and the row counts."""

    experiment_id: str
    tables: dict[str, pd.DataFrame]
    steps: int
    journey_events: int
    parse_stats: load.ParseStats | None = None


def partition_path(root: Path, experiment_id: str) -> Path:
    return Path(root) / f"{EXP}={experiment_id}" / PARTITION_FILE


#: na_reason (or note) of the rows standing for an experiment without steps.
NO_STEPS_REASON = "no steps: the experiment's traces hold no step.BATCH_SUMMARY event"
#: Columns of a per-experiment table that describe an experiment without steps as given
#: (the rest are counts, 0, or statistics, N/A).
_REASON_COLUMNS = ("na_reason", "note")
#: Text and flag columns of the per-experiment tables (a table computed on no rows may
#: have lost their dtypes; counts are named n_* or *steps, every other column is a number).
_TEXT_COLUMNS = ("component", "term", "regressors", "ci_method", "unidentified_reason", "subset")
_FLAG_COLUMNS = ("flagged", "identified", "intercept_identified", "has_journeys", "passed")


def no_step_rows(table: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    """The rows of one per-experiment table for an experiment without steps: one per
    step-time target if the table has a ``target`` column, else one; the experiment's
    identity, integer counts 0, flags False, every statistic N/A, and NO_STEPS_REASON in
    ``na_reason`` (or ``note``). ``table`` (the table computed on no rows) gives the columns
    and dtypes."""
    n = len(per_target.TARGETS) if "target" in table else 1
    identity = {EXP: exp.experiment_id, "model": exp.model, "workload": exp.workload,
                "target": list(per_target.TARGETS)}
    data: dict[str, Any] = {}
    for c in table.columns:
        kind = table[c].dtype.kind
        if kind == "O":                  # a table built from no rows: judge by the name
            kind = ("O" if c in _TEXT_COLUMNS or c.startswith("reason_") else
                    "b" if c in _FLAG_COLUMNS
                    else "i" if c.startswith("n_") or c.endswith("steps") else "f")
        if c in identity:
            data[c] = identity[c] if c == "target" else [identity[c]] * n
        elif c in _REASON_COLUMNS:
            data[c] = [NO_STEPS_REASON] * n
        elif kind in "iu":
            data[c] = np.zeros(n, dtype=np.int64)
        elif kind == "b":
            data[c] = np.zeros(n, dtype=bool)
        elif kind == "f":
            data[c] = np.full(n, np.nan)
        else:
            data[c] = [""] * n
    return pd.DataFrame(data, columns=table.columns)


def process_experiment(exp: Experiment, inputs: StageInputs) -> ExperimentResult:
    """Every per-experiment stage of one experiment: load it (from the trace cache when
    valid), decompose it, write its components partition, compute its tables. An experiment
    without steps (the loader warned about it) goes through the same stages: its partition
    has no rows, and each table has its N/A rows (:func:`no_step_rows`)."""
    steps, journeys, parse_stats = load.load_experiment(exp, inputs.cache_root)
    components, tables = experiment_stages(exp, steps, journeys, inputs.model_specs, inputs.gpu,
                                           inputs.engine_loop)
    path = partition_path(inputs.components_root, exp.experiment_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    components.to_parquet(path, index=False)
    return ExperimentResult(exp.experiment_id, tables, len(steps), len(journeys), parse_stats)


def experiment_stages(exp: Experiment, steps: pd.DataFrame, journeys: pd.DataFrame,
                      model_specs: Mapping[str, ModelSpec], gpu: GpuSpec,
                      engine_loop: str | None = None
                      ) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(components, the ``EXPERIMENT_TABLES``) of one experiment's loaded steps and journeys:
    what :func:`process_experiment` computes after the load (N/A rows for no steps)."""
    specs = {exp.hf_id: model_specs[exp.hf_id]}
    components, rec_report, step_targets = decompose_experiment(
        steps, journeys, {exp.experiment_id: exp.max_num_batched_tokens}, specs, gpu, engine_loop)
    tables = {"reconstruction_report": rec_report,
              "target_coverage": timestamps.coverage_table(step_targets, journeys)}
    tables.update(experiment_statistics(components))
    if steps.empty:
        tables = {name: no_step_rows(t, exp) for name, t in tables.items()}
    return components, tables


# --------------------------------------------------------------------------- backends

def backend(dask: str | None = None) -> str:
    """The backend asked for: the argument, else $STEPDECOMP_DASK, else "" (in process)."""
    return (dask if dask is not None else os.environ.get(ENV_DASK, "")).strip()


@contextlib.contextmanager
def dask_client(dask: str | None = None) -> Iterator["Client | None"]:
    """A distributed Client for the backend (see :func:`backend`), None for in-process.
    ``"local"`` starts (and afterwards stops) a LocalCluster of LOCAL_WORKERS processes."""
    address = backend(dask)
    if not address:
        yield None
        return
    from distributed import Client, LocalCluster

    if address == LOCAL:
        with LocalCluster(n_workers=LOCAL_WORKERS, threads_per_worker=THREADS_PER_WORKER,
                          processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            yield client
    else:
        with Client(address) as client:
            yield client


def export_backend(dask: str | None = None) -> str:
    """For a run of several notebooks: start the LocalCluster once if ``dask`` is "local"
    (stopped at exit), and put the scheduler address in $STEPDECOMP_DASK, which the
    notebook kernels inherit. Returns the address ("" = in process)."""
    address = backend(dask)
    if address == LOCAL:
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=LOCAL_WORKERS, threads_per_worker=THREADS_PER_WORKER,
                               processes=True, dashboard_address=":0")
        atexit.register(cluster.close)
        address = cluster.scheduler_address
    if address:
        os.environ[ENV_DASK] = address
    return address


def _map(client: "Client | None", task: Callable[..., Any], items: Sequence[Any],
         **kwargs: Any) -> list[Any]:
    """task(item, **kwargs) for every item, in order: a loop, or one Dask task per item."""
    if client is None:
        return [task(item, **kwargs) for item in items]
    return client.gather(client.map(task, list(items), pure=False, **kwargs))


# --------------------------------------------------------------------------- tables

def concat_tables(frames: Sequence[pd.DataFrame], target_major: bool = False) -> pd.DataFrame:
    """Per-experiment tables stacked in the order given (experiment order). With
    ``target_major`` (tables of a :class:`TargetMajor` function) the rows are put back in the order
    per_target.on_targets gives over the whole frame: by target (per_target.TARGETS order), then
    experiment (a stable sort)."""
    frames = [f for f in frames if f is not None]
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    if target_major:
        order = {t: i for i, t in enumerate(per_target.TARGETS)}
        rank = out["target"].map(order).to_numpy(dtype=np.float64)
        out = out.iloc[np.argsort(rank, kind="stable")].reset_index(drop=True)
    return out


def partition_files(root: Path) -> list[Path]:
    """The partition files of a dataset written by :func:`process_experiment`, in
    experiment_id order."""
    found = sorted(Path(root).glob(f"{EXP}=*/{PARTITION_FILE}"),
                   key=lambda p: p.parent.name.removeprefix(f"{EXP}="))
    if not found:
        raise FileNotFoundError(f"no {EXP}=*/{PARTITION_FILE} under {display_path(root)}")
    return found


def read_partitioned(root: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The partitions concatenated in experiment order (only ``columns``, if given)."""
    parts = [pd.read_parquet(p, columns=list(columns) if columns else None)
             for p in partition_files(root)]
    return pd.concat(parts, ignore_index=True)


def _apply_partition(path: Path, fn: Callable[[pd.DataFrame], pd.DataFrame],
                     columns: Sequence[str] | None) -> pd.DataFrame:
    return fn(pd.read_parquet(path, columns=list(columns) if columns else None))


def map_experiments(fn: Callable[[pd.DataFrame], pd.DataFrame],
                    source: pd.DataFrame | Path, client: "Client | None" = None,
                    columns: Sequence[str] | None = None) -> pd.DataFrame:
    """``fn`` applied to each experiment's rows, results stacked by :func:`concat_tables`.

    ``source`` is a frame (split by experiment_id, sorted) or the root of a partitioned
    dataset (each partition read where ``fn`` runs, only ``columns`` if given). With a
    ``client`` each experiment is a Dask task. For a table function that groups by
    experiment (the stats per-experiment tables) the result equals ``fn(whole frame)``."""
    if isinstance(source, pd.DataFrame):
        parts = [p.reset_index(drop=True)
                 for _, p in source.groupby(EXP, sort=True, observed=True)]
        return concat_tables(_map(client, fn, parts), isinstance(fn, TargetMajor))
    return concat_tables(_map(client, _apply_partition, partition_files(source), fn=fn,
                              columns=columns), isinstance(fn, TargetMajor))


# --------------------------------------------------------------------------- whole runs

def _specs_for(experiments: Sequence[Experiment], models_dir: Path) -> dict[str, ModelSpec]:
    return load_model_specs(sorted({e.hf_id for e in experiments}), models_dir)


def parse_into_cache(exp: Experiment, cache_root: Path = INTERIM_DIR) -> str:
    """Load one experiment so that its trace cache is valid (parsed if it was not); the
    frames stay where this runs (a Dask task returns only the experiment id). No progress
    bar: a worker's stderr is a log."""
    load.load_experiment(exp, cache_root, progress=False)
    return exp.experiment_id


def load_dataset_on_dask(data_root: Path, dask: str | None = None,
                 cache_root: Path = INTERIM_DIR) -> load.Dataset:
    """load.load_dataset, with the uncached trace files parsed as Dask tasks first when a
    backend is set (the client then reads the Parquet cache they wrote)."""
    with dask_client(dask) as client:
        if client is not None:
            found = discover(Path(data_root), MODELS_DIR)
            _map(client, parse_into_cache, found.experiments, cache_root=cache_root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load.load_dataset(data_root, cache_root)
    for w in caught:             # re-issued so that they name the caller's line, not this one
        warnings.warn(w.message, stacklevel=2)
    return ds


@dataclass
class PipelineResult:
    """What :func:`decompose_dataset` / :func:`run` wrote: the tables by name, the specs
    used and the per-stage wall times (s)."""

    tables: dict[str, pd.DataFrame]
    model_specs: dict[str, ModelSpec]
    components_path: Path
    steps: int
    journey_events: int
    seconds: dict[str, float] = field(default_factory=dict)
    #: what the loader skipped, per file and reason (load.skipped_records)
    skipped_records: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: experiments that contributed no steps
    without_steps: list[str] = field(default_factory=list)


def engine_loop_argument(engine_loop: str | None) -> str | None:
    """The report's ``engine_loop`` parameter as timestamps.step_targets takes it: "auto" or
    empty → None (detected per experiment), "async" / "sync" as given; anything else refused."""
    if engine_loop in (None, "", "auto"):
        return None
    if engine_loop not in ("async", "sync"):
        raise ValueError(f"engine_loop must be auto, async or sync, got {engine_loop!r}")
    return engine_loop


def decompose_dataset(dirs: artefacts.RunDirs, gpu: GpuSpec, dask: str | None = None,
                      cache_root: Path = INTERIM_DIR,
                      model_specs: Mapping[str, ModelSpec] | None = None,
                      engine_loop: str | None = None) -> PipelineResult:
    """Run :func:`process_experiment` over every experiment of ``dirs.data_root`` (a loop,
    or Dask tasks on the backend of :func:`dask_client`), then write the
    ``EXPERIMENT_TABLES`` and step_components.parquet (the partitions in experiment order).
    ``model_specs`` defaults to the configs of the experiments' models; ``engine_loop``
    (:func:`engine_loop_argument`) names the loop the targets assume instead of detecting it."""
    loop = engine_loop_argument(engine_loop)
    with dask_client(dask) as client:
        return _decompose(dirs, gpu, client, cache_root, model_specs, loop)


def _decompose(dirs: artefacts.RunDirs, gpu: GpuSpec, client: "Client | None", cache_root: Path,
               model_specs: Mapping[str, ModelSpec] | None,
               engine_loop: str | None = None) -> PipelineResult:
    t0 = time.perf_counter()
    found = discover(dirs.data_root, MODELS_DIR)     # refuses a root without experiments
    specs = dict(model_specs) if model_specs is not None else _specs_for(found.experiments, MODELS_DIR)
    root = dirs.interim / COMPONENTS_DATASET
    shutil.rmtree(root, ignore_errors=True)        # no partition of a previous run survives
    inputs = StageInputs(model_specs=specs, gpu=gpu, components_root=root, cache_root=cache_root,
                         engine_loop=engine_loop)
    ordered = sorted(found.experiments, key=lambda e: e.experiment_id)
    results = _map(client, process_experiment, ordered, inputs=inputs)
    t1 = time.perf_counter()
    tables = {name: concat_tables([r.tables[name] for r in results],
                                  isinstance(PER_EXPERIMENT_STATISTICS.get(name), TargetMajor))
              for name in experiment_tables()}
    (dirs.interim / TABLES_DIR).mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        artefacts.write_table(dirs, name, table)
        table.to_parquet(dirs.interim / TABLES_DIR / f"{name}.parquet", index=False)
    # what FINDINGS quotes of them over experiments, so that the report computes no number
    for name, table in summary.decompose_summaries(tables, per_target.TARGETS).items():
        artefacts.write_table(dirs, name, table)
    read_partitioned(root).to_parquet(artefacts.components_path(dirs), index=False)
    return PipelineResult(tables=tables, model_specs=specs,
                          components_path=artefacts.components_path(dirs),
                          steps=sum(r.steps for r in results),
                          journey_events=sum(r.journey_events for r in results),
                          skipped_records=load.skipped_records(
                              [r.parse_stats for r in results if r.parse_stats is not None]),
                          without_steps=[r.experiment_id for r in results if not r.steps],
                          seconds={"per_experiment": t1 - t0,
                                   "assemble": time.perf_counter() - t1})


def read_experiment_table(dirs: artefacts.RunDirs, name: str) -> pd.DataFrame:
    """A table of :func:`experiment_tables` as :func:`decompose_dataset` computed it
    (notebook 02), with its dtypes: what notebook 04 would otherwise compute again."""
    names = experiment_tables()
    if name not in names:
        raise KeyError(f"{name!r} is not a per-experiment table; those are {list(names)}")
    path = dirs.interim / TABLES_DIR / f"{name}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{display_path(path)} is missing: run notebook 02_decompose "
                                f"first (or `make report`), with the same out_dir")
    return pd.read_parquet(path)


#: The columns the pooled statistics read (the rest of step_components is not loaded).
POOLED_COLUMNS = [EXP, "batch.prefill_tokens", "batch.decode_tokens", *seed.SEED_COLUMNS,
                  *correlation.PHYS_COMPONENTS, correlation.PHYS_TOTAL, *per_target.TARGETS]
#: Statistics over all experiments' steps together.
POOLED_STATISTICS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "phase_breakdown": phases.phase_breakdown,
    "pure_phase_correlations": correlation.pure_phase_correlations,
    "physical_pure_phase_correlations": PerTarget(correlation.physical_pure_phase_correlations),
}


def pooled_tables(dirs: artefacts.RunDirs) -> dict[str, pd.DataFrame]:
    """The ``POOLED_STATISTICS`` on the combined, column-pruned components, written."""
    frame = read_partitioned(dirs.interim / COMPONENTS_DATASET, POOLED_COLUMNS)
    tables = {name: fn(frame) for name, fn in POOLED_STATISTICS.items()}
    for name, table in tables.items():
        artefacts.write_table(dirs, name, table)
    return tables


def run(dirs: artefacts.RunDirs, hardware: str, dask: str | None = None,
        cache_root: Path = INTERIM_DIR, engine_loop: str | None = None) -> PipelineResult:
    """Every stage without the notebooks: load (on Dask, the uncached files are parsed as
    tasks), the per-experiment stages, the pooled statistics. Tables go to ``dirs.tables``."""
    t0 = time.perf_counter()
    with dask_client(dask) as client:
        if client is not None:
            found = discover(dirs.data_root, MODELS_DIR)
            _map(client, parse_into_cache, found.experiments, cache_root=cache_root)
        t1 = time.perf_counter()
        result = _decompose(dirs, load_gpu_spec(hardware), client, cache_root, None,
                            engine_loop_argument(engine_loop))
    t2 = time.perf_counter()
    _warn_skipped(result)
    result.tables.update(pooled_tables(dirs))
    result.seconds = {"parse": t1 - t0, **result.seconds, "pooled": time.perf_counter() - t2,
                      "total": time.perf_counter() - t0}
    return result


def _warn_skipped(result: PipelineResult) -> None:
    """One load.TraceWarning per file and reason the loader skipped records for, and per
    experiment without steps (notebook 01 shows the same from load.load_dataset)."""
    for r in result.skipped_records.itertuples(index=False):
        where = "" if pd.isna(r.first_line) else f" (first at line {r.first_line})"
        warnings.warn(f"{r.file}: skipped {r.count} {r.kind}(s): {r.reason}{where}",
                      load.TraceWarning, stacklevel=3)
    for exp_id in result.without_steps:
        warnings.warn(f"{exp_id}: no step.BATCH_SUMMARY events; the experiment contributes "
                      f"no steps", load.TraceWarning, stacklevel=3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stepdecomp.run.pipeline",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="", help="ground-truth root (default: the bundled dataset)")
    ap.add_argument("--out", default="", help="report directory (default: reports/)")
    ap.add_argument("--hardware", default="h100-sxm", help="data/hardware/<name>.json")
    ap.add_argument("--dask", default=None,
                    help=f"'{LOCAL}' or a scheduler address (default: ${ENV_DASK}, else in process)")
    ap.add_argument("--engine-loop", default="auto", choices=("auto", "async", "sync"),
                    help="the vLLM engine loop the step targets assume (default: detected)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    dirs = artefacts.run_dirs(args.data, args.out)
    res = run(dirs, args.hardware, args.dask, engine_loop=args.engine_loop)
    times = ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items())
    print(f"{res.steps:,} steps, {res.journey_events:,} journey events "
          f"({backend(args.dask) or 'in process'}): {times}; tables in {display_path(dirs.tables)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
