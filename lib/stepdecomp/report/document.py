"""What FINDINGS.md must be for its reader, checked on the written documents (the tests run
it on the fixture's report and on the committed bundled one):

- the word *generated* within its first ``GENERATED_WITHIN_LINES`` lines when the data is the
  bundled replay;
- an "## Answer" section before any table;
- at most ``MAIN_TEXT_MAX_LINES`` lines;
- every table of APPENDIX.md linked from it (``APPENDIX.md#<anchor>`` of the table's
  heading), and every such link pointing at a table that is there.
"""

from __future__ import annotations

import re

from .render import APPENDIX_NAME, heading_anchor

MAIN_TEXT_MAX_LINES = 250
GENERATED_WITHIN_LINES = 15
ANSWER_HEADING = "## Answer"
#: An appendix table's heading (report.render.AppendixTable.heading).
_APPENDIX_HEADING = re.compile(r"^### (Table A\d+: .+)$", re.MULTILINE)
_APPENDIX_LINK = re.compile(re.escape(APPENDIX_NAME) + r"#([^)\s]+)\)")
_TABLE_ROW = re.compile(r"^\|.*\|\s*$")


def document_problems(main: str, appendix: str | None, generated: bool) -> list[str]:
    """Every way ``main`` (FINDINGS.md) and ``appendix`` (APPENDIX.md, None when absent) fall
    short of the module's rules; empty when they meet them."""
    lines = main.splitlines()
    problems = []
    if generated and not any("generated" in line.lower() for line in lines[:GENERATED_WITHIN_LINES]):
        problems.append(f"the data is the bundled replay but 'generated' is not in the first "
                        f"{GENERATED_WITHIN_LINES} lines")
    answer = next((i for i, line in enumerate(lines) if line.rstrip() == ANSWER_HEADING), None)
    first_table = next((i for i, line in enumerate(lines) if _TABLE_ROW.match(line)), None)
    if answer is None:
        problems.append(f"no '{ANSWER_HEADING}' section")
    elif first_table is not None and first_table < answer:
        problems.append(f"a table (line {first_table + 1}) comes before the Answer "
                        f"(line {answer + 1})")
    if len(lines) > MAIN_TEXT_MAX_LINES:
        problems.append(f"{len(lines)} lines, more than {MAIN_TEXT_MAX_LINES}")
    linked = set(_APPENDIX_LINK.findall(main))
    anchors = {heading_anchor(h) for h in _APPENDIX_HEADING.findall(appendix or "")}
    problems += [f"appendix table '{a}' is not linked from the main text"
                 for a in sorted(anchors - linked)]
    problems += [f"the main text links {APPENDIX_NAME}#{a}, which is not there"
                 for a in sorted(linked - anchors)]
    return problems
