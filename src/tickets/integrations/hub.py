"""Tickets as Hugging Face Hub repositories, through ``huggingface_hub.ModelHubMixin``.

``Ticket.save_pretrained(dir)``, ``Ticket.from_pretrained(dir_or_repo_id)`` and ``Ticket.push_to_hub(repo_id)``
(``tickets/ticket.py``) go through :class:`TicketRepo`, a ``ModelHubMixin`` whose folder holds

* ``ticket.safetensors``: the ticket file, byte for byte what ``save_ticket`` writes (format unchanged);
* ``config.json``: a summary for the Hub's file viewer (format, model, source task, method, pattern, sparsity,
  checksum); nothing reads it back;
* ``README.md``: a model card generated from the ticket's metadata and, when the ticket sits in a run directory
  (``<run>/level-NN/ticket.safetensors`` beside its ``metrics.json``, the run's ``config.yaml`` one level up), that
  run's figures: what the ticket scored when fine-tuned on its source task, and with which budget.

Upload (``push_to_hub``) and download (``from_pretrained`` with a repository id) are the mixin's own: one
``HfApi.upload_folder`` commit, ``hf_hub_download`` with the usual cache, token and offline settings. This module
imports ``huggingface_hub`` (installed with ``transformers``); ``tickets.ticket`` imports it only when these methods
are called. It does not import ``tickets.ticket`` (which imports it): the ticket writer is passed in.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from tickets.errors import TicketsError
from tickets.runs import TICKET_FILE, RunLayout

try:
    from huggingface_hub import ModelCard, ModelCardData, ModelHubMixin, hf_hub_download
except ImportError:  # pragma: no cover - depends on the environment
    raise TicketsError("sharing tickets on the Hub needs huggingface_hub: pip install huggingface_hub "
                       "(it comes with pip install 'pretrained-tickets[text]')") from None

CONFIG_FILE = "config.json"
TAGS = ["tickets", "lottery-ticket", "pruning", "sparsity"]
# Hub ids of the models the registry loads from a package or folder (model card `base_model`).
KNOWN_BASE_MODELS = {"minilm-l6": "sentence-transformers/all-MiniLM-L6-v2"}
_MAX_TABLE_ROWS = 80


class TicketRepo(ModelHubMixin, library_name="tickets", tags=list(TAGS)):
    """What ``ModelHubMixin`` saves, uploads and downloads for one ticket (see the module docstring).

    Build it with :func:`ticket_repo` (to save or push) or ``TicketRepo.from_pretrained`` (to download: the
    instance's ``path`` is the local ``ticket.safetensors``)."""

    def __init__(self, ticket: Any = None, *, save: Callable[[Path, Any], None] | None = None,
                 run_dir: str | os.PathLike | None = None, path: str | os.PathLike | None = None):
        self.ticket = ticket
        self.save = save
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.path = Path(path) if path is not None else None

    # -- ModelHubMixin hooks -----------------------------------------------------------------------------------

    def _save_pretrained(self, save_directory: Path) -> None:
        if self.ticket is None or self.save is None:
            raise TicketsError("nothing to save: build the repository with ticket_repo(ticket, save_ticket)")
        self.save(Path(save_directory) / TICKET_FILE, self.ticket)
        (Path(save_directory) / CONFIG_FILE).write_text(json.dumps(summary(self.ticket), indent=2, sort_keys=True))

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir: str | Path | None,
                         force_download: bool, local_files_only: bool, token: str | bool | None,
                         **model_kwargs: Any) -> "TicketRepo":
        if os.path.isdir(model_id):
            path = Path(model_id) / TICKET_FILE
            if not path.is_file():
                raise TicketsError(f"folder {model_id!r} holds no {TICKET_FILE}: point at a folder written by "
                                   "Ticket.save_pretrained")
        else:
            path = Path(hf_hub_download(repo_id=model_id, filename=TICKET_FILE, revision=revision,
                                        cache_dir=cache_dir, force_download=force_download, token=token,
                                        local_files_only=local_files_only, library_name="tickets"))
        return cls(path=path)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The model card: Hub metadata (library, tags, base model, datasets) and a body describing the ticket."""
        if self.ticket is None:
            return super().generate_model_card(*args, **kwargs)
        run = run_info(self.ticket, self.run_dir)
        data = card_data(self.ticket)
        return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{card_body(self.ticket, run, **kwargs)}")


def ticket_repo(ticket: Any, save: Callable[[Path, Any], None], run_dir: str | os.PathLike | None = None
                ) -> TicketRepo:
    """The ``ModelHubMixin`` view of ``ticket`` (``save`` writes the ticket file: ``tickets.ticket.save_ticket``)."""
    return TicketRepo(ticket, save=save, run_dir=run_dir)


def fetch_ticket_file(repo_or_dir: str | os.PathLike, **kwargs: Any) -> Path:
    """The local ``ticket.safetensors`` of a ``save_pretrained`` folder or a Hub repository (downloaded into the
    Hub cache through ``TicketRepo.from_pretrained``). Hub and network failures become one-line TicketsErrors; a
    path that names no folder (absolute, ``./``, ``~``, or more than one ``/``: a Hub id is ``user/name``) is "not
    found", not a Hub id error."""
    text = str(repo_or_dir)
    if not Path(text).expanduser().exists() and (text.startswith(("/", "./", "../", "~")) or text.count("/") > 1
                                                or os.sep != "/" and os.sep in text):
        raise TicketsError(f"folder {text!r} not found: pass a folder written by Ticket.save_pretrained, or a Hub "
                           "repository id (user/name)")
    try:
        repo = TicketRepo.from_pretrained(str(repo_or_dir), **kwargs)
    except TicketsError:
        raise
    except Exception as exc:  # huggingface_hub raises its own error types (offline, missing repo or file, auth)
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        where = "folder" if Path(str(repo_or_dir)).exists() else "Hub repository"
        raise TicketsError(
            f"could not fetch a ticket from {where} {str(repo_or_dir)!r} ({type(exc).__name__}: {text}): check the "
            "repository id (user/name) and the network / HF_HUB_OFFLINE, or pass a local folder written by "
            "Ticket.save_pretrained"
        ) from None
    assert repo.path is not None
    return repo.path


# --------------------------------------------------------------------------------------------------------------
# what the card says
# --------------------------------------------------------------------------------------------------------------


def summary(ticket: Any) -> dict[str, Any]:
    """``config.json``: the ticket's identity at a glance (no file reads it back)."""
    meta = ticket.meta
    report = ticket.mask.report()["prunable"]
    out = {
        "library": "tickets",
        "file": TICKET_FILE,
        "ticket_format": "tickets.ticket",
        "ticket_format_version": meta.get("format_version", 1),
        "checksum": meta.get("checksum"),
        "tensors": report["tensors"],
        "prunable_weights": report["total"],
        "kept_weights": report["kept"],
        "sparsity": report["sparsity"],
        "sparsity_over": "prunable set",
    }
    for key in ("model", "prunable", "source_task", "method", "scope", "level", "seed", "weights", "pattern",
                "head_policy", "tickets_version"):
        if key in meta:
            out[key] = meta[key]
    return out


def run_info(ticket: Any, run_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The figures of the run the ticket belongs to: ``{"metrics": metrics.json, "config": config.yaml,
    "level_dir": ...}`` (each only when found). ``run_dir`` is a level folder, or a run folder holding the
    ticket's ``level-NN/``; default: the folder of the file the ticket was read from."""
    level_dir = None
    if run_dir is not None:
        run_dir = Path(run_dir)
        level = ticket.meta.get("level")
        if (run_dir / "metrics.json").is_file():
            level_dir = run_dir
        elif isinstance(level, int) and RunLayout(run_dir).level(level).is_dir():
            level_dir = RunLayout(run_dir).level(level)
    elif getattr(ticket, "source", None) is not None:
        level_dir = Path(ticket.source).parent
    out: dict[str, Any] = {}
    if level_dir is None:
        return out
    out["level_dir"] = str(level_dir)
    metrics = level_dir / "metrics.json"
    if metrics.is_file():
        try:
            out["metrics"] = json.loads(metrics.read_text())
        except (OSError, ValueError):
            pass
    config = level_dir.parent / "config.yaml"
    if config.is_file():
        import yaml

        try:
            loaded = yaml.safe_load(config.read_text())
            if isinstance(loaded, dict):
                out["config"] = loaded
        except (OSError, yaml.YAMLError):
            pass
    return out


def _model_name(meta: dict) -> str:
    return str(meta.get("model") or "unknown model")


def card_data(ticket: Any) -> ModelCardData:
    """Hub metadata: library ``tickets``, tags, the base model's Hub id when known, the source dataset."""
    meta = ticket.meta
    model = _model_name(meta)
    base = KNOWN_BASE_MODELS.get(model)
    if base is None and model.startswith("hf:") and not Path(model[3:]).exists() and model[3:].count("/") <= 1:
        base = model[3:]
    task = str(meta.get("source_task") or "")
    datasets = "nyu-mll/glue" if task.startswith("glue/") else None
    tags = list(TAGS) + [t for t in (meta.get("method"), _pattern_name(meta)) if isinstance(t, str)]
    return ModelCardData(library_name="tickets", tags=sorted(set(tags)), base_model=base, datasets=datasets)


def _pattern_name(meta: dict) -> str:
    p = meta.get("pattern")
    if isinstance(p, dict):
        return p.get("name", "unstructured") + (f":{p['options']}" if p.get("options") else "")
    return p if isinstance(p, str) else "unstructured"


def _prunable_text(meta: dict) -> str:
    p = meta.get("prunable")
    if isinstance(p, dict):
        parts = [f"preset `{p.get('preset')}`"]
        parts += [f"include `{x}`" for x in p.get("include", ())]
        parts += [f"exclude `{x}`" for x in p.get("exclude", ())]
        return ", ".join(parts)
    return f"`{p}`" if p else "the tensors the mask covers"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _scores(metrics: dict) -> str:
    pm = metrics.get("primary_metric")
    parts = []
    for split in ("val", "test"):
        figures = metrics.get(split)
        if isinstance(figures, dict) and figures:
            keys = [pm] if pm in figures else []
            keys += [k for k in sorted(figures) if k not in keys and k != "loss"]
            parts.append(f"{split}: " + ", ".join(f"{k} {_fmt(figures[k])}" for k in keys))
    robust = metrics.get("robust")
    if isinstance(robust, dict) and "robust_accuracy" in robust:
        parts.append(f"robust accuracy {_fmt(robust['robust_accuracy'])} ({robust.get('attack')}, eps "
                     f"{robust.get('eps')})")
    return "; ".join(parts)


def card_body(ticket: Any, run: dict[str, Any], **kwargs: Any) -> str:
    """The Markdown body of the model card (``kwargs``: ``repo_id`` for the usage snippet)."""
    meta = ticket.meta
    report = ticket.mask.report()["prunable"]
    model = _model_name(meta)
    task = meta.get("source_task")
    method = meta.get("method")
    title = f"Lottery ticket for `{model}`"
    if method or task:
        title += f": {method or 'mask'}" + (f" on `{task}`" if task else "")
    title += f", {report['sparsity']:.1%} sparse"

    rows = [("model", f"`{model}`")]
    if task:
        rows.append(("source task", f"`{task}`"))
    if method:
        how = str(method)
        if meta.get("level") is not None:
            how += f", level {meta['level']}"
        if meta.get("scope"):
            how += f", {meta['scope']} ranking"
        rows.append(("method", how))
    rows.append(("pattern", f"`{_pattern_name(meta)}`"))
    rows.append(("sparsity", f"{report['sparsity']:.4f} over the prunable set ({_prunable_text(meta)}: "
                             f"{report['tensors']} tensors, {report['total']:,} weights; {report['kept']:,} kept)"))
    if meta.get("weights"):
        rows.append(("weights", f"`{meta['weights']}`" + (" (the pre-trained weights under the mask)"
                                                          if meta["weights"] == "theta0" else "")))
    if meta.get("rewind"):
        rows.append(("rewind", json.dumps(meta["rewind"])))
    if meta.get("seed") is not None:
        rows.append(("seed", str(meta["seed"])))
    if meta.get("head_policy"):
        rows.append(("head", f"`{meta['head_policy']}` (heads are never pruned; rebuilt per task)"))
    if meta.get("format") not in (None, "tickets.ticket"):
        rows.append(("converted from", f"`{meta['format']}`"))
    metrics = run.get("metrics") or {}
    if metrics:
        scores = _scores(metrics)
        if scores:
            rows.append(("scores on the source task", scores + " (fine-tuned under this mask)"))
    config = run.get("config") or {}
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    budget = [f"{k} {train[k]}" for k in ("epochs", "lr", "optimizer", "batch_size") if train.get(k) is not None]
    if data.get("train_size") is not None:
        budget.append(f"train_size {data['train_size']}")
    if budget:
        rows.append(("training", ", ".join(budget)))
    if meta.get("checksum"):
        rows.append(("checksum", f"`{meta['checksum']}`"))

    lines = [f"# {title}", "",
             f"A *ticket*: a sparse mask over the prunable weights of `{model}`, stored in `{TICKET_FILE}` "
             "(masks bit-packed, checksummed) by the `tickets` toolkit. Apply it to the model's weights and "
             "fine-tune: pruned weights stay exactly zero.", "",
             "| | |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "## Per-tensor sparsity", "", "| tensor | shape | kept | total | sparsity |",
              "| --- | --- | ---: | ---: | ---: |"]
    per = list(report["per_tensor"].items())
    for name, r in per[:_MAX_TABLE_ROWS]:
        shape = "×".join(str(d) for d in r["shape"])
        lines.append(f"| `{name}` | {shape} | {r['kept']:,} | {r['total']:,} | {r['sparsity']:.4f} |")
    if len(per) > _MAX_TABLE_ROWS:
        lines.append(f"| … {len(per) - _MAX_TABLE_ROWS} more | | | | |")
    repo = kwargs.get("repo_id") or "<user>/<this-repo>"
    lines += ["", "## Use", "", "```python", "from tickets import Ticket",
              "from tickets.integrations import apply_ticket", "from tickets.integrations.hf import TicketCallback",
              "", f'ticket = Ticket.from_pretrained("{repo}")', "print(ticket.mask.sparsity, ticket.meta)",
              "apply_ticket(model, ticket)  # any transformers model: pruned weights set to 0",
              "# and to keep them at 0 while transformers.Trainer fine-tunes:",
              "# Trainer(model=model, ..., callbacks=[TicketCallback(ticket)])", "```", ""]
    if "@" in str(model):  # name@state-digest: a module passed through the Python API, not a registered name
        lines += [f"The ticket was drawn on a model passed through the Python API ({model}: its name and a digest of "
                  "its weights), which the command line cannot name: rebuild it the same way and pass it in,", "",
                  "```python", "import tickets",
                  "spec = tickets.from_module(net, head=...)  # the same module and weights",
                  f'tickets.transfer_ticket(tickets.TransferConfig(ticket="{TICKET_FILE}", task=...), model=spec)',
                  "```", ""]
    else:
        lines += ["or on the command line, after downloading the folder:", "", "```bash",
                  f"tickets transfer --ticket {TICKET_FILE} --model {model} --task <target task>", "```", ""]
    return "\n".join(lines)
