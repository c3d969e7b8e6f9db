"""The trace format (docs/trace-format.md): OTLP JSON lines carrying vLLM step and journey events.

One place knows the event names, attribute keys and their types; the loader decodes with
it and the fixture / reference-data writers encode with it, so the two cannot drift.

Journey semantics this repository relies on (the reference-data replay writes them this
way; the reconstruction in ``reconstruct.py`` reads them this way). Every journey event
carries ``scheduler.step``; a request's life is split into *segments*, each opened by a
``journey.SCHEDULED`` event (``schedule.kind`` FIRST, then RESUME after a preemption):

* ``QUEUED``: ``scheduler.step`` = id of the next step to be scheduled when it arrived.
* ``SCHEDULED`` at step S: the request runs in step S. ``prefill.done_tokens`` = prompt
  tokens already in KV at admission (prefix-cache hits; at least one token is always
  computed); ``decode.done_tokens`` = k0, output tokens generated before this segment.
  The segment computes T = prefill.total_tokens + k0 - prefill.done_tokens tokens of
  prefill (on RESUME the prompt and the k0 generated tokens are recomputed).
* ``FIRST_TOKEN`` at step F: the step whose prefill chunk completed the prompt and sampled
  output token 1 (``decode.done_tokens`` = 1). Only emitted once per request.
* ``PREEMPTED`` at step P, and ``FINISHED`` with ``finish.status`` = ``aborted``: the
  request is no longer in step P (it last ran in step P-1). ``decode.done_tokens`` = k1.
* ``FINISHED`` (stopped / length) at step X: the step that produced its last token (k1).
* A segment that ends at last-run step X with k1 > k0 completed its prefill at
  E = X - (k1 - k0 - 1) (E = F for the first segment) and decoded one token per step in
  E+1..X; the context (KV) length it attends at decode step s is
  prefill.total_tokens + k0 + (s - E). With k1 == k0 the segment was all prefill.
* Prefill chunks are greedy under max_num_batched_tokens B: in a step, decodes take one
  token each, then prefilling requests in admission order take min(remaining, B - used).
  Admission order within a step is the order of the SCHEDULED events' ``ts.monotonic``.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, Sequence

import msgspec
import orjson
from msgspec import UNSET, Raw, Struct, UnsetType

BATCH_SUMMARY = "step.BATCH_SUMMARY"
JOURNEY_PREFIX = "journey."
JOURNEY_EVENTS = ("QUEUED", "SCHEDULED", "FIRST_TOKEN", "FINISHED", "PREEMPTED")
REQUEST_ID_KEY = "gen_ai.request.id"
STEP_SCOPE = "vllm.scheduler.step"
STEP_SPAN = "scheduler_steps"
JOURNEY_SCOPE = "vllm.scheduler"
JOURNEY_SPAN = "llm_core"

#: step.BATCH_SUMMARY attributes, in the order the format documents them, with their kind.
STEP_ATTRS: dict[str, str] = {
    "step.id": "int",
    "step.ts_start_ns": "int",
    "step.ts_end_ns": "int",
    "step.duration_us": "int",
    "batch.prefill_tokens": "int",
    "batch.decode_tokens": "int",
    "batch.num_prefill_reqs": "int",
    "batch.num_decode_reqs": "int",
    "batch.scheduled_tokens": "int",
    "batch.num_finished": "int",
    "batch.num_preempted": "int",
    "queue.running_depth": "int",
    "queue.waiting_depth": "int",
    "kv.usage_gpu_ratio": "float",
    "kv.blocks_total_gpu": "int",
    "kv.blocks_free_gpu": "int",
}

#: journey.* event attributes and their kind.
JOURNEY_ATTRS: dict[str, str] = {
    "scheduler.step": "int",
    "ts.monotonic": "float",
    # newer traces: the same clock in exact int ns (older ones only carry ts.monotonic);
    # the loader keeps it as read (nullable), consumers fall back to round(ts.monotonic·1e9)
    "ts.monotonic_ns": "int",
    "phase": "str",
    "prefill.total_tokens": "int",
    "prefill.done_tokens": "int",
    "decode.max_tokens": "int",
    "decode.done_tokens": "int",
    "schedule.kind": "str",
    "finish.status": "str",
    "num_preemptions": "int",
}


# --------------------------------------------------------------------------- decoding

def attr_value(value: Mapping[str, Any]) -> Any:
    """Decode one OTLP AnyValue. 64-bit ints arrive as strings ("intValue": "29")."""
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    return None


def attrs_to_dict(attributes: Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: attr_value(a.get("value") or {}) for a in attributes or ()}


def iter_spans(request: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """Every span of one ExportTraceServiceRequest, whatever its scope."""
    for rs in request.get("resourceSpans") or ():
        for ss in rs.get("scopeSpans") or ():
            yield from ss.get("spans") or ()


# --------------------------------------------------------------------------- strict decoding
#
# What the loader uses: every documented attribute is decoded to its kind or the event is
# rejected with a reason. Coercion happens only where it is lossless (an int written as a
# JSON number, an integral double below 2**53 for an int attribute, an int below 2**53 for a
# float attribute); nothing is clipped, wrapped or guessed.

MISSING = "missing attribute"
WRONG_TYPE = "wrong type"
OUT_OF_RANGE = "out of range"
#: a value that contradicts the event's own other values (step.duration_us vs its timestamps)
INCONSISTENT = "inconsistent"
DUPLICATE = "duplicate"
#: a step id seen before in the file with different content (the first is kept)
CONFLICTING_DUPLICATE = "conflicting duplicate"
NO_REQUEST_ID = "no request id"
#: Why an event can be rejected, in the order the loader checks them.
REJECT_CATEGORIES = (MISSING, WRONG_TYPE, OUT_OF_RANGE, INCONSISTENT, DUPLICATE,
                     CONFLICTING_DUPLICATE, NO_REQUEST_ID)

#: Attributes without which an event is of no use downstream (phases, FLOPs, the join of
#: journeys with steps), so it is rejected rather than kept with a hole.
STEP_REQUIRED = ("step.id", "step.duration_us", "batch.prefill_tokens", "batch.decode_tokens")
JOURNEY_REQUIRED = ("scheduler.step",)
#: Every documented number is a count, id, duration or clock reading: >= 0. Upper bounds
#: beyond int64 / finite:
FLOAT_MAX: dict[str, float] = {"kv.usage_gpu_ratio": 1.0}
INT64_MAX = 2**63 - 1
#: Largest magnitude an int and a double share exactly.
EXACT_INT_IN_FLOAT = 2**53
#: Digits of INT64_MAX: decimal text with more significant digits is beyond int64.
INT64_DIGITS = len(str(INT64_MAX))


class BadAttribute(ValueError):
    """An event is rejected: ``category`` (one of REJECT_CATEGORIES) and the attribute."""

    def __init__(self, category: str, key: str, detail: str = "") -> None:
        super().__init__(f"{category}: {key}" + (f" ({detail})" if detail else ""))
        self.category, self.key, self.detail = category, key, detail

    @property
    def reason(self) -> str:
        """What the per-file counts are keyed by: category and attribute, no value."""
        return f"{self.category}: {self.key}"


def _int_from_float(v: float, key: str) -> int:
    if v != v or v in (float("inf"), float("-inf")) or abs(v) > INT64_MAX:
        raise BadAttribute(OUT_OF_RANGE, key, f"{v!r}")
    if not v.is_integer() or abs(v) > EXACT_INT_IN_FLOAT:
        raise BadAttribute(WRONG_TYPE, key, f"int expected, got {v!r}")
    return int(v)


def _is_int_text(v: str) -> bool:
    """ASCII decimal digits with an optional minus: what OTLP JSON writes for an int64."""
    body = v[1:] if v[:1] == "-" else v
    return body.isascii() and body.isdigit()


def decode_int(value: Any, key: str) -> int:
    """An int attribute: intValue as a decimal string or a JSON int (an integral double is
    accepted below 2**53). Must be in [0, 2**63): every documented int is non-negative."""
    if type(value) is not dict or len(value) != 1:
        raise BadAttribute(WRONG_TYPE, key, "not a single-typed AnyValue")
    v = value.get("intValue", value.get("doubleValue"))
    t = type(v)
    if t is str and "intValue" in value and _is_int_text(v):
        if len(v.lstrip("-").lstrip("0")) > INT64_DIGITS:     # int() of 4300+ digits raises
            raise BadAttribute(OUT_OF_RANGE, key, "beyond int64")
        i = int(v)
    elif t is int:
        i = v
    elif t is float:
        i = _int_from_float(v, key)
    else:
        raise BadAttribute(WRONG_TYPE, key, f"int expected, got {value!r:.60}")
    if i < 0 or i > INT64_MAX:
        raise BadAttribute(OUT_OF_RANGE, key, "negative" if i < 0 else "beyond int64")
    return i


_FLOAT_WORDS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def decode_float(value: Any, key: str) -> float:
    """A float attribute: doubleValue (a JSON number, or a numeric string as proto3 JSON
    allows), or an intValue below 2**53. Must be finite, >= 0 and <= FLOAT_MAX[key]."""
    if type(value) is not dict or len(value) != 1:
        raise BadAttribute(WRONG_TYPE, key, "not a single-typed AnyValue")
    if "doubleValue" in value:
        v = value["doubleValue"]
        if type(v) is str:
            v = _FLOAT_WORDS.get(v, v)
            try:
                v = float(v)
            except ValueError:
                raise BadAttribute(WRONG_TYPE, key, f"float expected, got {v!r:.40}") from None
        elif type(v) is not float and type(v) is not int:
            raise BadAttribute(WRONG_TYPE, key, f"float expected, got {v!r:.40}")
    elif "intValue" in value:
        i = decode_int(value, key)
        if i > EXACT_INT_IN_FLOAT:
            raise BadAttribute(WRONG_TYPE, key, "int beyond 2**53 for a float")
        v = i
    else:
        raise BadAttribute(WRONG_TYPE, key, f"float expected, got {value!r:.60}")
    f = float(v)
    if not (0.0 <= f <= FLOAT_MAX.get(key, float("inf"))):   # also false for NaN
        raise BadAttribute(OUT_OF_RANGE, key, f"{f!r}")
    return f


def decode_str(value: Any, key: str) -> str:
    if type(value) is not dict or len(value) != 1 or type(value.get("stringValue")) is not str:
        raise BadAttribute(WRONG_TYPE, key, f"string expected, got {value!r:.60}")
    return value["stringValue"]


DECODERS = {"int": decode_int, "float": decode_float, "str": decode_str}


def decode_attributes(attributes: Any, kinds: Mapping[str, str],
                      required: Sequence[str] = ()) -> dict[str, Any]:
    """The documented attributes of one event, decoded strictly; BadAttribute otherwise.

    Undocumented keys are skipped (whatever their value); a documented key given twice, an
    entry that is not {"key": str, "value": AnyValue}, or a value of the wrong kind rejects
    the event; so does a missing ``required`` key. ``attributes`` absent or null = none."""
    row: dict[str, Any] = {}
    if attributes is None:
        attributes = ()
    elif type(attributes) is not list:
        raise BadAttribute(WRONG_TYPE, "attributes", "not a list")
    for a in attributes:
        key = a.get("key") if type(a) is dict else None
        if type(key) is not str:
            raise BadAttribute(WRONG_TYPE, "attributes", "an entry without a string key")
        kind = kinds.get(key)
        if kind is None:
            continue
        if key in row:
            raise BadAttribute(WRONG_TYPE, key, "given twice")
        if "value" not in a:
            raise BadAttribute(WRONG_TYPE, key, "no value")
        row[key] = DECODERS[kind](a["value"], key)
    for key in required:
        if key not in row:
            raise BadAttribute(MISSING, key)
    return row


def request_id(*attribute_lists: Any) -> str | None:
    """gen_ai.request.id from the first list that carries it (span, then event attributes):
    a non-empty string, or an int (kept as its decimal text). None when absent or unusable."""
    for attributes in attribute_lists:
        if type(attributes) is not list:
            continue
        for a in attributes:
            if type(a) is dict and a.get("key") == REQUEST_ID_KEY:
                v = a.get("value")
                v = v.get("stringValue", v.get("intValue")) if type(v) is dict else None
                if type(v) is str and v:
                    return v
                if type(v) is int and type(v) is not bool:
                    return str(v)
                return None
    return None


def iter_events(request: Mapping[str, Any], problems: list[str]) -> Iterator[tuple[Any, Any]]:
    """(span, event) for every event of one ExportTraceServiceRequest, whatever its scope.

    Absent or null containers are empty (proto3 JSON); a container of the wrong type is
    skipped and described in ``problems``. Older collectors write
    ``instrumentationLibrarySpans`` for ``scopeSpans``: both are read."""
    def items(parent: Any, key: str, what: str) -> list:
        v = parent.get(key)
        if v is None:
            return []
        if type(v) is not list:
            problems.append(f"{key} is not a list")
            return []
        good = [x for x in v if type(x) is dict]
        if len(good) != len(v):
            problems.append(f"a {what} is not an object")
        return good

    for rs in items(request, "resourceSpans", "resourceSpans entry"):
        for key in ("scopeSpans", "instrumentationLibrarySpans"):
            for ss in items(rs, key, f"{key} entry"):
                for sp in items(ss, "spans", "span"):
                    events = sp.get("events")
                    if events is None:
                        continue
                    if type(events) is not list:
                        problems.append("events is not a list")
                        continue
                    for ev in events:
                        yield sp, ev


# --------------------------------------------------------------------------- typed decoding
#
# The same lines decoded by msgspec into the Structs below: no dict per object, unknown keys
# skipped without being built. A line that does not fit them (a container of the wrong
# type, an AnyValue of an unknown kind, a value of an unexpected JSON type) fails to decode
# and is read with the dict-based functions above instead, which define what is accepted.
# Only the documented shapes are typed; ``otlp_columns`` turns the decoded events into
# columns and checks every value as strictly as ``decode_attributes`` does.

#: The kinds of an OTLP AnyValue, as JSON keys; exactly one is present in a valid value.
VALUE_FIELDS = ("stringValue", "intValue", "doubleValue", "boolValue", "bytesValue",
                "arrayValue", "kvlistValue")


class AnyValue(Struct, forbid_unknown_fields=True, gc=False):
    """One AnyValue of an event attribute, each kind a field (UNSET when absent). Int64s
    arrive as strings (or JSON ints); arrays and kvlists are kept raw (never decoded). Any
    other key fails the decode, so a value with a foreign member cannot pass as valid."""

    stringValue: str | UnsetType = UNSET
    intValue: str | int | UnsetType = UNSET
    doubleValue: float | UnsetType = UNSET
    boolValue: bool | UnsetType = UNSET
    bytesValue: str | UnsetType = UNSET
    arrayValue: Raw | UnsetType = UNSET
    kvlistValue: Raw | UnsetType = UNSET


class Attribute(Struct, gc=False):
    key: str
    value: AnyValue


class SpanValue(AnyValue, forbid_unknown_fields=False, gc=False):
    """A span attribute's AnyValue: only gen_ai.request.id is read from it (request_id
    accepts a string or an int there, hence the wider stringValue), other members are
    skipped as the dict path skips them."""

    stringValue: str | int | UnsetType = UNSET


class SpanAttribute(Struct, gc=False):
    key: str
    value: SpanValue


class Event(Struct, gc=False):
    name: str = ""
    timeUnixNano: str | int | float | None = None
    attributes: list[Attribute] | None = None


class Span(Struct, gc=False):
    attributes: list[SpanAttribute] | None = None
    events: list[Event] | None = None


class Scope(Struct, gc=False):
    """The resource or instrumentation scope: only its attributes are decoded (so that
    otlp_columns can count every AnyValue of a line)."""

    attributes: list[SpanAttribute] | None = None


class ScopeSpans(Struct, gc=False):
    scope: Scope | None = None
    spans: list[Span] | None = None


class ResourceSpans(Struct, gc=False):
    resource: Scope | None = None
    scopeSpans: list[ScopeSpans] | None = None
    instrumentationLibrarySpans: list[ScopeSpans] | None = None


class ExportRequest(Struct, gc=False):
    """One line: an ExportTraceServiceRequest. resourceSpans is required (a JSON object
    without it is not an export request: the dict path counts it as ignored)."""

    resourceSpans: list[ResourceSpans] | None


#: Decodes one line into an ExportRequest; msgspec.DecodeError (a ValidationError too) when
#: it is not JSON or does not fit the Structs.
TYPED_DECODER = msgspec.json.Decoder(ExportRequest)


def typed_request_id(attributes: list[Attribute] | list[SpanAttribute] | None) -> str | None:
    """request_id of one typed attribute list (the first entry keyed gen_ai.request.id
    decides: its stringValue, else intValue; a non-empty string, or an int as text)."""
    for a in attributes or ():
        if a.key == REQUEST_ID_KEY:
            v = a.value
            rid = v.stringValue if v.stringValue is not UNSET else v.intValue
            if type(rid) is str and rid:
                return rid
            return str(rid) if type(rid) is int else None
    return None


# --------------------------------------------------------------------------- encoding

def encode_attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    if isinstance(value, float):
        return {"key": key, "value": {"doubleValue": value}}
    return {"key": key, "value": {"stringValue": str(value)}}


def encode_attrs(attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [encode_attr(k, v) for k, v in attrs.items() if v is not None]


def event(name: str, time_ns: int, attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {"timeUnixNano": str(int(time_ns)), "name": name, "attributes": encode_attrs(attrs)}


def span(name: str, trace_id: str, span_id: str, start_ns: int, end_ns: int,
         events: Sequence[Mapping[str, Any]], attrs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": trace_id, "spanId": span_id, "name": name, "kind": 1,
                           "startTimeUnixNano": str(int(start_ns)),
                           "endTimeUnixNano": str(int(end_ns))}
    if attrs:
        out["attributes"] = encode_attrs(attrs)
    out["events"] = list(events)
    return out


def export_line(scope_spans: Mapping[str, Sequence[Mapping[str, Any]]],
                service_name: str = "vllm") -> bytes:
    """One JSON line: an ExportTraceServiceRequest holding the given spans per scope name."""
    request = {"resourceSpans": [{
        "resource": {"attributes": encode_attrs({"service.name": service_name})},
        "scopeSpans": [{"scope": {"name": scope}, "spans": list(spans)}
                       for scope, spans in scope_spans.items() if spans],
    }]}
    return orjson.dumps(request) + b"\n"
