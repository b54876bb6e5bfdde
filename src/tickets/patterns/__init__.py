"""Sparsity patterns registry: ``--pattern NAME[:OPTIONS]`` → a Pattern (see ``patterns/base.py``).

Register a new pattern with one file and one line: ``PATTERNS.register("name", "tickets.patterns.file:Class")``.
"""

from __future__ import annotations

from tickets.errors import TicketsError
from tickets.patterns.base import Pattern
from tickets.registry import Registry

__all__ = ["PATTERNS", "Pattern", "get_pattern", "DEFAULT_PATTERN"]

PATTERNS: Registry[type[Pattern]] = Registry("sparsity pattern", listing="tickets patterns")
DEFAULT_PATTERN = "unstructured"

PATTERNS.register("unstructured", "tickets.patterns.unstructured:Unstructured",
                  help="single weights (the lottery-ticket default); any sparsity")


def get_pattern(spec: str | None) -> Pattern:
    """Build the pattern ``spec`` names (``unstructured``, ``nm:2:4``, …); TicketsError listing the choices."""
    spec = spec or DEFAULT_PATTERN
    if not isinstance(spec, str):
        raise TicketsError(f"pattern must be a name such as {DEFAULT_PATTERN}, got {spec!r}")
    name, _, options = spec.partition(":")
    return PATTERNS.get(name)(options)
