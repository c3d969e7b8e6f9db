"""Experiment directories: names, exp-config.yaml, profile.yaml, model and TP resolution."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def short_name(experiment_id: str) -> str:
    """The directory name without its ``<YYYYMMDD>-<HHMMSS>-`` or ``<id>-`` prefix, for
    labels: ``20260217-203421-llama-2-70b-hf-tp4-codegen`` -> ``llama-2-70b-hf-tp4-codegen``."""
    return _PREFIX.sub("", str(experiment_id), count=1)


class ConfigError(ValueError):
    """A configuration file or directory name cannot be used; the message names the file
    (and the line, where the YAML says it). The experiment is skipped, not the load."""


class ConfigWarning(UserWarning):
    """A configuration problem that did not stop the load (the message says what was done)."""


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path`` (JSON is YAML), or ConfigError naming file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{display_path(path)}: cannot be read ({e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(p) for p in (getattr(e, "context", None),
                                            getattr(e, "problem", None)) if p) or str(e)
        raise ConfigError(f"{display_path(path)}{where}: not valid YAML: {problem}") from None


def _key_line(path: Path, key: str) -> str:
    """' line N' of a top-level key of a YAML mapping file ('' if it cannot be told)."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return ""
    for k, v in getattr(node, "value", ()) if isinstance(node, yaml.MappingNode) else ():
        if getattr(k, "value", None) == key:
            return f" line {v.start_mark.line + 1}"
    return ""


def _mapping(path: Path, what: str) -> dict:
    """A YAML file that must hold a mapping (an empty file is an empty mapping)."""
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{display_path(path)}: expected a mapping ({what}), "
                          f"got a {type(data).__name__}")
    return data


def load_slug_map(models_dir: Path = MODELS_DIR) -> dict[str, str]:
    """data/models/slugs.yaml: directory-name model slug -> Hugging Face id."""
    path = models_dir / "slugs.yaml"
    if not path.is_file():
        return {}
    slugs = _mapping(path, "<slug>: <org>/<name>")
    for slug, hf_id in slugs.items():
        if not isinstance(hf_id, str) or not hf_id:
            raise ConfigError(f"{display_path(path)}{_key_line(path, str(slug))}: the model of "
                              f"slug {slug!r} must be a Hugging Face id <org>/<name>, got {hf_id!r}")
    return {str(k): v for k, v in slugs.items()}


def _positive_int(cfg: dict, key: str, path: Path) -> int | None:
    """An optional integer setting >= 1 (an integral float or a digit string is exact)."""
    v = cfg.get(key)
    if v is None:
        return None
    ok = (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, float) and v.is_integer()) or (isinstance(v, str) and v.strip().isdigit())
    if not ok or int(v) < 1:
        raise ConfigError(f"{display_path(path)}{_key_line(path, key)}: {key} must be an "
                          f"integer >= 1, got {v!r}")
    return int(v)


def _read_profile(path: Path) -> dict:
    """profile.yaml (the load generator's profile, JSON or YAML). The report does not need
    it: a problem is a ConfigWarning and an empty profile, never an error."""
    if not path.is_file():
        return {}
    try:
        return _mapping(path, "the load-generator profile")
    except ConfigError as e:
        warnings.warn(f"{e}; the profile is ignored (the report does not use it)",
                      ConfigWarning, stacklevel=4)
        return {}


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
        """traces.json or traces.json.gz; None when neither or both are present (discover
        skips such directories and says why)."""
        present = [self.path / n for n in TRACE_NAMES if (self.path / n).is_file()]
        return present[0] if len(present) == 1 else None


def read_experiment(path: Path, models_dir: Path = MODELS_DIR) -> Experiment:
    """Resolve an experiment directory. exp-config.yaml is the authority for model and TP;
    the directory name is the fallback (model via data/models/slugs.yaml).

    ConfigError (naming the file and line) for an unusable exp-config.yaml or slugs.yaml, or
    a tensor parallelism below 1; UnknownModelError for a slug that slugs.yaml lacks."""
    path = Path(path)
    parsed = parse_dir_name(path.name)
    cfg_path = path / "exp-config.yaml"
    cfg = _mapping(cfg_path, "vLLM server settings") if cfg_path.is_file() else {}
    hf_id = cfg.get("model")
    if hf_id is not None and (not isinstance(hf_id, str) or not hf_id.strip()):
        raise ConfigError(f"{display_path(cfg_path)}{_key_line(cfg_path, 'model')}: model must "
                          f"be a Hugging Face id <org>/<name>, got {hf_id!r}")
    if not hf_id:
        slugs = load_slug_map(models_dir)
        if parsed.model_slug not in slugs:
            raise UnknownModelError(
                f"{path.name}: unknown model slug {parsed.model_slug!r} and no exp-config.yaml "
                f"naming the model. Add '{parsed.model_slug}: <org>/<name>' to "
                f"{display_path(models_dir / 'slugs.yaml')} and put the config.json under "
                f"{display_path(models_dir)}/<org>/<name>/.")
        hf_id = slugs[parsed.model_slug]
    tp = _positive_int(cfg, "tensor_parallelism", cfg_path)
    if tp is None and parsed.tp < 1:
        raise ConfigError(f"{path.name}: tensor parallelism tp{parsed.tp} in the directory name "
                          f"must be >= 1 (or set tensor_parallelism in exp-config.yaml)")
    return Experiment(
        experiment_id=path.name, path=path, model=parsed.model_slug, hf_id=str(hf_id).strip(),
        tp=tp or parsed.tp, workload=parsed.workload,
        max_num_batched_tokens=_positive_int(cfg, "max_num_batched_tokens", cfg_path),
        max_num_seqs=_positive_int(cfg, "max_num_seqs", cfg_path),
        max_model_len=_positive_int(cfg, "max_model_len", cfg_path),
        profile=_read_profile(path / "profile.yaml"))


@dataclass(frozen=True)
class Discovery:
    experiments: list[Experiment]
    skipped: list[tuple[str, str]]   # (directory name, reason)


def _skip_reason(d: Path) -> str | None:
    """Why a directory named like an experiment holds no usable trace file (None: it does)."""
    present = [n for n in TRACE_NAMES if (d / n).is_file()]
    if not present:
        return "no traces.json"
    if len(present) > 1:
        return (f"both {' and '.join(present)} are present: remove one (the loader cannot "
                f"tell which is complete)")
    return None


def discover(root: Path, models_dir: Path = MODELS_DIR) -> Discovery:
    """All experiment directories under ``root`` that hold one traces.json(.gz).

    A missing, empty or non-directory root is an error that says what was expected.
    Directories without traces, with both traces.json and traces.json.gz, or with an
    unusable configuration (ConfigError) are skipped and listed with the reason; the last
    two also raise a ConfigWarning naming the file. An experiment whose model has no
    config.json stops the load (UnknownModelError): the fix is to add the model.
    """
    root = Path(root)
    expected = ("a ground-truth root with one directory per experiment, "
                "<YYYYMMDD>-<HHMMSS>-<model-slug>-tp<N>-<workload>/traces.json")
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"data root {display_path(root)} is a file, not a directory: "
                                 f"expected {expected}")
    if not root.is_dir():
        raise FileNotFoundError(f"data root {display_path(root)} does not exist: expected {expected}")
    experiments, skipped = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if not _TP.search(d.name):
            skipped.append((d.name, "name does not contain -tp<N>-"))
            continue
        reason = _skip_reason(d)
        if reason is None:
            try:
                exp = read_experiment(d, models_dir)
            except ConfigError as e:
                reason = str(e)
        if reason is not None:
            skipped.append((d.name, reason))
            if reason != "no traces.json":
                warnings.warn(f"{display_path(d)}: skipped: {reason}", ConfigWarning, stacklevel=2)
            continue
        if not (models_dir / exp.hf_id / "config.json").is_file():
            raise UnknownModelError(
                f"{d.name}: unknown model {exp.hf_id!r}: no config.json at "
                f"{display_path(models_dir / exp.hf_id / 'config.json')}. Put the model's Hugging "
                f"Face config.json there.")
        experiments.append(exp)
    if not experiments:
        raise FileNotFoundError(f"data root {display_path(root)} holds no experiment with traces: "
                                f"expected {expected}")
    return Discovery(experiments=experiments, skipped=skipped)
