"""Run settings: what in a run's config.yaml tells it apart from a run with another seed, and how that is written.

A report averages runs over seeds. Runs whose configs differ in anything else (an IMP run with ``--rewind step:5
--limit 300`` beside one with the default rewind and ``--limit 500``) must never share a curve, however their
(method, pattern, task) agree. ``run_setting`` is the part of a config that is no axis of the report already:

* not ``seed`` (averaged over), ``model``, ``task`` (source / target), ``method`` and ``pattern`` (the ticket kind),
  ``ticket`` (which ticket a transfer fine-tunes: its level and lineage), ``levels`` / ``schedule`` (the sparsity
  of each level, compared on their own: a run whose levels are the first levels of another's schedule shares its
  curve), ``save_weights`` (an output switch: no score changes);
* a transfer's ``data.train_size`` is its data fraction (a report axis); a find run's is part of its setting.

``dense_setting`` is the part that can change a dense fine-tune (IMP's level 0 has no rewind point yet).
``setting_labels`` writes what differs between several settings, naming only the fields that differ:
``{"a": "rewind step:5, limit 300", "b": "rewind theta0, limit 500"}``; "" for everyone when they all agree, so a
study with one setting reads as before. Whether ``train.adversarial`` is set is the ticket kind's "robust" (or the
transfer's "adv-ft"), so only *how* it is set is compared, between runs that set it.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from tickets.fileio import flatten

# config keys shown by the report on their own axes, or that cannot change a score (see the module docstring)
_AXES = ("seed", "model", "task", "method", "pattern", "ticket", "levels", "schedule", "save_weights")
_ADVERSARIAL = "train.adversarial."
_FIELD_PREFIXES = ("train.", "data.")  # written without: "limit 300", "lr 0.01"
_DIGEST = re.compile(r"(?:sha256:)?([0-9a-f]{32,})")


def _frozen(value: Any) -> Any:
    """A config value in a hashable form (lists → tuples, dicts in lists → tuples of (key, value) pairs)."""
    if isinstance(value, dict):
        return tuple((k, _frozen(v)) for k, v in sorted(value.items()))
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def run_setting(config: Mapping[str, Any], *, train_size: bool) -> dict[str, Any]:
    """The setting of a run: its config flattened to dotted keys (``data.limit``), minus the report's axes (see the
    module docstring), with ``levels`` (a tuple) when the config has them (a find run). ``train_size``: keep
    ``data.train_size`` (a find run's; a transfer's is the report's data-fraction axis)."""
    flat = flatten({k: v for k, v in config.items() if k not in _AXES})
    out = {k: _frozen(v) for k, v in flat.items() if k != "train.adversarial" or v}
    if not train_size:
        out.pop("data.train_size", None)
    if "levels" in config:
        out["levels"] = tuple(config["levels"] or ())
    return out


# fields of a find run that act only once pruning starts: IMP's dense level 0 is the same without them
_PRUNING = ("levels", "rewind", "scope", "prunable")


def dense_setting(config: Mapping[str, Any], *, train_size: bool) -> dict[str, Any]:
    """The setting of a run's dense fine-tune (a dense transfer run, or a find run's dense level 0): its
    ``run_setting`` without what acts only once pruning starts (a find run's levels, rewind point, scope, prunable
    set)."""
    s = run_setting(config, train_size=train_size)
    return {k: v for k, v in s.items() if k.split(".")[0] not in _PRUNING}


def _levels_as_longest(settings: Mapping[str, dict]) -> dict[str, dict]:
    """Each setting with its ``levels`` replaced by the longest levels of the group that start with them: a run
    of 3 IMP levels and one of 4 that share the first 3 are the same lineage, cut at another point."""
    schedules = sorted({s["levels"] for s in settings.values() if "levels" in s}, key=lambda t: (-len(t), t))
    out = {}
    for name, s in settings.items():
        if "levels" in s:
            s = {**s, "levels": next(t for t in schedules if t[:len(s["levels"])] == s["levels"])}
        out[name] = s
    return out


def _value_text(value: Any) -> str:
    """A config value as written in a label: 0.05 → "0.05", None → "none", (0.2, 0.36) → "0.2,0.36", a sha256
    digest → its first 12 hex digits (as run directories are named)."""
    if isinstance(value, str) and (digest := _DIGEST.fullmatch(value)):
        return digest.group(1)[:12]
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(_value_text(v) for v in value) or "none"
    return str(value)


def _field_text(key: str) -> str:
    """A dotted config key as written in a label: "data.limit" → "limit", "rewind" → "rewind", "weights.sha256"
    → "weights"."""
    key = key.removesuffix(".sha256")
    for prefix in _FIELD_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def setting_labels(settings: Mapping[str, dict]) -> dict[str, str]:
    """name → the fields in which its setting differs from the others' (``run_setting`` dicts), written as
    "rewind step:5, limit 300": top-level fields first, then nested ones, each in name order. A field a setting
    lacks (left at its default) reads "default", except an adversarial-training field of a standard run (left out).
    Every label is "" when all settings agree (levels that are the first of another's count as agreeing)."""
    settings = _levels_as_longest(settings)
    keys = sorted({k for s in settings.values() for k in s}, key=lambda k: ("." in k, k))
    differing = []
    for key in keys:
        present = {s[key] for s in settings.values() if key in s}
        absent = any(key not in s for s in settings.values()) and not key.startswith(_ADVERSARIAL)
        if len(present) > 1 or absent:
            differing.append(key)
    return {name: ", ".join(f"{_field_text(k)} {_value_text(s[k]) if k in s else 'default'}" for k in differing
                            if k in s or not k.startswith(_ADVERSARIAL))
            for name, s in settings.items()}
