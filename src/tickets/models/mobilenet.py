"""MobileNet-v1 (width 0.75) laid out like ``models/mobilenet-v1-0.75-imagenet/*.pth`` (from Keras applications).

Names: stem ``conv1`` (3×3, stride 2) + ``conv1_bn``; 13 blocks ``dw{i}`` (3×3 depthwise) + ``dw{i}_bn`` and
``pw{i}`` (1×1) + ``pw{i}_bn``; ``fc``. No conv biases, BatchNorm eps 1e-3, ReLU6, global average pooling.
Convolutions use TensorFlow "same" padding, computed from the input size at run time: the total padding
``max((ceil(n / s) - 1) * s + k - n, 0)`` is split with the extra pixel at the bottom/right, which on the
stride-2 layers (even sizes) means 0 before and 1 after — not PyTorch's symmetric ``padding=1``.
Inputs are [0, 1] RGB; ``normalize`` maps them to [-1, 1] as the Keras model expects.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from tickets.models.base import ModelSpec, Normalize

BN_EPS = 1e-3
STEM = 24
DW_STRIDES = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
PW_WIDTHS = (48, 96, 96, 192, 192, 384, 384, 384, 384, 384, 384, 768, 768)


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pad ``x`` (N×C×H×W) as TensorFlow's ``padding="same"`` does (extra pixel bottom/right)."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad order: W (left, right), then H (top, bottom)
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    if any(pads):
        x = F.pad(x, pads)
    return x


class SameConv2d(nn.Conv2d):
    """nn.Conv2d with TensorFlow "same" padding (so parameter names stay ``weight`` / ``bias``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("padding", 0)
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(tf_same_pad(x, self.kernel_size[0], self.stride[0]))


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.normalize = Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        self.conv1 = SameConv2d(3, STEM, 3, stride=2, bias=False)
        self.conv1_bn = nn.BatchNorm2d(STEM, eps=BN_EPS)
        cin = STEM
        for i, (stride, cout) in enumerate(zip(DW_STRIDES, PW_WIDTHS), start=1):
            setattr(self, f"dw{i}", SameConv2d(cin, cin, 3, stride=stride, groups=cin, bias=False))
            setattr(self, f"dw{i}_bn", nn.BatchNorm2d(cin, eps=BN_EPS))
            setattr(self, f"pw{i}", nn.Conv2d(cin, cout, 1, bias=False))
            setattr(self, f"pw{i}_bn", nn.BatchNorm2d(cout, eps=BN_EPS))
            cin = cout
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled 768-d features (before ``fc``)."""
        x = F.relu6(self.conv1_bn(self.conv1(self.normalize(x))))
        for i in range(1, len(DW_STRIDES) + 1):
            x = F.relu6(getattr(self, f"dw{i}_bn")(getattr(self, f"dw{i}")(x)))
            x = F.relu6(getattr(self, f"pw{i}_bn")(getattr(self, f"pw{i}")(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def build_mobilenet(weights: str | os.PathLike | None) -> ModelSpec:
    """MobileNet-v1 0.75; ``weights``: any checkpoint file ``tickets.statedict.load_checkpoint`` reads (the shipped
    plain state dict included), else the seeded random init. A head (``fc``) of another shape stays fresh and
    ``pretrained_task`` is then None."""
    from tickets.statedict import load_checkpoint

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # deterministic random init (pretrained=False)
        module = MobileNetV1()
    info: dict = {
        "architecture": "mobilenet-v1 width 0.75 (TF 'same' padding, ReLU6, BN eps 1e-3)",
        "pretrained": weights is not None,
    }
    head_loaded = False
    if weights is not None:
        what = f"could not load weights for 'mobilenet-v1-0.75' from {str(weights)!r}"
        report = load_checkpoint(module, weights, head=("fc",), what=what)
        info.update(report.info)
        head_loaded = report.head_loaded
    module.eval()
    return ModelSpec(
        name="mobilenet-v1-0.75",
        module=module,
        head=["fc"],
        prunable_preset="cnn",
        pretrained_task="imagenet" if head_loaded else None,
        num_outputs=1000,
        input_size=224,
        in_channels=3,
        info=info,
    )


def load(
    name: str = "mobilenet-v1-0.75",
    *,
    model_root: str | os.PathLike | None = None,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
) -> ModelSpec:
    """Registry factory for ``mobilenet-v1-0.75``: ``weights`` (any checkpoint layout) if given, else the shipped
    file under the model root when ``pretrained``, else the seeded random init."""
    if weights is None and pretrained:
        from tickets.models import weights_path

        weights = weights_path(name, model_root)
    return build_mobilenet(weights)
