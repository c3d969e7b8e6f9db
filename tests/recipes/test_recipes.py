"""docs/recipes/ as a whole: the index lists every recipe and its test, and every file, make
target and library name a recipe mentions exists, so that a recipe cannot silently outlive
the code it describes. Each recipe's own test (test_add_a_*.py) follows it on its example."""

from __future__ import annotations

import importlib
import re

import pytest

from recipe_blocks import RECIPES_DIR, parse, read_recipe
from stepdecomp.core.paths import PROJECT_ROOT

RECIPES = ["add-a-model-family.md", "add-a-gpu.md", "add-a-step-time-target.md",
           "add-a-statistic.md"]
#: A repository path in backticks (a path with a <placeholder> or an ellipsis is a pattern).
PATH = re.compile(r"`((?:lib|data|docs|tests|notebooks)/[^`\s]+)`")
#: A fully qualified library name in backticks.
NAME = re.compile(r"`(stepdecomp(?:\.\w+)+)`")
MAKE = re.compile(r"`make ([a-z][\w-]*)")


def test_the_index_lists_every_recipe_and_its_test():
    index = parse(RECIPES_DIR / "README.md")
    assert sorted(p.name for p in RECIPES_DIR.glob("*.md") if p.name != "README.md") \
        == sorted(RECIPES)
    for name in RECIPES:
        test = f"tests/recipes/test_{name.removesuffix('.md').replace('-', '_')}.py"
        assert f"]({name})" in index.text, name
        assert f"`{test}`" in index.text, test
        assert (PROJECT_ROOT / test).is_file(), test


def test_readme_and_design_link_the_recipes():
    assert "(docs/recipes/README.md)" in (PROJECT_ROOT / "README.md").read_text()
    assert "(recipes/README.md)" in (PROJECT_ROOT / "docs" / "design.md").read_text()


def resolve(dotted: str) -> object:
    """The module or attribute a dotted stepdecomp name denotes (AttributeError or
    ModuleNotFoundError if it names nothing)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("name", [*RECIPES, "README.md"])
def test_every_path_name_and_make_target_a_recipe_mentions_exists(name):
    recipe = read_recipe(name)
    created = {b.path for b in recipe.blocks if b.action == "new"}
    paths = {p.rstrip(".,;:") for p in PATH.findall(recipe.text)}
    missing = sorted(p for p in paths - created
                     if "<" not in p and "…" not in p and not (PROJECT_ROOT / p).exists())
    assert missing == [], f"{name} names files that do not exist: {missing}"
    for b in recipe.blocks:
        if b.action == "edit":
            assert (PROJECT_ROOT / b.path).is_file(), f"{name}:{b.line}: {b.path}"
        if b.action == "new":
            assert b.lang in ("json", "python", "yaml"), f"{name}:{b.line}: {b.lang}"
    for dotted in set(NAME.findall(recipe.text)):
        resolve(dotted)
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    for target in set(MAKE.findall(recipe.text)):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"{name}: make {target}"


def test_the_checker_catches_a_stale_name_and_path(tmp_path):
    stale = tmp_path / "stale.md"
    stale.write_text("Edit `lib/stepdecomp/hw/nowhere.py` and `stepdecomp.hw.specs.NO_SUCH`.\n"
                     "```json new:data/hardware/x.json\n{}\n")
    with pytest.raises(AssertionError, match="line 2 is not closed"):
        parse(stale)
    text = stale.read_text()
    assert PATH.findall(text) == ["lib/stepdecomp/hw/nowhere.py"]
    with pytest.raises(AttributeError, match="NO_SUCH"):
        resolve(NAME.findall(text)[0])
    with pytest.raises(AttributeError, match="nowhere"):
        resolve("stepdecomp.nowhere")
