"""Random baselines: random pruning (random positions at each level's sparsity) and random re-initialisation
(IMP's masks with randomly re-initialised weights; Frankle & Carbin 2019, Chen et al. 2020)."""

from __future__ import annotations

import dataclasses

from tickets.masks import Mask
from tickets.methods.base import DrawContext, Method


class RandomPruning(Method):
    """Random pruning: uniformly random groups of the run's pattern (single weights when unstructured), seeded by
    (seed, level)."""

    name = "random"

    def draw(self, ctx: DrawContext, level: int, sparsity: float) -> Mask:
        return ctx.prune_random(ctx.ones(), sparsity, level)


class RandomReinit(Method):
    """Random re-init: the masks of the IMP run with the same settings (drawn first if needed), each level
    fine-tuned from a random re-initialisation of the model (seeded by the run seed)."""

    name = "reinit"

    def prerequisite(self, cfg):
        return dataclasses.replace(cfg, method="imp")

    def start(self, ctx: DrawContext) -> str | None:
        return "reinit"

    def draw(self, ctx: DrawContext, level: int, sparsity: float) -> Mask:
        from tickets.ticket import load_ticket

        if ctx.prerequisite is None:  # pragma: no cover - find_tickets sets it
            raise RuntimeError("reinit needs the IMP run")
        return load_ticket(ctx.prerequisite.ticket(level + 1)).mask  # one-shot levels count from 0, IMP's from 1
