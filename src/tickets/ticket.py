"""Tickets on disk: one safetensors file with bit-packed masks, metadata and a checksum; plus legacy readers.

File layout (``format_version`` 1):

* tensors ``mask::<name>``: uint8, ``np.packbits`` of the flattened bool mask (row-major, 1 bit per weight,
  big-endian bit order, zero-padded to a whole byte);
* tensors ``weight::<name>``: the ticket's weights, only when they are not θ0 (rewound or re-initialised);
* header metadata (str → str): ``format`` = "tickets.ticket", ``format_version`` = "1",
  ``names`` (JSON list, mask order), ``shapes`` (JSON object name → list of dims), ``weight_names`` (JSON list),
  ``checksum`` = "sha256:<hex>", ``meta_checksum`` = "sha256:<hex>" and one ``meta.<key>`` entry per
  ``Ticket.meta`` field, its value JSON-encoded.

The checksum is sha256 over, for each mask in order, the name, the shape (JSON) and the packed bytes, then for
each stored weight its name, dtype, shape and raw bytes; ``meta_checksum`` covers every other header entry (model,
task, sparsity, pattern, …). ``load_ticket`` recomputes and compares both, and refuses a file that lacks either as
edited or damaged: format_version 1 requires both (a later version that drops one would say so by its number).
Files are written by a small deterministic writer (same ticket → same bytes; standard safetensors layout, read back
with the safetensors library).

``load_ticket`` also reads the torch.save files researchers have today, detected by content (never by extension)
and loaded only with ``weights_only=True`` (``tickets.formats`` does the reading, and writes the same formats):
PyTorch-prune state dicts (``*.weight_mask`` keys, optional ``module.`` prefix, possibly nested under
``state_dict`` and mixed with ``weight_orig`` etc., as saved by BERT-Tickets, CV_LTH_Pre-training, Double-Win-LTH),
open_lth ``mask.pth`` (a dict parameter name → int 0/1 tensor) and NNI masks (``{module: {"weight": mask}}``);
and the flat ones of these saved as safetensors by other tools (``*_mask`` keys or ``{name: 0/1 tensor}``, read like
their ``torch.save`` twins). Tensors with values other than 0/1 are model weights, refused with one line.

Where a ticket meets a model, ``Ticket.fit(model, head=...)`` (``fit_mask``) matches its names to the model's
parameters (wrapper prefixes such as ``module.`` or ``model.`` resolved by ``tickets.statedict.match_keys``) and
drops entries for the task head, which is rebuilt per task. ``Ticket.save_pretrained`` / ``from_pretrained`` /
``push_to_hub`` share tickets as Hugging Face Hub repositories (``tickets.integrations.hub``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

from tickets.errors import TicketsError
from tickets.fileio import atomic_write_bytes
from tickets.masks import Mask

FORMAT = "tickets.ticket"
FORMAT_VERSION = 1
MASK_PREFIX = "mask::"
WEIGHT_PREFIX = "weight::"
META_PREFIX = "meta."
LEGACY_PRUNE = "pytorch-prune"  # meta["format"] of masks read from other tools (see tickets.formats)
LEGACY_OPEN_LTH = "open_lth"
LEGACY_NNI = "nni"

# Meta fields written from the file itself (never from Ticket.meta).
_FILE_FIELDS = ("format", "format_version", "checksum", "meta_checksum")
# Order in which `describe` lists the common fields; others follow alphabetically.
_META_ORDER = (
    "model", "prunable", "source_task", "method", "scope", "level", "sparsity", "seed", "weights", "head_policy",
)


@dataclass
class Ticket:
    """A mask over the prunable set, what it was drawn from (``meta``), and its weights when they are not θ0.

    ``source`` is the file the ticket was read from (set by ``load_ticket``; not stored in the file): the model
    card of ``save_pretrained`` reads the run's metrics beside it.
    """

    mask: Mask
    meta: dict = field(default_factory=dict)
    weights: dict[str, torch.Tensor] | None = None
    source: Path | None = field(default=None, repr=False, compare=False)

    # -- meeting a model ---------------------------------------------------------------------------------------

    def fit(self, model: torch.nn.Module, *, head: Any = ()) -> Mask:
        """The mask renamed to ``model``'s parameter names, without head entries; see :func:`fit_mask`."""
        return fit_mask(self.mask, model, head=head, what=f"ticket {self.source}" if self.source else "ticket")

    # -- Hugging Face Hub --------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, *, run_dir: str | os.PathLike | None = None,
                        **kwargs: Any) -> str | None:
        """Write the ticket as a Hub-style folder: ``ticket.safetensors`` (this module's format, unchanged),
        ``config.json`` (a summary) and ``README.md``, a model card generated from the ticket's metadata and, when
        the ticket sits in a run directory (``tickets find``'s ``level-NN/``, or ``run_dir``), its run's
        metrics. Through ``huggingface_hub.ModelHubMixin.save_pretrained`` (``push_to_hub=True, repo_id=...``
        uploads too); an existing README.md is kept, as the mixin does. Needs ``huggingface_hub``."""
        from tickets.integrations.hub import ticket_repo

        return ticket_repo(self, save_ticket, run_dir).save_pretrained(save_directory, **kwargs)

    @classmethod
    def from_pretrained(cls, repo_or_dir: str | os.PathLike, **kwargs: Any) -> "Ticket":
        """Load a ticket from a folder written by ``save_pretrained`` or from a Hub repository id
        (``user/ticket-name``; ``revision=``, ``cache_dir=``, ``token=``, ``local_files_only=`` as in
        ``huggingface_hub``). The file is checked like any ticket (checksum, pattern). TicketsError (one line)
        when the folder or repository holds no ``ticket.safetensors`` or cannot be reached."""
        from tickets.integrations.hub import fetch_ticket_file

        return load_ticket(fetch_ticket_file(repo_or_dir, **kwargs))

    def push_to_hub(self, repo_id: str, *, run_dir: str | os.PathLike | None = None, **kwargs: Any) -> str:
        """Upload the ``save_pretrained`` folder to the Hub repository ``repo_id`` (created if needed) in one
        commit, through ``huggingface_hub.ModelHubMixin.push_to_hub`` (``private=``, ``token=``, ``branch=``,
        ``commit_message=``, ``create_pr=``); returns the commit URL."""
        from tickets.integrations.hub import ticket_repo

        kwargs.setdefault("model_card_kwargs", {"repo_id": repo_id})  # the card's usage snippet names the repo
        return ticket_repo(self, save_ticket, run_dir).push_to_hub(repo_id, **kwargs)


def theta0_checkpoint(ticket: Ticket) -> str | None:
    """sha256 (hex) of the ``--weights`` checkpoint whose θ0 ``ticket`` was drawn on, or None when it names none.

    Read from ``meta["theta0_weights"]`` (written by ``tickets find --weights`` and ``tickets ticket-from-weights
    --weights``), else ``meta["source_weights"]`` (what ``ticket-from-weights`` recorded before it wrote
    ``theta0_weights``). Whether None means "the model's shipped weights" or "not recorded": :func:`records_theta0`.
    """
    for key in ("theta0_weights", "source_weights"):
        record = ticket.meta.get(key)
        if isinstance(record, dict) and isinstance(record.get("sha256"), str) and record["sha256"]:
            return record["sha256"]
    return None


def records_theta0(ticket: Ticket) -> bool:
    """Whether ``ticket`` says which θ0 it was drawn on: it names a checkpoint (:func:`theta0_checkpoint`), or
    tickets drew it (our format with a ``method``, not converted from another tool's mask), and then naming none
    means the model's shipped weights. Masks from other tools (and tickets converted from them) record nothing."""
    if theta0_checkpoint(ticket) is not None:
        return True
    meta = ticket.meta
    return meta.get("format", FORMAT) == FORMAT and "converted_from" not in meta and "method" in meta


def fit_mask(mask: Mask, model: torch.nn.Module, *, head: Any = (), what: str = "ticket") -> Mask:
    """``mask`` with its names matched to ``model``'s parameters, head entries dropped, checked against the model.

    * Names are matched with ``tickets.statedict.match_keys(names, parameters, subset=True)``: exact names are used
      as they are; otherwise a wrapper prefix the mask has and the model lacks (``module.`` from DataParallel /
      DDP, ``model.`` from a LightningModule, ``bert.`` …) is removed, or one the model has is added, when exactly
      one such renaming fits every entry — a warning on the ``tickets`` logger says which. When several fit,
      TicketsError listing them (one line).
    * Entries under ``head`` (the task-head submodules, ``["classifier"]``, ``["fc"]``) are dropped with a warning:
      heads are rebuilt for every task, so a mask file that covers the output layer (open_lth's do) leaves the new
      head dense instead of pruning it or failing because the label count differs.
    * The rest must be parameters of ``model`` with the mask's shapes (TicketsError naming the first that is not).

    ``head``: a name or a list of names (dotted submodule paths). Returns a new Mask (tensors shared with ``mask``).
    """
    from tickets.log import get_logger
    from tickets.statedict import _under, match_keys

    logger = get_logger(__name__)
    heads = tuple(h.rstrip(".") for h in ([head] if isinstance(head, str) else list(head or ())) if h)
    params = [n for n, _ in model.named_parameters()]
    # Head entries, under any wrapper prefix: "<prefix.>HEAD.LEAF" where HEAD.LEAF is a parameter of the model's head
    # (set aside before matching: the model's head may have another width, and a prefix the body needs may differ)
    leaves = {(h, n[len(h) + 1:]) for h in heads for n in params if n.startswith(h + ".")}
    in_head = [n for n in mask.names if any(n == f"{h}.{leaf}" or n.endswith(f".{h}.{leaf}") for h, leaf in leaves)]
    names = [n for n in mask.names if n not in set(in_head)]
    if in_head:
        logger.warning("%s: ignored %d mask entr%s for the task head (%s): heads are rebuilt for every task, so the "
                       "head stays dense", what, len(in_head), "y" if len(in_head) == 1 else "ies",
                       ", ".join(in_head[:3]) + (" …" if len(in_head) > 3 else ""))
    if not names:
        raise TicketsError(f"{what} masks only the task head ({', '.join(in_head[:3])}), which is rebuilt for every "
                           "task: pass a ticket over the model's body (see `tickets inspect FILE`)")
    if all(n in set(params) for n in names):
        mapping, notes = {n: n for n in names}, []
    else:
        try:
            mapping, notes = match_keys(names, params, drop=(), optional=(), head=heads, subset=True, what=what)
        except TicketsError as exc:
            found = re.search(r"several wrapper prefixes fit the model \((.*)\), so", str(exc))
            if found:
                raise TicketsError(
                    f"{what}: its names fit {type(model).__name__} under several prefixes ({found.group(1)}), so which "
                    "tensors it masks is ambiguous: rename the mask's keys to the model's parameter names"
                ) from None
            Mask({n: mask[n] for n in names}).check(model)  # the established one-line error naming the first misfit
            raise
        for note in notes:
            logger.warning("%s: %s", what, note.replace(" keys", " mask entries"))
    fitted = Mask({mapping[n]: mask[n] for n in names if n in mapping and not _under(mapping[n], heads)})
    fitted.check(model)
    return fitted


# --------------------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------------------


def save_ticket(path: str | os.PathLike, ticket: Ticket) -> None:
    """Write ``ticket`` to ``path`` atomically (temp file in the same directory, then os.replace)."""
    path = Path(path)
    names = ticket.mask.names
    shapes = {n: list(ticket.mask[n].shape) for n in names}
    packed = {n: np.packbits(ticket.mask[n].detach().cpu().numpy().reshape(-1)) for n in names}
    weights = {n: w.detach().to("cpu", copy=True).contiguous() for n, w in (ticket.weights or {}).items()}

    tensors = [(MASK_PREFIX + n, torch.from_numpy(packed[n])) for n in names]
    tensors += [(WEIGHT_PREFIX + n, w) for n, w in weights.items()]
    header = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "names": json.dumps(names),
        "shapes": json.dumps(shapes),
        "weight_names": json.dumps(list(weights)),
        "checksum": _checksum(names, shapes, packed, weights),
    }
    meta = dict(ticket.meta)
    source_format = meta.get("format")
    if source_format not in (None, FORMAT) and "converted_from" not in meta:
        meta["converted_from"] = source_format  # keep where a legacy mask came from
    for key, value in meta.items():
        if key in _FILE_FIELDS:
            continue
        if not isinstance(key, str):
            raise TicketsError(f"ticket meta key {key!r} is not a string: use string keys")
        try:
            header[META_PREFIX + key] = json.dumps(value)
        except (TypeError, ValueError) as err:
            raise TicketsError(
                f"ticket meta field {key!r} cannot be stored ({err}): use JSON values (str, number, list, dict)"
            ) from None

    header["meta_checksum"] = _meta_checksum(header)
    atomic_write_bytes(path, _serialize(tensors, header))


# safetensors dtype names (https://github.com/huggingface/safetensors, format description).
_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _serialize(tensors: list[tuple[str, torch.Tensor]], metadata: dict[str, str]) -> bytes:
    """safetensors bytes, byte-for-byte deterministic (safetensors.torch.save orders the metadata by a randomly
    seeded hash map, so the same ticket would give different files and resumed runs could not be compared).

    Layout per the safetensors format: u64 little-endian header size, JSON header padded with spaces to a multiple
    of 8, then the tensors back to back; larger itemsizes first so every tensor is aligned.
    """
    for key, t in tensors:
        if t.dtype not in _DTYPES:
            raise TicketsError(
                f"cannot store tensor {key!r} of dtype {t.dtype}: convert ticket weights to a float type"
            )
    ordered = sorted(tensors, key=lambda kv: -kv[1].element_size())  # stable: keeps mask / weight order
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for key, t in ordered:
        raw = _tensor_bytes(t)
        header[key] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def _meta_checksum(header: dict[str, str]) -> str:
    """sha256 over every header entry except the two checksums: the metadata (model, source task, method, pattern,
    …) is as protected as the masks, so an edited ``meta.model`` is caught."""
    h = hashlib.sha256()
    for key in sorted(k for k in header if k not in ("checksum", "meta_checksum")):
        h.update(key.encode() + b"\0" + str(header[key]).encode() + b"\0")
    return "sha256:" + h.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    # Via uint8 so dtypes numpy lacks (bfloat16) hash too.
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _checksum(
    names: list[str], shapes: dict[str, list[int]], packed: dict[str, np.ndarray], weights: dict[str, torch.Tensor]
) -> str:
    h = hashlib.sha256()
    for n in names:
        h.update(n.encode() + b"\0")
        h.update(json.dumps(list(shapes[n])).encode() + b"\0")
        h.update(np.ascontiguousarray(packed[n], dtype=np.uint8).tobytes())
    for n, w in weights.items():
        h.update(b"weight\0" + n.encode() + b"\0" + str(w.dtype).encode() + b"\0")
        h.update(json.dumps(list(w.shape)).encode() + b"\0")
        h.update(_tensor_bytes(w))
    return "sha256:" + h.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------------------


def load_ticket(path: str | os.PathLike) -> Ticket:
    """Read a ticket file (ours, a PyTorch-prune state dict, an open_lth mask.pth or NNI masks, saved with
    ``torch.save`` or as safetensors; see ``tickets.formats``); TicketsError if unusable. The returned ticket's
    ``source`` is the file read.

    ``path`` may also be a folder that holds its ticket under the name tools give it: ``ticket.safetensors`` (a
    ``tickets find`` level folder, a ``save_pretrained`` folder) or ``mask.pth`` (open_lth's folder, ``tickets
    export --to open-lth``). Any other folder (a ``tickets find`` run directory) is refused with one line naming the
    ticket files inside it to pass instead."""
    path = Path(path)
    if path.is_dir():
        path = ticket_in_directory(path)
    if not path.is_file():
        raise TicketsError(f"ticket file {path} not found: check the path")
    data = path.read_bytes()
    kind = _sniff(data)
    if kind == "safetensors":
        return _load_safetensors(path, data)
    if kind == "torch":
        return _load_torch(path, data)
    if not data:
        raise TicketsError(f"ticket file {path} is empty: the write was interrupted; draw or copy the ticket again")
    raise TicketsError(
        f"{path} is not a ticket: it is neither a tickets safetensors file nor a torch.save mask "
        "(PyTorch-prune *.weight_mask state dict, open_lth mask.pth or NNI masks); check the path"
    )


# File names a folder holds its one ticket under (load_ticket reads a folder through them).
TICKET_FILE_NAMES = ("ticket.safetensors", "mask.pth")


def ticket_in_directory(directory: str | os.PathLike) -> Path:
    """The ticket file a folder stands for: its ``ticket.safetensors`` or ``mask.pth`` when it holds exactly one of
    them. Otherwise TicketsError (one line) saying the path is a directory and naming the ticket files below it
    (``level-NN/ticket.safetensors`` of a ``tickets find`` run, up to two levels down) to pass instead."""
    directory = Path(directory)
    direct = [directory / name for name in TICKET_FILE_NAMES if (directory / name).is_file()]
    if len(direct) == 1:
        return direct[0]
    found = direct or sorted(
        p for pattern in ("*/ticket.safetensors", "*/*/ticket.safetensors") for p in directory.glob(pattern)
        if p.is_file()
    )
    if not found:
        raise TicketsError(f"{directory} is a directory and holds no ticket file (ticket.safetensors or mask.pth, "
                           "checked two levels down): pass a ticket file, e.g. <find run>/level-NN/ticket.safetensors")
    shown = ", ".join(str(p) for p in found[:3]) + (f" … ({len(found)} in all)" if len(found) > 3 else "")
    raise TicketsError(f"{directory} is a directory, not a ticket file: pass one of the ticket files in it: {shown}")


def _sniff(data: bytes) -> str | None:
    """"safetensors", "torch" or None, from the first bytes."""
    if data[:4] == b"PK\x03\x04":  # torch.save zip container (torch >= 1.6)
        return "torch"
    # safetensors: u64 little-endian header length (safetensors caps it at 100 MB), then a JSON object.
    if len(data) >= 9 and data[8:9] == b"{" and 1 < int.from_bytes(data[:8], "little") <= 100_000_000:
        return "safetensors"
    if data[:1] == b"\x80":  # pickle protocol >= 2: legacy (pre-zip) torch.save
        return "torch"
    return None


def _corrupt(path: Path, what: str) -> TicketsError:
    return TicketsError(f"ticket file {path} is corrupt ({what}): re-copy it or draw the ticket again")


def _load_safetensors(path: Path, data: bytes) -> Ticket:
    n = int.from_bytes(data[:8], "little")
    if 8 + n > len(data):
        raise _corrupt(path, f"truncated: header needs {8 + n} bytes, file has {len(data)}")
    try:
        header = json.loads(data[8 : 8 + n])
        raw = header.get("__metadata__") or {}
        if not isinstance(raw, dict):
            raise ValueError("metadata is not an object")
    except (ValueError, AttributeError, RecursionError):
        raise _corrupt(path, "unreadable safetensors header") from None
    if raw.get("format") != FORMAT:
        ours = [k for k in ("names", "shapes", "checksum", "meta_checksum", "format_version") if k in raw]
        ours += [k for k in header if isinstance(k, str) and k.startswith((MASK_PREFIX, WEIGHT_PREFIX))][:1]
        if ours:  # a ticket whose format field was removed or changed: not masks of another tool
            raise _corrupt(path, f"it has a ticket's {', '.join(ours[:2])} but its format field is "
                                 f"{raw.get('format')!r}, not {FORMAT!r}")
        return _load_foreign_safetensors(path, data)
    try:
        version = int(raw.get("format_version", ""))
    except ValueError:
        raise _corrupt(path, f"bad format_version {raw.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise TicketsError(
            f"{path} has ticket format_version {version}, newer than this tickets reads ({FORMAT_VERSION}): "
            "upgrade tickets"
        )
    # Both checksums are part of every format version this reads (1): a file without one was edited or damaged.
    missing = [k for k in ("checksum", "meta_checksum") if not isinstance(raw.get(k), str)]
    if missing:
        raise TicketsError(f"ticket file {path} has no {' or '.join(missing)} entry, which every ticket file carries "
                           "(its header was edited or damaged): re-copy it or draw the ticket again")
    if raw["meta_checksum"] != _meta_checksum(raw):
        raise TicketsError(f"ticket file {path} failed its metadata checksum (its model, task or method fields were "
                           "edited or damaged): re-copy it or draw the ticket again")
    try:
        tensors = safetensors.torch.load(data)
        names = json.loads(raw["names"])
        shapes = json.loads(raw["shapes"])
        weight_names = json.loads(raw.get("weight_names", "[]"))
        meta_fields = {k[len(META_PREFIX) :]: json.loads(v) for k, v in raw.items() if k.startswith(META_PREFIX)}
    except Exception as err:  # safetensors raises its own error types for truncated / inconsistent data
        raise _corrupt(path, f"{type(err).__name__}: {_first_line(err)}") from None
    _check_schema(path, names, shapes, weight_names, tensors)

    packed: dict[str, np.ndarray] = {}
    for name in names:
        key = MASK_PREFIX + name
        if key not in tensors or name not in shapes:
            raise _corrupt(path, f"mask {name!r} listed but not stored")
        arr = tensors[key].numpy()
        numel = math.prod(shapes[name])
        if arr.dtype != np.uint8 or arr.size != (numel + 7) // 8:
            raise _corrupt(path, f"mask {name!r} holds {arr.size} bytes, shape {shapes[name]} needs {(numel + 7) // 8}")
        packed[name] = arr
    weights = {}
    for name in weight_names:
        if WEIGHT_PREFIX + name not in tensors:
            raise _corrupt(path, f"weight {name!r} listed but not stored")
        weights[name] = tensors[WEIGHT_PREFIX + name]

    checksum = _checksum(names, shapes, packed, weights)
    if checksum != raw.get("checksum"):
        raise TicketsError(
            f"ticket file {path} failed its checksum (stored {raw.get('checksum')}, computed {checksum}): "
            "the file is corrupt; re-copy it or draw the ticket again"
        )

    mask = Mask(
        {
            name: torch.from_numpy(np.unpackbits(packed[name], count=math.prod(shapes[name])).astype(bool)).reshape(
                shapes[name]
            )
            for name in names
        }
    )
    meta: dict[str, Any] = {"format": FORMAT, "format_version": version, "checksum": checksum}
    meta.update({k: meta_fields[k] for k in sorted(meta_fields) if k not in _FILE_FIELDS})
    if meta.get("pattern") is not None:  # a structured ticket must honour its declared pattern
        from tickets.patterns import pattern_from_meta

        try:
            pattern_from_meta(meta["pattern"]).verify(mask)
        except TicketsError as exc:
            raise TicketsError(f"ticket file {path} does not honour its pattern ({exc})") from None
    return Ticket(mask=mask, meta=meta, weights=weights or None, source=path)


MAX_WEIGHTS = 10**11  # per tensor: far above any model this runs on; guards against absurd declared shapes


def _check_schema(path: Path, names: Any, shapes: Any, weight_names: Any, tensors: dict) -> None:
    """The header's structure, checked before it is used: names a list of distinct strings, shapes a mapping of
    those names to lists of non-negative integers, stored weights real tensors. TicketsError naming the problem."""
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise _corrupt(path, "its names are not a list of distinct tensor names")
    if not isinstance(shapes, dict) or set(shapes) != set(names):
        raise _corrupt(path, "its shapes do not map every listed tensor name to a shape")
    for name, shape in shapes.items():
        if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                      for d in shape) or math.prod(shape) > MAX_WEIGHTS):
            raise _corrupt(path, f"shape of {name!r} is not a list of non-negative integers: {str(shape)[:60]}")
    if not isinstance(weight_names, list) or not all(isinstance(n, str) for n in weight_names):
        raise _corrupt(path, "its weight_names are not a list of tensor names")
    for key, value in tensors.items():
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            raise _corrupt(path, f"tensor {key!r} is not a dense tensor")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].split(". ")[0][:200] if text else type(err).__name__


def _load_torch(path: Path, data: bytes) -> Ticket:
    from tickets.formats import read_torch_masks

    return _foreign_ticket(path, *read_torch_masks(path, data))


def _load_foreign_safetensors(path: Path, data: bytes) -> Ticket:
    """Masks another tool saved as safetensors: the layouts of ``read_torch_masks``, read the same way."""
    from tickets.formats import read_safetensors_masks

    return _foreign_ticket(path, *read_safetensors_masks(path, data))


def _foreign_ticket(path: Path, masks: dict[str, torch.Tensor], meta: dict) -> Ticket:
    mask = Mask(masks)
    # the checksum this mask gets in our format: run hashes (transfer) tell two legacy masks apart by it
    meta["checksum"] = mask_checksum(mask)
    return Ticket(mask=mask, meta=meta, source=path)


def mask_checksum(mask: Mask) -> str:
    """``sha256:<hex>`` of ``mask`` as ``save_ticket`` computes it for a ticket without stored weights (names,
    shapes and bit-packed masks, in mask order)."""
    names = mask.names
    shapes = {n: list(mask[n].shape) for n in names}
    packed = {n: np.packbits(mask[n].detach().cpu().numpy().reshape(-1)) for n in names}
    return _checksum(names, shapes, packed, {})


# --------------------------------------------------------------------------------------------------------------
# describing
# --------------------------------------------------------------------------------------------------------------


def describe(ticket: Ticket, model: torch.nn.Module | None = None) -> str:
    """What `tickets inspect FILE` prints: metadata, a per-tensor table, totals (and whole-model totals)."""
    report = ticket.mask.report(model)
    prunable = report["prunable"]
    lines = []
    meta = ticket.meta
    keys = [k for k in ("format", "format_version", "checksum") if k in meta]
    keys += [k for k in _META_ORDER if k in meta]
    keys += sorted(k for k in meta if k not in keys)
    width = max((len(k) for k in keys), default=0)
    for k in keys:
        value = meta[k]
        if k == "sparsity":  # the mask's own, never only what the header says
            text = json.dumps(ticket.mask.sparsity)
            if not isinstance(value, (int, float)) or abs(value - ticket.mask.sparsity) > 5e-4:
                text += f" (of the mask; the file records {json.dumps(value)})"
        else:
            text = value if isinstance(value, str) else json.dumps(value)
        if k == "weights" and records_theta0(ticket) and not str(value).startswith("reinit"):
            sha = theta0_checkpoint(ticket)
            model = str(meta.get("model") or "")
            text += (f" (drawn on checkpoint sha256:{sha[:12]}…: transfer with the same --weights)" if sha else
                     f" (drawn on the weights of the module passed to the Python API, digest {model.split('@')[-1]})"
                     if "@" in model else " (drawn on the model's shipped weights)")
        lines.append(f"{k.ljust(width)}  {text}")
    if ticket.weights:
        lines.append(f"{'weights stored'.ljust(width)}  {len(ticket.weights)} tensor(s), not theta0")
    lines.append("")

    rows = [("tensor", "shape", "kept", "total", "sparsity")]
    for name, r in prunable["per_tensor"].items():
        shape = "x".join(str(d) for d in r["shape"]) or "scalar"
        rows.append((name, shape, str(r["kept"]), str(r["total"]), f"{r['sparsity']:.4f}"))
    rows.append(("total", "", str(prunable["kept"]), str(prunable["total"]), f"{prunable['sparsity']:.4f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for i, row in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("  ".join("-" * w for w in widths))
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])] + [c.rjust(w) for c, w in zip(row[2:], widths[2:])]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    lines.append(
        f"sparsity over the prunable set ({prunable['tensors']} tensors, {prunable['total']} weights): "
        f"{prunable['sparsity']:.4f} ({prunable['pruned']} pruned, {prunable['kept']} kept)"
    )
    if report["model"] is not None:
        m = report["model"]
        lines.append(
            f"sparsity over all parameters of the model ({m['total']} parameters): {m['sparsity']:.4f} "
            f"({m['pruned']} pruned; the prunable set is {m['prunable_fraction']:.1%} of the model)"
        )
    return "\n".join(lines) + "\n"
