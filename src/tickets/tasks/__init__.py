"""Task registry: ``load_task(name, model=spec)`` → Task.

Every task (or family of tasks) is one registry entry: a factory ``(name, *, model, data_root, data, seed) ->
Task`` plus its ``modality`` (``image`` or ``text``) and, for families, a ``canonical`` function that checks a name
and spells it the way the loaded task reports it (``glue/SST-2`` → ``glue/sst2``) without loading data. Add one
with one file and one line::

    TASKS.register("my-task", "my_package.my_task:load", modality="image", help="what it is")

For a dataset already in memory no file is needed: ``Task.from_tensors`` (images) builds a Task directly.

Built-in: ``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``, ``digits``, ``digits-0-4``, ``digits-5-9``
(``tickets.tasks.images``); ``glue/<task>`` (``tickets.tasks.glue``) and ``mlm/<corpus>`` (``tickets.tasks.mlm``),
imported only when used; ``simclr/<image set>`` and ``moco/<image set>`` (``tickets.tasks.contrastive``).
"""

from __future__ import annotations

import os
from typing import Any

from tickets.registry import Registry, call_factory
from tickets.tasks import custom as _custom  # noqa: F401  (registers Task.from_tensors & co.)
from tickets.tasks.base import Batch, DataConfig, Metric, Split, Task

__all__ = ["TASKS", "Batch", "DataConfig", "Metric", "Split", "Task", "load_task", "task_names", "canonical_task",
           "task_modality", "train_split_size"]

TASKS: Registry = Registry("task", listing="tickets tasks", allowed={"modality": ("image", "text")})

_IMAGES = "tickets.tasks.images:load_image_task"
_SIZE = "tickets.tasks.images:train_split_size"
TASKS.register("cifar10", _IMAGES, modality="image", size=_SIZE, help="CIFAR-10 (10 classes, 32×32 colour)")
TASKS.register("cifar100", _IMAGES, modality="image", size=_SIZE, help="CIFAR-100 (100 fine classes, 32×32 colour)")
TASKS.register("mnist", _IMAGES, modality="image", size=_SIZE, help="MNIST handwritten digits (28×28 grey)")
TASKS.register("fashion-mnist", _IMAGES, modality="image", size=_SIZE, help="Fashion-MNIST (10 clothing classes, 28×28 grey)")
TASKS.register("digits", _IMAGES, modality="image", size=_SIZE, help="scikit-learn 8×8 digits, no download (10 classes)")
TASKS.register("digits-0-4", _IMAGES, modality="image", size=_SIZE, help="scikit-learn digits 0–4 (the demo's pre-training)")
TASKS.register("digits-5-9", _IMAGES, modality="image", size=_SIZE, help="scikit-learn digits 5–9, labels 0–4 (the demo)")
TASKS.register_family("glue/", "tickets.tasks.glue:load_glue_task", display="glue/<task>", modality="text",
                      canonical="tickets.tasks.glue:canonical_name", size="tickets.tasks.glue:train_split_size",
                      install="pip install 'pretrained-tickets[text]'",
                      help="GLUE: sst2, cola, mrpc, qqp, rte, stsb, wnli (dev set reported)")
TASKS.register_family("mlm/", "tickets.tasks.mlm:load_mlm_task", display="mlm/<corpus>", modality="text",
                      canonical="tickets.tasks.mlm:canonical_name", install="pip install 'pretrained-tickets[text]'",
                      help="masked-language modelling: wikitext-2, gutenberg, tinyshakespeare or a text file path")
TASKS.register_family("simclr/", "tickets.tasks.contrastive:load_simclr_task", display="simclr/<image set>", modality="image", canonical="tickets.tasks.contrastive:canonical_name", help="SimCLR objective (NT-Xent on two views, projection head; Chen et al. 2020) on an image set: ssl_loss, knn_accuracy")  # noqa: E501
TASKS.register_family("moco/", "tickets.tasks.contrastive:load_moco_task", display="moco/<image set>", modality="image", canonical="tickets.tasks.contrastive:canonical_name", help="MoCo v2 objective (momentum encoder, queue, projection head; Chen et al. 2020) on an image set: ssl_loss, knn_accuracy")  # noqa: E501


def task_names() -> list[str]:
    """Every task name ``load_task`` accepts (``glue/<task>`` and ``mlm/<corpus>`` stand for the text families)."""
    return TASKS.names()


def task_modality(name: str) -> str:
    """``image`` or ``text``, from the registry without loading anything."""
    return TASKS.meta(name).get("modality", "image")


def canonical_task(name: str) -> str:
    """The name a loaded task reports (``glue/SST-2`` → ``glue/sst2``), checked without loading data:
    TicketsError for an unknown task, GLUE task or MLM corpus."""
    import importlib

    canonical = TASKS.meta(name).get("canonical")  # TicketsError for an unknown name
    if canonical is None:
        return name
    module, _, attr = canonical.partition(":")
    return getattr(importlib.import_module(module), attr)(name)


def train_split_size(name: str, data_root: str | os.PathLike | None = None) -> int | None:
    """Examples in task ``name``'s training split when the task can tell without loading everything (registry
    meta ``size``), else None."""
    import importlib

    size = TASKS.meta(name).get("size")
    if size is None:
        return None
    module, _, attr = size.partition(":")
    return getattr(importlib.import_module(module), attr)(name, data_root)


def load_task(
    name: str,
    *,
    model: Any,
    data_root: str | os.PathLike | None = None,
    data: DataConfig = DataConfig(),
    seed: int = 0,
    options: Any = None,
) -> Task:
    """Build task ``name`` for ``model`` (a ModelSpec: image inputs are resized / channel-matched to it, text is
    tokenised with its tokenizer). Data comes from ``data_root`` / ``--data-root`` / ``TICKETS_DATA``; ``seed``
    picks the ``train_size`` subset and the validation carve; ``options`` go to the task's factory (the
    contrastive tasks' ``ContrastiveOptions``). TicketsError for an unknown name or missing data."""
    from tickets.hparams import validate

    validate(data, "data")  # a DataConfig built in Python skips from_dict's checks
    extra = {} if options is None else {"options": options}
    return call_factory("task", name, TASKS.get(name), (name,),
                        dict(model=model, data_root=data_root, data=data, seed=seed, **extra), returns=Task,
                        signature="`def load(name, *, model, data_root=None, data=None, seed=0)`",
                        fix="return a Task, e.g. tickets.Task.from_numpy(name, x_train, y_train, x_test, y_test, "
                            "model=model, data=data, seed=seed)")
