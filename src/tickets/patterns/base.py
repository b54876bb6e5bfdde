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

    def select_random(self, mask: Mask, sparsity: float, *, scope: str = "global",
                      generator: torch.Generator | None = None) -> Mask:
        """Random pruning in this pattern's unit: uniformly random groups (not groups ranked by a sum of random
        per-weight scores, which would favour small groups). The default draws one ``torch.rand`` tensor per mask
        tensor, in mask order, and calls ``select``: for ``unstructured`` that is exactly
        ``pruning.random_prune`` (same draws, same ticket); patterns whose groups differ in size override it."""
        scores = {n: torch.rand(m.shape, generator=generator) for n, m in mask.items()}
        return self.select(scores, mask, sparsity, scope=scope)

    def ranks_across_tensors(self, scope: str) -> bool:
        """Whether groups of different tensors compete in one ranking under ``scope`` (then tensors of different
        magnitude scales are pruned unevenly; ``tickets.diagnostics`` warns about it): ``scope == "global"``,
        except for patterns that rank every group alone (N:M)."""
        return scope == "global"

    def fixed_sparsity(self) -> float | None:
        """The only sparsity this pattern reaches (N:M: 1 − N/M), or None when any sparsity is possible."""
        return None

    def levels(self) -> list[float] | None:
        """The sparsities this pattern dictates, one per level (N:M: ``[1 − N/M]``; an N:M list such as
        ``nm:3:4,2:4,1:4``: one per step), or None when the run's schedule decides."""
        s = self.fixed_sparsity()
        return None if s is None else [s]

    def at(self, sparsity: float) -> "Pattern":
        """The pattern that draws the level at ``sparsity`` (itself, except for a list of N:M steps)."""
        return self

    # -- checking and describing ------------------------------------------------------------------------------
    def verify(self, mask: Mask) -> None:
        """TicketsError naming the first tensor whose mask this pattern could not have produced.

        Before ``setup`` a pattern checks what it can from the mask alone (N:M: everything; channel: every tensor
        is rows × columns; head/neuron: whole rows/columns per head when ``num_heads`` is known); after ``setup``
        it checks the coupled groups exactly."""

    def expand(self, mask: Mask, model: nn.Module | None = None) -> Mask:
        """The mask over *every* tensor the pattern's groups touch: ``mask`` (the prunable set) plus the coupled
        tensors outside it (channel: BatchNorm scale/shift, conv biases, a coupled stem's rows, the classifier's
        input columns; head/neuron: Q/K/V and FFN-in biases), pruned exactly where a pruned group covers them.

        Apply *this* mask to the model (``expand(mask, model).apply_(model)``, and ``mask_grads_`` in training) so
        the masked model computes what the compacted model computes; keep reporting ``mask`` (the prunable set).
        The extra tensors are a function of ``mask`` and the model, so tickets store only ``mask``. ``model``
        gives the extra tensors' shapes (a transferred model may have a new head); without it the shapes seen at
        ``setup`` are used. Unstructured and N:M return ``mask`` itself."""
        return mask

    def group_report(self, mask: Mask) -> dict[str, Any]:
        """Counts in the pattern's unit, with the denominator spelt out: ``{"unit", "total", "kept", "pruned",
        "sparsity", "denominator"}`` (plus per-layer counts for structured patterns). For unstructured the unit
        is weights and the figures equal ``mask.report()["prunable"]``'s."""
        total, kept = mask.num_total, mask.num_kept
        return {"unit": self.unit, "total": total, "kept": kept, "pruned": total - kept,
                "sparsity": (total - kept) / total if total else 0.0,
                "denominator": f"prunable set ({len(mask)} tensors, {total} weights)"}

    def describe(self) -> dict[str, Any]:
        """What a ticket records about its pattern (``meta["pattern"]``); ``patterns.pattern_from_meta`` reads it
        back. Always ``name`` (+ ``options``); structured patterns add their ``unit``, what ``verify`` needs without a
        model (head/neuron: ``num_heads``) and, after ``setup``, the number of groups."""
        return {"name": self.name, **({"options": self.options} if self.options else {})}

    def restore(self, meta: dict[str, Any]) -> None:
        """Take back what ``describe`` recorded beyond the name and options (default: nothing)."""

    def spec(self) -> str:
        """The ``--pattern`` text that builds this pattern again."""
        return f"{self.name}:{self.options}" if self.options else self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()!r})"
