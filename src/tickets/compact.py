"""Compaction and export: a structured ticket → a physically smaller model that needs no mask.

``compact(model_or_spec, mask, pattern)`` applies the pattern's expanded mask (``Pattern.expand``) to a copy of the
model and removes what the pruned groups cover, so the compact model computes what the masked model computes:

- ``channel`` (CNNs): Torch-Pruning's pruner does the surgery on the copy, one call per dependency-graph root
  with that root's pruned channels (convs, BatchNorm running statistics, depthwise convs, the classifier's input
  columns). A parameter-free module that moves channels (the option-A shortcut) is wrapped in
  :class:`ChannelMapped`, which scatters the kept input channels into the original width, runs the module and
  keeps the surviving output channels.
- ``head`` / ``neuron`` / ``head+neuron`` (BERT family): the Q/K/V rows and attention-output columns of pruned
  heads, and the FFN-in rows and FFN-out columns of pruned neurons, are cut out of the Linear layers.
  ``transformers`` 5 has no ``prune_heads`` and no ``config.pruned_heads`` any more, and a config cannot state
  per-layer head counts or FFN widths; the model reads its head count from the Q/K/V widths (``view(…, -1, d)``),
  so the shrunk layers run unchanged. A layer that loses every head (``head:min=0``) or neuron keeps one pruned
  unit, whose weights are zero, so it still computes the masked model's zero contribution.

The *description* (a JSON-able dict) rebuilds the compact model without masks: ``save_compact`` writes it as
``compact.json`` beside ``model.safetensors`` (and, for Hugging Face models, ``config.json``), and
``load_compact(dir)`` rebuilds the original architecture (``tickets.models.load_model(name, pretrained=False)`` or
the ``transformers`` class named in ``config.json``), resizes the recorded modules and loads the weights strictly.
A transformer whose head reads mean-, cls- or max-pooled tokens (``HFTextModel.pooling``, e.g. MiniLM-L6's mean
pooling) records ``pooling`` and comes back wrapped in ``HFTextModel`` with that pooling; such a folder is never
``plain_loadable``, since a plain ``AutoModelFor…`` would read the sequence through its pooler instead.
When a transformer ticket prunes no heads and leaves every layer the same FFN width, ``config.json`` states that
width and plain ``AutoModelFor….from_pretrained(dir)`` loads the directory too (``description["plain_loadable"]``).

``export_onnx`` (``torch.onnx.export``, checked with onnxruntime) and ``export_pt2`` (``torch.export``) write
deployment programs of any module. Optional dependencies: ``pip install 'pretrained-tickets[export]'``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tickets.errors import TicketsError
from tickets.fileio import atomic_write
from tickets.masks import Mask
from tickets.patterns.base import Pattern

FORMAT = "tickets-compact"
VERSION = 1
INSTALL = "pip install 'pretrained-tickets[export]'"


class ChannelMapped(nn.Module):
    """A parameter-free channel-moving module (``inner``) inside a compacted model.

    Input: [N, len(in_keep), …] (the kept input channels); the module scatters them into ``in_channels`` zero
    channels, runs ``inner`` and returns the output channels ``out_keep``: [N, len(out_keep), …]. Exact whenever
    the pruned input channels are zero in the masked model, which a channel ticket guarantees."""

    def __init__(self, inner: nn.Module, in_keep: list[int], out_keep: list[int], in_channels: int):
        super().__init__()
        self.inner = inner
        self.in_channels = int(in_channels)
        self.register_buffer("in_keep", torch.tensor(in_keep, dtype=torch.long), persistent=False)
        self.register_buffer("out_keep", torch.tensor(out_keep, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = x.new_zeros((x.shape[0], self.in_channels, *x.shape[2:])).index_copy(1, self.in_keep, x)
        return self.inner(full).index_select(1, self.out_keep)


# --------------------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------------------


def _split(model_or_spec: Any) -> tuple[nn.Module, Any]:
    if isinstance(model_or_spec, nn.Module):
        return model_or_spec, None
    module = getattr(model_or_spec, "module", None)
    if not isinstance(module, nn.Module):
        raise TicketsError(f"compact needs an nn.Module or a ModelSpec, got {type(model_or_spec).__name__}")
    return module, model_or_spec


def masked_copy(model_or_spec: Any, mask: Mask, pattern: Pattern | None = None) -> nn.Module:
    """A deep copy of the model with the pattern's expanded mask applied (pruned weights, and the coupled
    BatchNorm / bias entries of pruned groups, set to zero): the reference the compact model must match, and the
    ``--no-compact`` export."""
    module, _ = _split(model_or_spec)
    out = copy.deepcopy(module)
    full = pattern.expand(mask, out) if pattern is not None else mask
    full.apply_(out)
    return out.eval()


def compact(model_or_spec: Any, mask: Mask, pattern: Pattern, *, example_inputs: Any = None
            ) -> tuple[nn.Module, dict[str, Any]]:
    """Physically remove what ``mask``'s pruned groups cover; returns ``(compact module, description)``.

    ``pattern`` is set up on the model first if it is not yet (``example_inputs`` or the spec's input size for
    ``channel``). The input model is not changed. TicketsError for patterns that remove single weights
    (unstructured, N:M: nothing gets smaller; export their masked model instead), for a mask that does not honour
    the pattern, and when torch-pruning / transformers are missing."""
    module, spec = _split(model_or_spec)
    from tickets.patterns.channel import Channel
    from tickets.patterns.transformer import TransformerPattern

    if not isinstance(pattern, (Channel, TransformerPattern)):
        raise TicketsError(f"pattern {pattern.spec()!r} prunes single weights, so nothing can be removed: export "
                           "the masked model (no --compact), or draw channel / head / neuron tickets")
    if pattern._state is None:
        if isinstance(pattern, Channel):
            pattern.setup(module, mask.names, spec, example_inputs=example_inputs)
        else:
            pattern.setup(module, mask.names, spec)
    pattern.verify(mask)
    if isinstance(pattern, Channel):
        return _compact_channel(module, spec, mask, pattern)
    return _compact_transformer(module, spec, mask, pattern)


def count_parameters(module: nn.Module) -> int:
    """Distinct parameters (tied ones once)."""
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


# --------------------------------------------------------------------------------------------------------------
# channels (CNNs)
# --------------------------------------------------------------------------------------------------------------


def _module_record(m: nn.Module) -> dict[str, Any] | None:
    if isinstance(m, nn.modules.conv._ConvNd):
        return {"type": "conv", "in_channels": m.in_channels, "out_channels": m.out_channels, "groups": m.groups}
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return {"type": "batchnorm", "num_features": m.num_features}
    if isinstance(m, nn.Linear):
        return {"type": "linear", "in_features": m.in_features, "out_features": m.out_features}
    if isinstance(m, (nn.GroupNorm, nn.LayerNorm, nn.PReLU, nn.modules.instancenorm._InstanceNorm)):
        return {"type": "per-channel", "shapes": {n: list(p.shape) for n, p in m.named_parameters(recurse=False)}}
    return None


def _compact_channel(module: nn.Module, spec: Any, mask: Mask, pattern: Any) -> tuple[nn.Module, dict[str, Any]]:
    from tickets.patterns.channel import build_graph, find_channel_maps

    pruned = pattern.pruned_groups(mask)
    work = masked_copy(module, mask, pattern)
    before = {n: _module_record(m) for n, m in work.named_modules()}
    maps = find_channel_maps(work, pattern.example)
    graph, _ = build_graph(work, pattern.example, maps)
    try:
        for root, gids in pattern.roots.items():
            idxs = [c for c, g in enumerate(gids.tolist()) if g >= 0 and bool(pruned[g])]
            if not idxs:
                continue
            layer = work.get_submodule(root)
            fn = graph.get_pruner_of_module(layer).prune_out_channels
            graph.get_pruning_group(layer, fn, idxs).prune()
    except Exception as exc:  # Torch-Pruning's surgery failed: say where
        raise TicketsError(f"Torch-Pruning could not remove the pruned channels of {type(module).__name__} "
                           f"({type(exc).__name__}: {str(exc)[:200]}): report this model") from None
    channel_maps = {}
    for name, info in pattern.channel_maps.items():
        gin, gout = pattern.map_groups[name]
        in_keep = [c for c in range(info.in_channels) if gin[c] < 0 or not pruned[gin[c]]]
        out_keep = [c for c in range(info.out_channels) if gout[c] < 0 or not pruned[gout[c]]]
        channel_maps[name] = {"in_channels": info.in_channels, "in_keep": in_keep, "out_keep": out_keep}
        _set_submodule(work, name, ChannelMapped(work.get_submodule(name), in_keep, out_keep, info.in_channels))
    modules = {}
    for n, m in work.named_modules():
        rec = _module_record(m)
        if rec is not None and rec != before.get(n):
            modules[n] = rec
    widths = {n: m.out_channels for n, m in work.named_modules() if isinstance(m, nn.modules.conv._ConvNd)}
    description = {
        "format": FORMAT, "version": VERSION, "family": "cnn", "pattern": pattern.spec(),
        "model": getattr(spec, "name", None),
        "modules": modules, "channel_maps": channel_maps, "widths": widths,
        "groups": pattern.group_report(mask),
        "parameters": {"dense": count_parameters(module), "compact": count_parameters(work)},
    }
    return work.eval(), description


def _set_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


def _resize(m: nn.Module, rec: dict[str, Any]) -> None:
    """Give module ``m`` the shapes ``rec`` records (values are loaded afterwards)."""

    def fresh(t: torch.Tensor | None, shape: tuple[int, ...]):
        return None if t is None else torch.empty(shape, dtype=t.dtype, device=t.device)

    kind = rec["type"]
    if kind == "conv" and isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
        m.in_channels, m.out_channels, m.groups = rec["in_channels"], rec["out_channels"], rec["groups"]
        m.weight = nn.Parameter(fresh(m.weight, (m.out_channels, m.in_channels // m.groups, *m.kernel_size)))
        if m.bias is not None:
            m.bias = nn.Parameter(fresh(m.bias, (m.out_channels,)))
    elif kind == "batchnorm" and isinstance(m, nn.modules.batchnorm._BatchNorm):
        m.num_features = n = rec["num_features"]
        if m.affine:
            m.weight, m.bias = nn.Parameter(fresh(m.weight, (n,))), nn.Parameter(fresh(m.bias, (n,)))
        if m.track_running_stats:
            m.running_mean, m.running_var = fresh(m.running_mean, (n,)), fresh(m.running_var, (n,))
    elif kind == "linear" and isinstance(m, nn.Linear):
        m.in_features, m.out_features = rec["in_features"], rec["out_features"]
        m.weight = nn.Parameter(fresh(m.weight, (m.out_features, m.in_features)))
        if m.bias is not None:
            m.bias = nn.Parameter(fresh(m.bias, (m.out_features,)))
    elif kind == "per-channel":
        for pname, shape in rec["shapes"].items():
            setattr(m, pname, nn.Parameter(fresh(getattr(m, pname), tuple(shape))))
        if isinstance(m, nn.GroupNorm):
            m.num_channels = rec["shapes"]["weight"][0]
        elif isinstance(m, nn.LayerNorm):
            m.normalized_shape = tuple(rec["shapes"]["weight"])
        elif isinstance(m, nn.PReLU):
            m.num_parameters = rec["shapes"]["weight"][0]
        else:
            m.num_features = rec["shapes"]["weight"][0]
    else:
        raise TicketsError(f"cannot resize {type(m).__name__} as a {kind!r}: the description is for another model")


def rebuild_cnn(base: nn.Module, description: dict[str, Any]) -> nn.Module:
    """Turn ``base`` (the original architecture, any weights) into the compact architecture the description
    records, in place; load the weights afterwards."""
    for name, rec in description.get("modules", {}).items():
        try:
            m = base.get_submodule(name)
        except AttributeError:
            raise TicketsError(f"compact description names module {name!r}, which the base model lacks: rebuild "
                               "it on the model it was exported from") from None
        _resize(m, rec)
    for name, rec in description.get("channel_maps", {}).items():
        _set_submodule(base, name, ChannelMapped(base.get_submodule(name), rec["in_keep"], rec["out_keep"],
                                                 rec["in_channels"]))
    return base


# --------------------------------------------------------------------------------------------------------------
# transformers
# --------------------------------------------------------------------------------------------------------------


def _cut_linear(lin: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    w = lin.weight.detach()
    b = lin.bias.detach() if lin.bias is not None else None
    if rows is not None:
        w = w.index_select(0, rows.to(w.device))
        b = b.index_select(0, rows.to(w.device)) if b is not None else None
    if cols is not None:
        w = w.index_select(1, cols.to(w.device))
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    new.train(lin.training)
    return new


def _shrink_layers(model: nn.Module, layers: list[dict[str, Any]], kept: list[dict[str, list[int]]],
                   head_size: int | None) -> None:
    """Cut every layer to its kept heads / neurons, in place (module paths from ``layers``)."""
    for layer, keep in zip(layers, kept):
        if "heads" in keep:
            heads = keep["heads"] or [0]
            rows = torch.cat([torch.arange(h * head_size, (h + 1) * head_size) for h in heads])
            for role in ("q", "k", "v"):
                _set_submodule(model, layer[role], _cut_linear(model.get_submodule(layer[role]), rows=rows))
            _set_submodule(model, layer["o"], _cut_linear(model.get_submodule(layer["o"]), cols=rows))
            attn = model.get_submodule(layer["q"].rpartition(".")[0])
            for attr in ("num_attention_heads", "n_heads"):
                if hasattr(attn, attr):
                    setattr(attn, attr, len(heads))
            if hasattr(attn, "all_head_size"):
                attn.all_head_size = len(heads) * head_size
        if "neurons" in keep:
            idx = torch.tensor(keep["neurons"] or [0], dtype=torch.long)
            _set_submodule(model, layer["ffn_in"], _cut_linear(model.get_submodule(layer["ffn_in"]), rows=idx))
            _set_submodule(model, layer["ffn_out"], _cut_linear(model.get_submodule(layer["ffn_out"]), cols=idx))


def _compact_transformer(module: nn.Module, spec: Any, mask: Mask, pattern: Any
                         ) -> tuple[nn.Module, dict[str, Any]]:
    kept = pattern.kept_units(mask)
    work = masked_copy(module, mask, pattern)
    head_size = None
    if "head" in pattern.kinds:
        head_size = work.get_submodule(pattern.layers[0]["q"]).out_features // pattern.num_heads
    _shrink_layers(work, pattern.layers, kept, head_size)
    for row in kept:  # what the compact model holds (a layer left empty keeps one zero unit)
        if "heads" in row and not row["heads"]:
            row["heads"] = [0]
        if "neurons" in row and not row["neurons"]:
            row["neurons"] = [0]
    layers = [{"prefix": layer["prefix"], **{k: v for k, v in row.items()}} for layer, row in zip(pattern.layers, kept)]
    for rec in layers:
        if "neurons" in rec:
            rec["intermediate_size"] = len(rec["neurons"])
    cfg = getattr(work, "config", None)
    widths = {len(r["neurons"]) for r in layers if "neurons" in r}
    heads_pruned = any(len(r.get("heads", range(pattern.num_heads or 0))) != pattern.num_heads for r in layers)
    pooling = getattr(module, "pooling", "pooler")  # HFTextModel: how its head reads the sequence
    description = {
        "format": FORMAT, "version": VERSION, "family": "hf", "pattern": pattern.spec(),
        "model": getattr(spec, "name", None), "model_type": getattr(cfg, "model_type", None),
        "num_heads": pattern.num_heads, "head_size": head_size, "layers": layers,
        "pooling": pooling,
        # a plain AutoModelFor… reads the sequence through its pooler: only then is the folder plainly loadable
        "plain_loadable": not heads_pruned and len(widths) <= 1 and pooling == "pooler",
        "groups": pattern.group_report(mask),
        "parameters": {"dense": count_parameters(module), "compact": count_parameters(work)},
    }
    return work.eval(), description


def _task_model(module: nn.Module) -> nn.Module:
    """The transformers model to save: the task model an HFTextModel mirrors, or the module itself."""
    tm = getattr(module, "_task_model", None)
    return tm if tm is not None else module


def _layer_paths(description: dict[str, Any], module: nn.Module) -> list[dict[str, Any]]:
    from tickets.patterns.transformer import find_layers

    names = [n for n, _ in module.named_parameters()]
    found = {layer["prefix"]: layer for layer in find_layers(names)}
    out = []
    for rec in description["layers"]:
        if rec["prefix"] not in found:
            raise TicketsError(f"compact description names layer {rec['prefix']!r}, which the model lacks")
        out.append(found[rec["prefix"]])
    return out


# --------------------------------------------------------------------------------------------------------------
# saving and loading
# --------------------------------------------------------------------------------------------------------------


def save_compact(module: nn.Module, description: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``compact.json`` + ``model.safetensors`` (+ ``config.json`` for Hugging Face models) into
    ``out_dir``; returns it. Files are written atomically."""
    from safetensors.torch import save_model

    from tickets.fileio import write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = module
    if description.get("family") == "hf":
        target = _task_model(module)
        cfg = copy.deepcopy(target.config)
        cfg.architectures = [type(target).__name__]
        cfg.tickets_compact = {"format": FORMAT, "see": "compact.json"}
        if description.get("plain_loadable"):
            widths = {r["intermediate_size"] for r in description["layers"] if "intermediate_size" in r}
            if widths:
                (width,) = widths
                attr = "hidden_dim" if hasattr(cfg, "hidden_dim") and not hasattr(cfg, "intermediate_size") \
                    else "intermediate_size"
                setattr(cfg, attr, width)
        cfg.save_pretrained(out)
    atomic_write(out / "model.safetensors", lambda tmp: save_model(target, str(tmp), metadata={"format": "pt"}))
    write_json(out / "compact.json", description)
    return out


def load_compact(path: str | Path, *, base: nn.Module | None = None) -> nn.Module:
    """Rebuild a model ``save_compact`` wrote. CNNs: ``base`` (the original architecture) or
    ``load_model(description["model"], pretrained=False)``; Hugging Face: the class in ``config.json``. Weights
    load strictly from ``model.safetensors``; returns the module in eval mode."""
    from safetensors.torch import load_model as st_load

    folder = Path(path)
    desc_file = folder / "compact.json"
    if not desc_file.is_file():
        raise TicketsError(f"{str(folder)!r} has no compact.json: point at a folder written by `tickets export "
                           "--compact` (save_compact)")
    description = json.loads(desc_file.read_text())
    if description.get("format") != FORMAT:
        raise TicketsError(f"{str(desc_file)!r} is not a tickets compact description: re-export the model")
    if description.get("family") == "hf":
        model = _build_hf(folder, description)
    else:
        if base is None:
            name = description.get("model")
            if not name:
                raise TicketsError("the compact model was exported from a custom module: pass base= (the original "
                                   "architecture) to load_compact")
            from tickets.models import load_model

            base = load_model(name, pretrained=False).module
            _fit_head(base, folder)
        model = rebuild_cnn(base, description)
    try:
        st_load(model, str(folder / "model.safetensors"), strict=True)
    except Exception as exc:
        raise TicketsError(f"weights in {str(folder / 'model.safetensors')!r} do not fit the rebuilt model "
                           f"({type(exc).__name__}: {str(exc)[:200]}): re-export it") from None
    return model.eval()


def _fit_head(base: nn.Module, folder: Path) -> None:
    """Give a freshly built CNN the head width the saved weights have (a transferred model's new head)."""
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    for n, m in base.named_modules():
        if isinstance(m, nn.Linear) and f"{n}.weight" in shapes:
            out = shapes[f"{n}.weight"][0]
            if out != m.out_features:
                _resize(m, {"type": "linear", "in_features": m.in_features, "out_features": out})


def _build_hf(folder: Path, description: dict[str, Any]) -> nn.Module:
    try:
        import transformers
        from transformers import AutoConfig
    except ImportError:
        raise TicketsError("loading a compact transformer needs transformers: pip install "
                           "'pretrained-tickets[text]'") from None
    cfg = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    arch = (getattr(cfg, "architectures", None) or [None])[0]
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        raise TicketsError(f"config.json in {str(folder)!r} names no transformers class ({arch!r}): re-export it")
    from transformers import AutoModel

    from tickets.models.hf import _quiet_transformers

    with _quiet_transformers():
        model = cls(cfg)
        # as tickets.models.hf builds it: the task model around AutoModel's base (RoBERTa's keeps its pooler)
        setattr(model, model.base_model_prefix, AutoModel.from_config(cfg))
    layers = _layer_paths(description, model)
    kept = [{k: r[k] for k in ("heads", "neurons") if k in r} for r in description["layers"]]
    current_ffn = model.get_submodule(layers[0]["ffn_in"]).out_features
    if all(len(r.get("neurons", ())) == current_ffn for r in kept):
        kept = [{k: v for k, v in r.items() if k != "neurons"} for r in kept]  # config already has the width
    else:
        for r in kept:
            if "neurons" in r:
                r["neurons"] = list(range(len(r["neurons"])))
    _shrink_layers(model, layers, kept, description.get("head_size"))
    pooling = description.get("pooling", "pooler")
    if pooling != "pooler":  # the head reads mean/cls/max-pooled tokens: the HFTextModel wrapper computes that
        from tickets.models.hf import HFTextModel

        return HFTextModel.from_task_model(model, pooling=pooling)
    return model


# --------------------------------------------------------------------------------------------------------------
# deployment programs
# --------------------------------------------------------------------------------------------------------------


class _Program(nn.Module):
    """What gets exported: positional tensor inputs (keyword inputs are passed on by ``names``) and a plain tensor
    output (a transformers ModelOutput's ``.logits``)."""

    def __init__(self, inner: nn.Module, names: list[str] | None = None):
        super().__init__()
        self.inner = inner
        self.names = names

    def forward(self, *inputs):
        out = self.inner(**dict(zip(self.names, inputs))) if self.names else self.inner(*inputs)
        return out.logits if hasattr(out, "logits") else out


def _program(module: nn.Module, example_inputs: Any) -> tuple[nn.Module, tuple, list[str]]:
    """(exportable module, positional example inputs, input names)."""
    if isinstance(example_inputs, dict):
        names = list(example_inputs)
        return _Program(module, names).eval(), tuple(example_inputs[k] for k in names), names
    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    return _Program(module).eval(), args, [f"input_{i}" if i else "input" for i in range(len(args))]


def _dynamic(args: tuple) -> tuple:
    """Batch dimension (dim 0) dynamic on every tensor input (one entry: ``_Program.forward``'s ``*inputs``)."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    return (tuple({0: batch} if torch.is_tensor(a) else None for a in args),)


def _run_program(net: nn.Module, args: tuple) -> torch.Tensor:
    with torch.no_grad():
        return net(*args)


def export_onnx(module: nn.Module, example_inputs: Any, path: str | Path, *, dynamic_batch: bool = True,
                check: bool = True) -> dict[str, Any]:
    """Write ``module`` as an ONNX program (``torch.onnx.export``, the torch.export-based exporter; the batch
    dimension dynamic unless ``dynamic_batch=False``) and, with ``check``, run it in onnxruntime on
    ``example_inputs`` (a tensor, a tuple, or a dict of keyword tensors). Returns ``{"path", "max_abs_diff",
    "inputs"}``: the largest |onnxruntime − torch| difference. Modules returning a transformers ModelOutput are
    exported returning ``.logits``. TicketsError if onnx / onnxscript / onnxruntime are missing or export fails."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise TicketsError(f"ONNX export needs {exc.name}: {INSTALL}") from None
    path = Path(path)
    net, args, names = _program(module.eval(), example_inputs)
    dynamic = _dynamic(args) if dynamic_batch else None
    try:
        atomic_write(path, lambda tmp: torch.onnx.export(net, args, str(tmp), dynamo=True, external_data=False,
                                                         input_names=names, dynamic_shapes=dynamic,
                                                         verbose=False))
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TicketsError(f"ONNX export of {type(module).__name__} failed ({type(exc).__name__}: {msg[:200]}): "
                           "export pt2 instead, or report the model") from None
    result: dict[str, Any] = {"path": str(path)}
    if check:
        result.update(check_onnx(path, module, example_inputs))
    return result


def check_onnx(path: str | Path, module: nn.Module, example_inputs: Any) -> dict[str, Any]:
    """Run the ONNX program in onnxruntime (CPU) on ``example_inputs``; compare with ``module``'s output."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise TicketsError(f"checking an ONNX export needs onnxruntime: {INSTALL}") from None
    net, args, _ = _program(module.eval(), example_inputs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    feeds = {n: a.detach().cpu().numpy() for n, a in zip(names, args)}
    got = torch.from_numpy(session.run(None, feeds)[0])
    ref = _run_program(net, args).detach().cpu()
    return {"max_abs_diff": float((got - ref).abs().max()) if got.shape == ref.shape else float("inf"),
            "inputs": names}


def export_pt2(module: nn.Module, example_inputs: Any, path: str | Path, *, dynamic_batch: bool = True
               ) -> dict[str, Any]:
    """Write ``torch.export.export(module, example_inputs)`` to ``path`` (``torch.export.save``, a .pt2
    archive; load with ``torch.export.load(path).module()``), the batch dimension dynamic unless
    ``dynamic_batch=False``. Returns ``{"path", "max_abs_diff"}`` (the reloaded program against ``module``)."""
    import io

    from tickets.fileio import atomic_write_bytes

    path = Path(path)
    net, args, _ = _program(module.eval(), example_inputs)
    try:
        program = torch.export.export(net, args, dynamic_shapes=_dynamic(args) if dynamic_batch else None)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TicketsError(f"torch.export of {type(module).__name__} failed ({type(exc).__name__}: {msg[:200]}): "
                           "try dynamic_batch=False, or report the model") from None
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    loaded = torch.export.load(str(path)).module()
    got = _run_program(loaded, args)
    ref = _run_program(net, args)
    return {"path": str(path), "max_abs_diff": float((got - ref).abs().max())}
