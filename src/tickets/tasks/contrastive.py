"""Self-supervised contrastive tasks: ``simclr/<image set>`` and ``moco/<image set>``.

The task *is* the pre-training objective, so ``tickets find`` / ``tickets pretrain`` draw tickets or train on it
like on any other task: the model's classifier head is replaced by a projection MLP (the task head, never pruned),
and the loss is

* **SimCLR** (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations"): both
  augmented views of N images go through the model in one batch of 2N; NT-Xent (normalised temperature-scaled
  cross-entropy) over the 2N projections: each view's positive is the other view of its image, the 2N − 2 other
  views are its negatives. Temperature 0.5 (the paper's CIFAR-10 setting).
* **MoCo v2** (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning"; Chen et al.
  2020, "Improved Baselines with Momentum Contrastive Learning"): queries from the model on view 1, keys from a
  momentum copy of it (encoder + projection; θk ← m·θk + (1 − m)·θq before each training forward, m = 0.99) on
  view 2, InfoNCE over the positive key and a queue of K negatives (the keys of past batches; K = 4096 or the
  training-set size when smaller), temperature 0.2. The momentum encoder and the queue live as buffers of the
  projection head (``MoCoHead``), so they are in every state dict and epoch checkpoint and a resumed run is
  bit-identical; the momentum encoder starts as a copy of the (masked) model at the first training step of every
  fine-tune. Single device, no shuffled BatchNorm.

Views (SimCLR's CIFAR recipe, on CPU tensors in [0, 1], per image): random resized crop (area 0.2–1 of the image,
aspect 3/4–4/3, as MoCo v2), horizontal flip (except on digit sets), colour jitter (brightness, contrast,
saturation 0.4, hue 0.1, in random order, with probability 0.8; brightness and contrast only for grey images) and
grayscale with probability 0.2. Training views come from the loop's seeded generator; evaluation views from a
fixed seed per batch, so the validation loss of two epochs is comparable.

Metrics: ``ssl_loss`` (the objective on the split's views; primary, lower is better) and ``knn_accuracy``
(``training.probe.knn_predict`` — k = 200, T = 0.07 — on the encoder's features, with the labelled training split
as the bank). Splits yield ``{"x": clean images, "v1", "v2": views, "y": labels}``; ``task.labelled`` holds the
un-augmented labelled splits for probes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from tickets.errors import TicketsError
from tickets.tasks.base import Batch, DataConfig, Task

__all__ = [
    "OBJECTIVES", "ContrastiveOptions", "ContrastiveSplit", "ContrastiveTask", "ProjectionHead", "MoCoHead",
    "random_resized_crop", "color_jitter", "random_grayscale", "rgb_to_hsv", "hsv_to_rgb", "simclr_view",
    "nt_xent", "moco_logits", "momentum_update_", "enqueue_", "load_contrastive_task", "canonical_name",
    "export_state",
]

OBJECTIVES = ("simclr", "moco")
DEFAULT_TEMPERATURE = {"simclr": 0.5, "moco": 0.2}
DEFAULT_QUEUE = 4096
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL / torchvision
EVAL_VIEW_SEED = 20_200_213  # evaluation views: a fixed seed per batch (plus its start index)


@dataclass(frozen=True)
class ContrastiveOptions:
    """Settings of a contrastive objective (``None``: the objective's default)."""

    temperature: float | None = None  # NT-Xent / InfoNCE temperature: 0.5 SimCLR, 0.2 MoCo v2
    proj_dim: int = 128  # projection output
    proj_hidden: int | None = None  # projection hidden width (default: the encoder's feature width)
    queue: int | None = None  # MoCo negatives (default min(4096, training examples))
    momentum: float = 0.99  # MoCo key-encoder momentum
    knn_k: int = 200  # kNN metric neighbours (0: no kNN metric)
    knn_temperature: float = 0.07
    crop_scale: float = 0.2  # smallest crop area fraction

    def check(self) -> None:
        """TicketsError for a value outside its range."""
        bad = [(self.temperature is not None and not self.temperature > 0, "temperature must be > 0"),
               (self.proj_dim < 1, "proj_dim must be >= 1"),
               (self.proj_hidden is not None and self.proj_hidden < 1, "proj_hidden must be >= 1"),
               (self.queue is not None and self.queue < 1, "queue must be >= 1"),
               (not 0 <= self.momentum < 1, "momentum must be in [0, 1)"),
               (self.knn_k < 0, "knn_k must be >= 0"), (not self.knn_temperature > 0, "knn_temperature must be > 0"),
               (not 0 < self.crop_scale <= 1, "crop_scale must be in (0, 1]")]
        for failed, what in bad:
            if failed:
                raise TicketsError(f"contrastive option {what}: fix it")


# ----------------------------------------------------------------------------------------------------------------
# augmentations: batched tensor ops on N×C×H×W floats in [0, 1], one random draw per image
# ----------------------------------------------------------------------------------------------------------------
def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def random_resized_crop(x: torch.Tensor, *, scale: tuple[float, float] = (0.2, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True,
                        generator: torch.Generator | None = None, attempts: int = 10) -> torch.Tensor:
    """Per image: a random box of area ``scale`` × the image and aspect ratio (log-uniform) in ``ratio``, resized
    back to the image size with bilinear interpolation; mirrored left-right with probability 1/2 when ``flip``.

    The box is drawn as torchvision's ``RandomResizedCrop``: up to ``attempts`` (area, ratio) draws, the first whose
    box fits is used, else the largest centred box with the ratio clamped into ``ratio``. Crop, resize and flip are
    one ``grid_sample`` whose sampling points are those of cropping and then resizing the box bilinearly
    (``align_corners=False``, edge pixels repeated), so the result equals ``F.interpolate`` of the cropped box.
    Output: same shape and dtype as ``x``."""
    n, _, h, w = x.shape
    if n == 0:
        return x
    area = float(h * w)
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, attempts, generator=generator))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, attempts, generator=generator))
    cw = torch.sqrt(target * aspect).round()
    ch = torch.sqrt(target / aspect).round()
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.int().argmax(dim=1)  # the first attempt that fits (0 when none does)
    rows = torch.arange(n)
    cw, ch, ok = cw[rows, first], ch[rows, first], fits.any(dim=1)
    in_ratio = w / h  # fallback: the centred box
    if in_ratio < ratio[0]:
        fw, fh = float(w), float(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = float(round(h * ratio[1])), float(h)
    else:
        fw, fh = float(w), float(h)
    cw = torch.where(ok, cw, torch.full_like(cw, fw))
    ch = torch.where(ok, ch, torch.full_like(ch, fh))
    top = torch.floor(torch.rand(n, generator=generator) * (h - ch + 1))
    left = torch.floor(torch.rand(n, generator=generator) * (w - cw + 1))
    top = torch.where(ok, top, torch.floor((h - ch) / 2))
    left = torch.where(ok, left, torch.floor((w - cw) / 2))
    mirror = (torch.rand(n, generator=generator) < 0.5) if flip else torch.zeros(n, dtype=torch.bool)
    # source pixel-centre coordinates of each output pixel, as crop-then-resize computes them (bilinear,
    # align_corners=False, clamped to the box's edge pixels), mirrored when flipping
    ox = torch.arange(w, dtype=x.dtype) + 0.5
    oy = torch.arange(h, dtype=x.dtype) + 0.5
    sx = left[:, None] + ox[None] * (cw[:, None] / w) - 0.5
    sy = top[:, None] + oy[None] * (ch[:, None] / h) - 0.5
    sx = torch.minimum(torch.maximum(sx, left[:, None]), (left + cw - 1)[:, None])
    sy = torch.minimum(torch.maximum(sy, top[:, None]), (top + ch - 1)[:, None])
    sx = torch.where(mirror[:, None], (2 * left + cw - 1)[:, None] - sx, sx)
    gx = (2 * sx + 1) / w - 1  # pixel centre → grid_sample's normalised coordinate
    gy = (2 * sy + 1) / h - 1
    grid = torch.stack([gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)], dim=-1)
    return F.grid_sample(x, grid.to(x.device, x.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma ``[N, 1, H, W]`` of RGB (the image itself when it has one channel)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (``[N, 3, H, W]``) → HSV, each channel in [0, 1] (hue as a fraction of the circle)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    chroma = maxc - minc
    s = chroma / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    is_r = maxc == r
    is_g = (maxc == g) & ~is_r
    is_b = ~is_r & ~is_g
    hue = is_r * (bc - gc) + is_g * (2.0 + rc - bc) + is_b * (4.0 + gc - rc)
    hue = torch.remainder(hue / 6.0, 1.0)
    hue = torch.where(chroma > 0, hue, torch.zeros_like(hue))
    return torch.stack([hue, s, maxc], dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """The inverse of ``rgb_to_hsv``."""
    h, s, v = x.unbind(1)
    h6 = torch.remainder(h, 1.0) * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    sector = sector.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(x)
    for i, (rr, gg, bb) in enumerate(table):
        sel = (sector == i).unsqueeze(1)
        out = torch.where(sel, torch.stack([rr, gg, bb], dim=1), out)
    return out


def color_jitter(x: torch.Tensor, *, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.1, p: float = 0.8, generator: torch.Generator | None = None) -> torch.Tensor:
    """torchvision's ``RandomApply([ColorJitter(b, c, s, h)], p)`` per image: with probability ``p``, the four
    adjustments in a random order, each with a factor drawn uniformly from [1 − b, 1 + b] (hue: a shift in
    [−h, h] of the circle), results clipped to [0, 1]:

    brightness ``x·f``; contrast ``f·x + (1 − f)·mean(luma)``; saturation ``f·x + (1 − f)·luma``; hue rotated
    in HSV. One-channel images get brightness and contrast only (as torchvision, where the other two are no-ops).
    """
    n, c = x.shape[:2]
    if n == 0:
        return x
    apply = torch.rand(n, generator=generator) < p
    factors = [_uniform(n, max(0.0, 1 - brightness), 1 + brightness, generator),
               _uniform(n, max(0.0, 1 - contrast), 1 + contrast, generator),
               _uniform(n, max(0.0, 1 - saturation), 1 + saturation, generator),
               _uniform(n, -hue, hue, generator)]
    order = torch.argsort(torch.rand(n, 4, generator=generator), dim=1)  # a random permutation per image
    view = (n, 1, 1, 1)

    def adjust(op: int, img: torch.Tensor) -> torch.Tensor:
        f = factors[op].to(img).view(view)
        if op == 0:
            return (img * f).clamp(0, 1)
        if op == 1:
            mean = _gray(img).mean(dim=(1, 2, 3), keepdim=True)
            return (f * img + (1 - f) * mean).clamp(0, 1)
        if c == 1:
            return img
        if op == 2:
            return (f * img + (1 - f) * _gray(img)).clamp(0, 1)
        hsv = rgb_to_hsv(img)
        hsv = torch.stack([torch.remainder(hsv[:, 0] + f[:, 0], 1.0), hsv[:, 1], hsv[:, 2]], dim=1)
        return hsv_to_rgb(hsv).clamp(0, 1)

    out = x
    for step in range(4):
        new = out
        for op in range(4):
            chosen = (order[:, step] == op).view(view)
            if bool(chosen.any()):
                new = torch.where(chosen, adjust(op, out), new)
        out = new
    return torch.where(apply.view(view), out, x)


def random_grayscale(x: torch.Tensor, *, p: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image replaced by its luma (replicated over the channels) with probability ``p``."""
    pick = torch.rand(x.shape[0], generator=generator) < p
    if x.shape[1] == 1:
        return x
    return torch.where(pick.view(-1, 1, 1, 1), _gray(x).expand_as(x), x)


def simclr_view(x: torch.Tensor, generator: torch.Generator | None = None, *, flip: bool = True,
                crop_scale: float = 0.2) -> torch.Tensor:
    """One augmented view of each image (random resized crop + flip, colour jitter with p 0.8, grayscale with
    p 0.2): SimCLR's CIFAR-10 augmentation (no blur at this resolution)."""
    v = random_resized_crop(x, scale=(crop_scale, 1.0), flip=flip, generator=generator)
    v = color_jitter(v, generator=generator)
    return random_grayscale(v, generator=generator)


# ----------------------------------------------------------------------------------------------------------------
# losses and the MoCo updates
# ----------------------------------------------------------------------------------------------------------------
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss of ``N`` positive pairs (``z1[i]``, ``z2[i]``), ``[N, D]`` each (any scale: they are
    L2-normalised here). With the 2N vectors u, the loss of u_a whose partner is u_b is
    ``−log(exp(cos(u_a, u_b)/τ) / Σ_{c ≠ a} exp(cos(u_a, u_c)/τ))``; the result is the mean over all 2N."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = (z @ z.T) / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, partner)


def moco_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's ``[N, 1 + K]`` logits: column 0 the positive ``q·k``, then ``q·queue_j`` for the K queued keys, all
    divided by the temperature (``q``, ``k``: ``[N, D]`` L2-normalised; ``queue``: ``[K, D]``). The loss is the
    cross-entropy with target 0."""
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.clone().detach().T  # the queue changes in place after this batch: keep this one's copy
    return torch.cat([pos, neg], dim=1) / temperature


@torch.no_grad()
def momentum_update_(key: dict[str, torch.Tensor], query: dict[str, torch.Tensor], momentum: float) -> None:
    """MoCo's key-encoder update, in place: ``key[n] ← m·key[n] + (1 − m)·query[n]`` for every name of ``query``."""
    for name, q in query.items():
        key[name].mul_(momentum).add_(q.detach(), alpha=1 - momentum)


@torch.no_grad()
def enqueue_(queue: torch.Tensor, ptr: torch.Tensor, keys: torch.Tensor) -> None:
    """Write ``keys`` (``[n, D]``) into the ring buffer ``queue`` (``[K, D]``) at ``ptr`` (a 0-d int64 tensor),
    wrapping around, and advance ``ptr`` by n modulo K (the oldest keys are replaced). With n > K only the last K
    keys are kept."""
    size = queue.shape[0]
    n = keys.shape[0]
    if n > size:
        keys = keys[-size:]
        start = (int(ptr) + n - size) % size
    else:
        start = int(ptr)
    pos = (start + torch.arange(keys.shape[0], device=queue.device)) % size
    queue[pos] = keys.to(queue.dtype)
    ptr.fill_((int(ptr) + n) % size)


# ----------------------------------------------------------------------------------------------------------------
# heads
# ----------------------------------------------------------------------------------------------------------------
def _linear(d_in: int, d_out: int, generator: torch.Generator) -> nn.Linear:
    """nn.Linear with weight and bias uniform in ±1/√d_in from ``generator`` (as ``replace_linear_head``)."""
    layer = nn.Linear(d_in, d_out)
    bound = 1.0 / d_in**0.5
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


class ProjectionHead(nn.Sequential):
    """The projection MLP g(h) = W2·ReLU(W1·h + b1) + b2 (SimCLR; MoCo v2's ``fc``): children ``0`` (Linear),
    ``1`` (ReLU), ``2`` (Linear), so a checkpoint holds ``<head>.0.weight`` … ``<head>.2.bias`` like MoCo v2's
    ``fc.0`` / ``fc.2``."""

    def __init__(self, in_features: int, hidden: int, out_features: int, *, generator: torch.Generator):
        super().__init__(_linear(in_features, hidden, generator), nn.ReLU(inplace=False),
                         _linear(hidden, out_features, generator))
        self.in_features = in_features
        self.out_features = out_features

    PROJECTION_KEYS = ("0.weight", "0.bias", "2.weight", "2.bias")


def _buffer_name(name: str) -> str:
    return "key__" + name.replace(".", "__")


class MoCoHead(ProjectionHead):
    """The projection MLP plus MoCo's state as buffers (so state dicts and checkpoints carry it): ``queue``
    (``[K, D]`` normalised keys), ``queue_ptr``, ``key_ready`` (0 until the momentum encoder is first copied from
    the model) and ``key__<name>`` for every tensor of the model's state (the momentum encoder: encoder and
    projection). ``attach`` must run once the head sits in the model."""

    STATE = ("queue", "queue_ptr", "key_ready")

    def attach(self, model: nn.Module, queue_size: int, *, generator: torch.Generator) -> None:
        """Create the momentum-encoder buffers for ``model`` (whose head this is) and a random normalised queue."""
        state = model.state_dict()
        self.key_names = list(state)
        self.param_names = [n for n, _ in model.named_parameters()]
        seen: set[str] = set()
        for name, tensor in state.items():
            buf = _buffer_name(name)
            if buf in seen:
                raise TicketsError(f"parameter names {name!r} and another map to the same buffer {buf!r}: MoCo "
                                   "needs parameter names without '__'")
            seen.add(buf)
            self.register_buffer(buf, tensor.detach().clone())
        device = next(iter(state.values())).device if state else torch.device("cpu")
        queue = F.normalize(torch.randn(queue_size, self.out_features, generator=generator), dim=1)
        self.register_buffer("queue", queue.to(device))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("key_ready", torch.zeros((), dtype=torch.long, device=device))

    def own_state_names(self) -> list[str]:
        """Names (relative to this head) of the MoCo state buffers, not the projection's."""
        return [*self.STATE, *(_buffer_name(n) for n in self.key_names)]

    def key_state(self) -> dict[str, torch.Tensor]:
        """The momentum encoder as a state dict of the model's names (the buffers themselves, not copies)."""
        return {n: getattr(self, _buffer_name(n)) for n in self.key_names}

    @torch.no_grad()
    def momentum_step_(self, model: nn.Module, momentum: float) -> None:
        """Before a training forward: copy the model into the momentum encoder the first time, then
        θk ← m·θk + (1 − m)·θq over the model's parameters (buffers such as BatchNorm statistics evolve through the
        key encoder's own forward passes, as in MoCo)."""
        keys = self.key_state()
        if not bool(self.key_ready):
            own = model.state_dict()
            for name in self.key_names:
                keys[name].copy_(own[name])
            self.key_ready.fill_(1)
        params = dict(model.named_parameters())
        momentum_update_(keys, {n: params[n] for n in self.param_names}, momentum)

    @torch.no_grad()
    def keys_forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The momentum encoder's projections of ``x`` (the model itself before the first training step)."""
        if not bool(self.key_ready):
            return model(x)
        from torch.func import functional_call

        return functional_call(model, self.key_state(), (x,))


def _moco_head(model: nn.Module) -> MoCoHead:
    for module in model.modules():
        if isinstance(module, MoCoHead):
            return module
    raise TicketsError("this model has no MoCo head: adapt it to the moco task first (prepare / ModelSpec.adapt_to)")


def export_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict without MoCo's queue and momentum encoder (encoder + projection head only), as CPU
    tensors: what a pre-training run writes as its weights file."""
    drop: set[str] = set()
    for path, module in model.named_modules():
        if isinstance(module, MoCoHead):
            drop.update(f"{path}.{n}" if path else n for n in module.own_state_names())
    return {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items() if k not in drop}


# ----------------------------------------------------------------------------------------------------------------
# splits, metric, task
# ----------------------------------------------------------------------------------------------------------------
class ContrastiveSplit:
    """Two augmented views of every image of a labelled ``ImageSplit`` (``tickets.tasks.images``): batches
    ``{"x": clean, "v1": view, "v2": view, "y": labels}``, all at the model's size and channels."""

    def __init__(self, base: Any, *, flip: bool, crop_scale: float):
        self.base = base
        self.flip = flip
        self.crop_scale = crop_scale

    def __len__(self) -> int:
        return len(self.base)

    def limit(self, n: int | None) -> "ContrastiveSplit":
        return ContrastiveSplit(self.base.limit(n), flip=self.flip, crop_scale=self.crop_scale)

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                augment: bool = False, drop_last: bool = False) -> Iterator[Batch]:
        """Views from ``generator`` when ``augment`` (training), else from a fixed seed per batch (evaluation)."""
        from tickets.tasks.images import match_model

        if batch_size < 1:
            raise TicketsError(f"batch size must be >= 1, got {batch_size}")
        base = self.base
        n = len(base)
        order = torch.randperm(n, generator=generator) if shuffle else None
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            idx = torch.arange(start, min(start + batch_size, n)) if order is None else order[start:start + batch_size]
            x = base.x[idx].float().div_(base.scale)
            gen = generator if augment else torch.Generator().manual_seed(EVAL_VIEW_SEED + start)
            v1 = simclr_view(x, gen, flip=self.flip, crop_scale=self.crop_scale)
            v2 = simclr_view(x, gen, flip=self.flip, crop_scale=self.crop_scale)
            yield {"x": match_model(x, base.size, base.channels), "v1": match_model(v1, base.size, base.channels),
                   "v2": match_model(v2, base.size, base.channels), "y": base.y[idx]}


class ContrastiveMetric:
    """``ssl_loss`` (mean over examples) and ``knn_accuracy`` of the evaluated model's features against the
    task's labelled training split (computed once per evaluation, at the first batch)."""

    def __init__(self, task: "ContrastiveTask"):
        self.task = task
        self.loss_sum = 0.0
        self.total = 0
        self.correct = 0
        self.bank: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, outputs: torch.Tensor, batch: Batch) -> None:
        n = int(batch["y"].shape[0])
        with torch.no_grad():
            self.loss_sum += float(self.task.loss(outputs, batch)) * n
        self.total += n
        opts = self.task.options
        model = self.task.current_model()
        if opts.knn_k > 0 and model is not None:
            from tickets.training.probe import encoder_features, knn_predict, split_features

            device = batch["x"].device
            with torch.no_grad():
                if self.bank is None:
                    self.bank = split_features(model, self.task.labelled["train"], device=device,
                                               head=self.task.head_paths)
                feats = encoder_features(model, batch["x"], head=self.task.head_paths).float().cpu()
                pred = knn_predict(feats, *self.bank, num_classes=self.task.num_classes, k=opts.knn_k,
                                   temperature=opts.knn_temperature)
            self.correct += int((pred == batch["y"].cpu()).sum())

    def compute(self) -> dict[str, float]:
        if self.total == 0:
            out = {"ssl_loss": float("nan")}
            if self.task.options.knn_k > 0:
                out["knn_accuracy"] = float("nan")
            return out
        out = {"ssl_loss": self.loss_sum / self.total}
        if self.task.options.knn_k > 0 and self.bank is not None:
            out["knn_accuracy"] = self.correct / self.total
        return out


@dataclass
class ContrastiveTask(Task):
    """A contrastive objective on an image set (see the module docstring). ``labelled``: the un-augmented
    labelled splits (train, val, test) for kNN and probes; ``num_classes``: their label count."""

    objective: str = "simclr"
    options: ContrastiveOptions = field(default_factory=ContrastiveOptions)
    labelled: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 0
    head_paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._model_ref: Any = None

    def current_model(self) -> nn.Module | None:
        """The model last passed to ``forward`` (what the metric evaluates), if still alive."""
        return self._model_ref() if self._model_ref is not None else None

    @property
    def temperature(self) -> float:
        return self.options.temperature if self.options.temperature is not None else \
            DEFAULT_TEMPERATURE[self.objective]

    def forward(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """SimCLR: the projections ``[2N, D]`` of both views. MoCo: the ``[N, 1 + K]`` logits (in training mode
        this first moves the momentum encoder, and afterwards enqueues the batch's keys)."""
        self._model_ref = weakref.ref(model)
        if self.objective == "simclr":
            return model(torch.cat([batch["v1"], batch["v2"]]))
        head = _moco_head(model)
        q = F.normalize(model(batch["v1"]), dim=1)
        with torch.no_grad():
            if model.training:
                head.momentum_step_(model, self.options.momentum)
            k = F.normalize(head.keys_forward(model, batch["v2"]), dim=1)
        logits = moco_logits(q, k, head.queue, self.temperature)
        if model.training:
            enqueue_(head.queue, head.queue_ptr, k)
        return logits

    def adapt_model(self, spec: Any, head_policy: str = "fresh", seed: int = 0) -> None:
        """Replace ``spec``'s single linear head by this objective's projection head (seeded; with head policy
        ``pretrained``, loaded from the ``--weights`` file the model came from). Called by
        ``ModelSpec.adapt_to``. TicketsError for a model whose head is not one nn.Linear (or projection head)."""
        from tickets.models.base import set_submodule

        if len(spec.head) != 1:
            raise TicketsError(f"task {self.name!r} needs a model with one linear head, and {spec.name!r} has "
                               f"{len(spec.head)} ({', '.join(spec.head)}): use another model")
        (path,) = spec.head
        old = spec.module.get_submodule(path)
        width = getattr(old, "in_features", None)
        if not isinstance(width, int):
            raise TicketsError(f"task {self.name!r} replaces the model's linear head by a projection MLP, but head "
                               f"{path!r} of {spec.name!r} is a {type(old).__name__}: use a model whose head is one "
                               "nn.Linear")
        if head_policy not in ("fresh", "pretrained"):
            raise TicketsError(f"unknown head policy {head_policy!r}: choose fresh or pretrained")
        opts = self.options
        gen = torch.Generator().manual_seed(seed)
        cls = MoCoHead if self.objective == "moco" else ProjectionHead
        head = cls(width, opts.proj_hidden or width, opts.proj_dim, generator=gen)
        ref = next(old.parameters(), None)
        if ref is not None:
            head.to(ref.device)
        set_submodule(spec.module, path, head)
        if head_policy == "pretrained":
            _load_projection(spec, path, head, self.name)
        if isinstance(head, MoCoHead):
            head.attach(spec.module, int(opts.queue), generator=gen)
        spec.num_outputs = opts.proj_dim
        self.head_paths = (path,)


def _load_projection(spec: Any, path: str, head: ProjectionHead, task: str) -> None:
    """Head policy ``pretrained``: the projection's four tensors from the weights file the model was loaded
    from (``<prefix><path>.0.weight`` … with any wrapper prefix; a momentum encoder's copy is never used)."""
    from tickets.statedict import read_state_dict

    weights = spec.info.get("weights")
    if not weights:
        raise TicketsError(f"head policy 'pretrained' on {task!r} reads the projection head from the --weights file, "
                           f"and {spec.name!r} was loaded without one: pass --weights FILE (e.g. a `tickets pretrain` "
                           "model.safetensors) or use --head fresh")
    state = read_state_dict(weights)
    wanted = [f"{path}.{k}" for k in ProjectionHead.PROJECTION_KEYS]
    prefixes = sorted({k[: -len(wanted[0])] for k in state if k.endswith(wanted[0])}, key=len)
    prefixes = [p for p in prefixes if not any(s in p for s in ("encoder_k", "momentum", "attacker"))]
    found = next((p for p in prefixes if all(p + w in state for w in wanted)), None)
    if found is None:
        raise TicketsError(f"weights file {weights} holds no projection head {path}.0 / {path}.2 for {task!r}: use "
                           "--head fresh (or the weights of a `tickets pretrain` run on this objective)")
    own = head.state_dict()
    for key in ProjectionHead.PROJECTION_KEYS:
        t = state[found + f"{path}.{key}"]
        if tuple(t.shape) != tuple(own[key].shape):
            raise TicketsError(f"projection head {path}.{key} in {weights} has shape {list(t.shape)}, the task's is "
                               f"{list(own[key].shape)}: use --head fresh or the projection sizes it was trained with")
    head.load_state_dict({k: state[found + f"{path}.{k}"] for k in ProjectionHead.PROJECTION_KEYS})


# ----------------------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------------------
def _split_name(name: str) -> tuple[str, str]:
    objective, sep, base = name.partition("/")
    if not sep or objective not in OBJECTIVES or not base:
        raise TicketsError(f"contrastive task {name!r} must be simclr/<image set> or moco/<image set> (e.g. "
                           "simclr/cifar10)")
    return objective, base


def canonical_name(name: str) -> str:
    """``simclr/CIFAR10``-style names checked and spelled as the loaded task reports them (``simclr/cifar10``);
    TicketsError for an unknown or non-image base task."""
    from tickets.tasks import canonical_task, task_modality

    objective, base = _split_name(name)
    if base.partition("/")[0] in OBJECTIVES:
        raise TicketsError(f"task {name!r} nests two contrastive objectives: use {objective}/<image set>")
    base = canonical_task(base)
    if task_modality(base) != "image":
        raise TicketsError(f"task {name!r}: {objective} needs an image set, and {base!r} is not one (e.g. "
                           f"{objective}/cifar10)")
    return f"{objective}/{base}"


def load_contrastive_task(name: str, *, model: Any = None, data_root: str | os.PathLike | None = None,
                          data: DataConfig = DataConfig(), seed: int = 0,
                          options: ContrastiveOptions | None = None) -> ContrastiveTask:
    """The task ``simclr/<image set>`` or ``moco/<image set>``: the image set loaded as usual (subset, validation
    carve and test order from ``data`` and ``seed``; its own crop/flip augmentation off), wrapped in two-view
    splits. ``options`` override the objective's defaults. TicketsError for a bad name, option or data."""
    from tickets.tasks import load_task
    from tickets.tasks.images import NO_FLIP, ImageSplit

    options = options or ContrastiveOptions()
    options.check()
    name = canonical_name(name)
    objective, base_name = _split_name(name)
    base = load_task(base_name, model=model, data_root=data_root, data=dataclasses.replace(data, augment=False),
                     seed=seed)
    if base.kind != "image" or not all(isinstance(s, ImageSplit) for s in (base.train, base.val, base.test)):
        raise TicketsError(f"task {name!r}: {base_name!r} is not an image classification task held in memory: use "
                           "cifar10, cifar100, mnist, fashion-mnist or digits")
    if options.queue is None:
        options = dataclasses.replace(options, queue=min(DEFAULT_QUEUE, max(1, len(base.train))))
    flip = base_name not in NO_FLIP
    wrap = dict(flip=flip, crop_scale=options.crop_scale)
    temperature = options.temperature if options.temperature is not None else DEFAULT_TEMPERATURE[objective]
    task = ContrastiveTask(
        name=name, kind="contrastive", num_outputs=options.proj_dim,
        train=ContrastiveSplit(base.train, **wrap), val=ContrastiveSplit(base.val, **wrap),
        test=ContrastiveSplit(base.test, **wrap), primary_metric="ssl_loss",
        new_metric=lambda: ContrastiveMetric(task), loss_fn=lambda out, batch: _ssl_loss(task, out),
        info={**base.info, "objective": objective, "base_task": base_name,
              "options": {**dataclasses.asdict(options), "temperature": temperature},
              "augment": {"views": "random resized crop (scale %g-1) + flip%s, colour jitter 0.4/0.4/0.4/0.1 p 0.8, "
                                   "grayscale p 0.2" % (options.crop_scale, "" if flip else " (off)")}},
        objective=objective, options=options, labelled={"train": base.train, "val": base.val, "test": base.test},
        num_classes=base.num_outputs,
    )
    return task


def _ssl_loss(task: ContrastiveTask, outputs: torch.Tensor) -> torch.Tensor:
    if task.objective == "simclr":
        n = outputs.shape[0] // 2
        return nt_xent(outputs[:n], outputs[n:], task.temperature)
    return F.cross_entropy(outputs.float(), torch.zeros(outputs.shape[0], dtype=torch.long, device=outputs.device))


def load_simclr_task(name: str, **kwargs: Any) -> ContrastiveTask:
    """Registry factory of ``simclr/<image set>`` (default options)."""
    return load_contrastive_task(name, **kwargs)


def load_moco_task(name: str, **kwargs: Any) -> ContrastiveTask:
    """Registry factory of ``moco/<image set>`` (default options)."""
    return load_contrastive_task(name, **kwargs)
