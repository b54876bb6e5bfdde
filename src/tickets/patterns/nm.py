"""N:M semi-structured sparsity (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks"; NVIDIA's 2:4).

In every group of M consecutive weights along a weight's *input* dimension, at most N are kept — the N with the
highest |score| (the lowest with ``largest``, the reverse control), chosen among the weights the current mask
keeps, so masks stay nested (IMP can walk 3:4 → 2:4 → 1:4).

Input dimension: a weight is viewed as the 2-d matrix ``weight.reshape(out, -1)`` — for ``nn.Linear`` that is the
weight itself, row-major, which is exactly the layout ``torch.sparse.to_sparse_semi_structured`` compresses (2:4
along each row); for a convolution it is dim 1 flattened with the kernel in PyTorch's memory order
(``in · kh · kw``), the GEMM operand of an im2col convolution. (NVIDIA's ASP / TensorRT group conv weights along
input channels at a fixed kernel position instead; that layout is not used here.) When the row length is not a
multiple of M (a depthwise 3×3 conv: 9), the last group of each row is shorter and keeps at most N of its
weights, so such tensors end slightly denser than 1 − N/M; ``group_report`` gives the exact counts.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from tickets.errors import TicketsError
from tickets.masks import Mask
from tickets.patterns.base import Pattern
from tickets.pruning import _check_scope, _check_scores


def _rows(t: torch.Tensor, m: int, fill: Any) -> torch.Tensor:
    """``t`` as [out, groups, m]: rows of ``t.reshape(out, -1)`` padded at the end with ``fill``."""
    flat = t.reshape(t.shape[0], -1)
    pad = (-flat.shape[1]) % m
    if pad:
        flat = torch.cat([flat, torch.full((flat.shape[0], pad), fill, dtype=flat.dtype, device=flat.device)], 1)
    return flat.view(flat.shape[0], -1, m)


class NM(Pattern):
    """N of every M consecutive weights along the input dimension (``nm:2:4``); sparsity fixed at 1 − N/M."""

    name = "nm"
    unit = "weights"

    def __init__(self, options: str = ""):
        if "," in (options or ""):  # a list of steps for IMP: nm:3:4,2:4,1:4
            self.steps = NM.parse_list(options)
            self.n, self.m = self.steps[-1].n, self.steps[-1].m
            self.options = ",".join(s.options for s in self.steps)
            return
        hit = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", options or "")
        if not hit:
            raise TicketsError(f"pattern nm needs N:M, got {options!r}: use e.g. --pattern nm:2:4 (or 1:4, 4:8)")
        n, m = int(hit.group(1)), int(hit.group(2))
        if not 1 <= n < m:
            raise TicketsError(f"bad N:M {n}:{m}: need 1 <= N < M, e.g. nm:2:4")
        self.n, self.m = n, m
        self.options = f"{n}:{m}"
        self.steps = [self]

    @classmethod
    def of(cls, n: int, m: int) -> NM:
        """The pattern ``nm:n:m`` (for IMP walking a list such as 3:4, 2:4, 1:4)."""
        return cls(f"{n}:{m}")

    @staticmethod
    def parse_list(text: str) -> list[NM]:
        """``"3:4,2:4,1:4"`` → patterns, checked to get sparser step by step (same M, N decreasing) so the masks
        can nest. TicketsError otherwise."""
        items = [NM(part) for part in text.split(",") if part.strip()]
        if not items:
            raise TicketsError(f"empty N:M list {text!r}: give e.g. --pattern nm:3:4,2:4,1:4")
        for a, b in zip(items, items[1:]):
            if b.m != a.m or b.n >= a.n:
                raise TicketsError(f"N:M list {text!r} must keep M and lower N at each step (e.g. 3:4,2:4,1:4), "
                                   f"got {a.options} then {b.options}")
        return items

    def fixed_sparsity(self) -> float | None:
        return 1.0 - self.n / self.m if len(self.steps) == 1 else None

    def levels(self) -> list[float]:
        """1 − N/M of every step (one level each; IMP walks them, nesting each mask in the last)."""
        return [1.0 - s.n / s.m for s in self.steps]

    def at(self, sparsity: float) -> "NM":
        if float(sparsity) == 0.0:  # IMP's dense level 0: nothing pruned yet
            return self
        for step in self.steps:
            if abs(1.0 - step.n / step.m - float(sparsity)) <= 1e-9:
                return step
        raise TicketsError(f"pattern {self.spec()} has no step at sparsity {sparsity}: its levels are "
                           f"{', '.join(f'{s:g}' for s in self.levels())}")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "unit": self.unit, "n": self.n, "m": self.m}

    def _check_sparsity(self, sparsity: float) -> None:
        if sparsity is not None and abs(float(sparsity) - self.fixed_sparsity()) > 1e-6:
            raise TicketsError(
                f"pattern {self.spec()} reaches only sparsity {self.fixed_sparsity():g} (1 - {self.n}/{self.m}), "
                f"not {sparsity}: pass pattern.fixed_sparsity(), or walk an N:M list for several levels")

    def ranks_across_tensors(self, scope: str) -> bool:
        """Never: each group of M is ranked alone, whatever the scope."""
        return False

    def select(self, scores: dict[str, torch.Tensor], mask: Mask, sparsity: float, *, scope: str = "global",
               largest: bool = False) -> Mask:
        """Keep the N highest-|score| kept weights (lowest with ``largest``) of every group of M; ``scope`` is
        accepted but moot (each group is ranked alone); ``sparsity`` must be ``fixed_sparsity()`` (a list of steps:
        one of its ``levels()``)."""
        if len(self.steps) > 1:
            return self.at(sparsity).select(scores, mask, sparsity, scope=scope, largest=largest)
        self._check_sparsity(sparsity)
        _check_scope(scope)
        _check_scores(scores, mask)
        out = {}
        for name, m in mask.items():
            if m.dim() < 2:
                raise TicketsError(f"pattern {self.spec()} needs weight matrices, but {name!r} is {m.dim()}-d: "
                                   "exclude it from the prunable set")
            key = scores[name].detach().to(m.device).abs().double()
            if largest:
                key = -key
            key = key.masked_fill(~m, float("-inf"))
            groups = _rows(key, self.m, float("-inf"))
            order = torch.sort(groups, dim=-1, descending=True, stable=True).indices[..., : self.n]
            keep = torch.zeros(groups.shape, dtype=torch.bool, device=m.device)
            keep.scatter_(-1, order, True)
            keep = keep.reshape(m.shape[0], -1)[:, : m[0].numel()].reshape(m.shape)
            out[name] = keep & m
        return Mask(out)

    def verify(self, mask: Mask) -> None:
        """TicketsError unless every group of ``m`` keeps at most the largest N of the walk (``nm:3:4,2:4``: 3).
        The all-kept mask passes: it is IMP's dense starting ticket (level 0) under any N:M walk."""
        most = max(s.n for s in self.steps)
        for name, m in mask.items():
            if m.dim() < 2:
                raise TicketsError(f"mask tensor {name!r} is {m.dim()}-d: pattern {self.spec()} masks weight "
                                   "matrices only")
        if all(bool(m.all()) for _, m in mask.items()):
            return
        for name, m in mask.items():
            counts = _rows(m.detach().cpu(), self.m, False).sum(-1)
            bad = (counts > most).nonzero()
            if len(bad):
                row, grp = (int(v) for v in bad[0])
                raise TicketsError(
                    f"mask tensor {name!r} does not honour pattern {self.spec()}: row {row}, weights "
                    f"{grp * self.m}..{grp * self.m + self.m - 1} keep {int(counts[row, grp])} (at most {most}); "
                    f"draw the ticket with --pattern {self.spec()}")

    def group_report(self, mask: Mask) -> dict[str, Any]:
        out = super().group_report(mask)
        groups = full = 0
        for _, m in mask.items():
            row = m[0].numel() if m.dim() else 1
            groups += m.shape[0] * -(-row // self.m)
            full += m.shape[0] * (row // self.m)
        out.update({"groups": groups, "groups_of_m": full, "n": self.n, "m": self.m,
                    "nominal_sparsity": self.fixed_sparsity(),
                    "denominator": out["denominator"] + f"; {groups} groups of up to {self.m} consecutive "
                                   f"input weights ({groups - full} shorter row-end groups)"})
        return out
