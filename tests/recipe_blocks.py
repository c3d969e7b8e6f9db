"""The recipes of docs/recipes/ as the tests in tests/recipes/ read them.

A recipe's example files are its fenced code blocks whose info string names the file after
the language: "```json new:data/hardware/example-gpu.json" (a file the recipe creates) or
"```python edit:lib/stepdecomp/hw/specs.py" (lines to put in an existing file). The tests
write the ``new:`` blocks to a temporary directory and execute or parse the ``edit:`` ones,
so a recipe whose examples drift from the code fails its test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from stepdecomp.core.paths import PROJECT_ROOT

RECIPES_DIR = PROJECT_ROOT / "docs" / "recipes"
#: A fence opening: language, then optionally new:<path> or edit:<path>.
FENCE = re.compile(r"^```(?P<lang>[\w+-]*)(?:\s+(?P<action>new|edit):(?P<path>\S+))?\s*$")
CLOSE = "```"


@dataclass(frozen=True)
class Block:
    """One fenced code block of a recipe."""

    lang: str
    action: str        # "new", "edit" or "" (an unlabelled block)
    path: str          # the repository path after new: / edit:, "" for an unlabelled block
    text: str
    line: int          # 1-based line of the opening fence


@dataclass(frozen=True)
class Recipe:
    path: Path
    text: str
    blocks: tuple[Block, ...]

    @property
    def flat(self) -> str:
        """The text with every run of white space (line breaks included) one space, for
        finding a sentence the markdown wraps."""
        return " ".join(self.text.split())

    def mentions(self, phrase: str) -> bool:
        return " ".join(phrase.split()) in self.flat

    def labelled(self, action: str, path_prefix: str = "") -> list[Block]:
        return [b for b in self.blocks if b.action == action and b.path.startswith(path_prefix)]

    def block(self, action: str, path: str, containing: str = "") -> Block:
        """The one ``action`` block for ``path`` (whose text holds ``containing``)."""
        found = [b for b in self.blocks
                 if b.action == action and b.path == path and containing in b.text]
        if len(found) != 1:
            raise AssertionError(f"{self.path.name}: expected one ```{action}:{path} block"
                                 f"{f' containing {containing!r}' if containing else ''}, "
                                 f"found {len(found)}")
        return found[0]


def parse(path: Path) -> Recipe:
    """The blocks of one markdown file; an unclosed fence names its line."""
    text = path.read_text(encoding="utf-8")
    blocks, current, body = [], None, []
    for i, line in enumerate(text.splitlines(), start=1):
        if current is None:
            m = FENCE.match(line)
            if m:
                current, body = (m["lang"], m["action"] or "", m["path"] or "", i), []
        elif line.strip() == CLOSE:
            lang, action, where, start = current
            blocks.append(Block(lang, action, where, "\n".join(body) + "\n", start))
            current = None
        else:
            body.append(line)
    if current is not None:
        raise AssertionError(f"{path}: the code block opened at line {current[3]} is not closed")
    return Recipe(path, text, tuple(blocks))


@lru_cache(maxsize=None)
def read_recipe(name: str) -> Recipe:
    return parse(RECIPES_DIR / name)
