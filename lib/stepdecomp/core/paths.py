"""Project paths. Every path the library and the notebooks use comes from here,
never from the current working directory."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT: Path = Path(__file__).resolve().parents[3]
DATA_DIR: Path = PROJECT_ROOT / "data"

#: Environment overrides of the two spec directories, read once when stepdecomp is imported
#: (so a notebook kernel or a replay started with them set reads them too): a model config or
#: a GPU spec can be tried from a copy of data/models or data/hardware without writing into
#: data/ (docs/recipes/). Unset, the committed directories are used.
ENV_MODELS_DIR = "STEPDECOMP_MODELS_DIR"
ENV_HARDWARE_DIR = "STEPDECOMP_HARDWARE_DIR"


def _spec_dir(env: str, default: Path) -> Path:
    chosen = os.environ.get(env)
    return Path(chosen).expanduser().resolve() if chosen else default


MODELS_DIR: Path = _spec_dir(ENV_MODELS_DIR, DATA_DIR / "models")
HARDWARE_DIR: Path = _spec_dir(ENV_HARDWARE_DIR, DATA_DIR / "hardware")
WORKLOADS_DIR: Path = DATA_DIR / "workloads"
RAW_DIR: Path = DATA_DIR / "raw"
INTERIM_DIR: Path = DATA_DIR / "interim"
FIGURES_DIR: Path = PROJECT_ROOT / "figures"
REPORTS_DIR: Path = PROJECT_ROOT / "reports"
NOTEBOOKS_DIR: Path = PROJECT_ROOT / "notebooks"
FIXTURE_ROOT: Path = PROJECT_ROOT / "tests" / "fixtures" / "ground_truth"

#: The bundled dataset `make report` analyses when no DATA is given.
DEFAULT_DATA_ROOT: Path = RAW_DIR

#: Environment overrides, used by `make test` so that nbval re-executes the
#: committed notebooks without touching the committed reports/.
ENV_DATA = "STEPDECOMP_DATA"
ENV_OUT = "STEPDECOMP_OUT"


def resolve_data_root(data_root: str | os.PathLike[str] | None = None) -> Path:
    """The ground-truth root: the argument, else $STEPDECOMP_DATA, else the bundled dataset."""
    chosen = data_root or os.environ.get(ENV_DATA) or DEFAULT_DATA_ROOT
    return Path(chosen).expanduser().resolve()


def resolve_out_dir(out_dir: str | os.PathLike[str] | None = None) -> Path:
    """The report directory: the argument, else $STEPDECOMP_OUT, else reports/."""
    chosen = out_dir or os.environ.get(ENV_OUT) or REPORTS_DIR
    return Path(chosen).expanduser().resolve()


def resolve_figures_dir(out_dir: Path, figures_dir: str | os.PathLike[str] | None = None) -> Path:
    """figures/ at the top level for the default report, OUT/figures for any other OUT."""
    if figures_dir:
        return Path(figures_dir).expanduser().resolve()
    return FIGURES_DIR if out_dir == REPORTS_DIR else out_dir / "figures"


#: What a data root is (data_kind): the bundled generated set, the test fixture, the user's own.
BUNDLED, FIXTURE, OWN = "bundled", "fixture", "own"


def data_kind(data_root: str | os.PathLike[str]) -> str:
    """BUNDLED (the generated reference set, data/raw), FIXTURE (the test fixture) or OWN
    traces: what notebook 01 records of the data root it loaded (the table ``dataset``), so
    that the report says what the traces are without knowing these paths. A relative path is
    one as shown (display_path: relative to the project root)."""
    p = Path(data_root)
    shown = display_path(p if p.is_absolute() else PROJECT_ROOT / p)
    return (BUNDLED if shown == display_path(RAW_DIR) else
            FIXTURE if shown == display_path(FIXTURE_ROOT) else OWN)


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as shown in notebooks and reports: relative to the project root when
    inside it, so that rendered outputs do not depend on where the clone lives."""
    p = Path(path).resolve()
    try:
        return p.relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return p.as_posix()
