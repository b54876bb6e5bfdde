"""`tickets export`: a ticket into the files other tools read — its mask, or the model it prunes.

Two forms:

* ``tickets export TICKET --to torch-prune|open-lth|nni --out PATH``: the mask alone, in that tool's layout
  (``tickets.formats``). No model is needed.
* ``tickets export TICKET [--weights FILE] [--compact] --format safetensors|onnx|pt2 --out DIR``: the model under
  the ticket. The model is the one the ticket records (``--model`` overrides it), with its registry weights (θ0) or
  ``--weights FILE`` (any checkpoint layout ``tickets.statedict`` resolves; a fine-tuned model's head of another
  width is rebuilt to that width and loaded). The ticket's pattern (``patterns.pattern_from_meta``) is set up on the
  model; without ``--compact`` the masked model is written (``compact.masked_copy``: pruned weights, and what a
  structured pattern couples to them, set to zero), with ``--compact`` the physically smaller model
  (``compact.compact``; structured patterns only). ``safetensors`` writes ``model.safetensors`` (compact:
  ``save_compact``'s folder, reloadable with ``compact.load_compact``; a masked Hugging Face model:
  ``save_pretrained``'s folder, loadable with ``AutoModelFor….from_pretrained``); ``onnx`` and ``pt2`` write a
  deployment program (``compact.export_onnx`` checked in onnxruntime, ``compact.export_pt2``) traced on a batch of
  two example inputs: random images of the model's input size, or two tokenised sentences. Every form also
  writes ``export.json``: what was exported from what. Hugging Face folders (masked and compact) ship the
  tokenizer. A text model whose head reads pooled tokens, not the pooler (``HFTextModel.pooling``: MiniLM-L6's
  mean pooling) records ``pooling`` and a ``pooling_note`` in ``export.json``; its masked folder also gets
  sentence-transformers' ``modules.json`` + ``1_Pooling/config.json`` (``models.hf.write_pooling_config``), so
  ``load_model("hf:<folder>")`` pools the same way, and the export warns that plain transformers cannot.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from tickets.errors import TicketsError
from tickets.fileio import require_weights_file, write_json
from tickets.log import get_logger
from tickets.models.base import ModelSpec

logger = get_logger(__name__)

MODEL_FORMATS = ("safetensors", "onnx", "pt2")
EXAMPLE_SENTENCES = ("The film was a quiet delight from start to finish.", "It rained all day, so we stayed in.")


def export_masks(ticket_path: str | os.PathLike, fmt: str, out: str | os.PathLike) -> list[Path]:
    """Write the ticket's mask as ``fmt`` (``torch-prune``, ``open-lth``, ``nni``) to ``out``; returns the files.
    See ``tickets.formats.write_mask_file``."""
    from tickets.formats import write_mask_file
    from tickets.ticket import load_ticket

    ticket = load_ticket(ticket_path)
    return write_mask_file(ticket.mask, fmt, out)


# --------------------------------------------------------------------------------------------------------------
# the model a ticket applies to
# --------------------------------------------------------------------------------------------------------------


def load_model_weights(name: str, weights: str | os.PathLike | None = None, *,
                       model_root: str | os.PathLike | None = None) -> ModelSpec:
    """Model ``name`` from the registry, with its shipped weights or those of ``weights``.

    ``weights`` may be any checkpoint ``tickets.statedict`` reads (wrapper prefixes, nested state dicts,
    safetensors, torch.nn.utils.prune reparametrisations folded), for image and Hugging Face models alike. When the
    file's head has another width than the model's (a model fine-tuned on another task: ``transfer
    --save-weights``), the head is rebuilt to that width first, so the file's head is loaded too; a file without
    a head leaves the model's. TicketsError (one line) for an unknown model or a file that does not fit."""
    from tickets.models import load_model
    from tickets.statedict import load_checkpoint, read_state_dict

    if weights is None:
        return load_model(name, model_root=model_root)
    require_weights_file(weights)
    try:
        spec, loaded = load_model(name, model_root=model_root, weights=weights), True
    except TicketsError as exc:
        if "takes no --weights" not in str(exc):  # Hugging Face models: loaded below
            raise
        spec, loaded = load_model(name, model_root=model_root), False
    keys = {k: tuple(v.shape) for k, v in read_state_dict(weights).items()}
    if _fit_head_to(spec, keys) or not loaded:
        report = load_checkpoint(spec.module, weights, head=tuple(spec.head))
        for note in report.notes:
            logger.info("weights %s: %s", Path(weights).name, note)
        spec.info.update(report.info)
    return spec


def _fit_head_to(spec: ModelSpec, shapes: dict[str, tuple[int, ...]]) -> bool:
    """Rebuild ``spec``'s head with the width (or kind) the checkpoint's head has (names as in the file, any
    prefix); True when it was rebuilt."""
    text = getattr(spec.module, "head_kind", None) is not None  # tickets' HFTextModel
    if text:
        if any(re.search(r"(^|\.)(cls|lm_head|vocab_projector|vocab_transform)\.", k) for k in shapes):
            vocab = int(getattr(spec.module.config, "vocab_size", 0) or 0)
            spec.adapt_to(SimpleNamespace(kind="mlm", num_outputs=vocab, name="export"), "fresh", 0)
            return True
        found = [s for k, s in shapes.items() if re.search(r"(^|\.)classifier(\.out_proj)?\.weight$", k)]
        if found and found[0][0] != spec.module.task_model.config.num_labels:
            spec.adapt_to(SimpleNamespace(kind="text", num_outputs=int(found[0][0]), name="export"), "fresh", 0)
            return True
        return False
    if len(spec.head) != 1:
        return False
    path = re.escape(spec.head[0])
    found = [s for k, s in shapes.items() if re.search(rf"(^|\.){path}\.weight$", k) and len(s) == 2]
    head = spec.module.get_submodule(spec.head[0])
    if found and isinstance(head, torch.nn.Linear) and found[0][0] != head.out_features:
        spec.adapt_to(SimpleNamespace(kind="image", num_outputs=int(found[0][0]), name="export"), "fresh", 0)
        return True
    return False


def example_inputs(spec: ModelSpec, batch: int = 2) -> Any:
    """Inputs to trace an export with: ``batch`` random images (seeded) of the model's input size in [0, 1], or
    ``batch`` example sentences tokenised by the model's tokenizer (a dict of tensors)."""
    if spec.tokenizer is not None:
        enc = spec.tokenizer(list(EXAMPLE_SENTENCES[:batch]), padding=True, truncation=True, max_length=32,
                             return_tensors="pt")
        keep = ("input_ids", "attention_mask", "token_type_ids")
        return {k: enc[k] for k in keep if k in enc}
    if not spec.input_size or not spec.in_channels:
        raise TicketsError(f"model {spec.name!r} declares no input size / channels, so there is nothing to trace the "
                           "export with: export --format safetensors, or give the ModelSpec input_size and "
                           "in_channels")
    gen = torch.Generator().manual_seed(0)
    return torch.rand(batch, spec.in_channels, spec.input_size, spec.input_size, generator=gen)


def export_model(
    ticket_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fmt: str = "safetensors",
    compact: bool = False,
    model: str | None = None,
    weights: str | os.PathLike | None = None,
    model_root: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Export the model under ticket ``ticket_path`` into folder ``out`` (see the module docstring); returns the
    record also written to ``out/export.json``: ``{"ticket", "model", "pattern", "compact", "format", "files",
    "parameters": {"dense", "exported"}, "sparsity", "max_abs_diff" (onnx / pt2: program vs module)}``.

    TicketsError (one line) for a ticket recording no model (pass ``model``), an unstructured or N:M ticket with
    ``compact`` (nothing gets smaller: export the masked model), missing export dependencies, or a ticket that does
    not fit the model."""
    from tickets import compact as compaction
    from tickets.patterns import pattern_from_meta
    from tickets.ticket import load_ticket

    if fmt not in MODEL_FORMATS:
        raise TicketsError(f"unknown export format {fmt!r}: choose one of {', '.join(MODEL_FORMATS)}")
    ticket = load_ticket(ticket_path)
    name = model or ticket.meta.get("model")
    if not name:
        raise TicketsError(f"ticket {ticket_path} records no model (a {ticket.meta.get('format', 'legacy')} mask "
                           "file): pass --model NAME")
    spec = load_model_weights(name, weights, model_root=model_root)
    spec.module.eval()
    mask = ticket.fit(spec.module, head=spec.head)
    pattern = pattern_from_meta(ticket.meta.get("pattern"))
    example = example_inputs(spec)
    from tickets.patterns.channel import Channel

    if isinstance(pattern, Channel):
        pattern.setup(spec.module, mask.names, spec, example_inputs=example)
    else:
        pattern.setup(spec.module, mask.names, spec)
    pattern.verify(mask)
    if compact:
        module, description = compaction.compact(spec, mask, pattern, example_inputs=example)
    else:
        module, description = compaction.masked_copy(spec, mask, pattern), None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "ticket": {"path": str(ticket_path), "checksum": ticket.meta.get("checksum"), "sparsity": mask.sparsity},
        "model": name, "weights": str(weights) if weights is not None else "registry (theta0)",
        "pattern": pattern.spec(), "compact": bool(compact), "format": fmt,
        "parameters": {"dense": compaction.count_parameters(spec.module),
                       "exported": compaction.count_parameters(module)},
    }
    task = None
    if weights is not None:  # transfer --save-weights records the task its head was fine-tuned on
        from tickets.statedict import safetensors_metadata

        task = safetensors_metadata(weights).get("task") or None
        if task:
            record["task"] = task
    pooling = _text_pooling(module)
    if pooling is not None:  # a text model whose head reads pooled tokens, not the pooler
        record["pooling"] = pooling
        record["pooling_note"] = _pooling_note(pooling, compact=bool(compact), fmt=fmt)
        if fmt == "safetensors" and not compact:
            logger.warning("export %s: %s", out, record["pooling_note"])
    if fmt == "safetensors":
        record["files"] = _save_safetensors(module, description, spec, out, task=task)
    else:
        target = out / f"model.{fmt}"
        result = (compaction.export_onnx if fmt == "onnx" else compaction.export_pt2)(module, example, target)
        record["files"] = [target.name]
        record["max_abs_diff"] = result.get("max_abs_diff")
    write_json(out / "export.json", record)
    record["files"].append("export.json")
    return record


def _save_safetensors(module: torch.nn.Module, description: dict | None, spec: ModelSpec, out: Path, *,
                      task: str | None = None) -> list[str]:
    """Write the safetensors export; a Hugging Face model whose head was fine-tuned on ``task`` records it as the
    config's ``finetuning_task`` (transformers' field), so ``tickets eval --model hf:<folder> --task <task>``
    scores the shipped head."""
    from tickets import compact as compaction
    from tickets.models.hf import _quiet_transformers

    if description is not None:
        compaction.save_compact(module, description, out)
        if description.get("family") == "hf" and spec.tokenizer is not None:  # as the masked folder ships it
            with _quiet_transformers():
                spec.tokenizer.save_pretrained(str(out))
        return _listing(out)
    task_model = getattr(module, "_task_model", None)
    if task_model is not None:  # a Hugging Face model: transformers' own folder (config.json + model.safetensors)
        if task:
            task_model.config.finetuning_task = task
        with _quiet_transformers():
            task_model.save_pretrained(str(out))
            if spec.tokenizer is not None:
                spec.tokenizer.save_pretrained(str(out))
        pooling = _text_pooling(module)
        if pooling is not None:  # how the head reads the sequence, where tickets' loader looks for it
            from tickets.models.hf import write_pooling_config

            write_pooling_config(out, pooling, int(getattr(task_model.config, "hidden_size", 0)
                                                      or getattr(task_model.config, "dim", 0)))
        return _listing(out)
    from safetensors.torch import save_model

    from tickets.fileio import atomic_write

    atomic_write(out / "model.safetensors", lambda tmp: save_model(module, str(tmp), metadata={
        "format": "pt", "model": spec.name}))
    return ["model.safetensors"]


def _listing(out: Path) -> list[str]:
    """The files written into ``out`` (sub-folders' files as ``folder/name``), export.json left out."""
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "export.json")


def _text_pooling(module: torch.nn.Module) -> str | None:
    """How a Hugging Face text model's classification / regression head reads the sequence when that is not the
    task model's own pooler ("mean", "cls", "max": ``HFTextModel.pooling``), else None."""
    pooling = getattr(module, "pooling", None)
    if getattr(module, "head_kind", None) not in ("classification", "regression") or pooling in (None, "pooler"):
        return None
    return str(pooling)


def _pooling_note(pooling: str, *, compact: bool, fmt: str) -> str:
    what = {"mean": "the attention-masked mean of the last hidden states", "cls": "the first token's last hidden "
            "state", "max": "the masked max of the last hidden states"}.get(pooling, f"{pooling}-pooled tokens")
    head = f"the classification head reads {pooling}-pooled tokens ({what}), not the model's pooler"
    if fmt != "safetensors":
        return f"{head}; the exported program computes it"
    if compact:
        return f"{head}; tickets.compact.load_compact restores it (compact.json records it)"
    return (f"{head}; tickets.load_model('hf:<folder>') and sentence-transformers restore it (modules.json + "
            "1_Pooling/config.json), plain transformers AutoModelForSequenceClassification cannot and gives other "
            f"logits: pool the last hidden states by {pooling} yourself and apply the classifier")


