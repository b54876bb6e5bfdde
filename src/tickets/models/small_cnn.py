"""A small CNN for the demo: 8×8 grayscale digits, about 30k parameters, no pre-trained weights.

``stem`` (1→16) + ``conv1`` (16→32) + ``conv2`` (32→32, stride 2) + ``conv3`` (32→64), each 3×3 + BatchNorm + ReLU,
global average pooling, ``head`` (64→10). Works on any input size; the random init is seeded (seed 0) so two
loads give the same θ0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tickets.models.base import ModelSpec, Normalize


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        w = width
        self.normalize = Normalize((0.5,) * in_channels, (0.5,) * in_channels)
        self.stem = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(w)
        self.conv1 = nn.Conv2d(w, 2 * w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(2 * w)
        self.conv2 = nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * w)
        self.conv3 = nn.Conv2d(2 * w, 4 * w, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * w)
        self.head = nn.Linear(4 * w, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(self.normalize(x))))
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_small_cnn(seed: int = 0) -> ModelSpec:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = SmallCNN()
    module.eval()
    return ModelSpec(
        name="small-cnn",
        module=module,
        head=["head"],
        prunable_preset="cnn",
        pretrained_task=None,
        num_outputs=10,
        input_size=8,
        in_channels=1,
        info={"architecture": "small-cnn (stem + 3 convs + linear head)", "weights": None, "pretrained": False},
    )
