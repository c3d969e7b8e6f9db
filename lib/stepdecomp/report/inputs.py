"""What FINDINGS is made of (:class:`FindingsInput`), how the report reads the tables of a
run, and the small helpers every section uses to name experiments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..core import tables as names
from ..core.artefacts import csv_bool as as_bool  # noqa: F401 (the sections import it from here)
from ..core.columns import DURATION
from ..core.paths import display_path
from ..core.verdicts import Verdict, read_verdicts as parse_verdicts
from ..hw.specs import GpuSpec, ModelSpec

if TYPE_CHECKING:
    from ..core.artefacts import RunDirs

#: A verdict's key in FindingsInput.verdicts: (kind, target, prefill subset) (core.verdicts).
VerdictKey = tuple[str, str, str]


@dataclass
class FindingsInput:
    data_root: str
    experiments: list[str]
    skipped: list[tuple[str, str]]
    parse_report: pd.DataFrame
    breakdown: pd.DataFrame
    pure: pd.DataFrame
    per_experiment: pd.DataFrame
    verdict: Verdict
    gpu: GpuSpec
    specs: dict[str, ModelSpec]
    models_by_hf_id: dict[str, list[str]]
    extra_sections: list[str] = field(default_factory=list)
    dataset_note: str | None = None
    skipped_records: pd.DataFrame | None = None
    #: the tables of "What the Traces Measure" (MEASUREMENT_TABLES), None for a seed-only run
    measurement: dict[str, pd.DataFrame] | None = None
    #: the physical tables the conclusion reads, on ``physical_target``: the pooled
    #: pure-phase correlations and the within-experiment verdict (None: no conclusion)
    physical_pure: pd.DataFrame | None = None
    within: pd.DataFrame | None = None
    physical_target: str = DURATION
    #: what the data root is (core.paths.data_kind: bundled, fixture, own), as notebook 01
    #: recorded it in the table ``dataset``
    data_kind: str = "own"
    #: every verdict of the run's verdict tables (core.verdicts), by (kind, target, prefill
    #: subset); the conclusion reads the within-experiment ones of ``physical_target``
    verdicts: dict[VerdictKey, Verdict] = field(default_factory=dict)
    #: the Answer's inputs (report.answer): the sensitivity headlines' statistics on this run,
    #: the engine loop of the targets, the step model's pooled held-out errors, the key figure
    headlines: dict[str, Any] | None = None
    engine_loop: dict[str, Any] | None = None
    held_out_errors: list[dict[str, Any]] = field(default_factory=list)
    #: why notebook 07 fitted no step-time model ("" when it did, or did not run)
    stepmodel_na: str = ""
    key_figure: str | None = None
    #: ``make sensitivity``'s summary (reports/tables/sensitivity.csv), when it has run
    sensitivity: pd.DataFrame | None = None
    #: the seed total's per-experiment r summarised (stats.summary.seed_r_summary: the median
    #: over all experiments, the mean per workload), written by notebook 02
    seed_r: pd.DataFrame | None = None
    #: parse_report's counts over every file (traces.load.parse_totals), written by notebook 01
    parse_totals: pd.DataFrame | None = None


def exp(row: pd.Series, **values: Any) -> dict[str, Any]:
    """An experiment's label fields (model, workload) plus ``values``."""
    return {"model": row["model"], "workload": row["workload"], **values}


def rows(frame: pd.DataFrame, *columns: str) -> list[dict[str, Any]]:
    """An experiment listing: model, workload and ``columns`` of each row."""
    return [exp(r, **{c: r[c] for c in columns}) for _, r in frame.iterrows()]


def model_names(models_by_hf_id: dict[str, list[str]]) -> dict[str, str]:
    """Each model slug → the name of its HF model in per-model summaries: the slugs that load
    one HF config are one model ("llama-2-70b / llama-2-70b-hf"), counted once."""
    return {slug: " / ".join(slugs) for slugs in models_by_hf_id.values() for slug in slugs}


def interval_method(frame: pd.DataFrame) -> dict[str, str]:
    """How a table's intervals were computed, from its ``ci_method`` column (stats.resample.METHOD_*):
    ``unit`` cluster (experiments resampled whole), block (stationary blocks of consecutive
    steps) or steps (a table without the column: the percentile bootstrap over steps of
    earlier versions); ``interval`` bca, percentile or "". Several methods in one table give
    unit "mixed" and their names in ``interval``."""
    if "ci_method" not in frame:
        return {"unit": "steps", "interval": "percentile"}
    values = sorted(set(frame["ci_method"].dropna().astype(str)))
    if len(values) != 1:
        return {"unit": "mixed", "interval": ", ".join(values)}
    v = values[0]
    unit = "cluster" if v.startswith("cluster") else "block" if "block" in v else v
    interval = "bca" if v.endswith("bca") else "percentile" if v.endswith("percentile") else ""
    return {"unit": unit, "interval": interval}




# --------------------------------------------------------------------------- reading tables

def table_path(dirs: "RunDirs", name: str):
    """Where table ``name`` (core.tables) of a run is."""
    return dirs.tables / f"{name}.csv"


def read_table(dirs: "RunDirs", name: str, **kwargs: Any) -> pd.DataFrame:
    """Table ``name`` (core.tables) of a run; a FileNotFoundError names the table and what
    writes it when it is not there (core.tables.missing_message)."""
    path = table_path(dirs, name)
    if not path.is_file():
        raise FileNotFoundError(names.missing_message(display_path(path), name))
    return pd.read_csv(path, **kwargs)


def read_if_there(dirs: "RunDirs", name: str, **kwargs: Any) -> pd.DataFrame | None:
    """Table ``name`` of a run, or None when no notebook of this run wrote it."""
    path = table_path(dirs, name)
    return pd.read_csv(path, **kwargs) if path.is_file() else None


def require_columns(frame: pd.DataFrame, columns: list[str], name: str) -> None:
    """A KeyError naming table ``name`` and the columns it lacks, if any."""
    missing = [c for c in columns if c not in frame]
    if missing:
        raise KeyError(f"{name} lacks column(s) {missing}")


def read_verdicts(dirs: "RunDirs") -> dict[VerdictKey, Verdict]:
    """Every verdict of a run (core.verdicts.read_verdicts): those pooled over experiments
    (the table verdicts_pooled: the seed's and the physical ones; required) and the
    within-experiment ones (verdicts_within, when notebook 04 wrote it)."""
    out = parse_verdicts(read_table(dirs, names.VERDICTS_POOLED), names.VERDICTS_POOLED)
    within = read_if_there(dirs, names.VERDICTS_WITHIN)
    if within is not None:
        out.update(parse_verdicts(within, names.VERDICTS_WITHIN))
    return out
