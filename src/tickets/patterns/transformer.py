"""Attention heads and FFN neurons of BERT-family transformers (Michel et al. 2019, "Are Sixteen Heads Really Better
than One?"; Prasanna et al. 2020, "When BERT Plays the Lottery, All Tickets Are Winning": structured BERT tickets).

Layers are found from parameter names — BERT / RoBERTa ``<base>.encoder.layer.<i>.attention.self.{query,key,value}``,
``attention.output.dense``, ``intermediate.dense``, ``output.dense``; DistilBERT ``<base>.transformer.layer.<i>.
attention.{q_lin,k_lin,v_lin,out_lin}``, ``ffn.lin1``, ``ffn.lin2`` — and the head count from the model's config
(``num_attention_heads`` / ``n_heads``).

- ``head``: head *h* of a layer = rows ``h·d … (h+1)·d − 1`` of the Q, K and V weights (and biases) and the same
  columns of the attention-output weight (``d`` = head size). By default every layer keeps at least one head
  (``head:min=0`` allows a layer to lose them all; ``head:min=K`` keeps K).
- ``neuron``: FFN neuron *j* = row *j* of the FFN-in weight and bias and column *j* of the FFN-out weight. Every
  layer keeps at least one neuron.
- ``head+neuron``: both kinds in one ranking. A head holds 4·d·hidden weights and a neuron 2·hidden, so groups
  are ranked by their *mean* |score| per weight (for one kind alone this is the same order as the L1 norm).

Group score (``head``, ``neuron``): the L1 norm of the group's kept prunable weights. Biases are not in the
prunable set; ``expand`` prunes them with their group. The pooler is in the ``bert`` prunable set but in no group:
it stays dense (so it counts as kept weights in the prunable-set sparsity).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from tickets.errors import TicketsError
from tickets.masks import Mask
from tickets.patterns.groups import Group, GroupedPattern

_LAYOUTS = (
    # (regex for the layer prefix, {role: path relative to the layer})
    (re.compile(r"^(?P<prefix>(?:.*\.)?encoder\.layer\.(?P<i>\d+))\.attention\.self\.query\.weight$"),
     {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
      "o": "attention.output.dense", "ffn_in": "intermediate.dense", "ffn_out": "output.dense"}),
    (re.compile(r"^(?P<prefix>(?:.*\.)?transformer\.layer\.(?P<i>\d+))\.attention\.q_lin\.weight$"),
     {"q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin", "o": "attention.out_lin",
      "ffn_in": "ffn.lin1", "ffn_out": "ffn.lin2"}),
)


def find_layers(names: list[str]) -> list[dict[str, Any]]:
    """Transformer layers among parameter ``names``: ``[{"prefix", "index", role: module path}]`` in order."""
    layers = []
    for n in names:
        for regex, roles in _LAYOUTS:
            hit = regex.match(n)
            if hit:
                prefix = hit.group("prefix")
                layers.append({"prefix": prefix, "index": int(hit.group("i")),
                               **{r: f"{prefix}.{p}" for r, p in roles.items()}})
    return layers


def num_heads_of(model: nn.Module | None, spec: Any = None) -> int | None:
    """Attention heads per layer from the model's (or spec's module's) config."""
    for obj in (model, getattr(spec, "module", None)):
        cfg = getattr(obj, "config", None)
        for attr in ("num_attention_heads", "n_heads", "n_head"):
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


class TransformerPattern(GroupedPattern):
    """Heads and/or FFN neurons; subclasses set ``kinds``."""

    kinds: tuple[str, ...] = ()
    reduce = "l1"

    def __init__(self, options: str = ""):
        self.options = options
        self.min_heads = 1
        self.num_heads: int | None = None
        self.layers: list[dict[str, Any]] = []
        self._state = None
        opt = (options or "").strip()
        if opt:
            key, _, value = opt.partition("=")
            if "head" not in self.kinds or key != "min" or not value.isdigit():
                hint = f"--pattern {self.name}:min=0 (or min=K)" if "head" in self.kinds else f"--pattern {self.name}"
                raise TicketsError(f"unknown {self.name} option {options!r}: use {hint}")
            self.min_heads = int(value)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.num_heads is not None:
            out["num_heads"] = self.num_heads
        return out

    def restore(self, meta: dict[str, Any]) -> None:
        if isinstance(meta.get("num_heads"), int):
            self.num_heads = meta["num_heads"]

    def setup(self, model: nn.Module, names: list[str], spec: Any = None, *, num_heads: int | None = None) -> None:
        """Groups of ``model``'s layers (heads from its config unless ``num_heads`` is given)."""
        params = {n: tuple(p.shape) for n, p in model.named_parameters()}
        for n in names:
            if n not in params:
                raise TicketsError(f"{n!r} is not a parameter of {type(model).__name__}: resolve names with "
                                   "PrunableSet.resolve(model)")
        heads = num_heads or num_heads_of(model, spec) or self.num_heads
        self._setup_from_shapes(params, list(names), heads)

    def _setup_from_shapes(self, shapes: dict[str, tuple[int, ...]], names: list[str], heads: int | None) -> None:
        layers = find_layers(list(shapes))
        if not layers:
            raise TicketsError(
                f"pattern {self.name!r} finds no BERT/RoBERTa/DistilBERT layers (…encoder.layer.N.attention.self."
                "query / …transformer.layer.N.attention.q_lin): use it with a BERT-family model")
        if "head" in self.kinds and not heads:
            raise TicketsError(f"pattern {self.name!r} needs the number of attention heads: the model's config has "
                               "no num_attention_heads (pass num_heads=)")
        groups: list[Group] = []
        min_keep: dict[str, int] = {}
        used: dict[str, tuple[int, ...]] = {}
        for layer in layers:
            L = layer["index"]
            for role in ("q", "k", "v", "o", "ffn_in", "ffn_out"):
                if f"{layer[role]}.weight" not in shapes:
                    raise TicketsError(f"layer {layer['prefix']!r} has no {layer[role]}.weight: not a BERT-family "
                                       "layer this pattern knows")
            if "head" in self.kinds:
                width = shapes[f"{layer['q']}.weight"][0]
                if width % heads:
                    raise TicketsError(f"{layer['q']}.weight has {width} rows, not a multiple of {heads} heads")
                d = width // heads
                key = f"{layer['prefix']} heads"
                min_keep[key] = self.min_heads
                for h in range(heads):
                    rows = torch.arange(h * d, (h + 1) * d)
                    sl = []
                    for role in ("q", "k", "v"):
                        sl.append((f"{layer[role]}.weight", 0, rows))
                        if f"{layer[role]}.bias" in shapes:
                            sl.append((f"{layer[role]}.bias", 0, rows))
                    sl.append((f"{layer['o']}.weight", 1, rows))
                    groups.append(Group(sl, (key,), family=key, label=f"layer {L} head {h}"))
            if "neuron" in self.kinds:
                n_ffn = shapes[f"{layer['ffn_in']}.weight"][0]
                key = f"{layer['prefix']} neurons"
                min_keep[key] = 1
                for j in range(n_ffn):
                    idx = torch.tensor([j])
                    sl = [(f"{layer['ffn_in']}.weight", 0, idx)]
                    if f"{layer['ffn_in']}.bias" in shapes:
                        sl.append((f"{layer['ffn_in']}.bias", 0, idx))
                    sl.append((f"{layer['ffn_out']}.weight", 1, idx))
                    groups.append(Group(sl, (key,), family=key, label=f"layer {L} neuron {j}"))
        for g in groups:
            for n, _, _ in g.slices:
                used[n] = shapes[n]
        for n in names:
            used[n] = shapes[n]
        self._set_groups(groups, names, used, min_keep)
        self.num_heads = heads
        self.layers = layers
        self._group_ids()

    def _group_ids(self) -> None:
        """Per layer: group index of each head / neuron (-1 when that group is not prunable here)."""
        index = {g.label: i for i, g in enumerate(self.groups)}
        for layer in self.layers:
            L = layer["index"]
            if "head" in self.kinds:
                layer["head_groups"] = [index.get(f"layer {L} head {h}", -1) for h in range(self.num_heads)]
            if "neuron" in self.kinds:
                n = self._state.shapes.get(f"{layer['ffn_in']}.weight", (0,))[0]
                layer["neuron_groups"] = [index.get(f"layer {L} neuron {j}", -1) for j in range(n)]

    def _verify_unset(self, mask: Mask) -> None:
        """Without the model: rebuild the groups from the mask's names and shapes when every tensor they need is
        in the mask (the ``bert`` preset) and the head count is known; else check whole rows / columns."""
        shapes = {n: tuple(t.shape) for n, t in mask.items()}
        try:
            probe = type(self)(self.options)
            probe.num_heads = self.num_heads
            probe._setup_from_shapes(shapes, list(mask.names), self.num_heads)
        except TicketsError:
            probe = None
        if probe is not None:
            probe.verify(mask)
            return
        for layer in find_layers(list(shapes)):
            for role, dim in (("q", 0), ("k", 0), ("v", 0), ("o", 1), ("ffn_in", 0), ("ffn_out", 1)):
                n = f"{layer[role]}.weight"
                if n not in mask:
                    continue
                m = mask[n].detach().cpu()
                lines = m.transpose(0, dim) if dim else m
                partial = lines.any(1) & ~lines.all(1)
                if partial.any():
                    raise TicketsError(f"mask tensor {n!r} does not honour pattern {self.spec()!r}: "
                                       f"{'row' if dim == 0 else 'column'} {int(partial.nonzero()[0])} is partly "
                                       f"pruned; draw the ticket with --pattern {self.spec()}")

    def kept_units(self, mask: Mask) -> list[dict[str, list[int]]]:
        """Per layer (in order): kept head indices and kept neuron indices (every head / neuron that is not a
        pruned group)."""
        pruned = self.pruned_groups(mask)
        out = []
        for layer in self.layers:
            row: dict[str, list[int]] = {}
            if "head_groups" in layer:
                row["heads"] = [h for h, g in enumerate(layer["head_groups"]) if g < 0 or not pruned[g]]
            if "neuron_groups" in layer:
                row["neurons"] = [j for j, g in enumerate(layer["neuron_groups"]) if g < 0 or not pruned[g]]
            out.append(row)
        return out


class Heads(TransformerPattern):
    """Whole attention heads (Q/K/V rows + attention-output columns); ≥ ``min`` heads per layer (default 1)."""

    name = "head"
    unit = "heads"
    kinds = ("head",)


class Neurons(TransformerPattern):
    """Whole FFN intermediate neurons (FFN-in row + bias, FFN-out column); ≥ 1 per layer."""

    name = "neuron"
    unit = "neurons"
    kinds = ("neuron",)


class HeadsNeurons(TransformerPattern):
    """Heads and FFN neurons ranked together by mean |score| per weight."""

    name = "head+neuron"
    unit = "heads+neurons"
    kinds = ("head", "neuron")
    reduce = "mean"

    def group_report(self, mask: Mask) -> dict[str, Any]:
        out = super().group_report(mask)
        pruned = self.pruned_groups(mask)
        for kind in ("head", "neuron"):
            ids = [i for i, g in enumerate(self.groups) if g.label.split()[2] == kind]
            n_pruned = int(pruned[ids].sum()) if ids else 0
            out[f"{kind}s"] = {"total": len(ids), "kept": len(ids) - n_pruned, "pruned": n_pruned,
                               "sparsity": n_pruned / len(ids) if ids else 0.0}
        return out
