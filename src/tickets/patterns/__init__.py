"""Sparsity patterns registry: ``--pattern NAME[:OPTIONS]`` → a Pattern (see ``patterns/base.py``).

Register a new pattern with one file and one line: ``PATTERNS.register("name", "tickets.patterns.file:Class")``.
"""

from __future__ import annotations

from tickets.errors import TicketsError
from tickets.patterns.base import Pattern
from tickets.registry import Registry

__all__ = ["PATTERNS", "Pattern", "get_pattern", "pattern_from_meta", "magnitude_ticket", "DEFAULT_PATTERN"]

PATTERNS: Registry[type[Pattern]] = Registry("sparsity pattern", listing="tickets patterns")
DEFAULT_PATTERN = "unstructured"

PATTERNS.register("unstructured", "tickets.patterns.unstructured:Unstructured",
                  help="single weights (the lottery-ticket default); any sparsity")
PATTERNS.register("channel", "tickets.patterns.channel:Channel",
                  help="whole conv output channels with everything coupled (Torch-Pruning DepGraph); channel:l2",
                  install="pip install 'pretrained-tickets[export]'")
PATTERNS.register("head", "tickets.patterns.transformer:Heads",
                  help="whole attention heads (Q/K/V rows + output columns); head:min=0 lets a layer lose all")
PATTERNS.register("neuron", "tickets.patterns.transformer:Neurons",
                  help="whole FFN intermediate neurons (FFN-in row + bias, FFN-out column)")
PATTERNS.register("head+neuron", "tickets.patterns.transformer:HeadsNeurons",
                  help="heads and FFN neurons ranked together by mean |score| per weight")
PATTERNS.register("nm", "tickets.patterns.nm:NM",
                  help="N:M semi-structured, e.g. nm:2:4 (N kept of every M weights along the input dim)")


def get_pattern(spec: str | None) -> Pattern:
    """Build the pattern ``spec`` names (``unstructured``, ``nm:2:4``, …); TicketsError listing the choices."""
    spec = spec or DEFAULT_PATTERN
    if not isinstance(spec, str):
        raise TicketsError(f"pattern must be a name such as {DEFAULT_PATTERN}, got {spec!r}")
    name, _, options = spec.partition(":")
    return PATTERNS.get(name)(options)


def pattern_from_meta(meta: dict | str | None) -> Pattern:
    """The pattern a ticket's ``meta["pattern"]`` (``Pattern.describe()``, or a spec string) declares, with what
    it recorded for model-free ``verify`` (head: ``num_heads``). None or missing: unstructured."""
    if meta is None or isinstance(meta, str):
        return get_pattern(meta)
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise TicketsError(f"bad pattern record {meta!r} in the ticket: expected {{'name': ..., 'options': ...}}")
    options = meta.get("options", "")
    pattern = get_pattern(f"{meta['name']}:{options}" if options else meta["name"])
    pattern.restore(meta)
    return pattern


def magnitude_ticket(spec, pattern: str, sparsity: float, scope: str = "global", example_inputs=None):
    """(pattern, mask): one-shot magnitude pruning of the model's current weights (|θ0|, as OMP ranks them) under
    ``pattern`` at ``sparsity`` of ``spec``'s prunable set, verified against the pattern. No training, no run
    directory: what the compaction benchmark and tests draw. ``example_inputs`` go to ``Pattern.setup`` (channel
    patterns trace the model with them). TicketsError as ``get_pattern`` / ``Pattern.select`` raise it."""
    from tickets.masks import Mask, PrunableSet

    names = PrunableSet(spec.prunable_preset).resolve(spec.module)
    drawn = get_pattern(pattern)
    if example_inputs is not None:
        drawn.setup(spec.module, names, spec, example_inputs=example_inputs)
    else:
        drawn.setup(spec.module, names, spec)
    params = dict(spec.module.named_parameters())
    scores = {n: params[n].detach().abs() for n in names}
    mask = drawn.select(scores, Mask.ones_like(spec.module, names), sparsity, scope=scope)
    drawn.verify(mask)
    return drawn, mask
