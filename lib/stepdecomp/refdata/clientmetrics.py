"""Client-side metrics computed the way the study's load generator computed them.

inference-perf (docs/measurement.md §4) timestamps streamed server-sent events on the client and
summarises per request:

* TTFT = first event − send time; E2E (request_latency) = last event − send time;
* TPOT = (last event − first event) / (events − 1), over *all* timestamped events;
* ITL = every gap between consecutive events of a request;
* NTPOT = E2E / output tokens;
* failures: requests that raised (here: the 300 s client timeout), with their latency.

How many events a request produced is not a free choice: for every one of the 12 published
runs, (mean E2E − mean TTFT) / mean TPOT + 1 = 2·output_len + 2 (within ±1.5; every success
has exactly output_len tokens, so this ratio of means is exact), and the median ITL is
30–150 µs while its 75th percentile is ≈ 2·TPOT. So the generator recorded EVENTS_PER_TOKEN
= 2 timestamps per streamed token, EVENT_PAIR_GAP_US apart, plus END_EVENTS at the end of the
stream. This is an inference from the published summaries (targets/clientmetrics.py reproduces it); its
consequence is that the published TPOT is about half the time per output token.

A token sampled in step n is sent when update_from_output(n) returns (``out_ns``) and
reaches the client STREAM_LATENCY_US later (detokenisation, the SSE write, loopback HTTP).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..traces.experiments import END_OF_STREAM_EVENTS as END_EVENTS
from ..traces.experiments import EVENTS_PER_TOKEN

EVENT_PAIR_GAP_US = 20.0
STREAM_LATENCY_US = 200.0
END_OF_STREAM_US = 100.0
_PCTS = (("p0.1", 0.1), ("p1", 1), ("p5", 5), ("p10", 10), ("p25", 25), ("median", 50),
         ("p75", 75), ("p90", 90), ("p95", 95), ("p99", 99), ("p99.9", 99.9))


def distribution(x: np.ndarray) -> dict[str, float] | None:
    """inference-perf's DIST: mean, min, percentiles, max (None for no data)."""
    x = np.asarray(x, dtype=np.float64)
    if not len(x):
        return None
    q = np.percentile(x, [p for _, p in _PCTS])
    out = {"mean": float(np.sum(x) / len(x)), "min": float(x.min())}
    out.update({k: float(v) for (k, _), v in zip(_PCTS, q)})
    out["max"] = float(x.max())
    return out


def token_times_ns(segments: pd.DataFrame, out_ns: np.ndarray, ok: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(request, server send time) of every output token of the requests with ``ok``, in
    order: a segment emits one token per step from its first-token step to its last step;
    ``out_ns[s − 1]`` is when step s's outputs leave (step ids are 1, 2, …)."""
    seg = segments[ok[segments["request"].to_numpy()]]
    seg = seg.sort_values(["request", "first_step"], kind="stable")
    first = seg["first_step"].to_numpy()
    length = seg["last_step"].to_numpy() - first + 1
    starts = np.cumsum(length) - length
    rows = np.repeat(first - 1, length) + (np.arange(length.sum()) - np.repeat(starts, length))
    return np.repeat(seg["request"].to_numpy(), length), out_ns[rows]


def event_times_ns(req: np.ndarray, token_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The client's event timestamps: EVENTS_PER_TOKEN per token (EVENT_PAIR_GAP_US apart,
    STREAM_LATENCY_US after the server sent it) and END_EVENTS after each request's last
    token. Input sorted by request, then time; output likewise."""
    if not len(req):
        return req.copy(), token_ns.copy()
    lat, gap = int(STREAM_LATENCY_US * 1000), int(EVENT_PAIR_GAP_US * 1000)
    per_tok = lat + gap * np.arange(EVENTS_PER_TOKEN)
    t_tok = (token_ns[:, None] + per_tok[None, :]).ravel()
    r_tok = np.repeat(req, EVENTS_PER_TOKEN)
    last = np.flatnonzero(np.r_[req[1:] != req[:-1], True])
    end = token_ns[last] + lat + int(END_OF_STREAM_US * 1000)
    t_end = (end[:, None] + gap * np.arange(END_EVENTS)[None, :]).ravel()
    r_end = np.repeat(req[last], END_EVENTS)
    r_all = np.concatenate([r_tok, r_end])
    t_all = np.concatenate([t_tok, t_end])
    order = np.lexsort((t_all, r_all))
    return r_all[order], t_all[order]


def request_metrics(req: np.ndarray, t_ns: np.ndarray, send_ns: np.ndarray) -> pd.DataFrame:
    """Per request (rows of the sorted event arrays): events, TTFT, E2E, TPOT (s), and the
    ITL gaps as a separate array (attribute ``itl_s`` of the frame)."""
    ids, first, count = np.unique(req, return_index=True, return_counts=True)
    last = first + count - 1
    ttft = (t_ns[first] - send_ns[ids]) / 1e9
    e2e = (t_ns[last] - send_ns[ids]) / 1e9
    tpot = (t_ns[last] - t_ns[first]) / 1e9 / np.maximum(count - 1, 1)
    same = req[1:] == req[:-1]
    frame = pd.DataFrame({"request": ids, "events": count, "ttft_s": ttft, "e2e_s": e2e,
                          "tpot_s": tpot})
    frame.attrs["itl_s"] = (np.diff(t_ns)[same]) / 1e9
    return frame


def summary(requests: pd.DataFrame, segments: pd.DataFrame, out_ns: np.ndarray,
            stage: int | None = None) -> dict[str, Any]:
    """results/summary_lifecycle_metrics.json (inference-perf schema, seconds) from the
    replay's requests (status, arrival_ns, prompt/output tokens, end_ns, stage) and token
    times; with ``stage``, stage_<stage>_lifecycle_metrics.json: the requests sent in that
    load stage only."""
    sent = (np.ones(len(requests), dtype=bool) if stage is None
            else (requests["stage"] == stage).to_numpy())
    success = (requests["status"] == "length").to_numpy()
    req, tok_ns = token_times_ns(segments, out_ns, success & sent)
    r, t = event_times_ns(req, tok_ns)
    send_all = requests["arrival_ns"].to_numpy()
    out_all = requests["output_tokens"].to_numpy()      # by request index (row position)
    m = request_metrics(r, t, send_all)
    requests = requests[sent]
    ok = success[sent]
    send = send_all[sent]
    prompt = requests["prompt_tokens"].to_numpy()
    out = requests["output_tokens"].to_numpy()
    fail_lat = (requests["end_ns"].to_numpy() - send)[~ok] / 1e9
    t_first = send.min() if len(send) else 0
    t_last = t.max() if len(t) else t_first
    span_s = (t_last - t_first) / 1e9
    per_s = (lambda v: float(v / span_s) if span_s > 0 else 0.0)
    o = out_all[m["request"].to_numpy()]
    return {
        "load_summary": {"count": int(len(requests)),
                         "schedule_delay": distribution(np.zeros(len(requests)))},
        "successes": {
            "count": int(ok.sum()),
            "latency": {"request_latency": distribution(m["e2e_s"].to_numpy()),
                        "time_to_first_token": distribution(m["ttft_s"].to_numpy()),
                        "time_per_output_token": distribution(m["tpot_s"].to_numpy()),
                        "inter_token_latency": distribution(m.attrs["itl_s"]),
                        "normalized_time_per_output_token": distribution(m["e2e_s"].to_numpy() / o)},
            "throughput": {"input_tokens_per_sec": per_s(prompt[ok].sum()),
                           "output_tokens_per_sec": per_s(out[ok].sum()),
                           "total_tokens_per_sec": per_s(prompt[ok].sum() + out[ok].sum()),
                           "requests_per_sec": per_s(ok.sum())},
            "prompt_len": distribution(prompt[ok]), "output_len": distribution(out[ok])},
        "failures": {"count": int((~ok).sum()), "request_latency": distribution(fail_lat),
                     "prompt_len": distribution(prompt[~ok])},
    }


def stage_summaries(requests: pd.DataFrame, segments: pd.DataFrame,
                    out_ns: np.ndarray) -> list[dict[str, Any]]:
    """One summary per load stage, in stage order (stage_<k>_lifecycle_metrics.json)."""
    stages = np.unique(requests["stage"].to_numpy())
    return [summary(requests, segments, out_ns, int(k)) for k in stages]
