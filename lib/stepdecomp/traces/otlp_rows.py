"""The dict path of the loader: OTLP lines -> rows of decoded events, and the per-file
accounting (ParseStats) both paths fill.

Every line is parsed by orjson (else the standard parser) into dicts and walked with
``otlp.iter_events``; each step and journey event is decoded strictly by
``otlp.decode_attributes`` into a row, or rejected with a reason. This is the reference the
typed path (``otlp_columns``) is tested against, and where that path sends every line it
does not take plainly. The accounting identities are in ``load``'s module docstring.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import otlp

_REJECT_COLUMNS = {otlp.MISSING: "rejected_missing", otlp.WRONG_TYPE: "rejected_wrong_type",
                   otlp.OUT_OF_RANGE: "rejected_out_of_range",
                   otlp.INCONSISTENT: "rejected_inconsistent",
                   otlp.DUPLICATE: "rejected_duplicate",
                   otlp.CONFLICTING_DUPLICATE: "rejected_conflicting_duplicate",
                   otlp.NO_REQUEST_ID: "rejected_no_request_id"}
assert tuple(_REJECT_COLUMNS) == otlp.REJECT_CATEGORIES
MALFORMED_JSON = "malformed: not valid JSON (truncated or garbage)"
MALFORMED_VALUE = "malformed: JSON but not an object"
IGNORED = "ignored: JSON object without resourceSpans (not an OTLP export request)"


@dataclass
class ParseStats:
    """What one trace file held, and what was skipped (see load's module docstring)."""

    experiment_id: str
    file: str
    lines: int = 0
    parsed_lines: int = 0
    blank_lines: int = 0
    malformed_lines: int = 0
    ignored_lines: int = 0
    events: int = 0
    steps: int = 0
    journey_events: int = 0
    rejected_events: int = 0
    rejected_missing: int = 0
    rejected_wrong_type: int = 0
    rejected_out_of_range: int = 0
    rejected_inconsistent: int = 0
    rejected_duplicate: int = 0
    rejected_conflicting_duplicate: int = 0
    rejected_no_request_id: int = 0
    other_events: int = 0
    structure_errors: int = 0
    unread_bytes: int = 0
    stream_error: str = ""
    from_cache: bool = False
    #: lines the typed decoder left to the dict path (same values, only slower); not in
    #: REPORT_COLUMNS, so the parse report is the same whichever path read a line
    fallback_lines: int = 0
    first_malformed_line: int | None = None
    #: the first conflicting duplicate: [step.id, line of the kept event, line of the
    #: rejected one] (empty when there is none)
    first_conflict: list[int] = field(default_factory=list)
    #: the file could not be read (permission, I/O error): its tables are not cached
    read_failed: bool = False
    #: reason -> [count, first line]: events by otlp.BadAttribute.reason, lines and
    #: structure problems by their description
    event_reasons: dict[str, list[int]] = field(default_factory=dict)
    line_reasons: dict[str, list[int]] = field(default_factory=dict)

    def reject(self, reason: str, line: int, count: int = 1) -> None:
        """Count ``count`` rejected events of one reason ("<category>: <attribute>")."""
        entry = self.event_reasons.setdefault(reason, [0, line])
        entry[0] += count
        entry[1] = min(entry[1], line)
        col = _REJECT_COLUMNS[reason.split(": ", 1)[0]]
        setattr(self, col, getattr(self, col) + count)
        self.rejected_events += count

    def note_line(self, reason: str, line: int) -> None:
        entry = self.line_reasons.setdefault(reason, [0, line])
        entry[0] += 1
        entry[1] = min(entry[1], line)

    def balanced(self) -> bool:
        """The accounting identities of load's module docstring hold."""
        return (self.lines == self.parsed_lines + self.blank_lines + self.malformed_lines
                + self.ignored_lines
                and self.events == self.steps + self.journey_events + self.rejected_events
                and self.rejected_events == sum(getattr(self, c) for c in _REJECT_COLUMNS.values()))


#: The parse_report columns (ParseStats without the first-line details).
REPORT_COLUMNS = [f for f in ParseStats.__dataclass_fields__
                  if f not in ("fallback_lines", "first_malformed_line", "first_conflict",
                               "read_failed", "event_reasons", "line_reasons")]



def _json_int(text: str) -> int | float:
    """An int literal for the standard parser: exact, or ±inf when it has more digits than
    int() converts (sys.get_int_max_str_digits, 4300 by default). Such a literal is valid
    JSON; as ±inf it is out of range wherever an attribute is read, and ignored elsewhere."""
    try:
        return int(text)
    except ValueError:
        return float("-inf") if text.startswith("-") else float("inf")


def _loads(line: bytes) -> Any:
    """orjson, else the standard parser (exact ints beyond 64 bits, NaN literals), else
    ValueError. orjson turns an int literal beyond 64 bits into a float silently, which
    the attribute decoders then reject as out of range."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            return json.loads(line, parse_int=_json_int)
        except (ValueError, RecursionError):
            raise ValueError(MALFORMED_JSON) from None


@dataclass
class Rows:
    """Decoded events of one kind, with the line each came from."""

    rows: list[dict] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


class FileParser:
    """Walks the lines of one file, decoding events into rows and counting the rest."""

    def __init__(self, stats: ParseStats) -> None:
        self.stats = stats
        self.steps, self.journeys = Rows(), Rows()
        self._span: Any = None
        self._span_rid: str | None = None

    def line(self, lineno: int, line: bytes) -> None:
        st = self.stats
        st.lines += 1
        if not line or line.isspace():
            st.blank_lines += 1
            return
        try:
            request = _loads(line)
        except ValueError:
            return self._malformed(lineno, MALFORMED_JSON)
        if type(request) is not dict:
            return self._malformed(lineno, MALFORMED_VALUE)
        if "resourceSpans" not in request:
            st.ignored_lines += 1
            st.note_line(IGNORED, lineno)
            return
        st.parsed_lines += 1
        problems: list[str] = []
        for span, ev in otlp.iter_events(request, problems):
            self._event(lineno, span, ev, problems)
        for p in problems:
            st.structure_errors += 1
            st.note_line(f"structure: {p}", lineno)

    def fallback(self, lineno: int, line: bytes) -> None:
        """A line the typed decoder did not take: read here, counted in fallback_lines when
        it is an export request (not when it is malformed or ignored)."""
        parsed = self.stats.parsed_lines
        self.line(lineno, line)
        self.stats.fallback_lines += self.stats.parsed_lines - parsed

    def _malformed(self, lineno: int, reason: str) -> None:
        self.stats.malformed_lines += 1
        first = self.stats.first_malformed_line
        self.stats.first_malformed_line = lineno if first is None else min(first, lineno)
        self.stats.note_line(reason, lineno)

    def _event(self, lineno: int, span: Any, ev: Any, problems: list[str]) -> None:
        name = ev.get("name", "") if type(ev) is dict else None
        if type(name) is not str:
            problems.append("an event is not an object with a string name")
            return
        if name == otlp.BATCH_SUMMARY:
            kinds, required, out = otlp.STEP_ATTRS, otlp.STEP_REQUIRED, self.steps
        elif name.startswith(otlp.JOURNEY_PREFIX):
            kinds, required, out = otlp.JOURNEY_ATTRS, otlp.JOURNEY_REQUIRED, self.journeys
        else:
            self.stats.other_events += 1
            return
        self.stats.events += 1
        attributes = ev.get("attributes")
        try:
            row = otlp.decode_attributes(attributes, kinds, required)
            if out is self.journeys:
                self._journey_fields(row, name, span, ev, attributes)
        except otlp.BadAttribute as e:
            self.stats.reject(e.reason, lineno)
            return
        out.rows.append(row)
        out.lines.append(lineno)

    def _journey_fields(self, row: dict, name: str, span: Any, ev: dict, attributes: Any) -> None:
        """request_id, event and time_ns of a journey row (BadAttribute if unusable)."""
        t = ev.get("timeUnixNano")
        row["time_ns"] = None if t is None else otlp.decode_int({"intValue": t}, "timeUnixNano")
        if span is not self._span:
            self._span, self._span_rid = span, otlp.request_id(span.get("attributes"))
        rid = self._span_rid or otlp.request_id(attributes)
        if rid is None:
            raise otlp.BadAttribute(otlp.NO_REQUEST_ID, otlp.REQUEST_ID_KEY)
        row["request_id"] = rid
        row["event"] = name[len(otlp.JOURNEY_PREFIX):]
