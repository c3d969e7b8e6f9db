"""Experiment directories: names, exp-config.yaml, profile.yaml, model and TP resolution."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .paths import MODELS_DIR, display_path
from .specs import UnknownModelError

TRACE_NAMES = ("traces.json", "traces.json.gz")

# <YYYYMMDD>-<HHMMSS>- or <id>- prefix, then the slug, then the LAST -tp<N>-, then the rest.
_PREFIX = re.compile(r"^(?:\d{8}-\d{6}-|\d+-)")
_TP = re.compile(r"-tp(\d+)-")
_VARIANT = re.compile(r"^(?P<workload>.*?)(?:-(?P<variant>\d+(?:-\d+)*))?$")


@dataclass(frozen=True)
class DirName:
    model_slug: str
    tp: int
    workload: str
    variant: str | None = None


def parse_dir_name(name: str) -> DirName:
    """Split ``<ts>-<model-slug>-tp<N>-<workload>[-<variant>]`` on the LAST ``-tp<digits>-``.

    >>> parse_dir_name("20260217-203421-llama-2-70b-hf-tp4-codegen")
    DirName(model_slug='llama-2-70b-hf', tp=4, workload='codegen', variant=None)
    >>> parse_dir_name("63-mistral-nemo-12b-tp1-codegen-1-1").workload
    'codegen'
    """
    matches = list(_TP.finditer(name))
    if not matches:
        raise ValueError(f"experiment directory {name!r} does not contain '-tp<N>-'")
    last = matches[-1]
    slug = _PREFIX.sub("", name[: last.start()], count=1)
    rest = _VARIANT.match(name[last.end():])
    assert rest is not None
    return DirName(model_slug=slug, tp=int(last.group(1)), workload=rest.group("workload"),
                   variant=rest.group("variant"))


def load_slug_map(models_dir: Path = MODELS_DIR) -> dict[str, str]:
    path = models_dir / "slugs.yaml"
    return dict(yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


@dataclass(frozen=True)
class Experiment:
    """One experiment directory and what it says about the server."""

    experiment_id: str
    path: Path
    model: str              # slug from the directory name, as the study's tables name models
    hf_id: str              # config.json key under data/models/
    tp: int
    workload: str
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    max_model_len: int | None = None
    profile: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def trace_path(self) -> Path | None:
        for name in TRACE_NAMES:
            p = self.path / name
            if p.is_file():
                return p
        return None


def read_experiment(path: Path, models_dir: Path = MODELS_DIR) -> Experiment:
    """Resolve an experiment directory. exp-config.yaml is the authority for model and TP;
    the directory name is the fallback (model via data/models/slugs.yaml)."""
    path = Path(path)
    parsed = parse_dir_name(path.name)
    cfg_path = path / "exp-config.yaml"
    cfg = (yaml.safe_load(cfg_path.read_text()) or {}) if cfg_path.is_file() else {}
    hf_id = cfg.get("model")
    if not hf_id:
        slugs = load_slug_map(models_dir)
        if parsed.model_slug not in slugs:
            raise UnknownModelError(
                f"{path.name}: unknown model slug {parsed.model_slug!r} and no exp-config.yaml "
                f"naming the model. Add '{parsed.model_slug}: <org>/<name>' to "
                f"{display_path(models_dir / 'slugs.yaml')} and put the config.json under "
                f"{display_path(models_dir)}/<org>/<name>/.")
        hf_id = slugs[parsed.model_slug]
    prof_path = path / "profile.yaml"
    profile = json.loads(prof_path.read_text()) if prof_path.is_file() else {}

    def _int(key: str) -> int | None:
        return int(cfg[key]) if cfg.get(key) is not None else None

    return Experiment(
        experiment_id=path.name, path=path, model=parsed.model_slug, hf_id=str(hf_id),
        tp=int(cfg.get("tensor_parallelism") or parsed.tp), workload=parsed.workload,
        max_num_batched_tokens=_int("max_num_batched_tokens"), max_num_seqs=_int("max_num_seqs"),
        max_model_len=_int("max_model_len"), profile=profile)


@dataclass(frozen=True)
class Discovery:
    experiments: list[Experiment]
    skipped: list[tuple[str, str]]   # (directory name, reason)


def discover(root: Path, models_dir: Path = MODELS_DIR) -> Discovery:
    """All experiment directories under ``root`` that hold a traces.json(.gz).

    A missing or empty root is an error that says what was expected; directories
    without traces are skipped and listed with the reason.
    """
    root = Path(root)
    expected = ("a ground-truth root with one directory per experiment, "
                "<YYYYMMDD>-<HHMMSS>-<model-slug>-tp<N>-<workload>/traces.json")
    if not root.is_dir():
        raise FileNotFoundError(f"data root {display_path(root)} does not exist: expected {expected}")
    experiments, skipped = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if not _TP.search(d.name):
            skipped.append((d.name, "name does not contain -tp<N>-"))
            continue
        exp = read_experiment(d, models_dir)
        if not (models_dir / exp.hf_id / "config.json").is_file():
            raise UnknownModelError(
                f"{d.name}: unknown model {exp.hf_id!r}: no config.json at "
                f"{display_path(models_dir / exp.hf_id / 'config.json')}. Put the model's Hugging "
                f"Face config.json there.")
        if exp.trace_path is None:
            skipped.append((d.name, "no traces.json"))
            continue
        experiments.append(exp)
    if not experiments:
        raise FileNotFoundError(f"data root {display_path(root)} holds no experiment with traces: "
                                f"expected {expected}")
    return Discovery(experiments=experiments, skipped=skipped)
