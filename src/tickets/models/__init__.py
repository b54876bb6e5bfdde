"""Model registry: ``load_model(name)`` → ModelSpec.

Image models: ``resnet{20,32,44,56}-cifar10`` (weights ``<model root>/resnet-cifar10/resnet{depth}-*.th``),
``mobilenet-v1-0.75`` (``<model root>/mobilenet-v1-0.75-imagenet/*.pth``), ``small-cnn`` (no weights).
Text models ``minilm-l6`` and ``hf:<id-or-path>`` are built by ``tickets.models.hf`` (imported only when asked, so
``transformers`` is needed only for them).
"""

from __future__ import annotations

import os
from pathlib import Path

from tickets.errors import TicketsError
from tickets.models.base import ModelSpec, Normalize, from_module, replace_linear_head

__all__ = ["ModelSpec", "Normalize", "from_module", "replace_linear_head", "load_model", "model_names"]

RESNETS = {f"resnet{d}-cifar10": d for d in (20, 32, 44, 56)}
MOBILENET = "mobilenet-v1-0.75"
SMALL_CNN = "small-cnn"
TEXT_MODELS = ("minilm-l6",)

# name → (folder under the model root, glob for the weights file)
WEIGHTS = {
    **{name: ("resnet-cifar10", f"resnet{d}-*.th") for name, d in RESNETS.items()},
    MOBILENET: ("mobilenet-v1-0.75-imagenet", "*.pth"),
}


def model_names() -> list[str]:
    """Every model name ``load_model`` accepts (``hf:<id-or-path>`` stands for any Hugging Face model)."""
    return [*RESNETS, MOBILENET, SMALL_CNN, *TEXT_MODELS, "hf:<id-or-path>"]


def load_model(name: str, *, model_root: str | os.PathLike | None = None, pretrained: bool = True) -> ModelSpec:
    """Build model ``name``; with ``pretrained`` its weights are read from the model root
    (``model_root`` / ``--model-root`` / ``TICKETS_MODELS``). ``pretrained=False`` gives the seeded random init
    and needs no weights."""
    if name in TEXT_MODELS or name.startswith("hf:"):
        from tickets.models.hf import load_hf_model

        return load_hf_model(name, model_root=model_root, pretrained=pretrained)
    if name == SMALL_CNN:
        from tickets.models.small_cnn import build_small_cnn

        return build_small_cnn()
    if name in RESNETS:
        from tickets.models.resnet_cifar import build_resnet

        depth = RESNETS[name]
        return _with_weights(name, lambda path: build_resnet(depth, path), model_root, pretrained)
    if name == MOBILENET:
        from tickets.models.mobilenet import build_mobilenet

        return _with_weights(name, build_mobilenet, model_root, pretrained)
    raise TicketsError(f"unknown model {name!r}: choose one of {', '.join(model_names())}")


def weights_path(name: str, model_root: str | os.PathLike | None = None) -> Path:
    """The weights file of ``name`` under the model root; TicketsError naming the path and the fix if absent."""
    from tickets.paths import model_root as resolve_root

    folder, pattern = WEIGHTS[name]
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


def _with_weights(name: str, build, model_root, pretrained: bool) -> ModelSpec:
    path = weights_path(name, model_root) if pretrained else None
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
