"""What FINDINGS is made of (:class:`FindingsInput`) and the small helpers every section uses
to name experiments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..core.paths import FIXTURE_ROOT, RAW_DIR, display_path
from ..hw.specs import GpuSpec, ModelSpec
from ..stats.correlation import Verdict


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
    physical_target: str = "step.duration_us"
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


def exp(row: pd.Series, **values: Any) -> dict[str, Any]:
    """An experiment's label fields (model, workload) plus ``values``."""
    return {"model": row["model"], "workload": row["workload"], **values}


def rows(frame: pd.DataFrame, *columns: str) -> list[dict[str, Any]]:
    """An experiment listing: model, workload and ``columns`` of each row."""
    return [exp(r, **{c: r[c] for c in columns}) for _, r in frame.iterrows()]


def data_kind(data_root: str) -> str:
    """bundled (the generated reference set), fixture (the test fixture) or own traces."""
    return ("bundled" if data_root == display_path(RAW_DIR) else
            "fixture" if data_root == display_path(FIXTURE_ROOT) else "own")


def model_names(models_by_hf_id: dict[str, list[str]]) -> dict[str, str]:
    """Each model slug → the name of its HF model in per-model summaries: the slugs that load
    one HF config are one model ("llama-2-70b / llama-2-70b-hf"), counted once."""
    return {slug: " / ".join(slugs) for slugs in models_by_hf_id.values() for slug in slugs}


def interval_method(frame: pd.DataFrame) -> dict[str, str]:
    """How a table's intervals were computed, from its ``ci_method`` column (resample.METHOD_*):
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


def as_bool(s: pd.Series) -> pd.Series:
    """Booleans that survived a CSV round trip (True/False or 'True'/'False')."""
    if s.dtype == bool:
        return s
    return s.astype(str).str.strip().str.lower().isin(["true", "1", "yes"])
