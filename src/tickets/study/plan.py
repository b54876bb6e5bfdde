"""A checked experiment → jobs: ``plan(exp, out)`` lists every find, transfer and dense job with the run directory
it will use and its status (done / partial / todo), without loading any model or data.

Run directories are predicted by the verbs' own ``resolved_config`` functions fed registry facts (a model's
preset, family and recipe; a task's canonical name), so ``tickets run --dry-run`` and a real run agree; a transfer
waits for its source ticket, whose checksum names it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tickets.config import DataConfig, FindConfig, TrainConfig, TransferConfig, from_dict, to_dict, validate_find
from tickets.errors import TicketsError
from tickets.runs import RunLayout, config_hash
from tickets.study.spec import SETTINGS, STATUSES, Experiment, FindBlock, _merge_settings

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
        """One line naming the job for progress lines and ``progress.jsonl``; jobs that differ only in adversarial
        training or the pattern read differently ("dense … adv-ft", "find imp channel robust …")."""
        frac = f" {self.fraction:g} data" if self.fraction != 1.0 else ""
        adversarial = getattr(getattr(self.config, "train", None), "adversarial", None) is not None
        if self.kind == "find":
            pattern = getattr(self.config, "pattern", None)
            kind = " ".join([self.method or ""] + ([pattern] if pattern and pattern != "unstructured" else [])
                            + (["robust"] if adversarial else []))
            return f"find {kind} {self.model} {self.task} seed {self.seed}"
        frac += " adv-ft" if adversarial else ""
        if self.kind == "dense":
            return f"dense {self.model} {self.task} seed {self.seed}{frac}"
        drawn = self.source_job.seed if self.source_job is not None else self.seed
        ticket = f" (ticket seed {drawn})" if drawn != self.seed else ""
        return (f"transfer {self.method} ticket {self.source}→{self.task} level {self.level} {self.model} "
                f"seed {self.seed}{ticket}{frac}")

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


def _ticket_level(method: str, position: int) -> int:
    """The run level holding schedule position ``position``: IMP numbers its dense start level 0, so position i
    is level i; one-shot methods start at level 0."""
    from tickets.methods import get_method

    return position if get_method(method).dense_start else position - 1


class Expander:
    """Experiment → jobs. Knows each model's default prunable preset and each task's training-split size."""

    def __init__(self, exp: Experiment, *, data_root=None, model_root=None):
        self.exp = exp
        self.data_root = data_root
        self.model_root = model_root
        self._presets: dict[str, str] = {}
        self._sizes: dict[tuple, int] = {}
        self._skeletons: dict[str, Any] = {}
        self._structures: set[tuple] = set()

    # -- helpers -----------------------------------------------------------------------------------------------
    def preset(self, model: str) -> str:
        """The model's default prunable preset: from the registry, else built once without weights."""
        if model not in self._presets:
            from tickets.models import MODELS

            preset = MODELS.meta(model).get("preset")
            if preset is None:
                preset = self.skeleton(model).prunable_preset
            self._presets[model] = preset
        return self._presets[model]

    def skeleton(self, model: str) -> Any:
        """The model built without weights (``load_model(pretrained=False)``), once per model."""
        from tickets.models import load_model

        if model not in self._skeletons:
            self._skeletons[model] = load_model(model, model_root=self.model_root, pretrained=False)
        return self._skeletons[model]

    def check_structure(self, job: Job) -> None:
        """A find job's prunable set and pattern must fit its model: checked now on the model built without weights
        (once per model × prunable set × pattern), so a mistake is one line at the block's line before anything
        runs, not a failed job after the dense baselines trained (``pattern: head`` on a CNN, ``prunable: bert``
        on a CNN)."""
        from tickets.masks import PrunableSet
        from tickets.patterns import get_pattern

        cfg = job.config
        key = (cfg.model, cfg.prunable, cfg.pattern)
        if key in self._structures:
            return
        self._structures.add(key)
        try:
            spec = self.skeleton(cfg.model)
        except TicketsError:  # not buildable here yet (an hf: folder not downloaded): the job reports it when it runs
            return
        try:
            names = PrunableSet.parse(cfg.prunable or spec.prunable_preset).resolve(spec.module)
            heads = tuple(h + "." for h in spec.head)
            get_pattern(cfg.pattern).setup(spec.module, [n for n in names if not n.startswith(heads)], spec)
        except TicketsError as exc:
            doc = self.exp.located
            where = next((w for w in (job.path + ("pattern",), job.path + ("prunable",), ("pattern",),
                                      ("prunable",)) if w in doc.lines), job.path)
            raise doc.error(where, f"{cfg.model}: {exc}") from None

    def train_split_size(self, model: str, task: str, data: DataConfig, seed: int) -> int:
        """Examples in the task's training split before any subset (needed for fractions without train_size)."""
        key = (model, task)
        if key not in self._sizes:
            from tickets.models import load_model
            from tickets.tasks import load_task, train_split_size

            cheap = train_split_size(task, self.data_root)
            if cheap is not None:
                self._sizes[key] = cheap
                return cheap
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
        cfg = from_dict(FindConfig, {**s, "model": model, "task": task, "method": method, "seed": seed}, "find")
        try:
            validate_find(cfg)
        except TicketsError as exc:
            raise self.exp.located.error(block.path, str(exc)) from None
        return cfg

    def transfer_config(self, settings: dict, model: str, task: str, seed: int, fraction: float,
                        init: str = "ticket") -> TransferConfig:
        from tickets.config import RobustEvalConfig

        robust = settings.get("robust_eval")
        return TransferConfig(
            model=model, task=task, seed=seed, init=init, head=settings.get("head", "fresh"),
            train=from_dict(TrainConfig, settings.get("train") or {}, "train"),
            data=self._data(settings, model, task, fraction, seed), weights=settings.get("weights"),
            robust_eval=None if robust is None else from_dict(RobustEvalConfig, robust, "robust_eval"),
        )

    # -- expansion ---------------------------------------------------------------------------------------------
    def jobs(self) -> list[Job]:
        exp = self.exp
        finds: dict[str, Job] = {}
        by_source: dict[tuple, list[Job]] = {}

        def add_find(job: Job) -> Job:
            if job.key not in finds:
                self.check_structure(job)
                finds[job.key] = job
                by_source.setdefault((job.model, job.task, job.method, job.seed), []).append(job)
            return finds[job.key]

        for block in exp.finds:
            for model in exp.models:
                for task in block.tasks:
                    for method in block.methods:
                        for seed in block.seeds:
                            add_find(Job("find", model, task, seed, method=method, path=block.path,
                                         config=self.find_config(block, model, task, method, seed)))
        # transfer sources not declared in a find block are drawn with the shared settings
        shared = FindBlock([], [], _merge_settings({}, {k: exp.located.data[k] for k in SETTINGS
                                                        if k in exp.located.data}), ())
        transfers: dict[str, Job] = {}
        dense: dict[str, Job] = {}
        dense_wanted: list[tuple[dict, str, str, float, int, tuple]] = []
        for block in exp.transfers:
            for model in exp.models:
                for source in block.sources:
                    for method in block.methods:
                        for seed in block.seeds:
                            drawn = block.ticket_seed if block.ticket_seed is not None else seed
                            key = (model, source, method, drawn)
                            if key not in by_source:
                                block_shared = dataclasses.replace(shared, path=block.path)
                                add_find(Job("find", model, source, drawn, method=method, path=block.path,
                                             config=self.find_config(block_shared, model, source, method, drawn)))
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
        for job in [*finds.values(), *transfers.values(), *dense.values()]:
            self._check_train_size(job)
        # seed-major order: every job of the first seed before the second, so a cut-short study has whole seeds;
        # within a seed: dense baselines, then finds, then the transfers that need their tickets
        phase = {"dense": 0, "find": 1, "transfer": 2}
        ordered = list(dense.values()) + list(finds.values()) + list(transfers.values())
        seeds = sorted({j.seed for j in ordered})
        ordered.sort(key=lambda j: (seeds.index(j.seed), phase[j.kind]))
        return ordered

    def _check_train_size(self, job: Job) -> None:
        """A ``train_size`` larger than the task's training split is an error at the block's line, found now."""
        from tickets.tasks import train_split_size

        wanted = job.config.data.train_size
        if wanted is None:
            return
        key = ("size", job.task)
        if key not in self._sizes:
            self._sizes[key] = train_split_size(job.task, self.data_root)
        have = self._sizes[key]
        if have is not None and wanted > have:
            doc = self.exp.located
            where = job.path + ("data", "train_size")
            if where not in doc.lines:
                where = ("data", "train_size")
            raise doc.error(where, f"train_size {wanted} is more than the {have} training examples of {job.task}: "
                                   "lower it")

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
            ticket = RunLayout(src.run).ticket(_ticket_level(job.method, job.level))
            if not ticket.exists():
                job.run, job.status, job.note = None, "todo", "waits for its ticket"
                return
            job.config.ticket = str(ticket)
        job.run = out / f"transfer-{config_hash(self.resolved_transfer(job.config))}"
        self._status(job)

    def _status(self, job: Job) -> None:
        n = len(_find_levels(job.config)) if job.kind == "find" else 1
        layout = RunLayout(job.run)
        done = sum(layout.done(i).exists() for i in range(n))
        job.status = "done" if done == n else ("partial" if job.run.exists() else "todo")
        job.note = f"{done}/{n} levels" if job.status == "partial" and n > 1 else ""

    def resolved_find(self, cfg: FindConfig) -> dict:
        """``find.resolved_config`` fed registry facts instead of a loaded model and data."""
        from tickets.verbs.find import planned_config

        return planned_config(cfg, preset=self.preset(cfg.model))

    def resolved_transfer(self, cfg: TransferConfig) -> dict:
        """``transfer.resolved_config``, with the ticket read from its file and no model or data loaded."""
        from tickets.models import model_family, model_recipe, planned_model_variant
        from tickets.tasks import canonical_task
        from tickets.ticket import load_ticket
        from tickets.verbs.transfer import resolved_config

        ticket = load_ticket(cfg.ticket) if cfg.ticket is not None else None
        return resolved_config(cfg, cfg.model, canonical_task(cfg.task), model_family(cfg.model), ticket,
                               model_recipe(cfg.model), planned_model_variant(cfg.model))


def _same_training(find_cfg: FindConfig, transfer_cfg: TransferConfig) -> bool:
    """True when a transfer onto the ticket's own task would just repeat the find run's level."""
    return (to_dict(find_cfg.train) == to_dict(transfer_cfg.train) and to_dict(find_cfg.data) == to_dict(
        transfer_cfg.data) and find_cfg.head == transfer_cfg.head and find_cfg.seed == transfer_cfg.seed
        and transfer_cfg.init == "ticket")




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
