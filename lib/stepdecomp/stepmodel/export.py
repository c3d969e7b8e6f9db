"""The fitted step-time model as a BLIS defaults file (``--defaults-filepath``).

BLIS (inference-sim/inference-sim f90a1e3a, ``cmd/default_config.go``) parses its defaults
YAML strictly: the only top-level keys are :data:`ACCEPTED_KEYS`, and any other key stops it.
The file written here holds

* ``defaults``: one entry per analysed model, keyed by its lowercased HF id (BLIS lowercases
  ``--model``), with ``GPU`` (BLIS's hardware name, :data:`BLIS_GPU_NAMES`),
  ``tensor_parallelism`` and ``hf_repo``;
* ``trained_physics_coefficients``: the 3 α's and the 11 β's in BLIS's order
  (blis_basis.BETA_NAMES), all finite and ≥ 0 (blis_basis.TrainedPhysicsCoefficients
  checks); 11 values, since fewer switch BLIS to its max() forms (a different model);
* ``version``: the value BLIS's own defaults.yaml carries at that commit.

The α's are BLIS's shipped values (:data:`ALPHA_STATEMENT` says why).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd
import yaml

from ..model import blis_basis
from ..core.paths import display_path

ACCEPTED_KEYS = ("defaults", "version", "workloads", "trained_physics_coefficients", "lora",
                 "kv_offload_devices")
#: BLIS's hardware_config.json name of each data/hardware spec it has (it has no H200 entry).
BLIS_GPU_NAMES: dict[str, str] = {"h100-sxm": "H100"}
#: ``version`` of BLIS's defaults.yaml at f90a1e3a.
BLIS_DEFAULTS_VERSION = "0.0.1"
ALPHA_STATEMENT = (
    "left at BLIS's shipped values: they price per-request work outside the forward pass "
    "(HTTP parsing and queue insertion, post-decode bookkeeping, streaming per output token); "
    "the step traces start at the engine's QUEUED event and time the engine loop, and the "
    "client summaries of the bundled data come from the same replay's host-overhead model, "
    "so fitting them here would fit the generator, not a server")
#: The file names under reports/blis/.
DEFAULTS_FILE = "defaults.yaml"
README_FILE = "README.md"


def blis_gpu_name(hardware: str) -> str:
    if hardware not in BLIS_GPU_NAMES:
        raise ValueError(f"BLIS has no hardware entry for {hardware!r} (known to BLIS here: "
                         f"{', '.join(BLIS_GPU_NAMES)}): its trained-physics basis would use "
                         f"other peak numbers")
    return BLIS_GPU_NAMES[hardware]


def model_entries(models: pd.DataFrame, hardware: str) -> dict[str, dict[str, object]]:
    """``defaults`` entries from a frame with hf_id and tp (one row per experiment): each
    model at its most frequent TP (ties: the smallest), keyed by the lowercased HF id."""
    gpu = blis_gpu_name(hardware)
    counts = models.groupby(["hf_id", "tp"]).size().reset_index(name="n")
    counts = counts.sort_values(["hf_id", "n", "tp"], ascending=[True, False, True])
    best = counts.drop_duplicates("hf_id")
    return {str(h).lower(): {"GPU": gpu, "tensor_parallelism": int(t), "hf_repo": str(h)}
            for h, t in zip(best["hf_id"], best["tp"])}


def defaults_document(coefficients: blis_basis.TrainedPhysicsCoefficients,
                      entries: Mapping[str, Mapping[str, object]]) -> dict[str, object]:
    """The YAML document (a dict with accepted keys only)."""
    doc = {"defaults": {k: dict(v) for k, v in entries.items()},
           "version": BLIS_DEFAULTS_VERSION,
           "trained_physics_coefficients": coefficients.as_yaml_section()}
    check_document(doc, "defaults document")
    return doc


def check_document(doc: object, where: str) -> blis_basis.TrainedPhysicsCoefficients:
    """What BLIS would refuse, as a ValueError naming ``where``: a key it does not accept, a
    defaults entry without GPU / tensor_parallelism, or coefficients that are not 3 α's and
    11 finite non-negative β's. Returns the coefficients."""
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: not a YAML mapping")
    unknown = sorted(set(doc) - set(ACCEPTED_KEYS))
    if unknown:
        raise ValueError(f"{where}: top-level key(s) {unknown} are not accepted by BLIS "
                         f"(accepted: {', '.join(ACCEPTED_KEYS)})")
    for name, entry in (doc.get("defaults") or {}).items():
        if not isinstance(entry, dict) or set(entry) - {"GPU", "tensor_parallelism", "hf_repo"} \
                or not {"GPU", "tensor_parallelism"} <= set(entry):
            raise ValueError(f"{where}: defaults entry {name!r} must have GPU and "
                             f"tensor_parallelism (and optionally hf_repo) only")
    tp = doc.get("trained_physics_coefficients")
    if not isinstance(tp, dict) or set(tp) != {"alpha_coeffs", "beta_coeffs"}:
        raise ValueError(f"{where}: trained_physics_coefficients must hold exactly "
                         f"alpha_coeffs and beta_coeffs")
    try:
        return blis_basis.TrainedPhysicsCoefficients(alpha=tuple(tp["alpha_coeffs"]),
                                                     beta=tuple(tp["beta_coeffs"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def write_defaults(path: Path, doc: Mapping[str, object], header: str = "") -> Path:
    """Write the document as YAML (key order kept), ``header`` as leading comment lines."""
    check_document(dict(doc), display_path(path))
    text = yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=None, width=120)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(comment + text, encoding="utf-8")
    return path


def read_defaults(path: Path) -> tuple[dict, blis_basis.TrainedPhysicsCoefficients]:
    """The document and its coefficients, checked as BLIS would (errors name the file)."""
    doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return doc, check_document(doc, display_path(path))


def command_lines(entries: Mapping[str, Mapping[str, object]], defaults_path: str
                  ) -> list[str]:
    """One BLIS command line per model entry using the exported file."""
    return [f"./blis run --model {name} --defaults-filepath {defaults_path} "
            f"--latency-model trained-physics --workload-spec <your-workload.yaml>"
            for name in entries]
