"""The Method contract: how a level's mask is drawn (IMP, OMP, random, reverse, reinit, …).

A method supplies *scores* (|θ0|, the trained weights, random numbers) and asks the run's sparsity pattern to
select the groups to prune (Torch-Pruning's importance / pruner split), so every method works with every pattern.
``tickets find`` calls, per level: ``draw`` (the level's mask, before training), trains the masked model, then
``next_mask`` (iterative methods: the next level's mask, drawn from the weights this level ended with and saved
before the level is marked done, so a killed run resumes exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from tickets.errors import TicketsError
from tickets.masks import Mask
from tickets.patterns.base import Pattern
from tickets.runs import RunDir, RunLayout


class MissingTicket(TicketsError):
    """An iterative method's level has no ticket: the previous level must be trained again to draw it."""


@dataclass
class DrawContext:
    """What a method sees of the run: the config, the prepared model and task, the pattern and the run directory."""

    cfg: Any  # tickets.config.FindConfig
    prepared: Any  # tickets.verbs.prepare.Prepared
    pattern: Pattern
    run: RunDir
    rewind: Any  # tickets.config.RewindPoint
    prerequisite: RunLayout | None = None  # the run ``Method.prerequisite`` named (reinit: the IMP run)
    unused: frozenset[str] = frozenset()  # prunable tensors the last fine-tune gave no gradient (kept as they are)

    @property
    def names(self) -> list[str]:
        """The prunable tensors, in model order."""
        return self.prepared.names

    def ones(self) -> Mask:
        """The dense mask over the prunable set."""
        return Mask.ones_like(self.prepared.model, self.prepared.names)

    def scores(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The prunable tensors of ``state`` on the CPU (magnitude pruning ranks their absolute values)."""
        return {n: state[n].detach().cpu() for n in self.prepared.names}

    def theta0_scores(self) -> dict[str, torch.Tensor]:
        return self.scores(self.prepared.theta0)

    def generator(self, level: int) -> torch.Generator:
        """A generator seeded by (run seed, level): random masks differ per level and seed, reproducibly."""
        return torch.Generator().manual_seed(self.cfg.seed * 1_000 + level)

    def prune(self, scores: dict[str, torch.Tensor], mask: Mask, sparsity: float, *, largest: bool = False) -> Mask:
        """The run's pattern selects: prune the lowest (``largest``: highest) scoring groups of ``mask`` until
        ``sparsity`` of the prunable weights (for coarse groups: as close as the groups allow)."""
        return self.pattern.at(sparsity).select(scores, mask, sparsity, scope=self.cfg.scope, largest=largest)

    def prune_random(self, mask: Mask, sparsity: float, level: int) -> Mask:
        """Prune uniformly random groups of ``mask`` (seeded by run seed and ``level``) to ``sparsity``."""
        return self.pattern.at(sparsity).select_random(mask, sparsity, scope=self.cfg.scope,
                                                       generator=self.generator(level))


class Method:
    """Base class of a ticket-drawing method; subclasses set ``name`` and implement ``draw``.

    ``dense_start``: level 0 fine-tunes the dense model before any pruning (IMP); the schedule's sparsities are
    then levels 1..n. ``rewinds``: the method honours ``rewind`` (θ0 / step K / reinit) for the weights each
    level starts from; other methods start every level from θ0 (or their own start, see ``start``).
    """

    name: ClassVar[str] = ""
    dense_start: ClassVar[bool] = False
    rewinds: ClassVar[bool] = False

    def levels(self, sparsities: list[float]) -> list[float]:
        """Target sparsity of each level."""
        return [0.0, *sparsities] if self.dense_start else list(sparsities)

    def draw(self, ctx: DrawContext, level: int, sparsity: float) -> Mask:
        """The mask level ``level`` trains (target ``sparsity``)."""
        raise NotImplementedError

    def next_mask(self, ctx: DrawContext, level: int, mask: Mask, model: torch.nn.Module,
                  next_sparsity: float) -> Mask | None:
        """After training level ``level``: the next level's mask (iterative methods), else None."""
        return None

    def prerequisite(self, cfg: Any) -> Any:
        """Another find config (``FindConfig``) this method builds on (reinit reuses IMP's masks), or None."""
        return None

    def start(self, ctx: DrawContext) -> str | None:
        """``"reinit"`` when every level starts from a random re-initialisation regardless of ``rewind``."""
        return None
