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

import numpy as np
import torch
from torch import nn

from tickets.errors import TicketsError
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
    loss_weight: float = 1.0  # the factor the batch's loss is scaled by before backward (data parallel: the share)
    scaler: Any = None  # fp16 training: the GradScaler (its scale is part of every checkpoint)
    desc: str = "train"

    def checkpoint(self) -> dict[str, Any]:
        """What the loop needs to continue after this epoch (callbacks add their own state)."""
        out = {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
               "optimizer": self.optimizer.state_dict(), "epoch": self.epoch, "step": self.step,
               "history": self.history, "best_score": self.best_score, "best_epoch": self.best_epoch}
        if self.scaler is not None:
            out["scaler"] = self.scaler.state_dict()
        return out


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
    current ones (so an improving run writes one copy of the model per epoch, not two).

    The checkpoint is packed (``pack_checkpoint``): every float tensor is stored as its non-zero entries when that
    is smaller, so pruned weights, their optimizer moments and the moments of embedding rows no batch touched cost
    one bit each. ``fine_tune(resume=...)`` unpacks it and continues bit for bit; a packed checkpoint needs
    nothing but itself. Figures: ``benchmarks/checkpoint_bytes.py``."""

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
        self.save(pack_checkpoint(ckpt))


# --------------------------------------------------------------------------------------------------------------
# packed checkpoints
# --------------------------------------------------------------------------------------------------------------

CHECKPOINT_FORMAT = 2  # 1 (no "format" key): plain tensors; 2: float tensors packed as their non-zero entries
_PACKED = "__tickets_packed__"
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_MIN_PACK = 256  # smaller tensors are stored as they are


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The flat bit patterns of ``t`` as integers of the same size (CPU, logical order)."""
    return t.detach().cpu().contiguous().reshape(-1).view(_INT_VIEW[t.element_size()])


def pack_tensor(t: torch.Tensor) -> torch.Tensor | dict:
    """``t`` as its non-zero entries, or ``t`` itself when that is not smaller (or ``t`` is not a float tensor of
    at least 256 entries). Entries count as zero when all their bits are (+0.0; -0.0 is kept as a value). A
    packed tensor is a dict of plain tensors and lists, loadable with ``torch.load(weights_only=True)``:
    ``changed`` (``np.packbits`` of the non-zero entries, logical order) and ``values``. Inverse:
    ``unpack_tensor``; the round trip is exact bit for bit (NaN payloads included)."""
    if not t.is_floating_point() or t.numel() < _MIN_PACK or t.element_size() not in _INT_VIEW:
        return t
    bits = _bits(t)
    nonzero = bits != 0
    count = int(nonzero.sum())
    if (t.numel() + 7) // 8 + count * t.element_size() >= t.numel() * t.element_size():
        return t
    values = bits[nonzero.nonzero().reshape(-1)]
    return {_PACKED: 1, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
            "changed": torch.from_numpy(np.packbits(nonzero.numpy())), "values": values.view(t.dtype)}


def unpack_tensor(packed: torch.Tensor | dict) -> torch.Tensor:
    """The tensor ``pack_tensor`` packed, bit for bit (contiguous, on the CPU); a tensor is returned as it is."""
    if isinstance(packed, torch.Tensor):
        return packed
    dtype = getattr(torch, packed["dtype"])
    shape = tuple(packed["shape"])
    numel = int(np.prod(shape)) if shape else 1
    out = torch.zeros(numel, dtype=dtype)
    bits = out.view(_INT_VIEW[out.element_size()])
    idx = torch.from_numpy(np.flatnonzero(np.unpackbits(packed["changed"].numpy(), count=numel)))
    bits[idx] = packed["values"].view(bits.dtype)
    return out.reshape(shape)


def _pack_tree(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return pack_tensor(obj)
    if isinstance(obj, dict):
        return {k: _pack_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_pack_tree(v) for v in obj)
    return obj


def _unpack_tree(obj: Any) -> Any:
    if isinstance(obj, dict):
        if obj.get(_PACKED) == 1:
            return unpack_tensor(obj)
        return {k: _unpack_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unpack_tree(v) for v in obj)
    return obj


def pack_checkpoint(ckpt: dict) -> dict:
    """A checkpoint from ``LoopState.checkpoint()`` (plus ``best_state`` and ``callbacks``) with the tensors of
    ``model``, ``best_state`` and ``optimizer`` packed (``pack_tensor``); everything else kept as it is."""
    out = dict(ckpt)
    out["format"] = CHECKPOINT_FORMAT
    for key in ("model", "best_state", "optimizer"):
        if out.get(key) is not None:
            out[key] = _pack_tree(ckpt[key])
    return out


def unpack_checkpoint(ckpt: dict) -> dict:
    """The plain checkpoint ``pack_checkpoint`` packed; a plain (format 1, no ``format`` key) checkpoint is
    returned as it is. TicketsError for a format this version does not read."""
    fmt = ckpt.get("format", 1)
    if fmt == 1:
        return ckpt
    if fmt != CHECKPOINT_FORMAT:
        raise TicketsError(f"epoch checkpoint has format {fmt}, this version reads {CHECKPOINT_FORMAT}: delete the "
                           "level's checkpoint.pt to train the level again, or use the tickets version that wrote it")
    out = dict(ckpt)
    for key in ("model", "best_state", "optimizer"):
        if out.get(key) is not None:
            out[key] = _unpack_tree(ckpt[key])
    del out["format"]
    return out
