"""Unstructured pruning: every weight is its own group (the lottery-ticket papers' default)."""

from __future__ import annotations

import torch

from tickets.masks import Mask
from tickets.patterns.base import Pattern
from tickets.pruning import prune_by_rank


class Unstructured(Pattern):
    """Any element-wise mask; weights ranked one by one, over the whole prunable set (global) or per tensor,
    exactly as ``torch.nn.utils.prune.global_unstructured`` / ``l1_unstructured`` select them."""

    name = "unstructured"
    unit = "weights"

    def select(self, scores: dict[str, torch.Tensor], mask: Mask, sparsity: float, *, scope: str = "global",
               largest: bool = False) -> Mask:
        return prune_by_rank(scores, mask, sparsity, scope, largest=largest)
