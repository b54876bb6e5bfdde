"""ImageNet ResNet-18 / ResNet-50 and MobileNet-v2 in plain PyTorch, with torchvision's state-dict layout.

Parameter and buffer names and shapes are exactly those of torchvision's ``resnet18`` / ``resnet50`` (He et al.
2016, "Deep Residual Learning for Image Recognition"; torchvision's "v1.5" bottleneck with the stride on the 3×3
conv) and ``mobilenet_v2`` (Sandler et al. 2018), so checkpoints in that layout load by name: torchvision's own,
timm's ResNets, MoCo, SimCLR ports and the robustness library's (wrapper prefixes are resolved by
``tickets.statedict.match_keys``). ``tests/fixtures/torchvision_*_keys.json`` pin the layout.

ResNet names: stem ``conv1`` (7×7, stride 2) + ``bn1`` + 3×3 max-pool; stages ``layer1``–``layer4`` of blocks
``layer{s}.{i}`` with ``conv1``/``bn1``, ``conv2``/``bn2`` (+ ``conv3``/``bn3`` in bottlenecks) and, on the first
block of a stage that changes shape, a projection shortcut ``downsample.0`` (1×1 conv) / ``downsample.1`` (BN);
global average pool; ``fc``. MobileNet-v2: ``features.0`` (conv-BN-ReLU6 stem), ``features.1``–``features.17``
(inverted residuals, ``conv.{k}``), ``features.18`` (1×1 conv to 1280), ``classifier.1`` (Linear after Dropout 0.2).

Inputs are RGB in [0, 1]; ImageNet's mean/std normalisation lives inside the module (``normalize``, unsaved
buffers). Random init follows torchvision: Kaiming-normal (fan_out, ReLU) convolutions, BatchNorm weight 1 / bias
0; ResNet ``fc`` keeps PyTorch's default, MobileNet-v2's classifier is N(0, 0.01) with zero bias.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tickets.errors import TicketsError
from tickets.models.base import ModelSpec, Normalize

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NUM_CLASSES = 1000
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".th", ".ckpt", ".tar")


class BasicBlock(nn.Module):
    """Two 3×3 convs (ResNet-18/34); the stride sits on the first."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _projection(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carrying the stride, as torchvision's v1.5), 1×1 expand ×4 (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.downsample = _projection(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential | None:
    """The 1×1-conv + BN shortcut of a block that changes shape (option B), else None (identity)."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class ResNetImageNet(nn.Module):
    """ImageNet ResNet: 7×7 stem, max-pool, four stages of 64/128/256/512 planes, global average pool, ``fc``.

    Input ``[N, 3, H, W]`` in [0, 1] (any H, W ≥ 32; 224 for the published models); output logits
    ``[N, num_classes]``.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], blocks: tuple[int, ...], num_classes: int = 1000):
        super().__init__()
        self.normalize = Normalize(MEAN, STD)
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        for stage, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
            stride = 1 if stage == 1 else 2
            layers = []
            for i in range(count):
                layers.append(block(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes * block.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled features before ``fc``: ``[N, 512]`` (ResNet-18) or ``[N, 2048]`` (ResNet-50)."""
        x = F.relu(self.bn1(self.conv1(self.normalize(x))))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The representation a kNN or linear probe reads: ``features(x)``."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias, "same" padding for odd kernels) → BatchNorm → ReLU6; children ``0``, ``1``, ``2``."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """MobileNet-v2 block: [1×1 expand] → 3×3 depthwise → 1×1 linear projection; residual when shapes agree."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [ConvBNReLU6(cin, hidden, kernel=1)]
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.residual else out


# (expansion t, output channels c, repeats n, first stride s) — Sandler et al. 2018, Table 2
MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """MobileNet-v2, width 1.0: input ``[N, 3, H, W]`` in [0, 1], logits ``[N, num_classes]``."""

    def __init__(self, num_classes: int = 1000, last_channels: int = 1280):
        super().__init__()
        self.normalize = Normalize(MEAN, STD)
        layers: list[nn.Module] = [ConvBNReLU6(3, 32, stride=2)]
        cin = 32
        for t, c, n, s in MOBILENET_V2_STAGES:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU6(cin, last_channels, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last_channels, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled 1280-d features before the classifier (``features`` is the conv stack)."""
        return F.adaptive_avg_pool2d(self.features(self.normalize(x)), 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


# name → (builder, head path, description)
ARCHITECTURES = {
    "resnet18": (lambda: ResNetImageNet(BasicBlock, (2, 2, 2, 2)), "fc", "ResNet-18 (torchvision layout)"),
    "resnet50": (lambda: ResNetImageNet(Bottleneck, (3, 4, 6, 3)), "fc", "ResNet-50 (torchvision v1.5 layout)"),
    "mobilenet-v2": (MobileNetV2, "classifier.1", "MobileNet-v2 width 1.0 (torchvision layout)"),
}


def model_names() -> list[str]:
    """The names ``load`` accepts."""
    return list(ARCHITECTURES)


def build(name: str, *, seed: int = 0) -> nn.Module:
    """The architecture ``name`` with torchvision's random init, drawn from ``seed`` (global RNG left untouched)."""
    if name not in ARCHITECTURES:
        raise TicketsError(f"unknown ImageNet architecture {name!r}: choose one of {', '.join(ARCHITECTURES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ARCHITECTURES[name][0]()


def shipped_weights(name: str, model_root: str | os.PathLike | None = None) -> Path:
    """The one weights file in ``<model root>/<name>-imagenet/``; TicketsError naming the folder and the fix."""
    from tickets.paths import model_root as resolve_root

    try:
        root = resolve_root(model_root)
    except TicketsError as err:
        raise TicketsError(
            f"no weights for {name!r}: pass --weights FILE (a torchvision / timm / MoCo / SimCLR / robustness-library "
            f"checkpoint), or set a model root holding {name}-imagenet/ ({err})"
        ) from None
    assert root is not None
    folder = root / f"{name}-imagenet"
    found = sorted(p for p in folder.glob("*") if p.suffix in WEIGHT_SUFFIXES) if folder.is_dir() else []
    if len(found) != 1:
        state = "several weights files" if found else "no weights file"
        raise TicketsError(
            f"{state} for {name!r} in {str(folder)!r}: pass --weights FILE (a torchvision / timm / MoCo / SimCLR / "
            "robustness-library checkpoint), or keep exactly one file there"
        )
    return found[0]


def load(
    name: str,
    *,
    model_root: str | os.PathLike | None = None,
    pretrained: bool = False,
    weights: str | os.PathLike | None = None,
) -> ModelSpec:
    """``resnet18``, ``resnet50`` or ``mobilenet-v2`` as a ModelSpec (inputs [0, 1] at 224×224, 3 channels).

    ``weights``: a checkpoint file (safetensors or torch.save, any wrapper layout ``tickets.statedict.match_keys``
    resolves) loaded into the module; ``pretrained`` without ``weights``: the single file in
    ``<model root>/<name>-imagenet/``; neither: torchvision's random init (seed 0). A classifier absent from the
    file, replaced by a self-supervised projection, or of another shape stays fresh (``info["head"]`` says so);
    ``pretrained_task`` is "imagenet" only when a 1000-way classifier was loaded. ``info`` records the file, its
    sha256 (``weights_sha256``, for run hashes) and the loader's notes. Prunable preset ``cnn``: every conv but
    the stem.
    """
    module = build(name)
    _, head, description = ARCHITECTURES[name]
    path = Path(weights) if weights is not None else (shipped_weights(name, model_root) if pretrained else None)
    info: dict = {"architecture": description, "pretrained": path is not None}
    pretrained_task = None
    if path is not None:
        from tickets.statedict import load_checkpoint

        what = f"could not load weights for {name!r} from {str(path)!r}"
        report = load_checkpoint(module, path, head=(head,), what=what)
        info.update(report.info)
        if report.head_loaded:
            info["head"] = f"loaded from the file ({NUM_CLASSES} ImageNet classes)"
            pretrained_task = "imagenet"
        else:
            info["head"] = f"fresh: {head!r} not loaded from the file (absent, a projection or another shape)"
    else:
        info["head"] = "random init"
    module.eval()
    return ModelSpec(
        name=name,
        module=module,
        head=[head],
        prunable_preset="cnn",
        pretrained_task=pretrained_task,
        num_outputs=NUM_CLASSES,
        input_size=224,
        in_channels=3,
        info=info,
    )
