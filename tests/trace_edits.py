"""Edits of the fixture's OTLP lines, for the bad-input tests (test_bad_inputs.py).

Every helper works on the parsed JSON of one line (an ExportTraceServiceRequest) or on the
raw bytes of a file, so a test states its damage in one line: "line 1, first step event,
remove batch.decode_tokens".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

GENERAL = "20260101-000000-llama-2-7b-tp1-general"
MOE = "20260101-010000-mixtral-8x7b-v0-1-tp2-codegen"
TP4 = "20260101-020000-llama-2-70b-hf-tp4-reasoning"

#: What the fixture's files hold (test_load.test_fixture_counts_per_file checks them).
FIXTURE = {
    GENERAL: {"lines": 21, "steps": 127, "journey_events": 96},
    MOE: {"lines": 10, "steps": 56, "journey_events": 120},
    TP4: {"lines": 20, "steps": 129, "journey_events": 104},
}
#: TP4's traces.json: lines 1-17 hold the 129 steps (8 per line), lines 18-20 the journeys.
TP4_FIRST_JOURNEY_LINE = 18


def read_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def edit_line(path: Path, lineno: int, fn: Callable[[dict], Any]) -> None:
    """Apply ``fn`` to the parsed request of line ``lineno`` (1-based) and write it back."""
    lines = read_lines(path)
    request = json.loads(lines[lineno - 1])
    fn(request)
    lines[lineno - 1] = json.dumps(request, allow_nan=True).encode() + b"\n"
    write_lines(path, lines)


def append_lines(path: Path, *extra: bytes) -> None:
    data = path.read_bytes()
    path.write_bytes(data + b"".join(x if x.endswith(b"\n") else x + b"\n" for x in extra))


def spans(request: dict) -> Iterator[dict]:
    for rs in request["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            yield from ss["spans"]


def first_event(request: dict, prefix: str = "step.") -> dict:
    return next(ev for sp in spans(request) for ev in sp["events"] if ev["name"].startswith(prefix))


def first_span(request: dict) -> dict:
    return next(spans(request))


def attribute(event: dict, key: str) -> dict:
    return next(a for a in event["attributes"] if a["key"] == key)


def drop_attribute(event: dict, key: str) -> None:
    event["attributes"] = [a for a in event["attributes"] if a["key"] != key]


def set_value(key: str, value: Any, prefix: str = "step.") -> Callable[[dict], None]:
    """An edit: the first event (name starting with ``prefix``) gets ``key`` = ``value`` (an
    OTLP AnyValue dict)."""
    return lambda request: attribute(first_event(request, prefix), key).__setitem__("value", value)


def without(key: str, prefix: str = "step.") -> Callable[[dict], None]:
    return lambda request: drop_attribute(first_event(request, prefix), key)


# --------------------------------------------------------------------------- tree mutations

def nodes(tree: Any) -> list[tuple[Any, Any]]:
    """Every (container, key-or-index) of a JSON tree, depth first: the places a mutation
    can hit."""
    out: list[tuple[Any, Any]] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            out.append((node, k))
            if isinstance(v, (dict, list)):
                stack.append(v)
    return out


#: Values a type swap or a huge-number edit puts in place of a node.
SWAPS: list[Any] = [None, 5, -1, 2.5, "abc", "", True, [], {}, [1, "x"], {"intValue": "abc"},
                    {"k": 1}]
HUGE: list[Any] = [2**64 - 1, 2**63, -(2**63) - 1, 10**30, "18446744073709551615",
                   "-9223372036854775809", "99999999999999999999999", 1e308, -1e308,
                   1_000_000_000_000, 1_000_000_000]
