"""Client-side plausibility: do the load generator's latencies fit the stated hardware?

Inputs are inference-perf ``summary_lifecycle_metrics.json`` files (all times in seconds):
the study's 12 published ones (``data/published_client_metrics.json``; the four
codellama-34b runs are held out and absent) and any ``results/summary_lifecycle_metrics.json``
in a trace root's experiment directories. Model and TP come from the run's directory name /
``exp-config.yaml`` (experiments.read_experiment), ``output_len`` from the effective
load-generator config ``results/config.yaml`` (``data.shared_prefix.output_len``; the
``profile.yaml`` of the run is the documented second source, named in ``output_len_source``).

What the published numbers show (docs/measurement.md §3, checked here on every run): every
successful request streams exactly O = output_len tokens (ignore_eos), and inference-perf's
per-request TPOT is (t_last_event − t_first_event) / (n_events − 1), so

    n_events = (mean E2E − mean TTFT) / mean TPOT + 1          (exact when n is the same
                                                                for every request)

On all 12 published runs n_events = 2·O + 2 within ±1.5, the median inter-token gap is
30–150 µs and its p75 is about 2·TPOT (one run: 1.5·TPOT): the generator recorded TWO events
per streamed token (plus about two at the end of the stream), so its TPOT is about half the
time per output token. The time per token the client actually observed is

    per_token = (E2E − TTFT) / (O − 1)

This is an inference from the published summaries, not a fact about the load generator's
code; :func:`client_summary` reports both TPOT and per_token, and the event counts behind
the inference. :func:`plausibility_table` compares both with the time a decode step needs to
stream the weights from HBM (:func:`weight_floor_ms`) for each candidate GPU and weight
precision. Compared with the mean TPOT, several runs fall below the H100 BF16 floor
(docs/measurement.md §3); compared with per_token, none does — which of the candidate
configurations the runs used stays an inference from these numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import yaml

from ..core import tables
from ..model import physical
from ..traces.experiments import END_OF_STREAM_EVENTS, EVENTS_PER_TOKEN, read_experiment
from ..core.paths import DATA_DIR, HARDWARE_DIR, MODELS_DIR, WORKLOADS_DIR, display_path
from ..hw.specs import GpuSpec, ModelSpec, load_gpu_spec, load_model_spec, with_weight_precision

PUBLISHED_CLIENT_METRICS = DATA_DIR / "published_client_metrics.json"
SUMMARY_RELPATH = Path("results") / "summary_lifecycle_metrics.json"
CONFIG_RELPATH = Path("results") / "config.yaml"
PROFILE_NAME = "profile.yaml"
OUTPUT_LEN_PATH = ("data", "shared_prefix", "output_len")

#: Bytes per weight parameter of each candidate precision (KV cache and activations aside).
CANDIDATE_GPUS = ("h100-sxm", "h200-sxm")
CANDIDATE_PRECISIONS = ("bf16", "fp8")
#: The floor counts the transformer layers and the LM head (read every decode step) but not
#: the input embedding, which a decode step only gathers B rows of. docs/measurement.md §3 counts
#: it (13.5 GB -> 4.02 ms for Llama-2-7B); without it the floor is 1-2 % lower (3.94 ms).
INCLUDE_EMBEDDING = False

#: |n_events − (EVENTS_PER_TOKEN·O + END_OF_STREAM_EVENTS)| within this: the pattern holds.
EVENT_COUNT_TOLERANCE = 1.5
#: A median inter-token gap below this (µs) is far too short for a decode step (> 3 ms):
#: at least half the recorded gaps are between events of the same token.
ITL_MEDIAN_MAX_US = 150.0
#: per_token / floor (or TPOT / floor) at or above this is consistent with the candidate.
CONSISTENT_MIN_RATIO = 1.0
MS_PER_S = 1e3
US_PER_S = 1e6

SUMMARY_COLUMNS = [
    "run", "model", "hf_id", "tp", "output_len", "output_len_source", "successes", "failures",
    "mean_ttft_ms", "mean_e2e_ms", "mean_tpot_ms", "itl_median_us", "itl_p75_over_tpot",
    "output_tokens_per_s", "events_per_request", "events_per_token", "two_events_per_token",
    "per_token_ms", "tpot_over_per_token", "decode_batch", "summary_source",
]
PLAUSIBILITY_COLUMNS = [
    "source", "run", "model", "tp", "gpu", "precision", "decode_batch", "experts_read_per_layer",
    "weight_bytes_per_gpu", "floor_ms", "mean_tpot_ms", "per_token_ms", "tpot_over_floor",
    "per_token_over_floor", "implied_bw_tpot_tb_s", "implied_bw_per_token_tb_s", "hbm_tb_s",
    "consistent_tpot", "consistent_per_token", "step_period_ms", "period_over_per_token",
]


#: Where a client summary comes from: the study's published file, or the analysed trace root
#: (core.tables: the report selects the published rows by it).
SOURCE_PUBLISHED = tables.SOURCE_PUBLISHED
SOURCE_TRACES = tables.SOURCE_TRACES


class ClientMetricsError(ValueError):
    """A client-metrics or config file is missing, unreadable or lacks a field; the message
    names the file."""


@dataclass(frozen=True)
class ClientRun:
    """One run's client summary and what the analysis needs to know about the run."""

    run: str
    model: str
    hf_id: str
    tp: int
    output_len: int
    output_len_source: str
    summary: Mapping[str, Any]
    summary_source: str


# --------------------------------------------------------------------------- reading

def read_json(path: Path) -> Any:
    """Parse a JSON file; a missing or malformed file is a ClientMetricsError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ClientMetricsError(f"{display_path(path)}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ClientMetricsError(f"{display_path(path)}: not valid JSON ({exc})") from None


def get_field(obj: Any, keys: Sequence[str], source: str) -> Any:
    """``obj[k0][k1]...``; a missing level is a ClientMetricsError naming the source file
    and the dotted field path."""
    cur = obj
    for i, key in enumerate(keys):
        if not isinstance(cur, Mapping) or key not in cur:
            raise ClientMetricsError(f"{source}: missing field {'.'.join(keys[:i + 1])!r}")
        cur = cur[key]
    return cur


def _number(obj: Any, keys: Sequence[str], source: str) -> float:
    value = get_field(obj, keys, source)
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ClientMetricsError(f"{source}: field {'.'.join(keys)!r} is not a number: {value!r}")
    return float(value)


def load_published(path: Path = PUBLISHED_CLIENT_METRICS) -> dict[str, Mapping[str, Any]]:
    """run directory name -> summary_lifecycle_metrics dict, from the published file."""
    raw = read_json(path)
    runs = get_field(raw, ("runs",), display_path(path))
    if not isinstance(runs, Mapping) or not runs:
        raise ClientMetricsError(f"{display_path(path)}: 'runs' is empty or not a mapping")
    return dict(runs)


def output_len_of(run_dir: Path) -> tuple[int, str]:
    """The run's output_len and the file it came from: ``results/config.yaml`` (the config
    inference-perf ran), else ``profile.yaml`` (single-line JSON); neither is an error."""
    for rel in (CONFIG_RELPATH, Path(PROFILE_NAME)):
        path = Path(run_dir) / rel
        if not path.is_file():
            continue
        try:
            cfg = yaml.safe_load(path.read_text())      # JSON is YAML: profile.yaml parses too
        except yaml.YAMLError as exc:
            raise ClientMetricsError(f"{display_path(path)}: not valid YAML ({exc})") from None
        value = get_field(cfg, OUTPUT_LEN_PATH, display_path(path))
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise ClientMetricsError(f"{display_path(path)}: output_len must be an integer ≥ 2, "
                                     f"got {value!r}")
        return value, display_path(path)
    raise ClientMetricsError(f"{display_path(run_dir)}: neither {CONFIG_RELPATH} nor "
                             f"{PROFILE_NAME} gives data.shared_prefix.output_len")


def make_run(run_dir: Path, summary: Mapping[str, Any], summary_source: str,
             models_dir: Path = MODELS_DIR) -> ClientRun:
    """A ClientRun for an experiment / run directory (model and TP as the loader resolves
    them: exp-config.yaml, else the directory name)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ClientMetricsError(f"{display_path(run_dir)}: run directory not found (needed for "
                                 f"model, TP and output_len of {summary_source})")
    exp = read_experiment(run_dir, models_dir)
    output_len, source = output_len_of(run_dir)
    return ClientRun(run=run_dir.name, model=exp.model, hf_id=exp.hf_id, tp=exp.tp,
                     output_len=output_len, output_len_source=source, summary=summary,
                     summary_source=summary_source)


def published_runs(path: Path = PUBLISHED_CLIENT_METRICS, workloads_dir: Path = WORKLOADS_DIR,
                   models_dir: Path = MODELS_DIR) -> list[ClientRun]:
    """The runs of the published file, each resolved from ``workloads_dir/<run>/``."""
    source = display_path(path)
    return [make_run(Path(workloads_dir) / run, summary, f"{source}#{run}", models_dir)
            for run, summary in sorted(load_published(path).items())]


def trace_root_runs(root: Path, models_dir: Path = MODELS_DIR) -> list[ClientRun]:
    """Every experiment directory under a trace root with ``results/summary_lifecycle_
    metrics.json`` (directories without one are not runs with client data)."""
    root = Path(root)
    if not root.is_dir():
        raise ClientMetricsError(f"{display_path(root)}: trace root not found")
    return [make_run(d, read_json(d / SUMMARY_RELPATH), display_path(d / SUMMARY_RELPATH), models_dir)
            for d in sorted(p for p in root.iterdir() if (p / SUMMARY_RELPATH).is_file())]


# --------------------------------------------------------------------------- summary

def client_runs_table(root: Path, published: Path = PUBLISHED_CLIENT_METRICS) -> pd.DataFrame:
    """:func:`client_summary` of the study's published runs (``source`` = published) and of
    every run with a summary under the analysed trace ``root`` (``source`` = traces)."""
    pub = client_summary(published_runs(published)).assign(source=SOURCE_PUBLISHED)
    own = client_summary(trace_root_runs(root)).assign(source=SOURCE_TRACES)
    out = pd.concat([pub, own], ignore_index=True)
    return out[["source", *SUMMARY_COLUMNS]]


def _summary_row(r: ClientRun) -> dict[str, Any]:
    s, src = r.summary, r.summary_source
    lat = ("successes", "latency")
    ttft = _number(s, (*lat, "time_to_first_token", "mean"), src)
    e2e = _number(s, (*lat, "request_latency", "mean"), src)
    tpot = _number(s, (*lat, "time_per_output_token", "mean"), src)
    itl_med = _number(s, (*lat, "inter_token_latency", "median"), src)
    itl_p75 = _number(s, (*lat, "inter_token_latency", "p75"), src)
    n_events = (e2e - ttft) / tpot + 1.0
    per_token = (e2e - ttft) / (r.output_len - 1)
    out_tps = _number(s, ("successes", "throughput", "output_tokens_per_sec"), src)
    expected = EVENTS_PER_TOKEN * r.output_len + END_OF_STREAM_EVENTS
    return {
        "run": r.run, "model": r.model, "hf_id": r.hf_id, "tp": r.tp, "output_len": r.output_len,
        "output_len_source": r.output_len_source,
        "successes": int(_number(s, ("successes", "count"), src)),
        "failures": int(_number(s, ("failures", "count"), src)),
        "mean_ttft_ms": ttft * MS_PER_S, "mean_e2e_ms": e2e * MS_PER_S, "mean_tpot_ms": tpot * MS_PER_S,
        "itl_median_us": itl_med * US_PER_S, "itl_p75_over_tpot": itl_p75 / tpot,
        "output_tokens_per_s": out_tps, "events_per_request": n_events,
        "events_per_token": (n_events - END_OF_STREAM_EVENTS) / r.output_len,
        "two_events_per_token": bool(abs(n_events - expected) <= EVENT_COUNT_TOLERANCE
                                     and itl_med * US_PER_S <= ITL_MEDIAN_MAX_US),
        "per_token_ms": per_token * MS_PER_S, "tpot_over_per_token": tpot / per_token,
        "decode_batch": out_tps * per_token, "summary_source": src}


def client_summary(runs: Iterable[ClientRun]) -> pd.DataFrame:
    """One row per run: the ``SUMMARY_COLUMNS``.

    events_per_request n = (E2E − TTFT)/TPOT + 1 on the means; events_per_token =
    (n − END_OF_STREAM_EVENTS)/O; two_events_per_token: |n − (2·O + 2)| ≤
    ``EVENT_COUNT_TOLERANCE`` and median inter-token gap ≤ ``ITL_MEDIAN_MAX_US``.
    per_token_ms = (E2E − TTFT)/(O − 1). decode_batch = output tokens/s × per-token time:
    by Little's law the mean number of requests decoding at once (a time average over the
    run, quiet periods included).
    """
    return pd.DataFrame([_summary_row(r) for r in runs], columns=SUMMARY_COLUMNS)


# --------------------------------------------------------------------------- floors

def weight_bytes_per_gpu(spec: ModelSpec, tp: int, precision: str, decode_batch: float,
                         include_embedding: bool = INCLUDE_EMBEDDING) -> float:
    """Weight bytes one decode step of ``decode_batch`` requests reads per GPU.

    L·(attention + router + E_B·3·d·d_ff)·b / tp for the layers, with E_B =
    physical.expected_distinct_experts(B) = E·(1 − (1 − k/E)^B) experts read per layer
    (1 for a dense model), plus the LM head d·vocab·b / tp (every decode step samples), plus
    the input embedding d·vocab·b / tp only if ``include_embedding``. b =
    ``specs.WEIGHT_BYTES_PER_PARAM[precision]``. At a mean batch B this is E_B at the mean, which is at
    least the mean of E_B (concave in B): for MoE it can exceed the average step's bytes;
    at the study's batches (B ≳ 20, 0.75^20 < 0.4 %) every expert is read either way.
    """
    if not decode_batch > 0:
        raise ValueError(f"decode_batch must be positive, got {decode_batch}")
    s = with_weight_precision(spec, precision)
    b = float(physical.weight_bytes(decode_batch, s, tp)[()])
    if include_embedding:
        b += s.lm_head_params * s.bytes_per_param / tp
    return b


def weight_floor_ms(spec: ModelSpec, tp: int, gpu: GpuSpec, precision: str, decode_batch: float,
                    include_embedding: bool = INCLUDE_EMBEDDING) -> float:
    """Least time per decode step: the weights it reads per GPU / HBM bandwidth, in ms.

    Weights only: KV cache reads, kernel launch gaps and the all-reduce only add to it, so
    a time per token below this floor cannot have run on ``gpu`` with ``precision`` weights.
    """
    return weight_bytes_per_gpu(spec, tp, precision, decode_batch, include_embedding) \
        / gpu.hbm_bytes_per_s * MS_PER_S


def _candidate_row(row: pd.Series, spec: ModelSpec, gpu_name: str, gpu: GpuSpec, precision: str,
                   period_us: float, include_embedding: bool) -> dict[str, Any]:
    tp, batch = int(row["tp"]), float(row["decode_batch"])
    wbytes = weight_bytes_per_gpu(spec, tp, precision, batch, include_embedding)
    floor = wbytes / gpu.hbm_bytes_per_s * MS_PER_S
    tpot, per_tok = float(row["mean_tpot_ms"]), float(row["per_token_ms"])
    return {
        "source": row.get("source", SOURCE_PUBLISHED), "run": row["run"], "model": row["model"],
        "tp": tp, "gpu": gpu_name, "precision": precision,
        "decode_batch": batch,
        "experts_read_per_layer": float(physical.expected_distinct_experts(batch, spec)),
        "weight_bytes_per_gpu": wbytes, "floor_ms": floor, "mean_tpot_ms": tpot,
        "per_token_ms": per_tok, "tpot_over_floor": tpot / floor,
        "per_token_over_floor": per_tok / floor,
        "implied_bw_tpot_tb_s": wbytes / (tpot / MS_PER_S) / 1e12,
        "implied_bw_per_token_tb_s": wbytes / (per_tok / MS_PER_S) / 1e12,
        "hbm_tb_s": gpu.hbm_tb_per_s,
        "consistent_tpot": bool(tpot / floor >= CONSISTENT_MIN_RATIO),
        "consistent_per_token": bool(per_tok / floor >= CONSISTENT_MIN_RATIO),
        "step_period_ms": period_us / 1e3, "period_over_per_token": period_us / 1e3 / per_tok}


def plausibility_table(summary: pd.DataFrame, gpus: Sequence[str] = CANDIDATE_GPUS,
                       precisions: Sequence[str] = CANDIDATE_PRECISIONS,
                       step_period_us: Mapping[str, float] | None = None,
                       models_dir: Path = MODELS_DIR, hardware_dir: Path = HARDWARE_DIR,
                       include_embedding: bool = INCLUDE_EMBEDDING) -> pd.DataFrame:
    """Per run × candidate (GPU, weight precision): the ``PLAUSIBILITY_COLUMNS``.

    ``summary`` is :func:`client_summary`'s table. floor_ms = :func:`weight_floor_ms` at the
    run's decode_batch; ratios mean TPOT / floor and per_token / floor; the implied minimum
    HBM bandwidth = weight bytes / time per step (what the GPU must at least sustain if
    that time were the decode step); consistent_* = ratio ≥ ``CONSISTENT_MIN_RATIO``.
    ``step_period_us``: optional run / experiment_id -> median step_period_us of its trace
    (targets.step_targets), compared with per_token (≈ 1 when a request decodes one token
    per iteration); NaN for runs without one and for published rows (``source`` column):
    a trace's period is compared with its own run's client summary only.
    """
    periods = dict(step_period_us or {})
    rows = []
    for _, row in summary.iterrows():
        spec = load_model_spec(str(row["hf_id"]), models_dir)
        own_trace = row.get("source", SOURCE_TRACES) == SOURCE_TRACES
        period = float(periods.get(str(row["run"]), np.nan)) if own_trace else np.nan
        for gpu_name in gpus:
            gpu = load_gpu_spec(gpu_name, hardware_dir)
            for precision in precisions:
                rows.append(_candidate_row(row, spec, gpu_name, gpu, precision, period,
                                           include_embedding))
    return pd.DataFrame(rows, columns=PLAUSIBILITY_COLUMNS)


def below_floor(table: pd.DataFrame, reference: tuple[str, str]) -> dict[str, int]:
    """Runs of a :func:`plausibility_table` whose mean TPOT (``below_tpot``) and whose time
    per token (``below_per_token``) fall below the floor of ``reference`` (gpu, precision)."""
    gpu, precision = reference
    ref = table[(table["gpu"] == gpu) & (table["precision"] == precision)]
    return {"runs": len(ref), "below_tpot": int((~ref["consistent_tpot"].astype(bool)).sum()),
            "below_per_token": int((~ref["consistent_per_token"].astype(bool)).sum())}


FLOOR_COLUMNS = ["gpu", "precision", "runs", "below_tpot", "below_per_token"]


def floor_candidates(table: pd.DataFrame) -> pd.DataFrame:
    """The published runs of a :func:`plausibility_table` against each hardware candidate
    (gpu, precision; sorted): :func:`below_floor` of each (FLOOR_COLUMNS; the table
    ``client_floor_candidates``)."""
    published = table[table["source"] == SOURCE_PUBLISHED]
    pairs = sorted(set(zip(published["gpu"], published["precision"])))
    return pd.DataFrame([{"gpu": g, "precision": p, **below_floor(published, (g, p))}
                         for g, p in pairs], columns=FLOOR_COLUMNS)


def inference_statement(summary: pd.DataFrame, table: pd.DataFrame,
                        reference: tuple[str, str] = ("h100-sxm", "bf16")) -> str:
    """A short text of what the numbers suggest, worded as an inference, with the counts."""
    gpu, precision = reference
    two = int(summary["two_events_per_token"].sum())
    counts = below_floor(table, reference)
    below_tpot, below_tok = counts["below_tpot"], counts["below_per_token"]
    return (f"Inference from the client summaries, not a fact about the testbed: on {two} of "
            f"{len(summary)} runs the event count per request is 2·output_len + 2 "
            f"(±{EVENT_COUNT_TOLERANCE}) with a median inter-token gap ≤ {ITL_MEDIAN_MAX_US:g} µs, "
            f"so the load generator appears to record two events per token and its TPOT to be "
            f"about half the time per token. Against the {gpu} {precision} weight-streaming "
            f"floor, {below_tpot} of {counts['runs']} runs have a mean TPOT below it, and "
            f"{below_tok} have a per-token time (E2E − TTFT)/(output_len − 1) below it.")
