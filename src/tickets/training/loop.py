"""The one masked fine-tuning loop, for every model and task: ``fine_tune(model, task, cfg, callbacks=[...])``.

The loop itself only batches, steps and selects; everything else is a callback (``training/callbacks.py``): mask
enforcement (pruned weights stay exactly zero), adversarial examples, rewind capture, logging sinks and epoch
checkpoints. Randomness is drawn from generators seeded by (seed, epoch), so a run resumed from an epoch
checkpoint is bit-identical on CPU to one that never stopped, and a level started at step K (IMP rewinding) sees
the same data order as the dense run did from step K on.

Model selection keeps the epoch with the best *validation* score in the direction the primary metric improves
(accuracy: highest; a loss: lowest).
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from tickets.config import TrainConfig, resolve_train
from tickets.errors import TicketsError, counted
from tickets.log import get_logger
from tickets.masks import Mask
from tickets.runtime import resolve_device, world_size
from tickets.tasks.base import Task, higher_is_better
from tickets.training.callbacks import AdversarialCallback, Callback, LoopState, MaskCallback, unpack_checkpoint
from tickets.training.evaluate import _batch_size, _to, evaluate

logger = get_logger(__name__)


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total``: warm-up, then the schedule."""
    warm = int(cfg.warmup * total)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    if cfg.lr_schedule == "constant":
        return 1.0
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.lr_schedule == "linear":
        return max(0.0, 1.0 - progress)
    if cfg.lr_schedule == "step":
        return cfg.step_gamma ** sum(progress >= m for m in cfg.step_milestones)
    raise TicketsError(f"unknown lr schedule {cfg.lr_schedule!r}: choose constant, step, cosine or linear")


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW; no weight decay on biases and normalisation parameters. Step it with
    ``optimizer_step`` (the same update as ``optimizer.step()``, without importing ``torch._dynamo``)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    _defer_dynamo_import()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        # fused: one kernel for all parameters, ~10x faster steps for MiniLM on CPU
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for g in groups for p in g["params"])
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused or None)
    raise TicketsError(f"unknown optimizer {cfg.optimizer!r}: choose sgd or adamw")


# --------------------------------------------------------------------------------------------------------------
# torch._dynamo stays unimported
# --------------------------------------------------------------------------------------------------------------
# In torch 2.13 every Optimizer imports torch._dynamo (about 1.1 s of CPU, a third of a small run's start-up):
# ``add_param_group`` / ``zero_grad`` / ``state_dict`` / ``load_state_dict`` are wrapped in
# ``torch._disable_dynamo``, which imports it on the first call to build the "do not compile this" wrapper, and
# ``step`` is wrapped in ``_use_grad_for_differentiable``, which imports it on every call to place graph breaks.
# Both only matter inside a torch.compile trace, and nothing can be traced before torch._dynamo is imported: so
# until it is (``--compile``, or any other user of torch.compile), the wrappers are bypassed and behave exactly as
# the plain methods; once it is, torch's own wrappers run again. ``benchmarks/startup.py`` measures the saving.

_DYNAMO = "torch._dynamo"
_DISABLED_METHODS = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")


def _defer_dynamo_import() -> None:
    """Pre-fill the cache ``torch._disable_dynamo`` keeps on each wrapped Optimizer method with a function
    that calls the method directly while torch._dynamo is not imported, and builds torch's own disabled
    wrapper (and caches it in its place) as soon as it is. Idempotent; does nothing on a torch without that
    wrapper layout."""
    if _DYNAMO in sys.modules:
        return
    for name in _DISABLED_METHODS:
        wrapper = getattr(torch.optim.Optimizer, name, None)
        fn = getattr(wrapper, "__wrapped__", None)
        code = getattr(wrapper, "__code__", None)
        if fn is None or code is None or "__dynamo_disable" not in code.co_consts:
            continue  # another torch: leave it alone
        if getattr(fn, "__dynamo_disable", None) is None:
            setattr(fn, "__dynamo_disable", _until_dynamo(fn))


def _until_dynamo(fn):
    def call(*args, **kwargs):
        if _DYNAMO in sys.modules:  # torch.compile is in use: from now on exactly what torch does
            disabled = sys.modules[_DYNAMO].disable(fn, True, wrapping=False)
            setattr(fn, "__dynamo_disable", disabled)
            return disabled(*args, **kwargs)
        return fn(*args, **kwargs)

    return call


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, computing the same update, without importing torch._dynamo: while it is not
    imported and no step hooks are registered, the optimizer's own ``step`` runs under ``torch.no_grad()``
    (what torch's wrapper does outside a compile trace) inside the same profiler range; otherwise
    ``optimizer.step()`` itself."""
    from torch.optim import optimizer as optim_module

    hooked = type(optimizer).step
    use_grad = getattr(hooked, "__wrapped__", None)
    raw = getattr(use_grad, "__wrapped__", None)
    if (_DYNAMO in sys.modules or raw is None or not getattr(hooked, "hooked", False)
            or getattr(getattr(use_grad, "__code__", None), "co_name", "") != "_use_grad"
            or optimizer.defaults.get("differentiable", False)
            or optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks
            or getattr(optim_module, "_global_optimizer_pre_hooks", None)
            or getattr(optim_module, "_global_optimizer_post_hooks", None)):
        optimizer.step()
        return
    with torch.autograd.profiler.record_function(f"Optimizer.step#{type(optimizer).__name__}.step"):
        with torch.no_grad():
            raw(optimizer)
        optimizer._optimizer_step_code()


def epoch_seed(seed: int, epoch: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % (2**63 - 1)


@dataclass
class TrainResult:
    """What a fine-tune produced: the selected epoch's validation metrics and the per-epoch history."""

    val: dict[str, float]
    best_epoch: int
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    examples_per_second: float = 0.0


def fine_tune_steps(n_train: int, cfg: TrainConfig) -> int:
    """Optimizer steps of one fine-tune of ``n_train`` examples: ⌈n_train / batch⌉ per epoch × epochs, capped by
    ``max_steps`` (the count ``fine_tune`` trains and ``find`` checks a rewind point against)."""
    steps = math.ceil(n_train / cfg.batch_size) * cfg.epochs
    return min(steps, cfg.max_steps) if cfg.max_steps is not None else steps


def fine_tune(
    model: nn.Module,
    task: Task,
    cfg: TrainConfig,
    *,
    mask: Mask | None = None,
    device: torch.device | str = "auto",
    seed: int = 0,
    limit: int | None = None,
    callbacks: Iterable[Callback] = (),
    resume: dict | None = None,
    start_step: int = 0,
    progress: bool = True,
    desc: str = "train",
    family: str = "cnn",
    recipe: dict | None = None,
) -> TrainResult:
    """Fine-tune ``model`` in place on ``task.train`` (under ``mask`` if given); select on ``task.val``.

    ``cfg`` fields left ``None`` take the defaults of ``family`` (``cnn`` or ``transformer``) and the model's
    ``recipe`` (``config.resolve_train``). ``callbacks`` run in order after the built-in ones (mask, adversarial).
    ``resume``: a checkpoint saved by ``CheckpointCallback`` — training continues after its epoch, exactly.
    ``start_step`` K > 0: start at optimizer step K of the schedule (IMP rewinding, as open_lth does): the
    learning-rate schedule and the data order continue from step K for the remaining T − K steps, with a fresh
    optimizer state (momentum / Adam moments start from zero at K). On return the model holds the selected
    epoch's weights. TicketsError when the task has no training examples, K is not before the last step, or the
    loss stops being finite (the message names the cause: non-finite weights, inputs or labels, or the lr).
    """
    cfg = resolve_train(cfg, family, recipe)
    device = resolve_device(device)
    model.to(device)
    builtin: list[Callback] = []
    distributed = None
    if world_size() > 1:  # torchrun: shard every global batch over the ranks, sum the gradients
        from tickets.training.distributed import DistributedCallback

        distributed = DistributedCallback(mask)
        builtin.append(distributed)
    if mask is not None:
        builtin.append(MaskCallback(mask))
    if cfg.adversarial is not None:
        builtin.append(AdversarialCallback(cfg.adversarial, task))
    cbs = builtin + list(callbacks)
    problem = None
    if resume is not None:
        try:
            resume = unpack_checkpoint(resume)  # packed epoch checkpoints (format 2) and plain ones
        except (TicketsError, KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            problem, resume = str(exc) or type(exc).__name__, None
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    forward_model = compiled(model, device) if cfg.compile else model
    optimizer = make_optimizer(model, cfg)
    autocast, scaler = precision_context(cfg.precision, device)
    steps_per_epoch = math.ceil(len(task.train) / cfg.batch_size)
    if steps_per_epoch == 0:
        raise TicketsError(f"task {task.name!r} has no training examples: raise --train-size")
    total_steps = fine_tune_steps(len(task.train), cfg)
    if not 0 <= start_step < total_steps:
        raise TicketsError(f"training would start at step {start_step} but has only {counted(total_steps, 'step')} "
                           f"({steps_per_epoch} per epoch): choose a rewind step K below {total_steps} or train longer")
    state = LoopState(model=model, optimizer=optimizer, task=task, cfg=cfg, device=device, seed=seed,
                      total_steps=total_steps, steps_per_epoch=steps_per_epoch, step=start_step,
                      epoch=start_step // steps_per_epoch, desc=desc, scaler=scaler)
    higher = higher_is_better(task.primary_metric)
    best_val: dict = {}
    if resume is not None:
        problem = _unusable_checkpoint(resume, model, cfg, steps_per_epoch, total_steps)
    if problem is not None:
        logger.warning("%s: the epoch checkpoint is unusable (%s): starting this fine-tune from its beginning", desc,
                       problem)
        resume = None
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        state.epoch, state.step = resume["epoch"] + 1, resume["step"]
        state.history = list(resume["history"])
        state.best_score, state.best_epoch = resume["best_score"], resume["best_epoch"]
        if state.best_epoch >= 0:
            best_val = state.history[[h["epoch"] for h in state.history].index(state.best_epoch)]["val"]
            saved_best = resume["model"] if resume.get("best_state") is None else resume["best_state"]
            state.best_state = {k: v.clone() for k, v in saved_best.items()}
        saved = resume.get("callbacks") or {}
        for cb in cbs:
            if cb.state_key in saved:
                cb.load_state_dict(saved[cb.state_key])
    for cb in cbs:
        cb.on_train_begin(state)
    if resume is not None:
        for cb in cbs:
            cb.on_resume(state)

    started = time.perf_counter()
    seen = 0
    bars = progress and sys.stderr.isatty()  # live bars on a terminal only
    for epoch in range(state.epoch, cfg.epochs):
        if state.step >= total_steps:
            break
        state.epoch = epoch
        model.train()
        gen = torch.Generator().manual_seed(epoch_seed(seed, epoch))
        torch.manual_seed(epoch_seed(seed, epoch) + 1)  # dropout, attack random starts
        for cb in cbs:
            cb.on_epoch_begin(state)
        skip = state.step - epoch * steps_per_epoch  # batches of this epoch before the start step (rewinding)
        t0, n_epoch, loss_sum = time.perf_counter(), 0, 0.0
        bar = tqdm(total=min(steps_per_epoch - skip, total_steps - state.step), desc=f"{desc} epoch {epoch + 1}/"
                   f"{cfg.epochs}", unit="step", disable=not bars, leave=False, file=sys.stderr)
        for i, batch in enumerate(task.train.batches(cfg.batch_size, shuffle=True, generator=gen, augment=True)):
            if i < skip:
                continue
            if state.step >= total_steps:
                break
            batch = _to(batch, device)
            if cfg.channels_last:
                batch = _channels_last(batch)
            for cb in cbs:
                batch = cb.on_batch(state, batch)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(state.step, total_steps, cfg)
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = task.loss(task.forward(forward_model, batch), batch)
            if not torch.isfinite(loss):
                raise TicketsError(_nonfinite_loss(model, batch, loss, state.step, cfg))
            weighted = loss * state.loss_weight if state.loss_weight != 1.0 else loss
            if scaler is not None:
                scaler.scale(weighted).backward()
                scaler.unscale_(optimizer)  # callbacks and clipping see true gradients
            else:
                weighted.backward()
            for cb in cbs:
                cb.before_optimizer_step(state)
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)  # skipped when the scaled gradients overflowed
                scaler.update()
            else:
                optimizer_step(optimizer)
            state.step += 1
            state.loss = loss.item() if distributed is None else distributed.reduce_loss(weighted.item())
            for cb in cbs:
                cb.after_optimizer_step(state)
            k = _batch_size(batch)
            n_epoch += k
            loss_sum += state.loss * k
            bar.update(1)
            bar.set_postfix(loss=f"{state.loss:.3f}")
        bar.close()
        train_seconds = time.perf_counter() - t0
        seen += n_epoch
        val = evaluate(model, task, "val", device=device, batch_size=cfg.eval_batch_size, limit=limit)
        for cb in cbs:
            cb.on_evaluate(state, "val", val)
        record = {"epoch": epoch, "step": state.step, "train_loss": loss_sum / max(1, n_epoch), "val": val,
                  "examples_per_second": n_epoch / max(train_seconds, 1e-9), "lr": optimizer.param_groups[0]["lr"]}
        state.history.append(record)
        score = val.get(task.primary_metric)
        if score is None or (isinstance(score, float) and math.isnan(score)):
            raise TicketsError(f"validation {task.primary_metric} of {task.name!r} is {score} after epoch "
                               f"{epoch + 1}: the validation split is empty or degenerate; raise --train-size or "
                               "--val-fraction")
        if not cfg.select_best or state.best_score is None or (score > state.best_score if higher
                                                               else score < state.best_score):
            state.best_score, state.best_epoch, best_val = score, epoch, val
            state.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        for cb in cbs:
            cb.on_epoch_end(state, record)
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    if cfg.channels_last:
        model.to(memory_format=torch.contiguous_format)  # hand back the usual layout
    for cb in cbs:
        cb.on_train_end(state)
    seconds = time.perf_counter() - started
    return TrainResult(val=best_val, best_epoch=state.best_epoch, steps=state.step, history=state.history,
                       seconds=seconds, examples_per_second=seen / max(seconds, 1e-9))


def precision_context(precision: str, device: torch.device):
    """(autocast context factory, GradScaler or None) for ``precision``: fp32 — no autocast; bf16 — autocast to
    bfloat16; fp16 — autocast to float16 with dynamic loss scaling. Parameters (the master weights), the mask and
    the optimizer stay float32, so pruned weights stay exactly zero. TicketsError for an unknown precision.

    On CUDA the half-precision forward keeps scaled-dot-product attention off cuDNN's backend: it builds a cuDNN
    graph for every new sequence length, and dynamically padded text batches bring a new length every few steps
    (measured on an H200, MiniLM-L6 SST-2: 352 train examples/s in bf16 against 1,939 in fp32; flash and
    memory-efficient attention need no such plan, see docs/performance.md, "GPU check")."""
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext, None
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in dtypes:
        raise TicketsError(f"unknown precision {precision!r}: choose fp32, bf16 or fp16")
    dtype = dtypes[precision]

    if device.type != "cuda":
        def autocast():
            return torch.autocast(device_type=device.type, dtype=dtype)
    else:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

        @contextlib.contextmanager
        def autocast():
            with torch.autocast(device_type="cuda", dtype=dtype), sdpa_kernel(backends):
                yield

    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return autocast, scaler


def _unusable_checkpoint(ckpt: Any, model: nn.Module, cfg: TrainConfig, steps_per_epoch: int,
                         total_steps: int) -> str | None:
    """Why a checkpoint read back from disk cannot continue this fine-tune (None when it can): missing keys,
    tensors of other shapes or non-finite values, or an epoch / step this schedule never reaches."""
    if not isinstance(ckpt, dict):
        return "not a checkpoint"
    for key in ("model", "optimizer", "epoch", "step", "history", "best_score", "best_epoch"):
        if key not in ckpt:
            return f"no {key!r}"
    state, own = ckpt["model"], model.state_dict()
    if not isinstance(state, dict) or set(state) != set(own):
        return "its weights are for another model"
    for name, value in own.items():
        got = state[name]
        if not isinstance(got, torch.Tensor) or got.shape != value.shape:
            return f"weight {name!r} has another shape"
        if got.is_floating_point() and not torch.isfinite(got).all():
            return f"weight {name!r} holds NaN/Inf"
    epoch, step = ckpt["epoch"], ckpt["step"]
    if not (isinstance(epoch, int) and 0 <= epoch < cfg.epochs - 1 and isinstance(step, int)
            and 0 < step <= min(total_steps, (epoch + 1) * steps_per_epoch)
            and isinstance(ckpt["history"], list) and len(ckpt["history"]) >= 1):
        return (f"it claims epoch {epoch}, step {step}, impossible for {counted(cfg.epochs, 'epoch')} of "
                f"{counted(steps_per_epoch, 'step')}")
    best = ckpt["best_state"] if ckpt.get("best_state") is not None else state
    if not isinstance(best, dict) or set(best) != set(own):
        return "its selected weights are for another model"
    return None


def _channels_last(batch: dict) -> dict:
    """4-D float inputs (images) in channels-last layout; everything else as it is."""
    return {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 and v.is_floating_point() else v
            for k, v in batch.items()}


def compiled(model: nn.Module, device: torch.device, *, fresh: bool = True) -> nn.Module:
    """``torch.compile(model, dynamic=False)`` (inductor) for the training forward; parameters stay shared with
    ``model``, so masks, optimizer, checkpoints and evaluation keep using ``model`` itself.

    Reproducible by construction: compiled code from earlier fine-tunes in the process is dropped first
    (``torch._dynamo.reset()``), and shapes stay static (each batch shape gets its own kernels, the same ones
    whatever was seen before), so a run gives the same weights in a fresh process, after other runs in the same
    process, and when resumed from an epoch checkpoint (``fresh=False`` keeps earlier compiled code: for
    benchmarks comparing compiled variants in one process). Meant for image models, whose batches have one or two
    shapes; text batches change width, and past torch's recompile limit new widths run uncompiled. TicketsError
    when the CPU backend has no C++ compiler to build its kernels with."""
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise TicketsError("--compile on a CPU needs a C++ compiler (g++ or clang++) on PATH: install one or drop "
                           "--compile")
    import torch._dynamo

    if fresh:
        torch._dynamo.reset()
    return torch.compile(model, dynamic=False)


def _nonfinite_loss(model: nn.Module, batch: dict, loss: torch.Tensor, step: int, cfg: TrainConfig) -> str:
    """Why the loss is NaN/Inf, with the fix that matches the cause."""
    bad = next((n for n, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is not None:
        when = "from the start (the loaded weights or checkpoint hold NaN/Inf)" if step == 0 else f"by step {step}"
        fix = ("replace the weights / delete the checkpoint" if step == 0
               else f"training diverged: lower --lr (now {cfg.lr:g}) or set --grad-clip")
        return f"weight {bad!r} is not finite {when}: {fix}"
    for key, value in batch.items():
        if torch.is_floating_point(value) and not torch.isfinite(value).all():
            return f"the training inputs ({key!r}) hold NaN/Inf values at step {step}: clean the data"
    labels = batch.get("labels", batch.get("y"))
    if labels is not None and torch.is_floating_point(labels) and not torch.isfinite(labels).all():
        return f"the training labels hold NaN/Inf values at step {step}: clean the data"
    return (f"training loss became {loss.item()} at step {step} with finite weights and inputs: the learning rate "
            f"is too high for this model (now {cfg.lr:g}); lower --lr or set --grad-clip")

