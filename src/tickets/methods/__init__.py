"""Ticket-drawing methods registry: ``--method NAME`` → a Method (see ``methods/base.py``).

Register a new method with one file and one line: ``METHODS.register("name", "package.module:Class")``.
"""

from __future__ import annotations

from tickets.methods.base import DrawContext, Method, MissingTicket
from tickets.registry import Registry

__all__ = ["METHODS", "Method", "DrawContext", "MissingTicket", "get_method"]

METHODS: Registry[type[Method]] = Registry("method", listing="tickets methods")

METHODS.register("imp", "tickets.methods.magnitude:IMP",
                 help="iterative magnitude pruning: fine-tune, prune the smallest trained weights, rewind, repeat")
METHODS.register("omp", "tickets.methods.magnitude:OMP", help="one-shot magnitude pruning of θ0")
METHODS.register("random", "tickets.methods.baselines:RandomPruning", help="random pruning (baseline)")
METHODS.register("reverse", "tickets.methods.magnitude:Reverse",
                 help="prune the largest |θ0| first (control that should hurt most)")
METHODS.register("reinit", "tickets.methods.baselines:RandomReinit",
                 help="IMP's masks with randomly re-initialised weights (baseline)")


def get_method(name: str) -> Method:
    """An instance of the method registered as ``name``; TicketsError listing the choices."""
    return METHODS.get(name)()
