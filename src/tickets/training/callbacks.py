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

import hashlib
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
    # the model's state at the start of fine_tune, before any resume (CPU copies); kept only when a callback
    # sets ``wants_start_state`` (epoch checkpoints store what changed since)
    start_state: dict[str, torch.Tensor] | None = None

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
    wants_start_state: bool = False  # True: the loop keeps the start weights in ``LoopState.start_state``

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

    The checkpoint is packed (``pack_checkpoint``): weights are stored as what changed since the start of the
    fine-tune, optimizer state as its non-zero entries, so pruned weights, their (zero) optimizer moments and
    embedding rows no batch touched cost one bit each. ``fine_tune(resume=...)`` unpacks it against the same
    start weights (checked by digest) and continues bit for bit. Figures: ``benchmarks/checkpoint_bytes.py``."""

    key = "checkpoint"
    wants_start_state = True

    def __init__(self, save: Callable[[dict], None], callbacks: list[Callback]):
        self.save = save
        self.callbacks = callbacks  # whose state_dict goes into the checkpoint
        self._digest: tuple[int, str] | None = None  # (id of the start state, its digest)

    def on_epoch_end(self, state: LoopState, record: dict[str, Any]) -> None:
        last = state.epoch + 1 >= state.cfg.epochs or state.step >= state.total_steps
        if last:  # the level ends right after: its metrics.json is the record, a checkpoint would be dropped
            return
        ckpt = state.checkpoint()
        ckpt["best_state"] = None if state.best_epoch == state.epoch else state.best_state
        ckpt["callbacks"] = {cb.state_key: cb.state_dict() for cb in self.callbacks if cb is not self}
        if state.start_state is not None:
            if self._digest is None or self._digest[0] != id(state.start_state):
                self._digest = (id(state.start_state), weights_digest(state.start_state))
            ckpt = pack_checkpoint(ckpt, state.start_state, digest=self._digest[1])
        self.save(ckpt)


# --------------------------------------------------------------------------------------------------------------
# packed checkpoints
# --------------------------------------------------------------------------------------------------------------

CHECKPOINT_FORMAT = 2  # 1 (no "format" key): plain tensors; 2: packed against the start weights
_PACKED = "__tickets_packed__"
_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_MIN_PACK = 256  # smaller tensors are stored as they are


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and bytes (in logical order): which start weights a
    packed checkpoint was written against."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(state[name].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The flat bit patterns of ``t`` as integers of the same size (CPU, logical order)."""
    return t.detach().cpu().contiguous().reshape(-1).view(_INT_VIEW[t.element_size()])


def pack_tensor(t: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor | dict:
    """``t`` as what differs from ``ref`` (or from zeros when ``ref`` is None), or ``t`` itself when that is
    not smaller. Entries are compared bit for bit; a packed tensor is a dict of plain tensors (loadable with
    ``torch.load(weights_only=True)``): ``changed`` (np.packbits of the entries that differ), ``zero`` (among
    those, which are +0.0 — only with a reference; pruned weights) and ``values`` (the others). Inverse:
    ``unpack_tensor``."""
    if (not t.is_floating_point() or t.numel() < _MIN_PACK or t.element_size() not in _INT_VIEW
            or (ref is not None and (ref.shape != t.shape or ref.dtype != t.dtype))):
        return t
    bits = _bits(t)
    changed = bits != 0 if ref is None else bits != _bits(ref)
    raw = t.numel() * t.element_size()
    stored = changed if ref is None else changed & (bits != 0)  # zeros cost a bit, not a value
    if (t.numel() + 7) // 8 + int(stored.sum()) * t.element_size() >= raw:  # (almost) all values would be stored
        return t
    idx = changed.nonzero().reshape(-1)
    values = bits[idx]
    zero = None
    if ref is not None:
        is_zero = values == 0
        if bool(is_zero.any()):
            zero = torch.from_numpy(np.packbits(is_zero.numpy()))
            values = values[~is_zero]
    size = (t.numel() + 7) // 8 + values.numel() * t.element_size() + (0 if zero is None else zero.numel())
    if size >= raw:
        return t
    return {_PACKED: 1, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
            "changed": torch.from_numpy(np.packbits(changed.numpy())), "zero": zero,
            "values": values.view(t.dtype)}


def unpack_tensor(packed: torch.Tensor | dict, ref: torch.Tensor | None = None) -> torch.Tensor:
    """The tensor ``pack_tensor(t, ref)`` packed, bit for bit (contiguous, on the CPU)."""
    if isinstance(packed, torch.Tensor):
        return packed
    dtype = getattr(torch, packed["dtype"])
    shape = tuple(packed["shape"])
    numel = int(np.prod(shape)) if shape else 1
    out = torch.zeros(numel, dtype=dtype) if ref is None else ref.detach().cpu().contiguous().reshape(-1).clone()
    bits = out.view(_INT_VIEW[out.element_size()])
    idx = torch.from_numpy(np.flatnonzero(np.unpackbits(packed["changed"].numpy(), count=numel)))
    values = packed["values"].view(bits.dtype)
    if packed.get("zero") is not None:
        zero = torch.from_numpy(np.unpackbits(packed["zero"].numpy(), count=len(idx)).astype(bool))
        bits[idx[zero]] = 0
        idx = idx[~zero]
    bits[idx] = values
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


def pack_checkpoint(ckpt: dict, start: dict[str, torch.Tensor], *, digest: str | None = None) -> dict:
    """A checkpoint from ``LoopState.checkpoint()`` with its weights (``model``, ``best_state``) packed against
    the fine-tune's start weights ``start`` and its optimizer state packed against zeros (``pack_tensor``).
    Everything else is kept as it is. ``digest``: ``weights_digest(start)`` when already known."""
    out = dict(ckpt)
    out["format"] = CHECKPOINT_FORMAT
    out["start_digest"] = digest or weights_digest(start)
    out["model"] = {k: pack_tensor(v, start.get(k)) for k, v in ckpt["model"].items()}
    if ckpt.get("best_state") is not None:
        out["best_state"] = {k: pack_tensor(v, start.get(k)) for k, v in ckpt["best_state"].items()}
    out["optimizer"] = _pack_tree(ckpt["optimizer"])
    return out


def unpack_checkpoint(ckpt: dict, start: dict[str, torch.Tensor]) -> dict:
    """The plain checkpoint ``pack_checkpoint(plain, start)`` came from; a plain (format 1) checkpoint is
    returned as it is. ``start``: the model's state at the start of the resumed fine-tune, which must be the
    one the checkpoint was packed against — TicketsError otherwise (the level's start weights changed since)."""
    if ckpt.get("format", 1) == 1:
        return ckpt
    if ckpt["format"] != CHECKPOINT_FORMAT:
        raise TicketsError(f"it has format {ckpt['format']}, this version reads {CHECKPOINT_FORMAT}")
    if weights_digest(start) != ckpt["start_digest"]:
        raise TicketsError("it was written for other start weights than this level's")
    out = dict(ckpt)
    out["model"] = {k: unpack_tensor(v, start.get(k)) for k, v in ckpt["model"].items()}
    if ckpt.get("best_state") is not None:
        out["best_state"] = {k: unpack_tensor(v, start.get(k)) for k, v in ckpt["best_state"].items()}
    out["optimizer"] = _unpack_tree(ckpt["optimizer"])
    del out["format"], out["start_digest"]
    return out
