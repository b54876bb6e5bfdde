"""Masked-language-model tasks on raw text: ``mlm/<corpus>`` (a folder under ``<data_root>/text/``) or
``mlm/<path>`` (a text file, gzip or plain, or a folder laid out like the corpora).

Which file trains and which is reported (``test``):

| corpus | train (+ seeded val carve) | test |
| --- | --- | --- |
| ``wikitext-2`` | ``valid.txt`` (``train.txt`` when present; it is absent from ``shared/``) | ``test.txt`` |
| ``gutenberg`` | ``train.txt.gz`` | ``test.txt.gz`` (``valid.txt.gz`` is unused) |
| ``tinyshakespeare``, single files | the first 90% of the blocks | the last 10% (contiguous, so no overlap) |

A folder in general: train = ``train.*``, else ``valid.*``; test = ``test.*``, else the contiguous last 10%.

Text is tokenised line by line without special tokens (blank lines dropped; WikiText's ``<unk>`` becomes the
tokenizer's unknown token and its `` @-@ ``, `` @,@ ``, `` @.@ `` joiners become ``-``, ``,``, ``.``), concatenated, and
cut into blocks of ``max_length - 2`` tokens, each framed by ``[CLS] … [SEP]`` (the last block may be shorter). The
token stream is cached once per (file, tokenizer) and does not depend on ``max_length``.

Masking (BERT): each non-special token is selected with probability 0.15; a selected token becomes ``[MASK]`` with
probability 0.8, a uniformly random vocabulary token with 0.1, and stays itself with 0.1. ``labels`` hold the
original id at selected positions and -100 elsewhere; ``[CLS]``, ``[SEP]``, ``[UNK]``, padding and every other
special token are never selected. Training batches draw masks from the ``torch.Generator`` passed to ``batches``
(dynamic masking, deterministic given the generator); validation and test masks (and training batches requested
without a generator and without shuffling) are fixed per example: drawn from ``numpy.random.default_rng`` seeded by
(file, block), so metrics are comparable across runs, seeds and ``limit``.

Metrics: ``accuracy`` (masked-token accuracy, primary), ``perplexity`` (exp of the mean masked-token cross
entropy) and ``loss`` (that mean); NaN when no token was masked. ``task.forward`` returns logits only at masked
positions ([M, vocab], row-major), computed from the encoder's hidden states at those positions when the model
offers ``masked_lm_logits`` (``models.hf.HFTextModel``); other models give full logits, gathered afterwards.
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tickets.errors import TicketsError
from tickets.tasks.base import Batch, DataConfig, Task, carve
from tickets.tasks.text import (
    TokenSplit,
    cached_arrays,
    dynamic_padding_default,
    file_hash,
    model_max_length,
    require_tokenizer,
    tokenizer_hash,
)

MLM_CORPORA = ["wikitext-2", "gutenberg", "tinyshakespeare"]
DEFAULT_MAX_LENGTH = 128
MLM_PROBABILITY = 0.15
TEST_FRACTION = 0.1  # single-file corpora: the contiguous tail that becomes `test`
_TEXT_SUFFIXES = (".txt", ".txt.gz", ".gz", ".raw", ".tokens")
_CLEAN_VERSION = 1


# --- files -----------------------------------------------------------------------------------------------------
def _find(folder: Path, stem: str) -> Path | None:
    for suffix in (".txt", ".txt.gz", ".raw", ".tokens", ".gz"):
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def canonical_name(name: str) -> str:
    """The task name as the loaded task reports it (``mlm/<corpus>``), checked without reading the corpus:
    TicketsError unless it names a known corpus or an existing file / folder."""
    ref = name.split("/", 1)[1] if name.startswith("mlm/") else name
    if not ref or (ref not in MLM_CORPORA and not Path(ref).expanduser().exists()):
        raise TicketsError(f"unknown MLM corpus {name!r}: choose one of {', '.join('mlm/' + c for c in MLM_CORPORA)} "
                           "or mlm/<path-to-text-file>")
    return f"mlm/{ref}"


def resolve_corpus(name: str, data_root: str | os.PathLike | None) -> tuple[str, Path, Path | None]:
    """(corpus label, train file, test file or None for a contiguous tail split)."""
    from tickets.paths import data_root as resolve_root

    ref = name.split("/", 1)[1] if name.startswith("mlm/") else name
    if not ref:
        raise TicketsError(f"empty corpus in {name!r}: use mlm/<corpus> ({', '.join(MLM_CORPORA)}) or mlm/<path>")
    candidates: list[Path] = []
    root = resolve_root(data_root, required=False)
    if root is not None and "/" not in ref and os.sep not in ref:
        candidates.append(root / "text" / ref)
    candidates.append(Path(ref).expanduser())
    target = next((c for c in candidates if c.exists()), None)
    if target is None:
        where = f"{root / 'text'}" if root is not None else "no data root (pass --data-root or set TICKETS_DATA)"
        raise TicketsError(
            f"unknown corpus {ref!r} for {name!r}: not in {where} and not a file; choose one of "
            f"{', '.join('mlm/' + c for c in MLM_CORPORA)} or mlm/<path-to-text-file>"
        )
    if target.is_file():
        return target.name, target, None
    train = _find(target, "train") or _find(target, "valid")
    test = _find(target, "test")
    if train is None:
        files = sorted(p for p in target.iterdir() if p.is_file() and p.name.endswith(_TEXT_SUFFIXES))
        if len(files) != 1:
            raise TicketsError(
                f"corpus folder {str(target)!r} has no train/valid text file and {len(files)} other text files: "
                "point mlm/<path> at one file"
            )
        return target.name, files[0], None
    if test is not None and test.resolve() == train.resolve():
        test = None
    return target.name, train, test


def read_lines(path: Path) -> Iterator[str]:
    with open(path, "rb") as fb:
        magic = fb.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            yield line.rstrip("\n").rstrip("\r")


def clean_line(line: str, unk: str | None) -> str:
    line = line.strip()
    if not line:
        return ""
    line = line.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    if unk:
        line = line.replace("<unk>", unk)
    return line


def tokenize_file(tokenizer: Any, path: Path, batch_lines: int = 8192) -> np.ndarray:
    """The file's token stream (int32), without special tokens."""
    unk = getattr(tokenizer, "unk_token", None)
    parts: list[np.ndarray] = []
    buf: list[str] = []

    def flush():
        if buf:
            enc = tokenizer(
                buf, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False, verbose=False
            )["input_ids"]
            parts.append(np.fromiter((t for s in enc for t in s), dtype=np.int32))
            buf.clear()

    for line in read_lines(path):
        text = clean_line(line, unk)
        if text:
            buf.append(text)
            if len(buf) >= batch_lines:
                flush()
    flush()
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def token_stream(tokenizer: Any, path: Path) -> np.ndarray:
    key = {"tokenizer": tokenizer_hash(tokenizer), "file": file_hash(path), "clean": _CLEAN_VERSION}
    return cached_arrays(f"mlm-{path.name}", key, lambda: {"stream": tokenize_file(tokenizer, path)})["stream"]


def block_store(stream: np.ndarray, body: int) -> dict[str, np.ndarray]:
    n = len(stream)
    starts = np.arange(0, n, body, dtype=np.int64)
    offsets = np.append(starts, n).astype(np.int64)
    return {"ids": stream, "offsets": offsets}


# --- masking ---------------------------------------------------------------------------------------------------
def mask_tokens(
    ids: torch.Tensor,
    special: torch.Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    u_select: torch.Tensor,
    u_action: torch.Tensor,
    random_tokens: torch.Tensor,
    probability: float = MLM_PROBABILITY,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking from given uniforms: returns (masked input ids, labels with -100 where not selected)."""
    selected = (u_select < probability) & ~special
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    out = ids.clone()
    to_mask = selected & (u_action < 0.8)
    to_random = selected & (u_action >= 0.8) & (u_action < 0.9)
    out[to_mask] = mask_id
    out[to_random] = random_tokens[to_random] % vocab_size
    return out, labels


class MLMSplit(TokenSplit):
    """Token blocks from one file; ``collate`` frames them with [CLS]/[SEP] and masks them (see module doc)."""

    def __init__(self, store, rows, *, cls_id, sep_id, mask_id, special_ids, vocab_size, tag, fixed_masks, **kw):
        super().__init__(store, rows, token_types=False, **kw)
        self.cls_id, self.sep_id, self.mask_id = int(cls_id), int(sep_id), int(mask_id)
        self.special_ids = np.asarray(sorted(set(int(i) for i in special_ids)), dtype=np.int64)
        self.vocab_size = int(vocab_size)
        self.tag = int(tag)
        self.fixed_masks = bool(fixed_masks)
        self.probability = MLM_PROBABILITY

    def lengths(self) -> np.ndarray:
        off = self.store["offsets"]
        return np.minimum(off[self.rows + 1] - off[self.rows], self.max_length - 2) + 2

    def batches(self, batch_size, *, shuffle=False, generator=None, augment=False, drop_last=False):
        dynamic = not self.fixed_masks and (shuffle or generator is not None)
        for positions in self.order(batch_size, shuffle, generator, drop_last):
            yield self.collate(positions, generator=generator, dynamic=dynamic)

    def pad(self, positions):
        rows = self.rows[positions]
        off, ids = self.store["offsets"], self.store["ids"]
        body = np.minimum(off[rows + 1] - off[rows], self.max_length - 2)
        lens = body + 2
        width = int(lens.max(initial=2)) if self.dynamic_padding else self.max_length
        out = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        for i, (r, n) in enumerate(zip(rows, body)):
            out[i, 0] = self.cls_id
            out[i, 1 : n + 1] = ids[off[r] : off[r] + n]
            out[i, n + 1] = self.sep_id
        attn = (np.arange(width)[None, :] < lens[:, None]).astype(np.int64)
        return out, attn, None, rows

    def collate(self, positions, generator=None, dynamic: bool = False) -> Batch:
        ids_np, attn_np, _, rows = self.pad(positions)
        ids, attn = torch.from_numpy(ids_np), torch.from_numpy(attn_np)
        special = torch.from_numpy(np.isin(ids_np, self.special_ids)) | (attn == 0)
        shape = ids.shape
        if dynamic:
            u_sel = torch.rand(shape, generator=generator)
            u_act = torch.rand(shape, generator=generator)
            rnd = torch.randint(self.vocab_size, shape, generator=generator)
        else:
            u_sel, u_act, rnd = self.fixed_uniforms(rows, shape[1])
        masked, labels = mask_tokens(
            ids, special, mask_id=self.mask_id, vocab_size=self.vocab_size, u_select=u_sel, u_action=u_act,
            random_tokens=rnd, probability=self.probability,
        )
        return {"input_ids": masked, "attention_mask": attn, "labels": labels, "index": torch.from_numpy(rows.copy())}

    def fixed_uniforms(self, rows: np.ndarray, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-block draws that depend only on (file tag, block id), never on the batch or its padding."""
        L = self.max_length
        sel = np.empty((len(rows), L), dtype=np.float32)
        act = np.empty((len(rows), L), dtype=np.float32)
        rnd = np.empty((len(rows), L), dtype=np.int64)
        for i, r in enumerate(rows):
            g = np.random.default_rng([0x71C4, self.tag, int(r)])
            sel[i] = g.random(L, dtype=np.float32)
            act[i] = g.random(L, dtype=np.float32)
            rnd[i] = g.integers(0, self.vocab_size, L)
        if width > L:  # cannot happen: blocks are at most max_length long
            raise AssertionError("block wider than max_length")
        return (torch.from_numpy(sel[:, :width]), torch.from_numpy(act[:, :width]), torch.from_numpy(rnd[:, :width]))


# --- task, loss, metric ----------------------------------------------------------------------------------------
def _masked(outputs: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    labels = batch["labels"]
    select = labels != -100
    if outputs.dim() == 3:  # full [N, L, V] logits from a plain model: keep the masked positions
        outputs = outputs[select]
    return outputs, labels[select]


def mlm_loss(outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
    logits, target = _masked(outputs, batch)
    if target.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), target)


class MLMMetric:
    def __init__(self):
        self.ce = 0.0
        self.correct = 0
        self.count = 0

    def update(self, outputs: torch.Tensor, batch: Batch) -> None:
        logits, target = _masked(outputs.detach(), batch)
        if target.numel() == 0:
            return
        logits = logits.float()
        self.ce += float(F.cross_entropy(logits, target, reduction="sum"))
        self.correct += int((logits.argmax(-1) == target).sum())
        self.count += int(target.numel())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return {"accuracy": float("nan"), "perplexity": float("nan"), "loss": float("nan")}
        mean = self.ce / self.count
        return {"accuracy": self.correct / self.count, "perplexity": math.exp(min(mean, 700.0)), "loss": mean}


class MLMTask(Task):
    """A Task whose ``forward`` returns logits at masked positions only ([M, vocab])."""

    def forward(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        keys = ("input_ids", "attention_mask", "token_type_ids", "inputs_embeds")  # as Task.forward
        inputs = {k: v for k, v in batch.items() if k in keys}
        select = batch["labels"] != -100
        fast = getattr(model, "masked_lm_logits", None)
        if fast is not None:
            return fast(inputs, select)
        out = model(**inputs)
        logits = out.logits if hasattr(out, "logits") else out
        return logits[select]


def load_mlm_task(
    name: str,
    *,
    model: Any,
    data_root: str | os.PathLike | None = None,
    data: DataConfig = DataConfig(),
    seed: int = 0,
    dynamic_padding: bool | None = None,
) -> MLMTask:
    tok = require_tokenizer(model, name)
    for attr in ("mask_token_id", "cls_token_id", "sep_token_id"):
        if getattr(tok, attr, None) is None:
            what = attr.replace("_id", "")
            raise TicketsError(f"{name}: the tokenizer has no {what}: MLM needs a BERT-family tokenizer")
    label, train_file, test_file = resolve_corpus(name, data_root)
    max_length = model_max_length(model, data.max_length or DEFAULT_MAX_LENGTH)
    if max_length < 8:
        raise TicketsError(f"max_length {max_length} is too short for MLM blocks: use at least 8")
    body = max_length - 2
    vocab = int((getattr(model, "info", None) or {}).get("vocab_size") or len(tok))
    specials = set(getattr(tok, "all_special_ids", ()))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    dyn = dynamic_padding_default(data, dynamic_padding)

    def make(store, rows, tag, fixed):
        return MLMSplit(
            store, rows, cls_id=tok.cls_token_id, sep_id=tok.sep_token_id, mask_id=tok.mask_token_id,
            special_ids=specials | {pad_id}, vocab_size=min(vocab, len(tok)), tag=tag, fixed_masks=fixed,
            pad_id=pad_id, max_length=max_length, dynamic_padding=dyn,
        )

    train_hash = file_hash(train_file)
    train_store = block_store(token_stream(tok, train_file), body)
    n_train = len(train_store["offsets"]) - 1
    files = {"train": str(train_file)}
    if test_file is not None:
        test_hash = file_hash(test_file)
        test_store = block_store(token_stream(tok, test_file), body)
        test_rows = np.arange(len(test_store["offsets"]) - 1)
        pool = np.arange(n_train)
        files["test"] = str(test_file)
    else:
        test_hash, test_store = train_hash, train_store
        n_test = max(1, int(round(TEST_FRACTION * n_train))) if n_train >= 2 else 0
        pool = np.arange(n_train - n_test)
        test_rows = np.arange(n_train - n_test, n_train)
        files["test"] = f"{Path(train_file).name} (last {n_test} of {n_train} blocks)"  # no path: compared by name
    if len(pool) < 2:
        raise TicketsError(
            f"{name}: {train_file} gives only {len(pool)} training block(s) of {body} tokens: use a bigger file"
        )
    tr, va = carve(len(pool), data, seed, task=name)
    train = make(train_store, pool[tr], int(train_hash[:8], 16), False)
    val = make(train_store, pool[va], int(train_hash[:8], 16), True).limit(data.limit)
    test = make(test_store, test_rows, int(test_hash[:8], 16), True).limit(data.limit)
    return MLMTask(
        name=name if name.startswith("mlm/") else f"mlm/{name}",
        kind="mlm",
        num_outputs=vocab,
        train=train,
        val=val,
        test=test,
        primary_metric="accuracy",
        new_metric=MLMMetric,
        loss_fn=mlm_loss,
        info={
            "files": files,
            "sizes": {"train": len(train), "val": len(val), "test": len(test), "train_blocks": int(len(pool))},
            "block_tokens": body,
            "max_length": max_length,
            "mlm_probability": MLM_PROBABILITY,
            "metrics": ["accuracy", "perplexity", "loss"],
            "dynamic_padding": dyn,
            "seed": seed,
        },
    )
