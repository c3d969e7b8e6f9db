"""sensitivity.py: headlines on hand-built components, the draws, the summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stepdecomp.run import sensitivity as S
from stepdecomp.refdata.stepcost import KernelScale


def _frame() -> pd.DataFrame:
    """Two experiments of 20 steps: forward = 2 × physical + noise-free offset, so r = 1 and
    forward / physical = 2 + 100/phys; durations constant but one step (r undefined there)."""
    rows = []
    for e, shift in (("a", 0.0), ("b", 50.0)):
        phys = np.arange(1, 21, dtype=float) * 100 + shift
        rows.append(pd.DataFrame({"experiment_id": e, "phys_total_us": phys,
                                  "step_forward_us": 2 * phys + 100,
                                  "step.duration_us": np.r_[np.full(19, 50.0), 5000.0],
                                  "phys_lower_bound_us": np.full(20, 1000.0)}))
    return pd.concat(rows, ignore_index=True)


def test_headline_statistics_by_hand() -> None:
    f = _frame()
    v = S.headline_values(f)
    assert v["physical_tracks_forward"] == pytest.approx(1.0)
    # per experiment the median of 2 + 100/phys over phys = 100·k + shift: at k = 10.5
    med_a = np.median(2 + 100 / (np.arange(1, 21) * 100.0))
    med_b = np.median(2 + 100 / (np.arange(1, 21) * 100.0 + 50))
    assert v["physical_runs_low"] == pytest.approx(np.median([med_a, med_b]))
    assert v["duration_below_bound"] == pytest.approx(38 / 40)
    r = np.corrcoef(np.arange(1, 21) * 100.0, np.r_[np.full(19, 50.0), 5000.0])[0, 1]
    assert v["duration_not_physics"] == pytest.approx(r)
    holds = {h.key: h.holds(v[h.key]) for h in S.HEADLINES}
    assert holds == {"physical_tracks_forward": True, "physical_runs_low": True,
                     "duration_below_bound": True, "duration_not_physics": r <= S.DURATION_R_MAX}


def test_too_few_steps_is_nan_and_does_not_hold() -> None:
    f = _frame().groupby("experiment_id").head(S.MIN_STEPS_PER_EXPERIMENT - 1)
    v = S.headline_values(f)
    assert np.isnan(v["physical_tracks_forward"]) and np.isnan(v["physical_runs_low"])
    assert not S.HEADLINES[0].holds(v["physical_tracks_forward"])


def test_draws_are_seeded_within_the_spread() -> None:
    d = S.draws(kernel_draws=5, seed_draws=3, spread=0.2)
    assert [x.name for x in d] == ["baseline", "kernels-1", "kernels-2", "kernels-3", "kernels-4",
                                   "kernels-5", "seed-1", "seed-2", "seed-3"]
    assert d[0].kind == "baseline" and d[0].seed == 0 and d[0].scale == KernelScale()
    assert d == S.draws(kernel_draws=5, seed_draws=3, spread=0.2)
    d = d[1:]
    factors = np.array([[getattr(x.scale, f) for f in KernelScale.__dataclass_fields__]
                        for x in d[:5]])
    assert ((factors >= 0.8) & (factors <= 1.2)).all() and factors.std() > 0.05
    assert all(x.scale == KernelScale() and x.seed == i + 1 for i, x in enumerate(d[5:]))
    assert all(x.seed == 0 for x in d[:5])
    with pytest.raises(ValueError, match="spread"):
        S.draws(spread=1.0)
    with pytest.raises(ValueError, match="draw counts"):
        S.draws(kernel_draws=-1)


def test_summary_counts_draws_per_kind() -> None:
    keys = [h.key for h in S.HEADLINES]
    rows = []
    for name, kind, val in (("baseline", "baseline", 0.8), ("kernels-1", "kernels", 0.9),
                            ("kernels-2", "kernels", 0.7),
                            ("seed-1", "seed", 0.85), ("seed-2", "seed", 0.95)):
        for h in S.HEADLINES:
            value = val if h.key == "physical_tracks_forward" else 0.0
            rows.append({"draw": name, "kind": kind, "headline": h.key, "value": value,
                         "holds": h.holds(value)})
    out = S.summarize({k: 0.88 for k in keys}, pd.DataFrame(rows)).set_index("headline")
    row = out.loc["physical_tracks_forward"]
    assert (row["holds_kernel_draws"], row["kernel_draws"]) == (1, 2)
    assert (row["holds_seed_draws"], row["seed_draws"]) == (2, 2)
    assert row["seed_sd"] == pytest.approx(np.std([0.85, 0.95], ddof=1))
    assert (row["kernels_min"], row["kernels_max"]) == (0.7, 0.9)
    assert bool(row["holds_on_reference"]) and row["baseline"] == 0.8


def test_a_headline_needs_one_bound() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        S.Headline("x", "claim", S.median_r_forward)


def test_headline_table_is_what_the_answer_reads() -> None:
    """The table headlines: each headline's value (headline_values), its threshold and
    whether it holds; the experiments, and those with a within-experiment r (a third
    experiment of 5 steps has none)."""
    f = pd.concat([_frame(), pd.DataFrame({"experiment_id": "c", "phys_total_us": [1.0] * 5,
                                           "step_forward_us": 2.0, "step.duration_us": 50.0,
                                           "phys_lower_bound_us": 1000.0})], ignore_index=True)
    t = S.headline_table(f)
    assert t.columns.tolist() == S.HEADLINE_TABLE_COLUMNS
    assert t["headline"].tolist() == [h.key for h in S.HEADLINES]
    assert t["threshold"].tolist() == [S.TRACKS_R_MIN, S.UNDER_RATIO_MIN, S.BELOW_BOUND_MIN,
                                       S.DURATION_R_MAX]
    values = S.headline_values(f)
    assert t["value"].tolist() == pytest.approx([values[h.key] for h in S.HEADLINES])
    assert t.loc[t["headline"] == "duration_below_bound", "value"].iloc[0] == \
        pytest.approx(43 / 45)                              # c's 5 steps are all below too
    assert t["holds"].tolist()[:3] == [True, True, True]
    assert (t["n_experiments"].unique().tolist(), t["n_experiments_r"].unique().tolist()) == \
        ([3], [2])
