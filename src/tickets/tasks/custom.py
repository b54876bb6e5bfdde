"""Tasks built from data the user already holds, with no file in the package: ``Task.from_tensors`` and
``Task.from_numpy`` (images) and ``Task.from_hf_dataset`` (text classification from a Hugging Face ``datasets``
object; ``datasets`` itself is optional: any mapping of split → columns works).

They register themselves in ``tasks.base.CONSTRUCTORS`` when the tasks package is imported.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tickets.config import DataConfig
from tickets.errors import TicketsError
from tickets.hparams import validate
from tickets.tasks.base import CONSTRUCTORS, Task
from tickets.tasks.images import RawImages, build_image_task, from_arrays


def from_tensors(name: str, x_train: Any, y_train: Any, x_test: Any, y_test: Any, *,
                 classes: list[str] | None = None, model: Any = None, data: DataConfig | None = None, seed: int = 0,
                 augment: bool | None = None, flip: bool | None = None) -> Task:
    """See ``Task.from_tensors``. Augmentation is opt-in: the arrays are used as given unless ``augment=True``
    (random crops, plus horizontal flips unless ``flip=False``) or ``flip=True`` (the same) — and even then only
    while ``data.augment`` (the run's DataConfig) allows it."""
    data = data or DataConfig()
    validate(data, "data")
    if augment is False and flip:
        raise TicketsError(f"task {name!r}: flip=True asks for augmentation but augment=False: pass augment=True "
                           "(random crops and flips) or drop flip=True")
    wanted = bool(flip) if augment is None else bool(augment)
    if not wanted and data.augment:
        data = dataclasses.replace(data, augment=False)  # a user's arrays are used as given unless asked
    xs, ys, scale = from_arrays(x_train, y_train, x_test, y_test, name)
    top_train = int(ys[0].max().item()) if len(ys[0]) else -1
    top_test = int(ys[1].max().item()) if len(ys[1]) else -1
    if classes is not None:
        names = list(classes)
        if max(top_train, top_test) >= len(names):
            raise TicketsError(f"task {name!r}: class id {max(top_train, top_test)} but {len(names)} class names: "
                               "pass classes= naming every class (ids 0..K-1)")
    else:
        if top_test > top_train:
            raise TicketsError(f"task {name!r}: y_test holds class id {top_test} but y_train's largest is "
                               f"{top_train}: the head would be sized by test labels never trained on; fix the "
                               "labels, or pass classes= naming every class")
        names = [str(i) for i in range(top_train + 1)]
    raw = RawImages(xs[0], ys[0], xs[1], ys[1], names, scale=scale, source="tensors")
    return build_image_task(name, raw, model=model, data=data, seed=seed,
                            flip=wanted and flip is not False)


CONSTRUCTORS["tensors"] = from_tensors


def from_numpy(name: str, x_train: Any, y_train: Any, x_test: Any, y_test: Any, **options: Any) -> Task:
    """See ``Task.from_numpy``."""
    arrays = []
    for what, value in (("x_train", x_train), ("y_train", y_train), ("x_test", x_test), ("y_test", y_test)):
        try:
            array = np.ascontiguousarray(value)
        except (TypeError, ValueError) as exc:  # ragged nested lists, objects numpy cannot read
            raise TicketsError(f"task {name!r}: {what} is not one rectangular array ({exc})") from None
        if array.dtype == object:
            raise TicketsError(f"task {name!r}: {what} is not one rectangular array of numbers (dtype object)")
        arrays.append(array)
    return from_tensors(name, *arrays, **options)


CONSTRUCTORS["numpy"] = from_numpy

# metric name → GLUE metric kind (tasks/glue.py): classification metrics, or "corr" for regression (STS-B style)
_HF_METRICS = {"accuracy": "accuracy", "f1": "f1", "mcc": "mcc", "matthews": "mcc", "corr": "corr",
               "spearman": "corr", "pearson": "corr"}


def from_hf_dataset(dataset: Any, text_fields: Any, label_field: str, metric: str = "accuracy", *,
                    model: Any = None, tokenizer: Any = None, name: str = "hf-dataset", train_split: str = "train",
                    test_split: str | None = None, data: DataConfig | None = None, seed: int = 0,
                    max_length: int = 128, label_names: list[str] | None = None) -> Task:
    """See ``Task.from_hf_dataset``: a text classification (or regression) task from a Hugging Face
    ``datasets.DatasetDict`` — or any mapping of split name → table offering ``column_names`` (or ``keys()``) and
    ``table[column]`` → sequence, e.g. ``{"train": {"sentence": [...], "label": [...]}, "test": {...}}``.

    ``text_fields``: one column (single sentences) or two (sentence pairs, tokenised as a pair). ``label_field``:
    integer class ids (``ClassLabel`` names are used as label names), strings (mapped to ids in sorted order of the
    training split's values), or floats for regression (``metric`` ``corr`` / ``spearman`` / ``pearson``). Rows with
    a negative class id (unlabelled test rows, as GLUE's) are skipped and counted in ``info["skipped"]``.
    ``metric``: ``accuracy``, ``f1`` (positive class 1), ``mcc`` or ``corr`` — GLUE's metrics (``tasks/glue.py``),
    plus ``loss``. Splits: ``train_split`` is fine-tuned on (``data.train_size`` subset, ``val`` carved from it,
    stratified), ``test_split`` (default: ``validation``, else ``test``) is the reported split. Text is tokenised
    by ``tokenizer`` or ``model.tokenizer`` (truncated to ``max_length``, capped at the model's positions) and
    cached by content like GLUE. TicketsError (one line) for missing splits, columns, tokenizer or bad labels.
    """
    import hashlib

    import numpy as np

    from tickets.errors import TicketsError
    from tickets.tasks.base import carve
    from tickets.tasks.glue import (METRICS, PRIMARY, Examples, GlueMetric, _classification_loss, _regression_loss,
                                    tokenize_examples)
    from tickets.tasks.text import (TokenSplit, cached_arrays, dynamic_padding_default, model_max_length,
                                    tokenizer_hash)

    data = data or DataConfig()
    validate(data, "data")
    kind = _HF_METRICS.get(str(metric).lower())
    if kind is None:
        raise TicketsError(f"unknown metric {metric!r} for {name}: choose one of {', '.join(_HF_METRICS)}")
    fields = (text_fields,) if isinstance(text_fields, str) else tuple(text_fields)
    if not 1 <= len(fields) <= 2 or not all(isinstance(f, str) for f in fields):
        raise TicketsError(f"text_fields must name one column or two (a sentence pair), got {text_fields!r}")
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise TicketsError(f"task {name!r} needs a tokenizer: pass model= (a text ModelSpec, e.g. "
                           "tickets.load_model('minilm-l6')) or tokenizer=")
    if not hasattr(dataset, "keys"):  # a single datasets.Dataset
        raise TicketsError(f"{name}: pass a datasets.DatasetDict (or a mapping split -> table) with a train split and "
                           "a validation/test split, e.g. dataset.train_test_split(test_size=0.2, seed=0)")
    splits = list(dataset.keys())
    if test_split is None:
        test_split = next((s for s in ("validation", "test") if s in splits and s != train_split), None)
    for split in (train_split, test_split):
        if split is None or split not in splits:
            raise TicketsError(f"{name}: the dataset has splits {splits}, not {split or 'validation/test'!r}: pass "
                               "train_split= / test_split= naming two of them")

    def columns(table: Any) -> list[str]:
        cols = getattr(table, "column_names", None)
        return list(cols) if cols is not None else list(table.keys())

    regression = kind == "corr"
    train_table = dataset[train_split]
    feature = getattr(getattr(train_table, "features", None) or {}, "get", lambda k: None)(label_field)
    names = list(label_names) if label_names is not None else list(getattr(feature, "names", None) or []) or None
    if not regression and names is None:
        raw = list(train_table[label_field]) if label_field in columns(train_table) else []
        if raw and isinstance(raw[0], str):
            names = sorted(set(raw))
    lookup = {v: i for i, v in enumerate(names)} if names is not None else None

    def examples(split: str) -> Examples:
        table = dataset[split]
        cols = columns(table)
        missing = [c for c in (*fields, label_field) if c not in cols]
        if missing:
            raise TicketsError(f"{name}: split {split!r} has no column(s) {', '.join(map(repr, missing))} (columns: "
                               f"{cols}): pass the text_fields and label_field of your dataset")
        a = [str(x) for x in table[fields[0]]]
        b = [str(x) for x in table[fields[1]]] if len(fields) > 1 else None
        raw = list(table[label_field])
        if len(raw) != len(a) or (b is not None and len(b) != len(a)):
            raise TicketsError(f"{name}: split {split!r} has columns of different lengths: pass a rectangular table")
        try:
            if regression:
                y = np.asarray(raw, dtype=np.float32)
            elif lookup is not None and raw and isinstance(raw[0], str):
                unknown = sorted({v for v in raw if v not in lookup})
                if unknown:
                    raise TicketsError(f"{name}: split {split!r} has labels {unknown[:3]} not in the training split's "
                                       f"{names}: pass label_names=")
                y = np.asarray([lookup[v] for v in raw], dtype=np.int64)
            else:
                y = np.asarray(raw, dtype=np.int64)
        except (TypeError, ValueError):
            raise TicketsError(f"{name}: labels in column {label_field!r} of split {split!r} are neither class ids "
                               "nor class names (or floats with metric='corr'): pass the label column") from None
        keep = np.ones(len(y), bool) if regression else y >= 0
        idx = np.nonzero(keep)[0]
        return Examples([a[i] for i in idx], [b[i] for i in idx] if b is not None else None, y[idx],
                        int(len(y) - len(idx)))

    max_len = model_max_length(model, max_length) if model is not None else int(max_length)
    stores, skipped = {}, {}
    for role, split in (("train", train_split), ("test", test_split)):
        ex = examples(split)
        h = hashlib.blake2b(digest_size=16)
        for part in (ex.a, ex.b or []):
            h.update("\x1e".join(part).encode())
        h.update(ex.labels.tobytes())
        key = {"tokenizer": tokenizer_hash(tok), "max_length": max_len, "content": h.hexdigest(),
               "fields": list(fields)}
        stores[role] = cached_arrays(f"hf-{name}-{role}", key, lambda ex=ex: tokenize_examples(tok, ex, max_len))
        skipped[role] = ex.skipped
    labels = stores["train"]["labels"]
    if not regression:
        top = int(max(labels.max(initial=0), stores["test"]["labels"].max(initial=0)))
        n_classes = len(names) if names is not None else top + 1
        if top >= n_classes:
            raise TicketsError(f"{name}: class id {top} but only {n_classes} label names: pass label_names= for "
                               "every class")
        if n_classes < 2:
            raise TicketsError(f"{name}: one class only in {label_field!r}: a classification task needs two or more")
    pad_id = tok.pad_token_id if getattr(tok, "pad_token_id", None) is not None else 0
    dyn = dynamic_padding_default(data, None)
    use_types = "token_type_ids" in getattr(tok, "model_input_names", ())

    def make(store, rows):
        return TokenSplit(store, rows, pad_id=pad_id, max_length=max_len, token_types=use_types, dynamic_padding=dyn)

    n_train = len(stores["train"]["offsets"]) - 1
    tr, va = carve(n_train, data, seed, None if regression else labels, task=name)
    train = make(stores["train"], tr)
    val = make(stores["train"], va).limit(data.limit)
    test = make(stores["test"], np.arange(len(stores["test"]["offsets"]) - 1)).limit(data.limit)
    return Task(
        name=name, kind="text", num_outputs=1 if regression else n_classes, train=train, val=val, test=test,
        primary_metric=PRIMARY[kind], new_metric=lambda: GlueMetric(kind),
        loss_fn=_regression_loss if regression else _classification_loss,
        info={"source": "hf-dataset", "splits": {"train": train_split, "test": test_split},
              "text_fields": list(fields), "label_field": label_field, "label_names": names,
              "problem_type": "regression" if regression else "single_label_classification",
              "metrics": [*METRICS[kind], "loss"], "sizes": {"train": len(train), "val": len(val), "test": len(test),
                                                             "train_file": n_train},
              "skipped": skipped, "max_length": max_len, "dynamic_padding": dyn, "seed": seed},
    )


CONSTRUCTORS["hf_dataset"] = from_hf_dataset
