"""A plugin from outside the package: one ticket-drawing method and one task, registered with one line each.

Used by tests/test_architecture.py through `tickets --plugin toy_plugin` (this folder on PYTHONPATH) — the way a
user extends tickets without editing it.
"""

from __future__ import annotations

import torch

from tickets.methods import METHODS, Method
from tickets.models import MODELS
from tickets.tasks import TASKS, Task


class SquaredMagnitude(Method):
    """One-shot pruning of the smallest θ0² (ranks exactly like OMP's |θ0|: the test checks that)."""

    name = "toy-square"

    def draw(self, ctx, level, sparsity):
        return ctx.prune({n: s ** 2 for n, s in ctx.theta0_scores().items()}, ctx.ones(), sparsity)


def load_blobs(name, *, model, data_root=None, data=None, seed=0):
    """Three Gaussian blobs drawn as 8×8 grey images (class = which third of the image is bright)."""
    gen = torch.Generator().manual_seed(1234)

    def images(n):
        y = torch.randint(0, 3, (n,), generator=gen)
        x = torch.rand(n, 1, 8, 8, generator=gen) * 0.3
        for i, c in enumerate(y.tolist()):
            x[i, 0, :, c * 2 + 1: c * 2 + 4] += 0.6
        return x.clamp(0, 1), y

    x_train, y_train = images(240)
    x_test, y_test = images(90)
    return Task.from_tensors(name, x_train, y_train, x_test, y_test, model=model, data=data, seed=seed)


METHODS.register("toy-square", SquaredMagnitude)
TASKS.register("toy-blobs", load_blobs, modality="image", help="three bright-stripe classes, 8×8 (a test plugin)")


def load_mlp(name, *, model_root=None, pretrained=True):
    """A BatchNorm- and dropout-free MLP for 8×8 grey digits: every layer looks at single examples, so a
    data-parallel step equals the single-process step (tests/test_distributed.py)."""
    from torch import nn

    from tickets.models import from_module

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        net.add_module("head", nn.Linear(64, 10))
    return from_module(net, head="head", name=name, input_size=8, in_channels=1, prunable_preset="all")


MODELS.register("toy-mlp", load_mlp, family="cnn", modality="image", preset="all", help="a BN-free MLP (tests)")
