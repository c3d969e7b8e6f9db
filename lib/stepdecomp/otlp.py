"""The trace format (../docs: trace-format): OTLP JSON lines carrying vLLM step and journey events.

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

from typing import Any, Iterable, Mapping, Sequence

import orjson

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
