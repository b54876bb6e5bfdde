"""Hyperparameter dataclasses, their YAML form, and validation.

A config is resolved (model-family defaults filled in) before it is hashed, so the run directory name says
exactly what ran. Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tickets.errors import TicketsError
from tickets.tasks.base import DataConfig

OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("constant", "step", "cosine", "linear")
METHODS = ("imp", "omp", "random", "reverse", "reinit")
SCOPES = ("global", "layerwise")
HEAD_POLICIES = ("fresh", "pretrained")
ATTACKS = ("pgd", "fgsm")


def default_alpha(attack: str, eps: float) -> float:
    """The step size used when none is given: ε/4 for PGD (2/255 at ε = 8/255), 1.25·ε for FGSM-RS (Wong et al.)."""
    return 1.25 * eps if attack == "fgsm" else eps / 4


@dataclass
class AdversarialConfig:
    """Adversarial training: PGD-k or FGSM with random start, budgets in /255 pixel units (images)."""

    attack: str = "pgd"  # pgd | fgsm
    eps: float = 8.0  # L∞ budget, /255 for images; embedding-norm units (L2 per token) for text
    alpha: float | None = None  # step size; None: eps/4 for PGD (2/255 at eps 8), 1.25·eps for FGSM-RS
    steps: int = 10  # PGD steps (FGSM takes one step; resolved to 1)
    clean_fraction: float = 0.0  # fraction of each batch trained on clean inputs


@dataclass
class RobustEvalConfig:
    """Robust accuracy (RA) next to clean accuracy (SA) after every level / transfer: PGD-20 at 8/255 by default."""

    attack: str = "pgd"  # pgd | fgsm
    eps: float = 8.0  # L∞ budget, /255 for images; embedding-norm units (L2 per token) for text
    alpha: float | None = None  # step size; None: eps/4 for PGD, 1.25·eps for FGSM-RS
    steps: int = 20  # PGD steps (FGSM takes one step; resolved to 1)
    limit: int | None = None  # attack the first N test examples (None: as many as the clean test, data.limit)


def resolve_attack(cfg: AdversarialConfig | RobustEvalConfig, where: str):
    """A copy with the step size filled in (FGSM: steps = 1), validated: what runs is what the config says."""
    _check_choice(f"{where}.attack", cfg.attack, ATTACKS)
    if not cfg.eps >= 0:
        raise TicketsError(f"{where}.eps must be >= 0 (/255 pixel units for images), got {cfg.eps}")
    if cfg.attack == "pgd" and cfg.steps < 1:
        raise TicketsError(f"{where}.steps must be at least 1 for PGD, got {cfg.steps}")
    alpha = default_alpha(cfg.attack, cfg.eps) if cfg.alpha is None else cfg.alpha
    if not alpha >= 0:
        raise TicketsError(f"{where}.alpha (step size) must be >= 0, got {alpha}")
    out = dataclasses.replace(cfg, alpha=float(alpha), steps=1 if cfg.attack == "fgsm" else cfg.steps)
    if isinstance(out, AdversarialConfig) and not 0.0 <= out.clean_fraction < 1.0:
        raise TicketsError(f"{where}.clean_fraction must be in [0, 1), got {out.clean_fraction}")
    if isinstance(out, RobustEvalConfig) and out.limit is not None and out.limit < 1:
        raise TicketsError(f"{where}.limit must be a positive number of examples, got {out.limit}")
    return out


@dataclass
class TrainConfig:
    """The masked fine-tuning loop's hyperparameters. ``None`` means "the model family's default"."""

    epochs: int = 3
    batch_size: int | None = None
    optimizer: str | None = None  # sgd | adamw
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    lr_schedule: str | None = None  # constant | step | cosine | linear
    warmup: float = 0.0  # fraction of all steps spent warming the learning rate up linearly
    step_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of all steps (step)
    step_gamma: float = 0.1
    grad_clip: float | None = None
    max_steps: int | None = None  # stop early after this many optimizer steps (quick runs)
    select_best: bool = True  # keep the epoch with the best validation score
    eval_batch_size: int = 256
    adversarial: AdversarialConfig | None = None


# Defaults per model family: SGD as in the CV papers, AdamW as in the BERT papers. CNN: the CVPR'21 fine-tuning
# lr 0.1 at batch 128, linearly scaled to batch 64 (more steps on the small subsets CPUs afford). At lr 0.01 a
# 3-epoch fine-tune on 2,000 images left ResNet-20 → Fashion-MNIST at 47% test accuracy; at 0.05 / 64, 82%.
FAMILY_DEFAULTS = {
    "cnn": dict(batch_size=64, optimizer="sgd", lr=0.05, weight_decay=5e-4, lr_schedule="cosine"),
    "bert": dict(batch_size=32, optimizer="adamw", lr=2e-5, weight_decay=0.0, lr_schedule="linear"),
}


def resolve_train(cfg: TrainConfig, family: str) -> TrainConfig:
    """Fill ``None`` fields from the model family's defaults."""
    defaults = FAMILY_DEFAULTS["bert" if family == "bert" else "cnn"]
    filled = {k: (v if getattr(cfg, k) is None else getattr(cfg, k)) for k, v in defaults.items()}
    out = dataclasses.replace(cfg, **filled)
    _check_choice("train.optimizer", out.optimizer, OPTIMIZERS)
    _check_choice("train.lr_schedule", out.lr_schedule, LR_SCHEDULES)
    if out.epochs < 1:
        raise TicketsError(f"train.epochs must be at least 1, got {out.epochs}: pass --epochs N")
    if not 0.0 <= out.warmup < 1.0:
        raise TicketsError(f"train.warmup must be a fraction in [0, 1), got {out.warmup}")
    if out.adversarial is not None:
        out = dataclasses.replace(out, adversarial=resolve_attack(out.adversarial, "train.adversarial"))
    return out


@dataclass
class ScheduleConfig:
    """Sparsity levels: explicit ``sparsities``, or ``levels`` of a geometric / linear schedule at ``rate``."""

    kind: str = "geometric"  # geometric | linear | explicit
    rate: float = 0.2
    levels: int = 6
    sparsities: list[float] | None = None


@dataclass
class FindConfig:
    """``tickets find``: draw tickets on a source task."""

    model: str = ""
    task: str = ""
    method: str = "imp"
    prunable: str | None = None  # preset or "preset,include=…,exclude=…"; None: the model's default preset
    scope: str = "global"
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    rewind: str = "theta0"  # theta0 | step:K | init
    head: str = "fresh"
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    robust_eval: RobustEvalConfig | None = None  # also report robust accuracy per level (not hashed when None)


@dataclass
class TransferConfig:
    """``tickets transfer``: fine-tune θ0 under a ticket's mask (or dense) on a target task."""

    model: str = ""
    task: str = ""
    ticket: str | None = None  # path; None: the dense baseline
    init: str = "ticket"  # ticket (θ0 unless the ticket carries its own weights) | theta0 | reinit
    reverse: bool = False  # use the ticket's complement (within each tensor's prunable set)
    head: str = "fresh"
    seed: int = 0
    save_weights: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    robust_eval: RobustEvalConfig | None = None  # also report robust accuracy (not hashed when None)


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise TicketsError(f"{key} must be one of {', '.join(choices)}, got {value!r}")


def validate_find(cfg: FindConfig) -> None:
    if not cfg.model or not cfg.task:
        raise TicketsError("find needs a model and a task: pass --model M --task T (or set them in --config)")
    _check_choice("method", cfg.method, METHODS)
    _check_choice("scope", cfg.scope, SCOPES)
    _check_choice("head", cfg.head, HEAD_POLICIES)
    _check_choice("schedule.kind", cfg.schedule.kind, ("geometric", "linear", "explicit"))
    if not (cfg.rewind in ("theta0", "init") or (cfg.rewind.startswith("step:") and cfg.rewind[5:].isdigit())):
        raise TicketsError(f"rewind must be theta0, init or step:K (K an integer step), got {cfg.rewind!r}")


def to_dict(obj: Any) -> Any:
    """Dataclass → plain dict (recursively), the form written to config.yaml and hashed."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types with a clear message."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TicketsError(f"{where} must be a mapping of keys to values, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise TicketsError(
                f"unknown key {key!r} in {where}: valid keys are {', '.join(sorted(names))}"
            )
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check ``value`` against a type hint, converting ints to floats and nested dicts to dataclasses."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except TicketsError as exc:
                errors.append(str(exc))
        raise TicketsError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise TicketsError(f"{where} must be a list, got {value!r}")
        return [_coerce(args[0], v, where) for v in value] if args else list(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TicketsError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TicketsError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise TicketsError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise TicketsError(f"{where} must be a string, got {value!r}")
        return value
    return value


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping safely (``yaml.safe_load``)."""
    p = Path(path)
    if not p.is_file():
        raise TicketsError(f"config file {str(p)!r} not found: check the --config path")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise TicketsError(f"config file {p}{line} is not valid YAML: fix the syntax") from None
    return data or {}


def merge(base: dict, overrides: dict) -> dict:
    """Nested dict merge; ``overrides`` wins. Used for YAML file + CLI flags."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
