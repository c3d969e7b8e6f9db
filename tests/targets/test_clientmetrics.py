"""Client-side plausibility (lib/stepdecomp/client.py): floors by hand, the event-count
inference on hand-made summaries, the published runs, and every error path.

Weights by hand (HF config.json under data/models/):

* Llama-2-7B: d 4096, L 32, H = H_kv = 32, d_ff 11008, vocab 32000. Per layer QKV + O
  4·4096² = 67_108_864, MLP 3·4096·11008 = 135_266_304 -> 202_375_168; × 32 =
  6_476_005_376. LM head = embedding = 4096·32000 = 131_072_000.
  Floor (layers + LM head) BF16: 6_607_077_376 · 2 = 13_214_154_752 B -> / 3.35e12 B/s =
  3.9445 ms; with the embedding 13_476_298_752 B -> 4.0228 ms (measurement.md's 13.5 GB,
  4.02 ms).
* Llama-2-70B: d 8192, L 80, H 64, H_kv 8, d_head 128, d_ff 28672. Per layer
  8192·(8192 + 2·1024) + 8192² = 150_994_944, MLP 3·8192·28672 = 704_643_072 ->
  855_638_016; × 80 = 68_451_041_280; LM head 8192·32000 = 262_144_000. TP4 BF16:
  (68_451_041_280 + 262_144_000)·2/4 = 34_356_592_640 B -> 10.2557 ms.
* Mixtral-8x7B: d 4096, L 32, H_kv 8, d_ff 14336, E 8, k 2. Attention 4096·6144 + 4096² =
  41_943_040, router 4096·8 = 32_768, one expert 3·4096·14336 = 176_160_768. Expected
  experts at batch B: 8·(1 − 0.75^B): B = 1 -> 2, B = 2 -> 3.5. At B = 2, TP2, BF16:
  32·(41_943_040 + 32_768 + 3.5·176_160_768) + 131_072_000 = 21_204_303_872 params,
  ·2/2 bytes -> 6.3296 ms on an H100.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stepdecomp.targets import clientmetrics as cl
from stepdecomp.hw.specs import load_gpu_spec, load_model_spec

LLAMA7, LLAMA70, MIXTRAL = ("meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-70b-hf",
                            "mistralai/Mixtral-8x7B-v0.1")
H100_BW, H200_BW = 3.35e12, 4.8e12


@pytest.fixture(scope="module")
def h100():
    return load_gpu_spec("h100-sxm")


def test_llama7_floor_by_hand(h100) -> None:
    spec = load_model_spec(LLAMA7)
    assert cl.weight_bytes_per_gpu(spec, 1, "bf16", 12.0) == 13_214_154_752
    assert cl.weight_floor_ms(spec, 1, h100, "bf16", 12.0) == pytest.approx(
        13_214_154_752 / H100_BW * 1e3, rel=1e-12)
    assert cl.weight_floor_ms(spec, 1, h100, "bf16", 12.0) == pytest.approx(3.9445, abs=1e-4)
    with_embed = cl.weight_floor_ms(spec, 1, h100, "bf16", 12.0, include_embedding=True)
    assert with_embed == pytest.approx(13_476_298_752 / H100_BW * 1e3, rel=1e-12)
    assert round(with_embed, 2) == 4.02                                     # measurement.md §3
    assert cl.weight_bytes_per_gpu(spec, 1, "fp8", 12.0) == 6_607_077_376
    h200 = load_gpu_spec("h200-sxm")
    assert cl.weight_floor_ms(spec, 1, h200, "bf16", 1.0) == pytest.approx(
        13_214_154_752 / H200_BW * 1e3, rel=1e-12)


def test_llama70_floor_by_hand(h100) -> None:
    spec = load_model_spec(LLAMA70)
    assert cl.weight_bytes_per_gpu(spec, 4, "bf16", 30.0) == 34_356_592_640
    assert cl.weight_floor_ms(spec, 4, h100, "bf16", 30.0) == pytest.approx(10.2557, abs=1e-4)


def test_mixtral_expected_experts_at_a_batch(h100) -> None:
    spec = load_model_spec(MIXTRAL)
    assert cl.weight_bytes_per_gpu(spec, 2, "bf16", 1.0) == \
        32 * (41_943_040 + 32_768 + 2 * 176_160_768) + 131_072_000
    assert cl.weight_bytes_per_gpu(spec, 2, "bf16", 2.0) == pytest.approx(21_204_303_872, rel=1e-15)
    assert cl.weight_floor_ms(spec, 2, h100, "bf16", 2.0) == pytest.approx(6.3296, abs=1e-4)
    everything = 32 * (41_943_040 + 32_768 + 8 * 176_160_768) + 131_072_000
    assert cl.weight_bytes_per_gpu(spec, 2, "bf16", 200.0) == pytest.approx(everything, rel=1e-12)


def summary(output_len: int, ttft_s: float, per_token_s: float, events_per_token: int,
            end_events: int = 2, itl_median_s: float = 40e-6, out_tps: float = 1000.0) -> dict:
    """A summary_lifecycle_metrics dict whose means follow from the given timeline: every
    request streams events_per_token·O + end_events events over (O − 1)·per_token."""
    span = (output_len - 1) * per_token_s
    tpot = span / (events_per_token * output_len + end_events - 1)
    dist = lambda mean, **kw: {"mean": mean, "median": mean, "p75": mean, **kw}  # noqa: E731
    return {"successes": {"count": 10, "latency": {
                "request_latency": dist(ttft_s + span), "time_to_first_token": dist(ttft_s),
                "time_per_output_token": dist(tpot),
                "inter_token_latency": dist(tpot, median=itl_median_s, p75=2 * tpot)},
                          "throughput": {"output_tokens_per_sec": out_tps}},
            "failures": {"count": 3, "request_latency": None}}


def run_of(s: dict, output_len: int = 100, name: str = "run-a") -> cl.ClientRun:
    return cl.ClientRun(run=name, model="llama-2-7b", hf_id=LLAMA7, tp=1, output_len=output_len,
                        output_len_source="hand", summary=s, summary_source="hand.json")


def test_event_count_inference_on_hand_made_summaries() -> None:
    # O = 100, TTFT 50 ms, 10 ms per token: E2E − TTFT = 990 ms; 2·100 + 2 = 202 events ->
    # TPOT = 990/201 = 4.925 ms; n = 990/4.925 + 1 = 202
    two = cl.client_summary([run_of(summary(100, 0.05, 0.010, 2))]).iloc[0]
    assert two["events_per_request"] == pytest.approx(202.0, rel=1e-12)
    assert two["events_per_token"] == pytest.approx(2.0, rel=1e-12)
    assert two["per_token_ms"] == pytest.approx(10.0, rel=1e-12)
    assert two["mean_tpot_ms"] == pytest.approx(990 / 201, rel=1e-12)
    assert two["tpot_over_per_token"] == pytest.approx(99 / 201, rel=1e-12)
    assert two["decode_batch"] == pytest.approx(10.0, rel=1e-12)            # 1000 tok/s × 10 ms
    assert bool(two["two_events_per_token"]) and two["itl_median_us"] == pytest.approx(40.0)
    assert (two["successes"], two["failures"], two["mean_ttft_ms"]) == (10, 3, pytest.approx(50.0))
    # one event per token and none at the end: n = O, TPOT is the time per token
    one = cl.client_summary([run_of(summary(100, 0.05, 0.010, 1, 0, itl_median_s=0.010))]).iloc[0]
    assert one["events_per_request"] == pytest.approx(100.0, rel=1e-12)
    assert one["mean_tpot_ms"] == pytest.approx(10.0, rel=1e-12)
    assert not bool(one["two_events_per_token"])
    # two events per token but no back-to-back gaps: the median test fails, the flag is off
    slow = cl.client_summary([run_of(summary(100, 0.05, 0.010, 2, itl_median_s=0.004))]).iloc[0]
    assert not bool(slow["two_events_per_token"])


def test_plausibility_table_hand_made(h100) -> None:
    s = cl.client_summary([run_of(summary(100, 0.05, 0.010, 2))])
    t = cl.plausibility_table(s, step_period_us={"run-a": 9000.0})
    assert list(t.columns) == cl.PLAUSIBILITY_COLUMNS and len(t) == 4
    row = t.set_index(["gpu", "precision"]).loc[("h100-sxm", "bf16")]
    floor = 13_214_154_752 / H100_BW * 1e3
    assert row["floor_ms"] == pytest.approx(floor, rel=1e-12)
    assert row["per_token_over_floor"] == pytest.approx(10.0 / floor, rel=1e-12)
    assert row["tpot_over_floor"] == pytest.approx(990 / 201 / floor, rel=1e-12)
    assert row["implied_bw_per_token_tb_s"] == pytest.approx(13_214_154_752 / 0.010 / 1e12)
    assert bool(row["consistent_per_token"]) and bool(row["consistent_tpot"])   # 4.93 > 3.94
    assert row["step_period_ms"] == 9.0 and row["period_over_per_token"] == pytest.approx(0.9)
    assert row["experts_read_per_layer"] == 1.0
    fp8 = t.set_index(["gpu", "precision"]).loc[("h200-sxm", "fp8")]
    assert fp8["floor_ms"] == pytest.approx(6_607_077_376 / H200_BW * 1e3, rel=1e-12)
    assert np.isnan(cl.plausibility_table(s)["step_period_ms"]).all()


def test_published_runs() -> None:
    runs = cl.published_runs()
    assert len(runs) == 12 and not any("codellama" in r.run for r in runs)
    s = cl.client_summary(runs)
    assert s["two_events_per_token"].all()
    expected = 2 * s["output_len"] + 2
    assert ((s["events_per_request"] - expected).abs() <= cl.EVENT_COUNT_TOLERANCE).all()
    assert s["itl_median_us"].between(25, 150).all()
    assert set(s["output_len"]) == {247, 248, 251, 1448}
    assert s["output_len_source"].str.endswith("results/config.yaml").all()
    t = cl.plausibility_table(s)
    ref = t[(t["gpu"] == "h100-sxm") & (t["precision"] == "bf16")]
    assert (~ref["consistent_tpot"]).sum() == 5          # TPOT below the H100 BF16 floor
    assert ref["consistent_per_token"].all()             # per-token time never is
    assert ref["per_token_over_floor"].min() == pytest.approx(1.331, abs=1e-3)
    text = cl.inference_statement(s, t)
    assert text.startswith("Inference") and "5 of 12" in text and "0 have" in text


# --------------------------------------------------------------------------- errors

def make_run_dir(root: Path, name: str = "20260101-000000-llama-2-7b-tp1-general",
                 output_len: int | None = 100, with_summary: bool = True) -> Path:
    d = root / name
    (d / "results").mkdir(parents=True)
    (d / "exp-config.yaml").write_text(f"model: {LLAMA7}\ntensor_parallelism: 1\n")
    if output_len is not None:
        (d / "results" / "config.yaml").write_text(
            f"data:\n  shared_prefix:\n    output_len: {output_len}\n")
    if with_summary:
        (d / cl.SUMMARY_RELPATH).write_text(json.dumps(summary(100, 0.05, 0.01, 2)))
    return d


def test_trace_root_runs(tmp_path: Path) -> None:
    make_run_dir(tmp_path)
    make_run_dir(tmp_path, "20260101-010000-llama-2-7b-tp1-codegen", with_summary=False)
    runs = cl.trace_root_runs(tmp_path)
    assert [r.run for r in runs] == ["20260101-000000-llama-2-7b-tp1-general"]
    assert (runs[0].hf_id, runs[0].tp, runs[0].output_len) == (LLAMA7, 1, 100)
    assert cl.client_summary(runs)["per_token_ms"].item() == pytest.approx(10.0)


def test_output_len_from_profile_is_named(tmp_path: Path) -> None:
    d = make_run_dir(tmp_path, output_len=None)
    (d / "profile.yaml").write_text(json.dumps({"data": {"shared_prefix": {"output_len": 64}}}))
    value, source = cl.output_len_of(d)
    assert value == 64 and source.endswith(d.name + "/profile.yaml")


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(cl.ClientMetricsError, match="nope.json: no such file"):
        cl.load_published(tmp_path / "nope.json")
    with pytest.raises(cl.ClientMetricsError, match="trace root not found"):
        cl.trace_root_runs(tmp_path / "absent")
    d = make_run_dir(tmp_path, output_len=None)
    with pytest.raises(cl.ClientMetricsError, match="neither results/config.yaml nor profile.yaml"):
        cl.output_len_of(d)
    with pytest.raises(cl.ClientMetricsError, match="run directory not found"):
        cl.make_run(tmp_path / "20260101-000000-x-tp1-general", {}, "src.json")
    pub = tmp_path / "pub.json"
    pub.write_text(json.dumps({"runs": {"20260101-000000-llama-2-7b-tp1-roleplay": {}}}))
    with pytest.raises(cl.ClientMetricsError, match="run directory not found"):
        cl.published_runs(pub, workloads_dir=tmp_path)


def test_malformed_files_and_missing_fields(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(cl.ClientMetricsError, match="bad.json: not valid JSON"):
        cl.read_json(bad)
    bad.write_text(json.dumps({"source": "x"}))
    with pytest.raises(cl.ClientMetricsError, match="bad.json: missing field 'runs'"):
        cl.load_published(bad)
    bad.write_text(json.dumps({"runs": {}}))
    with pytest.raises(cl.ClientMetricsError, match="bad.json: 'runs' is empty"):
        cl.load_published(bad)
    s = summary(100, 0.05, 0.01, 2)
    del s["successes"]["latency"]["time_per_output_token"]["mean"]
    with pytest.raises(cl.ClientMetricsError,
                       match=r"hand.json: missing field 'successes.latency.time_per_output_token.mean'"):
        cl.client_summary([run_of(s)])
    s = summary(100, 0.05, 0.01, 2)
    s["successes"]["throughput"]["output_tokens_per_sec"] = "fast"
    with pytest.raises(cl.ClientMetricsError, match="output_tokens_per_sec' is not a number"):
        cl.client_summary([run_of(s)])
    d = make_run_dir(tmp_path, output_len=None)
    (d / "results" / "config.yaml").write_text("data:\n  shared_prefix: {}\n")
    with pytest.raises(cl.ClientMetricsError,
                       match=r"config.yaml: missing field 'data.shared_prefix.output_len'"):
        cl.output_len_of(d)
    (d / "results" / "config.yaml").write_text("data:\n  shared_prefix:\n    output_len: 1\n")
    with pytest.raises(cl.ClientMetricsError, match=r"config.yaml: output_len must be"):
        cl.output_len_of(d)


def test_bad_floor_arguments(h100) -> None:
    spec = load_model_spec(LLAMA7)
    with pytest.raises(ValueError, match="unknown weight precision 'int4'"):
        cl.weight_floor_ms(spec, 1, h100, "int4", 10.0)
    with pytest.raises(ValueError, match="decode_batch must be positive"):
        cl.weight_floor_ms(spec, 1, h100, "bf16", 0.0)
    with pytest.raises(FileNotFoundError, match="no hardware spec 'b200'"):
        cl.plausibility_table(cl.client_summary([run_of(summary(100, 0.05, 0.01, 2))]),
                              gpus=["b200"])


def test_floor_candidates_count_the_published_runs_per_hardware() -> None:
    """The table client_floor_candidates: per (gpu, precision) of the published runs (the
    analysed root's own runs are not counted), how many fall below the floor by mean TPOT and
    by time per token."""
    plaus = pd.DataFrame({
        "source": ["published", "published", "published", "traces"],
        "run": ["a", "b", "a", "x"],
        "gpu": ["h200-sxm", "h100-sxm", "h100-sxm", "h100-sxm"],
        "precision": ["fp8", "bf16", "bf16", "bf16"],
        "consistent_tpot": [True, False, False, False],
        "consistent_per_token": [True, True, False, False]})
    t = cl.floor_candidates(plaus)
    assert t.columns.tolist() == cl.FLOOR_COLUMNS
    assert t.values.tolist() == [["h100-sxm", "bf16", 2, 2, 1], ["h200-sxm", "fp8", 1, 0, 0]]
    assert cl.floor_candidates(plaus[plaus["source"] == "traces"]).empty
