"""Experiment files, read and checked: ``load_experiment(path)`` → ``Experiment`` (the declared study).

A study is models × source tasks × methods × seeds (find jobs), plus transfers of those tickets to target tasks at
each sparsity level and fraction of the training data, plus the dense baselines (``study/plan.py`` expands it into
jobs; docs/experiments.md gives the schema). Every problem is one TicketsError naming the file and line, found
before anything runs: names are checked against the registries, values against the same config dataclasses
(``tickets.config``) the CLI uses.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tickets.config import FindConfig, ScheduleConfig, TransferConfig, from_dict, merge, resolve_schedule
from tickets.errors import TicketsError
from tickets.methods import METHODS
from tickets.yamlio import YamlDocument, read_yaml

STATUSES = ("done", "partial", "todo")
TOP_KEYS = {
    "name": "study name: the report title and the study-<name> folder (default: the file name)",
    "description": "free text shown at the top of the report",
    "out": "where run directories go (default runs; --out wins)",
    "models": "model names (list)",
    "seeds": "seeds (list of integers, default [0])",
    "schedule": "sparsity levels of every find: {kind, rate, levels, sparsities}",
    "train": "fine-tuning settings shared by every job (TrainConfig keys)",
    "data": "data settings shared by every job (DataConfig keys)",
    "fractions": "default fractions of the training data for transfers (default [1.0])",
    "prunable": "prunable set for finds (default: the model's preset)",
    "scope": "global | layerwise",
    "rewind": "theta0 | step:K | init",
    "head": "fresh | pretrained",
    "pattern": "sparsity pattern of every find (see `tickets patterns`)",
    "weights": "θ0 checkpoint for every job (default: each model's own weights)",
    "robust_eval": "robust accuracy after every level / transfer: {attack, eps, alpha, steps, limit}",
    "find": "list of find blocks: {tasks, methods, [seeds, schedule, train, data, prunable, scope, rewind, head, "
            "pattern]}",
    "transfer": "list of transfer blocks: {from, to, methods, [levels, fractions, seeds, ticket_seed, train, data, "
                "head]}",
    "dense": "true (default): dense baselines per model × target × seed × fraction; false: none",
    "resources": "what one job asks of a distributed executor, per job family: {find: {cpus, gpus}, transfer: "
                 "{...}, dense: {...}} (ray, slurm; the local executor ignores it; no effect on run hashes)",
    "slurm": "Slurm settings of `--executor slurm`: {partition, time_min, gpus_per_node, cpus_per_task, mem_gb, "
             "array_parallelism, account, qos, constraint}",
}
JOB_FAMILIES = ("find", "transfer", "dense")
RESOURCE_KEYS = {"cpus": "CPU cores per job (> 0; also the job's torch threads, rounded up)",
                 "gpus": "GPUs per job (>= 0; Ray accepts fractions, Slurm whole GPUs)"}
SLURM_KEYS = {"partition": str, "time_min": int, "gpus_per_node": int, "cpus_per_task": int, "mem_gb": float,
              "array_parallelism": int, "account": str, "qos": str, "constraint": str}
SETTINGS = ("schedule", "train", "data", "prunable", "scope", "rewind", "head", "pattern", "weights", "robust_eval")
FIND_KEYS = ("tasks", "methods", "seeds", *SETTINGS)
TRANSFER_SETTINGS = ("train", "data", "head", "weights", "robust_eval")
TRANSFER_KEYS = ("from", "to", "methods", "levels", "fractions", "seeds", "ticket_seed", *TRANSFER_SETTINGS)

def _where(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "the top level"


# ----------------------------------------------------------------------------------------------------------------
# the declared study
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class FindBlock:
    tasks: list[str]
    methods: list[str]
    settings: dict  # FindConfig fields other than model/task/method/seed (schedule, train, data, prunable, …)
    path: tuple
    seeds: list[int] = field(default_factory=lambda: [0])  # the block's own seeds (default: the top-level ones)


@dataclass
class TransferBlock:
    sources: list[str]
    targets: list[str]
    methods: list[str]
    levels: list[int] | None  # schedule positions, 1 = first sparsity; None = all
    fractions: list[float]
    settings: dict  # train, data, head
    path: tuple
    seeds: list[int] = field(default_factory=lambda: [0])  # fine-tuning seeds on the target
    ticket_seed: int | None = None  # transfer the tickets drawn with this seed (default: the fine-tuning seed)


@dataclass
class Experiment:
    name: str
    description: str
    file: Path
    out: str | None
    models: list[str]
    seeds: list[int]
    finds: list[FindBlock]
    transfers: list[TransferBlock]
    dense: bool
    located: YamlDocument = field(repr=False)
    # per job family ("find", "transfer", "dense"): {"cpus": float, "gpus": float}, only the keys the file gives
    resources: dict[str, dict[str, float]] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)  # the `slurm:` mapping, checked against SLURM_KEYS


def _list(doc: YamlDocument, value: Any, path: tuple, kind: type, what: str, *, allow_empty: bool = False) -> list:
    if value is None:
        raise doc.error(path, f"{_where(path)} is empty: list at least one {what}")
    items = value if isinstance(value, list) else [value]
    if not items and not allow_empty:
        raise doc.error(path, f"{_where(path)} is an empty list: list at least one {what}")
    out = []
    for i, v in enumerate(items):
        p = path + (i,) if isinstance(value, list) else path
        ok = isinstance(v, kind) and not isinstance(v, bool) if kind is not float else (
            isinstance(v, (int, float)) and not isinstance(v, bool))
        if not ok:
            raise doc.error(p, f"{_where(path)} must list {what}s, got {v!r}")
        out.append(float(v) if kind is float else v)
    if len(set(out)) != len(out):
        dup = next(v for v in out if out.count(v) > 1)
        raise doc.error(path, f"{_where(path)} lists {dup!r} twice: keep one")
    return out


def _check_keys(doc: YamlDocument, mapping: Any, path: tuple, valid: Any, what: str) -> dict:
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise doc.error(path, f"{_where(path)} must be a mapping of keys to values ({what}), got {mapping!r}")
    for key in mapping:
        if key not in valid:
            raise doc.error(path + (key,), f"unknown key {key!r} in {_where(path)}: valid keys are "
                                           f"{', '.join(sorted(valid))}")
    return mapping


def _check_dataclass(doc: YamlDocument, mapping: Any, path: tuple, cls: type) -> None:
    """Unknown keys (recursively into nested dataclasses) reported at their line, then types via from_dict."""
    import typing

    if mapping is None:
        return
    names = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(doc, mapping, path, names, cls.__name__)
    hints = typing.get_type_hints(cls)
    for key, value in mapping.items():
        inner = [a for a in (typing.get_args(hints[key]) or (hints[key],)) if dataclasses.is_dataclass(a)]
        if inner and isinstance(value, dict):
            _check_dataclass(doc, value, path + (key,), inner[0])
        try:
            from_dict(cls, {key: value}, _where(path))
        except TicketsError as exc:
            raise doc.error(path + (key,), str(exc)) from None


def _check_model(doc: YamlDocument, name: str, path: tuple) -> None:
    from tickets.models import MODELS

    try:
        MODELS.entry(name)
    except TicketsError as exc:
        raise doc.error(path, str(exc)) from None


def _check_task(doc: YamlDocument, name: str, path: tuple, model_names: list[str]) -> None:
    from tickets.models import model_modality
    from tickets.tasks import canonical_task, task_modality

    try:
        canonical_task(name)
    except TicketsError as exc:
        raise doc.error(path, str(exc)) from None
    kind = task_modality(name)
    for model in model_names:
        other = model_modality(model)
        if kind != other:
            raise doc.error(path, f"task {name!r} is {_a(kind)} {kind} task but model {model!r} is {_a(other)} "
                                  f"{other} model: put them in separate experiment files")


def _a(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read and validate an experiment file; every problem is one TicketsError naming the file and line."""
    doc = read_yaml(path, what="experiment file")
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error((), "an experiment file is a mapping (models:, seeds:, find:, transfer:, …): see "
                            "docs/experiments.md")
    _check_keys(doc, data, (), TOP_KEYS, "experiment")
    if "models" not in data:
        raise doc.error((), "the experiment declares no models: add `models: [resnet20-cifar10]`")
    models = _list(doc, data["models"], ("models",), str, "model name")
    for i, m in enumerate(models):
        _check_model(doc, m, ("models", i) if isinstance(data["models"], list) else ("models",))
    seeds = _seeds(doc, data.get("seeds", [0]), ("seeds",))
    name = data.get("name", Path(path).stem)
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ \t"):
        raise doc.error(("name",), f"name must be a word without spaces or slashes, got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise doc.error(("description",), "description must be text")
    out = data.get("out")
    if out is not None and not isinstance(out, str):
        raise doc.error(("out",), f"out must be a directory path, got {out!r}")
    dense = data.get("dense", True)
    if not isinstance(dense, bool):
        raise doc.error(("dense",), f"dense must be true or false, got {dense!r}")

    shared = {k: data[k] for k in SETTINGS if k in data}
    _check_settings(doc, shared, ())
    default_fractions = _fractions(doc, data.get("fractions", [1.0]), ("fractions",))

    finds = []
    blocks = data.get("find") or []
    if not isinstance(blocks, list):
        raise doc.error(("find",), "find must be a list of blocks, each `- tasks: [...]  methods: [...]`")
    for i, block in enumerate(blocks):
        p = ("find", i)
        _check_keys(doc, block, p, FIND_KEYS, "find block")
        if "tasks" not in block:
            raise doc.error(p, "find block has no tasks: add `tasks: [cifar10]`")
        tasks = _list(doc, block["tasks"], p + ("tasks",), str, "task name")
        for j, t in enumerate(tasks):
            _check_task(doc, t, p + ("tasks", j) if isinstance(block["tasks"], list) else p + ("tasks",), models)
        methods = _methods(doc, block.get("methods", ["imp"]), p + ("methods",))
        own = {k: block[k] for k in FIND_KEYS if k in block and k not in ("tasks", "methods", "seeds")}
        _check_settings(doc, own, p)
        block_seeds = _seeds(doc, block["seeds"], p + ("seeds",)) if "seeds" in block else seeds
        finds.append(FindBlock(tasks, methods, _merge_settings(shared, own), p, block_seeds))

    transfers = []
    blocks = data.get("transfer") or []
    if not isinstance(blocks, list):
        raise doc.error(("transfer",), "transfer must be a list of blocks, each `- from: [...]  to: [...]`")
    for i, block in enumerate(blocks):
        p = ("transfer", i)
        _check_keys(doc, block, p, TRANSFER_KEYS, "transfer block")
        for key in ("from", "to"):
            if key not in block:
                raise doc.error(p, f"transfer block has no `{key}:` list of tasks")
        lists = {}
        for key in ("from", "to"):
            lists[key] = _list(doc, block[key], p + (key,), str, "task name")
            for j, t in enumerate(lists[key]):
                _check_task(doc, t, p + (key, j) if isinstance(block[key], list) else p + (key,), models)
        methods = _methods(doc, block.get("methods", ["imp"]), p + ("methods",))
        levels = None
        if "levels" in block:
            levels = _list(doc, block["levels"], p + ("levels",), int, "schedule position (1 = first sparsity)")
            for j, lv in enumerate(levels):
                if lv < 1:
                    raise doc.error(p + ("levels", j), f"levels are schedule positions 1, 2, …, got {lv}")
        fractions = _fractions(doc, block["fractions"], p + ("fractions",)) if "fractions" in block \
            else default_fractions
        own = {k: block[k] for k in TRANSFER_SETTINGS if k in block}
        _check_settings(doc, own, p, TransferConfig)
        base = {k: shared[k] for k in TRANSFER_SETTINGS if k in shared}
        block_seeds = _seeds(doc, block["seeds"], p + ("seeds",)) if "seeds" in block else seeds
        ticket_seed = None
        if "ticket_seed" in block:
            ticket_seed = _seeds(doc, block["ticket_seed"], p + ("ticket_seed",))[0]
        transfers.append(TransferBlock(lists["from"], lists["to"], methods, levels, fractions,
                                       _merge_settings(base, own), p, block_seeds, ticket_seed))
    if not finds and not transfers:
        raise doc.error((), "the experiment has neither find nor transfer blocks: add `find:` (see "
                            "docs/experiments.md)")
    return Experiment(name, description, Path(path), out, models, seeds, finds, transfers, dense, doc,
                      _resources(doc, data.get("resources")), _slurm(doc, data.get("slurm")))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _resources(doc: YamlDocument, value: Any) -> dict[str, dict[str, float]]:
    """``resources: {find: {cpus: 2, gpus: 1}, transfer: {cpus: 1}, dense: {...}}``, each number checked."""
    if value is None:
        return {}
    families = _check_keys(doc, value, ("resources",), JOB_FAMILIES, "job families")
    out = {}
    for family, res in families.items():
        p = ("resources", family)
        _check_keys(doc, res, p, RESOURCE_KEYS, "resources of one job")
        out[family] = {}
        for key, number in (res or {}).items():
            if not _number(number) or (number <= 0 if key == "cpus" else number < 0):
                bound = "> 0" if key == "cpus" else ">= 0"
                raise doc.error(p + (key,), f"resources.{family}.{key} must be a number {bound}, got {number!r}")
            out[family][key] = float(number)
    return out


def _slurm(doc: YamlDocument, value: Any) -> dict[str, Any]:
    """``slurm: {partition: gpu, time_min: 120, ...}``: known keys, each of its type, counts >= 1."""
    if value is None:
        return {}
    settings = _check_keys(doc, value, ("slurm",), SLURM_KEYS, "Slurm settings")
    for key, v in settings.items():
        kind = SLURM_KEYS[key]
        p = ("slurm", key)
        if kind is str:
            if not isinstance(v, str) or not v.strip():
                raise doc.error(p, f"slurm.{key} must be a non-empty name, got {v!r}")
        elif kind is int:
            low = 0 if key == "gpus_per_node" else 1
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise doc.error(p, f"slurm.{key} must be a whole number >= {low}, got {v!r}")
        elif not _number(v) or v <= 0:
            raise doc.error(p, f"slurm.{key} must be a number > 0, got {v!r}")
    return dict(settings)


def _seeds(doc: YamlDocument, value: Any, path: tuple) -> list[int]:
    seeds = _list(doc, value, path, int, "integer seed")
    for i, s in enumerate(seeds):
        if not 0 <= s <= 2**31 - 1:
            raise doc.error(path + (i,) if isinstance(value, list) else path, f"seeds must be in 0..2^31-1, got {s}")
    return seeds


def _methods(doc: YamlDocument, value: Any, path: tuple) -> list[str]:
    methods = _list(doc, value, path, str, "method")
    for j, m in enumerate(methods):
        if m not in METHODS:
            raise doc.error(path + (j,) if isinstance(value, list) else path,
                            f"unknown method {m!r}: choose one of {', '.join(METHODS.names())} "
                            "(see `tickets methods`)")
    return methods


def _fractions(doc: YamlDocument, value: Any, path: tuple) -> list[float]:
    fractions = _list(doc, value, path, float, "fraction of the training data")
    for j, f in enumerate(fractions):
        if not 0.0 < f <= 1.0:
            raise doc.error(path + (j,) if isinstance(value, list) else path,
                            f"fractions are in (0, 1] (0.1 = 10% of the training data), got {f}")
    return fractions


def _check_settings(doc: YamlDocument, settings: dict, path: tuple, cls: type = FindConfig) -> None:
    """Shared or per-block settings (keys of ``cls``: schedule, train, data, prunable, scope, rewind, head,
    pattern), each value checked at its own line exactly as ``tickets find`` / ``transfer`` check it."""
    _check_dataclass(doc, settings, path, cls)
    if "schedule" in settings:
        try:
            resolve_schedule(from_dict(ScheduleConfig, settings["schedule"], "schedule"))
        except TicketsError as exc:
            raise doc.error(path + ("schedule",), str(exc)) from None


def _merge_settings(base: dict, own: dict) -> dict:
    out = dict(base)
    for key, value in own.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


