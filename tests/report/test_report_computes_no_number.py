"""The report computes no number itself (issue 21): every median, count or extreme FINDINGS
quotes comes from a table a notebook wrote. This parses report/*.py and fails on a call to a
reduction (pandas/numpy/builtin) that is not on the commented allow-list below."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stepdecomp.report

REPORT_DIR = Path(stepdecomp.report.__file__).parent
#: Reductions as methods (``frame["x"].median()``, ``np.median(...)``, ``math.fsum(...)``).
REDUCTION_METHODS = frozenset({
    "median", "mean", "sum", "max", "min", "count", "std", "var", "quantile", "nunique",
    "value_counts", "agg", "aggregate", "size", "idxmax", "idxmin", "prod", "describe",
    "nanmedian", "nanmean", "nansum", "nanmax", "nanmin", "average", "fsum", "percentile"})
#: Reductions as builtins (``sum(...)``, ``max(...)``).
REDUCTION_BUILTINS = frozenset({"sum", "max", "min"})

#: (module, function, reduction) that may stay. Each entry says why.
ALLOWED: dict[tuple[str, str, str], str] = {
    # --- presentation: selecting a row, comparing two given values, counting rows to word a
    # sentence (the brief allows these; the values shown are the table's own cells)
    ("physical.py", "physical_per_experiment_context", "idxmax"): "selects the best row",
    ("physical.py", "physical_per_experiment_context", "idxmin"): "selects the worst row",
    ("physical.py", "journeys_context", "idxmin"): "selects the worst-agreeing row",
    ("seed.py", "summary_context", "idxmax"): "selects the best row",
    ("seed.py", "summary_context", "idxmin"): "selects the worst row",
    ("physical.py", "_count", "sum"): "counts the rows a sentence names (mask.sum)",
    ("attribution.py", "_share", "max"): "clamps one cell at 0 (max(x, 0)), no reduction",
    ("published.py", "shares_agree", "min"): "compares two given shares",
    ("published.py", "shares_agree", "max"): "compares two given shares",
    # --- not yet moved to a table (issue 21, left for a later change): each is a reduction
    # over a table's column that a notebook should write as a summary
    ("answer.py", "sensitivity_context", "max"): "draws per headline (sensitivity)",
    ("measurement.py", "_client_context", "sum"): "published runs with two events per token",
    ("measurement.py", "_client_context", "min"): "TPOT share range (client_summary)",
    ("measurement.py", "_client_context", "max"): "TPOT share range (client_summary)",
    ("measurement.py", "_increments", "max"): "experiments per target (what_explains_increment)",
    ("physical.py", "_subset_n", "max"): "steps of a subset (physical_pure_phase_correlations)",
    ("physical.py", "_per_model_change", "median"): "median Δr per model",
    ("physical.py", "_per_model_change", "max"): "spread of the per-model Δr",
    ("physical.py", "_per_model_change", "min"): "spread of the per-model Δr",
}


def reductions(source: str, module: str = "<string>") -> list[tuple[str, str, str, int]]:
    """(module, enclosing function, reduction, line) of every reduction call in ``source``."""
    found: list[tuple[str, str, str, int]] = []
    scope: list[str] = []

    class Visitor(ast.NodeVisitor):
        def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
            scope.append(node.name)
            self.generic_visit(node)
            scope.pop()

        visit_FunctionDef = visit_AsyncFunctionDef = _function

        def visit_Call(self, node: ast.Call) -> None:
            f = node.func
            name = (f.attr if isinstance(f, ast.Attribute) and f.attr in REDUCTION_METHODS else
                    f.id if isinstance(f, ast.Name) and f.id in REDUCTION_BUILTINS else None)
            if name is not None:
                found.append((module, scope[-1] if scope else "<module>", name, node.lineno))
            self.generic_visit(node)

    Visitor().visit(ast.parse(source))
    return found


def not_allowed(calls: list[tuple[str, str, str, int]]) -> list[str]:
    return [f"{m}:{line} {fn}: .{r}()" for m, fn, r, line in calls if (m, fn, r) not in ALLOWED]


def test_the_report_calls_no_reduction_outside_the_allow_list():
    calls = [c for p in sorted(REPORT_DIR.glob("*.py")) for c in reductions(p.read_text(), p.name)]
    assert not_allowed(calls) == []


def test_every_allow_list_entry_is_still_used():
    """An entry whose call has gone (moved to a table) must leave the list."""
    used = {(m, fn, r) for p in sorted(REPORT_DIR.glob("*.py"))
            for m, fn, r, _ in reductions(p.read_text(), p.name)}
    assert sorted(set(ALLOWED) - used) == []


@pytest.mark.parametrize("source, caught", [
    ("def f(t):\n    return t['x'].median()\n", ("f", "median")),
    ("def g(t):\n    return t.groupby('a')['x'].agg('mean')\n", ("g", "agg")),
    ("import numpy as np\ndef h(v):\n    return np.nanmedian(v)\n", ("h", "nanmedian")),
    ("def k(v):\n    return sum(v)\n", ("k", "sum")),
    ("x = frame['steps'].sum()\n", ("<module>", "sum")),
])
def test_a_planted_reduction_is_caught(source, caught):
    calls = reductions(source, "planted.py")
    assert [(fn, r) for _, fn, r, _ in calls] == [caught]
    assert not_allowed(calls) == [f"planted.py:{calls[0][3]} {caught[0]}: .{caught[1]}()"]


def test_an_allowed_name_in_another_function_is_still_caught():
    """The allow-list names the function: the same reduction elsewhere in the module fails."""
    calls = reductions("def other(t):\n    return t['n'].max()\n", "answer.py")
    assert not_allowed(calls) == ["answer.py:2 other: .max()"]
