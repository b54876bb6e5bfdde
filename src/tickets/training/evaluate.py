"""Evaluation: the batches of a split under a mask (shared by clean and robust evaluation) and the task's metrics.

On a CPU, ``evaluate`` batches for the cache rather than for the requested batch size (``eval_batch_size``, 256 by
default, which is part of every run's hash and stays as it is):

* **images**: a convolutional model is evaluated through ``inference_copy``: a copy with every BatchNorm that
  follows a convolution folded into it (``torch.fx.experimental.optimization.fuse``, the standard conv-BN fold)
  and its weights and inputs in channels-last layout (the layout oneDNN's CPU convolutions prefer); the model
  itself is not touched. Each requested batch is forwarded in chunks of about ``CHUNK_ELEMENTS`` input values
  (32 CIFAR images; never fewer than ``MIN_CHUNK`` rows, the remainder joins the last chunk) and the outputs are
  concatenated (chunking alone changes no bit: eval-mode outputs do not depend on the batch around an example).
  The fold and the layout round differently in the last bits: predictions, hence accuracy, are the same on
  the benchmark and test sets (an example whose two top logits are within ~1e-6 could flip) and mean losses
  differ around 1e-7 relative. ResNet-20 / ResNet-56 evaluate about 1.6× faster than plain 256-batches.
* **text**: length-sorted batches of at most ``EVAL_TOKENS`` padded tokens (and at most the requested batch
  size of examples), so a batch is padded to the length of similar examples, not to the longest of 256
  (``TokenSplit.token_batches``). Predictions, hence accuracy / F1 / Matthews / correlations, are unchanged;
  a transformer's logits depend on the padded width in the last bits (attention reduces over it), so mean
  losses can differ from the plain batching around 1e-7 relative. MiniLM on SST-2: about 1.4× faster.

Numbers: ``benchmarks/eval_speed.py``. On other devices the requested batches are used as they are.
"""

from __future__ import annotations

import copy
import sys
from typing import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from tickets.log import get_logger
from tickets.masks import Mask
from tickets.runtime import resolve_device
from tickets.tasks.base import Batch, Task

log = get_logger(__name__)

CHUNK_ELEMENTS = 32 * 3 * 32 * 32  # input values per image forward on a CPU (32 CIFAR images, 384 KiB of floats)
MIN_CHUNK = 16  # rows; a batch of 1 takes other kernels than a batch of many (its outputs differ in the last bits)
EVAL_TOKENS = 2048  # padded tokens per text forward on a CPU


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _batch_size(batch: dict) -> int:
    return int(next(iter(batch.values())).shape[0])


def place(model: nn.Module, mask: Mask | None, device: torch.device) -> None:
    """Move ``model`` to ``device`` and apply ``mask`` (if any) to it in place."""
    model.to(device)
    if mask is not None:
        mask.to(device).apply_(model)


def eval_batches(
    model: nn.Module,
    task: Task,
    split: str,
    *,
    device: torch.device | str,
    batch_size: int,
    limit: int | None,
    mask: Mask | None,
    progress: bool,
    desc: str,
    tokens: int | None = None,
) -> Iterator[dict]:
    """The split's batches on ``device``, with ``model`` there in eval mode under ``mask`` and a progress bar;
    the model's train/eval mode is restored when the loop ends. Shared by clean and robust evaluation.

    ``tokens``: for splits that offer ``token_batches`` (text), length-sorted batches of at most that many
    padded tokens and ``batch_size`` examples instead of ``batch_size``-example batches in the split's order."""
    device = resolve_device(device)
    place(model, mask, device)
    data = task.split(split).limit(limit)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(data), desc=desc, unit="ex", disable=not (progress and sys.stderr.isatty()), leave=False)
    try:
        if tokens is not None and hasattr(data, "token_batches"):
            batches = data.token_batches(tokens, max_rows=batch_size)
        else:
            batches = data.batches(batch_size)
        for batch in batches:
            batch = _to(batch, device)
            yield batch
            bar.update(_batch_size(batch))
    finally:
        bar.close()
        model.train(was_training)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    task: Task,
    split: str = "test",
    *,
    device: torch.device | str = "auto",
    batch_size: int = 256,
    limit: int | None = None,
    mask: Mask | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Score ``model`` (under ``mask`` if given) on a split; returns the task's metrics plus ``examples``.

    ``batch_size`` examples per batch, batched for the cache on a CPU (see the module docstring: the same
    predictions, mean losses equal up to rounding; a convolutional model is evaluated through
    ``inference_copy`` and is itself left as it was)."""
    device = resolve_device(device)
    cpu = device.type == "cpu"
    images = cpu and task.kind == "image"
    channels_last = images and has_conv2d(model)
    if channels_last:
        place(model, mask, device)
        model, mask = inference_copy(model), None
    metric = task.new_metric()
    n = 0
    for batch in eval_batches(model, task, split, device=device, batch_size=batch_size, limit=limit, mask=mask,
                              progress=progress, desc=f"eval {task.name}/{split}",
                              tokens=EVAL_TOKENS if cpu else None):
        if images:
            x = batch.get("x")
            if channels_last and x is not None and x.dim() == 4:
                batch = {**batch, "x": x.contiguous(memory_format=torch.channels_last)}
            outputs = forward_in_chunks(task, model, batch, chunk_rows(batch))
        else:
            outputs = task.forward(model, batch)
        metric.update(outputs, batch)
        n += _batch_size(batch)
    out = metric.compute()
    out["examples"] = n
    return out


def has_conv2d(model: nn.Module) -> bool:
    """Whether ``model`` holds a 2-d convolution (the models ``inference_copy`` speeds up)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def inference_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` for CPU inference: conv → BatchNorm pairs folded into one convolution and
    4-d weights in channels-last layout. ``model`` (its weights, mode and layout) is left as it is.

    The fold is ``torch.fx.experimental.optimization.fuse`` (w' = w·γ/√(σ²+ε), b' = (b − μ)·γ/√(σ²+ε) + β; it
    only folds a BatchNorm that alone reads its convolution's output, so zero weights stay zero); a model that
    torch.fx cannot trace (data-dependent control flow) is copied unfolded. Outputs equal the model's up to
    rounding (about 1e-7 relative on ResNet logits). Costs one copy of the weights while it lives."""
    from torch.fx.experimental.optimization import fuse

    was_training = model.training
    model.eval()
    try:
        try:
            fast = fuse(model)  # a folded GraphModule; fuse copies, the model keeps its modules
        except Exception as e:  # noqa: BLE001 - any tracing failure means: evaluate the plain copy
            log.debug("conv-BN fold skipped (%s: %s); evaluating an unfolded copy", type(e).__name__, e)
            fast = copy.deepcopy(model)
    finally:
        model.train(was_training)
    return fast.eval().to(memory_format=torch.channels_last)


def chunk_rows(batch: Batch, elements: int = CHUNK_ELEMENTS, minimum: int = MIN_CHUNK) -> int:
    """Rows per forward so that a chunk holds about ``elements`` input values (at least ``minimum`` rows)."""
    x = batch.get("x")
    per_row = x[0].numel() if x is not None and x.dim() > 1 and x.shape[0] else 1
    return max(minimum, elements // max(per_row, 1))


def forward_in_chunks(task: Task, model: nn.Module, batch: Batch, rows: int) -> torch.Tensor:
    """``task.forward(model, batch)`` computed ``rows`` examples at a time and concatenated along dim 0.

    Every chunk has ``rows`` examples except the last, which also takes the remainder (``rows`` to
    ``2·rows − 1``); a batch of fewer than ``2·rows`` goes in one piece. Only for models whose outputs are per
    example (image classifiers in eval mode): the result is then the same tensor, bit for bit, as one forward."""
    n = _batch_size(batch)
    if n < 2 * rows:
        return task.forward(model, batch)
    starts = list(range(0, n - n % rows, rows))
    bounds = list(zip(starts, starts[1:] + [n]))
    return torch.cat([task.forward(model, {k: v[a:b] for k, v in batch.items()}) for a, b in bounds])
