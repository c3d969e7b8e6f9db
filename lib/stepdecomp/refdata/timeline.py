"""The engine's CPU work per step: schedule(), the host work of execute_model,
update_from_output(), and the API server's work before a request reaches the engine.

vLLM v1's engine core (docs/measurement.md §1, §5) runs, for step n:

1. ``schedule()`` on the CPU. The instrumented server takes ``step.ts_start_ns`` on its
   first lines and emits ``step.BATCH_SUMMARY`` near its end with ``step.ts_end_ns``;
   ``step.duration_us`` = (ts_end − ts_start) // 1000 is this CPU time. Journey events
   SCHEDULED and PREEMPTED are emitted inside it, at their position in the walk (running
   queue first, where preemptions happen, then admissions from the waiting queue).
2. ``execute_model()``: input preparation on the host, the GPU kernels (priced from the
   measured tables, ``stepcost.py``), sampling and the copy of the sampled ids to the host.
3. ``update_from_output()`` on the CPU: every scheduled request appends its token and is
   checked for completion; FIRST_TOKEN and FINISHED of step n are emitted here, after the
   forward pass. The outputs of step n leave for the API server when it returns.

How these phases follow each other is the engine loop's (scheduler.py): in the synchronous
loop step n+1 starts when update(n) returns; in the asynchronous loop (vLLM 0.15.1's default,
what the study ran: docs/measurement.md §5) schedule(n+1) runs while batch n is on the GPU and
update(n) after it.

Host work of execute_model is split in two: what runs before batch n can start on the GPU
and overlaps the previous batch in the async loop (``prep_us``: with TP > 1 the broadcast of
the scheduler output to the workers), and what lies on the GPU's critical path in both loops
(``critical_us``: the calibrated constants below).

The API server (a separate process) receives a request, tokenizes the prompt and hands it to
the engine core ``api_arrival_us`` after the client sent it; the client's TTFT includes it.

CPU cost model (:class:`CpuModel`): each phase is a base cost plus costs per unit of work,
times lognormal jitter exp(N(0, σ²)), plus a rare pause (Python's cyclic garbage collector).
Every constant is an assumption of this repository — orders of magnitude from how much
Python work each unit takes in vLLM v1's scheduler, not measurements — stated with its
reason in the field comments. ``HOST_OVERHEAD_US`` and ``HOST_PER_REQUEST_US`` (host work
inside execute_model that does not overlap the GPU) are the constants calibrated on the 12
published runs (``calibrate.py``); nothing is calibrated on the held-out codellama-34b runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

#: Host time per step inside execute_model not hidden behind GPU work (input tensors, the
#: CUDA-graph replay launch, sampler, the device→host copy of sampled ids and its sync), and
#: its part per scheduled request (per-request input metadata, sampling parameters, output
#: objects). Calibrated on the 12 published runs (calibrate.py); the defaults are the
#: calibrated values (data/calibration.json).
HOST_OVERHEAD_US = 0.0
HOST_PER_REQUEST_US = 1.0
#: Time from the client's send to the request's arrival at the engine core (HTTP handling,
#: prompt tokenization, input processing in the API server). Calibrated (calibrate.py) as the
#: median gap between the published and the replayed TTFT of the runs that did not overload.
API_ARRIVAL_US = 9103.7


@dataclass(frozen=True)
class CpuModel:
    """Costs in µs. Scheduler units are the work schedule() does per step."""

    # schedule(): fixed cost of one call (counters, SchedulerOutput construction, the two
    # queue walks' set-up): a few tens of µs of Python.
    schedule_base_us: float = 40.0
    # per running request visited (token budget arithmetic, block-table check): ~1 µs.
    schedule_per_running_us: float = 1.0
    # per request admitted from the waiting queue (state change, NewRequestData): ~20 µs.
    schedule_per_admit_us: float = 20.0
    # per journey event emitted (an OpenTelemetry span event with ~10 attributes): ~8 µs.
    per_event_us: float = 8.0
    # per KV block allocated (free-queue pop, block-table append): ~0.3 µs.
    per_block_us: float = 0.3
    # per prefix-cache block hash looked up on admission: ~0.2 µs.
    per_lookup_block_us: float = 0.2
    # update_from_output(): fixed cost (EngineCoreOutputs, stats): tens of µs.
    update_base_us: float = 30.0
    # per scheduled request (append token, stop checks, output object): ~2 µs.
    update_per_request_us: float = 2.0
    # per request freed (KV blocks returned to the free queue, request removed): ~10 µs.
    update_per_finished_us: float = 10.0
    # execute_model host work (see HOST_OVERHEAD_US) and its per-request part.
    host_overhead_us: float = HOST_OVERHEAD_US
    host_per_request_us: float = HOST_PER_REQUEST_US
    # extra host work with TP > 1: broadcasting the scheduler output to the workers.
    tp_broadcast_us: float = 100.0
    # API server: client send → the request reaches the engine core (see API_ARRIVAL_US).
    api_arrival_us: float = API_ARRIVAL_US
    # lognormal jitter of each CPU phase (σ of its log): OS scheduling, cache misses.
    jitter_sigma: float = 0.15
    # a generation-2 GC pause lands in a given CPU phase with this probability ...
    gc_pause_probability: float = 0.001
    # ... and lasts uniformly between these (ms-scale pauses are typical of large heaps).
    gc_pause_min_us: float = 2_000.0
    gc_pause_max_us: float = 10_000.0

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if value < 0:
                raise ValueError(f"CpuModel.{name} must be ≥ 0, got {value}")
        if not 0.0 <= self.gc_pause_probability <= 1.0 or self.gc_pause_max_us < self.gc_pause_min_us:
            raise ValueError("CpuModel: GC pause probability must be in [0, 1] and min ≤ max")

    def with_host(self, overhead_us: float, per_request_us: float) -> "CpuModel":
        """The same model with the two calibrated host constants replaced."""
        return replace(self, host_overhead_us=overhead_us, host_per_request_us=per_request_us)

    def with_api(self, api_arrival_us: float) -> "CpuModel":
        """The same model with the calibrated API-server constant replaced."""
        return replace(self, api_arrival_us=api_arrival_us)

    def schedule_us(self, running: int, admitted: int, events: int, new_blocks: int,
                    lookup_blocks: int) -> float:
        """Noise-free schedule() time: base + running·r + admitted·a + events·e + blocks·b +
        looked-up blocks·l."""
        return (self.schedule_base_us + self.schedule_per_running_us * running
                + self.schedule_per_admit_us * admitted + self.per_event_us * events
                + self.per_block_us * new_blocks + self.per_lookup_block_us * lookup_blocks)

    def update_us(self, scheduled: int, events: int, finished: int) -> float:
        """Noise-free update_from_output() time: base + scheduled·u + events·e + finished·f."""
        return (self.update_base_us + self.update_per_request_us * scheduled
                + self.per_event_us * events + self.update_per_finished_us * finished)

    def host_us(self, scheduled: int, tp: int) -> float:
        """Host part of execute_model: overhead + scheduled·h (+ broadcast when tp > 1)."""
        return self.critical_us(scheduled) + self.prep_us(tp)

    def critical_us(self, scheduled: int) -> float:
        """Host work on the GPU's critical path: overhead + scheduled·h."""
        return self.host_overhead_us + self.host_per_request_us * scheduled

    def prep_us(self, tp: int) -> float:
        """Host work before the batch can start, overlapping the previous batch in the async
        loop: the broadcast of the scheduler output when tp > 1."""
        return self.tp_broadcast_us if tp > 1 else 0.0


class CpuNoise:
    """Seeded per-phase multipliers and pauses, drawn in blocks (cheap per step)."""

    BLOCK = 1 << 15

    def __init__(self, model: CpuModel, rng: np.random.Generator) -> None:
        self.model, self.rng = model, rng
        self._i = self.BLOCK
        self._mult = np.zeros(0)
        self._pause = np.zeros(0)

    def _refill(self) -> None:
        m, n = self.model, self.BLOCK
        self._mult = np.exp(self.rng.normal(0.0, m.jitter_sigma, n))
        hit = self.rng.random(n) < m.gc_pause_probability
        self._pause = np.where(hit, self.rng.uniform(m.gc_pause_min_us, m.gc_pause_max_us, n), 0.0)
        self._i = 0

    def apply(self, base_us: float) -> float:
        """base · jitter + pause for one CPU phase."""
        if self._i == self.BLOCK:
            self._refill()
        i = self._i
        self._i += 1
        return base_us * float(self._mult[i]) + float(self._pause[i])


def stamps_within(t0_ns: int, duration_ns: int, count: int) -> list[int]:
    """Timestamps of ``count`` events emitted in order during [t0, t0 + duration]: evenly
    spaced strictly inside the window, t0 + duration·(i + 1)/(count + 1)."""
    return [t0_ns + (duration_ns * (i + 1)) // (count + 1) for i in range(count)]


def us_to_ns(us: float) -> int:
    """µs → whole ns, at least 1 ns (every phase takes some time)."""
    return max(1, int(round(us * 1000.0)))
