"""Warnings about tickets and fine-tunes that look fine in a table but are broken: pure functions, no I/O.

The callers (``find``, ``inspect``, ``report``, the run log) print or record the lines these return.

- :func:`sparsity_warnings`: a tensor pruned (almost) entirely, and a prunable set whose tensors live on very
  different magnitude scales, so that one global magnitude threshold empties the small ones. Example: MiniLM-L6
  (sentence-transformers) ships an untrained pooler (std ≈ 0.009 against ≈ 0.095 in the encoder); global
  magnitude pruning to 50% over the ``bert`` preset removes 99.99% of it (20 of 147,456 weights kept), and the
  fine-tune stalls at chance.
- :func:`unit_warnings`: a structured (channel / head / neuron) ticket that leaves a layer with (almost) none of
  its units, where one global ranking compared units across layers.
- :func:`shortfall_warning`: a ticket much less sparse than asked (the pattern's units cannot reach it).
- :func:`degenerate_predictions`: an evaluation whose predictions (almost) all fall in one class, so its accuracy
  is a class frequency (SST-2 dev: 444/872 = 0.5092 for a model that always says "positive"), not a transfer score.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

SPARSITY_THRESHOLD = 0.99
# A spread above this is flagged. ResNet-20 (CIFAR-10) spans 3.0× across its convs and is pruned with one global
# threshold in the CV ticket papers, so it is not flagged; the MiniLM pooler case above is about 10×.
SCALE_RATIO = 4.0
DEGENERATE_SHARE = 0.95
COLLAPSE_FACTOR = 4.0


def _items(mapping: Any) -> list[tuple[str, torch.Tensor]]:
    return [(n, torch.as_tensor(t)) for n, t in mapping.items()]


def tensor_scale(t: torch.Tensor) -> float:
    """Magnitude scale of a weight / score tensor: mean |value| over its non-zero entries (exact zeros are pruned
    positions, left out so a pruned tensor keeps the scale it was ranked at); 0.0 when every entry is zero."""
    a = t.detach().float().abs().reshape(-1)
    a = a[a != 0]
    return float(a.mean()) if a.numel() else 0.0


def sparsity_warnings(
    mask: Any,
    scores: Mapping[str, torch.Tensor] | None = None,
    *,
    threshold: float = SPARSITY_THRESHOLD,
    scale_ratio: float = SCALE_RATIO,
) -> list[str]:
    """One-line warnings about a mask (``tickets.masks.Mask`` or a name → bool tensor dict, True = kept).

    - one line per tensor pruned to ``threshold`` (default 99%) or more, naming it, what is left of it and the
      remedies: leave it out of the prunable set (``exclude=<regex>``), prune each tensor to the same sparsity
      (``--scope layerwise``), or rank by a per-tensor normalised score;
    - with ``scores`` (the tensors the ranking used: θ0 or trained weights, or any saliency; name → tensor, only
      the mask's names are read), one line when the tensors' scales (:func:`tensor_scale`, mean |score|) span more
      than ``scale_ratio`` (default 4×) from the smallest to the largest, naming the outliers: the tensors more
      than ``scale_ratio`` below or above the median scale (or the two extremes when none is that far out).

    Returns [] when there is nothing to say. ValueError for a threshold outside (0, 1] or a ratio ≤ 1.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if not scale_ratio > 1.0:
        raise ValueError(f"scale_ratio must be > 1, got {scale_ratio}")
    lines = []
    for name, kept in _items(mask):
        total = kept.numel()
        if total == 0:
            continue
        n_kept = int(kept.sum())
        sparsity = (total - n_kept) / total
        if sparsity >= threshold:
            lines.append(
                f"tensor {name} is pruned to {_pct(sparsity)} ({n_kept:,} of {total:,} weights kept): its outputs are "
                f"(almost) constant; leave it out of the prunable set (exclude={_regex(name)}), prune layer-wise "
                "(--scope layerwise), or rank by a per-tensor normalised score"
            )
    if scores is not None:
        line = _scale_warning([n for n, _ in _items(mask)], scores, scale_ratio)
        if line:
            lines.append(line)
    return lines


def _scale_warning(names: list[str], scores: Mapping[str, torch.Tensor], ratio: float) -> str | None:
    scales = {n: tensor_scale(scores[n]) for n in names if n in scores}
    scales = {n: s for n, s in scales.items() if s > 0}
    if len(scales) < 2:
        return None
    lo, hi = min(scales.values()), max(scales.values())
    if hi / lo <= ratio:
        return None
    ordered = sorted(scales.values())
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else math.sqrt(ordered[mid - 1] * ordered[mid])
    outliers = [n for n, s in scales.items() if s < median / ratio or s > median * ratio]
    if not outliers:
        outliers = [min(scales, key=scales.get), max(scales, key=scales.get)]
    shown = ", ".join(f"{n} ({scales[n]:.3g}, {scales[n] / median:.2g}× the median)" for n in outliers[:5])
    more = f" and {len(outliers) - 5} more" if len(outliers) > 5 else ""
    exclude = "|".join(_regex(n) for n in outliers) if len(outliers) <= 3 else "<regex>"
    return (
        f"the prunable set mixes magnitude scales {hi / lo:.1f}× apart (mean |score| {lo:.3g} … {hi:.3g}, median "
        f"{median:.3g}); one global threshold prunes the small tensors first: {shown}{more}; leave them out "
        f"(exclude={exclude}), prune layer-wise (--scope layerwise), or rank by a per-tensor normalised score"
    )


def unit_warnings(report: Mapping[str, Any], *, collapse: float = COLLAPSE_FACTOR) -> list[str]:
    """One-line warning when a structured ticket leaves a layer with (almost) none of its units.

    ``report``: a pattern's ``group_report(mask)`` (``{"unit", "kept", "total", "per_layer": {tensor: {"kept",
    "total"}}}``; unstructured and N:M reports have no ``per_layer``, and give []). A layer is named when it keeps
    no unit, or a share of its units more than ``collapse`` (default 4) times below the ticket's overall kept share:
    one global ranking of channels or heads compares units across layers of different scales and empties some
    (ResNet-20 at 20% channel sparsity, global: layer1 keeps 1 of 16 channels; found by a user, accuracy 0.72 →
    0.13). Returns [] when nothing collapsed."""
    per_layer = report.get("per_layer") or {}
    total, kept = report.get("total") or 0, report.get("kept") or 0
    if not per_layer or not total:
        return []
    share = kept / total
    low = [(name, c["kept"], c["total"]) for name, c in per_layer.items()
           if c.get("total") and (c["kept"] == 0 or c["kept"] / c["total"] < share / collapse)]
    if not low:
        return []
    unit = report.get("unit", "units")
    shown = ", ".join(f"{name} keeps {k} of {t}" for name, k, t in low[:3])
    more = f" and {len(low) - 3} more layers" if len(low) > 3 else ""
    return [f"{shown} {unit}{more}, while the ticket keeps {_pct(share)} of its {unit}: one ranking across layers "
            f"emptied them; prune layer-wise (--scope layerwise) or leave those layers out of the prunable set"]


def shortfall_warning(target: float, reached: float, pattern: str) -> str | None:
    """One line when a ticket is much less sparse than asked: more than 2 points and 10% of the target short.

    ``target`` / ``reached``: sparsity of the prunable set asked for and drawn (0–1); ``pattern``: the pattern's
    spec. Structured patterns can reach only the share of the prunable set their units cover — heads alone cover
    the attention projections, about a third of BERT's ``bert`` preset (a user asked ``--pattern head`` for 90%
    and got 30.6% without a word). None when the ticket is close enough."""
    short = target - reached
    if short <= max(0.02, 0.1 * target):
        return None
    return (f"asked for {_pct(target)} of the prunable set, the {pattern} pattern reached {_pct(reached)}: its units "
            "cover only part of the prunable set or are kept at a minimum per layer; choose a pattern that covers "
            "more (e.g. head+neuron for transformers), a smaller prunable set, or a lower sparsity")


def degenerate_predictions(
    counts: Sequence[int] | Mapping[Any, int] | None,
    *,
    names: Sequence[str] | None = None,
    share: float = DEGENERATE_SHARE,
) -> str | None:
    """A one-line verdict when at least ``share`` (default 95%) of the predictions on an evaluation split fall in
    one class, else None.

    ``counts``: per-class prediction counts in class-id order (the ``predicted`` entry of a classification metric
    dict) or a class → count mapping; ``names``: class names in the same order, for the message. None or empty
    counts (regression, an empty split) give None. ValueError for a share outside (0.5, 1] or negative counts.
    """
    if not 0.5 < share <= 1.0:
        raise ValueError(f"share must be in (0.5, 1], got {share}")
    if not counts:
        return None
    items = list(counts.items()) if isinstance(counts, Mapping) else list(enumerate(counts))
    if any(int(c) < 0 for _, c in items):
        raise ValueError(f"prediction counts must be non-negative, got {counts}")
    total = sum(int(c) for _, c in items)
    if total == 0 or len(items) < 2:
        return None
    cls, top = max(items, key=lambda kv: int(kv[1]))
    top = int(top)
    if top / total < share:
        return None
    label = f"class {cls}"
    if names is not None and isinstance(cls, int) and 0 <= cls < len(names):
        label += f" ({names[cls]})"
    who = f"all {total:,}" if top == total else f"{top:,} of {total:,}"
    return (
        f"degenerate predictions: {who} evaluated examples predicted as {label} ({_pct(top / total)}): the score "
        "is that class's frequency, not a transfer result; check the recipe (learning rate, warm-up) and for "
        "tensors pruned to >= 99%"
    )


def _pct(x: float) -> str:
    """A percentage that never rounds a near-total up to 100% or a non-zero share down to 0%."""
    text = f"{100 * x:.2f}%"
    if text == "100.00%" and x < 1:
        return "> 99.99%"
    if text == "0.00%" and x > 0:
        return "< 0.01%"
    return text


def _regex(name: str) -> str:
    """A fullmatch regex for one parameter name (dots escaped)."""
    return name.replace(".", r"\.")
