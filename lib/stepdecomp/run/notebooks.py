"""Execute report notebooks with papermill and render them to HTML (what `make report` calls).

    python -m stepdecomp.run.notebooks notebooks/01_load.ipynb [more.ipynb ...] \
        [--data ROOT] [--out DIR] [--figures DIR] [--hardware NAME]

Notebooks run in the order given, each in notebooks/ as working directory, writing
OUT/notebooks/<name>.ipynb (their HTML pages are the site's: `make site`, site.py, which loads
nothing from the network). Only the options given become papermill parameters, and
each notebook gets only those its parameters cell declares (stepdecomp.core.params), so the default
report's executed notebooks equal the committed ones plus outputs. An unknown --hardware stops
the run before any notebook starts. A failing
cell stops the run with exit status 1 and a message naming the notebook and the cell.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..core.params import ALL_NOTEBOOKS, DEFAULT_HARDWARE, ENGINE_LOOP_CHOICES, notebook_parameters
from ..core.paths import HARDWARE_DIR, NOTEBOOKS_DIR, REPORTS_DIR, display_path, resolve_out_dir


class NotebookFailed(RuntimeError):
    pass


def run_notebook(src: Path, dst: Path, parameters: dict[str, str]) -> None:
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    dst.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        pm.execute_notebook(str(src), str(dst), parameters=parameters, kernel_name="python3",
                            cwd=str(NOTEBOOKS_DIR), progress_bar=False, log_output=False)
    except PapermillExecutionError as exc:
        raise NotebookFailed(
            f"notebook {src.name} failed in cell {exc.cell_index} (execution count "
            f"{exc.exec_count}): {exc.ename}: {exc.evalue}\n"
            f"the partially executed notebook is {display_path(dst)}") from None
    _relative_paths(dst)


def declared_parameters(stem: str, given: dict[str, str]) -> dict[str, str]:
    """The subset of ``given`` that notebook ``stem`` declares (params.PARAMETERS), so papermill
    never injects a parameter a notebook does not take; a notebook params does not know gets all."""
    if stem not in ALL_NOTEBOOKS:
        return dict(given)
    names = {p.name for p in notebook_parameters(stem)}
    return {k: v for k, v in given.items() if k in names}


def _relative_paths(notebook: Path) -> None:
    """papermill records absolute input/output paths; keep the shared notebook free of
    this machine's layout."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = display_path(meta[key])
    nbformat.write(nb, notebook)


def refresh_committed(names: list[str]) -> None:
    """Copy the default report's executed notebooks over notebooks/, without papermill's
    run metadata (timings), so that nbval compares against the default report's outputs."""
    import nbformat

    for name in names:
        nb = nbformat.read(REPORTS_DIR / "notebooks" / name, as_version=4)
        nb.metadata.pop("papermill", None)
        for cell in nb.cells:
            cell.metadata.pop("papermill", None)
            cell.metadata.pop("execution", None)
        nbformat.write(nb, NOTEBOOKS_DIR / name)
        print(f"  refreshed notebooks/{name}")


def default_notebooks() -> list[Path]:
    """Every notebook, in the order they run: params.ALL_NOTEBOOKS (the one list of them)."""
    return [NOTEBOOKS_DIR / f"{stem}.ipynb" for stem in ALL_NOTEBOOKS]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path,
                    help="the notebooks to run, in this order (default: all, in params.ALL_NOTEBOOKS order)")
    ap.add_argument("--list", action="store_true",
                    help="print the notebooks' paths in the order make report runs them, and exit")
    ap.add_argument("--data", default="", help="ground-truth root (default: the bundled dataset)")
    ap.add_argument("--out", default="", help="report directory (default: reports/)")
    ap.add_argument("--figures", default="", help="figures directory (default: figures/ or OUT/figures)")
    ap.add_argument("--hardware", default="",
                    help=f"GPU spec data/hardware/<name>.json (default {DEFAULT_HARDWARE})")
    ap.add_argument("--engine-loop", default="", choices=("", *ENGINE_LOOP_CHOICES),
                    help="the vLLM engine loop the step targets assume (default: detected)")
    ap.add_argument("--dask", default="",
                    help="run the per-experiment stages on Dask: 'local' (a LocalCluster of 2 "
                         "processes, started once for all notebooks) or a scheduler address "
                         "(default: $STEPDECOMP_DASK, else in process)")
    ap.add_argument("--refresh-committed", action="store_true",
                    help="copy reports/notebooks/<name> over notebooks/<name> (after a default report)")
    args = ap.parse_args(argv)
    if not args.notebooks:
        args.notebooks = default_notebooks()
    if args.list:
        print("\n".join(display_path(nb) for nb in args.notebooks))
        return 0
    if args.refresh_committed:
        refresh_committed([nb.name for nb in args.notebooks])
        return 0
    params = {k: str(Path(v).resolve()) if k not in ("hardware", "engine_loop") else v
              for k, v in {"data_root": args.data, "out_dir": args.out, "figures_dir": args.figures,
                           "hardware": args.hardware, "engine_loop": args.engine_loop}.items() if v}
    if "hardware" in params and not (HARDWARE_DIR / f"{params['hardware']}.json").is_file():
        known = ", ".join(sorted(p.stem for p in HARDWARE_DIR.glob("*.json")))
        print(f"make report: no hardware spec {display_path(HARDWARE_DIR)}/{params['hardware']}.json "
              f"(known: {known})", file=sys.stderr)
        return 2
    out = resolve_out_dir(params.get("out_dir"))
    if args.dask or os.environ.get("STEPDECOMP_DASK"):
        from .pipeline import export_backend     # sets $STEPDECOMP_DASK for the kernels
        print(f"  per-experiment stages on Dask at {export_backend(args.dask or None)}")
    for nb in args.notebooks:
        dst = out / "notebooks" / nb.name
        t0 = time.perf_counter()
        try:
            run_notebook(nb.resolve(), dst, declared_parameters(nb.stem, params))
        except NotebookFailed as exc:
            print(f"make report: {exc}", file=sys.stderr)
            return 1
        print(f"  {nb.name:<22} {time.perf_counter() - t0:6.1f} s  -> {display_path(dst)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
