"""Turn the names in a config into a ready model, task, prunable set and θ0 — the start of every verb."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tickets.errors import TicketsError
from tickets.masks import PrunableSet
from tickets.models.base import ModelSpec
from tickets.tasks.base import DataConfig, Task


@dataclass
class Prepared:
    """Everything a verb needs, built once."""

    spec: ModelSpec
    task: Task
    prunable: PrunableSet
    names: list[str]  # the resolved prunable tensors, in model order
    theta0: dict[str, torch.Tensor]  # full state dict after the head is fitted (CPU copies)
    model_id: str  # registry name, or name@<digest of weights> for a module passed through the API

    @property
    def family(self) -> str:
        """What the model declares itself to be (``cnn`` or ``transformer``): picks the training defaults."""
        return self.spec.family

    @property
    def recipe(self) -> dict | None:
        """TrainConfig defaults the model declares beyond its family's (``spec.info["recipe"]``), if any."""
        return self.spec.info.get("recipe")

    @property
    def model(self) -> torch.nn.Module:
        return self.spec.module

    @property
    def variant(self) -> dict:
        """How the loaded model computes differently from its plain architecture, as run hashes record it:
        ``pooling`` when a text model's heads read the sequence by a pooling other than its pooler (sentence-
        transformers checkpoints: mean), ``dtype`` when it holds weights in a precision other than float32."""
        return model_variant(self.spec.info)

    def notes(self, train: Any = None) -> list[str]:
        """What a user should know about how the model was loaded and will be trained, one line each: the pooler
        and pooling, the dtype, pruned heads, how a ``--weights`` file was read (the wrapper prefix stripped, keys
        ignored, a head left fresh), the prunable preset's choices, the training recipe and why.
        ``train``: the run's unresolved TrainConfig; the recipe line names only the options it leaves unset (and is
        left out when the user set them all)."""
        info = self.spec.info
        out = [f"{self.model_id}: {info[k]}" for k in ("pooler_note", "dtype_note", "pruned_heads_note") if info.get(k)]
        if self.spec.pretrained_task and self.spec.pretrained_task == self.task.name:
            out.append(f"{self.model_id}: the validation examples are carved from {self.task.name}'s training split, "
                       "which the shipped weights were trained on, so validation scores run high and pick epochs on "
                       "seen data; test scores are unaffected")
        if info.get("weights_notes") and not self._shipped_weights():  # --weights: the prefix stripped, …
            out += [f"weights {Path(str(info['weights'])).name}: {note}" for note in info["weights_notes"]]
        applied = {k: v for k, v in (self.recipe or {}).items() if train is None or getattr(train, k, None) is None}
        if applied:
            reason = info.get("recipe_reason", "")
            recipe = ", ".join(f"{k} {v}" for k, v in applied.items())
            out.append(f"{self.model_id} declares its training recipe ({recipe}) for options you did not set"
                       + (f": {reason}" if reason else ""))
        return out

    def _shipped_weights(self) -> bool:
        """Whether the weights file is the model's own (its registry folder and file pattern under the model
        root), whose loading notes are the same every run and not worth a line."""
        from tickets.models import MODELS

        try:
            folder, pattern = MODELS.meta(self.spec.name)["weights"]
        except (KeyError, TypeError, ValueError, TicketsError):
            return False
        path = Path(str(self.spec.info.get("weights", "")))
        return path.parent.name == folder and path.match(pattern)

    def inputs(self) -> dict:
        """What this run reads besides its config, by content: every data file the task loaded and the model's
        weights, each with its sha256 (``runs.RunDir.check_inputs`` records it and refuses a reused run directory
        whose inputs changed). Paths are recorded resolved, for the reader; only the digests are compared. Entries
        that are not files (``sklearn.datasets.load_digits``) are kept as named. A task's ``info["files"]`` is a list
        of paths or a ``{split: path}`` dict."""
        from tickets.statedict import file_digest

        def files(paths) -> list[dict]:
            out = []
            for entry in paths:
                path = Path(str(entry))
                out.append({"file": str(path.resolve()), "sha256": file_digest(path)} if path.is_file()
                           else {"file": str(entry)})
            return out

        info = self.spec.info
        weights = info.get("weights")
        model: dict = {"id": self.model_id}
        if info.get("weights_sha256"):
            model["sha256"] = info["weights_sha256"]
        elif weights and Path(str(weights)).is_file():
            model["sha256"] = file_digest(weights)
        elif info.get("source") and Path(str(info["source"])).is_dir():
            folder = Path(str(info["source"]))
            model["files"] = files(sorted(str(p) for p in folder.iterdir()
                                          if p.suffix in (".safetensors", ".bin", ".json") and p.is_file()))
        data = self.task.info.get("files", [])  # a list, or {split: file} (text tasks)
        return {"model": model, "data": files(data.values() if isinstance(data, dict) else data)}

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Put ``state`` into the model in place (devices kept)."""
        self.spec.module.load_state_dict(state)


def model_variant(info: dict) -> dict:
    """The behaviour-changing load choices recorded in a ModelSpec's ``info`` (see ``Prepared.variant``)."""
    out = {}
    if info.get("pooling") not in (None, "pooler"):
        out["pooling"] = info["pooling"]
    if info.get("dtype") not in (None, "float32"):
        out["dtype"] = info["dtype"]
    return out


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """Short sha256 over a state dict's names, shapes and bytes: identifies weights passed through the API."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:12]


def clone_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def prepare(
    model: str | ModelSpec,
    task: str | Task,
    *,
    head: str = "fresh",
    seed: int = 0,
    prunable: str | PrunableSet | None = None,
    data: DataConfig | None = None,
    data_root: str | Path | None = None,
    model_root: str | Path | None = None,
    model_id: str | None = None,
    weights: str | Path | None = None,
    task_options: Any = None,
) -> Prepared:
    """Load (or accept) the model and task, fit the head, resolve the prunable set and snapshot θ0.

    ``weights``: a checkpoint file θ0 is read from instead of the model's shipped weights (any layout
    ``tickets.statedict`` resolves). ``model_id`` names a passed ModelSpec in configs (default: its name plus a
    digest of its weights)."""
    from tickets.models import load_model
    from tickets.tasks import load_task

    if not isinstance(model, (str, ModelSpec)):
        raise TicketsError(f"model must be a registered name or a ModelSpec (tickets.models.from_module(module, "
                           f"head=...)), got {type(model).__name__}")
    if isinstance(model, ModelSpec):
        _refuse_prune_reparametrisations(model)
        spec = copy.deepcopy(model)  # the caller's model stays untouched by head changes and training
        model_id = model_id or f"{spec.name}@{state_digest(spec.module.state_dict())}"
    else:
        spec = load_model(model, model_root=model_root, weights=weights)
        model_id = model
    if not isinstance(task, str):
        task_obj = task
    else:
        task_obj = load_task(task, model=spec, data_root=data_root, data=data or DataConfig(), seed=seed,
                             options=task_options)
    spec.adapt_to(task_obj, head, seed)
    if isinstance(prunable, PrunableSet):
        pset = prunable
    else:
        pset = PrunableSet.parse(prunable or spec.prunable_preset)
    names = pset.resolve(spec.module)
    heads = tuple(h + "." for h in spec.head)
    names = [n for n in names if not n.startswith(heads)]  # heads are never pruned, whatever the patterns say
    return Prepared(spec, task_obj, pset, names, clone_state(spec.module), model_id)


def _refuse_prune_reparametrisations(spec: ModelSpec) -> None:
    """A module pruned with ``torch.nn.utils.prune`` (``weight_orig`` + ``weight_mask`` + a forward pre-hook) is
    refused with one line. Decision: refuse rather than adopt silently. ``copy.deepcopy`` cannot copy such a module,
    its ``weight`` is no parameter (so every prunable-set preset would drop the layer), and the verbs draw or take
    their mask from the config, so an adopted mask would be dropped unseen by ``find`` and revived by dense
    training. The message names the tensors and the two ways on: ``tickets.formats.split_pruned`` (a plain copy
    plus the mask, to save as a ticket and pass as ``--ticket`` / ``TransferConfig.ticket``), or ``prune.remove``
    to fold the masks into the weights and let the run draw its own."""
    from tickets.formats import pruned_tensors

    found = pruned_tensors(spec.module)
    if found:
        shown = ", ".join(repr(n) for n in found[:3]) + (f" … ({len(found)} in all)" if len(found) > 3 else "")
        raise TicketsError(
            f"model {spec.name!r} carries torch.nn.utils.prune reparametrisations ({shown}: weight_orig × "
            "weight_mask), which tickets would not see as weights: take them out first, either as a ticket "
            "(plain, mask = tickets.formats.split_pruned(net); tickets.save_ticket(PATH, tickets.Ticket(mask, "
            "{'model': NAME})); then from_module(plain, ...) with ticket=PATH) or folded into the weights "
            "(torch.nn.utils.prune.remove(module, 'weight') for each)"
        )


def random_init_state(prepared: Prepared, seed: int) -> dict[str, torch.Tensor]:
    """θ_init: the model re-initialised from ``seed`` (random re-init): its ``reinit_`` when it has one, else
    every submodule's ``reset_parameters``."""
    module = prepared.spec.module
    saved = clone_state(module)
    devices = {k: v.device for k, v in module.state_dict().items()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if hasattr(module, "reinit_"):  # the model family's own init (BERT: normal(0, 0.02), not PyTorch's)
            module.reinit_(seed)
        else:
            for sub in module.modules():
                if hasattr(sub, "reset_parameters") and sub is not module:
                    sub.reset_parameters()
    state = clone_state(module)
    module.load_state_dict({k: v.to(devices[k]) for k, v in saved.items()})
    return state


def task_options(cfg: Any) -> Any:
    """What a config asks of its task's factory beyond the data (the contrastive tasks' options from ``cfg.ssl``),
    or None for the task's defaults."""
    ssl = getattr(cfg, "ssl", None)
    if ssl is None or not str(getattr(cfg, "task", "")).startswith(("simclr/", "moco/")):
        return None
    from tickets.config import SSLConfig

    if ssl == SSLConfig():
        return None
    import dataclasses

    from tickets.tasks.contrastive import ContrastiveOptions

    return ContrastiveOptions(**dataclasses.asdict(ssl))
