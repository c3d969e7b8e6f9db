"""Messages about a user's files stay short whatever the files hold (messages.py)."""

import pytest
import yaml

from stepdecomp.core.messages import CUT, MAX_MESSAGE_CHARS, SHOWN_VALUE_CHARS, bounded, shown


@pytest.mark.parametrize("value, text", [
    (7, "7"),
    ("two", "'two'"),
    ("x" * 100, "'" + "x" * 17 + "..." + "x" * 18 + "'"),
    (10**50, "1" + "0" * 17 + "..." + "0" * 19),
    ([[1, [2, [3]]]] * 9, "[[1, [...]], [1, [...]], [1, [...]], […]"),
    ({"k": list(range(100))}, "{'k': [0, 1, 2, 3, ...]}"),
])
def test_shown_values_are_cut(value, text):
    assert shown(value) == text and len(text) <= SHOWN_VALUE_CHARS


def test_shown_alias_bomb_costs_nothing():
    doc = "a: &a [" + ",".join(["lol"] * 9) + "]\n" + "".join(
        f"{x}: &{x} [{','.join([f'*{p}'] * 9)}]\n" for p, x in zip("abcdefgh", "bcdefghi"))
    value = yaml.safe_load(doc)                 # shared references: cheap to build
    assert len(shown(value)) <= SHOWN_VALUE_CHARS


def test_shown_int_beyond_the_str_digit_limit():
    assert shown(10**5000) == "<an int of about 5001 digits>"


def test_bounded_keeps_the_start():
    msg = "traces.json: " + "y" * 1000
    out = bounded(msg)
    assert len(out) == MAX_MESSAGE_CHARS and out.startswith("traces.json: y") and out.endswith(CUT)
    assert bounded("short") == "short"
