"""docs/recipes/add-a-step-time-target.md, followed on its example, step_start_to_output_us:
the recipe's function (its code block, executed in targets/timestamps.py's namespace, where the
recipe puts it) on a hand-made timeline, its lines for sync_step_targets and _async_rows, its
TARGET_LABELS entry, and the target run through per_target.on_targets. Nothing in lib/ is
modified: the new target is passed where the registry would pass it.

Hand timeline of experiment "e" (µs after T0; S = schedule() start = step.ts_start_ns,
E = step.ts_end_ns; every step sampled, sync loop):

    step 0  S=1000  E=1050  FIRST_TOKEN @1900                   -> 1900 − 1000 = 900
    step 1  S=2000  E=2040  FINISHED (aborted) @2500, FIRST_TOKEN @2700
                                                                -> 2700 − 2000 = 700 (the abort
                                                                   is not an update event)
    step 2  S=3000  E=3030  no update event                     -> NaN
    step 3  no step time stamps; FIRST_TOKEN @4600              -> NaN
    step 4  S=5000  E=5020  FINISHED (length) @5400, FIRST_TOKEN @5450
                                                                -> 5400 − 5000 = 400
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stepdecomp
from recipe_blocks import read_recipe
from stepdecomp.core import columns
from stepdecomp.figures import plots
from stepdecomp.run import pipeline
from stepdecomp.stats import correlation, moecheck, per_target
from stepdecomp.targets import timestamps

RECIPE = read_recipe("add-a-step-time-target.md")
NEW = "step_start_to_output_us"
T0 = 10**15                      # a large monotonic origin: ns must survive as int64
US = 1_000
EXPECTED_US = [900.0, 700.0, np.nan, np.nan, 400.0]


def recipe_function():
    """The recipe's function, defined as it would be inside targets/timestamps.py."""
    block = RECIPE.block("edit", "lib/stepdecomp/targets/timestamps.py", "def start_to_output_us")
    namespace = dict(vars(timestamps))
    exec(compile(block.text, "add-a-step-time-target.md", "exec"), namespace)
    return namespace["start_to_output_us"]


def recipe_labels() -> dict[str, str]:
    """TARGET_LABELS as the recipe's columns.py block defines it."""
    block = RECIPE.block("edit", "lib/stepdecomp/core/columns.py")
    namespace = dict(vars(columns))
    exec(compile(block.text, "add-a-step-time-target.md", "exec"), namespace)
    assert namespace["START_TO_OUTPUT"] == NEW
    return namespace["TARGET_LABELS"]


def timeline() -> tuple[pd.DataFrame, pd.DataFrame]:
    start = pd.array([1000, 2000, 3000, None, 5000], dtype="Int64")
    end = pd.array([1050, 2040, 3030, None, 5020], dtype="Int64")
    steps = pd.DataFrame({"experiment_id": ["e"] * 5, "step.id": np.arange(5, dtype=np.int64),
                          "step.ts_start_ns": start * US + T0, "step.ts_end_ns": end * US + T0,
                          "step.duration_us": (end - start).astype("Float64")})
    rows = [("r0", "FIRST_TOKEN", 0, 1900, None), ("r1", "FINISHED", 1, 2500, "aborted"),
            ("r2", "FIRST_TOKEN", 1, 2700, None), ("r3", "FIRST_TOKEN", 3, 4600, None),
            ("r4", "FINISHED", 4, 5400, "length"), ("r5", "FIRST_TOKEN", 4, 5450, None),
            ("r2", "SCHEDULED", 2, 3010, None)]
    rid, event, step, t, status = zip(*rows)
    journeys = pd.DataFrame({"experiment_id": ["e"] * len(rows),
                             "request_id": pd.array(rid, dtype="string"),
                             "event": pd.array(event, dtype="string"),
                             "scheduler.step": pd.array(step, dtype="Int64"),
                             "ts.monotonic_ns": pd.array(np.array(t) * US + T0, dtype="Int64"),
                             "finish.status": pd.array(status, dtype="string")})
    return steps, journeys


def test_the_recipes_function_on_the_hand_timeline():
    steps, journeys = timeline()
    got = recipe_function()(steps, journeys)
    np.testing.assert_array_equal(got, EXPECTED_US)
    assert RECIPE.mentions("900, 700, NaN, NaN and 400 µs")


def test_under_the_sync_loop_it_is_schedule_to_emission_plus_forward():
    """Where step_forward_us comes from the step's own update event, the new target is
    (E − S) + step_forward_us: 50 + 850, 40 + 660, 20 + 380."""
    steps, journeys = timeline()
    sync = timestamps.step_targets(steps, journeys, engine_loop="sync")
    new = recipe_function()(steps, journeys)
    event = (sync["step_forward_source"] == timestamps.SOURCE_EVENT).to_numpy()
    assert event.tolist() == [True, True, False, False, True]
    gap = ((steps["step.ts_end_ns"] - steps["step.ts_start_ns"]) / US).to_numpy(np.float64)
    np.testing.assert_array_equal(new[event], gap[event] + sync.loc[event, "step_forward_us"])
    assert sync.loc[event, "step_forward_us"].tolist() == [850.0, 660.0, 380.0]


def test_the_recipes_lines_for_sync_step_targets_and_async_rows():
    block = RECIPE.block("edit", "lib/stepdecomp/targets/timestamps.py", "_async_rows")
    sync_line, async_line = block.text.strip().splitlines()
    steps, journeys = timeline()
    # where the recipe puts them: before sync_step_targets' return, in _async_rows(out, rows, …)
    assert "    return out[SYNC_COLUMNS]\n" in inspect.getsource(timestamps.sync_step_targets)
    assert list(inspect.signature(timestamps._async_rows).parameters) == ["out", "rows", "readings"]
    out = timestamps.sync_step_targets(steps, journeys)
    ns = {"out": out, "steps": steps, "journeys": journeys, "np": np,
          "start_to_output_us": recipe_function()}
    exec(sync_line.strip(), ns)
    np.testing.assert_array_equal(out[NEW].to_numpy(), EXPECTED_US)
    exec(async_line.strip(), {**ns, "rows": np.array([True, False, True, True, False])})
    np.testing.assert_array_equal(out[NEW].to_numpy(), [np.nan, 700.0, np.nan, np.nan, 400.0])
    for name in ("SYNC_COLUMNS", "TARGET_US_COLUMNS", "journey_step_times", "_step_arrays",
                 "_lookup", "_us", "attach"):
        assert hasattr(timestamps, name), name


def test_the_registry_entry_and_the_statistics_per_target():
    labels = recipe_labels()
    # the recipe's entry is today's registry plus the new target, in that order
    assert {k: v for k, v in labels.items() if k != NEW} == columns.TARGET_LABELS
    targets = tuple(labels)
    assert targets == (*columns.TARGETS, NEW)
    steps, journeys = timeline()
    found = pd.DataFrame({"experiment_id": steps["experiment_id"], "step.id": steps["step.id"],
                          NEW: recipe_function()(steps, journeys)})
    comps = pd.DataFrame({"experiment_id": ["e"] * 5, "model": ["m"] * 5,
                          "workload": ["general"] * 5, "step.id": np.arange(5),
                          "step.duration_us": [50.0, 40.0, 30.0, np.nan, 20.0],
                          "phys_lower_bound_us": [500.0] * 5})
    comps = timestamps.attach(comps, found)       # as notebook 02 joins the targets
    table = per_target.on_targets(correlation.lower_bound_check, comps, targets=targets)
    # step_forward_us and step_period_us are not in this frame: skipped
    assert table["target"].tolist() == ["step.duration_us", NEW]
    row = table.set_index("target").loc[NEW]
    # usable: steps 0, 1, 4 (900, 700, 400 µs against a 500 µs bound); below: step 4;
    # median of 900/500, 700/500, 400/500 = median(1.8, 1.4, 0.8) = 1.4
    assert (row["n_steps"], row["n_below"], row["flagged"]) == (3, 1, True)
    assert row["fraction_below"] == pytest.approx(1 / 3, rel=1e-15)
    assert row["median_ratio"] == pytest.approx(1.4, rel=1e-15)
    # schedule() time: all 4 steps with a duration are below the bound
    dur = table.set_index("target").loc["step.duration_us"]
    assert (dur["n_steps"], dur["n_below"]) == (4, 4)


def test_every_consumer_reads_the_one_registry():
    """One TARGET_LABELS entry reaches everything that runs per target: the recipe's
    registration step is complete."""
    assert columns.TARGETS == tuple(columns.TARGET_LABELS)
    assert timestamps.TARGETS is columns.TARGETS
    assert per_target.TARGETS is columns.TARGETS
    assert moecheck.DELTA_R_TARGETS is columns.TARGETS
    assert inspect.signature(per_target.on_targets).parameters["targets"].default is columns.TARGETS
    assert inspect.signature(per_target.attribution_on_targets).parameters["targets"].default \
        is columns.TARGETS
    explain_entry = pipeline.PER_EXPERIMENT_STATISTICS["what_explains_targets"]
    assert explain_entry.keywords["targets"] is columns.TARGETS
    assert plots.TARGET_LABELS is columns.TARGET_LABELS
    # the report formats every registered target's column, not a list of its own
    text = (Path(stepdecomp.__file__).parent / "templates" / "_measurement.md.j2").read_text()
    assert "markdown_table(s.target_us_formats)" in text
    assert "markdown_table(s.target_frac_formats)" in text
    assert not any(f'"{t}": fmt_us' in text or f'"{t}": fmt_frac' in text for t in columns.TARGETS)


def test_the_limits_the_recipe_states():
    assert per_target.PRIMARY_TARGET == columns.FORWARD
    assert RECIPE.mentions("`stepdecomp.stats.per_target.PRIMARY_TARGET` (`step_forward_us`)")
    # target_coverage lists its shares by hand: none for a target it does not know
    steps, journeys = timeline()
    coverage = timestamps.coverage_table(timestamps.step_targets(steps, journeys, "sync"))
    assert "share_step_forward" in coverage and not any(NEW in c for c in coverage.columns)
