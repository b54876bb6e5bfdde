"""The Task interface shared by image and text tasks, so one training loop serves both.

A Task owns its data splits (in memory, already subset), how a model is called on a batch, the loss, and the
metrics. Batches are plain dicts of tensors:

- image tasks: ``{"x": float32 N×C×H×W in [0, 1], "y": int64 N}``
- text tasks:  ``{"input_ids", "attention_mask", ["token_type_ids"], "labels"}`` (int64; float for regression)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
from torch import nn

from tickets.config import DataConfig
from tickets.errors import TicketsError
from tickets.log import get_logger

__all__ = ["Batch", "DataConfig", "Metric", "Split", "Task", "carve", "higher_is_better"]

Batch = dict[str, torch.Tensor]


# Task constructors by name, filled in by tasks/custom.py (imported with the tasks package): Task.from_tensors and
# friends reach their builders through it, so this base module depends on no concrete task family.
CONSTRUCTORS: dict[str, Callable[..., "Task"]] = {}


def higher_is_better(metric: str) -> bool:
    """Metrics improve upwards unless named ``*loss`` or ``perplexity`` (the Task metric convention); model
    selection and the matching criteria follow this direction."""
    return not (metric.endswith("loss") or metric == "perplexity")


class Split(Protocol):
    """One split held in memory. ``batches`` is deterministic given the generator."""

    def __len__(self) -> int: ...

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        augment: bool = False,
        drop_last: bool = False,
    ) -> Iterator[Batch]: ...

    def limit(self, n: int | None) -> "Split":
        """The first ``n`` examples (in the split's fixed order), or self when n is None."""
        ...


class Metric(Protocol):
    """Accumulates over evaluation batches; ``compute`` returns name → value (higher is better unless the
    name ends in ``loss`` or is ``perplexity``)."""

    def update(self, outputs: torch.Tensor, batch: Batch) -> None: ...

    def compute(self) -> dict[str, float]: ...


@dataclass
class Task:
    """A downstream task: splits + head size + loss + metrics.

    ``train`` is what is fine-tuned on (after the ``train_size`` subset and after carving ``val``);
    ``val`` is carved from train and used for model selection; ``test`` is the reported split
    (the official test set for images, GLUE dev for text).
    """

    name: str
    kind: str  # "image" | "text" | "mlm"
    num_outputs: int  # classes; 1 for regression; vocabulary size for MLM
    train: Split
    val: Split
    test: Split
    primary_metric: str  # key of Metric.compute() used for model selection and reports
    new_metric: Callable[[], Metric]
    loss_fn: Callable[[torch.Tensor, Batch], torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)  # provenance: files, sizes, label names

    def forward(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Call ``model`` on ``batch`` and return its outputs (logits / predictions)."""
        if self.kind == "image":
            return model(batch["x"])
        keys = ("input_ids", "attention_mask", "token_type_ids", "inputs_embeds")  # inputs_embeds: text attacks
        inputs = {k: v for k, v in batch.items() if k in keys}
        out = model(**inputs)
        return out.logits if hasattr(out, "logits") else out

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.loss_fn(outputs, batch)

    @classmethod
    def from_tensors(cls, name: str, x_train: Any, y_train: Any, x_test: Any, y_test: Any, **options: Any) -> "Task":
        """An image classification task from arrays already in memory — no file in the package needed.

        ``x_*``: N×H×W×C or N×C×H×W, uint8 in 0..255 or floats in [0, 1] (torch tensors or numpy arrays); ``y_*``:
        integer class ids 0..K−1 (the head has K outputs, K from ``y_train`` or ``classes``). Options: ``classes``
        (names), ``model`` (a ModelSpec whose input size and channels the images are matched to), ``data``
        (DataConfig), ``seed``, ``augment`` and ``flip``.

        Augmentation is opt-in: by default the images are trained on exactly as given (no random crops, no flips —
        whatever ``data.augment`` says, whose default is meant for the built-in tasks). ``augment=True`` turns on
        the built-in image augmentation while training (random crops with zero padding + horizontal flips;
        ``flip=False`` keeps the crops only, for digits or text in images); ``flip=True`` alone means the same as
        ``augment=True``; ``data.augment=False`` still turns everything off. Splits, subsets, the stratified
        validation carve, accuracy and cross-entropy are those of the built-in image tasks (``tasks/custom.py``).
        TicketsError for shapes, dtypes or labels that do not fit — test labels above every training label
        included (pass ``classes`` naming every class if that is intended)."""
        return CONSTRUCTORS["tensors"](name, x_train, y_train, x_test, y_test, **options)

    @classmethod
    def from_numpy(cls, name: str, x_train: Any, y_train: Any, x_test: Any, y_test: Any, **options: Any) -> "Task":
        """An image classification task from numpy arrays: ``from_tensors`` after ``numpy.ascontiguousarray``, so
        views torch cannot share (negative strides, e.g. OpenCV's BGR reversed with ``x[..., ::-1]``), memory maps
        and anything else ``numpy`` turns into one array are taken as they are.

        ``x_*``: N×H×W×C or N×C×H×W, uint8 in 0..255 or floats in [0, 1]; ``y_*``: integer class ids 0..K−1.
        Options as ``from_tensors`` (``classes``, ``model``, ``data``, ``seed``, ``augment``, ``flip``): the arrays
        are used as given — no random crops or flips unless asked with ``augment=True`` (crops + flips) or
        ``augment=True, flip=False`` (crops only). TicketsError (one line) for an argument that is not one
        rectangular array, and for what ``from_tensors`` refuses (test labels outside the training labels'
        range among them)."""
        return CONSTRUCTORS["numpy"](name, x_train, y_train, x_test, y_test, **options)

    @classmethod
    def from_hf_dataset(cls, dataset: Any, text_fields: Any, label_field: str, metric: str = "accuracy",
                        **options: Any) -> "Task":
        """A text classification task from a Hugging Face ``datasets`` object (see ``tasks/custom.py``)."""
        return CONSTRUCTORS["hf_dataset"](dataset, text_fields, label_field, metric, **options)

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            from tickets.errors import TicketsError

            raise TicketsError(f"unknown split {name!r}: choose one of train, val, test")
        return getattr(self, name)


MIN_VAL_EXAMPLES = 10  # fewer validation examples than this: picking the best epoch is a coin toss (warned)


def carve(n: int, data: DataConfig, seed: int, labels: np.ndarray | None = None,
          *, task: str = "task") -> tuple[np.ndarray, np.ndarray]:
    """(train positions, val positions) of an ``n``-example training split — the one carve of every task.

    A seeded permutation (``numpy.random.default_rng(seed)``) picks the ``train_size`` subset; ``val_size`` (else
    ``round(val_fraction × subset)``, at least 1; ``val_size`` 0: none, for evaluation-only use) of it is carved off
    for model selection. With integer class
    ``labels`` (classification) the carve is stratified: each class gives its share of the validation split
    (largest remainders), so a small validation split still holds every class. Positions keep the permuted
    order. TicketsError when ``train_size`` exceeds ``n`` or the carve leaves no training examples."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    if data.train_size is not None:
        if not 1 <= data.train_size <= n:
            raise TicketsError(f"train_size {data.train_size} is outside 1..{n} for {task!r} (it has {n} training "
                               "examples): lower --train-size")
        perm = perm[: int(data.train_size)]
    m = len(perm)
    n_val = int(data.val_size) if data.val_size is not None else max(1, int(round(float(data.val_fraction) * m)))
    if not 0 <= n_val < m:
        raise TicketsError(f"a validation split of {n_val} leaves no training examples out of {m} in {task!r}: "
                           "lower --val-size / --val-fraction or raise --train-size")
    if 0 < n_val < MIN_VAL_EXAMPLES and data.val_size is None:
        get_logger(__name__).warning(
            "%s: model selection rests on %d validation example%s (%s of a %d-example subset): raise --train-size "
            "or set --val-size", task, n_val, "" if n_val == 1 else "s", data.val_fraction, m)
    if labels is None or not np.issubdtype(np.asarray(labels).dtype, np.integer):
        return perm[n_val:], perm[:n_val]
    y = np.asarray(labels)[perm]
    classes, counts = np.unique(y, return_counts=True)
    share = counts * n_val / m
    take = np.floor(share).astype(int)
    for i in np.argsort(-(share - take), kind="stable")[: n_val - int(take.sum())]:
        take[i] += 1
    is_val = np.zeros(m, dtype=bool)
    for c, k in zip(classes, take):
        is_val[np.flatnonzero(y == c)[:k]] = True
    return perm[~is_val], perm[is_val]
