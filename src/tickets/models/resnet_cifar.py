"""ResNet-20/32/44/56 for CIFAR (He et al. 2016, option-A shortcuts), laid out like the shipped checkpoints.

Layer names match ``models/resnet-cifar10/resnet{20,32,44,56}-*.th``: ``conv1``, ``bn1``,
``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``, ``linear`` (the checkpoints add a ``module.`` prefix, stripped on load).
Option A: when a block changes shape, the shortcut takes every second pixel and zero-pads the channels equally on
both sides (``planes // 4`` each), so shortcuts have no parameters. Inputs are [0, 1] pixels; the ImageNet
mean/std normalisation the checkpoints were trained with lives in ``normalize`` (non-persistent buffers).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tickets.models.base import ModelSpec, Normalize

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9}  # blocks per stage: depth = 6n + 2


class ShortcutA(nn.Module):
    """Option-A shortcut: stride-2 subsample + zero-pad channels (no parameters)."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut: nn.Module = ShortcutA(planes // 4)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    def __init__(self, depth: int = 20, num_classes: int = 10):
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}")
        n = DEPTHS[depth]
        self.normalize = Normalize(MEAN, STD)
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, 1)
        self.layer2 = self._stage(16, 32, n, 2)
        self.layer3 = self._stage(32, 64, n, 2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():  # He init of the reference implementation
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled 64-d features (before ``linear``)."""
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer3(self.layer2(self.layer1(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's state dict with the ``module.`` prefix stripped."""
    ckpt = torch.load(path, weights_only=True, map_location="cpu")
    state = ckpt["state_dict"] if isinstance(ckpt, dict) and "state_dict" in ckpt else ckpt
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def fill_bn_counters(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoints saved without ``num_batches_tracked``: take the module's own (zero) counters."""
    out = dict(state)
    for key, value in module.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = value.clone()
    return out


def build_resnet(depth: int, weights: str | os.PathLike | None) -> ModelSpec:
    """ResNet-``depth`` for CIFAR; ``weights``: any checkpoint file ``tickets.statedict.load_checkpoint`` reads
    (the shipped ``.th`` files: ``{"state_dict": {"module." + name: tensor}}``), else the seeded random init. A head
    (``linear``) of another shape stays fresh and ``pretrained_task`` is then None."""
    from tickets.statedict import load_checkpoint

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # deterministic random init (pretrained=False)
        module = ResNetCifar(depth)
    name = f"resnet{depth}-cifar10"
    info: dict = {"architecture": f"resnet{depth} (CIFAR, option-A shortcuts)", "pretrained": weights is not None}
    head_loaded = False
    if weights is not None:
        what = f"could not load weights for {name!r} from {str(weights)!r}"
        report = load_checkpoint(module, weights, head=("linear",), what=what)
        info.update(report.info)
        head_loaded = report.head_loaded
    module.eval()
    return ModelSpec(
        name=name,
        module=module,
        head=["linear"],
        prunable_preset="cnn",
        pretrained_task="cifar10" if head_loaded else None,
        num_outputs=10,
        input_size=32,
        in_channels=3,
        info=info,
    )


def load(
    name: str = "resnet20-cifar10",
    *,
    model_root: str | os.PathLike | None = None,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
) -> ModelSpec:
    """Registry factory for ``resnet{20,32,44,56}-cifar10``: ``weights`` (any checkpoint layout) if given, else the
    shipped file under the model root when ``pretrained``, else the seeded random init."""
    from tickets.errors import TicketsError

    depth = {f"resnet{d}-cifar10": d for d in DEPTHS}.get(name)
    if depth is None:
        names = ", ".join(f"resnet{d}-cifar10" for d in DEPTHS)
        raise TicketsError(f"unknown CIFAR ResNet {name!r}: choose one of {names}")
    if weights is None and pretrained:
        from tickets.models import weights_path

        weights = weights_path(name, model_root)
    return build_resnet(depth, weights)
