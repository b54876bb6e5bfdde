"""Task registry: ``load_task(name, model=spec)`` → Task.

Image tasks (``tickets.tasks.images``): cifar10, cifar100, mnist, fashion-mnist, digits, digits-0-4, digits-5-9.
Text tasks ``glue/<task>`` and ``mlm/<corpus>`` are built by ``tickets.tasks.text`` (imported only when asked).
"""

from __future__ import annotations

import os
from typing import Any

from tickets.errors import TicketsError
from tickets.tasks.base import Batch, DataConfig, Metric, Split, Task
from tickets.tasks.images import IMAGE_TASKS

__all__ = ["Batch", "DataConfig", "Metric", "Split", "Task", "load_task", "task_names"]

TEXT_PREFIXES = ("glue/", "mlm/")


def task_names() -> list[str]:
    """Every task name ``load_task`` accepts (``glue/<task>`` and ``mlm/<corpus>`` stand for the text families)."""
    return [*IMAGE_TASKS, "glue/<task>", "mlm/<corpus>"]


def load_task(
    name: str,
    *,
    model: Any,
    data_root: str | os.PathLike | None = None,
    data: DataConfig = DataConfig(),
    seed: int = 0,
) -> Task:
    """Build task ``name`` for ``model`` (a ModelSpec: image inputs are resized / channel-matched to it, text is
    tokenised with its tokenizer). Data comes from ``data_root`` / ``--data-root`` / ``TICKETS_DATA``; ``seed``
    picks the ``train_size`` subset and the validation carve-out."""
    if name.startswith(TEXT_PREFIXES):
        from tickets.tasks.text import load_text_task

        return load_text_task(name, model=model, data_root=data_root, data=data, seed=seed)
    if name in IMAGE_TASKS:
        from tickets.tasks.images import load_image_task

        return load_image_task(name, model=model, data_root=data_root, data=data, seed=seed)
    raise TicketsError(f"unknown task {name!r}: choose one of {', '.join(task_names())}")
