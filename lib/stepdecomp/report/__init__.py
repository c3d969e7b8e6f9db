"""FINDINGS.md: the seed study's sections and the physical mode, filled from the computed tables.

The report only reads tables: every number in FINDINGS comes from a table under OUT/tables/
that a notebook (or ``make sensitivity`` / ``make stepmodel-check``) wrote — the verdicts, the
attribution's summary and the comparison with the published study included (core.tables
names them and their writers) — so a directory of tables renders the same FINDINGS without
the data root. The report selects, sorts and counts rows and formats them; the medians and
totals its sentences quote come from summary tables the notebooks write beside their sources
(stats.summary, targets.truthcheck.truth_summary, run.validate.client_comparison_summary).
Those it still takes itself are listed, each with why, in
tests/report/test_report_computes_no_number.py. It fits no model and decides no verdict. What the text states beyond the tables comes from core (thresholds, the names of
table values) and hw (the GPU and model specs of Setup).

The wording lives in Jinja templates (``stepdecomp/templates/``: ``findings.md.j2`` lists the
sections in reading order, one ``_<name>.md.j2`` partial per section). This package only
turns tables into what they show, one module per part of the document:

- :mod:`.format`: the ``fmt_*`` formatters and :func:`markdown_table`;
- :mod:`.render`: the template environment, :func:`render_section` and the thresholds the text
  states (:data:`TEMPLATE_CONSTANTS`; the templates never spell them out);
- :mod:`.seed`: the seed's sections; :mod:`.measurement`: "What the Traces Measure";
  :mod:`.physical`: "Beyond the Seed: Physical Mode" (with :mod:`.attribution`: the
  component attribution and the MoE check); :mod:`.verdicts`: the within-experiment verdict
  and the Conclusion; :mod:`.published`: the generated data beside the published study;
  :mod:`.answer`: the Answer and the sensitivity; :mod:`.stepmodel`: the step-time model;
  :mod:`.inputs`: :class:`FindingsInput` and reading a run's tables;
- this module: :func:`collect` (the run's tables → :class:`FindingsInput`) and
  :func:`findings_markdown` (the whole document).

Each ``<name>_context`` function turns tables into a plain dict (numbers, rows, tables and
the categories the sentences branch on). Adding a section: write ``templates/_<name>.md.j2``
(it reads its context as ``s``), write ``<name>_context(fi) -> dict`` in the module of its
part, register it in :data:`SECTION_CONTEXTS` and put ``{{ section("<name>", <name>) }}``
where it belongs in ``findings.md.j2``.

Imports: core, hw.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from ..core import tables as names
from ..core.columns import DURATION
from ..core.params import DEFAULT_HARDWARE
from ..core.paths import BUNDLED
from ..core.verdicts import SEED
from .format import (FORMATTERS, fmt_ci, fmt_delta, fmt_frac, fmt_int, fmt_num, fmt_pct, fmt_r,
                     fmt_r3, fmt_share, fmt_us, markdown_table)
from .inputs import FindingsInput, model_names, read_table, read_verdicts  # noqa: F401 (re-exported)
from .measurement import MEASUREMENT_TABLES, measurement_context, measurement_tables
from .physical import (PHYSICAL_TABLES, PhysicalTables, physical_context, physical_section,
                       physical_section_from_tables, read_physical_tables, table_target)
from .published import (published_comparison_context, published_comparison_section,
                        published_section_from_tables)
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


def models_by_hf_id(experiments: pd.DataFrame) -> dict[str, list[str]]:
    """Each HF id → the model slugs of the experiments that load it (the table
    ``experiments``: hf_id, model; or the steps)."""
    pairs = experiments[["hf_id", "model"]].drop_duplicates()
    return {h: sorted(g["model"]) for h, g in pairs.groupby("hf_id")}


def with_steps(experiments: pd.DataFrame) -> pd.DataFrame:
    """The experiments of the table ``experiments`` that have steps (those the statistics
    and the Setup's model table describe)."""
    return experiments[experiments["steps"].fillna(0) > 0]


def collect(dirs: "RunDirs", hardware: str = DEFAULT_HARDWARE) -> FindingsInput:
    """Read the tables of a run directory (dirs.tables; nothing under the data root, nothing
    under OUT/interim) into a FindingsInput.

    When the physical tables (``PHYSICAL_TABLES``; at least physical_pure_phase_correlations
    and physical_per_experiment_correlations) are in dirs.tables, their physical_section is
    appended to ``extra_sections`` and the conclusion's tables are filled in; without them the
    result is the seed-only one. "A Step-Time Model for Simulators" (report.stepmodel) is
    appended when notebook 07_model has written its tables, "Generated Data vs the Published
    Study" (report.published) when notebook 04 has written the comparison (on the bundled
    replay). The verdicts come from the verdict tables of notebook 04; a table a section needs
    and does not find is an error naming it and the notebook that writes it."""
    from ..core import artefacts
    from ..hw.specs import load_gpu_spec, load_model_specs

    dataset = read_table(dirs, names.DATASET).iloc[0]
    data_root, kind = str(dataset["data_root"]), str(dataset["data_kind"])
    experiments = read_table(dirs, names.EXPERIMENTS)
    skipped = read_table(dirs, names.SKIPPED_DIRECTORIES, keep_default_na=False)
    pure = read_table(dirs, names.PURE_PHASE)
    verdicts = read_verdicts(dirs)
    if (SEED, DURATION, "pure_prefill") not in verdicts:
        raise KeyError(f"{names.VERDICTS_POOLED} has no seed verdict "
                       f"({names.writer(names.VERDICTS_POOLED)} writes it)")
    verdict = verdicts[(SEED, DURATION, "pure_prefill")]
    used = with_steps(experiments)
    by_hf_id = models_by_hf_id(used)
    target = table_target(dirs)
    tables = read_physical_tables(dirs, target, verdicts)
    extra = []
    specs = load_model_specs(used["hf_id"])
    gpu = load_gpu_spec(hardware)
    if tables is not None:
        extra.append(physical_section(tables, verdict, pure, target, by_hf_id, kind))
    fi = FindingsInput(
        data_root=data_root, experiments=[str(e) for e in experiments["experiment_id"]],
        skipped=[(str(d), str(r)) for d, r in zip(skipped["directory"], skipped["reason"])],
        parse_report=artefacts.read_parse_report(dirs),
        breakdown=read_table(dirs, names.PHASE_BREAKDOWN), pure=pure,
        per_experiment=read_table(dirs, names.PER_EXPERIMENT),
        verdict=verdict, gpu=gpu, specs=specs, models_by_hf_id=by_hf_id,
        extra_sections=extra, skipped_records=artefacts.read_skipped_records(dirs),
        measurement=measurement_tables(dirs),
        physical_pure=None if tables is None else tables.pure,
        within=None if tables is None else tables.within, physical_target=target,
        data_kind=kind, verdicts=verdicts)
    from .stepmodel import _read as read_stepmodel, stepmodel_na_reason, stepmodel_section

    loops = t[names.ENGINE_LOOP_SUMMARY] if (t := fi.measurement) is not None else None
    fi.headlines = headline_values(dirs)
    fi.engine_loop = engine_loop(loops)
    fi.seed_r = read_table(dirs, names.SEED_R_SUMMARY)
    fi.parse_totals = read_table(dirs, names.PARSE_TOTALS)
    stepmodel_tables = read_stepmodel(dirs)
    fi.held_out_errors = held_out(None if stepmodel_tables is None
                                  else stepmodel_tables[names.STEPMODEL_HELD_OUT])
    fi.stepmodel_na = stepmodel_na_reason(stepmodel_tables)
    fi.sensitivity = read_optional(dirs, SENSITIVITY_TABLE, kind == BUNDLED)
    fi.key_figure = key_figure(dirs)
    # notebook 07's section, when it has run; the Answer shows the step model's figure as its key figure: the section does not repeat it
    step_model = stepmodel_section(dirs, kind == BUNDLED, show_figure=fi.key_figure is None)
    if step_model is not None:
        fi.extra_sections.append(step_model)
    published = published_section_from_tables(dirs)
    if published is not None:
        fi.extra_sections.append(published)
    return fi


__all__ = ["FindingsInput", "collect", "findings_markdown", "findings_context", "dataset_note",
           "findings_documents", "write_findings", "APPENDIX_NAME", "AppendixTable", "with_steps",
           "SECTION_CONTEXTS", "TEMPLATE_CONSTANTS", "TEMPLATE_DIR", "environment",
           "render_section", "markdown_table", "FORMATTERS", "MEASUREMENT_TABLES",
           "PHYSICAL_TABLES", "physical_section", "physical_section_from_tables",
           "physical_context", "measurement_context", "published_comparison_section",
           "models_by_hf_id", "PhysicalTables", "read_physical_tables", "model_names"]
