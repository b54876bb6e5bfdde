"""ModelSpec: a pre-trained nn.Module plus what `tickets` must know about it (head, preset, inputs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn


@dataclass
class ModelSpec:
    """A model as `tickets` sees it.

    ``module`` takes the task's inputs (images in [0, 1]: normalisation lives *inside* the module, so attack
    budgets are in pixel units) and returns logits. ``head`` names the task-head submodules (dotted paths); they
    are never pruned and are (re)initialised by the head policy. ``adapt`` fits the head to a task in place.
    """

    name: str
    module: nn.Module
    head: list[str]
    prunable_preset: str  # default PrunableSet preset: "cnn", "cnn-all", "all", "bert"
    family: str = "cnn"  # "cnn" | "transformer": picks the training defaults (tickets.config.training_defaults)
    pretrained_task: str | None = None  # task whose label space the shipped head predicts (e.g. "cifar10")
    num_outputs: int | None = None  # outputs of the shipped head
    input_size: int | None = None  # image side the model expects (None: any / text)
    in_channels: int | None = None
    tokenizer: Any = None  # text models
    adapt: Callable[["ModelSpec", Any, str, int], None] | None = None  # (spec, task, head_policy, seed)
    info: dict[str, Any] = field(default_factory=dict)

    def adapt_to(self, task: Any, head_policy: str = "fresh", seed: int = 0) -> None:
        """Give the module a head for ``task``: "fresh" (new, seeded) or "pretrained" (keep the shipped head;
        only when the task is the model's own label space).

        A task that brings its own head (``task.adapt_model(spec, head_policy, seed)``: the projection MLP of the
        contrastive tasks, ``tasks/contrastive.py``) puts it in place of the model's head; it stays under the same
        ``head`` path, so it is never pruned."""
        own_head = getattr(task, "adapt_model", None)
        if callable(own_head):
            own_head(self, head_policy, seed)
            return
        if self.adapt is not None:
            self.adapt(self, task, head_policy, seed)
            return
        replace_linear_head(self, task.num_outputs, head_policy, seed, task.name)


def get_submodule(module: nn.Module, path: str) -> nn.Module:
    return module.get_submodule(path)


def set_submodule(module: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = module.get_submodule(parent_path) if parent_path else module
    setattr(parent, attr, new)


def replace_linear_head(spec: ModelSpec, num_outputs: int, head_policy: str, seed: int, task_name: str) -> None:
    """Default head handling for models whose single head is an nn.Linear."""
    from tickets.errors import TicketsError

    (path,) = spec.head
    old = get_submodule(spec.module, path)
    if not isinstance(old, nn.Linear):
        raise TicketsError(f"head {path!r} of model {spec.name!r} is not nn.Linear: pass a ModelSpec with `adapt`")
    if head_policy == "pretrained":
        if old.out_features != num_outputs:
            raise TicketsError(
                f"head policy 'pretrained' needs {old.out_features} outputs but task {task_name!r} has {num_outputs}: "
                "use --head fresh"
            )
        return
    if head_policy != "fresh":
        raise TicketsError(f"unknown head policy {head_policy!r}: choose fresh or pretrained")
    gen = torch.Generator().manual_seed(seed)
    new = nn.Linear(old.in_features, num_outputs, bias=old.bias is not None)
    bound = 1.0 / old.in_features**0.5
    with torch.no_grad():
        new.weight.uniform_(-bound, bound, generator=gen)
        if new.bias is not None:
            new.bias.uniform_(-bound, bound, generator=gen)
    new.to(old.weight.device)
    set_submodule(spec.module, path, new)
    spec.num_outputs = num_outputs


def from_module(
    module: nn.Module,
    *,
    head: str | list[str],
    name: str = "custom",
    prunable_preset: str = "all",
    family: str = "cnn",
    input_size: int | None = None,
    in_channels: int | None = None,
    pretrained_task: str | None = None,
) -> ModelSpec:
    """Wrap any nn.Module for the Python API. ``head`` names its classifier submodule(s); ``family`` (``cnn`` or
    ``transformer``) picks the training defaults (SGD for CNNs, AdamW for transformers)."""
    heads = [head] if isinstance(head, str) else list(head)
    out = getattr(get_submodule(module, heads[0]), "out_features", None)
    return ModelSpec(
        name=name,
        module=module,
        head=heads,
        prunable_preset=prunable_preset,
        family=family,
        pretrained_task=pretrained_task,
        num_outputs=out,
        input_size=input_size,
        in_channels=in_channels,
    )


class Normalize(nn.Module):
    """Per-channel (x - mean) / std with buffers that are not saved, so checkpoints load unchanged."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
