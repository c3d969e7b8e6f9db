"""Write a replay as the instrumented server and the load generator would have.

``<out>/<experiment>/``: ``exp-config.yaml``, ``profile.yaml`` and ``results/config.yaml``
copied verbatim; ``traces.json`` (OTLP JSON lines in the format of ``otlp.py``);
``results/summary_lifecycle_metrics.json`` and one ``results/stage_<k>_lifecycle_metrics.json``
per load stage (clientmetrics.py); ``replay_truth.parquet``, the
GENERATOR TRUTH per simulated step (read by tests and validation only, never by the report).

Traces: ``step.BATCH_SUMMARY`` for the seeded 10 % sample (one ``scheduler_steps`` span each,
scope ``vllm.scheduler.step``) with ``step.ts_start_ns`` = start of schedule(),
``step.ts_end_ns`` = start + its CPU time, ``step.duration_us`` = (end − start) // 1000;
journey events for every request on one ``llm_core`` span (scope ``vllm.scheduler``,
attribute ``gen_ai.request.id``) with ``ts.monotonic_ns`` and ``ts.monotonic`` on the same
monotonic clock. Spans in end-time order, EXPORT_BATCH_SPANS per line (OpenTelemetry's batch
span processor default). Identifiers are BLAKE2 hashes of (experiment, index): no wall clock
and no hash randomness, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from ..traces import otlp
from . import clientmetrics
from .replay import MONOTONIC_ORIGIN_NS, SimResult

EXPORT_BATCH_SPANS = 512
TRUTH_FILE = "replay_truth.parquet"
COPIED = ("exp-config.yaml", "profile.yaml", "results/config.yaml")


def _hex(key: str, nbytes: int) -> str:
    return hashlib.blake2b(key.encode(), digest_size=nbytes).hexdigest()


def _step_spans(res: SimResult) -> tuple[list[dict], np.ndarray]:
    s = res.steps[res.steps["sampled"]]
    total, epoch, exp_id = res.kv_blocks_total, res.epoch_ns, res.experiment.experiment_id
    spans, ends = [], []
    cols = {c: s[c].to_numpy().tolist() for c in s.columns}
    for i in range(len(s)):
        start, end = cols["ts_start_ns"][i], cols["ts_end_ns"][i]
        used = cols["kv_blocks_used"][i]
        prefill, decode = cols["prefill_tokens"][i], cols["decode_tokens"][i]
        attrs = {
            "step.id": cols["step_id"][i], "step.ts_start_ns": MONOTONIC_ORIGIN_NS + start,
            "step.ts_end_ns": MONOTONIC_ORIGIN_NS + end, "step.duration_us": (end - start) // 1000,
            "batch.prefill_tokens": prefill, "batch.decode_tokens": decode,
            "batch.num_prefill_reqs": cols["num_prefill_reqs"][i],
            "batch.num_decode_reqs": cols["num_decode_reqs"][i],
            "batch.scheduled_tokens": prefill + decode,
            "batch.num_finished": cols["num_finished"][i],
            "batch.num_preempted": cols["num_preempted"][i],
            "queue.running_depth": cols["running"][i], "queue.waiting_depth": cols["waiting"][i],
            "kv.usage_gpu_ratio": used / total, "kv.blocks_total_gpu": total,
            "kv.blocks_free_gpu": total - used,
        }
        key = f"{exp_id}/step/{cols['step_id'][i]}"
        spans.append(otlp.span(otlp.STEP_SPAN, _hex(key, 16), _hex(key, 8), epoch + start,
                               epoch + end, [otlp.event(otlp.BATCH_SUMMARY, epoch + end, attrs)]))
        ends.append(epoch + end)
    return spans, np.asarray(ends, dtype=np.int64)


def _journey_spans(res: SimResult) -> tuple[list[dict], np.ndarray]:
    """One ``llm_core`` span per request holding its journey events, in event order."""
    j = res.journeys()
    j = j.iloc[np.argsort(res.events["request"].to_numpy(), kind="stable")]
    rid = res.events["request"].to_numpy()[j.index.to_numpy()]
    names = [otlp.JOURNEY_PREFIX + e for e in j["event"].tolist()]
    times = j["time_ns"].tolist()
    keys = list(otlp.JOURNEY_ATTRS)
    cols = [j[k].astype(object).where(j[k].notna(), None).tolist() if j[k].dtype == "string"
            else j[k].tolist() for k in keys]
    bounds = np.flatnonzero(np.diff(rid)) + 1
    starts = np.concatenate([[0], bounds]).astype(int).tolist()
    stops = np.concatenate([bounds, [len(rid)]]).astype(int).tolist()
    arrival = (res.epoch_ns + res.requests["arrival_ns"].to_numpy()).tolist()
    ids = res.requests["request_id"].tolist()
    exp_id = res.experiment.experiment_id
    spans, ends = [], []
    for a, b in zip(starts, stops):
        r = int(rid[a])
        events = [otlp.event(names[i], times[i], dict(zip(keys, (c[i] for c in cols))))
                  for i in range(a, b)]
        key = f"{exp_id}/req/{r}"
        spans.append(otlp.span(otlp.JOURNEY_SPAN, _hex(key, 16), _hex(key, 8), arrival[r],
                               times[b - 1], events, {otlp.REQUEST_ID_KEY: ids[r]}))
        ends.append(times[b - 1])
    return spans, np.asarray(ends, dtype=np.int64)


def write_traces(res: SimResult, path: Path) -> int:
    """traces.json: step and journey spans by end time, EXPORT_BATCH_SPANS per line.
    Returns the number of lines."""
    step_spans, step_end = _step_spans(res)
    j_spans, j_end = _journey_spans(res)
    spans = step_spans + j_spans
    is_step = np.concatenate([np.ones(len(step_spans), bool), np.zeros(len(j_spans), bool)])
    order = np.lexsort((np.arange(len(spans)), np.concatenate([step_end, j_end])))
    lines = 0
    with open(path, "wb") as fh:
        for a in range(0, len(order), EXPORT_BATCH_SPANS):
            batch = order[a:a + EXPORT_BATCH_SPANS].tolist()
            fh.write(otlp.export_line({
                otlp.STEP_SCOPE: [spans[i] for i in batch if is_step[i]],
                otlp.JOURNEY_SCOPE: [spans[i] for i in batch if not is_step[i]]}))
            lines += 1
    return lines


def summary_metrics(res: SimResult) -> dict:
    """The load generator's summary of this replay (clientmetrics.summary)."""
    return clientmetrics.summary(res.requests, res.segments, res.steps["out_ns"].to_numpy())


def stage_metrics(res: SimResult) -> list[dict]:
    """The load generator's per-stage summaries of this replay, in stage order."""
    return clientmetrics.stage_summaries(res.requests, res.segments, res.steps["out_ns"].to_numpy())


def write_truth(res: SimResult, path: Path) -> None:
    """replay_truth.parquet: the generator's truth, one row per simulated step."""
    table = res.truth()
    table.attrs = {}
    pd.DataFrame(table).to_parquet(path, index=False)


def write_experiment(res: SimResult, out_root: Path) -> Path:
    """<out_root>/<experiment>/{configs, traces.json, results/…, replay_truth.parquet}."""
    exp = res.experiment
    d = Path(out_root) / exp.experiment_id
    (d / "results").mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if (exp.path / name).is_file():
            shutil.copyfile(exp.path / name, d / name)
    write_traces(res, d / "traces.json")
    (d / "results" / "summary_lifecycle_metrics.json").write_bytes(
        orjson.dumps(summary_metrics(res), option=orjson.OPT_INDENT_2) + b"\n")
    for k, stage in enumerate(stage_metrics(res)):
        (d / "results" / f"stage_{k}_lifecycle_metrics.json").write_bytes(
            orjson.dumps(stage, option=orjson.OPT_INDENT_2) + b"\n")
    write_truth(res, d / TRUTH_FILE)
    return d
