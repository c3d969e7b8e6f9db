"""Property-based tests of the loader's rules (issue #20): whatever a configuration setting,
a directory name or a file's step records hold, the load never raises on it, takes a value
exactly or refuses it with a short message naming the file, and accounts for every event
by the documented rules. Complements the hand-written cases of test_bad_inputs.py.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepdecomp.traces import load, otlp
from stepdecomp.traces.experiments import (MAX_TOKENS_PER_GPU, MAX_TP, ConfigError, discover,
                                           read_experiment)
from stepdecomp.core.messages import MAX_MESSAGE_CHARS
from stepdecomp.core.paths import FIXTURE_ROOT, display_path
from stepdecomp.hw.specs import UnknownModelError

# the directory-name property makes every kind of skip warn; the skips themselves are asserted
pytestmark = pytest.mark.filterwarnings("ignore::stepdecomp.traces.experiments.ConfigWarning")
EXAMPLES = int(os.environ.get("STEPDECOMP_HYPOTHESIS_EXAMPLES", "120"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
GENERAL = "20260101-000000-llama-2-7b-tp1-general"
HF_ID = "meta-llama/Llama-2-7b-hf"

# --------------------------------------------------------------------------- settings

VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.integers(0, 3000),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=60),
    st.from_regex(r"\A ?[0-9]{1,25} ?\Z"), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def _expected_int(v: Any, upper: int) -> int | None:
    """What a setting must be read as (None: refused), stated independently of the code:
    an int (not a bool), an integral float or ASCII digits, from 1 to ``upper``."""
    if isinstance(v, bool):
        return None
    if isinstance(v, float):
        v = int(v) if v == v and abs(v) != float("inf") and v.is_integer() else None
    elif isinstance(v, str):
        v = int(v.strip()) if v.strip().isascii() and v.strip().isdigit() else None
    elif not isinstance(v, int):
        return None
    return v if v is not None and 1 <= v <= upper else None


@SETTINGS
@given(key=st.sampled_from(["tensor_parallelism", "max_num_batched_tokens", "max_num_seqs",
                            "max_model_len"]), value=VALUES)
def test_any_setting_is_taken_exactly_or_refused_naming_the_file(key: str, value: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / GENERAL
        d.mkdir()
        cfg = d / "exp-config.yaml"
        cfg.write_text(yaml.safe_dump({"model": HF_ID, key: value}, allow_unicode=True))
        upper = MAX_TP if key == "tensor_parallelism" else MAX_TOKENS_PER_GPU   # TP 1 here
        want = None if value is None else _expected_int(value, upper)
        try:
            e = read_experiment(d)
        except ConfigError as err:
            msg = str(err)
            assert value is not None and want is None
            assert re.match(rf"{re.escape(display_path(cfg))} line \d+: {key} must be an "
                            rf"integer from 1 to {upper:,}, got ", msg)
            assert len(msg) <= MAX_MESSAGE_CHARS
        else:
            got = e.tp if key == "tensor_parallelism" else getattr(e, key)
            assert got == (want if key != "tensor_parallelism" or want is not None else 1)
            assert value is None or want is not None


@SETTINGS
@given(model=st.one_of(st.text(max_size=80), st.integers(), st.none(), st.lists(st.text())))
def test_any_model_value_is_an_hf_id_or_refused(model: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / GENERAL
        d.mkdir()
        (d / "exp-config.yaml").write_text(yaml.safe_dump({"model": model}, allow_unicode=True))
        try:
            e = read_experiment(d)
        except ConfigError as err:
            assert re.match(rf"{re.escape(display_path(d / 'exp-config.yaml'))} line \d+: "
                            rf"model must be a Hugging Face id <org>/<name>, got ", str(err))
            assert len(str(err)) <= MAX_MESSAGE_CHARS
        else:
            if model:          # else the slug of the name decides
                org, name = e.hf_id.split("/")
                assert org and name and not org.startswith(".") and not name.startswith(".")
            assert "/" in e.hf_id


# --------------------------------------------------------------------------- directory names

NAMES = st.one_of(
    st.text(alphabet="0123456789-tpabl", min_size=1, max_size=40),
    st.builds(lambda pre, slug, tp, rest: f"{pre}{slug}-tp{tp}-{rest}",
              st.sampled_from(["", "20260101-000000-", "7-", "20260101-000000"]),
              st.sampled_from(["", "llama-2-7b", "0000", "x"]),
              st.one_of(st.integers(0, 2000).map(str), st.from_regex(r"\A[0-9]{1,30}\Z")),
              st.sampled_from(["general", "codegen-1-1", ""])))


@SETTINGS
@given(name=NAMES)
def test_any_directory_name_is_used_or_listed(name: str) -> None:
    if name in (".", "..") or "/" in name or name == GENERAL:
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(FIXTURE_ROOT / GENERAL, root / GENERAL)
        (root / name).mkdir()
        (root / name / "traces.json").write_bytes(b"")
        try:
            found = discover(root)
        except UnknownModelError as e:      # a slug that slugs.yaml lacks: documented stop
            assert name in str(e) and "slugs.yaml" in str(e)
            return
    used = [e for e in found.experiments if e.experiment_id == name]
    skipped = dict(found.skipped)
    assert len(used) + (name in skipped) == 1
    for e in used:
        assert 1 <= e.tp <= MAX_TP and any(c.isalpha() for c in e.model)
    assert all(len(why) <= MAX_MESSAGE_CHARS for why in skipped.values())


# --------------------------------------------------------------------------- step records

BASE_NS = 1_700_000_000_000_000_000

RECORD = st.fixed_dictionaries({
    "id": st.integers(0, 30),
    "start_us": st.integers(0, 2_000_000),
    "elapsed_ns": st.integers(-5_000, 50_000_000),            # negative: a clock going back
    "duration": st.one_of(st.none(), st.none(), st.integers(0, 2**62)),   # None: consistent
    "timed": st.sampled_from(["both", "both", "none", "start", "end"]),
    "tokens": st.integers(0, 2),
})


def _attrs(r: dict) -> dict[str, int]:
    start = BASE_NS + r["start_us"] * 1000
    end = start + r["elapsed_ns"]
    duration = max(r["elapsed_ns"], 0) // 1000 if r["duration"] is None else r["duration"]
    a = {"step.id": r["id"], "step.ts_start_ns": start, "step.ts_end_ns": end,
         "step.duration_us": duration, "batch.prefill_tokens": r["tokens"],
         "batch.decode_tokens": 1}
    if r["timed"] in ("none", "end"):
        del a["step.ts_start_ns"]
    if r["timed"] in ("none", "start"):
        del a["step.ts_end_ns"]
    return a


def _reference(rows: list[dict[str, int]]) -> tuple[list[dict], Counter]:
    """The documented rules applied one record at a time, in file order."""
    counts: Counter = Counter()
    seen, unique = set(), []
    for a in rows:
        key = tuple(sorted(a.items()))
        if key in seen:
            counts["duplicate"] += 1
        else:
            seen.add(key)
            unique.append(a)
    lo, hi = load.id_range(np.array([a["step.id"] for a in unique]), len(unique))
    kept, ids = [], set()
    for a in unique:
        start, end = a.get("step.ts_start_ns"), a.get("step.ts_end_ns")
        timed = start is not None and end is not None
        if not lo <= a["step.id"] <= hi or (timed and end < start):
            counts["out of range"] += 1
        elif timed and abs(a["step.duration_us"] - (end - start) // 1000) > load.DURATION_SLACK_US:
            counts["inconsistent"] += 1
        elif a["step.duration_us"] > load.MAX_STEP_DURATION_US:
            counts["out of range"] += 1
        elif a["step.id"] in ids:
            counts["conflicting duplicate"] += 1
        else:
            ids.add(a["step.id"])
            kept.append(a)
    return kept, counts


@SETTINGS
@given(records=st.lists(RECORD, min_size=1, max_size=30),
       copies=st.lists(st.integers(0, 29), max_size=5), per_line=st.integers(1, 4))
def test_step_records_follow_the_rules_exactly(records: list[dict], copies: list[int],
                                              per_line: int) -> None:
    rows = [_attrs(r) for r in records]
    rows += [rows[i] for i in copies if i < len(rows)]          # lines exported twice
    lines = [otlp.export_line({otlp.STEP_SCOPE: [
        otlp.span(otlp.STEP_SPAN, "t", "s", 0, 1, [otlp.event(otlp.BATCH_SUMMARY, 1, a)])
        for a in rows[i:i + per_line]]}) for i in range(0, len(rows), per_line)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "traces.json"
        path.write_bytes(b"".join(lines))
        steps, _, stats = load.parse_trace_file(path, GENERAL, progress=False)
    kept, counts = _reference(rows)
    assert stats.balanced() and stats.events == len(rows)
    assert {r: n for r, (n, _) in stats.event_reasons.items()} == {
        reason: n for reason, n in {
            "duplicate: step.BATCH_SUMMARY": counts["duplicate"],
            "inconsistent: step.duration_us": counts["inconsistent"],
            "conflicting duplicate: step.id": counts["conflicting duplicate"]}.items() if n} | {
        r: n for r, (n, _) in stats.event_reasons.items() if r.startswith("out of range")}
    assert stats.rejected_out_of_range == counts["out of range"]
    assert steps["step.id"].tolist() == [a["step.id"] for a in kept]
    assert steps["step.duration_us"].tolist() == [a["step.duration_us"] for a in kept]
    assert not steps["step.id"].duplicated().any()
    start = steps["step.ts_start_ns"].astype("Int64")
    assert start.isna().tolist() == ["step.ts_start_ns" not in a for a in kept]


@pytest.mark.parametrize("typed", [True, False])
def test_reference_agrees_on_a_hand_made_file(typed: bool, tmp_path: Path) -> None:
    """The reference of the property test, checked on records whose fate is known."""
    rec = {"id": 5, "start_us": 0, "elapsed_ns": 19_023_000, "duration": None, "timed": "both",
           "tokens": 0}
    rows = [_attrs(rec), _attrs(rec | {"duration": 2**62}), _attrs(rec | {"tokens": 1}),
            _attrs(rec | {"id": 6, "timed": "none", "duration": 2**62}), _attrs(rec)]
    path = tmp_path / "traces.json"
    path.write_bytes(b"".join(otlp.export_line({otlp.STEP_SCOPE: [
        otlp.span(otlp.STEP_SPAN, "t", "s", 0, 1, [otlp.event(otlp.BATCH_SUMMARY, 1, a)])]})
        for a in rows))
    steps, _, st = load.parse_trace_file(path, GENERAL, typed=typed, progress=False)
    assert steps["step.id"].tolist() == [5]
    assert {r: v for r, v in st.event_reasons.items()} == {
        "duplicate: step.BATCH_SUMMARY": [1, 5], "inconsistent: step.duration_us": [1, 2],
        "conflicting duplicate: step.id": [1, 3], "out of range: step.duration_us": [1, 4]}
    assert st.first_conflict == [5, 1, 3]
    kept, counts = _reference(rows)
    assert [a["step.id"] for a in kept] == [5] and sum(counts.values()) == 4
