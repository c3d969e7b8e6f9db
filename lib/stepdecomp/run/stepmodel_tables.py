"""What notebook 07_model computes and writes: the step-time model's tables, the BLIS export.

:func:`build` reads the step_components table (02_decompose) and the steps (01_load), fits
BLIS's coefficients (stepmodel.fit), evaluates the four predictors held out (stepmodel.evaluate)
and compares BLIS's basis with the physical mode (:func:`basis_vs_physical`);
:func:`write_tables` writes :data:`TABLES`; :func:`export_blis` writes
``<out>/blis/defaults.yaml`` and its README.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..model import blis_basis
from ..stepmodel import export as blis_export, fit as stepmodel, evaluate
from ..core import columns, artefacts, tables as names
from ..figures import stepmodel as stepmodel_plots
from ..core.paths import display_path
from ..hw.specs import GpuSpec, ModelSpec, load_gpu_spec, load_model_specs

#: The tables notebook 07 writes (the FINDINGS section reads them, nothing else; named in
#: core.tables).
COEFFICIENTS = names.STEPMODEL_COEFFICIENTS
HELD_OUT = names.STEPMODEL_HELD_OUT
FOLD_BETAS = names.STEPMODEL_FOLD_BETAS
BASIS_VS_PHYSICAL = names.STEPMODEL_BASIS_VS_PHYSICAL
DATA_SUMMARY = names.STEPMODEL_DATA
METHOD = names.STEPMODEL_METHOD
WINNERS = names.STEPMODEL_WINNERS
BASIS_AGREEMENT = names.STEPMODEL_BASIS_AGREEMENT
IDENTIFIED = names.STEPMODEL_IDENTIFIED
TABLES = (COEFFICIENTS, HELD_OUT, FOLD_BETAS, BASIS_VS_PHYSICAL, DATA_SUMMARY, METHOD, WINNERS,
          BASIS_AGREEMENT, IDENTIFIED)
#: The figure (FIGURES/<name>.png): held-out predicted vs measured, one panel per model.
FIGURE = names.STEPMODEL_FIGURE
#: The directory under OUT of the BLIS export.
BLIS_DIR = "blis"
#: Significant digits of the coefficients in reports/blis/README.md (the YAML keeps all).
README_DIGITS = 6
#: Quantiles of the BLIS / physical ratio the comparison table shows.
RATIO_QUANTILES = (0.1, 0.5, 0.9)


@dataclass(frozen=True)
class StepModelResults:
    data: stepmodel.StepData
    fits: list[stepmodel.CoefficientFit]
    held_out: list[evaluate.HeldOut]
    tables: dict[str, pd.DataFrame]
    models: pd.DataFrame          # hf_id, tp per experiment (the export's defaults entries)
    hardware: str

    @property
    def na_reason(self) -> str:
        """Why nothing was fitted ("" when the fit ran)."""
        return "" if self.fits else NO_STEPS_REASON


#: The stage's N/A reason when no step has the target and every basis sum.
NO_STEPS_REASON = "no usable steps (none with the target and every basis sum): nothing fitted"


def model_label(hf_id: str) -> str:
    """A model's name in tables and figures: its HF id without the organisation."""
    return hf_id.split("/")[-1]


# --------------------------------------------------------------------------- comparison

#: BLIS's basis terms against the physical mode's quantities, in the same unit: (component,
#: BLIS columns, their unit factor, physical columns, unit).
_COMPARISONS = (
    ("prefill compute", ("blis_pf_compute_us",), "flops",
     ("phys_prefill_gemm_flops", "phys_prefill_attn_flops"), "FLOPs"),
    ("decode compute", ("blis_dc_compute_us",), "flops",
     ("phys_decode_gemm_flops", "phys_decode_attn_flops"), "FLOPs"),
    ("weights read", ("blis_weight_us",), "bytes", ("phys_weight_bytes",), "bytes"),
    ("KV cache traffic", ("blis_pf_kv_us", "blis_dc_kv_us"), "bytes",
     ("phys_kv_read_bytes", "phys_kv_write_bytes"), "bytes"),
    ("TP all-reduce", ("blis_tp_us",), "us", ("phys_allreduce_us",), "µs"),
)


def basis_vs_physical(components: pd.DataFrame, basis: pd.DataFrame, gpu: GpuSpec
                      ) -> pd.DataFrame:
    """Per model and component, BLIS's quantity over the physical mode's on the steps where
    both are positive: quantiles of the per-step ratio and the ratio of the sums.

    BLIS's times are converted back to its FLOPs (× peak FLOP/µs) and bytes (× HBM bytes/µs);
    the TP term is compared in µs with the physical all-reduce (BLIS prices its volume at
    HBM bandwidth, the physical mode at NVLink bandwidth plus a per-call latency)."""
    hw = blis_basis.BlisHardware.from_gpu(gpu)
    factor = {"flops": hw.peak_flops_per_us, "bytes": hw.hbm_bytes_per_us, "us": 1.0}
    rows = []
    for hf_id, idx in components.groupby(columns.HF_ID, sort=True).indices.items():
        for name, blis_cols, unit, phys_cols, label in _COMPARISONS:
            b = basis.iloc[idx][list(blis_cols)].sum(axis=1, skipna=False).to_numpy() * factor[unit]
            p = components.iloc[idx][list(phys_cols)].sum(axis=1, skipna=False).to_numpy(float)
            ok = np.isfinite(b) & np.isfinite(p) & (b > 0) & (p > 0)
            ratio = b[ok] / p[ok]
            q = np.quantile(ratio, RATIO_QUANTILES) if ok.any() else [np.nan] * 3
            rows.append({"model": model_label(hf_id), "component": name, "unit": label,
                         "n_steps": int(ok.sum()), "ratio_p10": q[0], "ratio_median": q[1],
                         "ratio_p90": q[2],
                         "ratio_of_sums": (np.sort(b[ok]).sum() / np.sort(p[ok]).sum())
                         if ok.any() else np.nan})
    return pd.DataFrame(rows)


BASIS_AGREEMENT_COLUMNS = ["model", "component", "ratio_of_sums", "deviation"]
IDENTIFIED_COLUMNS = ["scope", "betas", "identified"]


def basis_agreement(comparison: pd.DataFrame) -> pd.DataFrame:
    """How far BLIS's basis is from the physical mode (the table
    ``stepmodel_basis_agreement``): per row of a basis_vs_physical table with a ratio (in its
    order), ``deviation`` = max(ratio_of_sums, 1 / ratio_of_sums), the factor by which the sums
    differ whichever is larger; then per component (in order of first appearance) the largest
    deviation over the models, under the model ALL_MODELS (its ratio_of_sums empty)."""
    comp = comparison.dropna(subset=["ratio_median"])
    per = pd.DataFrame({"model": comp["model"], "component": comp["component"],
                        "ratio_of_sums": comp["ratio_of_sums"].astype(float),
                        "deviation": [max(r, 1 / r) for r in comp["ratio_of_sums"].astype(float)]})
    worst = (per.groupby("component", sort=False)["deviation"].max().reset_index()
             .assign(model=names.ALL_MODELS, ratio_of_sums=np.nan))
    return pd.concat([per, worst], ignore_index=True)[BASIS_AGREEMENT_COLUMNS]


def identified_per_model(coefficients: pd.DataFrame) -> pd.DataFrame:
    """Per model of a coefficient table (scopes other than ALL_MODELS, sorted): its β's and
    how many of them are identified (the table ``stepmodel_identified_per_model``)."""
    per_model = coefficients[coefficients["scope"] != stepmodel.ALL_MODELS]
    grouped = per_model.groupby("scope")["identified"]
    return pd.DataFrame({"scope": grouped.size().index, "betas": grouped.size().to_numpy(),
                         "identified": grouped.sum().astype(int).to_numpy()},
                        columns=IDENTIFIED_COLUMNS)


# --------------------------------------------------------------------------- build

def _data_summary(data: stepmodel.StepData, target: str) -> pd.DataFrame:
    rows = [{"item": "steps used", "value": len(data)},
            *({"item": f"steps dropped: {k}", "value": v} for k, v in data.dropped.items()),
            {"item": "experiments", "value": len(set(data.experiment))},
            {"item": "models", "value": len(set(data.model))}]
    return pd.DataFrame(rows).assign(target=target)[["target", "item", "value"]]


def method_table() -> pd.DataFrame:
    """One row: how the coefficients are fitted — the weighting of the errors, the Belsley
    limits behind "collinear" (condition index, variance proportion), the confidence of the
    intervals — and what the export does with BLIS's α's (the table ``stepmodel_method``)."""
    return pd.DataFrame([{"weighting": stepmodel.WEIGHTING,
                          "condition_index_limit": stepmodel.CONDITION_INDEX_LIMIT,
                          "variance_proportion_limit": stepmodel.VARIANCE_PROPORTION_LIMIT,
                          "confidence": stepmodel.CONFIDENCE,
                          "alpha_statement": blis_export.ALPHA_STATEMENT}])


WINNER_COLUMNS = ["scheme", "best", "best_median_ape_pct", "second", "second_median_ape_pct",
                  "ratio"]


def winners_table(errors: pd.DataFrame) -> pd.DataFrame:
    """Per held-out scheme of a held-out error table (in its order): the predictor with the
    lowest pooled median APE and the runner-up (evaluate.winner), and the runner-up's median
    APE over the best one's (``ratio``; empty when the best is 0) — the table
    ``stepmodel_winners``."""
    rows = []
    pooled = errors[errors["held_out"] == evaluate.ALL_GROUPS]
    for scheme in pooled["scheme"].unique():
        best, best_v, second, second_v = evaluate.winner(errors, scheme)
        rows.append({"scheme": scheme, "best": best, "best_median_ape_pct": best_v,
                     "second": second, "second_median_ape_pct": second_v,
                     "ratio": second_v / best_v if best_v else np.nan})
    return pd.DataFrame(rows, columns=WINNER_COLUMNS)


def build(dirs: artefacts.RunDirs, hardware: str, target: str = stepmodel.DEFAULT_TARGET,
          schemes: tuple[str, ...] = evaluate.SCHEMES,
          n_resamples: int = stepmodel.N_RESAMPLES) -> StepModelResults:
    """Every table of notebook 07 from a run directory's step_components and steps."""
    for s in schemes:
        if s not in evaluate.SCHEMES:
            raise ValueError(f"unknown held-out scheme {s!r}; known: "
                             f"{', '.join(evaluate.SCHEMES)}")
    steps = artefacts.read_steps(dirs)
    components = stepmodel.with_hf_id(artefacts.read_components(dirs), steps)
    specs: dict[str, ModelSpec] = load_model_specs(components[columns.HF_ID].unique())
    gpu = load_gpu_spec(hardware)
    data = stepmodel.step_data(components, specs, gpu, target)
    models = components[[columns.EXPERIMENT, columns.HF_ID, "tp"]].drop_duplicates(
        columns.EXPERIMENT)
    if len(data) == 0:
        return StepModelResults(data, [], [], _empty_tables(data, target), models, hardware)
    fits = [stepmodel.fit_hardware(data, n_resamples=n_resamples),
            *stepmodel.fit_per_model(data, n_resamples=n_resamples)]
    shipped = blis_basis.load_coefficients()
    held = [evaluate.held_out(data, s, shipped) for s in schemes]
    coef = stepmodel.coefficient_table(fits)
    coef["scope"] = [s if s == stepmodel.ALL_MODELS else model_label(s) for s in coef["scope"]]
    coef.insert(1, "hardware", hardware)
    errors = evaluate.error_table(held)
    errors["held_out"] = [g if g in evaluate.ALL_GROUPS or s != "model" else model_label(g)
                          for s, g in zip(errors["scheme"], errors["held_out"])]
    fold = pd.concat([h.fold_betas for h in held], ignore_index=True)
    fold["held_out"] = [model_label(g) if s == "model" else g
                        for s, g in zip(fold["scheme"], fold["held_out"])]
    basis = blis_basis.basis_table(components, specs, gpu)
    comparison = basis_vs_physical(components, basis, gpu)
    tables = {COEFFICIENTS: coef, HELD_OUT: errors.assign(target=target), FOLD_BETAS: fold,
              BASIS_VS_PHYSICAL: comparison, DATA_SUMMARY: _data_summary(data, target),
              METHOD: method_table(), WINNERS: winners_table(errors),
              BASIS_AGREEMENT: basis_agreement(comparison), IDENTIFIED: identified_per_model(coef)}
    return StepModelResults(data, fits, held, tables, models, hardware)


def _empty_tables(data: stepmodel.StepData, target: str) -> dict[str, pd.DataFrame]:
    """Every table of the stage without rows but the data summary, which says why."""
    summary = pd.concat([_data_summary(data, target),
                         pd.DataFrame([{"target": target, "item": "na_reason",
                                        "value": NO_STEPS_REASON}])], ignore_index=True)
    def empty() -> pd.DataFrame:          # a header that reads back (no rows)
        return pd.DataFrame({"na_reason": pd.Series([], dtype=str)})
    return {COEFFICIENTS: empty(), HELD_OUT: empty(), FOLD_BETAS: empty(),
            BASIS_VS_PHYSICAL: empty(), DATA_SUMMARY: summary, METHOD: method_table(),
            WINNERS: empty(), BASIS_AGREEMENT: empty(), IDENTIFIED: empty()}


def figure(results: StepModelResults, target: str):
    """The held-out predicted-vs-measured figure, or a labelled empty one with the reason."""
    import matplotlib.pyplot as plt

    if results.held_out:
        return stepmodel_plots.predicted_vs_measured(results.held_out[0].predictions,
                                                     model_label, target)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.set_axis_off()
    ax.text(0.5, 0.5, results.na_reason, ha="center", va="center", wrap=True)
    return fig


def write_tables(dirs: artefacts.RunDirs, results: StepModelResults) -> list[Path]:
    return [artefacts.write_table(dirs, name, results.tables[name]) for name in TABLES]


def hardware_coefficients(results: StepModelResults) -> blis_basis.TrainedPhysicsCoefficients:
    """The per-hardware fitted β with BLIS's shipped α's (blis_export.ALPHA_STATEMENT)."""
    fit = results.fits[0]
    return blis_basis.TrainedPhysicsCoefficients(alpha=blis_basis.load_coefficients().alpha,
                                                 beta=tuple(fit.beta))


def export_blis(dirs: artefacts.RunDirs, results: StepModelResults) -> list[Path]:
    """``<out>/blis/defaults.yaml`` (BLIS's accepted keys only) and its README. For hardware
    BLIS has no entry for (blis_export.BLIS_GPU_NAMES) nothing is written, earlier files of
    the export are removed (they would describe another run) and a warning says why."""
    import warnings

    from ..report.render import environment

    out = dirs.out / BLIS_DIR
    if results.hardware not in blis_export.BLIS_GPU_NAMES:
        for name in (blis_export.DEFAULTS_FILE, blis_export.README_FILE):
            (out / name).unlink(missing_ok=True)
        warnings.warn(f"no BLIS export for {results.hardware}: BLIS has no hardware entry for "
                      f"it (known: {', '.join(blis_export.BLIS_GPU_NAMES)})", stacklevel=2)
        return []
    if not results.fits:
        for name in (blis_export.DEFAULTS_FILE, blis_export.README_FILE):
            (out / name).unlink(missing_ok=True)
        warnings.warn(f"no BLIS export: {results.na_reason}", stacklevel=2)
        return []
    coeffs = hardware_coefficients(results)
    entries = blis_export.model_entries(results.models, results.hardware)
    doc = blis_export.defaults_document(coeffs, entries)
    fit = results.fits[0]
    header = (f"BLIS trained-physics coefficients fitted to {fit.target} of "
              f"{fit.n_steps} steps in {fit.n_experiments} experiments on {results.hardware} "
              f"(stepdecomp.stepmodel.fit). Use: blis run --defaults-filepath <this file>.")
    yaml_path = blis_export.write_defaults(out / blis_export.DEFAULTS_FILE, doc, header)
    rel = display_path(yaml_path)
    readme = environment().get_template("blis_readme.md.j2").render(
        s={"defaults_path": rel, "commands": blis_export.command_lines(entries, rel),
           "entries": entries, "target": fit.target, "n_steps": fit.n_steps,
           "n_experiments": fit.n_experiments, "hardware": results.hardware,
           "betas": list(zip(blis_basis.BETA_NAMES, blis_basis.BASIS_COLUMNS, coeffs.beta,
                             fit.reason)),
           "alphas": list(zip(blis_basis.ALPHA_NAMES, coeffs.alpha)),
           "alpha_statement": blis_export.ALPHA_STATEMENT, "digits": README_DIGITS,
           "blis_commit": blis_basis.BLIS_COMMIT})
    readme_path = out / blis_export.README_FILE
    readme_path.write_text(readme, encoding="utf-8")
    return [yaml_path, readme_path]


def main(argv: list[str] | None = None) -> int:
    """``python -m stepdecomp.run.stepmodel_tables [--out DIR] [--hardware NAME] [--target COL]``
    (``make export-blis``): notebook 07's tables and the BLIS export from a run directory
    where notebooks 01 and 02 have run."""
    import argparse

    from ..core.params import DEFAULT_HARDWARE, DEFAULT_HELD_OUT, DEFAULT_STEP_MODEL_TARGET

    ap = argparse.ArgumentParser(prog="python -m stepdecomp.run.stepmodel_tables",
                                 description=main.__doc__)
    ap.add_argument("--out", default="", help="report directory (default reports/)")
    ap.add_argument("--hardware", default=DEFAULT_HARDWARE)
    ap.add_argument("--target", default=DEFAULT_STEP_MODEL_TARGET)
    ap.add_argument("--held-out", default=DEFAULT_HELD_OUT)
    args = ap.parse_args(argv)
    dirs = artefacts.run_dirs(None, args.out or None)
    try:
        results = build(dirs, args.hardware, args.target, tuple(args.held_out.split(",")))
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"export-blis: {exc}", file=sys.stderr)
        return 2
    for path in [*write_tables(dirs, results), *export_blis(dirs, results)]:
        print(display_path(path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _na_frame(results: StepModelResults) -> pd.DataFrame:
    return pd.DataFrame({"na_reason": [results.na_reason]})


def hardware_view(results: StepModelResults) -> pd.DataFrame:
    """The per-hardware vector's rows of the coefficient table (notebook 07), or the reason."""
    coef = results.tables[COEFFICIENTS]
    if coef.empty:
        return _na_frame(results)
    return coef[coef["scope"] == stepmodel.ALL_MODELS].drop(columns=["scope", "hardware", "target"])


def pooled_errors_view(results: StepModelResults) -> pd.DataFrame:
    """The held-out errors pooled over folds (notebook 07), or the reason."""
    errors = results.tables[HELD_OUT]
    if errors.empty:
        return _na_frame(results)
    return errors[errors["held_out"] == evaluate.ALL_GROUPS]
