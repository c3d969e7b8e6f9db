"""engineloop.py: which engine loop ran, and the async step times, on hand-built timelines
and on replays of both loops against their truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stepdecomp.targets import engineloop as L
from stepdecomp.core.paths import WORKLOADS_DIR
from stepdecomp.refdata import replay as R

EXP = "20260101-000000-llama-2-7b-tp1-toy"


def _ev(step: int, ts: int, event: str, rid: str = "r0", status: str | None = None) -> dict:
    return {"experiment_id": EXP, "request_id": rid, "event": event, "scheduler.step": step,
            "ts.monotonic_ns": ts, "finish.status": status}


def _journeys(rows: list[dict]) -> pd.DataFrame:
    j = pd.DataFrame(rows, columns=["experiment_id", "request_id", "event", "scheduler.step",
                                    "ts.monotonic_ns", "finish.status"])
    j["ts.monotonic_ns"] = j["ts.monotonic_ns"].astype("Int64")
    j["finish.status"] = j["finish.status"].astype("string")
    return j


def _steps(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame({"experiment_id": EXP, "step.id": [r[0] for r in rows],
                         "step.ts_start_ns": [r[1] for r in rows],
                         "step.ts_end_ns": [r[2] for r in rows]})


# --------------------------------------------------------------------------- a toy async engine

FWD = [0, 10_000, 12_000, 11_000, 9_000, 15_000, 10_000, 10_000, 10_000, 10_000, 10_000, 13_000]
UPD, SCHED = 300, 100     # ns: update(k) takes UPD, schedule() SCHED


def toy_async() -> dict[str, np.ndarray]:
    """GPU-bound async loop by hand: batch k runs FWD[k] after batch k−1; update(k) starts at
    its GPU end; schedule(k+2) starts when update(k) ends. Steps 1 … 11."""
    n = len(FWD)
    gpu_end = np.cumsum(FWD) + 1_000_000
    start = np.zeros(n + 2, dtype=np.int64)
    start[1], start[2] = 999_000, 999_500
    for k in range(1, n):
        start[k + 2] = gpu_end[k] + UPD
    return {"gpu_end": gpu_end, "start": start}


def toy_traces(sampled: tuple[int, ...], outputs: tuple[int, ...],
               admitted: tuple[int, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    t = toy_async()
    steps = _steps([(k, int(t["start"][k]), int(t["start"][k]) + SCHED) for k in sampled])
    rows = [_ev(k, int(t["gpu_end"][k]) + UPD // 2, "FINISHED", f"o{k}", "length") for k in outputs]
    rows += [_ev(k, int(t["start"][k]) + SCHED // 2, "SCHEDULED", f"s{k}") for k in admitted]
    return steps, _journeys(rows)


def test_adjacent_forward_from_update_events_is_exact() -> None:
    """Outputs of steps 3 and 4: G(4) − G(3) = FWD[4] exactly (the UPD/2 offsets cancel)."""
    steps, j = toy_traces(sampled=(4,), outputs=(3, 4))
    r = L.experiment_readings(steps, j)
    t = L.async_step_times(r, np.array([4]))
    assert t["step_forward_us"].iloc[0] == pytest.approx(FWD[4] / 1e3)
    assert t["step_forward_source"].iloc[0] == L.SOURCE_ADJACENT
    assert not t["gpu_waited_for_cpu"].iloc[0]          # schedule(4) ended before batch 3 did


def test_no_reading_no_forward() -> None:
    steps, j = toy_traces(sampled=(4,), outputs=(4,))
    t = L.async_step_times(L.experiment_readings(steps, j), np.array([4]))
    assert np.isnan(t["step_forward_us"].iloc[0])
    assert t["step_forward_source"].iloc[0] == L.SOURCE_NONE
    assert t["gpu_waited_for_cpu"].isna().iloc[0]       # unknown, not False


def test_schedule_starts_calibrate_the_update_tail() -> None:
    """Five sampled steps k+2 with outputs of k calibrate tail = UPD/2 (S(k+2) − U(k)); then
    a sampled S(9) alone gives G(7) = S(9) − tail, and with U(8): forward(8) = FWD[8]."""
    steps, j = toy_traces(sampled=(3, 4, 5, 6, 7, 9), outputs=(1, 2, 3, 4, 5, 8))
    r = L.experiment_readings(steps, j)
    s, exact, _ = L.schedule_starts(r)
    g, tail = L.gpu_ends(r, s, exact)
    assert tail == pytest.approx(UPD / 2)
    t = toy_async()
    assert g[7] == pytest.approx(t["gpu_end"][7] + UPD / 2)
    out = L.async_step_times(r, np.array([8]))
    assert out["step_forward_us"].iloc[0] == pytest.approx(FWD[8] / 1e3)


def test_span_over_same_batches() -> None:
    """Outputs of 5 and 9 only; steps 6 … 9 ran the same batch (no events in between): the
    forward time of step 7 is (G(9) − G(5)) / 4 = mean of FWD[6..9] = 10 µs."""
    steps, j = toy_traces(sampled=(7,), outputs=(5, 9))
    r = L.experiment_readings(steps, j)
    t = L.async_step_times(r, np.array([7]))
    assert t["step_forward_source"].iloc[0] == L.SOURCE_SPAN
    assert t["step_forward_us"].iloc[0] == pytest.approx(np.mean(FWD[6:10]) / 1e3)


def test_span_broken_by_a_change_of_batch() -> None:
    """An admission at step 7 changes the batch (and its prefill, with no later event,
    is in progress to the end): no span from 5 to 9 through it. Batch 6 differs from batch 5
    by the request that finished with step 5."""
    steps, j = toy_traces(sampled=(8,), outputs=(5, 9), admitted=(7,))
    r = L.experiment_readings(steps, j)
    assert r.uniform[5:10].tolist() == [True, False, False, False, False]
    t = L.async_step_times(r, np.array([8]))
    assert np.isnan(t["step_forward_us"].iloc[0])


def test_gpu_waited_for_cpu_is_flagged_and_not_a_forward() -> None:
    """schedule(4) ending after batch 3's GPU end: the GPU idled, the interval is CPU time."""
    steps, j = toy_traces(sampled=(4,), outputs=(3, 4))
    t = toy_async()
    steps.loc[0, "step.ts_end_ns"] = int(t["gpu_end"][3]) + UPD      # late schedule(4)
    out = L.async_step_times(L.experiment_readings(steps, j), np.array([4]))
    assert bool(out["gpu_waited_for_cpu"].iloc[0])
    assert np.isnan(out["step_forward_us"].iloc[0])
    assert out["step_forward_source"].iloc[0] == L.SOURCE_WAITED


# --------------------------------------------------------------------------- the loop

def test_detect_async_and_sync_order() -> None:
    """Async: output of n after schedule(n+1)'s start; sync: before it."""
    t = toy_async()
    steps, j = toy_traces(sampled=tuple(range(2, 12)), outputs=tuple(range(1, 10)))
    det = L.detect_engine_loop(steps, j)
    assert det.to_dict("records") == [{"experiment_id": EXP, "detected": "async",
                                       "async_pairs": 9, "ordered_pairs": 9,
                                       "engine_loop": "async", "engine_loop_source": "detected"}]
    # sync: outputs of n stamped before schedule(n+1) starts
    rows = [_ev(k, int(t["start"][k + 1]) - 50, "FINISHED", f"o{k}", "length") for k in range(1, 10)]
    det = L.detect_engine_loop(steps, _journeys(rows))
    assert det["detected"].iloc[0] == "sync" and det["ordered_pairs"].iloc[0] == 9


def test_too_little_evidence_is_assumed_and_said() -> None:
    steps, j = toy_traces(sampled=(2, 3, 4), outputs=(1, 2))
    det = L.detect_engine_loop(steps, j, default="sync")
    assert det[["detected", "ordered_pairs", "engine_loop", "engine_loop_source"]].iloc[0].tolist() \
        == ["unknown", 2, "sync", "assumed"]


@pytest.mark.parametrize("after, pairs, expected", [(10, 10, "async"), (8, 10, "async"),
                                                     (5, 10, "async"), (4, 10, "unknown"),
                                                     (2, 10, "unknown"), (1, 10, "sync"),
                                                     (0, 10, "sync"), (0, 4, "unknown"),
                                                     (5, 5, "async")])
def test_decide_loop_thresholds(after: int, pairs: int, expected: str) -> None:
    assert L.decide_loop(after, pairs) == expected


def test_unknown_default_loop_is_refused() -> None:
    steps, j = toy_traces(sampled=(2,), outputs=(1,))
    with pytest.raises(ValueError, match="engine loop must be one of"):
        L.detect_engine_loop(steps, j, default="pipelined")


def test_aborted_finish_is_not_an_output_reading() -> None:
    steps, j = toy_traces(sampled=(4,), outputs=(3, 4))
    j.loc[j["scheduler.step"] == 3, "finish.status"] = "aborted"
    r = L.experiment_readings(steps, j)
    assert r.u_first[3] == 0 and r.u_first[4] > 0


# --------------------------------------------------------------------------- replays vs truth

MIXTRAL = "20260218-141024-mixtral-8x7b-v0-1-tp2-roleplay"
GENERAL_70B = "20260217-202857-llama-2-70b-tp4-general"


def _replay_targets(name: str, loop: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    res = R.simulate(WORKLOADS_DIR / name, time_scale=0.05, engine_loop=loop)
    s = res.steps[res.steps["sampled"]]
    steps = pd.DataFrame({"experiment_id": name, "step.id": s["step_id"].to_numpy(),
                          "step.ts_start_ns": R.MONOTONIC_ORIGIN_NS + s["ts_start_ns"].to_numpy(),
                          "step.ts_end_ns": R.MONOTONIC_ORIGIN_NS + s["ts_end_ns"].to_numpy()})
    return steps, res.journeys(), res.truth().set_index("step_id")


@pytest.mark.parametrize("name", (MIXTRAL, GENERAL_70B))
@pytest.mark.parametrize("loop", ("async", "sync"))
@pytest.mark.integration
def test_the_loop_is_detected_on_replays(name: str, loop: str) -> None:
    steps, j, _ = _replay_targets(name, loop)
    det = L.detect_engine_loop(steps, j, default="sync" if loop == "async" else "async")
    assert det["detected"].iloc[0] == loop and det["ordered_pairs"].iloc[0] >= 50
    assert det["async_pairs"].iloc[0] == (det["ordered_pairs"].iloc[0] if loop == "async" else 0)


@pytest.mark.parametrize("name", (MIXTRAL, GENERAL_70B))
@pytest.mark.integration
def test_async_targets_recover_the_truth(name: str) -> None:
    """Against the replay's truth: the adjacent forward is the batch's GPU time within 1 %
    (r ≥ 0.99); with the span rule, median error ≤ 5 % on ≥ 8 % of the sampled steps; the
    period S(n+2) − S(n+1) within 5 % on ≥ 5 %; no GPU wait claimed where there was none."""
    steps, j, truth = _replay_targets(name, "async")
    sid = steps["step.id"].to_numpy()
    t = L.async_step_times(L.experiment_readings(steps, j), sid)
    fwd_true = truth["forward_us"].reindex(sid).to_numpy()
    est = t["step_forward_us"].to_numpy()
    adj = (t["step_forward_source"] == L.SOURCE_ADJACENT).to_numpy()
    assert adj.mean() >= 0.03
    assert np.median(np.abs(est[adj] / fwd_true[adj] - 1)) <= 0.01
    assert np.corrcoef(est[adj], fwd_true[adj])[0, 1] >= 0.99
    ok = ~np.isnan(est)
    assert ok.mean() >= 0.08 and np.median(np.abs(est[ok] / fwd_true[ok] - 1)) <= 0.05
    start = truth["start_ns"]
    per_true = (start.reindex(sid + 2).to_numpy() - start.reindex(sid + 1).to_numpy()) / 1e3
    per = t["step_period_us"].to_numpy()
    ok = ~np.isnan(per) & ~np.isnan(per_true)
    assert ok.mean() >= 0.05 and np.median(np.abs(per[ok] / per_true[ok] - 1)) <= 0.01
    assert np.corrcoef(per[ok], per_true[ok])[0, 1] >= 0.98
    exact = t["step_period_exact"].to_numpy()
    np.testing.assert_allclose(per[exact], per_true[exact])
    lo, hi = t["step_period_lo_us"].to_numpy(), t["step_period_hi_us"].to_numpy()
    b = ~np.isnan(lo) & ~np.isnan(hi) & ~np.isnan(per_true)
    assert b.sum() > 0 and ((lo[b] <= per_true[b] + 1e-6) & (per_true[b] <= hi[b] + 1e-6)).all()
    waited = t["gpu_waited_for_cpu"].fillna(False).to_numpy(dtype=bool)
    assert not (waited & ~truth["gpu_waited_for_cpu"].reindex(sid).to_numpy(dtype=bool)).any()
