"""Channel pruning: whole output channels of convolutions, as coupled groups found by Torch-Pruning's DepGraph.

Fang et al., "DepGraph: Towards Any Structural Pruning" (CVPR 2023), package ``torch-pruning`` (VainF). The
dependency graph is traced with one example input; each group is everything that must lose a channel together:
the conv's output rows and bias, the following BatchNorm's scale/shift, a depthwise conv (its in = out channel)
and its BatchNorm, the input columns of every conv/linear that reads the channel, and — through residual
additions — the same channel of every layer writing into that residual stream.

**Option-A shortcuts** (the project's ResNet-CIFAR: stride-2 subsample + zero channel padding, no parameters).
Torch-Pruning treats the padding as an element-wise op and couples channel *i* of one stage with channel *i* of
the next, where the shortcut really carries it to *i + pad*; its surgery would then leave the padding widths wrong.
So every parameter-free module class (outside ``torch.nn``) whose instances change the channel count is declared a
Torch-Pruning *customized layer* (which stops the graph there), its channel map is measured by running it on
one-hot channel inputs, and groups are merged across the map: stage-1 channel *i* ≡ stage-2 channel *i + 8* ≡
stage-3 channel *i + 24* (ResNet-20). Stage-2/3 channels fed only by the zero padding are groups of their own.

**Which groups.** A group is prunable when it removes an output channel of a conv/linear weight in the prunable
set and no output of a task head (``spec.head``) or of the model. A group may also cover tensors outside the
prunable set (BatchNorm, biases, the stem's rows when the stem feeds a prunable depthwise conv or a residual
stream, the classifier's input columns): those are ``expand``-ed from the mask, never stored in it. Channels whose
only prunable members are input columns (the small CNN's stem output) are not groups: they stay.

**Scores.** ``channel`` / ``channel:l1``: the L1 norm of the group's kept prunable weights (scores = |θ| for
magnitude pruning); ``channel:l2``: the L2 norm. Groups in wide layers hold more weights, so global ranking by a
norm favours pruning narrow layers, as Torch-Pruning's unnormalised ``MagnitudeImportance`` does.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from tickets.errors import TicketsError
from tickets.masks import Mask
from tickets.patterns.groups import Group, GroupedPattern

INSTALL = "pip install 'pretrained-tickets[export]' (torch-pruning)"


def import_tp():
    """``torch_pruning``, or TicketsError saying how to install it."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise TicketsError(f"pattern 'channel' needs the package torch-pruning: {INSTALL}") from None
    return tp


def example_input(spec: Any, model: nn.Module, example_inputs: Any = None) -> Any:
    """The tracing input: ``example_inputs`` if given, else one random image of the spec's size."""
    if example_inputs is not None:
        return example_inputs
    size = getattr(spec, "input_size", None)
    chans = getattr(spec, "in_channels", None)
    if not size or not chans:
        raise TicketsError("pattern 'channel' traces the model with an example input: pass a ModelSpec with "
                           "input_size and in_channels, or example_inputs=")
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    return torch.rand(1, chans, size, size, generator=gen).to(device)


class ChannelMapInfo:
    """A parameter-free module that moves channels: ``out_of[c]`` is where input channel ``c`` lands (-1: dropped)."""

    def __init__(self, name: str, in_channels: int, out_channels: int, out_of: torch.Tensor):
        self.name, self.in_channels, self.out_channels, self.out_of = name, in_channels, out_channels, out_of


def _is_param_free(m: nn.Module) -> bool:
    return next(m.parameters(), None) is None


def find_channel_maps(model: nn.Module, example: Any) -> dict[str, ChannelMapInfo]:
    """Parameter-free modules (classes outside ``torch.nn``) that change the channel count (dim 1), with their
    measured channel maps; every instance of such a class is included."""
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    hooks = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module, inputs, output):
        if len(inputs) == 1 and torch.is_tensor(inputs[0]) and torch.is_tensor(output):
            if inputs[0].dim() >= 2 and output.dim() >= 2:
                shapes[names[module]] = (tuple(inputs[0].shape), tuple(output.shape))

    for n, m in model.named_modules():
        if n and _is_param_free(m) and not type(m).__module__.startswith("torch."):
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    try:
        with torch.no_grad():
            _run(model.eval(), example)  # eval: the probe must not move BatchNorm running statistics
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    classes = {type(model.get_submodule(n)) for n, (i, o) in shapes.items() if i[1] != o[1]}
    out = {}
    for n, (ishape, oshape) in shapes.items():
        module = model.get_submodule(n)
        if type(module) not in classes:
            continue
        c_in, c_out = ishape[1], oshape[1]
        p = next(model.parameters(), None)
        x = torch.zeros((c_in, *ishape[1:]), device=p.device if p is not None else None)
        x[torch.arange(c_in), torch.arange(c_in)] = 1.0
        with torch.no_grad():
            y = module(x)
        hit = y.reshape(c_in, c_out, -1).abs().sum(-1).cpu() > 0
        if (hit.sum(1) > 1).any() or (hit.sum(0) > 1).any():
            raise TicketsError(
                f"module {n!r} ({type(module).__name__}) mixes channels: the channel pattern follows only "
                "parameter-free modules that move each channel to at most one place (like option-A shortcuts)")
        out_of = torch.full((c_in,), -1, dtype=torch.long)
        rows, cols = hit.nonzero(as_tuple=True)
        out_of[rows] = cols
        out[n] = ChannelMapInfo(n, c_in, c_out, out_of)
    return out


def _run(model: nn.Module, example: Any) -> Any:
    if isinstance(example, dict):
        return model(**example)
    if isinstance(example, (tuple, list)):
        return model(*example)
    return model(example)


def channel_map_pruner(tp, maps: dict[int, tuple[int, int]]):
    """A Torch-Pruning customized pruner for channel-map modules: no intra-layer coupling (in ≠ out), sizes from
    ``maps`` (id(module) → (in, out)); its prune functions leave the module alone (``compact`` swaps it)."""

    class ChannelMapPruner(tp.pruner.BasePruningFunc):
        TARGET_MODULES = None

        def prune_out_channels(self, layer, idxs):
            return layer

        def prune_in_channels(self, layer, idxs):
            return layer

        def get_out_channels(self, layer):
            return maps[id(layer)][1]

        def get_in_channels(self, layer):
            return maps[id(layer)][0]

    return ChannelMapPruner()


def build_graph(model: nn.Module, example: Any, maps: dict[str, ChannelMapInfo]):
    """Torch-Pruning's DependencyGraph of ``model`` with the channel maps as customized layers."""
    tp = import_tp()
    sizes = {id(model.get_submodule(n)): (i.in_channels, i.out_channels) for n, i in maps.items()}
    pruner = channel_map_pruner(tp, sizes)
    classes = {type(model.get_submodule(n)) for n in maps}
    was_training = model.training
    try:
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=example, forward_fn=lambda m, x: _run(m, x),
                customized_pruners={c: pruner for c in classes}, verbose=False)
    except TicketsError:
        raise
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TicketsError(f"Torch-Pruning could not trace {type(model).__name__} ({type(exc).__name__}: "
                           f"{msg[:200]}): the channel pattern needs a model its DependencyGraph can trace") from None
    finally:
        model.train(was_training)
    return graph, pruner


def _module_slices(name: str, module: nn.Module, is_out: bool) -> list[tuple[str, int]]:
    """(parameter name, dim) a channel of ``module`` occupies (out- or in-channel side)."""
    prefix = f"{name}." if name else ""
    out: list[tuple[str, int]] = []
    if isinstance(module, nn.modules.conv._ConvNd):
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        if module.groups > 1 and not depthwise:
            raise TicketsError(f"conv {name!r} has groups={module.groups}: the channel pattern handles ordinary "
                               "and depthwise convolutions only")
        if depthwise or is_out:
            out.append((prefix + "weight", 0))
            if module.bias is not None:
                out.append((prefix + "bias", 0))
        else:
            out.append((prefix + "weight", 1))
        return out
    if isinstance(module, nn.Linear):
        if is_out:
            out.append((prefix + "weight", 0))
            if module.bias is not None:
                out.append((prefix + "bias", 0))
        else:
            out.append((prefix + "weight", 1))
        return out
    per_channel = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.PReLU,
                   nn.LayerNorm)
    if isinstance(module, per_channel):
        for pname, p in module.named_parameters(recurse=False):
            if p.dim() != 1:
                raise TicketsError(f"{type(module).__name__} {name!r} has a {p.dim()}-d {pname}: unsupported "
                                   "in a channel group")
            out.append((prefix + pname, 0))
        return out
    if isinstance(module, nn.Module) and not _is_param_free(module):
        raise TicketsError(f"module {name!r} ({type(module).__name__}) is coupled to a channel group but the "
                           "channel pattern does not know its parameters: exclude it or use another pattern")
    return out


class _UnionFind:
    def __init__(self):
        self.parent: dict[Any, Any] = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


class Channel(GroupedPattern):
    """Whole output channels of convolutions with everything coupled to them (Torch-Pruning's DepGraph groups);
    options ``l1`` (default) or ``l2`` group norms."""

    name = "channel"
    unit = "channels"

    def __init__(self, options: str = ""):
        opt = (options or "l1").strip().lower()
        if opt not in ("l1", "l2"):
            raise TicketsError(f"unknown channel option {options!r}: use --pattern channel, channel:l1 or channel:l2")
        self.options = options
        self.reduce = opt
        self._state = None
        self.roots: dict[str, torch.Tensor] = {}  # TP root module name -> group id per output channel (-1: none)
        self.channel_maps: dict[str, ChannelMapInfo] = {}
        self.map_groups: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (group of in c, of out c)
        self.example: Any = None

    def setup(self, model: nn.Module, names: list[str], spec: Any = None, *, example_inputs: Any = None) -> None:
        """Trace ``model`` with Torch-Pruning (``example_inputs`` or one random image of ``spec``'s size) and
        build the prunable channel groups over ``names``. TicketsError if torch-pruning is missing or the model
        cannot be traced."""
        tp = import_tp()
        example = example_input(spec, model, example_inputs)
        self.example = example
        maps = find_channel_maps(model, example)
        graph, pruner = build_graph(model, example, maps)
        module_names = {m: n for n, m in model.named_modules()}
        heads = [model.get_submodule(h) for h in (getattr(spec, "head", None) or [])]
        params = dict(model.named_parameters())
        prunable = set(names)
        map_modules = {model.get_submodule(n): n for n in maps}

        atoms: dict[tuple[str, int], list[tuple[str, int, int]]] = {}
        map_atoms: dict[tuple[str, str, int], tuple[str, int]] = {}
        blocked: set[tuple[str, int]] = set()  # root channels that also drive a head / the output
        root_sizes: dict[str, int] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            groups = list(graph.get_all_groups(ignored_layers=[], root_module_types=(nn.modules.conv._ConvNd,
                                                                                      nn.Linear)))
        for group in groups:
            root = module_names[group[0].dep.target.module]
            root_sizes[root] = len(group[0].idxs)
            for item in group:
                dep = item.dep
                target = dep.target.module
                is_out = graph.is_out_channel_pruning_fn(dep.handler)
                if target in map_modules:
                    side = "out" if dep.handler.__func__ is type(pruner).prune_out_channels else "in"
                    for idx, ridx in zip(item.idxs, item.root_idxs):
                        map_atoms[(map_modules[target], side, int(idx))] = (root, int(ridx))
                    continue
                if isinstance(target, tp.ops._OutputOp) or (is_out and any(target is h for h in heads)):
                    blocked.update((root, int(r)) for r in item.root_idxs)
                    continue
                if not isinstance(target, nn.Module):
                    raise TicketsError(f"a channel group of {root!r} reaches a bare parameter: unsupported by the "
                                       "channel pattern")
                tname = module_names.get(target)
                if tname is None:
                    continue
                slices = _module_slices(tname, target, is_out)
                for idx, ridx in zip(item.idxs, item.root_idxs):
                    for pname, d in slices:
                        atoms.setdefault((root, int(ridx)), []).append((pname, d, int(idx)))

        uf = _UnionFind()
        for atom in atoms:
            uf.find(atom)
        for name, info in maps.items():
            for c in range(info.in_channels):
                o = int(info.out_of[c])
                a, b = map_atoms.get((name, "in", c)), map_atoms.get((name, "out", o)) if o >= 0 else None
                if a is not None and b is not None:
                    uf.union(a, b)
        components: dict[Any, list[tuple[str, int]]] = {}
        for atom in sorted(atoms, key=lambda a: (list(root_sizes).index(a[0]), a[1])):
            components.setdefault(uf.find(atom), []).append(atom)

        order = {n: i for i, n in enumerate(params)}
        built: list[Group] = []
        group_atoms: list[list[tuple[str, int]]] = []
        for members in components.values():
            if any(a in blocked for a in members):
                continue
            per_slot: dict[tuple[str, int], set[int]] = {}
            for a in members:
                for pname, d, idx in atoms[a]:
                    per_slot.setdefault((pname, d), set()).add(idx)
            keys = sorted({p for (p, d) in per_slot if d == 0 and params[p].dim() > 1}, key=order.__getitem__)
            if not any(k in prunable for k in keys):
                continue
            slices = [(p, d, torch.tensor(sorted(ix), dtype=torch.long))
                      for (p, d), ix in sorted(per_slot.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))]
            first = keys[0]
            label = f"{first}[{min(per_slot[(first, 0)])}]"
            built.append(Group(slices, tuple(keys), family="", label=label))
            group_atoms.append(members)

        # families: groups sharing an output tensor rank together in layer-wise mode
        fam = _UnionFind()
        for g in built:
            for k in g.keys:
                fam.union(g.keys[0], k)
        for g in built:
            g.family = fam.find(g.keys[0])

        shapes = {}
        for g in built:
            for p, _, _ in g.slices:
                shapes[p] = tuple(params[p].shape)
        for n in names:
            if n not in params:
                raise TicketsError(f"{n!r} is not a parameter of {type(model).__name__}: resolve names with "
                                   "PrunableSet.resolve(model)")
            shapes[n] = tuple(params[n].shape)
        self._set_groups(built, list(names), shapes, {k: 1 for g in built for k in g.keys})
        # _set_groups drops nothing here (every built group has a prunable key), so indices line up
        self.roots = {r: torch.full((n,), -1, dtype=torch.long) for r, n in root_sizes.items()}
        for gi, members in enumerate(group_atoms):
            for root, ridx in members:
                self.roots[root][ridx] = gi
        self.channel_maps = maps
        self.map_groups = {}
        for name, info in maps.items():
            gin = torch.full((info.in_channels,), -1, dtype=torch.long)
            gout = torch.full((info.out_channels,), -1, dtype=torch.long)
            for (mname, side, idx), atom in map_atoms.items():
                if mname == name:
                    (gin if side == "in" else gout)[idx] = int(self.roots[atom[0]][atom[1]])
            self.map_groups[name] = (gin, gout)

    def _verify_unset(self, mask: Mask) -> None:
        """Without the model: every tensor must be (kept rows) × (kept columns), constant over the kernel."""
        for n, m in mask.items():
            m = m.detach().cpu()
            if m.dim() < 2:
                continue
            rows = m.reshape(m.shape[0], -1).any(1)
            cols = m.transpose(0, 1).reshape(m.shape[1], -1).any(1)
            shape = [m.shape[0], m.shape[1]] + [1] * (m.dim() - 2)
            expect = (rows.view(shape[0], 1, *shape[2:]) & cols.view(1, shape[1], *shape[2:])).expand_as(m)
            if not torch.equal(expect, m):
                where = tuple(int(i) for i in (expect != m).nonzero()[0])
                raise TicketsError(
                    f"mask tensor {n!r} does not honour pattern {self.spec()!r}: entry {where} is pruned while its "
                    "output channel and input channel are both kept; draw the ticket with --pattern channel")
