"""``tickets pretrain``: dense training that produces θ0 on an upstream objective, as a weights file ``--weights``
reads.

The objective is the task: a supervised image task (``cifar10``), adversarially with the training loop's
adversarial mode (``--adv pgd``: PGD-k, Madry et al. 2018; ``--adv fgsm``: FGSM with a random start, the "fast"
adversarial training of Wong et al. 2020 — Double-Win's three pre-training regimes with standard training), or a
self-supervised one: ``simclr/<image set>`` or ``moco/<image set>`` (``tickets.tasks.contrastive``).

The run is one resumable level of a run directory ``<out>/pretrain-<hash>/`` (the hash over the resolved config,
``--weights`` by its sha256): ``level-00/`` holds the epoch checkpoints while training (the MoCo queue and
momentum encoder included: they are buffers of the projection head) and ``metrics.json`` at the end;
``model.safetensors`` holds the selected epoch's encoder with its head (the classifier, or the projection MLP —
without MoCo's queue and momentum encoder), written before ``DONE``. Rerunning the same command reuses a finished
run and resumes a killed one from its last epoch, bit-identical on CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from tickets.config import (PretrainConfig, SSLConfig, _check_attacks, _check_fine_tune_data, resolve_attack,
                            resolve_train, validate)
from tickets.errors import TicketsError
from tickets.fileio import atomic_write, read_json
from tickets.hparams import hash_view
from tickets.log import get_logger
from tickets.runs import RunBusy, RunDir, run_lock
from tickets.runtime import resolve_device
from tickets.training.callbacks import Callback
from tickets.verbs.level import run_level
from tickets.verbs.prepare import prepare

logger = get_logger(__name__)

__all__ = ["PretrainResult", "pretrain", "validate_pretrain", "is_contrastive", "contrastive_options"]


@dataclass
class PretrainResult:
    """A finished pre-training run: its directory, its metrics (``metrics.json``) and the weights file."""

    path: Path
    metrics: dict

    @property
    def weights(self) -> Path:
        """``<run>/model.safetensors``: pass it to ``--weights``."""
        return self.path / "model.safetensors"


def is_contrastive(task: str) -> bool:
    """Is ``task`` a self-supervised objective (``simclr/…``, ``moco/…``)?"""
    from tickets.tasks.contrastive import OBJECTIVES

    return task.partition("/")[0] in OBJECTIVES and "/" in task


def contrastive_options(ssl: SSLConfig):
    """The ``ContrastiveOptions`` an ``ssl`` block asks for."""
    from tickets.tasks.contrastive import ContrastiveOptions

    return ContrastiveOptions(**dataclasses.asdict(ssl))


def validate_pretrain(cfg: PretrainConfig) -> None:
    """Everything about a pretrain config that can be checked without loading anything; TicketsError otherwise."""
    if not cfg.model or not cfg.task:
        raise TicketsError("pretrain needs a model and an objective: pass --model M --task T (cifar10, "
                           "simclr/cifar10, moco/cifar10, ...)")
    validate(cfg, "")
    if cfg.weights is not None and cfg.init != "random":
        raise TicketsError(f"pretrain got --weights {cfg.weights} and --init {cfg.init}: give one starting point "
                           "(--weights FILE starts from that file)")
    if is_contrastive(cfg.task):
        if cfg.train.adversarial is not None or cfg.robust_eval is not None:
            raise TicketsError(f"{cfg.task} is a self-supervised objective and adversarial training / robust "
                               "evaluation apply to classification tasks: drop --adv / --robust-eval (or pre-train "
                               "on a labelled task such as cifar10)")
    elif cfg.ssl != SSLConfig():
        raise TicketsError(f"--ssl-* options apply to simclr/<set> and moco/<set> objectives, not {cfg.task!r}: "
                           "drop them")
    _check_attacks(cfg)
    _check_fine_tune_data(cfg)


def resolved_config(cfg: PretrainConfig, *, model_id: str, task: str, family: str, recipe: dict | None) -> dict:
    """The config as hashed and written to config.yaml (training defaults filled in, the weights file by its
    sha256, the ssl block only for self-supervised objectives)."""
    from tickets.verbs.find import weights_identity

    d = hash_view(cfg)
    d.update(model=model_id, task=task, train=hash_view(resolve_train(cfg.train, family, recipe)))
    if not is_contrastive(task):
        d.pop("ssl", None)
    if cfg.weights is not None:
        d["weights"] = weights_identity(cfg.weights)
    if cfg.robust_eval is not None:
        d["robust_eval"] = hash_view(resolve_attack(cfg.robust_eval, "robust_eval"))
    return d


def pretrain(
    cfg: PretrainConfig,
    *,
    out: str | Path = "runs",
    device: str | torch.device = "auto",
    data_root: str | Path | None = None,
    model_root: str | Path | None = None,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
    log_to: Sequence[str] = (),
) -> PretrainResult:
    """Train ``cfg.model`` densely on ``cfg.task`` into ``out/pretrain-<hash>/model.safetensors``; resumable.

    Starts from the model's seeded random init (``init="random"``), its shipped weights (``"pretrained"``) or
    ``cfg.weights``. ``callbacks`` join the fine-tune; ``log_to`` names logging sinks. TicketsError for bad
    settings, missing data or weights, or a run another process is writing."""
    from tickets.models import load_model
    from tickets.tasks import load_task

    validate_pretrain(cfg)
    device = resolve_device(device)
    spec = load_model(cfg.model, model_root=model_root, pretrained=cfg.init == "pretrained", weights=cfg.weights)
    if is_contrastive(cfg.task):
        from tickets.tasks.contrastive import load_contrastive_task

        task = load_contrastive_task(cfg.task, model=spec, data_root=data_root, data=cfg.data, seed=cfg.seed,
                                     options=contrastive_options(cfg.ssl))
    else:
        task = load_task(cfg.task, model=spec, data_root=data_root, data=cfg.data, seed=cfg.seed)
    prepared = prepare(spec, task, head=cfg.head, seed=cfg.seed, model_id=cfg.model)
    train = resolve_train(cfg.train, prepared.family, prepared.recipe)
    config = resolved_config(cfg, model_id=prepared.model_id, task=prepared.task.name, family=prepared.family,
                             recipe=prepared.recipe)
    run = RunDir(out, "pretrain", config)
    run.check_inputs(prepared.inputs())  # the same command on other data or weights is refused, not reused
    with run_lock(run.layout.lock) as held:
        if not held:
            raise RunBusy(f"run {run.path} is being written by another process right now: wait for it to finish "
                          "or choose another --out")
        if run.is_done(0) and run.layout.weights().is_file():
            try:
                return PretrainResult(run.path, read_json(run.layout.metrics(0)))
            except (OSError, ValueError):
                logger.warning("%s is marked done but its metrics.json is unreadable: running it again", run.path)
                run.unmark_done(0)
        run.unmark_done(0)
        run.log("run_start", kind="pretrain", task=prepared.task.name, device=str(device))
        start = "weights file" if cfg.weights else ("shipped weights" if cfg.init == "pretrained" else "random init")
        logger.info("pretrain %s on %s from its %s: %s", prepared.model_id, prepared.task.name, start, run.path)
        from tickets.verbs.find import robust_extra

        extra = {"objective": _objective(prepared.task.name, train), "init": start}
        metrics = run_level(run, 0, prepared, mask=None, start=prepared.theta0, train=train, seed=cfg.seed,
                            device=device, limit=cfg.data.limit, progress=progress, extra=extra, callbacks=callbacks,
                            log_to=log_to, evaluate_extra=robust_extra(cfg.robust_eval, device, cfg.data.limit,
                                                                       train.eval_batch_size, cfg.seed))
        _save_weights(run, prepared, extra["objective"])
        run.mark_done(0)
        run.drop_checkpoint(0)
        run.log("run_done", weights=str(run.layout.weights()))
    return PretrainResult(run.path, metrics)


def _objective(task: str, train) -> str:
    """``simclr`` / ``moco`` / ``supervised`` / ``adversarial-pgd`` / ``adversarial-fgsm``."""
    if is_contrastive(task):
        return task.partition("/")[0]
    return "supervised" if train.adversarial is None else f"adversarial-{train.adversarial.attack}"


def _save_weights(run: RunDir, prepared, objective: str) -> None:
    from safetensors.torch import save_file

    from tickets.tasks.contrastive import export_state

    state = export_state(prepared.model)  # MoCo's queue and momentum encoder are training state, not θ0
    meta = {"model": prepared.model_id, "task": prepared.task.name, "objective": objective,
            "head": ",".join(prepared.spec.head), "run": run.path.name}
    atomic_write(run.layout.weights(), lambda tmp: save_file(state, str(tmp), metadata=meta))
