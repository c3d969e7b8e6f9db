"""The report's Jinja environment and the thresholds its text states.

The wording lives in Jinja templates (``stepdecomp/templates/``: ``findings.md.j2`` lists the
sections in reading order, one ``_<name>.md.j2`` partial per section). :func:`render_section`
fills a partial with a context dict (read as ``s``). Thresholds the text mentions are passed to
every template from the constants where they are defined (:data:`TEMPLATE_CONSTANTS`); the
templates never spell them out.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any, Callable, Mapping

import jinja2

from .. import columns
from ..stats import (HYPOTHESIS_MIN_PASSING, MIN_ROWS, PREFILL_DOMINATED_SHARE, R_THRESHOLD,
                     WITHIN_MIN_EXPERIMENTS)
from .format import FORMATTERS, isnan, markdown_table

#: The templates, packaged with stepdecomp (pyproject's package-data: templates/*.j2).
TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"

# --------------------------------------------------------------------------- thresholds

#: The seed's step time (schedule() CPU time on the instrumented server).
DURATION_TARGET = columns.DURATION
#: The per-file accounting shown in Setup: lines = parsed + blank + malformed + ignored;
#: events = steps + journey events + rejected (load.ParseStats).
PARSE_COLUMNS = ["experiment_id", "lines", "parsed_lines", "blank_lines", "malformed_lines",
                 "ignored_lines", "events", "steps", "journey_events", "rejected_events"]

#: A lower-bound violation on at least this fraction of an experiment's steps is material:
#: its durations as a whole cannot be read as GPU execution time.
LOWER_BOUND_MATERIAL = 0.01
#: Pure-prefill steps below this share (%) are "rare" in the phase breakdown.
RARE_PREFILL_PCT = 5
#: Pure-prefill steps below this share (%) count as "almost absent" beside the published study.
ABSENT_PREFILL_PCT = 1
#: Pure-decode shares closer than this (percentage points) agree with the published study.
SHARE_AGREE_POINTS = 10
#: Correlations closer than this agree with the published study.
R_AGREE = 0.15
#: A change of r smaller than this (either way) is "about the same".
DELTA_R_NEGLIGIBLE = 0.02
#: Per-model median Δr spread from which the change is said to depend on the model.
MODEL_SPREAD = 0.05
#: Median |Spearman − Pearson| from which the two are said to tell different stories.
RANK_GAP = 0.1

#: The constants every template sees by name (the text's thresholds come only from here).
TEMPLATE_CONSTANTS: dict[str, float] = {
    "R_THRESHOLD": R_THRESHOLD, "HYPOTHESIS_MIN_PASSING": HYPOTHESIS_MIN_PASSING,
    "MIN_ROWS": MIN_ROWS, "PREFILL_DOMINATED_SHARE": PREFILL_DOMINATED_SHARE,
    "LOWER_BOUND_MATERIAL": LOWER_BOUND_MATERIAL, "WITHIN_MIN_EXPERIMENTS": WITHIN_MIN_EXPERIMENTS}


# --------------------------------------------------------------------------- templates

def _collapse(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text).strip()


def _oneline(text: str) -> str:
    """``{{ x | oneline }}``: the lines of x joined by single spaces."""
    return _collapse(text)


def _para(text: str) -> str:
    """``{% filter para %}``: the block's lines joined into one output line (a paragraph)."""
    return _collapse(text) + "\n"


def _numbered(text: str) -> str:
    """``{% filter numbered %}``: blank-line separated items as a numbered list (empty items,
    e.g. of a false condition, are dropped)."""
    items = [p for p in (_collapse(b) for b in re.split(r"\n\s*\n", text)) if p]
    return "".join(f"{i}. {p}\n" for i, p in enumerate(items, start=1))


def _labels(mapping: Mapping[Any, str]) -> Callable[[Any], str]:
    """``{"col": names | labels}``: a markdown_table format that shows a value's label."""
    return lambda v: str(mapping.get(v, v))


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters.update(FORMATTERS, markdown_table=markdown_table, para=_para,
                       numbered=_numbered, labels=_labels,
                       oneline=_oneline)
    env.tests["na"] = isnan
    env.globals.update(FORMATTERS, **TEMPLATE_CONSTANTS, section=render_section)
    return env


def render_section(name: str, context: Mapping[str, Any]) -> str:
    """The partial ``_<name>.md.j2`` filled with ``context`` (as ``s``), without its final
    newline: sections are joined by blank lines."""
    text = environment().get_template(f"_{name}.md.j2").render(s=context)
    return text.removesuffix("\n")
