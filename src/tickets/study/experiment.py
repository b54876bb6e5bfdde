"""`tickets run EXPERIMENT.yaml`: one file declares a study; it expands into find, transfer and dense jobs.

A study is models × source tasks × methods × seeds (find jobs: tickets drawn level by level), plus transfers of
those tickets to target tasks at each sparsity level and fraction of the training data, plus the dense baselines
every "matching" figure is measured against (one per model × target task × seed × fraction, implied). The schema
is documented in docs/experiments.md.

Every job goes through the Python API (``find_tickets`` / ``transfer``), so runs are named by the hash of their
resolved config: a job somebody already ran (same settings, same ``--out``) is reused, and a killed study resumes
where it stopped. ``--dry-run`` predicts each job's run directory *without loading any data* (the resolved config
needs only the model's default prunable preset and the ticket file's checksum) and reports done / partial / todo.

The study's own bookkeeping lives in ``OUT/study-<name>/``: ``experiment.yaml`` (the file as given), ``jobs.json``
(every job, its axes, run directory and status) and ``progress.jsonl`` (one line per job run, with wall and CPU
seconds). ``tickets report OUT/study-<name>`` turns it into report.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from tickets.config import (
    METHODS,
    FindConfig,
    ScheduleConfig,
    TrainConfig,
    TransferConfig,
    from_dict,
    merge,
    resolve_train,
    to_dict,
    validate_find,
)
from tickets.errors import TicketsError
from tickets.runs import atomic_write_text, config_hash, write_json
from tickets.tasks.base import DataConfig

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
    "find": "list of find blocks: {tasks, methods, [schedule, train, data, prunable, scope, rewind, head]}",
    "transfer": "list of transfer blocks: {from, to, methods, [levels, fractions, train, data, head]}",
    "dense": "true (default): dense baselines per model × target × seed × fraction; false: none",
}
FIND_KEYS = ("tasks", "methods", "schedule", "train", "data", "prunable", "scope", "rewind", "head")
TRANSFER_KEYS = ("from", "to", "methods", "levels", "fractions", "train", "data", "head")
TEXT_MODEL_PREFIXES = ("hf:",)
# a run whose log.jsonl changed this recently is taken to be running in another process
ACTIVE_SECONDS = int(os.environ.get("TICKETS_ACTIVE_SECONDS", "600"))


# ----------------------------------------------------------------------------------------------------------------
# reading the file: YAML with the line of every key
# ----------------------------------------------------------------------------------------------------------------
class Located:
    """A parsed YAML document plus the line of every key / list item, addressed by path tuples."""

    def __init__(self, path: Path):
        self.path = path
        if not path.is_file():
            raise TicketsError(f"experiment file {str(path)!r} not found: check the path")
        text = path.read_text()
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            problem = getattr(exc, "problem", None) or "syntax error"
            raise TicketsError(f"{where}: not valid YAML ({problem}): fix the syntax") from None
        self.lines: dict[tuple, int] = {}
        if node is not None:
            self._walk(node, ())
        if self.data is None:
            self.data = {}

    def _walk(self, node: yaml.Node, path: tuple) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, value_node in node.value:
                key = key_node.value
                if key in seen:
                    raise TicketsError(f"{self.path}:{key_node.start_mark.line + 1}: key {key!r} appears twice: "
                                       "keep one")
                seen.add(key)
                self.lines[path + (key,)] = key_node.start_mark.line + 1
                self._walk(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, path + (i,))

    def line(self, path: tuple) -> int:
        """The line of ``path``, or of its nearest ancestor the file spells out."""
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: tuple, message: str) -> TicketsError:
        return TicketsError(f"{self.path}:{self.line(path)}: {message}")


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


@dataclass
class TransferBlock:
    sources: list[str]
    targets: list[str]
    methods: list[str]
    levels: list[int] | None  # schedule positions, 1 = first sparsity; None = all
    fractions: list[float]
    settings: dict  # train, data, head
    path: tuple


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
    located: Located = field(repr=False)


def _list(doc: Located, value: Any, path: tuple, kind: type, what: str, *, allow_empty: bool = False) -> list:
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


def _check_keys(doc: Located, mapping: Any, path: tuple, valid: Any, what: str) -> dict:
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise doc.error(path, f"{_where(path)} must be a mapping of keys to values ({what}), got {mapping!r}")
    for key in mapping:
        if key not in valid:
            raise doc.error(path + (key,), f"unknown key {key!r} in {_where(path)}: valid keys are "
                                           f"{', '.join(sorted(valid))}")
    return mapping


def _check_dataclass(doc: Located, mapping: Any, path: tuple, cls: type) -> None:
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


def canonical_task(name: str) -> str:
    """The task name a loaded task reports (``glue/SST-2`` → ``glue/sst2``), without loading anything."""
    if name.startswith("glue/"):
        from tickets.tasks.glue import glue_key

        return f"glue/{glue_key(name)}"
    return name


def is_text_model(name: str) -> bool:
    from tickets.models import TEXT_MODELS

    return name in TEXT_MODELS or name.startswith(TEXT_MODEL_PREFIXES)


def is_text_task(name: str) -> bool:
    from tickets.tasks import TEXT_PREFIXES

    return name.startswith(TEXT_PREFIXES)


def _check_model(doc: Located, name: str, path: tuple) -> None:
    from tickets.models import model_names

    known = [m for m in model_names() if not m.startswith("hf:<")]
    if name in known or (name.startswith("hf:") and len(name) > 3):
        return
    raise doc.error(path, f"unknown model {name!r}: choose one of {', '.join(known)} or hf:<id-or-path> "
                          "(see `tickets models`)")


def _check_task(doc: Located, name: str, path: tuple, model_names: list[str]) -> None:
    from tickets.tasks import task_names
    from tickets.tasks.images import IMAGE_TASKS

    if name in IMAGE_TASKS:
        kind = "image"
    elif name.startswith("glue/"):
        try:
            canonical_task(name)
        except TicketsError as exc:
            raise doc.error(path, str(exc)) from None
        kind = "text"
    elif name.startswith("mlm/"):
        from tickets.tasks.mlm import MLM_CORPORA

        ref = name[4:]
        if not ref or (ref not in MLM_CORPORA and not Path(ref).expanduser().exists()):
            raise doc.error(path, f"unknown MLM corpus {name!r}: choose one of "
                                  f"{', '.join('mlm/' + c for c in MLM_CORPORA)} or mlm/<path-to-text-file>")
        kind = "text"
    else:
        names = [t for t in task_names() if "<" not in t]
        raise doc.error(path, f"unknown task {name!r}: choose one of {', '.join(names)}, glue/<task> or "
                              "mlm/<corpus> (see `tickets tasks`)")
    for model in model_names:
        if (kind == "text") != is_text_model(model):
            raise doc.error(path, f"task {name!r} is a {kind} task but model {model!r} is "
                                  f"{'a text' if is_text_model(model) else 'an image'} model: put them in separate "
                                  "experiment files")


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read and validate an experiment file; every problem is one TicketsError naming the file and line."""
    doc = Located(Path(path))
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
    seeds = _list(doc, data.get("seeds", [0]), ("seeds",), int, "integer seed")
    for i, s in enumerate(seeds):
        if s < 0:
            raise doc.error(("seeds", i), f"seeds must be >= 0, got {s}")
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

    shared = {k: data[k] for k in ("schedule", "train", "data", "prunable", "scope", "rewind", "head") if k in data}
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
        own = {k: block[k] for k in FIND_KEYS if k in block and k not in ("tasks", "methods")}
        _check_settings(doc, own, p)
        finds.append(FindBlock(tasks, methods, _merge_settings(shared, own), p))

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
        own = {k: block[k] for k in ("train", "data", "head") if k in block}
        _check_settings(doc, own, p)
        base = {k: shared[k] for k in ("train", "data", "head") if k in shared}
        transfers.append(TransferBlock(lists["from"], lists["to"], methods, levels, fractions,
                                       _merge_settings(base, own), p))
    if not finds and not transfers:
        raise doc.error((), "the experiment has neither find nor transfer blocks: add `find:` (see "
                            "docs/experiments.md)")
    return Experiment(name, description, Path(path), out, models, seeds, finds, transfers, dense, doc)


def _methods(doc: Located, value: Any, path: tuple) -> list[str]:
    methods = _list(doc, value, path, str, "method")
    for j, m in enumerate(methods):
        if m not in METHODS:
            raise doc.error(path + (j,) if isinstance(value, list) else path,
                            f"unknown method {m!r}: choose one of {', '.join(METHODS)}")
    return methods


def _fractions(doc: Located, value: Any, path: tuple) -> list[float]:
    fractions = _list(doc, value, path, float, "fraction of the training data")
    for j, f in enumerate(fractions):
        if not 0.0 < f <= 1.0:
            raise doc.error(path + (j,) if isinstance(value, list) else path,
                            f"fractions are in (0, 1] (0.1 = 10% of the training data), got {f}")
    return fractions


def _check_settings(doc: Located, settings: dict, path: tuple) -> None:
    """schedule / train / data / prunable / scope / rewind / head, each checked at its own line."""
    from tickets.config import HEAD_POLICIES, SCOPES
    from tickets.masks import PrunableSet
    from tickets.pruning import Schedule

    for key, cls in (("schedule", ScheduleConfig), ("train", TrainConfig), ("data", DataConfig)):
        if key in settings:
            _check_dataclass(doc, settings[key], path + (key,), cls)
    if "schedule" in settings:
        s = from_dict(ScheduleConfig, settings["schedule"], "schedule")
        try:
            Schedule(kind=s.kind, rate=s.rate, levels=s.levels, sparsities=tuple(s.sparsities or ()))
        except TicketsError as exc:
            raise doc.error(path + ("schedule",), str(exc)) from None
    if "train" in settings:
        try:
            resolve_train(from_dict(TrainConfig, settings["train"], "train"), "cnn")
        except TicketsError as exc:
            raise doc.error(path + ("train",), str(exc)) from None
    for key, choices in (("scope", SCOPES), ("head", HEAD_POLICIES)):
        if key in settings and settings[key] not in choices:
            raise doc.error(path + (key,), f"{key} must be one of {', '.join(choices)}, got {settings[key]!r}")
    if "rewind" in settings:
        r = settings["rewind"]
        if not isinstance(r, str) or not (r in ("theta0", "init") or (r.startswith("step:") and r[5:].isdigit())):
            raise doc.error(path + ("rewind",), f"rewind must be theta0, init or step:K, got {r!r}")
    if settings.get("prunable") is not None:
        if not isinstance(settings["prunable"], str):
            raise doc.error(path + ("prunable",), "prunable is a preset string such as cnn or 'all,exclude=fc\\..*'")
        try:
            PrunableSet.parse(settings["prunable"])
        except TicketsError as exc:
            raise doc.error(path + ("prunable",), str(exc)) from None


def _merge_settings(base: dict, own: dict) -> dict:
    out = dict(base)
    for key, value in own.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ----------------------------------------------------------------------------------------------------------------
# jobs
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Job:
    """One run: a find (all levels of one model × task × method × seed), a ticket transfer, or a dense baseline."""

    kind: str  # find | transfer | dense
    model: str
    task: str  # find: the source task; transfer / dense: the target task
    seed: int
    fraction: float = 1.0
    method: str | None = None  # find method, or the transferred ticket's method
    source: str | None = None  # transfer: the task the ticket was drawn on
    level: int | None = None  # transfer: schedule position of the ticket (1 = first sparsity)
    config: Any = None  # FindConfig | TransferConfig (ticket path filled in when the source is known)
    source_job: "Job | None" = None
    path: tuple = ()  # the block in the experiment file
    run: Path | None = None  # predicted run directory (None while the source ticket does not exist)
    status: str = "todo"
    note: str = ""
    actual: bool = False  # ``run`` is where the job really ran (not a prediction)

    @property
    def key(self) -> str:
        cfg = to_dict(self.config)
        if self.kind != "find":
            cfg["ticket"] = None if self.source_job is None else [self.source_job.key, self.level]
        return config_hash({"kind": self.kind, "config": cfg})

    def label(self) -> str:
        frac = f" {self.fraction:g} data" if self.fraction != 1.0 else ""
        if self.kind == "find":
            return f"find {self.method} {self.model} {self.task} seed {self.seed}"
        if self.kind == "dense":
            return f"dense {self.model} {self.task} seed {self.seed}{frac}"
        return (f"transfer {self.method} ticket {self.source}→{self.task} level {self.level} {self.model} "
                f"seed {self.seed}{frac}")

    @property
    def units(self) -> int:
        """Fine-tunes this job costs when nothing is done yet (for progress and ETA)."""
        if self.kind != "find":
            return 1
        n = len(_find_levels(self.config))
        return 2 * n + 1 if self.method == "reinit" else n

    def to_record(self, out: Path) -> dict:
        return {
            "key": self.key, "kind": self.kind, "model": self.model, "task": self.task, "seed": self.seed,
            "fraction": self.fraction, "method": self.method, "source": self.source, "level": self.level,
            "run": None if self.run is None else os.path.relpath(self.run, out),
            "status": self.status, "note": self.note, "line": None,
        }


def _find_levels(cfg: FindConfig) -> list[float]:
    from tickets.verbs.find import sparsity_levels

    return sparsity_levels(cfg)


def _level_dir(method: str, position: int) -> str:
    """IMP numbers its dense start level 0, so schedule position i is level i; the one-shot methods start at 0."""
    return f"level-{position if method == 'imp' else position - 1:02d}"


class Expander:
    """Experiment → jobs. Knows each model's default prunable preset and each task's training-split size."""

    def __init__(self, exp: Experiment, *, data_root=None, model_root=None):
        self.exp = exp
        self.data_root = data_root
        self.model_root = model_root
        self._presets: dict[str, str] = {}
        self._sizes: dict[tuple, int] = {}

    # -- helpers -----------------------------------------------------------------------------------------------
    def preset(self, model: str) -> str:
        """The model's default prunable preset (text models: always "bert"; others: built without weights)."""
        if model not in self._presets:
            if is_text_model(model):
                self._presets[model] = "bert"
            else:
                from tickets.models import load_model

                self._presets[model] = load_model(model, model_root=self.model_root, pretrained=False).prunable_preset
        return self._presets[model]

    def train_split_size(self, model: str, task: str, data: DataConfig, seed: int) -> int:
        """Examples in the task's training split before any subset (needed for fractions without train_size)."""
        key = (model, task)
        if key not in self._sizes:
            from tickets.models import load_model
            from tickets.tasks import load_task

            spec = load_model(model, model_root=self.model_root, pretrained=False)
            full = dataclasses.replace(data, train_size=None, augment=False)
            t = load_task(task, model=spec, data_root=self.data_root, data=full, seed=seed)
            self._sizes[key] = len(t.train) + len(t.val)
        return self._sizes[key]

    def _data(self, settings: dict, model: str, task: str, fraction: float, seed: int) -> DataConfig:
        data = from_dict(DataConfig, settings.get("data") or {}, "data")
        if fraction == 1.0:
            return data
        n = data.train_size if data.train_size is not None else self.train_split_size(model, task, data, seed)
        return dataclasses.replace(data, train_size=max(1, int(round(fraction * n))))

    def find_config(self, block: FindBlock, model: str, task: str, method: str, seed: int) -> FindConfig:
        s = block.settings
        cfg = FindConfig(
            model=model, task=task, method=method, seed=seed,
            prunable=s.get("prunable"), scope=s.get("scope", "global"), rewind=s.get("rewind", "theta0"),
            head=s.get("head", "fresh"),
            schedule=from_dict(ScheduleConfig, s.get("schedule") or {}, "schedule"),
            train=from_dict(TrainConfig, s.get("train") or {}, "train"),
            data=from_dict(DataConfig, s.get("data") or {}, "data"),
        )
        try:
            validate_find(cfg)
        except TicketsError as exc:
            raise self.exp.located.error(block.path, str(exc)) from None
        return cfg

    def transfer_config(self, settings: dict, model: str, task: str, seed: int, fraction: float,
                        init: str = "ticket") -> TransferConfig:
        return TransferConfig(
            model=model, task=task, seed=seed, init=init, head=settings.get("head", "fresh"),
            train=from_dict(TrainConfig, settings.get("train") or {}, "train"),
            data=self._data(settings, model, task, fraction, seed),
        )

    # -- expansion ---------------------------------------------------------------------------------------------
    def jobs(self) -> list[Job]:
        exp = self.exp
        finds: dict[str, Job] = {}
        by_source: dict[tuple, list[Job]] = {}

        def add_find(job: Job) -> Job:
            if job.key not in finds:
                finds[job.key] = job
                by_source.setdefault((job.model, job.task, job.method, job.seed), []).append(job)
            return finds[job.key]

        for block in exp.finds:
            for model in exp.models:
                for task in block.tasks:
                    for method in block.methods:
                        for seed in exp.seeds:
                            add_find(Job("find", model, task, seed, method=method, path=block.path,
                                         config=self.find_config(block, model, task, method, seed)))
        # transfer sources not declared in a find block are drawn with the shared settings
        shared = FindBlock([], [], _merge_settings({}, {k: exp.located.data[k] for k in
                           ("schedule", "train", "data", "prunable", "scope", "rewind", "head")
                           if k in exp.located.data}), ())
        transfers: dict[str, Job] = {}
        dense: dict[str, Job] = {}
        dense_wanted: list[tuple[dict, str, str, float, int, tuple]] = []
        for block in exp.transfers:
            for model in exp.models:
                for source in block.sources:
                    for method in block.methods:
                        for seed in exp.seeds:
                            key = (model, source, method, seed)
                            if key not in by_source:
                                block_shared = dataclasses.replace(shared, path=block.path)
                                add_find(Job("find", model, source, seed, method=method, path=block.path,
                                             config=self.find_config(block_shared, model, source, method, seed)))
                            src = by_source[key]
                            if len(src) > 1:
                                raise exp.located.error(block.path, f"{source} {method} tickets are drawn with "
                                                        f"{len(src)} different settings in find blocks: transfer "
                                                        "from one of them only (split the study)")
                            src = src[0]
                            n = len(_find_levels(src.config)) - (1 if method == "imp" else 0)
                            levels = block.levels or list(range(1, n + 1))
                            for lv in levels:
                                if lv > n:
                                    raise exp.located.error(block.path + ("levels",), f"level {lv} is beyond the "
                                                            f"{n} sparsity levels of the {source} {method} tickets")
                            for target in block.targets:
                                for fraction in block.fractions:
                                    cfg = self.transfer_config(block.settings, model, target, seed, fraction,
                                                               init="reinit" if method == "reinit" else "ticket")
                                    if (target == source and _same_training(src.config, cfg)):
                                        continue  # the find run itself is this cell of the matrix
                                    for lv in levels:
                                        job = Job("transfer", model, target, seed, fraction, method, source, lv,
                                                  dataclasses.replace(cfg), src, block.path)
                                        transfers.setdefault(job.key, job)
                                    dense_wanted.append((block.settings, model, target, fraction, seed, block.path))
        if exp.dense:
            for job in list(finds.values()):
                block = next((b for b in exp.finds if b.path == job.path), shared)
                dense_wanted.append((block.settings, job.model, job.task, 1.0, job.seed, job.path))
            for settings, model, task, fraction, seed, path in dense_wanted:
                cfg = self.transfer_config(settings, model, task, seed, fraction)
                job = Job("dense", model, task, seed, fraction, config=cfg, path=path)
                dense.setdefault(job.key, job)
        # seed-major order: every job of the first seed before the second, so a cut-short study has whole seeds;
        # within a seed: dense baselines, then finds, then the transfers that need their tickets
        phase = {"dense": 0, "find": 1, "transfer": 2}
        ordered = list(dense.values()) + list(finds.values()) + list(transfers.values())
        ordered.sort(key=lambda j: (exp.seeds.index(j.seed), phase[j.kind]))
        return ordered

    # -- run directories and status ----------------------------------------------------------------------------
    def predict(self, job: Job, out: Path) -> None:
        """Fill ``job.run`` (the run directory find_tickets / transfer will use) and ``job.status``."""
        if job.actual and job.run is not None:
            self._status(job)
            return
        if job.kind == "find":
            job.run = out / f"find-{config_hash(self.resolved_find(job.config))}"
            self._status(job)
            return
        if job.kind == "transfer":
            src = job.source_job
            if src.run is None:
                self.predict(src, out)
            ticket = src.run / _level_dir(job.method, job.level) / "ticket.safetensors"
            if not ticket.exists():
                job.run, job.status, job.note = None, "todo", "waits for its ticket"
                return
            job.config.ticket = str(ticket)
        job.run = out / f"transfer-{config_hash(self.resolved_transfer(job.config))}"
        self._status(job)

    def _status(self, job: Job) -> None:
        n = len(_find_levels(job.config)) if job.kind == "find" else 1
        done = sum((job.run / f"level-{i:02d}" / "DONE").exists() for i in range(n))
        job.status = "done" if done == n else ("partial" if job.run.exists() else "todo")
        job.note = f"{done}/{n} levels" if job.status == "partial" and n > 1 else ""

    def resolved_find(self, cfg: FindConfig) -> dict:
        """find.resolved_config, fed what it reads from a prepared model without loading model or data."""
        from types import SimpleNamespace

        from tickets.verbs.find import resolved_config
        from tickets.masks import PrunableSet

        pset = PrunableSet.parse(cfg.prunable or self.preset(cfg.model))
        family = "bert" if self.preset(cfg.model) == "bert" else "cnn"
        fake = SimpleNamespace(model_id=cfg.model, task=SimpleNamespace(name=canonical_task(cfg.task)),
                               prunable=pset, family=family)
        return resolved_config(cfg, fake)

    def resolved_transfer(self, cfg: TransferConfig) -> dict:
        """transfer.resolved_config, with the ticket read from its file and no model or data loaded."""
        from tickets.ticket import load_ticket
        from tickets.verbs.transfer import resolved_config

        family = "bert" if self.preset(cfg.model) == "bert" else "cnn"
        ticket = load_ticket(cfg.ticket) if cfg.ticket is not None else None
        return resolved_config(cfg, cfg.model, canonical_task(cfg.task), family, ticket)


def _same_training(find_cfg: FindConfig, transfer_cfg: TransferConfig) -> bool:
    """True when a transfer onto the ticket's own task would just repeat the find run's level."""
    return (to_dict(find_cfg.train) == to_dict(transfer_cfg.train) and to_dict(find_cfg.data) == to_dict(
        transfer_cfg.data) and find_cfg.head == transfer_cfg.head and find_cfg.seed == transfer_cfg.seed
        and transfer_cfg.init == "ticket")


# ----------------------------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------------------------
def study_dir(out: Path, exp: Experiment) -> Path:
    return out / f"study-{exp.name}"


def _active(run: Path | None) -> float | None:
    """Seconds since the run's log last changed, when that is recent enough to mean it is running elsewhere."""
    if run is None:
        return None
    log = run / "log.jsonl"
    if not log.exists():
        return None
    age = time.time() - log.stat().st_mtime
    return age if age < ACTIVE_SECONDS else None


@contextlib.contextmanager
def _lock(out: Path, job: Job) -> Iterator[bool]:
    """An exclusive lock per run directory, so two `tickets run` processes never train the same run at once."""
    import fcntl

    locks = out / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    fh = open(locks / f"{job.run.name if job.run else job.key}.lock", "w")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        fh.close()


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def write_jobs(sdir: Path, exp: Experiment, jobs: list[Job], out: Path) -> None:
    records = []
    for j in jobs:
        r = j.to_record(out)
        r["line"] = exp.located.line(j.path) if j.path else None
        records.append(r)
    write_json(sdir / "jobs.json", {"name": exp.name, "description": exp.description, "file": str(exp.file),
                                    "out": str(out), "models": exp.models, "seeds": exp.seeds, "jobs": records})


def plan(exp: Experiment, out: Path, *, data_root=None, model_root=None) -> tuple[Expander, list[Job]]:
    ex = Expander(exp, data_root=data_root, model_root=model_root)
    jobs = ex.jobs()
    for job in jobs:
        ex.predict(job, out)
    return ex, jobs


def format_plan(jobs: list[Job], out: Path) -> str:
    counts = {s: sum(j.status == s for j in jobs) for s in STATUSES}
    kinds = {k: sum(j.kind == k for j in jobs) for k in ("find", "transfer", "dense")}
    lines = []
    width = max(len(j.label()) for j in jobs) if jobs else 0
    for i, j in enumerate(jobs, 1):
        run = os.path.relpath(j.run, out) if j.run is not None else "-"
        note = f"  ({j.note})" if j.note else ""
        lines.append(f"{i:>4}  {j.status:<7}  {j.label():<{width}}  {run}{note}")
    lines.append(f"{len(jobs)} jobs ({kinds['find']} find, {kinds['transfer']} transfer, {kinds['dense']} dense): "
                 f"{counts['done']} done, {counts['partial']} partial, {counts['todo']} todo; runs in {out}")
    return "\n".join(lines)


def run_experiment(
    path: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    dry_run: bool = False,
    device: str = "auto",
    data_root=None,
    model_root=None,
    progress: bool = True,
    report: bool = True,
    stream=None,
) -> int:
    """Validate, expand and (unless ``dry_run``) run an experiment file. Returns 0 when every job is done."""
    stream = stream or sys.stdout
    exp = load_experiment(path)
    out_dir = Path(out or exp.out or "runs")
    ex, jobs = plan(exp, out_dir, data_root=data_root, model_root=model_root)
    if dry_run:
        print(format_plan(jobs, out_dir), file=stream)
        return 0
    sdir = study_dir(out_dir, exp)
    sdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sdir / "experiment.yaml", Path(path).read_text())
    write_jobs(sdir, exp, jobs, out_dir)

    def say(msg: str) -> None:
        print(msg, file=stream, flush=True)

    total_units = sum(j.units for j in jobs if j.status != "done")
    say(f"study {exp.name}: {len(jobs)} jobs, {sum(j.status == 'done' for j in jobs)} already done; "
        f"about {total_units} fine-tunes to run -> {sdir}")
    started = time.time()
    units_done = 0
    work_seconds = 0.0
    failed: list[tuple[Job, str]] = []
    pending = [j for j in jobs if j.status != "done"]
    index = {id(j): i for i, j in enumerate(jobs, 1)}
    while pending:
        deferred = []
        progressed = False
        for job in pending:
            ex.predict(job, out_dir)
            if job.status == "done":
                progressed = True
                continue
            if job.kind == "transfer" and job.run is None:
                src = job.source_job
                if src.status == "done" or any(f is src for f, _ in failed):
                    failed.append((job, f"its ticket ({src.label()}) was not produced"))
                else:
                    deferred.append(job)
                continue
            age = _active(job.run)
            if age is not None:
                job.note = f"running elsewhere (log changed {age:.0f}s ago)"
                deferred.append(job)
                continue
            with _lock(out_dir, job) as got:
                if not got:
                    job.note = "locked by another `tickets run`"
                    deferred.append(job)
                    continue
                say(f"[{index[id(job)]}/{len(jobs)}] {job.label()} ... ({_fmt_seconds(time.time() - started)} "
                    f"elapsed{_eta(units_done, work_seconds, total_units)})")
                t0, c0 = time.time(), time.process_time()
                try:
                    run_path = _execute(job, out_dir, device=device, data_root=data_root, model_root=model_root,
                                        progress=progress)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # one bad job must not sink a long study: report it, go on
                    msg = str(exc) if isinstance(exc, TicketsError) else f"{type(exc).__name__}: {exc}"
                    if not isinstance(exc, TicketsError):
                        traceback.print_exc(file=sys.stderr)
                    failed.append((job, msg))
                    say(f"    FAILED: {msg}")
                    _progress_log(sdir, job, out_dir, "failed", time.time() - t0, time.process_time() - c0, msg)
                    continue
                wall, cpu = time.time() - t0, time.process_time() - c0
                units_done += job.units
                work_seconds += wall
                progressed = True
                if job.run is not None and Path(run_path).resolve() != job.run.resolve():
                    say(f"    note: ran in {run_path}, predicted {job.run} (the dry-run prediction drifted)")
                job.run, job.actual = Path(run_path), True
                job.status = "done"
                _progress_log(sdir, job, out_dir, "done", wall, cpu)
                say(f"    done in {_fmt_seconds(wall)} (cpu {_fmt_seconds(cpu)}): {os.path.relpath(run_path, out_dir)}")
                write_jobs(sdir, exp, jobs, out_dir)
        pending = deferred
        if pending and not progressed:
            waiting = [j for j in pending if _active(j.run) is not None or (
                j.kind == "transfer" and _active(j.source_job.run) is not None)]
            if not waiting:
                for j in pending:
                    failed.append((j, j.note or "could not start"))
                break
            say(f"waiting for {len(waiting)} run(s) active in another process, e.g. {waiting[0].label()} ...")
            time.sleep(60)
    for job in jobs:
        ex.predict(job, out_dir)
    write_jobs(sdir, exp, jobs, out_dir)
    counts = {s: sum(j.status == s for j in jobs) for s in STATUSES}
    say(f"study {exp.name}: {counts['done']}/{len(jobs)} jobs done in {_fmt_seconds(time.time() - started)}")
    for job, msg in failed:
        say(f"  failed: {job.label()}: {msg}")
    if report:
        from tickets.study.report import write_report

        say(f"report: {write_report(sdir)}")
    return 0 if not failed and counts["done"] == len(jobs) else 1


def _eta(units_done: int, seconds: float, total: int) -> str:
    if not units_done:
        return ""
    left = (total - units_done) * seconds / units_done
    return f", ~{_fmt_seconds(max(0.0, left))} left"


def _progress_log(sdir: Path, job: Job, out: Path, status: str, wall: float, cpu: float, error: str = "") -> None:
    record = {"time": round(time.time(), 3), "job": job.label(), "kind": job.kind, "status": status,
              "run": None if job.run is None else os.path.relpath(job.run, out), "wall_seconds": round(wall, 2),
              "cpu_seconds": round(cpu, 2)}
    if error:
        record["error"] = error
    with open(sdir / "progress.jsonl", "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def _execute(job: Job, out: Path, *, device, data_root, model_root, progress: bool) -> Path:
    kwargs = dict(out=out, device=device, data_root=data_root, model_root=model_root, progress=progress)
    if job.kind == "find":
        from tickets.verbs.find import find_tickets

        return find_tickets(job.config, **kwargs).path
    from tickets.verbs.transfer import transfer

    return transfer(job.config, **kwargs).path
