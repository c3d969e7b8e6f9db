"""Replay one experiment: workload → scheduler along the engine timeline → result frames.

Clocks: the replay's clock t starts at 0 with the first stage. Monotonic timestamps
(``step.ts_*_ns``, ``ts.monotonic_ns``, ``ts.monotonic``) are MONOTONIC_ORIGIN_NS + t, one
clock for steps and journeys as on the instrumented server; OTLP span and event times are
Unix ns, the experiment directory's date-time + t.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ..traces import otlp
from ..core import params
from ..traces.experiments import Experiment, read_experiment
from ..hw.specs import load_gpu_spec, load_model_spec
from .record import Recorder
from .scheduler import DEFAULT_ENGINE_LOOP, DONE, Simulator
from .stepcost import ALLREDUCE_CALL_US, KernelScale, build_step_cost, kv_cache_blocks
from .timeline import CpuModel
from .workload import CLIENT_TIMEOUT_S, Workload, generate_requests, read_workload

SAMPLE_FRACTION = 0.10
#: The monotonic clock's reading at replay time 0 (a host up for ~17 minutes).
MONOTONIC_ORIGIN_NS = 1_000 * 10**9
DEFAULT_EPOCH_NS = 1_771_286_400 * 10**9          # 2026-02-17T00:00:00Z, for undated names
DEFAULTS = {"max_num_batched_tokens": 2048, "max_num_seqs": 128, "max_model_len": 4096}
#: The hardware and weight precision the bundled dataset is generated with: the best fit
#: to the 12 published client summaries (calibrate.py, data/calibration.json).
DEFAULT_HARDWARE = params.DEFAULT_HARDWARE
DEFAULT_PRECISION = "bf16"

_PHASES = ("WAITING", "PREFILL", "DECODE")
_KINDS = (None, "FIRST", "RESUME")
_STATUSES = (None, "length", "aborted")


@dataclass
class SimResult:
    """Everything one replay produced.

    ``steps``: one row per executed step (``sampled`` marks the 10 % written as
    BATCH_SUMMARY) with the generator's truth: tokens, request counts, queue depths, KV
    blocks, Σ decode context (incl. the token being fed), prefill attention pairs, and the
    timeline on the replay clock (``ts_start_ns``, ``ts_end_ns`` of schedule();
    ``gpu_start_ns``, ``fwd_end_ns`` of the batch's forward pass; ``upd_start_ns``,
    ``out_ns`` of its update_from_output(); ``sched_cpu_us``, ``host_us``, ``forward_us`` (GPU
    time of the batch), ``update_cpu_us``; ``duration_us`` as the server records it). ``chunks``: one row per (step, prefilling request). ``decodes`` (``record_decodes``):
    one row per (step, decoding request). ``requests``: shape and outcome per request.
    ``events``: the journey events as written. ``segments``: token-producing runs.
    """

    experiment: Experiment
    workload: Workload
    seed: int
    time_scale: float
    hardware: str
    precision: str
    engine_loop: str
    kv_blocks_total: int
    epoch_ns: int
    steps: pd.DataFrame
    chunks: pd.DataFrame
    requests: pd.DataFrame
    events: pd.DataFrame
    decodes: pd.DataFrame | None = None
    segments: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def num_sampled(self) -> int:
        return int(self.steps["sampled"].sum())

    def journeys(self) -> pd.DataFrame:
        """The journey events as written, shaped like the loader's journeys table."""
        ev = self.events
        ids = self.requests["request_id"].to_numpy()[ev["request"].to_numpy()]
        ts = ev["ts_ns"].to_numpy()
        out = pd.DataFrame({"experiment_id": self.experiment.experiment_id,
                            "request_id": pd.Series(ids, dtype="string"),
                            "event": ev["event"].astype("string").to_numpy(),
                            "time_ns": self.epoch_ns + ts,
                            "scheduler.step": ev["scheduler.step"].to_numpy(),
                            "ts.monotonic": (MONOTONIC_ORIGIN_NS + ts) / 1e9,
                            "ts.monotonic_ns": MONOTONIC_ORIGIN_NS + ts,
                            "phase": ev["phase"].astype("string").to_numpy()})
        for col in otlp.JOURNEY_ATTRS:
            if col not in out:
                out[col] = ev[col].to_numpy()
        return out[["experiment_id", "request_id", "event", "time_ns", *otlp.JOURNEY_ATTRS]]

    def truth(self) -> pd.DataFrame:
        """Generator truth, one row per simulated step (replay_truth.parquet), times on the
        traces' monotonic clock: schedule() start, the batch's GPU start and end, its
        update_from_output() start and end, the phases' durations, and whether the GPU sat
        idle before the batch waiting for the CPU (``gpu_waited_for_cpu``: the batch started
        after the previous one ended; always so in the sync loop, where schedule and update
        run between forward passes)."""
        s = self.steps
        o = MONOTONIC_ORIGIN_NS
        return pd.DataFrame({
            "step_id": s["step_id"], "start_ns": o + s["ts_start_ns"],
            "gpu_start_ns": o + s["gpu_start_ns"], "gpu_end_ns": o + s["fwd_end_ns"],
            "update_start_ns": o + s["upd_start_ns"], "update_end_ns": o + s["out_ns"],
            "gpu_idle_before_us": s["gpu_idle_before_us"],
            "gpu_waited_for_cpu": s["gpu_idle_before_us"] > 0,
            "sched_cpu_us": s["sched_cpu_us"], "host_us": s["host_us"],
            "forward_us": s["forward_us"],
            "update_cpu_us": s["update_cpu_us"], "prefill_tokens": s["prefill_tokens"],
            "decode_tokens": s["decode_tokens"], "decode_ctx_tokens": s["decode_ctx_tokens"],
            "sampled": s["sampled"]})

    def reconstruction_truth(self) -> pd.DataFrame:
        """Per-step truth under reconstruct.py's column names (step.id + rec_* columns)."""
        return pd.DataFrame({"step.id": self.steps["step_id"],
                             **{rec: self.steps[col] for rec, col in TRUTH_AS_REC.items()}})


#: reconstruct.py's per-step columns and the truth column each one must equal.
TRUTH_AS_REC = {
    "rec_decode_reqs": "num_decode_reqs", "rec_decode_ctx_tokens": "decode_ctx_tokens",
    "rec_prefill_reqs": "num_prefill_reqs", "rec_prefill_tokens": "prefill_tokens",
    "rec_prefill_attn_pairs": "prefill_attn_pairs",
    "rec_prefill_kv_read_tokens": "prefill_kv_read_tokens", "rec_sampled_tokens": "sampled_tokens",
}


def experiment_seed(seed: int, experiment_id: str) -> np.random.SeedSequence:
    """Seed sequence of one experiment: independent of which other experiments run or in
    which order (zlib.crc32 is stable across processes, unlike hash())."""
    return np.random.SeedSequence([seed, zlib.crc32(experiment_id.encode())])


def experiment_epoch_ns(experiment_id: str) -> int:
    """Unix ns of the directory's ``YYYYMMDD-HHMMSS`` prefix (UTC); a fixed date otherwise."""
    try:
        dt = datetime.strptime(experiment_id[:15], "%Y%m%d-%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        return DEFAULT_EPOCH_NS
    return int(dt.timestamp()) * 10**9


def request_id(experiment_id: str, index: int) -> str:
    """vLLM-style completion request id, stable for (experiment, request index)."""
    digest = hashlib.blake2b(f"{experiment_id}/req/{index}".encode(), digest_size=16).hexdigest()
    return f"cmpl-{digest}-0"


def _config(exp: Experiment, key: str) -> int:
    value = getattr(exp, key)
    return int(value) if value is not None else DEFAULTS[key]


def simulate(experiment: Experiment | str | Path, seed: int = 0, time_scale: float = 1.0,
             client_timeout_s: float = CLIENT_TIMEOUT_S, record_decodes: bool = False,
             sample_fraction: float = SAMPLE_FRACTION, hardware: str = DEFAULT_HARDWARE,
             precision: str = DEFAULT_PRECISION, cpu: CpuModel | None = None,
             engine_loop: str = DEFAULT_ENGINE_LOOP,
             kernel_scale: KernelScale = KernelScale(),
             step_model: Path | None = None,
             allreduce_call_us: float = ALLREDUCE_CALL_US) -> SimResult:
    """Replay one experiment on ``hardware`` (data/hardware/<name>.json) with weights at
    ``precision`` under vLLM's ``engine_loop`` (async, the default, or sync:
    scheduler.ENGINE_LOOPS), the measured kernel latencies scaled per family by
    ``kernel_scale`` (sensitivity runs; 1: as measured); returns the per-step truth and the
    journey events. With ``step_model`` (a YAML file of BLIS trained-physics coefficients: an
    exported defaults.yaml or data/blis/trained_physics_shipped.yaml) the forward pass is
    priced by that step-time model instead of the kernel tables (`make data STEP_MODEL=…`)."""
    exp = experiment if isinstance(experiment, Experiment) else read_experiment(Path(experiment))
    wl = read_workload(exp.path)
    spec = load_model_spec(exp.hf_id)
    gpu = load_gpu_spec(hardware)
    if gpu.kernel_system is None:
        raise ValueError(f"hardware {hardware!r} names no measured kernel tables "
                         f"(kernel_system in data/hardware/{hardware}.json)")
    B, max_seqs, max_len = (_config(exp, k) for k in ("max_num_batched_tokens", "max_num_seqs",
                                                       "max_model_len"))
    rng_work, rng_noise, rng_sample, rng_cpu = (np.random.default_rng(s) for s in
                                                experiment_seed(seed, exp.experiment_id).spawn(4))
    reqs = generate_requests(wl, rng_work, time_scale)
    cost = build_step_cost(spec, exp.tp, B, max_seqs, max_len, gpu.kernel_system, precision,
                           kernel_scale, allreduce_call_us)
    total_blocks = kv_cache_blocks(spec, exp.tp, gpu, precision)
    rec = Recorder(len(reqs), rng_sample, sample_fraction, record_decodes)
    step_time = None
    if step_model is not None:
        from ..model.blis_basis import linear_step_time, load_coefficients
        step_time = linear_step_time(spec, exp.tp, gpu, load_coefficients(Path(step_model)).beta_array)
    sim = Simulator(reqs, cost, total_blocks, B, max_seqs, int(round(client_timeout_s * 1e9)),
                    exp.tp, cpu or CpuModel(), rec, rng_noise, rng_cpu, engine_loop, step_time)
    sim.run()
    return _result(sim, exp, wl, seed, time_scale, hardware, precision, engine_loop)


def _steps_frame(rec: Recorder, total_blocks: int, events: pd.DataFrame) -> pd.DataFrame:
    """The recorder's step rows with the derived timeline columns; ``num_finished`` and
    ``num_preempted`` of step n count the FINISHED (completed or aborted) and PREEMPTED
    journey events that carry ``scheduler.step`` = n."""
    s = rec.steps.frame()
    for col, name in (("num_finished", "FINISHED"), ("num_preempted", "PREEMPTED")):
        steps_of = events.loc[events["event"] == name, "scheduler.step"]
        s[col] = steps_of.value_counts().reindex(s["step_id"], fill_value=0).to_numpy()
    s["ts_end_ns"] = s["ts_start_ns"] + s["sched_ns"]
    s["fwd_end_ns"] = s["gpu_start_ns"] + s["fwd_ns"]
    s["out_ns"] = s["upd_start_ns"] + s["upd_ns"]
    prev_end = np.r_[0, s["fwd_end_ns"].to_numpy()[:-1]]
    s["gpu_idle_before_us"] = np.maximum(s["gpu_start_ns"].to_numpy() - prev_end, 0) / 1000.0
    s["duration_us"] = s["sched_ns"] // 1000
    s["sched_cpu_us"] = s["sched_ns"] / 1000.0
    s["host_us"] = s["host_ns"] / 1000.0
    s["forward_us"] = s["fwd_ns"] / 1000.0
    s["update_cpu_us"] = s["upd_ns"] / 1000.0
    s.insert(s.columns.get_loc("kv_blocks_used") + 1, "kv_blocks_total", total_blocks)
    return s


def _events_frame(rec: Recorder, prompt: np.ndarray, output: np.ndarray) -> pd.DataFrame:
    ev = np.asarray(rec.ev, dtype=np.int64).reshape(-1, 10)
    rid = ev[:, 0]
    return pd.DataFrame({
        "request": rid, "event": pd.Categorical.from_codes(ev[:, 1], otlp.JOURNEY_EVENTS),
        "scheduler.step": ev[:, 2], "ts_ns": ev[:, 3],
        "phase": pd.Categorical.from_codes(ev[:, 4], _PHASES),
        "prefill.total_tokens": prompt[rid], "prefill.done_tokens": ev[:, 5],
        "decode.max_tokens": output[rid], "decode.done_tokens": ev[:, 6],
        "schedule.kind": pd.Series(np.asarray(_KINDS, dtype=object)[ev[:, 7]], dtype="string"),
        "finish.status": pd.Series(np.asarray(_STATUSES, dtype=object)[ev[:, 8]], dtype="string"),
        "num_preemptions": ev[:, 9]})


def _result(sim: Simulator, exp: Experiment, wl: Workload, seed: int, time_scale: float,
            hardware: str, precision: str, engine_loop: str) -> SimResult:
    reqs, rec = sim.reqs, sim.rec
    n = len(reqs)
    status = np.asarray(sim.status)
    requests = pd.DataFrame({
        "request": np.arange(n),
        "request_id": pd.Series([request_id(exp.experiment_id, i) for i in range(n)], dtype="string"),
        "arrival_ns": reqs.arrival_ns, "stage": reqs.stage, "prompt": reqs.prompt,
        "group": reqs.group, "prompt_tokens": reqs.prompt_tokens,
        "output_tokens": reqs.output_tokens, "cached_tokens": np.asarray(rec.first_hit, np.int64),
        "status": pd.Series(np.where(status == DONE, "length", "aborted"), dtype="string"),
        "first_token_ns": np.asarray(rec.first_token_ns, np.int64),
        "end_ns": np.asarray(rec.end_ns, np.int64),
        "num_preemptions": np.asarray(sim.npre, np.int64), "output_done": np.asarray(sim.k, np.int64)})
    chunks = pd.DataFrame(np.asarray(rec.chunks, dtype=np.int64).reshape(-1, 4),
                          columns=["step_id", "request", "chunk_tokens", "prior_tokens"])
    decodes = None
    if rec.record_decodes:
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64))
        decodes = pd.DataFrame({"step_id": cat(rec.dec_step), "request": cat(rec.dec_req),
                                "ctx_tokens": cat(rec.dec_ctx)})
    events = _events_frame(rec, reqs.prompt_tokens, reqs.output_tokens)
    segs = pd.DataFrame(np.asarray(rec.segs, dtype=np.int64).reshape(-1, 3),
                        columns=["request", "first_step", "last_step"])
    return SimResult(experiment=exp, workload=wl, seed=seed, time_scale=time_scale,
                     hardware=hardware, precision=precision, engine_loop=engine_loop,
                     kv_blocks_total=sim.cache.total,
                     epoch_ns=experiment_epoch_ns(exp.experiment_id),
                     steps=_steps_frame(rec, sim.cache.total, events), chunks=chunks,
                     requests=requests, events=events,
                     decodes=decodes, segments=segs)


__all__ = ["SimResult", "simulate", "experiment_seed", "experiment_epoch_ns", "request_id",
           "SAMPLE_FRACTION", "MONOTONIC_ORIGIN_NS", "DEFAULT_HARDWARE", "DEFAULT_PRECISION",
           "DEFAULT_ENGINE_LOOP"]
