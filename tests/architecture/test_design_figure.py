"""docs/design.md draws the library's tree and data flow in one figure; it must name every
subpackage and every module of the real package, and nothing that is not there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import stepdecomp
from stepdecomp.core.paths import PROJECT_ROOT

PACKAGE = Path(stepdecomp.__file__).parent
DESIGN = PROJECT_ROOT / "docs" / "design.md"
HEADING = "## The library: its tree is the data flow"
#: A subpackage line: ``name/`` at the start, then its modules up to an annotation.
PACKAGE_LINE = re.compile(r"^([a-z_]+)/ +([a-z_ ]+?)\s*(?:──▶.*|\(.*\))?$")
#: A continuation of the modules of the line above: indented words only.
CONTINUATION = re.compile(r"^ {8,}([a-z_][a-z_ ]*?)\s*(?:──▶.*|\(.*\))?$")
#: Other subpackages drawn on the same line (``hw/`` beside ``traces/``).
SIDE = re.compile(r" {2,}([a-z_]+)/ +([a-z_ ]+?)\s*$")


def figure(text: str) -> str:
    """The first fenced block after the figure's heading (a ValueError if either is missing)."""
    if HEADING not in text:
        raise ValueError(f"docs/design.md has no heading {HEADING!r}")
    m = re.search(r"```\n(.*?)```", text[text.index(HEADING):], re.S)
    if m is None:
        raise ValueError("docs/design.md: no figure (fenced block) after the heading")
    return m.group(1)


def drawn(block: str) -> dict[str, set[str]]:
    """Subpackage → the modules the figure lists for it."""
    out: dict[str, set[str]] = {}
    current = None
    for line in block.splitlines():
        if (m := PACKAGE_LINE.match(line)) is None and (s := SIDE.search(line)) is not None:
            main, _, _ = line.partition(s.group(0))
            m = PACKAGE_LINE.match(main.rstrip())
            out.setdefault(s.group(1), set()).update(s.group(2).split())
        if m is not None:
            current = m.group(1)
            out.setdefault(current, set()).update(m.group(2).split())
        elif current is not None and (c := CONTINUATION.match(line)) and not any(
                ch in line for ch in "│▼"):
            out[current].update(c.group(1).split())
        else:
            current = None
    return out


def real(pkg: Path) -> dict[str, set[str]]:
    return {p.parent.name: {m.stem for m in p.parent.glob("*.py")
                            if m.stem not in ("__init__", "__main__")}
            for p in pkg.glob("*/__init__.py")}


def test_the_figure_names_every_subpackage_and_module_and_no_other():
    assert drawn(figure(DESIGN.read_text())) == real(PACKAGE)


def test_the_parser_reads_a_small_figure():
    block = ("  data\n"
             "traces/   otlp load                        hw/   specs kernels\n"
             "          experiments\n"
             "          │ steps\n"
             "          ▼\n"
             "report/   answer render      ──▶ FINDINGS.md\n"
             "core/     paths params       (under everything)\n")
    assert drawn(block) == {"traces": {"otlp", "load", "experiments"},
                            "hw": {"specs", "kernels"}, "report": {"answer", "render"},
                            "core": {"paths", "params"}}


def test_a_module_missing_from_the_figure_is_named():
    block = figure(DESIGN.read_text()).replace(" kernels", "")
    diff = {k: real(PACKAGE)[k] - v for k, v in drawn(block).items() if real(PACKAGE)[k] - v}
    assert diff == {"hw": {"kernels"}}


def test_a_subpackage_missing_from_the_figure_is_seen():
    block = "\n".join(line for line in figure(DESIGN.read_text()).splitlines()
                      if not line.startswith("site/"))
    assert set(real(PACKAGE)) - set(drawn(block)) == {"site"}


def test_a_page_without_the_figure_is_refused():
    with pytest.raises(ValueError, match="no heading"):
        figure("# Design\n")
    with pytest.raises(ValueError, match="no figure"):
        figure(HEADING + "\n\nno block here\n")
