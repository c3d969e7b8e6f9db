"""Model architecture and GPU specs: data files loaded into frozen, validated dataclasses.

Models come from Hugging Face ``config.json`` files under ``data/models/<hf-id>/``;
GPUs from ``data/hardware/<name>.json``. Nothing here is a hard-coded table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    import pandas as pd

from .paths import HARDWARE_DIR, MODELS_DIR, display_path
from .params import DEFAULT_HARDWARE

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float8_e4m3fn": 1}


#: Bytes per weight at each weight precision the repository models (KV cache and activations
#: stay in the model's dtype). The replay's KV capacity and the client floors both read it.
WEIGHT_BYTES_PER_PARAM: dict[str, int] = {"bf16": 2, "fp8": 1}


def with_weight_precision(spec: "ModelSpec", precision: str) -> "ModelSpec":
    """The same model with its weights stored at ``precision`` (bytes_per_param replaced)."""
    if precision not in WEIGHT_BYTES_PER_PARAM:
        raise ValueError(f"unknown weight precision {precision!r}; "
                         f"known: {sorted(WEIGHT_BYTES_PER_PARAM)}")
    return replace(spec, bytes_per_param=WEIGHT_BYTES_PER_PARAM[precision])


class UnknownModelError(LookupError):
    """An experiment names a model this repository has no config.json for."""


@dataclass(frozen=True)
class ModelSpec:
    """Decoder-only transformer shape, as read from a HF config.json.

    Dense models have ``num_experts = experts_per_token = 1``. For MoE models
    ``intermediate_size`` is the FFN width of one expert (HF convention).
    """

    hf_id: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    num_experts: int = 1
    experts_per_token: int = 1
    tie_word_embeddings: bool = False
    bytes_per_param: int = 2

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                     "intermediate_size", "vocab_size", "num_experts", "experts_per_token",
                     "bytes_per_param"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{self.hf_id}: {name} must be positive, got {getattr(self, name)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"{self.hf_id}: num_heads {self.num_heads} is not a multiple of "
                             f"num_kv_heads {self.num_kv_heads}")
        if self.experts_per_token > self.num_experts:
            raise ValueError(f"{self.hf_id}: experts_per_token {self.experts_per_token} > "
                             f"num_experts {self.num_experts}")

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def q_dim(self) -> int:
        """Width of the query projection output, H·d_head (= hidden_size for these models)."""
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of one of the K or V projections, H_kv·d_head."""
        return self.num_kv_heads * self.head_dim

    @property
    def seed_moe_factor(self) -> float:
        """The seed study's MLP factor: num_experts_per_tok / num_local_experts (1 for dense).

        This under-counts MoE MLP FLOPs by num_local_experts: HF's intermediate_size is
        already per expert, so the right factor is num_experts_per_tok. Kept for the seed mode.
        """
        return self.experts_per_token / self.num_experts if self.is_moe else 1.0

    @property
    def attn_params_per_layer(self) -> int:
        """QKV + O projection weights: d·(d_q + 2·d_kv) + d_q·d."""
        d = self.hidden_size
        return d * (self.q_dim + 2 * self.kv_dim) + self.q_dim * d

    @property
    def expert_params(self) -> int:
        """One gated MLP (gate, up, down): 3·d·d_ff."""
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def router_params_per_layer(self) -> int:
        """MoE router: d·E (0 for dense)."""
        return self.hidden_size * self.num_experts if self.is_moe else 0

    @property
    def layer_params(self) -> int:
        """All matrix weights of one layer (norm vectors are negligible and omitted)."""
        return (self.attn_params_per_layer + self.num_experts * self.expert_params
                + self.router_params_per_layer)

    @property
    def lm_head_params(self) -> int:
        return self.hidden_size * self.vocab_size

    @property
    def non_embedding_params(self) -> int:
        """Transformer-layer matrix weights: L · layer_params."""
        return self.num_layers * self.layer_params

    @property
    def total_params(self) -> int:
        """Layers + input embedding + LM head (one matrix if tied)."""
        embed = self.lm_head_params * (1 if self.tie_word_embeddings else 2)
        return self.non_embedding_params + embed

    @classmethod
    def from_hf_config(cls, hf_id: str, config: dict) -> "ModelSpec":
        """Build from a HF config dict (LLaMA / Mistral / Mixtral naming)."""
        try:
            d = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            spec = cls(
                hf_id=hf_id,
                hidden_size=d,
                num_layers=int(config["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or d // heads),
                intermediate_size=int(config["intermediate_size"]),
                vocab_size=int(config["vocab_size"]),
                num_experts=int(config.get("num_local_experts") or 1),
                experts_per_token=int(config.get("num_experts_per_tok") or 1),
                tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                bytes_per_param=_DTYPE_BYTES.get(str(config.get("torch_dtype", "bfloat16")), 2),
            )
        except KeyError as exc:
            raise ValueError(f"{hf_id}: config.json lacks required field {exc}") from None
        return spec


def model_config_path(hf_id: str, models_dir: Path = MODELS_DIR) -> Path:
    return models_dir / hf_id / "config.json"


def load_model_spec(hf_id: str, models_dir: Path = MODELS_DIR) -> ModelSpec:
    """Read ``data/models/<hf_id>/config.json``; a missing file names the model and the path."""
    path = model_config_path(hf_id, models_dir)
    if not path.is_file():
        raise UnknownModelError(
            f"unknown model {hf_id!r}: no config.json at {display_path(path)}. "
            f"Put the model's Hugging Face config.json there (and, if experiment directories "
            f"name it by a slug, add the slug to {display_path(models_dir / 'slugs.yaml')}).")
    return ModelSpec.from_hf_config(hf_id, json.loads(path.read_text()))


def load_model_specs(hf_ids: Iterable[str], models_dir: Path = MODELS_DIR) -> dict[str, ModelSpec]:
    """ModelSpec for each distinct hf_id (e.g. ``steps["hf_id"].unique()``)."""
    return {h: load_model_spec(h, models_dir) for h in sorted(set(hf_ids))}


def specs_table(specs: dict[str, ModelSpec]) -> "pd.DataFrame":
    """The architecture symbols of each model, one row per HF id, for display."""
    import pandas as pd

    return pd.DataFrame([{
        "hf_id": h, "layers": s.num_layers, "d": s.hidden_size, "heads": s.num_heads,
        "kv_heads": s.num_kv_heads, "d_head": s.head_dim, "d_ff": s.intermediate_size,
        "experts": s.num_experts, "active_experts": s.experts_per_token,
        "seed_moe_factor": s.seed_moe_factor,
        "non_embedding_params_b": round(s.non_embedding_params / 1e9, 3),
        "total_params_b": round(s.total_params / 1e9, 3)} for h, s in specs.items()])


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator's roofline constants (dense, no sparsity)."""

    name: str
    peak_bf16_dense_tflops: float
    hbm_tb_per_s: float
    hbm_gib: float
    nvlink_gb_per_s_per_direction: float
    peak_fp8_dense_tflops: float | None = None
    #: aiconfigurator-core system whose measured vLLM kernel tables price this GPU in the
    #: reference-data replay (None: the replay cannot run on it; the analysis still can).
    kernel_system: str | None = None
    #: weight precisions with measured GEMM and MoE tables for that system.
    weight_precisions: tuple[str, ...] = ()
    #: Fixed cost (µs) of one tensor-parallel all-reduce call, whatever its size, and where
    #: that number comes from. Required in data/hardware/*.json (load_gpu_spec); None only
    #: for a spec built in code, which roofline.allreduce_us then refuses for tp > 1.
    allreduce_latency_us: float | None = None
    allreduce_latency_source: str | None = None

    def __post_init__(self) -> None:
        for name in ("peak_bf16_dense_tflops", "hbm_tb_per_s", "hbm_gib",
                     "nvlink_gb_per_s_per_direction"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{self.name}: {name} must be positive")
        if self.weight_precisions and self.kernel_system is None:
            raise ValueError(f"{self.name}: weight_precisions given without a kernel_system")
        if self.allreduce_latency_us is not None:
            if not self.allreduce_latency_us > 0:
                raise ValueError(f"{self.name}: allreduce_latency_us must be positive")
            if not self.allreduce_latency_source:
                raise ValueError(f"{self.name}: allreduce_latency_us needs an "
                                 f"allreduce_latency_source saying where it comes from")

    @property
    def peak_flops_per_s(self) -> float:
        return self.peak_bf16_dense_tflops * 1e12

    @property
    def hbm_bytes_per_s(self) -> float:
        return self.hbm_tb_per_s * 1e12

    @property
    def hbm_bytes(self) -> int:
        return int(self.hbm_gib * 2**30)

    @property
    def nvlink_bytes_per_s(self) -> float:
        return self.nvlink_gb_per_s_per_direction * 1e9

    @property
    def ridge_flops_per_byte(self) -> float:
        """Arithmetic intensity where the roofline turns from memory- to compute-bound."""
        return self.peak_flops_per_s / self.hbm_bytes_per_s


#: Keys every data/hardware/<name>.json must have (the other GpuSpec fields are optional).
GPU_JSON_REQUIRED = ("name", "peak_bf16_dense_tflops", "hbm_tb_per_s", "hbm_gib",
                     "nvlink_gb_per_s_per_direction", "allreduce_latency_us",
                     "allreduce_latency_source")


def load_gpu_spec(name: str = DEFAULT_HARDWARE, hardware_dir: Path = HARDWARE_DIR) -> GpuSpec:
    """Read ``data/hardware/<name>.json``; a missing or invalid field names the file."""
    path = hardware_dir / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in hardware_dir.glob("*.json"))
        raise FileNotFoundError(f"no hardware spec {name!r} at {display_path(path)}; known: {known}")
    raw = json.loads(path.read_text())
    missing = [k for k in GPU_JSON_REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"{display_path(path)}: missing required field(s) {missing}")
    fields = {k: raw[k] for k in GpuSpec.__dataclass_fields__ if k in raw}
    if "weight_precisions" in fields:
        fields["weight_precisions"] = tuple(fields["weight_precisions"])
    try:
        return GpuSpec(**fields)
    except ValueError as exc:
        raise ValueError(f"{display_path(path)}: {exc}") from None
