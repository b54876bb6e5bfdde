"""What structured patterns (channel, head, neuron) share: groups of weight slices, ranked and pruned whole.

A *group* is a set of slices ``(tensor, dim, indices)``: the rows of a conv and of its BatchNorm plus the columns
of the layers that read that channel; the Q/K/V rows and attention-output columns of one head. A pruned group is
False on every element of every slice. Slices of tensors outside the prunable set (BatchNorm, biases, a coupled
stem, the classifier's input columns) are *extra*: the ticket's mask covers the prunable set only, and
``expand`` derives the extra tensors' masks from it (a group is pruned exactly when all its prunable elements are).

Selection (``select`` / ``select_random`` / ``select_groups``) ranks the groups by one number each and prunes
them in that order, lowest first (highest with ``largest``), never a group that is already pruned (so masks stay
nested) and never the last ``min_keep`` groups of a layer (a conv keeps one output channel; a layer keeps
``min`` heads). Groups are coarse, so the requested weight sparsity is met as closely as the group sizes allow:

- ``global``: one ranking over all groups; stop at the group count whose prunable-weight sparsity is closest to
  the target (ties: fewer groups).
- ``layerwise``: every layer (family of groups) loses the same fraction ``r`` of its groups, its own
  lowest-ranked; ``r`` is chosen so the prunable-weight sparsity is closest to the target (Torch-Pruning's
  uniform per-layer ``pruning_ratio``, solved for a weight sparsity).

A requested sparsity at or below the mask's current sparsity leaves the mask unchanged (a coarse level may
overshoot the next one's target).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tickets.errors import TicketsError
from tickets.masks import Mask
from tickets.patterns.base import Pattern
from tickets.pruning import _check_scope, _check_scores, _check_sparsity

REDUCTIONS = ("l1", "l2", "mean")


@dataclass
class Group:
    """One prunable unit: ``slices`` ``(tensor name, dim, sorted unique LongTensor of indices)``; ``keys`` the
    layers it removes an output unit from (each must keep ``min_keep[key]`` groups); ``family`` the layer-wise
    ranking unit; ``label`` how messages name it (``layer1.0.conv1.weight[3]``, ``layer 2 head 5``)."""

    slices: list[tuple[str, int, torch.Tensor]]
    keys: tuple[str, ...]
    family: str
    label: str


@dataclass
class _SliceIndex:
    """All groups' indices on one (tensor, dim), flattened: ``index[i]`` belongs to group ``owner[i]``."""

    index: torch.Tensor
    owner: torch.Tensor


@dataclass
class _State:
    groups: list[Group]
    names: list[str]  # the prunable set (mask names) in mask order
    shapes: dict[str, tuple[int, ...]]  # every tensor the groups touch (prunable + extra)
    min_keep: dict[str, int]
    slice_index: dict[tuple[str, int], _SliceIndex] = field(default_factory=dict)
    both: list[tuple[int, str, torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (group, tensor, rows, cols)
    families: dict[str, list[int]] = field(default_factory=dict)


class GroupedPattern(Pattern):
    """Base of the structured patterns. Subclasses build ``Group``s in ``setup`` and call ``_set_groups``;
    ``reduce`` picks the group score: ``l1`` (sum of |score| over the group's kept prunable elements), ``l2``
    (square root of the sum of squares) or ``mean`` (|score| summed over kept elements / the group's size)."""

    reduce: str = "l1"
    _state: _State | None = None

    # -- set-up ------------------------------------------------------------------------------------------------
    def _set_groups(self, groups: list[Group], names: list[str], shapes: dict[str, tuple[int, ...]],
                    min_keep: dict[str, int]) -> None:
        prunable = set(names)
        kept_groups = []
        for g in groups:
            if any(n in prunable for n, _, _ in g.slices):
                kept_groups.append(g)
        if not kept_groups:
            raise TicketsError(
                f"pattern {self.name!r} finds no {self.unit} in the prunable set ({len(names)} tensors): "
                f"choose a prunable set holding the layers it prunes (e.g. --prunable cnn / bert)")
        state = _State(kept_groups, list(names), dict(shapes), dict(min_keep))
        per_slot: dict[tuple[str, int], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for gi, g in enumerate(kept_groups):
            dims: dict[str, dict[int, torch.Tensor]] = {}
            for n, d, idx in g.slices:
                idxs, owners = per_slot.setdefault((n, d), ([], []))
                idxs.append(idx)
                owners.append(torch.full((len(idx),), gi, dtype=torch.long))
                dims.setdefault(n, {})[d] = idx
            for n, by_dim in dims.items():
                if n in prunable and 0 in by_dim and 1 in by_dim:
                    state.both.append((gi, n, by_dim[0], by_dim[1]))
            state.families.setdefault(g.family, []).append(gi)
        for slot, (idxs, owners) in per_slot.items():
            state.slice_index[slot] = _SliceIndex(torch.cat(idxs), torch.cat(owners))
        self._state = state

    @property
    def groups(self) -> list[Group]:
        """The groups found by ``setup`` (TicketsError before)."""
        return self._need_state().groups

    def _need_state(self) -> _State:
        if self._state is None:
            raise TicketsError(f"pattern {self.name!r} is not set up: call pattern.setup(model, names, spec) first")
        return self._state

    def _check_mask(self, mask: Mask) -> _State:
        st = self._need_state()
        if set(mask.names) != set(st.names):
            other = sorted(set(mask.names) ^ set(st.names))[0]
            raise TicketsError(
                f"mask and pattern {self.name!r} cover different tensors (e.g. {other!r}): set the pattern up with "
                "the model and prunable set the ticket was drawn for")
        for n in st.names:
            if tuple(mask[n].shape) != st.shapes[n]:
                raise TicketsError(
                    f"mask tensor {n!r} has shape {tuple(mask[n].shape)} but the pattern was set up for "
                    f"{st.shapes[n]}: use the model the ticket was drawn for")
        return st

    # -- group <-> mask ----------------------------------------------------------------------------------------
    def pruned_groups(self, mask: Mask) -> torch.Tensor:
        """Bool [num groups]: True where every prunable element of the group is pruned in ``mask``."""
        st = self._check_mask(mask)
        kept = torch.zeros(len(st.groups), dtype=torch.long)
        for (n, d), si in st.slice_index.items():
            if n not in mask:
                continue
            m = mask[n].detach().cpu()
            any_kept = m.transpose(0, d).reshape(m.shape[d], -1).any(1) if m.dim() > 1 else m.clone()
            kept.index_add_(0, si.owner, any_kept[si.index].long())
        return kept == 0

    def _build(self, pruned: torch.Tensor, names: list[str], shapes: dict[str, tuple[int, ...]]
               ) -> dict[str, torch.Tensor]:
        """Masks for ``names`` (shapes from ``shapes``): True except where a pruned group covers them."""
        st = self._need_state()
        out = {n: torch.ones(shapes[n], dtype=torch.bool) for n in names}
        for (n, d), si in st.slice_index.items():
            if n in out:
                idx = si.index[pruned[si.owner]]
                if len(idx):
                    out[n].index_fill_(d, idx.unique(), False)
        return out

    def expand(self, mask: Mask, model: nn.Module | None = None) -> Mask:
        st = self._check_mask(mask)
        pruned = self.pruned_groups(mask)
        extra = [n for n in st.shapes if n not in mask]
        shapes = dict(st.shapes)
        if model is not None:
            params = dict(model.named_parameters())
            missing = [n for n in extra if n not in params]
            if missing:
                raise TicketsError(f"pattern {self.name!r} couples {missing[0]!r}, which the model lacks: "
                                   "use the model the pattern was set up with")
            shapes.update({n: tuple(params[n].shape) for n in extra})
        built = self._build(pruned, extra, shapes)
        device = next(iter(mask.items()))[1].device if len(mask) else torch.device("cpu")
        tensors = {n: t for n, t in mask.items()}
        tensors.update({n: t.to(device) for n, t in built.items()})
        return Mask(tensors)

    def verify(self, mask: Mask) -> None:
        if self._state is None:
            self._verify_unset(mask)
            return
        st = self._check_mask(mask)
        pruned = self.pruned_groups(mask)
        rebuilt = self._build(pruned, st.names, st.shapes)
        for n in st.names:
            m = mask[n].detach().cpu()
            if not torch.equal(rebuilt[n], m):
                where = tuple(int(i) for i in (rebuilt[n] != m).nonzero()[0])
                raise TicketsError(
                    f"mask tensor {n!r} does not honour pattern {self.spec()!r}: entry {where} is pruned but no "
                    f"whole pruned {self.unit[:-1] if self.unit.endswith('s') else self.unit} group covers it; "
                    f"draw the ticket with --pattern {self.spec()} (or declare the pattern it was drawn with)")

    def _verify_unset(self, mask: Mask) -> None:
        """What can be checked without the model (subclasses)."""

    # -- reports -----------------------------------------------------------------------------------------------
    def group_report(self, mask: Mask) -> dict[str, Any]:
        st = self._check_mask(mask)
        pruned = self.pruned_groups(mask)
        per_layer: dict[str, dict[str, int]] = {}
        for gi, g in enumerate(st.groups):
            for k in g.keys:
                row = per_layer.setdefault(k, {"kept": 0, "total": 0})
                row["total"] += 1
                row["kept"] += int(not pruned[gi])
        total = len(st.groups)
        n_pruned = int(pruned.sum())
        return {"unit": self.unit, "total": total, "kept": total - n_pruned, "pruned": n_pruned,
                "sparsity": n_pruned / total if total else 0.0,
                "denominator": f"prunable {self.unit} groups of the model ({total})",
                "per_layer": per_layer}

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "unit": self.unit}
        if self._state is not None:
            out["groups"] = len(self._state.groups)
        return out

    # -- scoring -----------------------------------------------------------------------------------------------
    def group_scores(self, scores: dict[str, torch.Tensor], mask: Mask) -> torch.Tensor:
        """One score per group (float64 [num groups]) from per-weight ``scores``: ``reduce`` over the group's
        kept elements in the prunable set (an element in two slices of one group counts once)."""
        st = self._check_mask(mask)
        _check_scores(scores, mask)
        p = 2 if self.reduce == "l2" else 1
        values = {n: (scores[n].detach().cpu().double().abs() ** p) * mask[n].detach().cpu() for n in st.names}
        total = self._sum_over_groups(values)
        if self.reduce == "l2":
            return total.sqrt()
        if self.reduce == "mean":
            sizes = self._sum_over_groups({n: torch.ones(st.shapes[n], dtype=torch.float64) for n in st.names})
            return total / sizes.clamp(min=1)
        return total

    def _sum_over_groups(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        st = self._need_state()
        out = torch.zeros(len(st.groups), dtype=torch.float64)
        for (n, d), si in st.slice_index.items():
            if n not in values:
                continue
            v = values[n]
            sums = v.transpose(0, d).reshape(v.shape[d], -1).sum(1) if v.dim() > 1 else v
            out.index_add_(0, si.owner, sums[si.index].double())
        for gi, n, rows, cols in st.both:
            out[gi] -= values[n][rows][:, cols].sum().double()
        return out

    # -- selection ---------------------------------------------------------------------------------------------
    def select(self, scores: dict[str, torch.Tensor], mask: Mask, sparsity: float, *, scope: str = "global",
               largest: bool = False) -> Mask:
        return self.select_groups(self.group_scores(scores, mask), mask, sparsity, scope=scope, largest=largest)

    def select_random(self, mask: Mask, sparsity: float, *, scope: str = "global",
                      generator: torch.Generator | None = None) -> Mask:
        """Uniformly random groups (one ``torch.rand`` per group, from ``generator``), nested in ``mask``."""
        keys = torch.rand(len(self._need_state().groups), generator=generator, dtype=torch.float64)
        return self.select_groups(keys, mask, sparsity, scope=scope)

    def select_groups(self, group_scores: torch.Tensor, mask: Mask, sparsity: float, *, scope: str = "global",
                      largest: bool = False) -> Mask:
        """Prune whole groups ranked by ``group_scores`` (one value per group, lowest first unless ``largest``)
        to the prunable-weight ``sparsity`` as closely as the groups allow (see the module doc)."""
        st = self._check_mask(mask)
        sparsity = _check_sparsity(sparsity)
        _check_scope(scope)
        group_scores = torch.as_tensor(group_scores, dtype=torch.float64).cpu()
        if group_scores.shape != (len(st.groups),):
            raise TicketsError(f"need one score per group ({len(st.groups)}), got shape {tuple(group_scores.shape)}")
        key = -group_scores if largest else group_scores
        order = torch.sort(key, stable=True).indices.tolist()
        pruned0 = self.pruned_groups(mask)
        base = {n: mask[n].detach().cpu().clone() for n in st.names}
        total = sum(t.numel() for t in base.values())
        current = total - sum(int(t.sum()) for t in base.values())
        target = round(sparsity * total)
        if target <= current:
            return mask.clone()
        if scope == "global":
            new = self._greedy(order, pruned0, base, current, target)
        else:
            new = self._layerwise(order, pruned0, base, current, target, total)
        devices = {n: mask[n].device for n in st.names}
        return Mask({n: new[n].to(devices[n]) for n in st.names})

    def _kept_counts(self, pruned: torch.Tensor) -> dict[str, int]:
        st = self._need_state()
        counts: dict[str, int] = {}
        for gi, g in enumerate(st.groups):
            for k in g.keys:
                counts[k] = counts.get(k, 0) + int(not pruned[gi])
        return counts

    def _allowed(self, gi: int, counts: dict[str, int]) -> bool:
        st = self._need_state()
        return all(counts[k] > st.min_keep.get(k, 0) for k in st.groups[gi].keys)

    def _delta(self, gi: int, m: dict[str, torch.Tensor]) -> int:
        """Prunable elements of group ``gi`` still kept in ``m`` (what pruning it would remove)."""
        st = self._need_state()
        n_new = 0
        for n, d, idx in st.groups[gi].slices:
            if n in m:
                n_new += int(m[n].index_select(d, idx).sum())
        for g2, n, rows, cols in st.both:
            if g2 == gi:
                n_new -= int(m[n][rows][:, cols].sum())
        return n_new

    def _prune_into(self, gi: int, m: dict[str, torch.Tensor]) -> None:
        for n, d, idx in self._need_state().groups[gi].slices:
            if n in m:
                m[n].index_fill_(d, idx, False)

    def _greedy(self, order: list[int], pruned0: torch.Tensor, m: dict[str, torch.Tensor], current: int,
                target: int) -> dict[str, torch.Tensor]:
        counts = self._kept_counts(pruned0)
        st = self._need_state()
        for gi in order:
            if pruned0[gi] or not self._allowed(gi, counts):
                continue
            d = self._delta(gi, m)
            if current + d > target and (current + d - target) >= (target - current):
                break  # stopping short is at least as close as pruning this group
            self._prune_into(gi, m)
            for k in st.groups[gi].keys:
                counts[k] -= 1
            current += d
            if current >= target:
                break
        return m

    def _layerwise_at(self, ratio: float, order: list[int], pruned0: torch.Tensor, base: dict[str, torch.Tensor]
                      ) -> tuple[dict[str, torch.Tensor], int]:
        st = self._need_state()
        rank = {gi: r for r, gi in enumerate(order)}
        pruned = pruned0.clone()
        counts = self._kept_counts(pruned0)
        for members in st.families.values():
            want = round(ratio * len(members))
            have = int(pruned[members].sum())
            for gi in sorted(members, key=rank.__getitem__):
                if have >= want:
                    break
                if pruned[gi] or not self._allowed(gi, counts):
                    continue
                pruned[gi] = True
                have += 1
                for k in st.groups[gi].keys:
                    counts[k] -= 1
        built = self._build(pruned, st.names, st.shapes)
        new = {n: built[n] & base[n] for n in st.names}
        return new, sum(t.numel() - int(t.sum()) for t in new.values())

    def _layerwise(self, order: list[int], pruned0: torch.Tensor, base: dict[str, torch.Tensor], current: int,
                   target: int, total: int) -> dict[str, torch.Tensor]:
        lo, hi = 0.0, 1.0
        best = (abs(current - target), 0, base)
        for _ in range(30):
            mid = (lo + hi) / 2
            m, n = self._layerwise_at(mid, order, pruned0, base)
            cand = (abs(n - target), n, m)
            if cand[0] < best[0] or (cand[0] == best[0] and n < best[1]):
                best = cand
            if n < target:
                lo = mid
            elif n > target:
                hi = mid
            else:
                break
        return best[2]
