"""Evaluation: the batches of a split under a mask (shared by clean and robust evaluation) and the task's metrics."""

from __future__ import annotations

import sys
from typing import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from tickets.masks import Mask
from tickets.runtime import resolve_device
from tickets.tasks.base import Task


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _batch_size(batch: dict) -> int:
    return int(next(iter(batch.values())).shape[0])


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
) -> Iterator[dict]:
    """The split's batches on ``device``, with ``model`` there in eval mode under ``mask`` and a progress bar;
    the model's train/eval mode is restored when the loop ends. Shared by clean and robust evaluation."""
    device = resolve_device(device)
    model.to(device)
    if mask is not None:
        mask.to(device).apply_(model)
    data = task.split(split).limit(limit)
    was_training = model.training
    model.eval()
    bar = tqdm(total=len(data), desc=desc, unit="ex", disable=not (progress and sys.stderr.isatty()), leave=False)
    try:
        for batch in data.batches(batch_size):
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
    """Score ``model`` (under ``mask`` if given) on a split; returns the task's metrics plus ``examples``."""
    metric = task.new_metric()
    n = 0
    for batch in eval_batches(model, task, split, device=device, batch_size=batch_size, limit=limit, mask=mask,
                              progress=progress, desc=f"eval {task.name}/{split}"):
        metric.update(task.forward(model, batch), batch)
        n += _batch_size(batch)
    out = metric.compute()
    out["examples"] = n
    return out
