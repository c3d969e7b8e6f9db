"""The report's parameters, defined once: names, types, defaults, help and which notebooks take them.

papermill reads a notebook's parameters from literal assignments in its cell tagged
``parameters``, so each notebook repeats the defaults it takes. Those cells are generated from
:data:`PARAMETERS` by :func:`parameter_cell`, and tests/core/test_params.py fails when a notebook's
cell differs from it; the runner (``make report``) passes each notebook only the parameters it
declares. ``papermill --help-notebook notebooks/05_plots.ipynb`` prints the same help texts.

An empty string means "resolve at run time" (see paths.resolve_data_root and friends), so a
path default never hard-codes this machine's layout.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The GPU the report assumes when none is named: the replay's calibrated fit (data/calibration.json;
#: the replay's tests pin the two together).
DEFAULT_HARDWARE = "h100-sxm"
#: Points per panel in the per-experiment scatter plots (more only slows the PNGs down).
MAX_POINTS = 3000
#: Seed of the random subsample behind those scatter plots.
SAMPLE_SEED = 0

#: The notebooks, in the order make report runs them (the one list of them: the Makefile and
#: nbval ask ``python -m stepdecomp.run.notebooks --list``). 07_model writes the step-time
#: model's tables before 06_report, which reads them.
ALL_NOTEBOOKS = ("01_load", "02_decompose", "03_phases", "04_correlation", "05_plots", "07_model",
                 "06_report")
#: The engine loop the targets assume: "auto" detects it per experiment from the traces
#: (targets/engineloop.py; vLLM's default, async, where they cannot tell), "async" / "sync" name it.
DEFAULT_ENGINE_LOOP = "auto"
ENGINE_LOOP_CHOICES = ("auto", "async", "sync")
#: The step-time model's defaults (07_model): the fit target and the held-out schemes.
DEFAULT_STEP_MODEL_TARGET = "step_forward_us"
DEFAULT_HELD_OUT = "workload,model"


@dataclass(frozen=True)
class Parameter:
    """One notebook parameter: ``name: type = default  # help``."""

    name: str
    type: type
    default: str | int
    help: str
    notebooks: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.default, self.type) or '"' in str(self.default):
            raise TypeError(f"parameter {self.name}: default {self.default!r} is not {self.type.__name__}")
        unknown = set(self.notebooks) - set(ALL_NOTEBOOKS)
        if unknown:
            raise ValueError(f"parameter {self.name}: unknown notebooks {sorted(unknown)}")

    def line(self) -> str:
        value = f'"{self.default}"' if isinstance(self.default, str) else str(self.default)
        return f"{self.name}: {self.type.__name__} = {value}  # {self.help}"


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("data_root", str, "",
              "ground-truth root; empty: $STEPDECOMP_DATA, else the bundled data/raw", ALL_NOTEBOOKS),
    Parameter("out_dir", str, "", "report directory; empty: $STEPDECOMP_OUT, else reports/",
              ALL_NOTEBOOKS),
    Parameter("figures_dir", str, "",
              "figures directory; empty: figures/ for the default report, else <out_dir>/figures",
              ALL_NOTEBOOKS),
    Parameter("hardware", str, DEFAULT_HARDWARE,
              "GPU spec data/hardware/<name>.json of every roofline, bound and floor",
              ("02_decompose", "04_correlation", "05_plots", "07_model", "06_report")),
    Parameter("engine_loop", str, DEFAULT_ENGINE_LOOP,
              "vLLM engine loop the step targets assume: auto (detected per experiment), async, sync",
              ("02_decompose",)),
    Parameter("max_points", int, MAX_POINTS, "points per panel in the per-experiment scatter plots",
              ("05_plots",)),
    Parameter("sample_seed", int, SAMPLE_SEED, "seed of the random subsample behind those plots",
              ("05_plots",)),
    Parameter("target", str, DEFAULT_STEP_MODEL_TARGET,
              "step-time column of step_components the BLIS coefficients are fitted to",
              ("07_model",)),
    Parameter("held_out", str, DEFAULT_HELD_OUT,
              "held-out schemes, comma-separated: workload (leave one out), model (leave one out)",
              ("07_model",)),
)

HEADER = "# Parameters: `make report` passes them; see stepdecomp/core/params.py"


def notebook_parameters(notebook: str) -> tuple[Parameter, ...]:
    """The parameters ``notebook`` (a stem such as "05_plots") declares, in PARAMETERS order."""
    if notebook not in ALL_NOTEBOOKS:
        raise ValueError(f"unknown notebook {notebook!r}; known: {', '.join(ALL_NOTEBOOKS)}")
    return tuple(p for p in PARAMETERS if notebook in p.notebooks)


def parameter_cell(notebook: str) -> str:
    """The exact source of ``notebook``'s cell tagged ``parameters``."""
    return "\n".join([HEADER, *(p.line() for p in notebook_parameters(notebook))])
