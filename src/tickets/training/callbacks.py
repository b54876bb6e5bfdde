"""Callbacks: everything the fine-tuning loop does besides forward, backward and the optimizer step.

Modelled on Hugging Face's ``TrainerCallback``: a callback overrides the hooks it needs; every hook receives the
loop's ``LoopState``. The loop calls them in list order:

``on_train_begin`` → per epoch ``on_epoch_begin`` → per batch ``on_batch`` (may return a replacement batch, e.g.
adversarial examples) → loss, backward → ``before_optimizer_step`` (gradients ready: mask them) → gradient
clipping → optimizer step → ``after_optimizer_step`` (weights updated: re-apply the mask, capture a rewind point)
→ … → ``on_evaluate`` (validation metrics) → ``on_epoch_end`` (the epoch's record: logging, checkpointing) →
``on_train_end``. ``on_resume`` runs once when the loop picks up from a checkpoint.

A callback with state that must survive a resume returns it from ``state_dict`` (saved inside every epoch
checkpoint under its ``key``) and takes it back in ``load_state_dict``.

Built in here: ``MaskCallback`` (pruned weights stay exactly zero), ``AdversarialCallback`` (adversarial
training), ``RewindCapture`` (IMP rewinding to step K), ``LogCallback`` (the run's JSONL log and the library
logger), ``CheckpointCallback`` (epoch checkpoints). Logging sinks (TensorBoard, MLflow) are in
``training/sinks.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from tickets.log import get_logger
from tickets.masks import Mask
from tickets.tasks.base import Batch, Task

logger = get_logger(__name__)


@dataclass
class LoopState:
    """What the loop exposes to callbacks. ``step`` counts optimizer steps done (so ``after_optimizer_step``
    sees 1 after the first step); ``epoch`` is 0-based."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    task: Task
    cfg: Any  # the resolved tickets.config.TrainConfig (family defaults filled in)
    device: torch.device
    seed: int
    total_steps: int
    steps_per_epoch: int
    step: int = 0
    epoch: int = 0
    loss: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    best_score: float | None = None
    best_state: dict[str, torch.Tensor] | None = None  # the selected epoch's weights (CPU copies)
    desc: str = "train"

    def checkpoint(self) -> dict[str, Any]:
        """What the loop needs to continue after this epoch (callbacks add their own state)."""
        return {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "epoch": self.epoch, "step": self.step,
                "history": self.history, "best_score": self.best_score, "best_epoch": self.best_epoch}


class Callback:
    """Base class: every hook is a no-op. Override what you need (see the module docstring for the order)."""

    key: str = ""  # where ``state_dict`` goes in a checkpoint (default: the class name)

    def on_train_begin(self, state: LoopState) -> None: ...

    def on_resume(self, state: LoopState) -> None: ...

    def on_epoch_begin(self, state: LoopState) -> None: ...

    def on_batch(self, state: LoopState, batch: Batch) -> Batch:
        return batch

    def before_optimizer_step(self, state: LoopState) -> None: ...

    def after_optimizer_step(self, state: LoopState) -> None: ...

    def on_evaluate(self, state: LoopState, split: str, metrics: dict[str, float]) -> None: ...

    def on_epoch_end(self, state: LoopState, record: dict[str, Any]) -> None: ...

    def on_train_end(self, state: LoopState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    @property
    def state_key(self) -> str:
        return self.key or type(self).__name__


class MaskCallback(Callback):
    """Pruned weights stay exactly zero: the mask is applied at the start, gradients of pruned weights are zeroed
    before every optimizer step and the mask is re-applied after it (weight decay and momentum cannot revive a
    weight; NaN/Inf at a pruned position is cleared too, as ``masked_fill_`` overwrites it)."""

    key = "mask"

    def __init__(self, mask: Mask):
        self.mask = mask

    def on_train_begin(self, state: LoopState) -> None:
        self.mask = self.mask.to(state.device)
        self.mask.apply_(state.model)

    def before_optimizer_step(self, state: LoopState) -> None:
        self.mask.mask_grads_(state.model)

    def after_optimizer_step(self, state: LoopState) -> None:
        self.mask.apply_(state.model)

    def on_train_end(self, state: LoopState) -> None:
        self.mask.apply_(state.model)


class AdversarialCallback(Callback):
    """Adversarial training: each training batch is replaced by adversarial examples against the current model
    (PGD-k or FGSM-RS, see ``training/attacks.py``)."""

    key = "adversarial"

    def __init__(self, adversarial_cfg: Any, task: Task):
        from tickets.training.attacks import training_perturbation

        self.perturb = training_perturbation(adversarial_cfg, task)

    def on_batch(self, state: LoopState, batch: Batch) -> Batch:
        return self.perturb(state.model, batch)


class RewindCapture(Callback):
    """IMP rewinding to step K (Frankle et al. 2020; Renda et al. 2020): after optimizer step K of the dense
    fine-tune, ``save(state_dict)`` is called once with the model's weights, so later levels can start from them
    at step K (see ``fine_tune(start_step=...)``)."""

    key = "rewind_capture"

    def __init__(self, k: int, save: Callable[[dict[str, torch.Tensor]], None]):
        self.k = k
        self.save = save
        self.done = False

    def after_optimizer_step(self, state: LoopState) -> None:
        if state.step == self.k and not self.done:
            self.save({n: t.detach().cpu().contiguous() for n, t in state.model.state_dict().items()})
            self.done = True

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = bool(state.get("done", False))


class GradientUse(Callback):
    """Which of ``names`` ever received a non-zero gradient: a tensor the task never uses (a pooler under a
    masked-LM head) learns nothing, so ranking it by its trained weights is ranking it by θ0 (OMP, not IMP)."""

    key = "gradient_use"

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.used: set[str] = set()

    def before_optimizer_step(self, state: LoopState) -> None:
        if len(self.used) == len(self.names):
            return
        params = dict(state.model.named_parameters())
        for name in self.names:
            if name not in self.used:
                grad = params[name].grad
                if grad is not None and bool(grad.any()):
                    self.used.add(name)

    @property
    def unused(self) -> list[str]:
        return [n for n in self.names if n not in self.used]

    def state_dict(self) -> dict[str, Any]:
        return {"used": sorted(self.used)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.used = set(state.get("used", ()))


class LogCallback(Callback):
    """Each epoch's record to the run's JSONL log (``log(event, **fields)``) and one INFO line to the library
    logger (``logging.getLogger("tickets")``)."""

    key = "log"

    def __init__(self, log: Callable[..., None] | None = None):
        self.log = log

    def on_resume(self, state: LoopState) -> None:
        if self.log:
            self.log("resume", epoch=state.epoch, step=state.step)
        logger.info("  %s: resuming at epoch %d, step %d", state.desc, state.epoch + 1, state.step)

    def on_epoch_end(self, state: LoopState, record: dict[str, Any]) -> None:
        if self.log:
            self.log("epoch", **record)
        metric = state.task.primary_metric
        logger.info("  %s epoch %d/%d: loss %.4f, val %s %.4f, %.0f ex/s", state.desc, record["epoch"] + 1,
                    state.cfg.epochs, record["train_loss"], metric, record["val"].get(metric, float("nan")),
                    record["examples_per_second"])


class CheckpointCallback(Callback):
    """After every epoch but the last, ``save(checkpoint)`` with everything needed to continue exactly: the
    loop's state, every callback's ``state_dict``, and the selected epoch's weights only when they are not the
    current ones (so an improving run writes one copy of the model per epoch, not two)."""

    key = "checkpoint"

    def __init__(self, save: Callable[[dict], None], callbacks: list[Callback]):
        self.save = save
        self.callbacks = callbacks  # whose state_dict goes into the checkpoint

    def on_epoch_end(self, state: LoopState, record: dict[str, Any]) -> None:
        last = state.epoch + 1 >= state.cfg.epochs or state.step >= state.total_steps
        if last:  # the level ends right after: its metrics.json is the record, a checkpoint would be dropped
            return
        ckpt = state.checkpoint()
        ckpt["best_state"] = None if state.best_epoch == state.epoch else state.best_state
        ckpt["callbacks"] = {cb.state_key: cb.state_dict() for cb in self.callbacks if cb is not self}
        self.save(ckpt)
