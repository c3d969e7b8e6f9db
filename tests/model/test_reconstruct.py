"""Per-step reconstruction from journey events (lib/stepdecomp/reconstruct.py).

The hand-made journeys below follow otlp.py's semantics; every expected number is worked
out in the comments. A small reference scheduler then checks the same semantics on random
traffic, and a synthetic scale check times a large reconstruction.
"""

from __future__ import annotations

import os
import time
from collections import deque

import numpy as np
import pandas as pd
import pytest

from stepdecomp.model.reconstruct import (REC_COLUMNS, _step_grid, attach_reconstruction,
                                          build_segments, reconstruct, reconstruct_steps)


# --------------------------------------------------------------------------- journey builder

class J:
    """Collects journey rows shaped like the loader's journeys table."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.ts = 0.0

    def _ev(self, exp: str, rid: str, event: str, step: int, **attrs: object) -> None:
        self.ts += 1.0
        self.rows.append({"experiment_id": exp, "request_id": rid, "event": event,
                          "time_ns": int(self.ts * 1e9), "scheduler.step": step,
                          "ts.monotonic": self.ts, **attrs})

    def queued(self, exp: str, rid: str, step: int, prompt: int) -> None:
        self._ev(exp, rid, "QUEUED", step, **{"phase": "WAITING", "prefill.total_tokens": prompt,
                                              "prefill.done_tokens": 0, "decode.done_tokens": 0})

    def scheduled(self, exp: str, rid: str, step: int, prompt: int, kind: str = "FIRST",
                  cached: int = 0, k0: int = 0) -> None:
        self._ev(exp, rid, "SCHEDULED", step, **{"phase": "PREFILL", "schedule.kind": kind,
                                                 "prefill.total_tokens": prompt,
                                                 "prefill.done_tokens": cached,
                                                 "decode.done_tokens": k0})

    def first_token(self, exp: str, rid: str, step: int, prompt: int) -> None:
        self._ev(exp, rid, "FIRST_TOKEN", step, **{"phase": "DECODE", "prefill.total_tokens": prompt,
                                                   "prefill.done_tokens": prompt,
                                                   "decode.done_tokens": 1})

    def finished(self, exp: str, rid: str, step: int, k1: int, status: str = "stopped") -> None:
        self._ev(exp, rid, "FINISHED", step, **{"decode.done_tokens": k1, "finish.status": status})

    def preempted(self, exp: str, rid: str, step: int, k1: int) -> None:
        self._ev(exp, rid, "PREEMPTED", step, **{"phase": "WAITING", "decode.done_tokens": k1})

    def frame(self) -> pd.DataFrame:
        f = pd.DataFrame(self.rows)
        f["scheduler.step"] = f["scheduler.step"].astype("Int64")
        for c in ("prefill.total_tokens", "prefill.done_tokens", "decode.done_tokens"):
            if c in f:
                f[c] = f[c].astype("Int64")
        for c in ("event", "request_id", "experiment_id", "phase", "schedule.kind", "finish.status"):
            if c in f:
                f[c] = f[c].astype("string")
        return f


def hand_journeys() -> pd.DataFrame:
    """Experiment "exp-a", B = 2048 (events in file order):

    A (prompt 100) and B (prompt 200): admitted at step 10, both prefill fully there and sample
        token 1 (FIRST_TOKEN 10); FINISHED stopped at 14 with k1 = 5 -> both decode 11..14
        and finish in the SAME step. ctx(s) = prompt + 0 + (s - 10).
    C (prompt 5000): admitted at 11; chunked prefill over 3 steps with 2 decoders (A, B) in
        each: 11: 2048 - 2 = 2046 (k=0); 12: 2046 (k=2046); 13: 5000 - 4092 = 908 (k=4092);
        FIRST_TOKEN 13, FINISHED length at 16 with k1 = 4 -> E = 16 - 3 = 13, decodes 14..16
        with ctx 5000 + (s - 13).
    D (prompt 300): queued 11, admitted 13 after C: 2 + 908 used, 300 fit -> FIRST_TOKEN 13;
        decodes 14, 15; PREEMPTED at 16 with k1 = 3 (not in step 16, last ran 15;
        E = 15 - (3 - 0 - 1) = 13). RESUME at 18 with k0 = 3: recomputes 300 + 3 = 303 tokens
        in step 18 and samples token 4 there; FINISHED at 20 with k1 = 6 -> E = 20 - 2 = 18,
        decodes 19, 20 with ctx 300 + 3 + (s - 18) = 304, 305.
    W (prompt 50): queued 12, aborted while waiting at 15 -> never in a step.
    G (prompt 3000): admitted 17, computes 2048 (nothing else runs in 17), aborted at 18
        mid-prefill (k1 = 0: not in step 18).
    H (prompt 500, 200 prefix-cached): admitted 19 next to D's decode: T = 300 after k = 200;
        FIRST_TOKEN 19; FINISHED at 20 with k1 = 2 -> decodes step 20 with ctx 501. D and H
        finish in the same step 20.
    """
    j, x = J(), "exp-a"
    j.queued(x, "A", 10, 100)
    j.queued(x, "B", 10, 200)
    j.scheduled(x, "A", 10, 100)
    j.scheduled(x, "B", 10, 200)
    j.first_token(x, "A", 10, 100)
    j.first_token(x, "B", 10, 200)
    j.queued(x, "C", 11, 5000)
    j.scheduled(x, "C", 11, 5000)
    j.queued(x, "D", 11, 300)
    j.queued(x, "W", 12, 50)
    j.first_token(x, "C", 13, 5000)
    j.scheduled(x, "D", 13, 300)
    j.first_token(x, "D", 13, 300)
    j.finished(x, "A", 14, 5)
    j.finished(x, "B", 14, 5)
    j.finished(x, "W", 15, 0, "aborted")
    j.preempted(x, "D", 16, 3)
    j.finished(x, "C", 16, 4, "length")
    j.queued(x, "G", 17, 3000)
    j.scheduled(x, "G", 17, 3000)
    j.scheduled(x, "D", 18, 300, kind="RESUME", k0=3)
    j.finished(x, "G", 18, 0, "aborted")
    j.queued(x, "H", 19, 500)
    j.scheduled(x, "H", 19, 500, cached=200)
    j.first_token(x, "H", 19, 500)
    j.finished(x, "D", 20, 6)
    j.finished(x, "H", 20, 2)
    # second experiment, B = 1000: one prompt of 2500 alone -> chunks 1000, 1000, 500
    y = "exp-b"
    j.queued(y, "R", 0, 2500)
    j.scheduled(y, "R", 0, 2500)
    j.first_token(y, "R", 2, 2500)
    j.finished(y, "R", 3, 2)
    return j.frame()


# step -> (decode reqs, Σctx, prefill reqs, prefill tokens, attention pairs, KV read, sampled)
EXPECTED_A = {
    # A: 100·101/2 = 5050, B: 200·201/2 = 20100 pairs; both sample
    10: (0, 0, 2, 300, 5050 + 20100, 300, 2),
    # ctx A 101 + B 201; C chunk 2046 at k=0: 2046·2047/2 = 2_094_081
    11: (2, 302, 1, 2046, 2_094_081, 2046, 2),
    # 102 + 202; C 2046 at k=2046: 2046·2046 + 2_094_081 = 6_280_197, reads 4092
    12: (2, 304, 1, 2046, 6_280_197, 4092, 2),
    # 103 + 203; C 908 at k=4092: 908·4092 + 908·909/2 = 3_715_536 + 412_686 = 4_128_222,
    # D 300 at 0: 45_150 -> 4_173_372; reads 5000 + 300; decoders 2 + C and D complete
    13: (2, 306, 2, 1208, 4_173_372, 5300, 4),
    # A 104 + B 204 + C 5001 + D 301 = 5610
    14: (4, 5610, 0, 0, 0, 0, 4),
    15: (2, 5002 + 302, 0, 0, 0, 0, 2),        # C, D
    16: (1, 5003, 0, 0, 0, 0, 1),              # C only: D preempted at 16
    17: (0, 0, 1, 2048, 2048 * 2049 // 2, 2048, 0),   # G partial chunk samples nothing
    18: (0, 0, 1, 303, 303 * 304 // 2, 303, 1),       # D's recompute, samples token 4
    # D decodes (304); H 300 after 200 cached: 300·200 + 300·301/2 = 60_000 + 45_150
    19: (1, 304, 1, 300, 105_150, 500, 2),
    20: (2, 305 + 501, 0, 0, 0, 0, 2),          # D and H both finish here
}
EXPECTED_B = {
    0: (0, 0, 1, 1000, 1000 * 1001 // 2, 1000, 0),
    1: (0, 0, 1, 1000, 1000 * 1000 + 1000 * 1001 // 2, 2000, 0),
    2: (0, 0, 1, 500, 500 * 2000 + 500 * 501 // 2, 2500, 1),
    3: (1, 2501, 0, 0, 0, 0, 1),                # ctx = 2500 + 0 + (3 - 2)
}


def _as_dict(steps: pd.DataFrame, exp: str) -> dict[int, tuple[int, ...]]:
    sub = steps[steps["experiment_id"] == exp]
    return {int(r["step.id"]): tuple(int(r[c]) for c in REC_COLUMNS) for _, r in sub.iterrows()}


def test_hand_made_journeys_exact_per_step() -> None:
    rec = reconstruct(hand_journeys(), {"exp-a": 2048, "exp-b": 1000})
    assert _as_dict(rec.steps, "exp-a") == EXPECTED_A
    assert _as_dict(rec.steps, "exp-b") == EXPECTED_B
    diag = rec.diagnostics.set_index("experiment_id")
    assert diag.loc["exp-a", "segments"] == 7          # A B C D D' G H (W never scheduled)
    assert diag.loc["exp-a", "resumed_segments"] == 1
    assert diag.loc["exp-a", ["open_segments", "unmatched_events", "e_mismatches",
                              "chunk_mismatches"]].tolist() == [0, 0, 0, 0]


def test_segments_table() -> None:
    segs, _ = build_segments(hand_journeys())
    d = segs[(segs["experiment_id"] == "exp-a") & (segs["request_id"] == "D")]
    assert d["kind"].tolist() == ["FIRST", "RESUME"]
    assert d["compute_tokens"].tolist() == [300, 303]       # prompt + k0 recomputed
    assert d["last_step"].tolist() == [15, 20]              # PREEMPTED at 16 -> last ran 15
    assert d["complete_step"].tolist() == [13, 18]
    g = segs[segs["request_id"] == "G"].iloc[0]
    assert (g["last_step"], g["k1"]) == (17, 0) and np.isnan(g["complete_step"])
    assert "W" not in set(segs["request_id"])


def test_file_order_does_not_matter() -> None:
    # spans grouped per request (requests in reverse order), each request's events still in
    # its own order: the same reconstruction as the interleaved file order
    j = hand_journeys()
    rank = {r: i for i, r in enumerate(reversed(pd.unique(j["request_id"])))}
    regrouped = j.iloc[np.argsort(j["request_id"].map(rank).to_numpy(), kind="stable")]
    budgets = {"exp-a": 2048, "exp-b": 1000}
    pd.testing.assert_frame_equal(reconstruct_steps(j, budgets), reconstruct_steps(regrouped, budgets))


def test_budget_changes_chunks() -> None:
    # exp-b at the default B = 2048: 2048 in step 0, then 452, and FIRST_TOKEN at 2 no
    # longer matches (greedy completes at 1) -> a counted chunk mismatch
    rec = reconstruct(hand_journeys(), 2048)
    b = _as_dict(rec.steps, "exp-b")
    assert b[0][3] == 2048 and b[1][3] == 452 and b[2][3] == 0
    assert rec.diagnostics.set_index("experiment_id").loc["exp-b", "chunk_mismatches"] == 1


def test_open_segment_at_trace_end() -> None:
    j = J()
    j.queued("e", "X", 5, 10)
    j.scheduled("e", "X", 5, 10)
    j.first_token("e", "X", 5, 10)
    j.queued("e", "Y", 8, 40)         # still prefilling at the end (no FIRST_TOKEN)
    j.scheduled("e", "Y", 8, 40)
    frame = j.frame()
    frame.loc[frame["request_id"] == "X", "decode.max_tokens"] = 3   # budget: tokens at 5, 6, 7
    rec = reconstruct(frame, 2048)
    got = _as_dict(rec.steps, "e")
    # X decodes 6, 7 (ctx 11, 12), then its 3-token budget is spent; Y 40 tokens at 8
    assert [got[s][:2] for s in range(5, 9)] == [(0, 0), (1, 11), (1, 12), (0, 0)]
    assert got[8][3] == 40
    assert rec.diagnostics["open_segments"].iloc[0] == 2


def test_step_grid_layout_and_clipping() -> None:
    # experiments a: steps 5..7, b: no step (±inf from the event counts), c: step 10 only
    events = pd.DataFrame({"first_step": [5.0, np.inf, 10.0], "last_step": [7.0, -np.inf, 10.0]})
    grid = _step_grid(events)
    assert grid.lo.tolist() == [5, 0, 10] and grid.hi.tolist() == [7, -1, 10]
    # each range then one slack slot: widths 4, 1, 2
    assert grid.base.tolist() == [0, 4, 5] and grid.n_glob == 7
    assert grid.exp_of_g.tolist() == [0, 0, 0, 0, 1, 2, 2]
    assert grid.step_of_g.tolist() == [5, 6, 7, 8, 0, 10, 11]
    # steps outside a range clip to its first step or its slack slot; unselected rows drop
    steps = np.array([4.0, 6.0, 9.0, 10.0, 12.0, 7.0])
    exp = np.array([0, 0, 0, 2, 2, 0])
    sel = np.array([True, True, True, True, True, False])
    assert grid.index(steps, exp, sel).tolist() == [0, 1, 3, 5, 6]


def test_attach_reconstruction_report() -> None:
    j = hand_journeys()
    sampled = pd.DataFrame({
        "experiment_id": ["exp-a"] * 3 + ["exp-c"] * 2,
        "step.id": [11, 14, 19, 1, 2],
        "batch.num_decode_reqs": [2, 4, 1, 3, 3],
        "batch.prefill_tokens": [2046, 0, 999, 0, 0],    # step 19 disagrees on purpose
        "batch.num_prefill_reqs": [1, 0, 1, 0, 0],
    })
    merged, report = attach_reconstruction(sampled, j, {"exp-a": 2048})
    assert merged["rec_decode_ctx_tokens"].tolist()[:3] == [302, 5610, 304]
    assert merged.loc[merged["experiment_id"] == "exp-c", REC_COLUMNS].isna().all().all()
    r = report.set_index("experiment_id")
    assert r.loc["exp-a", "agreement"] == pytest.approx(2 / 3)
    assert r.loc["exp-a", "decode_reqs_agreement"] == 1.0
    assert bool(r.loc["exp-a", "has_journeys"]) and not bool(r.loc["exp-c", "has_journeys"])
    assert np.isnan(r.loc["exp-c", "agreement"])
    assert "no journey events" in r.loc["exp-c", "note"]
    # no journeys at all: every rec_* is NaN and no experiment has journeys
    merged0, report0 = attach_reconstruction(sampled, j.iloc[:0])
    assert merged0[REC_COLUMNS].isna().all().all() and not report0["has_journeys"].any()


# --------------------------------------------------------------------------- reference scheduler

def simulate_reference(n_steps: int, budget: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A tiny scheduler with the documented semantics: arrivals, prefix hits, greedy chunks,
    preemption under a KV capacity (recompute), aborts while waiting and while running.
    Returns (journeys, per-step truth).

    Request state: ``gen`` output tokens so far, ``kv`` tokens whose KV is computed, ``left``
    prefill tokens this segment still has to compute (0 = decoding).
    """
    rng = np.random.default_rng(seed)
    j, x = J(), "sim"
    waiting: deque[dict] = deque()
    running: list[dict] = []
    truth = []
    kv_capacity, max_seqs, rid = 6000, 24, 0
    for s in range(n_steps):
        for _ in range(rng.poisson(0.6)):
            prompt = int(rng.integers(1, 2600))
            r = {"id": f"r{rid}", "prompt": prompt, "max": int(rng.integers(1, 40)), "gen": 0,
                 "kv": 0, "left": 0, "seen": False,
                 "hit": int(rng.integers(0, prompt)) if rng.random() < 0.3 else 0}
            rid += 1
            j.queued(x, r["id"], s, prompt)
            waiting.append(r)
        if waiting and rng.random() < 0.05:                        # abort while waiting
            r = waiting.pop()
            j.finished(x, r["id"], s, r["gen"], "aborted")
        if running and rng.random() < 0.03:                         # abort while running
            r = running.pop(int(rng.integers(len(running))))
            j.finished(x, r["id"], s, r["gen"], "aborted")
        while running and sum(q["kv"] for q in running) > kv_capacity:   # preempt the newest
            r = running.pop()
            j.preempted(x, r["id"], s, r["gen"])
            r["kv"] = 0
            waiting.appendleft(r)
        used, ctx, chunks, sampled = 0, 0, [], []
        for r in running:                                           # decodes first
            if r["left"] == 0:
                used += 1
                r["kv"] += 1
                ctx += r["kv"]                     # context includes the token fed now
                sampled.append(r)
        for r in running:                                           # then prefills in order
            if r["left"] > 0 and budget - used > 0:
                c = min(r["left"], budget - used)
                chunks.append((c, r["kv"], r["kv"] + r["left"]))   # s = prompt + k0
                used, r["kv"], r["left"] = used + c, r["kv"] + c, r["left"] - c
                if r["left"] == 0:
                    sampled.append(r)
        while waiting and used < budget and len(running) < max_seqs:   # admit
            r = waiting.popleft()
            cached = 0 if r["seen"] else r["hit"]
            j.scheduled(x, r["id"], s, r["prompt"], "RESUME" if r["seen"] else "FIRST",
                        cached=cached, k0=r["gen"])
            r["seen"], r["kv"], r["left"] = True, cached, r["prompt"] + r["gen"] - cached
            c = min(r["left"], budget - used)
            chunks.append((c, r["kv"], r["kv"] + r["left"]))   # s = prompt + k0
            used, r["kv"], r["left"] = used + c, r["kv"] + c, r["left"] - c
            running.append(r)
            if r["left"] == 0:
                sampled.append(r)
        for r in sampled:
            r["gen"] += 1
            if r["gen"] == 1:
                j.first_token(x, r["id"], s, r["prompt"])
            if r["gen"] == r["max"]:
                j.finished(x, r["id"], s, r["gen"], "length")
                running.remove(r)
        truth.append({"step.id": s, "rec_decode_reqs": used - sum(c for c, _, _ in chunks),
                      "rec_decode_ctx_tokens": ctx, "rec_prefill_reqs": len(chunks),
                      "rec_prefill_tokens": sum(c for c, _, _ in chunks),
                      "rec_prefill_attn_pairs": sum(c * k + c * (c + 1) // 2 for c, k, _ in chunks),
                      "rec_prefill_kv_read_tokens": sum(k + c for c, k, _ in chunks),
                      "rec_sampled_tokens": len(sampled),
                      "rec_prefill_chunk_input_tokens": sum(c * n for c, _, n in chunks),
                      "rec_prefill_chunk_sq_tokens": sum(c * c for c, _, _ in chunks)})
    return j.frame(), pd.DataFrame(truth)


@pytest.mark.parametrize("budget, seed, preempts", [(512, 7, True), (2048, 11, True),
                                                    (64, 3, False)])   # B = 64: long chunking
def test_reference_scheduler_round_trip(budget: int, seed: int, preempts: bool) -> None:
    journeys, truth = simulate_reference(n_steps=400, budget=budget, seed=seed)
    rec = reconstruct(journeys, budget)
    diag = rec.diagnostics.iloc[0]
    assert (diag["resumed_segments"] > 0) == preempts
    assert (truth["rec_prefill_reqs"] > 1).any(), "several prefills share a step"
    assert diag["e_mismatches"] == 0 and diag["chunk_mismatches"] == 0
    got = rec.steps.drop(columns="experiment_id").set_index("step.id")
    want = truth.set_index("step.id").loc[got.index]
    # steps after the last journey event are outside the range; the rest must match exactly
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


# --------------------------------------------------------------------------- scale

def synthetic_journeys(n_requests: int, seed: int = 0) -> pd.DataFrame:
    """Vectorised synthetic journeys (not budget-consistent: for timing only): every request
    QUEUED, SCHEDULED, FIRST_TOKEN, FINISHED; 5 % preempted once and resumed."""
    rng = np.random.default_rng(seed)
    n = n_requests
    arrive = np.sort(rng.integers(0, n // 4 + 1, n))
    prompt = rng.integers(16, 4000, n)
    out = rng.integers(2, 400, n)
    S = arrive + rng.integers(0, 3, n)
    F = S + prompt // 2048
    X = F + out - 1
    pre = rng.random(n) < 0.05
    P = np.where(pre, F + np.maximum(out // 2, 1), -1)     # preempted at P (k1 = P - F)
    R = P + 2                                               # resumed
    ids = pd.Series(np.char.add("req-", np.arange(n).astype(str)), dtype="string")

    def block(event: str, step: np.ndarray, sel: np.ndarray, **attrs: np.ndarray) -> pd.DataFrame:
        f = pd.DataFrame({"request_id": ids[sel].to_numpy(), "event": event,
                          "scheduler.step": step[sel], "ts.monotonic": step[sel] + 0.5})
        for k, v in attrs.items():
            f[k] = v[sel]
        return f

    every = np.ones(n, dtype=bool)
    zero = np.zeros(n, dtype=np.int64)
    k1_pre = P - F
    X_res = X + 2 + (prompt + k1_pre) // 2048          # resumed ones finish a little later
    parts = [
        block("QUEUED", arrive, every, **{"prefill.total_tokens": prompt}),
        block("SCHEDULED", S, every, **{"prefill.total_tokens": prompt, "prefill.done_tokens": zero,
                                        "decode.done_tokens": zero}),
        block("FIRST_TOKEN", F, every, **{"decode.done_tokens": zero + 1}),
        block("PREEMPTED", P, pre, **{"decode.done_tokens": k1_pre}),
        block("SCHEDULED", R, pre, **{"prefill.total_tokens": prompt, "prefill.done_tokens": zero,
                                      "decode.done_tokens": k1_pre}),
        block("FINISHED", np.where(pre, X_res, X), every,
              **{"decode.done_tokens": np.where(pre, k1_pre + (X_res - R) - (prompt + k1_pre) // 2048,
                                                out)}),
    ]
    f = pd.concat(parts, ignore_index=True)
    f["finish.status"] = pd.Series(np.where(f["event"] == "FINISHED", "length", None), dtype="string")
    f["schedule.kind"] = pd.Series(np.where(f["event"] == "SCHEDULED",
                                            np.where(f["decode.done_tokens"] > 0, "RESUME", "FIRST"),
                                            None), dtype="string")
    f.insert(0, "experiment_id", "scale")
    f["event"] = f["event"].astype("string")
    return f.sort_values("scheduler.step", kind="stable", ignore_index=True)


def test_scale() -> None:
    """STEPDECOMP_SCALE_REQUESTS=1000000 runs the 1 M-request check (must take < 60 s)."""
    n = int(os.environ.get("STEPDECOMP_SCALE_REQUESTS", "50000"))
    journeys = synthetic_journeys(n)
    t0 = time.perf_counter()
    rec = reconstruct(journeys, 2048)
    elapsed = time.perf_counter() - t0
    print(f"\nreconstructed {n} requests, {len(journeys)} events, {len(rec.steps)} steps "
          f"in {elapsed:.1f} s")
    assert rec.diagnostics["segments"].iloc[0] == n + int((journeys["event"] == "PREEMPTED").sum())
    assert rec.steps["rec_decode_reqs"].sum() > 0
    assert elapsed < 60.0 * max(n, 1) / 1_000_000 + 10.0


# --------------------------------------------------------------------------- replay ground truth

REPLAY_EXPERIMENT = "20260217-170634-llama-2-7b-tp1-reasoning"


@pytest.mark.integration
def test_against_replay_ground_truth(tmp_path) -> None:
    """The reference-data replay's per-step truth, through the real OTLP file and loader:
    every step of a short, overloaded run (preemptions and client aborts) must match."""
    from stepdecomp.traces.experiments import read_experiment
    from stepdecomp.refdata import replay
    from stepdecomp.refdata.writer import write_traces
    from stepdecomp.traces.load import journeys_frame, parse_trace_file, steps_frame
    from stepdecomp.core.paths import WORKLOADS_DIR

    if not (WORKLOADS_DIR / REPLAY_EXPERIMENT).is_dir():
        pytest.skip(f"no {REPLAY_EXPERIMENT} under data/workloads")
    exp = read_experiment(WORKLOADS_DIR / REPLAY_EXPERIMENT)
    res = replay.simulate(exp, seed=0, time_scale=0.2, client_timeout_s=60.0)
    write_traces(res, tmp_path / "traces.json")
    step_rows, journey_rows, _ = parse_trace_file(tmp_path / "traces.json", exp.experiment_id)
    journeys = journeys_frame(journey_rows, exp)
    budget = {exp.experiment_id: exp.max_num_batched_tokens or 2048}
    assert (journeys["event"] == "PREEMPTED").sum() > 0
    assert (journeys["finish.status"] == "aborted").sum() > 0

    rec = reconstruct(journeys, budget)
    truth = res.steps.rename(columns={"step_id": "step.id"}).set_index("step.id")
    full = rec.steps.set_index("step.id")
    # the journey range may end past the last executed step (an arrival or abort stamped with
    # the next step id): those steps are empty
    assert truth.index.isin(full.index).all()
    assert (full.loc[~full.index.isin(truth.index), REC_COLUMNS] == 0).all().all()
    got = full.loc[truth.index]
    pairs = {"rec_decode_reqs": "num_decode_reqs", "rec_decode_ctx_tokens": "decode_ctx_tokens",
             "rec_prefill_reqs": "num_prefill_reqs", "rec_prefill_tokens": "prefill_tokens",
             "rec_prefill_attn_pairs": "prefill_attn_pairs",
             "rec_prefill_kv_read_tokens": "prefill_kv_read_tokens",
             "rec_sampled_tokens": "sampled_tokens"}
    for mine, theirs in pairs.items():
        np.testing.assert_array_equal(got[mine].to_numpy(), truth[theirs].to_numpy(), err_msg=mine)

    _, report = attach_reconstruction(steps_frame(step_rows, exp), journeys, budget)
    assert report["agreement"].iloc[0] == 1.0
