"""The reference-data replay (lib/stepdecomp/replay.py): scheduler invariants, the written
format, journey/summary consistency and determinism, on short (--time-scale) runs."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from stepdecomp import otlp
from stepdecomp.experiments import read_experiment
from stepdecomp.paths import WORKLOADS_DIR
from stepdecomp.replay import (KV_BLOCK_TOKENS, Workload, generate_requests, kv_cache_blocks,
                               main, simulate, summary_metrics, write_experiment)
from stepdecomp.specs import load_gpu_spec, load_model_spec

GENERAL_7B = "20260217-231439-llama-2-7b-tp1-general"          # KV-bound: preemptions
REASONING_7B = "20260217-170634-llama-2-7b-tp1-reasoning"
REASONING_70B = "20260218-065057-llama-2-70b-hf-tp4-reasoning"  # max_num_seqs-bound
MIXTRAL = "20260218-141024-mixtral-8x7b-v0-1-tp2-roleplay"
B, MAX_SEQS = 2048, 128


@pytest.fixture(scope="module")
def runs() -> dict:
    """Short replays with per-decode detail; with an 8 s client timeout the 7B general run
    aborts requests while waiting, prefilling and decoding, and still preempts."""
    out = {name: simulate(WORKLOADS_DIR / name, seed=3, time_scale=0.05, record_decodes=True)
           for name in (GENERAL_7B, REASONING_70B, MIXTRAL)}
    out["aborts"] = simulate(WORKLOADS_DIR / GENERAL_7B, seed=3, time_scale=0.05,
                             client_timeout_s=8.0, record_decodes=True)
    return out


ALL = (GENERAL_7B, REASONING_70B, MIXTRAL, "aborts")


# --------------------------------------------------------------------------- configuration

def test_kv_capacity_by_hand() -> None:
    # Llama-2-7B, TP1: 6 738 149 376 matrix params (specs.py omits the norm vectors)
    # · 2 B = 13 476 298 752 B of weights; 80 GiB · 0.9 = 77 309 411 328 B; minus the weights
    # and the 3 GiB reserve (3 221 225 472 B) = 60 611 887 104 B; one block = 16 tokens ·
    # (2 · 32 layers · 32 KV heads · 128 · 2 B = 524 288 B) = 8 388 608 B
    # -> 60 611 887 104 / 8 388 608 = 7225.5 -> 7225 blocks
    spec = load_model_spec("meta-llama/Llama-2-7b-hf")
    assert spec.total_params == 6_738_149_376
    assert kv_cache_blocks(spec, 1, load_gpu_spec()) == 7225


def test_workload_prompts_and_arrivals() -> None:
    general = Workload.from_profile(read_experiment(WORKLOADS_DIR / GENERAL_7B).profile)
    # S=100, Q=447, O=248: S + h·695 + Q ≤ 4096 - 248 -> h ≤ 4; h = 4 gives 3327 tokens
    assert general.max_history_turns(4096) == 4
    assert general.prompt_tokens(4) == 3327 <= 4096 - 248
    reasoning = Workload.from_profile(read_experiment(WORKLOADS_DIR / REASONING_7B).profile)
    assert reasoning.max_history_turns(4096) == 0          # Q + O = 2382: single turn
    req = generate_requests(general, np.random.default_rng(0), time_scale=0.05)
    # stages 8 req/s and 20 req/s for 600 s each, scaled to 30 s: 240 + 600 requests
    assert len(req) == 840 and np.bincount(req.stage).tolist() == [240, 600]
    assert np.all(np.diff(req.arrival_ns) >= 0)
    assert req.arrival_ns[239] == pytest.approx(30e9) and req.arrival_ns[-1] == pytest.approx(60e9)
    assert set(req.group.tolist()) == set(range(9)) and req.user.max() == 44


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
    assert (s["ts_start_ns"].to_numpy()[1:] >= s["ts_end_ns"].to_numpy()[:-1]).all()
    assert (s["duration_us"] == (s["ts_end_ns"] - s["ts_start_ns"] + 500) // 1000).all()
    # prefill chunks add up to the step's prefill tokens and request count
    ch = runs[name].chunks.groupby("step_id")["chunk_tokens"].agg(["sum", "count"])
    ch = ch.reindex(s["step_id"], fill_value=0)
    assert (ch["sum"].to_numpy() == s["prefill_tokens"].to_numpy()).all()
    assert (ch["count"].to_numpy() == s["num_prefill_reqs"].to_numpy()).all()


@pytest.mark.parametrize("name", ALL)
def test_one_decode_token_per_running_request(runs: dict, name: str) -> None:
    res = runs[name]
    d = res.decodes
    assert not d.duplicated(["step_id", "request"]).any()
    per_step = d.groupby("step_id")["ctx_tokens"].agg(["count", "sum"]).reindex(
        res.steps["step_id"], fill_value=0)
    assert (per_step["count"].to_numpy() == res.steps["num_decode_reqs"].to_numpy()).all()
    assert (per_step["sum"].to_numpy() == res.steps["decode_ctx_tokens"].to_numpy()).all()
    # a request's context grows by exactly one token between consecutive decode steps
    d = d.sort_values(["request", "step_id"])
    same = (d["request"].diff() == 0) & (d["step_id"].diff() == 1)
    assert (d["ctx_tokens"].diff()[same] == 1).all()


def _segments(res) -> pd.DataFrame:
    """One row per SCHEDULED segment: (request, start step, hit, k0, end step, k1, kind of end)."""
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
    segs = _segments(res)
    prompt = res.requests.set_index("request")["prompt_tokens"]
    ch = res.chunks.sort_values(["request", "step_id"])
    by_req = {r: g for r, g in ch.groupby("request")}
    for seg in segs.itertuples(index=False):
        g = by_req.get(seg.request)
        g = g[(g["step_id"] >= seg.start) & (g["step_id"] <= seg.last)] if g is not None else g
        want = int(prompt[seg.request]) + seg.k0 - seg.hit       # prompt + k0 recomputed, minus hits
        got = 0 if g is None else int(g["chunk_tokens"].sum())
        if seg.k1 > seg.k0:                                      # the prefill completed
            assert got == want
        else:                                                    # preempted / aborted mid-prefill
            assert got < want
        if g is not None and len(g):
            prior = g["prior_tokens"].to_numpy()
            assert prior[0] == seg.hit and seg.hit % KV_BLOCK_TOKENS == 0
            assert (prior[1:] == prior[:-1] + g["chunk_tokens"].to_numpy()[:-1]).all()


def test_preemption_aborts_and_caching_happen(runs: dict) -> None:
    assert runs[GENERAL_7B].requests["num_preemptions"].sum() > 0      # KV-bound 7B
    assert runs[REASONING_70B].steps["running"].max() == MAX_SEQS         # max_num_seqs binds
    r = runs["aborts"].requests
    assert (r["status"] == "aborted").sum() > 0
    ev = runs["aborts"].events
    aborted = ev[(ev["event"] == "FINISHED") & (ev["finish.status"] == "aborted")]
    assert set(aborted["phase"]) == {"WAITING", "PREFILL", "DECODE"}
    assert r["num_preemptions"].sum() > 0
    # every request ends exactly once; finished ones produced exactly output_len tokens
    for res in runs.values():
        fin = res.events[res.events["event"] == "FINISHED"]
        assert fin["request"].is_unique and len(fin) == len(res.requests)
        ok = res.requests["status"] == "length"
        assert (res.requests.loc[ok, "output_done"] == res.requests.loc[ok, "output_tokens"]).all()
    # shared system prompts are prefix-cache hits (full blocks only)
    cached = runs[MIXTRAL].requests["cached_tokens"]
    assert (cached > 0).mean() > 0.5 and (cached % KV_BLOCK_TOKENS == 0).all()


def test_multi_turn_prompts_and_history_hits(runs: dict) -> None:
    res = runs[MIXTRAL]
    wl = Workload.from_profile(res.experiment.profile)
    r = res.requests
    h = r["history_turns"].to_numpy()
    want = [wl.prompt_tokens(int(x)) for x in h]
    assert (r["prompt_tokens"].to_numpy() == want).all()
    assert r["prompt_tokens"].max() <= 4096 - wl.output_tokens
    assert h.max() == wl.max_history_turns(4096) == 3          # roleplay: 150 + 3·851 + 600
    # a later turn hits its conversation's cached history, beyond the system prompt blocks
    sys_tokens = wl.system_prompt_tokens // KV_BLOCK_TOKENS * KV_BLOCK_TOKENS
    later = r[h > 0]
    assert (later["cached_tokens"] > sys_tokens).mean() > 0.5
    assert (r.loc[h == 0, "cached_tokens"] <= sys_tokens).all()


def test_fast_path_changes_nothing(runs: dict) -> None:
    """The O(1) pure-decode fast path is off with record_decodes; results must not differ."""
    fast = simulate(WORKLOADS_DIR / GENERAL_7B, seed=3, time_scale=0.05, client_timeout_s=8.0)
    slow = runs["aborts"]
    pd.testing.assert_frame_equal(fast.steps, slow.steps)
    pd.testing.assert_frame_equal(fast.events, slow.events)
    pd.testing.assert_frame_equal(fast.requests, slow.requests)


def test_structure_emerges(runs: dict) -> None:
    s = pd.concat([runs[n].steps for n in (GENERAL_7B, REASONING_70B, MIXTRAL)])
    pure_prefill = (s["decode_tokens"] == 0).mean()
    pure_decode = (s["prefill_tokens"] == 0).mean()
    assert pure_prefill < 0.01
    assert pure_decode > 0.6


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
    assert 0.05 < len(steps) / len(res.steps) < 0.15                     # ~10 % sample
    for raw in steps:
        assert list(raw) == list(otlp.STEP_ATTRS)                       # all, in order
        for key, kind in otlp.STEP_ATTRS.items():
            assert ("intValue" if kind == "int" else "doubleValue") in raw[key]
            if kind == "int":
                assert isinstance(raw[key]["intValue"], str)             # 64-bit ints as strings
    st = pd.DataFrame([otlp.attrs_to_dict([{"key": k, "value": v} for k, v in r.items()])
                       for r in steps])
    assert (st["batch.scheduled_tokens"] == st["batch.prefill_tokens"] + st["batch.decode_tokens"]).all()
    assert (st["step.duration_us"] == (st["step.ts_end_ns"] - st["step.ts_start_ns"] + 500) // 1000).all()
    used = st["kv.blocks_total_gpu"] - st["kv.blocks_free_gpu"]
    np.testing.assert_allclose(st["kv.usage_gpu_ratio"], used / st["kv.blocks_total_gpu"])
    truth = res.steps.set_index("step_id").loc[st["step.id"]]
    assert (st["batch.prefill_tokens"].to_numpy() == truth["prefill_tokens"].to_numpy()).all()
    assert (st["queue.waiting_depth"].to_numpy() == truth["waiting"].to_numpy()).all()
    # spans: one llm_core per request in vllm.scheduler, steps in vllm.scheduler.step,
    # several spans per exported line
    assert scopes[(otlp.JOURNEY_SCOPE, otlp.JOURNEY_SPAN)] == len(res.requests)
    assert scopes[(otlp.STEP_SCOPE, otlp.STEP_SPAN)] == len(steps)
    assert scopes["max_spans_per_line"] > 1
    assert (d / "exp-config.yaml").read_bytes() == (WORKLOADS_DIR / res.experiment.experiment_id
                                                    / "exp-config.yaml").read_bytes()


def _journey_counts(journeys: list[dict], num_steps: int, budget: int = B) -> pd.DataFrame:
    """Per-step decode / prefill request counts and prefill tokens from journey events only
    (otlp.py's semantics, independently of reconstruct.py)."""
    by_req: dict[str, list[dict]] = defaultdict(list)
    for j in journeys:
        by_req[j["request_id"]].append(j)
    dec = np.zeros(num_steps + 2, np.int64)
    segs = []                                   # (start, ts, remaining, last)
    for evs in by_req.values():
        evs.sort(key=lambda e: e["ts.monotonic"])
        cur = None
        for e in evs:
            if e["event"] == "SCHEDULED":
                cur = e
            elif e["event"] in ("PREEMPTED", "FINISHED") and cur is not None:
                k0, k1 = cur["decode.done_tokens"], e["decode.done_tokens"]
                absent = e["event"] == "PREEMPTED" or e.get("finish.status") == "aborted"
                last = e["scheduler.step"] - int(absent)
                if k1 > k0:
                    first = last - (k1 - k0 - 1)
                    dec[first + 1:last + 1] += 1
                segs.append((cur["scheduler.step"], cur["ts.monotonic"],
                             cur["prefill.total_tokens"] + k0 - cur["prefill.done_tokens"], last))
                cur = None
    used = dec.copy()
    pre_reqs = np.zeros_like(dec)
    pre_tok = np.zeros_like(dec)
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
    # every step, not just the sampled ones
    full = rec.iloc[1:len(res.steps) + 1]
    assert (full["num_decode_reqs"].to_numpy() == res.steps["num_decode_reqs"].to_numpy()).all()
    assert (full["prefill_tokens"].to_numpy() == res.steps["prefill_tokens"].to_numpy()).all()
    # lifecycle counts: FINISHED / PREEMPTED events carrying the step id
    fin = Counter(j["scheduler.step"] for j in journeys if j["event"] == "FINISHED")
    pre = Counter(j["scheduler.step"] for j in journeys if j["event"] == "PREEMPTED")
    assert all(fin.get(i, 0) == n for i, n in st["batch.num_finished"].items())
    assert all(pre.get(i, 0) == n for i, n in st["batch.num_preempted"].items())


def test_reconstruction_module_matches_truth(runs: dict) -> None:
    """The analysis side (reconstruct.py) recovers every step's batch from the journeys."""
    rec_mod = pytest.importorskip("stepdecomp.reconstruct")
    res = runs["aborts"]
    rec = rec_mod.reconstruct(res.journeys(), B)
    got = rec.steps.drop(columns="experiment_id").set_index("step.id")
    # an abort after the last executed step names the next (never executed) step id
    extra = got.index.difference(res.steps["step_id"])
    assert (got.loc[extra, ["rec_decode_reqs", "rec_prefill_reqs"]] == 0).all().all()
    got = got.drop(extra)
    truth = res.reconstruction_truth().set_index("step.id")
    pd.testing.assert_frame_equal(got, truth[got.columns], check_dtype=False)


def test_summary_metrics_schema(runs: dict) -> None:
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
    assert lat["time_to_first_token"]["max"] <= lat["request_latency"]["max"]
    # the inter-token gaps are step durations (plus pauses of preempted requests)
    assert lat["inter_token_latency"]["min"] >= res.steps["duration_us"].min() / 1e6 - 1e-6
    assert m["failures"]["request_latency"]["min"] == pytest.approx(8.0)
    assert m["failures"]["request_latency"]["max"] == pytest.approx(8.0)
    assert set(m["successes"]["throughput"]) == {"input_tokens_per_sec", "output_tokens_per_sec",
                                                 "total_tokens_per_sec", "requests_per_sec"}


# --------------------------------------------------------------------------- CLI, determinism

def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_is_deterministic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = [MIXTRAL, REASONING_7B]
    args = ["--time-scale", "0.02", "--experiments", *names]
    assert main(["--out", str(tmp_path / "a"), "--jobs", "2", *args]) == 0
    assert main(["--out", str(tmp_path / "b"), "--jobs", "1", *args]) == 0
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert sorted(a) == sorted(f"{n}/{f}" for n in names for f in
                               ("exp-config.yaml", "profile.yaml", "traces.json",
                                "results/summary_lifecycle_metrics.json"))
    assert a == b                                           # byte-identical, any job count
    printed = capsys.readouterr().out
    assert all(f"{n}:" in printed and "sampled" in printed for n in names)
    assert main(["--out", str(tmp_path / "c"), "--seed", "1", *args]) == 0
    assert _tree(tmp_path / "c")[f"{MIXTRAL}/traces.json"] != a[f"{MIXTRAL}/traces.json"]


def test_cli_rejects_unknown_experiment(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown experiment"):
        main(["--out", str(tmp_path), "--experiments", "no-such-tp1-thing"])
