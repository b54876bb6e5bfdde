"""Tasks built from data the user already holds, with no file in the package: ``Task.from_tensors`` (images)
and ``Task.from_hf_dataset`` (text classification from a Hugging Face ``datasets`` object).

They register themselves in ``tasks.base.CONSTRUCTORS`` when the tasks package is imported.
"""

from __future__ import annotations

from typing import Any

from tickets.config import DataConfig
from tickets.hparams import validate
from tickets.tasks.base import CONSTRUCTORS, Task
from tickets.tasks.images import RawImages, build_image_task, from_arrays


def from_tensors(name: str, x_train: Any, y_train: Any, x_test: Any, y_test: Any, *,
                 classes: list[str] | None = None, model: Any = None, data: DataConfig | None = None, seed: int = 0,
                 flip: bool = True) -> Task:
    """See ``Task.from_tensors``."""
    data = data or DataConfig()
    validate(data, "data")
    xs, ys, scale = from_arrays(x_train, y_train, x_test, y_test, name)
    k = int(max(ys[0].max().item(), ys[1].max().item())) + 1 if len(ys[0]) else 0
    names = list(classes) if classes is not None else [str(i) for i in range(k)]
    raw = RawImages(xs[0], ys[0], xs[1], ys[1], names, scale=scale, source="tensors")
    return build_image_task(name, raw, model=model, data=data, seed=seed, flip=flip)


CONSTRUCTORS["tensors"] = from_tensors
