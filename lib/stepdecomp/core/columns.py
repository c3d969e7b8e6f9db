"""The column vocabulary: every column name, component list, label and colour the library shares.

Tables flow load → seed / physical components → targets → statistics → plots and report;
a name defined here is the one spelling all of them use. Definitions of what a column means
live with the code that computes it (traces.load, seed mode in model.seed, physical mode in
model.physical, targets); this module only names them.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- identity
EXPERIMENT = "experiment_id"
#: The short name the modules use for it.
EXP = EXPERIMENT
MODEL = "model"
WORKLOAD = "workload"
HF_ID = "hf_id"
STEP_ID = "step.id"
#: One row per experiment in every per-experiment table, in this order.
EXPERIMENT_KEYS = [EXPERIMENT, MODEL, WORKLOAD]
#: The study's workload order (tables and figures).
WORKLOAD_ORDER = ["general", "codegen", "roleplay", "reasoning"]

# --------------------------------------------------------------------------- batch
PREFILL_TOKENS = "batch.prefill_tokens"
DECODE_TOKENS = "batch.decode_tokens"

# --------------------------------------------------------------------------- targets
#: The seed's target: the scheduler's schedule() CPU time (docs/measurement.md §1).
DURATION = "step.duration_us"
FORWARD = "step_forward_us"
PERIOD = "step_period_us"
#: THE registry of step-time targets: each target column and its panel title / table label,
#: in the order every per-target table stacks them. The physical mode's statistics, the
#: figures and the report read :data:`TARGETS` (targets/timestamps.py computes the last two;
#: docs/recipes/add-a-step-time-target.md adds one).
TARGET_LABELS = {DURATION: "step.duration_us (schedule() CPU time)",
                 FORWARD: "step_forward_us (from timestamps)",
                 PERIOD: "step_period_us (step start to next start)"}
#: The step-time targets the physical mode runs on: the keys of TARGET_LABELS.
TARGETS = tuple(TARGET_LABELS)

# --------------------------------------------------------------------------- phases
PHASES = ["pure_prefill", "pure_decode", "mixed"]
PHASE_COLORS = {"pure_prefill": "#d95f02", "pure_decode": "#1b9e77", "mixed": "#7570b3",
                "empty": "#999999"}

# --------------------------------------------------------------------------- seed mode
SEED_COMPONENTS = ["prefill_gemm_us", "prefill_attn_us", "decode_gemm_us", "total_analytical_us"]
SEED_TOTAL = "total_analytical_us"

# --------------------------------------------------------------------------- physical mode
PHYS_PREFILL_GEMM = "phys_prefill_gemm_us"
PHYS_PREFILL_ATTN = "phys_prefill_attn_us"
PHYS_DECODE_GEMM = "phys_decode_gemm_us"
PHYS_DECODE_ATTN = "phys_decode_attn_us"
PHYS_ALLREDUCE = "phys_allreduce_us"
PHYS_LM_HEAD = "phys_lm_head_us"
PHYS_GEMM = "phys_gemm_us"            # prefill + decode GEMM: one weight read, one term
PHYS_TOTAL = "phys_total_us"
PHYS_LOWER_BOUND = "phys_lower_bound_us"
#: The four components of the seed's hypothesis, in the physical model.
PHYS_COMPONENTS = [PHYS_PREFILL_GEMM, PHYS_PREFILL_ATTN, PHYS_DECODE_GEMM, PHYS_DECODE_ATTN]
#: Every time term of phys_total_us (it is their sum).
PHYS_TIME_COLUMNS = [*PHYS_COMPONENTS, PHYS_ALLREDUCE, PHYS_LM_HEAD]
#: The identified terms of the component fit (attribution.py): one GEMM term, not the split.
ATTRIBUTION_TERMS = [PHYS_GEMM, PHYS_PREFILL_ATTN, PHYS_DECODE_ATTN, PHYS_ALLREDUCE, PHYS_LM_HEAD]
#: Traffic of the physical model (model.physical): weights read, KV cache read and written.
PHYS_WEIGHT_BYTES = "phys_weight_bytes"
PHYS_KV_READ_BYTES = "phys_kv_read_bytes"
PHYS_KV_WRITE_BYTES = "phys_kv_write_bytes"
COMPONENT_COLORS = {PHYS_PREFILL_GEMM: "#d95f02", PHYS_PREFILL_ATTN: "#fdae6b",
                    PHYS_DECODE_GEMM: "#1b9e77", PHYS_DECODE_ATTN: "#66c2a5",
                    PHYS_ALLREDUCE: "#7570b3", PHYS_LM_HEAD: "#999999"}


def short_label(column: str) -> str:
    """A physical column's name for tables and legends: phys_decode_attn_us -> 'decode attn'."""
    return column.removeprefix("phys_").removesuffix("_us").replace("_", " ")
