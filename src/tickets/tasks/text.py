"""Text tasks: the entry point (``load_text_task``), the tokenise-once cache, and length-bucketed batching.

Shared by ``glue/<task>`` (``tasks/glue.py``) and ``mlm/<corpus-or-path>`` (``tasks/mlm.py``), which register
themselves as task families in ``tasks/__init__.py``.

**Cache.** Tokenised arrays are written once and reused: ``$TICKETS_CACHE/text/`` (default
``$XDG_CACHE_HOME/tickets/text`` or ``~/.cache/tickets/text``; never beside the data, which may be read-only). One
``.safetensors`` file per (source file, tokenizer, settings): flat int32 token ids + int64 offsets (+ uint8 token
types, labels), numpy arrays only, no pickle. The file name carries a hash of the key: format version, the
tokenizer's full definition (sha256 of its ``tokenizer.json`` serialisation: vocabulary, normaliser, special
tokens), the source file's content hash (blake2b of its bytes), and settings such as ``max_length``. Writes are
atomic (temporary file + ``os.replace``); an unwritable cache only costs re-tokenising (a warning says so).

**Batches.** Dynamic padding with length buckets: the (shuffled, if asked) order is cut into chunks of
``bucket_batches`` (50) batches, each chunk is sorted by length and cut into batches, and the batch order is then
shuffled with the same generator; every batch is padded to its longest example. ``split.dynamic_padding = False``
(or ``load_text_task(..., dynamic_padding=False)``, or a ``dynamic_padding`` attribute on ``DataConfig``) turns
this off: plain order, every batch padded to ``max_length``, for throughput comparisons. Evaluation on a CPU
uses ``token_batches`` instead: all examples sorted by length and cut into batches of at most a token budget
(``training/evaluate.py``). Batches carry
``input_ids``, ``attention_mask``, ``token_type_ids`` (models that use them), ``labels`` and ``index`` (the example's
row in its source file).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from tickets.errors import TicketsError
from tickets.fileio import atomic_write
from tickets.tasks.base import Batch, DataConfig, Task

CACHE_VERSION = 1
BUCKET_BATCHES = 50


# --- cache -----------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where tokenised arrays live: ``$TICKETS_CACHE`` or ``$XDG_CACHE_HOME/tickets`` or ``~/.cache/tickets``."""
    env = os.environ.get("TICKETS_CACHE")
    if env:
        root = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tickets"
    return root / "text"


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: str | os.PathLike) -> str:
    """blake2b of the file's bytes (memoised per path, size and mtime within the process)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.blake2b(digest_size=16)
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


def tokenizer_hash(tokenizer: Any) -> str:
    """A hash of everything that decides the tokenizer's output (vocabulary, normaliser, special tokens)."""
    cached = getattr(tokenizer, "_tickets_hash", None)
    if cached:
        return cached
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)  # call-time settings that transformers changes on the backend per call
        spec.pop("padding", None)
        h.update(json.dumps(spec, sort_keys=True).encode())
    else:
        vocab = tokenizer.get_vocab()
        h.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
        h.update(repr(getattr(tokenizer, "do_lower_case", None)).encode())
    h.update(json.dumps(getattr(tokenizer, "special_tokens_map", {}), sort_keys=True, default=str).encode())
    digest = h.hexdigest()[:24]
    try:
        object.__setattr__(tokenizer, "_tickets_hash", digest)
    except Exception:  # pragma: no cover - exotic tokenizers
        pass
    return digest


_CACHE_WARNED: set[str] = set()


def cached_arrays(name: str, key: dict[str, Any], build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load ``name-<hash(key)>.safetensors`` from the cache, or ``build()`` the arrays and store them atomically."""
    from safetensors.numpy import load_file, save_file

    key = {"cache_version": CACHE_VERSION, **key}
    key_json = json.dumps(key, sort_keys=True, default=str)
    digest = hashlib.sha256(key_json.encode()).hexdigest()[:20]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
    path = cache_dir() / f"{safe}-{digest}.safetensors"
    if path.is_file():
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
            if meta.get("key") == key_json:
                return load_file(str(path))
        except Exception:  # corrupt or foreign file: rebuild it
            pass
    arrays = build()
    try:
        arrays_c = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
        atomic_write(path, lambda tmp: save_file(arrays_c, str(tmp), metadata={"key": key_json}))
    except OSError as e:
        if str(path.parent) not in _CACHE_WARNED:
            _CACHE_WARNED.add(str(path.parent))
            warnings.warn(
                f"tickets: cannot write the token cache {path.parent} ({e}); set TICKETS_CACHE to a writable folder",
                stacklevel=2,
            )
    return arrays


# --- splits ----------------------------------------------------------------------------------------------------
class TokenSplit:
    """Examples stored as flat token ids + offsets, viewed through ``rows`` (example ids, in the split's order).

    ``store`` holds ``ids`` (int32, flat), ``offsets`` (int64, n+1), optionally ``types`` (uint8, flat) and
    ``labels`` (n). Subsets and ``limit`` only slice ``rows``; the arrays are shared.
    """

    def __init__(
        self,
        store: dict[str, np.ndarray],
        rows: np.ndarray,
        *,
        pad_id: int,
        max_length: int,
        token_types: bool,
        dynamic_padding: bool = True,
        bucket_batches: int = BUCKET_BATCHES,
    ):
        self.store = store
        self.rows = np.asarray(rows, dtype=np.int64)
        self.pad_id = int(pad_id)
        self.max_length = int(max_length)
        self.token_types = bool(token_types and "types" in store)
        self.dynamic_padding = dynamic_padding
        self.bucket_batches = bucket_batches

    def __len__(self) -> int:
        return len(self.rows)

    def _derive(self, rows: np.ndarray) -> "TokenSplit":
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.rows = np.asarray(rows, dtype=np.int64)
        return new

    def subset(self, positions: np.ndarray) -> "TokenSplit":
        """Examples at ``positions`` of this split, in that order."""
        return self._derive(self.rows[np.asarray(positions, dtype=np.int64)])

    def limit(self, n: int | None) -> "TokenSplit":
        return self if n is None or n >= len(self) else self._derive(self.rows[: max(int(n), 0)])

    def lengths(self) -> np.ndarray:
        off = self.store["offsets"]
        return np.minimum(off[self.rows + 1] - off[self.rows], self.max_length)

    def order(
        self, batch_size: int, shuffle: bool, generator: torch.Generator | None, drop_last: bool
    ) -> list[np.ndarray]:
        """Positions (into ``rows``) of each batch, in iteration order."""
        n = len(self)
        if batch_size < 1:
            raise TicketsError(f"batch size must be >= 1, got {batch_size}")
        if shuffle:
            perm = torch.randperm(n, generator=generator).numpy()
        else:
            perm = np.arange(n)
        batches: list[np.ndarray] = []
        if self.dynamic_padding:
            lengths = self.lengths()
            chunk = batch_size * max(int(self.bucket_batches), 1)
            for start in range(0, n, chunk):
                part = perm[start : start + chunk]
                part = part[np.argsort(-lengths[part], kind="stable")]
                batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
        else:
            batches = [perm[i : i + batch_size] for i in range(0, n, batch_size)]
        if drop_last:
            batches = [b for b in batches if len(b) == batch_size]
        if shuffle and self.dynamic_padding and len(batches) > 1:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return batches

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        augment: bool = False,
        drop_last: bool = False,
    ) -> Iterator[Batch]:
        for positions in self.order(batch_size, shuffle, generator, drop_last):
            yield self.collate(positions, generator=generator if shuffle else None)

    def token_order(self, max_tokens: int, max_rows: int) -> list[np.ndarray]:
        """Positions of each evaluation batch: every example once, longest first (ties in split order), cut
        greedily so that a batch holds at most ``max_rows`` examples and, padded to its longest, at most
        ``max_tokens`` tokens (a single example longer than ``max_tokens`` goes alone). With dynamic padding off,
        every batch is padded to ``max_length`` and sized by that."""
        if max_tokens < 1 or max_rows < 1:
            raise TicketsError(f"token budget and rows per batch must be >= 1, got {max_tokens} and {max_rows}")
        lengths = self.lengths()
        order = np.argsort(-lengths, kind="stable")
        batches: list[np.ndarray] = []
        start, n = 0, len(order)
        while start < n:
            width = int(lengths[order[start]]) if self.dynamic_padding else self.max_length
            rows = min(max_rows, max(1, max_tokens // max(width, 1)))  # the first example is the widest
            batches.append(order[start : start + rows])
            start += rows
        return batches

    def token_batches(self, max_tokens: int, *, max_rows: int) -> Iterator[Batch]:
        """Evaluation batches in ``token_order``: the split's examples with as little padding as the budget
        allows. Order only matters for speed; each batch is ``collate``-d as usual (so MLM masks, which depend on
        the example alone in evaluation, are the same as in ``batches``)."""
        for positions in self.token_order(max_tokens, max_rows):
            yield self.collate(positions)

    def pad(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
        rows = self.rows[positions]
        off, ids = self.store["offsets"], self.store["ids"]
        lens = np.minimum(off[rows + 1] - off[rows], self.max_length)
        width = int(lens.max(initial=1)) if self.dynamic_padding else self.max_length
        out = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64) if self.token_types else None
        for i, (r, n) in enumerate(zip(rows, lens)):
            out[i, :n] = ids[off[r] : off[r] + n]
            if types is not None:
                types[i, :n] = self.store["types"][off[r] : off[r] + n]
        attn = (np.arange(width)[None, :] < lens[:, None]).astype(np.int64)
        return out, attn, types, rows

    def collate(self, positions: np.ndarray, generator: torch.Generator | None = None) -> Batch:
        ids, attn, types, rows = self.pad(positions)
        batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(attn)}
        if types is not None:
            batch["token_type_ids"] = torch.from_numpy(types)
        if "labels" in self.store:
            labels = self.store["labels"][rows]
            batch["labels"] = torch.from_numpy(labels.astype(np.float32 if labels.dtype.kind == "f" else np.int64))
        batch["index"] = torch.from_numpy(rows.copy())
        return batch


def pack_sequences(
    seqs: list[list[int]] | list[np.ndarray], types: list[list[int]] | None = None
) -> dict[str, np.ndarray]:
    """Variable-length sequences as flat ``ids`` (int32) + ``offsets`` (int64, n+1) [+ flat uint8 ``types``]."""
    lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    flat = np.fromiter((t for s in seqs for t in s), dtype=np.int32, count=int(offsets[-1]))
    out = {"ids": flat, "offsets": offsets}
    if types is not None:
        out["types"] = np.fromiter((t for s in types for t in s), dtype=np.uint8, count=int(offsets[-1]))
    return out


def dynamic_padding_default(data: DataConfig, dynamic_padding: bool | None) -> bool:
    if dynamic_padding is not None:
        return bool(dynamic_padding)
    return bool(getattr(data, "dynamic_padding", True))


def set_dynamic_padding(task: Task, enabled: bool) -> Task:
    """Turn dynamic padding (with length buckets) on or off for every split of ``task``, in place."""
    for s in (task.train, task.val, task.test):
        s.dynamic_padding = bool(enabled)
    task.info["dynamic_padding"] = bool(enabled)
    return task


def model_max_length(model: Any, requested: int) -> int:
    limit = (getattr(model, "info", None) or {}).get("max_positions") or 512
    return int(min(requested, limit))


def require_tokenizer(model: Any, name: str) -> Any:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise TicketsError(
            f"task {name!r} needs a text model with a tokenizer: use --model minilm-l6 or hf:<id-or-path>"
        )
    return tok
