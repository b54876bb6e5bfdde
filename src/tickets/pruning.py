"""Pruners (magnitude, random, reverse; global or layer-wise) and sparsity schedules.

Every pruner returns a new Mask nested in the one it was given: it only removes currently-kept weights, and it
removes exactly enough to reach the requested sparsity (``round(sparsity * total)`` pruned, Python rounding, as
torch.nn.utils.prune does). Selection among kept weights is ``torch.topk`` over the concatenated kept scores in
mask order, which is exactly what ``prune.global_unstructured(..., prune.L1Unstructured, amount=k)`` computes, so
tickets drawn here and with torch's pruning utilities agree weight for weight (ties included).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tickets.errors import TicketsError
from tickets.masks import Mask

SCOPES = ("global", "layerwise")
SCHEDULE_KINDS = ("geometric", "linear", "explicit")


def _check_sparsity(sparsity: float) -> float:
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise TicketsError(f"sparsity {sparsity!r} is not a number: give a fraction in [0, 1), e.g. 0.8") from None
    if not 0.0 <= s < 1.0:
        raise TicketsError(f"sparsity {sparsity!r} is outside [0, 1): give the pruned fraction, e.g. 0.8 for 80%")
    return s


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise TicketsError(f"unknown pruning scope {scope!r}: choose one of {', '.join(SCOPES)}")


def _check_scores(scores: dict[str, torch.Tensor], mask: Mask) -> None:
    for name, m in mask.items():
        if name not in scores:
            raise TicketsError(f"no score for mask tensor {name!r}: pass scores for every tensor of the prunable set")
        if tuple(scores[name].shape) != tuple(m.shape):
            raise TicketsError(
                f"score for {name!r} has shape {tuple(scores[name].shape)} but the mask has {tuple(m.shape)}: "
                "scores must match the parameters"
            )


def _num_to_prune(num_total: int, num_pruned: int, sparsity: float, where: str) -> int:
    """How many more weights to prune to reach ``round(sparsity * num_total)`` pruned."""
    target = round(sparsity * num_total)
    if target < num_pruned:
        raise TicketsError(
            f"{where} already has {num_pruned}/{num_total} weights pruned, more than the requested sparsity "
            f"{sparsity} ({target}): pruning only removes weights, so ask for a higher sparsity"
        )
    return target - num_pruned


def prune_by_rank(
    scores: dict[str, torch.Tensor], mask: Mask, sparsity: float, scope: str, largest: bool
) -> Mask:
    """Prune the kept weights with the smallest (or largest) |score| until ``sparsity`` is reached: a new Mask
    nested in ``mask`` (``scope`` global: one ranking over every tensor; layerwise: each tensor to ``sparsity``).
    TicketsError for a sparsity outside [0, 1), an unknown scope, or scores that do not fit the mask."""
    sparsity = _check_sparsity(sparsity)
    _check_scope(scope)
    _check_scores(scores, mask)
    new = mask.clone()
    if scope == "global":
        k = _num_to_prune(mask.num_total, mask.num_pruned, sparsity, "the mask")
        _prune_k(scores, new, mask.names, k, largest)
    else:
        for name in mask.names:
            m = mask[name]
            k = _num_to_prune(m.numel(), m.numel() - int(m.sum()), sparsity, f"mask tensor {name!r}")
            _prune_k(scores, new, [name], k, largest)
    return new


def _prune_k(scores: dict[str, torch.Tensor], mask: Mask, names: list[str], k: int, largest: bool) -> None:
    """Set to False, in place, the ``k`` kept entries of ``names`` ranked first by |score| (smallest unless
    ``largest``), ranking the kept entries concatenated in ``names`` order as prune.global_unstructured does."""
    if k == 0:
        return
    device = mask[names[0]].device
    flat_kept = torch.cat([mask[n].reshape(-1).to(device) for n in names])
    flat_scores = torch.cat([scores[n].detach().reshape(-1).to(device) for n in names])
    kept_pos = flat_kept.nonzero().squeeze(1)
    chosen = torch.topk(flat_scores[flat_kept].abs(), k=k, largest=largest).indices
    flat_kept[kept_pos[chosen]] = False
    offset = 0
    for n in names:
        numel = mask[n].numel()
        mask[n].copy_(flat_kept[offset : offset + numel].view_as(mask[n]))
        offset += numel


def magnitude_prune(scores: dict[str, torch.Tensor], mask: Mask, sparsity: float, scope: str = "global") -> Mask:
    """Prune the lowest |score| among kept weights until ``round(sparsity * total)`` are pruned.

    ``global``: one ranking over the whole prunable set (total = all mask weights). ``layerwise``: each tensor
    separately to ``sparsity`` of its own size (so the overall count may differ from the global one by rounding).
    """
    return prune_by_rank(scores, mask, sparsity, scope, largest=False)


def reverse_prune(scores: dict[str, torch.Tensor], mask: Mask, sparsity: float, scope: str = "global") -> Mask:
    """Like magnitude_prune but removes the *largest* |score| first (the control that should hurt most)."""
    return prune_by_rank(scores, mask, sparsity, scope, largest=True)


def random_prune(
    mask: Mask, sparsity: float, scope: str = "global", generator: torch.Generator | None = None
) -> Mask:
    """Prune uniformly random kept weights to ``sparsity`` (nested in ``mask``; same counts as magnitude_prune)."""
    scores = {n: torch.rand(m.shape, generator=generator) for n, m in mask.items()}
    return prune_by_rank(scores, mask, sparsity, scope, largest=False)


def random_like(mask: Mask, generator: torch.Generator | None = None) -> Mask:
    """A fresh mask with the same number kept in every tensor, at uniformly random positions (not nested)."""
    out = {}
    for name, m in mask.items():
        kept = int(m.sum())
        flat = torch.zeros(m.numel(), dtype=torch.bool)
        flat[torch.randperm(m.numel(), generator=generator)[:kept]] = True
        out[name] = flat.view(m.shape).to(m.device)
    return Mask(out)


@dataclass
class Schedule:
    """The sparsity of each pruning level.

    ``geometric``: prune ``rate`` of the remaining weights per level, 1-(1-rate)^i (0.2 → 0.2, 0.36, 0.488, ...);
    ``linear``: rate*i (0.1 → 0.1, 0.2, ...); ``explicit``: the listed ``sparsities``. Levels are i = 1..levels.
    Values are rounded to 12 decimals so 0.1*3 prints (and hashes into run names) as 0.3.
    """

    kind: str = "geometric"
    rate: float = 0.2
    levels: int = 6
    sparsities: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        self.sparsities = tuple(float(s) for s in self.sparsities)
        if self.kind not in SCHEDULE_KINDS:
            raise TicketsError(f"unknown schedule kind {self.kind!r}: choose one of {', '.join(SCHEDULE_KINDS)}")
        if self.kind == "explicit":
            if not self.sparsities:
                raise TicketsError("explicit schedule has no sparsities: list them, e.g. sparsities=[0.5, 0.8, 0.9]")
        else:
            if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 1:
                raise TicketsError(f"schedule levels must be a whole number >= 1, got {self.levels!r}")
            if not 0.0 < float(self.rate) < 1.0:
                raise TicketsError(f"schedule rate {self.rate!r} is outside (0, 1): e.g. 0.2 prunes 20% per level")
        values = self.sparsities_list()
        for s in values:
            if not 0.0 <= s < 1.0:
                raise TicketsError(
                    f"{self.kind} schedule reaches sparsity {s}, outside [0, 1): "
                    "use sparsities below 1 (fewer levels or a lower rate)"
                )
        for a, b in zip(values, values[1:]):
            if not b > a:
                raise TicketsError(
                    f"{self.kind} schedule sparsities must increase strictly, got {a} then {b}: "
                    "sort them and drop repeats (or use fewer levels)"
                )

    def sparsities_list(self) -> list[float]:
        if self.kind == "explicit":
            return list(self.sparsities)
        if self.kind == "geometric":
            return [round(1.0 - (1.0 - self.rate) ** i, 12) for i in range(1, self.levels + 1)]
        return [round(self.rate * i, 12) for i in range(1, self.levels + 1)]
