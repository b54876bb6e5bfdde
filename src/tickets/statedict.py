"""Reading state dicts from the checkpoint files people have, and matching their names to a model's.

Everything a weights file (``--weights``) or a name-keyed mask goes through:

* ``read_state_dict(path)``: safetensors, or a ``torch.save`` file read with ``torch.load(weights_only=True)``
  (never a full unpickle), detected by content, not extension; the state dict may be the whole file or nested one
  or two levels under the usual keys (``state_dict``, ``model``, ``model_state_dict``, ``net``, ``params``,
  ``module``, ...).
* ``match_keys(source_keys, target_keys)``: the renaming from the file's names to the model's. Real checkpoints
  wrap the network: DataParallel / DDP ``module.``, MoCo ``module.encoder_q.`` (beside ``encoder_k`` and a queue),
  SimCLR repositories' ``encoder.`` / ``backbone.`` / ``convnet.``, the robustness library's ``module.model.`` and
  ``module.attacker.model.`` (Salman et al. 2020, "Do Adversarially Robust ImageNet Models Transfer Better?"),
  Lightning's ``model.``, ``torch.compile``'s ``_orig_mod.``. Nothing is special-cased by name to *find* the
  renaming: every way of removing up to four leading name components from the source names and adding up to two
  in front of them is scored against the target names, and the renamings that fit are kept. Known wrappers only
  break ties between renamings that both fit (MoCo's query over its momentum encoder, the robustness library's
  model over its attacker's copy) and label the notes.
* ``load_into(module, state)``: ``load_state_dict`` with a one-line error naming the first mismatching tensor.
* ``load_checkpoint(module, path, head=...)``: the three above, plus a projection / foreign head left fresh
  (``LoadReport.head_mismatch`` says which head tensor had which shape, for callers that need the head).
* ``load_error_detail(err)``: torch's ``load_state_dict`` RuntimeError as one line naming the first mismatch
  (its own first line only says "Error(s) in loading state_dict for X:"); the CLI uses it as a last resort.
* ``state_digest`` / ``file_digest``: sha256 identities for run hashes.

Every failure is one ``TicketsError`` line naming the problem and the fix. This module imports only torch,
safetensors (a core dependency), ``tickets.errors`` and ``tickets.fileio``, so models, tickets and masks can all use
it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import re
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from tickets.errors import TicketsError, counted
from tickets.fileio import require_weights_file

__all__ = [
    "NESTED_KEYS",
    "DEFAULT_DROP",
    "DEFAULT_OPTIONAL",
    "KNOWN_WRAPPERS",
    "LoadReport",
    "read_state_dict",
    "match_keys",
    "rename",
    "load_into",
    "load_checkpoint",
    "load_error_detail",
    "is_load_error",
    "safetensors_metadata",
    "state_digest",
    "file_digest",
]

# Keys under which training scripts nest the state dict, in order of preference (first found wins).
NESTED_KEYS = (
    "state_dict", "model_state_dict", "model", "net", "network", "params", "module", "model_state", "weights",
    "teacher", "encoder", "backbone",
)
# Source keys discarded before matching (re.fullmatch): profiler counters (thop) and input-normalisation buffers
# of robustness-library wrappers (our models normalise inside with constant, unsaved buffers).
DEFAULT_DROP = (
    r"(.*\.)?(total_ops|total_params)",
    r"(.*\.)?normali[sz](e|er)\.(new_)?(mean|std)",
)
# Target keys that may be absent from a checkpoint (re.fullmatch): BatchNorm batch counters (older checkpoints
# lack them; the module keeps its own).
DEFAULT_OPTIONAL = (r"(.*\.)?num_batches_tracked",)
# Wrapper prefixes with a name for the notes. A leading "module." (DataParallel) may precede each of them.
KNOWN_WRAPPERS = {
    "module.": "DataParallel / DistributedDataParallel",
    "encoder_q.": "MoCo v1/v2 query encoder",
    "base_encoder.": "MoCo v3 base encoder",
    "encoder_k.": "MoCo v1/v2 momentum encoder",
    "momentum_encoder.": "MoCo v3 momentum encoder",
    "model.": "LightningModule attribute / robustness-library model",
    "attacker.model.": "robustness-library attacker's copy of the model",
    "module.model.": "robustness-library model (Salman et al. 2020), under DataParallel",
    "module.attacker.model.": "robustness-library attacker's copy of the model, under DataParallel",
    "encoder.": "SimCLR-style encoder",
    "backbone.": "SimCLR-style backbone",
    "convnet.": "SimCLR-style convnet",
    "_orig_mod.": "torch.compile wrapper",
}
# When both fit, the first prefix is used and the second (a copy of the same network) ignored.
_SHADOWS = {
    "encoder_q.": ("encoder_k.",),
    "base_encoder.": ("momentum_encoder.",),
    "model.": ("attacker.model.",),
}
_MAX_STRIP = 4  # leading components removed from source names
_MAX_ADD = 2  # leading components added in front of them
_CHUNK = 1 << 20


# --------------------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------------------


def read_state_dict(path: str | os.PathLike, *, notes: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, name → tensor (on CPU, stored dtype).

    Reads safetensors files, and ``torch.save`` files (zip or legacy format) with ``torch.load(weights_only=True,
    map_location="cpu")`` from the bytes, so nothing in the file is executed and the extension does not matter
    (``argparse.Namespace``, which many training scripts store as ``args``, is allowed: it only holds data). The
    state dict is the file's top-level dict of tensors, or one nested one or two levels down under a key of
    ``NESTED_KEYS`` (``{"state_dict": ...}``, ``{"model": ...}``, ``{"checkpoint": {"model": ...}}``), or the only
    dict of tensors in the file. Where it was found is appended to ``notes``.

    Raises TicketsError (one line, with the fix) for a missing, empty, truncated or foreign file, a TorchScript
    archive, a pickle holding Python objects other than tensors and plain containers, or a file holding no (or
    several candidate) dicts of tensors.
    """
    path = require_weights_file(path)
    data = path.read_bytes()
    if not data:
        raise TicketsError(f"weights file {str(path)!r} is empty: the copy was interrupted; copy it again")
    kind = _sniff(data)
    if kind == "safetensors":
        return _read_safetensors(path, data, notes)
    if kind is None:
        raise TicketsError(
            f"{str(path)!r} is neither a safetensors file nor a torch.save checkpoint: pass a .safetensors file or "
            "a file written by torch.save (a state dict, or a checkpoint dict holding one)"
        )
    if kind == "torchscript":
        raise TicketsError(
            f"{str(path)!r} is a TorchScript archive (torch.jit.save), which cannot be read as plain weights: where "
            "you trust the file, save its weights with torch.save(torch.jit.load(PATH).state_dict(), OUT) and pass OUT"
        )
    obj = _torch_load(path, data)
    where, state = _find_state_dict(path, obj)
    if notes is not None and where:
        notes.append(f"state dict read from {where!r} of {path.name}")
    return state


def _sniff(data: bytes) -> str | None:
    """"safetensors", "torch", "torchscript" or None, from the content."""
    if data[:4] == b"PK\x03\x04":  # zip container: torch.save >= 1.6, or torch.jit.save
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            return "torch"  # torch.load reports the damage
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "torch"
    # safetensors: u64 little-endian header length, then a JSON object
    if len(data) >= 9 and data[8:9] == b"{" and 1 < int.from_bytes(data[:8], "little") <= 100_000_000:
        return "safetensors"
    if data[:1] == b"\x80":  # pickle protocol >= 2: legacy torch.save
        return "torch"
    return None


def _read_safetensors(path: Path, data: bytes, notes: list[str] | None) -> dict[str, torch.Tensor]:
    import safetensors.torch

    n = int.from_bytes(data[:8], "little")
    if 8 + n > len(data):
        raise TicketsError(
            f"weights file {str(path)!r} is truncated (its safetensors header needs {8 + n} bytes, the file has "
            f"{len(data)}): copy it again"
        )
    try:
        header = json.loads(data[8 : 8 + n])
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise TicketsError(f"weights file {str(path)!r} has a damaged safetensors header: copy it again") from None
    if 8 + n + end > len(data):
        raise TicketsError(
            f"weights file {str(path)!r} is truncated (its tensors need {8 + n + end} bytes, the file has "
            f"{len(data)}): copy it again"
        )
    if b'"tickets.ticket"' in data[8 : 8 + n]:
        raise TicketsError(f"{str(path)!r} is a ticket (a mask), not weights: pass it as --ticket")
    try:
        state = safetensors.torch.load(data)
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise TicketsError(
            f"cannot read weights file {str(path)!r} as safetensors ({type(err).__name__}: {_first_line(err)}): "
            "it is damaged; copy it again"
        ) from None
    if not state:
        raise TicketsError(f"weights file {str(path)!r} holds no tensors: pass the file holding the weights")
    if notes is not None:
        notes.append(f"read {counted(len(state), 'tensor')} from safetensors file {path.name}")
    return dict(state)


def _torch_load(path: Path, data: bytes) -> Any:
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals([argparse.Namespace]):
            warnings.simplefilter("ignore")
            # From bytes, not the path: recent torch.load picks a reader from the file extension.
            return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        raise TicketsError(
            f"{str(path)!r} cannot be read safely with weights_only=True ({_unpickling_detail(err)}): it holds Python "
            "objects besides tensors (or is damaged); where you trust the file, re-save only its state dict, e.g. "
            "torch.save(torch.load(PATH, weights_only=False)['state_dict'], OUT), or convert it to safetensors"
        ) from None
    except Exception as err:
        raise TicketsError(
            f"cannot read {str(path)!r} as a torch.save file ({type(err).__name__}: {_first_line(err)}): it is "
            "truncated or damaged; copy it again"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].split(". ")[0][:200] if text else type(err).__name__


def _unpickling_detail(err: BaseException) -> str:
    """The informative line of torch's long weights_only message (the rest advises weights_only=False)."""
    for line in str(err).splitlines():
        if "WeightsUnpickler error:" in line:
            return line.split("WeightsUnpickler error:", 1)[1].strip().split(". ")[0][:200]
    return _first_line(err)


def _is_tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _find_state_dict(path: Path, obj: Any) -> tuple[str, dict[str, torch.Tensor]]:
    """(where, state dict): the top level, a NESTED_KEYS entry one or two levels down, or the only tensor dict."""
    if _is_tensor_dict(obj):
        return "", dict(obj)
    if not isinstance(obj, Mapping):
        raise TicketsError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a state dict: pass a file holding a dict of tensors "
            "(model.state_dict()) or a checkpoint dict with one under 'state_dict' / 'model'"
        )
    for key in NESTED_KEYS:
        if _is_tensor_dict(obj.get(key)):
            return key, dict(obj[key])
    for key in NESTED_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping):
            for key2 in NESTED_KEYS:
                if _is_tensor_dict(inner.get(key2)):
                    return f"{key}/{key2}", dict(inner[key2])
    found = []
    for key, value in obj.items():
        if _is_tensor_dict(value):
            found.append((str(key), value))
        elif isinstance(value, Mapping):
            found += [(f"{key}/{k2}", v2) for k2, v2 in value.items() if _is_tensor_dict(v2)]
    if len(found) == 1:
        return found[0][0], dict(found[0][1])
    if found:
        raise TicketsError(
            f"{str(path)!r} holds several dicts of tensors ({', '.join(repr(w) for w, _ in found[:5])}) and none "
            "under a usual key: re-save the one you mean, e.g. torch.save(ckpt[KEY], OUT)"
        )
    keys = ", ".join(repr(k) for k in list(obj)[:8])
    raise TicketsError(
        f"{str(path)!r} holds no dict of tensors (top-level keys: {keys or 'none'}): pass a state dict "
        "(model.state_dict()) or a checkpoint with one under 'state_dict' / 'model'"
    )


# --------------------------------------------------------------------------------------------------------------
# matching names
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Fit:
    strip: str
    add: str
    mapping: dict[str, str]  # source → target
    extra: list[str]  # source keys inside `strip` that map to nothing
    projection: list[str]  # source keys inside `strip` that land under the head but match nothing there
    outside: list[str]  # source keys not starting with `strip` (the rest of the wrapper)
    missing: list[str]  # required target keys nothing maps to

    @property
    def label(self) -> str:
        if self.strip and self.add:
            return f"{self.strip!r} → {self.add!r}"
        if self.add:
            return f"+{self.add!r}"
        return repr(self.strip)


def _components(name: str) -> list[str]:
    return name.split(".")



def _first(names: Iterable[str], n: int = 3) -> str:
    names = list(names)
    shown = ", ".join(repr(x) for x in names[:n])
    return shown + (f" … ({len(names)} in all)" if len(names) > n else "")


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _wrapper_label(prefix: str) -> str:
    if prefix in KNOWN_WRAPPERS:
        return f" ({KNOWN_WRAPPERS[prefix]})"
    core = prefix[len("module.") :] if prefix.startswith("module.") else prefix
    label = KNOWN_WRAPPERS.get(core)
    if label and core != prefix:
        label = f"{label}, under DataParallel"
    return f" ({label})" if label else ""


def _shadowed(fits: list[_Fit]) -> tuple[_Fit | None, list[_Fit]]:
    """(winner, shadowed fits) when every other fit is a known copy of one fit's network."""
    for fit in fits:
        if fit.add:
            continue
        lead = "module." if fit.strip.startswith("module.") else ""
        core = fit.strip[len(lead) :]
        copies = {lead + c for c in _SHADOWS.get(core, ())}
        others = [f for f in fits if f is not fit]
        if others and all(not f.add and f.strip in copies for f in others):
            return fit, others
    return None, []


def match_keys(
    source_keys: Iterable[str],
    target_keys: Iterable[str],
    *,
    drop: Iterable[str] = DEFAULT_DROP,
    optional: Iterable[str] = DEFAULT_OPTIONAL,
    head: Iterable[str] = (),
    subset: bool = False,
    strip: str | None = None,
    what: str = "checkpoint",
) -> tuple[dict[str, str], list[str]]:
    """Work out which source name feeds which target name. Returns ``(mapping, notes)``: ``mapping`` is
    source name → target name for every source key that is used (apply it with ``rename``), ``notes`` one line per
    thing the user should know (the prefix removed, what was ignored or dropped, which target keys stay as they are).

    The renaming is found from the key sets alone: for every split of every source name into ``<strip><rest>``
    (``strip`` = up to 4 leading dot-separated components) and every target name ``<add><rest>`` (``add`` = up to 2
    components), the pair (strip, add) is a candidate; each candidate maps the source keys starting with ``strip``
    to ``add + rest``. A candidate *fits* when

    * full mode (``subset=False``, weights): every required target key is fed (required = not matching
      ``optional`` and not under ``head``), and no source key starting with ``strip`` is left over, except keys
      landing under ``head`` that match nothing there (a projection head: dropped, the head stays fresh). Source
      keys outside ``strip`` are the rest of the wrapper (MoCo's momentum encoder and queue, a SimCLR projector
      beside ``encoder.``) and are ignored, with a note;
    * subset mode (``subset=True``, masks): every source key is used (no ``optional`` / missing check), except
      those under ``head`` that match nothing.

    The identity is used whenever it fits. Otherwise the single fitting candidate is used, and a note says which
    prefix was stripped (named when it is a known wrapper, ``KNOWN_WRAPPERS``). When several fit, known copies
    resolve it (MoCo ``encoder_q`` over ``encoder_k``, MoCo v3 ``base_encoder`` over ``momentum_encoder``, the
    robustness library's ``model`` over ``attacker.model``); any other tie is a TicketsError listing the candidates.
    ``strip`` forces the prefix to remove. ``drop`` (regexes, fullmatch) discards source keys first; ``head`` names
    target submodules (``"fc"``) whose keys may be missing or replaced.

    Raises TicketsError when nothing fits: one line with the best candidate's first three missing and first three
    unexpected names and the names the target expects.
    """
    source = list(dict.fromkeys(source_keys))
    target = list(dict.fromkeys(target_keys))
    heads = tuple(h.rstrip(".") for h in head)
    drop_re = [re.compile(p) for p in drop]
    opt_re = [re.compile(p) for p in optional]
    dropped = [s for s in source if any(r.fullmatch(s) for r in drop_re)]
    dropped_set = set(dropped)
    kept = [s for s in source if s not in dropped_set]
    target_set = set(target)
    required = [t for t in target if not _under(t, heads) and not any(r.fullmatch(t) for r in opt_re)]

    def evaluate(p: str, q: str) -> _Fit:
        mapping, extra, projection, outside = {}, [], [], []
        for s in kept:
            if not s.startswith(p):
                outside.append(s)
                continue
            t = q + s[len(p) :]
            if t in target_set:
                mapping[s] = t
            elif _under(t, heads):
                projection.append(s)
            else:
                extra.append(s)
        fed = set(mapping.values())
        missing = [] if subset else [t for t in required if t not in fed]
        return _Fit(p, q, mapping, extra, projection, outside, missing)

    def fits(f: _Fit) -> bool:
        if subset:
            return bool(f.mapping) and not f.extra and not f.outside
        return not f.missing and not f.extra and bool(f.mapping)

    if strip is not None:
        chosen = evaluate(strip, "")
        if not fits(chosen):
            raise _mismatch(what, chosen, target, subset)
        return _result(chosen, dropped, [], target, heads, subset, forced=True)

    identity = evaluate("", "")
    if fits(identity):
        return _result(identity, dropped, [], target, heads, subset)

    # Candidates from the key sets: votes[(strip, add)] = number of source keys that land on a target key.
    suffixes: dict[str, list[str]] = {}
    for t in target:
        comps = _components(t)
        for j in range(0, min(_MAX_ADD, len(comps) - 1) + 1):
            suffixes.setdefault(".".join(comps[j:]), []).append("".join(c + "." for c in comps[:j]))
    votes: Counter[tuple[str, str]] = Counter()
    for s in kept:
        comps = _components(s)
        for i in range(0, min(_MAX_STRIP, len(comps) - 1) + 1):
            p = "".join(c + "." for c in comps[:i])
            for q in suffixes.get(".".join(comps[i:]), ()):
                votes[(p, q)] += 1
    need = 1 if subset else max(1, len(required))
    candidates = [
        (p, q) for (p, q), v in votes.most_common()
        # a mask may cover a few tensors only: there, swapping leading components (layer1. → layer2.) could fit
        # by accident, so subset mode only strips or only adds
        if v >= need and (p, q) != ("", "") and not (subset and p and q)
    ][:64]
    good: list[_Fit] = []
    for p, q in candidates:
        fit = evaluate(p, q)
        if fits(fit) and all(fit.mapping != other.mapping for other in good):  # same renaming, simpler spelling
            good.append(fit)
    # a renaming that loads a strict subset of what another loads (model.bert.* → bert.* vs model.* → *, which also
    # loads the head) is not a rival: the one that loads more of the file wins
    items = [set(f.mapping.items()) for f in good]
    good = [f for f, mine in zip(good, items) if not any(mine < other for other in items)]
    if len(good) == 1:
        return _result(good[0], dropped, [], target, heads, subset)
    if len(good) > 1:
        winner, shadowed = _shadowed(good)
        if winner is not None:
            return _result(winner, dropped, shadowed, target, heads, subset)
        raise TicketsError(
            f"{what}: several wrapper prefixes fit the model ({', '.join(f.label for f in good[:6])}), so which "
            "network to load is ambiguous: re-save the state dict with only the keys of the one you mean, or pass "
            "strip=PREFIX to match_keys / load_checkpoint"
        )
    pool = [identity] + [evaluate(p, q) for (p, q), _ in votes.most_common(8) if (p, q) != ("", "")]
    best = max(pool, key=lambda f: (len(f.mapping), -len(f.extra), f is identity))
    raise _mismatch(what, best, target, subset)


def _mismatch(what: str, fit: _Fit, target: list[str], subset: bool) -> TicketsError:
    via = ""
    if fit.strip or fit.add:
        via = f" (best renaming: {fit.label}, {counted(len(fit.mapping), 'name')} matched)"
    unexpected = fit.extra + (fit.outside if subset else [])
    parts = []
    if fit.missing:
        parts.append(f"missing {_first(fit.missing)}")
    if unexpected:
        parts.append(f"unexpected {_first(unexpected)}")
    if not parts:
        parts.append("no name matches")
    expect = _first(target, 3)
    return TicketsError(
        f"{what}: names do not fit the model{via}: {'; '.join(parts)}: pass weights saved from this architecture "
        f"(the model's names are {expect}), or rename the keys to those names"
    )


def _result(
    fit: _Fit,
    dropped: list[str],
    shadowed: list[_Fit],
    target: list[str],
    heads: tuple[str, ...],
    subset: bool,
    forced: bool = False,
) -> tuple[dict[str, str], list[str]]:
    notes = []
    n = len(fit.mapping)
    if fit.strip and fit.add:
        notes.append(f"renamed {counted(n, 'key')}: removed wrapper prefix {fit.strip!r}{_wrapper_label(fit.strip)}, "
                     f"added {fit.add!r}")
    elif fit.strip:
        how = "as asked" if forced else "preferred over its copy" if shadowed else "the only prefix that fits"
        notes.append(f"stripped wrapper prefix {fit.strip!r}{_wrapper_label(fit.strip)} from {counted(n, 'key')} "
                     f"({how})")
    elif fit.add:
        notes.append(f"added prefix {fit.add!r} to {counted(n, 'key')} (the model wraps the network)")
    for other in shadowed:
        count = sum(s.startswith(other.strip) for s in fit.outside)
        notes.append(f"ignored {counted(count, 'key')} under {other.strip!r}{_wrapper_label(other.strip)}, a copy of "
                     "the same network")
    outside = [s for s in fit.outside if not any(s.startswith(other.strip) for other in shadowed)]
    if outside:
        notes.append(f"ignored {counted(len(outside), 'key')} outside {fit.strip!r}: {_first(outside)}")
    if dropped:
        notes.append(f"dropped {counted(len(dropped), 'key')} that are no model weights: {_first(dropped)}")
    if fit.projection:
        notes.append(
            f"dropped {counted(len(fit.projection), 'projection-head key')} under {_first(heads, 2)} that match "
            f"nothing in the model: {_first(fit.projection)}"
        )
    if not subset:
        fed = set(fit.mapping.values())
        absent = [t for t in target if t not in fed]
        head_absent = [t for t in absent if _under(t, heads)]
        other_absent = [t for t in absent if not _under(t, heads)]
        if head_absent:
            notes.append(f"no weights for head {_first(heads, 2)} in the file: {_first(head_absent)} stay as "
                         "initialised (fresh head)")
        if other_absent:
            notes.append(f"{counted(len(other_absent), 'optional key')} absent, kept as initialised: "
                         f"{_first(other_absent)}")
    return dict(fit.mapping), notes


def rename(state: Mapping[str, torch.Tensor], mapping: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """``state`` with its keys renamed by ``mapping`` (source → target, from ``match_keys``); others left out."""
    return {mapping[k]: v for k, v in state.items() if k in mapping}


# --------------------------------------------------------------------------------------------------------------
# loading into a module
# --------------------------------------------------------------------------------------------------------------


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], *, strict: bool = True) -> list[str]:
    """Copy ``state`` (target names) into ``module`` in place; returns notes.

    Shapes are checked first: the first tensor whose shape differs from the module's is named in a one-line
    TicketsError. BatchNorm ``num_batches_tracked`` counters absent from ``state`` keep the module's. With
    ``strict``, other absent or unknown names are a TicketsError naming the first three; without it they are
    listed in the notes. Values are converted to the module's dtype (a float16 checkpoint loads into a float32
    model; the note says so).
    """
    own = module.state_dict()
    notes: list[str] = []
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TicketsError(f"entries {_first(bad)} are not tensors: pass a state dict (name → tensor)")
    for key, value in state.items():
        if key in own and tuple(value.shape) != tuple(own[key].shape):
            raise TicketsError(
                f"tensor {key!r} has shape {list(value.shape)} in the weights but {list(own[key].shape)} in the "
                "model: the weights are for another architecture or width; pass weights of this model"
            )
    full = dict(state)
    counters = [k for k in own if k.endswith("num_batches_tracked") and k not in full]
    for key in counters:
        full[key] = own[key].clone()
    missing = [k for k in own if k not in full]
    unexpected = [k for k in full if k not in own]
    if strict and (missing or unexpected):
        parts = ([f"missing {_first(missing)}"] if missing else []) + (
            [f"unexpected {_first(unexpected)}"] if unexpected else []
        )
        raise TicketsError(
            f"weights do not fit {type(module).__name__}: {'; '.join(parts)}: pass weights of this model "
            "(names as in model.state_dict())"
        )
    if counters and len(counters) < len(own):
        notes.append(f"{counted(len(counters), 'BatchNorm counter')} (num_batches_tracked) absent: kept the model's")
    if missing and not strict:
        notes.append(f"{counted(len(missing), 'tensor')} not in the weights, left as initialised: {_first(missing)}")
    if unexpected and not strict:
        notes.append(f"{counted(len(unexpected), 'tensor')} of the weights unknown to the model, ignored: "
                     f"{_first(unexpected)}")
        full = {k: v for k, v in full.items() if k in own}
    casts = Counter(
        (str(v.dtype).replace("torch.", ""), str(own[k].dtype).replace("torch.", ""))
        for k, v in full.items()
        if k in own and v.dtype != own[k].dtype and v.is_floating_point() and own[k].is_floating_point()
    )
    for (src, dst), count in sorted(casts.items()):
        notes.append(f"{counted(count, 'tensor')} stored as {src}: converted to the model's {dst}")
    try:
        module.load_state_dict(full, strict=strict)
    except RuntimeError as err:  # shapes and names were checked; this is a module with custom loading rules
        raise TicketsError(
            f"could not load the weights into {type(module).__name__} ({load_error_detail(err)}): pass weights of "
            "this model"
        ) from None
    return notes


_SIZE_MISMATCH = re.compile(r"size mismatch for ([^:]+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) "
                            r"from checkpoint, the shape in current model is torch\.Size\(\[([^\]]*)\]\)")


def is_load_error(err: BaseException) -> bool:
    """Whether ``err`` is torch's ``load_state_dict`` complaint (names or shapes that do not fit the module)."""
    return isinstance(err, RuntimeError) and str(err).lstrip().startswith("Error(s) in loading state_dict")


def load_error_detail(err: BaseException) -> str:
    """The first informative line of a ``load_state_dict`` RuntimeError, in one line: ``tensor 'linear.weight'
    has shape [100, 64] in the weights but [10, 64] in the model``, ``missing 'a', 'b' …``, ``unexpected …``
    (torch's own first line only says "Error(s) in loading state_dict for X:")."""
    text = str(err)
    m = _SIZE_MISMATCH.search(text)
    if m:
        def shape(s: str) -> list[int]:
            return [int(x) for x in s.split(",") if x.strip()]

        return (f"tensor {m.group(1).strip()!r} has shape {shape(m.group(2))} in the weights but "
                f"{shape(m.group(3))} in the model")
    for line in text.splitlines()[1:]:
        line = line.strip()
        for lead, what in (("Missing key(s) in state_dict:", "missing"), ("Unexpected key(s) in state_dict:",
                                                                           "unexpected")):
            if line.startswith(lead):
                names = re.findall(r'"([^"]+)"', line)
                return f"{what} {_first(names)}" if names else f"{what} keys"
        if line:
            return line.rstrip(".")[:200]
    return _first_line(err)


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (``transfer --save-weights`` records ``model`` and ``task``);
    {} for any other file or one whose header cannot be read."""
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 1 < n <= 100_000_000:
                return {}
            header = json.loads(fh.read(n))
    except (OSError, ValueError):
        return {}
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


@dataclass
class LoadReport:
    """What ``load_checkpoint`` did: the file, its sha256, notes for the log, and which target keys were filled."""

    path: str
    sha256: str
    notes: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)  # target keys taken from the file
    fresh: list[str] = field(default_factory=list)  # head keys left as initialised
    # why the head stayed fresh when the file has one of another shape: (model key, shape in the file, the model's)
    head_mismatch: tuple[str, list[int], list[int]] | None = None

    @property
    def head_loaded(self) -> bool:
        return not self.fresh

    @property
    def info(self) -> dict[str, Any]:
        """What a ModelSpec's ``info`` records about the file (``weights``, ``weights_sha256``, ``weights_notes``):
        run hashes, ``Prepared.inputs`` and the notes printed for a run read it."""
        return {"weights": self.path, "weights_sha256": self.sha256, "weights_notes": self.notes}


def load_checkpoint(
    module: nn.Module,
    path: str | os.PathLike,
    *,
    head: Iterable[str] = (),
    strip: str | None = None,
    what: str | None = None,
) -> LoadReport:
    """Read ``path`` (``read_state_dict``), match its names to ``module``'s (``match_keys`` in full mode), and load
    it (``load_into``), in place.

    ``head`` names the classifier submodule(s) (``"fc"``): its keys may be missing from the file, replaced by a
    projection (MoCo / SimCLR MLP heads), or of another shape (a 128-d MoCo v1 projection, a 10-way fine-tuned
    classifier); in each case the head keeps the module's initialisation and ``fresh`` lists its keys. PyTorch
    prune reparametrisations (``X_orig`` + ``X_mask``) are folded into ``X = X_orig * X_mask``. Input-normalisation
    buffers of a wrapper are dropped; a note warns when they differ from the module's own ``normalize``.
    """
    path = Path(path)
    what = what or f"weights file {str(path)!r}"
    notes: list[str] = []
    state = read_state_dict(path, notes=notes)
    state = _fold_prune(state, notes)
    own = module.state_dict()
    heads = tuple(h.rstrip(".") for h in head)
    mapping, match_notes = match_keys(state, own, head=heads, strip=strip, what=what)
    notes += match_notes
    renamed = rename(state, mapping)
    head_keys = [k for k in own if _under(k, heads)]
    wrong = [k for k in head_keys if k in renamed and tuple(renamed[k].shape) != tuple(own[k].shape)]
    if wrong:
        notes.append(
            f"head {_first(heads, 2)} in the file has shape {list(renamed[wrong[0]].shape)} for {wrong[0]!r}, the "
            f"model's is {list(own[wrong[0]].shape)} (a projection or another label space): the head stays fresh"
        )
    elif any(k in renamed for k in head_keys) and not all(k in renamed for k in head_keys):
        notes.append(f"head {_first(heads, 2)} is incomplete in the file: the head stays fresh")
    fresh = [] if all(k in renamed for k in head_keys) and not wrong else head_keys
    mismatch = (wrong[0], list(renamed[wrong[0]].shape), list(own[wrong[0]].shape)) if wrong else None
    for k in fresh:
        renamed[k] = own[k].clone()
    loaded_notes = load_into(module, renamed, strict=True)
    if any(re.search(r"optional keys? absent", n) for n in notes):  # match_keys already listed the counters
        loaded_notes = [n for n in loaded_notes if "num_batches_tracked" not in n]
    notes += loaded_notes
    _check_normalisation(module, state, notes)
    return LoadReport(
        path=str(path),
        sha256=file_digest(path),
        notes=notes,
        loaded=[k for k in own if k in renamed and k not in fresh],
        fresh=fresh,
        head_mismatch=mismatch,
    )


def _fold_prune(state: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    """``X_orig`` + ``X_mask`` (torch.nn.utils.prune) → ``X = X_orig * X_mask``."""
    origs = [k for k in state if k.endswith("_orig") and k[: -len("_orig")] + "_mask" in state]
    if not origs:
        return state
    out = dict(state)
    for key in origs:
        base = key[: -len("_orig")]
        out[base] = state[key] * state[base + "_mask"].to(state[key].dtype)
        del out[key], out[base + "_mask"]
    notes.append(
        f"folded {counted(len(origs), 'torch.nn.utils.prune reparametrisation')} (X_orig × X_mask) into plain "
        "weights; to keep "
        "the mask as a ticket, pass the same file as --ticket"
    )
    return out


def _check_normalisation(module: nn.Module, state: Mapping[str, torch.Tensor], notes: list[str]) -> None:
    norm = getattr(module, "normalize", None)
    mean, std = getattr(norm, "mean", None), getattr(norm, "std", None)
    if not isinstance(mean, torch.Tensor) or not isinstance(std, torch.Tensor):
        return
    for key, value in state.items():
        m = re.fullmatch(r"(.*\.)?normali[sz](e|er)\.(new_)?(mean|std)", key)
        if not m:
            continue
        ours = mean if m.group(4) == "mean" else std
        if value.numel() == ours.numel() and not torch.allclose(value.float().flatten(), ours.float().flatten(),
                                                                 atol=1e-3):
            notes.append(
                f"warning: the file normalises inputs with {m.group(4)} {value.flatten().tolist()} ({key!r}) but the "
                f"model uses {ours.flatten().tolist()}: its accuracy may suffer"
            )
            return


# --------------------------------------------------------------------------------------------------------------
# digests
# --------------------------------------------------------------------------------------------------------------


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) over a state dict: for each name in sorted order, the name, dtype, shape and raw bytes.

    Any dtype works (bfloat16 and bool included: the bytes are read through a uint8 view), any device (copied to
    CPU); equal tensors in another memory layout give the same digest.
    """
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            raise TicketsError(f"state entry {name!r} is a {type(t).__name__}, not a tensor: pass name → tensor")
        t = t.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.cpu().contiguous()
        head = f"{name}\0{str(t.dtype).replace('torch.', '')}\0{list(t.shape)}\0{t.numel() * t.element_size()}\0"
        h.update(head.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB chunks (memoised per path, size and mtime in the process)."""
    try:
        st = os.stat(path)
        key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _DIGESTS:
        return _DIGESTS[key]
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as err:
        raise TicketsError(f"cannot read {str(path)!r} ({err.strerror or err}): check the path") from None
    if key is not None:
        _DIGESTS[key] = h.hexdigest()
    return h.hexdigest()
