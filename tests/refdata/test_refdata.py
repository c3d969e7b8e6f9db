"""The reference-data replay (lib/stepdecomp/refdata): workload, scheduler invariants, the
engine timeline, the written format, journey/summary consistency and determinism, on short
(--time-scale) runs."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from stepdecomp.traces import otlp
from stepdecomp.core.paths import DATA_DIR, WORKLOADS_DIR
from stepdecomp.refdata import replay as R
from stepdecomp.refdata import stepcost, timeline
from stepdecomp.refdata.cli import main
from stepdecomp.refdata.stepcost import KV_BLOCK_TOKENS, kv_cache_blocks
from stepdecomp.refdata.workload import (BOS_TOKENS, CLIENT_TIMEOUT_S, generate_requests,
                                         read_workload)
from stepdecomp.refdata.writer import TRUTH_FILE, summary_metrics, write_experiment
from stepdecomp.hw.specs import load_gpu_spec, load_model_spec

pytestmark = pytest.mark.integration

GENERAL_7B = "20260217-231439-llama-2-7b-tp1-general"
REASONING_7B = "20260217-170634-llama-2-7b-tp1-reasoning"       # KV-bound: preemptions
REASONING_70B = "20260218-065057-llama-2-70b-hf-tp4-reasoning"   # max_num_seqs-bound
MIXTRAL = "20260218-141024-mixtral-8x7b-v0-1-tp2-roleplay"
B, MAX_SEQS = 2048, 128


OVERLOAD = {"data": {"type": "shared_prefix", "shared_prefix": {
    "num_groups": 2, "num_prompts_per_group": 20, "system_prompt_len": 100, "question_len": 3400,
    "output_len": 40}}, "load": {"type": "constant", "stages": [{"rate": 30, "duration": 6}]}}


def overload_experiment(root: Path) -> Path:
    """A 7B experiment whose 3.5k-token prompts arrive far faster than they can be
    prefilled: with a 2 s client timeout requests are aborted while waiting, while their
    multi-step prefill runs, and while decoding."""
    d = root / "20260101-000000-llama-2-7b-tp1-overload"
    (d / "results").mkdir(parents=True)
    (d / "exp-config.yaml").write_bytes((WORKLOADS_DIR / GENERAL_7B / "exp-config.yaml").read_bytes())
    (d / "results" / "config.yaml").write_text(json.dumps(OVERLOAD))
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Short replays with per-decode detail, and the overload experiment with aborts."""
    out = {name: R.simulate(WORKLOADS_DIR / name, seed=3, time_scale=0.05, record_decodes=True)
           for name in (GENERAL_7B, REASONING_7B, REASONING_70B, MIXTRAL)}
    out["aborts"] = R.simulate(overload_experiment(tmp_path_factory.mktemp("overload")), seed=3,
                               client_timeout_s=2.0, record_decodes=True)
    return out


ALL = (GENERAL_7B, REASONING_7B, REASONING_70B, MIXTRAL, "aborts")


@pytest.fixture(scope="module")
def sync_runs(runs: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same replays under vLLM's synchronous engine loop (``--no-async-scheduling``)."""
    out = {name: R.simulate(WORKLOADS_DIR / name, seed=3, time_scale=0.05, record_decodes=True,
                            engine_loop="sync") for name in (GENERAL_7B, REASONING_70B)}
    out["aborts"] = R.simulate(runs["aborts"].experiment, seed=3, client_timeout_s=2.0,
                               record_decodes=True, engine_loop="sync")
    return out


# --------------------------------------------------------------------------- configuration

def test_kv_capacity_by_hand() -> None:
    # Llama-2-7B, TP1: 6 738 149 376 matrix params · 2 B = 13 476 298 752 B of weights;
    # 80 GiB · 0.9 = 77 309 411 328 B; minus the weights and the 3 GiB reserve
    # (3 221 225 472 B) = 60 611 887 104 B; one block = 16 tokens · (2 · 32 layers · 32 KV
    # heads · 128 · 2 B = 524 288 B) = 8 388 608 B -> 7225.5 -> 7225 blocks
    spec = load_model_spec("meta-llama/Llama-2-7b-hf")
    assert spec.total_params == 6_738_149_376
    assert kv_cache_blocks(spec, 1, load_gpu_spec()) == 7225
    # FP8 weights free 6 738 149 376 B more: 67 350 036 480 / 8 388 608 = 8028.7 -> 8028
    assert kv_cache_blocks(spec, 1, load_gpu_spec(), "fp8") == 8028
    # H200 (131.3 GiB): 126 888 343 142 B · ... = (126 888 343 142 - 13 476 298 752
    # - 3 221 225 472) / 8 388 608 = 13 135.4 -> 13135
    assert kv_cache_blocks(spec, 1, load_gpu_spec("h200-sxm")) == 13135


def test_effective_config_wins_and_differences_are_listed() -> None:
    wl = read_workload(WORKLOADS_DIR / GENERAL_7B)
    assert wl.source == "results/config.yaml"
    assert (wl.num_groups, wl.prompts_per_group, wl.system_prompt_tokens, wl.question_tokens,
            wl.output_tokens) == (10, 10, 100, 447, 248)
    assert wl.stages == ((8.0, 600.0), (20.0, 600.0))
    # profile.yaml said 9 system prompts × 5 users, multi-turn
    assert "num_groups: profile.yaml 9, results/config.yaml 10" in wl.differences
    assert "prompts_per_group: profile.yaml 5, results/config.yaml 10" in wl.differences
    assert any(d.startswith("multi-turn chat") for d in wl.differences)


def test_profile_only_experiment(tmp_path: Path) -> None:
    d = tmp_path / "x"
    d.mkdir()
    (d / "profile.yaml").write_bytes((WORKLOADS_DIR / GENERAL_7B / "profile.yaml").read_bytes())
    wl = read_workload(d)
    assert wl.source == "profile.yaml" and (wl.num_groups, wl.prompts_per_group) == (9, 5)
    (d / "results").mkdir()
    (d / "results" / "config.yaml").write_text("data: [1, 2\n")
    with pytest.raises(ValueError, match=r"config.yaml: not valid YAML"):
        read_workload(d)
    (d / "results" / "config.yaml").write_text("data: {}\n")
    with pytest.raises(ValueError, match=r"config.yaml: not an inference-perf shared_prefix"):
        read_workload(d)
    with pytest.raises(ValueError, match="neither"):
        read_workload(tmp_path)


def test_requests_cycle_through_shuffled_prompts() -> None:
    wl = read_workload(WORKLOADS_DIR / GENERAL_7B)
    req = generate_requests(wl, np.random.default_rng(0), time_scale=0.05)
    # stages 8 req/s and 20 req/s for 600 s each, scaled to 30 s: 240 + 600 requests
    assert len(req) == 840 and np.bincount(req.stage).tolist() == [240, 600]
    assert np.all(np.diff(req.arrival_ns) >= 0)
    assert req.arrival_ns[239] == pytest.approx(30e9) and req.arrival_ns[-1] == pytest.approx(60e9)
    # request i sends prompt order[i mod 100]: each of the 100 prompts 8 or 9 times
    assert (req.prompt[100:] == req.prompt[:-100]).all()
    assert sorted(np.bincount(req.prompt).tolist()) == [8] * 60 + [9] * 40
    assert set(req.group.tolist()) == set(range(10))
    # one prompt, one length; a group shares its system prompt's length
    by_prompt = pd.DataFrame({"p": req.prompt, "n": req.prompt_tokens, "g": req.group,
                              "s": req.system_tokens})
    assert (by_prompt.groupby("p")["n"].nunique() == 1).all()
    assert (by_prompt.groupby("g")["s"].nunique() == 1).all()
    # re-tokenization: (S + Q)·(1 + ~4.6 %) + BOS, never below S + Q + BOS
    assert (req.prompt_tokens >= 547 + BOS_TOKENS).all()
    assert 560 < req.prompt_tokens.mean() < 590


# --------------------------------------------------------------------------- scheduler invariants

@pytest.mark.parametrize("name", ALL)
def test_step_invariants(runs: dict, name: str) -> None:
    s = runs[name].steps
    assert (s["step_id"].to_numpy() == np.arange(1, len(s) + 1)).all()
    assert (s["prefill_tokens"] + s["decode_tokens"] <= B).all()
    assert (s["prefill_tokens"] + s["decode_tokens"] > 0).all()
    assert (s["running"] <= MAX_SEQS).all()
    assert (s["decode_tokens"] == s["num_decode_reqs"]).all()
    assert ((s["kv_blocks_used"] >= 0) & (s["kv_blocks_used"] <= s["kv_blocks_total"])).all()
    ch = runs[name].chunks.groupby("step_id")["chunk_tokens"].agg(["sum", "count"])
    ch = ch.reindex(s["step_id"], fill_value=0)
    assert (ch["sum"].to_numpy() == s["prefill_tokens"].to_numpy()).all()
    assert (ch["count"].to_numpy() == s["num_prefill_reqs"].to_numpy()).all()


def _timeline(s: pd.DataFrame) -> tuple[np.ndarray, ...]:
    return tuple(s[c].to_numpy() for c in ("ts_start_ns", "ts_end_ns", "gpu_start_ns",
                                           "fwd_end_ns", "upd_start_ns", "out_ns"))


@pytest.mark.parametrize("name", ALL)
def test_timeline_of_every_step(runs: dict, name: str) -> None:
    """The async engine loop (the default): batch n starts on the GPU at max(end of batch
    n−1, end of schedule(n) and its host work), update(n) follows its GPU end and runs
    after schedule(n+1) (docs/measurement.md §5)."""
    s = runs[name].steps
    start, end, gpu0, gpu1, upd0, out = _timeline(s)
    host = s["host_ns"].to_numpy()
    assert ((start < end) & (end + host <= gpu0) & (gpu0 < gpu1) & (gpu1 <= upd0)
            & (upd0 < out)).all()
    assert (gpu0[1:] >= gpu1[:-1]).all()                     # one batch on the GPU at a time
    assert (gpu0[1:] == np.maximum(gpu1[:-1], end[1:] + host[1:])).all()
    # schedule(n+1) runs before update(n), and after update(n−1)
    if name != "aborts":    # an abort of a running request waits for the batch in flight
        busy = start[1:] - out[:-1] < 10**8
        assert (start[1:][busy] < upd0[:-1][busy]).mean() > 0.99
    assert (start[2:] >= out[:-2]).all()
    assert (s["duration_us"] == (end - start) // 1000).all()  # the server's integer division
    np.testing.assert_allclose(s["forward_us"], (gpu1 - gpu0) / 1000)
    # step.duration_us is the scheduler's CPU time: tens to hundreds of µs
    assert 20 <= s["duration_us"].median() <= 500
    assert s["forward_us"].median() > 20 * s["duration_us"].median()


@pytest.mark.parametrize("name", (GENERAL_7B, REASONING_70B, "aborts"))
def test_sync_timeline_of_every_step(sync_runs: dict, name: str) -> None:
    """The sync loop: schedule(n) → host → forward(n) → update(n) → schedule(n+1)."""
    s = sync_runs[name].steps
    start, end, gpu0, gpu1, upd0, out = _timeline(s)
    assert (gpu0 == end + s["host_ns"].to_numpy()).all()
    assert ((gpu0 < gpu1) & (upd0 == gpu1) & (upd0 < out)).all()
    assert (start[1:] >= out[:-1]).all()                     # the next step after update()
    assert sync_runs[name].truth()["gpu_waited_for_cpu"].iloc[1:].all()


def test_async_loop_changes_time_not_work(runs: dict, sync_runs: dict) -> None:
    """Both loops schedule the same tokens (vLLM's output placeholders); the async loop
    hides the CPU work behind the GPU, so its steps follow each other faster, and a finished
    request holds its seat one iteration longer."""
    a, b = runs[GENERAL_7B].steps, sync_runs[GENERAL_7B].steps
    assert a["prefill_tokens"].sum() == b["prefill_tokens"].sum()
    assert a["decode_tokens"].sum() == b["decode_tokens"].sum()
    ta = runs[GENERAL_7B].truth()
    tb = sync_runs[GENERAL_7B].truth()
    assert ta["gpu_waited_for_cpu"].mean() < 0.05 < tb["gpu_waited_for_cpu"].mean()
    per_a = np.median(np.diff(a["ts_start_ns"].to_numpy()))
    per_b = np.median(np.diff(b["ts_start_ns"].to_numpy()))
    cpu = np.median((b["sched_ns"] + b["upd_ns"]).to_numpy())
    assert per_a < per_b - 0.5 * cpu


@pytest.mark.parametrize("name", ALL)
def test_events_fall_in_their_phase(runs: dict, name: str) -> None:
    res = runs[name]
    ev = res.events
    s = res.steps.set_index("step_id")
    inside = ev[ev["event"].isin(["SCHEDULED", "PREEMPTED"])]
    w = s.loc[inside["scheduler.step"]]
    t = inside["ts_ns"].to_numpy()
    assert ((w["ts_start_ns"].to_numpy() < t) & (t < w["ts_end_ns"].to_numpy())).all()
    after = ev[(ev["event"] == "FIRST_TOKEN")
               | ((ev["event"] == "FINISHED") & (ev["finish.status"] == "length"))]
    w = s.loc[after["scheduler.step"]]
    t = after["ts_ns"].to_numpy()
    assert ((w["fwd_end_ns"].to_numpy() < t) & (t < w["out_ns"].to_numpy())).all()
    # QUEUED: taken in at the top of the loop iteration right before schedule(counter + 1),
    # after the request reached the engine
    q = ev[ev["event"] == "QUEUED"]
    arrival = res.requests.set_index("request").loc[q["request"], "arrival_ns"].to_numpy()
    t = q["ts_ns"].to_numpy()
    assert (t >= arrival).all()
    nxt = s["ts_start_ns"].reindex(q["scheduler.step"].to_numpy() + 1).to_numpy()
    known = ~np.isnan(nxt)
    assert known.mean() > 0.99 and (t[known] <= nxt[known]).all()
    prev = s["ts_start_ns"].reindex(q["scheduler.step"].to_numpy()).to_numpy()
    assert (t[~np.isnan(prev)] > prev[~np.isnan(prev)]).all()
    # per request, events are in time order and the clock is monotonic
    order = ev.sort_values(["request", "ts_ns"], kind="stable")
    assert (order.groupby("request")["ts_ns"].diff().dropna() >= 0).all()
    j = res.journeys()
    assert (j["ts.monotonic_ns"] == R.MONOTONIC_ORIGIN_NS + ev["ts_ns"].to_numpy()).all()
    np.testing.assert_allclose(j["ts.monotonic"] * 1e9, j["ts.monotonic_ns"], rtol=0, atol=1e3)


@pytest.mark.parametrize("name", ALL)
def test_one_decode_token_per_running_request(runs: dict, name: str) -> None:
    res = runs[name]
    d = res.decodes
    assert not d.duplicated(["step_id", "request"]).any()
    per_step = d.groupby("step_id")["ctx_tokens"].agg(["count", "sum"]).reindex(
        res.steps["step_id"], fill_value=0)
    assert (per_step["count"].to_numpy() == res.steps["num_decode_reqs"].to_numpy()).all()
    assert (per_step["sum"].to_numpy() == res.steps["decode_ctx_tokens"].to_numpy()).all()
    d = d.sort_values(["request", "step_id"])
    same = (d["request"].diff() == 0) & (d["step_id"].diff() == 1)
    assert (d["ctx_tokens"].diff()[same] == 1).all()


def _segments(res) -> pd.DataFrame:
    """One row per SCHEDULED segment: (request, start step, hit, k0, end step, k1)."""
    ev = res.events.sort_values(["request", "ts_ns"], kind="stable")
    rows, open_ = [], {}
    for d in ev.to_dict("records"):
        if d["event"] == "SCHEDULED":
            open_[d["request"]] = (d["scheduler.step"], d["prefill.done_tokens"], d["decode.done_tokens"])
        elif d["event"] in ("PREEMPTED", "FINISHED") and d["request"] in open_:
            s0, hit, k0 = open_.pop(d["request"])
            absent = d["event"] == "PREEMPTED" or d["finish.status"] == "aborted"
            rows.append((d["request"], s0, hit, k0, d["scheduler.step"] - int(absent),
                         d["decode.done_tokens"]))
    assert not open_, "every segment ends"
    return pd.DataFrame(rows, columns=["request", "start", "hit", "k0", "last", "k1"])


@pytest.mark.parametrize("name", ALL)
def test_prompt_tokens_scheduled_exactly_once_per_segment(runs: dict, name: str) -> None:
    res = runs[name]
    prompt = res.requests.set_index("request")["prompt_tokens"]
    by_req = {r: g for r, g in res.chunks.sort_values(["request", "step_id"]).groupby("request")}
    for seg in _segments(res).itertuples(index=False):
        g = by_req.get(seg.request)
        g = g[(g["step_id"] >= seg.start) & (g["step_id"] <= seg.last)] if g is not None else g
        want = int(prompt[seg.request]) + seg.k0 - seg.hit
        got = 0 if g is None else int(g["chunk_tokens"].sum())
        assert got == want if seg.k1 > seg.k0 else got < want
        if g is not None and len(g):
            prior = g["prior_tokens"].to_numpy()
            assert prior[0] == seg.hit and seg.hit % KV_BLOCK_TOKENS == 0
            assert (prior[1:] == prior[:-1] + g["chunk_tokens"].to_numpy()[:-1]).all()


def test_preemption_aborts_and_caching_happen(runs: dict) -> None:
    assert runs[REASONING_7B].requests["num_preemptions"].sum() > 0     # KV-bound 7B
    assert runs[REASONING_70B].steps["running"].max() == MAX_SEQS        # max_num_seqs binds
    r = runs["aborts"].requests
    assert (r["status"] == "aborted").sum() > 0
    ev = runs["aborts"].events
    aborted = ev[(ev["event"] == "FINISHED") & (ev["finish.status"] == "aborted")]
    assert set(aborted["phase"]) == {"WAITING", "PREFILL", "DECODE"}
    for res in runs.values():
        fin = res.events[res.events["event"] == "FINISHED"]
        assert fin["request"].is_unique and len(fin) == len(res.requests)
        ok = res.requests["status"] == "length"
        assert (res.requests.loc[ok, "output_done"] == res.requests.loc[ok, "output_tokens"]).all()


def test_resent_prompts_hit_the_prefix_cache(runs: dict) -> None:
    r = runs[MIXTRAL].requests
    cached = r["cached_tokens"]
    assert (cached % KV_BLOCK_TOKENS == 0).all() and (cached <= r["prompt_tokens"] - 1).all()
    first = ~r["prompt"].duplicated()
    # a prompt's first request hits at most its group's system prompt; a resent one its whole
    # prompt but the last partial block
    assert (cached[first] <= r.loc[first, "prompt_tokens"] * 0.25).all()
    full = (r["prompt_tokens"] - 1) // KV_BLOCK_TOKENS * KV_BLOCK_TOKENS
    assert ((cached == full)[~first]).mean() > 0.95


def test_fast_path_changes_nothing(runs: dict) -> None:
    """The O(1) pure-decode fast path is off with record_decodes; results must not differ."""
    fast = R.simulate(runs["aborts"].experiment, seed=3, client_timeout_s=2.0)
    slow = runs["aborts"]
    pd.testing.assert_frame_equal(fast.steps, slow.steps)
    pd.testing.assert_frame_equal(fast.events, slow.events)
    pd.testing.assert_frame_equal(fast.requests, slow.requests)


def test_structure_emerges(runs: dict) -> None:
    s = pd.concat([runs[n].steps for n in (GENERAL_7B, REASONING_70B, MIXTRAL)])
    assert (s["decode_tokens"] == 0).mean() < 0.01
    assert (s["prefill_tokens"] == 0).mean() > 0.6


def test_truth_sidecar(runs: dict, sync_runs: dict) -> None:
    res = runs[MIXTRAL]
    t = res.truth()
    assert list(t.columns) == ["step_id", "start_ns", "gpu_start_ns", "gpu_end_ns",
                               "update_start_ns", "update_end_ns", "gpu_idle_before_us",
                               "gpu_waited_for_cpu", "sched_cpu_us", "host_us", "forward_us",
                               "update_cpu_us", "prefill_tokens", "decode_tokens",
                               "decode_ctx_tokens", "sampled"]
    assert len(t) == len(res.steps)
    assert (t["start_ns"] == R.MONOTONIC_ORIGIN_NS + res.steps["ts_start_ns"]).all()
    np.testing.assert_allclose(t["forward_us"], (t["gpu_end_ns"] - t["gpu_start_ns"]) / 1000)
    # async, GPU-bound: the period from schedule(n+1) to schedule(n+2) is batch n's forward time
    start = t["start_ns"].to_numpy()
    waited = t["gpu_waited_for_cpu"].to_numpy()
    period = (start[2:] - start[1:-1]) / 1000
    steady = ~waited[:-2] & ~waited[1:-1] & ~waited[2:] & (period < 1e5)
    rel = period[steady] / t["forward_us"].to_numpy()[:-2][steady] - 1
    assert steady.mean() > 0.9 and np.median(np.abs(rel)) < 0.02
    # sync: the period of step n is its schedule, host, forward and update
    ts = sync_runs[GENERAL_7B].truth()
    period = np.diff(ts["start_ns"].to_numpy()) / 1000
    busy = period < 1e5
    phases = (ts["sched_cpu_us"] + ts["host_us"] + ts["forward_us"]
              + ts["update_cpu_us"]).to_numpy()[:-1]
    np.testing.assert_allclose(period[busy], phases[busy], atol=0.01)


# --------------------------------------------------------------------------- written format

def _read_traces(path: Path) -> tuple[list[dict], list[dict], Counter]:
    steps, journeys, scopes = [], [], Counter()
    spans_per_line = []
    for line in path.read_bytes().splitlines():
        req = orjson.loads(line)
        n = 0
        for rs in req["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for sp in ss["spans"]:
                    n += 1
                    scopes[(ss["scope"]["name"], sp["name"])] += 1
                    for ev in sp["events"]:
                        if ev["name"] == otlp.BATCH_SUMMARY:
                            steps.append({a["key"]: a["value"] for a in ev["attributes"]})
                        else:
                            attrs = otlp.attrs_to_dict(ev["attributes"])
                            attrs["event"] = ev["name"][len(otlp.JOURNEY_PREFIX):]
                            attrs["request_id"] = otlp.attrs_to_dict(sp["attributes"])[otlp.REQUEST_ID_KEY]
                            journeys.append(attrs)
        spans_per_line.append(n)
    scopes["max_spans_per_line"] = max(spans_per_line)
    return steps, journeys, scopes


@pytest.fixture(scope="module")
def written(runs: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("raw")
    out = {}
    for name in ("aborts", GENERAL_7B):
        d = write_experiment(runs[name], root)
        out[name] = (d, *_read_traces(d / "traces.json"))
    return out


@pytest.mark.parametrize("name", ("aborts", GENERAL_7B))
def test_batch_summary_attributes(runs: dict, written: dict, name: str) -> None:
    d, steps, journeys, scopes = written[name]
    res = runs[name]
    assert len(steps) == res.num_sampled > 0
    assert 0.05 < len(steps) / len(res.steps) < 0.16                     # ~10 % sample
    for raw in steps:
        assert list(raw) == list(otlp.STEP_ATTRS)
        for key, kind in otlp.STEP_ATTRS.items():
            assert ("intValue" if kind == "int" else "doubleValue") in raw[key]
            if kind == "int":
                assert isinstance(raw[key]["intValue"], str)
    st = pd.DataFrame([otlp.attrs_to_dict([{"key": k, "value": v} for k, v in r.items()])
                       for r in steps])
    assert (st["batch.scheduled_tokens"] == st["batch.prefill_tokens"] + st["batch.decode_tokens"]).all()
    assert (st["step.duration_us"] == (st["step.ts_end_ns"] - st["step.ts_start_ns"]) // 1000).all()
    truth = res.steps.set_index("step_id").loc[st["step.id"]]
    assert (st["step.ts_start_ns"].to_numpy()
            == R.MONOTONIC_ORIGIN_NS + truth["ts_start_ns"].to_numpy()).all()
    assert (st["batch.prefill_tokens"].to_numpy() == truth["prefill_tokens"].to_numpy()).all()
    assert (st["queue.waiting_depth"].to_numpy() == truth["waiting"].to_numpy()).all()
    assert scopes[(otlp.JOURNEY_SCOPE, otlp.JOURNEY_SPAN)] == len(res.requests)
    assert scopes[(otlp.STEP_SCOPE, otlp.STEP_SPAN)] == len(steps)
    assert scopes["max_spans_per_line"] > 1
    for f in ("exp-config.yaml", "results/config.yaml"):
        assert (d / f).read_bytes() == (res.experiment.path / f).read_bytes()
    truth_file = pd.read_parquet(d / TRUTH_FILE)
    pd.testing.assert_frame_equal(truth_file, res.truth().reset_index(drop=True))
    # journey events carry both clocks
    assert all(isinstance(j["ts.monotonic_ns"], int) and isinstance(j["ts.monotonic"], float)
               for j in journeys[:100])


def _journey_counts(journeys: list[dict], num_steps: int, budget: int = B) -> pd.DataFrame:
    """Per-step decode / prefill request counts and prefill tokens from journey events only
    (otlp.py's semantics, independently of reconstruct.py)."""
    by_req: dict[str, list[dict]] = defaultdict(list)
    for j in journeys:
        by_req[j["request_id"]].append(j)
    dec = np.zeros(num_steps + 2, np.int64)
    segs = []
    for evs in by_req.values():
        evs.sort(key=lambda e: e["ts.monotonic_ns"])
        cur = None
        for e in evs:
            if e["event"] == "SCHEDULED":
                cur = e
            elif e["event"] in ("PREEMPTED", "FINISHED") and cur is not None:
                k0, k1 = cur["decode.done_tokens"], e["decode.done_tokens"]
                absent = e["event"] == "PREEMPTED" or e.get("finish.status") == "aborted"
                last = e["scheduler.step"] - int(absent)
                if k1 > k0:
                    dec[last - (k1 - k0 - 1) + 1:last + 1] += 1
                segs.append((cur["scheduler.step"], cur["ts.monotonic_ns"],
                             cur["prefill.total_tokens"] + k0 - cur["prefill.done_tokens"], last))
                cur = None
    used, pre_reqs, pre_tok = dec.copy(), np.zeros_like(dec), np.zeros_like(dec)
    for start, _, remaining, last in sorted(segs):
        s = start
        while remaining > 0 and s <= last:
            c = min(remaining, budget - used[s])
            if c > 0:
                used[s] += c
                pre_reqs[s] += 1
                pre_tok[s] += c
                remaining -= c
            s += 1
    return pd.DataFrame({"num_decode_reqs": dec, "num_prefill_reqs": pre_reqs,
                         "prefill_tokens": pre_tok})


@pytest.mark.parametrize("name", ("aborts", GENERAL_7B))
def test_journeys_agree_with_sampled_summaries(runs: dict, written: dict, name: str) -> None:
    _, steps, journeys, _ = written[name]
    res = runs[name]
    assert {j["request_id"] for j in journeys} == set(res.requests["request_id"])
    rec = _journey_counts(journeys, len(res.steps))
    st = pd.DataFrame([otlp.attrs_to_dict([{"key": k, "value": v} for k, v in r.items()])
                       for r in steps]).set_index("step.id")
    got = rec.loc[st.index]
    for col in ("num_decode_reqs", "num_prefill_reqs"):
        assert (got[col].to_numpy() == st[f"batch.{col}"].to_numpy()).all(), col
    assert (got["prefill_tokens"].to_numpy() == st["batch.prefill_tokens"].to_numpy()).all()
    full = rec.iloc[1:len(res.steps) + 1]
    assert (full["num_decode_reqs"].to_numpy() == res.steps["num_decode_reqs"].to_numpy()).all()
    assert (full["prefill_tokens"].to_numpy() == res.steps["prefill_tokens"].to_numpy()).all()
    fin = Counter(j["scheduler.step"] for j in journeys if j["event"] == "FINISHED")
    pre = Counter(j["scheduler.step"] for j in journeys if j["event"] == "PREEMPTED")
    assert all(fin.get(i, 0) == n for i, n in st["batch.num_finished"].items())
    assert all(pre.get(i, 0) == n for i, n in st["batch.num_preempted"].items())


def test_reconstruction_module_matches_truth(runs: dict) -> None:
    """The analysis side (reconstruct.py) recovers every step's batch from the journeys."""
    from stepdecomp.model import reconstruct as rec_mod
    res = runs["aborts"]
    rec = rec_mod.reconstruct(res.journeys(), B)
    got = rec.steps.drop(columns="experiment_id").set_index("step.id")
    extra = got.index.difference(res.steps["step_id"])
    assert (got.loc[extra, ["rec_decode_reqs", "rec_prefill_reqs"]] == 0).all().all()
    # the replay's truth has the REC_COLUMNS; the chunk sums (REC_CHUNK_COLUMNS) are pinned by
    # tests/model/test_reconstruct.py's reference scheduler
    got = got.drop(extra)[rec_mod.REC_COLUMNS]
    truth = res.reconstruction_truth().set_index("step.id")
    pd.testing.assert_frame_equal(got, truth[got.columns], check_dtype=False)


def test_summary_metrics_schema_and_timeout(runs: dict) -> None:
    res = runs["aborts"]
    m = summary_metrics(res)
    dist_keys = ["mean", "min", "p0.1", "p1", "p5", "p10", "p25", "median", "p75", "p90", "p95",
                 "p99", "p99.9", "max"]
    assert m["load_summary"]["count"] == len(res.requests)
    assert m["successes"]["count"] + m["failures"]["count"] == len(res.requests)
    lat = m["successes"]["latency"]
    for key in ("request_latency", "time_to_first_token", "time_per_output_token",
                "inter_token_latency", "normalized_time_per_output_token"):
        assert list(lat[key]) == dist_keys
    assert m["failures"]["request_latency"]["min"] == pytest.approx(2.0)
    assert m["failures"]["request_latency"]["max"] == pytest.approx(2.0)
    # two events per token: half the gaps are the 20 µs pair gap, TPOT ≈ half a step
    assert lat["inter_token_latency"]["p10"] == pytest.approx(20e-6)
    assert CLIENT_TIMEOUT_S == 300.0


# --------------------------------------------------------------------------- defaults, CLI

def test_defaults_are_the_calibrated_fit() -> None:
    chosen = json.loads((DATA_DIR / "calibration.json").read_text())["chosen"]
    assert (R.DEFAULT_HARDWARE, R.DEFAULT_PRECISION) == (chosen["hardware"], chosen["precision"])
    assert timeline.HOST_OVERHEAD_US == chosen["host_overhead_us"]
    assert timeline.HOST_PER_REQUEST_US == chosen["host_per_request_us"]
    assert timeline.API_ARRIVAL_US == chosen["api_arrival_us"]
    assert stepcost.ALLREDUCE_CALL_US == chosen["allreduce_call_us"]
    assert R.DEFAULT_ENGINE_LOOP == chosen["engine_loop"] == "async"


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_is_deterministic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = [MIXTRAL, REASONING_7B]
    args = ["--time-scale", "0.02", "--experiments", *names]
    assert main(["--out", str(tmp_path / "a"), "--jobs", "2", *args]) == 0
    assert main(["--out", str(tmp_path / "b"), "--jobs", "1", *args]) == 0
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert sorted(a) == sorted(f"{n}/{f}" for n in names for f in
                               ("exp-config.yaml", "profile.yaml", "traces.json", TRUTH_FILE,
                                "results/config.yaml", "results/summary_lifecycle_metrics.json",
                                "results/stage_0_lifecycle_metrics.json"))
    assert a == b
    printed = capsys.readouterr().out
    assert all(f"{n}:" in printed and "sampled" in printed for n in names)
    assert "[2/2]" in printed
    assert main(["--out", str(tmp_path / "c"), "--seed", "1", *args]) == 0
    assert _tree(tmp_path / "c")[f"{MIXTRAL}/traces.json"] != a[f"{MIXTRAL}/traces.json"]


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown experiment"):
        main(["--out", str(tmp_path), "--experiments", "no-such-tp1-thing"])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--precision", "int4"])
    with pytest.raises(FileNotFoundError, match="no hardware spec"):
        main(["--out", str(tmp_path), "--hardware", "tpu-v5"])


# --------------------------------------------------------------------------- targets vs truth

@pytest.mark.parametrize("loop", ("async", "sync"))
@pytest.mark.parametrize("name", (MIXTRAL, "20260217-203421-llama-2-70b-hf-tp4-codegen"))
def test_step_targets_recover_the_replay_truth(name: str, loop: str) -> None:
    """timestamps.py on what the traces record (10 % sampled summaries, every journey event),
    the loop detected from them, against the generator truth of every step, in both loops:
    step_forward_us the GPU time of its batch (sync: with the host work before it, which the
    interval holds), step_period_us the iteration that waits for it (sync: S(n+1) − S(n);
    async: S(n+2) − S(n+1)). Coverage ≥ 8 % / 5 %, median relative error ≤ 5 %; r ≥ 0.98
    for the period and for the forward read from adjacent steps (async) or events (sync), and
    ≥ 0.9 with the forward's span estimates, which give the mean of a run of identical
    batches and so miss the replay's per-batch kernel noise (σ 3 %)."""
    from stepdecomp.targets import engineloop, timestamps, truthcheck
    from stepdecomp.run.validate import replay_targets

    t, truth = replay_targets(WORKLOADS_DIR / name, loop, time_scale=0.1)
    assert (t["engine_loop"] == loop).all() and (t["engine_loop_source"] == "detected").all()
    check = truthcheck.truth_check(t, {name: truth}, {name: loop})
    rows = {r["target"]: r for r in check.to_dict("records")}
    assert rows["step_forward_us"]["coverage"] >= 0.08 and rows["step_period_us"]["coverage"] >= 0.05
    for r in rows.values():
        assert (r["median_abs_rel_error"] <= 0.05 and abs(r["median_rel_error"]) <= 0.02
                and r["pearson_r"] >= 0.9)
    assert rows["step_period_us"]["pearson_r"] >= 0.98
    truth = truth.set_index("step_id")
    sid = t["step.id"].to_numpy()
    fwd_true = truth["forward_us"].reindex(sid).to_numpy() + (
        truth["host_us"].reindex(sid).to_numpy() if loop == "sync" else 0.0)
    precise = (t["step_forward_source"] == (engineloop.SOURCE_ADJACENT if loop == "async"
                                            else timestamps.SOURCE_EVENT)).to_numpy()
    est = t["step_forward_us"].to_numpy()
    assert precise.sum() >= 20
    assert np.corrcoef(est[precise], fwd_true[precise])[0, 1] >= 0.98
    cov = timestamps.coverage_table(t)
    assert cov["engine_loop"].tolist() == [loop] and int(cov["ordered_pairs"].iloc[0]) >= 50
