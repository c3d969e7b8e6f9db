"""The import layers of lib/stepdecomp: each subpackage imports only what its ``__init__``
docstring's ``Imports:`` paragraph names, the layers form no cycle, and no module imports
another that (directly or not) imports it back. The checker is tried on a copy of the package
with an upward import and a circular import planted in it."""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

import stepdecomp

PACKAGE = Path(stepdecomp.__file__).parent
ROOT = "stepdecomp"


def subpackages(pkg: Path) -> list[str]:
    return sorted(p.parent.name for p in pkg.glob("*/__init__.py"))


def declared_imports(pkg: Path) -> dict[str, set[str]]:
    """Each subpackage → the subpackages its docstring's ``Imports:`` paragraph allows
    ("nothing else" → none, "every subpackage" → all)."""
    names = subpackages(pkg)
    out = {}
    for name in names:
        doc = ast.get_docstring(ast.parse((pkg / name / "__init__.py").read_text())) or ""
        m = re.search(r"^Imports: (.*?)(?:\n\n|\Z)", doc, re.M | re.S)
        if m is None:
            raise AssertionError(f"{name}/__init__.py: no 'Imports:' paragraph in its docstring")
        text = m.group(1).split("(")[0]
        out[name] = (set(names) - {name} if text.startswith("every subpackage")
                     else {w for w in re.findall(r"[a-z_]+", text) if w in names})
    return out


def module_name(pkg: Path, path: Path) -> str:
    parts = path.relative_to(pkg).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((ROOT, *parts))


def imports_of(pkg: Path, path: Path) -> set[str]:
    """The stepdecomp modules (or packages) ``path`` imports anywhere in it (lazy imports in
    functions and TYPE_CHECKING blocks included), as dotted names."""
    me = module_name(pkg, path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == ROOT}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == ROOT:
                mod = node.module
            else:
                continue
            for a in node.names:                      # ``from pkg import module``
                sub = f"{mod}.{a.name}"
                found.add(sub if (pkg.parent / (sub.replace(".", "/") + ".py")).exists()
                          or (pkg.parent / sub.replace(".", "/") / "__init__.py").exists()
                          else mod)
    return found - {me}


def graph(pkg: Path) -> dict[str, set[str]]:
    return {module_name(pkg, p): imports_of(pkg, p) for p in sorted(pkg.rglob("*.py"))}


def layer_violations(pkg: Path) -> list[str]:
    allowed = declared_imports(pkg)
    bad = []
    for mod, deps in graph(pkg).items():
        parts = mod.split(".")
        if len(parts) < 3:
            if parts != [ROOT] and mod.rsplit(".", 1)[-1] not in allowed:
                bad.append(f"{mod}: a module at the top of the package")
            continue
        own = parts[1]
        for dep in sorted(deps):
            other = dep.split(".")[1] if dep.count(".") else ""
            if other != own and other not in allowed[own]:
                bad.append(f"{mod} imports {dep}: {own} may import "
                           f"{', '.join(sorted(allowed[own])) or 'nothing else'}")
    return bad


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def module_cycles(pkg: Path) -> list[list[str]]:
    """Import cycles between modules. A package's ``__init__`` re-exporting its own modules is
    not an edge back: only imports of modules count, not of the package that holds them."""
    g = graph(pkg)
    packages = {m for m in g if (pkg.parent / m.replace(".", "/") / "__init__.py").exists()}
    return cycles({m: {d for d in deps if d in g and d not in packages} for m, deps in g.items()})


def layer_cycles(pkg: Path) -> list[list[str]]:
    return cycles(declared_imports(pkg))


# --------------------------------------------------------------------------- the package


def test_every_module_lives_in_a_subpackage():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py"]


def test_no_subpackage_holds_more_than_a_dozen_modules():
    sizes = {name: len([p for p in (PACKAGE / name).glob("*.py") if p.name != "__init__.py"])
             for name in subpackages(PACKAGE)}
    assert max(sizes.values()) <= 13, sizes


def test_imports_follow_the_declared_layers():
    assert layer_violations(PACKAGE) == []


def test_the_declared_layers_form_no_cycle():
    assert layer_cycles(PACKAGE) == []


def test_no_module_imports_itself_back():
    assert module_cycles(PACKAGE) == []


def test_the_analysis_never_imports_the_simulator():
    allowed = declared_imports(PACKAGE)
    assert sorted(name for name, deps in allowed.items() if "refdata" in deps) == ["run"]
    mentions = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                      if "refdata" in p.read_text()
                      and p.relative_to(PACKAGE).parts[0] not in ("refdata", "run"))
    assert mentions == []


# --------------------------------------------------------------------------- planted faults


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    dst = tmp_path / ROOT
    shutil.copytree(PACKAGE, dst, ignore=shutil.ignore_patterns("__pycache__", "templates"))
    return dst


def plant(path: Path, line: str) -> None:
    text = path.read_text()
    path.write_text(text.replace("from __future__ import annotations\n",
                                 f"from __future__ import annotations\n{line}\n", 1))


def test_a_planted_upward_import_is_caught(copy):
    assert layer_violations(copy) == []
    plant(copy / "core" / "paths.py", "from ..run import pipeline")
    assert layer_violations(copy) == [
        "stepdecomp.core.paths imports stepdecomp.run.pipeline: core may import nothing else"]


def test_a_planted_import_of_the_simulator_is_caught(copy):
    plant(copy / "stats" / "explain.py", "    from ..refdata import replay".strip())
    assert layer_violations(copy) == [
        "stepdecomp.stats.explain imports stepdecomp.refdata.replay: stats may import "
        "core, hw, model, targets, traces"]


def test_a_lazy_import_in_a_function_counts(copy):
    path = copy / "model" / "phases.py"
    path.write_text(path.read_text() + "\n\ndef _late():\n    from ..stats import correlation\n")
    assert layer_violations(copy) == [
        "stepdecomp.model.phases imports stepdecomp.stats.correlation: model may import "
        "core, hw, traces"]


def test_a_planted_circular_import_is_caught(copy):
    assert module_cycles(copy) == []
    plant(copy / "hw" / "specs.py", "from . import kernels")
    plant(copy / "hw" / "kernels.py", "from .specs import GpuSpec")
    assert module_cycles(copy) == [["stepdecomp.hw.kernels", "stepdecomp.hw.specs"]]


def test_a_declared_cycle_between_layers_is_caught(copy):
    init = copy / "core" / "__init__.py"
    init.write_text(init.read_text().replace("Imports: nothing else in stepdecomp.",
                                             "Imports: hw."))
    assert layer_cycles(copy) == [["core", "hw"]]


def test_a_new_top_level_module_is_caught(copy):
    (copy / "helpers.py").write_text("from .core import paths\n")
    assert layer_violations(copy) == ["stepdecomp.helpers: a module at the top of the package"]


def test_a_subpackage_without_its_imports_paragraph_is_refused(copy):
    (copy / "extra").mkdir()
    (copy / "extra" / "__init__.py").write_text('"""Something new."""\n')
    with pytest.raises(AssertionError, match="extra/__init__.py: no 'Imports:' paragraph"):
        declared_imports(copy)
