"""The workload the study's load generator actually ran, and the requests it sent.

Source of truth (docs/measurement.md §4): inference-perf wrote the configuration it ran to
``results/config.yaml``; it takes precedence over ``profile.yaml`` (the profile the
experiment was *launched* with). :func:`read_workload` reads the former when present and
lists every field where the two differ (:attr:`Workload.differences`).

What inference-perf (February 2026) does with a ``shared_prefix`` data config and a
``constant`` load, and what the replay does the same way:

* Prompts: ``num_groups`` × ``num_prompts_per_group`` distinct prompts, generated once.
  Group g has one system prompt of ``system_prompt_len`` random token ids; each of its
  prompts appends a question of ``question_len`` random ids. The list is shuffled once
  (seeded here) and request i sends prompt i mod (groups × prompts per group). Single
  turn: no conversation history. Identical prompts are re-sent, so a request's whole
  prompt can hit vLLM's prefix cache (all full blocks but the last token); prompts of one
  group share the system prompt's blocks.
* Prompt length on the server: random ids decoded to text and re-tokenized grow by a few
  per cent. The published ``prompt_len`` of the 12 published runs is (S + Q)·(1 + g) + 1
  (BOS) with g ≈ RETOKENIZE_GAIN_MEAN, spread RETOKENIZE_GAIN_SD (medians over the 12 runs,
  :func:`stepdecomp.refdata.calibrate.retokenization_fit`); the replay draws the system
  prompt's gain once per group and the question's once per prompt.
* Output: ``max_tokens = output_len`` with ``ignore_eos``: every request that finishes
  generates exactly output_len tokens (finish status ``length``).
* Arrivals: each stage (rate r req/s for d s) sends int(r·d) requests whose exponential
  gaps are rescaled to span the stage exactly; open loop.
* Clients give up after CLIENT_TIMEOUT_S = 300 s (aiohttp's default total timeout; the
  generator sets none of its own): the request fails and the server aborts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

#: aiohttp's default ClientTimeout(total=300): the only timeout of inference-perf's requests.
CLIENT_TIMEOUT_S = 300.0
#: Relative growth of a random-token text when re-tokenized, and its spread (medians over the
#: 12 published runs of ((prompt_len − 1)/(S + Q) − 1) and of its implied per-text SD).
RETOKENIZE_GAIN_MEAN = 0.046
RETOKENIZE_GAIN_SD = 0.012
#: Tokens the server adds to every prompt (Llama/Mistral tokenizers prepend BOS).
BOS_TOKENS = 1
EFFECTIVE_CONFIG = Path("results") / "config.yaml"


@dataclass(frozen=True)
class Workload:
    """The fields of an inference-perf shared_prefix + constant-load config the replay uses."""

    num_groups: int
    prompts_per_group: int
    system_prompt_tokens: int
    question_tokens: int
    output_tokens: int
    stages: tuple[tuple[float, float], ...]      # (rate req/s, duration s)
    source: str = "results/config.yaml"
    differences: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("num_groups", "prompts_per_group", "question_tokens", "output_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"workload: {name} must be positive, got {getattr(self, name)}")
        if self.system_prompt_tokens < 0 or not self.stages:
            raise ValueError("workload: needs system_prompt_len ≥ 0 and at least one load stage")

    @property
    def num_prompts(self) -> int:
        return self.num_groups * self.prompts_per_group

    @property
    def nominal_prompt_tokens(self) -> int:
        """S + Q as configured (before re-tokenization and BOS)."""
        return self.system_prompt_tokens + self.question_tokens


def _stages(load: dict[str, Any]) -> tuple[tuple[float, float], ...]:
    return tuple((float(s["rate"]), float(s["duration"])) for s in load["stages"])


def _from_effective(cfg: dict[str, Any]) -> dict[str, Any]:
    sp = cfg["data"]["shared_prefix"]
    return dict(num_groups=int(sp["num_groups"]), prompts_per_group=int(sp["num_prompts_per_group"]),
                system_prompt_tokens=int(sp["system_prompt_len"]),
                question_tokens=int(sp["question_len"]), output_tokens=int(sp["output_len"]),
                stages=_stages(cfg["load"]))


def _from_profile(profile: dict[str, Any]) -> dict[str, Any]:
    sp = profile["data"]["shared_prefix"]
    return dict(num_groups=int(sp["num_unique_system_prompts"]),
                prompts_per_group=int(sp["num_users_per_system_prompt"]),
                system_prompt_tokens=int(sp["system_prompt_len"]),
                question_tokens=int(sp["question_len"]), output_tokens=int(sp["output_len"]),
                stages=_stages(profile["load"]))


def _differences(effective: dict[str, Any], profile: dict[str, Any] | None) -> tuple[str, ...]:
    """Human-readable 'field: profile.yaml X, results/config.yaml Y' for every field that
    differs, plus the multi-turn flag the effective config does not carry."""
    if profile is None:
        return ()
    try:
        prof = _from_profile(profile)
    except (KeyError, TypeError, ValueError):
        return ("profile.yaml is not a shared_prefix profile",)
    out = [f"{k}: profile.yaml {prof[k]}, results/config.yaml {effective[k]}"
           for k in effective if prof[k] != effective[k]]
    if profile.get("data", {}).get("shared_prefix", {}).get("enable_multi_turn_chat"):
        out.append("multi-turn chat: profile.yaml on, results/config.yaml has no multi-turn "
                   "setting (single turn ran)")
    return tuple(out)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML/JSON: {exc}") from None


def read_workload(experiment_dir: Path) -> Workload:
    """The workload of one experiment directory: results/config.yaml when present (it is
    what ran), else profile.yaml. Raises ValueError naming the file when neither is usable."""
    d = Path(experiment_dir)
    prof_path = d / "profile.yaml"
    profile = _read_yaml(prof_path) if prof_path.is_file() else None
    eff_path = d / EFFECTIVE_CONFIG
    try:
        if eff_path.is_file():
            eff = _from_effective(_read_yaml(eff_path))
            return Workload(**eff, source=str(EFFECTIVE_CONFIG), differences=_differences(eff, profile))
        if profile is not None:
            return Workload(**_from_profile(profile), source="profile.yaml")
    except (KeyError, TypeError) as exc:
        src = eff_path if eff_path.is_file() else prof_path
        raise ValueError(f"{src}: not an inference-perf shared_prefix config with load "
                         f"stages (missing {exc})") from None
    raise ValueError(f"{d}: neither {EFFECTIVE_CONFIG} nor profile.yaml to replay")


# --------------------------------------------------------------------------- requests

@dataclass(frozen=True)
class Requests:
    """All requests of one experiment in arrival order (index = request number)."""

    arrival_ns: np.ndarray
    prompt: np.ndarray            # which of the distinct prompts it sends
    group: np.ndarray             # the prompt's system-prompt group
    prompt_tokens: np.ndarray     # server-side prompt length (BOS included)
    system_tokens: np.ndarray     # tokens of the group's shared system prompt
    output_tokens: np.ndarray
    stage: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival_ns)


def retokenized_tokens(nominal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Token count of ``nominal`` random token ids after decode and re-encode:
    round(n·(1 + g)), g ~ N(RETOKENIZE_GAIN_MEAN, RETOKENIZE_GAIN_SD), never below n."""
    n = np.asarray(nominal, dtype=np.float64)
    gain = rng.normal(RETOKENIZE_GAIN_MEAN, RETOKENIZE_GAIN_SD, n.shape)
    return np.maximum(np.round(n * (1.0 + gain)), n).astype(np.int64)


def arrival_times_s(wl: Workload, rng: np.random.Generator,
                    time_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(send time s, stage) of every request: per stage int(rate·d) exponential gaps rescaled
    to span the stage's d = duration·time_scale seconds exactly."""
    times, stages = [], []
    t0 = 0.0
    for k, (rate, duration) in enumerate(wl.stages):
        d = duration * time_scale
        n = int(rate * d)
        if n > 0:
            gaps = rng.exponential(1.0 / rate, n)
            times.append(t0 + np.cumsum(gaps) * (d / gaps.sum()))
            stages.append(np.full(n, k, dtype=np.int64))
        t0 += d
    if not times:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(times), np.concatenate(stages)


def generate_requests(wl: Workload, rng: np.random.Generator, time_scale: float = 1.0) -> Requests:
    """The distinct prompts (shuffled once) and the requests that send them in turn."""
    sys_tokens = retokenized_tokens(np.full(wl.num_groups, wl.system_prompt_tokens), rng)
    p_group = np.repeat(np.arange(wl.num_groups), wl.prompts_per_group)
    q_tokens = retokenized_tokens(np.full(wl.num_prompts, wl.question_tokens), rng)
    p_tokens = BOS_TOKENS + sys_tokens[p_group] + q_tokens
    order = rng.permutation(wl.num_prompts)          # inference-perf shuffles its prompt list
    arrival_s, stage = arrival_times_s(wl, rng, time_scale)
    n = len(arrival_s)
    prompt = order[np.arange(n) % wl.num_prompts]
    group = p_group[prompt]
    return Requests(arrival_ns=np.round(arrival_s * 1e9).astype(np.int64),
                    prompt=prompt.astype(np.int64), group=group.astype(np.int64),
                    prompt_tokens=p_tokens[prompt].astype(np.int64),
                    system_tokens=(BOS_TOKENS + sys_tokens[group]).astype(np.int64),
                    output_tokens=np.full(n, wl.output_tokens, dtype=np.int64), stage=stage)
