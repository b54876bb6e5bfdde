"""The Pattern contract: the shape of what a ticket prunes, and how groups of weights are ranked.

A mask is always element-wise (parameter name → bool tensor), whatever the pattern, so every tool that reads masks
keeps working. The pattern decides which element-wise masks are legal and how a score per weight becomes a
decision per *group*: a single weight (unstructured), an output channel with everything coupled to it (channel),
an attention head or FFN neuron (head / neuron), or N of every M consecutive weights (nm). A method (IMP, OMP,
random, reverse, …) supplies the scores; the pattern selects (Torch-Pruning's importance / pruner split).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tickets.errors import TicketsError
from tickets.masks import Mask


class Pattern:
    """Base class of a sparsity pattern. Subclasses set ``name`` and override ``select`` (and, when the legal
    masks are restricted, ``verify``; when groups depend on the model, ``setup``).

    ``options`` is the text after the pattern name in ``--pattern NAME:OPTIONS`` (``nm:2:4`` → ``"2:4"``).
    """

    name: ClassVar[str] = ""
    unit: ClassVar[str] = "weights"  # what one group is, in reports: weights, channels, heads, neurons, …

    def __init__(self, options: str = ""):
        if options:
            raise TicketsError(f"pattern {self.name!r} takes no options, got {options!r}: use --pattern {self.name}")
        self.options = options

    # -- model-dependent set-up -------------------------------------------------------------------------------
    def setup(self, model: nn.Module, names: list[str], spec: Any = None) -> None:
        """Work out the groups for ``model``'s prunable tensors ``names`` (once per run). ``spec`` is the
        ModelSpec when there is one (it may declare the model's structure, e.g. attention heads)."""

    # -- drawing ----------------------------------------------------------------------------------------------
    def select(self, scores: dict[str, torch.Tensor], mask: Mask, sparsity: float, *, scope: str = "global",
               largest: bool = False) -> Mask:
        """A new mask nested in ``mask`` with the lowest-scoring groups (highest with ``largest``) pruned until
        ``sparsity`` of the prunable weights is reached. ``scores`` has one tensor per mask tensor, shaped like
        it (|θ| for magnitude pruning; random for random pruning)."""
        raise NotImplementedError

    def fixed_sparsity(self) -> float | None:
        """The only sparsity this pattern reaches (N:M: 1 − N/M), or None when any sparsity is possible."""
        return None

    # -- checking and describing ------------------------------------------------------------------------------
    def verify(self, mask: Mask) -> None:
        """TicketsError naming the first tensor whose mask this pattern could not have produced."""

    def describe(self) -> dict[str, Any]:
        """What a ticket records about its pattern (``meta["pattern"]``); ``from_meta`` reads it back."""
        return {"name": self.name, **({"options": self.options} if self.options else {})}

    def spec(self) -> str:
        """The ``--pattern`` text that builds this pattern again."""
        return f"{self.name}:{self.options}" if self.options else self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()!r})"
