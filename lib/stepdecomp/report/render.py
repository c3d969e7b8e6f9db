"""The report's Jinja environment and the thresholds its text states.

The wording lives in Jinja templates (``stepdecomp/templates/``: ``findings.md.j2`` lists the
sections in reading order, one ``_<name>.md.j2`` partial per section). :func:`render_section`
fills a partial with a context dict (read as ``s``). Thresholds the text mentions are passed to
every template from the constants where they are defined (:data:`TEMPLATE_CONSTANTS`: those
the statistics apply come from core.thresholds); the templates never spell them out.
"""

from __future__ import annotations

import contextvars
import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import jinja2

from ..core import columns
from ..core.thresholds import (HYPOTHESIS_MIN_PASSING, MIN_ROWS, PREFILL_DOMINATED_SHARE,
                               R_THRESHOLD, WITHIN_MIN_EXPERIMENTS)
from .format import FORMATTERS, isnan, markdown_table

#: The templates, packaged with stepdecomp (pyproject's package-data: templates/*.j2).
TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"

# --------------------------------------------------------------------------- thresholds

#: The seed's step time (schedule() CPU time on the instrumented server).
DURATION_TARGET = columns.DURATION
#: The per-file accounting shown in Setup: lines = parsed + blank + malformed + ignored;
#: events = steps + journey events + rejected (traces.load.ParseStats).
PARSE_COLUMNS = ["experiment_id", "lines", "parsed_lines", "blank_lines", "malformed_lines",
                 "ignored_lines", "events", "steps", "journey_events", "rejected_events"]

#: A lower-bound violation on at least this fraction of an experiment's steps is material:
#: its durations as a whole cannot be read as GPU execution time.
LOWER_BOUND_MATERIAL = 0.01
#: Pure-prefill steps below this share (%) are "rare" in the phase breakdown.
RARE_PREFILL_PCT = 5
#: Pure-prefill steps below this share (%) count as "almost absent" beside the published study.
ABSENT_PREFILL_PCT = 1
#: Phase shares agree with the published study when closer than this (percentage points) and
#: within SHARE_AGREE_FACTOR of each other (a 10.9 % share is not 19.4 %, though 8.5 points).
SHARE_AGREE_POINTS = 10
SHARE_AGREE_FACTOR = 1.25
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


# --------------------------------------------------------------------------- the appendix

#: The appendix beside FINDINGS.md (OUT/APPENDIX.md; a page of the offline site).
APPENDIX_NAME = "APPENDIX.md"


@dataclass(frozen=True)
class AppendixTable:
    """A table moved to the appendix: its number (order of its link in the main text), title
    and markdown."""

    number: int
    title: str
    table: str

    @property
    def heading(self) -> str:
        return f"Table A{self.number}: {self.title}"

    @property
    def anchor(self) -> str:
        return heading_anchor(self.heading)

    @property
    def link(self) -> str:
        return f"→ [{self.heading}]({APPENDIX_NAME}#{self.anchor}) (in the appendix)"


def heading_anchor(text: str) -> str:
    """The anchor of a markdown heading as GitHub forms it (and the offline site, which sets
    the same id): lower case, punctuation other than hyphens and underscores dropped, spaces
    to hyphens."""
    slug = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return slug.replace(" ", "-")


#: A table's place in the text while sections are rendered (sections are rendered before the
#: document, in another order: the numbers follow the finished text).
_PLACEHOLDER = "\x00appendix:{}\x00"
_PLACEHOLDER_RE = re.compile("\x00appendix:(\\d+)\x00")
_APPENDIX: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "appendix", default=None)


@contextmanager
def collecting_appendix() -> Iterator[list[tuple[str, str]]]:
    """While active, tables a template passes through ``| appendix(title)`` are collected
    (title, markdown) and the text gets a placeholder that :func:`number_appendix` turns into
    a link; outside, the filter leaves tables in place (a section rendered on its own shows
    its tables)."""
    tables: list[tuple[str, str]] = []
    token = _APPENDIX.set(tables)
    try:
        yield tables
    finally:
        _APPENDIX.reset(token)


@jinja2.pass_context         # never folded into a constant at compile time: it has state
def _appendix(context: Any, table: str, title: str) -> str:
    """``{{ t | markdown_table(...) | appendix("title") }}``: the table, or (while an appendix
    is collected) a placeholder of the link to it."""
    tables = _APPENDIX.get()
    if tables is None:
        return table
    tables.append((_collapse(title), table.removesuffix("\n")))
    return _PLACEHOLDER.format(len(tables) - 1)


def number_appendix(text: str, collected: list[tuple[str, str]]
                    ) -> tuple[str, list[AppendixTable]]:
    """The text with each placeholder replaced by a link to its table, numbered A1, A2, … in
    the order the links appear; the tables in that order. A table collected but absent from
    the text (a section left out) is dropped."""
    order: list[int] = []

    def link(m: re.Match[str]) -> str:
        order.append(int(m.group(1)))
        title, table = collected[order[-1]]
        return AppendixTable(len(order), title, table).link

    linked = _PLACEHOLDER_RE.sub(link, _join_links(text))
    return linked, [AppendixTable(n, *collected[k]) for n, k in enumerate(order, start=1)]


#: A paragraph that is only a placeholder, after a prose paragraph (not a table, heading,
#: list item or another block) or after another such placeholder.
_LONE_LINK = re.compile("(?m)^([^|#\\n>\\-!][^\\n]*)\\n\\n(\x00appendix:\\d+\x00)$")


def _join_links(text: str) -> str:
    """Each link that stands alone as a paragraph joined to the prose line before it (the
    sentence introducing the table, or the link before): a moved table costs one line."""
    while True:
        joined = _LONE_LINK.sub(r"\1 \2", text)
        if joined == text:
            return joined
        text = joined


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
                       numbered=_numbered, labels=_labels, appendix=_appendix,
                       oneline=_oneline)
    env.tests["na"] = isnan
    env.globals.update(FORMATTERS, **TEMPLATE_CONSTANTS, section=render_section)
    return env


def render_section(name: str, context: Mapping[str, Any]) -> str:
    """The partial ``_<name>.md.j2`` filled with ``context`` (as ``s``), without its final
    newline: sections are joined by blank lines."""
    text = environment().get_template(f"_{name}.md.j2").render(s=context)
    return text.removesuffix("\n")
