"""Typed OTLP lines -> per-key column arrays: the loader's fast path (``load.parse_trace_file``).

Each line is decoded by msgspec into ``otlp.ExportRequest`` (no dict per object) and its spans
are buffered. At the end of a chunk of lines the events are classified by name (step, journey
of each name, other) and every documented attribute becomes one numpy array per key, built
with a few C-level passes over all events of one name and attribute layout (``map``,
``itemgetter``, ``join``, numpy), never a dict or a Python loop per attribute or per event.
Chunks are small so that those passes find the decoded objects still in the CPU caches.

The strict rules are those of ``otlp.decode_attributes`` (the dict path). A row is only taken
from here when it is plainly valid: each documented value a single-kind AnyValue of its kind
(an int as ASCII decimal text in [0, 2**63), a double in range, a string), each documented key
once, the required ones present, a journey's request id and timeUnixNano readable. Any other
row marks its whole line *bad*; ``TypedLines.flush`` leaves that line out and returns it, and
the loader reads it with the dict path, which rejects, coerces or counts exactly as before.
So the two paths cannot disagree: this one only ever decides "plainly valid, same values".

Before a line reaches msgspec it must pass what the dict path's parsers check and msgspec
does not when it skips an unknown member: valid UTF-8 (``json`` decodes with surrogatepass).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any

import msgspec
import numpy as np
from msgspec import UNSET

from . import otlp

#: Events buffered before they become columns: small enough that the decoded objects are
#: still in the CPU caches when they are read again, large enough that the fixed cost of a
#: flush (a few dozen numpy calls) is noise.
CHUNK_EVENTS = 2048
#: What every AnyValue member key ends with ("intValue", ...): counted in the raw line.
MEMBER_KEY_END = b'Value"'

_KEY = attrgetter("key")
_VALUE = attrgetter("value")
_KIND_FIELD = {"int": "intValue", "float": "doubleValue", "str": "stringValue"}
_OWN = {kind: attrgetter(f) for kind, f in _KIND_FIELD.items()}
_MEMBERS = [attrgetter(f) for f in otlp.VALUE_FIELDS]
#: The other members of an AnyValue, per kind: all UNSET in a single-kind value.
_OTHERS = {kind: [attrgetter(x) for x in otlp.VALUE_FIELDS if x != f]
           for kind, f in _KIND_FIELD.items()}
JOURNEY_KINDS = {"request_id": "str", "event": "str", "time_ns": "int", **otlp.JOURNEY_ATTRS}
_FILL = {"int": 0, "float": np.nan, "str": None}
_DTYPE = {"int": np.int64, "float": np.float64, "str": object}


@dataclass
class Columns:
    """Rows of one event kind as arrays: ``values[key]`` (int64 / float64 with NaN / object
    with None), ``missing[key]`` (True where the event lacks the attribute) and ``line``."""

    kinds: dict[str, str]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    missing: dict[str, np.ndarray] = field(default_factory=dict)
    line: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def empty(cls, kinds: dict[str, str], n: int) -> Columns:
        return cls(kinds, {k: np.full(n, _FILL[kind], dtype=_DTYPE[kind]) for k, kind in kinds.items()},
                   {k: np.ones(n, dtype=bool) for k in kinds}, np.zeros(n, np.int64))

    @classmethod
    def from_rows(cls, rows: list[dict], lines: list[int], kinds: dict[str, str]) -> Columns:
        """Decoded rows (the dict path's; None or an absent key = missing) as Columns."""
        out = cls.empty(kinds, len(rows))
        for key, kind in kinds.items():
            values = [r.get(key) for r in rows]
            miss = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
            if kind == "int":        # from the ints themselves: values above 2**53 stay exact
                data = np.fromiter((0 if v is None else v for v in values), np.int64, len(values))
            elif kind == "float":
                data = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            else:
                data = np.empty(len(values), dtype=object)
                data[:] = values
            out.values[key], out.missing[key] = data.reshape(len(values)), miss
        out.line = np.asarray(lines, dtype=np.int64).reshape(len(rows))
        return out

    def __len__(self) -> int:
        return len(self.line)

    def take(self, index: np.ndarray) -> Columns:
        return Columns(self.kinds, {k: v[index] for k, v in self.values.items()},
                       {k: m[index] for k, m in self.missing.items()}, self.line[index])

    @classmethod
    def concat(cls, kinds: dict[str, str], parts: list[Columns]) -> Columns:
        """The parts' rows in line order (stable: rows of one line keep their order; every
        line's rows come from one part)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(kinds, 0)
        out = parts[0] if len(parts) == 1 else cls(
            kinds, {k: np.concatenate([p.values[k] for p in parts]) for k in kinds},
            {k: np.concatenate([p.missing[k] for p in parts]) for k in kinds},
            np.concatenate([p.line for p in parts]))
        if len(out) > 1 and (np.diff(out.line) < 0).any():
            out = out.take(np.argsort(out.line, kind="stable"))
        return out


# --------------------------------------------------------------------------- one column

def members(vals: list) -> int:
    """How many members are set in these AnyValues (any of the seven kinds)."""
    return sum(len(vals) - list(map(get, vals)).count(UNSET) for get in _MEMBERS)


def single_kind(vals: list, kind: str) -> np.ndarray | None:
    """None when no AnyValue in ``vals`` has a member besides its kind's, else the mask of
    those that do. One pass per other member, each a list of references."""
    bad = None
    for get in _OTHERS[kind]:
        got = list(map(get, vals))
        if got.count(UNSET) != len(vals):
            here = np.fromiter((m is not UNSET for m in got), dtype=bool, count=len(vals))
            bad = here if bad is None else bad | here
    return bad


def _exact_int(v: Any) -> int | None:
    """What decode_int accepts without rejecting, from a plain text or JSON int; None for
    anything else (the dict path then decides, and may still accept it: "-0", 2048.0)."""
    if type(v) is int:
        return v if 0 <= v <= otlp.INT64_MAX else None
    if type(v) is str and v.isascii() and v.isdigit() and len(v.lstrip("0")) <= otlp.INT64_DIGITS:
        i = int(v)
        return i if i <= otlp.INT64_MAX else None
    return None


def int_texts(texts: list) -> tuple[np.ndarray, np.ndarray]:
    """int64 values of decimal texts (or JSON ints), and the mask of those decode_int would
    not take as they are. The common case is one join and one numpy parse of the joined text,
    after checking it holds only ASCII digits and separators with no empty field."""
    n = len(texts)
    try:
        joined = ",".join(texts)
    except TypeError:                # an absent member (UNSET), a JSON int or float, None
        joined = None
    if (joined and joined.isascii() and joined.replace(",", "").isdigit()
            and ",," not in joined and joined[0] != "," and joined[-1] != ","):
        data = np.fromstring(joined, sep=",", dtype=np.int64)
        # strtoll saturates at 2**63 - 1: only texts reaching it need a closer look
        if len(data) == n and not (data == otlp.INT64_MAX).any():
            return data, np.zeros(n, dtype=bool)
    exact = [_exact_int(t) for t in texts]
    bad = np.fromiter((x is None for x in exact), dtype=bool, count=n)
    return np.fromiter((0 if x is None else x for x in exact), np.int64, n), bad


def _float_values(xs: list, key: str) -> tuple[np.ndarray, np.ndarray]:
    n = len(xs)
    try:
        arr = np.array(xs, dtype=np.float64).reshape(n)
    except (TypeError, ValueError):                        # an absent member
        arr = np.fromiter((x if type(x) is float else np.nan for x in xs), np.float64, n)
    with np.errstate(invalid="ignore"):
        ok = (arr >= 0.0) & (arr <= otlp.FLOAT_MAX.get(key, np.inf))   # False for NaN
    return arr, ~ok


def _str_values(xs: list) -> tuple[np.ndarray, np.ndarray]:
    n = len(xs)
    arr = np.empty(n, dtype=object)
    arr[:] = xs
    try:
        "".join(xs)
        return arr, np.zeros(n, dtype=bool)
    except TypeError:
        return arr, np.fromiter((type(x) is not str for x in xs), dtype=bool, count=n)


_CONVERT = {"int": lambda own, key: int_texts(own), "float": _float_values,
            "str": lambda own, key: _str_values(own)}


# --------------------------------------------------------------------------- one event name

@dataclass
class _Checks:
    """What the single-kind check of a chunk needs: the documented values read (with their
    kind and rows), how many they are, and the members of every other decoded AnyValue."""

    columns: list[tuple[list, str, Any, np.ndarray]] = field(default_factory=list)
    documented: int = 0
    other_members: int = 0


def _layout_groups(lists: list[list]) -> dict[tuple, list[int]]:
    """Event indices per attribute layout (keys in order), for events of mixed layouts."""
    groups: dict[tuple, list[int]] = {}
    for i, attrs in enumerate(lists):
        groups.setdefault(tuple(map(_KEY, attrs)), []).append(i)
    return groups


def _read_layout(layout: tuple, lists: list[list], rows: Any, kinds: dict[str, str],
                 required: tuple[str, ...], out: Columns, bad: np.ndarray, checks: _Checks) -> None:
    """Columns of the events ``lists`` (all with attribute keys ``layout``) into ``out`` at
    ``rows`` (a slice or indices)."""
    where: dict[str, list[int]] = {}
    for pos, key in enumerate(layout):
        where.setdefault(key, []).append(pos)
    if any(len(where.get(k, ())) > 1 for k in kinds) or any(r not in where for r in required):
        bad[rows] = True                      # given twice / missing: the dict path rejects
        return
    vals = list(map(_VALUE, chain.from_iterable(lists)))
    width = len(layout)
    for key, positions in where.items():
        kind = kinds.get(key)
        if kind is None:
            checks.other_members += sum(members(vals[p::width]) for p in positions)
            continue
        col = vals[positions[0]::width]
        data, wrong = _CONVERT[kind](list(map(_OWN[kind], col)), key)
        out.values[key][rows] = data
        out.missing[key][rows] = False
        if wrong.any():
            bad[rows] |= wrong
        checks.columns.append((col, kind, rows, bad))
        checks.documented += len(col)


def read_events(lists: list[list], rows: Any, kinds: dict[str, str], required: tuple[str, ...],
                out: Columns, bad: np.ndarray, checks: _Checks) -> None:
    """The documented attributes of events of one name (``lists``: their attributes) into
    ``out`` at ``rows`` (a slice or indices); ``bad`` marks rows this path does not take."""
    n = len(lists)
    lens = list(map(len, lists))
    width = lens[0]
    keys = list(map(_KEY, chain.from_iterable(lists)))
    if lens.count(width) == n and keys == keys[:width] * n:          # the usual case
        _read_layout(tuple(keys[:width]), lists, rows, kinds, required, out, bad, checks)
        return
    index = np.arange(n) if isinstance(rows, slice) and rows == slice(None) else np.asarray(rows)
    for layout, idx in _layout_groups(lists).items():
        _read_layout(layout, [lists[i] for i in idx], index[idx], kinds, required, out, bad,
                     checks)


# --------------------------------------------------------------------------- lines

_EVENTS = attrgetter("events")
_NAME = attrgetter("name")
_ATTRS = attrgetter("attributes")
_TIME = attrgetter("timeUnixNano")
#: Event classes (TypedLines.codes); journey names get the codes after these.
STEP, OTHER, FIRST_JOURNEY = 0, 1, 2


def _pick(items: list, index: np.ndarray) -> list:
    """items[i] for i in index, in one C call."""
    if len(index) == len(items):
        return items
    if len(index) < 2:
        return [items[i] for i in index.tolist()]
    return list(itemgetter(*index.tolist())(items))


@dataclass
class _Chunk:
    """The spans of the lines decoded since the last flush."""

    spans: list = field(default_factory=list)
    events: int = 0
    #: resource and scope attribute lists (for the single-kind count)
    other_attrs: list = field(default_factory=list)
    #: member keys in the raw lines; None once a line has an escape (keys may hide in it)
    member_keys: int | None = 0
    #: per line: line number, end offset of its spans
    lines: list[tuple[int, int]] = field(default_factory=list)
    raw: dict[int, bytes] = field(default_factory=dict)


@dataclass
class Flushed:
    """What a flush took: counts of the good lines, and the bad lines to read again."""

    lines: int = 0
    events: int = 0
    other_events: int = 0
    bad_lines: list[tuple[int, bytes]] = field(default_factory=list)


@dataclass
class _Events:
    """The events of a chunk, flattened: their class (STEP, OTHER, a journey code), the
    index of their span and the position of their line in the chunk."""

    items: list
    codes: np.ndarray
    span: np.ndarray
    line_pos: np.ndarray


class TypedLines:
    """The fast path over the lines of one file: decode, buffer, flush into Columns."""

    def __init__(self) -> None:
        self.steps: list[Columns] = []
        self.journeys: list[Columns] = []
        self.chunk = _Chunk()
        #: event name -> STEP, OTHER or a journey code; journey code -> journeys' ``event``
        self.codes: dict[str, int] = {otlp.BATCH_SUMMARY: STEP}
        self.journey_events: list[str] = []

    @staticmethod
    def decode(line: bytes) -> otlp.ExportRequest | None:
        """The typed request of one line, or None when the dict path must read it."""
        if not line.isascii():
            try:
                line.decode("utf-8", "surrogatepass")     # what json.loads requires
            except UnicodeDecodeError:
                return None
        try:
            return otlp.TYPED_DECODER.decode(line)
        except (msgspec.DecodeError, RecursionError):
            return None

    @property
    def pending_events(self) -> int:
        return self.chunk.events

    def add(self, lineno: int, line: bytes, request: otlp.ExportRequest) -> None:
        """Buffer the spans of one decoded line (the events are read at the flush)."""
        c = self.chunk
        for rs in request.resourceSpans or ():
            if rs.resource is not None and rs.resource.attributes:
                c.other_attrs.append(rs.resource.attributes)
            for scope_list in (rs.scopeSpans, rs.instrumentationLibrarySpans):
                for ss in scope_list or ():
                    if ss.scope is not None and ss.scope.attributes:
                        c.other_attrs.append(ss.scope.attributes)
                    if ss.spans:
                        c.spans += ss.spans
                        c.events += sum(map(len, filter(None, map(_EVENTS, ss.spans))))
        c.lines.append((lineno, len(c.spans)))
        c.raw[lineno] = line
        if c.member_keys is not None:
            c.member_keys = None if b"\\" in line else c.member_keys + line.count(MEMBER_KEY_END)

    def _events(self, c: _Chunk, lines: np.ndarray) -> _Events:
        spans = c.spans
        per_span = list(map(_EVENTS, spans))
        if None in per_span:
            per_span = [e or () for e in per_span]
        counts = np.fromiter(map(len, per_span), dtype=np.intp, count=len(per_span))
        items = list(chain.from_iterable(per_span))
        names = list(map(_NAME, items))
        codes = list(map(self.codes.get, names))
        if None in codes:
            for name in {n for n, k in zip(names, codes) if k is None}:
                self.codes[name] = self._code(name)
            codes = list(map(self.codes.__getitem__, names))
        span = np.repeat(np.arange(len(spans)), counts)
        span_line = np.repeat(np.arange(len(lines)), np.diff(lines[:, 1], prepend=0))
        return _Events(items, np.array(codes, dtype=np.intp).reshape(len(items)), span,
                       span_line[span])

    def _code(self, name: str) -> int:
        if not name.startswith(otlp.JOURNEY_PREFIX):
            return OTHER
        self.journey_events.append(name[len(otlp.JOURNEY_PREFIX):])
        return FIRST_JOURNEY + len(self.journey_events) - 1

    def _journeys(self, c: _Chunk, ev: _Events, idx: np.ndarray, checks: _Checks
                  ) -> tuple[Columns, np.ndarray]:
        """The journey events ``idx`` of the chunk as Columns, and their bad mask."""
        out, bad = Columns.empty(JOURNEY_KINDS, len(idx)), np.zeros(len(idx), dtype=bool)
        if not len(idx):
            return out, bad
        events, span, codes = _pick(ev.items, idx), ev.span[idx], ev.codes[idx]
        attrs = [a if a is not None else () for a in map(_ATTRS, events)]
        span_rid = np.empty(len(c.spans), dtype=object)
        for s in np.unique(span).tolist():
            span_rid[s] = otlp.typed_request_id(c.spans[s].attributes)
        rids = span_rid[span]
        for i in np.flatnonzero(rids == None).tolist():          # noqa: E711 (elementwise)
            rids[i] = otlp.typed_request_id(attrs[i])
        for code in np.unique(codes).tolist():
            rows = np.flatnonzero(codes == code)
            read_events(_pick(attrs, rows), rows, otlp.JOURNEY_ATTRS, otlp.JOURNEY_REQUIRED,
                        out, bad, checks)
            out.values["event"][rows] = self.journey_events[code - FIRST_JOURNEY]
        out.values["time_ns"], wrong = int_texts(list(map(_TIME, events)))
        out.values["request_id"] = rids
        for key in ("time_ns", "request_id", "event"):
            out.missing[key][:] = False
        bad |= wrong                      # in place: checks.columns hold this array
        bad |= rids == None                                     # noqa: E711 (elementwise)
        return out, bad

    def flush(self) -> Flushed:
        """Turn the buffered events into Columns; the lines with a row this path does not
        take are left out and returned with their bytes."""
        c, self.chunk = self.chunk, _Chunk()
        if not c.lines:
            return Flushed()
        lines = np.array(c.lines, dtype=np.int64).reshape(-1, 2)
        ev = self._events(c, lines)
        other = ev.codes == OTHER
        others = [a for a in map(_ATTRS, _pick(ev.items, np.flatnonzero(other))) if a]
        others += filter(None, map(_ATTRS, c.spans))
        checks = _Checks(other_members=members(list(map(
            _VALUE, chain.from_iterable(others + c.other_attrs)))))

        s_idx = np.flatnonzero(ev.codes == STEP)
        steps, s_bad = Columns.empty(otlp.STEP_ATTRS, len(s_idx)), np.zeros(len(s_idx), bool)
        if len(s_idx):
            s_attrs = [a if a is not None else () for a in map(_ATTRS, _pick(ev.items, s_idx))]
            read_events(s_attrs, slice(None), otlp.STEP_ATTRS, otlp.STEP_REQUIRED, steps,
                        s_bad, checks)
        j_idx = np.flatnonzero(ev.codes >= FIRST_JOURNEY)
        journeys, j_bad = self._journeys(c, ev, j_idx, checks)
        # Single-kind values. Without escapes every member key of the lines is counted in
        # c.member_keys (more if the text holds other "...Value" keys). When every documented
        # value read has its own member (no row is bad yet) and the count is one per
        # documented value plus the members of all other decoded values, no documented value
        # has a second member. Otherwise look at each value.
        if (s_bad.any() or j_bad.any()
                or c.member_keys != checks.documented + checks.other_members):
            for col, kind, rows, bad in checks.columns:
                mixed = single_kind(col, kind)
                if mixed is not None:
                    bad[rows] |= mixed
        linenos = lines[:, 0]
        steps.line, journeys.line = linenos[ev.line_pos[s_idx]], linenos[ev.line_pos[j_idx]]
        bad = np.union1d(steps.line[s_bad], journeys.line[j_bad])
        good = ~np.isin(linenos, bad)
        if len(bad):
            steps = steps.take(~np.isin(steps.line, bad))
            journeys = journeys.take(~np.isin(journeys.line, bad))
        self.steps.append(steps)
        self.journeys.append(journeys)
        other_per_line = np.bincount(ev.line_pos[other], minlength=len(linenos))
        return Flushed(lines=int(good.sum()), events=len(steps) + len(journeys),
                       other_events=int(other_per_line[good].sum()),
                       bad_lines=[(int(n), c.raw[int(n)]) for n in bad])
