"""FINDINGS.md: the seed study's sections and the physical mode, filled from the computed tables.

The wording lives in Jinja templates (``stepdecomp/templates/``: ``findings.md.j2`` lists the
sections in reading order, one ``_<name>.md.j2`` partial per section). This package only
computes what they show, one module per part of the document:

- :mod:`.format`: the ``fmt_*`` formatters and :func:`markdown_table`;
- :mod:`.render`: the template environment, :func:`render_section` and the thresholds the text
  states (:data:`TEMPLATE_CONSTANTS`; the templates never spell them out);
- :mod:`.seed`: the seed's sections; :mod:`.measurement`: "What the Traces Measure";
  :mod:`.physical`: "Beyond the Seed: Physical Mode" (with :mod:`.attribution`: the
  component attribution and the MoE check); :mod:`.verdicts`: the within-experiment verdict
  and the Conclusion; :mod:`.published`: the generated data beside the published study;
- this module: :func:`collect` (the run's tables → :class:`FindingsInput`) and
  :func:`findings_markdown` (the whole document).

Each ``<name>_context`` function turns tables into a plain dict (numbers, rows, tables and
the categories the sentences branch on). Adding a section: write ``templates/_<name>.md.j2``
(it reads its context as ``s``), write ``<name>_context(fi) -> dict`` in the module of its
part, register it in :data:`SECTION_CONTEXTS` and put ``{{ section("<name>", <name>) }}``
where it belongs in ``findings.md.j2``.

Imports: core, hw, traces, targets, stats, stepmodel, run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from ..core.params import DEFAULT_HARDWARE
from ..core.paths import RAW_DIR, display_path
from .format import (FORMATTERS, fmt_ci, fmt_delta, fmt_frac, fmt_int, fmt_num, fmt_pct, fmt_r,
                     fmt_r3, fmt_share, fmt_us, markdown_table)
from .inputs import FindingsInput, data_kind, model_names  # noqa: F401 (re-exported)
from .measurement import MEASUREMENT_TABLES, measurement_context, measurement_tables
from .physical import (PHYSICAL_TABLES, PhysicalTables, physical_context, physical_section,
                       physical_section_from_tables, read_physical_tables, table_target)
from .published import (load_published, published_comparison, published_comparison_context,
                        published_comparison_section)
from .answer import (SENSITIVITY_TABLE, answer_context, engine_loop, headline_values, held_out,
                     key_figure, read_optional, sensitivity_context)
from .render import (APPENDIX_NAME, TEMPLATE_CONSTANTS, TEMPLATE_DIR, AppendixTable,
                     collecting_appendix, environment, number_appendix, render_section)
from .verdicts import conclusion_input
from .seed import (analysis_context, analysis_section, dataset_note, dataset_note_context,
                   header_context, per_experiment_context, per_experiment_section, phase_section,
                   phases_context, pure_phase_context, pure_phase_section, setup_context,
                   setup_section, summary_context, summary_section, verdict_context,
                   verdict_section)

if TYPE_CHECKING:
    from ..core.artefacts import RunDirs

#: The sections of findings.md.j2 and the functions computing their contexts.
SECTION_CONTEXTS: dict[str, Callable[[FindingsInput], dict[str, Any] | None]] = {
    "answer": answer_context, "header": header_context, "summary": summary_context,
    "measurement": measurement_context, "sensitivity": sensitivity_context,
    "setup": setup_context,
    "phases": phases_context, "pure_phase": pure_phase_context,
    "per_experiment": per_experiment_context, "analysis": analysis_context,
    "verdict": verdict_context, "conclusion": conclusion_input}


def findings_context(fi: FindingsInput) -> dict[str, Any]:
    """The context of findings.md.j2: each section's context under its name, and the
    extra (pre-rendered) sections that go before the Verdict."""
    return {**{name: fn(fi) for name, fn in SECTION_CONTEXTS.items()},
            "extra_sections": fi.extra_sections}


def findings_markdown(fi: FindingsInput) -> str:
    """The whole document, every table in place (no appendix)."""
    return environment().get_template("findings.md.j2").render(findings_context(fi))


def findings_documents(dirs: "RunDirs", hardware: str = DEFAULT_HARDWARE) -> tuple[str, str]:
    """FINDINGS.md and APPENDIX.md of a run: :func:`collect` and the document rendered with
    the per-experiment and per-coefficient tables (those a template passes through
    ``| appendix``) moved to the appendix, each linked from where it stood."""
    with collecting_appendix() as collected:
        fi = collect(dirs, hardware)
        text = findings_markdown(fi)
    main, tables = number_appendix(text, collected)
    appendix = environment().get_template("appendix.md.j2").render(
        tables=tables, data_root=fi.data_root, findings=dirs.findings.name)
    return main, appendix


def write_findings(dirs: "RunDirs", hardware: str = DEFAULT_HARDWARE) -> tuple[int, int]:
    """Write OUT/FINDINGS.md and OUT/APPENDIX.md; their line counts."""
    main, appendix = findings_documents(dirs, hardware)
    dirs.findings.write_text(main)
    (dirs.out / APPENDIX_NAME).write_text(appendix)
    return len(main.splitlines()), len(appendix.splitlines())


def models_by_hf_id(steps: pd.DataFrame) -> dict[str, list[str]]:
    pairs = steps[["hf_id", "model"]].drop_duplicates()
    return {h: sorted(g["model"]) for h, g in pairs.groupby("hf_id")}


def collect(dirs: "RunDirs", hardware: str = DEFAULT_HARDWARE) -> FindingsInput:
    """Read the artefacts of notebooks 01–05 from a run directory into a FindingsInput.

    When the physical tables (``PHYSICAL_TABLES``; at least physical_pure_phase_correlations
    and physical_per_experiment_correlations) are in dirs.tables, their physical_section is
    appended to ``extra_sections`` and the conclusion's tables are filled in; without them the
    result is the seed-only one. "A Step-Time Model for Simulators" (report.stepmodel) is
    appended when notebook 07_model has written its tables. The MoE subsection reads moe_gemm_check and moe_delta_r, which notebook 04
    writes (moefit.moe_check_tables) when the run has an MoE model; the report computes nothing."""
    from ..core import artefacts as outputs
    from ..hw.specs import load_gpu_spec, load_model_specs
    from ..stats.correlation import hypothesis_verdict

    steps = outputs.read_steps(dirs)
    meta = outputs.read_dataset_meta(dirs)
    pure = outputs.read_table(dirs, "pure_phase_correlations", "04_correlation")
    verdict = hypothesis_verdict(pure)
    by_hf_id = models_by_hf_id(steps)
    target = table_target(dirs)
    tables = read_physical_tables(dirs, target)
    extra = []
    specs = load_model_specs(steps["hf_id"])
    gpu = load_gpu_spec(hardware)
    if tables is not None:
        extra.append(physical_section(tables, verdict, pure, target, by_hf_id,
                                      data_kind(meta["data_root"])))
    fi = FindingsInput(
        data_root=meta["data_root"], experiments=meta["experiments"],
        skipped=[tuple(s) for s in meta["skipped"]], parse_report=outputs.read_parse_report(dirs),
        breakdown=outputs.read_table(dirs, "phase_breakdown", "03_phases"), pure=pure,
        per_experiment=outputs.read_table(dirs, "per_experiment_correlations", "04_correlation"),
        verdict=verdict, gpu=gpu, specs=specs, models_by_hf_id=by_hf_id,
        extra_sections=extra, skipped_records=outputs.read_skipped_records(dirs),
        measurement=measurement_tables(dirs),
        physical_pure=None if tables is None else tables.pure,
        within=None if tables is None else tables.within, physical_target=target)
    from ..run.stepmodel_tables import HELD_OUT
    from .stepmodel import _read as read_stepmodel, stepmodel_na_reason, stepmodel_section

    coverage = t["target_coverage"] if (t := fi.measurement) is not None else None
    fi.headlines = headline_values(dirs)
    fi.engine_loop = engine_loop(coverage)
    stepmodel_tables = read_stepmodel(dirs)
    fi.held_out_errors = held_out(None if stepmodel_tables is None
                                  else stepmodel_tables[HELD_OUT])
    fi.stepmodel_na = stepmodel_na_reason(stepmodel_tables)
    fi.sensitivity = read_optional(dirs, SENSITIVITY_TABLE)
    fi.key_figure = key_figure(dirs)
    # notebook 07's section, when it has run; the Answer shows the step model's figure as its key figure: the section does not repeat it
    step_model = stepmodel_section(dirs, data_kind(meta["data_root"]) == "bundled",
                                   show_figure=fi.key_figure is None)
    if step_model is not None:
        fi.extra_sections.append(step_model)
    if meta["data_root"] == display_path(RAW_DIR):
        from ..run.validate import client_comparison

        fi.extra_sections.append(published_comparison_section(fi, load_published(),
                                                              client_comparison(RAW_DIR)))
    return fi


__all__ = ["FindingsInput", "collect", "findings_markdown", "findings_context", "dataset_note",
           "findings_documents", "write_findings", "APPENDIX_NAME", "AppendixTable",
           "SECTION_CONTEXTS", "TEMPLATE_CONSTANTS", "TEMPLATE_DIR", "environment",
           "render_section", "markdown_table", "FORMATTERS", "MEASUREMENT_TABLES",
           "PHYSICAL_TABLES", "physical_section", "physical_section_from_tables",
           "physical_context", "measurement_context", "published_comparison_section",
           "models_by_hf_id", "PhysicalTables", "read_physical_tables", "model_names"]
