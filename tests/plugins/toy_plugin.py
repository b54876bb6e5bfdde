"""A plugin from outside the package: a ticket-drawing method, a task, a model, a sparsity pattern and a study
executor, each registered with one line.

Used by tests/test_architecture.py through `tickets --plugin toy_plugin` (this folder on PYTHONPATH) — the way a
user extends tickets without editing it.
"""

from __future__ import annotations

import time

import torch

from tickets.errors import TicketsError
from tickets.masks import Mask
from tickets.methods import METHODS, Method
from tickets.models import MODELS
from tickets.patterns import PATTERNS, Pattern
from tickets.pruning import prune_by_rank
from tickets.study.execute import EXECUTORS, Executor
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


class Pairs(Pattern):
    """Weights pruned two at a time: neighbours (2i, 2i+1) of each flattened tensor are one group, ranked by the
    sum of their |scores|. Every group has two weights, so the share of pairs pruned is the weight sparsity."""

    name = "toy-pairs"

    @staticmethod
    def pairs(name, t):
        if t.numel() % 2:
            raise TicketsError(f"pattern toy-pairs needs an even number of weights, {name!r} has {t.numel()}")
        return t.reshape(-1, 2)

    def select(self, scores, mask, sparsity, *, scope="global", largest=False):
        kept = Mask({n: self.pairs(n, m).all(1) for n, m in mask.items()})
        pair_scores = {n: self.pairs(n, scores[n].abs()).sum(1) for n in mask.names}
        chosen = prune_by_rank(pair_scores, kept, sparsity, scope, largest=largest)
        return Mask({n: chosen[n].repeat_interleave(2).reshape(m.shape) for n, m in mask.items()})

    def verify(self, mask):
        for n, m in mask.items():
            p = self.pairs(n, m)
            if (p[:, 0] != p[:, 1]).any():
                raise TicketsError(f"mask tensor {n!r} splits a pair of weights: draw it with --pattern toy-pairs")


class InOrder(Executor):
    """Every job in this process in the planned order (per seed: dense, find, transfer); a transfer whose ticket
    was not produced fails. No waiting for runs other processes write, no ETA: the smallest executor."""

    name = "toy-in-order"

    def run(self, study):
        for job in study.jobs:
            study.predict(job)  # a transfer gets its run directory once its ticket exists
            if job.status == "done":
                continue
            if job.kind == "transfer" and job.run is None:
                study.fail(job, f"its ticket ({job.source_job.label()}) was not produced")
                continue
            t0, c0 = time.time(), time.process_time()
            try:
                path = study.execute(job)
            except TicketsError as exc:
                study.fail(job, str(exc), time.time() - t0, time.process_time() - c0)
                continue
            study.finished(job, path, time.time() - t0, time.process_time() - c0)


PATTERNS.register("toy-pairs", Pairs, help="weights pruned in adjacent pairs (a test plugin)")
EXECUTORS.register("toy-in-order", InOrder, help="every job in this process, planned order (a test plugin)")
