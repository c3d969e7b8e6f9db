"""Model architecture and GPU specs: data files loaded into frozen, validated dataclasses.

Models come from Hugging Face ``config.json`` files under ``data/models/<hf-id>/``, read by
:meth:`ModelSpec.from_hf_config`, which dispatches on the config's ``model_type`` (see
``SUPPORTED_MODEL_TYPES``; any other dense config with an explicit ``head_dim`` works too, and
an architecture the formulas do not model is refused with a one-line message). GPUs come from
``data/hardware/<name>.json``. Nothing here is a hard-coded table.

:func:`model_table` is THE per-model table: every ModelSpec field and derived quantity, one
row per hf_id. The seed's architecture symbols (seed.architecture_table), the physical
model's arrays and the display table (:func:`specs_table`) are views of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    import pandas as pd

from ..core.paths import HARDWARE_DIR, MODELS_DIR, display_path
from ..core.params import DEFAULT_HARDWARE

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float8_e4m3fn": 1}
#: The dtype assumed when a config.json names none (every model this repository ships names one).
DEFAULT_CONFIG_DTYPE = "bfloat16"

#: HF ``model_type`` values read by name, each mapped to whether its config may describe
#: Mixtral-style routed experts (num_local_experts / num_experts_per_tok). All are decoder-only
#: transformers with (grouped-query) attention and gated MLPs: the shape ModelSpec models.
SUPPORTED_MODEL_TYPES: dict[str, bool] = {"llama": False, "mistral": False, "mixtral": True,
                                          "qwen2": False}

#: Config keys of architectures the formulas do not model, with what each one means. A config
#: that sets any of them (to anything but null / 0 / false) is refused, whatever its model_type.
UNMODELLED_CONFIG_KEYS: dict[str, str] = {
    "kv_lora_rank": "multi-head latent attention (kv_lora_rank)",
    "q_lora_rank": "multi-head latent attention (q_lora_rank)",
    "n_routed_experts": "routed experts (n_routed_experts)",
    "n_shared_experts": "shared experts (n_shared_experts)",
    "num_experts": "experts named num_experts (Qwen-MoE style)",
    "moe_intermediate_size": "a separate expert width (moe_intermediate_size)",
    "shared_expert_intermediate_size": "a shared expert (shared_expert_intermediate_size)",
}


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


class UnsupportedModelError(ValueError):
    """A config.json describes an architecture the formulas do not model (the message names
    the model_type and what is missing)."""


@dataclass(frozen=True)
class ModelSpec:
    """Decoder-only transformer shape, as read from a HF config.json.

    Dense models have ``num_experts = experts_per_token = 1``. For MoE models
    ``intermediate_size`` is the FFN width of one expert (HF convention). ``head_dim`` is the
    config's (``hidden_size / num_heads`` when the config gives none); it differs from d/H in
    e.g. Mistral-Nemo (5120/32 = 160, head_dim 128). The seed mode keeps the study's d/H
    (:attr:`seed_d_head`).
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
    model_type: str = ""

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
        """Width of the query projection output, H·d_head (= hidden_size unless the config's
        head_dim differs from d/H, as in Mistral-Nemo: 32·128 = 4096 < 5120)."""
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of one of the K or V projections, H_kv·d_head."""
        return self.num_kv_heads * self.head_dim

    @property
    def seed_d_head(self) -> float:
        """The seed study's head dimension, d/H (a float, as the study computed it): equal to
        head_dim for the study's models, NOT for a config with its own head_dim."""
        return self.hidden_size / self.num_heads

    @property
    def seed_d_kv(self) -> float:
        """The seed study's K (or V) width, H_kv·(d/H)."""
        return self.num_kv_heads * self.seed_d_head

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
    def from_hf_config(cls, hf_id: str, config: dict, source: str | None = None) -> "ModelSpec":
        """Build from a HF config dict, dispatching on its ``model_type``.

        llama, mistral, mixtral and qwen2 are read by name (``SUPPORTED_MODEL_TYPES``); any
        other model_type is read the same way if its config gives an explicit ``head_dim``.
        The config's head_dim is used when present, else hidden_size / num_attention_heads.
        Refused with :class:`UnsupportedModelError` (one line naming the model_type and what is
        missing): no model_type; an unknown model_type without head_dim; any of
        ``UNMODELLED_CONFIG_KEYS`` (MLA, routed or shared experts); Mixtral-style experts in a
        dense family; sliding-window attention (the physical model attends every context
        token). A missing or non-integer size is a ValueError naming the field. ``source``
        (e.g. the config.json path) replaces ``hf_id`` at the start of every message.
        """
        where = source or hf_id
        model_type = _model_type(config, where)
        moe_allowed = SUPPORTED_MODEL_TYPES.get(model_type, True)
        d = _config_int(config, "hidden_size", where)
        heads = _config_int(config, "num_attention_heads", where)
        head_dim = _config_int(config, "head_dim", where, default=None)
        if head_dim is None and d % heads:
            raise UnsupportedModelError(
                f"{where}: model_type {model_type!r}: hidden_size {d} is not a multiple of "
                f"num_attention_heads {heads} and the config gives no head_dim")
        experts = _config_int(config, "num_local_experts", where, default=1) if moe_allowed else 1
        return cls(
            hf_id=hf_id, model_type=model_type, hidden_size=d,
            num_layers=_config_int(config, "num_hidden_layers", where),
            num_heads=heads,
            num_kv_heads=_config_int(config, "num_key_value_heads", where, default=heads),
            head_dim=head_dim if head_dim is not None else d // heads,
            intermediate_size=_config_int(config, "intermediate_size", where),
            vocab_size=_config_int(config, "vocab_size", where),
            num_experts=experts,
            experts_per_token=(_config_int(config, "num_experts_per_tok", where, default=1)
                               if experts > 1 else 1),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            bytes_per_param=_config_dtype_bytes(config, where))


def _model_type(config: dict, where: str) -> str:
    """The config's model_type once the config is known to describe what the formulas model;
    otherwise UnsupportedModelError naming the model_type and what is missing."""
    known = ", ".join(SUPPORTED_MODEL_TYPES)
    supported = f"supported: {known}, or any dense config with an explicit head_dim"
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise UnsupportedModelError(f"{where}: config.json has no model_type ({supported})")
    unmodelled = [what for key, what in UNMODELLED_CONFIG_KEYS.items() if config.get(key)]
    dense_family = not SUPPORTED_MODEL_TYPES.get(model_type, True)
    if dense_family and config.get("num_local_experts") not in (None, 0, 1):
        unmodelled.append("routed experts (num_local_experts) in a dense family")
    window = config.get("sliding_window")
    if window and config.get("use_sliding_window", True):
        unmodelled.append(f"sliding-window attention (sliding_window {window})")
    if unmodelled:
        raise UnsupportedModelError(f"{where}: model_type {model_type!r} is not supported: "
                                    f"{'; '.join(unmodelled)} not modelled ({supported})")
    if model_type not in SUPPORTED_MODEL_TYPES and config.get("head_dim") is None:
        raise UnsupportedModelError(f"{where}: model_type {model_type!r} is not a known family "
                                    f"and its config gives no explicit head_dim ({supported})")
    return model_type


_REQUIRED = object()


def _config_int(config: dict, key: str, where: str, default: object = _REQUIRED) -> int:
    """An integer size from the config; null or absent gives ``default`` (if any)."""
    value = config.get(key)
    if value is None:
        if default is _REQUIRED:
            raise ValueError(f"{where}: config.json lacks required field {key!r}")
        return default  # type: ignore[return-value]
    if isinstance(value, bool) or not (isinstance(value, int)
                                       or (isinstance(value, float) and value.is_integer())):
        raise ValueError(f"{where}: config.json field {key!r} must be an integer, got {value!r}")
    return int(value)


def _config_dtype_bytes(config: dict, where: str) -> int:
    """Bytes per parameter of the config's dtype (``torch_dtype``, or ``dtype`` in newer
    configs; ``DEFAULT_CONFIG_DTYPE`` when it names none)."""
    dtype = config.get("torch_dtype") or config.get("dtype") or DEFAULT_CONFIG_DTYPE
    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"{where}: config.json dtype {dtype!r} is not one of {sorted(_DTYPE_BYTES)}")
    return _DTYPE_BYTES[dtype]


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
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{display_path(path)} line {e.lineno}: not valid JSON: {e.msg}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{display_path(path)}: expected a JSON object, got a {type(config).__name__}")
    return ModelSpec.from_hf_config(hf_id, config, source=display_path(path))


def load_model_specs(hf_ids: Iterable[str], models_dir: Path = MODELS_DIR) -> dict[str, ModelSpec]:
    """ModelSpec for each distinct hf_id (e.g. ``steps["hf_id"].unique()``)."""
    return {h: load_model_spec(h, models_dir) for h in sorted(set(hf_ids))}


#: The ModelSpec fields in :func:`model_table`, in column order (after hf_id, model_type).
MODEL_FIELDS = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                "intermediate_size", "vocab_size", "num_experts", "experts_per_token",
                "bytes_per_param", "tie_word_embeddings")
#: The derived ModelSpec properties in :func:`model_table` (their docstrings give the formulas).
MODEL_DERIVED = ("q_dim", "kv_dim", "seed_d_head", "seed_d_kv", "seed_moe_factor",
                 "attn_params_per_layer", "expert_params", "router_params_per_layer",
                 "layer_params", "lm_head_params", "non_embedding_params", "total_params")
MODEL_COLUMNS = ("hf_id", "model_type", *MODEL_FIELDS, *MODEL_DERIVED)


def model_table(specs: Mapping[str, ModelSpec]) -> "pd.DataFrame":
    """THE per-model table: one row per hf_id (in ``specs`` order), columns ``MODEL_COLUMNS``.

    Built once from the ModelSpec fields and derived properties, with their Python values
    (integers stay exact int64; seed_d_head, seed_d_kv and seed_moe_factor are floats computed
    as the seed did). Every per-model table in the library is a view of it: the seed's
    symbols (seed.architecture_table), the physical model's per-step arrays (merged on
    hf_id) and the display table :func:`specs_table`.
    """
    import pandas as pd

    return pd.DataFrame([{c: getattr(s, c) for c in MODEL_COLUMNS[1:]} | {"hf_id": h}
                         for h, s in specs.items()], columns=list(MODEL_COLUMNS))


def specs_table(specs: Mapping[str, ModelSpec]) -> "pd.DataFrame":
    """The architecture symbols of each model, one row per HF id, for display: a formatted
    view of :func:`model_table` (d_head is the config's, seed_d_head the study's d/H)."""
    t = model_table(specs)
    out = t[["hf_id", "model_type"]].assign(
        layers=t["num_layers"], d=t["hidden_size"], heads=t["num_heads"],
        kv_heads=t["num_kv_heads"], d_head=t["head_dim"], seed_d_head=t["seed_d_head"],
        d_ff=t["intermediate_size"], experts=t["num_experts"],
        active_experts=t["experts_per_token"], seed_moe_factor=t["seed_moe_factor"],
        non_embedding_params_b=(t["non_embedding_params"] / 1e9).round(3),
        total_params_b=(t["total_params"] / 1e9).round(3))
    return out.reset_index(drop=True)


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
    #: for a spec built in code, which physical.allreduce_us then refuses for tp > 1.
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
