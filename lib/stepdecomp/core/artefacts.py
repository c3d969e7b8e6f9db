"""Where a report run writes, and the artefacts the notebooks hand to each other.

Layout under OUT (``reports/`` by default; docs/design.md, "Data flow, notebook by notebook",
names every table and the notebook that writes it; core.tables names those FINDINGS reads)::

    OUT/FINDINGS.md
    OUT/tables/*.csv                    (one per table, floats to FLOAT_SIG_DIGITS digits)
    OUT/tables/step_components.parquet
    OUT/site/                           (make site: the offline site of FINDINGS and notebooks)
    OUT/notebooks/*.ipynb               (written by the runner)
    OUT/interim/                        (hand-over between notebooks; not part of the contract)
    FIGURES/*.png                       (figures/ for the default report, else OUT/figures)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .paths import display_path, resolve_data_root, resolve_figures_dir, resolve_out_dir

#: Significant digits of every float written to a CSV. Enough for any statistic here, and
#: few enough that last-ulp differences between machines (numpy's SIMD log/exp/tanh, a
#: solver's BLAS calls) do not reach the file: tables are byte-identical across machines.
FLOAT_SIG_DIGITS = 12
FLOAT_FORMAT = f"%.{FLOAT_SIG_DIGITS}g"


@dataclass(frozen=True)
class RunDirs:
    data_root: Path
    out: Path
    figures: Path

    @property
    def tables(self) -> Path:
        return self.out / "tables"

    @property
    def interim(self) -> Path:
        return self.out / "interim"

    @property
    def notebooks(self) -> Path:
        return self.out / "notebooks"

    @property
    def findings(self) -> Path:
        return self.out / "FINDINGS.md"

    def make(self) -> "RunDirs":
        for d in (self.out, self.tables, self.interim, self.figures):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def describe(self) -> str:
        """The data root this run analyses (output directories vary between runs and are
        not shown, so rendered notebooks stay comparable)."""
        return f"data root: {display_path(self.data_root)}"


def run_dirs(data_root: str | None = None, out_dir: str | None = None,
             figures_dir: str | None = None) -> RunDirs:
    """Resolve a run's directories from notebook parameters (empty string = default)."""
    out = resolve_out_dir(out_dir or None)
    return RunDirs(data_root=resolve_data_root(data_root or None), out=out,
                   figures=resolve_figures_dir(out, figures_dir or None)).make()


# --------------------------------------------------------------------------- hand-over

def csv_bool(s: pd.Series) -> pd.Series:
    """A boolean column as written or as read back from a CSV table (True/False, 'True'/'False',
    1/0, 'yes'): the one reading of a flag column every table reader uses."""
    if s.dtype == bool:
        return s
    return s.astype(str).str.strip().str.lower().isin(["true", "1", "yes"])


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """CSV with N/A as empty cells and floats at FLOAT_SIG_DIGITS significant digits."""
    frame.to_csv(path, index=False, na_rep="", float_format=FLOAT_FORMAT)
    return path


def read_steps(dirs: RunDirs) -> pd.DataFrame:
    return _read(dirs.interim / "steps.parquet", "01_load")


def read_journeys(dirs: RunDirs) -> pd.DataFrame:
    return _read(dirs.interim / "journeys.parquet", "01_load")


def read_parse_report(dirs: RunDirs) -> pd.DataFrame:
    """Per trace file: the line and event counts of load.ParseStats (see load.REPORT_COLUMNS;
    the table ``parse_report``)."""
    path = dirs.tables / "parse_report.csv"
    _require(path, "01_load")
    # keep_default_na=False: an empty stream_error stays "" (no problem), not NaN
    return pd.read_csv(path, keep_default_na=False)


def read_skipped_records(dirs: RunDirs) -> pd.DataFrame:
    """What the loader skipped and why, per file and reason (load.skipped_records; the table
    ``skipped_records``): an empty table when 01_load ran with a loader that did not write it."""
    path = dirs.tables / "skipped_records.csv"
    _require(dirs.tables / "parse_report.csv", "01_load")
    if not path.is_file():
        return pd.DataFrame(columns=["experiment_id", "file", "kind", "reason", "count",
                                     "first_line"])
    frame = pd.read_csv(path, keep_default_na=False, na_values={"first_line": [""]})
    frame["first_line"] = frame["first_line"].astype("Int64")
    return frame


def read_dataset_meta(dirs: RunDirs) -> dict:
    _require(dirs.interim / "dataset.json", "01_load")
    return json.loads((dirs.interim / "dataset.json").read_text())


def read_budgets(dirs: RunDirs) -> dict[str, int | None]:
    """max_num_batched_tokens per experiment (None where exp-config.yaml does not say)."""
    return read_dataset_meta(dirs).get("budget_tokens", {})


def components_path(dirs: RunDirs) -> Path:
    return dirs.tables / "step_components.parquet"


def read_components(dirs: RunDirs) -> pd.DataFrame:
    return _read(components_path(dirs), "02_decompose")


def write_table(dirs: RunDirs, name: str, frame: pd.DataFrame) -> Path:
    """A contract table as CSV; N/A values are empty cells, floats have FLOAT_SIG_DIGITS
    significant digits (byte-identical on every machine)."""
    return write_csv(frame, dirs.tables / f"{name}.csv")


def read_table(dirs: RunDirs, name: str, producer: str) -> pd.DataFrame:
    path = dirs.tables / f"{name}.csv"
    _require(path, producer)
    return pd.read_csv(path)


def _require(path: Path, producer: str) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{display_path(path)} is missing: run notebook {producer} first "
                                f"(or `make report`), with the same out_dir")


def _read(path: Path, producer: str) -> pd.DataFrame:
    _require(path, producer)
    return pd.read_parquet(path)
