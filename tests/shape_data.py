"""Ground-truth roots of unusual shapes cut from the committed fixture, for the end-to-end
shape tests (test_shapes.py) and by hand::

    python tests/shape_data.py OUT_ROOT NAME:STEPS[:nojourneys][:nots] ...

Each experiment is a copy of one fixture experiment (its exp-config.yaml and OTLP lines)
keeping only the steps with ``step.id`` < STEPS (0 keeps none; the journeys of requests
that arrived later go too), without any journey event (``nojourneys``), or without the
documented-optional ``step.ts_start_ns`` / ``step.ts_end_ns`` and journey ``ts.monotonic``
/ ``ts.monotonic_ns`` attributes (``nots``). NAME is the new directory name; its model slug
picks the fixture experiment it is cut from.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "fixtures" / "ground_truth"
#: The fixture experiment each model slug is cut from.
SOURCES = {"llama-2-7b": "20260101-000000-llama-2-7b-tp1-general",
           "llama-2-70b-hf": "20260101-020000-llama-2-70b-hf-tp4-reasoning"}
STEP_TS = ("step.ts_start_ns", "step.ts_end_ns")
JOURNEY_TS = ("ts.monotonic", "ts.monotonic_ns")


@dataclass(frozen=True)
class Shape:
    name: str                      # experiment directory name
    steps: int                     # keep step.id < steps
    journeys: bool = True
    timestamps: bool = True


def _int_attr(event: dict, key: str) -> int | None:
    for a in event["attributes"]:
        if a["key"] == key:
            return int(a["value"]["intValue"])
    return None


def _cut_line(line: bytes, shape: Shape) -> bytes | None:
    request = json.loads(line)
    for rs in request["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            kept = []
            for sp in ss["spans"]:
                events = []
                for ev in sp["events"]:
                    is_step = ev["name"].startswith("step.")
                    if is_step and _int_attr(ev, "step.id") >= shape.steps:
                        continue
                    if not is_step and (not shape.journeys
                                        or (_int_attr(ev, "scheduler.step") or 0) >= shape.steps):
                        continue
                    if not shape.timestamps:
                        drop = STEP_TS if is_step else JOURNEY_TS
                        ev["attributes"] = [a for a in ev["attributes"] if a["key"] not in drop]
                    events.append(ev)
                if events:
                    sp["events"] = events
                    kept.append(sp)
            ss["spans"] = kept
        rs["scopeSpans"] = [ss for ss in rs["scopeSpans"] if ss["spans"]]
    request["resourceSpans"] = [rs for rs in request["resourceSpans"] if rs["scopeSpans"]]
    return (json.dumps(request) + "\n").encode() if request["resourceSpans"] else None


def write_shape(root: Path, shape: Shape) -> Path:
    """One experiment directory of ``shape`` under ``root`` (created); returns it."""
    source = next(FIXTURE / src for slug, src in SOURCES.items() if f"-{slug}-tp" in shape.name)
    dst = Path(root) / shape.name
    dst.mkdir(parents=True)
    if (source / "exp-config.yaml").is_file():
        shutil.copy(source / "exp-config.yaml", dst / "exp-config.yaml")
    lines = []
    for line in (source / "traces.json").read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            cut = _cut_line(line, shape)
        except json.JSONDecodeError:            # the fixture's truncated last line
            continue
        if cut is not None:
            lines.append(cut)
    (dst / "traces.json").write_bytes(b"".join(lines))
    return dst


def write_root(root: Path, shapes: list[Shape]) -> Path:
    for shape in shapes:
        write_shape(root, shape)
    return Path(root)


def main(argv: list[str]) -> int:
    root = Path(argv[0])
    shapes = []
    for spec in argv[1:]:
        name, steps, *flags = spec.split(":")
        shapes.append(Shape(name, int(steps), "nojourneys" not in flags, "nots" not in flags))
    write_root(root, shapes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
