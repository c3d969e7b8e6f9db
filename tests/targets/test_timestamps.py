"""Step timing targets (lib/stepdecomp/targets.py) on hand-made and synthetic timelines.

Hand timeline of experiment "A" (µs from T0; S = schedule() start, E = ts_end, the
BATCH_SUMMARY emission; sampled steps 1, 3, 4):

    step 1  S=0      E=100    SCHEDULED r1 @20      FIRST_TOKEN r1 @5100
    step 2  S=5300 (unsampled) SCHEDULED r2 @5330   FIRST_TOKEN r2 @10400
    step 3  S=10500  E=10600                        FINISHED r1 @15600 (length)
    step 4  S=15700  E=15800  SCHEDULED r3 @15750   FINISHED r4 @20000 (aborted)
                                                    FIRST_TOKEN r3 @20800

Expected by hand:
    forward: step 1 5100−100 = 5000; step 3 15600−10600 = 5000; step 4 20800−15800 = 5000
             (the aborted FINISHED at 20000 would give 4200 if it were not ignored).
    period:  step 1: step 2 unsampled; hi = 5330−0 = 5330, lo = max(100, 5100) = 5100;
             offsets measured on sampled steps: step 1 20, step 4 15750−15700 = 50 → median
             35; calibrated estimate 5330−35 = 5295 (truth 5300); raw upper bound 5330.
             step 3: step 4 sampled → exact 15700−10500 = 5200; hi = 15750−10500 = 5250,
             lo = max(100, 15600−10500) = 5100.
             step 4: no event of step 5 → NaN; lo = max(100, 20800−15700) = 5100.
    avg:     step 1 (10500−0)/(3−1) = 5250; step 3 5200/1 = 5200; step 4 NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stepdecomp.targets import timestamps as tg


def sync_targets(*args, **kwargs) -> pd.DataFrame:
    """The hand timelines here are of the synchronous loop: targets under that loop (the
    loop-aware wrapper, told the loop, since a few steps cannot show it)."""
    return tg.step_targets(*args, engine_loop="sync", **kwargs)


T0 = 10**15          # a large monotonic origin: ns must survive without a float round trip
US = 1_000


def steps_frame(rows: list[tuple[str, int, int, int]]) -> pd.DataFrame:
    """(experiment_id, step.id, start µs, end µs) -> a steps table like the loader's."""
    exp, sid, s, e = zip(*rows)
    start = np.array(s, dtype=np.int64) * US + T0
    end = np.array(e, dtype=np.int64) * US + T0
    return pd.DataFrame({"experiment_id": list(exp), "step.id": np.array(sid, dtype=np.int64),
                         "step.ts_start_ns": start, "step.ts_end_ns": end,
                         "step.duration_us": (end - start) // US})


def journeys_frame(rows: list[tuple[str, str, str, int, int, str | None]]) -> pd.DataFrame:
    """(experiment_id, request_id, event, step, t µs, finish.status) -> a journeys table
    with ts.monotonic_ns (and a consistent float ts.monotonic)."""
    exp, rid, ev, step, t, status = zip(*rows)
    ns = np.array(t, dtype=np.int64) * US + T0
    return pd.DataFrame({
        "experiment_id": list(exp), "request_id": pd.array(rid, dtype="string"),
        "event": pd.array(ev, dtype="string"), "time_ns": np.arange(len(rows), dtype=np.int64),
        "scheduler.step": pd.array(step, dtype="Int64"), "ts.monotonic": ns / 1e9,
        "ts.monotonic_ns": pd.array(ns, dtype="Int64"),
        "finish.status": pd.array(status, dtype="string")})


HAND_STEPS = [("A", 1, 0, 100), ("A", 3, 10500, 10600), ("A", 4, 15700, 15800)]
HAND_EVENTS = [
    ("A", "r1", "QUEUED", 1, -50, None),
    ("A", "r1", "SCHEDULED", 1, 20, None),
    ("A", "r1", "FIRST_TOKEN", 1, 5100, None),
    ("A", "r2", "SCHEDULED", 2, 5330, None),
    ("A", "r2", "FIRST_TOKEN", 2, 10400, None),
    ("A", "r1", "FINISHED", 3, 15600, "length"),
    ("A", "r3", "SCHEDULED", 4, 15750, None),
    ("A", "r4", "FINISHED", 4, 20000, "aborted"),
    ("A", "r3", "FIRST_TOKEN", 4, 20800, None),
    ("A", "r5", "QUEUED", 5, 20850, None),
]


def by_step(out: pd.DataFrame, exp: str = "A") -> pd.DataFrame:
    return out[out["experiment_id"] == exp].set_index("step.id")


def test_hand_timeline_raw_upper_bound() -> None:
    out = by_step(sync_targets(steps_frame(HAND_STEPS), journeys_frame(HAND_EVENTS)))
    assert out["step_forward_us"].tolist() == [5000.0, 5000.0, 5000.0]
    # two calibration steps < MIN_CALIBRATION_STEPS: the estimate is the raw upper bound
    assert out.loc[1, "step_period_us"] == 5330.0
    assert out.loc[1, "step_period_source"] == tg.SOURCE_UPPER
    assert (out.loc[1, "step_period_lo_us"], out.loc[1, "step_period_hi_us"]) == (5100.0, 5330.0)
    assert out.loc[3, "step_period_us"] == 5200.0 and bool(out.loc[3, "step_period_exact"])
    assert (out.loc[3, "step_period_lo_us"], out.loc[3, "step_period_hi_us"]) == (5100.0, 5250.0)
    assert np.isnan(out.loc[4, "step_period_us"]) and np.isnan(out.loc[4, "step_period_hi_us"])
    assert out.loc[4, "step_period_lo_us"] == 5100.0
    assert out.loc[4, "step_period_source"] == tg.SOURCE_NONE
    assert out["step_period_exact"].tolist() == [False, True, False]
    assert out["step_period_avg_us"].tolist()[:2] == [5250.0, 5200.0]
    assert np.isnan(out.loc[4, "step_period_avg_us"])
    assert not out["async_overlap"].any() and not out["timeline_inconsistent"].any()


def test_hand_timeline_calibrated() -> None:
    out = by_step(sync_targets(steps_frame(HAND_STEPS), journeys_frame(HAND_EVENTS),
                                  min_calibration_steps=2))
    assert out.loc[1, "step_period_us"] == 5295.0        # 5330 − median(20, 50)
    assert out.loc[1, "step_period_offset_us"] == 35.0
    assert out.loc[1, "step_period_source"] == tg.SOURCE_CALIBRATED
    assert out.loc[3, "step_period_us"] == 5200.0        # exact rows are never adjusted


def test_output_keeps_the_steps_index_and_order() -> None:
    steps = steps_frame(HAND_STEPS[::-1])
    steps.index = [7, 8, 9]
    out = sync_targets(steps, journeys_frame(HAND_EVENTS))
    assert list(out.index) == [7, 8, 9] and out["step.id"].tolist() == [4, 3, 1]
    assert list(out.columns) == tg.TARGET_COLUMNS
    assert out["step_period_avg_us"].tolist()[1:] == [5200.0, 5250.0]


def test_aborted_finished_is_ignored() -> None:
    events = [e for e in HAND_EVENTS if e[1] != "r3"]      # step 4: only the aborted FINISHED
    out = by_step(sync_targets(steps_frame(HAND_STEPS), journeys_frame(events)))
    assert np.isnan(out.loc[4, "step_forward_us"])
    assert out.loc[4, "step_period_lo_us"] == 100.0          # only ts_end bounds it


def test_steps_without_events() -> None:
    out = sync_targets(steps_frame(HAND_STEPS), journeys_frame([HAND_EVENTS[0]]))
    assert out["step_forward_us"].isna().all()
    assert out["step_period_us"].tolist()[1] == 5200.0        # exact needs no journey
    assert np.isnan(out["step_period_us"].tolist()[0])
    assert out["step_period_lo_us"].tolist() == [100.0, 100.0, 100.0]


def test_experiments_do_not_mix() -> None:
    # B reuses A's step ids and clock; A's SCHEDULED of step 2 (5330) must not bound B's step 1
    steps = steps_frame(HAND_STEPS + [("B", 1, 0, 200), ("B", 2, 7000, 7100)])
    events = HAND_EVENTS + [("B", "q1", "FIRST_TOKEN", 1, 6000, None),
                            ("B", "q2", "SCHEDULED", 2, 7050, None),
                            ("B", "q9", "SCHEDULED", 3, 14400, None)]
    out = sync_targets(steps, journeys_frame(events))
    a, b = by_step(out, "A"), by_step(out, "B")
    assert a["step_forward_us"].tolist() == [5000.0] * 3 and a.loc[1, "step_period_us"] == 5330.0
    assert b.loc[1, "step_forward_us"] == 5800.0 and b.loc[1, "step_period_us"] == 7000.0
    assert b.loc[1, "step_period_hi_us"] == 7050.0
    assert np.isnan(b.loc[2, "step_forward_us"])
    assert b.loc[2, "step_period_us"] == 7400.0 and b.loc[2, "step_period_hi_us"] == 7400.0
    assert b.loc[1, "step_period_avg_us"] == 7000.0 and np.isnan(b.loc[2, "step_period_avg_us"])
    cov = tg.coverage_table(out).set_index("experiment_id")
    assert cov.loc["A", "sampled_steps"] == 3 and cov.loc["B", "sampled_steps"] == 2
    assert cov.loc["A", "share_step_forward"] == 1.0 and cov.loc["B", "share_step_forward"] == 0.5
    assert cov.loc["A", "share_period_exact"] == pytest.approx(1 / 3)
    assert cov.loc["A", "share_period_bounded"] == pytest.approx(1 / 3)
    assert cov.loc["B", "share_period_exact"] == 0.5 and cov.loc["B", "share_period_bounded"] == 0.5
    assert cov.loc["A", "median_bound_width_us"] == 230.0      # 5330 − 5100
    assert cov.loc["B", "median_bound_width_us"] == 7300.0     # 7400 − 100 (ts_end only)


def test_async_overlap_is_detected_and_never_negative() -> None:
    # schedule(2) starts at 150, during the forward of step 1; update(1) comes at 5100.
    steps = steps_frame([("C", 1, 0, 100), ("C", 3, 10000, 10100), ("C", 5, 20000, 20100),
                         ("C", 6, 20150, 20250)])
    events = [("C", "a", "SCHEDULED", 2, 300, None), ("C", "a", "FIRST_TOKEN", 1, 5100, None),
              ("C", "b", "SCHEDULED", 3, 10250, None),           # offset 250 on sampled step 3
              ("C", "c", "FIRST_TOKEN", 5, 25000, None)]          # update(5) after S(6)
    raw = by_step(sync_targets(steps, journeys_frame(events)), "C")
    assert bool(raw.loc[1, "async_overlap"])
    assert (raw.loc[1, "step_period_lo_us"], raw.loc[1, "step_period_hi_us"]) == (100.0, 300.0)
    assert raw.loc[1, "step_period_us"] == 300.0                  # uncalibrated: upper bound
    assert bool(raw.loc[5, "async_overlap"]) and raw.loc[5, "step_period_us"] == 150.0
    assert raw.loc[5, "step_period_lo_us"] == 100.0 and bool(raw.loc[5, "step_period_exact"])
    cal = by_step(sync_targets(steps, journeys_frame(events), min_calibration_steps=1), "C")
    assert cal.loc[1, "step_period_us"] == 100.0                  # 300 − 250 clipped to lo
    assert (cal["step_period_us"].dropna() > 0).all()
    assert not cal["timeline_inconsistent"].any()
    cov = tg.coverage_table(cal)
    assert cov["share_async_overlap"].item() == 0.5


def test_inconsistent_stamps_give_nan_not_negative() -> None:
    # a first update event before ts_end, and a SCHEDULED of step 2 before ts_end of step 1
    steps = steps_frame([("D", 1, 0, 100)])
    events = [("D", "a", "FIRST_TOKEN", 1, 50, None), ("D", "b", "SCHEDULED", 2, 80, None)]
    out = sync_targets(steps, journeys_frame(events))
    assert out["timeline_inconsistent"].item()
    assert np.isnan(out["step_forward_us"].item()) and np.isnan(out["step_period_us"].item())


def test_journeys_on_another_clock_are_flagged_not_negative() -> None:
    # journey stamps from a different origin (e.g. seconds since process start): every
    # event-based bound contradicts the loop order; only the exact period survives
    steps = steps_frame([("E", 1, 0, 100), ("E", 2, 5300, 5400)])
    j = journeys_frame([("E", "a", "FIRST_TOKEN", 1, 5100, None),
                        ("E", "b", "SCHEDULED", 2, 5330, None)])
    j["ts.monotonic_ns"] = j["ts.monotonic_ns"] - T0 - 10**12
    out = sync_targets(steps, j).set_index("step.id")
    assert out["timeline_inconsistent"].tolist() == [True, False]
    assert out.loc[1, "step_period_us"] == 5300.0 and np.isnan(out.loc[1, "step_period_hi_us"])
    assert out["step_forward_us"].isna().all()
    assert (out[["step_period_lo_us", "step_period_us"]].stack().dropna() >= 0).all()


def test_journey_ts_float_fallback_rounds_to_nearest_ns() -> None:
    j = pd.DataFrame({"ts.monotonic_ns": pd.array([123, None, None, 2**62], dtype="Int64"),
                      "ts.monotonic": [9.0, 2.000000001, 1.9999999994, np.nan]})
    got = tg.journey_ts_ns(j)
    assert got.dtype == np.int64
    # 2.000000001 · 1e9 = 2000000000.9999998 in floats: truncation would give ...000
    assert got.tolist() == [123, 2_000_000_001, 1_999_999_999, 2**62]
    assert tg.journey_ts_ns(j.drop(columns="ts.monotonic_ns").iloc[1:3]).tolist() == \
        [2_000_000_001, 1_999_999_999]


def test_journey_ts_missing_everywhere_is_an_error() -> None:
    j = pd.DataFrame({"ts.monotonic_ns": pd.array([None], dtype="Int64"), "ts.monotonic": [np.nan]})
    with pytest.raises(ValueError, match="neither"):
        tg.journey_ts_ns(j)
    with pytest.raises(KeyError, match="ts.monotonic"):
        tg.journey_ts_ns(j.drop(columns="ts.monotonic"))


def test_targets_with_float_timestamps_only() -> None:
    # T0 = 1e15 ns = 1e6 s: float seconds keep ~0.1 ns there, so rounding recovers every stamp
    j = journeys_frame(HAND_EVENTS)
    j["ts.monotonic_ns"] = pd.array([None] * len(j), dtype="Int64")
    out = by_step(sync_targets(steps_frame(HAND_STEPS), j))
    assert out["step_forward_us"].tolist() == [5000.0] * 3
    assert out.loc[1, "step_period_hi_us"] == 5330.0


def test_journey_prefix_and_bad_steps() -> None:
    j = journeys_frame(HAND_EVENTS)
    j["event"] = "journey." + j["event"]
    out = by_step(sync_targets(steps_frame(HAND_STEPS), j))
    assert out["step_forward_us"].tolist() == [5000.0] * 3
    dup = steps_frame(HAND_STEPS + [("A", 3, 10500, 10600)])
    with pytest.raises(ValueError, match=r"^experiment A: 1 duplicate step.id row\(s\) among 4 "
                                         r"steps, e.g. step.id 3$"):
        sync_targets(dup, j)
    with pytest.raises(KeyError, match="finish.status"):
        sync_targets(steps_frame(HAND_STEPS), j.drop(columns="finish.status"))


# --------------------------------------------------------------------------- synthetic

def synthetic_timeline(rng: np.random.Generator, exp: str, n_steps: int,
                       sample_rate: float = 0.1) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A synchronous engine loop with random CPU and forward times, stamped as vLLM does.

    Per step: schedule() of 100–600 µs (SCHEDULED events at 20–80 % of it, Poisson(0.6) per
    step; ts_end at its end), 20–60 µs of launch, a forward of 3–15 ms (slow sine plus 3 %
    lognormal noise), then update() of 100–300 µs holding Poisson(1) FIRST_TOKEN / FINISHED
    events, a 10–50 µs loop gap, the next schedule(). Aborts (FINISHED, aborted) land at
    random times. Half the events carry ts.monotonic_ns, the rest only ts.monotonic.
    Returns steps (sampled), journeys and the truth (step.id, forward_us, period_us).
    """
    n = n_steps
    sched = rng.uniform(100, 600, n)
    launch = rng.uniform(20, 60, n)
    fwd = (3000 + 12000 * (0.5 + 0.5 * np.sin(np.arange(n) * 2 * np.pi / 400))) \
        * rng.lognormal(0, 0.03, n)
    upd = rng.uniform(100, 300, n)
    gap = rng.uniform(10, 50, n)
    period = sched + launch + fwd + upd + gap
    start = 1e9 + np.concatenate([[0.0], np.cumsum(period)[:-1]])        # µs
    end = start + sched
    upd_start = end + launch + fwd
    k_s, k_u = rng.poisson(0.6, n), rng.poisson(1.0, n)
    s_step = np.repeat(np.arange(n), k_s)
    s_t = start[s_step] + sched[s_step] * rng.uniform(0.2, 0.8, len(s_step))
    u_step = np.repeat(np.arange(n), k_u)
    u_t = upd_start[u_step] + upd[u_step] * rng.uniform(0, 1, len(u_step))
    a_step = rng.choice(n, n // 20)
    a_t = start[a_step] + period[a_step] * rng.uniform(0, 1, len(a_step))
    ev = np.concatenate([np.full(len(s_step), "SCHEDULED"),
                         rng.choice(["FIRST_TOKEN", "FINISHED"], len(u_step)),
                         np.full(len(a_step), "FINISHED")])
    status = np.concatenate([np.full(len(s_step) + len(u_step), "length"),
                             np.full(len(a_step), "aborted")])
    t_ns = np.rint(np.concatenate([s_t, u_t, a_t]) * US).astype(np.int64)
    ns = pd.array(t_ns, dtype="Int64")
    ns[rng.uniform(size=len(ns)) < 0.5] = pd.NA
    journeys = pd.DataFrame({
        "experiment_id": exp, "request_id": "r", "event": ev, "time_ns": 0,
        "scheduler.step": np.concatenate([s_step, u_step, a_step]) + 1,
        "ts.monotonic": t_ns / 1e9, "ts.monotonic_ns": ns, "finish.status": status})
    sampled = np.flatnonzero(rng.uniform(size=n) < sample_rate)
    s_ns = np.rint(start * US).astype(np.int64)
    e_ns = np.rint(end * US).astype(np.int64)
    steps = pd.DataFrame({"experiment_id": exp, "step.id": sampled + 1,
                          "step.ts_start_ns": s_ns[sampled], "step.ts_end_ns": e_ns[sampled]})
    truth = pd.DataFrame({"step.id": sampled + 1, "forward_us": fwd[sampled],
                          "period_us": np.append(np.diff(s_ns) / US, np.nan)[sampled]})
    return steps, journeys, truth


def test_synthetic_timelines_recover_the_truth() -> None:
    rng = np.random.default_rng(7)
    parts = [synthetic_timeline(rng, f"exp{i}", 6000) for i in range(3)]
    steps = pd.concat([p[0] for p in parts], ignore_index=True)
    journeys = pd.concat([p[1] for p in parts], ignore_index=True)
    out = sync_targets(steps, journeys)
    assert not out["timeline_inconsistent"].any() and not out["async_overlap"].any()
    cov = tg.coverage_table(out).set_index("experiment_id")
    for i, (_, _, truth) in enumerate(parts):
        got = out[out["experiment_id"] == f"exp{i}"].merge(truth, on="step.id")
        assert len(got) == len(truth)
        for target, true in (("step_forward_us", "forward_us"), ("step_period_us", "period_us")):
            ok = got[target].notna() & got[true].notna()
            assert ok.mean() >= 0.12, (i, target, ok.mean())
            rel = (got.loc[ok, target] - got.loc[ok, true]).abs() / got.loc[ok, true]
            assert rel.median() <= 0.05, (i, target, rel.median())
            r = np.corrcoef(got.loc[ok, target], got.loc[ok, true])[0, 1]
            assert r >= 0.98, (i, target, r)
        exact = got["step_period_exact"]
        assert np.allclose(got.loc[exact, "step_period_us"], got.loc[exact, "period_us"], atol=1e-3)
        bounded = got["step_period_hi_us"].notna()
        assert (got.loc[bounded, "step_period_hi_us"] >= got.loc[bounded, "period_us"] - 1e-3).all()
        assert (got["step_period_lo_us"] <= got["period_us"] + 1e-3).all()
        assert cov.loc[f"exp{i}", "share_step_period"] >= 0.12


def test_forward_from_the_period_where_the_step_emitted_no_update_event() -> None:
    # step 6 (S=25000, E=25100) emits no FIRST_TOKEN/FINISHED; step 7 schedules r6 at 30150.
    # period: hi = 30150 − 25000 = 5150, calibrated by the median in-schedule offset 35
    # (steps 1 and 4) → 5115. Update tail u = S(4) − first update of step 3 = 15700 − 15600
    # = 100 (the only step with an exact next start and an event). forward = 5115 − 100 − 100.
    steps = steps_frame(HAND_STEPS + [("A", 6, 25000, 25100)])
    events = journeys_frame(HAND_EVENTS + [("A", "r6", "SCHEDULED", 7, 30150, None)])
    out = by_step(sync_targets(steps, events, min_calibration_steps=1))
    assert out.loc[6, "step_period_us"] == 5115.0
    assert out.loc[6, "step_forward_us"] == 4915.0
    assert out["step_forward_source"].tolist() == ["event", "event", "event", "from_period"]
    # with too few calibration steps for the tail there is no estimate
    out = by_step(sync_targets(steps, events, min_calibration_steps=2))
    assert np.isnan(out.loc[6, "step_forward_us"]) and out.loc[6, "step_forward_source"] == "none"


# --------------------------------------------------------------------------- missing and backwards clocks

def _never_negative(out: pd.DataFrame) -> None:
    for c in tg.TARGET_US_COLUMNS:
        v = out[c].to_numpy(np.float64)
        assert not (v[np.isfinite(v)] < 0).any(), c


def test_step_without_timestamps_gets_no_target_and_is_counted() -> None:
    steps = steps_frame(HAND_STEPS)
    steps["step.ts_end_ns"] = pd.array([steps["step.ts_end_ns"][0], None, steps["step.ts_end_ns"][2]],
                                       dtype="Int64")
    j = journeys_frame(HAND_EVENTS)
    out = by_step(sync_targets(steps, j))
    _never_negative(out)
    assert out["no_target_reason"].tolist() == ["", tg.NO_TIMESTAMPS, ""]
    assert out.loc[3, tg.TARGET_US_COLUMNS].isna().all()
    assert out.loc[3, "step_period_source"] == tg.SOURCE_NONE
    assert not out.loc[3, "timeline_inconsistent"]
    # step 1 pairs with the next timed step, 4: 15700 µs over 3 steps; its bound is unchanged
    assert out.loc[1, "step_period_avg_us"] == pytest.approx(15700 / 3)
    assert (out.loc[1, "step_period_us"], out.loc[1, "step_period_source"]) == (5330.0, tg.SOURCE_UPPER)
    assert out.loc[4, "step_forward_us"] == 5000.0
    cov = tg.coverage_table(sync_targets(steps, j), j)
    assert cov[["sampled_steps", "steps_without_timestamps", "steps_clock_backwards",
                "journey_events_without_ts"]].iloc[0].tolist() == [3, 1, 0, 0]
    assert cov["na_reason"].tolist() == ["1 step(s) without step.ts_start_ns/step.ts_end_ns: no target"]


def test_steps_table_without_timestamp_columns() -> None:
    steps = steps_frame(HAND_STEPS).drop(columns=["step.ts_start_ns", "step.ts_end_ns"])
    j = journeys_frame(HAND_EVENTS)
    out = sync_targets(steps, j)
    assert out[tg.TARGET_US_COLUMNS].isna().all().all()
    assert out["no_target_reason"].tolist() == [tg.NO_TIMESTAMPS] * 3
    assert tg.coverage_table(out)["steps_without_timestamps"].tolist() == [3]


def test_journeys_without_time_stamps_are_left_out_and_counted() -> None:
    steps = steps_frame(HAND_STEPS)
    j = journeys_frame(HAND_EVENTS).drop(columns=["ts.monotonic", "ts.monotonic_ns"])
    out = by_step(sync_targets(steps, j))
    _never_negative(out)
    assert out["step_forward_us"].isna().all()
    assert np.isnan(out.loc[1, "step_period_us"])              # no SCHEDULED time: no bound
    assert out.loc[3, "step_period_us"] == 5200.0               # the step stamps alone
    assert out["step_period_avg_us"].tolist()[:2] == [5250.0, 5200.0]
    assert out["no_target_reason"].tolist() == ["", "", ""]
    cov = tg.coverage_table(sync_targets(steps, j), j)
    assert cov["journey_events_without_ts"].tolist() == [10]
    assert cov["na_reason"].tolist() == ["10 journey event(s) without ts.monotonic(_ns): left out"]
    # some events timed, some not: only the untimed ones are dropped
    j2 = journeys_frame(HAND_EVENTS)
    j2.loc[2, "ts.monotonic_ns"] = None
    j2.loc[2, "ts.monotonic"] = np.nan
    out2 = by_step(sync_targets(steps, j2))
    assert np.isnan(out2.loc[1, "step_forward_us"]) and out2.loc[3, "step_forward_us"] == 5000.0
    assert tg.coverage_table(sync_targets(steps, j2), j2)["journey_events_without_ts"].tolist() == [1]


def test_clock_stepping_back_is_counted_and_never_negative() -> None:
    # step 4 starts at 10000 µs, before step 3 (10500): both lose their targets
    steps = steps_frame([("A", 1, 0, 100), ("A", 3, 10500, 10600), ("A", 4, 10000, 10100)])
    j = journeys_frame(HAND_EVENTS)
    out = by_step(sync_targets(steps, j))
    _never_negative(out)
    assert out["no_target_reason"].tolist() == ["", tg.CLOCK_BACKWARDS, tg.CLOCK_BACKWARDS]
    assert out.loc[[3, 4], tg.TARGET_US_COLUMNS].isna().all().all()
    assert out.loc[1, "step_forward_us"] == 5000.0
    assert out.loc[1, "step_period_avg_us"] == 5250.0
    cov = tg.coverage_table(sync_targets(steps, j), j)
    assert cov[["steps_clock_backwards", "steps_without_timestamps"]].iloc[0].tolist() == [2, 0]
    assert cov["na_reason"].tolist() == ["2 step(s) where the clock stepped back: no target"]


def test_step_ending_before_it_starts_has_no_negative_target() -> None:
    steps = steps_frame([("A", 1, 0, 100), ("A", 2, 6000, 5900), ("A", 3, 12000, 12100)])
    out = by_step(sync_targets(steps, journeys_frame(HAND_EVENTS)))
    _never_negative(out)
    assert bool(out.loc[2, "timeline_inconsistent"])
    assert out.loc[2, ["step_period_us", "step_period_lo_us", "step_period_avg_us"]].isna().all()
    assert out.loc[1, "step_period_us"] == 6000.0


def test_no_steps_and_no_journeys() -> None:
    empty = steps_frame(HAND_STEPS).iloc[:0]
    out = sync_targets(empty, journeys_frame(HAND_EVENTS).iloc[:0])
    assert len(out) == 0 and list(out.columns) == tg.TARGET_COLUMNS
    assert len(tg.coverage_table(out)) == 0
    j_none = pd.DataFrame({"experiment_id": pd.Series([], dtype=object)})
    out = by_step(sync_targets(steps_frame(HAND_STEPS), j_none))
    assert out["step_forward_us"].isna().all() and out.loc[3, "step_period_us"] == 5200.0


# --------------------------------------------------------------------------- the engine loop

def test_too_few_steps_to_tell_the_loop_assume_async_and_say_so() -> None:
    """Three hand steps cannot show the loop: vLLM's default (async) is assumed, said in
    engine_loop_source, and the async estimators run (they need readings these steps lack)."""
    out = tg.step_targets(steps_frame(HAND_STEPS), journeys_frame(HAND_EVENTS))
    assert list(out.columns) == tg.TARGET_COLUMNS
    assert set(out["engine_loop"]) == {"async"} and set(out["engine_loop_source"]) == {"assumed"}
    assert int(out["loop_ordered_pairs"].max()) < 5
    cov = tg.coverage_table(out)
    assert cov[["engine_loop", "engine_loop_source"]].iloc[0].tolist() == ["async", "assumed"]
    told = tg.step_targets(steps_frame(HAND_STEPS), journeys_frame(HAND_EVENTS), engine_loop="sync")
    assert set(told["engine_loop_source"]) == {"parameter"}
    assert told["gpu_waited_for_cpu"].isna().all()      # the sync estimator cannot tell


def test_an_unknown_engine_loop_is_refused() -> None:
    with pytest.raises(ValueError, match="engine_loop must be one of"):
        tg.step_targets(steps_frame(HAND_STEPS), journeys_frame(HAND_EVENTS), engine_loop="batched")


def test_experiment_level_loop_columns_are_not_attached_to_steps() -> None:
    out = tg.step_targets(steps_frame(HAND_STEPS), journeys_frame(HAND_EVENTS))
    comp = steps_frame(HAND_STEPS)[["experiment_id", "step.id"]]
    got = tg.attach(comp, out)
    assert "engine_loop" in got and "gpu_waited_for_cpu" in got
    assert not set(tg.EXPERIMENT_LEVEL_COLUMNS) & set(got.columns)
