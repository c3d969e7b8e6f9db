"""Experiment directories: names, exp-config.yaml, profile.yaml, model and TP resolution."""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from ..core.messages import MAX_MESSAGE_CHARS, bounded, shown
from .otlp import INT64_DIGITS
from ..core.paths import MODELS_DIR, display_path
from ..core.tables import EXPERIMENT_PREFIX, short_name  # noqa: F401 (labels in tables and FINDINGS)
from ..hw.specs import UnknownModelError

TRACE_NAMES = ("traces.json", "traces.json.gz")
#: The load generator's streamed events: per output token, and extra at the end of the stream,
#: as inferred from the published summaries (docs/measurement.md §3; targets.clientmetrics
#: checks every run against it, and the reference-data replay records events the same way).
EVENTS_PER_TOKEN = 2
END_OF_STREAM_EVENTS = 2

# <YYYYMMDD>-<HHMMSS>- or <id>- prefix (core.tables.EXPERIMENT_PREFIX, the one short_name
# drops), then the slug, then the LAST -tp<N>-, then the rest.
# Digits are ASCII only ([0-9]: \d would take other scripts' digits too).
_PREFIX = EXPERIMENT_PREFIX
_TP = re.compile(r"-tp([0-9]+)-")
_VARIANT = re.compile(r"^(?P<workload>.*?)(?:-(?P<variant>[0-9]+(?:-[0-9]+)*))?$")
#: What lies before -tp<N>- when the name carries no model: a prefix alone.
_PREFIX_ONLY = re.compile(r"^(?:[0-9]{8}-[0-9]{6}|[0-9]+)?$")

#: Largest tensor parallelism accepted (exp-config.yaml or directory name). vLLM needs TP to
#: divide the model's attention heads, and no published model has more than a few hundred;
#: the bound keeps every product of TP with a token count far inside int64.
MAX_TP = 1024
#: Most HBM one GPU could have, in bytes: 1 TiB, beyond every GPU in data/hardware (141 GB
#: for the largest) with room for parts to come (test_experiments checks the data).
MAX_GPU_HBM_BYTES = 2**40
#: Fewest KV-cache bytes one token can take: 1 KiB (K and V of 1 layer of 256 dims in fp8;
#: the smallest model in data/models takes 128 KiB per token).
MIN_KV_BYTES_PER_TOKEN = 2**10
#: Every token a step schedules, and every token of every running sequence, holds a KV entry
#: on the TP group's GPUs: max_num_batched_tokens, max_num_seqs and max_model_len above
#: tp · MAX_TOKENS_PER_GPU cannot be held by any hardware, and are refused.
MAX_TOKENS_PER_GPU = MAX_GPU_HBM_BYTES // MIN_KV_BYTES_PER_TOKEN
#: Most YAML aliases (``*name``) a configuration file may use. Each alias can double what it
#: expands to (a 470-byte "alias bomb" expands to hundreds of MB); a configuration needs few
#: or none, so a document with more is refused before it is built.
MAX_YAML_ALIASES = 16


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
        raise ValueError(f"experiment directory {shown(name)} does not contain '-tp<N>-'")
    last = matches[-1]
    head = name[: last.start()]
    slug = "" if _PREFIX_ONLY.match(head) else _PREFIX.sub("", head, count=1)
    rest = _VARIANT.match(name[last.end():])
    assert rest is not None
    return DirName(model_slug=slug, tp=int(last.group(1)), workload=rest.group("workload"),
                   variant=rest.group("variant"))


class ConfigError(ValueError):
    """A configuration file or directory name cannot be used; the message names the file
    (and the line, where the YAML says it), shows the offending value cut to
    messages.SHOWN_VALUE_CHARS and is at most messages.MAX_MESSAGE_CHARS long. The
    experiment is skipped, not the load."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return bounded(self.message)


class StrictYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter in what configurations may hold: a mapping key given
    twice is an error (PyYAML keeps the last silently), and so is a document with more than
    MAX_YAML_ALIASES aliases (checked while composing, before anything is expanded). An
    integer too long to convert is an error with its line, not a ValueError."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise ComposerError(None, None, f"more than {MAX_YAML_ALIASES} aliases (*name), "
                                    f"more than a configuration needs", self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                k = (key_node.tag, key_node.value)
                if k in seen:
                    raise ConstructorError(None, None, f"duplicate key {shown(key_node.value)} "
                                           f"(first at line {seen[k] + 1})", key_node.start_mark)
                seen[k] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            raise ConstructorError(None, None, f"integer {shown(node.value)} has too many "
                                   f"digits", node.start_mark) from None


StrictYamlLoader.add_constructor("tag:yaml.org,2002:int", StrictYamlLoader.construct_yaml_int)


class ConfigWarning(UserWarning):
    """A configuration problem that did not stop the load (the message says what was done)."""


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path`` (JSON is YAML), read with StrictYamlLoader, or
    ConfigError naming file and line (unreadable, not UTF-8, not valid YAML, a duplicate key,
    too many aliases, nested too deeply)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{display_path(path)}: cannot be read: not UTF-8 text (byte "
                          f"{e.start})") from None
    except OSError as e:
        raise ConfigError(f"{display_path(path)}: cannot be read ({e.strerror or e})") from None
    try:
        return yaml.load(text, Loader=StrictYamlLoader)    # noqa: S506 (a safe loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(p) for p in (getattr(e, "context", None),
                                            getattr(e, "problem", None)) if p) or str(e)
        raise ConfigError(f"{display_path(path)}{where}: not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{display_path(path)}: not usable YAML: nested too deeply") from None


def _key_line(path: Path, key: str) -> str:
    """' line N' of a top-level key of a YAML mapping file ('' if it cannot be told)."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"), Loader=StrictYamlLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
        return ""
    for k, v in getattr(node, "value", ()) if isinstance(node, yaml.MappingNode) else ():
        if getattr(k, "value", None) == key:
            return f" line {v.start_mark.line + 1}"
    return ""


_HF_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def is_hf_id(value: Any) -> bool:
    """A Hugging Face model id <org>/<name> (letters, digits, '.', '_', '-'; each part
    starting with a letter or digit): what may name a directory under data/models/."""
    return isinstance(value, str) and _HF_ID.fullmatch(value.strip()) is not None


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
        if not is_hf_id(hf_id):
            raise ConfigError(f"{display_path(path)}{_key_line(path, str(slug))}: the model of "
                              f"slug {shown(slug)} must be a Hugging Face id <org>/<name>, got "
                              f"{shown(hf_id)}")
    return {str(k): v for k, v in slugs.items()}


def _exact_int(v: Any) -> int | None:
    """An int setting's value: an int, an integral float, or ASCII digits (None otherwise).
    A digit string of more than INT64_DIGITS significant digits is beyond int64 and every
    bound: refused without converting it (int() of thousands of digits raises)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v) if v.is_integer() else None
    if isinstance(v, str):
        t = v.strip()
        if t.isascii() and t.isdigit():
            return int(t) if len(t.lstrip("0")) <= INT64_DIGITS else None
    return None


def _int_setting(cfg: dict, key: str, path: Path, upper: int) -> int | None:
    """An optional integer setting in [1, upper] (an integral float or a digit string is
    exact); ConfigError naming file, line and the value otherwise."""
    v = cfg.get(key)
    if v is None:
        return None
    i = _exact_int(v)
    if i is None or not 1 <= i <= upper:
        raise ConfigError(f"{display_path(path)}{_key_line(path, key)}: {key} must be an "
                          f"integer from 1 to {upper:,}, got {shown(v)}")
    return i


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

    ConfigError (naming the file and line) for an unusable exp-config.yaml or slugs.yaml, a
    setting out of its bounds, or a name without a model slug and no model in exp-config.yaml;
    UnknownModelError for a slug that slugs.yaml lacks. The configuration faults are checked
    first, so that an experiment to be skipped anyway does not stop the load."""
    path = Path(path)
    parsed = parse_dir_name(path.name)
    cfg_path = path / "exp-config.yaml"
    present = cfg_path.exists() or cfg_path.is_symlink()    # a directory or dangling link: an error
    cfg = _mapping(cfg_path, "vLLM server settings") if present else {}
    hf_id = cfg.get("model")
    if hf_id is not None and not is_hf_id(hf_id):
        raise ConfigError(f"{display_path(cfg_path)}{_key_line(cfg_path, 'model')}: model must "
                          f"be a Hugging Face id <org>/<name>, got {shown(hf_id)}")
    tp = _int_setting(cfg, "tensor_parallelism", cfg_path, MAX_TP)
    if tp is None and not 1 <= parsed.tp <= MAX_TP:
        raise ConfigError(f"{path.name}: tensor parallelism tp{shown(str(parsed.tp))[1:-1]} in "
                          f"the directory name must be from 1 to {MAX_TP:,} (or set "
                          f"tensor_parallelism in exp-config.yaml)")
    tp = tp or parsed.tp
    tokens = tp * MAX_TOKENS_PER_GPU
    slug = parsed.model_slug if re.search("[A-Za-z]", parsed.model_slug) else ""
    if not hf_id and not slug:
        raise ConfigError(f"{path.name}: the name has no model slug before -tp<N>- "
                          f"and there is no exp-config.yaml naming the model")
    if not hf_id:
        slugs = load_slug_map(models_dir)
        if parsed.model_slug not in slugs:
            raise UnknownModelError(bounded(
                f"{path.name}: unknown model slug {shown(parsed.model_slug)} and no exp-config.yaml "
                f"naming the model. Add '{parsed.model_slug}: <org>/<name>' to "
                f"{display_path(models_dir / 'slugs.yaml')} and put the config.json under "
                f"{display_path(models_dir)}/<org>/<name>/."))
        hf_id = slugs[parsed.model_slug]
    return Experiment(
        experiment_id=path.name, path=path, hf_id=str(hf_id).strip(),
        model=slug or str(hf_id).strip().split("/")[-1],
        tp=tp, workload=parsed.workload,
        max_num_batched_tokens=_int_setting(cfg, "max_num_batched_tokens", cfg_path, tokens),
        max_num_seqs=_int_setting(cfg, "max_num_seqs", cfg_path, tokens),
        max_model_len=_int_setting(cfg, "max_model_len", cfg_path, tokens),
        profile=_read_profile(path / "profile.yaml"))


def _relative(reason: str, d: Path) -> str:
    """A ConfigError's text with the experiment directory's path (or name) in front removed:
    the skip list and its warning name the directory already."""
    for prefix in (f"{display_path(d)}/", f"{d.name}: "):
        if reason.startswith(prefix):
            return reason[len(prefix):]
    return reason


def _link_target(link: Path) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return "?"


@dataclass(frozen=True)
class Discovery:
    experiments: list[Experiment]
    skipped: list[tuple[str, str]]   # (directory name, reason)


def _skip_reason(d: Path) -> str | None:
    """Why a directory named like an experiment holds no usable trace file (None: it does)."""
    present = [n for n in TRACE_NAMES if (d / n).is_file()]
    dangling = [n for n in TRACE_NAMES if (d / n).is_symlink() and not (d / n).exists()]
    if not present and dangling:
        return f"{dangling[0]} is a dangling symbolic link"
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
    unusable configuration (ConfigError), and dangling symbolic links, are skipped and
    listed with the reason; all but the first also raise a ConfigWarning naming the file.
    An experiment whose model has no config.json stops the load (UnknownModelError): the
    fix is to add the model.
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
    for d in sorted(root.iterdir()):
        if d.is_symlink() and not d.exists():
            reason = f"dangling symbolic link to {shown(_link_target(d), 120)}"
            skipped.append((d.name, reason))
            warnings.warn(bounded(f"{display_path(root)}/{d.name}: skipped: {reason}"),
                          ConfigWarning, stacklevel=2)
            continue
        if not d.is_dir():
            continue
        if not _TP.search(d.name):
            skipped.append((d.name, "name does not contain -tp<N>-"))
            continue
        reason = _skip_reason(d)
        if reason is None:
            try:
                exp = read_experiment(d, models_dir)
            except ConfigError as e:
                reason = bounded(_relative(e.message, d))
        if reason is not None:
            skipped.append((d.name, reason))
            if reason != "no traces.json":
                warnings.warn(bounded(f"{display_path(d)}: skipped: {reason}"), ConfigWarning,
                              stacklevel=2)
            continue
        if not (models_dir / exp.hf_id / "config.json").is_file():
            raise UnknownModelError(
                bounded(f"{d.name}: unknown model {shown(exp.hf_id, 80)}: no config.json at "
                        f"{display_path(models_dir / exp.hf_id / 'config.json')}. Put the model's "
                        f"Hugging Face config.json there."))
        experiments.append(exp)
    if not experiments:
        why = (f"; {len(skipped)} director{'y' if len(skipped) == 1 else 'ies'} skipped, the "
               f"first: {skipped[0][0]} ({skipped[0][1]})" if skipped else "")
        raise FileNotFoundError(bounded(f"data root {display_path(root)} holds no experiment with "
                                        f"traces: expected {expected}{why}", 2 * MAX_MESSAGE_CHARS))
    return Discovery(experiments=experiments, skipped=skipped)
