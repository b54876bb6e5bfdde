"""Magnitude-based methods: IMP (iterative, with rewinding), OMP (one-shot on θ0) and reverse magnitude.

* IMP — Frankle & Carbin 2019; Chen et al. 2020 (BERT tickets) and 2021 (CV tickets): fine-tune, prune the
  lowest-magnitude survivors of the *trained* weights to the next level's sparsity, rewind, repeat.
* OMP — one-shot magnitude pruning of θ0 (the pre-trained weights), the papers' cheapest baseline.
* reverse — prune the *largest* |θ0| first: the control that should hurt most.
"""

from __future__ import annotations

import torch

from tickets.masks import Mask
from tickets.methods.base import DrawContext, Method, MissingTicket


class IMP(Method):
    """Iterative magnitude pruning with rewinding (to θ0, step K, or a random re-init)."""

    name = "imp"
    dense_start = True
    rewinds = True

    def draw(self, ctx: DrawContext, level: int, sparsity: float) -> Mask:
        if level == 0:
            return ctx.ones()
        raise MissingTicket(f"IMP level {level} of {ctx.run.path} has no ticket: its previous level must be trained "
                            "again to draw it")

    def next_mask(self, ctx: DrawContext, level: int, mask: Mask, model: torch.nn.Module,
                  next_sparsity: float) -> Mask:
        """Prune the smallest trained weights. A tensor that received no gradient in this level (``ctx.unused``:
        the task never uses it) has learned nothing, so its magnitudes are θ0's: it is kept as it is (its scores
        set to +inf) rather than pruned by raw magnitude, and the other tensors reach the level's sparsity."""
        scores = ctx.scores(model.state_dict())
        for name in ctx.unused:
            scores[name] = torch.full_like(scores[name], float("inf"))
        return ctx.prune(scores, mask.to("cpu"), next_sparsity)


class OMP(Method):
    """One-shot magnitude pruning of θ0: keep the largest pre-trained weights."""

    name = "omp"

    def draw(self, ctx: DrawContext, level: int, sparsity: float) -> Mask:
        return ctx.prune(ctx.theta0_scores(), ctx.ones(), sparsity)


class Reverse(Method):
    """Reverse magnitude pruning of θ0: prune the largest pre-trained weights first."""

    name = "reverse"

    def draw(self, ctx: DrawContext, level: int, sparsity: float) -> Mask:
        return ctx.prune(ctx.theta0_scores(), ctx.ones(), sparsity, largest=True)
