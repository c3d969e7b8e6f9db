"""What notebook 04 writes for FINDINGS beside hand-made statistics tables: the verdicts
(core.verdicts) and the attribution's summaries, computed by the library functions the
notebook calls and read back through CSV, as the report reads them. The report tests build
their inputs with these, so a test that changes a statistics table sees the verdicts and
summaries of the changed table."""

from __future__ import annotations

import dataclasses
import io

import pandas as pd

from stepdecomp import report
from stepdecomp.core.artefacts import FLOAT_FORMAT
from stepdecomp.core.paths import data_kind
from stepdecomp.core.verdicts import PHYSICAL, WITHIN, read_verdicts, verdict_rows, verdict_table
from stepdecomp.stats import attribution, correlation, moecheck, per_target, summary

#: The target of one target's hand-made tables (they carry no ``target`` column).
TARGET = "step_forward_us"
PREFILL_SUBSETS = ("pure_prefill", "prefill_dominated")


def through_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as a reader of its CSV sees it (written as artefacts.write_table writes)."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False, na_rep="", float_format=FLOAT_FORMAT)
    buf.seek(0)
    return pd.read_csv(buf)


def physical_verdicts(pure: pd.DataFrame, within: pd.DataFrame | None = None
                      ) -> dict[tuple[str, str], object]:
    """The physical verdicts of one target's pooled table and, with its within-experiment
    table, the within-experiment ones, by (kind, prefill subset), read back from a verdict
    table."""
    rows = [verdict_rows(correlation.physical_verdict(pure, p), PHYSICAL, TARGET, p)
            for p in PREFILL_SUBSETS]
    if within is not None and not within.empty:
        rows += [verdict_rows(correlation.within_experiment_verdict(within, p), WITHIN, TARGET, p)
                 for p in PREFILL_SUBSETS]
    read = read_verdicts(through_csv(verdict_table(rows)))
    return {(kind, p): v for (kind, _, p), v in read.items()}


def per_experiment_summary(per: pd.DataFrame) -> pd.DataFrame:
    """The medians notebook 02 writes of one target's per-experiment table
    (stats.summary.physical_per_experiment_summary), read back, without the target."""
    table = summary.physical_per_experiment_summary(per.assign(target=TARGET))
    return through_csv(table).drop(columns="target")


def moe_summary(check: pd.DataFrame, delta: pd.DataFrame | None) -> pd.DataFrame:
    """The summary notebook 04 writes of one target's MoE check (stats.moecheck.moe_summary),
    read back, without the target."""
    delta = (pd.DataFrame({"hf_id": [], "delta_r": []}) if delta is None else delta)
    table = moecheck.moe_summary(check, delta.assign(target=TARGET), TARGET)
    return through_csv(table).drop(columns="target")


def with_notebook04(t: report.PhysicalTables) -> report.PhysicalTables:
    """``t`` with what notebook 04 writes beside its tables: the verdicts and the summaries
    of the attribution (component and grouped) it has."""
    extra: dict[str, object] = {"verdicts": physical_verdicts(t.pure, t.within)}
    if t.per_summary is None:
        extra["per_summary"] = per_experiment_summary(t.per_experiment)
    if t.lower_bound is not None and t.lb_summary is None:
        extra["lb_summary"] = through_csv(summary.lower_bound_summary(
            t.lower_bound.assign(target=TARGET))).drop(columns="target")
    if t.reconstruction is not None and t.rec_summary is None:
        extra["rec_summary"] = through_csv(summary.reconstruction_summary(t.reconstruction))
    if t.moe_check is not None and not t.moe_check.empty and t.moe_summary is None:
        extra["moe_summary"] = moe_summary(t.moe_check, t.moe_delta)
    if t.attribution is not None and t.fit_summary is not None:
        extra["attribution_summary"] = through_csv(
            attribution.attribution_summary(t.attribution, t.fit_summary))
        extra["term_summary"] = through_csv(
            attribution.attribution_term_summary(t.attribution, t.fit_summary))
        extra["share_sums"] = through_csv(attribution.share_sums(t.attribution, t.fit_summary))
    if t.attribution_by_model is not None and t.by_model_experiments is None:
        extra["by_model_experiments"] = through_csv(
            attribution.by_model_experiments(t.attribution_by_model))
    if t.groups is not None and not t.groups.empty:
        extra["group_summary"] = through_csv(attribution.group_summary(t.groups))
        extra["pair_summary"] = through_csv(attribution.group_pair_summary(t.groups))
    return dataclasses.replace(t, **extra)


def physical_section(t: report.PhysicalTables, *args: object, **kwargs: object) -> str:
    """report.physical_section of ``t`` with the verdicts and summaries of its tables."""
    return report.physical_section(with_notebook04(t), *args, **kwargs)


def physical_context(t: report.PhysicalTables, *args: object, **kwargs: object) -> dict:
    return report.physical_context(with_notebook04(t), *args, **kwargs)


def attribution_context(attr: pd.DataFrame, fit: pd.DataFrame) -> dict:
    """report.attribution.attribution_context with the summaries notebook 04 writes."""
    return report.attribution.attribution_context(
        attr, fit, through_csv(attribution.attribution_summary(attr, fit)),
        through_csv(attribution.attribution_term_summary(attr, fit)),
        through_csv(attribution.share_sums(attr, fit)))


def by_model_context(by_model: pd.DataFrame, models_by_hf_id: dict | None = None) -> dict:
    """report.attribution.by_model_context with the experiments per model notebook 04
    writes."""
    return report.attribution.by_model_context(
        by_model, through_csv(attribution.by_model_experiments(by_model)), models_by_hf_id)


def group_context(table: pd.DataFrame) -> dict:
    """report.attribution.group_context with the summaries notebook 04 writes."""
    return report.attribution.group_context(table, through_csv(attribution.group_summary(table)),
                                            through_csv(attribution.group_pair_summary(table)))


def with_notebook02(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Measurement tables with the summaries notebook 02 (and, with a truth check, notebook
    04) writes of them, where they are not given, read back through CSV."""
    from stepdecomp.core import tables as names
    from stepdecomp.targets import truthcheck

    out = dict(tables)
    if names.TARGET_SUMMARY not in out:
        out[names.TARGET_SUMMARY] = through_csv(summary.target_summary(
            out[names.TARGET_MEDIANS], out[names.LOWER_BOUND], per_target.TARGETS))
    if names.ENGINE_LOOP_SUMMARY not in out:
        out[names.ENGINE_LOOP_SUMMARY] = through_csv(
            summary.engine_loop_summary(out[names.TARGET_COVERAGE]))
    if names.TRUTH_CHECK in out and names.TRUTH_SUMMARY not in out:
        out[names.TRUTH_SUMMARY] = through_csv(truthcheck.truth_summary(out[names.TRUTH_CHECK]))
    return out


def with_verdicts(fi: report.FindingsInput) -> report.FindingsInput:
    """``fi`` with what notebooks 01 and 04 record of its tables: the data kind of its data
    root, the verdicts of its measurement tables (every target) and of its physical tables
    (``physical_target``)."""
    fi.data_kind = data_kind(fi.data_root)
    if fi.seed_r is None:
        fi.seed_r = through_csv(summary.seed_r_summary(fi.per_experiment))
    if fi.parse_totals is None:
        from stepdecomp.traces.load import parse_totals

        fi.parse_totals = through_csv(parse_totals(fi.parse_report))
    verdicts: dict = {}
    m = fi.measurement
    if m is not None:
        fi.measurement = m = with_notebook02(m)
    if m is not None and "physical_pure_phase_correlations" in m:
        verdicts.update(read_verdicts(through_csv(per_target.pooled_verdict_table(
            fi.pure, m["physical_pure_phase_correlations"]))))
        if "within_experiment_verdict" in m:
            verdicts.update(read_verdicts(through_csv(per_target.within_verdict_table(
                m["within_experiment_verdict"]))))
    if fi.physical_pure is not None:
        verdicts.update({(kind, fi.physical_target, p): v for (kind, p), v in
                         physical_verdicts(fi.physical_pure, fi.within).items()})
    fi.verdicts = verdicts
    return fi


def findings_markdown(fi: report.FindingsInput) -> str:
    return report.findings_markdown(with_verdicts(fi))


def measurement_context(fi: report.FindingsInput) -> dict | None:
    return report.measurement_context(with_verdicts(fi))


def write_notebook04(dirs: object, by_target: dict[str | None, report.PhysicalTables]) -> None:
    """Write into ``dirs.tables`` what notebook 04 writes beside each target's physical tables
    (``by_target``; target None: tables without a ``target`` column, whose verdicts are on
    step.duration_us): the verdict tables, the attribution's and the MoE check's summaries,
    and notebook 02's summary of the per-experiment table."""
    from stepdecomp.core import tables as names
    from stepdecomp.core.columns import DURATION

    verdicts: dict[str, list[pd.DataFrame]] = {names.VERDICTS_POOLED: [], names.VERDICTS_WITHIN: []}
    summaries: dict[str, list[pd.DataFrame]] = {}
    for target, t in by_target.items():
        w = with_notebook04(t)
        for (kind, p), v in w.verdicts.items():
            name = names.VERDICTS_POOLED if kind == PHYSICAL else names.VERDICTS_WITHIN
            verdicts[name].append(verdict_rows(v, kind, target or DURATION, p))
        for name, frame in [(names.PHYSICAL_PER_EXPERIMENT_SUMMARY, w.per_summary),
                            (names.MOE_SUMMARY, w.moe_summary),
                            (names.LOWER_BOUND_SUMMARY, w.lb_summary),
                            (names.ATTRIBUTION_SUMMARY, w.attribution_summary),
                            (names.ATTRIBUTION_TERM_SUMMARY, w.term_summary),
                            (names.ATTRIBUTION_SHARE_SUMS, w.share_sums),
                            (names.ATTRIBUTION_MODEL_EXPERIMENTS, w.by_model_experiments),
                            (names.GROUP_SUMMARY, w.group_summary),
                            (names.GROUP_PAIR_SUMMARY, w.pair_summary)]:
            if frame is not None:
                summaries.setdefault(name, []).append(
                    frame if target is None else frame.assign(target=target))
        if w.rec_summary is not None:            # reconstruction_report has no target
            w.rec_summary.to_csv(dirs.tables / f"{names.RECONSTRUCTION_SUMMARY}.csv",
                                 index=False, na_rep="", float_format=FLOAT_FORMAT)
    for name, rows in verdicts.items():
        if rows:
            verdict_table(rows).to_csv(dirs.tables / f"{name}.csv", index=False, na_rep="",
                                       float_format=FLOAT_FORMAT)
    for name, frames in summaries.items():
        pd.concat(frames, ignore_index=True).to_csv(dirs.tables / f"{name}.csv", index=False,
                                                    na_rep="", float_format=FLOAT_FORMAT)
