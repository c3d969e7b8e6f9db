"""The engine-timeline CPU model and the client metrics of the replay (hand-computed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stepdecomp.refdata import clientmetrics as C
from stepdecomp.refdata.timeline import CpuModel, CpuNoise, stamps_within, us_to_ns


def test_schedule_update_and_host_costs_by_hand() -> None:
    m = CpuModel(schedule_base_us=40, schedule_per_running_us=1, schedule_per_admit_us=20,
                 per_event_us=8, per_block_us=0.5, per_lookup_block_us=0.25, update_base_us=30,
                 update_per_request_us=2, update_per_finished_us=10, host_overhead_us=500,
                 host_per_request_us=1, tp_broadcast_us=100)
    # 40 + 64·1 + 2·20 + 3·8 + 10·0.5 + 100·0.25 = 198
    assert m.schedule_us(running=64, admitted=2, events=3, new_blocks=10, lookup_blocks=100) == 198
    # 30 + 66·2 + 4·8 + 3·10 = 224
    assert m.update_us(scheduled=66, events=4, finished=3) == 224
    assert m.host_us(scheduled=66, tp=1) == 566 and m.host_us(scheduled=66, tp=4) == 666
    assert m.with_host(0, 5).host_us(scheduled=10, tp=1) == 50


def test_cpu_model_rejects_negative_and_bad_pauses() -> None:
    with pytest.raises(ValueError, match="per_event_us must be ≥ 0"):
        CpuModel(per_event_us=-1)
    with pytest.raises(ValueError, match="GC pause"):
        CpuModel(gc_pause_probability=1.5)
    with pytest.raises(ValueError, match="GC pause"):
        CpuModel(gc_pause_min_us=10, gc_pause_max_us=5)


def test_noise_is_seeded_and_pauses_are_rare() -> None:
    quiet = CpuNoise(CpuModel(jitter_sigma=0, gc_pause_probability=0), np.random.default_rng(0))
    assert [quiet.apply(100.0) for _ in range(3)] == [100.0, 100.0, 100.0]
    a = CpuNoise(CpuModel(), np.random.default_rng(1))
    b = CpuNoise(CpuModel(), np.random.default_rng(1))
    xa = np.array([a.apply(100.0) for _ in range(40_000)])
    xb = np.array([b.apply(100.0) for _ in range(40_000)])
    assert (xa == xb).all()
    paused = xa > 1_000                      # jitter alone never gets to 10×
    assert 0.0003 < paused.mean() < 0.003    # probability 0.001
    assert np.median(np.log(xa[~paused] / 100)) == pytest.approx(0, abs=0.01)
    assert np.std(np.log(xa[~paused] / 100)) == pytest.approx(0.15, rel=0.05)


def test_stamps_are_inside_their_window_in_order() -> None:
    assert stamps_within(1000, 400, 3) == [1100, 1200, 1300]
    assert stamps_within(0, 10, 0) == []
    assert us_to_ns(0.0) == 1 and us_to_ns(12.3456) == 12346


# --------------------------------------------------------------------------- client metrics

def test_token_times_follow_segments() -> None:
    # request 0: tokens at steps 2..4; request 1 preempted: steps 1..2 then 5..6
    seg = pd.DataFrame({"request": [0, 1, 1], "first_step": [2, 1, 5], "last_step": [4, 2, 6]})
    out_ns = np.array([10, 20, 30, 40, 50, 60]) * 1000
    req, t = C.token_times_ns(seg, out_ns, np.array([True, True]))
    assert req.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert (t // 1000).tolist() == [20, 30, 40, 10, 20, 50, 60]
    req, t = C.token_times_ns(seg, out_ns, np.array([False, True]))
    assert req.tolist() == [1, 1, 1, 1]


def test_inference_perf_metrics_by_hand() -> None:
    # one request sent at 0 with 3 tokens sent by the server at 10, 18, 26 ms
    req = np.array([0, 0, 0])
    tok = np.array([10_000_000, 18_000_000, 26_000_000])
    r, t = C.event_times_ns(req, tok)
    # 2 events per token (+200 µs stream latency, +20 µs pair gap) and 2 at the end
    # (+100 µs end of stream): 2·3 + 2 = 8 events
    assert len(t) == 2 * 3 + 2 and (r == 0).all()
    assert (t[:2] == [10_200_000, 10_220_000]).all()
    assert (t[-2:] == [26_300_000, 26_320_000]).all()
    m = C.request_metrics(r, t, send_ns=np.array([0]))
    row = m.iloc[0]
    assert row["events"] == 8
    assert row["ttft_s"] == pytest.approx(0.0102)
    assert row["e2e_s"] == pytest.approx(0.02632)
    # TPOT = (26.32 − 10.2) ms / 7 = 2.302857 ms: about half the 8 ms between tokens
    assert row["tpot_s"] == pytest.approx(0.01612 / 7)
    gaps = np.sort(m.attrs["itl_s"])
    assert len(gaps) == 7 and gaps[0] == pytest.approx(20e-6) and gaps[-1] == pytest.approx(7.98e-3)


def test_distribution_schema() -> None:
    d = C.distribution(np.arange(1, 101, dtype=float))
    assert list(d) == ["mean", "min", "p0.1", "p1", "p5", "p10", "p25", "median", "p75", "p90",
                       "p95", "p99", "p99.9", "max"]
    assert (d["mean"], d["min"], d["median"], d["max"]) == (50.5, 1.0, 50.5, 100.0)
    assert C.distribution(np.zeros(0)) is None


def test_summary_counts_events_like_the_published_runs() -> None:
    """n = (E2E − TTFT)/TPOT + 1 = 2·O + 2, the fingerprint of the published summaries."""
    O = 5
    requests = pd.DataFrame({"status": ["length", "aborted"], "arrival_ns": [0, 0],
                             "prompt_tokens": [100, 100], "output_tokens": [O, O],
                             "end_ns": [0, 300_000_000_000]})
    seg = pd.DataFrame({"request": [0], "first_step": [1], "last_step": [O]})
    out_ns = np.arange(1, O + 1) * 8_000_000
    s = C.summary(requests, seg, out_ns)
    lat = s["successes"]["latency"]
    n = (lat["request_latency"]["mean"] - lat["time_to_first_token"]["mean"]) \
        / lat["time_per_output_token"]["mean"] + 1
    assert n == pytest.approx(2 * O + 2)
    assert s["failures"] == {"count": 1, "request_latency": C.distribution(np.array([300.0])),
                             "prompt_len": C.distribution(np.array([100.0]))}
