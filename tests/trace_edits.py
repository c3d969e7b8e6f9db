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


# --------------------------------------------------------------------------- a damaged root

#: Directories damaged_root adds next to the fixture's three, and why each is skipped.
DAMAGED_DIRS = {
    "20260102-000000-llama-2-7b-tp1-general": (
        "model: meta-llama/Llama-2-7b-hf\ntensor_parallelism: 1\ntensor_parallelism: 2\n",
        "exp-config.yaml line 3, column 1: not valid YAML: duplicate key 'tensor_parallelism' "
        "(first at line 2)"),
    "20260103-000000-llama-2-7b-tp1-general": (
        "model: meta-llama/Llama-2-7b-hf\nmax_num_batched_tokens: 1.0e+30\n",
        "exp-config.yaml line 2: max_num_batched_tokens must be an integer from 1 to "
        "1,073,741,824, got 1e+30"),
    "20260104-000000-llama-2-7b-tp1-general": (
        "model: meta-llama/Llama-2-7b-hf\ntensor_parallelism: '2.5x'\n",
        "exp-config.yaml line 2: tensor_parallelism must be an integer from 1 to 1,024, "
        "got '2.5x'"),
    "20260105-000000-llama-2-7b-tp1-general": (
        "model: meta-llama/Llama-2-7b-hf\n"
        + 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f"{x}: &{x} [{','.join([f'*{p}'] * 9)}]\n" for p, x in zip("abcdefgh", "bcdefghi")),
        "exp-config.yaml line 4, column 29: not valid YAML: more than 16 aliases (*name), more "
        "than a configuration needs"),
    "20260106-000000-llama-2-7b-tp99999999999999999999-general": (
        None, "tensor parallelism tp99999999999999999999 in the directory name must be from 1 to "
              "1,024 (or set tensor_parallelism in exp-config.yaml)"),
    "20260107-000000-tp4-reasoning": (
        None, "the name has no model slug before -tp<N>- and there is no exp-config.yaml naming "
              "the model"),
}
DANGLING = "20260108-000000-llama-2-7b-tp1-general"


def damaged_root(fixture_root: Path, dst: Path, optional_absent: bool = True) -> Path:
    """A copy of the fixture with one fault of each class of issue #20 (for tests and for
    `make report DATA=...` by hand). TP4's traces.json: line 1's first step says 2**62 µs
    while its timestamps say 19 ms (inconsistent), line 4's first step has no timestamps and
    2**62 µs (out of range), line 7's ends at 2**63 (beyond int64), line 3 is appended again
    with one step changed (7 duplicates, 1 conflicting duplicate). With ``optional_absent``,
    line 2's first step has no timestamps and line 18's first journey event no ts.monotonic
    (both kept). Next to it: the DAMAGED_DIRS and a dangling link DANGLING."""
    import shutil
    shutil.copytree(fixture_root, dst)
    tp4 = dst / TP4 / "traces.json"
    line = json.loads(read_lines(tp4)[2])
    first_event(line)["attributes"][5]["value"] = {"intValue": "6"}     # batch.decode_tokens
    append_lines(tp4, json.dumps(line).encode())
    edit_line(tp4, 1, set_value("step.duration_us", {"intValue": str(2**62)}))

    def untimed(request: dict, duration_us: int | None = None) -> None:
        without("step.ts_start_ns")(request)
        without("step.ts_end_ns")(request)
        if duration_us is not None:
            set_value("step.duration_us", {"intValue": str(duration_us)})(request)
    edit_line(tp4, 4, lambda q: untimed(q, 2**62))
    edit_line(tp4, 7, set_value("step.ts_end_ns", {"intValue": str(2**63)}))
    if optional_absent:
        edit_line(tp4, 2, untimed)
        edit_line(tp4, TP4_FIRST_JOURNEY_LINE, without("ts.monotonic", "journey."))
    for name, (config, _) in DAMAGED_DIRS.items():
        shutil.copytree(dst / (TP4 if "-tp4-" in name else GENERAL), dst / name)
        if config is not None:
            (dst / name / "exp-config.yaml").write_text(config)
        elif (dst / name / "exp-config.yaml").exists():
            (dst / name / "exp-config.yaml").unlink()
    (dst / DANGLING).symlink_to(dst / "gone")
    return dst
