"""Mask files other tools read and write: PyTorch prune, open_lth and NNI, in both directions.

A ticket's mask is ``parameter name → bool tensor``; each tool spells the same thing its own way:

| format | what the file holds | who writes it | read | write |
| --- | --- | --- | --- | --- |
| ``torch-prune`` | ``{"<module>.<param>_mask": float 0/1 tensor}`` (a state dict, possibly with ``*_orig`` weights, nested under ``state_dict``, ``module.`` prefixed; ``torch.save`` or safetensors) | ``torch.nn.utils.prune`` (``model.state_dict()`` after pruning), BERT-Tickets, CV_LTH_Pre-training | yes | yes |
| ``open-lth`` | ``mask.pth``: ``{"<param name>": int32 0/1 tensor}`` (+ ``sparsity_report.json``); any plain ``{name: 0/1 tensor}``, ``torch.save`` or safetensors | open_lth ``pruning/mask.py`` ``Mask.save`` | yes | yes |
| ``nni`` | ``{"<module>": {"weight": 0/1 tensor, "bias": 0/1 tensor or None}}`` | NNI pruners (``pruner.compress()`` masks, ``export_model(mask_path=...)``) | yes | yes |

Reading is by content, never by extension, and only with ``torch.load(weights_only=True)`` (nothing in the file is
executed). ``tickets.ticket.load_ticket`` calls :func:`read_torch_masks` for every ``torch.save`` file and
:func:`read_safetensors_masks` for every safetensors file that is not a ticket of ours: the flat layouts
(``*_mask`` keys, ``{name: 0/1 tensor}``) saved as safetensors read exactly as their ``torch.save`` twins (same
``module.`` handling, same names). Tensors with values other than 0/1 are model weights and refused. Writing
(:func:`write_mask_file`, ``tickets export TICKET --to FORMAT``) produces files those tools load unchanged:

* ``torch-prune``: for every mask tensor ``<module>.<param>`` the key ``<module>.<param>_mask`` holding a float32
  0/1 tensor: ``prune.custom_from_mask(model.get_submodule(module), param, state[key])`` reproduces the ticket
  (as ``prune`` stores it: ``<param>_orig`` + the ``<param>_mask`` buffer);
* ``open-lth``: ``{name: mask.int()}`` as ``Mask.save`` writes it, plus its ``sparsity_report.json``
  (``{"total": …, "unpruned": …}``) when writing into a folder;
* ``nni``: ``{module: {"weight": float32 0/1 tensor}}``, what NNI's ``ModelSpeedup(model, dummy_input, masks_file)``
  and its ``apply_compression_results`` read.

This module also handles models that *carry* ``torch.nn.utils.prune`` reparametrisations (``weight_orig`` +
``weight_mask`` + a forward pre-hook): :func:`pruned_tensors` finds them and :func:`split_pruned` turns such a model
into a plain copy plus the mask, the form ``tickets`` works with.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from tickets.errors import TicketsError
from tickets.fileio import atomic_write_bytes, atomic_write_text
from tickets.masks import Mask

__all__ = [
    "TORCH_PRUNE", "OPEN_LTH", "NNI", "EXPORT_FORMATS", "LEGACY_PRUNE", "LEGACY_OPEN_LTH", "LEGACY_NNI",
    "read_torch_masks", "read_safetensors_masks", "to_torch_prune", "to_open_lth", "to_nni", "from_nni",
    "write_mask_file", "pruned_tensors", "split_pruned",
]

# Names of the export formats (``tickets export --to``).
TORCH_PRUNE = "torch-prune"
OPEN_LTH = "open-lth"
NNI = "nni"
EXPORT_FORMATS = (TORCH_PRUNE, OPEN_LTH, NNI)
# What ``Ticket.meta["format"]`` says for a mask read from each (kept as the readers always wrote them).
LEGACY_PRUNE = "pytorch-prune"
LEGACY_OPEN_LTH = "open_lth"
LEGACY_NNI = "nni"

# Top-level keys under which training checkpoints nest their state dict.
_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "mask", "masks", "net")
_PRUNE_SUFFIXES = (".weight_mask", ".bias_mask")
_NNI_KEYS = {"weight", "bias"}


# --------------------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------------------


def read_torch_masks(path: str | os.PathLike, data: bytes | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """The masks of a ``torch.save`` file: ``(name → bool tensor, meta)``.

    ``meta`` holds ``format`` (``pytorch-prune``, ``open_lth`` or ``nni``), ``source_file``, ``sparsity`` (over the
    masks read) and, when the file held other entries (weights, optimizer state, epoch counters),
    ``ignored_keys`` (their number). Layouts, detected from the content: NNI's ``{module: {"weight": m, "bias":
    m}}``; PyTorch-prune ``*.weight_mask`` / ``*.bias_mask`` keys (a ``module.`` prefix is removed), at the top level
    or nested under ``state_dict`` / ``model`` / …; open_lth's flat ``{name: 0/1 tensor}``.

    Raises TicketsError (one line, with the fix) for a file that cannot be loaded with ``weights_only=True``, a
    truncated file, a file holding no masks, or tensors with values other than 0 and 1 (a weights file).
    """
    path = Path(path)
    if data is None:
        data = path.read_bytes()
    from tickets.statedict import _first_line, _unpickling_detail

    try:
        # From bytes, not the path: recent torch.load picks a reader from the file extension.
        obj = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise TicketsError(
            f"{path} cannot be loaded safely with weights_only=True ({_unpickling_detail(err)}): it is truncated or "
            "corrupt, or holds Python objects besides tensors; re-copy it, or re-save the masks as a plain dict of "
            "tensors, e.g. torch.save({name: mask_tensor, ...}, path)"
        ) from None
    except Exception as err:
        raise TicketsError(
            f"cannot read {path} as a torch.save file ({type(err).__name__}: {_first_line(err)}): "
            "it is truncated or corrupt; re-copy it"
        ) from None
    return _masks_of(path, obj)


def read_safetensors_masks(path: str | os.PathLike, data: bytes | None = None) -> tuple[dict[str, torch.Tensor],
                                                                                        dict]:
    """The masks of a safetensors file another tool wrote: ``(name → bool tensor, meta)``, as
    :func:`read_torch_masks` gives them for the same tensors saved with ``torch.save``.

    A safetensors file is a flat ``{name: tensor}``, so the layouts are the flat ones: ``torch.nn.utils.prune``'s
    ``*.weight_mask`` / ``*.bias_mask`` keys (a ``module.`` prefix removed; weights beside them skipped), or a
    plain ``{parameter name: 0/1 tensor}`` (any dtype; a wrapper prefix such as ``module.`` is resolved where the
    mask meets a model, ``tickets.ticket.fit_mask``). The masks come in the file's order (by data offset), the same
    at every load. TicketsError (one line) for an unreadable file, a file
    holding no tensors, or tensors with values other than 0 and 1 (model weights, not masks). Nothing is unpickled.
    """
    import safetensors.torch

    from tickets.statedict import _first_line

    path = Path(path)
    if data is None:
        data = path.read_bytes()
    try:
        loaded = safetensors.torch.load(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        # safetensors.torch.load returns the tensors in a random order (a hash map): take the file's own order (by
        # data offset, as its writer laid them out), so the mask, and the checksum that names it in run hashes,
        # are the same at every load
        order = sorted((k for k in header if k != "__metadata__"), key=lambda k: (header[k]["data_offsets"][0], k))
        tensors = {k: loaded[k] for k in order}
    except Exception as err:  # safetensors raises its own error types for truncated / inconsistent data
        raise TicketsError(
            f"cannot read {path} as a safetensors file ({type(err).__name__}: {_first_line(err)}): it is truncated "
            "or corrupt; re-copy it"
        ) from None
    return _masks_of(path, tensors)


def _masks_of(path: Path, obj: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """What :func:`read_torch_masks` and :func:`read_safetensors_masks` return for the loaded object ``obj``: the
    layout detected (``_find_masks``), every mask checked to be a dense 0/1 tensor."""
    found = _find_masks(obj)
    if found is None:
        raise TicketsError(
            f"{path} holds no masks: expected a state dict with *.weight_mask keys (PyTorch prune), an open_lth "
            "mask.pth (parameter name -> 0/1 tensor) or NNI masks ({module: {'weight': mask}}); pass the mask file"
        )
    fmt, raw, ignored = found
    masks = {}
    for key, value in raw.items():
        if value.layout != torch.strided or value.dim() > 8:
            raise TicketsError(f"{path}: mask {key!r} is a {value.layout} tensor, not a dense 0/1 mask: re-save it "
                               "with mask.to_dense()")
        if value.numel() and not bool(((value == 0) | (value == 1)).all()):
            raise TicketsError(
                f"{path}: tensor {key!r} has values other than 0/1, so this holds model weights, not masks: pass a "
                "mask file (0/1 tensors: *.weight_mask keys, open_lth mask.pth, NNI masks), or take the ticket from "
                "the weights' exact zeros with `tickets ticket-from-weights --weights FILE`"
            )
        masks[key] = value != 0
    total = sum(t.numel() for t in masks.values())
    kept = sum(int(t.sum()) for t in masks.values())
    meta: dict[str, Any] = {"format": fmt, "source_file": str(path),
                            "sparsity": (total - kept) / total if total else 0.0}
    if ignored:
        meta["ignored_keys"] = ignored
    return masks, meta


def from_nni(obj: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """NNI masks ``{module: {"weight": m, "bias": m | None}}`` → ``{"module.weight": m, "module.bias": m}``.

    ``None`` entries (NNI stores ``"bias": None`` for layers without a bias mask) are skipped. TicketsError when
    ``obj`` is not in NNI's layout."""
    if not _is_nni(obj):
        raise TicketsError("not NNI masks: expected {module_name: {'weight': 0/1 tensor[, 'bias': ...]}}")
    out = {}
    for module, entry in obj.items():
        for param, value in entry.items():
            if value is not None:
                out[f"{module}.{param}" if module else param] = value
    return out


def _is_nni(obj: Any) -> bool:
    if not isinstance(obj, Mapping) or not obj:
        return False
    seen = False
    for key, entry in obj.items():
        if not isinstance(key, str) or not isinstance(entry, Mapping) or not entry:
            return False
        if not set(entry) <= _NNI_KEYS:
            return False
        for value in entry.values():
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                return False
            seen = True
    return seen


def _find_masks(obj: Any, depth: int = 0) -> tuple[str, dict[str, torch.Tensor], int] | None:
    """(format, parameter name → 0/1 tensor, number of other entries skipped), or None if no masks found."""
    if not isinstance(obj, dict):
        return None
    if _is_nni(obj):
        return LEGACY_NNI, from_nni(obj), 0
    prune_keys = [
        k for k in obj if isinstance(k, str) and k.endswith(_PRUNE_SUFFIXES) and isinstance(obj[k], torch.Tensor)
    ]
    if prune_keys:
        masks = {}
        for key in prune_keys:
            name = key[len("module.") :] if key.startswith("module.") else key
            masks[name[: -len("_mask")]] = obj[key]
        return LEGACY_PRUNE, masks, len(obj) - len(prune_keys)
    if depth == 0:
        for key in _NESTED_KEYS:
            found = _find_masks(obj.get(key), depth + 1)
            if found is not None:
                fmt, masks, ignored = found
                return fmt, masks, ignored + len(obj) - 1
    if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return LEGACY_OPEN_LTH, dict(obj), 0
    return None


# --------------------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------------------


def _split_name(name: str) -> tuple[str, str]:
    """``"layer1.0.conv1.weight"`` → ``("layer1.0.conv1", "weight")`` (module path, parameter)."""
    module, _, param = name.rpartition(".")
    return module, param


def to_torch_prune(mask: Mask, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """``{"<name>_mask": 0/1 tensor}`` per mask tensor: the ``*_mask`` buffers ``torch.nn.utils.prune`` keeps
    (``conv1.weight`` → ``conv1.weight_mask``), as ``dtype`` (prune stores masks in the weight's dtype)."""
    return {f"{name}_mask": t.detach().to("cpu", dtype).contiguous() for name, t in mask.items()}


def to_open_lth(mask: Mask) -> dict[str, torch.Tensor]:
    """``{name: int32 0/1 tensor}``: what open_lth's ``Mask.save`` writes to ``mask.pth``."""
    return {name: t.detach().cpu().int().contiguous() for name, t in mask.items()}


def to_nni(mask: Mask, dtype: torch.dtype = torch.float32) -> dict[str, dict[str, torch.Tensor]]:
    """``{module: {param: 0/1 tensor}}`` (``{"conv1": {"weight": m}}``): NNI's mask layout."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in mask.items():
        module, param = _split_name(name)
        out.setdefault(module, {})[param] = t.detach().to("cpu", dtype).contiguous()
    return out


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def write_mask_file(mask: Mask, fmt: str, out: str | os.PathLike) -> list[Path]:
    """Write ``mask`` as ``fmt`` (``torch-prune``, ``open-lth`` or ``nni``) with ``torch.save``, atomically;
    returns the files written.

    ``out`` is the file to write; for ``open-lth`` an existing directory or a path not ending in ``.pth``/``.pt``
    is a folder that receives ``mask.pth`` and open_lth's ``sparsity_report.json``. Every file loads with
    ``torch.load(weights_only=True)``. TicketsError for an unknown format, or an ``out`` that is an existing
    directory where one file is written (``torch-prune``, ``nni``)."""
    if fmt not in EXPORT_FORMATS:
        raise TicketsError(f"unknown mask format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if fmt != OPEN_LTH and out.is_dir():
        example = out / ("masks.pt" if fmt == TORCH_PRUNE else "nni_masks.pth")
        raise TicketsError(f"--out {out} is a directory, but {fmt} masks are one file: give a file name, e.g. "
                           f"--out {example}")
    if fmt == OPEN_LTH:
        folder = out.is_dir() or out.suffix not in (".pth", ".pt")
        target = out / "mask.pth" if folder else out
        atomic_write_bytes(target, _torch_bytes(to_open_lth(mask)))
        written = [target]
        if folder:
            report = {"total": float(mask.num_total), "unpruned": float(mask.num_kept)}
            atomic_write_text(out / "sparsity_report.json", json.dumps(report, indent=4))
            written.append(out / "sparsity_report.json")
        return written
    obj = to_torch_prune(mask) if fmt == TORCH_PRUNE else to_nni(mask)
    atomic_write_bytes(out, _torch_bytes(obj))
    return [out]


# --------------------------------------------------------------------------------------------------------------
# models carrying torch.nn.utils.prune reparametrisations
# --------------------------------------------------------------------------------------------------------------


def _prune_hooks(module: nn.Module) -> list[tuple[str, Any]]:
    """(tensor name, pruning method) of every prune reparametrisation on ``module`` itself."""
    from torch.nn.utils import prune

    out = []
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, prune.BasePruningMethod):
            out.append((hook._tensor_name, hook))
    return out


def pruned_tensors(model: nn.Module) -> list[str]:
    """Names (``conv1.weight``) of the tensors ``torch.nn.utils.prune`` has reparametrised in ``model``: each is
    then ``<name>_orig`` (a parameter) times ``<name>_mask`` (a buffer), recomputed by a forward pre-hook."""
    out = []
    for path, module in model.named_modules():
        for tensor, _ in _prune_hooks(module):
            out.append(f"{path}.{tensor}" if path else tensor)
    return out


def split_pruned(model: nn.Module) -> tuple[nn.Module, Mask]:
    """A plain copy of a model pruned with ``torch.nn.utils.prune``, and its masks.

    In the copy every reparametrisation is removed with ``prune.remove`` (so ``weight = weight_orig * weight_mask``
    becomes a plain parameter again, the pruned entries exactly 0); ``model`` itself is not changed. The mask maps
    each reparametrised tensor (``conv1.weight``) to its ``*_mask`` as a bool tensor — the ticket the model carried.
    ``model`` cannot simply be ``copy.deepcopy``-ed (the recomputed ``weight`` is not a leaf tensor), so the computed
    attributes are set aside for the copy and put back. TicketsError when the model carries no reparametrisation.
    """
    from torch.nn.utils import prune

    names = pruned_tensors(model)
    if not names:
        raise TicketsError(f"{type(model).__name__} carries no torch.nn.utils.prune reparametrisation (no "
                           "*_orig / *_mask tensors): there is no mask to take from it")
    saved: list[tuple[nn.Module, str, Any]] = []
    for module in model.modules():
        for tensor, _ in _prune_hooks(module):
            if tensor in module.__dict__:  # the computed orig * mask; recomputed by the hook at every forward
                saved.append((module, tensor, module.__dict__.pop(tensor)))
    try:
        plain = copy.deepcopy(model)
    finally:
        for module, tensor, value in saved:
            setattr(module, tensor, value)
    masks = {}
    for path, module in plain.named_modules():
        for tensor, _ in _prune_hooks(module):
            name = f"{path}.{tensor}" if path else tensor
            masks[name] = getattr(module, f"{tensor}_mask").detach().cpu() != 0
            prune.remove(module, tensor)
    return plain, Mask(masks)
