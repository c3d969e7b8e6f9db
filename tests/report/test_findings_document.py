"""FINDINGS.md for its reader (report.document): the rules fail on documents that break
them, and hold on the fixture's report (test_report_stepmodel's end-to-end run) and on the
committed report of the bundled data."""

from __future__ import annotations

import pandas as pd
import pytest

from stepdecomp.core.paths import REPORTS_DIR
from stepdecomp.report import document
from stepdecomp.report.render import AppendixTable

TABLE = "| a | b |\n|---|---|\n| 1 | 2 |"
A1 = AppendixTable(1, "Per experiment", TABLE)
APPENDIX = f"# Appendix\n\n### {A1.heading}\n\n{TABLE}\n"


def _main(*, generated_line: int = 3, lines: int = 40, link: bool = True,
          table_first: bool = False) -> str:
    body = ["# Title", "", "## Answer", ""]
    if table_first:
        body = ["# Title", "", TABLE, "", "## Answer", ""]
    body += ["filler"] * max(0, lines - len(body) - 2)
    body.insert(generated_line, "*The traces analysed here are **generated**.*")
    body.append(A1.link if link else "no link")
    return "\n".join(body) + "\n"


def test_a_document_that_meets_the_rules_has_no_problem() -> None:
    assert A1.anchor == "table-a1-per-experiment"
    assert document.document_problems(_main(), APPENDIX, generated=True) == []


def test_generated_must_come_within_the_first_lines_on_the_replay() -> None:
    late = _main(generated_line=20)
    assert document.document_problems(late, APPENDIX, generated=True) == [
        "the data is the bundled replay but 'generated' is not in the first 15 lines"]
    assert document.document_problems(late, APPENDIX, generated=False) == []


def test_the_answer_comes_before_any_table() -> None:
    problems = document.document_problems(_main(table_first=True), APPENDIX, generated=False)
    assert problems == ["a table (line 3) comes before the Answer (line 8)"]
    no_answer = _main().replace("## Answer", "## Summary")
    assert document.document_problems(no_answer, APPENDIX, generated=False) == [
        "no '## Answer' section"]


def test_main_text_length_and_appendix_links() -> None:
    assert document.document_problems(_main(lines=252), APPENDIX, generated=False) == [
        "252 lines, more than 250"]
    assert document.document_problems(_main(link=False), APPENDIX, generated=False) == [
        "appendix table 'table-a1-per-experiment' is not linked from the main text"]
    assert document.document_problems(_main(), None, generated=False) == [
        "the main text links APPENDIX.md#table-a1-per-experiment, which is not there"]


def test_the_committed_report_of_the_bundled_data_meets_the_rules() -> None:
    findings, appendix = REPORTS_DIR / "FINDINGS.md", REPORTS_DIR / "APPENDIX.md"
    if not appendix.is_file():
        pytest.skip("reports/ predates APPENDIX.md (regenerate with make report)")
    main = findings.read_text()
    assert "from `data/raw`" in main                        # the bundled replay
    assert document.document_problems(main, appendix.read_text(), generated=True) == []


def test_appendix_tables_are_numbered_in_the_order_of_their_links() -> None:
    from stepdecomp.report.render import collecting_appendix, environment, number_appendix

    tpl = environment().from_string("{{ 'T1' | appendix('first') }} / {{ 'T2' | appendix('second') }}")
    assert tpl.render() == "T1 / T2"                      # no appendix collected: in place
    with collecting_appendix() as collected:
        later = tpl.render()
        earlier = environment().from_string("{{ 'T0' | appendix('zeroth') }}").render()
    text, tables = number_appendix(f"{earlier}\n{later}", collected)
    assert [(t.number, t.title, t.table) for t in tables] == [
        (1, "zeroth", "T0"), (2, "first", "T1"), (3, "second", "T2")]
    assert text.splitlines()[0] == ("→ [Table A1: zeroth](APPENDIX.md#table-a1-zeroth) "
                                    "(in the appendix)")
    assert "\x00" not in text


def test_sensitivity_section_reads_the_table() -> None:
    from stepdecomp.report import render_section, sensitivity_context
    from stepdecomp.report.inputs import FindingsInput

    t = pd.DataFrame({"headline": ["a", "b"], "claim": ["claim a", "claim b"],
                      "reference": [0.9, 1.3], "holds_on_reference": [True, True],
                      "seed_min": [0.88, 1.2], "seed_max": [0.91, 1.4], "seed_sd": [0.01, 0.1],
                      "holds_seed_draws": [3, 3], "seed_draws": [3, 3],
                      "kernels_min": [0.7, 1.1], "kernels_max": [0.95, 1.5],
                      "holds_kernel_draws": [2, 5], "kernel_draws": [5, 5]})
    fi = FindingsInput.__new__(FindingsInput)
    fi.sensitivity = t
    ctx = sensitivity_context(fi)
    assert (ctx["n_kernel_draws"], ctx["n_seed_draws"], ctx["all_hold"]) == (5, 3, False)
    assert ctx["fragile"] == ["claim a"]
    text = render_section("sensitivity", ctx)
    assert "Not robust to the kernel costs: claim a." in text
    assert "| claim a | 0.9 | 0.88 | 0.91 | 0.01 | 3 | 3 | 0.7 | 0.95 | 2 | 5 |" in text
    fi.sensitivity = None
    assert sensitivity_context(fi) is None
