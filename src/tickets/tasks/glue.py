"""GLUE tasks from the official TSV layout (``<data_root>/glue/<SST-2|CoLA|MRPC|RTE|STS-B|QQP|WNLI>/``), or from
Hugging Face ``datasets`` (``nyu-mll/glue``) when those files are absent and ``datasets`` is installed.

Splits: ``test`` = GLUE dev (``dev.tsv``; the reported split), ``train``/``val`` carved (seeded) from ``train.tsv``.
TSV fields are never quoted in GLUE, so lines are split on tabs with no quote handling (a ``"`` is just a
character); headers are matched by column name (MRPC's UTF-8 byte-order mark is stripped); CoLA has no header
(columns: source, label, original label, sentence). Rows with too few fields or an unknown label are skipped and
counted in ``task.info["skipped"]``.

Metrics (``primary`` first; the BERT paper's GLUE conventions):

| task | metrics | primary |
| --- | --- | --- |
| sst2, rte, wnli | accuracy | accuracy |
| mrpc, qqp | f1 (positive class = paraphrase/duplicate), accuracy | f1 |
| cola | mcc (Matthews correlation), accuracy | mcc |
| stsb | spearman, pearson | spearman |

Every metric dict also has ``loss`` (mean cross entropy; mean squared error for STS-B); all values are NaN when
the split is empty. Classification metric dicts also have ``predicted``: how many examples were predicted as each
class, in class-id order (``tickets.diagnostics.degenerate_predictions`` reads it; absent when the split is empty).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tickets.errors import TicketsError
from tickets.tasks.base import Batch, DataConfig, Task, carve
from tickets.tasks.text import (
    TokenSplit,
    cached_arrays,
    dynamic_padding_default,
    file_hash,
    model_max_length,
    pack_sequences,
    require_tokenizer,
    tokenizer_hash,
)


@dataclass(frozen=True)
class GlueSpec:
    folder: str
    text: tuple[str, ...]  # header names of the text columns (or positions when header=False)
    label: str  # header name of the label column (or its position)
    label_values: tuple[str, ...] | None  # raw label strings in class-id order; None: regression (float)
    label_names: tuple[str, ...] | None
    max_length: int
    metric: str  # "accuracy" | "f1" | "mcc" | "corr"
    hf_columns: tuple[str, ...]  # text columns in the Hugging Face `glue` dataset
    header: bool = True


GLUE_TASKS: dict[str, GlueSpec] = {
    "sst2": GlueSpec(
        "SST-2", ("sentence",), "label", ("0", "1"), ("negative", "positive"), 64, "accuracy", ("sentence",)
    ),
    "cola": GlueSpec(
        "CoLA", ("3",), "1", ("0", "1"), ("unacceptable", "acceptable"), 64, "mcc", ("sentence",), header=False
    ),
    "mrpc": GlueSpec(
        "MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"), ("not_equivalent", "equivalent"), 128, "f1",
        ("sentence1", "sentence2"),
    ),
    "qqp": GlueSpec(
        "QQP", ("question1", "question2"), "is_duplicate", ("0", "1"), ("not_duplicate", "duplicate"), 128, "f1",
        ("question1", "question2"),
    ),
    "rte": GlueSpec(
        "RTE", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"), ("entailment", "not_entailment"),
        128, "accuracy", ("sentence1", "sentence2"),
    ),
    "wnli": GlueSpec(
        "WNLI", ("sentence1", "sentence2"), "label", ("0", "1"), ("not_entailment", "entailment"), 128, "accuracy",
        ("sentence1", "sentence2"),
    ),
    "stsb": GlueSpec("STS-B", ("sentence1", "sentence2"), "score", None, None, 128, "corr", ("sentence1", "sentence2")),
}
PRIMARY = {"accuracy": "accuracy", "f1": "f1", "mcc": "mcc", "corr": "spearman"}
METRICS = {
    "accuracy": ["accuracy"],
    "f1": ["f1", "accuracy"],
    "mcc": ["mcc", "accuracy"],
    "corr": ["spearman", "pearson"],
}


def glue_key(name: str) -> str:
    short = name.split("/", 1)[1] if name.startswith("glue/") else name
    key = short.lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise TicketsError(f"unknown GLUE task {name!r}: choose one of {', '.join('glue/' + k for k in GLUE_TASKS)}")
    return key


def train_split_size(name: str, data_root: str | os.PathLike | None = None) -> int | None:
    """Labelled examples in the task's train.tsv (as parsed: rows with a bad label are not counted), or None when
    the TSVs are not under the data root."""
    key = glue_key(name)
    try:
        folder, _ = _glue_dir(key, data_root)
    except TicketsError:
        return None
    if folder is None or not (folder / "train.tsv").is_file():
        return None
    return len(parse_glue_tsv(folder / "train.tsv", GLUE_TASKS[key]).labels)


def canonical_name(name: str) -> str:
    """``glue/SST-2`` → ``glue/sst2`` (the name the loaded task reports); TicketsError for an unknown GLUE task."""
    return f"glue/{glue_key(name)}"


# --- parsing ---------------------------------------------------------------------------------------------------
@dataclass
class Examples:
    a: list[str]
    b: list[str] | None
    labels: np.ndarray  # int64 class ids or float32 scores
    skipped: int = 0


def read_tsv(path: str | os.PathLike) -> list[list[str]]:
    """Rows of a GLUE TSV: UTF-8 (BOM stripped), split on tabs, no quote handling, trailing CR removed."""
    text = Path(path).read_bytes().decode("utf-8-sig")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r").split("\t") for line in lines]


def parse_glue_tsv(path: str | os.PathLike, spec: GlueSpec) -> Examples:
    rows = read_tsv(path)
    if spec.header:
        if not rows:
            raise TicketsError(f"{path} is empty: expected a GLUE TSV with a header row")
        header = [h.strip() for h in rows[0]]
        missing = [c for c in (*spec.text, spec.label) if c not in header]
        if missing:
            raise TicketsError(
                f"{path} lacks column(s) {', '.join(map(repr, missing))} (header: {header}): "
                f"expected the official GLUE {spec.folder} layout"
            )
        cols = [header.index(c) for c in spec.text]
        lab = header.index(spec.label)
        rows = rows[1:]
    else:
        cols = [int(c) for c in spec.text]
        lab = int(spec.label)
    need = max(*cols, lab) + 1
    a: list[str] = []
    b: list[str] = []
    labels: list[Any] = []
    skipped = 0
    lookup = {v: i for i, v in enumerate(spec.label_values)} if spec.label_values else None
    for row in rows:
        if len(row) < need:
            skipped += 1
            continue
        raw = row[lab].strip()
        if lookup is not None:
            if raw not in lookup:
                skipped += 1
                continue
            y: Any = lookup[raw]
        else:
            try:
                y = float(raw)
            except ValueError:
                skipped += 1
                continue
        a.append(row[cols[0]])
        if len(cols) > 1:
            b.append(row[cols[1]])
        labels.append(y)
    arr = np.asarray(labels, dtype=np.int64 if lookup is not None else np.float32)
    return Examples(a, b if len(cols) > 1 else None, arr, skipped)


def _hf_examples(key: str, split: str, looked: str) -> Examples:
    try:
        import datasets  # noqa: F401  (optional dependency)
    except ImportError as e:
        raise TicketsError(
            f"glue/{key}: no GLUE TSVs ({looked}) and the `datasets` package is not installed: pass --data-root DIR "
            f"(or set TICKETS_DATA) holding glue/{GLUE_TASKS[key].folder}/{{train,dev}}.tsv, or pip install datasets"
        ) from e
    spec = GLUE_TASKS[key]
    try:
        ds = datasets.load_dataset("nyu-mll/glue", key, split=split)
    except Exception as e:  # network, hub, or format problems
        raise TicketsError(
            f"glue/{key}: could not load nyu-mll/glue from the hub ({e}); pass --data-root with GLUE TSVs"
        ) from e
    a = [str(x) for x in ds[spec.hf_columns[0]]]
    b = [str(x) for x in ds[spec.hf_columns[1]]] if len(spec.hf_columns) > 1 else None
    y = np.asarray(ds["label"], dtype=np.float32 if spec.label_values is None else np.int64)
    keep = y >= 0 if spec.label_values is not None else np.ones(len(y), bool)  # unlabeled rows are -1
    idx = np.nonzero(keep)[0]
    return Examples(
        [a[i] for i in idx], [b[i] for i in idx] if b is not None else None, y[idx], int(len(y) - len(idx))
    )


def tokenize_examples(tokenizer: Any, ex: Examples, max_length: int, chunk: int = 4096) -> dict[str, np.ndarray]:
    """Token ids (with special tokens, truncated longest-first to ``max_length``) packed flat + offsets."""
    want_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    ids: list[list[int]] = []
    types: list[list[int]] | None = [] if want_types else None
    for s in range(0, len(ex.a), chunk):
        a = ex.a[s : s + chunk]
        b = ex.b[s : s + chunk] if ex.b is not None else None
        enc = tokenizer(
            a, b, truncation=True, max_length=max_length, return_attention_mask=False, return_token_type_ids=want_types
        )
        ids.extend(enc["input_ids"])
        if types is not None:
            types.extend(enc["token_type_ids"])
    out = pack_sequences(ids, types)
    out["labels"] = ex.labels
    return out


# --- metrics ---------------------------------------------------------------------------------------------------
class GlueMetric:
    """Accumulates predictions and labels; GLUE metrics via scikit-learn / SciPy on ``compute``, plus ``loss``
    (mean cross entropy, or mean squared error for STS-B). NaN for every metric when nothing was seen."""

    def __init__(self, kind: str):
        self.kind = kind
        self.preds: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.loss_sum = 0.0
        self.num_classes = 0  # classification: the width of the logits seen

    def update(self, outputs: torch.Tensor, batch: Batch) -> None:
        out = outputs.detach().float()
        labels = batch["labels"].detach().to(out.device)
        if self.kind == "corr":
            pred = out.reshape(-1)
            self.loss_sum += float(F.mse_loss(pred, labels.float(), reduction="sum"))
        else:
            pred = out.argmax(dim=-1)
            self.loss_sum += float(F.cross_entropy(out, labels, reduction="sum"))
            self.num_classes = max(self.num_classes, int(out.shape[-1]))
        self.preds.append(pred.cpu().numpy())
        self.labels.append(labels.cpu().numpy())

    def compute(self) -> dict[str, Any]:
        p = np.concatenate(self.preds) if self.preds else np.zeros(0)
        y = np.concatenate(self.labels) if self.labels else np.zeros(0)
        if len(y) == 0:
            return {k: float("nan") for k in (*METRICS[self.kind], "loss")}
        out: dict[str, Any] = {**glue_metrics(self.kind, p, y), "loss": self.loss_sum / len(y)}
        if self.kind != "corr":
            out["predicted"] = np.bincount(p.astype(np.int64), minlength=self.num_classes).tolist()
        return out


def glue_metrics(kind: str, preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """GLUE metrics of ``kind`` ("accuracy", "f1", "mcc", "corr") from predicted classes (or scores) and labels."""
    if len(labels) == 0:
        return {k: float("nan") for k in METRICS[kind]}
    if kind == "corr":
        return {"spearman": _corr("spearman", preds, labels), "pearson": _corr("pearson", preds, labels)}
    from sklearn.metrics import f1_score, matthews_corrcoef

    acc = float(np.mean(preds == labels))
    if kind == "f1":
        return {"f1": float(f1_score(labels, preds, pos_label=1, zero_division=0)), "accuracy": acc}
    if kind == "mcc":
        return {"mcc": float(matthews_corrcoef(labels, preds)), "accuracy": acc}
    return {"accuracy": acc}


def _corr(which: str, x: np.ndarray, y: np.ndarray) -> float:
    """Pearson / Spearman; 0.0 (not NaN) when either side is constant, as sklearn does for Matthews."""
    from scipy import stats

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    r = stats.pearsonr(x, y)[0] if which == "pearson" else stats.spearmanr(x, y)[0]
    return float(r) if np.isfinite(r) else 0.0


def _classification_loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    return F.cross_entropy(outputs, batch["labels"])


def _regression_loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    return F.mse_loss(outputs.reshape(-1), batch["labels"].to(outputs.dtype))


# --- task ------------------------------------------------------------------------------------------------------
def _glue_dir(key: str, data_root: str | os.PathLike | None) -> tuple[Path | None, str]:
    """(the task's TSV folder or None, where it was looked for)."""
    from tickets.paths import data_root as resolve_root

    root = resolve_root(data_root, required=False)
    if root is None:
        return None, "no data root given"
    folder = root / "glue" / GLUE_TASKS[key].folder
    found = (folder / "train.tsv").is_file() and (folder / "dev.tsv").is_file()
    return (folder if found else None), f"none in {folder}"


def load_glue_task(
    name: str,
    *,
    model: Any,
    data_root: str | os.PathLike | None = None,
    data: DataConfig = DataConfig(),
    seed: int = 0,
    dynamic_padding: bool | None = None,
) -> Task:
    key = glue_key(name)
    spec = GLUE_TASKS[key]
    tok = require_tokenizer(model, name)
    max_length = model_max_length(model, data.max_length or spec.max_length)
    folder, looked = _glue_dir(key, data_root)
    tok_key = {"tokenizer": tokenizer_hash(tok), "max_length": max_length, "task": key}
    stores: dict[str, dict[str, np.ndarray]] = {}
    skipped: dict[str, int] = {}
    files: dict[str, str] = {}
    for split, fname, hf_split in (("train", "train.tsv", "train"), ("test", "dev.tsv", "validation")):
        if folder is not None:
            path = folder / fname
            files[split] = str(path)

            def build(path=path):
                ex = parse_glue_tsv(path, spec)
                arr = tokenize_examples(tok, ex, max_length)
                arr["skipped"] = np.asarray([ex.skipped], dtype=np.int64)
                return arr

            store = cached_arrays(f"glue-{key}-{split}", {**tok_key, "file": file_hash(path)}, build)
        else:
            ex = _hf_examples(key, hf_split, looked)
            files[split] = f"hf:nyu-mll/glue/{key}/{hf_split}"
            h = hashlib.blake2b(digest_size=16)
            for s in (ex.a, ex.b or []):
                h.update("\x1e".join(s).encode())
            h.update(ex.labels.tobytes())

            def build(ex=ex):
                arr = tokenize_examples(tok, ex, max_length)
                arr["skipped"] = np.asarray([ex.skipped], dtype=np.int64)
                return arr

            store = cached_arrays(f"glue-{key}-{split}-hf", {**tok_key, "content": h.hexdigest()}, build)
        skipped[split] = int(store.pop("skipped")[0]) if "skipped" in store else 0
        stores[split] = store

    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    dyn = dynamic_padding_default(data, dynamic_padding)
    use_types = "token_type_ids" in getattr(tok, "model_input_names", ())

    def make(store, rows):
        return TokenSplit(store, rows, pad_id=pad_id, max_length=max_length, token_types=use_types, dynamic_padding=dyn)

    n_train = len(stores["train"]["offsets"]) - 1
    labels = stores["train"].get("labels")
    tr, va = carve(n_train, data, seed, labels, task=f"glue/{key}")
    train = make(stores["train"], tr)
    val = make(stores["train"], va).limit(data.limit)
    test = make(stores["test"], np.arange(len(stores["test"]["offsets"]) - 1)).limit(data.limit)
    regression = spec.label_values is None
    kind = spec.metric
    return Task(
        name=f"glue/{key}",
        kind="text",
        num_outputs=1 if regression else len(spec.label_values),
        train=train,
        val=val,
        test=test,
        primary_metric=PRIMARY[kind],
        new_metric=lambda: GlueMetric(kind),
        loss_fn=_regression_loss if regression else _classification_loss,
        info={
            "files": files,
            "source": "tsv" if folder is not None else "hf-datasets",
            "sizes": {"train": len(train), "val": len(val), "test": len(test), "train_file": n_train},
            "skipped": skipped,
            "label_names": list(spec.label_names) if spec.label_names else None,
            "problem_type": "regression" if regression else "single_label_classification",
            "metrics": [*METRICS[kind], "loss"],
            "max_length": max_length,
            "dynamic_padding": dyn,
            "reported_split": "GLUE dev (dev.tsv)",
            "seed": seed,
        },
    )
